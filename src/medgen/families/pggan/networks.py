"""PGGAN's generator and discriminator in 3D (Karras et al. 2018, Table 2), built at full size.

Level k works at r_k = 4·2^k voxels per axis, with nf_k = ``cfg.channels(k)`` feature maps.

Generator::

    z → pixel norm → dense to nf_0·4³ (the paper's "4×4 conv" on a 1×1 input) → LReLU → PN
      → conv 3³ → LReLU → PN                                           level 0, 4³
    block k: nearest ×2 → conv 3³ → LReLU → PN → conv 3³ → LReLU → PN   level k, r_k³
    toRGB_k: 1³ conv to one channel, linear

Discriminator (mirrored)::

    fromRGB_k: 1³ conv → LReLU
    block k: conv 3³ (nf_k) → LReLU → conv 3³ (nf_{k-1}) → LReLU → 2× average pooling
    head at 4³: minibatch std → conv 3³ → LReLU → dense nf_0 (the "4×4 conv") → LReLU → dense 1, linear

Growing to level k with weight α (the fade-in, paper Fig. 2)::

    G: lerp(upsample(toRGB_{k-1}(h_{k-1})), toRGB_k(block_k(h_{k-1})), α)
    D: lerp(fromRGB_{k-1}(avgpool(x)), block_k(fromRGB_k(x)), α), then blocks k-1 … 1 and the head

``torch.lerp`` is exact at both ends: α = 0 gives the lower-resolution path, α = 1 the new block's.
Every layer uses the equalised learning rate (:mod:`.layers`). A forward pass runs only the active blocks;
with gradients on, the parameters of the idle blocks are added to the output times 0, so that each gets a
zero gradient every iteration (required by ``DistributedDataParallel`` without ``find_unused_parameters``;
Adam leaves a parameter whose gradient has always been 0 where it is, and the training step resets the
optimiser state at every phase change, as the authors' code does, so idle blocks never move).
"""

from __future__ import annotations

from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from medgen.families.pggan.config import BASE, PGGANConfig
from medgen.families.pggan.layers import (
    SQRT2,
    EqConv3d,
    EqLinear,
    downsample2,
    lrelu,
    minibatch_stddev,
    pixel_norm,
    upsample2,
)


def _touch(out: torch.Tensor, modules: Iterable[nn.Module]) -> torch.Tensor:
    """``out`` + 0 · (sum of the trainable parameters of ``modules``): the same values, and a zero gradient
    for each of those parameters (only when gradients are being recorded)."""
    if not torch.is_grad_enabled():
        return out
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    if not params:
        return out
    return out + 0.0 * torch.stack([p.sum() for p in params]).sum()


class GBlock(nn.Module):
    """Generator block of one level: nearest ×2 upsampling, two 3³ convs, each followed by LReLU and pixel norm."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = EqConv3d(in_channels, out_channels, 3)
        self.conv2 = EqConv3d(out_channels, out_channels, 3)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = pixel_norm(lrelu(self.conv1.up(h)))  # = conv1(upsample2(h)), on the low-resolution grid
        return pixel_norm(lrelu(self.conv2(h)))


class DBlock(nn.Module):
    """Discriminator block of one level: two 3³ convs with LReLU (nf_k, then nf_{k-1}), 2× average pooling."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = EqConv3d(in_channels, in_channels, 3)
        self.conv2 = EqConv3d(in_channels, out_channels, 3)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return downsample2(lrelu(self.conv2(lrelu(self.conv1(h)))))


