"""What every experiment shares: its scale, its data, its trained models, its tables.

An experiment (``medgen experiment NAME``) works in two folders:

* the **workspace** (``--work``, default ``experiments-out/work``), shared by all
  experiments: phantoms, preprocessed data sets, trained runs, sample folders and
  the classifiers behind the Inception Score.
  Whatever is already there is reused, so the second experiment does not train the
  model the first one trained, and an interrupted experiment continues where it
  stopped (training resumes from its checkpoint, sample folders resume).
* the **output folder** (``--out``): the experiment's table (``NAME.csv`` and
  ``NAME.md``), figures and ``experiment.json`` (command, scale, versions, machine,
  wall time), written atomically.

Data come from the built-in thorax-CT phantoms (default) or from the user's
preprocessed folders (``--data`` training set, ``--heldout`` held-out set, both
written by ``medgen preprocess`` at the model's size). The phantoms are rendered
once at the largest size the scale uses (:attr:`Workspace.phantom_grid`) and
preprocessed down to each smaller one; a size above it gets the same subjects
rendered again at that size, never an upsampling.

Every step is the library call behind an ordinary ``medgen`` command
(``phantoms``, ``preprocess``, ``train``, ``generate``, ``train-classifier``, ``evaluate``), and that
command is printed before the step runs, so each can be repeated by hand.
"""

from __future__ import annotations

import datetime
import json
import shlex
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from medgen.core.errors import EXIT_INTERRUPTED, EXIT_PARTIAL, InputError, MedgenError, UsageError
from medgen.core.fileio import atomic_write_json, atomic_write_text
from medgen.core.tables import markdown_table, write_csv  # noqa: F401  (markdown_table re-exported)


@dataclass(frozen=True)
class Scale:
    """How big an experiment runs.

    ``preset``: the preset of every family that has one of that name, unless ``family_presets``
    names another for the family (:meth:`preset_for`); ``size``: the edge length (voxels) of
    the main model;
    ``sizes``: the resolutions of the synthesis table; ``small_size``: the edge length
    of the models an experiment trains several of (ablation variants, the
    class-conditional model); ``iters``/``batch``: training iterations and batch of
    every trained model; ``n_train``/``n_heldout``: phantoms in the training and
    held-out sets; ``n_samples``: generated volumes per evaluation; ``seeds``:
    repetitions of the classifier experiments.
    """

    name: str
    preset: str
    size: int
    sizes: tuple[int, ...]
    small_size: int
    iters: int
    batch: int
    n_train: int
    n_heldout: int
    n_samples: int
    seeds: int
    classifier_iters: int
    family_presets: dict[str, str] = field(default_factory=dict)

    def preset_for(self, family) -> str:
        """The preset a family trains with at this scale (``family``: a registry entry): the one
        :attr:`family_presets` names for it, else :attr:`preset`; the family's default preset
        when it has no preset of that name."""
        name = self.family_presets.get(family.name, self.preset)
        return name if name in family.presets else family.default_preset

    @property
    def hagan_preset(self) -> str:
        """The HA-GAN preset at this scale (the experiments' main model)."""
        from medgen.families import registry

        return self.preset_for(registry.get("hagan"))


SCALES: dict[str, Scale] = {
    # About an hour for the HA-GAN experiments on 2 CPU cores. HA-GAN trains in its "compact" preset:
    # "tiny"'s G^H cannot draw the lung texture (docs/results/recipes); the other families in "tiny".
    "demo": Scale("demo", preset="tiny", size=64, sizes=(32, 64), small_size=32, iters=2000, batch=4,
                  n_train=64, n_heldout=32, n_samples=32, seeds=3, classifier_iters=300,
                  family_presets={"hagan": "compact"}),
    # Seconds: checks that an experiment runs end to end (the tests use it); its numbers mean nothing.
    "smoke": Scale("smoke", preset="tiny", size=32, sizes=(32,), small_size=32, iters=2, batch=2,
                   n_train=6, n_heldout=6, n_samples=6, seeds=2, classifier_iters=2),
    # The paper's settings: days on a GPU per trained model.
    "full": Scale("full", preset="paper", size=128, sizes=(128, 256), small_size=128, iters=80_000, batch=4,
                  n_train=1024, n_heldout=128, n_samples=256, seeds=5, classifier_iters=3000),
}


def get_scale(name: str) -> Scale:
    try:
        return SCALES[name]
    except KeyError:
        raise UsageError(f"--scale {name!r}: choose one of {', '.join(SCALES)}") from None


