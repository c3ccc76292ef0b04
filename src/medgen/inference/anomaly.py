"""Anomaly detection with a model of normal anatomy: ``medgen anomaly RUN DATA --out DIR``.

A model trained on normal volumes only cannot reproduce what it never saw. Each volume x (in the
model's [-1, 1] units) is reconstructed as the model's closest normal volume x̂ — the "counterfactual"
of what the scan would look like without the anomaly — and the voxel anomaly map is the residual
``|x − x̂|``:

* f-AnoGAN (``fanogan``, on a trained HA-GAN): x̂ = G(E(x)); its own score adds the discriminator-
  feature residual (the model's ``anomaly`` method gives score, map and reconstruction);
* autoencoders (``autoencoder``, AE or VAE; also ``vae-gan``, ``alpha-gan``, ``hagan`` through their
  encoders): x̂ = decoder(encoder(x));
* diffusion (``ddpm``): x noised to a fraction ``noise_level`` of the forward process and denoised
  back (AnoDDPM), with ``--noise-level`` and ``--steps``.

Every model with a ``reconstruct`` method can serve; one with an ``anomaly`` method (volumes →
``{"score", "map", "reconstruction"}``) defines its own score and map. The per-volume scores written
are ``score`` (the model's own where it defines one, else ``score_mean``), ``score_mean`` (the mean of
the map), ``score_p99`` (its 99th percentile: small lesions move it more than the mean) and
``score_max``; then the signed scores ``score_brighter_max`` (the largest x − x̂: tissue brighter or denser
than normal anatomy predicts) and ``score_darker_max`` (the largest x̂ − x), and for CT ``score_lung_max``, the
largest x − x̂ where the reconstruction expects lung (below −500 HU): a volume score for lung nodules and
masses that ignores the errors every reconstruction makes at the body outline and bones
(:func:`signed_scores`); and ``score_blob_max``, the strongest compact bright spot of x − x̂ (:func:`blob_map`:
the Hessian's curvatures at σ = 4.5 mm, all negative), which the residuals a reconstruction leaves along
vessels and organ edges hardly reach.

**Normative maps** (``--reference NORMAL_DATA``): a model reconstructs some normal structures worse than
others (edges, the most variable anatomy), and those errors are the same in every volume. With a
reference set of normal volumes (not the training volumes, whose residuals are too small), the voxel-wise
mean μ(v) and standard deviation σ(v) of their maps give a second map, the normative residual
``max(0, (r(v) − μ(v)) / (σ(v) + median σ))``: how far each voxel's residual lies above what normal
volumes show there (the median of σ over the volume keeps voxels where σ is near 0, e.g. air, from
dominating). It assumes the volumes are roughly aligned, as preprocessed phantoms or registered scans are.
Its scores are written as ``z_score_mean``, ``z_score_p99``, ``z_score_max`` and its metrics under
``normative`` in ``metrics.json``; the maps as ``maps_normative/<id>.nii.gz``. The reference also gives
``score_blob_excess``: the blob map of x − x̂ minus the strongest blob any reference volume shows within
6.25 mm of the same place (:func:`blob_envelope`, at least one voxel), maximised over the volume — a bright
spot where normal volumes have none (a nodule in the lung) counts, the residual blobs every reconstruction
leaves at the same places (branching vessels at the hila, bone) do not; under ``normative`` it is the blob score
(``auroc_score_blob_max``). ``score_blob_excess_z`` is the same excess in standard deviations of the excess
normal volumes reach (each reference volume against the envelope of the others): a unit every model shares,
so that the scores of several detectors can be averaged (``medgen anomaly-ensemble``).

Outputs in ``OUT`` (written atomically; a rerun skips volumes whose outputs exist):

* ``scores.csv``: one row per volume (id, the scores; with ground truth: ``abnormal``, lesion count and
  volume);
* ``maps/<id>.nii.gz``: the anomaly map (float32; CT: |x − x̂| in HU, otherwise in the model's
  normalised units), on the input's grid and affine;
* ``reconstructions/<id>.nii.gz``: x̂ in the input's units (CT: HU as int16);
* ``figures/<id>.png``: input | reconstruction | map | map over the input with the true lesion outline
  (when known), three planes through the strongest anomaly (the largest lesion when known);
* ``metrics.json``: with ground truth (a data set with the manifest column ``abnormal`` and/or the named
  volume ``lesion``, as ``medgen phantoms --lesions`` writes them): volume-level AUROC/AUPRC of every
  score, voxel-level AUROC/AUPRC and the best Dice of the thresholded map against the lesion mask
  (:mod:`medgen.metrics.scores`).

DATA is a preprocessed data set (``medgen preprocess``) of the model's volume size or a scan / folder of
scans of that size (NIfTI, NRRD, MHA, DICOM), normalised as the training data were.
"""

from __future__ import annotations

