"""The VAE-GAN family: the KL term and the reparameterisation against closed forms, each network trained by its
own loss only (Larsen et al.'s Algorithm 1, checked against gradients written out here), encoding, sampling,
shapes and published parameter counts, and `medgen encode` on a trained run.

The loop's guarantees (exact resume, DDP, NaN stop, SIGTERM, report) are checked for this family by
tests/test_family_template.py. Every volume materialised here is 16³ or 32³; 64³ and 128³ shapes and
parameter counts are computed on the meta device (no data).
"""

from __future__ import annotations

import copy
import csv
import math
from contextlib import nullcontext

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medgen.core.errors import UsageError
from medgen.families import registry
from medgen.families.dcgan3d import Critic, Generator, count_parameters
from medgen.families.vae_gan.config import model_config
from medgen.families.vae_gan.model import build
from medgen.families.vae_gan.networks import Encoder
from medgen.families.vae_gan.train import VAEGANHParams, kl_divergence, reparameterize, train_step
from medgen.families.vae_gan.train import build as build_nets
from medgen.training.family import Step
from toy_volumes import make_dataset

pytestmark = pytest.mark.usefixtures("one_thread")


def test_kl_term_is_the_closed_form():
    mu = torch.tensor([[1.0, -2.0, 0.0], [0.0, 0.0, 0.0]])
    logvar = torch.tensor([[0.0, math.log(4.0), -1.0], [0.0, 0.0, 0.0]])
    # ½ Σ (μ² + σ² − log σ² − 1): (1 + 1 − 0 − 1) + (4 + 4 − log 4 − 1) + (0 + e⁻¹ + 1 − 1), halved
    expected = 0.5 * (1.0 + (7.0 - math.log(4.0)) + math.exp(-1.0))
    kl = kl_divergence(mu, logvar)
    assert kl.shape == (2,)
    assert kl[0].item() == pytest.approx(expected, rel=1e-6)
    assert kl[1].item() == 0.0  # q = p
    # and torch's KL between the Gaussians, summed over dimensions
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros(3), torch.ones(3))
    torch.testing.assert_close(kl, torch.distributions.kl_divergence(q, p).sum(1))


def test_reparameterisation_gives_mu_as_sigma_vanishes_and_is_differentiable():
    mu = torch.tensor([[0.5, -1.5, 2.0]], requires_grad=True)
    eps = torch.tensor([[1.0, -2.0, 0.3]])
    tiny = torch.full_like(mu, -200.0)  # σ = e⁻¹⁰⁰
    torch.testing.assert_close(reparameterize(mu, tiny, eps), mu.detach(), rtol=0, atol=1e-30)
    logvar = torch.tensor([[0.0, math.log(4.0), -2.0]], requires_grad=True)
    z = reparameterize(mu, logvar, eps)
    torch.testing.assert_close(z, torch.tensor([[1.5, -1.5 - 4.0, 2.0 + 0.3 * math.exp(-1.0)]]))
    z.sum().backward()
    assert torch.equal(mu.grad, torch.ones_like(mu))
    torch.testing.assert_close(logvar.grad, 0.5 * (0.5 * logvar.detach()).exp() * eps)


