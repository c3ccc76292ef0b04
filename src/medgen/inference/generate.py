"""Sampling full-resolution volumes from a trained HA-GAN generator.

Reproducibility: the latent code of volume ``i`` for seed ``s`` is drawn from its
own random stream, ``numpy.random.SeedSequence(s, spawn_key=(i,))`` (the
stream ``SeedSequence(s).spawn(n)[i]`` would give), so volume ``i`` depends
only on ``(s, i)``: generating 4 volumes gives the first 4 of 8, and the batch
size does not change which volume gets which code.

Memory: with ``chunk`` = D, G^H runs on depth chunks of D slices of the
feature map A (:func:`medgen.families.hagan.chunked.iter_high_res_chunks`, exact
GroupNorm statistics and halo) and each chunk's output is copied straight into
the preallocated result, so the full-resolution activations of G^H are never
held for the whole volume. Without ``chunk``, G^H runs on all of A at once
(the module's own forward pass, the reference the chunked path is tested
against).

Intensities: the generator's output is in [-1, 1], the preprocessed range.
For CT, :func:`to_hounsfield` inverts the linear window map of ``medgen
preprocess`` (``hu = lo + (x + 1) / 2 · (hi − lo)``), exact at both window ends.
MRI was normalised per volume by intensity percentiles, which cannot be
inverted, so MRI stays in [-1, 1].
"""

from __future__ import annotations

import csv
import os
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from medgen.core.errors import UsageError
from medgen.core.tables import csv_text
from medgen.core.volume import (  # noqa: F401  (re-exported: the CT window and spacing rules)
    CT_WINDOW_DEFAULT,
    ct_window,
    hounsfield_int16,
    is_ct,
    parse_spacing,
    to_hounsfield,
)

#: ``generate.json``'s ``spacing_source`` when neither the run nor its data folder gives the voxel size.
UNKNOWN_SPACING = "unknown (1 mm assumed)"


def latent_codes(n: int, latent_dim: int, seed: int = 0, start: int = 0) -> np.ndarray:
    """Latent codes z_start … z_{start+n-1}, float32 [n, latent_dim], z_i ~ N(0, I).

    z_i is drawn by PCG64 seeded with ``SeedSequence(seed, spawn_key=(i,))``,
    so it depends only on (seed, i), on every machine.
    """
    if seed < 0:
        raise UsageError(f"seed must be >= 0, got {seed}")
    out = np.empty((n, latent_dim), dtype=np.float32)
    for k in range(n):
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(start + k,))))
        out[k] = rng.standard_normal(latent_dim)
    return out


def requested_codes(n: int, latent_dim: int, seed: int = 0, z=None, indices: Sequence[int] | None = None) -> np.ndarray:
    """The latent codes of a ``generate(n, seed, z=..., indices=...)`` call, float32 [n, latent_dim]: ``z`` as given,
    else volumes ``indices`` of ``seed``'s sequence (:func:`latent_codes`), else volumes 0…n-1. UsageError (one
    line) when they are not ``n`` codes of ``latent_dim``."""
    if z is not None:
        codes = np.asarray(z, dtype=np.float32)
    elif indices is not None:
        idx = [int(i) for i in indices]
        codes = (np.concatenate([latent_codes(1, latent_dim, seed, start=i) for i in idx]) if idx
                 else np.empty((0, latent_dim), np.float32))
    else:
        codes = latent_codes(n, latent_dim, seed)
    if codes.shape != (n, latent_dim):
        raise UsageError(f"z has shape {codes.shape}, expected ({n}, {latent_dim})")
    return codes


def check_labels(labels: Sequence[int] | int | None, n: int, num_classes: int) -> np.ndarray | None:
    """Class index per volume as int64 [n] (None for an unconditional model).

    ``labels``: one class for every volume, one per volume, or None (a
    conditional model then cycles through the classes: volume i gets i mod K).
    Raises UsageError for labels given to an unconditional model or out of range.
    """
    if num_classes == 0:
        if labels is not None:
            raise UsageError("this model is unconditional (trained without classes): a label cannot be given")
        return None
    if labels is None:
        return np.arange(n, dtype=np.int64) % num_classes
    arr = np.asarray(labels, dtype=np.int64).reshape(-1)
    if arr.size == 1:
        arr = np.full(n, int(arr[0]), dtype=np.int64)
    if arr.size != n:
        raise UsageError(f"got {arr.size} labels for {n} volumes")
    bad = arr[(arr < 0) | (arr >= num_classes)]
    if bad.size:
        raise UsageError(f"label {int(bad[0])} is out of range: this model has classes 0..{num_classes - 1}")
    return arr


