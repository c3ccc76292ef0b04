"""new_run_config: the configuration of a training run from options (what `medgen train` builds), and the
`medgen train` command line that repeats it."""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import pytest

from medgen.core.errors import UsageError
from medgen.data.dataset import split_ids
from medgen.families.hagan.config import get_preset
from medgen.families.hagan.train import HAGANHParams
from medgen.families.run_config import new_run_config, split_options, train_command, train_flags
from toy_volumes import make_dataset

S = 32


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data"), n=10)


def _parse_train(argv: list[str]) -> argparse.Namespace:
    from medgen.commands import train as train_command_module

    parser = argparse.ArgumentParser(prog="medgen")
    train_command_module.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_defaults_are_the_papers_but_for_the_recipe(data, tmp_path):
    cfg = new_run_config(data, tmp_path / "run")
    assert (cfg.family, cfg.preset, cfg.iters, cfg.batch, cfg.seed) == ("hagan", "paper", 80_000, 4, 0)
    assert cfg.model == get_preset("paper", S).to_dict()  # the size is the data set's
    assert cfg.hparams == HAGANHParams().to_dict()
    # medgen's defaults differ from the paper's method in these settings only (README: "How medgen differs")
    paper = new_run_config(data, tmp_path / "run", recipe="paper")
    differs = {k for k in cfg.model if cfg.model[k] != paper.model[k]} | {k for k in cfg.hparams if cfg.hparams[k] != paper.hparams[k]}
    assert differs == {"slab_context", "minibatch_std"}
    assert (cfg.model["slab_context"], cfg.model["minibatch_std"], cfg.hparams["class_loss"]) == ("exact", 4, "mean")
    assert (cfg.hparams["lr_g"], cfg.hparams["lr_d"], cfg.hparams["lr_eh"], cfg.hparams["betas"]) == (1e-4, 4e-4, 1e-4, [0.0, 0.999])
    assert cfg.split_fractions == (0.8, 0.1, 0.1) and cfg.label_column is None and cfg.model["num_classes"] == 0
    assert cfg.data == str(data) and cfg.preprocess["size"] == S and cfg.medgen_version


def test_options_land_in_hparams_model_and_loop_settings(data, tmp_path):
    cfg = new_run_config(
        data, tmp_path / "run", preset="tiny",
        model_options={"use_lowres": False, "width": 0.5, "latent_dim": None},
        options={"iters": 7, "batch": 2, "split_fractions": (1.0, 0.0, 0.0), "keep_checkpoints": 1, "lr_g": 2e-4,
                 "lr_eh": 3e-4, "lr_eg": 3e-4, "slab_selection": "deterministic", "use_encoder": False,
                 "class_weight": None},
    )
    assert cfg.model["use_lowres"] is False and cfg.model["width"] == 0.5
    assert cfg.model["latent_dim"] == get_preset("tiny", S).latent_dim  # None: not given
    assert (cfg.iters, cfg.batch, cfg.split_fractions, cfg.keep_checkpoints) == (7, 2, (1.0, 0.0, 0.0), 1)
    hp = cfg.hparams
    assert (hp["lr_g"], hp["lr_eh"], hp["lr_eg"], hp["slab_selection"], hp["use_encoder"]) == (2e-4, 3e-4, 3e-4, "deterministic", False)
    assert hp["class_weight"] == 0.1 and hp["lr_d"] == 4e-4  # defaults kept
    assert not {"iters", "batch", "keep_checkpoints"} & set(hp)
    assert split_options({"iters": 3, "lr_d": 1e-3, "seed": None}) == ({"iters": 3}, {"lr_d": 1e-3})


def test_wrong_options_are_refused_in_one_line(data, tmp_path):
    cases = [
        (dict(options={"lr_q": 1.0}), "lr_q"),  # not a loop setting, so a hyper-parameter the family does not know
        (dict(options={"family": "hagan"}), "family"),
        (dict(options={"slab_selection": "sideways"}), "slab_selection"),
        (dict(preset="huge"), "--preset huge"),
        (dict(family="vae"), "vae"),
        (dict(model_options={"size": 64}), "holds 32"),
        (dict(options={"label_column": "stage"}), "stage"),
    ]
    for kwargs, words in cases:
        with pytest.raises(UsageError, match=words) as info:
            new_run_config(data, tmp_path / "run", **kwargs)
        assert "\n" not in str(info.value)