@pytest.mark.parametrize("reconstruction", ["feature", "l1"])
def test_each_network_is_trained_by_its_own_loss_only(reconstruction):
    """One step with SGD at lr 1 moves every weight by minus its gradient: compared with the gradients of
    Larsen et al.'s three losses written out here (E: rec + w·KL/d; G: γ·rec + adversarial; D: L_GAN)."""
    cfg = model_config("tiny", 16)
    hp = VAEGANHParams.from_dict({"reconstruction": reconstruction, "gamma": 2.0, "kl_weight": 3.0})
    torch.manual_seed(0)
    nets = build_nets(cfg, hp, torch.device("cpu"))
    ref = copy.deepcopy(nets)
    opt = {k: torch.optim.SGD(v.parameters(), lr=1.0) for k, v in nets.items()}
    x = torch.rand(2, 1, 16, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    step = Step(nets, nets, opt, {"image": x}, torch.Generator().manual_seed(7), 0, 1, 2, cfg, hp, nullcontext,
                torch.device("cpu"))
    losses = train_step(step)

    # the same iteration by hand: ε then z_p from the iteration's generator
    rng = torch.Generator().manual_seed(7)
    eps, z_p = torch.randn(2, cfg.latent_dim, generator=rng), torch.randn(2, cfg.latent_dim, generator=rng)
    E, G, D = ref["E"], ref["G"], ref["D"]
    mu, logvar = E(x)
    z = mu + torch.exp(0.5 * logvar) * eps
    gen = G(torch.cat([z, z_p]))
    scores, hidden = D(torch.cat([x, gen]), features=True)
    s_real, s_rec, s_prior = scores[:2], scores[2:4], scores[4:]
    if reconstruction == "feature":
        f = hidden[1]  # S/4 = 4³ at 16³, the deepest layer (feature_layer 3 asks for S/8)
        assert f.shape[1:] == (64, 4, 4, 4)
        rec = 0.5 * ((f[2:4] - f[:2].detach()) ** 2).mean()
    else:
        rec = (gen[:2] - x).abs().mean()
    kl = (0.5 * (mu**2 + logvar.exp() - logvar - 1).sum(1)).mean()
    loss_d = F.softplus(-s_real).mean() + F.softplus(s_rec).mean() + F.softplus(s_prior).mean()
    adv = F.softplus(-s_rec).mean() + F.softplus(-s_prior).mean()
    loss_e = rec + 3.0 * kl / 64  # per latent dimension
    loss_g = 2.0 * rec + adv
    for name, loss in (("D", loss_d), ("E", loss_e), ("G", loss_g)):
        grads = torch.autograd.grad(loss, list(ref[name].parameters()), retain_graph=True)
        for (pname, p), p0, g in zip(nets[name].named_parameters(), ref[name].parameters(), grads):
            torch.testing.assert_close(p.detach(), p0.detach() - g, rtol=1e-4, atol=1e-6, msg=f"{name}.{pname}")
    for name, value in (("D", loss_d), ("G", adv), ("rec", rec), ("KL", kl)):
        torch.testing.assert_close(losses[name], value.detach(), rtol=1e-5, atol=1e-6)
    # the adversarial terms do not reach E (Larsen et al.'s "limiting error signals"): E's gradient differs
    # from that of rec + w·KL/d + the generator's adversarial terms
    leaked = torch.autograd.grad(loss_e + adv, list(ref["E"].parameters()), retain_graph=True)
    own = torch.autograd.grad(loss_e, list(ref["E"].parameters()))
    assert any(not torch.allclose(a, b) for a, b in zip(leaked, own))


def test_encode_returns_mu_deterministically():
    m = build("tiny", 16, seed=0)
    x = np.random.default_rng(0).uniform(-1, 1, (3, 16, 16, 16)).astype(np.float32)
    z = m.encode(x)
    assert z.shape == (3, 64) and z.dtype == np.float32
    with torch.no_grad():
        mu, logvar = m.encoder(torch.from_numpy(x)[:, None])
    np.testing.assert_allclose(z, mu.numpy(), rtol=0, atol=1e-6)  # μ, not a draw z = μ + σ·ε
    assert np.abs(logvar.numpy()).max() > 0  # σ ≠ 0: a draw would differ
    np.testing.assert_array_equal(m.encode(x), z)  # deterministic
    np.testing.assert_allclose(m.encode(x[1]), z[1:2], rtol=0, atol=1e-6)  # each volume's code is its own
    np.testing.assert_allclose(m.encode(x, batch_size=3), z, rtol=0, atol=1e-6)
    rec = m.reconstruct(x)
    np.testing.assert_allclose(rec, m.generate(3, z=z), rtol=0, atol=1e-6)
    assert rec.shape == (3, 16, 16, 16) and np.abs(rec).max() <= 1.0
    with pytest.raises(UsageError, match="16x16x16"):
        m.encode(np.zeros((1, 32, 32, 32), np.float32))


def test_generate_is_reproducible_per_seed_and_volume():
    m = build("tiny", 16, seed=0)
    three = m.generate(3, seed=2)
    np.testing.assert_array_equal(m.generate(3, seed=2), three)
    np.testing.assert_array_equal(m.generate(1, seed=2, indices=[1])[0], three[1])
    assert not np.array_equal(m.generate(1, seed=3)[0], three[0])
    assert not np.array_equal(three[0], three[2])


@pytest.mark.parametrize("size", [16, 32, 64])
def test_shapes_follow_the_size(size):
    cfg = model_config("tiny", size)
    device = torch.device("meta") if size > 32 else torch.device("cpu")  # 64³: shapes only, no data
    with device:
        E, G, D = Encoder(cfg), Generator(cfg), Critic(cfg)
        x = torch.rand(2, 1, size, size, size)
        mu, logvar = E(x)
        x_rec = G(mu)
        scores = D(x_rec)
    assert mu.shape == logvar.shape == (2, cfg.latent_dim)
    assert x_rec.shape == (2, 1, size, size, size) and scores.shape == (2,)
    assert len(E.trunk.convs) == int(math.log2(size // 4))


def test_paper_preset_has_the_published_parameter_counts():
    cfg = model_config("paper", 128)
    with torch.device("meta"):
        E, D = Encoder(cfg), Critic(cfg)
    # the HA-GAN authors' 128³ VAE-GAN encoder without the BatchNorm of its heads' hidden layers (2 × 2 × 2048),
    # and their discriminator
    assert count_parameters(E) == 48_812_336 - 2 * 2 * 2048
    assert count_parameters(D) == 11_178_849
    assert cfg.latent_dim == 1000 and cfg.encoder_hidden == 2048 and cfg.encoder_norm == "batch"


def test_settings_are_checked():
    with pytest.raises(UsageError, match="reconstruction"):
        VAEGANHParams.from_dict({"reconstruction": "mse"})
    with pytest.raises(UsageError, match="feature_layer"):
        VAEGANHParams.from_dict({"feature_layer": 0})
    with pytest.raises(UsageError, match="encoder_norm"):
        model_config("tiny", 16, encoder_norm="group")
    with pytest.raises(UsageError, match="unconditional"):
        model_config("tiny", 16, num_classes=3)
    assert model_config("tiny", 16, encoder_norm="layer").encoder_norm == "layer"


def test_medgen_encode_writes_mu_and_reconstructions_of_a_trained_run(tmp_path):
    from medgen.cli import main
    from medgen.training.runconfig import RunConfig

    data = make_dataset(tmp_path / "data", n=3, size=16)
    cfg = RunConfig(data=str(data), model=model_config("tiny", 16).to_dict(), family="vae-gan", hparams={},
                    preset="tiny", iters=2, batch=2, device="cpu", log_every=1, sample_every=0, ckpt_every=1000,
                    split_fractions=(1.0, 0.0, 0.0))
    registry.train(cfg, tmp_path / "run", progress=False)
    out, rec = tmp_path / "latents.csv", tmp_path / "rec"
    code = main(["encode", str(tmp_path / "run"), str(data), "--out", str(out), "--reconstruct", str(rec),
                 "--no-progress", "--device", "cpu"])
    assert code == 0
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["id"] for r in rows] == ["v0", "v1", "v2"]
    model = registry.load(tmp_path / "run", use_ema=False)  # what `medgen encode` loads by default
    x = np.stack([np.load(data / "volumes" / f"v{i}.npy").astype(np.float32) for i in range(3)])
    z = model.encode(x)
    got = np.array([[float(r[f"z_{k}"]) for k in range(64)] for r in rows])
    np.testing.assert_allclose(got, z, rtol=1e-5, atol=1e-6)
    l1 = np.abs(model.reconstruct(x) - x).mean(axis=(1, 2, 3))
    np.testing.assert_allclose([float(r["recon_l1"]) for r in rows], l1, rtol=1e-4)
    assert sorted(p.name for p in rec.iterdir()) == ["v0.nii.gz", "v1.nii.gz", "v2.nii.gz"]
