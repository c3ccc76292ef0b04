"""The ``registration`` family's architecture (:class:`RegistrationConfig`), presets and hyper-parameters
(:class:`RegistrationHParams`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from medgen.core.errors import UsageError
from medgen.core.settings import from_dict

SIMILARITIES = ("lncc", "mse")
REGULARIZERS = ("bending", "diffusion")
PAIRS = ("random", "synthetic")


@dataclass
class RegistrationConfig:
    """MONAI's ``VoxelMorph`` with a ``VoxelMorphUNet`` backbone: (moving, fixed) → displacement in voxels.

    channels: the backbone's widths, one (down, up) pair per level (``VoxelMorphUNet``'s ``channels``); each
        pair halves the resolution once, so the volume edge must be a multiple of ``2 ** (len(channels) // 2)``.
    unet_out_channels, final_conv_channels: the backbone's last widths before the 3-channel velocity.
    integration_steps: scaling-and-squaring steps integrating the network's stationary velocity field into a
        diffeomorphic displacement (MONAI ``DVF2DDF``); 0: the network's output is the displacement itself.
    label: a label-map volume of the data set (``--target NAME``) read with each image for weak supervision
        (Dice of the warped moving labels against the fixed ones; weighted by the ``seg_weight``
        hyper-parameter, logged whatever its weight); empty: none. num_classes: its classes 0..K-1.
    d_channels, d_layers: the adversarial variant's ``PatchDiscriminator`` (built only when the
        ``adversarial_weight`` hyper-parameter is > 0).
    """

    size: int = 32
    channels: tuple[int, ...] = (16, 32, 32, 32)
    unet_out_channels: int = 32
    final_conv_channels: tuple[int, ...] = (16, 16)
    integration_steps: int = 7
    label: str = ""
    num_classes: int = 0
    d_channels: int = 16
    d_layers: int = 2

    def __post_init__(self) -> None:
        ch = tuple(self.channels)
        if len(ch) < 2 or len(ch) % 2 or min(ch) < 1:
            raise UsageError(f"channels {list(ch)}: need (down, up) pairs of positive widths, e.g. [16, 32, 32, 32]")
        if self.unet_out_channels < 1 or not self.final_conv_channels or min(self.final_conv_channels) < 1:
            raise UsageError(f"unet_out_channels {self.unet_out_channels}, final_conv_channels "
                             f"{list(self.final_conv_channels)}: need positive widths (at least one final convolution)")
        if self.integration_steps < 0:
            raise UsageError(f"integration_steps {self.integration_steps}: need ≥ 0 (0 = plain displacement)")
        if self.size < 8 or self.size % self.divisor:
            raise UsageError(f"size {self.size}: a multiple of {self.divisor} (2 to the number of channel pairs), ≥ 8")
        if self.label and self.num_classes < 2:
            raise UsageError(f"label volume {self.label!r}: num_classes {self.num_classes}; need ≥ 2 "
                             "(background + one), or --num-classes K")
        if not self.label and self.num_classes:
            raise UsageError(f"num_classes {self.num_classes}: registration reads classes only of a label volume "
                             "(--target NAME)")
        if self.d_channels < 1 or self.d_layers < 1:
            raise UsageError(f"d_channels {self.d_channels} and d_layers {self.d_layers}: need ≥ 1")

    @property
    def divisor(self) -> int:
        return 2 ** (len(self.channels) // 2)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RegistrationConfig":
        return from_dict(cls, d, "registration model setting")


PRESETS: dict[str, dict[str, Any]] = {
    # 16³–32³ on a CPU in minutes
    "tiny": dict(channels=(8, 16, 16, 16), unet_out_channels=16, final_conv_channels=(8,), d_channels=8),
    "small": dict(channels=(16, 32, 32, 32), unet_out_channels=32, final_conv_channels=(16, 16)),
    # the VoxelMorph paper's widths (Balakrishnan et al. 2019; MONAI's VoxelMorph default backbone)
    "base": dict(channels=(16, 32, 32, 32, 32, 32), unet_out_channels=32, final_conv_channels=(16, 16),
                 d_channels=32, d_layers=3),
}
DEFAULT_PRESET = "small"


def model_config(preset: str, size: int, num_classes: int | None = None, target: str | None = None,
                 task: str | None = None, inputs: Any = None, **overrides: Any) -> RegistrationConfig:
    """Preset ``preset`` at ``size``³; ``target``: the label volume for weak supervision (with ``num_classes``,
    which ``medgen train`` reads from ``preprocess.json`` when not given). Overrides whose value is None are
    ignored."""
    if preset not in PRESETS:
        raise UsageError(f"unknown registration preset {preset!r} (choose from {', '.join(PRESETS)})")
    if task is not None or inputs is not None:
        raise UsageError("--task/--inputs: registration reads the data set's image volume (pairs of it); "
                         "--target names a label volume for weak supervision")
    fields: dict[str, Any] = dict(PRESETS[preset], size=size)
    if target is not None:
        fields["label"] = target
    if num_classes is not None:
        fields["num_classes"] = int(num_classes)
    fields.update({k: v for k, v in overrides.items() if v is not None})
    return RegistrationConfig.from_dict(fields)


def options_from_data(info: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with ``num_classes`` of the label volume ``target`` read from the data set's
    ``preprocess.json`` (``info``) when a target is given without it."""
    name = options.get("target")
    if not name or options.get("num_classes") is not None:
        return options
    from medgen.data.dataset import label_class_count

    k = label_class_count(info, name, f"--target {name}: the data set has no label volume of that name")
    return {**options, "num_classes": max(k, 2)}


