"""The supervised image-to-image UNet as a registered family: the record the registry lists under ``"unet"``."""

from __future__ import annotations

from typing import Any

from medgen.families.unet import model, train
from medgen.families.unet.config import DEFAULT_PRESET, PRESETS, UNetConfig, UNetHParams, model_config
from medgen.families.unet.network import build_unet
from medgen.training.family import Family


def describe(cfg: UNetConfig) -> dict[str, Any]:
    net = build_unet(cfg)
    return {"config": cfg.to_dict(), "totals": {"unet": sum(p.numel() for p in net.parameters())}}


FAMILY = Family(
    name="unet",
    summary="supervised 3D residual UNet for image-to-image tasks (MONAI UNet, L1/L2; RED-CNN-style baseline): "
            "--task sr|denoise|kspace|restore|inpaint|outpaint|xray2ct on a `medgen degrade` data set",
    presets=PRESETS,
    default_preset=DEFAULT_PRESET,
    model_config=model_config,
    model_from_dict=UNetConfig.from_dict,
    hparams_from_dict=UNetHParams.from_dict,
    build=train.build,
    optimizers=train.optimizers,
    train_step=train.train_step,
    loss_names=train.loss_names,
    ema="unet",
    load_model=model.load_model,
    build_model=model.build,
    build_untrained=model.build_untrained,
    data_keys=lambda cfg: (cfg.target, *cfg.inputs),
    describe=describe,
)
