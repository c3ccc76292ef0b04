"""A trained ``unet`` ready to translate volumes: what ``medgen.load`` returns for a ``unet`` run.

Example::

    model = medgen.load("runs/denoise64")
    clean = model.translate(noisy)                                 # (X, Y, Z) in [-1, 1] → same shape
    filled = model.translate({"degraded": x, "mask": m})           # several inputs, by name
    big = model.translate(ct256, window=64)                        # overlapping 64³ windows (bounded memory)
    normal = model.reconstruct(ct[None], box=4)  # an ``inpaint`` run: every voxel inpainted from its context
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medgen.core.errors import InputError, UsageError
from medgen.data.degradations.inpaint import body_mask, bounding_box, grid_masks, hide
from medgen.data.degradations.degradation import Scan
from medgen.data.degraded_set import from_scan_units, to_scan_units
from medgen.families import image_tasks
from medgen.families.unet.config import UNetConfig, UNetHParams, model_config
from medgen.families.unet.network import build_unet, predict


#: Edge (voxels) of the cubes mask-and-inpaint hides in turn (:meth:`InpaintingModel.reconstruct`).
DEFAULT_BOX = 4


@dataclass
class ImageToImageModel:
    """``network`` (EMA weights when the run has them, eval mode) mapping ``config.inputs`` to ``config.target``;
    ``window``: the sliding window's edge by default (the training patch; 0: whole volumes)."""

    config: UNetConfig
    network: torch.nn.Module
    run_config: Any = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    checkpoint: Path | None = None
    window: int = 0

    @property
    def preprocess(self) -> dict[str, Any]:
        return dict(getattr(self.run_config, "preprocess", None) or {})

    def input_channels(self, inputs: Any) -> np.ndarray:
        """``inputs`` as ``[len(config.inputs), X, Y, Z]`` float32 (:func:`medgen.families.image_tasks.input_channels`)."""
        return image_tasks.input_channels(tuple(self.config.inputs), inputs)

    @torch.no_grad()
    def translate(self, inputs: Any, window: int | None = None, overlap: float = 0.25) -> np.ndarray:
        """The predicted target ``(X, Y, Z)`` float32, clipped to [-1, 1] (see :meth:`input_channels`).

        window: edge of the overlapping cubic windows (a multiple of ``config.divisor``; default the
        training patch, 0 for whole volumes); overlap: their overlap fraction.
        """
        x = torch.from_numpy(self.input_channels(inputs))[None].to(self.device)
        w = self.window if window is None else int(window)
        if w and w % self.config.divisor:
            raise UsageError(f"window {w}: a multiple of {self.config.divisor}")
        if w and w >= max(x.shape[2:]):
            w = 0
        out = predict(self.network, x, self.config, window=w, overlap=overlap)
        return out[0, 0].clamp(-1.0, 1.0).float().cpu().numpy()


@dataclass
class InpaintingModel(ImageToImageModel):
    """An ``inpaint`` model (``keep_known`` with a ``mask`` input), which can also reconstruct whole volumes by
    mask-and-inpaint (:meth:`reconstruct`): what ``medgen anomaly`` needs. Only such models have ``reconstruct``,
    so the report and the anomaly command recognise them by it."""

    @torch.no_grad()
    def reconstruct(self, volumes: Any, box: int = DEFAULT_BOX, window: int | None = None, shifts: int = 1
                    ) -> np.ndarray:
        """Mask-and-inpaint: every voxel of ``volumes`` ``[N, X, Y, Z]`` (in [-1, 1]) as this ``inpaint`` model
        predicts it from its context, ``[N, X, Y, Z]`` float32 — the normal volume an anomaly detector compares
        with the input (:mod:`medgen.inference.anomaly`).

        The volume is cut into a checkerboard of cubes of edge ``box`` voxels; each of its 8 classes of cubes is
        hidden in turn (:func:`medgen.data.degradations.inpaint.grid_masks`), filled as in training (the mean of
        the visible body voxels, :func:`~medgen.data.degradations.inpaint.hide`) and inpainted, so each cube is
        predicted from its 26 visible neighbours. As in training, only the body's bounding box is hidden (the
        air around it is returned as it is). Anatomy that continues from the context (a vessel crossing
        the cube) is predicted; what the context does not announce (a nodule inside it) is not. Choose ``box``
        at least as large as the lesions to be found (in voxels; 4 at 6.25 mm is 25 mm).

        ``shifts``: the checkerboard is laid ``shifts`` times, its cube edges moved by ``round(j·box/shifts)``
        voxels along every axis (j = 0 … shifts − 1), and the reconstructions averaged, so each voxel is
        predicted from that many different contexts (``8·shifts`` inpaintings per volume). A lesion cut by the
        cubes' edges in one placement (its visible part announcing the rest) lies inside a cube in another,
        and the error a single placement makes at its edges averages out: on thorax-CT phantoms at 64³ with
        4-voxel cubes, the AUROC of the blob excess for nodules ≥ 10 mm on a selection set was 0.88–0.90 for
        each single placement, 0.91–0.92 for two and 0.92 for four; on the experiment's test phantoms 0.898 with one
        and 0.930 with four (README, Anomaly detection).
        """
        if int(box) < 1:
            raise UsageError(f"box {box}: the hidden cubes need an edge of at least 1 voxel")
        if not 1 <= int(shifts) <= int(box):
            raise UsageError(f"shifts {shifts}: need 1 to {int(box)} (the box's edge) placements of the checkerboard")
        info = self.preprocess
        if info.get("modality") not in ("ct", "mri"):
            raise InputError("the run's preprocess record names no modality (ct or mri): cannot fill hidden voxels")
        arr = np.asarray(volumes, dtype=np.float32)
        arr = arr[None] if arr.ndim == 3 else arr
        if arr.ndim != 4:
            raise UsageError(f"volumes of shape {tuple(np.shape(volumes))}: need [N, X, Y, Z] or one [X, Y, Z]")
        box, shifts = int(box), int(shifts)
        # offsets round(j·box/shifts) are distinct since shifts <= box
        placements = [grid_masks(arr.shape[1:], box, round(j * box / shifts)) for j in range(shifts)]
        out = np.empty_like(arr)
        for i, x in enumerate(arr):
            scan = Scan(to_scan_units(x, info), (1.0, 1.0, 1.0), info["modality"])
            # Training hides boxes inside the body's bounding box only: outside it the input is kept.
            lo, hi = bounding_box(body_mask(scan))
            inside = np.zeros(x.shape, dtype=bool)
            inside[lo[0]:hi[0] + 1, lo[1]:hi[1] + 1, lo[2]:hi[2] + 1] = True
            total = np.zeros(x.shape, np.float64)
            for masks in placements:
                rec = x.copy()
                for grid in masks:
                    mask = grid & inside
                    if not mask.any():
                        continue
                    hidden = hide(scan, mask)
                    inputs = {"degraded": from_scan_units(hidden["degraded"], info).astype(np.float32),
                              "mask": hidden["mask"].astype(np.float32)}
                    rec[mask] = self.translate(inputs, window=window)[mask]
                total += rec
            out[i] = (total / len(placements)).astype(np.float32)
        return out


