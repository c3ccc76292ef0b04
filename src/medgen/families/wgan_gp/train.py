"""WGAN-GP training: hyper-parameters, networks, optimisers, the losses and the step the shared loop runs.

One iteration (:func:`train_step`) is one generator update preceded by ``n_critic`` critic
updates (Gulrajani et al. 2017, Algorithm 1), on the iteration's batch of real volumes x::

    n_critic times:  z ~ N(0, I), ε ~ U[0, 1] per volume,  x̃ = G(z) (no gradient),  x̂ = ε·x + (1 − ε)·x̃
                     L_D = mean D(x̃) − mean D(x) + λ · mean (‖∇_x̂ D(x̂)‖₂ − 1)²        updates D
    once:            z ~ N(0, I),  L_G = −mean D(G(z))                                   updates G (D frozen)

Random draws, in this order, all from the loop's per-iteration generator (so a resumed run
repeats them exactly): z and ε of each critic update, then the generator update's z.

Where this differs from Algorithm 1: the critic updates of one iteration all see the
iteration's real batch (each with new z and ε); Algorithm 1 draws a new real batch for each
critic update. The shared loop hands a family one batch per iteration, so a new real batch
comes with each generator update instead. (Kwon et al.'s 3D code does it the other way
round: one critic update on a new batch, then five generator updates, with a gradient norm
taken over the channel axis only; medgen follows Gulrajani et al.)

Real and generated volumes go through the critic in one concatenated batch, the
interpolates in a second call (the critic has no batch statistics, so this equals separate
calls); the penalty's second-order graph then spans the interpolates alone (25 % less time
per iteration than one call on all three at 32³). The generator's BatchNorm runs in training
mode in every pass, as in the reference implementations.

DDP: per critic update the critic's wrapper is called once (real and generated volumes) and
the plain critic module once (the interpolates: the same weights); the update's single
backward accumulates both paths into each weight's gradient before DDP reduces it. The
penalty's gradient with respect to the interpolates (``torch.autograd.grad``,
``create_graph=True``) reaches no parameter. So each critic update is one complete DDP
forward/backward (``n_critic`` of them per iteration). The generator's wrapper is called
once, by its update; the critic updates run the plain generator under no_grad.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from medgen.core.errors import UsageError
from medgen.core.settings import from_dict, tuples_as_lists
from medgen.families import dcgan3d
from medgen.families.dcgan3d import Critic, Generator
from medgen.families.wgan_gp.config import WGANGPConfig
from medgen.training.family import Step


@dataclass
class WGANGPHParams:
    """Gulrajani et al.'s settings: Adam ``lr_g``/``lr_d`` 1e-4, ``betas`` (0, 0.9); ``n_critic`` critic updates
    per generator update; ``gp_weight``: λ of the gradient penalty."""

    lr_g: float = 1e-4
    lr_d: float = 1e-4
    betas: tuple[float, float] = (0.0, 0.9)
    n_critic: int = 5
    gp_weight: float = 10.0

    def to_dict(self) -> dict[str, Any]:
        return tuples_as_lists(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "WGANGPHParams":
        hp = from_dict(cls, d, "WGAN-GP training setting")
        if not (hp.lr_g > 0 and hp.lr_d > 0):
            raise UsageError("lr_g and lr_d must be > 0")
        if len(hp.betas) != 2 or not all(0 <= b < 1 for b in hp.betas):
            raise UsageError(f"betas {hp.betas}: need two values in [0, 1)")
        if not isinstance(hp.n_critic, int) or hp.n_critic < 1:
            raise UsageError(f"n_critic {hp.n_critic!r}: need at least 1 critic update per generator update")
        if hp.gp_weight < 0:
            raise UsageError(f"gp_weight {hp.gp_weight}: must be >= 0")
        return hp


def build(cfg: WGANGPConfig, hp: WGANGPHParams, device: torch.device) -> dict[str, nn.Module]:
    """G and D on ``device``; the checkpoint keys are these names."""
    return {"G": Generator(cfg).to(device), "D": Critic(cfg).to(device)}


def optimizers(nets: dict[str, nn.Module], hp: WGANGPHParams, device: torch.device) -> dict[str, torch.optim.Optimizer]:
    betas = tuple(float(b) for b in hp.betas)
    return {"G": torch.optim.Adam(nets["G"].parameters(), lr=hp.lr_g, betas=betas),
            "D": torch.optim.Adam(nets["D"].parameters(), lr=hp.lr_d, betas=betas)}


def loss_names(cfg: WGANGPConfig, hp: WGANGPHParams) -> list[str]:
    """D: the critic loss with the penalty; G: the generator loss; GP: the penalty without λ; W: the critic's
    estimate of the Wasserstein distance, mean D(x) − mean D(x̃) (D, GP and W averaged over the critic updates)."""
    return ["D", "G", "GP", "W"]


def interpolates(real: torch.Tensor, fake: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """x̂ = ε·x + (1 − ε)·x̃, ε of shape [B] (one per volume), a leaf that requires its gradient."""
    e = eps.reshape(-1, *([1] * (real.dim() - 1))).to(real.dtype)
    return (e * real + (1 - e) * fake).detach().requires_grad_(True)


def _f32(t: torch.Tensor) -> torch.Tensor:
    """``t`` in float32 at least (bf16 under autocast → float32; float64 stays float64)."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def gradient_penalty(scores: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """mean over volumes of (‖∇_x̂ D(x̂)‖₂ − 1)², the norm over all of a volume's voxels.

    ``scores``: D(x̂) [B], computed from ``x_hat`` with its graph; the gradient keeps its own graph
    (``create_graph``) so the penalty can be minimised over D's weights.
    """
    (grad,) = torch.autograd.grad(_f32(scores).sum(), x_hat, create_graph=True)
    return (_f32(grad).flatten(1).norm(2, dim=1) - 1).pow(2).mean()


def critic_loss(d_real: torch.Tensor, d_fake: torch.Tensor, d_interp: torch.Tensor, x_hat: torch.Tensor,
                gp_weight: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(L_D, penalty, Wasserstein estimate): L_D = mean D(x̃) − mean D(x) + λ·penalty (minimised by D)."""
    w = _f32(d_real).mean() - _f32(d_fake).mean()
    gp = gradient_penalty(d_interp, x_hat)
    return -w + gp_weight * gp, gp, w