def check_chunk(chunk: int | None, lowres_size: int) -> int | None:
    """Validate a chunk depth in A-slices (None or 0 → unchunked)."""
    if chunk is None or chunk == 0:
        return None
    if chunk < 0:
        raise UsageError(f"--chunk {chunk}: must be a positive number of feature-map slices (or 0 for no chunking)")
    return min(int(chunk), lowres_size)


# --------------------------------------------------------------------------- physical units


def training_spacing(run_config) -> tuple[tuple[float, float, float], str]:
    """Voxel size in mm of the training volumes, and where it came from.

    Order: the spacing the run recorded when its training started (``spacing`` in
    ``config.yaml``, so a run folder carries it wherever it moves); for runs
    made before that, :func:`medgen.data.dataset.voxel_spacing` of the run's
    data folder (``preprocess.json`` spacing, else the median of the manifest's
    ``spacing`` over the run's training ids); else 1 mm.
    """
    from medgen.data.dataset import voxel_spacing

    recorded = getattr(run_config, "spacing", None)
    if recorded:
        return (float(recorded[0]), float(recorded[1]), float(recorded[2])), "the run's config.yaml"
    found = voxel_spacing(getattr(run_config, "data", None), getattr(run_config, "preprocess", None) or {},
                          getattr(run_config, "train_ids", None))
    return found if found is not None else ((1.0, 1.0, 1.0), UNKNOWN_SPACING)


def spacing_affine(spacing: Sequence[float]) -> np.ndarray:
    """4×4 voxel → RAS+ mm affine diag(spacing, 1): voxel (0, 0, 0) at the origin."""
    return np.diag([*map(float, spacing), 1.0])


# --------------------------------------------------------------------------- writing samples


def write_sample(
    path_stem: Path,
    volume: np.ndarray,
    fmt: str,
    preprocess: dict[str, Any] | None,
    spacing: Sequence[float],
) -> Path:
    """Write one generated volume ([-1, 1], float32); returns the file written.

    ``nifti``: ``<stem>.nii.gz`` with affine diag(spacing); CT in HU as int16,
    MRI in [-1, 1] as float32. ``npy``: ``<stem>.npy``, the raw float32 output in [-1, 1].
    """
    from medgen.data.io import write_nifti
    from medgen.core.fileio import atomic_save_npy

    if fmt == "npy":
        path = path_stem.with_name(path_stem.name + ".npy")
        atomic_save_npy(path, np.asarray(volume, dtype=np.float32))
        return path
    if fmt != "nifti":
        raise UsageError(f"--format {fmt}: choose nifti or npy")
    path = path_stem.with_name(path_stem.name + ".nii.gz")
    if is_ct(preprocess):
        data = hounsfield_int16(volume, ct_window(preprocess))
    else:
        data = np.asarray(volume, dtype=np.float32)
    write_nifti(path, data, spacing_affine(spacing))
    return path


def write_mosaic(path: Path, volume: np.ndarray, title: str, preprocess: dict[str, Any] | None) -> None:
    """Three-plane PNG of one volume (CT shown in HU with a soft-tissue/lung friendly window)."""
    from medgen.viz.mosaic import save_mosaic

    if is_ct(preprocess):
        save_mosaic([to_hounsfield(volume, ct_window(preprocess))], path, titles=[title], vmin=-1000.0, vmax=400.0)
    else:
        save_mosaic([volume], path, titles=[title], vmin=-1.0, vmax=1.0)


SAMPLES_CSV = "samples.csv"
SETTINGS_JSON = "generate.json"


