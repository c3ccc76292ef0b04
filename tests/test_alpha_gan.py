"""The alpha-gan family: the code discriminator's loss, the gradient each network gets, encode and
reconstruct, and ``medgen encode`` on a trained run.

The loop's guarantees (exact resume, DDP, NaN stop, SIGTERM, report) are checked for this family by
tests/test_family_template.py.
"""

from __future__ import annotations

import copy
import csv
from contextlib import nullcontext

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medgen.core.errors import UsageError
from medgen.families import registry
from medgen.families.alpha_gan.config import model_config
from medgen.families.alpha_gan.model import AlphaGANModel, build
from medgen.families.alpha_gan.train import AlphaGANHParams, code_discriminator_loss, train_step
from medgen.training.family import Step
from medgen.training.runconfig import RunConfig
from toy_volumes import make_dataset

pytestmark = pytest.mark.usefixtures("one_thread")


def test_code_discriminator_loss_is_the_closed_form_bce():
    prior = torch.tensor([2.0, -1.0, 0.5, 0.0])
    encoded = torch.tensor([-3.0, 1.5, 0.25, 4.0])
    p, e = prior.double().numpy(), encoded.double().numpy()
    # prior codes labelled 1, encoder codes 0: −mean log σ(l_z) − mean log(1 − σ(l_ẑ))
    expected = np.mean(np.log1p(np.exp(-p))) + np.mean(np.log1p(np.exp(e)))
    assert code_discriminator_loss(prior, encoded).item() == pytest.approx(expected, rel=1e-6)
    sig = 1 / (1 + np.exp(-np.array([2.0, -3.0])))
    assert code_discriminator_loss(torch.tensor([2.0]), torch.tensor([-3.0])).item() == pytest.approx(
        -np.log(sig[0]) - np.log(1 - sig[1]), rel=1e-6)
    # a perfect code discriminator has (almost) no loss, a fooled one a large loss
    assert code_discriminator_loss(torch.tensor([30.0]), torch.tensor([-30.0])).item() < 1e-12
    assert code_discriminator_loss(torch.tensor([-5.0]), torch.tensor([5.0])).item() == pytest.approx(
        2 * np.log1p(np.exp(5.0)), rel=1e-6)


