"""StyleGAN2's layers in 3D (Karras et al. 2020, section 2 and appendix B): equalised learning rate with a
learning-rate multiplier, weight modulation and demodulation, noise injection.

Equalised learning rate: weights are stored as N(0, 1/lr_mul²) draws and multiplied at run time by
``lr_mul / sqrt(fan_in)`` (biases by ``lr_mul``), so Adam moves every layer by the same relative amount and the
mapping network (lr_mul 0.01) a hundred times more slowly. Activations are LeakyReLU(0.2) times √2
(:func:`lrelu_gain`: the gain that keeps the signal's magnitude, applied after the bias as in the authors'
``bias_act``).

Modulated convolution (section 2.2, eq. 1-3): for sample b with style s_b (an affine map of its w),
``w'_oi = s_bi · w_oi`` and, with demodulation, ``w''_oi = w'_oi / sqrt(Σ_i,k w'_oik² + ε)``; the per-sample
weights run as one grouped convolution with the batch folded into the channels (the authors' "fused" form).
The minibatch standard deviation is medgen's shared :func:`medgen.families.layers.minibatch_stddev`
(consecutive groups that never mix real and generated volumes).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from medgen.families.layers import minibatch_stddev

__all__ = ["EqualLinear", "EqualConv3d", "ModulatedConv3d", "NoiseInjection", "modulated_conv3d", "lrelu_gain",
           "normalize_2nd_moment", "minibatch_stddev", "upsample2", "downsample2"]

SQRT2 = math.sqrt(2.0)


def lrelu_gain(x: torch.Tensor) -> torch.Tensor:
    """LeakyReLU with slope 0.2, times √2."""
    return F.leaky_relu(x, 0.2) * SQRT2


def normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``x`` [B, C, ...] divided by the root mean square of its C entries (z before the mapping network)."""
    return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + eps)


def upsample2(x: torch.Tensor) -> torch.Tensor:
    """Trilinear ×2 upsampling (align_corners=False): zero insertion followed by the separable filter
    [1, 3, 3, 1]/4 per axis (edges replicated), the filter StyleGAN2 upsamples with."""
    return F.interpolate(x, scale_factor=2, mode="trilinear", align_corners=False)


def downsample2(x: torch.Tensor) -> torch.Tensor:
    """2× average pooling of every spatial axis (trilinear ×½ with align_corners=False is the same)."""
    return F.avg_pool3d(x, 2)


class EqualLinear(nn.Module):
    """A dense layer with equalised learning rate and learning-rate multiplier ``lr_mul``; ``activation``:
    followed by :func:`lrelu_gain`. Biases start at ``bias_init``."""

    def __init__(self, in_features: int, out_features: int, bias_init: float = 0.0, lr_mul: float = 1.0,
                 activation: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init) / lr_mul))
        self.weight_gain = lr_mul / math.sqrt(in_features)
        self.bias_gain = lr_mul
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.linear(x, self.weight * self.weight_gain, self.bias * self.bias_gain)
        return lrelu_gain(x) if self.activation else x


class EqualConv3d(nn.Module):
    """A k³ convolution (stride 1, 'same' padding) with equalised learning rate (weights ~ N(0, 1) times
    ``1 / sqrt(in · k³)``); ``bias``: with a bias (starting at 0); ``activation``: followed by :func:`lrelu_gain`."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True,
                 activation: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size**3)
        self.padding = kernel_size // 2
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.conv3d(x, self.weight * self.weight_gain, self.bias, padding=self.padding)
        return lrelu_gain(x) if self.activation else x


def modulated_conv3d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, demodulate: bool = True,
                     eps: float = 1e-8) -> torch.Tensor:
    """Modulated (and demodulated) 3D convolution, 'same' padding.

    ``x`` [B, I, X, Y, Z], ``weight`` [O, I, k, k, k] (already scaled), ``styles`` [B, I]: sample b is convolved
    with ``w_b = weight · styles[b]`` (per input channel), divided per output channel by
    ``sqrt(Σ w_b² + eps)`` when ``demodulate`` (so that unit-variance inputs give unit-variance outputs, eq. 3).
    One grouped convolution over the batch folded into the channels → [B, O, X, Y, Z].
    """
    b, in_ch = x.shape[:2]
    out_ch, _, k = weight.shape[:3]
    w = weight.unsqueeze(0) * styles.reshape(b, 1, in_ch, 1, 1, 1)  # [B, O, I, k, k, k]
    if demodulate:
        d = torch.rsqrt(w.square().sum(dim=(2, 3, 4, 5)) + eps)  # [B, O]
        w = w * d.reshape(b, out_ch, 1, 1, 1, 1)
    w = w.reshape(b * out_ch, in_ch, k, k, k)
    out = F.conv3d(x.reshape(1, b * in_ch, *x.shape[2:]), w, padding=k // 2, groups=b)
    return out.reshape(b, out_ch, *out.shape[2:])


class ModulatedConv3d(nn.Module):
    """A k³ modulated convolution: the style is ``affine(w)`` (an :class:`EqualLinear` of w, biases starting at
    1, so that a new layer starts near the plain convolution), the weights have equalised learning rate; with
    ``demodulate`` (the synthesis layers; toRGB has none)."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, kernel_size: int = 3,
                 demodulate: bool = True) -> None:
        super().__init__()
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size, kernel_size))
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size**3)
        self.demodulate = demodulate

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return modulated_conv3d(x, self.weight * self.weight_gain, self.affine(w), self.demodulate)


class NoiseInjection(nn.Module):
    """Per-voxel noise (one channel, broadcast over the features) times a learned strength starting at 0."""

    def __init__(self) -> None:
        super().__init__()
        self.strength = nn.Parameter(torch.zeros([]))

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        """``noise`` [B or 1, 1, X, Y, Z], or None for no noise."""
        return x if noise is None else x + noise.to(x.dtype) * self.strength.to(x.dtype)
