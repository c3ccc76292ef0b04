"""Sets of volumes to evaluate: a preprocessed data set or a folder of volume files.

A :class:`VolumeSet` is a lazy sequence: ``vs[i]`` reads volume i as float32 ``(x, y, z)``
in medgen's [-1, 1] convention (for features and MS-SSIM), ``vs.hu(i)`` the same volume in
Hounsfield units (CT only, for the anatomy statistics), ``vs.spacing(i)`` its voxel size in
mm. Nothing is held in memory, so sets of hundreds of 256³ volumes can be evaluated.

Folder kinds
------------
preprocessed
    Written by ``medgen preprocess``: ``manifest.csv``, ``preprocess.json`` and
    ``volumes/<id>.npy`` in [-1, 1]; modality, CT window and voxel spacing come from there.
files
    Volume files directly in the folder (NIfTI, NRRD/MHA, .npy, DICOM sub-folders; e.g. the
    output of ``medgen generate``). Each file is reoriented to RAS+. A file whose values all
    lie in [-1, 1] is taken as already normalised; otherwise CT is mapped from HU with the
    CT window (default [-1024, 600] HU, as preprocessing does) and MRI by the preprocessing
    percentiles. The modality comes from ``--modality``, from the other set
    (:meth:`VolumeSet.inherit`), from ``generate.json``, or is guessed (values below -200
    look like HU: CT), and the guess is reported. The ``.npy`` files of a ``medgen generate``
    folder (``--format npy``) have no header: their voxel size is the run's, from
    ``generate.json`` (``spacing_mm``), and so are the modality and the CT window.

In memory
    :class:`ArrayVolumeSet`: volumes already loaded, an array ``[n, X, Y, Z]`` (or a list of
    ``(X, Y, Z)`` arrays) in [-1, 1] (or HU / MRI intensities with a modality), 1 mm voxels
    unless a spacing is given. Its features are never cached on disk.
    :func:`as_volume_set` accepts a folder, a set or an array.

When two sets differ in shape, volume-based metrics (MS-SSIM, anatomy, voxel memorisation)
need one shape: :func:`align_shapes` sets the element-wise smallest shape as target for all
sets (area averaging, trilinear when enlarging) and scales the spacing so physical volumes
stay right. Feature extractors resize every volume to their own input size anyway.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from medgen.core.errors import InputError, UsageError
from medgen.core.volume import CT_WINDOW_DEFAULT, parse_spacing, resize_volume

MODALITIES = ("ct", "mri")
NORMALISED_TOLERANCE = 1e-3  # values within [-1-tol, 1+tol] count as already in [-1, 1]


@dataclass
class VolumeSet(Sequence[np.ndarray]):
    """A lazily read set of volumes (see the module docstring).

    ``modality``: ``"ct"``, ``"mri"`` or None (unknown); ``hu_window``: CT window in HU that
    maps to [-1, 1]; ``target_shape``: shape every volume is resized to on reading (None:
    native); ``notes``: how the set was interpreted, for the report.
    """

    root: Path
    kind: str
    ids: list[str]
    files: list[Path]
    modality: str | None = None
    hu_window: tuple[float, float] | None = None
    mri_percentiles: tuple[float, float] = (0.5, 99.5)
    spacings: list[tuple[float, float, float] | None] = field(default_factory=list)
    shapes: list[tuple[int, int, int] | None] = field(default_factory=list)
    target_shape: tuple[int, int, int] | None = None
    modality_source: str = ""
    notes: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    cacheable = True  # features of the set may be cached on disk (metrics.cache)

    # ------------------------------------------------------------------ sequence
    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        array = self.read_native(int(i))
        if self.target_shape is not None:
            array = _resize(array, self.target_shape)
        return array

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    # ------------------------------------------------------------------ reading
    def read_stored(self, i: int) -> tuple[np.ndarray, tuple[float, float, float]]:
        """Volume i as stored (RAS+, original intensities), float32, with its spacing in mm."""
        path = self.files[i]
        if self.kind == "preprocessed":
            try:
                array = np.load(path, mmap_mode="r")
            except Exception as exc:  # noqa: BLE001
                raise InputError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from None
            if array.ndim != 3:
                raise InputError(f"{path}: expected a 3D volume, got shape {array.shape}")
            return np.asarray(array, dtype=np.float32), self.spacings[i] or (1.0, 1.0, 1.0)
        from medgen.data.io import read_volume, reorient_to_ras

        volume = reorient_to_ras(read_volume(path))
        return np.asarray(volume.array, dtype=np.float32), volume.spacing

    def read_native(self, i: int) -> np.ndarray:
        """Volume i in [-1, 1] at its own shape (``vs[i]`` resizes it to ``target_shape``)."""
        array, _ = self.read_stored(i)
        if self.kind == "preprocessed" or _is_normalised(array):
            return np.clip(np.nan_to_num(array, nan=-1.0), -1.0, 1.0)
        if self.modality == "ct":
            from medgen.data.preprocess import normalize_ct

            return normalize_ct(array, *(self.hu_window or CT_WINDOW_DEFAULT))
        if self.modality == "mri":
            from medgen.data.preprocess import normalize_mri

            try:
                return normalize_mri(array, self.mri_percentiles)
            except InputError as exc:
                raise InputError(f"{self.item_name(i)}: {exc}") from None
        raise UsageError(
            f"{self.item_name(i)}: intensities are not in [-1, 1] and the modality is unknown; pass --modality ct or mri"
        )

    def item_name(self, i: int) -> str:
        """Volume i as error messages name it: its file, or for volumes in memory ``<set> volume <id>``."""
        return str(self.files[i]) if i < len(self.files) else f"{self.root} volume {self.ids[i]}"

    def hu(self, i: int) -> np.ndarray:
        """Volume i in Hounsfield units (CT only), at ``target_shape``: the [-1, 1] volume
        mapped back with the CT window, so real and generated volumes share the window's clipping."""
        if self.modality != "ct":
            raise UsageError(f"{self.root}: Hounsfield units need a CT set (modality is {self.modality or 'unknown'})")
        from medgen.data.preprocess import denormalize_ct

        return denormalize_ct(self[i], *(self.hu_window or CT_WINDOW_DEFAULT))

    def _geometry(self, i: int) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
        shape, sp = self.shapes[i], self.spacings[i]
        if shape is None or sp is None:
            peek = _peek_geometry(self.files[i]) if self.kind == "files" else None
            if peek is None:
                array, sp_read = self.read_stored(i)
                peek = (tuple(int(n) for n in array.shape), sp_read)  # type: ignore[assignment]
            shape = shape or peek[0]
            sp = sp or peek[1]
            self.shapes[i], self.spacings[i] = shape, sp
        return shape, sp  # type: ignore[return-value]

    def spacing(self, i: int) -> tuple[float, float, float]:
        """Voxel size (mm) of volume i as returned by ``vs[i]`` (scaled if resized)."""
        shape, sp = self._geometry(i)
        if self.target_shape is None:
            return tuple(float(s) for s in sp)  # type: ignore[return-value]
        return tuple(float(s) * n / t for s, n, t in zip(sp, shape, self.target_shape))  # type: ignore[return-value]

    def native_shape(self, i: int) -> tuple[int, int, int]:
        return self._geometry(i)[0]

    # ------------------------------------------------------------------ bookkeeping
    def subset(self, indices: Sequence[int]) -> "VolumeSet":
        idx = list(indices)
        return replace(
            self,
            ids=[self.ids[i] for i in idx],
            files=[self.files[i] for i in idx],
            spacings=[self.spacings[i] for i in idx],
            shapes=[self.shapes[i] for i in idx],
            notes=list(self.notes),
        )

    def inherit(self, other: "VolumeSet") -> None:
        """Take modality and CT window from ``other`` when this set's are unknown or guessed."""
        if other.modality and (self.modality is None or self.modality_source == "guessed"):
            self.modality = other.modality
            self.hu_window = self.hu_window or other.hu_window
            self.modality_source = f"as {other.root.name}"
        if self.modality == "ct" and self.hu_window is None:
            self.hu_window = other.hu_window

    def source_key(self) -> str:
        """What the set reads from (two sets with the same key hold the same volumes): its folder."""
        return os.path.realpath(self.root)

    def fingerprint(self) -> list[list]:
        """(file relative to root, size in bytes, modification time in ns) of every volume."""
        out = []
        for path in self.files:
            st = path.stat()
            out.append([os.path.relpath(path, self.root), st.st_size, st.st_mtime_ns])
        return out

    def intensity_settings(self) -> dict[str, Any]:
        """Everything that changes what ``vs[i]`` returns (part of the feature-cache key)."""
        return {
            "kind": self.kind,
            "modality": self.modality,
            "hu_window": list(self.hu_window) if self.hu_window else None,
            "mri_percentiles": list(self.mri_percentiles) if self.modality == "mri" else None,
            "preprocess": self.info.get("preprocess"),
        }

    def describe(self) -> dict[str, Any]:
        known = []
        for i, shape in enumerate(self.shapes):
            if shape is None and self.kind == "files":
                peek = _peek_geometry(self.files[i])  # header only; other formats stay unlisted
                shape = peek[0] if peek else None
            if shape is not None:
                known.append(tuple(shape))
        shapes = sorted(set(known))
        return {
            "path": str(self.root),
            "kind": self.kind,
            "n": len(self),
            "modality": self.modality,
            "modality_source": self.modality_source,
            "hu_window": list(self.hu_window) if self.hu_window else None,
            "native_shapes": ["x".join(map(str, s)) for s in shapes[:5]] + (["..."] if len(shapes) > 5 else []),
            "evaluated_shape": "x".join(map(str, self.target_shape)) if self.target_shape else None,
            "notes": self.notes,
        }


