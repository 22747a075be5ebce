"""Turn videos into the dataset that stylegan_v.py trains on and fvd.py measures.

A StyleGAN-V dataset is a set of videos of square RGB frames at one resolution and one frame rate,
made from whatever you have, or procedurally from nothing:

    python prepare_data.py --demo demo.zip                         # 64 videos x 64 frames of 64x64
    python prepare_data.py my_videos/ data.zip --resolution 128    # a folder of mp4, avi, mov, gif, ...
    python prepare_data.py frames/ data.zip --fps 25               # a folder of frame folders
    python prepare_data.py jelly.mp4 rj256.zip --clip-len 512 --skip 150   # one long video, chunked

(the last is the paper's RainbowJelly recipe, Appx E.2). The layout, the contract with stylegan_v.py and
fvd.py, in a zip (or a folder if OUT has no .zip):

    dataset.json        {"fps": 25.0, "resolution": 64, "format": "jpg",
                         "videos": [{"name": "bikes", "frames": 120, "source": "bikes.mp4"}, ...]}
    bikes/000000.jpg    frame 0 of video "bikes", R x R RGB, numbered on to frames - 1

Frames, not mp4: training reads 3 frames at random times, thousands a second: a stored JPEG at once, an mp4 from its
last keyframe. How frames are made moves FVD (Table 4): real and generated ones are made alike (§2). One frame rate,
as stylegan_v.py counts time in frames (--fps, by default the most common): every video is brought to it by timestamp
(§3). Few mechanisms, used everywhere: checks at the door (§1, §3), one atomic writer (§6), ONE error line (§7).
"""

import argparse, collections, concurrent.futures, contextlib, dataclasses, inspect, io, itertools, json, logging
import numbers, os, re, shutil, signal, sys, threading, time, unicodedata, warnings, zipfile
from typing import Iterator, Optional

import imageio_ffmpeg            # ffmpeg in a subprocess: every container, GIF and APNG
import numpy as np
from PIL import Image
from tqdm import tqdm

logging.getLogger("imageio_ffmpeg").setLevel(logging.ERROR)   # (not "the frame size for reading is different")
VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".gif", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".apng")
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm", ".pnm", ".tga",
              ".qoi", ".jp2", ".dds", ".sgi", ".pcx")   # still formats Pillow decodes
DEFAULT_FPS = DEMO_FPS = 25.0    # frame folders carry no frame rate; 25 is FaceForensics'/SkyTimelapse's
MAX_FRAME_PIXELS = 8192 * 8192   # a larger frame (over 200 MB as RGB) is a broken or hostile header

# --- §1 Flags and settings ------------------------------------------------------------------------
# Every numeric flag has a range, checked before any work (by argparse, and by check_flag in the Python API),
# far beyond any real dataset: a typo (an extra zero, --fps 1e-9) is one line now, not a dead training later.

MAX_COUNT = 10 ** 8              # frames: stylegan_v.py's limit (an 8-hour 30 fps film has 864,000)
FLAG_RANGES = {                  # flag: (lowest, highest), both allowed
    "--resolution": (8, 2048),   # and a power of two: stylegan_v.py's range (its D reaches 4x4 from 8x8)
    "--clip-len": (1, MAX_COUNT), "--skip": (0, MAX_COUNT), "--max-frames": (1, MAX_COUNT),
    "--min-frames": (1, MAX_COUNT), "--quality": (1, 100), "--workers": (1, 64),
    "--fps": (1.0, 1000.0),      # under a frame a second is a slide show; over 1000 a broken header
    "--num-videos": (1, 100_000), "--frames": (3, 100_000), "--seed": (0, 2 ** 32 - 1)}   # --demo's

class PrepareError(Exception):
    """A user's input is wrong: the job's one error line (main() prints it), or one source's reason to be skipped."""

def check_flag(flag: str, value):
    """value (None: not given; text: parsed) if FLAG_RANGES allows it; else PrepareError naming flag and range."""
    (lo, hi), real = FLAG_RANGES[flag], flag == "--fps"
    with contextlib.suppress(ValueError):
        value = (float(value) if real else int(value)) if isinstance(value, str) else value
    if value is None or (isinstance(value, numbers.Real if real else numbers.Integral) and not isinstance(value, bool)
                         and lo <= value <= hi and (flag != "--resolution" or value & (value - 1) == 0)):
        return value                                        # (nan fails lo <= value)
    what = "a power of two" if flag == "--resolution" else "a number" if real else "an integer"
    raise PrepareError(f"{flag} must be {what} in {lo:{'g' * real}}..{hi:{'g' * real}}, not {value!r}")

@dataclasses.dataclass(frozen=True)
class Settings:
    """How every frame is made; the same for all videos of a dataset."""
    resolution: int = 256            # frames are R x R (paper: 256; MEAD 1024)
    fmt: str = "jpg"                 # "jpg" (quality 95, the paper's protocol) or "png" (lossless)
    quality: int = 95                # JPEG quality; Table 4: q = 75 instead of 95 moves FVD_16 by 3-9
    clip_len: Optional[int] = None   # slice each video into chunks of this many frames (RainbowJelly: 512)
    skip: int = 0                    # drop this many frames at the start of each video (RainbowJelly: 150)
    max_frames: Optional[int] = None # keep at most this many frames per source, after skip
    min_frames: int = 3              # skip videos shorter than this (k = 3 frames per training clip)
    fps: Optional[float] = None      # the dataset's frame rate (None: the videos' most common)
    workers: Optional[int] = None    # threads (None: one per core)

    def __post_init__(self):         # checked when made: no Settings holds a value out of its range
        for field in dataclasses.fields(self):
            if (flag := "--" + field.name.replace("_", "-")) in FLAG_RANGES:
                check_flag(flag, getattr(self, field.name))
        if self.fmt not in ("jpg", "png") or (self.clip_len or MAX_COUNT) < self.min_frames:
            raise PrepareError(f"--format must be jpg or png, not {self.fmt!r}" if self.fmt not in ("jpg", "png") else
                               f"--clip-len {self.clip_len} is shorter than --min-frames {self.min_frames}")

