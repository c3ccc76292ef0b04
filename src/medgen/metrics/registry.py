"""The metrics registry: names → functions of an :class:`EvalContext` (cf. StyleGAN2-ADA's
``metric_main.py``).

A metric is registered with :func:`register`. What its function takes depends on its
``kind``:

``"features"``, ``"volumes"``, ``"probabilities"`` — metrics of unpaired sets (real vs
    generated), computed with :func:`compute`. The function takes an :class:`EvalContext`
    and returns a dict with at least ``value`` (a number or a dict of numbers) and
    optionally ``std``, ``settings`` and ``details``; :func:`compute` adds what every
    reported number carries: sample sizes and, for feature metrics, the extractor and
    whether the value is comparable with published numbers.

    * ``"features"`` — computed on extractor features (needs an extractor);
    * ``"volumes"`` — computed on the voxels (MS-SSIM, anatomy statistics);
    * ``"probabilities"`` — computed on a classifier's class probabilities (IS).
``"paired"``
    One output volume against its target (:mod:`medgen.metrics.paired`: PSNR, SSIM,
    NMSE): ``fn(output, target, mask=None, data_range=2.0) -> float``, volume by volume
    (:func:`medgen.metrics.evaluate.evaluate_paired`).
``"scores"``
    Anomaly scores against binary labels (:mod:`medgen.metrics.scores`: AUROC, AUPRC, per
    volume or per voxel; the best Dice over thresholds, per voxel): ``fn(scores, labels) ->
    float`` (:func:`medgen.metrics.evaluate.evaluate_scores`). What is not one number of
    scores and labels is not registered: thresholds at a false-positive rate
    (:func:`medgen.metrics.scores.threshold_at_fpr`) and per-lesion detection
    (:func:`medgen.metrics.lesions.lesion_detection`).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from medgen.core.errors import UsageError

KINDS = ("features", "volumes", "probabilities", "paired", "scores")
SET_KINDS = ("features", "volumes", "probabilities")  # kinds computed on unpaired sets by compute()


@dataclass(frozen=True)
class Metric:
    name: str
    fn: Callable[..., Any]
    kind: str
    description: str
    needs_train: bool = False


METRICS: dict[str, Metric] = {}


def register(
    name: str, fn: Callable[..., Any], kind: str = "features", description: str = "", needs_train: bool = False
) -> None:
    """Add a metric (replacing one of the same name)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    METRICS[name] = Metric(name, fn, kind, description, needs_train)


@dataclass(frozen=True)
class ClassifierProbs:
    """A classifier of volumes for the Inception Score, given to the metrics ready to use.

    ``probs_fn(volumes, *, batch_size, progress, total, desc) -> [N, K]``: class
    probabilities of an iterable of ``(x, y, z)`` volumes in [-1, 1] (of any size; the
    classifier resizes them). ``info``: what the classifier is, reported with the score:
    ``path``, ``weights_sha256``, ``label_column``, ``classes`` (names of the K classes),
    ``in_size``, ``val_accuracy``, ``test_accuracy`` (missing keys are reported as None).
    """

    probs_fn: Callable[..., np.ndarray]
    info: dict[str, Any] = field(default_factory=dict)

    def probabilities(self, volumes, *, batch_size: int = 2, progress: bool = False, total: int | None = None,
                      desc: str = "classifier") -> np.ndarray:
        probs = self.probs_fn(volumes, batch_size=batch_size, progress=progress, total=total, desc=desc)
        return np.asarray(probs, dtype=np.float64)


@dataclass
class EvalOptions:
    """Settings of an evaluation. ``bootstrap``: number of bootstrap replicates for the std
    of FID and MMD (0: none). ``kid_subsets``/``kid_subset_size``: KID subsets. ``prdc_k``:
    neighbours for precision/recall/density/coverage. ``ms_ssim_pairs``: random pairs for
    MS-SSIM. ``is_probs``: ``.npy`` file (or array) of class probabilities ``[n_fake, K]``
    from a classifier, for IS; ``classifier``: or the classifier itself, a
    :class:`ClassifierProbs`; ``is_splits``: IS splits. ``device``: where the feature
    network runs. ``figures_dir``: where figures go (None: none)."""

    seed: int = 0
    bootstrap: int = 0
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    prdc_k: int = 5
    ms_ssim_pairs: int = 50
    is_probs: Any = None
    classifier: Any = None
    is_splits: int = 10
    device: str = "auto"
    batch_size: int = 2
    progress: bool = True
    cache_dir: str | None = None
    use_cache: bool = True
    figures_dir: str | None = None


