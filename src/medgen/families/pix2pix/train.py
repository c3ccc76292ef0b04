"""``pix2pix`` training: the conditional GAN step of Isola et al. (2017) in 3D.

One iteration (:func:`train_step`) on a batch of pairs (condition x = the input volumes as channels,
target y), optionally cut to the same random patch:

    ŷ = G(x)                                          (the ``unet`` generator, residual by task)
    D step:  L_D = ½ [ℓ(D(x, y), real) + ℓ(D(x, ŷ), fake)]
    G step:  L_G = ℓ(D(x, ŷ), real) + λ · |ŷ − y|₁      (D frozen; λ = ``l1_weight``)

D is MONAI's ``PatchDiscriminator`` on the condition and the (real or generated) target concatenated:
it judges every patch of its receptive field, which pushes G towards locally realistic texture while the
L1 term keeps the low frequencies right. ℓ is MONAI's ``PatchAdversarialLoss`` (least squares by
default, as in CycleGAN; ``bce`` is the paper's). Instance normalisation in D, so the real and generated
halves of its batch never share statistics.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medgen.core.errors import UsageError
from medgen.families.pix2pix.config import Pix2PixConfig, Pix2PixHParams
from medgen.families.unet.network import build_unet, forward, stack_inputs
from medgen.families.unet.train import random_patches
from medgen.training.family import Step


def build_discriminator(cfg: Pix2PixConfig) -> nn.Module:
    from monai.networks.nets import PatchDiscriminator

    return PatchDiscriminator(spatial_dims=3, channels=cfg.d_channels, in_channels=len(cfg.generator.inputs) + 1,
                              out_channels=1, num_layers_d=cfg.d_layers, norm="INSTANCE")


def build(cfg: Pix2PixConfig, hp: Pix2PixHParams, device: torch.device) -> dict[str, nn.Module]:
    g = cfg.generator
    if hp.patch and (hp.patch % g.divisor or hp.patch > g.size):
        raise UsageError(f"patch {hp.patch}: a multiple of {g.divisor} no larger than the volume ({g.size})")
    return {"G": build_unet(g).to(device), "D": build_discriminator(cfg).to(device)}


def optimizers(nets: dict[str, nn.Module], hp: Pix2PixHParams, device: torch.device) -> dict[str, torch.optim.Optimizer]:
    return {"G": torch.optim.Adam(nets["G"].parameters(), lr=hp.lr_g, betas=hp.betas),
            "D": torch.optim.Adam(nets["D"].parameters(), lr=hp.lr_d, betas=hp.betas)}


def loss_names(cfg: Pix2PixConfig, hp: Pix2PixHParams) -> list[str]:
    return ["D", "G_adv", "L1"]


def train_step(s: Step) -> dict[str, torch.Tensor]:
    """One D update and one G update (module docstring)."""
    from monai.losses import PatchAdversarialLoss

    cfg: Pix2PixConfig = s.model
    hp: Pix2PixHParams = s.hp
    g = cfg.generator
    # least squares on the raw logits, as LSGAN defines it (MONAI would squash them with a sigmoid first)
    adv = PatchAdversarialLoss(criterion=hp.criterion, no_activation_leastsq=True)
    x, y = stack_inputs(s.batch, g), s.batch[g.target].float()
    if hp.patch and hp.patch < x.shape[-1]:
        x, y = random_patches([x, y], hp.patch, s.rng)
    D = s.nets["D"]

    with s.amp():
        fake = forward(s.ddp["G"], x, g)
        logits = s.ddp["D"](torch.cat([torch.cat([x, y], 1), torch.cat([x, fake.detach()], 1)]))[-1]
    b = x.shape[0]
    loss_D = 0.5 * (adv(logits[:b].float(), target_is_real=True, for_discriminator=True)
                    + adv(logits[b:].float(), target_is_real=False, for_discriminator=True))
    s.update("D", loss_D)

    D.requires_grad_(False)
    with s.amp():
        logits_g = D(torch.cat([x, fake], 1))[-1]
    loss_adv = adv(logits_g.float(), target_is_real=True, for_discriminator=False)
    loss_l1 = F.l1_loss(fake.float(), y)
    s.update("G", loss_adv + hp.l1_weight * loss_l1)
    D.requires_grad_(True)
    return {"D": loss_D, "G_adv": loss_adv, "L1": loss_l1}