import csv
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from medgen.core.errors import InputError, UsageError
from medgen.core.volume import ct_window, hounsfield_int16, is_ct

#: Per-volume scores written to ``scores.csv``, after ``score``.
SCORE_COLUMNS = ("score_mean", "score_p99", "score_max")
#: The named volume and manifest column that hold the ground truth, when known.
LESION_VOLUME = "lesion"
ABNORMAL_COLUMN = "abnormal"


@dataclass
class AnomalySummary:
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    metrics: dict[str, Any] | None = None


def check_model(model: Any, what: str = "this model") -> None:
    """UsageError (one line) unless ``model`` can reconstruct volumes."""
    if not callable(getattr(model, "anomaly", None)) and not callable(getattr(model, "reconstruct", None)):
        raise UsageError(f"{what} cannot reconstruct volumes, so it cannot detect anomalies (use a run of "
                         "fanogan, autoencoder, ddpm, or a family with an encoder: hagan, vae-gan, alpha-gan)")


def volume_scores(anomaly_map: np.ndarray) -> dict[str, float]:
    """The summary scores of one anomaly map (:data:`SCORE_COLUMNS`)."""
    m = np.asarray(anomaly_map, dtype=np.float32).reshape(-1)
    return {"score_mean": float(m.mean(dtype=np.float64)), "score_p99": float(np.percentile(m, 99)),
            "score_max": float(m.max())}


#: Signed per-volume scores (:func:`signed_scores`), written after :data:`SCORE_COLUMNS`.
SIGNED_COLUMNS = ("score_brighter_max", "score_darker_max")
#: The CT lung score (:func:`signed_scores`), and the level (HU) below which the reconstruction counts as lung.
LUNG_COLUMN = "score_lung_max"
LUNG_HU = -500.0


#: The bright-blob score (:func:`blob_map`): its column and the scale σ of its Gaussian derivatives (mm).
BLOB_COLUMN = "score_blob_max"
BLOB_MM = 4.5
#: With a normal reference (``--reference``): how far the strongest bright blob of a volume exceeds the
#: strongest that the reference volumes show at the same place (:meth:`Reference.blob_excess`), and the
#: misalignment (mm) that comparison tolerates (:func:`envelope_tolerance`, :func:`blob_envelope`).
BLOB_EXCESS_COLUMN = "score_blob_excess"
ENVELOPE_TOLERANCE_MM = 6.25
#: The blob excess calibrated against the reference (:meth:`Reference.blob_excess_z`): comparable between
#: models, so that several detectors' can be averaged (:mod:`medgen.inference.anomaly_ensemble`).
BLOB_EXCESS_Z_COLUMN = "score_blob_excess_z"


def blob_map(residual: np.ndarray, sigma: Any) -> np.ndarray:
    """How strongly each voxel is the centre of a bright blob of the signed residual ``x − x̂``: with
    λ₁ ≥ λ₂ ≥ λ₃ the eigenvalues of the Hessian of the residual smoothed by a Gaussian of ``sigma``
    (voxels, one value or one per axis; derivatives scale-normalised by σᵢσⱼ), ``max(0, −λ₁)``. It is
    positive only where all three curvatures are negative — a compact bright spot — and then the
    weakest of them, so a bright blob scores its full curvature while the residual a reconstruction
    leaves along a vessel (a tube: λ₁ ≈ 0) or an organ's edge (a sheet: λ₁, λ₂ ≈ 0) scores little. This
    is the blob measure of the nodule-enhancement filters of chest-CT CAD (Li, Sone and Doi, Med. Phys.
    2003), applied to the residual instead of the image. Float32, the shape of ``residual``."""
    from scipy import ndimage as ndi

    d = np.asarray(residual, dtype=np.float32)
    if d.ndim != 3:
        raise ValueError(f"a residual of shape {d.shape}: need a volume [X, Y, Z]")
    sig = np.broadcast_to(np.asarray(sigma, dtype=np.float64), (3,))
    if not np.all(sig > 0):
        raise ValueError(f"sigma {sigma}: must be > 0")
    # Not skimage.feature.hessian_matrix: it takes one σ for all axes (scans have anisotropic voxels), and its
    # hessian_matrix_eigvals holds every voxel's eigenvalues at once; here the six distinct second derivatives
    # are filtered once and the eigenvalues taken slab by slab.
    pairs = [(i, j) for i in range(3) for j in range(i, 3)]
    second = {}
    for i, j in pairs:
        order = [0, 0, 0]
        order[i] += 1
        order[j] += 1
        second[i, j] = ndi.gaussian_filter(d, sig, order=order, mode="nearest") * np.float32(sig[i] * sig[j])
    out = np.empty(d.shape, dtype=np.float32)
    for a in range(0, d.shape[0], 16):
        hessian = np.empty(second[0, 0][a:a + 16].shape + (3, 3), dtype=np.float32)
        for i, j in pairs:
            hessian[..., i, j] = hessian[..., j, i] = second[i, j][a:a + 16]
        out[a:a + 16] = np.maximum(-np.linalg.eigvalsh(hessian)[..., 2], 0.0)
    return out