@dataclass
class RegistrationHParams:
    """Training of the ``registration`` family (see :mod:`medgen.families.registration.train`).

    lr: Adam's learning rate of the registration network.
    similarity: ``lncc`` (local normalised cross-correlation over ``lncc_window``³ windows, MONAI
        ``LocalNormalizedCrossCorrelationLoss``) or ``mse`` between the warped moving and the fixed image.
    regularizer, reg_weight: ``bending`` (MONAI ``BendingEnergyLoss``) or ``diffusion`` (``DiffusionLoss``,
        VoxelMorph's ∑|∇u|²) of the displacement in voxels, weighted by λ = ``reg_weight``.
    seg_weight: weight of the Dice loss of the warped moving label map (needs the model's ``label``).
    pairs: ``random``: each volume of a process's batch is the fixed image of a pair whose moving image is
        another volume of the batch, drawn with the step's generator (a process holding one volume pairs it
        with a synthetic deformation of itself); ``synthetic``: every pair is a volume and itself warped by
        a random smooth displacement of at most ``synthetic_shift`` voxels.
    atlas: atlas-to-subject training when set: the moving image of every pair is this fixed atlas volume
        and the fixed image each volume of the batch. A ``.npy``/NIfTI file of the model's size in the
        data's [-1, 1] units, or ``DATA:ID`` of a preprocessed data set; read when the run starts (and when it
        is resumed, the checkpoint's copy then replacing it) and stored with the network's weights
        (``model.atlas``).
    adversarial_weight: > 0 adds a ``PatchDiscriminator`` judging (image, fixed) pairs (lr ``lr_d``): the
        pair (``real_mix``·fixed + (1 − ``real_mix``)·moving, fixed) is a well-registered one, (warped,
        fixed) the network's; its least-squares adversarial loss is added with this weight.
    """

    lr: float = 1e-3
    similarity: str = "lncc"
    lncc_window: int = 9
    regularizer: str = "bending"
    reg_weight: float = 1.0
    seg_weight: float = 0.0
    pairs: str = "random"
    atlas: str = ""
    synthetic_shift: float = 3.0
    adversarial_weight: float = 0.0
    lr_d: float = 1e-4
    real_mix: float = 0.8

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RegistrationHParams":
        hp = from_dict(cls, d, "registration training setting")
        if hp.similarity not in SIMILARITIES:
            raise UsageError(f"similarity {hp.similarity!r}: choose {' or '.join(SIMILARITIES)}")
        if hp.regularizer not in REGULARIZERS:
            raise UsageError(f"regularizer {hp.regularizer!r}: choose {' or '.join(REGULARIZERS)}")
        if hp.pairs not in PAIRS:
            raise UsageError(f"pairs {hp.pairs!r}: choose one of {', '.join(PAIRS)}")
        if hp.atlas and hp.pairs != "random":
            raise UsageError(f"atlas={hp.atlas}: atlas-to-subject pairs are neither random nor synthetic; leave pairs out")
        if not hp.lr > 0 or not hp.lr_d > 0:
            raise UsageError(f"lr {hp.lr} and lr_d {hp.lr_d}: need > 0")
        if hp.lncc_window < 3 or hp.lncc_window % 2 == 0:
            raise UsageError(f"lncc_window {hp.lncc_window}: an odd number ≥ 3")
        if min(hp.reg_weight, hp.seg_weight, hp.adversarial_weight) < 0 or not hp.synthetic_shift > 0:
            raise UsageError("reg_weight, seg_weight, adversarial_weight: need ≥ 0; synthetic_shift > 0")
        if not 0 <= hp.real_mix <= 1:
            raise UsageError(f"real_mix {hp.real_mix}: between 0 and 1")
        return hp
