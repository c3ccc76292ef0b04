"""The two networks, MONAI's ``AutoEncoder`` and ``VarAutoEncoder``, each in a thin wrapper.

The wrappers add what MONAI's classes lack for volumes in [-1, 1] trained on medgen's loop, and
nothing else (every layer is MONAI's):

* an output ``tanh``: ``AutoEncoder``'s last layer is a bare (transposed) convolution, unbounded, and
  ``VarAutoEncoder`` ends in a sigmoid for images in [0, 1]; a tanh maps both to [-1, 1], the range of
  medgen's volumes (the VAE's sigmoid is switched off, ``use_sigmoid=False``);
* ``encode`` / ``decode`` of the code ``medgen encode`` writes: ``AutoEncoder`` exposes its encoder and
  decoder only as the sequential blocks ``encode``, ``intermediate`` and ``decode``; the wrapper's
  ``encode`` is the output of the intermediate block (the spatial bottleneck);
* a VAE forward pass that takes ε: ``VarAutoEncoder.forward`` draws ε from torch's global generator
  (and in eval mode decodes μ + σ rather than μ, MONAI issue #8413, unless the
  ``use_mean_at_inference`` option that only recent MONAI versions have is set); the wrapper computes
  z = μ + σ ⊙ ε with the ε the training step drew from the loop's per-iteration generator (so a resumed
  run is exact), and z = μ without ε (deterministic inference).

The whole pass is the wrapper's ``forward``, so that under DDP the one wrapped call of an iteration is
the one whose gradients are synchronised.
"""

from __future__ import annotations

import torch
from torch import nn

from medgen.families.autoencoder.config import AEConfig

_MONAI_NORMS = {"instance": "INSTANCE", "batch": "BATCH"}


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """z = μ + σ ⊙ ε, σ = exp(½ log σ²): a draw of q(z|x) differentiable in μ and log σ²."""
    return mu + (0.5 * logvar).exp() * eps


class SpatialAutoencoder(nn.Module):
    """MONAI ``AutoEncoder`` (stride-2 levels, intermediate convolution to ``latent_channels``) with a tanh output.

    ``encode``: volumes [B, 1, S, S, S] → bottleneck [B, latent_channels, s, s, s]; ``decode``: back, in [-1, 1];
    ``forward(x)`` → (x̂, bottleneck).
    """

    def __init__(self, cfg: AEConfig) -> None:
        super().__init__()
        from monai.networks.nets import AutoEncoder

        self.net = AutoEncoder(
            spatial_dims=3,
            in_channels=1,
            out_channels=1,
            channels=tuple(cfg.channels),
            strides=(2,) * cfg.levels,
            num_res_units=cfg.num_res_units,
            inter_channels=[cfg.latent_channels],
            inter_dilations=[1],
            num_inter_units=cfg.num_res_units,
            norm=_MONAI_NORMS[cfg.norm],
        )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.intermediate(self.net.encode(x))

    def decode(self, h: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net.decode(h))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encode(x)
        return self.decode(h), h


class VariationalAutoencoder(nn.Module):
    """MONAI ``VarAutoEncoder`` (dense heads μ, log σ² of ``latent_size``) with a tanh output and ε given.

    ``encode``: volumes → (μ, log σ²), each [B, latent_size]; ``decode``: latents [B, latent_size] → volumes in
    [-1, 1]; ``forward(x, eps)`` → (x̂, μ, log σ²) with x̂ decoded from μ + σ ⊙ ε (from μ when ``eps`` is None).
    """

    def __init__(self, cfg: AEConfig) -> None:
        super().__init__()
        from monai.networks.nets import VarAutoEncoder

        self.net = VarAutoEncoder(
            spatial_dims=3,
            in_shape=(1, cfg.size, cfg.size, cfg.size),
            out_channels=1,
            latent_size=cfg.latent_size,
            channels=tuple(cfg.channels),
            strides=(2,) * cfg.levels,
            num_res_units=cfg.num_res_units,
            norm=_MONAI_NORMS[cfg.norm],
            use_sigmoid=False,
        )

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net.encode_forward(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net.decode_forward(z, use_sigmoid=False))

    def forward(self, x: torch.Tensor, eps: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        mu, logvar = self.encode(x)
        z = mu if eps is None else reparameterize(mu, logvar, eps.to(mu.dtype))
        return self.decode(z), mu, logvar


def build_network(cfg: AEConfig) -> nn.Module:
    """The VAE (``cfg.variational``) or the plain autoencoder of ``cfg``."""
    return VariationalAutoencoder(cfg) if cfg.variational else SpatialAutoencoder(cfg)
