"""The HA-GAN losses (Sun et al., IEEE JBHI 2022: the paper's D, G, E^H and E^G objectives).

All adversarial losses take *logits* (the discriminator's output before the
sigmoid) and use binary cross-entropy with logits, which is the numerically
stable form of ``-[y log σ(l) + (1 - y) log(1 - σ(l))]``. Every loss is a mean
over the batch (and over voxels for the L1 reconstruction losses), computed in
float32 even when the forward pass ran under bf16 autocast.

Class-conditional (AC-GAN) terms use cross-entropy on the discriminator's class
logits; ``class_weight`` is λ for the generator (paper: 0.1). The discriminator
adds the cross-entropy on *real* volumes only (with weight 1). D^H and D^L each
have a class head; :func:`class_loss` either averages their logits and takes one
cross-entropy (``"mean"``, the authors' code and the default: D^H can leave the
class to D^L) or takes the mean of one cross-entropy per head (``"per-head"``:
each head must learn the class; it measured no better on the phantoms, see
``docs/results/recipes``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def _bce(logits: Tensor, target: float) -> Tensor:
    logits = logits.float()
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


CLASS_LOSSES = ("mean", "per-head")


def class_loss(class_logits: Sequence[Tensor], labels: Tensor, mode: str = "mean") -> Tensor:
    """Cross-entropy of the class heads' logits (one [B, K] tensor per head) against ``labels`` [B].

    ``"mean"``: CE of the heads' averaged logits. ``"per-head"``: mean over heads of each head's CE.
    """
    if mode == "mean":
        return F.cross_entropy(torch.stack([c.float() for c in class_logits]).mean(0), labels)
    if mode == "per-head":
        return torch.stack([F.cross_entropy(c.float(), labels) for c in class_logits]).mean()
    raise ValueError(f"class loss {mode!r}: one of {', '.join(CLASS_LOSSES)}")


def discriminator_loss(
    logit_real: Tensor,
    logit_fake: Tensor,
    class_logits_real: Sequence[Tensor] | None = None,
    labels_real: Tensor | None = None,
    class_mode: str = "mean",
) -> tuple[Tensor, Tensor | None]:
    """D loss: BCE(D(real), 1) + BCE(D(fake), 0) [+ CE(class heads on real, true class)].

    Returns ``(total, class_term)``; ``class_term`` is None when unconditional.
    """
    loss = _bce(logit_real, 1.0) + _bce(logit_fake, 0.0)
    class_term = None
    if class_logits_real is not None:
        class_term = class_loss(class_logits_real, labels_real, class_mode)
        loss = loss + class_term
    return loss, class_term


def generator_loss(
    logit_fake: Tensor,
    class_logits_fake: Sequence[Tensor] | None = None,
    labels_fake: Tensor | None = None,
    class_weight: float = 0.1,
    class_mode: str = "mean",
) -> tuple[Tensor, Tensor | None]:
    """Non-saturating G loss: BCE(D(fake), 1) [+ λ · CE(class heads on fake, sampled class)].

    Returns ``(total, class_term)`` where ``class_term`` is the unweighted CE.
    """
    loss = _bce(logit_fake, 1.0)
    class_term = None
    if class_logits_fake is not None:
        class_term = class_loss(class_logits_fake, labels_fake, class_mode)
        loss = loss + class_weight * class_term
    return loss, class_term


MODE_SEEKING_EPS = 1e-5  # Mao et al. 2019


def mode_seeking_loss(volumes: Tensor, codes: Tensor) -> Tensor:
    """Mode-seeking term (Mao et al. 2019, MSGAN): 1 / (ratio + ε), where ratio is the mean absolute
    difference between the generated volumes of neighbouring batch members (volume i and i − 1, cyclically)
    over that between their codes. Minimising it makes G map distant codes to distant volumes, the opposite
    of a collapsed generator; a batch of one volume has no pair, and the term is 0. (Neither MONAI nor
    TorchIO has this loss.)"""
    if volumes.shape[0] < 2:
        return volumes.new_zeros(())
    v, c = volumes.float().flatten(1), codes.float().flatten(1)
    ratio = (v - v.roll(1, 0)).abs().mean(1) / (c - c.roll(1, 0)).abs().mean(1)
    return 1.0 / (ratio.mean() + MODE_SEEKING_EPS)


def high_res_encoder_loss(reconstructed_slab: Tensor, real_slab: Tensor) -> Tensor:
    """E^H loss: mean absolute error L1(G^H(E^H(x_slab)), x_slab), intensities in [-1, 1]."""
    return F.l1_loss(reconstructed_slab.float(), real_slab.float())


def ground_encoder_loss(
    reconstructed_slab: Tensor,
    real_slab: Tensor,
    reconstructed_low: Tensor | None,
    real_low: Tensor | None,
) -> Tensor:
    """E^G loss: mean of L1 on the regenerated slab and L1 on the regenerated low-res volume.

    Without the low-resolution branch (ablation) only the slab term remains.
    """
    slab_term = F.l1_loss(reconstructed_slab.float(), real_slab.float())
    if reconstructed_low is None:
        return slab_term
    low_term = F.l1_loss(reconstructed_low.float(), real_low.float())
    return 0.5 * (slab_term + low_term)
