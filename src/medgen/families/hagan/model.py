"""A trained (or freshly built) HA-GAN ready for sampling and encoding: what ``medgen.load`` returns.

Example::

    model = medgen.load("runs/thorax64")              # latest checkpoint, EMA generator
    x = model.generate(4, seed=0)                      # float32 [4, 64, 64, 64] in [-1, 1]
    hu = model.generate(4, seed=0, hu=True)            # CT: the same volumes in HU
    z = model.encode(x)                                # float32 [4, latent_dim]
    x_rec = model.reconstruct(x)                       # G(E(x)), [4, 64, 64, 64]

Volume ``i`` of ``generate(n, seed)`` depends only on (seed, i) (see
:func:`medgen.inference.generate.latent_codes`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from medgen.core.errors import InputError, UsageError
from medgen.families.hagan.config import HAGANConfig, get_preset
from medgen.families.hagan.encoder import Encoder
from medgen.families.hagan.generator import Generator


@dataclass
class HAGANModel:
    """A (trained or freshly built) HA-GAN ready for sampling and encoding.

    ``generator``: G (G^A, G^L, G^H), in eval mode; ``encoder``: E (E^H, E^G)
    or None; ``run_config``: the :class:`medgen.training.runconfig.RunConfig` of the
    training run (None for :func:`build`); ``checkpoint``: the folder the
    weights came from.
    """

    config: HAGANConfig
    generator: Generator
    encoder: Encoder | None = None
    run_config: Any = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    checkpoint: Path | None = None

    @property
    def preprocess(self) -> dict[str, Any]:
        """The training data's preprocessing record (modality, CT window, size, ...); {} if unknown."""
        return dict(getattr(self.run_config, "preprocess", None) or {})

    def sample_latents(self, n: int, seed: int = 0, start: int = 0) -> np.ndarray:
        """Latent codes of volumes start … start+n-1 for ``seed``: float32 [n, latent_dim]."""
        from medgen.inference.generate import latent_codes

        return latent_codes(n, self.config.latent_dim, seed, start)

    def generate(
        self,
        n: int,
        seed: int = 0,
        labels: int | Sequence[int] | None = None,
        chunk: int | None = None,
        batch_size: int = 1,
        hu: bool = False,
        z: np.ndarray | None = None,
        indices: Sequence[int] | None = None,
    ) -> np.ndarray:
        """``n`` full-resolution volumes, float32 [n, S, S, S] in [-1, 1] (or HU with ``hu=True``, CT only).

        ``labels``: class of every volume (one int) or of each volume, for a
        conditional model (default: volume i gets class i mod K). ``chunk``: run
        G^H on depth chunks of this many feature-map slices (bounded memory,
        same result up to float rounding). ``z``: latent codes [n, latent_dim]
        to use instead of those drawn from ``seed``. ``indices``: which volumes of
        ``seed``'s sequence to make (volume i depends only on (seed, i); default 0…n-1).
        """
        from medgen.inference.generate import check_chunk, check_labels, requested_codes

        if hu:
            self._check_ct()
        codes = requested_codes(n, self.config.latent_dim, seed, z, indices)
        lab = check_labels(labels, n, self.config.num_classes)
        chunk = check_chunk(chunk, self.config.lowres_size)
        s = self.config.size
        out = np.empty((n, s, s, s), dtype=np.float32)
        for k in range(0, n, max(1, batch_size)):
            sl = slice(k, min(n, k + max(1, batch_size)))
            zt = torch.from_numpy(codes[sl]).to(self.device)
            lt = torch.from_numpy(lab[sl]).to(self.device) if lab is not None else None
            with torch.inference_mode():
                self.generator.generate(zt, lt, chunk, out=torch.from_numpy(out[sl]).unsqueeze(1))
        return self.to_hu(out) if hu else out

    def encode(self, volumes: Any, batch_size: int = 1) -> np.ndarray:
        """Latent codes of real volumes in [-1, 1] ([S, S, S] or [n, S, S, S]): float32 [n, latent_dim]."""
        from medgen.inference.encode import as_volume_batch

        if self.encoder is None:
            raise UsageError("this model has no encoder (trained with --no-encoder)")
        x = as_volume_batch(volumes, self.config.size)
        parts = []
        with torch.inference_mode():
            for k in range(0, len(x), batch_size):
                parts.append(self.encoder.encode(x[k : k + batch_size].to(self.device)).float().cpu().numpy())
        return np.concatenate(parts)

    def reconstruct(
        self, volumes: Any, labels: int | Sequence[int] | None = None, chunk: int | None = None, batch_size: int = 1
    ) -> np.ndarray:
        """G(E(x)) for real volumes in [-1, 1]: float32 [n, S, S, S] in [-1, 1].

        A class-conditional model needs the volumes' ``labels``.
        """
        z = self.encode(volumes, batch_size)
        if self.config.num_classes > 0 and labels is None:
            raise UsageError("this model is class-conditional: pass the volumes' labels to reconstruct them")
        return self.generate(len(z), labels=labels, chunk=chunk, batch_size=batch_size, z=z)

    def to_hu(self, x: np.ndarray) -> np.ndarray:
        """Map [-1, 1] back to Hounsfield units with the training data's CT window (float32)."""
        from medgen.inference.generate import ct_window, to_hounsfield

        self._check_ct()
        return to_hounsfield(x, ct_window(self.preprocess))

    def _check_ct(self) -> None:
        from medgen.inference.generate import is_ct

        if not is_ct(self.preprocess):
            modality = self.preprocess.get("modality", "unknown")
            raise UsageError(f"HU output needs a model trained on CT; this one's training data is {modality}")


