"""Speed and memory measurements: seconds per training iteration or per generated volume.

Each configuration is measured in a fresh Python process (:func:`run_isolated`),
so the peak memory reported belongs to that configuration alone:

* CPU: the process's peak resident set size (:func:`peak_rss_mb`), which
  includes the Python interpreter and imported libraries (~0.3 GB);
* CUDA: ``torch.cuda.max_memory_allocated`` (tensor memory; the caching
  allocator's reserve and the CUDA context are not counted).

Times are the median over ``repeats`` runs after ``warmup`` runs.

* ``generate``: one call of :meth:`medgen.families.hagan.Generator.generate`,
  the code path of ``medgen generate`` (z → G^A → G^H, whole or chunked, into
  a preallocated float32 array on the host), under ``torch.inference_mode``;
  writing files is not included. The G^A share is timed separately once.
* ``train``: the real training loop, :func:`medgen.training.loop.train`, on a
  synthetic data set of random volumes in a temporary folder, with the per-
  iteration times that the trainer itself logs to ``metrics.csv``
  (``log_every=1``). One iteration is the four updates
  (D, G, E^H, E^G), the EMA update and data loading. Writing checkpoints is
  not part of an iteration and is switched off in the measuring process.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from medgen.core.version import __version__
from medgen.core.errors import RunFailed, UsageError
from medgen.core.measure import cpu_model, machine_info, peak_rss_mb  # noqa: F401  (re-exported)

KINDS = ("train", "generate")


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def check_request(
    kind: str, preset: str, size: int, batch: int = 1, warmup: int = 1, repeats: int = 1, device: str = "cpu"
) -> None:
    """Raise UsageError (one line) for a request that cannot be measured."""
    from medgen.families.hagan import get_preset

    if kind not in KINDS:
        raise UsageError(f"benchmark {kind!r}: choose {' or '.join(KINDS)}")
    if batch < 1 or repeats < 1 or warmup < 0:
        raise UsageError(f"--batch {batch}, --repeats {repeats}: both must be >= 1, and --warmup {warmup} >= 0")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise UsageError(f"--device {device}: choose cpu or cuda")
    get_preset(preset, size)


def _result(kind: str, cfg, preset: str, device: str, seconds: list[float], warmup: int, **extra: Any) -> dict[str, Any]:
    from medgen.families.hagan import count_parameters

    counts = count_parameters(cfg)
    out: dict[str, Any] = {
        "benchmark": kind,
        "preset": preset,
        "size": cfg.size,
        "device": device,
        "seconds_median": statistics.median(seconds),
        "seconds": seconds,
        "warmup": warmup,
        "repeats": len(seconds),
    }
    out.update(extra)
    out["params"] = counts
    out["params_total"] = counts["all"]
    out["memory_measure"] = "cuda_max_allocated" if device.startswith("cuda") else "cpu_peak_rss"
    out["machine"] = machine_info(device)
    return out


def measure_generate(
    preset: str = "paper",
    size: int = 128,
    chunk: int | None = None,
    batch: int = 1,
    device: str = "cpu",
    warmup: int = 1,
    repeats: int = 3,
    seed: int = 0,
) -> dict[str, Any]:
    """Seconds per generated batch of ``batch`` volumes and peak memory, in this process."""
    import numpy as np
    import torch

    from medgen.families.hagan.model import build
    from medgen.inference.generate import check_chunk, latent_codes

    check_request("generate", preset, size, batch, warmup, repeats, device)
    model = build(preset, size, seed=seed, device=torch.device(device), encoder=False)
    cfg, g = model.config, model.generator
    chunk = check_chunk(chunk, cfg.lowres_size)
    z = torch.from_numpy(latent_codes(batch, cfg.latent_dim, seed)).to(device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    s = cfg.size
    out = np.empty((batch, s, s, s), dtype=np.float32)
    out_view = torch.from_numpy(out).unsqueeze(1)  # the host array medgen generate writes into
    times = []
    for r in range(warmup + repeats):
        _sync(device)
        t0 = time.perf_counter()
        with torch.inference_mode():
            g.generate(z, None, chunk, out=out_view)
        _sync(device)
        if r >= warmup:
            times.append(time.perf_counter() - t0)
    with torch.inference_mode():  # the G^A share, timed once
        _sync(device)
        t0 = time.perf_counter()
        g.features(z)
        _sync(device)
        t_common = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else peak_rss_mb()
    return _result(
        "generate", cfg, preset, device, times, warmup,
        batch=batch, chunk=chunk, precision="fp32", stage_seconds={"G^A": t_common},
        seconds_per_volume=statistics.median(times) / batch, peak_memory_mb=peak,
    )


def _synthetic_dataset(root: Path, size: int, n: int, seed: int = 0) -> Path:
    """A preprocessed data set of ``n`` random volumes (float16 in [-1, 1]) for timing only."""
    import numpy as np

    from medgen.core.fileio import atomic_write_json

    (root / "volumes").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    lines = ["id,source,orig_shape,orig_spacing,spacing,file"]
    for i in range(n):
        v = rng.uniform(-1.0, 1.0, (size, size, size)).astype(np.float16)
        np.save(root / "volumes" / f"r{i}.npy", v)
        lines.append(f"r{i},random,{size}x{size}x{size},1x1x1,1x1x1,volumes/r{i}.npy")
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    atomic_write_json(root / "preprocess.json", {"modality": "ct", "size": size, "hu_window": [-1024.0, 600.0]})
    return root


def measure_train(
    preset: str = "paper",
    size: int = 128,
    batch: int = 2,
    device: str = "cpu",
    warmup: int = 1,
    repeats: int = 3,
    precision: str = "auto",
    slab_fraction: float | None = None,
) -> dict[str, Any]:
    """Seconds per training iteration and peak memory of the real training loop, in this process.

    ``slab_fraction``: depth share of the training slab, replacing the preset's
    (paper 1/8); 1.0 trains G^H, D^H and E^H on the whole volume, i.e. without
    the amortisation (None: the preset's).
    """
    import csv

    from medgen.training.runconfig import RunConfig
    from medgen.families.hagan import get_preset
    from medgen.training import checkpoint as ckpt_io
    from medgen.families.registry import train

    check_request("train", preset, size, batch, warmup, repeats, device)
    cfg = get_preset(preset, size, slab_fraction=slab_fraction)
    # Checkpoints are not part of an iteration: switched off in this (throw-away) process.
    ckpt_io.save_checkpoint = lambda *args, **kwargs: None
    with tempfile.TemporaryDirectory(prefix="medgen-bench-") as tmp:
        data = _synthetic_dataset(Path(tmp) / "data", size, batch)
        run_cfg = RunConfig(
            data=str(data), model=cfg.to_dict(), preset=preset, iters=warmup + repeats, batch=batch,
            device=device, precision=precision, log_every=1, sample_every=0, ckpt_every=10**9,
            split_fractions=(1.0, 0.0, 0.0), medgen_version=__version__,
        )
        train(run_cfg, Path(tmp) / "run", progress=False)
        with open(Path(tmp) / "run" / "metrics.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
    if len(rows) != warmup + repeats:
        raise RunFailed(f"training benchmark logged {len(rows)} iterations, expected {warmup + repeats}")
    times = [1.0 / float(r["it_per_s"]) for r in rows[warmup:]]
    used = precision if precision != "auto" else ("bf16" if device.startswith("cuda") else "fp32")
    if device.startswith("cuda"):
        import torch

        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = peak_rss_mb()
    return _result("train", cfg, preset, device, times, warmup, batch=batch, precision=used, peak_memory_mb=peak,
                   slab_fraction=cfg.slab_fraction)


def measure(kind: str, **kwargs: Any) -> dict[str, Any]:
    """Run benchmark ``kind`` (train or generate) in this process."""
    threads = kwargs.pop("threads", None)
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    if kind == "generate":
        kwargs.pop("precision", None)
        return measure_generate(**kwargs)
    if kind == "train":
        kwargs.pop("chunk", None)
        return measure_train(**kwargs)
    raise UsageError(f"benchmark {kind!r}: choose {' or '.join(KINDS)}")


def _rss_mb(pid: int) -> float | None:
    """Current resident set size of process ``pid`` in MiB (None where /proc does not tell)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _run_watched(cmd: list[str], timeout: float | None, max_rss_mb: float, what: str) -> subprocess.CompletedProcess:
    """``subprocess.run`` that also stops the process once its resident memory passes ``max_rss_mb``."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True)
        t0 = time.monotonic()
        try:
            while proc.poll() is None:
                rss = _rss_mb(proc.pid)
                if rss is not None and rss > max_rss_mb:
                    raise RunFailed(f"{what}: stopped at {rss:.0f} MiB resident memory, over the limit of "
                                    f"{max_rss_mb:.0f} MiB")
                if timeout is not None and time.monotonic() - t0 > timeout:
                    raise RunFailed(f"{what}: took longer than {timeout:.0f} s")
                time.sleep(0.1)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(cmd, proc.returncode, out.read(), err.read())


def run_isolated(kind: str, timeout: float | None = None, max_rss_mb: float | None = None,
                 **kwargs: Any) -> dict[str, Any]:
    """Run :func:`measure` in a fresh Python process and return its result.

    ``timeout``: seconds before the process is stopped. ``max_rss_mb``: stop it as
    soon as its resident memory passes this many MiB (checked every 0.1 s, Linux;
    None: no limit), so a configuration too large for a shared machine fails alone.
    Raises RunFailed (one line) if the process fails, e.g. runs out of memory.
    """
    spec = json.dumps({"kind": kind, **kwargs})
    cmd = [sys.executable, "-m", "medgen.families.hagan.bench", spec]
    what = f"benchmark {kind} {kwargs}"
    if max_rss_mb is not None:
        proc = _run_watched(cmd, timeout, max_rss_mb, what)
    else:
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise RunFailed(f"{what}: took longer than {timeout:.0f} s") from None
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        why = lines[-1] if lines else f"exit code {proc.returncode}"
        if proc.returncode < 0:
            why = f"killed by signal {-proc.returncode} (out of memory?)"
        raise RunFailed(f"{what}: {why}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def describe(r: dict[str, Any]) -> str:
    """One human-readable line for a result."""
    m = r["machine"]
    mem = "peak CUDA allocated" if r["memory_measure"] == "cuda_max_allocated" else "peak RSS"
    what = f"{r['benchmark']} {r['preset']} {r['size']}³ batch {r['batch']}"
    if r["benchmark"] == "generate":
        what += f", chunk {r['chunk']}" if r.get("chunk") else ", unchunked"
        speed = f"{r['seconds_per_volume']:.3f} s/volume (G^A {r['stage_seconds']['G^A']:.3f} s)"
    else:
        speed = f"{r['seconds_median']:.3f} s/iteration ({r['precision']})"
    return (
        f"{what}: {speed}, median of {r['repeats']} after {r['warmup']} warm-up; "
        f"{mem} {r['peak_memory_mb']:.0f} MiB; {r['params_total'] / 1e6:.2f}M parameters "
        f"(G {r['params']['G'] / 1e6:.2f}M); {m['device_name']}, {m['threads']} threads, torch {m['torch']}"
    )


def _main(argv: list[str]) -> int:
    """Child entry point: ``python -m medgen.families.hagan.bench '<json spec>'`` prints one JSON line."""
    spec = json.loads(argv[0])
    kind = spec.pop("kind")
    result = measure(kind, **spec)
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
