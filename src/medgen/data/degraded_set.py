"""A paired data set simulated from a clean one: ``medgen degrade IN OUT --kind K`` (:func:`write_degraded_set`).

``OUT`` is a preprocessed data set like ``IN`` (same ids, manifest columns, split, and every volume of ``IN``
copied), whose subjects gain the volumes the degradation returns — ``degraded`` (the model's input) and,
for some kinds, ``mask`` or the radiographs ``drr_pa``/``drr_lateral`` — voxel-aligned with ``image``, which
stays the clean target. Each pair's parameters are manifest columns ``<kind>_<parameter>``, and
``preprocess.json`` records the degradation under ``degradation`` (kind, settings as given, seed).

Units: a degradation sees Hounsfield units for CT (``hu_window`` of ``preprocess.json``) and [0, 1] for MRI
(the data set's [-1, 1] mapped linearly). Its ``scan``-unit volumes are mapped back and clipped to [-1, 1]
as ``medgen preprocess`` clips real scans (a low-dose scan's noise below −1024 HU is clipped like a real
one's); ``as-is`` volumes (masks, radiograph line integrals) are stored unchanged.

A subject's pair depends only on (kind, settings, seed, subject id) (:func:`~.degradations.subject_rng`).
Each volume file is written atomically; ``manifest.csv`` and ``preprocess.json`` last. An interrupted run
is continued by the same command (subjects whose files all exist are kept); a different command on the
same ``OUT`` is refused unless ``overwrite``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from medgen.core.errors import InputError, UsageError
from medgen.core.fileio import atomic_save_npy, atomic_write_json
from medgen.core.tables import write_csv
from medgen.core.version import __version__
from medgen.core.volume import parse_spacing
from medgen.data import degradations
from medgen.data.dataset import (
    IMAGE,
    STORAGE_DTYPES,
    load_preprocess_info,
    read_manifest,
    volume_column,
    volume_kinds,
)

#: What ``OUT/preprocess.json`` records under this key (and what a rerun compares).
INFO_KEY = "degradation"


@dataclass
class DegradeSummary:
    """Ids written now, ids kept from an interrupted run, and the per-pair parameters by id."""

    written: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    params: dict[str, dict[str, Any]] = field(default_factory=dict)


def to_scan_units(x: np.ndarray, info: dict) -> np.ndarray:
    """The data set's [-1, 1] intensities in a degradation's units: HU for CT, [0, 1] for MRI."""
    x = np.asarray(x, dtype=np.float64)
    if info.get("modality") == "ct":
        lo, hi = _hu_window(info)
        return lo + (x + 1.0) / 2.0 * (hi - lo)
    return (x + 1.0) / 2.0


def from_scan_units(v: np.ndarray, info: dict) -> np.ndarray:
    """Back to the data set's intensities, clipped to [-1, 1] as preprocessing clips real scans."""
    v = np.asarray(v, dtype=np.float64)
    if info.get("modality") == "ct":
        lo, hi = _hu_window(info)
        x = 2.0 * (v - lo) / (hi - lo) - 1.0
    else:
        x = 2.0 * v - 1.0
    return np.clip(x, -1.0, 1.0)


def _hu_window(info: dict) -> tuple[float, float]:
    window = info.get("hu_window")
    if not (isinstance(window, (list, tuple)) and len(window) == 2 and float(window[1]) > float(window[0])):
        raise InputError(f"preprocess.json: a CT data set needs 'hu_window' [low, high], found {window!r}")
    return float(window[0]), float(window[1])


