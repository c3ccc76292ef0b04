"""A trained (or freshly built) f-AnoGAN: what ``medgen.load`` returns for a ``fanogan`` run.

Example::

    model = medgen.load("runs/fanogan32")
    z = model.encode(volumes)                       # E(x): float32 [n, latent_dim]
    x_rec = model.reconstruct(volumes)              # G(E(x)): float32 [n, S, S, S] in [-1, 1]
    out = model.anomaly(volumes)                    # f-AnoGAN's score, voxel map and reconstruction
    out["score"], out["map"], out["reconstruction"]  # [n], [n, S, S, S], [n, S, S, S]

Volumes are [S, S, S], [n, S, S, S] or [n, 1, S, S, S] in [-1, 1] (numpy or torch).

``anomaly``'s ``score`` is f-AnoGAN's A(x) = (1/n_x)‖x − x̂‖² + κ·(1/n_f)‖f(x) − f(x̂)‖² per volume
(the two terms of the training loss, with the run's κ; also given apart as ``score_image`` and
``score_feature``); its ``map`` is the voxel residual |x − x̂| (absolute, in [-1, 1] units; the
mean of its square is ``score_image``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medgen.core.errors import InputError
from medgen.core.volume import hounsfield_of
from medgen.families.fanogan.config import FAnoGANConfig, model_config
from medgen.families.fanogan.losses import izif_terms
from medgen.families.fanogan.networks import FrozenDiscriminator, FrozenGenerator, discriminator_features
from medgen.families.fanogan.train import FAnoGANHParams, build_gan, load_into
from medgen.families.hagan.encoder import Encoder
from medgen.inference.encode import as_volume_batch


@dataclass
class FAnoGANModel:
    """``encoder``: E (E^H, E^G); ``generator``, ``discriminator``: the frozen HA-GAN G and D; ``kappa``: κ of the
    score; ``config``: the :class:`FAnoGANConfig`; ``run_config``: the training run's (None for :func:`build`)."""

    config: FAnoGANConfig
    encoder: Encoder
    generator: FrozenGenerator
    discriminator: FrozenDiscriminator
    kappa: float = 1.0
    run_config: Any = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    checkpoint: Path | None = None

    @property
    def preprocess(self) -> dict[str, Any]:
        return dict(getattr(self.run_config, "preprocess", None) or {})

    def _batches(self, volumes: Any, batch_size: int):
        x = as_volume_batch(volumes, self.config.size)
        step = max(1, int(batch_size))
        for k in range(0, len(x), step):
            yield x[k : k + step].to(self.device)

    def _check_chunk(self, chunk: int | None) -> int | None:
        from medgen.inference.generate import check_chunk

        return check_chunk(chunk, self.config.gan_config().lowres_size)

    def encode(self, volumes: Any, batch_size: int = 1) -> np.ndarray:
        """E(x) of volumes in [-1, 1]: float32 [n, latent_dim]."""
        parts = []
        with torch.inference_mode():
            for x in self._batches(volumes, batch_size):
                parts.append(self.encoder.encode(x).float().cpu().numpy())
        return np.concatenate(parts)

    def reconstruct(self, volumes: Any, batch_size: int = 1, chunk: int | None = None, **ignored_kw: Any) -> np.ndarray:
        """G(E(x)) of volumes in [-1, 1]: float32 [n, S, S, S] in [-1, 1]. ``chunk``: run G^H on depth chunks of
        this many feature-map slices (bounded memory, the same volumes up to float rounding); other keyword
        arguments (options of other families' reconstructions) are ignored."""
        chunk = self._check_chunk(chunk)
        parts = []
        with torch.inference_mode():
            for x in self._batches(volumes, batch_size):
                parts.append(self.generator.generate(self.encoder.encode(x), None, chunk)[:, 0].float().cpu().numpy())
        return np.concatenate(parts)

    def anomaly(self, volumes: Any, batch_size: int = 1, chunk: int | None = None) -> dict[str, np.ndarray]:
        """f-AnoGAN's anomaly score, voxel map and reconstruction of volumes in [-1, 1] (module docstring).

        Returns ``score`` [n], ``map`` [n, S, S, S] (|x − x̂|), ``reconstruction`` [n, S, S, S] (x̂ = G(E(x))),
        ``score_image`` and ``score_feature`` [n] (the two residual terms; score = image + κ·feature).
        """
        chunk = self._check_chunk(chunk)
        image, feature, maps, recs = [], [], [], []
        with torch.inference_mode():
            for x in self._batches(volumes, batch_size):
                x_rec = self.generator.generate(self.encoder.encode(x), None, chunk).float()
                a, b = izif_terms(x, x_rec, lambda v: discriminator_features(self.discriminator, v))
                image.append(a.cpu().numpy())
                feature.append(b.cpu().numpy())
                maps.append((x - x_rec).abs()[:, 0].cpu().numpy())
                recs.append(x_rec[:, 0].cpu().numpy())
        score_image = np.concatenate(image).astype(np.float32)
        score_feature = np.concatenate(feature).astype(np.float32)
        return {"score": (score_image + np.float32(self.kappa) * score_feature).astype(np.float32),
                "map": np.concatenate(maps).astype(np.float32), "reconstruction": np.concatenate(recs),
                "score_image": score_image, "score_feature": score_feature}

    def to_hu(self, x: np.ndarray) -> np.ndarray:
        """Map [-1, 1] back to Hounsfield units with the training data's CT window (float32)."""
        return hounsfield_of(x, self.preprocess)


