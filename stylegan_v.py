"""StyleGAN-V in one readable file: a continuous-time video GAN you can read, train and sample from.

StyleGAN-V (Skorokhodov, Tulyakov, Elhoseiny, CVPR 2022, arXiv:2112.14683 v3: the equation, section and
figure numbers below are that version's; StyleGAN2's equations are cited as "SG2 Eq N") treats a video as
a function x(t), continuous in time. Its generator is StyleGAN2 with one change: a *motion code* v_t,
made from a short noise sequence by a padding-less conv1d network and an *acyclic positional embedding*,
is concatenated to the constant 4x4 input. Frames are rendered independently, so frame t = 1 hour costs
what frame t = 0 costs. Its discriminator sees k = 3 frames of a clip (sparse training, Sec 3.3) and is
told the time gaps between them through a hypernetwork that modulates the first conv of every block.

Contents, in the order the data flows (each section behind a `# ---` banner):
    §1 Config, presets (Appx B)       §6 Synthesis, Generator (Fig 5)     §10 Video-consistent ADA (Appx B)
    §2 Primitives (StyleGAN2)         §7 Discriminator (Sec 3.2, Fig 6)   §11 Dataset and real clips
    §3 ModConv2d (SG2 Eq 1-3)         §8 Sparse clip times (Sec 3.3)      §12 Training loop (Sec 4.1)
    §4 Content mapping F_c (Sec 3.1)  §9 Losses, R1 (Appx B.1)            §13 Rendering any t, sampling (Sec 4.3),
    §5 Motion: F_m, Eq 1-6 (Appx B.3)                                         projecting a real clip (Fig 2)
    Appendix A the fused ModConv2d CUDA kernel; B the authors' release: its architecture, its snapshots read
    safely; C bench, doctor, figures, plot; D plumbing: checks at the door, crash-safe files, checkpoints, a
    run's start and log, signals, the run lock, the commands (main, at the end), the flags, the one error path.
§11-§13 call Appendix D's names at run time; §1 and §6-§7 Appendix B's variants when Config.arch is 'release'.

Shapes: B videos, k frames per clip, N = B*k frames, T frames of a rendered clip, C channels, H x W pixels,
D motion-token dim, L motion tokens, A anchors. Time t: in *frames of the training data* (25 = 1 s at 25 fps).

Launch (more in the README):
    python prepare_data.py --demo demo.zip && python stylegan_v.py train --data demo.zip  # a CPU, minutes
    python stylegan_v.py train --data ffs.zip --gpus 4          # the paper's setting; or under torchrun
    python stylegan_v.py sample --ckpt runs/ffs --seconds 3600 --out hour.mp4

Deviations: the paper where it says something, the authors' release (github.com/universome/stylegan-v)
where it is silent, the release's architecture exactly as `Config.arch = 'release'` (Appendix B). Each
is commented at its line and listed in the README's table. G has no per-pixel noise inputs (the release
turns them off): a frame must be a function of (z^c, z^m, t) alone to be addressable (§13).
"""

from __future__ import annotations

import argparse, contextlib, dataclasses, errno, fcntl, functools, hashlib, importlib, io, itertools, json, logging
import math, os, pickle, re, resource, shlex, shutil, signal, subprocess, sys, tempfile, time, warnings, zipfile
from pathlib import Path
from typing import Optional

if __name__ == "__main__":   # Ctrl-C or kill while torch loads (seconds; its imports may swallow a KeyboardInterrupt)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: (sys.stderr.write("stylegan_v.py: interrupted\n"), os._exit(130)))

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

# ------------------------------------------------------------------------------------------------
# §1 Config and presets (Appx B, and the authors' release where the paper gives no number)

class UserError(Exception):
    """Bad input from the user: the CLI prints the one-line message, never a traceback."""