def residual_blob_map(volume: np.ndarray, reconstruction: np.ndarray, spacing: Any = (1.0, 1.0, 1.0),
                      sigma_mm: float = BLOB_MM) -> np.ndarray:
    """The :func:`blob_map` of ``x − x̂`` (model units) at σ = ``sigma_mm`` in each axis' voxels (``spacing``
    in mm). σ = 4.5 mm was the best of 2.5–8.8 mm for thorax-CT phantom nodules of 10 mm and more at 64³
    (6.25 mm voxels), where the scanner's blur and partial volume spread a nodule over a few voxels; chosen
    on one test set of phantoms, checked on the experiment's (docs/results/anomaly-64, README)."""
    sig = float(sigma_mm) / np.broadcast_to(np.asarray(spacing, dtype=np.float64), (3,))
    x = np.asarray(volume, dtype=np.float32)
    return blob_map(x - np.asarray(reconstruction, dtype=np.float32), sig)


def blob_score(volume: np.ndarray, reconstruction: np.ndarray, spacing: Any = (1.0, 1.0, 1.0),
               sigma_mm: float = BLOB_MM) -> float:
    """``score_blob_max``: the largest :func:`residual_blob_map`, the strongest compact bright spot the model
    of normal anatomy did not predict."""
    return float(residual_blob_map(volume, reconstruction, spacing, sigma_mm).max())


def envelope_tolerance(spacing: Any) -> tuple[int, int, int]:
    """The voxels on each side, per axis, that :func:`blob_envelope` widens by at ``spacing`` (mm):
    :data:`ENVELOPE_TOLERANCE_MM` rounded to whole voxels, at least one. 6.25 mm was chosen for thorax-CT phantom
    nodules at 64³ (one voxel, against 0 and 2, on a selection set of phantoms); at 128³ it is two voxels (on
    another selection set, AUROC for nodules ≥ 10 mm 0.83 with one, 0.86 with two, 0.89 with three; README)."""
    sp = np.broadcast_to(np.asarray(spacing, dtype=np.float64), (3,))
    if not np.all(sp > 0):
        raise ValueError(f"spacing {spacing}: must be > 0 mm")
    return tuple(max(1, int(round(ENVELOPE_TOLERANCE_MM / float(s)))) for s in sp)


def blob_envelope(strongest: np.ndarray, tolerance: Any = 1) -> np.ndarray:
    """The strongest bright blob that normal volumes show at each voxel: ``strongest``, the voxel-wise maximum
    of their :func:`residual_blob_map`, widened by a maximum filter over ``tolerance`` voxels on each side (one
    number, or one per axis: :func:`envelope_tolerance`), since the volumes are aligned only roughly. Float32."""
    from scipy import ndimage as ndi

    top = np.asarray(strongest, np.float32)
    t = np.broadcast_to(np.asarray(tolerance, dtype=np.int64), (3,))
    if np.any(t < 0):
        raise ValueError(f"tolerance {tolerance}: must be >= 0 voxels")
    return ndi.maximum_filter(top, size=tuple(int(2 * v + 1) for v in t), mode="nearest") if t.any() else top


def signed_scores(volume: np.ndarray, reconstruction: np.ndarray, info: dict[str, Any] | None = None
                  ) -> dict[str, float]:
    """Scores that use the sign of the residual ``x − x̂`` (model units), for lesions of a known polarity:
    ``score_brighter_max`` the largest ``x − x̂`` (tissue brighter or denser than the normal anatomy
    predicts: a nodule, a mass, a T2/FLAIR hyperintensity) and ``score_darker_max`` the largest ``x̂ − x``
    (darker: a bulla, a T1 hypointensity). For CT (``info`` a preprocessing record of CT) also
    ``score_lung_max``: the largest ``x − x̂`` where the reconstruction is below −500 HU, i.e. where the model
    of normal anatomy expects lung (or air) — soft tissue there is what a lung nodule or mass is, and the
    body's outline, bones and vessels, which a coarse reconstruction also misses, lie mostly outside it
    (0 when the reconstruction has no such voxel)."""
    x = np.asarray(volume, dtype=np.float32)
    rec = np.asarray(reconstruction, dtype=np.float32)
    diff = x - rec
    out = {"score_brighter_max": float(diff.max()), "score_darker_max": float((-diff).max())}
    if is_ct(info):
        lo, hi = ct_window(info or {})
        lung = rec < np.float32(2.0 * (LUNG_HU - lo) / (hi - lo) - 1.0)
        out[LUNG_COLUMN] = float(diff[lung].max()) if lung.any() else 0.0
    return out


