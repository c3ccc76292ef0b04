"""The ``cond-ddpm`` family's architecture (:class:`CondDDPMConfig`), presets and hyper-parameters.

The architecture is the ``ddpm`` family's (:class:`~medgen.families.ddpm.config.DDPMConfig`: MONAI's
``DiffusionModelUNet`` and the noise schedule) plus the image-to-image task fields of
:mod:`medgen.families.image_tasks` (``task``, ``inputs``, ``target``). The diffused sample is the one
target volume (``in_channels`` 1); the UNet reads it with the ``inputs`` volumes concatenated as channels,
so its first convolution takes ``1 + len(inputs)`` channels (:attr:`CondDDPMConfig.unet_in_channels`).
There are no class labels: the condition is the images.

The presets are the ``ddpm`` family's (``tiny``, ``small``, ``base``) with ε-prediction, as SR3 (Saharia
et al. 2021) and Palette (Saharia et al. 2022) train: the condition fixes most of x₀, so the noise is what
is left to predict (``prediction_type=v_prediction`` stays available as an override).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from medgen.core.errors import UsageError
from medgen.core.settings import from_dict, tuples_as_lists
from medgen.families import image_tasks
from medgen.families.ddpm import config as ddpm_config
from medgen.families.ddpm.config import DDPMConfig


@dataclass
class CondDDPMConfig(DDPMConfig):
    """The ``ddpm`` UNet and noise schedule for one target volume, conditioned on the ``inputs`` volumes.

    task, inputs, target: as the ``unet`` family's (:mod:`medgen.families.image_tasks`); the inputs are
    concatenated, in order, to the noisy target at every denoising step.
    """

    prediction_type: str = "epsilon"
    task: str = "denoise"
    inputs: tuple[str, ...] = ("degraded",)
    target: str = "image"

    def __post_init__(self) -> None:
        if isinstance(self.inputs, str):
            self.inputs = tuple(n.strip() for n in self.inputs.split(","))
        self.inputs = tuple(self.inputs)
        super().__post_init__()

    def validate(self) -> None:
        super().validate()
        image_tasks.check_io(self.task, self.inputs, self.target)
        if self.num_classes:
            raise UsageError(f"num_classes {self.num_classes}: a cond-ddpm model is conditioned on images, not classes")
        if self.in_channels != 1:
            raise UsageError(f"in_channels {self.in_channels}: a cond-ddpm model diffuses one target volume")

    @property
    def unet_in_channels(self) -> int:
        """Channels of the UNet's input: the noisy target and the condition volumes."""
        return self.in_channels + len(self.inputs)

    @property
    def divisor(self) -> int:
        """The edge of a volume or window must be a multiple of this (the UNet halves it levels − 1 times)."""
        return 2 ** (self.levels - 1)

    def to_dict(self) -> dict[str, Any]:
        return tuples_as_lists(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CondDDPMConfig":
        return from_dict(cls, d, "cond-ddpm model setting")


PRESETS: dict[str, dict[str, Any]] = {name: dict(fields, prediction_type="epsilon")
                                      for name, fields in ddpm_config.PRESETS.items()}
DEFAULT_PRESET = ddpm_config.DEFAULT_PRESET


def model_config(preset: str, size: int, task: str | None = None, inputs: Any = None, target: str | None = None,
                 **overrides: Any) -> CondDDPMConfig:
    """Preset ``preset`` at ``size``³ for ``task`` (default ``denoise``); ``inputs`` (names, or comma-separated)
    and ``target`` given explicitly override the task's; ``overrides`` are ``ddpm`` settings (``schedule``,
    ``num_train_timesteps``, ...). Values of None are ignored."""
    if preset not in PRESETS:
        raise UsageError(f"unknown cond-ddpm preset {preset!r} (choose from {', '.join(PRESETS)})")
    fields: dict[str, Any] = dict(PRESETS[preset], size=size, **image_tasks.io_fields(task, inputs, target))
    fields.update({k: v for k, v in overrides.items() if v is not None})
    return CondDDPMConfig.from_dict(fields)


@dataclass
class CondDDPMHParams:
    """AdamW ``lr``, ``betas``, ``weight_decay`` (the ``ddpm`` family's defaults); ``patch``: edge of the random
    cubic patches trained on (0: whole volumes; the same window cut from condition and target), also the
    sliding window's at inference; ``residual_target``: diffuse the correction target − first input instead
    of the target (SR3-style "predict the residual"; the first input is the target up to a degradation)."""

    lr: float = 2e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    patch: int = 0
    residual_target: bool = False

    def to_dict(self) -> dict[str, Any]:
        return tuples_as_lists(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CondDDPMHParams":
        hp = from_dict(cls, d, "cond-ddpm training setting")
        if not hp.lr > 0 or hp.weight_decay < 0 or not isinstance(hp.patch, int) or hp.patch < 0:
            raise UsageError(f"lr {hp.lr} must be > 0, weight_decay {hp.weight_decay} >= 0, patch {hp.patch!r} >= 0")
        if len(hp.betas) != 2 or not all(0 <= b < 1 for b in hp.betas):
            raise UsageError(f"betas {hp.betas}: need two values in [0, 1)")
        if not isinstance(hp.residual_target, bool):
            raise UsageError(f"residual_target {hp.residual_target!r}: true or false")
        return hp