@dataclasses.dataclass
class Config:
    """Everything that defines a model and a training run. Saved into every checkpoint."""

    preset: str = "tiny"
    arch: str = "paper"           # 'paper' = this file's reading of the paper; 'release' = the authors'
                                  # release, exactly (to load their checkpoints: Appendix B)
    # -- data --
    resolution: int = 64          # frame size H = W
    fps: float = 25.0             # frame rate of the training data: the time unit of t
    # -- generator (Sec 3.1, Appx B) --
    z_dim: int = 512              # content noise z^c                                  (Appx B: 512)
    w_dim: int = 512              # content code w = F_c(z^c)                          (Appx B: 512)
    motion_dim: int = 512         # motion noise z^m, motion codes u_t and v_t         (Appx B: 512)
    mapping_layers: int = 2       # depth of F_c                                       (release: 2)
    channel_base: int = 16384     # channels at resolution r = min(base / r, max)     (fmaps 0.5)
    channel_max: int = 512
    motion_delta_z: int = 16      # delta^z: frames between motion-noise tokens        (Sec 4.1: 16)
    motion_kernel: int = 11       # F_m conv1d kernel size, no padding                 (Appx B: 11)
    motion_layers: int = 2        # F_m depth -> n anchors need n + 2*(11-1) = n + 20 tokens
    period_min: float = 8.0       # omega_min of Eq 6, in frames (Appx B.3: 2^3; Appx A.1 implies 2^4)
    period_max: float = 1024.0    # omega_max of Eq 6, in frames                       (Appx B: 2^10)
    time_enc_dim: int = 256       # arch 'release' only: waves of its embedding (Appendix B)
    num_fp16_res: int = 4         # fp16 in the top 4 resolutions, on CUDA only        (StyleGAN2)
    amp_dtype: str = "auto"       # dtype of those layers: 'auto' = float16 on CUDA, float32 on CPU;
                                  # 'float16' or 'bfloat16' on any device (bfloat16 runs them on a CPU)
    conv_clamp: Optional[float] = 256.0   # clamp every conv's output to +-256 (release, StyleGAN2-ADA); None: off
    # -- discriminator (Sec 3.2, Fig 6) --
    d_channel_base: int = 16384
    d_channel_max: int = 512
    d_concat_res: int = 16        # frames are merged channel-wise at 16x16            (Sec 3.2)
    d_time_dim: int = 256         # d: size of p(delta_i), one per time gap            (release: 256)
    d_cond: str = "hyper"         # 'hyper' = paper (ModConv + projection); 'concat' = projection only
    d_frame_div: int = 1          # each frame's channels / this where frames meet     (Sec 3.2: 1)
    mbstd_group: int = 4          # minibatch-stddev group size                        (StyleGAN2)
    mbstd_strided: bool = False   # StyleGAN2's strided groups; False: contiguous ones (§7)
    # -- training (Sec 3.3, 4.1, Appx B) --
    batch: int = 64               # videos per step, over all processes                (release: 64)
    frames_per_clip: int = 3      # k                                                  (Sec 3.3: 3)
    max_span: int = 32            # t_k - t_1 ~ U[k-1, 32]                             (Sec 3.3)
    span_dist: str = "uniform"    # 'uniform' = U[k-1, max_span] (paper); 'release' = {2, 4, ..., 32}
    max_time: int = 1024          # T: largest time position seen in training          (Sec 3.3)
    lr: float = -1.0              # Adam, equalized lr; < 0 means the release's 0.0025 (0.002 from 1024^2)
    r1_gamma: float = -1.0        # R1 weight; < 0 means StyleGAN2's 0.0002*res^2/batch (0.2 @ 256)
    r1_interval: int = 16         # lazy R1 every 16 D steps                           (StyleGAN2)
    g_reg_interval: int = 4       # G's Adam as if lazily regularized every 4 steps    (release: lr 0.002)
    ema_kimg: float = 20.0        # G_ema half-life in thousand videos at batch 64, scaled with the batch
    ema_rampup: Optional[float] = None   # G_ema half-life <= rampup * videos so far (release: None)
    aug: str = "ada"              # 'ada' | 'fixed' | 'none'
    aug_p: float = 0.0            # initial (ada) or constant (fixed) augmentation probability
    ada_target: float = 0.6       # target E[sign D(x_real)]                           (ADA)
    ada_kimg: float = 100.0       # p can move 0 -> 1 in this many thousand videos     (release 100)
    mirror: bool = True           # x-flip whole videos as data augmentation           (release: on)
    # -- the run's length and reports (a resumed run keeps them, as every field; flags given on top) --
    kimg: float = 25000.0         # train until D has seen this many thousand real frames (Sec 4.1's 256^2: ~23 M)
    snap: Optional[float] = None  # a checkpoint + previews every this many kimg; None: min(200, kimg / 5)
    tick: float = 1.0             # a line in log.jsonl every this many kimg
    metrics: tuple = ()           # FVDs at each snapshot: 'fvd16', 'fvd128' (Sec 4, Appx C: fvd.py)
    metric_videos: Optional[int] = None   # videos a side per metric; None: the paper's 2048 on a GPU, 64 on a CPU

    def channels(self, res: int) -> int:
        return min(self.channel_base // res, self.channel_max)

    @property
    def v_dim(self) -> int:
        """Channels of the motion code v_t tiled onto the 4x4 constant (Fig 5)."""
        return ARCH_VARIANTS[self.arch].get("v_dim", lambda cfg: cfg.motion_dim)(self)

    def d_channels(self, res: int) -> int:
        return min(self.d_channel_base // res, self.d_channel_max)

    def resolved(self, device="cpu") -> "Config":
        """lr, r1_gamma < 0 and snap, metric_videos None replaced by the 'auto' values their comments give (when a run
        starts: a resumed one, on another device or to another kimg, gets them anew)."""
        auto = dict(lr=0.002 if self.resolution >= 1024 else 0.0025, snap=min(200.0, self.kimg / 5),
                    r1_gamma=0.0002 * self.resolution ** 2 / self.batch,
                    metric_videos=2048 if torch.device(device).type == "cuda" else 64)
        return dataclasses.replace(self, **{k: v for k, v in auto.items() if getattr(self, k) is None or
                                            getattr(self, k) < 0})

AMP_DTYPES = {"auto": None, "float16": torch.float16, "bfloat16": torch.bfloat16}   # Config.amp_dtype's choices

# The authors' release differs from the paper in a few places. Its variants (the motion embedding, D's
# time encoder, its settings) live beside its snapshot importer (Appendix B) and register here, so the
# model below reads as the paper alone; Config.arch picks one, once, where the networks are built.
ARCH_VARIANTS: dict = {"paper": {}}

# The paper's settings and a CPU-sized one. Resolution and fps are overwritten by the dataset.
PRESETS = {
    # FaceForensics 256^2: delta^z = 16 (Sec 4.1), periods 2^3 ... 2^10 frames (Appx B.3).
    "ffs": dict(resolution=256),
    # SkyTimelapse 256^2: slow motion, so sparse tokens (delta^z = 256, Sec 4.1), omega_min = 2^8 (Appx B.3).
    "sky": dict(resolution=256, motion_delta_z=256, period_min=256.0),
    # MEAD 1024^2: StyleGAN2's full-width network at 1024^2 (fmaps 1.0), 30 fps.
    "mead": dict(resolution=1024, fps=30.0, channel_base=32768, d_channel_base=32768),
    # tiny: narrow, 64^2, short periods -- trains visibly on a 2-core CPU in minutes (tuned on 30-minute
    # CPU runs): batch 8 = twice the updates per kimg; R1 gamma 3 per frame keeps the small D from winning
    # outright; ADA's p moves 5x faster (ada_kimg 20), as a 50-clip dataset is memorized within minutes.
    "tiny": dict(resolution=64, z_dim=128, w_dim=128, motion_dim=128, channel_base=2048,
                 channel_max=128, d_channel_base=2048, d_channel_max=128, d_time_dim=64,
                 motion_delta_z=8, period_min=4.0, period_max=128.0, batch=8, max_span=16,
                 max_time=256, r1_gamma=3.0, ada_kimg=20.0, ema_rampup=0.05, kimg=200.0),
}

def make_config(preset: str = "tiny", **overrides) -> Config:
    """Config from a named preset plus overrides, every field checked (check_config, Appendix D)."""
    arch = check_config(dict(preset=preset, arch=overrides.get("arch", "paper"))).arch   # (both are looked up below)
    variant = ARCH_VARIANTS[arch]                                        # an arch's own settings (Appendix B)
    defaults = variant["defaults"]({**PRESETS[preset], **overrides}) if "defaults" in variant else {}
    return check_config({**PRESETS[preset], **defaults, **overrides, **variant.get("fixed", {}), "preset": preset})

# ------------------------------------------------------------------------------------------------
# §2 Primitives (StyleGAN2): equalized learning rate, bias + activation, FIR resampling
# Equalized learning rate (Karras et al. 2018): weights are stored as N(0, 1) / lr_mul and scaled
# by lr_mul / sqrt(fan_in) at run time, so Adam sees every parameter at the same scale and the
# per-layer learning rate is effectively lr * lr_mul.

ACT_GAIN = {"linear": 1.0, "lrelu": math.sqrt(2.0)}  # keeps the activations' variance at ~1
LRELU_SLOPE = 0.2                                     # StyleGAN's leaky ReLU slope for z < 0

def bias_act_ref(x: torch.Tensor, b: Optional[torch.Tensor], act: str = "linear",
                 gain: Optional[float] = None, clamp: Optional[float] = None) -> torch.Tensor:
    """y = clamp(act(x + b) * gain, -clamp, clamp); b is per channel (dim 1); gain defaults to ACT_GAIN[act]."""
    if b is not None:
        x = x + b.to(x.dtype).reshape([1, -1] + [1] * (x.ndim - 2))
    if act == "lrelu":
        x = F.leaky_relu(x, LRELU_SLOPE)
    x = x * (ACT_GAIN[act] if gain is None else gain)
    return x if clamp is None else x.clamp(-clamp, clamp)

class FC(nn.Module):
    """Fully connected layer with equalized learning rate (bias=False: a purely linear map, as Eq 3's)."""

    def __init__(self, in_dim: int, out_dim: int, act: str = "linear", lr_mul: float = 1.0,
                 bias_init: float = 0.0, bias: bool = True):
        super().__init__()
        self.act = act
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full([out_dim], float(bias_init))) if bias else None
        self.weight_gain, self.bias_gain = lr_mul / math.sqrt(in_dim), lr_mul

    def forward(self, x: torch.Tensor) -> torch.Tensor:         # [*, in] -> [*, out]
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias.to(x.dtype) * self.bias_gain if self.bias is not None else None
        lead, x = x.shape[:-1], x.reshape(-1, x.shape[-1])       # [M, in]
        if self.act == "linear" and b is not None:               # addmm: bias and matmul in one kernel
            return torch.addmm(b, x, w.t()).reshape(*lead, -1)
        return bias_act_ref(x @ w.t(), b, self.act).reshape(*lead, -1)

# FIR resampling with the [1, 3, 3, 1] filter (StyleGAN2): up-sampling inserts zeros and low-pass
# filters them away; down-sampling low-pass filters, then drops every other pixel. The 2-D filter is
# the outer product of the 1-D one, normalized to sum to 1 (times up^2 when up-sampling, so the
# zero-stuffed image keeps its brightness).

def fir_filter(taps=(1, 3, 3, 1)) -> torch.Tensor:
    f = torch.tensor(taps, dtype=torch.float32)
    f = f[:, None] * f[None, :]                                 # [4, 4]
    return f / f.sum()

def fir2d(x: torch.Tensor, f: torch.Tensor, pad: tuple, gain: float = 1.0) -> torch.Tensor:
    """Depthwise 2-D convolution of every channel with f after zero padding (left, right, top, bottom)."""
    x = F.pad(x, pad)
    # conv2d correlates; flipping f makes it a true convolution (the same for this symmetric filter,
    # but exact for any other). groups=C: every channel is filtered on its own, with the same f.
    w = (f * gain).to(x.dtype).flip([0, 1])[None, None].repeat(x.shape[1], 1, 1, 1)  # [C, 1, fh, fw]
    return F.conv2d(x, w, groups=x.shape[1])

def upsample2x(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """FIR up-sampling x2 (G's RGB skip connections): zeros between the pixels, then the low-pass."""
    N, C, H, W = x.shape
    x = F.pad(x.reshape(N, C, H, 1, W, 1), [0, 1, 0, 0, 0, 1])  # [N, C, H, 2, W, 2], the new pixels 0
    return fir2d(x.reshape(N, C, 2 * H, 2 * W), f, (2, 1, 2, 1), gain=4.0)  # [N, C, 2H, 2W]

# ------------------------------------------------------------------------------------------------
# §3 ModConv2d: modulation and demodulation around one conv, the math (SG2 Eq 1-3)
# A modulated convolution (ModConv2d) is three things around one convolution:
#
#     x' = x · s[n, i]                              modulate the input channels by the style      (SG2 Eq 1)
#     y  = conv2d(x', w)                            the convolution itself: left to cuDNN
#     d  = 1 / sqrt(Σ_{i,k} (s[n,i] · w[o,i,k])² + ε)  demodulation coefficients             (SG2 Eq 3)
#     out = clamp(act(y · d[n,o] + b[o]) · gain, ±clamp)    the "epilogue"
#
# Demodulating the *output* instead of scaling the weights is the same math (y is linear in w), and
# it lets every sample share one weight tensor, so cuDNN runs one ordinary conv for the whole batch.
# d is one small matmul. The epilogue is memory-bound (five elementwise passes), so it has two
# implementations behind one `impl=` switch: the pure-PyTorch reference below (THE definition, used on
# CPU and as fallback) and a fused CUDA kernel (Appendix A), compiled on first use, never at import.

USE_CUSTOM_OPS = True     # `--no-custom-ops` sets it False: the reference everywhere (rules the kernel out)

def demod_coefficients(weight, s, eps=1e-8):
    """Demodulation coefficients of SG2 Eq 3, without building per-sample weights.

    weight: [O, I, kh, kw] (equalized-lr gain already applied), s: [N, I] styles -> d: [N, O].
    Σ_{i,k} (s_i w_oik)² = Σ_i s_i² (Σ_k w_oik²), so one [N, I] @ [I, O] matmul replaces the
    [N, O, I, kh, kw] tensor of the naive formula."""
    wsq = weight.square().sum(dim=[2, 3])           # [O, I]         Σ_k w[o,i,k]² over the kh·kw taps
    return (s.square() @ wsq.t() + eps).rsqrt()     # [N, I]@[I, O] -> [N, O]   d = 1/sqrt(Σ_i s² wsq + ε)

def fused_epilogue_ref(y, d=None, bias=None, act='linear', gain=None, clamp=None):
    """The epilogue above, which the CUDA kernel must reproduce. y: [N, O, H, W] conv output; d: [N, O] or None;
    bias: [O] or None; gain None: the activation's (√2 for lrelu); clamp: StyleGAN2's conv_clamp (keeps fp16
    finite). All in y's dtype, as StyleGAN2: fp16 layers stay fp16. (No per-pixel noise: see the header.)"""
    x = y if d is None else y * d.to(y.dtype)[:, :, None, None]   # [N, O, H, W]  demodulate (SG2 Eq 3)
    return bias_act_ref(x, bias, act, gain, clamp)                # + b[o], act, · gain, clamp

def fused_epilogue(y, d=None, bias=None, act='linear', gain=None, clamp=None, impl=None):
    """The dispatcher ModConv2d and Conv2d call. impl: 'cuda' | 'ref' | None: Appendix A's `_resolve_impl` decides
    (on a GPU it loads the kernel and trusts it only after its self-check)."""
    if _resolve_impl(impl, y) == 'cuda':                      # (the kernel takes d and bias in fp32, fp64 for fp64)
        d, bias = (None if t is None else t.to(torch.promote_types(y.dtype, torch.float32)) for t in (d, bias))
        return _FusedEpilogue.apply(y, d, bias, act, gain, clamp)
    return fused_epilogue_ref(y, d, bias, act, gain, clamp)

class Conv2d(nn.Module):
    """Plain conv with equalized lr, optional FIR down-sampling, bias + activation (D's layers; ModConv2d's base)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, act: str = "lrelu", down: bool = False,
                 bias: bool = True, conv_clamp: Optional[float] = None):
        super().__init__()
        self.act, self.down, self.conv_clamp, self.kernel = act, down, conv_clamp, kernel
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_ch)) if bias else None
        self.weight_gain = 1 / math.sqrt(in_ch * kernel * kernel)
        self.register_buffer("fir", fir_filter(), persistent=False)

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        w = (self.weight * self.weight_gain).to(x.dtype)
        if self.down and self.kernel > 1:   # blur, then a strided conv (no padding): H -> H/2
            x = F.conv2d(fir2d(x, self.fir, (2, 2, 2, 2)), w, stride=2)
        elif self.down:                     # 1x1: FIR down-sample (blur, drop every other pixel), then the conv
            x = F.conv2d(fir2d(x, self.fir, (1, 1, 1, 1))[:, :, ::2, ::2], w)
        else:
            x = F.conv2d(x, w, padding=self.kernel // 2)
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return fused_epilogue(x, None, self.bias, self.act, ACT_GAIN[self.act] * gain, clamp)

class ModConv2d(Conv2d):
    """Conv2d whose weight is modulated per sample by a style vector (G's layers and D's first convs): x [N, I, H, W],
    styles [N, I] -> [N, O, H', W']; up=True: H' = 2H (StyleGAN2's up-sampling conv: transposed, then FIR low-pass)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3, up: bool = False,
                 demodulate: bool = True, act: str = "lrelu", conv_clamp: Optional[float] = None):
        super().__init__(in_ch, out_ch, kernel, act, conv_clamp=conv_clamp)   # weight, bias, gain, FIR: Conv2d's
        self.in_ch, self.up, self.demodulate = in_ch, up, demodulate

    def forward(self, x: torch.Tensor, styles: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        w = self.weight                                          # [O, I, k, k], fp32
        s = styles.float() if styles.dtype == torch.float16 else styles   # [N, I], fp32 (or fp64 in tests)
        # Where the equalized-lr gain 1/sqrt(I k^2) goes, as in StyleGAN2 (same math, same rounding):
        # a demodulated conv is invariant to the scale of w, so it uses the raw weight; without
        # demodulation (ToRGB) the gain multiplies the styles.
        if not self.demodulate:
            s = s * self.weight_gain
        if x.dtype == torch.float16 and self.demodulate:
            # fp16 pre-normalization (StyleGAN2): demodulation makes the result invariant to the
            # scale of w and s, so shrink both to ~1 first; x * s then cannot overflow fp16.
            w = w * (self.weight_gain / w.norm(float("inf"), dim=[1, 2, 3], keepdim=True))
            s = s / s.norm(float("inf"), dim=1, keepdim=True)
        d = demod_coefficients(w, s) if self.demodulate else None  # [N, O]
        x = x * s.to(x.dtype)[:, :, None, None]                  # modulate: [N, I, H, W]
        if self.up:
            # Transposed conv with stride 2 == zero-stuffing then a 3x3 *convolution* (flipped
            # kernel), at a quarter of the cost. StyleGAN2 up-samples with a true convolution too
            # (flip_weight=False) while its other layers correlate, so its weights load unchanged.
            y = F.conv_transpose2d(x, w.to(x.dtype).transpose(0, 1), stride=2)  # [N, O, 2H+1, 2W+1]
            y = fir2d(y, self.fir, (1, 1, 1, 1), gain=4.0)       # [N, O, 2H, 2W]
        else:
            y = F.conv2d(x, w.to(x.dtype), padding=self.kernel // 2)   # [N, O, H, W]
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None   # scaled with the gain (StyleGAN2)
        return fused_epilogue(y, d, self.bias, self.act, ACT_GAIN[self.act] * gain, clamp)

# ------------------------------------------------------------------------------------------------
# §4 Content mapping network F_c: z^c -> w (Sec 3.1; StyleGAN2's mapping network)

class MappingNetwork(nn.Module):
    """w = F_c(z^c): z normalized to unit 2nd moment, then an MLP with lr_mul 0.01 (StyleGAN): it learns 100x
    slower than S, so the space of w does not drift under the layers that read it. w_avg, a running mean of w
    (beta 0.995), serves the truncation trick w_avg + psi (w - w_avg)."""

    def __init__(self, z_dim: int, w_dim: int, num_layers: int = 2, lr_mul: float = 0.01, w_avg_beta: float = 0.995):
        super().__init__()
        dims = [z_dim] + [w_dim] * num_layers
        self.layers = nn.Sequential(*(FC(a, b, act="lrelu", lr_mul=lr_mul) for a, b in zip(dims, dims[1:])))
        self.w_avg_beta = w_avg_beta
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: torch.Tensor, truncation: float = 1.0, update_w_avg: bool = False) -> torch.Tensor:
        # z / rms(z): every z lies near the sphere of radius sqrt(z_dim), so the MLP never sees the
        # rare long vectors of a Gaussian (StyleGAN's "normalize 2nd moment").
        x = self.layers(z * (z.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt())   # [B, z] -> [B, w]
        if update_w_avg:    # running mean of w, for truncation at sampling time
            self.w_avg.copy_(x.detach().mean(0).lerp(self.w_avg, self.w_avg_beta))
        return x if truncation == 1 else self.w_avg.lerp(x, truncation)

# ------------------------------------------------------------------------------------------------
# §5 Motion: F_m and the acyclic positional embedding (Sec 3.1, Eq 1-6, Appx B.3)
# A video's motion is driven by a sequence of noise tokens z^m_j placed every delta^z frames at
# times t_j = j * delta^z (Sec 3.1). F_m, two padding-less conv1d layers with kernel 11, turns them
# into motion codes u_j. Without padding, u_j sees tokens j-20 ... j (the "previous" tokens of
# Appx B), so n anchors need n + 20 tokens. A frame at t in [t_j, t_{j+1}) needs u_j and u_{j+1},
# i.e. tokens j-20 ... j+1: 22 tokens, wherever t is.
#
#   tokens z^m    z_{j-20} ......... z_{j-1}   z_j    z_{j+1}            one every delta^z frames, N(0, I)
#                 \_______ F_m: 2 conv1d, kernel 11, no padding ________/
#   anchors u                                  u_j    u_{j+1}            -> alpha, omega, rho, a each (Eq 3, 5)
#   time      ---------------------------------t_j-t--t_{j+1}---------> tau = (t - t_j) / delta^z in [0, 1)
#   v_t = v~(t) - lerp(v~(t_j), v~(t_{j+1}), tau) + lerp(a_j, a_{j+1}, tau)    (Eq 4; v~: u_j's waves, Eq 1-2)
#   so v_{t_j} = a_j exactly: the segments meet at every anchor, and v_t is continuous for any t.

def linear_period_scales(dim: int, period_min: float, period_max: float) -> torch.Tensor:
    """Eq 6: sigma_i = 2 pi / (omega_min + (i / N) (omega_max - omega_min)), periods in frames.

    Linearly spaced *periods* (not exponentially spaced frequencies) make the joint cycle of all channels (their
    least common multiple) enormous, which keeps v_t from looping (Fig 9). (Appx B.3's prose says it scales "the
    amplitudes weight matrix"; Eq 5 and the release scale the frequencies, as we do.)"""
    i = torch.arange(dim, dtype=torch.float64)
    return 2 * math.pi / (period_min + (i / dim) * (period_max - period_min))   # [D], rad/frame

class MotionMappingNetwork(nn.Module):
    """F_m and the waves: tokens z^m [B, L, D] -> per-anchor (alpha, omega, rho, a), each [B, L-20, D].

    F_m's conv1d layers: leaky ReLU, equalized lr with the release's lr_mul 0.01, and (as the release; the paper
    does not say) no sqrt(2) gain. Then for every anchor u_j (Eq 3, 5):
        alpha_j = W_alpha u_j,   omega_j = (tanh(W_omega u_j) + 1) * sigma,   rho_j = W_rho u_j,   a_j = W_a u_j.
    The tanh bounds omega to (0, 2 sigma): periods never shorter than omega_min / 2 frames, which
    stops the temporal aliasing of unbounded frequencies (Appx B.3); its mean is the Eq 6 scale."""

    def __init__(self, cfg: Config):
        super().__init__()
        D, k = cfg.motion_dim, cfg.motion_kernel
        self.context = cfg.motion_layers * (k - 1)               # 20: tokens lost to "valid" convs
        self.lr_mul = 0.01
        self.conv_weights = nn.ParameterList(
            nn.Parameter(torch.randn(D, D, k) / self.lr_mul) for _ in range(cfg.motion_layers))
        self.conv_biases = nn.ParameterList(nn.Parameter(torch.zeros(D)) for _ in range(cfg.motion_layers))
        # Eq 3 is linear: no biases. (The release drops them too, "to prevent motion mode collapse": a
        # bias would give every video the same share of its waves, whatever its motion noise.)
        self.W_alpha, self.W_omega, self.W_rho, self.W_a = (FC(D, D, bias=False) for _ in range(4))
        self.register_buffer("sigma", linear_period_scales(D, cfg.period_min, cfg.period_max).float())

    def forward(self, tokens: torch.Tensor):
        x = tokens.transpose(1, 2)                               # [B, L, D] -> [B, D, L]
        for w, b in zip(self.conv_weights, self.conv_biases):
            gain = self.lr_mul / math.sqrt(w.shape[1] * w.shape[2])   # 1 / sqrt(fan_in = D * 11)
            x = F.conv1d(x, w * gain)                            # [B, D, L] -> [B, D, L - 10]
            x = bias_act_ref(x, b * self.lr_mul, "lrelu", gain=1.0)   # no sqrt(2) gain (release)
        return self.wave_params(x.transpose(1, 2))               # u [B, A, D], A = L - 20

    def wave_params(self, u: torch.Tensor):
        """Motion codes u [B, A, D] -> the waves of Eq 3 and 5: alpha, omega, rho, a, each [B, A, D]."""
        omega = (torch.tanh(self.W_omega(u)) + 1) * self.sigma   # Eq 5 with the Eq 6 scales
        return self.W_alpha(u), omega, self.W_rho(u), self.W_a(u)   # Eq 3; a: the alignment vectors of Eq 4

    wave = staticmethod(lambda alpha, phase: alpha * torch.sin(phase))   # Eq 1: one sine per channel

def acyclic_embedding(alpha, omega, rho, a, j_left: torch.Tensor, t: torch.Tensor, delta_z: float,
                      wave=MotionMappingNetwork.wave):
    """v_t of Eq 2 and 4 for frames at times t, given the parameters of their anchors.

    alpha, omega, rho, a : [N, 2, D]  parameters of the left anchor l = t_j and the right one r = t_{j+1}
    j_left               : [N]        index j of the left anchor
    t                    : [N]        frame times (float64, in frames), t_j <= t < t_{j+1}
    wave                 :            Eq 1's wave of (alpha, phase): the motion network's `wave`
    returns v_t          : [N, D]

    The raw embedding (Eq 2) uses the LEFT anchor's waves everywhere (as the authors' release does):
        v~(s) = alpha_l * sin(omega_l * s + rho_l)
    and Eq 4 stitches the segments together so that v is continuous across anchors:
        v_t = v~(t) - lerp(v~(l), v~(r), tau) + lerp(a_l, a_r, tau),   tau = (t - l) / delta^z.
    At t = l and t = r the first two terms cancel and v equals the alignment vector a = W_a u.
    The phases omega * t are formed in float64: at t = 90,000 frames (an hour at 25 fps) float32
    would lose ~0.01 rad of phase, float64 keeps ~1e-11."""
    l = j_left.double() * delta_z                                # [N] left anchor time
    r = l + delta_z                                              # [N] right anchor time
    tau = ((t - l) / delta_z).float()[:, None]                   # [N, 1] in [0, 1)
    al, om, rh = alpha[:, 0].double(), omega[:, 0].double(), rho[:, 0].double()   # [N, D]
    # Eq 1-2 with the left anchor's waves, at t and at both anchors: 3 x [N, D]
    v_tilde, v_tilde_l, v_tilde_r = (wave(al, om * s[:, None] + rh).float() for s in (t, l, r))
    return v_tilde - torch.lerp(v_tilde_l, v_tilde_r, tau) + torch.lerp(a[:, 0], a[:, 1], tau)  # Eq 4

# ------------------------------------------------------------------------------------------------
# §6 Synthesis network S and the Generator (Fig 5; StyleGAN2 'skip' architecture)

class ToRGB(nn.Module):
    """1x1 modulated conv to RGB, no demodulation (StyleGAN2). Nothing normalizes the output, so the
    equalized-lr gain 1/sqrt(C) is applied once, to the styles (ModConv2d): RGB std ~1.4 at init, as the release."""

    def __init__(self, w_dim: int, in_ch: int, conv_clamp: Optional[float]):
        super().__init__()
        self.affine = FC(w_dim, in_ch, bias_init=1)
        self.conv = ModConv2d(in_ch, 3, kernel=1, demodulate=False, act="linear", conv_clamp=conv_clamp)

    def forward(self, x, w):
        return self.conv(x, self.affine(w))                     # [N, C, H, W] -> [N, 3, H, W]

class SynthesisBlock(nn.Module):
    """One resolution of S: [up-sampling ModConv,] ModConv, ToRGB; RGB skips are summed ('skip')."""

    def __init__(self, cfg: Config, in_ch: int, out_ch: int, res: int, use_fp16: bool):
        super().__init__()
        self.use_fp16, self.is_first = use_fp16, res == 4
        clamp = cfg.conv_clamp                 # every layer, not only the fp16 ones (release, StyleGAN2-ADA)
        if self.is_first:
            # Fig 5: the learned constant, to which the tiled motion code v_t is concatenated,
            # so the first conv takes C_4 + D input channels.
            self.const = nn.Parameter(torch.randn(out_ch, 4, 4))
            conv_in = out_ch + cfg.v_dim
        else:
            self.affine0 = FC(cfg.w_dim, in_ch, bias_init=1)
            self.conv0 = ModConv2d(in_ch, out_ch, up=True, conv_clamp=clamp)
            conv_in = out_ch
        self.affine1 = FC(cfg.w_dim, conv_in, bias_init=1)
        self.conv1 = ModConv2d(conv_in, out_ch, conv_clamp=clamp)
        self.torgb = ToRGB(cfg.w_dim, out_ch, clamp)
        self.register_buffer("fir", fir_filter(), persistent=False)

    def forward(self, x, img, w, v, dtype):
        if self.is_first:
            const = self.const[None].expand(w.shape[0], -1, -1, -1)        # [N, C4, 4, 4]
            v_tiled = v[:, :, None, None].expand(-1, -1, 4, 4)             # [N, D, 4, 4]
            x = torch.cat([const, v_tiled], dim=1).to(dtype)               # [N, C4 + D, 4, 4]
        else:
            x = self.conv0(x.to(dtype), self.affine0(w))                   # [N, C, 2H, 2W]
        x = self.conv1(x, self.affine1(w))
        y = self.torgb(x, w).float()                                       # [N, 3, H, W]
        img = y if img is None else upsample2x(img, self.fir) + y
        return x, img

class SynthesisNetwork(nn.Module):
    """S(w, v_t) -> frame x_t in [-1, 1]: StyleGAN2's synthesis network, motion code at the input. Mixed
    precision as StyleGAN2: on CUDA the top `num_fp16_res` resolutions run in fp16 (activations clamped to +-256,
    weights and styles pre-normalized in ModConv2d); parameters, the RGB skip sum and everything on CPU stay
    fp32. Config.amp_dtype picks another dtype on any device (bfloat16 on a CPU)."""

    def __init__(self, cfg: Config):
        super().__init__()
        log_res = int(math.log2(cfg.resolution))
        fp16_min = 2 ** max(log_res + 1 - cfg.num_fp16_res, 3)   # fp16 only in the top resolutions
        self.blocks = nn.ModuleList(
            SynthesisBlock(cfg, cfg.channels(max(r // 2, 4)), cfg.channels(r), r, use_fp16=r >= fp16_min)
            for r in [2 ** i for i in range(2, log_res + 1)])                     # 4, 8, ..., resolution
        self.amp_dtype: Optional[torch.dtype] = AMP_DTYPES[cfg.amp_dtype]

    def forward(self, w: torch.Tensor, v: torch.Tensor, force_fp32: bool = False) -> torch.Tensor:
        x = img = None                                           # w [N, w_dim], v [N, D]
        low = self.amp_dtype or (torch.float16 if w.is_cuda else torch.float32)   # the mixed-precision dtype
        for block in self.blocks:
            x, img = block(x, img, w, v, low if block.use_fp16 and not force_fp32 else torch.float32)
        return img                                               # [N, 3, H, W]

class Generator(nn.Module):
    """G(z^c, z^m, t), the StyleGAN-V generator (Fig 5): F_c, F_m + Eq 1-6, and S. forward() is the training
    path, with motion tokens drawn fresh for just the window each clip needs; rendering by seed at any t
    (addressable, bit-exact on CPU however chunked) is §13's render_frames."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.mapping = MappingNetwork(cfg.z_dim, cfg.w_dim, cfg.mapping_layers)
        self.motion = ARCH_VARIANTS[cfg.arch].get("motion", MotionMappingNetwork)(cfg)   # (or the release's: Appx B)
        self.synthesis = SynthesisNetwork(cfg)

    def frames_from_anchors(self, w, anchors, j, t, force_fp32=False):
        """Frames [N, 3, H, W] from w [N, w_dim], their anchors' alpha, omega, rho, a (4 x [N, 2, D]: the left
        one t_j and the right one t_{j+1}), j [N] = floor(t / delta^z) (int64) and t [N] (float64, frames)."""
        v = acyclic_embedding(*anchors, j, t, self.cfg.motion_delta_z, self.motion.wave)   # [N, v_dim]  (Eq 2-6)
        return self.synthesis(w, v, force_fp32=force_fp32)               # [N, 3, H, W]

    @staticmethod
    def tokens_needed(t: torch.Tensor, delta_z: int, context: int) -> int:
        """Motion tokens per video that cover clips at times t [B, k]: anchors spanned + 2, + 20."""
        j = torch.floor(t.double() / delta_z)
        return int((j.max(dim=1).values - j.min(dim=1).values).max()) + 2 + context

    def forward(self, z: torch.Tensor, t: torch.Tensor, tokens: Optional[torch.Tensor] = None,
                truncation: float = 1.0, update_w_avg: bool = False) -> torch.Tensor:
        """z [B, z_dim], t [B, k] frames -> [B, k, 3, H, W]; tokens [B, L, D] as anchors_from_tokens reads them
        (drawn here when not given)."""
        B, k = t.shape
        t = t.double()
        w = self.mapping(z, truncation, update_w_avg).repeat_interleave(k, dim=0)   # [N, w_dim]
        if tokens is None:
            L = self.tokens_needed(t, self.cfg.motion_delta_z, self.motion.context)
            tokens = torch.randn(B, L, self.cfg.motion_dim, device=z.device)
        anchors, j = self.anchors_from_tokens(tokens, t)
        img = self.frames_from_anchors(w, anchors, j.reshape(-1), t.reshape(-1))
        return img.reshape(B, k, *img.shape[1:])                 # [B, k, 3, H, W]

    def anchors_from_tokens(self, tokens: torch.Tensor, t: torch.Tensor):
        """Wave parameters of each frame's two anchors -> (4 x [B*k, 2, .], left anchor j [B, k]).

        tokens [B, L, D] are tokens j_first-20 ... of each video (j_first = floor(min t / delta^z)),
        t [B, k] float64 frame times. A worked example, delta^z = 16, t = [3, 17, 40]:
            j = floor(t / 16) = [0, 1, 2], j_first = 0, L = tokens_needed = (2 - 0) + 2 + 20 = 24
            tokens j = -20 ... 3  --F_m (two valid convs, kernel 11)-->  anchors u_0 ... u_3 (A = 4)
            frame t = 40 reads anchors idx = j - j_first + [0, 1] = [2, 3]: its left u_2, its right u_3"""
        B, k = t.shape
        j = torch.floor(t / self.cfg.motion_delta_z).long()     # [B, k] left anchors
        j_local = j - j.min(dim=1, keepdim=True).values          # [B, k] j - j_first: u_j's index among the anchors
        params = self.motion(tokens)                             # 4 x [B, A, .]
        idx = torch.stack([j_local, j_local + 1], dim=2).reshape(B, 2 * k, 1)   # [B, 2k, 1]: left, right per frame
        return [p.gather(1, idx.expand(-1, -1, p.shape[-1])).reshape(B * k, 2, -1) for p in params], j

def to_uint8(img: torch.Tensor) -> torch.Tensor:
    """[..., 3, H, W] in [-1, 1] -> uint8 [..., H, W, 3]."""
    return (img * 127.5 + 128).clamp(0, 255).to(torch.uint8).movedim(-3, -1)

# ------------------------------------------------------------------------------------------------
# §7 Discriminator: per-frame backbone, channel-wise concatenation, time-gap hyper-modulation (Sec 3.2, Fig 6)
# D sees k frames of a clip and the k-1 time gaps delta_i = t_{i+1} - t_i between them. The gaps
# are Fourier-encoded, passed through a 2-layer MLP each, concatenated into p_delta, and mapped to
# a conditioning vector c. In the paper (Fig 6), c modulates the FIRST conv of every D block (a
# ModConv2d, exactly G's modulated conv with c in place of w) and conditions the projection head.
# d_cond 'concat' uses the projection only (as the authors' release; near Table 2's "w/o hyper-
# modulation", which kept ModConv2d with zero time codes); 'none' drops time conditioning (image StyleGAN2).
#
#   frames [B, k, 3, H, W] -> [B*k, ...] -> from_rgb -> blocks R ... 32 (each frame alone, conv0 modulated by c)
#        -> at 16^2: [B*k, C, 16, 16] -> [B, k*C, 16, 16] (the k frames side by side in channels)
#        -> blocks 16 ... 8 -> minibatch-stddev, conv, FC -> out [B, cmap] -> <out, c> / sqrt(cmap): logit [B]
#   t [B, k] -> gaps delta [B, k-1] -> Fourier features, MLP per gap -> concat p_delta -> c [B, cmap]

class TimeGapEncoder(nn.Module):
    """The gaps' encoder above. Fourier periods are log-spaced from 2 to 2048 frames (the positional encoding of
    [60, 66]). (The release adds a learned Embedding(1024, 256) of the rounded gap: Appendix B.)"""

    def __init__(self, k: int, cmap_dim: int, cfg: Config, num_freqs: int = 16):
        super().__init__()
        dim = cfg.d_time_dim
        self.register_buffer("freqs", 2 * math.pi / torch.logspace(1, 11, num_freqs, base=2.0))  # rad/frame
        self.mlp = nn.Sequential(FC(2 * num_freqs, dim, act="lrelu"), FC(dim, dim, act="lrelu"))
        self.mapping = nn.Sequential(FC((k - 1) * dim, cmap_dim, act="lrelu"), FC(cmap_dim, cmap_dim, act="lrelu"))

    def forward(self, t: torch.Tensor) -> torch.Tensor:          # t [B, k] frame times
        delta = torch.diff(t.double(), dim=1).round().float()    # [B, k-1]: gaps, rounded (fake t are fractional)
        phase = delta[..., None] * self.freqs                    # [B, k-1, F]
        p = self.mlp(torch.cat([phase.sin(), phase.cos()], -1))  # [B, k-1, d]   p(delta_i)
        return self.mapping(p.flatten(1))                        # [B, (k-1)d] -> [B, cmap]

class DiscriminatorBlock(nn.Module):
    """StyleGAN2 'resnet' block: conv0 (3x3; 'hyper': a ModConv2d styled by c, Fig 6), conv1 (3x3, down 2),
    plus a 1x1 down-sampling skip."""

    def __init__(self, in_ch: int, tmp_ch: int, out_ch: int, cmap_dim: int, hyper: bool, clamp, use_fp16: bool):
        super().__init__()
        self.use_fp16, self.hyper = use_fp16, hyper
        if hyper:
            self.affine = FC(cmap_dim, in_ch, bias_init=1)
            self.conv0 = ModConv2d(in_ch, tmp_ch, conv_clamp=clamp)
        else:
            self.conv0 = Conv2d(in_ch, tmp_ch, 3, conv_clamp=clamp)
        self.conv1 = Conv2d(tmp_ch, out_ch, 3, down=True, conv_clamp=clamp)
        self.skip = Conv2d(in_ch, out_ch, 1, act="linear", down=True, bias=False)

    def forward(self, x, c, low=torch.float32):                  # [N, C, H, W] -> [N, C', H/2, W/2]
        x = x.to(low if self.use_fp16 else torch.float32)
        y = self.skip(x, gain=math.sqrt(0.5))
        x = self.conv0(x, self.affine(c)) if self.hyper else self.conv0(x)
        return y.add_(self.conv1(x, gain=math.sqrt(0.5)))       # (skip + residual) / sqrt(2)

class Discriminator(nn.Module):
    """D(x_{t_1} ... x_{t_k}; delta) -> logit [B] (Sec 3.2, Fig 6), as drawn above: the backbone D_b on each frame
    down to 16x16, the head D_h on the concatenation to 4x4, StyleGAN2's epilogue, the projection onto c."""

    def __init__(self, cfg: Config, k: Optional[int] = None):
        super().__init__()
        k = k or cfg.frames_per_clip
        self.cond = cfg.d_cond if k > 1 else "none"              # one frame has no time gap
        self.mbstd_group, self.mbstd_strided = cfg.mbstd_group, cfg.mbstd_strided
        R, ch, clamp = cfg.resolution, cfg.d_channels, cfg.conv_clamp   # clamp: every conv (release, StyleGAN2-ADA)
        self.concat_res = min(cfg.d_concat_res, R)
        self.cmap_dim = C4 = ch(4)             # c is as wide as the 4x4 features it is projected on (StyleGAN2)
        time_encoder = ARCH_VARIANTS[cfg.arch].get("time_enc", TimeGapEncoder)          # (or the release's: Appx B)
        self.time_enc = time_encoder(k, self.cmap_dim, cfg) if self.cond != "none" else None
        fp16_min = R // 2 ** (cfg.num_fp16_res - 1)            # the top num_fp16_res resolutions, as in G
        # The paper concatenates each frame's features whole (Sec 3.2: 512k x 16 x 16); the release
        # halves their channels first (d_frame_div 2, its num_frames_div_factor).
        self.from_rgb = Conv2d(3, ch(R), 1, conv_clamp=clamp)
        self.blocks, self.block_res = nn.ModuleList(), [2 ** i for i in range(int(math.log2(R)), 2, -1)]
        for res in self.block_res:                                         # R, R/2, ..., 8
            # the first head block takes the k concatenated feature maps: k*C channels in
            in_ch = ch(res) // cfg.d_frame_div * k if res == self.concat_res else ch(res)
            out_ch = ch(res // 2) // cfg.d_frame_div if res // 2 == self.concat_res else ch(res // 2)
            self.blocks.append(DiscriminatorBlock(in_ch, ch(res), out_ch, self.cmap_dim,
                                                  self.cond == "hyper", clamp, res >= fp16_min))
        # The epilogue (StyleGAN2's): minibatch-stddev adds 1 channel, a 3x3 conv, an FC on the flattened
        # 4x4 map, and an output of cmap_dim for the projection onto c (1 logit when D is not conditioned).
        self.epi_conv = Conv2d(C4 + 1, C4, 3, conv_clamp=clamp)
        self.epi_fc = FC(C4 * 16, C4, act="lrelu")                        # [B, C4 * 4 * 4] -> [B, C4]
        self.epi_out = FC(C4, self.cmap_dim if self.cond != "none" else 1)
        self.amp_dtype: Optional[torch.dtype] = AMP_DTYPES[cfg.amp_dtype]   # see SynthesisNetwork

    def minibatch_stddev(self, x: torch.Tensor) -> torch.Tensor:
        """Append the std over groups of G videos as an extra channel (StyleGAN2, 1 feature). Groups are
        *contiguous* runs of videos ([0..3], [4..7], ...), unlike StyleGAN2's strided ones (i, i + n, ...;
        `mbstd_strided`), so a batch split across processes forms the same groups as on one process."""
        N, C, H, W = x.shape
        G = min(self.mbstd_group, N)                             # (N % G == 0: check_batch_split)
        y = x.float().reshape(G, N // G, C, H, W).transpose(0, 1) if self.mbstd_strided \
            else x.float().reshape(N // G, G, C, H, W)           # [n, G, C, H, W]
        y = (y.var(dim=1, unbiased=False) + 1e-8).sqrt().mean(dim=[1, 2, 3])   # [n]: the group's std, mean over C, H, W
        y = (y.repeat(G) if self.mbstd_strided else y.repeat_interleave(G)).reshape(N, 1, 1, 1).expand(N, 1, H, W)
        return torch.cat([x.float(), y], dim=1)                  # [N, C+1, H, W]

    def forward(self, frames: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        B, k = frames.shape[:2]
        c = self.time_enc(t) if self.time_enc is not None else None        # [B, cmap]
        low = self.amp_dtype or (torch.float16 if frames.is_cuda else torch.float32)   # as in SynthesisNetwork
        x = self.from_rgb(frames.flatten(0, 1).to(low if self.blocks[0].use_fp16 else torch.float32))   # [B*k, C, H, W]
        c_frames = c.repeat_interleave(k, 0) if c is not None else None    # the clip's code, per frame
        for res, block in zip(self.block_res, self.blocks):
            if res == self.concat_res:                           # [B*k, C, 16, 16] -> [B, k*C, 16, 16]
                x = x.reshape(B, k * x.shape[1], *x.shape[2:])
            x = block(x, c if res <= self.concat_res else c_frames, low)
        x = self.minibatch_stddev(x)                             # [B, C+1, 4, 4]
        x = self.epi_conv(x)                                     # [B, C, 4, 4]
        x = self.epi_fc(x.flatten(1))                            # [B, C]
        out = self.epi_out(x)                                    # [B, cmap] or [B, 1]
        return out[:, 0] if c is None else (out * c).sum(dim=1) / math.sqrt(self.cmap_dim)   # projection D [41]

# ------------------------------------------------------------------------------------------------
# §8 Sparse clips: the frame times of one training clip (Sec 3.3, Appx B)
# StyleGAN-V trains on k = 3 frames per clip at random times, not on dense runs of frames: D sees the
# frames and their time gaps (§7). `sample_clip_times` draws those times, for the real clips of the
# dataset (§11) and for the fake clips G renders in the training loop (§12).

def sample_clip_times(rng: np.random.Generator, k: int, max_span: int, max_time: float, video_len: int,
                      span_dist: str = "uniform", fractional: bool = False) -> np.ndarray:
    """Frame times of one sparse clip of a video of `video_len` frames (Sec 3.3): the span t_k - t_1 ~
    U[k-1, min(max_span, video_len - 1)], the middle k-2 times distinct frames between t_1 and t_k.

    span_dist 'release': spans from the powers of two in [k-1, max_span] (the release's {2, 4, 8, 16, 32}).
    Real clip: integer frames. A video longer than T is first cut to a random window of T frames (as the
    release does): every frame can be drawn, while t keeps the range [0, T) that fake clips have.
    Fake clip (`fractional`): t_1 is real in [0, window - 1 - span], as G is continuous in time; the
    gaps, which D sees, keep the real clips' integer distribution."""
    if k == 1:                                                   # --frames-per-clip 1: single frames
        span, offsets = 0, np.zeros(1)
    else:
        hi = min(max_span, video_len - 1)
        if span_dist == "release":
            span = int(rng.choice([d for d in 2 ** np.arange(12) if k - 1 <= d <= hi] or [hi]))
        else:
            span = int(rng.integers(k - 1, hi + 1))              # U[k-1, 32], both ends included
        middle = np.sort(rng.choice(np.arange(1, span), size=k - 2, replace=False))
        offsets = np.concatenate([[0], middle, [span]]).astype(np.float64)
    window = min(int(max_time), video_len)                       # T frames, or the whole video
    if fractional:
        t1 = rng.uniform(0, window - 1 - span)                   # t_k <= window - 1, as a real clip's
    else:
        start = int(rng.integers(0, video_len - window + 1)) if video_len > window else 0
        t1 = start + int(rng.integers(0, window - span))         # t_k <= start + window - 1
    return t1 + offsets

# ------------------------------------------------------------------------------------------------
# §9 Losses (Sec 4.1, Appx B.1: non-saturating logistic loss + lazy R1, as StyleGAN2)

def g_nonsaturating_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """L_G = E[softplus(-D(G(z)))] = -E[log sigmoid D(G(z))]."""
    return F.softplus(-fake_logits).mean()

def d_logistic_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """L_D = E[softplus(D(G(z)))] + E[softplus(-D(x))]."""
    return F.softplus(fake_logits).mean() + F.softplus(-real_logits).mean()

def d_r1_penalty(real_logits: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """R1 (Mescheder et al. 2018) per real clip [B]: ||grad_x D(x)||^2 of each frame of real [B, k, 3, H, W],
    averaged over the k frames (the release's normalisation: gamma means per frame what it means per image in
    StyleGAN2, whatever k). create_graph: the penalty is differentiated again, w.r.t. D's weights, so every
    op from x to the logit (the augmentation's warp, ModConv2d) must support double backward."""
    grad, = torch.autograd.grad(real_logits.sum(), real, create_graph=True)   # [B, k, 3, H, W]
    return grad.square().sum(dim=[2, 3, 4]).mean(dim=1)                      # [B, k] -> [B]

# ------------------------------------------------------------------------------------------------
# §10 Video-consistent ADA (Appx B; StyleGAN2-ADA's 'bgc' pipeline)
# ADA (Karras et al. 2020). With little data D memorises the training set, and G's gradients turn to noise. ADA augments
# *every* image D sees (reals, fakes in both losses, R1's reals) with a pipeline whose ops each fire with probability p.
# Below p ~ 0.8 the augmentations do not "leak": the un-augmented image stays the pipeline's most likely output, so
# augmented fakes match augmented reals only if the fakes match the reals. A controller sets p from the overfitting
# heuristic r_t = E[sign D(x_real)] (0: none; 1: D calls every training real "real"), measured over 4 D steps:
#     p <- clamp(p + sign(r_t - 0.6) * (batch * 4) / (ada_kimg * 1000), 0, 1),
# so p can cross [0, 1] in `ada_kimg` thousand videos (500 in StyleGAN2-ADA, 100 in the release).
#
# Video-consistency, the paper's change (Appx B): "we found it important to make them *video-consistent*,
# i.e. applying the same augmentation for each frame of a video. Otherwise, the discriminator starts to
# underperform". Our reading: per-frame flips and palettes would make augmented videos jump from frame to
# frame, as no real video does, and D would model the jumps instead of motion. So every random parameter
# is drawn once per *video* ([B] draws, never [B*k]) and one 3x3 warp and one 4x4 colour matrix serve
# all k frames (the release views [B*k, 3, H, W] as [B, 3k, H, W] before StyleGAN2-ADA's pipe).
#
# The pipeline is 'bgc' = blit + geometric + colour (the paper's "bgrc" is no StyleGAN2-ADA pipe; its list of ops is
# 'bgc', which the release uses): each op fires with probability p, except the two arbitrary rotations (before and after
# anisotropic scaling), each with p_rot = 1 - sqrt(1 - p), so that P(any rotation) = p. How the resampler and the clamp
# differ from StyleGAN2-ADA, and why: README, Deviations. The colour ops take zero as mid-grey (pixels in [-1, 1]).

ADA_STRENGTHS = dict(       # StyleGAN2-ADA defaults (AugmentPipe's constructor), used unchanged by 'bgc'.
    xint_max=0.125,         # integer translation: uniform in +-12.5 % of the image size, rounded to pixels
    scale_std=0.2,          # isotropic scale 2^N(0, 0.2^2)
    rotate_max=1.0,         # arbitrary rotation: uniform in +-rotate_max * 180°
    aniso_std=0.2,          # anisotropic scale 2^N(0, 0.2^2) in x and its inverse in y
    xfrac_std=0.125,        # fractional translation N(0, 0.125^2) of the image size
    brightness_std=0.2,     # brightness offset N(0, 0.2^2) on the [-1, 1] scale
    contrast_std=0.5,       # contrast gain 2^N(0, 0.5^2)
    hue_max=1.0,            # hue rotation about the grey axis: uniform in +-hue_max * 180°
    saturation_std=1.0,     # saturation gain 2^N(0, 1)
)

def _draws(batch, p, generator, device):
    """(device, rand, randn, fire) on the generator's device: fire(value, off, prob=p) keeps each video's
    value where its coin (drawn after the value) lands below prob, else `off`."""
    dev = generator.device if generator is not None else torch.device(device or 'cpu')
    rand = lambda *shape: torch.rand(shape, generator=generator, device=dev)     # noqa: E731  U[0, 1)
    randn = lambda *shape: torch.randn(shape, generator=generator, device=dev)   # noqa: E731  N(0, 1)
    fire = lambda v, off, prob=p: torch.where(rand(batch, *[1] * (v.ndim - 1)) < prob, v, off)  # noqa: E731
    return dev, rand, randn, fire

def _mat3(a, b, c, d, e, f):
    """[B, 3, 3] affine maps [a b c; d e f; 0 0 1] on column vectors (x, y, 1); entries [B] tensors or numbers."""
    ref = next(v for v in (a, b, c, d, e, f) if torch.is_tensor(v))
    return torch.stack([v if torch.is_tensor(v) else torch.full_like(ref, v)
                        for v in (a, b, c, d, e, f, 0, 0, 1)], dim=-1).view(-1, 3, 3)

def ada_geometry(batch, p, height, width, generator=None, device=None):
    """One warp per video, the 'b' and 'g' groups of 'bgc' -> G_inv [batch, 3, 3] float32, which maps an *output*
    pixel position to the *input* position it is read from (pixels, origin at the image centre, x right, y down);
    composing inverses right to left applies the ops in the order listed. Every value and coin is drawn whatever
    p is, so the generator always advances alike (exact resume)."""
    dev, rand, randn, fire = _draws(batch, p, generator, device)
    s, p_rot = ADA_STRENGTHS, 1 - math.sqrt(max(1 - p, 0.0))             # P(pre or post rotation) = p
    rotate = lambda cos, sin: _mat3(cos, -sin, 0, sin, cos, 0)   # noqa: E731  counter-clockwise
    # Blitting: whole-pixel moves, lossless.
    flip = fire(torch.floor(rand(batch) * 2), 0.0)                        # 0 or 1
    G = _mat3(1 - 2 * flip, 0, 0, 0, 1, 0)                                # x -> -x: its own inverse
    quarter = fire(torch.floor(rand(batch) * 4), 0.0).long()              # 0..3 quarter turns, with exact
    cos, sin = (torch.tensor(v, device=dev)[quarter] for v in ([1., 0., -1., 0.], [0., 1., 0., -1.]))
    G = G @ rotate(cos, sin)                                              # integers: a rot90 stays lossless
    t = fire((rand(batch, 2) * 2 - 1) * s['xint_max'], 0.0)               # [B, 2] fractions of the size
    G = G @ _mat3(1, 0, -torch.round(t[:, 0] * width), 0, 1, -torch.round(t[:, 1] * height))
    # General geometric transformations: these interpolate.
    scale = fire(torch.exp2(randn(batch) * s['scale_std']), 1.0)
    G = G @ _mat3(1 / scale, 0, 0, 0, 1 / scale, 0)
    theta = fire((rand(batch) * 2 - 1) * math.pi * s['rotate_max'], 0.0, p_rot)
    G = G @ rotate(torch.cos(-theta), torch.sin(-theta))                 # pre-rotation (inverse: -theta)
    aniso = fire(torch.exp2(randn(batch) * s['aniso_std']), 1.0)
    G = G @ _mat3(1 / aniso, 0, 0, 0, aniso, 0)                           # stretch x by a, squeeze y by 1/a
    theta = fire((rand(batch) * 2 - 1) * math.pi * s['rotate_max'], 0.0, p_rot)
    G = G @ rotate(torch.cos(-theta), torch.sin(-theta))                 # post-rotation
    t = fire(randn(batch, 2) * s['xfrac_std'], 0.0)                       # [B, 2] fractions of the size
    return G @ _mat3(1, 0, -t[:, 0] * width, 0, 1, -t[:, 1] * height)    # [B, 3, 3]

def ada_color(batch, p, num_channels=3, generator=None, device=None):
    """One colour transform per video, the 'c' group of 'bgc' -> C [batch, 4, 4] float32 acting on (r, g, b, 1);
    the ops compose left-multiplied (C = op @ C), in the order listed. Hue and saturation mean nothing for grey
    images and are off for num_channels == 1 (their values and coins are still drawn)."""
    dev, rand, randn, fire = _draws(batch, p, generator, device)
    s, p_rgb = ADA_STRENGTHS, (p if num_channels > 1 else 0.0)
    rgb = torch.tensor([1., 1., 1., 0.], device=dev)                      # the colour slots of (r, g, b, 1)
    I4, I3, E = torch.eye(4, device=dev), torch.diag(rgb), torch.diag(1 - rgb)   # I3: identity on rgb, E: on the 1
    v = rgb / math.sqrt(3)                                                # unit luma (grey) axis
    vv = torch.outer(v, v)                                                # projector onto the grey axis
    K = torch.tensor([[0., -1., 1., 0.], [1., 0., -1., 0.],               # cross-product matrix [v]_x:
                      [-1., 1., 0., 0.], [0., 0., 0., 0.]], device=dev) / math.sqrt(3)  # K @ c = v x c
    b = fire(randn(batch) * s['brightness_std'], 0.0)                     # brightness: add b to r, g, b,
    C = I4 + b[:, None, None] * torch.outer(rgb, 1 - rgb)                 # the column of the homogeneous 1
    c = fire(torch.exp2(randn(batch) * s['contrast_std']), 1.0)           # contrast: scale around mid-grey 0
    C = (I3 * c[:, None, None] + E) @ C
    flip = fire(torch.floor(rand(batch) * 2), 0.0)                        # luma flip: Householder reflection
    C = (I4 - 2 * vv * flip[:, None, None]) @ C                           # through the plane normal to v
    theta = fire((rand(batch) * 2 - 1) * math.pi * s['hue_max'], 0.0, p_rgb)   # hue: rotate about v (Rodrigues:
    ct, st = torch.cos(theta)[:, None, None], torch.sin(theta)[:, None, None]  # cos I + sin K + (1 - cos) vv^T)
    C = (ct * I3 + st * K + (1 - ct) * vv + E) @ C
    sat = fire(torch.exp2(randn(batch) * s['saturation_std']), 1.0, p_rgb)   # saturation: keep the grey part,
    return (I4 + (sat - 1)[:, None, None] * (I3 - vv)) @ C               # scale the chroma (s = 1: exactly I4)

def _reflect_index(i, n):
    """Fold integer indices into [0, n) by mirroring about the first and last pixel centres ('reflect'
    padding: ... 2 1 | 0 1 2 ... n-1 | n-2 ...), periodic with period 2(n-1), so any distance works."""
    period = max(2 * (n - 1), 1)                                          # n == 1: everything maps to 0
    i = torch.remainder(i, period)                                        # in [0, period)
    return torch.where(i >= n, period - i, i)

def warp_bilinear_reflect(x, G_inv):
    """Resample images by a per-image affine map, bilinearly, with reflect boundary; linear in x [B, N, H, W]
    (N = k*C: a video's frames share its warp); G_inv [B, 3, 3] from `ada_geometry`. Pixel j's centre sits at
    j + 0.5 - W/2, so G_inv = I reads every pixel exactly (no blur). Autograd differentiates it w.r.t. x any
    number of times (gather <-> scatter_add), as R1 needs."""
    B, N, H, W = x.shape
    coord = torch.float64 if x.dtype == torch.float64 else torch.float32  # positions in >= fp32
    G_inv = G_inv.to(device=x.device, dtype=coord)
    ys, xs = (torch.arange(n, device=x.device, dtype=coord) + (0.5 - n / 2) for n in (H, W))   # [H], [W] centred
    gy, gx = torch.meshgrid(ys, xs, indexing='ij')                        # [H, W] each
    out_pos = torch.stack([gx, gy, torch.ones_like(gx)]).view(3, H * W)   # [3, H*W] homogeneous (x, y, 1)
    in_pos = G_inv @ out_pos                                              # [B, 3, H*W]
    u, v = in_pos[:, 0] + (W / 2 - 0.5), in_pos[:, 1] + (H / 2 - 0.5)     # [B, H*W] continuous column, row index
    u0, v0 = torch.floor(u).long(), torch.floor(v).long()                 # [B, H*W] the upper-left neighbour
    fu, fv = u - u0, v - v0                                               # [B, H*W] fractional parts, [0, 1)

    rows = [(_reflect_index(v0 + dv, H) * W, wv) for dv, wv in ((0, 1 - fv), (1, fv))]  # upper, lower
    cols = [(_reflect_index(u0 + du, W), wu) for du, wu in ((0, 1 - fu), (1, fu))]      # left, right

    x_flat = x.reshape(B, N, H * W)                                       # [B, N, H, W] -> [B, N, H*W]
    terms = ((wv * wu).to(x.dtype)[:, None, :] * x_flat.gather(2, (row + col)[:, None, :].expand(B, N, H * W))
             for (row, wv), (col, wu) in itertools.product(rows, cols))   # the 4 neighbours: [B, 1, H*W] * [B, N, H*W]
    return functools.reduce(torch.add, terms).view(B, N, H, W)            # summed in turn; -> [B, N, H, W]

def augment(x, p, generator=None):
    """Video-consistent 'bgc': one random warp and colour transform per video, the same for all its frames.
    x [B, k, C, H, W] in ~[-1, 1]; p a float or 0-dim tensor (p == 0 returns x itself); generator: a
    torch.Generator on any device, else the global RNG. Same shape and dtype; differentiable twice in x."""
    if (p := float(p)) <= 0:
        return x
    B, k, Ch, H, W = x.shape
    G_inv = ada_geometry(B, p, H, W, generator, x.device)                 # [B, 3, 3] on the draw device
    C = ada_color(B, p, Ch, generator, x.device)                          # [B, 4, 4] on the draw device
    if not torch.equal(G_inv, torch.eye(3, device=G_inv.device).expand_as(G_inv)):  # skip if no warp fired
        x = warp_bilinear_reflect(x.reshape(B, k * Ch, H, W), G_inv).view(B, k, Ch, H, W)   # frames as channels (k*C)
    if torch.equal(C, torch.eye(4, device=C.device).expand_as(C)):        # no colour op fired
        return x
    M, o = C[:, :3].to(device=x.device, dtype=x.dtype).split([3, 1], dim=2)   # [B, 3, 3] linear part, [B, 3, 1] offset
    if Ch == 1:                                                           # grey g -> (g, g, g) -> C -> mean
        return x * M.sum(dim=2).mean(dim=1).view(B, 1, 1, 1, 1) + o.mean(dim=1).view(B, 1, 1, 1, 1)
    return (M[:, None] @ x.reshape(B, k, 3, H * W) + o[:, None]).view(B, k, 3, H, W)   # [B, 1, 3, 3] @ [B, k, 3, H*W]

class VideoAugment:
    """`--aug`: 'none' is a no-op, 'fixed' augments with the constant p_init, 'ada' with the controller above, from the
    real logits of every D pass (the main one and R1's, as StyleGAN2-ADA), summed on their device by `accumulate`."""

    def __init__(self, mode='ada', p_init=0.0, target=0.6, ada_kimg=100, interval=4):
        self.mode, self.target, self.ada_kimg, self.interval = mode, float(target), float(ada_kimg), int(interval)
        self.p = float(p_init) if mode != 'none' else 0.0   # (fine-tuning an authors' snapshot sets it)
        self.rt, self.num_steps = None, 0                    # last measured r_t; D steps seen
        self._acc = torch.zeros(2)                           # [sum of sign(logits), count] since the last update

    def __call__(self, x, generator=None):
        return x if self.mode == 'none' else augment(x, self.p, generator)

    def accumulate(self, real_logits):                       # (Trainer.step passes them detached)
        self._acc = self._acc.to(real_logits.device)         # fp32 counts are exact below 2^24
        self._acc[0] += real_logits.float().sign().sum()
        self._acc[1] += real_logits.numel()

    def step(self, batch_size, all_reduce=None):
        """Once per D step, of batch_size videos in all: every `interval`-th ('ada' only) updates p and returns True."""
        self.num_steps += 1
        if self.mode != 'ada' or self.num_steps % self.interval:
            return False
        total, count = (self._acc if all_reduce is None else all_reduce(self._acc)).tolist()   # over ranks; 1 host sync
        self._acc.zero_()
        self.rt = total / count                      # (count > 0: Trainer.step accumulates first)
        direction = (self.rt > self.target) - (self.rt < self.target)      # sign(r_t - target)
        self.p = min(max(self.p + direction * batch_size * self.interval / (self.ada_kimg * 1000), 0.0), 1.0)
        return True

    def state_dict(self):                                # (a checkpoint of another --aug: refused by _open_run)
        return dict(p=self.p, rt=self.rt, num_steps=self.num_steps, acc=self._acc.tolist())

    def load_state_dict(self, state):
        self.p, self.rt, self.num_steps = float(state['p']), state['rt'], int(state['num_steps'])
        self._acc = torch.tensor(state['acc'], dtype=torch.float32, device=self._acc.device)

# ------------------------------------------------------------------------------------------------
# §11 Dataset: the video folder and its real clips (Appx B; the clip times are §8)
# The layout written by prepare_data.py, as a zip or a folder:
#     dataset.json                 {"fps": 25.0, "resolution": 256, "format": "jpg",
#                                   "videos": [{"name": "v00000", "frames": 312}, ...]}
#     <name>/<frame:06d>.jpg       square RGB frames, numbered from 000000
#
# Why single frames and not video files: sparse training (§8) reads k = 3 frames scattered over up to 33 frames of a
# video, from a random offset. A compressed video decodes only forward from its last keyframe (up to 250 frames back
# with x264's defaults), so 3 frames could cost hundreds of decodes; as images, every frame is one decode wherever it
# is, and a clip costs k decodes. VideoFolder(path) (Appendix D) reads it: .fps and .resolution (the run's time unit
# and size), .names, .lengths, .read_frames(video, frames). It checks all that is cheap to check when it opens the
# dataset, so a broken one fails in the first second with its file named, not hours later inside a loader worker.

class DataError(UserError, ValueError):
    """A dataset that cannot be used; the message is one line naming the file and the problem."""

class ClipDataset(torch.utils.data.Dataset):
    """Real clips as the paper draws them (Sec 3.3, Appx B): a video chosen uniformly (not weighted by its length, so a
    few long videos cannot dominate), then a random offset. Item s is a pure function of the seed s, so a step's global
    batch is the same for any number of processes and on resuming -> (frames uint8 [k, H, W, 3], times float64 [k])."""

    def __init__(self, data: VideoFolder, cfg: Config):
        self.data, self.cfg = data, cfg
        self.usable = [i for i, l in enumerate(data.lengths) if l >= cfg.frames_per_clip]
        if not self.usable:
            raise DataError(f"{data.path}: every video is shorter than a clip of {cfg.frames_per_clip} frames")

    def draw(self, item_seed: int):
        """(video index, frame times [k], x-flip?) of item `item_seed`."""
        rng = np.random.default_rng(item_seed)
        video = self.usable[int(rng.integers(len(self.usable)))]            # uniform over videos
        t = sample_clip_times(rng, self.cfg.frames_per_clip, self.cfg.max_span, self.cfg.max_time,
                              self.data.lengths[video], self.cfg.span_dist)
        return video, t, bool(self.cfg.mirror and rng.random() < 0.5)

    def __getitem__(self, item_seed: int):
        video, t, flip = self.draw(item_seed)
        frames = self.data.read_frames(video, t.astype(np.int64))[:, :, ::-1 if flip else 1]   # [k, H, W, 3]; x-flip
        return torch.from_numpy(np.ascontiguousarray(frames)), torch.from_numpy(t)

# ------------------------------------------------------------------------------------------------
# §12 Training loop (Sec 3.3, 4.1, Appx B; StyleGAN2-ADA's schedule)
# One step = a G update, a D update, every 16th step an extra D update on R1 (lazy regularization), the G_ema update and
# every 4th step the ADA update. Progress is counted in real frames shown to D (kimg = 1000 frames; a step: batch * k).
#
# Every random draw of a step (latents, clip times, motion tokens, which real clips) comes from a generator seeded by
# (seed, step, purpose) and is drawn for the GLOBAL batch, of which each process takes its rows. So a resumed run
# replays exactly what the uninterrupted one would have done, and without augmentation the result does not depend on the
# number of processes, up to rounding (ADA's parameters are drawn per process: other draws from the same distribution).

PURPOSES = ("G", "D", "real", "augG", "augDfake", "augDreal", "augR1")   # one random stream each, per step

def step_rng(seed: int, step: int, purpose: str, rank: int = 0, torch_rng: bool = False):
    """(seed, step, purpose, rank) -> a numpy stream of its own (SeedSequence; not hash(), which Python salts per
    process), or with torch_rng a torch.Generator seeded from it. The rank is the augmentation's only."""
    rng = np.random.default_rng([seed, step, PURPOSES.index(purpose), rank])
    return torch.Generator().manual_seed(int(rng.integers(2 ** 63))) if torch_rng else rng

class Dist:
    """The process group (rank, world, device), or a stand-in for a single process. Gradients are averaged
    by hand, one all_reduce per optimizer step (sync_grads), as StyleGAN3 does: DDP's gradient hooks get a
    step's phases with one network frozen and R1's double backward wrong (pytorch/pytorch 47562, 63812)."""

    def __init__(self, rank: int = 0, world: int = 1, device: torch.device = torch.device("cpu")):
        self.rank, self.world, self.device, self.main = rank, world, device, rank == 0

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:           # the sum over processes, in place, returned
        if self.world > 1:
            torch.distributed.all_reduce(x)
        return x

def fake_clip_times(cfg: Config, rng: np.random.Generator, B: int, k: int, video_lengths) -> torch.Tensor:
    """Times [B, k] of generated clips, drawn as the release does (its training_loop.py): each inside the length of a
    real video chosen at random, so fake clips have the real clips' spans (a dataset of 16-frame videos has no gap of
    16, and a time-told D could learn "gap 16 = fake") and times below min(L, T). The offsets are fractional (§8)."""
    lengths = np.asarray(video_lengths)[rng.integers(len(video_lengths), size=B)]
    return torch.from_numpy(np.stack([sample_clip_times(rng, k, cfg.max_span, cfg.max_time, int(n), cfg.span_dist,
                                                        fractional=True) for n in lengths]))

def adam_kwargs(lr: float, reg_interval: int) -> dict:
    """Adam's settings for a network regularized lazily every R = `reg_interval` steps (0: never): lr and
    beta2 scaled by c = R / (R + 1), so the step size and moments per unit of time stay what they would
    be without the extra steps (StyleGAN2 Appx B); betas (0, 0.99), eps 1e-8 as StyleGAN2."""
    c = reg_interval / (reg_interval + 1) if reg_interval > 0 else 1.0
    return dict(lr=lr * c, betas=(0.0, 0.99 ** c), eps=1e-8)

def sync_grads(module: nn.Module, dist: Dist) -> int:
    """Average gradients over processes; NaN -> 0 and +-Inf -> +-1e5, as StyleGAN2-ADA and the release
    (an infinite gradient keeps its sign, clipped to a large step). Returns the number non-finite."""
    params = [p for p in module.parameters() if p.grad is not None]     # (never empty: called after a backward)
    flat = dist.all_reduce(torch.cat([p.grad.flatten() for p in params])).div_(dist.world)   # the mean over processes
    bad = int((~torch.isfinite(flat)).sum())
    torch.nan_to_num_(flat, nan=0, posinf=1e5, neginf=-1e5)
    for p, g in zip(params, flat.split([p.numel() for p in params])):
        p.grad.copy_(g.view_as(p))
    return bad

class Trainer:
    """G, G_ema, D, their optimizers and the augmentation; `step()` does one training step. video_lengths: each usable
    video's frames, fake clips are drawn inside them (fake_clip_times); None: T-frame videos (benchmarks on noise)."""

    def __init__(self, cfg: Config, dist: Dist, seed: int = 0, video_lengths=None):
        self.cfg, self.dist, self.seed = cfg, dist, seed
        self.video_lengths = list(video_lengths or [cfg.max_time])
        self.local = check_batch_split(cfg.batch, dist.world, cfg.mbstd_group)
        self.rows = slice(dist.rank * self.local, (dist.rank + 1) * self.local)
        torch.manual_seed(seed)                                  # identical initial weights on every process
        self.G = Generator(cfg).to(dist.device)
        self.D = Discriminator(cfg).to(dist.device)
        self.G_ema = Generator(cfg).to(dist.device).eval().requires_grad_(False)
        self.G_ema.load_state_dict(self.G.state_dict())
        # Lazy regularization (adam_kwargs): D's R1 every r1_interval steps. G gets the adjustment for g_reg_interval
        # 4 without any regularizer, as the release (StyleGAN2-ADA's pl_weight 0): lr 0.0025 * 4/5, beta2 0.99^0.8.
        self.opt_G = torch.optim.Adam(self.G.parameters(), **adam_kwargs(cfg.resolved().lr, cfg.g_reg_interval))
        self.opt_D = torch.optim.Adam(self.D.parameters(), **adam_kwargs(cfg.resolved().lr, cfg.r1_interval))
        # gamma < 0: StyleGAN2-ADA's 'auto' 0.0002 * res^2 / batch (Config.resolved): the penalty sums over pixels,
        # so it grows with res^2; at 256^2 and batch 64, 0.2048: the paper's 0.2 (Appx B.1). tiny sets 3 (§1).
        self.gamma = cfg.resolved().r1_gamma
        self.aug = VideoAugment(cfg.aug, cfg.aug_p, target=cfg.ada_target, ada_kimg=cfg.ada_kimg)
        self.step_idx, self.nimg, self.nvid = 0, 0, 0            # steps done, real frames / videos shown to D
        self.nonfinite, self.train_sec = 0, 0.0                  # zeroed gradients; training time at the last save

    def _latents(self, purpose: str):
        """z, clip times and motion tokens of this process's rows of the global batch (all B are drawn, then sliced:
        drawing only our rows would tie row r's latents to the number of processes)."""
        cfg, B, k, dev = self.cfg, self.cfg.batch, self.cfg.frames_per_clip, self.dist.device
        g = step_rng(self.seed, self.step_idx, purpose, torch_rng=True)
        t = fake_clip_times(cfg, step_rng(self.seed, self.step_idx, purpose), B, k, self.video_lengths)
        L = Generator.tokens_needed(t, cfg.motion_delta_z, self.G.motion.context)
        z, tokens = torch.randn(B, cfg.z_dim, generator=g), torch.randn(B, L, cfg.motion_dim, generator=g)   # z first
        return tuple(x[self.rows].to(dev) for x in (z, t, tokens))

    def _augment(self, x: torch.Tensor, purpose: str) -> torch.Tensor:
        """ADA with this step's generator, per process (or all would augment alike), apart from _latents' streams
        (G must not see its z's augmentation drawn from z's own stream: it could learn to undo it)."""
        return self.aug(x, step_rng(self.seed, self.step_idx, "aug" + purpose, self.dist.rank, torch_rng=True))

    def step(self, real: torch.Tensor, t_real: torch.Tensor) -> dict:
        """real uint8 [b, k, H, W, 3], t_real [b, k] -> losses of this step."""
        cfg, dev = self.cfg, self.dist.device
        real = real.to(dev).permute(0, 1, 4, 2, 3).float() / 127.5 - 1   # [b, k, 3, H, W] in [-1, 1]
        t_real = t_real.to(dev)

        # G: minimize softplus(-D(G(z))). D is frozen: backward fills G's gradients only, flowing *through* D.
        # The fakes are augmented as the reals: D never sees an un-augmented image, so G is not pushed to
        # produce augmented-looking frames (ADA Sec 2).
        self.G.requires_grad_(True)
        self.D.requires_grad_(False)
        z, t, tokens = self._latents("G")                        # z [b, z_dim], t [b, k], tokens [b, L, D]
        fake = self.G(z, t, tokens, update_w_avg=True)                       # [b, k, 3, H, W]
        loss_G = g_nonsaturating_loss(self.D(self._augment(fake, "G"), t))
        self._optimize(loss_G, self.G, self.opt_G)
        logs = dict(loss_G=loss_G.item())

        # D: minimize softplus(D(G(z))) + softplus(-D(x)), on new latents (as StyleGAN2), rendered without a graph.
        # Reals come at their own times (Sec 3.3), fakes at times drawn alike (fake_clip_times): D cannot tell
        # them apart by the time gaps alone.
        self.G.requires_grad_(False)
        self.D.requires_grad_(True)
        z, t, tokens = self._latents("D")
        with torch.no_grad():
            fake = self.G(z, t, tokens, update_w_avg=True)       # w_avg tracks both phases' w, as the release
        self.dist.all_reduce(self.G.mapping.w_avg).div_(self.dist.world)   # the global batch's (updates are linear)
        fake_logits = self.D(self._augment(fake, "Dfake"), t)
        real_logits = self.D(self._augment(real, "Dreal"), t_real)
        loss_D = d_logistic_loss(real_logits, fake_logits)
        self._optimize(loss_D, self.D, self.opt_D)
        self.aug.accumulate(real_logits.detach())
        logs.update(loss_D=loss_D.item(), real_logit=real_logits.mean().item(), fake_logit=fake_logits.mean().item())

        # Lazy R1 on augmented real clips every r1_interval steps: ||d D(x) / d x||^2 keeps D flat around the
        # data, so G's gradients point somewhere useful; times r1_interval, its average weight stays gamma / 2.
        # `r1_logits * 0`, as the release: D's last bias, which R1 does not reach, gets a zero gradient
        # rather than none, so Adam counts this step for it as for every other parameter.
        if self.step_idx % cfg.r1_interval == 0 and self.gamma > 0:
            real_ = real.detach().requires_grad_(True)
            r1_logits = self.D(self._augment(real_, "R1"), t_real)                # [b]
            r1 = d_r1_penalty(r1_logits, real_)                                   # [b]
            loss_r1 = (r1_logits * 0 + r1 * (self.gamma / 2)).mean() * cfg.r1_interval
            self._optimize(loss_r1, self.D, self.opt_D)
            self.aug.accumulate(r1_logits.detach())   # ADA's r_t counts these reals too (the release's Dr1)
            logs["r1"] = r1.mean().item()

        self.nimg += cfg.batch * cfg.frames_per_clip
        self.nvid += cfg.batch
        self._update_ema()
        self.aug.step(cfg.batch, all_reduce=self.dist.all_reduce)   # ADA: every 4 steps, p towards the target
        logs["p"] = self.aug.p
        self.step_idx += 1
        return logs

    def _optimize(self, loss: torch.Tensor, net: nn.Module, opt: torch.optim.Optimizer) -> None:
        opt.zero_grad(set_to_none=True)
        loss.backward()
        self.nonfinite += sync_grads(net, self.dist)
        opt.step()

    def _update_ema(self) -> None:
        """G_ema: moving average of G's weights, half-life ema_kimg thousand videos, scaled with the batch
        (20 at 64 videos, StyleGAN2-ADA's batch * 10 / 32); with ema_rampup at most rampup * videos so far
        (StyleGAN2-ADA's 'auto' 0.05; the release and the paper presets have none)."""
        cfg = self.cfg
        ema_nimg = cfg.ema_kimg * 1000 * cfg.batch / 64                      # the half-life in videos
        ema_nimg = ema_nimg if cfg.ema_rampup is None else min(ema_nimg, self.nvid * cfg.ema_rampup)
        beta = 0.5 ** (cfg.batch / max(ema_nimg, 1e-8))
        with torch.no_grad():
            for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters()):
                p_ema.copy_(p.lerp(p_ema, beta))
            # Buffers are copied, not averaged, as StyleGAN2-ADA does: the one that changes, w_avg (§4),
            # is already a running mean of w, and a second average would only make it lag further.
            for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers()):
                b_ema.copy_(b)

    def state_dict(self) -> dict:
        return dict(cfg=dataclasses.asdict(self.cfg), G=self.G.state_dict(), G_ema=self.G_ema.state_dict(),
                    D=self.D.state_dict(), opt_G=self.opt_G.state_dict(), opt_D=self.opt_D.state_dict(),
                    aug=self.aug.state_dict(), step=self.step_idx, nimg=self.nimg, nvid=self.nvid,
                    seed=self.seed, nonfinite=self.nonfinite, train_sec=self.train_sec)

    def load_state_dict(self, state: dict) -> None:
        """Everything of a checkpoint of ours; of an authors' snapshot (no optimizer state, no step):
        G, G_ema, D and ADA's p, with fresh optimizers and the counters at 0 (fine-tuning)."""
        ours = "opt_G" in state
        for name in ["G", "G_ema", "D"] + (["aug"] if ours else []):
            getattr(self, name).load_state_dict(state[name])
        for opt, name in [(self.opt_G, "opt_G"), (self.opt_D, "opt_D")] if ours else []:   # Adam's moments resumed,
            opt.load_state_dict(dict(state[name], param_groups=opt.state_dict()["param_groups"]))  # settings this run's
        if ours:
            self.step_idx, self.nimg, self.nvid = state["step"], state["nimg"], state["nvid"]
            self.nonfinite, self.train_sec = state["nonfinite"], state["train_sec"]
            if self.cfg.aug_p != state["cfg"]["aug_p"]:         # --p given on resuming: p from there on
                self.aug.p = self.cfg.aug_p
        else:
            self.aug.p = state.get("aug_p", 0.0)

def train(cfg: Config, data_path: str, outdir: str, dist: Dist, seed: Optional[int] = None, resume=None, workers=2,
          fp32: bool = False, progress: bool = True, previews: bool = True) -> Trainer:
    """The training loop of one process (rank), to cfg.kimg. Returns the Trainer; `trainer.interrupted` is True
    when a signal stopped it (after saving). seed None: a resumed run's own, else 0."""
    trainer, dataset = _start_run(cfg, data_path, outdir, dist, seed, resume, fp32)
    cfg, log = trainer.cfg.resolved(), os.path.join(outdir, "log.jsonl")   # (snap: 'auto' resolved)
    # item_seeds, the DataLoader's batch_sampler: per step, ClipDataset's item seeds of our rows of the global batch;
    # a worker turns each into a clip (a video, k frame times: Sec 3.3) and decodes it 4 steps ahead, overlapping steps.
    # Workers are spawned, not forked: a fork of a process whose torch threads hold a lock can hang.
    item_seeds = (step_rng(trainer.seed, step, "real").integers(0, 2 ** 62, size=cfg.batch).tolist()[trainer.rows]
                  for step in itertools.count(trainer.step_idx))        # [b] seeds a step
    spawned = dict(persistent_workers=True, prefetch_factor=4, multiprocessing_context="spawn") if workers > 0 else {}
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=item_seeds, num_workers=workers,
                                         worker_init_fn=GracefulStop.ignore, **spawned)
    total = int(cfg.kimg * 1000)                                 # real frames shown to D (nimg)
    bar = tqdm(total=round(cfg.kimg, 3), unit="kimg", disable=not (progress and dist.main) or trainer.nimg >= total,
               initial=round(min(trainer.nimg, total) / 1000, 3),
               bar_format="{l_bar}{bar}| {n:.2f}/{total:.2f} kimg [{elapsed}<{remaining}{postfix}]")
    clock = dict(train_start=time.time() - trainer.train_sec, metric_sec=0.0)   # training time, no metrics
    if cfg.metrics and trainer.nimg == 0:                        # every FVD curve starts at kimg 0
        _snapshot_metrics(trainer, data_path, log, bar, clock)
    tick_state = dict(nimg=trainer.nimg, start=time.time(), metric_sec=clock["metric_sec"], acc={})
    last_snap, ckpt, done = trainer.nimg, None, trainer.nimg >= total       # (a resumed run may be done already)
    # Stopping (Appendix D): GracefulStop turns Ctrl-C or SIGTERM into a request, honoured once the step
    # is done, on the same step in every process, or the others would hang in all_reduce. A frame that cannot
    # be read stops the run too, saved first. Closing `batches` stops the loader's workers at once.
    batches = _unwrap_worker_errors(loader, save=lambda: trainer.nimg > 0 and _snapshot(trainer, outdir, False, clock))
    with GracefulStop() as stop, contextlib.closing(batches), contextlib.closing(bar):
        for real, t_real in batches if not done else ():         # this process's rows of each step's batch
            for key, v in trainer.step(real, t_real).items():    # G, D, (R1), G_ema, ADA: §12's Trainer.step
                tick_state["acc"].setdefault(key, []).append(v)
            bar.n = round(min(trainer.nimg, total) / 1000, 3)    # set, not summed: no float drift past the
            bar.update(0)                                        # total (tqdm warns, shows -00:00 left)
            done, trainer.interrupted = trainer.nimg >= total, stop.anywhere(dist)
            if _crossed(trainer.nimg, cfg.tick, tick_state["nimg"]) or done or trainer.interrupted:   # a log line
                _log_tick(trainer, tick_state, log, bar, clock)
            if _crossed(trainer.nimg, cfg.snap, last_snap) or done or trainer.interrupted:   # a snapshot
                last_snap, ckpt = trainer.nimg, _snapshot(trainer, outdir, previews and not trainer.interrupted, clock)
                if cfg.metrics and not trainer.interrupted:
                    _snapshot_metrics(trainer, data_path, log, bar, clock)
            if done or trainer.interrupted:
                break
    if dist.main and ckpt is not None:
        _last_line(trainer, ckpt, outdir)                        # done or interrupted; diverged?
    return trainer

# ------------------------------------------------------------------------------------------------
# §13 Rendering any frame by seed; sampling videos of any length (Sec 4.3); projection (Fig 2)
# A checkpoint (ours, or an authors' snapshot: Appendix B) -> load_generator (Appendix D: nothing in the file
# runs) -> any frame by (content seed, motion seed, t) -> sample(), which renders an hour. And the other way:
# a real frame or clip -> project() -> the w and motion tokens that render it.
#
# A video is named by two integers, its content seed (z^c) and its motion seed: token z^m_j is drawn from its own RNG
# stream, seeded by (motion seed, j), so any frame can be rendered alone, in any order, from the 22 tokens around it
# (§5), at a cost that does not depend on t. (Training draws fresh tokens for the window it needs: statistically the
# same.) On CPU a frame's bits do not depend on the batch or window it is rendered in: anchors are computed in aligned
# blocks of ANCHOR_BLOCK (always the same shapes), and frames go through G in blocks of exactly ROW_BLOCK rows (CPU
# kernels pick their summation order by batch size). On a GPU the whole batch goes at once (cuDNN's choice is not ours).

def motion_tokens(motion_seed: int, first: int, count: int, dim: int) -> torch.Tensor:
    """Tokens z^m_j for j = first ... first+count-1 of the video `motion_seed` -> [count, dim]; j may be negative
    (the anchors near t = 0 look 20 tokens back). SeedSequence mixes (motion seed, j) as in step_rng (§12)."""
    keys = (np.random.SeedSequence([motion_seed, j % 2 ** 64]).generate_state(1, np.uint64)[0]
            for j in range(first, first + count))
    return torch.stack([torch.randn(dim, generator=torch.Generator().manual_seed(int(k))) for k in keys])

ROW_BLOCK, ANCHOR_BLOCK = 8, 16

def _in_row_blocks(fn, x: torch.Tensor) -> torch.Tensor:
    """fn over the rows of x; on CPU in blocks of exactly ROW_BLOCK rows, the last one padded with copies of the
    last row (rows are independent; real values keep fp16 layers in their usual range), dropped after."""
    if x.device.type != "cpu":
        return fn(x)
    n = x.shape[0]
    x = torch.cat([x, x[-1:].expand(-n % ROW_BLOCK, *x.shape[1:])])      # [n, ...] -> [n + (-n mod ROW_BLOCK), ...]
    return torch.cat([fn(x[i:i + ROW_BLOCK]) for i in range(0, len(x), ROW_BLOCK)])[:n]

@torch.no_grad()
def content_codes(G, seeds, truncation: float = 1.0) -> torch.Tensor:
    """w for each content seed -> [B, w_dim] (z^c ~ N(0, I) drawn from torch.Generator(seed))."""
    z = torch.stack([torch.randn(G.cfg.z_dim, generator=torch.Generator().manual_seed(int(s))) for s in seeds])
    return _in_row_blocks(lambda z_: G.mapping(z_, truncation), z.to(G.mapping.w_avg.device))   # (drawn on the CPU)

def anchor_params(G, motion, t, cache: Optional[dict] = None):
    """The two anchors of each time t [T] (frames) of one video, all Eq 4 needs whatever t is -> (4 x [T, 2, D]: the
    wave parameters of the left t_j and the right t_{j+1}; j [T]). motion: a seed, or (seed, first, tokens [L, D])
    whose tokens first ... first+L-1 are given (a projection, below). `cache` (a dict) keeps recent blocks."""
    # float64: --start reaches 10^7 s, t ~ 2.5e8 frames, past float32's exact integers (2^24), and
    # floor(t / delta_z) and the position between two anchors must be exact there.
    t = torch.as_tensor(t).double().cpu()
    j = torch.floor(t / G.cfg.motion_delta_z).long()                     # [T]
    nb, ctx, D = ANCHOR_BLOCK, G.motion.context, G.cfg.motion_dim
    seed, first, given = motion if isinstance(motion, tuple) else (int(motion), 0, torch.zeros(0, D))
    rows, cache = [], {} if cache is None else cache                     # (each block computed once a call at least)
    for jj in j.tolist() + (j + 1).tolist():                             # left, then right anchors
        b = jj // nb
        if (block := cache.get(key := (motion, b))) is None:
            lo = b * nb - ctx                                              # the block's first token
            tokens = motion_tokens(seed, lo, nb + ctx, D)
            a, e = max(first, lo), max(first, lo, min(first + len(given), lo + nb + ctx))   # the given ones here
            tokens[a - lo:e - lo] = given[a - first:e - first].cpu()       # (none here: a == e, both slices empty)
            block = [p[0] for p in G.motion(tokens[None].to(G.mapping.w_avg.device))]   # 4 x [nb, D]
            if len(cache) >= 256:                                          # bounded: memory stays flat; a dict
                cache.pop(next(iter(cache)))                               # keeps insertion order: the oldest goes
            cache[key] = block
        rows.append([p[jj - b * nb] for p in block])
    return [torch.stack(p).reshape(2, len(t), -1).transpose(0, 1) for p in zip(*rows)], j  # 4 x [2T, D] -> [T, 2, D]

@torch.no_grad()
def render_frames(G, w: torch.Tensor, motion_seeds, t: torch.Tensor, cache=None, force_fp32=False):
    """Frames for every (video, time) pair -> float [B, T, 3, H, W], nominally in [-1, 1] (not clamped). w [B, w_dim]
    content codes, motion_seeds: B motions (seeds, or a projection's, see anchor_params), t [T] float times in
    frames (>= 0, any spacing: a frame's cost depends on neither t nor the others)."""
    device, B, T = G.mapping.w_avg.device, w.shape[0], len(t)
    per_video = [anchor_params(G, ms, t, cache) for ms in motion_seeds]              # B x (4 x [T, 2, D], j [T])
    anchors = [torch.cat([pv[0][i] for pv in per_video]) for i in range(4)]       # 4 x [B*T, 2, D]
    j, t = per_video[0][1].to(device), torch.as_tensor(t).double().to(device)   # [T]; row r: video r // T, time r % T
    img = _in_row_blocks(lambda r: G.frames_from_anchors(w[r // T], [a[r] for a in anchors], j[r % T], t[r % T],
                                                         force_fp32), torch.arange(B * T, device=device))   # [B*T] rows
    return img.reshape(B, T, *img.shape[1:])                             # [B, T, 3, H, W]

def render_videos(G, content_seeds, t: torch.Tensor, motion_seeds=None, truncation: float = 1.0):
    """uint8 videos [B, T, H, W, 3] for the given seeds at times t [T] (frames, t = 0 ... n-1 for FVD)."""
    motion_seeds = content_seeds if motion_seeds is None else motion_seeds
    return to_uint8(render_frames(G, content_codes(G, content_seeds, truncation), motion_seeds, t))

@torch.no_grad()
def motion_codes(G, motion_seed: int, t: torch.Tensor) -> torch.Tensor:
    """v_t of one video at times t [T] (frames) -> [T, D]: its motion code, addressable (Eq 4; Fig 9)."""
    anchors, j = anchor_params(G, motion_seed, t)                        # 4 x [T, 2, D], [T]
    dev, t = G.mapping.w_avg.device, torch.as_tensor(t).double()
    return acyclic_embedding(*anchors, j.to(dev), t.to(dev), G.cfg.motion_delta_z, G.motion.wave)    # [T, D]

def sample(G: Generator, out: str, seconds: float, fps: float, data_fps: float, start: float = 0.0,
           seeds=(0,), motion_seeds=None, truncation: float = 1.0, batch: int = 16,
           progress: bool = True, w: Optional[torch.Tensor] = None) -> int:
    """Render len(seeds) videos (or one per given content code, w [B, w_dim]: a projection's) from t = start for
    `seconds` at `fps`, tiled, streamed to `out` -> frames written. Frame i is at t = (start + i / fps) * data_fps
    training frames: another fps samples the same continuous video more or less densely. Memory is flat in the
    length: `batch` time steps a chunk, and a bounded cache of anchor blocks, each computed once as t walks on."""
    motion_seeds = list(seeds) if motion_seeds is None else list(motion_seeds)
    n_frames, cache = max(1, int(round(seconds * fps))), {}      # cache: anchor blocks, kept from chunk to chunk
    w = content_codes(G, list(seeds), truncation) if w is None else w   # [B, w_dim], once per video
    with FrameSink(out, fps) as sink, tqdm(total=n_frames, unit="frame", disable=not progress,
                                           desc=os.path.basename(out)) as bar:
        for i in range(0, n_frames, batch):
            t = (start + torch.arange(i, min(i + batch, n_frames), dtype=torch.float64) / fps) * data_fps   # [T] frames
            frames = render_frames(G, w, motion_seeds, t, cache)           # [B, T, 3, H, W]
            if not torch.isfinite(frames).all():                 # (NaN weights: a black video, not an error)
                raise UserError(f"{out}: the generator renders non-finite values at t = {float(t[0]):g} "
                                f"frames (NaN or Inf weights?); nothing was written")
            sink.write(video_grid(to_uint8(frames)))
            bar.update(len(t))
    return n_frames

# Projection (Fig 2, Sec 4.3). Fig 2 projects a real image into the content space and animates it. A clip goes
# further: its w and the motion tokens z^m_j that cover its frame times are fitted together, each frame at its
# real time t. What comes out is a video of the continuous-time generator: it renders between the real frames
# (any --fps), past the clip's end (there the motion seed's tokens, addressable as above), or with another
# motion seed. The schedule is StyleGAN2-ADA's projector: w starts at w_avg; Adam's lr ramps up over the first
# 5% of the steps and down on a cosine over the last 25%; noise added to w, fading out over the first 75%,
# searches widely before the fit settles. The loss is the pixels' MSE: StyleGAN2-ADA's LPIPS needs VGG16 weights
# downloaded at run time, and on training clips MSE fitted better than an MSE over 4 scales or D's features.

def project(G, target: torch.Tensor, times, steps: int = 300, motion: bool = True, motion_seed: int = 0,
            lr: float = 0.1, noise: float = 0.05, token_weight: float = 1.0, distance=F.mse_loss,
            progress: bool = True) -> dict:
    """Fit w (from w_avg) and, with `motion`, the tokens covering `times` [T] (frames; from the motion seed's)
    so that G renders `target` [T, 3, R, R] in [-1, 1] -> dict(w [w_dim], tokens [L, D], first, loss, steps).
    Ctrl-C (or SIGTERM) stops it early: the best fit so far comes back, with steps = the steps done."""
    dev, dz, ctx = G.mapping.w_avg.device, G.cfg.motion_delta_z, G.motion.context
    gen = torch.Generator().manual_seed(motion_seed)
    ws = G.mapping(torch.randn(4096, G.cfg.z_dim, generator=gen).to(dev)).detach()   # for w_avg, w's spread (a number)
    w, w_std = ws.mean(0).requires_grad_(), (ws - ws.mean(0)).square().sum(1).mean().sqrt()   # w starts at w_avg
    t = torch.as_tensor(times, dtype=torch.float64).reshape(1, -1).to(dev)           # [1, T]
    first = int(torch.floor(t.min() / dz)) - ctx                # tokens first ... : every frame's 2 anchors
    tokens = motion_tokens(motion_seed, first, G.tokens_needed(t, dz, ctx), G.cfg.motion_dim).to(dev)
    opt, target = torch.optim.Adam([w, tokens.requires_grad_()] if motion else [w]), target.to(dev)
    best, done = (math.inf, w.detach().clone(), tokens.detach().clone()), 0
    with contextlib.suppress(KeyboardInterrupt):
        for done in tqdm(range(steps), desc="project", unit="step", disable=not progress):
            tau = done / steps
            ramp = min(1.0, tau / 0.05) * (0.5 - 0.5 * math.cos(math.pi * min(1.0, (1 - tau) / 0.25)))
            opt.param_groups[0]["lr"] = lr * ramp
            w_noisy = w + torch.randn(w.shape, generator=gen).to(dev) * w_std * noise * max(0.0, 1 - tau / 0.75) ** 2
            anchors, j = G.anchors_from_tokens(tokens[None], t)
            fit = distance(G.frames_from_anchors(w_noisy.expand(t.shape[1], -1), anchors, j[0], t[0]), target)
            # Each token is kept on N(0, I)'s shell, |z|^2 / D ~ 1: past the clip it meets seeded tokens.
            loss = fit + token_weight * (tokens.square().mean(1) - 1).square().mean() if motion else fit
            if fit.item() < best[0]:
                best = (fit.item(), w.detach().clone(), tokens.detach().clone())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        done = steps
    return dict(w=best[1].cpu(), tokens=best[2].cpu(), first=first, loss=best[0], steps=done)

# ------------------------------------------------------------------------------------------------
# Appendix A: the fused ModConv2d kernel (CUDA source, lazy build, autograd, self-check, parity)
# What §3's `fused_epilogue` calls on a GPU. Why: PyTorch's five elementwise kernels (y·d, +b, lrelu, ·gain, clamp) each
# read and write the activation, 10·E·B bytes for E elements of B bytes, 2·E·B fused (1.3 vs 0.27 GB a forward at ffs
# 256², fp16; the backward alike; §3's d, one small matmul, needs no kernel).
# --- A.1 The CUDA source. A *thread* runs one copy of a kernel; 32 form a *warp* (in lockstep); a *block* (32-256
# threads here) shares on-chip memory; the *grid* is all blocks of a launch. Grid-stride loops (i = my_id; i < n;
# i += all threads) let any grid cover any size; int64 indices keep tensors past 2^31 elements safe. One template serves
# fp64/fp32/fp16/bf16: math in `acc_t` (fp32; fp64 for fp64), one rounding per output, no --use_fast_math (inexact).
_MODCONV_CUDA = r"""
#include <ATen/ATen.h>
#include <ATen/AccumulateType.h>    // at::acc_type<scalar_t, true>: float for half/bf16/float, double for double
#include <c10/cuda/CUDAGuard.h>     // (and CUDAStream, CUDAException; not ATen/cuda/CUDAContext.h: it needs cuBLAS)
using Opt = std::optional<at::Tensor>;
constexpr double kSlope = 0.2;            // LRELU_SLOPE; act: 0 linear, 1 lrelu
constexpr int64_t kMaxBlocks = 4096;      // ≈ 30 blocks per SM of an H100 fill it; the loops stride over the rest
// The block's sum, in every thread (all must call it): 5 butterfly exchanges (__shfl_xor_sync reads another lane's
// register) leave a warp's sum in all its lanes; lane 0 parks it in shared memory; every warp sums the ≤ 32 partials.
template <typename T> __device__ T block_sum(T v, T* smem /* [32] */) {
  auto warp_sum = [](T x) { for (int k = 16; k > 0; k >>= 1) x += __shfl_xor_sync(0xffffffffu, x, k); return x; };
  const int lane = threadIdx.x & 31;
  v = warp_sum(v);
  if (lane == 0) smem[threadIdx.x >> 5] = v;
  __syncthreads();                                          // all partials written
  v = lane < (blockDim.x >> 5) ? smem[lane] : T(0);
  __syncthreads();                                          // all partials read: smem may be reused at once
  return warp_sum(v);
}
// out = clamp(act(z) · gain, ±clamp), clamp < 0 meaning none; a NaN stays NaN, as in torch.clamp.
template <typename acc_t> __device__ acc_t act_gain_clamp(acc_t z, int act, acc_t gain, acc_t clamp) {
  z = (act == 1 && !(z > acc_t(0)) ? z * acc_t(kSlope) : z) * gain;
  return clamp < acc_t(0) ? z : (z > clamp ? clamp : (z < -clamp ? -clamp : z));
}
// ∂out/∂z from the saved *output* o (StyleGAN2's trick): gain > 0 and clamp > 0 keep the sign, so o > 0 ⇔ z > 0
// gives the lrelu's side, |o| < clamp an inactive clamp (slope 0 at |o| == clamp, as torch.clamp's); no out: o = 1.
template <typename acc_t> __device__ acc_t slope(acc_t o, int act, acc_t gain, acc_t clamp) {
  if (clamp >= acc_t(0) && !(o < clamp && o > -clamp)) return acc_t(0);
  return act == 1 && !(o > acc_t(0)) ? gain * acc_t(kSlope) : gain;
}
// Forward: blockIdx.y strides over the N·O planes p = n·O + o, blockIdx.x and the threads over its H·W pixels.
template <typename scalar_t, typename acc_t> __global__ void forward_kernel(const scalar_t* __restrict__ y,
    const acc_t* __restrict__ d, const acc_t* __restrict__ bias, scalar_t* __restrict__ out, int64_t planes,
    int64_t O, int64_t HW, int act, acc_t gain, acc_t clamp) {
  for (int64_t p = blockIdx.y; p < planes; p += gridDim.y) {
    const acc_t dp = d ? d[p] : acc_t(1), bp = bias ? bias[p % O] : acc_t(0);
    for (int64_t i = p * HW + blockIdx.x * blockDim.x + threadIdx.x; i < (p + 1) * HW; i += gridDim.x * blockDim.x)
      out[i] = static_cast<scalar_t>(act_gain_clamp(static_cast<acc_t>(y[i]) * dp + bp, act, gain, clamp));
  }
}
// Backward (A.3's chain rule): one block per plane p (grid-stride, uniform across the block, as block_sum needs):
// grad_y = gz · d[p] per pixel, grad_d[p] = Σ_hw gz · y and bias_part[p] = Σ_hw gz (summed over n by the host).
template <typename scalar_t, typename acc_t> __global__ void backward_kernel(const scalar_t* __restrict__ g,
    const scalar_t* __restrict__ out, const scalar_t* __restrict__ y, const acc_t* __restrict__ d,
    scalar_t* __restrict__ grad_y, acc_t* __restrict__ grad_d, acc_t* __restrict__ bias_part, int64_t planes,
    int64_t HW, int act, acc_t gain, acc_t clamp) {
  __shared__ acc_t smem[32];
  for (int64_t p = blockIdx.x; p < planes; p += gridDim.x) {
    acc_t dp = d ? d[p] : acc_t(1), sum_gz_y = 0, sum_gz = 0;
    for (int64_t i = p * HW + threadIdx.x; i < (p + 1) * HW; i += blockDim.x) {
      const acc_t gz = static_cast<acc_t>(g[i]) * slope(out ? static_cast<acc_t>(out[i]) : acc_t(1), act, gain, clamp);
      if (grad_y) grad_y[i] = static_cast<scalar_t>(gz * dp);
      if (grad_d) sum_gz_y += gz * static_cast<acc_t>(y[i]);
      sum_gz += gz;
    }
    sum_gz_y = block_sum(sum_gz_y, smem);                   // (both by all threads, used or not)
    sum_gz = block_sum(sum_gz, smem);
    if (threadIdx.x == 0 && grad_d) grad_d[p] = sum_gz_y;
    if (threadIdx.x == 0 && bias_part) bias_part[p] = sum_gz;
  }
}
// Threads for a block walking a plane of HW pixels: HW rounded up to whole warps, 32..256 (4×4: one warp).
int threads_for(int64_t HW) { return int(std::min<int64_t>(256, std::max<int64_t>(32, (HW + 31) / 32 * 32))); }
template <typename T> T* ptr(const at::Tensor& t) { return t.defined() ? t.data_ptr<T>() : nullptr; }
cudaStream_t stream() { return c10::cuda::getCurrentCUDAStream(); }   // (PyTorch's current one: after its work)
// Each input checked before a launch and made contiguous (grad_out may have stride 0); an absent optional: undefined.
at::Tensor input(const Opt& t, const char* name, const at::Tensor& like, at::IntArrayRef shape, at::ScalarType dtype) {
  if (!t.has_value() || !t->defined()) return at::Tensor();
  TORCH_CHECK(like.is_cuda() && like.dim() == 4 && t->device() == like.device() && t->scalar_type() == dtype &&
              t->sizes() == shape, name, ": expected CUDA ", dtype, shape, ", got ", t->toString(), t->sizes());
  return t->contiguous();
}
// The host functions: check, allocate, launch (on the tensors' device: the guard makes it current).
at::Tensor epilogue_forward(at::Tensor y_, const Opt& d_, const Opt& bias_, int64_t act, double gain, double clamp) {
  const at::Tensor y = input(y_, "y", y_, y_.sizes(), y_.scalar_type());
  const c10::cuda::CUDAGuard guard(y.device());
  const int64_t N = y.size(0), O = y.size(1), HW = y.size(2) * y.size(3), planes = N * O;
  const auto acc = at::toAccumulateType(y.scalar_type(), /*is_cuda=*/true);
  const at::Tensor d = input(d_, "d", y, {N, O}, acc), bias = input(bias_, "bias", y, {O}, acc);
  const at::Tensor out = at::empty_like(y);
  const int threads = threads_for(HW);                                     // (no pixels: one idle block)
  const int64_t grid_y = std::max<int64_t>(1, std::min<int64_t>(planes, 65535));   // gridDim.y's limit
  const int64_t grid_x = std::max<int64_t>(1, std::min((HW + threads - 1) / threads, kMaxBlocks / grid_y));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, y.scalar_type(), "epilogue_forward", [&] {
    using acc_t = at::acc_type<scalar_t, true>;
    forward_kernel<scalar_t, acc_t><<<dim3(unsigned(grid_x), unsigned(grid_y)), threads, 0, stream()>>>(
        ptr<scalar_t>(y), ptr<acc_t>(d), ptr<acc_t>(bias), ptr<scalar_t>(out), planes, O, HW, act, gain, clamp);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}
std::vector<at::Tensor> epilogue_backward(const at::Tensor& grad_out, const Opt& out_, const Opt& y_, const Opt& d_,
    bool need_y, bool need_d, bool need_bias, int64_t act, double gain, double clamp) {
  const at::Tensor g = input(grad_out, "grad_out", grad_out, grad_out.sizes(), grad_out.scalar_type());
  const c10::cuda::CUDAGuard guard(g.device());
  const int64_t N = g.size(0), O = g.size(1), HW = g.size(2) * g.size(3), planes = N * O;
  const auto acc = at::toAccumulateType(g.scalar_type(), /*is_cuda=*/true);
  const at::Tensor out = input(out_, "out", g, g.sizes(), g.scalar_type()), d = input(d_, "d", g, {N, O}, acc);
  const at::Tensor y = input(y_, "y", g, g.sizes(), g.scalar_type());
  TORCH_CHECK((out.defined() || (act == 0 && clamp < 0)) && (y.defined() || !need_d), "out (act, clamp) or y missing");
  const at::Tensor grad_y = need_y ? at::empty_like(g) : at::Tensor();     // (each written whole below)
  const at::Tensor grad_d = need_d ? at::empty({N, O}, g.options().dtype(acc)) : at::Tensor();
  const at::Tensor bias_part = need_bias ? at::empty({N, O}, g.options().dtype(acc)) : at::Tensor();
  const unsigned blocks = unsigned(std::max<int64_t>(1, std::min(planes, kMaxBlocks)));   // (no planes: one idle)
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, g.scalar_type(), "epilogue_backward", [&] {
    using acc_t = at::acc_type<scalar_t, true>;
    backward_kernel<scalar_t, acc_t><<<blocks, threads_for(HW), 0, stream()>>>(ptr<scalar_t>(g), ptr<scalar_t>(out),
        ptr<scalar_t>(y), ptr<acc_t>(d), ptr<scalar_t>(grad_y), ptr<acc_t>(grad_d), ptr<acc_t>(bias_part), planes,
        HW, act, gain, clamp);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {grad_y, grad_d, need_bias ? bias_part.sum(0) : at::Tensor()};   // grad_bias: ATen's Σ_n, deterministic
}
"""
_MODCONV_CPP = "#include <torch/extension.h>\nusing Opt = std::optional<at::Tensor>;\n" + "".join(   # (g++, to bind:)
    f"{signature};\n" for signature in re.findall(r"^\S+ epilogue_\w+\([^)]*\)", _MODCONV_CUDA, re.M))  # the hosts

# --- A.2 Lazy build, cached under a hash of all that changes the binary; of N processes one builds, the others wait.
_PLUGIN, _SELF_CHECKS = None, {}   # the module (None: not built yet, False: none); {device: its self-check passed}

def _find_cuda_home():
    """torch's CUDA_HOME if it holds bin/nvcc and the headers (its guess from nvcc's folder on PATH may not)."""
    with contextlib.redirect_stderr(io.StringIO()):              # (importing it prints torch's own guess)
        from torch.utils import cpp_extension
    home = cpp_extension.CUDA_HOME
    return home if home and all(Path(home, f).is_file() for f in ('bin/nvcc', 'include/cuda_runtime.h')) else None

def build_modconv_plugin(verbose=False, force_compile_without_gpu=False, cache_root=None):
    """Build or load the plugin -> (module or None, {reason: None if ok, from_cache, seconds}); never raises (warns)."""
    global _PLUGIN
    gpus = ';'.join(sorted({'%d.%d' % torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())}))
    arch_list = os.environ.get('TORCH_CUDA_ARCH_LIST') or gpus or force_compile_without_gpu and '8.0+PTX'
    key = repr((_MODCONV_CPP, _MODCONV_CUDA, torch.__version__, torch.version.cuda, arch_list, sys.version))
    name = f'stylegan_v_modconv_{hashlib.sha256(key.encode()).hexdigest()[:12]}'   # (PyInit_<name> in the .so)
    build_dir = Path(cache_root or os.environ.get('STYLEGAN_V_CACHE') or '~/.cache/stylegan_v', name).expanduser()
    t0, cached, _PLUGIN = time.time(), (build_dir / f'{name}.so').is_file(), False
    reason = ('no CUDA in this torch build' if torch.version.cuda is None else 'no CUDA GPU visible' if not arch_list
              else None if _find_cuda_home() else 'no CUDA toolkit found: set CUDA_HOME to one')
    if reason is None:
        if not cached:                              # said: a silent minute looks like a hang
            print(f'[modconv] compiling the CUDA kernel for {arch_list} in {build_dir} (1-2 min)', file=sys.stderr)
        os.environ['TORCH_CUDA_ARCH_LIST'] = arch_list   # where torch reads the target (it was that or unset)
        try:                                        # (torch.utils.cpp_extension: imported by _find_cuda_home above)
            build_dir.mkdir(parents=True, exist_ok=True)
            _PLUGIN = torch.utils.cpp_extension.load_inline(name, [_MODCONV_CPP], [_MODCONV_CUDA], verbose=verbose,
                functions=['epilogue_forward', 'epilogue_backward'], extra_cflags=['-O3'], extra_cuda_cflags=['-O3'],
                build_directory=str(build_dir), with_cuda=True, no_implicit_headers=True)
        except Exception as error:                  # a compiler or linker error (or no ninja), an unwritable cache
            found = re.search(r'^\s*((?!Error building)[^\n]*\berror\b[^\n]*)', str(error), re.M | re.I)  # nvcc's
            reason = f'build failed: {found[1].strip()[:300] if found else _first_line(error)}'
            warnings.warn(f"stylegan_v: the fused ModConv2d CUDA ops are unavailable ({reason}); using the PyTorch "
                          "reference instead (`doctor --verbose` shows the compiler's output)", stacklevel=3)
    return _PLUGIN or None, dict(reason=reason, from_cache=cached, seconds=round(time.time() - t0, 2))

# --- A.3 The autograd Function: first derivatives by the kernels, second ones (R1's, Sec 4.1) by PyTorch from saved
# tensors: m = ∂out/∂z (`slope`), gz = grad_out · m, grad_y = gz · d, grad_d = Σ_hw gz · y, grad_bias = Σ_{n,hw} gz.
class _FusedEpilogue(torch.autograd.Function):
    """fused_epilogue_ref(y, d, bias, act, gain, clamp) by the kernels; d and bias in acc_t (as §3's layers pass)."""
    @staticmethod
    def forward(ctx, y, d, bias, act, gain, clamp):
        gain = float(ACT_GAIN.get(act, 1.0) if gain is None else gain)
        assert act in ACT_GAIN and gain > 0 and (clamp is None or clamp > 0), (act, gain, clamp)   # what `slope` needs
        ctx.cfg = (int(act == 'lrelu'), gain, -1.0 if clamp is None else float(clamp))   # (act_id 1: lrelu)
        out = _PLUGIN.epilogue_forward(y, d, bias, *ctx.cfg)
        ctx.save_for_backward(y if ctx.needs_input_grad[1] else None,      # y: only for the gradient of d
                              d, out if act == 'lrelu' or clamp else None)  # d: [N, O]; out: m (none: m = gain)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        (y, d, out), need, (act_id, gain, clamp) = ctx.saved_tensors, ctx.needs_input_grad[:3], ctx.cfg
        if not torch.is_grad_enabled():                                    # a first derivative: the kernel
            return (*_PLUGIN.epilogue_backward(grad_out, out, y, d, *need, *ctx.cfg), None, None, None)
        m = gain if out is None else torch.full_like(out, gain)            # [N, O, H, W] (or a float)
        m = torch.where(out > 0, m, m * LRELU_SLOPE) if act_id == 1 else m  # out > 0 ⇔ z > 0 (gain > 0)
        gz = grad_out * (m * (out.abs() < clamp) if clamp >= 0 else m)     # zero where the clamp was active
        acc = torch.promote_types(gz.dtype, torch.float32)
        return (gz * (d[:, :, None, None] if d is not None else 1) if need[0] else None,
                (gz * y).sum(dim=[2, 3], dtype=acc) if need[1] else None,   # [N, O]
                gz.sum(dim=[0, 2, 3], dtype=acc) if need[2] else None, None, None, None)

# --- A.4 Parity (the self-check's, doctor's): the same inputs through the kernel and, upcast to fp32 (fp64 for fp64),
# the reference: the error is the kernel's own rounding, ~10 allowed (fp16 5e-3 ~ 10 x 2^-11); an indexing bug errs ~1.
PARITY_TOL = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 5e-3, torch.bfloat16: 4e-2}

def _epilogue_test_inputs(N, O, H, W, dtype, device, act, clamp, margin=0.05, seed=0):
    """Random (y, d, bias) requiring grad (d, bias in acc_t), no z = y·d + b within `margin` of a kink."""
    gen, acc, bound = torch.Generator().manual_seed(seed), torch.promote_types(dtype, torch.float32), clamp or math.inf
    randn = lambda *shape: torch.randn(*shape, generator=gen, dtype=torch.float64)  # noqa: E731
    d, bias, z = torch.rand(N, O, generator=gen, dtype=torch.float64) + 0.5, randn(O) * 0.3, randn(N, O, H, W) * 2
    near_kink = lambda z: (z.abs() < margin) | ((bias_act_ref(z, None, act).abs() - bound).abs() < margin)  # noqa: E731
    while near_kink(z).any():
        z = torch.where(near_kink(z), randn(N, O, H, W) * 2, z)     # resampled: rounding would flip the slope
    y = (z - bias[None, :, None, None]) / d[:, :, None, None]                       # so that y·d + b = z
    return tuple(t.to(device, dt).requires_grad_(True) for t, dt in ((y, dtype), (d, acc), (bias, acc)))

def check_parity(device='cuda', dtypes=(torch.float32, torch.float16, torch.bfloat16),
                 configs=(('lrelu', None, True, True), ('lrelu', 1.0, True, True), ('linear', 0.5, False, False))):
    """The kernel vs the reference by dtype and (act, clamp, d?, bias?): output, gradients -> {name: {ok, err, tol}}."""
    checks = {}
    for dtype, (act, clamp, use_d, use_bias) in itertools.product(dtypes, configs):
        y, d, bias = _epilogue_test_inputs(3, 5, 7, 9, dtype, device, act, clamp)
        fast = {n: t for n, t, use in zip(('y', 'd', 'bias'), (y, d, bias), (True, use_d, use_bias)) if use}
        ref = {n: t.detach().to(d.dtype).requires_grad_() for n, t in fast.items()}      # all in acc_t
        grad = torch.randn(y.shape, generator=torch.Generator().manual_seed(1)).to(y)
        outs = [fused_epilogue(**x, act=act, clamp=clamp, impl=impl) for impl, x in (('cuda', fast), ('ref', ref))]
        results = [[out, *torch.autograd.grad(out, [*x.values()], grad.to(out))] for out, x in zip(outs, (fast, ref))]
        for what, got, want in zip(['forward', *(f'grad_{n}' for n in fast)], *results):
            err, tol = ((got - want).abs().max() / want.abs().max().clamp_min(1e-30)).item(), PARITY_TOL[dtype]
            checks[f'{dtype}/{act}/clamp={clamp}/d={use_d}/b={use_bias}/{what}'] = dict(ok=err <= tol, err=err, tol=tol)
    return checks                                   # (ok: err <= tol, so an err of NaN fails: it compares with nothing)

def _resolve_impl(impl, x):
    """§3's choice: impl, or for None 'cuda' on a GPU once the plugin (built on first use) passed check_parity there."""
    if impl or not (USE_CUSTOM_OPS and x.is_cuda):
        return impl or 'ref'
    if _PLUGIN is None:
        build_modconv_plugin()
    if _PLUGIN and str(x.device) not in _SELF_CHECKS:
        try:                                        # a kernel that crashes is as unusable as a wrong one
            bad = [f"{k}: err {c['err']:.1e} > {c['tol']}" for k, c in check_parity(x.device).items() if not c['ok']]
        except Exception as e:
            bad = [f'{type(e).__name__}: {_first_line(e)}']
        if bad:                                     # (a warning: a wrong kernel costs speed, not correctness)
            warnings.warn(f'stylegan_v: not using the kernel on {x.device}: it disagrees with the reference ({bad[0]})')
        _SELF_CHECKS[str(x.device)] = not bad
    return 'cuda' if _PLUGIN and _SELF_CHECKS[str(x.device)] else 'ref'

# ------------------------------------------------------------------------------------------------
# Appendix B: the authors' release: its architecture, and its snapshots read without running anything
# B.1 Its architecture (arch 'release', the README's deviations): §5's, §7's modules varied, chosen in ARCH_VARIANTS.
class ReleaseMotionMapping(MotionMappingNetwork):
    """The release's AlignedTimeEncoder on F_m's codes: waves without amplitudes (v~ = [sin, cos] of the phase), periods
    log-spaced from period_min to period_max (Eq 6's are linear: a far longer joint cycle, Fig 9), phases scaled."""
    wave = staticmethod(lambda alpha, phase: torch.cat([torch.sin(phase), torch.cos(phase)], dim=-1))   # [N, 2F]

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        del self.W_alpha                                          # no amplitudes
        self.W_omega, self.W_rho, self.W_a = (FC(cfg.motion_dim, n * cfg.time_enc_dim, bias=False) for n in (1, 1, 2))
        periods = 2.0 ** np.linspace(math.log2(cfg.period_min), math.log2(cfg.period_max), cfg.time_enc_dim)[::-1]
        self.register_buffer("sigma", torch.from_numpy(2 * np.pi / periods).float())   # [F] rad/frame, slowest first
        self.register_buffer("phase_scales", cfg.period_max * self.sigma / (2 * math.pi))

    def wave_params(self, u: torch.Tensor):
        omega = (torch.tanh(self.W_omega(u)) + 1) * self.sigma
        return torch.ones_like(omega), omega, self.W_rho(u) * self.phase_scales, self.W_a(u)

class ReleaseTimeGapEncoder(nn.Module):
    """The release's time conditioning of D: per gap delta, a learned Embedding of the rounded gap and [sin, cos] of
    log2(T) Fourier features pi 2^i delta / T, the k-1 gap codes into a mapping network; projection head only."""
    def __init__(self, k: int, cmap_dim: int, cfg: Config):
        super().__init__()
        T = 2 ** math.ceil(math.log2(cfg.max_time))             # the slowest wave, sin(pi delta / T), has period 2T
        self.embed = nn.Embedding(cfg.max_time, cfg.d_time_dim)   # one learned vector per integer gap < max_time
        self.register_buffer("freqs", math.pi * 2.0 ** torch.arange(int(math.log2(T))) / T)   # [F] rad/frame
        self.project = FC((k - 1) * (cfg.d_time_dim + 2 * len(self.freqs)), cmap_dim)
        self.mapping = nn.Sequential(*(FC(cmap_dim, cmap_dim, act="lrelu", lr_mul=0.01) for _ in range(2)))

    def forward(self, t: torch.Tensor) -> torch.Tensor:          # t [B, k] frame times
        delta = torch.diff(t.float(), dim=1)                     # [B, k-1]
        phase = delta[..., None] * self.freqs                    # [B, k-1, F]
        codes = torch.cat([self.embed(delta.round().long()), phase.sin(), phase.cos()], -1)   # [B, k-1, d + 2F]
        x = self.project(codes.flatten(1))                                                     # [B, cmap]
        return self.mapping(x * (x.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt())        # x / rms(x)

ARCH_VARIANTS["release"] = dict(motion=ReleaseMotionMapping, time_enc=ReleaseTimeGapEncoder,
    v_dim=lambda cfg: 2 * cfg.time_enc_dim, fixed=dict(d_cond="concat", d_frame_div=2, mbstd_strided=True),  # its D
    defaults=lambda fields: dict(period_min=float(fields.get("motion_delta_z", 16)), span_dist="release"))

# B.2 Their pickles, dict(training_set_kwargs, G, D, G_ema, augment_pipe), hold *persistence* objects whose source
# pickle would import and run. _Inert stands in for all but five names: it records their state, and runs nothing.
class _Inert:
    state: dict = {}
    __init__ = __setitem__ = append = lambda self, *args, **kwargs: None  # noqa: E731  (SETITEMS, APPENDS too)

    def __setstate__(self, state):
        self.state = state if isinstance(state, dict) else {}
        return self

class _SnapshotUnpickler(pickle.Unpickler):
    REAL = {("collections", "OrderedDict"): dict,         # (an older torch's _parameters, _modules: in order)
            **{("torch._utils", f): getattr(torch._utils, f) for f in ("_rebuild_tensor_v2", "_rebuild_parameter")},
            ("torch.storage", "_load_from_bytes"): lambda data: torch.load(io.BytesIO(data), map_location="cpu",
                weights_only=True) if type(data) in (bytes, bytearray) else _Inert()}   # (a plain pickle's storage)

    def find_class(self, module, name):                  # persistence's rebuild: its recorded state, never its source
        return self.REAL.get((module, name), _Inert) if name != "_reconstruct_persistent_obj" else (
            lambda meta: _Inert().__setstate__(meta.get("state") if isinstance(meta, dict) else None))

def _release_name(ours: str, resolution: int) -> str:
    """The release's name of our state_dict name (ours count blocks from the input, the release's name their size)."""
    return functools.reduce(lambda name, rule: re.sub(*rule, name), [
        (r"^mapping\.layers\.", "mapping.fc"), (r"^motion\.", "synthesis.motion_encoder."),              # G: F_c, F_m
        (r"conv_(weight|bias)e?s\.(\d+)$", r"conv.\2.\1"), (r"W_omega\.", "time_encoder.periods_predictor."),
        (r"W_rho\.", "time_encoder.phase_predictor."), (r"W_a\.", "time_encoder.aligners_predictor."),
        (r"encoder\.sigma$", "encoder.time_encoder.freqs"), (r"\.phase_scales$", ".time_encoder.phase_scales"),
        (r"^synthesis\.blocks\.(\d+)\.", lambda m: f"synthesis.b{4 << int(m[1])}."),                     # G: S
        (r"\.const$", ".input.input.const"), (r"affine(\d)", r"conv\1.affine"), (r"torgb\.conv\.", "torgb."),
        (r"^time_enc\.embed\.", "time_encoder.const_embed."), (r"^time_enc\.project\.", "mapping.embed."),
        (r"^time_enc\.freqs$", "time_encoder.time_encoder.fourier_coefs"), (r"^time_enc\.mapping\.", "mapping.fc"),
        (r"^from_rgb\.", f"b{resolution}.fromrgb."), (r"^epi_", "b4."),                                 # D
        (r"^blocks\.(\d+)\.", lambda m: f"b{resolution >> int(m[1])}.")], ours)

def import_release_snapshot(path: str) -> dict:
    """An authors' network-snapshot-*.pkl -> our checkpoint dict, safely; the Config from what G_ema and D recorded."""
    def plain(obj):                                      # OmegaConf's stand-ins (DictConfig, ListConfig: _content;
        if isinstance(obj, _Inert):                      # AnyNode: _val) and dicts -> plain values (lists: as they are)
            return plain(obj.state.get("_content", obj.state.get("_val")))
        return {k: plain(v) for k, v in obj.items()} if isinstance(obj, dict) else obj

    def module_state(obj, prefix=""):                    # a recorded torch module's tensors, by state_dict name
        state = obj.state if isinstance(obj, _Inert) else {}
        out = {prefix + name: tensor.detach() for group in ("_parameters", "_buffers")
               for name, tensor in (state.get(group) or {}).items() if torch.is_tensor(tensor) and _plain(tensor)}
        for name, child in (state.get("_modules") or {}).items():
            out.update(module_state(child, f"{prefix}{name}."))
        return out
    if (size := os.path.getsize(path)) > 8 * 2 ** 30:   # a published 1024^2 snapshot is ~1 GB; more is not one
        raise UserError(f"{path}: {size / 2 ** 30:.1f} GB, larger than any StyleGAN-V snapshot")
    try:                                                 # (a deep or cyclic pickle: a RecursionError, also one line)
        with open(path, "rb") as f:
            snap = _SnapshotUnpickler(f).load()
        G, D = snap["G_ema"].state, snap["D"].state
        g, d, Dk, Gk = plain(G["cfg"]), plain(D["cfg"]), plain(D["_init_kwargs"]), plain(G["_init_kwargs"])
        syn, motion, time_enc, sampling = Gk.get("synthesis_kwargs", {}), g["motion"], g["time_enc"], g["sampling"]
        cfg = make_config("ffs", arch="release", resolution=int(G["img_resolution"]), w_dim=int(G["w_dim"]),
            mapping_layers=int(Gk.get("mapping_kwargs", {}).get("num_layers", 2)), z_dim=int(g["z_dim"]),
            channel_base=int(syn["channel_base"]), num_fp16_res=int(syn.get("num_fp16_res", 4)),
            channel_max=int(syn["channel_max"]), conv_clamp=syn.get("conv_clamp"), motion_dim=int(motion["v_dim"]),
            motion_kernel=int(motion["kernel_size"]), motion_delta_z=int(motion["motion_z_distance"]),
            period_min=float(time_enc["min_period_len"]), period_max=float(time_enc["max_period_len"]),
            time_enc_dim=int(time_enc["dim"]), d_channel_max=int(Dk["channel_max"]), d_concat_res=int(d["concat_res"]),
            d_channel_base=int(Dk["channel_base"]), mbstd_group=int(d.get("mbstd_group_size", 4)),
            frames_per_clip=int(sampling["num_frames_per_video"]), max_span=int(sampling.get("max_dist", 32)),
            span_dist="release" if sampling.get("total_dists") else "uniform", max_time=int(sampling["max_num_frames"]),
            fps=float(sampling.get("fps", 25)), mirror=bool((snap.get("training_set_kwargs") or {}).get("xflip", True)))
        theirs = {n: module_state(snap.get(n)) for n in ("G", "G_ema", "D", "augment_pipe")}
    except Exception as e:
        raise UserError(f"{path}: not a StyleGAN-V snapshot ({type(e).__name__}: {_first_line(e)})") from None
    check_weights_held(cfg, (Generator, Discriminator), [*theirs["G_ema"].values(), *theirs["D"].values()], path)
    kimg = re.search(r"network-snapshot-(\d+)", base := os.path.basename(path))   # the release names them by kimg
    p = theirs["augment_pipe"].get("p")                   # ADA's probability (module_state keeps only tensors)
    state = dict(cfg=dataclasses.asdict(cfg), step=0, nimg=1000 * int(kimg[1]) if kimg else 0,
                 source=f"authors' snapshot {base}", aug_p=float(p) if p is not None and p.numel() == 1 else 0.0)
    for name, module in (("G", Generator), ("G_ema", Generator), ("D", Discriminator)):
        state[name] = module(cfg).state_dict()
        for key, want in state[name].items():
            their_key, fixed = _release_name(key, cfg.resolution), key.endswith(("sigma", "phase_scales", "freqs"))
            tensor = theirs[name].get(their_key, want if fixed else None)    # a buffer the Config fixes: ours
            shape = "missing" if tensor is None else tuple(tensor.shape)
            if shape not in (tuple(want.shape), (1, *want.shape)):             # (const, freqs: a leading 1)
                raise UserError(f"{path}: {name}.{their_key} is {shape}, expected {tuple(want.shape)}")
            if fixed and not torch.allclose(tensor.reshape(want.shape).float(), want, rtol=1e-5):
                raise UserError(f"{path}: {name}.{their_key} is not what the snapshot's settings give")
            state[name][key] = want if fixed else tensor.reshape(want.shape).float()
    return state

# ------------------------------------------------------------------------------------------------
# Appendix C: measuring and drawing -- bench, doctor (the GPU acceptance run), figures, plot
def bench_model(cfg: Config, device: torch.device, name: str, repeat: int = 3, train: bool = True) -> None:
    """Prints "name, what: value" for a new model of `cfg`: frames/s from t = 0 and 1 h (the same: Sec 4.3), s/kimg."""
    import timeit
    cuda, B, k, H = device.type == "cuda", cfg.batch, cfg.frames_per_clip, cfg.resolution

    def seconds(fn):                                             # the median of `repeat` calls after a warm-up one
        call = lambda: [fn(), torch.cuda.synchronize(device) if cuda else None]   # (the GPU runs asynchronously)
        return np.median(timeit.repeat(call, number=1, repeat=repeat + 1)[1:])
    G = Generator(cfg).eval().requires_grad_(False).to(device)
    for t0 in (0, 90_000):
        s = seconds(lambda: render_frames(G, content_codes(G, [0]), [0], t0 + torch.arange(16.0)))
        print(f"{name}, rendering a video from t={t0} (frames/s): {16 / s:.1f}")
    if train:
        trainer = Trainer(dataclasses.replace(cfg, r1_gamma=0.0), Dist(device=device))   # gamma 0: no R1 steps
        real = torch.randint(0, 256, (B, k, H, H, 3), dtype=torch.uint8)                 # [B, k, H, W, 3] random frames
        t = fake_clip_times(cfg, np.random.default_rng(0), B, k, [cfg.max_time])        # [B, k] frame times
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        s = seconds(lambda: trainer.step(real, t))
        print(f"{name}, training on {B} clips of {k} frame(s) (s/kimg): {s / (B * k) * 1e3:.2f}")
        if cuda:                                                 # (Adam's state included: to choose --batch)
            print(f"{name}, training's peak memory (GiB): {torch.cuda.max_memory_allocated(device) / 2 ** 30:.2f}")

def cmd_bench(args) -> None:
    device = _pick_device(args.device)
    print(f"# torch {torch.__version__} on", torch.cuda.get_device_name(device) if device.type == "cuda" else "a CPU")
    for cfg in map(make_config, args.presets):
        bench_model(cfg, device, f"{cfg.preset} {cfg.resolution}^2", args.repeat, args.train)

def cmd_doctor(args) -> None:
    """`doctor`, printed as it comes: the toolchain, the kernel's build (even without a GPU), on a GPU its parity."""
    global USE_CUSTOM_OPS                                        # (main restores it)
    cuda, device = torch.cuda.is_available(), _pick_device(None)
    print(f"torch: {torch.__version__} (CUDA {torch.version.cuda or 'none'}), python {sys.version.split()[0]}")
    nvcc = (home := _find_cuda_home()) and os.path.join(home, "bin", "nvcc")   # (its version vs torch's CUDA)
    print("nvcc:", f"{nvcc} ({subprocess.check_output([nvcc, '-V'], text=True).split()[-1]})" if nvcc else "none")
    print("GPUs:", ", ".join(f"{torch.cuda.get_device_name(i)} (sm_{'%d%d' % torch.cuda.get_device_capability(i)})"
                             for i in range(torch.cuda.device_count())) or "none (the kernel's parity needs one)")
    module, status = build_modconv_plugin(verbose=args.verbose, force_compile_without_gpu=not cuda)
    print("kernel:", ("ready in {seconds} s" if module else "NOT built: {reason}").format(**status))   # (a build: said)
    if kernel := cuda and module is not None:
        checks = check_parity(device, tuple(PARITY_TOL))         # float64, float32, float16, bfloat16
        bad = [f"; FAILED {k}: err {v['err']:.1e} > tol {v['tol']:.0e}" for k, v in checks.items() if not v["ok"]]
        print(f"kernel parity: {len(checks) - len(bad)}/{len(checks)} checks ok" + "".join(bad))
    if args.full:   # the kernel on and off at float16 layers, off at float32 (no kernel: the last two; a CPU: the last)
        cfg = make_config("ffs", batch=16) if cuda else make_config("tiny", resolution=16, batch=4)   # CPU: a smoke run
        for on, fp16 in [(True, True), (False, True), (False, False)][(not kernel) + (not cuda):]:
            USE_CUSTOM_OPS = on                                  # what ModConv2d's dispatch reads
            bench_model(dataclasses.replace(cfg, num_fp16_res=4 * fp16), device,
                        f"{cfg.preset}, kernel {'on' if on else 'off'}, float{16 if fp16 else 32} layers")

def _ticks(lo: float, hi: float, n: int = 6) -> np.ndarray:
    """Ticks over [lo, hi]: the least step 1, 2, 2.5 or 5 x 10^e with <= n intervals (0.5 % slack: 60.048 -> 60)."""
    for step in (m * 10.0 ** e for e in range(-9, 12) for m in (1, 2, 2.5, 5)):
        first, last = math.floor(lo / step + 0.005), math.ceil(hi / step - 0.005)
        if last - first <= n:
            return np.arange(first, max(last, first + 1) + 1) * step     # (a single point gets one interval)

def plot_curves(curves: dict, ylabel: str, xlabel="kimg (thousands of real frames shown to D)", size=(640, 400)):
    """uint8 [H, W, 3]: {label: [n, 2] (x, y)} drawn with Pillow on a grid of round ticks, a label per curve."""
    from PIL import Image, ImageDraw, ImageFont
    (W, H), (left, right, top, bottom) = size, (64, 16, 24, 44)  # margins (68 px tall) for the labels
    draw = ImageDraw.Draw(img := Image.new("RGB", size, "white"))
    draw.font = ImageFont.load_default(size=12)                  # (Pillow >= 10.1; at size 10 words run together)
    xs, ys = np.concatenate(list(curves.values())).T
    xt, yt = _ticks(0, xs.max()), _ticks(min(0, 1.05 * ys.min()), max(0, 1.05 * ys.max()), min(6, (H - 68) // 25))
    px = lambda x: left + (x - xt[0]) / (xt[-1] - xt[0]) * (W - left - right)
    py = lambda y: H - bottom - (y - yt[0]) / (yt[-1] - yt[0]) * (H - top - bottom)
    for x in xt:                                                 # the grid (its outer lines: the frame), tick labels
        draw.line([(px(x), top), (px(x), H - bottom)], fill=(200, 200, 200))
        draw.text((px(x), H - bottom + 4), f"{x:g}", fill="black", anchor="ma")
    for y in yt:
        draw.line([(left, py(y)), (W - right, py(y))], fill=(200, 200, 200))
        draw.text((left - 6, py(y)), f"{y:g}", fill="black", anchor="rm")
    draw.text(((left + W - right) / 2, H - 18), xlabel, fill="black", anchor="ma")
    draw.text((left, top - 4), ylabel, fill="black", anchor="ld")    # above the frame, clear of the ticks
    colours = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14), (23, 190, 207)]
    for i, (label, c) in enumerate(curves.items()):              # the legend: each label in its curve's colour
        points = [(px(x), py(y)) for x, y in c]
        draw.line(points, fill=colours[i % 6], width=2)
        for x, y in points if len(points) <= 100 else []:       # few points (FVD at snapshots): a dot each
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colours[i % 6])
        draw.text((W - right - 8, top + 12 + 14 * i), label, fill=colours[i % 6], anchor="rm")
    return np.asarray(img)

def cmd_figures(args) -> None:
    """The README's pictures: real vs fake, content vs motion seeds (Sec 3.1), t = 0 vs 1 h (no drift), Fig 9's v_t."""
    check_writable(args.out, folder=True)
    G, cfg = load_generator(args.ckpt, _pick_device(args.device))
    data = VideoFolder(args.data) if args.data else None
    if data and (data.resolution, data.fps) != (cfg.resolution, cfg.fps):
        raise UserError(f"{args.data}: {data.resolution}^2 frames at {data.fps:g} fps, the generator's "
                        f"{cfg.resolution}^2 at {cfg.fps:g}: use its dataset")
    t, z = torch.arange(0.0, 32.0, 4.0, dtype=torch.float64), max(1, 96 // cfg.resolution)   # z: the zoom to >= 96 px
    # a row per video: [V, 8, H, W, 3] -> [V*H, 8*W, 3] -> [V*H*z, 8*W*z, 3] (nearest neighbour)
    rows = lambda v: v.permute(0, 2, 1, 3, 4).reshape(-1, 8 * v.shape[3], 3).cpu().numpy().repeat(z, 0).repeat(z, 1)
    fake = rows(render_videos(G, list(range(args.num)), t))
    pictures = {"fake.png": fake}
    if data:                       # random videos from their start (a short one repeats its last frame), a white gap
        real = torch.from_numpy(np.stack([data.read_frames(int(v), np.minimum(t.long().numpy(), data.lengths[v] - 1))
                                          for v in np.random.default_rng(0).permutation(len(data.names))[:args.num]]))
        pictures = {"real_vs_fake.png": np.concatenate([rows(real), np.full_like(fake[:4], 255), fake])}
    pictures["content_motion.png"] = rows(render_videos(G, [0, 0, 1, 1], t, motion_seeds=[0, 1, 0, 1]))
    pictures["t0_vs_1h.png"] = rows(torch.cat([render_videos(G, [0], t + s) for s in (0, 3600 * cfg.fps)]))
    v, t = motion_codes(G, 0, torch.arange(2000.0)).cpu().numpy(), np.arange(2000.0)   # v_t [2000, D], t [2000]
    pictures["embedding.png"] = np.concatenate([plot_curves({f"v_t[{c}]": np.c_[t, v[:, c]]}, "", "frames", (1000, 150))
                                                for c in range(0, cfg.v_dim, math.ceil(cfg.v_dim / 6))])
    os.makedirs(args.out, exist_ok=True)
    for name, image in pictures.items():
        _atomic_write(os.path.join(args.out, name), image)
        print(f"wrote {os.path.join(args.out, name)} ({image.shape[1]}x{image.shape[0]})")

def cmd_plot(args) -> None:
    """A metric over kimg from runs' log.jsonl (FVD), a curve per run; a kimg logged twice counts its later value."""
    if os.path.splitext(args.out)[1].lower() not in (".png", ".jpg", ".jpeg"):
        raise UserError(f"{args.out}: --out is a .png or .jpg file")
    check_writable(args.out)                                     # before the logs are read
    curves = {}
    for run in args.runs:
        path = os.path.join(run, "log.jsonl") if os.path.isdir(run) else run
        label = Path(path).absolute().parent.name                # the run's folder; a name taken twice: the path
        label, rows = os.path.normpath(run) if label in curves else label, {}       # rows: {kimg: value}
        if not os.path.isfile(path):                             # (a FIFO is not read: it could block)
            raise UserError(f"{run}: no log.jsonl (a run directory written by `train`, or its log.jsonl)")
        for number, record in read_log(path):
            if args.metric in record:
                if type(v := record[args.metric]) not in (int, float):                     # (a bool, a string)
                    raise UserError(f"{path}: line {number}: no JSON object of numbers kimg, {args.metric}")
                rows[record["kimg"]] = v                         # (a kimg logged twice: its later value)
        if not (drawn := {k: v for k, v in rows.items() if abs(v) < 1e12}):   # (not a diverged run's NaN, Inf, 1e300)
            raise UserError(f"{path}: no {'finite ' * bool(rows)}'{args.metric}' values (--metric: a key of its lines, "
                            "as loss_G; FVD: train --metrics)")
        if len(drawn) < len(rows):
            print(f"{label}: {len(rows) - len(drawn)} value(s) not drawn (not finite, or beyond 1e12)")
        curves[label] = np.array(sorted(drawn.items()), dtype=np.float64)
        print(f"{label}:", "... " * (len(drawn) > 8) + "  ".join(f"{x:g} kimg {y:.1f}" for x, y in curves[label][-8:]))
    _atomic_write(args.out, plot_curves(curves, args.metric.upper().replace("FVD", "FVD_")))   # in the name's format
    print(f"wrote {args.out}")

# ------------------------------------------------------------------------------------------------
# Appendix D: plumbing (inputs checked at the door, one atomic writer, signals, run_lock, the flags, one error path)
MAX_DATASET_FPS, MAX_VIDEO_FRAMES = 1000.0, 10 ** 8   # more is a broken header, not a video (10^8: 5 weeks at 30 fps)

class VideoFolder:
    """A prepare_data.py dataset (zip or folder), checked at the door, read lazily: any fault, one DataError."""

    def __init__(self, path: str):
        def need(ok, rule: str, value) -> None:                     # each rule of dataset.json, in turn
            if not ok:
                raise DataError(f"{path}: dataset.json: {rule}, got {value!r}")
        self.path, self.is_zip, self._zip = str(path), os.path.isfile(path), None
        try:
            meta = json.loads(self.read("dataset.json", 2 ** 26))    # 64 MB: a million videos' names
        except (ValueError, RecursionError) as e:                 # not UTF-8 or JSON, too deep, a 5,000-digit number
            raise (e if isinstance(e, DataError) else DataError(f"{path}: dataset.json: invalid JSON ({e})")) from None
        except (KeyError, FileNotFoundError, zipfile.BadZipFile, NotImplementedError) as e:   # not in it; no zip
            what = "not a dataset: no dataset.json" if os.path.lexists(path) else "no such dataset"   # (a FIFO too)
            if not isinstance(e, LookupError) and self.is_zip and open(path, "rb").read(2) == b"PK":   # a zip's start
                what = "a zip that cannot be read (truncated or damaged)"
            raise DataError(f"{path}: {what} (make one with: python prepare_data.py VIDEOS data.zip)") from None
        need(isinstance(meta, dict), "must be an object", type(meta).__name__)
        fps, res, fmt, videos = meta.get("fps"), meta.get("resolution"), meta.get("format", "jpg"), meta.get("videos")
        need(type(fps) in (int, float) and 0 < fps <= MAX_DATASET_FPS,      # (a bool is no number; NaN is out of range)
             f"fps must be a number in (0, {MAX_DATASET_FPS:g}]", fps)
        need(res in CONFIG_CHOICES["resolution"], "resolution must be a power of two, 8-2048", res)
        need(isinstance(fmt, str) and re.fullmatch(r"[a-z0-9]{1,5}", fmt, re.I), "format must be like 'jpg'", fmt)
        need(isinstance(videos, list) and videos, "'videos' must be a non-empty list", videos)
        seen = set()
        for i, v in enumerate(videos):
            name, n = (v.get("name"), v.get("frames")) if isinstance(v, dict) else (None, None)
            # A name is a folder of the dataset: one with '/' or '..' would read frames from outside it.
            need(isinstance(name, str) and 0 < len(name) <= 255 and not re.search(r"[/\\\x00-\x1f\x7f]|^\.\.?$", name)
                 and name not in seen, f"video {i}: 'name' must be a folder name (no '/', '.', '..', control "
                 "characters) listed once", name)
            need(type(n) is int and 1 <= n <= MAX_VIDEO_FRAMES,
                 f"video {i}: 'frames' must be an integer from 1 to {MAX_VIDEO_FRAMES:,}", n)
            seen.add(name)
        self.fps, self.resolution, self.ext = float(fps), int(res), "." + fmt
        self.names, self.lengths = [v["name"] for v in videos], [v["frames"] for v in videos]
        listed = set(names := self._zip.namelist()) if self.is_zip else None
        if self.is_zip and len(listed) < len(names):                # (zipfile would read the last one)
            twice = next(a for a, b in itertools.pairwise(sorted(names)) if a == b)
            raise DataError(f"{path}: a zip holding a file twice ({twice}): which one is meant?")
        for name, n in zip(self.names, self.lengths):
            for i in range(n) if self.is_zip else [n - 1]:              # each in a zip's index; a folder's last
                member = f"{name}/{i:06d}{self.ext}"
                if not (member in listed if self.is_zip else os.path.isfile(os.path.join(path, member))):
                    raise DataError(f"{path}: video '{name}' lists {n} frames but {member} is missing")
            self.frame(f"{name}/000000{self.ext}", header_only=True)    # its first frame's size and mode

    def __getstate__(self):   # into a DataLoader worker without the open zip: it opens its own
        return {**self.__dict__, "_zip": None}

    def read_frames(self, video: int, frame_indices) -> np.ndarray:     # uint8 [n, H, W, 3]
        return np.stack([self.frame(f"{self.names[video]}/{int(i):06d}{self.ext}") for i in frame_indices])

    def read(self, member: str, limit: Optional[int] = None) -> bytes:
        """One regular file (the zip opened once in each process), refused unread if it declares over `limit` bytes."""
        limit = limit or 16 * self.resolution ** 2 + 2 ** 16          # more than any R^2 image (16-bit RGBA: 8 R^2)
        file = os.path.join(self.path, member)
        if self.is_zip:
            self._zip = self._zip or zipfile.ZipFile(self.path)
        elif not os.path.isfile(file):                                 # missing, or a FIFO (its read would wait)
            raise FileNotFoundError(errno.ENOENT, "no such regular file", file)
        size = self._zip.getinfo(member).file_size if self.is_zip else os.path.getsize(file)
        if size > limit:
            raise DataError(f"{self.path}: {member} is {size:,} bytes, more than a file of this dataset can be")
        try:
            with self._zip.open(member) if self.is_zip else open(file, "rb") as f:
                return f.read(limit + 1)
        except Exception as e:         # a damaged zip (its version, CRC or deflate stream), an unreadable file
            raise DataError(f"{self.path}: cannot read {member} ({_first_line(e)})") from None

    def frame(self, member: str, header_only: bool = False) -> Optional[np.ndarray]:
        """uint8 [R, R, 3]: one frame, decoded and checked; header_only: only its header's size and mode (None)."""
        from PIL import Image
        R, file = self.resolution, io.BytesIO(self.read(member))           # (read's DataError: as it is)
        try:
            with Image.open(file) as img:                                   # 8-bit grey, palette or RGB(A) -> RGB
                if img.size == (R, R) and img.mode in ("L", "P", "RGB", "RGBA"):
                    return None if header_only else np.asarray(img.convert("RGB"))
                found = f"a {img.size[0]}x{img.size[1]} {img.mode} image"
        except Exception as e:
            raise DataError(f"{self.path}: cannot read {member} ({type(e).__name__}: {_first_line(e)})") from None
        raise DataError(f"{self.path}: {member} is {found}, dataset.json says {R}x{R} (8-bit RGB)")

def _first_line(e) -> str:
    """An exception's message in one line (and the next if it ends in ':'), no objects' addresses, <= 200 characters."""
    lines = [re.sub(r"\s*<[\w.]+ object at 0x[0-9a-f]+>", "", line).strip() for line in str(e).splitlines()]
    lines = [line for line in lines if line] or [type(e).__name__]
    return " ".join(lines[:2] if lines[0].endswith(":") else lines[:1])[:200]

def error_reason(e: BaseException, path: str = ".") -> str:
    """Why an operation on `path` failed: the OS's words (torch's "strerror: ..."), else a full disk if < 1 MiB free."""
    if isinstance(e, OSError) and not isinstance(e, BrokenPipeError):
        return "no space left on device" if e.errno == errno.ENOSPC else e.strerror or _first_line(e)
    if hidden := re.search(r"strerror: ([^\n]+)", str(e)):
        return hidden.group(1).strip()
    place = os.path.dirname(os.path.abspath(path))                    # (/proc's total is 0)
    if os.path.isdir(place) and 0 < (disk := shutil.disk_usage(place)).total and disk.free < 2 ** 20:
        return "no space left on device"
    return "the ffmpeg writer stopped (broken pipe)" if isinstance(e, BrokenPipeError) else _first_line(e)

def _partial(path: str) -> str:       # an output's temporary name beside it, <stem>.partial-<pid><ext> (same format)
    return f".partial-{os.getpid()}".join(os.path.splitext(path.rstrip("/")))

def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else os.remove(path)

def _atomic_write(path: str, data) -> None:
    """The one writer: bytes, str, an image [H, W, 3] or write(tmp) -> _partial(path), fsynced, renamed onto `path`."""
    if isinstance(data, np.ndarray):
        data = importlib.import_module("imageio.v3").imwrite("<bytes>", data, extension=Path(path).suffix.lower())
    tmp = _partial(path)
    try:
        data(tmp) if callable(data) else Path(tmp).write_bytes(data.encode() if isinstance(data, str) else data)
        if os.path.isfile(tmp):
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:     # (torch's zip writer: RuntimeError; why: asked before tmp frees the disk)
        raise UserError(f"{path}: cannot write ({error_reason(e, tmp)}); nothing half-written is left") from None
    finally:
        _remove(tmp)

def check_writable(out: str, folder: bool = False) -> None:
    """Before any work: a file made and removed where `out` goes (/proc's write bit lies); a folder: in its nearest."""
    if not out or os.path.lexists(out) and not (os.path.isdir if folder else os.path.isfile)(out):   # (a FIFO too)
        raise UserError(f"{out or repr(out)}: cannot write here (not a {'folder' if folder else 'regular file'})")
    place = os.path.abspath(out) if folder else os.path.dirname(os.path.abspath(out))
    while folder and not os.path.lexists(place):              # (made when written: nothing is left if refused)
        place = os.path.dirname(place)
    try:
        tempfile.TemporaryFile(dir=place).close()             # (unnamed where it can be: never left behind)
    except OSError as e:
        raise UserError(f"{out}: cannot write here ({error_reason(e)})") from None     # (a dead link on the way too)

def remove_stale_partials(path: str, every: bool = False) -> None:
    """What a killed writer left: `path`'s _partial names (every: any in folder `path`) whose pid is gone."""
    import glob
    pattern = os.path.join(glob.escape(path), "*") if every else glob.escape(os.path.splitext(path.rstrip("/"))[0])
    for leftover in glob.glob(pattern + ".partial-*"):
        pid = re.search(r"\.partial-(\d{1,9})(\.\w+)?$", leftover)
        with contextlib.suppress(PermissionError):            # (EPERM: it runs, as another user)
            try:
                os.kill(int(pid[1]) if pid else 0, 0)             # signal 0 only asks whether it runs (0: ours)
            except ProcessLookupError:
                _remove(leftover)

def read_log(path: str) -> list:
    """A run's log.jsonl -> [(line number, record)]; a killed run's torn last line left out; a bad one: UserError."""
    if (size := os.path.getsize(path)) > 2 ** 28:
        raise UserError(f"{path}: {size:,} bytes, more than a run's log.jsonl holds (refused unread)")
    records = []
    with open(path, "rb") as f:                                  # bytes: a binary file is a line, not a crash
        for number, line in filter(lambda numbered: numbered[1].endswith(b"\n"), enumerate(f, 1)):
            try:                                                 # not UTF-8, not JSON, not an object, no kimg
                if type((record := json.loads(line))["kimg"]) not in (int, float) or not abs(record["kimg"]) < 1e12:
                    raise ValueError
            except (ValueError, TypeError, KeyError, IndexError, RecursionError):
                raise UserError(f"{path}: line {number}: no JSON object with a number kimg (not a line train writes)")
            records.append((number, record))
    return records

def checkpoint_path(path: str) -> str:                           # a file, or a run directory's checkpoint.pt
    return os.path.join(path, "checkpoint.pt") if os.path.isdir(path) else path

def save_checkpoint(path: str, state: dict) -> None:
    _atomic_write(path, lambda tmp: torch.save(state, tmp))     # a full disk leaves the previous one intact

def load_checkpoint(path: str, kind: str = "checkpoint") -> dict:
    """A checkpoint (a file, a run's), projection or authors' snapshot, read as data, never code; settings checked."""
    file, infos, bad = checkpoint_path(path), [], None
    if not os.path.isfile(file):                                 # (a symlink loop exists too: not a file)
        raise UserError(f"{file}: " + ("not a regular file" if os.path.lexists(file) else f"no such {kind}"))
    if kind == "projection" and os.path.getsize(file) > 2 ** 28:   # project's: 64 frames' tokens, < 70 MB
        raise UserError(f"{file}: not a projection: {os.path.getsize(file):,} bytes, more than project writes")
    with open(file, "rb") as f:                                  # torch.save writes zips; a bare pickle: a snapshot?
        if f.read(1) == b"\x80" and not zipfile.is_zipfile(file):   # (an OSError: said by _exit_on_error, its file)
            return import_release_snapshot(file)
        with contextlib.suppress(Exception):                     # (not a zip, a damaged one: torch.load says so)
            infos = zipfile.ZipFile(f).infolist()
    if (declared := sum(i.file_size for i in infos)) > os.path.getsize(file):   # torch.save's: whole, never compressed
        raise UserError(f"{file}: not a StyleGAN-V {kind}: its records declare {declared:,} bytes, more than its "
                        f"{os.path.getsize(file):,} (a zip bomb?): refused unread")
    with contextlib.suppress(Exception):                   # every record's CRC (torch.load checks none); a zip
        bad = infos and zipfile.ZipFile(file).testzip()    # that cannot be read: torch.load says so below
    if bad:
        raise UserError(f"{file}: damaged: its record {bad} does not match its checksum (CRC)")
    try:
        with warnings.catch_warnings(action="ignore"):       # (torch's about a sparse tensor: said below)
            state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:                              # refused objects, not torch.save's format, truncated
        if isinstance(e, MemoryError) or "can't allocate memory" in str(e):   # the CPU allocator's: said as memory
            raise
        # Only a class named ("Unsupported global") means Python objects; random bytes: "Unsupported operand".
        why = ("it is a dataset (pass it as --data)" if "dataset.json" in [i.filename for i in infos] else
               "it holds pickled Python objects, not only plain data (refused unread: unpickling could run code)"
               if isinstance(e, pickle.UnpicklingError) and "unsupported global" in str(e).lower() else
               error_reason(e, file) if isinstance(e, OSError) and e.errno != errno.EINVAL else   # (a cut zip: EINVAL)
               f"not a file torch.save wrote{' (nor an authors snapshot)' * (kind == 'checkpoint')}, or truncated")
        raise UserError(f"{file}: not a StyleGAN-V {kind}: {why}") from None     # (never torch's unsafe advice)
    seen, todo = set(), [state]
    while todo:                                                  # every tensor in it, however nested (or cyclic)
        if id(x := todo.pop()) not in seen:
            seen.add(id(x))
            todo += x.values() if isinstance(x, dict) else x if isinstance(x, (list, tuple)) else []
            if torch.is_tensor(x) and not _plain(x):
                why = f"{x.dtype}, {x.layout}" + ", not contiguous" * (x.is_contiguous() is False)
                raise UserError(f"{file}: not a StyleGAN-V {kind}: it holds a tensor that is not contiguous floating-"
                                f"point numbers ({why}, on {x.device})")
    if kind != "checkpoint":
        return state
    if not isinstance(state, dict) or not all(isinstance(state.get(k), dict) for k in ("G_ema", "cfg")):
        raise UserError(f"{file}: not a StyleGAN-V checkpoint (no G_ema or cfg; a projection is for sample --from)")
    try:                                     # missing fields: its preset's; unknown: dropped; "flags": older runs'
        known = {k: v for k, v in {**(state.get("flags") or {}), **state["cfg"]}.items() if k in _NAMES}
        state["cfg"] = dataclasses.asdict(make_config(**known))
    except (ValueError, TypeError) as e:
        raise UserError(f"{file}: a checkpoint with impossible settings: {_first_line(e)}") from None
    counters = dict(step=2 ** 62, nimg=2 ** 62, nvid=2 ** 62, seed=2 ** 32)     # (the seed: --seed's range)
    if "opt_G" in state and not all(type(state.get(k)) is int and 0 <= state[k] < n for k, n in counters.items()):
        raise UserError(f"{file}: a checkpoint with impossible counters (step, nimg, nvid: integers >= 0, seed < 2^32)")
    nets = {n: net for n, net in (("G_ema", Generator), ("D", Discriminator)) if isinstance(state.get(n), dict)}
    check_weights_held(Config(**state["cfg"]), tuple(nets.values()), [t for n in nets for t in state[n].values()], file)
    return state

def _plain(t: torch.Tensor) -> bool:    # floats held in memory, dense and contiguous: not meta, sparse, stride 0, int
    return t.layout == torch.strided and t.device.type == "cpu" and t.is_contiguous() and t.dtype in (
        torch.float16, torch.bfloat16, torch.float32, torch.float64)

def check_weights_held(cfg: Config, nets: tuple, held, path: str) -> None:
    """Before networks are built from a file's settings: no more weights asked for than its tensors' storages hold."""
    with torch.device("meta"):                                  # shapes, no memory
        asked = sum(t.numel() for net in nets for t in net(cfg).state_dict().values())
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() / t.element_size() for t in held
                if torch.is_tensor(t) and _plain(t)}        # each once (a view claims no more); meta, sparse: none
    if asked > (have := round(sum(storages.values()))):
        raise UserError(f"{path}: its settings ask for {asked:,} weights, more than the {have:,} it holds")

def load_generator(path: str, device="cpu"):
    """(G_ema in eval mode, Config) from a checkpoint file or a training directory."""
    state = load_checkpoint(path)
    G = Generator(cfg := Config(**state["cfg"]))
    try:
        G.load_state_dict(state["G_ema"])
    except RuntimeError as e:
        raise UserError(f"{checkpoint_path(path)}: weights do not fit the '{cfg.preset}' G ({_first_line(e)})")
    return G.eval().requires_grad_(False).to(device), cfg        # for rendering: no autograd graph

def _ffmpeg() -> str:                  # imageio-ffmpeg's binary (imported when a video is written)
    return importlib.import_module("imageio_ffmpeg").get_ffmpeg_exe()

class FrameSink(contextlib.AbstractContextManager):
    """Frames, a chunk at a time, through ffmpeg into an .mp4 or PNGs at _partial(out), renamed onto `out` when done."""

    @staticmethod
    def check(out: str) -> None:                                 # said before anything is rendered
        if (ext := os.path.splitext(out)[1].lower()) not in ("", ".mp4"):
            raise UserError(f"{out}: --out is an .mp4 file or a folder for PNG frames (no extension), not a {ext}")
        if ext != ".mp4" and (os.path.isfile(out) or os.path.isdir(out) and os.listdir(out) or os.path.ismount(out)):
            raise UserError(f"{out}: exists; --out is an .mp4 file or a new or empty folder (not a mount point)")
        check_writable(out, folder=ext != ".mp4")
        if ext == ".mp4" and os.path.isfile(out):                # replaced only if its metadata say we wrote it
            said = subprocess.run([_ffmpeg(), "-i", out], capture_output=True, text=True, errors="replace").stderr
            if not re.search(r"^\s*comment\s*: written by stylegan_v\.py$", said, re.M):
                raise UserError(f"{out}: exists, not a video stylegan_v.py wrote (choose another --out, or remove it)")
        remove_stale_partials(out)

    def __init__(self, out: str, fps: float):
        FrameSink.check(out)
        self.out, self.fps, self.tmp, self.ffmpeg, self.log = out, fps, _partial(out), None, tempfile.TemporaryFile()
        self.to = ["-c:v", "libx264", "-crf", "10", "-pix_fmt", "yuv420p",            # plays everywhere, near-lossless
                   "-metadata", "comment=written by stylegan_v.py", self.tmp]
        if os.path.splitext(out)[1].lower() != ".mp4":
            os.makedirs(self.tmp)
            self.to = ["-start_number", "0", os.path.join(self.tmp.replace("%", "%%"), "%06d.png")]   # lossless

    def write(self, frames: np.ndarray) -> None:                 # uint8 [T, H, W, 3]
        if self.ffmpeg is None:                                  # started at the first frame, when its size is known
            self.ffmpeg = subprocess.Popen(
                [_ffmpeg(), "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s",
                 f"{frames.shape[2]}x{frames.shape[1]}", "-r", f"{self.fps:g}", "-i", "-", *self.to],
                stdin=subprocess.PIPE, stderr=self.log)
        self.ffmpeg.stdin.write(np.ascontiguousarray(frames).tobytes())

    def __exit__(self, exc_type, exc, _tb):
        if exc is None or isinstance(exc, OSError):    # an OSError (a full disk, a lost mount): said as a failed write
            return _atomic_write(self.out, lambda tmp: self.close(exc))
        self.close(exc)
        _remove(self.tmp)

    def close(self, exc: Optional[BaseException] = None) -> None:   # ends ffmpeg; raises an OSError exc, or its failure
        if self.ffmpeg is not None:
            with contextlib.suppress(BrokenPipeError):
                (self.ffmpeg.kill if exc else self.ffmpeg.stdin.close)()
            if self.ffmpeg.wait() != 0 and exc is None:             # (all written? an mp4's index comes last)
                self.log.seek(0)
                raise RuntimeError(f"ffmpeg failed: {_first_line(self.log.read().decode(errors='replace'))}")
        if isinstance(exc, OSError):
            raise exc

def video_grid(frames: torch.Tensor, cols: Optional[int] = None) -> np.ndarray:
    """uint8 [B, T, H, W, 3] -> [T, rows*H, cols*W, 3]: B videos tiled into a grid."""
    B, T, H, W, _ = frames.shape
    rows = math.ceil(B / (cols := cols or math.ceil(math.sqrt(B))))
    frames = torch.cat([frames, frames.new_zeros(rows * cols - B, T, H, W, 3)])     # (empty tiles: black)
    grid = frames.reshape(rows, cols, T, H, W, 3).permute(2, 0, 3, 1, 4, 5)   # [T, rows, H, cols, W, 3]
    return grid.reshape(T, rows * H, cols * W, 3).cpu().numpy()

def cmd_convert(args) -> None:
    """`convert`: an authors' snapshot, read by Appendix B's importer (nothing in it runs) -> a checkpoint of ours."""
    if os.path.exists(args.out):
        raise UserError(f"{args.out}: exists already (choose another name, or remove it first)")
    save_checkpoint(args.out, load_checkpoint(args.src))
    print(f"wrote {args.out} (no optimizer state: `train --resume` fine-tunes it with fresh optimizers)")

# --- A run: planning, starting or resuming it, its log and snapshots, its directory (§12) -----------
# The networks' fields (arch .. mbstd_strided but data and dtype, k, T): a run resuming a snapshot takes them from it.
# A resumed checkpoint of ours fixes them (--fp32's aside), its data's size and time unit and its augmentation: KEPT.
_NAMES = [f.name for f in dataclasses.fields(Config)]
ARCH_FIELDS = {*_NAMES[1:_NAMES.index("batch")], "frames_per_clip", "max_time"} - {"resolution", "fps", "amp_dtype"}
KEPT = [f for f in _NAMES if f in {"preset", "resolution", "fps", "aug", *ARCH_FIELDS} - {"num_fp16_res", "conv_clamp"}]
METRICS = {"fvd16", "fvd128"}                                          # --metrics' choices
RUN_ENTRY = re.compile(r"(checkpoint|config|log)(\.partial-\d+)?\.(pt|json|jsonl)|train\.lock|samples"
                       r"|samples/kimg[\d.]+(\.partial-\d+)?\.(mp4|png)")   # what train writes, or a killed one left

def _open_run(cfg: Config, data_path: str, outdir: str, resume: Optional[str], fp32: bool, given=None) -> tuple:
    """The dataset and checkpoint, checked -> (cfg, data, clips, state, its path); given: flags on a checkpoint's."""
    data, state, path = VideoFolder(data_path), None, None
    if resume:
        state = load_checkpoint(path := checkpoint_path(outdir if resume == "auto" else resume))
        old, snapshot = Config(**state["cfg"]), "opt_G" not in state and "source" in state
    try:
        cfg = make_config(**{**state["cfg"], **given}) if resume and given is not None and not snapshot else cfg
        cfg = check_config({**dataclasses.asdict(cfg), "resolution": data.resolution, "fps": data.fps})   # (as any)
    except ValueError as e:
        raise UserError(f"{path or data_path}: its settings with these flags: {e}") from None
    if resume:
        if snapshot:                             # an authors' snapshot (or its convert) brings its networks, any fps
            cfg = dataclasses.replace(cfg, **{f: getattr(old, f) for f in ARCH_FIELDS})
        for f in ["resolution"] if snapshot else KEPT:
            if getattr(old, f) != getattr(cfg, f):
                raise UserError(f"{path}: the checkpoint has {f} {getattr(old, f)!r}, this run {getattr(cfg, f)!r} "
                                f"(a resumed run keeps its data's size and fps, its networks and --aug)")
    if fp32:                                     # --fp32: no fp16 layers, and (as the release) no clamping either
        cfg = dataclasses.replace(cfg, num_fp16_res=0, conv_clamp=None)
    return cfg, data, ClipDataset(data, cfg), state, path

def _start_run(cfg: Config, data_path: str, outdir: str, dist: Dist, seed, resume: Optional[str], fp32: bool):
    """-> (trainer, clips); resumed: weights, Adam's moments, ADA's p, the step and seed (they key every draw)."""
    cfg, data, dataset, state, path = _open_run(cfg, data_path, outdir, resume, fp32)
    seed = (state["seed"] if state is not None and "opt_G" in state else 0) if seed is None else seed
    trainer = Trainer(cfg, dist, seed, [data.lengths[i] for i in dataset.usable])
    trainer.interrupted, trainer.diverged = False, None           # (set by train's loop and _log_tick)
    if state is not None:
        try:
            trainer.load_state_dict(state)
        except (RuntimeError, KeyError, ValueError) as e:
            raise UserError(f"{path}: checkpoint does not fit this model ({_first_line(e)})")
    if dist.main:
        os.makedirs(outdir, exist_ok=True)
        # log.jsonl keeps its lines up to the resumed checkpoint (a new run: none): a killed run's later ones are redone
        log, upto = os.path.join(outdir, "log.jsonl"), trainer.nimg / 1000 + 1e-9 if resume else -1.0
        if os.path.isfile(log):
            _atomic_write(log, "".join(json.dumps(r) + "\n" for _, r in read_log(log) if r["kimg"] <= upto))
        resolved = dataclasses.asdict(cfg.resolved(dist.device))      # (lr, gamma, snap, metric_videos: as used)
        _atomic_write(os.path.join(outdir, "config.json"), json.dumps(resolved, indent=2))
    return trainer, dataset

def _last_line(trainer: Trainer, ckpt: str, outdir: str) -> None:
    """The run's last line, after the closed bar: done or interrupted, what was saved, and a diverged run said."""
    kimg = f"{trainer.nimg / 1000:.2f} kimg"
    line = (f"interrupted: saved {ckpt} at {kimg}; continue with --resume auto" if trainer.interrupted else
            f"done: {kimg}, saved {ckpt} (sample from it: python stylegan_v.py sample --ckpt {shlex.quote(outdir)})")
    if trainer.diverged:
        line += f"; warning: the losses diverged at {trainer.diverged:.2f} kimg (log.jsonl says where): lower --lr"
    print(line, flush=True)

def _log_tick(trainer: Trainer, tick: dict, log: str, bar, clock: dict) -> None:
    """A line appended to log.jsonl (`tail -f` follows it): the tick's mean losses, s/kimg (no metrics), time so far."""
    sec = time.time() - tick["start"] - (clock["metric_sec"] - tick["metric_sec"])
    sec_per_kimg = sec / max((trainer.nimg - tick["nimg"]) / 1000, 1e-9)
    keys, dist = sorted(tick["acc"]), trainer.dist               # means over the tick's steps, then the processes
    means = torch.tensor([np.mean(tick["acc"][k]) for k in keys], dtype=torch.float64, device=dist.device)
    means = dist.all_reduce(means) / dist.world
    record = {"kimg": trainer.nimg / 1000, "step": trainer.step_idx, "sec_per_kimg": sec_per_kimg,
              "train_sec": time.time() - clock["train_start"] - clock["metric_sec"],
              "nonfinite_grads": trainer.nonfinite, **dict(zip(keys, means.tolist()))}
    # The logistic losses are O(1) (log 2 at equilibrium): non-finite or > 100, D's logits ran off (too high a --lr)
    if not (abs(record["loss_G"]) < 100 and abs(record["loss_D"]) < 100):    # (nan and inf fail it too)
        record["diverged"] = True
        trainer.diverged = trainer.diverged or record["kimg"]
    bar.set_postfix_str(f"{sec_per_kimg:.1f} s/kimg G {record['loss_G']:.3f} D {record['loss_D']:.3f} "
                        f"p {record['p']:.3f}" + " DIVERGED" * ("diverged" in record))
    if dist.main:
        with open(log, "a") as f:
            f.write(json.dumps(record) + "\n")
    tick.update(nimg=trainer.nimg, start=time.time(), metric_sec=clock["metric_sec"], acc={})

def _crossed(nimg: int, every_kimg: float, since_nimg: int) -> bool:
    """A multiple of `every_kimg` passed since `since_nimg`? (Multiples: a resumed run saves where a whole one does.)"""
    every = max(1, round(every_kimg * 1000))
    return nimg // every > since_nimg // every

def _snapshot(trainer: Trainer, outdir: str, previews: bool, clock: dict) -> str:
    """The checkpoint, and previews of G_ema's videos of the same seeds each time (a grid, a PNG strip) -> its path."""
    trainer.train_sec = time.time() - clock["train_start"] - clock["metric_sec"]    # kept across resumes
    ckpt, fps = os.path.join(outdir, "checkpoint.pt"), trainer.cfg.fps
    if trainer.dist.main:
        save_checkpoint(ckpt, trainer.state_dict())
    if trainer.dist.main and previews:
        os.makedirs(os.path.join(outdir, "samples"), exist_ok=True)
        stem, n = os.path.join(outdir, "samples", f"kimg{trainer.nimg / 1000:010.3f}"), max(int(2 * fps), 8)
        videos = render_videos(trainer.G_ema, list(range(8)), torch.arange(n, dtype=torch.float64))  # [8, n, H, W, 3]
        with FrameSink(stem + ".mp4", fps) as sink:
            sink.write(video_grid(videos))
        tiles = videos[:, :: n // 8][:, :8].flatten(0, 1)[:, None]    # [64, 1, H, W, 3]: 8 frames a video, a tile each
        _atomic_write(stem + ".png", video_grid(tiles, cols=8)[0])      # [8*H, 8*W, 3]: a row per video
    return ckpt

def _snapshot_metrics(trainer: Trainer, data_path: str, log: str, bar, clock: dict) -> None:
    """FVD of G_ema (sampled from, not the noisier G) into log.jsonl, by rank 0; its time, 'sec', is not training."""
    import fvd
    if not trainer.dist.main:                                    # (the others wait in the next all_reduce)
        return
    results, start, cfg = {"kimg": trainer.nimg / 1000}, time.time(), trainer.cfg.resolved(trainer.dist.device)
    for m in cfg.metrics:                                        # 'fvd16' -> 16 frames
        try:
            results[m] = float(fvd.compute_fvd(real=data_path, fake=trainer.G_ema, frames=int(m[3:]), progress=False,
                                               num_videos=cfg.metric_videos, device=str(trainer.dist.device)))
        except fvd.FVDError as e:
            raise UserError(f"--metrics {m}: {e}")
    results["sec"] = time.time() - start
    clock["metric_sec"] += results["sec"]
    with open(log, "a") as f:
        f.write(json.dumps(results) + "\n")
    bar.write("  ".join(f"{m}: {results[m]:.2f}" for m in cfg.metrics) + "  (kimg 0)" * (trainer.nimg == 0))

@contextlib.contextmanager
def run_lock(outdir: str):
    """One training in a run directory at a time: an fcntl lock on train.lock (freed however the process dies)."""
    os.makedirs(outdir, exist_ok=True)
    with open(os.path.join(outdir, "train.lock"), "a+") as file:
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            file.seek(0)
            raise UserError(f"{outdir}: another training is running in this directory (pid {file.read().strip()})"
                            f"; wait for it or stop it, or train into another --outdir") from None
        file.truncate(0)                         # ("a+": the pid goes at 0)
        print(os.getpid(), file=file, flush=True)
        for folder in (outdir, os.path.join(outdir, "samples")):
            remove_stale_partials(folder, every=True)
        yield

# --- Signals and processes --------------------------------------------------------------------
class GracefulStop:
    """Ctrl-C or `kill` (SIGINT, SIGTERM) sets `requested`: train finishes the step and saves. A second Ctrl-C stops
    at once; more SIGTERMs are ignored (a supervisor sending TERM twice still gets its checkpoint). Or `handler`."""

    def __init__(self, handler=None):
        self.requested, self.handler, self.old = False, handler or self._request, {}

    def _request(self, signum, _frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self):
        with contextlib.suppress(ValueError):                      # (not the main thread: Python runs handlers there)
            self.old = {sig: signal.signal(sig, self.handler) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *_):
        for sig, handler in self.old.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)   # None: set outside Python

    @staticmethod
    def ignore(_worker_id: int) -> None:     # DataLoader workers, again: torch's worker loop sets a SIGTERM handler
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)

    def anywhere(self, dist: Dist) -> bool:          # all stop at the same step, or the rest hang in all_reduce
        return dist.all_reduce(torch.tensor([float(self.requested)], device=dist.device)).item() > 0

def _unwrap_worker_errors(loader, save):
    """A DataLoader's batches; a worker's DataError as one line, once save() kept the steps done; closing ends them."""
    with GracefulStop(signal.SIG_IGN):      # workers spawned now ignore SIGINT, SIGTERM from their first instant (so
        iterator = iter(loader)             # it stays across exec): a Ctrl-C to the group reaches the trainer alone
    try:
        yield from iterator
    except (DataError, OSError) as e:                                # (a folder's missing frame: an OSError)
        message = re.sub(r"^\w+Error: ", "", str(e).strip().splitlines()[-1])   # a worker's: its traceback's last line
        if saved := save():
            message += f"; the steps done are saved in {saved}: mend the file, then --resume auto"
        raise DataError(message) from None
    finally:
        if hasattr(iterator, "_shutdown_workers"):                     # only with worker processes
            iterator._shutdown_workers()

def _train_worker(rank: int, world: int, args, cfg: Config, init_method: Optional[str]) -> None:
    """One training process (GPU LOCAL_RANK, `rank`, --device's, or a CPU): its rows of each batch; rank 0 saves."""
    global USE_CUSTOM_OPS
    USE_CUSTOM_OPS = not args.no_custom_ops    # (a spawned process starts from a fresh import)
    try:
        device = _pick_device(args.device)
        if cuda := device.type == "cuda":      # cuDNN times its algorithms once per shape: a step's barely change
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank if world > 1 else device.index or 0)))
            torch.cuda.set_device(device)
            torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False   # TF32 off, as the release
        if world > 1:          # a long timeout: the other ranks wait while rank 0 computes FVD at a snapshot
            torch.distributed.init_process_group("nccl" if cuda else "gloo", init_method=init_method, rank=rank,
                                                 world_size=world, timeout=torch.distributed.default_pg_timeout * 4)
        trainer = train(cfg, args.data, args.outdir, Dist(rank, world, device), args.seed, args.resume, args.workers,
                        args.fp32)
        if world > 1:
            torch.distributed.barrier()        # nobody exits while rank 0 may still be saving
        if trainer.interrupted:
            sys.exit(130)                      # (through _exit_on_error unchanged)
    except BaseException as e:                 # the tool's one error path, in every process
        _exit_on_error(e, quiet=rank != 0)
    finally:
        if world > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()

