"""Speed and memory of the KL autoencoder: seconds per training iteration, seconds per decoded volume.

* ``train``: the real training loop on random volumes (:func:`medgen.families.bench.train_iteration_seconds`),
  with the adversarial terms on from the first iteration (the steady-state cost).
* ``generate``: decoding one volume from random latents, the second half of the ``ldm``
  family's ``medgen generate``; ``chunk`` decodes that many latent slices at a time
  (:mod:`medgen.families.ldm_autoencoder.decode`), which bounds the memory of large volumes.

Each configuration runs in a fresh Python process (:func:`run_isolated`), so its peak memory
is its own. Times are medians over ``repeats`` runs after ``warmup`` runs.

    medgen bench generate --family ldm-autoencoder --preset tiny --size 256 --chunk 8
    medgen bench train --family ldm-autoencoder --preset tiny --size 64 --batch 2
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
NAME = "ldm-autoencoder"


def check_request(kind: str, preset: str, size: int, batch: int = 1, warmup: int = 1, repeats: int = 1,
                  device: str = "cpu") -> None:
    """Raise UsageError (one line) for a request that cannot be measured."""
    from medgen.families.ldm_autoencoder.config import model_config

    check_common(kind, KINDS, batch, warmup, repeats, device)
    model_config(preset, size)


def params(cfg) -> dict[str, int]:
    from medgen.families.ldm_autoencoder.train import build_autoencoder, build_discriminator

    return {"autoencoder": sum(p.numel() for p in build_autoencoder(cfg).parameters()),
            "discriminator": sum(p.numel() for p in build_discriminator(cfg).parameters())}


def measure_train(preset: str = "tiny", size: int = 32, batch: int = 2, device: str = "cpu", warmup: int = 1,
                  repeats: int = 3, precision: str = "auto") -> dict[str, Any]:
    """Seconds per training iteration (adversarial terms on) and peak memory, in this process."""
    from medgen.families.ldm_autoencoder.config import model_config

    check_request("train", preset, size, batch, warmup, repeats, device)
    cfg = model_config(preset, size)
    times, peak, used = train_iteration_seconds(NAME, cfg.to_dict(), preset, batch, device, warmup, repeats, precision,
                                                hparams={"adv_start": 0})
    return result_record(NAME, "train", cfg.size, preset, device, times, warmup, params(cfg), batch=batch,
                         precision=used, peak_memory_mb=peak)


def measure_generate(preset: str = "tiny", size: int = 32, batch: int = 1, device: str = "cpu", warmup: int = 1,
                     repeats: int = 3, chunk: int | None = None, seed: int = 0) -> dict[str, Any]:
    """Seconds per volume decoded from random latents (``chunk`` latent slices at a time) and peak memory."""
    import torch

    from medgen.families.ldm_autoencoder.model import build

    check_request("generate", preset, size, batch, warmup, repeats, device)
    model = build(preset, size, seed=seed, device=torch.device(device))
    z = torch.randn((batch, *model.config.latent_shape), generator=torch.Generator().manual_seed(seed))
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    times = []
    for r in range(warmup + repeats):
        sync(device)
        t0 = time.perf_counter()
        model.decode(z, chunk=chunk)
        sync(device)
        if r >= warmup:
            times.append(time.perf_counter() - t0)
    return result_record(NAME, "generate", size, preset, device, times, warmup, params(model.config), batch=batch,
                         chunk=chunk, precision="fp32", seconds_per_volume=statistics.median(times) / batch,
                         peak_memory_mb=peak_memory_mb(device))


def measure(kind: str, **kwargs: Any) -> dict[str, Any]:
    """Run benchmark ``kind`` (train or generate) in this process."""
    return dispatch(kind, kwargs, measure_train, measure_generate, generate_only=("chunk",))


def run_isolated(kind: str, timeout: float | None = None, max_rss_mb: float | None = None, **kwargs: Any) -> dict[str, Any]:
    """Run :func:`measure` in a fresh Python process and return its result."""
    return run_module("medgen.families.ldm_autoencoder.bench", {"kind": kind, **kwargs}, f"benchmark {NAME} {kind} {kwargs}",
                      timeout=timeout, max_rss_mb=max_rss_mb)


def describe(r: dict[str, Any]) -> str:
    """One human-readable line for a result."""
    m = r["machine"]
    mem = "peak CUDA allocated" if r["memory_measure"] == "cuda_max_allocated" else "peak RSS"
    what = f"{r['family']} {r['benchmark']} {r['preset']} {r['size']}³ batch {r['batch']}"
    if r["benchmark"] == "generate":
        how = (f"{r['steps']} {r['sampler']} steps of {r['seconds_per_step'] * 1e3:.1f} ms, then "
               if r.get("steps") else "")
        decode = f"{r['seconds_decode']:.3f} s decoding " if r.get("seconds_decode") is not None else "decoding "
        speed = (f"{r['seconds_per_volume']:.3f} s/volume ({how}{decode}"
                 + (f"{r['chunk']} latent slices at a time)" if r.get("chunk") else "whole)"))
    else:
        speed = f"{r['seconds_median']:.3f} s/iteration ({r['precision']})"
    return (f"{what}: {speed}, median of {r['repeats']} after {r['warmup']} warm-up; {mem} {r['peak_memory_mb']:.0f} MiB; "
            f"{r['params_total'] / 1e6:.2f}M parameters; {m['device_name']}, {m['threads']} threads, torch {m['torch']}")


if __name__ == "__main__":
    sys.exit(child_main(measure, sys.argv[1:]))
