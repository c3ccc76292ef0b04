"""``unet`` training: one Adam step on the L1 (or L2) distance between the network's output and the target.

One iteration (:func:`train_step`) on a batch of paired items: the ``inputs`` volumes stacked as channels,
optionally cut to random cubic patches of edge ``patch`` (the same window in inputs and target; starts
drawn from the step's generator, so resume is exact), then ``loss(forward(x), target)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medgen.core.errors import UsageError
from medgen.families.unet.config import UNetConfig, UNetHParams
from medgen.families.unet.network import build_unet, forward, stack_inputs
from medgen.training.family import Step


def build(cfg: UNetConfig, hp: UNetHParams, device: torch.device) -> dict[str, nn.Module]:
    if hp.patch and (hp.patch % cfg.divisor or hp.patch > cfg.size):
        raise UsageError(f"patch {hp.patch}: a multiple of {cfg.divisor} no larger than the volume ({cfg.size})")
    return {"unet": build_unet(cfg).to(device)}


def optimizers(nets: dict[str, nn.Module], hp: UNetHParams, device: torch.device) -> dict[str, torch.optim.Optimizer]:
    return {"unet": torch.optim.Adam(nets["unet"].parameters(), lr=hp.lr)}


def loss_names(cfg: UNetConfig, hp: UNetHParams) -> list[str]:
    return [hp.loss.upper()]


def random_patches(volumes: list[torch.Tensor], patch: int, generator: torch.Generator) -> list[torch.Tensor]:
    """The same random cubic window of edge ``patch`` cut from each item of every tensor ``[b, c, X, Y, Z]``."""
    b, _, *shape = volumes[0].shape
    starts = [torch.randint(0, n - patch + 1, (b,), generator=generator).tolist() for n in shape]
    out = []
    for v in volumes:
        out.append(torch.stack([v[i, :, starts[0][i]:starts[0][i] + patch, starts[1][i]:starts[1][i] + patch,
                                  starts[2][i]:starts[2][i] + patch] for i in range(b)]))
    return out


def pixel_loss(output: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    return F.l1_loss(output, target) if kind == "l1" else F.mse_loss(output, target)


def train_step(s: Step) -> dict[str, torch.Tensor]:
    """One Adam step on the batch (module docstring)."""
    cfg: UNetConfig = s.model
    hp: UNetHParams = s.hp
    x, y = stack_inputs(s.batch, cfg), s.batch[cfg.target].float()
    if hp.patch and hp.patch < x.shape[-1]:
        x, y = random_patches([x, y], hp.patch, s.rng)
    with s.amp():
        out = forward(s.ddp["unet"], x, cfg)
    loss = pixel_loss(out.float(), y, hp.loss)
    s.update("unet", loss)
    return {hp.loss.upper(): loss}
