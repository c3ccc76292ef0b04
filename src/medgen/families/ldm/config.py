"""The latent diffusion model's configuration (:class:`LDMConfig`) and its presets.

An ``ldm`` run is tied to one trained ``ldm-autoencoder`` run (``--autoencoder RUN``): its
configuration copies that run's architecture (``autoencoder``), remembers the run folder as
given (``autoencoder_run``) and the checkpoint whose weights it starts from
(``autoencoder_checkpoint``). The autoencoder's weights then travel inside every ``ldm``
checkpoint, so a trained ``ldm`` run samples without the autoencoder run.

The denoiser is the ``ddpm`` family's UNet on latents of shape C × (S/4)³ (C latent
channels); :meth:`LDMConfig.diffusion` is its :class:`~medgen.families.ddpm.config.DDPMConfig`.
The default noise schedule is MONAI's latent-diffusion tutorials' (``scaled_linear_beta``
from 0.0015 to 0.0195). Predicted latents are not clipped (latents are not confined to
[-1, 1] as volumes are).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medgen.core.errors import InputError, UsageError
from medgen.core.settings import from_dict
from medgen.families.ddpm.config import DDPMConfig
from medgen.families.ldm_autoencoder.config import AutoencoderConfig

AUTOENCODER_FAMILY = "ldm-autoencoder"


@dataclass
class LDMConfig:
    """The autoencoder it diffuses the latents of, and the latent UNet and noise schedule (module docstring)."""

    size: int = 32
    autoencoder: dict[str, Any] = field(default_factory=dict)
    autoencoder_run: str = ""
    autoencoder_checkpoint: str = ""
    channels: list[int] = field(default_factory=lambda: [32, 64, 64])
    num_res_blocks: int = 1
    attention_levels: list[bool] = field(default_factory=lambda: [False, False, True])
    norm_groups: int = 16
    num_head_channels: int = 16
    num_classes: int = 0
    num_train_timesteps: int = 1000
    schedule: str = "scaled_linear_beta"
    beta_start: float = 0.0015
    beta_end: float = 0.0195
    prediction_type: str = "v_prediction"

    def __post_init__(self) -> None:
        self.channels = [int(c) for c in self.channels]
        self.attention_levels = [bool(a) for a in self.attention_levels]
        self.validate()

    def autoencoder_config(self) -> AutoencoderConfig:
        return AutoencoderConfig.from_dict(self.autoencoder or {"size": self.size})

    def diffusion(self) -> DDPMConfig:
        """The denoiser and schedule as the ``ddpm`` family builds and samples them, on latents."""
        ae = self.autoencoder_config()
        return DDPMConfig(
            size=ae.latent_size, in_channels=ae.latent_channels, clip_sample=False, channels=list(self.channels),
            num_res_blocks=self.num_res_blocks, attention_levels=list(self.attention_levels),
            norm_groups=self.norm_groups, num_head_channels=self.num_head_channels, num_classes=self.num_classes,
            num_train_timesteps=self.num_train_timesteps, schedule=self.schedule, beta_start=self.beta_start,
            beta_end=self.beta_end, prediction_type=self.prediction_type,
        )

    def validate(self) -> None:
        """UsageError (one line) for an autoencoder of another size or a latent UNet that cannot be built."""
        ae = self.autoencoder_config()
        if ae.size != self.size:
            raise UsageError(f"the autoencoder works on {ae.size}³ volumes, this model on {self.size}³")
        try:
            self.diffusion()
        except UsageError as exc:
            raise UsageError(f"latent UNet on {ae.latent_size}³ latents: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LDMConfig":
        return from_dict(cls, d, "LDM model setting")


PRESETS: dict[str, dict[str, Any]] = {
    # For CPU training on the 8³ latents of 32³ phantoms in minutes (0.4M parameters).
    "tiny": dict(channels=[16, 32, 32], num_res_blocks=1, attention_levels=[False, False, False], norm_groups=8,
                 num_head_channels=8),
    # Self-attention at the coarsest level (1.8M parameters).
    "small": dict(channels=[32, 64, 64], num_res_blocks=1, attention_levels=[False, False, True], norm_groups=16,
                  num_head_channels=16),
    # The latent UNet of MONAI's 3D latent-diffusion tutorial, for a GPU.
    "base": dict(channels=[32, 64, 64], num_res_blocks=1, attention_levels=[False, True, True], norm_groups=32,
                 num_head_channels=32),
}
DEFAULT_PRESET = "base"


def autoencoder_of_run(run: str | Path, size: int) -> dict[str, Any]:
    """``autoencoder``, ``autoencoder_run`` and ``autoencoder_checkpoint`` of an LDM configuration for the
    trained ``ldm-autoencoder`` run ``run``; InputError/UsageError (one line) if it cannot serve."""
    from medgen.training.checkpoint import resolve_checkpoint
    from medgen.training.runconfig import RunConfig

    folder = Path(run)
    if not folder.is_dir():
        raise InputError(f"--autoencoder {run}: no such run folder")
    saved = RunConfig.load(folder)
    if saved.family != AUTOENCODER_FAMILY:
        raise UsageError(f"--autoencoder {run}: a {saved.family!r} run, not an {AUTOENCODER_FAMILY!r} one")
    ae = AutoencoderConfig.from_dict(saved.model)
    if ae.size != size:
        raise UsageError(f"--autoencoder {run}: trained on {ae.size}³ volumes, the data are {size}³")
    return {"autoencoder": ae.to_dict(), "autoencoder_run": str(run),
            "autoencoder_checkpoint": str(resolve_checkpoint(folder))}


def model_config(preset: str, size: int, **overrides: Any) -> LDMConfig:
    """Preset ``preset`` at ``size``³ on the autoencoder of run ``autoencoder_run`` (required); overrides whose
    value is None are ignored. ``autoencoder``: an autoencoder configuration dict instead of a run (random
    autoencoder weights: benchmarks and tests only)."""
    if preset not in PRESETS:
        raise UsageError(f"unknown LDM preset {preset!r} (choose from {', '.join(PRESETS)})")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    run = overrides.pop("autoencoder_run", None)
    fields = dict(PRESETS[preset], size=size)
    if run is not None:
        fields.update(autoencoder_of_run(run, size))
    elif "autoencoder" not in overrides:
        raise UsageError("--family ldm needs --autoencoder RUN: a trained `medgen train --family ldm-autoencoder` run")
    fields.update(overrides)
    return LDMConfig.from_dict(fields)
