"""StyleGAN2 training: hyper-parameters, networks, optimisers, the losses and the step the shared loop runs.

One iteration t (:func:`train_step`), on the iteration's batch of real volumes x::

    z, z₂ ~ N(0, I); with probability ``style_mixing`` the layers from a cutoff c ~ U{1, …, num_ws − 1} on read
    w(z₂) (style mixing regularisation); fake = G(z) with per-voxel noise, w_avg updated (β = ``w_avg_beta``)
    D step  softplus(D(fake)) + softplus(−D(x))                          non-saturating logistic loss
            + γ/2 · ‖∇ₓD(x)‖² · r1_every     only when t % r1_every == 0  (lazy R1 regularisation)
    G step  softplus(−D(fake))  through the updated, frozen D

as Karras et al. 2020 (configuration F, Adam lr 0.002, β = (0, 0.99), ε = 1e-8, R1 every 16 iterations with
its weight multiplied by 16, the regularised network's Adam lr and β scaled by c = r1_every / (r1_every + 1):
lr·c and β^c, section 3.1 and appendix B).

Differences from the paper, on purpose:

* No path-length regularisation (a path-length-free simplified variant): G has no regularisation step, so its
  Adam settings are not scaled; the mean-w path-length target and its lazy schedule are absent.
* G runs once per iteration and its output serves both steps (as :mod:`medgen.families.pggan.train`: the same
  gradient as a second forward pass on the same z, where the authors draw new latents for the G step).
* On a regularisation iteration the R1 term joins the logistic loss in one D update (the authors' "Dboth"
  phase, which their code uses without lazy regularisation; with it they take a separate R1 update).
* Real and generated volumes go through D in one call whose minibatch standard deviation never mixes the two
  (``parts=2``, consecutive groups of at most 4 volumes within each part).
* ``r1_gamma`` defaults to the paper's 10 (the FFHQ value; the authors tune it per data set, e.g. 1 for LSUN
  Church); a 3D volume has many more voxels per sample, so a data set may want another value.

Logged: ``D`` (the logistic loss), ``G``, and ``r1``: ‖∇ₓD(x)‖² (mean over the volumes) times r1_every on a
regularisation iteration, 0 on the others, so that its mean over many iterations estimates the penalty.

Random draws, in this order from the loop's per-iteration generator: z, z₂, the mixing coin, the cutoff; the
per-voxel noise comes from the global generator, which the loop re-seeds every iteration (exact resume).
DDP: G and D are each wrapped and called once per iteration by their own update.
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
from medgen.families.penalties import lazy_r1_weight, r1_penalty
from medgen.families.stylegan2.config import StyleGAN2Config
from medgen.families.stylegan2.networks import Discriminator, Generator
from medgen.training.family import Step


@dataclass
class StyleGAN2HParams:
    """``lr_g``, ``lr_d``, ``betas``, ``adam_eps``: Adam's (D's lr and betas are then scaled for lazy
    regularisation, :func:`optimizers`); ``r1_gamma``: γ of the R1 penalty (0: none); ``r1_every``: the R1
    penalty every that many iterations (1: every iteration, no scaling); ``style_mixing``: probability of mixing
    two codes in a batch; ``w_avg_beta``: decay of the running mean of w."""

    lr_g: float = 0.002
    lr_d: float = 0.002
    betas: tuple[float, float] = (0.0, 0.99)
    adam_eps: float = 1e-8
    r1_gamma: float = 10.0
    r1_every: int = 16
    style_mixing: float = 0.9
    w_avg_beta: float = 0.995

    def validate(self) -> None:
        checks = [
            (self.lr_g > 0 and self.lr_d > 0, "lr_g and lr_d must be > 0"),
            (len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
             f"betas {self.betas}: need two values in [0, 1)"),
            (self.adam_eps > 0, f"adam_eps {self.adam_eps}: must be > 0"),
            (self.r1_gamma >= 0, f"r1_gamma {self.r1_gamma}: must be >= 0"),
            (isinstance(self.r1_every, int) and self.r1_every >= 1,
             f"r1_every {self.r1_every!r}: need an integer >= 1"),
            (0 <= self.style_mixing <= 1, f"style_mixing {self.style_mixing}: need a probability in [0, 1]"),
            (0 <= self.w_avg_beta < 1, f"w_avg_beta {self.w_avg_beta}: need a value in [0, 1)"),
        ]
        for ok, message in checks:
            if not ok:
                raise UsageError(message)

    @property
    def lazy_ratio(self) -> float:
        """c = r1_every / (r1_every + 1) (1 without lazy regularisation): D's Adam uses lr·c and β^c."""
        return self.r1_every / (self.r1_every + 1) if self.r1_every > 1 else 1.0

    def to_dict(self) -> dict[str, Any]:
        return tuples_as_lists(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "StyleGAN2HParams":
        hp = from_dict(cls, d, "stylegan2 training setting")
        hp.validate()
        return hp


def build(cfg: StyleGAN2Config, hp: StyleGAN2HParams, device: torch.device) -> dict[str, nn.Module]:
    """G and D on ``device``; the checkpoint keys are these names."""
    return {"G": Generator(cfg).to(device), "D": Discriminator(cfg).to(device)}


def optimizers(nets: dict[str, nn.Module], hp: StyleGAN2HParams,
               device: torch.device) -> dict[str, torch.optim.Optimizer]:
    """Adam for G (lr_g, betas) and for D with the lazy-regularisation scaling (lr_d·c, betas^c)."""
    c = hp.lazy_ratio
    fused = device.type in ("cuda", "cpu")
    betas = tuple(float(b) for b in hp.betas)
    return {
        "G": torch.optim.Adam(nets["G"].parameters(), lr=hp.lr_g, betas=betas, eps=float(hp.adam_eps), fused=fused),
        "D": torch.optim.Adam(nets["D"].parameters(), lr=hp.lr_d * c, betas=tuple(b**c for b in betas),
                              eps=float(hp.adam_eps), fused=fused),
    }


def loss_names(cfg: StyleGAN2Config, hp: StyleGAN2HParams) -> list[str]:
    return ["D", "G", "r1"]


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating logistic loss of D: mean softplus(D(fake)) + mean softplus(−D(real))."""
    return F.softplus(fake_logits.float()).mean() + F.softplus(-real_logits.float()).mean()


def generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating logistic loss of G: mean softplus(−D(G(z)))."""
    return F.softplus(-fake_logits.float()).mean()


def r1_weight(hp: StyleGAN2HParams, iteration: int) -> float:
    """The weight of the R1 penalty in D's loss at ``iteration``: γ/2 · r1_every when the iteration regularises
    (``iteration % r1_every == 0``), 0 otherwise (and always 0 when γ = 0)."""
    return lazy_r1_weight(hp.r1_gamma, hp.r1_every, iteration)


def mixing_cutoff(cfg: StyleGAN2Config, hp: StyleGAN2HParams, rng: torch.Generator) -> int:
    """The style-mixing cutoff of one batch (two draws from ``rng``, always made): uniform in 1 … num_ws − 1
    with probability ``style_mixing``, else num_ws (no mixing)."""
    coin = float(torch.rand((), generator=rng))
    cutoff = int(torch.randint(1, cfg.num_ws, (), generator=rng))
    return cutoff if coin < hp.style_mixing else cfg.num_ws


def train_step(s: Step) -> dict[str, torch.Tensor]:
    """One StyleGAN2 iteration (module docstring)."""
    cfg: StyleGAN2Config = s.model
    hp: StyleGAN2HParams = s.hp
    D = s.nets["D"]
    b, device = s.local_batch, s.device
    x = s.batch["image"].float()
    z = torch.randn(b, cfg.latent_dim, generator=s.rng).to(device)
    z_mix = torch.randn(b, cfg.latent_dim, generator=s.rng).to(device)
    cutoff = mixing_cutoff(cfg, hp, s.rng)
    weight = r1_weight(hp, s.iteration)

    # ---- D step (G's forward pass is kept for the G step)
    with s.amp():
        fake = s.ddp["G"](z, z_mix, cutoff, w_avg_beta=hp.w_avg_beta)
    reals = x.detach().requires_grad_(weight > 0)
    with s.amp():
        logits = s.ddp["D"](torch.cat([reals, fake.detach().float()]), parts=2).float()
    real_l, fake_l = logits.split(b)
    loss_D = discriminator_loss(real_l, fake_l)
    if weight > 0:
        r1 = r1_penalty(real_l, reals)
        s.update("D", loss_D + weight * r1)
        r1_logged = r1.detach() * hp.r1_every
    else:
        s.update("D", loss_D)
        r1_logged = torch.zeros((), device=device)

    # ---- G step through the updated, frozen D
    D.requires_grad_(False)
    with s.amp():
        loss_G = generator_loss(D(fake))
    s.update("G", loss_G)
    D.requires_grad_(True)
    return {"D": loss_D.detach(), "G": loss_G.detach(), "r1": r1_logged}


@torch.no_grad()
def preview(nets: dict[str, nn.Module], cfg: StyleGAN2Config, hp: StyleGAN2HParams, n: int, seed: int,
            device: torch.device, amp) -> tuple[list[Any], list[str]]:
    """``n`` volumes of the (EMA) generator for fixed z drawn from ``seed`` and the fixed noise, for the mosaics."""
    G = nets["G"]
    z = torch.randn(n, cfg.latent_dim, generator=torch.Generator().manual_seed(seed))
    noise = G.const_noise(device)
    vols = []
    for i in range(n):
        with amp():
            v = G(z[i : i + 1].to(device), noise=noise)
        vols.append(v[0, 0].float().clamp(-1, 1).cpu().numpy())
    return vols, [str(i) for i in range(n)]
