"""VAE-GAN as a registered family: the record the registry lists under ``"vae-gan"``."""

from __future__ import annotations

from typing import Any

import torch

from medgen.families import dcgan3d
from medgen.families.vae_gan import bench, model, train
from medgen.families.vae_gan.config import DEFAULT_PRESET, PRESETS, VAEGANConfig, model_config
from medgen.families.vae_gan.networks import Encoder
from medgen.training.family import Family


def describe(cfg: VAEGANConfig) -> dict[str, Any]:
    with torch.device("meta"):  # shapes only: no memory for the weights
        E, G, D = Encoder(cfg), dcgan3d.Generator(cfg), dcgan3d.Critic(cfg)
    return {"config": cfg.to_dict(),
            "widths": {"E": cfg.critic_widths() + cfg.critic_widths()[-1:], "G": cfg.generator_widths()[::-1],
                       "D": cfg.critic_widths()},
            "totals": {name: dcgan3d.count_parameters(net) for name, net in (("E", E), ("G", G), ("D", D))}}


FAMILY = Family(
    name="vae-gan",
    summary="VAE-GAN (Larsen et al. 2016) with the 3D DCGAN-style networks of Kwon et al. 2019: encoder (μ, log σ²), "
            "generator as decoder, discriminator; KL + feature-wise reconstruction + adversarial losses",
    presets=PRESETS,
    default_preset=DEFAULT_PRESET,
    model_config=model_config,
    model_from_dict=VAEGANConfig.from_dict,
    hparams_from_dict=train.VAEGANHParams.from_dict,
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