@dataclass
class ArrayVolumeSet(VolumeSet):
    """Volumes held in memory: ``arrays`` is ``[n, X, Y, Z]`` or a list of ``(X, Y, Z)`` arrays.

    Read like a folder of raw files: values within [-1, 1] are taken as normalised,
    others are mapped by the modality (CT from HU with the CT window, MRI by percentiles).
    ``spacings`` default to 1 mm. Features of such a set are not cached on disk
    (:attr:`cacheable` is False).
    """

    arrays: Any = None
    cacheable = False

    def __len__(self) -> int:
        return len(self.arrays)

    def read_stored(self, i: int) -> tuple[np.ndarray, tuple[float, float, float]]:
        return np.asarray(self.arrays[i], dtype=np.float32), self.spacings[i] or (1.0, 1.0, 1.0)

    def _geometry(self, i: int) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
        return self.shapes[i], self.spacings[i] or (1.0, 1.0, 1.0)  # type: ignore[return-value]

    def subset(self, indices: Sequence[int]) -> "ArrayVolumeSet":
        idx = list(indices)
        return replace(
            self,
            arrays=[self.arrays[i] for i in idx],
            ids=[self.ids[i] for i in idx],
            spacings=[self.spacings[i] for i in idx],
            shapes=[self.shapes[i] for i in idx],
            notes=list(self.notes),
        )

    def source_key(self) -> str:
        return f"array:{id(self.arrays)}"

    def fingerprint(self) -> list[list]:
        raise TypeError("volumes in memory have no file fingerprint (their features are not cached)")


