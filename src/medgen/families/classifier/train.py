"""Training the volume classifier (:class:`medgen.families.classifier.network.VolumeClassifier`) on the shared loop.

:func:`train_classifier` takes labelled volumes from any number of sources — the train split
of a :class:`medgen.data.dataset.VolumeDataset`, generated volumes with the class they were
generated for (:class:`LabelledVolumes`), or both joined with
``torch.utils.data.ConcatDataset`` — trains the ``classifier`` family on the shared training loop
(:mod:`medgen.training.loop`; a checkpoint per epoch) for a fixed number of epochs and keeps the
weights of the epoch with the best validation accuracy. :func:`evaluate_classifier` gives
accuracy, loss and the confusion matrix on held-out items. Used by
``medgen train-classifier`` and by data-augmentation experiments (real only vs real +
class-conditional synthetic training data, accuracy over seeds on a real test split).

Items are dicts with ``"image"`` (``[1, X, Y, Z]`` tensor or ``(x, y, z)`` array in [-1, 1])
and ``"label"`` (class index 0..K-1), as ``VolumeDataset`` returns them, or
``(image, label)`` pairs. Volumes of another size are resized to the classifier's input.

Augmentation (``augment``, ``flip_lr``): :mod:`medgen.families.classifier.augment`.
"""

from __future__ import annotations

import csv
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from medgen.core.errors import UsageError
from medgen.families.classifier.family import FAMILY, ClassifierConfig, ClassifierHParams
from medgen.families.classifier.network import VolumeClassifier, fit_to_input
from medgen.training import checkpoint as ckpt_io
from medgen.training.loop import train as train_loop
from medgen.training.runconfig import RunConfig


class LabelledVolumes(Dataset):
    """Volumes with given class labels, e.g. generated volumes and the class they were made for.

    volumes: a sequence of ``(x, y, z)`` arrays in [-1, 1] (a list, or a
        :class:`medgen.metrics.volumes.VolumeSet`, read lazily).
    labels: class index of each volume.
    """

    def __init__(self, volumes: Sequence[np.ndarray], labels: Sequence[int]) -> None:
        if len(volumes) != len(labels):
            raise ValueError(f"{len(volumes)} volumes but {len(labels)} labels")
        self.volumes, self.labels = volumes, [int(v) for v in labels]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict:
        image = torch.from_numpy(np.ascontiguousarray(self.volumes[index], dtype=np.float32))
        return {"image": image.reshape(1, *image.shape[-3:]), "label": torch.tensor(self.labels[index])}


class _Inputs(Dataset):
    """(image ``[1, S, S, S]`` at the classifier's size, label) pairs from any item source."""

    def __init__(self, items: Sequence, size: int) -> None:
        self.items, self.size = items, size

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        item = self.items[index]
        image, label = (item["image"], item["label"]) if isinstance(item, dict) else item
        x = torch.as_tensor(np.asarray(image, dtype=np.float32) if not torch.is_tensor(image) else image, dtype=torch.float32)
        x = x.reshape(1, 1, *x.shape[-3:])
        return fit_to_input(x, self.size)[0], int(label)


class _LoopItems(_Inputs):
    """The same pairs as data items of the training loop: ``{"image", "label"}``."""

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        x, y = super().__getitem__(index)
        return {"image": x, "label": torch.tensor(y)}


@dataclass
class ClassifierTraining:
    """Result of :func:`train_classifier`.

    model: the classifier with the weights of ``best_epoch`` (eval mode).
    best_epoch: 1-based epoch whose weights were kept (best validation accuracy, ties to the
        lower validation loss; the last epoch when there are no validation items).
    val_accuracy: validation accuracy of ``best_epoch`` (None without validation items).
    history: per epoch: ``epoch``, ``train_loss``, ``train_accuracy``, ``val_loss``, ``val_accuracy``.
    """

    model: VolumeClassifier
    best_epoch: int
    val_accuracy: float | None
    history: list[dict[str, Any]] = field(default_factory=list)


def _check_labels(labels: torch.Tensor, num_classes: int) -> None:
    bad = labels[(labels < 0) | (labels >= num_classes)]
    if len(bad):
        raise UsageError(f"class label {int(bad[0])} outside 0..{num_classes - 1} (unlabelled items must be left out)")


def evaluate_classifier(
    model: VolumeClassifier, items: Sequence, batch_size: int = 8, device: str | torch.device = "cpu", workers: int = 0
) -> dict[str, Any]:
    """Accuracy, mean cross-entropy and confusion matrix (rows: true class, columns:
    predicted) of ``model`` on labelled ``items``; accuracy and loss are None for no items."""
    k = model.num_classes
    confusion = np.zeros((k, k), dtype=np.int64)
    if len(items) == 0:
        return {"n": 0, "accuracy": None, "loss": None, "confusion": confusion.tolist()}
    loader = DataLoader(_Inputs(items, model.in_size), batch_size=batch_size, shuffle=False, num_workers=workers)
    model.eval()
    loss_sum = 0.0
    with torch.inference_mode():
        for x, y in loader:
            _check_labels(y, k)
            logits = model(x.to(device)).float().cpu()
            loss_sum += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
            np.add.at(confusion, (y.numpy(), logits.argmax(1).numpy()), 1)
    n = int(confusion.sum())
    return {"n": n, "accuracy": float(np.trace(confusion) / n), "loss": loss_sum / n, "confusion": confusion.tolist()}


