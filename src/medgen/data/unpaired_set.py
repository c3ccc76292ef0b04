"""An unpaired training set from two data sets: ``medgen unpair A_DATA B_DATA OUT`` (:func:`write_unpaired_set`).

An unpaired image-to-image model (``cyclegan``) learns from volumes of two domains with no correspondence
between them (CT of one scanner and of another, T1 of one cohort and T2 of another). The training loop reads
one data set, so the two are combined into one: ``OUT`` is the data set ``A_DATA`` (its ids, manifest columns,
split and every volume, hard-linked where the file system allows) whose subjects gain the volume ``b``: the
image of a subject of ``B_DATA``. Subject i of A (ids sorted) gets the image of B subject σ(i mod n_B) (ids
sorted), σ a permutation of B drawn from ``seed`` (PCG64); with fewer B subjects they cycle, with more some
are left out. The manifest column ``b_id`` records which B subject each ``b`` volume is. A subject's ``image``
and ``b`` are different subjects of different data sets, voxel grids of one size but not aligned anatomy:
paired metrics between them mean nothing (``medgen translate`` computes none on such a set).

``preprocess.json`` is A's, with ``volumes`` listing ``b`` and, under ``unpaired``, the two sources, the seed
and B's own preprocessing (``b_preprocess``: its modality and normalisation, what a model translating into or
out of domain B reads and writes scans with).

Both data sets must hold volumes of one size (InputError otherwise). ``OUT`` is written in a hidden folder
beside it and renamed into place when complete, so it exists whole or not at all; an existing data set at
``OUT`` is replaced only with ``overwrite``.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from medgen.core.errors import InputError, UsageError
from medgen.core.fileio import atomic_write_json
from medgen.core.tables import write_csv
from medgen.core.version import __version__
from medgen.data.dataset import add_volume, load_preprocess_info, read_manifest, volume_column, volume_kinds

#: ``preprocess.json`` key of an unpaired data set, and its entry holding domain B's preprocessing.
UNPAIRED_KEY = "unpaired"
B_PREPROCESS = "b_preprocess"
#: The domain-B volume each subject gains, and the manifest column naming its B subject.
VOLUME = "b"
ID_COLUMN = "b_id"


@dataclass
class UnpairSummary:
    """``pairs``: A subject id → the B subject id whose image is its ``b`` volume."""

    out: Path
    pairs: dict[str, str] = field(default_factory=dict)


def pairing(a_ids: Sequence[str], b_ids: Sequence[str], seed: int = 0) -> dict[str, str]:
    """A id → B id: the i-th of the sorted A ids gets B's sorted id σ(i mod n_B), σ = PCG64(``seed``)'s permutation."""
    a_sorted, b_sorted = sorted(a_ids), sorted(b_ids)
    sigma = np.random.Generator(np.random.PCG64(seed)).permutation(len(b_sorted))
    return {a: b_sorted[int(sigma[i % len(b_sorted)])] for i, a in enumerate(a_sorted)}


def write_unpaired_set(
    a_dir: str | os.PathLike,
    b_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr),
) -> UnpairSummary:
    """Write ``out_dir``: data set ``a_dir`` whose subjects gain volume ``b``, the image of a ``b_dir`` subject
    (module docstring). Raises InputError for a missing or unreadable data set or volumes of different sizes,
    UsageError for an ``a_dir`` that already has ``b``, the same folder twice, or an ``out_dir`` in the way."""
    from tqdm import tqdm

    a_dir, b_dir, out_dir = Path(a_dir), Path(b_dir), Path(out_dir)
    info_a, info_b = load_preprocess_info(a_dir), load_preprocess_info(b_dir)
    columns_a, rows_a = read_manifest(a_dir)
    _, rows_b = read_manifest(b_dir)
    if a_dir.resolve() == b_dir.resolve():
        raise UsageError(f"{a_dir}: given as both A_DATA and B_DATA; unpair two different data sets")
    size_a, size_b = info_a.get("size"), info_b.get("size")
    if size_a and size_b and int(size_a) != int(size_b):
        raise InputError(f"{b_dir / 'preprocess.json'}: {size_b}³ volumes, but {a_dir} holds {size_a}³ "
                         "(preprocess both data sets to one size)")
    kinds_a = volume_kinds(info_a, a_dir / "preprocess.json")
    if VOLUME in kinds_a or VOLUME in columns_a or ID_COLUMN in columns_a:
        raise UsageError(f"{a_dir}: already has a {VOLUME!r} volume or {ID_COLUMN!r} column (unpair plain data sets)")
    resolved = out_dir.resolve()
    if resolved in (a_dir.resolve(), b_dir.resolve()) or any(d.resolve() in resolved.parents for d in (a_dir, b_dir)):
        raise UsageError(f"{out_dir}: write the unpaired set to a new folder, outside A_DATA and B_DATA")
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"{out_dir}: exists and is not a folder")
    replacing = out_dir.is_dir() and any(out_dir.iterdir())
    if replacing and not overwrite:
        raise UsageError(f"{out_dir}: not empty; choose a new folder or pass --overwrite")
    if replacing and not (out_dir / "manifest.csv").is_file():
        raise UsageError(f"{out_dir}: not empty and not a data set; --overwrite replaces only data sets")

    pairs = pairing([r["id"] for r in rows_a], [r["id"] for r in rows_b], seed)
    b_files = {r["id"]: b_dir / r["file"] for r in rows_b}
    tmp = out_dir.parent / f".{out_dir.name}.unpair-tmp"
    if tmp.exists():  # left by an interrupted run
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    for row in rows_a:
        _link_volumes(a_dir, tmp, row, kinds_a)
    write_csv(tmp / "manifest.csv", rows_a, columns_a)
    atomic_write_json(tmp / "preprocess.json", info_a)
    for row in tqdm(rows_a, desc="unpair", unit="vol", disable=not progress):
        path = b_files[pairs[row["id"]]]
        try:
            volume = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise InputError(f"{path}: cannot read the image of B subject {pairs[row['id']]!r} ({exc})") from None
        add_volume(tmp, VOLUME, row["id"], np.asarray(volume))

    columns, rows = read_manifest(tmp)
    write_csv(tmp / "manifest.csv", [{**r, ID_COLUMN: pairs[r["id"]]} for r in rows], columns + [ID_COLUMN])
    info = load_preprocess_info(tmp)
    info[UNPAIRED_KEY] = {"a": str(a_dir), "b": str(b_dir), "seed": int(seed), "volume": VOLUME,
                          "id_column": ID_COLUMN, "medgen_version": __version__,
                          B_PREPROCESS: {k: v for k, v in info_b.items() if k not in ("volumes", UNPAIRED_KEY)}}
    atomic_write_json(tmp / "preprocess.json", info)
    (tmp / ".volumes.lock").unlink(missing_ok=True)  # add_volume's lock file
    if replacing:
        old = out_dir.parent / f".{out_dir.name}.replaced-tmp"
        if old.exists():
            shutil.rmtree(old)
        os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        shutil.rmtree(old)
        log(f"replaced the data set in {out_dir}")
    else:
        if out_dir.is_dir():
            out_dir.rmdir()  # empty
        os.replace(tmp, out_dir)
    return UnpairSummary(out_dir, pairs)


def _link_volumes(src_dir: Path, dst_dir: Path, row: dict, kinds: dict[str, str]) -> None:
    """The subject's volumes of ``src_dir`` in ``dst_dir`` at the same relative paths (hard links where possible)."""
    for name in kinds:
        relative = row.get(volume_column(name)) or ""
        if not relative:
            continue
        src, dst = src_dir / relative, dst_dir / relative
        if not src.is_file():
            raise InputError(f"{src}: volume {name!r} of {row['id']!r} is missing (listed in {src_dir / 'manifest.csv'})")
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, dst)
        except OSError:
            shutil.copyfile(src, dst)