def array_volume_set(
    volumes: Any,
    *,
    name: str = "array",
    modality: str | None = None,
    spacing: Sequence[float] | None = None,
    ids: Sequence[str] | None = None,
) -> ArrayVolumeSet:
    """A set of volumes already in memory: ``[n, X, Y, Z]`` (or ``[n, 1, X, Y, Z]``) array or
    tensor, or a sequence of ``(X, Y, Z)`` arrays. ``name`` names the set in reports
    (``<name>``); ``spacing``: voxel size in mm of every volume (default 1 mm)."""
    if modality is not None and modality not in MODALITIES:
        raise UsageError(f"--modality must be one of {', '.join(MODALITIES)}, not {modality!r}")
    if hasattr(volumes, "detach"):  # a torch tensor
        volumes = volumes.detach().cpu().numpy()
    if isinstance(volumes, np.ndarray):
        if volumes.ndim == 5 and volumes.shape[1] == 1:
            volumes = volumes[:, 0]
        if volumes.ndim != 4:
            raise UsageError(f"{name}: volumes of shape {volumes.shape}: expected [n, X, Y, Z]")
        arrays: Any = volumes
    else:
        arrays = [np.asarray(v) for v in volumes]
        bad = [i for i, v in enumerate(arrays) if v.ndim != 3]
        if bad:
            raise UsageError(f"{name}: volume {bad[0]} has shape {arrays[bad[0]].shape}: expected (X, Y, Z)")
    n = len(arrays)
    if n == 0:
        raise InputError(f"{name}: no volumes")
    if ids is not None and len(ids) != n:
        raise UsageError(f"{name}: {len(ids)} ids for {n} volumes")
    sp = None if spacing is None else tuple(float(s) for s in spacing)
    vs = ArrayVolumeSet(
        root=Path(f"<{name}>"),
        kind="array",
        ids=[str(i) for i in ids] if ids is not None else [f"{name}-{i:04d}" for i in range(n)],
        files=[],
        spacings=[sp] * n,  # type: ignore[list-item]
        shapes=[tuple(int(s) for s in np.shape(arrays[i])) for i in range(n)],  # type: ignore[misc]
        arrays=arrays,
    )
    if modality is not None:
        vs.modality, vs.modality_source = modality, "given"
        if modality == "ct":
            vs.hu_window = CT_WINDOW_DEFAULT
    return vs


