"""The DDPM family: the reverse process against an exact (oracle) denoiser, guidance, training, the CLI.

The loop's guarantees (exact resume, DDP, NaN stop, SIGTERM, report) are checked for this family
by tests/test_family_template.py. Here: for data drawn from a known two-point mixture the
optimal denoiser has a closed form, so the samplers can be checked against the distribution
they must reproduce, independently of any training.
"""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from medgen.core.errors import UsageError
from medgen.families.ddpm.config import DDPMConfig, model_config
from medgen.families.ddpm.model import build
from medgen.families.ddpm.sample import guided_prediction, make_scheduler, sample_volumes
from medgen.families.ddpm.train import build_unet, noisy_batch
from toy_volumes import make_dataset

S = 8  # oracle tests: 8³ volumes
FAST = dict(num_train_timesteps=50, beta_start=2e-3, beta_end=0.4)  # the default schedule scaled to 50 steps


class MixtureOracle(nn.Module):
    """The exact ε- or v-prediction for data x₀ ∈ {+a, −a} (constant volumes) with P(+a) = p_class.

    E[x₀ | x_t] = Σ_k w_k x_k with w_k ∝ π_k N(x_t; sqrt(ᾱ_t) x_k, (1 − ᾱ_t) I); then
    ε̂ = (x_t − sqrt(ᾱ_t) x̂₀) / sqrt(1 − ᾱ_t) and v̂ = sqrt(ᾱ_t) ε̂ − sqrt(1 − ᾱ_t) x̂₀.
    ``class_probs[c]``: P(+a) for class c; the last entry is the "no class" mixture.
    """

    def __init__(self, cfg: DDPMConfig, class_probs: list[float], a: float = 0.5) -> None:
        super().__init__()
        self.alphas = make_scheduler(cfg, "ddpm").alphas_cumprod.double()
        self.class_probs, self.a, self.prediction = class_probs, a, cfg.prediction_type

    def forward(self, x, t, class_labels=None):
        ab = self.alphas[t.long()].view(-1, 1, 1, 1, 1).to(torch.float64)
        x = x.double()
        labels = class_labels if class_labels is not None else torch.full((x.shape[0],), len(self.class_probs) - 1)
        p = torch.tensor([self.class_probs[int(c)] for c in labels], dtype=torch.float64).view(-1, 1, 1, 1, 1)
        # log-likelihood of each component, summed over voxels
        ll = [-((x - ab.sqrt() * s * self.a) ** 2).sum(dim=(1, 2, 3, 4), keepdim=True) / (2 * (1 - ab)) for s in (1, -1)]
        logits = torch.cat([ll[0] + torch.log(p.clamp_min(1e-12)), ll[1] + torch.log((1 - p).clamp_min(1e-12))], dim=1)
        w = torch.softmax(logits, dim=1)
        x0 = (w[:, :1] - w[:, 1:]) * self.a
        eps = (x - ab.sqrt() * x0) / (1 - ab).sqrt()
        out = eps if self.prediction == "epsilon" else ab.sqrt() * eps - (1 - ab).sqrt() * x0
        return out.float()


def oracle_cfg(**kw) -> DDPMConfig:
    return model_config("tiny", S, **FAST, **kw)


def share_positive(vols: np.ndarray) -> float:
    means = vols.reshape(len(vols), -1).mean(axis=1)
    assert np.all(np.abs(np.abs(means) - 0.5) < 0.05), "every sample must be one of the two data points"
    return float(np.mean(means > 0))


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_samplers_reproduce_the_data_distribution_of_an_exact_denoiser(prediction):
    cfg = oracle_cfg(prediction_type=prediction)
    oracle = MixtureOracle(cfg, [0.7])
    n, idx = 120, list(range(120))
    ddpm = sample_volumes(oracle, cfg, idx, seed=1, sampler="ddpm")
    ddim_full = sample_volumes(oracle, cfg, idx, seed=1, sampler="ddim", steps=50, eta=1.0)
    ddim_fast = sample_volumes(oracle, cfg, idx, seed=1, sampler="ddim", steps=10)
    tol = 3 * math.sqrt(0.7 * 0.3 / n)  # three binomial standard deviations
    for vols in (ddpm, ddim_full, ddim_fast):
        assert abs(share_positive(vols) - 0.7) < tol
    # DDIM with all steps and eta 1 has DDPM's statistics: the same mixture share, the same voxel spread
    assert abs(share_positive(ddpm) - share_positive(ddim_full)) < 2 * tol
    assert abs(ddpm.std() - ddim_full.std()) < 0.05


