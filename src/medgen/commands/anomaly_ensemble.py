"""``medgen anomaly-ensemble OUT OUT [OUT ...] --out DIR``: several anomaly detectors as one score.

Examples::

    medgen anomaly runs/vae64 data/test64 --out an-vae --reference data/normal64
    medgen anomaly runs/inpaint64 data/test64 --out an-inpaint --reference data/normal64 --box 4
    medgen anomaly-ensemble an-vae an-inpaint --out an-ensemble

The work is :mod:`medgen.inference.anomaly_ensemble`.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "anomaly-ensemble",
        help="one anomaly score from several detectors, each calibrated against normal volumes",
        description=(
            "Combine the output folders of `medgen anomaly RUN DATA --out OUT --reference NORMAL_DATA`, one "
            "per detector, on the same volumes: each volume's score is the mean of the detectors' "
            "score_blob_excess_z (how far its brightest compact residual spot exceeds what normal volumes "
            "show, in standard deviations of the excess normal volumes reach under that detector, so that "
            "detectors of different residual scales count alike). Writes DIR/scores.csv (score and each "
            "member's z_k), DIR/members.json and, with ground truth, DIR/metrics.json (volume-level "
            "AUROC/AUPRC of the ensemble and of each member)."
        ),
        epilog="Exit codes: 0 written, 2 usage or input error (a folder without calibrated scores, other volumes).",
    )
    p.add_argument("members", nargs="+", metavar="OUT",
                   help="output folders of `medgen anomaly ... --reference`, at least two")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from medgen.inference.anomaly_ensemble import anomaly_ensemble

    out = Path(args.out)
    rows, metrics = anomaly_ensemble([Path(m) for m in args.members], out)
    shown = ""
    if metrics and metrics.get("auroc_score") is not None:
        members = ", ".join(f"{metrics[f'auroc_z_{k + 1}']:.3f}" for k in range(len(args.members))
                            if metrics.get(f"auroc_z_{k + 1}") is not None)
        shown = f"; against the ground truth AUROC {metrics['auroc_score']:.3f} (members {members})"
    print(f"wrote {out}/scores.csv: {len(rows)} volume(s), {len(args.members)} detectors{shown}")
    return 0
