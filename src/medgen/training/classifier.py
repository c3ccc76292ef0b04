"""Training loop of the volume classifier (:class:`medgen.models.classifier.VolumeClassifier`).

:func:`train_classifier` takes labelled volumes from any number of sources — the train split
of a :class:`medgen.data.dataset.VolumeDataset`, generated volumes with the class they were
generated for (:class:`LabelledVolumes`), or both joined with
``torch.utils.data.ConcatDataset`` — trains for a fixed number of epochs and keeps the
weights of the epoch with the best validation accuracy. :func:`evaluate_classifier` gives
accuracy, loss and the confusion matrix on held-out items. Used by
``medgen train-classifier`` and by data-augmentation experiments (real only vs real +
class-conditional synthetic training data, accuracy over seeds on a real test split).

Items are dicts with ``"image"`` (``[1, X, Y, Z]`` tensor or ``(x, y, z)`` array in [-1, 1])
and ``"label"`` (class index 0..K-1), as ``VolumeDataset`` returns them, or
``(image, label)`` pairs. Volumes of another size are resized to the classifier's input.

Augmentation (``augment=True``) is what keeps anatomy and labels intact: shifts of up to
``in_size // 16`` voxels along each axis (patient positioning varies) and a small affine
intensity jitter (±2 % scale, ±0.02 offset in [-1, 1] units, about ±16 HU with the
default CT window; kept small because labels such as emphysema severity are defined by HU
thresholds). Left-right flips are separate (``flip_lr``) and off by default: a flipped
chest CT has the heart on the right (situs inversus), an anatomy real scans almost never
show; use them only for labels that do not depend on laterality.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from medgen.errors import UsageError
from medgen.models.classifier import VolumeClassifier, fit_to_input

INTENSITY_SCALE_JITTER = 0.02  # relative
INTENSITY_OFFSET_JITTER = 0.02  # [-1, 1] units


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


def _augment(x: torch.Tensor, gen: torch.Generator, flip_lr: bool, jitter: bool) -> torch.Tensor:
    # A shift, an intensity change and a flip per volume are a few lines of torch on the batch,
    # on its device; MONAI's/TorchIO's random transforms do the same one item at a time on the CPU.
    b, size = x.shape[0], x.shape[-1]
    if jitter:
        m = max(1, size // 16)
        padded = nn.functional.pad(x, (m,) * 6, mode="replicate")
        offsets = torch.randint(0, 2 * m + 1, (b, 3), generator=gen).tolist()
        x = torch.stack([padded[i, :, a : a + size, c : c + size, d : d + size] for i, (a, c, d) in enumerate(offsets)])
        scale = 1 + INTENSITY_SCALE_JITTER * (2 * torch.rand(b, generator=gen) - 1)
        offset = INTENSITY_OFFSET_JITTER * (2 * torch.rand(b, generator=gen) - 1)
        x = x * scale.to(x.device).view(b, 1, 1, 1, 1) + offset.to(x.device).view(b, 1, 1, 1, 1)
    if flip_lr:
        flip = (torch.rand(b, generator=gen) < 0.5).to(x.device).view(b, 1, 1, 1, 1)
        x = torch.where(flip, x.flip(2), x)  # axis x of (x, y, z): left-right in RAS+
    return x


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
) -> ClassifierTraining:
    """Train a :class:`VolumeClassifier` on ``train_items``; keep the best epoch on ``val_items``.

    num_classes: K; labels must lie in 0..K-1. in_size: voxels per side fed to the network.
    epochs: passes over ``train_items``. batch_size: volumes per step. lr, weight_decay:
    AdamW settings; the learning rate follows a cosine decay to 0 over all steps.
    seed: seeds the initial weights, the batch order and the augmentation (same seed, same
    data, same device → same classifier). augment, flip_lr: see the module docstring.
    workers: data loader processes (0: read in this process).
    """
    from tqdm import tqdm

    if len(train_items) == 0:
        raise UsageError("no training items")
    if epochs < 1 or batch_size < 1 or lr <= 0:
        raise UsageError(f"epochs ({epochs}) and batch size ({batch_size}) must be ≥ 1 and lr ({lr}) > 0")
    torch.manual_seed(seed)
    model = VolumeClassifier(num_classes, in_size, width=width, dropout=dropout).to(device)
    loader_gen = torch.Generator().manual_seed(seed)
    aug_gen = torch.Generator().manual_seed(seed + 1)
    loader = DataLoader(
        _Inputs(train_items, in_size), batch_size=batch_size, shuffle=True, generator=loader_gen, num_workers=workers, drop_last=False
    )
    steps = epochs * len(loader)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, steps) / steps)))
    history: list[dict[str, Any]] = []
    best: tuple[float, float] | None = None  # (accuracy, -loss) of the kept epoch
    best_state, best_epoch, best_acc = None, epochs, None
    bar = tqdm(total=steps, desc="train classifier", unit="batch", disable=not progress)
    with bar:
        for epoch in range(1, epochs + 1):
            model.train()
            loss_sum, correct, seen = 0.0, 0, 0
            for x, y in loader:
                _check_labels(y, num_classes)
                x, y = x.to(device), y.to(device)
                if augment or flip_lr:
                    x = _augment(x, aug_gen, flip_lr=flip_lr, jitter=augment)
                logits = model(x)
                loss = nn.functional.cross_entropy(logits, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                loss_sum += float(loss.detach()) * len(y)
                correct += int((logits.argmax(1) == y).sum())
                seen += len(y)
                bar.update(1)
            val = evaluate_classifier(model, val_items, batch_size=batch_size, device=device, workers=workers)
            history.append({
                "epoch": epoch, "train_loss": loss_sum / seen, "train_accuracy": correct / seen,
                "val_loss": val["loss"], "val_accuracy": val["accuracy"],
            })
            bar.set_postfix(epoch=epoch, loss=f"{loss_sum / seen:.3f}", val_acc="-" if val["accuracy"] is None else f"{val['accuracy']:.3f}")
            if val["accuracy"] is not None:
                key = (val["accuracy"], -val["loss"])
                if best is None or key > best:
                    best, best_epoch, best_acc = key, epoch, val["accuracy"]
                    best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
    if best_state is not None:
        model.load_state_dict(best_state)
    return ClassifierTraining(model.eval(), best_epoch, best_acc, history)
