"""Three-plane mosaic: orientation of each plane, windowing, layout of the saved PNG."""

from __future__ import annotations

import matplotlib.image
import numpy as np
import pytest

from medgen.viz.mosaic import mosaic_array, plane_slice, save_mosaic

N = 16


def octant(x_high: bool, y_high: bool, z_high: bool) -> np.ndarray:
    """A volume bright (1) only in one octant; x right, y anterior, z superior when high.

    The low half also holds the central index N // 2, so that the default
    (central) slices cut every octant.
    """
    v = np.zeros((N, N, N), dtype=np.float32)
    sx, sy, sz = (slice(N // 2, N) if high else slice(0, N // 2 + 1) for high in (x_high, y_high, z_high))
    v[sx, sy, sz] = 1.0
    return v


def quadrants(panel: np.ndarray) -> dict[str, float]:
    """Mean of the central 4×4 block of each quadrant of a 16×16 panel."""
    lo, hi = slice(2, 6), slice(10, 14)
    return {
        "top-left": panel[lo, lo].mean(),
        "top-right": panel[lo, hi].mean(),
        "bottom-left": panel[hi, lo].mean(),
        "bottom-right": panel[hi, hi].mean(),
    }


# Radiological display: axial = anterior up, patient's right on the viewer's left;
# coronal = superior up, right on the left; sagittal = superior up, anterior on the left.
CASES = [
    # (x right?, y anterior?, z superior?) -> bright quadrant in axial, coronal, sagittal
    ((True, True, True), ("top-left", "top-left", "top-left")),
    ((False, True, False), ("top-right", "bottom-right", "bottom-left")),
    ((True, False, False), ("bottom-left", "bottom-left", "bottom-right")),
]


@pytest.mark.parametrize("where, expected", CASES)
def test_plane_orientation(where, expected):
    vol = octant(*where)
    for plane, quadrant in zip(("axial", "coronal", "sagittal"), expected):
        q = quadrants(plane_slice(vol, plane))
        assert q == {k: float(k == quadrant) for k in q}, (plane, q)


def test_plane_slice_picks_the_requested_index():
    vol = np.broadcast_to(np.arange(N, dtype=np.float32), (N, N, N))  # value = z index
    assert np.all(plane_slice(vol, "axial", 3) == 3)
    assert np.all(plane_slice(vol, "axial") == N // 2)
    with pytest.raises(ValueError):
        plane_slice(vol, "oblique")
    with pytest.raises(ValueError):
        plane_slice(vol, "axial", N)


def test_mosaic_array_windowing_and_layout():
    a = np.full((N, N, N), 0.0, dtype=np.float32)
    b = np.full((8, 8, 8), 100.0, dtype=np.float32)  # smaller volume: centred in its cells
    m = mosaic_array([a, b], vmin=-100.0, vmax=300.0, gap=2)
    assert m.shape == (2 * N + 2, 3 * N + 4)
    assert m[N // 2, N // 2] == pytest.approx(0.25)  # (0 - -100) / 400
    # second row: the 8×8 panel sits in the middle of a 16×16 cell, zero around it
    cell = m[N + 2 :, :N]
    assert cell[4:12, 4:12] == pytest.approx(np.full((8, 8), 0.5))
    assert cell[:4].max() == 0.0 and cell[:, 12:].max() == 0.0
    assert m[:, N : N + 2].max() == 0.0  # gap between columns
    # without a window each volume uses its own 0.5–99.5 percentile range
    ramp = np.broadcast_to(np.linspace(-5.0, 5.0, N, dtype=np.float32), (N, N, N))
    auto = mosaic_array([ramp], planes=("coronal",))
    assert auto.min() == 0.0 and auto.max() == 1.0


def test_saved_png_shows_each_octant_in_the_right_quadrant(tmp_path):
    vols = [octant(*where) for where, _ in CASES]
    path = tmp_path / "m.png"
    save_mosaic(vols, path, titles=["a", "b", "c"], vmin=0.0, vmax=1.0, min_panel_px=64)
    png = matplotlib.image.imread(path)[..., :3].mean(axis=2)
    scale = 64 // N
    assert png.shape == ((3 * N + 4) * scale, (3 * N + 4) * scale)
    cell = (N + 2) * scale
    for r, (_, expected) in enumerate(CASES):
        for c, quadrant in enumerate(expected):
            panel = png[r * cell : r * cell + N * scale, c * cell : c * cell + N * scale]
            h = N * scale // 2
            centres = {  # centres of the quadrants, away from the text in the top-left corner
                "top-left": panel[h // 2 + 4 : h - 4, h // 2 : h - 4],
                "top-right": panel[h // 2 : h - 4, h + 4 : h + h // 2],
                "bottom-left": panel[h + 4 : h + h // 2, 4 : h // 2],
                "bottom-right": panel[h + 4 : h + h // 2, h + 4 : h + h // 2],
            }
            for name, block in centres.items():
                want = 1.0 if name == quadrant else 0.0
                assert block.mean() == pytest.approx(want, abs=0.02), (r, c, name)


def test_save_mosaic_is_atomic_and_overwrites(tmp_path):
    path = tmp_path / "out" / "m.png"
    save_mosaic([octant(True, True, True)], path)
    first = path.read_bytes()
    save_mosaic([octant(False, False, False)], path)
    assert path.read_bytes() != first
    assert sorted(p.name for p in path.parent.iterdir()) == ["m.png"]  # no temporary files left
