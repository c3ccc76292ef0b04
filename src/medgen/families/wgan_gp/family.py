"""WGAN-GP as a registered family: the record the registry lists under ``"wgan-gp"``."""

from __future__ import annotations

from typing import Any

import torch

from medgen.families import dcgan3d
from medgen.families.wgan_gp import bench, model, train
from medgen.families.wgan_gp.config import DEFAULT_PRESET, PRESETS, WGANGPConfig, model_config
from medgen.training.family import Family


def describe(cfg: WGANGPConfig) -> dict[str, Any]:
    with torch.device("meta"):  # shapes only: no memory for the weights
        G, D = dcgan3d.Generator(cfg), dcgan3d.Critic(cfg)
    return {"config": cfg.to_dict(), "widths": {"G": cfg.generator_widths()[::-1], "D": cfg.critic_widths()},
            "totals": {"G": dcgan3d.count_parameters(G), "D": dcgan3d.count_parameters(D)}}


FAMILY = Family(
    name="wgan-gp",
    summary="WGAN-GP (Gulrajani et al. 2017) with the 3D DCGAN-style networks of Kwon et al. 2019: "
            "Wasserstein loss, gradient penalty, n_critic critic updates per generator update",
    presets=PRESETS,
    default_preset=DEFAULT_PRESET,
    model_config=model_config,
    model_from_dict=WGANGPConfig.from_dict,
    hparams_from_dict=train.WGANGPHParams.from_dict,
    build=train.build,
    optimizers=train.optimizers,
    train_step=train.train_step,
    loss_names=train.loss_names,
    ema="G",
    preview=train.preview,
    load_model=model.load_model,
    build_model=model.build,
    build_untrained=model.build_untrained,
    describe=describe,
    bench=bench,
)
