"""Counterfactual explanations of a volume classifier: the work of ``medgen explain CLASSIFIER VOLUME --out DIR``.

A classifier says a scan is, say, atrophy class 3. An explanation shows *what would have to change* for it
to say "normal" (class 0): a counterfactual scan of the target class, as close to the input as possible, and
the map of the change. Three methods:

* ``deformation`` (adversarial deformation field): the smallest smooth, invertible deformation that moves
  the scan into the target class. A stationary velocity field on a coarse control grid (every
  ``grid_spacing`` voxels, trilinearly upsampled) is integrated by scaling and squaring (MONAI ``DVF2DDF``)
  into a displacement ``u``; the counterfactual is the scan warped by it (MONAI ``Warp``,
  ``cf(p) = x(p + u(p))``). Adam minimises ``CE(classifier(cf), target) + smoothness · BendingEnergy(u)
  + magnitude · mean |u|²`` (MONAI ``BendingEnergyLoss``; u in voxels) and stops once the target's
  probability reaches ``confidence``. A warp only moves tissue, so the counterfactual is anatomy-preserving
  by construction, and its Jacobian determinant ``det(I + ∇u)`` shows where tissue must grow or shrink:
  ``J(p) > 1`` means the input's tissue around ``p + u(p)`` is compressed into less space in the
  counterfactual (it shrinks towards the target class; e.g. enlarged ventricles), ``J < 1`` that it
  grows. The map written is ``log J``. A classifier that is not robust is flipped by a deformation too
  small to mean anything; ``samples``/``noise``/``shift`` make the optimisation an expectation over noisy,
  shifted copies, which only a change of the anatomy survives.
* ``latent`` (latent editing through a generative model's encoder): the scan's code ``z = E(x)`` is moved
  along the class direction ``d`` = mean code of the target class − mean code of the other classes (codes
  of a labelled data set, :func:`class_direction`), by the smallest ``α`` of a grid at which the
  classifier gives the target class the highest probability (else the largest ``α``). The decoder's
  change ``Δ = D(z + α d) − D(z)`` is the difference map; the counterfactual is ``x + Δ`` (the input's
  detail is kept: the model's reconstruction error does not enter the map).
* ``saliency`` (the baseline: no counterfactual): ``|∂ log p_target / ∂x|``, Gaussian-smoothed (σ 1 voxel).

Every classifier is given as a differentiable ``logits`` function of ``[b, 1, X, Y, Z]`` volumes in the
model's [-1, 1] units (:func:`classifier_logits`). Outputs (:func:`write_explanation`), atomically, on the
input's affine: ``counterfactual.nii.gz``, ``difference.nii.gz`` (counterfactual − input; CT in HU, else
model units), ``map.nii.gz`` (the method's map: log J, Δ or the saliency), for ``deformation`` also
``displacement.nii.gz`` (4D, mm along the RAS+ axes) and ``jacobian.nii.gz``; ``summary.json`` (class
probabilities before and after, whether the class changed, the method's settings, steps, runtime;
folding and displacement statistics or α) and ``figure.png``.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from medgen.core.errors import UsageError

METHODS = ("deformation", "latent", "saliency")
#: α grid of the latent method, in units of the class direction (α = 1: from the mean of the other
#: classes' codes to the target class's mean).
DEFAULT_ALPHAS = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)

Logits = Callable[[Any], Any]  # torch [b, 1, X, Y, Z] -> [b, K]


@dataclass
class Explanation:
    """A classifier's counterfactual for one volume (arrays ``(X, Y, Z)`` in model units unless noted).

    ``image`` the counterfactual (None for ``saliency``); ``map`` the method's map; ``probs_before`` and
    ``probs_after`` the class probabilities ``[K]`` of the input and of the counterfactual;
    ``displacement`` ``[3, X, Y, Z]`` in voxels and ``jacobian`` (``deformation`` only); ``info``: the
    method's settings and results for the summary."""

    method: str
    target: int
    map: np.ndarray
    probs_before: np.ndarray
    probs_after: np.ndarray | None = None
    image: np.ndarray | None = None
    displacement: np.ndarray | None = None
    jacobian: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def reached(self) -> bool | None:
        """Whether the counterfactual's most probable class is the target (None without a counterfactual)."""
        return None if self.probs_after is None else int(np.argmax(self.probs_after)) == self.target


