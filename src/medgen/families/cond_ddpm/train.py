"""``cond-ddpm`` training: the ``ddpm`` denoising objective with the condition volumes as extra UNet channels.

One iteration (:func:`train_step`) on a batch of paired items, condition c = the ``inputs`` volumes as
channels, target y::

    (c, y) ← the same random cubic patch of each          (only with ``patch``)
    x₀ = y, or y − c₁ with ``residual_target``             (c₁: the first input)
    t ~ U{0, …, T−1},  ε ~ N(0, I)                         (the ddpm family's :func:`noisy_batch`)
    x_t = sqrt(ᾱ_t)·x₀ + sqrt(1 − ᾱ_t)·ε
    loss = ‖UNet(concat[x_t, c], t) − ε‖²                  (v instead of ε for v-prediction)

Random draws, all from the step's generator (exact resume), in order: the patch starts (x, y, z, one
per item each), then ε, then t.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medgen.core.errors import UsageError
from medgen.families.cond_ddpm.config import CondDDPMConfig, CondDDPMHParams
from medgen.families.ddpm import train as ddpm_train
from medgen.families.ddpm.train import noisy_batch
from medgen.families.unet.train import random_patches
from medgen.training.family import Step


def build_unet(cfg: CondDDPMConfig) -> nn.Module:
    """The ``ddpm`` family's UNet taking the noisy target and the ``len(cfg.inputs)`` condition channels."""
    return ddpm_train.build_unet(cfg, cond_channels=len(cfg.inputs))


def condition(batch: dict[str, torch.Tensor], cfg: CondDDPMConfig) -> torch.Tensor:
    """The condition volumes of a data batch as channels ``[b, len(inputs), X, Y, Z]`` (label maps as floats)."""
    return torch.cat([batch[name].float() for name in cfg.inputs], dim=1)


def check_patch(cfg: CondDDPMConfig, hp: CondDDPMHParams) -> None:
    if hp.patch and (hp.patch % cfg.divisor or hp.patch > cfg.size):
        raise UsageError(f"patch {hp.patch}: a multiple of {cfg.divisor} no larger than the volume ({cfg.size})")


def build(cfg: CondDDPMConfig, hp: CondDDPMHParams, device: torch.device) -> dict[str, nn.Module]:
    check_patch(cfg, hp)
    return {"unet": build_unet(cfg).to(device)}


optimizers = ddpm_train.optimizers  # AdamW on the UNet with hp.lr, hp.betas, hp.weight_decay


def loss_names(cfg: CondDDPMConfig, hp: CondDDPMHParams) -> list[str]:
    return ["mse"]


def clean_sample(c: torch.Tensor, y: torch.Tensor, residual_target: bool) -> torch.Tensor:
    """x₀, what is diffused: the target, or its difference from the first condition volume."""
    return y - c[:, :1] if residual_target else y


def train_step(s: Step) -> dict[str, torch.Tensor]:
    """One AdamW step on the conditional denoising loss (module docstring)."""
    cfg: CondDDPMConfig = s.model
    hp: CondDDPMHParams = s.hp
    c, y = condition(s.batch, cfg), s.batch[cfg.target].float()
    if hp.patch and hp.patch < max(c.shape[2:]):
        c, y = random_patches([c, y], hp.patch, s.rng)
    x_t, t, target = noisy_batch(cfg, clean_sample(c, y, hp.residual_target), s.rng)
    with s.amp():
        pred = s.ddp["unet"](torch.cat([x_t, c], dim=1), t)
    loss = F.mse_loss(pred.float(), target)
    s.update("unet", loss)
    return {"mse": loss}
