#!/usr/bin/env python
"""What the voxel-level anomaly metrics cost on a large test set: wall time and peak memory (RSS).

``medgen anomaly`` and ``medgen experiment anomaly`` pool every voxel of every test volume into one voxel AUROC
and one voxel AUPRC. This times :func:`medgen.metrics.scores.voxel_auroc` + ``voxel_auprc`` (one sort of the
pooled float32 scores) against scikit-learn's ``roc_auc_score`` + ``average_precision_score`` on the same pooled
arrays (what the two functions called before), each in a fresh process, on ``--volumes`` random float32 maps
of ``--size``³ with lesion voxels at the rate of the 128³ nodule test set (about 3 in 100 000), raised by 0.3 so
the numbers are not trivial. The two must agree (printed); the child's peak RSS includes the maps themselves.

Usage::

    python benchmarks/voxel_metrics.py                           # 32 volumes of 128³ (67 million voxels)
    python benchmarks/voxel_metrics.py --volumes 8 --size 64

Writes ``benchmarks/results/voxel-metrics-<date>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"

_CHILD = r"""
import json, sys, time
import numpy as np
from medgen.core.measure import peak_rss_mb
from medgen.metrics import scores
n, size, how = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
rng = np.random.default_rng(0)
maps, masks = [], []
for _ in range(n):
    m = rng.random((size,) * 3, dtype=np.float32)
    k = rng.random((size,) * 3) < 3e-5
    m[k] += 0.3
    maps.append(m)
    masks.append(k)
t = time.perf_counter()
if how == "medgen":
    a, p = scores.voxel_auroc(maps, masks), scores.voxel_auprc(maps, masks)
else:
    s, y = scores.flatten_maps(maps), scores.flatten_maps(masks)
    a, p = scores.auroc(s, y), scores.auprc(s, y)
seconds = time.perf_counter() - t
print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_rss_mb(),
                  "voxel_auroc": a, "voxel_auprc": p}))
"""


def measure(how: str, volumes: int, size: int) -> dict:
    out = subprocess.run([sys.executable, "-c", _CHILD, str(volumes), str(size), how], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def machine() -> dict:
    import numpy
    import sklearn

    from medgen.core.measure import machine_info

    return {**machine_info("cpu"), "numpy": numpy.__version__, "scikit-learn": sklearn.__version__}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--volumes", type=int, default=32)
    ap.add_argument("--size", type=int, default=128)
    args = ap.parse_args()
    rows = []
    for label, how in (("scikit-learn on the pooled arrays (before)", "sklearn"), ("one sort (after)", "medgen"),
                       ("scikit-learn, again", "sklearn"), ("one sort, again", "medgen")):
        r = measure(how, args.volumes, args.size)
        rows.append({"code": label, **r})
        print(f"{label}: {r['seconds']:.1f} s, peak RSS {r['peak_rss_mb']:.0f} MB, voxel AUROC {r['voxel_auroc']:.12f}, "
              f"voxel AUPRC {r['voxel_auprc']:.12f}", flush=True)
    day = datetime.date.today().isoformat()
    info = machine()
    command = f"python benchmarks/voxel_metrics.py --volumes {args.volumes} --size {args.size}"
    record = {"command": command, "machine": info, "volumes": args.volumes, "size": args.size, "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"voxel-metrics-{day}.json").write_text(json.dumps(record, indent=1) + "\n")
    voxels = args.volumes * args.size**3
    lines = [f"# Voxel AUROC + AUPRC of {args.volumes} maps of {args.size}³ ({voxels / 1e6:.0f} million voxels), CPU",
             "", f"`{command}`: each row a fresh process, in this order; {info}.", "",
             "| code | seconds | peak RSS (MB) | voxel AUROC | voxel AUPRC |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {r['code']} | {r['seconds']:.1f} | {r['peak_rss_mb']:.0f} | {r['voxel_auroc']:.12f} | "
              f"{r['voxel_auprc']:.12f} |" for r in rows]
    (RESULTS / f"voxel-metrics-{day}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
