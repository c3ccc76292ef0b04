#!/usr/bin/env python
"""medgen against the authors' HA-GAN code, measured in the same run on the same machine.

The authors' repository (github.com/batmanlab/HA-GAN) has no licence, so none of
it is part of medgen. If a copy is present in ``third_party/HA-GAN`` (git-ignored;
e.g. ``git clone https://github.com/batmanlab/HA-GAN third_party/HA-GAN``), this
script imports its model classes (``models/Model_HA_GAN_<size>.py``) and
times them next to medgen; otherwise it stops with a message.

What is timed, each configuration in a fresh process (peak memory = that
process's peak RSS on CPU, ``max_memory_allocated`` on CUDA):

* generation of one volume: theirs ``Generator(mode="eval")(z)`` under
  ``torch.no_grad`` (G^H on the whole feature map, as in their notebook);
  ours ``medgen bench generate`` (unchunked and chunked);
* one training iteration at batch B: theirs re-enacts the four updates of
  their ``train.py`` (D, G with a fresh z, E^H, E^G; the same ``requires_grad``
  switching, losses and Adam settings) on random volumes held in memory; ours
  is ``medgen bench train`` (the real training loop). Their code moves one
  tensor to the GPU with ``.cuda()`` inside D's forward pass; on a CPU run
  ``Tensor.cuda`` is replaced by the identity in the measuring process.

Usage::

    python benchmarks/side_by_side.py                 # CPU, the issue's configurations
    python benchmarks/side_by_side.py --device cuda --train-batch 4

Writes ``benchmarks/results/side-by-side-<device>-<date>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
AUTHORS_DIR = ROOT / "third_party" / "HA-GAN"
RESULTS = Path(__file__).resolve().parent / "results"

# The issue's figures for the authors' code on a 2-core CPU machine (seconds, GB peak RSS).
ISSUE_AUTHORS = {
    ("generate", 256): (13.1, 5.7),
    ("generate", 128): (2.2, 1.2),
    ("train", 128): (17.8, 2.4),
}


# ----------------------------------------------------------------------------- child: the authors' code


def _authors_models(size: int, device: str):
    import torch

    if not device.startswith("cuda"):
        torch.Tensor.cuda = lambda self, *args, **kwargs: self  # their D calls .cuda() on a tensor
    sys.path.insert(0, str(AUTHORS_DIR))
    import importlib

    return importlib.import_module(f"models.Model_HA_GAN_{size}")


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def _peak(device: str) -> float:
    if device.startswith("cuda"):
        import torch

        return torch.cuda.max_memory_allocated() / 2**20
    from medgen.families.hagan.bench import peak_rss_mb

    return peak_rss_mb()


def authors_generate(size: int, device: str, warmup: int, repeats: int) -> dict:
    import torch

    mod = _authors_models(size, device)
    torch.manual_seed(0)
    G = mod.Generator(mode="eval", latent_dim=1024).to(device).eval()
    times = []
    with torch.no_grad():
        for r in range(warmup + repeats):
            z = torch.randn(1, 1024, device=device)
            _sync(device)
            t0 = time.perf_counter()
            x = G(z)
            x = x.cpu()
            _sync(device)
            if r >= warmup:
                times.append(time.perf_counter() - t0)
            del x
    return {"seconds": times, "peak_memory_mb": _peak(device)}


def authors_train(size: int, batch: int, device: str, warmup: int, repeats: int) -> dict:
    """One iteration as the authors' train.py runs it (re-enacted with their modules)."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from torch import nn, optim

    mod = _authors_models(size, device)
    torch.manual_seed(0)
    G = mod.Generator(mode="train", latent_dim=1024, num_class=0).to(device)
    D = mod.Discriminator(num_class=0).to(device)
    E = mod.Encoder().to(device)
    Sub_E = mod.Sub_Encoder(latent_dim=1024).to(device)
    adam = dict(betas=(0.0, 0.999), eps=1e-8)
    opt_g = optim.Adam(G.parameters(), lr=1e-4, **adam)
    opt_d = optim.Adam(D.parameters(), lr=4e-4, **adam)
    opt_e = optim.Adam(E.parameters(), lr=1e-4, **adam)
    opt_se = optim.Adam(Sub_E.parameters(), lr=1e-4, **adam)
    bce, l1 = nn.BCEWithLogitsLoss(), nn.L1Loss()
    ones = torch.ones((batch, 1), device=device)
    zeros = torch.zeros((batch, 1), device=device)
    rng = np.random.default_rng(0)
    real_all = torch.from_numpy(rng.uniform(-1, 1, (batch, 1, size, size, size)).astype(np.float32))

    def flags(module, value: bool) -> None:
        for p in module.parameters():
            p.requires_grad = value

    for m in (D, G, E, Sub_E):
        flags(m, False)
        m.train()
    times = []
    for r in range(warmup + repeats):
        _sync(device)
        t0 = time.perf_counter()
        # D step
        flags(D, True)
        flags(Sub_E, False)
        D.zero_grad()
        real = real_all.to(device)
        real_small = F.interpolate(real, scale_factor=0.25)
        crop = int(rng.integers(0, size * 7 // 8 + 1))
        real_crop = real[:, :, crop : crop + size // 8]
        d_real = bce(D(real_crop, real_small, crop), ones)
        fake, fake_small = G(torch.randn(batch, 1024, device=device), crop_idx=crop, class_label=None)
        d_loss = d_real + bce(D(fake, fake_small, crop), zeros)
        d_loss.backward()
        opt_d.step()
        # G step (fresh z)
        flags(D, False)
        flags(G, True)
        G.zero_grad()
        fake, fake_small = G(torch.randn(batch, 1024, device=device), crop_idx=crop, class_label=None)
        g_loss = bce(D(fake, fake_small, crop), ones)
        g_loss.backward()
        opt_g.step()
        # E^H step
        flags(E, True)
        flags(G, False)
        E.zero_grad()
        e_loss = l1(G(E(real_crop), crop_idx=None), real_crop)
        e_loss.backward()
        opt_e.step()
        # E^G step
        flags(Sub_E, True)
        flags(E, False)
        Sub_E.zero_grad()
        with torch.no_grad():
            feats = torch.cat([E(real[:, :, k : k + size // 8]) for k in range(0, size, size // 8)], dim=2)
        rec, rec_small = G(Sub_E(feats), crop_idx=crop)
        se_loss = (l1(rec, real_crop) + l1(rec_small, real_small)) / 2.0
        se_loss.backward()
        opt_se.step()
        float(d_loss), float(g_loss), float(e_loss), float(se_loss)  # the losses they log (host sync)
        _sync(device)
        if r >= warmup:
            times.append(time.perf_counter() - t0)
    return {"seconds": times, "peak_memory_mb": _peak(device)}


def _child(spec: dict) -> dict:
    if spec.get("threads"):
        import torch

        torch.set_num_threads(int(spec["threads"]))
    if spec["kind"] == "generate":
        out = authors_generate(spec["size"], spec["device"], spec["warmup"], spec["repeats"])
    else:
        out = authors_train(spec["size"], spec["batch"], spec["device"], spec["warmup"], spec["repeats"])
    out["seconds_median"] = statistics.median(out["seconds"])
    return out


def run_authors(spec: dict) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        return {"error": tail if proc.returncode > 0 else f"killed by signal {-proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--train-batch", type=int, default=2)
    ap.add_argument("--chunk", type=int, default=32, help="medgen's G^H chunk at 256³ (feature-map slices)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        print(json.dumps(_child(json.loads(args.child))))
        return 0
    if not (AUTHORS_DIR / "models" / "Model_HA_GAN_256.py").is_file():
        print(
            f"side_by_side: the authors' code is not in {AUTHORS_DIR.relative_to(ROOT)} "
            "(git clone https://github.com/batmanlab/HA-GAN third_party/HA-GAN); nothing measured",
            file=sys.stderr,
        )
        return 2

    sys.path.insert(0, str(ROOT / "src"))
    from medgen.families.hagan.bench import machine_info, run_isolated

    common = dict(device=args.device, warmup=args.warmup, repeats=args.repeats, threads=args.threads)
    plan = [
        ("generate", 256, dict(batch=1, chunk=args.chunk)),
        ("generate", 256, dict(batch=1, chunk=None)),
        ("generate", 128, dict(batch=1, chunk=None)),
        ("generate", 128, dict(batch=1, chunk=args.chunk // 2)),
        ("train", 128, dict(batch=args.train_batch)),
    ]
    authors_cache: dict[tuple, dict] = {}
    rows = []
    for kind, size, extra in plan:
        key = (kind, size, extra["batch"])
        if key not in authors_cache:
            print(f"authors' code: {kind} {size}³ batch {extra['batch']} ...", file=sys.stderr, flush=True)
            authors_cache[key] = run_authors(dict(kind=kind, size=size, **common, batch=extra["batch"]))
        print(f"medgen: {kind} {size}³ {extra} ...", file=sys.stderr, flush=True)
        ours = run_isolated(kind, preset="paper", size=size, **common, **extra)
        theirs = authors_cache[key]
        row = {
            "kind": kind, "size": size, **extra,
            "medgen_seconds": ours["seconds_median"], "medgen_peak_mb": ours["peak_memory_mb"],
            "medgen_seconds_all": ours["seconds"], "medgen_params": ours["params_total"],
            "authors_seconds": theirs.get("seconds_median"), "authors_peak_mb": theirs.get("peak_memory_mb"),
            "authors_seconds_all": theirs.get("seconds"), "authors_error": theirs.get("error"),
            "load_average_1min": os.getloadavg()[0],
        }
        issue = ISSUE_AUTHORS.get((kind, size))
        if issue is not None and (kind != "train" or extra["batch"] == 2):
            row["issue_authors_seconds"], row["issue_authors_peak_gb"] = issue
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)

    date = datetime.date.today().isoformat()
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"machine": machine_info(args.device), "date": date, "warmup": args.warmup, "repeats": args.repeats,
              "command": "python benchmarks/side_by_side.py " + " ".join(sys.argv[1:]), "rows": rows}
    stem = args.out / f"side-by-side-{args.device}-{date}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return 0


def _fmt(v, digits: int = 2) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [
        f"# medgen vs the authors' HA-GAN code ({m['device']}, {result['date']})",
        "",
        f"Machine: {m['device_name']}, {m['cpu_count']} CPUs, {m['threads']} torch threads; "
        f"torch {m['torch']}, Python {m['python']}. Paper preset (published architecture), float32. "
        f"Median of {result['repeats']} after {result['warmup']} warm-up; each configuration in a fresh process. "
        f"Command: `{result['command']}`.",
        "",
        "| what | size | batch | medgen chunk | authors s | medgen s | time ratio (authors/medgen) "
        "| authors peak MB | medgen peak MB | load avg |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        ratio = (r["authors_seconds"] / r["medgen_seconds"]) if r["authors_seconds"] else None
        chunk = r.get("chunk") if r["kind"] == "generate" else None
        chunk_txt = "—" if r["kind"] == "train" else (str(chunk) if chunk else "none")
        lines.append(
            f"| {r['kind']} | {r['size']}³ | {r['batch']} | {chunk_txt} | {_fmt(r['authors_seconds'])} "
            f"| {_fmt(r['medgen_seconds'])} | {_fmt(ratio)}× | {_fmt(r['authors_peak_mb'], 0)} "
            f"| {_fmt(r['medgen_peak_mb'], 0)} | {r['load_average_1min']:.1f} |"
        )
    lines += [
        "",
        "Peak memory: CPU peak resident set size of the measuring process (interpreter and libraries included), "
        "or CUDA max allocated. `load avg` is the machine's 1-minute load average after the medgen measurement: "
        "above the number of cores, other work shared the CPU and every time is inflated (both codes alike, "
        "as they ran back to back).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
