"""Turn videos into the dataset that stylegan_v.py trains on and fvd.py measures.

A StyleGAN-V dataset is a set of videos of square RGB frames, all at one resolution and one frame
rate. This script makes one from whatever you have, or makes a small procedural one from nothing:

    python prepare_data.py --demo demo.zip                         # 64 videos x 64 frames of 64x64
    python prepare_data.py my_videos/ data.zip --resolution 128    # a folder of mp4, avi, mov, ...
    python prepare_data.py frames/ data.zip --fps 25               # a folder of frame folders
    python prepare_data.py jelly.mp4 rj256.zip --clip-len 512 --skip 150   # one long video, chunked

The last line is the paper's RainbowJelly recipe (Appx E.2): an 8-hour 30 fps film "sliced into
1686 chunks of 512 frames each, starting with the 150-th frame (to remove the loading screen),
center-cropped and resized into 256^2". The other benchmarks of the paper (FaceForensics,
SkyTimelapse, UCF101: 25 fps; MEAD: 30 fps) are distributed as videos or frame folders and go
through the first two forms.

The layout (the contract with stylegan_v.py and fvd.py; a zip, or a folder if OUT has no .zip):

    dataset.json        {"fps": 25.0, "resolution": 64, "format": "jpg",
                         "videos": [{"name": "bikes", "frames": 120, "source": "bikes.mp4"}, ...]}
    bikes/000000.jpg    frame 0 of video "bikes", a resolution x resolution RGB image
    bikes/000001.jpg    ... numbered from 000000, consecutively, to frames - 1

Names are unique and filesystem-safe (other characters become "_", a clash gets "_2", "_3"; a
chunk of a long video is "<name>_c0003"). The zip stores frames uncompressed (they are JPEG/PNG
already), so a reader can seek to any frame: the training loop reads 3 random frames per video.

What happens to every frame, and why it matters. Each frame is converted to 8-bit RGB (grayscale
is replicated, alpha is composited over black, 16-bit is rounded to 8-bit), the largest centred
square is cut out (a portrait or landscape video loses its edges; it is never squashed), and the
square is resized to resolution x resolution with Pillow's LANCZOS filter (a windowed sinc, a = 3,
whose support widens with the downscaling factor, so it averages away detail that the small image
cannot hold instead of aliasing it into moire). Frames are stored as JPEG quality 95 (Pillow's
defaults otherwise, 4:2:0 chroma) or, with --format png, losslessly. These choices are not
cosmetic: FVD is "very sensitive to the interpolation procedures and [...] JPEG compression"
(Sec 4), and the paper's Table 4 measures it: one checkpoint scores FVD_16 = 76.8 on FaceForensics
when computed properly, 38.9 when real and fake frames are both resized to 128^2, and 80.2 when
fake frames are saved as JPEG q = 75 instead of 95. So make real and generated data the same way:
the paper's protocol saves generated frames as Pillow JPEG q = 95 too (Appx C).

Frame rate. stylegan_v.py measures time in frames of the training data, so a dataset has one fps,
read from each file's metadata (imageio's get_meta_data()["fps"]). If the videos of SRC disagree,
we do not resample: the most common fps wins and the others are skipped, each with its reason,
unless --fps X is given, which declares every video to be X fps (frames are kept one for one, not
resampled: a 30 fps video declared 25 fps plays 1.2 times slower). Frame folders carry no frame rate:
they are 25 fps unless --fps says otherwise (a note is printed).

Bad input never stops the job and never leaves a broken file. A corrupt or unreadable video, a
file that is not a video, a video with no frames or fewer than --min-frames (default 3: the k = 3
frames one training clip needs, Sec 3.3), a frame folder whose frames differ in size: each is
skipped, and the summary at the end names it with the reason. Frames may be in any still-image
format Pillow reads (by extension, or by content when the extension is unknown); other files in
a frame folder are left out and named in the summary. The output is written under a temporary
name (OUT.partial-<pid>) beside OUT and renamed onto OUT only when complete, so an interrupted run
(Ctrl-C, kill) or a full disk leaves neither OUT nor a temporary file; an existing OUT.zip is
replaced only at that final rename, and the summary line says so. An existing empty OUT folder
(perhaps a mount point, which no rename can replace) is written into: the output is made in
OUT/.partial-<pid>, whose entries move up into OUT when complete, dataset.json last.

Errors. Every failure of the job as a whole goes out through main() as ONE line on stderr,
"prepare_data.py: error: ..." naming the flag, file or folder, never a traceback: a numeric flag
out of its range (FLAG_RANGES, checked while parsing, exit status 2), a flag of the other mode
(--skip with --demo, --seed without), an SRC with no usable video, an OUT that cannot be written,
"no space left on <mount point>" (exit status 1). Ctrl-C and SIGTERM exit with status 130.

How it runs. The main process lists SRC, then a pool of worker processes (--workers, default all
cores) probes every source (frame rate, length) and converts them: each worker decodes one
video as a stream (one frame in memory at a time, however long the video), crops, resizes,
encodes and writes the frames into a staging folder. The main process is the only writer of the
zip: it moves each finished video into the zip, in source order, so the output is the same
whatever the number of workers. --workers 1 does everything in the main process.

Sections:
    §1  Settings and errors
    §2  Frames: any pixel format -> 8-bit RGB -> centred square -> R x R (Lanczos) -> JPEG/PNG
    §3  Sources: what SRC holds, probing it, and reading its frames one at a time
    §4  The embedded demo dataset: soft blobs with smooth, continuous motion
    §5  Converting one source (runs in a worker process)
    §6  Building the dataset: workers, ordering, atomic output, Ctrl-C
    §7  Reading a dataset back, and the command line
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import contextlib
import dataclasses
import errno
import functools
import io
import json
import math
import multiprocessing
import os
import re
import shutil
import signal
import sys
import threading
import time
import unicodedata
import zipfile
from concurrent.futures.process import BrokenProcessPool   # `import concurrent.futures` lacks .process
from typing import Iterator, Optional

import imageio.v2 as iio            # videos, through its ffmpeg plugin (imageio-ffmpeg's binary)
import imageio.v3 as iio3           # GIFs, through its Pillow plugin
import numpy as np
from PIL import Image, ImageFile
from tqdm import tqdm

VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".gif", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv")
ANIMATION_EXTS = (".gif", ".apng", ".fli", ".flc")   # animations that Pillow decodes frame by frame
# The usual frame formats; every other still-image format that Pillow reads is accepted too (§3).
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm")
DEFAULT_FPS = 25.0          # frame folders carry no frame rate; 25 is FaceForensics'/SkyTimelapse's
DEMO_FPS = 25.0
FVD_MIN_FRAMES = 16         # the paper's FVD_16 discards real videos shorter than its clip (Appx C)

# The range of every numeric flag, checked before any work (by argparse on the command line, by
# _check_flag in the Python API). Upper bounds are far beyond any real dataset; they only turn a
# typo (an extra zero, a seed pasted as a frame count) into an error instead of hours of work.
MAX_COUNT = 10 ** 9         # frames, videos, chunk lengths: an 8-hour 30 fps film has 864,000 frames
FLAG_RANGES = {             # flag: (lowest, highest), both allowed
    "--resolution": (4, 4096),          # and a power of two: StyleGAN's synthesis doubles from 4x4
    "--clip-len": (1, MAX_COUNT),
    "--skip": (0, MAX_COUNT),
    "--max-frames": (1, MAX_COUNT),
    "--min-frames": (1, MAX_COUNT),
    "--fps": (0.0, 1000.0),             # a finite number, > 0 (0 itself is refused)
    "--quality": (1, 100),
    "--workers": (1, 256),
    "--num-videos": (1, 100_000),       # --demo: one Source per video is listed up front
    "--frames": (1, 100_000),
    "--seed": (0, 2 ** 32 - 1),
}


# ------------------------------------------------------------------------------------------------
# §1 Settings and errors
# ------------------------------------------------------------------------------------------------

class PrepareError(Exception):
    """A problem with SRC or OUT as a whole; the CLI prints its one-line message, no traceback."""


class OutputWriteError(OSError):
    """Writing the output failed (a full disk, a read-only mount, a folder removed under us).

    Unlike a bad video, this stops the whole job: convert() lets it through instead of turning it
    into a "skipped" reason, so a full disk is never reported as fifty broken videos. It is an
    OSError (errno, strerror, filename), so it crosses from a worker process intact.
    """


def _range_text(flag: str) -> str:
    """What FLAG_RANGES allows for a flag, in words: 'an integer in 1..100'."""
    lo, hi = FLAG_RANGES[flag]
    if flag == "--resolution":
        return f"a power of two in {lo}..{hi} (StyleGAN's synthesis network doubles from 4x4)"
    if flag == "--fps":
        return f"a number > 0 and <= {hi:g}"
    return f"an integer in {lo}..{hi}"


def _flag_ok(flag: str, value) -> bool:
    lo, hi = FLAG_RANGES[flag]
    if isinstance(value, bool):
        return False
    if flag == "--fps":                                     # nan and inf fail every comparison
        return isinstance(value, (int, float, np.integer, np.floating)) and math.isfinite(value) \
            and lo < value <= hi
    if not isinstance(value, (int, np.integer)):
        return False
    if flag == "--resolution" and value & (value - 1):      # not a power of two
        return False
    return lo <= value <= hi


def _check_flag(flag: str, value) -> None:
    """The Python API's check of one setting (None: not given) -> PrepareError naming the flag."""
    if value is not None and not _flag_ok(flag, value):
        raise PrepareError(f"{flag} must be {_range_text(flag)}, not {value!r}")


