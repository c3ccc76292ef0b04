"""Decoding latents in depth chunks, equal to whole-volume decoding, in bounded memory.

A 256³ volume decoded at once holds several full-resolution feature maps of the decoder's
widest level (tens of channels × 256³ floats each, GBs); decoding slabs of the latent
holds only a slab of them. Two things make slab-wise decoding differ from whole-volume
decoding, and both are removed here:

* **Borders.** A decoder output voxel depends on latents up to :func:`decoder_halo`
  latent slices away (the receptive field of its convolutions). Each chunk is decoded
  with that many extra latent slices on each side (fewer at the volume's own borders,
  where whole-volume decoding pads with zeros too) and the extra output is cropped.
  The context is cropped block by block as well, to what the rest of the decoder still
  needs (:func:`block_reaches`: 6 latent slices at the input of the ``tiny`` decoder, 1 at
  its full-resolution blocks), so the expensive full-resolution blocks run on little more
  than the chunk itself.
* **GroupNorm statistics.** Every GroupNorm of the decoder normalises with the mean and
  variance of its whole input, which no single chunk sees. They are computed layer by
  layer: pass k runs the chunks up to GroupNorm k (the earlier ones already use their
  whole-volume statistics), accumulates sums and sums of squares over each chunk's own
  (cropped) part in float64, and stops; a last pass decodes with all statistics known.
  This costs about (number of GroupNorms at full resolution + 1) decodes of the
  full-resolution levels, the price of exactness.

Sliding-window decoding with overlapping windows (MONAI's ``SlidingWindowInferer``, as
MAISI decodes) normalises each window by its own statistics and blends the seams, so it
is close to but not equal to whole-volume decoding; this module is exact to float
rounding (tests: chunked equals unchunked within 1e-4).

The decoder must be a chain of blocks without attention (the ``ldm-autoencoder``
family's configuration); ``decode`` is MONAI ``AutoencoderKL.decode``.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from medgen.core.errors import UsageError


class _Stop(Exception):
    """Raised inside a collecting GroupNorm: the rest of the decoder is not needed in this pass."""


@dataclass
class _Chunk:
    """Latent slices [keep_lo, keep_hi) of the volume are kept; the tensor at hand covers [lo, hi)."""

    keep_lo: int = 0
    keep_hi: int = 0
    lo: int = 0
    hi: int = 1


@dataclass
class _NormState:
    norms: list[nn.GroupNorm]
    chunk: _Chunk = field(default_factory=_Chunk)
    collect: int = -1  # index of the GroupNorm whose statistics this pass accumulates
    sums: list[torch.Tensor | None] = field(default_factory=list)
    squares: list[torch.Tensor | None] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    stats: list[tuple[torch.Tensor, torch.Tensor] | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.norms)
        self.sums, self.squares, self.counts, self.stats = [None] * n, [None] * n, [0] * n, [None] * n


def _grouped(x: torch.Tensor, groups: int) -> torch.Tensor:
    return x.reshape(x.shape[0], groups, -1)


def _norm_forward(state: _NormState, k: int, norm: nn.GroupNorm):
    def forward(x: torch.Tensor) -> torch.Tensor:
        if k == state.collect:
            c = state.chunk
            scale = x.shape[2] // (c.hi - c.lo)  # this layer's voxels per latent slice
            part = _grouped(x[:, :, (c.keep_lo - c.lo) * scale:(c.keep_hi - c.lo) * scale].double(), norm.num_groups)
            s, q = part.sum(-1), part.pow(2).sum(-1)
            state.sums[k] = s if state.sums[k] is None else state.sums[k] + s
            state.squares[k] = q if state.squares[k] is None else state.squares[k] + q
            state.counts[k] += part.shape[-1]
            raise _Stop
        stats = state.stats[k]
        if stats is None:
            return F.group_norm(x, norm.num_groups, norm.weight, norm.bias, norm.eps)
        mean, inv = stats
        # in place after the first subtraction: one full-size temporary, not four (this runs under no_grad)
        y = _grouped(x, norm.num_groups) - mean[..., None].to(x.dtype)
        y.mul_(inv[..., None].to(x.dtype))
        y = y.reshape(x.shape)
        if norm.affine:
            shape = (1, -1) + (1,) * (x.dim() - 2)
            y.mul_(norm.weight.reshape(shape)).add_(norm.bias.reshape(shape))
        return y

    return forward


@contextlib.contextmanager
def _patched_norms(decoder: nn.Module) -> Iterator[_NormState]:
    """The decoder's GroupNorms, routed through :func:`_norm_forward` while the context is open."""
    norms = [m for m in decoder.modules() if isinstance(m, nn.GroupNorm)]
    state = _NormState(norms)
    for k, norm in enumerate(norms):
        norm.forward = _norm_forward(state, k, norm)  # instance attribute: shadows GroupNorm.forward
    try:
        yield state
    finally:
        for norm in norms:
            del norm.forward


