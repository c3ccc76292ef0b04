"""Applying an image-to-image model to scans: ``medgen translate RUN IN --out OUT``.

Two kinds of input:

* **Scans** (a NIfTI/NRRD/MHA file, a DICOM folder, or a folder of them) for a model with one input
  volume: each scan is reoriented to RAS+ (the layout the model was trained in), normalised as the
  training data were (CT: the run's HU window; MRI: the percentiles of its nonzero voxels), translated at
  its own resolution — by overlapping windows when it is larger than the training volumes, so memory
  stays bounded — and written as ``OUT/<id>.nii.gz`` on the scan's own grid and affine (CT in HU as
  int16; MRI in the input's intensity units). The network sees voxels, not millimetres: a scan whose
  spacing differs from the training data's by more than 20 % is translated with a warning.
* **A paired data set** (``medgen degrade`` output, or any preprocessed folder holding the model's input
  volumes): every subject is translated, written as ``OUT/<id>.nii.gz`` (affine from its spacing), and
  when the data set holds the target volume, the paired metrics of
  :mod:`medgen.metrics.paired_regions` per subject (PSNR/SSIM/NMSE over the volume and the body; CT: HU
  error inside body, lungs and bone; with a ``mask`` volume, the error inside it) are written to
  ``OUT/metrics.csv`` and their mean ± std to ``OUT/metrics.json``.

A two-way model (``cyclegan``) translates in the direction of :func:`oriented` (``medgen translate
--direction BtoA``): its input volume, target, and the preprocessing of the input and output domains
(``model.preprocess``, ``model.target_preprocess``) follow it; outputs are written in the output domain's units.
No paired metrics are computed on an unpaired data set (``medgen unpair``): its volumes are different subjects.

Every file is written atomically; a rerun skips outputs that exist (an interrupted run continues).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from medgen.core.errors import InputError, UsageError
from medgen.core.volume import ct_window, hounsfield_int16, is_ct

#: Relative spacing difference beyond which a scan is translated with a warning.
SPACING_TOLERANCE = 0.2
#: Translation directions: a model's own (every image-to-image model), and back (two-way models, ``cyclegan``).
DIRECTIONS = ("AtoB", "BtoA")


@dataclass
class TranslateSummary:
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    metrics: dict[str, Any] | None = None


def default_window(model: Any, shape: tuple[int, ...]) -> int:
    """The model's training patch, else its training size when the volume is larger (0: whole volume)."""
    if getattr(model, "window", 0):
        return int(model.window)
    size = int(model.config.size)
    return size if max(shape) > size else 0


def normalise_scan(array: np.ndarray, preprocess: dict[str, Any]) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """The scan in the model's [-1, 1] units, and the map back to the scan's units (HU int16 for CT)."""
    array = np.asarray(array, dtype=np.float32)
    if is_ct(preprocess):
        lo, hi = ct_window(preprocess)
        x = np.clip((np.nan_to_num(array, nan=lo) - lo) / (hi - lo) * 2.0 - 1.0, -1.0, 1.0)
        return x.astype(np.float32), lambda y: hounsfield_int16(y, (lo, hi))
    finite = np.where(np.isfinite(array), array, 0.0)
    nonzero = finite[finite != 0]
    if nonzero.size == 0:
        raise InputError("every voxel is zero")
    p = preprocess.get("percentiles") or (0.5, 99.5)
    lo, hi = (float(v) for v in np.percentile(nonzero, p))
    if not hi > lo:
        raise InputError(f"intensity is constant ({lo:g}) between the {tuple(p)} percentiles; cannot normalise")
    x = np.clip((finite - lo) / (hi - lo) * 2.0 - 1.0, -1.0, 1.0).astype(np.float32)
    return x, lambda y: ((np.asarray(y, dtype=np.float32) + 1.0) / 2.0 * (hi - lo) + lo).astype(np.float32)


def oriented(model: Any, direction: str | None = None) -> Any:
    """``model`` translating ``direction``: ``None`` or ``"AtoB"`` is the model as loaded; ``"BtoA"`` needs a two-way
    model (one with ``with_direction``, a ``cyclegan``). UsageError (one line) otherwise."""
    if direction is None:
        return model
    if direction not in DIRECTIONS:
        raise UsageError(f"--direction {direction}: choose {' or '.join(DIRECTIONS)}")
    if callable(getattr(model, "with_direction", None)):
        return model.with_direction(direction)
    if direction != "AtoB":
        cfg = model.config
        raise UsageError(f"--direction {direction}: this model translates {', '.join(cfg.inputs)} → {cfg.target} only "
                         "(cyclegan models translate both ways)")
    return model


