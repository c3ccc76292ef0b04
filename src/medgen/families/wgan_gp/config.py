"""WGAN-GP's architecture (:class:`WGANGPConfig`) and its presets.

The generator and critic are the DCGAN-style 3D networks of :mod:`medgen.families.dcgan3d`;
the number of blocks follows from the size (log2(S/4) up- and downsampling steps), so any
power of two from 16 to 512 works.

Presets (parameters at the sizes they are meant for; ``medgen model-info --family wgan-gp``):

* ``paper``: the 3D baseline as published. At 64³ Kwon et al.'s networks: z of 1000, the
  generator 512·4³ → 256 → 128 → 64 → 1 channels (37.42M parameters; Kwon et al.'s linear
  layer also has 32,768 biases, which the BatchNorm after it cancels), the critic 1 → 64 →
  128 → 256 → 512 channels down to 4³ and a 4³ convolution to one score (11.05M, Kwon et
  al.'s count). At 128³ the HA-GAN authors' 128³ WGAN generator (1024·4³ → 512 → … → 64 →
  1, 84.34M, their count) and the widths of their 128³ VAE-GAN discriminator (1 → 32 → … →
  512, 11.18M, their count; their 128³ WGAN critic's last two convolutions are in-plane
  only). Assumed, as neither paper gives it: the critic's
  per-volume LayerNorm (their code has BatchNorm, see the package docstring), nearest-neighbour
  upsampling + 3³ convolutions (their code; DCGAN's transposed convolutions are
  ``upsample=transposed``) and, below 64³ and beyond 128³, the widths continued by the same rule.
* ``small``: width ¼, z of 128, a CPU demo at 32³-64³ (64³: generator 1.34M, critic 0.70M).
* ``tiny``: width ⅛, z of 64, for tests and seconds-long CPU runs at 16³-32³ (32³:
  generator 0.15M, critic 0.17M).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from medgen.families import dcgan3d
from medgen.families.dcgan3d import DCGANConfig

PRESETS: dict[str, dict[str, Any]] = {name: dict(p) for name, p in dcgan3d.BASE_PRESETS.items()}
DEFAULT_PRESET = "paper"


@dataclass
class WGANGPConfig(DCGANConfig):
    """The generator and critic shapes (:class:`medgen.families.dcgan3d.DCGANConfig`)."""


def model_config(preset: str, size: int, **overrides: Any) -> WGANGPConfig:
    """Preset ``preset`` at ``size``³; overrides whose value is None are ignored."""
    return dcgan3d.model_config(WGANGPConfig, PRESETS, "WGAN-GP", preset, size, **overrides)
