"""Parameter counts and tensor shapes of every HA-GAN block, for ``medgen model-info``.

The networks are built on PyTorch's ``meta`` device (shapes only, no memory),
so even the 512³ model is summarised instantly.
"""

from __future__ import annotations

import contextlib
from typing import Any
from unittest import mock

import torch
from torch import nn
from torch.nn.utils import parametrizations

from medgen.families.hagan.classifier import Classifier
from medgen.families.hagan.config import HAGANConfig
from medgen.families.hagan.discriminator import Discriminator
from medgen.families.hagan.encoder import Encoder
from medgen.families.hagan.generator import Generator

# Paper symbol → (attribute path, class name, meaning).
BLOCKS: dict[str, tuple[str, str]] = {
    "G^A": ("generator.common", "common block: z → feature map A"),
    "G^L": ("generator.low", "low-resolution block: A → low-res volume"),
    "G^H": ("generator.high", "high-resolution block: A slab → full-res slab"),
    "D^H": ("discriminator.high", "high-resolution discriminator: slab + position"),
    "D^L": ("discriminator.low", "low-resolution discriminator: low-res volume"),
    "E^H": ("encoder.high", "high-resolution encoder: slab → A slab"),
    "E^G": ("encoder.ground", "ground encoder: A → z"),
    "C^H": ("classifier.high", "auxiliary classifier (classifier conditioning): slab + position → class"),
    "C^L": ("classifier.low", "auxiliary classifier (classifier conditioning): low-res volume → class"),
}


def num_params(module: nn.Module | None) -> int:
    """Number of trainable scalars of ``module`` (0 for None)."""
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def build_meta(cfg: HAGANConfig) -> dict[str, nn.Module]:
    """Generator, discriminator, encoder and (classifier conditioning) classifier built on the meta device.

    Spectral normalisation's initial power iteration only refines its u, v
    buffers (no parameters, no shapes); on meta tensors it is meaningless and
    slow (Python reference kernels), so it is skipped here.
    """
    # A private torch method: patched only where it exists, so a future torch costs time, not a crash.
    sn = getattr(parametrizations, "_SpectralNorm", None)
    if sn is not None and hasattr(sn, "_power_method"):
        no_power_iteration = mock.patch.object(sn, "_power_method", lambda *a, **k: None)
    else:
        no_power_iteration = contextlib.nullcontext()
    with torch.device("meta"), no_power_iteration:
        models = {"generator": Generator(cfg), "discriminator": Discriminator(cfg), "encoder": Encoder(cfg)}
        if cfg.num_classes > 0 and cfg.class_conditioning == "classifier":
            models["classifier"] = Classifier(cfg)
        return models


def _block(models: dict[str, nn.Module], path: str) -> nn.Module | None:
    owner, attr = path.split(".")
    return getattr(models[owner], attr) if owner in models else None


def count_parameters(cfg: HAGANConfig, models: dict[str, nn.Module] | None = None) -> dict[str, int]:
    """Parameters per block (G^A, G^L, G^H, D^H, D^L, E^H, E^G, C^H, C^L) and totals G, D, E, C, all.

    ``models``: networks from :func:`build_meta` (built here if not given).
    """
    models = models if models is not None else build_meta(cfg)
    counts = {sym: num_params(_block(models, path)) for sym, (path, _) in BLOCKS.items()}
    counts["G"] = num_params(models["generator"])
    counts["D"] = num_params(models["discriminator"])
    counts["E"] = num_params(models["encoder"])
    counts["C"] = num_params(models.get("classifier"))
    counts["all"] = counts["G"] + counts["D"] + counts["E"] + counts["C"]
    return counts


def block_shapes(
    cfg: HAGANConfig, models: dict[str, nn.Module] | None = None
) -> dict[str, tuple[list[int], list[int]]]:
    """(input shape, output shape) per block, batch dimension omitted, by running the
    blocks on meta tensors (which also checks that consecutive blocks fit together)."""
    m = models if models is not None else build_meta(cfg)
    g, d, e = m["generator"], m["discriminator"], m["encoder"]
    meta = torch.device("meta")
    code = torch.empty(1, cfg.generator_input_dim, device=meta)
    a = g.common(code)
    a_slab = g.selector.select_features(a, 0)
    x_slab = g.high(a_slab)
    x_low = torch.empty(1, 1, *(3 * [cfg.lowres_size]), device=meta)
    pos = torch.zeros(1, device=meta)
    shapes = {
        "G^A": (code, a),
        "G^L": (a, g.low(a) if g.low is not None else None),
        "G^H": (a_slab, x_slab),
        "D^H": (x_slab, d.high(x_slab, pos)[0]),
        "D^L": (x_low, d.low(x_low)[0] if d.low is not None else None),
        "E^H": (x_slab, e.high(x_slab)),
        "E^G": (a, e.ground(a)),
    }
    c = m.get("classifier")
    if c is not None:
        shapes["C^H"] = (x_slab, c.high(x_slab, pos))
        shapes["C^L"] = (x_low, c.low(x_low) if c.low is not None else None)
    return {k: (list(i.shape[1:]), list(o.shape[1:]) if o is not None else []) for k, (i, o) in shapes.items()}


def summary(cfg: HAGANConfig) -> dict[str, Any]:
    """JSON-ready description: config, per-block class/params/shapes, totals."""
    models = build_meta(cfg)
    counts = count_parameters(cfg, models)
    shapes = block_shapes(cfg, models)
    blocks = {}
    for sym, (path, meaning) in BLOCKS.items():
        module = _block(models, path)
        if module is None:
            continue
        blocks[sym] = {
            "class": type(module).__name__,
            "meaning": meaning,
            "params": counts[sym],
            "input_shape": shapes[sym][0],
            "output_shape": shapes[sym][1],
        }
    return {
        "config": cfg.to_dict(),
        "blocks": blocks,
        "totals": {k: counts[k] for k in ("G", "D", "E", "C", "all") if k != "C" or "classifier" in models},
        "full_volume_shape": [1, cfg.size, cfg.size, cfg.size],
    }
