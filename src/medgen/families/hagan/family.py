"""HA-GAN as a registered family: the record the registry lists under ``"hagan"``."""

from __future__ import annotations

from medgen.families.hagan import bench, model, train
from medgen.families.hagan.config import PRESETS, HAGANConfig, get_preset, options_from_data
from medgen.families.hagan.summary import summary
from medgen.training.family import Family

FAMILY = Family(
    name="hagan",
    summary="Hierarchical Amortized GAN (Sun et al., IEEE JBHI 2022): G^A/G^L/G^H, D^H/D^L, E^H/E^G",
    presets=PRESETS,
    model_config=get_preset,
    model_from_dict=HAGANConfig.from_dict,
    hparams_from_dict=train.HAGANHParams.from_dict,
    build=train.build,
    optimizers=train.optimizers,
    train_step=train.train_step,
    loss_names=train.loss_names,
    ddp_modules=train.ddp_modules,
    ema="G",
    preview=train.preview,
    load_model=model.load_model,
    build_model=model.build,
    build_untrained=model.build_untrained,
    uses_labels=lambda cfg: cfg.num_classes > 0,
    describe=summary,
    bench=bench,
    recipes=train.RECIPES,
    options_from_data=options_from_data,
)
