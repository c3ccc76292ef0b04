"""The configuration of a new (or resumed) training run, from options: what ``medgen train`` builds.

:func:`new_run_config` turns options into a :class:`~medgen.training.runconfig.RunConfig`
that :func:`medgen.families.registry.train` trains; ``medgen train`` maps its
command-line options onto it, and every library caller (the paper's experiments, the
demo) uses it too, so a run configured in Python is the run the command line would
configure. :func:`train_command` is the inverse: the ``medgen train`` command line
that builds the same configuration (printed before a step runs, so it can be repeated
by hand).

Example::

    from medgen.families import registry
    from medgen.families.run_config import new_run_config

    cfg = new_run_config("data/thorax64", "runs/t64", preset="tiny",
                         model_options={"use_lowres": False}, options={"iters": 500, "slab_selection": "deterministic"})
    registry.train(cfg, "runs/t64")
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from medgen.core.errors import UsageError
from medgen.training.runconfig import CONFIG_NAME, RunConfig

DEFAULT_FAMILY = "hagan"

# RunConfig fields an option may set (the loop's settings); every other option is a hyper-parameter of the family.
_RESERVED = frozenset({"data", "model", "family", "hparams", "preset", "train_ids", "preprocess", "spacing",
                       "medgen_version"})
LOOP_OPTIONS: frozenset[str] = frozenset(f.name for f in dataclasses.fields(RunConfig)) - _RESERVED


def _given(mapping: Mapping[str, Any] | None) -> dict[str, Any]:
    """The entries of ``mapping`` that are set (None = not given)."""
    return {k: v for k, v in (mapping or {}).items() if v is not None}


def split_options(options: Mapping[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """``options`` → (RunConfig fields, family hyper-parameters); None values are dropped.

    Raises UsageError for a name that is set through its own argument of :func:`new_run_config`
    (``family``, ``preset``) or never set by hand (``data``, ``train_ids``, ...).
    """
    loop, hparams = {}, {}
    for key, value in _given(options).items():
        if key in _RESERVED:
            raise UsageError(f"training option {key!r}: not an option (family and preset have their own arguments)")
        (loop if key in LOOP_OPTIONS else hparams)[key] = value
    return loop, hparams


def new_run_config(
    data: str | os.PathLike | None,
    out: str | os.PathLike,
    *,
    family: str | None = None,
    preset: str | None = None,
    resume: bool = False,
    model_options: Mapping[str, Any] | None = None,
    options: Mapping[str, Any] | None = None,
    recipe: str | None = None,
) -> RunConfig:
    """The RunConfig that trains a model of ``family`` on the preprocessed folder ``data`` into run folder ``out``.

    ``model_options``: fields of the family's architecture configuration (HA-GAN:
    ``size``, ``width``, ``latent_dim``, ``num_classes``, ``use_lowres``), over the
    preset's. ``options``: RunConfig fields (``iters``, ``batch``, ``seed``,
    ``device``, ``split_fractions``, ``label_column``, ``sample_every``, ...) and the
    family's hyper-parameters, which go to ``hparams`` (HA-GAN: ``lr_g``, ``lr_d``,
    ``lr_eh``, ``lr_eg``, ``betas``, ``adam_eps``, ``class_weight``,
    ``use_encoder``, ``slab_selection``). A value of None counts as not given.
    Defaults: family ``hagan``, the family's default preset (HA-GAN: ``paper``).

    ``size`` defaults to the data set's (and must equal it). With ``label_column`` and
    no ``num_classes``, the classes are counted over the whole data set, so a class
    absent from the training split still gets its output; ``num_classes`` without
    ``label_column`` reads the ``label`` column.

    ``recipe``: one of the family's named sets of settings (HA-GAN: ``paper``, the
    paper's exact method where medgen's defaults differ; ``ct``, medgen's settings for
    CT, the demo's), under the options given.

    ``data`` None: the saved run's folder (``resume`` only).
    ``resume`` with a saved ``out/config.yaml``: the saved settings, overridden by
    the options given; raises UsageError (one line, naming the keys) when a given
    option changes what the run learns (only the length, device, intervals and the
    like may change, see :data:`medgen.training.runconfig.RESUMABLE_KEYS`).
    """
    from medgen.core.version import __version__
    from medgen.data.dataset import load_preprocess_info
    from medgen.families import registry

    run_dir = Path(out)
    saved = RunConfig.load(run_dir) if resume and (run_dir / CONFIG_NAME).exists() else None
    if data is None:  # --resume on the saved data folder
        if not resume:
            raise UsageError("give the preprocessed data folder (DATA); only --resume may leave it out")
        if saved is None:
            raise UsageError(f"{run_dir}: no saved run ({CONFIG_NAME}) to resume; give the data folder")
        data = saved.data
    data = str(data)
    given, hparams_given = split_options(options)
    model_given = _given(model_options)
    if family is not None:
        given["family"] = family
    if preset is not None:
        given["preset"] = preset

    if saved is not None:
        model_given, hparams_given = _with_recipe(registry.get(given.get("family", saved.family)), recipe,
                                                  model_given, hparams_given)
        changed_model = _changed_model_fields(registry.get(given.get("family", saved.family)), saved, model_given,
                                              data)
        fields = saved.to_dict()
        fields["hparams"] = {**saved.hparams, **hparams_given}
        fields.update(given)
        fields["data"] = data
        fields["medgen_version"] = __version__
        cfg = RunConfig.from_dict(fields)
        differing = saved.differing_keys(cfg) + changed_model
        if differing:
            raise UsageError(
                f"{run_dir / CONFIG_NAME}: --resume with settings that differ from the saved run: {', '.join(differing)}"
            )
        registry.get(cfg.family).hparams_from_dict(dict(cfg.hparams))  # unknown or impossible values: one line
        _check_same_preprocessing(data, saved)  # moved, replaced or preprocessed again since
        return cfg

    info = load_preprocess_info(data)
    data_size = int(info.get("size", 0))
    size = model_given.pop("size", None) or data_size
    if not size:
        raise UsageError(f"{data}/preprocess.json: no size recorded; pass --size")
    if data_size and size != data_size:
        raise UsageError(f"--size {size}: the data set {data} holds {data_size}³ volumes (preprocess again to change it)")
    fam = registry.get(given.pop("family", DEFAULT_FAMILY))
    # the recipe's architecture settings that no option given overrides (e.g. the CT recipe's windows)
    from_recipe = set(fam.recipes.get(recipe, {}).get("model", {})) - set(model_given) if recipe else set()
    model_given, hparams_given = _with_recipe(fam, recipe, model_given, hparams_given)
    if fam.options_from_data is not None:  # e.g. segmentation: the classes of a label volume
        try:
            model_given = fam.options_from_data(info, model_given)
        except UsageError as exc:  # e.g. a recipe's CT windows on MRI: say which recipe asked for them
            raise (UsageError(f"--recipe {recipe}: {exc}")
                   if from_recipe and _accepted(fam, info, {k: v for k, v in model_given.items() if k not in from_recipe})
                   else exc) from None
    if not fam.classes_from_data:
        _classes_from_label_column(data, given, model_given)
    preset_name = given.pop("preset", fam.default_preset)
    if preset_name not in fam.presets:
        raise UsageError(f"--preset {preset_name}: family {fam.name!r} has presets {', '.join(fam.presets)}")
    model_cfg = fam.model_config(preset_name, size, **model_given)
    hparams = fam.hparams_from_dict(hparams_given).to_dict()
    return RunConfig(data=data, model=model_cfg.to_dict(), family=fam.name, hparams=hparams, preset=preset_name,
                     preprocess=info, medgen_version=__version__, **given)


# What a data folder handed to a resumed run must share with the run's own: the volumes' size and voxel
# grid, and the map from scanner values to [-1, 1].
PREPROCESS_MUST_MATCH = ("modality", "size", "spacing", "fit", "hu_window", "percentiles", "background")


def _check_same_preprocessing(data: str, saved: "RunConfig") -> None:
    """UsageError (one line) when ``data`` was preprocessed otherwise than the data the saved run trained on."""
    from medgen.data.dataset import load_preprocess_info

    info = load_preprocess_info(data)
    differing = [f"{k} {_plain(info.get(k))}, the run's {_plain(saved.preprocess.get(k))}"
                 for k in PREPROCESS_MUST_MATCH
                 if k in saved.preprocess and _plain(info.get(k)) != _plain(saved.preprocess.get(k))]
    if differing:
        raise UsageError(f"{data}/preprocess.json: not preprocessed as the data the run was trained on "
                         f"({'; '.join(differing)}); resume on data preprocessed the same way")


def _changed_model_fields(fam: Any, saved: "RunConfig", model_given: dict[str, Any], data: str) -> list[str]:
    """``model.<field>`` for every architecture field a resumed run's options would change. An option that is a
    field of the saved config is compared as it is; one that is not (e.g. the registration family's ``target``,
    which sets its ``label`` field) is compared through the fields it sets: the family's config of the saved
    preset and size with the option, against the same without it."""
    as_saved = model_given
    if fam.options_from_data is not None and any(k in saved.model for k in model_given):
        from medgen.data.dataset import load_preprocess_info

        try:  # e.g. HA-GAN's named windows, saved as numbers
            as_saved = fam.options_from_data(load_preprocess_info(data), dict(model_given))
        except UsageError:
            as_saved = model_given
    changed = [f"model.{k}" for k in model_given
               if k in saved.model and _plain(saved.model[k]) != _plain(as_saved.get(k, model_given[k]))]
    others = {k: v for k, v in model_given.items() if k not in saved.model}
    if not others:
        return changed
    size = int(saved.model.get("size") or 0)
    try:
        base = fam.model_config(saved.preset, size).to_dict()
        if fam.options_from_data is not None:
            from medgen.data.dataset import load_preprocess_info

            others = fam.options_from_data(load_preprocess_info(data), dict(others))
        mapped = fam.model_config(saved.preset, size, **others).to_dict()
    except (TypeError, UsageError):  # an option the family does not take: reported as changed
        return changed + [f"model.{k}" for k in others]
    return changed + [f"model.{k}" for k, v in mapped.items()
                      if v != base.get(k) and saved.model.get(k) != v and f"model.{k}" not in changed]


def _plain(value: Any) -> Any:
    """Tuples as lists, recursively (a config read back from YAML holds lists)."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


