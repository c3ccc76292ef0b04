"""α-GAN's architecture (:class:`AlphaGANConfig`) and its presets.

The generator and the image discriminator are the DCGAN-style 3D networks of :mod:`medgen.families.dcgan3d`
(Kwon et al.'s ``Model_alphaWGAN.py`` layout at 64³, the HA-GAN authors' ``Model_alphaWGAN_128.py`` at 128³):
G a linear map of z to a 4³ grid, then nearest ×2 upsampling + 3³ convolution per level with BatchNorm and ReLU,
tanh out; D stride-2 4³ convolutions down to 4³ and a 4³ convolution to one score, normalised per volume
(``d_norm``). The encoder (:mod:`.networks`) is the discriminator's layout with ``latent_dim`` outputs, as Kwon
et al.'s (``Discriminator(out_class=latent_dim)``), normalised by ``encoder_norm`` (Kwon et al.: batch). The
code discriminator is a multilayer perceptron of two hidden layers of ``code_units`` (Kwon et al.'s code 4096,
Rosca et al. 750) with LeakyReLU(0.2).

Presets (parameters at the sizes they are meant for; ``medgen model-info --family alpha-gan``):

* ``paper``: Kwon et al.'s networks, z of 1000. At 64³: G 37,416,512, D 11,049,665 and E 43,785,896
  parameters, Kwon et al.'s counts exactly; C 20,885,505 (theirs has 16,384 more, in its BatchNorm). At 128³
  the HA-GAN authors' α-WGAN baseline (``Model_alphaWGAN_128.py``): G 84,342,336, D 11,178,849 and
  E 43,915,080, their counts.
* ``small``: width ¼, z of 128, Rosca et al.'s 750-unit code discriminator (a CPU demo at 32³-64³).
* ``tiny``: width ⅛, z of 64, code discriminator of 128 units (tests and seconds-long CPU runs at 16³-32³).

Changed from Kwon et al., on purpose: D has a per-volume LayerNorm instead of BatchNorm (a WGAN-GP critic's
penalty is per volume, Gulrajani et al. 2017 §4, and one call scores real, reconstructed, generated and
interpolated volumes together), and the code discriminator has no BatchNorm (one call sees prior and encoder
codes together; their batch statistics would tell the two apart).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from medgen.core.errors import UsageError
from medgen.families import dcgan3d
from medgen.families.dcgan3d import ENCODER_NORMS, DCGANConfig

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(dcgan3d.BASE_PRESETS["tiny"], code_units=128),
    "small": dict(dcgan3d.BASE_PRESETS["small"], code_units=750),
    "paper": dict(dcgan3d.BASE_PRESETS["paper"], code_units=4096),
}
DEFAULT_PRESET = "paper"


@dataclass
class AlphaGANConfig(DCGANConfig):
    """The generator and discriminator shapes (:class:`medgen.families.dcgan3d.DCGANConfig`), the encoder's
    normalisation ``encoder_norm`` (batch, layer, instance or none) and the code discriminator's hidden width
    ``code_units``."""

    encoder_norm: str = "batch"
    code_units: int = 128

    def validate(self) -> None:
        super().validate()
        if self.encoder_norm not in ENCODER_NORMS:
            raise UsageError(f"encoder_norm {self.encoder_norm!r}: choose {', '.join(ENCODER_NORMS)}")
        if not isinstance(self.code_units, int) or self.code_units < 1:
            raise UsageError(f"code_units {self.code_units!r}: need a positive integer")


def model_config(preset: str, size: int, **overrides: Any) -> AlphaGANConfig:
    """Preset ``preset`` at ``size``³; overrides whose value is None are ignored (``num_classes`` is refused:
    the family is unconditional)."""
    return dcgan3d.model_config(AlphaGANConfig, PRESETS, "alpha-gan", preset, size, **overrides)
