"""Evaluation as a library call: ``medgen.api.evaluate`` / ``medgen.metrics.evaluate.evaluate``
against the command line, volumes in memory, injected encoder and classifier, and sampling a
run into a folder keyed by its checkpoint."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from medgen.cli import main
from medgen.core.errors import UsageError
from medgen.metrics.evaluate import ClassifierProbs, Evaluation, evaluate, format_table
from medgen.metrics.fid import fid
from medgen.metrics.inception_score import inception_score
from test_evaluate_cli import phantom, write_nifti_hu, write_preprocessed

SIZE = 16


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    base = tmp_path_factory.mktemp("evaluate-api")
    rng = np.random.default_rng(11)
    real = [phantom(rng) for _ in range(6)]
    fake = [phantom(rng) for _ in range(5)]
    return {
        "real": write_preprocessed(base / "real", real),
        "fake": write_nifti_hu(base / "fake", fake),
        "real_volumes": [v.astype(np.float16).astype(np.float32) for v in real],  # as stored (float16)
        "base": base,
    }


def test_api_evaluate_equals_the_command_line(sets, tmp_path, capsys):
    import medgen
    from medgen import api

    names = ["fid", "kid", "mmd", "prdc", "ms_ssim", "anatomy"]
    out = tmp_path / "cli.json"
    code = main(["evaluate", "--real", str(sets["real"]), "--fake", str(sets["fake"]), "--features", "random",
                 "--input-size", "16", "--metrics", ",".join(names), "--prdc-k", "2", "--bootstrap", "2",
                 "--batch-size", "8", "--no-cache", "--no-figures", "--no-progress", "--device", "cpu", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    cli = json.loads(out.read_text())

    ev = api.evaluate(real=sets["real"], fake=sets["fake"], features="random", metrics=names, input_size=16,
                      prdc_k=2, bootstrap=2, batch_size=8, use_cache=False, progress=False, device="cpu")
    assert medgen.evaluate is api.evaluate
    assert isinstance(ev, Evaluation)
    assert set(ev.report) == set(cli)  # the same keys as the JSON the command writes
    assert list(ev.metrics) == names and ev.failed == []
    for name in names:
        ours, theirs = ev.metrics[name], cli["metrics"][name]
        assert set(ours) == set(theirs), name
        assert ours["value"] == pytest.approx(theirs["value"], rel=1e-12, abs=1e-12), name
        assert (ours["std"] is None) == (theirs["std"] is None), name
        if ours["std"] is not None:
            assert ours["std"] == pytest.approx(theirs["std"], rel=1e-12, abs=1e-12), name
        assert ours["settings"] == theirs["settings"], name
    assert ev.report["extractor"] == cli["extractor"] and ev.report["options"] == cli["options"]
    # The table is the one the command prints (which also names the file it wrote).
    assert ev.table() + f"\nwrote {out}\n" == printed
    # save() writes that report as JSON.
    saved = json.loads(ev.save(tmp_path / "api.json").read_text())
    assert saved["metrics"] == json.loads(json.dumps(ev.metrics))


def test_volumes_in_memory_give_the_same_numbers_as_their_folder(sets):
    common = dict(features="random", metrics="fid,mmd,ms_ssim", input_size=16, batch_size=8, use_cache=False,
                  progress=False, device="cpu")
    from_folder = evaluate(sets["real"], sets["real"], **common)
    arrays = np.stack(sets["real_volumes"])
    from_arrays = evaluate(arrays, list(arrays), **common)  # an array [n, X, Y, Z] and a list of volumes
    for name in ("fid", "mmd", "ms_ssim"):
        assert from_arrays.metrics[name]["value"] == pytest.approx(from_folder.metrics[name]["value"], rel=1e-9, abs=1e-9)
    assert from_arrays.metrics["fid"]["value"] == pytest.approx(0.0, abs=1e-6)
    assert from_arrays.report["real"]["kind"] == "array" and from_arrays.report["real"]["n"] == 6
    assert from_arrays.report["feature_cache"]["real"] == {"cache_file": None, "from_cache": False}


def test_volumes_in_memory_outside_minus_one_to_one_name_the_volume():
    """Unnormalised arrays with no modality: the error names the set and the volume (there is no file)."""
    arrays = np.zeros((3, 16, 16, 16), dtype=np.float32)
    arrays[1] = 500.0
    with pytest.raises(UsageError, match=r"^<fake> volume fake-0001: intensities are not in \[-1, 1\] and the "
                                         r"modality is unknown"):
        evaluate(np.zeros((3, 16, 16, 16), dtype=np.float32), arrays, metrics="ms_ssim", progress=False)


class FakeEncoder:
    """A 'model' whose latent code is (mean, std, max) of each volume."""

    def __init__(self, size: int):
        self.config = SimpleNamespace(size=size, latent_dim=3)
        self.device = "cpu"
        self.calls = 0

    def encode(self, volumes):
        self.calls += 1
        v = np.asarray(volumes)
        assert v.ndim == 4 and v.shape[1:] == (self.config.size,) * 3
        return np.stack([v.mean(axis=(1, 2, 3)), v.std(axis=(1, 2, 3)), v.max(axis=(1, 2, 3))], axis=1)


def test_injected_encoder_gives_the_features(sets):
    rng = np.random.default_rng(5)
    real = rng.uniform(-1, 1, (7, SIZE, SIZE, SIZE)).astype(np.float32)
    fake = (rng.uniform(-1, 1, (6, SIZE, SIZE, SIZE)) * 0.5).astype(np.float32)
    encoder = FakeEncoder(SIZE)
    ev = evaluate(real, fake, features="encoder", encoder=encoder, encoder_info={"run": "runs/x", "checkpoint": "iter-000007"},
                  metrics=["fid"], progress=False)
    expected = fid(FakeEncoder(SIZE).encode(real.astype(np.float64)), FakeEncoder(SIZE).encode(fake.astype(np.float64)))
    assert ev.metrics["fid"]["value"] == pytest.approx(expected, rel=1e-5)
    ex = ev.report["extractor"]
    assert (ex["name"], ex["dim"], ex["run"], ex["checkpoint"], ex["input_size"]) == ("encoder", 3, "runs/x", "iter-000007", [16] * 3)
    assert ex["comparable_with_published"] is False and "encoder features" in ex["warning"]
    with pytest.raises(UsageError, match="--weights RUN"):
        evaluate(real, fake, features="encoder", metrics=["fid"], progress=False)


def test_injected_classifier_gives_the_inception_score():
    rng = np.random.default_rng(6)
    fake = rng.uniform(-1, 1, (12, 8, 8, 8)).astype(np.float32)
    real = rng.uniform(-1, 1, (10, 8, 8, 8)).astype(np.float32)
    fake[::3] *= 0.1  # three 'classes' by intensity spread

    def probs(volumes, *, batch_size, progress, total, desc):
        out = []
        for v in volumes:
            s = float(np.std(v))
            logits = np.array([-abs(s - 0.05), -abs(s - 0.3), -abs(s - 0.6)]) * 20
            out.append(np.exp(logits) / np.exp(logits).sum())
        return np.array(out)

    info = {"path": "classifiers/spread", "weights_sha256": "ab" * 32, "label_column": "spread",
            "classes": ["low", "mid", "high"], "in_size": 8, "val_accuracy": 0.9, "test_accuracy": 0.85}
    ev = evaluate(real, fake, metrics="is", classifier=ClassifierProbs(probs, info), is_splits=2, progress=False)
    m = ev.metrics["is"]
    p_fake = probs(list(fake), batch_size=1, progress=False, total=None, desc="")
    p_real = probs(list(real), batch_size=1, progress=False, total=None, desc="")
    assert (m["value"], m["std"]) == pytest.approx(inception_score(p_fake, splits=2), rel=1e-12)
    assert m["details"]["real"]["mean"] == pytest.approx(inception_score(p_real, splits=2)[0], rel=1e-12)
    assert m["details"]["predicted_classes"]["fake"] == np.bincount(p_fake.argmax(1), minlength=3).tolist()
    s = m["settings"]
    assert (s["classifier"], s["classifier_sha256"], s["classes"], s["classifier_test_accuracy"]) == (
        "classifiers/spread", "ab" * 32, ["low", "mid", "high"], 0.85)
    assert "is (real volumes, reference)" in ev.table()
    with pytest.raises(UsageError, match="add is to --metrics"):
        evaluate(real, fake, metrics="ms_ssim", classifier=ClassifierProbs(probs, info))


def test_paired_and_score_metrics_are_refused_on_unpaired_sets(sets, tmp_path, capsys):
    with pytest.raises(UsageError, match="metric 'psnr' compares output volumes with their targets"):
        evaluate(sets["real"], sets["fake"], metrics="fid,psnr")
    code = main(["evaluate", "--real", str(sets["real"]), "--fake", str(sets["fake"]), "--features", "random",
                 "--metrics", "auroc", "--out", str(tmp_path / "m.json")])
    err = capsys.readouterr().err
    assert code == 2 and "evaluate_scores" in err and err.count("\n") == 1


# ---------------------------------------------------------------------------- sampling a run


class FakeRunModel:
    """Stands in for a loaded model: volume i of seed s at checkpoint iteration t is a smooth
    random field drawn from (s, i, t), so 'more training' changes the samples."""

    def __init__(self, run: Path, iteration: int):
        self.checkpoint = run / "checkpoints" / f"iter-{iteration:06d}"
        self.iteration = iteration
        self.config = SimpleNamespace(size=SIZE, num_classes=0, latent_dim=4, lowres_size=SIZE // 4)
        self.preprocess: dict = {}
        self.run_config = None
        self.generated = 0

    def sample_latents(self, n, seed=0, start=0):
        return np.zeros((n, 4), np.float32)

    def volume(self, seed: int, i: int) -> np.ndarray:
        from scipy.ndimage import gaussian_filter

        noise = gaussian_filter(np.random.default_rng([seed, i, self.iteration]).normal(size=(SIZE,) * 3), 1.0 + self.iteration / 200)
        return np.clip(noise / np.abs(noise).max(), -1, 1).astype(np.float32)

    def generate(self, n, seed=0, labels=None, chunk=None, batch_size=1, indices=None):
        self.generated += n
        idx = list(indices) if indices is not None else list(range(n))
        return np.stack([self.volume(seed, i) for i in idx])


def test_sampling_a_run_is_keyed_by_its_checkpoint(sets, tmp_path, monkeypatch):
    """After more training, the next evaluation samples the new checkpoint instead of reusing
    the earlier checkpoint's sample files."""
    from medgen import api

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("family: fake\n")
    current = {"model": FakeRunModel(run, 100)}
    monkeypatch.setattr(api, "load", lambda run_dir, checkpoint=None, device="cpu", **kw: current["model"])
    arrays = np.stack(sets["real_volumes"])
    common = dict(features="random", metrics=["fid"], input_size=16, batch_size=8, use_cache=False, progress=False,
                  device="cpu", seed=3, samples_dir=tmp_path / "samples")

    def expected_fid(model, n):
        """FID of the model's first n volumes of seed 3 against the same seeded subset of n real volumes."""
        fake = np.stack([model.volume(3, i) for i in range(n)])
        options = {k: v for k, v in common.items() if k != "samples_dir"}
        return evaluate(arrays, fake, n=n, **options).metrics["fid"]["value"]

    first = api.evaluate(arrays, run, n=4, **common)
    assert first.report["fake"]["path"] == str(tmp_path / "samples" / "iter-000100-seed3")
    assert first.metrics["fid"]["value"] == pytest.approx(expected_fid(current["model"], 4), rel=1e-9)

    current["model"] = FakeRunModel(run, 300)  # training went on: a new checkpoint
    second = api.evaluate(arrays, run, n=4, **common)
    assert second.report["fake"]["path"] == str(tmp_path / "samples" / "iter-000300-seed3")
    assert current["model"].generated == 4  # sampled anew, nothing reused
    assert second.metrics["fid"]["value"] == pytest.approx(expected_fid(current["model"], 4), rel=1e-9)
    assert second.metrics["fid"]["value"] != pytest.approx(first.metrics["fid"]["value"], rel=1e-3)
    saved = np.load(tmp_path / "samples" / "iter-000300-seed3" / "sample-0002.npy")
    np.testing.assert_array_equal(saved, current["model"].volume(3, 2))

    # The same checkpoint again, fewer volumes: the files are reused, and only the first n are evaluated.
    again = api.evaluate(arrays, run, n=2, **common)
    assert current["model"].generated == 4 and again.report["fake"]["n"] == 2
    assert again.metrics["fid"]["value"] == pytest.approx(expected_fid(current["model"], 2), rel=1e-9)

    with pytest.raises(UsageError, match="is a training run; pass --n N"):
        api.evaluate(arrays, run, **{k: v for k, v in common.items()})


