"""Regularisers of a discriminator shared by the GAN families.

R1 (Mescheder et al. 2018, "Which training methods for GANs do actually converge?"):
γ/2 · E‖∇ₓD(x)‖² on real data, applied lazily (StyleGAN2, Karras et al. 2020): every
``every``-th iteration with its weight multiplied by ``every``. MONAI has no R1 penalty
(its adversarial losses cover the least-squares, BCE and hinge criteria only), so it is here.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def r1_penalty(real_logits: torch.Tensor, reals: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """Mean over the batch of ‖∇ₓD(x)‖² (R1 without γ/2), summed over D's real inputs when it has several (HA-GAN:
    the high-resolution slab and the low-resolution volume). ``real_logits`` [B] was computed from ``reals``
    (tensors that require their gradient, batch first) with the graph kept; the gradient's own graph is kept
    (``create_graph``) so that the penalty can be minimised over D's weights."""
    inputs = [reals] if isinstance(reals, torch.Tensor) else list(reals)
    grads = torch.autograd.grad(real_logits.float().sum(), inputs, create_graph=True)
    # summed over every input's samples, divided by the logits' batch: an input may hold the first samples only
    return sum(g.float().square().sum() for g in grads) / real_logits.shape[0]


def lazy_r1_weight(gamma: float, every: int, iteration: int) -> float:
    """The weight of the R1 penalty in D's loss at ``iteration``: γ/2 · every on the iterations that regularise
    (``iteration % every == 0``), 0 on the others and whenever γ = 0."""
    if gamma <= 0 or iteration % every:
        return 0.0
    return gamma / 2 * every
