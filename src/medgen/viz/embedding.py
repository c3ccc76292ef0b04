"""Features of several groups embedded together in 2D, with covariance ellipses: the geometry and the drawing.

Used by ``medgen evaluate``'s features figure and by the embedding experiment (the HA-GAN
paper's Figure 4). Metric MDS is SMACOF stress majorisation (scikit-learn's ``smacof``) on
the Euclidean distances, started from the classical (Torgerson) solution, so the map is
deterministic; an ellipse is centred on a group's 2D mean, shaped by its 2D covariance and
scaled to hold a chosen share of a Gaussian's mass (:func:`n_std_for_coverage`).

Example::

    >>> import numpy as np
    >>> a, b = mds_embedding([np.eye(4), np.eye(4) + 1.0], method="classical")
    >>> a.shape, round(n_std_for_coverage(0.95), 2)
    ((4, 2), 2.45)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from medgen.core.errors import InputError, UsageError

MDS_METHODS = ("metric", "classical")


def n_std_for_coverage(coverage: float) -> float:
    """Mahalanobis radius holding ``coverage`` of a 2D Gaussian: sqrt of the χ²(2) quantile, sqrt(−2 ln(1 − p))."""
    if not 0.0 < coverage < 1.0:
        raise UsageError(f"--coverage {coverage}: need a probability between 0 and 1 (e.g. 0.95)")
    return math.sqrt(-2.0 * math.log1p(-coverage))


def coverage_for_n_std(n_std: float) -> float:
    """Share of a 2D Gaussian's mass within ``n_std`` standard deviations (Mahalanobis): 1 − exp(−n²/2)."""
    return 1.0 - math.exp(-0.5 * n_std * n_std)


@dataclass(frozen=True)
class CovarianceEllipse:
    """The ellipse {p : (p − center)ᵀ cov⁻¹ (p − center) ≤ n_std²} of a 2D point cloud.

    ``semi_axes``: (major, minor) half-lengths, n_std · sqrt(eigenvalues of ``cov``);
    ``angle_deg``: direction of the major axis, degrees counter-clockwise from +x.
    """

    center: np.ndarray
    cov: np.ndarray
    n_std: float
    semi_axes: tuple[float, float]
    angle_deg: float

    @property
    def area(self) -> float:
        """π · a · b, in the squared units of the coordinates."""
        return math.pi * self.semi_axes[0] * self.semi_axes[1]

    def mahalanobis(self, points: np.ndarray) -> np.ndarray:
        """Distance of each point [n, 2] (or [2]) from the centre in units of the cloud's spread."""
        d = np.atleast_2d(np.asarray(points, dtype=np.float64)) - self.center
        inv = np.linalg.pinv(self.cov)
        return np.sqrt(np.maximum(np.einsum("ni,ij,nj->n", d, inv, d), 0.0))

    def contains(self, points: np.ndarray) -> np.ndarray:
        """Boolean mask of the points [n, 2] inside (or on) the ellipse."""
        return self.mahalanobis(points) <= self.n_std * (1.0 + 1e-12)

    def fraction_inside(self, points: np.ndarray) -> float:
        return float(np.mean(self.contains(points)))


def covariance_ellipse(points: np.ndarray, n_std: float = 2.0) -> CovarianceEllipse:
    """The ``n_std`` covariance ellipse of 2D ``points`` [n, 2] (sample mean and covariance, n − 1)."""
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 2:
        raise UsageError(f"points of shape {p.shape}: expected [n, 2]")
    if len(p) < 3:
        raise InputError(f"{len(p)} points: a covariance ellipse needs at least 3")
    if not n_std > 0:
        raise UsageError(f"n_std {n_std}: need a positive number of standard deviations")
    center = p.mean(axis=0)
    cov = np.cov(p, rowvar=False, ddof=1)
    evals, evecs = np.linalg.eigh(cov)  # ascending
    evals = np.maximum(evals, 0.0)
    major = evecs[:, 1]
    angle = math.degrees(math.atan2(major[1], major[0]))
    semi = (n_std * math.sqrt(evals[1]), n_std * math.sqrt(evals[0]))
    return CovarianceEllipse(center, cov, float(n_std), semi, angle)


