"""A trained (or freshly built) PGGAN ready for sampling: what ``medgen.load`` returns for a ``pggan`` run.

Example::

    model = medgen.load("runs/pggan32")            # latest checkpoint, EMA generator
    x = model.generate(4, seed=0)                   # float32 [4, 32, 32, 32] in [-1, 1]
    model.resolution, model.alpha                   # where the growth was when the checkpoint was saved

A run that ended before reaching the last level (or mid-fade) generates at the level and α it had reached,
upsampled to the full size by nearest neighbour, as the fade-in upsamples; the generator's output is linear
(the paper's) and clipped to [-1, 1]. Volume ``i`` of ``generate(n, seed)`` depends only on (seed, i)
(:func:`medgen.inference.generate.latent_codes`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from medgen.core.errors import UsageError
from medgen.core.volume import hounsfield_of
from medgen.families.pggan.config import PGGANConfig, model_config
from medgen.families.pggan.networks import Generator
from medgen.families.unet.model import seeded_network, trained_network


@dataclass
class PGGANModel:
    """``generator``: G (EMA weights when the run has them) in eval mode, with the level and α reached in
    training; ``config``: its :class:`PGGANConfig`; ``run_config``: the training run's (None for :func:`build`)."""

    config: PGGANConfig
    generator: Generator
    run_config: Any = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    checkpoint: Path | None = None

    @property
    def preprocess(self) -> dict[str, Any]:
        return dict(getattr(self.run_config, "preprocess", None) or {})

    @property
    def level(self) -> int:
        return self.generator.state[0]

    @property
    def alpha(self) -> float:
        return self.generator.state[1]

    @property
    def resolution(self) -> int:
        """Edge of the volumes G makes before upsampling to ``config.size``."""
        return self.config.resolution(self.level)

    def sample_latents(self, n: int, seed: int = 0, start: int = 0) -> np.ndarray:
        """Latent codes of volumes start … start+n-1 for ``seed``: float32 [n, latent_dim]."""
        from medgen.inference.generate import latent_codes

        return latent_codes(n, self.config.latent_dim, seed, start)

    def generate(
        self,
        n: int,
        seed: int = 0,
        labels: int | Sequence[int] | None = None,
        chunk: int | None = None,
        batch_size: int = 1,
        hu: bool = False,
        z: Any = None,
        indices: Sequence[int] | None = None,
    ) -> np.ndarray:
        """``n`` volumes, float32 [n, S, S, S] in [-1, 1] (HU with ``hu=True``, CT only).

        ``z``: latent codes [n, latent_dim] instead of those drawn from ``seed``; ``indices``: which volumes of
        ``seed``'s sequence to make (default 0…n-1). ``labels`` and ``chunk`` do not apply (unconditional,
        whole-volume generator).
        """
        from medgen.inference.generate import check_labels, requested_codes

        check_labels(labels, n, 0)
        if chunk:
            raise UsageError("--chunk applies to HA-GAN's G^H; the PGGAN generator makes whole volumes")
        codes = requested_codes(n, self.config.latent_dim, seed, z, indices)
        s = self.config.size
        out = np.empty((n, s, s, s), dtype=np.float32)
        step = max(1, batch_size)
        for k in range(0, n, step):
            with torch.inference_mode():
                v = self.generator.generate(torch.from_numpy(codes[k : k + step]).to(self.device))
            out[k : k + step] = v[:, 0].float().clamp(-1, 1).cpu().numpy()
        return hounsfield_of(out, self.preprocess) if hu else out

    def to_hu(self, x: np.ndarray) -> np.ndarray:
        """Map [-1, 1] back to Hounsfield units with the training data's CT window (float32)."""
        return hounsfield_of(x, self.preprocess)


def load_model(run_cfg: Any, weights: dict[str, dict[str, torch.Tensor]], checkpoint: Path, device: torch.device,
               use_ema: bool = True) -> PGGANModel:
    """The generator of a ``pggan`` run (its EMA copy unless ``use_ema`` is False), with the growth it reached."""
    cfg = PGGANConfig.from_dict(run_cfg.model)
    G = trained_network(Generator(cfg), weights, "G", use_ema, checkpoint, device, what="generator")
    return PGGANModel(cfg, G, run_cfg, device, checkpoint)


def build(preset: str = "tiny", size: int = 32, seed: int = 0, device: torch.device = torch.device("cpu"),
          encoder: bool = False, **overrides: Any) -> PGGANModel:
    """An untrained generator (random initialisation drawn from ``seed``) of ``preset`` at ``size``³, at its
    last level."""
    cfg = model_config(preset, size, **overrides)
    return PGGANModel(cfg, seeded_network(lambda: Generator(cfg), seed, device), None, torch.device(device))


def build_untrained(run_cfg: Any, seed: int = 0, device: torch.device = torch.device("cpu")) -> PGGANModel:
    """The architecture of a ``pggan`` run at a random initialisation drawn from ``seed`` (the baseline), at
    its last level."""
    cfg = PGGANConfig.from_dict(run_cfg.model)
    return PGGANModel(cfg, seeded_network(lambda: Generator(cfg), seed, device), run_cfg, torch.device(device))
