#!/usr/bin/env python
"""Speed and memory of HA-GAN (paper preset) over volume sizes, like the paper's memory table.

For each size: one training iteration (batch 2 on CPU, 4 on CUDA) and the
generation of one volume, unchunked and with G^H in depth chunks. Each
configuration runs in a fresh process via ``medgen.families.hagan.bench`` (see that module
for what is timed and how memory is measured).

Usage::

    python benchmarks/sweep.py --device cpu                  # ~10 min on 2 cores
    python benchmarks/sweep.py --device cuda                 # needs a GPU
    python benchmarks/sweep.py --device cpu --sizes 32 64    # a subset

Writes ``benchmarks/results/<device>-<date>.json`` and ``.md``.
On CPU, training at 256³ is skipped by default (one iteration takes minutes on
2 cores); pass ``--train-256`` to include it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
# The paper's memory test (MB), for the same four sizes.
PAPER_MEMORY_MB = {32: 2573, 64: 2665, 128: 3167, 256: 5961}


def plan(device: str, sizes: list[int], train_256: bool, repeats: int, train: bool = True,
         generate: bool = True) -> list[dict]:
    """The configurations to measure, cheapest first (512³ and beyond: chunked generation only)."""
    batch = 4 if device == "cuda" else 2
    out = []
    for s in sizes:
        # fewer repeats where one run is long on a CPU
        r = repeats if (device == "cuda" or s <= 64) else max(1, repeats - 1)
        chunk = max(1, s // 4 // 2)  # half the feature map's depth per chunk (32 at 256³)
        if train and s < 512 and (s != 256 or device == "cuda" or train_256):
            out.append(dict(kind="train", size=s, batch=batch, warmup=1, repeats=r))
        if generate and s < 512:
            out.append(dict(kind="generate", size=s, batch=1, chunk=None, warmup=1, repeats=r))
        if generate:
            out.append(dict(kind="generate", size=s, batch=1, chunk=chunk, warmup=1, repeats=r))
    return out


def markdown(result: dict) -> str:
    m = result["machine"]
    dev = m["device"]
    mem = "peak CUDA allocated" if dev.startswith("cuda") else "peak RSS"
    lines = [
        f"# HA-GAN speed and memory, {dev} ({result['date']})",
        "",
        f"- Machine: {m['device_name']}; {m['cpu_count']} CPUs, {m['threads']} torch threads; "
        f"{m['platform']}",
        f"- Versions: medgen {m['medgen']}, torch {m['torch']}, Python {m['python']}"
        + (f", CUDA {m['cuda']}" if m.get("cuda") else ""),
        f"- Command: `{result['command']}`",
        "- Paper preset (the published architecture), float32"
        + (" (training: bf16 autocast, as `medgen train` on CUDA)" if dev.startswith("cuda") else "")
        + "; each configuration in a fresh process; time = median after 1 warm-up run.",
        f"- Memory = {mem} of the measuring process"
        + (" (includes the Python interpreter and libraries, ~0.3 GB)" if not dev.startswith("cuda") else "")
        + ". The paper's figures (MB, its own test on a GPU) are given for scale.",
        f"- 1-minute load average during the sweep: {result['load_average']} "
        f"(above {m['cpu_count']}, other processes shared the CPU and the times are inflated).",
        "",
        "| size | params | train s/it (batch) | train memory MB | generate s/vol | generate memory MB "
        "| chunked s/vol (chunk) | chunked memory MB | paper memory MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    by = {}
    for r in result["rows"]:
        by.setdefault(r["size"], {})[(r["kind"], bool(r.get("chunk")))] = r
    for s in sorted(by):
        t, g, c = by[s].get(("train", False)), by[s].get(("generate", False)), by[s].get(("generate", True))
        anyr = t or g or c

        def cell(r, key, fmt):
            if r is None:
                return "skipped"
            if "error" in r:
                return "failed: " + r["error"][:60]
            return fmt.format(r[key])

        lines.append(
            "| {s}³ | {p:.2f}M | {ts} | {tm} | {gs} | {gm} | {cs} | {cm} | {pm} |".format(
                s=s,
                p=anyr["params_total"] / 1e6 if anyr and "params_total" in anyr else float("nan"),
                ts=cell(t, "seconds_median", "{:.2f}") + (f" ({t['batch']})" if t and "error" not in t else ""),
                tm=cell(t, "peak_memory_mb", "{:.0f}"),
                gs=cell(g, "seconds_per_volume", "{:.2f}"),
                gm=cell(g, "peak_memory_mb", "{:.0f}"),
                cs=cell(c, "seconds_per_volume", "{:.2f}") + (f" ({c['chunk']})" if c and "error" not in c else ""),
                cm=cell(c, "peak_memory_mb", "{:.0f}"),
                pm=PAPER_MEMORY_MB.get(s, "—"),
            )
        )
    if not any(r["kind"] == "train" and r["size"] == 256 for r in result["rows"]) and 256 in by:
        lines += ["", "Training at 256³ was not measured in this sweep (skipped on CPU: minutes per iteration)."]
    lines += [
        "",
        "Chunk = feature-map slices per G^H chunk (×4 output slices); chunked output equals unchunked "
        "to ≤ 1e-5 (tested).",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128, 256])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--train-256", action="store_true", help="also time training at 256³ on CPU")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                    help="training precision (auto: bf16 autocast on CUDA, fp32 on CPU)")
    ap.add_argument("--train-only", action="store_true", help="time training only")
    ap.add_argument("--generate-only", action="store_true", help="time generation only")
    ap.add_argument("--tag", default="", help="added to the output file names (e.g. fp32)")
    args = ap.parse_args()

    sys.path.insert(0, str(ROOT / "src"))
    from medgen.families.hagan.bench import machine_info, run_isolated  # noqa: E402
    from medgen.core.errors import MedgenError

    rows, loads = [], []
    for spec in plan(args.device, args.sizes, args.train_256, args.repeats, train=not args.generate_only,
                     generate=not args.train_only):
        print(f"sweep: {spec}", file=sys.stderr, flush=True)
        kind = spec.pop("kind")
        try:
            extra = {"precision": args.precision} if kind == "train" else {}
            r = run_isolated(kind, preset="paper", device=args.device, threads=args.threads, **extra, **spec)
        except MedgenError as exc:  # e.g. out of memory: record it and go on
            r = {"benchmark": kind, "size": spec["size"], "chunk": spec.get("chunk"), "error": str(exc)}
        r["kind"] = kind
        loads.append(os.getloadavg()[0])
        rows.append(r)
        print(json.dumps({k: r.get(k) for k in ("kind", "size", "chunk", "seconds_median", "peak_memory_mb", "error")}),
              file=sys.stderr, flush=True)

    date = datetime.date.today().isoformat()
    result = {
        "date": date,
        "machine": machine_info(args.device),
        "command": "python benchmarks/sweep.py " + " ".join(sys.argv[1:]),
        "load_average": f"{min(loads):.1f}–{max(loads):.1f}",
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / (f"{args.device}-{date}" + (f"-{args.tag}" if args.tag else ""))
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
