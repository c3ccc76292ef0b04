"""The Python API, mirroring the command line.

Example::

    import medgen

    model = medgen.load("runs/thorax64")              # latest checkpoint; the run's family decides the class
    x = model.generate(4, seed=0)                      # float32 [4, 64, 64, 64] in [-1, 1]
    hu = model.generate(4, seed=0, hu=True)            # CT: the same volumes in HU
    z = model.encode(x)                                # float32 [4, latent_dim]
    x_rec = model.reconstruct(x)                       # G(E(x)), [4, 64, 64, 64]

    untrained = medgen.build("paper", size=256)        # random weights, no training
    big = untrained.generate(1, chunk=16)              # 256³ in bounded memory

Volume ``i`` of ``generate(n, seed)`` depends only on (seed, i). Weights are
read from safetensors files only (never unpickled). A run folder names its
family in ``config.yaml`` (``family``; runs without the key are HA-GAN), and
:func:`load` returns that family's model class (HA-GAN:
:class:`medgen.families.hagan.model.HAGANModel`).
"""

from __future__ import annotations

import os
from typing import Any

import torch

from medgen.core.device import resolve_device
from medgen.families import registry
from medgen.families.hagan.model import HAGANModel

__all__ = ["load", "build", "build_untrained", "evaluate", "resolve_device", "HAGANModel"]


def load(
    run_dir: str | os.PathLike,
    checkpoint: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    use_ema: bool = True,
) -> Any:
    """Load a trained model from a run folder written by ``medgen train``.

    ``checkpoint``: a checkpoint folder (``RUN/checkpoints/iter-NNNNNN``); default
    the run's latest. ``use_ema``: sample with the EMA copy when the checkpoint
    has one. ``device``: cpu, cuda or auto. Raises InputError if ``run_dir`` is
    not a run folder or holds no checkpoint.
    """
    return registry.load(run_dir, checkpoint=checkpoint, device=resolve_device(device), use_ema=use_ema)


def build(
    preset: str = "tiny",
    size: int = 64,
    seed: int = 0,
    device: str | torch.device = "cpu",
    encoder: bool = True,
    family: str = "hagan",
    **overrides: Any,
) -> Any:
    """An untrained model (random initialisation drawn from ``seed``) of ``preset`` at ``size``³.

    ``overrides`` replace preset fields (width, latent_dim, num_classes, ...).
    Useful to check shapes, memory and speed before training.
    """
    return registry.get(family).build_model(
        preset, size, seed=seed, device=resolve_device(device), encoder=encoder, **overrides
    )


def build_untrained(run_dir: str | os.PathLike, seed: int = 0, device: str | torch.device = "cpu") -> Any:
    """The architecture of training run ``run_dir`` at a random initialisation drawn from ``seed``.

    Carries the run's configuration (preprocessing record, spacing) but none of
    its weights: the baseline every trained model must clearly beat.
    """
    return registry.build_untrained(run_dir, seed=seed, device=resolve_device(device))