# --- Sizes and settings: the one check of a Config, memory before the work, devices ------------------
# Every Config field's type and range (flags, checkpoints, snapshots): a size read from a file is bounded before
# anything of that size is built. Wide (the paper's are far inside) but finite: 10^6 mapping layers is no model.
_I, _F, _OFF = (int,), (int, float), (int, float, type(None))          # _OFF: a number, or None (off)
CONFIG_RANGES = dict(
    fps=(_F, 1e-3, 1000), z_dim=(_I, 1, 4096), w_dim=(_I, 1, 4096), motion_dim=(_I, 1, 4096),
    mapping_layers=(_I, 1, 16), channel_base=(_I, 1, 2 ** 20), channel_max=(_I, 1, 4096),
    motion_delta_z=(_I, 1, 2 ** 16), motion_kernel=(_I, 1, 64), motion_layers=(_I, 1, 16), period_min=(_F, 1e-3, 1e9),
    period_max=(_F, 1e-3, 1e9), time_enc_dim=(_I, 1, 4096), num_fp16_res=(_I, 0, 16), conv_clamp=(_OFF, 1e-3, 1e9),
    d_channel_base=(_I, 1, 2 ** 20), d_channel_max=(_I, 1, 4096), d_time_dim=(_I, 1, 4096), d_frame_div=(_I, 1, 64),
    mbstd_group=(_I, 1, 64), batch=(_I, 1, 65536), frames_per_clip=(_I, 1, 33), max_span=(_I, 1, 2 ** 16),
    max_time=(_I, 1, 2 ** 20), lr=(_F, -1, 1), r1_gamma=(_F, -1, 1e4), r1_interval=(_I, 1, 10 ** 4),
    g_reg_interval=(_I, 0, 10 ** 4), ema_kimg=(_F, 1e-6, 1e6), ema_rampup=(_OFF, 1e-6, 1e6), aug_p=(_F, 0, 1),
    ada_target=(_F, 0, 1), ada_kimg=(_F, 1e-6, 1e6), kimg=(_F, 1e-6, 1e6), snap=(_OFF, 1e-6, 1e6), tick=(_F, 1e-6, 1e6),
    metric_videos=((int, type(None)), 2, 100000))
