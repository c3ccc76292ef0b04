"""A trained (or freshly built) latent diffusion model: what ``medgen.load`` returns for an ``ldm`` run.

Example::

    model = medgen.load("runs/ldm32")
    x = model.generate(4, seed=0, steps=50)                 # DDIM in latent space, then decoding: [4, 32, 32, 32]
    x = model.generate(1, seed=0, chunk=4)                  # decoded 4 latent slices at a time (bounded memory)
    x = model.generate(8, labels=3, guidance=2.0)           # class 3, guided (conditional models)
    z = model.encode(volumes)                               # the autoencoder's latents μ [n, C, S/4, S/4, S/4]
    x_rec = model.reconstruct(volumes, noise_level=0.25)    # latent noised to t = T/4, denoised, decoded
    anomaly_map = np.abs(volumes - x_rec)                   # what the model of normal anatomy cannot reproduce
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from medgen.core.errors import InputError, UsageError
from medgen.core.volume import hounsfield_of
from medgen.families.ddpm.model import reconstruction_labels, volume_labels
from medgen.families.ddpm.sample import (
    DEFAULT_NOISE_LEVEL,
    DEFAULT_SAMPLER,
    check_reconstruction,
    check_sampling,
    partial_reverse_process,
)
from medgen.families.ddpm.train import build_unet
from medgen.families.ldm.config import LDMConfig, model_config
from medgen.families.ldm.latents import LatentCodec
from medgen.families.ldm.train import build_codec, sample_volume
from medgen.families.ldm_autoencoder.model import AutoencoderModel


@dataclass
class LDMModel:
    """``unet``: the latent denoiser (EMA weights when the run has them); ``codec``: the frozen autoencoder and
    latent scale; ``config``: the :class:`LDMConfig`; ``run_config``: the training run's (None for :func:`build`)."""

    config: LDMConfig
    unet: torch.nn.Module
    codec: LatentCodec
    run_config: Any = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    checkpoint: Path | None = None

    @property
    def preprocess(self) -> dict[str, Any]:
        return dict(getattr(self.run_config, "preprocess", None) or {})

    @property
    def autoencoder(self) -> AutoencoderModel:
        """The stage-1 autoencoder as an :class:`AutoencoderModel` (encode, decode, reconstruct)."""
        return AutoencoderModel(self.config.autoencoder_config(), self.codec.autoencoder, self.run_config, self.device)

    @property
    def encoder(self) -> torch.nn.Module:
        """What ``medgen encode`` checks for: the autoencoder encodes."""
        return self.codec.autoencoder

    def encode(self, volumes: Any, batch_size: int = 1) -> np.ndarray:
        """The autoencoder's latent means μ of volumes in [-1, 1]: float32 [n, C, S/4, S/4, S/4] (unscaled)."""
        return self.autoencoder.encode(volumes, batch_size)

    def decode(self, latents: Any, chunk: int | None = None) -> np.ndarray:
        """Volumes float32 [n, S, S, S] in [-1, 1] decoded from (unscaled) autoencoder latents [n, C, s, s, s]."""
        return self.autoencoder.decode(latents, chunk=chunk)

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
        *,
        sampler: str = DEFAULT_SAMPLER,
        steps: int | None = None,
        guidance: float = 1.0,
        eta: float = 0.0,
        progress: Any = None,
    ) -> np.ndarray:
        """``n`` volumes, float32 [n, S, S, S] in [-1, 1] (HU with ``hu=True``, CT only).

        Sampling as the ``ddpm`` family's (``sampler``, ``steps``, ``guidance``, ``eta``,
        ``labels``, ``indices``), in latent space; then decoding, ``chunk`` latent slices at
        a time when given (equal to whole-volume decoding, in bounded memory).
        """
        if z is not None:
            raise UsageError("a latent diffusion model samples its latents from noise drawn from the seed; "
                             "decode given latents with .decode(z)")
        dcfg = self.config.diffusion()
        steps = check_sampling(dcfg, sampler, steps, guidance, eta)
        if chunk is not None and chunk < 1:
            raise UsageError(f"--chunk {chunk}: need at least 1 latent slice")
        idx = list(range(n)) if indices is None else [int(i) for i in indices]
        lab = volume_labels(labels, len(idx), self.config.num_classes)
        s = self.config.size
        out = np.empty((len(idx), s, s, s), dtype=np.float32)
        for j, i in enumerate(idx):
            out[j] = sample_volume(self.unet, self.codec, self.config, i, seed, label=None if lab is None else lab[j],
                                   sampler=sampler, steps=steps, guidance=guidance, eta=eta, chunk=chunk,
                                   device=self.device).numpy()
            if progress is not None:
                progress.update(1)
        return hounsfield_of(out, self.preprocess) if hu else out

    def reconstruct(
        self,
        volumes: Any,
        noise_level: float = DEFAULT_NOISE_LEVEL,
        steps: int | None = None,
        sampler: str = DEFAULT_SAMPLER,
        seed: int = 0,
        batch_size: int = 1,
        labels: int | Sequence[int] | None = None,
        *,
        guidance: float = 1.0,
        eta: float = 0.0,
        chunk: int | None = None,
        progress: Any = None,
        **ignored_kw: Any,
    ) -> np.ndarray:
        """The model's "healthy" reconstruction of volumes in [-1, 1]: float32 [n, S, S, S] in [-1, 1].

        Latent diffusion anomaly detection (Pinaya et al. 2022): each volume's scaled latent z₀ = scale · μ(x)
        (the frozen autoencoder) is noised to t = ``noise_level`` · T and denoised back to 0, then decoded
        (``chunk`` latent slices at a time when given). Parameters as the ``ddpm`` family's
        :meth:`~medgen.families.ddpm.model.DDPMModel.reconstruct` (``noise_level`` in (0, 1], ``steps``,
        ``sampler``, ``seed``, ``labels``, ``guidance``, ``eta``). Even at a small noise level the result
        carries the autoencoder's own reconstruction error (compare :attr:`autoencoder`'s ``reconstruct``).
        """
        from medgen.families.ldm_autoencoder.decode import decode_chunked
        from medgen.inference.encode import as_volume_batch

        x = as_volume_batch(volumes, self.config.size)
        dcfg = self.config.diffusion()
        check_reconstruction(dcfg, noise_level, sampler, steps, guidance, eta)
        if chunk is not None and chunk < 1:
            raise UsageError(f"--chunk {chunk}: need at least 1 latent slice")
        lab = reconstruction_labels(labels, len(x), self.config.num_classes, guidance)
        step = max(1, int(batch_size))
        s = self.config.size
        out = np.empty((len(x), s, s, s), dtype=np.float32)
        with torch.no_grad():
            for k in range(0, len(x), step):
                idx = list(range(k, min(k + step, len(x))))
                z0 = self.codec.encode(x[idx].to(self.device)).float()
                z = partial_reverse_process(self.unet, dcfg, z0, idx, seed, noise_level=noise_level,
                                            labels=None if lab is None else lab[k:k + len(idx)], sampler=sampler,
                                            steps=steps, guidance=guidance, eta=eta)
                for j, i in enumerate(idx):
                    zj = self.codec.unscale(z[j:j + 1])
                    rec = (decode_chunked(self.codec.autoencoder, zj, chunk, self.config.autoencoder_config().factor)
                           if chunk else self.codec.autoencoder.decode(zj))
                    out[i] = rec[0, 0].clamp(-1.0, 1.0).float().cpu().numpy()
                if progress is not None:
                    progress.update(len(idx))
        return out

    def to_hu(self, x: np.ndarray) -> np.ndarray:
        """Map [-1, 1] back to Hounsfield units with the training data's CT window (float32)."""
        return hounsfield_of(x, self.preprocess)


