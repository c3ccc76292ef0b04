"""`medgen experiment recipes`: the train/inference gap it reports, and a smoke run."""

import csv

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from medgen.cli import main
from medgen.families.hagan import Generator, get_preset
from medgen.families.hagan.consistency import train_inference_gap


def test_gap_is_zero_for_exact_context_and_large_for_the_papers_slab():
    torch.manual_seed(0)
    z = torch.randn(2, 128)
    gaps = {}
    for context in ("exact", "zero-padded"):
        torch.manual_seed(1)
        g = Generator(get_preset("tiny", 32, slab_context=context)).eval()
        gaps[context] = train_inference_gap(g, z)
    assert gaps["exact"]["mean"] < 1e-5 and gaps["exact"]["border"] < 1e-5
    # the paper's slab: 4 slices, all within f - 1 = 3 of a border, so every slice differs
    assert gaps["zero-padded"]["mean"] > 0.05 and gaps["zero-padded"]["border"] > 0.05
    # independent computation of the mean: slab by slab against the whole volume
    torch.manual_seed(1)
    g = Generator(get_preset("tiny", 32, slab_context="zero-padded")).eval()
    with torch.no_grad():
        diffs = []
        for i in range(2):
            whole = g.generate(z[i : i + 1])
            for k in range(8):  # 8 slabs of 4 slices tile 32
                _, slab = g.forward_train(z[i : i + 1], k)
                diffs.append(float((slab - whole[..., 4 * k : 4 * k + 4]).abs().mean()))
    assert gaps["zero-padded"]["mean"] == pytest.approx(sum(diffs) / len(diffs), rel=1e-5)


