"""Latent diffusion as a registered family: the record the registry lists under ``"ldm"``."""

from __future__ import annotations

from typing import Any

from medgen.families.ddpm.train import DDPMHParams, build_unet
from medgen.families.ldm import bench, model, train
from medgen.families.ldm.config import DEFAULT_PRESET, PRESETS, LDMConfig, model_config
from medgen.training.family import Family


def describe(cfg: LDMConfig) -> dict[str, Any]:
    from medgen.families.ldm_autoencoder.train import build_autoencoder

    return {"config": cfg.to_dict(), "latent_shape": list(cfg.autoencoder_config().latent_shape),
            "totals": {"unet": sum(p.numel() for p in build_unet(cfg.diffusion()).parameters()),
                       "autoencoder": sum(p.numel() for p in build_autoencoder(cfg.autoencoder_config()).parameters())}}


FAMILY = Family(
    name="ldm",
    summary="latent diffusion (Rombach et al. 2022): the ddpm family's UNet on the latents of a trained "
            "ldm-autoencoder run (--autoencoder RUN); chunked decoding",
    presets=PRESETS,
    default_preset=DEFAULT_PRESET,
    model_config=model_config,
    model_from_dict=LDMConfig.from_dict,
    hparams_from_dict=DDPMHParams.from_dict,
    build=train.build,
    optimizers=train.optimizers,
    train_step=train.train_step,
    loss_names=train.loss_names,
    ddp_modules=train.ddp_modules,
    ema="unet",
    preview=train.preview,
    load_model=model.load_model,
    build_model=model.build,
    build_untrained=model.build_untrained,
    uses_labels=lambda cfg: cfg.num_classes > 0,
    describe=describe,
    bench=bench,
)

