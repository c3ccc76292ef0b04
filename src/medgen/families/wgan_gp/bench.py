"""Speed and memory of the WGAN-GP family (and, through :func:`make`, of ``vae-gan``): seconds per training
iteration, seconds per generated volume.

* ``train``: the real training loop on random volumes (:func:`medgen.families.bench.train_iteration_seconds`):
  one iteration is the family's updates (WGAN-GP: ``n_critic`` critic updates and one generator
  update), the EMA update and data loading.
* ``generate``: one batch of volumes made by the generator under ``torch.inference_mode``, the code path
  of ``medgen generate``; writing files is not included.

Each configuration runs in a fresh Python process (:func:`run_isolated`), so the peak memory
reported is that configuration's alone. Times are medians over ``repeats`` runs after ``warmup`` runs.

    medgen bench train --family wgan-gp --preset small --size 64
    medgen bench generate --family wgan-gp --preset paper --size 128
"""

from __future__ import annotations

import statistics
import sys
import time
from types import SimpleNamespace
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
REFUSED = {"chunk": "--chunk applies to HA-GAN's G^H; this family's generator makes whole volumes"}


def make(family: str, module: str) -> SimpleNamespace:
    """The benchmark functions of ``family`` (a registered name; its package's model module builds the generator),
    run in a fresh process as ``python -m module``."""

    def _family():
        from medgen.families import registry

        return registry.get(family)

    def check_request(kind: str, preset: str, size: int, batch: int = 1, warmup: int = 1, repeats: int = 1,
                      device: str = "cpu") -> None:
        """Raise UsageError (one line) for a request that cannot be measured."""
        check_common(kind, KINDS, batch, warmup, repeats, device)
        _family().model_config(preset, size)

    def _params(cfg) -> dict[str, int]:
        import torch

        fam = _family()
        with torch.device("meta"):
            nets = fam.build(cfg, fam.hparams_from_dict({}), torch.device("meta"))
        return {name: sum(p.numel() for p in net.parameters()) for name, net in nets.items()}

    def measure_train(preset: str = "small", size: int = 32, batch: int = 2, device: str = "cpu", warmup: int = 1,
                      repeats: int = 3, precision: str = "auto") -> dict[str, Any]:
        """Seconds per training iteration and peak memory of the real training loop, in this process."""
        check_request("train", preset, size, batch, warmup, repeats, device)
        cfg = _family().model_config(preset, size)
        times, peak, used = train_iteration_seconds(family, cfg.to_dict(), preset, batch, device, warmup, repeats,
                                                    precision)
        return result_record(family, "train", size, preset, device, times, warmup, _params(cfg), batch=batch,
                             precision=used, peak_memory_mb=peak)

    def measure_generate(preset: str = "small", size: int = 32, batch: int = 1, device: str = "cpu", warmup: int = 1,
                         repeats: int = 3, seed: int = 0) -> dict[str, Any]:
        """Seconds per generated batch of ``batch`` volumes and peak memory, in this process."""
        import torch

        check_request("generate", preset, size, batch, warmup, repeats, device)
        model = _family().build_model(preset, size, seed=seed, device=torch.device(device))
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        times = []
        for r in range(warmup + repeats):
            sync(device)
            t0 = time.perf_counter()
            model.generate(batch, seed=seed, batch_size=batch)
            sync(device)
            if r >= warmup:
                times.append(time.perf_counter() - t0)
        params = {"G": sum(p.numel() for p in model.generator.parameters())}
        return result_record(family, "generate", size, preset, device, times, warmup, params, batch=batch,
                             precision="fp32", seconds_per_volume=statistics.median(times) / batch,
                             peak_memory_mb=peak_memory_mb(device))

    def measure(kind: str, **kwargs: Any) -> dict[str, Any]:
        """Run benchmark ``kind`` (train or generate) in this process."""
        return dispatch(kind, kwargs, measure_train, measure_generate, refused=REFUSED)

    def run_isolated(kind: str, timeout: float | None = None, max_rss_mb: float | None = None,
                     **kwargs: Any) -> dict[str, Any]:
        """Run :func:`measure` in a fresh Python process and return its result."""
        return run_module(module, {"kind": kind, **kwargs}, f"benchmark {family} {kind} {kwargs}", timeout=timeout,
                          max_rss_mb=max_rss_mb)

    def describe(r: dict[str, Any]) -> str:
        """One human-readable line for a result."""
        m = r["machine"]
        mem = "peak CUDA allocated" if r["memory_measure"] == "cuda_max_allocated" else "peak RSS"
        what = f"{family} {r['benchmark']} {r['preset']} {r['size']}³ batch {r['batch']}"
        if r["benchmark"] == "generate":
            speed = f"{r['seconds_per_volume']:.3f} s/volume"
        else:
            speed = f"{r['seconds_median']:.3f} s/iteration ({r['precision']})"
        return (f"{what}: {speed}, median of {r['repeats']} after {r['warmup']} warm-up; {mem} "
                f"{r['peak_memory_mb']:.0f} MiB; {r['params_total'] / 1e6:.2f}M parameters; {m['device_name']}, "
                f"{m['threads']} threads, torch {m['torch']}")

    return SimpleNamespace(check_request=check_request, measure_train=measure_train,
                           measure_generate=measure_generate, measure=measure, run_isolated=run_isolated,
                           describe=describe)


_bench = make("wgan-gp", "medgen.families.wgan_gp.bench")
check_request, measure_train, measure_generate = _bench.check_request, _bench.measure_train, _bench.measure_generate
measure, run_isolated, describe = _bench.measure, _bench.run_isolated, _bench.describe


if __name__ == "__main__":
    sys.exit(child_main(measure, sys.argv[1:]))
