"""HA-GAN's mode-seeking term (``--hparam diversity_weight=λ``; Mao et al. 2019): G is also asked to map
distant codes to distant low-resolution volumes."""

from __future__ import annotations

import copy
from contextlib import nullcontext

import numpy as np
import pytest
import torch

from medgen.core.errors import UsageError
from medgen.families.hagan import get_preset
from medgen.families.hagan.losses import MODE_SEEKING_EPS, mode_seeking_loss
from medgen.families.hagan.train import HAGANHParams, build, ddp_modules, loss_names, train_step
from medgen.training.family import Step


def _cfg(**kw):
    return get_preset("tiny", 32, width=1 / 8, latent_dim=8, **kw)


def test_mode_seeking_loss_matches_a_loop_over_the_neighbouring_pairs():
    rng = np.random.default_rng(0)
    vols, codes = rng.uniform(-1, 1, (3, 1, 4, 4, 4)), rng.normal(size=(3, 5))
    ratios = []
    for i in range(3):  # volume i against volume i - 1, the first against the last
        j = (i - 1) % 3
        ratios.append(np.abs(vols[i] - vols[j]).mean() / np.abs(codes[i] - codes[j]).mean())
    expected = 1.0 / (np.mean(ratios) + MODE_SEEKING_EPS)
    got = mode_seeking_loss(torch.tensor(vols, dtype=torch.float32), torch.tensor(codes, dtype=torch.float32))
    assert got.item() == pytest.approx(expected, rel=1e-5)
    # look-alike volumes cost more than distinct ones for the same codes
    alike = torch.tensor(vols, dtype=torch.float32) * 0.1
    assert mode_seeking_loss(alike, torch.tensor(codes)).item() == pytest.approx(10 * got.item(), rel=1e-3)
    assert mode_seeking_loss(alike[:1], torch.tensor(codes[:1])).item() == 0.0  # no pair in a batch of one


def _sgd_step(nets, hp, batch):
    n = copy.deepcopy(nets)
    opt = {"G": torch.optim.SGD(n["G"].parameters(), lr=1.0), "D": torch.optim.SGD(n["D"].parameters(), lr=1.0)}
    losses = train_step(Step(n, ddp_modules(n), opt, batch, torch.Generator().manual_seed(7), 0, 10, 3,
                             n["G"].cfg, hp, nullcontext, torch.device("cpu")))
    return n, losses


def test_diversity_weight_adds_lambda_times_the_mode_seeking_gradient_to_g():
    """With plain SGD (lr 1) G after a step with diversity_weight λ is G after the plain step minus λ ∇_G of the
    mode-seeking term of G's low-resolution volumes at the step's codes, computed by hand at the same weights."""
    torch.manual_seed(0)
    cfg, lam = _cfg(), 0.5
    nets = build(cfg, HAGANHParams(use_encoder=False), torch.device("cpu"))
    batch = {"image": torch.rand(3, 1, 32, 32, 32) * 2 - 1}
    plain, plain_losses = _sgd_step(nets, HAGANHParams(use_encoder=False), batch)
    seek, seek_losses = _sgd_step(nets, HAGANHParams(use_encoder=False, diversity_weight=lam), batch)
    for a, b in zip(plain["D"].parameters(), seek["D"].parameters()):
        assert torch.equal(a, b)  # D's step is the same
    assert torch.equal(plain_losses["G"], seek_losses["G"])  # the adversarial term, logged on its own

    z = torch.randn(3, cfg.latent_dim, generator=torch.Generator().manual_seed(7))
    G = copy.deepcopy(nets["G"])
    low = G.common(z)
    low = G.low(low)
    term = mode_seeking_loss(low, z)
    assert torch.allclose(term, seek_losses["diversity"], rtol=1e-5)
    grads = torch.autograd.grad(term, list(G.parameters()), allow_unused=True)
    moved = 0
    for p_plain, p_seek, g in zip(plain["G"].parameters(), seek["G"].parameters(), grads):
        g = torch.zeros_like(p_plain) if g is None else g
        assert torch.allclose(p_seek, p_plain - lam * g, atol=1e-5)
        moved += int(g.abs().max() > 1e-6)
    assert moved > 0


def test_diversity_weight_is_validated_and_logged():
    with pytest.raises(UsageError, match="diversity_weight"):
        HAGANHParams.from_dict({"diversity_weight": -1})
    with pytest.raises(UsageError, match="low-resolution"):
        build(_cfg(use_lowres=False), HAGANHParams(diversity_weight=1), torch.device("cpu"))
    assert "diversity" in loss_names(_cfg(), HAGANHParams(diversity_weight=1))
    assert "diversity" not in loss_names(_cfg(), HAGANHParams())