def volume_anatomy(vs: Any, modality: str | None, what: str = "volumes", progress: bool = False) -> list[dict]:
    """Anatomy statistics of each volume of the VolumeSet ``vs`` (CT: :func:`medgen.metrics.anatomy.ct_anatomy`
    in HU; MRI: :func:`~medgen.metrics.anatomy.mri_tissue_fractions`); UsageError for another modality."""
    from tqdm import tqdm

    from medgen.metrics import anatomy

    if modality not in ("ct", "mri"):
        raise UsageError("anatomy statistics need the modality: pass --modality ct or mri")
    steps = tqdm(range(len(vs)), desc=f"anatomy {what}", disable=not progress, leave=False)
    if modality == "ct":
        return [anatomy.ct_anatomy(vs.hu(i), vs.spacing(i)) for i in steps]
    return [anatomy.mri_tissue_fractions(vs[i]) for i in steps]


@dataclass
class EvalContext:
    """Everything a metric may use; features are computed once, lazily, and cached on disk.

    ``real``, ``fake``, ``train``: :class:`medgen.metrics.volumes.VolumeSet` (``train`` may
    be None). ``extractor_factory``: builds the feature extractor on first use.
    """

    real: Any
    fake: Any
    train: Any = None
    extractor_factory: Callable[[], Any] | None = None
    options: EvalOptions = field(default_factory=EvalOptions)
    figures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    feature_info: dict[str, dict] = field(default_factory=dict)
    _extractor: Any = None
    _features: dict[str, np.ndarray] = field(default_factory=dict)
    _anatomy: dict[str, list[dict]] = field(default_factory=dict)
    _membership: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)

    @property
    def extractor(self):
        if self._extractor is None:
            if self.extractor_factory is None:
                raise UsageError("feature metrics need a feature extractor (--features)")
            self._extractor = self.extractor_factory()
        return self._extractor

    def volume_set(self, which: str):
        vs = {"real": self.real, "fake": self.fake, "train": self.train}[which]
        if vs is None:
            raise UsageError(f"this metric needs --{which}")
        return vs

    def features(self, which: str) -> np.ndarray:
        """``[N, d]`` features of the ``"real"``, ``"fake"`` or ``"train"`` set."""
        if which not in self._features:
            from medgen.metrics.cache import cached_features

            vs = self.volume_set(which)
            ex = self.extractor

            def compute() -> np.ndarray:
                # Native volumes: the extractor resizes each to its own input size.
                native = (vs.read_native(i) for i in range(len(vs)))
                return ex.extract(native, batch_size=self.options.batch_size, progress=self.options.progress, total=len(vs), desc=f"features {which}")

            feats, info = cached_features(vs, ex.describe(), compute, self.options.cache_dir, self.options.use_cache)
            self._features[which] = feats
            self.feature_info[which] = info
        return self._features[which]

    def anatomy(self, which: str) -> list[dict]:
        """Per-volume anatomy statistics of the ``"real"``, ``"fake"`` or ``"train"`` set, computed once
        (CT: :func:`medgen.metrics.anatomy.ct_anatomy`; MRI: :func:`~medgen.metrics.anatomy.mri_tissue_fractions`);
        the modality is the generated set's, else the real set's. UsageError when it is unknown."""
        if which not in self._anatomy:
            self._anatomy[which] = volume_anatomy(self.volume_set(which), self.anatomy_modality, which,
                                                  progress=self.options.progress)
        return self._anatomy[which]

    @property
    def anatomy_modality(self) -> str | None:
        """The modality anatomy statistics are computed for: the generated set's, else the real set's."""
        return self.fake.modality or self.real.modality

    def has_anatomy(self, which: str) -> bool:
        """Whether the anatomy statistics of ``which`` were computed already."""
        return which in self._anatomy

    def membership(self, k: int) -> dict[str, np.ndarray]:
        """The k-NN memberships of the real and generated features (:func:`medgen.metrics.prdc.membership`),
        computed once per k: the ``prdc`` metric and the anatomy of the volumes it misses share them."""
        if k not in self._membership:
            from medgen.metrics.prdc import membership

            self._membership[k] = membership(self.features("real"), self.features("fake"), k=k)
        return self._membership[k]

    def has_features(self, which: str) -> bool:
        """Whether the features of ``which`` were computed (or read from the cache) already."""
        return which in self._features

    def figure_path(self, name: str) -> Path | None:
        if self.options.figures_dir is None:
            return None
        return Path(self.options.figures_dir) / name

    @property
    def train_is_real(self) -> bool:
        return self.train is not None and self.train.source_key() == self.real.source_key()


