"""``cyclegan`` training: the unpaired translation step of Zhu et al. (2017) in 3D.

One iteration (:func:`train_step`) on a batch of unpaired items — a volume ``a`` of domain A and a volume ``b``
of domain B, of different subjects — each optionally cut to its own random patch:

    b̂ = G_AB(a),  â = G_BA(b)                            (the ``unet`` network, one per direction)
    G step (D_A, D_B frozen), one Adam step of G_AB and G_BA together:
        L_G = ℓ(D_B(b̂), real) + ℓ(D_A(â), real)
              + λ_cycle · (|G_BA(b̂) − a|₁ + |G_AB(â) − b|₁)      (cycle consistency)
              + λ_id · (|G_BA(a) − a|₁ + |G_AB(b) − b|₁)         (identity; skipped when λ_id = 0)
    D steps:  L_D_A = ½ [ℓ(D_A(a), real) + ℓ(D_A(pool_A(â)), fake)],  L_D_B likewise with b and pool_B(b̂)

ℓ is MONAI's ``PatchAdversarialLoss``, least squares on the raw logits (LSGAN, the paper's choice); D_A and
D_B are MONAI ``PatchDiscriminator`` s on one volume (instance normalisation, so the real and generated halves
of their batch never share statistics). As in the authors' code, the generators are updated first and the
discriminators then judge the generated volumes of this iteration's forward pass (detached), mixed with older
ones by the pools; the D losses are halved. With ``decay_iters`` > 0 both learning rates decay linearly to 0
from iteration ``decay_start`` on (the paper's schedule; set from the iteration number alone, so a resumed run,
longer or not, decays alike).

Logged losses: ``D_A``, ``D_B``; ``G_AB``, ``G_BA`` (the adversarial terms of each generator); ``cycle_A``
(|G_BA(G_AB(a)) − a|₁), ``cycle_B``; ``idt_A`` (|G_BA(a) − a|₁), ``idt_B`` — unweighted means.

Image pool (Shrivastava et al. 2017, as the paper uses it): each domain keeps the last ``pool_size`` generated
volumes (or patches); each new one is stored, and once the pool is full, with probability ½ D sees a stored
one instead and the new one takes its place. The pools are buffers of modules listed among the networks
(``pool_A``, ``pool_B``), so they are checkpointed with the weights and a resumed run continues bitwise; the
draws come from the step's generator. Under ``torchrun`` the ranks gather their generated volumes and update
one pool of the global batch with rank 0's draws, so every rank holds the same pools (the ones rank 0 saves).
Memory: ``pool_size`` × patch³ (or volume³) float32 per domain on the device and in every checkpoint.

DDP: G_AB and G_BA are wrapped together (:class:`Generators`, all their passes of an iteration in one call),
D_A and D_B each on their own; every wrapper is called once per iteration, by its update.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

from medgen.core.errors import UsageError
from medgen.families.cyclegan.config import CycleGANConfig, CycleGANHParams
from medgen.families.unet.config import UNetConfig
from medgen.families.unet.network import build_unet, forward
from medgen.families.unet.train import random_patches
from medgen.training.family import Step


def build_discriminator(cfg: CycleGANConfig) -> nn.Module:
    """MONAI's ``PatchDiscriminator`` on one volume of a domain (pix2pix's, without the condition channels)."""
    from monai.networks.nets import PatchDiscriminator

    return PatchDiscriminator(spatial_dims=3, channels=cfg.d_channels, in_channels=1, out_channels=1,
                              num_layers_d=cfg.d_layers, norm="INSTANCE")


class ImagePool(nn.Module):
    """The history of generated volumes a discriminator also judges (module docstring); ``images`` and ``count``
    are buffers, so the pool is saved and restored with the weights."""

    def __init__(self, size: int, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.size = int(size)
        self.register_buffer("images", torch.zeros(self.size, *shape))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def query(self, fakes: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        """The volumes D judges in place of ``fakes`` ``[b, 1, ...]`` (this rank's), updating the pool."""
        fakes = fakes.detach().float().contiguous()
        everyone, rank, world = _gather(fakes)
        n = everyone.shape[0]
        draws = torch.stack([torch.rand(n, generator=rng, dtype=torch.float64),
                             torch.randint(self.size, (n,), generator=rng).double()])
        if world > 1:  # rank 0's draws on every rank: the pools stay identical
            shared = draws.to(fakes.device)
            torch.distributed.broadcast(shared, src=0)
            draws = shared.cpu()
        swap, slot = (draws[0] > 0.5).tolist(), draws[1].long().tolist()
        out = everyone.clone()
        filled = int(self.count)
        for i in range(n):
            if filled < self.size:  # filling up: stored, and judged as it is
                self.images[filled] = everyone[i]
                filled += 1
            elif swap[i]:
                out[i] = self.images[slot[i]]
                self.images[slot[i]] = everyone[i]
        self.count.fill_(filled)
        b = fakes.shape[0]
        return out[rank * b:(rank + 1) * b]


def _gather(x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    """Every rank's ``x`` concatenated in rank order (``x`` itself without ``torchrun``), this rank, the world size."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x, 0, 1
    world = dist.get_world_size()
    parts = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(parts, x)
    return torch.cat(parts), dist.get_rank(), world


class Generators(nn.Module):
    """G_AB and G_BA as one module: every generator pass of an iteration in one call (what DDP wraps)."""

    def __init__(self, g_ab: nn.Module, g_ba: nn.Module) -> None:
        super().__init__()
        self.g_ab, self.g_ba = g_ab, g_ba

    def forward(self, a: torch.Tensor, b: torch.Tensor, cfg_ab: UNetConfig, cfg_ba: UNetConfig,
                identity: bool) -> dict[str, torch.Tensor]:
        n = a.shape[0]
        if identity:  # G_AB on a (translation) and b (identity) in one batch; instance norm keeps them apart
            fake_b, idt_b = forward(self.g_ab, torch.cat([a, b]), cfg_ab).split(n)
            fake_a, idt_a = forward(self.g_ba, torch.cat([b, a]), cfg_ba).split(n)
        else:
            fake_b, fake_a = forward(self.g_ab, a, cfg_ab), forward(self.g_ba, b, cfg_ba)
            idt_a = idt_b = None
        out = {"fake_b": fake_b, "fake_a": fake_a, "rec_a": forward(self.g_ba, fake_b, cfg_ba),
               "rec_b": forward(self.g_ab, fake_a, cfg_ab)}
        if identity:
            out.update(idt_a=idt_a, idt_b=idt_b)
        return out


def pool_edge(cfg: CycleGANConfig, hp: CycleGANHParams) -> int:
    """The edge of what the pools hold: the training patch, or the whole volume."""
    return hp.patch if hp.patch and hp.patch < cfg.size else cfg.size


def build(cfg: CycleGANConfig, hp: CycleGANHParams, device: torch.device) -> dict[str, nn.Module]:
    if hp.patch and (hp.patch % cfg.divisor or hp.patch > cfg.size):
        raise UsageError(f"patch {hp.patch}: a multiple of {cfg.divisor} no larger than the volume ({cfg.size})")
    edge, smallest = pool_edge(cfg, hp), 3 * 2 ** cfg.d_layers  # D's last strided layer needs 2³ voxels or more
    if edge < smallest:
        raise UsageError(f"{'patch' if edge < cfg.size else 'size'} {edge}: the discriminators' {cfg.d_layers} strided "
                         f"layers need volumes or patches of at least {smallest}³ voxels")
    nets = {"G_AB": build_unet(cfg.generator("AtoB")), "G_BA": build_unet(cfg.generator("BtoA")),
            "D_A": build_discriminator(cfg), "D_B": build_discriminator(cfg)}
    if hp.pool_size:
        nets.update(pool_A=ImagePool(hp.pool_size, (1, edge, edge, edge)),
                    pool_B=ImagePool(hp.pool_size, (1, edge, edge, edge)))
    return {name: net.to(device) for name, net in nets.items()}


def optimizers(nets: dict[str, nn.Module], hp: CycleGANHParams, device: torch.device) -> dict[str, torch.optim.Optimizer]:
    """One Adam for both generators (their losses are one sum), one per discriminator (Adam is per parameter, so
    this equals the authors' single optimiser over D_A and D_B)."""
    gens = itertools.chain(nets["G_AB"].parameters(), nets["G_BA"].parameters())
    return {"G": torch.optim.Adam(gens, lr=hp.lr_g, betas=hp.betas),
            "D_A": torch.optim.Adam(nets["D_A"].parameters(), lr=hp.lr_d, betas=hp.betas),
            "D_B": torch.optim.Adam(nets["D_B"].parameters(), lr=hp.lr_d, betas=hp.betas)}


def ddp_modules(nets: dict[str, nn.Module]) -> dict[str, nn.Module]:
    return {"G": Generators(nets["G_AB"], nets["G_BA"]), "D_A": nets["D_A"], "D_B": nets["D_B"]}


def loss_names(cfg: CycleGANConfig, hp: CycleGANHParams) -> list[str]:
    return ["D_A", "D_B", "G_AB", "G_BA", "cycle_A", "cycle_B"] + (["idt_A", "idt_B"] if hp.lambda_id > 0 else [])


def lr_factor(hp: CycleGANHParams, iteration: int) -> float:
    """The learning rates' factor at ``iteration`` (0-based): 1 before ``decay_start``, then 1 − k/(``decay_iters`` + 1)
    at the k-th iteration from it (k = 1, 2, ...; the authors' linear rule, per iteration) down to 0; always 1
    when ``decay_iters`` is 0."""
    if not hp.decay_iters:
        return 1.0
    return max(0.0, 1.0 - max(0, iteration + 1 - hp.decay_start) / (hp.decay_iters + 1))


def train_step(s: Step) -> dict[str, torch.Tensor]:
    """The G update, then the D_A and D_B updates (module docstring)."""
    from monai.losses import PatchAdversarialLoss

    cfg: CycleGANConfig = s.model
    hp: CycleGANHParams = s.hp
    adv = PatchAdversarialLoss(criterion=hp.criterion, no_activation_leastsq=True)
    a, b = s.batch[cfg.domain_a].float(), s.batch[cfg.domain_b].float()
    if hp.patch and hp.patch < a.shape[-1]:  # unpaired: each volume its own window
        (a,), (b,) = random_patches([a], hp.patch, s.rng), random_patches([b], hp.patch, s.rng)
    factor = lr_factor(hp, s.iteration)
    for name, lr in (("G", hp.lr_g), ("D_A", hp.lr_d), ("D_B", hp.lr_d)):
        for group in s.opt[name].param_groups:
            group["lr"] = lr * factor
    D_A, D_B = s.nets["D_A"], s.nets["D_B"]
    identity = hp.lambda_id > 0

    D_A.requires_grad_(False)
    D_B.requires_grad_(False)
    with s.amp():
        out = s.ddp["G"](a, b, cfg.generator("AtoB"), cfg.generator("BtoA"), identity)
        logits_b, logits_a = D_B(out["fake_b"])[-1], D_A(out["fake_a"])[-1]
    losses = {"G_AB": adv(logits_b.float(), target_is_real=True, for_discriminator=False),
              "G_BA": adv(logits_a.float(), target_is_real=True, for_discriminator=False),
              "cycle_A": F.l1_loss(out["rec_a"].float(), a), "cycle_B": F.l1_loss(out["rec_b"].float(), b)}
    loss_g = losses["G_AB"] + losses["G_BA"] + hp.lambda_cycle * (losses["cycle_A"] + losses["cycle_B"])
    if identity:
        losses["idt_A"], losses["idt_B"] = F.l1_loss(out["idt_a"].float(), a), F.l1_loss(out["idt_b"].float(), b)
        loss_g = loss_g + hp.lambda_id * (losses["idt_A"] + losses["idt_B"])
    s.update("G", loss_g)
    D_A.requires_grad_(True)
    D_B.requires_grad_(True)

    n = a.shape[0]
    for name, real, fake, pool in (("D_A", a, out["fake_a"], "pool_A"), ("D_B", b, out["fake_b"], "pool_B")):
        fake = s.nets[pool].query(fake, s.rng) if pool in s.nets else fake.detach().float()
        with s.amp():
            logits = s.ddp[name](torch.cat([real, fake]))[-1]
        losses[name] = 0.5 * (adv(logits[:n].float(), target_is_real=True, for_discriminator=True)
                              + adv(logits[n:].float(), target_is_real=False, for_discriminator=True))
        s.update(name, losses[name])
    return {k: losses[k] for k in loss_names(cfg, hp)}
