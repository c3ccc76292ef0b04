"""DCGAN-style 3D networks shared by the ``wgan-gp`` and ``vae-gan`` families, and their loaded-model base.

The two baselines of the HA-GAN paper's comparison share one generator and one
discriminator/critic design, the 3D DCGAN (Radford et al. 2016) of Kwon et al. 2019
("Generation of 3D brain MRI using auto-encoding generative adversarial networks",
MICCAI; their 64³ ``Model_WGAN`` / ``Model_VAEGAN``), extended to 128³ as the HA-GAN
authors' baseline models did:

* :class:`Generator` z [B, latent_dim] → volume [B, 1, S, S, S] in [-1, 1]: a linear layer
  to a 4³ grid, BatchNorm, ReLU; then log2(S/4) − 1 blocks of (×2 nearest upsampling, 3³
  convolution, BatchNorm, ReLU), and a last ×2 upsampling with a 3³ convolution to one
  channel and tanh. No convolution has a bias (each is followed by BatchNorm; Kwon et
  al.'s last one has none either). ``upsample="transposed"``: 4³ stride-2 transposed
  convolutions instead (DCGAN's original form).
* :class:`Critic` volume → one score per volume: log2(S/4) stride-2 4³ convolutions down to a
  4³ grid, each followed by LeakyReLU(0.2) and, except the first, a per-volume normalisation
  (``layer``: GroupNorm with one group, ``instance``: one group per channel, or ``none``);
  then a 4³ convolution to one value. No BatchNorm: with it, a volume's score would depend on
  the other volumes of its batch, which the gradient penalty of WGAN-GP (Gulrajani et al.
  2017, §4) and the feature-wise reconstruction of VAE-GAN cannot have. Kwon et al.'s
  discriminators use BatchNorm; that is the one architectural change.
* :class:`DownTrunk`, the critic without its last layer, is also the trunk of VAE-GAN's
  encoder (which may use BatchNorm).

Widths (``width`` scales them; 1 is the ``paper`` preset): the generator has 64·width
channels at S/2, doubling at each coarser level up to 16× (64, 128, 256, 512 at 64³ as
Kwon et al.; 64 … 1024 at 128³ as the HA-GAN authors' 128³ WGAN baseline). The critic has
512·width channels on the 4³ grid, halving at each finer level, at least 8 (64 … 512 at
64³ as Kwon et al.; 32 … 512 at 128³ as the HA-GAN authors' 128³ VAE-GAN discriminator).

Tensors are [B, C, X, Y, Z]. Any power-of-two size from 16 to 512.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medgen.core.errors import InputError, UsageError
from medgen.core.settings import from_dict
from medgen.core.volume import hounsfield_of
from medgen.families.layers import down_conv, leaky, upsample2_conv3

BASE_GRID = 4  # edge of the generator's first and the critic's last feature map
MIN_SIZE, MAX_SIZE = 16, 512
UPSAMPLES = ("nearest", "transposed")
CRITIC_NORMS = ("layer", "instance", "none")  # per volume: a score never depends on the rest of the batch
ENCODER_NORMS = ("batch",) + CRITIC_NORMS
G_BASE, G_MAX_DOUBLINGS = 64, 4  # generator: 64·width channels at S/2, ×2 per coarser level, at most ×16
D_TOP, D_MIN = 512, 8  # critic: 512·width channels at 4³, ÷2 per finer level, at least 8

# The three presets of both families (vae-gan adds its encoder's hidden layer): ``paper`` the published widths and
# latent length (Kwon et al.: z of 1000), ``small`` a CPU demo at 32³-64³, ``tiny`` tests and seconds-long CPU runs.
BASE_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(width=0.125, latent_dim=64),
    "small": dict(width=0.25, latent_dim=128),
    "paper": dict(width=1.0, latent_dim=1000),
}


def check_size(size: Any) -> int:
    """``size`` as an int; UsageError unless it is a power of two from 16 to 512."""
    if not isinstance(size, int) or isinstance(size, bool) or size < MIN_SIZE or size > MAX_SIZE or size & (size - 1):
        raise UsageError(f"size {size!r}: must be a power of two from {MIN_SIZE} to {MAX_SIZE}")
    return size


@dataclass
class DCGANConfig:
    """Shapes of the DCGAN-style generator and critic (module docstring).

    ``size``: edge of the cubic volumes; ``latent_dim``: length of z; ``width``: channel
    multiplier (1 = the published widths); ``upsample``: ``nearest`` (upsample + 3³ conv,
    Kwon et al.) or ``transposed`` (4³ stride-2 transposed convs, DCGAN);
    ``d_norm``: the critic's / discriminator's normalisation (layer, instance or none).
    """

    size: int = 32
    latent_dim: int = 64
    width: float = 0.125
    upsample: str = "nearest"
    d_norm: str = "layer"

    def __post_init__(self) -> None:
        self.validate()

    @property
    def num_classes(self) -> int:
        """Always 0: these families are unconditional (the shared tools read ``config.num_classes``)."""
        return 0

    @property
    def levels(self) -> int:
        """Resolution levels between the 4³ grid and the volume: log2(size / 4)."""
        return int(math.log2(self.size // BASE_GRID))

    def generator_widths(self) -> list[int]:
        """Channels of the generator's hidden feature maps, finest (S/2) first, coarsest (4³) last."""
        base = max(1, round(G_BASE * self.width))
        return [base * 2 ** min(k, G_MAX_DOUBLINGS) for k in range(self.levels)]

    def critic_widths(self) -> list[int]:
        """Channels after each stride-2 convolution of the critic, finest (S/2) first, 4³ last."""
        top = max(1, round(D_TOP * self.width))
        return [max(min(D_MIN, top), top // 2 ** j) for j in reversed(range(self.levels))]

    def validate(self) -> None:
        check_size(self.size)
        if not isinstance(self.latent_dim, int) or self.latent_dim < 1:
            raise UsageError(f"latent_dim {self.latent_dim!r}: need a positive integer")
        if not isinstance(self.width, (int, float)) or not self.width > 0:
            raise UsageError(f"width {self.width!r}: need a positive number")
        if self.upsample not in UPSAMPLES:
            raise UsageError(f"upsample {self.upsample!r}: choose {' or '.join(UPSAMPLES)}")
        if self.d_norm not in CRITIC_NORMS:
            raise UsageError(f"d_norm {self.d_norm!r}: choose {', '.join(CRITIC_NORMS)} (a critic without batch "
                             "statistics: each volume's score must not depend on the rest of its batch)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        return from_dict(cls, d, f"{cls.__name__} model setting")


def model_config(cls: type, presets: dict[str, dict[str, Any]], what: str, preset: str, size: int,
                 **overrides: Any):
    """``cls`` for preset ``preset`` at ``size``³ with ``overrides`` (None values ignored).

    ``num_classes`` other than 0/None is refused (unconditional families); so is any field ``cls`` lacks.
    """
    if preset not in presets:
        raise UsageError(f"unknown {what} preset {preset!r} (choose from {', '.join(presets)})")
    given = {k: v for k, v in overrides.items() if v is not None}
    if given.pop("num_classes", 0):
        raise UsageError(f"{what} is unconditional: num_classes cannot be set")
    fields = dict(presets[preset], size=size)
    fields.update(given)
    return cls.from_dict(fields)


# --------------------------------------------------------------------------- networks


def norm3d(kind: str, channels: int) -> nn.Module:
    """Normalisation of a 3D feature map: batch, layer (GroupNorm, 1 group), instance (GroupNorm, C groups), none."""
    if kind == "batch":
        return nn.BatchNorm3d(channels)
    if kind == "layer":
        return nn.GroupNorm(1, channels)
    if kind == "instance":
        return nn.GroupNorm(channels, channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown normalisation {kind!r}")


class Generator(nn.Module):
    """z [B, latent_dim] → volumes [B, 1, S, S, S] in [-1, 1] (module docstring)."""

    def __init__(self, cfg: DCGANConfig) -> None:
        super().__init__()
        widths = cfg.generator_widths()[::-1]  # coarsest (4³) first
        self.latent_dim, self.top, self.mode = cfg.latent_dim, widths[0], cfg.upsample
        self.fc = nn.Linear(cfg.latent_dim, widths[0] * BASE_GRID**3, bias=False)
        self.fc_norm = nn.BatchNorm3d(widths[0])
        self.convs = nn.ModuleList(self._up_conv(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.norms = nn.ModuleList(nn.BatchNorm3d(c) for c in widths[1:])
        self.out = self._up_conv(widths[-1], 1)

    def _up_conv(self, cin: int, cout: int) -> nn.Module:
        if self.mode == "transposed":
            return nn.ConvTranspose3d(cin, cout, kernel_size=4, stride=2, padding=1, bias=False)
        return nn.Conv3d(cin, cout, kernel_size=3, padding=1, bias=False)

    def _up(self, h: torch.Tensor, conv: nn.Module) -> torch.Tensor:
        # nearest ×2 upsampling then the 3³ conv, computed on the coarse grid (same function, fewer operations)
        return conv(h) if self.mode == "transposed" else upsample2_conv3(h, conv)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.fc(z.reshape(z.shape[0], self.latent_dim)).view(z.shape[0], self.top, *(BASE_GRID,) * 3)
        h = F.relu(self.fc_norm(h))
        for conv, norm in zip(self.convs, self.norms):
            h = F.relu(norm(self._up(h, conv)))
        return torch.tanh(self._up(h, self.out))


class DownTrunk(nn.Module):
    """Volumes [B, 1, S, S, S] → feature maps at S/2, S/4, …, 4³: stride-2 4³ convolutions, each followed by
    ``norm`` (not after the first, as DCGAN) and LeakyReLU(0.2). ``forward`` returns every level's output."""

    def __init__(self, widths: Sequence[int], norm: str) -> None:
        super().__init__()
        ins = [1, *widths[:-1]]
        self.convs = nn.ModuleList(down_conv(a, b) for a, b in zip(ins, widths))
        self.norms = nn.ModuleList([nn.Identity()] + [norm3d(norm, c) for c in widths[1:]])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out, h = [], x
        for conv, norm in zip(self.convs, self.norms):
            h = leaky(norm(conv(h)))
            out.append(h)
        return out


class Critic(nn.Module):
    """Volumes [B, 1, S, S, S] → one real-valued score per volume [B] (module docstring).

    ``forward(x, features=True)`` returns (scores, hidden feature maps of every level, finest first).
    """

    def __init__(self, cfg: DCGANConfig) -> None:
        super().__init__()
        widths = cfg.critic_widths()
        self.trunk = DownTrunk(widths, cfg.d_norm)
        self.out = nn.Conv3d(widths[-1], 1, kernel_size=BASE_GRID)

    def forward(self, x: torch.Tensor, features: bool = False):
        hidden = self.trunk(x)
        scores = self.out(hidden[-1]).flatten()
        return (scores, hidden) if features else scores


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def load_state(module: nn.Module, weights: dict[str, dict[str, torch.Tensor]], key: str, checkpoint: Path) -> nn.Module:
    """``module`` with the checkpoint's ``weights[key]``; InputError when they are missing or do not fit."""
    if key not in weights:
        raise InputError(f"{checkpoint}: the checkpoint holds no {key!r} weights")
    try:
        module.load_state_dict(weights[key])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise InputError(f"{checkpoint}: weights do not fit the model in the run's config.yaml ({first})") from None
    return module


def frozen(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` on ``device``, in eval mode (BatchNorm uses its running statistics), without gradients."""
    return module.to(device).eval().requires_grad_(False)


@torch.no_grad()
def preview(G: nn.Module, latent_dim: int, n: int, seed: int, device: torch.device, amp) -> tuple[list[Any], list[str]]:
    """``n`` volumes of generator ``G`` for fixed z drawn from ``seed``, for the training mosaics.

    G runs in eval mode (BatchNorm's running statistics, which it does not change: a preview never alters
    training), one volume at a time.
    """
    z = torch.randn(n, latent_dim, generator=torch.Generator().manual_seed(seed))
    was_training = G.training
    G.eval()
    vols = []
    for i in range(n):
        with amp():
            vols.append(G(z[i : i + 1].to(device))[0, 0].float().cpu().numpy())
    G.train(was_training)
    return vols, [str(i) for i in range(n)]


# --------------------------------------------------------------------------- the loaded model


@dataclass
class GeneratorModel:
    """A (trained or freshly built) DCGAN-style generator ready for sampling.

    ``generator`` in eval mode (EMA weights when loaded so), ``config`` its architecture,
    ``run_config`` the training run's configuration (None for an untrained build). Volume ``i`` of
    ``generate(n, seed)`` depends only on (seed, i): its z is drawn as HA-GAN's
    (:func:`medgen.inference.generate.latent_codes`) and BatchNorm uses running statistics.
    """

    config: Any
    generator: nn.Module
    run_config: Any = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    checkpoint: Path | None = None

    @property
    def preprocess(self) -> dict[str, Any]:
        """The training data's preprocessing record (modality, CT window, size, ...); {} if unknown."""
        return dict(getattr(self.run_config, "preprocess", None) or {})

    def sample_latents(self, n: int, seed: int = 0, start: int = 0) -> np.ndarray:
        """Latent codes of volumes start … start+n-1 for ``seed``: float32 [n, latent_dim]."""
        from medgen.inference.generate import latent_codes

        return latent_codes(n, self.config.latent_dim, seed, start)

    def generate(
        self,
        n: int,
        seed: int = 0,
        labels: int | Sequence[int] | None = None,
        chunk: int | None = None,
        batch_size: int = 1,
        hu: bool = False,
        z: Any = None,
        indices: Sequence[int] | None = None,
    ) -> np.ndarray:
        """``n`` volumes, float32 [n, S, S, S] in [-1, 1] (HU with ``hu=True``, CT only).

        ``z``: latent codes [n, latent_dim] instead of those drawn from ``seed``; ``indices``: which
        volumes of ``seed``'s sequence (default 0…n-1). ``labels`` and ``chunk`` exist for the common
        interface: the model is unconditional and runs on whole volumes.
        """
        from medgen.inference.generate import check_labels, requested_codes

        check_labels(labels, n, 0)  # UsageError: a label for an unconditional model
        if chunk:
            raise UsageError("--chunk applies to HA-GAN's G^H and the latent-diffusion decoder; this generator "
                             "makes whole volumes")
        codes = requested_codes(n, self.config.latent_dim, seed, z, indices)
        s = self.config.size
        out = np.empty((n, s, s, s), dtype=np.float32)
        step = max(1, int(batch_size))
        with torch.inference_mode():
            for k in range(0, n, step):
                x = self.generator(torch.from_numpy(codes[k : k + step]).to(self.device))
                out[k : k + step] = x[:, 0].float().cpu().numpy()
        return self.to_hu(out) if hu else out

    def to_hu(self, x: np.ndarray) -> np.ndarray:
        """Map [-1, 1] back to Hounsfield units with the training data's CT window (float32)."""
        return hounsfield_of(x, self.preprocess)
