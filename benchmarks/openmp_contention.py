#!/usr/bin/env python
"""Training speed on a CPU that another busy process shares, against the OpenMP runtime's wait settings.

PyTorch's CPU wheels for Linux run their intra-op threads on GNU OpenMP (libgomp), whose threads spin
while they wait for each other (``GOMP_SPINCOUNT``, 300,000 spins by default) before they sleep. With as
many torch threads as cores and one more busy process, a spinning thread holds a core that the thread it
waits for needs. This measures ``medgen train`` with the demo's settings (thorax-CT phantoms at 64³,
``tiny``, batch 4, ``--recipe ct``, the encoder every 4th iteration) in each setting of the wait, alone
and beside a busy Python loop (``while True: pass``), the settings taking turns (A B C … A B C …) so that
a drift in the machine's speed hits all of them. The speed of a run is its iterations after the first
``--skip`` over their time, from the run's own ``metrics.csv``.

Usage::

    python benchmarks/openmp_contention.py                     # 2 rounds; 200 iterations alone, 60 beside
    python benchmarks/openmp_contention.py --rounds 3 --settings default GOMP_SPINCOUNT=10000

Writes ``benchmarks/results/openmp-contention-cpu-<date>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from encoder_every import iterations_per_second, phantom_data  # noqa: E402  (the same data and speed)

RESULTS = Path(__file__).resolve().parent / "results"
SETTINGS = ["default", "GOMP_SPINCOUNT=10000", "OMP_WAIT_POLICY=PASSIVE", "OMP_NUM_THREADS=1"]
WAIT_KEYS = ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY", "OMP_NUM_THREADS")


def train(data: Path, run: Path, iters: int, setting: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in WAIT_KEYS}
    if setting != "default":
        key, value = setting.split("=", 1)
        env[key] = value
    subprocess.run([sys.executable, "-m", "medgen", "train", str(data), "--out", str(run), "--preset", "tiny",
                    "--recipe", "ct", "--hparam", "encoder_every=4", "--iters", str(iters), "--batch", "4",
                    "--sample-every", "0", "--ckpt-every", str(10 * iters), "--log-every", "5", "--no-progress"],
                   check=True, stdout=subprocess.DEVNULL, env=env)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--settings", nargs="+", default=SETTINGS,
                   help=f"'default' or NAME=VALUE of the environment (default: {' '.join(SETTINGS)})")
    p.add_argument("--rounds", type=int, default=2, help="runs of each setting in each context (default 2)")
    p.add_argument("--iters-alone", type=int, default=200, help="iterations of a run alone (default 200)")
    p.add_argument("--iters-busy", type=int, default=60, help="iterations of a run beside the busy process (default 60)")
    p.add_argument("--skip", type=int, default=10, help="first iterations not counted (default 10)")
    args = p.parse_args()

    import torch

    import medgen

    speeds: dict[str, dict[str, list[float]]] = {c: {s: [] for s in args.settings} for c in ("alone", "busy")}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        phantom_data(work, 64)
        for r in range(args.rounds):
            for context, iters in (("alone", args.iters_alone), ("busy", args.iters_busy)):
                for setting in args.settings:
                    busy = (subprocess.Popen([sys.executable, "-c", "while True: pass"]) if context == "busy"
                            else None)
                    try:
                        run = work / f"run-{context}-{len(speeds[context][setting])}-{args.settings.index(setting)}"
                        train(work / "data", run, iters, setting)
                    finally:
                        if busy is not None:
                            busy.kill()
                            busy.wait()
                    speeds[context][setting].append(iterations_per_second(run, args.skip))
                    print(f"round {r + 1}: {context}, {setting}: {speeds[context][setting][-1]:.2f} it/s",
                          file=sys.stderr)

    machine = {"cpu": platform.machine(), "cores": os.cpu_count(), "threads": torch.get_num_threads(),
               "python": platform.python_version(), "torch": torch.__version__, "medgen": medgen.__version__}
    command = "python benchmarks/openmp_contention.py " + " ".join(sys.argv[1:])
    base = args.settings[0]
    rows = []
    for setting in args.settings:
        row = {"setting": setting}
        for context in ("alone", "busy"):
            s, b = speeds[context][setting], speeds[context][base]
            row[context] = {"it_per_s": s, "median_it_per_s": statistics.median(s),
                            "ratio_to_first": [x / y for x, y in zip(s, b)]}
        rows.append(row)
    stamp = datetime.date.today().isoformat()
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"openmp-contention-cpu-{stamp}"
    stem.with_suffix(".json").write_text(json.dumps({"command": command, "machine": machine, "args": vars(args),
                                                     "rows": rows}, indent=2) + "\n")
    lines = ["# HA-GAN training speed on a CPU shared with a busy process, against OpenMP's wait settings "
             "(the demo's training: 64³ `tiny`, batch 4, `--recipe ct`, encoder every 4th iteration)", "",
             f"`{command}`; {machine}", "",
             f"| setting | alone: it/s (median of {args.rounds}) | ÷ {base}, run by run | beside a busy process: "
             f"it/s | ÷ {base}, run by run |", "| --- | --- | --- | --- | --- |"]
    for row in rows:
        a, b = row["alone"], row["busy"]
        lines.append(f"| {row['setting']} | {a['median_it_per_s']:.2f} | "
                     f"{', '.join(f'{x:.2f}' for x in a['ratio_to_first'])} | {b['median_it_per_s']:.2f} | "
                     f"{', '.join(f'{x:.2f}' for x in b['ratio_to_first'])} |")
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