CONFIG_CHOICES = dict(preset=PRESETS, arch=ARCH_VARIANTS, amp_dtype=AMP_DTYPES, d_cond=("hyper", "concat", "none"),
                      span_dist=("uniform", "release"), aug=("ada", "fixed", "none"), mirror=(True, False),
                      mbstd_strided=(True, False), resolution=[2 ** k for k in range(3, 12)],   # powers of two
                      d_concat_res=[2 ** k for k in range(2, 12)])

def check_config(fields: dict) -> Config:
    """A dict of Config fields -> the Config, or a ValueError naming the first field that is wrong."""
    import reprlib                                                        # (its repr: a huge value said short)
    cfg = Config(**fields)                                                # (an unknown field: a TypeError)
    for name, (types, lo, hi) in CONFIG_RANGES.items():
        v = getattr(cfg, name)
        if not isinstance(v, types) or isinstance(v, bool) or not (v is None or lo <= v <= hi):   # (nan, inf fail)
            raise ValueError(f"{name} must be {'an integer' if int in types and float not in types else 'a number'} "
                             f"in [{lo:g}, {hi:g}]{' or null' * (type(None) in types)}, got {reprlib.repr(v)}")
    for name, choices in CONFIG_CHOICES.items():
        v = getattr(cfg, name)
        if not any(type(v) is type(c) and v == c for c in choices):      # (a bool, not 0 or 1)
            raise ValueError(f"{name} must be one of {', '.join(map(str, choices))}, got {reprlib.repr(v)}")
    if not (isinstance(cfg.metrics, (list, tuple)) and all(isinstance(m, str) and m in METRICS for m in cfg.metrics)):
        raise ValueError(f"metrics must be a list of {', '.join(sorted(METRICS))}, got {cfg.metrics!r}")
    cfg.metrics = tuple(dict.fromkeys(cfg.metrics))                    # (fvd16 twice: once)
    if cfg.period_max < cfg.period_min:
        raise ValueError(f"period_max {cfg.period_max:g} is below period_min {cfg.period_min:g}")
    if cfg.aug == "none" and cfg.aug_p > 0:                          # (--p, or a resumed run's --aug none)
        raise ValueError(f"aug_p (--p) {cfg.aug_p:g} is an augmentation probability: not with aug 'none'")
    if cfg.frames_per_clip - 1 > cfg.max_span:
        raise ValueError(f"frames_per_clip {cfg.frames_per_clip} spans more than max_span {cfg.max_span} frames")
    if cfg.d_frame_div > 1 and cfg.d_concat_res >= cfg.resolution:
        raise ValueError(f"d_frame_div {cfg.d_frame_div} needs a resolution above d_concat_res {cfg.d_concat_res}")
    return cfg