def detect(model: Any, volume: np.ndarray, **options: Any) -> dict[str, Any]:
    """Score, map and reconstruction of one volume [S, S, S] in [-1, 1] (module docstring).

    ``options`` go to the model's ``anomaly`` or ``reconstruct`` (e.g. ``noise_level``, ``steps``, ``seed``
    for diffusion models; None values are left out). Returns ``score`` (float), ``map`` and
    ``reconstruction`` (float32 [S, S, S]) and the :data:`SCORE_COLUMNS`."""
    opts = {k: v for k, v in options.items() if v is not None}
    x = np.asarray(volume, dtype=np.float32)
    if callable(getattr(model, "anomaly", None)):
        out = model.anomaly(x[None], **opts)
        rec = np.asarray(out["reconstruction"], dtype=np.float32)[0]
        amap = np.asarray(out["map"], dtype=np.float32)[0]
        own: float | None = float(np.asarray(out["score"]).reshape(-1)[0])
    else:
        check_model(model)
        rec = np.asarray(model.reconstruct(x[None], **opts), dtype=np.float32)[0]
        amap = np.abs(x - rec)
        own = None
    if rec.shape != x.shape or amap.shape != x.shape:
        raise RuntimeError(f"the model returned a reconstruction of {rec.shape} and a map of {amap.shape} "
                           f"for a volume of {x.shape}")
    scores = volume_scores(amap)
    return {"score": scores["score_mean"] if own is None else own, **scores, "map": amap, "reconstruction": rec}


def largest_lesion_mm(lesion: np.ndarray, spacing: Any) -> float:
    """Equivalent diameter (mm) of the largest lesion of an instance map (0 without lesions)."""
    from medgen.metrics.lesions import equivalent_diameter

    ids, counts = np.unique(lesion[lesion > 0], return_counts=True)
    return float(equivalent_diameter(int(counts.max()), spacing)) if ids.size else 0.0


def map_units(info: dict[str, Any]) -> tuple[str, float]:
    """The unit the maps are written in and the factor from [-1, 1] differences to it (CT: HU)."""
    if is_ct(info):
        lo, hi = ct_window(info)
        return "HU", (hi - lo) / 2.0
    return "normalised intensity ([-1, 1] units)", 1.0


def _focus(amap: np.ndarray, lesion: np.ndarray | None) -> tuple[int, int, int]:
    """The voxel the figure's planes go through: the centre of the largest lesion, else the map's maximum."""
    if lesion is not None and np.any(lesion > 0):
        ids, counts = np.unique(lesion[lesion > 0], return_counts=True)
        where = np.argwhere(lesion == ids[np.argmax(counts)])
        return tuple(int(round(v)) for v in where.mean(axis=0))  # type: ignore[return-value]
    return tuple(int(v) for v in np.unravel_index(int(np.argmax(amap)), amap.shape))  # type: ignore[return-value]


