"""``registration`` training: one VoxelMorph update per iteration on (moving, fixed) pairs of the batch.

One iteration (:func:`train_step`) on the batch's images ``x`` (``[b, 1, S, S, S]``, and with the model's
``label`` volume their label maps):

    pairs:  fixed = x;  moving = x[(i + k_i) mod b] with k_i ∈ 1..b−1 drawn from the step's generator
            (hp ``pairs=random``; one volume per process, or ``pairs=synthetic``: moving = x warped by a
            random smooth displacement), or moving = the atlas (hp ``atlas``: atlas-to-subject)
    warped, u = VoxelMorph(moving, fixed)           u: displacement in voxels (integrated velocity)
    L = L_sim(warped, fixed) + λ · L_reg(u)
        [+ seg_weight · DiceLoss(warp(onehot(moving labels), u), fixed labels)]     weak supervision
        [+ adversarial_weight · ℓ(D(warped, fixed), real)]                            adversarial variant

L_sim is MONAI's ``LocalNormalizedCrossCorrelationLoss`` (−LNCC, −1 at perfect local correlation) or the
mean squared error; L_reg MONAI's ``BendingEnergyLoss`` or ``DiffusionLoss`` of ``u``.

The adversarial variant (after GAN-based elastic registration, e.g. Fan et al., Medical Image Analysis
2019) adds a discriminator D (MONAI ``PatchDiscriminator``) that learns what a well-registered pair looks
like: it is shown (r, fixed) with r = real_mix·fixed + (1 − real_mix)·moving as aligned and
(warped, fixed) as the network's, with the least-squares loss ℓ (``PatchAdversarialLoss``), and updated
first; the network is then updated with D frozen. A similarity loss stays in place: the adversarial term
only adds what D has learnt about alignment.

Logged: ``sim``, ``reg``; ``dice`` (the Dice loss, whatever its weight) with a label volume; ``D`` and
``adv`` in the adversarial variant; ``fold``, the share of voxels where ``det(I + ∇u) ≤ 0``.
Every random draw comes from ``step.rng``, so a resumed run continues exactly.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medgen.core.errors import InputError, UsageError
from medgen.families.registration.config import RegistrationConfig, RegistrationHParams
from medgen.families.registration.network import (build_discriminator, build_network, folding_share,
                                                  random_displacement)
from medgen.training.family import Step


def load_atlas(ref: str, size: int) -> torch.Tensor:
    """The atlas volume ``ref`` (a ``.npy``/NIfTI file in the data's [-1, 1] units, or ``DATA:ID``) as
    ``[1, 1, S, S, S]`` float32; InputError (one line) unless it is a finite ``size``³ volume."""
    from medgen.inference.register import read_input

    vol = read_input(ref)
    a = np.asarray(vol.array, dtype=np.float32)
    if a.shape != (size,) * 3:
        raise InputError(f"atlas {ref}: shape {a.shape}; the model registers {size}³ volumes")
    if not np.isfinite(a).all():
        raise InputError(f"atlas {ref}: holds NaN or infinite values")
    if not vol.from_dataset and (a.min() < -1.001 or a.max() > 1.001):
        raise InputError(f"atlas {ref}: values {a.min():g}..{a.max():g}; need the data's [-1, 1] units "
                         "(or name a data set subject, DATA:ID)")
    return torch.from_numpy(a)[None, None]


def uses_dice(cfg: RegistrationConfig, hp: RegistrationHParams) -> bool:
    return bool(cfg.label) and not hp.atlas


def build(cfg: RegistrationConfig, hp: RegistrationHParams, device: torch.device) -> dict[str, nn.Module]:
    if hp.seg_weight > 0 and not cfg.label:
        raise UsageError("seg_weight > 0 needs a label volume: pass --target NAME (e.g. tissue)")
    if hp.seg_weight > 0 and hp.atlas:
        raise UsageError("seg_weight > 0 with an atlas: the atlas has no label map; train on random pairs")
    net = build_network(cfg, with_atlas=bool(hp.atlas))
    if hp.atlas:
        with torch.no_grad():
            net.atlas.copy_(load_atlas(hp.atlas, cfg.size))
    nets: dict[str, nn.Module] = {"net": net.to(device)}
    if hp.adversarial_weight > 0:
        nets["D"] = build_discriminator(cfg).to(device)
    return nets


def optimizers(nets: dict[str, nn.Module], hp: RegistrationHParams, device: torch.device) -> dict[str, torch.optim.Optimizer]:
    opt = {"net": torch.optim.Adam(nets["net"].parameters(), lr=hp.lr)}
    if "D" in nets:
        opt["D"] = torch.optim.Adam(nets["D"].parameters(), lr=hp.lr_d, betas=(0.5, 0.999))
    return opt


def loss_names(cfg: RegistrationConfig, hp: RegistrationHParams) -> list[str]:
    return (["sim", "reg"] + (["dice"] if uses_dice(cfg, hp) else [])
            + (["D", "adv"] if hp.adversarial_weight > 0 else []) + ["fold"])


def similarity_loss(warped: torch.Tensor, fixed: torch.Tensor, hp: RegistrationHParams) -> torch.Tensor:
    if hp.similarity == "mse":
        return F.mse_loss(warped, fixed)
    from monai.losses import LocalNormalizedCrossCorrelationLoss

    return LocalNormalizedCrossCorrelationLoss(spatial_dims=3, kernel_size=hp.lncc_window)(warped, fixed)


def regularization_loss(ddf: torch.Tensor, hp: RegistrationHParams) -> torch.Tensor:
    from monai.losses import BendingEnergyLoss, DiffusionLoss

    with warnings.catch_warnings():  # MONAI's finite differences index with lists (a PyTorch deprecation notice)
        warnings.filterwarnings("ignore", message="Using a non-tuple sequence", category=UserWarning)
        return (BendingEnergyLoss() if hp.regularizer == "bending" else DiffusionLoss())(ddf)


def check_labels(y: torch.Tensor, cfg: RegistrationConfig) -> None:
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= cfg.num_classes:
        raise UsageError(f"label volume {cfg.label!r} holds classes {lo}..{hi}; this model has num_classes "
                         f"{cfg.num_classes}: pass --num-classes {max(hi + 1, 2)}")


def label_dice_loss(warp: nn.Module, moving_labels: torch.Tensor, fixed_labels: torch.Tensor, ddf: torch.Tensor,
                    num_classes: int) -> torch.Tensor:
    """MONAI ``DiceLoss`` (foreground classes) of the moving label map, one-hot and warped trilinearly by
    ``ddf`` (so the loss reaches the displacement), against the fixed label map."""
    from monai.losses import DiceLoss

    onehot = F.one_hot(moving_labels[:, 0].long(), num_classes).permute(0, 4, 1, 2, 3).float()
    return DiceLoss(include_background=False, to_onehot_y=True)(warp(onehot, ddf), fixed_labels.long())


def make_pairs(s: Step, images: torch.Tensor, labels: torch.Tensor | None):
    """(moving, fixed, moving labels, fixed labels) of the batch (module docstring)."""
    hp: RegistrationHParams = s.hp
    b = images.shape[0]
    atlas = s.nets["net"].atlas
    if atlas is not None:
        return atlas.expand(b, -1, -1, -1, -1).to(images.dtype), images, None, None
    if hp.pairs == "random" and b >= 2:
        idx = (torch.arange(b) + torch.randint(1, b, (b,), generator=s.rng)) % b
        idx = idx.to(images.device)
        return images[idx], images, (labels[idx] if labels is not None else None), labels
    u = random_displacement(b, tuple(images.shape[2:]), hp.synthetic_shift, s.rng, images.device)
    warp = s.nets["net"].voxelmorph.warp
    with torch.no_grad():
        moving = warp(images, u)
        moving_labels = None
        if labels is not None:
            from medgen.inference.register import warp_layer

            moving_labels = warp_layer("nearest", "border")(labels.float(), u).round().long()
    return moving, images, moving_labels, labels


def train_step(s: Step) -> dict[str, torch.Tensor]:
    """One update of the network (and of D in the adversarial variant); module docstring."""
    cfg: RegistrationConfig = s.model
    hp: RegistrationHParams = s.hp
    images = s.batch["image"].float()
    labels = s.batch[cfg.label].long() if uses_dice(cfg, hp) else None
    if labels is not None:
        check_labels(labels, cfg)
    moving, fixed, moving_labels, fixed_labels = make_pairs(s, images, labels)

    with s.amp():
        warped, ddf = s.ddp["net"](moving, fixed)
    warped, ddf = warped.float(), ddf.float()
    sim = similarity_loss(warped, fixed, hp)
    reg = regularization_loss(ddf, hp)
    losses = {"sim": sim, "reg": reg}
    total = sim + hp.reg_weight * reg
    if labels is not None:
        dice = label_dice_loss(s.nets["net"].voxelmorph.warp, moving_labels, fixed_labels, ddf, cfg.num_classes)
        losses["dice"] = dice
        if hp.seg_weight > 0:
            total = total + hp.seg_weight * dice

    D = s.nets.get("D")
    if D is not None:
        from monai.losses import PatchAdversarialLoss

        adv = PatchAdversarialLoss(criterion="least_squares", no_activation_leastsq=True)
        b = fixed.shape[0]
        aligned = hp.real_mix * fixed + (1.0 - hp.real_mix) * moving
        with s.amp():
            logits = s.ddp["D"](torch.cat([torch.cat([aligned, fixed], 1), torch.cat([warped.detach(), fixed], 1)]))[-1]
        loss_D = 0.5 * (adv(logits[:b].float(), target_is_real=True, for_discriminator=True)
                        + adv(logits[b:].float(), target_is_real=False, for_discriminator=True))
        s.update("D", loss_D)
        D.requires_grad_(False)
        with s.amp():
            logits_g = D(torch.cat([warped, fixed], 1))[-1]
        loss_adv = adv(logits_g.float(), target_is_real=True, for_discriminator=False)
        losses.update(D=loss_D, adv=loss_adv)
        total = total + hp.adversarial_weight * loss_adv

    s.update("net", total)
    if D is not None:
        D.requires_grad_(True)
    with torch.no_grad():
        losses["fold"] = folding_share(ddf.detach())
    return losses
