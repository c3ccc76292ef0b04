"""DDPM training: hyper-parameters, the UNet, its optimiser and the step the shared loop runs.

One iteration (:func:`train_step`), on a batch of volumes x₀ in [-1, 1]::

    t ~ U{0, …, T−1},  ε ~ N(0, I)                     (from the loop's per-iteration generator)
    x_t = sqrt(ᾱ_t)·x₀ + sqrt(1 − ᾱ_t)·ε               (MONAI scheduler.add_noise)
    loss = ‖UNet(x_t, t, class) − target‖²             target ε, or v for v-prediction

For classifier-free guidance (Ho & Salimans 2021) the class of each volume is replaced by
the "no class" entry K with probability ``class_dropout``, so one UNet learns both the
conditional and the unconditional denoiser. The loop keeps an EMA of the UNet, which
sampling uses.
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
from medgen.families.ddpm.config import DDPMConfig
from medgen.families.ddpm.sample import make_scheduler, sample_volumes
from medgen.training.family import Step


@dataclass
class DDPMHParams:
    """Adam ``lr``, ``betas`` and ``weight_decay`` (AdamW); ``class_dropout``: share of training volumes
    whose class is replaced by "no class" (classifier-free guidance; conditional models only);
    ``preview_steps``: DDIM steps of the training sample mosaics."""

    lr: float = 2e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    class_dropout: float = 0.1
    preview_steps: int = 25

    def to_dict(self) -> dict[str, Any]:
        return tuples_as_lists(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DDPMHParams":
        hp = from_dict(cls, d, "DDPM training setting")
        if not hp.lr > 0 or hp.weight_decay < 0 or not 0 <= hp.class_dropout < 1 or hp.preview_steps < 1:
            raise UsageError("lr must be > 0, weight_decay >= 0, class_dropout in [0, 1) and preview_steps >= 1")
        if len(hp.betas) != 2 or not all(0 <= b < 1 for b in hp.betas):
            raise UsageError(f"betas {hp.betas}: need two values in [0, 1)")
        return hp


def build_unet(cfg: DDPMConfig, cond_channels: int = 0) -> nn.Module:
    """MONAI's 3D ``DiffusionModelUNet`` for ``cfg`` (class embedding of K + 1 entries when conditional).

    ``cond_channels``: condition volumes concatenated to the noisy sample as extra input channels (the
    image-conditioned ``cond-ddpm`` family); the output keeps ``cfg.in_channels``. Its last convolution
    starts at zero (MONAI's initialisation), so an untrained UNet predicts 0.
    """
    from monai.networks.nets import DiffusionModelUNet

    return DiffusionModelUNet(
        spatial_dims=3,
        in_channels=cfg.in_channels + cond_channels,
        out_channels=cfg.in_channels,
        num_res_blocks=cfg.num_res_blocks,
        channels=tuple(cfg.channels),
        attention_levels=tuple(cfg.attention_levels),
        norm_num_groups=cfg.norm_groups,
        num_head_channels=cfg.num_head_channels,
        num_class_embeds=cfg.num_classes + 1 if cfg.num_classes > 0 else None,
        # torch's scaled_dot_product_attention: no (tokens × tokens) matrix held in memory (a 16³ level has
        # 4096 tokens), 2.5× faster on the CPU at 64³ with the same result.
        use_flash_attention=True,
    )


def build(cfg: DDPMConfig, hp: DDPMHParams, device: torch.device) -> dict[str, nn.Module]:
    return {"unet": build_unet(cfg).to(device)}


def optimizers(nets: dict[str, nn.Module], hp: DDPMHParams, device: torch.device) -> dict[str, torch.optim.Optimizer]:
    return {"unet": torch.optim.AdamW(nets["unet"].parameters(), lr=hp.lr, betas=hp.betas, weight_decay=hp.weight_decay)}


def loss_names(cfg: DDPMConfig, hp: DDPMHParams) -> list[str]:
    return ["mse"]


def noisy_batch(cfg: DDPMConfig, x0: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_t, t, target) for clean volumes ``x0`` [b, 1, S, S, S], drawing t and ε from ``generator`` (CPU)."""
    scheduler = make_scheduler(cfg, "ddpm")
    b = x0.shape[0]
    noise = torch.randn(x0.shape, generator=generator).to(x0.device)
    t = torch.randint(0, cfg.num_train_timesteps, (b,), generator=generator).to(x0.device)
    x_t = scheduler.add_noise(original_samples=x0, noise=noise, timesteps=t)
    target = noise if cfg.prediction_type == "epsilon" else scheduler.get_velocity(x0, noise, t)
    return x_t, t, target


def denoising_update(s: Step, cfg: DDPMConfig, hp: DDPMHParams, x0: torch.Tensor) -> torch.Tensor:
    """One denoising update of ``s``'s ``unet`` on clean samples ``x0`` (volumes, or latents for latent
    diffusion); returns the loss. Random draws, in order: ε, t, then the class dropout."""
    x_t, t, target = noisy_batch(cfg, x0, s.rng)
    labels = None
    if cfg.num_classes > 0:
        labels = s.batch["label"].long()
        drop = (torch.rand(labels.shape[0], generator=s.rng) < hp.class_dropout).to(labels.device)
        labels = torch.where(drop, torch.full_like(labels, cfg.num_classes), labels)
    with s.amp():
        pred = s.ddp["unet"](x_t, t, class_labels=labels)
    loss = F.mse_loss(pred.float(), target)
    s.update("unet", loss)
    return loss


def train_step(s: Step) -> dict[str, torch.Tensor]:
    """One denoising update on the batch's volumes (module docstring)."""
    return {"mse": denoising_update(s, s.model, s.hp, s.batch["image"].float())}


@torch.no_grad()
def preview(nets: dict[str, nn.Module], cfg: DDPMConfig, hp: DDPMHParams, n: int, seed: int, device: torch.device,
            amp) -> tuple[list[Any], list[str]]:
    """``n`` volumes of the (EMA) UNet with ``preview_steps`` DDIM steps, for the training mosaics."""
    unet = nets["unet"]
    steps = hp.preview_steps
    labels = [i % cfg.num_classes for i in range(n)] if cfg.num_classes > 0 else None
    was_training = unet.training
    unet.eval()
    with amp():
        vols = sample_volumes(unet, cfg, list(range(n)), seed, labels=labels, sampler="ddim", steps=steps, device=device)
    unet.train(was_training)
    titles = [f"{i}" + (f" class {labels[i]}" if labels is not None else "") for i in range(n)]
    return [v for v in vols], titles
