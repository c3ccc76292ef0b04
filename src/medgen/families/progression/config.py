"""The ``progression`` family's architecture (:class:`ProgressionConfig`), presets, recipes and hyper-parameters
(:class:`ProgressionHParams`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from medgen.core.errors import UsageError
from medgen.core.settings import from_dict
from medgen.families.unet.config import check_shape, strides_product

OUTPUTS = ("intensity", "deformation")
CRITERIA = ("least_squares", "bce", "hinge")  # MONAI PatchAdversarialLoss's


@dataclass
class ProgressionConfig:
    """A conditional generator: (baseline volume, interval in years) → the follow-up volume.

    baseline, target: the data set's volumes of the first and the later scan (the brain phantoms'
        ``image`` and ``followup``); interval_column: the manifest column holding the years between them.
    output: ``intensity`` (follow-up = baseline + Δ, a voxel-wise change) or ``deformation`` (follow-up =
        the baseline warped by a predicted displacement field, MONAI ``Warp``).
    per_year: the network predicts the change per year and it is multiplied by the interval (intensity: Δ =
        interval · r; deformation: the field = interval · v), so that no time means no change whatever the
        weights, and the change grows linearly with the interval to first order; off: the network's output is
        the change itself (the interval then reaches it through FiLM only).
    diffeomorphic (deformation): the output is a stationary velocity field, integrated by scaling and
        squaring (MONAI ``DVF2DDF``, ``integration_steps`` squarings) into the displacement; off: the output is
        the displacement itself.
    channels, strides, num_res_units: MONAI ``UNet``'s (the ``unet`` family's body); the volume (or patch)
        edge must be a multiple of the product of the strides.
    film_hidden: width of the small MLP that maps the interval to FiLM's per-channel scale and shift.
    d_channels, d_layers: MONAI ``PatchDiscriminator``'s first width and strided layers, used only when the
        hyper-parameter ``adversarial_weight`` is > 0.
    """

    size: int = 32
    baseline: str = "image"
    target: str = "followup"
    interval_column: str = "interval_years"
    output: str = "intensity"
    per_year: bool = True
    diffeomorphic: bool = False
    integration_steps: int = 7
    channels: tuple[int, ...] = (16, 32, 64, 128)
    strides: tuple[int, ...] = (2, 2, 2)
    num_res_units: int = 2
    film_hidden: int = 32
    d_channels: int = 32
    d_layers: int = 3

    def __post_init__(self) -> None:
        names = (self.baseline, self.target, self.interval_column)
        if not all(isinstance(n, str) and n for n in names) or self.baseline == self.target:
            raise UsageError(f"progression: baseline {self.baseline!r} and target {self.target!r} must be two "
                             f"different volume names, interval_column {self.interval_column!r} a manifest column")
        if self.output not in OUTPUTS:
            raise UsageError(f"progression: output {self.output!r}: choose {' or '.join(OUTPUTS)}")
        if self.diffeomorphic and self.output != "deformation":
            raise UsageError("progression: diffeomorphic applies to output=deformation only")
        if self.integration_steps < 1 or self.film_hidden < 1 or self.d_channels < 1 or self.d_layers < 1:
            raise UsageError(f"progression: integration_steps {self.integration_steps}, film_hidden "
                             f"{self.film_hidden}, d_channels {self.d_channels}, d_layers {self.d_layers}: need ≥ 1")
        check_shape(tuple(self.channels), tuple(self.strides), self.size)

    @property
    def divisor(self) -> int:
        return strides_product(tuple(self.strides))

    @property
    def out_channels(self) -> int:
        """1 (an intensity change) or 3 (a displacement, one component per array axis)."""
        return 1 if self.output == "intensity" else 3

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ProgressionConfig":
        return from_dict(cls, d, "progression model setting")


PRESETS: dict[str, dict[str, Any]] = {
    "base": dict(channels=(32, 64, 128, 256), strides=(2, 2, 2), num_res_units=2, film_hidden=64,
                 d_channels=64, d_layers=3),
    "small": dict(channels=(16, 32, 64, 128), strides=(2, 2, 2), num_res_units=2, film_hidden=32,
                  d_channels=32, d_layers=3),
    "tiny": dict(channels=(8, 16, 32), strides=(2, 2), num_res_units=1, film_hidden=16, d_channels=8, d_layers=2),
}
DEFAULT_PRESET = "small"

#: Named settings (``medgen train --family progression --recipe NAME``), the command line's way to the options
#: that have no flag of their own.
RECIPES: dict[str, dict[str, dict[str, Any]]] = {
    "deformation": {"model": {"output": "deformation"}},
    "diffeomorphic": {"model": {"output": "deformation", "diffeomorphic": True}},
    "dep-gan": {"hparams": {"adversarial_weight": 0.01}},
}


def model_config(preset: str, size: int, inputs: Any = None, target: str | None = None, task: str | None = None,
                 num_classes: int | None = None, **overrides: Any) -> ProgressionConfig:
    """Preset ``preset`` at ``size``³ with the fields in ``overrides`` (None: not given). ``inputs`` (one volume)
    and ``target`` (``medgen train --inputs image --target followup``) name the baseline and follow-up volumes."""
    if preset not in PRESETS:
        raise UsageError(f"unknown progression preset {preset!r} (choose from {', '.join(PRESETS)})")
    if task is not None:
        raise UsageError("progression: --task does not apply (it predicts the follow-up volume from the baseline "
                         "and the interval; --inputs and --target name the two volumes)")
    if num_classes is not None:
        raise UsageError("progression: no classes (num_classes does not apply)")
    if inputs is not None:
        names = tuple(n.strip() for n in inputs.split(",")) if isinstance(inputs, str) else tuple(inputs)
        if len(names) != 1:
            raise UsageError(f"progression: --inputs {','.join(names)}: one volume, the baseline scan")
        overrides.setdefault("baseline", names[0])
    if target is not None:
        overrides.setdefault("target", target)
    fields: dict[str, Any] = dict(PRESETS[preset], size=size)
    fields.update({k: v for k, v in overrides.items() if v is not None})
    return ProgressionConfig.from_dict(fields)


@dataclass
class ProgressionHParams:
    """``lr``, ``betas``: Adam (the generator's and the discriminator's); ``smoothness_weight``: weight of MONAI's
    ``BendingEnergyLoss`` on the displacement (deformation output; 0: none); ``adversarial_weight``: weight of the
    adversarial term of the generator's loss (0, the default: L1 alone and no discriminator is built; DEP-GAN
    is adversarial: e.g. 0.01 with the L1 weight 1); ``criterion``: MONAI ``PatchAdversarialLoss``; ``patch``:
    edge of the random training patches (0: whole volumes), also the sliding window's at inference."""

    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    smoothness_weight: float = 1.0
    adversarial_weight: float = 0.0
    criterion: str = "least_squares"
    patch: int = 0

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ProgressionHParams":
        hp = from_dict(cls, d, "progression training setting")
        if not (hp.lr > 0 and hp.smoothness_weight >= 0 and hp.adversarial_weight >= 0 and hp.patch >= 0
                and hp.criterion in CRITERIA and len(hp.betas) == 2):
            raise UsageError(f"progression: lr > 0, smoothness_weight ≥ 0, adversarial_weight ≥ 0, patch ≥ 0, "
                             f"criterion one of {', '.join(CRITERIA)}, two betas (got {hp.lr}, "
                             f"{hp.smoothness_weight}, {hp.adversarial_weight}, {hp.patch}, {hp.criterion!r}, "
                             f"{list(hp.betas)})")
        hp.betas = (float(hp.betas[0]), float(hp.betas[1]))
        return hp
