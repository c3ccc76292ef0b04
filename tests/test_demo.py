"""`medgen demo` end to end at toy scale: every stage's outputs, and a rerun that continues."""

import csv
import json

import numpy as np
import pytest

from medgen.cli import main
from medgen.data.io import read_volume
from medgen.training.runconfig import RunConfig

ARGS = ["--minutes", "0.02", "--latent-codes", "16", "--n-train", "6", "--n-heldout", "6", "--n-samples", "6", "--size", "32", "--device", "cpu"]


def test_demo_runs_every_stage_and_reruns(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), *ARGS]) == 0
    printed = capsys.readouterr().out
    for stage in ("phantoms", "preprocess", "train", "generate", "encode", "evaluate", "report"):
        assert f"medgen {stage}" in printed  # each stage is shown as the command to repeat it
    assert "--hparam encoder_every=4" in printed  # the fixed time goes to GAN iterations
    assert RunConfig.load(out / "run").hparams["encoder_every"] == 4
    # HA-GAN's CT recipe, in one flag: G's rate, the mode-seeking term, R1 and D's two HU windows (two extra
    # input channels of D^H and D^L)
    assert "--recipe ct" in printed
    hp = RunConfig.load(out / "run").hparams
    assert (hp["lr_g"], hp["diversity_weight"], hp["r1_gamma"]) == (2e-4, 0.3, 1.0)
    assert len(RunConfig.load(out / "run").model["d_windows"]) == 2

    # generated volumes: NIfTI in HU with the training data's spacing
    samples = sorted((out / "samples").glob("sample-*.nii.gz"))
    assert len(samples) == 6
    vol = read_volume(samples[0])
    assert vol.shape == (32, 32, 32)
    assert np.allclose(vol.spacing, 12.5)  # 400 mm phantom field of view / 32 voxels
    assert vol.array.min() >= -1024 and vol.array.max() <= 600  # inside the CT window

    # latents of exactly the held-out volumes, with their ground-truth factors joined
    with open(out / "data" / "heldout" / "manifest.csv", newline="") as fh:
        heldout_ids = [r["id"] for r in csv.DictReader(fh)]
    with open(out / "latents.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["id"] for r in rows] == heldout_ids
    assert "emphysema_pct" in rows[0] and "z_127" in rows[0]  # tiny preset: latent length 128
    assert len(list((out / "reconstructions").glob("*.nii.gz"))) == 6

    # metrics: honest labelling and the sample sizes used
    report = json.loads((out / "metrics.json").read_text())
    assert report["extractor"]["name"] == "random" and report["extractor"]["comparable_with_published"] is False
    m = report["metrics"]
    assert m["fid"]["n_real"] == 6 and m["fid"]["n_fake"] == 6 and m["fid"]["value"] > 0
    assert 0 < m["ms_ssim"]["value"] <= 1
    assert m["memorisation"]["value"] > 0
    assert (out / "metrics-figures" / "anatomy_histograms.png").is_file()
    assert m["dimensionality"]["n_real"] == m["dimensionality"]["n_fake"] == 6
    assert (out / "metrics-figures" / "dimensionality.png").is_file()
    page = (out / "report.html").read_text()
    assert "Directions of variation" in page and "dimensionality (real, reference)" in page
    assert "random features: not comparable with published values" in page
    # the untrained-generator baseline, evaluated the same way and compared in the report
    baseline = json.loads((out / "metrics-untrained.json").read_text())
    assert baseline["fake"]["path"].endswith("samples-untrained") and baseline["metrics"]["fid"]["n_fake"] == 6
    assert "Trained vs untrained generator" in page and "better than untrained on" in printed
    assert (out / "latent" / "latent_traversals.png").is_file() and "no latent traversal figure" not in page
    assert page.count("<img") >= 4 and "data:image/png;base64," in page

    # a rerun resumes training from its checkpoint and regenerates the samples
    first = (out / "run" / "checkpoints" / "latest").read_text().strip()
    assert main(["demo", "--out", str(out), *ARGS]) == 0
    printed = capsys.readouterr()
    assert "--resume" in printed.out and "resuming from" in printed.err
    assert len(sorted((out / "samples").glob("sample-*.nii.gz"))) == 6
    assert (out / "run" / "checkpoints" / "latest").read_text().strip() != first  # trained further


def test_demo_recipe_reaches_the_training_stage(tmp_path):
    import argparse

    from medgen.commands import demo

    parser = argparse.ArgumentParser()
    demo.add_parser(parser.add_subparsers(dest="command"))
    for extra, recipe in (([], "ct"), (["--recipe", "paper"], "paper")):
        args = parser.parse_args(["demo", "--out", str(tmp_path / "d"), *ARGS, *extra])
        train = next(s for s in demo.stages(args) if s.name == "train")
        assert train.argv[train.argv.index("--recipe") + 1] == recipe
        assert train.argv[train.argv.index("--hparam") + 1] == f"encoder_every={demo.DEMO_ENCODER_EVERY}"
        # the recipe alone says how HA-GAN trains: no flag repeats or overrides it
        for flag in ("--lr-g", "--d-windows", "--slab-context", "--minibatch-std"):
            assert flag not in train.argv
        assert [a for a in train.argv if "=" in a] == [f"encoder_every={demo.DEMO_ENCODER_EVERY}"]
    with pytest.raises(SystemExit):
        parser.parse_args(["demo", "--recipe", "fast"])


def test_demo_trains_a_fixed_number_of_iterations_unless_given_a_time_limit(tmp_path, capsys):
    import argparse

    from medgen.commands import demo

    parser = argparse.ArgumentParser()
    demo.add_parser(parser.add_subparsers(dest="command"))
    train = next(s for s in demo.stages(parser.parse_args(["demo", "--out", str(tmp_path / "d")])) if s.name == "train")
    assert train.argv[train.argv.index("--iters") + 1] == str(demo.DEMO_ITERS) == "4000"
    assert "--max-minutes" not in train.argv
    args = parser.parse_args(["demo", "--out", str(tmp_path / "d"), "--iters", "6000", "--minutes", "3"])
    train = next(s for s in demo.stages(args) if s.name == "train")
    assert train.argv[train.argv.index("--iters") + 1] == "6000"
    assert float(train.argv[train.argv.index("--max-minutes") + 1]) == 3
    assert train.argv[train.argv.index("--batch") + 1] == str(demo.DEMO_BATCH) == "4"
    args = parser.parse_args(["demo", "--out", str(tmp_path / "d"), "--batch", "2"])
    argv = next(s for s in demo.stages(args) if s.name == "train").argv
    assert argv[argv.index("--batch") + 1] == "2"
    for bad in (["--iters", "0"], ["--minutes", "0"], ["--batch", "0"]):
        assert main(["demo", "--out", str(tmp_path / "bad"), *bad]) == 2
        assert bad[0] in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()  # refused before anything was written


def test_demo_evaluates_as_many_samples_as_held_out_phantoms(tmp_path, capsys):
    # recall and coverage depend on the two set sizes (medgen.metrics.prdc): the demo compares equal sets
    import argparse

    from medgen.commands import demo

    parser = argparse.ArgumentParser()
    demo.add_parser(parser.add_subparsers(dest="command"))

    def generated(extra):
        plan = demo.stages(parser.parse_args(["demo", "--out", str(tmp_path / "d"), *extra]))
        return {s.name: s.argv[s.argv.index("--n") + 1] for s in plan if s.name.startswith(("generate", "phantoms"))}

    assert generated([]) == {"phantoms (training set)": "256", "phantoms (held-out set)": "128", "generate": "128",
                             "generate (untrained baseline)": "128"}
    assert generated(["--n-heldout", "40"])["generate"] == "40"
    assert generated(["--n-heldout", "40", "--n-samples", "20"])["generate (untrained baseline)"] == "20"
    assert main(["demo", "--out", str(tmp_path / "bad"), "--n-heldout", "1"]) == 2
    assert "--n-samples must each be at least 2" in capsys.readouterr().err
