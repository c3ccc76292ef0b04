"""3D feature extractors for distribution metrics: volumes in, ``[N, d]`` features out.

Extractors
----------
``med3d``
    MedicalNet's 3D ResNet-50 (shortcut B; Chen et al. 2019, "Med3D"), the network of the
    HA-GAN paper's FID/MMD, loaded from a user-supplied MedicalNet weight file
    (``resnet_50.pth`` or ``resnet_50_23dataset.pth``). Features are the global average
    pool of the last stage: 2048-d.
``random``
    The same network with fixed, seeded random weights. Useful for relative comparisons
    (model A vs model B on the same data) and tests; its numbers are NOT comparable with
    published values, and every output says so (:data:`RANDOM_WARNING`).
``encoder``
    A trained model's encoder (for HA-GAN: E^H → E^G latent code, latent_dim-d), at the
    model's size, volumes in [-1, 1]. The loaded model is given to :func:`make_extractor`
    (``encoder=``; :func:`medgen.api.evaluate` loads it from a run folder). Specific to that
    model: not comparable across runs or with published values.

Input convention
----------------
Volumes are arrays ``(x, y, z)`` in medgen's preprocessed intensity convention [-1, 1]
(-1 = the bottom of the intensity window, e.g. air for CT). Each volume is

1. resized to ``input_size`` (area averaging when shrinking, trilinear when enlarging;
   ``None`` keeps the native size),
2. reordered: ``axis_order="xyz"`` keeps nibabel order, which is what MedicalNet's own
   training loader fed the network; ``"zyx"`` reverses the axes as the HA-GAN authors'
   pipeline did (they read volumes with SimpleITK, whose arrays are ``(z, y, x)``),
3. intensity-normalised: ``intensity="zscore"`` (default) scales each volume to zero mean
   and unit std, the normalisation MedicalNet was trained with. MedicalNet took the
   statistics over nonzero voxels of raw images and filled the background with noise; we
   take them over the whole volume, because in medgen's [-1, 1] convention there is no
   exact-zero background (CT air is about -0.97, a generator's tanh never reaches -1), and
   a foreground threshold would treat real and generated volumes differently.
   ``intensity="raw"`` feeds [-1, 1] as-is, as the HA-GAN authors' evaluation code did.

The HA-GAN paper protocol is therefore ``input_size=None, axis_order="zyx", intensity="raw"``
on volumes preprocessed at 128³ or 256³ (``medgen evaluate --paper-protocol``).
"""

from __future__ import annotations

import copy
import functools
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from medgen.core.volume import resize_volume
from medgen.core.errors import InputError, UsageError

RANDOM_WARNING = "random features: not comparable with published values"
EXTRACTORS = ("med3d", "random", "encoder")
FEATURE_DIM = 2048
INTENSITY_MODES = ("zscore", "raw")
AXIS_ORDERS = ("xyz", "zyx")


def build_medicalnet_resnet50():
    """MedicalNet's 3D ResNet-50 (1 input channel, shortcut B), classifier removed.

    MONAI builds the ResNet-50 with MedicalNet's parameter names. MedicalNet differs from
    a plain ResNet in its last two stages: stride 1 with dilation 2 (layer3) and 4 (layer4)
    instead of stride 2, so the last feature map is at 1/8 of the input size. MONAI's
    ResNet has no dilation option, so we set stride/dilation/padding on the built
    convolutions; parameter shapes are unchanged.
    """
    from monai.networks.nets import resnet50

    model = resnet50(
        spatial_dims=3,
        n_input_channels=1,
        shortcut_type="B",
        bias_downsample=False,
        conv1_t_size=7,
        conv1_t_stride=2,
        feed_forward=False,  # no classifier: forward() returns the 2048-d global average pool
    )
    for layer, dilation in ((model.layer3, 2), (model.layer4, 4)):
        for block in layer:
            block.conv2.stride = (1, 1, 1)
            block.conv2.dilation = (dilation,) * 3
            block.conv2.padding = (dilation,) * 3
            if block.downsample is not None:
                block.downsample[0].stride = (1, 1, 1)
    return model.eval()


