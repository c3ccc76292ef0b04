"""The auxiliary classifier C of a class-conditional HA-GAN with ``class_conditioning="classifier"``.

In the paper's AC-GAN the class heads of D^H and D^L share the features D learns
for telling real from generated volumes, under spectral normalisation. On the
thorax phantoms those heads stayed near chance on the emphysema classes (class
cross-entropy 1.26 against ln 4 = 1.39 on 512 phantoms, where a stand-alone
classifier reaches 0.71 held-out accuracy), so G was never told what a class
looks like (``docs/results/recipes``). C is a separate network that only
classifies: C^H sees the full-resolution slab and its position, C^L the whole
low-resolution volume, with the down-sampling stacks of D^H and D^L but no
spectral normalisation and no real/fake output. It is trained by cross-entropy
on *real* volumes only, with its own optimiser; D is then unconditional, and G's
loss adds λ × the cross-entropy of C on G's volumes for the classes G was asked
for (:func:`medgen.families.hagan.losses.generator_loss`). C is frozen in G's
step, as D is.

Why not MONAI's ``Classifier``: C must see exactly what D sees (the slab with its
position, the low-resolution volume), with D's layer rules at every size.
Tensors are [B, C, X, Y, Z], slab depth on the last axis.
"""

from __future__ import annotations

import torch
from torch import nn

from medgen.families.conv3d import Conv3d
from medgen.families.hagan.config import BASE_GRID, HAGANConfig
from medgen.families.hagan.discriminator import slab_convs
from medgen.families.layers import down_conv, intensity_windows, leaky


class HighResClassifier(nn.Module):
    """C^H: full-resolution slab [B, 1, S, S, L] and its position in [0, 1] → class logits [B, K].

    D^H's stack (stride-2 convolutions down to 4×4×d, a 4×4×d convolution to 128
    features, the position appended, 129 → 64) with a 64 → K output.
    """

    def __init__(self, cfg: HAGANConfig) -> None:
        super().__init__()
        self.convs, depth, cin = slab_convs(cfg)  # D^H's, without spectral normalisation
        self.windows = cfg.d_windows
        features, hidden = cfg.channels(128), cfg.channels(64)
        self.final_conv = Conv3d(cin, features, kernel_size=(BASE_GRID, BASE_GRID, depth))
        self.fc = nn.Linear(features + 1, hidden)
        self.out = nn.Linear(hidden, cfg.num_classes)

    def forward(self, x: torch.Tensor, slab_pos: torch.Tensor) -> torch.Tensor:
        h = intensity_windows(x, self.windows)
        for conv in self.convs:
            h = leaky(conv(h))
        h = leaky(self.final_conv(h)).flatten(1)
        pos = torch.as_tensor(slab_pos, dtype=h.dtype, device=h.device).reshape(-1, 1).expand(h.shape[0], 1)
        return self.out(leaky(self.fc(torch.cat([h, pos], dim=1))))


class LowResClassifier(nn.Module):
    """C^L: whole low-resolution volume [B, 1, S/f, S/f, S/f] → class logits [B, K] (D^L's stack)."""

    def __init__(self, cfg: HAGANConfig) -> None:
        super().__init__()
        widths = cfg.downsampling_widths(256, cfg.lowres_size)
        self.windows = cfg.d_windows
        channels = 1 + len(cfg.d_windows)
        self.convs = nn.ModuleList(down_conv(cin, cout) for cin, cout in zip([channels] + widths[:-1], widths))
        self.final_conv = Conv3d(widths[-1] if widths else channels, cfg.num_classes, kernel_size=BASE_GRID)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = intensity_windows(x, self.windows)
        for conv in self.convs:
            h = leaky(conv(h))
        return self.final_conv(h).flatten(1)


class Classifier(nn.Module):
    """C: ``.high`` = C^H and ``.low`` = C^L (None without the low-resolution branch).

    Returns one [B, K] logit tensor per head, C^H's first, like the class heads of
    :class:`~medgen.families.hagan.discriminator.Discriminator`, so the same
    :func:`~medgen.families.hagan.losses.class_loss` (``mean`` or ``per-head``) applies.
    """

    def __init__(self, cfg: HAGANConfig) -> None:
        super().__init__()
        if cfg.num_classes < 2:
            raise ValueError("the auxiliary classifier needs a class-conditional configuration (num_classes >= 2)")
        self.high = HighResClassifier(cfg)
        self.low = LowResClassifier(cfg) if cfg.use_lowres else None

    def forward(self, x_high_slab: torch.Tensor, slab_pos: torch.Tensor,
                x_low: torch.Tensor | None = None) -> list[torch.Tensor]:
        logits = [self.high(x_high_slab, slab_pos)]
        if self.low is not None:
            if x_low is None:
                raise ValueError("x_low is required: this classifier has a low-resolution branch (C^L)")
            logits.append(self.low(x_low))
        return logits


def augment_real(x: torch.Tensor, max_shift: int, generator: torch.Generator, fill: float = -1.0) -> torch.Tensor:
    """Real volumes [B, 1, X, Y, Z] as C may see them (``c_augment``): each one flipped left-right
    (along X) with probability 1/2 and translated in the axial plane by whole voxels, dx and dy
    uniform in [-max_shift, max_shift], the uncovered border filled with ``fill`` (air in [-1, 1]).

    Flips and in-plane shifts leave the emphysema class of a volume as it was (the share of lung
    below -950 HU), so C learns the class from what defines it instead of recognising each of a few
    training volumes; intensities and the depth axis (the slab's position) are left alone. The
    random draws come from ``generator`` (CPU), so a run stays reproducible.
    """
    if max_shift < 0:
        raise ValueError(f"max_shift must be >= 0, got {max_shift}")
    b = x.shape[0]
    flips = torch.rand(b, generator=generator) < 0.5
    shifts = torch.randint(-max_shift, max_shift + 1, (b, 2), generator=generator)
    out = torch.full_like(x, fill)
    nx, ny = x.shape[2], x.shape[3]
    for i in range(b):
        v = x[i].flip(1) if bool(flips[i]) else x[i]  # dim 1 of [1, X, Y, Z] is X
        dx, dy = int(shifts[i, 0]), int(shifts[i, 1])
        src_x, dst_x = slice(max(0, -dx), nx - max(0, dx)), slice(max(0, dx), nx - max(0, -dx))
        src_y, dst_y = slice(max(0, -dy), ny - max(0, dy)), slice(max(0, dy), ny - max(0, -dy))
        out[i, :, dst_x, dst_y] = v[:, src_x, src_y]
    return out
