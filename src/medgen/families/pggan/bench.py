"""Speed and memory of the PGGAN family: seconds per training iteration at every level of the growth, and per
generated volume.

* ``train``: the real training loop on random volumes (:func:`medgen.families.bench.train_iteration_seconds`)
  with the growth schedule compressed to fade-ins of one iteration and stable phases of ``warmup + repeats``
  iterations, so that one run goes through every level, 4³ to S³. An iteration's cost grows with the level's
  resolution, so the result has the median seconds of every level's stable phase after its ``warmup``
  iterations (``seconds_per_level``, resolution → seconds) and, as ``seconds``/``seconds_median``, those of the
  last level: the grown network at S³. :func:`.schedule.iterations_within` turns ``seconds_per_level`` into the
  iterations of a training budget.
* ``generate``: one batch of volumes made by the grown generator, as :mod:`medgen.families.wgan_gp.bench`.

Each configuration runs in a fresh Python process (:func:`run_isolated`), so the peak memory reported is that
configuration's alone (the whole growth: the last level's, as a rule).

    medgen bench train --family pggan --preset small --size 64
    medgen bench generate --family pggan --preset paper --size 128
"""

from __future__ import annotations

import statistics
import sys
from typing import Any

from medgen.families.bench import child_main, dispatch, result_record, train_iteration_seconds
from medgen.families.pggan.schedule import phase_at
from medgen.families.wgan_gp.bench import KINDS, REFUSED, make  # noqa: F401  (KINDS re-exported)

FAMILY = "pggan"
_bench = make(FAMILY, "medgen.families.pggan.bench")
check_request, measure_generate = _bench.check_request, _bench.measure_generate


def growth_schedule(warmup: int, repeats: int) -> dict[str, int]:
    """The compressed schedule timed: fade-ins of one iteration, stable phases of ``warmup + repeats``."""
    return {"fade_iters": 1, "stable_iters": warmup + repeats}


def level_times(times: list[float], levels: int, warmup: int, repeats: int) -> list[list[float]]:
    """The seconds of every level's stable-phase iterations after its first ``warmup``, level 0 first, from the
    seconds of every iteration of a run under :func:`growth_schedule`."""
    hp = growth_schedule(warmup, repeats)
    stable: list[list[float]] = [[] for _ in range(levels + 1)]
    for t, seconds in enumerate(times):
        ph = phase_at(t, levels, hp["fade_iters"], hp["stable_iters"])
        if not ph.fading and t - ph.start >= warmup:
            stable[ph.level].append(seconds)
    return stable


def measure_train(preset: str = "small", size: int = 32, batch: int = 2, device: str = "cpu", warmup: int = 1,
                  repeats: int = 3, precision: str = "auto") -> dict[str, Any]:
    """Seconds per training iteration at every level, and peak memory, of the real training loop in this
    process (module docstring)."""
    import torch

    from medgen.families import registry

    check_request("train", preset, size, batch, warmup, repeats, device)
    fam = registry.get(FAMILY)
    cfg = fam.model_config(preset, size)
    hp = growth_schedule(warmup, repeats)
    total = hp["stable_iters"] + cfg.levels * (hp["fade_iters"] + hp["stable_iters"])
    times, peak, used = train_iteration_seconds(FAMILY, cfg.to_dict(), preset, batch, device, warmup, repeats,
                                                precision, hparams=hp, iters=total)
    per_level = level_times(times, cfg.levels, warmup, repeats)
    with torch.device("meta"):
        nets = fam.build(cfg, fam.hparams_from_dict({}), torch.device("meta"))
    params = {name: sum(p.numel() for p in net.parameters()) for name, net in nets.items()}
    return result_record(
        FAMILY, "train", size, preset, device, per_level[-1], warmup, params, batch=batch, precision=used,
        seconds_per_level={cfg.resolution(k): statistics.median(s) for k, s in enumerate(per_level)},
        peak_memory_mb=peak,
    )


def measure(kind: str, **kwargs: Any) -> dict[str, Any]:
    """Run benchmark ``kind`` (train or generate) in this process."""
    return dispatch(kind, kwargs, measure_train, measure_generate, refused=REFUSED)


def run_isolated(kind: str, timeout: float | None = None, max_rss_mb: float | None = None,
                 **kwargs: Any) -> dict[str, Any]:
    """Run :func:`measure` in a fresh Python process and return its result (``seconds_per_level`` keyed by
    int resolutions again, as :func:`measure_train` returns it; JSON has string keys)."""
    r = _bench.run_isolated(kind, timeout=timeout, max_rss_mb=max_rss_mb, **kwargs)
    if "seconds_per_level" in r:
        r["seconds_per_level"] = {int(k): v for k, v in r["seconds_per_level"].items()}
    return r


def describe(r: dict[str, Any]) -> str:
    """One human-readable line for a result; for ``train`` the seconds per iteration at every level follow."""
    line = _bench.describe(r)
    per_level = r.get("seconds_per_level")
    if not per_level:
        return line
    levels = sorted((int(k), v) for k, v in per_level.items())
    return line + "; per level: " + ", ".join(f"{res}³ {s:.3f} s" for res, s in levels)


if __name__ == "__main__":
    sys.exit(child_main(measure, sys.argv[1:]))
