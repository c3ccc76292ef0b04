"""The KL autoencoder of latent diffusion as a registered family: the record listed under ``"ldm-autoencoder"``."""

from __future__ import annotations

from typing import Any

from medgen.families.ldm_autoencoder import bench, model, train
from medgen.families.ldm_autoencoder.config import DEFAULT_PRESET, PRESETS, AutoencoderConfig, model_config
from medgen.training.family import Family


def describe(cfg: AutoencoderConfig) -> dict[str, Any]:
    ae, d = train.build_autoencoder(cfg), train.build_discriminator(cfg)
    return {"config": cfg.to_dict(), "latent_shape": list(cfg.latent_shape),
            "totals": {"autoencoder": sum(p.numel() for p in ae.parameters()),
                       "discriminator": sum(p.numel() for p in d.parameters())}}


FAMILY = Family(
    name="ldm-autoencoder",
    summary="stage 1 of latent diffusion (Rombach et al. 2022): MONAI 3D AutoencoderKL compressing 4× per axis, "
            "L1 + KL + patch-adversarial losses",
    presets=PRESETS,
    default_preset=DEFAULT_PRESET,
    model_config=model_config,
    model_from_dict=AutoencoderConfig.from_dict,
    hparams_from_dict=train.AutoencoderHParams.from_dict,
    build=train.build,
    optimizers=train.optimizers,
    train_step=train.train_step,
    loss_names=train.loss_names,
    load_model=model.load_model,
    build_model=model.build,
    build_untrained=model.build_untrained,
    describe=describe,
    bench=bench,
)
