"""A small 3D CNN that classifies whole volumes, and how to save, load and apply it.

:class:`VolumeClassifier` maps a volume ``[B, 1, S, S, S]`` in medgen's [-1, 1] intensity
convention to class logits ``[B, K]``. It is the domain classifier behind the Inception
Score of generated volumes (``medgen evaluate --metrics is --classifier DIR``) and the
disease-stage classifier of data-augmentation experiments (real vs real + synthetic
training data). Train one with ``medgen train-classifier`` or
:func:`medgen.families.classifier.train.train_classifier`.

Volumes are fed with their [-1, 1] intensities as they are, not z-scored: labels such as
the emphysema severity are defined by absolute Hounsfield-unit thresholds, which a
per-volume normalisation would erase.

A trained classifier is a folder with ``classifier.safetensors`` (weights; loading never
unpickles code) and ``classifier.json`` (architecture, classes, the split it was trained
on, validation and test accuracy).

Example::

    >>> import torch
    >>> net = VolumeClassifier(num_classes=4, in_size=32)
    >>> net(torch.zeros(2, 1, 32, 32, 32)).shape
    torch.Size([2, 4])
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np
import torch
from torch import nn

from medgen.core.errors import InputError
from medgen.core.volume import resize_volume

if TYPE_CHECKING:
    from medgen.metrics.registry import ClassifierProbs

WEIGHTS_FILE = "classifier.safetensors"
INFO_FILE = "classifier.json"
FORMAT = "medgen.VolumeClassifier"
_ARCHITECTURE_KEYS = ("num_classes", "in_size", "width", "dropout")


def _norm(channels: int) -> nn.BatchNorm3d:
    return nn.BatchNorm3d(channels)


class VolumeClassifier(nn.Module):
    """Whole-volume classifier: a plain 3D CNN, small enough to train on a CPU at 32³–64³.

    Layout: a stem (Conv3d 3³ → ReLU, no normalisation, so that absolute intensities
    still count) at the input resolution, then stages of
    [Conv3d 3³ stride 2 → BN → ReLU → Conv3d 3³ → BN → ReLU], each halving the resolution,
    until the feature map is 4³ (two stages at 16³, four at 64³); channels double per stage
    from ``width`` up to ``8 * width``. Then global average pooling, dropout and a linear
    layer give the logits. The normalisation is BatchNorm (running statistics are used in
    eval mode); under ``torchrun`` each process keeps its own running statistics and rank 0's
    are the ones saved.

    num_classes: K, number of classes (≥ 2).
    in_size: S, voxels per side of the (cubic) input; other sizes are resized to it with
        :func:`fit_to_input` before the forward pass.
    width: channels of the stem; sets the network's capacity (1.8M parameters at 16 and 64³).
    dropout: probability of zeroing a pooled feature during training.
    """

    def __init__(self, num_classes: int, in_size: int, width: int = 16, dropout: float = 0.3) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"a classifier needs at least 2 classes, got {num_classes}")
        if in_size < 8:
            raise ValueError(f"input size {in_size}: need at least 8 voxels per side")
        if width < 1 or not 0.0 <= dropout < 1.0:
            raise ValueError(f"width {width} must be ≥ 1 and dropout {dropout} in [0, 1)")
        self.num_classes, self.in_size, self.width, self.dropout = int(num_classes), int(in_size), int(width), float(dropout)
        # No normalisation in the stem: its ReLUs threshold the absolute intensities, the
        # information HU-defined labels rest on, before anything rescales them.
        layers: list[nn.Module] = [nn.Conv3d(1, width, 3, padding=1), nn.ReLU(inplace=True)]
        channels, size = width, in_size
        while size > 4:
            out = min(2 * channels, 8 * width)
            layers += [
                nn.Conv3d(channels, out, 3, stride=2, padding=1), _norm(out), nn.ReLU(inplace=True),
                nn.Conv3d(out, out, 3, padding=1), _norm(out), nn.ReLU(inplace=True),
            ]
            channels, size = out, (size + 1) // 2
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(channels, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, K]`` of volumes ``[B, 1, S, S, S]`` in [-1, 1]."""
        return self.head(self.features(x).mean(dim=(2, 3, 4), keepdim=True))

    def architecture(self) -> dict[str, Any]:
        """The constructor arguments, enough to rebuild the network."""
        return {"num_classes": self.num_classes, "in_size": self.in_size, "width": self.width, "dropout": self.dropout}


def fit_to_input(volumes: torch.Tensor, size: int) -> torch.Tensor:
    """Resize ``[B, 1, X, Y, Z]`` to ``[B, 1, size, size, size]``.

    Area averaging when every axis shrinks (each output voxel is the mean of the input
    voxels it covers, so a constant background stays exactly constant), trilinear
    interpolation otherwise; the same rule as the feature extractors' input resizing.
    """
    return resize_volume(volumes, (size,) * 3)


