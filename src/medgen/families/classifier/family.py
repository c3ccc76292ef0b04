"""The 3D volume classifier as a registered family: trained by the shared loop like every model.

Architecture config (:class:`ClassifierConfig`): classes, input size, width, dropout
(:class:`medgen.families.classifier.network.VolumeClassifier`). Hyper-parameters
(:class:`ClassifierHParams`): AdamW learning rate with an optional cosine decay to 0,
weight decay, and the label-preserving augmentation of
:mod:`medgen.families.classifier.train`. One iteration is one AdamW step on the batch's
cross-entropy; the loop logs ``loss_CE`` and the batch's ``loss_accuracy`` (the share of
correctly classified training volumes, logged next to the losses).

``medgen train-classifier`` runs this family on the loop with a checkpoint per epoch and
keeps the epoch with the best validation accuracy; ``medgen train DATA --family classifier
--label-column C`` trains it like any other family.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medgen.core.errors import InputError, UsageError
from medgen.core.settings import from_dict
from medgen.families.classifier.augment import augment_batch
from medgen.families.classifier.network import VolumeClassifier, class_probabilities, fit_to_input
from medgen.training.family import Family, Step


@dataclass
class ClassifierConfig:
    """Shapes of a :class:`VolumeClassifier`: K classes, input edge ``size``, stem ``width``, ``dropout``."""

    size: int = 32
    num_classes: int = 2
    width: int = 16
    dropout: float = 0.3

    def __post_init__(self) -> None:
        if not isinstance(self.num_classes, int) or self.num_classes < 2:
            raise UsageError(f"num_classes must be at least 2 for a classifier, got {self.num_classes!r}")
        if not isinstance(self.size, int) or self.size < 8:
            raise UsageError(f"size {self.size!r}: a classifier needs at least 8 voxels per side")
        if not isinstance(self.width, int) or self.width < 1 or not 0.0 <= self.dropout < 1.0:
            raise UsageError(f"width {self.width!r} must be an integer >= 1 and dropout {self.dropout!r} in [0, 1)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ClassifierConfig":
        return from_dict(cls, d, "classifier setting")


PRESETS: dict[str, dict[str, Any]] = {
    "paper": dict(width=16, dropout=0.3),  # the default of medgen train-classifier (1.8M parameters at 64³)
    "small": dict(width=16, dropout=0.3),
    "tiny": dict(width=4, dropout=0.3),
}


def model_config(preset: str, size: int, **overrides: Any) -> ClassifierConfig:
    """Preset ``preset`` at input size ``size``; overrides whose value is None are ignored."""
    if preset not in PRESETS:
        raise UsageError(f"unknown classifier preset {preset!r} (choose from {', '.join(PRESETS)})")
    fields = dict(PRESETS[preset], size=size)
    fields.update({k: v for k, v in overrides.items() if v is not None})
    return ClassifierConfig.from_dict(fields)


@dataclass
class ClassifierHParams:
    """AdamW ``lr`` and ``weight_decay``; ``decay_iters``: the learning rate follows a cosine from ``lr``
    to 0 over this many iterations (0: constant). It is a hyper-parameter of its own, not the run's
    length, so that a run continued with more iterations keeps its schedule. ``augment``: shifts of up
    to size/16 voxels and ±2 % intensity jitter; ``flip_lr``: random left-right flips (off: they swap
    the heart's side)."""

    lr: float = 1e-3
    weight_decay: float = 1e-4
    decay_iters: int = 0
    augment: bool = False
    flip_lr: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ClassifierHParams":
        hp = from_dict(cls, d, "classifier training setting")
        if not hp.lr > 0 or hp.weight_decay < 0 or hp.decay_iters < 0:
            raise UsageError(f"lr {hp.lr} must be > 0, weight_decay {hp.weight_decay} >= 0 and decay_iters {hp.decay_iters} >= 0")
        return hp


def build(cfg: ClassifierConfig, hp: ClassifierHParams, device: torch.device) -> dict[str, nn.Module]:
    return {"C": VolumeClassifier(cfg.num_classes, cfg.size, width=cfg.width, dropout=cfg.dropout).to(device)}


def optimizers(nets: dict[str, nn.Module], hp: ClassifierHParams, device: torch.device) -> dict[str, torch.optim.Optimizer]:
    return {"C": torch.optim.AdamW(nets["C"].parameters(), lr=hp.lr, weight_decay=hp.weight_decay)}


def cosine_lr(lr: float, iteration: int, iterations: int) -> float:
    """Learning rate of update ``iteration`` (0-based): ``lr · ½(1 + cos(π · iteration / iterations))``
    (``lr`` throughout when ``iterations`` is 0)."""
    if iterations <= 0:
        return lr
    return lr * 0.5 * (1.0 + math.cos(math.pi * min(iteration, iterations) / iterations))


def loss_names(cfg: ClassifierConfig, hp: ClassifierHParams) -> list[str]:
    return ["CE", "accuracy"]


def train_step(s: Step) -> dict[str, torch.Tensor]:
    """One AdamW step on the batch's cross-entropy (labels must lie in 0..K-1)."""
    cfg: ClassifierConfig = s.model
    hp: ClassifierHParams = s.hp
    x = fit_to_input(s.batch["image"].float(), cfg.size)
    y = s.batch["label"].long()
    if bool(((y < 0) | (y >= cfg.num_classes)).any()):
        bad = int(y[(y < 0) | (y >= cfg.num_classes)][0])
        raise UsageError(f"class label {bad} outside 0..{cfg.num_classes - 1} (unlabelled items must be left out)")
    if hp.augment or hp.flip_lr:
        x = augment_batch(x, s.rng, flip_lr=hp.flip_lr, jitter=hp.augment)
    for group in s.opt["C"].param_groups:
        group["lr"] = cosine_lr(hp.lr, s.iteration, hp.decay_iters)
    s.nets["C"].train()
    with s.amp():
        logits = s.ddp["C"](x)
    loss = nn.functional.cross_entropy(logits.float(), y)
    s.update("C", loss)
    accuracy = (logits.detach().argmax(1) == y).float().mean()
    return {"CE": loss, "accuracy": accuracy}


@dataclass
class ClassifierModel:
    """A trained classifier loaded from a run folder: ``predict_proba`` gives class probabilities."""

    config: ClassifierConfig
    network: VolumeClassifier
    run_config: Any = None
    device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))
    checkpoint: Path | None = None

    @property
    def preprocess(self) -> dict[str, Any]:
        return dict(getattr(self.run_config, "preprocess", None) or {})

    def predict_proba(self, volumes: Any, batch_size: int = 4) -> np.ndarray:
        """Softmax probabilities [n, K] (float64) of volumes ``(x, y, z)`` in [-1, 1] (any size)."""
        vols = [np.asarray(v) for v in (volumes if not isinstance(volumes, np.ndarray) or volumes.ndim == 4 else [volumes])]
        return class_probabilities(self.network, vols, batch_size=batch_size, device=self.device)


