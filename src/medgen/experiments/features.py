"""``medgen experiment features``: clinical measurements predicted from encoder features (the paper's R² table).

Every real volume of the training and held-out sets is encoded by the main
model's encoder, z = E^G(E^H slabs of x), and continuous clinical measurements
are predicted from z with ridge regression. The paper's encoder baselines
(``--families``, default all three) get their rows too: the VAE-GAN's
posterior mean μ(x) and the α-GAN's code E(x), each trained on the same
training phantoms at the same size for the same iterations
(``WORK/runs/FAMILY-S``). Two baselines run under the same cross-validation,
so the table shows what training added:

* ``voxel PCA``: the volumes averaged down to 16³ voxels, projected on their
  principal axes (fitted on the training folds only);
* ``untrained encoder``: the same encoder architecture at its random
  initialisation (``medgen.build`` with the run's preset, size and seed), for
  every model.

Evaluation: an outer K-fold cross-validation (shuffled with ``--seed``, the
same folds for every feature set); inside each training fold the features are
standardised and ridge's penalty is chosen by leave-one-out (RidgeCV over a
log-spaced grid), so the held-out fold never informs any fitted step. R² is
reported as mean ± std over the outer folds.

Targets (``--targets``): on the thorax-CT phantoms lung volume (ml),
emphysema (% of lung below -950 HU) and bone volume (ml), measured on each
phantom when it was made; on your data, numeric columns of the manifest.

Writes ``features.csv``/``features.md`` (target, model, features, dim, r2_mean,
r2_std, r2_oof, n) and ``features.png`` (out-of-fold predicted vs true value of
every target, trained-encoder latents).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from medgen.core.errors import InputError, UsageError
from medgen.experiments.workspace import ExperimentOutput, Workspace, checkpoint_iteration

HELP = "R² of clinical measurements predicted from encoder latents, against voxel-PCA and untrained-encoder baselines"
DESCRIPTION = __doc__.split("\n\n", 1)[1]

PHANTOM_TARGETS: tuple[str, ...] = ("lung_volume_ml", "emphysema_pct", "bone_volume_ml")
VOXEL_GRID = 16  # voxels per side of the volumes the PCA baseline sees
ALPHA_GRID = (-3.0, 6.0, 19)  # ridge penalties: logspace(-3, 6, 19)
FEATURE_SETS = ("trained encoder", "untrained encoder", "voxel PCA")
# Manifest columns that describe the file or its split, never a measurement of the patient.
NON_TARGET_COLUMNS = ("id", "file", "source", "orig_shape", "orig_spacing", "spacing", "split")
# The families with an encoder, in table order, and their names in the table.
ENCODER_FAMILIES: dict[str, str] = {"hagan": "HA-GAN", "vae-gan": "VAE-GAN", "alpha-gan": "α-GAN"}
ENCODER_NOTES: dict[str, str] = {"hagan": "z = E^G(E^H(x))", "vae-gan": "posterior mean μ(x)", "alpha-gan": "code E(x)"}
DEFAULTS = {"folds": 5, "families": ",".join(ENCODER_FAMILIES)}  # left out of the canonical command line


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--targets", default=None, metavar="COL,COL",
                   help="manifest columns to predict (default on phantoms: " + ",".join(PHANTOM_TARGETS)
                        + "; on --data: every numeric manifest column)")
    p.add_argument("--folds", type=int, default=DEFAULTS["folds"], metavar="K",
                   help="outer cross-validation folds (default 5)")
    p.add_argument("--families", default=DEFAULTS["families"], metavar="F,F",
                   help="models whose encoder latents are scored: " + ", ".join(ENCODER_FAMILIES)
                        + " (default all; hagan is the main model or --run, the others are trained in the workspace)")


def parse_families(text: str) -> list[str]:
    """The encoder families of ``--families``, in table order; UsageError for unknown or repeated names."""
    names = [f.strip() for f in str(text).split(",") if f.strip()]
    bad = [f for f in names if f not in ENCODER_FAMILIES]
    if not names or bad or len(set(names)) != len(names):
        raise UsageError(f"--families {text!r}: choose distinct models with an encoder from "
                         f"{', '.join(ENCODER_FAMILIES)}")
    return [f for f in ENCODER_FAMILIES if f in names]


# ---------------------------------------------------------------------- regression
def alphas() -> np.ndarray:
    """The ridge penalties RidgeCV chooses from (on standardised features: 1e-3 … 1e6)."""
    lo, hi, n = ALPHA_GRID
    return np.logspace(lo, hi, int(n))


def ridge_pipeline():
    """Standardise each feature (training-fold mean and std) → RidgeCV (leave-one-out choice of the penalty)."""
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    return Pipeline([("scale", StandardScaler()), ("ridge", RidgeCV(alphas=alphas()))])


def pca_ridge_pipeline(n_components: int):
    """PCA to ``n_components`` axes → RidgeCV, for voxel intensities.

    The PCA scores are not standardised: the voxels share one intensity unit, and
    whitening would give noise directions of tiny variance the same weight as the
    anatomy's main modes. Unwhitened, ridge shrinks low-variance directions most, and
    with as many components as the training fold's rank it equals ridge regression on
    the voxels themselves.
    """
    from sklearn.decomposition import PCA
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import Pipeline

    return Pipeline([("pca", PCA(n_components=int(n_components), svd_solver="full")),
                     ("ridge", RidgeCV(alphas=alphas()))])


@dataclass
class CVResult:
    """Outcome of :func:`cross_validated_r2`.

    ``r2``: R² on each outer test fold; ``predictions``: out-of-fold prediction of every
    sample; ``folds``: (train indices, test indices) per fold; ``estimators``: the pipeline
    fitted on each training fold; ``alphas``: the ridge penalty each fold chose.
    """

    r2: np.ndarray
    predictions: np.ndarray
    folds: list[tuple[np.ndarray, np.ndarray]]
    estimators: list[Any] = field(default_factory=list)
    alphas: list[float] = field(default_factory=list)

    @property
    def mean(self) -> float:
        return float(np.mean(self.r2))

    @property
    def std(self) -> float:
        return float(np.std(self.r2))

    def pooled_r2(self, y: np.ndarray) -> float:
        """R² of all out-of-fold predictions together (one number over every sample)."""
        from sklearn.metrics import r2_score

        return float(r2_score(y, self.predictions))


def kfold_splits(n: int, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Shuffled K-fold (train, test) index pairs for ``n`` samples, seeded (identical for every feature set)."""
    from sklearn.model_selection import KFold

    if folds < 2:
        raise UsageError(f"--folds {folds}: need at least 2")
    if n < 2 * folds:
        raise InputError(f"{n} volumes are too few for {folds}-fold cross-validation (need at least {2 * folds})")
    return [(tr, te) for tr, te in KFold(n_splits=folds, shuffle=True, random_state=seed).split(np.zeros((n, 1)))]