def as_volume_set(volumes: Any, *, modality: str | None = None, what: str = "volumes") -> VolumeSet:
    """A :class:`VolumeSet` from a folder (:func:`open_volume_set`), an opened set (a copy, so
    evaluating does not change the caller's) or volumes in memory (:func:`array_volume_set`)."""
    if isinstance(volumes, VolumeSet):
        vs = replace(volumes, notes=list(volumes.notes), spacings=list(volumes.spacings), shapes=list(volumes.shapes))
        if modality is not None and vs.modality is None:
            if modality not in MODALITIES:
                raise UsageError(f"--modality must be one of {', '.join(MODALITIES)}, not {modality!r}")
            vs.modality, vs.modality_source = modality, "--modality"
            if modality == "ct" and vs.hu_window is None:
                vs.hu_window = CT_WINDOW_DEFAULT
        return vs
    if isinstance(volumes, (str, os.PathLike)):
        return open_volume_set(volumes, modality=modality, what=what)
    return array_volume_set(volumes, name=what.lstrip("-"), modality=modality)


def _is_normalised(array: np.ndarray) -> bool:
    finite = array[np.isfinite(array)]
    return finite.size > 0 and float(finite.min()) >= -1 - NORMALISED_TOLERANCE and float(finite.max()) <= 1 + NORMALISED_TOLERANCE


def _peek_geometry(path: Path) -> tuple[tuple[int, int, int], tuple[float, float, float]] | None:
    """(shape, spacing) after RAS+ reorientation from the header only (NIfTI, .npy); else None."""
    name = path.name.lower()
    try:
        if name.endswith(".npy"):
            shape = np.load(path, mmap_mode="r").shape
            if len(shape) != 3:
                return None
            return tuple(int(s) for s in shape), (1.0, 1.0, 1.0)  # type: ignore[return-value]
        if name.endswith((".nii", ".nii.gz")):
            import nibabel as nib

            img = nib.load(str(path))
            if len(img.shape) < 3 or any(n != 1 for n in img.shape[3:]):
                return None
            shape = [int(s) for s in img.shape[:3]]
            zooms = np.linalg.norm(img.affine[:3, :3], axis=0)
            out_shape, out_zoom = [0, 0, 0], [0.0, 0.0, 0.0]
            for axis, (target, _) in enumerate(nib.orientations.io_orientation(img.affine)):
                out_shape[int(target)] = shape[axis]
                out_zoom[int(target)] = float(zooms[axis])
            return tuple(out_shape), tuple(out_zoom)  # type: ignore[return-value]
    except Exception:  # noqa: BLE001 - the full read later reports the problem
        return None
    return None


