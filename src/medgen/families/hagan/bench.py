"""Speed and memory measurements: seconds per training iteration or per generated volume.

Each configuration is measured in a fresh Python process (:func:`run_isolated`),
so the peak memory reported belongs to that configuration alone:

* CPU: the process's peak resident set size (:func:`peak_rss_mb`), which
  includes the Python interpreter and imported libraries (~0.3 GB);
* CUDA: ``torch.cuda.max_memory_allocated`` (tensor memory; the caching
  allocator's reserve and the CUDA context are not counted).

Times are the median over ``repeats`` runs after ``warmup`` runs.

* ``generate``: one call of :meth:`medgen.families.hagan.Generator.generate`,
  the code path of ``medgen generate`` (z → G^A → G^H, whole or chunked, into
  a preallocated float32 array on the host), under ``torch.inference_mode``;
  writing files is not included. The G^A share is timed separately once.
* ``train``: the real training loop, :func:`medgen.training.loop.train`, on a
  synthetic data set of random volumes in a temporary folder, with the per-
  iteration times that the trainer itself logs to ``metrics.csv``
  (``log_every=1``). One iteration is the four updates
  (D, G, E^H, E^G), the EMA update and data loading. Writing checkpoints is
  not part of an iteration and is switched off in the measuring process.
"""

from __future__ import annotations

import statistics
import sys
import time
from typing import Any

from medgen.families.bench import check_common, child_main, dispatch
from medgen.core.measure import cpu_model, machine_info, peak_rss_mb, run_module, sync  # noqa: F401  (re-exported)

KINDS = ("train", "generate")


def check_request(
    kind: str, preset: str, size: int, batch: int = 1, warmup: int = 1, repeats: int = 1, device: str = "cpu"
) -> None:
    """Raise UsageError (one line) for a request that cannot be measured."""
    from medgen.families.hagan import get_preset

    check_common(kind, KINDS, batch, warmup, repeats, device)
    get_preset(preset, size)


def _result(kind: str, cfg, preset: str, device: str, seconds: list[float], warmup: int, **extra: Any) -> dict[str, Any]:
    from medgen.families.hagan import count_parameters

    counts = count_parameters(cfg)
    out: dict[str, Any] = {
        "benchmark": kind,
        "preset": preset,
        "size": cfg.size,
        "device": device,
        "seconds_median": statistics.median(seconds),
        "seconds": seconds,
        "warmup": warmup,
        "repeats": len(seconds),
    }
    out.update(extra)
    out["params"] = counts
    out["params_total"] = counts["all"]
    out["memory_measure"] = "cuda_max_allocated" if device.startswith("cuda") else "cpu_peak_rss"
    out["machine"] = machine_info(device)
    return out


