"""How far HA-GAN's training slab is from the inference volume: the train/inference gap.

In training G^H turns one slab of the feature map A into full-resolution slices
(:meth:`~medgen.families.hagan.generator.Generator.forward_train`) and D^H judges
those; at inference G^H runs on the whole of A
(:meth:`~medgen.families.hagan.generator.Generator.generate`). When the two
disagree, D^H never judges what users get. :func:`train_inference_gap` measures
the disagreement for given latent codes: every tiling slab position, the training
slab against the same slices of the generated volume, border slices included.
"""

from __future__ import annotations

import numpy as np
import torch

from medgen.families.hagan.generator import Generator


@torch.no_grad()
def train_inference_gap(generator: Generator, z: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, float]:
    """Mean |training slab − the same slab of ``generate``| over ``z`` [n, latent_dim] and every tiling position.

    Returns ``mean`` (all slab voxels, intensities in [-1, 1]), ``border`` (the
    first and last slice of every slab) and ``inner`` (the others; NaN for slabs of
    two slices or fewer). The slab is made as in training, with the generator's
    own ``slab_context`` (:class:`~medgen.families.hagan.config.HAGANConfig`).
    """
    sel = generator.selector
    diffs = []
    for i in range(z.shape[0]):
        zi = z[i : i + 1]
        li = labels[i : i + 1] if labels is not None else None
        whole = generator.generate(zi, li)
        a = generator.features(zi, li)
        for start in sel.tiling_starts():
            slab = generator.high_slab(a, start)
            diffs.append((slab - sel.select_real(whole, start)).abs().mean(dim=(0, 1, 2, 3)).double().cpu().numpy())
    per_slice = np.stack(diffs)  # [n · positions, L]
    inner = per_slice[:, 1:-1]
    return {
        "mean": float(per_slice.mean()),
        "border": float(per_slice[:, [0, -1]].mean()),
        "inner": float(inner.mean()) if inner.size else float("nan"),
    }