def evaluate(
    real: Any,
    fake: Any,
    train: Any = None,
    metrics: Any = None,
    features: str | None = None,
    weights: Any = None,
    classifier: Any = None,
    n: int | None = None,
    device: str | torch.device = "auto",
    *,
    seed: int = 0,
    samples_dir: str | os.PathLike | None = None,
    progress: bool = True,
    **options: Any,
) -> Any:
    """Compare generated volumes with real ones (the work of ``medgen evaluate``); returns a
    :class:`medgen.metrics.evaluate.Evaluation` (``.metrics``, ``.report``, ``.save(path)``, ``.table()``).

    Example::

        ev = medgen.evaluate("data/heldout", "runs/thorax64", n=64, features="random", metrics="fid,kid")
        print(ev.table()); ev.save("metrics.json")

    Takes what :func:`medgen.metrics.evaluate.evaluate` takes (folders, VolumeSets or
    arrays ``[n, X, Y, Z]``; ``options`` are its keyword options, e.g. ``input_size``,
    ``bootstrap``, ``figures_dir``, ``is_probs``), and loads what needs a trained model:

    ``fake``: may be a training run folder (it has ``config.yaml``): ``n`` volumes are
    sampled from its latest checkpoint with ``seed`` into
    ``<samples_dir>/<checkpoint>-seed<seed>`` (default ``samples_dir``: ``RUN/evaluate-samples``),
    so samples of another checkpoint are never reused. ``features="encoder"``: ``weights``
    is a run folder (or one of its checkpoint folders) whose encoder gives the features.
    A loaded model may be given instead as ``encoder=`` (with ``encoder_info=``).
    ``classifier``: a folder written by ``medgen train-classifier`` (or a ready
    :class:`medgen.metrics.registry.ClassifierProbs`), for the Inception Score.
    ``device``: where models, the feature network and the classifier run.
    """
    import inspect
    from pathlib import Path

    from medgen.core.errors import UsageError
    from medgen.metrics import evaluate as ev

    unknown = sorted(set(options) - set(inspect.signature(ev.evaluate).parameters))
    if unknown:
        raise TypeError(f"evaluate() got an unexpected keyword argument {unknown[0]!r}")
    plan = ev.check_options(metrics=metrics, features=features, weights=weights, classifier=classifier, **options)
    device = str(resolve_device(device))
    loaded: dict[tuple[str, str | None], Any] = {}

    def load_run(run_dir: Path, checkpoint: Path | None = None) -> Any:
        key = (str(Path(run_dir).resolve()), None if checkpoint is None else str(Path(checkpoint).resolve()))
        if key not in loaded:
            loaded[key] = load(run_dir, checkpoint=checkpoint, device=device)
        return loaded[key]

    if classifier is not None and not hasattr(classifier, "probs_fn"):
        from medgen.families.classifier.network import classifier_probs

        classifier = classifier_probs(classifier, device)
    encoder, encoder_info = options.pop("encoder", None), options.pop("encoder_info", None)  # a model given ready
    if plan.features == "encoder" and plan.needs_features and encoder is None:
        encoder, encoder_info = _run_encoder(weights, load_run)
        weights = None
    if isinstance(fake, (str, os.PathLike)) and (Path(fake) / "config.yaml").is_file():
        if n is None:
            raise UsageError(f"{fake}: is a training run; pass --n N to sample N volumes from it")
        fake = _sample_run(load_run(Path(fake)), Path(fake), n, seed, samples_dir, progress)
    return ev.evaluate(real, fake, train, metrics, plan.features, weights, encoder=encoder, encoder_info=encoder_info,
                       classifier=classifier, n=n, seed=seed, device=device, progress=progress, **options)


def _samples_folder(root: str | os.PathLike, checkpoint: str | os.PathLike | None, seed: int) -> Any:
    """Where :func:`evaluate` samples a run: ``root/<checkpoint name>-seed<seed>`` (one folder per
    checkpoint and seed, so a later checkpoint never reuses an earlier one's samples)."""
    from pathlib import Path

    name = Path(checkpoint).name if checkpoint is not None else "untrained"
    return Path(root) / f"{name}-seed{seed}"


def _sample_run(model: Any, run: Any, n: int, seed: int, samples_dir: Any, progress: bool) -> Any:
    """Generate ``n`` volumes of ``model`` (loaded from ``run``) into its samples folder; the opened set of them."""
    from pathlib import Path

    from medgen.inference.generate import generate_to_folder
    from medgen.metrics.volumes import open_volume_set

    checkpoint = getattr(model, "checkpoint", None)
    folder = _samples_folder(samples_dir if samples_dir is not None else Path(run) / "evaluate-samples", checkpoint, seed)
    source = {"run": str(run), "checkpoint": None if checkpoint is None else Path(checkpoint).name}
    rows = generate_to_folder(model, folder, n, seed=seed, fmt="npy", mosaic=False, progress=progress, source=source)
    vs = open_volume_set(folder, what="--fake")
    wanted = {r["id"] for r in rows}  # the folder may hold more volumes from an earlier, larger --n
    return vs.subset([i for i, v in enumerate(vs.ids) if v in wanted])


def _run_encoder(weights: Any, load_run: Any) -> tuple[Any, dict[str, Any]]:
    """The model of run (or checkpoint) folder ``weights`` for encoder features, and what identifies it."""
    from pathlib import Path

    from medgen.core.errors import UsageError
    from medgen.metrics.features import file_sha256
    from medgen.training.checkpoint import WEIGHTS_NAME, resolve_checkpoint

    if weights is None:
        raise UsageError("--features encoder needs --weights RUN: a training run folder (or checkpoint folder) of HA-GAN")
    run = Path(weights)
    run_dir = run if (run / "config.yaml").is_file() else run.parent.parent
    model = load_run(run_dir, None if run_dir == run else run)
    if getattr(model, "encoder", None) is None:
        raise UsageError(f"{run}: this model has no encoder (trained with --no-encoder); use --features med3d or random")
    from medgen.families.hagan.model import HAGANModel

    ckpt = Path(model.checkpoint) if getattr(model, "checkpoint", None) is not None else resolve_checkpoint(run)
    architecture = ("HA-GAN encoder E^H -> E^G latent code" if isinstance(model, HAGANModel)
                    else f"{type(model).__name__} encoder latent code")
    info = {"architecture": architecture, "run": str(run_dir), "checkpoint": ckpt.name,
            "weights_sha256": file_sha256(ckpt / WEIGHTS_NAME)}
    return model, info
