"""The features figure of an evaluation: real and generated features embedded together in 2D,
and each sample's distance to its nearest real sample."""

from __future__ import annotations

import os

import numpy as np

from medgen.viz.embedding import draw_groups_with_ellipses, mds_embedding, n_std_for_coverage


def save_feature_figure(real: np.ndarray, fake: np.ndarray, path: str | os.PathLike) -> None:
    """Two panels: real and generated features embedded together in 2D by classical MDS of
    their Euclidean distances (their first two principal axes, as the HA-GAN paper's embedding
    plot), each group with its 95 % covariance ellipse; and histograms of each sample's
    distance to its nearest real sample."""
    from matplotlib.figure import Figure

    from medgen.core.fileio import atomic_path
    from medgen.metrics.mmd import pairwise_distances

    emb_real, emb_fake = mds_embedding([real, fake], method="classical")
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