def flag_type(flag: str):
    """argparse type= for a numeric flag: the text -> its value, or ArgumentTypeError with the range
    (argparse prints it as `prepare_data.py: error: argument --quality: must be ...`)."""
    def parse(text: str):
        try:
            value = float(text) if flag == "--fps" else int(text)
        except ValueError:
            value = None
        if value is None or not _flag_ok(flag, value):
            raise argparse.ArgumentTypeError(f"must be {_range_text(flag)}, not {text!r}")
        return value
    return parse


@dataclasses.dataclass(frozen=True)
class Settings:
    """How every frame is made; the same for all videos of a dataset."""
    resolution: int = 256            # output frames are resolution x resolution (paper: 256, MEAD 1024)
    fmt: str = "jpg"                 # "jpg" (quality 95, the paper's protocol) or "png" (lossless)
    quality: int = 95                # JPEG quality; Table 4: q = 75 instead of 95 moves FVD_16 by 3-9
    clip_len: Optional[int] = None   # slice each video into chunks of this many frames (RainbowJelly: 512)
    skip: int = 0                    # drop this many frames at the start of each video (RainbowJelly: 150)
    max_frames: Optional[int] = None # keep at most this many frames per source, after --skip
    min_frames: int = 3              # skip videos shorter than this (k = 3 frames per training clip)


# ------------------------------------------------------------------------------------------------
# §2 Frames: any pixel format -> 8-bit RGB -> centred square -> R x R (Lanczos) -> JPEG/PNG
# ------------------------------------------------------------------------------------------------

