"""The ``pix2pix`` family's architecture (:class:`Pix2PixConfig`: the generator, a ``unet`` config, and the
PatchGAN discriminator), presets and hyper-parameters (:class:`Pix2PixHParams`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medgen.core.errors import InputError, UsageError
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


# The feature network's stages the perceptual and style terms may compare (MedicalNet's ResNet-50 stages).
FEATURE_STAGES = ("layer1", "layer2", "layer3", "layer4")
DEFAULT_FEATURE_LAYERS = "layer1,layer2"
# The feature options with their defaults (off): left out of ``to_dict`` while all are at these values, so the
# ``config.yaml`` of a run without them is the one written before they existed (and such runs still resume).
FEATURE_DEFAULTS: dict[str, Any] = {"perceptual_weight": 0.0, "style_weight": 0.0, "feature_weights": None,
                                    "feature_layers": DEFAULT_FEATURE_LAYERS}


@dataclass
class Pix2PixHParams:
    """Adam learning rates and betas (Isola et al.: 2e-4, (0.5, 0.999)); ``l1_weight``: λ of the L1 term
    (100 in the paper); ``criterion``: the adversarial loss (MONAI ``PatchAdversarialLoss``: least_squares,
    bce or hinge); ``patch``: edge of the random training patches (0: whole volumes).

    MedGAN's feature terms (:mod:`medgen.families.pix2pix.perceptual`), off by default:
    ``perceptual_weight``, ``style_weight``: weights of the perceptual (feature L1) and style (Gram matrix L1)
    terms; ``feature_weights``: the MedicalNet ResNet-50 weight file they need (required when either weight
    is > 0; never downloaded); ``feature_layers``: the ResNet stages compared, comma-separated from
    layer1..layer4 (default layer1,layer2: 256 channels at 1/4 and 512 at 1/8 of the volume's edge).
    """

    lr_g: float = 2e-4
    lr_d: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    l1_weight: float = 100.0
    criterion: str = "least_squares"
    patch: int = 0
    perceptual_weight: float = 0.0
    style_weight: float = 0.0
    feature_weights: str | None = None
    feature_layers: str = DEFAULT_FEATURE_LAYERS

    @property
    def uses_features(self) -> bool:
        """True when the generator loss has a feature term (and the feature network is needed)."""
        return self.perceptual_weight > 0 or self.style_weight > 0

    @property
    def layers(self) -> tuple[str, ...]:
        return tuple(self.feature_layers.split(","))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        if all(d[k] == v for k, v in FEATURE_DEFAULTS.items()):
            for k in FEATURE_DEFAULTS:
                del d[k]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], check_files: bool = True) -> "Pix2PixHParams":
        """Validated settings; ``check_files``: the ``feature_weights`` file must exist when a feature term is
        on (off where only the trained generator is wanted, e.g. loading a run on another machine)."""
        hp = from_dict(cls, d, "pix2pix training setting")
        if not (hp.lr_g > 0 and hp.lr_d > 0) or hp.l1_weight < 0 or hp.criterion not in CRITERIA or hp.patch < 0:
            raise UsageError(f"pix2pix: lr_g, lr_d > 0, l1_weight ≥ 0, criterion one of {', '.join(CRITERIA)}, "
                             f"patch ≥ 0 (got {hp.lr_g}, {hp.lr_d}, {hp.l1_weight}, {hp.criterion!r}, {hp.patch})")
        _check_feature_options(hp, check_files)
        return hp


def _check_feature_options(hp: Pix2PixHParams, check_files: bool) -> None:
    """Validate and normalise (in place) the feature options: weights as floats, layers in stage order."""
    for name in ("perceptual_weight", "style_weight"):
        value = getattr(hp, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise UsageError(f"pix2pix: {name} must be a number ≥ 0 (got {value!r})")
        setattr(hp, name, float(value))
    layers = hp.feature_layers
    names = [str(n).strip() for n in (layers.split(",") if isinstance(layers, str) else layers or [])]
    if not names or any(n not in FEATURE_STAGES for n in names) or len(set(names)) != len(names):
        raise UsageError(f"pix2pix: feature_layers {layers!r}: distinct stages among {', '.join(FEATURE_STAGES)}, "
                         "comma-separated (e.g. layer1,layer2)")
    hp.feature_layers = ",".join(n for n in FEATURE_STAGES if n in names)
    if hp.feature_weights is not None and not isinstance(hp.feature_weights, str):
        raise UsageError(f"pix2pix: feature_weights must be a file path (got {hp.feature_weights!r})")
    if not hp.uses_features:
        if hp.feature_weights is not None or hp.feature_layers != DEFAULT_FEATURE_LAYERS:
            raise UsageError("pix2pix: feature_weights and feature_layers are only used with perceptual_weight "
                             "or style_weight > 0")
        return
    if not hp.feature_weights:
        on = " and ".join(n for n in ("perceptual_weight", "style_weight") if getattr(hp, n) > 0)
        raise UsageError(f"pix2pix: {on} > 0: the feature terms need MedicalNet ResNet-50 weights: "
                         "--hparam feature_weights=FILE (e.g. resnet_50_23dataset.pth; nothing is downloaded)")
    if check_files and not Path(hp.feature_weights).is_file():
        raise InputError(f"pix2pix: feature_weights {hp.feature_weights}: weight file not found")
