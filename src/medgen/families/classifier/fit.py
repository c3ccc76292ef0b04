"""Training a volume classifier on a preprocessed data set: the work of ``medgen train-classifier``.

:func:`train_on_folder` splits the data set as ``medgen train`` does (same ``split_seed``,
same fractions), trains on the train split, keeps the epoch with the best validation accuracy,
measures accuracy on the test split and writes ``OUT/classifier.safetensors`` and
``OUT/classifier.json`` (an earlier classifier in ``OUT`` is replaced). ``OUT`` is also the
training run folder of the ``classifier`` family (``config.yaml``, ``metrics.csv``, TensorBoard
logs, checkpoints of the best and the last epoch).

Example::

    info = train_on_folder("data/thorax64", "classifiers/severity", epochs=30, augment=True)
    print(info["test_accuracy"])
"""

from __future__ import annotations

import datetime
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medgen.core.errors import UsageError

if TYPE_CHECKING:
    import torch

DEFAULT_MAX_SIZE = 64  # default input edge length: the data's size, at most this


def train_on_folder(
    data: str | os.PathLike,
    out: str | os.PathLike,
    *,
    label_column: str = "label",
    epochs: int = 30,
    batch: int = 8,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    width: int = 16,
    dropout: float = 0.3,
    size: int | None = None,
    augment: bool = False,
    flip_lr: bool = False,
    seed: int = 0,
    split_seed: int = 0,
    device: str | torch.device = "cpu",
    workers: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Train a classifier of the manifest column ``label_column`` of ``data`` into ``out``.

    The options are those of ``medgen train-classifier`` (``size``: input edge length, default
    the data's size, at most 64; ``device``: ``auto``, ``cpu``, ``cuda`` or a torch device).
    Prints one ``note: ...`` line per remark on the split (volumes without a label, classes
    absent from the train split, an empty validation split) before training.

    Returns the contents of ``out/classifier.json`` (architecture incl. ``in_size``,
    ``weights_sha256``, ``classes``, ``split`` sizes, ``training`` settings and ``best_epoch``,
    ``val_accuracy``, ``test_accuracy``, ``test_confusion``, ``history``, ``notes``) plus
    ``folder``: ``out`` as a Path.

    Raises UsageError for a column that is missing, fewer than 2 classes (in the manifest or
    in the train split), an input size under 8, or an ``out`` that holds another family's run.
    """
    from torch.utils.data import Subset

    from medgen.core.device import resolve_device
    from medgen.core.version import __version__
    from medgen.data.dataset import VolumeDataset, load_manifest
    from medgen.families.classifier.network import read_classifier_info, save_classifier
    from medgen.families.classifier.train import evaluate_classifier, train_classifier
    from medgen.training.runconfig import RunConfig

    device = resolve_device(device)
    out = Path(out)
    manifest = Path(data) / "manifest.csv"
    everything = VolumeDataset(data, split="all", label_column=label_column, keys=("image",))
    if everything.label_column is None:
        columns = ", ".join(load_manifest(data)[0])
        raise UsageError(f"{manifest}: no column {label_column!r} to classify (columns: {columns}); pass --label-column")
    present = sorted({v for v in everything.labels if v >= 0})
    if len(present) < 2:
        raise UsageError(f"{manifest}: column {label_column!r} holds {len(present)} class(es); a classifier needs at least 2")
    num_classes = everything.num_classes
    classes = everything.classes or [str(k) for k in range(num_classes)]
    size = size or min(everything.size or DEFAULT_MAX_SIZE, DEFAULT_MAX_SIZE)
    if size < 8:
        raise UsageError(f"--size {size}: need at least 8 voxels per side")

    fractions = tuple(RunConfig.split_fractions)  # medgen train's split, so both see the same test volumes
    splits, notes = {}, []
    for split in ("train", "val", "test"):
        ds = VolumeDataset(data, split=split, seed=split_seed, fractions=fractions, label_column=label_column,
                           keys=("image",))
        keep = [i for i, v in enumerate(ds.labels) if v >= 0]
        if len(keep) < len(ds):
            notes.append(f"{split}: {len(ds) - len(keep)} volume(s) without a label left out")
        splits[split] = Subset(ds, keep)
    train_labels = {splits["train"].dataset.labels[j] for j in splits["train"].indices}
    if len(train_labels) < 2:
        raise UsageError(f"{manifest}: the train split (seed {split_seed}) holds {len(train_labels)} class(es); need at least 2")
    missing = [classes[k] for k in present if k not in train_labels]
    if missing:
        notes.append(f"classes absent from the train split: {', '.join(missing)}")
    if len(splits["val"]) == 0:
        notes.append("empty validation split: the last epoch is kept")
    for note in notes:
        print(f"note: {note}")

    replace_classifier_run(out)
    result = train_classifier(
        splits["train"], splits["val"], num_classes, size, width=width, dropout=dropout, epochs=epochs,
        batch_size=batch, lr=lr, weight_decay=weight_decay, seed=seed, augment=augment,
        flip_lr=flip_lr, device=device, workers=workers, progress=progress,
        run_dir=out, data=str(data),
    )
    test = evaluate_classifier(result.model, splits["test"], batch_size=batch, device=device, workers=workers)
    info = {
        "medgen_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "data": str(data),
        "label_column": label_column,
        "classes": classes,
        "input": "volumes in [-1, 1] (medgen convention), resized to in_size³ (area averaging when shrinking)",
        "split": {"seed": split_seed, "fractions": list(fractions),
                  "n_train": len(splits["train"]), "n_val": len(splits["val"]), "n_test": len(splits["test"])},
        "training": {"epochs": epochs, "batch": batch, "lr": lr, "weight_decay": weight_decay,
                     "seed": seed, "augment": augment, "flip_lr": flip_lr, "best_epoch": result.best_epoch},
        "val_accuracy": result.val_accuracy,
        "test_accuracy": test["accuracy"],
        "test_confusion": test["confusion"],
        "history": result.history,
        "notes": notes,
    }
    folder = save_classifier(out, result.model, info)
    return {**read_classifier_info(folder), "folder": folder}


def replace_classifier_run(out: str | os.PathLike) -> None:
    """Remove the training run of an earlier classifier in ``out`` (its folder is being replaced);
    refuse a folder that holds another family's run."""
    from medgen.training.runconfig import CONFIG_NAME, RunConfig

    out = Path(out)
    if not (out / CONFIG_NAME).is_file():
        return
    family = RunConfig.load(out).family
    if family != "classifier":
        raise UsageError(f"{out}: holds a training run of family {family!r}; choose another --out")
    for name in (CONFIG_NAME, "metrics.csv"):
        (out / name).unlink(missing_ok=True)
    for name in ("checkpoints", "tensorboard"):
        shutil.rmtree(out / name, ignore_errors=True)