def _looks_like_run(root: Path) -> bool:
    return (root / "config.yaml").is_file()


def open_volume_set(path: str | os.PathLike, *, modality: str | None = None, what: str = "volumes") -> VolumeSet:
    """Open a preprocessed data set or a folder of volume files (see the module docstring).

    ``modality``: force ``"ct"`` or ``"mri"`` for a folder of files. ``what``: the role of
    the folder in messages (e.g. ``"--real"``). Raises InputError for a missing or empty
    folder, UsageError for a training run folder (sample it with ``medgen generate`` first
    or pass it where a run is accepted).
    """
    root = Path(path)
    if modality is not None and modality not in MODALITIES:
        raise UsageError(f"--modality must be one of {', '.join(MODALITIES)}, not {modality!r}")
    if not root.exists():
        raise InputError(f"{root}: {what} folder does not exist")
    if not root.is_dir():
        raise InputError(f"{root}: {what} is not a folder")
    if (root / "manifest.csv").is_file() and (root / "preprocess.json").is_file():
        return _open_preprocessed(root, what)
    from medgen.data.discover import discover_inputs

    items = discover_inputs(root)
    if not items:
        if _looks_like_run(root):
            raise UsageError(f"{root}: {what} is a training run folder, not volumes; sample it first with `medgen generate`")
        raise InputError(f"{root}: {what} folder holds no volumes (.nii.gz, .nii, .npy, .nrrd, .mha, DICOM folders, or a preprocessed data set)")
    vs = VolumeSet(
        root=root,
        kind="files",
        ids=[it.id for it in items],
        files=[it.path for it in items],
        spacings=[None] * len(items),
        shapes=[None] * len(items),
    )
    generated = _read_generate_json(root)  # medgen generate's settings, if this folder is its output
    _npy_spacing_from_generate_json(vs, generated)
    if modality is not None:
        vs.modality, vs.modality_source = modality, "--modality"
    else:
        _modality_from_generate_json(vs, generated)
    if vs.modality == "ct" and vs.hu_window is None:
        vs.hu_window = CT_WINDOW_DEFAULT
    return vs


def _open_preprocessed(root: Path, what: str) -> VolumeSet:
    from medgen.data.dataset import load_manifest, load_preprocess_info

    info = load_preprocess_info(root)
    rows = load_manifest(root)
    files = [root / row["file"] for row in rows]
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise InputError(f"{missing[0]}: listed in {root / 'manifest.csv'} but missing ({len(missing)} missing in all)")
    modality = str(info.get("modality", "")).lower() or None
    window = tuple(float(v) for v in info["hu_window"]) if "hu_window" in info else None
    if modality == "ct" and window is None:
        window = CT_WINDOW_DEFAULT
    iso = info.get("spacing")
    spacings = []
    for row in rows:
        sp = parse_spacing(row.get("spacing", "")) if row.get("spacing") else None
        if sp is None and iso:
            sp = (float(iso),) * 3
        spacings.append(sp)
    size = int(info.get("size", 0) or 0)
    shapes = [(size, size, size) if size else None for _ in rows]
    vs = VolumeSet(
        root=root,
        kind="preprocessed",
        ids=[row["id"] for row in rows],
        files=files,
        modality=modality,
        hu_window=window,  # type: ignore[arg-type]
        mri_percentiles=tuple(info.get("percentiles", (0.5, 99.5))),  # type: ignore[arg-type]
        spacings=spacings,
        shapes=shapes,
        modality_source="preprocess.json",
        info={"preprocess": {k: info.get(k) for k in ("modality", "size", "hu_window", "percentiles", "spacing", "fit")}},
    )
    if any(sp is None for sp in spacings):
        vs.notes.append("voxel spacing unknown for some volumes: 1 mm assumed")
    return vs


def _read_generate_json(root: Path) -> dict[str, Any]:
    """The settings ``medgen generate`` wrote into ``root`` (empty when there are none or they cannot be read)."""
    path = root / "generate.json"
    if not path.is_file():
        return {}
    try:
        settings = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return settings if isinstance(settings, dict) else {}


