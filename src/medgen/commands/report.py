"""``medgen report``: one self-contained HTML page of a training run.

    medgen report runs/thorax64                        # → runs/thorax64/report.html
    medgen report demo/run --metrics demo/metrics.json --out report.html
"""

from __future__ import annotations

import argparse

HELP = "write one self-contained HTML page of a training run (config, curves, samples, metrics, figures)"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "report",
        help=HELP,
        description=(
            "Write an HTML report of a training run with every image embedded: configuration, training "
            "curves, real vs generated volumes in three planes, the latest training samples, the metrics "
            "of `medgen evaluate` with their caveats, and its figures (anatomy histograms, nearest "
            "training pairs, feature embedding)."
        ),
        epilog="Exit codes: 0 success, 2 RUN is not a training run folder or the metrics file is unreadable.",
    )
    p.add_argument("run", metavar="RUN", help="training run folder (written by `medgen train`)")
    p.add_argument("--out", default=None, metavar="FILE", help="HTML file to write (default RUN/report.html)")
    p.add_argument("--metrics", default=None, metavar="METRICS_JSON",
                   help="JSON written by `medgen evaluate --out` (default RUN/../metrics.json if it exists)")
    p.add_argument("--baseline", default=None, metavar="METRICS_JSON",
                   help="`medgen evaluate` JSON of a baseline, e.g. the untrained generator "
                        "(`medgen generate RUN --untrained`): shown side by side with --metrics")
    p.add_argument("--traversals", default=None, metavar="PNG",
                   help="latent traversal figure (`medgen experiment latent`; default: RUN/latent_traversals.png "
                        "if it exists)")
    p.add_argument("--n-samples", type=int, default=4, metavar="N",
                   help="volumes to generate (and real volumes to show) in the mosaic (default 4)")
    p.add_argument("--seed", type=int, default=0, help="latent seed of the generated volumes (default 0)")
    p.add_argument("--no-samples", action="store_true", help="do not load the model or generate volumes")
    p.add_argument("--device", default="cpu", help="device for generating: cpu, cuda or auto (default cpu)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from medgen.core.errors import UsageError
    from medgen.report import default_metrics_path, write_report

    if args.n_samples < 1:
        raise UsageError(f"--n-samples {args.n_samples}: need at least 1")
    out = Path(args.out) if args.out is not None else Path(args.run) / "report.html"
    metrics = args.metrics if args.metrics is not None else default_metrics_path(args.run)
    write_report(args.run, out, metrics=metrics, n_samples=args.n_samples, seed=args.seed,
                 samples=not args.no_samples, device=args.device, baseline=args.baseline,
                 traversals=args.traversals)
    print(f"wrote {out}")
    return 0
