"""Finding the input volumes in a folder, and the ids they get.

An input is a file directly inside the folder whose name ends in a medical
suffix (see :data:`medgen.data.io.VOLUME_SUFFIXES`), or a sub-folder holding
DICOM files. Hidden files, and CSV/PNG/JSON or anything else, are ignored. The
id is the file name without its medical suffix (``.nii.gz`` stripped whole) or
the sub-folder's name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from medgen.data.io import medical_suffix, strip_medical_suffix
from medgen.core.errors import InputError, UsageError


@dataclass(frozen=True)
class InputItem:
    """One volume to read: its id and its path (file, or DICOM folder)."""

    id: str
    path: Path


def looks_like_dicom_folder(folder: Path) -> bool:
    """True if ``folder`` directly holds a file with the DICOM magic ``DICM`` at byte 128, or a .dcm file."""
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return False
    for entry in entries:
        if entry.name.startswith(".") or not entry.is_file():
            continue
        if entry.name.lower().endswith((".dcm", ".dicom", ".ima")):
            return True
        try:
            with open(entry.path, "rb") as fh:
                fh.seek(128)
                if fh.read(4) == b"DICM":
                    return True
        except OSError:
            continue
    return False


def discover_inputs(in_dir: str | os.PathLike, exclude: str | os.PathLike | None = None) -> list[InputItem]:
    """List the candidate input volumes in ``in_dir`` (not recursive), sorted by id.

    ``exclude``: a folder to leave out (e.g. the output folder when it lies inside ``in_dir``).
    Raises InputError if ``in_dir`` is missing or not a folder, UsageError if
    two inputs would get the same id.
    """
    in_dir = Path(in_dir)
    if not in_dir.exists():
        raise InputError(f"{in_dir}: input folder does not exist")
    if not in_dir.is_dir():
        raise InputError(f"{in_dir}: not a folder")
    excluded = Path(exclude).resolve() if exclude is not None else None
    by_id: dict[str, InputItem] = {}
    for entry in sorted(in_dir.iterdir(), key=lambda p: p.name):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            if excluded is not None and entry.resolve() == excluded:
                continue
            if not looks_like_dicom_folder(entry):
                continue
            item = InputItem(entry.name, entry)
        elif medical_suffix(entry.name) is not None:
            item = InputItem(strip_medical_suffix(entry.name), entry)
        else:
            continue
        if item.id in by_id:
            raise UsageError(
                f"{in_dir}: two inputs would get the same id {item.id!r}: "
                f"{by_id[item.id].path.name} and {entry.name}; rename one"
            )
        by_id[item.id] = item
    return sorted(by_id.values(), key=lambda item: item.id)


def scan_inputs(src: str | os.PathLike, exclude: str | os.PathLike | None = None) -> list[InputItem]:
    """The scans ``src`` names: one scan file, one DICOM folder, or every scan directly inside a folder
    (:func:`discover_inputs`). InputError (one line) for a missing path, a file that is not a scan, or a
    folder holding none."""
    src = Path(src)
    if src.is_file():
        if medical_suffix(src) is None:
            raise InputError(f"{src}: not a scan (NIfTI, NRRD, MHA, .npy) nor a data set")
        return [InputItem(strip_medical_suffix(src.name), src)]
    if src.is_dir() and looks_like_dicom_folder(src):
        return [InputItem(src.name, src)]
    if src.is_dir():
        items = discover_inputs(src, exclude=exclude)
        if not items:
            raise InputError(f"{src}: no scans found (and not a data set: no manifest.csv/preprocess.json)")
        return items
    raise InputError(f"{src}: no such file or folder")
