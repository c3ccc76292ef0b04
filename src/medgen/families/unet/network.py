"""The network (MONAI's residual ``UNet``) and how it maps input volumes to the target, whole or by windows.

``UNet`` (Kerfoot et al. 2018, MONAI) with residual units is the 3D form of the supervised denoisers of
low-dose CT (RED-CNN, Chen et al. 2017: an encoder-decoder with shortcuts, trained on pairs with a pixel
loss). With ``residual`` the output is the first input plus the network's correction, whose last layer
starts at zero, so an untrained network is the identity: the trivial baseline. Volumes larger than memory are processed by
MONAI's ``SlidingWindowInferer`` (Gaussian-weighted overlapping windows), so a 256³ volume runs on a CPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medgen.families.unet.config import UNetConfig


def build_unet(cfg: UNetConfig) -> nn.Module:
    """MONAI's ``UNet`` (``channels[0]`` output features) followed by a 1×1×1 convolution to the one output
    channel. With ``residual`` that head starts at zero, so the untrained model is exactly the identity on its
    first input (the baseline) and training departs from it; MONAI's own last layer cannot be zeroed to that
    effect (with residual units it ends in a skip connection)."""
    from monai.networks.nets import UNet

    body = UNet(spatial_dims=3, in_channels=len(cfg.inputs), out_channels=cfg.channels[0], channels=tuple(cfg.channels),
                strides=tuple(cfg.strides), num_res_units=cfg.num_res_units, norm="instance")
    head = nn.Conv3d(cfg.channels[0], 1, kernel_size=1)
    if cfg.residual:
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)
    return nn.Sequential(body, head)


def stack_inputs(batch: dict[str, torch.Tensor], cfg: UNetConfig) -> torch.Tensor:
    """The input volumes of a data batch as channels ``[b, len(inputs), S, S, S]`` (label maps as floats)."""
    return torch.cat([batch[name].float() for name in cfg.inputs], dim=1)


def forward(net: nn.Module, x: torch.Tensor, cfg: UNetConfig) -> torch.Tensor:
    """The predicted target ``[b, 1, ...]`` of inputs ``x`` (any edge that is a multiple of ``cfg.divisor``);
    with ``cfg.keep_known`` the first input wherever the ``mask`` channel is 0."""
    out = net(x)
    out = x[:, :1] + out if cfg.residual else out
    if cfg.keep_known:
        missing = x[:, cfg.inputs.index("mask")][:, None] > 0.5
        out = torch.where(missing, out, x[:, :1].to(out.dtype))
    return out


#: Voxels of the windows :func:`predict` passes through the network at once: 8 windows of 32³, one of 64³.
#: Batching windows changes no output (the network normalises each instance on its own); per call MONAI's
#: inferer and the network have a fixed cost that one small window repeats (benchmarks/translate_cost.py).
WINDOW_BATCH_VOXELS = 8 * 32**3


def predict(net: nn.Module, x: torch.Tensor, cfg: UNetConfig, window: int = 0, overlap: float = 0.25) -> torch.Tensor:
    """:func:`forward` on whole volumes of any shape (padded to a multiple of ``cfg.divisor`` and cropped back),
    or by overlapping cubic windows of edge ``window`` (> 0) blended with Gaussian weights, as many at once as
    :data:`WINDOW_BATCH_VOXELS` holds."""
    if window:
        from monai.inferers import SlidingWindowInferer

        inferer = SlidingWindowInferer(roi_size=(window,) * 3, sw_batch_size=max(1, WINDOW_BATCH_VOXELS // window**3),
                                       overlap=overlap, mode="gaussian", padding_mode="replicate")
        return inferer(x, lambda patch: forward(net, patch, cfg))
    shape = x.shape[2:]
    pads = [(-n) % cfg.divisor for n in shape]
    if any(pads):
        x = F.pad(x, [p for pad in reversed(pads) for p in (0, pad)], mode="replicate")
    out = forward(net, x, cfg)
    return out[:, :, : shape[0], : shape[1], : shape[2]]
