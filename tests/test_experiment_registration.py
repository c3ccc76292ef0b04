"""medgen experiment registration: learned vs classical registration of brain phantoms, against the truth."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from medgen.cli import main
from medgen.experiments import registration as exp


def test_displacement_in_voxels_divides_by_the_spacing_and_follows_flipped_axes():
    affine = np.diag([2.0, -3.0, 4.0, 1.0])  # axis 1 runs towards −y
    d = np.zeros((3, 2, 2, 2))
    d[0], d[1], d[2] = 6.0, 6.0, -2.0  # mm along the world x, y, z
    u = exp.displacement_in_voxels(d, affine)
    assert u.shape == (3, 2, 2, 2)
    assert np.allclose(u[0], 3.0) and np.allclose(u[1], -2.0) and np.allclose(u[2], -0.5)
    # a rotated grid: world x runs along array axis 1
    swap = np.eye(4)[[1, 0, 2, 3]] * np.array([5.0, 5.0, 5.0, 1.0])[:, None]
    assert np.allclose(exp.displacement_in_voxels(d, swap)[1], 6.0 / 5.0)


@pytest.fixture(scope="module")
def phantom_pair(tmp_path_factory):
    from medgen.data.phantoms.phantom_set import write_phantom_set

    out = tmp_path_factory.mktemp("pair")
    rows = write_phantom_set("brain-mri", 2, 32, 11, out, workers=1, progress=False, displacement=True)
    return out, rows[0]["id"], rows[1]["id"]


def test_the_true_displacement_in_voxels_warps_the_moving_tissue_onto_the_fixed_one(phantom_pair):
    import nibabel as nib

    from medgen.data.phantoms import deformation
    from medgen.inference.register import warp
    from medgen.metrics.overlap import dice

    raw, mid, fid = phantom_pair
    u, spacing = exp.true_voxel_displacement(raw, mid, fid)
    assert u.shape == (3, 32, 32, 32) and np.allclose(spacing, 200.0 / 32)
    moving = np.asarray(nib.load(str(raw / "tissue" / f"{mid}.nii.gz")).dataobj).astype(np.int16)
    fixed = np.asarray(nib.load(str(raw / "tissue" / f"{fid}.nii.gz")).dataobj).astype(np.int16)
    warped = warp(moving, u, "nearest")
    # the brain outline (no atrophy difference there) matches closely; before registration it does not
    assert dice(exp.brain_mask(warped), exp.brain_mask(fixed), 1) > 0.93
    assert dice(exp.brain_mask(warped), exp.brain_mask(fixed), 1) > dice(exp.brain_mask(moving),
                                                                         exp.brain_mask(fixed), 1) + 0.03
    # the same as the phantoms' own warp in world mm (nearest neighbour: ties may round apart)
    moving_field, fixed_field = (deformation.read_displacement(raw, i) for i in (mid, fid))
    d = deformation.true_displacement(moving_field, fixed_field)
    world = deformation.warp(moving, moving_field[1], d, fixed_field[1], order=0)
    assert np.mean(world == warped) > 0.99
    # a wrong convention (the field negated, or its axes reversed) scores worse on every count
    good = exp.score_pair(u, moving, fixed, u, spacing)["dice_mean"]
    for wrong in (-u, u[::-1].copy()):
        assert exp.score_pair(wrong, moving, fixed, u, spacing)["dice_mean"] < good - 0.05
    assert good > exp.score_pair(np.zeros_like(u), moving, fixed, u, spacing)["dice_mean"] + 0.05


def test_score_pair_against_hand_computations():
    tissue = np.zeros((8, 8, 8), dtype=np.int16)
    tissue[2:6, 2:6, 2:6] = 3
    tissue[3:5, 3:5, 3:5] = 4
    tissue[2, 2:6, 2:6] = 2
    tissue[5, 2:6, 2:6] = 1
    zero = np.zeros((3, 8, 8, 8), dtype=np.float32)
    shift = zero.copy()
    shift[0] = 1.0  # the truth: one voxel along x
    row = exp.score_pair(zero, tissue, tissue, shift, (2.0, 3.0, 4.0))
    assert row["dice_mean"] == 1.0 and all(row[f"dice_{n}"] == 1.0 for n in exp.STRUCTURES.values())
    assert row["tre_mean_mm"] == pytest.approx(2.0) and row["tre_p95_mm"] == pytest.approx(2.0)  # x spacing 2 mm
    assert row["folding_pct"] == 0.0
    fold = zero.copy()
    fold[0] = -2.0 * np.arange(8.0)[:, None, None]  # ∂u_x/∂x = −2: det(I + ∇u) = −1 everywhere
    assert exp.score_pair(fold, tissue, tissue, zero, (1.0, 1.0, 1.0))["folding_pct"] == 100.0


def test_summarise_takes_means_and_sample_std_over_pairs():
    rows = [{"dice_mean": 0.5, "dice_csf": 0.1, "dice_gm": 0.6, "dice_wm": 0.7, "dice_ventricles": 0.6,
             "tre_mean_mm": 4.0, "tre_p95_mm": 8.0, "folding_pct": 0.0, "seconds": 2.0},
            {"dice_mean": 0.7, "dice_csf": 0.3, "dice_gm": 0.8, "dice_wm": 0.9, "dice_ventricles": 0.8,
             "tre_mean_mm": 2.0, "tre_p95_mm": 6.0, "folding_pct": 0.2, "seconds": 4.0}]
    s = exp.summarise("m", rows)
    assert s["pairs"] == 2 and s["dice_mean"] == pytest.approx(0.6) and s["dice_std"] == pytest.approx(np.sqrt(0.02))
    assert s["dice_csf"] == pytest.approx(0.2) and s["tre_mean_mm"] == pytest.approx(3.0)
    assert s["tre_std_mm"] == pytest.approx(np.sqrt(2.0)) and s["tre_p95_mm"] == pytest.approx(7.0)
    assert s["folding_pct"] == pytest.approx(0.1) and s["folding_pct_max"] == pytest.approx(0.2)
    assert s["seconds_per_pair"] == pytest.approx(3.0)


@pytest.mark.parametrize("argv, words", [
    (["--methods", "learned,nope"], "--methods"),
    (["--pairs", "0"], "--pairs"),
    (["--seg-weight", "-1"], "--seg-weight"),
    (["--methods", "learned,adversarial", "--adversarial-weight", "0"], "--adversarial-weight"),
    (["--data", "somewhere"], "phantoms only"),
])
def test_bad_options_are_one_line_usage_errors(tmp_path, capsys, argv, words):
    code = main(["experiment", "registration", "--scale", "smoke", "--work", str(tmp_path / "w"),
                 "--out", str(tmp_path / "o"), "--no-progress", *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and words in err[-1]


@pytest.mark.slow
def test_smoke_run_scores_every_method_against_the_truth(tmp_path):
    import nibabel as nib

    from medgen.metrics.registration import warped_label_dice

    out, work = tmp_path / "out", tmp_path / "work"
    assert main(["experiment", "registration", "--scale", "smoke", "--work", str(work), "--out", str(out),
                 "--methods", "learned,demons,identity", "--no-progress"]) == 0
    rows = {r["method"]: r for r in csv.DictReader(open(out / "registration.csv"))}
    assert list(rows) == [exp.METHODS["learned"], exp.METHODS["demons"], exp.METHODS["identity"], exp.TRUE]
    assert all(int(r["pairs"]) == 2 for r in rows.values())
    assert int(rows[exp.METHODS["learned"]]["iterations"]) == 2
    assert float(rows[exp.METHODS["demons"]]["speedup_vs_classical"]) == pytest.approx(1.0)
    assert float(rows[exp.TRUE]["tre_mean_mm"]) == 0.0
    # identity: the Dice of the raw tissue maps, by hand
    pairs = [r for r in csv.DictReader(open(out / "registration-pairs.csv"))
             if r["method"] == exp.METHODS["identity"]]
    raw = work / "phantoms-sets" / "registration-pairs-32-2"
    by_hand = []
    for r in pairs:
        m, f = (np.asarray(nib.load(str(raw / "tissue" / f"{i}.nii.gz")).dataobj) for i in (r["moving"], r["fixed"]))
        by_hand.append(warped_label_dice(m, f, labels=[1, 2, 3, 4])["dice_mean"])
        assert r["moving"] != r["fixed"]
    assert float(rows[exp.METHODS["identity"]]["dice_mean"]) == pytest.approx(np.mean(by_hand))
    # the demons baseline registers: better Dice and TRE than no registration
    assert float(rows[exp.METHODS["demons"]]["dice_mean"]) > float(rows[exp.METHODS["identity"]]["dice_mean"])
    assert float(rows[exp.METHODS["demons"]]["tre_mean_mm"]) < float(rows[exp.METHODS["identity"]]["tre_mean_mm"])
    assert (out / "registration.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    record = json.loads((out / "experiment.json").read_text())
    assert record["results"]["pairs"] == 2 and "--displacement" in " ".join(record["results"]["commands"])
    md = (out / "registration.md").read_text()
    assert "medgen experiment registration" in md and "true displacement" in md
