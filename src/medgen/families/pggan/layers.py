"""PGGAN's layers (Karras et al. 2018, section 4): equalised learning rate and pixel-wise feature normalisation.

Equalised learning rate (4.1): weights are drawn from N(0, 1) and scaled at run time by He's constant
``gain / sqrt(fan_in)``, so Adam's per-parameter step is the same relative change for every layer. Pixel norm
(4.2): every feature vector of G is divided by its root mean square over the channels,
``b = a / sqrt(mean_c a² + 1e-8)``. The minibatch standard deviation (3) is medgen's shared
:func:`medgen.families.layers.minibatch_stddev` (consecutive groups that never mix real and generated volumes).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from medgen.families.layers import minibatch_stddev, upsample2, upsample2_conv3

__all__ = ["EqConv3d", "EqLinear", "pixel_norm", "minibatch_stddev", "upsample2", "downsample2", "lrelu"]

SQRT2 = math.sqrt(2.0)


def lrelu(x: torch.Tensor) -> torch.Tensor:
    """LeakyReLU with slope 0.2 (the paper's, in G and D)."""
    return F.leaky_relu(x, 0.2)


def pixel_norm(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``x`` [B, C, ...] divided by the root mean square of its C features at every position."""
    return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + eps)


def downsample2(x: torch.Tensor) -> torch.Tensor:
    """2× average pooling of every spatial axis (the paper's downsampling, in D and of the real volumes)."""
    return F.avg_pool3d(x, 2)


class EqConv3d(nn.Conv3d):
    """A k³ convolution (stride 1, 'same' padding) with equalised learning rate: weights ~ N(0, 1), biases 0,
    multiplied by ``gain / sqrt(in · k³)`` at run time."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, gain: float = SQRT2) -> None:
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        nn.init.normal_(self.weight)
        nn.init.zeros_(self.bias)
        self.scale = gain / math.sqrt(in_channels * kernel_size**3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv3d(x, self.weight * self.scale, self.bias, padding=self.padding)

    def up(self, x: torch.Tensor) -> torch.Tensor:
        """``self(upsample2(x))`` (nearest ×2, then this 3³ conv), computed on the low-resolution grid
        (:func:`medgen.families.layers.upsample2_conv3`; the scale moves onto the input, the conv being linear)."""
        return upsample2_conv3(x * self.scale, self)


class EqLinear(nn.Linear):
    """A dense layer with equalised learning rate (weights ~ N(0, 1) × ``gain / sqrt(in)``, biases 0)."""

    def __init__(self, in_features: int, out_features: int, gain: float = SQRT2) -> None:
        super().__init__(in_features, out_features)
        nn.init.normal_(self.weight)
        nn.init.zeros_(self.bias)
        self.scale = gain / math.sqrt(in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale, self.bias)
