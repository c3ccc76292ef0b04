"""The image-conditioned diffusion family ``cond-ddpm``: its loss against the definition recomputed by hand, the
condition reaching the UNet at every sampling step, DDIM with every timestep and η = 1 equal to DDPM, training
that uses the condition, and the CLI (train, translate).

The loop's guarantees (exact resume, DDP, NaN stop, SIGTERM, report) are checked for this family by
tests/test_family_template.py.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from torch import nn

import medgen
from medgen.cli import main
from medgen.core.errors import UsageError
from medgen.families import registry
from medgen.families.cond_ddpm.config import model_config
from medgen.families.cond_ddpm.train import build_unet
from medgen.families.ddpm.sample import make_scheduler
from medgen.training.loop import _iteration_seed
from toy_volumes import make_dataset

S = 16
# The ddpm family's default linear schedule scaled to 40 timesteps (fast sampling with every timestep).
FAST = dict(num_train_timesteps=40, beta_start=2.5e-3, beta_end=0.5)


pytestmark = pytest.mark.usefixtures("one_thread")


def volumes(folder, kind: str, ids) -> torch.Tensor:
    """``[n, 1, S, S, S]`` float32: volumes ``kind`` (``volumes`` = the images, ``degradeds``) of subjects ``ids``."""
    return torch.from_numpy(np.stack([np.load(folder / kind / f"{i}.npy").astype(np.float32) for i in ids])[:, None])


def random_model(seed: int = 0, **overrides):
    """An untrained cond-ddpm model whose all-zero parameters (MONAI's zero-initialised convolutions, zero biases)
    are redrawn, so that its prediction depends on every input channel."""
    model = registry.get("cond-ddpm").build_model("tiny", S, seed=seed, **overrides)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.network.parameters():
            if not p.any():
                p.copy_(0.05 * torch.randn(p.shape, generator=gen))
    return model


def test_config_composes_the_ddpm_unet_and_the_task():
    cfg = model_config("tiny", 32, task="inpaint")
    assert cfg.inputs == ("degraded", "mask") and cfg.target == "image" and cfg.unet_in_channels == 3
    assert cfg.in_channels == 1 and cfg.prediction_type == "epsilon" and cfg.channels == [8, 16, 16]
    unet = build_unet(cfg)
    assert unet.conv_in.conv.in_channels == 3 and unet.out[-1].conv.out_channels == 1
    cfg = model_config("small", 32, task="denoise", inputs="t1,t2", target="flair", schedule="cosine")
    assert cfg.inputs == ("t1", "t2") and cfg.target == "flair" and cfg.schedule == "cosine"
    assert registry.get("cond-ddpm").data_keys(cfg) == ("flair", "t1", "t2")
    assert type(cfg).from_dict(cfg.to_dict()) == cfg
    with pytest.raises(UsageError, match="not classes"):
        model_config("tiny", 32, num_classes=2)
    with pytest.raises(UsageError, match="target 'image' is also an input"):
        model_config("tiny", 32, inputs="image")
    with pytest.raises(UsageError, match="--task colour"):
        model_config("tiny", 32, task="colour")


def test_first_two_iterations_log_the_epsilon_mse_recomputed_by_hand(tmp_path):
    """Iterations 1 and 2's logged loss == ‖UNet(concat[x_t, c], t) − ε‖² written out by hand: the same initial
    weights (the trainer seeds torch with the run seed before building), batches, ε and t (drawn in that order
    from the iteration's generator) and ᾱ of the linear schedule. MONAI zero-initialises the UNet's last
    convolution, so the first prediction is 0 whatever the input; after one AdamW step (replayed here) the
    second iteration's loss depends on x_t, t and the condition."""
    from medgen.data.dataset import VolumeDataset
    from medgen.training.distributed import InfiniteBatchSampler

    data = make_dataset(tmp_path / "data", n=4, size=S, degraded=True)
    code = main(["train", str(data), "--family", "cond-ddpm", "--preset", "tiny", "--out", str(tmp_path / "run"),
                 "--iters", "2", "--batch", "2", "--split-fractions", "1,0,0", "--hparam", "lr=1e-2",
                 "--log-every", "1", "--sample-every", "0", "--no-progress"])
    assert code == 0
    with open(tmp_path / "run" / "metrics.csv", newline="") as fh:
        logged = [float(r["loss_mse"]) for r in csv.DictReader(fh)]
    assert len(logged) == 2

    cfg = model_config("tiny", S)
    torch.manual_seed(0)
    unet = build_unet(cfg)
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-2, betas=(0.9, 0.999), weight_decay=0.0)
    betas = np.linspace(1e-4, 2e-2, 1000)  # linear_beta from beta_start to beta_end
    alpha_bar = torch.tensor(np.cumprod(1.0 - betas), dtype=torch.float32)
    ds = VolumeDataset(data, split="train", seed=0, fractions=(1.0, 0.0, 0.0), label_column=None)
    sampler = InfiniteBatchSampler(len(ds), 2, seed=0)
    recomputed, with_zero_condition = [], []
    for it in range(2):
        ids = [ds.ids[i] for i in sampler.global_batch_indices(it)]
        x0, c = volumes(data, "volumes", ids), volumes(data, "degradeds", ids)
        rng = torch.Generator().manual_seed(_iteration_seed(0, 0, it))
        eps = torch.randn(x0.shape, generator=rng)
        t = torch.randint(0, 1000, (2,), generator=rng)
        ab = alpha_bar[t].view(-1, 1, 1, 1, 1)
        x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
        loss = ((unet(torch.cat([x_t, c], 1), t) - eps) ** 2).mean()
        with torch.no_grad():
            with_zero_condition.append(float(((unet(torch.cat([x_t, 0 * c], 1), t) - eps) ** 2).mean()))
        recomputed.append(float(loss.detach()))
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert logged == pytest.approx(recomputed, rel=1e-4)
    # the second loss is sensitive to what the UNet is given (a condition of zeros changes it well beyond rel 1e-4)
    assert with_zero_condition[0] == pytest.approx(recomputed[0], rel=1e-6)
    assert abs(with_zero_condition[1] - recomputed[1]) > 1e-3 * recomputed[1]


def test_the_unet_sees_the_condition_at_every_step_and_a_seed_is_reproducible():
    model = random_model(**FAST)
    calls = []

    class Spy(nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x, t):
            calls.append((x[:, 1:].clone(), int(t[0])))
            return self.net(x, t)

    gen = torch.Generator().manual_seed(0)
    c1, c2 = (torch.rand((S, S, S), generator=gen).numpy() * 2 - 1 for _ in range(2))
    a = model.translate(c1, steps=8, seed=0)
    b = model.translate(c1, steps=8, seed=0)
    assert a.dtype == np.float32 and a.shape == (S, S, S) and np.abs(a).max() <= 1
    np.testing.assert_array_equal(a, b)  # same condition and seed: the same volume
    assert np.abs(model.translate(c2, steps=8, seed=0) - a).mean() > 0.02  # another condition: another volume
    assert np.abs(model.translate(c1, steps=8, seed=1) - a).mean() > 0.02  # another seed: another draw

    net = model.network
    model.network = Spy(net)
    spied = model.translate(c1, steps=8, seed=0)
    model.network = net
    np.testing.assert_array_equal(spied, a)
    ddim = make_scheduler(model.config, "ddim")
    ddim.set_timesteps(8)
    assert [t for _, t in calls] == [int(t) for t in ddim.timesteps] and calls[-1][1] == 0  # one call per step
    for cond, _ in calls:
        assert torch.equal(cond, torch.from_numpy(c1)[None, None])


class GaussianOracle(nn.Module):
    """The exact ε-prediction for x₀ ~ N(μ, σ²) voxelwise, μ the condition channel of the UNet's input (or the
    constant ``mean``): E[x₀ | x_t] = μ + σ²·sqrt(ᾱ)/(ᾱσ² + 1 − ᾱ) · (x_t − sqrt(ᾱ)·μ), and
    ε̂ = (x_t − sqrt(ᾱ)·E[x₀ | x_t]) / sqrt(1 − ᾱ)."""

    def __init__(self, cfg, sigma: float, mean: float | None = None) -> None:
        super().__init__()
        self.alpha_bar, self.sigma, self.mean = make_scheduler(cfg, "ddpm").alphas_cumprod.double(), sigma, mean

    def forward(self, inputs, t):
        x = inputs[:, :1].double()
        mu = inputs[:, 1:].double() if self.mean is None else torch.full_like(x, self.mean)
        ab = self.alpha_bar[t.long()].view(-1, 1, 1, 1, 1)
        s2 = self.sigma ** 2
        x0 = mu + s2 * ab.sqrt() / (ab * s2 + 1 - ab) * (x - ab.sqrt() * mu)
        return ((x - ab.sqrt() * x0) / (1 - ab).sqrt()).float()


def test_ddim_with_every_timestep_and_eta_one_is_the_ddpm_sampler_and_both_sample_the_target():
    """With the exact denoiser of x₀ ~ N(c, 0.25²): DDIM with η = 1 over all T timesteps has DDPM's posterior
    variance β̃_t and (x̂₀ unclipped) the same mean, and both schedulers draw the step noise from the volume's
    generator in the same order, so the two samplers (different MONAI code) give the same volume for a seed;
    and DDPM, and 8 deterministic DDIM steps, give voxels around the condition with its slope and the spread."""
    model = random_model(clip_sample=False, **FAST)
    model.network = GaussianOracle(model.config, 0.25)
    cond = np.random.default_rng(0).uniform(-0.5, 0.5, (S, S, S)).astype(np.float32)
    ddpm = model.translate(cond, sampler="ddpm", seed=3)
    ddim = model.translate(cond, sampler="ddim", steps=FAST["num_train_timesteps"], eta=1.0, seed=3)
    np.testing.assert_allclose(ddim, ddpm, atol=1e-4)
    assert np.abs(model.translate(cond, sampler="ddpm", seed=4) - ddpm).mean() > 0.1  # the seed decides the draw
    for out in (ddpm, model.translate(cond, sampler="ddim", steps=8, seed=3)):
        slope = np.cov(out.ravel(), cond.ravel())[0, 1] / cond.var()  # x₀ = c + independent noise: slope 1
        residual = out - cond
        assert slope == pytest.approx(1.0, abs=0.05) and abs(residual.mean()) < 0.02, slope
        # the spread: 0.25, less the known shrinkage of coarse discretisations (measured 0.198 for DDPM's 40
        # steps, 0.217 for 8 DDIM steps; both reach 0.23-0.24 with 200 timesteps)
        assert 0.18 < residual.std() < 0.26, residual.std()
    with pytest.raises(UsageError, match="the ddpm sampler runs all 40 steps"):
        model.translate(cond, sampler="ddpm", steps=10)


def test_windows_and_shapes_that_are_not_multiples_of_the_divisor():
    from medgen.families.cond_ddpm.sample import ConditionedUNet

    model = random_model(**FAST)
    gen = torch.Generator().manual_seed(1)
    c, x = torch.rand((1, 1, S, S, S), generator=gen), torch.randn((1, 1, S, S, S), generator=gen)
    t = torch.tensor([7])
    with torch.no_grad():  # one window covering the volume: the sliding-window call is the whole call
        whole = ConditionedUNet(model.network, c)(x, t)
        torch.testing.assert_close(ConditionedUNet(model.network, c, window=S)(x, t), whole, rtol=1e-5, atol=1e-5)
    odd = model.translate(np.zeros((13, 16, 10), np.float32), steps=2)  # padded to multiples of 4, cropped back
    assert odd.shape == (13, 16, 10)
    calls = []
    net = model.network
    model.network = lambda inputs, tt: calls.append(tuple(inputs.shape)) or net(inputs, tt)
    windows = model.translate(np.zeros((24, 24, 24), np.float32), steps=2, window=8)
    model.network = net
    assert windows.shape == (24, 24, 24) and np.isfinite(windows).all()
    assert set(calls) == {(1, 2, 8, 8, 8)} and len(calls) == 2 * 4 ** 3  # 4³ windows of 8 (overlap 0.25), 2 steps
    with pytest.raises(UsageError, match="multiple of 4"):
        model.translate(np.zeros((S, S, S), np.float32), steps=2, window=6)


def test_residual_target_diffuses_the_correction_and_adds_the_input_back():
    """A residual model diffuses x₀ = target − first input: with the exact denoiser of corrections ~ N(1.5, 0.1²)
    and an input of −0.8 everywhere, the output is the input plus the correction, about 0.7. A correction
    beyond 1 survives because the predicted x₀ is clipped to [-2, 2], not to a volume's [-1, 1] (which would
    give about 0.2); without the input added back the output would be the clipped correction, 1."""
    model = random_model(**FAST)
    model.network = GaussianOracle(model.config, 0.1, mean=1.5)
    model.residual_target = True
    out = model.translate(np.full((S, S, S), -0.8, np.float32), sampler="ddpm")
    assert out.mean() == pytest.approx(0.7, abs=0.02) and 0.05 < out.std() < 0.11, (out.mean(), out.std())


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained for 100 iterations on 16 toy denoising pairs (σ 0.2 noise), and 4 held-out pairs."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("cond")
    data = make_dataset(root / "data", n=16, size=S, degraded=True)
    held = make_dataset(root / "held", n=4, size=S, seed=5, degraded=True)
    code = main(["train", str(data), "--family", "cond-ddpm", "--preset", "tiny", "--task", "denoise", "--out",
                 str(root / "run"), "--iters", "100", "--batch", "2", "--split-fractions", "1,0,0", "--hparam",
                 "lr=3e-3", "--ema-decay", "0", "--log-every", "50", "--sample-every", "0", "--no-progress"])
    assert code == 0
    return root / "run", held


def test_training_lowers_the_held_out_denoising_loss_and_uses_the_condition(trained):
    """ε-MSE on held-out pairs at fixed (t, ε) draws: the untrained UNet predicts 0 (loss ≈ 1); after 100
    iterations it is far lower, and lower with each volume's own condition than with another subject's
    (measured: 1.00 untrained, 0.19 trained, 0.26 with the conditions shuffled)."""
    run, held = trained
    model = medgen.load(run)
    untrained = registry.build_untrained(run, seed=0)
    cfg = model.config
    assert cfg.task == "denoise" and cfg.inputs == ("degraded",) and model.window == 0
    ids = [f"v{i}" for i in range(4)]
    x0, c = volumes(held, "volumes", ids), volumes(held, "degradeds", ids)
    alpha_bar = make_scheduler(cfg, "ddpm").alphas_cumprod

    def eps_mse(net, cond):
        losses = []
        for t in (10, 100, 300, 500, 700, 900):
            eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(t))
            tt = torch.full((4,), t)
            ab = alpha_bar[tt].view(-1, 1, 1, 1, 1)
            with torch.no_grad():
                pred = net(torch.cat([ab.sqrt() * x0 + (1 - ab).sqrt() * eps, cond], 1), tt)
            losses.append(float(((pred - eps) ** 2).mean()))
        return float(np.mean(losses))

    before = eps_mse(untrained.network, c)
    after = eps_mse(model.network, c)
    shuffled = eps_mse(model.network, c.roll(1, 0))
    assert before == pytest.approx(1.0, abs=0.02)
    assert after < 0.5 * before, (before, after)
    assert after < 0.85 * shuffled, (after, shuffled)


