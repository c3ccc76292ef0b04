"""``pix2pix`` training: the conditional GAN step of Isola et al. (2017) in 3D.

One iteration (:func:`train_step`) on a batch of pairs (condition x = the input volumes as channels,
target y), optionally cut to the same random patch:

    ŷ = G(x)                                          (the ``unet`` generator, residual by task)
    D step:  L_D = ½ [ℓ(D(x, y), real) + ℓ(D(x, ŷ), fake)]
    G step:  L_G = ℓ(D(x, ŷ), real) + λ · |ŷ − y|₁      (D frozen; λ = ``l1_weight``)
                   [+ w_p · L_perc(ŷ, y) + w_s · L_style(ŷ, y)]   (MedGAN's terms, when their weights are > 0)

D is MONAI's ``PatchDiscriminator`` on the condition and the (real or generated) target concatenated:
it judges every patch of its receptive field, which pushes G towards locally realistic texture while the
L1 term keeps the low frequencies right. ℓ is MONAI's ``PatchAdversarialLoss`` (least squares by
default, as in CycleGAN; ``bce`` is the paper's). Instance normalisation in D, so the real and generated
halves of its batch never share statistics.

The optional perceptual and style terms (``perceptual_weight``, ``style_weight``; MedGAN, Armanious et al.
2020) compare feature maps of a frozen MedicalNet ResNet-50 (:mod:`medgen.families.pix2pix.perceptual`). That
network is not trained: it is not in :func:`build`'s dict (which the loop checkpoints and wraps in DDP), but
built once per process when :func:`build` checks the weight file, and fetched from that cache by the step.
With both weights 0 (the default) nothing of it exists: same networks, checkpoints and logged losses as before.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medgen.core.errors import UsageError
from medgen.families.pix2pix import perceptual
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
    nets = {"G": build_unet(g).to(device), "D": build_discriminator(cfg).to(device)}
    if hp.uses_features:  # read and check the weight file now; the step reuses the cached network
        perceptual.feature_network(hp.feature_weights, hp.layers, device)
    return nets


def optimizers(nets: dict[str, nn.Module], hp: Pix2PixHParams, device: torch.device) -> dict[str, torch.optim.Optimizer]:
    return {"G": torch.optim.Adam(nets["G"].parameters(), lr=hp.lr_g, betas=hp.betas),
            "D": torch.optim.Adam(nets["D"].parameters(), lr=hp.lr_d, betas=hp.betas)}


def loss_names(cfg: Pix2PixConfig, hp: Pix2PixHParams) -> list[str]:
    """The logged losses; ``perceptual`` and ``style`` only when their weights are > 0."""
    return ["D", "G_adv", "L1"] + [name for name, w in (("perceptual", hp.perceptual_weight),
                                                         ("style", hp.style_weight)) if w > 0]


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
    losses = {"D": loss_D, "G_adv": loss_adv, "L1": loss_l1}
    loss_G = loss_adv + hp.l1_weight * loss_l1
    if hp.uses_features:
        net = perceptual.feature_network(hp.feature_weights, hp.layers, s.device)
        with s.amp():
            feats_fake, feats_real = perceptual.features(net, fake, y)
        for name, weight, term in (("perceptual", hp.perceptual_weight, perceptual.perceptual_loss),
                                   ("style", hp.style_weight, perceptual.style_loss)):
            if weight > 0:
                losses[name] = term(feats_fake, feats_real)
                loss_G = loss_G + weight * losses[name]
    s.update("G", loss_G)
    D.requires_grad_(True)
    return losses
