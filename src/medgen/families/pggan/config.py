"""The ``pggan`` family's architecture (:class:`PGGANConfig`) and presets.

Feature-map widths follow Karras et al. (2018, Table 2 and the authors' code): a block at resolution r has
``nf(r) = min(fmap_max, fmap_base // r)`` channels (``paper``: 16384 and 512, i.e. 512 channels up to 32³,
then halving: 256 at 64³, 128 at 128³, 64 at 256³), the same in G and D; the latent code has ``latent_dim``
entries (paper: 512). Level k of the growth works at 4·2^k voxels per axis; level 0 is 4³, the last level
``levels`` is the volume's size.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from medgen.core.errors import UsageError
from medgen.core.settings import from_dict

BASE = 4  # the growth starts at 4³
MIN_SIZE, MAX_SIZE = 8, 512


@dataclass
class PGGANConfig:
    """``size``: edge S of the volumes (a power of two, 8-512); ``latent_dim``: length of z; ``fmap_base``,
    ``fmap_max``: the width rule ``nf(r) = min(fmap_max, fmap_base // r)`` (at least 1); ``mbstd_group``:
    group size of the minibatch standard deviation in D (paper: 4; 0: none)."""

    size: int = 128
    latent_dim: int = 512
    fmap_base: int = 16384
    fmap_max: int = 512
    mbstd_group: int = 4

    def __post_init__(self) -> None:
        s = self.size
        if not isinstance(s, int) or s < MIN_SIZE or s > MAX_SIZE or s & (s - 1):
            raise UsageError(f"size {s!r}: pggan needs a power of two from {MIN_SIZE} to {MAX_SIZE}")
        for name in ("latent_dim", "fmap_base", "fmap_max"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise UsageError(f"{name} {value!r}: need a positive integer")
        if not isinstance(self.mbstd_group, int) or self.mbstd_group < 0:
            raise UsageError(f"mbstd_group {self.mbstd_group!r}: need an integer >= 0")

    @property
    def num_classes(self) -> int:
        """0: the family is unconditional."""
        return 0

    @property
    def levels(self) -> int:
        """Number of doublings from 4³ to the volume's size (the last level's index)."""
        return (self.size // BASE).bit_length() - 1

    def resolution(self, level: int) -> int:
        return BASE * 2**level

    def channels(self, level: int) -> int:
        """nf(r) of the block at level ``level``."""
        return max(1, min(self.fmap_max, self.fmap_base // self.resolution(level)))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PGGANConfig":
        return from_dict(cls, d, "pggan model setting")


PRESETS: dict[str, dict[str, Any]] = {
    # Karras et al.'s widths and latent size (512 channels up to 32³), in 3D: G 73.00M and D 72.98M parameters
    # at 128³ (71.67M and 71.65M at 64³; the 3³ convolutions of 512 channels dominate).
    "paper": dict(latent_dim=512, fmap_base=16384, fmap_max=512),
    # A quarter of the widths (128 channels up to 32³): G 4.57M, D 4.57M at 128³.
    "small": dict(latent_dim=128, fmap_base=4096, fmap_max=128),
    # For tests and CPU training on 16³-32³ volumes in minutes: 32, 32, 16, 8 channels at 4³, 8³, 16³, 32³;
    # G 0.177M, D 0.176M at 32³.
    "tiny": dict(latent_dim=32, fmap_base=256, fmap_max=32),
}
DEFAULT_PRESET = "paper"


def model_config(preset: str, size: int, width: float | None = None, num_classes: int | None = None,
                 **overrides: Any) -> PGGANConfig:
    """Preset ``preset`` at ``size``³ with ``overrides`` (None: not given). ``width`` multiplies ``fmap_base``
    and ``fmap_max``; ``num_classes`` other than 0 is refused (the family is unconditional)."""
    if preset not in PRESETS:
        raise UsageError(f"unknown pggan preset {preset!r} (choose from {', '.join(PRESETS)})")
    if num_classes:
        raise UsageError("pggan is unconditional: it takes no classes (--num-classes, --label-column)")
    fields = dict(PRESETS[preset], size=size)
    fields.update({k: v for k, v in overrides.items() if v is not None})
    if width is not None:
        if not width > 0:
            raise UsageError(f"width {width!r}: need a positive multiplier")
        fields["fmap_base"] = max(1, round(fields["fmap_base"] * width))
        fields["fmap_max"] = max(1, round(fields["fmap_max"] * width))
    return PGGANConfig.from_dict(fields)
