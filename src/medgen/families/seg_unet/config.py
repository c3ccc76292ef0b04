"""The ``seg-unet`` family's architecture (:class:`SegUNetConfig`), presets and hyper-parameters (:class:`SegUNetHParams`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from medgen.core.errors import UsageError
from medgen.core.settings import from_dict
from medgen.families.unet.config import PRESETS as UNET_PRESETS
from medgen.families.unet.config import check_shape, strides_product


@dataclass
class SegUNetConfig:
    """A MONAI residual ``UNet`` mapping the ``inputs`` volumes (channels, in order) to ``num_classes`` class
    scores per voxel, trained against the label-map volume ``label``.

    num_classes: classes 0..K-1 of the label map (≥ 2; 0 is background).
    channels, strides, num_res_units: MONAI ``UNet``'s; the volume (or patch) edge must be a multiple of
        the product of the strides.
    """

    size: int = 32
    num_classes: int = 2
    inputs: tuple[str, ...] = ("image",)
    label: str = "tissue"
    channels: tuple[int, ...] = (16, 32, 64, 128)
    strides: tuple[int, ...] = (2, 2, 2)
    num_res_units: int = 2

    def __post_init__(self) -> None:
        if self.num_classes < 2:
            raise UsageError(f"num_classes {self.num_classes}: a segmentation needs at least 2 classes (background + one)")
        if not self.inputs or len(set(self.inputs)) != len(self.inputs) or not all(isinstance(n, str) and n for n in self.inputs):
            raise UsageError(f"inputs {list(self.inputs)}: need one or more distinct volume names")
        if not self.label or self.label in self.inputs:
            raise UsageError(f"label volume {self.label!r}: needs a name that is not an input")
        check_shape(tuple(self.channels), tuple(self.strides), self.size)

    @property
    def divisor(self) -> int:
        return strides_product(tuple(self.strides))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SegUNetConfig":
        return from_dict(cls, d, "seg-unet model setting")


PRESETS: dict[str, dict[str, Any]] = UNET_PRESETS  # the same MONAI UNet widths as the image-to-image unet
DEFAULT_PRESET = "small"


def model_config(preset: str, size: int, num_classes: int | None = None, inputs: Any = None, target: str | None = None,
                 task: str | None = None, **overrides: Any) -> SegUNetConfig:
    """Preset ``preset`` at ``size``³ with ``num_classes`` classes (default 2; ``medgen train`` reads it from the
    label volume's classes in ``preprocess.json`` when not given, see :func:`options_from_data`); ``inputs``
    (a sequence or comma-separated names, default ``image``) and ``target`` (the label volume, default
    ``tissue``). Overrides whose value is None are ignored."""
    if preset not in PRESETS:
        raise UsageError(f"unknown seg-unet preset {preset!r} (choose from {', '.join(PRESETS)})")
    if task is not None:
        raise UsageError(f"--task {task}: seg-unet has no image-to-image task; --target names the label volume")
    fields: dict[str, Any] = dict(PRESETS[preset], size=size)
    if num_classes is not None:
        fields["num_classes"] = int(num_classes)
    if inputs is not None:
        fields["inputs"] = tuple(n.strip() for n in inputs.split(",")) if isinstance(inputs, str) else tuple(inputs)
    if target is not None:
        fields["label"] = target
    fields.update({k: v for k, v in overrides.items() if v is not None})
    return SegUNetConfig.from_dict(fields)


def options_from_data(info: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with ``num_classes`` read from the data set's ``preprocess.json`` (``info``) when not given:
    one more than the largest class its label volume (``target``, default ``tissue``) records."""
    if options.get("num_classes") is not None:
        return options
    name = options.get("target") or SegUNetConfig.label
    from medgen.data.dataset import label_class_count

    k = label_class_count(info, name, f"the data set has no label volume {name!r} (name one with --target)")
    return {**options, "num_classes": k}


@dataclass
class SegUNetHParams:
    """Adam ``lr``; ``patch``: edge of the random cubic patches trained on (0: whole volumes), also the
    sliding window's at inference."""

    lr: float = 1e-3
    patch: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SegUNetHParams":
        hp = from_dict(cls, d, "seg-unet training setting")
        if not hp.lr > 0 or hp.patch < 0:
            raise UsageError(f"lr {hp.lr} must be > 0, patch {hp.patch} >= 0")
        return hp