def to_rgb8(frame: np.ndarray) -> np.ndarray:
    """Any decoded frame -> uint8 [H, W, 3].

    Accepts [H, W] or [H, W, C] with C = 1 (gray), 2 (gray + alpha), 3 (RGB) or 4 (RGBA), in bool,
    uint8, uint16 / int32 (16-bit PNGs), or float in [0, 1]. Alpha is composited over black, which
    is how a transparent pixel looks once it is a video frame.
    """
    x = np.asarray(frame)
    if x.ndim == 2:
        x = x[:, :, None]                                               # [H, W] -> [H, W, 1]
    if x.ndim != 3 or x.shape[2] not in (1, 2, 3, 4):
        raise ValueError(f"cannot read a frame of shape {x.shape} as an image")
    if x.dtype == np.bool_:
        x = x.astype(np.uint8) * 255
    elif x.dtype.kind in "ui" and x.dtype != np.uint8:
        # 16-bit (and Pillow's int32 mode "I" holding 16-bit values): round x * 255 / 65535.
        x = np.clip(x.astype(np.int64), 0, 65535)
        x = ((x * 255 + 32767) // 65535).astype(np.uint8)
    elif x.dtype.kind == "f":
        x = np.round(np.clip(np.nan_to_num(x), 0.0, 1.0) * 255).astype(np.uint8)
    if x.shape[2] in (2, 4):                                            # composite over black
        color, alpha = x[:, :, :-1].astype(np.uint16), x[:, :, -1:].astype(np.uint16)
        x = ((color * alpha + 127) // 255).astype(np.uint8)
    if x.shape[2] == 1:
        x = np.repeat(x, 3, axis=2)                                     # [H, W, 1] -> [H, W, 3]
    return np.ascontiguousarray(x)


def center_crop_resize(frame: np.ndarray, resolution: int) -> np.ndarray:
    """uint8 [H, W, 3] -> uint8 [R, R, 3]: the largest centred square, resized with Lanczos.

    Cropping rather than squashing keeps shapes and motion undistorted (the paper center-crops,
    Appx E.2). LANCZOS is an antialiasing filter in Pillow: when shrinking by a factor f, its
    kernel reaches 3f source pixels to each side, so every source pixel contributes. (A bilinear
    resize with a fixed 2-pixel kernel, like torch's F.interpolate without antialias, ignores most
    source pixels when f is large, and aliases.)
    """
    h, w = frame.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = frame[top:top + side, left:left + side]                    # [S, S, 3]
    if side == resolution:
        return np.ascontiguousarray(square)
    img = Image.fromarray(square).resize((resolution, resolution), Image.Resampling.LANCZOS)
    return np.asarray(img)                                              # [R, R, 3]


def encode_frame(frame: np.ndarray, fmt: str = "jpg", quality: int = 95) -> bytes:
    """uint8 [R, R, 3] -> the bytes of a .jpg or .png file (Pillow, as in the paper's protocol)."""
    buf = io.BytesIO()
    if fmt == "jpg":
        Image.fromarray(frame).save(buf, format="JPEG", quality=quality)
    else:
        Image.fromarray(frame).save(buf, format="PNG")
    return buf.getvalue()


def _pil_to_array(img: Image.Image) -> np.ndarray:
    """A Pillow image in any mode -> an array that to_rgb8 understands."""
    if img.mode == "P":                         # palette: expand, keeping a transparent index
        img = img.convert("RGBA")
    elif img.mode not in ("1", "L", "LA", "RGB", "RGBA", "I", "I;16", "I;16B", "I;16L", "F"):
        img = img.convert("RGB")                # CMYK, YCbCr, LAB, HSV, ...
    x = np.asarray(img)
    return x.astype(x.dtype.newbyteorder("=")) if x.dtype.byteorder == ">" else x


# ------------------------------------------------------------------------------------------------
# §3 Sources: what SRC holds, probing it, and reading its frames one at a time
# ------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Source:
    """One input video: a video file, a folder of frames, or a procedural demo video."""
    kind: str                          # "video", "gif", "frames" or "demo"
    label: str                         # how the summary and dataset.json name it: "bikes.mp4", "clips/a/"
    name: str = ""                     # the unique, filesystem-safe output name (set after listing)
    path: str = ""                     # the file, or the folder of frames
    files: tuple = ()                  # frames: the image files, in natural order
    demo: tuple = ()                   # demo: the (seed, frames, resolution) of make_demo_video
    fps: Optional[float] = None        # from the metadata (None: unknown)
    est_frames: Optional[int] = None   # the length the metadata promises (for the progress bar)
    notes: tuple = ()                  # said in the summary: "ignored 2 files that are not images: ..."


def natural_key(name: str) -> list:
    """Sort key that puts "frame2.png" before "frame10.png" (digit runs compare as numbers)."""
    return [(0, int(tok), "") if tok.isdigit() else (1, 0, tok.lower()) for tok in re.split(r"(\d+)", name)]


def safe_name(text: str) -> str:
    """A name that is a valid, portable folder name: ASCII letters, digits, "-", "_", "."."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    text = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")   # no hidden names, no trailing dots
    return text[:100] or "video"


def unique_names(names: list) -> list:
    """Make names unique (case-insensitively, for macOS and Windows) by adding "_2", "_3", ...

    A suffix never takes a name that another source has: ["a", "a", "a_2"] -> ["a", "a_3", "a_2"].
    "dataset.json" is reserved for the index.
    """
    wanted, taken, out = {n.lower() for n in names}, {"dataset.json"}, []
    for n in names:
        candidate, k = n, 2
        while candidate.lower() in taken or (candidate != n and candidate.lower() in wanted):
            candidate, k = f"{n}_{k}", k + 1
        taken.add(candidate.lower())
        out.append(candidate)
    return out


def _is_stub(factory) -> bool:
    """A format Pillow only recognises (HDF5, GRIB, ...) and cannot decode without a handler."""
    return isinstance(factory, type) and issubclass(factory, ImageFile.StubImageFile)


@functools.lru_cache(maxsize=None)
def still_image_exts() -> frozenset:
    """Every extension of a still-image format that Pillow can decode: IMAGE_EXTS plus Pillow's own
    list (.pgm, .tga, .qoi, .jp2, ...), without the animations (.gif: a video here), the video
    containers Pillow merely recognises (.mpg) and the stub formats it cannot decode (.h5, .grib)."""
    Image.init()                                        # load every plugin, not just the common ones
    readable = {ext for ext, fmt in Image.registered_extensions().items()
                if fmt in Image.OPEN and fmt != "MPEG" and not _is_stub(Image.OPEN[fmt][0])}
    return frozenset(readable | set(IMAGE_EXTS)) - set(VIDEO_EXTS) - set(ANIMATION_EXTS)


def classify(path: str) -> str:
    """What one entry of SRC is -> "dir", "video", "animation" (decoded by Pillow), "image" or "other".

    By extension where it is known (no file is opened for a folder of 100,000 .jpg frames); by
    content otherwise: Pillow's cheap Image.open reads only the header, so "frame_0001.raw" holding
    a PNG is an image and "notes.txt" is not.
    """
    if os.path.isdir(path):
        return "dir"
    ext = os.path.splitext(path)[1].lower()
    if ext in ANIMATION_EXTS:
        return "animation"
    if ext in VIDEO_EXTS:
        return "video"
    if ext in still_image_exts():
        return "image"
    try:
        with Image.open(path) as img:
            if img.format == "MPEG" or isinstance(img, ImageFile.StubImageFile):
                return "other"
            return "animation" if getattr(img, "is_animated", False) else "image"
    except Exception:                                   # not an image (or unreadable): Pillow says why
        return "other"


def _ignored_note(names: list) -> tuple:
    """The summary's note on what a frame folder held besides its frames (nothing: no note)."""
    if not names:
        return ()
    shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
    files = "file that is not an image" if len(names) == 1 else "files that are not images"
    return (f"ignored {len(names)} {files}: {shown}",)


def _listdir(path: str) -> list:
    """The visible entries of a folder, in natural order ("a hidden .DS_Store" is no entry)."""
    try:
        return sorted((e for e in os.listdir(path) if not e.startswith(".")), key=natural_key)
    except OSError as e:
        raise PrepareError(f"cannot read folder {path}: {e.strerror or e}") from None


def discover(src: str) -> tuple[list, list]:
    """List the sources in SRC -> (sources, skipped), skipped being (label, reason) pairs.

    SRC is a video file; or a folder of video files and/or frame folders (one folder of images per
    video); or a folder of images, which is then one video. Subfolders are not searched further,
    and hidden files (".DS_Store") are ignored. Files in a frame folder that are not images are
    left out, and the summary names them.
    """
    if not os.path.exists(src):
        raise PrepareError(f"{src}: no such file or folder")
    if os.path.isfile(src):
        label, kind = os.path.basename(src), classify(src)
        if kind == "image":
            return [], [(label, "a lone image: put the frames of a video in a folder of their own")]
        if kind == "other":                 # as in a folder: by extension, not by ffmpeg's "cannot handle"
            return [], [(label, _not_a_video(label))]
        return [_file_source(src, label, kind)], []
    entries = _listdir(src)
    kinds = {e: classify(os.path.join(src, e)) for e in entries}
    images = [e for e in entries if kinds[e] == "image"]
    if images and not any(kinds[e] in ("dir", "video", "animation") for e in entries):
        label = os.path.basename(os.path.abspath(src)) + "/"    # a folder of frames is one video
        return [Source("frames", label, path=src, files=tuple(os.path.join(src, e) for e in images),
                       notes=_ignored_note([e for e in entries if kinds[e] != "image"]))], []
    sources, skipped = [], []
    for entry in entries:
        path = os.path.join(src, entry)
        if kinds[entry] == "dir":
            inner = _listdir(path)
            inner_kinds = {e: classify(os.path.join(path, e)) for e in inner}
            frames = [e for e in inner if inner_kinds[e] == "image"]
            if frames:
                others = [e + "/" * (inner_kinds[e] == "dir") for e in inner if inner_kinds[e] != "image"]
                sources.append(Source("frames", entry + "/", path=path,
                                      files=tuple(os.path.join(path, e) for e in frames),
                                      notes=_ignored_note(others)))
            elif any(k in ("video", "animation") for k in inner_kinds.values()):
                skipped.append((entry + "/", "holds videos, not frames: subfolders are not searched "
                                             "(pass this folder as SRC)"))
            else:
                skipped.append((entry + "/", "no frames in this folder (no file in it is an image "
                                             "that Pillow reads: jpg, png, bmp, tif, webp, ppm/pgm, ...)"))
        elif kinds[entry] == "image":
            skipped.append((entry, "a lone image: put the frames of a video in a folder of their own"))
        elif kinds[entry] in ("video", "animation"):
            sources.append(_file_source(path, entry, kinds[entry]))
        else:
            skipped.append((entry, _not_a_video(entry)))
    return sources, skipped


def _not_a_video(name: str) -> str:
    """The reason a file that is neither a video nor an image is skipped, alone or in a folder."""
    ext = os.path.splitext(name)[1] or "(none)"
    return f"not a video (extension {ext}; expected one of " + ", ".join(VIDEO_EXTS) + ", or a folder of frames)"


def _file_source(path: str, label: str, kind: str = "video") -> Source:
    """A video file: decoded by ffmpeg, or by Pillow for an animation (GIF, APNG, FLI)."""
    return Source("gif" if kind == "animation" else "video", label, path=path)


def _ffmpeg_reason(err: Exception) -> str:
    """ffmpeg's many-line complaint -> one line a person can act on."""
    text = str(err)
    if "does not contain any stream" in text or "no video stream" in text.lower():
        return "no video stream (no frames to read)"
    lines = [re.sub(r"^\[[^\]]*\]\s*", "", ln).strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("===")]
    return "not a readable video (ffmpeg: " + (lines[-1] if lines else type(err).__name__) + ")"


def probe(source: Source) -> tuple:
    """Read a source's metadata (frame rate, length) -> (source, None) or (None, reason).

    Cheap: the header of a video, the header of each image of a frame folder. Frames of different
    sizes cannot be one video (stretching some of them would invent motion), so such a folder is
    refused, with the first two sizes named.
    """
    try:
        if source.kind == "video":
            try:
                reader = iio.get_reader(source.path, format="FFMPEG")
            except Exception as e:            # ffmpeg could not open it: corrupt, empty, not a video
                return None, _ffmpeg_reason(e)
            with reader:
                meta = reader.get_meta_data()
            fps, duration = meta.get("fps"), meta.get("duration")
            fps = float(fps) if fps and math.isfinite(float(fps)) and float(fps) > 0 else None
            est = round(duration * fps) if fps and duration and math.isfinite(duration) else None
            return dataclasses.replace(source, fps=fps, est_frames=est), None
        if source.kind == "gif":
            with Image.open(source.path) as img:
                ms, frames = img.info.get("duration") or 0, getattr(img, "n_frames", 1)
            # The frame rate of a GIF is its first frame's delay. Browsers show delays under 20 ms
            # as 100 ms; so do we (10 fps).
            fps = 1000.0 / ms if ms >= 20 else 10.0
            return dataclasses.replace(source, fps=fps, est_frames=frames), None
        if source.kind == "frames":
            sizes = {}
            for f in source.files:
                try:
                    with Image.open(f) as img:
                        sizes.setdefault(img.size, f)
                except Exception as e:
                    return None, f"unreadable frame {os.path.basename(f)} ({type(e).__name__}: {e})"
                if len(sizes) > 1:
                    (s0, f0), (s1, f1) = list(sizes.items())[:2]
                    return None, (f"frames of different sizes in folder {source.label}: "
                                  f"{os.path.basename(f0)} is {s0[0]}x{s0[1]}, "
                                  f"{os.path.basename(f1)} is {s1[0]}x{s1[1]} (refused)")
            return dataclasses.replace(source, est_frames=len(source.files)), None
        if source.kind == "demo":
            return dataclasses.replace(source, fps=DEMO_FPS), None
        raise ValueError(source.kind)
    except Exception as e:
        return None, f"cannot read it ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"


def iter_frames(source: Source, skip: int = 0) -> Iterator[np.ndarray]:
    """Yield the frames of a source after the first `skip`, one at a time (never the whole video).

    Videos go through imageio's ffmpeg plugin, which pipes raw RGB frames out of an ffmpeg process
    (so skipped frames are decoded and dropped: exact, whatever the codec's keyframes). GIFs go
    through imageio's Pillow plugin. Frames may be any dtype or channel count: see to_rgb8.
    """
    if source.kind == "video":
        with iio.get_reader(source.path, format="FFMPEG") as reader:
            for i, frame in enumerate(reader):
                if i >= skip:
                    yield frame
    elif source.kind == "gif":
        for i, frame in enumerate(iio3.imiter(source.path, plugin="pillow")):
            if i >= skip:
                yield frame
    elif source.kind == "frames":
        for f in source.files[skip:]:
            with Image.open(f) as img:
                yield _pil_to_array(img)
    elif source.kind == "demo":
        seed, frames, resolution = source.demo
        yield from _demo_frames(seed, frames, resolution, start=skip)
    else:
        raise ValueError(source.kind)


# ------------------------------------------------------------------------------------------------
# §4 The embedded demo dataset: soft blobs with smooth, continuous motion
# ------------------------------------------------------------------------------------------------
# A stand-in for real footage that needs no download and that a tiny GAN on a laptop CPU can learn
# in minutes: 2-3 soft-edged blobs on a gradient background. Every visual parameter (a blob's
# position, size, elongation, orientation, wobble, hue; the background's direction and colours) is a
# smooth function of continuous time t, a sum of three sinusoids with random periods of 40-240
# frames (1.6-9.6 s at 25 fps) and random phases. Incommensurate periods make the motion
# non-periodic over a clip, the random draws make every video different, and the low frequencies
# make it smooth: consecutive frames differ by about 1.5 % of the pixel range. The video is a
# function x(t), like StyleGAN-V's view of video, so frame t depends only on (seed, t): the first
# 64 frames of a 256-frame video are the 64-frame video, at any resolution.

def _hsv_to_rgb(h: np.ndarray, s: float, v: float) -> np.ndarray:
    """Hue in [0, 1) (any shape) -> RGB in [0, 1] (shape + [3]), the piecewise-linear hexcone."""
    h = np.asarray(h, dtype=np.float64)
    k = (np.array([5.0, 3.0, 1.0]).reshape((3,) + (1,) * h.ndim) + h * 6.0) % 6.0     # [3, ...]
    return np.moveaxis(v - v * s * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0), 0, -1)


def _wave_params(rng: np.random.Generator, n: int) -> tuple:
    """n random smooth signals, each with three (period, phase, amplitude) terms, unit RMS."""
    periods = np.exp(rng.uniform(np.log(40.0), np.log(240.0), size=(n, 3)))   # frames
    phases = rng.uniform(0.0, 2 * np.pi, size=(n, 3))
    amps = np.array([1.0, 0.6, 0.35]) * rng.uniform(0.7, 1.3, size=(n, 3))
    amps /= np.sqrt((amps ** 2).sum(axis=1, keepdims=True) / 2)                 # RMS of the sum = 1
    return periods, phases, amps


def _waves(params: tuple, t: np.ndarray) -> np.ndarray:
    """Evaluate the signals at times t [T] -> [T, n]."""
    periods, phases, amps = params
    return (amps * np.sin(2 * np.pi * t[:, None, None] / periods + phases)).sum(axis=-1)


def _demo_scene(seed) -> dict:
    """Draw everything random about one demo video (the rendering below is deterministic)."""
    rng = np.random.default_rng(seed)
    scene = {"bg": dict(waves=_wave_params(rng, 3), hue=rng.uniform(), angle=rng.uniform(0, 2 * np.pi)),
             "blobs": []}
    for _ in range(int(rng.integers(2, 4))):
        scene["blobs"].append(dict(
            waves=_wave_params(rng, 8),
            center=rng.uniform(-0.6, 0.6, size=2),
            size=rng.uniform(0.2, 0.32),
            angle=rng.uniform(0, np.pi), spin=rng.choice([-1.0, 1.0]) / 60,     # rad per frame
            hue=rng.uniform(), hue_drift=rng.choice([-1.0, 1.0]) / 300,         # cycles per frame
            wobble_phase=rng.uniform(0, 2 * np.pi)))
    return scene


def _render_demo(scene: dict, t: np.ndarray, resolution: int) -> np.ndarray:
    """Frames at (possibly fractional) times t [T] -> uint8 [T, R, R, 3]. Coordinates span [-1, 1]."""
    grid = (np.arange(resolution) + 0.5) / resolution * 2 - 1
    y, x = np.meshgrid(grid, grid, indexing="ij")                                 # [R, R] each
    y, x = y[None], x[None]                                                       # [1, R, R]
    col = lambda a: a[:, None, None]                                              # [T] -> [T, 1, 1]

    # Background: a soft linear gradient between two colours whose direction and hues drift.
    bg = scene["bg"]
    s = _waves(bg["waves"], t)                                                    # [T, 3]
    angle = bg["angle"] + 0.8 * s[:, 0]
    hue_a = bg["hue"] + 0.06 * s[:, 1] + t / 900
    hue_b = hue_a + 0.25 + 0.05 * s[:, 2]
    w = 0.5 + 0.5 * np.tanh(1.2 * (col(np.cos(angle)) * x + col(np.sin(angle)) * y))   # [T, R, R]
    dark, light = _hsv_to_rgb(hue_a % 1, 0.55, 0.45), _hsv_to_rgb(hue_b % 1, 0.55, 0.75)  # [T, 3]
    img = dark[:, None, None] * (1 - w[..., None]) + light[:, None, None] * w[..., None]  # [T, R, R, 3]

    for b in scene["blobs"]:
        s = _waves(b["waves"], t)                                                 # [T, 8]
        # tanh keeps the centre inside the frame however far the sum of sinusoids wanders.
        cx = 0.7 * np.tanh(b["center"][0] + 0.7 * s[:, 0])
        cy = 0.7 * np.tanh(b["center"][1] + 0.7 * s[:, 1])
        size = b["size"] * np.exp(0.25 * s[:, 2])                                 # mean radius
        aspect = np.exp(0.22 * s[:, 3])                                           # elongation
        theta = b["angle"] + b["spin"] * t + 0.5 * s[:, 4]                        # orientation
        hue = b["hue"] + b["hue_drift"] * t + 0.08 * s[:, 5]
        wobble = 0.12 * (1 + 0.5 * s[:, 6])                                       # 3-lobed deformation
        wobble_phase = b["wobble_phase"] + 0.8 * s[:, 7] + t / 40

        dx, dy = x - col(cx), y - col(cy)                                         # [T, R, R]
        c, sn = col(np.cos(theta)), col(np.sin(theta))
        u = (c * dx + sn * dy) / col(size * aspect)                               # blob frame, unit
        v = (-sn * dx + c * dy) / col(size / aspect)                              #  radius = 1
        r = np.sqrt(u ** 2 + v ** 2) / (1 + col(wobble) * np.sin(3 * np.arctan2(v, u) + col(wobble_phase)))
        dist = (1 - r) * col(size)                        # ~ signed distance to the edge, image units
        alpha = np.clip(0.5 + dist / 0.05, 0.0, 1.0)      # soft edge 0.05 wide (1.6 px at 64x64)
        shade = 1 - 0.4 * np.clip(r, 0, 1)[..., None] ** 2                       # a little volume
        color = _hsv_to_rgb(hue % 1, 0.8, 1.0)[:, None, None] * shade            # [T, R, R, 3]
        img = img * (1 - alpha[..., None]) + color * alpha[..., None]
    return np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)


