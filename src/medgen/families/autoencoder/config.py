"""The autoencoder's architecture (:class:`AEConfig`), its presets and its recipe ``vae``.

Both models are MONAI's (:mod:`.networks`), with stride-2 levels of 3³ convolutions (``channels``: the
encoder's widths, one entry per level; the decoder mirrors them with transposed convolutions),
``num_res_units`` MONAI residual units per level (0: one convolution), ``norm`` after every hidden
convolution and PReLU activations (MONAI's defaults). The deepest feature map has edge
``size / 2^levels``; :func:`model_config` chooses the number of levels that brings a volume down
to the preset's ``bottleneck`` edge (4: 16³ volumes get 2 levels, 32³ 3, 64³ 4, 128³ 5).

The two kinds of bottleneck Baur et al. 2021 ("Autoencoders for unsupervised anomaly segmentation
in brain MR images: a comparative study", MedIA) compare follow ``variational``:

* ``variational: false`` — a plain autoencoder (MONAI ``AutoEncoder``) with a *spatial* bottleneck:
  one more convolution (MONAI's intermediate block) maps the deepest map to ``latent_channels``
  channels, so the code is ``latent_channels × (S/2^levels)³`` values (``encode`` flattens it);
  trained on the reconstruction error alone.
* ``variational: true`` — a VAE (MONAI ``VarAutoEncoder``) with a *dense* bottleneck: the deepest map
  is flattened into linear heads μ and log σ² of ``latent_size`` values, and a linear layer maps a
  latent back; trained on the reconstruction error plus the KL term (a β-VAE's weight,
  :mod:`.train`). Its linear layers hold most of its parameters (about 3 × ``latent_size`` × the
  deepest map's values), which is why the deepest map is small.

Presets (parameter counts of ``medgen model-info --family autoencoder``):

* ``tiny``: widths 8 → 32, no residual units, 8 latent channels / 64 latent values (tests and CPU
  training at 16³-32³ in minutes; at 32³: AE 32k, VAE 0.43M parameters).
* ``small``: widths 16 → 64, one residual unit per level, 16 latent channels / 128 latent values
  (CPU demos at 32³-64³; at 64³: AE 0.63M, VAE 2.3M).
* ``base``: widths 32 → 256 (32, 64, 128, 256, then 256 again at 128³), two residual units per level,
  16 latent channels / 512 latent values: a realistic 3D anomaly-detection autoencoder for 64³-128³
  volumes (at 64³: AE 5.7M, VAE 31.6M; at 128³: AE 13.7M, VAE 40.5M). The AE's code is 16 × 4³ =
  1,024 values at any size, the VAE's 512. A spatial code of finer resolution is ``bottleneck=8``
  (``model_config("base", 128, bottleneck=8)``: 16 × 8³ values); the VAE's dense heads grow eightfold
  with it.

The recipe ``vae`` (``medgen train --family autoencoder --recipe vae``) sets ``variational: true``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

from medgen.core.errors import UsageError
from medgen.core.settings import from_dict

NORMS = ("instance", "batch")

# Preset-level settings that choose the config's fields (model_config): ``base_channels`` (width of the
# first level), doubled at every level up to ``max_channels``; ``bottleneck``: the edge of the deepest map.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(base_channels=8, max_channels=32, bottleneck=4, num_res_units=0, latent_channels=8, latent_size=64),
    "small": dict(base_channels=16, max_channels=64, bottleneck=4, num_res_units=1, latent_channels=16,
                  latent_size=128),
    "base": dict(base_channels=32, max_channels=256, bottleneck=4, num_res_units=2, latent_channels=16,
                 latent_size=512),
}
DEFAULT_PRESET = "base"
RECIPES: dict[str, dict[str, dict[str, Any]]] = {"vae": {"model": {"variational": True}, "hparams": {}}}


@dataclass
class AEConfig:
    """The autoencoder's shapes (module docstring): ``size`` (volume edge), ``variational`` (VAE with a dense
    latent of ``latent_size`` values, else a plain AE with a spatial bottleneck of ``latent_channels``),
    ``channels`` (encoder widths, one stride-2 level each), ``num_res_units`` and ``norm``."""

    size: int = 32
    variational: bool = False
    channels: list[int] = field(default_factory=lambda: [8, 16, 32])
    latent_channels: int = 8
    latent_size: int = 64
    num_res_units: int = 0
    norm: str = "instance"
    num_classes: ClassVar[int] = 0  # not class-conditional (what generic code asks of every family's config)

    def __post_init__(self) -> None:
        if not isinstance(self.channels, (list, tuple)):
            raise UsageError(f"channels {self.channels!r}: need a list of widths, one per level")
        self.channels = [int(c) for c in self.channels]
        self.validate()

    @property
    def levels(self) -> int:
        return len(self.channels)

    @property
    def bottleneck_size(self) -> int:
        """Edge of the deepest feature map: size / 2^levels."""
        return self.size // 2**self.levels

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """Shape of one volume's code: (latent_size,) for the VAE, (latent_channels, s, s, s) for the AE."""
        if self.variational:
            return (self.latent_size,)
        s = self.bottleneck_size
        return (self.latent_channels, s, s, s)

    @property
    def latent_dim(self) -> int:
        """Length of one volume's code as ``encode`` returns it (the VAE's μ; the AE's flattened bottleneck)."""
        n = 1
        for d in self.latent_shape:
            n *= d
        return n

    def validate(self) -> None:
        """UsageError (one line) for shapes the networks cannot have."""
        if not isinstance(self.variational, bool):
            raise UsageError(f"variational {self.variational!r}: need true or false")
        if self.norm not in NORMS:
            raise UsageError(f"norm {self.norm!r}: choose {' or '.join(NORMS)}")
        if len(self.channels) < 2 or any(c < 1 for c in self.channels):
            raise UsageError(f"channels {self.channels}: need at least two levels, each of at least one channel")
        if self.latent_channels < 1 or self.latent_size < 1 or self.num_res_units < 0:
            raise UsageError("latent_channels and latent_size must be at least 1, num_res_units at least 0")
        s, k = self.size, 2**self.levels
        if not isinstance(s, int) or s % k or s // k < 2:
            # every level halves the volume exactly (the decoder doubles it back); a 1-voxel map cannot be
            # normalised per instance
            raise UsageError(f"size {s!r} with {self.levels} levels: must be divisible by {k} and at least {2 * k}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AEConfig":
        return from_dict(cls, d, "autoencoder model setting")


def level_count(size: int, bottleneck: int) -> int:
    """The number of stride-2 levels that halve ``size`` (exactly) down to an edge of at least ``bottleneck``."""
    levels = 0
    while size % 2 ** (levels + 1) == 0 and size // 2 ** (levels + 1) >= bottleneck:
        levels += 1
    return levels


def model_config(preset: str, size: int, **overrides: Any) -> AEConfig:
    """Preset ``preset`` at ``size``³; overrides whose value is None are ignored.

    Besides the fields of :class:`AEConfig`: ``bottleneck`` (edge of the deepest map, which sets the number of
    levels), ``base_channels``/``max_channels``, ``width`` (a multiplier of every width) and ``latent_dim`` (the
    VAE's ``latent_size``; a plain AE's code length follows from ``latent_channels`` and the bottleneck).
    """
    if preset not in PRESETS:
        raise UsageError(f"unknown autoencoder preset {preset!r} (choose from {', '.join(PRESETS)})")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if overrides.pop("num_classes", 0):
        raise UsageError("the autoencoder is not class-conditional: it learns one (normal) population")
    settings = dict(PRESETS[preset])
    settings.update({k: overrides.pop(k) for k in ("base_channels", "max_channels", "bottleneck") if k in overrides})
    width = float(overrides.pop("width", 1.0))
    if width <= 0:
        raise UsageError(f"width {width}: need > 0")
    variational = bool(overrides.get("variational", False))
    if "latent_dim" in overrides:
        latent_dim = int(overrides.pop("latent_dim"))
        if not variational:
            raise UsageError(f"latent_dim {latent_dim}: the plain autoencoder's code is latent_channels × (its "
                             "bottleneck)³ values; set latent_channels, or train the VAE (--recipe vae)")
        overrides["latent_size"] = latent_dim
    if "channels" not in overrides:
        levels = level_count(int(size), int(settings["bottleneck"]))
        base, top = settings["base_channels"], settings["max_channels"]
        overrides["channels"] = [max(1, round(min(base * 2**i, top) * width)) for i in range(levels)]
    fields = {k: settings[k] for k in ("num_res_units", "latent_channels", "latent_size")}
    fields.update(size=size, **overrides)
    return AEConfig.from_dict(fields)
