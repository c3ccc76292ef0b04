"""A trained ``registration`` model ready to register pairs: what ``medgen.load`` returns for a ``registration`` run.

Convention (:mod:`medgen.metrics.registration`): volumes are ``(X, Y, Z)`` arrays in the data's [-1, 1] units;
the displacement ``u`` is ``[3, X, Y, Z]`` in voxels, component ``d`` along array axis ``d``; the moving
image warped onto the fixed grid is ``warped(p) = moving(p + u(p))``; ``jacobian`` is ``det(I + ∇u)``
(≤ 0 where the transform folds).

Example::

    model = medgen.load("runs/reg32")
    out = model.register(moving, fixed)          # {"warped", "displacement", "jacobian"}
    labels_on_fixed = model.warp(moving_labels, out["displacement"], mode="nearest")
    out = model.register(model.atlas, subject)   # an atlas-to-subject run
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medgen.core.errors import UsageError
from medgen.families.registration.config import RegistrationConfig, RegistrationHParams, model_config
from medgen.families.registration.network import build_network, pad_to
from medgen.families.unet.model import seeded_network, trained_network


@dataclass
class RegistrationModel:
    """``network`` (EMA weights when the run has them, eval mode): a VoxelMorph of ``config``."""

    config: RegistrationConfig
    network: torch.nn.Module
    run_config: Any = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    checkpoint: Path | None = None

    @property
    def preprocess(self) -> dict[str, Any]:
        """The training data's ``preprocess.json`` (how scans are normalised to the model's units)."""
        return dict(getattr(self.run_config, "preprocess", None) or {})

    @property
    def atlas(self) -> np.ndarray | None:
        """The atlas ``(S, S, S)`` of an atlas-to-subject run (the moving image it was trained with), else None."""
        a = getattr(self.network, "atlas", None)
        return None if a is None else a[0, 0].float().cpu().numpy()

    @torch.no_grad()
    def register(self, moving: Any, fixed: Any) -> dict[str, np.ndarray]:
        """Register ``moving`` to ``fixed`` (two ``(X, Y, Z)`` arrays of one shape in [-1, 1]; sizes other than a
        multiple of ``config.divisor`` are padded with border values and cropped back):
        ``{"warped": (X, Y, Z), "displacement": [3, X, Y, Z] voxels, "jacobian": (X, Y, Z)}``, float32."""
        from medgen.metrics.registration import jacobian_determinant

        m, f = np.asarray(moving, dtype=np.float32), np.asarray(fixed, dtype=np.float32)
        if m.ndim != 3 or m.shape != f.shape:
            raise UsageError(f"register: two (X, Y, Z) volumes of one shape; got {m.shape} and {f.shape}")
        x = torch.from_numpy(np.stack([m, f]))[:, None].to(self.device)
        x, shape = pad_to(x, self.config.divisor)
        warped, ddf = self.network(x[:1], x[1:])
        X, Y, Z = shape
        u = ddf[0, :, :X, :Y, :Z].float().cpu().numpy()
        return {"warped": warped[0, 0, :X, :Y, :Z].float().cpu().numpy(), "displacement": u,
                "jacobian": jacobian_determinant(u).astype(np.float32)}

    def warp(self, volume: Any, displacement: Any, mode: str = "bilinear") -> np.ndarray:
        """``volume`` ``(X, Y, Z)`` resampled at ``p + u(p)``: ``bilinear`` (trilinear; intensities) or ``nearest``
        (label maps, their dtype kept); border values outside (:func:`medgen.inference.register.warp`)."""
        from medgen.inference.register import warp

        return warp(volume, displacement, mode)


def load_model(run_cfg: Any, weights: dict[str, dict[str, torch.Tensor]], checkpoint: Path, device: torch.device,
               use_ema: bool = True) -> RegistrationModel:
    """The network of a ``registration`` run (its EMA copy unless ``use_ema`` is False)."""
    cfg = RegistrationConfig.from_dict(run_cfg.model)
    hp = RegistrationHParams.from_dict(dict(run_cfg.hparams or {}))
    net = trained_network(build_network(cfg, with_atlas=bool(hp.atlas)), weights, "net", use_ema, checkpoint, device,
                          what="registration network")
    return RegistrationModel(cfg, net, run_cfg, device, checkpoint)


def build(preset: str = "tiny", size: int = 32, seed: int = 0, device: torch.device = torch.device("cpu"),
          encoder: bool = False, **overrides: Any) -> RegistrationModel:
    """An untrained network (random initialisation drawn from ``seed``; close to the identity transform)."""
    cfg = model_config(preset, size, **overrides)
    return RegistrationModel(cfg, seeded_network(lambda: build_network(cfg), seed, device), device=device)


def build_untrained(run_cfg: Any, seed: int = 0, device: torch.device = torch.device("cpu")) -> RegistrationModel:
    """The architecture of a ``registration`` run at a random initialisation drawn from ``seed`` (an atlas run's
    atlas is left at zeros: it comes with the trained weights)."""
    cfg = RegistrationConfig.from_dict(run_cfg.model)
    hp = RegistrationHParams.from_dict(dict(run_cfg.hparams or {}))
    net = seeded_network(lambda: build_network(cfg, with_atlas=bool(hp.atlas)), seed, device)
    return RegistrationModel(cfg, net, run_cfg, device, None)
