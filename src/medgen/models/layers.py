"""Small layers shared by the 3D generative models.

Tensors are [B, C, X, Y, Z] (RAS+, Z = inferior→superior is the depth/slab axis).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


def upsample2(x: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour ×2 upsampling of every spatial axis."""
    return F.interpolate(x, scale_factor=2, mode="nearest")


def conv3(in_channels: int, out_channels: int) -> nn.Conv3d:
    """3×3×3 convolution, stride 1, zero padding 1 (keeps the grid)."""
    return nn.Conv3d(in_channels, out_channels, kernel_size=3, stride=1, padding=1)


def down_conv(in_channels: int, out_channels: int) -> nn.Conv3d:
    """4×4×4 convolution, stride 2, padding 1 (halves the grid)."""
    return nn.Conv3d(in_channels, out_channels, kernel_size=4, stride=2, padding=1)


def sn(module: nn.Module) -> nn.Module:
    """Wrap a Conv/Linear layer in spectral normalisation (Miyato et al. 2018)."""
    return spectral_norm(module)


def leaky(x: torch.Tensor) -> torch.Tensor:
    """LeakyReLU with slope 0.2, the discriminators' activation."""
    return F.leaky_relu(x, negative_slope=0.2)


def one_hot_labels(labels: torch.Tensor, num_classes: int, dtype: torch.dtype) -> torch.Tensor:
    """Class indices [B] → one-hot [B, K]; a float [B, K] tensor (soft labels) passes through."""
    if labels.dim() == 2 and labels.is_floating_point():
        if labels.shape[1] != num_classes:
            raise ValueError(f"soft labels have {labels.shape[1]} columns, expected {num_classes}")
        return labels.to(dtype)
    return F.one_hot(labels.long().reshape(-1), num_classes).to(dtype)
