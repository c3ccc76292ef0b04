"""The training data set: a torch Dataset over a folder written by ``medgen preprocess``.

Each item is one subject: its volumes as ``[1, S, S, S]`` tensors (``image``,
float32 in [-1, 1], and any other named volume of the data set, see below) plus
its class label and covariates from the manifest. Volumes are memory-mapped
when read, in whichever process reads them, so DataLoader workers never share a
file handle. The train/val/test split is a deterministic function of the ids
and a seed (:func:`split_ids`), so a training run can store and reproduce it.

Named volumes
-------------
A data set may hold several voxel-aligned volumes per subject (degraded and
clean, T1 and T2, label map and image, baseline and follow-up). ``image`` is the
manifest's ``file`` column, written by ``medgen preprocess``; every other volume
is a manifest column of its own name whose cells are ``.npy`` paths relative to
the data folder (volume ``target`` → ``targets/<id>.npy``). Which columns are
volumes is recorded in ``preprocess.json`` under ``volumes``, name →
``{"kind": "intensity" | "label", "dtype": storage dtype}``; without that entry
the data set holds just ``image``. Intensity volumes come back as float32, label
maps (one integer class per voxel) as int64. :func:`add_volume` adds a volume
to an existing data set; ``medgen preprocess`` also writes the volumes an input
folder declares (e.g. the phantoms' ``tissue`` label map and ``t2``), with the
image's geometry (:func:`medgen.data.preprocess.preprocess_subject`).
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import re
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from medgen.core.errors import InputError, UsageError
from medgen.core.fileio import atomic_save_npy, atomic_write_json
from medgen.core.tables import write_csv
from medgen.core.volume import parse_spacing

SPLITS = ("train", "val", "test")
_REQUIRED_COLUMNS = ("id", "file")
#: The volume written by ``medgen preprocess`` (manifest column ``file``).
IMAGE = "image"
#: What a volume's voxels are: ``intensity`` (normalised image values) or ``label`` (integer classes).
VOLUME_KINDS = ("intensity", "label")
#: How :func:`add_volume` stores each kind (``image`` is float16 too), and what an item holds.
STORAGE_DTYPES = {"intensity": "float16", "label": "int16"}
ITEM_DTYPES = {"intensity": np.float32, "label": np.int64}
#: ``preprocess.json``'s ``volumes`` entry of a data set that has only the image.
DEFAULT_VOLUMES = {IMAGE: {"kind": "intensity", "dtype": "float16"}}
# Not volume names: manifest columns written by `medgen preprocess`, item keys besides the volumes,
# and "volume" (its folder would be the image's, volumes/).
_RESERVED_NAMES = (
    "id", "source", "orig_shape", "orig_spacing", "spacing", "file", "label", "covariates", "index", "volume"
)
_VOLUME_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")
_LOCK_NAME = ".volumes.lock"


def _read_manifest(root: str | os.PathLike) -> tuple[list[str], list[dict[str, str]]]:
    path = Path(root) / "manifest.csv"
    if not path.is_file():
        raise InputError(f"{root}: not a preprocessed data set (no manifest.csv); run `medgen preprocess` first")
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            columns = list(reader.fieldnames or [])
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: cannot read ({exc})") from exc
    missing = [c for c in _REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise InputError(f"{path}: manifest lacks column(s) {', '.join(missing)}")
    if not rows:
        raise InputError(f"{path}: manifest lists no volumes")
    return columns, rows


def read_manifest(root: str | os.PathLike) -> tuple[list[str], list[dict[str, str]]]:
    """``root/manifest.csv`` as (columns in file order, rows as dicts of strings).

    Raises InputError if ``root`` is not a preprocessed data set.
    """
    return _read_manifest(root)


def load_manifest(root: str | os.PathLike) -> list[dict[str, str]]:
    """Rows of ``root/manifest.csv`` as dicts of strings (in file order).

    Raises InputError if ``root`` is not a preprocessed data set.
    """
    return _read_manifest(root)[1]


def load_preprocess_info(root: str | os.PathLike) -> dict:
    """Contents of ``root/preprocess.json`` (modality, size, HU window or percentiles, volumes, ...)."""
    path = Path(root) / "preprocess.json"
    if not path.is_file():
        raise InputError(f"{root}: not a preprocessed data set (no preprocess.json); run `medgen preprocess` first")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read ({exc})") from exc


def voxel_spacing(root: str | os.PathLike | None, info: dict,
                  ids: Sequence[str] | None = None) -> tuple[tuple[float, float, float], str] | None:
    """The voxel size in mm of a preprocessed data set's volumes, and where it came from; None if unknown.

    Order: the isotropic (or per-axis) spacing the set was resampled to (``info``, the contents of
    its ``preprocess.json``: ``spacing``); else the per-axis median of the manifest's ``spacing``
    column over ``ids`` (all rows when None or empty), read from ``root`` (None: not read). A set
    preprocessed to a size (``--size`` without ``--spacing``) has no single spacing, hence the median.
    """
    sp = info.get("spacing")
    if isinstance(sp, (int, float)) and not isinstance(sp, bool) and sp > 0:
        return (float(sp),) * 3, "preprocess.json spacing"
    if isinstance(sp, (list, tuple)) and len(sp) == 3:
        return (float(sp[0]), float(sp[1]), float(sp[2])), "preprocess.json spacing"
    manifest = Path(root) / "manifest.csv" if root else None
    if manifest is None or not manifest.is_file():
        return None
    wanted = set(ids or [])
    with open(manifest, newline="", encoding="utf-8-sig") as fh:
        found = [parse_spacing(r.get("spacing", "")) for r in csv.DictReader(fh) if not wanted or r.get("id") in wanted]
    found = [f for f in found if f is not None]
    if not found:
        return None
    med = np.median(np.asarray(found, dtype=np.float64), axis=0)
    return (float(med[0]), float(med[1]), float(med[2])), f"median spacing of the training volumes in {manifest}"


def label_class_count(info: dict, name: str, missing: str) -> int:
    """One more than the largest class that ``preprocess.json`` (``info``) records for the label volume
    ``name``. UsageError ``missing`` when the data set has no label volume of that name, and one naming
    ``--num-classes`` when it records no classes."""
    spec = (info.get("volumes") or {}).get(name)
    if not isinstance(spec, dict) or spec.get("kind") != "label":
        raise UsageError(missing)
    classes = spec.get("classes")
    try:
        k = max(int(c) for c in classes) + 1 if isinstance(classes, dict) and classes else None
    except ValueError:
        k = None
    if k is None:
        raise UsageError(f"preprocess.json records no classes of label volume {name!r}; pass --num-classes K")
    return k


def volume_kinds(info: dict, source: str | os.PathLike = "preprocess.json") -> dict[str, str]:
    """The named volumes of a data set, name → kind (``image`` first), from its ``preprocess.json`` contents.

    A data set without a ``volumes`` entry holds only ``image``. ``source`` names the
    file in error messages. Raises InputError for a malformed entry.
    """
    declared = info.get("volumes")
    if declared is None:
        declared = DEFAULT_VOLUMES
    if not isinstance(declared, dict):
        raise InputError(f"{source}: 'volumes' must map volume names to {{\"kind\": ...}}, not {declared!r}")
    kinds = {IMAGE: "intensity"}
    for name, spec in declared.items():
        kind = spec.get("kind", "intensity") if isinstance(spec, dict) else None
        if kind not in VOLUME_KINDS or (name == IMAGE and kind != "intensity"):
            raise InputError(
                f"{source}: volume {name!r} has kind {kind!r}; need one of {', '.join(VOLUME_KINDS)} "
                "(image: intensity)"
            )
        kinds[name] = kind
    return kinds


def volume_column(name: str) -> str:
    """The manifest column that holds volume ``name``'s file paths (``file`` for the image)."""
    return "file" if name == IMAGE else name