def test_resume_keeps_the_saved_settings_and_refuses_a_differing_one(data, tmp_path):
    run = tmp_path / "run"
    saved = new_run_config(data, run, preset="tiny", model_options={"use_lowres": False},
                           options={"iters": 5, "slab_selection": "deterministic"})
    saved.save(run)
    # only what the run's length, device or intervals depend on may change
    resumed = new_run_config(data, run, resume=True, options={"iters": 9, "device": "cpu", "log_every": 3})
    assert (resumed.iters, resumed.device, resumed.log_every) == (9, "cpu", 3)
    assert resumed.model == saved.model and resumed.hparams == saved.hparams and resumed.preset == "tiny"
    # the same values given again are no change
    new_run_config(data, run, resume=True, preset="tiny", model_options={"use_lowres": False},
                   options={"slab_selection": "deterministic"})
    for kwargs, key in [
        (dict(options={"lr_d": 1e-3}), "hparams.lr_d"),
        (dict(options={"use_encoder": False}), "hparams.use_encoder"),
        (dict(model_options={"width": 0.25}), "model.width"),
        (dict(model_options={"use_lowres": True}), "model.use_lowres"),
        (dict(preset="small"), "preset"),
        (dict(options={"batch": 8}), "batch"),
    ]:
        with pytest.raises(UsageError, match=f"differ from the saved run: {key}$") as info:
            new_run_config(data, run, resume=True, **kwargs)
        assert "\n" not in str(info.value)
    # resume without a saved run starts a new one
    fresh = new_run_config(data, tmp_path / "other", resume=True, preset="tiny")
    assert fresh.preset == "tiny" and fresh.iters == 80_000


def test_label_column_counts_classes_over_the_whole_data_set(tmp_path):
    data = make_dataset(tmp_path / "data", n=10)
    fractions = (0.6, 0.2, 0.2)
    heldout = split_ids([f"v{i}" for i in range(10)], seed=0, fractions=fractions)["test"][0]
    manifest = data / "manifest.csv"
    with manifest.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:  # classes 0 and 1 everywhere; class 2 only on one volume outside the training split
        row["label"] = "2" if row["id"] == heldout else str(int(row["id"][1:]) % 2)
    with manifest.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)

    cfg = new_run_config(data, tmp_path / "run", preset="tiny", options={"label_column": "label", "split_fractions": fractions})
    assert cfg.model["num_classes"] == 3 and cfg.label_column == "label"
    # num_classes alone reads the `label` column; given explicitly, it is not recounted
    cfg = new_run_config(data, tmp_path / "run", preset="tiny", model_options={"num_classes": 5})
    assert cfg.model["num_classes"] == 5 and cfg.label_column == "label"


