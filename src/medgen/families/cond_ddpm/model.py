"""A trained ``cond-ddpm`` ready to translate volumes: what ``medgen.load`` returns for a ``cond-ddpm`` run.

It has the interface of the ``unet`` family's :class:`~medgen.families.unet.model.ImageToImageModel`
(``config.inputs``, ``config.target``, ``window``, ``preprocess``, ``translate``), so ``medgen translate``
serves it unchanged; translating runs the reverse diffusion process conditioned on the inputs.

Example::

    model = medgen.load("runs/cond-denoise64")
    clean = model.translate(noisy)                                 # DDIM, 50 steps, seed 0
    clean = model.translate(noisy, steps=200, seed=3)              # another draw, more steps
    filled = model.translate({"degraded": x, "mask": m})           # several inputs, by name
    big = model.translate(ct256, window=64)                        # every step's UNet call by 64³ windows
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medgen.core.errors import InputError
from medgen.families.cond_ddpm.config import CondDDPMConfig, CondDDPMHParams, model_config
from medgen.families.cond_ddpm.sample import conditional_sample
from medgen.families.cond_ddpm.train import build_unet
from medgen.families.ddpm.sample import DEFAULT_SAMPLER
from medgen.families.unet.model import ImageToImageModel


@dataclass
class ConditionalDiffusionModel(ImageToImageModel):
    """``network``: the conditional UNet (EMA weights when the run has them, eval mode); ``config``: its
    :class:`CondDDPMConfig`; ``window``: the sliding window's edge by default (the training patch; 0: whole
    volumes); ``residual_target``: the model diffuses target − first input (the run's hyper-parameter)."""

    residual_target: bool = False

    @torch.no_grad()
    def translate(self, inputs: Any, window: int | None = None, overlap: float = 0.25, steps: int | None = None,
                  seed: int = 0, *, sampler: str = DEFAULT_SAMPLER, eta: float = 0.0) -> np.ndarray:
        """The predicted target ``(X, Y, Z)`` float32 in [-1, 1]: one draw of the reverse process conditioned on
        ``inputs`` (see :meth:`input_channels`), deterministic for ``seed``.

        steps: DDIM steps (default 50; ``sampler="ddpm"`` runs every training timestep); eta: DDIM's noise
        weight (0 deterministic given the initial noise, 1 as DDPM). window: edge of the overlapping cubic
        windows every step's UNet call is split into (a multiple of ``config.divisor``; default the training
        patch, 0 for whole volumes): memory bounded, ``steps`` × windows UNet calls; overlap: their overlap.
        """
        c = torch.from_numpy(self.input_channels(inputs))[None].to(self.device)
        w = self.window if window is None else int(window)
        out = conditional_sample(self.network, self.config, c, seed=seed, sampler=sampler, steps=steps, eta=eta,
                                 window=w, overlap=overlap, residual_target=self.residual_target)
        return out[0, 0].cpu().numpy().astype(np.float32)


def _eval(net: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    return net.to(device).eval().requires_grad_(False)


def _seeded_unet(cfg: CondDDPMConfig, seed: int) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_unet(cfg)


def load_model(run_cfg: Any, weights: dict[str, dict[str, torch.Tensor]], checkpoint: Path, device: torch.device,
               use_ema: bool = True) -> ConditionalDiffusionModel:
    """The denoiser of a ``cond-ddpm`` run (its EMA copy unless ``use_ema`` is False)."""
    cfg = CondDDPMConfig.from_dict(run_cfg.model)
    hp = CondDDPMHParams.from_dict(dict(run_cfg.hparams or {}))
    key = "unet_ema" if use_ema and "unet_ema" in weights else "unet"
    if key not in weights:
        raise InputError(f"{checkpoint}: the checkpoint holds no UNet weights")
    unet = build_unet(cfg)
    try:
        unet.load_state_dict(weights[key])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise InputError(f"{checkpoint}: weights do not fit the UNet in the run's config.yaml ({first})") from None
    return ConditionalDiffusionModel(cfg, _eval(unet, device), run_cfg, device, checkpoint, window=hp.patch,
                                     residual_target=hp.residual_target)


def build(preset: str = "tiny", size: int = 32, seed: int = 0, device: torch.device = torch.device("cpu"),
          encoder: bool = False, **overrides: Any) -> ConditionalDiffusionModel:
    """An untrained conditional denoiser (random initialisation drawn from ``seed``) of ``preset`` at ``size``³."""
    cfg = model_config(preset, size, **overrides)
    return ConditionalDiffusionModel(cfg, _eval(_seeded_unet(cfg, seed), device), device=device)


def build_untrained(run_cfg: Any, seed: int = 0, device: torch.device = torch.device("cpu")) -> ConditionalDiffusionModel:
    """The architecture of a ``cond-ddpm`` run at a random initialisation drawn from ``seed``."""
    cfg = CondDDPMConfig.from_dict(run_cfg.model)
    hp = CondDDPMHParams.from_dict(dict(run_cfg.hparams or {}))
    return ConditionalDiffusionModel(cfg, _eval(_seeded_unet(cfg, seed), device), run_cfg, device, None,
                                     window=hp.patch, residual_target=hp.residual_target)
