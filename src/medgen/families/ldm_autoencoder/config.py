"""The KL autoencoder's architecture (:class:`AutoencoderConfig`) and its presets.

MONAI's 3D ``AutoencoderKL``: one resolution level per entry of ``channels`` (halved between
levels), so three levels compress a volume S³ into ``latent_channels`` × (S/4)³, the
factor 4 per axis of MONAI's and MAISI's latent-diffusion models. ``num_res_blocks``
residual blocks per level, GroupNorm with ``norm_groups`` groups.

No self-attention, in the encoder or the decoder (MONAI's ``attention_levels`` all False,
``with_*_nonlocal_attn`` False): every decoder output voxel then depends on a bounded
neighbourhood of latents, which is what lets ``medgen generate`` decode a large volume in
depth chunks with a result equal to whole-volume decoding
(:mod:`medgen.families.ldm_autoencoder.decode`).

The patch discriminator (MONAI ``PatchDiscriminator``, instance norm) has ``disc_layers``
strided layers of ``disc_channels`` × 2^k channels.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

from medgen.core.errors import UsageError
from medgen.core.settings import from_dict

LEVELS = 3  # the volume is halved twice: latents are (S/4)³


@dataclass
class AutoencoderConfig:
    """Shapes of the KL autoencoder and its patch discriminator (module docstring)."""

    size: int = 32
    channels: list[int] = field(default_factory=lambda: [16, 32, 32])
    latent_channels: int = 3
    num_res_blocks: int = 1
    norm_groups: int = 8
    disc_channels: int = 16
    disc_layers: int = 3
    num_classes: ClassVar[int] = 0  # not class-conditional (what generic code asks of every family's config)

    def __post_init__(self) -> None:
        self.channels = [int(c) for c in self.channels]
        self.validate()

    @property
    def factor(self) -> int:
        """Down-sampling factor per axis (4)."""
        return 2 ** (len(self.channels) - 1)

    @property
    def latent_size(self) -> int:
        return self.size // self.factor

    @property
    def latent_shape(self) -> tuple[int, int, int, int]:
        """[C, s, s, s] of one volume's latent."""
        s = self.latent_size
        return (self.latent_channels, s, s, s)

    def validate(self) -> None:
        """UsageError (one line) for shapes MONAI's networks cannot build."""
        if len(self.channels) != LEVELS:
            raise UsageError(f"channels {self.channels}: need {LEVELS} levels (compression by 4 per axis)")
        s, k = self.size, self.factor
        if not isinstance(s, int) or s < 2 * k or s % k:
            raise UsageError(f"size {s!r}: must be at least {2 * k} and divisible by {k} (the latent is size/{k})")
        if any(c % self.norm_groups for c in self.channels):
            raise UsageError(f"channels {self.channels}: each must be divisible by norm_groups {self.norm_groups}")
        if self.latent_channels < 1 or self.num_res_blocks < 1 or self.disc_channels < 1 or self.disc_layers < 1:
            raise UsageError("latent_channels, num_res_blocks, disc_channels and disc_layers must be at least 1")
        if s // 2 ** self.disc_layers < 4:  # the patch discriminator's last normalised layer needs > 1 voxel
            raise UsageError(f"disc_layers {self.disc_layers}: too many for {s}³ volumes (at most "
                             f"{max(0, (s // 4).bit_length() - 1)})")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AutoencoderConfig":
        return from_dict(cls, d, "autoencoder model setting")


PRESETS: dict[str, dict[str, Any]] = {
    # CPU training on 32³-64³ phantoms in minutes (0.2M parameters).
    "tiny": dict(channels=[16, 32, 32], num_res_blocks=1, norm_groups=8, disc_channels=16, disc_layers=3),
    # 1.3M parameters.
    "small": dict(channels=[32, 64, 64], num_res_blocks=1, norm_groups=16, disc_channels=32, disc_layers=3),
    # The widths of MONAI's 3D latent-diffusion tutorial, without its attention (see the module docstring).
    "base": dict(channels=[64, 128, 128], num_res_blocks=2, norm_groups=32, disc_channels=64, disc_layers=3),
}
DEFAULT_PRESET = "base"


def model_config(preset: str, size: int, **overrides: Any) -> AutoencoderConfig:
    """Preset ``preset`` at ``size``³; overrides whose value is None are ignored."""
    if preset not in PRESETS:
        raise UsageError(f"unknown autoencoder preset {preset!r} (choose from {', '.join(PRESETS)})")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if overrides.pop("num_classes", 0):
        raise UsageError("an autoencoder is not class-conditional (give the classes to --family ldm)")
    fields = dict(PRESETS[preset], size=size)
    fields.update(overrides)
    return AutoencoderConfig.from_dict(fields)
