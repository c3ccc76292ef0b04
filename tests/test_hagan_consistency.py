"""HA-GAN's training slab against the inference volume, and the minibatch standard deviation.

For the same z, the slab G^H produces in training (``forward_train``) must be the
slab of the volume generated at inference (``generate``), border slices
included, at low-resolution factor 4 (the paper's) and 8. The paper's zero-padded
slab is the control that shows the test can fail.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medgen.families.hagan import Discriminator, Generator, get_preset
from medgen.families.hagan.chunked import halo_slices
from medgen.families.layers import minibatch_stddev


def _gap(size: int, factor: int, context: str, seed: int = 0) -> tuple[float, np.ndarray]:
    """Mean |training slab − the same slab cut from whole-volume generation| and its per-slice profile,
    for three slabs per volume: at the first position, in the middle and at the last position."""
    torch.manual_seed(seed)
    cfg = get_preset("tiny", size, lowres_factor=factor, slab_context=context)
    g = Generator(cfg).eval()
    z = torch.randn(3, cfg.latent_dim)
    starts = torch.tensor([0, cfg.max_slab_start_lowres // 2, cfg.max_slab_start_lowres])
    with torch.no_grad():
        whole = g.selector.select_real(g.generate(z), starts)
        _, slab = g.forward_train(z, starts)
    diff = (slab - whole).abs()
    return float(diff.mean()), diff.mean(dim=(0, 1, 2, 3)).numpy()


@pytest.mark.parametrize("size, factor", [(32, 4), (64, 4), (64, 8)])
def test_exact_training_slab_is_the_inference_slab(size, factor):
    gap, per_slice = _gap(size, factor, "exact")
    assert gap < 1e-5 and per_slice.max() < 1e-5


@pytest.mark.parametrize("size, factor", [(32, 4), (64, 8)])
def test_zero_padded_slab_differs_at_its_borders(size, factor):
    # The paper's slab: the f - 1 slices next to each border see zeros in training, neighbours at inference.
    gap, per_slice = _gap(size, factor, "zero-padded")
    assert gap > 0.05
    assert per_slice[0] > 0.05 and per_slice[-1] > 0.05


def test_halo_slab_differs_only_by_groupnorm_statistics():
    # With the window's own GroupNorm statistics the difference is the statistics' alone: without
    # GroupNorm (factor 2 has none in G^H) the halo slab is exact, and at factor 4 it is smaller than
    # the zero-padded one's.
    assert _gap(32, 2, "halo")[0] < 1e-6
    assert _gap(32, 2, "zero-padded")[0] > 0.02
    halo, padded = _gap(64, 4, "halo")[0], _gap(64, 4, "zero-padded")[0]
    assert 0 < halo < padded / 2


def test_context_window_stays_inside_the_volume():
    cfg = get_preset("tiny", 64)  # A depth 16, slab 2 A-slices, max start 14
    sel = Generator(cfg).selector
    window, length, offset = sel.context_window(torch.tensor([0, 1, 7, 14]), 4, halo=1)
    assert length == 4
    assert window.tolist() == [0, 0, 6, 12] and offset.tolist() == [0, 1, 1, 2]
    # the slab never leaves its window and the window never leaves the volume
    assert ((window >= 0) & (window + length <= 16)).all() and ((offset >= 0) & (offset + 2 <= length)).all()
    assert halo_slices(Generator(cfg).high) == 1


def test_exact_slab_gradients_reach_every_generator_parameter():
    torch.manual_seed(0)
    cfg = get_preset("tiny", 32, slab_context="exact")
    g = Generator(cfg)
    x_low, slab = g(torch.randn(2, cfg.latent_dim), torch.tensor([0, 5]))
    (slab.square().mean() + x_low.square().mean()).backward()
    for name, p in g.named_parameters():
        assert p.grad is not None and float(p.grad.abs().sum()) > 0, name


# ------------------------------------------------------------------ minibatch standard deviation
def _mbstd_reference(x: np.ndarray, group: int) -> np.ndarray:
    """The appended channel, computed group by group in float64."""
    out = np.empty(x.shape[0])
    for start in range(0, x.shape[0], group):
        g = x[start : start + group].astype(np.float64)
        out[start : start + group] = np.sqrt(g.var(axis=0) + 1e-8).mean()
    return out


def test_minibatch_stddev_matches_reference_and_never_mixes_parts():
    gen = torch.Generator().manual_seed(0)
    real = torch.randn(4, 3, 2, 2, 2, generator=gen)
    fake = torch.randn(4, 3, 2, 2, 2, generator=gen) * 0.1
    out = minibatch_stddev(torch.cat([real, fake]), group_size=4, parts=2)
    assert out.shape == (8, 4, 2, 2, 2) and torch.equal(out[:, :3], torch.cat([real, fake]))
    ref = _mbstd_reference(torch.cat([real, fake]).numpy(), 4)
    assert np.allclose(out[:, 3, 0, 0, 0].numpy(), ref, rtol=1e-5)
    assert (out[:, 3] == out[:, 3, :1, :1, :1]).all()  # constant over positions
    # the real half's feature does not depend on the generated half
    other = minibatch_stddev(torch.cat([real, fake * 5]), group_size=4, parts=2)
    assert torch.equal(other[:4, 3], out[:4, 3]) and not torch.allclose(other[4:, 3], out[4:, 3])
    # parts of 3 with group size 2: groups of 3 do not fit, groups of 1 do (std 0)
    odd = minibatch_stddev(torch.randn(6, 2, 2, 2, 2, generator=gen), group_size=2, parts=2)
    assert float(odd[:, 2].abs().max()) < 1e-3
    with pytest.raises(ValueError, match="equal parts"):
        minibatch_stddev(torch.randn(5, 1, 2, 2, 2), 2, parts=2)


def test_discriminator_sees_the_batch_spread():
    # D with the minibatch feature scores a batch of identical volumes differently from the same
    # volume inside a varied batch; without it a sample's logit ignores the rest of the batch.
    torch.manual_seed(0)
    for mbstd, differs in ((4, True), (0, False)):
        cfg = get_preset("tiny", 32, minibatch_std=mbstd)
        d = Discriminator(cfg).eval()
        x = torch.randn(4, 1, 32, 32, cfg.slab_len)
        low = torch.randn(4, 1, 8, 8, 8)
        same = x[:1].expand(4, -1, -1, -1, -1)
        same_low = low[:1].expand(4, -1, -1, -1, -1)
        with torch.no_grad():
            a = d(x, torch.zeros(4), low)[0][0]
            b = d(same, torch.zeros(4), same_low)[0][0]
        assert (abs(float(a - b)) > 1e-4) == differs