def test_format_table_is_reexported_by_the_command():
    from medgen.commands import evaluate as command

    report = {"metrics": {"fid": {"value": 1.5, "std": None, "n_real": 3, "n_fake": 4}}}
    assert command.format_table(report) == format_table(report)
    assert "fid     1.5    -    3       4" in format_table(report)


def test_format_table_gives_coverage_its_same_distribution_reference():
    def report(n_real, n_fake):
        return {"metrics": {"prdc": {
            "value": {"precision": 0.9, "recall": 0.8, "density": 1.0, "coverage": 0.6}, "n_real": n_real,
            "n_fake": n_fake, "settings": {"k": 5}, "details": {"coverage_same_distribution": 0.8735}}}}

    lines = format_table(report(128, 64)).splitlines()
    assert "prdc.coverage (same distribution, expected)  0.8735  -    128     64" in lines
    assert ("prdc: a generator that draws from the real distribution itself would cover 0.87 of the real volumes "
            "at these set sizes and k=5; with fewer generated than real volumes coverage comes out lower and recall "
            "higher than at equal sizes: compare sets of equal size") in lines
    equal = format_table(report(64, 64))
    assert "would cover 0.87 of the real volumes at these set sizes and k=5\n" in equal + "\n"
    assert "compare sets of equal size" not in equal