def write_degraded_set(
    in_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    kind: str,
    settings: list[str] | dict[str, str] | None = None,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr),
) -> DegradeSummary:
    """Write ``out_dir``: the data set ``in_dir`` plus each subject's degraded volumes (module docstring).

    ``settings``: ``["dose=0.25", "photons=1e5:2e5"]`` or a dict; a ``lo:hi`` range is drawn per subject.
    Raises UsageError for an unknown kind or parameter, a degradation that does not fit the data set's
    modality, or an ``out_dir`` made by a different command (unless ``overwrite``); InputError for an
    unreadable data set.
    """
    from tqdm import tqdm

    in_dir, out_dir = Path(in_dir), Path(out_dir)
    degradation = degradations.get(kind)
    parsed = degradations.parse_settings(degradation, settings)
    info = load_preprocess_info(in_dir)
    columns, rows = read_manifest(in_dir)
    modality = info.get("modality")
    if modality not in degradation.modalities:
        raise UsageError(
            f"{in_dir}: a {modality!r} data set; degradation {kind!r} simulates {' and '.join(degradation.modalities)} only"
        )
    kinds = volume_kinds(info, in_dir / "preprocess.json")
    clash = sorted(set(degradation.volumes) & (set(kinds) | set(columns)))
    if clash:
        raise UsageError(
            f"{in_dir}: already has {', '.join(repr(c) for c in clash)} (degrade a clean data set, not a degraded one)"
        )
    if out_dir.resolve() == in_dir.resolve():
        raise UsageError(f"{out_dir}: write the paired data set to a new folder, not into its input")
    record = {"kind": kind, "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in parsed.items()},
              "seed": int(seed), "source": str(in_dir)}
    _prepare(out_dir, record, overwrite)
    # Every parameter set is checked before any work: a range may hold values the parameters refuse.
    per_subject = {r["id"]: degradations.sample_params(degradation, parsed, degradations.subject_rng(seed, r["id"]))
                   for r in rows}

    new_columns = [c for c in columns]
    param_columns = [f"{kind}_{name}" for name in degradations.params_record(degradation.params())]
    out_rows = []
    summary = DegradeSummary()
    bar = tqdm(total=len(rows), desc=f"degrade ({kind})", unit="vol", disable=not progress)
    try:
        for row in rows:
            sid = row["id"]
            out_row = dict(row)
            _copy_volumes(in_dir, out_dir, row, kinds)
            files = {name: f"{name}s/{sid}.npy" for name in degradation.volumes}
            if all((out_dir / f).is_file() for f in files.values()):
                summary.kept.append(sid)
            else:
                _write_pair(in_dir, out_dir, row, info, degradation, parsed, seed, files)
                summary.written.append(sid)
            params = degradations.params_record(per_subject[sid])
            summary.params[sid] = params
            out_row.update(files)
            out_row.update({f"{kind}_{k}": _cell(v) for k, v in params.items()})
            out_rows.append(out_row)
            bar.update(1)
    finally:
        bar.close()

    new_columns += [c for c in list(degradation.volumes) + param_columns if c not in new_columns]
    out_info = dict(info)
    out_info["volumes"] = {**(info.get("volumes") or {IMAGE: {"kind": "intensity", "dtype": "float16"}}),
                           **{name: {"kind": k, "dtype": STORAGE_DTYPES[k]} for name, (k, _) in degradation.volumes.items()}}
    out_info[INFO_KEY] = {**record, "volumes": {n: {"kind": k, "units": u} for n, (k, u) in degradation.volumes.items()},
                          "medgen_version": __version__}
    write_csv(out_dir / "manifest.csv", [{c: r.get(c, "") for c in new_columns} for r in out_rows], new_columns)
    atomic_write_json(out_dir / "preprocess.json", out_info)
    (out_dir / _STATE).unlink(missing_ok=True)
    if summary.kept:
        log(f"kept {len(summary.kept)} pair(s) written by an earlier run of the same command")
    return summary


_STATE = ".degrade.json"  # the command of an unfinished run (removed when the data set is complete)


def _prepare(out_dir: Path, record: dict, overwrite: bool) -> None:
    """Refuse a non-empty ``out_dir`` made by another command; write the state file of this one."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"{out_dir}: exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        state, info_path = out_dir / _STATE, out_dir / "preprocess.json"
        previous = None
        if state.is_file():
            previous = json.loads(state.read_text(encoding="utf-8"))
        elif info_path.is_file():
            try:
                done = json.loads(info_path.read_text(encoding="utf-8")).get(INFO_KEY)
            except ValueError:
                done = None
            previous = {k: done[k] for k in record} if isinstance(done, dict) and all(k in done for k in record) else None
        if previous != record:
            if not overwrite:
                raise UsageError(
                    f"{out_dir}: not empty and not written by this same command; choose a new folder or pass --overwrite"
                )
            if not (out_dir / "manifest.csv").is_file() and not state.is_file():
                raise UsageError(f"{out_dir}: not empty and not a data set; --overwrite replaces only data sets")
            shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / _STATE, record)


def _copy_volumes(in_dir: Path, out_dir: Path, row: dict, kinds: dict[str, str]) -> None:
    """Copy the subject's existing volumes (hard links where the file system allows)."""
    for name in kinds:
        relative = row.get(volume_column(name)) or ""
        if not relative:
            continue
        src, dst = in_dir / relative, out_dir / relative
        if dst.is_file():
            continue
        if not src.is_file():
            raise InputError(f"{src}: volume {name!r} of {row['id']!r} is missing")
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".{dst.name}.tmp")
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)


def _write_pair(in_dir: Path, out_dir: Path, row: dict, info: dict, degradation, parsed: dict, seed: int,
                files: dict[str, str]) -> None:
    sid = row["id"]
    path = in_dir / row["file"]
    try:
        image = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read the image of {sid!r} ({exc})") from exc
    spacing = parse_spacing(row.get("spacing", ""))
    if spacing is None:
        raise InputError(f"{in_dir / 'manifest.csv'}: spacing {row.get('spacing', '')!r} of {sid!r} is not three "
                         "positive sizes in mm like 1.5x1.5x3")
    rng = degradations.subject_rng(seed, sid)
    params = degradations.sample_params(degradation, parsed, rng)
    scan = degradations.Scan(to_scan_units(image, info), spacing, info["modality"])
    out = degradation.apply(scan, params, rng)
    for name, (kind, units) in degradation.volumes.items():
        array = np.asarray(out[name])
        if array.shape != image.shape:
            raise RuntimeError(f"degradation {degradation.name!r} returned {name!r} of shape {array.shape}, not {image.shape}")
        if units == "scan":
            array = from_scan_units(array, info)
        dtype = STORAGE_DTYPES[kind]
        (out_dir / files[name]).parent.mkdir(parents=True, exist_ok=True)
        atomic_save_npy(out_dir / files[name], np.ascontiguousarray(array, dtype=dtype))


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