def test_train_command_builds_the_same_config_on_the_command_line(data, tmp_path):
    kwargs = dict(
        preset="tiny", resume=False,
        model_options={"use_lowres": False, "num_classes": 2, "common_modulation": True},
        options={"iters": 12, "batch": 2, "seed": 3, "device": "cpu", "split_fractions": (1.0, 0.0, 0.0),
                 "sample_every": 3, "ckpt_every": 3, "log_every": 25, "max_minutes": 0.5, "keep_checkpoints": 2,
                 "lr_eh": 2e-4, "lr_eg": 2e-4, "use_encoder": False, "slab_selection": "deterministic",
                 "label_column": "label", "ema_decay": None},
    )
    argv = train_command(data, tmp_path / "run", progress=False, **kwargs)
    assert argv[:4] == ["train", str(data), "--out", str(tmp_path / "run")] and argv[-1] == "--no-progress"
    assert "--no-lowres" in argv and "--no-encoder" in argv and "--ema-decay" not in argv and "--common-modulation" in argv
    assert argv[argv.index("--split-fractions") + 1] == "1,0,0" and argv[argv.index("--keep") + 1] == "2"
    assert argv[argv.index("--lr-e") + 1] == "0.0002"

    from medgen.commands.train import build_config

    by_cli = build_config(_parse_train(argv)).to_dict()
    by_library = new_run_config(data, tmp_path / "run", **kwargs).to_dict()
    assert by_cli == by_library

    assert by_cli["model"]["common_modulation"] is True
    assert train_flags({"use_lowres": False}) == ["--no-lowres"]
    assert train_flags({"common_modulation": False}) == [] and train_flags({"common_modulation": True}) == ["--common-modulation"]
    with pytest.raises(UsageError, match="common_modulation='yes': True or False"):
        train_flags({"common_modulation": "yes"})
    assert train_flags({"lowres_factor": 2}) == ["--lowres-factor", "2"]  # a model option with its own flag
    assert train_flags({"slab_selection": "deterministic", "use_encoder": True}) == ["--slab-selection", "deterministic"]
    # options without a flag of their own are family hyper-parameters, read back by --hparam as YAML
    hp = train_flags({"betas": (0.5, 0.9), "decay_start": 100, "residual_target": True, "loss": "l2"})
    assert hp == ["--hparam", "betas=[0.5, 0.9]", "--hparam", "decay_start=100", "--hparam", "residual_target=true",
                  "--hparam", "loss=l2"]
    from medgen.commands.train import _hparam

    assert [_hparam(hp[i + 1]) for i in range(0, len(hp), 2)] == [
        ("betas", [0.5, 0.9]), ("decay_start", 100), ("residual_target", True), ("loss", "l2")]
    with pytest.raises(UsageError, match="model option.*residual"):
        train_command(data, tmp_path / "x", family="cyclegan", model_options={"residual": True})
    with pytest.raises(UsageError, match="lr_eh and lr_eg"):
        train_flags({"lr_eh": 1e-4})
    resumed = train_command(data, tmp_path / "run", resume=True)
    assert resumed == ["train", str(data), "--out", str(tmp_path / "run"), "--resume"]


def test_every_option_with_a_train_flag_is_known_to_train_flags():
    import argparse

    from medgen.cli import build_parser
    from medgen.families.run_config import TRAIN_FLAG_OPTIONS

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices["train"]
    renamed = {"keep": "keep_checkpoints", "no_lowres": "use_lowres", "no_encoder": "use_encoder"}
    not_options = {"help", "data", "out", "family", "preset", "recipe", "resume", "no_progress", "hparam"}
    dests = {renamed.get(a.dest, a.dest) for a in sub._actions} - not_options
    assert dests == set(TRAIN_FLAG_OPTIONS)


