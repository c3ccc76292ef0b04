"""The HA-GAN generator: G^A (common block), G^L (low-resolution block),
G^H (high-resolution block) and the sub-volume selector S^H.

Shapes use S = output size, f = low-resolution factor, C_A = channels of A,
L = slab depth in full-resolution slices, L_A = L / f. Tensors are
[B, C, X, Y, Z]; the slab (depth) axis is the last one (axial slices).

Training (:meth:`Generator.forward_train`): z → G^A → A [B, C_A, S/f, S/f, S/f];
G^L turns all of A into the low-resolution volume, S^H cuts a slab of L_A
slices of A and G^H turns only that slab into L full-resolution slices.
With ``slab_context`` (the default) the slab is cut with G^H's receptive field
of real A-slices around it and G^H's output is cropped back to the slab, so the
training slab equals the same slab of the inference volume (below); the paper
zero-pads the slab instead.
Inference (:meth:`Generator.generate`): G^H runs on the whole of A (optionally
in depth chunks, see :mod:`medgen.families.hagan.chunked`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medgen.families.hagan.chunked import halo_slices, high_res_chunked, high_res_with_stats, volume_norm_stats
from medgen.families.hagan.config import BASE_GRID, HAGANConfig
from medgen.families.layers import conv3, one_hot_labels, upsample2_conv3


class CommonBlock(nn.Module):
    """G^A, the common block: latent code → intermediate feature map A.

    Linear(z [+ one-hot class] → C0·4³), reshape to C0×4³, then convolutions
    3³ → GroupNorm → ReLU; a nearest ×2 upsampling precedes the 2nd, 3rd, ...
    convolution until the grid reaches S/f (paper, S=256: 512@4³ → 512@8³ →
    256@16³ → 128@32³ → 64@64³). Input [B, latent_dim + num_classes]; output
    A [B, C_A, S/f, S/f, S/f]. Each upsampling + conv pair is computed in
    sub-pixel form by :func:`medgen.families.layers.upsample2_conv3` (same function,
    8/27 of the work). With ``common_modulation`` each GroupNorm's output is scaled by
    1 + γ and shifted by β per volume and channel, [γ, β] = one linear map of the code
    (zero at initialisation).
    """

    def __init__(self, cfg: HAGANConfig) -> None:
        super().__init__()
        widths = cfg.common_widths()
        self.base_channels = widths[0]
        self.num_upsamplings = cfg.num_upsamplings_common()
        self.fc = nn.Linear(cfg.generator_input_dim, widths[0] * BASE_GRID**3)
        self.convs = nn.ModuleList(conv3(cin, cout) for cin, cout in zip([widths[0]] + widths[:-1], widths))
        self.norms = nn.ModuleList(nn.GroupNorm(cfg.norm_groups, c) for c in widths)
        self.widths = widths
        self.modulation = None
        if cfg.common_modulation:
            self.modulation = nn.Linear(cfg.generator_input_dim, 2 * sum(widths))
            nn.init.zeros_(self.modulation.weight)
            nn.init.zeros_(self.modulation.bias)

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        h = self.fc(code).view(-1, self.base_channels, BASE_GRID, BASE_GRID, BASE_GRID)
        styles = self._styles(code)
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            h = upsample2_conv3(h, conv) if 1 <= i <= self.num_upsamplings else conv(h)
            h = norm(h)
            if styles is not None:
                gain, shift = styles[i]
                h = torch.addcmul(shift, h, 1 + gain)
            h = F.relu(h)
        return h

    def _styles(self, code: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        """Per volume, the (γ, β) of each GroupNorm [B, C, 1, 1, 1] (``common_modulation``), else None."""
        if self.modulation is None:
            return None
        parts = self.modulation(code)[..., None, None, None].split([c for c in self.widths for _ in (0, 1)], dim=1)
        return list(zip(parts[0::2], parts[1::2]))


class LowResBlock(nn.Module):
    """G^L, the low-resolution block: A → whole volume at (S/f)³ in [-1, 1].

    Conv C_A→32, GN, ReLU; Conv 32→16, GN, ReLU; Conv 16→1, tanh (paper widths).
    """

    def __init__(self, cfg: HAGANConfig) -> None:
        super().__init__()
        widths = cfg.low_widths()
        self.convs = nn.ModuleList(conv3(cin, cout) for cin, cout in zip([cfg.feature_channels] + widths[:-1], widths))
        self.norms = nn.ModuleList(nn.GroupNorm(cfg.norm_groups, c) for c in widths[:-1])

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        h = a
        for conv, norm in zip(self.convs[:-1], self.norms):
            h = F.relu(norm(conv(h)))
        return torch.tanh(self.convs[-1](h))


class HighResBlock(nn.Module):
    """G^H, the high-resolution block: (a slab of) A → full resolution in [-1, 1].

    log2(f) stages of [nearest ×2 upsampling → Conv 3³]; all but the last are
    followed by GroupNorm and ReLU, the last (→ 1 channel) by tanh. Paper (f=4):
    up, Conv 64→32, GN, ReLU; up, Conv 32→1, tanh. Input [B, C_A, S/f, S/f, d];
    output [B, 1, S, S, f·d]. Upsampling + conv run in sub-pixel form
    (:func:`medgen.families.layers.upsample2_conv3`).

    Note on GroupNorm: during training G^H only sees a slab of A (with its
    context, see :meth:`Generator.high_slab`), so its GroupNorm statistics are
    those of the slab; at inference (whole A) they are those of the whole
    volume. The difference is measured by ``tests/test_hagan_consistency.py``
    and ``medgen experiment recipes`` (small next to the zero-padded borders it
    replaced). :func:`medgen.families.hagan.chunked.high_res_chunked` reproduces
    the whole-volume statistics exactly while processing depth chunks.
    """

    def __init__(self, cfg: HAGANConfig) -> None:
        super().__init__()
        widths = cfg.high_widths()
        self.convs = nn.ModuleList(conv3(cin, cout) for cin, cout in zip([cfg.feature_channels] + widths[:-1], widths))
        self.norms = nn.ModuleList(nn.GroupNorm(cfg.norm_groups, c) for c in widths[:-1])

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        h = a
        for conv, norm in zip(self.convs[:-1], self.norms):
            h = F.relu(norm(upsample2_conv3(h, conv)))
        return torch.tanh(upsample2_conv3(h, self.convs[-1]))


def _take_slabs(x: torch.Tensor, starts: torch.Tensor, length: int) -> torch.Tensor:
    """x[i, ..., starts[i] : starts[i] + length] for every sample i (last axis)."""
    first = int(starts[0])
    if bool((starts == first).all()):
        return x[..., first : first + length]
    return torch.stack([x[i, ..., s : s + length] for i, s in enumerate(starts.tolist())])


class SubVolumeSelector:
    """S^H, the high-resolution sub-volume selector.

    A slab is ``L_A = slab_fraction · S/f`` consecutive slices of A along the
    last (depth) axis starting at index ``a`` (A coordinates, 0 ≤ a ≤ max_start
    = S/f − L_A). The matching real full-resolution slab starts at ``a·f`` with
    ``L = f·L_A`` slices, so real and generated slabs are aligned by
    construction (the authors' code drew the real start on the full-resolution
    grid and misaligned them by up to f−1 slices). D^H receives the normalised
    position ``a / max_start`` in [0, 1].

    Start indices are int64 tensors [B] (one start per sample).
    """

    def __init__(self, cfg: HAGANConfig) -> None:
        self.lowres_factor = cfg.lowres_factor
        self.slab_len_lowres = cfg.slab_len_lowres
        self.slab_len = cfg.slab_len
        self.max_start = cfg.max_slab_start_lowres
        self.num_slabs = cfg.num_slabs

    def random_starts(
        self, batch_size: int, generator: torch.Generator | None = None, device: torch.device | str | None = None
    ) -> torch.Tensor:
        """Independent uniform starts in {0, ..., max_start}, drawn with ``generator`` (a CPU generator)."""
        starts = torch.randint(0, self.max_start + 1, (batch_size,), generator=generator)
        return starts.to(device) if device is not None else starts

    def deterministic_starts(self, step: int, batch_size: int, device: torch.device | str | None = None) -> torch.Tensor:
        """Starts for the "deterministic sub-volume selection" ablation.

        Instead of a random start, training step ``step`` uses the non-overlapping
        slab number ``step mod num_slabs`` (start ``k·L_A``) for the whole batch,
        so the slab positions are visited in order 0, L_A, 2·L_A, ... and repeat.
        """
        start = (step % self.num_slabs) * self.slab_len_lowres
        return torch.full((batch_size,), start, dtype=torch.long, device=device)

    def tiling_starts(self) -> list[int]:
        """Starts (A coordinates) of the 1/slab_fraction slabs that tile the depth."""
        return [k * self.slab_len_lowres for k in range(self.num_slabs)]

    def position(self, starts: torch.Tensor) -> torch.Tensor:
        """Normalised slab position a / max_start in [0, 1] (0 when there is one position), float [B]."""
        starts = torch.as_tensor(starts)
        return starts.float() / max(self.max_start, 1)

    def _check(self, starts: torch.Tensor | int, batch_size: int) -> torch.Tensor:
        starts = torch.as_tensor(starts, dtype=torch.long).reshape(-1)
        if starts.numel() == 1:
            starts = starts.expand(batch_size)
        if starts.numel() != batch_size:
            raise ValueError(f"got {starts.numel()} slab starts for a batch of {batch_size}")
        if bool((starts < 0).any()) or bool((starts > self.max_start).any()):
            raise ValueError(f"slab start out of range 0..{self.max_start}: {starts.tolist()}")
        return starts

    def select_features(self, a: torch.Tensor, starts: torch.Tensor | int) -> torch.Tensor:
        """Slab of the feature map A: [B, C_A, S/f, S/f, L_A]."""
        return _take_slabs(a, self._check(starts, a.shape[0]), self.slab_len_lowres)

    def context_window(self, starts: torch.Tensor | int, batch_size: int, halo: int) -> tuple[torch.Tensor, int, torch.Tensor]:
        """The slab with ``halo`` A-slices of context on each side, kept inside the volume.

        Returns (window starts [B], window length, slab offset inside the window [B]),
        in A slices. The window is ``L_A + 2·halo`` long (at most the depth S/f) and
        slides inward at the volume's ends, where the volume boundary itself (zero
        padding, as at inference) is the slab's neighbour: so every slab slice sees
        what it sees when G^H runs on the whole of A.
        """
        starts = self._check(starts, batch_size)
        length = min(self.slab_len_lowres + 2 * halo, self.max_start + self.slab_len_lowres)
        window = (starts - halo).clamp(0, self.max_start + self.slab_len_lowres - length)
        return window, length, starts - window

    def select_real(self, x: torch.Tensor, starts: torch.Tensor | int) -> torch.Tensor:
        """Matching slab of a full-resolution volume [B, C, S, S, S]: [B, C, S, S, L] from f·start."""
        return _take_slabs(x, self._check(starts, x.shape[0]) * self.lowres_factor, self.slab_len)


class Generator(nn.Module):
    """The HA-GAN generator: ``.common`` = G^A, ``.low`` = G^L, ``.high`` = G^H.

    Class conditioning (``num_classes`` > 0) is AC-GAN style: the one-hot class
    (or a soft [B, K] label) is appended to z. With ``use_lowres=False`` (ablation)
    G^L is not built and ``.low`` is None.
    """

    def __init__(self, cfg: HAGANConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.common = CommonBlock(cfg)
        self.low = LowResBlock(cfg) if cfg.use_lowres else None
        self.high = HighResBlock(cfg)
        self.selector = SubVolumeSelector(cfg)

    def _code(self, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        k = self.cfg.num_classes
        if k == 0:
            if labels is not None:
                raise ValueError("labels given to an unconditional generator (num_classes = 0)")
            return z
        if labels is None:
            raise ValueError(f"this generator is class-conditional ({k} classes): labels are required")
        return torch.cat([z, one_hot_labels(labels, k, z.dtype)], dim=1)

    def features(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """G^A: z [B, latent_dim] (+ labels [B] or [B, K]) → A [B, C_A, S/f, S/f, S/f]."""
        return self.common(self._code(z, labels))

    def forward_train(
        self, z: torch.Tensor, slab_start_lowres: torch.Tensor | int, labels: torch.Tensor | None = None,
        high: int | None = None,
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """One training forward pass, G^A computed once for both branches.

        Returns (x_low [B, 1, S/f, S/f, S/f] or None without the low-resolution
        branch, x_high_slab [H, 1, S, S, L]) where the slab starts at slice
        ``f · slab_start_lowres`` of the full-resolution volume. ``high``: G^H
        makes the slabs of the first H samples only (None: of all B); the others
        train the low-resolution branch alone.
        """
        a = self.features(z, labels)
        x_low = self.low(a) if self.low is not None else None
        if high is not None and not 1 <= high <= a.shape[0]:
            raise ValueError(f"high = {high}: G^H's slabs must be 1..{a.shape[0]} of the batch")
        return x_low, self.high_slab(a if high is None else a[:high], slab_start_lowres)

    def high_slab(self, a: torch.Tensor, slab_start_lowres: torch.Tensor | int) -> torch.Tensor:
        """G^H on the training slab of A: [B, 1, S, S, L] from full-resolution slice ``f · start``.

        ``cfg.slab_context``:

        * ``"zero-padded"`` (the paper): G^H on the slab alone; the f − 1 output
          slices next to each slab border see zeros where inference sees the
          neighbouring anatomy.
        * ``"halo"``: G^H on the slab plus its receptive field in A
          (:func:`~medgen.families.hagan.chunked.halo_slices`: 1 A-slice at every
          factor), cropped to the slab; GroupNorm statistics are the window's.
        * ``"exact"``: as ``"halo"``, normalised with the whole volume's GroupNorm
          statistics (:func:`~medgen.families.hagan.chunked.volume_norm_stats`, one
          gradient-free pass of G^H's first stages over A), so the slab equals the
          same slab of :meth:`generate` up to float rounding.
        """
        mode = self.cfg.slab_context
        if mode == "zero-padded":
            return self.high(self.selector.select_features(a, slab_start_lowres))
        window, length, offset = self.selector.context_window(slab_start_lowres, a.shape[0], halo_slices(self.high))
        a_window = _take_slabs(a, window, length)
        if mode == "exact":
            out = high_res_with_stats(self.high, a_window, volume_norm_stats(self.high, a.detach()))
        else:
            out = self.high(a_window)
        return _take_slabs(out, offset * self.cfg.lowres_factor, self.cfg.slab_len)

    forward = forward_train  # so that DistributedDataParallel wraps the training pass

    def generate(
        self,
        z: torch.Tensor,
        labels: torch.Tensor | None = None,
        chunk: int | None = None,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Full-resolution volumes [B, 1, S, S, S]: G^H on the whole of A.

        ``chunk``: if given, G^H runs on depth chunks of ``chunk`` A-slices
        (= f·chunk output slices) with exact GroupNorm statistics, so peak
        memory scales with the chunk (see :func:`medgen.families.hagan.chunked.high_res_chunked`).
        ``out``: a preallocated [B, 1, S, S, S] tensor to write into (any dtype or
        device, e.g. a CPU view of a float16 memory map); each chunk is copied into
        it as soon as it is computed. This is the one generation path of HA-GAN:
        sampling, encoding/reconstruction, benchmarks and training mosaics use it.
        """
        a = self.features(z, labels)
        if chunk is None:
            x = self.high(a)
            if out is None:
                return x
            out.copy_(x)
            return out
        return high_res_chunked(self.high, a, chunk, out=out)
