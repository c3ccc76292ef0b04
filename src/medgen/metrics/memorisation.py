"""Memorisation (privacy) check: are generated volumes copies of training patients?

For every generated volume we find its nearest training volume; for every
held-out real volume (patients never used for training) likewise. A model
that generalises produces samples about as far from the training set as new
patients are, so

    ratio = median(fake -> nearest train) / median(held-out -> nearest train)

is about 1 (it can exceed 1 for a poor generator); a ratio well below 1 means
samples sit unusually close to training patients.

Distances are measured in one or two spaces:

feature
    Euclidean distance between feature vectors (e.g. of a 3D ResNet).
voxel
    RMSE between the intensity volumes (in [-1, 1]) after area-averaging each
    to at most ``vox_size`` voxels per side: smooths away noise-level
    differences and keeps the cost low (n_fake x n_train dot products).

Per-sample copy rule (both spaces, a sample is flagged if either flags it)::

    likely_copy  <=>  d(fake, nearest train) < copy_margin * Q_q(reference distances)

with ``Q_q`` the ``copy_quantile`` quantile (linear interpolation) of the
held-out -> train nearest distances. Held-out patients are by construction
not copies, so ``Q_q`` is about how close an *independent* patient comes to the
training set; with few held-out volumes (n < 1/q) it is about their minimum.
The margin (default 0.5) keeps the false-alarm rate of an honest generator
well below q, since its samples' distances follow the held-out distribution,
while exact or noisy copies (distance near 0) are still caught; both choices
are robust for the small n typical of medical data sets (no density estimate,
no assumption on the distribution's shape). Without held-out data the
reference is the leave-one-out nearest distance within the training set
(slightly larger than held-out distances, so slightly more sensitive). The
held-out set must contain no repeat scans of training patients, or the
threshold collapses towards 0.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

COPY_RULE = (
    "likely_copy if the distance to the nearest training volume is below "
    "copy_margin x the copy_quantile quantile of held-out (else leave-one-out training) "
    "nearest-training distances, in any space"
)


def nearest_neighbours(
    query: np.ndarray, reference: np.ndarray, *, exclude_self: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean distance from each row of ``query`` [n, D] to its nearest row of
    ``reference`` [m, D], and that row's index. ``exclude_self`` (query is
    reference) skips the zero distance of each row to itself."""
    q = np.asarray(query, dtype=np.float64)
    r = np.asarray(reference, dtype=np.float64)
    # |q - r|^2 = |q|^2 + |r|^2 - 2 q.r: one matrix product instead of an
    # n x m x D difference array; float64 keeps near-copies' small distances exact enough.
    d2 = (q * q).sum(1)[:, None] + (r * r).sum(1)[None, :] - 2.0 * q @ r.T
    np.maximum(d2, 0.0, out=d2)
    if exclude_self:
        np.fill_diagonal(d2, np.inf)
    idx = d2.argmin(axis=1)
    return np.sqrt(d2[np.arange(len(q)), idx]), idx


def voxel_vectors(volumes, vox_size: int | None = 32) -> np.ndarray:
    """Flatten volumes (each (X, Y, Z) or (1, X, Y, Z)) to rows, area-averaged to at
    most ``vox_size`` voxels per side (``None``: full resolution)."""
    import torch
    import torch.nn.functional as F

    rows = []
    for v in volumes:
        a = np.asarray(v, dtype=np.float32)
        a = a[0] if a.ndim == 4 and a.shape[0] == 1 else a
        if a.ndim != 3:
            raise ValueError(f"expected 3D volumes, got shape {a.shape}")
        if vox_size is not None and max(a.shape) > vox_size:
            out = tuple(min(s, vox_size) for s in a.shape)
            a = F.adaptive_avg_pool3d(torch.from_numpy(np.ascontiguousarray(a))[None, None], out)[0, 0].numpy()
        rows.append(a.ravel())
    if len({r.size for r in rows}) > 1:
        raise ValueError("volumes differ in shape")
    return np.stack(rows)


