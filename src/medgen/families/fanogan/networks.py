"""The networks of f-AnoGAN on HA-GAN: the frozen G and D, the encoder E, and the features f of D.

G and D are HA-GAN's own classes (:mod:`medgen.families.hagan`), frozen: no gradients for
their weights and always in eval mode (``train()`` keeps them there), so the spectral-norm
power iteration of D never updates its vectors and both stay bit-identical through training.
The encoder is HA-GAN's hierarchical E = (E^H, E^G).

The features f (:func:`discriminator_features`)
------------------------------------------------
f-AnoGAN compares a volume and its reconstruction through an intermediate layer of the
trained discriminator. HA-GAN's discriminator has two heads, so f of a volume v [S, S, S] is
the concatenation of

* D^H's last strided-convolution activations (LeakyReLU) on each of the 1/slab_fraction
  non-overlapping full-resolution slabs that tile the depth: [C_H, 4, 4, d] per slab
  (C_H = 512·width; the slab position enters only after them, so it plays no part), and
* D^L's last strided-convolution activations on the low-resolution volume (v downsampled by
  f, trilinear, as HA-GAN's training makes D^L's real input): [C_L, 4, 4, 4]
  (C_L = 256·width; absent in the ``no low-resolution branch`` ablation).

Both are taken before the minibatch standard-deviation channel (medgen's default D appends
one), whose value depends on the other volumes of a batch: these features, and so the loss
and the score, are a function of each volume alone. With the ``tiny`` preset at 32³ f has
8 × 1,024 D^H and 2,048 D^L values, so D^H has 4/5 of the weight of the mean in the loss.

Cost: f needs G(E(x)) as a whole volume. The training step generates it whole, keeping the
autograd graph through G^H and D on the whole volume (HA-GAN's own training keeps one slab's),
so its activation memory grows with S³. Measured for one training step on the CPU (fp32,
batch 1, the ``paper`` widths): 0.3 GB above the weights at 64³, 0.7 GB at 128³; the
volume-sized activations grow 8-fold per doubling of S, so expect up to some 6 GB per volume
at 256³ (less under bf16 on a GPU). Scoring
(no gradients) can run G^H in depth chunks (``chunk``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medgen.families.hagan.config import HAGANConfig
from medgen.families.hagan.discriminator import Discriminator
from medgen.families.hagan.encoder import Encoder
from medgen.families.hagan.generator import Generator
from medgen.families.layers import leaky


class FrozenGenerator(Generator):
    """HA-GAN's G with frozen weights, always in eval mode."""

    def __init__(self, cfg: HAGANConfig) -> None:
        super().__init__(cfg)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "FrozenGenerator":
        return super().train(False)


class FrozenDiscriminator(Discriminator):
    """HA-GAN's D with frozen weights, always in eval mode (no spectral-norm power iteration)."""

    def __init__(self, cfg: HAGANConfig) -> None:
        super().__init__(cfg)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "FrozenDiscriminator":
        return super().train(False)


def build_networks(cfg: HAGANConfig) -> dict[str, nn.Module]:
    """E (trainable, random weights), G and D (frozen, random weights), in this order of initialisation."""
    return {"E": Encoder(cfg), "G": FrozenGenerator(cfg), "D": FrozenDiscriminator(cfg)}


def _last_strided_activations(convs: nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
    h = x
    for conv in convs:
        h = leaky(conv(h))
    return h


def discriminator_features(D: Discriminator, x: torch.Tensor) -> torch.Tensor:
    """f(x) of volumes ``x`` [b, 1, S, S, S] (module docstring): [b, n_f]."""
    cfg: HAGANConfig = D.cfg
    b, n = x.shape[0], cfg.slab_len
    slabs = torch.cat([x[..., k : k + n] for k in range(0, x.shape[-1], n)])  # [num_slabs·b, 1, S, S, L]
    high = _last_strided_activations(D.high.convs, slabs)
    parts = [high.reshape(-1, b, high[0].numel()).transpose(0, 1).reshape(b, -1)]  # volume-major
    if D.low is not None:
        low = F.interpolate(x, scale_factor=1 / cfg.lowres_factor, mode="trilinear", align_corners=False)
        parts.append(_last_strided_activations(D.low.convs, low).flatten(1))
    return torch.cat(parts, dim=1)
