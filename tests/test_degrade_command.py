"""``medgen degrade``: a paired data set from a clean one — volumes, units, manifest, resume, refusals, training data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medgen.cli import main
from medgen.core.errors import UsageError
from medgen.data.dataset import VolumeDataset, load_manifest, load_preprocess_info
from medgen.data.degraded_set import from_scan_units, to_scan_units, write_degraded_set


@pytest.fixture(scope="module")
def ct_data(tmp_path_factory) -> Path:
    from medgen.data.phantoms.phantom_set import write_phantom_set
    from medgen.data.preprocess import PreprocessSettings, preprocess_folder

    root = tmp_path_factory.mktemp("ct")
    write_phantom_set("thorax-ct", 3, 16, 0, root / "phantoms")
    preprocess_folder(root / "phantoms", root / "data", PreprocessSettings(modality="ct", size=16), progress=False,
                      log=lambda m: None)
    return root / "data"


@pytest.fixture(scope="module")
def mri_data(tmp_path_factory) -> Path:
    from medgen.data.phantoms.phantom_set import write_phantom_set
    from medgen.data.preprocess import PreprocessSettings, preprocess_folder

    root = tmp_path_factory.mktemp("mri")
    write_phantom_set("brain-mri", 2, 16, 0, root / "phantoms")
    preprocess_folder(root / "phantoms", root / "data", PreprocessSettings(modality="mri", size=16), progress=False,
                      log=lambda m: None)
    return root / "data"


def test_units_round_trip_the_hu_window():
    info = {"modality": "ct", "hu_window": [-1024.0, 600.0]}
    x = np.array([-1.0, 0.0, 1.0])
    np.testing.assert_allclose(to_scan_units(x, info), [-1024.0, -212.0, 600.0])
    np.testing.assert_allclose(from_scan_units(np.array([-2000.0, -212.0, 600.0, 3000.0]), info), [-1, 0, 1, 1])
    np.testing.assert_allclose(to_scan_units(x, {"modality": "mri"}), [0.0, 0.5, 1.0])


def test_slice_gap_pairs_keep_the_clean_target_and_record_parameters(ct_data, tmp_path, capsys):
    out = tmp_path / "gap"
    code = main(["degrade", str(ct_data), str(out), "--kind", "slices", "--param", "factor=4", "--no-progress"])
    assert code == 0 and "wrote 3 slices pairs" in capsys.readouterr().out
    rows, info = load_manifest(out), load_preprocess_info(out)
    assert info["volumes"]["degraded"] == {"kind": "intensity", "dtype": "float16"}
    assert info["degradation"]["kind"] == "slices" and info["degradation"]["settings"] == {"factor": 4}
    assert [r["id"] for r in rows] == [r["id"] for r in load_manifest(ct_data)]
    for row in rows:
        assert row["slices_factor"] == "4" and row["slices_mode"] == "skip"
        clean = np.load(ct_data / row["file"])
        np.testing.assert_array_equal(np.load(out / row["file"]), clean)  # the target is the input's image
        degraded = np.load(out / row["degraded"])
        np.testing.assert_array_equal(degraded[..., ::4], clean[..., ::4])
        np.testing.assert_array_equal(degraded[..., 1], clean[..., 0])
        assert np.abs(degraded.astype(float) - clean).mean() > 0.005
    # the paired set is a training data set whose items hold both volumes
    ds = VolumeDataset(out, split="all")
    item = ds[0]
    assert item["image"].shape == item["degraded"].shape == (1, 16, 16, 16)
    np.testing.assert_allclose(item["degraded"].numpy()[0], np.load(out / rows[0]["degraded"]).astype(np.float32))


def test_ranges_are_drawn_per_subject_and_a_rerun_is_identical(ct_data, tmp_path):
    a = write_degraded_set(ct_data, tmp_path / "a", "slices", ["factor=2:4"], seed=3, progress=False)
    b = write_degraded_set(ct_data, tmp_path / "b", "slices", ["factor=2:4"], seed=3, progress=False)
    assert a.params == b.params and all(2 <= p["factor"] <= 4 for p in a.params.values())
    for row in load_manifest(tmp_path / "a"):
        np.testing.assert_array_equal(np.load(tmp_path / "a" / row["degraded"]), np.load(tmp_path / "b" / row["degraded"]))
        assert row["slices_factor"] == str(a.params[row["id"]]["factor"])


def test_an_interrupted_run_continues_and_another_command_is_refused(ct_data, tmp_path, monkeypatch):
    from medgen.data import degraded_set

    out = tmp_path / "out"
    calls = []
    real = degraded_set._write_pair

    def fail_on_second(*args, **kwargs):
        calls.append(args[2]["id"])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(degraded_set, "_write_pair", fail_on_second)
    with pytest.raises(KeyboardInterrupt):
        write_degraded_set(ct_data, out, "slices", ["factor=3"], progress=False)
    assert not (out / "manifest.csv").exists()  # no half-written data set
    monkeypatch.setattr(degraded_set, "_write_pair", real)
    with pytest.raises(UsageError, match="not written by this same command"):
        write_degraded_set(ct_data, out, "slices", ["factor=2"], progress=False)
    summary = write_degraded_set(ct_data, out, "slices", ["factor=3"], progress=False)
    assert len(summary.kept) == 1 and len(summary.written) == 2
    assert len(load_manifest(out)) == 3
    # a finished data set: the same command keeps everything; --overwrite replaces it
    assert len(write_degraded_set(ct_data, out, "slices", ["factor=3"], progress=False).kept) == 3
    again = write_degraded_set(ct_data, out, "slices", ["factor=2"], overwrite=True, progress=False)
    assert len(again.written) == 3 and load_manifest(out)[0]["slices_factor"] == "2"


def test_refusals_name_the_problem(ct_data, mri_data, tmp_path, capsys):
    assert main(["degrade", str(ct_data), str(tmp_path / "k"), "--kind", "kspace"]) == 2
    assert "a 'ct' data set; degradation 'kspace' simulates mri only" in capsys.readouterr().err
    assert main(["degrade", str(ct_data), str(tmp_path / "s"), "--kind", "slices", "-p", "dose=1"]) == 2
    assert "slices: no parameter 'dose'" in capsys.readouterr().err
    assert main(["degrade", str(tmp_path / "nowhere"), str(tmp_path / "s"), "--kind", "slices"]) == 2
    assert "not a preprocessed data set" in capsys.readouterr().err
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert main(["degrade", str(ct_data), str(other), "--kind", "slices", "--overwrite"]) == 2
    assert "not a data set" in capsys.readouterr().err and (other / "notes.txt").read_text() == "mine"
    write_degraded_set(ct_data, tmp_path / "gap", "slices", progress=False)
    assert main(["degrade", str(tmp_path / "gap"), str(tmp_path / "gap2"), "--kind", "slices"]) == 2
    assert "already has 'degraded'" in capsys.readouterr().err
    assert main(["degrade", "--list"]) == 0
    listing = capsys.readouterr().out
    assert "acceleration=4.0" in listing and "[mm]" in listing


def test_kspace_pairs_on_mri_are_zero_filled_reconstructions(mri_data, tmp_path):
    """End to end through the data set's units: [-1, 1] → [0, 1] → k-space → back."""
    from medgen.data.degradations.kspace import undersample
    from medgen.data.degradations import KSPACE, subject_rng, sample_params

    out = tmp_path / "k"
    write_degraded_set(mri_data, out, "kspace", ["acceleration=2", "center_fraction=0.25"], seed=1, progress=False)
    info = json.loads((out / "preprocess.json").read_text())
    for row in load_manifest(out):
        clean = np.load(out / row["file"]).astype(np.float64)
        rng = subject_rng(1, row["id"])
        params = sample_params(KSPACE, {"acceleration": 2.0, "center_fraction": 0.25}, rng)
        expected, _ = undersample((clean + 1) / 2, params, int(rng.integers(0, 2**31 - 1)))
        got = np.load(out / row["degraded"]).astype(np.float64)
        np.testing.assert_allclose(got, np.clip(2 * expected - 1, -1, 1), atol=2e-3)  # float16 storage
        assert row["kspace_acceleration"] == "2"
    assert info["degradation"]["volumes"] == {"degraded": {"kind": "intensity", "units": "scan"}}
