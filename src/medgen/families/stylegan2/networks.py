"""StyleGAN2's generator and discriminator in 3D (Karras et al. 2020, Fig. 2 and 7, configuration F without
path-length regularisation), built at full size.

Level k works at r_k = 4·2^k voxels per axis, with nf_k = ``cfg.channels(k)`` feature maps (:mod:`.config`).

Generator (mapping network, then synthesis network with skip connections to the output)::

    mapping    z → normalise (unit mean square) → mapping_layers × [dense (lr ×0.01) → LReLU·√2] → w
               w_avg: the running mean of w during training (for the truncation trick)
    ws         w repeated for every layer (num_ws = 2·levels + 2), or two codes mixed at a cutoff
    level 0    learned constant [nf_0, 4, 4, 4] → layer(ws[0])                                 toRGB(ws[1])
    level k    trilinear ×2 → layer(ws[2k-1]) → layer(ws[2k])   img = upsample(img) + toRGB_k(ws[2k+1])
    layer      modulated 3³ conv (demodulated) → + noise · strength → + bias → LReLU·√2
    toRGB      modulated 1³ conv to one channel (not demodulated) → + bias, linear

Discriminator (residual)::

    fromRGB at S³: 1³ conv → LReLU·√2
    block k (levels L … 1): main  3³ conv (nf_k) → LReLU·√2 → 2× avg-pool → 3³ conv (nf_{k-1}) → LReLU·√2
                            skip  2× avg-pool → 1³ conv (nf_{k-1}, no bias, linear)
                            out   (main + skip) / √2
    at 4³: minibatch std → 3³ conv (nf_0) → LReLU·√2 → dense nf_0 → LReLU·√2 → dense 1, linear

Simplifications of the authors' resampling: trilinear upsampling followed by the 3³ convolution (their
transposed convolution followed by the [1, 3, 3, 1] blur is the same low-pass filter, applied after the
convolution instead of before), and 2× average pooling before D's convolutions (their [1, 3, 3, 1] blur
followed by a strided convolution; the box filter is slightly less smooth). The noise of every layer is drawn
anew for each volume in training (``noise="random"``); generation uses one fixed draw, :meth:`Generator.const_noise`
(the authors' ``noise_mode='const'``), so that a volume depends on its latent code alone.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from medgen.families.stylegan2.config import BASE, StyleGAN2Config
from medgen.families.stylegan2.layers import (
    EqualConv3d,
    EqualLinear,
    ModulatedConv3d,
    NoiseInjection,
    downsample2,
    lrelu_gain,
    minibatch_stddev,
    normalize_2nd_moment,
    upsample2,
)

CONST_NOISE_SEED = 0  # the seed of the fixed noise generation uses


class MappingNetwork(nn.Module):
    """z [B, latent_dim] → w [B, w_dim]; buffer ``w_avg`` [w_dim]: the running mean of w (updated when
    ``forward`` is given ``w_avg_beta``: w_avg ← β·w_avg + (1 − β)·mean_b w_b, the authors' β = 0.995)."""

    def __init__(self, cfg: StyleGAN2Config) -> None:
        super().__init__()
        dims = [cfg.latent_dim] + [cfg.w_dim] * cfg.mapping_layers
        self.layers = nn.ModuleList([EqualLinear(a, b, lr_mul=cfg.mapping_lr_mul, activation=True)
                                     for a, b in zip(dims[:-1], dims[1:])])
        self.register_buffer("w_avg", torch.zeros(cfg.w_dim))

    def forward(self, z: torch.Tensor, w_avg_beta: float | None = None) -> torch.Tensor:
        x = normalize_2nd_moment(z)
        for layer in self.layers:
            x = layer(x)
        if w_avg_beta is not None:
            with torch.no_grad():
                self.w_avg.copy_(x.detach().float().mean(dim=0).lerp(self.w_avg, w_avg_beta))
        return x


class SynthesisLayer(nn.Module):
    """(trilinear ×2 when ``up``) → modulated 3³ conv → noise → bias → LReLU·√2."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, up: bool = False) -> None:
        super().__init__()
        self.up = up
        self.conv = ModulatedConv3d(in_channels, out_channels, w_dim, 3, demodulate=True)
        self.noise = NoiseInjection()
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        if self.up:
            x = upsample2(x)
        x = self.noise(self.conv(x, w), noise)
        return lrelu_gain(x + self.bias.to(x.dtype).reshape(1, -1, 1, 1, 1))


class ToRGB(nn.Module):
    """Modulated 1³ conv to one channel (no demodulation) plus a bias; linear."""

    def __init__(self, in_channels: int, w_dim: int) -> None:
        super().__init__()
        self.conv = ModulatedConv3d(in_channels, 1, w_dim, 1, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        y = self.conv(x, w)
        return y + self.bias.to(y.dtype).reshape(1, -1, 1, 1, 1)


class Generator(nn.Module):
    """G: ``forward(z)`` → volumes [B, 1, S, S, S] (linear output, unclipped).

    ``layers[i]`` reads ``ws[:, i]`` (i = 0: level 0; i = 2k − 1, 2k: level k, the first upsampling);
    ``to_rgb[k]`` reads ``ws[:, 2k + 1]``.
    """

    def __init__(self, cfg: StyleGAN2Config) -> None:
        super().__init__()
        self.cfg = cfg
        nf = [cfg.channels(k) for k in range(cfg.levels + 1)]
        self.mapping = MappingNetwork(cfg)
        self.const = nn.Parameter(torch.randn(nf[0], BASE, BASE, BASE))
        layers = [SynthesisLayer(nf[0], nf[0], cfg.w_dim)]
        for k in range(1, cfg.levels + 1):
            layers += [SynthesisLayer(nf[k - 1], nf[k], cfg.w_dim, up=True), SynthesisLayer(nf[k], nf[k], cfg.w_dim)]
        self.layers = nn.ModuleList(layers)
        self.to_rgb = nn.ModuleList([ToRGB(c, cfg.w_dim) for c in nf])

    def noise_resolutions(self) -> list[int]:
        """Edge of the noise volume of every layer, in the order of :attr:`layers`."""
        return [BASE] + [self.cfg.resolution(k) for k in range(1, self.cfg.levels + 1) for _ in range(2)]

    def const_noise(self, device: torch.device | str = "cpu") -> list[torch.Tensor]:
        """One fixed noise draw per layer, [1, 1, r, r, r] each (drawn on the CPU from ``CONST_NOISE_SEED``, so the
        same on every device and every call), broadcast over a batch."""
        g = torch.Generator().manual_seed(CONST_NOISE_SEED)
        return [torch.randn(1, 1, r, r, r, generator=g).to(device) for r in self.noise_resolutions()]

    def ws(self, z: torch.Tensor, z_mix: torch.Tensor | None = None, cutoff: int | None = None, psi: float = 1.0,
           w_avg_beta: float | None = None) -> torch.Tensor:
        """The w of every layer, [B, num_ws, w_dim]: ``mapping(z)`` (which updates ``w_avg`` when ``w_avg_beta``
        is given), truncated towards ``w_avg`` by ``psi`` (w_avg + ψ·(w − w_avg); 1: none); with ``z_mix`` and
        ``cutoff`` < num_ws, layers cutoff … num_ws − 1 read ``mapping(z_mix)`` instead (style mixing)."""
        n = self.cfg.num_ws
        w = self.mapping(z, w_avg_beta)
        if psi != 1.0:
            w = self.mapping.w_avg.to(w.dtype).lerp(w, psi)
        ws = w.unsqueeze(1).expand(-1, n, -1)
        if z_mix is not None and cutoff is not None:
            w2 = self.mapping(z_mix)
            if cutoff < n:
                ws = torch.cat([ws[:, :cutoff], w2.unsqueeze(1).expand(-1, n - cutoff, -1)], dim=1)
        return ws

    def synthesis(self, ws: torch.Tensor, noise: str | Sequence[torch.Tensor] = "random") -> torch.Tensor:
        """Volumes [B, 1, S, S, S] from ``ws`` [B, num_ws, w_dim]. ``noise``: "random" (a new draw per volume,
        from the global generator on ws's device), "none", or one tensor per layer ([B or 1, 1, r, r, r])."""
        b, dev = ws.shape[0], ws.device
        resolutions = self.noise_resolutions()
        if noise == "random":
            noises: Sequence[torch.Tensor | None] = [torch.randn(b, 1, r, r, r, device=dev) for r in resolutions]
        elif noise == "none":
            noises = [None] * len(resolutions)
        elif isinstance(noise, str):
            raise ValueError(f"noise {noise!r}: choose 'random', 'none' or one tensor per layer")
        else:
            noises = list(noise)
            if len(noises) != len(resolutions):
                raise ValueError(f"got {len(noises)} noise tensors for {len(resolutions)} layers")
        x = self.const.unsqueeze(0).expand(b, -1, -1, -1, -1)
        x = self.layers[0](x, ws[:, 0], noises[0])
        img = self.to_rgb[0](x, ws[:, 1])
        for k in range(1, self.cfg.levels + 1):
            x = self.layers[2 * k - 1](x, ws[:, 2 * k - 1], noises[2 * k - 1])
            x = self.layers[2 * k](x, ws[:, 2 * k], noises[2 * k])
            img = upsample2(img) + self.to_rgb[k](x, ws[:, 2 * k + 1])
        return img

    def forward(self, z: torch.Tensor, z_mix: torch.Tensor | None = None, cutoff: int | None = None, psi: float = 1.0,
                noise: str | Sequence[torch.Tensor] = "random", w_avg_beta: float | None = None) -> torch.Tensor:
        """``synthesis(ws(z, z_mix, cutoff, psi, w_avg_beta), noise)``."""
        return self.synthesis(self.ws(z, z_mix, cutoff, psi, w_avg_beta), noise)


class DBlock(nn.Module):
    """Residual discriminator block: (main + skip) / √2, each halving the grid (nf_k → nf_{k-1} channels)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv0 = EqualConv3d(in_channels, in_channels, 3, activation=True)
        self.conv1 = EqualConv3d(in_channels, out_channels, 3, activation=True)
        self.skip = EqualConv3d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.skip(downsample2(x))
        x = self.conv1(downsample2(self.conv0(x)))
        return (x + y) * 0.7071067811865476  # 1/√2


class Discriminator(nn.Module):
    """D: ``forward(x, parts)`` → logits [B] for volumes x [B, 1, S, S, S].

    ``parts``: the batch is that many equal parts never mixed by the minibatch standard deviation (real and
    generated volumes in one call).
    """

    def __init__(self, cfg: StyleGAN2Config) -> None:
        super().__init__()
        self.cfg = cfg
        nf = [cfg.channels(k) for k in range(cfg.levels + 1)]
        self.from_rgb = EqualConv3d(1, nf[-1], 1, activation=True)
        self.blocks = nn.ModuleList([DBlock(nf[k], nf[k - 1]) for k in range(cfg.levels, 0, -1)])
        self.conv = EqualConv3d(nf[0] + (1 if cfg.mbstd_group > 0 else 0), nf[0], 3, activation=True)
        self.fc = EqualLinear(nf[0] * BASE**3, nf[0], activation=True)
        self.out = EqualLinear(nf[0], 1)

    def forward(self, x: torch.Tensor, parts: int = 1) -> torch.Tensor:
        h = self.from_rgb(x)
        for block in self.blocks:
            h = block(h)
        if self.cfg.mbstd_group > 0:
            h = minibatch_stddev(h, self.cfg.mbstd_group, parts)
        h = self.conv(h)
        h = self.fc(h.flatten(1))
        return self.out(h).flatten()