def test_format_table_tells_a_wrong_spread_from_a_wrong_mean():
    real, narrow, wide = np.array([0.1, 0.2, 0.3]), np.array([0.19, 0.2, 0.21]), np.array([-0.1, 0.3, 0.7])

    def stats(r, f):
        return {"real_mean": float(r.mean()), "real_std": float(r.std()), "fake_mean": float(f.mean()),
                "fake_std": float(f.std())}

    report = {"metrics": {"anatomy": {
        "value": {"lung_fraction": 0.05, "bone_fraction": 0.01, "emphysema_pct": 0.3, "air_fraction": 0.0},
        "n_real": 3, "n_fake": 3,
        "details": {"lung_fraction": stats(real, narrow), "bone_fraction": stats(real, real + 0.01),
                    "emphysema_pct": stats(real, wide), "air_fraction": {"real_mean": float("nan")}}}}}
    lines = format_table(report).splitlines()
    assert "anatomy.lung_fraction: mean (std) real 0.2 (0.08165), generated 0.2 (0.008165); " \
           "generated spread 0.10x the real" in lines
    assert "anatomy.bone_fraction: mean (std) real 0.2 (0.08165), generated 0.21 (0.08165)" in lines  # no flag
    assert "anatomy.emphysema_pct: mean (std) real 0.2 (0.08165), generated 0.3 (0.3266); " \
           "generated spread 4.0x the real" in lines
    assert not any(line.startswith("anatomy.air_fraction:") for line in lines)  # no statistics, no line


