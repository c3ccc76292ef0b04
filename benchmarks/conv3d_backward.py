#!/usr/bin/env python
"""What medgen's CPU 3D convolution (:mod:`medgen.families.conv3d`) buys against PyTorch's own, side by side
in one run, in three settings: PyTorch's convolution (``ENABLED`` off); medgen's gradients in the default
memory layout (``CHANNELS_LAST`` off: the weight gradient as a convolution, the phased input gradient of
strided layers); and medgen's (both on: stride-1 layers with few channels in the channels-last layout too).

1. Layers: forward + backward (input, weight and bias gradients) of every kind of convolution in HA-GAN
   ``tiny`` at 64³, batch 4 (the demo), in the three settings taking turns (A B C A B C …); the median of
   ``--repeats`` timings of each, and the speed-ups over PyTorch's.
2. Training: ``medgen train`` (64³ thorax-CT phantoms, ``tiny``, batch 4, the demo's ``encoder_every=4``),
   with the default low-resolution factor 4 and with ``--lowres-factor 2`` (whose G^A and G^L run at 32³),
   for ``--iters`` iterations in a fresh process each, in the three settings taking turns for ``--rounds``
   rounds; the speed is the iterations after the first ``--skip`` over their time, from the run's own
   ``metrics.csv``.

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

from encoder_every import iterations_per_second, phantom_data  # noqa: E402

# HA-GAN tiny at 64³, batch 4: (where, input shape, out channels, kernel, stride, padding)
LAYERS = [
    ("G^A 3³ conv at 16³", (4, 32, 16, 16, 16), 16, (3, 3, 3), (1, 1, 1), (1, 1, 1)),
    ("G^A 3³ conv at 16³ (last)", (4, 16, 16, 16, 16), 8, (3, 3, 3), (1, 1, 1), (1, 1, 1)),
    ("G^A upsample + conv, sub-pixel form", (4, 64, 8, 8, 8), 256, (2, 2, 2), (1, 1, 1), (1, 1, 1)),
    ("G^H upsample + conv, sub-pixel form", (4, 8, 16, 16, 4), 32, (2, 2, 2), (1, 1, 1), (1, 1, 1)),
    ("G^H last upsample + conv (→ image), sub-pixel form", (4, 4, 32, 32, 8), 8, (2, 2, 2), (1, 1, 1), (1, 1, 1)),
    ("G^L first 3³ conv", (4, 8, 16, 16, 16), 4, (3, 3, 3), (1, 1, 1), (1, 1, 1)),
    ("D^H first conv (slab, D step)", (8, 1, 64, 64, 8), 8, (4, 4, 2), (2, 2, 2), (1, 1, 0)),
    ("D^H second conv (D step)", (8, 8, 32, 32, 4), 16, (4, 4, 2), (2, 2, 2), (1, 1, 0)),
    ("D^L first conv (D step)", (8, 1, 16, 16, 16), 16, (4, 4, 4), (2, 2, 2), (1, 1, 1)),
    ("E^H first conv (slab)", (4, 1, 64, 64, 8), 4, (4, 4, 4), (2, 2, 2), (1, 1, 1)),
]

# name: (ENABLED, CHANNELS_LAST) of medgen.families.conv3d
SETTINGS = {"PyTorch's": (False, False), "medgen's, default layout": (True, False), "medgen's": (True, True)}

TRAIN = """
import sys
import medgen.families.conv3d as conv3d
conv3d.ENABLED, conv3d.CHANNELS_LAST = {setting!r}
from medgen.cli import main
sys.exit(main({argv!r}))
"""


def time_layer(shape, cout, kernel, stride, padding, setting: tuple[bool, bool], repeats: int) -> float:
    import torch

    import medgen.families.conv3d as conv3d

    torch.manual_seed(0)
    x = torch.randn(*shape, requires_grad=True)
    w = torch.randn(cout, shape[1], *kernel, requires_grad=True)
    b = torch.randn(cout, requires_grad=True)
    g = torch.randn_like(torch.nn.functional.conv3d(x, w, b, stride, padding))
    conv3d.ENABLED, conv3d.CHANNELS_LAST = setting
    try:
        def once() -> None:
            torch.autograd.grad(conv3d.conv3d(x, w, b, stride, padding), (x, w, b), g)
        once()
        start = time.perf_counter()
        for _ in range(repeats):
            once()
        return (time.perf_counter() - start) / repeats
    finally:
        conv3d.ENABLED, conv3d.CHANNELS_LAST = True, True


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
        times: dict[str, list[float]] = {k: [] for k in SETTINGS}
        for _ in range(args.repeats):
            for key, setting in SETTINGS.items():
                times[key].append(time_layer(shape, cout, kernel, stride, padding, setting, 3))
        ms = {k: 1e3 * statistics.median(v) for k, v in times.items()}
        speedups = {k: statistics.median([a / b for a, b in zip(times["PyTorch's"], v)]) for k, v in times.items()}
        layers.append({"layer": name, "input": shape, "out_channels": cout, "kernel": kernel, "stride": stride,
                       "padding": padding, "ms": ms, "speedup_over_pytorch": speedups})
        print(f"{name}: " + ", ".join(f"{k} {ms[k]:.1f} ms ({speedups[k]:.2f}×)" for k in SETTINGS), file=sys.stderr)

    factors = (4, 2)  # the default low-resolution factor, and G^A and G^L at 32³
    speeds: dict[int, dict[str, list[float]]] = {f: {k: [] for k in SETTINGS} for f in factors}
    if args.rounds:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            phantom_data(work, 64)
            for r in range(args.rounds):
                for f in factors:
                    for i, (key, setting) in enumerate(SETTINGS.items()):
                        run = work / f"run-{f}-{i}-{r}"
                        argv = ["train", str(work / "data"), "--preset", "tiny", "--out", str(run), "--iters",
                                str(args.iters), "--batch", "4", "--sample-every", "0", "--ckpt-every",
                                str(10 * args.iters), "--log-every", "25", "--hparam", "encoder_every=4",
                                "--lowres-factor", str(f), "--no-progress"]
                        subprocess.run([sys.executable, "-c", TRAIN.format(setting=setting, argv=argv)], check=True,
                                       stdout=subprocess.DEVNULL)
                        speeds[f][key].append(iterations_per_second(run, args.skip))
                        print(f"round {r + 1}, factor {f}: {key}: {speeds[f][key][-1]:.2f} it/s", file=sys.stderr)

    from medgen.core.measure import cpu_model

    machine = {"cpu": cpu_model(), "cores": os.cpu_count(),
               "threads": torch.get_num_threads(), "python": platform.python_version(), "torch": torch.__version__,
               "medgen": medgen.__version__}
    command = "python benchmarks/conv3d_backward.py " + " ".join(sys.argv[1:])
    training = {}
    for f in factors:
        base = speeds[f]["PyTorch's"]
        ratios = {k: [b / a for a, b in zip(base, v)] for k, v in speeds[f].items()}
        training[f"lowres_factor_{f}"] = {
            "it_per_s": speeds[f], "speedups_over_pytorch": ratios,
            "median_speedup_over_pytorch": {k: statistics.median(v) if v else None for k, v in ratios.items()}}
    stamp = datetime.date.today().isoformat()
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"conv3d-backward-cpu-{stamp}"
    stem.with_suffix(".json").write_text(json.dumps({"command": command, "machine": machine, "args": vars(args),
                                                     "layers": layers, "training": training}, indent=2) + "\n")
    keys = list(SETTINGS)
    lines = ["# 3D convolution on the CPU: PyTorch's against medgen's", "",
             f"`{command}`; {machine}", "",
             f"Forward + backward of one layer (HA-GAN `tiny`, 64³, batch 4), median of {args.repeats}, in turn "
             "(ms; speed-up over PyTorch's):", "",
             "| layer | input | kernel / stride | " + " | ".join(keys) + " |",
             "| --- | --- | --- | " + " | ".join("---" for _ in keys) + " |"]
    for row in layers:
        lines.append(f"| {row['layer']} | {'×'.join(map(str, row['input']))} → {row['out_channels']} | "
                     f"{'×'.join(map(str, row['kernel']))} / {'×'.join(map(str, row['stride']))} | "
                     + " | ".join(f"{row['ms'][k]:.1f} ({row['speedup_over_pytorch'][k]:.2f}×)" for k in keys) + " |")
    if args.rounds:
        lines += ["", f"Training (`medgen train`, 64³ `tiny`, batch 4, encoder_every=4; {args.iters} iterations, "
                      f"the first {args.skip} not counted; {args.rounds} rounds in turn):", "",
                  "| low-resolution factor | convolution | it/s, median | runs | speed-up over PyTorch's, median "
                  "(run by run) |", "| --- | --- | --- | --- | --- |"]
        for f in factors:
            t = training[f"lowres_factor_{f}"]
            for k in keys:
                runs = ", ".join(f"{v:.2f}" for v in speeds[f][k])
                by_run = ", ".join(f"{x:.2f}" for x in t["speedups_over_pytorch"][k])
                lines.append(f"| {f} | {k} | {statistics.median(speeds[f][k]):.2f} | {runs} | "
                             f"{t['median_speedup_over_pytorch'][k]:.2f}× ({by_run}) |")
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