@contextmanager
def step(argv: Sequence[str], what: str | None = None) -> Iterator[None]:
    """Run one step: print ``$ medgen ARGV`` (the command that repeats it by hand), then the body.

    A :class:`~medgen.core.errors.MedgenError` of the body comes out as one line that
    names the step and its command: UsageError stays a UsageError, any other becomes an
    InputError with the original exit code.
    """
    command = f"medgen {shlex.join(argv)}"
    what = what or argv[0]
    print(f"\n$ {command}", flush=True)
    try:
        yield
    except UsageError as exc:
        raise UsageError(f"step '{what}' failed: {exc} ({command})") from exc
    except MedgenError as exc:
        raise InputError(f"step '{what}' failed: {exc} ({command})", exit_code=exc.exit_code) from exc


def checkpoint_iteration(run_dir: Path) -> int:
    """Iteration of the run's latest complete checkpoint (0 if none)."""
    from medgen.training.checkpoint import checkpoint_iteration as parse_iteration
    from medgen.training.checkpoint import latest_checkpoint

    ckpt = latest_checkpoint(run_dir) if run_dir.is_dir() else None
    return parse_iteration(ckpt) if ckpt is not None else 0


# Settings a reused or continued run may differ in from the one asked for: how long and where it ran,
# and what its training wrote down about its data.
_REUSE_IGNORES = frozenset({"train_ids", "preprocess"})


def check_same_settings(run_dir: Path, wanted) -> None:
    """Raise UsageError unless the run in ``run_dir`` was configured as ``wanted`` (a RunConfig) would be.

    A workspace finds its runs by name; a run trained before a default changed (or by other options)
    must not stand in silently for the one an experiment asks for. Both sides are compared after the
    family fills in its defaults, so a setting saved before it existed counts with the value it was
    trained with.
    """
    from medgen.families import registry
    from medgen.training.loop import with_family_defaults
    from medgen.training.runconfig import RESUMABLE_KEYS, RunConfig

    saved = RunConfig.load(run_dir)
    normalised = with_family_defaults(registry.get(saved.family), saved)
    differing = normalised.differing_keys(wanted, ignore=RESUMABLE_KEYS | _REUSE_IGNORES)
    if differing:
        a, b = normalised.to_dict(), wanted.to_dict()

        def value(d: dict, key: str):
            head, _, tail = key.partition(".")
            return d[head].get(tail) if tail else d.get(head)

        shown = "; ".join(f"{k} {value(a, k)!r} (wanted {value(b, k)!r})" for k in differing[:4])
        raise UsageError(f"{run_dir} was trained with other settings: {shown}. Delete it to retrain it, "
                         "or use another --work folder")