@pytest.mark.slow
def test_recipes_smoke_run(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["experiment", "recipes", "--scale", "smoke", "--work", str(tmp_path / "w"), "--out", str(out),
                 "--seeds", "1", "--conditional", "--per-class", "2", "--no-progress"]) == 0
    with open(out / "recipes.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["variant"] for r in rows] == ["paper, tiny", "+ slab context, tiny", "+ minibatch std, tiny",
                                            "medgen's method, tiny", "paper, compact", "medgen's method, compact",
                                            "+ intensity histogram in D, compact", "+ lung window in D, compact",
                                            "+ lung and bone windows in D, compact",
                                            "+ lung window and R1 in D, compact", "real (held-out)"]
    by = {r["variant"]: r for r in rows}
    # the exact context closes the gap whatever the weights; the paper's slab does not
    for label in ("+ slab context, tiny", "medgen's method, tiny", "medgen's method, compact",
                  "+ lung window in D, compact"):
        assert float(by[label]["gap"]) < 1e-4
    for label in ("paper, tiny", "paper, compact"):
        assert float(by[label]["gap"]) > 10 * float(by["+ slab context, tiny"]["gap"])
    assert 0 < float(by["real (held-out)"]["ms_ssim"]) < 1
    # each run was trained with its own recipe
    from medgen.training.runconfig import RunConfig

    paper = RunConfig.load(tmp_path / "w" / "runs" / "recipes-paper-32-seed0")
    default = RunConfig.load(tmp_path / "w" / "runs" / "recipes-default-32-seed0")
    assert (paper.model["slab_context"], paper.model["minibatch_std"]) == ("zero-padded", 0)
    assert (default.model["slab_context"], default.model["minibatch_std"]) == ("exact", 4)
    compact = RunConfig.load(tmp_path / "w" / "runs" / "recipes-default-compact-32-seed0")
    assert (paper.preset, default.preset, compact.preset) == ("tiny", "tiny", "compact")
    assert compact.model["width"] == 2 * default.model["width"]
    with open(out / "recipes-conditional.csv", newline="") as fh:
        cond = list(csv.DictReader(fh))
    assert [r["variant"] for r in cond] == ["paper, tiny", "medgen's method, tiny", "+ per-head class loss, tiny",
                                            "+ per-head, λ 1, tiny", "+ real-batch classes, tiny", "projection D, tiny",
                                            "medgen's method, compact", "classifier C, λ 0.3, lung window, compact",
                                            "classifier C on flipped and shifted volumes, λ 0.3, lung window, compact",
                                            "classifier C on flipped and shifted volumes, 4 updates per iteration, "
                                            "λ 0.3, lung window, compact",
                                            "classifier C on flipped and shifted volumes, 4 updates per iteration, "
                                            "λ 0.2, lung window, compact",
                                            "classifier C on flipped and shifted volumes, 4 updates per iteration, "
                                            "λ 0.3, lung window, mode-seeking term, compact",
                                            "classifier C on flipped and shifted volumes, 4 updates per iteration, "
                                            "λ 0.3, lung and bone windows, R1, compact",
                                            "classifier C on flipped and shifted volumes, 4 updates per iteration, "
                                            "λ 0.3, the demo's setting, compact",
                                            "medgen's method, compact, 8x phantoms",
                                            "classifier C, λ 0.3, compact, 8x phantoms",
                                            "classifier C, λ 0.3, lung window, compact, 8x phantoms",
                                            "real, other phantoms (reference)", "real (training set)"]
    perhead = RunConfig.load(tmp_path / "w" / "runs" / "recipes-cond-perhead-32-seed0")
    assert perhead.hparams["class_loss"] == "per-head" and perhead.model["minibatch_std"] == 4
    projection = RunConfig.load(tmp_path / "w" / "runs" / "recipes-cond-projection-32-seed0")
    assert projection.model["class_conditioning"] == "projection"
    assert RunConfig.load(tmp_path / "w" / "runs" / "recipes-cond-fakereal-32-seed0").hparams["fake_labels"] == "real"
    more = RunConfig.load(tmp_path / "w" / "runs" / "recipes-cond-n512-compact-32-seed0")
    assert len(more.train_ids) == 8 * len(compact.train_ids) == 8 * 6  # 8x the smoke scale's 6 phantoms
    data = tmp_path / "w" / "data"
    first = np.load(data / "train48-32" / "volumes" / f"{more.train_ids[0]}.npy")
    for other in ("heldout-32", "train-32"):  # other seeds: other phantoms under the same ids
        assert not np.array_equal(first, np.load(data / other / "volumes" / f"{more.train_ids[0]}.npy"))
    assert float(cond[-1]["spearman"]) > 0.7  # the phantoms' classes are emphysema stages
    reference = cond[-2]  # real phantoms drawn like the generated volumes: 2 per class of the training set's 3
    assert 0 <= float(reference["classes_in_real_iqr"]) <= 3 and -1 <= float(reference["spearman"]) <= 1
    assert 0 < float(reference["within_class_ms_ssim"]) < 1
    assert (out / "recipes.png").is_file() and (out / "recipes-conditional.md").is_file()
    assert RunConfig.load(tmp_path / "w" / "runs" / "recipes-histogram-compact-32-seed0").model["histogram_bins"] == 64
    # the lung window (-1024...-500 HU) in the phantoms' [-1024, 600] HU window's units
    windows = RunConfig.load(tmp_path / "w" / "runs" / "recipes-lungwindow-compact-32-seed0").model["d_windows"]
    assert windows == [[-1.0, pytest.approx(2 * 524 / 1624 - 1, abs=1e-6)]]
    lung_bone = RunConfig.load(tmp_path / "w" / "runs" / "recipes-lungbonewindow-compact-32-seed0").model["d_windows"]
    assert lung_bone == [windows[0], [pytest.approx(2 * 1324 / 1624 - 1, abs=1e-6), 1.0]]  # bone: 300...1500 HU
    r1_run = tmp_path / "w" / "runs" / "recipes-lungwindow-r1-compact-32-seed0"
    assert RunConfig.load(r1_run).hparams["r1_gamma"] == 1.0 and RunConfig.load(r1_run).model["d_windows"] == windows
    assert "loss_r1" in (r1_run / "metrics.csv").read_text().splitlines()[0].split(",")
    cls = RunConfig.load(tmp_path / "w" / "runs" / "recipes-cond-classifier-n512-compact-32-seed0")
    assert cls.model["class_conditioning"] == "classifier" and cls.hparams["class_weight"] == 0.3
    cls_window = RunConfig.load(tmp_path / "w" / "runs" / "recipes-cond-classifier-lungwindow-n512-compact-32-seed0")
    assert cls_window.model["d_windows"] == windows and cls_window.model["class_conditioning"] == "classifier"
    caug = RunConfig.load(tmp_path / "w" / "runs" / "recipes-cond-classifier-lungwindow-caug-compact-32-seed0")
    assert caug.hparams["c_augment"] is True and len(caug.train_ids) == len(compact.train_ids)
    c4 = RunConfig.load(tmp_path / "w" / "runs" / "recipes-cond-classifier-lungwindow-caug-c4-compact-32-seed0")
    assert c4.hparams["c_steps"] == 4 and c4.hparams["c_augment"] is True
    c4_lambda = RunConfig.load(tmp_path / "w" / "runs"
                               / "recipes-cond-classifier-lungwindow-caug-c4-lambda0.2-compact-32-seed0")
    assert c4_lambda.hparams["class_weight"] == 0.2 and c4_lambda.hparams["c_steps"] == 4
    c4_ms = RunConfig.load(tmp_path / "w" / "runs" / "recipes-cond-classifier-lungwindow-caug-c4-ms-compact-32-seed0")
    assert (c4_ms.hparams["diversity_weight"], c4_ms.hparams["class_weight"]) == (0.3, 0.3)
    assert c4_ms.model["d_windows"] == windows and c4_ms.hparams["r1_gamma"] == 0.0
    c4_windows = RunConfig.load(tmp_path / "w" / "runs"
                                / "recipes-cond-classifier-lungbonewindow-r1-caug-c4-compact-32-seed0")
    assert c4_windows.model["d_windows"] == lung_bone and c4_windows.hparams["r1_gamma"] == 1.0
    assert c4_windows.hparams["c_steps"] == 4 and c4_windows.hparams["diversity_weight"] == 0.0
    demo = RunConfig.load(tmp_path / "w" / "runs" / "recipes-cond-classifier-demo-caug-c4-compact-32-seed0")
    assert demo.model["d_windows"] == lung_bone and demo.hparams["r1_gamma"] == 1.0
    assert (demo.hparams["diversity_weight"], demo.hparams["lr_g"]) == (0.3, 2e-4)
    assert demo.hparams["c_steps"] == 4 and demo.hparams["class_weight"] == 0.3

    # --only: the rows of one variant are made again (here with another number of classes per volume, so they
    # change), the others are kept as the tables hold them, and the tables list both commands
    before = {r["variant"]: r for r in rows}
    figure = (out / "recipes.png").stat().st_mtime_ns
    assert main(["experiment", "recipes", "--scale", "smoke", "--work", str(tmp_path / "w"), "--out", str(out),
                 "--seeds", "1", "--conditional", "--per-class", "3", "--only", "histogram-compact,projection",
                 "--no-progress"]) == 0
    with open(out / "recipes.csv", newline="") as fh:
        again = list(csv.DictReader(fh))
    assert [r["variant"] for r in again] == [r["variant"] for r in rows]
    histogram = "+ intensity histogram in D, compact"
    for r in again[:-1]:
        assert r["variant"] == histogram or r == before[r["variant"]]
    remade = next(r for r in again if r["variant"] == histogram)
    assert remade["gap"] == before[histogram]["gap"]  # the same run, evaluated again
    with open(out / "recipes-conditional.csv", newline="") as fh:
        cond_again = {r["variant"]: r for r in csv.DictReader(fh)}
    # 3 volumes per class: the reference pool's 48 phantoms hold only 2 of class 3, so no reference row
    assert list(cond_again) == [r["variant"] for r in cond if r["variant"] != "real, other phantoms (reference)"]
    assert "No real reference row: the pool has 2 volumes of class 3, fewer than 3" in \
        (out / "recipes-conditional.md").read_text()
    assert cond_again["paper, tiny"] == cond[0]
    assert cond_again["projection D, tiny"]["within_class_ms_ssim"] != cond[5]["within_class_ms_ssim"]  # 3 volumes, not 2
    md = (out / "recipes-conditional.md").read_text()
    made_by = md.split("Made by:")[1]
    assert "--per-class 2" in made_by and "--only histogram-compact,projection" in made_by
    assert (out / "recipes.png").stat().st_mtime_ns == figure
    import json

    record = json.loads((out / "experiment.json").read_text())
    assert record["command"].splitlines()[-1].endswith("--only histogram-compact,projection")
    assert "--per-class 2" in record["command"].splitlines()[0]
    assert [r["variant"] for r in record["results"]["conditional"]] == list(cond_again)
    capsys.readouterr()
    assert main(["experiment", "recipes", "--scale", "smoke", "--work", str(tmp_path / "w"), "--out", str(out),
                 "--only", "nope", "--no-progress"]) != 0
    assert "--only nope: no such variant nope" in capsys.readouterr().err
    assert main(["experiment", "recipes", "--scale", "smoke", "--work", str(tmp_path / "w"), "--out", str(out),
                 "--only", "projection", "--no-progress"]) != 0
    assert "projection is a class-conditional variant; add --conditional" in capsys.readouterr().err


