"""PGGAN (Karras et al., ICLR 2018) in 3D as a registered family: the record the registry lists under ``"pggan"``."""

from __future__ import annotations

from typing import Any

import torch

from medgen.families.pggan import bench, model, train
from medgen.families.pggan.config import DEFAULT_PRESET, PRESETS, PGGANConfig, model_config
from medgen.families.pggan.networks import Discriminator, Generator
from medgen.training.family import Family


def describe(cfg: PGGANConfig) -> dict[str, Any]:
    """Configuration, parameters of G and D, and the resolution and width of every level."""
    with torch.device("meta"):
        nets = {"G": Generator(cfg), "D": Discriminator(cfg)}
    return {
        "config": cfg.to_dict(),
        "totals": {name: sum(p.numel() for p in net.parameters()) for name, net in nets.items()},
        "levels": [{"level": k, "resolution": cfg.resolution(k), "channels": cfg.channels(k)}
                   for k in range(cfg.levels + 1)],
    }


FAMILY = Family(
    name="pggan",
    summary="progressive growing of GANs in 3D (Karras et al. 2018): 4³ to S³ with linear fade-ins, equalised "
            "learning rate, pixel norm, minibatch std, WGAN-GP with ε-drift",
    presets=PRESETS,
    default_preset=DEFAULT_PRESET,
    model_config=model_config,
    model_from_dict=PGGANConfig.from_dict,
    hparams_from_dict=train.PGGANHParams.from_dict,
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