def test_guidance_zero_is_the_unconditional_model_and_one_the_conditional():
    cfg = oracle_cfg(num_classes=2)
    # class 0 → always +a, class 1 → always −a, no class → the 0.7 / 0.3 mixture
    oracle = MixtureOracle(cfg, [1.0, 0.0, 0.7])
    idx = list(range(80))
    uncond = sample_volumes(oracle, cfg, idx, seed=2, labels=[0] * 80, guidance=0.0, steps=20)
    assert abs(share_positive(uncond) - 0.7) < 3 * math.sqrt(0.21 / 80)
    cond = sample_volumes(oracle, cfg, idx[:10], seed=2, labels=[1] * 10, guidance=1.0, steps=20)
    assert share_positive(cond) == 0.0
    cond0 = sample_volumes(oracle, cfg, idx[:10], seed=2, labels=[0] * 10, guidance=1.0, steps=20)
    assert share_positive(cond0) == 1.0


def test_guided_prediction_is_the_classifier_free_blend():
    torch.manual_seed(0)
    cfg = model_config("tiny", 16, num_classes=3)
    unet = build_unet(cfg).eval()
    x, t, y = torch.randn(2, 1, 16, 16, 16), torch.tensor([10, 500]), torch.tensor([0, 2])
    with torch.no_grad():
        cond = unet(x, t, class_labels=y)
        uncond = unet(x, t, class_labels=torch.full_like(y, 3))
        assert torch.equal(guided_prediction(unet, x, t, y, 3, 0.0), uncond)
        assert torch.equal(guided_prediction(unet, x, t, y, 3, 1.0), cond)
        torch.testing.assert_close(guided_prediction(unet, x, t, y, 3, 2.5), uncond + 2.5 * (cond - uncond),
                                   rtol=1e-4, atol=1e-5)


def test_volume_i_depends_only_on_seed_and_i_and_bad_requests_are_refused():
    m = build("tiny", 16, seed=0, **FAST)
    three = m.generate(3, seed=5, steps=4)
    np.testing.assert_array_equal(m.generate(1, seed=5, indices=[2], steps=4)[0], three[2])
    assert three.shape == (3, 16, 16, 16) and three.dtype == np.float32 and np.abs(three).max() <= 1.0
    assert not np.array_equal(three[0], three[1])
    with pytest.raises(UsageError, match="all 50 steps"):
        m.generate(1, sampler="ddpm", steps=5)
    with pytest.raises(UsageError, match="class-conditional"):
        m.generate(1, guidance=2.0)
    with pytest.raises(UsageError, match="unconditional"):
        m.generate(1, labels=1)
    with pytest.raises(UsageError, match="divisible by 4"):
        model_config("tiny", 18)
    with pytest.raises(UsageError, match="do not reach pure noise"):
        model_config("tiny", 16, num_train_timesteps=50)


