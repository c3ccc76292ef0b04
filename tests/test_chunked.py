"""Chunked G^H inference equals unchunked G^H; the sub-pixel up-convolution equals
upsample + conv; chunking bounds the size of the activations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import medgen.families.hagan.chunked as chunked
from medgen.families.hagan.chunked import halo_slices, high_res_chunked, iter_high_res_chunks
from medgen.families.hagan import Generator, get_preset
from medgen.families.layers import upsample2, upsample2_conv3


def _generator(size: int, f: int, groups: int = 2, seed: int = 0) -> Generator:
    """Tiny generator with random (non-default) GroupNorm affine parameters."""
    torch.manual_seed(seed)
    cfg = get_preset("tiny", size, lowres_factor=f, norm_groups=groups, slab_fraction=1 / 8 if size // f >= 8 else 1 / 4)
    g = Generator(cfg).eval()
    with torch.no_grad():
        for norm in g.high.norms:
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.normal_(0.0, 0.3)
    return g


def _features(g: Generator, batch: int) -> torch.Tensor:
    with torch.no_grad():
        return g.features(torch.randn(batch, g.cfg.latent_dim))


@pytest.mark.parametrize("size, batch", [(32, 2), (64, 1)])
@pytest.mark.parametrize("chunk", [1, 3, 5, 8, 100])
def test_chunked_equals_unchunked(size, batch, chunk):
    g = _generator(size, 4)
    a = _features(g, batch)  # [B, 8, S/4, S/4, S/4]
    with torch.no_grad():
        ref = g.high(a)
    out = high_res_chunked(g.high, a, chunk)
    assert out.shape == ref.shape == (batch, 1, size, size, size)
    assert float((out - ref).abs().max()) <= 1e-5
    assert float(ref.std()) > 0.05  # the comparison is not between near-constant volumes


@pytest.mark.parametrize("f, groups", [(2, 2), (8, 2)])
def test_chunked_other_lowres_factors(f, groups):
    # f = 2: G^H has no GroupNorm; f = 8: two GroupNorm layers, statistics found in two passes.
    g = _generator(32, f, groups)
    assert len(g.high.norms) == f.bit_length() - 2
    a = _features(g, 2)
    with torch.no_grad():
        ref = g.high(a)
    for chunk in (1, 3):
        assert float((high_res_chunked(g.high, a, chunk) - ref).abs().max()) <= 1e-5


def test_generate_with_chunks_and_iterator():
    g = _generator(32, 4)
    z = torch.randn(2, g.cfg.latent_dim)
    with torch.no_grad():
        ref = g.generate(z)
        out = g.generate(z, chunk=3)
    assert float((out - ref).abs().max()) <= 1e-5
    a = _features(g, 1)
    pieces = list(iter_high_res_chunks(g.high, a, 3))  # A depth 8 → chunks of 3, 3, 2 A-slices
    assert [start for start, _ in pieces] == [0, 12, 24]
    assert [p.shape[-1] for _, p in pieces] == [12, 12, 8]
    half = torch.zeros(1, 1, 32, 32, 32, dtype=torch.float16)
    high_res_chunked(g.high, a, 3, out=half)
    with torch.no_grad():
        assert float((half.float() - g.high(a)).abs().max()) <= 1e-3  # float16 rounding


def test_naive_chunking_is_wrong():
    # The two ingredients matter: per-chunk GroupNorm statistics, or no halo, change the result.
    g = _generator(32, 4)
    a = _features(g, 2)
    with torch.no_grad():
        ref = g.high(a)
        per_chunk_stats = torch.cat(
            [g.high(a[..., max(0, lo - 1) : lo + 3])[..., (lo - max(0, lo - 1)) * 4 :][..., :8] for lo in range(0, 8, 2)],
            dim=-1,
        )
    assert per_chunk_stats.shape == ref.shape
    assert float((per_chunk_stats - ref).abs().max()) > 1e-3
    original = chunked.halo_slices
    try:
        chunked.halo_slices = lambda block: 0
        no_halo = high_res_chunked(g.high, a, 2)
    finally:
        chunked.halo_slices = original
    assert float((no_halo - ref).abs().max()) > 1e-3


def test_halo_is_one_lowres_slice():
    for f in (2, 4, 8):
        assert halo_slices(_generator(64, f).high) == 1


def test_activations_scale_with_chunk(monkeypatch):
    g = _generator(64, 4)
    a = _features(g, 1)  # A depth 16
    shapes = []

    def recording(x, conv):
        y = upsample2_conv3(x, conv)
        shapes.append(tuple(y.shape))
        return y

    monkeypatch.setattr(chunked, "upsample2_conv3", recording)
    high_res_chunked(g.high, a, 2)
    assert len(shapes) == 2 * 8 + 8  # pass 1: first stage only; pass 2: both stages; 8 chunks
    for shape in shapes:
        in_plane, depth = shape[-2], shape[-1]
        # at most chunk + 2 halo = 4 of the 16 A-slices, i.e. a quarter of the whole-volume activation
        assert depth <= 4 * in_plane // 16
    assert max(shapes, key=math.prod) == (1, 1, 64, 64, 16)


@pytest.mark.parametrize("shape", [(2, 5, 3, 4, 6), (1, 3, 1, 2, 1)])
def test_subpixel_upconv_equals_upsample_then_conv(shape):
    torch.manual_seed(1)
    conv = torch.nn.Conv3d(shape[1], 4, kernel_size=3, padding=1)
    x = torch.randn(*shape, requires_grad=True)
    out = upsample2_conv3(x, conv)
    # independent reference: explicit nearest upsampling by repetition, then the conv
    rep = x.repeat_interleave(2, 2).repeat_interleave(2, 3).repeat_interleave(2, 4)
    ref = F.conv3d(rep, conv.weight, conv.bias, padding=1)
    assert out.shape == ref.shape
    assert torch.allclose(out, ref, atol=1e-5)
    assert torch.allclose(ref, conv(upsample2(x)), atol=1e-6)
    # same gradients with respect to the input and the conv's parameters
    g = torch.randn_like(ref)
    grads = torch.autograd.grad(out, (x, conv.weight, conv.bias), g)
    grads_ref = torch.autograd.grad(ref, (x, conv.weight, conv.bias), g)
    for a, b in zip(grads, grads_ref):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)


def test_chunk_must_be_positive():
    g = _generator(32, 4)
    with pytest.raises(ValueError):
        high_res_chunked(g.high, _features(g, 1), 0)