def draw_groups_with_ellipses(ax, coords_by_group: Mapping[str, np.ndarray], n_std: float = 2.0,
                              styles: Mapping[str, tuple[str, str]] | None = None,
                              legend: bool = True) -> dict[str, CovarianceEllipse]:
    """Scatter each group's 2D points on the matplotlib axes ``ax`` with its covariance ellipse.

    ``coords_by_group``: label → [n, 2]; ``styles``: label → (colour, marker) (default: the
    matplotlib colour cycle, circles). Groups of fewer than 3 points get no ellipse.
    Returns label → ellipse.
    """
    from matplotlib.patches import Ellipse

    ellipses: dict[str, CovarianceEllipse] = {}
    markers = ("o", "^", "s", "D", "v", "P")
    for k, (label, pts) in enumerate(coords_by_group.items()):
        pts = np.asarray(pts, dtype=np.float64)
        color, marker = (styles or {}).get(label, (f"C{k % 10}", markers[k % len(markers)]))
        ax.scatter(pts[:, 0], pts[:, 1], s=16, alpha=0.75, color=color, marker=marker, label=f"{label} (n={len(pts)})")
        if len(pts) < 3:
            continue
        e = covariance_ellipse(pts, n_std)
        ellipses[label] = e
        ax.add_patch(Ellipse(tuple(e.center), 2 * e.semi_axes[0], 2 * e.semi_axes[1], angle=e.angle_deg,
                             fill=False, color=color, lw=1.6))
        ax.add_patch(Ellipse(tuple(e.center), 2 * e.semi_axes[0], 2 * e.semi_axes[1], angle=e.angle_deg,
                             color=color, alpha=0.08, lw=0))
        ax.plot(*e.center, marker="+", color=color, ms=12, mew=2)
    ax.set_aspect("equal", adjustable="datalim")
    ax.autoscale_view()
    if legend:
        ax.legend(fontsize=8)
    return ellipses


# ---------------------------------------------------------------------- MDS
def euclidean_distances(x: np.ndarray) -> np.ndarray:
    """Pairwise Euclidean distances of the rows of ``x`` [n, d] (exactly symmetric, zero diagonal)."""
    from scipy.spatial.distance import pdist, squareform

    x = np.asarray(x, dtype=np.float64)
    if len(x) < 2:
        return np.zeros((len(x), len(x)))
    return squareform(pdist(x, metric="euclidean"))


def classical_mds(dist: np.ndarray, n_components: int = 2) -> np.ndarray:
    """Torgerson's classical MDS of a distance matrix [n, n]: the top eigenvectors of the
    double-centred −D²/2, scaled by sqrt(eigenvalue). For Euclidean distances of features this
    is the features' projection on their first principal axes."""
    d = np.asarray(dist, dtype=np.float64)
    n = len(d)
    j = np.eye(n) - 1.0 / n
    b = -0.5 * j @ (d * d) @ j
    evals, evecs = np.linalg.eigh(0.5 * (b + b.T))
    order = np.argsort(evals)[::-1][:n_components]
    coords = np.zeros((n, n_components))
    coords[:, : len(order)] = evecs[:, order] * np.sqrt(np.maximum(evals[order], 0.0))
    # A fixed orientation: each axis points towards its largest-magnitude coordinate.
    signs = np.sign(coords[np.argmax(np.abs(coords), axis=0), np.arange(coords.shape[1])])
    return coords * np.where(signs == 0, 1.0, signs)


def stress1(dist: np.ndarray, coords: np.ndarray) -> float:
    """Kruskal's Stress-1 of an embedding: sqrt(Σ (d_ij − ‖y_i − y_j‖)² / Σ d_ij²); 0 = distances kept exactly."""
    emb = euclidean_distances(coords)
    iu = np.triu_indices(len(dist), 1)
    num = np.sum((dist[iu] - emb[iu]) ** 2)
    den = np.sum(dist[iu] ** 2)
    return float(math.sqrt(num / den)) if den > 0 else 0.0


def mds_embedding(features_list: Sequence[np.ndarray], seed: int = 0, method: str = "metric",
                  max_iter: int = 300) -> list[np.ndarray]:
    """Embed several groups of feature vectors together in 2D; returns each group's coordinates [n_i, 2].

    ``features_list``: groups of features [n_i, d] (one shared d). ``method``: ``"metric"``
    (SMACOF on the Euclidean distances, started from the classical solution: deterministic;
    ``seed`` only seeds scikit-learn's generator) or ``"classical"`` (Torgerson).
    """
    if method not in MDS_METHODS:
        raise UsageError(f"MDS method {method!r}: choose one of {', '.join(MDS_METHODS)}")
    groups = [np.asarray(f, dtype=np.float64) for f in features_list]
    dims = {g.shape[1] for g in groups if g.ndim == 2}
    if any(g.ndim != 2 for g in groups) or len(dims) != 1:
        raise UsageError(f"feature groups of shapes {[g.shape for g in groups]}: need [n, d] with one d")
    pooled = np.concatenate(groups)
    if len(pooled) == 0:
        raise InputError("no volumes to embed")
    dist = euclidean_distances(pooled)
    coords = classical_mds(dist)
    if method == "metric" and len(pooled) > 2 and np.any(dist > 0):
        from sklearn.manifold import smacof

        coords, _ = smacof(dist, metric=True, n_components=2, init=coords, n_init=1, max_iter=max_iter,
                           eps=1e-6, random_state=seed, normalized_stress=False)
    bounds = np.cumsum([0] + [len(g) for g in groups])
    return [coords[bounds[i]:bounds[i + 1]] for i in range(len(groups))]
