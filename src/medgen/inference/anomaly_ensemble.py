"""Several anomaly detectors as one: ``medgen anomaly-ensemble OUT OUT [OUT ...] --out DIR``.

Detectors of normal anatomy fail on different volumes — an autoencoder blurs a small nodule into its
surroundings, mask-and-inpaint predicts a vessel that crosses a hidden cube but not a nodule — so
averaging their opinions finds more than the best of them alone. Their raw scores cannot be averaged:
each is in its own model's residual scale. The blob excess calibrated against a reference of normal
volumes, ``score_blob_excess_z`` (:meth:`medgen.inference.anomaly.Reference.blob_excess_z`: standard
deviations above the excess that normal volumes reach under that model), is in one unit for every
model, so the ensemble score of a volume is the mean of its members' ``score_blob_excess_z``.

Each member is the output folder of ``medgen anomaly RUN DATA --out OUT --reference NORMAL_DATA`` on the
same volumes. The score of a volume depends on that volume and the references only — not on the other
volumes scored with it, as ranks within a batch would — so one new scan is scored as it would be among
many. The ensemble is volume-level: the members' voxel maps stay in their folders.

Outputs in ``DIR`` (written atomically): ``scores.csv`` (id, ``score``, each member's
``score_blob_excess_z`` as ``z_1``, ``z_2``, … in the order given, and the ground-truth columns when the
members have them), ``members.json`` (which folder is ``z_k``) and, with ground truth (the ``abnormal``
column), ``metrics.json``: volume-level AUROC and AUPRC of the ensemble score and of each member's.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from medgen.core.errors import InputError, UsageError
from medgen.inference.anomaly import ABNORMAL_COLUMN, BLOB_EXCESS_Z_COLUMN, ground_truth_metrics

#: Ground-truth columns of the members' ``scores.csv`` carried into the ensemble's (from the first member).
TRUTH_COLUMNS = (ABNORMAL_COLUMN, "lesion_count", "lesion_voxels", "largest_lesion_mm")


def read_member(folder: Path) -> dict[str, dict[str, str]]:
    """The rows of a member's ``scores.csv`` by volume id; InputError (naming the folder) when it has none or
    was scored without a reference (no ``score_blob_excess_z``)."""
    path = Path(folder) / "scores.csv"
    if not path.is_file():
        raise InputError(f"{folder}: no scores.csv (the output folder of `medgen anomaly ... --reference`)")
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise InputError(f"{path}: no volumes")
    if BLOB_EXCESS_Z_COLUMN not in rows[0]:
        raise InputError(f"{path}: no {BLOB_EXCESS_Z_COLUMN} column; score with `medgen anomaly ... "
                         "--reference NORMAL_DATA` so the detector's scores are calibrated")
    out: dict[str, dict[str, str]] = {}
    for row in rows:
        try:
            z = float(row[BLOB_EXCESS_Z_COLUMN])
        except ValueError:
            raise InputError(f"{path}: volume {row['id']!r} has {BLOB_EXCESS_Z_COLUMN} "
                             f"{row[BLOB_EXCESS_Z_COLUMN]!r}, not a number") from None
        if not np.isfinite(z):
            raise InputError(f"{path}: volume {row['id']!r} has {BLOB_EXCESS_Z_COLUMN} {z}")
        out[row["id"]] = row
    return out


def combine(members: list[dict[str, dict[str, str]]], names: list[str]) -> list[dict[str, Any]]:
    """One row per volume: ``score`` the mean of the members' :data:`BLOB_EXCESS_Z_COLUMN`, ``z_k`` each
    member's, and the first member's ground-truth columns. The members must have scored the same volumes
    (InputError naming the first that did not, ``names`` naming the members)."""
    if len(members) < 2:
        raise UsageError(f"{len(members)} detector(s): an ensemble needs at least two")
    ids = list(members[0])
    for member, name in zip(members[1:], names[1:]):
        missing, extra = set(ids) - set(member), set(member) - set(ids)
        if missing or extra:
            what = (f"lacks {sorted(missing)[:3]}" if missing else f"has {sorted(extra)[:3]} besides")
            raise InputError(f"{name}: scored other volumes than {names[0]} ({what}); score the same data set "
                             "with every detector")
    rows = []
    for sid in ids:
        z = [float(m[sid][BLOB_EXCESS_Z_COLUMN]) for m in members]
        row: dict[str, Any] = {"id": sid, "score": float(np.mean(z)), **{f"z_{k + 1}": v for k, v in enumerate(z)}}
        first = members[0][sid]
        for column in TRUTH_COLUMNS:
            if first.get(column, "") != "":
                value = float(first[column])
                row[column] = int(value) if column != "largest_lesion_mm" else value
        rows.append(row)
    return rows


def anomaly_ensemble(folders: list[Path], out_dir: Path) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Combine the ``medgen anomaly --reference`` outputs ``folders`` into ``out_dir`` (module docstring).
    Returns the rows and the metrics (None without ground truth)."""
    from medgen.core.fileio import atomic_write_json
    from medgen.core.tables import write_csv

    folders = [Path(f) for f in folders]
    out_dir = Path(out_dir)
    if any(f.resolve() == out_dir.resolve() for f in folders):
        raise UsageError(f"--out {out_dir}: is one of the detectors' folders; write the ensemble elsewhere")
    names = [str(f) for f in folders]
    if len(set(f.resolve() for f in folders)) < len(folders):
        raise UsageError("the same folder is given twice: an ensemble of distinct detectors")
    rows = combine([read_member(f) for f in folders], names)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(out_dir / "scores.csv", rows, list(dict.fromkeys(k for r in rows for k in r)))
    atomic_write_json(out_dir / "members.json", {
        "score": f"mean of the members' {BLOB_EXCESS_Z_COLUMN}",
        "members": {f"z_{k + 1}": name for k, name in enumerate(names)}})
    metrics = None
    if all(ABNORMAL_COLUMN in r for r in rows):
        metrics = ground_truth_metrics(rows, [], None)
        for k in range(len(folders)):
            member = [{ABNORMAL_COLUMN: r[ABNORMAL_COLUMN], "score": r[f"z_{k + 1}"]} for r in rows]
            m = ground_truth_metrics(member, [], None)
            metrics[f"auroc_z_{k + 1}"], metrics[f"auprc_z_{k + 1}"] = m.get("auroc_score"), m.get("auprc_score")
        metrics["members"] = names
        atomic_write_json(out_dir / "metrics.json", metrics)
    else:  # an earlier ensemble's metrics in this folder would not be those of these scores
        (out_dir / "metrics.json").unlink(missing_ok=True)
    return rows, metrics
