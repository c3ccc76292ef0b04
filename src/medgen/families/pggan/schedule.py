"""The growth schedule: iteration → (level, α), from the iteration index only (exact resume).

With L = log2(S / 4) levels after 4³, ``fade`` = ``fade_iters`` and ``stable`` = ``stable_iters``
(0-based iterations t)::

    phase          iterations                                   level   α
    stable 0       [0, stable)                                  0       1
    fade k         [s_k, s_k + fade),  s_k = stable + (k-1)·(fade + stable)
                                                                k       (t − s_k) / fade
    stable k       [s_k + fade, s_k + fade + stable)            k       1
    (after stable L the last level stays, α = 1, to the end of the run)

α rises linearly from 0 (the first iteration of a fade, where the new block gets no weight yet, as in the
authors' code) towards 1; the last level is reached at ``stable + L·fade + (L − 1)·stable``. Karras et al.
measure phases in real images shown (800k each in the paper); here in iterations of one global batch.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Phase:
    """Where iteration ``iteration`` is: ``level``, ``alpha``, ``fading`` (inside a fade-in) and ``start``
    (the first iteration of this phase)."""

    iteration: int
    level: int
    alpha: float
    fading: bool
    start: int

    @property
    def resolution(self) -> int:
        return 4 * 2**self.level

    @property
    def is_start(self) -> bool:
        """True at the first iteration of a phase after the first (where the optimisers are reset)."""
        return self.iteration == self.start and self.iteration > 0


def phase_at(iteration: int, levels: int, fade_iters: int, stable_iters: int) -> Phase:
    """The :class:`Phase` of 0-based ``iteration`` (module docstring)."""
    if iteration < 0:
        raise ValueError(f"iteration {iteration}: must be >= 0")
    if fade_iters < 1 or stable_iters < 1:
        raise ValueError("fade_iters and stable_iters must be at least 1")
    t = iteration
    if t < stable_iters or levels == 0:
        return Phase(t, 0, 1.0, False, 0)
    period = fade_iters + stable_iters
    k, within = divmod(t - stable_iters, period)
    level = k + 1
    if level > levels:  # past the last stable phase: the last level to the end
        return Phase(t, levels, 1.0, False, stable_iters + (levels - 1) * period + fade_iters)
    start = stable_iters + k * period
    if within < fade_iters:
        return Phase(t, level, within / fade_iters, True, start)
    return Phase(t, level, 1.0, False, start + fade_iters)


def full_resolution_at(levels: int, fade_iters: int, stable_iters: int) -> int:
    """The first iteration trained at the last level with α = 1."""
    if levels == 0:
        return 0
    return stable_iters + levels * fade_iters + (levels - 1) * stable_iters