def test_format_table_flags_organs_tied_to_the_body_more_than_in_real_volumes():
    report = {"metrics": {"anatomy": {
        "value": {"lung_fraction": 0.01}, "n_real": 8, "n_fake": 8, "details": {},
        "correlations": {"body_volume_ml~lung_volume_ml": {"real": 0.8, "fake": 0.98},
                         "body_volume_ml~bone_volume_ml": {"real": 0.3, "fake": 0.1},
                         "fat_fraction~bone_volume_ml": {"real": 0.95, "fake": 0.6},
                         "bone_volume_ml~fat_fraction": {"real": 0.11, "fake": -0.62},
                         "lung_fraction~emphysema_pct": {"real": 0.25, "fake": float("nan")}}}}}
    lines = format_table(report).splitlines()
    # 1 - 0.98² = 0.0396 against 1 - 0.8² = 0.36: 0.11 of the real
    assert "anatomy correlation body_volume_ml ~ lung_volume_ml: real 0.80, generated 0.98; " \
           "unexplained variance 1 - r^2 0.11x the real" in lines
    assert "anatomy correlation body_volume_ml ~ bone_volume_ml: real 0.30, generated 0.10" in lines  # 0.99 / 0.91
    assert "anatomy correlation bone_volume_ml ~ fat_fraction: real 0.11, generated -0.62; -0.73 from the real" \
        in lines  # 0.62 / 0.99 of unexplained variance: only the distance flags it
    assert "anatomy correlation fat_fraction ~ bone_volume_ml: real 0.95, generated 0.60; " \
           "unexplained variance 1 - r^2 6.6x the real" in lines  # 0.64 / 0.0975
    assert not any("lung_fraction ~ emphysema_pct" in line for line in lines)