def _space_report(fake, train, heldout, fake_ids, train_ids, *, copy_quantile, copy_margin, k, scale, unit):
    d_ft, i_ft = nearest_neighbours(fake, train)
    if heldout is not None:
        d_ref, _ = nearest_neighbours(heldout, train)
        reference = "heldout"
    elif len(train) >= 2:
        d_ref, _ = nearest_neighbours(train, train, exclude_self=True)
        reference = "train_leave_one_out"
    else:
        raise ValueError("need held-out volumes or at least 2 training volumes for a reference distance")
    d_ft, d_ref = d_ft * scale, d_ref * scale
    threshold = copy_margin * float(np.quantile(d_ref, copy_quantile))
    flags = d_ft < threshold
    med_f, med_r = float(np.median(d_ft)), float(np.median(d_ref))
    order = np.argsort(d_ft, kind="stable")[:k]
    pairs = [
        {
            "fake_index": int(i),
            "fake_id": fake_ids[i],
            "train_index": int(i_ft[i]),
            "train_id": train_ids[i_ft[i]],
            "distance": float(d_ft[i]),
            "likely_copy": bool(flags[i]),
        }
        for i in order
    ]
    return {
        "unit": unit,
        "reference": reference,
        "median_fake_to_train": med_f,
        "median_reference_to_train": med_r,
        "ratio": med_f / med_r if med_r > 0 else math.nan,
        "threshold": threshold,
        "n_likely_copy": int(flags.sum()),
        "fake_to_train": [float(x) for x in d_ft],
        "reference_to_train": [float(x) for x in d_ref],
        "nearest_train_index": [int(x) for x in i_ft],
        "likely_copy": [bool(x) for x in flags],
        "closest_pairs": pairs,
    }


def memorisation_report(
    fake_feats: np.ndarray | None,
    train_feats: np.ndarray | None,
    heldout_feats: np.ndarray | None = None,
    *,
    fake_ids: Sequence[str],
    train_ids: Sequence[str],
    heldout_ids: Sequence[str] | None = None,
    fake_vox: Sequence[np.ndarray] | np.ndarray | None = None,
    train_vox: Sequence[np.ndarray] | np.ndarray | None = None,
    heldout_vox: Sequence[np.ndarray] | np.ndarray | None = None,
    copy_quantile: float = 0.05,
    copy_margin: float = 0.5,
    k: int = 5,
    vox_size: int | None = 32,
) -> dict:
    """Nearest-training-volume distances of generated vs held-out volumes (see module docstring).

    ``*_feats``: [n, D] feature arrays (may be ``None`` for a voxel-only
    check); ``*_vox``: volumes in [-1, 1] (each (X, Y, Z)); ``*_ids``: names in
    row order. ``k``: number of closest fake-train pairs to list.

    Returns a dict with ``spaces`` (``"feature"`` and/or ``"voxel"``, each with
    medians, ``ratio``, ``threshold``, per-fake distances, nearest training
    indices, flags and ``closest_pairs``), and at top level the summary of the
    primary space (feature if given, else voxel): ``median_fake_to_train``,
    ``median_reference_to_train``, ``reference``, ``ratio``, ``closest_pairs``
    (dicts with fake/train index and id, ``distance``, ``likely_copy``); plus
    ``likely_copy`` (per fake, flagged in any space), ``likely_copy_ids``,
    ``n_likely_copy``, ``n_fake``, ``n_train``, ``n_heldout`` and ``rule``.
    """
    if not 0.0 <= copy_quantile <= 1.0:
        raise ValueError(f"copy_quantile must be in [0, 1], got {copy_quantile}")
    fake_ids, train_ids = list(fake_ids), list(train_ids)
    common = {"copy_quantile": copy_quantile, "copy_margin": copy_margin, "k": k}
    spaces: dict[str, dict] = {}

    def check(name: str, rows: np.ndarray | None, ids: Sequence | None) -> None:
        if rows is not None and ids is not None and len(rows) != len(ids):
            raise ValueError(f"{name}: {len(rows)} rows but {len(ids)} ids")

    if fake_feats is not None:
        if train_feats is None:
            raise ValueError("fake_feats given without train_feats")
        ff, tf = np.asarray(fake_feats), np.asarray(train_feats)
        hf = None if heldout_feats is None else np.asarray(heldout_feats)
        if ff.ndim != 2 or tf.ndim != 2 or (hf is not None and hf.ndim != 2):
            raise ValueError("feature arrays must be 2D [n, D]")
        check("fake_feats", ff, fake_ids), check("train_feats", tf, train_ids), check("heldout_feats", hf, heldout_ids)
        spaces["feature"] = _space_report(
            ff, tf, hf, fake_ids, train_ids, scale=1.0, unit="euclidean feature distance", **common
        )
    if fake_vox is not None:
        if train_vox is None:
            raise ValueError("fake_vox given without train_vox")
        fv, tv = voxel_vectors(fake_vox, vox_size), voxel_vectors(train_vox, vox_size)
        hv = None if heldout_vox is None else voxel_vectors(heldout_vox, vox_size)
        if tv.shape[1] != fv.shape[1] or (hv is not None and hv.shape[1] != fv.shape[1]):
            raise ValueError("fake, training and held-out volumes differ in shape")
        check("fake_vox", fv, fake_ids), check("train_vox", tv, train_ids), check("heldout_vox", hv, heldout_ids)
        spaces["voxel"] = _space_report(
            fv, tv, hv, fake_ids, train_ids, scale=1.0 / math.sqrt(fv.shape[1]),
            unit=f"RMSE of [-1, 1] intensities at <= {vox_size or 'full'} voxels per side", **common
        )
    if not spaces:
        raise ValueError("give features (fake_feats, train_feats) and/or volumes (fake_vox, train_vox)")

    primary = spaces["feature" if "feature" in spaces else "voxel"]
    flags = np.zeros(len(fake_ids), dtype=bool)
    for s in spaces.values():
        flags |= np.asarray(s["likely_copy"], dtype=bool)
    n_heldout = len(heldout_feats) if heldout_feats is not None else (len(heldout_vox) if heldout_vox is not None else 0)
    return {
        "n_fake": len(fake_ids),
        "n_train": len(train_ids),
        "n_heldout": n_heldout,
        "rule": COPY_RULE + f" (copy_quantile={copy_quantile}, copy_margin={copy_margin})",
        "reference": primary["reference"],
        "median_fake_to_train": primary["median_fake_to_train"],
        "median_reference_to_train": primary["median_reference_to_train"],
        "ratio": primary["ratio"],
        "closest_pairs": primary["closest_pairs"],
        "likely_copy": [bool(x) for x in flags],
        "likely_copy_ids": [fake_ids[i] for i in np.flatnonzero(flags)],
        "n_likely_copy": int(flags.sum()),
        "spaces": spaces,
    }


