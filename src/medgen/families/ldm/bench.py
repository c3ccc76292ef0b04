"""Speed and memory of the latent diffusion family: seconds per training iteration, seconds per generated volume.

* ``train``: the real training loop on random volumes (:func:`medgen.families.bench.train_iteration_seconds`):
  encoding the batch with the frozen autoencoder, one denoising update of the latent UNet, the EMA update.
* ``generate``: one volume: ``steps`` DDIM steps in latent space, then decoding (``chunk``
  latent slices at a time when given; see :mod:`medgen.families.ldm_autoencoder.decode`).

Random weights (the UNet of ``preset`` on an autoencoder of the preset of the same name);
each configuration runs in a fresh Python process, so the peak memory is its own. Medians
over ``repeats`` runs after ``warmup`` runs; the latent steps and the decoding are also
timed apart (``seconds_per_step``, ``seconds_decode``), so that the time of another number
of steps follows.

    medgen bench generate --family ldm --preset tiny --size 256 --steps 50 --chunk 8
    medgen bench train --family ldm --preset tiny --size 64 --batch 2
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
from medgen.families.ldm_autoencoder.bench import describe

KINDS = ("train", "generate")
SAMPLING_OPTIONS = ("steps", "sampler")  # options of medgen bench generate for this family
NAME = "ldm"

__all__ = ["check_request", "describe", "measure", "run_isolated"]


def _config(preset: str, size: int):
    from medgen.families.ldm.config import model_config
    from medgen.families.ldm_autoencoder.config import model_config as autoencoder_config

    return model_config(preset, size, autoencoder=autoencoder_config(preset, size).to_dict())


def check_request(kind: str, preset: str, size: int, batch: int = 1, warmup: int = 1, repeats: int = 1,
                  device: str = "cpu") -> None:
    """Raise UsageError (one line) for a request that cannot be measured."""
    check_common(kind, KINDS, batch, warmup, repeats, device)
    _config(preset, size)


def _params(cfg) -> dict[str, int]:
    from medgen.families.ddpm.train import build_unet
    from medgen.families.ldm_autoencoder.train import build_autoencoder

    return {"unet": sum(p.numel() for p in build_unet(cfg.diffusion()).parameters()),
            "autoencoder": sum(p.numel() for p in build_autoencoder(cfg.autoencoder_config()).parameters())}


def measure_train(preset: str = "tiny", size: int = 32, batch: int = 2, device: str = "cpu", warmup: int = 1,
                  repeats: int = 3, precision: str = "auto") -> dict[str, Any]:
    """Seconds per training iteration and peak memory of the real training loop, in this process."""
    check_request("train", preset, size, batch, warmup, repeats, device)
    cfg = _config(preset, size)
    times, peak, used = train_iteration_seconds(NAME, cfg.to_dict(), preset, batch, device, warmup, repeats, precision)
    return result_record(NAME, "train", size, preset, device, times, warmup, _params(cfg), batch=batch,
                         precision=used, peak_memory_mb=peak)


def measure_generate(preset: str = "tiny", size: int = 32, batch: int = 1, device: str = "cpu", warmup: int = 1,
                     repeats: int = 3, steps: int | None = None, sampler: str = "ddim", chunk: int | None = None,
                     seed: int = 0) -> dict[str, Any]:
    """Seconds per generated volume (latent steps, then decoding) and peak memory, in this process."""
    import torch

    from medgen.families.ddpm.sample import check_sampling, reverse_process
    from medgen.families.ldm.model import build

    check_request("generate", preset, size, batch, warmup, repeats, device)
    dev = torch.device(device)
    model = build(preset, size, seed=seed, device=dev, autoencoder_preset=preset)
    dcfg = model.config.diffusion()
    steps = check_sampling(dcfg, sampler, steps, 1.0, 0.0)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    sample_s, decode_s = [], []
    for r in range(warmup + repeats):
        t_sample = t_decode = 0.0
        for i in range(batch):  # what LDMModel.generate does per volume, with its two halves timed apart
            sync(device)
            t0 = time.perf_counter()
            z = reverse_process(model.unet, dcfg, i, seed, sampler=sampler, steps=steps, device=dev)
            sync(device)
            t1 = time.perf_counter()
            model.decode(model.codec.unscale(z).cpu(), chunk=chunk)
            sync(device)
            t_sample, t_decode = t_sample + t1 - t0, t_decode + time.perf_counter() - t1
        if r >= warmup:
            sample_s.append(t_sample)
            decode_s.append(t_decode)
    times = [a + b for a, b in zip(sample_s, decode_s)]
    return result_record(NAME, "generate", size, preset, device, times, warmup, _params(model.config), batch=batch,
                  sampler=sampler, steps=steps, chunk=chunk, precision="fp32",
                  seconds_per_volume=statistics.median(times) / batch,
                  seconds_per_step=statistics.median(sample_s) / batch / steps,
                  seconds_decode=statistics.median(decode_s) / batch, peak_memory_mb=peak_memory_mb(device))


def measure(kind: str, **kwargs: Any) -> dict[str, Any]:
    """Run benchmark ``kind`` (train or generate) in this process."""
    return dispatch(kind, kwargs, measure_train, measure_generate, generate_only=("chunk", *SAMPLING_OPTIONS))


def run_isolated(kind: str, timeout: float | None = None, max_rss_mb: float | None = None, **kwargs: Any) -> dict[str, Any]:
    """Run :func:`measure` in a fresh Python process and return its result."""
    return run_module("medgen.families.ldm.bench", {"kind": kind, **kwargs}, f"benchmark {NAME} {kind} {kwargs}",
                      timeout=timeout, max_rss_mb=max_rss_mb)


if __name__ == "__main__":
    sys.exit(child_main(measure, sys.argv[1:]))