def _classes_from_label_column(data: str, given: dict[str, Any], model_given: dict[str, Any]) -> None:
    """``num_classes`` without ``label_column`` reads the ``label`` column; ``label_column`` without
    ``num_classes`` counts its classes (both dicts are completed in place)."""
    from medgen.data.dataset import VolumeDataset

    label_column = given.get("label_column")
    num_classes = model_given.get("num_classes")
    if label_column is None and num_classes:
        label_column = given["label_column"] = "label"
    if label_column is not None and num_classes is None:
        # Classes are counted over the whole data set: a class missing from the training split
        # (small data, any split_fractions) must still get its own output.
        ds = VolumeDataset(data, split="all", label_column=label_column, keys=("image",))
        if ds.label_column is None:
            raise UsageError(f"{data}/manifest.csv: no column {label_column!r} for --label-column")
        model_given["num_classes"] = ds.num_classes


def _accepted(fam: Any, info: dict[str, Any], model_given: dict[str, Any]) -> bool:
    """Whether ``fam`` completes ``model_given`` from the data set's ``info`` without an error."""
    try:
        fam.options_from_data(info, dict(model_given))
    except UsageError:
        return False
    return True


def _with_recipe(fam: Any, recipe: str | None, model_given: dict[str, Any],
                 hparams_given: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The options given over the settings of ``fam``'s recipe ``recipe`` (None: the defaults)."""
    if recipe is None:
        return model_given, hparams_given
    if recipe not in fam.recipes:
        known = ", ".join(fam.recipes) or "none"
        raise UsageError(f"--recipe {recipe}: family {fam.name!r} has recipes: {known}")
    settings = fam.recipes[recipe]
    return {**settings.get("model", {}), **model_given}, {**settings.get("hparams", {}), **hparams_given}


# ---------------------------------------------------------------------- the equivalent command line
# Options whose ``medgen train`` flag is not ``--`` + the name with dashes.
_FLAG_NAMES = {"keep_checkpoints": "--keep", "autoencoder_run": "--autoencoder", "generator_run": "--generator"}
# Boolean options with a flag of their own, and the value the flag sets: --no-X for those on by default,
# --X for those off by default.
_SWITCHES = {"use_lowres": ("--no-lowres", False), "use_encoder": ("--no-encoder", False),
             "common_modulation": ("--common-modulation", True)}


def _flag_value(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


# Options ``medgen train`` has a flag of its own for (its arguments' destinations, with the names of
# ``_FLAG_NAMES`` and ``_SWITCHES``); tests/test_run_config.py checks this against the parser.
TRAIN_FLAG_OPTIONS = frozenset({
    "autoencoder_run", "batch", "ckpt_every", "class_conditioning", "class_loss", "class_weight", "device", "ema_decay", "fake_labels",
    "high_width", "low_d_width", "lowres_factor", "slab_fraction", "inputs", "iters", "keep_checkpoints", "label_column", "latent_dim", "log_every", "lr_d", "lr_e", "lr_g",
    "histogram_bins", "max_minutes", "minibatch_std", "minibatch_std_channels", "d_windows", "num_classes", "num_samples", "precision", "sample_every", "seed", "size",
    "slab_context", "common_modulation", "slab_selection", "split_fractions", "split_seed", "target", "task", "width", "workers",
    "use_lowres", "use_encoder", "generator_run",
})


def _hparam_value(value: Any) -> str:
    """``value`` as ``--hparam NAME=VALUE`` reads it back (YAML): lists in brackets, the rest as text."""
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_hparam_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return _flag_value(value)


def train_flags(options: Mapping[str, Any] | None) -> list[str]:
    """The ``medgen train`` flags of ``options`` (model options and options alike; None values are left out).

    ``{"use_lowres": False, "slab_selection": "deterministic", "decay_start": 100}`` → ``["--no-lowres",
    "--slab-selection", "deterministic", "--hparam", "decay_start=100"]``: an option without a flag of its own
    is a family hyper-parameter, given with ``--hparam``.
    """
    opts = _given(options)
    if "lr_eh" in opts or "lr_eg" in opts:
        if opts.get("lr_eh") != opts.get("lr_eg"):
            raise UsageError("lr_eh and lr_eg: medgen train sets both with --lr-e; give them the same value")
        opts = {("lr_e" if k == "lr_eh" else k): v for k, v in opts.items() if k != "lr_eg"}
    argv: list[str] = []
    for key, value in opts.items():
        if key in _SWITCHES:
            flag, sets = _SWITCHES[key]
            if not isinstance(value, bool):
                raise UsageError(f"training option {key}={value!r}: True or False")
            if value is sets:
                argv.append(flag)
            continue
        if key in TRAIN_FLAG_OPTIONS:
            argv += [_FLAG_NAMES.get(key, "--" + key.replace("_", "-")), _flag_value(value)]
        else:
            argv += ["--hparam", f"{key}={_hparam_value(value)}"]
    return argv


def train_command(
    data: str | os.PathLike,
    out: str | os.PathLike,
    *,
    family: str | None = None,
    preset: str | None = None,
    resume: bool = False,
    model_options: Mapping[str, Any] | None = None,
    options: Mapping[str, Any] | None = None,
    recipe: str | None = None,
    progress: bool = True,
) -> list[str]:
    """The ``medgen train`` arguments (without ``medgen``) that configure what :func:`new_run_config` does.

    Takes :func:`new_run_config`'s arguments (and ``progress``: False adds
    ``--no-progress``). Raises UsageError for an option ``medgen train`` has no flag for.
    """
    argv = ["train", str(data), "--out", str(out)]
    if family is not None:
        argv += ["--family", family]
    if preset is not None:
        argv += ["--preset", preset]
    if recipe is not None:
        argv += ["--recipe", recipe]
    no_flag = sorted(set(_given(model_options)) - TRAIN_FLAG_OPTIONS - set(_SWITCHES))
    if no_flag:
        raise UsageError(f"model option(s) {', '.join(no_flag)}: medgen train has no flag for them")
    argv += train_flags({**_given(model_options), **_given(options)})
    if resume:
        argv.append("--resume")
    if not progress:
        argv.append("--no-progress")
    return argv
