"""Lesions: anomalies with exact voxel ground truth, painted last onto a phantom.

A lesion is a shape defined in millimetres (an ellipsoid, optionally lobulated, made of
nested compartments) placed in the subject's anatomy and painted onto the image *before
noise*, from the volume's own lesion random stream, after everything else. So the same
subject without lesions is, bit for bit, the volume generated without them, and a
phantom with lesions adds:

* the named volume ``lesion``: an integer instance map of the grid (int16), 0 where there
  is no lesion and k = 1..n on the voxels of the k-th visible lesion;
* the named volume ``normal``: the image before the lesions were painted (the lesion-free
  "counterfactual" an anomaly detector's reconstruction is scored against); for brain MRI
  also ``normal_t2``, the lesion-free ``t2`` volume;
* the factors ``abnormal`` (1 if at least one lesion is visible, else 0),
  ``lesion_count`` (visible lesions), ``lesion_ml`` (their total volume: mask voxels ×
  voxel volume) and ``lesions``, a JSON list with one entry per lesion drawn: ``label``
  (its value in ``lesion``; 0 if not visible), ``kind``, centre ``x``, ``y``, ``z`` in
  voxels (fractional indices), ``diameter_mm`` (the diameter of the sphere of the shape's
  volume), ``voxels`` and ``ml`` (its mask), ``visible``, and the kind's details.

The subject's other ground truth — factors such as ``emphysema_pct`` and ``label``, the
masks and the ``tissue`` map — describes its normal anatomy and is the same with and
without lesions.

Kinds (:data:`LESION_KINDS`; which are drawn: each requested kind with probability 1/2,
at least one):

thorax-ct (values in Hounsfield units)
    ``nodule``: 1–3 solid lung nodules, 3–30 mm (log-uniform), +20 to +60 HU, centred
    in the lung at least their radius + 2 mm from its surface (as ``--nodules`` places
    its nodules). ``emphysema``: 1–2 bullae: round air spaces of 20–50 mm at −995 to
    −975 HU, confined to the lung and centred in its upper half, with no vessels inside —
    focal emphysema beyond the subject's diffuse emphysema, which is normal population
    variation (it drives the severity ``label``) and is not a lesion. ``mass``: one
    lobulated soft-tissue mass of 30–60 mm, +25 to +55 HU, in the lung (about 2 in 3) or
    the anterior mediastinum.
brain-mri (values relative to the subject's own white matter, grey matter and CSF)
    ``wmh``: 2–8 white-matter hyperintensities: ovoid, 3–15 mm (log-uniform),
    periventricular (within 10 mm of the ventricles) or deep white matter, confined to
    white matter; T2 between grey matter and CSF (hyperintense), T1 between grey matter
    and CSF (hypointense), on both the image and ``t2``. ``tumour``: one mass of 20–50 mm
    with an enhancing rim 2–5 mm thick (T1 15–40 % above white matter, as after
    contrast; T2 above grey matter), a necrotic core (CSF-like: T1 dark, T2 bright) and,
    in 70 % of tumours, vasogenic oedema 5–15 mm wide around it in white matter (T2
    bright, T1 dark); the oedema is part of the tumour's label.

Partial volume. A compartment's occupancy of a voxel is its mean over a sub-voxel grid
fine enough for the compartment (one sample per voxel for lesions much larger than a
voxel, then a one-voxel linear ramp across the surface as elsewhere in the phantoms), so
a lesion smaller than a voxel covers a fraction of one; where a lesion is confined to a
tissue (bullae to the lung, white-matter lesions and oedema to white matter) it is
weighted by that tissue's fraction. CT weights then go through the scanner's blur like
the rest of the image. A lesion's mask is its voxels at least half covered (weight ≥ 0.5
in any compartment), and the image changes only there: outside the ``lesion`` map the
image equals ``normal`` bit for bit. A lesion with no such voxel — one much smaller than
a voxel on a coarse grid, e.g. a 5 mm nodule at 16³ — is not visible: it is not painted,
has no label, is listed with ``"visible": false`` and is not counted; where two lesions
would share a voxel it goes to the earlier one. When none of a subject's lesions is
visible, a new set is drawn (up to :data:`ROUNDS` rounds, all listed); a volume drawn
abnormal whose lesions are still all not visible (e.g. only nodules on a very coarse
grid) has ``abnormal`` 0.

Placement: a centre is drawn among the grid's voxels where the kind's site allows it
(and clear of the lesions already placed), then moved by a random offset within the
voxel, as ``--nodules`` places its nodules; sizes, shapes and values are in millimetres
and tissue units, so a subject's lesions are about the same on every grid.

Which volumes of a data set are abnormal: :func:`is_abnormal` (deterministic per volume
seed, so volume i is the same for any number of volumes).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
from scipy import ndimage as ndi

from medgen.data.phantoms.shapes import Grid, draw_tubes, ellipsoid_sdf, rotation_matrix

#: The lesion kinds of each phantom kind, in the order they are drawn.
LESION_KINDS: dict[str, tuple[str, ...]] = {
    "thorax-ct": ("nodule", "emphysema", "mass"),
    "brain-mri": ("wmh", "tumour"),
}
#: One line per lesion kind (for ``phantoms.json`` and help texts).
DESCRIPTIONS = {
    "nodule": "1-3 solid lung nodules, 3-30 mm, +20 to +60 HU",
    "emphysema": "1-2 bullae (focal emphysema): round air spaces of 20-50 mm at -995 to -975 HU in the upper lungs, "
    "no vessels inside",
    "mass": "one lobulated soft-tissue mass, 30-60 mm, +25 to +55 HU, in the lung or the anterior mediastinum",
    "wmh": "2-8 white-matter hyperintensities, ovoid, 3-15 mm, periventricular or deep: T2 bright, T1 dark",
    "tumour": "one tumour of 20-50 mm: enhancing rim (T1 bright), necrotic core (CSF-like), often oedema in "
    "white matter (T2 bright, T1 dark)",
}
#: The named volumes a phantom with lesions adds (``lesion`` and the lesion-free counterparts).
LESION_VOLUMES: dict[str, tuple[str, ...]] = {
    "thorax-ct": ("lesion", "normal"),
    "brain-mri": ("lesion", "normal", "normal_t2"),
}
#: Factors a phantom with lesions adds (also written, as zeros, for lesion-free volumes of a lesion set).
FACTOR_NAMES = ("abnormal", "lesion_count", "lesion_ml", "lesions")
#: Spawn key, under a volume's seed, of the draw that decides whether it is abnormal.
ABNORMAL_STREAM = (200,)
#: A mask voxel is at least this much lesion.
MASK_MIN_WEIGHT = 0.5
#: Rounds of lesions drawn for a subject until one is visible on the grid.
ROUNDS = 5
#: Extra distance (mm) between the surfaces of two lesions' bounding spheres.
GAP_MM = 2.0
_MAX_SUBSAMPLES = 16  # per axis
_SUBSAMPLE_BUDGET = 1 << 22  # sub-voxel samples per compartment

#: ``site(name, radius_mm) -> bool array of the grid``: where a lesion of that radius may be centred.
Site = Callable[[str, float], np.ndarray]


def check_kinds(kind: str, kinds: Sequence[str]) -> tuple[str, ...]:
    """The lesion kinds ``kinds`` of a ``kind`` phantom, without repeats, in drawing order;
    ValueError (one line) for a kind the phantom does not have."""
    allowed = LESION_KINDS.get(kind, ())
    if isinstance(kinds, str):
        kinds = (kinds,)
    for name in kinds:
        if name not in allowed:
            choices = ", ".join(allowed) if allowed else "none"
            raise ValueError(f"{name!r} is not a {kind} lesion; choose from {choices}")
    return tuple(name for name in allowed if name in kinds)


def is_abnormal(volume_seed: int, fraction: float) -> bool:
    """Whether the volume of ``volume_seed`` gets lesions in a set with abnormal share ``fraction``.

    The volume's first uniform draw from stream :data:`ABNORMAL_STREAM` of its seed is below
    ``fraction``: deterministic per volume, independent of its anatomy and of the set's size,
    and a larger ``fraction`` keeps the abnormal volumes of a smaller one.
    """
    rng = np.random.default_rng(np.random.SeedSequence(int(volume_seed), spawn_key=ABNORMAL_STREAM))
    return bool(rng.random() < fraction)


@dataclass
class Layer:
    """One compartment of a lesion: its shape grown by ``grow_mm`` (negative: shrunk), painted
    with ``values`` (channel name → value), confined to the tissue fraction ``within`` (None: anywhere)."""

    grow_mm: float
    values: dict[str, float]
    within: str | None = None


@dataclass
class Lesion:
    """A lesion on the millimetre frame of a phantom: an ellipsoid of semi-axes ``axes_mm`` at
    ``centre_mm``, ``rotation`` (world → lesion frame), optional lobulation ``lobes`` (J, 5: unit
    direction, amplitude in mm, Chebyshev order 3 or 4), painted as ``layers`` in order (outermost first)."""

    kind: str
    centre_mm: np.ndarray
    axes_mm: np.ndarray
    rotation: np.ndarray
    layers: list[Layer]
    lobes: np.ndarray = field(default_factory=lambda: np.zeros((0, 5)))
    info: dict = field(default_factory=dict)

    @property
    def diameter_mm(self) -> float:
        """Diameter of the sphere with the volume of the (un-grown) ellipsoid."""
        return 2.0 * float(np.prod(self.axes_mm)) ** (1.0 / 3.0)

    @property
    def reach_mm(self) -> float:
        """Radius of a sphere about the centre holding every compartment."""
        grow = max(0.0, max(layer.grow_mm for layer in self.layers))
        return float(self.axes_mm.max()) + grow + float(np.abs(self.lobes[:, 3]).sum())

    def sdf(self, x, y, z, grow_mm: float = 0.0) -> np.ndarray:
        """Approximate signed distance (mm) to the compartment grown by ``grow_mm``."""
        d = ellipsoid_sdf(x, y, z, self.centre_mm, self.axes_mm, self.rotation) - grow_mm
        if len(self.lobes):
            dx, dy, dz = x - self.centre_mm[0], y - self.centre_mm[1], z - self.centre_mm[2]
            norm = np.sqrt(dx * dx + dy * dy + dz * dz) + 1e-6
            for ux, uy, uz, amp, order in self.lobes:
                t = (ux * dx + uy * dy + uz * dz) / norm
                cheb = 4.0 * t**3 - 3.0 * t if order == 3 else 8.0 * t**4 - 8.0 * t**2 + 1.0
                d = d - amp * cheb
        return d


# -- placement ----------------------------------------------------------------------------------


def pick_centre(rng: np.random.Generator, allowed: np.ndarray, grid: Grid) -> np.ndarray | None:
    """A point (mm) in a random voxel of ``allowed``, moved by a random offset within the voxel;
    None (and no random draws) if ``allowed`` is empty."""
    cand = np.flatnonzero(allowed)
    if cand.size == 0:
        return None
    idx = np.array(np.unravel_index(cand[rng.integers(cand.size)], allowed.shape))
    axes = grid.axes
    centre = np.array([axes[i][idx[i]] for i in range(3)], dtype=np.float64)
    centre += rng.uniform(-0.5, 0.5, 3) * np.asarray(grid.spacing)
    return centre


def solid_nodules(
    rng: np.random.Generator,
    grid: Grid,
    lung: np.ndarray,
    sdf_lung: np.ndarray,
    count: int,
    radius_mm: tuple[float, float] = (4.0, 15.0),
    margin_mm: float = 2.0,
) -> tuple[np.ndarray, list[tuple[np.ndarray, float]]]:
    """Up to ``count`` spherical nodules of uniform radius in ``radius_mm``, each centred in the
    ``lung`` at least its radius + ``margin_mm`` inside (``sdf_lung``, mm) and outside the nodules
    before it. Returns their combined partial-volume occupancy and (centre mm, radius mm) of each
    placed nodule (one with no room is skipped). This is how ``thorax_ct``'s ``nodules`` are made."""
    nod = np.zeros(grid.shape, dtype=np.float32)
    placed: list[tuple[np.ndarray, float]] = []
    for _ in range(count):
        r = float(rng.uniform(*radius_mm))
        centre = pick_centre(rng, lung & (nod < 0.5) & (sdf_lung < -(r + margin_mm)), grid)
        if centre is None:
            continue
        draw_tubes(nod, grid, np.array([[*centre, *centre, r, r]]))
        placed.append((centre, r))
    return nod, placed


