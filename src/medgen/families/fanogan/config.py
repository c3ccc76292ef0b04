"""The f-AnoGAN model's configuration (:class:`FAnoGANConfig`) and its presets.

A ``fanogan`` run is tied to one trained ``hagan`` run (``--generator RUN``): its
configuration copies that run's architecture (``generator``: the HA-GAN configuration, so
the encoder E has the run's E^H + E^G shapes and z its ``latent_dim``), remembers the run
folder as given (``generator_run``) and the checkpoint whose weights it starts from
(``generator_checkpoint``). The frozen G and D travel inside every ``fanogan`` checkpoint, so
a trained ``fanogan`` run scores volumes without the HA-GAN run.

Presets: the encoder's architecture is the HA-GAN run's, so a preset changes no network;
``paper`` and ``tiny`` exist for the shared ``--preset`` interface (the optimisation settings
are hyper-parameters, :class:`~medgen.families.fanogan.train.FAnoGANHParams`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medgen.core.errors import InputError, UsageError
from medgen.core.settings import from_dict
from medgen.families.hagan.config import HAGANConfig

GENERATOR_FAMILY = "hagan"


@dataclass
class FAnoGANConfig:
    """The HA-GAN run whose G and D are frozen and whose encoder shapes E (module docstring)."""

    size: int = 32
    generator: dict[str, Any] = field(default_factory=dict)
    generator_run: str = ""
    generator_checkpoint: str = ""

    def __post_init__(self) -> None:
        self.validate()

    def gan_config(self) -> HAGANConfig:
        """The HA-GAN architecture (G, D and the encoder E^H + E^G)."""
        return HAGANConfig.from_dict(self.generator or {"size": self.size})

    @property
    def latent_dim(self) -> int:
        return self.gan_config().latent_dim

    @property
    def num_classes(self) -> int:
        """0: f-AnoGAN works on an unconditional HA-GAN (:meth:`validate`)."""
        return 0

    def validate(self) -> None:
        """UsageError (one line) for an HA-GAN of another size or a class-conditional one."""
        gan = self.gan_config()
        if gan.size != self.size:
            raise UsageError(f"the HA-GAN works on {gan.size}³ volumes, this model on {self.size}³")
        if gan.num_classes:
            raise UsageError("f-AnoGAN needs an unconditional HA-GAN; this one is class-conditional "
                             f"({gan.num_classes} classes)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FAnoGANConfig":
        return from_dict(cls, d, "f-AnoGAN model setting")


PRESETS: dict[str, dict[str, Any]] = {
    # The encoder, G and D are the HA-GAN run's: nothing to choose.
    "paper": {},
    "tiny": {},
}
DEFAULT_PRESET = "paper"


def generator_of_run(run: str | Path, size: int) -> dict[str, Any]:
    """``generator``, ``generator_run`` and ``generator_checkpoint`` of an f-AnoGAN configuration for the
    trained ``hagan`` run ``run``; InputError/UsageError (one line) if it cannot serve."""
    from medgen.training.checkpoint import resolve_checkpoint
    from medgen.training.runconfig import RunConfig

    folder = Path(run)
    if not folder.is_dir():
        raise InputError(f"--generator {run}: no such run folder")
    try:
        saved = RunConfig.load(folder)
    except InputError as exc:
        raise InputError(f"--generator {run}: not a training run ({exc})") from None
    if saved.family != GENERATOR_FAMILY:
        raise UsageError(f"--generator {run}: a {saved.family!r} run, not an HA-GAN ({GENERATOR_FAMILY!r}) one")
    gan = HAGANConfig.from_dict(saved.model)
    if gan.size != size:
        raise UsageError(f"--generator {run}: trained on {gan.size}³ volumes, the data are {size}³")
    if gan.num_classes:
        raise UsageError(f"--generator {run}: a class-conditional HA-GAN ({gan.num_classes} classes); "
                         "f-AnoGAN needs an unconditional one")
    try:
        checkpoint = resolve_checkpoint(folder)
    except InputError:
        raise InputError(f"--generator {run}: the HA-GAN run has no checkpoint yet") from None
    return {"generator": gan.to_dict(), "generator_run": str(run), "generator_checkpoint": str(checkpoint)}


def model_config(preset: str, size: int, **overrides: Any) -> FAnoGANConfig:
    """Preset ``preset`` at ``size``³ on the HA-GAN of run ``generator_run`` (required); overrides whose value
    is None are ignored. ``generator``: an HA-GAN configuration dict instead of a run (random G, D and E:
    benchmarks and tests only)."""
    if preset not in PRESETS:
        raise UsageError(f"unknown f-AnoGAN preset {preset!r} (choose from {', '.join(PRESETS)})")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    gan_fields = sorted(k for k in overrides if k in {f.name for f in dataclasses.fields(HAGANConfig)} and k != "size")
    if gan_fields:
        raise UsageError(f"{', '.join(gan_fields)}: an f-AnoGAN model's architecture is its HA-GAN run's "
                         "(--generator RUN); it cannot be set")
    run = overrides.pop("generator_run", None)
    fields = dict(PRESETS[preset], size=size)
    if run is not None:
        fields.update(generator_of_run(run, size))
    elif "generator" not in overrides:
        raise UsageError("--family fanogan needs --generator RUN: a trained `medgen train --family hagan` run")
    fields.update(overrides)
    return FAnoGANConfig.from_dict(fields)
