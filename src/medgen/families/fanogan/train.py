"""f-AnoGAN training on a trained HA-GAN: hyper-parameters, networks, optimiser and the step the shared loop runs.

One iteration (:func:`train_step`), on a batch of volumes x in [-1, 1]::

    z = E(x)                       E^G(E^H(x)), the hierarchical encoder (trained)
    x̂ = G(z)                       the whole volume: G^A, then G^H on all of A (frozen)
    loss = (1/n_x)‖x − x̂‖² + κ·(1/n_f)‖f(x) − f(x̂)‖²          izi_f (:mod:`.losses`), updates E only

with f the frozen discriminator's features (:func:`~medgen.families.fanogan.networks.discriminator_features`)
and G the HA-GAN run's EMA generator, or its trained G (``generator_weights``).

E starts from the HA-GAN run's own encoder (``encoder_init="hagan"``, the default: it already
maps x to z, so training refines it for the izi_f objective) when the run has one; a run trained
``--no-encoder`` or ``encoder_init="random"`` starts E at random weights (the paper's setting).
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from medgen.core.errors import InputError, UsageError
from medgen.core.settings import from_dict, tuples_as_lists
from medgen.families.fanogan.config import FAnoGANConfig
from medgen.families.fanogan.losses import izif_loss
from medgen.families.fanogan.networks import build_networks, discriminator_features
from medgen.training.family import Step

ENCODER_INITS = ("hagan", "random")
GENERATOR_WEIGHTS = ("ema", "trained")


@dataclass
class FAnoGANHParams:
    """``kappa``: κ, the weight of the feature residual (paper: 1.0). ``lr``, ``betas``, ``adam_eps``: Adam's
    for E. ``encoder_init``: ``hagan`` (the HA-GAN run's encoder, when it has one) or ``random``.
    ``generator_weights``: ``ema``, the HA-GAN run's EMA generator when its checkpoint has one (what
    ``medgen.load`` samples with, usually the better model of normal anatomy), or ``trained``, its trained G
    (the one HA-GAN's encoder and discriminator were trained with)."""

    kappa: float = 1.0
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    encoder_init: str = "hagan"
    generator_weights: str = "ema"

    def validate(self) -> None:
        checks = [
            (self.kappa >= 0, f"kappa {self.kappa}: must be >= 0"),
            (self.lr > 0, f"lr {self.lr}: must be > 0"),
            (len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), f"betas {self.betas}: need two values in [0, 1)"),
            (self.adam_eps > 0, f"adam_eps {self.adam_eps}: must be > 0"),
            (self.encoder_init in ENCODER_INITS, f"encoder_init {self.encoder_init!r}: {' or '.join(ENCODER_INITS)}"),
            (self.generator_weights in GENERATOR_WEIGHTS,
             f"generator_weights {self.generator_weights!r}: {' or '.join(GENERATOR_WEIGHTS)}"),
        ]
        for ok, message in checks:
            if not ok:
                raise UsageError(message)

    def to_dict(self) -> dict[str, Any]:
        return tuples_as_lists(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FAnoGANHParams":
        hp = from_dict(cls, d, "f-AnoGAN training setting")
        hp.validate()
        return hp


def load_into(module: nn.Module, state: dict[str, torch.Tensor], what: str, source: Any) -> None:
    """``module.load_state_dict(state)``; InputError naming ``source`` when the weights do not fit."""
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise InputError(f"{source}: weights do not fit the {what} in the run's config.yaml ({first})") from None


def hagan_checkpoint_weights(cfg: FAnoGANConfig) -> dict[str, dict[str, torch.Tensor]]:
    """The HA-GAN checkpoint's weights; InputError if it is gone or holds no G or D."""
    from medgen.training.checkpoint import load_weights

    try:
        weights = load_weights(cfg.generator_checkpoint)
    except InputError:
        raise InputError(f"{cfg.generator_checkpoint}: the HA-GAN checkpoint of this run is gone") from None
    missing = [k for k in ("G", "D") if k not in weights]
    if missing:
        raise InputError(f"{cfg.generator_checkpoint}: the checkpoint holds no {' or '.join(missing)} weights")
    return weights


def build_gan(cfg: FAnoGANConfig, encoder_init: str = "hagan", generator_weights: str = "ema",
              weights: bool = True) -> dict[str, nn.Module]:
    """E, G and D (module docstring); with ``weights`` and a ``generator_checkpoint``, G and D (and E, for
    ``encoder_init="hagan"``, when the run has an encoder) get the HA-GAN run's weights
    (``generator_weights``: see :class:`FAnoGANHParams`)."""
    nets = build_networks(cfg.gan_config())
    if not (weights and cfg.generator_checkpoint):
        return nets
    state = hagan_checkpoint_weights(cfg)
    g_key = "G_ema" if generator_weights == "ema" and "G_ema" in state else "G"
    load_into(nets["G"], state[g_key], "HA-GAN generator", cfg.generator_checkpoint)
    load_into(nets["D"], state["D"], "HA-GAN discriminator", cfg.generator_checkpoint)
    if encoder_init == "hagan":
        if "E" in state:
            load_into(nets["E"], state["E"], "HA-GAN encoder", cfg.generator_checkpoint)
        else:
            print(f"medgen: {cfg.generator_checkpoint} has no encoder (trained --no-encoder): "
                  "E starts from random weights", file=sys.stderr)
    return nets


def build(cfg: FAnoGANConfig, hp: FAnoGANHParams, device: torch.device) -> dict[str, nn.Module]:
    """E (trained) and the frozen G and D (checkpointed with E, so a run needs no HA-GAN run to load)."""
    # On the meta device (`medgen model-info` counting parameters) there is nothing to load weights into.
    nets = build_gan(cfg, hp.encoder_init, hp.generator_weights, weights=device.type != "meta")
    return {name: net.to(device) for name, net in nets.items()}


def optimizers(nets: dict[str, nn.Module], hp: FAnoGANHParams, device: torch.device) -> dict[str, torch.optim.Optimizer]:
    """Adam for E (fused on CPU and CUDA)."""
    return {"E": torch.optim.Adam(nets["E"].parameters(), lr=hp.lr, betas=tuple(float(b) for b in hp.betas),
                                  eps=float(hp.adam_eps), fused=device.type in ("cuda", "cpu"))}


def ddp_modules(nets: dict[str, nn.Module]) -> dict[str, nn.Module]:
    """Only E is trained (and so wrapped by DDP)."""
    return {"E": nets["E"]}


def loss_names(cfg: FAnoGANConfig, hp: FAnoGANHParams) -> list[str]:
    """``izif`` (the loss), ``image`` and ``feature`` (its two residual terms, before κ)."""
    return ["izif", "image", "feature"]


def train_step(s: Step) -> dict[str, torch.Tensor]:
    """One izi_f update of E (module docstring)."""
    G, D = s.nets["G"], s.nets["D"]
    x = s.batch["image"]
    with s.amp():
        x_rec = G.generate(s.ddp["E"](x))
        loss, image, feature = izif_loss(x, x_rec, lambda v: discriminator_features(D, v), s.hp.kappa)
    s.update("E", loss)
    return {"izif": loss.detach(), "image": image.detach(), "feature": feature.detach()}
