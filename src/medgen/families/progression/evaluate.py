"""Scoring follow-up predictions on held-out longitudinal pairs, against the baselines.

:func:`evaluate` predicts every pair of a split with each method (the trivial :class:`~.baselines.NoChange`
and :class:`~.baselines.LinearTrend`, fitted on the training split, and any trained models) and scores each
prediction against the true follow-up:

* ``l1`` (mean absolute error), ``psnr`` and ``ssim`` (:mod:`medgen.metrics.paired`, data range 2; SSIM needs
  11 voxels a side), and ``l1_change``: the mean absolute error of the predicted change (prediction − baseline)
  restricted to the voxels that truly changed by more than ``change_threshold`` — whole-volume scores are
  dominated by the unchanged voxels and the scan noise, which no method can predict;
* when the data set has the baseline's label map (``tissue``) and the manifest the follow-up's true ventricle
  volume (``ventricle_volume_ml_followup``): the ventricle volume measured on the prediction and on the true
  follow-up, and their errors against the true volume (:mod:`medgen.metrics.longitudinal`).

Example::

    from medgen.families.progression.evaluate import evaluate

    result = evaluate("data/brain64", {"progression": medgen.load("runs/atrophy64")}, split="test")
    result.summary["progression"]["l1"]          # (mean, sd) over the test pairs
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from medgen.core.errors import InputError
from medgen.families.progression.baselines import LinearTrend, NoChange
from medgen.metrics import longitudinal, paired

TRUTH_COLUMN = "ventricle_volume_ml_followup"


@dataclass
class Evaluation:
    """``rows``: one dict per (pair, method): ``id``, ``method``, ``interval_years`` and the scores;
    ``summary``: method → score → (mean, sd) over the pairs (NaN scores left out); ``notes``: what was not
    measured and why."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _spacing(row: Mapping[str, str]) -> list[float]:
    text = (row.get("spacing") or "").strip()
    try:
        values = [float(v) for v in text.split("x")]
    except ValueError:
        values = []
    if len(values) == 1:
        values *= 3
    if len(values) != 3 or not all(v > 0 for v in values):
        raise InputError(f"manifest.csv: subject {row.get('id')!r} has no voxel spacing (column 'spacing': {text!r})")
    return values


def scores(predicted: np.ndarray, baseline: np.ndarray, followup: np.ndarray,
           change_threshold: float = 0.1) -> dict[str, float]:
    """``l1``, ``psnr``, ``ssim`` (NaN below 11 voxels a side) and ``l1_change`` (NaN when no voxel changed by
    more than ``change_threshold``) of one prediction (see the module docstring)."""
    out = {"l1": float(np.mean(np.abs(predicted.astype(np.float64) - followup))),
           "psnr": paired.psnr(predicted, followup),
           "ssim": paired.ssim(predicted, followup) if min(predicted.shape) >= paired.SSIM_WINDOW else math.nan}
    changed = np.abs(followup.astype(np.float64) - baseline) > change_threshold
    out["l1_change"] = (float(np.mean(np.abs((predicted.astype(np.float64) - baseline)[changed]
                                             - (followup.astype(np.float64) - baseline)[changed])))
                        if changed.any() else math.nan)
    return out


def evaluate(data: str | os.PathLike, models: Mapping[str, Any] | None = None, split: str = "test",
             ids: Sequence[str] | None = None, seed: int = 0, fractions: Sequence[float] = (0.8, 0.1, 0.1),
             baseline: str = "image", target: str = "followup", interval_column: str = "interval_years",
             tissue: str = "tissue", truth_column: str = TRUTH_COLUMN, trend: LinearTrend | None = None,
             margin_mm: float = 10.0, change_threshold: float = 0.1) -> Evaluation:
    """Score the baselines and ``models`` (name → an object with ``predict(baseline, interval_years)``) on the
    pairs of ``split`` of the preprocessed longitudinal data set ``data`` (``seed`` and ``fractions`` as the
    training runs split; ``ids``: exactly these subjects). ``trend``: the linear trend to use (default: fitted
    on the ``train`` split of the same seed and fractions). The volume and column names default to the brain
    phantoms'; the ventricle scores are left out (with a note) when ``tissue`` or ``truth_column`` is missing."""
    from medgen.data.dataset import VolumeDataset, load_manifest, load_preprocess_info, volume_kinds

    kinds = volume_kinds(load_preprocess_info(data))
    by_id = {r["id"]: r for r in load_manifest(data)}
    columns = set(next(iter(by_id.values())).keys()) if by_id else set()
    result = Evaluation()
    measure = tissue in kinds and truth_column in columns
    if not measure:
        result.notes.append(f"ventricle volumes not measured: the data set lacks the label volume {tissue!r} or the "
                            f"manifest column {truth_column!r}")
    keys = (baseline, target) + ((tissue,) if measure else ())
    ds = VolumeDataset(data, split=split, seed=seed, fractions=tuple(fractions), label_column=None,
                       covariate_columns=(interval_column,) + ((truth_column,) if measure else ()),
                       ids=list(ids) if ids is not None else None, keys=keys)
    if len(ds) == 0:
        raise InputError(f"{data}: the {split} split is empty: nothing to evaluate")
    if trend is None:
        trend = LinearTrend.from_dataset(data, split="train", baseline=baseline, target=target,
                                         interval_column=interval_column, seed=seed, fractions=fractions)
        result.notes.append(f"linear trend: the mean per-year change of {trend.n_pairs} training pair(s)")
    methods: dict[str, Any] = {"no change": NoChange(), "linear trend": trend, **dict(models or {})}
    for i in range(len(ds)):
        item = ds[i]
        x, y = item[baseline][0].numpy(), item[target][0].numpy()
        t = float(item["covariates"][0])
        ref = None
        if measure:
            try:
                ref = longitudinal.ventricle_reference(x, item[tissue][0].numpy(), _spacing(by_id[item["id"]]),
                                                       margin_mm=margin_mm)
            except ValueError as exc:
                result.notes.append(f"{item['id']}: ventricle volume not measured ({exc})")
        for name, method in methods.items():
            pred = np.asarray(method.predict(x, t), dtype=np.float32)
            row: dict[str, Any] = {"id": item["id"], "method": name, "interval_years": t,
                                   **scores(pred, x, y, change_threshold)}
            if ref is not None:
                row.update(longitudinal.ventricle_errors(pred, y, ref, float(item["covariates"][1])))
                row["ventricle_ml_true"] = float(item["covariates"][1])
            result.rows.append(row)
    for name in methods:
        mine = [r for r in result.rows if r["method"] == name]
        keys_ = list(dict.fromkeys(k for r in mine for k in r if k not in ("id", "method")))
        result.summary[name] = {}
        for k in keys_:
            values = np.array([r.get(k, math.nan) for r in mine], dtype=np.float64)
            values = values[np.isfinite(values)]
            result.summary[name][k] = ((float(values.mean()), float(values.std())) if values.size
                                       else (math.nan, math.nan))
    return result