def classifier_logits(network: Any, in_size: int | None = None) -> Logits:
    """The differentiable logits of a classifier network on ``[b, 1, X, Y, Z]`` volumes of any size: each batch is
    resized to ``in_size``³ first (:func:`medgen.core.volume.resize_volume`, as the classifier's own
    ``predict_proba`` does). The network is put in eval mode and its parameters are frozen."""
    from medgen.core.volume import resize_volume

    network.eval().requires_grad_(False)
    size = int(in_size or getattr(network, "in_size", 0) or 0)

    def logits(x: Any) -> Any:
        return network(resize_volume(x, (size,) * 3) if size else x)

    return logits


def _tensor(volume: Any, device: Any = "cpu") -> Any:
    import torch

    x = np.asarray(volume, dtype=np.float32)
    if x.ndim != 3:
        raise UsageError(f"explain: a volume (X, Y, Z); got shape {x.shape}")
    return torch.from_numpy(np.ascontiguousarray(x))[None, None].to(device)


def _probs(logits: Logits, x: Any) -> np.ndarray:
    import torch

    with torch.no_grad():
        return torch.softmax(logits(x).double(), dim=1)[0].cpu().numpy()


def _check_target(target: int, k: int) -> int:
    if not isinstance(target, (int, np.integer)) or not 0 <= int(target) < k:
        raise UsageError(f"target class {target!r}: the classifier has classes 0 … {k - 1}")
    return int(target)


# ----------------------------------------------------------------------------- deformation