def output_units(model: Any, back: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    """The map of a scan's [-1, 1] outputs to the units written: the input scan's own (``back``), unless a two-way
    model's output domain was preprocessed otherwise (``model.target_preprocess``): CT outputs then in HU of its
    window; MRI outputs of a CT scan, which have no intensity scale to return to, in [0, 1]."""
    target = getattr(model, "target_preprocess", None)
    if target is None:
        return back
    if is_ct(target):
        window = ct_window(target)
        if is_ct(model.preprocess) and tuple(ct_window(model.preprocess)) == tuple(window):
            return back
        return lambda y: hounsfield_int16(y, window)
    if is_ct(model.preprocess):
        return lambda y: ((np.asarray(y, dtype=np.float32) + 1.0) / 2.0).astype(np.float32)
    return back


def _options(steps: int | None) -> dict[str, Any]:
    """Keyword arguments for ``model.translate`` beyond the window: ``steps`` only when given (diffusion models)."""
    return {} if steps is None else {"steps": int(steps)}


def process_scans(model: Any, inputs: list[Any], out_dir: Path, apply: Callable[[np.ndarray, Callable, int], np.ndarray],
                  *, desc: str, window: int | None = None,
                  training_spacing: tuple[float, float, float] | None = None, progress: bool = True,
                  log: Callable[[str], None] = lambda m: print(m, file=sys.stderr)) -> TranslateSummary:
    """The loop over scans that ``medgen translate`` and ``medgen segment`` share (module docstring):
    each scan of ``inputs`` (``InputItem``s: id and path) reoriented and normalised, then
    ``apply(x, back, window)`` (``back`` maps [-1, 1] outputs to the scan's units) gives the volume written
    as ``out_dir/<id>.nii.gz`` on the scan's affine. Outputs that exist are kept; unreadable scans are
    listed in ``failed``."""
    from tqdm import tqdm

    from medgen.data.io import read_volume, reorient_to_ras, write_nifti

    if len(model.config.inputs) != 1:
        raise UsageError(f"this model reads {len(model.config.inputs)} volumes ({', '.join(model.config.inputs)}); "
                         "give it a data set that holds them, not scans")
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = TranslateSummary()
    for item in tqdm(inputs, desc=desc, unit="vol", disable=not progress):
        target = out_dir / f"{item.id}.nii.gz"
        if target.is_file():
            summary.skipped.append(item.id)
            continue
        try:
            volume = reorient_to_ras(read_volume(item.path))
            x, back = normalise_scan(volume.array, model.preprocess)
            back = output_units(model, back)
        except InputError as exc:
            summary.failed.append((str(item.path), str(exc)))
            continue
        if training_spacing is not None:
            ratio = np.asarray(volume.spacing) / np.asarray(training_spacing)
            if np.any(np.abs(ratio - 1) > SPACING_TOLERANCE):
                log(f"{item.path}: voxels of {'x'.join(f'{v:g}' for v in volume.spacing)} mm, the model was trained on "
                    f"{'x'.join(f'{v:g}' for v in training_spacing)} mm; resample the scan for a faithful result")
        w = default_window(model, x.shape) if window is None else window
        write_nifti(target, apply(x, back, w), volume.affine)
        summary.written.append(item.id)
    return summary


def translate_scans(model: Any, inputs: list[Any], out_dir: Path, *, window: int | None = None,
                    training_spacing: tuple[float, float, float] | None = None, progress: bool = True,
                    log: Callable[[str], None] = lambda m: print(m, file=sys.stderr),
                    steps: int | None = None, direction: str | None = None) -> TranslateSummary:
    """Translate every scan of ``inputs`` (``InputItem``s: id and path) into ``out_dir`` (module docstring);
    ``steps``: denoising steps of a diffusion model (None: its default); ``direction``: see :func:`oriented`."""
    model = oriented(model, direction)
    return process_scans(model, inputs, out_dir, lambda x, back, w: back(model.translate(x, window=w, **_options(steps))),
                         desc="translate", window=window, training_spacing=training_spacing, progress=progress, log=log)


def translate_dataset(model: Any, data_dir: Path, out_dir: Path, *, split: str = "all", window: int | None = None,
                      progress: bool = True, steps: int | None = None, direction: str | None = None,
                      as_volume: str | None = None) -> TranslateSummary:
    """Translate every subject of the paired data set ``data_dir`` (module docstring); with its target
    volume, paired metrics are computed on the model's [-1, 1] outputs. ``steps``: denoising steps of a
    diffusion model (None: its default); ``direction``: see :func:`oriented`; ``as_volume``: also add each
    output to ``data_dir`` as the intensity volume of that name (:func:`medgen.data.dataset.add_volume`)."""
    from tqdm import tqdm

    from medgen.core.tables import write_csv
    from medgen.core.fileio import atomic_save_npy, atomic_write_json
    from medgen.data.dataset import VolumeDataset, add_volume, load_manifest, load_preprocess_info, volume_kinds
    from medgen.data.io import write_nifti
    from medgen.inference.generate import spacing_affine
    from medgen.metrics.paired_regions import region_metrics, summarise
    from medgen.core.volume import parse_spacing
    from medgen.data.unpaired_set import UNPAIRED_KEY

    model = oriented(model, direction)
    cfg = model.config
    info = load_preprocess_info(data_dir)
    out_info = getattr(model, "target_preprocess", None) or info  # the units outputs are written in
    kinds = volume_kinds(info, data_dir / "preprocess.json")
    if as_volume is not None and (as_volume in cfg.inputs or as_volume == cfg.target):
        raise UsageError(f"--as-volume {as_volume}: the model reads or predicts that volume; choose another name")
    missing = [n for n in cfg.inputs if n not in kinds]
    if missing:
        raise InputError(f"{data_dir}: holds volumes {', '.join(kinds)}; this model reads {', '.join(cfg.inputs)} "
                         f"(missing {', '.join(missing)})")
    has_target = cfg.target in kinds and UNPAIRED_KEY not in info  # an unpaired set's volumes are not pairs
    mask_name = "mask" if kinds.get("mask") == "label" else None  # inpainting's hidden region
    keys = tuple(cfg.inputs) + ((cfg.target,) if has_target else ()) + ((mask_name,) if mask_name and has_target
                                                                         and mask_name not in cfg.inputs else ())
    ds = VolumeDataset(data_dir, split=split, label_column=None, keys=keys)
    spacings = {r["id"]: parse_spacing(r.get("spacing", "")) for r in load_manifest(data_dir)}
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = TranslateSummary()
    rows: list[dict[str, Any]] = []
    hu_window = ct_window(info) if is_ct(info) else None
    for i in tqdm(range(len(ds)), desc="translate", unit="vol", disable=not progress):
        item = ds[i]
        sid = item["id"]
        raw = out_dir / "outputs" / f"{sid}.npy"
        if raw.is_file():
            y = np.load(raw)
            summary.skipped.append(sid)
        else:
            y = model.translate({n: item[n][0].numpy().astype(np.float32) for n in cfg.inputs}, window=window,
                                **_options(steps))
            spacing = spacings.get(sid) or (1.0, 1.0, 1.0)
            data = hounsfield_int16(y, ct_window(out_info)) if is_ct(out_info) else y.astype(np.float32)
            write_nifti(out_dir / f"{sid}.nii.gz", data, spacing_affine(spacing))
            atomic_save_npy(raw, y.astype(np.float32))
            summary.written.append(sid)
        if as_volume is not None:
            add_volume(data_dir, as_volume, sid, y)
        if has_target:
            mask = item[mask_name][0].numpy().astype(bool) if mask_name else None
            rows.append({"id": sid, **region_metrics(y, item[cfg.target][0].numpy(), hu_window, mask)})
    if rows:
        write_csv(out_dir / "metrics.csv", rows, list(rows[0]))
        summary.metrics = summarise(rows)
        atomic_write_json(out_dir / "metrics.json", {"data": str(data_dir), "split": split, "target": cfg.target,
                                                     "inputs": list(cfg.inputs), "metrics": summary.metrics})
    return summary
