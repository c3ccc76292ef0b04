"""PGGAN training: hyper-parameters, networks, optimisers and the step the shared loop runs.

One iteration t (:func:`train_step`), at the level k and weight α of :func:`.schedule.phase_at` (t)::

    real x → 2^(L−k)× average pooling to r_k³; while fading: lerp(upsample(avgpool(x_k)), x_k, α)
    z ~ N(0, I), fake = G(z, k, α)
    D step  D(fake) − D(real) + λ·(‖∇D(x̂)‖ − 1)² + ε_drift·D(real)²
            x̂ = u·real + (1 − u)·fake, u ~ U(0, 1) per volume
    G step  −D(fake)  through the updated, frozen D

as Karras et al. 2018 (WGAN-GP, λ = 10, ε_drift = 0.001, Adam lr 0.001, β = (0, 0.99), ε = 1e-8, one D
step per G step; the real volumes are faded like the generated ones, Fig. 2 of the paper). At the first
iteration of every phase (a fade-in or a stable phase) both optimisers' states are reset, as the authors'
code does (``reset_opt_for_new_lod``). The schedule depends on the iteration index only, so resume is exact.

Differences from the paper, on purpose: the batch size is the run's throughout (the paper lowers it at high
resolutions to fit memory); G runs once per iteration and its output serves both steps (as HA-GAN's step,
:mod:`medgen.families.hagan.train`: the same gradient as a second forward pass on the same z, where the
authors draw new latents for the G step); real, generated and interpolated volumes go through D in one call
whose minibatch standard deviation never mixes the three (``parts=3``); phases are counted in iterations,
1000 each by default (the paper: 800k real images, 50k iterations of 16) to fit medgen's runs of tens of
thousands of iterations on data sets of hundreds of volumes; the networks are 3D (3³ kernels, and the dense
layer to 4³ has the gain √2/8 where the authors' 2D code has √2/4 for 4²).

Random draws, in this order from the loop's per-iteration generator: z, u.
DDP: G and D are each wrapped and called once per iteration by their own update.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medgen.core.errors import UsageError
from medgen.core.settings import from_dict, tuples_as_lists
from medgen.families.pggan.config import PGGANConfig
from medgen.families.pggan.layers import downsample2, upsample2
from medgen.families.pggan.networks import Discriminator, Generator
from medgen.families.pggan.schedule import Phase, phase_at
from medgen.training.family import Step


@dataclass
class PGGANHParams:
    """``fade_iters``, ``stable_iters``: iterations of every fade-in and of every stable phase
    (:mod:`.schedule`); ``lr_g``, ``lr_d``, ``betas``, ``adam_eps``: Adam's; ``gp_weight``: λ of the
    gradient penalty; ``drift``: ε_drift, the weight of D(real)²."""

    fade_iters: int = 1000
    stable_iters: int = 1000
    lr_g: float = 1e-3
    lr_d: float = 1e-3
    betas: tuple[float, float] = (0.0, 0.99)
    adam_eps: float = 1e-8
    gp_weight: float = 10.0
    drift: float = 0.001

    def validate(self) -> None:
        checks = [
            (isinstance(self.fade_iters, int) and self.fade_iters >= 1, f"fade_iters {self.fade_iters!r}: need an integer >= 1"),
            (isinstance(self.stable_iters, int) and self.stable_iters >= 1,
             f"stable_iters {self.stable_iters!r}: need an integer >= 1"),
            (self.lr_g > 0 and self.lr_d > 0, "lr_g and lr_d must be > 0"),
            (len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), f"betas {self.betas}: need two values in [0, 1)"),
            (self.adam_eps > 0, f"adam_eps {self.adam_eps}: must be > 0"),
            (self.gp_weight >= 0 and self.drift >= 0, "gp_weight and drift must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise UsageError(message)

    def to_dict(self) -> dict[str, Any]:
        return tuples_as_lists(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PGGANHParams":
        hp = from_dict(cls, d, "pggan training setting")
        hp.validate()
        return hp


def phase(cfg: PGGANConfig, hp: PGGANHParams, iteration: int) -> Phase:
    """The growth phase of ``iteration`` for this architecture and schedule."""
    return phase_at(iteration, cfg.levels, hp.fade_iters, hp.stable_iters)


def build(cfg: PGGANConfig, hp: PGGANHParams, device: torch.device) -> dict[str, nn.Module]:
    """G and D at full size (every level), on ``device``."""
    return {"G": Generator(cfg).to(device), "D": Discriminator(cfg).to(device)}


def optimizers(nets: dict[str, nn.Module], hp: PGGANHParams, device: torch.device) -> dict[str, torch.optim.Optimizer]:
    adam = dict(betas=tuple(float(b) for b in hp.betas), eps=float(hp.adam_eps), fused=device.type in ("cuda", "cpu"))
    return {"G": torch.optim.Adam(nets["G"].parameters(), lr=hp.lr_g, **adam),
            "D": torch.optim.Adam(nets["D"].parameters(), lr=hp.lr_d, **adam)}


def loss_names(cfg: PGGANConfig, hp: PGGANHParams) -> list[str]:
    return ["D", "G", "gp"]


def real_at(x: torch.Tensor, level: int, alpha: float, size: int) -> torch.Tensor:
    """Real volumes [B, 1, S, S, S] as D sees them at ``level`` and ``alpha``: average-pooled to r³ and, while
    fading (α < 1), blended with their 2× coarser version upsampled back (paper, Fig. 2)."""
    r = 4 * 2**level
    x = F.avg_pool3d(x, size // r) if size > r else x
    if level > 0 and alpha < 1.0:
        x = torch.lerp(upsample2(downsample2(x)), x, alpha)
    return x


def gradient_penalty(grad: torch.Tensor) -> torch.Tensor:
    """mean over the batch of (‖grad_i‖₂ − 1)² (WGAN-GP with target 1)."""
    norm = (grad.float().square().flatten(1).sum(dim=1) + 1e-12).sqrt()
    return (norm - 1.0).square().mean()


def reset_optimizer(opt: torch.optim.Optimizer) -> None:
    """Forget Adam's moments and step counts (the authors' ``reset_opt_for_new_lod``)."""
    opt.state = defaultdict(dict)


def train_step(s: Step) -> dict[str, torch.Tensor]:
    """One PGGAN iteration (module docstring)."""
    cfg: PGGANConfig = s.model
    hp: PGGANHParams = s.hp
    G, D = s.nets["G"], s.nets["D"]
    b, device = s.local_batch, s.device
    ph = phase(cfg, hp, s.iteration)
    level, alpha = ph.level, ph.alpha
    if ph.is_start:
        for opt in s.opt.values():
            reset_optimizer(opt)
    G.set_state(level, alpha)

    x = real_at(s.batch["image"].float(), level, alpha, cfg.size)
    z = torch.randn(b, cfg.latent_dim, generator=s.rng).to(device)
    u = torch.rand(b, 1, 1, 1, 1, generator=s.rng).to(device)

    # ---- D step (G's forward pass is kept for the G step)
    with s.amp():
        fake = s.ddp["G"](z, level, alpha)
    fake_d = fake.detach().float()
    mixed = torch.lerp(fake_d, x, u).requires_grad_(True)
    with s.amp():
        scores = s.ddp["D"](torch.cat([x, fake_d, mixed]), level, alpha, parts=3).float()
    real_s, fake_s, mixed_s = scores.split(b)
    (grad,) = torch.autograd.grad(mixed_s.sum(), mixed, create_graph=True)
    gp = gradient_penalty(grad)
    loss_D = fake_s.mean() - real_s.mean() + hp.gp_weight * gp + hp.drift * real_s.square().mean()
    s.update("D", loss_D)

    # ---- G step through the updated, frozen D
    D.requires_grad_(False)
    with s.amp():
        loss_G = -D(fake, level, alpha).float().mean()
    s.update("G", loss_G)
    D.requires_grad_(True)
    return {"D": loss_D.detach(), "G": loss_G.detach(), "gp": gp.detach()}


@torch.no_grad()
def preview(nets: dict[str, nn.Module], cfg: PGGANConfig, hp: PGGANHParams, n: int, seed: int, device: torch.device,
            amp) -> tuple[list[Any], list[str]]:
    """``n`` volumes of the (EMA) generator at its current level and α, upsampled to S³, for the mosaics."""
    G = nets["G"]
    z = torch.randn(n, cfg.latent_dim, generator=torch.Generator().manual_seed(seed))
    level, alpha = G.state
    vols = []
    for i in range(n):
        with amp():
            v = G.generate(z[i : i + 1].to(device))
        vols.append(v[0, 0].float().clamp(-1, 1).cpu().numpy())
    r = cfg.resolution(level)
    stage = f"{r}³" + (f", α {alpha:.2f}" if alpha < 1 else "")
    return vols, [f"{i} ({stage})" for i in range(n)]