def _demo_frames(seed, frames: int, resolution: int, start: int = 0) -> Iterator[np.ndarray]:
    """Yield frames start..frames-1 of a demo video, rendering 8 at a time to bound memory."""
    scene = _demo_scene(seed)
    for t0 in range(start, frames, 8):
        yield from _render_demo(scene, np.arange(t0, min(t0 + 8, frames), dtype=np.float64), resolution)


def make_demo_video(seed, frames: int = 64, resolution: int = 64) -> np.ndarray:
    """A procedural video -> uint8 [frames, resolution, resolution, 3]; pure numpy, deterministic.

    seed is anything np.random.default_rng accepts: an int, or a tuple such as (dataset_seed, index)
    (the demo dataset's video i is make_demo_video((seed, i), ...)).
    """
    out = np.empty((frames, resolution, resolution, 3), dtype=np.uint8)
    for i, frame in enumerate(_demo_frames(seed, frames, resolution)):
        out[i] = frame
    return out


# ------------------------------------------------------------------------------------------------
# §5 Converting one source (runs in a worker process)
# ------------------------------------------------------------------------------------------------
# A worker streams frames in and encoded frames out, into the staging folder, so memory holds one
# frame whatever the video's length. It reports what it wrote; the main process decides what enters
# the dataset. A failure is a result ("skipped", with the reason), never an exception, except
# KeyboardInterrupt (Ctrl-C, SIGTERM) and OutputWriteError (a full disk), which must stop everything.

@contextlib.contextmanager
def _writing():
    """Marks output writes: an OSError in them is the job's failure (OutputWriteError), not the video's."""
    try:
        yield
    except OutputWriteError:
        raise
    except OSError as e:
        raise OutputWriteError(e.errno, e.strerror or str(e), e.filename) from None