def _eval(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    return module.to(device).eval().requires_grad_(False)


def _load(module: torch.nn.Module, state: dict[str, torch.Tensor], what: str, checkpoint: Path) -> None:
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise InputError(f"{checkpoint}: weights do not fit the {what} in the run's config.yaml ({first})") from None


def load_model(run_cfg: Any, weights: dict[str, dict[str, torch.Tensor]], checkpoint: Path, device: torch.device,
               use_ema: bool = True) -> LDMModel:
    """The latent UNet (its EMA copy unless ``use_ema`` is False) and the autoencoder of an ``ldm`` run's checkpoint."""
    cfg = LDMConfig.from_dict(run_cfg.model)
    key = "unet_ema" if use_ema and "unet_ema" in weights else "unet"
    if key not in weights or "autoencoder" not in weights:
        raise InputError(f"{checkpoint}: the checkpoint holds no UNet or autoencoder weights")
    unet = build_unet(cfg.diffusion())
    _load(unet, weights[key], "latent UNet", checkpoint)
    codec = build_codec(cfg, weights=False)
    _load(codec, weights["autoencoder"], "autoencoder", checkpoint)
    if not codec.has_scale:
        raise InputError(f"{checkpoint}: the latent scale was never set (the run has not trained an iteration)")
    return LDMModel(cfg, _eval(unet, device), _eval(codec, device), run_cfg, device, checkpoint)


def _untrained(cfg: LDMConfig, seed: int, device: torch.device, run_cfg: Any = None) -> LDMModel:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = build_unet(cfg.diffusion())
        codec = build_codec(cfg, weights=run_cfg is not None)
    codec.scale.fill_(1.0)
    return LDMModel(cfg, _eval(unet, device), _eval(codec, device), run_cfg, device, None)


def build(preset: str = "tiny", size: int = 32, seed: int = 0, device: torch.device = torch.device("cpu"),
          encoder: bool = False, autoencoder_preset: str = "tiny", **overrides: Any) -> LDMModel:
    """An untrained latent diffusion model (UNet and autoencoder at random weights from ``seed``, latent scale 1)
    of ``preset`` at ``size``³, on an autoencoder of ``autoencoder_preset``."""
    from medgen.families.ldm_autoencoder.config import model_config as autoencoder_config

    overrides.setdefault("autoencoder", autoencoder_config(autoencoder_preset, size).to_dict())
    return _untrained(model_config(preset, size, **overrides), seed, device)


def build_untrained(run_cfg: Any, seed: int = 0, device: torch.device = torch.device("cpu")) -> LDMModel:
    """The run's latent UNet at a random initialisation drawn from ``seed``, on the run's trained autoencoder
    (the baseline: what the decoder makes of untrained diffusion)."""
    return _untrained(LDMConfig.from_dict(run_cfg.model), seed, device, run_cfg)

