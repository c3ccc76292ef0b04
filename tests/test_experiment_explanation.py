"""medgen experiment explanation: explanations of an atrophy classifier scored against the subjects' healthy selves."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from medgen.cli import main
from medgen.experiments import explanation as exp
from medgen.inference.explain import Explanation

S = 12


def toy_subject():
    """A cube of tissue 3 with 'ventricles' (4) of 4³ voxels in the subject and 2³ in its healthy self; the image is
    −1 outside, 0.5 in tissue, −0.5 in ventricles."""
    tissue = np.zeros((S,) * 3, np.int16)
    tissue[2:10, 2:10, 2:10] = 3
    healthy_tissue = tissue.copy()
    tissue[4:8, 4:8, 4:8] = 4
    healthy_tissue[5:7, 5:7, 5:7] = 4
    image = {0: -1.0, 3: 0.5, 4: -0.5}

    def render(t):
        return np.vectorize(image.get)(t).astype(np.float32)

    return render(tissue), tissue, render(healthy_tissue), healthy_tissue


def test_scores_of_a_perfect_and_of_a_useless_counterfactual():
    x, tissue, healthy, healthy_tissue = toy_subject()
    changed = tissue != healthy_tissue  # 64 − 8 = 56 voxels
    probs = np.array([0.1, 0.9])
    # perfect: the counterfactual is the healthy self and the map is exactly the change
    perfect = Explanation("latent", 0, (healthy - x), probs, np.array([0.8, 0.2]), healthy.copy())
    row = exp.score(perfect, x, tissue, healthy, healthy_tissue, voxel_ml=0.001)
    assert row["change_auroc"] == pytest.approx(1.0) and row["closer_to_truth"] == pytest.approx(0.0)
    assert row["reached"] and row["p_normal"] == pytest.approx(0.8) and row["p_normal_before"] == pytest.approx(0.1)
    # useless: no change (distance ratio 1) and a map that marks the unchanged voxels
    useless = Explanation("latent", 0, (~changed).astype(np.float32), probs, probs, x.copy())
    row = exp.score(useless, x, tissue, healthy, healthy_tissue, voxel_ml=0.001)
    assert row["change_auroc"] == pytest.approx(0.0) and row["closer_to_truth"] == pytest.approx(1.0)
    assert not row["reached"]
    # halfway to the truth: distance ratio 0.5
    half = Explanation("latent", 0, np.zeros_like(x), probs, probs, (x + healthy) / 2)
    assert exp.score(half, x, tissue, healthy, healthy_tissue, 0.001)["closer_to_truth"] == pytest.approx(0.5)


def test_ventricle_recovery_of_a_deformation_that_shrinks_them_by_a_known_amount():
    x, tissue, healthy, healthy_tissue = toy_subject()
    # cf(p) = x(p + u(p)): rows 4 and 7 (along axis 0) of the counterfactual read rows 3 and 8, which are
    # tissue 3, so the ventricles (rows 4–7) lose their two outer rows
    u = np.zeros((3, S, S, S), np.float32)
    u[0, 4] = -1.0
    u[0, 7] = 1.0
    jac = np.ones((S,) * 3, np.float32)
    dexp = Explanation("deformation", 0, np.zeros((S,) * 3, np.float32), np.array([0.1, 0.9]),
                       np.array([0.6, 0.4]), x.copy(), u, jac)
    row = exp.score(dexp, x, tissue, healthy, healthy_tissue, voxel_ml=0.001)
    # the subject has 64 ventricle voxels, its healthy self 8: excess 56; the field removes rows 4 and 7 (2·16 = 32)
    assert row["ventricle_recovered"] == pytest.approx(32 / 56)
    assert row["folding_pct"] == 0.0 and row["log_jacobian_ventricles"] == pytest.approx(0.0)


def test_summary_means_and_sd():
    rows = [{"change_auroc": 0.6, "reached": True, "p_normal": 0.9, "closer_to_truth": 0.8, "seconds": 1.0},
            {"change_auroc": 0.8, "reached": False, "p_normal": 0.3, "closer_to_truth": 1.0, "seconds": 3.0}]
    s = exp.summarise("m", rows)
    assert s["reached_pct"] == 50.0 and s["change_auroc"] == pytest.approx(0.7)
    assert s["change_auroc_sd"] == pytest.approx(np.std([0.6, 0.8], ddof=1))
    assert s["closer_to_truth"] == pytest.approx(0.9) and s["ventricle_recovered"] is None


def test_usage_errors(tmp_path, capsys):
    code = main(["experiment", "explanation", "--scale", "smoke", "--work", str(tmp_path / "w"),
                 "--out", str(tmp_path / "o"), "--methods", "deformation,nonsense"])
    assert code == 2 and "--methods" in capsys.readouterr().err


def test_smoke_run_writes_the_table_subjects_and_figure(tmp_path):
    work, out = tmp_path / "w", tmp_path / "o"
    assert main(["experiment", "explanation", "--scale", "smoke", "--work", str(work), "--out", str(out),
                 "--no-progress"]) == 0
    with open(out / "explanation.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["method"] for r in rows] == list(exp.METHODS.values())
    with open(out / "explanation-subjects.csv", newline="") as fh:
        subjects = list(csv.DictReader(fh))
    assert len(subjects) == len(exp.METHODS) * exp.SUBJECTS["smoke"]
    assert all(int(r["label"]) >= exp.MIN_CLASS for r in subjects)
    for r in subjects:
        assert 0.0 <= float(r["change_auroc"]) <= 1.0
    result = json.loads((out / "experiment.json").read_text())
    assert len(result["results"]["subjects"]) == exp.SUBJECTS["smoke"]
    assert (out / "explanation.png").stat().st_size > 1000
