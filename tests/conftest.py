"""Shared test fixtures: tiny synthetic volumes (no downloads, a few kB each)."""

from __future__ import annotations

import numpy as np
import pytest


def synthetic_ct(shape=(24, 20, 16), seed=0, blank_bottom=2, blank_top=3) -> np.ndarray:
    """A small CT-like volume in HU (float32).

    Air/padding is -1024 HU everywhere outside an elliptic-cylinder "body" of
    soft tissue (~40 HU) holding a "lung" (~-850 HU); the first ``blank_bottom``
    and last ``blank_top`` axial slices (last axis) are pure padding.
    """
    rng = np.random.default_rng(seed)
    x, y = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]), indexing="ij")
    body = (x / 0.8) ** 2 + (y / 0.7) ** 2 <= 1
    lung = ((x - 0.3) / 0.25) ** 2 + (y / 0.35) ** 2 <= 1
    vol = np.full(shape, -1024.0, dtype=np.float32)
    for k in range(blank_bottom, shape[2] - blank_top):
        sl = np.where(body, 40.0, -1024.0)
        sl = np.where(lung, -850.0, sl)
        sl = sl + np.where(body, rng.normal(0.0, 15.0, size=sl.shape), 0.0)
        vol[..., k] = sl
    return vol


@pytest.fixture
def make_ct():
    """Factory for :func:`synthetic_ct`."""
    return synthetic_ct


@pytest.fixture
def one_thread():
    """Tiny models run fastest single-threaded, and the suite runs one worker per core
    (``pytestmark = pytest.mark.usefixtures("one_thread")`` in a test file)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
