"""`medgen experiment`: the shared workspace, tables and command line, and the synthesis experiment."""

import argparse
import csv
import json

import pytest

from medgen.cli import main
from medgen.core.errors import UsageError
from medgen.experiments.workspace import SCALES, ExperimentOutput, Workspace, markdown_table, metric_row


def test_markdown_and_csv_tables(tmp_path):
    out = ExperimentOutput(tmp_path / "o", "demo-table", "medgen experiment x --out o", SCALES["smoke"])
    rows = [{"a": 1, "b": 0.123456789, "c": None}, {"a": 2, "b": float("nan"), "c": "x|y"}]
    csv_path, md_path = out.write_table(rows, ("a", "b", "c"), title="T", notes=["n1"])
    with open(csv_path, newline="") as fh:
        back = list(csv.DictReader(fh))
    assert back[0] == {"a": "1", "b": "0.123456789", "c": ""}  # full precision in the CSV
    md = md_path.read_text()
    assert "| 1 | 0.1235 |  |" in md and "| 2 | nan | x\\|y |" in md  # 4 significant digits, escaped pipe
    assert md.index("- n1") < md.index("medgen experiment x --out o")
    assert markdown_table([], ("a",)) == "| a |\n|---|\n"


def test_metric_row_reads_an_evaluate_report():
    report = {"metrics": {
        "fid": {"value": 12.5}, "mmd": {"value": -0.01},
        "prdc": {"value": {"precision": 0.5, "recall": 0.25, "coverage": 0.75, "density": 1.0}},
        "ms_ssim": {"value": 0.6},
        "anatomy": {"value": {"lung_fraction": 0.02, "bone_fraction": 0.003}},
        "kid": {"error": "failed"},
    }}
    row = metric_row(report)
    assert row == {"fid": 12.5, "mmd": -0.01, "precision": 0.5, "recall": 0.25, "coverage": 0.75, "ms_ssim": 0.6,
                   "lung_fraction_w1": 0.02, "emphysema_pct_w1": None, "bone_fraction_w1": 0.003,
                   "is": None, "is_real": None}
    # The Inception Score through a classifier: the generated volumes' score and the real volumes' reference.
    report["metrics"]["is"] = {"value": 2.5, "std": 0.1, "details": {"real": {"mean": 2.9, "std": 0.05}}}
    assert {k: metric_row(report)[k] for k in ("is", "is_real")} == {"is": 2.5, "is_real": 2.9}


def test_user_data_of_the_wrong_size_is_refused(tmp_path):
    from toy_volumes import make_dataset

    data = make_dataset(tmp_path / "d", n=4, size=32)
    ws = Workspace(tmp_path / "w", SCALES["demo"], data=data, heldout=data)
    assert ws.main_size == 32
    with pytest.raises(UsageError, match="holds 32³ volumes, this experiment needs 64³"):
        ws.datasets(64)
    with pytest.raises(UsageError, match="--heldout needs --data"):
        Workspace(tmp_path / "w", SCALES["demo"], heldout=data)
    with pytest.raises(UsageError, match="needs a held-out set"):
        Workspace(tmp_path / "w", SCALES["demo"], data=data).datasets(32)