_KIND_USE = {
    "paired": "compares output volumes with their targets one by one: use medgen.metrics.evaluate.evaluate_paired",
    "scores": "rates anomaly scores against labels: use medgen.metrics.evaluate.evaluate_scores",
}


def check_names(names: list[str], kinds: tuple[str, ...] | None = None) -> None:
    """UsageError for an unknown metric name, or one not of ``kinds`` (default: any kind)."""
    allowed = [n for n, m in METRICS.items() if kinds is None or m.kind in kinds]
    for name in names:
        if name not in METRICS:
            raise UsageError(f"unknown metric {name!r}; choose from {', '.join(allowed)}")
        kind = METRICS[name].kind
        if kinds is not None and kind not in kinds:
            use = _KIND_USE.get(kind, f"is a {kind} metric")
            raise UsageError(f"metric {name!r} {use}; here choose from {', '.join(allowed)}")


def _json_number(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _json_number(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_number(v) for v in x]
    if isinstance(x, (np.floating, float)):
        x = float(x)
        return x if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def compute(names: list[str], context: EvalContext) -> dict[str, dict]:
    """Compute the named metrics; returns ``{name: result}`` with JSON-ready results.

    Each result has ``value``, ``std`` (None if not estimated), ``n_real``, ``n_fake``,
    ``extractor``, ``comparable_with_published``, ``settings`` and, where given,
    ``details`` and ``correlations``. A metric that fails on the data (e.g. too few volumes) gives
    ``{"error": message}`` instead; usage errors propagate. Only metrics of
    :data:`SET_KINDS`.
    """
    check_names(names, SET_KINDS)
    results: dict[str, dict] = {}
    for name in names:
        metric = METRICS[name]
        if metric.needs_train and context.train is None:
            raise UsageError(f"metric {name!r} needs --train (the training data of the model)")
        try:
            raw = metric.fn(context)
        except ValueError as exc:
            results[name] = {"error": f"{type(exc).__name__}: {exc}", "n_real": len(context.real), "n_fake": len(context.fake)}
            continue
        result: dict[str, Any] = {
            "value": raw["value"],
            "std": raw.get("std"),
            "n_real": raw.get("n_real", len(context.real)),
            "n_fake": raw.get("n_fake", len(context.fake)),
        }
        if metric.needs_train:
            result["n_train"] = len(context.train)
        if metric.kind == "features":
            ex = context.extractor
            result["extractor"] = ex.name
            result["comparable_with_published"] = ex.comparable_with_published
            if ex.warning:
                result["warning"] = ex.warning
        else:
            result["extractor"] = None
            result["comparable_with_published"] = None
        result["description"] = metric.description
        result["settings"] = raw.get("settings", {})
        for key in ("details", "correlations"):  # correlations: anatomy's pairs of statistics
            if key in raw:
                result[key] = raw[key]
        results[name] = _json_number(result)
    _add_missed_anatomy(results, context)
    return results


def _add_missed_anatomy(results: dict[str, dict], ctx: EvalContext) -> None:
    """With both ``prdc`` and ``anatomy`` computed: how the real volumes the generated set misses (not
    recalled, not covered) differ in anatomy from those it reaches
    (:func:`medgen.metrics.anatomy.missed_profile`), as prdc's ``details.missed_anatomy``."""
    from medgen.metrics.anatomy import missed_profile

    r = results.get("prdc")
    if not r or "error" in r or not ctx.has_anatomy("real"):
        return
    m = ctx.membership(r["settings"]["k"])
    real = ctx.anatomy("real")
    r.setdefault("details", {})["missed_anatomy"] = _json_number(
        {"recall": missed_profile(real, m["recalled"]), "coverage": missed_profile(real, m["covered"])})


# ---------------------------------------------------------------------------- metrics


def _with_uncertainty(ctx: EvalContext, fn: Callable[[np.ndarray, np.ndarray], float], a: np.ndarray, b: np.ndarray) -> tuple[float, float | None, dict]:
    from medgen.metrics.uncertainty import bootstrap

    value = fn(a, b)
    n = ctx.options.bootstrap
    if n > 0:
        mean, std = bootstrap(fn, a, b, n=n, seed=ctx.options.seed)
        return value, std, {"uncertainty": f"std over {n} bootstrap resamples of both sets (seed {ctx.options.seed})", "bootstrap_mean": mean}
    return value, None, {"uncertainty": "none (use --bootstrap N)"}


def _feature_notes(a: np.ndarray, b: np.ndarray) -> dict:
    if min(len(a), len(b)) <= a.shape[1]:
        return {"note": f"fewer samples ({min(len(a), len(b))}) than feature dimensions ({a.shape[1]}): biased upward; compare only at equal sample sizes"}
    return {}


def metric_fid(ctx: EvalContext) -> dict:
    from medgen.metrics.fid import fid

    a, b = ctx.features("real"), ctx.features("fake")
    value, std, unc = _with_uncertainty(ctx, fid, a, b)
    settings = {"formula": "||mu_r - mu_f||^2 + Tr(S_r + S_f - 2 (S_r S_f)^(1/2)), covariances ddof=1", **unc, **_feature_notes(a, b)}
    return {"value": value, "std": std, "settings": settings}


def metric_kid(ctx: EvalContext) -> dict:
    from medgen.metrics.kid import kid

    a, b = ctx.features("real"), ctx.features("fake")
    size = min(ctx.options.kid_subset_size, len(a), len(b))
    mean, std = kid(a, b, subsets=ctx.options.kid_subsets, subset_size=size, seed=ctx.options.seed)
    settings = {
        "kernel": "(x.y / d + 1)^3",
        "estimator": "unbiased MMD^2, mean over subsets",
        "subsets": ctx.options.kid_subsets,
        "subset_size": size,
        "uncertainty": "std over subsets (ddof=0)",
    }
    if size == len(a) == len(b):
        settings["note"] = "each subset is a whole set (subset size = set size): std is 0 by construction"
        std = None
    return {"value": mean, "std": std, "settings": settings}


def metric_mmd(ctx: EvalContext) -> dict:
    from medgen.metrics.mmd import median_heuristic, mmd2_gaussian

    a, b = ctx.features("real"), ctx.features("fake")
    value, std, unc = _with_uncertainty(ctx, mmd2_gaussian, a, b)
    settings = {
        "kernel": "exp(-d^2 / l^2), l = median of the pooled distance matrix (diagonal included), as the HA-GAN evaluation",
        "bandwidth_l": median_heuristic(a, b),
        "estimator": "unbiased MMD^2",
        **unc,
    }
    return {"value": value, "std": std, "settings": settings}


def metric_prdc(ctx: EvalContext) -> dict:
    from medgen.metrics.prdc import expected_coverage, shares

    a, b = ctx.features("real"), ctx.features("fake")
    k = ctx.options.prdc_k
    if min(len(a), len(b)) <= k:
        raise ValueError(f"precision/recall need more than k={k} volumes in each set (have {len(a)} real, {len(b)} generated); lower --prdc-k")
    m = ctx.membership(k)
    ids = list(ctx.real.ids)
    details = {
        # what a generator drawing from the real distribution itself scores at these set sizes
        "coverage_same_distribution": expected_coverage(len(a), len(b), k),
        # the real volumes the generated set misses (with the anatomy metric, compute() adds their anatomy: "missed_anatomy")
        "real_not_recalled": [ids[i] for i in np.flatnonzero(~m["recalled"])],
        "real_uncovered": [ids[i] for i in np.flatnonzero(~m["covered"])],
    }
    return {"value": shares(m, k), "settings": {"k": k, "reference": "Naeem et al. 2020, k-NN balls in feature space"},
            "details": details}


def metric_is(ctx: EvalContext) -> dict:
    from medgen.core.errors import InputError
    from medgen.metrics.inception_score import inception_score

    if ctx.options.classifier is not None:
        if ctx.options.is_probs is not None:
            raise UsageError("IS: give either --classifier DIR or --is-probs FILE.npy, not both")
        return _is_from_classifier(ctx)
    path = ctx.options.is_probs
    if path is None:
        raise UsageError(
            "IS needs a classifier trained on labelled real data: pass --classifier DIR (medgen train-classifier) "
            "or --is-probs FILE.npy, the class probabilities [n_fake, K] it gives the generated volumes"
        )
    if isinstance(path, (str, os.PathLike)):
        try:
            probs = np.load(path)
        except (OSError, ValueError) as exc:
            raise InputError(f"{path}: cannot read class probabilities ({exc})") from None
    else:  # probabilities given as an array
        probs, path = np.asarray(path, dtype=np.float64), "array"
    if probs.ndim != 2:
        raise InputError(f"{path}: expected an [n, K] array of class probabilities, got shape {probs.shape}")
    if len(probs) != len(ctx.fake):
        ctx.notes.append(f"IS probabilities have {len(probs)} rows, the generated set {len(ctx.fake)} volumes")
    try:
        mean, std = inception_score(probs, splits=ctx.options.is_splits)
    except ValueError as exc:
        raise InputError(f"{path}: {exc}") from None
    return {
        "value": mean,
        "std": std,
        "n_fake": len(probs),
        "n_real": 0,
        "settings": {"probabilities": str(path), "classes": int(probs.shape[1]), "splits": ctx.options.is_splits, "uncertainty": "std over splits (ddof=0)"},
    }


def _is_from_classifier(ctx: EvalContext) -> dict:
    """IS of the generated volumes through a classifier (a :class:`ClassifierProbs`, e.g. one
    written by ``medgen train-classifier``), with the real volumes' IS and both sets'
    predicted-class counts as reference."""
    from medgen.metrics.inception_score import inception_score

    classifier = ctx.options.classifier
    info = dict(getattr(classifier, "info", None) or {})

    def probabilities(which: str) -> np.ndarray:
        vs = ctx.volume_set(which)
        volumes = (vs.read_native(i) for i in range(len(vs)))  # resized to the classifier's input size
        probs = classifier.probs_fn(volumes, batch_size=ctx.options.batch_size, progress=ctx.options.progress,
                                    total=len(vs), desc=f"classifier {which}")
        return np.asarray(probs, dtype=np.float64)

    fake, real = probabilities("fake"), probabilities("real")
    classes = [str(c) for c in info.get("classes") or range(fake.shape[1])]
    folder = info.get("path")
    splits = ctx.options.is_splits
    mean, std = inception_score(fake, splits=splits)
    real_mean, real_std = inception_score(real, splits=splits)
    counts = {which: np.bincount(p.argmax(axis=1), minlength=len(classes)).tolist() for which, p in (("fake", fake), ("real", real))}
    acc = info.get("test_accuracy")
    ctx.notes.append(
        f"IS through the classifier {folder} ({info.get('label_column')}, test accuracy "
        f"{'unknown' if acc is None else f'{100 * acc:.1f} %'}): comparable only with IS from this same classifier"
    )
    ctx.notes.append("IS predicted classes, generated / real: " + ", ".join(
        f"{c}: {f} / {r}" for c, f, r in zip(classes, counts["fake"], counts["real"])))
    settings = {
        "classifier": None if folder is None else str(folder),
        "classifier_sha256": info.get("weights_sha256"),
        "label_column": info.get("label_column"),
        "classes": classes,
        "in_size": info.get("in_size"),
        "classifier_val_accuracy": info.get("val_accuracy"),
        "classifier_test_accuracy": acc,
        "splits": splits,
        "uncertainty": "std over splits (ddof=0)",
        "note": "comparable only with IS computed through the same classifier (same sha256)",
    }
    details = {"real": {"mean": real_mean, "std": real_std}, "predicted_classes": {"classes": classes, **counts}}
    return {"value": mean, "std": std, "settings": settings, "details": details}


def metric_ms_ssim(ctx: EvalContext) -> dict:
    from medgen.metrics.diversity import ms_ssim_diversity

    pairs, seed = ctx.options.ms_ssim_pairs, ctx.options.seed
    fake = ms_ssim_diversity(ctx.fake, max_pairs=pairs, seed=seed)
    real = ms_ssim_diversity(ctx.real, max_pairs=pairs, seed=seed) if len(ctx.real) >= 2 else None
    settings = {
        "meaning": "mean MS-SSIM between random pairs of generated volumes; higher = less diverse; compare with the real set's",
        "pairs": fake["n_pairs"],
        "n_scales": fake.get("n_scales"),
        "data_range": 2.0,
        "uncertainty": "std over pairs (ddof=0)",
    }
    details = {"fake": fake, "real": real}
    return {"value": fake["mean"], "std": fake["std"], "settings": settings, "details": details}


def metric_dimensionality(ctx: EvalContext) -> dict:
    from medgen.metrics.dimensionality import dimensionality, save_spectrum_figure
    from medgen.metrics.volumes import choose_subset

    n = min(len(ctx.real), len(ctx.fake))
    if n < 2:
        raise UsageError(f"dimensionality needs at least 2 volumes in each set (real {len(ctx.real)}, generated {len(ctx.fake)})")
    real, fake = (choose_subset(vs, n, ctx.options.seed) for vs in (ctx.real, ctx.fake))
    result = dimensionality(real, fake, progress=ctx.options.progress)
    path = ctx.figure_path("dimensionality.png")
    if path is not None:
        save_spectrum_figure(result, path)
        ctx.figures.append(str(path))
    settings = {
        "meaning": "participation ratio (sum λ)^2 / sum λ^2 of the principal-component variances of the generated "
                   "set; lower than the real set's = the samples vary along fewer independent directions",
        "grid": f"{result['grid']}^3 block means of each volume",
        "equal_sizes": f"{n} volumes of each set (a seeded random subset of the larger; seed {ctx.options.seed})",
    }
    return {"value": result["fake"]["participation_ratio"], "n_real": n, "n_fake": n, "settings": settings,
            "details": {"fake": result["fake"], "real": result["real"], "grid": result["grid"]}}


ANATOMY_REFERENCE_MAX_TRAIN = 256  # training volumes whose anatomy is measured for the reference
ANATOMY_REFERENCE_REPEATS = 100  # random draws of len(fake) training volumes


def metric_anatomy(ctx: EvalContext) -> dict:
    from medgen.metrics import anatomy

    modality = ctx.anatomy_modality
    protocol = {
        "ct": "CT Hounsfield-unit protocol (medgen.metrics.anatomy.ct_anatomy)",
        "mri": "MRI tissue fractions by multi-level Otsu (medgen.metrics.anatomy.mri_tissue_fractions)",
    }.get(modality)
    if protocol is None:
        raise UsageError("anatomy statistics need the modality: pass --modality ct or mri")
    real, fake = ctx.anatomy("real"), ctx.anatomy("fake")
    comparison = anatomy.compare_distributions(real, fake)
    settings = {"protocol": protocol, "value": "Wasserstein-1 distance real vs generated per statistic, in its own unit"}
    if ctx.train is not None and not ctx.train_is_real and ctx.train.modality == modality and len(fake) > 0:
        # The floor of the W1 above: training volumes, drawn len(fake) at a time, against the same real set.
        from medgen.metrics.volumes import choose_subset

        train = volume_anatomy(choose_subset(ctx.train, ANATOMY_REFERENCE_MAX_TRAIN, ctx.options.seed), modality,
                               "train", progress=ctx.options.progress)
        reference = anatomy.sampling_reference(real, train, len(fake), repeats=ANATOMY_REFERENCE_REPEATS, seed=ctx.options.seed)
        for key, ref in reference.items():
            if key in comparison:
                comparison[key]["reference"] = ref
        if reference:
            first = next(iter(reference.values()))  # n and repeats are the same for every statistic
            settings["reference"] = (
                f"W1 of {first['n']} training volumes drawn at random (of up to {ANATOMY_REFERENCE_MAX_TRAIN}) vs the "
                f"same real set, {first['repeats']} draws: median, p10, p90, std; what another real sample of this "
                "size scores"
            )
    path = ctx.figure_path("anatomy_histograms.png")
    if path is not None and comparison:
        anatomy.save_anatomy_histograms(real, fake, path)
        ctx.figures.append(str(path))
    out = {
        "value": {k: v["wasserstein1"] for k, v in comparison.items()},
        "settings": settings,
        "details": comparison,
    }
    if modality == "ct":  # whether the organs vary independently of the body, as in the real volumes
        out["correlations"] = anatomy.correlations(real, fake, anatomy.CT_COUPLINGS)
    return out


def metric_memorisation(ctx: EvalContext) -> dict:
    from medgen.metrics.memorisation import memorisation_report, save_nearest_pairs_figure

    heldout = None if ctx.train_is_real else ctx.real
    report = memorisation_report(
        ctx.features("fake"),
        ctx.features("train"),
        ctx.features("real") if heldout is not None else None,
        fake_ids=ctx.fake.ids,
        train_ids=ctx.train.ids,
        heldout_ids=heldout.ids if heldout is not None else None,
        fake_vox=ctx.fake,
        train_vox=ctx.train,
        heldout_vox=heldout,
    )
    path = ctx.figure_path("nearest_training_pairs.png")
    if path is not None and report.get("closest_pairs"):
        save_nearest_pairs_figure(report["closest_pairs"], ctx.fake, ctx.train, path)
        ctx.figures.append(str(path))
    reference = "held-out real volumes (--real)" if heldout is not None else "leave-one-out within the training set (--real is the training set)"
    return {
        "value": report["ratio"],
        "settings": {
            "value": "median(generated -> nearest training) / median(reference -> nearest training); well below 1 = copying",
            "reference": reference,
            "rule": report["rule"],
            "n_likely_copy": report["n_likely_copy"],
        },
        "details": report,
    }


register("fid", metric_fid, "features", "Fréchet distance between Gaussian fits of real and generated features (lower is better)")
register("kid", metric_kid, "features", "Kernel Inception Distance: unbiased polynomial-kernel MMD^2 over subsets (lower is better)")
register("mmd", metric_mmd, "features", "MMD^2, Gaussian kernel with median-heuristic bandwidth, as the HA-GAN paper (lower is better)")
register("prdc", metric_prdc, "features", "precision (fidelity), recall (diversity), density and coverage of k-NN manifolds")
register("is", metric_is, "probabilities", "Inception Score from a domain classifier's class probabilities (higher is better)")
register("ms_ssim", metric_ms_ssim, "volumes", "mean 3D MS-SSIM between generated pairs (lower = more diverse)")
register("dimensionality", metric_dimensionality, "volumes",
         "participation ratio of the principal-component variances of 16^3 block means, real vs generated "
         "(how many independent directions a set varies along)")
register("anatomy", metric_anatomy, "volumes", "distribution distance of anatomy statistics (CT: HU-based; MRI: tissue fractions)")
register(
    "memorisation", metric_memorisation, "features",
    "nearest-training-volume distance ratio and likely copies (privacy)", needs_train=True,
)


def _register_paired_and_scores() -> None:
    from medgen.metrics import paired, scores

    register("psnr", paired.psnr, "paired", "peak signal-to-noise ratio 10 log10(range^2 / MSE) in dB (higher is better)")
    register("ssim", paired.ssim, "paired", "3D structural similarity, 11-voxel Gaussian window (higher is better, 1 = identical)")
    register("nmse", paired.nmse, "paired", "normalised mean squared error ||output - target||^2 / ||target||^2 (lower is better)")
    register("auroc", scores.auroc, "scores", "area under the ROC curve of per-volume anomaly scores (0.5 = chance)")
    register("auprc", scores.auprc, "scores", "average precision of per-volume anomaly scores (chance = share of positives)")
    register("voxel_auroc", scores.voxel_auroc, "scores", "area under the ROC curve over all voxels of anomaly maps vs masks")
    register("voxel_auprc", scores.voxel_auprc, "scores", "average precision over all voxels of anomaly maps vs masks")
    register("best_dice", scores.best_dice_value, "scores",
             "best Dice over all thresholds, voxels pooled (upper bound: threshold chosen on the masks)")


_register_paired_and_scores()
