"""Turn videos into the dataset that stylegan_v.py trains on and fvd.py measures.

A StyleGAN-V dataset is a set of videos of square RGB frames at one resolution and one frame rate.
This script makes one from whatever you have, or a small procedural one from nothing:

    python prepare_data.py --demo demo.zip                         # 64 videos x 64 frames of 64x64
    python prepare_data.py my_videos/ data.zip --resolution 128    # a folder of mp4, avi, mov, gif, ...
    python prepare_data.py frames/ data.zip --fps 25               # a folder of frame folders
    python prepare_data.py jelly.mp4 rj256.zip --clip-len 512 --skip 150   # one long video, chunked

The last is the paper's RainbowJelly recipe (Appx E.2: a 30 fps film "sliced into 1686 chunks of 512 frames
each, starting with the 150-th frame"). The layout, the contract with stylegan_v.py and fvd.py (a zip, or a
folder if OUT has no .zip):

    dataset.json        {"fps": 25.0, "resolution": 64, "format": "jpg",
                         "videos": [{"name": "bikes", "frames": 120, "source": "bikes.mp4"}, ...]}
    bikes/000000.jpg    frame 0 of video "bikes", R x R RGB, numbered on to frames - 1

Frames, not mp4: training reads 3 frames at random times of a random video, thousands a second; an mp4
decodes from its last keyframe for each, a stored JPEG is read at once (zip members are stored, so a reader
seeks to any frame). Every frame becomes 8-bit RGB, keeps its largest centred square (never squashed) and is
resized with Pillow's LANCZOS (a windowed sinc that widens with the shrink factor: detail the small image
cannot hold is averaged, not aliased into moire), then stored as JPEG q95 or PNG. FVD is "very sensitive to
the interpolation procedures and [...] JPEG compression" (Sec 4; Table 4: FVD_16 76.8 done properly, 38.9
with both sides resized to 128^2, 80.2 with fakes at JPEG q75), so make real and fake frames the same way.

One frame rate, since stylegan_v.py measures time in frames: --fps, by default the videos' most common
(phones record 29.97, 30, 25, 24). A video at another rate goes through ffmpeg's fps filter, which picks
frames by timestamp (output frame i, at i/fps s, is the source frame on screen then), and the summary names
it. Frame folders have no rate: they take the dataset's (25 if nothing says).

Robust by a few mechanisms, each used everywhere: a check at the door per kind of input (flags, OUT, a
video's header, a frame image's header before it is decoded), a bad source skipped with its reason; one
atomic writer (OUT built as OUT.partial-<pid> beside it, frames of a zip staged in OUT.partial-<pid>.stage,
renamed onto OUT when complete, so any failure leaves an older OUT untouched; what a killed run left, the
next run removes); one error path (ONE line, "prepare_data.py: error: ...", exit 2 for a flag, 1 otherwise,
130 for Ctrl-C or SIGTERM); one pool of threads (the work is ffmpeg in a subprocess and Pillow, which release
the GIL; Ctrl-C is one KeyboardInterrupt in the main thread, which zips finished videos in source order).
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

import imageio_ffmpeg            # ffmpeg in a subprocess: every container, GIF and APNG
import numpy as np
from PIL import Image
from tqdm import tqdm

VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".gif", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".apng")
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm", ".pnm", ".tga",
              ".qoi", ".jp2", ".dds", ".sgi", ".pcx")   # still formats Pillow decodes
DEFAULT_FPS = DEMO_FPS = 25.0    # frame folders carry no frame rate; 25 is FaceForensics'/SkyTimelapse's
MAX_FRAME_PIXELS = 8192 * 8192   # a larger frame (over 200 MB as RGB) is a broken or hostile header


# ------------------------------------------------------------------------------------------------
# §1 Flags and settings
# ------------------------------------------------------------------------------------------------
# Every numeric flag has a range, checked before any work (by argparse, and by check_flag in the Python
# API): far beyond any real dataset, it turns a typo (an extra zero, --fps 1e-9) into one line now
# instead of a dataset whose training dies hours later.

MAX_COUNT = 10 ** 8              # frames: stylegan_v.py's limit (an 8-hour 30 fps film has 864,000)
FLAG_RANGES = {                  # flag: (lowest, highest), both allowed
    "--resolution": (4, 4096),   # and a power of two: StyleGAN's synthesis doubles from 4x4
    "--clip-len": (1, MAX_COUNT), "--skip": (0, MAX_COUNT), "--max-frames": (1, MAX_COUNT),
    "--min-frames": (1, MAX_COUNT), "--quality": (1, 100), "--workers": (1, 64),
    "--fps": (1.0, 1000.0),      # under a frame a second is a slide show; over 1000 a broken header
    "--num-videos": (1, 100_000), "--frames": (1, 100_000), "--seed": (0, 2 ** 32 - 1),   # --demo's
}


class PrepareError(Exception):
    """A user's input is wrong. For the job, main() prints the message as one line; for one source, it is
    the reason the summary gives for skipping it."""


def check_flag(flag: str, value):
    """value (None: not given; text: parsed) if FLAG_RANGES allows it; else PrepareError naming the flag and range."""
    (lo, hi), real = FLAG_RANGES[flag], flag == "--fps"
    with contextlib.suppress(ValueError):
        value = (float(value) if real else int(value)) if isinstance(value, str) else value
    if value is None or (isinstance(value, numbers.Real if real else numbers.Integral) and not isinstance(value, bool)
                         and lo <= value <= hi and (flag != "--resolution" or value & (value - 1) == 0)):
        return value                                        # (nan fails lo <= value)
    what = "a power of two" if flag == "--resolution" else "a number" if real else "an integer"
    raise PrepareError(f"{flag} must be {what} in " + (f"{lo:g}..{hi:g}" if real else f"{lo}..{hi}") + f", not {value!r}")


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
        for flag, value in [("--resolution", self.resolution), ("--quality", self.quality), ("--clip-len", self.clip_len),
                            ("--skip", self.skip), ("--max-frames", self.max_frames),
                            ("--min-frames", self.min_frames), ("--fps", fps), ("--workers", workers)]:
            check_flag(flag, value)
        if self.fmt not in ("jpg", "png") or (self.clip_len or MAX_COUNT) < self.min_frames:
            raise PrepareError(f"--format must be jpg or png, not {self.fmt!r}" if self.fmt not in ("jpg", "png") else
                               f"--clip-len {self.clip_len} is shorter than --min-frames {self.min_frames}")


# ------------------------------------------------------------------------------------------------
# §2 Frames: any image -> 8-bit RGB -> centred square -> R x R (Lanczos) -> JPEG/PNG
# ------------------------------------------------------------------------------------------------

def pil_to_rgb8(img: Image.Image) -> np.ndarray:
    """A Pillow image in any mode -> uint8 [H, W, 3]: alpha composited over black (how a transparent pixel
    looks in a video), 16-bit rounded (x * 255 / 65535), every other mode through Pillow's RGB."""
    if img.mode in ("I", "I;16", "I;16B", "I;16L"):
        x = (np.clip(np.asarray(img).astype(np.int64), 0, 65535) * 255 + 32767) // 65535   # [H, W]
        return np.repeat(x.astype(np.uint8)[:, :, None], 3, axis=2)                     # [H, W, 3]
    if "A" in img.mode or "transparency" in img.info:
        x = np.asarray(img.convert("RGBA")).astype(np.uint16)                           # [H, W, 4]
        return ((x[:, :, :3] * x[:, :, 3:] + 127) // 255).astype(np.uint8)
    return np.asarray(img.convert("RGB"))


def center_crop_resize(frame: np.ndarray, resolution: int) -> np.ndarray:
    """uint8 [H, W, 3] -> [R, R, 3]: the largest centred square (the paper center-crops, Appx E.2), resized
    with Lanczos. Shrinking by f, its kernel reaches 3f source pixels to each side, so every pixel counts; a
    fixed 2-pixel bilinear kernel (F.interpolate without antialias) skips most of them, and aliases."""
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
# from its header (probe), a frame image's size from its header, which Pillow reads before the pixels.

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
    notes: tuple = ()                  # said in the summary: "ignored 2 not an image: notes.txt, raw/"


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


def discover(src: str) -> tuple:
    """SRC -> (sources, skipped (label, reason) pairs). SRC is a video file; a folder of video files and/or
    frame folders (one folder of images per video); or a folder of images, one video. Subfolders are not
    searched further, hidden files (.DS_Store) are no entries, frames are in natural order (f2 before f10)."""
    def kind(path):                                         # (the extension first: no stat per frame)
        ext = os.path.splitext(path)[1].lower()
        return "video" if ext in VIDEO_EXTS else "image" if ext in IMAGE_EXTS else "dir" if os.path.isdir(path) else "other"

    def entries(path):
        try:
            names = sorted((e for e in os.listdir(path) if not e.startswith(".")), key=lambda e: [
                (0, int(t), "") if t.isdigit() else (1, 0, t.lower()) for t in re.split(r"(\d+)", e)])
        except OSError as e:
            raise PrepareError(f"cannot read folder {path}: {e.strerror or e}") from None
        return {e: kind(os.path.join(path, e)) for e in names}

    def frame_folder(path, label, kinds):
        others = [e + "/" * (k == "dir") for e, k in kinds.items() if k != "image"]
        note = f"ignored {len(others)} not an image: " + ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
        return Source("frames", label, path=path, files=tuple(os.path.join(path, e) for e, k in kinds.items()
                                                              if k == "image"), notes=(note,) if others else ())

    reason = lambda e, k: ("a lone image: put the frames of a video in a folder of their own" if k == "image"
                           else f"not a video (extension {os.path.splitext(e)[1] or '(none)'}; expected one of "
                           + ", ".join(VIDEO_EXTS) + ", or a folder of frames)")
    if not os.path.exists(src):
        raise PrepareError(f"{src}: no such file or folder")
    if not os.path.isdir(src):
        label = os.path.basename(src)
        return ([Source("video", label, path=src)], []) if kind(src) == "video" else ([], [(label, reason(label, kind(src)))])
    kinds = entries(src)
    if "image" in kinds.values() and not {"dir", "video"} & set(kinds.values()):    # one frame folder
        return [frame_folder(src, os.path.basename(os.path.abspath(src)) + "/", kinds)], []
    sources, skipped = [], []
    for e, k in kinds.items():
        inner = entries(os.path.join(src, e)) if k == "dir" else {}
        if k == "video":
            sources.append(Source("video", e, path=os.path.join(src, e)))
        elif "image" in inner.values():
            sources.append(frame_folder(os.path.join(src, e), e + "/", inner))
        else:
            skipped.append((e + "/", "holds videos, not frames: subfolders are not searched (pass it as SRC)"
                            if "video" in inner.values() else "no frames in this folder (no file in it is an image: "
                            + " ".join(IMAGE_EXTS) + ")") if k == "dir" else (e, reason(e, k)))
    return sources, skipped


def _check_size(w: int, h: int, what: str) -> None:
    if w * h > MAX_FRAME_PIXELS:
        raise PrepareError(f"{what} claims {w}x{h} frames, more than {MAX_FRAME_PIXELS:,} pixels (refused from "
                           f"its header, not decoded)")


def probe(source: Source) -> tuple:
    """A video's header -> (source with its fps and duration, None), or (None, the reason it is refused)."""
    if source.kind != "video":
        return source, None
    try:
        reader = imageio_ffmpeg.read_frames(source.path)
        try:
            meta = next(reader)                             # ffmpeg's header; no frame decoded yet
        finally:
            reader.close()                                  # stops ffmpeg now
        fps, (lo, hi) = float(meta.get("fps") or 0), FLAG_RANGES["--fps"]
        _check_size(*meta["size"], "its header")
        if not lo <= fps <= hi:
            raise PrepareError(f"its header says {fps:g} fps, not in {lo:g}..{hi:g} (a broken header)")
    except PrepareError as e:
        return None, str(e)
    except Exception as e:                                  # corrupt, empty, not a video: ffmpeg says why
        if "does not contain any stream" in str(e):
            return None, "no video stream (no frames to read)"
        lines = [ln for ln in (re.sub(r"^\[[^\]]*\]\s*", "", ln).strip() for ln in str(e).splitlines()) if ln]
        return None, f"not a readable video (ffmpeg: {(lines or [type(e).__name__])[-1]})"
    return dataclasses.replace(source, fps=fps, duration=meta.get("duration")), None


def iter_frames(source: Source, fps: float, skip: int = 0) -> Iterator[np.ndarray]:
    """Yield a source's frames at the dataset's rate after the first `skip`, uint8 [H, W, 3], one at a time.
    A video at another rate goes through ffmpeg's fps filter, by the file's own timestamps (so variable-rate
    phone videos and GIFs come out right). Skipped frames are decoded and dropped: exact, whatever the codec."""
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
                    raise PrepareError(f"frames of different sizes in folder {source.label}: {first[1]} is "
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
    """Decode, crop, resize, encode and stage one source as <stage>/<name>/<i:06d>.<fmt> -> {"source", "videos":
    [{"name", "frames", "source"}], "skipped": reason or None, "notes"}; None once `stop` is set.

    Only reading is guarded: a reading error is the source's (a unit, the whole video or one --clip-len chunk, is
    kept only if all its frames decoded); an OSError while writing is OUT's disk and stops the job (a full disk
    is never "fifty broken videos")."""
    result = {"source": source.label, "videos": [], "skipped": None, "notes": []}
    unit = lambda n: f"{source.name}_c{n // s.clip_len:04d}" if s.clip_len else source.name
    frames, n, error = iter_frames(source, fps, s.skip), 0, None
    try:
        while (s.max_frames is None or n < s.max_frames) and not stop.is_set():
            try:
                frame = next(frames, None)
            except PrepareError as e:                       # refused by its header
                error = str(e)
            except Exception as e:                          # a decoding error midway, an unreadable frame
                error = f"failed after {n} frames ({type(e).__name__}: {(str(e).strip().splitlines() or [''])[-1]})"
            if error or frame is None:
                break
            i = n % s.clip_len if s.clip_len else n         # the frame's number in its unit
            if i == 0:
                os.mkdir(os.path.join(stage, unit(n)))      # not makedirs: never recreates a removed stage
            with open(os.path.join(stage, unit(n), f"{i:06d}.{s.fmt}"), "xb") as f:
                f.write(encode_frame(center_crop_resize(frame, s.resolution), s.fmt, s.quality))
            n += 1
            tick(1)
    finally:
        frames.close()
    if stop.is_set():
        return None
    length = s.clip_len or max(n, 1)
    complete = n // length if s.clip_len else int(not error and n >= s.min_frames)
    for c in range(complete, -(-n // length)):              # the incomplete units go
        shutil.rmtree(os.path.join(stage, unit(c * length)))
    result["videos"] = [{"name": unit(c * length), "frames": length, "source": source.label} for c in range(complete)]
    after_skip = f" after --skip {s.skip}" if s.skip else ""
    if error and complete:
        result["notes"].append(f"{error}; kept the {complete} complete chunks before it")
    elif error or not complete:
        result["skipped"] = error or (f"{n} frames{after_skip}: shorter than one --clip-len chunk of {s.clip_len}"
                                      if s.clip_len else f"no frames{after_skip}" if n == 0 else
                                      f"only {n} frames{after_skip}, fewer than --min-frames {s.min_frames}")
    elif n % length:
        result["notes"].append(f"dropped the last {n % length} frames (shorter than --clip-len {length})")
    promised = round(source.duration * fps) - s.skip if source.duration else 0
    if not error and n != s.max_frames and n < 0.9 * promised:
        result["notes"].append(f"decoded {n} frames{after_skip} but the file promises about {promised}: truncated?")
    return result


# ------------------------------------------------------------------------------------------------
# §6 Building the dataset: the pool, the frame rate, one atomic writer
# ------------------------------------------------------------------------------------------------

def check_out(out: str) -> tuple:
    """OUT -> (absolute OUT, is it a zip). A new zip or folder, an existing zip or an empty folder (replaced
    once the new one is complete); anything else is refused before any work."""
    if out.endswith(("/", os.sep)) and out.rstrip("/" + os.sep).lower().endswith(".zip"):
        raise PrepareError(f"{out}: a trailing '/' names a folder, but a name ending in .zip is a zip file")
    out = os.path.abspath(out)
    as_zip, parent = out.lower().endswith(".zip"), os.path.dirname(out)
    if not os.path.isdir(parent):
        raise PrepareError(f"cannot write {out}: {parent} " + ("is a file" if os.path.exists(parent) else "does not exist"))
    if os.path.isdir(out) if as_zip else os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise PrepareError(f"cannot write {out}: " + ("it is a folder" if as_zip else "it already exists (a folder "
                                                      "output is written only new or into an empty folder)"))
    if os.path.ismount(out):                                # no rename can replace a mount point
        raise PrepareError(f"cannot write {out}: it is a mount point (name a new folder inside it)")
    return out, as_zip


def remove_dead_partials(out: str) -> None:
    """Remove OUT.partial-<pid>[.stage] beside OUT left by a run that is gone (kill -9, a power cut; this pid,
    reused, counts as gone). A running process's stay: it is still writing."""
    def gone(pid):
        try:
            return pid == os.getpid() or bool(os.kill(pid, 0))     # signal 0 only asks whether pid runs
        except ProcessLookupError:
            return True
        except PermissionError:                                     # it runs, as another user
            return False
    folder, base = os.path.split(out)
    for entry in os.listdir(folder):
        if (m := re.fullmatch(re.escape(base) + r"\.partial-(\d+)(\.stage)?", entry)) and gone(int(m[1])):
            path = os.path.join(folder, entry)
            shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else os.remove(path)


def _build(sources: list, skipped: list, out: str, s: Settings, fps: Optional[float], workers: Optional[int],
           progress: bool, verbose: bool, origin: str = "the input") -> dict:
    """Probe, choose the frame rate, convert, and write OUT atomically: the engine of prepare() and make_demo()."""
    t_start, out, (_, as_zip) = time.time(), os.path.abspath(out), check_out(out)
    remove_dead_partials(out)
    tmp = f"{out}.partial-{os.getpid()}"                    # beside OUT: one file system, an atomic rename
    stage = tmp + ".stage" if as_zip else tmp               # where the threads put frames
    stop, done, file, zf, videos = threading.Event(), False, None, None, []
    workers = max(1, min(workers or os.cpu_count() or 1, len(sources)))
    pool = concurrent.futures.ThreadPoolExecutor(workers)

    def in_order(fn, jobs, window):                         # results in job order (the same zip for any
        pending, jobs = collections.deque(), iter(jobs)     # number of threads), at most `window` in flight
        while pending.extend(pool.submit(fn, *job) for job in itertools.islice(jobs, window - len(pending))) or pending:
            yield pending.popleft().result()                # (a Ctrl-C interrupts this wait)

    def nothing():
        return PrepareError(f"no usable videos in {origin}: " + (f"{len(skipped)} skipped ({skipped[0][0]}: "
                            f"{skipped[0][1]})" if skipped else "it holds no video, no frames and no folder"))
    try:
        os.mkdir(stage)                                     # a bad OUT fails now, before any decoding
        probed = list(in_order(probe, [(src,) for src in sources], 64))
        skipped += [(src.label, reason) for src, (_, reason) in zip(sources, probed) if reason]
        if not (kept := [p for p, _ in probed if p is not None]):
            raise nothing()
        # The frame rate: --fps, else the videos' most common (a tie: the higher; 29.97 and 29.97003 agree).
        votes, notes = collections.Counter(round(p.fps, 2) for p in kept if p.fps), [f"{p.label}: {n}" for p in kept
                                                                                    for n in p.notes]
        if fps is None:
            fps = max(votes, key=lambda k: (votes[k], k), default=DEFAULT_FPS)
            fps = next((p.fps for p in kept if p.fps and round(p.fps, 2) == fps), fps)
            notes += [f"frame folders carry no frame rate: assuming {fps:g} fps (set it with --fps)"] * any(
                p.fps is None for p in kept)
        resampled = [p for p in kept if p.fps and round(p.fps, 2) != round(fps, 2)]
        notes += [f"{p.label}: resampled from {p.fps:g} to {fps:g} fps (frames picked by timestamp)" for p in resampled]
        if as_zip:
            zf = zipfile.ZipFile(file := open(tmp, "xb"), "w")
        bar = tqdm(desc="converting", unit="frame", disable=not progress or None, smoothing=0.05)
        for res in in_order(convert, [(p, s, fps, stage, stop, bar.update) for p in kept], 2 * workers):
            skipped += [(res["source"], res["skipped"])] if res["skipped"] else []
            notes += [f"{res['source']}: {note}" for note in res["notes"]]
            for video in res["videos"]:
                for i in range(video["frames"] if zf else 0):   # stored (JPEG/PNG do not compress), with a
                    path = os.path.join(stage, video["name"], f"{i:06d}.{s.fmt}")   # fixed date: the zip
                    with open(path, "rb") as f:                                    # depends on the data only
                        zf.writestr(zipfile.ZipInfo(path[len(stage) + 1:], (1980, 1, 1, 0, 0, 0)), f.read())
                    os.remove(path)
                videos.append(video)
        bar.close()
        if not videos:
            raise nothing()
        # dataset.json last, one video a line (readable, greppable); then the one rename that makes OUT.
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
        raise PrepareError(f"cannot write {out}: {e.strerror or e}; nothing was written" +
                           " (the existing one is untouched)" * os.path.lexists(out)) from None
    finally:
        # Whatever stopped us (an error, a full disk, Ctrl-C, SIGTERM), threads stop at their next frame and
        # nothing temporary stays; each step runs even if one before fails (closing a zip on a full disk
        # raises). A second Ctrl-C may cut this short: the next run removes the rest (remove_dead_partials).
        stop.set()
        for step in (lambda: pool.shutdown(wait=True, cancel_futures=True), lambda: zf is None or done or zf.close(),
                     lambda: file is None or file.close(), lambda: shutil.rmtree(stage, ignore_errors=True),
                     lambda: done or not os.path.lexists(tmp) or os.remove(tmp)):
            with contextlib.suppress(Exception):
                step()
    frames = sum(v["frames"] for v in videos)
    size = os.path.getsize(out) if as_zip else sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(out)
                                                   for f in fs)
    was = f" (replaced the existing {'' if as_zip else 'empty folder '}{os.path.basename(out)})" * replaced
    if verbose:
        print(f"wrote {out}: {len(videos)} video{'s' * (len(videos) != 1)}, {frames} frames of {s.resolution}x"
              f"{s.resolution} at {fps:g} fps ({f'jpg q{s.quality}' if s.fmt == 'jpg' else 'png'}), {size / 2**20:.1f}"
              f" MiB in {time.time() - t_start:.1f} s{was}", *[f"skipped {len(skipped)}:"] * bool(skipped),
              *[f"  {a}: {b}" for a, b in skipped], *["notes:"] * bool(notes), *[f"  {n}" for n in notes], sep="\n")
    return {"out": out, "videos": len(videos), "frames": frames, "fps": float(fps), "resolution": s.resolution,
            "format": s.fmt, "bytes": size, "seconds": round(time.time() - t_start, 2), "notes": notes,
            "skipped": [{"source": a, "reason": b} for a, b in skipped], "resampled": [p.label for p in resampled],
            "replaced": replaced}


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
    portable = lambda t: re.sub(r"[^A-Za-z0-9._-]+", "_", unicodedata.normalize("NFKD", t).encode("ascii", "ignore")
                                .decode()).strip("._")[:100] or "video"        # never hidden, never ".."
    names = unique_names([portable(os.path.splitext(s.label)[0] if s.kind == "video" else s.label) for s in sources])
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


def _arg(flag: str, text: str):
    try:                                                    # argparse says `error: argument --fps: must be ...`
        return check_flag(flag, text)
    except PrepareError as e:
        raise argparse.ArgumentTypeError(str(e).split(" ", 1)[1]) from None


def build_parser() -> argparse.ArgumentParser:
    # Mode-specific flags default to None, so that main() can refuse one given to the other mode instead of
    # ignoring it; main() fills in the defaults that the help names.
    p = OneLineParser(prog="prepare_data.py", formatter_class=argparse.RawDescriptionHelpFormatter,
                      description=__doc__.split("\n\n")[1], epilog="examples:\n" + __doc__.split("\n\n")[2])
    add = lambda group, flag, meta, text: group.add_argument(flag, metavar=meta, type=lambda t: _arg(flag, t),
                                                             help=text + " ({}..{})".format(*FLAG_RANGES[flag]))
    p.add_argument("src", nargs="?", metavar="SRC", help="a video file, a folder of videos (" + " ".join(VIDEO_EXTS)
                   + "), or a folder of frame folders (one folder of images per video, in natural order: "
                   + " ".join(IMAGE_EXTS) + ")")
    p.add_argument("out", nargs="?", metavar="OUT", help="the dataset to write: OUT.zip, or a folder")
    add(p, "--resolution", "R", "frames are R x R, a power of two (default 256, the paper's; 64 with --demo)")
    add(p, "--clip-len", "N", "slice each video into chunks of N frames, <video>_c0000, ... (RainbowJelly: 512)")
    add(p, "--skip", "N", "drop the first N frames of each video (default 0; RainbowJelly: 150)")
    add(p, "--max-frames", "N", "keep at most N frames of each video, after --skip")
    add(p, "--min-frames", "N", "skip videos with fewer frames (default 3: a training clip has k = 3 frames)")
    add(p, "--fps", "FPS", "the dataset's frame rate (default: the videos' most common, 25 for frame folders); "
                           "videos at another rate are resampled by timestamp")
    p.add_argument("--format", dest="fmt", choices=["jpg", "png"], default="jpg",
                   help="jpg (quality 95, the paper's protocol: FVD moves with it, Table 4) or png (lossless)")
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
    parser, in_main = build_parser(), threading.current_thread() is threading.main_thread()

    def interrupt(signum, frame):
        raise KeyboardInterrupt
    old_handler = signal.signal(signal.SIGTERM, interrupt) if in_main else None
    try:
        a = parser.parse_args(argv)                         # a bad command line: one line, exit status 2
        other = [f for f in (("clip_len", "skip", "max_frames", "min_frames", "fps") if a.demo else
                             ("num_videos", "frames", "seed")) if getattr(a, f) is not None]   # the other mode's
        if a.quality is not None and a.fmt != "jpg":
            parser.error(f"--quality applies to --format jpg only ({a.fmt} is lossless)")
        if a.src is None or (a.out is None) != a.demo:
            parser.error("--demo takes one path, OUT (e.g. --demo demo.zip)" if a.demo else "need SRC and OUT (or --demo OUT)")
        if other:
            parser.error(f"--{other[0].replace('_', '-')} " + ("does not apply to --demo (it shapes the videos of SRC; "
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
