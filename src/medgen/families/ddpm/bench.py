"""Speed and memory of the DDPM family: seconds per training iteration, seconds per generated volume.

* ``train``: the real training loop on random volumes (:func:`medgen.families.bench.train_iteration_seconds`):
  one denoising update of the UNet plus the EMA update and data loading.
* ``generate``: one volume made by the reverse process with ``steps`` DDIM steps (``sampler
  ddpm``: all training timesteps) under ``torch.no_grad``, the code path of ``medgen
  generate``; writing files is not included. Sampling time grows linearly with the steps.

Each configuration runs in a fresh Python process (:func:`run_isolated`), so the peak memory
reported is that configuration's alone. Times are medians over ``repeats`` runs after
``warmup`` runs.

    medgen bench generate --family ddpm --preset small --size 64 --steps 50
    medgen bench train --family ddpm --preset tiny --size 32 --batch 4
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
SAMPLING_OPTIONS = ("steps", "sampler")  # options of medgen bench generate for this family


def check_request(kind: str, preset: str, size: int, batch: int = 1, warmup: int = 1, repeats: int = 1,
                  device: str = "cpu") -> None:
    """Raise UsageError (one line) for a request that cannot be measured."""
    from medgen.families.ddpm.config import model_config

    check_common(kind, KINDS, batch, warmup, repeats, device)
    model_config(preset, size)


def _result(kind: str, cfg, preset: str, device: str, seconds: list[float], warmup: int, **extra: Any) -> dict[str, Any]:
    from medgen.families.ddpm.train import build_unet

    params = {"unet": sum(p.numel() for p in build_unet(cfg).parameters())}
    return result_record("ddpm", kind, cfg.size, preset, device, seconds, warmup, params, **extra)


def measure_train(preset: str = "small", size: int = 32, batch: int = 2, device: str = "cpu", warmup: int = 1,
                  repeats: int = 3, precision: str = "auto") -> dict[str, Any]:
    """Seconds per training iteration and peak memory of the real training loop, in this process."""
    from medgen.families.ddpm.config import model_config

    check_request("train", preset, size, batch, warmup, repeats, device)
    cfg = model_config(preset, size)
    times, peak, used = train_iteration_seconds("ddpm", cfg.to_dict(), preset, batch, device, warmup, repeats, precision)
    return _result("train", cfg, preset, device, times, warmup, batch=batch, precision=used, peak_memory_mb=peak)


def measure_generate(preset: str = "small", size: int = 32, batch: int = 1, device: str = "cpu", warmup: int = 1,
                     repeats: int = 3, steps: int | None = None, sampler: str = "ddim", seed: int = 0) -> dict[str, Any]:
    """Seconds per generated volume (``steps`` denoising steps) and peak memory, in this process."""
    import torch

    from medgen.families.ddpm.model import build
    from medgen.families.ddpm.sample import check_sampling

    check_request("generate", preset, size, batch, warmup, repeats, device)
    model = build(preset, size, seed=seed, device=torch.device(device))
    steps = check_sampling(model.config, sampler, steps, 1.0, 0.0)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    times = []
    for r in range(warmup + repeats):
        sync(device)
        t0 = time.perf_counter()
        model.generate(batch, seed=seed, sampler=sampler, steps=steps)
        sync(device)
        if r >= warmup:
            times.append(time.perf_counter() - t0)
    return _result("generate", model.config, preset, device, times, warmup, batch=batch, sampler=sampler, steps=steps,
                   precision="fp32", seconds_per_volume=statistics.median(times) / batch,
                   seconds_per_step=statistics.median(times) / batch / steps, peak_memory_mb=peak_memory_mb(device))


def measure(kind: str, **kwargs: Any) -> dict[str, Any]:
    """Run benchmark ``kind`` (train or generate) in this process."""
    return dispatch(kind, kwargs, measure_train, measure_generate, generate_only=SAMPLING_OPTIONS,
                    refused={"chunk": "--chunk applies to HA-GAN's G^H; the DDPM UNet runs on whole volumes"})


def run_isolated(kind: str, timeout: float | None = None, max_rss_mb: float | None = None, **kwargs: Any) -> dict[str, Any]:
    """Run :func:`measure` in a fresh Python process and return its result."""
    return run_module("medgen.families.ddpm.bench", {"kind": kind, **kwargs}, f"benchmark ddpm {kind} {kwargs}",
                      timeout=timeout, max_rss_mb=max_rss_mb)


def describe(r: dict[str, Any]) -> str:
    """One human-readable line for a result."""
    m = r["machine"]
    mem = "peak CUDA allocated" if r["memory_measure"] == "cuda_max_allocated" else "peak RSS"
    what = f"ddpm {r['benchmark']} {r['preset']} {r['size']}³ batch {r['batch']}"
    if r["benchmark"] == "generate":
        speed = (f"{r['seconds_per_volume']:.3f} s/volume with {r['steps']} {r['sampler']} steps "
                 f"({r['seconds_per_step'] * 1e3:.1f} ms/step)")
    else:
        speed = f"{r['seconds_median']:.3f} s/iteration ({r['precision']})"
    return (f"{what}: {speed}, median of {r['repeats']} after {r['warmup']} warm-up; {mem} {r['peak_memory_mb']:.0f} MiB; "
            f"{r['params_total'] / 1e6:.2f}M parameters; {m['device_name']}, {m['threads']} threads, torch {m['torch']}")


if __name__ == "__main__":
    sys.exit(child_main(measure, sys.argv[1:]))
