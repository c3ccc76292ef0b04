"""``medgen preprocess IN_DIR OUT_DIR``: make a training-ready data set from CT/MRI volumes."""

from __future__ import annotations

import argparse
import os
import sys

HELP = "normalise, trim and resize a folder of CT/MRI volumes into a training-ready data set"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "preprocess",
        help=HELP,
        description=(
            "Read every volume in IN_DIR (NIfTI .nii/.nii.gz, NRRD, MHA/MHD, .npy, or sub-folders "
            "holding a DICOM series), reorient to RAS+, map intensities to [-1, 1], drop blank axial "
            "slices and fit to SIZE³. Writes OUT_DIR/volumes/<id>.npy (float16), OUT_DIR/manifest.csv "
            "and OUT_DIR/preprocess.json. Other voxel-aligned volumes of each subject (label maps, other "
            "contrasts; see --volume) get exactly the image's geometry. A rerun skips finished volumes, "
            "so an interrupted run resumes. Files that cannot be read are skipped and listed at the end."
        ),
        epilog="Exit codes: 0 all volumes written, 1 some inputs failed (the others are written), 2 usage error.",
    )
    p.add_argument("in_dir", metavar="IN_DIR", help="folder holding the input volumes (not searched recursively)")
    p.add_argument("out_dir", metavar="OUT_DIR", help="output folder (created if needed)")
    p.add_argument("--modality", required=True, choices=["ct", "mri"],
                   help="ct: fixed Hounsfield-unit window; mri: robust percentile normalisation")
    p.add_argument("--size", type=int, required=True, metavar="S",
                   help="output edge length in voxels, a power of two >= 16 (e.g. 64, 128, 256)")
    p.add_argument("--spacing", type=float, default=None, metavar="MM",
                   help="resample to this isotropic voxel size in mm first (default: keep the input grid)")
    p.add_argument("--fit", default="resize-keep-aspect", choices=["resize-keep-aspect", "resize", "crop-pad"],
                   help="how to reach S^3: resize-keep-aspect (default; largest physical extent fills S, "
                        "the rest padded with background), resize (anisotropic, as the HA-GAN authors), "
                        "crop-pad (no scaling)")
    p.add_argument("--hu-min", type=float, default=-1024.0, help="CT: HU mapped to -1 (default -1024)")
    p.add_argument("--hu-max", type=float, default=600.0, help="CT: HU mapped to +1 (default 600)")
    p.add_argument("--percentiles", type=float, nargs=2, default=(0.5, 99.5), metavar=("LOW", "HIGH"),
                   help="MRI: percentiles of nonzero voxels mapped to -1 and +1 (default 0.5 99.5)")
    p.add_argument("--keep-blank-slices", action="store_true",
                   help="do not drop all-background axial slices at the bottom and top")
    p.add_argument("--blank-tolerance", type=float, default=0.01,
                   help="a slice is blank if no voxel is further than this from -1 after normalisation "
                        "(default 0.01, i.e. 8 HU in the default CT window)")
    p.add_argument("--labels", default=None, metavar="CSV",
                   help="CSV with an 'id' column whose other columns (class label, covariates) are joined "
                        "into the manifest (default: IN_DIR/manifest.csv if it has an 'id' column)")
    p.add_argument("--volume", action="append", default=[], metavar="NAME[=COLUMN]:KIND",
                   help="carry another voxel-aligned volume of each subject (KIND intensity or label) whose "
                        "file is listed in column COLUMN (default NAME) of IN_DIR/manifest.csv, relative to "
                        "IN_DIR; it gets exactly the image's geometry (labels: nearest neighbour, never "
                        "normalised) and is stored as OUT_DIR/NAMEs/<id>.npy, manifest column NAME. Volumes "
                        "declared in IN_DIR/phantoms.json (medgen phantoms: tissue, t2) are carried without "
                        "this option. Repeatable.")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), metavar="N",
                   help="parallel processes (default: min(4, CPU count))")
    p.add_argument("--overwrite", action="store_true",
                   help="discard volumes already in OUT_DIR and preprocess everything again")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from medgen.data.preprocess import PreprocessSettings, preprocess_folder
    from medgen.core.errors import EXIT_OK, EXIT_PARTIAL, InputError

    settings = PreprocessSettings(
        modality=args.modality,
        size=args.size,
        spacing=args.spacing,
        hu_min=args.hu_min,
        hu_max=args.hu_max,
        percentiles=tuple(args.percentiles),
        drop_blank_slices=not args.keep_blank_slices,
        blank_tolerance=args.blank_tolerance,
        fit=args.fit,
    )
    summary = preprocess_folder(
        args.in_dir,
        args.out_dir,
        settings,
        workers=args.workers,
        labels=args.labels,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        volumes=args.volume,
    )
    print(summary.format(), file=sys.stderr)
    if summary.manifest is None:
        raise InputError(f"{args.in_dir}: no readable input volumes ({len(summary.failed)} failed, listed above)")
    n_rows = len(summary.written) + len(summary.skipped)
    print(f"wrote {summary.manifest} ({n_rows} volumes)")
    return EXIT_PARTIAL if summary.failed else EXIT_OK
