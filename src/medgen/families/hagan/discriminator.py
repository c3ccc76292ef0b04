"""The HA-GAN discriminators: D^H (full-resolution slab + slab position) and
D^L (whole low-resolution volume). Spectral normalisation on every layer,
LeakyReLU(0.2). Tensors are [B, C, X, Y, Z], slab depth on the last axis.

With ``minibatch_std`` > 0 (medgen's default; the paper has none) both append a
minibatch standard-deviation channel before their last convolution, so a batch
of generated volumes that are all alike is told apart from a batch of real ones
(the remedy against mode collapse that measured best on the phantoms; see
``docs/results/recipes``). ``parts`` in the forward passes says how many equal
parts of the batch must not be mixed: 2 when real and generated volumes are
concatenated into one batch.

With ``histogram_bins`` > 0 (an option; off by default and in the paper) both also see
the intensity distribution of what they judge: the log share of its voxels at or below
each of that many bins over [-1, 1] (:func:`medgen.families.layers.cumulative_log_shares`),
through a linear layer into D^H's last hidden layer and through a small MLP added to
D^L's logit.

With ``d_windows`` (an option; none by default and in the paper) both also see
their input through intensity windows, one more input channel each
(:func:`medgen.families.layers.intensity_windows`): CT's lung window stretches the
parenchyma's -1024…-500 HU, which the whole [-1024, 600] HU range squeezes next to air.

A class-conditional D either predicts the class (``class_conditioning="ac"``, the
paper's AC-GAN: a class head per discriminator) or is given it
(``"projection"``, Miyato & Koyama 2018: each logit gains ⟨embed(y), φ(x)⟩, the
inner product of a learned class embedding with the features φ(x) the logit is
computed from). With ``"classifier"`` D is unconditional and a separate classifier
learns the class (:mod:`medgen.families.hagan.classifier`). Why not MONAI: its
discriminators have neither.
"""

from __future__ import annotations

import torch
from torch import nn

from medgen.families.conv3d import Conv3d
from medgen.families.hagan.config import BASE_GRID, HAGANConfig
from medgen.families.layers import cumulative_log_shares, down_conv, intensity_windows, leaky, minibatch_stddev, sn


def _depth_step(depth: int) -> tuple[int, int, int]:
    """(kernel, stride, padding) along the slab depth for D^H's next stride-2 layer.

    Deep slabs are halved with kernel 4 (as in-plane), depths 4 and 2 with a
    2-wide kernel without padding, a depth of 1 is kept (kernel 1); this is the
    published network's rule at 128³ and 256³.
    """
    if depth >= 8:
        return 4, 2, 1
    if depth >= 2:
        return 2, 2, 0
    return 1, 1, 0


def slab_convs(cfg: HAGANConfig, wrap=lambda module: module) -> tuple[nn.ModuleList, int, int]:
    """D^H's stride-2 convolutions, each wrapped by ``wrap`` (D: spectral normalisation), that bring a
    slab [B, 1, S, S, L] to 4×4×d (in-plane kernel 4, widths halving backwards from 512; depth by
    :func:`_depth_step`): (the convolutions, d, their last width)."""
    depth, cin = cfg.slab_len, 1 + len(cfg.d_windows)
    convs = []
    for cout in cfg.downsampling_widths(512, cfg.size):
        kd, sd, pd = _depth_step(depth)
        convs.append(wrap(Conv3d(cin, cout, kernel_size=(4, 4, kd), stride=(2, 2, sd), padding=(1, 1, pd))))
        depth, cin = depth // sd, cout
    return nn.ModuleList(convs), depth, cin


