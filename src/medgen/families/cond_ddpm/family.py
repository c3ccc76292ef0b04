"""The image-conditioned diffusion model as a registered family: the record the registry lists under ``"cond-ddpm"``."""

from __future__ import annotations

from typing import Any

from medgen.families.cond_ddpm import model, train
from medgen.families.cond_ddpm.config import DEFAULT_PRESET, PRESETS, CondDDPMConfig, CondDDPMHParams, model_config
from medgen.training.family import Family


def describe(cfg: CondDDPMConfig) -> dict[str, Any]:
    unet = train.build_unet(cfg)
    return {"config": cfg.to_dict(), "unet_in_channels": cfg.unet_in_channels,
            "totals": {"unet": sum(p.numel() for p in unet.parameters())}}


FAMILY = Family(
    name="cond-ddpm",
    summary="image-conditioned diffusion (SR3/Palette): the ddpm UNet on the noisy target with the input volumes "
            "as extra channels at every step, DDIM/DDPM sampling; the same --task options as unet",
    presets=PRESETS,
    default_preset=DEFAULT_PRESET,
    model_config=model_config,
    model_from_dict=CondDDPMConfig.from_dict,
    hparams_from_dict=CondDDPMHParams.from_dict,
    build=train.build,
    optimizers=train.optimizers,
    train_step=train.train_step,
    loss_names=train.loss_names,
    ema="unet",
    preview=None,  # a sample needs a condition from the data; `medgen translate RUN PAIRS` shows the outputs
    load_model=model.load_model,
    build_model=model.build,
    build_untrained=model.build_untrained,
    data_keys=lambda cfg: (cfg.target, *cfg.inputs),
    describe=describe,
)
