"""The ``unet`` family's architecture (:class:`UNetConfig`), presets and hyper-parameters (:class:`UNetHParams`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from medgen.core.errors import UsageError
from medgen.core.settings import from_dict
from medgen.families import image_tasks

LOSSES = ("l1", "l2")


def strides_product(strides: tuple[int, ...]) -> int:
    """The factor a MONAI ``UNet`` with these strides downsamples by: volume and window edges must be multiples."""
    d = 1
    for s in strides:
        d *= s
    return d


def check_shape(channels: tuple[int, ...], strides: tuple[int, ...], size: int) -> None:
    """UsageError (one line) unless a MONAI ``UNet`` of these widths and strides can take ``size``³ volumes."""
    if len(channels) != len(strides) + 1 or min(channels) < 1 or min(strides) < 1:
        raise UsageError(f"channels {channels} and strides {strides}: need one more channel count than strides")
    if size % strides_product(strides):
        raise UsageError(f"size {size}: a multiple of {strides_product(strides)} (the product of the strides)")


@dataclass
class UNetConfig:
    """A MONAI residual ``UNet`` mapping the ``inputs`` volumes (channels, in order) to ``target``.

    task: the image-to-image task these defaults came from (:mod:`medgen.families.image_tasks`).
    residual: the network predicts target − first input (the input is the target up to a degradation).
    keep_known: the output is the first input wherever the ``mask`` input is 0 (inpainting, outpainting).
    channels, strides, num_res_units: MONAI ``UNet``'s; the volume (or patch) edge must be a multiple of
        the product of the strides.
    """

    size: int = 32
    task: str = "denoise"
    inputs: tuple[str, ...] = ("degraded",)
    target: str = "image"
    residual: bool = True
    keep_known: bool = False
    channels: tuple[int, ...] = (16, 32, 64, 128)
    strides: tuple[int, ...] = (2, 2, 2)
    num_res_units: int = 2

    def __post_init__(self) -> None:
        image_tasks.check_io(self.task, tuple(self.inputs), self.target)
        if self.keep_known and "mask" not in self.inputs:
            raise UsageError(f"keep_known needs a 'mask' input volume (inputs: {', '.join(self.inputs)})")
        check_shape(tuple(self.channels), tuple(self.strides), self.size)

    @property
    def divisor(self) -> int:
        return strides_product(tuple(self.strides))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "UNetConfig":
        return from_dict(cls, d, "unet model setting")


PRESETS: dict[str, dict[str, Any]] = {
    "paper": dict(channels=(32, 64, 128, 256), strides=(2, 2, 2), num_res_units=2),
    "small": dict(channels=(16, 32, 64, 128), strides=(2, 2, 2), num_res_units=2),
    "tiny": dict(channels=(8, 16, 32), strides=(2, 2), num_res_units=1),
}
DEFAULT_PRESET = "small"


def model_config(preset: str, size: int, task: str | None = None, inputs: Any = None, target: str | None = None,
                 residual: bool | None = None, keep_known: bool | None = None, **overrides: Any) -> UNetConfig:
    """Preset ``preset`` at ``size``³ for ``task`` (default ``denoise``); ``inputs``/``target``/``residual``/
    ``keep_known`` given explicitly override the task's (``keep_known`` only when ``mask`` is an input).
    Overrides whose value is None are ignored."""
    if preset not in PRESETS:
        raise UsageError(f"unknown unet preset {preset!r} (choose from {', '.join(PRESETS)})")
    io = image_tasks.io_fields(task, inputs, target)
    spec = image_tasks.get(io["task"])
    fields: dict[str, Any] = dict(PRESETS[preset], size=size, residual=spec.residual,
                                  keep_known=spec.keep_known and "mask" in io["inputs"], **io)
    if residual is not None:
        fields["residual"] = residual
    if keep_known is not None:
        fields["keep_known"] = keep_known
    fields.update({k: v for k, v in overrides.items() if v is not None})
    return UNetConfig.from_dict(fields)


@dataclass
class UNetHParams:
    """Adam ``lr``; ``loss``: ``l1`` or ``l2`` between output and target; ``patch``: edge of the random cubic
    patches trained on (0: whole volumes), also the sliding window's at inference."""

    lr: float = 1e-3
    loss: str = "l1"
    patch: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "UNetHParams":
        hp = from_dict(cls, d, "unet training setting")
        if not hp.lr > 0 or hp.loss not in LOSSES or hp.patch < 0:
            raise UsageError(f"lr {hp.lr} must be > 0, loss one of {', '.join(LOSSES)}, patch {hp.patch} >= 0")
        return hp
