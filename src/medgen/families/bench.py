"""What every family's benchmark shares: a throw-away data set and the timing of real training iterations.

A training iteration is timed inside the shared loop (:mod:`medgen.training.loop`), on a
synthetic data set of random volumes in a temporary folder, from the per-iteration rates the
loop itself logs to ``metrics.csv`` (``log_every=1``): the family's updates, the EMA update and
data loading. Writing checkpoints is not part of an iteration and is switched off in the
measuring process. Peak memory: CUDA ``max_memory_allocated``; CPU the process's peak
resident set size (:func:`medgen.core.measure.peak_rss_mb`).
"""

from __future__ import annotations

import csv
import tempfile
from pathlib import Path
from typing import Any

from medgen.core.errors import RunFailed
from medgen.core.fileio import atomic_write_json
from medgen.core.measure import peak_rss_mb
from medgen.core.version import __version__


def synthetic_dataset(root: Path, size: int, n: int, seed: int = 0, labels: int = 0) -> Path:
    """A preprocessed data set of ``n`` random volumes (float16 in [-1, 1]) for timing only;
    with ``labels`` K > 0 a ``label`` column cycling through 0..K-1."""
    import numpy as np

    (root / "volumes").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    lines = ["id,source,orig_shape,orig_spacing,spacing,file" + (",label" if labels else "")]
    for i in range(n):
        v = rng.uniform(-1.0, 1.0, (size, size, size)).astype(np.float16)
        np.save(root / "volumes" / f"r{i}.npy", v)
        lines.append(f"r{i},random,{size}x{size}x{size},1x1x1,1x1x1,volumes/r{i}.npy" + (f",{i % labels}" if labels else ""))
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    atomic_write_json(root / "preprocess.json", {"modality": "ct", "size": size, "hu_window": [-1024.0, 600.0]})
    return root


def check_common(kind: str, kinds: tuple[str, ...], batch: int, warmup: int, repeats: int, device: str) -> None:
    """UsageError (one line) for benchmark settings no family can measure."""
    from medgen.core.errors import UsageError

    if kind not in kinds:
        raise UsageError(f"benchmark {kind!r}: choose {' or '.join(kinds)}")
    if batch < 1 or repeats < 1 or warmup < 0:
        raise UsageError(f"--batch {batch}, --repeats {repeats}: both must be >= 1, and --warmup {warmup} >= 0")
    if device not in ("cpu", "cuda") and not str(device).startswith("cuda:"):
        raise UsageError(f"--device {device}: choose cpu or cuda")


def peak_memory_mb(device: str) -> float:
    """CUDA: peak allocated tensor memory; CPU: this process's peak resident set size."""
    if str(device).startswith("cuda"):
        import torch

        return torch.cuda.max_memory_allocated() / 2**20
    return peak_rss_mb()


def train_iteration_seconds(
    family: str,
    model: dict[str, Any],
    preset: str,
    batch: int,
    device: str,
    warmup: int,
    repeats: int,
    precision: str = "auto",
    hparams: dict[str, Any] | None = None,
    iters: int | None = None,
) -> tuple[list[float], float, str]:
    """(seconds of each timed iteration, peak memory in MiB, precision used) of ``family`` with
    architecture ``model`` (a config dict), in this process (module docstring).

    ``iters``: run this many iterations instead of ``warmup + repeats`` and return the seconds of every
    one of them, warm-up included, for a caller that chooses which to keep (e.g. per phase of a schedule)."""
    from medgen.families import registry
    from medgen.training import checkpoint as ckpt_io
    from medgen.training.runconfig import RunConfig

    num_classes = int(model.get("num_classes", 0) or 0)
    total = warmup + repeats if iters is None else iters
    # Checkpoints are not part of an iteration: switched off in this (throw-away) process.
    ckpt_io.save_checkpoint = lambda *args, **kwargs: None
    with tempfile.TemporaryDirectory(prefix="medgen-bench-") as tmp:
        data = synthetic_dataset(Path(tmp) / "data", int(model["size"]), batch, labels=num_classes)
        run_cfg = RunConfig(
            data=str(data), model=dict(model), family=family, hparams=dict(hparams or {}), preset=preset,
            iters=total, batch=batch, device=device, precision=precision, log_every=1, sample_every=0,
            ckpt_every=10**9, split_fractions=(1.0, 0.0, 0.0), medgen_version=__version__,
            label_column="label" if num_classes else None,
        )
        registry.train(run_cfg, Path(tmp) / "run", progress=False)
        with open(Path(tmp) / "run" / "metrics.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
    if len(rows) != total:
        raise RunFailed(f"training benchmark logged {len(rows)} iterations, expected {total}")
    times = [1.0 / float(r["it_per_s"]) for r in (rows if iters is not None else rows[warmup:])]
    used = precision if precision != "auto" else ("bf16" if str(device).startswith("cuda") else "fp32")
    return times, peak_memory_mb(device), used


def result_record(family: str, kind: str, size: int, preset: str, device: str, seconds: list[float], warmup: int,
                  params: dict[str, int], params_total: int | None = None, **extra: Any) -> dict[str, Any]:
    """The JSON-ready record of one measurement: settings, times (median and each), ``extra``, parameters,
    the memory measure used and the machine. ``params_total`` defaults to the sum of ``params``."""
    import statistics

    from medgen.core.measure import machine_info

    out: dict[str, Any] = {
        "family": family, "benchmark": kind, "preset": preset, "size": size, "device": device,
        "seconds_median": statistics.median(seconds), "seconds": seconds, "warmup": warmup, "repeats": len(seconds),
    }
    out.update(extra)
    out["params"] = params
    out["params_total"] = sum(params.values()) if params_total is None else params_total
    out["memory_measure"] = "cuda_max_allocated" if str(device).startswith("cuda") else "cpu_peak_rss"
    out["machine"] = machine_info(device)
    return out


def dispatch(kind: str, kwargs: dict[str, Any], measure_train, measure_generate,
             generate_only: tuple[str, ...] = (), refused: dict[str, str] | None = None) -> dict[str, Any]:
    """Run benchmark ``kind`` in this process: set ``threads``, then ``measure_train(**kwargs)`` or
    ``measure_generate(**kwargs)``.

    ``generate_only``: options that apply to ``generate`` alone (UsageError when set for ``train``);
    ``refused``: option → message, for options this family has no use for (UsageError when set).
    """
    from medgen.core.errors import UsageError

    threads = kwargs.pop("threads", None)
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    for name, message in (refused or {}).items():
        if kwargs.pop(name, None):
            raise UsageError(message)
    if kind == "generate":
        kwargs.pop("precision", None)
        return measure_generate(**kwargs)
    if kind == "train":
        given = [name for name in generate_only if kwargs.pop(name, None) is not None]
        if given:
            raise UsageError(f"--{given[0]} applies to bench generate")
        return measure_train(**kwargs)
    raise UsageError(f"benchmark {kind!r}: choose train or generate")


def child_main(measure, argv: list[str]) -> int:
    """Entry point of a benchmark module run as ``python -m MODULE '<json spec>'``: prints one JSON line."""
    import json
    import sys

    spec = json.loads(argv[0])
    kind = spec.pop("kind")
    sys.stdout.write(json.dumps(measure(kind, **spec)) + "\n")
    return 0