def save_anomaly_figure(path: Path, image: np.ndarray, reconstruction: np.ndarray, amap: np.ndarray,
                        lesion: np.ndarray | None, title: str, map_max: float | None = None) -> Path:
    """input | reconstruction | map | map over the input (+ the true lesion outline): three planes through
    :func:`_focus`. Volumes ``(x, y, z)``, image and reconstruction in [-1, 1]; written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from medgen.core.fileio import atomic_path
    from medgen.viz.mosaic import PLANES, plane_slice

    focus = _focus(amap, lesion)
    vmax = float(map_max if map_max is not None else max(float(np.percentile(amap, 99.9)), 1e-6))
    columns = ("input", "reconstruction", "anomaly map", "overlay" + (" + true lesion" if lesion is not None else ""))
    fig, axes = plt.subplots(len(PLANES), 4, figsize=(8.4, 2.2 * len(PLANES)), squeeze=False)
    axis_of = {"axial": 2, "coronal": 1, "sagittal": 0}
    for r, plane in enumerate(PLANES):
        index = focus[axis_of.get(plane, 2)]
        img = plane_slice(image, plane, index)
        axes[r][0].imshow(img, cmap="gray", vmin=-1, vmax=1, interpolation="nearest")
        axes[r][1].imshow(plane_slice(reconstruction, plane, index), cmap="gray", vmin=-1, vmax=1,
                          interpolation="nearest")
        m = plane_slice(amap, plane, index)
        axes[r][2].imshow(m, cmap="magma", vmin=0, vmax=vmax, interpolation="nearest")
        axes[r][3].imshow(img, cmap="gray", vmin=-1, vmax=1, interpolation="nearest")
        axes[r][3].imshow(np.ma.masked_less(m, 0.3 * vmax), cmap="autumn", vmin=0, vmax=vmax, alpha=0.6,
                          interpolation="nearest")
        if lesion is not None:
            truth = plane_slice((lesion > 0).astype(np.float32), plane, index)
            if truth.any():
                axes[r][3].contour(truth, levels=[0.5], colors="cyan", linewidths=0.8)
        axes[r][0].set_ylabel(plane, fontsize=8)
    for c, name in enumerate(columns):
        axes[0][c].set_title(name, fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path


#: Share of the normal volumes' voxels allowed above the lesion-detection threshold.
DETECTION_FPR = 0.001


def ground_truth_metrics(rows: list[dict[str, Any]], maps: list[np.ndarray], masks: list[np.ndarray] | None,
                         lesions: list[np.ndarray] | None = None, spacings: list[Any] | None = None,
                         fpr: float = DETECTION_FPR) -> dict[str, Any]:
    """Volume-level AUROC/AUPRC of every score (with the ``abnormal`` labels of ``rows``) and voxel-level
    AUROC/AUPRC and best Dice of ``maps`` against ``masks`` (lesion > 0); a metric that cannot be computed
    (one class only) is left out with the reason under ``notes``.

    With the lesion instance maps ``lesions`` (and the voxel ``spacings`` in mm), per-lesion detection by
    size (:func:`medgen.metrics.lesions.lesion_detection`) at the threshold that flags a share ``fpr`` of
    the voxels of the normal volumes (``abnormal`` 0) among them: an operating point set without the
    lesions, though on the same set's normal volumes."""
    from medgen.metrics import scores as sc
    from medgen.metrics.lesions import lesion_detection

    out: dict[str, Any] = {"volumes": len(rows), "notes": []}
    labels = [r.get(ABNORMAL_COLUMN) for r in rows]
    if labels and all(v is not None for v in labels):
        y = np.asarray(labels, dtype=int)
        out["abnormal"] = int(y.sum())
        names = [c for c in ("score", *SCORE_COLUMNS, *SIGNED_COLUMNS, LUNG_COLUMN, BLOB_COLUMN)
                 if all(c in r for r in rows)]
        for name in names:
            s = np.asarray([r[name] for r in rows], dtype=np.float64)
            try:
                out[f"auroc_{name}"] = sc.auroc(s, y)
                out[f"auprc_{name}"] = sc.auprc(s, y)
            except ValueError as exc:
                out["notes"].append(f"volume level ({name}): {exc}")
                break
        if "auprc_score" in out:
            out["auprc_chance"] = float(y.mean())
    if masks is not None:
        pooled = np.concatenate([np.asarray(m, bool).reshape(-1) for m in masks])
        out["lesion_voxel_fraction"] = float(pooled.mean())
        try:
            out["voxel_auroc"] = sc.voxel_auroc(maps, masks)
            out["voxel_auprc"] = sc.voxel_auprc(maps, masks)
        except ValueError as exc:
            out["notes"].append(f"voxel level: {exc}")
        if "voxel_auprc" in out:
            dice, threshold = sc.best_dice(maps, masks)
            out["best_dice"], out["best_dice_threshold"] = float(dice), float(threshold)
    normal = [m for r, m in zip(rows, maps) if r.get(ABNORMAL_COLUMN) == 0]
    if lesions is not None and normal and any(np.any(v > 0) for v in lesions):
        threshold = sc.threshold_at_fpr(normal, fpr)
        found = lesion_detection(maps, lesions, threshold, spacing=spacings if spacings else (1.0, 1.0, 1.0))
        out["detection"] = {"fpr_normal_voxels": fpr, **found.as_dict()}
    return out


def _read_scan_rows(data_dir: Path) -> dict[str, dict[str, str]]:
    with open(data_dir / "manifest.csv", newline="", encoding="utf-8-sig") as fh:
        return {row["id"]: row for row in csv.DictReader(fh)}


@dataclass(frozen=True)
class Reference:
    """Voxel-wise mean and standard deviation of the anomaly maps of ``n`` normal volumes, the
    :func:`blob_envelope` of their residuals, and ``blob_null``: each reference volume's blob excess over the
    envelope of the *other* ones (leave-one-out), the distribution the excess of a new normal volume
    follows."""

    mean: np.ndarray
    std: np.ndarray
    n: int
    blob_envelope: np.ndarray
    blob_null: np.ndarray

    def blob_excess(self, blob: np.ndarray) -> float:
        """``score_blob_excess`` of a volume's :func:`residual_blob_map` ``blob``: the largest amount by which
        it exceeds :attr:`blob_envelope` — positive where the volume has a brighter compact spot than any
        reference volume had there, negative where none."""
        b = np.asarray(blob, np.float32)
        if b.shape != self.blob_envelope.shape:
            raise ValueError(f"a blob map of {b.shape}, the reference's envelope is {self.blob_envelope.shape}")
        return float((b - self.blob_envelope).max())

    def blob_excess_z(self, excess: float) -> float:
        """``score_blob_excess_z``: a :meth:`blob_excess` in standard deviations above the mean of
        :attr:`blob_null` — how unusual that excess is for a normal volume under this model, a unit that
        every model shares (the excess itself is in the model's own residual scale). The spread is floored at
        1e-6 so that identical reference volumes give a large finite value, not a division by zero."""
        null = np.asarray(self.blob_null, np.float64)
        return float((float(excess) - null.mean()) / max(float(null.std(ddof=1)), 1e-6))

    def standardise(self, amap: np.ndarray) -> np.ndarray:
        """The normative map of ``amap`` (module docstring)."""
        floor = float(np.median(self.std))
        return np.maximum((np.asarray(amap, np.float32) - self.mean) / (self.std + floor + 1e-12), 0.0
                          ).astype(np.float32)


