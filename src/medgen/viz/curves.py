"""Training curves of a run, from ``RUN/metrics.csv`` (no TensorBoard needed).

For HA-GAN, two panels: the adversarial losses (D and G, BCE in nats; at the
discriminator's chance level loss_D = 2·ln 2 ≈ 1.39 and loss_G = ln 2 ≈ 0.69)
and the encoder reconstruction losses (E^H and E^G, mean absolute error in
[-1, 1] intensity units, i.e. half the HU window per unit for CT). Other families:
one panel with every logged ``loss_*`` column.

Example::

    from medgen.viz.curves import save_training_curves
    save_training_curves("runs/thorax64", "curves.png")
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

from medgen.core.errors import InputError
from medgen.core.fileio import atomic_path

ADVERSARIAL = ("loss_D", "loss_G")
RECONSTRUCTION = ("loss_EH", "loss_EG")
_LABELS = {
    "loss_D": "D (BCE)",
    "loss_G": "G (non-saturating BCE)",
    "loss_EH": "E^H: |G^H(E^H(x_slab)) - x_slab|",
    "loss_EG": "E^G: slab + low-res L1",
}


def read_metrics(run_dir: str | os.PathLike) -> dict[str, list[float]]:
    """Columns of ``RUN/metrics.csv`` as float lists (``iteration`` included)."""
    path = Path(run_dir) / "metrics.csv"
    if not path.is_file():
        raise InputError(f"{path}: no training metrics here (is this a training run folder?)")
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise InputError(f"{path}: no rows yet")
    columns: dict[str, list[float]] = {k: [] for k in rows[0]}
    for row in rows:
        for k in columns:
            value = row.get(k, "")
            columns[k].append(float(value) if value not in ("", None) else math.nan)
    return columns


def save_training_curves(run_dir: str | os.PathLike, path: str | os.PathLike, *, dpi: int = 110) -> Path:
    """Plot the run's losses against iterations into ``path`` (PNG), atomically."""
    from matplotlib.figure import Figure

    m = read_metrics(run_dir)
    it = m["iteration"]
    panels = [(ADVERSARIAL, "adversarial losses"), (RECONSTRUCTION, "encoder reconstruction (L1, [-1, 1] units)")]
    panels = [(keys, title) for keys, title in panels if any(k in m for k in keys)]
    if not panels:  # another family: its own named losses
        logged = tuple(k for k in m if k.startswith("loss_"))
        if not logged:
            raise InputError(f"{Path(run_dir) / 'metrics.csv'}: no loss columns")
        panels = [(logged, "logged losses")]
    fig = Figure(figsize=(5.0 * len(panels), 3.6))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (keys, title) in zip(axes, panels):
        for k in keys:
            if k in m:
                ax.plot(it, m[k], label=_LABELS.get(k, k.removeprefix("loss_")), linewidth=1.2)
        if keys == ADVERSARIAL:
            ax.axhline(2 * math.log(2), color="grey", linestyle=":", linewidth=0.8, label="chance: D 2 ln 2, G ln 2")
            ax.axhline(math.log(2), color="grey", linestyle=":", linewidth=0.8)
        ax.set_xlabel("iteration")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    return path