def test_paper_recipe_is_the_previous_method(data, tmp_path):
    import torch

    from medgen.families.hagan import Discriminator, Generator, count_parameters
    from medgen.families.hagan.config import HAGANConfig

    cfg = new_run_config(data, tmp_path / "run", preset="tiny", recipe="paper")
    assert (cfg.model["slab_context"], cfg.model["minibatch_std"]) == ("zero-padded", 0)
    assert (cfg.hparams["class_loss"], cfg.hparams["fake_labels"], cfg.hparams["class_weight"]) == ("mean", "uniform", 0.1)
    model = HAGANConfig.from_dict(cfg.model)
    # the networks of before: no minibatch-std channel (the published parameter counts)...
    assert abs(count_parameters(HAGANConfig.from_dict({**get_preset("paper", 256).to_dict(), **cfg.model,
                                                     "size": 256, "latent_dim": 1024, "width": 1.0,
                                                     "norm_groups": 8}))["all"] - 79.74e6) <= 0.1e6
    d = Discriminator(model).eval()
    x = torch.randn(2, 1, S, S, model.slab_len)
    low = torch.randn(2, 1, S // 4, S // 4, S // 4)
    with torch.no_grad():  # ...so a sample's logit does not depend on the rest of its batch
        assert torch.allclose(d(x, torch.zeros(2), low)[0][:1], d(x[:1], torch.zeros(1), low[:1])[0], atol=1e-6)
    # ...and the zero-padded slab
    g = Generator(model).eval()
    z = torch.randn(1, model.latent_dim)
    with torch.no_grad():
        gap = (g(z, 3)[1] - g.selector.select_real(g.generate(z), 3)).abs().mean()
    assert float(gap) > 0.05
    # a configuration saved before these settings existed loads as what it was trained as
    legacy = {k: v for k, v in cfg.model.items() if k not in ("slab_context", "minibatch_std")}
    assert HAGANConfig.from_dict(legacy) == model
    # options given explicitly win over the recipe; the command line says the same
    mixed = new_run_config(data, tmp_path / "run", preset="tiny", recipe="paper", model_options={"minibatch_std": 2})
    assert (mixed.model["minibatch_std"], mixed.model["slab_context"]) == (2, "zero-padded")
    from medgen.commands.train import build_config

    argv = train_command(data, tmp_path / "run", preset="tiny", recipe="paper", model_options={"minibatch_std": 2},
                         options={"class_loss": "per-head"})
    assert argv[argv.index("--recipe") + 1] == "paper"
    by_cli = build_config(_parse_train(argv))
    assert by_cli.model["minibatch_std"] == 2 and by_cli.hparams["class_loss"] == "per-head"
    assert by_cli.model["slab_context"] == "zero-padded"
    with pytest.raises(UsageError, match="--recipe fast: family 'hagan' has recipes: paper, ct$"):
        new_run_config(data, tmp_path / "run", recipe="fast")
    with pytest.raises(UsageError, match="recipes: none"):
        new_run_config(data, tmp_path / "run", family="ddpm", preset="tiny", recipe="paper")


def test_any_family_hyper_parameter_from_the_command_line(tmp_path):
    import argparse

    from medgen.commands import train as train_command
    from medgen.core.errors import UsageError
    from toy_volumes import make_dataset

    data = make_dataset(tmp_path / "data", n=4, size=16)
    parser = argparse.ArgumentParser()
    train_command.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train", str(data), "--out", str(tmp_path / "r"), "--family", "ddpm", "--preset", "tiny",
                              "--hparam", "lr=5e-4", "--hparam", "betas=[0.5, 0.9]", "--hparam", "class_dropout=0.2"])
    cfg = train_command.build_config(args)
    assert cfg.family == "ddpm" and cfg.hparams["lr"] == 5e-4 and cfg.hparams["betas"] == [0.5, 0.9]
    assert cfg.hparams["class_dropout"] == 0.2 and cfg.model["channels"] == [8, 16, 16]
    with pytest.raises(UsageError, match="unknown DDPM training setting.*lr_g"):
        train_command.build_config(parser.parse_args(["train", str(data), "--out", str(tmp_path / "r"), "--family",
                                                      "ddpm", "--preset", "tiny", "--lr-g", "1e-3"]))
    with pytest.raises(SystemExit):
        parser.parse_args(["train", str(data), "--out", "x", "--hparam", "novalue"])


def test_d_windows_are_named_hu_windows_in_the_data_sets_units(data, tmp_path, capsys):
    import json
    import shutil

    from medgen.cli import main
    from medgen.commands.train import build_config

    argv = ["train", str(data), "--out", str(tmp_path / "run"), "--preset", "tiny", "--d-windows", "lung,bone"]
    cfg = build_config(_parse_train(argv))
    # the toy set's window is [-1024, 600] HU: lung -1024...-500, bone 300...1500 (clipped at 600)
    assert cfg.model["d_windows"] == [[-1.0, round(2 * 524 / 1624 - 1, 6)], [round(2 * 1324 / 1624 - 1, 6), 1.0]]
    assert "--d-windows" not in train_command(data, tmp_path / "run2", preset="tiny")  # none unless asked for
    assert main(["train", str(data), "--out", str(tmp_path / "r"), "--d-windows", "lungs"]) == 2
    assert "--d-windows lungs: unknown CT window 'lungs'" in capsys.readouterr().err
    mri = tmp_path / "mri"
    shutil.copytree(data, mri)
    info = json.loads((mri / "preprocess.json").read_text())
    (mri / "preprocess.json").write_text(json.dumps({**info, "modality": "mri"}))
    assert main(["train", str(mri), "--out", str(tmp_path / "r"), "--d-windows", "lung"]) == 2
    assert "HU windows need a CT data set" in capsys.readouterr().err
    # resuming with the same named window is no change; another window is
    saved = new_run_config(data, tmp_path / "w", preset="tiny", model_options={"d_windows": "lung"})
    saved.save(tmp_path / "w")
    assert new_run_config(data, tmp_path / "w", resume=True, model_options={"d_windows": "lung"}).model == saved.model
    with pytest.raises(UsageError, match="differ from the saved run: model.d_windows$"):
        new_run_config(data, tmp_path / "w", resume=True, model_options={"d_windows": "bone"})


