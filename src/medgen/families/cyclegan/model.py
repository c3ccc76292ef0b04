"""A trained ``cyclegan``: what ``medgen.load`` returns for a ``cyclegan`` run, translating both ways.

Example::

    model = medgen.load("runs/t1t2")
    t2 = model.translate(t1)                          # A → B: (X, Y, Z) in [-1, 1] → same shape
    t1_again = model.translate(t2, direction="BtoA")  # B → A with the other generator
    back = model.with_direction("BtoA")               # a view whose config, translate and preprocess are B → A
    back.config.inputs, back.config.target            # ('b',), 'image'

Each direction is the ``unet`` family's :class:`~medgen.families.unet.model.ImageToImageModel` of one generator
(sliding windows, input checks), so ``medgen translate --direction AtoB|BtoA`` treats it like any image-to-image
model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medgen.core.errors import UsageError
from medgen.data.unpaired_set import B_PREPROCESS, UNPAIRED_KEY
from medgen.families.cyclegan.config import DIRECTIONS, CycleGANConfig
from medgen.families.unet.config import UNetConfig
from medgen.families.unet.model import ImageToImageModel

@dataclass
class CycleGANModel:
    """G_AB and G_BA (eval mode) of a run; ``direction``: the one :meth:`translate` and :attr:`config` follow
    (``"AtoB"`` as loaded; :meth:`with_direction` gives the other); ``window``: the sliding window's default
    edge (the training patch; 0: whole volumes)."""

    architecture: CycleGANConfig
    g_ab: torch.nn.Module
    g_ba: torch.nn.Module
    run_config: Any = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    checkpoint: Path | None = None
    window: int = 0
    direction: str = "AtoB"

    def __post_init__(self) -> None:
        _check(self.direction)

    @property
    def config(self) -> UNetConfig:
        """The generator of :attr:`direction`: ``inputs`` its source volume, ``target`` the other domain's."""
        return self.architecture.generator(self.direction)

    @property
    def network(self) -> torch.nn.Module:
        return self.g_ab if self.direction == "AtoB" else self.g_ba

    @property
    def preprocess(self) -> dict[str, Any]:
        """The preprocessing of the input domain (scans are normalised with it)."""
        return self._domain_preprocess("A" if self.direction == "AtoB" else "B")

    @property
    def target_preprocess(self) -> dict[str, Any]:
        """The preprocessing of the output domain (outputs are written in its units)."""
        return self._domain_preprocess("B" if self.direction == "AtoB" else "A")

    def _domain_preprocess(self, domain: str) -> dict[str, Any]:
        """Domain A's: the training data set's ``preprocess.json``; domain B's: the one ``medgen unpair`` recorded
        there (the same as A's for a data set made otherwise)."""
        info = dict(getattr(self.run_config, "preprocess", None) or {})
        record = info.get(UNPAIRED_KEY)
        b = record.get(B_PREPROCESS) if isinstance(record, dict) else None
        return dict(b) if domain == "B" and isinstance(b, dict) else info

    def with_direction(self, direction: str) -> "CycleGANModel":
        """The same networks translating in ``direction`` (``"AtoB"`` or ``"BtoA"``)."""
        _check(direction)
        return dataclasses.replace(self, direction=direction)

    def one_way(self, direction: str | None = None) -> ImageToImageModel:
        """The generator of ``direction`` (default :attr:`direction`) as a one-way image-to-image model."""
        view = self if direction is None else self.with_direction(direction)
        return ImageToImageModel(view.config, view.network, self.run_config, self.device, self.checkpoint,
                                 window=self.window)

    def input_channels(self, inputs: Any) -> np.ndarray:
        """``inputs`` (a volume array, or a dict holding the input domain's volume by name) as ``[1, X, Y, Z]``."""
        return self.one_way().input_channels(inputs)

    @torch.no_grad()
    def translate(self, inputs: Any, window: int | None = None, overlap: float = 0.25,
                  direction: str | None = None) -> np.ndarray:
        """``inputs`` translated ``direction`` (``"AtoB"``: G_AB, ``"BtoA"``: G_BA; default :attr:`direction`,
        ``"AtoB"`` as loaded) → ``(X, Y, Z)`` float32 clipped to [-1, 1]. window, overlap: as
        :meth:`ImageToImageModel.translate` (default window: the training patch)."""
        return self.one_way(direction).translate(inputs, window=window, overlap=overlap)


def _check(direction: str) -> None:
    if direction not in DIRECTIONS:
        raise UsageError(f"direction {direction!r}: choose {' or '.join(DIRECTIONS)}")
