"""A trained (or freshly built) StyleGAN2 generator ready for sampling: what ``medgen.load`` returns for a
``stylegan2`` run.

Example::

    model = medgen.load("runs/sg2-64")                   # latest checkpoint, EMA generator
    x = model.generate(4, seed=0)                        # float32 [4, 64, 64, 64] in [-1, 1]
    x = model.generate(4, seed=0, truncation_psi=0.7)    # truncated towards the mean w
    x = model.generate(2, z=codes)                       # from given latent codes [2, latent_dim]

The generator's output is linear (the paper's) and clipped to [-1, 1]. Every layer's noise is one fixed draw
(:meth:`.networks.Generator.const_noise`, the authors' ``noise_mode='const'``; ``noise="none"`` leaves it out),
so a volume depends on its latent code alone and volume ``i`` of ``generate(n, seed)`` only on (seed, i)
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
from medgen.families.stylegan2.config import StyleGAN2Config, model_config
from medgen.families.stylegan2.networks import Generator
from medgen.families.unet.model import seeded_network, trained_network


@dataclass
class StyleGAN2Model:
    """``generator``: G (EMA weights when the run has them) in eval mode, with the w_avg it tracked in training;
    ``config``: its :class:`StyleGAN2Config`; ``run_config``: the training run's (None for :func:`build`)."""

    config: StyleGAN2Config
    generator: Generator
    run_config: Any = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    checkpoint: Path | None = None

    @property
    def preprocess(self) -> dict[str, Any]:
        return dict(getattr(self.run_config, "preprocess", None) or {})

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
        truncation_psi: float = 1.0,
        noise: str = "const",
    ) -> np.ndarray:
        """``n`` volumes, float32 [n, S, S, S] in [-1, 1] (HU with ``hu=True``, CT only).

        ``z``: latent codes [n, latent_dim] instead of those drawn from ``seed``; ``indices``: which volumes of
        ``seed``'s sequence to make (default 0…n-1); ``truncation_psi``: w moved towards the mean w of training,
        w_avg + ψ·(w − w_avg) (1: no truncation, 0: every volume the mean one); ``noise``: "const" (the fixed
        draw) or "none". ``labels`` and ``chunk`` do not apply (unconditional, whole-volume generator).
        """
        from medgen.inference.generate import check_labels, requested_codes

        check_labels(labels, n, 0)
        if chunk:
            raise UsageError("--chunk applies to HA-GAN's G^H; the StyleGAN2 generator makes whole volumes")
        if noise not in ("const", "none"):
            raise UsageError(f"noise {noise!r}: choose const or none")
        codes = requested_codes(n, self.config.latent_dim, seed, z, indices)
        s = self.config.size
        out = np.empty((n, s, s, s), dtype=np.float32)
        step = max(1, batch_size)
        with torch.inference_mode():
            fixed = self.generator.const_noise(self.device) if noise == "const" else "none"
            for k in range(0, n, step):
                v = self.generator(torch.from_numpy(codes[k : k + step]).to(self.device), psi=float(truncation_psi),
                                   noise=fixed)
                out[k : k + step] = v[:, 0].float().clamp(-1, 1).cpu().numpy()
        return hounsfield_of(out, self.preprocess) if hu else out

    def to_hu(self, x: np.ndarray) -> np.ndarray:
        """Map [-1, 1] back to Hounsfield units with the training data's CT window (float32)."""
        return hounsfield_of(x, self.preprocess)


def load_model(run_cfg: Any, weights: dict[str, dict[str, torch.Tensor]], checkpoint: Path, device: torch.device,
               use_ema: bool = True) -> StyleGAN2Model:
    """The generator of a ``stylegan2`` run (its EMA copy unless ``use_ema`` is False)."""
    cfg = StyleGAN2Config.from_dict(run_cfg.model)
    G = trained_network(Generator(cfg), weights, "G", use_ema, checkpoint, device, what="generator")
    return StyleGAN2Model(cfg, G, run_cfg, device, checkpoint)


def build(preset: str = "tiny", size: int = 32, seed: int = 0, device: torch.device = torch.device("cpu"),
          encoder: bool = False, **overrides: Any) -> StyleGAN2Model:
    """An untrained generator (random initialisation drawn from ``seed``) of ``preset`` at ``size``³ (w_avg 0).

    ``encoder`` is accepted for the common interface (``medgen.build``); StyleGAN2 has none."""
    cfg = model_config(preset, size, **overrides)
    return StyleGAN2Model(cfg, seeded_network(lambda: Generator(cfg), seed, device), None, torch.device(device))


def build_untrained(run_cfg: Any, seed: int = 0, device: torch.device = torch.device("cpu")) -> StyleGAN2Model:
    """The architecture of a ``stylegan2`` run at a random initialisation drawn from ``seed`` (the baseline)."""
    cfg = StyleGAN2Config.from_dict(run_cfg.model)
    return StyleGAN2Model(cfg, seeded_network(lambda: Generator(cfg), seed, device), run_cfg, torch.device(device))
