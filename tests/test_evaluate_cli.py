"""`medgen evaluate` end to end on tiny folders, the feature cache, volume sets and exit codes."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medgen.cli import main
from medgen.metrics.features import RANDOM_WARNING, make_extractor
from medgen.metrics.fid import fid
from medgen.metrics.registry import EvalContext, EvalOptions
from medgen.metrics.volumes import align_shapes, open_volume_set
from toy_volumes import toy_body

HU_LO, HU_HI = -1024.0, 600.0
SIZE = 16


def phantom(rng: np.random.Generator, n: int = SIZE) -> np.ndarray:
    return toy_body(rng, n, spine=True)


def to_hu(x: np.ndarray) -> np.ndarray:
    return HU_LO + (x.astype(np.float64) + 1) / 2 * (HU_HI - HU_LO)


def from_hu(hu: np.ndarray) -> np.ndarray:
    return (np.clip(hu, HU_LO, HU_HI) - HU_LO) / ((HU_HI - HU_LO) / 2) - 1


def write_preprocessed(root: Path, volumes: list[np.ndarray], spacing: float = 10.0) -> Path:
    (root / "volumes").mkdir(parents=True)
    rows = []
    for i, v in enumerate(volumes):
        np.save(root / "volumes" / f"v{i:02d}.npy", v.astype(np.float16))
        s = f"{spacing:g}x{spacing:g}x{spacing:g}"
        rows.append({"id": f"v{i:02d}", "source": "test", "orig_shape": "16x16x16", "orig_spacing": s, "spacing": s, "file": f"volumes/v{i:02d}.npy"})
    with open(root / "manifest.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    info = {"modality": "ct", "size": volumes[0].shape[0], "spacing": None, "hu_window": [HU_LO, HU_HI]}
    (root / "preprocess.json").write_text(json.dumps(info))
    return root


def write_nifti_hu(root: Path, volumes: list[np.ndarray], spacing: float = 10.0, prefix: str = "g") -> Path:
    root.mkdir(parents=True)
    for i, v in enumerate(volumes):
        nib.save(nib.Nifti1Image(to_hu(v).astype(np.float32), np.diag([spacing] * 3 + [1.0])), root / f"{prefix}{i:02d}.nii.gz")
    return root


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    base = tmp_path_factory.mktemp("evaluate")
    rng = np.random.default_rng(0)
    train = [phantom(rng) for _ in range(7)]
    heldout = [phantom(rng) for _ in range(7)]
    # Generated: exact copies of three training volumes (as HU NIfTI) and four new phantoms.
    fake = [train[0], train[3], train[5]] + [phantom(rng) for _ in range(4)]
    return {
        "train": write_preprocessed(base / "train", train),
        "real": write_preprocessed(base / "real", heldout),
        "fake": write_nifti_hu(base / "fake", fake),
        "fake_volumes": fake,
        "real_volumes": heldout,
        "base": base,
    }


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_evaluate_real_fake_train(folders, tmp_path, capsys):
    out = tmp_path / "metrics.json"
    code, stdout, _ = run_cli(
        ["evaluate", "--real", str(folders["real"]), "--fake", str(folders["fake"]), "--train", str(folders["train"]),
         "--features", "random", "--input-size", "16", "--prdc-k", "3", "--batch-size", "16", "--bootstrap", "3",
         "--no-progress", "--out", str(out)],
        capsys,
    )
    assert code == 0
    report = json.loads(out.read_text())
    assert report["warning"] == RANDOM_WARNING and "WARNING: " + RANDOM_WARNING in stdout
    assert report["extractor"]["name"] == "random" and report["extractor"]["input_size"] == [16, 16, 16]
    metrics = report["metrics"]
    assert set(metrics) == {"fid", "kid", "mmd", "prdc", "ms_ssim", "dimensionality", "anatomy", "memorisation"}
    for name in ("fid", "kid", "mmd", "prdc", "memorisation"):
        m = metrics[name]
        assert (m["n_real"], m["n_fake"], m["extractor"], m["comparable_with_published"]) == (7, 7, "random", False), name
        assert m["warning"] == RANDOM_WARNING
    assert metrics["fid"]["std"] is not None and "3 bootstrap" in metrics["fid"]["settings"]["uncertainty"]
    # coverage's same-distribution reference at 7 real, 7 generated, k = 3: 1 - C(6, 3) / C(13, 3) = 1 - 20 / 286
    assert metrics["prdc"]["details"]["coverage_same_distribution"] == pytest.approx(266 / 286)
    row = next(line for line in stdout.splitlines() if line.startswith("prdc.coverage (same distribution, expected)"))
    assert row.split()[-4:] == ["0.9301", "-", "7", "7"]

    # The pipeline's features equal an independent computation: same seeded network, volumes
    # read here directly (fake: HU NIfTI mapped with the CT window by hand).
    extractor = make_extractor("random", input_size=16, device="cpu", seed=0)
    stored = [v.astype(np.float16).astype(np.float32) for v in folders["real_volumes"]]  # preprocessed sets are float16
    fake_arrays = [from_hu(nib.load(p).get_fdata()) for p in sorted(Path(folders["fake"]).glob("*.nii.gz"))]
    both = extractor.extract(stored + fake_arrays, batch_size=16, progress=False)
    real_feats, fake_feats = both[:7], both[7:]
    assert metrics["fid"]["value"] == pytest.approx(fid(real_feats, fake_feats), rel=1e-5)

    # Memorisation: the three copies of training volumes are caught, the new ones are not.
    details = metrics["memorisation"]["details"]
    assert details["likely_copy_ids"] == ["g00", "g01", "g02"]
    assert metrics["memorisation"]["value"] < 1.0
    assert "held-out" in metrics["memorisation"]["settings"]["reference"]
    # Anatomy in HU: identical physics on both sides, one Wasserstein distance per statistic.
    assert {"lung_fraction", "bone_fraction", "body_volume_ml"} <= set(metrics["anatomy"]["value"])
    real_lung = metrics["anatomy"]["details"]["lung_fraction"]["real_mean"]
    assert 0.05 < real_lung < 0.5
    # With --train, each statistic has its floor: 7 training volumes vs the same 7 held-out ones
    # (as many as generated, so one draw, the whole training set).
    ref = metrics["anatomy"]["details"]["lung_fraction"]["reference"]
    assert (ref["n"], ref["repeats"], ref["std"]) == (7, 1, 0.0) and ref["median"] > 0
    assert "training volumes drawn at random" in metrics["anatomy"]["settings"]["reference"]
    assert re.search(r"anatomy\.lung_fraction \(W1, training vs real, reference\)\s+\S+\s+0\s+7\s+7", stdout)
    # Dimensionality: the participation ratio of the same volumes' 16³ principal-component variances,
    # computed here with scikit-learn (16³ volumes: the block means are the voxels).
    from sklearn.decomposition import PCA

    for key, volumes in (("real", stored), ("fake", fake_arrays)):
        lam = PCA().fit(np.stack([v.ravel() for v in volumes]).astype(np.float64)).explained_variance_
        assert metrics["dimensionality"]["details"][key]["participation_ratio"] == pytest.approx(
            lam.sum() ** 2 / (lam**2).sum(), rel=1e-5), key
    assert re.search(r"dimensionality \(real, reference\)\s+\S+\s+-\s+7\s+-", stdout)
    figures = {Path(f).name for f in report["figures"]}
    assert figures == {"features.png", "dimensionality.png", "anatomy_histograms.png", "nearest_training_pairs.png"}
    assert all(Path(f).stat().st_size > 1000 for f in report["figures"])


def test_evaluate_folder_against_itself_hits_the_cache(folders, tmp_path, capsys):
    import shutil

    real = shutil.copytree(folders["real"], tmp_path / "real", ignore=shutil.ignore_patterns(".medgen-cache"))
    out = tmp_path / "self.json"
    argv = ["evaluate", "--real", str(real), "--fake", str(real), "--features", "random", "--input-size", "16",
            "--metrics", "fid,mmd,prdc,anatomy", "--prdc-k", "3", "--batch-size", "16", "--no-progress", "--no-figures", "--out", str(out)]
    code, stdout, _ = run_cli(argv, capsys)
    assert code == 0
    report = json.loads(out.read_text())
    m = report["metrics"]
    assert m["fid"]["value"] == pytest.approx(0.0, abs=1e-6)
    assert m["prdc"]["value"] == {"precision": 1.0, "recall": 1.0, "density": 1.0, "coverage": 1.0}
    assert m["mmd"]["value"] <= 0.0  # unbiased estimate for identical samples
    if m["mmd"]["value"] < 0:  # ... and the table explains the sign
        assert "mmd: unbiased estimate; below 0 means" in stdout
    assert all(v == pytest.approx(0.0, abs=1e-12) for v in m["anatomy"]["value"].values())
    # The pairs of anatomy statistics correlate alike in a set and in itself, and the table says so.
    corr = m["anatomy"]["correlations"]
    assert set(corr) == {"body_volume_ml~lung_volume_ml", "body_volume_ml~bone_volume_ml", "lung_fraction~emphysema_pct",
                         "lung_volume_ml~fat_fraction"}
    pair = corr["body_volume_ml~lung_volume_ml"]
    assert pair["real"] == pair["fake"] and -1 <= pair["real"] <= 1 and pair["n_real"] == pair["n_fake"] > 2
    assert f"anatomy correlation body_volume_ml ~ lung_volume_ml: real {pair['real']:.2f}, generated " \
           f"{pair['fake']:.2f}\n" in stdout
    # Real features computed once; the same folder as --fake is read back from the cache.
    assert report["feature_cache"]["real"]["from_cache"] is False
    assert report["feature_cache"]["fake"]["from_cache"] is True
    assert Path(report["feature_cache"]["real"]["cache_file"]).parent == real / ".medgen-cache"


class CountingExtractor:
    """Stands in for a network: features are per-volume statistics; counts extract calls."""

    def __init__(self, tag: str = "a"):
        self.tag, self.calls = tag, 0
        self.name, self.comparable_with_published, self.warning = "stub", False, None

    def describe(self):
        return {"name": self.name, "tag": self.tag}

    def extract(self, volumes, batch_size=2, progress=True, total=None, desc=None):
        self.calls += 1
        return np.array([[v.mean(), v.std(), v.max()] for v in volumes])


def test_feature_cache_reuses_and_invalidates(folders, tmp_path):
    import shutil

    root = shutil.copytree(folders["real"], tmp_path / "set", ignore=shutil.ignore_patterns(".medgen-cache"))

    def features(extractor):
        vs = open_volume_set(root)
        ctx = EvalContext(real=vs, fake=vs, extractor_factory=lambda: extractor, options=EvalOptions(progress=False))
        return ctx.features("real"), ctx.feature_info["real"]

    ex = CountingExtractor()
    first, info = features(ex)
    expected = np.array([[v.astype(np.float16).astype(np.float32).mean(), v.astype(np.float16).astype(np.float32).std(),
                          v.astype(np.float16).astype(np.float32).max()] for v in folders["real_volumes"]])
    np.testing.assert_allclose(first, expected, rtol=1e-6)
    second, info2 = features(ex)
    assert ex.calls == 1 and info2["from_cache"] and not info["from_cache"]
    np.testing.assert_array_equal(first, second)
    features(CountingExtractor(tag="other settings"))  # another extractor setting: new key
    other = CountingExtractor(tag="other settings")
    features(other)
    assert other.calls == 0  # ...which is now cached too
    # Changing a volume file (content and modification time) invalidates the cache.
    path = root / "volumes" / "v03.npy"
    np.save(path, np.zeros((SIZE,) * 3, np.float16))
    changed, info3 = features(ex)
    assert ex.calls == 2 and not info3["from_cache"]
    assert changed[3, 0] == 0.0 and changed[2, 0] == pytest.approx(first[2, 0])


def test_volume_sets_read_hu_niftis_and_align_shapes(tmp_path):
    rng = np.random.default_rng(3)
    vols = [phantom(rng, 20) for _ in range(2)]
    nifti = open_volume_set(write_nifti_hu(tmp_path / "n", vols, spacing=8.0), modality="ct")
    pre = open_volume_set(write_preprocessed(tmp_path / "p", [phantom(rng) for _ in range(2)]))
    assert nifti.kind == "files" and pre.kind == "preprocessed" and pre.modality == "ct"
    np.testing.assert_allclose(nifti[1], from_hu(to_hu(vols[1]).astype(np.float32)), atol=1e-6)
    assert nifti.spacing(0) == (8.0, 8.0, 8.0) and pre.spacing(1) == (10.0, 10.0, 10.0)
    target = align_shapes(nifti, pre)
    assert target == (16, 16, 16) and nifti[0].shape == (16, 16, 16)
    assert nifti.spacing(0) == pytest.approx((10.0, 10.0, 10.0))  # 20 voxels of 8 mm = 16 of 10 mm
    hu = nifti.hu(0)
    assert hu.min() >= HU_LO and hu.max() <= HU_HI
    np.testing.assert_allclose(hu, to_hu(nifti[0]), atol=1e-3)
    assert any("resized to 16x16x16" in n for n in nifti.notes)


def test_usage_and_input_errors_exit_2_with_one_line(folders, tmp_path, capsys):
    real, fake = str(folders["real"]), str(folders["fake"])
    out = str(tmp_path / "m.json")
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        (["--real", str(tmp_path / "nope"), "--fake", fake, "--features", "random"], "nope: --real folder does not exist"),
        (["--real", real, "--fake", str(empty), "--features", "random"], "empty: --fake folder holds no volumes"),
        (["--real", real, "--fake", fake, "--features", "random", "--metrics", "fid,bogus"], "unknown metric 'bogus'"),
        (["--real", real, "--fake", fake], "--features random"),
        (["--real", real, "--fake", fake, "--metrics", "is"], "IS needs a classifier"),
        (["--real", real, "--fake", fake, "--features", "random", "--metrics", "memorisation"], "needs --train"),
    ]
    for args, message in cases:
        code, _, err = run_cli(["evaluate", *args, "--no-progress", "--out", out], capsys)
        assert code == 2, args
        assert message in err and err.count("\n") == 1, (args, err)
    assert not Path(out).exists()


def test_paper_protocol_with_a_medicalnet_format_weight_file(folders, tmp_path, capsys):
    # A MedicalNet-style file (DataParallel prefix, segmentation head) holding the seed-0
    # random weights: the med3d extractor must then equal the random network fed the same input.
    reference = make_extractor("random", input_size=None, intensity="raw", axis_order="xyz", device="cpu", seed=0)
    state = {f"module.{k}": v for k, v in reference.network.state_dict().items()}
    state["module.conv_seg.4.weight"] = torch.zeros(2, 32, 1, 1, 1)
    weights = tmp_path / "resnet_50_23dataset.pth"
    torch.save({"state_dict": state}, weights)
    out = tmp_path / "paper.json"
    code, stdout, _ = run_cli(
        ["evaluate", "--real", str(folders["real"]), "--fake", str(folders["fake"]), "--weights", str(weights),
         "--paper-protocol", "--metrics", "fid,mmd", "--batch-size", "16", "--no-progress", "--no-figures", "--out", str(out)],
        capsys,
    )
    assert code == 0
    report = json.loads(out.read_text())
    ex = report["extractor"]
    assert (ex["name"], ex["input_size"], ex["intensity"], ex["axis_order"]) == ("med3d", "native", "raw", "zyx")
    assert report["warning"] is None and report["metrics"]["fid"]["comparable_with_published"] is True
    assert "WARNING" not in stdout
    # Independent: volumes transposed to (z, y, x) by hand, raw [-1, 1], native 16^3.
    real = [v.astype(np.float16).astype(np.float32).transpose(2, 1, 0) for v in folders["real_volumes"]]
    fake = [from_hu(nib.load(p).get_fdata()).transpose(2, 1, 0) for p in sorted(Path(folders["fake"]).glob("*.nii.gz"))]
    both = reference.extract(real + fake, batch_size=16, progress=False)
    expected = fid(both[:7], both[7:])
    assert report["metrics"]["fid"]["value"] == pytest.approx(expected, rel=1e-5)


def test_inception_score_from_a_probability_file(folders, tmp_path, capsys):
    probs = np.eye(3)[np.arange(30) % 3] * 0.9 + 0.1 / 3  # confident, balanced over 3 classes
    path = tmp_path / "probs.npy"
    np.save(path, probs)
    out = tmp_path / "is.json"
    code, _, _ = run_cli(
        ["evaluate", "--real", str(folders["real"]), "--fake", str(folders["fake"]), "--metrics", "is",
         "--is-probs", str(path), "--no-progress", "--out", str(out)],
        capsys,
    )
    assert code == 0
    m = json.loads(out.read_text())["metrics"]["is"]
    p, q = probs[0], probs.mean(axis=0)
    assert m["value"] == pytest.approx(float(np.exp((p * np.log(p / q)).sum())), rel=1e-9)
    assert m["n_fake"] == 30 and m["settings"]["classes"] == 3


def test_wrong_medicalnet_weights_exit_2(folders, tmp_path, capsys):
    bad = tmp_path / "resnet_18.pth"
    torch.save({"state_dict": {"module.conv1.weight": torch.zeros(64, 1, 7, 7, 7)}}, bad)
    code, _, err = run_cli(
        ["evaluate", "--real", str(folders["real"]), "--fake", str(folders["fake"]), "--weights", str(bad),
         "--input-size", "16", "--no-progress", "--out", str(tmp_path / "m.json")],
        capsys,
    )
    assert code == 2
    assert "resnet_18.pth: not a MedicalNet ResNet-50 state dict: missing" in err and err.count("\n") == 1


@pytest.mark.slow  # trains a tiny run unless test_generate/test_encode already did in this test run
def test_encoder_features_and_sampling_a_run(tmp_path_factory, tmp_path, capsys):
    """--fake RUN --n N samples the run; --features encoder uses its E^H -> E^G latent codes."""
    from test_generate import trained_run

    from medgen.api import load
    from medgen.metrics.kid import kid

    run, data = trained_run(tmp_path_factory.getbasetemp())
    out = tmp_path / "enc.json"
    code, stdout, _ = run_cli(
        ["evaluate", "--real", str(data), "--fake", str(run), "--n", "4", "--features", "encoder", "--weights", str(run),
         "--metrics", "fid,kid", "--device", "cpu", "--no-progress", "--no-figures", "--out", str(out)],
        capsys,
    )
    assert code == 0
    report = json.loads(out.read_text())
    assert report["extractor"]["name"] == "encoder" and report["metrics"]["fid"]["comparable_with_published"] is False
    assert "WARNING: encoder features" in stdout
    # Samples go to a folder keyed by the run's checkpoint and the seed.
    model = load(run, device="cpu")
    samples = tmp_path / "enc-samples" / f"{model.checkpoint.name}-seed0"
    assert report["fake"]["path"] == str(samples) and report["metrics"]["fid"]["n_fake"] == 4
    assert report["extractor"]["checkpoint"] == model.checkpoint.name
    # Independent computation: the same model's encoder on the chosen real volumes and on
    # the samples (regenerated here from the same seed).
    assert report["real"]["n"] == 4
    vs = open_volume_set(data)
    idx = np.sort(np.random.default_rng(0).choice(len(vs), 4, replace=False))  # documented: seeded subset
    real_z = model.encode(np.stack([vs[int(i)] for i in idx]))
    fake_z = model.encode(model.generate(4, seed=0))
    assert report["metrics"]["fid"]["value"] == pytest.approx(fid(real_z, fake_z), rel=1e-4)
    assert report["metrics"]["kid"]["value"] == pytest.approx(kid(real_z, fake_z, subsets=100, subset_size=4)[0], rel=1e-4)
