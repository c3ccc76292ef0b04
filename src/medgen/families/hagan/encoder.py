"""The hierarchical HA-GAN encoder: E^H (high-resolution block) and E^G (ground block).

It mirrors the generator: E^H maps a full-resolution slab to the matching slab
of the feature map A; E^G maps the whole feature map to the latent code z.
Tensors are [B, C, X, Y, Z]; slabs are taken along the last axis.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medgen.families.conv3d import Conv3d
from medgen.families.hagan.config import BASE_GRID, HAGANConfig
from medgen.families.layers import conv3, down_conv


class HighResEncoder(nn.Module):
    """E^H: full-resolution slab [B, 1, S, S, L] → feature slab [B, C_A, S/f, S/f, L/f].

    log2(f) stride-2 4³ convolutions, with a 3³ convolution after the first,
    each followed by GroupNorm and ReLU (paper, f=4: Conv 1→32 s2, Conv 32→32,
    Conv 32→64 s2).
    """

    def __init__(self, cfg: HAGANConfig) -> None:
        super().__init__()
        widths = cfg.high_encoder_widths()
        layers = [down_conv(1, widths[0]), conv3(widths[0], widths[0])]
        layers += [down_conv(cin, cout) for cin, cout in zip(widths[:-1], widths[1:])]
        self.convs = nn.ModuleList(layers)
        self.norms = nn.ModuleList(nn.GroupNorm(cfg.norm_groups, conv.out_channels) for conv in layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for conv, norm in zip(self.convs, self.norms):
            h = F.relu(norm(conv(h)))
        return h


class GroundEncoder(nn.Module):
    """E^G, the ground block: feature map [B, C_A, S/f, S/f, S/f] → z [B, latent_dim].

    Stride-2 4³ convolutions + GroupNorm + ReLU down to 4³ (widths halving
    backwards from 256: 32, 64, 128, 256 at S=256), then a 4³ convolution to
    latent_dim.
    """

    def __init__(self, cfg: HAGANConfig) -> None:
        super().__init__()
        widths = cfg.downsampling_widths(256, cfg.lowres_size)
        ins = [cfg.feature_channels] + widths[:-1]
        self.convs = nn.ModuleList(down_conv(cin, cout) for cin, cout in zip(ins, widths))
        self.norms = nn.ModuleList(nn.GroupNorm(cfg.norm_groups, c) for c in widths)
        cin = widths[-1] if widths else cfg.feature_channels
        self.final_conv = Conv3d(cin, cfg.latent_dim, kernel_size=BASE_GRID)

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        h = a
        for conv, norm in zip(self.convs, self.norms):
            h = F.relu(norm(conv(h)))
        return self.final_conv(h).flatten(1)


class Encoder(nn.Module):
    """The hierarchical encoder: ``.high`` = E^H, ``.ground`` = E^G."""

    def __init__(self, cfg: HAGANConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.high = HighResEncoder(cfg)
        self.ground = GroundEncoder(cfg)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Full volume [B, 1, S, S, S] → reconstructed feature map [B, C_A, S/f, S/f, S/f].

        E^H runs on each of the 1/slab_fraction non-overlapping slabs separately
        (as in training, so GroupNorm statistics are per slab) and the feature
        slabs are concatenated along the depth axis.
        """
        n = self.cfg.slab_len
        return torch.cat([self.high(x[..., k : k + n]) for k in range(0, x.shape[-1], n)], dim=-1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Full volume [B, 1, S, S, S] → latent code z [B, latent_dim]."""
        return self.ground(self.features(x))

    forward = encode
