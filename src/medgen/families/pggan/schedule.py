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

from collections.abc import Sequence
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


def iterations_within(seconds: float, seconds_per_level: Sequence[float], fade_iters: int, stable_iters: int) -> int:
    """The iterations of the growth schedule (:func:`phase_at`, ``levels = len(seconds_per_level) - 1``) whose
    summed cost fits in ``seconds``, at least 1; an iteration at level k, fading or stable, costs
    ``seconds_per_level[k]`` (e.g. measured by :mod:`.bench`), and past the last stable phase the last level's
    cost goes on. Computed per phase: every phase is a run of iterations of equal cost."""
    if fade_iters < 1 or stable_iters < 1:
        raise ValueError("fade_iters and stable_iters must be at least 1")
    costs = [float(c) for c in seconds_per_level]
    if not costs or min(costs) <= 0:
        raise ValueError(f"seconds_per_level {list(seconds_per_level)}: need at least one value, all > 0")
    # (iterations, cost of each): stable 4³, then every level's fade-in and stable phase together; the last
    # level's run has no end.
    runs: list[tuple[int | None, float]] = [(stable_iters, costs[0])]
    runs += [(fade_iters + stable_iters, c) for c in costs[1:]]
    runs[-1] = (None, runs[-1][1])
    left, done = float(seconds), 0
    for n, cost in runs:
        if n is not None and n * cost <= left:
            left -= n * cost
            done += n
            continue
        done += max(0, int(left // cost))
        break
    return max(1, done)