def _eval(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    return module.to(device).eval().requires_grad_(False)


def _model(cfg: FAnoGANConfig, nets: dict[str, torch.nn.Module], kappa: float, run_cfg: Any, device: torch.device,
           checkpoint: Path | None) -> FAnoGANModel:
    return FAnoGANModel(cfg, _eval(nets["E"], device), _eval(nets["G"], device), _eval(nets["D"], device),
                        float(kappa), run_cfg, device, checkpoint)


def _kappa(run_cfg: Any) -> float:
    return FAnoGANHParams.from_dict(dict(getattr(run_cfg, "hparams", None) or {})).kappa


def load_model(run_cfg: Any, weights: dict[str, dict[str, torch.Tensor]], checkpoint: Path, device: torch.device,
               use_ema: bool = True) -> FAnoGANModel:
    """E and the frozen G and D of a ``fanogan`` run's checkpoint (E has no EMA copy)."""
    cfg = FAnoGANConfig.from_dict(run_cfg.model)
    missing = [k for k in ("E", "G", "D") if k not in weights]
    if missing:
        raise InputError(f"{checkpoint}: the checkpoint holds no {', '.join(missing)} weights")
    nets = build_gan(cfg, weights=False)
    for key, what in (("E", "encoder"), ("G", "HA-GAN generator"), ("D", "HA-GAN discriminator")):
        load_into(nets[key], weights[key], what, checkpoint)
    return _model(cfg, nets, _kappa(run_cfg), run_cfg, device, checkpoint)


def _untrained(cfg: FAnoGANConfig, seed: int, device: torch.device, kappa: float, run_cfg: Any = None,
               gan_weights: bool = False) -> FAnoGANModel:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        nets = build_gan(cfg, encoder_init="random", weights=gan_weights)
    return _model(cfg, nets, kappa, run_cfg, device, None)


def build(preset: str = "tiny", size: int = 32, seed: int = 0, device: torch.device = torch.device("cpu"),
          encoder: bool = True, generator_preset: str = "tiny", kappa: float = 1.0, **overrides: Any) -> FAnoGANModel:
    """An untrained f-AnoGAN (E, G and D at random weights from ``seed``) at ``size``³, on an HA-GAN of
    ``generator_preset``; with ``generator_run``: E at random weights on that HA-GAN run's G and D.
    (``encoder``: ignored; an f-AnoGAN model always has its encoder.)"""
    from medgen.families.hagan.config import get_preset

    if "generator_run" not in overrides:
        overrides.setdefault("generator", get_preset(generator_preset, size).to_dict())
    cfg = model_config(preset, size, **overrides)
    return _untrained(cfg, seed, torch.device(device), kappa, gan_weights=bool(cfg.generator_checkpoint))


def build_untrained(run_cfg: Any, seed: int = 0, device: torch.device = torch.device("cpu")) -> FAnoGANModel:
    """The run's encoder at a random initialisation drawn from ``seed``, on the run's trained HA-GAN G and D
    (the baseline: what the frozen GAN makes of an untrained encoder)."""
    return _untrained(FAnoGANConfig.from_dict(run_cfg.model), seed, device, _kappa(run_cfg), run_cfg,
                      gan_weights=True)
