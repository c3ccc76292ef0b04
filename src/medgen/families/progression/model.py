"""A trained ``progression`` model: what ``medgen.load`` returns for a ``progression`` run.

Example::

    model = medgen.load("runs/atrophy64")
    followup = model.predict(baseline, interval_years=3.0)          # (X, Y, Z) in [-1, 1] → same shape
    several = model.predict(baselines, [1.0, 2.5, 4.0])             # [n, X, Y, Z], one interval each
    out = model.predict_with_field(baseline, 3.0)                   # deformation models: also the displacement
    out["followup"], out["displacement"]                            # (X, Y, Z) and [3, X, Y, Z] in voxels
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medgen.core.errors import UsageError
from medgen.families.progression.config import ProgressionConfig, ProgressionHParams, model_config
from medgen.families.progression.network import build_network, predict
from medgen.families.unet.model import seeded_network, trained_network


def as_volumes(baseline: Any) -> tuple[np.ndarray, bool]:
    """``baseline`` as float32 ``[n, X, Y, Z]`` and whether one ``(X, Y, Z)`` volume was given."""
    if torch.is_tensor(baseline):
        baseline = baseline.detach().cpu().numpy()
    arr = np.asarray(baseline, dtype=np.float32)
    if arr.ndim == 5 and arr.shape[1] == 1:  # [n, 1, X, Y, Z], as a data batch holds them
        arr = arr[:, 0]
    if arr.ndim not in (3, 4) or 0 in arr.shape:
        raise UsageError(f"baseline of shape {arr.shape}: need one (X, Y, Z) volume or [n, X, Y, Z]")
    return (arr[None], True) if arr.ndim == 3 else (arr, False)


def as_intervals(interval_years: Any, n: int) -> np.ndarray:
    t = np.asarray(interval_years.detach().cpu() if torch.is_tensor(interval_years) else interval_years,
                   dtype=np.float32).reshape(-1)
    if t.size == 1:
        t = np.repeat(t, n)
    if t.size != n or not np.isfinite(t).all():
        raise UsageError(f"interval_years: one finite number, or one per volume ({n}); got {t.size} value(s)")
    return t


@dataclass
class ProgressionModel:
    """``network`` (EMA weights when the run has them, eval mode) predicting ``config.target`` from
    ``config.baseline`` and the interval; ``window``: the sliding window's edge by default (the training patch;
    0: whole volumes)."""

    config: ProgressionConfig
    network: torch.nn.Module
    run_config: Any = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    checkpoint: Path | None = None
    window: int = 0

    @property
    def preprocess(self) -> dict[str, Any]:
        return dict(getattr(self.run_config, "preprocess", None) or {})

    @torch.no_grad()
    def _run(self, baseline: Any, interval_years: Any, window: int | None, overlap: float
             ) -> tuple[np.ndarray, np.ndarray | None, bool]:
        vols, single = as_volumes(baseline)
        t = as_intervals(interval_years, len(vols))
        w = self.window if window is None else int(window)
        if w and w % self.config.divisor:
            raise UsageError(f"window {w}: a multiple of {self.config.divisor}")
        if w and w >= max(vols.shape[1:]):
            w = 0
        outs, fields = [], []
        for v, ti in zip(vols, t):  # one volume at a time: bounded memory
            x = torch.from_numpy(np.ascontiguousarray(v))[None, None].to(self.device)
            out, u = predict(self.network, x, torch.tensor([ti], device=self.device), self.config, window=w,
                             overlap=overlap)
            outs.append(out[0, 0].clamp(-1.0, 1.0).float().cpu().numpy())
            if u is not None:
                fields.append(u[0].float().cpu().numpy())
        return np.stack(outs), (np.stack(fields) if fields else None), single

    def predict(self, baseline: Any, interval_years: Any, window: int | None = None,
                overlap: float = 0.25) -> np.ndarray:
        """The predicted follow-up, float32 in [-1, 1]: ``(X, Y, Z)`` for one baseline ``(X, Y, Z)``, ``[n, X, Y, Z]``
        for ``[n, X, Y, Z]``; ``interval_years``: one number or one per volume.

        window: edge of overlapping cubic windows (a multiple of ``config.divisor``; default the training patch,
        0 for whole volumes); overlap: their overlap fraction.
        """
        out, _, single = self._run(baseline, interval_years, window, overlap)
        return out[0] if single else out

    def predict_with_field(self, baseline: Any, interval_years: Any, window: int | None = None,
                           overlap: float = 0.25) -> dict[str, np.ndarray]:
        """``{"followup": as predict, "displacement": [3, X, Y, Z] (or [n, 3, X, Y, Z]) float32}`` for a
        ``deformation`` model: the displacement in voxels, component ``d`` along array axis ``d``, follow-up(p) =
        baseline(p + u(p)). UsageError for an ``intensity`` model (it predicts no field)."""
        if self.config.output != "deformation":
            raise UsageError("this progression model predicts intensities (output=intensity), not a displacement")
        out, u, single = self._run(baseline, interval_years, window, overlap)
        return {"followup": out[0], "displacement": u[0]} if single else {"followup": out, "displacement": u}


def load_model(run_cfg: Any, weights: dict[str, dict[str, torch.Tensor]], checkpoint: Path, device: torch.device,
               use_ema: bool = True) -> ProgressionModel:
    """The generator of a ``progression`` run (its EMA copy unless ``use_ema`` is False)."""
    cfg = ProgressionConfig.from_dict(run_cfg.model)
    hp = ProgressionHParams.from_dict(dict(run_cfg.hparams or {}))
    net = trained_network(build_network(cfg), weights, "net", use_ema, checkpoint, device, what="progression network")
    return ProgressionModel(cfg, net, run_cfg, device, checkpoint, window=hp.patch)


def build(preset: str = "tiny", size: int = 32, seed: int = 0, device: torch.device = torch.device("cpu"),
          encoder: bool = False, **overrides: Any) -> ProgressionModel:
    """An untrained model (random initialisation drawn from ``seed``; its head is zero, so it predicts no
    change) of ``preset`` at ``size``³."""
    cfg = model_config(preset, size, **overrides)
    return ProgressionModel(cfg, seeded_network(lambda: build_network(cfg), seed, device), device=device)


def build_untrained(run_cfg: Any, seed: int = 0, device: torch.device = torch.device("cpu")) -> ProgressionModel:
    """The architecture of a ``progression`` run at a random initialisation drawn from ``seed``."""
    cfg = ProgressionConfig.from_dict(run_cfg.model)
    return ProgressionModel(cfg, seeded_network(lambda: build_network(cfg), seed, device), run_cfg, device, None)