def test_medgen_translate_writes_outputs_and_metrics(trained, tmp_path, capsys):
    run, held = trained
    out = tmp_path / "out"
    assert main(["translate", str(run), str(held), "--out", str(out), "--steps", "4", "--no-progress"]) == 0
    assert "psnr" in capsys.readouterr().out.lower()
    assert sorted(p.name for p in out.glob("*.nii.gz")) == [f"v{i}.nii.gz" for i in range(4)]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["target"] == "image" and metrics["inputs"] == ["degraded"]
    with open(out / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["id"] for r in rows] == [f"v{i}" for i in range(4)]
    # each output is the model's own translation (4 DDIM steps, seed 0)
    model = medgen.load(run)
    noisy = np.load(held / "degradeds" / "v2.npy").astype(np.float32)
    np.testing.assert_array_equal(np.load(out / "outputs" / "v2.npy"), model.translate({"degraded": noisy}, steps=4))
    # --steps is refused for a model that translates in one pass
    unet_run = tmp_path / "unet"
    assert main(["train", str(held), "--family", "unet", "--preset", "tiny", "--out", str(unet_run), "--iters", "1",
                 "--batch", "2", "--split-fractions", "1,0,0", "--sample-every", "0", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["translate", str(unet_run), str(held), "--out", str(tmp_path / "u"), "--steps", "4",
                 "--no-progress"]) == 2
    assert "--steps" in capsys.readouterr().err


def test_a_paired_data_set_without_the_task_volumes_is_refused(tmp_path, capsys):
    data = make_dataset(tmp_path / "data", n=2, size=S, degraded=True)
    code = main(["train", str(data), "--family", "cond-ddpm", "--preset", "tiny", "--task", "inpaint", "--out",
                 str(tmp_path / "run"), "--iters", "1", "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert "mask" in err and len(err.splitlines()) == 1, err
