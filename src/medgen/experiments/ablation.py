"""``medgen experiment ablation``: what each part of HA-GAN contributes (the paper's ablation study).

Trains, for the same number of iterations and at the scale's small size (demo:
32³; full: 128³; with ``--data``: your data's size), the full model and three
variants that each remove one part:

* ``no low-res branch`` (``--no-lowres``): no G^L and no D^L; the discriminator
  only ever sees full-resolution slabs, never the whole volume;
* ``no encoder`` (``--no-encoder``): no E^H and E^G; the model cannot encode volumes;
* ``deterministic slabs`` (``--slab-selection deterministic``): the training slab
  cycles through the non-overlapping positions instead of starting at random.

The full model is the run the synthesis experiment trains (``WORK/runs/hagan-S``),
reused, or ``--run``. Every variant's samples are compared with the held-out set
(FID, MMD, precision/recall/coverage, MS-SSIM diversity, HU anatomy), next to an
untrained generator (the floor). The table adds the training speed (seconds per
iteration, from ``RUN/metrics.csv``) and, for variants with an encoder, the
reconstruction error mean |G(E(x)) - x| on held-out volumes.

Writes ``ablation.csv``/``ablation.md``, ``ablation.png`` (axial and coronal
mid-slices of a few held-out volumes and of a few samples of every variant) and
the evaluation JSON of every row.
"""

from __future__ import annotations

import argparse
import csv
import math
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from medgen.core.errors import UsageError
from medgen.experiments.workspace import METRIC_COLUMNS, METRIC_NOTES, ExperimentOutput, Workspace, metric_row

HELP = "full HA-GAN vs. without the low-resolution branch, without the encoder, with deterministic slabs"
DESCRIPTION = __doc__.split("\n\n", 1)[1]

# Volumes shown per variant in ablation.png.
FIGURE_VOLUMES = 3


@dataclass(frozen=True)
class Variant:
    """One ablation variant: ``key`` (file names), ``label`` (table row), ``train`` (keyword
    options of :meth:`Workspace.model <medgen.experiments.workspace.Workspace.model>`,
    i.e. of ``medgen train``) and ``note`` (what it leaves out, for the table)."""

    key: str
    label: str
    train: Mapping[str, Any]
    note: str

    @property
    def options(self) -> tuple[str, ...]:
        """Its ``medgen train`` flags (``("--no-lowres",)``; empty for the full model)."""
        from medgen.families.run_config import train_flags

        return tuple(train_flags(self.train))

    def run_name(self, size: int) -> str:
        """Its run folder in ``WORK/runs``; the full model is named like the synthesis
        experiment's (``hagan-S``), so that run is reused, not retrained."""
        return f"hagan-{size}" if self.key == "full" else f"ablation-{self.key}-{size}"


VARIANTS: tuple[Variant, ...] = (
    Variant("full", "full", {},
            "the complete model: G^A, G^L, G^H, D^H, D^L, E^H, E^G, random slab starts"),
    Variant("nolowres", "no low-res branch", {"use_lowres": False},
            "without G^L and D^L: the discriminator judges full-resolution slabs only, never the whole volume"),
    Variant("noencoder", "no encoder", {"use_encoder": False},
            "without E^H and E^G: nothing is trained to encode volumes (hence no recon_mae). E is trained against "
            "a frozen G and its steps draw no random numbers, so G and D train exactly as in the full model "
            "for the same seed (here bitwise equal weights): its sample metrics equal the full model's by construction"),
    Variant("deterministic", "deterministic slabs", {"slab_selection": "deterministic"},
            "without random slab selection: the training slab cycles through the non-overlapping positions in order"),
)
UNTRAINED = "untrained generator"
COLUMNS: tuple[str, ...] = ("variant", "options", "iterations", "s_per_iter", "recon_mae", *METRIC_COLUMNS)


# ---------------------------------------------------------------------- sizes and the --run check
def ablation_size(ws: Workspace) -> int:
    """Edge length (voxels) of every ablation model: your data's size with ``--data``, else the scale's small size."""
    return ws.main_size if ws.data is not None else ws.scale.small_size


