"""A trained (or freshly built) VAE-GAN: what ``medgen.load`` returns for a ``vae-gan`` run.

Example::

    model = medgen.load("runs/vaegan64")               # latest checkpoint, EMA generator
    x = model.generate(4, seed=0)                       # prior samples, float32 [4, 64, 64, 64] in [-1, 1]
    z = model.encode(x)                                 # float32 [4, latent_dim]: the posterior means μ
    x_rec = model.reconstruct(x)                        # G(μ), [4, 64, 64, 64]

``medgen encode RUN DATA`` writes the μ of every volume (and with ``--reconstruct`` G(μ)); it
loads the generator the encoder was trained with (not its EMA copy) unless asked otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from medgen.core.errors import UsageError
from medgen.families.dcgan3d import Generator, GeneratorModel, frozen, load_state
from medgen.families.vae_gan.config import VAEGANConfig, model_config
from medgen.families.vae_gan.networks import Encoder


@dataclass
class VAEGANModel(GeneratorModel):
    """The generator (``generate``, :class:`medgen.families.dcgan3d.GeneratorModel`) and the encoder
    (``encode``, ``reconstruct``; None for an untrained baseline built from a run)."""

    encoder: nn.Module | None = None

    def encode(self, volumes: Any, batch_size: int = 1) -> np.ndarray:
        """Posterior means μ of volumes in [-1, 1] ([S, S, S] or [n, S, S, S]): float32 [n, latent_dim].

        Deterministic (no draw of ε; BatchNorm uses its running statistics), so each volume's code depends
        on that volume alone.
        """
        from medgen.inference.encode import as_volume_batch

        if self.encoder is None:
            raise UsageError("this model has no encoder (an untrained baseline): it cannot encode volumes")
        x = as_volume_batch(volumes, self.config.size)
        step = max(1, int(batch_size))
        parts = []
        with torch.inference_mode():
            for k in range(0, len(x), step):
                mu, _ = self.encoder(x[k : k + step].to(self.device))
                parts.append(mu.float().cpu().numpy())
        return np.concatenate(parts) if parts else np.empty((0, self.config.latent_dim), np.float32)

    def reconstruct(self, volumes: Any, labels: int | Sequence[int] | None = None, chunk: int | None = None,
                    batch_size: int = 1) -> np.ndarray:
        """G(μ(x)) for volumes in [-1, 1]: float32 [n, S, S, S] in [-1, 1]."""
        z = self.encode(volumes, batch_size)
        return self.generate(len(z), labels=labels, chunk=chunk, batch_size=batch_size, z=z)


def load_model(run_cfg: Any, weights: dict[str, dict[str, torch.Tensor]], checkpoint: Path, device: torch.device,
               use_ema: bool = True) -> VAEGANModel:
    """The generator (its EMA copy unless ``use_ema`` is False) and the encoder of a ``vae-gan`` run."""
    cfg = VAEGANConfig.from_dict(run_cfg.model)
    key = "G_ema" if use_ema and "G_ema" in weights else "G"
    generator = load_state(Generator(cfg), weights, key, checkpoint)
    encoder = load_state(Encoder(cfg), weights, "E", checkpoint)
    return VAEGANModel(cfg, frozen(generator, device), run_cfg, device, checkpoint, frozen(encoder, device))


def build(preset: str = "tiny", size: int = 32, seed: int = 0, device: torch.device = torch.device("cpu"),
          encoder: bool = True, **overrides: Any) -> VAEGANModel:
    """An untrained model (random initialisation drawn from ``seed``) of ``preset`` at ``size``³."""
    cfg = model_config(preset, size, **overrides)
    dev = torch.device(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        generator = Generator(cfg)
        enc = Encoder(cfg) if encoder else None
    return VAEGANModel(cfg, frozen(generator, dev), None, dev, None, None if enc is None else frozen(enc, dev))


def build_untrained(run_cfg: Any, seed: int = 0, device: torch.device = torch.device("cpu")) -> VAEGANModel:
    """The generator of a ``vae-gan`` run at a random initialisation drawn from ``seed`` (the baseline; no encoder)."""
    cfg = VAEGANConfig.from_dict(run_cfg.model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        generator = Generator(cfg)
    return VAEGANModel(cfg, frozen(generator, device), run_cfg, device, None)