def split_ids(
    ids: Sequence[str], seed: int = 0, fractions: Sequence[float] = (0.8, 0.1, 0.1)
) -> dict[str, list[str]]:
    """Split ids into ``train``/``val``/``test`` deterministically from (sorted ids, seed, fractions).

    The sorted unique ids are shuffled by ``numpy.random.Generator(PCG64(seed))``;
    val and test get ``round(n * fraction)`` ids, train the rest. Each list is sorted.
    The same inputs give the same split on every machine and numpy version with PCG64.
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or not math.isclose(sum(fractions), 1.0, abs_tol=1e-6):
        raise UsageError(f"split fractions {tuple(fractions)}: need three non-negative numbers summing to 1")
    unique = sorted(set(ids))
    if len(unique) != len(ids):
        raise UsageError("split_ids: ids must be unique")
    order = np.random.Generator(np.random.PCG64(seed)).permutation(len(unique))
    n = len(unique)
    n_val = int(round(n * fractions[1]))
    n_test = min(int(round(n * fractions[2])), n - n_val)
    shuffled = [unique[i] for i in order]
    val = shuffled[:n_val]
    test = shuffled[n_val : n_val + n_test]
    train = shuffled[n_val + n_test :]
    return {"train": sorted(train), "val": sorted(val), "test": sorted(test)}


class VolumeDataset(Dataset):
    """Preprocessed volumes for training.

    root: folder written by ``medgen preprocess``.
    split: ``"train"``, ``"val"``, ``"test"`` or ``"all"``.
    seed, fractions: define the split (see :func:`split_ids`).
    label_column: manifest column holding the class (integers, or names mapped to
        0..K-1 in sorted order); None or an absent column gives label -1.
    covariate_columns: manifest columns returned as floats (empty cell → NaN).
    ids: use exactly these ids instead of computing the split (e.g. a split stored
        with a training run).
    keys: the named volumes each item holds (e.g. ``("image", "target")``); None:
        every volume of the data set (just ``image`` for a data set without others).
    transform: called on every item (a dict) before it is returned, e.g. the
        augmentations of :mod:`medgen.data.transforms`; runs in the DataLoader worker.

    ``ds[i]`` is ``{"image": FloatTensor[1, S, S, S], <other key>: Tensor[1, S, S, S], ...,
    "label": LongTensor[], "covariates": FloatTensor[len(covariate_columns)], "id": str,
    "index": int}``: intensity volumes float32, label maps int64.
    Every listed volume file must exist (checked here); volumes of one subject must
    have the same shape (checked when an item is read).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        seed: int = 0,
        fractions: Sequence[float] = (0.8, 0.1, 0.1),
        label_column: str | None = "label",
        covariate_columns: Sequence[str] = (),
        ids: Sequence[str] | None = None,
        keys: Sequence[str] | None = None,
        transform: Callable[[dict], dict] | None = None,
    ) -> None:
        self.root = Path(root)
        self.info = load_preprocess_info(self.root)
        columns_in_order, rows = _read_manifest(self.root)
        by_id = {row["id"]: row for row in rows}
        if split not in SPLITS + ("all",):
            raise UsageError(f"split {split!r}: choose one of {', '.join(SPLITS + ('all',))}")
        if ids is not None:
            unknown = [i for i in ids if i not in by_id]
            if unknown:
                raise InputError(f"{self.root}: {len(unknown)} requested ids are not in the manifest (e.g. {unknown[0]!r})")
            chosen = list(ids)
        elif split == "all":
            chosen = sorted(by_id)
        else:
            chosen = split_ids(list(by_id), seed, fractions)[split]
        self.split = split
        self.ids: list[str] = chosen
        self.size = int(self.info.get("size", 0)) or None
        self.transform = transform

        # Named volumes: which ones, and every file of them (a missing one is reported now, not mid-training).
        manifest = self.root / "manifest.csv"
        available = volume_kinds(self.info, self.root / "preprocess.json")
        if isinstance(keys, str):
            keys = [keys]
        keys = list(available) if keys is None else list(keys)
        unknown_keys = [k for k in keys if k not in available]
        if unknown_keys:
            raise InputError(
                f"{self.root / 'preprocess.json'}: no volume {', '.join(map(repr, unknown_keys))} in this data set "
                f"(volumes: {', '.join(available)})"
            )
        if not keys or len(set(keys)) != len(keys):
            raise UsageError(f"keys {keys!r}: need at least one volume name, each at most once")
        self.keys: list[str] = keys
        self.volumes: dict[str, str] = {k: available[k] for k in keys}
        self.files: dict[str, list[Path]] = {}
        for key in keys:
            column = volume_column(key)
            if column not in columns_in_order:
                raise InputError(
                    f"{manifest}: no column {column!r}, but preprocess.json lists a volume {key!r}"
                )
            paths = []
            for item_id in chosen:
                cell = (by_id[item_id][column] or "").strip()
                if not cell:
                    raise InputError(
                        f"{manifest}: subject {item_id!r} has no {key!r} volume (empty cell in column {column!r})"
                    )
                path = self.root / cell
                if not path.is_file():
                    raise InputError(f"{path}: {key!r} volume of subject {item_id!r} is missing (listed in {manifest})")
                paths.append(path)
            self.files[key] = paths

        columns = set(columns_in_order)
        self.label_column = label_column if label_column in columns else None
        self.classes: list[str] = []
        labels = [-1] * len(chosen)
        if self.label_column is not None:
            values = [row[self.label_column].strip() for row in rows]
            present = [v for v in values if v != ""]
            try:
                as_int = {v: int(v) for v in present}
            except ValueError:
                # Class names: numbered in sorted order over the whole manifest, so every split agrees.
                self.classes = sorted(set(present))
                as_int = {v: k for k, v in enumerate(self.classes)}
            labels = [as_int.get(by_id[i][self.label_column].strip(), -1) for i in chosen]
        self.labels = labels

        missing = [c for c in covariate_columns if c not in columns]
        if missing:
            raise InputError(
                f"{manifest}: no column(s) {', '.join(missing)} "
                f"(columns: {', '.join(columns_in_order)})"
            )
        self.covariate_columns = list(covariate_columns)
        self.covariates = np.array(
            [[_to_float(by_id[i][c], c, i) for c in self.covariate_columns] for i in chosen], dtype=np.float32
        ).reshape(len(chosen), len(self.covariate_columns))

    @property
    def num_classes(self) -> int:
        """Number of classes (0 if there is no label column)."""
        if self.label_column is None:
            return 0
        if self.classes:
            return len(self.classes)
        known = [v for v in self.labels if v >= 0]
        return max(known) + 1 if known else 0

    def __len__(self) -> int:
        return len(self.ids)

    def _volumes(self, index: int) -> dict[str, torch.Tensor]:
        # A memory map per read, dropped after the copy: opened in the process that reads it
        # (after any fork), and no file handle is held per volume (thousands would exhaust them).
        out: dict[str, torch.Tensor] = {}
        first: tuple[Path, tuple[int, ...]] | None = None
        expected = (self.size,) * 3 if self.size else None
        for key in self.keys:
            path = self.files[key][index]
            try:
                array = np.load(path, mmap_mode="r")
            except (OSError, ValueError) as exc:
                raise InputError(f"{path}: cannot read preprocessed volume ({exc})") from exc
            if first is not None and array.shape != first[1]:
                raise InputError(
                    f"{path}: shape {array.shape} differs from {first[0]} ({first[1]}); "
                    "the volumes of one subject must be aligned"
                )
            if array.ndim != 3 or (expected is not None and array.shape != expected):
                raise InputError(f"{path}: shape {array.shape}, expected {expected or '3D'}")
            first = first or (path, array.shape)
            out[key] = torch.from_numpy(np.array(array, dtype=ITEM_DTYPES[self.volumes[key]])).unsqueeze(0)
            del array
        return out

    def __getitem__(self, index: int) -> dict:
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        index = index % len(self)
        item: dict[str, Any] = self._volumes(index)
        item.update(
            {
                "label": torch.tensor(self.labels[index], dtype=torch.long),
                "covariates": torch.from_numpy(self.covariates[index].copy()),
                "id": self.ids[index],
                "index": index,
            }
        )
        return self.transform(item) if self.transform is not None else item


