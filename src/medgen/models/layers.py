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


# Why not F.interpolate + conv here: nearest ×2 upsampling followed by a 3³ conv
# (padding 1) equals, for each of the 8 output phases (parity of x, y, z), a 2³
# conv on the low-resolution grid whose taps are sums of the original ones ("sub-
# pixel" form). It needs 8/27 of the multiply-adds, never materialises the 8×
# larger upsampled input, and turns a C→1 conv at full resolution (very slow on
# CPU) into one C→8·1 conv at low resolution.
# Along one axis, output voxel 2i+p reads upsampled voxels 2i+p-1, 2i+p, 2i+p+1,
# i.e. low-res voxels (i-1, i, i) for p = 0 and (i, i, i+1) for p = 1; phase p
# is thus a 2-tap conv over low-res voxels (i-1+p, i+p):
_PHASE_FOLD = torch.tensor(
    [
        [[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]],  # p = 0: [2-tap kernel][original 3-tap kernel]
        [[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]],  # p = 1
    ]
)


def fold_upsample2_conv3(conv: nn.Conv3d) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Weights [8·out channels, in channels, 2, 2, 2] and bias of the low-resolution conv
    equivalent to ``conv(upsample2(x))`` for a 3³, padding-1 ``conv``; output channel
    o·8 + 4·px + 2·py + pz computes output phase (px, py, pz) of channel o."""
    fold = _PHASE_FOLD.to(conv.weight)
    w = torch.einsum("atk,bul,cvm,oiklm->oabcituv", fold, fold, fold, conv.weight)
    out_ch, in_ch = conv.weight.shape[:2]
    bias = conv.bias.repeat_interleave(8) if conv.bias is not None else None
    return w.reshape(out_ch * 8, in_ch, 2, 2, 2), bias


def upsample2_conv3(x: torch.Tensor, folded: tuple[torch.Tensor, torch.Tensor | None]) -> torch.Tensor:
    """``conv(upsample2(x))`` computed on the low-resolution grid; ``folded`` from :func:`fold_upsample2_conv3`."""
    b, _, nx, ny, nz = x.shape
    weight, bias = folded
    # Phase p's output i sits at index i + p of the conv over x zero-padded by 1.
    y = F.conv3d(F.pad(x, (1, 1, 1, 1, 1, 1)), weight, bias)
    y = y.view(b, -1, 2, 2, 2, nx + 1, ny + 1, nz + 1)
    out = y.new_empty(b, y.shape[1], 2 * nx, 2 * ny, 2 * nz)
    for px in range(2):
        for py in range(2):
            for pz in range(2):
                out[:, :, px::2, py::2, pz::2] = y[:, :, px, py, pz, px : px + nx, py : py + ny, pz : pz + nz]
    return out
