"""Exponential moving average (EMA) of the generator's weights, used for sampling.

Averaging the generator over the last few hundred/thousand updates removes
much of the iteration-to-iteration jitter of GAN training (e.g. Karras et al.,
StyleGAN; Yazıcı et al., ICLR 2019) at the cost of one extra copy of G and one
``lerp`` per step. The EMA generator is never trained; it is what
``generate``/``encode`` load by default.

Warm-up: the decay used at step ``t`` (number of updates so far) is
``min(decay, (1 + t) / (10 + t))``, so early on the average follows the fast
changing weights closely (decay 0.1 at t = 0, 0.9 at t = 80, 0.99 at t = 890)
instead of remembering the random initialisation for thousands of steps.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def ema_decay_at(step: int, decay: float) -> float:
    """The warmed-up decay for update number ``step`` (0-based)."""
    return min(decay, (1.0 + step) / (10.0 + step))


class EMA:
    """An EMA copy of ``model`` (parameters averaged, buffers copied)."""

    def __init__(self, model: nn.Module, decay: float = 0.999) -> None:
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Blend ``model``'s current weights in: ema ← d·ema + (1 − d)·model."""
        d = ema_decay_at(step, self.decay)
        for p_ema, p in zip(self.model.parameters(), model.parameters()):
            p_ema.lerp_(p.detach(), 1.0 - d)
        for b_ema, b in zip(self.model.buffers(), model.buffers()):
            b_ema.copy_(b)
