"""Toy CT-like volumes for the metric tests (not the phantoms: fast, with a controllable spread)."""

from __future__ import annotations

import numpy as np


def toy_body(rng: np.random.Generator, n: int = 24, spine: bool = False) -> np.ndarray:
    """[-1, 1] volume: a body ellipsoid (about -200 HU) with two darker lungs (about -900 HU),
    optionally a spine (about +500 HU); background -1. Shape and position vary with ``rng``."""
    g = np.stack(np.meshgrid(*[np.linspace(-1, 1, n)] * 3, indexing="ij"))
    vol = np.full((n, n, n), -1.0, np.float32)
    c, r = rng.uniform(-0.1, 0.1, 3), rng.uniform(0.6, 0.85, 3)
    body = (((g - c[:, None, None, None]) / r[:, None, None, None]) ** 2).sum(0) < 1
    vol[body] = rng.uniform(-0.1, 0.1)
    for side in (-1, 1):
        cl = c + np.array([side * 0.3, 0, 0]) + rng.uniform(-0.05, 0.05, 3)
        rl = r * rng.uniform(0.3, 0.4)
        vol[body & ((((g - cl[:, None, None, None]) / rl[:, None, None, None]) ** 2).sum(0) < 1)] = -0.85
    if spine:
        vol[body & (np.abs(g[0] - c[0]) < 0.08) & (g[1] < c[1] - 0.4)] = 0.9
    return vol
