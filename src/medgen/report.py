"""One self-contained HTML page describing a training run (``medgen report``).

Every image is embedded as a base64 ``data:`` URI, so the page is a single
file that can be mailed or archived. Sections: header, configuration, training
curves, real vs generated mosaics (axial, coronal, sagittal), the latest
training sample mosaic, the metrics of ``medgen evaluate`` with their caveats,
the evaluation figures (anatomy histograms, nearest training pairs, feature
embedding) and latent traversals when a figure of them exists.

Example::

    from medgen.report import write_report
    write_report("runs/thorax64", "runs/thorax64/report.html", metrics="metrics.json")
"""

from __future__ import annotations

import base64
import datetime
import html
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medgen.core.errors import InputError
from medgen.core.fileio import atomic_write_text
from medgen.metrics.evaluate import fmt_number, metric_rows

# Figure files written by ``medgen evaluate`` into ``<metrics stem>-figures/``: (file, heading, caption).
EVAL_FIGURES = (
    ("anatomy_histograms.png", "Anatomy histograms",
     "Distributions of anatomical measurements in real and generated volumes."),
    ("dimensionality.png", "Directions of variation",
     "Cumulative share of the variance held by the first principal components of 16³ block means: a generated "
     "curve that rises faster than the real one varies along fewer independent directions."),
    ("nearest_training_pairs.png", "Nearest-neighbour pairs (memorisation check)",
     "Generated volumes next to their nearest training volume in feature space; near-identical pairs suggest copies."),
    ("features.png", "Embedding plot",
     "Real and generated volumes' features projected on their first two principal components."),
)
# Where a latent-traversal figure may be found (relative to the run, then to the metrics figures).
TRAVERSAL_NAMES = ("latent_traversals.png", "traversals.png")

# Training settings shown next to the model configuration (keys of config.yaml).
# The family's hyper-parameters (``hparams``) follow them.
TRAINING_KEYS = (
    "family", "data", "preset", "iters", "max_minutes", "batch", "ema_decay", "seed", "device", "precision",
    "label_column", "split_seed", "split_fractions", "medgen_version",
)

CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%;border:1px solid #ddd}.note{color:#555;font-style:italic}
.warning{background:#fff3cd;border:2px solid #e0a800;padding:.6em 1em;font-weight:bold}
.failed{color:#b00}.cols{display:flex;flex-wrap:wrap;gap:2em;align-items:flex-start}
"""


def esc(value: Any) -> str:
    """HTML-escaped text of ``value`` (quotes included)."""
    return html.escape(str(value), quote=True)


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def img_tag(png: bytes, alt: str) -> str:
    return f'<img src="{png_data_uri(png)}" alt="{esc(alt)}">'


def _render_png(writer: Callable[[Path], Any]) -> bytes:
    """Bytes of a PNG that ``writer(path)`` writes (into a temporary folder)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "figure.png"
        writer(path)
        return path.read_bytes()


def _table(rows: list[tuple[Any, ...]], header: tuple[str, ...], numeric_from: int = 1) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="num">{esc(c)}</td>' if i >= numeric_from else f"<td>{esc(c)}</td>" for i, c in enumerate(row)
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _note(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>'


def default_metrics_path(run_dir: str | os.PathLike) -> Path | None:
    """``RUN/../metrics.json`` (the layout ``medgen demo`` leaves) if it exists, else None."""
    path = Path(run_dir).resolve().parent / "metrics.json"
    return path if path.is_file() else None


# --------------------------------------------------------------------------- sections


def config_section(cfg: Any) -> str:
    d = cfg.to_dict()
    model_rows = [(k, _cfg_value(v)) for k, v in (d.get("model") or {}).items()]
    train_rows = [(k, _cfg_value(d[k])) for k in TRAINING_KEYS if k in d]
    train_rows += [(k, _cfg_value(v)) for k, v in (d.get("hparams") or {}).items()]
    train_rows.append(("training volumes", len(d.get("train_ids") or [])))
    pre_rows = [(k, _cfg_value(v)) for k, v in (d.get("preprocess") or {}).items()]
    blocks = [("Model", model_rows), ("Training", train_rows), ("Preprocessing of the training data", pre_rows)]
    cols = [f"<div><h3>{esc(title)}</h3>{_table(rows, ('setting', 'value'), 9)}</div>" for title, rows in blocks if rows]
    return "<h2>Configuration</h2>\n" + f'<div class="cols">{"".join(cols)}</div>'



def _cfg_value(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return ", ".join(fmt_number(x) for x in v)
    if isinstance(v, dict):
        return json.dumps(v)
    return fmt_number(v)


def curves_section(run_dir: Path) -> str:
    from medgen.viz.curves import save_training_curves

    parts = ["<h2>Training curves</h2>"]
    try:
        png = _render_png(lambda p: save_training_curves(run_dir, p))
    except InputError as exc:
        return "\n".join(parts + [_note(f"no training curves: {exc}")])
    parts.append(img_tag(png, "training curves"))
    parts.append(_note("Adversarial losses (BCE, nats; dotted: chance level) and encoder reconstruction "
                       "losses (L1 in [-1, 1] units) against iterations, from metrics.csv."))
    return "\n".join(parts)


def real_volumes(cfg: Any, n: int) -> tuple[list[Any], list[str], str | None]:
    """Up to ``n`` training volumes of the run's data ([-1, 1]), their titles, and a note when unavailable."""
    from medgen.data.dataset import VolumeDataset
    from medgen.core.errors import MedgenError

    root = Path(cfg.data)
    if not (root / "manifest.csv").is_file():
        return [], [], f"the run's training data {cfg.data} is not available here: generated volumes only"
    try:
        ids = list(cfg.train_ids) if cfg.train_ids else None
        ds = VolumeDataset(root, split="all" if ids is None else "train", label_column=None, ids=ids, keys=("image",))
        items = [ds[i] for i in range(min(n, len(ds)))]
    except MedgenError as exc:
        return [], [], f"the run's training data could not be read ({exc}): generated volumes only"
    return [it["image"][0].numpy() for it in items], [f"real {it['id']}" for it in items], None


def samples_section(run_dir: Path, cfg: Any, n: int, seed: int, device: str) -> str:
    from medgen.core.device import resolve_device
    from medgen.families import registry
    from medgen.viz.mosaic import save_mosaic

    parts = ["<h2>Real vs generated volumes</h2>"]
    model = registry.load(run_dir, device=resolve_device(device))
    if not callable(getattr(model, "generate", None)):
        if callable(getattr(model, "reconstruct", None)):
            return reconstructions_section(model, cfg, n)
        return "\n".join(parts + [_note(f"the run's family ({cfg.family}) does not generate volumes")])
    fake = list(model.generate(n, seed=seed))
    real, titles, note = real_volumes(cfg, n)
    vols = real + fake
    titles = titles + [f"generated {i} (seed {seed})" for i in range(len(fake))]
    png = _render_png(lambda p: save_mosaic(vols, p, titles=titles, vmin=-1.0, vmax=1.0, min_panel_px=128))
    parts.append(img_tag(png, "real and generated volumes in three planes"))
    text = (f"Rows: {len(real)} real training volume(s) on top, then {len(fake)} volume(s) of the EMA "
            f"generator (seed {seed}); columns: central slices in three planes; grey scale [-1, 1].")
    if titles[: len(real)]:
        text += " Real: " + ", ".join(t.removeprefix("real ") for t in titles[: len(real)]) + "."
    parts.append(_note(text))
    if note:
        parts.append(_note(note))
    return "\n".join(parts)


def reconstructions_section(model: Any, cfg: Any, n: int) -> str:
    """Real training volumes above their reconstructions, for a model that encodes and decodes but does not sample."""
    import numpy as np

    from medgen.viz.mosaic import save_mosaic

    parts = ["<h2>Real vs reconstructed volumes</h2>",
             _note(f"the run's family ({cfg.family}) does not generate volumes; it encodes and decodes them")]
    real, titles, note = real_volumes(cfg, n)
    if not real:
        return "\n".join(parts + [_note(note or "no training volumes to reconstruct")])
    rec = list(model.reconstruct(np.stack(real)))
    l1 = [float(np.abs(a - b).mean()) for a, b in zip(real, rec)]
    vols = real + rec
    titles = titles + [f"reconstructed (L1 {e:.3f})" for e in l1]
    png = _render_png(lambda p: save_mosaic(vols, p, titles=titles, vmin=-1.0, vmax=1.0, min_panel_px=128))
    parts.append(img_tag(png, "real and reconstructed volumes in three planes"))
    parts.append(_note(f"Rows: {len(real)} real training volume(s), then their reconstructions; mean absolute "
                       f"error in [-1, 1] units: {np.mean(l1):.4f}."))
    return "\n".join(parts)


def training_samples_section(run_dir: Path) -> str:
    parts = ["<h2>Latest training samples</h2>"]
    found = sorted((run_dir / "samples").glob("iter-*.png"))
    if not found:
        return "\n".join(parts + [_note("no sample mosaics in samples/ (training ran with --sample-every 0?)")])
    latest = found[-1]
    parts.append(img_tag(latest.read_bytes(), f"training samples {latest.name}"))
    parts.append(_note(f"samples/{latest.name}: the EMA generator on fixed latent codes during training."))
    return "\n".join(parts)


def metrics_section(report: dict[str, Any] | None, source: Path | None) -> str:
    parts = ["<h2>Metrics</h2>"]
    if report is None:
        return "\n".join(parts + [_note(
            "no metrics: run `medgen evaluate --real DATA --fake RUN --out metrics.json` and pass --metrics metrics.json")])
    parts.append(_note(f"from {source}"))
    ex = report.get("extractor") or {}
    warning = report.get("warning") or ex.get("warning")
    if not warning and ex.get("name") == "random":
        warning = "features come from a network with random weights: NOT comparable with published values"
    if warning:
        parts.append(f'<p class="warning">WARNING: {esc(warning)}</p>')
    if ex:
        parts.append(_note(f"feature extractor: {ex.get('name')} ({ex.get('architecture', '')}; "
                           f"input {ex.get('input_size')}, intensity {ex.get('intensity')})"))
    for role in ("real", "fake", "train"):
        d = report.get(role)
        if isinstance(d, dict):
            parts.append(_note(f"{role}: {d.get('path')} ({d.get('kind')}, {d.get('n')} volumes)"))
    rows, notes = metric_rows(report.get("metrics") or {})
    parts.append(_table(rows, ("metric", "value", "std", "n_real", "n_fake")))
    for note in notes:
        css = "note failed" if note.startswith("FAILED") else "note"
        parts.append(f'<p class="{css}">{esc(note)}</p>')
    for note in report.get("notes") or []:
        parts.append(_note(f"note: {note}"))
    return "\n".join(parts)


def baseline_section(report: dict[str, Any] | None, baseline: dict[str, Any] | None, source: Path | None) -> str:
    """Trained generator vs a baseline (usually the same network untrained), metric by metric."""
    from medgen.metrics.compare import compare_reports, summary_line

    parts = ["<h2>Trained vs untrained generator</h2>"]
    if baseline is None or report is None:
        return "\n".join(parts + [_note(
            "no baseline: `medgen generate RUN --untrained --n N --out U`, `medgen evaluate --fake U ... --out "
            "baseline.json`, then pass --baseline baseline.json")])
    rows = compare_reports(report, baseline)
    parts.append(_note(f"baseline from {source}"))
    table = [(r["metric"], fmt_number(r["a"]), fmt_number(r["b"]),
              {"lower": "lower", "higher": "higher", "closer_to_real": "closer to real"}[r["direction"]],
              "trained" if r["a_better"] else "untrained") for r in rows]
    parts.append(_table(table, ("quantity", "trained", "untrained", "better when", "better"), 1))
    parts.append(f"<p><b>{esc(summary_line(rows))}</b></p>")
    return "\n".join(parts)


def _read_metrics_json(path: Path, what: str = "metrics") -> dict[str, Any]:
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: no such {what} file") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InputError(f"{path}: not a JSON file written by `medgen evaluate`") from None
    if not isinstance(report, dict) or not isinstance(report.get("metrics"), dict):
        raise InputError(f"{path}: no 'metrics' mapping (expected the JSON of `medgen evaluate`)")
    return report


def figures_section(figures_dir: Path | None) -> str:
    parts = ["<h2>Evaluation figures</h2>"]
    for name, heading, caption in EVAL_FIGURES:
        path = figures_dir / name if figures_dir is not None else None
        if path is not None and path.is_file():
            parts += [f"<h3>{esc(heading)}</h3>", img_tag(path.read_bytes(), heading), _note(caption)]
        else:
            parts.append(_note(f"{heading}: no {name} (written by `medgen evaluate` unless --no-figures)"))
    return "\n".join(parts)


def traversals_section(run_dir: Path, figures_dir: Path | None, traversals: Path | None = None) -> str:
    parts = ["<h2>Latent traversals</h2>"]
    if traversals is not None:
        if not traversals.is_file():
            raise InputError(f"{traversals}: no such traversal figure")
        caption = ("Samples along the latent directions that change lung and bone volume (found by linear "
                   "regression of the measured fractions on z); the measured fraction is printed under each slice. "
                   f"From {traversals}")
        return "\n".join(parts + [img_tag(traversals.read_bytes(), "latent traversals"), _note(caption)])
    folders = [run_dir] + ([figures_dir] if figures_dir is not None else [])
    for folder in folders:
        for name in TRAVERSAL_NAMES:
            path = folder / name
            if path.is_file():
                return "\n".join(parts + [img_tag(path.read_bytes(), "latent traversals"), _note(str(path))])
    return "\n".join(parts + [_note("no latent traversal figure yet (" + " or ".join(TRAVERSAL_NAMES) + ")")])


# --------------------------------------------------------------------------- page


def build_report(
    run_dir: str | os.PathLike,
    *,
    metrics: str | os.PathLike | None = None,
    n_samples: int = 4,
    seed: int = 0,
    samples: bool = True,
    device: str = "cpu",
    progress: bool = True,
    baseline: str | os.PathLike | None = None,
    traversals: str | os.PathLike | None = None,
) -> str:
    """The HTML text of the report of training run ``run_dir``.

    metrics: a JSON written by ``medgen evaluate`` (its figures are read from
    ``<stem>-figures/`` beside it). baseline: the same evaluation of a baseline
    (e.g. the untrained generator), shown side by side. traversals: a latent
    traversal figure (``medgen experiment latent``). n_samples: volumes generated (and real
    volumes shown) for the mosaic; seed: their latent seed; samples=False skips
    loading the model. Raises InputError if ``run_dir`` is not a run folder.
    """
    from tqdm import tqdm

    from medgen.core.version import __version__
    from medgen.training.runconfig import RunConfig

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError(f"{run_dir}: no such run folder")
    cfg = RunConfig.load(run_dir)

    report = None
    metrics_path = Path(metrics) if metrics is not None else None
    if metrics_path is not None:
        report = _read_metrics_json(metrics_path)
    baseline_path = Path(baseline) if baseline is not None else None
    baseline_report = _read_metrics_json(baseline_path, "baseline metrics") if baseline_path is not None else None
    traversals_path = Path(traversals) if traversals is not None else None
    if traversals_path is not None and not traversals_path.is_file():
        raise InputError(f"{traversals_path}: no such traversal figure")
    figures_dir = metrics_path.with_name(metrics_path.stem + "-figures") if metrics_path is not None else None

    iteration = _checkpoint_iteration(run_dir)
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    header = [
        f"<h1>medgen training report: {esc(run_dir.name)}</h1>",
        _table([("run", str(run_dir)), ("medgen version", __version__),
                ("trained with medgen", cfg.medgen_version or "-"),
                ("checkpoint iteration", iteration if iteration is not None else "no checkpoint"),
                ("report written", now)], ("", ""), 9),
    ]
    steps: list[Callable[[], str]] = [
        lambda: config_section(cfg),
        lambda: curves_section(run_dir),
    ]
    if samples and iteration is not None:
        steps.append(lambda: samples_section(run_dir, cfg, n_samples, seed, device))
    else:
        why = "--no-samples" if not samples else "the run has no checkpoint yet"
        steps.append(lambda: "<h2>Real vs generated volumes</h2>\n" + _note(f"no generated volumes ({why})"))
    steps += [
        lambda: training_samples_section(run_dir),
        lambda: metrics_section(report, metrics_path),
        lambda: baseline_section(report, baseline_report, baseline_path),
        lambda: figures_section(figures_dir),
        lambda: traversals_section(run_dir, figures_dir, traversals_path),
    ]
    body = list(header)
    for step in tqdm(steps, desc="report", unit="section", disable=not progress):
        body.append(step())
    title = esc(f"medgen report: {run_dir.name}")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
            f"<style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def _checkpoint_iteration(run_dir: Path) -> int | None:
    from medgen.training.checkpoint import checkpoint_iteration, latest_checkpoint

    ckpt = latest_checkpoint(run_dir)
    return checkpoint_iteration(ckpt) if ckpt is not None else None


def write_report(run_dir: str | os.PathLike, out: str | os.PathLike, **kwargs: Any) -> Path:
    """Write :func:`build_report` of ``run_dir`` to ``out`` atomically; returns ``out``."""
    text = build_report(run_dir, **kwargs)
    out = Path(out)
    atomic_write_text(out, text)
    return out
