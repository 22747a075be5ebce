"""Turn videos into the dataset that stylegan_v.py trains on and fvd.py measures.

A StyleGAN-V dataset is a set of videos of square RGB frames at one resolution and one frame rate.
This script makes one from whatever you have, or a small procedural one from nothing:

    python prepare_data.py --demo demo.zip                         # 64 videos x 64 frames of 64x64
    python prepare_data.py my_videos/ data.zip --resolution 128    # a folder of mp4, avi, mov, gif, ...
    python prepare_data.py frames/ data.zip --fps 25               # a folder of frame folders
    python prepare_data.py jelly.mp4 rj256.zip --clip-len 512 --skip 150   # one long video, chunked

The last is the paper's RainbowJelly recipe (Appx E.2): an 8-hour 30 fps film "sliced into 1686 chunks
of 512 frames each, starting with the 150-th frame [...], center-cropped and resized into 256^2". The
other benchmarks (FaceForensics, SkyTimelapse, UCF101: 25 fps; MEAD: 30 fps) are videos or frame folders.

The layout, the contract with stylegan_v.py and fvd.py (a zip, or a folder if OUT has no .zip):

    dataset.json        {"fps": 25.0, "resolution": 64, "format": "jpg",
                         "videos": [{"name": "bikes", "frames": 120, "source": "bikes.mp4"}, ...]}
    bikes/000000.jpg    frame 0 of video "bikes", R x R RGB, numbered consecutively to frames - 1

Why frames and not mp4: training reads 3 frames at random times of a random video, thousands of times a
second. An mp4 decodes from its last keyframe for each; a stored JPEG is read directly (zip members are
stored uncompressed, so a reader seeks to any frame). Names are unique and filesystem-safe ("_2" on a
clash; chunk 3 of a long video is "<name>_c0003").

Every frame becomes 8-bit RGB (alpha composited over black, 16-bit rounded), loses the edges outside its
largest centred square (never squashed) and is resized with Pillow's LANCZOS (a windowed sinc that widens
with the shrink factor, so detail the small image cannot hold is averaged away, not aliased into moire),
then stored as JPEG q95 or PNG. This matters: FVD is "very sensitive to the interpolation procedures and
[...] JPEG compression" (Sec 4); in Table 4 one checkpoint scores FVD_16 = 76.8 done properly, 38.9 with
both sides resized to 128^2, 80.2 with fake frames at JPEG q75. Make real and fake frames the same way.

Frame rate. stylegan_v.py measures time in frames of the data, so a dataset has one rate: --fps, by
default the most common among the videos (phones record 29.97, 30, 25, 24). A video at another rate is
resampled by ffmpeg's fps filter, which picks frames by timestamp (output frame i, at time i/fps, shows
the source frame on screen then; some are dropped or repeated), and the summary names it. Frame folders
have no rate: they take the dataset's (25 if nothing says). --skip, --max-frames, --clip-len count
frames at that rate.

Robust by a few mechanisms, each used everywhere:
  * one check per kind of input, at the door: flags (FLAG_RANGES), OUT (check_out), a video's header
    (probe: frame size and rate), a frame image's header (read before the frame is decoded). A bad
    source is skipped and the summary gives the reason; the job goes on.
  * one atomic writer: OUT is built as OUT.partial-<pid> beside it (a zip's frames staged in
    OUT.partial-<pid>.stage) and renamed onto OUT when complete, so any failure leaves an older OUT
    untouched. What a killed run left (kill -9, a power cut: its pid no longer runs) the next run removes.
  * one error path: a failure of the job is ONE line, "prepare_data.py: error: ..." (exit 2 for a bad
    flag, 1 otherwise; Ctrl-C and SIGTERM exit 130); an OSError while writing is OUT's disk (full,
    read-only). Never a traceback.
  * one pool of threads (--workers): the work is ffmpeg in a subprocess and Pillow, which release the
    GIL, so threads suffice and Ctrl-C is one KeyboardInterrupt in the main thread. Each streams one
    source (one frame in memory) into the stage; the main thread moves finished videos into the zip in
    source order, so the output is the same for any --workers.

Sections: §1 flags and settings; §2 frames; §3 sources, checked at the door; §4 the demo dataset;
§5 converting one source; §6 building the dataset atomically; §7 reading it back, the command line.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import contextlib
import dataclasses
import io
import itertools
import json
import numbers
import os
import re
import shutil
import signal
import sys
import threading
import time
import unicodedata
import zipfile
from typing import Iterator, Optional

import imageio_ffmpeg                # ffmpeg in a subprocess: every container, GIFs and APNGs included
import numpy as np
from PIL import Image
from tqdm import tqdm

VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".gif", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".apng")
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm", ".pnm",
              ".tga", ".qoi", ".jp2", ".dds", ".sgi", ".pcx", ".ras", ".icns")   # still formats Pillow decodes
DEFAULT_FPS = DEMO_FPS = 25.0    # frame folders carry no frame rate; 25 is FaceForensics'/SkyTimelapse's
FVD_MIN_FRAMES = 16              # the paper's FVD_16 ignores real videos shorter than its clip (Appx C)
MAX_FRAME_PIXELS = 8192 * 8192   # a larger frame (over 200 MB as RGB) is a broken or hostile header


# ------------------------------------------------------------------------------------------------
# §1 Flags and settings
# ------------------------------------------------------------------------------------------------
# Every numeric flag has a range, checked before any work (by argparse, and by check_flag in the Python
# API). The bounds are far beyond any real dataset: they turn a typo (an extra zero, --fps 1e-9) into
# one line now instead of a dataset whose training dies hours later.

MAX_COUNT = 10 ** 8              # frames: stylegan_v.py's limit (an 8-hour 30 fps film has 864,000)
FLAG_RANGES = {                  # flag: (lowest, highest), both allowed
    "--resolution": (4, 4096),   # and a power of two: StyleGAN's synthesis doubles from 4x4
    "--clip-len": (1, MAX_COUNT), "--skip": (0, MAX_COUNT), "--max-frames": (1, MAX_COUNT),
    "--min-frames": (1, MAX_COUNT),
    "--fps": (1.0, 1000.0),      # under a frame a second is a slide show; over 1000 a broken header
    "--quality": (1, 100), "--workers": (1, 64),
    "--num-videos": (1, 100_000), "--frames": (1, 100_000), "--seed": (0, 2 ** 32 - 1),   # --demo's
}


class PrepareError(Exception):
    """A problem with SRC, OUT or a flag as a whole; main() prints its message as one line."""


def check_flag(flag: str, value):
    """value (None: not given) if FLAG_RANGES allows it; else PrepareError naming the flag and its range."""
    lo, hi = FLAG_RANGES[flag]
    real = flag == "--fps"
    if value is None or (isinstance(value, numbers.Real if real else numbers.Integral) and not isinstance(value, bool)
                         and lo <= value <= hi and (flag != "--resolution" or value & (value - 1) == 0)):
        return value                                        # (nan fails lo <= value)
    what = "a power of two" if flag == "--resolution" else "a number" if real else "an integer"
    raise PrepareError(f"{flag} must be {what} in {lo:g}..{hi:g}, not {value!r}" if real else
                       f"{flag} must be {what} in {lo}..{hi}, not {value!r}")


def flag_type(flag: str):
    """argparse type= for a numeric flag: argparse prints `error: argument --fps: must be ...`."""
    def parse(text: str):
        with contextlib.suppress(ValueError):
            text = float(text) if flag == "--fps" else int(text)
        try:
            return check_flag(flag, text)
        except PrepareError as e:
            raise argparse.ArgumentTypeError(str(e).split(" ", 1)[1]) from None
    return parse


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

    def check(self, fps=None, workers=None) -> None:
        if self.fmt not in ("jpg", "png"):
            raise PrepareError(f"--format must be jpg or png, not {self.fmt!r}")
        for flag, value in [("--resolution", self.resolution), ("--quality", self.quality), ("--clip-len", self.clip_len),
                            ("--skip", self.skip), ("--max-frames", self.max_frames),
                            ("--min-frames", self.min_frames), ("--fps", fps), ("--workers", workers)]:
            check_flag(flag, value)
        if self.clip_len is not None and self.clip_len < self.min_frames:
            raise PrepareError(f"--clip-len {self.clip_len} is shorter than --min-frames {self.min_frames}")


# ------------------------------------------------------------------------------------------------
# §2 Frames: any image -> 8-bit RGB -> centred square -> R x R (Lanczos) -> JPEG/PNG
# ------------------------------------------------------------------------------------------------

def pil_to_rgb8(img: Image.Image) -> np.ndarray:
    """A Pillow image in any mode -> uint8 [H, W, 3]: alpha composited over black (how a transparent
    pixel looks in a video), 16-bit rounded (x * 255 / 65535), anything else through Pillow's RGB."""
    if img.mode in ("I", "I;16", "I;16B", "I;16L"):
        x = (np.clip(np.asarray(img).astype(np.int64), 0, 65535) * 255 + 32767) // 65535   # [H, W]
        return np.repeat(x.astype(np.uint8)[:, :, None], 3, axis=2)                     # [H, W, 3]
    if "A" in img.mode or "transparency" in img.info:
        x = np.asarray(img.convert("RGBA")).astype(np.uint16)                           # [H, W, 4]
        return ((x[:, :, :3] * x[:, :, 3:] + 127) // 255).astype(np.uint8)
    return np.asarray(img.convert("RGB"))


def center_crop_resize(frame: np.ndarray, resolution: int) -> np.ndarray:
    """uint8 [H, W, 3] -> [R, R, 3]: the largest centred square (the paper center-crops, Appx E.2),
    resized with Lanczos. Shrinking by f, its kernel reaches 3f source pixels to each side, so every
    pixel counts; a fixed 2-pixel bilinear kernel (F.interpolate without antialias) skips most, and aliases."""
    h, w = frame.shape[:2]
    side = min(h, w)
    square = frame[(h - side) // 2:(h + side) // 2, (w - side) // 2:(w + side) // 2]   # [S, S, 3]
    if side == resolution:
        return np.ascontiguousarray(square)
    return np.asarray(Image.fromarray(square).resize((resolution, resolution), Image.Resampling.LANCZOS))


def encode_frame(frame: np.ndarray, fmt: str = "jpg", quality: int = 95) -> bytes:
    """uint8 [R, R, 3] -> the bytes of a .jpg or .png file (Pillow, as the paper's protocol)."""
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, "JPEG", quality=quality) if fmt == "jpg" else Image.fromarray(frame).save(buf, "PNG")
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------
# §3 Sources: what SRC holds, checked at the door, read one frame at a time
# ------------------------------------------------------------------------------------------------
# An entry of SRC is classified by its extension alone (a folder of 100,000 frames is listed without
# opening one). Sizes are checked before anything of that size is read: a video's frame size and rate
# from its header (probe), a frame image's size from its header, read before the frame is decoded.

class BadSource(Exception):
    """This source is refused; the message is the reason the summary gives."""


@dataclasses.dataclass
class Source:
    """One input video: a video file, a folder of frames, or a procedural demo video."""
    kind: str                          # "video", "frames" or "demo"
    label: str                         # how the summary and dataset.json name it: "bikes.mp4", "walk/"
    name: str = ""                     # the unique, filesystem-safe output name
    path: str = ""                     # the file, or the folder of frames
    files: tuple = ()                  # frames: the image files, in natural order
    demo: tuple = ()                   # demo: the (seed, frames, resolution) of make_demo_video
    fps: Optional[float] = None        # from the header (None: a frame folder has none)
    duration: Optional[float] = None   # seconds, from the header (for the "truncated?" note)
    notes: tuple = ()                  # said in the summary: "ignored 2 files that are not images: ..."


def natural_key(name: str) -> list:
    """Sort key that puts "frame2.png" before "frame10.png" (digit runs compare as numbers)."""
    return [(0, int(tok), "") if tok.isdigit() else (1, 0, tok.lower()) for tok in re.split(r"(\d+)", name)]


def safe_name(text: str) -> str:
    """A portable folder name: ASCII letters, digits, "-", "_", "." (never hidden)."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")[:100] or "video"


def unique_names(names: list) -> list:
    """Unique (case-insensitively, for macOS and Windows) by adding "_2", "_3", ...; a suffix never takes
    a name another source has (["a", "a", "a_2"] -> ["a", "a_3", "a_2"]); "dataset.json" is taken."""
    wanted, taken, out = {n.lower() for n in names}, {"dataset.json"}, []
    for n in names:
        candidate, k = n, 2
        while candidate.lower() in taken or (candidate != n and candidate.lower() in wanted):
            candidate, k = f"{n}_{k}", k + 1
        taken.add(candidate.lower())
        out.append(candidate)
    return out


def _entries(path: str) -> dict:
    """A folder's visible entries, in natural order -> {entry: "video", "image", "dir" or "other"}."""
    try:
        names = sorted((e for e in os.listdir(path) if not e.startswith(".")), key=natural_key)
    except OSError as e:
        raise PrepareError(f"cannot read folder {path}: {e.strerror or e}") from None
    ext = lambda e: os.path.splitext(e)[1].lower()
    return {e: "video" if ext(e) in VIDEO_EXTS else "image" if ext(e) in IMAGE_EXTS else
            "dir" if os.path.isdir(os.path.join(path, e)) else "other" for e in names}


def _frame_folder(path: str, label: str, kinds: dict) -> Source:
    others = [e + "/" * (k == "dir") for e, k in kinds.items() if k != "image"]
    note = (f"ignored {len(others)} file{'s that are' if len(others) > 1 else ' that is'} not an image: "
            + ", ".join(others[:5]) + (", ..." if len(others) > 5 else ""))
    return Source("frames", label, path=path, files=tuple(os.path.join(path, e) for e, k in kinds.items()
                                                          if k == "image"), notes=(note,) if others else ())


def discover(src: str) -> tuple:
    """SRC -> (sources, skipped (label, reason) pairs). SRC is a video file; a folder of video files and/or
    frame folders (one folder of images per video); or a folder of images, one video. Subfolders are not
    searched further."""
    if not os.path.exists(src):
        raise PrepareError(f"{src}: no such file or folder")
    reasons = {"image": "a lone image: put the frames of a video in a folder of their own",
               "other": "not a video (expected one of " + ", ".join(VIDEO_EXTS) + ", or a folder of frames)"}
    if not os.path.isdir(src):
        label = os.path.basename(src)
        kind = _entries(os.path.dirname(os.path.abspath(src))).get(label, "other")
        return ([Source("video", label, path=src)], []) if kind == "video" else ([], [(label, reasons[kind])])
    kinds = _entries(src)
    if "image" in kinds.values() and not {"dir", "video"} & set(kinds.values()):    # one frame folder
        return [_frame_folder(src, os.path.basename(os.path.abspath(src)) + "/", kinds)], []
    sources, skipped = [], []
    for e, kind in kinds.items():
        inner = _entries(os.path.join(src, e)) if kind == "dir" else {}
        if kind == "video":
            sources.append(Source("video", e, path=os.path.join(src, e)))
        elif "image" in inner.values():
            sources.append(_frame_folder(os.path.join(src, e), e + "/", inner))
        elif kind == "dir":
            skipped.append((e + "/", "holds videos, not frames: subfolders are not searched (pass it as SRC)"
                            if "video" in inner.values() else "no frames in this folder (no file in it is an "
                            "image: " + " ".join(IMAGE_EXTS) + ")"))
        else:
            skipped.append((e, reasons[kind]))
    return sources, skipped


def _check_size(w: int, h: int, what: str) -> None:
    if w * h > MAX_FRAME_PIXELS:
        raise BadSource(f"{what} claims {w}x{h} frames, more than {MAX_FRAME_PIXELS:,} pixels (refused from its "
                        f"header, not decoded)")


def probe(source: Source) -> tuple:
    """A video's header -> (source with fps and duration, None), or (None, the reason it is refused)."""
    if source.kind != "video":
        return source, None
    try:
        reader = imageio_ffmpeg.read_frames(source.path)
        try:
            meta = next(reader)                             # ffmpeg's header; no frame decoded yet
        finally:
            reader.close()                                  # stops ffmpeg now
    except Exception as e:                                  # corrupt, empty, not a video: ffmpeg says why
        if "does not contain any stream" in str(e):
            return None, "no video stream (no frames to read)"
        lines = [re.sub(r"^\[[^\]]*\]\s*", "", ln).strip() for ln in str(e).splitlines()]
        return None, "not a readable video (ffmpeg: " + ([ln for ln in lines if ln] or [type(e).__name__])[-1] + ")"
    fps, (lo, hi) = float(meta.get("fps") or 0), FLAG_RANGES["--fps"]
    try:
        _check_size(*meta["size"], "its header")
        if not lo <= fps <= hi:
            raise BadSource(f"its header says {fps:g} fps, not in {lo:g}..{hi:g} (a broken header)")
    except BadSource as e:
        return None, str(e)
    return dataclasses.replace(source, fps=fps, duration=meta.get("duration")), None


def iter_frames(source: Source, fps: float, skip: int = 0) -> Iterator[np.ndarray]:
    """Yield a source's frames at the dataset's rate, after the first `skip`, as uint8 [H, W, 3], one at a
    time (never the whole video). A video at another rate goes through ffmpeg's fps filter, by the file's
    own timestamps (variable-rate phone videos and GIFs come out right). Skipped frames are decoded and
    dropped: exact, whatever the codec's keyframes."""
    if source.kind == "video":
        resample = ["-vf", f"fps={fps!r}"] if round(source.fps, 2) != round(fps, 2) else []
        reader = imageio_ffmpeg.read_frames(source.path, output_params=resample)
        try:
            w, h = next(reader)["size"]
            _check_size(w, h, "its header")                 # (as probe did: the file may have changed)
            for raw in itertools.islice(reader, skip, None):
                yield np.frombuffer(raw, np.uint8).reshape(h, w, 3)
        finally:
            reader.close()                                  # stops ffmpeg now, not when collected
    elif source.kind == "frames":
        first = None
        for f in source.files[skip:]:
            with Image.open(f) as img:                      # reads the header only
                _check_size(*img.size, f"frame {os.path.basename(f)}")
                first = first or (img.size, os.path.basename(f))
                if img.size != first[0]:                    # stretching some would invent motion
                    raise BadSource(f"frames of different sizes in folder {source.label}: {first[1]} is "
                                    "{}x{}, {} is {}x{}".format(*first[0], os.path.basename(f), *img.size))
                yield pil_to_rgb8(img)
    else:
        yield from _demo_frames(*source.demo, start=skip)


# ------------------------------------------------------------------------------------------------
# §4 The embedded demo dataset: soft blobs with smooth, continuous motion
# ------------------------------------------------------------------------------------------------
# Real-looking motion with no download, learnable by a tiny GAN on a laptop CPU in minutes: 2-3 soft
# blobs on a gradient. Every visual parameter (a blob's position, size, elongation, orientation, wobble,
# hue; the background's direction and colours) is a sum of three sinusoids of continuous time t with
# random periods of 40-240 frames (1.6-9.6 s at 25 fps): smooth (consecutive frames differ by ~1.5 % of
# the pixel range), never periodic within a clip, different in every video. Like StyleGAN-V's view of
# video, it is a function x(t): frame t depends only on (seed, t), at any length and resolution.

def _hsv_to_rgb(h: np.ndarray, s: float, v: float) -> np.ndarray:
    """Hue in [0, 1) (any shape) -> RGB in [0, 1] (shape + [3]), the piecewise-linear hexcone."""
    k = (np.array([5.0, 3.0, 1.0]).reshape((3,) + (1,) * np.ndim(h)) + np.asarray(h) * 6.0) % 6.0   # [3, ...]
    return np.moveaxis(v - v * s * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0), 0, -1)


