"""Label-preserving augmentation of classifier batches: small shifts, intensity jitter, optional flips.

Shifts of up to ``in_size // 16`` voxels along each axis (patient positioning varies) and a small
affine intensity jitter (±2 % scale, ±0.02 offset in [-1, 1] units, about ±16 HU with the
default CT window; kept small because labels such as emphysema severity are defined by HU
thresholds). Left-right flips are separate (``flip_lr``) and off by default: a flipped chest
CT has the heart on the right (situs inversus), an anatomy real scans almost never show.
"""

from __future__ import annotations

import torch
from torch import nn

INTENSITY_SCALE_JITTER = 0.02  # relative
INTENSITY_OFFSET_JITTER = 0.02  # [-1, 1] units


def augment_batch(x: torch.Tensor, gen: torch.Generator, flip_lr: bool, jitter: bool) -> torch.Tensor:
    # A shift, an intensity change and a flip per volume are a few lines of torch on the batch,
    # on its device; MONAI's/TorchIO's random transforms do the same one item at a time on the CPU.
    b, size = x.shape[0], x.shape[-1]
    if jitter:
        m = max(1, size // 16)
        padded = nn.functional.pad(x, (m,) * 6, mode="replicate")
        offsets = torch.randint(0, 2 * m + 1, (b, 3), generator=gen).tolist()
        x = torch.stack([padded[i, :, a : a + size, c : c + size, d : d + size] for i, (a, c, d) in enumerate(offsets)])
        scale = 1 + INTENSITY_SCALE_JITTER * (2 * torch.rand(b, generator=gen) - 1)
        offset = INTENSITY_OFFSET_JITTER * (2 * torch.rand(b, generator=gen) - 1)
        x = x * scale.to(x.device).view(b, 1, 1, 1, 1) + offset.to(x.device).view(b, 1, 1, 1, 1)
    if flip_lr:
        flip = (torch.rand(b, generator=gen) < 0.5).to(x.device).view(b, 1, 1, 1, 1)
        x = torch.where(flip, x.flip(2), x)  # axis x of (x, y, z): left-right in RAS+
    return x
