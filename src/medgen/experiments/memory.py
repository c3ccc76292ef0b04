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

A second table sets the model families side by side, as the paper's speed table
and Fig. 6 do across models (``--families``; default every registered one of
hagan, wgan-gp, vae-gan, alpha-gan, pggan, stylegan2, ddpm, ldm-autoencoder and
ldm, the latent diffusion model in its two training stages): at every resolution,
the parameters of the networks each family trains, the seconds of one training
iteration and its peak memory at the same batch, and whether it fits in 16 GB,
measured or, for a size not measured, extrapolated from the family's measured
growth (linear in the voxel count through its two largest measured sizes) and
marked so. ``--preset`` chooses the size class of every model: ``paper`` is each
family's published architecture (where a family has no ``paper`` preset, its
largest one: ``base`` for ddpm and the ldm stages), ``small`` and ``tiny`` the
families' presets of that name.

Every measurement is the real code path (``medgen bench``: the training loop on
random volumes, ``generate_batch``) in a fresh process, so its peak memory is
its own: CPU the peak resident set size, CUDA the peak allocated tensor memory.
A configuration predicted (from the smaller sizes just measured) to pass the
memory or time limit is skipped and the table says why; one that passes a limit
while running is stopped. A family without a benchmark is listed with its
parameters only.

