"""medgen anomaly: scores, maps aligned with the input, reconstructions, metrics against the ground truth."""

from __future__ import annotations

import argparse
import csv
import json
from types import SimpleNamespace

import numpy as np
import pytest

from medgen.core.errors import UsageError
from medgen.data.dataset import add_volume
from medgen.inference import anomaly
from toy_volumes import make_dataset

S = 16
HU = (-1024.0, 600.0)


class NormalModel:
    """Reconstructs the 'normal' volume by clipping away everything brighter than 0.5 (the planted lesions),
    or returns the input unchanged (``identity``)."""

    def __init__(self, identity: bool = False):
        self.identity = identity
        self.config = SimpleNamespace(size=S)
        self.run_config = SimpleNamespace(preprocess={"modality": "ct", "hu_min": HU[0], "hu_max": HU[1]})
        self.calls = 0

    def reconstruct(self, volumes, batch_size=1):
        self.calls += 1
        x = np.asarray(volumes, dtype=np.float32)
        return x.copy() if self.identity else np.minimum(x, 0.5)


def lesion_dataset(root, n=6):
    """make_dataset's cylinders; odd subjects get a bright 3³ lesion (0.9) in a `lesion` volume and `abnormal`."""
    make_dataset(root, n=n, size=S)
    rows = list(csv.DictReader(open(root / "manifest.csv")))
    for i, row in enumerate(rows):
        lesion = np.zeros((S, S, S), np.int16)
        if i % 2:
            lesion[6 + i % 3:9 + i % 3, 7:10, 5:8] = 1
            img = np.load(root / row["file"]).astype(np.float32)
            img[lesion > 0] = 0.9
            np.save(root / row["file"], img.astype(np.float16))
        add_volume(root, "lesion", row["id"], lesion, kind="label")
    rows = list(csv.DictReader(open(root / "manifest.csv")))
    fields = list(rows[0]) + ["abnormal"]
    with open(root / "manifest.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fields)
        w.writeheader()
        for i, row in enumerate(rows):
            w.writerow({**row, "abnormal": i % 2})
    return root


def read_scores(path):
    return list(csv.DictReader(open(path)))


def test_a_detector_that_reproduces_its_input_scores_zero_everywhere(tmp_path):
    data = lesion_dataset(tmp_path / "d")
    summary = anomaly.anomaly_dataset(NormalModel(identity=True), data, tmp_path / "o", progress=False, figures=0)
    rows = read_scores(tmp_path / "o" / "scores.csv")
    assert len(rows) == 6 and len(summary.written) == 6
    for r in rows:
        assert float(r["score"]) == float(r["score_max"]) == float(r["score_p99"]) == 0.0
    nib = pytest.importorskip("nibabel")
    assert np.all(np.asarray(nib.load(tmp_path / "o" / "maps" / "v1.nii.gz").dataobj) == 0)
    # every score ties: chance-level AUROC, AUPRC the share of abnormal volumes
    assert summary.metrics["auroc_score"] == 0.5 and summary.metrics["auprc_score"] == pytest.approx(0.5)


def test_maps_reconstructions_and_metrics_of_a_detector_that_removes_the_lesions(tmp_path):
    from sklearn.metrics import average_precision_score, roc_auc_score

    nib = pytest.importorskip("nibabel")
    data = lesion_dataset(tmp_path / "d")
    out = tmp_path / "o"
    summary = anomaly.anomaly_dataset(NormalModel(), data, out, progress=False, figures=2)
    rows = read_scores(out / "scores.csv")
    y = [int(r["abnormal"]) for r in rows]
    assert y == [0, 1, 0, 1, 0, 1] and [int(r["lesion_count"]) for r in rows] == [0, 1, 0, 1, 0, 1]
    assert [int(r["lesion_voxels"]) for r in rows] == [0, 27, 0, 27, 0, 27]
    d27 = (6 * 27 / np.pi) ** (1 / 3)  # the sphere of 27 mm³
    assert [float(r["largest_lesion_mm"]) for r in rows] == pytest.approx([0, d27, 0, d27, 0, d27])
    m = json.loads((out / "metrics.json").read_text())
    for name in ("score", "score_mean", "score_p99", "score_max"):
        s = [float(r[name]) for r in rows]
        assert m[f"auroc_{name}"] == pytest.approx(roc_auc_score(y, s))
        assert m[f"auprc_{name}"] == pytest.approx(average_precision_score(y, s))
    assert m["auroc_score_max"] == 1.0 and m["auprc_chance"] == 0.5

    # the map is |x − x̂| in HU, on the data set's grid: 0.4 · 812 HU inside the lesion (0.9 − 0.5), 0 where
    # nothing is brighter than 0.5
    img = nib.load(out / "maps" / "v1.nii.gz")
    assert np.allclose(img.affine, np.diag([1.0, 1.0, 1.0, 1.0]))
    amap = np.asarray(img.dataobj)
    lesion = np.load(data / "lesions" / "v1.npy") > 0
    x = np.load(data / "volumes" / "v1.npy").astype(np.float32)
    expected = np.abs(x - np.minimum(x, 0.5)) * (HU[1] - HU[0]) / 2
    assert np.allclose(amap, expected, atol=1e-3) and amap[lesion].min() > 300
    # voxel metrics against the pooled masks and maps (independent sklearn computation)
    maps = [np.abs(v - np.minimum(v, 0.5)).reshape(-1) for v in
            (np.load(data / "volumes" / f"v{i}.npy").astype(np.float32) for i in range(6))]
    masks = [(np.load(data / "lesions" / f"v{i}.npy") > 0).reshape(-1) for i in range(6)]
    assert m["voxel_auprc"] == pytest.approx(average_precision_score(np.concatenate(masks), np.concatenate(maps)))
    assert m["lesion_voxel_fraction"] == pytest.approx(3 * 27 / (6 * S**3))
    assert m["best_dice"] == 1.0  # the map is positive exactly on the lesions
    # every lesion found at the threshold set on the normal volumes' maps (all 0 there), 27 mm³ each
    det = m["detection"]
    assert det["n_lesions"] == 3 and det["n_detected"] == 3 and 0 < det["threshold"] < 1e-6
    assert [d["volume"] for d in det["lesions"]] == [1, 3, 5]
    assert det["lesions"][0]["diameter_mm"] == pytest.approx((6 * 27 / np.pi) ** (1 / 3))
    assert det["by_size"][0]["n"] == 3 and det["by_size"][0]["rate"] == 1.0
    # reconstructions in HU on the same grid: the lesion is gone
    rec = np.asarray(nib.load(out / "reconstructions" / "v1.nii.gz").dataobj)
    assert rec.dtype == np.int16 and rec[lesion].max() <= round(HU[0] + 0.75 * (HU[1] - HU[0])) + 1
    # two figures, abnormal subjects first
    assert sorted(p.name for p in (out / "figures").iterdir()) == ["v1.png", "v3.png"]
    assert summary.metrics["voxel_auprc"] == m["voxel_auprc"]


def test_signed_scores_see_the_polarity_and_the_lung_score_only_where_the_reconstruction_is_lung():
    ct = {"modality": "ct", "hu_min": HU[0], "hu_max": HU[1]}

    def units(hu):  # HU → [-1, 1] in the window
        return 2.0 * (hu - HU[0]) / (HU[1] - HU[0]) - 1.0

    rec = np.full((8, 8, 8), units(40.0), np.float32)  # soft tissue ...
    rec[:4] = units(-850.0)  # ... and lung in the first half
    x = rec.copy()
    x[1, 1, 1] = units(-850.0 + 400.0)  # a nodule-like +400 HU in the lung
    x[6, 6, 6] = units(40.0 + 600.0)  # +600 HU outside the lung (a bone edge the model missed)
    x[5, 5, 5] = units(40.0 - 300.0)  # −300 HU outside the lung
    s = anomaly.signed_scores(x, rec, ct)
    per_hu = 2.0 / (HU[1] - HU[0])
    assert s["score_brighter_max"] == pytest.approx(600 * per_hu, rel=1e-5)
    assert s["score_darker_max"] == pytest.approx(300 * per_hu, rel=1e-5)
    assert s["score_lung_max"] == pytest.approx(400 * per_hu, rel=1e-5)  # the +600 HU lies outside the lung
    # no lung in the reconstruction: 0; not CT: no lung score
    assert anomaly.signed_scores(x[4:], rec[4:], ct)["score_lung_max"] == 0.0
    assert set(anomaly.signed_scores(x, rec, {"modality": "mri"})) == {"score_brighter_max", "score_darker_max"}


def test_blob_map_is_the_analytic_curvature_of_a_gaussian_blob_and_ignores_tubes_sheets_and_dark_spots():
    """A Gaussian blob A·exp(−r²/2s²) smoothed by σ is a Gaussian of variance s² + σ² and amplitude
    A·(s²/(s² + σ²))^{3/2}; at its centre every curvature is −amplitude/(s² + σ²), so the map is
    σ²·A·s³/(s² + σ²)^{5/2} there. A tube or a sheet of the same profile has a zero curvature and scores ~0,
    and so does a dark blob."""
    n, c, s, amp, sigma = 33, 16, 2.0, 0.8, 1.5
    g = np.mgrid[:n, :n, :n].astype(np.float64) - c
    blob = amp * np.exp(-(g**2).sum(0) / (2 * s * s))
    m = anomaly.blob_map(blob.astype(np.float32), sigma)
    expected = sigma**2 * amp * s**3 / (s * s + sigma * sigma) ** 2.5
    assert np.unravel_index(int(np.argmax(m)), m.shape) == (c, c, c)
    assert m[c, c, c] == pytest.approx(expected, rel=0.02)
    tube = amp * np.exp(-(g[0] ** 2 + g[1] ** 2) / (2 * s * s))
    sheet = amp * np.exp(-(g[0] ** 2) / (2 * s * s))
    for other in (tube, sheet, -blob):
        assert anomaly.blob_map(other.astype(np.float32), sigma).max() < 0.01 * expected
    # blob_score: σ in mm over the spacing, on x − x̂; anisotropic spacing gives per-axis σ
    x, rec = (blob + 0.1).astype(np.float32), np.full(blob.shape, 0.1, np.float32)
    assert anomaly.blob_score(x, rec, (2.0, 2.0, 2.0), sigma_mm=3.0) == pytest.approx(float(m.max()), rel=1e-5)
    aniso = anomaly.blob_score(x, rec, (1.0, 1.0, 2.0), sigma_mm=3.0)
    assert aniso == pytest.approx(float(anomaly.blob_map(x - rec, (3.0, 3.0, 1.5)).max()), rel=1e-5)
    with pytest.raises(ValueError, match="must be > 0"):
        anomaly.blob_map(blob.astype(np.float32), 0.0)


def test_signed_scores_are_written_and_scored_for_the_data_set(tmp_path):
    from sklearn.metrics import roc_auc_score

    data = lesion_dataset(tmp_path / "d")
    summary = anomaly.anomaly_dataset(NormalModel(), data, tmp_path / "o", progress=False, figures=0)
    rows = read_scores(tmp_path / "o" / "scores.csv")
    y = [int(r["abnormal"]) for r in rows]
    # NormalModel clips at 0.5: the lesions (0.9) are the only voxels brighter than the reconstruction
    assert [float(r["score_brighter_max"]) for r in rows] == pytest.approx([0, 0.4, 0, 0.4, 0, 0.4], abs=1e-3)
    assert all(float(r["score_darker_max"]) == 0.0 for r in rows)
    assert [float(r["score_blob_max"]) > 1e-3 for r in rows] == [bool(v) for v in y]  # normal: x − x̂ = 0
    for name in ("score_brighter_max", "score_darker_max", "score_lung_max", "score_blob_max"):
        assert summary.metrics[f"auroc_{name}"] == pytest.approx(roc_auc_score(y, [float(r[name]) for r in rows]))


def test_a_rerun_reads_the_finished_volumes_back_instead_of_reconstructing_them(tmp_path):
    data = lesion_dataset(tmp_path / "d", n=4)
    model = NormalModel()
    anomaly.anomaly_dataset(model, data, tmp_path / "o", progress=False, figures=0)
    first = read_scores(tmp_path / "o" / "scores.csv")
    assert model.calls == 4
    (tmp_path / "o" / "outputs" / "v2.npz").unlink()  # as if interrupted before v2 finished
    again = anomaly.anomaly_dataset(model, data, tmp_path / "o", progress=False, figures=0)
    assert model.calls == 5 and again.written == ["v2"] and sorted(again.skipped) == ["v0", "v1", "v3"]
    assert read_scores(tmp_path / "o" / "scores.csv") == first


def test_volume_scores_and_ground_truth_without_both_classes():
    amap = np.zeros((10, 10, 10), np.float32)
    amap[0, 0, :5] = 1.0
    s = anomaly.volume_scores(amap)
    assert s["score_mean"] == pytest.approx(5 / 1000) and s["score_max"] == 1.0
    assert s["score_p99"] == pytest.approx(np.percentile(amap, 99))
    m = anomaly.ground_truth_metrics([{"abnormal": 0, "score": 1.0, **s}], [amap], None)
    assert "auroc_score" not in m and "positive" in m["notes"][0]


def test_models_that_cannot_reconstruct_and_options_they_do_not_take_are_one_line_errors():
    from medgen.commands.anomaly import _options

    with pytest.raises(UsageError, match="cannot reconstruct"):
        anomaly.check_model(SimpleNamespace(generate=lambda n: None))
    args = argparse.Namespace(noise_level=0.3, steps=None, seed=None, box=None, shifts=None)
    with pytest.raises(UsageError, match="--noise-level: this model.s reconstruction takes no such option"):
        _options(args, NormalModel())

    class Diffusion(NormalModel):
        def reconstruct(self, volumes, noise_level=0.25, steps=None, seed=0, batch_size=1):
            return np.asarray(volumes)

    assert _options(args, Diffusion()) == {"noise_level": 0.3}
    with pytest.raises(UsageError, match="0 < F <= 1"):
        _options(argparse.Namespace(noise_level=1.5, steps=None, seed=None, box=None, shifts=None), Diffusion())


def test_scans_of_another_size_are_reported_and_the_others_written(tmp_path):
    nib = pytest.importorskip("nibabel")
    from medgen.data.discover import scan_inputs

    scans = tmp_path / "scans"
    scans.mkdir()
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    good = np.full((S, S, S), -1000, np.int16)
    good[4:8, 4:8, 4:8] = 500  # +500 HU: above 0.5 in [-1, 1] units? (500 + 1024) / 1624 · 2 − 1 = 0.877
    nib.save(nib.Nifti1Image(good, affine), scans / "a.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.int16), affine), scans / "b.nii.gz")
    summary = anomaly.anomaly_scans(NormalModel(), scan_inputs(scans, exclude=tmp_path / "o"), tmp_path / "o",
                                    progress=False)
    assert summary.written == ["a"] and len(summary.failed) == 1 and "model works on 16³" in summary.failed[0][1]
    amap = nib.load(tmp_path / "o" / "maps" / "a.nii.gz")
    assert np.allclose(amap.affine, affine)  # on the scan's own grid
    values = np.asarray(amap.dataobj)
    assert values[5, 5, 5] == pytest.approx(500 - (-1024 + 0.75 * 1624), abs=1.0) and values[0, 0, 0] == 0


class SystematicModel(NormalModel):
    """Reconstructs the normal volume plus an error pattern that is the same in every volume (and a little
    of the volume's own noise), as a model that cannot render some structures does."""

    def __init__(self):
        super().__init__()
        self.pattern = np.random.default_rng(3).uniform(0.0, 0.3, (S, S, S)).astype(np.float32)

    def reconstruct(self, volumes, batch_size=1):
        x = np.asarray(volumes, dtype=np.float32)
        return np.minimum(x, 0.5) - self.pattern - 0.05 * (x - x.mean())


def test_normative_maps_standardise_each_voxel_by_the_reference_volumes(tmp_path):
    from sklearn.metrics import roc_auc_score

    nib = pytest.importorskip("nibabel")
    data = lesion_dataset(tmp_path / "d")
    reference_dir = make_dataset(tmp_path / "ref", n=4, size=S, seed=5)
    model = SystematicModel()
    ref = anomaly.reference_statistics(model, reference_dir, tmp_path / "o", progress=False)
    # the statistics by hand: each reference volume's map, voxel-wise mean and std (ddof 1)
    maps = []
    for i in range(4):
        x = np.load(reference_dir / "volumes" / f"v{i}.npy").astype(np.float32)
        maps.append(np.abs(x - model.reconstruct(x[None])[0]))
    assert ref.n == 4 and np.allclose(ref.mean, np.mean(maps, axis=0), atol=1e-6)
    assert np.allclose(ref.std, np.std(maps, axis=0, ddof=1), atol=1e-6)
    amap = maps[0] + 1.0
    expected = np.maximum((amap - ref.mean) / (ref.std + np.median(ref.std)), 0)
    assert np.allclose(ref.standardise(amap), expected, atol=1e-5)

    summary = anomaly.anomaly_dataset(model, data, tmp_path / "o", progress=False, figures=0, reference=ref)
    rows = read_scores(tmp_path / "o" / "scores.csv")
    y = [int(r["abnormal"]) for r in rows]
    z = [float(r["z_score_max"]) for r in rows]
    normative = summary.metrics["normative"]
    assert normative["reference_volumes"] == 4
    assert normative["auroc_score_max"] == pytest.approx(roc_auc_score(y, z))
    assert normative["auroc_score"] == pytest.approx(roc_auc_score(y, [float(r["z_score_mean"]) for r in rows]))
    written = np.asarray(nib.load(tmp_path / "o" / "maps_normative" / "v1.nii.gz").dataobj)
    raw = np.load(tmp_path / "o" / "outputs" / "v1.npz")["map"]
    assert np.allclose(written, ref.standardise(raw), atol=1e-5)
    # the shared error pattern is gone: the lesion stands out far more against the normative map
    lesion = np.load(data / "lesions" / "v1.npy") > 0
    assert written[lesion].mean() / written[~lesion].mean() > 3 * raw[lesion].mean() / raw[~lesion].mean()
    # a rerun reads the reference maps back
    again = anomaly.reference_statistics(model, reference_dir, tmp_path / "o", progress=False)
    assert np.array_equal(again.mean, ref.mean)


class BlobMissingModel(NormalModel):
    """Removes the lesions (clips at 0.5) but misses the same bright blob in every volume, as reconstructions
    miss the branching vessels at the hila: there x − x̂ is a blob stronger than any lesion's."""

    def __init__(self):
        super().__init__()
        g = np.mgrid[:S, :S, :S].astype(np.float32) - 12.0  # far from the lesions (around voxel 8, 8, 6)
        self.missed = np.exp(-(g**2).sum(0) / (2 * 1.5**2)).astype(np.float32)

    def reconstruct(self, volumes, batch_size=1):
        return np.minimum(np.asarray(volumes, dtype=np.float32), 0.5) - self.missed


def _set_spacing(root, mm):
    rows = read_scores(root / "manifest.csv")
    with open(root / "manifest.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, list(rows[0]))
        w.writeheader()
        w.writerows({**r, "spacing": str(mm)} for r in rows)
    return root


def test_blob_excess_ignores_the_blob_every_reconstruction_misses_and_finds_the_lesions(tmp_path):
    from scipy import ndimage as ndi
    from sklearn.metrics import roc_auc_score

    data = _set_spacing(lesion_dataset(tmp_path / "d"), 3.0)  # σ = 4.5 mm = 1.5 voxels
    reference_dir = _set_spacing(make_dataset(tmp_path / "ref", n=4, size=S, seed=5), 3.0)
    model = BlobMissingModel()
    ref = anomaly.reference_statistics(model, reference_dir, tmp_path / "o", progress=False)
    # the envelope by hand: each reference volume's blob map of x − x̂, their voxel-wise maximum, widened by
    # 6.25 mm, two voxels of 3 mm, on each side
    blobs = []
    for i in range(4):
        x = np.load(reference_dir / "volumes" / f"v{i}.npy").astype(np.float32)
        blobs.append(anomaly.blob_map(x - model.reconstruct(x[None])[0], 1.5))
    envelope = ndi.maximum_filter(np.max(blobs, axis=0), size=5, mode="nearest")
    assert np.allclose(ref.blob_envelope, envelope, atol=1e-6)
    missed = float(blobs[0].max())  # the missed blob's response: σ²·A·s³/(s² + σ²)^{5/2} = 0.177
    assert missed == pytest.approx(2.25 * 1.5**3 / 4.5**2.5, rel=0.03)

    summary = anomaly.anomaly_dataset(model, data, tmp_path / "o", progress=False, figures=0, reference=ref)
    rows = read_scores(tmp_path / "o" / "scores.csv")
    y = [int(r["abnormal"]) for r in rows]
    plain = [float(r["score_blob_max"]) for r in rows]
    excess = [float(r["score_blob_excess"]) for r in rows]
    # without the reference every volume scores the missed blob, lesion or not
    assert all(v == pytest.approx(missed, rel=0.02) for v in plain)
    # with it the normal volumes score about 0 and each lesion (a 3³ cube of +0.4) well above
    assert max(e for e, a in zip(excess, y) if not a) < 0.01 < 0.05 < min(e for e, a in zip(excess, y) if a)
    x1 = np.load(data / "volumes" / "v1.npy").astype(np.float32)
    by_hand = anomaly.blob_map(x1 - model.reconstruct(x1[None])[0], 1.5) - envelope
    assert excess[1] == pytest.approx(float(by_hand.max()), rel=1e-5)
    normative = summary.metrics["normative"]
    assert normative["auroc_score_blob_max"] == pytest.approx(roc_auc_score(y, excess)) == 1.0
    assert summary.metrics["auroc_score_blob_max"] == pytest.approx(roc_auc_score(y, plain))
    # the reference's statistics are saved with it
    with np.load(tmp_path / "o" / "reference.npz") as z:
        assert np.array_equal(z["blob_envelope"], ref.blob_envelope)
        assert np.array_equal(z["blob_null"], ref.blob_null)
    with pytest.raises(ValueError, match="envelope is"):
        ref.blob_excess(np.zeros((4, 4, 4), np.float32))


def test_the_envelope_tolerates_the_same_millimetres_on_every_grid():
    from scipy import ndimage as ndi

    assert anomaly.ENVELOPE_TOLERANCE_MM == 6.25
    assert anomaly.envelope_tolerance(6.25) == (1, 1, 1)  # 64³ phantoms
    assert anomaly.envelope_tolerance(12.5) == (1, 1, 1)  # 32³: half a voxel, still one
    assert anomaly.envelope_tolerance(3.125) == (2, 2, 2)  # 128³
    assert anomaly.envelope_tolerance((0.7, 0.7, 2.5)) == (9, 9, 2)  # a CT scan's anisotropic voxels
    with pytest.raises(ValueError, match="spacing"):
        anomaly.envelope_tolerance((1.0, 0.0, 1.0))
    top = np.zeros((9, 9, 9), np.float32)
    top[4, 4, 4] = 1.0
    wide = anomaly.blob_envelope(top, (2, 2, 1))
    assert np.array_equal(wide, ndi.maximum_filter(top, size=(5, 5, 3), mode="nearest"))
    assert wide[2:7, 2:7, 3:6].min() == 1.0 and wide.sum() == 5 * 5 * 3
    assert np.array_equal(anomaly.blob_envelope(top, 0), top)


class HalfModel(NormalModel):
    """Reconstructs half of each volume, so every residual (x/2) and its blobs differ from volume to volume."""

    def reconstruct(self, volumes, batch_size=1):
        return 0.5 * np.asarray(volumes, dtype=np.float32)


def test_blob_null_is_each_reference_volume_against_the_others_and_calibrates_the_excess(tmp_path):
    from scipy import ndimage as ndi

    reference_dir = _set_spacing(make_dataset(tmp_path / "ref", n=5, size=S, seed=9), 3.0)
    model = HalfModel()
    ref = anomaly.reference_statistics(model, reference_dir, tmp_path / "o", progress=False)
    blobs = [anomaly.blob_map(0.5 * np.load(reference_dir / "volumes" / f"v{i}.npy").astype(np.float32), 1.5)
             for i in range(5)]
    # leave-one-out by hand: volume i against the envelope of the four others
    null = [float((blobs[i] - ndi.maximum_filter(np.max(blobs[:i] + blobs[i + 1:], axis=0), size=5,
                                                 mode="nearest")).max()) for i in range(5)]
    assert np.allclose(ref.blob_null, null, atol=1e-6)
    assert np.std(null) > 1e-3  # the volumes differ, so taking the full envelope instead would show
    full = [float((b - ref.blob_envelope).max()) for b in blobs]
    assert max(full) <= 0.0 < max(null)  # against the envelope they are part of, no volume has any excess
    # the calibrated excess: (excess − the null's mean) / its standard deviation
    assert ref.blob_excess_z(0.3) == pytest.approx((0.3 - np.mean(null)) / np.std(null, ddof=1), rel=1e-9)
    data = lesion_dataset(tmp_path / "d")
    anomaly.anomaly_dataset(model, _set_spacing(data, 3.0), tmp_path / "o", progress=False, figures=0, reference=ref)
    rows = read_scores(tmp_path / "o" / "scores.csv")
    for r in rows:
        assert float(r["score_blob_excess_z"]) == pytest.approx(
            (float(r["score_blob_excess"]) - np.mean(null)) / np.std(null, ddof=1), rel=1e-5)
    with np.load(tmp_path / "o" / "reference.npz") as z:
        assert np.array_equal(z["blob_null"], ref.blob_null)
    # a rerun reads the cached maps back and gives the same null
    again = anomaly.reference_statistics(model, reference_dir, tmp_path / "o", progress=False)
    assert np.array_equal(again.blob_null, ref.blob_null)


class BlurModel(NormalModel):
    """Reconstructs a blurred volume, as a coarse autoencoder does: another residual than HalfModel's."""

    def reconstruct(self, volumes, batch_size=1):
        from scipy import ndimage as ndi

        return np.stack([ndi.gaussian_filter(v, 1.0) for v in np.asarray(volumes, dtype=np.float32)])


def _scored(tmp_path, model, name, data, reference_dir, **kw):
    ref = anomaly.reference_statistics(model, reference_dir, tmp_path / name, progress=False)
    anomaly.anomaly_dataset(model, data, tmp_path / name, progress=False, figures=0, reference=ref, **kw)
    return tmp_path / name


def test_the_ensemble_averages_the_calibrated_excess_of_its_members_and_scores_it(tmp_path, capsys):
    from sklearn.metrics import average_precision_score, roc_auc_score

    from medgen.cli import main

    data = _set_spacing(lesion_dataset(tmp_path / "d", n=8), 3.0)
    reference_dir = _set_spacing(make_dataset(tmp_path / "ref", n=5, size=S, seed=9), 3.0)
    half = _scored(tmp_path, HalfModel(), "half", data, reference_dir)
    blur = _scored(tmp_path, BlurModel(), "blur", data, reference_dir)
    assert main(["anomaly-ensemble", str(half), str(blur), "--out", str(tmp_path / "ens")]) == 0
    assert "8 volume(s), 2 detectors; against the ground truth AUROC" in capsys.readouterr().out
    z1 = {r["id"]: float(r["score_blob_excess_z"]) for r in read_scores(half / "scores.csv")}
    z2 = {r["id"]: float(r["score_blob_excess_z"]) for r in read_scores(blur / "scores.csv")}
    assert not np.allclose(list(z1.values()), list(z2.values()))  # two opinions, so the mean is not either one
    rows = read_scores(tmp_path / "ens" / "scores.csv")
    assert [r["id"] for r in rows] == [f"v{i}" for i in range(8)]
    for r in rows:
        assert float(r["score"]) == pytest.approx((z1[r["id"]] + z2[r["id"]]) / 2, rel=1e-9)
        assert float(r["z_1"]) == pytest.approx(z1[r["id"]]) and float(r["z_2"]) == pytest.approx(z2[r["id"]])
    y = [int(r["abnormal"]) for r in rows]
    assert y == [i % 2 for i in range(8)] and rows[1]["lesion_count"] == "1"
    metrics = json.loads((tmp_path / "ens" / "metrics.json").read_text())
    score = [float(r["score"]) for r in rows]
    assert metrics["auroc_score"] == pytest.approx(roc_auc_score(y, score))
    assert metrics["auprc_score"] == pytest.approx(average_precision_score(y, score))
    assert metrics["auroc_z_2"] == pytest.approx(roc_auc_score(y, [z2[r["id"]] for r in rows]))
    members = json.loads((tmp_path / "ens" / "members.json").read_text())["members"]
    assert members == {"z_1": str(half), "z_2": str(blur)}
    # the same folder reused for scans without ground truth: no metrics, and the earlier ones are gone
    plain = [_scored(tmp_path, m, name, reference_dir, reference_dir) for m, name in ((HalfModel(), "h2"),
                                                                                     (BlurModel(), "b2"))]
    assert main(["anomaly-ensemble", *map(str, plain), "--out", str(tmp_path / "ens")]) == 0
    assert "against the ground truth" not in capsys.readouterr().out
    assert not (tmp_path / "ens" / "metrics.json").exists()
    assert "abnormal" not in read_scores(tmp_path / "ens" / "scores.csv")[0]


def test_ensemble_inputs_it_cannot_combine_are_one_line_errors(tmp_path, capsys):
    from medgen.cli import main

    data = _set_spacing(lesion_dataset(tmp_path / "d"), 3.0)
    reference_dir = _set_spacing(make_dataset(tmp_path / "ref", n=3, size=S, seed=9), 3.0)
    half = _scored(tmp_path, HalfModel(), "half", data, reference_dir)
    blur = _scored(tmp_path, BlurModel(), "blur", data, reference_dir, split="train")  # other volumes
    plain = tmp_path / "plain"  # scored without a reference: no calibrated column
    anomaly.anomaly_dataset(HalfModel(), data, plain, progress=False, figures=0)
    for argv, message in (
            ([half, blur], "blur: scored other volumes than"),
            ([half, plain], "no score_blob_excess_z column"),
            ([half, tmp_path / "nowhere"], "no scores.csv"),
            ([half], "at least two"),
            ([half, half], "the same folder is given twice"),
            ([half, plain, "--out", half], "is one of the detectors' folders")):
        args = [str(a) for a in argv]
        out = [] if "--out" in args else ["--out", str(tmp_path / "ens")]
        assert main(["anomaly-ensemble", *args, *out]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "ens").exists()  # nothing half-written