@pytest.mark.parametrize("argv, message", [
    (["--weights", "w.pth"], "--weights is for --features med3d"),
    (["--features", "med3d"], "needs --weights"),
    (["--run", "no-such-run"], "not a training run folder"),
    (["--sizes", "32,x"], "comma-separated integers"),
])
def test_bad_options_exit_2_with_one_line(tmp_path, capsys, argv, message):
    code = main(["experiment", "synthesis", "--scale", "smoke", "--work", str(tmp_path / "w"),
                 "--out", str(tmp_path / "o"), *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1


def test_canonical_command_lists_only_what_differs_from_the_defaults():
    from medgen.commands.experiment import canonical_command

    args = argparse.Namespace(experiment="synthesis", scale="demo", out="docs/results/synthesis", work="experiments-out/work",
                              data=None, heldout=None, run=None, iters=500, features="random", weights=None,
                              device="auto", seed=0, no_progress=True, sizes="32")
    assert canonical_command(args) == "medgen experiment synthesis --out docs/results/synthesis --iters 500 --sizes 32"


def test_workspace_phantoms_are_what_medgen_phantoms_writes(tmp_path):
    import numpy as np

    from medgen.data.io import read_volume
    from medgen.experiments.workspace import write_phantoms

    rows = write_phantoms("thorax-ct", 2, 16, 5, tmp_path / "ws", progress=False)
    assert main(["phantoms", "--kind", "thorax-ct", "--n", "2", "--size", "16", "--seed", "5",
                 "--out", str(tmp_path / "cli")]) == 0
    for name in ("manifest.csv", "phantoms.json"):
        assert (tmp_path / "ws" / name).read_text() == (tmp_path / "cli" / name).read_text(), name
    assert [r["file"] for r in rows] == ["thorax-ct-0000.nii.gz", "thorax-ct-0001.nii.gz"]
    for row in rows:
        a, b = read_volume(tmp_path / "ws" / row["file"]), read_volume(tmp_path / "cli" / row["file"])
        assert np.array_equal(a.array, b.array) and np.allclose(a.spacing, b.spacing)
    assert (tmp_path / "ws" / "mosaic.png").stat().st_size > 0


def test_a_size_above_the_scales_grid_renders_the_same_subjects_at_that_size(tmp_path):
    """Not an upsampling of the scale's phantoms: the same seeds drawn again on the finer grid."""
    import numpy as np

    from medgen.data.dataset import load_manifest
    from medgen.data.io import read_volume
    from medgen.data.phantoms.phantom_set import spacing_mm
    from medgen.experiments.workspace import SCALES, Workspace

    ws = Workspace(tmp_path / "w", SCALES["smoke"], device="cpu", progress=False)
    assert ws.phantom_grid == 32 and ws.render_size(16) == 32 and ws.render_size(64) == 64
    train32, held32 = ws.datasets(32)
    train64, held64 = ws.datasets(64)
    raw64 = read_volume(tmp_path / "w" / "phantoms" / "train-r64" / "thorax-ct-0000.nii.gz")
    assert raw64.array.shape == (64, 64, 64) and np.allclose(raw64.spacing, spacing_mm("thorax-ct", 64))
    raw32 = read_volume(tmp_path / "w" / "phantoms" / "train" / "thorax-ct-0000.nii.gz")
    assert raw32.array.shape == (32, 32, 32)
    # the same subject: its field of view is the same, and the 64³ render averaged down is close to the 32³ one
    assert np.allclose(np.multiply(raw64.spacing, 64), np.multiply(raw32.spacing, 32))
    rows64, rows32 = load_manifest(train64), load_manifest(train32)
    assert [r["id"] for r in rows64] == [r["id"] for r in rows32] and len(rows64) == SCALES["smoke"].n_train
    assert len(load_manifest(held64)) == SCALES["smoke"].n_heldout
    import torch

    down = torch.nn.functional.interpolate(torch.from_numpy(raw64.array[None, None].astype(np.float32)),
                                           size=(32, 32, 32), mode="area")[0, 0].numpy()
    other = read_volume(tmp_path / "w" / "phantoms" / "train" / "thorax-ct-0001.nii.gz").array
    same_err = np.abs(down - raw32.array).mean()
    assert same_err < 0.5 * np.abs(down - other).mean()


def test_a_step_prints_its_command_and_names_itself_in_errors(capsys):
    from medgen.core.errors import InputError, RunFailed
    from medgen.experiments.workspace import step

    with step(["train", "data dir", "--out", "r"], "train x"):
        print("working")
    assert capsys.readouterr().out == "\n$ medgen train 'data dir' --out r\nworking\n"
    with pytest.raises(UsageError, match=r"^step 'train x' failed: bad option \(medgen train d --out r\)$"):
        with step(["train", "d", "--out", "r"], "train x"):
            raise UsageError("bad option")
    with pytest.raises(InputError, match="^step 'generate' failed: diverged") as info:
        with step(["generate", "r"]):
            raise RunFailed("diverged")
    assert info.value.exit_code == 1  # the original exit code


@pytest.mark.slow
def test_synthesis_smoke_run(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["experiment", "synthesis", "--scale", "smoke", "--work", str(tmp_path / "w"), "--out", str(out),
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    for command in ("phantoms", "preprocess", "train", "generate", "evaluate"):  # every step shown as its command
        assert f"\n$ medgen {command} " in printed, command
    train_line = next(line for line in printed.splitlines() if line.startswith("$ medgen train "))
    assert "--preset tiny" in train_line and "--split-fractions 1,0,0" in train_line and "--resume" not in train_line
    with open(out / "synthesis.csv", newline="") as fh:
        rows = {r["model"]: r for r in csv.DictReader(fh)}
    assert set(rows) == {"HA-GAN (trained)", "untrained generator", "real (training set)"}
    assert rows["HA-GAN (trained)"]["iterations"] == "2" and rows["untrained generator"]["iterations"] == "0"
    # the paper's Figures 3 and 4, and the embedding's numbers: real, the model and the untrained generator
    assert (out / "synthesis-samples-32.png").is_file() and (out / "synthesis-embedding-32.png").is_file()
    with open(out / "synthesis-embedding.csv", newline="") as fh:
        groups = {r["group"]: r for r in csv.DictReader(fh)}
    assert list(groups) == ["real (held-out)", "HA-GAN", "untrained generator"]
    assert float(groups["real (held-out)"]["dist_to_real_sd"]) == pytest.approx(0.0, abs=1e-9)
    # the untrained generator's noise lies far from the real phantoms, farther than the real ellipse reaches
    assert float(groups["untrained generator"]["dist_to_real_sd"]) > 2.45
    # real phantoms are far closer to the held-out phantoms than noise from an untrained generator
    assert float(rows["real (training set)"]["fid"]) < 0.2 * float(rows["untrained generator"]["fid"])
    assert float(rows["real (training set)"]["precision"]) > float(rows["untrained generator"]["precision"])
    assert "medgen experiment synthesis --scale smoke --out" in (out / "synthesis.md").read_text()
    record = json.loads((out / "experiment.json").read_text())
    assert record["scale"]["name"] == "smoke" and len(record["results"]["rows"]) == 3
    # a rerun reuses the trained model and the samples
    assert main(["experiment", "synthesis", "--scale", "smoke", "--work", str(tmp_path / "w"), "--out", str(out),
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "trained for 2 iterations already, reused" in printed and "$ medgen train" not in printed
    # more iterations: training resumes, and the samples of the older checkpoint are made anew
    assert main(["experiment", "synthesis", "--scale", "smoke", "--work", str(tmp_path / "w"), "--out", str(out),
                 "--no-progress", "--iters", "3"]) == 0
    printed = capsys.readouterr().out
    assert "--iters 3" in printed and "--resume" in printed
    source = json.loads((tmp_path / "w" / "samples" / "synthesis-32" / "generate.json").read_text())["source"]
    assert source["checkpoint"].endswith("iter-000003") and source["ema"] is True


@pytest.mark.parametrize("argv, message", [
    (["--families", "hagan,vae"], "--families 'hagan,vae': choose from hagan, wgan-gp, vae-gan, alpha-gan, pggan"),
    (["--families", "hagan,hagan"], "a family is listed twice"),
    (["--families", "ddpm", "--minutes", "0"], "--minutes 0.0: need a positive budget"),
    (["--seeds", "0"], "--seeds 0: need at least 1"),
])
def test_bad_family_options_exit_2_with_one_line(tmp_path, capsys, argv, message):
    code = main(["experiment", "synthesis", "--scale", "smoke", "--work", str(tmp_path / "w"),
                 "--out", str(tmp_path / "o"), "--no-progress", *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1


@pytest.mark.slow
def test_synthesis_smoke_run_with_the_diffusion_families(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["experiment", "synthesis", "--scale", "smoke", "--work", str(tmp_path / "w"), "--out", str(out),
                 "--families", "ddpm,ldm", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "--family ldm-autoencoder" in printed and "--autoencoder" in printed
    with open(out / "synthesis.csv", newline="") as fh:
        rows = {r["model"]: r for r in csv.DictReader(fh)}
    assert set(rows) == {"DDPM (trained)", "LDM (trained)", "untrained generator", "real (training set)"}
    assert rows["DDPM (trained)"]["iterations"] == rows["LDM (trained)"]["iterations"] == "2"
    md = (out / "synthesis.md").read_text()
    assert "LDM at 32³: its autoencoder trained 2 iterations" in md
    assert "--families ddpm,ldm" in md


def test_mean_and_std_rows_over_seeds_and_their_summary():
    from medgen.experiments.synthesis import mean_std_rows, summary_rows

    per_seed = [{"size": 32, "model": "M", "seed": 0, "iterations": 10, "fid": 10.0, "recall": None},
                {"size": 32, "model": "M", "seed": 1, "iterations": 10, "fid": 14.0, "recall": 0.5},
                {"size": 32, "model": "M", "seed": 2, "iterations": 10, "fid": 18.0, "recall": float("nan")}]
    mean, std = mean_std_rows(per_seed, ("iterations", "fid", "recall"))
    assert mean["seed"] == "mean" and std["seed"] == "std" and mean["model"] == std["model"] == "M"
    assert mean["fid"] == pytest.approx(14.0) and std["fid"] == pytest.approx(4.0)  # ddof 1: sqrt((16+0+16)/2)
    assert mean["iterations"] == 10 and std["iterations"] == 0
    assert mean["recall"] == 0.5 and std["recall"] is None  # one finite value: no spread
    real = {"size": 32, "model": "real", "seed": None, "iterations": None, "fid": 1.25, "recall": 1.0}
    summary = summary_rows([*per_seed, mean, std, real], ("size", "model", "iterations", "fid", "recall"))
    assert summary == [{"size": 32, "model": "M", "iterations": "10 ± 0", "fid": "14 ± 4", "recall": 0.5},
                       {"size": 32, "model": "real", "iterations": None, "fid": 1.25, "recall": 1.0}]


def test_run_names_keep_the_first_seed_unsuffixed():
    from medgen.experiments.synthesis import run_name

    assert run_name("hagan", 32, None) == "hagan-32"
    assert run_name("wgan-gp", 32, 10.0) == "wgan-gp-32-10min"
    assert run_name("pggan", 64, 2.5, seed_offset=1, base_seed=3) == "pggan-64-2.5min-seed4"


@pytest.mark.slow
def test_synthesis_smoke_run_with_two_seeds_of_two_families(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["experiment", "synthesis", "--scale", "smoke", "--work", str(tmp_path / "w"), "--out", str(out),
                 "--families", "hagan,wgan-gp", "--seeds", "2", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "--family wgan-gp" in printed and "--seed 1" in printed
    with open(out / "synthesis.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    keyed = {(r["model"], r["seed"]): r for r in rows}
    for model in ("HA-GAN (trained)", "WGAN-GP (trained)"):
        a, b, mean, std = (keyed[(model, s)] for s in ("0", "1", "mean", "std"))
        assert a["fid"] != b["fid"]  # two trainings from different seeds
        assert float(mean["fid"]) == pytest.approx((float(a["fid"]) + float(b["fid"])) / 2)
        assert float(std["fid"]) == pytest.approx(abs(float(a["fid"]) - float(b["fid"])) / 2 ** 0.5)
    assert (tmp_path / "w" / "runs" / "wgan-gp-32-seed1").is_dir()
    summary = (out / "synthesis-summary.md").read_text()
    assert "| 32 | WGAN-GP (trained) | 2 ± 0 |" in summary and "--seeds 2" in summary


def test_training_minutes_add_up_the_logged_windows(tmp_path):
    from medgen.experiments.synthesis import training_minutes

    run = tmp_path / "run"
    run.mkdir()
    assert training_minutes(run) is None
    # 25 iterations at 5 it/s (5 s), 25 at 2.5 it/s (10 s), then a resumed run's window of 10 at 1 it/s (10 s)
    (run / "metrics.csv").write_text("iteration,loss_D,it_per_s\n25,1.0,5.0\n50,1.0,2.5\n60,1.0,1.0\n")
    assert training_minutes(run) == pytest.approx(25 / 60)


def test_scale_preset_for_each_family():
    from dataclasses import replace

    from medgen.families import registry

    demo = SCALES["demo"]
    hagan, wgan, ddpm = registry.get("hagan"), registry.get("wgan-gp"), registry.get("ddpm")
    # The demo scale names HA-GAN's compact preset; every other family trains in its tiny preset.
    assert demo.preset_for(hagan) == demo.hagan_preset == "compact"
    assert demo.preset_for(wgan) == demo.preset_for(ddpm) == "tiny"
    # A preset name a family lacks falls back to that family's default, not to a preset of another family.
    odd = replace(demo, preset="nonexistent", family_presets={"hagan": "small", "ddpm": "nonexistent"})
    assert odd.preset_for(hagan) == "small"
    assert odd.preset_for(ddpm) == ddpm.default_preset and odd.preset_for(wgan) == wgan.default_preset
    assert SCALES["smoke"].hagan_preset == "tiny"  # tests keep the smallest network