def generate_to_folder(
    model,
    out_dir: str | os.PathLike,
    n: int,
    seed: int = 0,
    label: int | None = None,
    chunk: int | None = None,
    batch_size: int = 1,
    fmt: str = "nifti",
    mosaic: bool = True,
    progress: bool = True,
    source: dict[str, Any] | None = None,
    sampling: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Generate ``n`` volumes into ``out_dir`` (the work of ``medgen generate``).

    ``sampling``: options of the model's own sampler, passed to its ``generate`` and
    recorded in ``generate.json`` (diffusion families: ``sampler``, ``steps``,
    ``guidance``, ``eta``; stylegan2: ``truncation_psi``); a folder made with other sampling options is refused.

    ``model``: a loaded model (``medgen.load``) with ``generate(n, seed, labels, chunk,
    batch_size, indices)``, ``sample_latents``, ``config.size``/``num_classes``,
    ``preprocess`` and ``run_config``. Writes ``sample-<i:04d>`` volumes
    (see :func:`write_sample`), their mosaics ``sample-<i:04d>.png``,
    ``samples.csv`` (id, file, seed, label, z_norm) and ``generate.json`` (the
    settings). Volumes whose files already exist are skipped, so an interrupted
    run resumes; a folder made with other settings (checkpoint, seed, label,
    format, EMA) is refused. Returns the rows of ``samples.csv``.
    """
    import json

    from tqdm import tqdm

    from medgen.core.fileio import atomic_write_json, atomic_write_text

    if n < 1:
        raise UsageError(f"--n {n}: need at least one volume")
    if batch_size < 1:
        raise UsageError(f"--batch-size {batch_size}: need at least 1")
    out = Path(out_dir)
    cfg = model.config
    labels = check_labels(label, n, cfg.num_classes)
    pre = model.preprocess
    spacing, spacing_source = training_spacing(model.run_config) if model.run_config is not None else ((1.0,) * 3, UNKNOWN_SPACING)
    if spacing_source == UNKNOWN_SPACING:
        print(f"medgen generate: warning: the training volumes' voxel size is unknown (the run records none, and "
              f"none could be read from its data folder {getattr(model.run_config, 'data', None)!r}); "
              "the volumes are written with 1 mm voxels", file=sys.stderr)

    settings = {
        "source": source or {},
        "seed": seed,
        "label": label,
        "format": fmt,
        "sampling": dict(sampling or {}),
        "size": cfg.size,
        "spacing_mm": list(spacing),
        "spacing_source": spacing_source,
        "intensity": ("HU (int16), window " + str(list(ct_window(pre)))) if is_ct(pre) and fmt == "nifti" else "[-1, 1] (float32)",
        "modality": (pre or {}).get("modality"),
    }
    if is_ct(pre):
        settings["hu_window"] = list(ct_window(pre))  # what [-1, 1] means in HU (the training data's window)
    settings_path = out / SETTINGS_JSON
    if settings_path.is_file():
        try:
            old = json.loads(settings_path.read_text(encoding="utf-8"))
        except ValueError:
            old = {}
        old.setdefault("sampling", {})  # written before sampling options existed
        keys = ("source", "seed", "label", "format", "sampling", "size")
        differ = [k for k in keys if old.get(k) != json.loads(json.dumps(settings[k]))]
        if differ:
            raise UsageError(
                f"{out}: holds samples made with other settings ({', '.join(differ)}); choose another --out"
            )
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(settings_path, settings)

    suffix = ".npy" if fmt == "npy" else ".nii.gz"
    # Families with a latent code record its norm (HA-GAN's z); a diffusion model's input is noise.
    z_all = model.sample_latents(n, seed) if hasattr(model, "sample_latents") else None
    rows: list[dict[str, Any]] = []
    todo = []
    for i in range(n):
        name = f"sample-{i:04d}"
        rows.append(
            {
                "id": name,
                "file": name + suffix,
                "seed": seed,
                "label": "" if labels is None else int(labels[i]),
                "z_norm": f"{float(np.linalg.norm(z_all[i].astype(np.float64))):.6f}" if z_all is not None else "",
            }
        )
        done = (out / (name + suffix)).is_file() and (not mosaic or (out / (name + ".png")).is_file())
        if not done:
            todo.append(i)

    bar = tqdm(total=n, initial=n - len(todo), desc="generate", unit="vol", disable=not progress, file=sys.stderr)
    try:
        for k in range(0, len(todo), batch_size):
            idx = todo[k : k + batch_size]
            lab = labels[idx] if labels is not None else None
            vols = model.generate(len(idx), seed=seed, labels=lab, chunk=chunk, batch_size=len(idx), indices=idx,
                                  **(sampling or {}))
            for j, i in enumerate(idx):
                stem = out / rows[i]["id"]
                write_sample(stem, vols[j], fmt, pre, spacing)
                if mosaic:
                    title = rows[i]["id"] + (f" (class {rows[i]['label']})" if labels is not None else "")
                    write_mosaic(stem.with_name(stem.name + ".png"), vols[j], title, pre)
                bar.update(1)
            del vols
    finally:
        bar.close()
        _write_rows(out / SAMPLES_CSV, rows, atomic_write_text)
    return rows


def _write_rows(path: Path, new_rows: list[dict[str, Any]], write_text) -> None:
    """Write ``samples.csv``, keeping rows of volumes beyond ``new_rows`` from an earlier, longer run."""

    columns = ["id", "file", "seed", "label", "z_norm"]
    rows = {r["id"]: r for r in new_rows}
    if path.is_file():
        with open(path, newline="", encoding="utf-8") as fh:
            for r in csv.DictReader(fh):
                rows.setdefault(r["id"], r)
    present = [r for _, r in sorted(rows.items()) if (path.parent / r["file"]).is_file()]
    write_text(path, csv_text(present, columns))
