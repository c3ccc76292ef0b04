"""Memory-bounded full-resolution generation: G^H run on depth chunks of A.

Running G^H on the whole feature map A at 256³ materialises e.g. a
32-channel 256³ upsampled activation (2 GiB in float32). Here G^H runs on
chunks of ``chunk`` A-slices along the depth (last) axis, so peak memory scales
with the chunk, while the output equals the unchunked ``high_block(A)`` up to
float rounding.

Two things make chunking exact:

* **Halo.** Each chunk is extended by a halo of A-slices on both sides (clipped
  at the volume's ends, where the zero padding is then the same as unchunked)
  so that the convolutions see real neighbours; the halo's output is dropped.
  Every stage [×2 upsample → 3³ conv] doubles the depth of the wrong border and
  adds the conv's radius, so a halo of 1 A-slice suffices for G^H (computed by
  :func:`halo_slices`).
* **GroupNorm statistics.** GroupNorm normalises with the mean and variance over
  the whole spatial extent of each (sample, group); a chunk alone would give
  different statistics. For each GroupNorm layer in turn, one pass over the
  chunks records, per sample and channel, the mean and variance of that layer's
  input over the chunk's own slices (halo excluded); these combine exactly into
  the per-(sample, group) statistics (law of total variance, in float64). The
  final pass recomputes every chunk normalising each layer with these global
  statistics. G^H has log2(f) - 1 GroupNorm layers (one at f = 4), so
  generation costs log2(f) passes over the chunks; only the last one runs the
  whole block.

Like ``HighResBlock.forward``, each [×2 upsample → 3³ conv] stage is computed
on the low-resolution grid (:func:`medgen.families.layers.upsample2_conv3`), so no
upsampled input is ever materialised.

Runs without gradients (inference only).
"""

from __future__ import annotations

import math
from typing import Iterator

import torch
from torch import nn

from medgen.families.layers import upsample2_conv3


def halo_slices(high_block: nn.Module) -> int:
    """A-slices of halo needed on each side of a chunk so the kept output is exact.

    After k stages of [×2 upsample, conv of depth radius r_k] the border region
    computed from wrong (missing) neighbours is w_k = 2·w_{k-1} + r_k slices deep,
    which must fit into the halo, 2^k·halo slices at that resolution.
    """
    wrong, halo = 0, 0
    for k, conv in enumerate(high_block.convs, start=1):
        wrong = 2 * wrong + conv.kernel_size[-1] // 2
        halo = max(halo, math.ceil(wrong / 2**k))
    return halo


def _normalise(h: torch.Tensor, norm: nn.GroupNorm, mean: torch.Tensor, rstd: torch.Tensor) -> torch.Tensor:
    """GroupNorm of ``h`` [B, C, ...] with given per-(sample, group) mean and 1/std [B, G]."""
    per_group = h.shape[1] // norm.num_groups
    scale = rstd.repeat_interleave(per_group, dim=1).to(h.dtype)  # [B, C]
    shift = -mean.repeat_interleave(per_group, dim=1).to(h.dtype) * scale
    if norm.affine:
        scale = scale * norm.weight
        shift = shift * norm.weight + norm.bias
    view = scale.shape + (1,) * (h.dim() - 2)
    return torch.addcmul(shift.view(view), h, scale.view(view))


def _run(
    high_block: nn.Module, a: torch.Tensor, stats: list[tuple[torch.Tensor, torch.Tensor]], stop: int | None = None
) -> torch.Tensor:
    """G^H on a chunk of A with the given GroupNorm statistics (same layers as ``HighResBlock.forward``).

    With ``stop = j`` returns the input of GroupNorm layer j (needs ``stats[:j]``);
    with ``stop = None`` the block's output (needs all statistics).
    """
    h = a
    last = len(high_block.convs) - 1
    for i, conv in enumerate(high_block.convs):
        h = upsample2_conv3(h, conv)
        if i == last:
            return torch.tanh(h)
        if i == stop:
            return h
        h = _normalise(h, high_block.norms[i], *stats[i]).relu_()
    raise AssertionError("unreachable")