def reference_statistics(model: Any, data_dir: Path, out_dir: Path, *, progress: bool = True,
                         **options: Any) -> Reference:
    """The :class:`Reference` of the normal volumes of the preprocessed data set ``data_dir`` under ``model``
    (every subject; their maps are kept in ``out_dir/reference/`` and their residuals' blob maps in
    ``out_dir/reference_blob/``, so an interrupted run continues, and the statistics, the blob envelope and
    the leave-one-out null of the blob excess in ``out_dir/reference.npz``). InputError for fewer than two
    volumes or another size."""
    from tqdm import tqdm

    from medgen.core.fileio import atomic_save_npy
    from medgen.core.volume import parse_spacing
    from medgen.data.dataset import VolumeDataset, load_preprocess_info

    info = load_preprocess_info(data_dir)
    size = int(model.config.size)
    if int(info.get("size", 0) or 0) not in (0, size):
        raise InputError(f"--reference {data_dir}: volumes of {info.get('size')}³, the model works on {size}³")
    ds = VolumeDataset(data_dir, split="all", label_column=None, keys=("image",))
    if len(ds) < 2:
        raise InputError(f"--reference {data_dir}: {len(ds)} volume(s); need at least two normal volumes")
    manifest = _read_scan_rows(data_dir)
    total = np.zeros((size,) * 3, np.float64)
    squares = np.zeros((size,) * 3, np.float64)
    # the voxel-wise largest and second largest blob maps so far, and which volume gave the largest: the
    # envelope of all volumes and, for the null, that of all volumes but one, without holding every map
    strongest = np.full((size,) * 3, -np.inf, np.float32)
    second = np.full((size,) * 3, -np.inf, np.float32)
    which = np.full((size,) * 3, -1, np.int32)
    blob_files = []
    tolerance = None
    for i in tqdm(range(len(ds)), desc="reference", unit="vol", disable=not progress):
        item = ds[i]
        cache = out_dir / "reference" / f"{item['id']}.npy"
        blob_cache = out_dir / "reference_blob" / f"{item['id']}.npy"
        blob_files.append(blob_cache)
        spacing = parse_spacing(manifest.get(item["id"], {}).get("spacing", "")) or (1.0, 1.0, 1.0)
        tolerance = tolerance or envelope_tolerance(spacing)  # a preprocessed set has one grid
        if cache.is_file() and blob_cache.is_file():
            amap, blob = np.load(cache), np.load(blob_cache)
        else:
            x = item["image"][0].numpy().astype(np.float32)
            res = detect(model, x, **options)
            amap, blob = res["map"], residual_blob_map(x, res["reconstruction"], spacing)
            atomic_save_npy(cache, amap.astype(np.float32))
            atomic_save_npy(blob_cache, blob.astype(np.float32))
        total += amap
        squares += np.square(amap, dtype=np.float64)
        blob = blob.astype(np.float32)
        top = blob > strongest
        np.copyto(second, np.where(top, strongest, np.maximum(second, blob)))
        np.copyto(strongest, np.where(top, blob, strongest))
        which[top] = i
    n = len(ds)
    mean = total / n
    std = np.sqrt(np.maximum(squares / n - mean**2, 0.0) * n / (n - 1))
    null = np.empty(n, np.float64)
    for i, blob_cache in enumerate(blob_files):  # leave-one-out: volume i against the envelope of the others
        others = np.where(which == i, second, strongest)
        null[i] = float((np.load(blob_cache) - blob_envelope(others, tolerance)).max())
    ref = Reference(mean.astype(np.float32), std.astype(np.float32), n, blob_envelope(strongest, tolerance), null)
    _save_npz(out_dir / "reference.npz", mean=ref.mean, std=ref.std, n=np.int64(n), blob_envelope=ref.blob_envelope,
              blob_null=ref.blob_null)
    return ref


