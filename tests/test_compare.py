"""Comparing two evaluation reports quantity by quantity (trained vs untrained generator)."""

import json

import numpy as np
import pytest

from medgen.cli import main
from medgen.metrics.compare import compare_reports, summary_line


def _report(fid, precision, ms_ssim, real_ms_ssim, lung_w1):
    return {"metrics": {
        "fid": {"value": fid},
        "prdc": {"value": {"precision": precision, "recall": 0.5, "coverage": 0.5}},
        "ms_ssim": {"value": ms_ssim, "details": {"real": {"mean": real_ms_ssim}}},
        "anatomy": {"value": {"lung_fraction": lung_w1}},
    }}


def test_directions_of_each_quantity():
    a = _report(fid=10.0, precision=0.2, ms_ssim=0.60, real_ms_ssim=0.55, lung_w1=float("nan"))
    b = _report(fid=20.0, precision=0.4, ms_ssim=0.40, real_ms_ssim=0.55, lung_w1=0.1)
    rows = {r["metric"]: r for r in compare_reports(a, b)}
    assert rows["FID"]["a_better"] is True  # lower is better
    assert rows["precision"]["a_better"] is False  # higher is better
    assert rows["recall"]["a_better"] is False  # a tie is not a win
    assert rows["MS-SSIM (closer to real is better)"]["a_better"] is True  # |0.60-0.55| < |0.40-0.55|
    assert rows["lung fraction W1"]["a_better"] is False  # no lung found at all counts against a
    assert "KID" not in rows  # quantities missing from both reports are left out
    assert summary_line(list(rows.values())) == "trained better than untrained on 2 of 6 quantities; FID 10 vs 20"


def test_generate_untrained_is_the_architecture_at_initialisation(tmp_path):
    from toy_volumes import make_dataset

    data = make_dataset(tmp_path / "data", n=4, size=32)
    run = tmp_path / "run"
    assert main(["train", str(data), "--out", str(run), "--preset", "tiny", "--iters", "2", "--batch", "2",
                 "--device", "cpu", "--no-progress", "--sample-every", "0"]) == 0
    u1, u2, t = tmp_path / "u1", tmp_path / "u2", tmp_path / "t"
    for out, extra in ((u1, ["--untrained"]), (u2, ["--untrained"]), (t, [])):
        assert main(["generate", str(run), "--n", "2", "--out", str(out), "--format", "npy", "--no-mosaic",
                     "--no-progress", "--device", "cpu", *extra]) == 0
    a, b, c = (np.load(d / "sample-0000.npy") for d in (u1, u2, t))
    assert a.shape == (32, 32, 32)
    assert np.array_equal(a, b)  # seeded initialisation: reproducible
    assert not np.allclose(a, c, atol=1e-3)  # and not the trained weights
    assert json.loads((u1 / "generate.json").read_text())["source"]["init_seed"] == 0
    assert main(["generate", str(run), "--n", "1", "--out", str(tmp_path / "x"), "--untrained", "--no-ema"]) == 2


@pytest.mark.parametrize("missing", ["baseline", "traversals"])
def test_report_rejects_missing_baseline_or_traversals(tmp_path, missing, capsys):
    from toy_volumes import make_dataset

    data = make_dataset(tmp_path / "data", n=4, size=32)
    run = tmp_path / "run"
    assert main(["train", str(data), "--out", str(run), "--preset", "tiny", "--iters", "1", "--batch", "2",
                 "--device", "cpu", "--no-progress", "--sample-every", "0"]) == 0
    code = main(["report", str(run), "--no-samples", f"--{missing}", str(tmp_path / "nope.file")])
    assert code == 2 and "nope.file" in capsys.readouterr().err
