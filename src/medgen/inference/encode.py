"""Encoding real volumes into HA-GAN's latent space, and reconstructing them.

A volume x [S, S, S] in [-1, 1] is encoded hierarchically, as in training:
E^H maps each of the 1/slab_fraction non-overlapping full-resolution slabs
to its slab of the feature map, the slabs are concatenated along the depth
axis, and E^G maps the whole feature map to z [latent_dim]
(:meth:`medgen.families.hagan.Encoder.encode`). The reconstruction is
G(z) on the whole volume (G^A then G^H on all of A, optionally chunked).

``medgen encode`` (:func:`encode_folder`) does this for every volume of a
preprocessed data set and writes one CSV row per volume: the manifest's id
and covariate/label columns, z_0 … z_{d-1} and, with reconstructions,
``recon_l1`` = mean |G(E(x)) − x| over voxels in [-1, 1] units (and, for CT,
``recon_l1_hu`` in Hounsfield units: the same error times (hi − lo) / 2).
"""

from __future__ import annotations

import csv
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medgen.core.errors import InputError, UsageError
from medgen.core.fileio import atomic_save_npy
from medgen.core.tables import write_csv

# Manifest columns that describe the file, not the patient (not copied to latents.csv).
FILE_COLUMNS = ("source", "orig_shape", "orig_spacing", "spacing", "file")


def as_volume_batch(volumes: Any, size: int) -> torch.Tensor:
    """[S, S, S], [n, S, S, S] or [n, 1, S, S, S] array/tensor → float32 tensor [n, 1, S, S, S].

    Raises UsageError if the volumes are not S³ (naming both sizes).
    """
    x = torch.as_tensor(np.asarray(volumes) if not isinstance(volumes, torch.Tensor) else volumes)
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() == 4:
        x = x.unsqueeze(1)
    if x.dim() != 5 or x.shape[1] != 1:
        raise UsageError(f"volumes of shape {tuple(x.shape)}: expected [S, S, S], [n, S, S, S] or [n, 1, S, S, S]")
    if tuple(x.shape[2:]) != (size,) * 3:
        shape = "x".join(map(str, x.shape[2:]))
        raise UsageError(f"volumes are {shape} but the model works on {size}x{size}x{size}")
    return x.float()


def _manifest_columns(root: Path) -> list[str]:
    with open(root / "manifest.csv", newline="", encoding="utf-8-sig") as fh:
        return list(csv.DictReader(fh).fieldnames or [])