def test_workspace_refuses_a_run_trained_with_other_settings(tmp_path):
    import yaml

    from medgen.core.errors import UsageError
    from medgen.experiments.workspace import SCALES, Workspace
    from toy_volumes import make_dataset

    data = make_dataset(tmp_path / "d", n=4, size=32)
    ws = Workspace(tmp_path / "w", SCALES["smoke"], data=data, heldout=data, device="cpu", progress=False)
    run = ws.model("r", 32)
    assert ws.model("r", 32) == run  # the same settings: reused
    with pytest.raises(UsageError, match=r"model\.minibatch_std 4 \(wanted 0\)"):
        ws.model("r", 32, model_settings={"minibatch_std": 0})
    with pytest.raises(UsageError, match=r"seed 0 \(wanted 3\)"):
        ws.model("r", 32, seed=3)
    assert ws.model("r", 32, iters=3) == run  # longer: continued, not refused
    # a run saved before slab_context existed was trained zero-padded: not today's default
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    del cfg["model"]["slab_context"]
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(UsageError, match=r"model\.slab_context 'zero-padded' \(wanted 'exact'\)"):
        ws.model("r", 32)
    assert ws.model("r", 32, recipe="paper", model_settings={"minibatch_std": 4}) == run


def test_class_mean_reference_counts_the_draws_whose_class_means_fall_in_the_ranges():
    from medgen.experiments.recipes import class_mean_reference

    # Class 0: half 0 %, half 10 %; two drawn without replacement from 100 have a mean in [5, 20] unless both
    # are 0: probability 1 - (50/100)(49/99). Class 1: always 3 %, inside [2, 4]. NaN volumes are left out.
    emph = np.array([0.0] * 50 + [10.0] * 50 + [3.0] * 10 + [np.nan] * 5)
    labels = np.array([0] * 100 + [1] * 10 + [1] * 5)
    stats = {0: {"q1": 5.0, "q3": 20.0}, 1: {"q1": 2.0, "q3": 4.0}}
    ref = class_mean_reference(emph, labels, stats, 2, draws=4000, seed=0)
    p0 = 1 - 0.5 * 49 / 99
    assert ref["all_inside"] == pytest.approx(p0, abs=0.025)
    assert ref["classes_in_real_iqr"] == pytest.approx(1 + p0, abs=0.025)
    assert ref["class_means"] == {0: pytest.approx(5.0), 1: pytest.approx(3.0)} and ref["repeats"] == 4000
    # Separable classes: every draw ranks class 0 below class 1, so rho is that of x = 0,0,1,1 vs distinct y.
    emph = np.array([1.0, 1.1, 1.2, 1.3, 7.0, 7.5, 8.0])
    labels = np.array([0, 0, 0, 0, 1, 1, 1])
    ref = class_mean_reference(emph, labels, {0: {"q1": 0.0, "q3": 2.0}, 1: {"q1": 6.0, "q3": 9.0}}, 2, draws=50)
    assert ref["spearman"] == pytest.approx(spearmanr([0, 0, 1, 1], [1, 2, 3, 4]).statistic)
    assert (ref["classes_in_real_iqr"], ref["all_inside"]) == (2.0, 1.0)
    with pytest.raises(ValueError, match="3 volumes of class 1, fewer than 4"):
        class_mean_reference(emph, labels, {0: {"q1": 0, "q3": 2}, 1: {"q1": 6, "q3": 9}}, 4)


