"""The ``pix2pix`` family's architecture (:class:`Pix2PixConfig`: the generator, a ``unet`` config, and the
PatchGAN discriminator), presets and hyper-parameters (:class:`Pix2PixHParams`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from medgen.core.errors import UsageError
from medgen.core.settings import from_dict
from medgen.families.unet import config as unet_config
from medgen.families.unet.config import UNetConfig

CRITERIA = ("least_squares", "bce", "hinge")


@dataclass
class Pix2PixConfig:
    """``generator``: the image-to-image UNet (task, inputs, target, residual, widths); ``d_channels``,
    ``d_layers``: MONAI ``PatchDiscriminator``'s first width and number of strided layers (its receptive
    field, the size of the patches it judges: 3 layers see about 34³ voxels)."""

    generator: UNetConfig = field(default_factory=UNetConfig)
    d_channels: int = 32
    d_layers: int = 3

    def __post_init__(self) -> None:
        if isinstance(self.generator, dict):
            self.generator = UNetConfig.from_dict(self.generator)
        if self.d_channels < 1 or self.d_layers < 1:
            raise UsageError(f"d_channels {self.d_channels} and d_layers {self.d_layers}: need ≥ 1")

    @property
    def size(self) -> int:
        return self.generator.size

    def to_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.to_dict(), "d_channels": self.d_channels, "d_layers": self.d_layers}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Pix2PixConfig":
        return from_dict(cls, d, "pix2pix model setting")


PRESETS: dict[str, dict[str, Any]] = {
    "paper": dict(d_channels=64, d_layers=3),
    "small": dict(d_channels=32, d_layers=3),
    "tiny": dict(d_channels=8, d_layers=2),
}
DEFAULT_PRESET = "small"


def model_config(preset: str, size: int, d_channels: int | None = None, d_layers: int | None = None,
                 **generator: Any) -> Pix2PixConfig:
    """Preset ``preset`` at ``size``³; ``generator`` options (``task``, ``inputs``, ``target``, ``residual``, ...)
    are those of :func:`medgen.families.unet.config.model_config` for the same preset."""
    if preset not in PRESETS:
        raise UsageError(f"unknown pix2pix preset {preset!r} (choose from {', '.join(PRESETS)})")
    fields = dict(PRESETS[preset])
    fields.update({k: v for k, v in (("d_channels", d_channels), ("d_layers", d_layers)) if v is not None})
    return Pix2PixConfig(generator=unet_config.model_config(preset, size, **generator), **fields)


@dataclass
class Pix2PixHParams:
    """Adam learning rates and betas (Isola et al.: 2e-4, (0.5, 0.999)); ``l1_weight``: λ of the L1 term
    (100 in the paper); ``criterion``: the adversarial loss (MONAI ``PatchAdversarialLoss``: least_squares,
    bce or hinge); ``patch``: edge of the random training patches (0: whole volumes)."""

    lr_g: float = 2e-4
    lr_d: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    l1_weight: float = 100.0
    criterion: str = "least_squares"
    patch: int = 0

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Pix2PixHParams":
        hp = from_dict(cls, d, "pix2pix training setting")
        if not (hp.lr_g > 0 and hp.lr_d > 0) or hp.l1_weight < 0 or hp.criterion not in CRITERIA or hp.patch < 0:
            raise UsageError(f"pix2pix: lr_g, lr_d > 0, l1_weight ≥ 0, criterion one of {', '.join(CRITERIA)}, "
                             f"patch ≥ 0 (got {hp.lr_g}, {hp.lr_d}, {hp.l1_weight}, {hp.criterion!r}, {hp.patch})")
        return hp
