"""DDPM as a registered family: the record the registry lists under ``"ddpm"``."""

from __future__ import annotations

from typing import Any

from medgen.families.ddpm import bench, model, train
from medgen.families.ddpm.config import DEFAULT_PRESET, PRESETS, DDPMConfig, model_config
from medgen.training.family import Family


def describe(cfg: DDPMConfig) -> dict[str, Any]:
    unet = train.build_unet(cfg)
    return {"config": cfg.to_dict(), "totals": {"unet": sum(p.numel() for p in unet.parameters())}}


FAMILY = Family(
    name="ddpm",
    summary="denoising diffusion in image space (Ho et al. 2020): MONAI 3D DiffusionModelUNet, DDPM/DDIM "
            "sampling, classifier-free guidance",
    presets=PRESETS,
    default_preset=DEFAULT_PRESET,
    model_config=model_config,
    model_from_dict=DDPMConfig.from_dict,
    hparams_from_dict=train.DDPMHParams.from_dict,
    build=train.build,
    optimizers=train.optimizers,
    train_step=train.train_step,
    loss_names=train.loss_names,
    ema="unet",
    preview=train.preview,
    load_model=model.load_model,
    build_model=model.build,
    build_untrained=model.build_untrained,
    uses_labels=lambda cfg: cfg.num_classes > 0,
    describe=describe,
    bench=bench,
)
