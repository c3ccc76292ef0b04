"""Registering a pair of volumes and writing the result: the work of ``medgen register RUN MOVING FIXED --out DIR``.

The registrar is any object with ``register(moving, fixed) -> dict`` and ``warp(volume, displacement, mode)``:
a trained ``registration`` model (``medgen.load(run)``) or the SimpleITK baseline
(:class:`medgen.inference.classical_registration.ClassicalRegistration`). Both follow one convention
(:mod:`medgen.metrics.registration`): ``displacement`` ``[3, X, Y, Z]`` in voxels of the fixed grid,
component ``d`` along array axis ``d``, ``warped(p) = moving(p + u(p))``; ``jacobian`` the determinant of
the transform's Jacobian. Registration happens in voxel space: MOVING must have FIXED's array shape, and
its position in the world (its affine) is not used.

Inputs (:func:`read_input`) are written one of two ways:

* a scan: a NIfTI/NRRD/MHA/.npy file or a DICOM folder, reoriented to RAS+ (as the training data were);
  for the model it is normalised as the run's data were (:func:`medgen.inference.translate.normalise_scan`:
  CT by the run's HU window, MRI by percentiles), for the classical baseline by its own percentiles;
* a subject of a preprocessed data set: ``DATA:ID`` (its image) or ``DATA:ID:VOLUME`` (a named volume,
  e.g. ``data/brain64:v3:tissue`` for a label map), already in the model's units; its affine is
  ``diag(spacing)`` from the manifest.

Outputs (:func:`register_pair`), every file written atomically, on FIXED's affine:

* ``warped.nii.gz``: MOVING, in its own units (not clipped or normalised), resampled by the displacement;
* ``displacement.nii.gz``: 4D ``[X, Y, Z, 3]`` float32, the displacement in millimetres along the world
  (RAS+) axes: ``A[:3, :3] @ u`` for FIXED's affine ``A`` and ``u`` in voxels;
* ``jacobian.nii.gz``: the Jacobian determinant (≤ 0: folding);
* ``warped_labels.nii.gz`` with ``moving_labels`` (nearest-neighbour warp, int16);
* ``summary.json``: folding (share and %), Jacobian and displacement statistics, similarity (MSE and
  NCC, in the registrar's units) before and after, per-label Dice before and after when both label maps
  are given, and the registration's runtime in seconds;
* ``figure.png``: fixed | moving | warped | Jacobian determinant with the deformed grid, three planes.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from medgen.core.errors import InputError, UsageError

WARP_MODES = ("bilinear", "nearest")


# ----------------------------------------------------------------------------- warping


def warp(volume: Any, displacement: Any, mode: str = "bilinear") -> np.ndarray:
    """``volume`` ``(X, Y, Z)`` resampled at ``p + u(p)`` (``displacement`` ``[3, X, Y, Z]`` in voxels).

    ``mode``: ``bilinear`` (trilinear interpolation; float32 out) or ``nearest`` (label maps; the input's
    dtype out). Points outside the volume take the value of the nearest border voxel. MONAI's ``Warp`` in
    float64, so a constant integer displacement shifts the volume exactly."""
    import torch

    if mode not in WARP_MODES:
        raise UsageError(f"warp mode {mode!r}: choose {' or '.join(WARP_MODES)}")
    vol = np.asarray(volume)
    u = np.array(displacement, dtype=np.float64)  # a copy: torch wants writable memory
    if vol.ndim != 3 or u.shape != (3, *vol.shape):
        raise UsageError(f"warp: a volume (X, Y, Z) and a displacement [3, X, Y, Z] of its shape; got {vol.shape} "
                         f"and {u.shape}")
    w = warp_layer(mode)
    with torch.no_grad():
        out = w(torch.from_numpy(vol.astype(np.float64))[None, None], torch.from_numpy(u)[None])[0, 0].numpy()
    if mode == "nearest":
        return np.rint(out).astype(vol.dtype) if np.issubdtype(vol.dtype, np.integer) else out.astype(vol.dtype)
    return out.astype(np.float32)


def warp_layer(mode: str = "bilinear", padding_mode: str = "border"):
    """MONAI's ``Warp`` (PyTorch's ``grid_sample`` path; the notice that it is in use is silenced)."""
    from monai.networks.blocks import Warp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return Warp(mode=mode, padding_mode=padding_mode)


# ----------------------------------------------------------------------------- inputs


@dataclass
class PairVolume:
    """A volume read for registration: ``array`` in its own units (a scan's, or the data set's stored ones),
    ``affine`` voxel → RAS+ mm, ``source`` (the reference given) and, for data set subjects, the data set's
    ``preprocess.json`` contents ``info`` (None for scans)."""

    array: np.ndarray
    affine: np.ndarray
    source: str
    info: dict[str, Any] | None = None

    @property
    def from_dataset(self) -> bool:
        return self.info is not None

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore[return-value]


def _is_dataset(path: Path) -> bool:
    return path.is_dir() and (path / "manifest.csv").is_file() and (path / "preprocess.json").is_file()


def parse_reference(ref: str) -> tuple[Path, str | None, str | None]:
    """``ref`` → (path, subject id, volume name): a scan path (id None), or a data set subject ``DATA:ID`` /
    ``DATA:ID:VOLUME`` (volume None for the image). An existing file or folder is always a scan."""
    path = Path(ref)
    if path.exists() and not _is_dataset(path):
        return path, None, None
    parts = ref.split(":")
    for n_tail in (2, 1):
        if len(parts) > n_tail:
            root = Path(":".join(parts[:-n_tail]))
            if _is_dataset(root):
                tail = parts[-n_tail:]
                if not all(tail):
                    break
                return root, tail[0], (tail[1] if n_tail == 2 else None)
    if _is_dataset(path):
        raise UsageError(f"{ref}: a data set; name a subject as {ref}:ID (or {ref}:ID:VOLUME)")
    raise InputError(f"{ref}: no such scan, and not DATA:ID of a preprocessed data set")


def read_input(ref: str, label: bool = False) -> PairVolume:
    """The volume ``ref`` names (module docstring); ``label``: a label map (rounded to integers; a data set
    reference must then name its volume). InputError (one line) when it cannot be read."""
    from medgen.data.io import read_volume, reorient_to_ras

    path, sid, volume = parse_reference(ref)
    if sid is None:
        vol = reorient_to_ras(read_volume(path))
        array = np.asarray(vol.array)
        if label:
            array = np.rint(np.nan_to_num(array.astype(np.float64))).astype(np.int16)
        return PairVolume(array, np.asarray(vol.affine, dtype=np.float64), ref)

    from medgen.core.volume import parse_spacing
    from medgen.data.dataset import VolumeDataset, load_manifest, load_preprocess_info, volume_kinds
    from medgen.inference.generate import spacing_affine

    info = load_preprocess_info(path)
    kinds = volume_kinds(info, path / "preprocess.json")
    name = volume or "image"
    if name not in kinds:
        raise InputError(f"{ref}: the data set {path} holds volumes {', '.join(kinds)}, not {name!r}")
    if label and kinds[name] != "label":
        raise UsageError(f"{ref}: volume {name!r} is not a label map (name one, e.g. {path}:{sid}:tissue)")
    rows = {r["id"]: r for r in load_manifest(path)}
    if sid not in rows:
        raise InputError(f"{ref}: the data set {path} has no subject {sid!r}")
    item = VolumeDataset(path, split="all", label_column=None, ids=[sid], keys=(name,))[0]
    array = item[name][0].numpy()
    array = array.astype(np.int16) if kinds[name] == "label" else array.astype(np.float32)
    spacing = parse_spacing(rows[sid].get("spacing", "")) or (1.0, 1.0, 1.0)
    return PairVolume(array, spacing_affine(spacing), ref, info)


def model_units(vol: PairVolume, preprocess: dict[str, Any] | None) -> np.ndarray:
    """An intensity volume in the registrar's [-1, 1] units: a data set's as stored, a scan normalised by
    ``preprocess`` (a run's ``preprocess.json``; None or empty: the scan's own percentiles)."""
    if vol.from_dataset:
        return np.asarray(vol.array, dtype=np.float32)
    from medgen.inference.translate import normalise_scan

    try:
        return normalise_scan(vol.array, dict(preprocess or {}))[0]
    except InputError as exc:
        raise InputError(f"{vol.source}: {exc}") from None


# ----------------------------------------------------------------------------- the pair


@dataclass
class RegisterResult:
    out_dir: Path
    summary: dict[str, Any]
    written: list[str] = field(default_factory=list)


def world_displacement(displacement: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """``[3, X, Y, Z]`` voxels → ``[X, Y, Z, 3]`` millimetres along the world axes of ``affine``."""
    a = np.asarray(affine, dtype=np.float64)[:3, :3]
    return np.einsum("ij,jxyz->xyzi", a, np.asarray(displacement, dtype=np.float64)).astype(np.float32)


def json_ready(obj: Any) -> Any:
    """``obj`` with every non-finite float (NaN: a label absent from both maps) as None, for strict JSON."""
    if isinstance(obj, dict):
        return {k: json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _check_shapes(pairs: Sequence[tuple[str, np.ndarray]], shape: tuple[int, ...]) -> None:
    for name, arr in pairs:
        if arr.shape != shape:
            raise InputError(f"{name} has shape {arr.shape}, FIXED {shape}: registration needs one voxel grid "
                             "(resample MOVING onto FIXED's grid first)")


def register_pair(registrar: Any, moving: PairVolume, fixed: PairVolume, out_dir: str | Path, *,
                  moving_labels: PairVolume | None = None, fixed_labels: PairVolume | None = None,
                  preprocess: dict[str, Any] | None = None, name: str = "") -> RegisterResult:
    """Register ``moving`` to ``fixed`` with ``registrar`` and write the outputs of the module docstring into
    ``out_dir`` (created). ``preprocess``: how scans are normalised (a run's ``preprocess.json``; None: each
    scan by its own percentiles); ``name``: the registrar's name in the summary."""
    from medgen.core.fileio import atomic_write_json
    from medgen.data.io import write_nifti
    from medgen.metrics.registration import (displacement_magnitude_mm, jacobian_summary, similarity,
                                             warped_label_dice)

    shape = tuple(fixed.array.shape)
    _check_shapes([("MOVING", moving.array)] + ([("the moving labels", moving_labels.array)] if moving_labels else [])
                  + ([("the fixed labels", fixed_labels.array)] if fixed_labels else []), shape)
    x_m, x_f = model_units(moving, preprocess), model_units(fixed, preprocess)
    t0 = time.perf_counter()
    result = registrar.register(x_m, x_f)
    runtime = time.perf_counter() - t0
    u = np.asarray(result["displacement"], dtype=np.float32)
    jac = np.asarray(result["jacobian"], dtype=np.float32)
    if u.shape != (3, *shape) or jac.shape != shape:
        raise InputError(f"the registrar returned a displacement {u.shape} and Jacobian {jac.shape} for {shape} volumes")

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    warped_units = registrar.warp(np.asarray(moving.array, dtype=np.float32), u, mode="bilinear")
    write_nifti(out / "warped.nii.gz", warped_units.astype(np.float32), fixed.affine)
    write_nifti(out / "displacement.nii.gz", world_displacement(u, fixed.affine), fixed.affine)
    write_nifti(out / "jacobian.nii.gz", jac, fixed.affine)
    written += ["warped.nii.gz", "displacement.nii.gz", "jacobian.nii.gz"]

    spacing = fixed.spacing
    summary: dict[str, Any] = {
        "registrar": name or type(registrar).__name__,
        "moving": moving.source,
        "fixed": fixed.source,
        "shape": list(shape),
        "spacing_mm": [round(s, 6) for s in spacing],
        "convention": "warped(p) = moving(p + u(p)); displacement.nii.gz holds u in mm along the RAS+ world axes",
        "runtime_s": runtime,
        "folding_percent": jacobian_summary(jac)["folding_percent"],
        "jacobian": jacobian_summary(jac),
        "displacement_mm": displacement_magnitude_mm(u, spacing),
        "similarity": {"before": similarity(x_m, x_f),
                       "after": similarity(np.asarray(result["warped"], dtype=np.float32), x_f)},
    }
    if moving_labels is not None:
        warped_labels = registrar.warp(np.asarray(moving_labels.array, dtype=np.int16), u, mode="nearest")
        write_nifti(out / "warped_labels.nii.gz", warped_labels.astype(np.int16), fixed.affine)
        written.append("warped_labels.nii.gz")
        if fixed_labels is not None:
            summary["dice"] = {"before": warped_label_dice(moving_labels.array, fixed_labels.array),
                               "after": warped_label_dice(warped_labels, fixed_labels.array)}
    save_registration_figure(out / "figure.png", x_f, x_m, np.asarray(result["warped"], dtype=np.float32), jac, u,
                             title=f"{summary['registrar']}: {moving.source} → {fixed.source}; folding "
                                   f"{summary['folding_percent']:.3g} %, {runtime:.2f} s")
    written.append("figure.png")
    summary = json_ready(summary)
    atomic_write_json(out / "summary.json", summary)
    written.append("summary.json")
    return RegisterResult(out, summary, written)


