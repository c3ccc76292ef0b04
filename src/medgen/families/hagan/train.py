"""HA-GAN's training: hyper-parameters, networks, optimisers and the step the shared loop runs.

One iteration (:func:`train_step`)::

    draw z, class labels and the slab position (high_batch: slabs of the first volumes only)
    D step    BCE(D(real), 1) + BCE(D(fake), 0)           updates D only
              (r1_gamma > 0: + γ/2 · r1_every · ‖∇D(real)‖² every r1_every iterations)
    C step    CE(C(real), class)  (classifier conditioning) updates C only
    G step    BCE(D(fake), 1)  (non-saturating)            updates G only
              (AC-GAN: + λ × the class cross-entropies of D's heads; classifier: + λ × C's;
              projection: D is given the classes)
              (diversity_weight λ > 0: + λ / (mean |G^L(z_i) − G^L(z_j)| / mean |z_i − z_j|), neighbours i, j)
    E^H step  L1(G^H(E^H(x_slab)), x_slab)                  updates E^H only
    E^G step  ½[L1(slab) + L1(low-res)], z = E^G(E^H(x))   updates E^G only
              (recon_weight λ > 0: and G, with λ × its gradient)
              (both every ``encoder_every`` iterations; 1: every iteration, the paper)

(the EMA of G, logging, checkpoints, resume and DDP are the loop's:
:mod:`medgen.training.loop`).

Work that is shared ("no wasted work"):

* The generator runs once per iteration for the adversarial steps. Its output
  (with its autograd graph kept) feeds the D step *detached* and, after D has
  been updated, the G step through the *updated* D. This is exactly the
  gradient of re-running G on the same z, because G's weights do not change
  between the two steps; it differs from the authors' code only in that their
  G step draws a fresh z (an equally valid stochastic estimate, at the cost of
  a second generator forward pass).
* Real and fake go through D in one concatenated batch (D has no batch
  statistics, so this equals two separate calls).
* Networks that are not being updated are frozen (``requires_grad=False``):
  backward then computes no gradients for their weights (D and C in the G step, G
  in both encoder steps, E^H in the E^G step, which runs it under no_grad).
* The real low-resolution volume (trilinear downsampling by f) and the real
  slab are computed once per iteration and used by D, E^H and E^G.

Random draws, in this order from the loop's per-iteration generator: z, the
fake classes (conditional models), the slab starts.

DDP: G, D, E^H and E^G are each wrapped (``ddp_modules``) and each wrapper is
called exactly once per iteration, by the step that updates it (with ``recon_weight``
G's twice on the encoder's iterations, each call followed by its own backward). Under bf16
autocast the spectral-norm power iteration of D uses bf16 matrix-vector
products too; for a 512×13824 weight σ then differs from the float32 value by
about 1e-4 (relative), far below what matters for the Lipschitz bound.
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
from medgen.families.hagan.classifier import Classifier, augment_real
from medgen.families.hagan.config import CT_MODEL, PAPER_MODEL, HAGANConfig
from medgen.families.hagan.discriminator import Discriminator
from medgen.families.hagan.encoder import Encoder
from medgen.families.hagan.generator import Generator
from medgen.families.hagan.losses import (
    CLASS_LOSSES,
    class_loss,
    discriminator_loss,
    generator_loss,
    ground_encoder_loss,
    high_res_encoder_loss,
    mode_seeking_loss,
)
from medgen.families.penalties import lazy_r1_weight, r1_penalty
from medgen.training.family import Step


@dataclass
class HAGANHParams:
    """HA-GAN's training hyper-parameters. Defaults are the paper's except where
    :data:`PAPER_HPARAMS` says otherwise (``medgen train --recipe paper``).

    Learning rates are Adam step sizes; ``betas`` are Adam's (β1, β2).
    ``class_weight``: λ of G's class loss (AC-GAN heads or the classifier C; unused by a projection D,
    :attr:`~medgen.families.hagan.config.HAGANConfig.class_conditioning`). ``class_loss``: ``mean`` (one
    cross-entropy on the averaged logits of D^H's and D^L's class heads, the
    authors' code) or ``per-head`` (each head gets its own cross-entropy); with classifier
    conditioning the same for C^H's and C^L's logits.
    ``fake_labels``: the classes asked of G in training, ``uniform`` (the paper)
    or ``real`` (the real batch's labels, the authors' code: the class prior of the
    data). ``use_encoder``: False for the "no encoder" ablation (E^H, E^G not
    built). ``slab_selection``: random, or deterministic (the ablation that
    visits the slab positions in order). ``window_warmup``: with D windows
    (:attr:`~medgen.families.hagan.config.HAGANConfig.d_windows`), the iterations over which D's
    window channels blend linearly from the plain input into the windows (0: windows from the start).
    ``r1_gamma``: γ of an R1 penalty γ/2 · ‖∇D(real)‖² on D's real inputs (the slab and the low-resolution
    volume; 0: none, the paper), applied every ``r1_every`` iterations with its weight times ``r1_every``
    (lazy regularisation, as in StyleGAN2).
    ``encoder_every``: the E^H and E^G steps run on every ``encoder_every``-th iteration only (1: every
    iteration, the paper). The encoder never feeds back into G or D, so this changes what E learns per
    iteration, not the GAN, and it spends the time of the encoder steps (about a third of an iteration
    at 64³ ``tiny`` on a CPU) on more GAN iterations instead.
    ``c_augment``: with classifier conditioning, C learns from the real volumes flipped left-right and
    shifted in the axial plane by up to 1/8 of their size
    (:func:`~medgen.families.hagan.classifier.augment_real`; False: as they are). On 64 phantoms C
    otherwise learns each training volume's class by heart (cross-entropy 0.006 after 4000
    iterations) and G satisfies it without changing the emphysema.
    ``c_steps``: C's updates per iteration, all on the iteration's real batch, the first at D's slab
    positions and the others at newly drawn ones (each, with ``c_augment``, with a new flip and
    shift). On augmented volumes C learns the class far more slowly than G needs it: alone on 64
    augmented phantoms its held-out cross-entropy is still 1.15 after 4000 updates (chance 1.39) and
    about 1.0 after 8000-12000. With 4 updates per iteration the 64-phantom recipe's rank correlation
    of class and emphysema rose from 0.56 to 0.93 (docs/results/recipes), at 1.84 instead of 2.19
    iterations per second at 32³ on a CPU.
    ``high_batch``: only the first ``high_batch`` volumes of each process's batch go through G^H, D^H and the
    encoder steps (0: all of them, the paper); G^A, G^L and D^L take the whole batch, and D's logit for the
    other volumes is D^L's alone. So D^L, and its minibatch standard deviation, judge more whole volumes per
    step than G^H makes slabs. That is cheap where G^H and D^H dominate an iteration (256³); at 64³ ``tiny``
    G^A does, and an iteration at batch 16 with ``high_batch=4`` takes 2.46 times as long as one at batch 4
    (README, "HA-GAN in medgen", for the measurement). Unconditional models only.
    ``recon_weight``: λ > 0 makes the E^G step also update G, with λ times the gradient of its loss (G
    reproducing each real volume from the code E gives it; 0: G is frozen there, the paper). A generator
    that must reconstruct every training volume cannot leave out the ones a GAN finds hard, the
    reconstruction term of VAE-GAN and α-GAN (Rosca et al. 2017); here it is a second step of G's
    optimiser on the encoder's iterations.
    ``diversity_weight``: λ > 0 adds λ times the mode-seeking term of MSGAN (Mao et al. 2019) to G's loss:
    1 / (ratio + 1e-5), the ratio being the mean absolute difference between the low-resolution volumes
    G^L makes from neighbouring codes of the batch over the mean absolute difference between those codes
    (:func:`~medgen.families.hagan.losses.mode_seeking_loss`; 0: none, the paper). A generator whose
    volumes look alike whatever z pays for it; D keeps the volumes it is pushed towards realistic. It acts
    on G^L's whole volume, where G^A is the bottleneck of the spread (README, "HA-GAN in medgen": an
    inversion through A reaches every phantom, one through z does not), and is logged as ``diversity``.
    Real pairs of the 64³ thorax phantoms score 7.4 with codes drawn from N(0, I). Needs the
    low-resolution branch.
    """

    lr_g: float = 1e-4
    lr_d: float = 4e-4
    lr_eh: float = 1e-4
    lr_eg: float = 1e-4
    betas: tuple[float, float] = (0.0, 0.999)
    adam_eps: float = 1e-8
    class_weight: float = 0.1
    class_loss: str = "mean"
    fake_labels: str = "uniform"
    use_encoder: bool = True
    slab_selection: str = "random"
    window_warmup: int = 0
    r1_gamma: float = 0.0
    r1_every: int = 16
    encoder_every: int = 1
    c_augment: bool = False
    c_steps: int = 1
    high_batch: int = 0
    recon_weight: float = 0.0
    diversity_weight: float = 0.0

    def validate(self) -> None:
        checks = [
            (all(v > 0 for v in (self.lr_g, self.lr_d, self.lr_eh, self.lr_eg)), "learning rates must be > 0"),
            (len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), f"betas {self.betas}: need two values in [0, 1)"),
            (self.adam_eps > 0, f"adam_eps {self.adam_eps}: must be > 0"),
            (self.class_weight >= 0, f"class_weight {self.class_weight}: must be >= 0"),
            (self.slab_selection in ("random", "deterministic"), f"slab_selection {self.slab_selection!r}: random or deterministic"),
            (self.class_loss in CLASS_LOSSES, f"class_loss {self.class_loss!r}: {' or '.join(CLASS_LOSSES)}"),
            (self.fake_labels in ("uniform", "real"), f"fake_labels {self.fake_labels!r}: uniform or real"),
            (isinstance(self.window_warmup, int) and self.window_warmup >= 0,
             f"window_warmup {self.window_warmup!r}: a number of iterations >= 0"),
            (self.r1_gamma >= 0, f"r1_gamma {self.r1_gamma}: must be >= 0"),
            (isinstance(self.r1_every, int) and not isinstance(self.r1_every, bool) and self.r1_every >= 1,
             f"r1_every {self.r1_every!r}: need an integer >= 1"),
            (isinstance(self.encoder_every, int) and not isinstance(self.encoder_every, bool) and self.encoder_every >= 1,
             f"encoder_every {self.encoder_every!r}: need an integer >= 1"),
            (isinstance(self.c_augment, bool), f"c_augment {self.c_augment!r}: true or false"),
            (isinstance(self.c_steps, int) and not isinstance(self.c_steps, bool) and self.c_steps >= 1,
             f"c_steps {self.c_steps!r}: need an integer >= 1"),
            (isinstance(self.high_batch, int) and not isinstance(self.high_batch, bool) and self.high_batch >= 0,
             f"high_batch {self.high_batch!r}: a number of volumes >= 0 (0: the whole batch)"),
            (isinstance(self.recon_weight, (int, float)) and not isinstance(self.recon_weight, bool)
             and self.recon_weight >= 0, f"recon_weight {self.recon_weight!r}: must be >= 0"),
            (isinstance(self.diversity_weight, (int, float)) and not isinstance(self.diversity_weight, bool)
             and self.diversity_weight >= 0, f"diversity_weight {self.diversity_weight!r}: must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise UsageError(message)

    def to_dict(self) -> dict[str, Any]:
        return tuples_as_lists(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "HAGANHParams":
        hp = from_dict(cls, d, "HA-GAN training setting")
        hp.validate()
        return hp


# How medgen's training defaults differ from the paper's recipe (``medgen train --recipe paper``): not at
# all today. ``class_loss="per-head"`` and ``fake_labels="real"`` are options that measured no better
# (docs/results/recipes); the architecture side is
# :data:`medgen.families.hagan.config.PAPER_MODEL`.
PAPER_HPARAMS: dict[str, Any] = {}

# The ``ct`` recipe's training side (``medgen train --recipe ct``; the demo trains with it): medgen's
# settings for CT, measured on the demo's 64³ thorax phantoms (4000 iterations, 204 training phantoms,
# 128 samples against 128 other phantoms; README, "Where medgen's defaults differ from the paper's
# method"). Its architecture side, D's lung and bone windows, is
# :data:`medgen.families.hagan.config.CT_MODEL`. Not the family's defaults: the windows are CT's alone,
# and the committed experiments were made with the defaults (the recipes table measures these settings
# as variants).
#
# ``lr_g``: G learns at twice the paper's rate (D's stays 4e-4). Over seeds 0-2 (64 samples), this raised
# recall in every seed (0.88 / 0.91 / 0.86 against 0.63 / 0.73 / 0.74) and lowered FID (14 / 1.3 / 37
# against 21 / 4.5 / 59); coverage rose in two (0.77 / 0.91 / 0.51 against 0.62 / 0.77 / 0.50); the
# lung-fraction W1 did not improve (0.017-0.019 against 0.014-0.042).
# ``diversity_weight``: G also pays the mode-seeking term of MSGAN (Mao et al. 2019) with weight 0.3:
# 1 / (how far apart the low-resolution volumes of two codes lie, per unit distance between the codes).
# Over seeds 0-2, recall rose in every seed (0.78 / 0.83 / 0.78 against 0.59 / 0.74 / 0.50) with coverage
# 0.72 / 0.84 / 0.91 (0.87 / 0.95 / 0.62), the lung fraction's spread grew by half (SD 0.009-0.011 against
# 0.005-0.007; real 0.026) and the lung-fraction and emphysema W1 fell in every seed; FID rose (25 / 5.8 /
# 32 against 13 / 1.1 / 27). Weight 0.1 collapsed in one seed of three, 1.0 drew too little bone.
# ``r1_gamma``: D pays an R1 penalty with γ 1 (lazy, every 16 iterations), which keeps D from winning the
# first few hundred iterations through its windows (with the lung window alone and no R1, G drew bodies
# without lungs at 64³). The windows and R1 together, with the two settings above, over seeds 0-3: the
# generated emphysema came to 9.6-12.4 % (real 14.7; 19-27 % without) with its W1 under a third of the
# paper's method's in every seed (6.2-6.8 against 5.3-12.5 without) and the bone-fraction W1 in three
# (0.0018-0.0028, one 0.0096; without, one of four); recall / coverage 0.69 / 0.80, 0.66 / 0.76,
# 0.65 / 0.62, 0.66 / 0.71 (without 0.72-0.83 / 0.72-0.91); the lung-fraction W1 unchanged (0.012-0.016).
# The demo itself on a fresh clone: recall / coverage 0.875 / 0.84, emphysema W1 7.4, FID 16.9;
# lung-fraction W1 0.016 and bone-fraction W1 0.0044 still off the targets (0.009, 0.0029). On the
# class-conditional 32³ model (docs/results/recipes) all of them together lowered the rank correlation
# of class and emphysema from 0.93 to 0.83, D's windows and R1 alone to 0.91.
CT_HPARAMS: dict[str, Any] = {"lr_g": 2e-4, "diversity_weight": 0.3, "r1_gamma": 1.0}

# The family's named settings (``medgen train --recipe NAME``), under the options given explicitly.
RECIPES: dict[str, dict[str, dict[str, Any]]] = {
    "paper": {"model": PAPER_MODEL, "hparams": PAPER_HPARAMS},
    "ct": {"model": CT_MODEL, "hparams": CT_HPARAMS},
}

C_SHIFT_DIVISOR = 8  # c_augment: in-plane shifts of up to size / 8 voxels


def build(cfg: HAGANConfig, hp: HAGANHParams, device: torch.device) -> dict[str, nn.Module]:
    """G, D, (unless ablated) E = (E^H, E^G) and (classifier conditioning) C, on ``device``; the
    checkpoint keys are these names."""
    if hp.c_augment and not _classifier(cfg):
        raise UsageError("c_augment augments the inputs of the classifier C: it needs a class-conditional model "
                         "with --class-conditioning classifier")
    if hp.c_steps != 1 and not _classifier(cfg):
        raise UsageError(f"c_steps {hp.c_steps} sets the updates of the classifier C: it needs a class-conditional "
                         "model with --class-conditioning classifier")
    if hp.high_batch and (cfg.num_classes > 0 or not cfg.use_lowres):
        raise UsageError(f"high_batch {hp.high_batch} gives the low-resolution branch more volumes than G^H and D^H: "
                         "it needs an unconditional model with the low-resolution branch")
    if hp.diversity_weight and not cfg.use_lowres:
        raise UsageError(f"diversity_weight {hp.diversity_weight} compares the low-resolution volumes of G^L: it needs "
                         "the low-resolution branch")
    nets: dict[str, nn.Module] = {"G": Generator(cfg).to(device), "D": Discriminator(cfg).to(device)}
    if hp.use_encoder:
        nets["E"] = Encoder(cfg).to(device)
    if _classifier(cfg):
        nets["C"] = Classifier(cfg).to(device)
    return nets


def optimizers(nets: dict[str, nn.Module], hp: HAGANHParams, device: torch.device) -> dict[str, torch.optim.Optimizer]:
    """Adam for G, D, E^H and E^G (fused on CPU and CUDA: in place, no parameter-sized temporaries)."""
    adam = dict(betas=tuple(float(b) for b in hp.betas), eps=float(hp.adam_eps), fused=device.type in ("cuda", "cpu"))
    opt = {
        "G": torch.optim.Adam(nets["G"].parameters(), lr=hp.lr_g, **adam),
        "D": torch.optim.Adam(nets["D"].parameters(), lr=hp.lr_d, **adam),
    }
    if "E" in nets:
        opt["EH"] = torch.optim.Adam(nets["E"].high.parameters(), lr=hp.lr_eh, **adam)
        opt["EG"] = torch.optim.Adam(nets["E"].ground.parameters(), lr=hp.lr_eg, **adam)
    if "C" in nets:  # C learns at D's rate
        opt["C"] = torch.optim.Adam(nets["C"].parameters(), lr=hp.lr_d, **adam)
    return opt


def ddp_modules(nets: dict[str, nn.Module]) -> dict[str, nn.Module]:
    """G, D, E^H, E^G and C: the encoder's two blocks are updated by separate steps, so wrapped separately."""
    out = {"G": nets["G"], "D": nets["D"]}
    if "E" in nets:
        out["EH"], out["EG"] = nets["E"].high, nets["E"].ground
    if "C" in nets:
        out["C"] = nets["C"]
    return out


