"""A trained (or freshly built) autoencoder: what ``medgen.load`` returns for an ``autoencoder`` run.

Example::

    model = medgen.load("runs/ae64")                   # AutoencoderModel, or VariationalAutoencoderModel
    x_rec = model.reconstruct(volumes)                  # float32 [n, 64, 64, 64] in [-1, 1]
    anomaly_map = np.abs(volumes - x_rec)               # what `medgen anomaly` writes
    z = model.encode(volumes)                           # float32 [n, latent_dim]: the VAE's μ, the AE's bottleneck
    x = model.decode(z)                                 # float32 [n, 64, 64, 64]
    x = model.generate(4, seed=0)                       # the VAE only: decoded prior samples

Inference is deterministic: the network is in eval mode (BatchNorm, when chosen, uses its running
statistics) and the VAE encodes to μ and reconstructs D(μ), without a draw of ε. A plain AE has no prior
to sample: ``generate`` raises :class:`NoPriorError`, a UsageError, which is also an AttributeError so
that code asking whether a model samples (``getattr(model, "generate", None)``) hears no (``medgen
generate`` refuses the run; ``medgen report`` shows reconstructions instead of samples).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from medgen.core.errors import InputError, UsageError
from medgen.core.volume import hounsfield_of
from medgen.families.autoencoder.config import AEConfig, model_config
from medgen.families.autoencoder.networks import build_network
from medgen.families.autoencoder.train import NET
from medgen.inference.encode import as_volume_batch


class NoPriorError(UsageError, AttributeError):
    """Sampling asked of a plain autoencoder (a UsageError; an AttributeError too, see the module docstring)."""


@dataclass
class AutoencoderModel:
    """``network``: the autoencoder (:mod:`.networks`) in eval mode; ``config``: its :class:`AEConfig`;
    ``run_config``: the training run's configuration (None for :func:`build`)."""

    config: AEConfig
    network: nn.Module
    run_config: Any = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    checkpoint: Path | None = None

    def __getattr__(self, name: str) -> Any:
        if name in ("generate", "sample_latents"):
            raise NoPriorError("a plain autoencoder (variational: false) has no prior to sample volumes from; it "
                               "reconstructs, encodes and decodes them. Train the VAE (--recipe vae) to sample")
        raise AttributeError(name)

    @property
    def encoder(self) -> nn.Module:
        """What ``medgen encode`` checks for: this model encodes."""
        return self.network

    @property
    def preprocess(self) -> dict[str, Any]:
        """The training data's preprocessing record (modality, CT window, size, ...); {} if unknown."""
        return dict(getattr(self.run_config, "preprocess", None) or {})

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return self.config.latent_shape

    def _batches(self, x: torch.Tensor, batch_size: int):
        step = max(1, int(batch_size))
        for k in range(0, len(x), step):
            yield x[k : k + step].to(self.device)

    def _codes(self, x: torch.Tensor) -> torch.Tensor:
        """The code of a batch on the device: the AE's bottleneck [b, C, s, s, s], the VAE's μ [b, latent_size]."""
        if self.config.variational:
            return self.network.encode(x)[0]
        return self.network.encode(x)

    def encode(self, volumes: Any, batch_size: int = 1) -> np.ndarray:
        """Codes of volumes in [-1, 1] ([S, S, S], [n, S, S, S] or [n, 1, S, S, S]): float32 [n, latent_dim]
        (the VAE's posterior means μ; the AE's bottleneck, flattened)."""
        x = as_volume_batch(volumes, self.config.size)
        parts = []
        with torch.inference_mode():
            for xb in self._batches(x, batch_size):
                parts.append(self._codes(xb).flatten(1).float().cpu().numpy())
        return np.concatenate(parts) if parts else np.empty((0, self.config.latent_dim), np.float32)

    def decode(self, latents: Any, chunk: int | None = None, batch_size: int = 1) -> np.ndarray:
        """Volumes float32 [n, S, S, S] in [-1, 1] decoded from codes [n, latent_dim] (or [latent_dim]) as
        ``encode`` returns them. ``chunk`` exists for the common interface: the decoder makes whole volumes."""
        if chunk:
            raise UsageError("--chunk applies to HA-GAN's G^H and the latent-diffusion decoder; this autoencoder "
                             "decodes whole volumes")
        z = latents if isinstance(latents, torch.Tensor) else torch.as_tensor(np.asarray(latents, dtype=np.float32))
        if z.dim() == 1:
            z = z[None]
        d = self.config.latent_dim
        if z.dim() != 2 or z.shape[1] != d:
            raise UsageError(f"latents of shape {tuple(z.shape)}: this autoencoder's codes are {d} values per volume")
        z = z.float().reshape(len(z), *self.config.latent_shape)
        s = self.config.size
        out = np.empty((len(z), s, s, s), dtype=np.float32)
        k = 0
        with torch.inference_mode():
            for zb in self._batches(z, batch_size):
                out[k : k + len(zb)] = self.network.decode(zb)[:, 0].float().cpu().numpy()
                k += len(zb)
        return out

    def reconstruct(self, volumes: Any, batch_size: int = 1, **ignored_kw: Any) -> np.ndarray:
        """decode(encode(volumes)) in one pass: float32 [n, S, S, S] in [-1, 1], deterministic (the VAE decodes μ).

        Keyword arguments other than ``batch_size`` (e.g. ``labels``, ``chunk``, which other families'
        reconstructions take) do not apply and are ignored."""
        x = as_volume_batch(volumes, self.config.size)
        s = self.config.size
        out = np.empty((len(x), s, s, s), dtype=np.float32)
        k = 0
        with torch.inference_mode():
            for xb in self._batches(x, batch_size):
                out[k : k + len(xb)] = self.network.decode(self._codes(xb))[:, 0].float().cpu().numpy()
                k += len(xb)
        return out

    def to_hu(self, x: np.ndarray) -> np.ndarray:
        """Map [-1, 1] back to Hounsfield units with the training data's CT window (float32)."""
        return hounsfield_of(x, self.preprocess)