def _to_float(text: str, column: str, item_id: str) -> float:
    text = (text or "").strip()
    try:
        return float(text) if text else float("nan")
    except ValueError:
        raise InputError(f"manifest.csv: covariate {column!r} of {item_id!r} is not a number: {text!r}") from None


# --------------------------------------------------------------------------- adding volumes


def add_volume(
    root: str | os.PathLike, name: str, id: str, array: np.ndarray, kind: str = "intensity"
) -> Path:
    """Add (or replace) volume ``name`` of subject ``id`` in the preprocessed data set ``root``.

    Writes ``root/<name>s/<id>.npy``, sets the subject's cell of the manifest column
    ``name`` to that path and declares the volume in ``preprocess.json``'s ``volumes``.
    Returns the path written.

    array: ``(S, S, S)``, voxel-aligned with the subject's image (same grid and RAS+
        layout, e.g. computed from it). ``kind="intensity"``: image values in the
        data set's normalised units (the image's [-1, 1]; values beyond are kept),
        stored float16 like the image. ``kind="label"``: one integer class per voxel
        (e.g. 0 background, 1 lesion), stored int16.
    name: lower-case letters, digits and ``_``; not ``image`` (written by
        ``medgen preprocess``) nor a manifest column that is not a volume.

    Each file is replaced atomically (written aside, then renamed), in the order
    volume, manifest, ``preprocess.json``, so an interrupted call leaves a readable
    data set that at worst lacks the new volume; repeating the call completes it.
    Calls from several processes at once are serialised by a lock file
    (``.volumes.lock``, POSIX systems); a manifest is rewritten per call, so adding a
    volume to n subjects costs O(n²) in manifest writes (fine for thousands).

    Raises UsageError for a bad name, kind or array, InputError if ``root`` is not a
    data set or ``id`` is not in it.

    >>> add_volume("data/ct64", "target", "case001", clean)   # doctest: +SKIP
    PosixPath('data/ct64/targets/case001.npy')
    """
    root = Path(root)
    if kind not in VOLUME_KINDS:
        raise UsageError(f"volume kind {kind!r}: choose one of {', '.join(VOLUME_KINDS)}")
    if not _VOLUME_NAME.match(name or "") or name in (IMAGE,) + _RESERVED_NAMES:
        raise UsageError(
            f"volume name {name!r}: need lower-case letters, digits and '_' (starting with a letter), "
            f"not one of {', '.join((IMAGE,) + _RESERVED_NAMES)}"
        )
    columns, rows = _read_manifest(root)
    info = load_preprocess_info(root)
    _check_can_add(root, name, kind, columns, rows, info)
    row = next((r for r in rows if r["id"] == id), None)
    if row is None:
        raise InputError(f"{root / 'manifest.csv'}: no subject {id!r}")
    image_path = root / row["file"]
    try:
        image_shape = np.load(image_path, mmap_mode="r").shape
    except (OSError, ValueError) as exc:
        raise InputError(f"{image_path}: cannot read the image of {id!r} ({exc})") from exc
    stored = _storage_array(np.asarray(array), kind, f"volume {name!r} of {id!r}")
    if stored.shape != image_shape:
        raise UsageError(f"volume {name!r} of {id!r}: shape {stored.shape}, but its image has {image_shape}")

    relative = f"{name}s/{id}.npy"
    atomic_save_npy(root / relative, stored)
    with _locked(root):
        # Read again under the lock: another process may have added a volume meanwhile.
        columns, rows = _read_manifest(root)
        info = load_preprocess_info(root)
        _check_can_add(root, name, kind, columns, rows, info)
        if name not in columns:
            columns.append(name)
        for r in rows:
            if r["id"] == id:
                r[name] = relative
        write_csv(root / "manifest.csv", [{c: r.get(c) or "" for c in columns} for r in rows], columns)
        volumes = dict(info.get("volumes") or DEFAULT_VOLUMES)
        if volumes.get(name) != {"kind": kind, "dtype": STORAGE_DTYPES[kind]}:
            volumes[name] = {"kind": kind, "dtype": STORAGE_DTYPES[kind]}
            info["volumes"] = volumes
            atomic_write_json(root / "preprocess.json", info)
    return root / relative


