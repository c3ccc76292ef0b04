"""The autoencoder baselines of unsupervised anomaly detection as a registered family: the record listed under
``"autoencoder"``."""

from __future__ import annotations

from typing import Any

import torch

from medgen.families.autoencoder import bench, model, train
from medgen.families.autoencoder.config import DEFAULT_PRESET, PRESETS, RECIPES, AEConfig, model_config
from medgen.families.autoencoder.networks import build_network
from medgen.training.family import Family


def describe(cfg: AEConfig) -> dict[str, Any]:
    """Architecture, code shape and parameter count (``medgen model-info``)."""
    with torch.device("meta"):  # shapes only: no memory for the weights
        net = build_network(cfg)
    s = cfg.bottleneck_size
    return {"config": cfg.to_dict(),
            "kind": "VAE (MONAI VarAutoEncoder), dense latent" if cfg.variational
                    else "AE (MONAI AutoEncoder), spatial bottleneck",
            "levels": cfg.levels,
            "deepest_map": [cfg.channels[-1], s, s, s],
            "latent_shape": list(cfg.latent_shape),
            "latent_dim": cfg.latent_dim,
            "totals": {train.NET: sum(p.numel() for p in net.parameters())}}


FAMILY = Family(
    name="autoencoder",
    summary="autoencoder / VAE baselines of unsupervised anomaly detection (Baur et al. 2021): MONAI 3D AutoEncoder "
            "(spatial bottleneck, L1/MSE) or VarAutoEncoder (dense latent, + β·KL); reconstruct, encode, decode",
    presets=PRESETS,
    default_preset=DEFAULT_PRESET,
    model_config=model_config,
    model_from_dict=AEConfig.from_dict,
    hparams_from_dict=train.AEHParams.from_dict,
    build=train.build,
    optimizers=train.optimizers,
    train_step=train.train_step,
    loss_names=train.loss_names,
    preview=train.preview,
    load_model=model.load_model,
    build_model=model.build,
    build_untrained=model.build_untrained,
    describe=describe,
    bench=bench,
    recipes=RECIPES,
)