def check_batch_split(batch: int, world: int, group: int) -> int:
    """Videos per process: the global batch splits evenly, each share into mbstd groups."""
    if batch % world or (local := batch // world) % min(group, local):
        raise UserError(f"--batch {batch}/{world} processes = {batch / world:g}: not whole mbstd groups ({group})")
    return local

def available_memory(device: torch.device, ulimit: bool = False) -> Optional[int]:
    """Bytes free: the GPU's or MemAvailable; ulimit: what `ulimit -v` leaves this process. None: unknown, no limit."""
    if device.type == "cuda":
        return None if ulimit else torch.cuda.mem_get_info(device)[0]
    with contextlib.suppress(OSError, TypeError):
        if not ulimit:
            return int(re.search(r"MemAvailable:\s+(\d+) kB", Path("/proc/meminfo").read_text())[1]) * 1024
        used = int(re.search(r"VmSize:\s+(\d+) kB", Path("/proc/self/status").read_text())[1]) * 1024
        limit = resource.getrlimit(resource.RLIMIT_AS)[0]                       # (RLIM_INFINITY: -1)
        return None if limit == resource.RLIM_INFINITY else max(0, limit - used)

def check_memory(cfg: Config, frames: int, copies: int, device, what: str, lower: str, d=False, extra=0, others=0):
    """Before the work: `copies` x `frames` frames' float32 activations in G (and D), C(r) r^2 over r, + extra bytes, in
    this process; + others' bytes, in other processes: against the free memory; this process's share, 1.1x, against its
    ulimit -v (measured vs estimated: the quick start 1.6-2.1 vs 1.76 GB past torch's 3.4; 16^2: 0.6-0.7 vs 0.64)."""
    res = [2 ** i for i in range(2, int(math.log2(cfg.resolution)) + 1)]
    here = extra + copies * 4 * frames * sum((cfg.channels(r) + d * cfg.d_channels(r)) * r * r for r in res)
    for need, have, said in ((here + others, available_memory(device), "{:.2f} GB, {:.2f} GB are available"),
                             (1.1 * here, available_memory(device, ulimit=True),
                              "{:.2f} GB in this process, {:.2f} GB are left to it by ulimit -v")):
        if have is not None and need > have:
            raise UserError(f"{what} needs about {said.format(need / 2 ** 30, have / 2 ** 30)} on this "
                            f"{device.type}: lower {lower}")

def _pick_device(name: Optional[str]) -> torch.device:
    """--device, checked now: a misspelt name or a missing GPU is one line, not a CPU run or a late failure."""
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    name = name or ("cuda" if count else "cpu")
    if not re.fullmatch(r"cpu|cuda(:\d{1,4})?", name):                   # (not mps, meta, ...)
        raise UserError(f"--device {name}: not a device this program runs on (cpu, cuda, cuda:1, ...)")
    if name.startswith("cuda") and int(name[5:] or 0) >= count:
        raise UserError(f"--device {name}: only {count} CUDA device(s) present")
    return torch.device(name)

# --- The commands: train, sample, project (convert: above; bench, doctor, figures, plot: Appendix C) ---
def weights_id(G) -> str:
    """A hash of the generator's weights: the checkpoint a projection belongs to."""
    return hashlib.sha256(b"".join(name.encode() + v.detach().float().cpu().numpy().tobytes()
                                   for name, v in G.state_dict().items())).hexdigest()[:16]

def load_projection(path: str) -> dict:
    """A file `project` wrote (read as checkpoints are: never code), every field of it checked."""
    def floats(v, dims: int, dtype=torch.float32) -> bool:
        return torch.is_tensor(v) and v.dtype == dtype and v.dim() == dims and bool(v.isfinite().all())
    state = load_checkpoint(path, "projection")
    rules = dict(projection=lambda v: v == 1, weights=lambda v: isinstance(v, str), ckpt=lambda v: isinstance(v, str),
                 w=lambda v: floats(v, 1), tokens=lambda v: floats(v, 2),      # (their sizes: G's, checked by sample)
                 times=lambda v: floats(v, 1, torch.float64) and 0 < len(v) <= 64 and 0 <= v.min() <= v.max() < 1e9,
                 fps=lambda v: type(v) in (int, float) and CONFIG_RANGES["fps"][1] <= v <= MAX_DATASET_FPS,
                 first=lambda v: type(v) is int and abs(v) < 2 ** 40, motion_seed=lambda v: type(v) is int and v >= 0)
    for key, ok in rules.items():                               # (times: at most project's 64 frames, finite)
        if not (isinstance(state, dict) and ok(state.get(key))):
            raise UserError(f"{path}: not a projection: its '{key}' is missing or wrong (`project` writes them)")
    return state

def cmd_sample(args) -> None:
    """`sample`: a checkpoint, a projection (--from) or an untrained preset -> an .mp4 or a folder of PNGs."""
    device = _pick_device(args.device)                           # (the flags' ranges: build_parser)
    FrameSink.check(args.out)                                    # before a checkpoint is loaded
    proj = load_projection(args.proj) if args.proj else None     # (§13; it names its checkpoint)
    if proj and (args.num > 1 or args.seed is not None or args.preset):
        raise UserError(f"--from {args.proj} renders its one projected video: not with --num, --seed or --preset")
    if args.ckpt and args.preset:
        raise UserError("--preset picks an untrained generator's architecture, but --ckpt brings its own")
    if proj and not args.ckpt and not os.path.exists(proj["ckpt"]):
        raise UserError(f"{args.proj}: its checkpoint {proj['ckpt']} is gone (moved?): pass it with --ckpt")
    args.ckpt, seed = args.ckpt or (proj and proj["ckpt"]), args.seed or 0
    if args.ckpt:
        (G, cfg), source = load_generator(args.ckpt, device), checkpoint_path(args.ckpt)
    else:
        torch.manual_seed(seed)
        G = Generator(cfg := make_config(args.preset or "tiny")).eval().requires_grad_(False).to(device)
        source = f"a freshly initialized '{cfg.preset}' generator (no --ckpt: expect noise, not video)"
    fps, w, mseed = args.fps or cfg.fps, None, seed if args.motion_seed is None else args.motion_seed
    motion_seeds, seconds = list(range(mseed, mseed + args.num)), args.seconds or 4.0   # video i: seed + i, mseed + i
    if proj:                        # its w, its fitted tokens (or --motion-seed's), at its clip's fps and length
        if proj["weights"] != weights_id(G):
            raise UserError(f"{args.proj} was projected into other weights (checkpoint {proj['ckpt']}, weights "
                            f"{proj['weights']}; {source}'s are {weights_id(G)}, trained on since?): pass its --ckpt, "
                            "or project again")
        t, dz, ctx = proj["times"][None], cfg.motion_delta_z, G.motion.context       # the tokens its times need
        if proj["w"].shape != (cfg.w_dim,) or proj["first"] != int(torch.floor(t.min() / dz)) - ctx or \
                proj["tokens"].shape != (G.tokens_needed(t, dz, ctx), cfg.motion_dim):
            raise UserError(f"{args.proj}: not a projection of this generator (its w, tokens or first do not fit)")
        w = G.mapping.w_avg.lerp(proj["w"].to(device), args.truncation)[None]    # [1, w_dim], truncated
        motion_seeds = [(proj["motion_seed"], proj["first"], proj["tokens"]) if args.motion_seed is None else mseed]
        fps = args.fps or proj["fps"]
        if len(proj["times"]) > 1:                               # a clip: its length (a still: 4 s)
            seconds = args.seconds or len(proj["times"]) / proj["fps"]
    chunk = min(args.batch, max(1, round(seconds * fps)))
    # A chunk's memory: G's activations (4 live tensors a layer) and its frames (float32, uint8, grid: 6 bytes a value)
    rows = min(args.num * chunk, ROW_BLOCK) if device.type == "cpu" else args.num * chunk  # (ROW_BLOCK at a time: §13)
    check_memory(cfg, rows, 4, device, f"rendering {args.num} video(s) {chunk} frames at a time at {cfg.resolution}^2",
                 "--batch or --num", extra=args.num * chunk * 3 * cfg.resolution ** 2 * 6)
    print(f"sampling {args.num} video(s) of {seconds:g} s at {fps:g} fps from {source}", file=sys.stderr)
    t0, replaced = time.time(), os.path.isfile(args.out)           # (an existing .mp4 is replaced when complete)
    n = sample(G, args.out, seconds, fps, cfg.fps, args.start, list(range(seed, seed + args.num)), motion_seeds,
               args.truncation, args.batch, w=w)
    sec, peak = time.time() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # MB (not ffmpeg's)
    print(f"wrote {args.out}{' (replacing the previous file)' * replaced}: {n} frames in {sec:.1f} s "
          f"({n / sec:.1f} frames/s), peak memory {peak:.0f} MB", file=sys.stderr)

def cmd_project(args) -> None:
    """`project`: an image, video or frame folder (its first 64 frames, as prepare_data.py crops) -> proj.pt (§13)."""
    import prepare_data as pd
    device, path = _pick_device(args.device), args.target
    if not args.out.endswith(".pt"):
        raise UserError(f"--out {args.out}: a projection is a .pt file")
    check_writable(args.out)                                     # before the work
    if os.path.exists(args.out):                                 # it replaces a projection, never a checkpoint
        try:
            load_projection(args.out)
        except UserError:
            raise UserError(f"--out {args.out}: exists and is not a projection (choose another name)") from None
    G, cfg = load_generator(args.ckpt, device)
    try:
        frames, fps, more = pd.read_clip(path, cfg.resolution)   # uint8 [T, R, R, 3], T <= 64
    except pd.PrepareError as e:                                # no such file, not an image, frames of mixed sizes ...
        raise UserError(str(e)) from None
    if more:
        print(f"{path}: more than 64 frames; the first 64 are projected", file=sys.stderr)
    fps, t0 = fps if len(frames) > 1 else cfg.fps, time.time()   # one frame (an image's, a GIF's): a still, G's rate
    times = torch.arange(len(frames), dtype=torch.float64) * (cfg.fps / fps)      # in training frames
    target = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1     # [T, 3, R, R] in [-1, 1]
    fit = project(G, target, times, args.steps, motion=len(frames) > 1, motion_seed=args.motion_seed)
    stopped, replaced = fit["steps"] < args.steps, os.path.exists(args.out)
    save_checkpoint(args.out, dict(projection=1, weights=weights_id(G), ckpt=os.path.abspath(args.ckpt), times=times,
                                   fps=fps, motion_seed=args.motion_seed, **fit))       # (atomic, as a checkpoint)
    print(f"wrote {args.out}{' (replacing the previous projection)' * replaced}: {len(frames)} frame(s), "
          f"{fit['steps']} steps in {time.time() - t0:.1f} s, distance {fit['loss']:.4f}"
          + " (interrupted: the best fit so far)" * stopped, file=sys.stderr)
    if stopped:
        sys.exit(130)                                            # interrupted: said in the line above

def cmd_train(args) -> None:
    """`train`: every input checked before any work (--dry-run: the plan), then, locked, 1 process, N, or torchrun's."""
    device, gpus = _pick_device(args.device), torch.cuda.device_count()
    torchrun = "RANK" in os.environ and "WORLD_SIZE" in os.environ    # torchrun sets both in every process
    world, rank = (int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])) if torchrun else (args.gpus, 0)
    if args.fp32 and args.amp_dtype not in (None, "auto"):          # (flags contradicting each other or the machine)
        raise UserError("--fp32 is all float32: no --amp-dtype")
    if device.type == "cpu" and args.amp_dtype == "float16":
        raise UserError("--amp-dtype float16 is for CUDA (a CPU: bfloat16)")
    if world > 1 and (args.device or "").startswith("cuda:"):
        raise UserError(f"--device {args.device}: not with --gpus")
    if not torchrun and args.device != "cpu" and world > max(gpus, 1):
        raise UserError(f"--gpus {world}: only {gpus} CUDA device(s) present (--device cpu: on CPUs)")
    why = "" if args.preset else f" (no --preset: on a {'GPU' if device.type == 'cuda' else 'CPU'})"
    given = {k: v for k, v in vars(args).items() if k in _NAMES and v is not None}   # the Config flags given
    args.preset = args.preset or ("ffs" if device.type == "cuda" else "tiny")    # (the paper's architecture on a GPU)
    try:                                                        # (a resumed checkpoint: its settings, then these)
        cfg = make_config(**{**given, "preset": args.preset})
    except ValueError as e:                                     # flags each in range, but not together
        raise UserError(f"--preset {args.preset} with these flags: {e}") from None
    # --resume auto (or the run's own checkpoint or directory) continues --outdir's run, if any; else none may be there.
    named_run = args.resume and os.path.isfile(os.path.join(args.resume, "checkpoint.pt"))   # --resume DIR: --outdir
    args.outdir = args.outdir or (args.resume if named_run else f"runs/{args.preset}-{Path(args.data).stem}")
    check_writable(args.outdir, folder=True)                  # (a file there, a read-only place: said now)
    own = os.path.join(args.outdir, "checkpoint.pt")
    if args.resume and os.path.realpath(checkpoint_path(args.resume)) == os.path.realpath(own):
        args.resume = "auto"
    listed = [os.path.join(d, e) for d in ("", "samples") if os.path.isdir(os.path.join(args.outdir, d))
              for e in sorted(os.listdir(os.path.join(args.outdir, d)))]      # its entries, and samples/'s
    run = [e for e in listed if e in ("checkpoint.pt", "log.jsonl", "samples")]   # (not a killed start's leftovers)
    if foreign := [e for e in listed if not RUN_ENTRY.fullmatch(e)]:      # what train writes, or a killed one left
        raise UserError(f"{args.outdir}: holds files train does not write ({', '.join(foreign[:3])}"
                        f"{', ...' * (len(foreign) > 3)}): move them, or train into a new or empty --outdir")
    if run and args.resume != "auto" and rank == 0:
        raise UserError(f"{args.outdir}: a run is already there ({', '.join(run)}); continue it with --resume auto, "
                        "or train into a new --outdir")
    if none_there := args.resume == "auto" and not os.path.isfile(own):
        args.resume = None
    if args.resume == "auto" and os.path.isfile(log := os.path.join(args.outdir, "log.jsonl")):
        read_log(log)                                            # its lines, kept up to the checkpoint: said now
    cfg, data, clips, state, path = _open_run(cfg, args.data, args.outdir, args.resume, args.fp32, given)
    if "metric_videos" in given and not cfg.metrics:
        raise UserError("--metric-videos is for --metrics: add one")
    if cfg.metrics and max(data.lengths) < (k := max(int(m[3:]) for m in cfg.metrics)):   # fvd.py: a whole clip
        raise UserError(f"--metrics fvd{k}: needs videos of at least {k} frames; the longest in {args.data} has "
                        f"{max(data.lengths)} (a resumed run's too; --metrics alone: none)")
    check_batch_split(cfg.batch, world, cfg.mbstd_group)
    # Memory before the work: the processes (a trainer per GPU, its --workers loaders: 400 MB each, 370 measured) and
    # on a CPU a step (a GPU's is unmeasured; CUDA's OOM is one line): G and D's activations per frame of the global
    # batch x 32 (saved tensors, backward, R1's double backward: 17-25 measured, 32-128^2); a ulimit -v: this process's.
    procs = int(os.environ.get("LOCAL_WORLD_SIZE", world)) * (1 + args.workers)
    check_memory(cfg, cfg.batch * cfg.frames_per_clip * (device.type == "cpu"), 32, torch.device("cpu"),
                 f"{procs} process(es) and a training step at {cfg.resolution}^2 with --batch {cfg.batch}",
                 "--batch, --workers or --gpus", d=True, extra=400 * 2 ** 20, others=(procs - 1) * 400 * 2 ** 20)
    plan, done = "a new run" + " (--resume auto found no checkpoint)" * none_there, 0.0   # said first (--dry-run: +cfg)
    if state is not None and "opt_G" in state:
        done, why = state["nimg"] / 1000, " (the checkpoint's settings; the flags given on top)"
        plan = f"resuming {path} at {done:.2f} kimg (step {state['step']}, seed {state['seed']})" + (
            f"; --seed {args.seed} from there on" if args.seed not in (None, state["seed"]) else "")
    elif state is not None:                                      # a snapshot: from kimg 0
        plan = f"fine-tuning the {state.get('source', 'snapshot')} (fresh optimizers)"
    run = cfg.resolved(device)                       # (lr, r1_gamma, snap, metric_videos: as the run will use them)
    fvds = "".join(f", {m.upper()} on {run.metric_videos} videos a side" for m in cfg.metrics)
    if unused := len(data.names) - len(clips.usable):           # (ClipDataset draws from the others)
        plan += f"; {unused} of {len(data.names)} videos are shorter than a clip ({cfg.frames_per_clip} frames): unused"
    todo = (f", to {cfg.kimg:g} kimg in {args.outdir}, a log line every {cfg.tick:g} kimg, a snapshot every "
            f"{run.snap:g} kimg{fvds}" if done < cfg.kimg else f"; --kimg is {cfg.kimg:g}: nothing to train")
    if rank == 0:
        print(f"train{' (dry run)' * args.dry_run}: preset {cfg.preset}{why}, {cfg.resolution}^2, batch {cfg.batch}, "
              f"{world} process(es) on {device.type}: {plan}{todo}", file=sys.stderr)
    if args.dry_run:
        print(json.dumps(dataclasses.asdict(run), indent=2))
    if args.dry_run or done >= cfg.kimg:
        return
    with run_lock(args.outdir) if rank == 0 else contextlib.nullcontext():
        if world == 1 or torchrun:
            return _train_worker(rank, world, args, cfg, "env://" if torchrun else None)
        # `world` processes, meeting in a file of `tmp`; a signal to us: SIGTERM to each (save, stop). One failing:
        # join SIGTERMs the rest, SIGKILL 30 s later (safe: all pass the barrier after rank 0's save first).
        # (torch's "Terminating process N" would follow our last line as the others exit 130 too: not said)
        logging.getLogger("torch.multiprocessing.spawn").addFilter(lambda r: "Terminating" not in str(r.msg))
        with tempfile.TemporaryDirectory() as tmp:
            context = torch.multiprocessing.start_processes(
                _train_worker, args=(world, args, cfg, f"file://{tmp}/init"), nprocs=world, join=False)
            try:
                with GracefulStop(lambda *_: [process.terminate() for process in context.processes]):
                    while not context.join():
                        pass
            except torch.multiprocessing.ProcessExitedException as e:
                sys.exit(e.exit_code if e.exit_code and e.exit_code > 0 else 1)

