"""The autoencoder family (plain AE and VAE on MONAI's networks): the KL term and the VAE's loss against closed
forms, training that lowers the loss and the held-out reconstruction error below the untrained model's,
deterministic reconstruction and encoding, sampling (VAE) and its refusal (AE), loading, `medgen encode`,
`medgen generate`, the VAE's exact resume, presets and the benchmark.

The loop's guarantees (exact resume, DDP, NaN stop, SIGTERM, report) are checked for this family, at its default
``variational: false``, by tests/test_family_template.py. Every volume materialised here is 16³ or 32³; larger
shapes and parameter counts are computed on the meta device (no data).
"""

from __future__ import annotations

import copy
import csv
import math
from contextlib import nullcontext

import numpy as np
import pytest
import torch

from medgen.core.errors import UsageError
from medgen.families import registry
from medgen.families.autoencoder.config import PRESETS, AEConfig, model_config
from medgen.families.autoencoder.model import AutoencoderModel, NoPriorError, VariationalAutoencoderModel, build
from medgen.families.autoencoder.networks import build_network, reparameterize
from medgen.families.autoencoder.train import AEHParams, kl_divergence, train_step
from medgen.families.autoencoder.train import build as build_nets
from medgen.training.family import Step
from medgen.training.runconfig import RunConfig
from toy_volumes import make_dataset

pytestmark = pytest.mark.usefixtures("one_thread")

S = 16


def volumes(n: int, size: int = S, seed: int = 0) -> np.ndarray:
    """``n`` of make_dataset's noisy cylinders as float32 [n, size, size, size], without files."""
    rng = np.random.default_rng(seed)
    g = np.linspace(-1, 1, size)
    X, Y, _ = np.meshgrid(g, g, g, indexing="ij")
    out = []
    for _ in range(n):
        a, b = rng.uniform(0.5, 0.9, 2)
        v = np.where((X / a) ** 2 + (Y / b) ** 2 <= 1, 0.2, -1.0) + rng.normal(0, 0.05, X.shape)
        out.append(np.clip(v, -1, 1))
    return np.stack(out).astype(np.float32)


def run_config(data, iters: int, variational: bool = False, **kw) -> RunConfig:
    base = dict(data=str(data), model=model_config("tiny", S, variational=variational).to_dict(), family="autoencoder",
                hparams={}, preset="tiny", iters=iters, batch=4, device="cpu", log_every=1, sample_every=0,
                ckpt_every=1000, split_fractions=(1.0, 0.0, 0.0))
    base.update(kw)
    return RunConfig(**base)


# ---------------------------------------------------------------------- the losses


def test_kl_term_is_the_closed_form():
    mu = torch.tensor([[1.0, -2.0, 0.0], [0.0, 0.0, 0.0]])
    logvar = torch.tensor([[0.0, math.log(4.0), -1.0], [0.0, 0.0, 0.0]])
    # ½ Σ (μ² + σ² − log σ² − 1): (1 + 1 − 0 − 1) + (4 + 4 − log 4 − 1) + (0 + e⁻¹ + 1 − 1), halved
    expected = 0.5 * (1.0 + (7.0 - math.log(4.0)) + math.exp(-1.0))
    kl = kl_divergence(mu, logvar)
    assert kl.shape == (2,)
    assert kl[0].item() == pytest.approx(expected, rel=1e-6)
    assert kl[1].item() == 0.0  # q = p
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros(3), torch.ones(3))
    torch.testing.assert_close(kl, torch.distributions.kl_divergence(q, p).sum(1))


def test_reparameterisation_is_mu_plus_sigma_eps():
    mu = torch.tensor([[0.5, -1.5, 2.0]])
    logvar = torch.tensor([[0.0, math.log(4.0), -2.0]])
    eps = torch.tensor([[1.0, -2.0, 0.3]])
    torch.testing.assert_close(reparameterize(mu, logvar, eps), torch.tensor([[1.5, -5.5, 2.0 + 0.3 * math.exp(-1.0)]]))


