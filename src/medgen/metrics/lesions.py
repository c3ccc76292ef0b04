"""Per-lesion detection: which lesions an anomaly map finds at a threshold, by lesion size.

A lesion instance map is an integer volume of the anomaly map's shape: 0 background,
1..n lesion k (as the phantoms write their ``lesion`` volume). At a threshold ``t`` a lesion
counts as detected when the maximum of the anomaly map inside its mask reaches ``t``
(``max >= t``, the rule of :mod:`medgen.metrics.scores`: a voxel is anomalous when its score
reaches the threshold). The threshold should be fixed without the lesions, e.g. by
:func:`medgen.metrics.scores.threshold_at_fpr` on the maps of normal volumes.

A lesion's size is its equivalent diameter: the diameter of the sphere of the same volume,
``(6 V / π)^(1/3)`` with ``V`` = voxels × voxel volume (mm³). Detection rates are reported
by size bins given as edges in mm (default ``(10, 20)``: under 10 mm, 10–20 mm, 20 mm and
more); the bins run from 0 to infinity, each including its lower edge.

Every labelled voxel counts, whether or not the lesion's voxels are connected: the label
is the instance, as written.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np

DEFAULT_SIZE_BINS_MM = (10.0, 20.0)


@dataclass(frozen=True)
class LesionRecord:
    """One lesion: ``volume`` (index in the inputs), ``lesion`` (its label), ``voxels``,
    ``diameter_mm`` (equivalent diameter), ``max_score`` (of the map inside it), ``detected``
    (``max_score >= threshold``)."""

    volume: int
    lesion: int
    voxels: int
    diameter_mm: float
    max_score: float
    detected: bool


@dataclass
class LesionDetection:
    """The result of :func:`lesion_detection`: ``records`` (one per lesion, by volume then
    label) and ``by_size`` (per size bin: ``bin``, ``low_mm``, ``high_mm``, ``n``,
    ``detected``, ``rate``; ``rate`` None for an empty bin)."""

    threshold: float
    records: list[LesionRecord] = field(default_factory=list)
    by_size: list[dict[str, Any]] = field(default_factory=list)

    @property
    def n_lesions(self) -> int:
        return len(self.records)

    @property
    def n_detected(self) -> int:
        return sum(r.detected for r in self.records)

    @property
    def rate(self) -> float | None:
        """Share of all lesions detected (None without lesions)."""
        return self.n_detected / self.n_lesions if self.records else None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: ``threshold``, ``n_lesions``, ``n_detected``, ``rate``, ``by_size``, ``lesions``."""
        return {
            "threshold": self.threshold,
            "n_lesions": self.n_lesions,
            "n_detected": self.n_detected,
            "rate": self.rate,
            "by_size": [dict(b) for b in self.by_size],
            "lesions": [asdict(r) for r in self.records],
        }


