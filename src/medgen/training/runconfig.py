"""Typed run configuration, saved as ``RUN/config.yaml`` at the start of training.

The file names the model family (``family``, see :mod:`medgen.families.registry`)
and holds everything needed to rebuild the trained model (``model``: the
family's architecture configuration as a dict), the family's training
hyper-parameters (``hparams``: learning rates, loss weights, ...), the loop's
own settings (iterations, batch, seeds, intervals, the ids of the training
split) and what maps generated intensities back to physical units
(``preprocess``: a copy of the data set's ``preprocess.json``; ``spacing``: the
training volumes' voxel size in mm, recorded when training starts, so that a
run folder gives generated volumes their voxel size wherever it is moved).

A ``config.yaml`` written before families existed has no ``family`` key and
holds HA-GAN's hyper-parameters at the top level; :meth:`RunConfig.from_dict`
reads it as an HA-GAN run with those values moved into ``hparams``, so every
existing run still loads, resumes and generates the same volumes.

Example::

    cfg = RunConfig.load("runs/thorax64")
    cfg.family, cfg.model["size"], cfg.hparams["lr_g"]
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from medgen.core.errors import InputError, UsageError
from medgen.core.fileio import atomic_write_text

CONFIG_NAME = "config.yaml"

# Keys that may differ between a run and its resumption: they change how long
# the run goes on, where it runs or how often it reports, not what it learns.
RESUMABLE_KEYS = frozenset(
    {
        "data",
        "iters",
        "max_minutes",
        "device",
        "precision",
        "workers",
        "log_every",
        "sample_every",
        "ckpt_every",
        "keep_checkpoints",
        "num_samples",
        "medgen_version",
        "spacing",  # recorded from the data, not learned; a run made before it was recorded gains it on resume
    }
)


# Keys of config files written before families existed: HA-GAN's hyper-parameters, now under ``hparams``.
LEGACY_HAGAN_KEYS = ("lr_g", "lr_d", "lr_eh", "lr_eg", "betas", "adam_eps", "class_weight", "use_encoder", "slab_selection")
LEGACY_FAMILY = "hagan"


@dataclass
class RunConfig:
    """Settings of one training run.

    ``family``: the registered model family; ``model``: its architecture
    configuration; ``hparams``: its training hyper-parameters (validated by the
    family). Everything else belongs to the shared loop. Intervals (``*_every``)
    are in iterations, one iteration being one call of the family's training
    step on one global batch of ``batch`` volumes.
    """

    data: str
    model: dict[str, Any]
    family: str = "hagan"
    hparams: dict[str, Any] = field(default_factory=dict)
    preset: str = "paper"
    iters: int = 80_000
    max_minutes: float | None = None
    batch: int = 4
    ema_decay: float = 0.999
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    workers: int = -1  # data loader processes; -1 = auto (2 on CUDA, 0 on CPU)
    log_every: int = 20
    sample_every: int = 500
    ckpt_every: int = 1000
    keep_checkpoints: int = 3
    num_samples: int = 4
    label_column: str | None = None
    split_seed: int = 0
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    train_ids: list[str] = field(default_factory=list)
    preprocess: dict[str, Any] = field(default_factory=dict)
    spacing: list[float] | None = None  # voxel size in mm (x, y, z) of the training volumes; None: unknown
    medgen_version: str = ""

    # -- (de)serialisation -------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["hparams"] = {k: list(v) if isinstance(v, tuple) else v for k, v in self.hparams.items()}
        d["split_fractions"] = list(self.split_fractions)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        d = dict(d)
        if "family" not in d:  # written before families existed: an HA-GAN run
            d["family"] = LEGACY_FAMILY
            hparams = dict(d.get("hparams") or {})
            for key in LEGACY_HAGAN_KEYS:
                if key in d:
                    hparams[key] = d.pop(key)
            d["hparams"] = hparams
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise InputError(f"unknown keys in run configuration: {', '.join(unknown)}")
        if "split_fractions" in d:
            d["split_fractions"] = tuple(float(f) for f in d["split_fractions"])
        return cls(**d)

    def save(self, run_dir: str | os.PathLike) -> Path:
        path = Path(run_dir) / CONFIG_NAME
        text = yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)
        atomic_write_text(path, text)
        return path

    @classmethod
    def load(cls, run_dir: str | os.PathLike) -> "RunConfig":
        """Read ``RUN/config.yaml`` (``run_dir`` may also be the yaml file itself)."""
        path = Path(run_dir)
        if path.is_dir():
            path = path / CONFIG_NAME
        if not path.is_file():
            raise InputError(f"{path}: no run configuration here (is this a training run folder?)")
        try:
            d = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise InputError(f"{path}: not valid YAML ({exc.__class__.__name__})") from None
        if not isinstance(d, dict):
            raise InputError(f"{path}: expected a mapping of settings")
        try:
            return cls.from_dict(d)
        except TypeError as exc:
            raise InputError(f"{path}: {exc}") from None

    def validate(self) -> None:
        """Raise :class:`UsageError` (one line) for loop settings that cannot work (the family checks ``hparams``)."""
        checks = [
            (self.iters >= 0, f"iters {self.iters}: must be >= 0"),
            (self.batch >= 1, f"batch {self.batch}: must be at least 1"),
            (0 <= self.ema_decay < 1, f"ema_decay {self.ema_decay}: must be in [0, 1) (0 disables the EMA)"),
            (self.device in ("auto", "cpu", "cuda"), f"device {self.device!r}: auto, cpu or cuda"),
            (self.precision in ("auto", "bf16", "fp32"), f"precision {self.precision!r}: auto, bf16 or fp32"),
            (self.workers >= -1, f"workers {self.workers}: must be >= 0 (or -1 = auto)"),
            (min(self.log_every, self.ckpt_every) >= 1, "log_every and ckpt_every must be >= 1"),
            (min(self.sample_every, self.keep_checkpoints, self.num_samples) >= 0, "sample_every, keep and num_samples must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise UsageError(message)

    # -- helpers -----------------------------------------------------------
    def differing_keys(self, other: "RunConfig", ignore: frozenset[str] = RESUMABLE_KEYS) -> list[str]:
        """Names of settings that differ from ``other`` (nested keys as ``model.x`` / ``hparams.x``)."""
        a, b = self.to_dict(), other.to_dict()
        out = []
        for k in a:
            if k in ignore or a[k] == b.get(k):
                continue
            if k in ("model", "hparams") and isinstance(a[k], dict) and isinstance(b.get(k), dict):
                keys = sorted(set(a[k]) | set(b[k]))
                out += [f"{k}.{m}" for m in keys if a[k].get(m) != b[k].get(m)]
            else:
                out.append(k)
        return out
