"""The ``stylegan2`` family's architecture (:class:`StyleGAN2Config`) and presets.

Feature-map widths follow StyleGAN2's configuration F (Karras et al. 2020 and the authors' code): a block at
resolution r has ``nf(r) = min(fmap_max, fmap_base // r)`` channels (``paper``: 32768 and 512, i.e. 512 channels
up to 64³, then halving: 256 at 128³, 128 at 256³), the same rule in G and D. z has ``latent_dim`` entries and w
``w_dim`` (paper: 512 and 512), the mapping network ``mapping_layers`` dense layers (paper: 8) with the learning
rate multiplied by ``mapping_lr_mul`` (paper: 0.01). Level k of the synthesis network works at 4·2^k voxels per
axis; level 0 is the learned 4³ constant, the last level ``levels`` the volume's size.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from medgen.core.errors import UsageError
from medgen.core.settings import from_dict

BASE = 4  # the synthesis network starts from a learned 4³ constant
MIN_SIZE, MAX_SIZE = 8, 512


@dataclass
class StyleGAN2Config:
    """``size``: edge S of the volumes (a power of two, 8-512); ``latent_dim``: length of z; ``w_dim``: length
    of w (the style code); ``mapping_layers``: dense layers of the mapping network; ``mapping_lr_mul``: their
    learning-rate multiplier; ``fmap_base``, ``fmap_max``: the width rule ``nf(r) = min(fmap_max, fmap_base // r)``
    (at least 1); ``mbstd_group``: group size of the minibatch standard deviation in D (paper: 4; 0: none)."""

    size: int = 128
    latent_dim: int = 512
    w_dim: int = 512
    mapping_layers: int = 8
    mapping_lr_mul: float = 0.01
    fmap_base: int = 32768
    fmap_max: int = 512
    mbstd_group: int = 4

    def __post_init__(self) -> None:
        s = self.size
        if not isinstance(s, int) or s < MIN_SIZE or s > MAX_SIZE or s & (s - 1):
            raise UsageError(f"size {s!r}: stylegan2 needs a power of two from {MIN_SIZE} to {MAX_SIZE}")
        for name in ("latent_dim", "w_dim", "mapping_layers", "fmap_base", "fmap_max"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise UsageError(f"{name} {value!r}: need a positive integer")
        if not isinstance(self.mapping_lr_mul, (int, float)) or not self.mapping_lr_mul > 0:
            raise UsageError(f"mapping_lr_mul {self.mapping_lr_mul!r}: need a positive number")
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

    @property
    def num_ws(self) -> int:
        """Number of w vectors the synthesis network reads: one per modulated convolution (one at 4³, two per
        level above) plus one for the last toRGB (each other toRGB shares the next level's first w, as in the
        authors' code)."""
        return 2 * self.levels + 2

    def resolution(self, level: int) -> int:
        return BASE * 2**level

    def channels(self, level: int) -> int:
        """nf(r) of the block at level ``level``."""
        return max(1, min(self.fmap_max, self.fmap_base // self.resolution(level)))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "StyleGAN2Config":
        return from_dict(cls, d, "stylegan2 model setting")


PRESETS: dict[str, dict[str, Any]] = {
    # StyleGAN2 config F's widths and codes (512 channels up to 64³, z and w of 512, 8 mapping layers), in 3D:
    # G 75.35M (2.10M of them the mapping network) and D 86.99M parameters at 128³ (G 69.52M, D 81.55M at 64³;
    # `medgen model-info`; D's dense layer from 512·4³ features alone has 16.8M).
    "paper": dict(latent_dim=512, w_dim=512, mapping_layers=8, fmap_base=32768, fmap_max=512),
    # A quarter of the widths (128 channels up to 64³), z and w of 128, 8 mapping layers: G 4.72M, D 5.44M at 128³.
    "small": dict(latent_dim=128, w_dim=128, mapping_layers=8, fmap_base=8192, fmap_max=128),
    # For tests and CPU training on 16³-32³ volumes in seconds: 16, 16, 16, 8 channels at 4³, 8³, 16³, 32³,
    # z and w of 32, 2 mapping layers; G 0.048M, D 0.057M at 32³.
    "tiny": dict(latent_dim=32, w_dim=32, mapping_layers=2, fmap_base=256, fmap_max=16),
}
DEFAULT_PRESET = "paper"


def model_config(preset: str, size: int, width: float | None = None, num_classes: int | None = None,
                 minibatch_std: int | None = None, **overrides: Any) -> StyleGAN2Config:
    """Preset ``preset`` at ``size``³ with ``overrides`` (None: not given). ``width`` multiplies ``fmap_base``
    and ``fmap_max``; ``minibatch_std`` (``medgen train --minibatch-std``) sets ``mbstd_group``; ``num_classes``
    other than 0 is refused (the family is unconditional)."""
    if preset not in PRESETS:
        raise UsageError(f"unknown stylegan2 preset {preset!r} (choose from {', '.join(PRESETS)})")
    if num_classes:
        raise UsageError("stylegan2 is unconditional: it takes no classes (--num-classes, --label-column)")
    fields = dict(PRESETS[preset], size=size)
    fields.update({k: v for k, v in overrides.items() if v is not None})
    if minibatch_std is not None:
        fields["mbstd_group"] = minibatch_std
    if width is not None:
        if not width > 0:
            raise UsageError(f"width {width!r}: need a positive multiplier")
        fields["fmap_base"] = max(1, round(fields["fmap_base"] * width))
        fields["fmap_max"] = max(1, round(fields["fmap_max"] * width))
    return StyleGAN2Config.from_dict(fields)