class StagedVideo:
    """Where a worker puts the encoded frames of one output video (a whole video, or one chunk).

    For a zip: one pack file, <stage>/<name>.pack, of length-prefixed frames, which the main
    process copies into the zip. One file per video rather than per frame matters: on a busy or
    networked disk creating and deleting a file can cost a millisecond, more than encoding a 64x64
    frame. For a folder output the frames go straight to their final place, <stage>/<name>/<i:06d>.jpg,
    since the stage folder becomes OUT by a rename.
    """

    def __init__(self, stage: str, name: str, ext: str, packed: bool):
        self.path, self.ext, self.packed, self.count = os.path.join(stage, name), ext, packed, 0
        # "x" and mkdir (not makedirs) fail if the stage is gone: a worker that outlives the
        # main process's cleanup must not recreate what the cleanup removed.
        self.file = None
        with _writing():
            if packed:
                self.file = open(self.path + ".pack", "xb")
            else:
                os.mkdir(self.path)

    def add(self, data: bytes) -> None:
        with _writing():
            if self.packed:
                self.file.write(len(data).to_bytes(4, "little") + data)
            else:
                with open(os.path.join(self.path, f"{self.count:06d}{self.ext}"), "wb") as f:
                    f.write(data)
        self.count += 1

    def close(self) -> None:
        if self.file is not None:
            file, self.file = self.file, None       # closed once, even if the flush fails
            with _writing():
                file.close()                        # flushes the last frames: can meet a full disk

    def remove(self) -> None:
        self.close()
        if self.packed:
            os.remove(self.path + ".pack")
        else:
            shutil.rmtree(self.path, ignore_errors=True)


def read_pack(path: str) -> Iterator[bytes]:
    """The frames of a pack file written by StagedVideo, in order."""
    with open(path, "rb") as f:
        while header := f.read(4):
            yield f.read(int.from_bytes(header, "little"))


_stop_event = None       # workers: set by the main process on Ctrl-C; polled between frames
_terminated = False      # workers: a SIGTERM arrived (`kill -- -PGID`); stops the job like _stop_event
_frame_counter = None    # workers: shared count of frames decoded, which feeds the progress bar
_progress_hook = None    # --workers 1: a callable(n) that advances the progress bar directly


def _init_worker(stop_event, frame_counter) -> None:
    """Runs once in each worker process."""
    # Ctrl-C reaches every process of the terminal's group. Workers ignore it, and the main
    # process stops them through stop_event, so that it alone decides what is cleaned up.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # SIGTERM sent to the whole group (`kill -- -PGID`, a job scheduler) must not kill a worker
    # mid-write either: it only raises a flag, and the job then stops at the next frame, as
    # KeyboardInterrupt, which the main process receives as the result and cleans up after.
    signal.signal(signal.SIGTERM, _on_sigterm_in_worker)
    if _HAVE_SIGMASK:                   # born with both blocked (see _stop_signals_blocked): now safe
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
    global _stop_event, _frame_counter
    _stop_event, _frame_counter = stop_event, frame_counter


def _on_sigterm_in_worker(signum, frame) -> None:
    global _terminated
    _terminated = True


def _report(n: int) -> None:
    if _frame_counter is not None:
        with _frame_counter.get_lock():
            _frame_counter.value += n
    elif _progress_hook is not None:
        _progress_hook(n)


def convert(source: Source, settings: Settings, stage: str, packed: bool) -> dict:
    """Decode, crop, resize, encode and stage one source.

    Returns {"source": label, "videos": [{"name", "frames", "source"}], "skipped": reason or None,
    "notes": [...]}. A unit (the whole video, or one --clip-len chunk) is kept only if all of its
    frames decoded: after a decoding error the complete chunks before it are kept, a video without
    --clip-len is skipped.
    """
    s = settings
    result = {"source": source.label, "videos": [], "skipped": None, "notes": []}
    unit_name = lambda i: f"{source.name}_c{i // s.clip_len:04d}" if s.clip_len else source.name
    units, n, unreported, error = [], 0, 0, None
    frames = iter_frames(source, s.skip)
    try:
        for frame in frames:
            if s.max_frames is not None and n >= s.max_frames:
                break
            if _terminated or (_stop_event is not None and _stop_event.is_set()):
                raise KeyboardInterrupt
            frame = to_rgb8(frame)
            if n == 0 and min(frame.shape[:2]) < s.resolution:
                result["notes"].append(f"{frame.shape[1]}x{frame.shape[0]} frames are smaller than "
                                       f"{s.resolution}x{s.resolution}: upscaled, expect blur")
            if not units or (s.clip_len and n % s.clip_len == 0):          # a new chunk begins
                if units:
                    units[-1].close()
                units.append(StagedVideo(stage, unit_name(n), "." + s.fmt, packed))
            units[-1].add(encode_frame(center_crop_resize(frame, s.resolution), s.fmt, s.quality))
            n, unreported = n + 1, unreported + 1
            if unreported == 16:
                _report(unreported)
                unreported = 0
    except (KeyboardInterrupt, OutputWriteError):   # the job stops: Ctrl-C, or the output's disk is full
        raise
    except Exception as e:          # e.g. a decoding error mid-stream: keep only complete units
        last = str(e).strip().splitlines()
        error = f"failed after {n} frames ({type(e).__name__}: {last[-1] if last else ''})"
    finally:
        frames.close()              # stops ffmpeg now, not whenever the generator is collected
        for unit in units:
            unit.close()
        _report(unreported)

    after_skip = f" after --skip {s.skip}" if s.skip else ""
    if s.clip_len:
        complete = n // s.clip_len
        for unit in units[complete:]:                           # the incomplete last chunk, if any
            unit.remove()
        result["videos"] = [{"name": unit_name(c * s.clip_len), "frames": s.clip_len, "source": source.label}
                            for c in range(complete)]
        if error and complete:
            result["notes"].append(f"{error}; kept the {complete} complete chunks before it")
        elif error:
            result["skipped"] = error
        elif not complete:
            result["skipped"] = f"{n} frames{after_skip}: shorter than one --clip-len chunk of {s.clip_len}"
        elif n % s.clip_len:
            result["notes"].append(f"dropped the last {n % s.clip_len} frames "
                                   f"(shorter than --clip-len {s.clip_len})")
    else:
        if error or n < max(s.min_frames, 1):
            for unit in units:
                unit.remove()
            result["skipped"] = (error or (f"no frames{after_skip}" if n == 0 else
                                 f"only {n} frames{after_skip}, fewer than --min-frames {s.min_frames}"))
        else:
            result["videos"] = [{"name": source.name, "frames": n, "source": source.label}]
    capped = s.max_frames is not None and n >= s.max_frames
    if not error and not capped and source.est_frames and n < 0.9 * (source.est_frames - s.skip):
        result["notes"].append(f"decoded {n} frames{after_skip} but the file promises about "
                               f"{source.est_frames - s.skip}: truncated?")
    return result


# ------------------------------------------------------------------------------------------------
# §6 Building the dataset: workers, ordering, atomic output, Ctrl-C
# ------------------------------------------------------------------------------------------------
# The main process: probe all sources, pick the frame rate, convert, and move each finished video
# into the output in source order; then write dataset.json and rename the temporary output onto
# OUT. Everything temporary lives beside OUT (same filesystem, so the rename is atomic) and is
# removed in a `finally`, whatever stopped us: an error, Ctrl-C, or `kill` (main() turns SIGTERM
# into KeyboardInterrupt).

class _InlineExecutor:
    """Runs each job when it is submitted, in this process (--workers 1; easy to debug)."""

    def submit(self, fn, *args):
        future = concurrent.futures.Future()
        future.set_result(fn(*args))     # KeyboardInterrupt propagates from here, as it should
        return future

    def shutdown(self, wait=True, cancel_futures=False):
        pass


_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
_HAVE_SIGMASK = hasattr(signal, "pthread_sigmask")            # POSIX; Windows has no such signals


@contextlib.contextmanager
def _stop_signals_blocked():
    """Hold Ctrl-C and SIGTERM back (pending, not lost) while a worker process is started.

    A spawned worker takes a second to import numpy and Pillow before _init_worker can ignore
    Ctrl-C; a Ctrl-C to the terminal's group in that second used to kill it with a traceback. The
    signal mask is inherited across fork and exec, so a worker started inside this block is born
    with both signals blocked and unblocks them once its handlers are in place. (multiprocessing's
    own resource tracker is started the same way.)
    """
    if not _HAVE_SIGMASK or threading.current_thread() is not threading.main_thread():
        yield
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)   # a pending Ctrl-C lands here


class _WorkerPool(concurrent.futures.ProcessPoolExecutor):
    """The worker processes. With "spawn", a worker is started inside submit() when none is idle."""

    def submit(self, fn, /, *args, **kwargs):
        with _stop_signals_blocked():
            return super().submit(fn, *args, **kwargs)


def _run_in_order(pool, fn, jobs: list, on_result, window: int, on_wait=None) -> None:
    """Call on_result(fn(*job)) for every job, in job order, with at most `window` jobs in flight.

    Handing results over in order makes the output independent of which worker finishes first;
    the window bounds how many finished videos can wait in the staging folder.
    """
    pending, todo = collections.deque(), iter(jobs)
    while True:
        while len(pending) < window and (job := next(todo, None)) is not None:
            pending.append(pool.submit(fn, *job))
        if not pending:
            return
        while not pending[0].done():
            concurrent.futures.wait([pending[0]], timeout=0.1)
            if on_wait:
                on_wait()
        on_result(pending.popleft().result())