def anomaly_dataset(model: Any, data_dir: Path, out_dir: Path, *, split: str = "all", figures: int | None = None,
                    progress: bool = True, reference: Reference | None = None, **options: Any) -> AnomalySummary:
    """Score every subject of the preprocessed data set ``data_dir`` into ``out_dir`` (module docstring).

    ``figures``: how many volumes get a figure (None: all), abnormal ones first; ``reference``: normal
    volumes' map statistics (:func:`reference_statistics`) for the normative maps; ``options``: the model's
    reconstruction options (:func:`detect`)."""
    from tqdm import tqdm

    from medgen.core.fileio import atomic_write_json
    from medgen.core.tables import write_csv
    from medgen.core.volume import parse_spacing
    from medgen.data.dataset import VolumeDataset, load_preprocess_info, volume_kinds
    from medgen.inference.generate import spacing_affine

    check_model(model)
    info = load_preprocess_info(data_dir)
    kinds = volume_kinds(info, data_dir / "preprocess.json")
    size = int(model.config.size)
    if int(info.get("size", 0) or 0) not in (0, size):
        raise InputError(f"{data_dir}: volumes of {info.get('size')}³, the model works on {size}³ "
                         f"(preprocess the scans with --size {size})")
    has_lesion = LESION_VOLUME in kinds
    keys = ("image", LESION_VOLUME) if has_lesion else ("image",)
    ds = VolumeDataset(data_dir, split=split, label_column=None, keys=keys)
    manifest = _read_scan_rows(data_dir)
    units, scale = map_units(info)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = AnomalySummary()
    rows: list[dict[str, Any]] = []
    maps: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    lesions: list[np.ndarray] = []
    spacings: list[Any] = []
    pending_figures: list[tuple[str, int]] = []
    zmaps: list[np.ndarray] = []
    for i in tqdm(range(len(ds)), desc="anomaly", unit="vol", disable=not progress):
        item = ds[i]
        sid = item["id"]
        x = item["image"][0].numpy().astype(np.float32)
        spacing = parse_spacing(manifest.get(sid, {}).get("spacing", "")) or (1.0, 1.0, 1.0)
        back = (lambda y: hounsfield_int16(y, ct_window(info))) if is_ct(info) else (lambda y: y.astype(np.float32))
        res = _detect_and_write(model, x, sid, out_dir, spacing_affine(spacing), back, scale, summary, options)
        blob = residual_blob_map(x, res["reconstruction"], spacing)
        row: dict[str, Any] = {"id": sid, "score": res["score"], **{k: res[k] for k in SCORE_COLUMNS},
                               **signed_scores(x, res["reconstruction"], info), BLOB_COLUMN: float(blob.max())}
        if reference is not None:
            zmap = reference.standardise(res["map"])
            row.update({f"z_{k}": v for k, v in volume_scores(zmap).items()})
            row[BLOB_EXCESS_COLUMN] = reference.blob_excess(blob)
            row[BLOB_EXCESS_Z_COLUMN] = reference.blob_excess_z(row[BLOB_EXCESS_COLUMN])
            target = out_dir / "maps_normative" / f"{sid}.nii.gz"
            if not target.is_file():
                from medgen.data.io import write_nifti

                write_nifti(target, zmap, spacing_affine(spacing))
            zmaps.append(zmap)
        truth = manifest.get(sid, {})
        if truth.get(ABNORMAL_COLUMN, "") != "":
            row[ABNORMAL_COLUMN] = int(float(truth[ABNORMAL_COLUMN]))
        lesion = item[LESION_VOLUME][0].numpy() if has_lesion else None
        if lesion is not None:
            row["lesion_count"] = int(len(np.unique(lesion[lesion > 0])))
            row["lesion_voxels"] = int((lesion > 0).sum())
            row["largest_lesion_mm"] = largest_lesion_mm(lesion, spacing)
            row.setdefault(ABNORMAL_COLUMN, int(row["lesion_count"] > 0))
            masks.append(lesion > 0)
            lesions.append(lesion.astype(np.int32))
            spacings.append(tuple(spacing))
        rows.append(row)
        maps.append(res["map"])
        pending_figures.append((sid, i))
    columns = list(dict.fromkeys(k for r in rows for k in r))
    write_csv(out_dir / "scores.csv", rows, columns)
    # figures: abnormal volumes first, then the rest, up to `figures`
    order = sorted(range(len(rows)), key=lambda k: -int(rows[k].get(ABNORMAL_COLUMN, 0)))
    shown = order if figures is None else order[: max(0, figures)]
    vmax = float(np.percentile(np.concatenate([m.reshape(-1) for m in maps]), 99.9)) if maps else None
    for k in shown:
        sid, i = pending_figures[k]
        target = out_dir / "figures" / f"{sid}.png"
        if target.is_file():
            continue
        with np.load(out_dir / "outputs" / f"{sid}.npz") as z:
            rec = z["reconstruction"]
        item = ds[i]
        lesion = item[LESION_VOLUME][0].numpy() if has_lesion else None
        label = rows[k].get(ABNORMAL_COLUMN)
        what = "" if label is None else (" (abnormal)" if label else " (normal)")
        save_anomaly_figure(target, item["image"][0].numpy(), rec, maps[k], lesion,
                            f"{sid}{what}: score {rows[k]['score']:.4g}", map_max=vmax)
    if any(ABNORMAL_COLUMN in r for r in rows) or masks:
        metrics = ground_truth_metrics(rows, maps, masks if has_lesion else None,
                                       lesions if has_lesion else None, spacings)
        metrics.update(data=str(data_dir), split=split, map_units=units)
        if reference is not None:
            signed = (*SIGNED_COLUMNS, LUNG_COLUMN, BLOB_COLUMN, BLOB_EXCESS_COLUMN, BLOB_EXCESS_Z_COLUMN)
            # the normative metrics: the standardised map's scores, and as the blob score its excess over
            # the reference's envelope
            zrows = [{**{k: v for k, v in r.items() if k not in signed}, "score": r["z_score_mean"],
                      **{k: r[f"z_{k}"] for k in SCORE_COLUMNS}, BLOB_COLUMN: r[BLOB_EXCESS_COLUMN]} for r in rows]
            metrics["normative"] = ground_truth_metrics(zrows, zmaps, masks if has_lesion else None,
                                                        lesions if has_lesion else None, spacings)
            metrics["normative"]["reference_volumes"] = reference.n
        atomic_write_json(out_dir / "metrics.json", metrics)
        summary.metrics = metrics
    return summary