def cross_validated_r2(x: np.ndarray, y: np.ndarray, make_pipeline: Callable[[], Any],
                       folds: int | list[tuple[np.ndarray, np.ndarray]] = 5, seed: int = 0) -> CVResult:
    """R² of predicting ``y`` [n] from ``x`` [n, d] under outer K-fold cross-validation.

    ``make_pipeline()`` returns a fresh unfitted scikit-learn pipeline; one is fitted on
    each training fold only (every step: scaling, PCA, the inner choice of the penalty)
    and scored on its test fold. ``folds``: K, or explicit (train, test) index pairs.
    """
    from sklearn.metrics import r2_score

    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or len(x) != len(y):
        raise UsageError(f"features {x.shape} and targets {y.shape} do not match")
    splits = kfold_splits(len(y), folds, seed) if isinstance(folds, int) else list(folds)
    predictions = np.full(len(y), np.nan)
    scores, estimators, chosen = [], [], []
    for train, test in splits:
        model = make_pipeline()
        model.fit(x[train], y[train])
        pred = model.predict(x[test])
        predictions[test] = pred
        scores.append(r2_score(y[test], pred))
        estimators.append(model)
        ridge = model[-1] if hasattr(model, "__getitem__") else model
        if hasattr(ridge, "alpha_"):
            chosen.append(float(ridge.alpha_))
    return CVResult(np.asarray(scores, dtype=np.float64), predictions, splits, estimators, chosen)