def test_encode_is_deterministic_and_reconstruct_is_g_of_e():
    model = build("tiny", 32, seed=0)
    assert isinstance(model, AlphaGANModel)
    x = np.random.default_rng(0).uniform(-1, 1, (3, 32, 32, 32)).astype(np.float32)
    z = model.encode(x)
    assert z.shape == (3, model.config.latent_dim) == (3, 64) and z.dtype == np.float32
    assert np.array_equal(z, model.encode(x))
    np.testing.assert_allclose(model.encode(x, batch_size=3), z, rtol=1e-5, atol=1e-6)  # a volume's code is its own
    np.testing.assert_allclose(model.encode(x[1]), z[1:2], rtol=1e-5, atol=1e-6)
    assert np.abs(z).std() > 0 and not np.allclose(z[0], z[1])
    rec = model.reconstruct(x)
    with torch.no_grad():
        expected = model.generator(model.encoder(torch.from_numpy(x)[:, None]))[:, 0].numpy()
    assert rec.shape == (3, 32, 32, 32)
    np.testing.assert_allclose(rec, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(rec, model.generate(3, z=z))
    with pytest.raises(UsageError, match="32x32x32"):
        model.encode(x[:, :16, :16, :16])
    with pytest.raises(UsageError):
        model_config("tiny", 32, num_classes=2)


@pytest.mark.parametrize("code_loss", ["bce", "wgan-gp"])
def test_each_network_gets_the_gradient_of_its_own_loss(code_loss):
    """One step's gradients against an independent computation of each loss (module docstring of
    ``alpha_gan.train``): in particular E gets λ·L1 − mean C(ẑ) and nothing of D."""
    fam = registry.get("alpha-gan")
    cfg = fam.model_config("tiny", 16)
    hp = AlphaGANHParams(code_loss=code_loss)
    torch.manual_seed(0)
    nets = fam.build(cfg, hp, torch.device("cpu"))
    ref = copy.deepcopy(nets)
    opt = fam.optimizers(nets, hp, torch.device("cpu"))
    seen: dict[str, list[torch.Tensor]] = {}
    for name, o in opt.items():
        def grab(name=name, o=o):
            seen[name] = [p.grad.clone() for p in nets[name].parameters()]
        o.step = grab  # record the gradients instead of stepping
    x = torch.rand(2, 1, 16, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    rng = torch.Generator().manual_seed(7)
    step = Step(nets, dict(nets), opt, {"image": x}, rng, 0, 1, 2, cfg, hp, nullcontext, torch.device("cpu"))
    losses = train_step(step)

    # the same draws, the same forward passes, each loss differentiated on its own
    rng = torch.Generator().manual_seed(7)
    z = torch.randn(2, cfg.latent_dim, generator=rng)
    u_gen, u_rec = torch.rand(2, 1, 1, 1, 1, generator=rng), torch.rand(2, 1, 1, 1, 1, generator=rng)
    u_code = torch.rand(2, 1, generator=rng)
    G, D, E, C = ref["G"], ref["D"], ref["E"], ref["C"]
    z_hat = E(x)
    x_rec, x_gen = G(torch.cat([z_hat, z])).split(2)
    rec = F.l1_loss(x_rec, x)

    def grads(loss, net):
        return torch.autograd.grad(loss, list(net.parameters()), retain_graph=True)

    def penalty(net, a, b, u):
        mix = torch.lerp(b.detach(), a.detach(), u).requires_grad_(True)
        (g,) = torch.autograd.grad(net(mix).sum(), mix, create_graph=True)
        return ((g.flatten(1).square().sum(1) + 1e-12).sqrt() - 1).square().mean()

    expected = {
        "E": grads(10 * rec - C(z_hat).mean(), E),
        "G": grads(10 * rec - D(x_rec).mean() - D(x_gen).mean(), G),
        "D": grads(D(x_rec).mean() + D(x_gen).mean() - 2 * D(x).mean()
                   + 10 * (penalty(D, x, x_gen, u_gen) + penalty(D, x, x_rec, u_rec)), D),
    }
    if code_loss == "bce":
        expected["C"] = grads(code_discriminator_loss(C(z), C(z_hat.detach())), C)
    else:
        expected["C"] = grads(C(z_hat.detach()).mean() - C(z).mean() + 10 * penalty(C, z_hat, z, u_code), C)
    for name in "EGDC":
        assert len(seen[name]) == len(expected[name])
        for got, want in zip(seen[name], expected[name]):
            torch.testing.assert_close(got, want, rtol=2e-4, atol=1e-6, msg=lambda m: f"{name}: {m}")
    # the image critic's gradient through x_rec would change E's: it is not there
    with_d = grads(10 * rec - C(z_hat).mean() - D(x_rec).mean(), E)
    assert any(not torch.allclose(a, b, rtol=1e-3, atol=1e-6) for a, b in zip(with_d, expected["E"]))
    assert losses["rec"].item() == pytest.approx(rec.item(), rel=1e-5)


def test_encode_command_writes_codes_and_reconstructions_of_a_trained_run(tmp_path):
    from medgen.inference.encode import encode_folder

    data = make_dataset(tmp_path / "data", n=3, size=16)
    fam = registry.get("alpha-gan")
    cfg = RunConfig(data=str(data), model=fam.model_config("tiny", 16).to_dict(), family="alpha-gan",
                    hparams=fam.hparams_from_dict({}).to_dict(), preset="tiny", iters=2, batch=2, device="cpu",
                    log_every=1, sample_every=0, ckpt_every=1000, split_fractions=(1.0, 0.0, 0.0))
    registry.train(cfg, tmp_path / "run", progress=False)
    model = registry.load(tmp_path / "run", use_ema=False)  # what `medgen encode` loads by default
    rows = encode_folder(model, data, tmp_path / "latents.csv", reconstruct_dir=tmp_path / "rec", progress=False)
    assert [r["id"] for r in rows] == ["v0", "v1", "v2"]
    with open(tmp_path / "latents.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert [f"z_{k}" for k in range(64)] == [c for c in table[0] if c.startswith("z_")]
    x = np.stack([np.load(data / "volumes" / f"v{i}.npy").astype(np.float32) for i in range(3)])
    z = model.encode(x)
    np.testing.assert_allclose([float(table[1][f"z_{k}"]) for k in range(64)], z[1], rtol=1e-5, atol=1e-6)
    l1 = np.abs(model.reconstruct(x) - x).mean(axis=(1, 2, 3))
    np.testing.assert_allclose([float(r["recon_l1"]) for r in table], l1, rtol=1e-4)
    assert len(list((tmp_path / "rec").glob("*.nii.gz"))) == 3
