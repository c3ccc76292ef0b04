"""The WGAN-GP family: the gradient penalty and loss signs against closed forms, the update schedule, the
DCGAN-style networks (shapes, published parameter counts, per-volume critic), sampling, configuration.

The loop's guarantees (exact resume, DDP, NaN stop, SIGTERM, report) are checked for this family by
tests/test_family_template.py. Every volume materialised here is 16³ or 32³; 64³ and 128³ shapes and
parameter counts are computed on the meta device (no data).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from medgen.core.errors import UsageError
from medgen.families import registry
from medgen.families.dcgan3d import Critic, Generator, count_parameters
from medgen.families.wgan_gp.config import model_config
from medgen.families.wgan_gp.model import build
from medgen.families.wgan_gp.train import (
    WGANGPHParams,
    critic_loss,
    generator_loss,
    gradient_penalty,
    interpolates,
)
from toy_volumes import make_dataset

pytestmark = pytest.mark.usefixtures("one_thread")
LAMBDA = 10.0


class LinearCritic(nn.Module):
    """f(x) = <w, x> + b over all voxels: its gradient is w everywhere."""

    def __init__(self, w: torch.Tensor, b: float) -> None:
        super().__init__()
        self.w = nn.Parameter(w.clone())
        self.b = nn.Parameter(torch.tensor(b, dtype=w.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.w + self.b


@pytest.mark.parametrize("scale", [0.01, 1.0, 3.0])
def test_gradient_penalty_of_a_linear_critic_is_its_closed_form(scale):
    gen = torch.Generator().manual_seed(0)
    n = 16**3
    w = torch.randn(n, generator=gen, dtype=torch.float64)
    w = w / w.norm() * scale * (1 + torch.rand((), generator=gen, dtype=torch.float64))  # ‖w‖ ≠ 1
    critic = LinearCritic(w, 0.7)
    real = torch.rand(4, 1, 16, 16, 16, generator=gen, dtype=torch.float64) * 2 - 1
    fake = torch.randn(4, 1, 16, 16, 16, generator=gen, dtype=torch.float64)
    eps = torch.tensor([0.0, 1.0, 0.3, 0.9], dtype=torch.float64)  # both ends and in between
    x_hat = interpolates(real, fake, eps)
    torch.testing.assert_close(x_hat[2], 0.3 * real[2] + 0.7 * fake[2])
    d_real, d_fake, d_hat = critic(real), critic(fake), critic(x_hat)
    loss, gp, wdist = critic_loss(d_real, d_fake, d_hat, x_hat, LAMBDA)
    norm = critic.w.detach().norm()
    expected_gp = (norm - 1) ** 2
    torch.testing.assert_close(gp.double(), expected_gp, rtol=1e-6, atol=1e-12)
    torch.testing.assert_close((LAMBDA * gp).double(), LAMBDA * expected_gp, rtol=1e-6, atol=1e-12)
    # the Wasserstein estimate of a linear critic: <w, mean(real) − mean(fake)>
    expected_w = (real.flatten(1).mean(0) - fake.flatten(1).mean(0)) @ critic.w.detach()
    torch.testing.assert_close(wdist.double(), expected_w, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(loss.double(), -expected_w + LAMBDA * expected_gp, rtol=1e-6, atol=1e-9)
    # the penalty trains the critic: d/dw λ(‖w‖ − 1)² = 2λ(‖w‖ − 1) w / ‖w‖ (needs the gradient's own graph)
    (grad_w,) = torch.autograd.grad(LAMBDA * gp, critic.w)
    torch.testing.assert_close(grad_w.double(), 2 * LAMBDA * (norm - 1) * critic.w.detach() / norm, rtol=1e-6,
                               atol=1e-12)


def test_a_constant_critic_costs_only_the_penalty_and_the_signs_reward_the_right_side():
    x = torch.rand(3, 1, 16, 16, 16) * 2 - 1
    fake = torch.rand(3, 1, 16, 16, 16) * 2 - 1
    x_hat = interpolates(x, fake, torch.rand(3))

    def constant(v):  # f(x) = 2.5: its gradient is 0 everywhere, the penalty (0 − 1)² = 1
        return v.flatten(1).sum(1) * 0 + 2.5

    loss, gp, wdist = critic_loss(constant(x), constant(fake), constant(x_hat), x_hat, LAMBDA)
    assert wdist.item() == 0.0 and gp.item() == 1.0 and loss.item() == LAMBDA
    # a critic that scores real volumes higher than generated ones has a lower loss (D minimises it) ...
    d_real, d_fake = torch.tensor([2.0, 4.0]), torch.tensor([-1.0, 1.0])
    lin = critic_loss(d_real, d_fake, constant(x_hat), x_hat, 0.0)
    assert lin[2].item() == 3.0 and lin[0].item() == -3.0
    swapped = critic_loss(d_fake, d_real, constant(x_hat), x_hat, 0.0)
    assert swapped[0].item() == 3.0
    # ... and the generator's loss falls as the critic scores its volumes higher
    assert generator_loss(torch.tensor([1.0, 3.0])).item() == -2.0
    assert generator_loss(torch.tensor([5.0, 7.0])) < generator_loss(torch.tensor([1.0, 3.0]))


@pytest.mark.parametrize("norm", ["layer", "instance", "none"])
def test_a_volume_s_critic_score_does_not_depend_on_its_batch(norm):
    torch.manual_seed(0)
    D = Critic(model_config("tiny", 16, d_norm=norm))
    x = torch.rand(3, 1, 16, 16, 16) * 2 - 1
    with torch.no_grad():
        together = D(x)
        alone = torch.cat([D(x[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-6)
    with pytest.raises(UsageError, match="d_norm"):  # batch statistics would make the penalty per batch
        model_config("tiny", 16, d_norm="batch")


@pytest.mark.parametrize("size", [16, 32, 64])
@pytest.mark.parametrize("upsample", ["nearest", "transposed"])
def test_shapes_and_blocks_follow_the_size(size, upsample):
    cfg = model_config("tiny", size, upsample=upsample)
    device = torch.device("meta") if size > 32 else torch.device("cpu")  # 64³: shapes only, no data
    with device:
        G, D = Generator(cfg), Critic(cfg)
        z = torch.randn(2, cfg.latent_dim)
        x = G(z)
        scores, hidden = D(x, features=True)
    levels = int(math.log2(size // 4))
    assert x.shape == (2, 1, size, size, size)
    assert scores.shape == (2,)
    assert len(G.convs) == levels - 1 and len(D.trunk.convs) == levels
    assert [h.shape[-1] for h in hidden] == [size // 2**k for k in range(1, levels + 1)]
    assert hidden[-1].shape[1:] == (cfg.critic_widths()[-1], 4, 4, 4)
    if device.type == "cpu":
        assert x.abs().max() <= 1.0  # tanh


def test_paper_preset_has_the_published_parameter_counts():
    with torch.device("meta"):
        g64, d64 = Generator(model_config("paper", 64)), Critic(model_config("paper", 64))
        g128, d128 = Generator(model_config("paper", 128)), Critic(model_config("paper", 128))
    # Kwon et al.'s 64³ networks (their linear layer has 512·4³ biases more, cancelled by the BatchNorm after it)
    assert count_parameters(g64) == 37_449_280 - 512 * 4**3
    assert count_parameters(d64) == 11_049_665
    # the HA-GAN authors' 128³ WGAN generator; their 128³ VAE-GAN discriminator's widths
    assert count_parameters(g128) == 84_342_336
    assert count_parameters(d128) == 11_178_849
    assert model_config("paper", 128).generator_widths()[::-1] == [1024, 512, 256, 128, 64]
    assert model_config("paper", 128).critic_widths() == [32, 64, 128, 256, 512]


def test_generate_is_reproducible_per_seed_and_volume():
    m = build("tiny", 16, seed=0)
    three = m.generate(3, seed=5)
    assert three.shape == (3, 16, 16, 16) and three.dtype == np.float32 and np.abs(three).max() <= 1.0
    np.testing.assert_array_equal(m.generate(3, seed=5), three)
    # one pass on 3 volumes = three passes on one (BatchNorm uses running statistics), up to float rounding
    np.testing.assert_allclose(m.generate(3, seed=5, batch_size=3), three, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(m.generate(1, seed=5, indices=[2])[0], three[2])
    np.testing.assert_array_equal(m.generate(1, z=m.sample_latents(1, seed=5, start=1))[0], three[1])
    assert not np.array_equal(m.generate(1, seed=6)[0], three[0])
    assert not np.array_equal(three[0], three[1])
    np.testing.assert_array_equal(build("tiny", 16, seed=0).generate(1, seed=5)[0], three[0])  # same init seed
    with pytest.raises(UsageError, match="unconditional"):
        m.generate(1, labels=1)
    with pytest.raises(UsageError, match="chunk"):
        m.generate(1, chunk=4)
    with pytest.raises(UsageError, match="HU"):  # an untrained build knows no CT window
        m.generate(1, hu=True)


def test_one_iteration_is_n_critic_critic_updates_and_one_generator_update(tmp_path):
    from medgen.training import checkpoint as ckpt_io
    from medgen.training.runconfig import RunConfig

    data = make_dataset(tmp_path / "data", n=2, size=16)
    cfg = RunConfig(data=str(data), model=model_config("tiny", 16).to_dict(), family="wgan-gp",
                    hparams={"n_critic": 3}, preset="tiny", iters=2, batch=2, device="cpu", log_every=1,
                    sample_every=2, ckpt_every=1000, split_fractions=(1.0, 0.0, 0.0))
    registry.train(cfg, tmp_path / "run", progress=False)
    opt = ckpt_io.load_state(tmp_path / "run")["optimizers"]
    assert {float(st["step"]) for st in opt["D"]["state"].values()} == {6.0}  # 2 iterations × 3
    assert {float(st["step"]) for st in opt["G"]["state"].values()} == {2.0}
    assert (tmp_path / "run" / "samples" / "iter-000002.png").is_file()  # the preview mosaic
    model = registry.load(tmp_path / "run")
    assert model.generate(2, seed=0).shape == (2, 16, 16, 16)


def test_settings_are_checked():
    for size in (8, 24, 1024):
        with pytest.raises(UsageError, match="power of two"):
            model_config("tiny", size)
    with pytest.raises(UsageError, match="unconditional"):
        model_config("tiny", 16, num_classes=2)
    assert model_config("tiny", 16, num_classes=0, width=None).width == 0.125
    with pytest.raises(UsageError, match="unknown"):
        model_config("tiny", 16, slab_fraction=0.5)
    with pytest.raises(UsageError, match="n_critic"):
        WGANGPHParams.from_dict({"n_critic": 0})
    with pytest.raises(UsageError, match="preset"):
        model_config("huge", 16)
    hp = WGANGPHParams.from_dict({})
    assert (hp.lr_g, hp.lr_d, hp.betas, hp.n_critic, hp.gp_weight) == (1e-4, 1e-4, (0.0, 0.9), 5, 10.0)


def test_gradient_penalty_reaches_the_critic_through_the_training_path():
    # gradient_penalty on the concatenated batch the step feeds the critic equals the penalty on x̂ alone
    torch.manual_seed(1)
    D = Critic(model_config("tiny", 16))
    x, fake = torch.rand(2, 1, 16, 16, 16) * 2 - 1, torch.rand(2, 1, 16, 16, 16) * 2 - 1
    x_hat = interpolates(x, fake, torch.tensor([0.25, 0.75]))
    together = gradient_penalty(D(torch.cat([x, fake, x_hat]))[4:], x_hat)
    alone = gradient_penalty(D(x_hat), x_hat)
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-7)
    assert together.item() > 0