def deformation_counterfactual(
    logits: Logits,
    volume: Any,
    target: int = 0,
    *,
    steps: int = 200,
    lr: float = 0.05,
    smoothness: float = 1.0,
    magnitude: float = 0.01,
    grid_spacing: int = 4,
    integration_steps: int = 7,
    confidence: float = 0.9,
    samples: int = 1,
    noise: float = 0.0,
    shift: int = 0,
    seed: int = 0,
    device: Any = "cpu",
) -> Explanation:
    """The adversarial deformation field of the module docstring for ``volume`` ``(X, Y, Z)`` in model units.

    ``steps`` Adam steps at learning rate ``lr`` (voxels of velocity per step, roughly); ``smoothness`` and
    ``magnitude`` weigh the bending energy and the mean squared displacement; ``grid_spacing`` voxels between
    control points of the velocity; ``integration_steps`` squarings of ``DVF2DDF`` (0: the velocity is the
    displacement, no diffeomorphism); it stops early once p(target) ≥ ``confidence``. Deterministic: the
    field starts at zero (and the random copies below come from ``seed``).

    ``samples``, ``noise``, ``shift``: the expectation over transformations. A classifier that is not robust
    is flipped by a deformation far too small to change the anatomy (an adversarial example, not an
    explanation). With these the loss is the mean cross-entropy over ``samples`` copies of the counterfactual,
    each with Gaussian noise of standard deviation ``noise`` (model units) added and shifted by a random whole
    number of voxels in [−``shift``, ``shift``] along each axis (circularly); p(target) for the stopping rule is
    their mean. Such a deformation must change what survives noise and small shifts — the anatomy. The
    defaults (1, 0, 0) are the plain optimisation."""
    import torch
    import torch.nn.functional as F
    from monai.losses import BendingEnergyLoss
    from monai.networks.blocks import DVF2DDF

    from medgen.inference.register import warp_layer
    from medgen.metrics.registration import jacobian_determinant

    if steps < 1 or lr <= 0 or smoothness < 0 or magnitude < 0 or grid_spacing < 1 or integration_steps < 0:
        raise UsageError("deformation: steps ≥ 1, lr > 0, smoothness ≥ 0, magnitude ≥ 0, grid spacing ≥ 1 and "
                         "integration steps ≥ 0")
    if not 0.0 < confidence <= 1.0:
        raise UsageError(f"confidence {confidence}: need a probability in (0, 1]")
    if samples < 1 or noise < 0 or shift < 0:
        raise UsageError(f"deformation: samples ≥ 1, noise ≥ 0 and shift ≥ 0; got {samples}, {noise}, {shift}")
    x = _tensor(volume, device)
    shape = tuple(x.shape[2:])
    if min(shape) < 4:
        raise UsageError(f"deformation: a volume of at least 4 voxels per side; got {shape}")
    before = _probs(logits, x)
    target = _check_target(target, len(before))
    coarse = tuple(max(2, math.ceil(n / grid_spacing) + 1) for n in shape)
    velocity = torch.zeros(1, 3, *coarse, device=x.device, requires_grad=True)
    with warnings.catch_warnings():  # MONAI's notice that its Warp uses PyTorch's grid_sample
        warnings.simplefilter("ignore", UserWarning)
        integrate = DVF2DDF(integration_steps, mode="bilinear", padding_mode="border") if integration_steps else None
    warp = warp_layer("bilinear", "border")
    bending = BendingEnergyLoss()
    opt = torch.optim.Adam([velocity], lr=lr)
    wanted = torch.full((samples,), target, device=x.device, dtype=torch.long)
    gen = torch.Generator().manual_seed(seed)

    def copies(cf: Any) -> Any:
        """``samples`` noisy, shifted copies of ``cf`` (cf itself for the plain optimisation)."""
        if samples == 1 and noise == 0 and shift == 0:
            return cf
        out = []
        for _ in range(samples):
            y = cf + noise * torch.randn(cf.shape, generator=gen).to(cf.device) if noise > 0 else cf
            if shift > 0:
                y = torch.roll(y, shifts=torch.randint(-shift, shift + 1, (3,), generator=gen).tolist(),
                               dims=(2, 3, 4))
            out.append(y)
        return torch.cat(out)

    def field_of(v: Any) -> Any:
        dense = F.interpolate(v, size=shape, mode="trilinear", align_corners=True)
        return integrate(dense) if integrate is not None else dense

    t0 = time.perf_counter()
    used, history = 0, []
    with warnings.catch_warnings():  # MONAI's notices (grid_sample in use; its indexing style in torch)
        warnings.simplefilter("ignore", UserWarning)
        for step in range(steps + 1):
            ddf = field_of(velocity)
            out = logits(copies(warp(x, ddf)))
            p_target = float(torch.softmax(out.detach().double(), dim=1)[:, target].mean())
            history.append(p_target)
            if p_target >= confidence or step == steps:
                break
            ce = F.cross_entropy(out.float(), wanted)
            loss = ce + smoothness * bending(ddf) + magnitude * ddf.square().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            used = step + 1
        with torch.no_grad():
            ddf = field_of(velocity)
            cf = warp(x, ddf)
    after = _probs(logits, cf)
    u = ddf[0].double().cpu().numpy()
    jac = jacobian_determinant(u)
    log_j = np.log(np.clip(jac, 1e-6, None)).astype(np.float32)
    info = {"steps": used, "max_steps": steps, "lr": lr, "smoothness": smoothness, "magnitude": magnitude,
            "grid_spacing": grid_spacing, "integration_steps": integration_steps, "confidence": confidence,
            "samples": samples, "noise": noise, "shift": shift, "runtime_s": time.perf_counter() - t0, "p_target_history": [round(p, 6) for p in history]}
    return Explanation("deformation", target, log_j, before, after, cf[0, 0].cpu().numpy().astype(np.float32),
                       u.astype(np.float32), jac.astype(np.float32), info)


# ----------------------------------------------------------------------------- latent


def class_direction(codes: Any, labels: Sequence[int], target: int) -> np.ndarray:
    """The class direction in a model's code space: the mean code of the volumes of class ``target`` minus the
    mean code of the others (``codes`` ``[n, d]``, ``labels`` ``[n]``); float64 ``[d]``. UsageError unless
    both groups have a volume."""
    z = np.asarray(codes, dtype=np.float64)
    lab = np.asarray(labels).astype(int)
    if z.ndim != 2 or lab.shape != (len(z),):
        raise UsageError(f"class direction: codes [n, d] and n labels; got {z.shape} and {lab.shape}")
    inside = lab == int(target)
    if not inside.any() or inside.all():
        raise UsageError(f"class direction: need volumes of class {target} and of other classes "
                         f"(got {int(inside.sum())} of {len(lab)} in class {target})")
    return z[inside].mean(axis=0) - z[~inside].mean(axis=0)


