"""Learned 3D registration as a registered family: the record the registry lists under ``"registration"``."""

from __future__ import annotations

from typing import Any

from medgen.families.registration import model, train
from medgen.families.registration.config import (DEFAULT_PRESET, PRESETS, RegistrationConfig, RegistrationHParams,
                                                 model_config, options_from_data)
from medgen.families.registration.network import build_discriminator, build_network
from medgen.training.family import Family


def describe(cfg: RegistrationConfig) -> dict[str, Any]:
    net, d = build_network(cfg), build_discriminator(cfg)
    return {"config": cfg.to_dict(),
            "totals": {"net": sum(p.numel() for p in net.parameters()),
                       "D (adversarial variant only)": sum(p.numel() for p in d.parameters())}}


def data_keys(cfg: RegistrationConfig) -> tuple[str, ...]:
    return ("image", cfg.label) if cfg.label else ("image",)


FAMILY = Family(
    name="registration",
    summary="learned deformable registration (MONAI VoxelMorph: LNCC/MSE + bending energy, diffeomorphic by "
            "scaling and squaring; optional Dice on a label volume --target NAME, atlas, adversarial variant) "
            "on random pairs of the data set; `medgen register` applies it",
    presets=PRESETS,
    default_preset=DEFAULT_PRESET,
    model_config=model_config,
    model_from_dict=RegistrationConfig.from_dict,
    hparams_from_dict=RegistrationHParams.from_dict,
    build=train.build,
    optimizers=train.optimizers,
    train_step=train.train_step,
    loss_names=train.loss_names,
    ema="net",
    load_model=model.load_model,
    build_model=model.build,
    build_untrained=model.build_untrained,
    data_keys=data_keys,
    describe=describe,
    options_from_data=options_from_data,
    classes_from_data=True,
)
