"""α-GAN's encoder E and code discriminator C (the generator and the image discriminator are
:mod:`medgen.families.dcgan3d`'s ``Generator`` and ``Critic``).

Encoder: volumes [B, 1, S, S, S] → codes ẑ [B, latent_dim]: the discriminator's trunk (stride-2 4³
convolutions down to 4³, ``encoder_norm`` after all but the first, LeakyReLU 0.2) and a 4³ "valid"
convolution to ``latent_dim`` values (Kwon et al.: the discriminator with ``latent_dim`` outputs).

Code discriminator: codes [B, latent_dim] → logits [B]: dense ``code_units`` → LeakyReLU 0.2 → dense
``code_units`` → LeakyReLU 0.2 → dense 1.
"""

from __future__ import annotations

import torch
from torch import nn

from medgen.families.alpha_gan.config import AlphaGANConfig
from medgen.families.dcgan3d import BASE_GRID, DownTrunk


class Encoder(nn.Module):
    def __init__(self, cfg: AlphaGANConfig) -> None:
        super().__init__()
        widths = cfg.critic_widths()
        self.trunk = DownTrunk(widths, cfg.encoder_norm)
        self.out = nn.Conv3d(widths[-1], cfg.latent_dim, kernel_size=BASE_GRID)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.trunk(x)[-1]).flatten(1)


class CodeDiscriminator(nn.Module):
    def __init__(self, cfg: AlphaGANConfig) -> None:
        super().__init__()
        u = cfg.code_units
        self.net = nn.Sequential(nn.Linear(cfg.latent_dim, u), nn.LeakyReLU(0.2), nn.Linear(u, u), nn.LeakyReLU(0.2),
                                 nn.Linear(u, 1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).flatten()