def latent_counterfactual(
    logits: Logits,
    encode: Callable[[np.ndarray], np.ndarray],
    decode: Callable[[np.ndarray], np.ndarray],
    volume: Any,
    direction: Any,
    target: int = 0,
    *,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    device: Any = "cpu",
) -> Explanation:
    """The latent-editing counterfactual of the module docstring. ``encode``: volumes ``[n, X, Y, Z]`` → codes
    ``[n, d]``; ``decode``: codes → volumes (both in model units); ``direction`` ``[d]``
    (:func:`class_direction`); ``alphas``: the step sizes tried, smallest first."""
    vol = np.asarray(volume, dtype=np.float32)
    x = _tensor(vol, device)
    before = _probs(logits, x)
    target = _check_target(target, len(before))
    grid = sorted(float(a) for a in alphas)
    if not grid or grid[0] <= 0:
        raise UsageError(f"alphas {tuple(alphas)}: need at least one positive step size")
    t0 = time.perf_counter()
    z = np.asarray(encode(vol[None]), dtype=np.float32)
    d = np.asarray(direction, dtype=np.float32).reshape(-1)
    if z.shape != (1, d.size):
        raise UsageError(f"latent: the encoder gives codes of shape {z.shape[1:]}, the direction has {d.size} values")
    base = np.asarray(decode(z), dtype=np.float32)[0]
    tried = []
    chosen = None
    for a in grid:
        delta = np.asarray(decode(z + a * d[None]), dtype=np.float32)[0] - base
        cf = vol + delta
        p = _probs(logits, _tensor(cf, device))
        tried.append({"alpha": a, "p_target": float(p[target])})
        chosen = (a, delta, cf, p)
        if int(np.argmax(p)) == target:
            break
    assert chosen is not None
    a, delta, cf, after = chosen
    info = {"alpha": a, "alphas_tried": tried, "direction_norm": float(np.linalg.norm(d)),
            "reconstruction_mae": float(np.mean(np.abs(base - vol))), "runtime_s": time.perf_counter() - t0}
    return Explanation("latent", target, delta.astype(np.float32), before, after, cf.astype(np.float32), info=info)


def encoder_decoder(model: Any, what: str = "the generator") -> tuple[Callable[[np.ndarray], np.ndarray],
                                                                     Callable[[np.ndarray], np.ndarray]]:
    """``(encode, decode)`` of a loaded generative model with an encoder: its ``encode`` and its ``decode`` (an
    autoencoder) or ``generate(n, z=codes)`` (HA-GAN, VAE-GAN, α-GAN). UsageError for a model without an
    encoder or a class-conditional one (its decoder would need the class the edit is meant to change)."""
    if not callable(getattr(model, "encode", None)):
        raise UsageError(f"{what}: this model has no encoder; latent editing needs one (an autoencoder, HA-GAN, "
                         "VAE-GAN or α-GAN run)")
    if int(getattr(getattr(model, "config", None), "num_classes", 0) or 0) > 0:
        raise UsageError(f"{what}: a class-conditional model; latent editing needs an unconditional one")
    if callable(getattr(model, "decode", None)):
        return model.encode, model.decode
    if callable(getattr(model, "generate", None)):
        return model.encode, lambda z: model.generate(len(z), z=np.asarray(z, dtype=np.float32))
    raise UsageError(f"{what}: this model encodes but cannot decode codes")