def save_nearest_pairs_figure(
    pairs: Sequence[dict],
    fake_volumes: Sequence[np.ndarray],
    train_volumes: Sequence[np.ndarray],
    path,
    *,
    vmin: float = -1.0,
    vmax: float = 1.0,
) -> None:
    """Write a PNG showing each pair (e.g. ``report["closest_pairs"]``): a row of
    central axial, coronal and sagittal slices of the generated volume, and
    under it the same of its nearest training volume (``medgen.viz.mosaic``).

    ``pairs`` need ``fake_index`` and ``train_index`` (rows of ``fake_volumes``
    and ``train_volumes``); ids, ``distance`` and ``likely_copy`` label the
    rows when present. ``vmin``/``vmax``: one display window for all panels,
    in the volumes' intensity unit. Written atomically.
    """
    from medgen.viz.mosaic import save_mosaic

    if not pairs:
        raise ValueError("no pairs to show")
    volumes, titles = [], []
    for p in pairs:
        volumes += [_as_volume(fake_volumes[p["fake_index"]]), _as_volume(train_volumes[p["train_index"]])]
        dist = f"  d={p['distance']:.4g}" if "distance" in p else ""
        flag = "  LIKELY COPY" if p.get("likely_copy") else ""
        titles += [
            f"generated {p.get('fake_id', p['fake_index'])}{dist}{flag}",
            f"nearest training {p.get('train_id', p['train_index'])}",
        ]
    save_mosaic(volumes, path, titles=titles, vmin=vmin, vmax=vmax)


def _as_volume(v) -> np.ndarray:
    a = np.asarray(v, dtype=np.float32)
    return a[0] if a.ndim == 4 and a.shape[0] == 1 else a
