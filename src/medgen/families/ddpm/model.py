"""A trained (or freshly built) DDPM ready for sampling: what ``medgen.load`` returns for a ``ddpm`` run.

Example::

    model = medgen.load("runs/ddpm32")
    x = model.generate(4, seed=0, steps=50)                    # DDIM, float32 [4, 32, 32, 32] in [-1, 1]
    x = model.generate(4, seed=0, sampler="ddpm")              # all training timesteps
    x = model.generate(8, labels=3, guidance=2.0)              # class 3, guided (conditional models)
    x_rec = model.reconstruct(volumes, noise_level=0.25, steps=13)  # noised to t = T/4, DDIM back to 0
    anomaly_map = np.abs(volumes - x_rec)                      # AnoDDPM: what the model cannot reproduce
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from medgen.core.errors import InputError, UsageError
from medgen.core.volume import hounsfield_of
from medgen.families.ddpm.config import DDPMConfig, model_config
from medgen.families.ddpm.sample import (
    DEFAULT_NOISE_LEVEL,
    DEFAULT_SAMPLER,
    check_reconstruction,
    partial_reverse_process,
    sample_volumes,
)
from medgen.families.ddpm.train import build_unet


def volume_labels(labels: int | Sequence[int] | None, n: int, num_classes: int) -> list[int] | None:
    """One class per volume: as given, one for all, or (conditional models) volume i gets i mod K."""
    if num_classes == 0:
        if labels is not None:
            raise UsageError("this model is unconditional (trained without classes): a label cannot be given")
        return None
    if labels is None:
        return [i % num_classes for i in range(n)]
    arr = [int(v) for v in np.asarray(labels).reshape(-1)]
    if len(arr) == 1:
        arr = arr * n
    if len(arr) != n:
        raise UsageError(f"got {len(arr)} labels for {n} volumes")
    bad = [v for v in arr if not 0 <= v < num_classes]
    if bad:
        raise UsageError(f"label {bad[0]} is out of range: this model has classes 0..{num_classes - 1}")
    return arr


def reconstruction_labels(labels: int | Sequence[int] | None, n: int, num_classes: int,
                          guidance: float) -> list[int] | None:
    """The class of each of ``n`` volumes to reconstruct: as given (one for all, or one per volume); for a
    conditional model without labels, the "no class" entry K (the unconditional denoiser, which
    classifier-free guidance trains), which takes no guidance weight."""
    if num_classes > 0 and labels is None:
        if guidance != 1.0:
            raise UsageError("--guidance needs the volumes' labels (without them the unconditional denoiser is used)")
        return [num_classes] * n
    return volume_labels(labels, n, num_classes)


@dataclass
class DDPMModel:
    """``unet``: the denoiser (EMA weights when the run has them), in eval mode; ``config``: its
    :class:`DDPMConfig`; ``run_config``: the training run's configuration (None for :func:`build`)."""

    config: DDPMConfig
    unet: torch.nn.Module
    run_config: Any = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    checkpoint: Path | None = None

    @property
    def preprocess(self) -> dict[str, Any]:
        return dict(getattr(self.run_config, "preprocess", None) or {})

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

        ``sampler``: ddim (default, ``steps`` strided steps, 50 by default) or ddpm (all
        training timesteps). ``guidance``: classifier-free guidance weight (0 unconditional,
        1 conditional, > 1 stronger class). ``labels``: one class for all, or one per volume
        (default: volume i gets class i mod K). ``indices``: which volumes of ``seed``'s
        sequence to make (default 0…n-1). ``chunk`` and ``batch_size`` are accepted for the
        common interface; the UNet runs on whole volumes, one at a time. ``z`` (latent codes)
        does not apply to a diffusion model.
        """
        if z is not None:
            raise UsageError("a diffusion model has no latent code z (its input is noise drawn from the seed)")
        if chunk:
            raise UsageError("--chunk applies to HA-GAN's G^H; the DDPM UNet runs on whole volumes")
        idx = list(range(n)) if indices is None else [int(i) for i in indices]
        lab = volume_labels(labels, len(idx), self.config.num_classes)
        out = sample_volumes(self.unet, self.config, idx, seed, labels=lab, sampler=sampler, steps=steps,
                             guidance=guidance, eta=eta, device=self.device, progress=progress)
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
        progress: Any = None,
        **ignored_kw: Any,
    ) -> np.ndarray:
        """The model's "healthy" reconstruction of volumes in [-1, 1]: float32 [n, S, S, S] in [-1, 1].

        Diffusion anomaly detection (AnoDDPM, Wyatt et al. 2022): each volume x is noised to
        t = ``noise_level`` · T of the forward process (x_t = sqrt(ᾱ_t)·x + sqrt(1 − ᾱ_t)·ε, ε volume i's
        noise of ``seed``) and denoised from t back to 0; |x − x̂| is the anomaly map.

        ``volumes``: [S, S, S], [n, S, S, S] or [n, 1, S, S, S]. ``noise_level``: t/T in (0, 1] (small: close
        to the input, anomalies survive; 1: a new sample from pure noise); the default 0.25.
        ``steps``: denoising steps over [0, t]; the ``ddpm`` sampler runs all t, ``ddim`` (default, deterministic
        with ``eta`` 0) defaults to ceil(50 · t / T), the default sampling steps' share of the chain.
        ``labels``: conditional models, one class for all or one per volume, with ``guidance`` as in
        :meth:`generate`; without labels the unconditional denoiser ("no class") is used.
        ``batch_size``: volumes per UNet call (a volume's result does not depend on it).
        Other keywords (``chunk``, … of other families' ``reconstruct``) are accepted and ignored.
        """
        from medgen.inference.encode import as_volume_batch

        x = as_volume_batch(volumes, self.config.size)
        check_reconstruction(self.config, noise_level, sampler, steps, guidance, eta)
        lab = reconstruction_labels(labels, len(x), self.config.num_classes, guidance)
        step = max(1, int(batch_size))
        out = np.empty((len(x), *x.shape[2:]), dtype=np.float32)
        for k in range(0, len(x), step):
            idx = list(range(k, min(k + step, len(x))))
            rec = partial_reverse_process(self.unet, self.config, x[idx].to(self.device), idx, seed,
                                          noise_level=noise_level, labels=None if lab is None else lab[k:k + len(idx)],
                                          sampler=sampler, steps=steps, guidance=guidance, eta=eta)
            out[idx] = rec[:, 0].clamp(-1.0, 1.0).float().cpu().numpy()
            if progress is not None:
                progress.update(len(idx))
        return out

    def to_hu(self, x: np.ndarray) -> np.ndarray:
        """Map [-1, 1] back to Hounsfield units with the training data's CT window (float32)."""
        return hounsfield_of(x, self.preprocess)


def _eval(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    return module.to(device).eval().requires_grad_(False)


def load_model(run_cfg: Any, weights: dict[str, dict[str, torch.Tensor]], checkpoint: Path, device: torch.device,
               use_ema: bool = True) -> DDPMModel:
    """The denoiser of a ``ddpm`` run (its EMA copy unless ``use_ema`` is False)."""
    cfg = DDPMConfig.from_dict(run_cfg.model)
    key = "unet_ema" if use_ema and "unet_ema" in weights else "unet"
    if key not in weights:
        raise InputError(f"{checkpoint}: the checkpoint holds no UNet weights")
    unet = build_unet(cfg)
    try:
        unet.load_state_dict(weights[key])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise InputError(f"{checkpoint}: weights do not fit the UNet in the run's config.yaml ({first})") from None
    return DDPMModel(cfg, _eval(unet, device), run_cfg, device, checkpoint)


def build(preset: str = "tiny", size: int = 32, seed: int = 0, device: torch.device = torch.device("cpu"),
          encoder: bool = False, **overrides: Any) -> DDPMModel:
    """An untrained denoiser (random initialisation drawn from ``seed``) of ``preset`` at ``size``³."""
    cfg = model_config(preset, size, **overrides)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = build_unet(cfg)
    return DDPMModel(cfg, _eval(unet, device))


def build_untrained(run_cfg: Any, seed: int = 0, device: torch.device = torch.device("cpu")) -> DDPMModel:
    """The architecture of a ``ddpm`` run at a random initialisation drawn from ``seed`` (the baseline)."""
    cfg = DDPMConfig.from_dict(run_cfg.model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = build_unet(cfg)
    return DDPMModel(cfg, _eval(unet, device), run_cfg, device, None)
