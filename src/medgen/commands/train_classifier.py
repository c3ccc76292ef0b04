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

from medgen.families.classifier.fit import DEFAULT_MAX_SIZE


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
    from medgen.core.device import resolve_device
    from medgen.core.errors import UsageError
    from medgen.families.classifier.fit import train_on_folder
    from medgen.families.classifier.network import INFO_FILE, WEIGHTS_FILE

    for name in ("epochs", "batch", "width"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name} {getattr(args, name)}: need at least 1")
    if args.lr <= 0 or args.weight_decay < 0 or not 0 <= args.dropout < 1 or args.workers < 0:
        raise UsageError("--lr must be > 0, --weight-decay ≥ 0, --dropout in [0, 1) and --workers ≥ 0")
    device = resolve_device(args.device)

    info = train_on_folder(
        args.data, args.out, label_column=args.label_column, epochs=args.epochs, batch=args.batch, lr=args.lr,
        weight_decay=args.weight_decay, width=args.width, dropout=args.dropout, size=args.size, augment=args.augment,
        flip_lr=args.flip_lr, seed=args.seed, split_seed=args.split_seed, device=device, workers=args.workers,
        progress=not args.no_progress,
    )
    out = info["folder"]

    def pct(x):
        return "-" if x is None else f"{100 * x:.1f} %"

    print(f"classes ({args.label_column}): {', '.join(info['classes'])}; input {info['in_size']}³; "
          f"best epoch {info['training']['best_epoch']} of {args.epochs}")
    print(f"accuracy: validation {pct(info['val_accuracy'])} (n={info['split']['n_val']}), "
          f"test {pct(info['test_accuracy'])} (n={info['split']['n_test']})")
    print(f"wrote {out / WEIGHTS_FILE} and {out / INFO_FILE}")
    return 0
