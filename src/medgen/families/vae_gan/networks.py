"""VAE-GAN's encoder q(z|x) = N(μ(x), diag σ²(x)).

The generator and the discriminator are :mod:`medgen.families.dcgan3d`'s.
"""

from __future__ import annotations

import torch
from torch import nn

from medgen.families.dcgan3d import DownTrunk, norm3d
from medgen.families.layers import down_conv, leaky
from medgen.families.vae_gan.config import VAEGANConfig


class Encoder(nn.Module):
    """Volumes [B, 1, S, S, S] → (μ, log σ²), each [B, latent_dim].

    The discriminator's trunk (stride-2 4³ convolutions to 4³, ``encoder_norm`` after all but
    the first, LeakyReLU 0.2), one more stride-2 convolution to 2³ (same normalisation), flattened;
    then two heads (:mod:`.config`).
    """

    def __init__(self, cfg: VAEGANConfig) -> None:
        super().__init__()
        widths = cfg.critic_widths()
        self.trunk = DownTrunk(widths, cfg.encoder_norm)
        self.last = down_conv(widths[-1], widths[-1])
        self.last_norm = norm3d(cfg.encoder_norm, widths[-1])
        flat = widths[-1] * 2**3
        self.mu = self._head(flat, cfg.encoder_hidden, cfg.latent_dim)
        self.logvar = self._head(flat, cfg.encoder_hidden, cfg.latent_dim)

    @staticmethod
    def _head(flat: int, hidden: int, latent: int) -> nn.Module:
        if hidden <= 0:
            return nn.Linear(flat, latent)
        return nn.Sequential(nn.Linear(flat, hidden), nn.ReLU(), nn.Linear(hidden, latent))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(x)[-1]
        h = leaky(self.last_norm(self.last(h))).flatten(1)
        return self.mu(h), self.logvar(h)