def check_full_run(run_dir: Path, size: int, preset: str) -> None:
    """Raise UsageError unless ``run_dir`` can stand for the ``full`` variant.

    It must be an unconditional model of the full architecture (low-resolution
    branch, encoder, random slabs) at ``size``³ with the layer shapes of
    ``preset``, the architecture the other variants are trained with.
    """
    from medgen.families.hagan import get_preset
    from medgen.families.hagan.config import HAGANConfig
    from medgen.training.runconfig import RunConfig

    cfg = RunConfig.load(run_dir)
    model = HAGANConfig.from_dict(cfg.model)
    hp = cfg.hparams
    if model.size != size:
        raise UsageError(
            f"--run {run_dir} is a {model.size}³ model, but the ablation variants are trained at {size}³ "
            f"(the scale's small size, or the size of --data): pass a run trained at {size}³, or drop --run"
        )
    removed = [opt for opt, on in (("--no-lowres", not model.use_lowres), ("--no-encoder", not hp.get("use_encoder", True)),
                                   ("--slab-selection deterministic", hp.get("slab_selection", "random") != "random")) if on]
    if removed:
        raise UsageError(f"--run {run_dir} was trained with {', '.join(removed)}; it replaces the full model, "
                         "so it must be trained without ablation options")
    if model.num_classes > 0:
        raise UsageError(f"--run {run_dir} is class-conditional ({model.num_classes} classes); "
                         "the ablation variants are unconditional, pass an unconditional run")
    expected = get_preset(preset, size, use_lowres=True, num_classes=0)
    differ = [f"{k} {getattr(model, k)!r} (variants: {getattr(expected, k)!r})"
              for k in expected.__dataclass_fields__ if getattr(model, k) != getattr(expected, k)]
    if differ:
        raise UsageError(f"--run {run_dir}: its architecture differs from the variants' (preset {preset!r} at "
                         f"{size}³): {'; '.join(differ)}; pass a run of that preset or choose --scale")


