"""HA-GAN networks: parameter counts against the published ones and hand counts,
shapes, slab alignment, discriminator combination, conditioning, gradients,
configuration validation and the model-info command."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medgen.core.errors import UsageError
from medgen.families.hagan import (
    Discriminator,
    Encoder,
    Generator,
    HAGANConfig,
    count_parameters,
)
from medgen.families.hagan import get_preset as _get_preset
from medgen.families.hagan.config import PAPER_MODEL


def get_preset(name: str, size: int, **overrides):
    """The paper's architecture (no minibatch-std channel) unless a test asks otherwise: these tests
    check layer shapes and parameter counts against the published networks."""
    return _get_preset(name, size, **{**PAPER_MODEL, **overrides})


def conv_params(k: tuple[int, int, int] | int, cin: int, cout: int, bias: bool = True) -> int:
    """Parameters of a Conv3d: kx·ky·kz·cin·cout (+ cout)."""
    kx, ky, kz = (k, k, k) if isinstance(k, int) else k
    return kx * ky * kz * cin * cout + (cout if bias else 0)


def gn_params(c: int) -> int:
    return 2 * c


# ---------------------------------------------------------------- parameter counts
@pytest.mark.parametrize(
    "size, total, d_total",
    [(256, 79.74e6, 7.40e6), (128, 79.58e6, 7.24e6)],
)
def test_paper_preset_matches_published_counts(size, total, d_total):
    c = count_parameters(get_preset("paper", size))
    assert abs(c["all"] - total) <= 0.1e6
    # Authors' code: G 52.52M, D 7.40M / 7.24M, E^H 0.16M, E^G 19.66M (to 0.01M).
    assert abs(c["G"] - 52.52e6) <= 0.01e6
    assert abs(c["D"] - d_total) <= 0.01e6
    assert abs(c["E^H"] - 0.16e6) <= 0.01e6
    assert abs(c["E^G"] - 19.66e6) <= 0.01e6
    assert c["G"] == c["G^A"] + c["G^L"] + c["G^H"]
    assert c["D"] == c["D^H"] + c["D^L"]
    assert c["all"] == c["G"] + c["D"] + c["E^H"] + c["E^G"]


@pytest.mark.parametrize("size, total", [(64, 78.7e6), (32, 74.7e6)])
def test_paper_preset_small_sizes_match_paper_totals(size, total):
    # The paper reports 78.7M at 64³ and 74.7M at 32³ (to 0.1M).
    assert abs(count_parameters(get_preset("paper", size))["all"] - total) < 0.05e6


def test_hand_counted_blocks_paper_256():
    c = count_parameters(get_preset("paper", 256))
    # G^H: up, Conv 64→32, GN(32), ReLU; up, Conv 32→1, tanh.
    assert c["G^H"] == conv_params(3, 64, 32) + gn_params(32) + conv_params(3, 32, 1)
    # G^L: Conv 64→32, GN, Conv 32→16, GN, Conv 16→1.
    assert c["G^L"] == conv_params(3, 64, 32) + gn_params(32) + conv_params(3, 32, 16) + gn_params(16) + conv_params(3, 16, 1)
    # E^H: Conv k4 1→32, GN, Conv k3 32→32, GN, Conv k4 32→64, GN.
    assert c["E^H"] == conv_params(4, 1, 32) + conv_params(3, 32, 32) + conv_params(4, 32, 64) + gn_params(32 + 32 + 64)
    # D^L at 64³ input: k4 s2 convs 1→32→64→128→256 then a k4 conv to 1 logit.
    widths = [1, 32, 64, 128, 256, 1]
    assert c["D^L"] == sum(conv_params(4, a, b) for a, b in zip(widths[:-1], widths[1:]))
    # G^A: Linear(1024 → 512·4³) + five 3³ convs 512,512,256,128,64 with GroupNorm.
    w = [512, 512, 512, 256, 128, 64]
    fc = 1024 * 512 * 64 + 512 * 64
    assert c["G^A"] == fc + sum(conv_params(3, a, b) + gn_params(b) for a, b in zip(w[:-1], w[1:]))
    # D^H slab 256×256×32: in-plane k4 s2 to 4×4, depth kernels 4,4,4,2,2,1; then (4,4,1) conv to 128,
    # Linear(128 + 1 position → 64), Linear(64 → 1).
    chans = [1, 16, 32, 64, 128, 256, 512]
    kd = [4, 4, 4, 2, 2, 1]
    dh = sum(conv_params((4, 4, k), a, b) for a, b, k in zip(chans[:-1], chans[1:], kd))
    dh += conv_params((4, 4, 1), 512, 128) + (129 * 64 + 64) + (64 + 1)
    assert c["D^H"] == dh


def test_meta_count_equals_real_modules_tiny():
    cfg = get_preset("tiny", 32, num_classes=3)
    c = count_parameters(cfg)
    real = sum(p.numel() for m in (Generator(cfg), Discriminator(cfg), Encoder(cfg)) for p in m.parameters())
    assert c["all"] == real
    # G^L at width 1/8: Conv 8→4, GN(4), Conv 4→2, GN(2), Conv 2→1.
    assert c["G^L"] == conv_params(3, 8, 4) + gn_params(4) + conv_params(3, 4, 2) + gn_params(2) + conv_params(3, 2, 1)
    # Class conditioning widens G^A's input by K: Linear((128 + 3) → 64·4³).
    c0 = count_parameters(get_preset("tiny", 32))
    assert c["G^A"] - c0["G^A"] == 3 * 64 * 64


def test_no_lowres_ablation_drops_gl_and_dl():
    c = count_parameters(get_preset("paper", 128, use_lowres=False))
    assert c["G^L"] == 0 and c["D^L"] == 0
    full = count_parameters(get_preset("paper", 128))
    assert c["all"] == full["all"] - full["G^L"] - full["D^L"]


# ------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("f, frac", [(4, 1 / 8), (2, 1 / 8), (4, 1 / 4)])
def test_block_shapes(size, f, frac):
    torch.manual_seed(0)
    cfg = get_preset("tiny", size, lowres_factor=f, slab_fraction=frac)
    g, d, e = Generator(cfg), Discriminator(cfg), Encoder(cfg)
    b, s, lo = (2 if size == 32 else 1), size, size // f
    la = round(frac * lo)
    z = torch.randn(b, cfg.latent_dim)
    with torch.no_grad():
        a = g.features(z)
        assert a.shape == (b, cfg.feature_channels, lo, lo, lo)
        starts = g.selector.random_starts(b, generator=torch.Generator().manual_seed(1))
        x_low, x_slab = g.forward_train(z, starts)
        assert x_low.shape == (b, 1, lo, lo, lo)
        assert x_slab.shape == (b, 1, s, s, la * f)
        assert cfg.slab_len == la * f == round(frac * s)
        assert float(x_slab.abs().max()) <= 1 and float(x_low.abs().max()) <= 1  # tanh range
        logit, cls = d(x_slab, g.selector.position(starts), x_low)
        assert logit.shape == (b,) and cls is None
        feat = e.high(x_slab)
        assert feat.shape == (b, cfg.feature_channels, lo, lo, la)
        x_full = g.generate(z)
        assert x_full.shape == (b, 1, s, s, s)
        assert e.features(x_full).shape == a.shape
        assert e.encode(x_full).shape == (b, cfg.latent_dim)


# ------------------------------------------------------------------ sub-volume selector
def test_real_slab_start_is_f_times_feature_start():
    cfg = get_preset("tiny", 64)  # f = 4, A depth 16, slab 2 A-slices = 8 slices
    sel = Generator(cfg).selector
    x = torch.arange(64.0).expand(3, 1, 64, 64, 64)  # voxel value = its depth index
    starts = torch.tensor([0, 5, 14])
    slab = sel.select_real(x, starts)
    assert slab.shape == (3, 1, 64, 64, 8)
    for i, a in enumerate(starts.tolist()):
        assert torch.equal(slab[i, 0, 0, 0], torch.arange(4.0 * a, 4.0 * a + 8))
    a_map = torch.arange(16.0).expand(3, 8, 16, 16, 16)
    feats = sel.select_features(a_map, starts)
    assert torch.equal(feats[:, 0, 0, 0, 0], starts.float())
    with pytest.raises(ValueError):
        sel.select_real(x, torch.tensor([0, 0, 15]))  # 15 > max start 14


def test_generated_slab_aligned_with_real_slab():
    # Without GroupNorm in G^H (f = 2: one up-conv), G^H on an A slab must equal the
    # matching slab of G^H on the whole A, away from the slab's zero-padded borders.
    torch.manual_seed(0)
    cfg = get_preset("tiny", 32, lowres_factor=2, slab_fraction=0.25)  # A depth 16, slab 4 → 8 slices
    g = Generator(cfg)
    assert len(g.high.norms) == 0
    z = torch.randn(2, cfg.latent_dim)
    starts = torch.tensor([3, 9])
    with torch.no_grad():
        full = g.generate(z)
        _, fake_slab = g.forward_train(z, starts)
        real_slab = g.selector.select_real(full, starts)
    inner = slice(1, -1)  # the first and last slice see zero padding instead of neighbours
    assert torch.allclose(fake_slab[..., inner], real_slab[..., inner], atol=1e-6)
    assert not torch.allclose(fake_slab, g.selector.select_real(full, starts + 1), atol=1e-3)


def test_random_and_deterministic_starts():
    cfg = get_preset("tiny", 64)  # max start 14, 8 tiling slabs of 2 A-slices
    sel = Generator(cfg).selector
    s1 = sel.random_starts(500, generator=torch.Generator().manual_seed(3))
    s2 = sel.random_starts(500, generator=torch.Generator().manual_seed(3))
    assert torch.equal(s1, s2)
    assert set(s1.tolist()) == set(range(15))
    seen = [int(sel.deterministic_starts(step, 4)[0]) for step in range(10)]
    assert seen == [0, 2, 4, 6, 8, 10, 12, 14, 0, 2]
    assert sel.tiling_starts() == [0, 2, 4, 6, 8, 10, 12, 14]
    assert torch.allclose(sel.position(torch.tensor([0, 7, 14])), torch.tensor([0.0, 0.5, 1.0]))


# ----------------------------------------------------------------- discriminator
def test_discriminator_combines_high_and_low_logits_and_classes():
    torch.manual_seed(0)
    cfg = get_preset("tiny", 32, num_classes=3)
    d = Discriminator(cfg).eval()
    slab = torch.randn(2, 1, 32, 32, cfg.slab_len)
    low = torch.randn(2, 1, 8, 8, 8)
    pos = torch.tensor([0.0, 1.0])
    with torch.no_grad():
        logit, cls = d(slab, pos, low)
        lh, ch = d.high(slab, pos)
        ll, cl = d.low(low)
        # the slab position is an input of D^H
        assert not torch.allclose(d.high(slab, pos.flip(0))[0], lh)
    assert len(cls) == 2 and cls[0].shape == cls[1].shape == (2, 3)  # D^H's class logits, then D^L's
    assert torch.allclose(logit, (lh + ll) / 2)
    assert torch.equal(cls[0], ch) and torch.equal(cls[1], cl)


@pytest.mark.parametrize("size,f", [(32, 4), (64, 2), (64, 8)])
def test_auxiliary_classifier_sees_what_d_sees(size, f):
    """class_conditioning="classifier": C^H (slab + position) and C^L (low-res volume) give [B, K] logits
    each, without spectral normalisation; D then has no class outputs; model-info counts C."""
    from medgen.families.hagan.classifier import Classifier
    from medgen.families.hagan.summary import count_parameters as counts

    torch.manual_seed(0)
    cfg = get_preset("tiny", size, num_classes=3, lowres_factor=f, class_conditioning="classifier")
    c = Classifier(cfg).eval()
    slab = torch.randn(2, 1, size, size, cfg.slab_len)
    low = torch.randn(2, 1, *(3 * [cfg.lowres_size]))
    pos = torch.tensor([0.0, 1.0])
    with torch.no_grad():
        high, lowres = c(slab, pos, low)
        assert not torch.allclose(c.high(slab, pos.flip(0)), high)  # the position is an input of C^H
    assert high.shape == lowres.shape == (2, 3)
    assert not any("parametrizations" in name for name, _ in c.named_parameters())
    with torch.no_grad():
        _, cls = Discriminator(cfg)(slab, pos, low)
    assert cls is None
    n = counts(cfg)
    assert n["C"] == sum(p.numel() for p in c.parameters()) > 0
    assert n["all"] == n["G"] + n["D"] + n["E"] + n["C"]
    with pytest.raises(ValueError, match="num_classes"):
        Classifier(get_preset("tiny", size, lowres_factor=f))


def test_projection_discriminator_adds_the_class_embedding_projected_on_its_features():
    """class_conditioning="projection": no class logits; each logit = the unconditional logit
    + ⟨embed(y), φ(x)⟩, φ = D^H's hidden features / D^L's last feature map summed over positions,
    recomputed here from the layers by hand."""
    from medgen.families.layers import leaky

    torch.manual_seed(0)
    cfg = get_preset("tiny", 32, num_classes=3, class_conditioning="projection", minibatch_std=0)
    d = Discriminator(cfg).eval()
    assert d.high.class_head is None and d.low.final_conv.out_channels == 1  # no AC-GAN heads
    slab, low = torch.randn(2, 1, 32, 32, cfg.slab_len), torch.randn(2, 1, 8, 8, 8)
    pos, y = torch.tensor([0.25, 0.75]), torch.tensor([2, 0])
    with torch.no_grad():
        logit, cls = d(slab, pos, low, labels=y)
        lh, _ = d.high(slab, pos, labels=y)
        ll, _ = d.low(low, labels=y)
        # D^H by hand
        h = slab
        for conv in d.high.convs:
            h = leaky(conv(h))
        h = leaky(d.high.final_conv(h)).flatten(1)
        h = leaky(d.high.fc(torch.cat([h, pos[:, None]], 1)))
        e_h = d.high.class_embed(y)  # spectral-normalised embedding rows
        ref_h = d.high.out(h)[:, 0] + (e_h * h).sum(1)
        # D^L by hand
        g = low
        for conv in d.low.convs:
            g = leaky(conv(g))
        ref_l = d.low.final_conv(g).flatten(1)[:, 0] + (d.low.class_embed(y) * g.sum((2, 3, 4))).sum(1)
        other = d(slab, pos, low, labels=(y + 1) % 3)[0]
    assert cls is None
    assert torch.allclose(lh, ref_h, atol=1e-5) and torch.allclose(ll, ref_l, atol=1e-5)
    assert torch.allclose(logit, (ref_h + ref_l) / 2, atol=1e-5)
    assert (logit - other).abs().min() > 1e-4  # the class changes the verdict
    with pytest.raises(ValueError, match="labels"):
        d(slab, pos, low)


def test_discriminator_without_lowres_is_dh_only():
    torch.manual_seed(0)
    cfg = get_preset("tiny", 32, use_lowres=False)
    d = Discriminator(cfg).eval()
    g = Generator(cfg)
    assert d.low is None and g.low is None
    slab = torch.randn(2, 1, 32, 32, cfg.slab_len)
    with torch.no_grad():
        x_low, _ = g(torch.randn(2, cfg.latent_dim), 0)
        assert x_low is None
        assert torch.equal(d(slab, torch.zeros(2))[0], d.high(slab, torch.zeros(2))[0])


def test_spectral_norm_on_every_discriminator_layer():
    cfg = get_preset("tiny", 32, num_classes=2)
    d = Discriminator(cfg)
    layers = [m for m in d.modules() if isinstance(m, (torch.nn.Conv3d, torch.nn.Linear))]
    assert len(layers) == len(d.high.convs) + 4 + len(d.low.convs) + 1  # + final conv, fc, out, class head
    for m in layers:
        assert torch.nn.utils.parametrize.is_parametrized(m, "weight")
        sigma = torch.linalg.matrix_norm(m.weight.detach().flatten(1), ord=2)
        assert abs(float(sigma) - 1) < 0.05


# ------------------------------------------------------------------ conditioning
def test_conditional_generator_uses_labels():
    torch.manual_seed(0)
    cfg = get_preset("tiny", 32, num_classes=3)
    g = Generator(cfg)
    z = torch.randn(1, cfg.latent_dim).expand(3, -1)
    with torch.no_grad():
        a = g.features(z, torch.tensor([0, 1, 2]))
        a_soft = g.features(z[:1], F.one_hot(torch.tensor([1]), 3).float())
        # one-hot appended to z: same as feeding the concatenation to G^A directly
        a_manual = g.common(torch.cat([z[:1], torch.tensor([[0.0, 1.0, 0.0]])], dim=1))
    assert not torch.allclose(a[0], a[1], atol=1e-4)
    assert torch.allclose(a[1:2], a_soft, atol=1e-5) and torch.allclose(a_soft, a_manual, atol=1e-5)
    with pytest.raises(ValueError):
        g.features(z)


# ------------------------------------------------------------------ gradients
def test_gradients_flow_through_all_parameters():
    torch.manual_seed(0)
    cfg = get_preset("tiny", 32, num_classes=2)
    g, d, e = Generator(cfg), Discriminator(cfg), Encoder(cfg)
    z = torch.randn(2, cfg.latent_dim)
    labels = torch.tensor([0, 1])
    starts = torch.tensor([0, 3])
    x_low, x_slab = g(z, starts, labels)
    logit, cls = d(x_slab, g.selector.position(starts), x_low)
    loss = F.binary_cross_entropy_with_logits(logit, torch.ones(2)) + sum(F.cross_entropy(c, labels) for c in cls)
    x_full = torch.rand(2, 1, 32, 32, 32) * 2 - 1
    loss = loss + e.encode(x_full).square().mean()
    loss.backward()
    for name, module in (("G", g), ("D", d), ("E", e)):
        for pname, p in module.named_parameters():
            assert p.grad is not None and float(p.grad.abs().sum()) > 0, f"{name}.{pname} gets no gradient"


# ----------------------------------------------------------------- configuration
@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(size=48), "power of two"),
        (dict(size=1024), "power of two"),
        (dict(size=32, lowres_factor=3), "lowres_factor"),
        (dict(size=32, lowres_factor=16), "too large"),
        (dict(size=32, slab_fraction=1 / 16), "slab_fraction"),  # half an A-slice
        (dict(size=64, slab_fraction=0.3), "slab_fraction"),
        (dict(size=64, slab_fraction=3 / 16), "slab_fraction"),  # 3 slices do not tile 16
        (dict(size=64, width=0.125, norm_groups=8), "not divisible by norm_groups"),
        (dict(size=64, num_classes=1), "num_classes"),
        (dict(size=64, high_width=0), "high_width"),
        (dict(size=64, high_width="wide"), "high_width"),
        (dict(size=64, low_d_width=0), "low_d_width"),
        (dict(size=64, low_d_width=True), "low_d_width"),
        (dict(size=64, width=0.125, norm_groups=2, high_width=0.03), "G\\^H conv 1"),  # 2 hidden channels, then 1
    ],
)
def test_config_validation(kwargs, fragment):
    with pytest.raises(UsageError, match=fragment) as info:
        HAGANConfig(**kwargs)
    assert "\n" not in str(info.value)


def test_config_roundtrip_and_presets():
    cfg = get_preset("small", 128, num_classes=4, width=None)
    assert cfg.width == 0.5 and cfg.latent_dim == 256 and cfg.num_classes == 4 and cfg.size == 128
    assert HAGANConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(UsageError, match="unknown HA-GAN model setting"):
        HAGANConfig.from_dict({**cfg.to_dict(), "widht": 1.0})
    with pytest.raises(UsageError, match="unknown model preset"):
        get_preset("huge", 64)
    for size in (32, 64, 128, 256, 512):
        for name in ("paper", "small", "compact", "tiny"):
            get_preset(name, size)  # every preset is valid at every size
    compact, tiny = get_preset("compact", 64), get_preset("tiny", 64)
    assert compact.high_widths() == [8, 1] and tiny.high_widths() == [4, 1]  # G^H's hidden channels: twice tiny's


def test_high_width_widens_gh_alone():
    tiny = get_preset("tiny", 64)
    wide = get_preset("tiny", 64, high_width=0.5)
    assert tiny.high_width is None and wide.high_widths() == [16, 1]
    assert get_preset("tiny", 128, lowres_factor=8, high_width=1.0).high_widths() == [32, 16, 1]
    c0, c1 = count_parameters(tiny), count_parameters(wide)
    # G^H at factor 4: up, Conv 8→16, GN(16), ReLU; up, Conv 16→1, tanh. Every other block is tiny's.
    assert c1["G^H"] == conv_params(3, 8, 16) + gn_params(16) + conv_params(3, 16, 1)
    assert {k: v for k, v in c1.items() if k not in ("G^H", "G", "all")} == \
        {k: v for k, v in c0.items() if k not in ("G^H", "G", "all")}
    assert sum(p.numel() for p in Generator(wide).high.parameters()) == c1["G^H"]
    # A configuration saved before the field existed means G^H at the model's width.
    saved = {k: v for k, v in tiny.to_dict().items() if k != "high_width"}
    assert HAGANConfig.from_dict(saved).high_widths() == [4, 1]
    assert HAGANConfig.from_dict(wide.to_dict()) == wide


def test_low_d_width_widens_dl_alone():
    tiny = get_preset("tiny", 64)
    wide = get_preset("tiny", 64, low_d_width=0.5)
    assert tiny.low_d_width is None
    c0, c1 = count_parameters(tiny), count_parameters(wide)
    # D^L on 16³: k4 s2 convs 1→64→128 (256·0.5 halving backwards), a k4 conv to the logit (paper: no
    # minibatch-std channel).
    assert c1["D^L"] == conv_params(4, 1, 64) + conv_params(4, 64, 128) + conv_params(4, 128, 1)
    assert c0["D^L"] == conv_params(4, 1, 16) + conv_params(4, 16, 32) + conv_params(4, 32, 1)
    assert {k: v for k, v in c1.items() if k not in ("D^L", "D", "all")} == \
        {k: v for k, v in c0.items() if k not in ("D^L", "D", "all")}
    assert sum(p.numel() for p in Discriminator(wide).low.parameters()) == c1["D^L"]
    # A configuration saved before the field existed means D^L at the model's width.
    saved = {k: v for k, v in tiny.to_dict().items() if k != "low_d_width"}
    assert HAGANConfig.from_dict(saved) == tiny
    assert HAGANConfig.from_dict(wide.to_dict()) == wide


# ------------------------------------------------------------------ model-info
def _model_info(argv: list[str]) -> int:
    from medgen.commands import model_info

    parser = argparse.ArgumentParser()
    model_info.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["model-info", *argv])
    return args.func(args)


def test_model_info_json(capsys):
    assert _model_info(["--preset", "paper", "--size", "256", "--json", "--recipe", "paper"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["totals"]["all"] == 79_744_884  # the authors' code: 79.74M
    assert _model_info(["--preset", "paper", "--size", "256", "--json"]) == 0
    default = json.loads(capsys.readouterr().out)
    assert default["totals"]["all"] - info["totals"]["all"] == 4 * 4 * 128 + 4**3  # the minibatch-std channels
    with pytest.raises(UsageError, match="recipes: paper, ct"):
        _model_info(["--recipe", "fast"])
    # the CT recipe: D^H and D^L take two more input channels, the lung and bone windows
    assert _model_info(["--preset", "tiny", "--size", "32", "--json", "--recipe", "ct"]) == 0
    ct = json.loads(capsys.readouterr().out)
    windows = ((-1.0, -0.354680), (0.630542, 1.0))
    assert ct["totals"]["all"] == count_parameters(_get_preset("tiny", 32, d_windows=windows))["all"]
    assert ct["totals"]["all"] > count_parameters(_get_preset("tiny", 32))["all"]
    assert _model_info(["--preset", "tiny", "--size", "32", "--recipe", "ct"]) == 0  # the table says the same
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("D's input windows [-1, -0.35468], [0.630542, 1]")
    assert lines[-1].startswith("hyper-parameters (recipe ct;") and "lr_g=0.0002" in lines[-1]
    assert "r1_gamma=1.0" in lines[-1] and "diversity_weight=0.3" in lines[-1]
    assert set(info["blocks"]) == {"G^A", "G^L", "G^H", "D^H", "D^L", "E^H", "E^G"}
    assert sum(b["params"] for b in info["blocks"].values()) == info["totals"]["all"]
    assert info["blocks"]["G^A"]["output_shape"] == [64, 64, 64, 64]
    assert info["blocks"]["G^H"]["output_shape"] == [1, 256, 256, 32]
    assert info["blocks"]["E^H"]["output_shape"] == [64, 64, 64, 8]
    assert info["blocks"]["E^G"]["output_shape"] == [1024]


def test_model_info_table_and_errors(capsys):
    assert _model_info(["--preset", "tiny", "--size", "64", "--num-classes", "2"]) == 0
    out = capsys.readouterr().out
    total = count_parameters(_get_preset("tiny", 64, num_classes=2))["all"]  # medgen's defaults, as model-info
    assert f"{total:,} parameters" in out and "HighResDiscriminator" in out
    assert "hyper-parameters (defaults; medgen train --hparam NAME=VALUE): lr_g=0.0001, lr_d=0.0004" in out
    assert "encoder_every=1, c_augment=False" in out  # what --hparam accepts, as the train command's help says
    with pytest.raises(UsageError, match="size"):
        _model_info(["--size", "100"])


def test_augment_real_flips_and_shifts_each_volume_in_plane_only():
    """c_augment: every output volume is its input, maybe flipped along X, shifted by whole voxels in X and Y
    within the limit, the uncovered border air (-1); depth and intensities untouched; seeded."""
    from medgen.families.hagan.classifier import augment_real

    x = torch.rand(12, 1, 8, 6, 4) * 2 - 1
    out = augment_real(x, 2, torch.Generator().manual_seed(0))
    again = augment_real(x, 2, torch.Generator().manual_seed(0))
    assert torch.equal(out, again) and out.shape == x.shape

    def moved(v, flip, dx, dy):  # independent: numpy, by explicit index arithmetic
        v = v[:, ::-1] if flip else v
        res = np.full_like(v, -1.0)
        for i in range(v.shape[1]):
            for j in range(v.shape[2]):
                if 0 <= i - dx < v.shape[1] and 0 <= j - dy < v.shape[2]:
                    res[:, i, j] = v[:, i - dx, j - dy]
        return res

    found = []
    for k in range(12):
        v, o = x[k].numpy(), out[k].numpy()
        hits = [(f, dx, dy) for f in (False, True) for dx in range(-2, 3) for dy in range(-2, 3)
                if np.array_equal(moved(v, f, dx, dy), o)]
        assert len(hits) == 1, k
        found.append(hits[0])
    assert {f for f, _, _ in found} == {False, True}  # both flips occur in 12 volumes
    assert any(dx != 0 or dy != 0 for _, dx, dy in found)
    only_flips = augment_real(x, 0, torch.Generator().manual_seed(1))
    for k in range(12):
        assert torch.equal(only_flips[k], x[k]) or torch.equal(only_flips[k], x[k].flip(1))
    with pytest.raises(ValueError, match="max_shift"):
        augment_real(x, -1, torch.Generator())


def test_common_modulation_scales_and_shifts_each_volume_after_every_groupnorm():
    torch.manual_seed(0)
    plain_cfg, cfg = get_preset("tiny", 32), get_preset("tiny", 32, common_modulation=True)
    plain, g = Generator(plain_cfg).eval(), Generator(cfg).eval()
    widths = cfg.common_widths()
    # one linear map of the code to a gain and a shift per channel of every GroupNorm of G^A
    assert count_parameters(cfg)["G^A"] - count_parameters(plain_cfg)["G^A"] == \
        (cfg.generator_input_dim + 1) * 2 * sum(widths)
    assert {k: v for k, v in count_parameters(cfg).items() if k not in ("G^A", "G", "all")} == \
        {k: v for k, v in count_parameters(plain_cfg).items() if k not in ("G^A", "G", "all")}
    # it starts at zero: the same weights give the unmodulated generator's volumes
    missing = plain.load_state_dict({k: v for k, v in g.state_dict().items() if "modulation" not in k})
    assert not missing.missing_keys
    z = torch.randn(3, cfg.latent_dim)
    with torch.no_grad():
        assert torch.equal(g.generate(z), plain.generate(z))
        # with weights, each volume gets its own gain (1 + γ) and shift β after each GroupNorm
        g.common.modulation.weight.normal_(0, 0.1)
        g.common.modulation.bias.normal_(0, 0.1)
        styles = g.common.modulation(z)
        h = g.common.fc(z).view(3, widths[0], 4, 4, 4)
        offset = 0
        for i, (conv, norm) in enumerate(zip(g.common.convs, g.common.norms)):
            if 1 <= i <= g.common.num_upsamplings:
                h = F.interpolate(h, scale_factor=2, mode="nearest")
            h = F.group_norm(conv(h), cfg.norm_groups, norm.weight, norm.bias, norm.eps)
            c = widths[i]
            gain, shift = styles[:, offset : offset + c], styles[:, offset + c : offset + 2 * c]
            offset += 2 * c
            h = F.relu(h * (1 + gain[..., None, None, None]) + shift[..., None, None, None])
        assert offset == styles.shape[1]
        assert torch.allclose(g.features(z), h, atol=1e-5)
        assert not torch.allclose(g.features(z), plain.features(z), atol=1e-3)
    # its gradient flows, and a configuration saved before the option existed has none
    x_low, slab = g(z, torch.tensor([0, 3, 4]))
    (x_low.square().mean() + slab.square().mean()).backward()
    assert float(g.common.modulation.weight.grad.abs().sum()) > 0
    saved = {k: v for k, v in cfg.to_dict().items() if k != "common_modulation"}
    assert HAGANConfig.from_dict(saved).common_modulation is False
    with pytest.raises(UsageError, match="common_modulation must be true or false"):
        get_preset("tiny", 32, common_modulation="yes")