@pytest.mark.parametrize("reconstruction", ["l1", "mse"])
def test_vae_step_minimises_rec_plus_beta_kl_per_voxel(reconstruction):
    """One step with SGD at lr 1 moves every weight by minus the gradient of rec + β·KL/S³, written out here with
    the ε of the iteration's generator; the logged values are rec and KL in nats per volume."""
    cfg = model_config("tiny", S, variational=True)
    hp = AEHParams.from_dict({"reconstruction": reconstruction, "kl_weight": 3.0})
    torch.manual_seed(0)
    nets = build_nets(cfg, hp, torch.device("cpu"))
    ref = copy.deepcopy(nets["autoencoder"])
    opt = {"autoencoder": torch.optim.SGD(nets["autoencoder"].parameters(), lr=1.0)}
    x = torch.from_numpy(volumes(2))[:, None]
    step = Step(nets, nets, opt, {"image": x}, torch.Generator().manual_seed(7), 0, 1, 2, cfg, hp, nullcontext,
                torch.device("cpu"))
    losses = train_step(step)

    eps = torch.randn(2, cfg.latent_size, generator=torch.Generator().manual_seed(7))
    mu, logvar = ref.net.encode_forward(x)  # MONAI's encoder and heads
    x_rec = torch.tanh(ref.net.decode_forward(mu + torch.exp(0.5 * logvar) * eps, use_sigmoid=False))
    diff = x_rec - x
    rec = diff.abs().mean() if reconstruction == "l1" else (diff**2).mean()
    kl = (0.5 * (mu**2 + logvar.exp() - logvar - 1).sum(1)).mean()
    grads = torch.autograd.grad(rec + 3.0 * kl / S**3, list(ref.parameters()))
    for (name, p), p0, g in zip(nets["autoencoder"].named_parameters(), ref.parameters(), grads):
        torch.testing.assert_close(p.detach(), p0.detach() - g, rtol=1e-4, atol=1e-6, msg=name)
    assert set(losses) == {"rec", "kl"}
    torch.testing.assert_close(losses["rec"], rec.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(losses["kl"], kl.detach(), rtol=1e-5, atol=1e-5)
    assert losses["kl"].item() > 0


def test_plain_ae_step_minimises_the_reconstruction_error_alone():
    cfg = model_config("tiny", S)
    hp = AEHParams.from_dict({"reconstruction": "mse"})
    torch.manual_seed(0)
    nets = build_nets(cfg, hp, torch.device("cpu"))
    ref = copy.deepcopy(nets["autoencoder"])
    opt = {"autoencoder": torch.optim.SGD(nets["autoencoder"].parameters(), lr=1.0)}
    x = torch.from_numpy(volumes(2))[:, None]
    losses = train_step(Step(nets, nets, opt, {"image": x}, torch.Generator().manual_seed(7), 0, 1, 2, cfg, hp,
                             nullcontext, torch.device("cpu")))
    x_rec = torch.tanh(ref.net(x))  # MONAI's AutoEncoder end to end, then the tanh
    rec = ((x_rec - x) ** 2).mean()
    grads = torch.autograd.grad(rec, list(ref.parameters()))
    for (name, p), p0, g in zip(nets["autoencoder"].named_parameters(), ref.parameters(), grads):
        torch.testing.assert_close(p.detach(), p0.detach() - g, rtol=1e-4, atol=1e-6, msg=name)
    assert list(losses) == ["rec"]
    torch.testing.assert_close(losses["rec"], rec.detach())


# ---------------------------------------------------------------------- training


@pytest.mark.parametrize("variational", [False, True])
def test_training_lowers_the_loss_and_the_held_out_reconstruction_error(variational, tmp_path):
    data = make_dataset(tmp_path / "data", n=8, size=S)
    cfg = run_config(data, 40, variational)
    registry.train(cfg, tmp_path / "run", progress=False)
    with open(tmp_path / "run" / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    rec = [float(r["loss_rec"]) for r in rows]
    assert len(rec) == 40 and np.mean(rec[-5:]) < 0.8 * np.mean(rec[:5])
    if variational:
        assert all(float(r["loss_kl"]) >= 0 for r in rows)
    held = volumes(4, seed=99)  # not the training volumes
    trained = registry.load(tmp_path / "run")
    untrained = registry.build_untrained(tmp_path / "run", seed=cfg.seed)
    torch.manual_seed(cfg.seed)  # the loop seeds torch with the run's seed, then builds the network
    initial = build_network(model_config("tiny", S, variational=variational)).state_dict()
    assert all(torch.equal(initial[k], v) for k, v in untrained.network.state_dict().items())
    err_trained = np.abs(trained.reconstruct(held) - held).mean()
    err_untrained = np.abs(untrained.reconstruct(held) - held).mean()
    assert err_trained < 0.85 * err_untrained
    assert isinstance(trained, VariationalAutoencoderModel if variational else AutoencoderModel)


def test_vae_resume_after_n_plus_n_equals_2n(tmp_path):
    """The shared template checks the default (plain AE); the VAE draws ε from the loop's generator."""
    data = make_dataset(tmp_path / "data", n=4, size=S)
    full = registry.train(run_config(data, 4, True, batch=2), tmp_path / "full", progress=False)
    registry.train(run_config(data, 2, True, batch=2), tmp_path / "split", progress=False)
    resumed = registry.train(run_config(data, 4, True, batch=2), tmp_path / "split", resume=True, progress=False)
    a, b = full.models.weights(), resumed.models.weights()
    assert set(a) == set(b) == {"autoencoder"}
    for key, value in a["autoencoder"].items():
        assert torch.equal(value, b["autoencoder"][key]), key


# ---------------------------------------------------------------------- the loaded model


@pytest.mark.parametrize("variational", [False, True])
def test_reconstruct_is_deterministic_with_every_input_shape(variational):
    m = build("tiny", S, seed=0, variational=variational)
    x = volumes(3)
    rec = m.reconstruct(x)
    assert rec.shape == (3, S, S, S) and rec.dtype == np.float32
    assert np.abs(rec).max() <= 1.0 and rec.std() > 0
    np.testing.assert_array_equal(m.reconstruct(x), rec)  # no draw: the VAE decodes μ
    np.testing.assert_allclose(m.reconstruct(x[1]), rec[1:2], rtol=0, atol=1e-5)  # [S, S, S]
    np.testing.assert_allclose(m.reconstruct(x[:, None]), rec, rtol=0, atol=1e-5)  # [n, 1, S, S, S]
    np.testing.assert_allclose(m.reconstruct(torch.from_numpy(x), batch_size=3), rec, rtol=0, atol=1e-5)
    np.testing.assert_allclose(m.reconstruct(x, labels=None, chunk=None), rec)  # other families' options: ignored
    np.testing.assert_allclose(m.decode(m.encode(x)), rec, rtol=0, atol=1e-5)
    with pytest.raises(UsageError, match="16x16x16"):
        m.reconstruct(np.zeros((1, 32, 32, 32), np.float32))
    with pytest.raises(UsageError, match="expected"):
        m.reconstruct(np.zeros((2, 2, S, S, S), np.float32))


def test_vae_encodes_and_reconstructs_with_mu_not_a_draw():
    m = build("tiny", S, seed=0, variational=True)
    x = volumes(3)
    z = m.encode(x)
    assert z.shape == (3, 64) == (3, m.config.latent_dim) and z.dtype == np.float32
    with torch.no_grad():
        mu, logvar = m.network.net.encode_forward(torch.from_numpy(x)[:, None])
        from_mu = torch.tanh(m.network.net.decode_forward(mu, use_sigmoid=False))[:, 0].numpy()
    np.testing.assert_allclose(z, mu.numpy(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(m.reconstruct(x), from_mu, rtol=0, atol=1e-5)
    assert np.abs(logvar.numpy()).max() > 0  # σ ≠ 0: a draw, or μ + σ, would differ


def test_ae_encode_is_the_flattened_spatial_bottleneck():
    m = build("tiny", S, seed=0)
    assert m.config.latent_shape == (8, 4, 4, 4) and m.config.latent_dim == 512
    x = volumes(2)
    z = m.encode(x)
    with torch.no_grad():
        h = m.network.net.intermediate(m.network.net.encode(torch.from_numpy(x)[:, None]))
    assert h.shape == (2, 8, 4, 4, 4)
    np.testing.assert_allclose(z, h.flatten(1).numpy(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(m.encode(x[0]), z[:1], rtol=0, atol=1e-5)
    with pytest.raises(UsageError, match="512 values"):
        m.decode(np.zeros((1, 64), np.float32))


def test_plain_ae_refuses_to_sample_with_a_clear_error():
    m = build("tiny", S, seed=0)
    with pytest.raises(UsageError, match="no prior to sample.*--recipe vae") as err:
        m.generate(2, seed=0)
    assert isinstance(err.value, NoPriorError) and err.value.exit_code == 2
    with pytest.raises(UsageError):
        m.sample_latents(2)
    assert getattr(m, "generate", None) is None  # what report/`medgen generate` ask: it does not sample
    assert callable(getattr(m, "reconstruct", None)) and callable(getattr(m, "encode", None))
    with pytest.raises(AttributeError):
        m.no_such_thing  # noqa: B018


def test_vae_generates_prior_samples_reproducibly_per_seed_and_volume():
    m = build("tiny", S, seed=0, variational=True)
    three = m.generate(3, seed=2)
    assert three.shape == (3, S, S, S) and three.dtype == np.float32 and np.abs(three).max() <= 1.0
    np.testing.assert_array_equal(m.generate(3, seed=2), three)
    np.testing.assert_allclose(m.generate(1, seed=2, indices=[1])[0], three[1], rtol=0, atol=1e-5)
    np.testing.assert_allclose(m.generate(3, z=m.sample_latents(3, seed=2)), three, rtol=0, atol=1e-5)
    assert not np.array_equal(m.generate(1, seed=3)[0], three[0])
    with pytest.raises(UsageError, match="unconditional"):
        m.generate(1, labels=1)
    with pytest.raises(UsageError, match="--chunk"):
        m.generate(1, chunk=2)


def test_load_reconstruct_round_trip_and_the_commands(tmp_path, capsys):
    from medgen.cli import main
    from medgen.inference.anomaly import detect

    data = make_dataset(tmp_path / "data", n=3, size=S)
    registry.train(run_config(data, 2), tmp_path / "run", progress=False)
    model = registry.load(tmp_path / "run")
    x = np.stack([np.load(data / "volumes" / f"v{i}.npy").astype(np.float32) for i in range(3)])
    # the loaded network holds the checkpoint's weights and reconstructs as it does
    from medgen.training import checkpoint as ckpt_io

    weights = ckpt_io.load_weights(tmp_path / "run")["autoencoder"]
    net = build_network(AEConfig.from_dict(RunConfig.load(tmp_path / "run").model))
    net.load_state_dict(weights)
    net.eval()
    with torch.no_grad():
        expected = net(torch.from_numpy(x)[:, None])[0][:, 0].numpy()
    np.testing.assert_allclose(model.reconstruct(x), expected, rtol=0, atol=1e-5)
    assert model.checkpoint is not None and model.run_config.family == "autoencoder"
    # medgen anomaly's map is the reconstruction residual
    res = detect(model, x[0])
    np.testing.assert_allclose(res["map"], np.abs(x[0] - model.reconstruct(x[:1])[0]), rtol=0, atol=1e-5)

    # medgen encode: the flattened bottleneck in z columns, and the reconstructions' L1
    out, rec = tmp_path / "latents.csv", tmp_path / "rec"
    assert main(["encode", str(tmp_path / "run"), str(data), "--out", str(out), "--reconstruct", str(rec),
                 "--no-progress", "--device", "cpu"]) == 0
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["id"] for r in rows] == ["v0", "v1", "v2"]
    got = np.array([[float(r[f"z_{k}"]) for k in range(512)] for r in rows])
    np.testing.assert_allclose(got, model.encode(x), rtol=1e-5, atol=1e-6)
    l1 = np.abs(model.reconstruct(x) - x).mean(axis=(1, 2, 3))
    np.testing.assert_allclose([float(r["recon_l1"]) for r in rows], l1, rtol=1e-4)
    assert sorted(p.name for p in rec.iterdir()) == ["v0.nii.gz", "v1.nii.gz", "v2.nii.gz"]
    # medgen generate refuses the plain AE (exit code 2, naming the family)
    assert main(["generate", str(tmp_path / "run"), "--n", "1", "--out", str(tmp_path / "gen"), "--no-progress",
                 "--device", "cpu"]) == 2
    assert "'autoencoder', which does not generate volumes" in capsys.readouterr().err


def test_medgen_generate_samples_a_trained_vae(tmp_path):
    from medgen.cli import main

    data = make_dataset(tmp_path / "data", n=2, size=S)
    registry.train(run_config(data, 1, True, batch=2), tmp_path / "run", progress=False)
    assert main(["generate", str(tmp_path / "run"), "--n", "2", "--out", str(tmp_path / "gen"), "--format", "npy",
                 "--no-mosaic", "--no-progress", "--device", "cpu"]) == 0
    model = registry.load(tmp_path / "run")
    np.testing.assert_allclose(np.load(tmp_path / "gen" / "sample-0001.npy"), model.generate(2, seed=0)[1],
                               rtol=0, atol=1e-5)


# ---------------------------------------------------------------------- configuration


def test_levels_bring_every_size_to_the_preset_bottleneck():
    assert model_config("tiny", 16).channels == [8, 16]
    assert model_config("tiny", 32).channels == [8, 16, 32]
    assert model_config("base", 64).channels == [32, 64, 128, 256]
    assert model_config("base", 128).channels == [32, 64, 128, 256, 256]
    assert model_config("base", 128).bottleneck_size == 4 and model_config("base", 48).bottleneck_size == 6
    assert model_config("base", 128, bottleneck=8).channels == [32, 64, 128, 256]
    assert model_config("tiny", 32, width=2).channels == [16, 32, 64]
    vae = model_config("base", 64, variational=True, latent_dim=256)
    assert vae.latent_size == 256 and vae.latent_shape == (256,)
    assert AEConfig.from_dict(vae.to_dict()) == vae


def test_settings_are_checked():
    with pytest.raises(UsageError, match="not class-conditional"):
        model_config("tiny", 32, num_classes=2)
    with pytest.raises(UsageError, match="latent_channels"):
        model_config("tiny", 32, latent_dim=100)  # the plain AE's code length follows from its bottleneck
    with pytest.raises(UsageError, match="divisible by 8"):
        AEConfig(size=20, channels=[8, 16, 32])
    with pytest.raises(UsageError, match="two levels"):
        model_config("tiny", 8)
    with pytest.raises(UsageError, match="norm"):
        model_config("tiny", 32, norm="group")
    with pytest.raises(UsageError, match="unknown autoencoder model setting"):
        model_config("tiny", 32, depth=3)
    with pytest.raises(UsageError, match="reconstruction"):
        AEHParams.from_dict({"reconstruction": "bce"})
    with pytest.raises(UsageError, match="kl_weight"):
        AEHParams.from_dict({"kl_weight": -1})
    assert model_config("tiny", 32, norm="batch").norm == "batch"


@pytest.mark.parametrize("preset, size, ae, vae", [
    ("tiny", 32, 31_631, 430_470),
    ("small", 64, 631_961, 2_263_416),
    ("base", 64, 5_711_070, 31_602_092),
    ("base", 128, 13_730_274, 40_450_736),
])
def test_preset_parameter_counts(preset, size, ae, vae):
    fam = registry.get("autoencoder")
    for variational, expected in ((False, ae), (True, vae)):
        cfg = model_config(preset, size, variational=variational)
        assert fam.describe(cfg)["totals"] == {"autoencoder": expected}
    with torch.device("meta"):  # shapes only
        x = torch.empty(1, 1, size, size, size)
        out, mu, logvar = build_network(model_config(preset, size, variational=True))(x)
        rec, h = build_network(model_config(preset, size))(x)
    assert out.shape == rec.shape == x.shape and mu.shape == logvar.shape == (1, PRESETS[preset]["latent_size"])
    assert h.shape == (1, PRESETS[preset]["latent_channels"], 4, 4, 4)


def test_the_vae_recipe_and_model_info(capsys):
    import json

    from medgen.cli import main

    fam = registry.get("autoencoder")
    assert fam.recipes["vae"]["model"] == {"variational": True}
    assert fam.default_preset == "base" and set(fam.presets) == {"tiny", "small", "base"}
    assert main(["model-info", "--family", "autoencoder", "--preset", "tiny", "--size", "32", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["networks"] == {"autoencoder": 31_631} and info["losses"] == ["loss_rec"]


# ---------------------------------------------------------------------- benchmark


def test_bench_generate_times_reconstruction_or_sampling():
    from medgen.families.autoencoder import bench

    r = bench.measure("generate", preset="tiny", size=S, warmup=0, repeats=1)
    assert r["operation"] == "reconstruct" and r["seconds_per_volume"] > 0 and r["params_total"] == 9_117
    r = bench.measure("generate", preset="tiny", size=S, warmup=0, repeats=1, recipe="vae")
    assert r["operation"] == "generate" and r["variational"] and "VAE" in bench.describe(r)
    with pytest.raises(UsageError, match="--chunk"):
        bench.measure("generate", preset="tiny", size=S, chunk=2)


@pytest.mark.slow
def test_medgen_bench_train(capsys):
    from medgen.cli import main

    assert main(["bench", "train", "--family", "autoencoder", "--preset", "tiny", "--size", str(S), "--batch", "1",
                 "--warmup", "0", "--repeats", "1", "--recipe", "vae"]) == 0
    assert "autoencoder (VAE) train tiny 16³ batch 1" in capsys.readouterr().out
