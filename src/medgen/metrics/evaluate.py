"""Evaluation as a library call: the work of ``medgen evaluate``, and paired and score metrics.

Example::

    from medgen.metrics.evaluate import evaluate, evaluate_paired, evaluate_scores

    ev = evaluate("data/heldout", "samples/ct64", features="random", metrics="fid,kid,ms_ssim")
    ev.metrics["fid"]["value"]; print(ev.table()); ev.save("metrics.json")

    rec = evaluate_paired(reconstructions, originals)        # PSNR, SSIM, NMSE per volume, mean ± std
    det = evaluate_scores(anomaly_scores, is_abnormal)       # AUROC, AUPRC

:func:`evaluate` compares unpaired sets (real vs generated): ``real``, ``fake`` and
``train`` are folders (preprocessed data sets or folders of NIfTI/.npy volumes), opened
:class:`~medgen.metrics.volumes.VolumeSet` objects, or arrays ``[n, X, Y, Z]``. What needs a
trained model comes in ready to use: ``encoder=`` (a loaded model, for ``features="encoder"``)
and ``classifier=`` (a :class:`~medgen.metrics.registry.ClassifierProbs`, for IS).
:func:`medgen.api.evaluate` loads them from run and classifier folders, and samples a
training run first when ``fake`` is one.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from medgen.core.errors import InputError, UsageError
from medgen.metrics.registry import SET_KINDS, ClassifierProbs

__all__ = [
    "ClassifierProbs",
    "DEFAULT_FEATURE_METRICS",
    "Evaluation",
    "Plan",
    "check_options",
    "evaluate",
    "evaluate_paired",
    "evaluate_scores",
    "format_table",
]

DEFAULT_FEATURE_METRICS = ("fid", "kid", "mmd", "prdc")
DEFAULT_PAIRED_METRICS = ("psnr", "ssim", "nmse")
VOLUME_SCORE_METRICS = ("auroc", "auprc")
VOXEL_SCORE_METRICS = ("voxel_auroc", "voxel_auprc", "best_dice")


# ---------------------------------------------------------------------------- result


@dataclass
class Evaluation:
    """The result of an evaluation. ``report``: the JSON-ready dict ``medgen evaluate`` writes
    (every number with its settings, the extractor, the sets and their sizes)."""

    report: dict[str, Any]

    @property
    def metrics(self) -> dict[str, dict]:
        """``{name: result}``: each result has ``value`` and ``std`` (or ``error`` when it failed)."""
        return self.report["metrics"]

    @property
    def rows(self) -> list[dict[str, Any]]:
        """Per-volume values (paired evaluations); [] otherwise."""
        return self.report.get("rows", [])

    @property
    def failed(self) -> list[str]:
        """Names of the metrics that failed on the data."""
        return [n for n, r in self.metrics.items() if "error" in r]

    def save(self, path: str | os.PathLike) -> Path:
        """Write the report as JSON (atomically); returns the path."""
        from medgen.core.fileio import atomic_write_json

        path = Path(path)
        atomic_write_json(path, self.report)
        return path

    def table(self) -> str:
        """The text table ``medgen evaluate`` prints."""
        if self.report.get("kind") in ("paired", "scores"):
            return _summary_table(self.report)
        return format_table(self.report)


# ---------------------------------------------------------------------------- options


@dataclass(frozen=True)
class Plan:
    """Options resolved and checked before any volume is read: the feature extractor and its
    input settings, and the metric names when given (None: chosen from the data)."""

    features: str | None
    intensity: str
    axis_order: str
    input_size: int | None
    names: list[str] | None

    @property
    def needs_features(self) -> bool:
        """Whether a feature extractor will be needed (the default metrics include feature metrics)."""
        from medgen.metrics.registry import METRICS

        return self.names is None or any(METRICS[n].kind == "features" for n in self.names)


def _parse_input_size(value: int | str | None, features: str) -> int | None:
    if value is None:
        return 64 if features == "random" else None
    if value == "native":
        return None
    try:
        size = int(value)
    except (TypeError, ValueError):
        raise UsageError(f"--input-size {value!r}: give a number of voxels per side or 'native'") from None
    if size < 8:
        raise UsageError(f"--input-size {size}: need at least 8 voxels per side")
    return size


def _parse_names(metrics: str | Sequence[str] | None, kinds: tuple[str, ...] = SET_KINDS) -> list[str] | None:
    from medgen.metrics.registry import check_names

    if not metrics:
        return None
    parts = metrics.split(",") if isinstance(metrics, str) else [str(m) for m in metrics]
    names = [n.strip() for n in parts if n.strip()]
    if not names:
        raise UsageError("--metrics: give at least one metric name")
    check_names(names, kinds)
    return list(dict.fromkeys(names))


def check_options(
    *,
    metrics: str | Sequence[str] | None = None,
    features: str | None = None,
    weights: Any = None,
    classifier: Any = None,
    is_probs: Any = None,
    input_size: int | str | None = None,
    intensity: str | None = None,
    axis_order: str | None = None,
    paper_protocol: bool = False,
    batch_size: int = 2,
    bootstrap: int = 0,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    prdc_k: int = 5,
    ms_ssim_pairs: int = 50,
    is_splits: int = 10,
    **_volume_options: Any,
) -> Plan:
    """Check :func:`evaluate`'s options before any volume is read or model loaded (UsageError,
    with the command line's one-line messages). Takes :func:`evaluate`'s keyword arguments;
    those about the volumes are not checked here."""
    for name, value in (("batch_size", batch_size), ("kid_subsets", kid_subsets), ("kid_subset_size", kid_subset_size),
                        ("prdc_k", prdc_k), ("ms_ssim_pairs", ms_ssim_pairs), ("is_splits", is_splits)):
        if value < 1:
            raise UsageError(f"--{name.replace('_', '-')} {value}: need at least 1")
    if bootstrap < 0:
        raise UsageError(f"--bootstrap {bootstrap}: need 0 or more")

    # Feature extractor choice and its settings.
    features = features or ("med3d" if weights is not None else None)
    if paper_protocol:
        if features not in (None, "med3d"):
            raise UsageError("--paper-protocol uses MedicalNet features: drop --features or use --features med3d")
        features = "med3d"
        clash = [o for o, v in (("--intensity", intensity), ("--axis-order", axis_order), ("--input-size", input_size)) if v is not None]
        if clash:
            raise UsageError(f"--paper-protocol fixes the feature input; drop {', '.join(clash)}")
        intensity, axis_order, size = "raw", "zyx", None
    else:
        intensity, axis_order = intensity or "zscore", axis_order or "xyz"
        size = _parse_input_size(input_size, features or "random")

    names = _parse_names(metrics)
    if classifier is not None:
        if is_probs is not None:
            raise UsageError("give either --classifier DIR or --is-probs FILE.npy for IS, not both")
        if names is not None and "is" not in names:
            raise UsageError("--classifier is used by the is metric only: add is to --metrics")
    return Plan(features, intensity, axis_order, size, names)


def _default_names(real, fake, train, classifier: Any, is_probs: Any) -> list[str]:
    names = list(DEFAULT_FEATURE_METRICS) + ["ms_ssim", "dimensionality"]
    if (fake.modality or real.modality) in ("ct", "mri"):
        names.append("anatomy")
    if train is not None:
        names.append("memorisation")
    if classifier is not None or is_probs is not None:
        names.append("is")
    return names


# ---------------------------------------------------------------------------- unpaired sets


def evaluate(
    real: Any,
    fake: Any,
    train: Any = None,
    metrics: str | Sequence[str] | None = None,
    features: str | None = None,
    weights: str | os.PathLike | None = None,
    *,
    encoder: Any = None,
    encoder_info: dict[str, Any] | None = None,
    classifier: ClassifierProbs | None = None,
    is_probs: Any = None,
    n: int | None = None,
    seed: int = 0,
    input_size: int | str | None = None,
    intensity: str | None = None,
    axis_order: str | None = None,
    paper_protocol: bool = False,
    modality: str | None = None,
    batch_size: int = 2,
    bootstrap: int = 0,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    prdc_k: int = 5,
    ms_ssim_pairs: int = 50,
    is_splits: int = 10,
    device: str = "auto",
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    figures_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> Evaluation:
    """Compare generated volumes (``fake``) with real ones: ``medgen evaluate`` as a function.

    ``real``, ``fake``, ``train``: folders (preprocessed data sets or folders of volume files),
    :class:`~medgen.metrics.volumes.VolumeSet` objects, or arrays ``[n, X, Y, Z]`` (in [-1, 1],
    or HU/MRI intensities with ``modality``). ``train``: the model's training data, for the
    memorisation check (``real`` then serves as held-out reference).

    ``metrics``: names (list or comma-separated; default fid, kid, mmd, prdc, ms_ssim, dimensionality, anatomy
    when the modality is known, memorisation with ``train``, is with a classifier).
    ``features``: ``"med3d"`` (MedicalNet ResNet-50 from the ``weights`` file; the default
    when ``weights`` is given), ``"random"`` (seeded random weights: not comparable with
    published values) or ``"encoder"`` (the loaded model ``encoder`` with its ``encoder_info``;
    see :func:`medgen.metrics.features.make_extractor`). ``input_size``: voxels per side fed to
    the feature network, or ``"native"`` (default 64 for random, native for med3d);
    ``intensity``: ``"zscore"`` or ``"raw"``; ``axis_order``: ``"xyz"`` or ``"zyx"``;
    ``paper_protocol``: the HA-GAN authors' feature protocol (med3d, native, raw, zyx).

    ``classifier``: a :class:`~medgen.metrics.registry.ClassifierProbs` for IS (with the real
    volumes' IS as reference), or ``is_probs``: the generated volumes' class probabilities
    ``[n_fake, K]`` (``.npy`` file or array). ``n``: at most ``n`` volumes of each set (a
    subset drawn with ``seed``, which also seeds random weights and resampling).
    ``bootstrap``: std of FID and MMD over that many resamples. ``cache_dir`` /
    ``use_cache``: the feature cache (default ``<folder>/.medgen-cache``). ``figures_dir``:
    where figures go (None: none).

    Returns an :class:`Evaluation`. A metric that fails on the data (e.g. too few volumes)
    is reported with an ``error`` and the others are computed; wrong options raise
    UsageError, unreadable inputs InputError.
    """
    import datetime

    from medgen.core.version import __version__
    from medgen.metrics.registry import METRICS, EvalContext, EvalOptions, compute
    from medgen.metrics.volumes import align_shapes, as_volume_set, choose_subset, guess_modality

    plan = check_options(
        metrics=metrics, features=features, weights=weights, classifier=classifier, is_probs=is_probs,
        input_size=input_size, intensity=intensity, axis_order=axis_order, paper_protocol=paper_protocol,
        batch_size=batch_size, bootstrap=bootstrap, kid_subsets=kid_subsets, kid_subset_size=kid_subset_size,
        prdc_k=prdc_k, ms_ssim_pairs=ms_ssim_pairs, is_splits=is_splits,
    )
    features = plan.features

    # Volume sets.
    real = as_volume_set(real, modality=modality, what="--real")
    fake = as_volume_set(fake, modality=modality, what="--fake")
    train = as_volume_set(train, modality=modality, what="--train") if train is not None else None
    # Modality: known sets lend theirs to sets of raw files; what is still unknown is guessed.
    fake.inherit(real)
    real.inherit(fake)
    if train is not None:
        train.inherit(real)
    for vs in (real, fake, train):
        if vs is not None:
            guess_modality(vs)
    real = choose_subset(real, n, seed)
    fake = choose_subset(fake, n, seed)
    if train is not None:
        train = choose_subset(train, n, seed)

    names = plan.names if plan.names is not None else _default_names(real, fake, train, classifier, is_probs)
    needs_features = any(METRICS[m].kind == "features" for m in names)
    if needs_features and features is None:
        raise UsageError(
            "feature metrics need a feature network: pass --weights FILE (MedicalNet ResNet-50, the paper's "
            "protocol) or choose --features random explicitly (not comparable with published values)"
        )
    if weights is not None and features == "random":
        raise UsageError("--weights is not used by --features random; drop one of them")
    if "memorisation" in names and train is None:
        raise UsageError("metric 'memorisation' needs --train (the model's training data)")

    input_size = plan.input_size
    if needs_features and input_size is None and features != "encoder":
        shapes = {vs.native_shape(i) for vs in (real, fake, train) if vs is not None for i in range(len(vs))}
        if len(shapes) > 1:
            listed = ", ".join("x".join(map(str, s)) for s in sorted(shapes)[:3])
            raise UsageError(f"native feature input needs volumes of one shape, found {listed}; pass --input-size N")

    volume_metrics = any(METRICS[m].kind == "volumes" for m in names) or "memorisation" in names
    if volume_metrics:
        align_shapes(real, fake, train)

    def factory():
        from medgen.metrics.features import make_extractor

        return make_extractor(features, weights=weights, input_size=input_size, intensity=plan.intensity,
                              axis_order=plan.axis_order, device=device, seed=seed, encoder=encoder,
                              encoder_info=encoder_info)

    figures_dir = Path(figures_dir) if figures_dir is not None else None
    options = EvalOptions(
        seed=seed, bootstrap=bootstrap, kid_subsets=kid_subsets, kid_subset_size=kid_subset_size,
        prdc_k=prdc_k, ms_ssim_pairs=ms_ssim_pairs, is_probs=is_probs, classifier=classifier,
        is_splits=is_splits, device=device, batch_size=batch_size,
        progress=progress, cache_dir=str(cache_dir) if cache_dir is not None else None, use_cache=use_cache,
        figures_dir=str(figures_dir) if figures_dir is not None else None,
    )
    ctx = EvalContext(real=real, fake=fake, train=train, extractor_factory=factory if features else None, options=options)
    if needs_features:
        _ = ctx.extractor  # fail early on a bad weight file, before reading any volume
    results = compute(names, ctx)

    if figures_dir is not None and needs_features and ctx.has_features("real") and ctx.has_features("fake"):
        from medgen.metrics.feature_figure import save_feature_figure

        path = figures_dir / "features.png"
        save_feature_figure(ctx.features("real"), ctx.features("fake"), path)
        ctx.figures.append(str(path))

    extractor = ctx.extractor.describe() if needs_features else None
    notes = list(ctx.notes)
    for role, vs in (("real", real), ("fake", fake), ("train", train)):
        if vs is not None:
            notes += [f"{role}: {note}" for note in vs.notes]
    report = {
        "medgen_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "warning": extractor.get("warning") if extractor else None,
        "extractor": extractor,
        "real": real.describe(),
        "fake": fake.describe(),
        "train": train.describe() if train is not None else None,
        "options": {
            "metrics": names, "n": n, "seed": seed, "bootstrap": bootstrap,
            "paper_protocol": paper_protocol, "batch_size": batch_size,
        },
        "feature_cache": ctx.feature_info,
        "metrics": results,
        "figures": ctx.figures,
        "notes": notes,
    }
    return Evaluation(report)


# ---------------------------------------------------------------------------- tables


def fmt_number(x: Any) -> str:
    """Numbers to 4 significant digits, None to '-', anything else as text."""
    if x is None:
        return "-"
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, float):
        return "nan" if math.isnan(x) else f"{x:.4g}"
    return str(x)


def _anatomy_spread_notes(value: dict[str, Any], details: dict[str, Any]) -> list[str]:
    """One line per anatomy statistic: real and generated mean (std), so that a W1 can be read as a
    wrong mean or a wrong spread; flagged when the generated spread is under half or over twice the real."""
    notes = []
    for key in value:
        d = details.get(key) or {}
        stats = [d.get(k) for k in ("real_mean", "real_std", "fake_mean", "fake_std")]
        if not all(isinstance(x, (int, float)) and math.isfinite(x) for x in stats):
            continue
        rm, rs, fm, fs = stats
        line = f"anatomy.{key}: mean (std) real {fmt_number(rm)} ({fmt_number(rs)}), generated {fmt_number(fm)} ({fmt_number(fs)})"
        if rs > 0 and fs < 0.5 * rs:
            line += f"; generated spread {fs / rs:.2f}x the real"
        elif rs > 0 and fs > 2 * rs:
            line += f"; generated spread {fs / rs:.1f}x the real"
        notes.append(line)
    return notes


def _anatomy_coupling_notes(correlations: dict[str, Any]) -> list[str]:
    """One line per pair of anatomy statistics: their correlation r over the real and over the generated
    volumes. Flagged, as the spreads are, when the share of either's variance the other does not explain,
    1 − r², is under half or over twice the real one: at r = 0.8 in real volumes a generated 0.98 leaves a
    tenth of the independent variation (an organ that only scales with the body). Also flagged: a
    correlation 0.5 or more away from the real one (0.1 against -0.6)."""
    notes = []
    for pair, c in correlations.items():
        real, fake = c.get("real"), c.get("fake")
        if not all(isinstance(x, (int, float)) and math.isfinite(x) for x in (real, fake)):
            continue
        line = f"anatomy correlation {pair.replace('~', ' ~ ')}: real {real:.2f}, generated {fake:.2f}"
        free_real, free_fake = 1 - real**2, 1 - fake**2
        if free_real > 0 and not 0.5 <= free_fake / free_real <= 2:
            line += f"; unexplained variance 1 - r^2 {free_fake / free_real:.2g}x the real"
        elif abs(fake - real) >= 0.5:
            line += f"; {fake - real:+.2f} from the real"
        notes.append(line)
    return notes


def metric_rows(metrics: dict[str, Any]) -> tuple[list[tuple[str, ...]], list[str]]:
    """Table rows (metric, value, std, n_real, n_fake) of a report's ``metrics``, and the notes
    that explain them (failures, what a value means). Metrics that carry a reference measured
    on real data alone get a row for it under their own: MS-SSIM among real pairs, IS of real
    volumes, and per anatomy statistic the W1 another real sample of the same size scores
    (training vs real, :func:`medgen.metrics.anatomy.sampling_reference`)."""
    rows: list[tuple[str, ...]] = []
    notes: list[str] = []
    for name, r in metrics.items():
        if "error" in r:
            notes.append(f"FAILED {name}: {r['error']}")
            continue
        n_real, n_fake = fmt_number(r.get("n_real")), fmt_number(r.get("n_fake"))
        details = r.get("details") or {}
        label = name
        if name == "memorisation":
            notes.append("memorisation ratio: median distance generated→nearest training volume / "
                         "held-out→nearest training (≈ 1 healthy, ≪ 1 suggests copies); "
                         f"{details.get('n_likely_copy', '?')} generated volume(s) flagged as likely copies")
            label = "memorisation ratio"
        value = r.get("value")
        if isinstance(value, dict):
            for key, v in value.items():
                if name != "anatomy":
                    rows.append((f"{label}.{key}", fmt_number(v), "-", n_real, n_fake))
                    if name == "prdc" and key == "coverage" and "coverage_same_distribution" in details:
                        rows.append(("prdc.coverage (same distribution, expected)",
                                     fmt_number(details["coverage_same_distribution"]), "-", n_real, n_fake))
                    continue
                rows.append((f"anatomy.{key} (W1)", fmt_number(v), "-", n_real, n_fake))
                ref = (details.get(key) or {}).get("reference")
                if ref:
                    rows.append((f"anatomy.{key} (W1, training vs real, reference)", fmt_number(ref.get("median")),
                                 fmt_number(ref.get("std")), n_real, fmt_number(ref.get("n"))))
            if name == "anatomy" and any((details.get(k) or {}).get("reference") for k in value):
                notes.append("anatomy reference: median W1 of random training samples as large as the generated "
                             "set against the same real set; a generated W1 near it is as close as real data gets "
                             "at this sample size")
            if name == "prdc":
                notes += _prdc_notes(r)
            if name == "anatomy":
                notes += _anatomy_spread_notes(value, details)
                notes += _anatomy_coupling_notes(r.get("correlations") or {})
            continue
        rows.append((label, fmt_number(value), fmt_number(r.get("std")), n_real, n_fake))
        if name in ("kid", "mmd") and isinstance(value, (int, float)) and value < 0:
            notes.append(f"{name}: unbiased estimate; below 0 means the two sets are indistinguishable "
                         "at this sample size")
        reference = {"ms_ssim": "ms_ssim (real pairs, reference)", "is": "is (real volumes, reference)"}
        real_ref = details.get("real") if name in reference else None
        if real_ref:
            rows.append((reference[name], fmt_number(real_ref.get("mean")), fmt_number(real_ref.get("std")), n_real, "-"))
        if name == "dimensionality" and details.get("real"):
            rows.append(("dimensionality (real, reference)", fmt_number(details["real"].get("participation_ratio")),
                         "-", n_real, "-"))
            notes += _dimensionality_notes(details)
    return rows, notes


def _prdc_notes(r: dict) -> list[str]:
    """What coverage's reference row means and, where the two sets differ in size, how that moves recall and
    coverage (:mod:`medgen.metrics.prdc`)."""
    expected = (r.get("details") or {}).get("coverage_same_distribution")
    if expected is None:
        return []
    k = (r.get("settings") or {}).get("k", "k")
    line = (f"prdc: a generator that draws from the real distribution itself would cover {expected:.2f} of the real "
            f"volumes at these set sizes and k={k}")
    n_real, n_fake = r.get("n_real"), r.get("n_fake")
    if n_real and n_fake and n_real != n_fake:
        line += (f"; with {'fewer' if n_fake < n_real else 'more'} generated than real volumes coverage comes out "
                 f"{'lower' if n_fake < n_real else 'higher'} and recall {'higher' if n_fake < n_real else 'lower'} "
                 "than at equal sizes: compare sets of equal size")
    return [line] + _missed_notes((r.get("details") or {}).get("missed_anatomy") or {})


MISSED_STATISTICS_SHOWN = 3  # statistics named per line, the largest standardized differences first


def _missed_notes(missed: dict) -> list[str]:
    """Which anatomy the real volumes outside the generated set have (:func:`medgen.metrics.anatomy.missed_profile`):
    the statistics whose means differ most between the missed and the reached real volumes."""
    what = {"coverage": "that no generated volume covers", "recall": "outside every generated volume's k-NN ball (recall)"}
    notes = []
    for kind in ("coverage", "recall"):
        profile = missed.get(kind) or {}
        if not profile:
            continue
        n_missed = max(p.get("n_missed") or 0 for p in profile.values())
        if n_missed == 0:
            notes.append(f"prdc: every real volume is reached ({kind})")
            continue
        ranked = sorted((p for p in profile.items() if p[1].get("standardized") is not None),
                        key=lambda kv: -abs(kv[1]["standardized"]))[:MISSED_STATISTICS_SHOWN]
        if not ranked:
            continue
        parts = [f"{key} ({p['standardized']:+.2f} real SD: mean {fmt_number(p['missed_mean'])} against "
                 f"{fmt_number(p['reached_mean'])})" for key, p in ranked]
        notes.append(f"prdc: the {n_missed} real volumes {what[kind]} differ most from the others in "
                     + ", ".join(parts))
    return notes


def _percent(share: float | None) -> str:
    """A share in [0, 1] as a percentage; "-" when undefined (None or NaN: a set without variance)."""
    return "-" if share is None or share != share else f"{100 * share:.0f} %"


def _dimensionality_notes(details: dict) -> list[str]:
    """One line on how the generated set's variance spreads over directions compared with the real set's."""
    f, r = details.get("fake") or {}, details.get("real") or {}
    pf, pr = f.get("participation_ratio"), r.get("participation_ratio")
    if pf is None or not pr:  # pf = 0: generated volumes all alike, said below
        return []
    vf, vr = f.get("total_variance") or 0.0, r.get("total_variance") or 0.0
    line = (f"dimensionality: the generated set's variance spreads over {pf:.2f} directions (participation ratio) "
            f"against the real set's {pr:.2f}; 90 % of it lies in {f.get('components_90')} vs "
            f"{r.get('components_90')} principal components, the first holds {_percent(f.get('first_share'))} vs "
            f"{_percent(r.get('first_share'))}; total variance {vf:.3g} vs {vr:.3g}")
    if vr > 0 and vf < 0.5 * vr:
        # A collapsed generator's little remaining variation is noise, spread over many directions.
        line += ": the generated volumes vary less than half as much as real ones, so their directions are mostly noise"
    elif pf < 0.8 * pr:  # the real set's own ratio varies by about 6 % (SD) between random subsets of 64 phantoms
        line += ": the samples vary along fewer independent directions than real volumes"
    return [line]


def format_table(report: dict) -> str:
    """The printed summary: header naming the extractor (and its warning), one row per number."""
    lines = []
    ex = report.get("extractor")
    if ex is not None:
        size = ex.get("input_size")
        size_text = "x".join(map(str, size)) if isinstance(size, list) else str(size)
        lines.append(f"features: {ex['name']} ({ex.get('architecture', '')}; input {size_text}, "
                     f"intensity {ex.get('intensity')}, axes {ex.get('axis_order')})")
        if ex.get("warning"):
            lines.append(f"WARNING: {ex['warning']}")
    for role in ("real", "fake", "train"):
        d = report.get(role)
        if d:
            lines.append(f"{role}: {d['path']} ({d['kind']}, {d['n']} volumes, modality {d['modality'] or 'unknown'})")
    body, notes = metric_rows(report["metrics"])  # notes: lines printed under the table
    rows = [("metric", "value", "std", "n_real", "n_fake"), *body]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    for row in rows:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    lines += notes
    for note in report.get("notes", []):
        lines.append(f"note: {note}")
    for fig in report.get("figures", []):
        lines.append(f"figure: {fig}")
    return "\n".join(lines)


def _summary_table(report: dict) -> str:
    """Table of a paired or score evaluation: metric, value (mean), std, n."""
    rows = [("metric", "value", "std", "n")]
    notes = []
    for name, r in report["metrics"].items():
        if "error" in r:
            notes.append(f"FAILED {name}: {r['error']}")
            continue
        rows.append((name, fmt_number(r["value"]), fmt_number(r.get("std")), str(r["n"])))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines += notes
    lines += [f"note: {note}" for note in report.get("notes", [])]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- paired volumes


def _volume_list(volumes: Any, what: str) -> tuple[Sequence[np.ndarray], list[str] | None]:
    """Volumes as an indexable sequence of (X, Y, Z) arrays, with ids where the input names them."""
    from medgen.metrics.volumes import VolumeSet, as_volume_set

    if isinstance(volumes, (str, os.PathLike, VolumeSet)):
        vs = as_volume_set(volumes, what=what)
        return vs, list(vs.ids)
    if hasattr(volumes, "detach"):
        volumes = volumes.detach().cpu().numpy()
    if isinstance(volumes, np.ndarray):
        if volumes.ndim == 5 and volumes.shape[1] == 1:
            volumes = volumes[:, 0]
        if volumes.ndim == 3:
            volumes = volumes[None]
        if volumes.ndim != 4:
            raise UsageError(f"{what}: volumes of shape {volumes.shape}: expected [n, X, Y, Z]")
        return volumes, None
    return [np.asarray(v) for v in volumes], None


def _metric_entry(name: str, values: list[float], settings: dict[str, Any]) -> dict[str, Any]:
    from medgen.metrics.registry import METRICS

    arr = np.asarray(values, dtype=np.float64)
    with np.errstate(invalid="ignore"):  # infinite PSNR of identical volumes: mean inf, std undefined
        mean, std = float(np.mean(arr)), float(np.std(arr))
    return {
        "value": mean,
        "std": std if len(arr) > 1 else None,
        "n": len(arr),
        "description": METRICS[name].description,
        "settings": settings,
    }


def _report_head(kind: str) -> dict[str, Any]:
    import datetime

    from medgen.core.version import __version__

    return {
        "medgen_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "kind": kind,
    }


def evaluate_paired(
    outputs: Any,
    targets: Any,
    masks: Any = None,
    metrics: str | Sequence[str] | None = None,
    data_range: float = 2.0,
) -> Evaluation:
    """Compare each output volume with its target: PSNR, SSIM, NMSE (:mod:`medgen.metrics.paired`).

    ``outputs``, ``targets``: arrays ``[n, X, Y, Z]`` (or ``[X, Y, Z]`` for one pair), lists
    of ``(X, Y, Z)`` arrays, folders or VolumeSets (read in [-1, 1]), paired in order, each
    pair of one shape. ``masks``: boolean volumes in the same form, restricting every metric to
    their voxels (None: whole volumes). ``metrics``: names of ``paired`` metrics (default psnr,
    ssim, nmse). ``data_range``: max − min of the intensity range (2 for [-1, 1]).

    Returns an :class:`Evaluation` whose ``rows`` hold each pair's values (``id`` and one
    column per metric) and whose ``metrics`` give, per metric, the mean (``value``), the
    population ``std`` over pairs and ``n``. PSNR of identical volumes is infinite (null in
    JSON, and so is a mean that includes it). A metric that fails on a pair (e.g. SSIM on
    volumes under 11 voxels a side) is reported with an ``error``.
    """
    from medgen.metrics.registry import METRICS

    names = _parse_names(metrics, ("paired",)) or list(DEFAULT_PAIRED_METRICS)
    if not data_range > 0:
        raise UsageError(f"data_range {data_range}: need a positive intensity range (2 for [-1, 1])")
    outs, ids = _volume_list(outputs, "outputs")
    tgts, _ = _volume_list(targets, "targets")
    msks = _volume_list(masks, "masks")[0] if masks is not None else None
    if len(outs) != len(tgts) or (msks is not None and len(msks) != len(outs)):
        counts = f"{len(outs)} outputs, {len(tgts)} targets" + (f", {len(msks)} masks" if msks is not None else "")
        raise InputError(f"paired evaluation needs one target (and mask) per output, got {counts}")
    if len(outs) == 0:
        raise InputError("paired evaluation: no volumes")
    ids = ids or [str(i) for i in range(len(outs))]

    rows: list[dict[str, Any]] = [{"id": i} for i in ids]
    errors: dict[str, str] = {}
    for k in range(len(outs)):
        out, tgt = np.asarray(outs[k]), np.asarray(tgts[k])
        if out.shape != tgt.shape:
            raise InputError(f"output {ids[k]} has shape {out.shape}, its target {tgt.shape}")
        mask = np.asarray(msks[k]) if msks is not None else None
        for name in names:
            if name in errors:
                continue
            try:
                rows[k][name] = METRICS[name].fn(out, tgt, mask, data_range)
            except ValueError as exc:
                errors[name] = f"{type(exc).__name__}: {exc} (volume {ids[k]})"
    settings = {"data_range": data_range, "masked": msks is not None}
    results: dict[str, dict] = {}
    for name in names:
        if name in errors:
            results[name] = {"error": errors[name], "n": len(outs)}
            continue
        extra = {"window": "Gaussian, 11 voxels, sigma 1.5, K1 0.01, K2 0.03, interior voxels"} if name == "ssim" else {}
        results[name] = _metric_entry(name, [r[name] for r in rows], {**settings, **extra, "uncertainty": "std over volumes (ddof=0)"})
    for r in rows:
        for name in errors:
            r.pop(name, None)
    from medgen.metrics.registry import _json_number

    report = {**_report_head("paired"), "n": len(outs), "data_range": data_range, "masked": msks is not None,
              "metrics": _json_number(results), "rows": _json_number(rows), "notes": []}
    if any(not np.isfinite(r.get("psnr", 0.0)) for r in rows):
        report["notes"].append("PSNR is infinite (null) for identical volumes")
    return Evaluation(report)


# ---------------------------------------------------------------------------- scores


def evaluate_scores(scores: Any, labels: Any, metrics: str | Sequence[str] | None = None) -> Evaluation:
    """Rate anomaly scores against binary labels: AUROC and AUPRC (:mod:`medgen.metrics.scores`).

    Per volume: ``scores`` one number per volume ``[n]`` and ``labels`` 0/1 ``[n]`` (default
    metrics auroc, auprc). Per voxel: ``scores`` anomaly maps ``[n, X, Y, Z]`` (or a list of
    maps) and ``labels`` the ground-truth masks of the same shapes, pooled over all voxels
    (default metrics voxel_auroc, voxel_auprc).

    Returns an :class:`Evaluation`: per metric ``value``, ``std`` (None), ``n`` (samples:
    volumes or voxels), with the counts of positives and negatives in the report.
    """
    from medgen.metrics.registry import METRICS, _json_number
    from medgen.metrics.scores import flatten_maps

    listed = isinstance(scores, (list, tuple))
    as_array = np.asarray(scores) if not listed or all(np.ndim(x) == 0 for x in scores) else None
    voxel = as_array is None or as_array.ndim > 1
    names = _parse_names(metrics, ("scores",)) or list(VOXEL_SCORE_METRICS if voxel else VOLUME_SCORE_METRICS)
    wrong = [m for m in names if (m in VOXEL_SCORE_METRICS) != voxel]
    if wrong:
        level = "anomaly maps (per voxel)" if voxel else "one score per volume"
        fit = VOXEL_SCORE_METRICS if voxel else VOLUME_SCORE_METRICS
        raise UsageError(f"metric {wrong[0]!r} does not fit {level}; use {', '.join(fit)}")
    if voxel:
        s, y = flatten_maps(scores), flatten_maps(labels)
    else:
        s, y = np.asarray(as_array).reshape(-1), np.asarray(labels).reshape(-1)
    if s.size != y.size:
        raise InputError(f"{s.size} score values but {y.size} label values")
    results: dict[str, dict] = {}
    for name in names:
        try:
            value = METRICS[name].fn(s, y)
        except ValueError as exc:
            results[name] = {"error": f"{type(exc).__name__}: {exc}", "n": int(s.size)}
            continue
        results[name] = {"value": value, "std": None, "n": int(s.size), "description": METRICS[name].description,
                         "settings": {"level": "voxel" if voxel else "volume"}}
    n_pos = int(np.count_nonzero(y))
    report = {**_report_head("scores"), "level": "voxel" if voxel else "volume", "n": int(s.size),
              "n_positive": n_pos, "n_negative": int(s.size) - n_pos, "metrics": _json_number(results), "notes": []}
    return Evaluation(report)
