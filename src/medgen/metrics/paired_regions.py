"""Paired metrics where the anatomy is: over the body, in Hounsfield units inside lung and bone, inside a mask.

A whole-volume PSNR is dominated by air, which every model gets right; the image-to-image literature
reports errors over the body and, for CT, in HU inside the tissues the task is about. For one output /
target pair in the data set's [-1, 1] units (:func:`region_metrics`):

* ``psnr``, ``ssim``, ``nmse``: over the whole volume (:mod:`medgen.metrics.paired`);
* ``psnr_body``, ``ssim_body``: over the body (CT: :func:`~medgen.metrics.anatomy.body_mask` of the target
  in HU; MRI: :func:`~medgen.metrics.anatomy.foreground_mask` of the target);
* CT only: ``hu_mae_body``, ``hu_mae_lung``, ``hu_mae_bone``: mean |output − target| in HU inside the body,
  the lungs (:func:`~medgen.metrics.anatomy.lung_mask`) and bone (body voxels above +300 HU), all found on
  the target;
* with a ``mask`` (inpainting: the hidden region): ``mae_mask`` (in [-1, 1] units) and, for CT,
  ``hu_mae_mask``.

A region with no voxel gives NaN for its metrics rather than an error.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from medgen.metrics import anatomy, paired


def region_metrics(output: np.ndarray, target: np.ndarray, window: tuple[float, float] | None,
                   mask: np.ndarray | None = None) -> dict[str, float]:
    """The metrics of the module docstring; ``window``: the CT window (HU at -1 and 1), None for MRI."""
    out = np.asarray(output, dtype=np.float64)
    tgt = np.asarray(target, dtype=np.float64)
    row: dict[str, float] = {"psnr": paired.psnr(out, tgt), "ssim": paired.ssim(out, tgt), "nmse": paired.nmse(out, tgt)}
    if window is not None:
        lo, hi = window
        to_hu = lambda x: lo + (x + 1.0) / 2.0 * (hi - lo)  # noqa: E731
        hu_out, hu_tgt = to_hu(out), to_hu(tgt)
        body = anatomy.body_mask(hu_tgt)
        lung, _ = anatomy.lung_mask(hu_tgt, body)
        bone = body & (hu_tgt > anatomy.HU_BONE)
        for name, region in (("body", body), ("lung", lung), ("bone", bone)):
            row[f"hu_mae_{name}"] = _mae(hu_out, hu_tgt, region)
    else:
        body = anatomy.foreground_mask(tgt)
    row["psnr_body"] = paired.psnr(out, tgt, body) if body.any() else math.nan
    row["ssim_body"] = _masked_ssim(out, tgt, body)
    if mask is not None:
        m = np.asarray(mask).astype(bool)
        row["mae_mask"] = _mae(out, tgt, m)
        if window is not None:
            row["hu_mae_mask"] = _mae(hu_out, hu_tgt, m)
    return row


def _mae(a: np.ndarray, b: np.ndarray, region: np.ndarray) -> float:
    return float(np.abs(a[region] - b[region]).mean()) if region.any() else math.nan


def _masked_ssim(out: np.ndarray, tgt: np.ndarray, region: np.ndarray) -> float:
    try:
        return paired.ssim(out, tgt, region) if region.any() else math.nan
    except ValueError:  # the region lies outside SSIM's valid interior
        return math.nan


def summarise(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per metric: the mean and population std over the rows (NaN and inf left out), and how many counted."""
    names = [k for k in rows[0] if k != "id"] if rows else []
    out = {}
    for name in names:
        values = np.array([r[name] for r in rows if isinstance(r.get(name), (int, float))], dtype=np.float64)
        values = values[np.isfinite(values)]
        out[name] = {"value": float(values.mean()) if values.size else math.nan,
                     "std": float(values.std()) if values.size else math.nan, "n": int(values.size)}
    return out


def evaluate_pairs(outputs: Any, targets: Any, masks: Any = None, modality: str | None = None,
                   progress: bool = False) -> dict[str, Any]:
    """:func:`region_metrics` for every output/target pair matched by id (what ``medgen evaluate --paired`` does).

    ``outputs``, ``targets``, ``masks``: folders of volumes (NIfTI/NRRD/MHA/.npy; CT in HU is read through
    the targets' window) or preprocessed data sets, as :func:`medgen.metrics.volumes.as_volume_set` opens
    them; pairs are the ids both sets hold (at least one; outputs without a target are listed). ``masks``:
    label volumes (nonzero = the region) with the same ids. ``modality``: when the targets do not say.

    Returns ``{"metrics": {name: {value, std, n}}, "rows": [per pair], "settings": {...}}``.
    """
    from tqdm import tqdm

    from medgen.core.errors import InputError, UsageError
    from medgen.metrics.volumes import as_volume_set

    tgt = as_volume_set(targets, modality=modality, what="--real")
    out = as_volume_set(outputs, modality=modality or tgt.modality, what="--fake")
    if out.modality == "ct" and out.hu_window is None:
        out.hu_window = tgt.hu_window
    msk = as_volume_set(masks, what="--masks") if masks is not None else None
    index_t = {sid: i for i, sid in enumerate(tgt.ids)}
    index_m = {sid: i for i, sid in enumerate(msk.ids)} if msk is not None else {}
    common = [(i, sid) for i, sid in enumerate(out.ids) if sid in index_t]
    if not common:
        raise UsageError(f"no id is in both {out.root} and {tgt.root}: outputs and targets are paired by id")
    unmatched = [sid for sid in out.ids if sid not in index_t]
    window = (tgt.hu_window or (-1024.0, 600.0)) if tgt.modality == "ct" else None
    rows = []
    for i, sid in tqdm(common, desc="paired", unit="vol", disable=not progress):
        o, t = out[i], tgt[index_t[sid]]
        if o.shape != t.shape:
            raise InputError(f"{out.files[i]}: shape {o.shape}, its target {tgt.files[index_t[sid]]} has {t.shape}")
        m = None
        if msk is not None:
            if sid not in index_m:
                raise InputError(f"{msk.root}: no mask for {sid!r}")
            m = np.asarray(msk.read_stored(index_m[sid])[0]) != 0
        rows.append({"id": sid, **region_metrics(o, t, window, m)})
    return {"metrics": summarise(rows), "rows": rows,
            "settings": {"outputs": str(out.root), "targets": str(tgt.root), "masks": None if msk is None else str(msk.root),
                         "modality": tgt.modality, "hu_window": list(window) if window else None,
                         "pairs": len(rows), "unmatched_outputs": unmatched}}
