"""The registry of model families: name → :class:`medgen.training.family.Family`.

Adding a family is one package under ``medgen/families/`` plus one line in
:data:`FAMILIES`; the loop, resume, DDP, the CLI (``--family NAME``), loading
(``medgen.load``) and the shared test template then serve it.

Example::

    from medgen.families import registry

    fam = registry.get("hagan")
    cfg = fam.model_config("tiny", 32)
    model = registry.load("runs/thorax64")        # the run's family decides
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from medgen.core.errors import InputError, UsageError
from medgen.families.alpha_gan.family import FAMILY as ALPHA_GAN
from medgen.families.autoencoder.family import FAMILY as AUTOENCODER
from medgen.families.classifier.family import FAMILY as CLASSIFIER
from medgen.families.cond_ddpm.family import FAMILY as COND_DDPM
from medgen.families.cyclegan.family import FAMILY as CYCLEGAN
from medgen.families.ddpm.family import FAMILY as DDPM
from medgen.families.fanogan.family import FAMILY as FANOGAN
from medgen.families.hagan.family import FAMILY as HAGAN
from medgen.families.ldm.family import FAMILY as LDM
from medgen.families.ldm_autoencoder.family import FAMILY as LDM_AUTOENCODER
from medgen.families.pggan.family import FAMILY as PGGAN
from medgen.families.pix2pix.family import FAMILY as PIX2PIX
from medgen.families.registration.family import FAMILY as REGISTRATION
from medgen.families.progression.family import FAMILY as PROGRESSION
from medgen.families.seg_unet.family import FAMILY as SEG_UNET
from medgen.families.stylegan2.family import FAMILY as STYLEGAN2
from medgen.families.unet.family import FAMILY as UNET
from medgen.families.vae_gan.family import FAMILY as VAE_GAN
from medgen.families.wgan_gp.family import FAMILY as WGAN_GP
from medgen.training.checkpoint import load_weights, resolve_checkpoint
from medgen.training import loop
from medgen.training.loop import TrainResult
from medgen.training.family import Family
from medgen.training.runconfig import RunConfig

FAMILIES: dict[str, Family] = {
    "hagan": HAGAN,
    "classifier": CLASSIFIER,
    "ddpm": DDPM,
    "ldm-autoencoder": LDM_AUTOENCODER,
    "ldm": LDM,
    "fanogan": FANOGAN,
    "unet": UNET,
    "pix2pix": PIX2PIX,
    "cyclegan": CYCLEGAN,
    "cond-ddpm": COND_DDPM,
    "seg-unet": SEG_UNET,
    "wgan-gp": WGAN_GP,
    "vae-gan": VAE_GAN,
    "alpha-gan": ALPHA_GAN,
    "pggan": PGGAN,
    "stylegan2": STYLEGAN2,
    "autoencoder": AUTOENCODER,
    "registration": REGISTRATION,
    "progression": PROGRESSION,
}


def get(name: str) -> Family:
    """The family registered as ``name``; UsageError naming the known ones otherwise."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise UsageError(f"unknown model family {name!r} (registered: {', '.join(FAMILIES)})") from None


def load_run_config(run_dir: str | os.PathLike) -> RunConfig:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError(f"{run_dir}: no such run folder")
    return RunConfig.load(run_dir)


def load(
    run_dir: str | os.PathLike,
    checkpoint: str | os.PathLike | None = None,
    device: torch.device = torch.device("cpu"),
    use_ema: bool = True,
) -> Any:
    """The model of training run ``run_dir`` (its latest checkpoint, or ``checkpoint``), as its family loads it."""
    run_cfg = load_run_config(run_dir)
    family = get(run_cfg.family)
    ckpt = resolve_checkpoint(checkpoint if checkpoint is not None else run_dir)
    weights = load_weights(ckpt, device="cpu")
    return family.load_model(run_cfg, weights, ckpt, device, use_ema)


def build_untrained(run_dir: str | os.PathLike, seed: int = 0, device: torch.device = torch.device("cpu")) -> Any:
    """The architecture of run ``run_dir`` at a random initialisation drawn from ``seed``."""
    run_cfg = load_run_config(run_dir)
    family = get(run_cfg.family)
    if family.build_untrained is None:
        raise UsageError(f"family {family.name!r} has no untrained baseline")
    return family.build_untrained(run_cfg, seed=seed, device=device)


def train(cfg: RunConfig, run_dir: str | os.PathLike, resume: bool = False, progress: bool = True) -> TrainResult:
    """Train ``cfg.family`` on the shared loop (:func:`medgen.training.loop.train`)."""
    return loop.train(get(cfg.family), cfg, run_dir, resume=resume, progress=progress)