def _check_decoder(autoencoder: nn.Module) -> None:
    from monai.networks.blocks import SpatialAttentionBlock

    if any(isinstance(m, SpatialAttentionBlock) for m in autoencoder.decoder.modules()):
        raise UsageError("chunked decoding needs a decoder without attention (every output voxel then depends "
                         "on nearby latents only)")


def _blocks(autoencoder: nn.Module) -> list[nn.Module]:
    """The decoding chain of MONAI's ``AutoencoderKL.decode``: ``post_quant_conv``, then the decoder's blocks."""
    return [autoencoder.post_quant_conv, *autoencoder.decoder.blocks]


@torch.no_grad()
def block_reaches(autoencoder: nn.Module, latent_channels: int, factor: int) -> list[int]:
    """For each block of the decoding chain: latent slices on each side that the decoder output depends on,
    counted from that block's input (the first entry is the whole decoder's receptive field in depth).

    Measured rather than derived: the chain runs on a latent slab of zeros with every GroupNorm
    replaced by a fixed affine map (so that no voxel sees global statistics); then, block by
    block, the input slices of the middle latent slice are perturbed and the output slices
    that change give the reach, in latent slices, in both directions.
    """
    _check_decoder(autoencoder)
    blocks = _blocks(autoencoder)
    with _patched_norms(autoencoder.decoder) as state:
        for k, norm in enumerate(state.norms):
            g = norm.num_groups
            state.stats[k] = (torch.zeros(1, g, dtype=torch.float64), torch.ones(1, g, dtype=torch.float64))
        depth = 3 + 2 * sum(1 for m in autoencoder.decoder.modules() if isinstance(m, nn.Conv3d))
        middle = depth // 2
        param = next(autoencoder.parameters())
        x = torch.zeros((1, latent_channels, depth, 2, 2), dtype=param.dtype, device=param.device)
        inputs = []
        for block in blocks:
            inputs.append(x)
            x = block(x)
        base = x
        reaches = []
        gen = torch.Generator().manual_seed(0)
        for i, inp in enumerate(inputs):
            scale = inp.shape[2] // depth
            poked = inp.clone()
            part = poked[:, :, middle * scale:(middle + 1) * scale]
            part += torch.randn(part.shape, generator=gen).to(part)
            y = poked
            for block in blocks[i:]:
                y = block(y)
            changed = torch.nonzero((y - base).abs().amax(dim=(0, 1, 3, 4)) > 0).flatten()
            if changed.numel() == 0:
                reaches.append(0)
                continue
            first, last = int(changed.min()) // factor, int(changed.max()) // factor
            reaches.append(max(middle - first, last - middle))
    return reaches


def decoder_halo(autoencoder: nn.Module, latent_channels: int, factor: int) -> int:
    """Latent slices on each side that a decoder output slice depends on (its receptive field in depth)."""
    return block_reaches(autoencoder, latent_channels, factor)[0]


