"""The stylegan2 family: modulated convolution against a per-sample reference, demodulation, the skip generator,
the mapping network's w_avg, truncation and style mixing, the residual D's minibatch standard deviation, the
logistic loss and the lazy R1 penalty, the model's volumes, and exact resume across R1 iterations.

The loop's guarantees (exact resume, DDP, NaN stop, SIGTERM, report) are checked for this family by
tests/test_family_template.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medgen.core.errors import UsageError
from medgen.families import registry
from medgen.families.stylegan2.config import model_config
from medgen.families.stylegan2.layers import ModulatedConv3d, minibatch_stddev, modulated_conv3d, upsample2
from medgen.families.stylegan2.model import StyleGAN2Model, build
from medgen.families.stylegan2.networks import Discriminator, Generator, MappingNetwork, SynthesisLayer, ToRGB
from medgen.families.stylegan2.train import (
    StyleGAN2HParams,
    discriminator_loss,
    generator_loss,
    mixing_cutoff,
    optimizers,
    r1_penalty,
    r1_weight,
)
from medgen.training import checkpoint as ckpt_io
from medgen.training.runconfig import RunConfig
from toy_volumes import make_dataset

pytestmark = pytest.mark.usefixtures("one_thread")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _reference_modconv(x, weight, styles, demodulate, eps=1e-8):
    """Sample by sample: weights scaled by the style per input channel, each output channel's weights divided by
    sqrt(Σ w² + eps), a plain conv3d."""
    out = []
    for b in range(x.shape[0]):
        w = weight * styles[b].reshape(1, -1, 1, 1, 1)
        if demodulate:
            w = w / torch.sqrt(w.square().sum(dim=(1, 2, 3, 4), keepdim=True) + eps)
        out.append(F.conv3d(x[b : b + 1], w, padding=weight.shape[-1] // 2))
    return torch.cat(out)


@pytest.mark.parametrize("demodulate", [True, False])
def test_modulated_conv_equals_a_per_sample_reference(demodulate):
    x = torch.randn(3, 4, 5, 6, 7, generator=_gen(0))
    weight = torch.randn(6, 4, 3, 3, 3, generator=_gen(1)) * 0.2
    styles = torch.rand(3, 4, generator=_gen(2)) * 3 + 0.1
    got = modulated_conv3d(x, weight, styles, demodulate)
    assert got.shape == (3, 6, 5, 6, 7)
    torch.testing.assert_close(got, _reference_modconv(x, weight, styles, demodulate), rtol=1e-5, atol=1e-5)
    # the module: its style is the affine map of w, its weights scaled by 1/sqrt(in · k³)
    torch.manual_seed(3)
    conv = ModulatedConv3d(4, 6, w_dim=8, kernel_size=3, demodulate=demodulate)
    w = torch.randn(3, 8, generator=_gen(4))
    s = F.linear(w, conv.affine.weight / math.sqrt(8), conv.affine.bias)
    torch.testing.assert_close(conv(x, w), _reference_modconv(x, conv.weight / math.sqrt(4 * 27), s, demodulate),
                               rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(conv.affine.bias, torch.ones(4))  # styles start near 1


def test_demodulation_makes_the_output_independent_of_the_style_scale():
    torch.manual_seed(5)
    layer = SynthesisLayer(4, 6, w_dim=8)
    x = torch.randn(2, 4, 6, 6, 6, generator=_gen(6))
    w = torch.randn(2, 8, generator=_gen(7))
    with torch.no_grad():
        before = layer(x, w, None)  # noise off
        layer.conv.affine.weight.mul_(10)
        layer.conv.affine.bias.mul_(10)  # every style × 10
        after = layer(x, w, None)
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-6)
    # without demodulation (toRGB) the output scales with the style: the check above means something
    torch.manual_seed(5)
    rgb = ToRGB(4, w_dim=8)
    with torch.no_grad():
        y0 = rgb(x, w)
        rgb.conv.affine.weight.mul_(10)
        rgb.conv.affine.bias.mul_(10)
        torch.testing.assert_close(rgb(x, w), 10 * y0, rtol=1e-5, atol=1e-5)
    # the expected variance: unit-variance i.i.d. inputs give unit-variance outputs at any style scale
    big = torch.randn(1, 16, 24, 24, 24, generator=_gen(8))
    weight = torch.randn(8, 16, 3, 3, 3, generator=_gen(9))
    for scale in (0.1, 10.0):
        styles = (torch.rand(1, 16, generator=_gen(10)) + 0.5) * scale
        out = modulated_conv3d(big, weight, styles)[:, :, 1:-1, 1:-1, 1:-1]  # inside the zero padding
        var = out.var(dim=(0, 2, 3, 4))
        assert torch.all((var - 1).abs() < 0.06), var


def test_generator_sums_the_upsampled_torgb_outputs_and_reads_one_w_per_layer():
    cfg = model_config("tiny", 16)
    torch.manual_seed(11)
    G = Generator(cfg)
    assert cfg.levels == 2 and cfg.num_ws == 6 and len(G.layers) == 5 and len(G.to_rgb) == 3
    rgbs = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: rgbs.append(out)) for m in G.to_rgb]
    z = torch.randn(2, cfg.latent_dim, generator=_gen(12))
    with torch.no_grad():
        img = G(z, noise="none")
    for h in hooks:
        h.remove()
    assert img.shape == (2, 1, 16, 16, 16) and [r.shape[-1] for r in rgbs] == [4, 8, 16]
    torch.testing.assert_close(img, upsample2(upsample2(rgbs[0]) + rgbs[1]) + rgbs[2])
    # upsample2 is trilinear: the [1, 3, 3, 1]/4 filter, e.g. 1D [a, b] → [a, ¾a+¼b, ¼a+¾b, b]
    t = upsample2(torch.tensor([1.0, 5.0]).reshape(1, 1, 2, 1, 1).expand(1, 1, 2, 2, 2).contiguous())
    torch.testing.assert_close(t[0, 0, :, 0, 0], torch.tensor([1.0, 2.0, 4.0, 5.0]))
    # noise: a per-voxel map times the learned strength, added before the bias (strength 0 at first)
    with torch.no_grad():
        same = G(z, noise=G.const_noise())
        torch.testing.assert_close(same, img)
        for layer in G.layers:
            layer.noise.strength.fill_(0.5)
        assert not torch.allclose(G(z, noise=G.const_noise()), img)
        a, b = G(z), G(z)  # random noise: a new draw per call
        assert not torch.allclose(a, b)


def test_mapping_network_tracks_w_avg_and_normalises_z():
    cfg = model_config("tiny", 16)
    torch.manual_seed(13)
    M = MappingNetwork(cfg)
    assert len(M.layers) == 2 and M.layers[0].weight_gain == pytest.approx(0.01 / math.sqrt(cfg.latent_dim))
    assert torch.equal(M.w_avg, torch.zeros(cfg.w_dim))
    start = torch.randn(cfg.w_dim, generator=_gen(14))
    M.w_avg.copy_(start)
    z = torch.randn(5, cfg.latent_dim, generator=_gen(15))
    with torch.no_grad():
        w = M(z)
        assert torch.equal(M.w_avg, start)  # no beta: no update
        w2 = M(z, w_avg_beta=0.9)
    torch.testing.assert_close(w2, w)
    torch.testing.assert_close(M.w_avg, 0.9 * start + 0.1 * w.mean(dim=0), rtol=1e-6, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(M(3.0 * z), w, rtol=1e-5, atol=1e-6)  # z is normalised to unit mean square


def test_truncation_and_style_mixing_choose_the_w_of_every_layer():
    cfg = model_config("tiny", 16)
    torch.manual_seed(16)
    G = Generator(cfg)
    G.mapping.w_avg.copy_(torch.randn(cfg.w_dim, generator=_gen(17)))
    z, z2 = torch.randn(2, 3, cfg.latent_dim, generator=_gen(18))
    with torch.no_grad():
        w, w2 = G.mapping(z), G.mapping(z2)
        assert torch.equal(G.ws(z), w.unsqueeze(1).expand(-1, cfg.num_ws, -1))
        torch.testing.assert_close(G.ws(z, psi=0.0), G.mapping.w_avg.expand(3, cfg.num_ws, -1))
        torch.testing.assert_close(G.ws(z, psi=0.5)[:, 0], (w + G.mapping.w_avg) / 2)
        mixed = G.ws(z, z2, cutoff=2)
        assert torch.equal(mixed[:, :2], w.unsqueeze(1).expand(-1, 2, -1))
        assert torch.equal(mixed[:, 2:], w2.unsqueeze(1).expand(-1, cfg.num_ws - 2, -1))
        assert torch.equal(G.ws(z, z2, cutoff=cfg.num_ws), G.ws(z))
    # the cutoff: uniform in 1 … num_ws − 1 with probability style_mixing, else num_ws
    hp = StyleGAN2HParams(style_mixing=0.5)
    g = _gen(19)
    cuts = [mixing_cutoff(cfg, hp, g) for _ in range(2000)]
    assert set(cuts) == set(range(1, cfg.num_ws + 1))
    assert abs(np.mean([c == cfg.num_ws for c in cuts]) - 0.5) < 0.04  # no mixing: num_ws (never drawn as a cutoff)
    counts = np.bincount(cuts, minlength=cfg.num_ws + 1)[1 : cfg.num_ws]
    assert np.all(np.abs(counts / 1000 - 1 / (cfg.num_ws - 1)) < 0.05)  # the mixed half: uniform cutoffs
    assert set(mixing_cutoff(cfg, StyleGAN2HParams(style_mixing=0.0), g) for _ in range(50)) == {cfg.num_ws}


def test_discriminator_applies_the_minibatch_stddev_within_each_part():
    cfg = model_config("tiny", 16)
    torch.manual_seed(20)
    D = Discriminator(cfg)
    x = torch.randn(4, 1, 16, 16, 16, generator=_gen(21))
    seen = {}
    h1 = D.blocks[-1].register_forward_hook(lambda m, i, o: seen.update(last=o))
    h2 = D.conv.register_forward_pre_hook(lambda m, i: seen.update(conv_in=i[0]))
    with torch.no_grad():
        out = D(x, parts=2)
    h1.remove()
    h2.remove()
    assert out.shape == (4,) and seen["last"].shape == (4, cfg.channels(0), 4, 4, 4)
    torch.testing.assert_close(seen["conv_in"], minibatch_stddev(seen["last"], 4, parts=2))
    # by hand: the extra channel of volume 0 is the std over volumes 0 and 1 (its part), averaged
    a = seen["last"][:2].double()
    std = torch.sqrt(((a - a.mean(0)) ** 2).mean(0) + 1e-8).mean()
    torch.testing.assert_close(seen["conv_in"][0, -1].double(), std.expand(4, 4, 4), rtol=1e-5, atol=1e-6)
    # volume 0's logit depends on volume 1 (same part), not on volumes 2-3 (the other part)
    y = x.clone()
    y[1] += 1
    y[3] += 1
    with torch.no_grad():
        other = D(y, parts=2)
    assert not torch.allclose(other[0], out[0]) and torch.equal(D(torch.cat([x[:2], y[2:]]), parts=2)[:2], out[:2])
    D0 = Discriminator(model_config("tiny", 16, mbstd_group=0))  # no minibatch std: volumes independent
    with torch.no_grad():
        torch.testing.assert_close(D0(x)[0], D0(y)[0])


def test_r1_penalty_of_a_linear_discriminator_is_gamma_half_norm_squared():
    a = torch.randn(1, 1, 4, 4, 4, generator=_gen(22), requires_grad=True)
    x = torch.randn(3, 1, 4, 4, 4, generator=_gen(23)).requires_grad_(True)
    logits = (x * a).flatten(1).sum(dim=1)  # D(x) = <a, x>: ∇ₓD = a for every volume
    gamma = 10.0
    penalty = r1_penalty(logits, x)
    torch.testing.assert_close(gamma / 2 * penalty, gamma / 2 * a.detach().square().sum())
    # the gradient of the penalty term with respect to D's weights: ∂(γ/2 ‖a‖²)/∂a = γ·a (double backward)
    (grad_a,) = torch.autograd.grad(gamma / 2 * penalty, a)
    torch.testing.assert_close(grad_a, gamma * a.detach())
    # the lazy schedule: γ/2 · r1_every at every r1_every-th iteration, 0 in between
    hp = StyleGAN2HParams(r1_gamma=gamma, r1_every=16)
    assert [r1_weight(hp, t) for t in (0, 1, 15, 16, 32)] == [80.0, 0.0, 0.0, 80.0, 80.0]
    assert r1_weight(StyleGAN2HParams(r1_gamma=gamma, r1_every=1), 7) == 5.0
    assert r1_weight(StyleGAN2HParams(r1_gamma=0.0), 0) == 0.0


def test_logistic_losses_and_lazy_adam_settings():
    zero = torch.zeros(4)
    assert discriminator_loss(zero, zero).item() == pytest.approx(2 * math.log(2))
    assert generator_loss(zero).item() == pytest.approx(math.log(2))
    real, fake = torch.tensor([3.0, -1.0]), torch.tensor([0.5, 2.0])
    sp = lambda t: math.log1p(math.exp(t))  # noqa: E731
    assert discriminator_loss(real, fake).item() == pytest.approx((sp(0.5) + sp(2.0)) / 2 + (sp(-3.0) + sp(1.0)) / 2)
    assert generator_loss(fake).item() == pytest.approx((sp(-0.5) + sp(-2.0)) / 2)
    cfg, hp = model_config("tiny", 16), StyleGAN2HParams()
    nets = {"G": Generator(cfg), "D": Discriminator(cfg)}
    opt = optimizers(nets, hp, torch.device("cpu"))
    c = 16 / 17
    assert opt["G"].defaults["lr"] == 0.002 and opt["G"].defaults["betas"] == (0.0, 0.99)
    assert opt["D"].defaults["lr"] == pytest.approx(0.002 * c)
    assert opt["D"].defaults["betas"] == pytest.approx((0.0, 0.99**c))
    one = optimizers(nets, StyleGAN2HParams(r1_every=1), torch.device("cpu"))
    assert one["D"].defaults["lr"] == 0.002 and one["D"].defaults["betas"] == (0.0, 0.99)
    with pytest.raises(UsageError, match="r1_every"):
        StyleGAN2HParams.from_dict({"r1_every": 0})


def test_model_generates_volumes_in_range_that_depend_on_their_code_only():
    model = build("tiny", 32, seed=0)
    assert isinstance(model, StyleGAN2Model) and model.config.size == 32
    for layer in model.generator.layers:  # an untrained G has noise strength 0: give the noise an effect
        layer.noise.strength.data.fill_(0.3)
    vols = model.generate(3, seed=4)
    assert vols.shape == (3, 32, 32, 32) and vols.dtype == np.float32 and np.abs(vols).max() <= 1
    assert vols.std() > 0.05 and not np.array_equal(vols[0], vols[1])
    assert np.array_equal(model.generate(1, seed=4, indices=[2])[0], vols[2])
    assert np.array_equal(model.generate(3, seed=4), vols)  # fixed noise: the same volumes every call
    z = model.sample_latents(3, seed=4)
    assert np.array_equal(model.generate(3, z=z), vols)
    assert not np.allclose(model.generate(3, seed=4, noise="none"), vols)
    # ψ = 0: every code maps to w_avg, so all volumes are the same
    model.generator.mapping.w_avg.copy_(torch.randn(model.config.w_dim, generator=_gen(24)))
    same = model.generate(3, seed=4, truncation_psi=0.0)
    assert np.array_equal(same[0], same[1]) and np.array_equal(same[0], same[2])
    with pytest.raises(UsageError):
        model.generate(1, labels=1)
    with pytest.raises(UsageError):
        model.generate(1, chunk=4)
    with pytest.raises(UsageError, match="unconditional"):
        model_config("tiny", 32, num_classes=2)
    assert model_config("tiny", 32, minibatch_std=0).mbstd_group == 0
    assert model_config("tiny", 32, width=2).fmap_max == 32


def _cfg(data, iters, **kw):
    fam = registry.get("stylegan2")
    return RunConfig(data=str(data), model=fam.model_config("tiny", 16).to_dict(), family="stylegan2",
                     hparams=fam.hparams_from_dict({"r1_every": 3}).to_dict(), preset="tiny", iters=iters, batch=2,
                     device="cpu", log_every=1, sample_every=0, ckpt_every=1000, ema_decay=0.9,
                     split_fractions=(1.0, 0.0, 0.0), **kw)


def test_resume_across_lazy_r1_iterations_is_bit_identical(tmp_path):
    """16³, r1_every 3: iterations 0 and 3 regularise; the split run stops after iteration 1 and resumes at 2."""
    import csv

    data = make_dataset(tmp_path / "data", n=4, size=16)
    full = registry.train(_cfg(data, 4), tmp_path / "full", progress=False)
    registry.train(_cfg(data, 2), tmp_path / "split", progress=False)
    resumed = registry.train(_cfg(data, 4), tmp_path / "split", resume=True, progress=False)
    a, b = full.models.weights(), resumed.models.weights()
    assert set(a) == {"G", "D", "G_ema"}
    for module in a:
        for key in a[module]:
            assert torch.equal(a[module][key], b[module][key]), f"{module}.{key} differs after resume"
    with open(tmp_path / "split" / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    r1 = [float(r["loss_r1"]) for r in rows]
    assert [v > 0 for v in r1] == [True, False, False, True]  # the penalty (× 3) at iterations 0 and 3 only
    assert all(math.isfinite(float(r["loss_D"])) and math.isfinite(float(r["loss_G"])) for r in rows)
    # w_avg followed the mapping's output (it starts at 0) and the EMA generator carries the same buffer
    assert a["G"]["mapping.w_avg"].abs().sum() > 0 and torch.equal(a["G"]["mapping.w_avg"], a["G_ema"]["mapping.w_avg"])
    assert ckpt_io.load_state(tmp_path / "split")["iteration"] == 4
    model = registry.load(tmp_path / "split")
    assert isinstance(model, StyleGAN2Model) and model.generate(1).shape == (1, 16, 16, 16)


def test_medgen_generate_truncation_psi(tmp_path, capsys):
    """--truncation-psi reaches the generator: ψ = 0 gives every volume the mean w (identical volumes with the
    fixed noise), and it is recorded with the samples; out of [0, 1] it is a one-line usage error."""
    import json

    from medgen.cli import main

    data = make_dataset(tmp_path / "data", n=4, size=16)
    registry.train(_cfg(data, 1), tmp_path / "run", progress=False)
    out = tmp_path / "psi0"
    assert main(["generate", str(tmp_path / "run"), "--n", "2", "--out", str(out), "--truncation-psi", "0",
                 "--format", "npy", "--no-mosaic", "--no-progress", "--device", "cpu"]) == 0
    a, b = (np.load(p) for p in sorted(out.glob("sample-*.npy")))
    assert np.array_equal(a, b)
    assert json.loads((out / "generate.json").read_text())["sampling"] == {"truncation_psi": 0.0}
    free = tmp_path / "psi1"
    assert main(["generate", str(tmp_path / "run"), "--n", "2", "--out", str(free), "--format", "npy",
                 "--no-mosaic", "--no-progress", "--device", "cpu"]) == 0
    c, d = (np.load(p) for p in sorted(free.glob("sample-*.npy")))
    assert not np.array_equal(c, d)
    capsys.readouterr()
    assert main(["generate", str(tmp_path / "run"), "--n", "1", "--out", str(tmp_path / "bad"),
                 "--truncation-psi", "1.5"]) == 2
    assert "--truncation-psi 1.5" in capsys.readouterr().err
