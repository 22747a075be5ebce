"""The specification of stylegan_v.py, fvd.py and prepare_data.py, as tests (CPU; the GPU ones skip).

Run:  python -m pytest -q test_stylegan_v.py
Sections follow the files: generator and motion (Eq 1-6), sampling, data, discriminator and
training, ADA, the CUDA kernel, data preparation, FVD.
"""

import json
import math
import os
import signal
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch

import stylegan_v as sv

HERE = os.path.dirname(os.path.abspath(__file__))
torch.set_num_threads(min(2, os.cpu_count() or 1))


def tiny(**kw) -> sv.Config:
    return sv.make_config("tiny", **{"resolution": 16, **kw})


def write_dataset(path, lengths=(20, 23, 26), res=16, fmt="png", fps=25.0, seed=0):
    """A dataset in prepare_data.py's layout: squares moving one pixel per frame."""
    import imageio.v3 as iio
    rng = np.random.default_rng(seed)
    videos = []
    with zipfile.ZipFile(path, "w") as z:
        for v, n in enumerate(lengths):
            y0, x0 = rng.integers(0, res // 2, 2)
            color = rng.integers(64, 255, 3).astype(np.uint8)
            for i in range(n):
                f = np.full((res, res, 3), 20, np.uint8)
                x = (x0 + i) % (res - 4)
                f[y0:y0 + 4, x:x + 4] = color
                z.writestr(f"v{v:03d}/{i:06d}.{fmt}", iio.imwrite("<bytes>", f, extension="." + fmt))
            videos.append({"name": f"v{v:03d}", "frames": n})
        z.writestr("dataset.json", json.dumps({"fps": fps, "resolution": res, "format": fmt, "videos": videos}))
    return str(path)


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
    kimg = 8 * 3 * 4 / 1000                                             # 4 steps
    cfg = sv.make_config("tiny", batch=8, aug="ada", aug_p=0.5)
    full = sv.train(cfg, data, str(tmp_path / "full"), kimg, sv.Dist(), workers=0, snap=1000, progress=False)

    orig = sv.Trainer.step

    def step_then_ctrl_c(self, *a):
        out = orig(self, *a)
        if self.step_idx == 2:
            signal.raise_signal(signal.SIGINT)                          # Ctrl-C after the 2nd step
        return out

    sv.Trainer.step = step_then_ctrl_c
    try:
        cut = sv.train(cfg, data, str(tmp_path / "cut"), kimg, sv.Dist(), workers=0, snap=1000, progress=False)
    finally:
        sv.Trainer.step = orig
    assert cut.step_idx == 2 and os.path.isfile(tmp_path / "cut" / "checkpoint.pt")
    resumed = sv.train(cfg, data, str(tmp_path / "cut"), kimg, sv.Dist(), workers=0, snap=1000, resume="auto",
                       progress=False)
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
