"""Autoencoder training: hyper-parameters, the network, its optimiser and the step the shared loop runs.

One iteration (:func:`train_step`) on a batch of volumes x in [-1, 1]::

    plain AE (variational: false):
        x̂ = D(E(x))
        loss = rec(x̂, x)
    VAE (variational: true):
        μ, log σ² = E(x);  z = μ + σ ⊙ ε,  ε ~ N(0, I);  x̂ = D(z)
        KL   = ½ Σ_j (μ_j² + σ_j² − log σ_j² − 1)          (nats per volume, averaged over the batch)
        loss = rec(x̂, x) + kl_weight · KL / N

    rec = mean |x̂ − x| (``reconstruction: l1``) or mean (x̂ − x)² (``mse``), over the N = S³ voxels

Scale of the KL term: the negative ELBO with a unit-scale likelihood (Laplace for l1, Gaussian of
variance ½ for mse) sums the voxel errors, Σ_voxels + KL; divided by N it is rec + KL / N. So
``kl_weight`` is the β of a β-VAE (Higgins et al. 2017): 1 is that ELBO at every volume size, more
than 1 presses the posterior towards the prior (smoother latent space, blurrier reconstructions),
less keeps more detail. The logged ``kl`` is the KL itself, in nats per volume.

Baur et al. 2021's autoencoders learn normal anatomy from the reconstruction error (their residual
|x − x̂| is the anomaly map) and their VAEs add the KL term; L1 is the default here, as the anomaly map
is an L1 residual.

Adam with β = (0.9, 0.999) and lr 1e-3, chosen on 32³ toy volumes (16 ellipsoids, batch 4, 300 CPU
iterations, one seed; mean L1 error of 4 held-out volumes): ``tiny`` AE 0.46 at lr 1e-4, 0.21 at 3e-4,
0.10 at 1e-3; ``small`` AE 0.12 at 3e-4, 0.07 at 1e-3 (VAE 0.11, 0.08), without instability. Not
measured for ``base`` at 128³; a lower rate (``--hparam lr=3e-4``) is the cautious choice there.

Random draws: the VAE's ε, from the loop's per-iteration generator (a resumed run is exact). The AE
draws nothing.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from medgen.core.errors import UsageError
from medgen.core.settings import from_dict, tuples_as_lists
from medgen.families.autoencoder.config import AEConfig
from medgen.families.autoencoder.networks import build_network
from medgen.training.family import Step

RECONSTRUCTIONS = ("l1", "mse")
NET = "autoencoder"  # the network's name: its weights key in the checkpoint


@dataclass
class AEHParams:
    """Adam ``lr`` and ``betas``; ``reconstruction``: ``l1`` or ``mse``; ``kl_weight``: the VAE's β (module
    docstring; the plain AE has no KL term and ignores it)."""

    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    reconstruction: str = "l1"
    kl_weight: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return tuples_as_lists(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AEHParams":
        hp = from_dict(cls, d, "autoencoder training setting")
        if not hp.lr > 0:
            raise UsageError(f"lr {hp.lr}: must be > 0")
        if len(hp.betas) != 2 or not all(0 <= b < 1 for b in hp.betas):
            raise UsageError(f"betas {hp.betas}: need two values in [0, 1)")
        if hp.reconstruction not in RECONSTRUCTIONS:
            raise UsageError(f"reconstruction {hp.reconstruction!r}: choose {' or '.join(RECONSTRUCTIONS)}")
        if not hp.kl_weight >= 0:
            raise UsageError(f"kl_weight {hp.kl_weight}: must be >= 0")
        return hp


def build(cfg: AEConfig, hp: AEHParams, device: torch.device) -> dict[str, nn.Module]:
    return {NET: build_network(cfg).to(device)}


def optimizers(nets: dict[str, nn.Module], hp: AEHParams, device: torch.device) -> dict[str, torch.optim.Optimizer]:
    return {NET: torch.optim.Adam(nets[NET].parameters(), lr=hp.lr, betas=tuple(float(b) for b in hp.betas))}


def loss_names(cfg: AEConfig, hp: AEHParams) -> list[str]:
    """rec: the reconstruction error; kl (VAE only): KL(q(z|x) ‖ N(0, I)) in nats per volume."""
    return ["rec", "kl"] if cfg.variational else ["rec"]


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, σ²) ‖ N(0, I)) of each row: ½ Σ (μ² + σ² − log σ² − 1), shape [B]."""
    return 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1).sum(dim=1)


def reconstruction_error(kind: str, x_rec: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Mean |x̂ − x| (``l1``) or mean (x̂ − x)² (``mse``) over every voxel of the batch."""
    diff = x_rec.float() - x.float()
    return diff.abs().mean() if kind == "l1" else diff.pow(2).mean()


def train_step(s: Step) -> dict[str, torch.Tensor]:
    """One Adam update of the autoencoder (module docstring)."""
    cfg: AEConfig = s.model
    hp: AEHParams = s.hp
    x = s.batch["image"].float()
    if not cfg.variational:
        with s.amp():
            x_rec, _ = s.ddp[NET](x)
        rec = reconstruction_error(hp.reconstruction, x_rec, x)
        s.update(NET, rec)
        return {"rec": rec.detach()}
    eps = torch.randn(x.shape[0], cfg.latent_size, generator=s.rng).to(s.device)
    with s.amp():
        x_rec, mu, logvar = s.ddp[NET](x, eps)
    rec = reconstruction_error(hp.reconstruction, x_rec, x)
    kl = kl_divergence(mu.float(), logvar.float()).mean()
    s.update(NET, rec + hp.kl_weight * kl / x[0].numel())
    return {"rec": rec.detach(), "kl": kl.detach()}


@torch.no_grad()
def preview(nets: dict[str, nn.Module], cfg: AEConfig, hp: AEHParams, n: int, seed: int, device: torch.device,
            amp) -> tuple[list[Any], list[str]]:
    """The VAE: ``n`` volumes decoded from prior samples z ~ N(0, I) drawn from ``seed``, for the training mosaics.
    The plain AE has no prior to sample and the preview sees no data: nothing (no mosaic)."""
    if not cfg.variational:
        return [], []
    net = nets[NET]
    z = torch.randn(n, cfg.latent_size, generator=torch.Generator().manual_seed(seed))
    was_training = net.training
    net.eval()
    try:
        vols = []
        for i in range(n):
            with amp():
                vols.append(net.decode(z[i : i + 1].to(device))[0, 0].float().cpu().numpy())
    finally:
        net.train(was_training)
    return vols, [f"prior sample {i}" for i in range(n)]