def _detect_and_write(model: Any, x: np.ndarray, sid: str, out_dir: Path, affine: np.ndarray,
                      back: Callable[[np.ndarray], np.ndarray], scale: float, summary: AnomalySummary,
                      options: dict[str, Any]) -> dict[str, Any]:
    """:func:`detect` on volume ``sid`` and its map and reconstruction written, or the result of an earlier
    run read back (``out_dir/outputs/<id>.npz``, written last, marks a finished volume)."""
    from medgen.data.io import write_nifti

    cache = out_dir / "outputs" / f"{sid}.npz"
    if cache.is_file():
        with np.load(cache) as z:
            res = {"score": float(z["score"]), "map": z["map"], "reconstruction": z["reconstruction"]}
        res.update(volume_scores(res["map"]))
        summary.skipped.append(sid)
        return res
    res = detect(model, x, **options)
    write_nifti(out_dir / "maps" / f"{sid}.nii.gz", (res["map"] * scale).astype(np.float32), affine)
    write_nifti(out_dir / "reconstructions" / f"{sid}.nii.gz", back(res["reconstruction"]), affine)
    _save_npz(cache, score=np.float64(res["score"]), map=res["map"].astype(np.float32),
              reconstruction=res["reconstruction"].astype(np.float32))
    summary.written.append(sid)
    return res


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    """``np.savez`` written atomically."""
    from medgen.core.fileio import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


def anomaly_scans(model: Any, inputs: list[Any], out_dir: Path, *, progress: bool = True,
                  log: Callable[[str], None] = lambda m: print(m, file=sys.stderr), **options: Any) -> AnomalySummary:
    """Score every scan of ``inputs`` (``InputItem``s: id and path) into ``out_dir``: each reoriented to RAS+,
    normalised as the training data were, and required to have the model's volume size; maps and
    reconstructions are written on the scan's own affine (module docstring). No ground truth, no metrics."""
    from tqdm import tqdm

    from medgen.core.tables import write_csv
    from medgen.data.io import read_volume, reorient_to_ras
    from medgen.inference.translate import normalise_scan

    check_model(model)
    info = dict(getattr(model.run_config, "preprocess", None) or {})
    size = int(model.config.size)
    units, scale = map_units(info)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = AnomalySummary()
    rows: list[dict[str, Any]] = []
    for item in tqdm(inputs, desc="anomaly", unit="vol", disable=not progress):
        try:
            volume = reorient_to_ras(read_volume(item.path))
            if tuple(volume.array.shape) != (size,) * 3:
                raise InputError(f"{'x'.join(map(str, volume.array.shape))} voxels, the model works on {size}³ "
                                 f"(resample it, e.g. with medgen preprocess --size {size})")
            x, back = normalise_scan(volume.array, info)
        except InputError as exc:
            summary.failed.append((str(item.path), str(exc)))
            continue
        res = _detect_and_write(model, x, item.id, out_dir, volume.affine, back, scale, summary, options)
        figure = out_dir / "figures" / f"{item.id}.png"
        if not figure.is_file():
            save_anomaly_figure(figure, x, res["reconstruction"], res["map"], None,
                                f"{item.id}: score {res['score']:.4g}")
        rows.append({"id": item.id, "file": str(item.path), "score": res["score"],
                     **{k: res[k] for k in SCORE_COLUMNS}, **signed_scores(x, res["reconstruction"], info),
                     BLOB_COLUMN: blob_score(x, res["reconstruction"], volume.spacing)})
    if rows:
        write_csv(out_dir / "scores.csv", rows, list(rows[0]))
    return summary
