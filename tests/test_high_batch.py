"""HA-GAN's ``high_batch`` (``--hparam high_batch=H``): G^A, G^L and D^L train on the whole batch, G^H, D^H
and the encoder on its first H volumes only."""

from __future__ import annotations

import copy
from contextlib import nullcontext

import pytest
import torch
import torch.nn.functional as F

from medgen.core.errors import UsageError
from medgen.families.hagan import Discriminator, Generator, get_preset
from medgen.families.hagan.losses import discriminator_loss
from medgen.families.hagan.train import HAGANHParams, build, ddp_modules, optimizers, train_step
from medgen.families.penalties import r1_penalty
from medgen.training.family import Step


def _cfg(**kw):
    return get_preset("tiny", 32, width=1 / 8, latent_dim=8, **kw)


def test_generator_makes_the_slabs_of_the_first_samples_only():
    torch.manual_seed(0)
    G = Generator(_cfg())
    z, starts = torch.randn(4, 8), torch.tensor([0, 1])
    low_all, slab_all = G(z, torch.tensor([0, 1, 2, 3]))
    low, slab = G(z, starts, high=2)
    assert low.shape[0] == 4 and slab.shape[0] == 2
    assert torch.equal(low, low_all)  # G^L sees every sample
    assert torch.allclose(slab, slab_all[:2], atol=1e-6)
    with pytest.raises(ValueError, match="1..4"):
        G(z, starts, high=5)


def test_discriminator_averages_both_logits_for_the_slab_samples_and_uses_d_low_alone_for_the_rest():
    torch.manual_seed(0)
    D = Discriminator(_cfg()).eval()  # eval: no power iteration of the spectral norms between the calls
    slabs, pos = torch.rand(4, 1, 32, 32, 4) * 2 - 1, torch.rand(4)  # 2 real, 2 fake
    low = torch.rand(10, 1, 8, 8, 8) * 2 - 1  # 5 real, 5 fake
    logit, cls = D(slabs, pos, low, parts=2)
    high, _ = D.high(slabs, pos, 2)
    only_low, _ = D.low(low, 2)
    expected = torch.cat([(high[:2] + only_low[:2]) / 2, only_low[2:5], (high[2:] + only_low[5:7]) / 2, only_low[7:]])
    assert cls is None and logit.shape == (10,)
    assert torch.allclose(logit, expected)
    with pytest.raises(ValueError, match="equal parts"):
        D(slabs, pos, low[:9], parts=2)
    conditional = Discriminator(_cfg(num_classes=2))
    with pytest.raises(ValueError, match="class-conditional"):
        conditional(slabs, pos, low, parts=2, labels=torch.zeros(10, dtype=torch.long))


def _step(nets, hp, batch, iteration=0):
    cpu = torch.device("cpu")
    b = batch["image"].shape[0]
    return train_step(Step(nets, ddp_modules(nets), optimizers(nets, hp, cpu), batch, torch.Generator().manual_seed(7), iteration, 10, b,
                           nets["G"].cfg, hp, nullcontext, torch.device("cpu")))


def test_high_batch_equal_to_the_batch_is_the_plain_step():
    torch.manual_seed(0)
    cfg = _cfg()
    nets = build(cfg, HAGANHParams(), torch.device("cpu"))
    batch = {"image": torch.rand(4, 1, 32, 32, 32) * 2 - 1}
    plain = _step(copy.deepcopy(nets), HAGANHParams(), batch)
    same = _step(copy.deepcopy(nets), HAGANHParams(high_batch=4), batch)
    assert {k: v.item() for k, v in plain.items()} == {k: v.item() for k, v in same.items()}


def test_d_loss_with_high_batch_matches_an_independent_recomputation():
    torch.manual_seed(0)
    cfg = _cfg()
    hp = HAGANHParams(high_batch=2, r1_gamma=2.0, r1_every=1)
    nets = build(cfg, hp, torch.device("cpu"))
    batch = {"image": torch.rand(6, 1, 32, 32, 32) * 2 - 1}
    G, D = copy.deepcopy(nets["G"]), copy.deepcopy(nets["D"])
    losses = _step(nets, hp, batch)
    assert set(losses) == {"D", "G", "EH", "EG", "r1"} and all(torch.isfinite(v) for v in losses.values())

    # by hand, from the same draws: z for all 6, slab starts for the first 2
    rng = torch.Generator().manual_seed(7)
    z = torch.randn(6, cfg.latent_dim, generator=rng)
    starts = G.selector.random_starts(2, generator=rng)
    x = batch["image"]
    with torch.no_grad():
        fake_low, fake_slab = G(z, starts, high=2)
    x_slab = G.selector.select_real(x[:2], starts).requires_grad_(True)
    x_low = F.interpolate(x, scale_factor=1 / cfg.lowres_factor, mode="trilinear", align_corners=False)
    x_low.requires_grad_(True)
    pos = G.selector.position(starts)
    high, _ = D.high(torch.cat([x_slab, fake_slab]), torch.cat([pos, pos]), 2)
    low, _ = D.low(torch.cat([x_low, fake_low]), 2)
    real = torch.cat([(high[:2] + low[:2]) / 2, low[2:6]])
    fake = torch.cat([(high[2:] + low[6:8]) / 2, low[8:]])
    loss_d, _ = discriminator_loss(real, fake)
    assert torch.allclose(losses["D"], loss_d, rtol=1e-5)
    # R1: the squared gradient summed over both inputs' samples, per volume of the batch
    grads = torch.autograd.grad(real.sum(), [x_slab, x_low], retain_graph=True)
    expected_r1 = (grads[0].square().sum() + grads[1].square().sum()) / 6
    assert torch.allclose(losses["r1"], expected_r1, rtol=1e-4)
    assert torch.allclose(r1_penalty(real, [x_slab, x_low]), expected_r1, rtol=1e-5)


