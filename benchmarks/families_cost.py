#!/usr/bin/env python
"""What each generator family costs: seconds per training iteration, per generated volume, and peak memory.

For HA-GAN, DDPM and latent diffusion at several sizes, with random weights (speed does not
depend on training): one training iteration (batch 1) and one generated volume. Diffusion
sampling time is measured per denoising step (``--steps``, default 2, timed and divided) and
reported for 50 DDIM steps, the default of ``medgen generate``, and for the 1000 ancestral DDPM
steps; latent diffusion adds the decoding of the volume (in chunks of ``--chunk`` latent slices
from ``--chunk-from`` voxels on). Latent diffusion trains in two stages: the autoencoder
(``ldm-autoencoder``, its own rows) and the latent UNet (``ldm``). Each configuration runs in
a fresh process through the families' ``medgen bench`` modules, stopped past ``--max-rss-mb``
(a configuration that does not fit says so in the table instead of taking the machine down).

Usage::

    python benchmarks/families_cost.py --device cpu                       # about an hour on 2 cores
    python benchmarks/families_cost.py --device cuda --sizes 64 128 256   # on a GPU

Writes ``benchmarks/results/families-cost-<device>-<date>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
CASES = [  # (family, preset): HA-GAN as published; the DDPM UNet of MONAI's 3D tutorials and a smaller one;
    # latent diffusion: the autoencoder and the latent UNet, small and base
    ("hagan", "paper"),
    ("ddpm", "small"),
    ("ddpm", "base"),
    ("ldm-autoencoder", "small"),
    ("ldm", "small"),
    ("ldm-autoencoder", "base"),
    ("ldm", "base"),
]
DIFFUSION = ("ddpm", "ldm")


def measure(family: str, kind: str, preset: str, size: int, device: str, steps: int, timeout: float,
            max_rss_mb: float, chunk: int | None = None, warmup: int = 1) -> dict:
    from medgen.core.errors import RunFailed
    from medgen.families import registry

    bench = registry.get(family).bench
    spec = dict(preset=preset, size=size, batch=1, device=device, warmup=warmup, repeats=1)
    if kind == "generate" and family in DIFFUSION:
        spec["steps"] = steps
    if kind == "generate" and family in ("ldm", "ldm-autoencoder") and chunk:
        spec["chunk"] = chunk
    try:
        return bench.run_isolated(kind, timeout=timeout, max_rss_mb=max_rss_mb if device == "cpu" else None, **spec)
    except RunFailed as exc:  # the message is "benchmark ... {options}: why"
        return {"error": str(exc).rsplit("}: ", 1)[-1]}


def markdown(rows: list[dict], machine: dict, args: argparse.Namespace, date: str) -> str:
    mem = "peak CUDA allocated" if args.device.startswith("cuda") else "peak RSS of a fresh process"
    lines = [
        f"# Cost of the generator families, {args.device} ({date})",
        "",
        f"- Machine: {machine.get('device_name')}; {machine.get('cpu_count')} CPUs, {machine.get('threads')} torch "
        f"threads; {machine.get('platform')}",
        f"- Versions: medgen {machine.get('medgen')}, torch {machine.get('torch')}, Python {machine.get('python')}",
        f"- Command: `python benchmarks/families_cost.py --device {args.device} --sizes "
        f"{' '.join(map(str, args.sizes))} --steps {args.steps} --max-rss-mb {args.max_rss_mb:g}"
        + (f" --cases {args.cases}" if args.cases else "") + (f" --stem {args.stem}" if args.stem else "")
        + f" --chunk {args.chunk} --chunk-from {args.chunk_from}"
        + (f" --kinds {args.kinds}" if args.kinds != "train,generate" else "")
        + (f" --warmup {args.warmup}" if args.warmup != 1 else "") + "`",
        f"- Random weights; batch 1; one timed run after {args.warmup} warm-up run(s); memory: {mem}. Diffusion volumes: the time "
        f"of {args.steps} DDIM steps, per step × 50 (DDIM, `medgen generate`'s default) and × 1000 (DDPM); "
        f"ldm adds decoding, ldm-autoencoder rows are decoding alone (from {args.chunk_from}³ on in chunks of "
        f"{args.chunk} latent slices, exact).",
        *([f"- Rows not measured by this command come from `{args.merge.name}` (its own command and conditions "
            f"are in `{args.merge.with_suffix('.md').name}`)."] if args.merge else []),
        *([f"- {args.note}"] if args.note else []),
        "",
        "| family | preset | size | params (M) | train s/it | train MiB | generate s/volume | generate MiB |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        t, g = r["train"], r["generate"]

        def cell(res: dict, key: str, fmt: str) -> str:
            return ("— (" + res["error"].rsplit("}: ", 1)[-1] + ")") if "error" in res else format(res[key], fmt)

        params = next((x["params_total"] / 1e6 for x in (t, g) if "params_total" in x), float("nan"))
        if "error" in g:
            gen = cell(g, "", "")
        elif r["family"] in DIFFUSION:
            per_step, decode = g["seconds_per_step"], g.get("seconds_decode", 0.0)
            gen = f"{50 * per_step + decode:.2f} (50 DDIM) / {1000 * per_step + decode:.0f} (1000 DDPM)"
            if r["family"] == "ldm":
                gen += f"; decoding {decode:.2f}" + (f" in chunks of {g['chunk']}" if g.get("chunk") else "")
        elif r["family"] == "ldm-autoencoder":
            gen = f"{g['seconds_per_volume']:.2f} (decoding" + (f" in chunks of {g['chunk']})" if g.get("chunk") else ")")
        else:
            gen = f"{g['seconds_per_volume']:.2f}"
        lines.append(
            f"| {r['family']} | {r['preset']} | {r['size']}³ | {params:.2f} | {cell(t, 'seconds_median', '.2f')} | "
            f"{cell(t, 'peak_memory_mb', '.0f')} | {gen} | {cell(g, 'peak_memory_mb', '.0f')} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    p.add_argument("--steps", type=int, default=2, help="diffusion denoising steps timed per volume (default 2)")
    p.add_argument("--chunk", type=int, default=4, help="latent slices decoded at a time from --chunk-from on (default 4)")
    p.add_argument("--chunk-from", type=int, default=256, help="size from which decoding is chunked (default 256)")
    p.add_argument("--stem", default=None, help="file name without suffix (default families-cost-<device>-<date>)")
    p.add_argument("--kinds", default="train,generate", help="what to measure (default train,generate)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs before the timed one (default 1)")
    p.add_argument("--cases", default=None, metavar="F:P,F:P",
                   help="family:preset pairs to measure (default: all of CASES)")
    p.add_argument("--merge", type=Path, default=None, metavar="JSON",
                   help="an earlier run's JSON whose rows (other than the ones measured now) join the table")
    p.add_argument("--timeout", type=float, default=900, help="seconds per configuration (default 900)")
    p.add_argument("--max-rss-mb", type=float, default=16000, help="CPU: stop a configuration past this (default 16000)")
    p.add_argument("--out", type=Path, default=RESULTS, help="folder for the .json/.md (default benchmarks/results)")
    p.add_argument("--note", default="", help="a line about the conditions of the run, written under the settings")
    p.add_argument("--render", type=Path, default=None, metavar="JSON",
                   help="only write the Markdown of an earlier run's JSON (next to it)")
    args = p.parse_args(argv)
    if args.render is not None:
        saved = json.loads(args.render.read_text())
        args.render.with_suffix(".md").write_text(markdown(saved["rows"], saved["machine"], args, saved["date"]))
        return 0
    from medgen.core.measure import machine_info

    date = datetime.date.today().isoformat()
    rows = []
    cases = [tuple(c.split(":")) for c in args.cases.split(",")] if args.cases else CASES
    for size in args.sizes:
        for family, preset in cases:
            row = {"family": family, "preset": preset, "size": size}
            chunk = args.chunk if size >= args.chunk_from else None
            for kind in ("train", "generate"):
                if kind not in args.kinds.split(","):
                    row[kind] = {"error": "not measured"}
                    continue
                row[kind] = measure(family, kind, preset, size, args.device, args.steps, args.timeout, args.max_rss_mb,
                                    chunk, args.warmup)
                print(json.dumps({k: row[k] for k in ("family", "preset", "size")} | {kind: {
                    k: v for k, v in row[kind].items() if k in ("seconds_median", "peak_memory_mb", "error")}}), flush=True)
            rows.append(row)
    if args.merge is not None:
        done = {(r["family"], r["preset"], r["size"]) for r in rows}
        earlier = [r for r in json.loads(args.merge.read_text())["rows"] if (r["family"], r["preset"], r["size"]) not in done]
        order = {c: i for i, c in enumerate(CASES)}
        rows = sorted(earlier + rows, key=lambda r: (r["size"], order.get((r["family"], r["preset"]), 99)))
    machine = machine_info(args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / (args.stem or f"families-cost-{args.device}-{date}")
    stem.with_suffix(".json").write_text(json.dumps({"date": date, "machine": machine, "rows": rows}, indent=1) + "\n")
    stem.with_suffix(".md").write_text(markdown(rows, machine, args, date))
    print(f"wrote {stem}.md and .json")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    sys.exit(main())
