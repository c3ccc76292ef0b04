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

from medgen.core.errors import UsageError
from medgen.families.hagan import Discriminator, Generator, get_preset
from medgen.families.hagan.chunked import halo_slices
from medgen.families.layers import minibatch_stddev


def _gap(size: int, factor: int, context: str, seed: int = 0, high_width: float | None = None) -> tuple[float, np.ndarray]:
    """Mean |training slab − the same slab cut from whole-volume generation| and its per-slice profile,
    for three slabs per volume: at the first position, in the middle and at the last position."""
    torch.manual_seed(seed)
    cfg = get_preset("tiny", size, lowres_factor=factor, slab_context=context, high_width=high_width)
    g = Generator(cfg).eval()
    z = torch.randn(3, cfg.latent_dim)
    starts = torch.tensor([0, cfg.max_slab_start_lowres // 2, cfg.max_slab_start_lowres])
    with torch.no_grad():
        whole = g.selector.select_real(g.generate(z), starts)
        _, slab = g.forward_train(z, starts)
    diff = (slab - whole).abs()
    return float(diff.mean()), diff.mean(dim=(0, 1, 2, 3)).numpy()


@pytest.mark.parametrize("size, factor, high_width", [(32, 4, None), (64, 4, None), (64, 8, None), (64, 8, 0.5)])
def test_exact_training_slab_is_the_inference_slab(size, factor, high_width):
    gap, per_slice = _gap(size, factor, "exact", high_width=high_width)
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


def test_minibatch_stddev_channels_average_each_set_of_features_on_its_own():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(4, 6, 2, 2, 2, generator=gen)
    x[:, 3:] *= 0.01  # the second set of features barely varies
    out = minibatch_stddev(x, group_size=4, parts=1, channels=2)
    assert out.shape == (4, 8, 2, 2, 2) and torch.equal(out[:, :6], x)
    for k, features in enumerate((slice(0, 3), slice(3, 6))):
        ref = _mbstd_reference(x[:, features].numpy(), 4)
        assert np.allclose(out[:, 6 + k, 0, 0, 0].numpy(), ref, rtol=1e-5)
    assert float(out[0, 7, 0, 0, 0]) < 0.02 < float(out[0, 6, 0, 0, 0])  # hidden in one average: 0.4
    one = minibatch_stddev(x, group_size=4)
    assert torch.allclose(one[:, 6], (out[:, 6] + out[:, 7]) / 2, rtol=1e-5)  # equal sets: the mean of both
    with pytest.raises(ValueError, match="6 features do not split into 4"):
        minibatch_stddev(x, 4, channels=4)


def test_minibatch_std_channels_widen_the_last_layers_input():
    base, four = get_preset("tiny", 64), get_preset("tiny", 64, minibatch_std_channels=4)
    d0, d4 = Discriminator(base), Discriminator(four)
    assert d4.low.final_conv.weight.shape[1] == d0.low.final_conv.weight.shape[1] + 3 == 32 + 4
    assert d4.high.final_conv.weight.shape[1] == d0.high.final_conv.weight.shape[1] + 3 == 64 + 4
    x, low = torch.randn(8, 1, 64, 64, four.slab_len), torch.randn(8, 1, 16, 16, 16)
    logit, _ = d4.eval()(x, torch.zeros(8), low, parts=2)
    assert logit.shape == (8,) and torch.isfinite(logit).all()
    with pytest.raises(UsageError, match="D\\^H's last layer has 64 features, not a multiple of 3"):
        get_preset("tiny", 64, minibatch_std_channels=3)
    with pytest.raises(UsageError, match="D\\^L's last layer has 32 features, not a multiple of 64"):
        get_preset("tiny", 64, minibatch_std_channels=64)
    assert get_preset("tiny", 64, minibatch_std=0, minibatch_std_channels=3).minibatch_std_channels == 3  # unused
    # 32³ at factor 8: D^L has no convolution, its one input channel takes the feature; 2 sets cannot split it
    with pytest.raises(UsageError, match="D\\^L's last layer has 1 features, not a multiple of 2"):
        get_preset("tiny", 32, lowres_factor=8, slab_fraction=0.25, minibatch_std_channels=2)
    assert get_preset("tiny", 32, lowres_factor=8, slab_fraction=0.25, use_lowres=False, minibatch_std_channels=2).use_lowres is False
    with pytest.raises(UsageError, match="integer >= 1"):
        get_preset("tiny", 64, minibatch_std_channels=0)


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


def _linear_binning_reference(values: np.ndarray, bins: int) -> np.ndarray:
    """Each value's unit weight split between its two nearest bin centres over [-1, 1], by hand."""
    hist = np.zeros(bins)
    step = 2.0 / (bins - 1)
    for v in np.clip(values, -1, 1):
        k = min(int((v + 1) // step), bins - 2)
        w = (v + 1) / step - k
        hist[k] += 1 - w
        hist[k + 1] += w
    return hist / len(values)


def test_intensity_histogram_is_linear_binning_and_differentiable():
    from medgen.families.layers import cumulative_log_shares, intensity_histogram

    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(3, 1, 4, 4, 2, generator=gen) * 2.4 - 1.2).requires_grad_(True)  # some values outside [-1, 1]
    h = intensity_histogram(x, bins=9)
    for i in range(3):
        assert np.allclose(h[i].detach().numpy(), _linear_binning_reference(x[i].detach().numpy().ravel(), 9), atol=1e-6)
    assert torch.allclose(h.sum(1), torch.ones(3))
    # a voxel at a bin centre puts all its weight there; the mean intensity is preserved by linear binning
    centre = torch.full((1, 1, 2, 2, 2), -0.5)
    assert intensity_histogram(centre, 5)[0].tolist() == [0, 1, 0, 0, 0]
    inside = x.detach().clamp(-1, 1)
    centres = torch.linspace(-1, 1, 9)
    assert torch.allclose(intensity_histogram(inside, 9) @ centres, inside.flatten(1).mean(1), atol=1e-6)
    # the log shares at or below each bin: rising, log(1 + 1e-4) at the last bin
    c = cumulative_log_shares(x, 9)
    assert (c[:, 1:] >= c[:, :-1]).all() and torch.allclose(c[:, -1], torch.full((3,), float(np.log(1 + 1e-4))), atol=1e-6)
    # moving voxels moves the histogram: the gradient reaches every voxel inside the range
    h[:, 3].sum().backward()
    grad = x.grad.flatten(1)
    vals = x.detach().flatten(1)
    step = 2.0 / 8
    near = ((vals - (-1 + 3 * step)).abs() < step) & (vals.abs() < 1)
    assert (grad[near] != 0).all() and (grad[~near] == 0).all()


def test_discriminator_histogram_input():
    """histogram_bins > 0: D^H's and D^L's logits depend on the intensity distribution through the extra
    input (different with the histogram branch's weights changed, for the same convolutional features)."""
    torch.manual_seed(0)
    cfg = get_preset("tiny", 32, histogram_bins=16, minibatch_std=0)
    d = Discriminator(cfg).eval()
    slab, low, pos = torch.randn(2, 1, 32, 32, cfg.slab_len), torch.randn(2, 1, 8, 8, 8), torch.tensor([0.0, 1.0])
    with torch.no_grad():
        before = d(slab, pos, low)[0]
        high_only, low_only = d.high(slab, pos)[0], d.low(low)[0]
        w = d.high.histogram.parametrizations.weight.original
        w.add_(torch.randn_like(w))  # (a scale would be undone by the spectral normalisation)
        assert not torch.allclose(d.high(slab, pos)[0], high_only)
        assert torch.equal(d.low(low)[0], low_only)
        w = d.low.histogram[0].parametrizations.weight.original
        w.add_(torch.randn_like(w))
        assert not torch.allclose(d.low(low)[0], low_only)
    assert torch.allclose(before, (high_only + low_only) / 2)
    plain = Discriminator(get_preset("tiny", 32, minibatch_std=0))
    assert plain.high.histogram is None and plain.low.histogram is None
    extra = sum(p.numel() for p in d.parameters()) - sum(p.numel() for p in plain.parameters())
    hidden = cfg.channels(64)
    assert extra == (16 * hidden + hidden) + hidden * hidden + (16 * hidden + hidden + hidden + 1)
    with pytest.raises(Exception, match="histogram_bins"):
        get_preset("tiny", 32, histogram_bins=1)


# ------------------------------------------------------------------ intensity windows
def test_intensity_windows_stretch_and_clip():
    from medgen.families.layers import intensity_windows

    leaf = torch.tensor([-0.99, -0.9, -0.6, -0.37, 0.2, 1.0], requires_grad=True)
    x = leaf.view(1, 1, 6, 1, 1)
    out = intensity_windows(x, ((-1.0, -0.36), (0.0, 0.5)))
    assert out.shape == (1, 3, 6, 1, 1) and torch.equal(out[:, :1], x)
    vals = x.detach().flatten().numpy().astype(np.float64)
    # by hand: stretched inside the window, continued with slope 1 outside it
    lung = np.where(vals > -0.36, 1 + (vals + 0.36), (vals + 1.0) / 0.64 * 2 - 1)
    high = np.where(vals < 0.0, -1 + vals, np.where(vals > 0.5, 1 + (vals - 0.5), vals / 0.5 * 2 - 1))
    np.testing.assert_allclose(out[0, 1].flatten().detach().numpy(), lung, atol=1e-6)
    np.testing.assert_allclose(out[0, 2].flatten().detach().numpy(), high, atol=1e-6)
    out[:, 1].sum().backward()  # gradients amplified by 2 / width inside the window, 1 outside: never 0
    np.testing.assert_allclose(leaf.grad.numpy(), [2 / 0.64, 2 / 0.64, 2 / 0.64, 2 / 0.64, 1, 1], rtol=1e-5)
    assert intensity_windows(x, ()) is x


def test_discriminator_and_classifier_see_their_input_through_the_windows():
    # The first convolution of D^H, D^L, C^H and C^L receives [x, window(x)], computed here by hand.
    from medgen.families.hagan.classifier import Classifier

    torch.manual_seed(0)
    windows = ((-1.0, -0.35),)
    cfg = get_preset("tiny", 32, d_windows=windows, num_classes=4, class_conditioning="classifier")
    d, c = Discriminator(cfg).eval(), Classifier(cfg).eval()
    seen = {}
    for name, conv in (("DH", d.high.convs[0]), ("DL", d.low.convs[0]), ("CH", c.high.convs[0]),
                       ("CL", c.low.convs[0])):
        assert conv.in_channels == 2
        conv.register_forward_hook(lambda m, args, out, name=name: seen.__setitem__(name, args[0].detach()))
    slab = torch.rand(2, 1, 32, 32, cfg.slab_len) * 2 - 1
    low = torch.rand(2, 1, 8, 8, 8) * 2 - 1
    pos = torch.tensor([0.0, 1.0])
    with torch.no_grad():
        d(slab, pos, low)
        c(slab, pos, low)
    for name, x in (("DH", slab), ("DL", low), ("CH", slab), ("CL", low)):
        v = x.numpy()
        by_hand = np.where(v > -0.35, 1 + (v + 0.35), (v + 1.0) / 0.65 * 2 - 1)
        assert torch.equal(seen[name][:, :1], x)
        np.testing.assert_allclose(seen[name][:, 1:].numpy(), by_hand, atol=1e-6)
    plain = Discriminator(get_preset("tiny", 32))
    assert plain.high.convs[0].in_channels == 1 and plain.low.convs[0].in_channels == 1


def test_window_settings_and_named_ct_windows():
    from medgen.core.errors import UsageError
    from medgen.core.volume import normalized_ct_window
    from medgen.families.hagan import HAGANConfig

    cfg = get_preset("tiny", 32, d_windows=[[-1, -0.35]])  # lists, as YAML gives them
    assert cfg.d_windows == ((-1.0, -0.35),) and HAGANConfig.from_dict(cfg.to_dict()) == cfg
    old = {k: v for k, v in cfg.to_dict().items() if k != "d_windows"}
    assert HAGANConfig.from_dict(old).d_windows == ()  # saved before the option: none
    for bad in ([[-0.3, -0.5]], [[-1.5, 0.0]], [[0.1]], "lung"):
        with pytest.raises(UsageError, match="d_windows"):
            get_preset("tiny", 32, d_windows=bad)
    # HU → the data's [-1, 1] units: the phantoms' window [-1024, 600] and another one
    assert normalized_ct_window("lung", {"hu_window": [-1024, 600]}) == (-1.0, round(2 * 524 / 1624 - 1, 6))
    assert normalized_ct_window("lung", {"hu_window": [-1000, 1000]}) == (-1.0, -0.5)  # clipped at the data's low end
    assert normalized_ct_window("bone", {"hu_min": -1000, "hu_max": 1000}) == (0.3, 1.0)
    with pytest.raises(ValueError, match="outside the data"):
        normalized_ct_window("bone", {"hu_window": [-1024, 200]})
    with pytest.raises(ValueError, match="unknown CT window 'lungs'"):
        normalized_ct_window("lungs", {"hu_window": [-1024, 600]})


def test_window_warmup_blends_the_window_channels_in():
    from contextlib import nullcontext

    from medgen.families.hagan.train import HAGANHParams, build, optimizers, train_step
    from medgen.families.layers import intensity_windows
    from medgen.training.family import Step

    x = torch.linspace(-1, 1, 9).view(1, 1, 9, 1, 1)
    full = intensity_windows(x, ((-1.0, -0.5),))[:, 1]
    assert torch.equal(intensity_windows(x, ((-1.0, -0.5),), 0.0)[:, 1], x[:, 0])
    assert torch.allclose(intensity_windows(x, ((-1.0, -0.5),), torch.tensor(0.25))[:, 1], 0.75 * x[:, 0] + 0.25 * full)

    torch.manual_seed(0)
    cfg = get_preset("tiny", 32, d_windows=((-1.0, -0.35),))
    hp = HAGANHParams(window_warmup=8, use_encoder=False)
    nets = build(cfg, hp, torch.device("cpu"))
    assert "high.window_gain" not in nets["D"].state_dict()  # not saved: checkpoints stay as they were
    opt = optimizers(nets, hp, torch.device("cpu"))
    batch = {"image": torch.rand(2, 1, 32, 32, 32) * 2 - 1}
    for iteration, gain in ((0, 0.0), (2, 0.25), (8, 1.0), (20, 1.0)):
        train_step(Step(nets, dict(nets), opt, batch, torch.Generator().manual_seed(iteration), iteration, 30, 2, cfg,
                        hp, nullcontext, torch.device("cpu")))
        assert float(nets["D"].high.window_gain) == gain and float(nets["D"].low.window_gain) == gain
