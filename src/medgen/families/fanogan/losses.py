"""The izi_f objective of f-AnoGAN (Schlegl et al. 2019, eq. 5) and its anomaly score (eq. 6).

For a volume x with n_x voxels, its reconstruction x̂ = G(E(x)) and features f with n_f values::

    L(x) = (1/n_x)·‖x − x̂‖² + κ·(1/n_f)·‖f(x) − f(x̂)‖²

The training loss is L averaged over the batch; the anomaly score A(x) is L(x) of one volume
(the same two residual terms, with the κ of training). f(x) of the input is a fixed target
(no gradient); the gradient reaches E through x̂ and f(x̂).
"""

from __future__ import annotations

from typing import Callable

import torch


def izif_terms(x: torch.Tensor, x_rec: torch.Tensor, features: Callable[[torch.Tensor], torch.Tensor]
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-volume (image residual (1/n_x)‖x − x̂‖², feature residual (1/n_f)‖f(x) − f(x̂)‖²), each [b], float32.

    ``x``, ``x_rec``: [b, 1, S, S, S]; ``features``: volumes → [b, n_f] (the discriminator's,
    :func:`medgen.families.fanogan.networks.discriminator_features`, or any stand-in).
    """
    image = (x.float() - x_rec.float()).pow(2).flatten(1).mean(1)
    with torch.no_grad():
        f_real = features(x).float()
    feature = (f_real - features(x_rec).float()).pow(2).flatten(1).mean(1)
    return image, feature


def izif_loss(x: torch.Tensor, x_rec: torch.Tensor, features: Callable[[torch.Tensor], torch.Tensor],
              kappa: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, image term, feature term), each the batch mean of :func:`izif_terms` (loss = image + κ·feature)."""
    image, feature = izif_terms(x, x_rec, features)
    image, feature = image.mean(), feature.mean()
    return image + kappa * feature, image, feature
