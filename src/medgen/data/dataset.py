"""The training data set: a torch Dataset over a folder written by ``medgen preprocess``.

Each item is one volume as ``[1, S, S, S]`` float32 in [-1, 1] plus its class
label and covariates from the manifest. Volumes are memory-mapped, opened
lazily in whichever process reads them, so DataLoader workers never share a
file handle. The train/val/test split is a deterministic function of the ids
and a seed (:func:`split_ids`), so a training run can store and reproduce it.
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from medgen.errors import InputError, UsageError

SPLITS = ("train", "val", "test")
_REQUIRED_COLUMNS = ("id", "file")


def load_manifest(root: str | os.PathLike) -> list[dict[str, str]]:
    """Rows of ``root/manifest.csv`` as dicts of strings (in file order).

    Raises InputError if ``root`` is not a preprocessed data set.
    """
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
    return rows


def load_preprocess_info(root: str | os.PathLike) -> dict:
    """Contents of ``root/preprocess.json`` (modality, size, HU window or percentiles, ...)."""
    path = Path(root) / "preprocess.json"
    if not path.is_file():
        raise InputError(f"{root}: not a preprocessed data set (no preprocess.json); run `medgen preprocess` first")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read ({exc})") from exc


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

    ``ds[i]`` is ``{"image": FloatTensor[1, S, S, S], "label": LongTensor[],
    "covariates": FloatTensor[len(covariate_columns)], "id": str, "index": int}``.
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
    ) -> None:
        self.root = Path(root)
        self.info = load_preprocess_info(self.root)
        rows = load_manifest(self.root)
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
        self._files = [self.root / by_id[i]["file"] for i in chosen]

        columns = set(rows[0])
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
                f"{self.root / 'manifest.csv'}: no column(s) {', '.join(missing)} "
                f"(columns: {', '.join(rows[0])})"
            )
        self.covariate_columns = list(covariate_columns)
        self.covariates = np.array(
            [[_to_float(by_id[i][c], c, i) for c in self.covariate_columns] for i in chosen], dtype=np.float32
        ).reshape(len(chosen), len(self.covariate_columns))
        self._arrays: dict[int, np.ndarray] = {}
        self._pid: int | None = None

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

    def _array(self, index: int) -> np.ndarray:
        # Memory maps are opened in the process that reads them (after any fork).
        if self._pid != os.getpid():
            self._arrays = {}
            self._pid = os.getpid()
        array = self._arrays.get(index)
        if array is None:
            path = self._files[index]
            try:
                array = np.load(path, mmap_mode="r")
            except (OSError, ValueError) as exc:
                raise InputError(f"{path}: cannot read preprocessed volume ({exc})") from exc
            expected = (self.size,) * 3 if self.size else None
            if array.ndim != 3 or (expected is not None and array.shape != expected):
                raise InputError(f"{path}: shape {array.shape}, expected {expected or '3D'}")
            self._arrays[index] = array
        return array

    def __getitem__(self, index: int) -> dict:
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        index = index % len(self)
        image = torch.from_numpy(np.asarray(self._array(index), dtype=np.float32)).unsqueeze(0)
        return {
            "image": image,
            "label": torch.tensor(self.labels[index], dtype=torch.long),
            "covariates": torch.from_numpy(self.covariates[index].copy()),
            "id": self.ids[index],
            "index": index,
        }

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_arrays"] = {}
        state["_pid"] = None
        return state


def _to_float(text: str, column: str, item_id: str) -> float:
    text = (text or "").strip()
    try:
        return float(text) if text else float("nan")
    except ValueError:
        raise InputError(f"manifest.csv: covariate {column!r} of {item_id!r} is not a number: {text!r}") from None