# ----------------------------------------------------------------------------- figure


def save_registration_figure(path: str | Path, fixed: np.ndarray, moving: np.ndarray, warped: np.ndarray,
                             jacobian: np.ndarray, displacement: np.ndarray, title: str = "",
                             grid_step: int | None = None) -> Path:
    """fixed | moving | warped (grey, [-1, 1]) | Jacobian determinant (blue < 1 < red, 1 white) with the
    deformed grid ``p + u(p)`` drawn over it, one row per plane (axial, coronal, sagittal through the
    centre); written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from medgen.core.fileio import atomic_path
    from medgen.viz.mosaic import PLANES, plane_slice

    normal = {"sagittal": 0, "coronal": 1, "axial": 2}
    u = np.asarray(displacement, dtype=np.float64)
    shape = np.asarray(fixed).shape
    step = grid_step or max(2, min(shape) // 12)
    jmax = max(1.5, float(np.percentile(np.abs(jacobian - 1.0), 99)) + 1.0) if np.size(jacobian) else 2.0
    fig, axes = plt.subplots(len(PLANES), 4, figsize=(8.6, 2.2 * len(PLANES)), squeeze=False)
    for r, plane in enumerate(PLANES):
        for c, (label, vol) in enumerate((("fixed", fixed), ("moving", moving), ("warped", warped))):
            ax = axes[r][c]
            ax.imshow(plane_slice(vol, plane), cmap="gray", vmin=-1, vmax=1, interpolation="nearest")
            if r == 0:
                ax.set_title(label, fontsize=8)
        ax = axes[r][3]
        ax.imshow(plane_slice(jacobian, plane), cmap="coolwarm", vmin=2.0 - jmax, vmax=jmax, interpolation="nearest")
        if r == 0:
            ax.set_title("Jacobian det. + grid", fontsize=8)
        # The deformed grid in this plane: slice axes (a, b) display at column n_a-1-a, row n_b-1-b (plane_slice).
        n = normal[plane]
        a_ax, b_ax = [d for d in range(3) if d != n]
        k = shape[n] // 2
        pa = np.take(u[a_ax], k, axis=n) + np.arange(shape[a_ax])[:, None]
        pb = np.take(u[b_ax], k, axis=n) + np.arange(shape[b_ax])[None, :]
        xa, yb = shape[a_ax] - 1 - pa, shape[b_ax] - 1 - pb
        for i in range(0, shape[a_ax], step):
            ax.plot(xa[i, :], yb[i, :], color="k", lw=0.4)
        for j in range(0, shape[b_ax], step):
            ax.plot(xa[:, j], yb[:, j], color="k", lw=0.4)
        ax.set_xlim(-0.5, shape[a_ax] - 0.5)
        ax.set_ylim(shape[b_ax] - 0.5, -0.5)
        axes[r][0].set_ylabel(plane, fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)
    return path
