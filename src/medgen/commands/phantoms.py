"""``medgen phantoms``: write a built-in phantom data set (NIfTI volumes + manifest.csv).

Example::

    medgen phantoms --kind thorax-ct --n 8 --size 64 --seed 0 --out phantoms/
    medgen phantoms --kind brain-mri --n 8 --shape 64,64,40 --spacing 0.8,0.8,2.5 --out brains/
    medgen preprocess phantoms/ data/ --modality ct --size 64
    # two domains: unpaired training subjects, then held-out true pairs
    medgen phantoms --kind thorax-ct --n 64 --seed 0 --domain A --out ct-a/
    medgen phantoms --kind thorax-ct --n 64 --seed 1 --domain B --out ct-b/
    medgen phantoms --kind thorax-ct --n 16 --seed 2 --domain both --out ct-pairs/
    # anomaly detection: lesion-free training subjects, then a test set where half the volumes have lesions
    medgen phantoms --kind thorax-ct --n 64 --seed 0 --normal --out ct-normal/
    medgen phantoms --kind thorax-ct --n 32 --seed 1 --lesions nodule,emphysema,mass --out ct-lesions/
    medgen phantoms --kind brain-mri --n 32 --seed 1 --lesions wmh,tumour --abnormal-fraction 0.3 --out mr-lesions/
    # registration and disease progression: displacement to the template, baseline + follow-up
    medgen phantoms --kind brain-mri --n 16 --seed 3 --displacement --longitudinal --out mr-pairs/
    # counterfactuals: each subject with its healthy self (atrophy 0, same scan and noise)
    medgen phantoms --kind brain-mri --n 16 --seed 4 --healthy --out mr-healthy/
    # breathing: each thorax subject at end-inspiration (the image) and end-expiration, with the true displacement
    medgen phantoms --kind thorax-ct --n 16 --seed 5 --breathing --out ct-breathing/

The work is :func:`medgen.data.phantoms.phantom_set.write_phantom_set` (and the mosaic
:func:`medgen.viz.mosaic.save_phantom_set_mosaic`). Writes ``DIR/<kind>-<i:04d>.nii.gz`` (CT as int16 Hounsfield units, MRI as
float32), the aligned extra volumes ``DIR/tissue/<id>.nii.gz`` (tissue label map) and,
for brain MRI, ``DIR/t2/<id>.nii.gz`` (T2-weighted contrast), ``DIR/manifest.csv`` (id,
file, kind, label, the ground-truth factors, then the extra volumes' paths),
``DIR/phantoms.json`` (how the set was made, the extra volumes and the label classes)
and ``DIR/mosaic.png``. Volume i depends only on (kind, grid, seed, i, nodules, lesions,
abnormal fraction), so ``--n 4`` gives the first four volumes of ``--n 8``.

``--domain`` renders the same subjects in domain A (default; the output is exactly that of
earlier versions), B (thorax: a second scanner; brain: T2-weighted) or both (A as the
image, B as ``DIR/domain_b/<id>.nii.gz``); see :mod:`medgen.data.phantoms.domains`.

``--lesions KIND[,KIND...]`` (thorax-ct: nodule, emphysema, mass; brain-mri: wmh, tumour)
paints lesions into a share ``--abnormal-fraction`` (default 0.5) of the volumes, chosen per
(seed, volume index); every volume then also gets ``DIR/lesion/<id>.nii.gz`` (int16 instance
map: 0 none, k the k-th visible lesion; all zero for a normal volume) and
``DIR/normal/<id>.nii.gz`` (the same volume without lesions; brain also
``DIR/normal_t2/``), and the manifest the columns ``abnormal``, ``lesion_count``,
``lesion_ml`` and ``lesions`` (a JSON list: label, kind, centre x, y, z in voxels,
diameter_mm, voxels, ml, visible). Outside the lesion map the image equals ``normal`` voxel
for voxel. ``--normal`` marks a lesion-free set for training (the manifest columns at 0,
no lesion volumes); it takes neither --lesions nor --nodules. See
:mod:`medgen.data.phantoms.lesions`.

``--displacement`` (brain-mri) writes ``DIR/disp_x/``, ``disp_y/``, ``disp_z/`` (float32, mm): voxel
(i, j, k) of the image (affine A) was sampled from the MNI152 template point
``A (i, j, k, 1) + disp[i, j, k]``; :func:`medgen.data.phantoms.deformation.true_displacement` composes
two subjects' fields into the true registration. ``medgen preprocess`` does not carry them.
``--longitudinal`` (brain-mri, not with --lesions) writes each subject's follow-up after
``interval_years`` (1-5) with more atrophy as ``DIR/followup/`` and ``DIR/followup_tissue/`` (and
``DIR/followup_t2/`` where the set has t2), and the manifest columns ``interval_years``,
``atrophy_rate_per_year``, ``atrophy_followup``, ``label_followup`` and ``*_volume_ml_followup``.
``--healthy`` (brain-mri, not with --lesions) writes each subject's healthy self, the same subject and
scan (the same noise realisation included) at atrophy 0, as ``DIR/healthy/`` and ``DIR/healthy_tissue/``
(and ``DIR/healthy_t2/`` where the set has t2), and the manifest columns ``*_volume_ml_healthy``: image
minus healthy is the atrophy's effect alone, exactly 0 where the tissue fractions are unchanged. See
:mod:`medgen.data.phantoms.deformation` and :mod:`medgen.data.phantoms.brain_mri`.

``--breathing`` (thorax-ct, not with --lesions) writes each subject at end-expiration as ``DIR/expiration/``
(int16 HU, in the image's domain) and ``DIR/expiration_tissue/`` (the image is end-inspiration), and the true
displacement between them as ``DIR/breath_x/``, ``breath_y/``, ``breath_z/`` (float32, mm along the world axes):
``expiration(p) = image(p + u(p))``, the convention of ``medgen register`` with MOVING the image and FIXED the
expiration (in voxels: u / spacing). The diaphragm rises by ``breathing_cc_mm`` (10-20 mm), the anterior chest
wall moves in by ``breathing_ap_mm`` (2-6 mm), the spine stays; manifest columns ``breathing_cc_mm``,
``breathing_ap_mm``, ``lung_volume_ml_expiration``. ``medgen preprocess`` carries the expiration volumes, not the
displacement. See :mod:`medgen.data.phantoms.thorax_ct`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

_KINDS = ("thorax-ct", "brain-mri")  # mirrors medgen.data.phantoms.phantom_set.KIND_NAMES (kept light for --help)
# mirrors medgen.data.phantoms.lesions (kept light for --help; a test checks they agree)
_LESIONS_HELP = (
    "paint lesions with a voxel ground truth into a share of the volumes (see --abnormal-fraction), for anomaly "
    "detection; kinds, comma-separated: thorax-ct: nodule (1-3 solid nodules, 3-30 mm), emphysema (1-2 bullae, "
    "20-50 mm, about -985 HU), mass (one soft-tissue mass, 30-60 mm, lung or mediastinum); brain-mri: wmh "
    "(2-8 white-matter hyperintensities, 3-15 mm: T2 bright, T1 dark), tumour (20-50 mm: enhancing rim, necrotic "
    "core, often oedema). Each abnormal volume gets a random non-empty subset of the kinds. Every volume also gets "
    "DIR/lesion/ (instance map: 0 none, k the k-th lesion) and DIR/normal/ (the volume without lesions; brain "
    "also DIR/normal_t2/), and the manifest abnormal, lesion_count, lesion_ml and lesions (JSON) columns. "
    "Lesions too small for the grid (no voxel half covered) are not painted and listed as not visible"
)
# mirrors medgen.data.phantoms.domains.THORAX_B (kept light for --help; a test checks they agree)
_DOMAIN_HELP = (
    "which rendering of the same subjects to write: A (default; thorax-ct: the first scanner, "
    "brain-mri: T1-weighted), B (thorax-ct: a second scanner: a smoother kernel, i.e. an extra in-plane "
    "Gaussian blur of 3 mm FWHM, 5 mm thick slices, noise 8 HU, and calibration HU' = 1.04*HU + 40, "
    "i.e. +40 HU at water, air unchanged; brain-mri: T2-weighted), or both (A as the image and B as the "
    "aligned extra volume domain_b: true pairs for scoring translation). Volume i of a --seed is the same "
    "subject in every domain; for disjoint subjects use other seeds (e.g. A --seed 0, B --seed 1, "
    "both --seed 2)"
)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "phantoms",
        help="write a built-in phantom data set (thorax CT or brain MRI) with known ground truth",
        description=(
            "Write synthetic volumes with known anatomy as NIfTI files plus manifest.csv "
            "(ground-truth factors and a 0-3 label), ready for `medgen preprocess`. Each volume comes with "
            "an aligned tissue label map (DIR/tissue/) and, for brain-mri, a T2-weighted contrast of the "
            "same anatomy (DIR/t2/); phantoms.json lists them with the label classes. --domain B renders "
            "the same subjects on a second scanner (thorax-ct) or in T2 contrast (brain-mri); --domain both "
            "adds that rendering as DIR/domain_b/ next to the default one. For anomaly detection, --lesions "
            "paints lesions into a share of the volumes with a voxel instance map (DIR/lesion/) and the "
            "lesion-free counterpart (DIR/normal/), and --normal marks a lesion-free training set. For "
            "registration and disease progression (brain-mri), --displacement writes the true displacement to "
            "the template (DIR/disp_x/, disp_y/, disp_z/, mm) and --longitudinal a follow-up scan of each "
            "subject with more atrophy (DIR/followup/, DIR/followup_tissue/); --healthy writes each subject's "
            "healthy self, the same scan at atrophy 0 (DIR/healthy/, DIR/healthy_tissue/). For thorax-ct, "
            "--breathing writes each subject at end-expiration (DIR/expiration/, DIR/expiration_tissue/; the image "
            "is end-inspiration) and the true displacement between the two (DIR/breath_x/, breath_y/, breath_z/, mm)."
        ),
    )
    p.add_argument("--kind", required=True, help=f"phantom kind: {' or '.join(_KINDS)}")
    p.add_argument("--n", type=int, default=8, help="number of volumes (default 8)")
    p.add_argument("--size", type=int, default=None,
                   help="voxels per side of a cube, any integer in 16..512 (default 64)")
    p.add_argument("--shape", default=None, metavar="X,Y,Z",
                   help="a non-cubic grid instead of --size, e.g. 64,64,40 (each 16..512)")
    p.add_argument("--spacing", default=None, metavar="MM[,MM,MM]",
                   help="voxel size in mm, one value or one per axis, e.g. 0.8,0.8,2.5 (default: isotropic, the "
                        "largest axis spanning the kind's field of view, 400 mm thorax, 200 mm brain); the anatomy "
                        "is defined in mm, so it is sampled on the requested grid")
    p.add_argument("--seed", type=int, default=0, help="data-set seed; volume i is the same for any --n (default 0)")
    p.add_argument("--out", required=True, type=Path, help="output folder (created; must be empty or a phantom set)")
    p.add_argument("--nodules", action="store_true", help="thorax-ct only: insert 0-3 lung nodules and record them")
    p.add_argument("--domain", default="A", metavar="A|B|both", help=_DOMAIN_HELP)
    p.add_argument("--lesions", default=None, metavar="KIND[,KIND...]", help=_LESIONS_HELP)
    p.add_argument("--abnormal-fraction", type=float, default=None, metavar="P",
                   help="with --lesions: share of the volumes that get lesions, 0..1 (default 0.5); which ones "
                        "is decided per (seed, volume index), so volume i is the same for any --n")
    p.add_argument("--normal", action="store_true",
                   help="lesion-free volumes for training an anomaly detector: the manifest gets abnormal, "
                        "lesion_count, lesion_ml and lesions columns at 0 (no --lesions or --nodules); use another "
                        "--seed than the test set's, whose subjects are otherwise the same")
    p.add_argument("--displacement", action="store_true",
                   help="brain-mri only: also write the true displacement from each voxel to the MNI152 template "
                        "point it was sampled from, in mm, as DIR/disp_x/, disp_y/, disp_z/ (float32; template "
                        "point = affine * (i,j,k,1) + disp); compose two subjects' fields with "
                        "medgen.data.phantoms.deformation.true_displacement. Not carried by medgen preprocess")
    p.add_argument("--longitudinal", action="store_true",
                   help="brain-mri only, not with --lesions: also write each subject's follow-up scan after "
                        "interval_years (uniform 1-5) with more atrophy (the atrophy factor grows at a subject-"
                        "specific 0.02-0.08 per year: cortex thinner by 2.5 mm and ventricles' boundary 5 mm "
                        "further out per unit) and new noise, as DIR/followup/ and DIR/followup_tissue/ (and "
                        "DIR/followup_t2/), with manifest columns interval_years, atrophy_rate_per_year, "
                        "atrophy_followup, label_followup and *_volume_ml_followup")
    p.add_argument("--healthy", action="store_true",
                   help="brain-mri only, not with --lesions: also write each subject's healthy self, the same "
                        "subject and scan (deformation, bias field, contrast, gain and the same noise realisation) "
                        "at atrophy 0, as DIR/healthy/ and DIR/healthy_tissue/ (and DIR/healthy_t2/), with manifest "
                        "columns *_volume_ml_healthy: image - healthy is the effect of atrophy alone, exactly 0 "
                        "where the tissue fractions are unchanged")
    p.add_argument("--breathing", action="store_true",
                   help="thorax-ct only, not with --lesions: also write each subject at end-expiration (the image "
                        "is end-inspiration) as DIR/expiration/ (int16 HU) and DIR/expiration_tissue/, made by a "
                        "known smooth field: the diaphragm and lung bases rise by breathing_cc_mm (uniform 10-20) "
                        "from 0 at the apices, the anterior chest wall moves in by breathing_ap_mm (2-6), the "
                        "spine stays; new noise. The field is written as DIR/breath_x/, breath_y/, breath_z/ "
                        "(float32, mm, world axes): expiration(p) = image(p + u(p)), as medgen register's "
                        "displacement with MOVING the image and FIXED the expiration (voxels: u / spacing). "
                        "Manifest columns breathing_cc_mm, breathing_ap_mm, lung_volume_ml_expiration. "
                        "medgen preprocess carries the expiration volumes, not the field")
    p.add_argument("--workers", type=int, default=1, help="parallel worker processes (default 1)")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty folder that is not a phantom set")
    p.set_defaults(func=run)


def _numbers(text: str, option: str, what: str, cast: type) -> tuple:
    """``"64,64,40"`` → (64, 64, 40); UsageError naming ``option`` for anything else."""
    from medgen.core.errors import UsageError

    try:
        values = tuple(cast(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) not in (1, 3) or (option == "--shape" and len(values) != 3):
        raise UsageError(f"{option} must be {what}, got {text!r}")
    return values if len(values) == 3 else values[0]


def run(args: argparse.Namespace) -> int:
    from medgen.core.errors import UsageError
    from medgen.data.phantoms.phantom_set import describe_grid, write_phantom_set
    from medgen.viz.mosaic import save_phantom_set_mosaic

    if args.shape is not None and args.size is not None:
        raise UsageError("--size and --shape both give the grid; pass one of them")
    size = 64 if args.size is None else args.size
    if args.shape is not None:
        size = _numbers(args.shape, "--shape", "three integers X,Y,Z (e.g. 64,64,40)", int)
    spacing = None
    if args.spacing is not None:
        spacing = _numbers(args.spacing, "--spacing", "one or three voxel sizes in mm (e.g. 1.5 or 0.8,0.8,2.5)", float)
    lesions: tuple[str, ...] = ()
    if args.lesions is not None:
        lesions = tuple(name.strip() for name in args.lesions.split(",") if name.strip())
        if not lesions:
            raise UsageError(f"--lesions needs at least one lesion kind, got {args.lesions!r}")
    rows = write_phantom_set(args.kind, args.n, size, args.seed, args.out, nodules=args.nodules,
                             workers=args.workers, overwrite=args.overwrite, spacing=spacing, domain=args.domain,
                             lesions=lesions, abnormal_fraction=args.abnormal_fraction, normal=args.normal,
                             displacement=args.displacement, longitudinal=args.longitudinal, healthy=args.healthy,
                             breathing=args.breathing)
    save_phantom_set_mosaic(args.out, rows, args.kind)
    domain = "" if args.domain == "A" else f", domain {args.domain}"
    if lesions:
        domain += f", {sum(int(row['abnormal']) for row in rows)} with lesions"
    elif args.normal:
        domain += ", lesion-free"
    if args.longitudinal:
        domain += ", with follow-ups"
    if args.healthy:
        domain += ", with healthy selves"
    if args.displacement:
        domain += ", with displacement fields"
    if args.breathing:
        domain += ", with expiration scans"
    print(f"wrote {args.n} {args.kind} phantoms ({describe_grid(args.kind, size, spacing)}{domain}) to {args.out}")
    return 0
