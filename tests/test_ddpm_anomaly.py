"""Diffusion reconstruction for anomaly detection (AnoDDPM): partial noising to t = noise_level · T, then denoising.

Against an exact denoiser (it knows x₀, so it returns the true ε or v of whatever x_t it is given)
deterministic DDIM must give the input back at every noise level and step count, and every step
must land on the timestep evaluated next (the ε it sees never changes). The forward noising is
checked against its closed form, and a tiny trained model against its own reconstruction from
pure noise.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from medgen.core.errors import UsageError
from medgen.families.ddpm.config import DDPMConfig, model_config
from medgen.families.ddpm.model import build
from medgen.families.ddpm.sample import (
    check_reconstruction,
    ddim_update,
    forward_process,
    make_scheduler,
    noise_timestep,
    reconstruction_timesteps,
    volume_generator,
)
from toy_volumes import make_dataset

S = 16


class ExactDenoiser(nn.Module):
    """The UNet's interface with the exact prediction for known clean samples ``x0`` [b, C, …].

    ε = (x_t − sqrt(ᾱ_t)·x₀) / sqrt(1 − ᾱ_t), v = sqrt(ᾱ_t)·ε − sqrt(1 − ᾱ_t)·x₀ (in float64). Records
    every call's timesteps, input, ε and class labels. A guided call (the batch twice) gets x₀ twice.
    """

    def __init__(self, cfg: DDPMConfig, x0: torch.Tensor) -> None:
        super().__init__()
        self.alphas = make_scheduler(cfg, "ddpm").alphas_cumprod.double()
        self.x0, self.prediction = x0.double(), cfg.prediction_type
        self.calls: list[dict] = []

    def forward(self, x, t, class_labels=None):
        x0 = self.x0.repeat(x.shape[0] // self.x0.shape[0], *[1] * (self.x0.dim() - 1))
        ab = self.alphas[t.long().cpu()].view(-1, *[1] * (x.dim() - 1))
        eps = (x.double() - ab.sqrt() * x0) / (1 - ab).sqrt()
        self.calls.append(dict(t=[int(v) for v in t], x=x.clone(), eps=eps,
                               labels=None if class_labels is None else [int(c) for c in class_labels]))
        out = eps if self.prediction == "epsilon" else ab.sqrt() * eps - (1 - ab).sqrt() * x0
        return out.float()


def toy(n: int = 3, seed: int = 0) -> np.ndarray:
    """Volumes in [-1, 1] with structure (a ramp plus noise), touching the bounds."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(-1, 1, S, dtype=np.float32)[:, None, None] * np.ones((S, S, S), np.float32)
    return np.clip(ramp[None] + rng.normal(0, 0.3, (n, S, S, S)), -1, 1).astype(np.float32)


def oracle_model(x: np.ndarray, **cfg_kw):
    model = build("tiny", S, seed=0, **cfg_kw)
    model.unet = ExactDenoiser(model.config, torch.from_numpy(x)[:, None])
    return model


# ---------------------------------------------------------------- the forward process and the timesteps

def test_forward_noising_has_the_closed_form_mean_and_variance():
    cfg = model_config("tiny", S)  # linear β from 1e-4 to 0.02 over 1000 steps
    T = cfg.num_train_timesteps
    abar = np.cumprod(1 - np.linspace(cfg.beta_start, cfg.beta_end, T))  # ᾱ, independently of MONAI
    scheduler = make_scheduler(cfg, "ddpm")
    np.testing.assert_allclose(scheduler.alphas_cumprod.double().numpy(), abar, rtol=1e-5)
    values = torch.linspace(-1, 1, 32)
    x0 = values.view(-1, 1, 1, 1, 1).expand(32, 1, S, S, S).contiguous()  # 32 constant volumes
    for level in (0.05, 0.25, 0.5, 1.0):
        t = noise_timestep(cfg, level)
        assert t == round(level * T) - 1
        gens = [volume_generator(7, i, torch.device("cpu")) for i in range(32)]
        x_t = forward_process(scheduler, x0, t, gens).double()
        a = float(abar[t])
        n = S ** 3
        means = x_t.reshape(32, -1).mean(dim=1)
        # per volume: mean sqrt(ᾱ_t)·x₀ within 4 standard errors
        assert torch.all((means - math.sqrt(a) * values.double()).abs() < 4 * math.sqrt((1 - a) / n)), level
        # pooled: variance 1 − ᾱ_t within 5 standard errors (relative s.e. of a variance: sqrt(2 / N))
        resid = x_t - math.sqrt(a) * x0.double()
        assert abs(float(resid.var()) / (1 - a) - 1) < 5 * math.sqrt(2 / resid.numel()), level
    # the same (seed, volume) draws the same noise, another seed other noise
    one = forward_process(scheduler, x0[:2], 100, [volume_generator(7, i, torch.device("cpu")) for i in range(2)])
    again = forward_process(scheduler, x0[:2], 100, [volume_generator(7, i, torch.device("cpu")) for i in range(2)])
    other = forward_process(scheduler, x0[:2], 100, [volume_generator(8, i, torch.device("cpu")) for i in range(2)])
    assert torch.equal(one, again) and not torch.allclose(one, other)


