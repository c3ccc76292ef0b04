"""HA-GAN architecture configuration (:class:`HAGANConfig`) and named presets.

The configuration fixes every layer shape of G^A, G^L, G^H, D^H, D^L, E^H and
E^G. The architecture rules below reproduce the authors' published networks
exactly at 256³ and 128³ (and the paper's parameter totals at 64³ and 32³),
and extend them to any power-of-two size from 32 to 512:

* G^A starts from a 4³ grid and upsamples ``log2(S / (4 f))`` times to reach
  the low-resolution grid S/f. Its conv widths are 512, 512, 256, 128, 64
  (× ``width``); at sizes needing more than four upsamplings extra 64-wide
  convs are appended.
* Down-sampling stacks (D^H in-plane, D^L, E^G) halve their width backwards
  from their widest layer (512 for D^H, 256 for D^L and E^G) and reduce the
  grid to 4 before a final 4-wide "valid" convolution.

Widths are multiplied by ``width`` and rounded; every GroupNorm layer needs its
channel count divisible by ``norm_groups``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from medgen.core.errors import UsageError
from medgen.core.settings import from_dict

MIN_SIZE = 32
MAX_SIZE = 512
BASE_GRID = 4  # G^A starts from, and the down-sampling stacks end at, a 4³ grid
SLAB_CONTEXTS = ("exact", "halo", "zero-padded")  # see HAGANConfig.slab_context
CLASS_CONDITIONINGS = ("ac", "projection", "classifier")  # see HAGANConfig.class_conditioning


def _is_power_of_two(n: int) -> bool:
    return isinstance(n, int) and n > 0 and (n & (n - 1)) == 0


@dataclass
class HAGANConfig:
    """Shapes of an HA-GAN.

    Parameters
    ----------
    size : edge length S of the generated cube, in voxels (power of two, 32-512).
    latent_dim : length of the latent vector z ~ N(0, I) (paper: 1024).
    width : channel-width multiplier applied to every layer (paper: 1.0).
    high_width : channel-width multiplier of G^H's hidden layers alone, in place of
        ``width`` (None: ``width``). G^H draws every full-resolution detail from the
        feature map A; the ``tiny`` preset's G^H has 4 hidden channels at factor 4.
    low_d_width : channel-width multiplier of D^L alone, in place of ``width`` (None:
        ``width``). D^L judges the whole volume's anatomy at low resolution and costs
        little; the ``tiny`` preset's has 16 and 32 channels at 64³.
    num_classes : number of classes for the AC-GAN conditional variant; 0 = unconditional.
    lowres_factor : f, ratio of the full resolution to the low-resolution grid of
        G^A's feature map A and of G^L's output (paper: 4).
    slab_fraction : fraction of the depth (last, inferior-superior axis) covered
        by the training slab (paper: 1/8); 1/slab_fraction slabs tile the volume.
    norm_groups : number of groups of every GroupNorm layer (paper: 8).
    use_lowres : False for the "no low-resolution branch" ablation: G^L and D^L
        are not built and D is D^H alone.
    slab_context : how G^H sees the training slab. ``"exact"`` (default): the slab
        plus its receptive field of real A-slices, whole-volume GroupNorm
        statistics, cropped back, so the slab D^H judges is the slab inference
        produces. ``"halo"``: the same with the window's own statistics.
        ``"zero-padded"``: the paper, whose f − 1 border slices on each side of
        the slab differ from inference.
    minibatch_std : group size of a minibatch standard-deviation feature
        (Karras et al. 2018) appended before the last convolution of D^H and
        D^L; groups never mix real and generated volumes. 0: none (the paper).
        It works on each process's share of the batch: with one volume per
        process (``torchrun``, batch = number of GPUs) every group has one member
        and the feature is 0.
    minibatch_std_channels : the minibatch standard deviation's channels: D^H's and
        D^L's last features split into that many sets, each averaged on its own
        (1: one average over all, as in ProGAN; StyleGAN2 has the option).
    histogram_bins : number of intensity bins of a first-order-statistics input of D^H and
        D^L (0: none, the paper): the log share of the voxels of the slab / low-res volume at
        or below each of that many equal bins over [-1, 1]
        (:func:`medgen.families.layers.cumulative_log_shares`), mapped to features that join
        D's last layers, so D compares the intensity distributions of real and generated
        volumes directly and G gets a gradient on every voxel's value.
    d_windows : intensity windows [low, high] in [-1, 1] through which D^H, D^L and a
        classifier C also see their input, each as one more input channel: the window
        stretched to [-1, 1], continued with slope 1 outside it so that no voxel loses its
        gradient (:func:`medgen.families.layers.intensity_windows`); ``medgen train
        --d-windows lung`` gives CT's lung window (-1024…-500 HU). () : none (the paper).
    class_conditioning : how D uses the class of a conditional model. ``"ac"`` (the
        paper, AC-GAN): D^H and D^L have class heads trained by cross-entropy on real
        volumes, and G's loss adds λ × their cross-entropy on its volumes.
        ``"projection"`` (Miyato & Koyama 2018): D is given the class and adds the
        inner product of a learned class embedding with its features to each logit,
        so the class acts through the adversarial loss itself (no class heads, no λ).
        ``"classifier"``: D is unconditional; a separate classifier C (C^H on the slab,
        C^L on the low-resolution volume, no spectral normalisation) learns the class
        from real volumes only, and G's loss adds λ × C's cross-entropy on its volumes
        (:mod:`medgen.families.hagan.classifier`).
    common_modulation : G^A gives each volume its own gain and shift after every GroupNorm,
        (1 + γ) · GN(h) + β with [γ, β] a linear map of the code (z and the class), initialised
        at zero so that training starts from the paper's network (conditional normalisation by
        z as in BigGAN, Brock et al. 2019; per-layer styles as in StyleGAN, Karras et al. 2019).
        GroupNorm normalises each volume's features on their own, which removes the per-volume
        level of each group; the modulation lets z set it again. False: none (the paper).
    """

    size: int = 256
    latent_dim: int = 1024
    width: float = 1.0
    high_width: float | None = None
    low_d_width: float | None = None
    num_classes: int = 0
    lowres_factor: int = 4
    slab_fraction: float = 0.125
    norm_groups: int = 8
    use_lowres: bool = True
    slab_context: str = "exact"
    minibatch_std: int = 4
    minibatch_std_channels: int = 1
    histogram_bins: int = 0
    d_windows: tuple[tuple[float, float], ...] = ()
    class_conditioning: str = "ac"
    common_modulation: bool = False

    def __post_init__(self) -> None:
        try:  # lists (YAML, JSON) → tuples
            self.d_windows = tuple((float(lo), float(hi)) for lo, hi in self.d_windows)
        except (TypeError, ValueError):
            raise UsageError(f"d_windows must be a list of [low, high] pairs in [-1, 1], got {self.d_windows!r}") from None
        self.validate()

    # ------------------------------------------------------------------ geometry
    @property
    def lowres_size(self) -> int:
        """Edge length S/f of the low-resolution grid (feature map A and G^L output)."""
        return self.size // self.lowres_factor

    @property
    def slab_len_lowres(self) -> int:
        """Slab depth in low-resolution (A) slices."""
        return round(self.slab_fraction * self.lowres_size)

    @property
    def slab_len(self) -> int:
        """Slab depth in full-resolution slices (= f × slab_len_lowres)."""
        return self.slab_len_lowres * self.lowres_factor

    @property
    def num_slabs(self) -> int:
        """Number of non-overlapping slabs tiling the depth (1/slab_fraction)."""
        return self.lowres_size // self.slab_len_lowres

    @property
    def max_slab_start_lowres(self) -> int:
        """Largest slab start index in A coordinates (S/f - slab_len_lowres)."""
        return self.lowres_size - self.slab_len_lowres

    @property
    def feature_channels(self) -> int:
        """Channels of G^A's feature map A (paper: 64)."""
        return self.channels(64)

    @property
    def generator_input_dim(self) -> int:
        """Length of G^A's input: z with the one-hot class appended."""
        return self.latent_dim + self.num_classes

    def channels(self, paper_channels: int, width: float | None = None) -> int:
        """Channel count of a layer that has ``paper_channels`` in the published network, at
        ``width`` (default: the model's)."""
        return max(1, int(round(paper_channels * (self.width if width is None else width))))

    # ---------------------------------------------------------------- validation
    def validate(self) -> None:
        """Raise :class:`UsageError` (one line) if the shapes are inconsistent."""
        s, f = self.size, self.lowres_factor
        if not _is_power_of_two(s) or not MIN_SIZE <= s <= MAX_SIZE:
            raise UsageError(f"size must be a power of two from {MIN_SIZE} to {MAX_SIZE}, got {s!r}")
        if not _is_power_of_two(f) or f < 2:
            raise UsageError(f"lowres_factor must be a power of two >= 2, got {f!r}")
        if s // f < BASE_GRID:
            raise UsageError(
                f"lowres_factor {f} is too large for size {s}: the low-resolution grid S/f must be >= {BASE_GRID}"
            )
        if not isinstance(self.latent_dim, int) or self.latent_dim < 1:
            raise UsageError(f"latent_dim must be a positive integer, got {self.latent_dim!r}")
        if not isinstance(self.num_classes, int) or self.num_classes < 0 or self.num_classes == 1:
            raise UsageError(f"num_classes must be 0 (unconditional) or >= 2, got {self.num_classes!r}")
        if not self.width > 0:
            raise UsageError(f"width must be > 0, got {self.width!r}")
        if self.high_width is not None and (isinstance(self.high_width, bool) or
                                            not isinstance(self.high_width, (int, float)) or not self.high_width > 0):
            raise UsageError(f"high_width must be > 0 (or unset: width), got {self.high_width!r}")
        if self.low_d_width is not None and (isinstance(self.low_d_width, bool) or
                                             not isinstance(self.low_d_width, (int, float)) or not self.low_d_width > 0):
            raise UsageError(f"low_d_width must be > 0 (or unset: width), got {self.low_d_width!r}")
        if not isinstance(self.minibatch_std, int) or isinstance(self.minibatch_std, bool) or self.minibatch_std < 0:
            raise UsageError(f"minibatch_std must be a group size >= 0 (0 = none), got {self.minibatch_std!r}")
        k = self.minibatch_std_channels
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise UsageError(f"minibatch_std_channels must be an integer >= 1, got {k!r}")
        last = {"D^H": self.downsampling_widths(512, self.size)[-1]}
        if self.use_lowres:  # D^L's last conv, or its input channels when the low-resolution grid is already 4³
            low = self.downsampling_widths(256, self.lowres_size, self.low_d_width)
            last["D^L"] = low[-1] if low else 1 + len(self.d_windows)
        for name, c in last.items():
            if self.minibatch_std and c % k:
                raise UsageError(f"minibatch_std_channels {k}: {name}'s last layer has {c} features, not a multiple of {k}")
        if not isinstance(self.histogram_bins, int) or isinstance(self.histogram_bins, bool) or \
                self.histogram_bins < 0 or self.histogram_bins == 1:
            raise UsageError(f"histogram_bins must be 0 (none) or >= 2, got {self.histogram_bins!r}")
        for lo, hi in self.d_windows:
            if not -1.0 <= lo < hi <= 1.0:
                raise UsageError(f"d_windows: each window needs -1 <= low < high <= 1, got [{lo:g}, {hi:g}]")
        if self.class_conditioning not in CLASS_CONDITIONINGS:
            raise UsageError(f"class_conditioning must be one of {', '.join(CLASS_CONDITIONINGS)}, "
                             f"got {self.class_conditioning!r}")
        if not isinstance(self.common_modulation, bool):
            raise UsageError(f"common_modulation must be true or false, got {self.common_modulation!r}")
        if self.slab_context not in SLAB_CONTEXTS:
            raise UsageError(f"slab_context must be one of {', '.join(SLAB_CONTEXTS)}, got {self.slab_context!r}")
        if not isinstance(self.norm_groups, int) or self.norm_groups < 1:
            raise UsageError(f"norm_groups must be a positive integer, got {self.norm_groups!r}")
        sf = self.slab_fraction
        n_lowres = sf * (s // f) if isinstance(sf, (int, float)) else float("nan")
        if not 0 < sf <= 1 or abs(n_lowres - round(n_lowres)) > 1e-9 or round(n_lowres) < 1:
            raise UsageError(
                f"slab_fraction {sf!r} must cover a whole number (>= 1) of the {s // f} low-resolution slices"
            )
        if (s // f) % round(n_lowres) != 0:
            raise UsageError(f"slab_fraction {sf!r} must be 1/n with n dividing the {s // f} low-resolution slices")
        for name, c in self.norm_channels().items():
            if c % self.norm_groups != 0:
                raise UsageError(
                    f"width {self.width} gives {c} channels in {name}, not divisible by norm_groups {self.norm_groups}"
                )

    # ------------------------------------------------------------ layer widths
    def num_upsamplings_common(self) -> int:
        """Nearest ×2 upsamplings inside G^A (4³ → (S/f)³)."""
        return int(math.log2(self.lowres_size // BASE_GRID))

    def common_widths(self) -> list[int]:
        """Output channels of G^A's convolutions (the first runs at 4³)."""
        paper = [512, 512, 256, 128, 64]
        paper += [64] * max(0, self.num_upsamplings_common() + 1 - len(paper))
        return [self.channels(c) for c in paper]

    def high_widths(self) -> list[int]:
        """Output channels of G^H's up-convolutions (last one is the 1-channel image)."""
        m = int(math.log2(self.lowres_factor))
        return [self.channels(64 >> i, self.high_width) for i in range(1, m)] + [1]

    def low_widths(self) -> list[int]:
        """Output channels of G^L's convolutions (last one is the 1-channel image)."""
        return [self.channels(32), self.channels(16), 1]

    def high_encoder_widths(self) -> list[int]:
        """Output channels of E^H's strided convolutions (a 3³ conv follows the first)."""
        m = int(math.log2(self.lowres_factor))
        return [self.channels(64 >> (m - 1 - i)) for i in range(m)]

    def downsampling_widths(self, widest: int, in_size: int, width: float | None = None) -> list[int]:
        """Widths of a stride-2 stack reducing ``in_size`` to 4, halving backwards from ``widest``, at
        ``width`` (default: the model's)."""
        n = int(math.log2(in_size // BASE_GRID))
        return [self.channels(widest >> (n - 1 - i), width) for i in range(n)]

    def norm_channels(self) -> dict[str, int]:
        """Channel count of every GroupNorm layer, by block (for validation)."""
        out: dict[str, int] = {}
        for i, c in enumerate(self.common_widths()):
            out[f"G^A conv {i + 1}"] = c
        for i, c in enumerate(self.high_widths()[:-1]):
            out[f"G^H conv {i + 1}"] = c
        if self.use_lowres:
            for i, c in enumerate(self.low_widths()[:-1]):
                out[f"G^L conv {i + 1}"] = c
        enc = self.high_encoder_widths()
        out["E^H conv 1"] = enc[0]
        for i, c in enumerate(enc):
            out[f"E^H conv {i + 2}"] = c
        for i, c in enumerate(self.downsampling_widths(256, self.lowres_size)):
            out[f"E^G conv {i + 1}"] = c
        return out

    # --------------------------------------------------------------- (de)serialise
    def to_dict(self) -> dict[str, Any]:
        """Plain dict (YAML/JSON friendly: the windows as lists)."""
        d = dataclasses.asdict(self)
        d["d_windows"] = [list(w) for w in self.d_windows]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "HAGANConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`UsageError`.

        A setting saved before a field existed gets the value that reproduces what
        it was trained as (:data:`SAVED_BEFORE`), not today's default.
        """
        return from_dict(cls, {**SAVED_BEFORE, **d}, "HA-GAN model setting")


def options_from_data(info: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with ``d_windows`` given by name (``"lung"``, ``"lung,bone"`` or a list of names; see
    :data:`medgen.core.volume.NAMED_CT_WINDOWS`) turned into [-1, 1] windows of the data set whose
    ``preprocess.json`` is ``info`` (CT only); ``"none"``: no window (the default). Windows given as numbers
    are kept."""
    from medgen.core.volume import is_ct, normalized_ct_window

    windows = options.get("d_windows")
    names = windows.split(",") if isinstance(windows, str) else windows
    if not names or not all(isinstance(n, str) for n in names):
        return options
    names = [n.strip() for n in names if n.strip()]
    if [n.lower() for n in names] == ["none"]:
        return {**options, "d_windows": ()}
    if not is_ct(info):
        raise UsageError(f"--d-windows {','.join(names)}: HU windows need a CT data set, "
                         f"this one holds {info.get('modality', '?')}")
    try:
        return {**options, "d_windows": tuple(normalized_ct_window(n, info) for n in names)}
    except ValueError as exc:
        raise UsageError(f"--d-windows {','.join(names)}: {exc}") from None


# Fields added after the first release, with the value a configuration saved without them means
# (the paper's behaviour, which was the only one then). New configurations get the dataclass defaults.
SAVED_BEFORE: dict[str, Any] = {"slab_context": "zero-padded", "minibatch_std": 0, "class_conditioning": "ac",
                                "histogram_bins": 0, "d_windows": (), "common_modulation": False}

# How medgen's defaults differ from the paper's recipe (``medgen train --recipe paper``), in the
# architecture; the training side is :data:`medgen.families.hagan.train.PAPER_HPARAMS`.
PAPER_MODEL: dict[str, Any] = {"slab_context": "zero-padded", "minibatch_std": 0}
DEFAULT_MODEL: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(HAGANConfig) if f.name in PAPER_MODEL}
# The ``ct`` recipe's architecture side (``medgen train --recipe ct``, the demo's): D^H and D^L also see
# the volumes through CT's lung and bone windows (:data:`medgen.core.volume.NAMED_CT_WINDOWS`, given by
# name and turned into the data set's units by :func:`options_from_data`), so that D tells the generated
# lungs' dark voxels and the bones' extent from the real ones. The lung window with R1 but without the
# bone window cost diversity (recall 0.10-0.54) and drew too little bone. The training side, and the
# measurements, are :data:`medgen.families.hagan.train.CT_HPARAMS`.
CT_MODEL: dict[str, Any] = {"d_windows": "lung,bone"}
# A data set's ``preprocess.json`` that stands for CT preprocessed with medgen's default HU window: what
# ``medgen model-info`` and ``medgen bench`` turn a recipe's named windows with (only their number
# changes the networks).
DEFAULT_CT_INFO: dict[str, Any] = {"modality": "ct"}


PRESETS: dict[str, dict[str, Any]] = {
    # The published architecture (Sun et al. 2022; authors' code).
    "paper": dict(latent_dim=1024, width=1.0, norm_groups=8),
    # About a quarter of the paper's parameters; fits one small GPU at 128³-256³.
    "small": dict(latent_dim=256, width=0.5, norm_groups=8),
    # CPU training on 32³-64³ phantoms. Twice tiny's width: tiny's G^H (4 hidden channels) cannot draw
    # the lung texture (docs/results/recipes); twice tiny's time per iteration, so the demo keeps tiny.
    "compact": dict(latent_dim=128, width=0.25, norm_groups=2),
    # The smallest network that trains: the demo, the experiments' demo scale, tests and smoke runs.
    "tiny": dict(latent_dim=128, width=0.125, norm_groups=2),
}


def get_preset(name: str, size: int, **overrides: Any) -> HAGANConfig:
    """Configuration of preset ``name`` at output size ``size``; ``overrides`` replace fields.

    Overrides whose value is None are ignored (convenient for CLI options left unset).
    """
    if name not in PRESETS:
        raise UsageError(f"unknown model preset {name!r} (choose from {', '.join(PRESETS)})")
    fields = dict(DEFAULT_MODEL, **PRESETS[name], size=size)
    fields.update({k: v for k, v in overrides.items() if v is not None})
    return HAGANConfig.from_dict(fields)
