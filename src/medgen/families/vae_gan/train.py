"""VAE-GAN training: hyper-parameters, networks, optimisers, the losses and the step the shared loop runs.

One iteration (:func:`train_step`) is Larsen et al.'s Algorithm 1 on the iteration's batch x::

    μ, log σ² = E(x);  z = μ + σ ⊙ ε,  ε ~ N(0, I);  z_p ~ N(0, I)
    x̃ = G(z),  x_p = G(z_p)                                    (one generator pass on [z; z_p])
    L_prior = KL(N(μ, σ²) ‖ N(0, I)) = ½ Σ (μ² + σ² − log σ² − 1)      (nats per volume)
    L_rec   = ½ mean (D_l(x̃) − D_l(x))²   (reconstruction=feature: D's hidden layer l)
              mean |x̃ − x|                (reconstruction=l1: voxel-wise)
    L_GAN   = BCE(D(x), 1) + BCE(D(x̃), 0) + BCE(D(x_p), 0)

    E  minimises  L_rec + kl_weight · L_prior / latent_dim
    G  minimises  gamma · L_rec + BCE(D(x̃), 1) + BCE(D(x_p), 1)
    D  minimises  L_GAN

Every gradient is taken at the same weights, from one pass of each network, and each network
gets only its own loss's gradient: L_rec does not train D, and the adversarial terms do not
reach E (Larsen et al.'s "limiting error signals"); ``torch.autograd.backward(…, inputs=…)``
routes them. Then the three optimisers step.

Scales: L_rec is a mean over the N elements it compares (C·(S/2^l)³ features, or S³
voxels) and L_prior is taken per latent dimension, as Kwon et al.'s 3D code normalises it,
so the balance does not drift with the volume size. Larsen et al.'s objective (the KL
against the reconstruction error summed over elements) is ``kl_weight`` = latent_dim / N,
which shrinks with the volume (1/64 for the ``tiny`` preset at 32³, 1/524 for ``paper`` at
128³). The default 0.5 was chosen on 32³ thorax phantoms (``tiny``, batch 4, 4 CPU
minutes, one seed per setting; prior samples looked at, reconstruction L1 of three training
volumes measured): with Larsen et al.'s 1/64 the posterior means of the 32 training volumes
left most of the prior unvisited and prior samples were boxes with bright borders
(reconstruction L1 0.12); with 0.1 (Kwon et al.'s ratio of the KL to their voxel term)
partly so (0.12); with about 0.5 (two runs) they showed a body with two lungs, at the cost
of blurrier reconstructions (0.19 and 0.22). ``gamma`` weighs reconstruction against
fooling D in the generator's loss (Larsen et al.'s γ).

Where this differs from Larsen et al.: the generator's adversarial terms are the
non-saturating form −log D(·) (Goodfellow et al. 2014's practice) rather than log(1 − D(·));
D_l is the discriminator's hidden layer at S/2^l (``feature_layer`` l = 3, S/8: the resolution
of the last convolution of their discriminator, 8² for 64² images); the networks are the 3D
ones of :mod:`.config` and Adam with Kwon et al.'s settings (lr 1e-4, β = (0.9, 0.999))
replaces RMSProp. (Kwon et al.'s 3D code measures a voxel MSE instead of D_l, weighted 10 for
E and 20 for G, and normalises the KL per latent dimension.)

Random draws, in this order, from the loop's per-iteration generator: ε, then z_p.

DDP: E, G and D are each wrapped and each wrapper is called once per iteration; each is
followed by one backward pass that reaches its parameters (the three restricted passes share
the graph).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medgen.core.errors import UsageError
from medgen.core.settings import from_dict, tuples_as_lists
from medgen.families import dcgan3d
from medgen.families.dcgan3d import Critic, Generator
from medgen.families.vae_gan.config import VAEGANConfig
from medgen.families.vae_gan.networks import Encoder
from medgen.training.family import Step

RECONSTRUCTIONS = ("feature", "l1")


@dataclass
class VAEGANHParams:
    """Adam learning rates ``lr_e``, ``lr_g``, ``lr_d`` and ``betas``; ``reconstruction``: ``feature`` (in D's
    hidden layer ``feature_layer``, at S/2^feature_layer, the deepest when the volume is smaller) or ``l1``
    (voxel-wise); ``gamma``: the generator's weight of the reconstruction term; ``kl_weight``: the encoder's
    weight of the prior term, the KL per latent dimension (module docstring)."""

    lr_e: float = 1e-4
    lr_g: float = 1e-4
    lr_d: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    reconstruction: str = "feature"
    feature_layer: int = 3
    gamma: float = 1.0
    kl_weight: float = 0.5

    def to_dict(self) -> dict[str, Any]:
        return tuples_as_lists(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "VAEGANHParams":
        hp = from_dict(cls, d, "VAE-GAN training setting")
        if not (hp.lr_e > 0 and hp.lr_g > 0 and hp.lr_d > 0):
            raise UsageError("lr_e, lr_g and lr_d must be > 0")
        if len(hp.betas) != 2 or not all(0 <= b < 1 for b in hp.betas):
            raise UsageError(f"betas {hp.betas}: need two values in [0, 1)")
        if hp.reconstruction not in RECONSTRUCTIONS:
            raise UsageError(f"reconstruction {hp.reconstruction!r}: choose {' or '.join(RECONSTRUCTIONS)}")
        if not isinstance(hp.feature_layer, int) or hp.feature_layer < 1:
            raise UsageError(f"feature_layer {hp.feature_layer!r}: need an integer >= 1 (the layer at S/2^l)")
        if hp.gamma < 0 or hp.kl_weight < 0:
            raise UsageError("gamma and kl_weight must be >= 0")
        return hp


def build(cfg: VAEGANConfig, hp: VAEGANHParams, device: torch.device) -> dict[str, nn.Module]:
    """E, G and D on ``device``; the checkpoint keys are these names."""
    return {"E": Encoder(cfg).to(device), "G": Generator(cfg).to(device), "D": Critic(cfg).to(device)}


def optimizers(nets: dict[str, nn.Module], hp: VAEGANHParams, device: torch.device) -> dict[str, torch.optim.Optimizer]:
    betas = tuple(float(b) for b in hp.betas)
    return {name: torch.optim.Adam(nets[name].parameters(), lr=lr, betas=betas)
            for name, lr in (("E", hp.lr_e), ("G", hp.lr_g), ("D", hp.lr_d))}


def loss_names(cfg: VAEGANConfig, hp: VAEGANHParams) -> list[str]:
    """D: L_GAN; G: the generator's adversarial terms; rec: L_rec; KL: L_prior in nats per volume."""
    return ["D", "G", "rec", "KL"]


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, σ²) ‖ N(0, I)) of each row: ½ Σ (μ² + σ² − log σ² − 1), shape [B]."""
    return 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1).sum(dim=1)


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """z = μ + σ ⊙ ε, σ = exp(½ log σ²): a draw of q(z|x) differentiable in μ and log σ²."""
    return mu + (0.5 * logvar).exp() * eps


def feature_level(cfg: VAEGANConfig, hp: VAEGANHParams) -> int:
    """0-based index of D's hidden layer L_rec compares (``feature_layer``, at most the deepest)."""
    return min(hp.feature_layer, cfg.levels) - 1


