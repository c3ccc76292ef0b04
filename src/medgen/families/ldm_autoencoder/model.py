"""A trained KL autoencoder: what ``medgen.load`` returns for an ``ldm-autoencoder`` run.

Example::

    ae = medgen.load("runs/ae32")
    z = ae.encode(volumes)                  # float32 [n, 3, 8, 8, 8]: the latent means μ
    x = ae.decode(z)                        # float32 [n, 32, 32, 32] in [-1, 1]
    x = ae.decode(z, chunk=2)               # the same, 2 latent slices at a time (bounded memory)
    x = ae.reconstruct(volumes)             # decode(encode(volumes))

An autoencoder does not sample (it has no ``generate``): ``medgen generate`` needs the
``ldm`` run trained on its latents.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medgen.core.errors import InputError, UsageError
from medgen.core.volume import hounsfield_of
from medgen.families.ldm_autoencoder.config import AutoencoderConfig, model_config
from medgen.families.ldm_autoencoder.decode import decode_chunked
from medgen.families.ldm_autoencoder.train import build_autoencoder
from medgen.inference.encode import as_volume_batch


def as_latent_batch(latents: Any, shape: tuple[int, ...]) -> torch.Tensor:
    """[C, s, s, s] or [n, C, s, s, s] array/tensor → float32 tensor [n, C, s, s, s]; UsageError for another shape."""
    z = latents if isinstance(latents, torch.Tensor) else torch.as_tensor(np.asarray(latents))
    if z.dim() == len(shape):
        z = z.unsqueeze(0)
    if z.dim() != len(shape) + 1 or tuple(z.shape[1:]) != tuple(shape):
        raise UsageError(f"latents of shape {tuple(z.shape)}: this autoencoder's are {list(shape)} per volume")
    return z.float()


@torch.no_grad()
def decode_latents(autoencoder: torch.nn.Module, z: torch.Tensor, cfg: AutoencoderConfig, chunk: int | None,
                   device: torch.device) -> np.ndarray:
    """Latents [n, C, s, s, s] → volumes float32 [n, S, S, S] in [-1, 1], one volume at a time.

    ``chunk``: decode ``chunk`` latent slices at a time (:func:`decode_chunked`, equal to
    whole-volume decoding); None decodes whole volumes.
    """
    s = cfg.size
    out = np.empty((len(z), s, s, s), dtype=np.float32)
    for i in range(len(z)):
        zi = z[i : i + 1].to(device)
        if chunk:
            x = decode_chunked(autoencoder, zi, int(chunk), cfg.factor)
        else:
            x = autoencoder.decode(zi)
        out[i] = x[0, 0].clamp(-1.0, 1.0).float().cpu().numpy()
    return out


@dataclass
class AutoencoderModel:
    """``autoencoder``: MONAI ``AutoencoderKL`` in eval mode; ``config``: its :class:`AutoencoderConfig`;
    ``run_config``: the training run's configuration (None for :func:`build`)."""

    config: AutoencoderConfig
    autoencoder: torch.nn.Module
    run_config: Any = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    checkpoint: Path | None = None

    @property
    def encoder(self) -> torch.nn.Module:
        """What ``medgen encode`` checks for: this model encodes."""
        return self.autoencoder

    @property
    def preprocess(self) -> dict[str, Any]:
        return dict(getattr(self.run_config, "preprocess", None) or {})

    @property
    def latent_shape(self) -> tuple[int, int, int, int]:
        return self.config.latent_shape

    def encode(self, volumes: Any, batch_size: int = 1) -> np.ndarray:
        """Latent means μ of volumes in [-1, 1] ([S, S, S] or [n, S, S, S]): float32 [n, C, s, s, s]."""
        x = as_volume_batch(volumes, self.config.size)
        parts = []
        with torch.inference_mode():
            for k in range(0, len(x), max(1, batch_size)):
                mu, _ = self.autoencoder.encode(x[k : k + batch_size].to(self.device))
                parts.append(mu.float().cpu().numpy())
        return np.concatenate(parts)

    def decode(self, latents: Any, chunk: int | None = None) -> np.ndarray:
        """Volumes float32 [n, S, S, S] in [-1, 1] decoded from latents [n, C, s, s, s] (``chunk``: see :func:`decode_latents`)."""
        z = as_latent_batch(latents, self.config.latent_shape)
        return decode_latents(self.autoencoder, z, self.config, chunk, self.device)

    def reconstruct(self, volumes: Any, chunk: int | None = None, batch_size: int = 1) -> np.ndarray:
        """decode(encode(volumes)): float32 [n, S, S, S] in [-1, 1]."""
        return self.decode(self.encode(volumes, batch_size), chunk=chunk)

    def to_hu(self, x: np.ndarray) -> np.ndarray:
        """Map [-1, 1] back to Hounsfield units with the training data's CT window (float32)."""
        return hounsfield_of(x, self.preprocess)


def _eval(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    return module.to(device).eval().requires_grad_(False)


def autoencoder_from_weights(cfg: AutoencoderConfig, state: dict[str, torch.Tensor], source: Any) -> torch.nn.Module:
    """``AutoencoderKL`` of ``cfg`` with weights ``state``; InputError naming ``source`` when they do not fit."""
    ae = build_autoencoder(cfg)
    try:
        ae.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise InputError(f"{source}: weights do not fit the autoencoder in the run's config.yaml ({first})") from None
    return ae


def load_model(run_cfg: Any, weights: dict[str, dict[str, torch.Tensor]], checkpoint: Path, device: torch.device,
               use_ema: bool = True) -> AutoencoderModel:
    """The autoencoder of an ``ldm-autoencoder`` run (it has no EMA copy)."""
    cfg = AutoencoderConfig.from_dict(run_cfg.model)
    if "autoencoder" not in weights:
        raise InputError(f"{checkpoint}: the checkpoint holds no autoencoder weights")
    ae = autoencoder_from_weights(cfg, weights["autoencoder"], checkpoint)
    return AutoencoderModel(cfg, _eval(ae, device), run_cfg, device, checkpoint)


def build(preset: str = "tiny", size: int = 32, seed: int = 0, device: torch.device = torch.device("cpu"),
          encoder: bool = False, **overrides: Any) -> AutoencoderModel:
    """An untrained autoencoder (random initialisation drawn from ``seed``) of ``preset`` at ``size``³."""
    cfg = model_config(preset, size, **overrides)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        ae = build_autoencoder(cfg)
    return AutoencoderModel(cfg, _eval(ae, device))


def build_untrained(run_cfg: Any, seed: int = 0, device: torch.device = torch.device("cpu")) -> AutoencoderModel:
    """The architecture of an ``ldm-autoencoder`` run at a random initialisation drawn from ``seed``."""
    cfg = AutoencoderConfig.from_dict(run_cfg.model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        ae = build_autoencoder(cfg)
    return AutoencoderModel(cfg, _eval(ae, device), run_cfg, device, None)