# --- §2 Frames: any image -> 8-bit RGB -> centred square -> R x R (Lanczos) -> JPEG/PNG -----------

def pil_to_rgb8(img: Image.Image, what: str = "the image") -> np.ndarray:
    """Any Pillow image -> uint8 [H, W, 3]: alpha over black (a transparent pixel in a video), 16 bits rounded."""
    if img.mode == "F":                                     # 0..1? 0..255? (convert("RGB") makes 0..1 black)
        raise PrepareError(f"{what} is a 32-bit float image: save the frames as 8- or 16-bit images")
    if img.mode in ("I", "I;16", "I;16B", "I;16L"):
        x = (np.clip(np.asarray(img).astype(np.int64), 0, 65535) * 255 + 32767) // 65535   # [H, W]
        return np.repeat(x.astype(np.uint8)[:, :, None], 3, axis=2)                     # [H, W, 3]
    if "A" in img.mode or "transparency" in img.info:
        x = np.asarray(img.convert("RGBA")).astype(np.uint16)                           # [H, W, 4]
        return ((x[:, :, :3] * x[:, :, 3:] + 127) // 255).astype(np.uint8)
    return np.asarray(img.convert("RGB"))

def center_crop_resize(frame: np.ndarray, resolution: int) -> np.ndarray:
    """uint8 [H, W, 3] -> [R, R, 3]: the largest centred square (never squashed; the paper crops, Appx E.2), resized
    with Lanczos: shrinking by f, its kernel reaches 3f source pixels each side, so every pixel counts (a fixed
    2-pixel bilinear kernel, F.interpolate without antialias, skips most and aliases them into moire)."""
    (h, w), side = frame.shape[:2], min(frame.shape[:2])
    square = frame[(h - side) // 2:(h + side) // 2, (w - side) // 2:(w + side) // 2]   # [S, S, 3]
    return np.asarray(Image.fromarray(square).resize((resolution, resolution), Image.Resampling.LANCZOS))

def encode_frame(frame: np.ndarray, fmt: str = "jpg", quality: int = 95) -> bytes:
    """uint8 [R, R, 3] -> the bytes of a .jpg or .png file (Pillow, as the paper's protocol)."""
    Image.fromarray(frame).save(buf := io.BytesIO(), "JPEG" if fmt == "jpg" else "PNG", quality=quality)  # (PNG: none)
    return buf.getvalue()

# --- §3 Sources: what SRC holds, checked at the door, read one frame at a time --------------------
# An entry of SRC is classified by its extension alone (100,000 frames are listed without opening one). Sizes are
# checked before anything of that size is read: a video's from its header (probe), a frame image's from its own.

@dataclasses.dataclass
class Source:
    """One input video: a video file, a folder of frames, or a procedural demo video."""
    kind: str                          # "video", "frames" or "demo"
    label: str                         # how the summary and dataset.json name it: "bikes.mp4", "walk/"
    name: str = ""                     # the unique, filesystem-safe output name
    path: str = ""                     # the file, or the folder of frames
    files: tuple = ()                  # frames: the image files, in natural order
    demo: tuple = ()                   # demo: the (seed, frames, resolution) of make_demo_video
    fps: Optional[float] = None        # from the header (None: none, as a frame folder's or a still GIF's)
    seconds: float = 0.0               # the header's duration (0: not said), bounds the frames read (iter_frames)
    notes: tuple = ()                  # said in the summary: "left out, not images: notes.txt, raw/"

def unique_names(names: list) -> list:
    """Unique case-insensitively (for macOS and Windows) by adding "_2", "_3", ...; "dataset.json" is taken."""
    taken, out = {"dataset.json"}, []
    for n in names:
        out.append(next(c for c in [n] + [f"{n}_{k}" for k in range(2, len(names) + 3)] if c.lower() not in taken))
        taken.add(out[-1].lower())
    return out

def discover(src: str) -> tuple:
    """SRC -> (sources, skipped (label, reason) pairs). SRC is a video file; a folder of video files and/or
    frame folders (one folder of images per video); or a folder of images, one video. Subfolders are not
    searched further, hidden files (.DS_Store) are no entries, frames are in natural order (f2 before f10)."""
    def kind(path):                                         # (the extension first: no stat per frame)
        ext = os.path.splitext(path)[1].lower()
        return "video" if ext in VIDEO_EXTS else "image" if ext in IMAGE_EXTS else "dir" * os.path.isdir(path) or "file"

    def entries(path):
        try:
            return {e: kind(os.path.join(path, e)) for e in sorted((e for e in os.listdir(path) if e[0] != "."),
                    key=lambda e: [(0, int(s)) if s.isdigit() else (1, s.lower()) for s in re.split(r"(\d+)", e)])}
        except OSError as e:
            raise PrepareError(f"cannot read folder {path}: {e.strerror or e}") from None

    def frame_folder(path, label, kinds):
        other = [e + "/" * (k == "dir") for e, k in kinds.items() if k != "image"]
        note = f"left out, not images: {', '.join(other[:5])}" + f" and {len(other) - 5} more" * (len(other) > 5)
        return Source("frames", label, path=path, notes=(note,) if other else (),
                      files=tuple(os.path.join(path, e) for e in kinds if kinds[e] == "image"))
    reason = lambda e, k: ("a lone image: put the frames of a video in a folder of their own" if k == "image" else
                           f"not a video (extension {os.path.splitext(e)[1] or '(none)'}; expected a folder of frames "
                           "or one of " + ", ".join(VIDEO_EXTS) + ")")
    if not (os.path.isfile(src) or os.path.isdir(src)):    # (a FIFO, a device, a link loop: lexists alone)
        raise PrepareError(f"{src}: " + ("not a file or a folder" * os.path.lexists(src) or "no such file or folder"))
    folder, name = (src, None) if os.path.isdir(src) else os.path.split(src)
    kinds = entries(src) if name is None else {name: kind(src)}
    if os.path.isdir(src) and "image" in kinds.values() and not {"dir", "video"} & set(kinds.values()):
        return [frame_folder(src, os.path.basename(os.path.abspath(src)) + "/", kinds)], []    # one frame folder
    sources, skipped = [], []
    for e, k in kinds.items():
        inner = entries(os.path.join(folder, e)) if k == "dir" else {}
        if k == "video":
            sources.append(Source("video", e, path=os.path.join(folder, e)))
        elif "image" in inner.values():
            sources.append(frame_folder(os.path.join(folder, e), e + "/", inner))
        else:
            skipped.append((e + "/", "no frames in this folder (subfolders are not searched; frames are images: "
                            + " ".join(IMAGE_EXTS) + ")") if k == "dir" else (e, reason(e, k)))
    return sources, skipped

def _check_size(w: int, h: int, what: str) -> None:
    if w * h > MAX_FRAME_PIXELS:                            # refused from the header, before any decoding
        raise PrepareError(f"{what} claims {w}x{h} frames, more than {MAX_FRAME_PIXELS:,} pixels: refused unread")

def probe(source: Source) -> tuple:
    """A video's header -> (source with its fps, None), or (None, the reason it is refused)."""
    if not os.path.isfile(source.path):                      # a FIFO would block ffmpeg, /dev/zero never end
        return None, "not a regular file"
    try:
        with contextlib.closing(imageio_ffmpeg.read_frames(source.path)) as reader:   # (closing stops ffmpeg now)
            meta = next(reader)                             # ffmpeg's header; no frame decoded yet
        fps, (lo, hi) = float(meta.get("fps") or 0), FLAG_RANGES["--fps"]
        _check_size(*meta["size"], "its header")
        if fps and not lo <= fps <= hi:                     # 0: no rate (a still GIF), as a frame folder has none
            raise PrepareError(f"its header says {fps:g} fps, not in {lo:g}..{hi:g} (a broken header)")
        return dataclasses.replace(source, fps=fps or None, seconds=float(meta.get("duration") or 0) * bool(fps)), None
    except PrepareError as e:
        return None, str(e)
    except Exception as e:                                  # corrupt, empty, not a video: ffmpeg says why
        if "does not contain any stream" in str(e):
            return None, "no video stream (no frames to read)"
        lines = [ln for ln in (re.sub(r"^\[[^\]]*\]\s*", "", ln).strip() for ln in str(e).splitlines()) if ln]
        return None, f"not a readable video (ffmpeg: {(lines or [type(e).__name__])[-1]})"

def iter_frames(source: Source, fps: float, skip: int = 0) -> Iterator[np.ndarray]:
    """A source's frames at the dataset's rate after the first `skip`, uint8 [H, W, 3], one at a time. A video goes
    through ffmpeg's fps filter by its timestamps, never its header's rate (a GIF's can be wrong): output frame i, at
    i / fps s, is the source frame on screen then (at its own rate: each once); with no rate (a still GIF), as is."""
    if source.kind == "video":                           # square pixels: a DV clip's 128:117 shrunk, never grown
        square = "scale='iw*min(sar,1)':'ih/max(sar,1)':flags=lanczos"
        timing = ["-vf", f"fps={fps!r},{square}"] if source.fps else ["-vf", square, "-fps_mode", "passthrough"]
        # Bounded by its size (4 bytes a coded frame at least) and 2x its header's duration: a jump of hours is refused
        most = min((os.path.getsize(source.path) / 4 + 1) * (fps / (source.fps or fps) + 1),
                   (2 * source.seconds + 10) * fps if source.seconds else float("inf"))
        with contextlib.closing(imageio_ffmpeg.read_frames(source.path, output_params=timing)) as reader:
            w, h = next(reader)["size"]
            for i, raw in enumerate(itertools.islice(reader, skip, None), start=skip):
                if i >= most:
                    raise PrepareError("its timestamps run on past what its size and its header allow (a jump?)")
                yield np.frombuffer(raw, np.uint8).reshape(h, w, 3)
    elif source.kind == "frames":
        first = None
        for f in source.files[skip:]:
            if not os.path.isfile(f):                       # a FIFO would block the read, /dev/zero never end
                raise PrepareError(f"frame {f}: not a regular file (a FIFO, a device or a link loop is never read)")
            with Image.open(f) as img:                      # reads the header only
                _check_size(*img.size, f"frame {os.path.basename(f)}")
                first = first or (img.size, os.path.basename(f))
                if img.size != first[0]:                    # stretching some would invent motion
                    raise PrepareError(f"frames of different sizes in folder {source.label}: {first[1]} is "
                                       "{}x{}, {} is {}x{}".format(*first[0], os.path.basename(f), *img.size))
                yield pil_to_rgb8(img, f"frame {os.path.basename(f)}")
    else:
        yield from _demo_frames(*source.demo, start=skip)

def read_clip(path: str, resolution: int, most: int = 64) -> tuple:
    """An image, a video or a folder of frames (stylegan_v.py project's target) -> (its first `most` frames, cropped
    and resized, uint8 [T, R, R, 3]; its fps, a frame folder's DEFAULT_FPS; whether it held more). PrepareError."""
    still = os.path.isfile(path) and path.lower().endswith(IMAGE_EXTS)      # (a lone image: a one-frame folder)
    sources, skipped = ([Source("frames", path, files=(path,))], []) if still else discover(path)
    if len(sources) != 1:
        raise PrepareError(f"{path}: " + (f"{len(sources)} videos, project one at a time" if sources else
                                          skipped[0][1] if skipped else "no frames in it"))
    source, why = probe(sources[0]) if sources[0].kind == "video" else (sources[0], None)
    if source is None:
        raise PrepareError(f"{path}: {why}")
    try:
        frames = [center_crop_resize(f, resolution) for f in itertools.islice(iter_frames(source, source.fps or
                                                                                            DEFAULT_FPS), most + 1)]
    except (OSError, RuntimeError, ValueError, SyntaxError, Image.DecompressionBombError) as e:   # (PIL's broken PNG)
        raise PrepareError(f"{path}: not a readable image or clip ({(str(e).strip().splitlines() or [''])[0][:200]})")
    if not frames:
        raise PrepareError(f"{path}: no frames in it")
    return np.stack(frames[:most]), source.fps or DEFAULT_FPS, len(frames) > most

# --- §4 The embedded demo dataset: soft blobs with smooth, continuous motion ----------------------
# Motion with no download, learnable by a tiny GAN on a CPU in minutes: 2-3 soft blobs on a gradient, every visual
# parameter a sum of three sinusoids of time with random periods of 40-240 frames: smooth, never periodic in a clip,
# different in every video. Like StyleGAN-V's view of video, a function x(t): frame t depends only on (seed, t).

def _hsv_to_rgb(h: np.ndarray, s: float, v: float) -> np.ndarray:
    """Hue in [0, 1) (any shape) -> RGB in [0, 1] (shape + [3]), the piecewise-linear hexcone."""
    k = (np.array([5.0, 3.0, 1.0]).reshape((3,) + (1,) * np.ndim(h)) + np.asarray(h) * 6.0) % 6.0   # [3, ...]
    return np.moveaxis(v - v * s * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0), 0, -1)

def _waves(rng: np.random.Generator, n: int):
    """n random smooth signals of unit RMS, each three sinusoids -> a function of times t [T] -> [T, n]."""
    periods, phases = np.exp(rng.uniform(np.log(40), np.log(240), (n, 3))), rng.uniform(0, 2 * np.pi, (n, 3))  # frames
    amps = np.array([1.0, 0.6, 0.35]) * rng.uniform(0.7, 1.3, size=(n, 3))
    amps /= np.sqrt((amps ** 2).sum(axis=1, keepdims=True) / 2)                 # RMS of the sum = 1
    return lambda t: (amps * np.sin(2 * np.pi * t[:, None, None] / periods + phases)).sum(axis=-1)

def _demo_frames(seed, frames: int, resolution: int, start: int = 0) -> Iterator[np.ndarray]:
    """Yield frames start..frames-1 of demo video `seed`, uint8 [R, R, 3]."""
    rng = np.random.default_rng(seed)                       # everything random is drawn first
    bg = dict(waves=_waves(rng, 3), hue=rng.uniform(), angle=rng.uniform(0, 2 * np.pi))
    blobs = [dict(waves=_waves(rng, 8), center=rng.uniform(-0.6, 0.6, size=2), size=rng.uniform(0.2, 0.32),
                  angle=rng.uniform(0, np.pi), spin=rng.choice([-1.0, 1.0]) / 60,       # rad per frame
                  hue=rng.uniform(), hue_drift=rng.choice([-1.0, 1.0]) / 300,           # cycles per frame
                  wobble_phase=rng.uniform(0, 2 * np.pi)) for _ in range(int(rng.integers(2, 4)))]
    grid = (np.arange(resolution) + 0.5) / resolution * 2 - 1                  # pixel centres in [-1, 1]
    T = max(1, min(8, 2 ** 20 // resolution ** 2))          # memory bounded at any R: T frames of `rows` rows at
    rows = max(1, 2 ** 20 // (T * resolution))              # a time, about 2^20 pixels (every op is per pixel)
    for t0 in range(start, frames, T):
        t = np.arange(t0, min(t0 + T, frames), dtype=np.float64)              # [T]
        yield from np.concatenate([_demo_rows(bg, blobs, t, *(g[None] for g in np.meshgrid(
            grid[r:r + rows], grid, indexing="ij"))) for r in range(0, resolution, rows)], axis=1)

def _demo_rows(bg, blobs, t, y, x):
    """uint8 [T, rows, R, 3]: those rows (pixel centres y, x [1, rows, R]) of the demo frames at times t [T]."""
    col = lambda a: a[:, None, None]                                       # [T] -> [T, 1, 1]
    s = bg["waves"](t)       # [T, 3]; the background: a soft gradient of two colours, its direction and hues drifting
    angle, hue_a = bg["angle"] + 0.8 * s[:, 0], bg["hue"] + 0.06 * s[:, 1] + t / 900
    w = 0.5 + 0.5 * np.tanh(1.2 * (col(np.cos(angle)) * x + col(np.sin(angle)) * y))   # [T, rows, R]
    dark = _hsv_to_rgb(hue_a % 1, 0.55, 0.45)                                         # [T, 3]
    light = _hsv_to_rgb((hue_a + 0.25 + 0.05 * s[:, 2]) % 1, 0.55, 0.75)
    img = dark[:, None, None] * (1 - w[..., None]) + light[:, None, None] * w[..., None]  # [T, rows, R, 3]
    for b in blobs:
        s = b["waves"](t)                                                  # [T, 8]
        cx, cy = (0.7 * np.tanh(b["center"][i] + 0.7 * s[:, i]) for i in (0, 1))   # tanh: stays inside
        size = b["size"] * np.exp(0.25 * s[:, 2])                          # mean radius
        aspect = np.exp(0.22 * s[:, 3])                                    # elongation
        theta = b["angle"] + b["spin"] * t + 0.5 * s[:, 4]                 # orientation
        hue = b["hue"] + b["hue_drift"] * t + 0.08 * s[:, 5]
        wobble = 0.12 * (1 + 0.5 * s[:, 6])                                # 3-lobed deformation
        wobble_phase = b["wobble_phase"] + 0.8 * s[:, 7] + t / 40
        dx, dy = x - col(cx), y - col(cy)                                  # [T, rows, R]
        c, sn = col(np.cos(theta)), col(np.sin(theta))
        u = (c * dx + sn * dy) / col(size * aspect)                        # the blob's frame, unit
        v = (-sn * dx + c * dy) / col(size / aspect)                       #  radius = 1
        r = np.sqrt(u ** 2 + v ** 2) / (1 + col(wobble) * np.sin(3 * np.arctan2(v, u) + col(wobble_phase)))
        alpha = np.clip(0.5 + (1 - r) * col(size) / 0.05, 0.0, 1.0)       # soft edge 0.05 wide (1.6 px at 64)
        color = _hsv_to_rgb(hue % 1, 0.8, 1.0)[:, None, None] * (1 - 0.4 * np.clip(r, 0, 1)[..., None] ** 2)
        img = img * (1 - alpha[..., None]) + color * alpha[..., None]      # shaded: a little volume
    return np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)

def make_demo_video(seed, frames: int = 64, resolution: int = 64) -> np.ndarray:
    """A procedural video -> uint8 [frames, R, R, 3]; seed: any np.random.default_rng seed ((seed, i) in the demo)."""
    return np.stack(list(_demo_frames(seed, frames, resolution)))

# --- §5 Converting one source (in a worker thread) ------------------------------------------------

def convert(source: Source, s: Settings, stage: str, stop: threading.Event, tick) -> dict:
    """Stage one source as <stage>/<name>/<i:06d>.<fmt> -> {"source", "videos": [{"name", "frames", "source"}],
    "skipped": reason or None, "notes"}, stopping once `stop` is set. Only reading is guarded: its error is the
    source's (a unit, the video or a --clip-len chunk, is kept if all its frames decoded); an OSError in a write
    is OUT's disk and stops the job (a full disk is never "fifty broken videos")."""
    result = {"source": source.label, "videos": [], "skipped": None, "notes": []}
    unit = lambda n: f"{source.name}_c{n // s.clip_len:04d}" if s.clip_len else source.name
    frames, n, error, frame = iter_frames(source, s.fps, s.skip), 0, None, None
    try:
        while (s.max_frames is None or n < s.max_frames) and not stop.is_set():
            try:
                frame = next(frames, None)
            except Exception as e:                          # refused by its header; a decoding error midway
                why = f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[-1]}"
                error = str(e) if isinstance(e, PrepareError) else f"failed after {n} frames ({why})"
            if error or frame is None:
                break
            if n == 0 and 2 * min(frame.shape[:2]) < s.resolution:   # (the crop keeps the short side)
                result["notes"].append(f"upscaled {s.resolution / min(frame.shape[:2]):.1f}x from "
                                       f"{frame.shape[1]}x{frame.shape[0]} to {s.resolution}^2")
            i = n % s.clip_len if s.clip_len else n         # the frame's number in its unit
            if i == 0:
                os.mkdir(os.path.join(stage, unit(n)))      # not makedirs: never recreates a removed stage
            with open(os.path.join(stage, unit(n), f"{i:06d}.{s.fmt}"), "xb") as f:
                f.write(encode_frame(center_crop_resize(frame, s.resolution), s.fmt, s.quality))
            n += 1
            tick(1)
    finally:
        frames.close()                                      # stops ffmpeg now
    if frame is None and not error and n + s.skip < 0.75 * source.seconds * s.fps:   # (ffmpeg's status is not ours)
        result["notes"].append(f"ended at frame {n + s.skip} of the ~{source.seconds * s.fps:.0f} its header's "
                               f"{source.seconds:g} s hold (cut short or damaged?): kept what decoded")
    length = s.clip_len or max(n, 1)
    complete = n // length if s.clip_len else int(not error and n >= s.min_frames)
    for c in range(complete, -(-n // length)):              # the incomplete units go
        shutil.rmtree(os.path.join(stage, unit(c * length)))
    result["videos"] = [{"name": unit(c * length), "frames": length, "source": source.label} for c in range(complete)]
    if error and complete:
        result["notes"].append(f"{error}; kept the {complete} complete chunks before it")
    elif error or not complete:
        result["skipped"] = error or (f"{n} frames: shorter than one --clip-len chunk of {s.clip_len}" if s.clip_len
                                      else f"only {n} frames, fewer than --min-frames {s.min_frames}")
    elif n % length:
        result["notes"].append(f"dropped the last {n % length} frames (shorter than --clip-len {length})")
    return result

# --- §6 Building the dataset: the pool, the frame rate, one atomic writer -------------------------
# One atomic writer: OUT is built as OUT.partial-<pid> beside it (a zip's frames staged in OUT.partial-<pid>.stage),
# renamed onto OUT when complete (replacing only what a run could have written); any failure, Ctrl-C or SIGTERM
# leaves an older OUT untouched and no temporary name; what a killed run (kill -9) left, the next run removes. Threads,
# not processes: ffmpeg (a subprocess) and Pillow release the GIL; Ctrl-C is one KeyboardInterrupt in the main thread.

def check_out(out: str) -> tuple:
    """OUT -> (absolute OUT, is it a zip): new, an empty folder or a dataset zip; what a killed run left goes."""
    out = os.path.abspath(out)
    as_zip, parent, ext = out.lower().endswith(".zip"), os.path.dirname(out), os.path.splitext(out)[1]
    if ext and not as_zip:                                  # (o.gif would be a folder named o.gif)
        raise PrepareError(f"cannot write {out}: OUT is a .zip file or a folder (no extension), not a {ext}")
    if not os.path.isdir(parent):
        raise PrepareError(f"cannot write {out}: {parent} {('does not exist', 'is a file')[os.path.exists(parent)]}")
    taken = os.path.lexists(out) and (as_zip or not os.path.isdir(out) or bool(os.listdir(out)))
    if as_zip and os.path.isfile(out):                      # only a dataset it wrote: dataset.json and frames alone
        with contextlib.suppress(OSError, zipfile.BadZipFile), zipfile.ZipFile(out) as z:
            taken = [n for n in z.namelist() if not re.fullmatch(r"[^/]+/\d{6}\.(jpg|png)", n)] != ["dataset.json"]
    if taken:
        raise PrepareError(f"cannot write {out}: " + ("it exists and is not a dataset (prepare_data.py replaces only "
                           "a dataset it wrote)" if as_zip else "it already exists and is not an empty folder"))
    if os.path.ismount(out):                                # no rename can replace a mount point
        raise PrepareError(f"cannot write {out}: it is a mount point (name a new folder inside it)")
    remove_dead_partials(out)
    return out, as_zip

def remove_dead_partials(out: str) -> None:
    """Remove OUT.partial-<pid>[.stage] whose process is gone (kill -9; this pid, reused, counts as gone)."""
    def gone(pid):
        try:
            return pid == os.getpid() or bool(os.kill(pid, 0))     # signal 0 only asks whether pid runs
        except OSError as e:                                        # no such process; or it runs, as another user
            return isinstance(e, ProcessLookupError)
    folder, base = os.path.split(out)
    for entry in os.listdir(folder):
        if (m := re.fullmatch(re.escape(base) + r"\.partial-(\d+)(\.stage)?", entry)) and gone(int(m[1])):
            shutil.rmtree(p, ignore_errors=True) if os.path.isdir(p := os.path.join(folder, entry)) else os.remove(p)

def _build(sources: list, skipped: list, out: str, s: Settings, progress: bool, verbose: bool,
           origin: str = "the input") -> dict:
    """Probe, choose the frame rate, convert, and write OUT atomically: the engine of prepare() and make_demo()."""
    t_start, (out, as_zip) = time.time(), check_out(out)
    tmp = f"{out}.partial-{os.getpid()}"
    stage = tmp + ".stage" if as_zip else tmp               # where the threads put frames
    stop, done, file, zf, videos, notes = threading.Event(), False, None, None, [], []
    workers = max(1, min(s.workers or os.cpu_count() or 1, len(sources)))
    pool = concurrent.futures.ThreadPoolExecutor(workers)
    try:
        os.mkdir(stage)                                     # a bad OUT fails now, before any decoding
        probed = list(pool.map(lambda src: probe(src) if src.kind == "video" else (src, None), sources))
        skipped += [(src.label, reason) for src, (_, reason) in zip(sources, probed) if reason]
        kept = [p for p, _ in probed if p is not None]          # (none: said once nothing was converted, below)
        if (fps := s.fps) is None:                          # the videos' most common rate (a tie: the higher;
            votes = collections.Counter(round(p.fps, 2) for p in kept if p.fps)         # 29.97 = 29.97003)
            fps = max(votes, key=lambda k: (votes[k], k), default=DEFAULT_FPS)
            notes += [f"frame folders and stills have no frame rate: assuming {fps:g} fps (set it with --fps)"] * any(
                p.fps is None for p in kept)
        ntsc = [n * 1000 / 1001 for n in (24, 30, 60) if abs(n * 1000 / 1001 - fps) < 6e-3]   # ffmpeg's "23.98 fps":
        s = dataclasses.replace(s, fps=(fps := (ntsc or [fps])[0]))   # 24000/1001 exactly, or a frame repeats in 4 min
        resampled = [p for p in kept if p.fps and round(p.fps, 2) != round(fps, 2)]
        notes += [f"{p.label}: resampled from {p.fps:g} to {fps:g} fps (frames picked by timestamp)" for p in resampled]
        notes += [f"{p.label}: {note}" for p in kept for note in p.notes]
        zf = zipfile.ZipFile(file := open(tmp, "xb"), "w") if as_zip else None
        with tqdm(desc="converting", unit="frame", disable=not progress or None, smoothing=0.05) as bar:
            pending, jobs = collections.deque(), iter(kept)     # results in source order (the same zip for any
            while True:                                         # --workers), at most 2 per thread in the stage
                pending.extend(pool.submit(convert, p, s, stage, stop, bar.update)
                               for p in itertools.islice(jobs, 2 * workers - len(pending)))
                if not pending:
                    break
                res = pending.popleft().result()                # (a Ctrl-C interrupts this wait)
                skipped += [(res["source"], res["skipped"])] if res["skipped"] else []
                notes += [f"{res['source']}: {note}" for note in res["notes"]]
                for video in res["videos"]:
                    for i in range(video["frames"] if zf else 0):   # stored (JPEG/PNG do not compress), with a
                        path = os.path.join(stage, video["name"], f"{i:06d}.{s.fmt}")   # fixed date: the zip
                        with open(path, "rb") as f:                                    # depends on the data only
                            zf.writestr(zipfile.ZipInfo(path[len(stage) + 1:], (1980, 1, 1, 0, 0, 0)), f.read())
                        os.remove(path)
                    videos.append(video)
        if not videos:
            raise PrepareError(f"no usable videos in {origin}: " + (f"{len(skipped)} skipped ({skipped[0][0]}: "
                               f"{skipped[0][1]})" if skipped else "it holds no video, no frames and no folder"))
        # dataset.json last, one video a line (readable, greppable); then the one rename that makes OUT.
        index = json.dumps({"fps": float(fps), "resolution": s.resolution, "format": s.fmt})[:-1] + ', "videos": [\n' \
            + ",\n".join(json.dumps(v) for v in videos) + "\n]}\n"
        with open(os.path.join(stage, "dataset.json"), "x") as f:      # (a zip's stage: removed unread)
            f.write(index)
        if as_zip:
            zf.writestr(zipfile.ZipInfo("dataset.json", (1980, 1, 1, 0, 0, 0)), index)
            zf.close()                                      # (and flushes the file)
            os.fsync(file.fileno())                         # on disk before the rename makes it visible
            file.close()
        replaced = os.path.lexists(out)
        os.replace(tmp, out)                                # OUT is the old one or the new one, never half
        done = True
    except OSError as e:                                    # every read of SRC is guarded: this is OUT's disk
        raise PrepareError(f"cannot write {out}: {e.strerror or e}; nothing was written" +
                           " (the existing one is untouched)" * os.path.lexists(out)) from None
    finally:          # whatever stopped us, the cleanup runs to its end: a 2nd Ctrl-C or SIGTERM meanwhile is ignored
        held = [(sig, signal.signal(sig, signal.SIG_IGN)) for sig in (signal.SIGINT, signal.SIGTERM)
                if threading.current_thread() is threading.main_thread()]      # (timeout(1) signals twice)
        stop.set()                                          # threads stop at their next frame and are joined,
        for step in (lambda: pool.shutdown(wait=True, cancel_futures=True), lambda: zf is None or done or zf.close(),
                     lambda: file is None or file.close(), lambda: shutil.rmtree(stage, ignore_errors=True),
                     lambda: done or not os.path.lexists(tmp) or os.remove(tmp)):    # then the partial goes: each
            with contextlib.suppress(Exception):            # step runs, even if one before fails (closing a zip
                step()                                      # on a full disk raises)
        [signal.signal(sig, handler) for sig, handler in held]
    frames, seconds = sum(v["frames"] for v in videos), time.time() - t_start
    if verbose:
        print(f"wrote {out}: {len(videos)} video(s), {frames} frames of {s.resolution}x{s.resolution} at {fps:g} fps "
              f"({f'jpg q{s.quality}' if s.fmt == 'jpg' else 'png'}) in {seconds:.1f} s" + " (replaced the existing "
              f"{'' if as_zip else 'empty folder '}{os.path.basename(out)})" * replaced,
              *[f"skipped: {a}: {b}" for a, b in skipped], *[f"note: {n}" for n in notes], sep="\n")
    return {"out": out, "videos": len(videos), "frames": frames, "fps": float(fps), "resolution": s.resolution,
            "format": s.fmt, "seconds": round(seconds, 2), "skipped": [{"source": a, "reason": b} for a, b in skipped],
            "notes": notes, "resampled": [p.label for p in resampled], "replaced": replaced}

def prepare(src: str, out: str, resolution: int = 256, *, clip_len: Optional[int] = None, skip: int = 0,
            max_frames: Optional[int] = None, min_frames: int = 3, fps: Optional[float] = None,
            fmt: str = "jpg", quality: int = 95, workers: Optional[int] = None, progress: bool = False,
            verbose: bool = True) -> dict:
    """Make a dataset from SRC -> the summary {"out", "videos", "frames", "fps", "resolution", "format", "seconds",
    "skipped": [{"source", "reason"}], "notes", "resampled": [labels], "replaced": whether an OUT was}. Raises
    PrepareError if nothing is usable, a setting is out of range or OUT cannot be written; OUT is then as it was."""
    settings = Settings(resolution, fmt, quality, clip_len, skip, max_frames, min_frames, fps, workers)
    check_out(out)                                          # every setting, then OUT, before SRC is read
    sources, skipped = discover(src)
    portable = lambda t: re.sub(r"[^A-Za-z0-9._-]+", "_", unicodedata.normalize("NFKD", t).encode("ascii", "ignore")
                                .decode()).strip("._")[:100] or "video"        # never hidden, never ".."
    names = unique_names([portable(os.path.splitext(s.label)[0] if s.kind == "video" else s.label) for s in sources])
    sources = [dataclasses.replace(s, name=n) for s, n in zip(sources, names)]
    return _build(sources, skipped, out, settings, progress, verbose, origin=src)

def make_demo(out: str, resolution: int = 64, num_videos: int = 64, frames: int = 64, seed: int = 0, *,
              fmt: str = "jpg", quality: int = 95, workers: Optional[int] = None, progress: bool = False,
              verbose: bool = True) -> dict:
    """Write the procedural demo dataset (§4): video i is make_demo_video((seed, i), frames, resolution)."""
    [check_flag(flag, value) for flag, value in [("--num-videos", num_videos), ("--frames", frames), ("--seed", seed)]]
    if num_videos * frames > MAX_COUNT:                     # stylegan_v.py's bound of one video, for them all
        raise PrepareError(f"--num-videos x --frames is {num_videos * frames:,} frames, over {MAX_COUNT:,}")
    settings = Settings(resolution, fmt, quality, min_frames=min(3, frames), workers=workers)
    sources = [Source("demo", f"make_demo_video(seed=({seed}, {i}))", name=f"demo{i:05d}", fps=DEMO_FPS,
                      demo=((seed, i), frames, resolution)) for i in range(num_videos)]
    return _build(sources, [], out, settings, progress, verbose)

# --- §7 The command line --------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    # Flags default to None: main() passes on those given (the functions hold the defaults), refuses the other mode's
    def numeric(flag, text):
        try:                                                # argparse says `error: argument --fps: must be ...`
            return check_flag(flag, text)
        except PrepareError as e:
            raise argparse.ArgumentTypeError(str(e).split(" ", 1)[1]) from None
    p = argparse.ArgumentParser(prog="prepare_data.py", formatter_class=argparse.RawDescriptionHelpFormatter,
                                description=__doc__.split("\n\n")[1], epilog="examples:\n" + __doc__.split("\n\n")[2])
    p.error = lambda message: p.exit(2, f"{p.prog}: error: {message}\n")    # (not the usage block)
    add = lambda group, flag, meta, text: group.add_argument(flag, metavar=meta, type=lambda t: numeric(flag, t),
                                                             help=text + " ({}..{})".format(*FLAG_RANGES[flag]))
    p.add_argument("src", nargs="?", metavar="SRC", help="a video file, a folder of videos, or a folder of frame "
                   "folders (one folder of images per video, in natural order)")
    p.add_argument("out", nargs="?", metavar="OUT", help="the dataset to write: OUT.zip, or a folder")
    add(p, "--resolution", "R", "frames are R x R, a power of two (default 256, the paper's; 64 with --demo)")
    add(p, "--clip-len", "N", "slice each video into chunks of N frames, <video>_c0000, ... (RainbowJelly: 512)")
    add(p, "--skip", "N", "drop the first N frames of each video (default 0; RainbowJelly: 150)")
    add(p, "--max-frames", "N", "keep at most N frames of each video, after --skip")
    add(p, "--min-frames", "N", "skip videos with fewer frames (default 3: a training clip has k = 3 frames)")
    add(p, "--fps", "FPS", "the dataset's frame rate (default: the videos' most common, 25 for frame folders)")
    p.add_argument("--format", dest="fmt", choices=["jpg", "png"], default="jpg", help="jpg (the paper's) or png")
    add(p, "--quality", "Q", "JPEG quality (default 95, the paper's: FVD moves with it, Table 4)")
    add(p, "--workers", "N", "threads converting in parallel (default: all cores)")
    p.add_argument("--demo", action="store_true", help="write the procedural demo dataset: --demo OUT")
    add(p, "--num-videos", "N", "demo: number of videos (default 64)")
    add(p, "--frames", "F", "demo: frames per video (default 64, 2.6 s at 25 fps)")
    add(p, "--seed", "S", "demo: random seed (default 0)")
    return p

def main(argv: Optional[list] = None) -> int:
    """The command line -> exit status: 0 done, 2 bad input (a flag, a file), 1 a bug, 130 interrupted (Ctrl-C, or
    SIGTERM, handled the same), as stylegan_v.py and fvd.py. Every failure is one line on stderr, never a traceback."""
    parser, in_main = build_parser(), threading.current_thread() is threading.main_thread()
    old_handler = signal.signal(signal.SIGTERM, signal.default_int_handler) if in_main else None   # raises
    try:                                                                                 # KeyboardInterrupt
        a = parser.parse_args(argv)                         # a bad flag: one line and exit status 2, here
        given = {k: v for k, v in vars(a).items() if v is not None and k not in ("src", "out", "demo")}
        run = make_demo if a.demo else prepare
        if other := [k for k in given if k not in inspect.signature(run).parameters]:    # the other mode's
            parser.error(f"--{other[0].replace('_', '-')} " + ("does not apply to --demo (it shapes the videos of "
                                                                "SRC)" if a.demo else "applies to --demo only"))
        if a.quality is not None and a.fmt != "jpg":
            parser.error(f"--quality applies to --format jpg only ({a.fmt} is lossless)")
        if a.src is None or (a.out is None) != a.demo:
            parser.error("--demo takes one path, OUT" if a.demo else "need SRC and OUT (or --demo OUT)")
        with warnings.catch_warnings(action="ignore", category=Image.DecompressionBombWarning):   # _check_size's
            run(*[a.src, a.out][:2 - a.demo], **given, progress=True)
    except PrepareError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted; nothing was written", file=sys.stderr)
        return 130
    except Exception as e:                                  # a bug: still one line, and a non-zero status
        print(f"{parser.prog}: error: unexpected {type(e).__name__}: {(str(e).strip().splitlines() or [''])[0]} "
              f"(a bug in prepare_data.py, please report it)", file=sys.stderr)
        return 1
    finally:
        in_main and signal.signal(signal.SIGTERM, old_handler)
    return 0

if __name__ == "__main__":
    sys.exit(main())