def _waves(rng: np.random.Generator, n: int):
    """n random smooth signals of unit RMS, each three sinusoids -> a function of times t [T] -> [T, n]."""
    periods = np.exp(rng.uniform(np.log(40.0), np.log(240.0), size=(n, 3)))   # frames
    phases = rng.uniform(0.0, 2 * np.pi, size=(n, 3))
    amps = np.array([1.0, 0.6, 0.35]) * rng.uniform(0.7, 1.3, size=(n, 3))
    amps /= np.sqrt((amps ** 2).sum(axis=1, keepdims=True) / 2)                 # RMS of the sum = 1
    return lambda t: (amps * np.sin(2 * np.pi * t[:, None, None] / periods + phases)).sum(axis=-1)


def _demo_frames(seed, frames: int, resolution: int, start: int = 0) -> Iterator[np.ndarray]:
    """Yield frames start..frames-1 of demo video `seed`, uint8 [R, R, 3], rendered 8 at a time."""
    rng = np.random.default_rng(seed)                       # everything random is drawn first
    bg = dict(waves=_waves(rng, 3), hue=rng.uniform(), angle=rng.uniform(0, 2 * np.pi))
    blobs = [dict(waves=_waves(rng, 8), center=rng.uniform(-0.6, 0.6, size=2), size=rng.uniform(0.2, 0.32),
                  angle=rng.uniform(0, np.pi), spin=rng.choice([-1.0, 1.0]) / 60,       # rad per frame
                  hue=rng.uniform(), hue_drift=rng.choice([-1.0, 1.0]) / 300,           # cycles per frame
                  wobble_phase=rng.uniform(0, 2 * np.pi)) for _ in range(int(rng.integers(2, 4)))]
    grid = (np.arange(resolution) + 0.5) / resolution * 2 - 1                  # pixel centres in [-1, 1]
    y, x = (g[None] for g in np.meshgrid(grid, grid, indexing="ij"))           # [1, R, R] each
    col = lambda a: a[:, None, None]                                           # [T] -> [T, 1, 1]
    for t0 in range(start, frames, 8):
        t = np.arange(t0, min(t0 + 8, frames), dtype=np.float64)              # [T]
        # Background: a soft linear gradient between two colours whose direction and hues drift.
        s = bg["waves"](t)                                                     # [T, 3]
        angle, hue_a = bg["angle"] + 0.8 * s[:, 0], bg["hue"] + 0.06 * s[:, 1] + t / 900
        w = 0.5 + 0.5 * np.tanh(1.2 * (col(np.cos(angle)) * x + col(np.sin(angle)) * y))   # [T, R, R]
        dark = _hsv_to_rgb(hue_a % 1, 0.55, 0.45)                                         # [T, 3]
        light = _hsv_to_rgb((hue_a + 0.25 + 0.05 * s[:, 2]) % 1, 0.55, 0.75)
        img = dark[:, None, None] * (1 - w[..., None]) + light[:, None, None] * w[..., None]  # [T, R, R, 3]
        for b in blobs:
            s = b["waves"](t)                                                  # [T, 8]
            cx, cy = (0.7 * np.tanh(b["center"][i] + 0.7 * s[:, i]) for i in (0, 1))   # tanh: stays inside
            size = b["size"] * np.exp(0.25 * s[:, 2])                          # mean radius
            aspect = np.exp(0.22 * s[:, 3])                                    # elongation
            theta = b["angle"] + b["spin"] * t + 0.5 * s[:, 4]                 # orientation
            hue = b["hue"] + b["hue_drift"] * t + 0.08 * s[:, 5]
            wobble = 0.12 * (1 + 0.5 * s[:, 6])                                # 3-lobed deformation
            wobble_phase = b["wobble_phase"] + 0.8 * s[:, 7] + t / 40
            dx, dy = x - col(cx), y - col(cy)                                  # [T, R, R]
            c, sn = col(np.cos(theta)), col(np.sin(theta))
            u = (c * dx + sn * dy) / col(size * aspect)                        # the blob's frame, unit
            v = (-sn * dx + c * dy) / col(size / aspect)                       #  radius = 1
            r = np.sqrt(u ** 2 + v ** 2) / (1 + col(wobble) * np.sin(3 * np.arctan2(v, u) + col(wobble_phase)))
            alpha = np.clip(0.5 + (1 - r) * col(size) / 0.05, 0.0, 1.0)       # soft edge 0.05 wide (1.6 px at 64)
            color = _hsv_to_rgb(hue % 1, 0.8, 1.0)[:, None, None] * (1 - 0.4 * np.clip(r, 0, 1)[..., None] ** 2)
            img = img * (1 - alpha[..., None]) + color * alpha[..., None]      # shaded: a little volume
        yield from np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)


