"""Typed run configuration, saved as ``RUN/config.yaml`` at the start of training.

The file holds everything needed to rebuild the trained model (``model``: the
``HAGANConfig`` as a dict), to repeat the run (optimiser settings, seeds, the
ids of the training split) and to map generated intensities back to physical
units (``preprocess``: a copy of the data set's ``preprocess.json``).

Example::

    cfg = RunConfig.load("runs/thorax64")
    model_cfg = cfg.hagan_config()          # -> medgen.models.hagan.HAGANConfig
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from medgen.errors import InputError, UsageError
from medgen.fileio import atomic_write_text

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
    }
)


@dataclass
class RunConfig:
    """Settings of one training run. Defaults are the paper's (DESIGN.md §2).

    Learning rates are Adam step sizes; ``betas`` are Adam's (β1, β2). Intervals
    (``*_every``) are in iterations, one iteration being the four updates
    D, G, E^H, E^G on one global batch of ``batch`` volumes.
    """

    data: str
    model: dict[str, Any]
    preset: str = "paper"
    iters: int = 80_000
    max_minutes: float | None = None
    batch: int = 4
    lr_g: float = 1e-4
    lr_d: float = 4e-4
    lr_eh: float = 1e-4
    lr_eg: float = 1e-4
    betas: tuple[float, float] = (0.0, 0.999)
    adam_eps: float = 1e-8
    class_weight: float = 0.1
    use_encoder: bool = True
    slab_selection: str = "random"
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
    medgen_version: str = ""

    # -- (de)serialisation -------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        d["split_fractions"] = list(self.split_fractions)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise InputError(f"unknown keys in run configuration: {', '.join(unknown)}")
        d = dict(d)
        if "betas" in d:
            d["betas"] = tuple(float(b) for b in d["betas"])
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
        """Raise :class:`UsageError` (one line) for settings that cannot work."""
        checks = [
            (self.iters >= 0, f"iters {self.iters}: must be >= 0"),
            (self.batch >= 1, f"batch {self.batch}: must be at least 1"),
            (all(v > 0 for v in (self.lr_g, self.lr_d, self.lr_eh, self.lr_eg)), "learning rates must be > 0"),
            (len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), f"betas {self.betas}: need two values in [0, 1)"),
            (0 <= self.ema_decay < 1, f"ema_decay {self.ema_decay}: must be in [0, 1) (0 disables the EMA)"),
            (self.class_weight >= 0, f"class_weight {self.class_weight}: must be >= 0"),
            (self.slab_selection in ("random", "deterministic"), f"slab_selection {self.slab_selection!r}: random or deterministic"),
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
    def hagan_config(self):
        """The model's ``HAGANConfig`` (rebuilds G, D, E^H, E^G exactly)."""
        from medgen.models.hagan import HAGANConfig

        return HAGANConfig.from_dict(self.model)

    def differing_keys(self, other: "RunConfig", ignore: frozenset[str] = RESUMABLE_KEYS) -> list[str]:
        """Names of settings that differ from ``other`` (nested model keys as ``model.x``)."""
        a, b = self.to_dict(), other.to_dict()
        out = []
        for k in a:
            if k in ignore or a[k] == b.get(k):
                continue
            if k == "model" and isinstance(a[k], dict) and isinstance(b.get(k), dict):
                keys = sorted(set(a[k]) | set(b[k]))
                out += [f"model.{m}" for m in keys if a[k].get(m) != b[k].get(m)]
            else:
                out.append(k)
        return out
