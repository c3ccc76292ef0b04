"""The features figure of an evaluation: real and generated features embedded together in 2D,
and each sample's distance to its nearest real sample."""

from __future__ import annotations

import math
import os

import numpy as np


def classical_mds(features: list[np.ndarray]) -> list[np.ndarray]:
    """Torgerson's classical MDS of the pooled groups' Euclidean distances, in 2D: the features'
    projection on their first two principal axes, each axis pointing towards its
    largest-magnitude coordinate. Returns each group's coordinates ``[n_i, 2]``."""
    from scipy.spatial.distance import pdist, squareform

    groups = [np.asarray(f, dtype=np.float64) for f in features]
    pooled = np.concatenate(groups)
    n = len(pooled)
    d = squareform(pdist(pooled)) if n > 1 else np.zeros((n, n))
    j = np.eye(n) - 1.0 / n
    b = -0.5 * j @ (d * d) @ j
    evals, evecs = np.linalg.eigh(0.5 * (b + b.T))
    order = np.argsort(evals)[::-1][:2]
    coords = np.zeros((n, 2))
    coords[:, : len(order)] = evecs[:, order] * np.sqrt(np.maximum(evals[order], 0.0))
    signs = np.sign(coords[np.argmax(np.abs(coords), axis=0), np.arange(2)])
    coords = coords * np.where(signs == 0, 1.0, signs)
    bounds = np.cumsum([0] + [len(g) for g in groups])
    return [coords[bounds[i] : bounds[i + 1]] for i in range(len(groups))]


def n_std_for_coverage(coverage: float) -> float:
    """Mahalanobis radius holding ``coverage`` of a 2D Gaussian: sqrt(−2 ln(1 − p))."""
    return math.sqrt(-2.0 * math.log1p(-coverage))


def draw_groups_with_ellipses(ax, groups: dict[str, np.ndarray], n_std: float) -> None:
    """Scatter each group's 2D points with its ``n_std`` covariance ellipse (groups of 3 or more points)."""
    from matplotlib.patches import Ellipse

    markers = ("o", "^", "s", "D")
    for k, (label, pts) in enumerate(groups.items()):
        pts = np.asarray(pts, dtype=np.float64)
        color, marker = f"C{k % 10}", markers[k % len(markers)]
        ax.scatter(pts[:, 0], pts[:, 1], s=16, alpha=0.75, color=color, marker=marker, label=f"{label} (n={len(pts)})")
        if len(pts) < 3:
            continue
        center = pts.mean(axis=0)
        evals, evecs = np.linalg.eigh(np.cov(pts, rowvar=False, ddof=1))  # ascending
        evals = np.maximum(evals, 0.0)
        angle = math.degrees(math.atan2(evecs[1, 1], evecs[0, 1]))
        width, height = 2 * n_std * math.sqrt(evals[1]), 2 * n_std * math.sqrt(evals[0])
        ax.add_patch(Ellipse(tuple(center), width, height, angle=angle, fill=False, color=color, lw=1.6))
        ax.add_patch(Ellipse(tuple(center), width, height, angle=angle, color=color, alpha=0.08, lw=0))
        ax.plot(*center, marker="+", color=color, ms=12, mew=2)
    ax.set_aspect("equal", adjustable="datalim")
    ax.autoscale_view()
    ax.legend(fontsize=8)


def save_feature_figure(real: np.ndarray, fake: np.ndarray, path: str | os.PathLike) -> None:
    """Two panels: real and generated features embedded together in 2D by classical MDS of
    their Euclidean distances (their first two principal axes, as the HA-GAN paper's embedding
    plot), each group with its 95 % covariance ellipse; and histograms of each sample's
    distance to its nearest real sample."""
    from matplotlib.figure import Figure

    from medgen.core.fileio import atomic_path
    from medgen.metrics.mmd import pairwise_distances

    emb_real, emb_fake = classical_mds([real, fake])
    fig = Figure(figsize=(9, 4))
    ax1, ax2 = fig.subplots(1, 2)
    draw_groups_with_ellipses(ax1, {"real": emb_real, "generated": emb_fake}, n_std_for_coverage(0.95))
    ax1.set_title("features, classical MDS (95% ellipses)")
    d_rr = pairwise_distances(real, real)
    np.fill_diagonal(d_rr, np.inf)
    d_fr = pairwise_distances(fake, real).min(axis=1)
    bins = np.histogram_bin_edges(np.concatenate([d_rr.min(axis=1), d_fr]), bins=20)
    ax2.hist(d_rr.min(axis=1), bins=bins, alpha=0.6, label="real -> nearest other real")
    ax2.hist(d_fr, bins=bins, alpha=0.6, label="generated -> nearest real")
    ax2.set_xlabel("feature distance")
    ax2.set_title("nearest-neighbour distances")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
