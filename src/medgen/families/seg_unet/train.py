"""``seg-unet`` training: one Adam step on MONAI's ``DiceCELoss`` (soft Dice + cross-entropy) against the label map.

One iteration (:func:`train_step`): the ``inputs`` volumes stacked as channels and the ``label`` volume,
optionally cut to the same random cubic patch of edge ``patch`` (starts drawn from the step's generator, so
resume is exact), then ``DiceCELoss(to_onehot_y=True, softmax=True)``. Logged: ``DiceCE`` (the loss) and
``Dice``, the batch's hard Dice (argmax against the labels) averaged over the foreground classes present in
either (1 when none is).
"""

from __future__ import annotations

import torch
from torch import nn

from medgen.core.errors import UsageError
from medgen.families.seg_unet.config import SegUNetConfig, SegUNetHParams
from medgen.families.seg_unet.network import build_network, stack_inputs
from medgen.families.unet.train import random_patches
from medgen.training.family import Step


def build(cfg: SegUNetConfig, hp: SegUNetHParams, device: torch.device) -> dict[str, nn.Module]:
    if hp.patch and (hp.patch % cfg.divisor or hp.patch > cfg.size):
        raise UsageError(f"patch {hp.patch}: a multiple of {cfg.divisor} no larger than the volume ({cfg.size})")
    return {"unet": build_network(cfg).to(device)}


def optimizers(nets: dict[str, nn.Module], hp: SegUNetHParams, device: torch.device) -> dict[str, torch.optim.Optimizer]:
    return {"unet": torch.optim.Adam(nets["unet"].parameters(), lr=hp.lr)}


def loss_names(cfg: SegUNetConfig, hp: SegUNetHParams) -> list[str]:
    return ["DiceCE", "Dice"]


def check_labels(y: torch.Tensor, cfg: SegUNetConfig) -> None:
    """UsageError (one line) when the label map holds a class outside 0..num_classes-1."""
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= cfg.num_classes:
        raise UsageError(f"label volume {cfg.label!r} holds classes {lo}..{hi}; this model has num_classes "
                         f"{cfg.num_classes} (0..{cfg.num_classes - 1}): pass --num-classes {max(hi + 1, 2)}")


def foreground_dice(pred: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Hard Dice of class maps ``pred`` and ``y`` (same shape) over the whole batch, per foreground class present
    in either, averaged (1 when no foreground class is present)."""
    scores = []
    for k in range(1, num_classes):
        p, t = pred == k, y == k
        total = p.sum() + t.sum()
        if total > 0:
            scores.append(2.0 * (p & t).sum() / total)
    return torch.stack(scores).mean() if scores else torch.ones((), device=pred.device)


def train_step(s: Step) -> dict[str, torch.Tensor]:
    """One Adam step on the batch (module docstring)."""
    from monai.losses import DiceCELoss

    cfg: SegUNetConfig = s.model
    hp: SegUNetHParams = s.hp
    x, y = stack_inputs(s.batch, cfg), s.batch[cfg.label].long()
    check_labels(y, cfg)
    if hp.patch and hp.patch < x.shape[-1]:
        x, y = random_patches([x, y], hp.patch, s.rng)
    with s.amp():
        out = s.ddp["unet"](x)
    loss = DiceCELoss(to_onehot_y=True, softmax=True)(out.float(), y)
    s.update("unet", loss)
    with torch.no_grad():
        dice = foreground_dice(out.detach().argmax(1, keepdim=True), y, cfg.num_classes)
    return {"DiceCE": loss, "Dice": dice}
