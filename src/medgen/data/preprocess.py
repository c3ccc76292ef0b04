"""Turning a folder of CT/MRI volumes into a training-ready data set.

Per volume (:func:`preprocess_volume`, a pure function):

1. reorient to RAS+ (axis permutation/flips only, no interpolation);
2. replace NaN (CT: the window's low end, i.e. air; MRI: 0) and, if asked,
   resample to isotropic ``spacing`` mm (linear interpolation);
3. map intensities to [-1, 1]: CT by a fixed HU window (default [-1024, 600] HU,
   as in HA-GAN), MRI by robust percentiles of the nonzero voxels;
4. drop blank axial slices (all background, i.e. -1) at the bottom and top of
   the last axis, as the HA-GAN authors advise;
5. fit to S³ (``resize-keep-aspect``, ``resize`` or ``crop-pad``).

Per folder (:func:`preprocess_folder`): the output is ``OUT/volumes/<id>.npy``
(float16, memory-mappable), a sidecar ``OUT/volumes/<id>.json`` with the
volume's manifest row, ``OUT/preprocess.json`` with the settings and
``OUT/manifest.csv``. Sidecars make the job resumable: a rerun skips volumes
already done with the same settings and the same source files, and the manifest
is rebuilt from them. Volumes added to the data set later
(:func:`medgen.data.dataset.add_volume`, e.g. a degraded copy) survive a rerun for
the skipped subjects; a subject preprocessed again loses them (they were computed
from its old image) and needs them added again.

Extra volumes: an input folder may hold other volumes of each subject on the
image's grid (a label map, a second contrast), listed by path (relative to the
folder) in columns of ``IN_DIR/manifest.csv``. Those declared in
``IN_DIR/phantoms.json`` (``volumes``, as ``medgen phantoms`` writes it) or with
``volumes=["NAME:KIND", "NAME=COLUMN:KIND"]`` (``--volume``) are preprocessed with
exactly the image's geometry (:func:`preprocess_subject`: the same reorientation,
resampling, trimming decided on the image and fit; labels by nearest neighbour and
never normalised) and stored as named volumes of the data set
(:mod:`medgen.data.dataset`): ``OUT/<name>s/<id>.npy``, manifest column ``name``,
and a ``preprocess.json`` ``volumes`` entry recording its ``input_column``.
"""

from __future__ import annotations

import csv
import json
import os
import re
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from medgen.core.version import __version__
from medgen.data.discover import InputItem, discover_inputs
from medgen.data.io import VOLUME_SUFFIXES, Volume, read_volume, reorient_to_ras
from medgen.core.volume import denormalize_ct, normalize_ct  # noqa: F401  (the CT window rule, re-exported)
from medgen.core.errors import InputError, MedgenError, UsageError
from medgen.core.tables import write_csv
from medgen.core.fileio import atomic_save_npy, atomic_write_json

MODALITIES = ("ct", "mri")
FIT_MODES = ("resize-keep-aspect", "resize", "crop-pad")
#: Value of empty space after normalisation (air in CT, outside the head in MRI, padding).
BACKGROUND = -1.0
#: Columns every manifest starts with; label/covariate columns follow.
MANIFEST_COLUMNS = ("id", "source", "orig_shape", "orig_spacing", "spacing", "file")
MANIFEST_NAME = "manifest.csv"
INFO_NAME = "preprocess.json"
VOLUMES_DIR = "volumes"
#: The name of the preprocessed image among a subject's named volumes (see medgen.data.dataset).
IMAGE = "image"
VOLUME_KINDS = ("intensity", "label")
#: Storage dtype of each kind of extra volume (as medgen.data.dataset.add_volume stores them).
VOLUME_DTYPES = {"intensity": "float16", "label": "int16"}
#: Where the input folder may declare extra volumes (written by `medgen phantoms`).
PHANTOMS_INFO = "phantoms.json"


