"""The conditional reverse process: the ``ddpm`` family's DDIM/DDPM sampler with the condition at every step.

At each of the ``steps`` denoising steps the UNet sees ``concat[x_t, condition]`` (:class:`ConditionedUNet`);
everything else — the schedulers, the noise of seed ``seed`` (:func:`~medgen.families.ddpm.sample.volume_generator`,
index 0), the clipping of predicted x₀ — is :func:`medgen.families.ddpm.sample.reverse_process`. The same
condition and seed give the same output.

The sample follows the condition's shape: whole volumes are padded (edge values) to a multiple of
:attr:`~medgen.families.cond_ddpm.config.CondDDPMConfig.divisor` and cropped back. With ``window`` > 0 every
step's UNet call goes through MONAI's ``SlidingWindowInferer`` (overlapping cubic windows of that edge,
Gaussian-blended), so memory stays bounded; the cost is the number of windows times ``steps`` UNet calls
(a 256³ volume in 64³ windows at overlap 0.25: 125 windows, 6250 UNet calls for 50 DDIM steps).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medgen.core.errors import UsageError
from medgen.families.cond_ddpm.config import CondDDPMConfig
from medgen.families.ddpm.sample import DEFAULT_SAMPLER, check_sampling, reverse_process


class ConditionedUNet:
    """The UNet as :func:`~medgen.families.ddpm.sample.reverse_process` calls it, ``(x_t, t, class_labels)``, on
    ``concat[x_t, condition]`` — whole, or window by window when ``window`` > 0."""

    def __init__(self, unet: nn.Module, condition: torch.Tensor, window: int = 0, overlap: float = 0.25) -> None:
        self.unet, self.condition, self.window = unet, condition, int(window)
        self.inferer = None
        if self.window:
            from monai.inferers import SlidingWindowInferer

            # one window at a time: the timestep tensor [1] matches the window batch
            self.inferer = SlidingWindowInferer(roi_size=(self.window,) * 3, sw_batch_size=1, overlap=overlap,
                                                mode="gaussian", padding_mode="replicate")

    def __call__(self, x: torch.Tensor, t: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        inputs = torch.cat([x, self.condition.to(x.dtype)], dim=1)
        if self.inferer is None:
            return self.unet(inputs, t)
        return self.inferer(inputs, self.unet, t)


def check_window(cfg: CondDDPMConfig, window: int, shape: tuple[int, ...]) -> int:
    """The window edge to use for a volume of ``shape``: 0 (whole) when it covers the volume; UsageError unless a
    multiple of ``cfg.divisor``."""
    if window < 0 or window % cfg.divisor:
        raise UsageError(f"window {window}: 0 (whole volumes) or a positive multiple of {cfg.divisor}")
    return 0 if window >= max(shape) else window


@torch.no_grad()
def conditional_sample(
    unet: nn.Module,
    cfg: CondDDPMConfig,
    condition: torch.Tensor,
    *,
    seed: int = 0,
    sampler: str = DEFAULT_SAMPLER,
    steps: int | None = None,
    eta: float = 0.0,
    window: int = 0,
    overlap: float = 0.25,
    residual_target: bool = False,
) -> torch.Tensor:
    """The predicted target ``[1, 1, X, Y, Z]`` (clipped to [-1, 1]) for ``condition`` ``[1, len(inputs), X, Y, Z]``.

    ``sampler``/``steps``/``eta``: as ``medgen generate``'s (DDIM, 50 steps by default; ``ddpm`` runs every
    training timestep). ``residual_target``: the model diffuses target − first input, which is added back;
    its predicted x₀ is clipped to [-2, 2], the range of a correction between two volumes in [-1, 1].
    """
    if condition.ndim != 5 or condition.shape[:2] != (1, len(cfg.inputs)):
        raise UsageError(f"condition of shape {tuple(condition.shape)}: need [1, {len(cfg.inputs)}, X, Y, Z]")
    steps = check_sampling(cfg, sampler, steps, 1.0, eta)
    shape = tuple(condition.shape[2:])
    window = check_window(cfg, int(window), shape)
    padded = condition
    if not window:
        pads = [(-n) % cfg.divisor for n in shape]
        if any(pads):
            padded = F.pad(condition, [p for pad in reversed(pads) for p in (0, pad)], mode="replicate")
    x = reverse_process(ConditionedUNet(unet, padded, window, overlap), cfg, 0, seed, sampler=sampler, steps=steps,
                        eta=eta, device=condition.device, shape=padded.shape[2:],
                        clip_range=(-2.0, 2.0) if residual_target else (-1.0, 1.0))
    x = x[:, :, : shape[0], : shape[1], : shape[2]].float()
    if residual_target:
        x = x + condition[:, :1].float()
    return x.clamp(-1.0, 1.0)
