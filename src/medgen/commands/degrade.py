"""``medgen degrade IN_DATA OUT_DATA --kind K``: simulate paired data (degraded input, clean target) from a data set.

Examples::

    medgen degrade data/ct64 data/ct64-quarter-dose --kind lowdose --param dose=0.25
    medgen degrade data/ct64 data/ct64-gap4 --kind slices --param factor=4
    medgen degrade data/mri64 data/mri64-r4 --kind kspace --param acceleration=4 --param center_fraction=0.08
    medgen degrade data/ct64 data/ct64-dose --kind lowdose --param dose=0.1:0.5   # a dose drawn per subject
    medgen degrade --list                                                         # every kind and parameter

The work is :func:`medgen.data.degraded_set.write_degraded_set`; the degradations are
:mod:`medgen.data.degradations`, one per module.
"""

from __future__ import annotations

import argparse

# Mirrors medgen.data.degradations.DEGRADATIONS (kept light for `medgen --help`; a test checks they agree).
KINDS = ("slices", "kspace", "lowdose", "noise", "drr", "motion", "bias", "ghosting", "inpaint", "outpaint")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "degrade",
        help="simulate paired data: degrade every scan of a data set (slice gap, k-space, low dose, artefacts, masks, DRR)",
        description=(
            "Write OUT_DATA: the preprocessed data set IN_DATA whose subjects gain a degraded copy of their image "
            "(volume 'degraded', plus 'mask' for inpaint/outpaint, 'drr_pa' and 'drr_lateral' for drr), "
            "voxel-aligned with 'image', which stays the clean target. Parameters are physical (mm, dose fraction, "
            "photons, acceleration); each pair's values are recorded in the manifest as <kind>_<parameter>. "
            "A pair depends only on (kind, parameters, seed, subject id); rerunning an interrupted command "
            "continues it."
        ),
        epilog="Exit codes: 0 written, 2 usage or input error, 130 interrupted (rerun to continue). "
               "`medgen degrade --list` shows every kind's parameters with their units and defaults.",
    )
    p.add_argument("in_dir", metavar="IN_DATA", nargs="?", help="a data set written by `medgen preprocess`")
    p.add_argument("out_dir", metavar="OUT_DATA", nargs="?", help="the paired data set to write (a new folder)")
    p.add_argument("--kind", choices=KINDS, help="which degradation")
    p.add_argument("--param", "-p", action="append", default=[], metavar="NAME=VALUE",
                   help="a parameter of the kind, repeatable; NAME=LOW:HIGH draws it per subject (uniform)")
    p.add_argument("--seed", type=int, default=0, help="seed of the parameter draws and noise (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT_DATA if it holds another command's output")
    p.add_argument("--list", action="store_true", help="list the kinds and their parameters, then exit")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from medgen.core.errors import UsageError
    from medgen.data import degradations

    if args.list:
        print("\n\n".join(d.help_text() for d in degradations.DEGRADATIONS.values()))
        return 0
    if not (args.in_dir and args.out_dir and args.kind):
        raise UsageError("need IN_DATA, OUT_DATA and --kind (see `medgen degrade --help`, `medgen degrade --list`)")
    from medgen.data.degraded_set import write_degraded_set

    summary = write_degraded_set(args.in_dir, args.out_dir, args.kind, args.param, seed=args.seed,
                                 overwrite=args.overwrite, progress=not args.no_progress)
    n = len(summary.written) + len(summary.kept)
    made = ", ".join(repr(v) for v in degradations.get(args.kind).volumes)
    print(f"wrote {n} {args.kind} pairs to {args.out_dir} (new volumes {made}; the clean target stays 'image')")
    return 0
