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

Reconstruction (:func:`partial_reverse_process`; AnoDDPM, Wyatt et al. 2022; in latent space
Pinaya et al. 2022): a given x₀ is noised to timestep t = ``noise_level`` · T of the forward
process, x_t = sqrt(ᾱ_t)·x₀ + sqrt(1 − ᾱ_t)·ε (one draw of ε, volume i's noise of ``seed``), then
denoised from t back to 0: the model's closest "normal" version of x₀, and |x₀ − x̂₀| its anomaly
map. ``noise_level`` 1 starts from (almost) pure noise, as sampling does; small levels keep more of
the input. The ``ddpm`` sampler runs all t ancestral steps; ``ddim`` runs ``steps`` steps on the
(1-based) timesteps ceil(t·k/steps), k = steps … 1, each landing exactly on the next one evaluated (MONAI's
``DDIMScheduler.step`` assumes a stride of T // its step count, which a truncated chain does not
have, so the DDIM update of Song et al. eq. 12 is written here on the scheduler's ᾱ).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from medgen.core.errors import UsageError
from medgen.families.ddpm.config import DDPMConfig

SAMPLERS = ("ddim", "ddpm")
DEFAULT_SAMPLER, DEFAULT_STEPS = "ddim", 50
DEFAULT_NOISE_LEVEL = 0.25  # reconstruction: the share t/T of the forward process the input is noised to


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


def noise_timestep(cfg: DDPMConfig, noise_level: float) -> int:
    """The timestep index (0 … T−1, as the UNet and MONAI's ᾱ are indexed) of noise level t/T = ``noise_level``.

    t = round(``noise_level`` · T), at least 1; index t − 1 (level 1: index T − 1, where sampling starts).
    UsageError unless 0 < ``noise_level`` <= 1.
    """
    try:
        level = float(noise_level)
    except (TypeError, ValueError):
        level = float("nan")
    if not 0.0 < level <= 1.0:  # also refuses NaN
        raise UsageError(f"noise_level {noise_level!r}: need 0 < noise_level <= 1 (the fraction t/T of the forward "
                         "process the volume is noised to; 1 = pure noise)")
    t = min(cfg.num_train_timesteps, max(1, int(math.floor(level * cfg.num_train_timesteps + 0.5))))
    return t - 1


def check_reconstruction(cfg: DDPMConfig, noise_level: float, sampler: str, steps: int | None, guidance: float,
                         eta: float) -> tuple[int, int]:
    """(timestep index of ``noise_level``, denoising steps) for a reconstruction; UsageError for settings that cannot work.

    ``steps`` over [0, t]: the ``ddpm`` sampler runs all t; ``ddim`` defaults to the share of the
    default sampling steps the level covers, ceil(50 · t / T), and takes 1 … t.
    """
    t = noise_timestep(cfg, noise_level) + 1
    check_sampling(cfg, sampler, None, guidance, eta)
    if sampler == "ddpm":
        if steps not in (None, t):
            raise UsageError(f"--steps {steps}: the ddpm sampler runs all {t} steps from noise level {noise_level} "
                             "back to 0; use --sampler ddim for fewer")
        return t - 1, t
    n = max(1, math.ceil(DEFAULT_STEPS * t / cfg.num_train_timesteps)) if steps is None else int(steps)
    if not 1 <= n <= t:
        raise UsageError(f"--steps {steps}: need 1 to {t} (the timesteps of noise level {noise_level})")
    return t - 1, n


def reconstruction_timesteps(start: int, steps: int) -> list[int]:
    """The ``steps`` timestep indices a reconstruction from index ``start`` evaluates, descending.

    With t = ``start`` + 1: indices ceil(t·k/steps) − 1 for k = steps … 1, so ``start`` first, spacing
    t/steps, the last step going from index ceil(t/steps) − 1 to the clean volume.
    """
    t = start + 1
    return [-(-t * k // steps) - 1 for k in range(steps, 0, -1)]


def forward_process(scheduler: Any, x0: torch.Tensor, t: int, generators: Sequence[torch.Generator]) -> torch.Tensor:
    """x_t ~ q(x_t | x₀) = N(sqrt(ᾱ_t)·x₀, (1 − ᾱ_t)·I) at timestep index ``t`` for samples ``x0`` [b, C, …].

    Sample j's noise ε is drawn from ``generators[j]`` (:func:`volume_generator`; MONAI ``add_noise``).
    """
    noise = torch.cat([torch.randn((1, *x0.shape[1:]), generator=g, device=x0.device) for g in generators])
    return scheduler.add_noise(original_samples=x0.float(), noise=noise,
                               timesteps=torch.full((x0.shape[0],), int(t), dtype=torch.long, device=x0.device))


def ddim_update(scheduler: Any, pred: torch.Tensor, t: int, prev: int, x: torch.Tensor, eta: float = 0.0,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """One DDIM step (Song et al. 2021, eq. 12) from timestep index ``t`` to ``prev`` (−1: the clean sample, ᾱ = 1).

    MONAI ``DDIMScheduler.step``'s arithmetic (prediction type, clipping of x̂₀, σ_t(η)) with the
    previous timestep given instead of derived from a fixed stride.
    """
    ab = scheduler.alphas_cumprod.to(x.device)
    a_t = ab[t]
    a_prev = ab[prev] if prev >= 0 else torch.ones((), dtype=ab.dtype, device=ab.device)
    if scheduler.prediction_type == "epsilon":
        x0 = (x - (1 - a_t) ** 0.5 * pred) / a_t ** 0.5
        eps = pred
    elif scheduler.prediction_type == "v_prediction":
        x0 = a_t ** 0.5 * x - (1 - a_t) ** 0.5 * pred
        eps = a_t ** 0.5 * pred + (1 - a_t) ** 0.5 * x
    else:
        raise UsageError(f"prediction type {scheduler.prediction_type!r}: reconstruction supports epsilon and v_prediction")
    if scheduler.clip_sample:
        x0 = x0.clamp(*scheduler.clip_sample_values)
    sigma = eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)) ** 0.5
    out = a_prev ** 0.5 * x0 + (1 - a_prev - sigma ** 2).clamp_min(0) ** 0.5 * eps
    if eta > 0:
        out = out + sigma * torch.randn(x.shape, dtype=x.dtype, generator=generator, device=x.device)
    return out


@torch.no_grad()
def partial_reverse_process(
    unet: nn.Module,
    cfg: DDPMConfig,
    x0: torch.Tensor,
    indices: Sequence[int],
    seed: int,
    *,
    noise_level: float = DEFAULT_NOISE_LEVEL,
    labels: Sequence[int] | None = None,
    sampler: str = DEFAULT_SAMPLER,
    steps: int | None = None,
    guidance: float = 1.0,
    eta: float = 0.0,
    clip_range: tuple[float, float] = (-1.0, 1.0),
) -> torch.Tensor:
    """Reconstructions of ``x0`` [b, C, …] (volumes, or scaled latents) noised to ``noise_level`` and denoised.

    Module docstring. Sample j is volume ``indices[j]`` of ``seed``'s sequence: its forward noise and
    step noise come from that volume's generator, so it does not depend on the batch it is in.
    ``labels``: one class per sample (conditional models; K, the "no class" entry, for the
    unconditional prediction). Runs on ``x0``'s device; returns [b, C, …], not clipped.
    """
    start, n = check_reconstruction(cfg, noise_level, sampler, steps, guidance, eta)
    if len(indices) != x0.shape[0] or (labels is not None and len(labels) != x0.shape[0]):
        raise UsageError(f"need one index (and label) per sample: {x0.shape[0]} samples")
    device = x0.device
    scheduler = make_scheduler(cfg, sampler, clip_range=clip_range)
    gens = [volume_generator(seed, int(i), device) for i in indices]
    x = forward_process(scheduler, x0, start, gens)
    lab = torch.tensor([int(c) for c in labels], device=device) if labels is not None else None
    timesteps = reconstruction_timesteps(start, n) if sampler == "ddim" else list(range(start, -1, -1))
    for k, t in enumerate(timesteps):
        tt = torch.full((x.shape[0],), int(t), device=device, dtype=torch.long)
        pred = guided_prediction(unet, x, tt, lab, cfg.num_classes, guidance).float()
        prev = timesteps[k + 1] if k + 1 < len(timesteps) else -1
        if sampler == "ddim":
            if eta > 0:  # step noise from each sample's own generator
                x = torch.cat([ddim_update(scheduler, pred[j:j + 1], t, prev, x[j:j + 1], eta, gens[j])
                               for j in range(x.shape[0])])
            else:
                x = ddim_update(scheduler, pred, t, prev, x)
        else:
            x = torch.cat([scheduler.step(pred[j:j + 1], int(t), x[j:j + 1], generator=gens[j])[0]
                           for j in range(x.shape[0])])
    return x