class LungDensityEncoder:
    """A 'model' whose latent code is the share of voxels between -0.99 and -0.95 (lungs at about -1000 HU,
    emphysematous; air at -1 is left out) and the mean, so that emphysematous volumes lie far from the others."""

    def __init__(self, size: int):
        self.config = SimpleNamespace(size=size, latent_dim=2)
        self.device = "cpu"

    def encode(self, volumes):
        v = np.asarray(volumes)
        return np.stack([((v > -0.99) & (v < -0.95)).mean(axis=(1, 2, 3)) * 1000, v.mean(axis=(1, 2, 3))], axis=1)


def test_evaluate_names_the_real_volumes_the_generated_set_misses_and_their_anatomy(tmp_path):
    # Eight real bodies, the last four with emphysematous lungs (-1000 HU instead of -900); the generated set
    # copies the first four. Coverage and recall must miss exactly the four emphysematous ones, and the profile
    # must say that they are the emphysematous ones.
    rng = np.random.default_rng(21)
    real = [phantom(rng) for _ in range(8)]
    for v in real[4:]:
        v[(v > -0.9) & (v < -0.8)] = -0.97  # the lungs (-0.85) become emphysema
    root = write_preprocessed(tmp_path / "real", real)
    fake = np.stack([v.astype(np.float16).astype(np.float32) for v in real[:4]])
    ev = evaluate(root, fake, features="encoder", encoder=LungDensityEncoder(SIZE), metrics="prdc,anatomy",
                  prdc_k=2, progress=False)
    prdc_result = ev.metrics["prdc"]
    assert prdc_result["value"]["coverage"] == pytest.approx(0.5) and prdc_result["value"]["recall"] == pytest.approx(0.5)
    details = prdc_result["details"]
    assert details["real_uncovered"] == details["real_not_recalled"] == ["v04", "v05", "v06", "v07"]
    for kind in ("coverage", "recall"):
        emphysema = details["missed_anatomy"][kind]["emphysema_pct"]
        assert (emphysema["n_missed"], emphysema["n_reached"]) == (4, 4)
        assert emphysema["missed_mean"] > 90 and emphysema["reached_mean"] < 5  # every lung voxel below -950 HU, none
        assert emphysema["standardized"] == pytest.approx(
            (emphysema["missed_mean"] - emphysema["reached_mean"]) / emphysema["real_std"])
    lines = format_table(ev.report).splitlines()
    line = next(x for x in lines if x.startswith("prdc: the 4 real volumes that no generated volume covers"))
    assert "emphysema_pct (+" in line
    # Without the anatomy metric there is no profile, only the names.
    alone = evaluate(root, fake, features="encoder", encoder=LungDensityEncoder(SIZE), metrics="prdc", prdc_k=2,
                     progress=False).metrics["prdc"]["details"]
    assert "missed_anatomy" not in alone and alone["real_uncovered"] == ["v04", "v05", "v06", "v07"]