@dataclass(frozen=True)
class PreprocessSettings:
    """How volumes are preprocessed.

    modality: ``"ct"`` (intensities in Hounsfield units) or ``"mri"`` (arbitrary units).
    size: output edge length S in voxels (a power of two ≥ 16, as HA-GAN needs).
    spacing: if set, resample to this isotropic voxel size in mm before fitting.
    hu_min, hu_max: CT window in HU mapped to [-1, 1]; values outside are clipped.
    percentiles: MRI, the percentiles of nonzero voxels mapped to -1 and 1.
    drop_blank_slices: trim axial slices that are all background at both ends of z.
    blank_tolerance: a slice is blank if no voxel differs from -1 by more than this
        (in normalised units; 0.01 is 8 HU in the default CT window).
    fit: ``resize-keep-aspect`` (scale the largest physical extent to S, pad the rest
        with background, centred), ``resize`` (anisotropic resize to S³, as the HA-GAN
        authors do) or ``crop-pad`` (no scaling: centre-crop or pad each axis).
    """

    modality: str
    size: int
    spacing: float | None = None
    hu_min: float = -1024.0
    hu_max: float = 600.0
    percentiles: tuple[float, float] = (0.5, 99.5)
    drop_blank_slices: bool = True
    blank_tolerance: float = 0.01
    fit: str = "resize-keep-aspect"

    def check(self) -> None:
        """Raise UsageError for an invalid combination of settings."""
        if self.modality not in MODALITIES:
            raise UsageError(f"--modality must be one of {', '.join(MODALITIES)}, not {self.modality!r}")
        if self.size < 16 or self.size & (self.size - 1):
            raise UsageError(
                f"--size {self.size}: must be a power of two ≥ 16 (HA-GAN halves the volume "
                "repeatedly and cuts it into 8 slabs)"
            )
        if self.spacing is not None and not (self.spacing > 0 and np.isfinite(self.spacing)):
            raise UsageError(f"--spacing {self.spacing}: must be a positive number of mm")
        if not (np.isfinite(self.hu_min) and np.isfinite(self.hu_max)) or self.hu_min >= self.hu_max:
            raise UsageError(f"HU window [{self.hu_min}, {self.hu_max}]: --hu-min must be below --hu-max")
        lo, hi = self.percentiles
        if not 0 <= lo < hi <= 100:
            raise UsageError(f"percentiles ({lo}, {hi}): need 0 ≤ low < high ≤ 100")
        if self.fit not in FIT_MODES:
            raise UsageError(f"--fit must be one of {', '.join(FIT_MODES)}, not {self.fit!r}")
        if not 0 <= self.blank_tolerance < 1:
            raise UsageError(f"blank tolerance {self.blank_tolerance}: need 0 ≤ tolerance < 1")

    def to_json(self) -> dict:
        """The settings that define the output (what ``preprocess.json`` records and reruns compare)."""
        out = {
            "modality": self.modality,
            "size": self.size,
            "spacing": self.spacing,
            "fit": self.fit,
            "drop_blank_slices": self.drop_blank_slices,
            "blank_tolerance": self.blank_tolerance,
        }
        if self.modality == "ct":
            out["hu_window"] = [float(self.hu_min), float(self.hu_max)]
        else:
            out["percentiles"] = [float(p) for p in self.percentiles]
        return out

    @classmethod
    def from_json(cls, data: dict) -> "PreprocessSettings":
        kwargs = {k: data[k] for k in ("modality", "size", "spacing", "fit", "drop_blank_slices", "blank_tolerance") if k in data}
        if "hu_window" in data:
            kwargs["hu_min"], kwargs["hu_max"] = data["hu_window"]
        if "percentiles" in data:
            kwargs["percentiles"] = tuple(data["percentiles"])
        return cls(**kwargs)


# --------------------------------------------------------------------------- intensity


def normalize_mri(array: np.ndarray, percentiles: tuple[float, float] = (0.5, 99.5)) -> np.ndarray:
    """Map MRI to [-1, 1] robustly: the given percentiles of the nonzero voxels go to -1 and 1.

    NaN/inf become 0 (background); values beyond the percentiles are clipped.
    Raises InputError if the image has no nonzero voxel or constant intensity.
    """
    out = np.asarray(array, dtype=np.float32).copy()
    out[~np.isfinite(out)] = 0.0
    nonzero = out[out != 0]
    if nonzero.size == 0:
        raise InputError("every voxel is zero")
    lo, hi = np.percentile(nonzero, percentiles)
    if not hi > lo:
        raise InputError(f"intensity is constant ({lo:g}) between the {percentiles} percentiles; cannot normalise")
    out -= np.float32(lo)
    out /= np.float32((hi - lo) / 2.0)
    out -= np.float32(1.0)
    np.clip(out, -1.0, 1.0, out=out)
    return out


# --------------------------------------------------------------------------- geometry


def trim_blank_slices(
    array: np.ndarray, background: float = BACKGROUND, tolerance: float = 0.01
) -> tuple[np.ndarray, tuple[int, int]]:
    """Drop axial slices (along the last axis) that are all background, at the bottom and top only.

    A slice is blank when no voxel differs from ``background`` by more than
    ``tolerance``. Blank slices between non-blank ones are kept. Returns the
    trimmed array and how many slices were removed at (bottom, top).
    Raises InputError if every slice is blank.
    """
    deviation = np.abs(array - np.float32(background)).max(axis=(0, 1))
    content = np.flatnonzero(deviation > tolerance)
    if content.size == 0:
        raise InputError("every axial slice is blank (background only) after intensity normalisation")
    first, last = int(content[0]), int(content[-1])
    return array[..., first : last + 1], (first, array.shape[-1] - 1 - last)


