"""A trained (or freshly built) α-GAN ready for sampling and encoding: what ``medgen.load`` returns.

Example::

    model = medgen.load("runs/alpha32")              # latest checkpoint, EMA generator
    x = model.generate(4, seed=0)                     # float32 [4, 32, 32, 32] in [-1, 1]
    z = model.encode(x)                               # float32 [4, latent_dim]
    x_rec = model.reconstruct(x)                      # G(E(x)), [4, 32, 32, 32]

``medgen encode RUN DATA`` loads the trained generator (not its EMA copy) unless ``--ema`` is given: the one
the encoder was trained with. Volume ``i`` of ``generate(n, seed)`` depends only on (seed, i)
(:func:`medgen.inference.generate.latent_codes`); BatchNorm layers use their running statistics, so a
volume's code and reconstruction depend on that volume alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from medgen.core.errors import UsageError
from medgen.families.alpha_gan.config import AlphaGANConfig, model_config
from medgen.families.alpha_gan.networks import Encoder
from medgen.families.dcgan3d import Generator, GeneratorModel, frozen, load_state


@dataclass
class AlphaGANModel(GeneratorModel):
    """The generator (``generate``, :class:`medgen.families.dcgan3d.GeneratorModel`) and the encoder
    (``encode``, ``reconstruct``; None for an untrained model built without one)."""

    encoder: nn.Module | None = None

    def encode(self, volumes: Any, batch_size: int = 1) -> np.ndarray:
        """Codes ẑ = E(x) of volumes in [-1, 1] ([S, S, S] or [n, S, S, S]): float32 [n, latent_dim]."""
        from medgen.inference.encode import as_volume_batch

        if self.encoder is None:
            raise UsageError("this model has no encoder: it cannot encode volumes")
        x = as_volume_batch(volumes, self.config.size)
        step = max(1, int(batch_size))
        parts = []
        with torch.inference_mode():
            for k in range(0, len(x), step):
                parts.append(self.encoder(x[k : k + step].to(self.device)).float().cpu().numpy())
        return np.concatenate(parts) if parts else np.empty((0, self.config.latent_dim), np.float32)

    def reconstruct(self, volumes: Any, labels: int | Sequence[int] | None = None, chunk: int | None = None,
                    batch_size: int = 1) -> np.ndarray:
        """G(E(x)) for volumes in [-1, 1]: float32 [n, S, S, S] in [-1, 1]."""
        z = self.encode(volumes, batch_size)
        return self.generate(len(z), labels=labels, chunk=chunk, batch_size=batch_size, z=z)


def load_model(run_cfg: Any, weights: dict[str, dict[str, torch.Tensor]], checkpoint: Path, device: torch.device,
               use_ema: bool = True) -> AlphaGANModel:
    """G (its EMA copy unless ``use_ema`` is False) and E of an ``alpha-gan`` run."""
    cfg = AlphaGANConfig.from_dict(run_cfg.model)
    g_key = "G_ema" if use_ema and "G_ema" in weights else "G"
    G = frozen(load_state(Generator(cfg), weights, g_key, checkpoint), device)
    E = frozen(load_state(Encoder(cfg), weights, "E", checkpoint), device)
    return AlphaGANModel(cfg, G, run_cfg, device, checkpoint, encoder=E)


def _seeded(cfg: AlphaGANConfig, seed: int, device: torch.device) -> tuple[nn.Module, nn.Module]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        G, E = Generator(cfg), Encoder(cfg)
    return frozen(G, device), frozen(E, device)


def build(preset: str = "tiny", size: int = 32, seed: int = 0, device: str | torch.device = "cpu",
          encoder: bool = True, **overrides: Any) -> AlphaGANModel:
    """An untrained G (and E unless ``encoder`` is False), random initialisation drawn from ``seed``, of
    ``preset`` at ``size``³."""
    cfg = model_config(preset, size, **overrides)
    dev = torch.device(device)
    G, E = _seeded(cfg, seed, dev)
    return AlphaGANModel(cfg, G, None, dev, None, encoder=E if encoder else None)


def build_untrained(run_cfg: Any, seed: int = 0, device: str | torch.device = "cpu") -> AlphaGANModel:
    """The architecture of an ``alpha-gan`` run at a random initialisation drawn from ``seed`` (the baseline)."""
    cfg = AlphaGANConfig.from_dict(run_cfg.model)
    dev = torch.device(device)
    G, E = _seeded(cfg, seed, dev)
    return AlphaGANModel(cfg, G, run_cfg, dev, None, encoder=E)