@dataclass
class VariationalAutoencoderModel(AutoencoderModel):
    """The VAE: :class:`AutoencoderModel`'s reconstruction, encoding (μ) and decoding, and sampling of its prior."""

    def sample_latents(self, n: int, seed: int = 0, start: int = 0) -> np.ndarray:
        """Prior samples z ~ N(0, I) of volumes start … start+n-1 for ``seed``: float32 [n, latent_size]
        (:func:`medgen.inference.generate.latent_codes`: volume i depends only on (seed, i))."""
        from medgen.inference.generate import latent_codes

        return latent_codes(n, self.config.latent_size, seed, start)

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
        """``n`` volumes decoded from prior samples, float32 [n, S, S, S] in [-1, 1] (HU with ``hu=True``, CT only).

        ``z``: latents [n, latent_size] instead of those drawn from ``seed``; ``indices``: which volumes of
        ``seed``'s sequence (default 0…n-1). The model is unconditional (``labels`` must be None).
        """
        from medgen.inference.generate import check_labels, requested_codes

        check_labels(labels, n, 0)
        codes = requested_codes(n, self.config.latent_size, seed, z, indices)
        out = self.decode(codes, chunk=chunk, batch_size=batch_size)
        return self.to_hu(out) if hu else out


def _model(cfg: AEConfig, network: nn.Module, run_cfg: Any, device: torch.device,
           checkpoint: Path | None) -> AutoencoderModel:
    cls = VariationalAutoencoderModel if cfg.variational else AutoencoderModel
    return cls(cfg, network.to(device).eval().requires_grad_(False), run_cfg, torch.device(device), checkpoint)


def _untrained(cfg: AEConfig, seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_network(cfg)


def load_model(run_cfg: Any, weights: dict[str, dict[str, torch.Tensor]], checkpoint: Path, device: torch.device,
               use_ema: bool = True) -> AutoencoderModel:
    """The autoencoder of an ``autoencoder`` run (it has no EMA copy: ``use_ema`` does not apply)."""
    cfg = AEConfig.from_dict(run_cfg.model)
    if NET not in weights:
        raise InputError(f"{checkpoint}: the checkpoint holds no {NET!r} weights")
    network = build_network(cfg)
    try:
        network.load_state_dict(weights[NET])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise InputError(f"{checkpoint}: weights do not fit the autoencoder in the run's config.yaml "
                         f"({first})") from None
    return _model(cfg, network, run_cfg, device, checkpoint)


def build(preset: str = "tiny", size: int = 32, seed: int = 0, device: torch.device = torch.device("cpu"),
          **overrides: Any) -> AutoencoderModel:
    """An untrained model (random initialisation drawn from ``seed``) of ``preset`` at ``size``³
    (``variational=True`` for the VAE)."""
    overrides.pop("encoder", None)  # every autoencoder has its encoder
    cfg = model_config(preset, size, **overrides)
    return _model(cfg, _untrained(cfg, seed), None, device, None)


def build_untrained(run_cfg: Any, seed: int = 0, device: torch.device = torch.device("cpu")) -> AutoencoderModel:
    """The architecture of an ``autoencoder`` run at a random initialisation drawn from ``seed``."""
    cfg = AEConfig.from_dict(run_cfg.model)
    return _model(cfg, _untrained(cfg, seed), run_cfg, device, None)
