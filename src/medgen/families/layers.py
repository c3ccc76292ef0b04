"""Small layers shared by the 3D generative models.

Tensors are [B, C, X, Y, Z] (RAS+, Z = inferior→superior is the depth/slab axis).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from medgen.families.conv3d import Conv3d, conv3d


def upsample2(x: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour ×2 upsampling of every spatial axis."""
    return F.interpolate(x, scale_factor=2, mode="nearest")


def conv3(in_channels: int, out_channels: int) -> nn.Conv3d:
    """3×3×3 convolution, stride 1, zero padding 1 (keeps the grid); :class:`~medgen.families.conv3d.Conv3d`."""
    return Conv3d(in_channels, out_channels, kernel_size=3, stride=1, padding=1)


def down_conv(in_channels: int, out_channels: int) -> nn.Conv3d:
    """4×4×4 convolution, stride 2, padding 1 (halves the grid); :class:`~medgen.families.conv3d.Conv3d`."""
    return Conv3d(in_channels, out_channels, kernel_size=4, stride=2, padding=1)


def sn(module: nn.Module) -> nn.Module:
    """Wrap a Conv/Linear layer in spectral normalisation (Miyato et al. 2018)."""
    return spectral_norm(module)


def leaky(x: torch.Tensor) -> torch.Tensor:
    """LeakyReLU with slope 0.2, the discriminators' activation."""
    return F.leaky_relu(x, negative_slope=0.2)


