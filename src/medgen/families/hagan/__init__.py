"""HA-GAN (Hierarchical Amortized GAN, Sun et al., IEEE JBHI 2022).

Blocks, named as in the paper:

========  =========================  =====================================
symbol    class                      module
========  =========================  =====================================
G^A       CommonBlock                :mod:`.generator`
G^L       LowResBlock                :mod:`.generator`
G^H       HighResBlock               :mod:`.generator`
S^H       SubVolumeSelector          :mod:`.generator`
D^H       HighResDiscriminator       :mod:`.discriminator`
D^L       LowResDiscriminator        :mod:`.discriminator`
E^H       HighResEncoder             :mod:`.encoder`
E^G       GroundEncoder              :mod:`.encoder`
========  =========================  =====================================

Example::

    cfg = get_preset("tiny", size=32)
    g, d = Generator(cfg), Discriminator(cfg)
    z = torch.randn(2, cfg.latent_dim)
    starts = g.selector.random_starts(2)
    x_low, x_slab = g(z, starts)
    logit, _ = d(x_slab, g.selector.position(starts), x_low)
"""

from medgen.families.hagan.config import PRESETS, HAGANConfig, get_preset
from medgen.families.hagan.discriminator import Discriminator, HighResDiscriminator, LowResDiscriminator
from medgen.families.hagan.encoder import Encoder, GroundEncoder, HighResEncoder
from medgen.families.hagan.generator import CommonBlock, Generator, HighResBlock, LowResBlock, SubVolumeSelector
from medgen.families.hagan.summary import count_parameters

__all__ = [
    "PRESETS",
    "HAGANConfig",
    "get_preset",
    "CommonBlock",
    "LowResBlock",
    "HighResBlock",
    "SubVolumeSelector",
    "Generator",
    "HighResDiscriminator",
    "LowResDiscriminator",
    "Discriminator",
    "HighResEncoder",
    "GroundEncoder",
    "Encoder",
    "count_parameters",
]
