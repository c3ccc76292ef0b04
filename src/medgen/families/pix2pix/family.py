"""pix2pix as a registered family: the record the registry lists under ``"pix2pix"``.

The trained generator is loaded as the ``unet`` family's :class:`~medgen.families.unet.model.ImageToImageModel`,
so ``medgen translate`` and ``model.translate(...)`` work the same for both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from medgen.families.pix2pix import train
from medgen.families.pix2pix.config import DEFAULT_PRESET, PRESETS, Pix2PixConfig, Pix2PixHParams, model_config
from medgen.families.unet.model import ImageToImageModel, image_to_image_model, seeded_network, trained_network
from medgen.families.unet.network import build_unet
from medgen.training.family import Family


def describe(cfg: Pix2PixConfig) -> dict[str, Any]:
    totals = {"G": sum(p.numel() for p in build_unet(cfg.generator).parameters()),
              "D": sum(p.numel() for p in train.build_discriminator(cfg).parameters())}
    return {"config": cfg.to_dict(), "totals": totals}


def load_model(run_cfg: Any, weights: dict[str, dict[str, torch.Tensor]], checkpoint: Path, device: torch.device,
               use_ema: bool = True) -> ImageToImageModel:
    """The generator of a ``pix2pix`` run (its EMA copy unless ``use_ema`` is False)."""
    cfg = Pix2PixConfig.from_dict(run_cfg.model)
    hp = Pix2PixHParams.from_dict(dict(run_cfg.hparams or {}), check_files=False)  # no feature network needed
    net = trained_network(build_unet(cfg.generator), weights, "G", use_ema, checkpoint, device, what="generator")
    return image_to_image_model(cfg.generator, net, run_cfg, device, checkpoint, window=hp.patch)


def build_model(preset: str = "tiny", size: int = 32, seed: int = 0, device: torch.device = torch.device("cpu"),
                encoder: bool = False, **overrides: Any) -> ImageToImageModel:
    cfg = model_config(preset, size, **overrides)
    return image_to_image_model(cfg.generator, seeded_network(lambda: build_unet(cfg.generator), seed, device))


def build_untrained(run_cfg: Any, seed: int = 0, device: torch.device = torch.device("cpu")) -> ImageToImageModel:
    cfg = Pix2PixConfig.from_dict(run_cfg.model)
    return image_to_image_model(cfg.generator, seeded_network(lambda: build_unet(cfg.generator), seed, device), run_cfg,
                             device, None)


FAMILY = Family(
    name="pix2pix",
    summary="pix2pix in 3D (Isola et al. 2017): the unet generator + MONAI PatchDiscriminator on (condition, "
            "target) + λ·L1 (+ optional MedGAN perceptual/style terms on MedicalNet features); the same --task "
            "options as unet",
    presets=PRESETS,
    default_preset=DEFAULT_PRESET,
    model_config=model_config,
    model_from_dict=Pix2PixConfig.from_dict,
    hparams_from_dict=Pix2PixHParams.from_dict,
    build=train.build,
    optimizers=train.optimizers,
    train_step=train.train_step,
    loss_names=train.loss_names,
    ema="G",
    load_model=load_model,
    build_model=build_model,
    build_untrained=build_untrained,
    data_keys=lambda cfg: (cfg.generator.target, *cfg.generator.inputs),
    describe=describe,
)