def test_high_batch_is_validated():
    with pytest.raises(UsageError, match="high_batch"):
        HAGANHParams.from_dict({"high_batch": -1})
    with pytest.raises(UsageError, match="unconditional"):
        build(_cfg(num_classes=2), HAGANHParams(high_batch=2), torch.device("cpu"))
    with pytest.raises(UsageError, match="unconditional"):
        build(_cfg(use_lowres=False), HAGANHParams(high_batch=2), torch.device("cpu"))
    nets = build(_cfg(), HAGANHParams(high_batch=4), torch.device("cpu"))
    with pytest.raises(UsageError, match="larger than the batch of 2"):
        _step(nets, HAGANHParams(high_batch=4), {"image": torch.rand(2, 1, 32, 32, 32) * 2 - 1})


def test_recon_weight_adds_lambda_times_the_reconstruction_gradient_to_g():
    """With plain SGD (lr 1) G after a step with recon_weight λ is G after the plain step minus λ ∇_G of the
    E^G loss, computed by hand at the same weights (E^H updated, E^G not yet, G after its adversarial step)."""
    torch.manual_seed(0)
    cfg, lam = _cfg(), 0.5
    nets = build(cfg, HAGANHParams(), torch.device("cpu"))
    batch = {"image": torch.rand(2, 1, 32, 32, 32) * 2 - 1}

    def sgd_step(hp):
        n = copy.deepcopy(nets)
        opt = {"G": torch.optim.SGD(n["G"].parameters(), lr=1.0), "D": torch.optim.SGD(n["D"].parameters(), lr=1.0),
               "EH": torch.optim.SGD(n["E"].high.parameters(), lr=1.0),
               "EG": torch.optim.SGD(n["E"].ground.parameters(), lr=1.0)}
        losses = train_step(Step(n, ddp_modules(n), opt, batch, torch.Generator().manual_seed(7), 0, 10, 2, cfg, hp,
                                 nullcontext, torch.device("cpu")))
        return n, losses

    plain, plain_losses = sgd_step(HAGANHParams())
    recon, recon_losses = sgd_step(HAGANHParams(recon_weight=lam))
    assert torch.equal(plain_losses["EG"], recon_losses["EG"])
    for a, b in zip(plain["E"].parameters(), recon["E"].parameters()):
        assert torch.equal(a, b)  # the encoder learns the same either way

    rng = torch.Generator().manual_seed(7)
    torch.randn(2, cfg.latent_dim, generator=rng)
    G, E = copy.deepcopy(plain["G"]), copy.deepcopy(plain["E"])
    E.ground.load_state_dict(nets["E"].ground.state_dict())  # E^G before its update
    starts = G.selector.random_starts(2, generator=rng)
    x = batch["image"]
    with torch.no_grad():
        codes = E.ground(E.features(x))
    rec_low, rec_slab = G(codes, starts)
    x_low = F.interpolate(x, scale_factor=1 / cfg.lowres_factor, mode="trilinear", align_corners=False)
    loss = 0.5 * (F.l1_loss(rec_slab, G.selector.select_real(x, starts)) + F.l1_loss(rec_low, x_low))
    assert torch.allclose(loss, recon_losses["EG"], rtol=1e-5)
    grads = torch.autograd.grad(loss, list(G.parameters()))
    moved = 0
    for p_plain, p_recon, g in zip(plain["G"].parameters(), recon["G"].parameters(), grads):
        assert torch.allclose(p_recon, p_plain - lam * g, atol=1e-6)
        moved += int(g.abs().max() > 1e-6)
    assert moved > 0
    with pytest.raises(UsageError, match="recon_weight"):
        HAGANHParams.from_dict({"recon_weight": -1})