def loss_names(cfg: HAGANConfig, hp: HAGANHParams) -> list[str]:
    names = ["D", "G"] + (["EH", "EG"] if hp.use_encoder else [])
    if hp.r1_gamma > 0:
        names.append("r1")
    if hp.diversity_weight > 0:
        names.append("diversity")
    if cfg.num_classes > 0 and cfg.class_conditioning == "ac":
        names += ["D_class", "G_class"]
    if _classifier(cfg):
        names += ["C_class", "G_class"]
    return names


def _classifier(cfg: HAGANConfig) -> bool:
    """Whether the model has the auxiliary classifier C (class conditioning "classifier")."""
    return cfg.num_classes > 0 and cfg.class_conditioning == "classifier"


def train_step(s: Step) -> dict[str, torch.Tensor]:
    """One HA-GAN iteration: the D, G, E^H and E^G updates (module docstring)."""
    cfg: HAGANConfig = s.model
    hp: HAGANHParams = s.hp
    G, D, E = s.nets["G"], s.nets["D"], s.nets.get("E")
    b, f, rng, device = s.local_batch, cfg.lowres_factor, s.rng, s.device
    hb = hp.high_batch or b  # the first hb volumes also go through G^H, D^H and the encoder
    if hb > b:
        raise UsageError(f"high_batch {hp.high_batch} is larger than the batch of {b} volumes per process")
    conditional = cfg.num_classes > 0
    ac = conditional and cfg.class_conditioning == "ac"  # class heads and class losses
    projection = conditional and cfg.class_conditioning == "projection"  # D is given the class
    C = s.nets.get("C")  # the auxiliary classifier (class conditioning "classifier")

    # ---- this iteration's data and random draws
    x = s.batch["image"]  # [b, 1, S, S, S] in [-1, 1]
    labels = s.batch["label"] if conditional else None
    z = torch.randn(b, cfg.latent_dim, generator=rng).to(device)
    fake_labels = None
    if conditional:
        drawn = torch.randint(cfg.num_classes, (b,), generator=rng).to(device)  # drawn either way: same stream
        fake_labels = labels if hp.fake_labels == "real" else drawn
    if hp.slab_selection == "random":
        starts = G.selector.random_starts(hb, generator=rng)
    else:
        starts = G.selector.deterministic_starts(s.iteration, hb)
    slab_pos = G.selector.position(starts).to(device)  # starts stay on the CPU: no device sync
    x_slab = G.selector.select_real(x[:hb], starts)  # real slab, aligned with the generated one
    x_low = F.interpolate(x, scale_factor=1 / f, mode="trilinear", align_corners=False) if cfg.use_lowres else None
    r1_weight = lazy_r1_weight(hp.r1_gamma, hp.r1_every, s.iteration)
    reals = [t.detach().requires_grad_(r1_weight > 0) for t in (x_slab, x_low) if t is not None]

    if cfg.d_windows and hp.window_warmup:  # D's window channels fade in (the same gain for the G step)
        D.set_window_gain(min(1.0, s.iteration / hp.window_warmup))

    # ---- D step (G's forward pass is kept for the G step)
    with s.amp():
        fake_low, fake_slab = s.ddp["G"](z, starts, fake_labels, **({"high": hb} if hb < b else {}))
        logits, cls = s.ddp["D"](
            torch.cat([reals[0], fake_slab.detach()]),
            torch.cat([slab_pos, slab_pos]),
            torch.cat([reals[1], fake_low.detach()]) if cfg.use_lowres else None,
            parts=2,  # real half, fake half: the minibatch standard deviation never mixes them
            labels=torch.cat([labels, fake_labels]) if projection else None,
        )
    cls_real = [c[:b] for c in cls] if ac else None
    loss_D, loss_D_cls = discriminator_loss(logits[:b], logits[b:], cls_real, labels, hp.class_loss)
    r1 = torch.zeros((), device=device)
    if r1_weight > 0:
        r1 = r1_penalty(logits[:b], reals)
        s.update("D", loss_D + r1_weight * r1)
        r1 = r1.detach() * hp.r1_every  # logged so that its mean over iterations is ‖∇D(real)‖²
    else:
        s.update("D", loss_D)

    # ---- C step: the auxiliary classifier learns the class from the real volumes only
    if C is not None:
        c_losses = []
        for step in range(hp.c_steps):
            c_starts, c_pos = starts, slab_pos  # the first update: D's slab positions
            if step > 0:  # further updates: new slab positions
                c_starts = G.selector.random_starts(b, generator=rng)
                c_pos = G.selector.position(c_starts).to(device)
            x_c = augment_real(x, max(1, cfg.size // C_SHIFT_DIVISOR), rng) if hp.c_augment else x
            c_slab = x_slab if x_c is x and step == 0 else G.selector.select_real(x_c, c_starts)
            c_low = x_low
            if cfg.use_lowres and x_c is not x:
                c_low = F.interpolate(x_c, scale_factor=1 / f, mode="trilinear", align_corners=False)
            with s.amp():
                cls_c = s.ddp["C"](c_slab, c_pos, c_low)
            loss_C_step = class_loss(cls_c, labels, hp.class_loss)
            s.update("C", loss_C_step)
            c_losses.append(loss_C_step.detach())
            del cls_c
        loss_C_cls = torch.stack(c_losses).mean()  # logged: the mean over C's updates

    # ---- G step through the updated, frozen D (and C)
    D.requires_grad_(False)
    if C is not None:
        C.requires_grad_(False)
    with s.amp():
        logits_g, cls_g = D(fake_slab, slab_pos, fake_low, labels=fake_labels if projection else None)
        if C is not None:
            cls_g = C(fake_slab, slab_pos, fake_low)
    loss_G, loss_G_cls = generator_loss(logits_g, cls_g, fake_labels, hp.class_weight, hp.class_loss)
    loss_div = mode_seeking_loss(fake_low, z) if hp.diversity_weight > 0 else None
    s.update("G", loss_G if loss_div is None else loss_G + hp.diversity_weight * loss_div)
    D.requires_grad_(True)
    if C is not None:
        C.requires_grad_(True)
    del fake_low, fake_slab, logits, cls, logits_g, cls_g

    losses = {"D": loss_D, "G": loss_G}
    if loss_div is not None:
        losses["diversity"] = loss_div.detach()
    if hp.r1_gamma > 0:
        losses["r1"] = r1
    if E is not None and s.iteration % hp.encoder_every == 0:  # otherwise EH and EG are left out of the losses
        G.requires_grad_(False)
        # ---- E^H step: real slab → E^H → G^H (frozen) ≈ real slab
        with s.amp():
            rec_slab = G.high(s.ddp["EH"](x_slab))
        loss_EH = high_res_encoder_loss(rec_slab, x_slab)
        s.update("EH", loss_EH)
        del rec_slab

        # ---- E^G step: E^H (frozen, no graph) on all slabs → E^G → G (frozen unless recon_weight)
        with torch.no_grad(), s.amp():
            feats = E.features(x[:hb])
        G.requires_grad_(hp.recon_weight > 0)
        with s.amp():
            rec_low, rec_slab = (s.ddp["G"] if hp.recon_weight > 0 else G)(s.ddp["EG"](feats), starts, labels)
        loss_EG = ground_encoder_loss(rec_slab, x_slab, rec_low, x_low[:hb] if x_low is not None else None)
        if hp.recon_weight > 0:  # G learns to reproduce the real volumes too: a second step of its optimiser
            loss_EG.backward()
            for p in G.parameters():
                if p.grad is not None:
                    p.grad.mul_(hp.recon_weight)
            for name in ("EG", "G"):
                s.opt[name].step()
                s.opt[name].zero_grad(set_to_none=True)
        else:
            s.update("EG", loss_EG)
        G.requires_grad_(True)
        del feats, rec_low, rec_slab
        losses.update(EH=loss_EH, EG=loss_EG)
    if ac:
        losses.update(D_class=loss_D_cls, G_class=loss_G_cls)
    if C is not None:
        losses.update(C_class=loss_C_cls, G_class=loss_G_cls)
    return losses


@torch.no_grad()
def preview(nets: dict[str, nn.Module], cfg: HAGANConfig, hp: HAGANHParams, n: int, seed: int, device: torch.device,
            amp) -> tuple[list[Any], list[str]]:
    """``n`` volumes of the (EMA) generator for fixed z (drawn from ``seed``), for the training mosaics."""
    G = nets["G"]
    z = torch.randn(n, cfg.latent_dim, generator=torch.Generator().manual_seed(seed))
    labels = torch.arange(n) % cfg.num_classes if cfg.num_classes > 0 else None
    vols = []
    for i in range(n):  # one at a time: peak memory of a single full-resolution volume
        lab = labels[i : i + 1].to(device) if labels is not None else None
        with amp():
            v = G.generate(z[i : i + 1].to(device), lab)
        vols.append(v[0, 0].float().cpu().numpy())
    titles = [f"{i}" + (f" class {int(labels[i])}" if labels is not None else "") for i in range(n)]
    return vols, titles