def generator_loss(d_fake: torch.Tensor) -> torch.Tensor:
    """L_G = −mean D(G(z)): the generator raises the critic's score of its volumes."""
    return -_f32(d_fake).mean()


def train_step(s: Step) -> dict[str, torch.Tensor]:
    """``n_critic`` critic updates, then one generator update (module docstring)."""
    cfg: WGANGPConfig = s.model
    hp: WGANGPHParams = s.hp
    G, D = s.nets["G"], s.nets["D"]
    x = s.batch["image"].float()
    b, dev = x.shape[0], s.device
    d_losses, gps, ws = [], [], []
    for _ in range(hp.n_critic):
        z = torch.randn(b, cfg.latent_dim, generator=s.rng).to(dev)
        eps = torch.rand(b, generator=s.rng).to(dev)
        with torch.no_grad(), s.amp():
            fake = G(z).float()
        x_hat = interpolates(x, fake, eps)
        with s.amp():
            scores = s.ddp["D"](torch.cat([x, fake]))
            scores_hat = D(x_hat)
        loss_d, gp, w = critic_loss(scores[:b], scores[b:], scores_hat, x_hat, hp.gp_weight)
        s.update("D", loss_d)
        d_losses.append(loss_d.detach())
        gps.append(gp.detach())
        ws.append(w.detach())
        del fake, x_hat, scores, scores_hat

    z = torch.randn(b, cfg.latent_dim, generator=s.rng).to(dev)
    D.requires_grad_(False)
    with s.amp():
        loss_g = generator_loss(D(s.ddp["G"](z)))
    s.update("G", loss_g)
    D.requires_grad_(True)
    return {"D": torch.stack(d_losses).mean(), "G": loss_g.detach(), "GP": torch.stack(gps).mean(),
            "W": torch.stack(ws).mean()}


def preview(nets: dict[str, nn.Module], cfg: WGANGPConfig, hp: WGANGPHParams, n: int, seed: int, device: torch.device,
            amp) -> tuple[list[Any], list[str]]:
    """``n`` volumes of the (EMA) generator for fixed z drawn from ``seed``, for the training mosaics."""
    return dcgan3d.preview(nets["G"], cfg.latent_dim, n, seed, device, amp)
