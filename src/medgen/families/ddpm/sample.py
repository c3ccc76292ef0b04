"""The reverse diffusion process: noise → volume with MONAI's DDPM or DDIM steps, and classifier-free guidance.

``sampler="ddpm"`` runs all ``num_train_timesteps`` ancestral steps of Ho et al. (2020)
(MONAI ``DDPMScheduler``, variance β̃_t); ``sampler="ddim"`` runs ``steps`` strided steps of
Song et al. (2021) (MONAI ``DDIMScheduler``; ``eta`` 0 is deterministic given the initial
noise, ``eta`` 1 draws fresh noise like DDPM). Predicted x₀ is clipped to [-1, 1] at every
step (the data's range).

Guidance (Ho & Salimans 2021), for a conditional UNet: ε̂ = ε(x, ∅) + w · (ε(x, c) − ε(x, ∅))
with ∅ the "no class" entry. ``w = 0`` is the unconditional model, ``w = 1`` the plain
conditional one, ``w > 1`` strengthens the class. MONAI's ``DiffusionInferer.sample`` guides
cross-attention or concatenated conditioning but not the UNet's class embedding, so the loop
over timesteps is written here (a few lines around MONAI's ``scheduler.step``).

Reproducibility: volume ``i`` of ``seed`` starts from noise drawn with
``SeedSequence(seed, spawn_key=(i,))`` and takes its step noise from the same generator, so it
depends only on (seed, i) and not on how many volumes are made or in what batches.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from medgen.core.errors import UsageError
from medgen.families.ddpm.config import DDPMConfig

SAMPLERS = ("ddim", "ddpm")
DEFAULT_SAMPLER, DEFAULT_STEPS = "ddim", 50


def make_scheduler(cfg: DDPMConfig, sampler: str = "ddpm", eta: float = 0.0,
                   clip_range: tuple[float, float] = (-1.0, 1.0)):
    """MONAI's scheduler for ``cfg``'s noise schedule: ``DDPMScheduler`` (training, ``ddpm`` sampling) or ``DDIMScheduler``.

    ``clip_range``: where predicted x₀ is clipped when ``cfg.clip_sample`` (the volumes' [-1, 1] by default).
    """
    from monai.networks.schedulers import DDIMScheduler, DDPMScheduler

    common = dict(num_train_timesteps=cfg.num_train_timesteps, schedule=cfg.schedule, prediction_type=cfg.prediction_type,
                  clip_sample=cfg.clip_sample)
    if tuple(clip_range) != (-1.0, 1.0):
        common.update(clip_sample_min=float(clip_range[0]), clip_sample_max=float(clip_range[1]))
    if cfg.schedule != "cosine":
        common.update(beta_start=cfg.beta_start, beta_end=cfg.beta_end)
    if sampler == "ddpm":
        return DDPMScheduler(**common)
    if sampler == "ddim":
        return DDIMScheduler(**common)
    raise UsageError(f"--sampler {sampler!r}: choose {' or '.join(SAMPLERS)}")


def volume_generator(seed: int, index: int, device: torch.device) -> torch.Generator:
    """The random generator of volume ``index`` for ``seed`` (initial noise and step noise)."""
    if seed < 0:
        raise UsageError(f"seed must be >= 0, got {seed}")
    state = int(np.random.SeedSequence(seed, spawn_key=(index,)).generate_state(1, np.uint64)[0] >> 1)
    return torch.Generator(device=device).manual_seed(state)


def check_sampling(cfg: DDPMConfig, sampler: str, steps: int | None, guidance: float, eta: float) -> int:
    """The number of steps to run; UsageError for settings that cannot work."""
    if sampler not in SAMPLERS:
        raise UsageError(f"--sampler {sampler!r}: choose {' or '.join(SAMPLERS)}")
    if sampler == "ddpm":
        if steps not in (None, cfg.num_train_timesteps):
            raise UsageError(f"--steps {steps}: the ddpm sampler runs all {cfg.num_train_timesteps} steps; "
                             "use --sampler ddim for fewer")
        steps = cfg.num_train_timesteps
    steps = DEFAULT_STEPS if steps is None else int(steps)
    if not 1 <= steps <= cfg.num_train_timesteps:
        raise UsageError(f"--steps {steps}: need 1 to {cfg.num_train_timesteps}")
    if guidance < 0:
        raise UsageError(f"--guidance {guidance}: need a weight >= 0 (0 unconditional, 1 conditional)")
    if cfg.num_classes == 0 and guidance != 1.0:
        raise UsageError("--guidance needs a class-conditional model (this one was trained without classes)")
    if not 0.0 <= eta <= 1.0:
        raise UsageError(f"--eta {eta}: need 0 (deterministic DDIM) to 1")
    return steps


def guided_prediction(unet: nn.Module, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None,
                      null_class: int, guidance: float) -> torch.Tensor:
    """The UNet's prediction at (x, t) with classifier-free guidance weight ``guidance`` (module docstring)."""
    if labels is None or guidance == 1.0:
        return unet(x, t, class_labels=labels)
    null = torch.full_like(labels, null_class)
    if guidance == 0.0:
        return unet(x, t, class_labels=null)
    both = unet(torch.cat([x, x]), torch.cat([t, t]), class_labels=torch.cat([labels, null]))
    cond, uncond = both.chunk(2)
    return uncond + guidance * (cond - uncond)


def check_labels(cfg: DDPMConfig, indices: Sequence[int], labels: Sequence[int] | None) -> None:
    """UsageError unless ``labels`` gives one class per volume of a conditional model (and none otherwise)."""
    if cfg.num_classes > 0:
        if labels is None:
            raise UsageError(f"this model is class-conditional ({cfg.num_classes} classes): labels are required")
        if len(labels) != len(indices) or any(not 0 <= int(c) < cfg.num_classes for c in labels):
            raise UsageError(f"need one class in 0..{cfg.num_classes - 1} per volume")
    elif labels is not None:
        raise UsageError("this model is unconditional (trained without classes): a label cannot be given")


@torch.no_grad()
def reverse_process(
    unet: nn.Module,
    cfg: DDPMConfig,
    index: int,
    seed: int,
    *,
    label: int | None = None,
    sampler: str = DEFAULT_SAMPLER,
    steps: int = DEFAULT_STEPS,
    guidance: float = 1.0,
    eta: float = 0.0,
    device: torch.device = torch.device("cpu"),
    shape: Sequence[int] | None = None,
    clip_range: tuple[float, float] = (-1.0, 1.0),
) -> torch.Tensor:
    """Sample ``index`` of ``seed``'s sequence: the reverse process from its own noise, [1, C, S, S, S] on ``device``.

    ``steps`` must have passed :func:`check_sampling`. C is ``cfg.in_channels`` (1 for a
    volume, the latent channels for latent diffusion); predicted x₀ is clipped to ``clip_range``
    ([-1, 1], the volumes' range) at each step when ``cfg.clip_sample``. ``shape``: the spatial
    shape (X, Y, Z) to sample instead of S³ (an image-conditioned model follows its condition's).
    """
    spatial = tuple(int(n) for n in shape) if shape is not None else (cfg.size,) * 3
    scheduler = make_scheduler(cfg, sampler, clip_range=clip_range)
    scheduler.set_timesteps(steps, device=device)
    gen = volume_generator(seed, int(index), device)
    x = torch.randn((1, cfg.in_channels, *spatial), generator=gen, device=device)
    lab = torch.tensor([int(label)], device=device) if label is not None else None
    for t in scheduler.timesteps:
        tt = torch.full((1,), int(t), device=device, dtype=torch.long)
        pred = guided_prediction(unet, x, tt, lab, cfg.num_classes, guidance)
        if sampler == "ddim":
            x, _ = scheduler.step(pred.float(), int(t), x, eta=eta, generator=gen)
        else:
            x, _ = scheduler.step(pred.float(), int(t), x, generator=gen)
    return x


@torch.no_grad()
def sample_volumes(
    unet: nn.Module,
    cfg: DDPMConfig,
    indices: Sequence[int],
    seed: int,
    *,
    labels: Sequence[int] | None = None,
    sampler: str = DEFAULT_SAMPLER,
    steps: int | None = None,
    guidance: float = 1.0,
    eta: float = 0.0,
    device: torch.device = torch.device("cpu"),
    progress: Any = None,
) -> np.ndarray:
    """Volumes ``indices`` of ``seed``'s sequence: float32 [n, S, S, S] in [-1, 1].

    ``labels``: the class of each volume (conditional models; K classes, 0..K-1). One volume
    at a time, each with its own generator (module docstring). ``progress``: a tqdm-like bar
    updated once per volume.
    """
    steps = check_sampling(cfg, sampler, steps, guidance, eta)
    check_labels(cfg, indices, labels)
    s = cfg.size
    out = np.empty((len(indices), s, s, s), dtype=np.float32)
    for j, i in enumerate(indices):
        x = reverse_process(unet, cfg, int(i), seed, label=None if labels is None else int(labels[j]),
                            sampler=sampler, steps=steps, guidance=guidance, eta=eta, device=device)
        out[j] = x[0, 0].clamp(-1.0, 1.0).float().cpu().numpy()
        if progress is not None:
            progress.update(1)
    return out
