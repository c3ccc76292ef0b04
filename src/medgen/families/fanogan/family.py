"""f-AnoGAN as a registered family: the record the registry lists under ``"fanogan"``."""

from __future__ import annotations

from typing import Any

from medgen.families.fanogan import model, train
from medgen.families.fanogan.config import DEFAULT_PRESET, PRESETS, FAnoGANConfig, model_config
from medgen.training.family import Family


def describe(cfg: FAnoGANConfig) -> dict[str, Any]:
    import torch

    from medgen.families.fanogan.networks import build_networks, discriminator_features

    gan = cfg.gan_config()
    with torch.device("meta"):
        nets = build_networks(gan)
        n_f = discriminator_features(nets["D"], torch.zeros(1, 1, gan.size, gan.size, gan.size)).shape[1]
    return {"config": cfg.to_dict(), "latent_dim": gan.latent_dim, "feature_values": int(n_f),
            "totals": {name: sum(p.numel() for p in net.parameters()) for name, net in nets.items()},
            "trained": ["E"], "frozen": ["G", "D"]}


FAMILY = Family(
    name="fanogan",
    summary="f-AnoGAN (Schlegl et al. 2019): an encoder trained (izi_f) against the frozen G and D of a trained "
            "HA-GAN run (--generator RUN); anomaly scores and maps",
    presets=PRESETS,
    default_preset=DEFAULT_PRESET,
    model_config=model_config,
    model_from_dict=FAnoGANConfig.from_dict,
    hparams_from_dict=train.FAnoGANHParams.from_dict,
    build=train.build,
    optimizers=train.optimizers,
    train_step=train.train_step,
    loss_names=train.loss_names,
    ddp_modules=train.ddp_modules,
    load_model=model.load_model,
    build_model=model.build,
    build_untrained=model.build_untrained,
    describe=describe,
)