def _choose_fps(sources: list, fps: Optional[float], log) -> tuple:
    """One frame rate for the dataset -> (fps, kept sources, skipped (label, reason) pairs)."""
    if fps is not None:
        relabelled = [s.label for s in sources if s.fps is not None and abs(s.fps - fps) >= 0.01]
        if relabelled:
            log(f"note: --fps {fps:g} declared for {len(relabelled)} video(s) whose metadata says "
                f"otherwise (e.g. {relabelled[0]}); frames are kept one for one, not resampled")
        return fps, sources, []
    skipped = [(s.label, "the file does not say its frame rate: pass --fps")
               for s in sources if s.fps is None and s.kind != "frames"]
    sources = [s for s in sources if s.fps is not None or s.kind == "frames"]
    if any(s.kind == "frames" for s in sources):
        log(f"note: frame folders carry no frame rate; assuming {DEFAULT_FPS:g} fps (set it with --fps)")
        sources = [dataclasses.replace(s, fps=DEFAULT_FPS) if s.kind == "frames" else s for s in sources]
    if not sources:
        return DEFAULT_FPS, [], skipped
    votes = collections.Counter(round(s.fps, 2) for s in sources)     # 29.97 and 29.97003 agree
    best = max(votes, key=lambda k: (votes[k], k))                    # most videos; tie: higher fps
    chosen = next(s.fps for s in sources if round(s.fps, 2) == best)
    skipped += [(s.label, f"{s.fps:g} fps, but most videos here are {chosen:g} fps "
                          f"(pass --fps to keep all; frames are not resampled)")
                for s in sources if round(s.fps, 2) != best]
    return chosen, [s for s in sources if round(s.fps, 2) == best], skipped


def _check_settings(s: Settings, fps: Optional[float] = None, workers: Optional[int] = None) -> None:
    """Every setting against FLAG_RANGES (the Python API's counterpart of the parser's checks)."""
    if s.fmt not in ("jpg", "png"):
        raise PrepareError(f"--format must be jpg or png, not {s.fmt!r}")
    for flag, value in [("--resolution", s.resolution), ("--quality", s.quality), ("--clip-len", s.clip_len),
                        ("--skip", s.skip), ("--max-frames", s.max_frames), ("--min-frames", s.min_frames),
                        ("--fps", fps), ("--workers", workers)]:
        _check_flag(flag, value)
    if s.clip_len is not None and s.clip_len < s.min_frames:
        raise PrepareError(f"--clip-len {s.clip_len} is shorter than --min-frames {s.min_frames}")


def _check_out(out: str) -> tuple:
    """OUT -> (absolute OUT, is it a zip); refuses what we could not or should not write."""
    # A trailing "/" names a folder, a name ending in .zip a zip file: a contradiction, which must not
    # end in replacing the zip the user meant to write into (abspath drops the "/"; decide before).
    name = out.rstrip("/" + os.sep)
    if name != out and name.lower().endswith(".zip") and not os.path.isdir(name):
        what = (f"{name} is a file (without the '/', it is replaced)" if os.path.lexists(name) else
                "a name ending in .zip is written as a zip file (drop the '/' to write one)")
        raise PrepareError(f"{out}: a trailing '/' names a folder, but {what}")
    out = os.path.abspath(out)
    as_zip = out.lower().endswith(".zip")
    parent = os.path.dirname(out)
    blocker = next((p for p in _parents(parent) if os.path.exists(p) and not os.path.isdir(p)), None)
    if blocker is not None:
        raise PrepareError(f"cannot write {out}: {blocker} is a file, not a folder")
    if not os.path.isdir(parent):
        raise PrepareError(f"cannot write {out}: folder {parent} does not exist")
    if as_zip and os.path.isdir(out):
        raise PrepareError(f"cannot write {out}: it is a folder")
    if not as_zip and os.path.isdir(out):
        _remove_dead_partials(out)
    if not as_zip and os.path.isfile(out):
        raise PrepareError(f"{out} is a file: OUT is a .zip file or a folder (a new or an empty one)")
    if not as_zip and os.path.exists(out) and not (os.path.isdir(out) and not os.listdir(out)):
        raise PrepareError(f"{out} already exists (a folder output is never overwritten: remove it "
                           f"or name another)")
    return out, as_zip


def _remove_dead_partials(folder: str) -> None:
    """Remove folder/.partial-<pid> that a run killed while writing into this folder left (kill -9, a power
    cut): without it, the folder would no longer be empty. A live process's stays: it is still writing."""
    for entry in os.listdir(folder):
        pid = re.fullmatch(r"\.partial-(\d+)", entry)
        if pid is None or int(pid.group(1)) == os.getpid():
            continue
        try:
            os.kill(int(pid.group(1)), 0)                   # signal 0: only asks whether it exists
        except ProcessLookupError:
            shutil.rmtree(os.path.join(folder, entry), ignore_errors=True)
        except OSError:                                     # (EPERM: it exists, as another user)
            pass


def _parents(path: str) -> list:
    """path and the folders above it, nearest first: /a/b/c -> [/a/b/c, /a/b, /a, /]."""
    chain = [path]
    while os.path.dirname(chain[-1]) != chain[-1]:
        chain.append(os.path.dirname(chain[-1]))
    return chain


