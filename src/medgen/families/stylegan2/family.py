"""StyleGAN2 (Karras et al., CVPR 2020) in 3D as a registered family: the record the registry lists under
``"stylegan2"``."""

from __future__ import annotations

from typing import Any

import torch

from medgen.families.stylegan2 import bench, model, train
from medgen.families.stylegan2.config import DEFAULT_PRESET, PRESETS, StyleGAN2Config, model_config
from medgen.families.stylegan2.networks import Discriminator, Generator
from medgen.training.family import Family


def describe(cfg: StyleGAN2Config) -> dict[str, Any]:
    """Configuration, parameters of G (mapping and synthesis) and D, and the resolution and width of every level."""
    with torch.device("meta"):  # shapes only: no memory for the weights
        nets = {"G": Generator(cfg), "D": Discriminator(cfg)}
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    return {
        "config": cfg.to_dict(),
        "totals": {name: count(net) for name, net in nets.items()},
        "mapping": count(nets["G"].mapping),
        "num_ws": cfg.num_ws,
        "levels": [{"level": k, "resolution": cfg.resolution(k), "channels": cfg.channels(k)}
                   for k in range(cfg.levels + 1)],
    }


FAMILY = Family(
    name="stylegan2",
    summary="StyleGAN2 in 3D (Karras et al. 2020): mapping network, modulated/demodulated convolutions, noise, "
            "skip generator, residual D with minibatch std, logistic loss with lazy R1 (no path-length reg.)",
    presets=PRESETS,
    default_preset=DEFAULT_PRESET,
    model_config=model_config,
    model_from_dict=StyleGAN2Config.from_dict,
    hparams_from_dict=train.StyleGAN2HParams.from_dict,
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
