"""Overlap of two label maps, label by label: Dice and the 95 % Hausdorff distance (segmentation metrics).

For one predicted label map and its reference of the same shape (integer classes per voxel) and each
label ``k`` asked for (:func:`label_metrics`):

* ``dice_<k>`` = 2|P ∩ R| / (|P| + |R|) of the voxels labelled ``k`` (MONAI ``compute_dice``, the function
  behind ``DiceMetric``);
* ``hd95_<k>``: the 95th percentile of the symmetric surface distances between the two regions' edges, in
  millimetres with the voxel ``spacing`` (MONAI ``compute_hausdorff_distance(percentile=95, spacing=...)``).

A label absent from both maps gives NaN for both (nothing to compare); a label present in only one gives
Dice 0 and a Hausdorff distance of ``inf`` (no surface to reach). Background (label 0) is left out unless
asked for.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Sequence

import numpy as np


def _binary(labels: np.ndarray, k: int):
    import torch

    return torch.from_numpy(np.ascontiguousarray(labels == k, dtype=np.float32))[None, None]


def dice(pred: np.ndarray, ref: np.ndarray, label: int) -> float:
    """Dice of label ``label`` (module docstring): NaN when absent from both, 0 when absent from one."""
    from monai.metrics import compute_dice

    p, r = _binary(pred, label), _binary(ref, label)
    if not (p.any() or r.any()):
        return math.nan
    return float(compute_dice(p, r, include_background=True, ignore_empty=False)[0, 0])


def hausdorff95(pred: np.ndarray, ref: np.ndarray, label: int, spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> float:
    """95 % Hausdorff distance of label ``label`` in mm (module docstring): NaN when absent from both, inf from one."""
    from monai.metrics import compute_hausdorff_distance

    p, r = _binary(pred, label), _binary(ref, label)
    has_p, has_r = bool(p.any()), bool(r.any())
    if not (has_p or has_r):
        return math.nan
    if has_p != has_r:
        return math.inf
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # MONAI's own deprecated argument, passed internally
        value = compute_hausdorff_distance(p, r, include_background=True, percentile=95,
                                           spacing=[float(s) for s in spacing])
    return float(value[0, 0])


def _check(pred: Any, ref: Any) -> tuple[np.ndarray, np.ndarray]:
    p, r = np.asarray(pred), np.asarray(ref)
    if p.ndim != 3 or p.shape != r.shape:
        raise ValueError(f"label maps of shapes {p.shape} and {r.shape}: need two (X, Y, Z) maps of one shape")
    return np.rint(p).astype(np.int64), np.rint(r).astype(np.int64)


def labels_of(*maps: Any, background: bool = False) -> list[int]:
    """The labels present in any of ``maps`` (sorted; 0 only with ``background``)."""
    found: set[int] = set()
    for m in maps:
        found.update(int(v) for v in np.unique(np.rint(np.asarray(m)).astype(np.int64)))
    return sorted(k for k in found if background or k != 0)


def label_metrics(pred: Any, ref: Any, labels: Sequence[int] | None = None,
                  spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> dict[str, float]:
    """``{"dice_<k>": ..., "hd95_<k>": ...}`` for every label ``k`` of ``labels`` (default: the nonzero labels
    of either map), and their means over the labels present in either map as ``dice_mean``/``hd95_mean``
    (NaN labels left out; an inf distance makes the mean inf)."""
    p, r = _check(pred, ref)
    ks = labels_of(p, r) if labels is None else [int(k) for k in labels]
    row: dict[str, float] = {}
    for k in ks:
        row[f"dice_{k}"] = dice(p, r, k)
        row[f"hd95_{k}"] = hausdorff95(p, r, k, spacing)
    for name in ("dice", "hd95"):
        values = [row[f"{name}_{k}"] for k in ks if not math.isnan(row[f"{name}_{k}"])]
        row[f"{name}_mean"] = float(np.mean(values)) if values else math.nan
    return row


def evaluate_label_pairs(outputs: Any, targets: Any, label_volume: str = "tissue", labels: Sequence[int] | None = None,
                         progress: bool = False) -> dict[str, Any]:
    """:func:`label_metrics` for every predicted / reference label map pair matched by id
    (``medgen evaluate --paired --labels``).

    ``outputs``, ``targets``: folders of label-map files (NIfTI/NRRD/MHA/.npy, reoriented to RAS+) or
    preprocessed data sets, whose label volume ``label_volume`` is read. Distances use the targets' voxel
    spacing. ``labels``: the labels to report (default: every nonzero label found in the targets and
    outputs, the same columns for every pair).

    Returns ``{"metrics": {name: {value, std, n}}, "rows": [per pair], "settings": {...}}``.
    """
    from tqdm import tqdm

    from medgen.core.errors import InputError, UsageError
    from medgen.metrics.paired_regions import summarise

    out_ids, out_read = _label_maps(outputs, label_volume, "--fake")
    tgt_ids, tgt_read = _label_maps(targets, label_volume, "--real")
    index_t = {sid: i for i, sid in enumerate(tgt_ids)}
    common = [(i, sid) for i, sid in enumerate(out_ids) if sid in index_t]
    if not common:
        raise UsageError(f"no id is in both {outputs} and {targets}: label maps are paired by id")
    unmatched = [sid for sid in out_ids if sid not in index_t]
    pairs = []
    for i, sid in common:
        (o, _), (t, spacing) = out_read(i), tgt_read(index_t[sid])
        if o.shape != t.shape:
            raise InputError(f"{sid}: predicted label map of shape {o.shape}, its reference has {t.shape}")
        pairs.append((sid, o, t, spacing))
    ks = sorted(set().union(*(labels_of(o, t) for _, o, t, _ in pairs))) if labels is None else list(labels)
    rows = [{"id": sid, **label_metrics(o, t, ks, spacing)}
            for sid, o, t, spacing in tqdm(pairs, desc="labels", unit="vol", disable=not progress)]
    return {"metrics": summarise(rows), "rows": rows,
            "settings": {"outputs": str(outputs), "targets": str(targets), "label_volume": label_volume,
                         "labels": ks, "pairs": len(rows), "unmatched_outputs": unmatched,
                         "hd95_units": "mm (the targets' voxel spacing)"}}


def _label_maps(source: Any, label_volume: str, what: str):
    """(ids, read(i) → (int64 label map, spacing in mm)) of a preprocessed data set's label volume or a folder
    of label-map files."""
    from pathlib import Path

    from medgen.core.errors import InputError
    from medgen.metrics.volumes import open_volume_set

    root = Path(source)
    if (root / "manifest.csv").is_file() and (root / "preprocess.json").is_file():
        from medgen.core.volume import parse_spacing
        from medgen.data.dataset import load_manifest, load_preprocess_info, volume_column, volume_kinds

        kinds = volume_kinds(load_preprocess_info(root), root / "preprocess.json")
        if kinds.get(label_volume) != "label":
            labelled = [n for n, k in kinds.items() if k == "label"]
            raise InputError(f"{root}: no label volume {label_volume!r} (label volumes: {', '.join(labelled) or 'none'}); "
                             "choose one with --label-volume")
        rows = load_manifest(root)
        column = volume_column(label_volume)

        def read_dataset(i: int):
            row = rows[i]
            path = root / (row.get(column) or "")
            if not path.is_file():
                raise InputError(f"{path}: {label_volume!r} volume of {row['id']!r} is missing")
            spacing = parse_spacing(row.get("spacing", "")) or (1.0, 1.0, 1.0)
            return np.asarray(np.load(path), dtype=np.int64), spacing

        return [r["id"] for r in rows], read_dataset
    vs = open_volume_set(root, what=what)

    def read_file(i: int):
        array, spacing = vs.read_stored(i)
        if not np.isfinite(array).all() or (array != np.round(array)).any():
            raise InputError(f"{vs.files[i]}: not a label map (non-integer values)")
        return array.astype(np.int64), tuple(float(s) for s in spacing)

    return list(vs.ids), read_file
