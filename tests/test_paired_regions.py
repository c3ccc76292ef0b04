"""Region-wise paired metrics against masks and errors built by hand."""

import math

import numpy as np
import pytest

from medgen.metrics import paired
from medgen.metrics.paired_regions import region_metrics, summarise

WINDOW = (-1024.0, 600.0)


def to_unit(hu):
    return (np.asarray(hu, dtype=np.float64) - WINDOW[0]) / (WINDOW[1] - WINDOW[0]) * 2 - 1


def thorax(n=32):
    """Air, a body cylinder (40 HU) with two lungs (-850 HU) and a spine (700 HU); the masks drawn here."""
    x, y = np.meshgrid(np.arange(n) - n / 2 + 0.5, np.arange(n) - n / 2 + 0.5, indexing="ij")
    body = np.repeat(((x / 13) ** 2 + (y / 10) ** 2 < 1)[..., None], n, axis=2)
    body[..., :2] = body[..., -2:] = False
    lung = body & np.repeat((((np.abs(x) - 6) / 4) ** 2 + (y / 5) ** 2 < 1)[..., None], n, axis=2)
    bone = body & np.repeat(((x / 2.5) ** 2 + ((y + 7) / 2) ** 2 < 1)[..., None], n, axis=2)
    hu = np.full((n, n, n), -1000.0)
    hu[body] = 40.0
    hu[lung] = -850.0
    hu[bone] = 700.0 - 100  # inside the window: 600 HU
    return hu, body, lung, bone


def test_hu_errors_inside_tissues_equal_the_errors_put_there():
    hu, body, lung, bone = thorax()
    out = hu.copy()
    out[lung] += 30.0
    out[bone] -= 50.0  # 550 HU
    soft = body & ~lung & ~bone
    out[soft] += 10.0
    m = region_metrics(to_unit(out), to_unit(hu), WINDOW)
    assert m["hu_mae_lung"] == pytest.approx(30.0, rel=1e-6)
    assert m["hu_mae_bone"] == pytest.approx(50.0, rel=1e-6)
    expected_body = (30 * lung.sum() + 50 * bone.sum() + 10 * soft.sum()) / body.sum()
    assert m["hu_mae_body"] == pytest.approx(expected_body, rel=1e-6)
    assert m["psnr"] == pytest.approx(paired.psnr(to_unit(out), to_unit(hu)))
    assert m["psnr_body"] == pytest.approx(paired.psnr(to_unit(out), to_unit(hu), body), rel=1e-9)
    assert m["psnr_body"] < m["psnr"]  # the air, where the output is exact, no longer inflates it


def test_mask_errors_and_mri_foreground():
    hu, body, lung, bone = thorax()
    hidden = np.zeros_like(body)
    hidden[10:20, 10:20, 10:20] = True
    out = to_unit(hu)
    out[hidden] += 0.1
    m = region_metrics(out, to_unit(hu), WINDOW, mask=hidden)
    assert m["mae_mask"] == pytest.approx(0.1, rel=1e-9)
    assert m["hu_mae_mask"] == pytest.approx(0.1 * (WINDOW[1] - WINDOW[0]) / 2, rel=1e-9)
    mri = np.where(body, 0.5, -1.0)
    r = region_metrics(mri + 0.01, mri, None)
    assert "hu_mae_lung" not in r and r["psnr_body"] == pytest.approx(10 * math.log10(4 / 1e-4), rel=1e-6)


def test_summary_skips_missing_regions():
    rows = [{"id": "a", "x": 1.0, "y": math.nan}, {"id": "b", "x": 3.0, "y": 2.0}]
    s = summarise(rows)
    assert s["x"] == {"value": 2.0, "std": 1.0, "n": 2} and s["y"]["value"] == 2.0 and s["y"]["n"] == 1
