"""The pggan family: fade-in endpoints of G and D, the growth schedule, exact resume across phases, the
minibatch standard deviation, pixel norm and the equalised learning rate.

The loop's guarantees (exact resume, DDP, NaN stop, SIGTERM, report) are checked for this family by
tests/test_family_template.py; there the default schedule keeps its 4 iterations at 4³, so the resume and
the two-process tests here cross fade-in and stable phases with a short schedule.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from medgen.core.errors import UsageError
from medgen.families import registry
from medgen.families.pggan.config import model_config
from medgen.families.pggan.layers import EqConv3d, lrelu, minibatch_stddev, pixel_norm, upsample2
from medgen.families.pggan.model import PGGANModel, build
from medgen.families.pggan.networks import Discriminator, Generator
from medgen.families.pggan.schedule import full_resolution_at, iterations_within, phase_at
from medgen.families.pggan.train import PGGANHParams, real_at
from medgen.training import checkpoint as ckpt_io
from medgen.training.runconfig import RunConfig
from toy_volumes import make_dataset

pytestmark = pytest.mark.usefixtures("one_thread")


def _nets(size=32, seed=0):
    cfg = model_config("tiny", size)
    torch.manual_seed(seed)
    return cfg, Generator(cfg), Discriminator(cfg)


def test_generator_fade_in_is_exactly_the_old_path_at_0_and_the_new_block_at_1():
    cfg, G, _ = _nets()
    z = torch.randn(3, cfg.latent_dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for k in range(1, cfg.levels + 1):
            low = G(z, k - 1, 1.0)
            new = G.to_rgb[k](G.blocks[k](G.features(z, k - 1)))
            assert torch.equal(G(z, k, 0.0), upsample2(low)), k
            assert torch.equal(G(z, k, 1.0), new), k
            assert G(z, k, 0.0).shape[-1] == cfg.resolution(k) == 2 * low.shape[-1]
            # in between: the linear blend
            torch.testing.assert_close(G(z, k, 0.25), 0.75 * upsample2(low) + 0.25 * new, rtol=1e-5, atol=1e-6)
            assert not torch.allclose(new, upsample2(low))  # the two ends differ, so the checks above mean something
    # with gradients on, the idle blocks are touched (times 0): the values stay exactly the same
    assert torch.equal(G(z, 2, 0.0).detach(), upsample2(G(z, 1, 1.0)).detach())


def test_discriminator_fade_in_is_exactly_the_old_path_at_0_and_the_new_block_at_1():
    cfg, _, D = _nets()
    x = torch.rand(4, 1, 32, 32, 32, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.no_grad():
        for k in range(1, cfg.levels + 1):
            xk = F.avg_pool3d(x, cfg.size // cfg.resolution(k)) if k < cfg.levels else x
            low = D(F.avg_pool3d(xk, 2), k - 1, 1.0)
            new = D.from_level(D.blocks[k](lrelu(D.from_rgb[k](xk))), k - 1)
            assert torch.equal(D(xk, k, 0.0), low), k
            assert torch.equal(D(xk, k, 1.0), new), k
            assert not torch.allclose(low, new)
            assert D(xk, k, 0.5).shape == (4,)


def test_real_volumes_fade_like_the_generated_ones():
    x = torch.rand(2, 1, 32, 32, 32, generator=torch.Generator().manual_seed(3))
    x8 = F.avg_pool3d(x, 4)
    assert torch.equal(real_at(x, 1, 1.0, 32), x8)  # 32³ → 8³: the mean of each 4³ block
    torch.testing.assert_close(x8[0, 0, 0, 0, 0], x[0, 0, :4, :4, :4].mean())
    assert torch.equal(real_at(x, 1, 0.0, 32), upsample2(F.avg_pool3d(x8, 2)))  # α = 0: the 4³ volume, upsampled
    torch.testing.assert_close(real_at(x, 1, 0.5, 32), 0.5 * x8 + 0.5 * upsample2(F.avg_pool3d(x8, 2)))
    assert torch.equal(real_at(x, 3, 1.0, 32), x)
    assert torch.equal(real_at(x, 0, 1.0, 32), F.avg_pool3d(x, 8))


def test_schedule_maps_iterations_to_level_and_alpha_at_the_phase_boundaries():
    def at(t):
        p = phase_at(t, levels=3, fade_iters=4, stable_iters=3)
        return p.level, p.alpha, p.fading, p.is_start

    assert [at(t) for t in (0, 1, 2)] == [(0, 1.0, False, False)] * 3  # stable 4³, iterations 0-2
    assert at(3) == (1, 0.0, True, True)  # fade-in of 8³ starts with α = 0
    assert at(4) == (1, 0.25, True, False)
    assert at(6) == (1, 0.75, True, False)  # last fade iteration
    assert at(7) == (1, 1.0, False, True)  # stable 8³
    assert at(9) == (1, 1.0, False, False)
    assert at(10) == (2, 0.0, True, True)  # 10 = 3 + (4 + 3)
    assert at(14) == (2, 1.0, False, True)
    assert at(17) == (3, 0.0, True, True)
    assert at(20) == (3, 0.75, True, False)
    assert full_resolution_at(3, 4, 3) == 21
    assert at(21) == (3, 1.0, False, True)  # the last level, stable
    assert [at(t) for t in (22, 23, 24, 1000)] == [(3, 1.0, False, False)] * 4  # ... to the end of the run
    assert phase_at(20, 3, 4, 3).resolution == 32
    # the schedule is the family's hyper-parameter, validated
    assert PGGANHParams.from_dict({"fade_iters": 4, "stable_iters": 3}).fade_iters == 4
    with pytest.raises(UsageError, match="fade_iters"):
        PGGANHParams.from_dict({"fade_iters": 0})



def test_iterations_within_a_budget_by_hand():
    """Costs 1, 2, 4 s at 4³, 8³, 16³; fade 10, stable 10: stable 4³ is iterations 0-9 (10 s), fade and stable
    8³ 10-29 (40 s), fade 16³ 30-39 and stable 16³ 40-49 (80 s): the schedule ends at 50 iterations, 130 s."""

    def within(seconds):
        return iterations_within(seconds, [1.0, 2.0, 4.0], fade_iters=10, stable_iters=10)

    assert within(10) == 10  # exactly the stable 4³ phase
    assert within(9.5) == 9
    assert within(30) == 20  # 10 · 1 s + 10 fade-in iterations of 8³ at 2 s
    assert within(31) == 20  # the 21st would end at 32 s
    assert within(50) == 30  # all of level 1: 10 + 20 · 2
    assert within(53.9) == 30 and within(54) == 31  # the first fade-in iteration of 16³ costs 4 s
    assert within(130) == 50  # the whole schedule
    assert within(170) == 60  # then 16³ goes on at 4 s per iteration
    assert within(0.5) == within(0) == within(-3) == 1  # at least one iteration
    assert iterations_within(10, [3.0], fade_iters=5, stable_iters=5) == 3  # a single level: 4³ throughout
    with pytest.raises(ValueError):
        iterations_within(10, [1.0, 0.0], 10, 10)
    with pytest.raises(ValueError):
        iterations_within(10, [1.0, 2.0], 0, 10)


def test_iterations_within_equals_summing_every_iterations_cost():
    def brute(seconds, costs, fade, stable):
        t, spent = 0, 0.0
        while spent + costs[phase_at(t, len(costs) - 1, fade, stable).level] <= seconds:
            spent += costs[phase_at(t, len(costs) - 1, fade, stable).level]
            t += 1
        return max(1, t)

    rng = np.random.default_rng(0)
    for case in range(300):
        levels, fade, stable = int(rng.integers(0, 5)), int(rng.integers(1, 6)), int(rng.integers(1, 6))
        # multiples of 1/8 add up exactly in floating point, so budgets that end on an iteration's last
        # second (the second half of the cases) compare the same both ways; the first half is arbitrary
        costs = [int(c) / 8 for c in rng.integers(1, 40, levels + 1)]
        schedule = stable * costs[0] + sum((fade + stable) * c for c in costs[1:])
        if case < 150:
            costs = [c + float(rng.uniform(0, 0.1)) for c in costs]
            seconds = float(rng.uniform(0, 1.5 * schedule))
        else:
            seconds = int(rng.integers(0, int(12 * schedule))) / 8
        assert iterations_within(seconds, costs, fade, stable) == brute(seconds, costs, fade, stable), \
            (seconds, costs, fade, stable)


def test_bench_keeps_every_levels_stable_iterations_after_warmup():
    from medgen.families.pggan.bench import growth_schedule, level_times

    assert growth_schedule(2, 3) == {"fade_iters": 1, "stable_iters": 5}
    # 16³ (levels 0-2), warm-up 1, repeats 2: 0-2 stable 4³ | 3 fade 8³ | 4-6 stable 8³ | 7 fade 16³ | 8-10
    assert level_times([float(t) for t in range(11)], 2, warmup=1, repeats=2) == [[1.0, 2.0], [5.0, 6.0],
                                                                                   [9.0, 10.0]]
    assert level_times([float(t) for t in range(5)], 2, warmup=0, repeats=1) == [[0.0], [2.0], [4.0]]


def test_bench_train_times_every_level_through_the_cli(capsys):
    import json

    from medgen.cli import main
    from medgen.families.pggan import bench

    assert registry.get("pggan").bench is bench
    assert main(["bench", "train", "--family", "pggan", "--preset", "tiny", "--size", "16", "--warmup", "1",
                 "--repeats", "1", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert (r["family"], r["benchmark"], r["size"], r["batch"], r["warmup"], r["repeats"]) == ("pggan", "train", 16,
                                                                                              2, 1, 1)
    per_level = {int(k): v for k, v in r["seconds_per_level"].items()}
    assert sorted(per_level) == [4, 8, 16] and all(v > 0 for v in per_level.values())
    assert r["seconds_median"] == per_level[16] == r["seconds"][0]  # the grown network's
    cfg = model_config("tiny", 16)
    assert r["params"] == {"G": sum(p.numel() for p in Generator(cfg).parameters()),
                           "D": sum(p.numel() for p in Discriminator(cfg).parameters())}
    assert r["peak_memory_mb"] > 50 and r["memory_measure"] == "cpu_peak_rss"
    line = bench.describe(r)
    assert line.startswith("pggan train tiny 16³ batch 2: ") and "per level: 4³ " in line and ", 16³ " in line


def test_synthesis_budget_follows_the_growth(tmp_path, monkeypatch):
    """The budget of a pggan run counts the cheap early levels; other families keep seconds / seconds per
    iteration."""
    import json
    from types import SimpleNamespace

    from medgen.experiments.synthesis import budget_iterations
    from medgen.families.pggan import bench

    measured = {"seconds_median": 4.0, "seconds_per_level": {"4": 1.0, "16": 4.0, "8": 2.0}}  # as JSON gives it
    monkeypatch.setattr(bench, "run_isolated", lambda kind, **kw: dict(measured))
    (tmp_path / "runs").mkdir()
    from dataclasses import replace

    from medgen.experiments.workspace import SCALES

    ws = SimpleNamespace(root=tmp_path, scale=replace(SCALES["smoke"], preset="tiny", batch=2),
                         torch_device=lambda: torch.device("cpu"))
    # defaults fade 1000, stable 1000: 1000 · 1 s + 2000 · 2 s + 2000 · 4 s = 13000 s for 5000 iterations,
    # then 4 s each: 240 min = 14400 s → 5000 + 350
    assert budget_iterations(ws, "pggan", "pggan-16-240min", 16, 240.0) == 5350
    saved = json.loads((tmp_path / "runs" / "pggan-16-240min.budget.json").read_text())
    assert saved["iterations"] == 5350 and saved["seconds_per_level"] == measured["seconds_per_level"]
    assert saved["seconds_per_iteration"] == 4.0
    assert budget_iterations(ws, "pggan", "pggan-16-240min", 16, 240.0) == 5350  # cached
    wgan = registry.get("wgan-gp").bench
    monkeypatch.setattr(wgan, "run_isolated", lambda kind, **kw: {"seconds_median": 4.0})
    assert budget_iterations(ws, "wgan-gp", "wgan-gp-16-240min", 16, 240.0) == 3600

def test_minibatch_stddev_equals_a_numpy_recomputation():
    x = torch.randn(6, 3, 2, 2, 2, generator=torch.Generator().manual_seed(4)) * torch.arange(1, 7).view(6, 1, 1, 1, 1)
    out = minibatch_stddev(x, group_size=4, parts=2)  # parts of 3: groups of 3 (the largest divisor ≤ 4)
    assert out.shape == (6, 4, 2, 2, 2) and torch.equal(out[:, :3], x)
    a = x.double().numpy()
    expected = []
    for g in (a[0:3], a[3:6]):  # groups never mix the two parts
        std = np.sqrt(((g - g.mean(axis=0)) ** 2).mean(axis=0) + 1e-8)  # per feature and position, over the group
        expected += [std.mean()] * 3
    for i in range(6):
        np.testing.assert_allclose(out[i, 3].numpy(), np.full((2, 2, 2), expected[i]), rtol=1e-5)
    # one part of 6 with group size 2: three groups of 2
    out2 = minibatch_stddev(x, group_size=2, parts=1)
    g = a[2:4]
    np.testing.assert_allclose(out2[2, 3, 0, 0, 0].item(), np.sqrt(((g - g.mean(0)) ** 2).mean(0) + 1e-8).mean(), rtol=1e-5)


def test_pixel_norm_gives_unit_mean_square_per_voxel():
    x = torch.randn(2, 16, 3, 4, 5, generator=torch.Generator().manual_seed(5)) * torch.logspace(-2, 2, 16).view(1, 16, 1, 1, 1)
    y = pixel_norm(x)
    torch.testing.assert_close(y.square().mean(dim=1), torch.ones(2, 3, 4, 5), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(y * torch.sqrt(x.square().mean(dim=1, keepdim=True)), x, rtol=1e-4, atol=1e-6)
    # every feature map of G ends with pixel norm
    cfg, G, _ = _nets()
    with torch.no_grad():
        for k in range(cfg.levels + 1):
            h = G.features(torch.randn(2, cfg.latent_dim) * 5, k)
            torch.testing.assert_close(h.square().mean(dim=1), torch.ones(2, *h.shape[2:]), rtol=1e-4, atol=1e-4)


def test_equalised_learning_rate_scales_n01_weights_by_he_constant():
    torch.manual_seed(6)
    conv = EqConv3d(8, 4, 3)
    assert conv.scale == pytest.approx(np.sqrt(2) / np.sqrt(8 * 27))
    assert abs(conv.weight.std().item() - 1) < 0.1 and torch.equal(conv.bias, torch.zeros(4))
    x = torch.randn(2, 8, 5, 5, 5)
    torch.testing.assert_close(conv(x), F.conv3d(x, conv.weight * conv.scale, conv.bias, padding=1))
    torch.testing.assert_close(conv.up(x), conv(upsample2(x)), rtol=1e-4, atol=1e-5)  # the low-grid form


def test_model_generates_full_size_volumes_at_the_growth_it_reached():
    model = build("tiny", 16, seed=0)
    assert isinstance(model, PGGANModel) and (model.level, model.alpha, model.resolution) == (2, 1.0, 16)
    full = model.generate(2, seed=3)
    assert full.shape == (2, 16, 16, 16) and full.dtype == np.float32 and np.abs(full).max() <= 1
    assert np.array_equal(model.generate(1, seed=3, indices=[1])[0], full[1])
    # a run that stopped fading in 16³ at α = 0: the 8³ volumes, upsampled by nearest neighbour
    model.generator.set_state(2, 0.0)
    mid = model.generate(2, seed=3, batch_size=2)  # one batch, as below
    z = torch.from_numpy(model.sample_latents(2, seed=3))
    with torch.no_grad():
        low = model.generator(z, 1, 1.0)[:, 0].clamp(-1, 1).numpy()
    np.testing.assert_array_equal(mid, low.repeat(2, 1).repeat(2, 2).repeat(2, 3))
    assert not np.array_equal(mid, full)
    with pytest.raises(UsageError):
        model.generate(1, labels=1)
    with pytest.raises(UsageError):
        model_config("tiny", 32, num_classes=2)


def _cfg(data, iters, **kw):
    fam = registry.get("pggan")
    return RunConfig(data=str(data), model=fam.model_config("tiny", 16).to_dict(), family="pggan",
                     hparams=fam.hparams_from_dict({"fade_iters": 2, "stable_iters": 1}).to_dict(), preset="tiny",
                     iters=iters, batch=2, device="cpu", log_every=1, sample_every=0, ckpt_every=1000, ema_decay=0.9,
                     split_fractions=(1.0, 0.0, 0.0), **kw)


def test_resume_mid_fade_is_bit_identical_across_phases(tmp_path):
    """16³ (levels 0-2), fade 2, stable 1: iterations 0 stable 4³ | 1-2 fade 8³ (α 0, ½) | 3 stable 8³ |
    4-5 fade 16³ (α 0, ½). The split run stops after iteration 1 and resumes at iteration 2, mid-fade."""
    data = make_dataset(tmp_path / "data", n=4, size=16)
    full = registry.train(_cfg(data, 6), tmp_path / "full", progress=False)
    registry.train(_cfg(data, 2), tmp_path / "split", progress=False)
    # after iterations 0 (4³) and 1 (8³ fading in at α = 0) the blocks of 8³ and 16³ have had zero gradients only
    fam = registry.get("pggan")
    torch.manual_seed(0)
    fresh = fam.build(fam.model_from_dict(_cfg(data, 1).model), fam.hparams_from_dict({}), torch.device("cpu"))
    early = ckpt_io.load_weights(tmp_path / "split")
    for net, prefixes in (("G", ("blocks.1.", "blocks.2.", "to_rgb.1.", "to_rgb.2.")),
                          ("D", ("blocks.1.", "blocks.2.", "from_rgb.1.", "from_rgb.2."))):
        for key, value in fresh[net].state_dict().items():
            if key.startswith(prefixes):
                assert torch.equal(early[net][key], value), f"{net}.{key} moved while idle or at α = 0"
    assert not torch.equal(early["G"]["dense.weight"], fresh["G"].state_dict()["dense.weight"])
    assert early["G"]["progress"].tolist() == [1.0, 0.0]

    resumed = registry.train(_cfg(data, 6), tmp_path / "split", resume=True, progress=False)
    a, b = full.models.weights(), resumed.models.weights()
    assert set(a) == {"G", "D", "G_ema"} == set(b)
    for module in a:
        for key in a[module]:
            assert torch.equal(a[module][key], b[module][key]), f"{module}.{key} differs after resume"
    assert a["G"]["progress"].tolist() == [2.0, 0.5] == a["G_ema"]["progress"].tolist()
    sa, sb = ckpt_io.load_state(tmp_path / "full"), ckpt_io.load_state(tmp_path / "split")
    for name in ("G", "D"):
        for pid, st in sa["optimizers"][name]["state"].items():
            for k, v in st.items():
                assert torch.equal(v, sb["optimizers"][name]["state"][pid][k]), f"optimiser {name} differs"
        # Adam was reset when the 16³ fade-in began (iteration 4): two steps since
        assert {float(st["step"]) for st in sa["optimizers"][name]["state"].values()} == {2.0}
    model = registry.load(tmp_path / "split")
    assert (model.level, model.alpha, model.resolution) == (2, 0.5, 16)
    assert model.generate(1, seed=0).shape == (1, 16, 16, 16)


WORKER = """
import os, sys
from safetensors.torch import save_file
from medgen.families import registry
from medgen.training.runconfig import RunConfig