def encode_folder(
    model,
    data_dir: str | os.PathLike,
    out_csv: str | os.PathLike,
    reconstruct_dir: str | os.PathLike | None = None,
    split: str = "all",
    batch_size: int = 1,
    chunk: int | None = None,
    progress: bool = True,
) -> list[dict[str, str]]:
    """Encode every volume of the preprocessed folder ``data_dir`` (the work of ``medgen encode``).

    ``model``: a loaded model with an encoder (``medgen.load``; ``encode`` and ``generate``). ``split``: all,
    or the train/val/test split of the run's own split settings. Writes
    ``out_csv`` (id, manifest covariates, z_*, and recon_l1[, recon_l1_hu] with
    ``reconstruct_dir``) and, with ``reconstruct_dir``, ``<id>.nii.gz``
    reconstructions (spacing of the volume from the manifest; CT in HU, int16).
    A model with spatial latents (an autoencoder: ``encode`` returns [n, C, s, s, s]) writes
    each volume's latent to ``<out_csv stem>-latents/<id>.npy`` and the table names the file
    (``latent_file``, with ``latent_mean`` and ``latent_std``) instead of z_* columns.
    Returns the CSV rows.
    """
    from tqdm import tqdm

    from medgen.data.dataset import VolumeDataset, load_manifest, load_preprocess_info

    from medgen.inference.generate import (
        ct_window,
        is_ct,
        parse_spacing,
        write_sample,
    )

    if model.encoder is None:
        raise UsageError("this model has no encoder (trained with --no-encoder): it cannot encode volumes")
    if batch_size < 1:
        raise UsageError(f"--batch-size {batch_size}: need at least 1")
    root = Path(data_dir)
    cfg = model.config
    info = load_preprocess_info(root)
    data_size = int(info.get("size", 0) or 0)
    if data_size and data_size != cfg.size:
        raise InputError(
            f"{root}: volumes are {data_size}³ but the model was trained at {cfg.size}³ (preprocess with --size {cfg.size})"
        )
    rows_by_id = {r["id"]: r for r in load_manifest(root)}
    run = model.run_config
    conditional = cfg.num_classes > 0
    label_column = (run.label_column if run is not None else None) or "label"
    ds = VolumeDataset(
        root,
        split=split,
        seed=run.split_seed if run is not None else 0,
        fractions=tuple(run.split_fractions) if run is not None else (0.8, 0.1, 0.1),
        label_column=label_column if conditional else None,
        keys=("image",),
    )
    if len(ds) == 0:
        raise InputError(f"{root}: the {split} split holds no volumes")
    if reconstruct_dir is not None and not any(callable(getattr(model, m, None))
                                               for m in ("decode", "generate", "reconstruct")):
        raise UsageError("--reconstruct: this model can encode but not decode or reconstruct volumes")
    if conditional and reconstruct_dir is not None:
        missing = [ds.ids[i] for i, v in enumerate(ds.labels) if not 0 <= v < cfg.num_classes]
        if missing:
            raise InputError(
                f"{root / 'manifest.csv'}: {missing[0]!r} has no class 0..{cfg.num_classes - 1} in column "
                f"{label_column!r}, needed to reconstruct with a class-conditional model"
            )
    covariates = [c for c in _manifest_columns(root) if c != "id" and c not in FILE_COLUMNS]
    # Latent vectors (HA-GAN's z) go into the table; spatial latents (an autoencoder's [C, s, s, s]) into
    # one .npy file per volume next to it, the table naming the file.
    latent_dim = getattr(cfg, "latent_dim", None)
    zcols = [f"z_{k}" for k in range(latent_dim)] if latent_dim else ["latent_file", "latent_mean", "latent_std"]
    latent_dir = None if latent_dim else Path(out_csv).with_name(Path(out_csv).stem + "-latents")
    if latent_dir is not None:
        latent_dir.mkdir(parents=True, exist_ok=True)
    columns = ["id"] + covariates + zcols
    ct = is_ct(info)
    if reconstruct_dir is not None:
        columns += ["recon_l1"] + (["recon_l1_hu"] if ct else [])
        rec_dir = Path(reconstruct_dir)
        rec_dir.mkdir(parents=True, exist_ok=True)
    half_width = (ct_window(info)[1] - ct_window(info)[0]) / 2.0 if ct else None

    out_rows: list[dict[str, str]] = []
    bar = tqdm(total=len(ds), desc="encode", unit="vol", disable=not progress, file=sys.stderr)
    try:
        for start in range(0, len(ds), batch_size):
            items = [ds[i] for i in range(start, min(start + batch_size, len(ds)))]
            x = torch.stack([it["image"] for it in items])
            z = model.encode(x, batch_size=len(items))
            recon = None
            if reconstruct_dir is not None:
                lab = [int(it["label"]) for it in items] if conditional else None
                if callable(getattr(model, "decode", None)):  # an autoencoder: decode its latents
                    recon = model.decode(z, chunk=chunk)
                elif callable(getattr(model, "generate", None)):  # HA-GAN: G(z)
                    recon = model.generate(len(items), labels=lab, chunk=chunk, batch_size=len(items), z=z)
                else:  # a model that reconstructs but exposes no decoder of codes (f-AnoGAN: G(E(x)))
                    recon = model.reconstruct(x[:, 0].cpu().numpy(), batch_size=len(items), chunk=chunk)
                real = x[:, 0].cpu().numpy()
            for j, it in enumerate(items):
                row = {"id": it["id"]}
                row.update({c: rows_by_id[it["id"]].get(c, "") for c in covariates})
                if latent_dir is None:
                    row.update({c: f"{v:.7g}" for c, v in zip(zcols, z[j].tolist())})
                else:
                    name = _safe_name(it["id"]) + ".npy"
                    atomic_save_npy(latent_dir / name, z[j].astype(np.float32))
                    row.update(latent_file=f"{latent_dir.name}/{name}", latent_mean=f"{float(z[j].mean()):.7g}",
                               latent_std=f"{float(z[j].std()):.7g}")
                if recon is not None:
                    l1 = float(np.mean(np.abs(recon[j].astype(np.float64) - real[j].astype(np.float64))))
                    row["recon_l1"] = f"{l1:.7g}"
                    if ct:
                        row["recon_l1_hu"] = f"{l1 * half_width:.7g}"
                    spacing = parse_spacing(rows_by_id[it["id"]].get("spacing", "")) or (1.0, 1.0, 1.0)
                    write_sample(rec_dir / _safe_name(it["id"]), recon[j], "nifti", info, spacing)
                out_rows.append(row)
                bar.update(1)
    finally:
        bar.close()

    write_csv(out_csv, out_rows, columns)
    return out_rows


def _safe_name(item_id: str) -> str:
    """A file name for an id (path separators replaced)."""
    return item_id.replace(os.sep, "_").replace("/", "_")