class HighResDiscriminator(nn.Module):
    """D^H: full-resolution slab [B, 1, S, S, L] and its position in [0, 1] → logit.

    log2(S/4) stride-2 convolutions (in-plane kernel 4, widths halving backwards
    from 512: 16, 32, ..., 512 at S=256) bring the slab to 4×4×d, a final
    4×4×d convolution to 128 features; the normalised slab start is appended
    and two linear layers (129 → 64 → 1) give the logit. With classes, a
    linear class head (64 → K) shares the 64 features (AC-GAN), or a class
    embedding (K → 64) is projected on them and added to the logit (projection).
    """

    def __init__(self, cfg: HAGANConfig) -> None:
        super().__init__()
        self.convs, depth, cin = slab_convs(cfg, sn)
        self.windows = cfg.d_windows
        self.register_buffer("window_gain", torch.ones(()), persistent=False)  # the trainer's warm-up
        self.minibatch_std, self.mbstd_channels = cfg.minibatch_std, cfg.minibatch_std_channels
        features, hidden = cfg.channels(128), cfg.channels(64)
        cin += cfg.minibatch_std_channels if cfg.minibatch_std else 0
        self.final_conv = sn(Conv3d(cin, features, kernel_size=(BASE_GRID, BASE_GRID, depth)))
        self.histogram_bins = cfg.histogram_bins
        self.histogram = sn(nn.Linear(cfg.histogram_bins, hidden)) if cfg.histogram_bins else None
        self.fc = sn(nn.Linear(features + 1 + (hidden if cfg.histogram_bins else 0), hidden))
        self.out = sn(nn.Linear(hidden, 1))
        ac = cfg.num_classes > 0 and cfg.class_conditioning == "ac"
        projection = cfg.num_classes > 0 and cfg.class_conditioning == "projection"
        self.class_head = sn(nn.Linear(hidden, cfg.num_classes)) if ac else None
        self.class_embed = sn(nn.Embedding(cfg.num_classes, hidden)) if projection else None

    def forward(self, x: torch.Tensor, slab_pos: torch.Tensor, parts: int = 1,
                labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Returns (logit [B], class logits [B, K] or None); a projection D needs ``labels`` [B]."""
        h = intensity_windows(x, self.windows, self.window_gain)
        for conv in self.convs:
            h = leaky(conv(h))
        if self.minibatch_std:
            h = minibatch_stddev(h, self.minibatch_std, parts, self.mbstd_channels)
        h = leaky(self.final_conv(h)).flatten(1)
        pos = torch.as_tensor(slab_pos, dtype=h.dtype, device=h.device).reshape(-1, 1).expand(h.shape[0], 1)
        inputs = [h, pos]
        if self.histogram is not None:
            inputs.append(leaky(self.histogram(cumulative_log_shares(x, self.histogram_bins).to(h.dtype))))
        h = leaky(self.fc(torch.cat(inputs, dim=1)))
        cls = self.class_head(h) if self.class_head is not None else None
        logit = self.out(h).squeeze(1)
        if self.class_embed is not None:
            logit = logit + _projection(self.class_embed, labels, h)
        return logit, cls


class LowResDiscriminator(nn.Module):
    """D^L: whole low-resolution volume [B, 1, S/f, S/f, S/f] → logit.

    Stride-2 4³ convolutions (widths halving backwards from 256: 32, 64, 128,
    256 at S=256) down to 4³, then a 4³ convolution to 1 + K outputs (logit,
    class logits; AC-GAN). A projection D has one output and adds the projection
    of a class embedding on the last feature map summed over its positions.
    """

    def __init__(self, cfg: HAGANConfig) -> None:
        super().__init__()
        widths = cfg.downsampling_widths(256, cfg.lowres_size, cfg.low_d_width)
        projection = cfg.num_classes > 0 and cfg.class_conditioning == "projection"
        self.num_classes = cfg.num_classes if cfg.class_conditioning == "ac" else 0  # class logits (AC-GAN)
        self.minibatch_std, self.mbstd_channels = cfg.minibatch_std, cfg.minibatch_std_channels
        self.windows = cfg.d_windows
        self.register_buffer("window_gain", torch.ones(()), persistent=False)  # the trainer's warm-up
        channels = 1 + len(cfg.d_windows)
        self.convs = nn.ModuleList(sn(down_conv(cin, cout)) for cin, cout in zip([channels] + widths[:-1], widths))
        features = widths[-1] if widths else channels
        cin = features + (cfg.minibatch_std_channels if cfg.minibatch_std else 0)
        self.final_conv = sn(Conv3d(cin, 1 + self.num_classes, kernel_size=BASE_GRID))
        self.histogram_bins = cfg.histogram_bins
        if cfg.histogram_bins:  # the intensity distribution's own contribution to the logit
            hidden = cfg.channels(64)
            self.histogram = nn.Sequential(sn(nn.Linear(cfg.histogram_bins, hidden)), nn.LeakyReLU(0.2),
                                           sn(nn.Linear(hidden, 1)))
        else:
            self.histogram = None
        self.class_embed = sn(nn.Embedding(cfg.num_classes, features)) if projection else None

    def forward(self, x: torch.Tensor, parts: int = 1,
                labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Returns (logit [B], class logits [B, K] or None); a projection D needs ``labels`` [B]."""
        h = intensity_windows(x, self.windows, self.window_gain)
        for conv in self.convs:
            h = leaky(conv(h))
        phi = h.sum(dim=(2, 3, 4)) if self.class_embed is not None else None
        if self.minibatch_std:
            h = minibatch_stddev(h, self.minibatch_std, parts, self.mbstd_channels)
        h = self.final_conv(h).flatten(1)
        logit = h[:, 0]
        if self.histogram is not None:
            logit = logit + self.histogram(cumulative_log_shares(x, self.histogram_bins).to(h.dtype)).squeeze(1)
        if self.class_embed is not None:
            logit = logit + _projection(self.class_embed, labels, phi)
        return logit, (h[:, 1:] if self.num_classes > 0 else None)


def _projection(embed: nn.Module, labels: torch.Tensor | None, features: torch.Tensor) -> torch.Tensor:
    """⟨embed(y), φ(x)⟩ per sample [B]: the projection discriminator's class term."""
    if labels is None:
        raise ValueError("this discriminator is class-conditional by projection: pass the volumes' labels")
    return (embed(labels.long().reshape(-1)).to(features.dtype) * features).sum(dim=1)


class Discriminator(nn.Module):
    """The HA-GAN discriminator: ``.high`` = D^H, ``.low`` = D^L (None without the low-res branch).

    The real/fake logit is the mean of D^H's and D^L's logits. With classes the
    class logits of each head are returned separately (D^H's first): the loss
    decides whether to average them (the authors' code and the default,
    ``class_loss="mean"``) or to give each head its own cross-entropy (``"per-head"``).
    A projection D (``class_conditioning="projection"``) takes the ``labels`` instead and
    returns no class logits. Without the low-resolution branch D is D^H alone.
    """

    def __init__(self, cfg: HAGANConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.high = HighResDiscriminator(cfg)
        self.low = LowResDiscriminator(cfg) if cfg.use_lowres else None

    def set_window_gain(self, gain: float) -> None:
        """Blend D's window channels from the plain input (0) to the windows (1): the warm-up
        ``window_warmup`` of :class:`~medgen.families.hagan.train.HAGANHParams`."""
        for head in (self.high, self.low):
            if head is not None:
                head.window_gain.fill_(gain)

    def forward(
        self, x_high_slab: torch.Tensor, slab_pos: torch.Tensor, x_low: torch.Tensor | None = None, parts: int = 1,
        labels: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        """(slab [B,1,S,S,L], position [B] in [0,1], low-res volume [B,1,S/f,S/f,S/f]) →
        (logit [B], per-head class logits [[B, K], ...] or None). ``parts``: equal
        parts of the batch the minibatch standard deviation must not mix; ``labels``
        [B]: the volumes' classes, which a projection D is given.

        The low-resolution batch may be larger than the slab batch (an unconditional
        D; the trainer's ``high_batch``): each of the ``parts`` parts then holds
        H slabs and B_L ≥ H low-resolution volumes, the slabs belonging to the first H.
        Those H samples get the mean of both logits, the other B_L − H D^L's logit
        alone; the result is [parts · B_L] in the low-resolution volumes' order."""
        logit, cls = self.high(x_high_slab, slab_pos, parts, labels)
        if self.low is None:
            return logit, ([cls] if cls is not None else None)
        if x_low is None:
            raise ValueError("x_low is required: this discriminator has a low-resolution branch (D^L)")
        if x_low.shape[0] == x_high_slab.shape[0]:
            logit_low, cls_low = self.low(x_low, parts, labels)
            logit = (logit + logit_low) / 2
            return logit, ([cls, cls_low] if cls is not None else None)
        if self.cfg.num_classes > 0:
            raise ValueError("a class-conditional discriminator needs as many low-resolution volumes as slabs")
        if x_low.shape[0] < x_high_slab.shape[0] or x_high_slab.shape[0] % parts or x_low.shape[0] % parts:
            raise ValueError(f"{x_high_slab.shape[0]} slabs and {x_low.shape[0]} low-resolution volumes: need at "
                             f"least as many volumes as slabs, both in {parts} equal parts")
        logit_low = self.low(x_low, parts)[0].reshape(parts, -1)
        high = logit.reshape(parts, -1)
        both = (high + logit_low[:, : high.shape[1]]) / 2
        return torch.cat([both, logit_low[:, high.shape[1] :]], dim=1).reshape(-1), None
