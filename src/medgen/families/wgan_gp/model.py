"""A trained (or freshly built) WGAN-GP generator: what ``medgen.load`` returns for a ``wgan-gp`` run.

Example::

    model = medgen.load("runs/wgan64")                  # latest checkpoint, EMA generator
    x = model.generate(4, seed=0)                       # float32 [4, 64, 64, 64] in [-1, 1]
    x = model.generate(1, seed=0, indices=[3])          # volume 3 of seed 0 alone
    x = model.generate(2, z=codes)                      # from given latent codes [2, latent_dim]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from medgen.families.dcgan3d import Generator, GeneratorModel, frozen, load_state
from medgen.families.wgan_gp.config import WGANGPConfig, model_config

WGANGPModel = GeneratorModel  # generate, sample_latents, to_hu: :class:`medgen.families.dcgan3d.GeneratorModel`


def load_model(run_cfg: Any, weights: dict[str, dict[str, torch.Tensor]], checkpoint: Path, device: torch.device,
               use_ema: bool = True) -> GeneratorModel:
    """The generator of a ``wgan-gp`` run (its EMA copy unless ``use_ema`` is False)."""
    cfg = WGANGPConfig.from_dict(run_cfg.model)
    key = "G_ema" if use_ema and "G_ema" in weights else "G"
    generator = load_state(Generator(cfg), weights, key, checkpoint)
    return GeneratorModel(cfg, frozen(generator, device), run_cfg, device, checkpoint)


def build(preset: str = "tiny", size: int = 32, seed: int = 0, device: torch.device = torch.device("cpu"),
          encoder: bool = False, **overrides: Any) -> GeneratorModel:
    """An untrained generator (random initialisation drawn from ``seed``) of ``preset`` at ``size``³.

    ``encoder`` is accepted for the common interface (``medgen.build``); WGAN-GP has none.
    """
    cfg = model_config(preset, size, **overrides)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        generator = Generator(cfg)
    return GeneratorModel(cfg, frozen(generator, torch.device(device)), None, torch.device(device), None)


def build_untrained(run_cfg: Any, seed: int = 0, device: torch.device = torch.device("cpu")) -> GeneratorModel:
    """The architecture of a ``wgan-gp`` run at a random initialisation drawn from ``seed`` (the baseline)."""
    cfg = WGANGPConfig.from_dict(run_cfg.model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        generator = Generator(cfg)
    return GeneratorModel(cfg, frozen(generator, device), run_cfg, device, None)
