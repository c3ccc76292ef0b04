"""``medgen experiment latent``: latent directions that change lung and bone volume (the paper's Figure 5).

The main model (a CT run) generates ``--n-codes`` volumes from codes z ~ N(0, I).
Each is converted to Hounsfield units with the training data's CT window and
measured with the HU protocol of :func:`medgen.metrics.anatomy.ct_anatomy`:
lung fraction (lung / body volume) and bone fraction (bone / body volume).

For each factor a ridge regression ``factor ≈ w·z + b`` is fitted on 75 % of the
codes (penalty chosen by leave-one-out cross-validation on those codes) and
scored on the other 25 %: the held-out R² says whether the direction is real
(near 0 or negative: the model has not learned a linear handle on that factor).
The direction is d = w / |w|.

Traversals: for ``--n-bases`` fresh base codes z0 (never among the fitted ones),
the model generates z(α) = z0 + α·d for ``--steps`` values of α evenly spaced
in [-max, max] (``--max-alpha``, default 3). Because z ~ N(0, I) and |d| = 1,
α is in units of the latent standard deviation along d. Every volume is
measured again, so the table reports what the generator actually does, not what
the linear fit predicts.

Writes ``latent.csv``/``latent.md`` (per direction and α: mean and std over the
base codes of the measured lung and bone fractions; the held-out R² of the fit
and the Spearman rank correlation between α and the measured factor),
``latent_traversals.png`` (one row per direction, slices of the first base code
along α with the measured fractions under each) and ``latent_directions.json``
(the fitted directions, to reuse on other codes).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medgen.core.errors import UsageError
from medgen.experiments.workspace import ExperimentOutput, Workspace

if TYPE_CHECKING:  # pragma: no cover
    from medgen.families.hagan.model import HAGANModel

HELP = "latent directions that change lung and bone volume, with traversals along them (Figure 5)"
DESCRIPTION = __doc__.split("\n\n", 1)[1]

# The factors measured on every volume (keys of ct_anatomy), in table order.
FACTORS: tuple[str, ...] = ("lung_fraction", "bone_fraction")
# The slice plane that shows each factor best: lung height and width in a
# coronal slice; spine, ribs and sternum together in an axial one.
PLANES: dict[str, str] = {"lung_fraction": "coronal", "bone_fraction": "axial"}
FIGURE_NAME = "latent_traversals.png"
DIRECTIONS_NAME = "latent_directions.json"
HELDOUT_FRACTION = 0.25
# Base codes of the traversals are codes BASE_START, BASE_START+1, ... of the seed:
# never among the fitted codes 0 … n_codes-1.
BASE_START = 1_000_000
CT_DISPLAY_WINDOW = (-1000.0, 400.0)  # HU, the grey window of generated-CT mosaics

# Options with a fixed default (left out of the canonical command line when unchanged).
DEFAULTS: dict[str, Any] = {"n_bases": 3, "steps": 7, "max_alpha": 3.0, "batch_size": 4}
# Codes drawn for the fit, per scale (more codes than latent dimensions keeps the fit determined).
N_CODES: dict[str, int] = {"smoke": 16, "demo": 256, "full": 2048}

COLUMNS: tuple[str, ...] = (
    "direction", "alpha", "lung_fraction_mean", "lung_fraction_std", "bone_fraction_mean", "bone_fraction_std",
    "r2_heldout", "spearman",
)


def default_n_codes(scale) -> int:
    """Latent codes drawn for the fit at a :class:`~medgen.experiments.workspace.Scale`."""
    return N_CODES.get(scale.name, 8 * scale.n_samples)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n-codes", type=int, default=None, metavar="N",
                   help="generated volumes the directions are fitted on (default: smoke 16, demo 256, full 2048)")
    p.add_argument("--n-bases", type=int, default=DEFAULTS["n_bases"], metavar="N",
                   help="base codes traversed along each direction (default 3)")
    p.add_argument("--steps", type=int, default=DEFAULTS["steps"], metavar="N",
                   help="values of alpha, evenly spaced in [-max-alpha, max-alpha] (default 7)")
    p.add_argument("--max-alpha", type=float, default=DEFAULTS["max_alpha"], metavar="A",
                   help="largest step along a direction, in latent standard deviations (default 3)")
    p.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"], metavar="B",
                   help="volumes generated at once (default 4)")


# --------------------------------------------------------------------------- the fit


@dataclass
class LinearDirection:
    """A ridge fit ``factor ≈ w·z + b`` over latent codes, and its unit direction.

    ``direction``: d = w / |w| (zeros when the fit is degenerate, see ``note``);
    ``weight_norm``: |w|, the predicted change of the factor per unit step along d
    (one latent standard deviation); ``penalty``: the ridge penalty λ chosen by
    leave-one-out cross-validation on the training codes; ``r2_train``/``r2_heldout``:
    coefficient of determination on the fitted / the held-out codes.
    """

    factor: str
    direction: np.ndarray
    weights: np.ndarray
    intercept: float
    weight_norm: float
    penalty: float
    r2_train: float
    r2_heldout: float
    n_train: int
    n_heldout: int
    note: str = ""

    def summary(self) -> dict[str, Any]:
        return {"factor": self.factor, "r2_heldout": self.r2_heldout, "r2_train": self.r2_train,
                "penalty": self.penalty, "weight_norm": self.weight_norm, "intercept": self.intercept,
                "n_train": self.n_train, "n_heldout": self.n_heldout, "note": self.note}


def fit_direction(z: np.ndarray, y: np.ndarray, *, factor: str = "factor", seed: int = 0,
                  heldout_fraction: float = HELDOUT_FRACTION,
                  penalties: Sequence[float] | None = None) -> LinearDirection:
    """Fit ``y ≈ w·z + b`` by ridge regression and return the unit direction of w.

    ``z``: latent codes [n, latent_dim]; ``y``: the measured factor [n] (non-finite
    values, e.g. a volume without a body, are left out). A random ``heldout_fraction``
    of the codes (drawn from ``seed``) is held out to score the fit. ``penalties``:
    candidate ridge penalties λ (default: 10⁻⁴ … 10 times the number of training
    codes, i.e. from almost ordinary least squares to strong shrinkage), chosen by
    efficient leave-one-out cross-validation on the training codes.
    """
    from sklearn.linear_model import RidgeCV
    from sklearn.metrics import r2_score

    z = np.asarray(z, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if z.ndim != 2 or len(z) != len(y):
        raise ValueError(f"z must be [n, latent_dim] with one y per row, got z {z.shape} and y {y.shape}")
    keep = np.isfinite(y)
    z, y = z[keep], y[keep]
    dim = z.shape[1]
    n_heldout = round(heldout_fraction * len(y))
    n_train = len(y) - n_heldout

    def degenerate(note: str) -> LinearDirection:
        zeros = np.zeros(dim)
        mean = float(y.mean()) if len(y) else math.nan
        return LinearDirection(factor, zeros, zeros, mean, 0.0, math.nan, math.nan, math.nan, n_train, n_heldout, note)

    if n_heldout < 2 or n_train < 2:
        return degenerate(f"{len(y)} volumes with a measurable {factor}: too few to fit and hold out")
    order = np.random.default_rng(seed).permutation(len(y))
    test, train = order[:n_heldout], order[n_heldout:]
    if np.ptp(y[train]) == 0:
        return degenerate(f"{factor} is the same on every fitted volume: no direction changes it")
    grid = np.asarray(penalties if penalties is not None else n_train * np.logspace(-4, 1, 11), dtype=np.float64)
    model = RidgeCV(alphas=grid).fit(z[train], y[train])
    w = np.asarray(model.coef_, dtype=np.float64).reshape(-1)
    norm = float(np.linalg.norm(w))
    if norm == 0.0:
        return degenerate(f"the ridge fit of {factor} has zero weights")
    r2_test = float(r2_score(y[test], model.predict(z[test]))) if np.ptp(y[test]) > 0 else math.nan
    return LinearDirection(
        factor=factor, direction=w / norm, weights=w, intercept=float(model.intercept_), weight_norm=norm,
        penalty=float(model.alpha_), r2_train=float(r2_score(y[train], model.predict(z[train]))),
        r2_heldout=r2_test, n_train=n_train, n_heldout=n_heldout,
    )


def alpha_grid(steps: int, max_alpha: float) -> np.ndarray:
    """``steps`` values of α evenly spaced in [-max_alpha, max_alpha] (float64)."""
    if steps < 2:
        raise UsageError(f"--steps {steps}: need at least 2 values of alpha")
    if not max_alpha > 0 or not math.isfinite(max_alpha):
        raise UsageError(f"--max-alpha {max_alpha}: must be a positive number of latent standard deviations")
    return np.linspace(-max_alpha, max_alpha, steps)


def check_options(n_codes: int, n_bases: int, steps: int, max_alpha: float, batch_size: int, seed: int) -> np.ndarray:
    """Raise UsageError (one line) for unusable settings; return the α grid."""
    if n_codes < 8:
        raise UsageError(f"--n-codes {n_codes}: need at least 8 volumes (75 % to fit, 25 % to check the fit)")
    if n_bases < 1:
        raise UsageError(f"--n-bases {n_bases}: need at least one base code")
    if batch_size < 1:
        raise UsageError(f"--batch-size {batch_size}: need at least 1")
    if seed < 0:
        raise UsageError(f"--seed {seed}: must be >= 0")
    return alpha_grid(steps, max_alpha)


def traversal_codes(bases: np.ndarray, direction: np.ndarray, alphas: np.ndarray) -> np.ndarray:
    """z(α) = z0 + α·d for every base z0 and α: float32 [n_bases, n_steps, latent_dim]."""
    bases = np.asarray(bases, dtype=np.float64)
    d = np.asarray(direction, dtype=np.float64)
    return (bases[:, None, :] + np.asarray(alphas, dtype=np.float64)[None, :, None] * d).astype(np.float32)


def spearman(alphas: np.ndarray, values: np.ndarray) -> tuple[float, float]:
    """Rank correlation between α and a measured factor along traversals.

    ``values``: [n_bases, n_steps]. Returns (pooled, within): ``pooled`` is Spearman's
    ρ over all bases and steps together (``scipy.stats.spearmanr``, NaN values left
    out); ``within`` is the mean over bases of each base's own ρ, free of the
    differences between base codes. NaN where the factor does not vary.
    """
    import warnings

    from scipy.stats import spearmanr

    values = np.asarray(values, dtype=np.float64)
    a = np.broadcast_to(np.asarray(alphas, dtype=np.float64), values.shape)

    def rho(x: np.ndarray, y: np.ndarray) -> float:
        ok = np.isfinite(y)
        if ok.sum() < 3 or np.ptp(y[ok]) == 0 or np.ptp(x[ok]) == 0:
            return math.nan
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return float(spearmanr(x[ok], y[ok]).statistic)

    pooled = rho(a.ravel(), values.ravel())
    per_base = [rho(a[b], values[b]) for b in range(len(values))]
    per_base = [r for r in per_base if math.isfinite(r)]
    return pooled, (float(np.mean(per_base)) if per_base else math.nan)


# --------------------------------------------------------------------------- measuring generated volumes


@dataclass
class Measured:
    """Factors of generated volumes: ``values`` [n, len(FACTORS)] and the kept slices.

    ``slices[i][plane]``: the display-oriented central slice (HU) of volume ``i``
    for each plane, for the volumes asked to be kept.
    """

    values: np.ndarray
    slices: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)


def measure_codes(model: HAGANModel, z: np.ndarray, spacing: Sequence[float], *, labels: np.ndarray | None = None,
                  batch_size: int = 4, keep: Sequence[int] = (), progress: Callable[[int], None] | None = None
                  ) -> Measured:
    """Generate one volume per code, convert it to HU and measure :data:`FACTORS`.

    ``model``: a CT :class:`medgen.families.hagan.model.HAGANModel`; ``z``: codes [n, latent_dim];
    ``spacing``: voxel size in mm of the training volumes (the fractions do not
    depend on it, the ml volumes of ct_anatomy do); ``labels``: class per code
    for a conditional model; ``keep``: indices whose central slices are kept for
    figures; ``progress``: called with the number of volumes just measured.
    Volumes are measured batch by batch and not kept, so memory stays bounded.
    """
    from medgen.metrics.anatomy import ct_anatomy
    from medgen.viz.mosaic import plane_slice

    z = np.asarray(z, dtype=np.float32)
    n = len(z)
    values = np.full((n, len(FACTORS)), np.nan)
    slices: dict[int, dict[str, np.ndarray]] = {}
    keep = {int(i) for i in keep}
    for k in range(0, n, batch_size):
        sl = slice(k, min(n, k + batch_size))
        lab = None if labels is None else labels[sl]
        hu = model.generate(len(z[sl]), z=z[sl], labels=lab, batch_size=batch_size, hu=True)
        for j, vol in enumerate(hu):
            i = k + j
            stats = ct_anatomy(vol, spacing)
            values[i] = [stats[f] for f in FACTORS]
            if i in keep:
                slices[i] = {p: plane_slice(vol, p) for p in ("axial", "coronal", "sagittal")}
        if progress is not None:
            progress(len(hu))
    return Measured(values, slices)


def _labels(model: HAGANModel, n: int) -> np.ndarray | None:
    """Class of each code for a conditional model (code i: class i mod K), None otherwise."""
    k = model.config.num_classes
    return None if k == 0 else np.arange(n, dtype=np.int64) % k


def check_ct(preprocess: dict[str, Any], what: str) -> None:
    """Raise UsageError unless ``preprocess`` says CT: lung and bone are found by Hounsfield units."""
    from medgen.inference.generate import is_ct

    if not is_ct(preprocess):
        modality = (preprocess or {}).get("modality", "unknown")
        raise UsageError(f"{what}: the latent experiment needs a CT model (lung and bone are measured in Hounsfield "
                         f"units); its training data are {modality}")


# --------------------------------------------------------------------------- the whole experiment


def latent_traversals(model: HAGANModel, out_dir: str | Path, n_codes: int = 256, n_bases: int = 3, steps: int = 7,
                      seed: int = 0, progress: bool = True, *, max_alpha: float = 3.0, batch_size: int = 4,
                      dpi: int = 110) -> dict[str, Any]:
    """Find the lung- and bone-volume directions of a CT model's latent space and traverse them.

    ``model``: a loaded CT :class:`medgen.families.hagan.model.HAGANModel` (no data set needed);
    ``out_dir``: where ``latent_traversals.png`` and ``latent_directions.json`` go;
    ``n_codes``: generated volumes the directions are fitted on (75 % fit, 25 % held
    out); ``n_bases``: base codes traversed; ``steps``/``max_alpha``: the α grid, in
    latent standard deviations; ``seed``: latent codes (fit codes 0 … n_codes-1,
    base codes from :data:`BASE_START`) and the train/held-out split.

    Returns ``rows`` (the table, columns :data:`COLUMNS`), ``directions`` (per factor:
    the fit summary, Spearman ρ pooled and within bases, cosine with the other
    direction), ``alphas``, ``codes`` (mean/std of the factors over the fit codes),
    ``spacing_mm`` and the written ``figure``/``directions_file``.
    """
    from tqdm import tqdm

    from medgen.core.fileio import atomic_write_json
    from medgen.inference.generate import UNKNOWN_SPACING, latent_codes, training_spacing

    check_ct(model.preprocess, str(model.checkpoint or "this model"))
    alphas = check_options(n_codes, n_bases, steps, max_alpha, batch_size, seed)
    out_dir = Path(out_dir)
    if model.run_config is not None:
        spacing, spacing_source = training_spacing(model.run_config)
    else:
        spacing, spacing_source = (1.0, 1.0, 1.0), UNKNOWN_SPACING
    dim = model.config.latent_dim

    total = n_codes + len(FACTORS) * n_bases * len(alphas)
    bar = tqdm(total=total, desc="latent", unit="vol", disable=not progress, file=sys.stderr)
    try:
        codes = latent_codes(n_codes, dim, seed)
        measured = measure_codes(model, codes, spacing, labels=_labels(model, n_codes), batch_size=batch_size,
                                 progress=bar.update).values
        fits = {f: fit_direction(codes, measured[:, i], factor=f, seed=seed) for i, f in enumerate(FACTORS)}

        bases = latent_codes(n_bases, dim, seed, start=BASE_START)
        base_labels = _labels(model, n_bases)
        traversals: dict[str, np.ndarray] = {}  # factor of the direction → [n_bases, n_steps, len(FACTORS)]
        shown: dict[str, list[dict[str, np.ndarray]]] = {}
        for f in FACTORS:
            z = traversal_codes(bases, fits[f].direction, alphas).reshape(-1, dim)
            labels = None if base_labels is None else np.repeat(base_labels, len(alphas))
            m = measure_codes(model, z, spacing, labels=labels, batch_size=batch_size, keep=range(len(alphas)),
                              progress=bar.update)
            traversals[f] = m.values.reshape(n_bases, len(alphas), len(FACTORS))
            shown[f] = [m.slices[s] for s in range(len(alphas))]
    finally:
        bar.close()

    rows: list[dict[str, Any]] = []
    directions: dict[str, dict[str, Any]] = {}
    for f in FACTORS:
        t = traversals[f]
        pooled, within = spearman(alphas, t[..., FACTORS.index(f)])
        other = next(g for g in FACTORS if g != f)
        directions[f] = {**fits[f].summary(), "spearman": pooled, "spearman_within_base": within,
                         "cosine_with_" + other: float(fits[f].direction @ fits[other].direction)}
        for s, a in enumerate(alphas):
            row: dict[str, Any] = {"direction": f, "alpha": float(a)}
            for i, g in enumerate(FACTORS):
                v = t[:, s, i]
                v = v[np.isfinite(v)]
                row[f"{g}_mean"] = float(v.mean()) if v.size else None
                row[f"{g}_std"] = float(v.std(ddof=1)) if v.size > 1 else None
            row["r2_heldout"] = fits[f].r2_heldout
            row["spearman"] = pooled
            rows.append(row)

    figure = out_dir / FIGURE_NAME
    save_traversal_figure(figure, alphas, {f: shown[f] for f in FACTORS},
                          {f: traversals[f][0] for f in FACTORS}, directions, dpi=dpi)
    directions_file = out_dir / DIRECTIONS_NAME
    atomic_write_json(directions_file, {
        "about": "unit latent directions d (z + alpha*d changes the factor); weights w of factor = w.z + b",
        "latent_dim": dim, "seed": seed, "n_codes": n_codes, "checkpoint": str(model.checkpoint or ""),
        "directions": {f: {**fits[f].summary(), "direction": fits[f].direction.tolist(),
                           "weights": fits[f].weights.tolist()} for f in FACTORS},
    })
    finite = {f: measured[:, i][np.isfinite(measured[:, i])] for i, f in enumerate(FACTORS)}
    return {
        "rows": rows,
        "directions": directions,
        "alphas": [float(a) for a in alphas],
        "n_codes": n_codes,
        "n_bases": n_bases,
        "seed": seed,
        "codes": {f: {"mean": float(v.mean()) if v.size else None, "std": float(v.std()) if v.size else None,
                      "n_measured": int(v.size)} for f, v in finite.items()},
        "spacing_mm": list(spacing),
        "spacing_source": spacing_source,
        "figure": str(figure),
        "directions_file": str(directions_file),
    }


def save_traversal_figure(path: str | Path, alphas: Sequence[float], slices: dict[str, list[dict[str, np.ndarray]]],
                          values: dict[str, np.ndarray], directions: dict[str, dict[str, Any]], *,
                          dpi: int = 110) -> None:
    """One row per direction: slices (HU, CT grey window) of one base code along α.

    ``slices[factor][step][plane]``: display-oriented slices; ``values[factor]``:
    [n_steps, len(FACTORS)] measured fractions, printed under each slice;
    ``directions[factor]``: its ``r2_heldout`` and ``spearman`` go in the row label.
    """
    from matplotlib.figure import Figure

    from medgen.core.fileio import atomic_path

    factors = list(slices)
    n = len(alphas)
    fig = Figure(figsize=(1.25 * n + 1.6, 1.95 * len(factors) + 0.5))
    axes = fig.subplots(len(factors), n, squeeze=False)
    for r, f in enumerate(factors):
        plane = PLANES.get(f, "coronal")
        info = directions.get(f, {})
        for c, a in enumerate(alphas):
            ax = axes[r, c]
            ax.imshow(slices[f][c][plane], cmap="gray", vmin=CT_DISPLAY_WINDOW[0], vmax=CT_DISPLAY_WINDOW[1],
                      interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"α = {a:+.3g}", fontsize=8)
            lung, bone = (values[f][c, FACTORS.index(g)] for g in ("lung_fraction", "bone_fraction"))
            ax.set_xlabel(f"lung {lung:.3f}\nbone {bone:.3f}", fontsize=7)
        label = f.replace("_fraction", "")
        axes[r, 0].set_ylabel(f"{label} direction ({plane})\nheld-out R² {info.get('r2_heldout', math.nan):.2f}\n"
                              f"Spearman ρ {info.get('spearman', math.nan):.2f}", fontsize=7)
    fig.suptitle("Latent traversals z0 + α·d (α in latent SD); measured lung / bone fraction of the body",
                 fontsize=9)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)


# --------------------------------------------------------------------------- the command


def _check_source_is_ct(ws: Workspace, args: argparse.Namespace) -> None:
    """Refuse MRI before any model is trained or loaded."""
    if args.run is not None:
        from medgen.training.runconfig import RunConfig

        check_ct(dict(RunConfig.load(Path(args.run)).preprocess or {}), f"--run {args.run}")
    elif ws.data is not None:
        from medgen.data.dataset import load_preprocess_info

        check_ct(load_preprocess_info(ws.data), f"--data {ws.data}")


def run(ws: Workspace, out: ExperimentOutput, args: argparse.Namespace) -> dict[str, Any]:
    from medgen.families import registry
    from medgen.core.device import resolve_device

    _check_source_is_ct(ws, args)
    n_codes = args.n_codes if args.n_codes is not None else default_n_codes(ws.scale)
    check_options(n_codes, args.n_bases, args.steps, args.max_alpha, args.batch_size, ws.seed)  # before training
    run_dir = ws.main_model(args.run)
    model = registry.load(run_dir, device=resolve_device(ws.device))
    result = latent_traversals(model, out.out, n_codes=n_codes, n_bases=args.n_bases, steps=args.steps,
                               seed=ws.seed, progress=ws.progress, max_alpha=args.max_alpha,
                               batch_size=args.batch_size)
    out.add_figure(Path(result["figure"]))
    d = result["directions"]
    within = ", ".join(f"{f.split('_')[0]} {d[f]['spearman_within_base']:.3g}" for f in FACTORS)
    checkpoint = model.checkpoint.name if model.checkpoint else "latest checkpoint"
    notes = [
        (f"Directions: ridge fit of the factor on {n_codes} generated volumes' latent codes "
         f"({d['lung_fraction']['n_train']} fitted, {d['lung_fraction']['n_heldout']} held out); "
         "r2_heldout is the fit's R² on the held-out codes (near 0 or negative: no linear handle on that factor)."),
        (f"Traversals: z0 + alpha*d for {args.n_bases} base codes not among the fitted ones; alpha is in latent "
         "standard deviations (z ~ N(0, I), |d| = 1); every volume is generated and measured."),
        ("lung_fraction, bone_fraction: lung (<= -500 HU inside the body, central airway removed) and bone "
         "(> +300 HU) as fractions of the body volume, measured on the generated volume in HU; "
         "mean and sample std over the base codes."),
        ("spearman: rank correlation between alpha and the measured factor of the row's direction, over all base "
         f"codes and steps (within single bases: {within})."),
        f"Cosine between the two directions: {d['lung_fraction']['cosine_with_bone_fraction']:.3g}.",
        f"Model: {run_dir} ({checkpoint}); figure {FIGURE_NAME}; directions in {DIRECTIONS_NAME}.",
    ]
    out.write_table(result["rows"], COLUMNS, title="Latent directions of lung and bone volume", notes=notes)
    return {**result, "run": str(run_dir)}