def resize(array: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Resize a 3D array to ``shape`` with linear interpolation, voxel extents aligned.

    When shrinking, a Gaussian of sigma (factor - 1) / 2 voxels is applied first
    against aliasing. This is what ``skimage.transform.resize(order=1,
    anti_aliasing=True)`` does; it is written here with scipy (a core
    dependency) so that the workers need nothing else. Linear interpolation
    never leaves the input's value range, unlike cubic.
    """
    from scipy import ndimage

    array = np.asarray(array, dtype=np.float32)
    shape = tuple(int(n) for n in shape)
    if shape == array.shape:
        return array
    factors = [new / old for new, old in zip(shape, array.shape)]
    sigma = [max(0.0, (1.0 / f - 1.0) / 2.0) for f in factors]
    if any(s > 0 for s in sigma):
        array = ndimage.gaussian_filter(array, sigma=sigma, mode="nearest")
    out = ndimage.zoom(array, factors, order=1, mode="nearest", grid_mode=True)
    if out.shape != shape:  # pragma: no cover - scipy rounds n * (new / n) to new
        raise RuntimeError(f"resize produced {out.shape}, expected {shape}")
    return out


def resize_labels(array: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Resize a 3D label map to ``shape`` by nearest neighbour, on the grid :func:`resize` uses.

    Output voxel j takes the input voxel that holds its centre (input index
    ``floor((j + 0.5) * n_in / n_out)``), so classes are never mixed or invented
    and the map stays aligned with an image resized by :func:`resize`.
    """
    array = np.asarray(array)
    shape = tuple(int(n) for n in shape)
    if shape == array.shape:
        return array
    index = [
        np.minimum(((np.arange(new) + 0.5) * (old / new)).astype(np.int64), old - 1)
        for new, old in zip(shape, array.shape)
    ]
    return array[np.ix_(*index)]


def resample_isotropic(
    array: np.ndarray, spacing: Sequence[float], target_mm: float, *, labels: bool = False
) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Resample to voxels of about ``target_mm`` on each axis, keeping the physical extent.

    Returns the array and its exact new spacing (extent / new voxel count per axis).
    ``labels``: the array is a label map, resampled by nearest neighbour (:func:`resize_labels`).
    """
    extent = np.asarray(array.shape) * np.asarray(spacing, dtype=np.float64)
    shape = np.maximum(1, np.round(extent / target_mm)).astype(int)
    out = resize_labels(array, shape) if labels else resize(array, shape)
    return out, tuple(float(v) for v in extent / shape)


def pad_or_crop(array: np.ndarray, size: int, value: float = BACKGROUND) -> np.ndarray:
    """Centre-crop or pad (with ``value``) every axis to ``size`` voxels."""
    out = array
    for axis, n in enumerate(array.shape):
        if n > size:
            start = (n - size) // 2
            out = np.take(out, np.arange(start, start + size), axis=axis)
        elif n < size:
            before = (size - n) // 2
            widths = [(0, 0)] * out.ndim
            widths[axis] = (before, size - n - before)
            out = np.pad(out, widths, mode="constant", constant_values=value)
    return out


def fit_to_cube(
    array: np.ndarray, spacing: Sequence[float], size: int, mode: str = "resize-keep-aspect", *, labels: bool = False
) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Bring a 3D array to ``size``³ voxels; returns it and its voxel size in mm per axis.

    ``resize-keep-aspect``: voxels become isotropic, the largest physical extent
    fills ``size`` and the other axes are padded with background, centred.
    ``resize``: each axis resized to ``size`` (aspect ratio not kept).
    ``crop-pad``: no scaling; centre-crop or pad each axis.
    ``labels``: the array is a label map: nearest-neighbour resizing, padding with class 0.
    """
    spacing = np.asarray(spacing, dtype=np.float64)
    extent = np.asarray(array.shape) * spacing
    scale = resize_labels if labels else resize
    pad = 0 if labels else BACKGROUND
    if mode == "resize":
        out = scale(array, (size, size, size))
        new_spacing = extent / size
    elif mode == "crop-pad":
        out = pad_or_crop(array, size, pad)
        new_spacing = spacing
    elif mode == "resize-keep-aspect":
        voxel = extent.max() / size
        shape = np.clip(np.round(extent / voxel), 1, size).astype(int)
        out = pad_or_crop(scale(array, shape), size, pad)
        new_spacing = extent / shape
    else:
        raise UsageError(f"unknown fit mode {mode!r} (choose from {', '.join(FIT_MODES)})")
    return np.ascontiguousarray(out), tuple(float(v) for v in new_spacing)


def format_triple(values: Sequence[float]) -> str:
    """``(1.25, 1.25, 2.5)`` → ``"1.25x1.25x2.5"`` (4 decimals at most)."""
    return "x".join(f"{round(float(v), 4):g}" for v in values)


def preprocess_volume(volume: Volume, settings: PreprocessSettings) -> tuple[np.ndarray, dict]:
    """Preprocess one volume; returns a float16 ``(S, S, S)`` array in [-1, 1] and facts about it.

    The dict holds ``orig_shape``/``orig_spacing`` (as read), ``spacing`` (mm per
    voxel of the output, per axis) and ``trimmed_slices`` (bottom, top).
    Raises InputError when the volume cannot be preprocessed (e.g. all blank).
    """
    arrays, info = preprocess_subject(volume, {}, settings)
    return arrays[IMAGE], info


def _check_aligned(image: Volume, other: Volume, name: str) -> None:
    if other.shape != image.shape or not np.allclose(other.affine, image.affine, rtol=0.0, atol=1e-3):
        raise InputError(
            f"{name} volume {other.source or ''}: grid {'x'.join(map(str, other.shape))} at "
            f"{format_triple(other.spacing)} mm (affine {np.round(other.affine[:3], 3).tolist()}) differs from the "
            f"image's {'x'.join(map(str, image.shape))} at {format_triple(image.spacing)} mm "
            f"(affine {np.round(image.affine[:3], 3).tolist()}); extra volumes must be voxel-aligned with the image"
        )


def _label_values(array: np.ndarray, name: str) -> np.ndarray:
    """A label map as int16 (one integer class per voxel); InputError otherwise."""
    info = np.iinfo(np.int16)
    a = np.asarray(array)
    if a.dtype.kind == "f" and (not np.isfinite(a).all() or (a != np.round(a)).any()):
        raise InputError(f"{name} volume: a label map needs integer classes (found non-integer or NaN values)")
    if a.dtype.kind not in "biuf" or (a.size and (a.min() < info.min or a.max() > info.max)):
        raise InputError(f"{name} volume: a label map needs integer classes in [{info.min}, {info.max}]")
    return a.astype(np.int16)


def preprocess_subject(
    image: Volume, others: Mapping[str, tuple[Volume, str]], settings: PreprocessSettings
) -> tuple[dict[str, np.ndarray], dict]:
    """Preprocess a subject's image and its voxel-aligned volumes with exactly the image's geometry.

    ``others``: name → (volume, kind), each on the image's grid (same shape and affine,
    else InputError). Every volume gets the image's reorientation, resampling, blank-slice
    trimming (decided on the image) and fit to S³. ``intensity`` volumes are normalised
    like the image (CT: the same window; MRI: their own percentiles) and returned as
    float16 in [-1, 1]; ``label`` volumes (integer classes) are resampled by nearest
    neighbour, padded with class 0, never normalised, and returned as int16.
    Returns (name → array, with the image as ``"image"``; facts as :func:`preprocess_volume`).
    """
    info: dict = {"orig_shape": list(image.shape), "orig_spacing": list(image.spacing)}
    ras = reorient_to_ras(image)
    array = np.asarray(ras.array, dtype=np.float32)
    spacing: tuple[float, ...] = ras.spacing
    extras: dict[str, tuple[np.ndarray, str]] = {}
    for name, (volume, kind) in others.items():
        _check_aligned(image, volume, name)
        data = reorient_to_ras(volume).array
        data = _label_values(data, name) if kind == "label" else np.asarray(data, dtype=np.float32)
        extras[name] = (data, kind)

    def clean(a: np.ndarray) -> np.ndarray:
        # NaN would spread through the interpolation; give it the background value first.
        # CT is clipped to the window first so that e.g. -3024 HU padding does not bleed inwards.
        if settings.modality == "ct":
            return np.clip(np.nan_to_num(a, nan=settings.hu_min), settings.hu_min, settings.hu_max)
        return np.where(np.isfinite(a), a, np.float32(0.0))

    def normalize(a: np.ndarray, name: str) -> np.ndarray:
        if settings.modality == "ct":
            return normalize_ct(a, settings.hu_min, settings.hu_max)
        try:
            return normalize_mri(a, settings.percentiles)
        except InputError as exc:
            if name == IMAGE:
                raise
            raise InputError(f"{name} volume: {exc}") from exc

    if settings.spacing is not None:
        array, new_spacing = resample_isotropic(clean(array), spacing, settings.spacing)
        for name, (a, kind) in extras.items():
            labels = kind == "label"
            extras[name] = (resample_isotropic(a if labels else clean(a), spacing, settings.spacing,
                                               labels=labels)[0], kind)
        spacing = new_spacing
    array = normalize(array, IMAGE)
    extras = {name: (a if kind == "label" else normalize(a, name), kind) for name, (a, kind) in extras.items()}
    trimmed = (0, 0)
    if settings.drop_blank_slices:
        array, trimmed = trim_blank_slices(array, BACKGROUND, settings.blank_tolerance)
        keep = slice(trimmed[0], trimmed[0] + array.shape[-1])
        extras = {name: (a[..., keep], kind) for name, (a, kind) in extras.items()}
    array, out_spacing = fit_to_cube(array, spacing, settings.size, settings.fit)
    np.clip(array, -1.0, 1.0, out=array)
    out = {IMAGE: array.astype(np.float16)}
    for name, (a, kind) in extras.items():
        fitted = fit_to_cube(a, spacing, settings.size, settings.fit, labels=kind == "label")[0]
        if kind == "label":
            out[name] = fitted.astype(np.int16)
        else:
            np.clip(fitted, -1.0, 1.0, out=fitted)
            out[name] = fitted.astype(np.float16)
    info["spacing"] = list(out_spacing)
    info["trimmed_slices"] = list(trimmed)
    return out, info


# --------------------------------------------------------------------------- folders


@dataclass
class PreprocessSummary:
    """What a :func:`preprocess_folder` run did. ``failed``: (input path, reason) pairs."""

    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    manifest: Path | None = None

    def format(self) -> str:
        head = f"{len(self.written)} written, {len(self.skipped)} skipped (already done), {len(self.failed)} failed"
        lines = [head + (":" if self.failed else "")]
        lines += [f"  {path}: {reason}" for path, reason in self.failed]
        return "\n".join(lines)


def read_labels(path: str | os.PathLike, skip: Sequence[str] = ()) -> tuple[list[str], dict[str, dict[str, str]]]:
    """Read a labels CSV keyed by ``id``; returns (columns other than id and ``skip``, rows by id).

    Raises UsageError if the file is missing or has no ``id`` column.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: labels file does not exist")
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            fieldnames = list(reader.fieldnames or [])
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UsageError(f"{path}: cannot read labels CSV ({exc})") from exc
    if "id" not in fieldnames:
        raise UsageError(f"{path}: labels CSV has no 'id' column (columns: {', '.join(fieldnames) or 'none'})")
    columns = [c for c in fieldnames if c != "id" and c not in skip and c]
    by_id: dict[str, dict[str, str]] = {}
    for row in rows:
        key = (row.get("id") or "").strip()
        if key:
            by_id[key] = {c: row.get(c) or "" for c in columns}
    return columns, by_id


def source_stamp(path: Path) -> list[int]:
    """Size and modification time of an input (summed/maxed over a DICOM folder's files)."""
    if path.is_dir():
        stats = [e.stat() for e in os.scandir(path) if e.is_file()]
        return [len(stats), sum(s.st_size for s in stats), max((s.st_mtime_ns for s in stats), default=0)]
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def _strip_path(message: str, path: str) -> str:
    prefix = f"{path}: "
    return message[len(prefix) :] if message.startswith(prefix) else message


# --------------------------------------------------------------------------- extra volumes

_VOLUME_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")
# Not volume names (as in medgen.data.dataset): manifest columns, item keys, and "volume" (whose folder
# would be the image's, volumes/).
_RESERVED_NAMES = (IMAGE, *MANIFEST_COLUMNS, "label", "covariates", "index", "volume")


@dataclass(frozen=True)
class ExtraVolume:
    """A voxel-aligned volume carried from the input folder into the data set.

    ``name``: the volume's name in the data set (files ``<name>s/<id>.npy``, manifest
    column ``name``); ``column``: the column of ``IN_DIR/manifest.csv`` holding each
    subject's file (a path relative to IN_DIR, or absolute); ``kind``: ``intensity`` or
    ``label``; ``classes``: a label map's class descriptions, if known (recorded in
    ``preprocess.json``).
    """

    name: str
    column: str
    kind: str
    classes: dict | None = None

    @classmethod
    def parse(cls, text: str) -> "ExtraVolume":
        """``NAME:KIND`` (column NAME) or ``NAME=COLUMN:KIND``, as the ``--volume`` option takes it."""
        head, sep, kind = text.rpartition(":")
        name, _, column = head.partition("=")
        if not sep or not name:
            raise UsageError(f"--volume {text!r}: expected NAME:KIND or NAME=COLUMN:KIND (KIND: intensity or label)")
        volume = cls(name.strip(), (column or name).strip(), kind.strip())
        volume.check("--volume")
        return volume

    def check(self, where: str) -> None:
        if not _VOLUME_NAME.match(self.name) or self.name in _RESERVED_NAMES:
            raise UsageError(
                f"{where}: volume name {self.name!r}: need lower-case letters, digits and '_' (starting with a "
                f"letter), not one of {', '.join(_RESERVED_NAMES)}"
            )
        if self.kind not in VOLUME_KINDS:
            raise UsageError(f"{where}: volume {self.name!r} has kind {self.kind!r}; choose intensity or label")
        if not self.column:
            raise UsageError(f"{where}: volume {self.name!r} needs a manifest column")

    def spec(self) -> dict:
        """The volume's entry in ``preprocess.json``'s ``volumes``."""
        out = {"kind": self.kind, "dtype": VOLUME_DTYPES[self.kind], "input_column": self.column}
        if self.classes:
            out["classes"] = dict(self.classes)
        return out


def declared_volumes(in_dir: str | os.PathLike, options: Sequence[str | ExtraVolume] = ()) -> dict[str, ExtraVolume]:
    """The extra volumes to carry from ``in_dir``: those ``in_dir/phantoms.json`` declares under
    ``volumes`` (name → ``{"kind": ..., "classes": ...}``, column = name), then ``options``
    (``--volume`` values), which add volumes or replace one of the same name.

    Raises UsageError for a bad option, InputError for an unreadable declaration.
    """
    found: dict[str, ExtraVolume] = {}
    info_path = Path(in_dir) / PHANTOMS_INFO
    if info_path.is_file():
        try:
            declared = json.loads(info_path.read_text(encoding="utf-8")).get("volumes") or {}
        except (OSError, ValueError, AttributeError) as exc:
            raise InputError(f"{info_path}: unreadable ({exc})") from exc
        if not isinstance(declared, dict):
            raise InputError(f"{info_path}: 'volumes' must map names to {{\"kind\": ...}}")
        for name, spec in declared.items():
            spec = spec if isinstance(spec, dict) else {}
            classes = spec.get("classes") if isinstance(spec.get("classes"), dict) else None
            volume = ExtraVolume(str(name), str(name), str(spec.get("kind", "intensity")), classes)
            volume.check(str(info_path))
            found[volume.name] = volume
    for option in options:
        volume = option if isinstance(option, ExtraVolume) else ExtraVolume.parse(option)
        found[volume.name] = volume
    return found


def _extra_sources(
    in_dir: Path, extras: dict[str, ExtraVolume]
) -> dict[str, dict[str, Path]]:
    """id → volume name → file, from the columns of ``in_dir/manifest.csv`` (empty cells left out)."""
    if not extras:
        return {}
    manifest = in_dir / MANIFEST_NAME
    names = ", ".join(extras)
    if not manifest.is_file():
        raise UsageError(f"{manifest}: missing, but it must list the files of the extra volumes ({names})")
    columns, rows = read_labels(manifest)
    for volume in extras.values():
        if volume.column not in columns:
            raise UsageError(
                f"{manifest}: no column {volume.column!r} for volume {volume.name!r} "
                f"(columns: {', '.join(columns) or 'none'})"
            )
    sources: dict[str, dict[str, Path]] = {}
    for item_id, row in rows.items():
        for volume in extras.values():
            cell = (row.get(volume.column) or "").strip()
            if cell:
                path = Path(cell)
                sources.setdefault(item_id, {})[volume.name] = path if path.is_absolute() else in_dir / path
    return sources


def _stamp_or_none(path: Path) -> list[int] | None:
    try:
        return source_stamp(path)
    except OSError:
        return None


def _process_one(
    item_id: str,
    path: str,
    out_dir: str,
    settings_json: dict,
    stamp: list[int],
    extras: dict[str, dict] | None = None,
) -> tuple[str, str | None]:
    """Worker: read, preprocess and write one subject. Returns (id, failure reason or None).

    ``extras``: the subject's other volumes, name → {"kind", "source", "source_stamp"}.
    """
    extras = extras or {}
    try:
        settings = PreprocessSettings.from_json(settings_json)
        volume = read_volume(path)
        others = {}
        for name, record in extras.items():
            try:
                others[name] = (read_volume(record["source"]), record["kind"])
            except InputError as exc:
                raise InputError(f"{name} volume: {exc}") from exc
        try:
            arrays, info = preprocess_subject(volume, others, settings)
        except InputError as exc:
            raise InputError(f"{path}: {exc}") from exc
        out = Path(out_dir)
        for name in extras:
            atomic_save_npy(out / f"{name}s" / f"{item_id}.npy", arrays[name])
        atomic_save_npy(out / VOLUMES_DIR / f"{item_id}.npy", arrays[IMAGE])
        row = {
            "id": item_id,
            "source": str(Path(path).resolve()),
            "orig_shape": "x".join(str(n) for n in info["orig_shape"]),
            "orig_spacing": format_triple(info["orig_spacing"]),
            "spacing": format_triple(info["spacing"]),
            "file": f"{VOLUMES_DIR}/{item_id}.npy",
        }
        row.update({name: f"{name}s/{item_id}.npy" for name in extras})
        sidecar = {"row": row, "trimmed_slices": info["trimmed_slices"], "settings": settings_json, "source_stamp": stamp}
        if extras:
            sidecar["volumes"] = extras
        atomic_write_json(out / VOLUMES_DIR / f"{item_id}.json", sidecar)
        return item_id, None
    except MedgenError as exc:
        return item_id, _strip_path(str(exc), path)
    except MemoryError:
        return item_id, "out of memory while preprocessing"
    except Exception as exc:  # a bug or a library failure on one file must not stop the run
        return item_id, f"{type(exc).__name__}: {exc}"


def _is_done(item: InputItem, out_dir: Path, settings_json: dict, stamp: list[int], extras: dict[str, dict]) -> bool:
    sidecar = out_dir / VOLUMES_DIR / f"{item.id}.json"
    files = [out_dir / VOLUMES_DIR / f"{item.id}.npy"] + [out_dir / f"{name}s" / f"{item.id}.npy" for name in extras]
    if not (sidecar.is_file() and all(f.is_file() for f in files)):
        return False
    try:
        data = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (
        data.get("settings") == settings_json
        and data.get("source_stamp") == stamp
        and (data.get("volumes") or {}) == extras
    )


def _added_volumes(out_dir: Path) -> tuple[dict[str, dict], dict[str, dict[str, str]]]:
    """Volumes added to an earlier run's output after preprocessing (name → spec; not the image nor
    volumes carried from the input), and their manifest cells by id; nothing if there is no readable
    earlier output."""
    try:
        info = json.loads((out_dir / INFO_NAME).read_text(encoding="utf-8"))
        volumes = {
            k: v for k, v in (info.get("volumes") or {}).items()
            if k != IMAGE and not (isinstance(v, dict) and "input_column" in v)
        }
    except (OSError, ValueError, AttributeError):
        return {}, {}
    cells: dict[str, dict[str, str]] = {}
    if volumes:
        try:
            with open(out_dir / MANIFEST_NAME, newline="", encoding="utf-8-sig") as fh:
                for row in csv.DictReader(fh):
                    cells[row.get("id") or ""] = {k: row.get(k) or "" for k in volumes}
        except (OSError, UnicodeDecodeError, csv.Error):
            pass
    return volumes, cells


def _prepare_out_dir(
    in_dir: Path, out_dir: Path, settings: PreprocessSettings, overwrite: bool, extra_names: Sequence[str] = ()
) -> None:
    if out_dir.resolve() == in_dir.resolve():
        raise UsageError(f"{out_dir}: output folder must differ from the input folder")
    info_path = out_dir / INFO_NAME
    if info_path.is_file():
        try:
            recorded = json.loads(info_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UsageError(f"{info_path}: unreadable ({exc}); use --overwrite to start again") from exc
        previous = {k: recorded.get(k) for k in settings.to_json()}
        if previous != settings.to_json() and not overwrite:
            changed = ", ".join(
                f"{k} {previous[k]!r} → {v!r}" for k, v in settings.to_json().items() if previous[k] != v
            )
            raise UsageError(
                f"{out_dir}: already holds volumes preprocessed with other settings ({changed}); "
                "use another output folder or --overwrite"
            )
    elif (out_dir / MANIFEST_NAME).exists() and not overwrite:
        raise UsageError(
            f"{out_dir}: holds a {MANIFEST_NAME} but no {INFO_NAME}, so it is not a medgen preprocess "
            "output; choose a new folder"
        )
    if overwrite:
        for folder in [out_dir / VOLUMES_DIR] + [out_dir / f"{name}s" for name in extra_names]:
            if folder.is_dir():
                for p in folder.iterdir():
                    if p.suffix in (".npy", ".json") and p.is_file():
                        p.unlink()
        (out_dir / MANIFEST_NAME).unlink(missing_ok=True)


def write_manifest(path: Path, rows: list[dict[str, str]], extra_columns: Sequence[str]) -> None:
    """Write the manifest CSV atomically (columns: :data:`MANIFEST_COLUMNS` then ``extra_columns``)."""
    write_csv(path, rows, list(MANIFEST_COLUMNS) + list(extra_columns))


def preprocess_folder(
    in_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    settings: PreprocessSettings,
    workers: int = 1,
    labels: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr),
    volumes: Sequence[str | ExtraVolume] = (),
) -> PreprocessSummary:
    """Preprocess every input volume of ``in_dir`` into ``out_dir`` (see the module docstring).

    ``workers``: processes run in parallel (1 = in this process). ``labels``: CSV
    joined on ``id``; if None and ``in_dir/manifest.csv`` has an ``id`` column, that
    one is joined. ``volumes``: extra voxel-aligned volumes to carry, as ``--volume``
    takes them (``NAME:KIND`` or ``NAME=COLUMN:KIND``), besides those ``in_dir/phantoms.json``
    declares (:func:`declared_volumes`). A file that fails is recorded in the summary,
    never raised. Raises UsageError/InputError for problems with the request itself
    (missing folder, no inputs, bad settings, output made with other settings).
    """
    from tqdm import tqdm

    in_dir, out_dir = Path(in_dir), Path(out_dir)
    settings.check()
    if workers < 1:
        raise UsageError(f"--workers {workers}: need at least 1")
    items = discover_inputs(in_dir, exclude=out_dir)
    if not items:
        raise InputError(
            f"{in_dir}: no input volumes found (looked for {', '.join(VOLUME_SUFFIXES)} "
            "files and DICOM sub-folders)"
        )
    extras = declared_volumes(in_dir, volumes)
    extra_sources = _extra_sources(in_dir, extras)
    added_volumes, added_cells = ({}, {}) if overwrite else _added_volumes(out_dir)
    added_volumes = {k: v for k, v in added_volumes.items() if k not in extras}
    reserved = list(MANIFEST_COLUMNS) + list(added_volumes) + list(extras) + [v.column for v in extras.values()]
    label_columns: list[str] = []
    label_rows: dict[str, dict[str, str]] = {}
    if labels is not None:
        label_columns, label_rows = read_labels(labels, skip=reserved)
    elif (in_dir / MANIFEST_NAME).is_file():
        try:
            label_columns, label_rows = read_labels(in_dir / MANIFEST_NAME, skip=reserved)
        except UsageError:
            pass  # no `id` column (or unreadable): not a labels table, so not joined
        else:
            log(f"joining labels from {in_dir / MANIFEST_NAME} (columns: {', '.join(label_columns) or 'none'})")
    _prepare_out_dir(in_dir, out_dir, settings, overwrite, list(extras))
    settings_json = settings.to_json()
    info = dict(settings_json)
    info.update(
        {
            "background": BACKGROUND,
            "dtype": "float16",
            "layout": "(x, y, z) RAS+, z inferior→superior; axial slice = volume[..., k]",
            "intensity": (
                "hu = hu_window[0] + (x + 1) / 2 * (hu_window[1] - hu_window[0])"
                if settings.modality == "ct"
                else "x = 2 * (v - p_low) / (p_high - p_low) - 1 per volume (percentiles of nonzero voxels), clipped"
            ),
            "medgen_version": __version__,
            # The named volumes of each subject (medgen.data.dataset): the image, those carried from the
            # input folder (with their input_column), and any added later.
            "volumes": {
                IMAGE: {"kind": "intensity", "dtype": "float16"},
                **{name: v.spec() for name, v in extras.items()},
                **added_volumes,
            },
        }
    )
    (out_dir / VOLUMES_DIR).mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / INFO_NAME, info)

    summary = PreprocessSummary()
    stamps = {item.id: source_stamp(item.path) for item in items}
    extra_records = {
        item.id: {
            name: {"kind": extras[name].kind, "source": str(path.resolve()), "source_stamp": _stamp_or_none(path)}
            for name, path in extra_sources.get(item.id, {}).items()
        }
        for item in items
    }
    todo: list[InputItem] = []
    for item in items:
        if _is_done(item, out_dir, settings_json, stamps[item.id], extra_records[item.id]):
            summary.skipped.append(item.id)
        else:
            todo.append(item)
    paths = {item.id: str(item.path) for item in items}
    bar = tqdm(total=len(items), initial=len(summary.skipped), desc="preprocess", unit="vol", disable=not progress)

    def record(item_id: str, reason: str | None) -> None:
        if reason is None:
            summary.written.append(item_id)
        else:
            summary.failed.append((paths[item_id], reason))
        bar.update(1)

    args = [(it.id, str(it.path), str(out_dir), settings_json, stamps[it.id], extra_records[it.id]) for it in todo]
    n_procs = min(workers, len(todo))
    try:
        if n_procs <= 1:
            for a in args:
                record(*_process_one(*a))
        else:
            import multiprocessing

            # spawn: workers start clean even if the parent has threads (torch, BLAS).
            with ProcessPoolExecutor(n_procs, mp_context=multiprocessing.get_context("spawn")) as pool:
                futures = {pool.submit(_process_one, *a): a[0] for a in args}
                try:
                    for future in as_completed(futures):
                        try:
                            record(*future.result())
                        except BrokenProcessPool:
                            record(futures[future], "worker process died unexpectedly (e.g. killed for memory); rerun to retry")
                except KeyboardInterrupt:
                    pool.shutdown(wait=False, cancel_futures=True)
                    raise
    finally:
        bar.close()

    done = set(summary.written) | set(summary.skipped)
    rows = []
    skipped = set(summary.skipped)
    for item in items:
        if item.id in done:
            sidecar = json.loads((out_dir / VOLUMES_DIR / f"{item.id}.json").read_text(encoding="utf-8"))
            row = {**sidecar["row"], **label_rows.get(item.id, {})}
            row.update({name: sidecar["row"].get(name, "") for name in extras})
            if item.id in skipped:
                row.update(added_cells.get(item.id, {}))
            rows.append(row)
    if label_columns:
        missing = [r["id"] for r in rows if r["id"] not in label_rows]
        if missing:
            log(f"labels: {len(missing)} of {len(rows)} volumes have no row in the labels CSV (e.g. {missing[0]})")
    for name in extras:
        lacking = [r["id"] for r in rows if not r.get(name)]
        if lacking:
            log(f"{name}: {len(lacking)} of {len(rows)} subjects have no {name} volume in "
                f"{in_dir / MANIFEST_NAME} (e.g. {lacking[0]})")
    if added_volumes and summary.written:
        log(
            f"{len(summary.written)} subjects written in this run have no {', '.join(added_volumes)} volume "
            f"(e.g. {summary.written[0]}); add them again before using those volumes"
        )
    summary.failed.sort()
    if rows:
        summary.manifest = out_dir / MANIFEST_NAME
        write_manifest(summary.manifest, rows, label_columns + list(extras) + list(added_volumes))
    return summary