def test_training_lowers_the_denoising_loss_on_held_out_volumes(tmp_path):
    from medgen.families import registry
    from medgen.training.runconfig import RunConfig

    torch.set_num_threads(1)
    data = make_dataset(tmp_path / "data", n=8, size=16, seed=0)
    held = make_dataset(tmp_path / "held", n=4, size=16, seed=9)
    cfg = RunConfig(data=str(data), model=model_config("tiny", 16).to_dict(), family="ddpm", hparams={"lr": 2e-3},
                    preset="tiny", iters=150, batch=4, device="cpu", log_every=50, sample_every=0, ckpt_every=1000,
                    split_fractions=(1.0, 0.0, 0.0))
    result = registry.train(cfg, tmp_path / "run", progress=False)
    trained = result.models.nets["unet"].eval()
    torch.manual_seed(0)
    untrained = build_unet(model_config("tiny", 16)).eval()
    x0 = torch.from_numpy(np.stack([np.load(p).astype(np.float32) for p in sorted((held / "volumes").glob("*.npy"))]))[:, None]

    def held_out_mse(unet) -> float:
        gen, losses = torch.Generator().manual_seed(123), []
        with torch.no_grad():
            for _ in range(8):  # the same (t, ε) draws for both networks
                x_t, t, target = noisy_batch(model_config("tiny", 16), x0, gen)
                losses.append(float(torch.mean((unet(x_t, t) - target) ** 2)))
        return float(np.mean(losses))

    before, after = held_out_mse(untrained), held_out_mse(trained)
    assert after < 0.5 * before, (before, after)
    assert after < 0.3  # an ε-predictor that ignored its input would score about 1


@pytest.mark.slow
def test_cli_trains_and_samples_a_conditional_ddpm_with_guidance(tmp_path):
    data = make_dataset(tmp_path / "data", n=4, size=16)
    run, out = tmp_path / "run", tmp_path / "samples"
    base = [sys.executable, "-m", "medgen"]
    train = subprocess.run(base + ["train", str(data), "--family", "ddpm", "--preset", "tiny", "--label-column", "label",
                                   "--iters", "3", "--batch", "2", "--device", "cpu", "--sample-every", "3",
                                   "--num-samples", "2", "--split-fractions", "1,0,0", "--out", str(run), "--no-progress"],
                           capture_output=True, text=True, timeout=300)
    assert train.returncode == 0, train.stderr[-2000:]
    assert (run / "samples" / "iter-000003.png").is_file()  # the training preview mosaic
    gen = subprocess.run(base + ["generate", str(run), "--n", "2", "--label", "1", "--guidance", "2", "--steps", "3",
                                 "--out", str(out), "--format", "npy", "--no-progress"],
                         capture_output=True, text=True, timeout=300)
    assert gen.returncode == 0, gen.stderr[-2000:]
    vols = [np.load(out / f"sample-000{i}.npy") for i in range(2)]
    assert all(v.shape == (16, 16, 16) and np.abs(v).max() <= 1 for v in vols)
    import medgen

    direct = medgen.load(run).generate(2, labels=1, guidance=2.0, steps=3)
    np.testing.assert_allclose(np.stack(vols), direct, atol=1e-6)
    again = subprocess.run(base + ["generate", str(run), "--n", "2", "--label", "1", "--guidance", "3", "--steps", "3",
                                   "--out", str(out), "--format", "npy", "--no-progress"],
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "other settings (sampling)" in again.stderr


def test_bench_reports_time_per_volume_and_step_and_refuses_hagan_options():
    from medgen.families.ddpm.bench import run_isolated

    r = run_isolated("generate", preset="tiny", size=16, batch=1, warmup=0, repeats=1, steps=3, threads=1)
    assert r["family"] == "ddpm" and r["steps"] == 3 and r["sampler"] == "ddim"
    assert r["seconds_per_volume"] > 0 and r["seconds_per_step"] == pytest.approx(r["seconds_per_volume"] / 3)
    assert r["params_total"] == sum(p.numel() for p in build_unet(model_config("tiny", 16)).parameters())
    assert r["peak_memory_mb"] > 100 and r["machine"]["torch"] == torch.__version__
    from medgen.core.errors import RunFailed

    with pytest.raises(RunFailed, match="--chunk applies to HA-GAN"):
        run_isolated("generate", preset="tiny", size=16, chunk=4, repeats=1, warmup=0)