# --- The flags, their ranges, and the one error path --------------------------------------------
def _in_range(kind, lo, hi, lo_open=False):
    """An argparse `type`: an int, or a finite float, in [lo, hi] ((lo, hi] with lo_open)."""
    def parse(text: str):
        if not lo <= (x := kind(text)) <= hi or lo_open and x == lo:   # (nan, inf: out; 4294967295, not 4.3e+09)
            raise argparse.ArgumentTypeError(f"{text} is out of range: must be in {'(' if lo_open else '['}"
                                             + ("{}, {}]" if kind is int else "{:g}, {:g}]").format(lo, hi))
        return x
    parse.__name__ = kind.__name__
    return parse

INT, NUM = functools.partial(_in_range, int), functools.partial(_in_range, float)
SEED, KIMG = INT(0, 2 ** 32 - 1), NUM(1e-6, 1e6)     # every seed; --kimg, --snap, --tick, --ada-kimg (as Config's)
DEVICE = [("--device", None, None, "cpu, cuda, cuda:1 ... (default: cuda if available)"),
          ("--no-custom-ops", "store_true", False, "use the PyTorch reference of the CUDA kernel")]

def build_parser() -> argparse.ArgumentParser:
    """Every command's flags, a row each: (flag, kind: a range, choices, an action or None, default, help[, more]).
    train's Config flags default to None, "the preset's value" (§1): the paper's numbers live in one place."""
    commands = dict(
        sample=(cmd_sample, "render videos of any length and frame rate", DEVICE + [
            ("--ckpt", None, None, "checkpoint file or training directory (default: untrained --preset)"),
            ("--preset", list(PRESETS), None, "architecture when no --ckpt (default tiny)"),
            ("--seconds", NUM(0, 86400, lo_open=True), None, "length, up to a day (default 4; --from: the clip's)"),
            ("--fps", NUM(0.01, 1000), None, "frames per second (default: the dataset's, else the preset's)"),
            ("--start", NUM(0, 1e7), 0.0, "time of the first frame, in seconds"),
            ("--seed", SEED, None, "content seed z^c (video i uses seed + i; default 0)"),
            ("--motion-seed", SEED, None, "motion seed z^m (default: = --seed)"),
            ("--num", INT(1, 64), 1, "number of videos, tiled into a grid"),
            ("--truncation", NUM(-10, 10), 1.0, "truncation psi for w (1 = off)"),
            ("--batch", INT(1, 4096), 16, "time steps rendered per chunk (--num x this many frames)"),
            ("--out", None, "sample.mp4", "an .mp4 file, or a folder for PNG frames (default sample.mp4)"),
            ("--from", None, None, "a projection (proj.pt): its video, its fps and length", dict(dest="proj"))]),
        project=(cmd_project, "fit a real image or short clip: w and motion tokens (Fig 2)", DEVICE + [
            ("--ckpt", None, None, "checkpoint file or training directory", dict(required=True)),
            ("--target", None, None, "an image, a video or a folder of frames (the first 64)", dict(required=True)),
            ("--steps", INT(1, 10 ** 5), 300, "optimizer steps (default 300)"),
            ("--motion-seed", SEED, 0, "the tokens' starting values (a still: its motion)"),
            ("--out", None, "proj.pt", "the projection to write (default proj.pt)")]),
        train=(cmd_train, "train on a dataset from prepare_data.py (every flag defaults to the preset's)", DEVICE + [
            ("--data", None, None, "dataset zip or folder written by prepare_data.py", dict(required=True)),
            ("--preset", list(PRESETS), None, "architecture and defaults (ffs, the paper's, on a GPU; else tiny)"),
            ("--outdir", None, None, "run directory (default runs/<preset>-<data>); a new run needs an empty one"),
            ("--kimg", KIMG, None, "train until D has seen this many thousand real frames (default 25000; tiny 200)"),
            ("--snap", KIMG, None, "checkpoint + samples every this many kimg (default min(200, kimg/5))"),
            ("--tick", KIMG, None, "log a line to log.jsonl at every multiple of this many kimg (default 1)"),
            ("--seed", SEED, None, "seed of weights and of every random draw (default 0; a resumed run: its own)"),
            ("--batch", INT(1, 65536), None, "videos per step over all processes (paper 64)"),
            ("--frames-per-clip", INT(1, 33), None, "k frames D sees per video (paper 3)"),
            ("--gamma", NUM(0, 1e4), None, "R1 weight (default 0.0002 res^2 / batch)", dict(dest="r1_gamma")),
            ("--aug", ["ada", "fixed", "none"], None, "augmentation: adaptive p, constant --p, or none"),
            ("--p", NUM(0, 1), None, "initial (ada) or constant (fixed) augmentation probability", dict(dest="aug_p")),
            ("--d-cond", ["hyper", "concat", "none"], None, "D's time conditioning: paper, release, or none"),
            ("--lr", NUM(0, 1, lo_open=True), None, "Adam learning rate (paper 0.0025)"),
            ("--ada-kimg", KIMG, None, "ADA's p can move 0 -> 1 in this many thousand videos (release 100)"),
            ("--mirror", argparse.BooleanOptionalAction, None, "x-flip whole videos at random (default on)"),
            ("--span-dist", ["uniform", "release"], None, "clip spans: U[k-1, 32] (paper), or {2, 4, 8, 16, 32}"),
            ("--fp32", "store_true", False, "no fp16 layers on CUDA, no activation clamping"),
            ("--amp-dtype", list(AMP_DTYPES), None, "mixed-precision layers' dtype (auto: float16 on CUDA, float32)"),
            ("--gpus", INT(1, 1024), 1, "processes, one per GPU (with --device cpu: CPU processes)"),
            ("--workers", INT(0, 64), 2, "data-loading worker processes per training process (default 2)"),
            ("--resume", None, None, "a checkpoint, run directory or authors' .pkl, or 'auto' (--outdir's)"),
            ("--metrics", sorted(METRICS, key=len), None, "computed at each snapshot", dict(nargs="*")),
            ("--metric-videos", INT(2, 100000), None, "videos a side per metric (default: 2048 on a GPU, 64 on a CPU)"),
            ("--dry-run", "store_true", False, "check the inputs, print the config (JSON) and the run's plan, stop")]),
        bench=(cmd_bench, "speed of rendering (and of training steps)", DEVICE + [
            ("--presets", list(PRESETS), ["tiny"], "default: tiny", dict(nargs="+")),
            ("--repeat", INT(1, 1000), 3, "timed repetitions (median; default 3)"),
            ("--train", "store_true", False, "also time training steps (s/kimg; on a GPU, their peak memory)")]),
        figures=(cmd_figures, "the README's pictures: real vs fake, content/motion, t=0 vs 1 h, Fig 9", DEVICE + [
            ("--ckpt", None, None, "checkpoint file or training directory", dict(required=True)),
            ("--data", None, None, "its dataset, for real frames beside the fake ones"),
            ("--out", None, "figures", "folder for the PNGs (default figures/; the README's are in assets/)"),
            ("--num", INT(1, 64), 4, "videos per picture")]),
        plot=(cmd_plot, "a metric over kimg from runs' log.jsonl (the README's FVD curve) as a PNG", [
            ("runs", None, None, "run directories (or their log.jsonl)", dict(nargs="+")),
            ("--metric", None, "fvd16", "a key of log.jsonl (default fvd16)"),
            ("--out", None, "fvd_curve.png", "the PNG to write (default fvd_curve.png)")]),
        convert=(cmd_convert, "an authors' network-snapshot-*.pkl -> a checkpoint of ours (nothing in it is run)", [
            ("src", None, None, "the authors' snapshot, e.g. network-snapshot-001234.pkl"),
            ("out", None, None, "the checkpoint to write, e.g. ffs.pt")]),
        doctor=(cmd_doctor, "torch/CUDA facts, build the CUDA kernel, check it against the reference", [
            ("--verbose", "store_true", False, "show the compiler's output"),
            ("--full", "store_true", False, "also the acceptance run: ffs's speeds and memory on a GPU (minutes; on a "
             "CPU, a smoke run of tiny)")]))

    def error(message, cmd=None):          # argparse's errors in the tool's one-line format (no usage block before)
        raise UserError(message + (f" (see: stylegan_v.py {cmd} --help)" if cmd else ""))
    p = argparse.ArgumentParser(prog="stylegan_v.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.error = error
    sub = p.add_subparsers(dest="cmd", required=True)
    for name, (fn, about, rows) in commands.items():
        c = sub.add_parser(name, help=about, description=about)
        c.error = functools.partial(error, cmd=name)
        for flag, kind, default, text, *more in rows:
            how = {list: "choices", str: "action", type: "action"}.get(type(kind), "type")    # (a range: a type)
            c.add_argument(flag, default=default, help=text, **{how: kind}, **(more[0] if more else {}))
        c.set_defaults(fn=fn)
    return p

def _exit_on_error(e: BaseException, quiet: bool = False) -> None:
    """The one way out: a UserError, OSError or out of memory is ONE line, exit 2; Ctrl-C 130; a bug: its traceback."""
    if isinstance(e, (MemoryError, torch.OutOfMemoryError)) or "can't allocate memory" in str(e):   # (CPU's)
        gpu = "GPU " * isinstance(e, torch.OutOfMemoryError)     # (a GPU's, the host's, a ulimit -v's)
        e = UserError(f"out of {gpu}memory ({_first_line(e)[:120]}): lower --batch")
    elif isinstance(e, OSError):                  # said as a UserError: its file, the OS's reason
        e = UserError(f"{e.filename}: " * bool(e.filename) + error_reason(e))
    elif not isinstance(e, (KeyboardInterrupt, UserError)):      # a bug (a SystemExit too): as it is
        raise e
    if not quiet:
        print("stylegan_v.py:", "interrupted" if isinstance(e, KeyboardInterrupt) else f"error: {e}", file=sys.stderr)
    sys.exit(130 if isinstance(e, KeyboardInterrupt) else 2)

def main(argv=None) -> None:
    """The flags (build_parser), the command, the one error path; `kill` (SIGTERM) stops it as Ctrl-C does."""
    global USE_CUSTOM_OPS
    custom_ops = USE_CUSTOM_OPS
    try:
        with GracefulStop(signal.default_int_handler):          # (it raises KeyboardInterrupt)
            args = build_parser().parse_args(argv)
            USE_CUSTOM_OPS = not getattr(args, "no_custom_ops", False)    # --no-custom-ops: the PyTorch reference
            args.fn(args)
    except BaseException as e:                                   # (a SystemExit goes through it unchanged)
        _exit_on_error(e)
    finally:
        USE_CUSTOM_OPS = custom_ops             # (main() is also called in-process, by the tests)

if __name__ == "__main__":
    main()