def equivalent_diameter(voxels: int | np.ndarray, spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> Any:
    """Diameter (mm) of the sphere with the volume of ``voxels`` voxels of size ``spacing`` (mm)."""
    return np.cbrt(6.0 * np.asarray(voxels, dtype=np.float64) * float(np.prod(spacing)) / math.pi)


def _volumes(x: Any, what: str) -> list[np.ndarray]:
    if isinstance(x, np.ndarray) and x.ndim == 3:
        return [x]
    if isinstance(x, np.ndarray) and x.ndim != 4:
        raise ValueError(f"{what}: expected 3D volumes [n, X, Y, Z] or a list of 3D arrays, got shape {x.shape}")
    out = [np.asarray(v) for v in x]
    for i, v in enumerate(out):
        if v.ndim != 3:
            raise ValueError(f"{what} {i}: expected a 3D volume, got shape {v.shape}")
    return out


def _spacings(spacing: Any, n: int) -> np.ndarray:
    sp = np.asarray(spacing, dtype=np.float64)
    if sp.ndim == 0:
        sp = np.full(3, float(sp))
    if sp.shape == (3,):
        sp = np.broadcast_to(sp, (n, 3))
    if sp.shape != (n, 3):
        raise ValueError(f"spacing must be a voxel size (mm) along x, y, z, or one per volume [{n}, 3], got shape {np.shape(spacing)}")
    if not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise ValueError("spacing must be positive voxel sizes in mm")
    return sp


def _bin_edges(bins: Sequence[float]) -> list[float]:
    edges = [float(b) for b in bins]
    if any(math.isnan(e) or e < 0 for e in edges) or any(b <= a for a, b in zip(edges, edges[1:])):
        raise ValueError(f"size bins must be increasing edges in mm, at least 0, got {list(bins)}")
    return sorted({0.0, *edges, math.inf})


def _bin_name(low: float, high: float) -> str:
    if low == 0:
        return f"<{high:g} mm"
    if math.isinf(high):
        return f">={low:g} mm"
    return f"{low:g}-{high:g} mm"


def detection_by_size(records: Sequence[LesionRecord], bins: Sequence[float] = DEFAULT_SIZE_BINS_MM) -> list[dict[str, Any]]:
    """Detection counts and rates of ``records`` by equivalent diameter, ``bins`` as edges in
    mm (the bins run from 0 to infinity; each includes its lower edge)."""
    edges = _bin_edges(bins)
    out = []
    for low, high in zip(edges, edges[1:]):
        inside = [r for r in records if low <= r.diameter_mm < high]
        hits = sum(r.detected for r in inside)
        out.append({"bin": _bin_name(low, high), "low_mm": low, "high_mm": high, "n": len(inside),
                    "detected": hits, "rate": hits / len(inside) if inside else None})
    return out


def lesion_maxima(score_map: np.ndarray, lesion_map: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, voxel counts and map maxima of the lesions of one volume (labels ascending)."""
    inside = lesion_map > 0
    ids = lesion_map[inside]
    values = score_map[inside]
    if ids.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64)
    order = np.argsort(ids, kind="stable")
    ids, values = ids[order], values[order]
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    counts = np.diff(np.r_[starts, ids.size])
    return ids[starts].astype(np.int64), counts.astype(np.int64), np.maximum.reduceat(values, starts)


def lesion_detection(
    maps: Any,
    lesions: Any,
    threshold: float,
    spacing: Any = (1.0, 1.0, 1.0),
    bins: Sequence[float] = DEFAULT_SIZE_BINS_MM,
) -> LesionDetection:
    """Which lesions the anomaly ``maps`` detect at ``threshold``, with rates by size.

    ``maps``: anomaly maps, an array ``[n, X, Y, Z]``, a list of 3D arrays or one 3D array;
    ``lesions``: integer lesion instance maps of the same shapes (0 background, k > 0 lesion
    k); ``spacing``: voxel size in mm along x, y, z (one number: isotropic), or one per volume
    ``[n, 3]``; ``bins``: size-bin edges in mm. A lesion is detected when the map's maximum
    inside it is ``>= threshold``. Returns a :class:`LesionDetection`.
    """
    threshold = float(threshold)
    if math.isnan(threshold):
        raise ValueError("threshold must be a number, got nan")
    score_maps, lesion_maps = _volumes(maps, "anomaly map"), _volumes(lesions, "lesion map")
    if len(score_maps) != len(lesion_maps):
        raise ValueError(f"{len(score_maps)} anomaly maps but {len(lesion_maps)} lesion maps")
    spacings = _spacings(spacing, len(score_maps))
    _bin_edges(bins)  # checked before the work
    records: list[LesionRecord] = []
    for i, (m, lab) in enumerate(zip(score_maps, lesion_maps)):
        if m.shape != lab.shape:
            raise ValueError(f"anomaly map {i} has shape {m.shape} but its lesion map {lab.shape}")
        if lab.dtype.kind not in "iub":
            if lab.dtype.kind != "f" or not np.all(lab == np.round(lab)):
                raise ValueError(f"lesion map {i}: labels must be integers (0 background, 1..n lesions), got {lab.dtype}")
            lab = lab.astype(np.int64)
        if lab.size and lab.min() < 0:
            raise ValueError(f"lesion map {i}: labels must be 0 (background) or positive, found {lab.min()}")
        if not np.all(np.isfinite(m)):
            raise ValueError(f"anomaly map {i}: scores must be finite numbers")
        ids, counts, maxima = lesion_maxima(m, lab)
        diameters = equivalent_diameter(counts, spacings[i])
        maxima = maxima.astype(np.float64)  # compared as the records show them
        records += [
            LesionRecord(i, int(k), int(c), float(d), float(mx), bool(mx >= threshold))
            for k, c, d, mx in zip(ids, counts, diameters, maxima)
        ]
    return LesionDetection(threshold, records, detection_by_size(records, bins))
