"""Applying a segmentation model to scans: ``medgen segment RUN IN --out OUT``.

Two kinds of input, as for ``medgen translate`` (:mod:`medgen.inference.translate`):

* **Scans** (a NIfTI/NRRD/MHA file, a DICOM folder, or a folder of them) for a model with one input
  volume: each scan is reoriented to RAS+, normalised as the training data were, segmented at its own
  resolution (by overlapping windows when larger than the training volumes) and its label map written as
  ``OUT/<id>.nii.gz`` (int16) on the scan's own grid and affine.
* **A data set** holding the model's input volumes: every subject's label map is written as
  ``OUT/<id>.nii.gz`` (int16, affine from its spacing), and when the data set holds the label volume the
  model was trained on, the per-label Dice and 95 % Hausdorff distance in mm
  (:mod:`medgen.metrics.overlap`) per subject go to ``OUT/metrics.csv`` and their mean ± std to
  ``OUT/metrics.json``.

Every file is written atomically; a rerun reads back the label maps that exist (an interrupted run continues).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np

from medgen.core.errors import InputError
from medgen.inference.translate import TranslateSummary, process_scans


def _read_label_map(path: Path) -> np.ndarray:
    import nibabel as nib

    return np.asarray(nib.load(str(path)).dataobj, dtype=np.int16)


def segment_scans(model: Any, inputs: list[Any], out_dir: Path, *, window: int | None = None,
                  training_spacing: tuple[float, float, float] | None = None, progress: bool = True,
                  log: Callable[[str], None] = lambda m: print(m, file=sys.stderr)) -> TranslateSummary:
    """Segment every scan of ``inputs`` (``InputItem``s: id and path) into ``out_dir`` (module docstring)."""
    return process_scans(model, inputs, out_dir, lambda x, back, w: model.segment(x, window=w).astype(np.int16),
                         desc="segment", window=window, training_spacing=training_spacing, progress=progress, log=log)


def segment_dataset(model: Any, data_dir: Path, out_dir: Path, *, split: str = "all", window: int | None = None,
                    progress: bool = True) -> TranslateSummary:
    """Segment every subject of the data set ``data_dir`` (module docstring); with the model's label volume,
    per-label Dice and HD95 against it (labels 1..num_classes-1)."""
    from tqdm import tqdm

    from medgen.core.fileio import atomic_write_json
    from medgen.core.tables import write_csv
    from medgen.core.volume import parse_spacing
    from medgen.data.dataset import VolumeDataset, load_manifest, load_preprocess_info, volume_kinds
    from medgen.data.io import write_nifti
    from medgen.inference.generate import spacing_affine
    from medgen.metrics.overlap import label_metrics
    from medgen.metrics.paired_regions import summarise

    cfg = model.config
    kinds = volume_kinds(load_preprocess_info(data_dir), data_dir / "preprocess.json")
    missing = [n for n in cfg.inputs if n not in kinds]
    if missing:
        raise InputError(f"{data_dir}: holds volumes {', '.join(kinds)}; this model reads {', '.join(cfg.inputs)} "
                         f"(missing {', '.join(missing)})")
    has_labels = kinds.get(cfg.label) == "label"
    keys = tuple(cfg.inputs) + ((cfg.label,) if has_labels else ())
    ds = VolumeDataset(data_dir, split=split, label_column=None, keys=keys)
    spacings = {r["id"]: parse_spacing(r.get("spacing", "")) for r in load_manifest(data_dir)}
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = TranslateSummary()
    rows: list[dict[str, Any]] = []
    labels = list(range(1, cfg.num_classes))
    for i in tqdm(range(len(ds)), desc="segment", unit="vol", disable=not progress):
        item = ds[i]
        sid = item["id"]
        spacing = spacings.get(sid) or (1.0, 1.0, 1.0)
        path = out_dir / f"{sid}.nii.gz"
        if path.is_file():
            pred = _read_label_map(path)
            summary.skipped.append(sid)
        else:
            pred = model.segment({n: item[n][0].numpy().astype(np.float32) for n in cfg.inputs}, window=window)
            write_nifti(path, pred.astype(np.int16), spacing_affine(spacing))
            summary.written.append(sid)
        if has_labels:
            rows.append({"id": sid, **label_metrics(pred, item[cfg.label][0].numpy(), labels, spacing)})
    if rows:
        write_csv(out_dir / "metrics.csv", rows, list(rows[0]))
        summary.metrics = summarise(rows)
        atomic_write_json(out_dir / "metrics.json", {"data": str(data_dir), "split": split, "label_volume": cfg.label,
                                                     "inputs": list(cfg.inputs), "labels": labels,
                                                     "hd95_units": "mm", "metrics": summary.metrics})
    return summary