def _slabs(depth: int, chunk: int, halo: int) -> list[tuple[int, int, int, int]]:
    """(slab start, slab end, kept start, kept end) in latent slices, for chunks of ``chunk`` kept slices."""
    out = []
    for a in range(0, depth, chunk):
        b = min(a + chunk, depth)
        out.append((max(0, a - halo), min(depth, b + halo), a, b))
    return out


def _decode_slab(blocks: list[nn.Module], reaches: list[int], z: torch.Tensor, state: _NormState, s0: int, s1: int,
                 a: int, b: int) -> torch.Tensor:
    """Decode latent slices [s0, s1) to keep [a, b), cropping before each block to what the rest of the chain needs
    (``reaches``), so that the full-resolution blocks run on little more than the kept slices."""
    x, lo, hi = z[:, :, s0:s1], s0, s1
    for block, reach in zip(blocks, reaches):
        new_lo, new_hi = max(lo, a - reach), min(hi, b + reach)
        if (new_lo, new_hi) != (lo, hi):
            scale = x.shape[2] // (hi - lo)
            x = x[:, :, (new_lo - lo) * scale:(new_hi - lo) * scale].contiguous()  # the uncropped tensor is freed
            lo, hi = new_lo, new_hi
        state.chunk = _Chunk(a, b, lo, hi)
        x = block(x)
    scale = x.shape[2] // (hi - lo)
    return x[:, :, (a - lo) * scale:(b - lo) * scale]


@torch.no_grad()
def decode_chunked(autoencoder: nn.Module, z: torch.Tensor, chunk: int, factor: int, halo: int | None = None,
                   out_device: torch.device | str = "cpu") -> torch.Tensor:
    """``autoencoder.decode(z)`` computed ``chunk`` latent slices (in depth) at a time: [B, 1, D·f, H·f, W·f].

    ``z``: latents [B, C, D, H, W]; ``factor`` f: output voxels per latent voxel. ``halo``: at
    most this many latent slices of context per side (default: the decoder's receptive field,
    :func:`block_reaches`; a smaller one gives another volume and exists for testing). The
    result is assembled on ``out_device`` (the CPU by default: only the output volume is held
    whole).
    """
    if chunk < 1:
        raise UsageError(f"--chunk {chunk}: need at least 1 latent slice")
    reaches = block_reaches(autoencoder, z.shape[1], factor)
    if halo is not None:
        reaches = [min(r, halo) for r in reaches]
    blocks = _blocks(autoencoder)
    depth = z.shape[2]
    slabs = _slabs(depth, chunk, reaches[0])
    out: torch.Tensor | None = None
    with _patched_norms(autoencoder.decoder) as state:
        # passes 0..K-1: the whole-volume statistics of GroupNorm k, from the kept part of every slab
        for k in range(len(state.norms)):
            state.collect = k
            for s0, s1, a, b in slabs:
                try:
                    _decode_slab(blocks, reaches, z, state, s0, s1, a, b)
                except _Stop:
                    pass
            mean = state.sums[k] / state.counts[k]
            var = (state.squares[k] / state.counts[k] - mean.pow(2)).clamp_min(0.0)
            state.stats[k] = (mean, torch.rsqrt(var + state.norms[k].eps))
            state.sums[k] = state.squares[k] = None
        # last pass: decode every slab with the whole-volume statistics and keep its own part
        state.collect = -1
        for s0, s1, a, b in slabs:
            kept = _decode_slab(blocks, reaches, z, state, s0, s1, a, b).to(out_device)
            f = kept.shape[2] // (b - a)
            if out is None:
                out = torch.empty((kept.shape[0], kept.shape[1], depth * f, *kept.shape[3:]), dtype=kept.dtype,
                                  device=out_device)
            out[:, :, a * f:b * f] = kept
            del kept
    assert out is not None
    return out
