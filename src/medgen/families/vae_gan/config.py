"""VAE-GAN's architecture (:class:`VAEGANConfig`) and its presets.

The generator (decoder) and the discriminator are the DCGAN-style 3D networks of
:mod:`medgen.families.dcgan3d`, as in ``wgan-gp``; the encoder (:mod:`.networks`) has the
discriminator's trunk (stride-2 4³ convolutions down to 4³, normalised by ``encoder_norm``),
one more stride-2 convolution to 2³, and two heads, μ and log σ², each a linear layer (with
``encoder_hidden`` > 0: a hidden layer of that many units and a ReLU first).

Presets:

* ``paper``: z of 1000, published widths (:mod:`medgen.families.wgan_gp.config` lists the
  generator's and discriminator's), and the encoder of the HA-GAN authors' 128³ VAE-GAN: convolutions
  1 → 32 → 64 → 128 → 256 → 512 (to 4³) → 512 (to 2³), BatchNorm after all but the first,
  flattened to 4096 values, heads 4096 → 2048 → 1000. Assumed or changed: the heads'
  hidden layer has no BatchNorm (their code has one, which fails in training on one volume per
  process, common at 128³); the extra convolution to 2³ is used at every size (Kwon et al.'s
  64³ encoder flattens the 4³ map: heads 8× larger, 138M parameters); the decoder is the
  ``wgan-gp`` generator (the authors' 128³ VAE-GAN decoder starts from 2³ with at most 512
  channels); the discriminator has LayerNorm, not BatchNorm (its features are the
  reconstruction target, so a volume's must not depend on its batch).
* ``small``: width ¼, z of 128, heads with a hidden layer of 256 (CPU demo at 32³-64³).
* ``tiny``: width ⅛, z of 64, linear heads (tests at 16³-32³).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from medgen.core.errors import UsageError
from medgen.families import dcgan3d
from medgen.families.dcgan3d import ENCODER_NORMS, DCGANConfig

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(dcgan3d.BASE_PRESETS["tiny"], encoder_hidden=0),
    "small": dict(dcgan3d.BASE_PRESETS["small"], encoder_hidden=256),
    "paper": dict(dcgan3d.BASE_PRESETS["paper"], encoder_hidden=2048),
}
DEFAULT_PRESET = "paper"


@dataclass
class VAEGANConfig(DCGANConfig):
    """The generator and discriminator shapes (:class:`medgen.families.dcgan3d.DCGANConfig`) and the encoder's:
    ``encoder_norm`` (batch, layer, instance or none) and ``encoder_hidden`` (units of the heads' hidden layer;
    0: linear heads)."""

    encoder_norm: str = "batch"
    encoder_hidden: int = 0

    def validate(self) -> None:
        super().validate()
        if self.encoder_norm not in ENCODER_NORMS:
            raise UsageError(f"encoder_norm {self.encoder_norm!r}: choose {', '.join(ENCODER_NORMS)}")
        if not isinstance(self.encoder_hidden, int) or self.encoder_hidden < 0:
            raise UsageError(f"encoder_hidden {self.encoder_hidden!r}: need an integer >= 0")


def model_config(preset: str, size: int, **overrides: Any) -> VAEGANConfig:
    """Preset ``preset`` at ``size``³; overrides whose value is None are ignored."""
    return dcgan3d.model_config(VAEGANConfig, PRESETS, "VAE-GAN", preset, size, **overrides)