def _eval(module: torch.nn.Module | None, device: torch.device):
    if module is None:
        return None
    return module.to(device).eval().requires_grad_(False)


def load_model(run_cfg: Any, weights: dict[str, dict[str, torch.Tensor]], checkpoint: Path, device: torch.device,
               use_ema: bool = True) -> HAGANModel:
    """The model of a training run from its configuration and checkpoint weights (the family's loader).

    ``use_ema``: sample with the EMA generator when the checkpoint has one.
    Raises InputError if the weights do not fit the configured architecture.
    """
    cfg = HAGANConfig.from_dict(run_cfg.model)
    g_key = "G_ema" if use_ema and "G_ema" in weights else "G"
    if g_key not in weights:
        raise InputError(f"{checkpoint}: the checkpoint holds no generator weights")
    with torch.device("meta"):
        generator = Generator(cfg)
        encoder = Encoder(cfg) if "E" in weights else None
    try:
        generator.load_state_dict(weights[g_key], assign=True)
        if encoder is not None:
            encoder.load_state_dict(weights["E"], assign=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise InputError(f"{checkpoint}: weights do not fit the model in the run's config.yaml ({first})") from None
    return HAGANModel(cfg, _eval(generator, device), _eval(encoder, device), run_cfg, device, checkpoint)


def build(
    preset: str = "tiny",
    size: int = 64,
    seed: int = 0,
    device: torch.device = torch.device("cpu"),
    encoder: bool = True,
    **overrides: Any,
) -> HAGANModel:
    """An untrained model (random initialisation drawn from ``seed``) of ``preset`` at ``size``³.

    ``overrides`` replace preset fields (width, latent_dim, num_classes, ...).
    Useful to check shapes, memory and speed before training.
    """
    cfg = get_preset(preset, size, **overrides)
    dev = torch.device(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        generator = Generator(cfg)
        enc = Encoder(cfg) if encoder else None
    return HAGANModel(cfg, _eval(generator, dev), _eval(enc, dev), None, dev, None)


def build_untrained(run_cfg: Any, seed: int = 0, device: torch.device = torch.device("cpu")) -> HAGANModel:
    """The architecture of a training run at a random initialisation drawn from ``seed``.

    Carries the run's configuration (preprocessing record, spacing) but none of
    its weights: the baseline every trained model must clearly beat.
    """
    cfg = HAGANConfig.from_dict(run_cfg.model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        generator = Generator(cfg)
    return HAGANModel(cfg, _eval(generator, device), None, run_cfg, device, None)