def _clear_of(placed: list[Lesion], grid: Grid, radius_mm: float) -> np.ndarray | bool:
    """Voxels where a lesion of ``radius_mm`` keeps :data:`GAP_MM` from the lesions ``placed``."""
    if not placed:
        return True
    x, y, z = grid.xyz
    ok = np.ones(grid.shape, dtype=bool)
    for les in placed:
        c = les.centre_mm
        ok &= (x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2 > (radius_mm + les.reach_mm + GAP_MM) ** 2
    return ok


def _place(rng, grid: Grid, site: Site, sites: Sequence[str], radius_mm: float, placed: list[Lesion],
           reach_mm: float | None = None):
    """(centre, site name) of a lesion of ``radius_mm`` whose compartments reach ``reach_mm`` (default the
    radius): the first of ``sites`` with room for it; None if none has."""
    clear = _clear_of(placed, grid, radius_mm if reach_mm is None else reach_mm)
    for name in sites:
        centre = pick_centre(rng, site(name, radius_mm) & clear, grid)
        if centre is not None:
            return centre, name
    return None


def _ellipsoid(rng, radius_mm: float, aspect: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Semi-axes (equivalent radius ``radius_mm``, two axes shortened by ``aspect`` factors) and a random rotation."""
    ratios = np.array([1.0, rng.uniform(*aspect), rng.uniform(*aspect)])
    axes = radius_mm * ratios / float(np.prod(ratios)) ** (1.0 / 3.0)
    return axes, rotation_matrix(rng.standard_normal(3), rng.uniform(0.0, np.pi))


def _lobes(rng, count: int, amplitude_mm: float) -> np.ndarray:
    dirs = rng.standard_normal((count, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    amps = amplitude_mm * rng.uniform(0.5, 1.0, count)
    orders = rng.integers(3, 5, count)
    return np.column_stack([dirs, amps, orders]).astype(np.float64)


def _log_uniform(rng, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def draw(
    rng: np.random.Generator,
    kind: str,
    kinds: Sequence[str],
    grid: Grid,
    site: Site,
    contrast: dict[str, dict[str, float]] | None = None,
) -> list[Lesion]:
    """Draw the lesions of one ``kind`` subject from ``kinds`` (each with probability 1/2, at least one).

    ``site(name, radius_mm)``: where a lesion of ``radius_mm`` may be centred, for the site names
    ``nodule``, ``bulla``, ``lung``, ``mediastinum`` (thorax) and ``periventricular``,
    ``deep-white-matter``, ``brain``, ``brain-outer`` (brain); a kind with several sites tries
    them in turn. ``contrast`` (brain): the subject's reference values per channel,
    ``{"t1": {"wm", "gm", "csf"}, "t2": {...}}``.
    """
    kinds = check_kinds(kind, kinds)
    if not kinds:
        return []
    chosen = [name for name in kinds if rng.random() < 0.5]
    if not chosen:
        chosen = [kinds[int(rng.integers(len(kinds)))]]
    placed: list[Lesion] = []
    for name in chosen:
        _SAMPLERS[name](rng, grid, site, contrast or {}, placed)
    return placed


def _nodules(rng, grid, site, contrast, placed) -> None:
    for _ in range(int(rng.integers(1, 4))):
        r = 0.5 * _log_uniform(rng, 3.0, 30.0)
        hu = float(rng.uniform(20.0, 60.0))
        where = _place(rng, grid, site, ("nodule",), r, placed)
        if where is not None:
            placed.append(Lesion("nodule", where[0], np.full(3, r), np.eye(3), [Layer(0.0, {"hu": hu})],
                                 info={"hu": round(hu, 1)}))


def _bullae(rng, grid, site, contrast, placed) -> None:
    for _ in range(int(rng.integers(1, 3))):
        r = 0.5 * float(rng.uniform(20.0, 50.0))
        hu = float(rng.uniform(-995.0, -975.0))
        where = _place(rng, grid, site, ("bulla",), r, placed)
        if where is not None:
            placed.append(Lesion("emphysema", where[0], np.full(3, r), np.eye(3), [Layer(0.0, {"hu": hu}, "lung")],
                                 info={"hu": round(hu, 1)}))


def _mass(rng, grid, site, contrast, placed) -> None:
    r = 0.5 * float(rng.uniform(30.0, 60.0))
    axes, rot = _ellipsoid(rng, r, (0.7, 1.0))
    lobes = _lobes(rng, 3, 0.08 * r)
    hu = float(rng.uniform(25.0, 55.0))
    sites = ("mediastinum", "lung") if rng.random() < 1.0 / 3.0 else ("lung", "mediastinum")
    where = _place(rng, grid, site, sites, r, placed)
    if where is not None:
        placed.append(Lesion("mass", where[0], axes, rot, [Layer(0.0, {"hu": hu})], lobes,
                             info={"hu": round(hu, 1), "site": where[1]}))


def _between(ref: dict[str, float], a: str, b: str, frac: float) -> float:
    """The value a share ``frac`` of the way from tissue ``a`` to tissue ``b``."""
    return ref[a] + frac * (ref[b] - ref[a])


def _wmh(rng, grid, site, contrast, placed) -> None:
    t1, t2 = contrast["t1"], contrast["t2"]
    for _ in range(int(rng.integers(2, 9))):
        r = 0.5 * _log_uniform(rng, 3.0, 15.0)
        axes, rot = _ellipsoid(rng, r, (0.5, 0.9))
        values = {"t1": _between(t1, "gm", "csf", rng.uniform(0.1, 0.5)),
                  "t2": _between(t2, "gm", "csf", rng.uniform(0.25, 0.6))}
        sites = ("periventricular", "deep-white-matter")
        where = _place(rng, grid, site, sites if rng.random() < 0.5 else sites[::-1], r, placed)
        if where is not None:
            placed.append(Lesion("wmh", where[0], axes, rot, [Layer(0.0, values, "wm")], info={"site": where[1]}))


def _tumour(rng, grid, site, contrast, placed) -> None:
    t1, t2 = contrast["t1"], contrast["t2"]
    r = 0.5 * float(rng.uniform(20.0, 50.0))
    axes, rot = _ellipsoid(rng, r, (0.75, 1.0))
    lobes = _lobes(rng, 3, 0.05 * r)
    rim = float(min(rng.uniform(2.0, 5.0), 0.6 * axes.min()))
    oedema = float(rng.uniform(5.0, 15.0)) if rng.random() < 0.7 else 0.0
    layers = []
    if oedema > 0:
        layers.append(Layer(oedema, {"t1": _between(t1, "gm", "csf", rng.uniform(0.0, 0.3)),
                                     "t2": _between(t2, "gm", "csf", rng.uniform(0.4, 0.7))}, "wm"))
    layers.append(Layer(0.0, {"t1": t1["wm"] * rng.uniform(1.15, 1.4),
                              "t2": _between(t2, "gm", "csf", rng.uniform(0.1, 0.3))}))
    layers.append(Layer(-rim, {"t1": _between(t1, "csf", "gm", rng.uniform(0.0, 0.15)),
                               "t2": _between(t2, "csf", "gm", rng.uniform(0.05, 0.2))}))
    where = _place(rng, grid, site, ("brain", "brain-outer"), r, placed, reach_mm=r + oedema)
    if where is not None:
        info = {"core_diameter_mm": round(2.0 * (r - rim), 2), "oedema_mm": round(oedema, 2)}
        placed.append(Lesion("tumour", where[0], axes, rot, layers, lobes, info=info))


_SAMPLERS = {"nodule": _nodules, "emphysema": _bullae, "mass": _mass, "wmh": _wmh, "tumour": _tumour}


# -- painting -----------------------------------------------------------------------------------


def _occupancy(les: Lesion, layer: Layer, grid: Grid, box: tuple[slice, slice, slice]) -> np.ndarray:
    """Partial-volume occupancy of one compartment in ``box``: the mean over a sub-voxel grid
    (at least two samples per smallest semi-axis, at most 16 per voxel axis), each sample a linear
    ramp one sub-voxel wide across the surface (one sample per voxel for large compartments)."""
    sp = np.asarray(grid.spacing, dtype=np.float64)
    n = np.array([s.stop - s.start for s in box])
    smallest = max(float(les.axes_mm.min()) + min(layer.grow_mm, 0.0), 0.25)
    k = np.clip(np.ceil(2.0 * sp / smallest), 1, _MAX_SUBSAMPLES).astype(int)
    while int(np.prod(n * k)) > _SUBSAMPLE_BUDGET and k.max() > 1:
        k[int(np.argmax(k))] -= 1
    coords = []
    for i, axis in enumerate(grid.axes):
        offsets = ((np.arange(k[i]) + 0.5) / k[i] - 0.5) * sp[i]
        coords.append((axis[box[i]].astype(np.float64)[:, None] + offsets[None, :]).reshape(-1))
    x, y, z = coords[0][:, None, None], coords[1][None, :, None], coords[2][None, None, :]
    ramp = float(np.prod(sp / k)) ** (1.0 / 3.0)
    sub = np.clip(0.5 - les.sdf(x, y, z, layer.grow_mm) / ramp, 0.0, 1.0)
    return sub.reshape(n[0], k[0], n[1], k[1], n[2], k[2]).mean(axis=(1, 3, 5)).astype(np.float32)


def _weights(les: Lesion, grid: Grid, fractions: dict[str, np.ndarray], pad_vox: int):
    """(box, one weight array per layer) of ``les`` on ``grid``; box None if it misses the grid."""
    sp = np.asarray(grid.spacing)
    reach = les.reach_mm + (1 + pad_vox) * sp
    box = grid.box(les.centre_mm - reach, les.centre_mm + reach)
    if any(s.stop <= s.start for s in box):
        return None, []
    weights = []
    for layer in les.layers:
        w = _occupancy(les, layer, grid, box)
        if layer.within is not None:
            w *= fractions[layer.within][box]
        weights.append(w)
    return box, weights


def paint(
    lesions: Sequence[Lesion],
    grid: Grid,
    images: dict[str, np.ndarray],
    fractions: dict[str, np.ndarray] | None = None,
    blur_sigma_vox: float = 0.0,
) -> tuple[np.ndarray, list[dict]]:
    """Paint ``lesions`` into ``images`` (channel name → float32 array of the grid, changed in place).

    Each compartment is painted over what is there, ``image += w · (value − image)``, with ``w`` its
    weight (occupancy × the tissue fraction it is confined to, from ``fractions``; blurred by a
    Gaussian of ``blur_sigma_vox`` voxels if > 0), and only on the lesion's own mask voxels, so
    nothing else changes. Returns the instance map (int16: 0, then 1..n for the visible lesions in
    order) and one record per lesion (see the module docstring).
    """
    fractions = fractions or {}
    instance = np.zeros(grid.shape, dtype=np.int16)
    pad = int(np.ceil(3.0 * blur_sigma_vox)) if blur_sigma_vox > 0 else 0
    records: list[dict] = []
    label = 0
    for les in lesions:
        box, weights = _weights(les, grid, fractions, pad)
        free = None
        if weights:
            view = instance[box]
            free = (np.max(np.stack(weights), axis=0) >= MASK_MIN_WEIGHT) & (view == 0)
        visible = free is not None and bool(free.any())
        if visible:
            label += 1
            view[free] = label
            for name, image in images.items():
                region = image[box].copy()
                for layer, w in zip(les.layers, weights):
                    if name in layer.values:
                        wb = ndi.gaussian_filter(w, blur_sigma_vox, truncate=3.0) if blur_sigma_vox > 0 else w
                        region += wb * (np.float32(layer.values[name]) - region)
                image[box] = np.where(free, region, image[box])
        records.append(_record(les, grid, label if visible else 0, int(free.sum()) if visible else 0))
    return instance, records


def insert(
    rng: np.random.Generator,
    kind: str,
    kinds: Sequence[str],
    grid: Grid,
    site: Site,
    images: dict[str, np.ndarray],
    fractions: dict[str, np.ndarray] | None = None,
    blur_sigma_vox: float = 0.0,
    contrast: dict[str, dict[str, float]] | None = None,
) -> tuple[np.ndarray, list[dict]]:
    """:func:`draw` and :func:`paint` the lesions of one subject; if none of them is visible on
    this grid, draw again (up to :data:`ROUNDS` rounds), so that an abnormal volume shows a lesion
    wherever the grid allows it. Returns the instance map and the records of every lesion drawn."""
    records: list[dict] = []
    instance = np.zeros(grid.shape, dtype=np.int16)
    for _ in range(ROUNDS):
        drawn = draw(rng, kind, kinds, grid, site, contrast)
        instance, round_records = paint(drawn, grid, images, fractions, blur_sigma_vox)
        records += round_records
        if any(r["visible"] for r in round_records):
            break
    return instance, records


def _record(les: Lesion, grid: Grid, label: int, voxels: int) -> dict:
    c = grid.to_index(les.centre_mm)
    return {
        "label": label,
        "kind": les.kind,
        "x": round(float(c[0]), 2),
        "y": round(float(c[1]), 2),
        "z": round(float(c[2]), 2),
        "diameter_mm": round(les.diameter_mm, 2),
        "voxels": voxels,
        "ml": round(voxels * grid.voxel_ml, 6),
        "visible": label > 0,
        **les.info,
    }


def factors(records: Sequence[dict], voxel_ml: float) -> dict[str, float | int | str]:
    """The lesion factors (:data:`FACTOR_NAMES`) of a volume with the lesion ``records`` (none: normal)."""
    visible = [r for r in records if r["visible"]]
    voxels = sum(r["voxels"] for r in visible)
    return {
        "abnormal": int(bool(visible)),
        "lesion_count": len(visible),
        "lesion_ml": voxels * voxel_ml,
        "lesions": json.dumps(list(records)),
    }


def add_lesion_free_truth(phantom) -> None:
    """Give a lesion-free ``phantom`` (in place) what a phantom with lesions has: an all-zero
    ``lesion`` map, ``normal`` (= its image; for brain MRI ``normal_t2`` = its ``t2``) and the
    lesion factors of a normal volume."""
    phantom.volumes["lesion"] = np.zeros(phantom.array.shape, dtype=np.int16)
    phantom.volumes["normal"] = phantom.array
    if "normal_t2" in LESION_VOLUMES.get(phantom.kind, ()):
        phantom.volumes["normal_t2"] = phantom.volumes["t2"]
    voxel_ml = float(np.prod(phantom.spacing)) / 1000.0
    phantom.factors.update(factors([], voxel_ml))


def volume_specs(kind: str) -> dict[str, dict]:
    """The named volumes a ``kind`` phantom with lesions adds: name → ``{"kind": "label" | "intensity", ...}``."""
    specs: dict[str, dict] = {
        "lesion": {
            "kind": "label",
            "classes": {"0": "no lesion"},
            "instances": "k >= 1: the k-th visible lesion (label k) of the manifest's lesions column",
        },
        "normal": {"kind": "intensity", "description": "the image without its lesions (lesion-free counterfactual)"},
    }
    if "normal_t2" in LESION_VOLUMES[kind]:
        specs["normal_t2"] = {"kind": "intensity", "description": "the t2 volume without its lesions"}
    return specs
