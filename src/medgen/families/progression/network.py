"""The conditional generator: MONAI's residual ``UNet`` on the baseline, modulated by the interval (FiLM).

How the interval reaches the network
------------------------------------
By FiLM (feature-wise linear modulation, Perez et al. 2018), as diffusion UNets take their time step: a small
MLP maps the interval (in years) to a scale γ and a shift β per feature channel, applied to the UNet's output
features ``h ↦ h · (1 + γ) + β``, before a 3×3×3 convolution with a PReLU and the 1×1×1 head. The MLP's last
layer starts at zero (FiLM starts as the identity), and so does the head. The simpler alternative, the
interval as a constant extra input channel, was not chosen: every convolution of MONAI's ``UNet`` is followed
by instance normalisation, which subtracts each feature map's mean over the volume, i.e. exactly the constant
such a channel adds; the interval would then get through only by side effects of the architecture (the
residual units' un-normalised shortcuts, and the zero-padded border, whose different value shifts the
per-volume statistics of every voxel), position-dependent and not by design. With FiLM the interval acts on
every voxel alike and is the network's only way to it.

With ``per_year`` (the default) the head's output is a rate, multiplied by the interval: the change is zero
for a zero interval whatever the weights (the model then returns the baseline exactly), and linear in the
interval to first order, as the population trend baseline (:mod:`.baselines`) is; FiLM lets the rate itself
depend on the interval.

Outputs (``output``)
--------------------
``intensity``: follow-up = baseline + Δ (Δ from the head's one channel). Because the head starts at zero, an
untrained model is the "no change" baseline and training departs from it.

``deformation``: the head's three channels are a displacement field ``u`` in voxels, component ``d`` along
array axis ``d``, and the follow-up is the baseline resampled at ``p + u(p)`` (MONAI ``Warp``, trilinear,
border padding: a "pull" field, the convention of ``medgen.metrics.registration``). With ``diffeomorphic``
the head's output is a stationary velocity field, integrated into ``u`` by scaling and squaring (MONAI
``DVF2DDF``), so the map is smooth and invertible; its smoothness is encouraged by MONAI's
``BendingEnergyLoss`` (hyper-parameter ``smoothness_weight``). A warp only moves intensities: it can model the
ventricles' growth as an expansion but cannot create CSF in a thinning cortex where there was none; atrophy
in the brain phantoms is a change of tissue, not a deformation, so ``intensity`` is the default.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from medgen.families.progression.config import ProgressionConfig


class ProgressionNet(nn.Module):
    """``(baseline [b, 1, S, S, S], interval [b] in years) → (follow-up [b, 1, ...], field [b, 3, ...] or None)``
    (see the module docstring)."""

    def __init__(self, cfg: ProgressionConfig) -> None:
        super().__init__()
        from monai.networks.nets import UNet

        width = cfg.channels[0]
        self.output = cfg.output
        self.per_year = cfg.per_year
        self.body = UNet(spatial_dims=3, in_channels=1, out_channels=width, channels=tuple(cfg.channels),
                         strides=tuple(cfg.strides), num_res_units=cfg.num_res_units, norm="instance")
        self.film = nn.Sequential(nn.Linear(1, cfg.film_hidden), nn.SiLU(), nn.Linear(cfg.film_hidden, 2 * width))
        self.mix = nn.Sequential(nn.Conv3d(width, width, kernel_size=3, padding=1), nn.PReLU())
        self.head = nn.Conv3d(width, cfg.out_channels, kernel_size=1)
        for layer in (self.film[-1], self.head):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.warp = self.integrate = None
        if cfg.output == "deformation":
            from monai.networks.blocks import DVF2DDF, Warp

            with warnings.catch_warnings():  # "using PyTorch native grid_sample": what we want
                warnings.simplefilter("ignore", UserWarning)
                self.warp = Warp(mode="bilinear", padding_mode="border")
                if cfg.diffeomorphic:
                    self.integrate = DVF2DDF(num_steps=cfg.integration_steps, mode="bilinear", padding_mode="zeros")

    def change(self, x: torch.Tensor, interval: torch.Tensor) -> torch.Tensor:
        """The head's output for baseline ``x`` and ``interval`` ``[b]``: Δ ``[b, 1, ...]`` or the displacement
        (or velocity) ``[b, 3, ...]``, times the interval with ``per_year``."""
        t = interval.reshape(-1, 1).to(x.dtype)
        h = self.body(x)
        gamma, beta = self.film(t).to(h.dtype).chunk(2, dim=1)
        h = h * (1.0 + gamma[:, :, None, None, None]) + beta[:, :, None, None, None]
        out = self.head(self.mix(h))
        if self.per_year:
            out = out * t.to(out.dtype)[:, :, None, None, None]
        return out

    def forward(self, x: torch.Tensor, interval: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        out = self.change(x, interval)
        if self.output == "intensity":
            return x + out, None
        field = self.integrate(out.float()) if self.integrate is not None else out
        return self.warp(x, field.to(x.dtype)), field


def build_network(cfg: ProgressionConfig) -> ProgressionNet:
    return ProgressionNet(cfg)


def predict(net: nn.Module, x: torch.Tensor, interval: torch.Tensor, cfg: ProgressionConfig, window: int = 0,
            overlap: float = 0.25) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``net(x, interval)`` on whole volumes of any shape (padded by replication to a multiple of
    ``cfg.divisor`` and cropped back), or by overlapping cubic windows of edge ``window`` (> 0) blended with
    Gaussian weights (each window warped on its own: border effects at the windows' edges)."""
    shape = x.shape[2:]
    if window:
        from monai.inferers import SlidingWindowInferer

        inferer = SlidingWindowInferer(roi_size=(window,) * 3, sw_batch_size=1, overlap=overlap, mode="gaussian",
                                       padding_mode="replicate")

        def both(patch: torch.Tensor) -> torch.Tensor:
            out, field = net(patch, interval.expand(patch.shape[0]) if interval.numel() == 1 else interval)
            return out if field is None else torch.cat([out, field.to(out.dtype)], 1)

        if x.shape[0] > 1:  # the inferer batches windows of one volume: one volume (and interval) at a time
            parts = [predict(net, x[i:i + 1], interval[i:i + 1], cfg, window, overlap) for i in range(x.shape[0])]
            fields = [p[1] for p in parts]
            return torch.cat([p[0] for p in parts]), (None if fields[0] is None else torch.cat(fields))
        res = inferer(x, both)
        return res[:, :1], (res[:, 1:] if res.shape[1] > 1 else None)
    pads = [(-n) % cfg.divisor for n in shape]
    if any(pads):
        x = F.pad(x, [p for pad in reversed(pads) for p in (0, pad)], mode="replicate")
    out, field = net(x, interval)
    crop = (slice(None), slice(None), slice(0, shape[0]), slice(0, shape[1]), slice(0, shape[2]))
    return out[crop], (None if field is None else field[crop])
