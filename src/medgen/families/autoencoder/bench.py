"""Speed and memory of the autoencoder family: seconds per training iteration, seconds per volume at inference.

* ``train``: the real training loop on random volumes (:func:`medgen.families.bench.train_iteration_seconds`):
  one Adam update of the autoencoder and data loading (there is no EMA). ``--recipe vae`` times the VAE.
* ``generate``: the inference of one volume. The plain AE (the default) does not sample: what is timed is
  ``reconstruct`` (encode, then decode), what anomaly scoring runs per volume. The VAE (``recipe="vae"``,
  from Python; ``medgen bench`` takes recipes for ``train`` only) is timed decoding prior samples
  (``generate``).

Each configuration runs in a fresh Python process (:func:`run_isolated`), so its peak memory is its own.
Times are medians over ``repeats`` runs after ``warmup`` runs.

    medgen bench train --family autoencoder --preset base --size 64 --batch 2
    medgen bench train --family autoencoder --preset base --size 128 --recipe vae --device cuda
    medgen bench generate --family autoencoder --preset base --size 128
"""

from __future__ import annotations

import statistics
import sys
import time
from typing import Any

from medgen.core.measure import run_module, sync
from medgen.families.bench import (
    check_common,
    child_main,
    dispatch,
    peak_memory_mb,
    result_record,
    train_iteration_seconds,
)

KINDS = ("train", "generate")
NAME = "autoencoder"


def _config(preset: str, size: int, recipe: str | None):
    from medgen.core.errors import UsageError
    from medgen.families.autoencoder.config import RECIPES, model_config

    if recipe is not None and recipe not in RECIPES:
        raise UsageError(f"--recipe {recipe}: family {NAME!r} has recipes: {', '.join(RECIPES)}")
    return model_config(preset, size, **(RECIPES[recipe]["model"] if recipe else {}))


def check_request(kind: str, preset: str, size: int, batch: int = 1, warmup: int = 1, repeats: int = 1,
                  device: str = "cpu", recipe: str | None = None) -> None:
    """Raise UsageError (one line) for a request that cannot be measured."""
    check_common(kind, KINDS, batch, warmup, repeats, device)
    _config(preset, size, recipe)


def params(cfg) -> dict[str, int]:
    import torch

    from medgen.families.autoencoder.networks import build_network

    with torch.device("meta"):
        net = build_network(cfg)
    return {"autoencoder": sum(p.numel() for p in net.parameters())}


def measure_train(preset: str = "tiny", size: int = 32, batch: int = 2, device: str = "cpu", warmup: int = 1,
                  repeats: int = 3, precision: str = "auto", recipe: str | None = None) -> dict[str, Any]:
    """Seconds per training iteration and peak memory of the real training loop, in this process."""
    check_request("train", preset, size, batch, warmup, repeats, device, recipe)
    cfg = _config(preset, size, recipe)
    times, peak, used = train_iteration_seconds(NAME, cfg.to_dict(), preset, batch, device, warmup, repeats, precision)
    return result_record(NAME, "train", cfg.size, preset, device, times, warmup, params(cfg), batch=batch,
                         precision=used, peak_memory_mb=peak, variational=cfg.variational, recipe=recipe or "default")


def measure_generate(preset: str = "tiny", size: int = 32, batch: int = 1, device: str = "cpu", warmup: int = 1,
                     repeats: int = 3, seed: int = 0, recipe: str | None = None) -> dict[str, Any]:
    """Seconds per volume at inference (AE: reconstruction of random volumes; VAE: decoding prior samples) and
    peak memory, in this process."""
    import numpy as np
    import torch

    from medgen.families.autoencoder.model import build

    check_request("generate", preset, size, batch, warmup, repeats, device, recipe)
    cfg = _config(preset, size, recipe)
    model = build(preset, size, seed=seed, device=torch.device(device), variational=cfg.variational)
    if cfg.variational:
        def run() -> Any:
            return model.generate(batch, seed=seed, batch_size=batch)
    else:
        x = np.random.default_rng(seed).uniform(-1, 1, (batch, size, size, size)).astype(np.float32)

        def run() -> Any:
            return model.reconstruct(x, batch_size=batch)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    times = []
    for r in range(warmup + repeats):
        sync(device)
        t0 = time.perf_counter()
        run()
        sync(device)
        if r >= warmup:
            times.append(time.perf_counter() - t0)
    return result_record(NAME, "generate", size, preset, device, times, warmup, params(cfg), batch=batch,
                         precision="fp32", seconds_per_volume=statistics.median(times) / batch,
                         peak_memory_mb=peak_memory_mb(device), variational=cfg.variational,
                         operation="generate" if cfg.variational else "reconstruct")


def measure(kind: str, **kwargs: Any) -> dict[str, Any]:
    """Run benchmark ``kind`` (train or generate) in this process."""
    return dispatch(kind, kwargs, measure_train, measure_generate,
                    refused={"chunk": "--chunk applies to HA-GAN's G^H and the latent-diffusion decoder; the "
                                      "autoencoder works on whole volumes"})


def run_isolated(kind: str, timeout: float | None = None, max_rss_mb: float | None = None, **kwargs: Any) -> dict[str, Any]:
    """Run :func:`measure` in a fresh Python process and return its result."""
    return run_module("medgen.families.autoencoder.bench", {"kind": kind, **kwargs}, f"benchmark {NAME} {kind} {kwargs}",
                      timeout=timeout, max_rss_mb=max_rss_mb)


def describe(r: dict[str, Any]) -> str:
    """One human-readable line for a result."""
    m = r["machine"]
    mem = "peak CUDA allocated" if r["memory_measure"] == "cuda_max_allocated" else "peak RSS"
    kind = "VAE" if r.get("variational") else "AE"
    what = f"{r['family']} ({kind}) {r['benchmark']} {r['preset']} {r['size']}³ batch {r['batch']}"
    if r["benchmark"] == "generate":
        speed = f"{r['seconds_per_volume']:.3f} s/volume ({r.get('operation', 'generate')})"
    else:
        speed = f"{r['seconds_median']:.3f} s/iteration ({r['precision']})"
    return (f"{what}: {speed}, median of {r['repeats']} after {r['warmup']} warm-up; {mem} {r['peak_memory_mb']:.0f} MiB; "
            f"{r['params_total'] / 1e6:.2f}M parameters; {m['device_name']}, {m['threads']} threads, torch {m['torch']}")


if __name__ == "__main__":
    sys.exit(child_main(measure, sys.argv[1:]))