def test_noise_levels_map_to_timesteps_and_steps_cover_the_chain():
    cfg = model_config("tiny", S)
    assert noise_timestep(cfg, 1.0) == 999 and noise_timestep(cfg, 0.25) == 249
    assert noise_timestep(cfg, 1e-6) == 0  # at least one step of noise
    # DDIM default: the default 50 sampling steps' share of the chain; DDPM: all t steps
    assert check_reconstruction(cfg, 0.25, "ddim", None, 1.0, 0.0) == (249, 13)
    assert check_reconstruction(cfg, 1.0, "ddim", None, 1.0, 0.0) == (999, 50)
    assert check_reconstruction(cfg, 0.001, "ddim", None, 1.0, 0.0) == (0, 1)
    assert check_reconstruction(cfg, 0.1, "ddpm", None, 1.0, 0.0) == (99, 100)
    assert reconstruction_timesteps(249, 5) == [249, 199, 149, 99, 49]
    assert reconstruction_timesteps(9, 10) == list(range(9, -1, -1))
    assert reconstruction_timesteps(9, 1) == [9]
    ts = reconstruction_timesteps(249, 13)
    assert len(set(ts)) == 13 and ts == sorted(ts, reverse=True) and ts[0] == 249 and ts[-1] == 19


@pytest.mark.parametrize("bad", [0, 0.0, -0.1, 1.0001, 2, float("nan"), "high"])
def test_noise_level_out_of_range_is_refused_with_one_clear_error(bad):
    model = build("tiny", S, seed=0)
    with pytest.raises(UsageError, match=r"noise_level .*: need 0 < noise_level <= 1 \(the fraction t/T"):
        model.reconstruct(toy(1), noise_level=bad)


def test_bad_steps_samplers_and_labels_are_refused():
    model = build("tiny", S, seed=0)
    x = toy(1)
    with pytest.raises(UsageError, match="ddpm sampler runs all 250 steps"):
        model.reconstruct(x, noise_level=0.25, sampler="ddpm", steps=10)
    with pytest.raises(UsageError, match="need 1 to 250"):
        model.reconstruct(x, noise_level=0.25, steps=251)
    with pytest.raises(UsageError, match="need 1 to 250"):
        model.reconstruct(x, noise_level=0.25, steps=0)
    with pytest.raises(UsageError, match="--sampler 'euler'"):
        model.reconstruct(x, sampler="euler")
    with pytest.raises(UsageError, match="unconditional"):
        model.reconstruct(x, labels=1)
    with pytest.raises(UsageError, match="the model works on 16x16x16"):
        model.reconstruct(np.zeros((1, 8, 8, 8), np.float32))


def test_the_ddim_update_is_monai_s_step_when_the_stride_is_monai_s():
    cfg = model_config("tiny", S)
    for prediction in ("epsilon", "v_prediction"):
        cfg.prediction_type = prediction
        scheduler = make_scheduler(cfg, "ddim")
        scheduler.set_timesteps(50)  # MONAI's step goes from t to t − 1000 // 50
        x, pred = torch.randn(2, 1, S, S, S), torch.randn(2, 1, S, S, S)
        for t, eta in ((500, 0.0), (500, 1.0), (10, 0.5)):
            ref, _ = scheduler.step(pred, t, x, eta=eta, generator=torch.Generator().manual_seed(3))
            ours = ddim_update(scheduler, pred, t, t - 20, x, eta, torch.Generator().manual_seed(3))
            torch.testing.assert_close(ours, ref, rtol=0, atol=1e-6)