def minibatch_stddev(x: torch.Tensor, group_size: int, parts: int = 1, channels: int = 1) -> torch.Tensor:
    """``x`` [N, C, *spatial] with ``channels`` channels more: the minibatch standard deviation (Karras et al. 2018).

    The batch is split into ``parts`` equal consecutive parts that must not be mixed
    (a discriminator batch of real volumes followed by as many generated ones:
    ``parts=2``); each part into consecutive groups of ``g`` samples, g the largest
    divisor of the part's size not above ``group_size``. For every group, the standard
    deviation over its samples of every feature, averaged over features and positions,
    is a scalar that becomes the new channel of each of its samples. With ``channels``
    > 1 the C features are split into that many consecutive equal sets, each averaged
    into its own channel (StyleGAN2's ``num_channels``): a set of features that varies
    too little is then not hidden by the others' average. A group of one has
    0. Why not MONAI: it has no minibatch-std layer. Not StyleGAN's strided grouping:
    consecutive groups are what keeps real and generated samples apart.
    """
    n, c = x.shape[:2]
    if parts < 1 or n % parts:
        raise ValueError(f"minibatch_stddev: a batch of {n} does not split into {parts} equal parts")
    if channels < 1 or c % channels:
        raise ValueError(f"minibatch_stddev: {c} features do not split into {channels} equal sets")
    per = n // parts
    g = max(d for d in range(1, min(group_size, per) + 1) if per % d == 0)
    y = x.float().reshape(n // g, g, channels, -1)
    std = (y.var(dim=1, unbiased=False) + 1e-8).sqrt().mean(dim=2)  # [n / g, channels]
    feature = std.repeat_interleave(g, dim=0).to(x.dtype).reshape(n, channels, *([1] * (x.dim() - 2)))
    return torch.cat([x, feature.expand(n, channels, *x.shape[2:])], dim=1)


def one_hot_labels(labels: torch.Tensor, num_classes: int, dtype: torch.dtype) -> torch.Tensor:
    """Class indices [B] → one-hot [B, K]; a float [B, K] tensor (soft labels) passes through."""
    if labels.dim() == 2 and labels.is_floating_point():
        if labels.shape[1] != num_classes:
            raise ValueError(f"soft labels have {labels.shape[1]} columns, expected {num_classes}")
        return labels.to(dtype)
    return F.one_hot(labels.long().reshape(-1), num_classes).to(dtype)


# Why not F.interpolate + conv (what the paper describes, and the same function):
# nearest ×2 upsampling followed by a 3³ conv (padding 1) equals, for each of the
# 8 output phases (parity of x, y, z), a 2³ conv on the low-resolution grid whose
# taps are sums of the original ones ("sub-pixel" form). It needs 8/27 of the
# multiply-adds, never materialises the 8× larger upsampled input (nor stores it
# for the backward pass), and turns a C→1 conv at full resolution (very slow on
# CPU) into one C→8 conv at low resolution. Measured on 2 CPU cores: a paper-size
# training iteration at 128³ needs ~1.5× less CPU time, G^H's last layer ~10×.
# Along one axis, output voxel 2i+p reads upsampled voxels 2i+p-1, 2i+p, 2i+p+1,
# i.e. low-res voxels (i-1, i, i) for p = 0 and (i, i, i+1) for p = 1; phase p
# is thus a 2-tap conv over low-res voxels (i-1+p, i+p):
_PHASE_FOLD = torch.tensor(
    [
        [[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]],  # p = 0: [2-tap kernel][original 3-tap kernel]
        [[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]],  # p = 1
    ]
)


def _fold_matrix(like: torch.Tensor) -> torch.Tensor:
    """[64, 27] matrix mapping the 27 taps of a 3³ kernel to the 8 phases × 8 taps of the 2³ kernels."""
    f = _PHASE_FOLD.to(like)
    return torch.einsum("atk,bul,cvm->abctuvklm", f, f, f).reshape(64, 27)


def fold_upsample2_conv3(weight: torch.Tensor) -> torch.Tensor:
    """3³ conv weights [O, I, 3, 3, 3] → 2³ weights [8·O, I, 2, 2, 2] of the low-resolution
    conv equivalent to upsample-then-conv; output channel 8·o + 4·px + 2·py + pz computes
    output phase (px, py, pz) of channel o. One small matmul (differentiable)."""
    out_ch, in_ch = weight.shape[:2]
    w = weight.reshape(out_ch * in_ch, 27) @ _fold_matrix(weight).T  # [O·I, 8 phases · 8 taps]
    return w.view(out_ch, in_ch, 8, 8).transpose(1, 2).reshape(out_ch * 8, in_ch, 2, 2, 2)


def upsample2_conv3(x: torch.Tensor, conv: nn.Conv3d) -> torch.Tensor:
    """``conv(upsample2(x))`` for a 3³, stride-1, padding-1 ``conv``, computed on the
    low-resolution grid (same function and gradients, up to float rounding)."""
    if conv.kernel_size != (3, 3, 3) or conv.padding != (1, 1, 1) or conv.stride != (1, 1, 1):
        raise ValueError("upsample2_conv3 needs a 3x3x3 convolution with stride 1 and padding 1")
    b, _, nx, ny, nz = x.shape
    bias = conv.bias.repeat_interleave(8) if conv.bias is not None else None
    # y[:, 8·o + 4·px + 2·py + pz, i + px, j + py, k + pz] is output voxel (2i+px, 2j+py, 2k+pz)
    # of channel o (the 2-tap conv over zero-padded x is what padding=1 does).
    y = conv3d(x, fold_upsample2_conv3(conv.weight), bias, padding=1).contiguous()  # [B, 8·O, X+1, Y+1, Z+1]
    sb, sc, si, sj, sk = y.stride()
    # View y as [B, O, X, 2, Y, 2, Z, 2]: a step in px moves 4 channels and one voxel along x, etc.;
    # the reshape then writes the interleaved output in a single sequential copy.
    v = y.as_strided(
        (b, y.shape[1] // 8, nx, 2, ny, 2, nz, 2),
        (sb, 8 * sc, si, 4 * sc + si, sj, 2 * sc + sj, sk, sc + sk),
        y.storage_offset(),
    )
    return v.reshape(b, -1, 2 * nx, 2 * ny, 2 * nz)


HISTOGRAM_BINS = 64  # over [-1, 1]: about 25 HU per bin in a 1624-HU CT window


def intensity_histogram(x: torch.Tensor, bins: int = HISTOGRAM_BINS) -> torch.Tensor:
    """The share of each sample's voxels in each of ``bins`` equal intensity bins over [-1, 1], [B, bins].

    Linear binning: a voxel splits its unit weight between the two nearest bin centres, so the histogram
    is piecewise linear, and differentiable almost everywhere, in every voxel value, and needs memory of
    the volume's size only. Values outside [-1, 1] count in the end bins.
    """
    v = x.float().flatten(1).clamp(-1.0, 1.0)
    pos = (v + 1.0) * (0.5 * (bins - 1))
    lower = pos.detach().floor().clamp(0, bins - 2)
    upper_weight = pos - lower
    hist = torch.zeros(v.shape[0], bins, dtype=v.dtype, device=v.device)
    hist = hist.scatter_add(1, lower.long(), 1.0 - upper_weight).scatter_add(1, lower.long() + 1, upper_weight)
    return hist / v.shape[1]


def cumulative_log_shares(x: torch.Tensor, bins: int = HISTOGRAM_BINS) -> torch.Tensor:
    """log of the share of voxels at or below each bin of :func:`intensity_histogram`, [B, bins].

    A class defined by a ratio of such shares (the emphysema index: voxels below −950 HU over those
    below −500 HU) is a difference of two of these features, so a linear layer can compute it."""
    return torch.log(intensity_histogram(x, bins).cumsum(dim=1) + 1e-4)


def intensity_windows(x: torch.Tensor, windows, gain: torch.Tensor | float = 1.0) -> torch.Tensor:
    """``x`` [B, 1, ...] in [-1, 1] with one more channel per window (lo, hi): the intensities between lo
    and hi stretched to [-1, 1] (a display window, e.g. CT's lung window), those outside it continued
    with slope 1 (below lo: -1 - (lo - x); above hi: 1 + (x - hi)) instead of clipped, so every voxel
    keeps a gradient. A network whose first layer is spectrally normalised then sees density differences
    inside a narrow window amplified by 2 / (hi - lo) without amplifying the large edges elsewhere.
    ``gain`` in [0, 1] blends each extra channel from ``x`` itself (0) to the window (1), for a warm-up.
    No windows: ``x``."""
    if not windows:
        return x
    views = [x]
    for lo, hi in windows:
        inside = x.clamp(lo, hi)
        window = (inside - lo) * (2.0 / (hi - lo)) - 1.0 + (x - inside)
        views.append(window if isinstance(gain, float) and gain == 1.0 else x + gain * (window - x))
    return torch.cat(views, dim=1)
