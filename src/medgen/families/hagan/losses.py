"""The HA-GAN losses (Sun et al., IEEE JBHI 2022: the paper's D, G, E^H and E^G objectives).

All adversarial losses take *logits* (the discriminator's output before the
sigmoid) and use binary cross-entropy with logits, which is the numerically
stable form of ``-[y log σ(l) + (1 - y) log(1 - σ(l))]``. Every loss is a mean
over the batch (and over voxels for the L1 reconstruction losses), computed in
float32 even when the forward pass ran under bf16 autocast.

Class-conditional (AC-GAN) terms use cross-entropy on the discriminator's class
logits; ``class_weight`` is the paper's λ = 0.1 for the generator. The
discriminator adds the cross-entropy on *real* volumes only (with weight 1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def _bce(logits: Tensor, target: float) -> Tensor:
    logits = logits.float()
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def discriminator_loss(
    logit_real: Tensor,
    logit_fake: Tensor,
    class_logits_real: Tensor | None = None,
    labels_real: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    """D loss: BCE(D(real), 1) + BCE(D(fake), 0) [+ CE(class head on real, true class)].

    Returns ``(total, class_term)``; ``class_term`` is None when unconditional.
    """
    loss = _bce(logit_real, 1.0) + _bce(logit_fake, 0.0)
    class_term = None
    if class_logits_real is not None:
        class_term = F.cross_entropy(class_logits_real.float(), labels_real)
        loss = loss + class_term
    return loss, class_term


def generator_loss(
    logit_fake: Tensor,
    class_logits_fake: Tensor | None = None,
    labels_fake: Tensor | None = None,
    class_weight: float = 0.1,
) -> tuple[Tensor, Tensor | None]:
    """Non-saturating G loss: BCE(D(fake), 1) [+ λ · CE(class head on fake, sampled class)].

    Returns ``(total, class_term)`` where ``class_term`` is the unweighted CE.
    """
    loss = _bce(logit_fake, 1.0)
    class_term = None
    if class_logits_fake is not None:
        class_term = F.cross_entropy(class_logits_fake.float(), labels_fake)
        loss = loss + class_weight * class_term
    return loss, class_term


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