@dataclass
class Workspace:
    """Data, trained runs and samples shared by the experiments (see the module docstring).

    ``root``: the workspace folder; ``scale``: a :class:`Scale`; ``data``/``heldout``:
    the user's preprocessed training / held-out folders (None = phantoms);
    ``device``: training and sampling device; ``seed``: seed of phantoms, training,
    sampling and metrics; ``iters``: training iterations (default: the scale's).
    ``log``: the ``medgen`` commands that make what the experiment used, in order, whether
    run now or reused (:meth:`record`; :meth:`model` records its ``medgen train``).
    """

    root: Path
    scale: Scale
    data: Path | None = None
    heldout: Path | None = None
    device: str = "auto"
    seed: int = 0
    iters: int | None = None
    progress: bool = True
    log: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        if self.heldout is not None and self.data is None:
            raise UsageError("--heldout needs --data (the training set it is held out from)")
        if self.iters is not None and self.iters < 1:
            raise UsageError(f"--iters {self.iters}: need at least 1")

    def record(self, argv: Sequence[str]) -> str:
        """Add ``medgen ARGV`` to :attr:`log` (once); returns it."""
        command = f"medgen {shlex.join(argv)}"
        if command not in self.log:
            self.log.append(command)
        return command

    @property
    def train_iters(self) -> int:
        return self.iters or self.scale.iters

    @property
    def uses_phantoms(self) -> bool:
        return self.data is None

    @property
    def main_size(self) -> int:
        """Edge length of the main model: the user's data size, else the scale's."""
        if self.data is not None:
            from medgen.data.dataset import load_preprocess_info

            return int(load_preprocess_info(self.data).get("size", 0) or self.scale.size)
        return self.scale.size

    def main_model(self, run: str | Path | None = None) -> Path:
        """The main model: ``run`` when given (a trained run folder), else ``WORK/runs/hagan-S`` (trained if needed)."""
        if run is not None:
            return Path(run)
        return self.model(f"hagan-{self.main_size}", self.main_size)

    @staticmethod
    def run_size(run_dir: Path) -> int:
        from medgen.training.runconfig import RunConfig

        return int(RunConfig.load(run_dir).model["size"])

    # ------------------------------------------------------------------ data
    @property
    def phantom_grid(self) -> int:
        """The edge (voxels) the scale's thorax-CT phantoms are rendered at: the largest size its experiments
        use, so every smaller size is a downsampling of the same anatomy."""
        s = self.scale
        return max(s.sizes + (s.size, s.small_size))

    def render_size(self, size: int) -> int:
        """The edge the phantoms of a ``size``³ data set are rendered at: :attr:`phantom_grid`, or ``size``
        above it (an experiment run at a larger ``--size`` than its scale's learns real anatomy at that
        resolution, not an upsampled one)."""
        return max(self.phantom_grid, size)

    def _phantoms(self, size: int = 0) -> tuple[Path, Path]:
        """Raw thorax-CT phantoms (NIfTI, HU) at :meth:`render_size`: the scale's grid, or for a ``size``
        above it the same subjects (same seeds) rendered at ``size`` into ``phantoms/train-rSIZE``."""
        s = self.scale
        raw = self.root / "phantoms"
        grid = self.render_size(size)
        tag = "" if grid == self.phantom_grid else f"-r{grid}"
        for name, n, seed in (("train", s.n_train, self.seed), ("heldout", s.n_heldout, self.seed + 1)):
            self._raw_phantoms(raw / f"{name}{tag}", n, seed, name, grid)
        return raw / f"train{tag}", raw / f"heldout{tag}"

    def _raw_phantoms(self, raw: Path, n: int, seed: int, what: str, size: int | None = None) -> None:
        """``n`` thorax-CT phantoms drawn with ``seed`` into ``raw`` (unless there), at ``size``³ (default
        :attr:`phantom_grid`)."""
        if (raw / "manifest.csv").is_file():
            return
        size = size or self.phantom_grid
        argv = ["phantoms", "--kind", PHANTOM_KIND, "--n", str(n), "--size", str(size), "--seed", str(seed),
                "--out", str(raw), "--workers", "2"]
        with step(argv, f"phantoms ({what})"):
            write_phantoms(PHANTOM_KIND, n, size, seed, raw, workers=2, progress=self.progress)

    def _preprocessed(self, raw: Path, folder: Path, size: int, what: str) -> Path:
        """``raw`` preprocessed to ``size``³ into ``folder`` (unless there)."""
        if not (folder / "preprocess.json").is_file():
            argv = ["preprocess", str(raw), str(folder), "--modality", "ct", "--size", str(size), "--workers", "2"]
            if not self.progress:
                argv.append("--no-progress")
            with step(argv, f"preprocess ({what}, {size}³)"):
                _preprocess(raw, folder, size, progress=self.progress)
        return folder

    def datasets(self, size: int) -> tuple[Path, Path]:
        """(training, held-out) preprocessed folders at ``size``³."""
        if not self.uses_phantoms:
            train = self._check_user_data(self.data, size, "--data")
            if self.heldout is None:
                raise UsageError("this experiment needs a held-out set: pass --heldout DIR (preprocessed like --data)")
            return train, self._check_user_data(self.heldout, size, "--heldout")
        raw_train, raw_heldout = self._phantoms(size)
        return (self._preprocessed(raw_train, self.root / "data" / f"train-{size}", size, "train"),
                self._preprocessed(raw_heldout, self.root / "data" / f"heldout-{size}", size, "heldout"))

    def larger_training_set(self, size: int, n: int) -> Path:
        """A preprocessed training set of ``n`` thorax-CT phantoms at ``size``³ (``WORK/data/trainN-SIZE``),
        drawn with seed + 10, so none of them is one of the held-out phantoms (seed + 1)."""
        if not self.uses_phantoms:
            raise UsageError("a larger training set is made of phantoms: this experiment cannot use --data")
        grid = self.render_size(size)
        raw = self.root / "phantoms" / (f"train-{n}" if grid == self.phantom_grid else f"train-{n}-r{grid}")
        self._raw_phantoms(raw, n, self.seed + 10, f"train, {n}", grid)
        return self._preprocessed(raw, self.root / "data" / f"train{n}-{size}", size, f"train {n}")

    @staticmethod
    def _check_user_data(folder: Path, size: int, option: str) -> Path:
        from medgen.data.dataset import load_preprocess_info

        info = load_preprocess_info(folder)
        got = int(info.get("size", 0) or 0)
        if got != size:
            raise UsageError(
                f"{option} {folder}: holds {got}³ volumes, this experiment needs {size}³ "
                f"(run medgen preprocess --size {size}, or choose --scale)"
            )
        return Path(folder)

    # ------------------------------------------------------------------ models
    def model(self, name: str, size: int, *, preset: str | None = None, data: Path | None = None,
              use_lowres: bool = True, use_encoder: bool = True, slab_selection: str | None = None,
              num_classes: int | None = None, label_column: str | None = None, family: str | None = None,
              iters: int | None = None, autoencoder_run: Path | None = None, recipe: str | None = None,
              model_settings: dict[str, Any] | None = None, hparams: dict[str, Any] | None = None,
              seed: int | None = None) -> Path:
        """A run folder ``WORK/runs/NAME`` trained for ``iters`` iterations (default :attr:`train_iters`).

        Trains (or resumes) only when the run's latest checkpoint is short of the
        iterations. The keyword options are those of ``medgen train``: ``family`` (default
        hagan), ``use_lowres=False`` (``--no-lowres``), ``use_encoder=False``
        (``--no-encoder``), ``slab_selection`` (``--slab-selection``), ``num_classes`` and
        ``label_column`` (the class-conditional model), ``autoencoder_run``
        (``--autoencoder``, the ldm family), ``recipe`` (``--recipe``), ``model_settings``
        (more architecture fields, e.g. ``{"minibatch_std": 0}``), ``hparams`` (more training
        settings, e.g. ``{"class_weight": 1.0}``), ``seed`` (default the workspace's).
        ``data``: training folder (default: the training set at ``size``). ``preset``:
        default the scale's, or the family's default preset when the family has no preset
        of that name.
        """
        from medgen.families import registry
        from medgen.families.run_config import new_run_config, train_command

        run_dir = self.root / "runs" / name
        iters = iters or self.train_iters
        train_dir = data if data is not None else self.datasets(size)[0]
        s = self.scale
        every = max(iters // 4, 1)
        options = {"iters": iters, "batch": s.batch, "seed": self.seed if seed is None else seed,
                   "device": self.device, "split_fractions": (1.0, 0.0, 0.0), "sample_every": every,
                   "ckpt_every": every, "log_every": 25, "label_column": label_column,
                   "slab_selection": slab_selection, "use_encoder": None if use_encoder else False, **(hparams or {})}
        model_options = {"num_classes": num_classes, "use_lowres": None if use_lowres else False,
                         "autoencoder_run": None if autoencoder_run is None else str(autoencoder_run),
                         **(model_settings or {})}
        fam = registry.get(family or "hagan")
        preset = preset or s.preset_for(fam)
        config = dict(family=family, preset=preset, resume=(run_dir / "config.yaml").exists(),
                      model_options=model_options, options=options, recipe=recipe)
        if config["resume"]:
            check_same_settings(run_dir, new_run_config(train_dir, run_dir, **{**config, "resume": False}))
        self.record(train_command(train_dir, run_dir, progress=self.progress, **{**config, "resume": False}))
        if checkpoint_iteration(run_dir) >= iters:
            print(f"\n{run_dir}: trained for {iters} iterations already, reused", flush=True)
            return run_dir
        argv = train_command(train_dir, run_dir, progress=self.progress, **config)
        with step(argv, f"train {name}"):
            cfg = new_run_config(train_dir, run_dir, **config)
            result = registry.train(cfg, run_dir, resume=config["resume"], progress=self.progress)
            if result.interrupted:
                raise InputError(f"stopped at iteration {result.iteration} of {iters}; rerun to continue",
                                 exit_code=EXIT_INTERRUPTED)
        return run_dir

    def samples(self, run_dir: Path, name: str, n: int | None = None, label: int | None = None,
                sampling: dict[str, Any] | None = None) -> Path:
        """``n`` volumes (default the scale's) generated by the run into ``WORK/samples/NAME``.

        ``sampling``: a diffusion model's sampler options (``steps``, ``guidance``, ...)."""
        from medgen.families import registry
        from medgen.inference.generate import generate_to_folder

        out = self.root / "samples" / name
        n = n or self.scale.n_samples
        argv = ["generate", str(run_dir), "--n", str(n), "--out", str(out), "--seed", str(self.seed),
                "--device", self.device, "--format", "npy", "--no-mosaic"]
        if label is not None:
            argv += ["--label", str(label)]
        for key, value in (sampling or {}).items():
            argv += [f"--{key}", f"{value:g}" if isinstance(value, float) else str(value)]
        if not self.progress:
            argv.append("--no-progress")
        if out.is_dir() and (out / "generate.json").is_file():
            stored = json.loads((out / "generate.json").read_text(encoding="utf-8")).get("source", {})
            from medgen.training.checkpoint import latest_checkpoint

            latest = latest_checkpoint(run_dir)
            if latest is not None and stored.get("checkpoint") not in (None, str(latest.resolve())):
                import shutil

                shutil.rmtree(out)  # samples of an older checkpoint
        with step(argv, f"generate {name}"):
            model = registry.load(run_dir, device=self.torch_device())
            # The source record of `medgen generate` (EMA weights): a later checkpoint makes these samples stale.
            source = {"checkpoint": str(model.checkpoint.resolve()), "ema": True}
            rows = generate_to_folder(model, out, n, seed=self.seed, label=label, fmt="npy", mosaic=False,
                                      progress=self.progress, source=source, sampling=sampling)
            print(f"medgen generate: {len(rows)} volumes in {out}", flush=True)
        return out

    def untrained_samples(self, size: int, name: str, *, preset: str | None = None, n: int | None = None) -> Path:
        """Samples of a freshly initialised generator (the baseline every trained model must beat)."""
        from medgen.families.hagan.model import build
        from medgen.inference.generate import generate_to_folder

        out = self.root / "samples" / name
        preset = preset or self.scale.hagan_preset
        print(f"\n{out}: {n or self.scale.n_samples} samples of an untrained {preset} generator at {size}³", flush=True)
        model = build(preset, size, seed=self.seed, device=self.torch_device(), encoder=False)
        model.run_config = _PreprocessOnly(self._preprocess_info(size))
        generate_to_folder(model, out, n or self.scale.n_samples, seed=self.seed, fmt="npy", mosaic=False,
                           progress=self.progress, source={"untrained": preset, "size": size, "seed": self.seed})
        return out

    def _preprocess_info(self, size: int) -> dict[str, Any]:
        from medgen.data.dataset import load_preprocess_info

        return load_preprocess_info(self.datasets(size)[0])

    def torch_device(self):
        """The workspace's device (``auto`` resolved) as a ``torch.device``."""
        from medgen.core.device import resolve_device

        return resolve_device(self.device)

    # ------------------------------------------------------------------ classifiers
    def classifier(self, size: int, label_column: str = "label") -> Path | None:
        """A classifier of the manifest column ``label_column``, for the Inception Score of samples at ``size``³.

        Trained on the training set at ``size`` (``self.datasets(size)[0]``, split as
        ``medgen train-classifier`` splits it) into ``WORK/classifiers/LABEL_COLUMN-SIZE``, with
        augmentation and the workspace's seed, for E = max(1, ceil(classifier_iters * 8 / n))
        epochs, where ``classifier_iters`` is the scale's and n the labelled volumes of the train
        split: about ``classifier_iters`` steps of 8 volumes whatever the data set's size.
        Reused when its ``classifier.json`` records the same data, label column, epochs, seed and
        augmentation (otherwise retrained). Returns the folder, or None (with one printed line
        saying why) when the training set has no such column or fewer than 2 classes in its
        train split. The ``medgen train-classifier`` command is recorded in :attr:`log`.
        """
        import math

        from medgen.data.dataset import VolumeDataset
        from medgen.families.classifier.fit import train_on_folder
        from medgen.families.classifier.network import INFO_FILE, read_classifier_info
        from medgen.training.runconfig import RunConfig

        data = self.datasets(size)[0]
        train = VolumeDataset(data, split="train", seed=0, fractions=tuple(RunConfig.split_fractions),
                              label_column=label_column, keys=("image",))
        if train.label_column is None:
            print(f"\n{data}: no manifest column {label_column!r}, so no classifier (and no IS)", flush=True)
            return None
        labelled = [v for v in train.labels if v >= 0]
        if len(set(labelled)) < 2:
            print(f"\n{data}: column {label_column!r} holds {len(set(labelled))} class(es) in the train split, "
                  "so no classifier (and no IS)", flush=True)
            return None
        epochs = max(1, math.ceil(self.scale.classifier_iters * 8 / len(labelled)))
        out = self.root / "classifiers" / f"{label_column}-{size}"
        argv = ["train-classifier", str(data), "--out", str(out), "--label-column", label_column,
                "--epochs", str(epochs), "--augment", "--seed", str(self.seed), "--device", self.device]
        if not self.progress:
            argv.append("--no-progress")
        self.record(argv)
        if (out / INFO_FILE).is_file():
            try:
                info = read_classifier_info(out)
            except MedgenError:
                info = {}
            training = info.get("training") or {}
            same_data = info.get("data") is not None and Path(info["data"]).resolve() == Path(data).resolve()
            if same_data and (info.get("label_column"), training.get("epochs"), training.get("seed"),
                              training.get("augment")) == (label_column, epochs, self.seed, True):
                print(f"\n{out}: classifier of {label_column!r} trained for {epochs} epochs already, reused", flush=True)
                return out
        with step(argv, f"train-classifier {label_column}-{size}"):
            info = train_on_folder(data, out, label_column=label_column, epochs=epochs, augment=True, seed=self.seed,
                                   device=self.device, progress=self.progress)
            acc = info["test_accuracy"]
            print(f"classifier of {label_column!r} ({', '.join(info['classes'])}): test accuracy "
                  f"{'-' if acc is None else f'{100 * acc:.1f} %'} (n={info['split']['n_test']}); wrote {out}", flush=True)
        return out

    # ------------------------------------------------------------------ metrics
    def evaluate(self, real: Path, fake: Path, out_json: Path, *, train: Path | None = None,
                 metrics: str | None = None, features: str = "random", weights: str | None = None,
                 n: int | None = None, figures: bool = False, classifier: Path | None = None) -> dict[str, Any]:
        """``medgen evaluate`` of ``fake`` against ``real``, written to ``out_json``; returns that JSON report.

        ``features="encoder"``: ``weights`` is a run (or checkpoint) folder whose encoder gives the
        features. ``classifier``: a classifier folder (e.g. :meth:`classifier`) for the Inception
        Score, which is computed when ``metrics`` names ``is``. Metrics that fail on the data raise
        InputError naming them (the others are written).
        """
        argv = ["evaluate", "--real", str(real), "--fake", str(fake), "--out", str(out_json),
                "--seed", str(self.seed), "--device", self.device]
        if weights is not None:
            argv += ["--weights", str(weights)]
            if features != "med3d":
                argv += ["--features", features]
        else:
            argv += ["--features", features]
        if train is not None:
            argv += ["--train", str(train)]
        if metrics:
            argv += ["--metrics", metrics]
        if classifier is not None:
            argv += ["--classifier", str(classifier)]
        if n is not None:
            argv += ["--n", str(n)]
        if not figures:
            argv.append("--no-figures")
        if not self.progress:
            argv.append("--no-progress")
        with step(argv, "evaluate"):
            from medgen.families.classifier.network import classifier_probs
            from medgen.metrics.evaluate import evaluate

            out_json = Path(out_json)
            encoder, encoder_info = (None, None)
            if features == "encoder":
                encoder, encoder_info = self._encoder(weights)
                weights = None
            probs = None if classifier is None else classifier_probs(classifier, self.torch_device())
            ev = evaluate(real, fake, train, metrics, features, weights, encoder=encoder, encoder_info=encoder_info,
                          classifier=probs, n=n, seed=self.seed, device=self.device, progress=self.progress,
                          figures_dir=out_json.with_name(out_json.stem + "-figures") if figures else None)
            ev.save(out_json)
            print(ev.table(), flush=True)
            print(f"wrote {out_json}", flush=True)
            if ev.failed:
                raise InputError(f"{len(ev.failed)} metric(s) failed: {', '.join(ev.failed)} (the others are in {out_json})",
                                 exit_code=EXIT_PARTIAL)
        return json.loads(out_json.read_text(encoding="utf-8"))

    def _encoder(self, run: str | Path | None) -> tuple[Any, dict[str, Any]]:
        """The trained model whose encoder gives ``features="encoder"`` (``run``: a run or checkpoint folder),
        with what identifies it (run, checkpoint, weights hash: part of the feature-cache key)."""
        from medgen.families import registry
        from medgen.metrics.features import file_sha256
        from medgen.training.checkpoint import WEIGHTS_NAME, resolve_checkpoint

        if run is None:
            raise UsageError("--features encoder needs --weights RUN: a training run folder (or checkpoint folder) of HA-GAN")
        run = Path(run)
        run_dir = run if (run / "config.yaml").is_file() else run.parent.parent
        model = registry.load(run_dir, checkpoint=None if run_dir == run else run, device=self.torch_device())
        if model.encoder is None:
            raise UsageError(f"{run}: this model has no encoder (trained with --no-encoder); use --features med3d or random")
        ckpt = Path(model.checkpoint) if model.checkpoint is not None else resolve_checkpoint(run)
        # As medgen.evaluate describes a run's encoder, so that both share cached features.
        return model, {"architecture": "HA-GAN encoder E^H -> E^G latent code", "run": str(run_dir),
                       "checkpoint": ckpt.name, "weights_sha256": file_sha256(ckpt / WEIGHTS_NAME)}


# ---------------------------------------------------------------------- data steps
PHANTOM_KIND = "thorax-ct"


def write_phantoms(kind: str, n: int, size: int, seed: int, out: Path, *, workers: int = 1,
                   progress: bool = True, domain: str = "A", lesions: Sequence[str] = (),
                   longitudinal: bool = False, healthy: bool = False) -> list[dict[str, Any]]:
    """The phantom set ``medgen phantoms --kind KIND --n N --size S --seed SEED --out OUT [--domain D]
    [--lesions K,K] [--longitudinal] [--healthy]`` writes (:func:`medgen.data.phantoms.phantom_set.write_phantom_set` and
    its mosaic). Returns the manifest rows."""
    from medgen.data.phantoms.phantom_set import spacing_mm, write_phantom_set
    from medgen.viz.mosaic import save_phantom_set_mosaic

    rows = write_phantom_set(kind, n, size, seed, out, workers=workers, progress=progress, domain=domain,
                             lesions=tuple(lesions), longitudinal=longitudinal, healthy=healthy)
    save_phantom_set_mosaic(out, rows, kind)
    shown = "" if domain == "A" else f", domain {domain}"
    print(f"wrote {n} {kind} phantoms ({size}^3, {spacing_mm(kind, size):g} mm{shown}) to {out}", flush=True)
    return rows


def phantom_dataset(ws: Workspace, kind: str, name: str, n: int, size: int, seed: int, domain: str = "A",
                    lesions: Sequence[str] = (), raw_size: int | None = None, longitudinal: bool = False,
                    healthy: bool = False) -> Path:
    """``WORK/data/NAME``: ``n`` phantoms of ``kind`` (seed ``seed``, rendered in ``domain``: A, B or both) preprocessed
    at ``size``³ with their extra volumes (``tissue``; brain ``t2``; a both set ``domain_b``; with ``lesions``
    the lesion kinds painted into half of them, ``lesion`` and ``normal``; brain with ``longitudinal`` each
    subject's ``followup``, ``followup_tissue`` and the interval columns; brain with ``healthy`` each subject's
    healthy self ``healthy``, ``healthy_tissue``), through ``medgen phantoms`` (at
    ``raw_size``³, default ``size``³) into ``WORK/phantoms-sets/NAME`` and ``medgen preprocess`` (CT: the HU window;
    MRI: each volume's own percentiles). Each step is skipped when its output is complete; both are recorded in
    ``ws.log``."""
    modality = "ct" if kind == "thorax-ct" else "mri"
    raw = ws.root / "phantoms-sets" / name
    raw_size = raw_size or size
    argv = ["phantoms", "--kind", kind, "--n", str(n), "--size", str(raw_size), "--seed", str(seed),
            *(["--domain", domain] if domain != "A" else []),
            *(["--lesions", ",".join(lesions)] if lesions else []), *(["--longitudinal"] if longitudinal else []),
            *(["--healthy"] if healthy else []), "--out", str(raw), "--workers", "2"]
    ws.record(argv)
    if not (raw / "manifest.csv").is_file():
        with step(argv, f"phantoms ({name})"):
            write_phantoms(kind, n, raw_size, seed, raw, workers=2, progress=ws.progress, domain=domain,
                           lesions=lesions, longitudinal=longitudinal, healthy=healthy)
    folder = ws.root / "data" / name
    argv = ["preprocess", str(raw), str(folder), "--modality", modality, "--size", str(size), "--workers", "2"]
    if not ws.progress:
        argv.append("--no-progress")
    ws.record(argv)
    if not (folder / "manifest.csv").is_file():
        with step(argv, f"preprocess ({name})"):
            _preprocess(raw, folder, size, progress=ws.progress, modality=modality)
    return folder


def _preprocess(raw: Path, folder: Path, size: int, *, progress: bool = True, modality: str = "ct") -> None:
    """``medgen preprocess RAW FOLDER --modality MODALITY --size SIZE --workers 2`` (the CLI's defaults otherwise)."""
    from medgen.data.preprocess import PreprocessSettings, preprocess_folder

    summary = preprocess_folder(raw, folder, PreprocessSettings(modality=modality, size=size), workers=2,
                                progress=progress)
    print(summary.format(), file=sys.stderr, flush=True)
    if summary.manifest is None:
        raise InputError(f"{raw}: no readable input volumes ({len(summary.failed)} failed, listed above)")
    if summary.failed:
        raise InputError(f"{len(summary.failed)} input volume(s) could not be read (listed above)",
                         exit_code=EXIT_PARTIAL)
    print(f"wrote {summary.manifest} ({len(summary.written) + len(summary.skipped)} volumes)", flush=True)


@dataclass
class _PreprocessOnly:
    """Stands in for a run configuration where only the data's preprocessing record is known."""

    preprocess: dict[str, Any]


# ---------------------------------------------------------------------- outputs
def metric_value(metrics: dict[str, Any], name: str, key: str = "value") -> float | None:
    """One number out of ``medgen evaluate``'s ``metrics`` mapping (None when missing or failed)."""
    entry = metrics.get(name) or {}
    value = entry.get(key)
    return float(value) if isinstance(value, (int, float)) else None


# The columns of the synthesis and ablation tables, from one ``medgen evaluate`` report.
METRIC_COLUMNS: tuple[str, ...] = (
    "fid", "mmd", "precision", "recall", "coverage", "ms_ssim",
    "lung_fraction_w1", "emphysema_pct_w1", "bone_fraction_w1",
)
METRIC_NOTES: tuple[str, ...] = (
    "fid, mmd: lower is better; computed on features of a 3D ResNet-50 with seeded random weights "
    "unless the table says med3d: NOT comparable with published values, only between rows of this table.",
    "mmd: unbiased estimate, so it can be slightly negative when the sets are indistinguishable.",
    "precision (fidelity), recall (diversity), coverage: k-NN manifold estimates on the same features, higher is better.",
    "ms_ssim: mean MS-SSIM between pairs of generated volumes; lower = more diverse (compare with the real row).",
    "*_w1: Wasserstein-1 distance between the real and generated distributions of the HU-based anatomy statistic "
    "(lung fraction of the body, emphysema % of the lung, bone fraction of the body); lower is better.",
)
# Inception Score columns of :func:`metric_row` (only where ``medgen evaluate`` ran with ``--metrics is --classifier``):
# separate from METRIC_COLUMNS so that tables without a classifier carry no empty columns.
IS_COLUMNS: tuple[str, ...] = ("is", "is_real")
IS_NOTES: tuple[str, ...] = (
    "is: Inception Score of the generated volumes through a classifier of the data's labels trained on the "
    "training set (higher is better, at most the number of classes); is_real: the same score of the real volumes, "
    "the reference. Comparable only between rows scored by the same classifier.",
)


def seed_statistics(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The mean and the sample standard deviation (ddof 1) over ``rows`` (one per training seed) of every
    column, counting only finite numbers (None, NaN and text left out); None where no row has one (std: where
    fewer than two have)."""
    import math

    import numpy as np

    mean: dict[str, Any] = {}
    std: dict[str, Any] = {}
    for c in columns:
        nums = [float(r[c]) for r in rows if isinstance(r.get(c), (int, float)) and not isinstance(r.get(c), bool)
                and math.isfinite(float(r[c]))]
        mean[c] = float(np.mean(nums)) if nums else None
        std[c] = float(np.std(nums, ddof=1)) if len(nums) > 1 else None
    return mean, std


def metric_row(report: dict[str, Any]) -> dict[str, Any]:
    """The :data:`METRIC_COLUMNS` and :data:`IS_COLUMNS` of one ``medgen evaluate`` report (None where not computed)."""
    m = report.get("metrics", report)
    prdc = (m.get("prdc") or {}).get("value") or {}
    anatomy = (m.get("anatomy") or {}).get("value") or {}
    row: dict[str, Any] = {
        "fid": metric_value(m, "fid"),
        "mmd": metric_value(m, "mmd"),
        "precision": prdc.get("precision"),
        "recall": prdc.get("recall"),
        "coverage": prdc.get("coverage"),
        "ms_ssim": metric_value(m, "ms_ssim"),
    }
    for key in ("lung_fraction", "emphysema_pct", "bone_fraction"):
        row[f"{key}_w1"] = anatomy.get(key) if isinstance(anatomy, dict) else None
    row["is"] = metric_value(m, "is")
    real_is = ((m.get("is") or {}).get("details") or {}).get("real") or {}  # the real volumes' IS, the reference
    row["is_real"] = float(real_is["mean"]) if isinstance(real_is.get("mean"), (int, float)) else None
    return row


@dataclass
class ExperimentOutput:
    """The output folder of one experiment: table, figures, record.

    ``command``: the exact command line that makes this folder (written next to
    every table so a reader can regenerate it).
    """

    out: Path
    name: str
    command: str
    scale: Scale
    started: float = field(default_factory=time.monotonic)
    figures: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        self.out.mkdir(parents=True, exist_ok=True)

    def path(self, filename: str) -> Path:
        return self.out / filename

    def write_table(self, rows: list[dict[str, Any]], columns: Sequence[str], *, title: str, notes: Sequence[str] = (),
                    stem: str | None = None, digits: int = 4) -> tuple[Path, Path]:
        """``STEM.csv`` (full precision) and ``STEM.md`` (title, table, notes, the command)."""
        stem = stem or self.name
        csv_path, md_path = self.out / f"{stem}.csv", self.out / f"{stem}.md"
        write_csv(csv_path, rows, columns)
        md = [f"# {title}", "", markdown_table(rows, columns, digits)]
        if notes:
            md += ["", *[f"- {n}" for n in notes]]
        md += ["", "Made by:", "", "```", self.command, "```", ""]
        atomic_write_text(md_path, "\n".join(md))
        print(f"\n{title}\n\n{markdown_table(rows, columns, digits)}", flush=True)
        return csv_path, md_path

    def add_figure(self, path: Path) -> None:
        self.figures.append(Path(path).name)

    def finish(self, results: dict[str, Any], device: str = "cpu") -> Path:
        """``experiment.json``: the command, the scale, versions and machine, wall time, results."""
        from medgen.families.hagan.bench import machine_info

        record = {
            "experiment": self.name,
            "command": self.command,
            "scale": asdict(self.scale),
            "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "wall_minutes": round((time.monotonic() - self.started) / 60, 2),
            "machine": machine_info(device),
            "figures": self.figures,
            "results": results,
        }
        path = self.out / "experiment.json"
        atomic_write_json(path, record)
        print(f"\nmedgen experiment {self.name}: wrote {self.out} in {record['wall_minutes']:.1f} min", flush=True)
        return path