# ---------------------------------------------------------------- the exact denoiser

@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_ddim_with_the_exact_noise_gives_the_input_back_at_every_noise_level(prediction):
    x = toy(3)
    cfg = model_config("tiny", S, prediction_type=prediction)
    for level, steps in ((0.001, None), (0.05, 50), (0.1, None), (0.25, 7), (0.6, 1), (1.0, None), (1.0, 200)):
        model = oracle_model(x, prediction_type=prediction)
        rec = model.reconstruct(x, noise_level=level, steps=steps, seed=4, batch_size=3)
        assert rec.shape == x.shape and rec.dtype == np.float32
        np.testing.assert_allclose(rec, x, rtol=0, atol=1e-4, err_msg=f"noise level {level}, {steps} steps")
        start, n = check_reconstruction(cfg, level, "ddim", steps, 1.0, 0.0)
        calls = model.unet.calls
        assert [c["t"][0] for c in calls] == reconstruction_timesteps(start, n) and len(calls) == n
        assert calls[0]["t"][0] == max(1, round(level * 1000)) - 1
        # the first input is the forward process of the seed's noise for each volume
        gens = [volume_generator(4, i, torch.device("cpu")) for i in range(3)]
        x_t = forward_process(make_scheduler(cfg, "ddpm"), torch.from_numpy(x)[:, None], start, gens)
        torch.testing.assert_close(calls[0]["x"], x_t)
        # each DDIM step lands exactly on the next timestep evaluated: the ε seen never changes
        for c in calls[1:]:
            assert float((c["eps"] - calls[0]["eps"]).abs().max()) < 1e-3, (level, steps, c["t"][0])


def test_ddpm_and_stochastic_ddim_with_the_exact_noise_also_give_the_input_back():
    x = toy(2, seed=1)
    # DDPM's posterior q(x_{t-1} | x_t, x₀) with the true x₀ ends at x₀ (its last step has no variance); MONAI's
    # last-step weight of x₀, β₀ / (1 − ᾱ₀), is 1 − 1.7e-4 in float32 (1 − 0.9999 rounded), hence the tolerance
    model = oracle_model(x)
    np.testing.assert_allclose(model.reconstruct(x, noise_level=0.1, sampler="ddpm", batch_size=2), x, atol=2e-4)
    assert len(model.unet.calls) == 100
    model = oracle_model(x)
    np.testing.assert_allclose(model.reconstruct(x, noise_level=0.5, eta=1.0, steps=20, batch_size=2), x, atol=1e-4)


def test_conditional_models_use_the_labels_given_or_the_unconditional_denoiser():
    x = toy(2)
    model = oracle_model(x, num_classes=3)
    np.testing.assert_allclose(model.reconstruct(x, batch_size=2, steps=3), x, atol=1e-4)
    assert all(c["labels"] == [3, 3] for c in model.unet.calls)  # "no class"
    model.unet.calls.clear()
    np.testing.assert_allclose(model.reconstruct(x, labels=[0, 2], batch_size=2, steps=3), x, atol=1e-4)
    assert all(c["labels"] == [0, 2] for c in model.unet.calls)
    model.unet.calls.clear()
    # guidance blends ε(x, c) and ε(x, ∅): with the exact ε both are the truth
    np.testing.assert_allclose(model.reconstruct(x, labels=1, guidance=2.0, batch_size=2, steps=3), x, atol=1e-4)
    assert all(c["labels"] == [1, 1, 3, 3] for c in model.unet.calls)
    with pytest.raises(UsageError, match="--guidance needs the volumes' labels"):
        model.reconstruct(x, guidance=2.0)


