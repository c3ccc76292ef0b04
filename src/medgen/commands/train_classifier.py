"""``medgen train-classifier``: a 3D classifier of a manifest label, for IS and augmentation studies.

Example::

    medgen phantoms thorax-ct --n 200 --size 64 --out raw/thorax
    medgen preprocess raw/thorax --out data/thorax64 --size 64
    medgen train-classifier data/thorax64 --out classifiers/severity --epochs 30 --augment
    medgen evaluate --real data/thorax64 --fake samples/ --metrics is --classifier classifiers/severity --out is.json

Trains on the train split of a preprocessed data set (the same split as ``medgen train``
with the same ``--split-seed``), keeps the epoch with the best validation accuracy, reports
accuracy on the test split, and writes ``DIR/classifier.safetensors`` and
``DIR/classifier.json`` (an existing classifier in DIR is replaced). Training runs on
medgen's shared training loop, so DIR is also a run folder of the ``classifier`` family:
``config.yaml``, ``metrics.csv`` (loss_CE and training accuracy per epoch), TensorBoard
logs, and the checkpoints of the best and the last epoch.

Exit codes: 0 done, 2 usage or input error (e.g. no label column, fewer than 2 classes),
130 interrupted.
"""

from __future__ import annotations

import argparse

DEFAULT_MAX_SIZE = 64


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train-classifier",
        help="train a 3D classifier of a manifest label (for IS and augmentation studies)",
        description=(
            "Train a small 3D CNN to predict a manifest column (default 'label', e.g. the phantoms' severity "
            "class) from the volumes of a preprocessed data set. Uses the train/val/test split of `medgen train`: "
            "trains on train, keeps the best epoch on val, reports accuracy on test."
        ),
        epilog="Exit codes: 0 success, 2 usage or input error, 130 interrupted.",
    )
    p.add_argument("data", help="preprocessed data set folder (manifest.csv, volumes/, preprocess.json)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write classifier.safetensors and classifier.json to")
    p.add_argument("--label-column", default="label", metavar="NAME",
                   help="manifest column with the classes: integers 0..K-1 or names (default 'label')")
    p.add_argument("--epochs", type=int, default=30, help="passes over the training split (default 30)")
    p.add_argument("--batch", type=int, default=8, help="volumes per step (default 8)")
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate, decayed to 0 by a cosine (default 1e-3)")
    p.add_argument("--weight-decay", type=float, default=1e-4, help="AdamW weight decay (default 1e-4)")
    p.add_argument("--width", type=int, default=16, help="channels of the first layer; doubles per stage (default 16)")
    p.add_argument("--dropout", type=float, default=0.3, help="dropout before the last layer (default 0.3)")
    p.add_argument("--size", type=int, default=None, metavar="S",
                   help=f"classifier input: volumes resized to S³ voxels (default: the data's size, at most {DEFAULT_MAX_SIZE})")
    p.add_argument("--augment", action="store_true",
                   help="random shifts of up to S/16 voxels and ±2%% intensity jitter during training")
    p.add_argument("--flip-lr", action="store_true",
                   help="also flip left-right at random; mirrors anatomy (heart on the right in chest CT), "
                        "so only for labels that do not depend on laterality")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial weights, batch order and augmentation (default 0)")
    p.add_argument("--split-seed", type=int, default=0, help="seed of the train/val/test split, as medgen train's (default 0)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto = cuda if available (default)")
    p.add_argument("--workers", type=int, default=0, help="data loader worker processes (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import datetime
    from pathlib import Path

    from torch.utils.data import Subset

    from medgen.core.version import __version__
    from medgen.core.device import resolve_device
    from medgen.training.runconfig import RunConfig
    from medgen.data.dataset import VolumeDataset, load_manifest
    from medgen.core.errors import UsageError
    from medgen.families.classifier.network import INFO_FILE, WEIGHTS_FILE, save_classifier
    from medgen.families.classifier.train import evaluate_classifier, train_classifier

    for name in ("epochs", "batch", "width"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name} {getattr(args, name)}: need at least 1")
    if args.lr <= 0 or args.weight_decay < 0 or not 0 <= args.dropout < 1 or args.workers < 0:
        raise UsageError("--lr must be > 0, --weight-decay ≥ 0, --dropout in [0, 1) and --workers ≥ 0")
    device = resolve_device(args.device)

    manifest = Path(args.data) / "manifest.csv"
    everything = VolumeDataset(args.data, split="all", label_column=args.label_column, keys=("image",))
    if everything.label_column is None:
        columns = ", ".join(load_manifest(args.data)[0])
        raise UsageError(f"{manifest}: no column {args.label_column!r} to classify (columns: {columns}); pass --label-column")
    present = sorted({v for v in everything.labels if v >= 0})
    if len(present) < 2:
        raise UsageError(f"{manifest}: column {args.label_column!r} holds {len(present)} class(es); a classifier needs at least 2")
    num_classes = everything.num_classes
    classes = everything.classes or [str(k) for k in range(num_classes)]
    size = args.size or min(everything.size or DEFAULT_MAX_SIZE, DEFAULT_MAX_SIZE)
    if size < 8:
        raise UsageError(f"--size {size}: need at least 8 voxels per side")

    fractions = tuple(RunConfig.split_fractions)  # medgen train's split, so both see the same test volumes
    splits, notes = {}, []
    for split in ("train", "val", "test"):
        ds = VolumeDataset(args.data, split=split, seed=args.split_seed, fractions=fractions, label_column=args.label_column,
                           keys=("image",))
        keep = [i for i, v in enumerate(ds.labels) if v >= 0]
        if len(keep) < len(ds):
            notes.append(f"{split}: {len(ds) - len(keep)} volume(s) without a label left out")
        splits[split] = Subset(ds, keep)
    train_labels = {splits["train"].dataset.labels[j] for j in splits["train"].indices}
    if len(train_labels) < 2:
        raise UsageError(f"{manifest}: the train split (seed {args.split_seed}) holds {len(train_labels)} class(es); need at least 2")
    missing = [classes[k] for k in present if k not in train_labels]
    if missing:
        notes.append(f"classes absent from the train split: {', '.join(missing)}")
    if len(splits["val"]) == 0:
        notes.append("empty validation split: the last epoch is kept")
    for note in notes:
        print(f"note: {note}")

    _replace_classifier_run(Path(args.out))
    result = train_classifier(
        splits["train"], splits["val"], num_classes, size, width=args.width, dropout=args.dropout, epochs=args.epochs,
        batch_size=args.batch, lr=args.lr, weight_decay=args.weight_decay, seed=args.seed, augment=args.augment,
        flip_lr=args.flip_lr, device=device, workers=args.workers, progress=not args.no_progress,
        run_dir=Path(args.out), data=str(args.data),
    )
    test = evaluate_classifier(result.model, splits["test"], batch_size=args.batch, device=device, workers=args.workers)
    info = {
        "medgen_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "data": str(args.data),
        "label_column": args.label_column,
        "classes": classes,
        "input": "volumes in [-1, 1] (medgen convention), resized to in_size³ (area averaging when shrinking)",
        "split": {"seed": args.split_seed, "fractions": list(fractions),
                  "n_train": len(splits["train"]), "n_val": len(splits["val"]), "n_test": len(splits["test"])},
        "training": {"epochs": args.epochs, "batch": args.batch, "lr": args.lr, "weight_decay": args.weight_decay,
                     "seed": args.seed, "augment": args.augment, "flip_lr": args.flip_lr, "best_epoch": result.best_epoch},
        "val_accuracy": result.val_accuracy,
        "test_accuracy": test["accuracy"],
        "test_confusion": test["confusion"],
        "history": result.history,
        "notes": notes,
    }
    out = save_classifier(args.out, result.model, info)

    def pct(x):
        return "-" if x is None else f"{100 * x:.1f} %"

    print(f"classes ({args.label_column}): {', '.join(classes)}; input {size}³; best epoch {result.best_epoch} of {args.epochs}")
    print(f"accuracy: validation {pct(result.val_accuracy)} (n={len(splits['val'])}), test {pct(test['accuracy'])} (n={test['n']})")
    print(f"wrote {out / WEIGHTS_FILE} and {out / INFO_FILE}")
    return 0


def _replace_classifier_run(out) -> None:
    """Remove the training run of an earlier classifier in ``out`` (its folder is being replaced);
    refuse a folder that holds another family's run."""
    import shutil

    from medgen.core.errors import UsageError
    from medgen.training.runconfig import CONFIG_NAME, RunConfig

    if not (out / CONFIG_NAME).is_file():
        return
    family = RunConfig.load(out).family
    if family != "classifier":
        raise UsageError(f"{out}: holds a training run of family {family!r}; choose another --out")
    for name in (CONFIG_NAME, "metrics.csv"):
        (out / name).unlink(missing_ok=True)
    for name in ("checkpoints", "tensorboard"):
        shutil.rmtree(out / name, ignore_errors=True)
