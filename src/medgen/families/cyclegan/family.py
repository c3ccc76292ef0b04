"""CycleGAN (Zhu, Park, Isola and Efros, "Unpaired Image-to-Image Translation using Cycle-Consistent
Adversarial Networks", ICCV 2017) in 3D, as a registered family: the record the registry lists under
``"cyclegan"``.

Two generators, G_AB and G_BA, are the ``unet`` family's network (MONAI ``UNet`` + a 1×1×1 head); by
default not residual, since the two domains need not share an intensity scale (CT and MRI, T1 and T2), with
``residual`` for domains that do (two CT scanners, a harmonisation). The paper's generator is a ResNet of 6
or 9 residual blocks ending in tanh; here it is the UNet every image-to-image family of medgen uses, with a
linear output that inference clips to [-1, 1]. Two discriminators, D_A and D_B, are MONAI
``PatchDiscriminator`` s (pix2pix's, on one volume). Losses as the paper: least squares adversarial
(MONAI ``PatchAdversarialLoss``), cycle L1 (λ_cycle = 10), identity L1 (λ_id = 0.5·λ_cycle); Adam 2e-4,
(0.5, 0.999), optionally decaying linearly to 0 as in the paper (``decay_start``, ``decay_iters``); an image
pool of 50 generated volumes per domain, checkpointed so that a resumed run continues exactly
(:mod:`medgen.families.cyclegan.train`). No EMA of the generators (the paper has none).

Data: one unpaired data set whose subjects hold a domain-A volume (``domain_a``, default ``image``) and a
domain-B volume of another subject (``domain_b``, default ``b``): ``medgen unpair A_DATA B_DATA OUT``
(:mod:`medgen.data.unpaired_set`). The loaded model (:class:`~medgen.families.cyclegan.model.CycleGANModel`)
translates both ways: ``model.translate(x, direction="BtoA")``, ``medgen translate RUN IN --direction BtoA``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from medgen.families.cyclegan import train
from medgen.families.cyclegan.config import DEFAULT_PRESET, PRESETS, CycleGANConfig, CycleGANHParams, model_config
from medgen.families.cyclegan.model import CycleGANModel
from medgen.families.unet.model import seeded_network, trained_network
from medgen.families.unet.network import build_unet
from medgen.training.family import Family


def describe(cfg: CycleGANConfig) -> dict[str, Any]:
    totals = {"G_AB": sum(p.numel() for p in build_unet(cfg.generator("AtoB")).parameters()),
              "G_BA": sum(p.numel() for p in build_unet(cfg.generator("BtoA")).parameters()),
              "D_A": sum(p.numel() for p in train.build_discriminator(cfg).parameters())}
    totals["D_B"] = totals["D_A"]
    return {"config": cfg.to_dict(), "totals": totals}


def load_model(run_cfg: Any, weights: dict[str, dict[str, torch.Tensor]], checkpoint: Path, device: torch.device,
               use_ema: bool = True) -> CycleGANModel:
    """Both generators of a ``cyclegan`` run (no EMA copies: ``use_ema`` changes nothing)."""
    cfg = CycleGANConfig.from_dict(run_cfg.model)
    hp = CycleGANHParams.from_dict(dict(run_cfg.hparams or {}))
    nets = {name: trained_network(build_unet(cfg.generator(d)), weights, name, use_ema, checkpoint, device,
                                  what=f"generator {name}")
            for name, d in (("G_AB", "AtoB"), ("G_BA", "BtoA"))}
    return CycleGANModel(cfg, nets["G_AB"], nets["G_BA"], run_cfg, device, checkpoint, window=hp.patch)


def _seeded(cfg: CycleGANConfig, seed: int, device: torch.device) -> tuple[nn.Module, nn.Module]:
    both = seeded_network(lambda: nn.ModuleList([build_unet(cfg.generator("AtoB")), build_unet(cfg.generator("BtoA"))]),
                          seed, device)
    return both[0], both[1]


def build_model(preset: str = "tiny", size: int = 32, seed: int = 0, device: torch.device = torch.device("cpu"),
                encoder: bool = False, **overrides: Any) -> CycleGANModel:
    cfg = model_config(preset, size, **overrides)
    return CycleGANModel(cfg, *_seeded(cfg, seed, device), device=device)


def build_untrained(run_cfg: Any, seed: int = 0, device: torch.device = torch.device("cpu")) -> CycleGANModel:
    cfg = CycleGANConfig.from_dict(run_cfg.model)
    hp = CycleGANHParams.from_dict(dict(run_cfg.hparams or {}))
    return CycleGANModel(cfg, *_seeded(cfg, seed, device), run_cfg, device, None, window=hp.patch)


FAMILY = Family(
    name="cyclegan",
    summary="CycleGAN in 3D (Zhu et al. 2017): unpaired translation A ↔ B with two unet generators, two MONAI "
            "PatchDiscriminators, LSGAN + cycle + identity L1; data from `medgen unpair`",
    presets=PRESETS,
    default_preset=DEFAULT_PRESET,
    model_config=model_config,
    model_from_dict=CycleGANConfig.from_dict,
    hparams_from_dict=CycleGANHParams.from_dict,
    build=train.build,
    optimizers=train.optimizers,
    train_step=train.train_step,
    loss_names=train.loss_names,
    ddp_modules=train.ddp_modules,
    load_model=load_model,
    build_model=build_model,
    build_untrained=build_untrained,
    data_keys=lambda cfg: (cfg.domain_a, cfg.domain_b),
    describe=describe,
)
