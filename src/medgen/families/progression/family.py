"""Disease-progression prediction as a registered family: the record the registry lists under ``"progression"``.

Train on a longitudinal data set (``medgen phantoms --kind brain-mri --longitudinal``, then ``medgen
preprocess``): ``medgen train DATA --family progression --preset tiny``; ``--recipe deformation`` (or
``diffeomorphic``) predicts a displacement field instead of intensities, ``--recipe dep-gan`` adds the
adversarial term. The interval comes from the manifest column ``interval_column`` (default ``interval_years``),
which the family asks the loop for (``covariates``): each batch holds it as ``batch["covariates"][:, 0]``.
"""

from __future__ import annotations

from typing import Any

from medgen.families.progression import model, train
from medgen.families.progression.config import (DEFAULT_PRESET, PRESETS, RECIPES, ProgressionConfig,
                                                ProgressionHParams, model_config)
from medgen.families.progression.network import build_network
from medgen.training.family import Family


def describe(cfg: ProgressionConfig) -> dict[str, Any]:
    totals = {"net": sum(p.numel() for p in build_network(cfg).parameters()),
              "D (only with adversarial_weight > 0)": sum(p.numel() for p in train.build_discriminator(cfg).parameters())}
    return {"config": cfg.to_dict(), "totals": totals,
            "inputs": {"volume": cfg.baseline, "interval": f"manifest column {cfg.interval_column!r} (years), by FiLM"},
            "predicts": cfg.target}


FAMILY = Family(
    name="progression",
    summary="disease-progression prediction (DEP-GAN-like): the follow-up scan from the baseline and the interval "
            "(MONAI UNet + FiLM on the interval; intensity change or MONAI Warp deformation; L1 + optional "
            "PatchGAN term) on a longitudinal data set (`medgen phantoms --kind brain-mri --longitudinal`)",
    presets=PRESETS,
    default_preset=DEFAULT_PRESET,
    model_config=model_config,
    model_from_dict=ProgressionConfig.from_dict,
    hparams_from_dict=ProgressionHParams.from_dict,
    build=train.build,
    optimizers=train.optimizers,
    train_step=train.train_step,
    loss_names=train.loss_names,
    ema="net",
    load_model=model.load_model,
    build_model=model.build,
    build_untrained=model.build_untrained,
    data_keys=lambda cfg: (cfg.baseline, cfg.target),
    covariates=lambda cfg: (cfg.interval_column,),
    describe=describe,
    recipes=RECIPES,
)