def dataset_codes(encode: Callable[[np.ndarray], np.ndarray], data_dir: str | Path, label_column: str = "label",
                  progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Codes ``[n, d]`` and classes ``[n]`` of every volume of the preprocessed data set ``data_dir`` (classes
    from its manifest column ``label_column``). InputError when the column is missing."""
    from tqdm import tqdm

    from medgen.core.errors import InputError
    from medgen.data.dataset import VolumeDataset, read_manifest

    columns, _ = read_manifest(data_dir)
    if label_column not in columns:
        raise InputError(f"{Path(data_dir) / 'manifest.csv'}: no column {label_column!r} of classes for the class "
                         "direction")
    ds = VolumeDataset(data_dir, split="all", label_column=label_column, keys=("image",))
    codes, labels = [], []
    for i in tqdm(range(len(ds)), desc="encode", unit="vol", disable=not progress, leave=False):
        item = ds[i]
        codes.append(np.asarray(encode(item["image"][0].numpy()[None]), dtype=np.float32)[0])
        labels.append(int(item["label"]))
    return np.stack(codes), np.asarray(labels, dtype=np.int64)


# ----------------------------------------------------------------------------- saliency


def saliency_map(logits: Logits, volume: Any, target: int = 0, sigma: float = 1.0, device: Any = "cpu") -> Explanation:
    """``|∂ log p_target / ∂x|`` at every voxel, Gaussian-smoothed with ``sigma`` voxels (0: not smoothed)."""
    import torch
    from scipy import ndimage as ndi

    x = _tensor(volume, device)
    before = _probs(logits, x)
    target = _check_target(target, len(before))
    t0 = time.perf_counter()
    xg = x.clone().requires_grad_(True)
    torch.log_softmax(logits(xg).float(), dim=1)[0, target].backward()
    g = np.abs(xg.grad[0, 0].double().cpu().numpy())
    if sigma > 0:
        g = ndi.gaussian_filter(g, sigma)
    return Explanation("saliency", target, g.astype(np.float32), before,
                       info={"sigma": sigma, "runtime_s": time.perf_counter() - t0})


# ----------------------------------------------------------------------------- outputs


@dataclass
class ExplainResult:
    out_dir: Path
    summary: dict[str, Any]
    written: list[str] = field(default_factory=list)


def write_explanation(exp: Explanation, volume: Any, out_dir: str | Path, affine: Any, *,
                      to_units: Callable[[np.ndarray], np.ndarray] | None = None, class_names: Sequence[str] = (),
                      source: str = "", classifier: str = "", extra: dict[str, Any] | None = None) -> ExplainResult:
    """Write ``exp`` (of ``volume`` in model units) into ``out_dir`` (created) as the module docstring lists.
    ``to_units``: model units → the written units of images and differences (e.g. Hounsfield units; default:
    model units); ``class_names``: names of the classes for the summary; ``extra``: more summary entries."""
    from medgen.core.fileio import atomic_write_json
    from medgen.data.io import write_nifti
    from medgen.inference.register import json_ready, world_displacement
    from medgen.metrics.registration import displacement_magnitude_mm, jacobian_summary

    x = np.asarray(volume, dtype=np.float32)
    a = np.asarray(affine, dtype=np.float64)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    conv = to_units or (lambda v: v)
    written: list[str] = []
    if exp.image is not None:
        cf = np.asarray(conv(exp.image), dtype=np.float32)
        write_nifti(out / "counterfactual.nii.gz", cf, a)
        write_nifti(out / "difference.nii.gz", cf - np.asarray(conv(x), dtype=np.float32), a)
        written += ["counterfactual.nii.gz", "difference.nii.gz"]
    write_nifti(out / "map.nii.gz", np.asarray(exp.map, dtype=np.float32), a)
    written.append("map.nii.gz")
    spacing = tuple(float(s) for s in np.linalg.norm(a[:3, :3], axis=0))
    names = list(class_names) or [str(k) for k in range(len(exp.probs_before))]
    summary: dict[str, Any] = {
        "method": exp.method,
        "input": source,
        "classifier": classifier,
        "target_class": exp.target,
        "target_name": names[exp.target] if exp.target < len(names) else str(exp.target),
        "probs_before": [float(p) for p in exp.probs_before],
        "class_before": int(np.argmax(exp.probs_before)),
        "map": {"deformation": "log of the Jacobian determinant (> 0: the input's tissue shrinks in the "
                               "counterfactual, < 0: it grows)",
                "latent": "the decoder's change D(z + αd) − D(z), model units",
                "saliency": "|d log p_target / dx|, smoothed"}[exp.method],
    }
    if exp.probs_after is not None:
        summary.update({"probs_after": [float(p) for p in exp.probs_after],
                        "class_after": int(np.argmax(exp.probs_after)), "reached_target": exp.reached})
    if exp.displacement is not None and exp.jacobian is not None:
        write_nifti(out / "displacement.nii.gz", world_displacement(exp.displacement, a), a)
        write_nifti(out / "jacobian.nii.gz", np.asarray(exp.jacobian, dtype=np.float32), a)
        written += ["displacement.nii.gz", "jacobian.nii.gz"]
        js = jacobian_summary(exp.jacobian)
        summary.update({"folding_percent": js["folding_percent"], "jacobian": js,
                        "displacement_mm": displacement_magnitude_mm(exp.displacement, spacing),
                        "convention": "counterfactual(p) = input(p + u(p)); displacement.nii.gz holds u in mm "
                                      "along the RAS+ world axes"})
    summary.update(exp.info)
    summary.update(extra or {})
    save_explanation_figure(out / "figure.png", x, exp,
                            title=_figure_title(exp, names, source))
    written.append("figure.png")
    summary = json_ready(summary)
    atomic_write_json(out / "summary.json", summary)
    written.append("summary.json")
    return ExplainResult(out, summary, written)


def _figure_title(exp: Explanation, names: Sequence[str], source: str) -> str:
    def name(k: int) -> str:
        return names[k] if k < len(names) else str(k)

    before = int(np.argmax(exp.probs_before))
    text = f"{exp.method}: {source} — class {name(before)} (p {exp.probs_before[before]:.2f})"
    if exp.probs_after is not None:
        text += f" → target {name(exp.target)} p {exp.probs_after[exp.target]:.2f}"
    return text


def save_explanation_figure(path: str | Path, volume: np.ndarray, exp: Explanation, title: str = "") -> Path:
    """input | counterfactual | difference | the method's map over the input, one row per plane through the
    voxel where the map is largest in magnitude; written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from medgen.core.fileio import atomic_path
    from medgen.viz.mosaic import PLANES, plane_slice

    x = np.asarray(volume, dtype=np.float32)
    m = np.asarray(exp.map, dtype=np.float32)
    centre = np.unravel_index(int(np.argmax(np.abs(m))), m.shape)
    normal = {"sagittal": 0, "coronal": 1, "axial": 2}
    panels: list[tuple[str, np.ndarray, dict[str, Any]]] = [("input", x, dict(cmap="gray", vmin=-1, vmax=1))]
    if exp.image is not None:
        diff = exp.image - x
        dmax = max(float(np.percentile(np.abs(diff), 99.9)), 1e-6)
        panels += [("counterfactual", exp.image, dict(cmap="gray", vmin=-1, vmax=1)),
                   ("difference", diff, dict(cmap="coolwarm", vmin=-dmax, vmax=dmax))]
    mmax = max(float(np.percentile(np.abs(m), 99.9)), 1e-6)
    map_style = (dict(cmap="coolwarm", vmin=-mmax, vmax=mmax) if exp.method in ("deformation", "latent")
                 else dict(cmap="hot", vmin=0, vmax=mmax))
    map_title = {"deformation": "log Jacobian (red: shrinks)", "latent": "decoder change Δ",
                 "saliency": "saliency"}[exp.method]
    cols = len(panels) + 1
    fig, axes = plt.subplots(len(PLANES), cols, figsize=(2.2 * cols, 2.2 * len(PLANES)), squeeze=False)
    for r, plane in enumerate(PLANES):
        k = int(centre[normal[plane]])
        for c, (label, vol, style) in enumerate(panels):
            ax = axes[r][c]
            ax.imshow(plane_slice(vol, plane, k), interpolation="nearest", **style)
            if r == 0:
                ax.set_title(label, fontsize=8)
        ax = axes[r][cols - 1]
        ax.imshow(plane_slice(x, plane, k), cmap="gray", vmin=-1, vmax=1, interpolation="nearest")
        ax.imshow(plane_slice(m, plane, k), alpha=0.6, interpolation="nearest", **map_style)
        if r == 0:
            ax.set_title(map_title, fontsize=8)
        axes[r][0].set_ylabel(plane, fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)
    return path