def _npy_spacing_from_generate_json(vs: VolumeSet, settings: dict[str, Any]) -> None:
    """Give the ``.npy`` files of a ``medgen generate`` folder the run's voxel size (``spacing_mm``).

    A ``.npy`` file has no header, so it would count as 1 mm voxels and every volume in millilitres would be
    off by the voxel volume; NIfTI samples carry the same spacing in their own header."""
    spacing = settings.get("spacing_mm")
    try:
        sp = tuple(float(v) for v in spacing)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        return
    if len(sp) != 3 or min(sp) <= 0:
        return
    for i, f in enumerate(vs.files):
        if Path(f).name.lower().endswith(".npy"):
            vs.spacings[i] = sp  # type: ignore[call-overload]


def _modality_from_generate_json(vs: VolumeSet, settings: dict[str, Any]) -> None:
    intensity = str(settings.get("intensity", ""))
    if intensity.startswith("HU"):
        vs.modality, vs.modality_source = "ct", "generate.json"
        m = re.search(r"\[\s*(-?[\d.]+)\s*,\s*(-?[\d.]+)\s*\]", intensity)
        if m:
            vs.hu_window = (float(m.group(1)), float(m.group(2)))
    elif settings.get("modality") in MODALITIES:  # samples kept in [-1, 1] (``--format npy``)
        vs.modality, vs.modality_source = settings["modality"], "generate.json"
        window = settings.get("hu_window")
        if vs.modality == "ct" and isinstance(window, list) and len(window) == 2:
            vs.hu_window = (float(window[0]), float(window[1]))


def guess_modality(vs: VolumeSet) -> None:
    """If the modality is still unknown, guess it from the first volume's intensities."""
    if vs.modality is not None or not len(vs):
        return
    array, _ = vs.read_stored(0)
    if _is_normalised(array):
        vs.notes.append("modality unknown (volumes already in [-1, 1]); pass --modality for anatomy statistics")
        return
    finite = array[np.isfinite(array)]
    if float(finite.min()) < -200:
        vs.modality, vs.hu_window, vs.modality_source = "ct", CT_WINDOW_DEFAULT, "guessed"
        vs.notes.append(f"assumed CT in HU (values below -200); window {list(CT_WINDOW_DEFAULT)} HU")
    else:
        vs.modality, vs.modality_source = "mri", "guessed"
        vs.notes.append("assumed MRI (no values below -200 HU); intensities normalised by percentiles")


def choose_subset(vs: VolumeSet, n: int | None, seed: int = 0) -> VolumeSet:
    """At most ``n`` volumes, a seeded random subset (in file order) when the set is larger."""
    if n is None or n >= len(vs):
        return vs
    if n < 1:
        raise UsageError(f"--n {n}: need at least 1")
    idx = np.sort(np.random.default_rng(seed).choice(len(vs), n, replace=False))
    sub = vs.subset(idx.tolist())
    sub.notes.append(f"random subset of {n} of {len(vs)} volumes (seed {seed})")
    return sub


def align_shapes(*sets: VolumeSet | None) -> tuple[int, int, int] | None:
    """Give every set the same target shape when their volumes differ in shape.

    Returns the common shape chosen (element-wise minimum) or None when all volumes
    already share one shape.
    """
    present = [s for s in sets if s is not None]
    shapes = {s.native_shape(i) for s in present for i in range(len(s))}
    if len(shapes) <= 1:
        return None
    target = tuple(int(min(s[a] for s in shapes)) for a in range(3))
    text = "x".join(map(str, target))
    for s in present:
        s.target_shape = target  # type: ignore[assignment]
        s.notes.append(f"volumes resized to {text} for volume-based metrics (the sets' shapes differ)")
    return target  # type: ignore[return-value]


def _resize(array: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """``array`` resized to ``shape`` by medgen's resizing rule (:func:`medgen.core.volume.resize_volume`)."""
    import torch

    if tuple(array.shape) == tuple(shape):
        return array
    x = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None, None]
    return resize_volume(x, shape)[0, 0].numpy()