Writes ``memory.csv``/``memory.md`` and ``memory.png`` (memory and time against
resolution, with the paper's published memory), and ``memory-families.csv``/
``memory-families.md`` and ``memory-families.png`` (peak memory and time per
family against resolution: measured solid, extrapolated dashed, the 16 GB line).
"""

from __future__ import annotations

import argparse
import os
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
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
# Sizes of the table across models that are extrapolated, not measured (the paper's 256³ at demo scale).
DEFAULT_EXTRAPOLATE: dict[str, tuple[int, ...]] = {"smoke": (), "demo": (256,), "full": ()}
# Sizes below the table's, tried (largest first) for a family measured at fewer than two of the table's sizes,
# so that its growth can be extrapolated: e.g. StyleGAN2 or PGGAN at their paper widths, too slow on a CPU
# beyond 32³.
SMALLER_SIZES: tuple[int, ...] = (16, 8)
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

# The table across models: its candidate families in order (those not registered are left out), the memory it
# asks about, and its columns.
FAMILY_CANDIDATES: tuple[str, ...] = (
    "hagan", "wgan-gp", "vae-gan", "alpha-gan", "pggan", "stylegan2", "ddpm", "ldm-autoencoder", "ldm",
)
FITS_MB = 16 * 1024.0
FAMILY_COLUMNS: tuple[str, ...] = (
    "family", "preset", "size", "networks", "params_total", "params_M", "seconds_per_iteration",
    "memory_mb", "memory_source", "fits_16gb", "skipped",
)
FAMILY_PARAM_COLUMNS: tuple[str, ...] = ("family", "preset", "size", "networks", "params_total", "params_M")

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
    p.add_argument("--preset", default=None, choices=("paper", "small", "compact", "tiny"),
                   help="model preset (default paper, the published architecture; smoke: tiny); in the table "
                        "across families, paper is each family's published or else largest preset (ddpm, ldm: base)")
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
    p.add_argument("--families", default=None, metavar="F,F",
                   help="families of the table across models, memory-families (default: every registered one of "
                        f"{','.join(FAMILY_CANDIDATES)}; none: HA-GAN's table only)")
    p.add_argument("--extrapolate-to", default=None, metavar="S,S",
                   help="table across families: larger resolutions listed with the memory extrapolated from the "
                        "measured ones, not measured (default: demo 256, the paper's largest; none: no such rows)")
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


def parse_extrapolate(text: str | None, scale: str, sizes: Sequence[int]) -> list[int]:
    """Sorted sizes of ``--extrapolate-to`` (default: the scale's) that are not among the measured ``sizes``."""
    if text is None:
        wanted = list(DEFAULT_EXTRAPOLATE[scale])
    elif text.strip().lower() == "none":
        wanted = []
    else:
        try:
            wanted = [int(s) for s in text.split(",") if s.strip()]
        except ValueError:
            raise UsageError(f"--extrapolate-to {text!r}: need comma-separated integers, e.g. 256 (or none)") from None
        small = [w for w in wanted if w <= max(sizes)]
        if small:
            raise UsageError(f"--extrapolate-to {text!r}: {small[0]} is not above the largest measured size "
                             f"{max(sizes)} (--sizes)")
    return sorted({w for w in wanted if w not in sizes})


def default_chunk(size: int, preset: str) -> int:
    """Chunk depth in feature-map slices: a quarter of the feature map's depth (8 at 128³)."""
    from medgen.families.hagan import get_preset

    return max(1, get_preset(preset, size).lowres_size // 4)


# ---------------------------------------------------------------------- measurement
class Planner:
    """Runs the configurations in order of size, skipping those predicted to pass a limit.

    ``memory_limit_mb``: peak resident memory limit (None: none, as on CUDA);
    ``time_limit_s``: wall-clock limit of one configuration, process start included;
    ``runner``: the bench's ``run_isolated`` (default HA-GAN's); ``labels``: config key →
    the words of the progress lines (default :data:`LABELS`, else the key itself).
    Each configuration key keeps its own history of (voxels, cost); once a configuration
    failed (a limit passed while running), its larger sizes are skipped without a try.
    """

    def __init__(self, memory_limit_mb: float | None, time_limit_s: float,
                 runner: Callable[..., dict[str, Any]] | None = None,
                 labels: Mapping[str, str] | None = None) -> None:
        from medgen.families.hagan.bench import run_isolated

        self.memory_limit_mb = memory_limit_mb
        self.time_limit_s = time_limit_s
        self.runner = runner or run_isolated
        self.labels = {**LABELS, **(labels or {})}
        self.memory: dict[str, list[tuple[float, float]]] = defaultdict(list)
        self.wall: dict[str, list[tuple[float, float]]] = defaultdict(list)
        self.failed: dict[str, tuple[int, str]] = {}  # config → (smallest size that failed, why)

    def label(self, config: str) -> str:
        return self.labels.get(config, config)

    def add(self, config: str, size: int, result: dict[str, Any]) -> None:
        """Record a measurement of ``config`` at ``size``³ made elsewhere (skipped results are ignored)."""
        if "skipped" in result:
            return
        self.memory[config].append((float(size) ** 3, float(result["peak_memory_mb"])))
        if result.get("wall_seconds") is not None:
            self.wall[config].append((float(size) ** 3, float(result["wall_seconds"])))

    def skip_reason(self, config: str, size: int) -> str | None:
        if config in self.failed and size >= self.failed[config][0]:
            failed_size, why = self.failed[config]
            return f"failed at {failed_size}³ already ({why[:80]})"
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
            print(f"memory: {self.label(config)} at {size}³ skipped: {reason}", flush=True)
            return {"skipped": reason}
        print(f"memory: {self.label(config)} at {size}³ ...", flush=True)
        t0 = time.monotonic()
        try:
            r = self.runner(kind, timeout=self.time_limit_s, max_rss_mb=self.memory_limit_mb, **kwargs)
        except MedgenError as exc:
            why = str(exc).split("}: ", 1)[-1]  # run_isolated's message: "benchmark KIND {ARGS}: WHY"
            print(f"memory: {self.label(config)} at {size}³ failed: {why}", flush=True)
            if config not in self.failed or size < self.failed[config][0]:
                self.failed[config] = (size, why)
            return {"skipped": f"failed: {why[:160]}"}
        wall = time.monotonic() - t0
        r["wall_seconds"] = wall
        self.add(config, size, r)
        print(f"memory: {self.label(config)} at {size}³: {r['peak_memory_mb']:.0f} MiB, "
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


# ---------------------------------------------------------------------- across families
def known_families() -> list[str]:
    """The registered families of :data:`FAMILY_CANDIDATES`, in its order."""
    from medgen.families import registry

    return [name for name in FAMILY_CANDIDATES if name in registry.FAMILIES]


def parse_families(text: str | None) -> list[str]:
    """Distinct families from ``--families`` in the order given (default: :func:`known_families`; ``none``: [])."""
    known = known_families()
    if text is None:
        return known
    if text.strip().lower() == "none":
        return []
    names = list(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    if not names:
        raise UsageError(f"--families {text!r}: need at least one family (or none)")
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UsageError(f"--families: unknown {', '.join(repr(n) for n in unknown)} "
                         f"(known: {', '.join(known)}; or none)")
    return names


def family_config(name: str, preset: str, size: int) -> Any:
    """The architecture config of family ``name`` at ``size``³; ldm on a random autoencoder of the same preset
    (as its benchmark measures it)."""
    from medgen.families import registry

    fam = registry.get(name)
    if name == "ldm":
        autoencoder = registry.get("ldm-autoencoder").model_config(preset, size).to_dict()
        return fam.model_config(preset, size, autoencoder=autoencoder)
    return fam.model_config(preset, size)


def trainable_parameters(name: str, preset: str, size: int) -> dict[str, int]:
    """Exact trainable parameters of each network family ``name`` trains (built on the meta device); networks
    without any (ldm's frozen autoencoder) are left out."""
    import torch

    from medgen.families import registry

    fam = registry.get(name)
    cfg = family_config(name, preset, size)
    with torch.device("meta"):
        nets = fam.build(cfg, fam.hparams_from_dict({}), torch.device("meta"))
    counts = {net: sum(p.numel() for p in module.parameters() if p.requires_grad) for net, module in nets.items()}
    return {net: n for net, n in counts.items() if n}


def family_preset(name: str, preset: str) -> str:
    """Family ``name``'s preset for ``--preset``: ``paper`` is its published architecture, or where it has no
    ``paper`` preset its largest (most trainable parameters at 64³); other names are its preset of that name."""
    from medgen.families import registry

    presets = list(registry.get(name).presets)
    if preset in presets:
        return preset
    if preset == "paper":
        return max(presets, key=lambda p: sum(trainable_parameters(name, p, 64).values()))
    raise UsageError(f"--preset {preset}: family {name!r} has presets {', '.join(presets)} "
                     "(leave it out with --families)")


def fits_label(memory_mb: float | None, source: str | None, limit_mb: float = FITS_MB) -> str | None:
    """The fits_16gb cell: ``yes``/``no`` when measured, ``no (extrapolated: 41 GB)`` when extrapolated."""
    if memory_mb is None:
        return None
    verdict = "yes" if memory_mb <= limit_mb else "no"
    if source == "measured":
        return verdict
    gb = memory_mb / 1024
    return f"{verdict} (extrapolated: {gb:.1f} GB)" if gb < 10 else f"{verdict} (extrapolated: {gb:.0f} GB)"


def family_rows(family: str, preset: str, params: Mapping[int, dict[str, int] | str],
                results: Mapping[int, dict[str, Any]], *, missing: str | Mapping[int, str] = "not measured",
                limit_mb: float = FITS_MB) -> list[dict[str, Any]]:
    """The rows of one family in the table across models, one per size of ``params``.

    ``params``: size → trainable parameters per network, or why the size is not supported (a string);
    ``results``: size → training bench result, or ``{"skipped": why}``; a size missing was not measured
    (``missing`` says why, e.g. the family has no benchmark; or size → why). A size not measured gets the
    memory extrapolated from the measured sizes (:func:`predict` through the two largest, at least two
    needed), marked ``extrapolated``.
    """
    history = [(float(size) ** 3, float(r["peak_memory_mb"])) for size, r in results.items() if "skipped" not in r]
    rows: list[dict[str, Any]] = []
    for size in sorted(params):
        row: dict[str, Any] = {"family": family, "preset": preset, "size": size}
        counts = params[size]
        if isinstance(counts, str):
            row["skipped"] = f"size not supported: {counts}"
            rows.append(row)
            continue
        row.update(networks="+".join(counts), params_total=sum(counts.values()),
                   params_M=round(sum(counts.values()) / 1e6, 2))
        r = results.get(size)
        why: list[str] = []
        if r is not None and "skipped" not in r:
            mb, source = float(r["peak_memory_mb"]), "measured"
            row["seconds_per_iteration"] = float(r["seconds_median"])
        else:
            why.append(r["skipped"] if r is not None else
                       missing if isinstance(missing, str) else missing.get(size, "not measured"))
            mb = predict(history, float(size) ** 3, min_points=2)
            source = "extrapolated" if mb is not None else None
            if mb is None and r is not None:
                why.append(f"{len(history)} measured size(s), two needed to extrapolate")
        row.update(memory_mb=None if mb is None else round(mb, 1), memory_source=source,
                   fits_16gb=fits_label(mb, source, limit_mb), skipped="; ".join(why) or None)
        rows.append(row)
    return rows


def measure_families(families: Sequence[str], presets: Mapping[str, str], sizes: Sequence[int],
                     params: Mapping[str, Mapping[int, dict[str, int] | str]], *, device: str, batch: int,
                     repeats: int, threads: int | None, memory_limit_mb: float | None, time_limit_s: float,
                     measured: Mapping[tuple[str, int], dict[str, Any]] | None = None,
                     runners: Mapping[str, Callable[..., dict[str, Any]]] | None = None,
                     on_size: Callable[[int], None] | None = None,
                     smaller: Sequence[int] = ()) -> dict[str, dict[int, dict[str, Any]]]:
    """Training bench results per family and size (smallest sizes first, a :class:`Planner` per family).

    ``measured``: (family, size) → a result made already (HA-GAN's train_slab of the first table), used as
    is; ``runners``: family → its ``run_isolated`` (default the family's bench; None, or a family without a
    bench: not measured); ``on_size``: called after each size.

    ``smaller``: sizes below ``sizes``, tried largest first for a family that has fewer than two measured
    sizes after ``sizes`` because some were skipped or failed (too slow or too large on this machine), until
    it has two, so that its larger sizes can be extrapolated; sizes missing from its ``params`` or
    unsupported there are not tried.
    """
    from medgen.families import registry

    planners: dict[str, Planner] = {}
    out: dict[str, dict[int, dict[str, Any]]] = {name: {} for name in families}

    def measured_sizes(name: str) -> int:
        return sum("skipped" not in r for r in out[name].values())

    order = [(size, list(families)) for size in sorted(sizes)]
    order += [(size, None) for size in sorted((s for s in smaller if s < min(sizes)), reverse=True)]
    for size, names in order:
        if names is None:  # a smaller size: only the families still short of two measurements
            names = [n for n in families if measured_sizes(n) < 2 and size in params[n]
                     and any("skipped" in r for r in out[n].values())]
        for name in names:
            if size not in params[name] or isinstance(params[name][size], str):
                continue  # size not supported
            if runners is not None and name in runners:
                runner = runners[name]
            else:
                bench = registry.get(name).bench
                runner = bench.run_isolated if bench is not None else None
            if runner is None:
                continue
            planner = planners.get(name)
            if planner is None:
                planner = planners[name] = Planner(memory_limit_mb, time_limit_s, runner=runner,
                                                   labels={name: f"{name} training"})
            if measured is not None and (name, size) in measured:
                out[name][size] = dict(measured[(name, size)])
                planner.add(name, size, out[name][size])
                continue
            out[name][size] = planner.run(name, "train", preset=presets[name], size=size, batch=batch,
                                          device=device, warmup=1, repeats=repeats, threads=threads)
        if on_size is not None:
            on_size(size)
    return out


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


def plot_families(rows: list[dict[str, Any]], path: Path, *, memory_label: str, title: str,
                  limit_mb: float = FITS_MB) -> None:
    """Peak memory (left, log y: measured solid, extrapolated dashed, the 16 GB line) and seconds per
    training iteration (right, log y) against resolution, one colour per family."""
    from matplotlib.figure import Figure

    from medgen.core.fileio import atomic_path

    fig = Figure(figsize=(11, 5), layout="constrained")
    ax_m, ax_t = fig.subplots(1, 2)
    sizes = sorted({r["size"] for r in rows})
    families = list(dict.fromkeys(r["family"] for r in rows))
    for i, family in enumerate(families):
        color = f"C{i % 10}"
        mine = sorted((r for r in rows if r["family"] == family and r.get("memory_mb") is not None),
                      key=lambda r: r["size"])
        measured = [(r["size"], r["memory_mb"]) for r in mine if r["memory_source"] == "measured"]
        extrapolated = [(r["size"], r["memory_mb"]) for r in mine if r["memory_source"] == "extrapolated"]
        if measured:
            ax_m.plot(*zip(*measured), color=color, marker="o", ls="-", label=family)
        if extrapolated:
            before = [p for p in measured if p[0] < extrapolated[0][0]]
            line = before[-1:] + extrapolated
            ax_m.plot(*zip(*line), color=color, ls="--")
            ax_m.plot(*zip(*extrapolated), color=color, marker="o", mfc="none", ls="none",
                      label=None if measured else family)
        if not mine:
            ax_m.plot([], [], color=color, marker="x", ls="none", label=f"{family}: not measured (see the table)")
        times = [(r["size"], r["seconds_per_iteration"]) for r in mine if r.get("seconds_per_iteration") is not None]
        if times:
            ax_t.plot(*zip(*times), color=color, marker="o", ls="-", label=family)
    ax_m.axhline(limit_mb, color="k", ls=":", lw=1)
    ax_m.annotate(f"{limit_mb / 1024:g} GB", (0.01, limit_mb), xycoords=("axes fraction", "data"),
                  va="bottom", fontsize=8)
    ax_m.plot([], [], color="0.4", ls="-", marker="o", label="measured")
    ax_m.plot([], [], color="0.4", ls="--", marker="o", mfc="none", label="extrapolated (linear in voxels)")
    for ax in (ax_m, ax_t):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        if sizes:
            ax.set_xticks(sizes, [f"{s}³" for s in sizes])
        ax.minorticks_off()
        ax.set_xlabel("output resolution")
        ax.grid(alpha=0.3)
    ax_m.set_ylabel(f"peak memory, MiB ({memory_label})")
    ax_m.set_title("memory of one training iteration")
    ax_t.set_ylabel("seconds per training iteration (measured)")
    ax_t.set_title("time")
    handles: dict[str, Any] = {}
    for ax in (ax_m, ax_t):
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncol=6, fontsize=8)
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
        notes.append(_machine_note(machine, cuda, loads))
    return notes


def _machine_note(machine: dict[str, Any], cuda: bool, loads: Sequence[float]) -> str:
    load = "" if cuda else (
        f"; 1-minute load average during the measurements {min(loads):.1f}–{max(loads):.1f} (above "
        f"{machine['cpu_count']}, other processes shared the CPU and the times are inflated)")
    return (f"Machine: {machine['device_name']}, {machine['cpu_count']} CPUs, {machine['threads']} torch threads; "
            f"torch {machine['torch']}, Python {machine['python']}, medgen {machine['medgen']}{load}.")


def _family_notes(*, families: Sequence[str], presets: Mapping[str, str], cuda: bool, params_only: bool,
                  memory_label: str, repeats: int, batch: int, memory_limit_gb: float, time_limit_min: float,
                  unmeasured: Sequence[str], reused_hagan: bool, machine_note: str | None = None,
                  smallest_mb: float | None = None, extrapolate: Sequence[int] = (),
                  smaller: Sequence[int] = ()) -> list[str]:
    """What the columns of the table across models mean and how they were measured."""
    shown = ", ".join(f"{name} {presets[name]}" for name in families)
    notes = [
        (f"Presets: {shown}. With --preset paper each family's published architecture, or where it has no "
         "paper preset its largest (ddpm, ldm-autoencoder, ldm: base); with small or tiny the families' presets "
         "of that name."),
        ("networks, params_total: exact parameter counts of the networks the family trains (params_M in "
         "millions), networks built on the meta device."),
    ]
    if "ldm" in families or "ldm-autoencoder" in families:
        notes.append(
            "Latent diffusion in its two training stages: ldm-autoencoder is stage 1 (the autoencoder and its "
            "discriminator, trained on the volumes); ldm is stage 2 (the latent UNet, trained on the latents of "
            "the frozen stage-1 autoencoder of the same preset, which each iteration runs to encode the batch and "
            "whose weights count in the memory but not in the parameters).")
    if params_only:
        return notes
    bound = "" if smallest_mb is None else f": at most the smallest value measured here, {smallest_mb:.0f} MiB"
    runtime = ("tensor memory only: without the CUDA context and the allocator's reserve" if cuda else
               f"including the Python/PyTorch runtime of the process itself (a few hundred MiB{bound}), the "
               "weights, gradients and optimiser states: small models are dominated by it")
    notes.append(
        f"seconds_per_iteration: median over {repeats} timed iteration(s) after 1 warm-up of the real training loop "
        f"on random volumes (the family's updates, the EMA, data loading), batch {batch} (as the HA-GAN table), "
        f"{'bf16 autocast' if cuda else 'float32'}. An iteration is a different amount of work in each family "
        "(HA-GAN: four updates; WGAN-GP: several critic updates and one generator update; DDPM: one denoising "
        "update): compare the cost of an iteration, not the time to a trained model.")
    notes.append(f"memory_mb: {memory_label} in MiB of one training iteration, one fresh process per family and "
                 f"size ({runtime}).")
    fits = ("Measured on CPU in float32, with the runtime: a rough guide to a 16 GB GPU, where bf16 autocast "
            "shrinks the activations and the CUDA context adds its own." if not cuda else "")
    notes.append(
        "memory_source: measured, or extrapolated for a size not measured (skipped, failed or no benchmark) from "
        "the family's measured sizes: linear in the voxel count through the two largest (never decreasing), "
        f"at least two needed. fits_16gb: memory_mb <= 16 GB (16384 MiB), from the measurement or, marked so, "
        f"from the extrapolation. {fits}".strip())
    memory_limit = "" if cuda else f"memory {memory_limit_gb:g} GB (resident), "
    notes.append(
        f"Limits per configuration as in the HA-GAN table: {memory_limit}time {time_limit_min:g} min; a size that "
        "the family's smaller sizes predict to pass one is skipped, one passing it while running is stopped "
        "(column skipped).")
    if extrapolate:
        shown = ", ".join(f"{s}³" for s in extrapolate)
        notes.append(f"{shown}: not measured at this scale (above --sizes, as the columns skipped say); every "
                     "family's memory there is extrapolated from its measured sizes as above.")
    if smaller:
        shown = " and ".join(f"{s}³" for s in smaller)
        notes.append(f"{shown}: measured only for a family with fewer than two measured sizes of the table (one "
                     "too slow on this machine beyond the smallest), so that its growth can be extrapolated; an "
                     "extrapolation from such small sizes, where the fixed part dominates and the widest layers "
                     "may not yet be present, is the roughest in the table.")
    if reused_hagan:
        notes.append("hagan: the train_slab measurement of the HA-GAN table (memory.csv), not measured twice.")
    if unmeasured:
        notes.append(f"{', '.join(unmeasured)}: no benchmark (medgen bench) yet, parameters only; the memory of "
                     "such a family is not extrapolated.")
    if machine_note:
        notes.append(machine_note)
    return notes


def run(ws: Workspace, out: ExperimentOutput, args: argparse.Namespace) -> dict[str, Any]:
    from medgen.families.hagan.bench import machine_info
    from medgen.core.device import resolve_device
    from medgen.families import registry
    from medgen.families.hagan import get_preset

    _check_args(ws, args)
    scale = ws.scale.name
    sizes = parse_sizes(args.sizes, scale)
    preset = args.preset or DEFAULT_PRESET[scale]
    for size in sizes:
        get_preset(preset, size)  # one clear line for an unsupported size
    families = parse_families(getattr(args, "families", None))
    presets = {name: family_preset(name, preset) for name in families}
    device = str(resolve_device(ws.device))
    cuda = device.startswith("cuda")
    batch = args.batch or (4 if cuda else 1)
    repeats = args.repeats or DEFAULT_REPEATS[scale]
    threads = args.threads or DEFAULT_THREADS[scale]
    memory_limit_mb = None if cuda else args.memory_limit_gb * 1024
    planner = Planner(memory_limit_mb, args.time_limit_min * 60)

    rows: list[dict[str, Any]] = []
    measurements: list[dict[str, Any]] = []
    hagan_train: dict[tuple[str, int], dict[str, Any]] = {}
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
        hagan_train[("hagan", size)] = measured["train_slab"]
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

    # The table across models.
    extrapolate = [] if args.params_only else parse_extrapolate(getattr(args, "extrapolate_to", None), scale, sizes)
    smaller = [] if args.params_only else [s for s in SMALLER_SIZES if s < min(sizes)]
    family_params: dict[str, dict[int, dict[str, int] | str]] = {}
    for name in families:
        family_params[name] = {}
        for size in [*smaller, *sizes, *extrapolate]:
            try:
                family_params[name][size] = trainable_parameters(name, presets[name], size)
            except UsageError as exc:
                family_params[name][size] = str(exc)
    family_results: dict[str, dict[int, dict[str, Any]]] = {name: {} for name in families}
    if families and not args.params_only:
        reuse = {k: v for k, v in hagan_train.items() if presets.get("hagan") == preset}
        family_results = measure_families(
            families, presets, sizes, family_params, device=device, batch=batch, repeats=repeats, threads=threads,
            memory_limit_mb=memory_limit_mb, time_limit_s=args.time_limit_min * 60, measured=reuse,
            on_size=lambda size: loads.append(os.getloadavg()[0]), smaller=smaller)
    no_bench = "not measured: the family has no benchmark (medgen bench)"
    beyond = "not measured: above --sizes"
    family_table = []
    for name in families:
        shown = {size: counts for size, counts in family_params[name].items()
                 if size in sizes or size in extrapolate or size in family_results[name]}
        missing = {size: no_bench if registry.get(name).bench is None else
                   beyond if size in extrapolate else "not measured" for size in shown}
        family_table += family_rows(name, presets[name], shown, family_results[name], missing=missing)
    family_measurements = [{"family": name, "size": size, **r} for name in families
                           for size, r in family_results[name].items()]
    if not measurements:  # the measuring processes' own record when HA-GAN's table measured nothing
        machine = next((r["machine"] for r in family_measurements if "machine" in r), machine)
    for r in family_measurements:
        r.pop("machine", None)

    families_result = None
    if families:
        unmeasured = [name for name in families if not family_results[name]] if not args.params_only else []
        family_notes = _family_notes(
            families=families, presets=presets, cuda=cuda, params_only=args.params_only, memory_label=memory_label,
            repeats=repeats, batch=batch, memory_limit_gb=args.memory_limit_gb, time_limit_min=args.time_limit_min,
            unmeasured=unmeasured, reused_hagan=bool(family_results.get("hagan")) and presets.get("hagan") == preset,
            extrapolate=extrapolate,
            smaller=sorted({r["size"] for r in family_table if r["size"] < min(sizes)}, reverse=True),
            machine_note=None if args.params_only else _machine_note(machine, cuda, loads),
            smallest_mb=min((r["memory_mb"] for r in family_table if r.get("memory_source") == "measured"),
                            default=None))
        family_columns = FAMILY_PARAM_COLUMNS if args.params_only else FAMILY_COLUMNS
        where = "" if args.params_only else f", training batch {batch}, {machine['device_name']}"
        out.write_table(family_table, family_columns, stem="memory-families", notes=family_notes,
                        title=f"Parameters, seconds per training iteration and peak memory across families "
                              f"({preset} presets{where})")
        if not args.params_only:
            fig_path = out.path("memory-families.png")
            plot_families(family_table, fig_path, memory_label=memory_label,
                          title=f"One training iteration per family ({preset} presets, batch {batch}) on "
                                f"{machine['device_name']}; dashed: extrapolated from the measured sizes")
            out.add_figure(fig_path)
        families_result = {"families": families, "presets": presets, "rows": family_table,
                           "measurements": family_measurements}
    return {"preset": preset, "device": device, "batch": batch, "repeats": repeats, "sizes": sizes,
            "params_only": bool(args.params_only), "memory_measure": memory_label, "rows": rows,
            "measurements": measurements, "families": families_result}