data, run, out = sys.argv[1:4]
fam = registry.get("pggan")
cfg = RunConfig(data=data, model=fam.model_config("tiny", 16).to_dict(), family="pggan", preset="tiny",
                hparams={"fade_iters": 2, "stable_iters": 1}, iters=5, batch=4, device="cpu", log_every=1,
                sample_every=0, ckpt_every=1000, split_fractions=(1.0, 0.0, 0.0))
result = registry.train(cfg, run, progress=False)
flat = {f"{m}.{k}": v.detach().contiguous() for m, net in result.models.nets.items() for k, v in net.named_parameters()}
save_file(flat, os.path.join(out, f"rank{os.environ['RANK']}.safetensors"))
"""


@pytest.mark.slow
def test_two_gloo_processes_stay_identical_through_fade_ins(tmp_path):
    """DDP across phases: idle blocks, α = 0 and α = ½ fade-ins, optimiser resets (16³, iterations 0-4)."""
    data = make_dataset(tmp_path / "data", n=8, size=16)
    (tmp_path / "out").mkdir()
    (tmp_path / "worker.py").write_text(WORKER)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(tmp_path / "worker.py"), str(data), str(tmp_path / "run"), str(tmp_path / "out")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (load_file(str(tmp_path / "out" / f"rank{r}.safetensors")) for r in (0, 1))
    assert set(r0) == set(r1) and r0
    for k in r0:
        assert torch.equal(r0[k], r1[k]), f"ranks differ in {k}"
    assert ckpt_io.load_weights(tmp_path / "run")["G"]["progress"].tolist() == [2.0, 0.0]