def make_demo_video(seed, frames: int = 64, resolution: int = 64) -> np.ndarray:
    """A procedural video -> uint8 [frames, R, R, 3]; deterministic. seed is anything np.random.default_rng
    accepts: the demo dataset's video i is make_demo_video((seed, i), ...)."""
    return np.stack(list(_demo_frames(seed, frames, resolution)))


# ------------------------------------------------------------------------------------------------
# §5 Converting one source (in a worker thread)
# ------------------------------------------------------------------------------------------------

def convert(source: Source, s: Settings, fps: float, stage: str, stop: threading.Event, tick) -> Optional[dict]:
    """Decode, crop, resize, encode and stage one source as <stage>/<name>/<i:06d>.<fmt> -> {"source",
    "videos": [{"name", "frames", "source"}], "skipped": reason or None, "notes"}; None once `stop` is set.

    Only reading is guarded: a reading error is the source's (a unit, the whole video or one --clip-len
    chunk, is kept only if all of its frames decoded), an OSError while writing is OUT's disk and stops the
    job (a full disk is never "fifty broken videos")."""
    result = {"source": source.label, "videos": [], "skipped": None, "notes": []}
    unit = lambda n: f"{source.name}_c{n // s.clip_len:04d}" if s.clip_len else source.name
    frames, n, error = iter_frames(source, fps, s.skip), 0, None
    try:
        while (s.max_frames is None or n < s.max_frames) and not stop.is_set():
            try:
                frame = next(frames, None)
            except BadSource as e:
                error = str(e)
            except Exception as e:                          # a decoding error midway, an unreadable frame
                error = f"failed after {n} frames ({type(e).__name__}: {(str(e).strip().splitlines() or [''])[-1]})"
            if error or frame is None:
                break
            if n % (s.clip_len or MAX_COUNT) == 0:
                os.mkdir(os.path.join(stage, unit(n)))      # not makedirs: never recreates a removed stage
            with open(os.path.join(stage, unit(n), f"{n % (s.clip_len or MAX_COUNT):06d}.{s.fmt}"), "xb") as f:
                f.write(encode_frame(center_crop_resize(frame, s.resolution), s.fmt, s.quality))
            n += 1
            tick(1)
    finally:
        frames.close()
    if stop.is_set():
        return None
    length = s.clip_len or n
    complete = n // s.clip_len if s.clip_len else int(not error and n >= s.min_frames)
    for c in range(complete, -(-n // length) if n else 0):  # the incomplete units go
        shutil.rmtree(os.path.join(stage, unit(c * length)))
    result["videos"] = [{"name": unit(c * length), "frames": length, "source": source.label} for c in range(complete)]
    after_skip = f" after --skip {s.skip}" if s.skip else ""
    if error:
        result["notes" if complete else "skipped"] = f"{error}; kept the {complete} complete chunks before it" \
            if complete else error
    elif not complete:
        result["skipped"] = (f"{n} frames{after_skip}: shorter than one --clip-len chunk of {s.clip_len}" if s.clip_len
                             else f"no frames{after_skip}" if n == 0 else
                             f"only {n} frames{after_skip}, fewer than --min-frames {s.min_frames}")
    elif n % length:
        result["notes"].append(f"dropped the last {n % length} frames (shorter than --clip-len {length})")
    promised = round(source.duration * fps) - s.skip if source.duration else 0
    if not error and n != s.max_frames and n < 0.9 * promised:
        result["notes"].append(f"decoded {n} frames{after_skip} but the file promises about {promised}: truncated?")
    return result


# ------------------------------------------------------------------------------------------------
# §6 Building the dataset: the pool, the frame rate, the atomic writer
# ------------------------------------------------------------------------------------------------

def in_order(pool, fn, jobs, window: int) -> Iterator:
    """fn(*job) for every job, yielded in job order, at most `window` in flight: the output does not depend
    on which thread finishes first, and the window bounds what waits in the stage."""
    pending, jobs = collections.deque(), iter(jobs)
    while True:
        pending.extend(pool.submit(fn, *job) for job in itertools.islice(jobs, window - len(pending)))
        if not pending:
            return
        yield pending.popleft().result()                    # (a Ctrl-C interrupts this wait)


def choose_fps(sources: list, fps: Optional[float]) -> tuple:
    """The dataset's frame rate -> (fps, notes): --fps, else the most common rate of the videos (a tie:
    the higher; 29.97 and 29.97003 are one rate), else 25."""
    votes, notes = collections.Counter(round(s.fps, 2) for s in sources if s.fps is not None), []
    if fps is None:
        best = max(votes, key=lambda k: (votes[k], k), default=None)
        fps = next((s.fps for s in sources if s.fps is not None and round(s.fps, 2) == best), DEFAULT_FPS)
        if any(s.fps is None for s in sources):
            notes.append(f"frame folders carry no frame rate: assuming {fps:g} fps (set it with --fps)")
    return fps, notes


def check_out(out: str) -> tuple:
    """OUT -> (absolute OUT, is it a zip). A new zip or folder, an existing zip or an empty folder (both
    replaced once the new one is complete); anything else is refused before any work."""
    if out.endswith(("/", os.sep)) and out.rstrip("/" + os.sep).lower().endswith(".zip"):
        raise PrepareError(f"{out}: a trailing '/' names a folder, but a name ending in .zip is a zip file")
    out = os.path.abspath(out)
    as_zip, parent = out.lower().endswith(".zip"), os.path.dirname(out)
    if not os.path.isdir(parent):
        raise PrepareError(f"cannot write {out}: {parent} " + ("is a file, not a folder" if os.path.exists(parent)
                                                               else "does not exist"))
    if as_zip and os.path.isdir(out):
        raise PrepareError(f"cannot write {out}: it is a folder")
    if not as_zip and os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise PrepareError(f"{out} already exists (a folder output is only written new or into an empty folder)")
    if os.path.ismount(out):                                # no rename can replace a mount point
        raise PrepareError(f"{out} is a mount point: name a new folder inside it")
    return out, as_zip


def remove_dead_partials(out: str) -> None:
    """Remove OUT.partial-<pid>[.stage] that a run which is gone left beside OUT (kill -9, a power cut; this
    pid, reused, counts as gone). A running process's stay: it is still writing."""
    folder, base = os.path.split(out)
    for entry in os.listdir(folder):
        m = re.fullmatch(re.escape(base) + r"\.partial-(\d+)(\.stage)?", entry)
        if m and int(m[1]) != os.getpid():
            try:
                os.kill(int(m[1]), 0)                       # signal 0: only asks whether it runs
                continue
            except ProcessLookupError:
                pass
            except OSError:                                 # (EPERM: it runs, as another user)
                continue
        if m:
            path = os.path.join(folder, entry)
            shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else os.remove(path)


def _no_usable_videos(src: str, skipped: list) -> PrepareError:
    return PrepareError(f"no usable videos in {src}: " + (f"{len(skipped)} skipped ({skipped[0][0]}: {skipped[0][1]})"
                                                         if skipped else "it holds no video, no frames and no folder"))


def _build(sources: list, skipped: list, out: str, s: Settings, fps: Optional[float], workers: Optional[int],
           progress: bool, verbose: bool, origin: str = "the input") -> dict:
    """Probe, choose the frame rate, convert, and write OUT atomically: the engine of prepare() and make_demo()."""
    t_start, log = time.time(), (print if verbose else lambda *a, **k: None)
    out, as_zip = check_out(out)
    remove_dead_partials(out)
    tmp = f"{out}.partial-{os.getpid()}"                    # beside OUT: one file system, an atomic rename
    stage = tmp + ".stage" if as_zip else tmp               # where the threads put frames
    stop, lock, done, file, zf = threading.Event(), threading.Lock(), False, None, None
    workers = max(1, min(workers or os.cpu_count() or 1, len(sources)))
    pool = concurrent.futures.ThreadPoolExecutor(workers)
    try:
        os.mkdir(stage)                                     # a bad OUT fails now, before any decoding
        probed = list(in_order(pool, probe, [(src,) for src in sources], window=64))
        skipped += [(src.label, reason) for src, (_, reason) in zip(sources, probed) if reason]
        kept = [p for p, _ in probed if p is not None]
        if not kept:
            raise _no_usable_videos(origin, skipped)
        fps, notes = choose_fps(kept, fps)
        resampled = [src for src in kept if src.fps is not None and round(src.fps, 2) != round(fps, 2)]
        notes += [f"{src.label}: {note}" for src in kept for note in src.notes]
        notes += [f"{src.label}: resampled from {src.fps:g} to {fps:g} fps (frames picked by timestamp)"
                  for src in resampled]
        if as_zip:
            file = open(tmp, "xb")
            zf = zipfile.ZipFile(file, "w")
        bar = tqdm(desc="converting", unit="frame", disable=not progress or None, smoothing=0.05)

        def tick(k):
            with lock:
                bar.update(k)

        videos = []
        for res in in_order(pool, convert, [(src, s, fps, stage, stop, tick) for src in kept], 2 * workers):
            skipped += [(res["source"], res["skipped"])] if res["skipped"] else []
            notes += [f"{res['source']}: {note}" for note in res["notes"]]
            for video in res["videos"]:
                for i in range(video["frames"] if zf else 0):   # stored (JPEG/PNG do not compress) with
                    path = os.path.join(stage, video["name"], f"{i:06d}.{s.fmt}")   # a fixed date: the zip
                    with open(path, "rb") as f:                                    # depends on the data only
                        zf.writestr(zipfile.ZipInfo(path[len(stage) + 1:], (1980, 1, 1, 0, 0, 0)), f.read())
                    os.remove(path)
                videos.append(video)
        bar.close()
        if not videos:
            raise _no_usable_videos(origin, skipped)
        # dataset.json last, one video a line (readable, greppable), then the one rename that makes OUT.
        head = json.dumps({"fps": float(fps), "resolution": s.resolution, "format": s.fmt})[:-1]
        index = head + ', "videos": [\n' + ",\n".join(json.dumps(v) for v in videos) + "\n]}\n"
        if as_zip:
            zf.writestr(zipfile.ZipInfo("dataset.json", (1980, 1, 1, 0, 0, 0)), index)
            zf.close()
            file.flush()
            os.fsync(file.fileno())                         # on disk before the rename makes it visible
            file.close()
        else:
            with open(os.path.join(stage, "dataset.json"), "x") as f:
                f.write(index)
        replaced = os.path.lexists(out)
        os.replace(tmp, out)                                # OUT is the old one or the new one, never half
        done = True
    except OSError as e:                                    # every read of SRC is guarded: this is OUT's disk
        kept_old = " (the existing one is untouched)" if os.path.lexists(out) else ""
        raise PrepareError(f"cannot write {out}: {e.strerror or e}; nothing was written{kept_old}") from None
    finally:
        # Whatever stopped us (an error, a full disk, Ctrl-C, SIGTERM), threads stop at their next frame and
        # nothing temporary stays; each step runs even if one before fails (closing a zip on a full disk
        # raises). A second Ctrl-C may cut this short: the next run removes the rest (remove_dead_partials).
        stop.set()
        for step in (lambda: pool.shutdown(wait=True, cancel_futures=True),
                     lambda: zf is None or done or zf.close(),
                     lambda: file is None or file.close(),
                     lambda: shutil.rmtree(stage, ignore_errors=True),
                     lambda: done or not os.path.lexists(tmp) or os.remove(tmp)):
            with contextlib.suppress(Exception):
                step()

    frames = sum(v["frames"] for v in videos)
    size = os.path.getsize(out) if as_zip else sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(out)
                                                   for f in fs)
    short = sum(v["frames"] < FVD_MIN_FRAMES for v in videos)
    notes += [f"{short} video(s) have fewer than {FVD_MIN_FRAMES} frames: FVD_16 ignores them"] if short else []
    summary = {"out": out, "videos": len(videos), "frames": frames, "fps": float(fps), "resolution": s.resolution,
               "format": s.fmt, "bytes": size, "seconds": round(time.time() - t_start, 2),
               "skipped": [{"source": a, "reason": b} for a, b in skipped], "notes": notes,
               "resampled": [src.label for src in resampled], "replaced": replaced}
    was = f" (replaced the existing {'' if as_zip else 'empty folder '}{os.path.basename(out)})" if replaced else ""
    log(f"wrote {out}: {len(videos)} video{'s' * (len(videos) != 1)}, {frames} frames of {s.resolution}x"
        f"{s.resolution} at {fps:g} fps ({f'jpg q{s.quality}' if s.fmt == 'jpg' else 'png'}), "
        f"{size / 2**20:.1f} MiB in {summary['seconds']:.1f} s{was}")
    for title, lines in [(f"skipped {len(skipped)}:", [f"{a}: {b}" for a, b in skipped]), ("notes:", notes)]:
        log(title, *lines, sep="\n  ") if lines else None
    return summary


def prepare(src: str, out: str, resolution: int = 256, *, clip_len: Optional[int] = None, skip: int = 0,
            max_frames: Optional[int] = None, min_frames: int = 3, fps: Optional[float] = None,
            fmt: str = "jpg", quality: int = 95, workers: Optional[int] = None, progress: bool = False,
            verbose: bool = True) -> dict:
    """Make a dataset from SRC (a video, a folder of videos, a folder of frame folders) -> the summary:
    {"out", "videos", "frames", "fps", "resolution", "format", "bytes", "seconds", "skipped": [{"source",
    "reason"}], "notes", "resampled": [labels], "replaced": whether an existing OUT was}. Raises PrepareError
    when nothing usable is found, a setting is out of range or OUT cannot be written; OUT is then as it was."""
    settings = Settings(resolution, fmt, quality, clip_len, skip, max_frames, min_frames)
    settings.check(fps, workers)                            # every setting, then OUT, before SRC is read
    check_out(out)
    sources, skipped = discover(src)
    names = unique_names([safe_name(os.path.splitext(s.label)[0] if s.kind == "video" else s.label.rstrip("/"))
                          for s in sources])
    sources = [dataclasses.replace(s, name=n) for s, n in zip(sources, names)]
    return _build(sources, skipped, out, settings, fps, workers, progress, verbose, origin=src)


def make_demo(out: str, resolution: int = 64, num_videos: int = 64, frames: int = 64, seed: int = 0, *,
              fmt: str = "jpg", quality: int = 95, workers: Optional[int] = None, progress: bool = False,
              verbose: bool = True) -> dict:
    """Write the procedural demo dataset (§4): video i is make_demo_video((seed, i), frames, resolution)."""
    for flag, value in [("--num-videos", num_videos), ("--frames", frames), ("--seed", seed)]:
        check_flag(flag, value)
    settings = Settings(resolution, fmt, quality, min_frames=min(3, frames))
    settings.check(None, workers)
    sources = [Source("demo", f"make_demo_video(seed=({seed}, {i}))", name=f"demo{i:05d}", fps=DEMO_FPS,
                      demo=((seed, i), frames, resolution)) for i in range(num_videos)]
    return _build(sources, [], out, settings, None, workers, progress, verbose)


# ------------------------------------------------------------------------------------------------
# §7 Reading a dataset back, and the command line
# ------------------------------------------------------------------------------------------------

def read_video(dataset: str, name: str) -> np.ndarray:
    """One video of a dataset (zip or folder) -> uint8 [frames, R, R, 3]; for tests and checks. The whole
    reading side of the contract: dataset.json, then <name>/<i:06d>.<format>."""
    with contextlib.ExitStack() as stack:
        read = (lambda m: open(os.path.join(dataset, m), "rb").read()) if os.path.isdir(dataset) else \
            stack.enter_context(zipfile.ZipFile(dataset)).read
        meta = json.loads(read("dataset.json"))
        n = next(v["frames"] for v in meta["videos"] if v["name"] == name)
        return np.stack([np.asarray(Image.open(io.BytesIO(read(f"{name}/{i:06d}.{meta['format']}"))).convert("RGB"))
                         for i in range(n)])


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad command line as ONE line, `prepare_data.py: error: ...`, exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


SRC_ONLY_FLAGS = ("clip_len", "skip", "max_frames", "min_frames", "fps")   # flags that shape SRC's videos
DEMO_ONLY_FLAGS = ("num_videos", "frames", "seed")                          # flags of --demo


def build_parser() -> argparse.ArgumentParser:
    # Mode-specific flags default to None, so that main() can refuse one given to the other mode instead of
    # ignoring it; the defaults named in the help are filled in by main().
    p = OneLineParser(prog="prepare_data.py", formatter_class=argparse.RawDescriptionHelpFormatter,
                      description=__doc__.split("\n\n")[0] + " Frames are center-cropped, Lanczos-resized and "
                      "stored as JPEG q95 or PNG:\nFVD moves with both (paper Table 4), so make real and fake "
                      "frames the same way.", epilog="examples:\n" + __doc__.split("\n\n")[2])
    add = lambda group, flag, meta, text: group.add_argument(
        flag, type=flag_type(flag), metavar=meta, help=text + " ({}..{})".format(*FLAG_RANGES[flag]))
    p.add_argument("src", nargs="?", metavar="SRC", help="a video file, a folder of videos (" + " ".join(VIDEO_EXTS)
                   + "), or a folder of frame folders (one folder of images per video, in natural order: "
                   + " ".join(IMAGE_EXTS) + ")")
    p.add_argument("out", nargs="?", metavar="OUT", help="the dataset to write: OUT.zip, or a folder")
    add(p, "--resolution", "R", "frames are R x R, a power of two (default 256, the paper's; 64 with --demo)")
    add(p, "--clip-len", "N", "slice each video into chunks of N frames, <video>_c0000, ...; a shorter "
                              "remainder is dropped and reported (RainbowJelly: 512)")
    add(p, "--skip", "N", "drop the first N frames of each video (default 0; RainbowJelly: 150)")
    add(p, "--max-frames", "N", "keep at most N frames of each video, after --skip")
    add(p, "--min-frames", "N", "skip videos with fewer frames (default 3: a training clip has k = 3 frames)")
    add(p, "--fps", "FPS", "the dataset's frame rate (default: the videos' most common, 25 for frame folders); "
                           "videos at another rate are resampled by timestamp")
    p.add_argument("--format", dest="fmt", choices=["jpg", "png"], default="jpg",
                   help="jpg (quality 95, the paper's protocol) or png (lossless, larger)")
    add(p, "--quality", "Q", "JPEG quality (default 95; --format jpg only)")
    add(p, "--workers", "N", "threads converting in parallel (default: all cores)")
    demo = p.add_argument_group("the embedded demo dataset (no SRC, no download)")
    demo.add_argument("--demo", action="store_true", help="write 25 fps videos of soft blobs moving smoothly: --demo OUT")
    add(demo, "--num-videos", "N", "demo: number of videos (default 64)")
    add(demo, "--frames", "F", "demo: frames per video (default 64, 2.6 s at 25 fps)")
    add(demo, "--seed", "S", "demo: random seed (default 0)")
    return p


def main(argv: Optional[list] = None) -> int:
    """The command line -> exit status: 0 done, 1 error, 2 bad command line, 130 interrupted (Ctrl-C, or
    SIGTERM, handled the same). Every failure is one line on stderr, never a traceback."""
    parser = build_parser()

    def interrupt(signum, frame):
        raise KeyboardInterrupt
    in_main = threading.current_thread() is threading.main_thread()
    old_handler = signal.signal(signal.SIGTERM, interrupt) if in_main else None
    try:
        a = parser.parse_args(argv)                         # a bad flag: one line and exit status 2, here
        if a.quality is not None and a.fmt != "jpg":
            parser.error(f"--quality applies to --format jpg only ({a.fmt} is lossless)")
        wrong = [f for f in (SRC_ONLY_FLAGS if a.demo else DEMO_ONLY_FLAGS) if getattr(a, f) is not None]
        if a.demo and (a.src is None or a.out is not None):
            parser.error("--demo takes one path, OUT (e.g. --demo demo.zip)")
        if not a.demo and (a.src is None or a.out is None):
            parser.error("need SRC and OUT (or --demo OUT)")
        if wrong:
            parser.error(f"--{wrong[0].replace('_', '-')} " + ("does not apply to --demo (it shapes the videos of SRC; "
                         f"the demo has {DEMO_FPS:g} fps videos of --frames frames)" if a.demo else "applies to --demo only"))
        common = dict(fmt=a.fmt, quality=a.quality or 95, workers=a.workers, progress=True)
        if a.demo:
            make_demo(a.src, a.resolution or 64, a.num_videos or 64, a.frames or 64, a.seed or 0, **common)
        else:
            prepare(a.src, a.out, a.resolution or 256, clip_len=a.clip_len, skip=a.skip or 0, max_frames=a.max_frames,
                    min_frames=a.min_frames or 3, fps=a.fps, **common)
    except PrepareError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted; nothing was written", file=sys.stderr)
        return 130
    except Exception as e:                                  # a bug: still one line, and a non-zero status
        print(f"{parser.prog}: error: unexpected {type(e).__name__}: {(str(e).strip().splitlines() or [''])[0]} "
              f"(a bug in prepare_data.py, please report it)", file=sys.stderr)
        return 1
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, old_handler)
    return 0


if __name__ == "__main__":
    sys.exit(main())
