#!/usr/bin/env python
"""What training HA-GAN's encoder less often buys: training iterations per second of ``medgen train`` with
``--hparam encoder_every=K`` against every iteration (K = 1, the paper), side by side in one run.

The setting is the demo's: thorax-CT phantoms at 64³ (``medgen phantoms`` + ``medgen preprocess``), preset
``tiny``, batch 4, CPU. Each setting trains a fresh run for ``--iters`` iterations in its own process, the
settings taking turns (A B A B …) so that a drift in the machine's speed hits both; the speed of a run is
its iterations after the first ``--skip`` divided by their time, from the run's own ``metrics.csv``
(``it_per_s`` of each logging interval, weighted by its iterations). The GAN is the same either way (the
encoder never feeds back into G or D; ``tests/test_training.py`` checks it bitwise), so the ratio is what
the setting is for: more GAN iterations in a fixed time.

Usage::

    python benchmarks/encoder_every.py                        # K = 1 and 4, 3 rounds of 300 iterations
    python benchmarks/encoder_every.py --every 1 2 4 8 --rounds 2

Writes ``benchmarks/results/encoder-every-<device>-<date>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def run_medgen(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "medgen", *args], check=True, stdout=subprocess.DEVNULL)


def phantom_data(work: Path, size: int) -> Path:
    """16 thorax-CT phantoms at ``size``³, preprocessed into ``work/data`` (the benchmarks' training set)."""
    run_medgen("phantoms", "--kind", "thorax-ct", "--n", "16", "--size", str(size), "--seed", "0",
               "--out", str(work / "raw"))
    run_medgen("preprocess", str(work / "raw"), str(work / "data"), "--modality", "ct", "--size", str(size))
    return work / "data"


def iterations_per_second(run: Path, skip: int) -> float:
    with open(run / "metrics.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if int(r["iteration"]) > skip]
    its = [int(r["iteration"]) for r in rows]
    steps = [b - a for a, b in zip([skip] + its[:-1], its)]
    seconds = sum(n / float(r["it_per_s"]) for n, r in zip(steps, rows))
    return sum(steps) / seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--every", type=int, nargs="+", default=[1, 4], help="encoder_every values (default 1 4)")
    p.add_argument("--iters", type=int, default=300, help="iterations per run (default 300)")
    p.add_argument("--skip", type=int, default=50, help="first iterations not counted (default 50)")
    p.add_argument("--rounds", type=int, default=3, help="runs of each setting (default 3)")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--batch", type=int, default=4)
    args = p.parse_args()

    import torch

    import medgen

    speeds: dict[int, list[float]] = {k: [] for k in args.every}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        phantom_data(work, args.size)
        for r in range(args.rounds):
            for k in args.every:
                run = work / f"run-{k}-{r}"
                run_medgen("train", str(work / "data"), "--preset", args.preset, "--out", str(run), "--iters",
                       str(args.iters), "--batch", str(args.batch), "--sample-every", "0", "--ckpt-every",
                       str(10 * args.iters), "--log-every", "25", "--hparam", f"encoder_every={k}", "--no-progress")
                speeds[k].append(iterations_per_second(run, args.skip))
                print(f"round {r + 1}: encoder_every={k}: {speeds[k][-1]:.2f} it/s", file=sys.stderr)

    base = args.every[0]
    machine = {"cpu": platform.machine(), "cores": os.cpu_count(), "threads": torch.get_num_threads(),
               "python": platform.python_version(), "torch": torch.__version__, "medgen": medgen.__version__}
    command = "python benchmarks/encoder_every.py " + " ".join(sys.argv[1:])
    rows = []
    for k in args.every:
        ratios = [s / b for s, b in zip(speeds[k], speeds[base])]
        rows.append({"encoder_every": k, "it_per_s": speeds[k], "median_it_per_s": statistics.median(speeds[k]),
                     "ratio_to_first": ratios, "median_ratio": statistics.median(ratios)})
    stamp = datetime.date.today().isoformat()
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"encoder-every-cpu-{stamp}"
    stem.with_suffix(".json").write_text(json.dumps({"command": command, "machine": machine, "args": vars(args),
                                                     "rows": rows}, indent=2) + "\n")
    lines = [f"# HA-GAN training speed against the encoder's update frequency ({args.size}³ `{args.preset}`, "
             f"batch {args.batch}, CPU)", "", f"`{command}`; {machine}", "",
             f"| encoder_every | it/s (median of {args.rounds}) | runs | speed ÷ encoder_every={base} (run by run) |",
             "| --- | --- | --- | --- |"]
    for row in rows:
        lines.append(f"| {row['encoder_every']} | {row['median_it_per_s']:.2f} | "
                     f"{', '.join(f'{s:.2f}' for s in row['it_per_s'])} | "
                     f"{row['median_ratio']:.2f} ({', '.join(f'{x:.2f}' for x in row['ratio_to_first'])}) |")
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
