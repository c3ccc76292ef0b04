"""What a model family gives the shared training loop: :class:`Family` and the :class:`Step` it is handed.

A family is a module of plain functions and dataclasses (no base class to
inherit): its package builds one :class:`Family` record and the registry
(:mod:`medgen.families.registry`) lists it under its name. The loop
(:mod:`medgen.training.loop`) owns everything else — data, devices, DDP,
mixed precision, resume, EMA, logging, NaN stop, signals, checkpoints — as
StyleGAN2-ADA's training loop owns everything but the loss phases.

A family's training step receives a :class:`Step` and returns its named
losses (scalar tensors, not yet synchronised to the host); the loop logs them
under ``loss_<name>``, checks them for NaN/inf and plots them as they come::

    def train_step(s: Step) -> dict[str, torch.Tensor]:
        x = s.batch["image"]
        with s.amp():
            loss = F.mse_loss(s.ddp["net"](x), x)
        s.update("net", loss)            # backward, optimiser step, free the gradients
        return {"rec": loss}
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn


@dataclass
class Step:
    """Everything one training iteration of a family may use.

    nets: the plain networks (``build``'s dict); ddp: the modules to call when a
    network is being updated (DDP wrappers under ``torchrun``, the plain module
    otherwise; see :attr:`Family.ddp_modules`); opt: the optimisers; batch: the
    data item dict on the device (``image`` [b, 1, S, S, S], ``label`` [b], ...);
    rng: a CPU generator seeded from (run seed, rank, iteration), so that every
    random draw of the step is reproducible on resume; iteration: 0-based;
    iterations: the run's total; local_batch: volumes on this process; model:
    the family's architecture config; hp: its hyper-parameters; amp: a
    context-manager factory (bf16 autocast on CUDA, or nothing).
    """

    nets: dict[str, nn.Module]
    ddp: dict[str, nn.Module]
    opt: dict[str, torch.optim.Optimizer]
    batch: dict[str, Any]
    rng: torch.Generator
    iteration: int
    iterations: int
    local_batch: int
    model: Any
    hp: Any
    amp: Callable[[], AbstractContextManager]
    device: torch.device

    def update(self, name: str, loss: torch.Tensor) -> None:
        """Backward ``loss``, step optimiser ``name`` and free the gradients at once (they would otherwise
        stay allocated until that network's next update, while the other networks build their graphs)."""
        loss.backward()
        self.opt[name].step()
        self.opt[name].zero_grad(set_to_none=True)


def _all_nets(nets: dict[str, nn.Module]) -> dict[str, nn.Module]:
    return dict(nets)


@dataclass(frozen=True)
class Family:
    """A registered model family (see the module docstring).

    name, summary: registry key and one line for ``medgen model-info --family``.
    default_preset: the preset ``medgen train`` uses when ``--preset`` is not given.
    presets: preset name → architecture overrides; model_config(preset, size, **overrides)
        → the family's architecture config (a dataclass with ``to_dict``);
        model_from_dict(d) → the same from ``config.yaml``'s ``model``.
    hparams_from_dict(d) → validated hyper-parameters (a dataclass with ``to_dict``),
        defaults for missing keys; raises UsageError for values that cannot work.
    build(model_cfg, hp, device) → ``{name: nn.Module}``: every network trained and
        checkpointed (its name is the weights key in the checkpoint).
    optimizers(nets, hp, device) → ``{name: Optimizer}`` (names are the keys of the
        optimiser states in ``state.pt``).
    train_step(step) → ``{loss name: scalar tensor}``; loss_names(model_cfg, hp): the
        names it returns, in a fixed order (the columns of ``metrics.csv``). A step may
        leave out a loss it did not compute on that iteration (an update made only every
        k iterations); the logged value is then the mean over the iterations that did
        (empty when none did). ddp_modules: a skipped update must be skipped on every rank.
    ddp_modules(nets) → the modules wrapped by DDP under ``torchrun`` (default: every
        network); each must be called exactly once per iteration, by the step that
        updates it, followed by one backward.
    ema: name of the network an exponential moving average follows (saved as
        ``<name>_ema``), or None.
    preview(nets, model_cfg, hp, n, seed, device, amp) → (volumes [S, S, S] in [-1, 1],
        titles) for the training sample mosaics; None: no mosaics.
    load_model(run_cfg, weights, checkpoint, device, use_ema) → the loaded model
        ``medgen.load`` returns; build_model(preset, size, seed, device, **overrides)
        → an untrained one; build_untrained(run_cfg, seed, device) → the run's
        architecture at random weights.
    uses_labels(model_cfg) → True when the data's label column is needed.
    data_keys(model_cfg) → the named volumes of a data item the step reads (``("image",)``;
        image-to-image families: their target and input volumes, e.g. ``("image", "degraded", "mask")``).
    covariates(model_cfg) → the manifest columns the step reads as numbers (default none): the batch's
        ``covariates`` is then float32 ``[b, len(columns)]`` in that order (an empty cell is NaN), e.g. the
        interval between two scans (``("interval_years",)``).
    bench: the family's benchmark module for ``medgen bench`` (``check_request``,
        ``run_isolated``, ``describe``), or None.
    describe(model_cfg) → a JSON-ready description for ``medgen model-info``.
    options_from_data(info, options) → the architecture options given, completed from the data set's
        ``preprocess.json`` contents ``info`` when a new run is configured (seg-unet: ``num_classes`` from its
        label volume's classes; hagan: the named CT windows of ``d_windows`` in the data's units).
    classes_from_data: True when ``options_from_data`` decides ``num_classes`` (from label volumes): the
        manifest's label column is then not read for it.
    recipes: named sets of settings other than the defaults (``medgen train --recipe NAME``):
        ``{"paper": {"model": {field: value}, "hparams": {name: value}}}``; options given
        explicitly override the recipe's.
    """

    name: str
    summary: str
    presets: dict[str, dict[str, Any]]
    model_config: Callable[..., Any]
    model_from_dict: Callable[[dict[str, Any]], Any]
    hparams_from_dict: Callable[[dict[str, Any]], Any]
    build: Callable[[Any, Any, torch.device], dict[str, nn.Module]]
    optimizers: Callable[[dict[str, nn.Module], Any, torch.device], dict[str, torch.optim.Optimizer]]
    train_step: Callable[[Step], dict[str, torch.Tensor]]
    loss_names: Callable[[Any, Any], list[str]]
    load_model: Callable[..., Any]
    ddp_modules: Callable[[dict[str, nn.Module]], dict[str, nn.Module]] = _all_nets
    ema: str | None = None
    preview: Callable[..., tuple[list[Any], list[str]]] | None = None
    build_model: Callable[..., Any] | None = None
    build_untrained: Callable[..., Any] | None = None
    uses_labels: Callable[[Any], bool] = field(default=lambda cfg: False)
    data_keys: Callable[[Any], tuple[str, ...]] = field(default=lambda cfg: ("image",))
    covariates: Callable[[Any], tuple[str, ...]] = field(default=lambda cfg: ())
    bench: Any = None
    default_preset: str = "paper"
    describe: Callable[[Any], dict[str, Any]] | None = None
    recipes: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    options_from_data: Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]] | None = None
    classes_from_data: bool = False
