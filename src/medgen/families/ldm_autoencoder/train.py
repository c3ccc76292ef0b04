"""KL-autoencoder training: hyper-parameters, the networks, their optimisers and the step the shared loop runs.

One iteration (:func:`train_step`), as MONAI's 3D latent-diffusion tutorial trains stage 1,
on a batch of volumes x in [-1, 1]::

    x̂, μ, σ = AE(x)                                 (x̂ decoded from z = μ + σ·ε)
    AE loss  = |x̂ − x|₁ + kl_weight · KL(N(μ, σ²) ‖ N(0, 1)) + adv_weight · LSGAN(D(x̂), real)
    D  loss  = ½ [LSGAN(D(x), real) + LSGAN(D(x̂), fake)]

The adversarial terms start at iteration ``adv_start`` (before, the autoencoder learns to
reconstruct alone and D is not updated; their logged losses are 0). No perceptual loss:
the tutorials' LPIPS/MedicalNet networks need downloaded weights, which a medgen run may not
fetch.

ε of the reparameterisation is drawn by MONAI's ``AutoencoderKL`` from torch's global
generator, which the loop re-seeds from (seed, rank, iteration) every iteration, so a
resumed run is exact.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from medgen.core.errors import UsageError
from medgen.core.settings import from_dict, tuples_as_lists
from medgen.families.ldm_autoencoder.config import AutoencoderConfig
from medgen.training.family import Step


@dataclass
class AutoencoderHParams:
    """Adam learning rates ``lr`` (autoencoder) and ``lr_d`` (discriminator), ``betas``; loss weights
    ``kl_weight`` and ``adv_weight``; ``adv_start``: the first iteration with the adversarial terms."""

    lr: float = 1e-4
    lr_d: float = 1e-4
    betas: tuple[float, float] = (0.5, 0.9)
    kl_weight: float = 1e-6
    adv_weight: float = 0.01
    adv_start: int = 500

    def to_dict(self) -> dict[str, Any]:
        return tuples_as_lists(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AutoencoderHParams":
        hp = from_dict(cls, d, "autoencoder training setting")
        if not (hp.lr > 0 and hp.lr_d > 0) or hp.kl_weight < 0 or hp.adv_weight < 0 or hp.adv_start < 0:
            raise UsageError("lr and lr_d must be > 0; kl_weight, adv_weight and adv_start >= 0")
        if len(hp.betas) != 2 or not all(0 <= b < 1 for b in hp.betas):
            raise UsageError(f"betas {hp.betas}: need two values in [0, 1)")
        return hp


def build_autoencoder(cfg: AutoencoderConfig) -> nn.Module:
    """MONAI's 3D ``AutoencoderKL`` for ``cfg`` (no attention: see :mod:`~medgen.families.ldm_autoencoder.config`)."""
    from monai.networks.nets import AutoencoderKL

    return AutoencoderKL(
        spatial_dims=3,
        in_channels=1,
        out_channels=1,
        channels=tuple(cfg.channels),
        latent_channels=cfg.latent_channels,
        num_res_blocks=cfg.num_res_blocks,
        norm_num_groups=cfg.norm_groups,
        attention_levels=(False,) * len(cfg.channels),
        with_encoder_nonlocal_attn=False,
        with_decoder_nonlocal_attn=False,
    )


def build_discriminator(cfg: AutoencoderConfig) -> nn.Module:
    from monai.networks.nets import PatchDiscriminator

    # Instance norm: D sees real and reconstructed volumes in one batch, which batch norm would mix.
    return PatchDiscriminator(spatial_dims=3, num_layers_d=cfg.disc_layers, channels=cfg.disc_channels, in_channels=1,
                              out_channels=1, norm="INSTANCE")


def build(cfg: AutoencoderConfig, hp: AutoencoderHParams, device: torch.device) -> dict[str, nn.Module]:
    return {"autoencoder": build_autoencoder(cfg).to(device), "discriminator": build_discriminator(cfg).to(device)}


def optimizers(nets: dict[str, nn.Module], hp: AutoencoderHParams, device: torch.device) -> dict[str, torch.optim.Optimizer]:
    betas = tuple(float(b) for b in hp.betas)
    return {"autoencoder": torch.optim.Adam(nets["autoencoder"].parameters(), lr=hp.lr, betas=betas),
            "discriminator": torch.optim.Adam(nets["discriminator"].parameters(), lr=hp.lr_d, betas=betas)}


def loss_names(cfg: AutoencoderConfig, hp: AutoencoderHParams) -> list[str]:
    return ["l1", "kl", "adv", "d"]


def kl_loss(mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, σ²) ‖ N(0, 1)) summed over the latent, averaged over the batch (MONAI's tutorials)."""
    kl = 0.5 * (mu.pow(2) + sigma.pow(2) - torch.log(sigma.pow(2)) - 1)
    return kl.flatten(1).sum(1).mean()


def train_step(s: Step) -> dict[str, torch.Tensor]:
    """One autoencoder update and, from ``adv_start`` on, one discriminator update (module docstring)."""
    from monai.losses import PatchAdversarialLoss

    hp: AutoencoderHParams = s.hp
    D = s.nets["discriminator"]
    adv_loss = PatchAdversarialLoss(criterion="least_squares")
    x = s.batch["image"].float()
    adversarial = s.iteration >= hp.adv_start

    # ---- autoencoder step
    with s.amp():
        recon, mu, sigma = s.ddp["autoencoder"](x)
    l1 = (recon.float() - x).abs().mean()
    kl = kl_loss(mu.float(), sigma.float())
    loss = l1 + hp.kl_weight * kl
    zero = torch.zeros((), device=x.device)
    adv = zero
    if adversarial:
        D.requires_grad_(False)
        with s.amp():
            logits_fake = D(recon)[-1]
        adv = adv_loss(logits_fake.float(), target_is_real=True, for_discriminator=False)
        loss = loss + hp.adv_weight * adv
        D.requires_grad_(True)
    s.update("autoencoder", loss)

    # ---- discriminator step on real and reconstructed volumes
    d_loss = zero
    if adversarial:
        with s.amp():
            logits = s.ddp["discriminator"](torch.cat([x, recon.detach()]))[-1].float()
        b = x.shape[0]
        d_loss = 0.5 * (adv_loss(logits[:b], target_is_real=True, for_discriminator=True)
                        + adv_loss(logits[b:], target_is_real=False, for_discriminator=True))
        s.update("discriminator", d_loss)
    return {"l1": l1, "kl": kl, "adv": adv, "d": d_loss}
