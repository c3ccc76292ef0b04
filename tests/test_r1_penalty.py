"""The R1 penalty (medgen.families.penalties) and HA-GAN's use of it (``--hparam r1_gamma=γ``)."""

from __future__ import annotations

import copy
from contextlib import nullcontext

import pytest
import torch
import torch.nn.functional as F

from medgen.families.hagan import get_preset
from medgen.families.hagan.train import HAGANHParams, build, train_step
from medgen.families.penalties import lazy_r1_weight, r1_penalty
from medgen.training.family import Step


def test_r1_of_a_linear_critic_on_two_inputs_is_the_sum_of_its_squared_weights():
    torch.manual_seed(0)
    w1, w2 = torch.randn(5), torch.randn(3)
    a, b = torch.randn(4, 5, requires_grad=True), torch.randn(4, 3, requires_grad=True)
    logits = a @ w1 + (b**2) @ w2  # ∂/∂b = 2 b w2: a different norm for every row
    expected = (w1.square().sum() + (2 * b * w2).square().sum(dim=1)).mean()
    assert torch.allclose(r1_penalty(logits, [a, b]), expected)
    assert torch.allclose(r1_penalty(a @ w1, a), w1.square().sum())
    # the penalty can be minimised over the critic's weights (its graph is kept)
    w = w1.clone().requires_grad_(True)
    r1_penalty(a @ w, a).backward()
    assert torch.allclose(w.grad, 2 * w1)


def test_lazy_weight():
    assert lazy_r1_weight(10.0, 4, 0) == 20.0 and lazy_r1_weight(10.0, 4, 8) == 20.0
    assert lazy_r1_weight(10.0, 4, 3) == 0.0 and lazy_r1_weight(0.0, 4, 0) == 0.0
    assert lazy_r1_weight(2.0, 1, 7) == 1.0


def _d_update(nets, hp, iteration, batch):
    """D's parameters after one HA-GAN step with plain SGD (lr 1), so the change is minus D's gradient."""
    nets = copy.deepcopy(nets)
    opt = {k: torch.optim.SGD(nets[k].parameters(), lr=1.0) for k in ("G", "D")}
    losses = train_step(Step(nets, dict(nets), opt, batch, torch.Generator().manual_seed(7), iteration, 30, 2,
                             nets["cfg"], hp, nullcontext, torch.device("cpu")))
    return {k: v.detach().clone() for k, v in nets["D"].named_parameters()}, losses


def test_hagan_d_step_adds_the_weighted_r1_gradient_on_regularising_iterations():
    torch.manual_seed(0)
    cfg = get_preset("tiny", 32, width=1 / 8, latent_dim=8)
    plain, r1 = HAGANHParams(use_encoder=False), HAGANHParams(use_encoder=False, r1_gamma=3.0, r1_every=2)
    nets = build(cfg, plain, torch.device("cpu"))
    nets = {**nets, "cfg": cfg}  # carried along for _d_update only
    batch = {"image": torch.rand(2, 1, 32, 32, 32) * 2 - 1}
    before = {k: v.detach().clone() for k, v in nets["D"].named_parameters()}

    after_plain, _ = _d_update(nets, plain, 4, batch)
    after_r1, losses = _d_update(nets, r1, 4, batch)  # 4 % 2 == 0: regularised, weight 3/2 · 2 = 3
    skipped, _ = _d_update(nets, r1, 5, batch)
    plain5, _ = _d_update(nets, plain, 5, batch)

    # by hand: the same real slab and low-resolution volume (same draws), through a copy of the initial D
    rng = torch.Generator().manual_seed(7)
    torch.randn(2, cfg.latent_dim, generator=rng)
    G, D = nets["G"], copy.deepcopy(nets["D"])
    starts = G.selector.random_starts(2, generator=rng)
    x = batch["image"]
    x_slab = G.selector.select_real(x, starts).requires_grad_(True)
    x_low = F.interpolate(x, scale_factor=1 / cfg.lowres_factor, mode="trilinear", align_corners=False)
    x_low.requires_grad_(True)
    logits, _ = D(x_slab, G.selector.position(starts), x_low)
    penalty = r1_penalty(logits, [x_slab, x_low])
    names, params = zip(*D.named_parameters())
    grads = torch.autograd.grad(penalty, params, allow_unused=True)  # e.g. the last bias: no effect on ∇ₓD
    grads = {k: torch.zeros_like(p) if g is None else g for k, p, g in zip(names, params, grads)}

    for k in before:
        extra = after_r1[k] - after_plain[k]  # = −3 · ∂R1/∂θ
        assert torch.allclose(extra, -3.0 * grads[k], rtol=1e-3, atol=1e-6), k
        if "weight" in k:  # the penalty reaches every weight of D^H and D^L
            assert grads[k].abs().max() > 1e-6, k
        assert torch.equal(skipped[k], plain5[k]), k  # an iteration that does not regularise: the plain step
    assert float(losses["r1"]) == pytest.approx(2 * float(penalty.detach()), rel=1e-4)  # logged × r1_every


def test_r1_settings_are_validated():
    from medgen.core.errors import UsageError

    with pytest.raises(UsageError, match="r1_gamma"):
        HAGANHParams(r1_gamma=-1.0).validate()
    with pytest.raises(UsageError, match="r1_every"):
        HAGANHParams(r1_every=0).validate()
