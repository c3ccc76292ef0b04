"""3D segmentation as a registered family: the record the registry lists under ``"seg-unet"``."""

from __future__ import annotations

from typing import Any

from medgen.families.seg_unet import model, train
from medgen.families.seg_unet.config import (DEFAULT_PRESET, PRESETS, SegUNetConfig, SegUNetHParams, model_config,
                                             options_from_data)
from medgen.families.seg_unet.network import build_network
from medgen.training.family import Family


def describe(cfg: SegUNetConfig) -> dict[str, Any]:
    net = build_network(cfg)
    return {"config": cfg.to_dict(), "totals": {"unet": sum(p.numel() for p in net.parameters())}}


FAMILY = Family(
    name="seg-unet",
    summary="supervised 3D segmentation (MONAI UNet, Dice + cross-entropy) of a data set's label-map volume "
            "(--target, default tissue; --num-classes, default from preprocess.json); `medgen segment` applies it",
    presets=PRESETS,
    default_preset=DEFAULT_PRESET,
    model_config=model_config,
    model_from_dict=SegUNetConfig.from_dict,
    hparams_from_dict=SegUNetHParams.from_dict,
    build=train.build,
    optimizers=train.optimizers,
    train_step=train.train_step,
    loss_names=train.loss_names,
    ema="unet",
    load_model=model.load_model,
    build_model=model.build,
    build_untrained=model.build_untrained,
    data_keys=lambda cfg: (cfg.label, *cfg.inputs),
    describe=describe,
    options_from_data=options_from_data,
    classes_from_data=True,
)
