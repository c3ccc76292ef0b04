"""Latent diffusion training: the networks, the optimiser and the step the shared loop runs.

One iteration (:func:`train_step`), on a batch of volumes x in [-1, 1]::

    z₀ = scale · μ(x)                      the frozen autoencoder's latent means (:mod:`~medgen.families.ldm.latents`)
    the ddpm family's denoising update on z₀   (:func:`medgen.families.ddpm.train.denoising_update`)

At the first iteration of a run the latent scale is set from that batch. Hyper-parameters
are the ``ddpm`` family's (:class:`~medgen.families.ddpm.train.DDPMHParams`): learning rate,
class dropout for classifier-free guidance, preview steps.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from medgen.core.errors import InputError
from medgen.families.ddpm.sample import reverse_process
from medgen.families.ddpm.train import DDPMHParams, build_unet, denoising_update
from medgen.families.ddpm.train import optimizers as unet_optimizers
from medgen.families.ldm.config import LDMConfig
from medgen.families.ldm.latents import LatentCodec
from medgen.families.ldm_autoencoder.model import autoencoder_from_weights
from medgen.families.ldm_autoencoder.train import build_autoencoder
from medgen.training.checkpoint import load_weights
from medgen.training.family import Step


def build_codec(cfg: LDMConfig, weights: bool = True) -> LatentCodec:
    """The frozen autoencoder, with the weights of ``cfg.autoencoder_checkpoint`` when ``weights`` and one is set."""
    ae_cfg = cfg.autoencoder_config()
    if weights and cfg.autoencoder_checkpoint:
        try:
            state = load_weights(cfg.autoencoder_checkpoint)
        except FileNotFoundError:
            raise InputError(f"{cfg.autoencoder_checkpoint}: the autoencoder checkpoint of this run is gone") from None
        if "autoencoder" not in state:
            raise InputError(f"{cfg.autoencoder_checkpoint}: the checkpoint holds no autoencoder weights")
        return LatentCodec(autoencoder_from_weights(ae_cfg, state["autoencoder"], cfg.autoencoder_checkpoint))
    return LatentCodec(build_autoencoder(ae_cfg))


def build(cfg: LDMConfig, hp: DDPMHParams, device: torch.device) -> dict[str, nn.Module]:
    """The latent UNet (trained) and the codec (frozen; its weights and scale are checkpointed with the UNet)."""
    # On the meta device (`medgen model-info` counting parameters) there is nothing to load weights into.
    codec = build_codec(cfg, weights=device.type != "meta")
    return {"unet": build_unet(cfg.diffusion()).to(device), "autoencoder": codec.to(device)}


def optimizers(nets: dict[str, nn.Module], hp: DDPMHParams, device: torch.device) -> dict[str, torch.optim.Optimizer]:
    return unet_optimizers({"unet": nets["unet"]}, hp, device)


def ddp_modules(nets: dict[str, nn.Module]) -> dict[str, nn.Module]:
    """Only the UNet is trained (and so wrapped by DDP)."""
    return {"unet": nets["unet"]}


def loss_names(cfg: LDMConfig, hp: DDPMHParams) -> list[str]:
    return ["mse"]


def train_step(s: Step) -> dict[str, torch.Tensor]:
    """One denoising update of the latent UNet (module docstring)."""
    cfg: LDMConfig = s.model
    codec: LatentCodec = s.nets["autoencoder"]
    x = s.batch["image"].float()
    with torch.no_grad(), s.amp():
        mu, _ = codec.autoencoder.encode(x)
    mu = mu.float()
    if not codec.has_scale:
        codec.set_scale(mu)
    return {"mse": denoising_update(s, cfg.diffusion(), s.hp, mu * codec.scale)}


@torch.no_grad()
def sample_volume(unet: nn.Module, codec: LatentCodec, cfg: LDMConfig, index: int, seed: int, *, label: int | None,
                  sampler: str, steps: int, guidance: float, eta: float, chunk: int | None,
                  device: torch.device) -> torch.Tensor:
    """Volume ``index`` of ``seed``'s sequence: latent reverse process, then decoding; [S, S, S] in [-1, 1] on the CPU."""
    from medgen.families.ldm_autoencoder.decode import decode_chunked

    z = reverse_process(unet, cfg.diffusion(), index, seed, label=label, sampler=sampler, steps=steps,
                        guidance=guidance, eta=eta, device=device)
    z = codec.unscale(z)
    x = decode_chunked(codec.autoencoder, z, chunk, cfg.autoencoder_config().factor) if chunk else codec.autoencoder.decode(z)
    return x[0, 0].clamp(-1.0, 1.0).float().cpu()


@torch.no_grad()
def preview(nets: dict[str, nn.Module], cfg: LDMConfig, hp: DDPMHParams, n: int, seed: int, device: torch.device,
            amp) -> tuple[list[Any], list[str]]:
    """``n`` volumes of the (EMA) UNet with ``preview_steps`` DDIM steps, for the training mosaics."""
    unet, codec = nets["unet"], nets["autoencoder"]
    labels = [i % cfg.num_classes for i in range(n)] if cfg.num_classes > 0 else None
    was_training = unet.training
    unet.eval()
    with amp():
        vols = [sample_volume(unet, codec, cfg, i, seed, label=None if labels is None else labels[i], sampler="ddim",
                              steps=hp.preview_steps, guidance=1.0, eta=0.0, chunk=None, device=device).numpy()
                for i in range(n)]
    unet.train(was_training)
    titles = [f"{i}" + (f" class {labels[i]}" if labels is not None else "") for i in range(n)]
    return vols, titles