def _check_can_add(root: Path, name: str, kind: str, columns: list[str], rows: list[dict], info: dict) -> None:
    kinds = volume_kinds(info, root / "preprocess.json")
    if name in kinds and kinds[name] != kind:
        raise UsageError(f"{root}: volume {name!r} holds kind {kinds[name]!r}, cannot add one of kind {kind!r}")
    if name in columns and name not in kinds:
        # A column not yet declared is ours only if an interrupted add_volume left it (cells <name>s/<id>.npy).
        if any((r.get(name) or "").strip() not in ("", f"{name}s/{r['id']}.npy") for r in rows):
            raise UsageError(
                f"{root / 'manifest.csv'}: column {name!r} exists and is not a volume; choose another name"
            )


def _storage_array(array: np.ndarray, kind: str, what: str) -> np.ndarray:
    if array.ndim != 3:
        raise UsageError(f"{what}: need a 3D array (S, S, S), got shape {array.shape}")
    if kind == "label":
        if array.dtype.kind not in "biuf":
            raise UsageError(f"{what}: a label map needs integer classes, got dtype {array.dtype}")
        info = np.iinfo(STORAGE_DTYPES["label"])
        if array.size and (
            not np.isfinite(array).all()
            or (array != np.round(array)).any()
            or array.min() < info.min
            or array.max() > info.max
        ):
            raise UsageError(f"{what}: a label map needs integer classes in [{info.min}, {info.max}]")
        return np.ascontiguousarray(array, dtype=STORAGE_DTYPES["label"])
    if array.dtype.kind not in "biuf":
        raise UsageError(f"{what}: intensities must be numbers, got dtype {array.dtype}")
    with np.errstate(over="ignore"):  # too large for float16 becomes inf, refused below
        stored = np.ascontiguousarray(array, dtype=STORAGE_DTYPES["intensity"])
    if not np.isfinite(stored).all():
        raise UsageError(f"{what}: intensities must be finite (and within float16's ±65504)")
    return stored


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: callers must not add volumes concurrently
        yield
        return
    with open(root / _LOCK_NAME, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