# ---------------------------------------------------------------------- per-variant measurements
def seconds_per_iteration(run_dir: Path) -> float | None:
    """Training time per iteration (s) from ``RUN/metrics.csv``; None when the run logged no speed.

    The median over the logging intervals of 1 / ``it_per_s`` (the trainer's
    iterations per second of each interval), so an interval that also wrote a
    checkpoint or a sample mosaic does not dominate. Measured on the machine
    that trained the run.
    """
    path = Path(run_dir) / "metrics.csv"
    if not path.is_file():
        return None
    values = []
    with open(path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            try:
                rate = float(row.get("it_per_s") or "nan")
            except ValueError:
                continue
            if math.isfinite(rate) and rate > 0:
                values.append(1.0 / rate)
    return float(np.median(values)) if values else None


def mean_abs_error(real: np.ndarray, recon: np.ndarray) -> float:
    """Mean |recon - real| over all voxels (float64), in the volumes' units ([-1, 1] for preprocessed data)."""
    real, recon = np.asarray(real), np.asarray(recon)
    if real.shape != recon.shape:
        raise ValueError(f"shapes differ: real {real.shape}, reconstruction {recon.shape}")
    return float(np.mean(np.abs(recon.astype(np.float64) - real.astype(np.float64))))


def reconstruction_mae(model, volumes: Iterable[np.ndarray]) -> float:
    """Mean absolute reconstruction error mean |G(E(x)) - x| over all voxels of all ``volumes``.

    ``model``: a :class:`medgen.families.hagan.model.HAGANModel` with an encoder (its
    ``reconstruct``: the sampling generator, the EMA copy when the run has one,
    as in ``medgen encode``); ``volumes``: [S, S, S] arrays in [-1, 1]. Each
    volume is reconstructed on its own (memory of one volume); every voxel
    weighs the same. The error is in [-1, 1] units (for CT, times half the HU
    window width gives HU).
    """
    total, count = 0.0, 0
    for x in volumes:
        x = np.asarray(x, dtype=np.float32)
        recon = model.reconstruct(x[None])[0]
        total += mean_abs_error(x, recon) * x.size
        count += x.size
    if count == 0:
        raise ValueError("no volumes to reconstruct")
    return total / count


def heldout_volumes(heldout_dir: Path, n: int | None = None) -> Iterable[np.ndarray]:
    """The first ``n`` volumes (sorted ids; all when None) of a preprocessed folder, float32 in [-1, 1]."""
    from medgen.data.dataset import VolumeDataset

    ds = VolumeDataset(heldout_dir, split="all", label_column=None, keys=("image",))
    for i in range(len(ds) if n is None else min(n, len(ds))):
        yield ds[i]["image"][0].numpy()


def heldout_reconstruction_mae(run_dir: Path, heldout_dir: Path, n: int | None, device: str = "auto") -> float | None:
    """:func:`reconstruction_mae` of the run's latest checkpoint on held-out volumes; None without an encoder."""
    from medgen.core.device import resolve_device
    from medgen.families import registry

    model = registry.load(run_dir, device=resolve_device(device))
    if model.encoder is None:
        return None
    print(f"\n{run_dir}: reconstruction error G(E(x)) on {heldout_dir}", flush=True)
    return reconstruction_mae(model, heldout_volumes(heldout_dir, n))


def _hu_hint(data_dir: Path) -> str:
    """For CT data: how a [-1, 1] error converts to HU (half the window width)."""
    from medgen.data.dataset import load_preprocess_info
    from medgen.inference.generate import ct_window, is_ct

    info = load_preprocess_info(data_dir)
    if not is_ct(info):
        return ""
    lo, hi = ct_window(info)
    return f"; times {(hi - lo) / 2:g} gives HU for this data's CT window [{lo:g}, {hi:g}] HU"


# ---------------------------------------------------------------------- figure
def sample_volumes(folder: Path, k: int) -> list[np.ndarray]:
    """The first ``k`` generated volumes (``*.npy``, sorted by name) of a sample folder."""
    files = sorted(Path(folder).glob("*.npy"))[:k]
    return [np.load(f).astype(np.float32) for f in files]


FIGURE_PLANES: tuple[str, ...] = ("axial", "coronal")


def variant_strip(volumes: Sequence[np.ndarray], vmin: float = -1.0, vmax: float = 1.0, plane_gap: int = 1,
                  volume_gap: int = 4, planes: Sequence[str] = FIGURE_PLANES) -> tuple[np.ndarray, list[float]]:
    """One image row in [0, 1] (white = 1 between panels) and the column centre of every panel.

    For every volume, left to right, its axial and coronal mid-slice in display
    orientation (:func:`medgen.viz.mosaic.plane_slice`); grey levels map
    ``vmin``…``vmax`` (volume units; [-1, 1] is the whole preprocessing
    window) to black…white. Panels of one volume are ``plane_gap`` pixels apart,
    volumes ``volume_gap`` pixels.
    """
    from medgen.viz.mosaic import plane_slice

    panels = [np.clip((plane_slice(v, p).astype(np.float64) - vmin) / (vmax - vmin), 0.0, 1.0)
              for v in volumes for p in planes]
    height = max(p.shape[0] for p in panels)
    parts: list[np.ndarray] = []
    centres: list[float] = []
    x = 0
    for k, panel in enumerate(panels):
        if k:
            gap = plane_gap if k % len(planes) else volume_gap
            parts.append(np.ones((height, gap)))
            x += gap
        top = (height - panel.shape[0]) // 2
        parts.append(np.pad(panel, ((top, height - panel.shape[0] - top), (0, 0)), constant_values=1.0))
        centres.append(x + (panel.shape[1] - 1) / 2)
        x += panel.shape[1]
    return np.concatenate(parts, axis=1).astype(np.float32), centres


def save_ablation_figure(rows: Sequence[tuple[str, Sequence[np.ndarray]]], path: Path, *, vmin: float = -1.0,
                         vmax: float = 1.0, dpi: int = 120, planes: Sequence[str] = FIGURE_PLANES,
                         title: str | None = None) -> Path:
    """``path`` (PNG): one row per (label, volumes) with the ``planes`` mid-slices (default axial and coronal)
    of every volume, the label on the left; ``title`` above (default: the planes and the grey window)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from medgen.core.fileio import atomic_path

    rows = [(label, vols) for label, vols in rows if len(vols)]
    if not rows:
        raise ValueError("no volumes to show")
    strips = [variant_strip(vols, vmin, vmax, planes=planes) for _, vols in rows]
    widest = max(range(len(strips)), key=lambda i: strips[i][0].shape[1])
    width = strips[widest][0].shape[1]
    image_w, title_h, row_gap = 7.2, 0.55, 0.12  # inches
    label_w = max(1.8, 0.2 + 0.09 * max(len(label) for label, _ in rows))  # about 0.09 in per 10-pt character
    row_h = image_w * max(s.shape[0] for s, _ in strips) / width
    fig_w, fig_h = label_w + image_w + 0.1, title_h + len(rows) * (row_h + row_gap)
    fig = Figure(figsize=(fig_w, fig_h), dpi=dpi)
    FigureCanvasAgg(fig)
    for r, ((label, _), (strip, centres)) in enumerate(zip(rows, strips)):
        bottom = fig_h - title_h - (r + 1) * (row_h + row_gap) + row_gap / 2
        ax = fig.add_axes((label_w / fig_w, bottom / fig_h, image_w / fig_w, row_h / fig_h))
        padded = np.pad(strip, ((0, 0), (0, width - strip.shape[1])), constant_values=1.0)
        ax.imshow(padded, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest", aspect="auto")
        ax.set_axis_off()
        ax.text(-0.015, 0.5, label, transform=ax.transAxes, ha="right", va="center", fontsize=10)
        if r == 0:
            names = [f"#{i // len(planes) + 1} {planes[i % len(planes)]}"
                     for i in range(len(strips[widest][1]))]
            for c, name in zip(strips[widest][1], names):
                ax.text(c, -1.0, name, ha="center", va="bottom", fontsize=8)
    planes_text = " and ".join([", ".join(planes[:-1]), planes[-1]] if len(planes) > 1 else list(planes))
    fig.suptitle(title or f"{planes_text.capitalize()} mid-slices, grey window [{vmin:g}, {vmax:g}]",
                 y=1.0 - 0.12 / fig_h, va="top", fontsize=11)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return Path(path)


# ---------------------------------------------------------------------- the experiment
def run(ws: Workspace, out: ExperimentOutput, args: argparse.Namespace) -> dict[str, Any]:
    from medgen.experiments.workspace import checkpoint_iteration

    size = ablation_size(ws)
    if args.run is not None:
        check_full_run(Path(args.run), size, ws.scale.hagan_preset)
    heldout_dir = ws.datasets(size)[1]
    eval_dir = out.path("evaluations")
    n = ws.scale.n_samples
    rows: list[dict[str, Any]] = []
    shown: list[tuple[str, list[np.ndarray]]] = []

    def evaluate(label: str, slug: str, fake: Path) -> dict[str, Any]:
        report = ws.evaluate(heldout_dir, fake, eval_dir / f"{slug}.json", metrics="fid,mmd,prdc,ms_ssim,anatomy",
                             features=args.features, weights=args.weights, n=n)
        shown.append((label, sample_volumes(fake, FIGURE_VOLUMES)))
        return metric_row(report)

    for variant in VARIANTS:
        if variant.key == "full" and args.run is not None:
            run_dir, options = Path(args.run), f"(given run {args.run})"
        else:
            run_dir = ws.model(variant.run_name(size), size, **variant.train)
            options = " ".join(variant.options) or "(defaults)"
        samples = ws.samples(run_dir, f"ablation-{variant.key}-{size}")
        row: dict[str, Any] = {
            "variant": variant.label,
            "options": options,
            "iterations": checkpoint_iteration(run_dir),
            "s_per_iter": seconds_per_iteration(run_dir),
            "recon_mae": heldout_reconstruction_mae(run_dir, heldout_dir, n, ws.device),
        }
        row.update(evaluate(variant.label, f"{variant.key}-{size}", samples))
        rows.append(row)

    untrained = ws.untrained_samples(size, f"untrained-{size}")
    rows.append({"variant": UNTRAINED, "options": "(random initialisation)", "iterations": 0, "s_per_iter": None,
                 "recon_mae": None, **evaluate(UNTRAINED, f"untrained-{size}", untrained)})

    real = list(heldout_volumes(heldout_dir, FIGURE_VOLUMES))
    figure = save_ablation_figure([("real (held-out)", real), *shown], out.path("ablation.png"))
    out.add_figure(figure)

    extractor = "med3d (MedicalNet)" if args.features == "med3d" else "random (seeded random weights)"
    iterations = {r["iterations"] for r in rows[: len(VARIANTS)]}
    notes = [
        (f"All models at {size}³, preset {ws.scale.hagan_preset!r}, batch {ws.scale.batch}, trained for "
         f"{ws.train_iters} iterations each; features of FID/MMD/PRDC: {extractor}."),
        *METRIC_NOTES,
        *[f"{v.label}: {v.note}." for v in VARIANTS],
        f"{UNTRAINED}: the full architecture at its random initialisation, the floor every variant must beat.",
        ("s_per_iter: training seconds per iteration, the median over the logging intervals of RUN/metrics.csv, "
         "on the machine and device that trained the run (empty when the run logged no speed); compare rows "
         "only when they were trained on the same machine."),
        (f"recon_mae: mean |G(E(x)) - x| over the voxels of the first (up to) {n} held-out volumes, in [-1, 1] "
         f"units (the whole intensity window{_hu_hint(heldout_dir)}); G is the generator the samples come from "
         "(the EMA copy), as in medgen encode; lower is better."),
        f"{n} volumes per set at most; "
        + ("held-out phantoms are the reference set." if ws.uses_phantoms else "--heldout is the reference set."),
    ]
    if len(iterations) > 1:
        notes.insert(1, "The variants' iteration counts differ (see iterations): a reused or given run was trained "
                        "longer or shorter; compare with care.")
    out.write_table(rows, COLUMNS, title=f"Ablation of HA-GAN at {size}³", notes=notes)
    return {"size": size, "rows": rows}
