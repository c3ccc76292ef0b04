"""The network (MONAI's residual ``UNet`` with ``num_classes`` output channels) and how it scores whole volumes
or overlapping windows (MONAI's ``SlidingWindowInferer``, Gaussian-blended), so large volumes run in bounded memory."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medgen.families.seg_unet.config import SegUNetConfig


def build_network(cfg: SegUNetConfig) -> nn.Module:
    """MONAI's ``UNet`` from ``len(inputs)`` channels to ``num_classes`` logits per voxel."""
    from monai.networks.nets import UNet

    return UNet(spatial_dims=3, in_channels=len(cfg.inputs), out_channels=cfg.num_classes, channels=tuple(cfg.channels),
                strides=tuple(cfg.strides), num_res_units=cfg.num_res_units, norm="instance")


def stack_inputs(batch: dict[str, torch.Tensor], cfg: SegUNetConfig) -> torch.Tensor:
    """The input volumes of a data batch as channels ``[b, len(inputs), S, S, S]``."""
    return torch.cat([batch[name].float() for name in cfg.inputs], dim=1)


def logits(net: nn.Module, x: torch.Tensor, cfg: SegUNetConfig, window: int = 0, overlap: float = 0.25) -> torch.Tensor:
    """Class logits ``[b, num_classes, ...]`` of inputs ``x`` of any shape: whole (padded to a multiple of
    ``cfg.divisor`` and cropped back) or by overlapping cubic windows of edge ``window`` (> 0)."""
    if window:
        from monai.inferers import SlidingWindowInferer

        inferer = SlidingWindowInferer(roi_size=(window,) * 3, sw_batch_size=1, overlap=overlap, mode="gaussian",
                                       padding_mode="replicate")
        return inferer(x, net)
    shape = x.shape[2:]
    pads = [(-n) % cfg.divisor for n in shape]
    if any(pads):
        x = F.pad(x, [p for pad in reversed(pads) for p in (0, pad)], mode="replicate")
    return net(x)[:, :, : shape[0], : shape[1], : shape[2]]