def measure_generate(
    preset: str = "paper",
    size: int = 128,
    chunk: int | None = None,
    batch: int = 1,
    device: str = "cpu",
    warmup: int = 1,
    repeats: int = 3,
    seed: int = 0,
) -> dict[str, Any]:
    """Seconds per generated batch of ``batch`` volumes and peak memory, in this process."""
    import numpy as np
    import torch

    from medgen.families.hagan.model import build
    from medgen.inference.generate import check_chunk, latent_codes

    check_request("generate", preset, size, batch, warmup, repeats, device)
    model = build(preset, size, seed=seed, device=torch.device(device), encoder=False)
    cfg, g = model.config, model.generator
    chunk = check_chunk(chunk, cfg.lowres_size)
    z = torch.from_numpy(latent_codes(batch, cfg.latent_dim, seed)).to(device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    s = cfg.size
    out = np.empty((batch, s, s, s), dtype=np.float32)
    out_view = torch.from_numpy(out).unsqueeze(1)  # the host array medgen generate writes into
    times = []
    for r in range(warmup + repeats):
        sync(device)
        t0 = time.perf_counter()
        with torch.inference_mode():
            g.generate(z, None, chunk, out=out_view)
        sync(device)
        if r >= warmup:
            times.append(time.perf_counter() - t0)
    with torch.inference_mode():  # the G^A share, timed once
        sync(device)
        t0 = time.perf_counter()
        g.features(z)
        sync(device)
        t_common = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else peak_rss_mb()
    return _result(
        "generate", cfg, preset, device, times, warmup,
        batch=batch, chunk=chunk, precision="fp32", stage_seconds={"G^A": t_common},
        seconds_per_volume=statistics.median(times) / batch, peak_memory_mb=peak,
    )


def measure_train(
    preset: str = "paper",
    size: int = 128,
    batch: int = 2,
    device: str = "cpu",
    warmup: int = 1,
    repeats: int = 3,
    precision: str = "auto",
    slab_fraction: float | None = None,
    recipe: str | None = None,
) -> dict[str, Any]:
    """Seconds per training iteration and peak memory of the real training loop, in this process.

    ``slab_fraction``: depth share of the training slab, replacing the preset's
    (paper 1/8); 1.0 trains G^H, D^H and E^H on the whole volume, i.e. without
    the amortisation (None: the preset's). ``recipe``: one of the family's recipes, ``"paper"`` for the
    paper's method (zero-padded slab, no minibatch std), ``"ct"`` for medgen's CT settings (D's windows
    in the units of medgen's default CT preprocessing; its R1 penalty runs every 16th iteration, so the
    median of a few iterations leaves it out); None for medgen's defaults.
    """
    from medgen.core.errors import UsageError
    from medgen.families.bench import train_iteration_seconds
    from medgen.families.hagan import get_preset
    from medgen.families.hagan.config import DEFAULT_CT_INFO, options_from_data
    from medgen.families.hagan.train import RECIPES

    check_request("train", preset, size, batch, warmup, repeats, device)
    if recipe is not None and recipe not in RECIPES:
        raise UsageError(f"--recipe {recipe}: family 'hagan' has recipes: {', '.join(RECIPES)}")
    settings = RECIPES[recipe] if recipe is not None else {}
    cfg = get_preset(preset, size, slab_fraction=slab_fraction,
                     **options_from_data(DEFAULT_CT_INFO, dict(settings.get("model", {}))))
    times, peak, used = train_iteration_seconds("hagan", cfg.to_dict(), preset, batch, device, warmup, repeats, precision,
                                                hparams=dict(settings.get("hparams", {})))
    return _result("train", cfg, preset, device, times, warmup, batch=batch, precision=used, peak_memory_mb=peak,
                   slab_fraction=cfg.slab_fraction, recipe=recipe or "default", slab_context=cfg.slab_context,
                   minibatch_std=cfg.minibatch_std)


def measure(kind: str, **kwargs: Any) -> dict[str, Any]:
    """Run benchmark ``kind`` (train or generate) in this process."""
    if kind == "generate" and kwargs.pop("recipe", None) is not None:
        from medgen.core.errors import UsageError

        raise UsageError("--recipe applies to bench train (generation is the same under every recipe)")
    return dispatch(kind, kwargs, measure_train, measure_generate, generate_only=("chunk",))


def run_isolated(kind: str, timeout: float | None = None, max_rss_mb: float | None = None,
                 **kwargs: Any) -> dict[str, Any]:
    """Run :func:`measure` in a fresh Python process and return its result
    (:func:`medgen.core.measure.run_module`: ``timeout``, ``max_rss_mb``, RunFailed on failure)."""
    return run_module("medgen.families.hagan.bench", {"kind": kind, **kwargs}, f"benchmark {kind} {kwargs}",
                      timeout=timeout, max_rss_mb=max_rss_mb)


def describe(r: dict[str, Any]) -> str:
    """One human-readable line for a result."""
    m = r["machine"]
    mem = "peak CUDA allocated" if r["memory_measure"] == "cuda_max_allocated" else "peak RSS"
    what = f"{r['benchmark']} {r['preset']} {r['size']}³ batch {r['batch']}"
    if r["benchmark"] == "generate":
        what += f", chunk {r['chunk']}" if r.get("chunk") else ", unchunked"
        speed = f"{r['seconds_per_volume']:.3f} s/volume (G^A {r['stage_seconds']['G^A']:.3f} s)"
    else:
        speed = f"{r['seconds_median']:.3f} s/iteration ({r['precision']})"
        if r.get("recipe", "default") != "default":
            what += f", {r['recipe']} recipe"
    return (
        f"{what}: {speed}, median of {r['repeats']} after {r['warmup']} warm-up; "
        f"{mem} {r['peak_memory_mb']:.0f} MiB; {r['params_total'] / 1e6:.2f}M parameters "
        f"(G {r['params']['G'] / 1e6:.2f}M); {m['device_name']}, {m['threads']} threads, torch {m['torch']}"
    )


if __name__ == "__main__":
    sys.exit(child_main(measure, sys.argv[1:]))
