"""Toy CT-like volumes for the metric tests (not the phantoms: fast, with a controllable spread)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

#: ``make_dataset(..., longitudinal=True)``: how much the cylinder's semi-axes grow a year (the volume spans [-1, 1]).
GROWTH_PER_YEAR = 0.06


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


def make_dataset(root: Path, n: int = 6, size: int = 32, seed: int = 0, degraded: bool = False,
                 labels: bool = False, unpaired: bool = False, longitudinal: bool = False) -> Path:
    """A tiny preprocessed data set: n noisy elliptic cylinders, labels alternating 0/1.

    ``degraded``: each subject also holds volume ``degraded`` (its image with more noise), the pair an
    image-to-image family (``unet``) trains on. ``labels``: each subject also holds the label map ``tissue``
    (1 inside the cylinder, 0 outside; classes declared in preprocess.json), what ``seg-unet`` learns.
    ``unpaired``: each subject also holds volume ``b``, the negated image of the next subject (domain B = −A,
    of another subject), what ``cyclegan`` trains on (``medgen unpair`` makes such sets from two data sets).
    ``longitudinal``: each subject also holds volume ``followup``, the same cylinder after ``interval_years``
    (manifest column, uniform in [0.5, 4]) with both semi-axes grown by ``GROWTH_PER_YEAR`` · interval and new
    noise, what ``progression`` trains on; drawn from a generator of its own, so the other outputs are
    unchanged."""
    (root / "volumes").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    g = np.linspace(-1, 1, size)
    X, Y, _ = np.meshgrid(g, g, g, indexing="ij")
    rows = ["id,source,orig_shape,orig_spacing,spacing,file,label" + (",degraded" if degraded else "")
            + (",tissue" if labels else "") + (",b" if unpaired else "")
            + (",followup,interval_years" if longitudinal else "")]
    later = np.random.default_rng([seed, 1])
    images = []
    for i in range(n):
        a, b = rng.uniform(0.5, 0.9, 2)
        inside = (X / a) ** 2 + (Y / b) ** 2 <= 1
        v = np.clip(np.where(inside, 0.2, -1.0) + rng.normal(0, 0.05, X.shape), -1, 1)
        np.save(root / "volumes" / f"v{i}.npy", v.astype(np.float16))
        row = f"v{i},src{i}.nii.gz,{size}x{size}x{size},1x1x1,1,volumes/v{i}.npy,{i % 2}"
        if degraded:
            (root / "degradeds").mkdir(exist_ok=True)
            np.save(root / "degradeds" / f"v{i}.npy", np.clip(v + rng.normal(0, 0.2, X.shape), -1, 1).astype(np.float16))
            row += f",degradeds/v{i}.npy"
        if labels:
            (root / "tissues").mkdir(exist_ok=True)
            np.save(root / "tissues" / f"v{i}.npy", inside.astype(np.int16))
            row += f",tissues/v{i}.npy"
        if unpaired:
            row += f",bs/v{i}.npy"
        if longitudinal:
            years = round(float(later.uniform(0.5, 4.0)), 2)
            grown = (X / (a + GROWTH_PER_YEAR * years)) ** 2 + (Y / (b + GROWTH_PER_YEAR * years)) ** 2 <= 1
            fu = np.clip(np.where(grown, 0.2, -1.0) + later.normal(0, 0.05, X.shape), -1, 1)
            (root / "followups").mkdir(exist_ok=True)
            np.save(root / "followups" / f"v{i}.npy", fu.astype(np.float16))
            row += f",followups/v{i}.npy,{years}"
        images.append(v.astype(np.float16))
        rows.append(row)
    if unpaired:
        (root / "bs").mkdir(exist_ok=True)
        for i in range(n):
            np.save(root / "bs" / f"v{i}.npy", -images[(i + 1) % n])
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    info = {"modality": "ct", "size": size, "hu_min": -1024.0, "hu_max": 600.0}
    if degraded or labels or unpaired or longitudinal:
        info["volumes"] = {"image": {"kind": "intensity", "dtype": "float16"}}
    if degraded:
        info["volumes"]["degraded"] = {"kind": "intensity", "dtype": "float16"}
    if labels:
        info["volumes"]["tissue"] = {"kind": "label", "dtype": "int16", "classes": {"0": "background", "1": "body"}}
    if unpaired:
        info["volumes"]["b"] = {"kind": "intensity", "dtype": "float16"}
    if longitudinal:
        info["volumes"]["followup"] = {"kind": "intensity", "dtype": "float16"}
    (root / "preprocess.json").write_text(json.dumps(info))
    return root