def train_classifier(
    train_items: Sequence,
    val_items: Sequence,
    num_classes: int,
    in_size: int,
    *,
    width: int = 16,
    dropout: float = 0.3,
    epochs: int = 30,
    batch_size: int = 8,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    seed: int = 0,
    augment: bool = False,
    flip_lr: bool = False,
    device: str | torch.device = "cpu",
    workers: int = 0,
    progress: bool = True,
    run_dir: str | os.PathLike | None = None,
    data: str = "(labelled items)",
) -> ClassifierTraining:
    """Train a :class:`VolumeClassifier` on ``train_items`` on the shared loop; keep the best epoch on ``val_items``.

    num_classes: K; labels must lie in 0..K-1. in_size: voxels per side fed to the network.
    epochs: passes over ``train_items`` (``ceil(n / batch_size)`` loop iterations each, one
    checkpoint per epoch). batch_size: volumes per step. lr, weight_decay: AdamW settings; the
    learning rate follows a cosine decay to 0 over all steps. seed: seeds the initial weights,
    the batch order and the augmentation (same seed, same data, same device → same
    classifier). augment, flip_lr: see :mod:`medgen.families.classifier.augment`.
    workers: data loader processes. run_dir: the run folder to write (``config.yaml``,
    ``metrics.csv``, the best and the last epoch's checkpoints); default a temporary folder,
    removed afterwards. data: what ``config.yaml`` records as the training data.
    """
    if len(train_items) == 0:
        raise UsageError("no training items")
    if epochs < 1 or batch_size < 1 or lr <= 0:
        raise UsageError(f"epochs ({epochs}) and batch size ({batch_size}) must be ≥ 1 and lr ({lr}) > 0")
    device = torch.device(device)
    steps_per_epoch = math.ceil(len(train_items) / batch_size)
    model_cfg = ClassifierConfig(size=int(in_size), num_classes=int(num_classes), width=int(width), dropout=float(dropout))
    hp = ClassifierHParams(lr=lr, weight_decay=weight_decay, decay_iters=epochs * steps_per_epoch, augment=augment,
                           flip_lr=flip_lr)
    cfg = RunConfig(
        data=data, model=model_cfg.to_dict(), family=FAMILY.name, hparams=hp.to_dict(), preset="custom",
        iters=epochs * steps_per_epoch, batch=batch_size, ema_decay=0.0, seed=seed, device=device.type,
        workers=workers, log_every=steps_per_epoch, sample_every=0, ckpt_every=steps_per_epoch,
        keep_checkpoints=0, split_fractions=(1.0, 0.0, 0.0),
    )
    with tempfile.TemporaryDirectory(prefix="medgen-classifier-") as tmp:
        run = Path(run_dir) if run_dir is not None else Path(tmp) / "run"
        train_loop(FAMILY, cfg, run, progress=progress, dataset=_LoopItems(train_items, in_size))
        with open(run / "metrics.csv", newline="", encoding="utf-8") as fh:
            rows = {int(r["iteration"]): r for r in csv.DictReader(fh)}
        model = VolumeClassifier(num_classes, in_size, width=width, dropout=dropout).to(device)
        history: list[dict[str, Any]] = []
        best: tuple[float, float] | None = None  # (accuracy, -loss) of the kept epoch
        best_state, best_epoch, best_acc = None, epochs, None
        checkpoints = ckpt_io.list_checkpoints(run)
        for ckpt in checkpoints:
            epoch = ckpt_io.checkpoint_iteration(ckpt) // steps_per_epoch
            model.load_state_dict(ckpt_io.load_weights(ckpt, device=device)["C"])
            val = evaluate_classifier(model, val_items, batch_size=batch_size, device=device, workers=workers)
            row = rows.get(epoch * steps_per_epoch, {})
            history.append({
                "epoch": epoch, "train_loss": float(row.get("loss_CE", "nan")),
                "train_accuracy": float(row.get("loss_accuracy", "nan")),
                "val_loss": val["loss"], "val_accuracy": val["accuracy"],
            })
            if val["accuracy"] is not None:
                key = (val["accuracy"], -val["loss"])
                if best is None or key > best:
                    best, best_epoch, best_acc = key, epoch, val["accuracy"]
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if run_dir is not None:  # keep the best and the last epoch's checkpoints
            kept_iteration = best_epoch * steps_per_epoch
            for ckpt in checkpoints[:-1]:
                if ckpt_io.checkpoint_iteration(ckpt) != kept_iteration:
                    shutil.rmtree(ckpt, ignore_errors=True)
    if best_state is not None:
        model.load_state_dict(best_state)
    return ClassifierTraining(model.eval(), best_epoch, best_acc, history)
