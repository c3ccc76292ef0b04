"""``medgen experiment NAME``: the paper's experiments, at demo or full scale.

Examples::

    medgen experiment synthesis                     # demo scale, on thorax-CT phantoms
    medgen experiment features --run demo-out/run   # a model trained already
    medgen experiment ablation --scale full --data data/ct128 --heldout data/ct128-test

Every experiment writes ``OUT/NAME.csv``, ``OUT/NAME.md`` (the table and the
command that made it), its figures and ``OUT/experiment.json``. Data, trained runs
and samples live in the shared workspace (``--work``) and are reused by the next
experiment; a rerun continues where an interrupted one stopped.
"""

from __future__ import annotations

import argparse
import importlib
import shlex

from medgen.experiments import EXPERIMENTS

# Options every experiment takes (dest → default), in the order of the canonical command line.
_COMMON_DEFAULTS = {"scale": "demo", "work": "experiments-out/work", "data": None, "heldout": None, "run": None,
                    "iters": None, "features": "random", "weights": None, "device": "auto", "seed": 0}


def _module(name: str):
    return importlib.import_module(f"medgen.experiments.{name.replace('-', '_')}")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "experiment",
        help="the paper's experiments (synthesis, ablation, augmentation, ...) and medgen's own (recipes, guidance, image2image, "
             "domain-adaptation)",
        description="Run one of the experiments (the HA-GAN paper's, and medgen's own across families and tasks) and write its table (CSV + Markdown) and figures. "
        "Default: demo scale on built-in thorax-CT phantoms (minutes on a CPU); --scale full uses the paper's "
        "model and training length, on your data (--data, --heldout).",
        epilog="Exit codes: 0 success, 1 a step failed, 2 usage or input error, 130 interrupted.",
    )
    sub = p.add_subparsers(dest="experiment", metavar="NAME")
    sub.required = True
    for name in EXPERIMENTS:
        module = _module(name)
        e = sub.add_parser(name, help=module.HELP, description=module.DESCRIPTION,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        _add_common(e, name)
        if hasattr(module, "add_arguments"):
            module.add_arguments(e)
        e.set_defaults(func=run)


def _add_common(e: argparse.ArgumentParser, name: str) -> None:
    g = e.add_argument_group("common options")
    g.add_argument("--scale", choices=("demo", "full", "smoke"), default="demo",
                   help="demo: tiny preset, 32-64³, minutes on a CPU; full: the paper's preset and 80k iterations; "
                        "smoke: seconds, checks the pipeline only (default demo)")
    g.add_argument("--out", default=None, metavar="DIR", help=f"output folder (default experiments-out/{name})")
    g.add_argument("--work", default=_COMMON_DEFAULTS["work"], metavar="DIR",
                   help="workspace shared by the experiments: data, trained runs, samples (default experiments-out/work)")
    g.add_argument("--data", default=None, metavar="DIR",
                   help="your preprocessed training set (default: thorax-CT phantoms)")
    g.add_argument("--heldout", default=None, metavar="DIR", help="your preprocessed held-out set (with --data)")
    g.add_argument("--run", default=None, metavar="RUN",
                   help="a trained run to use as the main model instead of training one (e.g. demo-out/run)")
    g.add_argument("--iters", type=int, default=None, metavar="N",
                   help="training iterations of every model the experiment trains (default: the scale's)")
    g.add_argument("--features", choices=("random", "med3d"), default="random",
                   help="feature network of FID/MMD: random (seeded random 3D ResNet-50, NOT comparable with "
                        "published values) or med3d (MedicalNet, needs --weights) (default random)")
    g.add_argument("--weights", default=None, metavar="FILE", help="MedicalNet ResNet-50 weights for --features med3d")
    g.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="device (default auto)")
    g.add_argument("--seed", type=int, default=0, help="seed of data, training, sampling and metrics (default 0)")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")


def canonical_command(args: argparse.Namespace, parser_defaults: dict | None = None) -> str:
    """The shortest ``medgen experiment`` command line that repeats this run."""
    argv = ["medgen", "experiment", args.experiment]
    defaults = dict(_COMMON_DEFAULTS)
    defaults.update(parser_defaults or {})
    for dest, value in vars(args).items():
        if dest in ("experiment", "func", "command", "no_progress") or value is None:
            continue
        if dest == "out":
            argv += ["--out", str(value)]
            continue
        if dest in defaults and defaults[dest] == value:
            continue
        flag = "--" + dest.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif value is not False:
            argv += [flag, str(value)]
    return shlex.join(argv)


def _first_missing(path):
    """The outermost folder of ``path`` that does not exist yet (None when ``path`` exists)."""
    missing = None
    for p in (path, *path.parents):
        if p.exists():
            break
        missing = p
    return missing


def _remove_if_empty(path, created) -> None:
    """Remove ``path`` and its parents up to ``created`` (the outermost folder this run made) while they are empty."""
    if created is None:
        return
    for p in (path, *path.parents):
        try:
            p.rmdir()  # only succeeds on an empty folder
        except OSError:
            return
        if p == created:
            return


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from medgen.core.errors import UsageError
    from medgen.experiments.workspace import ExperimentOutput, Workspace, get_scale

    module = _module(args.experiment)
    if args.weights is not None and args.features != "med3d":
        raise UsageError("--weights is for --features med3d; add --features med3d or drop --weights")
    if args.features == "med3d" and args.weights is None:
        raise UsageError("--features med3d needs --weights FILE (MedicalNet ResNet-50, e.g. resnet_50_23dataset.pth)")
    if args.run is not None and not (Path(args.run) / "config.yaml").is_file():
        raise UsageError(f"--run {args.run}: not a training run folder (no config.yaml)")
    scale = get_scale(args.scale)
    ws = Workspace(Path(args.work), scale, data=Path(args.data) if args.data else None,
                   heldout=Path(args.heldout) if args.heldout else None, device=args.device, seed=args.seed,
                   iters=args.iters, progress=not args.no_progress)
    out_dir = Path(args.out or f"experiments-out/{args.experiment}")
    args.out = str(out_dir)
    defaults = getattr(module, "DEFAULTS", {})
    created = _first_missing(out_dir)
    out = ExperimentOutput(out_dir, args.experiment, canonical_command(args, defaults), scale)
    print(f"medgen experiment {args.experiment} ({scale.name} scale): {out.command}", flush=True)
    try:
        results = module.run(ws, out, args)
    except BaseException:
        _remove_if_empty(out_dir, created)  # a run refused or failed before writing leaves no empty folder behind
        raise
    from medgen.core.device import resolve_device

    out.finish(results, device=str(resolve_device(args.device)))
    return 0