class Generator(nn.Module):
    """G of every level; ``forward(z, level, alpha)`` → [B, 1, r, r, r] at r = 4·2^level (linear output).

    Buffer ``progress`` = (level, α) reached in training (set by the training step; a new network has the
    last level at α = 1): what :meth:`generate` and the sample mosaics use.
    """

    def __init__(self, cfg: PGGANConfig) -> None:
        super().__init__()
        self.cfg = cfg
        nf = [cfg.channels(k) for k in range(cfg.levels + 1)]
        self.dense = EqLinear(cfg.latent_dim, nf[0] * BASE**3, gain=SQRT2 / BASE ** 1.5)  # authors' code: √2/4 in 2D
        self.conv0 = EqConv3d(nf[0], nf[0], 3)
        self.blocks = nn.ModuleList([nn.Identity()] + [GBlock(nf[k - 1], nf[k]) for k in range(1, cfg.levels + 1)])
        self.to_rgb = nn.ModuleList([EqConv3d(c, 1, 1, gain=1.0) for c in nf])
        self.register_buffer("progress", torch.tensor([float(cfg.levels), 1.0]))

    def features(self, z: torch.Tensor, level: int) -> torch.Tensor:
        """Feature maps h_level [B, nf_level, r, r, r] for latent codes z [B, latent_dim]."""
        h = self.dense(pixel_norm(z))
        h = pixel_norm(lrelu(h.view(z.shape[0], -1, BASE, BASE, BASE)))
        h = pixel_norm(lrelu(self.conv0(h)))
        for k in range(1, level + 1):
            h = self.blocks[k](h)
        return h

    def forward(self, z: torch.Tensor, level: int, alpha: float = 1.0) -> torch.Tensor:
        _check(level, alpha, self.cfg.levels)
        fading = level > 0 and alpha < 1.0
        if level == 0:
            out = self.to_rgb[0](self.features(z, 0))
        else:
            prev = self.features(z, level - 1)
            out = self.to_rgb[level](self.blocks[level](prev))
            if fading:
                out = torch.lerp(upsample2(self.to_rgb[level - 1](prev)), out, alpha)
        idle = [self.blocks[k] for k in range(level + 1, self.cfg.levels + 1)]
        idle += [m for k, m in enumerate(self.to_rgb) if k != level and not (fading and k == level - 1)]
        return _touch(out, idle)

    @property
    def state(self) -> tuple[int, float]:
        """(level, α) of :attr:`progress`."""
        level, alpha = self.progress.tolist()
        return int(round(level)), float(alpha)

    def set_state(self, level: int, alpha: float) -> None:
        self.progress[0] = float(level)
        self.progress[1] = float(alpha)

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        """Volumes [B, 1, S, S, S] at the level and α of :attr:`progress`; a level below the last is
        upsampled to S³ by nearest neighbour (as the fade-in upsamples), values left unclipped."""
        level, alpha = self.state
        out = self(z, level, alpha)
        factor = self.cfg.size // out.shape[-1]
        return F.interpolate(out, scale_factor=factor, mode="nearest") if factor > 1 else out


class Discriminator(nn.Module):
    """D of every level; ``forward(x, level, alpha, parts)`` → scores [B] for volumes x [B, 1, r, r, r].

    ``parts``: the batch is that many equal parts never mixed by the minibatch standard deviation
    (real, generated and interpolated volumes in one call).
    """

    def __init__(self, cfg: PGGANConfig) -> None:
        super().__init__()
        self.cfg = cfg
        nf = [cfg.channels(k) for k in range(cfg.levels + 1)]
        self.from_rgb = nn.ModuleList([EqConv3d(1, c, 1) for c in nf])
        self.blocks = nn.ModuleList([nn.Identity()] + [DBlock(nf[k], nf[k - 1]) for k in range(1, cfg.levels + 1)])
        self.conv = EqConv3d(nf[0] + (1 if cfg.mbstd_group > 0 else 0), nf[0], 3)
        self.dense1 = EqLinear(nf[0] * BASE**3, nf[0])
        self.dense2 = EqLinear(nf[0], 1, gain=1.0)

    def head(self, h: torch.Tensor, parts: int = 1) -> torch.Tensor:
        """4³ features [B, nf_0, 4, 4, 4] → scores [B]."""
        if self.cfg.mbstd_group > 0:
            h = minibatch_stddev(h, self.cfg.mbstd_group, parts)
        h = lrelu(self.conv(h))
        h = lrelu(self.dense1(h.flatten(1)))
        return self.dense2(h).flatten()

    def from_level(self, h: torch.Tensor, level: int, parts: int = 1) -> torch.Tensor:
        """Features h at level ``level`` (nf_level channels) → blocks level … 1 → head → scores [B]."""
        for k in range(level, 0, -1):
            h = self.blocks[k](h)
        return self.head(h, parts)

    def forward(self, x: torch.Tensor, level: int, alpha: float = 1.0, parts: int = 1) -> torch.Tensor:
        _check(level, alpha, self.cfg.levels)
        fading = level > 0 and alpha < 1.0
        h = lrelu(self.from_rgb[level](x))
        if level > 0:
            h = self.blocks[level](h)
            if fading:
                h = torch.lerp(lrelu(self.from_rgb[level - 1](downsample2(x))), h, alpha)
        out = self.from_level(h, level - 1, parts) if level > 0 else self.head(h, parts)
        idle = [self.blocks[k] for k in range(level + 1, self.cfg.levels + 1)]
        idle += [m for k, m in enumerate(self.from_rgb) if k != level and not (fading and k == level - 1)]
        return _touch(out, idle)


def _check(level: int, alpha: float, levels: int) -> None:
    if not 0 <= level <= levels:
        raise ValueError(f"level {level}: the network has levels 0..{levels}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha {alpha}: must be in [0, 1]")
