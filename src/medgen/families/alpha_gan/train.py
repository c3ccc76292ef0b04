"""α-GAN training: hyper-parameters, networks, optimisers and the step the shared loop runs.

One iteration (:func:`train_step`) on real volumes x, with z ~ N(0, I), ẑ = E(x), x_rec = G(ẑ), x_gen = G(z)::

    E  minimises  λ·L1(x_rec, x) − mean C(ẑ)
    G  minimises  λ·L1(x_rec, x) − mean D(x_rec) − mean D(x_gen)
    D  minimises  mean D(x_rec) + mean D(x_gen) − 2·mean D(x) + γ·[GP(x, x_gen) + GP(x, x_rec)]
                  (a WGAN-GP critic, Kwon et al.)
    C  minimises  code_loss "bce":     BCE(C(z), 1) + BCE(C(ẑ), 0)          (Rosca et al.'s classifier)
                  code_loss "wgan-gp": mean C(ẑ) − mean C(z) + γ·GP(z, ẑ)   (Kwon et al.'s code critic)

λ = ``rec_weight`` = 10 and γ = ``gp_weight`` = 10 (Kwon et al.);
GP(a, b) = mean (‖∇D(u·a + (1 − u)·b)‖₂ − 1)², u ~ U(0, 1) per volume. The encoder's code term −mean C(ẑ) is, for the BCE classifier, Rosca et al.'s
−log(C/(1 − C)) (the logit: the estimated log density ratio of prior to encoder codes), and for the critic
Kwon et al.'s −mean C(ẑ). Adam with lr 2e-4 and PyTorch's default β = (0.9, 0.999) for all four networks
(Kwon et al.'s code).

Every gradient is taken at the networks' values before this iteration's updates, from one forward pass of
each network (simultaneous updates, Algorithm 1 of Rosca et al.), and each network gets only its own loss's
gradient (``torch.autograd.backward(..., inputs=...)`` routes them through the shared graph): the encoder gets
the reconstruction and code terms, not the image critic's gradient on x_rec (Rosca et al.; Kwon et al. train E
and G on one joint loss, which passes it to E, and their code leaves the code term out of that loss); D's loss
does not train G, C's does not train E. Kwon et al. update E and G first, then D and C on a new batch, and
step G's optimiser twice per iteration (their code); here one batch and one step each.

Work and DDP: each of E, G, D, C is wrapped and called exactly once per iteration, followed by one backward
pass restricted to its parameters: E on x; G on [ẑ, z] together (its BatchNorm normalises the two halves
together); D on [x, x_rec, x_gen and the two interpolates] (D has no batch statistics, so this equals separate
calls); C on [z, ẑ (and their interpolates for ``wgan-gp``)].

Random draws, in this order from the loop's per-iteration generator: z, u (x and x_gen), u (x and x_rec),
u (codes).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medgen.core.errors import UsageError
from medgen.core.settings import from_dict, tuples_as_lists
from medgen.families.alpha_gan.config import AlphaGANConfig
from medgen.families import dcgan3d
from medgen.families.alpha_gan.networks import CodeDiscriminator, Encoder
from medgen.families.dcgan3d import Critic, Generator
from medgen.training.family import Step

CODE_LOSSES = ("bce", "wgan-gp")


@dataclass
class AlphaGANHParams:
    """Adam ``lr_g``, ``lr_d``, ``lr_e``, ``lr_c``, ``betas``, ``adam_eps``; ``rec_weight``: λ of the L1
    reconstruction; ``gp_weight``: γ of the gradient penalties; ``code_loss``: the code discriminator's loss,
    ``bce`` (Rosca et al.) or ``wgan-gp`` (Kwon et al.'s code)."""

    lr_g: float = 2e-4
    lr_d: float = 2e-4
    lr_e: float = 2e-4
    lr_c: float = 2e-4
    betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    rec_weight: float = 10.0
    gp_weight: float = 10.0
    code_loss: str = "bce"

    def validate(self) -> None:
        checks = [
            (all(v > 0 for v in (self.lr_g, self.lr_d, self.lr_e, self.lr_c)), "learning rates must be > 0"),
            (len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), f"betas {self.betas}: need two values in [0, 1)"),
            (self.adam_eps > 0, f"adam_eps {self.adam_eps}: must be > 0"),
            (self.rec_weight >= 0 and self.gp_weight >= 0, "rec_weight and gp_weight must be >= 0"),
            (self.code_loss in CODE_LOSSES, f"code_loss {self.code_loss!r}: {' or '.join(CODE_LOSSES)}"),
        ]
        for ok, message in checks:
            if not ok:
                raise UsageError(message)

    def to_dict(self) -> dict[str, Any]:
        return tuples_as_lists(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AlphaGANHParams":
        hp = from_dict(cls, d, "alpha-gan training setting")
        hp.validate()
        return hp


def build(cfg: AlphaGANConfig, hp: AlphaGANHParams, device: torch.device) -> dict[str, nn.Module]:
    """G, D, E and C on ``device``; the checkpoint keys are these names."""
    return {"G": Generator(cfg).to(device), "D": Critic(cfg).to(device), "E": Encoder(cfg).to(device),
            "C": CodeDiscriminator(cfg).to(device)}


def optimizers(nets: dict[str, nn.Module], hp: AlphaGANHParams, device: torch.device) -> dict[str, torch.optim.Optimizer]:
    adam = dict(betas=tuple(float(b) for b in hp.betas), eps=float(hp.adam_eps), fused=device.type in ("cuda", "cpu"))
    lrs = {"G": hp.lr_g, "D": hp.lr_d, "E": hp.lr_e, "C": hp.lr_c}
    return {name: torch.optim.Adam(nets[name].parameters(), lr=lr, **adam) for name, lr in lrs.items()}


def loss_names(cfg: AlphaGANConfig, hp: AlphaGANHParams) -> list[str]:
    return ["D", "G", "E", "C", "rec"]


def code_discriminator_loss(logits_prior: torch.Tensor, logits_encoded: torch.Tensor) -> torch.Tensor:
    """BCE of the code discriminator: prior codes z are real (1), encoder codes ẑ fake (0), each term a mean:
    mean log(1 + e^(−l_z)) + mean log(1 + e^(l_ẑ))."""
    return (F.binary_cross_entropy_with_logits(logits_prior, torch.ones_like(logits_prior))
            + F.binary_cross_entropy_with_logits(logits_encoded, torch.zeros_like(logits_encoded)))


def gradient_penalty(grad: torch.Tensor) -> torch.Tensor:
    """mean over the batch of (‖grad_i‖₂ − 1)²."""
    norm = (grad.float().square().flatten(1).sum(dim=1) + 1e-12).sqrt()
    return (norm - 1.0).square().mean()


def train_step(s: Step) -> dict[str, torch.Tensor]:
    """One simultaneous update of E, G, D and C (module docstring)."""
    cfg: AlphaGANConfig = s.model
    hp: AlphaGANHParams = s.hp
    x = s.batch["image"].float()
    b, dev, rng = x.shape[0], s.device, s.rng
    z = torch.randn(b, cfg.latent_dim, generator=rng).to(dev)
    u_gen = torch.rand(b, 1, 1, 1, 1, generator=rng).to(dev)
    u_rec = torch.rand(b, 1, 1, 1, 1, generator=rng).to(dev)
    u_code = torch.rand(b, 1, generator=rng).to(dev)

    # ---- one forward pass of each network
    with s.amp():
        z_hat = s.ddp["E"](x)
    z_hat = z_hat.float()
    with s.amp():
        out = s.ddp["G"](torch.cat([z_hat, z]))
    x_rec, x_gen = out.float().split(b)
    mix_gen = torch.lerp(x_gen.detach(), x, u_gen).requires_grad_(True)
    mix_rec = torch.lerp(x_rec.detach(), x, u_rec).requires_grad_(True)
    with s.amp():
        scores = s.ddp["D"](torch.cat([x, x_rec, x_gen, mix_gen, mix_rec]))
    real_s, rec_s, gen_s, mix_gen_s, mix_rec_s = scores.float().split(b)
    g_gen, g_rec = torch.autograd.grad(mix_gen_s.sum() + mix_rec_s.sum(), [mix_gen, mix_rec], create_graph=True)
    if hp.code_loss == "bce":
        with s.amp():
            logits = s.ddp["C"](torch.cat([z, z_hat]))
        prior_l, enc_l = logits.float().split(b)
        loss_C = code_discriminator_loss(prior_l, enc_l)
    else:
        mix = torch.lerp(z, z_hat.detach(), u_code).requires_grad_(True)
        with s.amp():
            logits = s.ddp["C"](torch.cat([z, z_hat, mix]))
        prior_l, enc_l, mix_l = logits.float().split(b)
        (g_code,) = torch.autograd.grad(mix_l.sum(), mix, create_graph=True)
        loss_C = enc_l.mean() - prior_l.mean() + hp.gp_weight * gradient_penalty(g_code)

    # ---- the four losses (module docstring)
    rec = F.l1_loss(x_rec, x)
    loss_D = rec_s.mean() + gen_s.mean() - 2.0 * real_s.mean() + hp.gp_weight * (
        gradient_penalty(g_gen) + gradient_penalty(g_rec))
    loss_E = hp.rec_weight * rec - enc_l.mean()
    loss_G = hp.rec_weight * rec - rec_s.mean() - gen_s.mean()

    # ---- each network's gradient of its own loss, all at the current weights (the last pass frees the graph)
    order = (("D", loss_D), ("C", loss_C), ("E", loss_E), ("G", loss_G))
    for i, (name, loss) in enumerate(order):
        torch.autograd.backward(loss, inputs=list(s.nets[name].parameters()), retain_graph=i < len(order) - 1)
    for name, _ in order:
        s.opt[name].step()
        s.opt[name].zero_grad(set_to_none=True)
    return {"D": loss_D.detach(), "G": loss_G.detach(), "E": loss_E.detach(), "C": loss_C.detach(), "rec": rec.detach()}


def preview(nets: dict[str, nn.Module], cfg: AlphaGANConfig, hp: AlphaGANHParams, n: int, seed: int,
            device: torch.device, amp) -> tuple[list[Any], list[str]]:
    """``n`` volumes of the (EMA) generator for fixed z drawn from ``seed``, for the training mosaics."""
    return dcgan3d.preview(nets["G"], cfg.latent_dim, n, seed, device, amp)
