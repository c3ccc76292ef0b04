"""The frozen autoencoder of a latent diffusion model and the scale of its latents (:class:`LatentCodec`).

Diffusion assumes data of about unit variance; a KL autoencoder's latents are not
(their spread depends on the KL weight and the data). As in Rombach et al. (2022) and
MONAI's tutorials, latents are multiplied by ``scale`` = 1 / std(latents of the first
training batch) before diffusion and divided by it before decoding. The scale is a buffer
of the codec, saved in every checkpoint, so a resumed or loaded run uses the same one.

Latents are the encoder's means μ (not samples μ + σ·ε): deterministic, and σ is tiny
after KL-light training anyway.
"""

from __future__ import annotations

import torch
from torch import nn


class LatentCodec(nn.Module):
    """``autoencoder`` (MONAI ``AutoencoderKL``, frozen, eval mode) and the latent ``scale`` (0 until set)."""

    def __init__(self, autoencoder: nn.Module) -> None:
        super().__init__()
        self.autoencoder = autoencoder.eval().requires_grad_(False)
        self.register_buffer("scale", torch.zeros(()))

    def train(self, mode: bool = True) -> "LatentCodec":
        super().train(mode)
        self.autoencoder.eval()  # frozen: never in training mode
        return self

    @property
    def has_scale(self) -> bool:
        return bool(self.scale > 0)

    @torch.no_grad()
    def set_scale(self, z: torch.Tensor) -> None:
        """``scale`` = 1 / std of the (unscaled) latents ``z``, pooled over every process under DDP."""
        z = z.double()
        moments = torch.stack([z.sum(), z.pow(2).sum(), torch.tensor(float(z.numel()), dtype=torch.float64, device=z.device)])
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(moments)
        total, squares, n = moments.tolist()
        var = squares / n - (total / n) ** 2
        self.scale.fill_(1.0 / max(var, 1e-12) ** 0.5)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Scaled latents of volumes ``x`` [b, 1, S, S, S]: scale · μ."""
        mu, _ = self.autoencoder.encode(x)
        return mu * self.scale

    def unscale(self, z: torch.Tensor) -> torch.Tensor:
        """Latents as the decoder expects them (z / scale)."""
        return z / self.scale