def reconstruction_loss(kind: str, x: torch.Tensor, x_rec: torch.Tensor, feat_real: torch.Tensor | None = None,
                        feat_rec: torch.Tensor | None = None) -> torch.Tensor:
    """``feature``: ½ mean (D_l(x̃) − D_l(x))² (the Gaussian log-likelihood in D's layer, up to constants; D_l(x) is
    a fixed target); ``l1``: mean |x̃ − x|."""
    if kind == "feature":
        return 0.5 * (feat_rec.float() - feat_real.detach().float()).pow(2).mean()
    return (x_rec.float() - x.float()).abs().mean()


def discriminator_loss(s_real: torch.Tensor, s_rec: torch.Tensor, s_prior: torch.Tensor) -> torch.Tensor:
    """L_GAN = BCE(D(x), 1) + BCE(D(x̃), 0) + BCE(D(x_p), 0), on logits."""
    bce = F.binary_cross_entropy_with_logits
    return (bce(s_real, torch.ones_like(s_real)) + bce(s_rec, torch.zeros_like(s_rec))
            + bce(s_prior, torch.zeros_like(s_prior)))


def generator_adversarial_loss(s_rec: torch.Tensor, s_prior: torch.Tensor) -> torch.Tensor:
    """BCE(D(x̃), 1) + BCE(D(x_p), 1): the non-saturating form of the generator's share of −L_GAN."""
    bce = F.binary_cross_entropy_with_logits
    return bce(s_rec, torch.ones_like(s_rec)) + bce(s_prior, torch.ones_like(s_prior))


def train_step(s: Step) -> dict[str, torch.Tensor]:
    """One simultaneous update of E, G and D (module docstring)."""
    cfg: VAEGANConfig = s.model
    hp: VAEGANHParams = s.hp
    x = s.batch["image"].float()
    b, d, dev = x.shape[0], cfg.latent_dim, s.device
    eps = torch.randn(b, d, generator=s.rng).to(dev)
    z_p = torch.randn(b, d, generator=s.rng).to(dev)

    with s.amp():
        mu, logvar = s.ddp["E"](x)
    mu, logvar = mu.float(), logvar.float()
    z = reparameterize(mu, logvar, eps)
    with s.amp():
        gen = s.ddp["G"](torch.cat([z, z_p])).float()
    x_rec, x_p = gen[:b], gen[b:]
    with s.amp():
        scores, hidden = s.ddp["D"](torch.cat([x, x_rec, x_p]), features=True)
    scores = scores.float()
    s_real, s_rec, s_prior = scores[:b], scores[b : 2 * b], scores[2 * b :]
    feat = hidden[feature_level(cfg, hp)] if hp.reconstruction == "feature" else None

    loss_d = discriminator_loss(s_real, s_rec, s_prior)
    adv_g = generator_adversarial_loss(s_rec, s_prior)
    rec = reconstruction_loss(hp.reconstruction, x, x_rec, None if feat is None else feat[:b],
                              None if feat is None else feat[b : 2 * b])
    kl = kl_divergence(mu, logvar).mean()
    loss_e = rec + hp.kl_weight * kl / d
    loss_g = hp.gamma * rec + adv_g

    # each network's gradient of its own loss, all at the current weights (the last pass frees the graph)
    order = (("D", loss_d), ("E", loss_e), ("G", loss_g))
    for i, (name, loss) in enumerate(order):
        torch.autograd.backward(loss, inputs=list(s.nets[name].parameters()), retain_graph=i < len(order) - 1)
    for name, _ in order:
        s.opt[name].step()
        s.opt[name].zero_grad(set_to_none=True)
    return {"D": loss_d.detach(), "G": adv_g.detach(), "rec": rec.detach(), "KL": kl.detach()}


def preview(nets: dict[str, nn.Module], cfg: VAEGANConfig, hp: VAEGANHParams, n: int, seed: int, device: torch.device,
            amp) -> tuple[list[Any], list[str]]:
    """``n`` prior samples of the (EMA) generator for fixed z drawn from ``seed``, for the training mosaics."""
    return dcgan3d.preview(nets["G"], cfg.latent_dim, n, seed, device, amp)
