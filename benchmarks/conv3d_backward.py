#!/usr/bin/env python
"""What computing the CPU weight gradient of a 3D convolution as a convolution buys
(:mod:`medgen.families.conv3d`), against PyTorch's own backward pass, side by side in one run.

1. Layers: forward + backward (input, weight and bias gradients) of every kind of convolution in HA-GAN
   ``tiny`` at 64³, batch 4 (the demo), with PyTorch's convolution and with medgen's, taking turns
   (A B A B …); the median of ``--repeats`` timings of each, and their ratio.
2. Training: ``medgen train`` (64³ thorax-CT phantoms, ``tiny``, batch 4, the demo's ``encoder_every=4``)
   for ``--iters`` iterations in a fresh process each, with ``medgen.families.conv3d.ENABLED`` off and on,
   taking turns for ``--rounds`` rounds; the speed is the iterations after the first ``--skip`` over their
   time, from the run's own ``metrics.csv``.

Usage::

    python benchmarks/conv3d_backward.py                 # layers, and 3 rounds of 300 training iterations
    python benchmarks/conv3d_backward.py --rounds 0      # layers only

Writes ``benchmarks/results/conv3d-backward-cpu-<date>.json`` and ``.md``.
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
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
sys.path.insert(0, str(Path(__file__).resolve().parent))

from encoder_every import iterations_per_second, run_medgen  # noqa: E402

# HA-GAN tiny at 64³, batch 4: (where, input shape, out channels, kernel, stride, padding)
LAYERS = [
    ("G^A 3³ conv at 16³", (4, 32, 16, 16, 16), 16, (3, 3, 3), (1, 1, 1), (1, 1, 1)),
    ("G^A 3³ conv at 16³ (last)", (4, 16, 16, 16, 16), 8, (3, 3, 3), (1, 1, 1), (1, 1, 1)),
    ("G^A upsample + conv, sub-pixel form", (4, 64, 8, 8, 8), 256, (2, 2, 2), (1, 1, 1), (1, 1, 1)),
    ("G^H upsample + conv, sub-pixel form", (4, 8, 16, 16, 4), 32, (2, 2, 2), (1, 1, 1), (1, 1, 1)),
    ("D^H first conv (slab, D step)", (8, 1, 64, 64, 8), 8, (4, 4, 2), (2, 2, 2), (1, 1, 0)),
    ("D^H second conv (D step)", (8, 8, 32, 32, 4), 16, (4, 4, 2), (2, 2, 2), (1, 1, 0)),
    ("D^L first conv (D step)", (8, 1, 16, 16, 16), 16, (4, 4, 4), (2, 2, 2), (1, 1, 1)),
    ("E^H first conv (slab)", (4, 1, 64, 64, 8), 4, (4, 4, 4), (2, 2, 2), (1, 1, 1)),
]

TRAIN = """
import sys
import medgen.families.conv3d as conv3d
conv3d.ENABLED = {enabled}
from medgen.cli import main
sys.exit(main({argv!r}))
"""


def time_layer(shape, cout, kernel, stride, padding, enabled: bool, repeats: int) -> float:
    import torch

    import medgen.families.conv3d as conv3d

    torch.manual_seed(0)
    x = torch.randn(*shape, requires_grad=True)
    w = torch.randn(cout, shape[1], *kernel, requires_grad=True)
    b = torch.randn(cout, requires_grad=True)
    g = torch.randn_like(torch.nn.functional.conv3d(x, w, b, stride, padding))
    conv3d.ENABLED = enabled
    try:
        def once() -> None:
            torch.autograd.grad(conv3d.conv3d(x, w, b, stride, padding), (x, w, b), g)
        once()
        start = time.perf_counter()
        for _ in range(repeats):
            once()
        return (time.perf_counter() - start) / repeats
    finally:
        conv3d.ENABLED = True


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=10, help="timings per layer and setting, in turn (default 10)")
    p.add_argument("--iters", type=int, default=300, help="training iterations per run (default 300)")
    p.add_argument("--skip", type=int, default=50, help="first iterations not counted (default 50)")
    p.add_argument("--rounds", type=int, default=3, help="training runs of each setting (default 3; 0: none)")
    args = p.parse_args()

    import torch

    import medgen

    layers = []
    for name, shape, cout, kernel, stride, padding in LAYERS:
        times = {False: [], True: []}
        for _ in range(args.repeats):
            for enabled in (False, True):
                times[enabled].append(time_layer(shape, cout, kernel, stride, padding, enabled, 3))
        ratios = [a / b for a, b in zip(times[False], times[True])]
        layers.append({"layer": name, "input": shape, "out_channels": cout, "kernel": kernel, "stride": stride,
                       "padding": padding, "torch_ms": 1e3 * statistics.median(times[False]),
                       "medgen_ms": 1e3 * statistics.median(times[True]), "speedup": statistics.median(ratios)})
        print(f"{name}: {layers[-1]['torch_ms']:.1f} → {layers[-1]['medgen_ms']:.1f} ms "
              f"({layers[-1]['speedup']:.2f}×)", file=sys.stderr)

    speeds: dict[bool, list[float]] = {False: [], True: []}
    if args.rounds:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            run_medgen("phantoms", "--kind", "thorax-ct", "--n", "16", "--size", "64", "--seed", "0",
                       "--out", str(work / "raw"))
            run_medgen("preprocess", str(work / "raw"), str(work / "data"), "--modality", "ct", "--size", "64")
            for r in range(args.rounds):
                for enabled in (False, True):
                    run = work / f"run-{enabled}-{r}"
                    argv = ["train", str(work / "data"), "--preset", "tiny", "--out", str(run), "--iters",
                            str(args.iters), "--batch", "4", "--sample-every", "0", "--ckpt-every",
                            str(10 * args.iters), "--log-every", "25", "--hparam", "encoder_every=4",
                            "--no-progress"]
                    subprocess.run([sys.executable, "-c", TRAIN.format(enabled=enabled, argv=argv)], check=True,
                                   stdout=subprocess.DEVNULL)
                    speeds[enabled].append(iterations_per_second(run, args.skip))
                    print(f"round {r + 1}: {'medgen' if enabled else 'torch'}: {speeds[enabled][-1]:.2f} it/s",
                          file=sys.stderr)

    from medgen.core.measure import cpu_model

    machine = {"cpu": cpu_model(), "cores": os.cpu_count(),
               "threads": torch.get_num_threads(), "python": platform.python_version(), "torch": torch.__version__,
               "medgen": medgen.__version__}
    command = "python benchmarks/conv3d_backward.py " + " ".join(sys.argv[1:])
    ratios = [b / a for a, b in zip(speeds[False], speeds[True])]
    training = {"torch_it_per_s": speeds[False], "medgen_it_per_s": speeds[True], "speedups": ratios,
                "median_speedup": statistics.median(ratios) if ratios else None}
    stamp = datetime.date.today().isoformat()
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"conv3d-backward-cpu-{stamp}"
    stem.with_suffix(".json").write_text(json.dumps({"command": command, "machine": machine, "args": vars(args),
                                                     "layers": layers, "training": training}, indent=2) + "\n")
    lines = ["# 3D convolution backward on the CPU: PyTorch's against medgen's weight gradient", "",
             f"`{command}`; {machine}", "",
             f"Forward + backward of one layer (HA-GAN `tiny`, 64³, batch 4), median of {args.repeats}, in turn:", "",
             "| layer | input | kernel / stride | PyTorch ms | medgen ms | speed-up |", "| --- | --- | --- | --- | --- | --- |"]
    for row in layers:
        lines.append(f"| {row['layer']} | {'×'.join(map(str, row['input']))} → {row['out_channels']} | "
                     f"{'×'.join(map(str, row['kernel']))} / {'×'.join(map(str, row['stride']))} | "
                     f"{row['torch_ms']:.1f} | {row['medgen_ms']:.1f} | {row['speedup']:.2f}× |")
    if ratios:
        lines += ["", f"Training (`medgen train`, 64³ `tiny`, batch 4, encoder_every=4; {args.iters} iterations, "
                      f"the first {args.skip} not counted; {args.rounds} rounds in turn):", "",
                  "| convolution | it/s, median | runs | speed-up, run by run |", "| --- | --- | --- | --- |",
                  f"| PyTorch's | {statistics.median(speeds[False]):.2f} | "
                  f"{', '.join(f'{s:.2f}' for s in speeds[False])} | |",
                  f"| medgen's | {statistics.median(speeds[True]):.2f} | {', '.join(f'{s:.2f}' for s in speeds[True])} | "
                  f"{training['median_speedup']:.2f}× ({', '.join(f'{x:.2f}' for x in ratios)}) |"]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