def test_d_windows_none_and_recipes(data, tmp_path):
    lung = [[-1.0, round(2 * 524 / 1624 - 1, 6)]]
    assert new_run_config(data, tmp_path / "a", preset="tiny").model["d_windows"] == []  # the default: none
    assert new_run_config(data, tmp_path / "a", preset="tiny", model_options={"d_windows": "none"}).model[
        "d_windows"] == []
    assert new_run_config(data, tmp_path / "a", preset="tiny", recipe="paper",
                          model_options={"d_windows": "lung"}).model["d_windows"] == lung  # with the paper's recipe
    # a run saved without windows resumes with --d-windows none as no change; lung would change it
    old = new_run_config(data, tmp_path / "old", preset="tiny")
    old.save(tmp_path / "old")
    assert new_run_config(data, tmp_path / "old", resume=True, model_options={"d_windows": "none"}).model[
        "d_windows"] == []
    with pytest.raises(UsageError, match="differ from the saved run: model.d_windows$"):
        new_run_config(data, tmp_path / "old", resume=True, model_options={"d_windows": "lung"})


def test_ct_recipe_is_the_demos_settings_in_one_flag(data, tmp_path, capsys):
    import json
    import shutil

    from medgen.cli import main
    from medgen.commands.train import build_config

    lung = [-1.0, round(2 * 524 / 1624 - 1, 6)]  # the toy set's window is [-1024, 600] HU
    bone = [round(2 * 1324 / 1624 - 1, 6), 1.0]
    ct = new_run_config(data, tmp_path / "ct", preset="tiny", recipe="ct")
    default = new_run_config(data, tmp_path / "d", preset="tiny")
    # the recipe is exactly these four settings over medgen's defaults
    differs = {f"model.{k}" for k in ct.model if ct.model[k] != default.model[k]} | {
        k for k in ct.hparams if ct.hparams[k] != default.hparams[k]}
    assert differs == {"model.d_windows", "lr_g", "diversity_weight", "r1_gamma"}
    assert ct.model["d_windows"] == [lung, bone]
    assert (ct.hparams["lr_g"], ct.hparams["diversity_weight"], ct.hparams["r1_gamma"]) == (2e-4, 0.3, 1.0)
    # the same as giving the four flags, and the flags given explicitly win
    by_flags = build_config(_parse_train(["train", str(data), "--out", str(tmp_path / "f"), "--preset", "tiny",
                                          "--d-windows", "lung,bone", "--lr-g", "2e-4", "--hparam", "r1_gamma=1",
                                          "--hparam", "diversity_weight=0.3"]))
    assert (by_flags.model, by_flags.hparams) == (ct.model, ct.hparams)
    mixed = build_config(_parse_train(["train", str(data), "--out", str(tmp_path / "m"), "--preset", "tiny",
                                       "--recipe", "ct", "--d-windows", "none", "--hparam", "r1_gamma=0"]))
    assert mixed.model["d_windows"] == [] and mixed.hparams["r1_gamma"] == 0 and mixed.hparams["lr_g"] == 2e-4
    # a run trained with the four flags resumes under the recipe as no change
    by_flags.save(tmp_path / "f")
    assert new_run_config(data, tmp_path / "f", resume=True, recipe="ct").model == by_flags.model
    # the windows are CT's: on another modality one line names the recipe and the problem
    mri = tmp_path / "mri"
    shutil.copytree(data, mri)
    info = json.loads((mri / "preprocess.json").read_text())
    (mri / "preprocess.json").write_text(json.dumps({**info, "modality": "mri"}))
    assert main(["train", str(mri), "--out", str(tmp_path / "r"), "--recipe", "ct"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--recipe ct: --d-windows lung,bone: HU windows need a CT data set" in err[0]
    assert main(["train", str(mri), "--out", str(tmp_path / "r"), "--recipe", "paper", "--d-windows", "lung"]) == 2
    err = capsys.readouterr().err  # windows asked for by the user, not by the recipe: no word of the recipe
    assert "--d-windows lung: HU windows need a CT data set" in err and "--recipe" not in err
    assert main(["train", str(mri), "--out", str(tmp_path / "r"), "--recipe", "ct", "--d-windows", "none",
                 "--preset", "tiny", "--iters", "1", "--no-progress"]) == 0  # without them it trains