def image_to_image_model(config: UNetConfig, *args: Any, **kwargs: Any) -> ImageToImageModel:
    """:class:`InpaintingModel` for an inpainting config, else :class:`ImageToImageModel` (same arguments)."""
    inpainting = config.task == "inpaint" and config.keep_known
    return (InpaintingModel if inpainting else ImageToImageModel)(config, *args, **kwargs)


def _eval(net: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    return net.to(device).eval().requires_grad_(False)


def trained_network(net: torch.nn.Module, weights: dict[str, dict[str, torch.Tensor]], name: str, use_ema: bool,
                    checkpoint: Path, device: torch.device, what: str = "UNet") -> torch.nn.Module:
    """``net`` with the checkpoint's weights ``name`` (``name_ema`` when ``use_ema`` and saved), in eval mode on
    ``device``; InputError (one line) when they are missing or do not fit the run's architecture."""
    key = f"{name}_ema" if use_ema and f"{name}_ema" in weights else name
    if key not in weights:
        raise InputError(f"{checkpoint}: the checkpoint holds no {what} weights")
    try:
        net.load_state_dict(weights[key])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise InputError(f"{checkpoint}: weights do not fit the {what} in the run's config.yaml ({first})") from None
    return _eval(net, device)


def seeded_network(build: Any, seed: int, device: torch.device) -> torch.nn.Module:
    """``build()`` at the random initialisation drawn from ``seed`` (the global generator left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build()
    return _eval(net, device)


def load_model(run_cfg: Any, weights: dict[str, dict[str, torch.Tensor]], checkpoint: Path, device: torch.device,
               use_ema: bool = True) -> ImageToImageModel:
    """The network of a ``unet`` run (its EMA copy unless ``use_ema`` is False)."""
    cfg = UNetConfig.from_dict(run_cfg.model)
    hp = UNetHParams.from_dict(dict(run_cfg.hparams or {}))
    net = trained_network(build_unet(cfg), weights, "unet", use_ema, checkpoint, device)
    return image_to_image_model(cfg, net, run_cfg, device, checkpoint, window=hp.patch)


def build(preset: str = "tiny", size: int = 32, seed: int = 0, device: torch.device = torch.device("cpu"),
          encoder: bool = False, **overrides: Any) -> ImageToImageModel:
    """An untrained network (random initialisation drawn from ``seed``) of ``preset`` at ``size``³."""
    cfg = model_config(preset, size, **overrides)
    return image_to_image_model(cfg, seeded_network(lambda: build_unet(cfg), seed, device))


def build_untrained(run_cfg: Any, seed: int = 0, device: torch.device = torch.device("cpu")) -> ImageToImageModel:
    """The architecture of a ``unet`` run at a random initialisation drawn from ``seed``."""
    cfg = UNetConfig.from_dict(run_cfg.model)
    return image_to_image_model(cfg, seeded_network(lambda: build_unet(cfg), seed, device), run_cfg, device, None)