def _group_stats(
    counts: list[int], means: list[torch.Tensor], variances: list[torch.Tensor], norm: nn.GroupNorm
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-(sample, group) mean and 1/sqrt(var + eps) [B, G] from per-chunk, per-channel
    counts, means and (biased) variances [B, C], combined exactly in float64
    (law of total variance; all channels of a chunk have the same count)."""
    m = torch.stack(means)  # [chunks, B, C]
    n = torch.tensor(counts, dtype=torch.float64, device=m.device).view(-1, 1, 1, 1)  # [chunks, 1, 1, 1]
    v = torch.stack(variances)
    k, b, c = m.shape
    m = m.view(k, b, norm.num_groups, -1)  # [chunks, B, G, C/G]
    v = v.view(k, b, norm.num_groups, -1)
    total = n.sum() * m.shape[-1]
    mean = (n * m).sum(dim=(0, 3)) / total
    var = (n * (v + (m - mean.unsqueeze(-1)).square())).sum(dim=(0, 3)) / total
    return mean, torch.rsqrt(var + norm.eps)


def _chunks(depth: int, chunk: int, halo: int) -> Iterator[tuple[int, int, int, int]]:
    """(first, end) owned A-slices and (first, end) including the halo, for each chunk."""
    for lo in range(0, depth, chunk):
        hi = min(lo + chunk, depth)
        yield lo, hi, max(0, lo - halo), min(depth, hi + halo)


@torch.no_grad()
def volume_norm_stats(high_block: nn.Module, a: torch.Tensor, chunk: int | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Whole-volume statistics of every GroupNorm layer of G^H on ``a``: [(mean, 1/std) [B, G], ...].

    Computed in depth chunks of ``chunk`` A-slices (None: one chunk), pass by pass,
    without gradients. With them :func:`high_res_with_stats` turns any depth window
    of ``a`` into exactly the window's part of ``high_block(a)``.
    """
    depth = a.shape[-1]
    chunk = depth if chunk is None else chunk
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1 A-slice, got {chunk}")
    halo = halo_slices(high_block)
    stats: list[tuple[torch.Tensor, torch.Tensor]] = []
    for j, norm in enumerate(high_block.norms):
        level = 2 ** (j + 1)  # resolution of layer j relative to A
        counts, means, variances = [], [], []  # per chunk, per (sample, channel)
        for lo, hi, lo_h, hi_h in _chunks(depth, chunk, halo):
            h = _run(high_block, a[..., lo_h:hi_h], stats, stop=j)
            h = h[..., (lo - lo_h) * level : (hi - lo_h) * level]
            var, mean = torch.var_mean(h.float(), dim=(2, 3, 4), correction=0)
            counts.append(h[0, 0].numel())
            means.append(mean.double())
            variances.append(var.double())
            del h
        stats.append(_group_stats(counts, means, variances, norm))
    return stats


def high_res_with_stats(
    high_block: nn.Module, a: torch.Tensor, stats: list[tuple[torch.Tensor, torch.Tensor]]
) -> torch.Tensor:
    """G^H on ``a`` (a depth window of A) normalising with the given statistics (:func:`volume_norm_stats`).

    Differentiable with respect to ``a`` and G^H's weights; the statistics are
    constants. The output slices whose receptive field lies inside the window
    equal those of G^H on the whole volume.
    """
    return _run(high_block, a, stats)


@torch.no_grad()
def iter_high_res_chunks(high_block: nn.Module, a: torch.Tensor, chunk: int) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield (first output slice, output slab [B, 1, S, S, f·n]) for successive depth chunks.

    ``high_block`` is a G^H (:class:`medgen.families.hagan.HighResBlock`), ``a`` the
    feature map [B, C_A, S/f, S/f, D_A] and ``chunk`` the number of A-slices per
    chunk (the last chunk may be shorter); each yields f·chunk output slices.
    The concatenation along the last axis equals ``high_block(a)``.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1 A-slice, got {chunk}")
    depth = a.shape[-1]
    scale = 2 ** len(high_block.convs)  # = f, the upsampling factor of G^H
    halo = halo_slices(high_block)

    # Passes 1..n_norms: global statistics of each GroupNorm layer's input, in order.
    stats = volume_norm_stats(high_block, a, chunk)

    # Final pass: the output, chunk by chunk.
    for lo, hi, lo_h, hi_h in _chunks(depth, chunk, halo):
        out = _run(high_block, a[..., lo_h:hi_h], stats)
        yield lo * scale, out[..., (lo - lo_h) * scale : (hi - lo_h) * scale]


@torch.no_grad()
def high_res_chunked(
    high_block: nn.Module, a: torch.Tensor, chunk: int, out: torch.Tensor | None = None
) -> torch.Tensor:
    """G^H on the whole feature map ``a``, computed in depth chunks of ``chunk`` A-slices.

    Equal to ``high_block(a)`` up to float rounding (GroupNorm uses whole-volume
    statistics; see the module docstring). The result is written into ``out``
    (preallocated [B, 1, S, S, S], e.g. float16 or a memory map) if given, else
    into a new tensor. Peak extra memory: G^H's activations for chunk + 2 halo
    A-slices.
    """
    f = 2 ** len(high_block.convs)
    b, _, x, y, z = a.shape
    if out is None:
        out = a.new_empty(b, 1, x * f, y * f, z * f)
    for start, slab in iter_high_res_chunks(high_block, a, chunk):
        out[..., start : start + slab.shape[-1]] = slab
    return out
