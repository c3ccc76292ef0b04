"""A trained ``seg-unet`` ready to segment volumes: what ``medgen.load`` returns for a ``seg-unet`` run.

Example::

    model = medgen.load("runs/seg64")
    labels = model.segment(image)                          # (X, Y, Z) in [-1, 1] → (X, Y, Z) int16 classes
    labels = model.segment({"image": x, "t2": t2})         # several inputs, by name
    big = model.segment(ct256, window=64)                  # overlapping 64³ windows (bounded memory)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medgen.core.errors import UsageError
from medgen.families import image_tasks
from medgen.families.seg_unet.config import SegUNetConfig, SegUNetHParams, model_config
from medgen.families.seg_unet.network import build_network, logits
from medgen.families.unet.model import seeded_network, trained_network


@dataclass
class SegmentationModel:
    """``network`` (EMA weights when the run has them, eval mode) mapping ``config.inputs`` to the classes of
    ``config.label``; ``window``: the sliding window's edge by default (the training patch; 0: whole volumes)."""

    config: SegUNetConfig
    network: torch.nn.Module
    run_config: Any = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    checkpoint: Path | None = None
    window: int = 0

    @property
    def preprocess(self) -> dict[str, Any]:
        return dict(getattr(self.run_config, "preprocess", None) or {})

    def input_channels(self, inputs: Any) -> np.ndarray:
        """``inputs`` as ``[len(config.inputs), X, Y, Z]`` float32 (:func:`medgen.families.image_tasks.input_channels`)."""
        return image_tasks.input_channels(tuple(self.config.inputs), inputs)

    @torch.no_grad()
    def probabilities(self, inputs: Any, window: int | None = None, overlap: float = 0.25) -> np.ndarray:
        """Class probabilities ``[num_classes, X, Y, Z]`` float32 (softmax of the logits; see :meth:`segment`)."""
        x = torch.from_numpy(self.input_channels(inputs))[None].to(self.device)
        w = self.window if window is None else int(window)
        if w and w % self.config.divisor:
            raise UsageError(f"window {w}: a multiple of {self.config.divisor}")
        if w and w >= max(x.shape[2:]):
            w = 0
        out = logits(self.network, x, self.config, window=w, overlap=overlap)
        return torch.softmax(out.float(), dim=1)[0].cpu().numpy()

    def segment(self, inputs: Any, window: int | None = None, overlap: float = 0.25) -> np.ndarray:
        """The label map ``(X, Y, Z)`` int16 (the most probable class per voxel) of ``inputs`` in [-1, 1] (see
        :meth:`input_channels`). window: edge of the overlapping cubic windows (a multiple of
        ``config.divisor``; default the training patch, 0 for whole volumes); overlap: their overlap fraction."""
        return self.probabilities(inputs, window, overlap).argmax(0).astype(np.int16)


def load_model(run_cfg: Any, weights: dict[str, dict[str, torch.Tensor]], checkpoint: Path, device: torch.device,
               use_ema: bool = True) -> SegmentationModel:
    """The network of a ``seg-unet`` run (its EMA copy unless ``use_ema`` is False)."""
    cfg = SegUNetConfig.from_dict(run_cfg.model)
    hp = SegUNetHParams.from_dict(dict(run_cfg.hparams or {}))
    net = trained_network(build_network(cfg), weights, "unet", use_ema, checkpoint, device)
    return SegmentationModel(cfg, net, run_cfg, device, checkpoint, window=hp.patch)


def build(preset: str = "tiny", size: int = 32, seed: int = 0, device: torch.device = torch.device("cpu"),
          encoder: bool = False, num_classes: int = 2, **overrides: Any) -> SegmentationModel:
    """An untrained network (random initialisation drawn from ``seed``) of ``preset`` at ``size``³."""
    cfg = model_config(preset, size, num_classes=num_classes, **overrides)
    return SegmentationModel(cfg, seeded_network(lambda: build_network(cfg), seed, device))


def build_untrained(run_cfg: Any, seed: int = 0, device: torch.device = torch.device("cpu")) -> SegmentationModel:
    """The architecture of a ``seg-unet`` run at a random initialisation drawn from ``seed``."""
    cfg = SegUNetConfig.from_dict(run_cfg.model)
    return SegmentationModel(cfg, seeded_network(lambda: build_network(cfg), seed, device), run_cfg, device, None)
