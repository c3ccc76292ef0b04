"""Training-curve figure from RUN/metrics.csv."""

import math

import pytest
from matplotlib.image import imread

from medgen.core.errors import InputError
from medgen.viz.curves import read_metrics, save_training_curves


def _write_run(tmp_path, rows):
    (tmp_path / "metrics.csv").write_text(
        "iteration,loss_D,loss_G,loss_EH,loss_EG,it_per_s,memory_mb\n"
        + "".join(",".join(map(str, r)) + "\n" for r in rows)
    )
    return tmp_path


def test_read_metrics_columns(tmp_path):
    run = _write_run(tmp_path, [(20, 1.3, 0.7, 0.6, 0.65, 5.0, 500), (40, 1.1, 0.9, "", 0.5, 5.1, 510)])
    m = read_metrics(run)
    assert m["iteration"] == [20.0, 40.0]
    assert m["loss_D"] == [1.3, 1.1]
    assert math.isnan(m["loss_EH"][1])  # an empty cell is a gap, not a zero


def test_figure_has_two_panels_with_curves(tmp_path):
    rows = [(i, 1.4 - i / 1000, 0.7 + i / 1000, 0.7 * math.exp(-i / 200), 0.6, 5, 500) for i in range(20, 420, 20)]
    out = save_training_curves(_write_run(tmp_path, rows), tmp_path / "c.png")
    img = imread(out)
    assert img.shape[1] > 1.8 * img.shape[0]  # two panels side by side
    # coloured (non-grey) line pixels in both halves of the figure
    rgb = img[..., :3]
    coloured = (rgb.max(axis=2) - rgb.min(axis=2)) > 0.3
    half = img.shape[1] // 2
    assert coloured[:, :half].sum() > 200 and coloured[:, half:].sum() > 200


def test_missing_metrics_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="metrics.csv"):
        save_training_curves(tmp_path, tmp_path / "c.png")
