"""medgen generate: reproducible latent codes, prefix property, chunked == unchunked
through the command line, HU and spacing of the written NIfTI, resuming, errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medgen.cli import main
from medgen.core.errors import UsageError
from medgen.inference.generate import check_labels, latent_codes, to_hounsfield

S = 32
WINDOW = (-1000.0, 500.0)  # not the default window, so a default used by mistake shows
SPACING = (1.5, 1.25, 2.5)  # anisotropic, as the manifest records it


def make_data(root: Path, n: int = 6, size: int = S) -> Path:
    """Tiny preprocessed CT set: noisy cylinders, manifest rows in shuffled order with
    per-id covariates (label, age) and spacing, preprocess.json like `medgen preprocess` writes."""
    (root / "volumes").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    g = np.linspace(-1, 1, size)
    X, Y, Z = np.meshgrid(g, g, g, indexing="ij")
    rows = []
    for i in range(n):
        a, b = rng.uniform(0.5, 0.9, 2)
        v = np.where((X / a) ** 2 + (Y / b) ** 2 <= 1, 0.2 + 0.3 * Z, -1.0) + rng.normal(0, 0.05, X.shape)
        np.save(root / "volumes" / f"p{i}.npy", np.clip(v, -1, 1).astype(np.float16))
        sp = "x".join(f"{s:g}" for s in SPACING)
        rows.append(f"p{i},src/p{i}.nii.gz,40x40x30,1x1x1,{sp},volumes/p{i}.npy,{i % 2},{50 + 3 * i}")
    order = rng.permutation(n)
    header = "id,source,orig_shape,orig_spacing,spacing,file,label,age"
    (root / "manifest.csv").write_text("\n".join([header] + [rows[k] for k in order]) + "\n")
    info = {"modality": "ct", "size": size, "spacing": None, "hu_window": list(WINDOW)}
    (root / "preprocess.json").write_text(json.dumps(info))
    return root


def trained_run(base: Path) -> tuple[Path, Path]:
    """A 2-iteration tiny run (shared by the test modules through pytest's base temp folder)."""
    from medgen.training.runconfig import RunConfig
    from medgen.families.hagan import get_preset
    from medgen.families.registry import train

    data, run = base / "h7-data", base / "h7-run"
    if not (run / "checkpoints" / "latest").is_file():
        make_data(data)
        cfg = RunConfig(
            data=str(data), model=get_preset("tiny", S).to_dict(), preset="tiny", iters=2, batch=2,
            device="cpu", log_every=1, sample_every=0, ckpt_every=1000, ema_decay=0.9,
            split_fractions=(0.5, 0.25, 0.25), preprocess=json.loads((data / "preprocess.json").read_text()),
        )
        train(cfg, run, progress=False)
    return run, data


@pytest.fixture(scope="module")
def run_and_data(tmp_path_factory) -> tuple[Path, Path]:
    return trained_run(tmp_path_factory.getbasetemp())


def gen(run: Path, out: Path, *extra: str) -> int:
    return main(["generate", str(run), "--out", str(out), "--no-progress", "--device", "cpu", *extra])


# --------------------------------------------------------------------------- latent codes


def test_latent_codes_depend_only_on_seed_and_index():
    d = 16
    z8 = latent_codes(8, d, seed=5)
    children = np.random.SeedSequence(5).spawn(8)  # the documented stream of each volume
    for i, child in enumerate(children):
        ref = np.random.Generator(np.random.PCG64(child)).standard_normal(d).astype(np.float32)
        assert np.array_equal(z8[i], ref)
    assert np.array_equal(latent_codes(4, d, seed=5), z8[:4])
    assert np.array_equal(latent_codes(3, d, seed=5, start=5), z8[5:])
    assert not np.allclose(latent_codes(1, d, seed=6), z8[:1])


def test_check_labels():
    assert check_labels(None, 3, 0) is None
    assert check_labels(None, 5, 2).tolist() == [0, 1, 0, 1, 0]
    assert check_labels(1, 3, 2).tolist() == [1, 1, 1]
    with pytest.raises(UsageError, match="unconditional"):
        check_labels(0, 2, 0)
    with pytest.raises(UsageError, match=r"label 3 is out of range.*0\.\.2"):
        check_labels(3, 2, 3)
    with pytest.raises(UsageError, match="out of range"):
        check_labels([0, -1], 2, 3)


def test_hounsfield_map_is_exact_at_window_ends():
    for lo, hi in [(-1024.0, 600.0), WINDOW, (-1024.0, 3071.0), (-160.0, 240.0)]:
        hu = to_hounsfield(np.array([-1.0, 0.0, 1.0], dtype=np.float32), (lo, hi))
        assert hu[0] == lo and hu[2] == hi
        assert hu[1] == pytest.approx((lo + hi) / 2, abs=1e-4)


# --------------------------------------------------------------------------- the command


def test_chunked_equals_unchunked_through_the_cli(run_and_data, tmp_path):
    run, _ = run_and_data
    assert gen(run, tmp_path / "whole", "--n", "2", "--seed", "3", "--format", "npy", "--no-mosaic") == 0
    ref = [np.load(tmp_path / "whole" / f"sample-{i:04d}.npy") for i in range(2)]
    assert ref[0].shape == (S, S, S) and ref[0].dtype == np.float32
    assert ref[0].std() > 1e-3 and not np.allclose(ref[0], ref[1])  # real, distinct volumes
    for chunk in ("1", "3"):  # 3 leaves a shorter last chunk (8 feature-map slices)
        out = tmp_path / f"chunk{chunk}"
        assert gen(run, out, "--n", "2", "--seed", "3", "--format", "npy", "--no-mosaic", "--chunk", chunk) == 0
        for i in range(2):
            got = np.load(out / f"sample-{i:04d}.npy")
            assert np.abs(got - ref[i]).max() <= 1e-5


def test_prefix_batch_size_resume_and_api_agree(run_and_data, tmp_path):
    import medgen

    run, _ = run_and_data
    a, b = tmp_path / "a", tmp_path / "b"
    assert gen(run, a, "--n", "2", "--seed", "7", "--format", "npy", "--no-mosaic") == 0
    first = {p.name: p.stat().st_mtime_ns for p in a.glob("*.npy")}
    # more volumes into the same folder: the first two are kept as they are, two are added
    assert gen(run, a, "--n", "4", "--seed", "7", "--format", "npy", "--no-mosaic") == 0
    assert {p.name: p.stat().st_mtime_ns for p in a.glob("sample-000[01].npy")} == first
    assert gen(run, b, "--n", "4", "--seed", "7", "--format", "npy", "--no-mosaic", "--batch-size", "3") == 0
    model = medgen.load(run)
    ref = model.generate(4, seed=7)
    for i in range(4):
        va, vb = np.load(a / f"sample-{i:04d}.npy"), np.load(b / f"sample-{i:04d}.npy")
        assert np.abs(va - vb).max() <= 1e-5
        assert np.abs(va - ref[i]).max() <= 1e-5
    with open(a / "samples.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    z = latent_codes(4, model.config.latent_dim, 7)
    assert [r["id"] for r in rows] == [f"sample-{i:04d}" for i in range(4)]
    assert [r["file"] for r in rows] == [f"sample-{i:04d}.npy" for i in range(4)]
    assert all(r["seed"] == "7" and r["label"] == "" for r in rows)
    assert [float(r["z_norm"]) for r in rows] == pytest.approx(np.linalg.norm(z, axis=1).tolist(), rel=1e-5)


def test_nifti_has_training_spacing_and_hounsfield_units(run_and_data, tmp_path):
    import medgen

    run, _ = run_and_data
    assert gen(run, tmp_path / "n", "--n", "2", "--seed", "2") == 0
    x = medgen.load(run).generate(2, seed=2)
    lo, hi = WINDOW
    for i in range(2):
        img = nib.load(tmp_path / "n" / f"sample-{i:04d}.nii.gz")
        assert img.header.get_zooms() == pytest.approx(SPACING)
        assert np.allclose(img.affine, np.diag([*SPACING, 1.0]))
        data = np.asanyarray(img.dataobj)
        assert data.dtype == np.int16
        expected = lo + (x[i].astype(np.float64) + 1.0) / 2.0 * (hi - lo)
        assert np.abs(data - expected).max() <= 0.5 + 1e-3  # rounded to whole HU
        png = tmp_path / "n" / f"sample-{i:04d}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        import matplotlib.image as mpimg

        assert np.ptp(mpimg.imread(png)[..., :3]) > 0.1  # not a blank picture


def test_a_moved_run_keeps_its_training_spacing(run_and_data, tmp_path, capsys):
    """The run records the training volumes' voxel size in config.yaml when training starts, so a run folder
    whose data folder is gone (moved, another machine, a relative path from another directory) still writes
    the right spacing. A run made before that, with its data gone, gets 1 mm and a warning."""
    import shutil

    import yaml

    run, _ = run_and_data
    assert yaml.safe_load((run / "config.yaml").read_text())["spacing"] == pytest.approx(list(SPACING))
    moved = tmp_path / "moved"
    shutil.copytree(run, moved)
    cfg = yaml.safe_load((moved / "config.yaml").read_text())
    cfg["data"] = str(tmp_path / "no-such-data")
    (moved / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert gen(moved, tmp_path / "a", "--n", "1") == 0
    assert nib.load(tmp_path / "a" / "sample-0000.nii.gz").header.get_zooms() == pytest.approx(SPACING)
    assert json.loads((tmp_path / "a" / "generate.json").read_text())["spacing_source"] == "the run's config.yaml"
    assert "warning" not in capsys.readouterr().err

    del cfg["spacing"]  # a run configured before the spacing was recorded
    (moved / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert gen(moved, tmp_path / "b", "--n", "1") == 0
    assert nib.load(tmp_path / "b" / "sample-0000.nii.gz").header.get_zooms() == pytest.approx((1.0, 1.0, 1.0))
    err = capsys.readouterr().err
    assert "voxel size is unknown" in err and "1 mm" in err and "no-such-data" in err


def test_voxel_spacing_is_the_median_over_the_training_ids(tmp_path):
    from medgen.data.dataset import voxel_spacing

    rows = {"a": "1x4x2", "b": "2x4x2", "c": "100x100x100", "d": "10x1x2"}
    (tmp_path / "manifest.csv").write_text("id,spacing\n" + "".join(f"{k},{v}\n" for k, v in rows.items()))
    spacing, source = voxel_spacing(tmp_path, {"spacing": None}, ["a", "b", "d"])
    assert spacing == (2.0, 4.0, 2.0) and "median" in source  # with c: (6, 4, 2)
    assert voxel_spacing(tmp_path, {"spacing": None}, None)[0] == (6.0, 4.0, 2.0)
    assert voxel_spacing(tmp_path, {"spacing": 1.5}, ["a"]) == ((1.5, 1.5, 1.5), "preprocess.json spacing")
    assert voxel_spacing(tmp_path / "missing", {}, None) is None


def test_npy_samples_are_evaluated_with_the_runs_spacing_modality_and_window(run_and_data, tmp_path):
    """``--format npy`` writes headerless [-1, 1] arrays; evaluation takes their voxel size, modality and CT
    window from generate.json, so the anatomy in millilitres matches that of the NIfTI samples (HU rounding
    aside) instead of counting 1 mm voxels."""
    from medgen.metrics.anatomy import ct_anatomy
    from medgen.metrics.volumes import open_volume_set

    run, _ = run_and_data
    assert gen(run, tmp_path / "npy", "--n", "2", "--seed", "2", "--format", "npy", "--no-mosaic") == 0
    assert gen(run, tmp_path / "nii", "--n", "2", "--seed", "2", "--no-mosaic") == 0
    npy, nii = open_volume_set(tmp_path / "npy"), open_volume_set(tmp_path / "nii")
    assert npy.modality == "ct" and npy.modality_source == "generate.json" and npy.hu_window == WINDOW
    for i in range(2):
        assert npy.spacing(i) == pytest.approx(SPACING) and nii.spacing(i) == pytest.approx(SPACING)
        assert np.abs(npy.hu(i) - nii.hu(i)).max() <= 0.5 + 1e-2  # the NIfTI holds whole HU
        a, b = ct_anatomy(npy.hu(i), npy.spacing(i)), ct_anatomy(nii.hu(i), nii.spacing(i))
        assert a["body_volume_ml"] == pytest.approx(b["body_volume_ml"], rel=0.02)
        voxels = int(round(b["body_volume_ml"] * 1000 / np.prod(SPACING)))
        assert voxels > 0 and a["body_volume_ml"] == pytest.approx(voxels * np.prod(SPACING) / 1000, rel=0.02)


def test_errors_exit_2_with_one_line(run_and_data, tmp_path, capsys):
    run, data = run_and_data
    cases = [
        ([str(data)], "config.yaml"),  # a data set, not a run
        ([str(tmp_path / "missing")], "no such run folder"),
        ([str(run), "--label", "1"], "unconditional"),
    ]
    empty = tmp_path / "empty-run"
    empty.mkdir()
    (empty / "config.yaml").write_text((run / "config.yaml").read_text())
    cases.append(([str(empty)], "no complete checkpoint"))
    for argv, needle in cases:
        code = main(["generate", *argv, "--n", "1", "--out", str(tmp_path / "o"), "--no-progress"])
        err = capsys.readouterr().err.strip()
        assert code == 2
        assert len(err.splitlines()) == 1 and needle in err and "Traceback" not in err
    # a folder made with another seed is not mixed with new samples
    assert gen(run, tmp_path / "s", "--n", "1", "--seed", "1", "--format", "npy", "--no-mosaic") == 0
    assert gen(run, tmp_path / "s", "--n", "2", "--seed", "2", "--format", "npy", "--no-mosaic") == 2
    assert "seed" in capsys.readouterr().err


def test_conditional_label_out_of_range_is_a_usage_error(tmp_path):
    import medgen
    from medgen.inference.generate import generate_to_folder

    model = medgen.build("tiny", size=S, num_classes=3)
    with pytest.raises(UsageError, match="out of range") as err:
        generate_to_folder(model, tmp_path / "o", n=1, label=3, progress=False)
    assert err.value.exit_code == 2
    rows = generate_to_folder(model, tmp_path / "o", n=2, label=2, fmt="npy", mosaic=False, progress=False)
    assert [r["label"] for r in rows] == [2, 2]
    # the class changes the volume: the same z with class 0 differs
    z = model.sample_latents(1, seed=0)
    v2 = np.load(tmp_path / "o" / "sample-0000.npy")
    v0 = model.generate(1, seed=0, labels=0)[0]
    assert np.abs(v2 - model.generate(1, labels=2, z=z)[0]).max() <= 1e-6
    assert np.abs(v2 - v0).max() > 1e-4


def test_mri_nifti_keeps_model_units_and_resampled_spacing(tmp_path):
    """MRI: float32 in [-1, 1] (percentile normalisation cannot be inverted); spacing = the
    isotropic spacing the data set was resampled to."""
    from types import SimpleNamespace

    import medgen
    from medgen.inference.generate import generate_to_folder

    model = medgen.build("tiny", size=S)
    model.run_config = SimpleNamespace(preprocess={"modality": "mri", "size": S, "spacing": 2.0}, data=None)
    generate_to_folder(model, tmp_path, n=1, seed=5, mosaic=False, progress=False)
    img = nib.load(tmp_path / "sample-0000.nii.gz")
    assert img.header.get_zooms() == pytest.approx((2.0, 2.0, 2.0))
    data = np.asanyarray(img.dataobj)
    assert data.dtype == np.float32
    assert np.array_equal(data, model.generate(1, seed=5)[0])
    with pytest.raises(UsageError, match="mri"):
        model.generate(1, hu=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_generation_matches_cpu(run_and_data):
    import medgen

    run, _ = run_and_data
    cpu = medgen.load(run).generate(1, seed=4)
    gpu = medgen.load(run, device="cuda").generate(1, seed=4, chunk=2)
    assert np.abs(cpu - gpu).max() < 1e-3
