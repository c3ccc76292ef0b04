"""α-GAN (Rosca et al. 2017; 3D form of Kwon et al., MICCAI 2019) as a registered family: the record the
registry lists under ``"alpha-gan"``."""

from __future__ import annotations

from typing import Any

import torch

from medgen.families.alpha_gan import bench, model, train
from medgen.families.alpha_gan.config import DEFAULT_PRESET, PRESETS, AlphaGANConfig, model_config
from medgen.training.family import Family


def describe(cfg: AlphaGANConfig) -> dict[str, Any]:
    """Configuration, parameters of G, D, E and C, and their widths."""
    with torch.device("meta"):
        nets = train.build(cfg, train.AlphaGANHParams(), torch.device("meta"))
    return {
        "config": cfg.to_dict(),
        "totals": {name: sum(p.numel() for p in net.parameters()) for name, net in nets.items()},
        "widths": {"G (4³ … S/2)": cfg.generator_widths()[::-1], "D and E (S/2 … 4³)": cfg.critic_widths(),
                   "C": [cfg.code_units] * 2},
    }


FAMILY = Family(
    name="alpha-gan",
    summary="auto-encoding GAN with a code discriminator (Rosca et al. 2017) in the 3D form of Kwon et al. 2019: "
            "E, G, WGAN-GP image critic D, code discriminator C, λ·L1 reconstruction",
    presets=PRESETS,
    default_preset=DEFAULT_PRESET,
    model_config=model_config,
    model_from_dict=AlphaGANConfig.from_dict,
    hparams_from_dict=train.AlphaGANHParams.from_dict,
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