def test_latent_diffusion_reconstructs_in_latent_space():
    from medgen.families.ldm.model import build as build_ldm

    n, s = 2, 32
    rng = np.random.default_rng(0)
    x = np.clip(rng.normal(0, 0.5, (n, s, s, s)), -1, 1).astype(np.float32)
    model = build_ldm("tiny", s, seed=0)
    model.codec.scale.fill_(0.7)
    with torch.no_grad():
        z0 = model.codec.encode(torch.from_numpy(x)[:, None])  # scaled latents
    model.unet = ExactDenoiser(model.config.diffusion(), z0)
    expected = model.autoencoder.reconstruct(x)  # decode(μ): the exact latent denoiser gives z₀ back
    for level in (0.1, 1.0):
        rec = model.reconstruct(x, noise_level=level, batch_size=n, seed=2)
        np.testing.assert_allclose(rec, expected, atol=1e-4)
        assert model.unet.calls[0]["x"].shape == z0.shape  # the diffusion ran on the latents


# ---------------------------------------------------------------- a trained model

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny DDPM trained for 40 iterations on 16³ toy cylinders, loaded from its run, and held-out volumes."""
    import medgen
    from medgen.families import registry
    from medgen.training.runconfig import RunConfig

    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("ddpm-anomaly")
    data = make_dataset(tmp / "data", n=8, size=S, seed=0)
    held = make_dataset(tmp / "held", n=4, size=S, seed=9)
    cfg = RunConfig(data=str(data), model=model_config("tiny", S).to_dict(), family="ddpm", hparams={"lr": 2e-3},
                    preset="tiny", iters=40, batch=4, device="cpu", log_every=50, sample_every=0, ckpt_every=1000,
                    split_fractions=(1.0, 0.0, 0.0))
    registry.train(cfg, tmp / "run", progress=False)
    x = np.stack([np.load(p).astype(np.float32) for p in sorted((held / "volumes").glob("*.npy"))])
    return medgen.load(tmp / "run"), x


def test_same_seed_same_reconstruction_another_seed_another(trained):
    model, x = trained
    opts = dict(noise_level=0.3, steps=4)
    a = model.reconstruct(x[:2], seed=1, **opts)
    np.testing.assert_array_equal(model.reconstruct(x[:2], seed=1, **opts), a)
    b = model.reconstruct(x[:2], seed=2, **opts)
    assert np.abs(a - b).mean() > 1e-3
    assert a.shape == (2, S, S, S) and a.dtype == np.float32 and np.abs(a).max() <= 1.0
    # volume i depends on (seed, i) only: not on the batch size nor on the input's layout
    np.testing.assert_allclose(model.reconstruct(x[:2], seed=1, batch_size=2, **opts), a, atol=1e-5)
    np.testing.assert_allclose(model.reconstruct(x[:2, None], seed=1, **opts), a, atol=1e-6)
    np.testing.assert_allclose(model.reconstruct(torch.from_numpy(x[0]), seed=1, **opts), a[:1], atol=1e-6)
    # the stochastic samplers are reproducible too
    for opts in (dict(sampler="ddpm", noise_level=0.01), dict(eta=1.0, steps=4)):
        one = model.reconstruct(x[:2], seed=3, **opts)
        np.testing.assert_allclose(model.reconstruct(x[:2], seed=3, batch_size=2, **opts), one, atol=1e-5)
        assert np.abs(model.reconstruct(x[:2], seed=4, batch_size=2, **opts) - one).mean() > 1e-3


def test_trained_model_reconstructs_held_out_volumes_closer_at_a_small_noise_level(trained):
    model, x = trained
    small = np.abs(model.reconstruct(x, noise_level=0.1, batch_size=4) - x).mean()
    full = np.abs(model.reconstruct(x, noise_level=1.0, batch_size=4) - x).mean()
    assert small < 0.5 * full, (small, full)
    # and it denoises: closer to x than the noised volume it started from
    cfg = model.config
    gens = [volume_generator(0, i, torch.device("cpu")) for i in range(len(x))]
    x_t = forward_process(make_scheduler(cfg, "ddpm"), torch.from_numpy(x)[:, None], noise_timestep(cfg, 0.1), gens)
    assert small < 0.7 * float((x_t[:, 0] - torch.from_numpy(x)).abs().mean()), small
