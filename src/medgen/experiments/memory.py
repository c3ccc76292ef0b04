"""``medgen experiment memory``: parameters, memory and time across resolutions (the paper's memory table, Fig. 6).

HA-GAN's training memory stays nearly flat as the resolution grows because G^H,
D^H and E^H see only a slab of the full-resolution volume (1/8 of its depth)
per step. For every resolution (demo: 32, 64, 128; full: 32 ... 256) this
experiment measures, for the model preset (default: the published architecture):

* the parameters of G, D, E^H, E^G and their total (exact counts, networks
  built on the meta device), next to the paper's published totals;
* peak memory and seconds of one training iteration of HA-GAN (the amortised
  slab) and of the same network trained WITHOUT amortisation (slab fraction 1:
  G^H, D^H and E^H on the whole volume), the baseline the amortisation is for;
* peak memory and seconds of generating one full volume, unchunked and (from
  128³) with G^H in depth chunks.

Every measurement is the real code path (``medgen bench``: the training loop on
random volumes, ``generate_batch``) in a fresh process, so its peak memory is
its own: CPU the peak resident set size, CUDA the peak allocated tensor memory.
A configuration predicted (from the smaller sizes just measured) to pass the
memory or time limit is skipped and the table says why; one that passes a limit
while running is stopped.

Writes ``memory.csv``/``memory.md`` and ``memory.png`` (memory and time against
resolution, with the paper's published memory).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from medgen.core.errors import UsageError
from medgen.experiments.workspace import ExperimentOutput, Workspace

HELP = "parameters, peak memory and time of training and generation across resolutions, with and without the slab"
DESCRIPTION = __doc__.split("\n\n", 1)[1]
# Option defaults left out of the command line written under the table.
DEFAULTS = {"memory_limit_gb": 8.0, "time_limit_min": 10.0}

# The paper's table of parameters and memory under different resolutions (Sun et al. 2022): totals of
# G + D + E^H + E^G in millions, and memory in MB of the authors' GPU test.
PAPER_PARAMS_M: dict[int, float] = {32: 74.7, 64: 78.7, 128: 79.6, 256: 79.7}
PAPER_MEMORY_MB: dict[int, float] = {32: 2573, 64: 2665, 128: 3167, 256: 5961}

DEFAULT_SIZES: dict[str, tuple[int, ...]] = {"smoke": (32,), "demo": (32, 64, 128), "full": (32, 64, 128, 256)}
DEFAULT_PRESET: dict[str, str] = {"smoke": "tiny", "demo": "paper", "full": "paper"}
DEFAULT_REPEATS: dict[str, int] = {"smoke": 1, "demo": 2, "full": 3}
# Torch CPU threads of the measuring processes (None: torch's choice, one per core). The smoke scale
# uses one, which keeps its tiny measurements from stalling on a busy machine.
DEFAULT_THREADS: dict[str, int | None] = {"smoke": 1, "demo": None, "full": None}

COLUMNS: tuple[str, ...] = (
    "size", "G", "D", "E^H", "E^G", "params_total", "params_M", "paper_params_M",
    "train_slab_mb", "train_slab_s", "train_whole_mb", "train_whole_s", "params_whole_M",
    "generate_mb", "generate_s", "chunk", "generate_chunked_mb", "generate_chunked_s",
    "paper_memory_mb", "skipped",
)

# The measured configurations, in the order they run at each size.
CONFIGS: tuple[str, ...] = ("train_slab", "train_whole", "generate", "generate_chunked")
LABELS: dict[str, str] = {
    "train_slab": "training, HA-GAN slab",
    "train_whole": "training, whole volume",
    "generate": "generation",
    "generate_chunked": "chunked generation",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sizes", default=None, metavar="S,S",
                   help="resolutions (default: smoke 32; demo 32,64,128; full 32,64,128,256)")
    p.add_argument("--preset", default=None, choices=("paper", "small", "tiny"),
                   help="model preset (default paper, the published architecture; smoke: tiny)")
    p.add_argument("--batch", type=int, default=None, metavar="B",
                   help="training batch (default 1 on CPU, the smallest step; 4 on CUDA, the paper's batch)")
    p.add_argument("--repeats", type=int, default=None, metavar="R",
                   help="timed runs per configuration after 1 warm-up, median reported "
                        "(default: smoke 1, demo 2, full 3)")
    p.add_argument("--threads", type=int, default=None, metavar="T",
                   help="torch CPU threads of each measuring process (default: one per core; smoke: 1)")
    p.add_argument("--chunk", type=int, default=None, metavar="D",
                   help="chunked generation: feature-map slices per G^H chunk (default: a quarter of the depth)")
    p.add_argument("--memory-limit-gb", type=float, default=8.0, metavar="GB",
                   help="CPU: skip or stop a configuration whose peak resident memory would pass this (default 8)")
    p.add_argument("--time-limit-min", type=float, default=10.0, metavar="MIN",
                   help="skip or stop a configuration that would take longer than this, start-up included (default 10)")
    p.add_argument("--params-only", action="store_true",
                   help="parameter counts only (instant, no measurement, no figure)")


# ---------------------------------------------------------------------- plan
def parse_sizes(text: str | None, scale: str) -> list[int]:
    """Sorted distinct resolutions from ``--sizes`` (default: the scale's)."""
    if not text:
        return list(DEFAULT_SIZES[scale])
    try:
        sizes = sorted({int(s) for s in text.split(",") if s.strip()})
    except ValueError:
        raise UsageError(f"--sizes {text!r}: need comma-separated integers, e.g. 32,64,128") from None
    if not sizes:
        raise UsageError(f"--sizes {text!r}: need at least one size")
    return sizes


def parameter_row(preset: str, size: int) -> dict[str, Any]:
    """Exact parameter counts of the preset at ``size``³ (meta device), with and without the slab."""
    from medgen.families.hagan import count_parameters, get_preset

    counts = count_parameters(get_preset(preset, size))
    whole = count_parameters(get_preset(preset, size, slab_fraction=1.0))
    return {
        "size": size,
        "G": counts["G"],
        "D": counts["D"],
        "E^H": counts["E^H"],
        "E^G": counts["E^G"],
        "params_total": counts["all"],
        "params_M": round(counts["all"] / 1e6, 2),
        "paper_params_M": PAPER_PARAMS_M.get(size),
        "params_whole_M": round(whole["all"] / 1e6, 2),
        "paper_memory_mb": PAPER_MEMORY_MB.get(size),
    }


def predict(history: Sequence[tuple[float, float]], x: float, min_points: int = 1) -> float | None:
    """Extrapolate a cost to work ``x`` from ``history`` of (work, cost) at smaller sizes.

    Costs grow with the number of voxels processed plus a fixed part (runtime,
    weights, optimiser states): with two or more points, the line through the two
    largest (never decreasing); with one point, proportional scaling (an upper
    bound, the fixed part scaled too); with fewer than ``min_points``, None (no
    prediction).
    """
    pts = sorted(history)
    if not pts or len(pts) < min_points:
        return None
    if len(pts) == 1 or pts[-1][0] == pts[-2][0]:
        x1, y1 = pts[-1]
        return y1 * x / x1
    (x0, y0), (x1, y1) = pts[-2], pts[-1]
    slope = max((y1 - y0) / (x1 - x0), 0.0)
    return y1 + slope * (x - x1)


def default_chunk(size: int, preset: str) -> int:
    """Chunk depth in feature-map slices: a quarter of the feature map's depth (8 at 128³)."""
    from medgen.families.hagan import get_preset

    return max(1, get_preset(preset, size).lowres_size // 4)


# ---------------------------------------------------------------------- measurement
class Planner:
    """Runs the configurations in order of size, skipping those predicted to pass a limit.

    ``memory_limit_mb``: peak resident memory limit (None: none, as on CUDA);
    ``time_limit_s``: wall-clock limit of one configuration, process start included.
    """

    def __init__(self, memory_limit_mb: float | None, time_limit_s: float,
                 runner: Callable[..., dict[str, Any]] | None = None) -> None:
        from medgen.families.hagan.bench import run_isolated

        self.memory_limit_mb = memory_limit_mb
        self.time_limit_s = time_limit_s
        self.runner = runner or run_isolated
        self.memory: dict[str, list[tuple[float, float]]] = {c: [] for c in CONFIGS}
        self.wall: dict[str, list[tuple[float, float]]] = {c: [] for c in CONFIGS}

    def skip_reason(self, config: str, size: int) -> str | None:
        work = float(size) ** 3
        mem = predict(self.memory[config], work, min_points=2)  # memory is mostly the fixed part at first
        if self.memory_limit_mb is not None and mem is not None and mem > self.memory_limit_mb:
            return f"predicted {mem / 1024:.1f} GB > limit {self.memory_limit_mb / 1024:.1f} GB"
        wall = predict(self.wall[config], work)
        if wall is not None and wall > self.time_limit_s:
            return f"predicted {wall / 60:.1f} min > limit {self.time_limit_s / 60:.1f} min"
        return None

    def run(self, config: str, kind: str, **kwargs: Any) -> dict[str, Any]:
        """The bench result of ``kind`` (train, generate) with ``kwargs``, or ``{"skipped": reason}``."""
        from medgen.core.errors import MedgenError

        size = int(kwargs["size"])
        reason = self.skip_reason(config, size)
        if reason is not None:
            print(f"memory: {LABELS[config]} at {size}³ skipped: {reason}", flush=True)
            return {"skipped": reason}
        print(f"memory: {LABELS[config]} at {size}³ ...", flush=True)
        t0 = time.monotonic()
        try:
            r = self.runner(kind, timeout=self.time_limit_s, max_rss_mb=self.memory_limit_mb, **kwargs)
        except MedgenError as exc:
            why = str(exc).split("}: ", 1)[-1]  # run_isolated's message: "benchmark KIND {ARGS}: WHY"
            print(f"memory: {LABELS[config]} at {size}³ failed: {why}", flush=True)
            return {"skipped": f"failed: {why[:160]}"}
        wall = time.monotonic() - t0
        r["wall_seconds"] = wall
        self.memory[config].append((float(size) ** 3, float(r["peak_memory_mb"])))
        self.wall[config].append((float(size) ** 3, wall))
        print(f"memory: {LABELS[config]} at {size}³: {r['peak_memory_mb']:.0f} MiB, "
              f"{r['seconds_median']:.3f} s (wall {wall:.0f} s)", flush=True)
        return r


def measure_size(planner: Planner, preset: str, size: int, *, device: str, batch: int, repeats: int,
                 chunk: int | None, seed: int, threads: int | None = None) -> dict[str, dict[str, Any]]:
    """The four configurations at ``size``³: bench result (or ``{"skipped": ...}``) per config key."""
    common = dict(preset=preset, size=size, device=device, warmup=1, repeats=repeats, threads=threads)
    out = {
        "train_slab": planner.run("train_slab", "train", batch=batch, **common),
        "train_whole": planner.run("train_whole", "train", batch=batch, slab_fraction=1.0, **common),
        "generate": planner.run("generate", "generate", batch=1, chunk=None, seed=seed, **common),
    }
    if size >= 128:
        c = chunk or default_chunk(size, preset)
        out["generate_chunked"] = planner.run("generate_chunked", "generate", batch=1, chunk=c, seed=seed,
                                              **common)
    return out


def table_row(params: dict[str, Any], measured: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One row of the table from :func:`parameter_row` and :func:`measure_size`."""
    row = dict(params)
    skipped = []
    for config, r in measured.items():
        if "skipped" in r:
            skipped.append(f"{LABELS[config]}: {r['skipped']}")
            continue
        row[f"{config}_mb"] = round(float(r["peak_memory_mb"]), 1)
        seconds = r["seconds_per_volume"] if r["benchmark"] == "generate" else r["seconds_median"]
        row[f"{config}_s"] = float(seconds)
        if config == "generate_chunked":
            row["chunk"] = r["chunk"]
    row["skipped"] = "; ".join(skipped) or None
    return row


# ---------------------------------------------------------------------- figure
def plot(rows: list[dict[str, Any]], path: Path, *, memory_label: str, title: str) -> None:
    """Memory (left) and time (right) against resolution, log2 x axis, with the paper's memory."""
    from matplotlib.figure import Figure
    from matplotlib.transforms import blended_transform_factory

    from medgen.core.fileio import atomic_path

    fig = Figure(figsize=(11, 5), layout="constrained")
    ax_m, ax_t = fig.subplots(1, 2)
    sizes = [r["size"] for r in rows]
    styles = {
        "train_slab": dict(color="C0", marker="o", ls="-", label="medgen training, HA-GAN slab (amortised)"),
        "train_whole": dict(color="C3", marker="s", ls="-", label="medgen training, whole volume (no amortisation)"),
        "generate": dict(color="C2", marker="^", ls=":", label="medgen generation of one volume"),
        "generate_chunked": dict(color="C2", marker="v", ls="-.", alpha=0.6,
                                 label="medgen generation of one volume, chunked G^H"),
    }
    for ax, unit in ((ax_m, "mb"), (ax_t, "s")):
        for config, style in styles.items():
            pts = [(r["size"], r.get(f"{config}_{unit}")) for r in rows if r.get(f"{config}_{unit}") is not None]
            if pts:
                ax.plot(*zip(*pts), **style)
            trans = blended_transform_factory(ax.transData, ax.transAxes)
            for r in rows:
                if r.get(f"{config}_{unit}") is None and config.startswith("train") and r.get("skipped"):
                    ax.plot([r["size"]], [0.03 if config == "train_slab" else 0.07], transform=trans, ls="none",
                            marker="x", ms=8, mew=2, color=style["color"], clip_on=False,
                            label=f"{LABELS[config]}: skipped (see the table)")
        ax.set_xscale("log", base=2)
        ax.set_xticks(sizes, [f"{s}³" for s in sizes])
        ax.minorticks_off()
        ax.set_xlabel("output resolution")
        ax.grid(alpha=0.3)
    paper = [(r["size"], r["paper_memory_mb"]) for r in rows if r.get("paper_memory_mb") is not None]
    if paper:
        ax_m.plot(*zip(*paper), color="k", marker="D", ls="--", label="paper: HA-GAN, GPU memory (their test)")
    ax_m.set_ylabel(f"peak memory (MiB; medgen: {memory_label})")
    ax_m.set_ylim(bottom=0)
    ax_m.set_title("memory")
    ax_t.set_yscale("log")
    ax_t.set_ylabel("seconds per training iteration / per generated volume")
    ax_t.set_title("time")
    handles: dict[str, Any] = {}
    for ax in (ax_m, ax_t):
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncol=3, fontsize=8)
    fig.suptitle(title, fontsize=10)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=120)


# ---------------------------------------------------------------------- experiment
def _check_args(ws: Workspace, args: argparse.Namespace) -> None:
    for opt, value in (("--run", args.run), ("--data", args.data), ("--iters", args.iters)):
        if value is not None:
            raise UsageError(f"{opt} does not apply to the memory experiment: it measures untrained model presets "
                             "on random volumes (choose --preset and --sizes)")
    for opt, value in (("--batch", args.batch), ("--repeats", args.repeats), ("--chunk", args.chunk),
                       ("--threads", args.threads)):
        if value is not None and value < 1:
            raise UsageError(f"{opt} {value}: must be at least 1")
    if args.memory_limit_gb <= 0 or args.time_limit_min <= 0:
        raise UsageError("--memory-limit-gb and --time-limit-min must be positive")


def _notes(*, preset: str, cuda: bool, params_only: bool, memory_label: str, repeats: int, batch: int,
           memory_limit_gb: float, time_limit_min: float, machine: dict[str, Any], loads: list[float]) -> list[str]:
    """What the columns mean, how they were measured and on what, for the table."""
    arch = ("the published architecture" if preset == "paper" else
            "NOT the published architecture: compare its parameters with the paper's for the trend only")
    notes = [
        (f"Preset {preset} ({arch}); G, D, E^H, E^G, params_total: exact parameter counts (params_M in millions); "
         "paper_params_M: the paper's published totals."),
        ("train_slab: one training iteration of HA-GAN (updates of D, G, E^H and E^G, the EMA, data loading) with "
         "G^H, D^H and E^H on the slab (1/8 of the depth). train_whole: the same network trained WITHOUT "
         "amortisation (slab fraction 1: G^H, D^H and E^H on the whole volume); its D^H is larger "
         "(params_whole_M parameters in all)."),
        ("generate: one full volume (G^A, then G^H on the whole feature map); generate_chunked: G^H in depth chunks "
         "of `chunk` feature-map slices (4·chunk output slices), same output."),
    ]
    if not params_only:
        runtime = ("" if cuda else
                   " (includes the Python/PyTorch runtime, ~0.3 GB, and the weights, gradients and Adam states)")
        notes.append(
            f"*_mb: {memory_label} in MiB, one fresh process per configuration{runtime}; *_s: median seconds per "
            f"iteration (train) or per volume (generate) over {repeats} timed run(s) after 1 warm-up; training "
            f"batch {batch}, {'bf16 autocast' if cuda else 'float32'}."
        )
    ours = "the peak allocated CUDA memory" if cuda else "the peak RSS of the process"
    notes.append(
        "paper_memory_mb: the paper's memory test, GPU memory on the authors' setup (batch and framework overhead "
        f"not stated), while ours is {ours}: compare the trends, not the absolute values."
    )
    if not params_only:
        memory_limit = "" if cuda else f"memory {memory_limit_gb:g} GB (resident), "
        notes.append(
            f"Limits per configuration: {memory_limit}time {time_limit_min:g} min. A configuration that the smaller "
            "sizes (cost affine in the voxel count) predict to pass one is skipped, one passing it while running is "
            "stopped; the column skipped says which and why."
        )
        load = "" if cuda else (
            f"; 1-minute load average during the measurements {min(loads):.1f}–{max(loads):.1f} (above "
            f"{machine['cpu_count']}, other processes shared the CPU and the times are inflated)")
        notes.append(
            f"Machine: {machine['device_name']}, {machine['cpu_count']} CPUs, {machine['threads']} torch threads; "
            f"torch {machine['torch']}, Python {machine['python']}, medgen {machine['medgen']}{load}."
        )
    return notes


def run(ws: Workspace, out: ExperimentOutput, args: argparse.Namespace) -> dict[str, Any]:
    from medgen.families.hagan.bench import machine_info
    from medgen.core.device import resolve_device
    from medgen.families.hagan import get_preset

    _check_args(ws, args)
    scale = ws.scale.name
    sizes = parse_sizes(args.sizes, scale)
    preset = args.preset or DEFAULT_PRESET[scale]
    for size in sizes:
        get_preset(preset, size)  # one clear line for an unsupported size
    device = str(resolve_device(ws.device))
    cuda = device.startswith("cuda")
    batch = args.batch or (4 if cuda else 1)
    repeats = args.repeats or DEFAULT_REPEATS[scale]
    threads = args.threads or DEFAULT_THREADS[scale]
    memory_limit_mb = None if cuda else args.memory_limit_gb * 1024
    planner = Planner(memory_limit_mb, args.time_limit_min * 60)

    rows: list[dict[str, Any]] = []
    measurements: list[dict[str, Any]] = []
    loads = [os.getloadavg()[0]]
    for size in sizes:
        params = parameter_row(preset, size)
        if args.params_only:
            rows.append(params)
            continue
        measured = measure_size(planner, preset, size, device=device, batch=batch, repeats=repeats,
                                chunk=args.chunk, seed=ws.seed, threads=threads)
        loads.append(os.getloadavg()[0])
        rows.append(table_row(params, measured))
        for config, r in measured.items():
            measurements.append({"config": config, "size": size, **r})

    # The measuring processes' own record (their thread count), else this process's.
    machine = next((r["machine"] for r in measurements if "machine" in r), None) or machine_info(device)
    for r in measurements:
        r.pop("machine", None)
    memory_label = "peak allocated CUDA memory" if cuda else "peak RSS of the process"
    notes = _notes(preset=preset, cuda=cuda, params_only=args.params_only, memory_label=memory_label,
                   repeats=repeats, batch=batch, memory_limit_gb=args.memory_limit_gb,
                   time_limit_min=args.time_limit_min, machine=machine, loads=loads)
    title = f"Parameters and memory across resolutions ({preset} preset, {device})"
    columns = [c for c in COLUMNS if not args.params_only or c in (
        "size", "G", "D", "E^H", "E^G", "params_total", "params_M", "paper_params_M", "params_whole_M",
        "paper_memory_mb")]
    out.write_table(rows, columns, title=title, notes=notes)
    if not args.params_only:
        fig_path = out.path("memory.png")
        plot(rows, fig_path, memory_label=memory_label,
             title=f"HA-GAN ({preset} preset) on {machine['device_name']}, training batch {batch}; "
                   "paper: their GPU test")
        out.add_figure(fig_path)
    return {"preset": preset, "device": device, "batch": batch, "repeats": repeats, "sizes": sizes,
            "params_only": bool(args.params_only), "memory_measure": memory_label, "rows": rows,
            "measurements": measurements}
