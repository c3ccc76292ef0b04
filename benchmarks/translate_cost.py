#!/usr/bin/env python
"""What ``medgen translate`` costs on a large CT scan: wall time and peak memory (RSS) of the whole command.

A ``unet`` run of the given preset is made at the training size (one iteration on toy pairs: cost does not
depend on the weights), a CT scan of ``--scan-size``³ voxels is written as NIfTI, and
``medgen translate RUN scan.nii.gz --out DIR [--window W]`` runs in a fresh process per window setting;
its peak RSS is the child's maximum resident set size (``getrusage``). The target of the image-to-image
issue: a 256³ volume on a CPU within 3 GB.

Usage::

    python benchmarks/translate_cost.py                                   # 256³, preset small, windows 32 and 64
    python benchmarks/translate_cost.py --scan-size 128 --windows 0 32    # 0: the whole volume at once

Writes ``benchmarks/results/translate-cost-<device>-<date>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent


def make_run(work: Path, preset: str, size: int) -> Path:
    sys.path.insert(0, str(ROOT / "tests"))
    from toy_volumes import make_dataset

    data = make_dataset(work / "pairs", n=2, size=size, degraded=True)
    run = work / "run"
    subprocess.run([sys.executable, "-m", "medgen", "train", str(data), "--family", "unet", "--preset", preset,
                    "--task", "denoise", "--out", str(run), "--iters", "1", "--batch", "1", "--split-fractions",
                    "1,0,0", "--sample-every", "0", "--no-progress"], check=True)
    return run


def make_scan(path: Path, n: int) -> None:
    import nibabel as nib
    import numpy as np

    rng = np.random.default_rng(0)
    g = np.linspace(-1, 1, n, dtype=np.float32)
    x, y = np.meshgrid(g, g, indexing="ij")
    body = ((x / 0.8) ** 2 + (y / 0.6) ** 2 < 1)[..., None]
    hu = np.where(body, 40.0, -1000.0) + rng.normal(0, 20, (n, n, n)).astype(np.float32)
    nib.save(nib.Nifti1Image(np.clip(hu, -1024, 3000).astype(np.int16), np.diag([1.0, 1.0, 1.0, 1.0])), path)


_PEAK = ("import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:]).returncode; "
         "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, rc)")


def translate(run: Path, scan: Path, out: Path, window: int) -> dict:
    """One ``medgen translate`` in a fresh process, under a wrapper that reports that process's peak RSS."""
    cmd = [sys.executable, "-m", "medgen", "translate", str(run), str(scan), "--out", str(out), "--no-progress",
           "--device", "cpu", "--window", str(window)]
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _PEAK, *cmd], capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    peak_kb, rc = (int(v) for v in proc.stdout.strip().splitlines()[-1].split())
    if rc != 0:
        return {"window": window, "error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    return {"window": window, "seconds": round(seconds, 1), "peak_rss_mb": round(peak_kb / 1024, 1)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scan-size", type=int, default=256)
    p.add_argument("--train-size", type=int, default=32)
    p.add_argument("--preset", default="small")
    p.add_argument("--windows", type=int, nargs="+", default=[64, 32])
    args = p.parse_args()
    import torch

    import medgen

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        run = make_run(work, args.preset, args.train_size)
        scan = work / "scan.nii.gz"
        make_scan(scan, args.scan_size)
        for w in args.windows:
            rows.append(translate(run, scan, work / f"out-{w}", w))
            print(rows[-1], flush=True)
    date = datetime.date.today().isoformat()
    record = {"date": date, "scan_size": args.scan_size, "train_size": args.train_size, "preset": args.preset,
              "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                          "python": platform.python_version(), "torch": torch.__version__,
                          "medgen": medgen.__version__},
              "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"translate-cost-cpu-{date}"
    stem.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    lines = [f"# medgen translate on a {args.scan_size}³ CT scan (unet `{args.preset}` trained at {args.train_size}³, CPU)",
             "", f"`python benchmarks/translate_cost.py --scan-size {args.scan_size} --train-size {args.train_size} "
             f"--preset {args.preset} --windows {' '.join(map(str, args.windows))}`; {record['machine']}", "",
             "| window | seconds | peak RSS (MB) |", "| --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['window'] or 'whole'} | {r.get('seconds', r.get('error'))} | {r.get('peak_rss_mb', '')} |")
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {stem}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
