"""The ``cyclegan`` family's architecture (:class:`CycleGANConfig`: two ``unet`` generators and two PatchGAN
discriminators between the volumes ``domain_a`` and ``domain_b``), presets and hyper-parameters
(:class:`CycleGANHParams`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from medgen.core.errors import UsageError
from medgen.core.settings import from_dict
from medgen.families.unet import config as unet_config
from medgen.families.unet.config import UNetConfig

DIRECTIONS = ("AtoB", "BtoA")
CRITERIA = ("least_squares", "bce", "hinge")  # MONAI PatchAdversarialLoss's


@dataclass
class CycleGANConfig:
    """``domain_a``, ``domain_b``: the data set's volumes of the two domains (an unpaired set written by
    ``medgen unpair``: ``image`` and ``b``). G_AB and G_BA are the ``unet`` family's network with the same
    ``channels``, ``strides``, ``num_res_units``; ``residual``: each predicts a correction added to its input
    (only when both domains share an intensity scale; default off: the generator outputs the other domain's
    volume itself). ``d_channels``, ``d_layers``: MONAI ``PatchDiscriminator``'s first width and number of
    strided layers (D_A and D_B alike)."""

    size: int = 32
    domain_a: str = "image"
    domain_b: str = "b"
    residual: bool = False
    channels: tuple[int, ...] = (16, 32, 64, 128)
    strides: tuple[int, ...] = (2, 2, 2)
    num_res_units: int = 2
    d_channels: int = 32
    d_layers: int = 3

    def __post_init__(self) -> None:
        names = (self.domain_a, self.domain_b)
        if not all(isinstance(n, str) and n for n in names) or self.domain_a == self.domain_b:
            raise UsageError(f"cyclegan domains {self.domain_a!r} and {self.domain_b!r}: need two different volume names")
        if self.d_channels < 1 or self.d_layers < 1:
            raise UsageError(f"d_channels {self.d_channels} and d_layers {self.d_layers}: need ≥ 1")
        self.generator("AtoB")  # the UNet's shape checks, one line on failure

    def generator(self, direction: str) -> UNetConfig:
        """The ``unet`` config of G_AB (``"AtoB"``: ``domain_a`` → ``domain_b``) or G_BA (``"BtoA"``)."""
        if direction not in DIRECTIONS:
            raise UsageError(f"direction {direction!r}: choose {' or '.join(DIRECTIONS)}")
        src, dst = (self.domain_a, self.domain_b) if direction == "AtoB" else (self.domain_b, self.domain_a)
        return UNetConfig(size=self.size, task="translate", inputs=(src,), target=dst, residual=self.residual,
                          channels=tuple(self.channels), strides=tuple(self.strides), num_res_units=self.num_res_units)

    @property
    def divisor(self) -> int:
        return unet_config.strides_product(tuple(self.strides))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CycleGANConfig":
        return from_dict(cls, d, "cyclegan model setting")


# Generators: the unet family's presets of the same name; discriminators: pix2pix's.
PRESETS: dict[str, dict[str, Any]] = {
    "small": dict(unet_config.PRESETS["small"], d_channels=32, d_layers=3),
    "tiny": dict(unet_config.PRESETS["tiny"], d_channels=8, d_layers=2),
}
DEFAULT_PRESET = "small"


def model_config(preset: str, size: int, inputs: Any = None, target: str | None = None, task: str | None = None,
                 **overrides: Any) -> CycleGANConfig:
    """Preset ``preset`` at ``size``³, with the fields in ``overrides`` (None: not given). ``inputs`` and ``target``
    (``medgen train --inputs A --target B``) name the two domains' volumes, as ``domain_a`` and ``domain_b``."""
    if preset not in PRESETS:
        raise UsageError(f"unknown cyclegan preset {preset!r} (choose from {', '.join(PRESETS)})")
    if task is not None:
        raise UsageError("cyclegan: --task does not apply (it translates between two domains; --inputs and "
                         "--target name their volumes, default image and b)")
    if inputs is not None:
        names = tuple(n.strip() for n in inputs.split(",")) if isinstance(inputs, str) else tuple(inputs)
        if len(names) != 1:
            raise UsageError(f"cyclegan: --inputs {','.join(names)}: one volume, domain A's")
        overrides.setdefault("domain_a", names[0])
    if target is not None:
        overrides.setdefault("domain_b", target)
    fields: dict[str, Any] = dict(PRESETS[preset], size=size)
    fields.update({k: v for k, v in overrides.items() if v is not None})
    return CycleGANConfig.from_dict(fields)


@dataclass
class CycleGANHParams:
    """Zhu et al.'s training settings. ``lr_g``, ``lr_d``, ``betas``: Adam (2e-4, (0.5, 0.999)); ``decay_start``,
    ``decay_iters``: from iteration ``decay_start`` on, both learning rates decay linearly to 0 over ``decay_iters``
    iterations (0: constant, the default; the paper: 100 epochs constant, then 100 decaying — set both to 100
    epochs' iterations; counted in iterations, not as a share of ``--iters``, so that a run continued longer
    with ``--resume`` is the run it would have been); ``lambda_cycle``: λ of the cycle L1 terms (10); ``lambda_id``: λ of the
    identity L1 terms (default 0.5·``lambda_cycle``; 0: none); ``criterion``: MONAI ``PatchAdversarialLoss``
    (least_squares, as the paper); ``pool_size``: volumes in each domain's history of generated volumes that D
    also judges (50; 0: only the current batch); ``patch``: edge of the random training patches (0: whole
    volumes), also the sliding window's at inference."""

    lr_g: float = 2e-4
    lr_d: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    decay_start: int = 0
    decay_iters: int = 0
    lambda_cycle: float = 10.0
    lambda_id: float | None = None
    criterion: str = "least_squares"
    pool_size: int = 50
    patch: int = 0

    def __post_init__(self) -> None:
        if self.lambda_id is None:
            self.lambda_id = 0.5 * float(self.lambda_cycle)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CycleGANHParams":
        d = dict(d)
        if isinstance(d.get("lambda_id"), str):  # YAML reads 5e-4 as text; the field's default (None) is no number
            try:
                d["lambda_id"] = float(d["lambda_id"])
            except ValueError:
                raise UsageError(f"cyclegan training setting lambda_id={d['lambda_id']!r}: expected a number") from None
        hp = from_dict(cls, d, "cyclegan training setting")
        if (not (hp.lr_g > 0 and hp.lr_d > 0) or min(hp.decay_start, hp.decay_iters) < 0 or hp.lambda_cycle < 0
                or hp.lambda_id < 0 or hp.criterion not in CRITERIA or hp.pool_size < 0 or hp.patch < 0):
            raise UsageError(
                f"cyclegan: lr_g, lr_d > 0, decay_start, decay_iters, lambda_cycle, lambda_id, pool_size, patch ≥ 0, "
                f"criterion one of {', '.join(CRITERIA)} (got {hp.lr_g}, {hp.lr_d}, {hp.decay_start}, "
                f"{hp.decay_iters}, {hp.lambda_cycle}, {hp.lambda_id}, {hp.pool_size}, {hp.patch}, {hp.criterion!r})")
        return hp