def load_model(run_cfg: Any, weights: dict[str, dict[str, torch.Tensor]], checkpoint: Path, device: torch.device,
               use_ema: bool = True) -> ClassifierModel:
    cfg = ClassifierConfig.from_dict(run_cfg.model)
    if "C" not in weights:
        raise InputError(f"{checkpoint}: the checkpoint holds no classifier weights")
    net = VolumeClassifier(cfg.num_classes, cfg.size, width=cfg.width, dropout=cfg.dropout)
    try:
        net.load_state_dict(weights["C"])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise InputError(f"{checkpoint}: weights do not fit the classifier in the run's config.yaml ({first})") from None
    return ClassifierModel(cfg, net.to(device).eval().requires_grad_(False), run_cfg, device, checkpoint)


def describe(cfg: ClassifierConfig) -> dict[str, Any]:
    net = VolumeClassifier(cfg.num_classes, cfg.size, width=cfg.width, dropout=cfg.dropout)
    return {"config": cfg.to_dict(), "totals": {"all": sum(p.numel() for p in net.parameters())}}


FAMILY = Family(
    name="classifier",
    summary="3D CNN classifier of whole volumes (disease stage; Inception Score; augmentation experiments)",
    presets=PRESETS,
    model_config=model_config,
    model_from_dict=ClassifierConfig.from_dict,
    hparams_from_dict=ClassifierHParams.from_dict,
    build=build,
    optimizers=optimizers,
    train_step=train_step,
    loss_names=loss_names,
    load_model=load_model,
    uses_labels=lambda cfg: True,
    describe=describe,
)