def class_probabilities(
    model: VolumeClassifier,
    volumes: Iterable[np.ndarray],
    batch_size: int = 4,
    device: str | torch.device = "cpu",
    progress: bool = False,
    total: int | None = None,
    desc: str = "classify",
) -> np.ndarray:
    """Softmax class probabilities ``[N, K]`` (float64) of ``(x, y, z)`` volumes in [-1, 1].

    Each volume is resized to the model's input size on its own (sizes may differ), then
    volumes are classified in batches of ``batch_size`` in eval mode (no dropout).
    """
    from tqdm import tqdm

    model.eval()
    rows: list[np.ndarray] = []
    batch: list[torch.Tensor] = []

    def flush() -> None:
        if batch:
            with torch.inference_mode():
                logits = model(torch.cat(batch).to(device))
                rows.append(torch.softmax(logits.double(), dim=1).cpu().numpy())
            batch.clear()

    for vol in tqdm(volumes, total=total, desc=desc, unit="vol", disable=not progress, leave=False):
        x = torch.from_numpy(np.ascontiguousarray(vol, dtype=np.float32)).reshape(1, 1, *np.shape(vol)[-3:])
        batch.append(fit_to_input(x, model.in_size))
        if len(batch) >= batch_size:
            flush()
    flush()
    return np.concatenate(rows) if rows else np.zeros((0, model.num_classes))


def save_classifier(folder: str | os.PathLike, model: VolumeClassifier, info: dict[str, Any]) -> Path:
    """Write ``folder/classifier.safetensors`` and ``folder/classifier.json`` atomically.

    ``info``: what the JSON should record besides the architecture (classes, label column,
    split, accuracies, ...). The JSON records the weight file's SHA-256 (and the weight file
    the architecture), so :func:`load_classifier` can tell files of different runs apart.
    """
    from safetensors.torch import save_file

    from medgen.core.fileio import atomic_path, atomic_write_json
    from medgen.metrics.features import file_sha256

    folder = Path(folder)
    arch = model.architecture()
    weights = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    with atomic_path(folder / WEIGHTS_FILE) as tmp:
        save_file(weights, str(tmp), metadata={"format": FORMAT, "architecture": json.dumps(arch, sort_keys=True)})
    extra = {k: v for k, v in info.items() if k not in arch and k != "weights_sha256"}
    atomic_write_json(folder / INFO_FILE, {"format": FORMAT, **arch, "weights_sha256": file_sha256(folder / WEIGHTS_FILE), **extra})
    return folder


def read_classifier_info(folder: str | os.PathLike) -> dict[str, Any]:
    """Contents of ``folder/classifier.json`` (InputError if ``folder`` is not a classifier)."""
    folder = Path(folder)
    path = folder / INFO_FILE
    if not path.is_file() or not (folder / WEIGHTS_FILE).is_file():
        raise InputError(
            f"{folder}: not a classifier folder (needs {INFO_FILE} and {WEIGHTS_FILE}); train one with `medgen train-classifier`"
        )
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read ({exc})") from None
    missing = [k for k in _ARCHITECTURE_KEYS if k not in info]
    if info.get("format") != FORMAT or missing:
        raise InputError(f"{path}: not a medgen classifier description (missing {', '.join(missing) or 'format'})")
    return info


def load_classifier(folder: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[VolumeClassifier, dict[str, Any]]:
    """Rebuild a saved classifier (eval mode, on ``device``) and return it with its info dict."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    folder = Path(folder)
    info = read_classifier_info(folder)
    path = folder / WEIGHTS_FILE
    arch = {k: info[k] for k in _ARCHITECTURE_KEYS}
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
        state = load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - any failure to parse is the file's fault
        raise InputError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from None
    if meta.get("format") != FORMAT or json.loads(meta.get("architecture", "{}")) != arch:
        raise InputError(f"{path}: weights do not match {INFO_FILE} (architecture {meta.get('architecture')} vs {arch})")
    if "weights_sha256" in info:
        from medgen.metrics.features import file_sha256

        if file_sha256(path) != info["weights_sha256"]:
            raise InputError(f"{path}: weights do not match {INFO_FILE} (SHA-256 differs: files of different runs)")
    model = VolumeClassifier(**arch)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise InputError(f"{path}: weights do not fit the architecture in {INFO_FILE} ({str(exc).splitlines()[0]})") from None
    return model.to(device).eval(), info


def classifier_probs(folder: str | os.PathLike, device: str | torch.device = "cpu") -> ClassifierProbs:
    """The classifier in ``folder`` (written by ``medgen train-classifier``), loaded on ``device`` and
    ready for the Inception Score: a :class:`medgen.metrics.registry.ClassifierProbs` to pass as
    ``classifier=`` to :func:`medgen.metrics.evaluate.evaluate`."""
    from medgen.metrics.features import file_sha256
    from medgen.metrics.registry import ClassifierProbs

    folder = Path(folder)
    model, info = load_classifier(folder, device=device)

    def probs_fn(volumes, *, batch_size=2, progress=False, total=None, desc="classifier"):
        return class_probabilities(model, volumes, batch_size=batch_size, device=device, progress=progress,
                                   total=total, desc=desc)

    described = {
        "path": str(folder),
        "weights_sha256": info.get("weights_sha256") or file_sha256(folder / WEIGHTS_FILE),
        "label_column": info.get("label_column"),
        "classes": [str(c) for c in info.get("classes") or range(model.num_classes)],
        "in_size": model.in_size,
        "val_accuracy": info.get("val_accuracy"),
        "test_accuracy": info.get("test_accuracy"),
    }
    return ClassifierProbs(probs_fn, described)
