"""``progression`` training: L1 to the true follow-up (+ bending energy, + an optional adversarial term).

One iteration (:func:`train_step`) on a batch of longitudinal pairs: the baseline volume ``x``, the follow-up
``y`` and the interval ``t`` (the manifest column ``interval_column``, which the family asks the loop for:
``Family.covariates``), optionally cut to the same random patch of ``x`` and ``y``:

    ŷ, u = G(x, t)                                   (u: the displacement, deformation output only)
    [D step: L_D = ½ [ℓ(D(x, y), real) + ℓ(D(x, ŷ), fake)]]       (adversarial_weight > 0)
    G step:  L_G = |ŷ − y|₁ [+ w_s · BendingEnergy(u)] [+ w_a · ℓ(D(x, ŷ), real)]

D is MONAI's ``PatchDiscriminator`` on (baseline, follow-up) pairs and ℓ MONAI's ``PatchAdversarialLoss``, as
in the ``pix2pix`` family: DEP-GAN (Rachmadi et al. 2020) trains its generator adversarially; here the term
is off by default (``adversarial_weight`` 0: no discriminator is built, L1 alone).
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from medgen.core.errors import InputError, UsageError
from medgen.families.progression.config import ProgressionConfig, ProgressionHParams
from medgen.families.progression.network import build_network
from medgen.families.unet.train import random_patches
from medgen.training.family import Step


def build_discriminator(cfg: ProgressionConfig) -> nn.Module:
    from monai.networks.nets import PatchDiscriminator

    return PatchDiscriminator(spatial_dims=3, channels=cfg.d_channels, in_channels=2, out_channels=1,
                              num_layers_d=cfg.d_layers, norm="INSTANCE")


def build(cfg: ProgressionConfig, hp: ProgressionHParams, device: torch.device) -> dict[str, nn.Module]:
    if hp.patch and (hp.patch % cfg.divisor or hp.patch > cfg.size):
        raise UsageError(f"patch {hp.patch}: a multiple of {cfg.divisor} no larger than the volume ({cfg.size})")
    edge = hp.patch or cfg.size
    if hp.adversarial_weight > 0 and edge < 2 ** (cfg.d_layers + 2):
        raise UsageError(f"adversarial_weight > 0: the discriminator's {cfg.d_layers} strided layers need "
                         f"training volumes (or patches) of at least {2 ** (cfg.d_layers + 2)}³ voxels, not {edge}³")
    nets = {"net": build_network(cfg).to(device)}
    if hp.adversarial_weight > 0:
        nets["D"] = build_discriminator(cfg).to(device)
    return nets


def optimizers(nets: dict[str, nn.Module], hp: ProgressionHParams, device: torch.device) -> dict[str, torch.optim.Optimizer]:
    return {name: torch.optim.Adam(net.parameters(), lr=hp.lr, betas=hp.betas) for name, net in nets.items()}


def loss_names(cfg: ProgressionConfig, hp: ProgressionHParams) -> list[str]:
    """``L1``, then ``bending`` (deformation with smoothness_weight > 0), then ``D`` and ``G_adv`` (adversarial)."""
    names = ["L1"]
    if cfg.output == "deformation" and hp.smoothness_weight > 0:
        names.append("bending")
    if hp.adversarial_weight > 0:
        names += ["D", "G_adv"]
    return names


def batch_intervals(batch: dict, cfg: ProgressionConfig) -> torch.Tensor:
    """The batch's intervals ``[b]`` (float32); InputError naming the subject for a missing (NaN) one."""
    t = batch["covariates"][:, 0].float()
    bad = ~torch.isfinite(t)
    if bool(bad.any()):
        ids = batch.get("id") or ["?"] * len(t)
        raise InputError(f"manifest.csv: subject {ids[int(bad.nonzero()[0, 0])]!r} has no {cfg.interval_column!r} "
                         "value (the interval between its scans)")
    return t


def train_step(s: Step) -> dict[str, torch.Tensor]:
    """One (D and) G update on the batch (module docstring)."""
    from monai.losses import BendingEnergyLoss, PatchAdversarialLoss

    cfg: ProgressionConfig = s.model
    hp: ProgressionHParams = s.hp
    x, y = s.batch[cfg.baseline].float(), s.batch[cfg.target].float()
    t = batch_intervals(s.batch, cfg)
    if hp.patch and hp.patch < x.shape[-1]:
        x, y = random_patches([x, y], hp.patch, s.rng)
    with s.amp():
        pred, field = s.ddp["net"](x, t)
    losses: dict[str, torch.Tensor] = {}
    loss_l1 = F.l1_loss(pred.float(), y)
    losses["L1"] = loss_l1
    loss_g = loss_l1
    if cfg.output == "deformation" and hp.smoothness_weight > 0:
        with warnings.catch_warnings():  # MONAI 1.6 indexes with lists, which torch warns about at every call
            warnings.filterwarnings("ignore", message="Using a non-tuple sequence", category=UserWarning)
            losses["bending"] = BendingEnergyLoss()(field.float())
        loss_g = loss_g + hp.smoothness_weight * losses["bending"]
    if hp.adversarial_weight > 0:
        adv = PatchAdversarialLoss(criterion=hp.criterion, no_activation_leastsq=True)
        D = s.nets["D"]
        with s.amp():
            logits = s.ddp["D"](torch.cat([torch.cat([x, y], 1), torch.cat([x, pred.detach()], 1)]))[-1]
        b = x.shape[0]
        loss_d = 0.5 * (adv(logits[:b].float(), target_is_real=True, for_discriminator=True)
                        + adv(logits[b:].float(), target_is_real=False, for_discriminator=True))
        s.update("D", loss_d)
        D.requires_grad_(False)
        with s.amp():
            logits_g = D(torch.cat([x, pred], 1))[-1]
        loss_adv = adv(logits_g.float(), target_is_real=True, for_discriminator=False)
        losses.update({"D": loss_d, "G_adv": loss_adv})
        loss_g = loss_g + hp.adversarial_weight * loss_adv
    s.update("net", loss_g)
    if hp.adversarial_weight > 0:
        s.nets["D"].requires_grad_(True)
    return losses