def test_within_class_ms_ssim_reference_averages_each_class_over_its_draws():
    from medgen.experiments.recipes import within_class_ms_ssim_reference
    from medgen.metrics.diversity import ms_ssim_diversity
    from medgen.metrics.volumes import array_volume_set

    rng = np.random.default_rng(0)
    same = np.tanh(rng.normal(size=(32, 32, 32))).astype(np.float32)
    distinct = [np.tanh(rng.normal(size=(32, 32, 32))).astype(np.float32) for _ in range(3)]
    # class 0: six copies of one volume (every pair identical: 1); class 1: three distinct volumes, so every
    # draw of 3 is all of them
    volumes = array_volume_set([same] * 6 + distinct)
    labels = np.array([0] * 6 + [1] * 3)
    expected_1 = ms_ssim_diversity(distinct)["mean"]
    assert expected_1 < 0.5
    got = within_class_ms_ssim_reference(volumes, labels, [0, 1], 3, draws=4)
    assert got == pytest.approx((1.0 + expected_1) / 2, abs=1e-5)
    assert within_class_ms_ssim_reference(volumes, labels, [0], 2, draws=2) == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match="3 volumes of class 1, fewer than 4"):
        within_class_ms_ssim_reference(volumes, labels, [0, 1], 4)


def test_a_refused_run_leaves_no_empty_output_folder_behind(tmp_path, capsys):
    def refused(out):
        return main(["experiment", "recipes", "--scale", "smoke", "--work", str(tmp_path / "w"), "--out", str(out),
                     "--only", "nope", "--no-progress"])

    assert refused(tmp_path / "new" / "out") == 2
    assert "--only nope: no such variant nope" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()  # neither the folder nor the parent the run made for it
    kept = tmp_path / "kept"  # a folder that was there before stays, with what it held, and so does an empty one
    kept.mkdir()
    (kept / "recipes.csv").write_text("variant\n")
    (tmp_path / "empty").mkdir()
    assert refused(kept) == 2 and refused(tmp_path / "empty") == 2
    assert (kept / "recipes.csv").read_text() == "variant\n" and (tmp_path / "empty").is_dir()