@functools.lru_cache(maxsize=2)
def _random_network(seed: int):
    """The network with MONAI's default initialisation drawn under ``torch.manual_seed(seed)``.

    Memoised (callers get a deep copy): initialising 46 M parameters takes seconds on a CPU
    and the result depends only on the seed.
    """
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_medicalnet_resnet50()


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_state_dict(path: str | os.PathLike) -> dict[str, Any]:
    """Read a weight file (``.pth``/``.pt`` pickle of tensors, or ``.safetensors``)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: weight file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(path))
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any read failure is the user's file
        raise InputError(f"{path}: cannot read as a PyTorch weight file ({type(exc).__name__}: {exc})") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]  # MedicalNet's files: {"state_dict": ..., ...}
    if not isinstance(obj, dict):
        raise InputError(f"{path}: not a state dict (found {type(obj).__name__})")
    return obj


def load_medicalnet_weights(model, path: str | os.PathLike) -> None:
    """Load a MedicalNet ResNet-50 weight file into :func:`build_medicalnet_resnet50`'s model.

    Handles the ``module.`` prefix (DataParallel) and drops the segmentation head
    (``conv_seg.*``) or a classifier (``fc.*``); BatchNorm ``num_batches_tracked`` counters
    may be absent (older PyTorch). Anything else that does not match raises
    :class:`InputError` naming the file.
    """
    import torch

    raw = read_state_dict(path)
    state = {}
    for key, value in raw.items():
        key = key[len("module."):] if key.startswith("module.") else key
        if key.startswith(("conv_seg.", "fc.")):
            continue
        state[key] = value
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} keys e.g. {', '.join(missing[:3])}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys e.g. {', '.join(unexpected[:3])}")
    if wrong:
        k = wrong[0]
        problems.append(f"{len(wrong)} keys of the wrong shape e.g. {k} {tuple(state[k].shape)} != {tuple(expected[k].shape)}")
    if problems:
        raise InputError(f"{path}: not a MedicalNet ResNet-50 state dict: {'; '.join(problems)}")
    for k in expected:
        if k not in state:
            state[k] = expected[k]  # num_batches_tracked: unused in eval mode
    model.load_state_dict({k: torch.as_tensor(v) for k, v in state.items()}, strict=True)


def _size3(size: int | Sequence[int] | None) -> tuple[int, int, int] | None:
    if size is None:
        return None
    if isinstance(size, int):
        return (size, size, size)
    size = tuple(int(s) for s in size)
    if len(size) != 3:
        raise UsageError(f"input size must be one number or three, got {size}")
    return size  # type: ignore[return-value]


def prepare_volume(
    volume: np.ndarray,
    input_size: int | Sequence[int] | None = 64,
    intensity: str = "zscore",
    axis_order: str = "xyz",
):
    """One ``(x, y, z)`` volume in [-1, 1] → network input tensor ``[1, *size]`` (float32)."""
    import torch

    vol = torch.tensor(np.asarray(volume), dtype=torch.float32)[None]
    if vol.ndim != 4:
        raise InputError(f"expected a 3D volume, got shape {tuple(vol.shape[1:])}")
    size = _size3(input_size)
    if size is not None and tuple(vol.shape[1:]) != size:
        vol = resize_volume(vol[None], size)[0]  # area when shrinking, else trilinear (medgen.core.volume)
    if axis_order == "zyx":
        vol = vol.permute(0, 3, 2, 1)
    elif axis_order != "xyz":
        raise UsageError(f"axis order must be one of {AXIS_ORDERS}, got {axis_order!r}")
    if intensity == "zscore":
        std = vol.std(unbiased=False)
        vol = (vol - vol.mean()) / (std if std > 0 else 1.0)
    elif intensity != "raw":
        raise UsageError(f"intensity mode must be one of {INTENSITY_MODES}, got {intensity!r}")
    return vol.contiguous()


@dataclass
class FeatureExtractor:
    """A network mapping volumes to ``[N, dim]`` features, with the settings that define it.

    ``settings`` holds everything that changes the features (it keys the feature cache
    and is written next to every metric value).
    """

    name: str
    network: Any
    comparable_with_published: bool
    input_size: tuple[int, int, int] | None
    intensity: str = "zscore"
    axis_order: str = "xyz"
    device: str = "cpu"
    dim: int = FEATURE_DIM
    settings: dict[str, Any] = field(default_factory=dict)
    warning: str | None = None

    def describe(self) -> dict[str, Any]:
        """JSON-ready description: name, comparability, warning and all settings."""
        return {
            "name": self.name,
            "comparable_with_published": self.comparable_with_published,
            "warning": self.warning,
            "dim": self.dim,
            **self.settings,
        }

    def extract(
        self,
        volumes: Iterable[np.ndarray],
        batch_size: int = 2,
        progress: bool = True,
        total: int | None = None,
        desc: str | None = None,
    ) -> np.ndarray:
        """Features of each volume, ``[N, dim]`` float64, computed in batches of equal shape."""
        import torch
        from tqdm import tqdm

        rows: list[np.ndarray] = []
        batch: list = []

        def flush() -> None:
            if batch:
                with torch.inference_mode():
                    x = torch.stack(batch).to(self.device)
                    rows.append(self.network(x).double().cpu().numpy())
                batch.clear()

        bar = tqdm(total=total, desc=desc or f"{self.name} features", unit="vol", disable=not progress, leave=False)
        with bar:
            for vol in volumes:
                x = prepare_volume(vol, self.input_size, self.intensity, self.axis_order)
                if batch and x.shape != batch[0].shape:
                    flush()
                batch.append(x)
                if len(batch) >= batch_size:
                    flush()
                bar.update(1)
            flush()
        if not rows:
            return np.zeros((0, self.dim))
        return np.concatenate(rows).reshape(-1, self.dim)


def make_extractor(
    name: str,
    *,
    weights: str | os.PathLike | None = None,
    input_size: int | Sequence[int] | None = 64,
    intensity: str = "zscore",
    axis_order: str = "xyz",
    device: str = "auto",
    seed: int = 0,
    encoder: Any = None,
    encoder_info: dict[str, Any] | None = None,
) -> FeatureExtractor:
    """Build the extractor ``name`` (one of :data:`EXTRACTORS`).

    ``weights``: MedicalNet ResNet-50 file, required for ``med3d`` (no download happens).
    ``input_size``: voxels per side fed to the network (``None``: native size).
    ``seed``: seeds the ``random`` network's weights (same seed → same features).
    ``encoder``: for ``encoder``, a loaded model with ``encode(volumes [n, S, S, S]) ->
    [n, d]``, ``config.size``, ``config.latent_dim`` and ``device``; ``encoder_info``: what
    identifies it (e.g. run folder, checkpoint name, weights SHA-256), written into the
    extractor's settings and so into the feature-cache key. ``input_size``,
    ``intensity`` and ``axis_order`` do not apply to it (the model's size, raw [-1, 1], xyz).
    """
    from medgen.core.device import resolve_device

    if intensity not in INTENSITY_MODES:
        raise UsageError(f"intensity mode must be one of {INTENSITY_MODES}, got {intensity!r}")
    if axis_order not in AXIS_ORDERS:
        raise UsageError(f"axis order must be one of {AXIS_ORDERS}, got {axis_order!r}")
    size = _size3(input_size)
    if size is not None and min(size) < 8:
        raise UsageError(f"input size {size} is too small for a ResNet-50 (at least 8 voxels per side)")
    if name == "encoder":
        return _encoder_extractor(encoder, encoder_info or {})
    device = str(resolve_device(device))
    common = {
        "architecture": "MedicalNet 3D ResNet-50 (shortcut B, dilated layer3/4), global average pool",
        "input_size": list(size) if size is not None else "native",
        "intensity": intensity,
        "axis_order": axis_order,
    }
    if name == "med3d":
        if weights is None:
            raise UsageError(
                "the med3d extractor needs MedicalNet ResNet-50 weights: pass --weights FILE "
                "(e.g. resnet_50_23dataset.pth), or choose --features random explicitly"
            )
        network = build_medicalnet_resnet50()
        load_medicalnet_weights(network, weights)
        settings = {**common, "weights_file": Path(weights).name, "weights_sha256": file_sha256(weights)}
        return FeatureExtractor("med3d", network.to(device), True, size, intensity, axis_order, device, settings=settings)
    if name == "random":
        if weights is not None:
            raise UsageError("--weights is only used by --features med3d and encoder")
        network = copy.deepcopy(_random_network(seed))
        settings = {**common, "weights": f"random (MONAI default init, torch.manual_seed({seed}))", "seed": seed}
        return FeatureExtractor(
            "random", network.to(device), False, size, intensity, axis_order, device, settings=settings, warning=RANDOM_WARNING
        )
    raise UsageError(f"unknown feature extractor {name!r}; choose one of {', '.join(EXTRACTORS)}")


ENCODER_WARNING = "encoder features: specific to this trained model, not comparable with published values or other runs"


def _encoder_extractor(model: Any, info: dict[str, Any]) -> FeatureExtractor:
    """Features from a trained model's encoder: ``model.encode`` of each volume, latent_dim-d,
    at the model's size. Volumes are fed in [-1, 1] as the encoder was trained (no z-score,
    nibabel axis order)."""
    if model is None:
        raise UsageError("--features encoder needs --weights RUN: a training run folder (or checkpoint folder) of HA-GAN")
    import torch

    def network(x):
        z = model.encode(x[:, 0].cpu().numpy())
        return torch.as_tensor(np.asarray(z))

    size = int(model.config.size)
    settings = {
        "architecture": "trained model's encoder: latent code",
        "input_size": [size] * 3,
        "intensity": "raw",
        "axis_order": "xyz",
        **info,
    }
    return FeatureExtractor(
        "encoder", network, False, (size,) * 3, "raw", "xyz", str(model.device), int(model.config.latent_dim),
        settings=settings, warning=ENCODER_WARNING,
    )