def pca_components(latent_dim: int, folds: list[tuple[np.ndarray, np.ndarray]], n_voxels: int) -> int:
    """Components of the voxel-PCA baseline: the latent code's dimension, where the data allow.

    At most the smallest training fold's rank (its size − 1) and the voxel count, so the
    baseline gets as many features as the encoder whenever there are enough volumes.
    """
    smallest = min(len(train) for train, _ in folds)
    return int(max(1, min(latent_dim, smallest - 1, n_voxels)))


# ---------------------------------------------------------------------- features
def downsample(volume: np.ndarray, grid: int = VOXEL_GRID) -> np.ndarray:
    """A volume averaged down to ``grid``³ voxels (box means; exact cell means for integer factors), flattened."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))[None, None]
    return torch.nn.functional.adaptive_avg_pool3d(x, grid)[0, 0].numpy().reshape(-1).astype(np.float64)


@dataclass
class RealSet:
    """The real volumes of the training and held-out sets, with their manifest rows."""

    ids: list[str]
    files: list[Path]
    rows: list[dict[str, str]]
    origin: list[str]
    folders: list[Path]


def real_volumes(folders: Sequence[tuple[str, Path]]) -> RealSet:
    """Every volume listed in the manifests of the preprocessed ``(name, folder)`` pairs."""
    from medgen.data.dataset import load_manifest

    out = RealSet([], [], [], [], [])
    for name, folder in folders:
        for row in load_manifest(folder):
            path = Path(folder) / row["file"]
            if not path.is_file():
                raise InputError(f"{path}: listed in {Path(folder) / 'manifest.csv'} but missing")
            out.ids.append(row["id"])
            out.files.append(path)
            out.rows.append(row)
            out.origin.append(name)
            out.folders.append(Path(folder))
    return out


def extract_features(files: Sequence[Path], encoders: dict[str, Any], grid: int = VOXEL_GRID,
                     progress: bool = True) -> dict[str, np.ndarray]:
    """One pass over the volumes: the latent code of each encoder, and the ``grid``³ voxels.

    ``encoders``: key → a model with an ``encode`` method (HA-GAN, VAE-GAN, α-GAN). Returns key →
    [n, latent_dim] and ``"voxels"`` → [n, grid³] (float64).
    """
    from tqdm import tqdm

    feats: dict[str, list[np.ndarray]] = {name: [] for name in encoders}
    feats["voxels"] = []
    for path in tqdm(files, desc="encode", unit="vol", disable=not progress, leave=False):
        try:
            volume = np.load(path).astype(np.float32)
        except (OSError, ValueError) as exc:
            raise InputError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from None
        for name, model in encoders.items():
            feats[name].append(model.encode(volume)[0].astype(np.float64))
        feats["voxels"].append(downsample(volume, grid))
    return {name: np.stack(rows) for name, rows in feats.items()}


# ---------------------------------------------------------------------- targets
def _number(text: str) -> float | None:
    text = (text or "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if np.isfinite(value) else None


def choose_targets(rows: list[dict[str, str]], requested: str | None, phantoms: bool) -> list[str]:
    """The target columns: ``--targets``, else the phantom defaults or every numeric, non-constant column."""
    columns = [c for c in rows[0] if c not in NON_TARGET_COLUMNS]
    numeric = [c for c in columns
               if all(_number(r.get(c, "")) is not None or not (r.get(c) or "").strip() for r in rows)
               and any(_number(r.get(c, "")) is not None for r in rows)]
    if requested:
        targets = [t.strip() for t in requested.split(",") if t.strip()]
        missing = [t for t in targets if t not in rows[0]]
        if missing:
            raise UsageError(f"--targets: no column {', '.join(map(repr, missing))} in the manifest "
                             f"(numeric columns: {', '.join(numeric) or 'none'})")
        return targets
    if phantoms:
        return list(PHANTOM_TARGETS)
    varying = [c for c in numeric if len({_number(r.get(c, "")) for r in rows} - {None}) > 1]
    if not varying:
        raise UsageError("the manifest has no numeric column that varies between volumes: pass --targets COL,COL")
    return varying


def target_values(real: RealSet, column: str) -> np.ndarray:
    """Float values of ``column`` for every volume (NaN where blank); InputError on text."""
    values = np.full(len(real.rows), np.nan)
    for i, row in enumerate(real.rows):
        text = (row.get(column) or "").strip()
        if not text:
            continue
        value = _number(text)
        if value is None:
            raise InputError(f"{real.folders[i] / 'manifest.csv'}: {real.ids[i]!r} has {column}={text!r}, "
                             "not a number")
        values[i] = value
    return values


# ---------------------------------------------------------------------- figure
def save_prediction_figure(path: Path, panels: list[tuple[str, np.ndarray, np.ndarray, CVResult]],
                           model: str = "HA-GAN") -> None:
    """Out-of-fold predicted vs true value, one panel per (target, y, prediction, result)."""
    from matplotlib.figure import Figure

    from medgen.core.fileio import atomic_path

    n = len(panels)
    fig = Figure(figsize=(3.6 * n, 3.8))
    axes = np.atleast_1d(fig.subplots(1, n))
    for ax, (target, y, pred, res) in zip(axes, panels):
        ax.scatter(y, pred, s=14, alpha=0.75)
        lo, hi = float(min(y.min(), pred.min())), float(max(y.max(), pred.max()))
        pad = 0.05 * (hi - lo or 1.0)
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="0.4", lw=1, ls="--")
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_ylim(lo - pad, hi + pad)
        ax.set_xlabel(f"true {target}")
        ax.set_ylabel("predicted (out of fold)")
        ax.set_title(f"{target}\nR² = {res.mean:.2f} ± {res.std:.2f} over {len(res.r2)} folds; "
                     f"pooled {res.pooled_r2(y):.2f}", fontsize=9)
    fig.suptitle(f"Ridge regression on the trained {model} encoder's latents", fontsize=10)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110)


# ---------------------------------------------------------------------- experiment
def _untrained_encoder(run_dir: Path, seed: int, device: str):
    """The run's encoder architecture at its random initialisation (its family's ``build``, seeded)."""
    import torch

    from medgen.families import registry
    from medgen.training.runconfig import RunConfig

    run_cfg = RunConfig.load(run_dir)
    model_fields = {k: v for k, v in dict(run_cfg.model).items() if k != "size"}
    return registry.get(run_cfg.family).build_model(run_cfg.preset, int(run_cfg.model["size"]), seed=seed,
                                                    device=torch.device(device), encoder=True, **model_fields)


def encoder_runs(ws: Workspace, families: list[str], run: str | None) -> dict[str, Path]:
    """family → trained run: HA-GAN's is the main model (or ``run``), the baselines' ``WORK/runs/FAMILY-S``
    at the main model's size (trained if needed, the workspace's iterations)."""
    out: dict[str, Path] = {}
    main_run = ws.main_model(run) if "hagan" in families else None
    size = ws.run_size(main_run) if main_run is not None else ws.main_size
    for family in families:
        out[family] = main_run if family == "hagan" else ws.model(f"{family}-{size}", size, family=family)
    return out


def run(ws: Workspace, out: ExperimentOutput, args: argparse.Namespace) -> dict[str, Any]:
    from medgen.core.device import resolve_device
    from medgen.families import registry

    families = parse_families(args.families)
    if args.run is not None and "hagan" not in families:
        raise UsageError("--run is the HA-GAN model; add hagan to --families or leave --run out")
    runs = encoder_runs(ws, families, args.run)
    size = ws.run_size(next(iter(runs.values())))
    device = str(resolve_device(ws.device))
    encoders: dict[str, Any] = {}
    latent_dims: dict[str, int] = {}
    for family, run_dir in runs.items():
        trained = registry.load(run_dir, device=resolve_device(device))
        if getattr(trained, "encoder", None) is None:
            raise UsageError(f"{run_dir}: this model has no encoder (trained with --no-encoder); "
                             "the features experiment needs one")
        encoders[(family, "trained encoder")] = trained
        encoders[(family, "untrained encoder")] = _untrained_encoder(run_dir, ws.seed, device)
        latent_dims[family] = int(trained.config.latent_dim)
    train_dir, heldout_dir = ws.datasets(size)
    real = real_volumes([("train", train_dir), ("heldout", heldout_dir)])
    targets = choose_targets(real.rows, args.targets, ws.uses_phantoms)
    values = {t: target_values(real, t) for t in targets}

    print(f"\nencoding {len(real.files)} real volumes ({size}³) with the trained and the untrained encoder of "
          f"{', '.join(ENCODER_FAMILIES[f] for f in runs)}", flush=True)
    feats = extract_features(real.files, encoders, progress=ws.progress)
    latent_dim = max(latent_dims.values())

    rows: list[dict[str, Any]] = []
    panels = []
    details: dict[str, Any] = {}
    for target in targets:
        y_all = values[target]
        keep = np.flatnonzero(np.isfinite(y_all))
        y = y_all[keep]
        if len(keep) < 2 * args.folds:
            raise InputError(f"target {target!r}: {len(keep)} volumes have a value, too few for "
                             f"{args.folds}-fold cross-validation (need {2 * args.folds})")
        if np.ptp(y) == 0:
            raise InputError(f"target {target!r}: every volume has the same value ({y[0]:g}); nothing to predict")
        folds = kfold_splits(len(y), args.folds, ws.seed)
        k = pca_components(latent_dim, folds, VOXEL_GRID ** 3)
        cases = [(ENCODER_FAMILIES[family], name, feats[(family, name)][keep], ridge_pipeline, latent_dims[family])
                 for family in runs for name in ("trained encoder", "untrained encoder")]
        cases.append(("", f"voxel PCA ({VOXEL_GRID}³)", feats["voxels"][keep], lambda k=k: pca_ridge_pipeline(k), k))
        for model, name, x, make, dim in cases:
            res = cross_validated_r2(x, y, make, folds)
            rows.append({"target": target, "model": model, "features": name, "dim": dim, "r2_mean": res.mean,
                         "r2_std": res.std, "r2_oof": res.pooled_r2(y), "n": len(y)})
            details[f"{target}/{model + ' ' if model else ''}{name}"] = {"r2_folds": res.r2.tolist(),
                                                                        "alphas": res.alphas}
            if name == "trained encoder" and model == ENCODER_FAMILIES[next(iter(runs))]:
                panels.append((target, y, res.predictions, res))

    columns = ("target", "model", "features", "dim", "r2_mean", "r2_std", "r2_oof", "n")
    n_train = sum(o == "train" for o in real.origin)
    notes = [
        f"{args.folds}-fold cross-validation (shuffled, seed {ws.seed}; the same folds for every feature set) over "
        f"{len(real.files)} real volumes ({n_train} training, {len(real.files) - n_train} held-out); "
        "r2_mean ± r2_std: R² over the test folds; r2_oof: R² of all out-of-fold predictions pooled.",
        "Ridge regression; in each training fold the encoder features are standardised and the penalty is chosen by "
        f"leave-one-out from 10^{ALPHA_GRID[0]:g} … 10^{ALPHA_GRID[1]:g}; nothing is fitted on the test fold.",
        "trained encoder: " + "; ".join(f"{ENCODER_FAMILIES[f]} {ENCODER_NOTES[f]} of {r.name} "
                                        f"({checkpoint_iteration(r)} iterations)" for f, r in runs.items())
        + f"; untrained encoder: the same architecture at its random initialisation (seed {ws.seed}).",
        f"voxel PCA: volumes averaged to {VOXEL_GRID}³, PCA fitted on the training fold, as many components as the "
        "latent code (the largest one of the table's models; at most the training fold's rank), scores not whitened.",
        "R² = 1 − residual / total sum of squares: 1 is perfect, 0 is predicting the mean, below 0 is worse than that.",
        "The encoder was trained on the training volumes (without their measurements); held-out volumes are "
        "encoded by the same model.",
    ]
    out.write_table(rows, columns, title="Clinical measurements predicted from encoder features (R²)", notes=notes)
    fig_path = out.path("features.png")
    save_prediction_figure(fig_path, panels, ENCODER_FAMILIES[next(iter(runs))])
    out.add_figure(fig_path)
    return {"rows": rows, "folds": details, "runs": {f: str(r) for f, r in runs.items()}, "targets": targets}