def _mount_point(path: str) -> str:
    """The mount point of the file system that holds path (/ at worst): names "the disk" in errors."""
    path = os.path.realpath(path)
    while not os.path.ismount(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def _write_error(out: str, e: OSError) -> PrepareError:
    """An OSError met while writing OUT or its temporary files -> the one-line error that says so."""
    folder = out if os.path.isdir(out) else os.path.dirname(out)    # an existing OUT folder is written into
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        mount = _mount_point(folder)
        where = mount if mount == os.path.realpath(folder) else f"{mount} (the file system of {folder})"
        kept = " (the older one is untouched)" if os.path.exists(out) else ""
        return PrepareError(f"no space left on {where}: {out} was not written{kept}, "
                            f"and the temporary files were removed")
    if e.errno == errno.EROFS:
        return PrepareError(f"cannot write {out}: {_mount_point(folder)} is a read-only file system")
    return PrepareError(f"cannot write {out}: {e.strerror or e}")


def _run_every_step(*steps) -> None:
    """Run every cleanup step, each on its own: one that fails (a full disk makes closing the zip
    raise) must not skip the ones after it. The error that brought us here is the one reported;
    a Ctrl-C during a step is raised again once every step has run."""
    interrupted = False
    for step in steps:
        try:
            step()
        except KeyboardInterrupt:
            interrupted = True
        except Exception:
            pass
    if interrupted:
        raise KeyboardInterrupt


def _remove_entries(folder: str, entries: list) -> None:
    """Remove these files and folders of folder (what a failed move up put into an empty OUT)."""
    for entry in entries:
        path = os.path.join(folder, entry)
        shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else os.remove(path)


def _no_usable_videos(src: str, skipped: list) -> PrepareError:
    if not skipped:
        return PrepareError(f"no usable videos in {src}: it holds no video, no frames and no folder")
    return PrepareError(f"no usable videos in {src}: {len(skipped)} skipped ({skipped[0][0]}: {skipped[0][1]})")


def _copy_into_zip(zf: zipfile.ZipFile, pack: str, video: dict, fmt: str) -> None:
    """Move a staged video into the zip as <name>/<i:06d>.<fmt>, then delete its pack file.

    Members are stored (JPEG and PNG do not compress further; a reader seeks straight to a frame)
    with a fixed timestamp, so the zip depends only on the data, not on when it was made.
    """
    count = 0
    for count, data in enumerate(read_pack(pack), 1):
        member = f"{video['name']}/{count - 1:06d}.{fmt}"
        zf.writestr(zipfile.ZipInfo(member, date_time=(1980, 1, 1, 0, 0, 0)), data)
    assert count == video["frames"], f"{pack} holds {count} frames, not {video['frames']}"
    os.remove(pack)


def _index_json(fps: float, s: Settings, videos: list) -> str:
    """dataset.json, one video per line: readable, greppable, and plain JSON."""
    head = json.dumps({"fps": float(fps), "resolution": s.resolution, "format": s.fmt})[:-1]
    return head + ', "videos": [\n' + ",\n".join(json.dumps(v) for v in videos) + "\n]}\n"


def _build(sources: list, skipped: list, out: str, settings: Settings, fps: Optional[float],
           workers: Optional[int], progress: bool, verbose: bool, origin: str = "the input") -> dict:
    """Probe, choose the frame rate, convert and write: the engine of prepare() and make_demo()."""
    global _progress_hook
    t_start, s = time.time(), settings
    log = (lambda msg: print(msg, flush=True)) if verbose else (lambda msg: None)
    bar_off = not progress or None        # tqdm: True = off; None = on, but only on a terminal
    _check_settings(s, fps, workers)
    out, as_zip = _check_out(out)
    # An existing (empty: _check_out refuses any other) OUT folder is written into, not replaced: it
    # may be a mount point, onto which no rename can go (EBUSY), and its disk is the one to fill.
    # The output is made in a hidden folder inside it, whose entries move up when complete.
    into = not as_zip and os.path.isdir(out)
    tmp = os.path.join(out, f".partial-{os.getpid()}") if into else f"{out}.partial-{os.getpid()}"
    stage = tmp + ".stage" if as_zip else tmp       # where workers put frames (see StagedVideo)
    moved, done = [], False                         # into: the entries already moved up into OUT
    workers = max(1, min(workers or os.cpu_count() or 1, len(sources)))
    pool, stop_event, counter, zip_file, zf = _InlineExecutor(), None, None, None, None
    try:
        os.makedirs(stage)                          # fail on a bad OUT now, before any decoding
        if as_zip:
            zip_file = open(tmp, "wb")
        if workers > 1:
            # "spawn" starts clean interpreters (no forked copies of our threads and open files)
            # and behaves the same on Linux, macOS and Windows.
            ctx = multiprocessing.get_context("spawn")
            with _stop_signals_blocked():
                stop_event, counter = ctx.Event(), ctx.Value("q", 0)
                pool = _WorkerPool(workers, mp_context=ctx, initializer=_init_worker,
                                   initargs=(stop_event, counter))

        # 1. Probe every source, in parallel (a frame folder means opening every image header).
        probed = []
        _run_in_order(pool, probe, [(src,) for src in sources], probed.append, window=4 * workers)
        skipped += [(src.label, reason) for src, (_, reason) in zip(sources, probed) if reason]
        fps, kept, fps_skipped = _choose_fps([p for p, _ in probed if p is not None], fps, log)
        skipped += fps_skipped
        if not kept:
            raise _no_usable_videos(origin, skipped)

        # 2. Convert, moving each finished video into the output in source order.
        zf = zipfile.ZipFile(zip_file, "w") if as_zip else None
        videos, notes = [], [f"{src.label}: {note}" for src in sources for note in src.notes]
        expected = sum(min(max((p.est_frames or 0) - s.skip, 0), s.max_frames or 1 << 62) for p in kept)
        bar = tqdm(total=expected or None, desc="converting", unit="frame", disable=bar_off, smoothing=0.05)
        _progress_hook = bar.update                 # --workers 1: convert() advances the bar itself

        def take(res):
            if res["skipped"]:
                skipped.append((res["source"], res["skipped"]))
            notes.extend(f"{res['source']}: {note}" for note in res["notes"])
            for video in res["videos"]:
                if zf is not None:
                    _copy_into_zip(zf, os.path.join(stage, video["name"] + ".pack"), video, s.fmt)
                videos.append(video)
            bar.set_postfix(videos=len(videos), refresh=False)

        def sync_bar():                             # workers: they count frames in shared memory
            if counter is not None:
                bar.update(counter.value - bar.n)

        _run_in_order(pool, convert, [(src, s, stage, as_zip) for src in kept], take,
                      window=2 * workers, on_wait=sync_bar)
        sync_bar()
        bar.close()
        if not videos:
            raise _no_usable_videos(origin, skipped)

        # 3. The index, written last, then the rename that makes OUT appear, complete.
        index = _index_json(fps, s, videos)
        if as_zip:
            zf.writestr(zipfile.ZipInfo("dataset.json", date_time=(1980, 1, 1, 0, 0, 0)), index)
            zf.close()
            zip_file.flush()
            os.fsync(zip_file.fileno())             # on disk before the rename makes it visible
            zip_file.close()
        else:
            with open(os.path.join(stage, "dataset.json"), "w") as f:
                f.write(index)
        pool.shutdown(wait=True)
        # An existing OUT zip is replaced by this one rename, so it is the old OUT or the new one,
        # never half of either; an existing empty folder gets its entries (a failure midway empties it
        # again, in the `finally`). Replacing is what a user expects of a rerun, but it must not go
        # unsaid: the summary line names it.
        replaced = os.path.lexists(out)
        if into:                                    # dataset.json last: OUT is a dataset only once whole
            for entry in sorted(os.listdir(tmp), key=lambda e: e == "dataset.json"):
                os.rename(os.path.join(tmp, entry), os.path.join(out, entry))
                moved.append(entry)
        else:
            os.replace(tmp, out)
        done = True
    except BrokenProcessPool:                       # a worker was killed (the OOM killer, kill -9)
        raise PrepareError("a worker process died (out of memory?); try fewer --workers") from None
    except OSError as e:                            # every read of SRC is guarded: this is OUT's disk
        raise _write_error(out, e) from None
    finally:
        # Whatever stopped us (done, an error, a full disk, Ctrl-C, SIGTERM): nothing temporary stays.
        # On success every step is a no-op except the shutdown. Each step runs even if one before
        # it fails: closing the zip on a full disk raises, and used to skip the removals after it.
        _progress_hook = None
        _run_every_step(
            lambda: stop_event is not None and stop_event.set(),        # workers stop at their next frame
            lambda: pool.shutdown(wait=True, cancel_futures=True),      # a 2nd Ctrl-C may cut this short
            lambda: zf is not None and zf.close(),                      # (writes the zip directory: may fail)
            lambda: zip_file is not None and zip_file.close(),
            lambda: shutil.rmtree(stage, ignore_errors=True),
            lambda: as_zip and os.path.lexists(tmp) and os.remove(tmp),
            lambda: done or _remove_entries(out, moved),                 # OUT empty again, as it was
        )

    frames = sum(v["frames"] for v in videos)
    size = os.path.getsize(out) if as_zip else sum(
        os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(out) for f in files)
    short = sum(v["frames"] < FVD_MIN_FRAMES for v in videos)
    if short:
        notes.append(f"{short} video(s) have fewer than {FVD_MIN_FRAMES} frames: FVD_16 ignores them")
    summary = {"out": out, "videos": len(videos), "frames": frames, "fps": float(fps),
               "resolution": s.resolution, "format": s.fmt, "bytes": size,
               "seconds": round(time.time() - t_start, 2),
               "skipped": [{"source": a, "reason": b} for a, b in skipped], "notes": notes,
               "replaced": replaced}
    encoding = f"jpg q{s.quality}" if s.fmt == "jpg" else "png"
    was = f" (replaced the existing {'' if as_zip else 'empty folder '}{os.path.basename(out)})" if replaced else ""
    log(f"wrote {out}: {len(videos)} video{'s' * (len(videos) != 1)}, {frames} frames of "
        f"{s.resolution}x{s.resolution} at {fps:g} fps ({encoding}), "
        f"{size / 2**20:.1f} MiB in {summary['seconds']:.1f} s{was}")
    for title, lines in [(f"skipped {len(skipped)}:", [f"{a}: {b}" for a, b in skipped]), ("notes:", notes)]:
        if lines:
            log(title)
            for line in lines:
                log(f"  {line}")
    return summary


def prepare(src: str, out: str, resolution: int = 256, *, clip_len: Optional[int] = None, skip: int = 0,
            max_frames: Optional[int] = None, min_frames: int = 3, fps: Optional[float] = None,
            fmt: str = "jpg", quality: int = 95, workers: Optional[int] = None, progress: bool = False,
            verbose: bool = True) -> dict:
    """Make a dataset from SRC (a video, a folder of videos, a folder of frame folders) -> summary.

    The summary: {"out", "videos", "frames", "fps", "resolution", "format", "bytes", "seconds",
    "skipped": [{"source", "reason"}], "notes": [...], "replaced": True if an existing OUT was}.
    Raises PrepareError when nothing usable is found, a setting is out of range or OUT cannot be
    written; in every failure OUT and the temporary files are absent (and an older OUT is untouched).
    """
    settings = Settings(resolution, fmt, quality, clip_len, skip, max_frames, min_frames)
    _check_settings(settings, fps, workers)         # every setting, then OUT, before SRC is read
    _check_out(out)
    sources, skipped = discover(src)
    names = unique_names([safe_name(os.path.splitext(s.label.rstrip("/"))[0] if s.kind != "frames"
                                    else s.label.rstrip("/")) for s in sources])
    sources = [dataclasses.replace(s, name=n) for s, n in zip(sources, names)]
    return _build(sources, skipped, out, settings, fps, workers, progress, verbose, origin=src)


def make_demo(out: str, resolution: int = 64, num_videos: int = 64, frames: int = 64, seed: int = 0, *,
              fmt: str = "jpg", quality: int = 95, workers: Optional[int] = None, progress: bool = False,
              verbose: bool = True) -> dict:
    """Write the procedural demo dataset (§4): video i is make_demo_video((seed, i), frames, resolution)."""
    for flag, value in [("--num-videos", num_videos), ("--frames", frames), ("--seed", seed)]:
        _check_flag(flag, value)
    settings = Settings(resolution, fmt, quality, min_frames=min(3, frames))
    _check_settings(settings, None, workers)
    _check_out(out)
    sources = [Source("demo", f"make_demo_video(seed=({seed}, {i}))", name=f"demo{i:05d}",
                      demo=((seed, i), frames, resolution), est_frames=frames) for i in range(num_videos)]
    return _build(sources, [], out, settings, None, workers, progress, verbose)


# ------------------------------------------------------------------------------------------------
# §7 Reading a dataset back, and the command line
# ------------------------------------------------------------------------------------------------

def read_video(dataset: str, name: str) -> np.ndarray:
    """Read one video of a dataset (zip or folder) -> uint8 [frames, R, R, 3]; for tests and checks.

    The whole of the reading side of the contract: dataset.json, then <name>/<i:06d>.<format>.
    """
    def read_file(member):
        with open(os.path.join(dataset, member), "rb") as f:
            return f.read()
    with contextlib.ExitStack() as stack:
        read = read_file if os.path.isdir(dataset) else stack.enter_context(zipfile.ZipFile(dataset)).read
        meta = json.loads(read("dataset.json"))
        video = next(v for v in meta["videos"] if v["name"] == name)
        frames = [Image.open(io.BytesIO(read(f"{name}/{i:06d}.{meta['format']}"))).convert("RGB")
                  for i in range(video["frames"])]
        return np.stack([np.asarray(f) for f in frames])


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad command line as ONE line, `prepare_data.py: error: ...`, exit
    status 2, without the usage block: the same shape as every other error of this tool."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


SRC_ONLY_FLAGS = ("clip_len", "skip", "max_frames", "min_frames", "fps")   # flags that shape SRC's videos
DEMO_ONLY_FLAGS = ("num_videos", "frames", "seed")                          # flags of --demo


def build_parser() -> argparse.ArgumentParser:
    # Mode-specific flags default to None, so that main() can refuse one given to the other mode
    # instead of ignoring it; the defaults named in the help are filled in by main().
    r = lambda flag: "{}..{}".format(*FLAG_RANGES[flag])
    p = OneLineParser(
        prog="prepare_data.py",
        description="Make a StyleGAN-V dataset: OUT.zip (or a folder OUT) holding dataset.json and\n"
                    "square RGB frames <video>/<frame:06d>.jpg. Frames are center-cropped to a square and\n"
                    "resized with Pillow's LANCZOS filter (antialiased), stored as JPEG q95 or PNG. FVD\n"
                    "moves with resizing and JPEG quality (paper Table 4): make real and generated\n"
                    "frames the same way.",
        epilog="examples:\n"
               "  prepare_data.py --demo demo.zip\n"
               "  prepare_data.py my_videos/ data.zip --resolution 128\n"
               "  prepare_data.py jellyfish.mp4 rj256.zip --resolution 256 --clip-len 512 --skip 150",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", nargs="?", metavar="SRC",
                   help="a video file, a folder of videos (mp4 avi mov mkv webm gif ...), or a folder of "
                        "frame folders (one folder of image frames per video: jpg, png, bmp, tif, webp, "
                        "ppm/pgm or any still format Pillow reads; sorted naturally by name)")
    p.add_argument("out", nargs="?", metavar="OUT", help="the dataset to write: OUT.zip, or a folder")
    p.add_argument("--resolution", type=flag_type("--resolution"), metavar="R", default=None,
                   help="output frames are R x R, center-cropped and Lanczos-resized; a power of two in "
                        f"{r('--resolution')} (default 256, the paper's; 64 with --demo)")
    p.add_argument("--clip-len", type=flag_type("--clip-len"), metavar="N", default=None,
                   help=f"slice each video into chunks of N frames ({r('--clip-len')}) named <video>_c0000, "
                        "...; a remainder shorter than N is dropped and reported (RainbowJelly: 512)")
    p.add_argument("--skip", type=flag_type("--skip"), metavar="N", default=None,
                   help=f"drop the first N frames of each video, {r('--skip')} (default 0; RainbowJelly: 150)")
    p.add_argument("--max-frames", type=flag_type("--max-frames"), metavar="N", default=None,
                   help=f"keep at most N frames of each video, after --skip ({r('--max-frames')})")
    p.add_argument("--min-frames", type=flag_type("--min-frames"), metavar="N", default=None,
                   help=f"skip videos with fewer frames, {r('--min-frames')} (default 3: one training clip "
                        "has k = 3 frames)")
    p.add_argument("--fps", type=flag_type("--fps"), metavar="FPS", default=None,
                   help="declare the frame rate, > 0 and <= {:g} (default: from the files' metadata, the most "
                        "common one wins and other files are skipped; 25 for frame folders); frames are "
                        "not resampled".format(FLAG_RANGES["--fps"][1]))
    p.add_argument("--format", dest="fmt", choices=["jpg", "png"], default="jpg",
                   help="jpg (quality 95, the paper's protocol) or png (lossless, larger)")
    p.add_argument("--quality", type=flag_type("--quality"), metavar="Q", default=None,
                   help=f"JPEG quality, {r('--quality')} (default 95; --format jpg only)")
    p.add_argument("--workers", type=flag_type("--workers"), metavar="N", default=None,
                   help=f"processes decoding in parallel, {r('--workers')} (default: all cores; 1 = no "
                        "subprocesses)")
    demo = p.add_argument_group("the embedded demo dataset (no SRC, no download)")
    demo.add_argument("--demo", action="store_true",
                      help="write 25 fps procedural videos of soft blobs moving smoothly: --demo OUT")
    demo.add_argument("--num-videos", type=flag_type("--num-videos"), metavar="N", default=None,
                      help=f"demo: number of videos, {r('--num-videos')} (default 64)")
    demo.add_argument("--frames", type=flag_type("--frames"), metavar="F", default=None,
                      help=f"demo: frames per video, {r('--frames')} (default 64, 2.6 s at 25 fps)")
    demo.add_argument("--seed", type=flag_type("--seed"), metavar="S", default=None,
                      help=f"demo: random seed, {r('--seed')} (default 0)")
    return p


def _flag_name(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def main(argv: Optional[list] = None) -> int:
    """The command line; returns the exit status (0 done, 1 error, 2 bad command line, 130 interrupted).

    The one way out for every failure: a single line on stderr, `prepare_data.py: error: ...`,
    naming the flag, the file or the folder, never a traceback; Ctrl-C and SIGTERM print
    `prepare_data.py: interrupted; nothing was written`. Flags are checked before anything is read.
    """
    parser = build_parser()
    prog = parser.prog

    def interrupt(signum, frame):                  # `kill` cleans up like Ctrl-C does
        raise KeyboardInterrupt
    in_main_thread = threading.current_thread() is threading.main_thread()
    old_handler = signal.signal(signal.SIGTERM, interrupt) if in_main_thread else None
    try:
        args = parser.parse_args(argv)             # a bad flag: one line and exit status 2, here
        if args.quality is not None and args.fmt != "jpg":
            parser.error(f"--quality applies to --format jpg only ({args.fmt} is lossless)")
        quality = 95 if args.quality is None else args.quality
        if args.demo:
            if args.src is None or args.out is not None:
                parser.error("--demo takes one path, OUT (e.g. --demo demo.zip)")
            given = [_flag_name(f) for f in SRC_ONLY_FLAGS if getattr(args, f) is not None]
            if given:
                parser.error(f"{given[0]} does not apply to --demo (it shapes the videos of SRC; the demo "
                             f"has {DEMO_FPS:g} fps videos of --frames frames)")
            make_demo(args.src, args.resolution or 64, 64 if args.num_videos is None else args.num_videos,
                      64 if args.frames is None else args.frames, args.seed or 0,
                      fmt=args.fmt, quality=quality, workers=args.workers, progress=True)
        else:
            if args.src is None or args.out is None:
                parser.error("need SRC and OUT (or --demo OUT)")
            given = [_flag_name(f) for f in DEMO_ONLY_FLAGS if getattr(args, f) is not None]
            if given:
                parser.error(f"{given[0]} applies to --demo only")
            prepare(args.src, args.out, args.resolution or 256, clip_len=args.clip_len, skip=args.skip or 0,
                    max_frames=args.max_frames, min_frames=3 if args.min_frames is None else args.min_frames,
                    fps=args.fps, fmt=args.fmt, quality=quality, workers=args.workers, progress=True)
    except PrepareError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; nothing was written", file=sys.stderr)
        return 130
    except OSError as e:                           # not expected (writes are PrepareErrors), but one line
        print(f"{prog}: error: {e.filename or 'input/output'}: {e.strerror or e}", file=sys.stderr)
        return 1
    except Exception as e:                         # a bug: still one line, and a non-zero status
        text = str(e).strip().splitlines()
        print(f"{prog}: error: unexpected {type(e).__name__}: {text[0] if text else ''} "
              f"(a bug in prepare_data.py, please report it)", file=sys.stderr)
        return 1
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, old_handler)
    return 0


if __name__ == "__main__":
    sys.exit(main())
