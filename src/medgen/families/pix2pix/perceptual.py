"""MedGAN's perceptual and style terms for pix2pix, on the feature maps of MedicalNet's 3D ResNet-50.

MedGAN (Armanious et al. 2020, "MedGAN: Medical image translation using GANs", Computerized Medical Imaging
and Graphics 79, 101684) adds to the conditional-GAN objective losses computed on the feature maps of networks
rather than on voxels, to sharpen the textures an L1 term alone blurs. With φ_l(v) the output of stage l of a
frozen pretrained network (C_l channels, N_l voxels) for the generated volume ŷ and the target y:

    L_perc  = mean_l  mean |φ_l(ŷ) − φ_l(y)|
    L_style = mean_l  mean |Gram(φ_l(ŷ)) − Gram(φ_l(y))|,   Gram(F) = F Fᵀ / (C_l · N_l)   (F: C_l × N_l)

The perceptual term matches content at the scale of each stage's receptive field; the style term matches the
correlations between channels, i.e. texture, wherever it lies. MedGAN takes its perceptual term from its
discriminator's layers and its style (and content) terms from a 2D ImageNet VGG-19; here both terms use one
frozen 3D network trained on medical volumes, and the distances are L1.

Feature network
---------------
MedicalNet's 3D ResNet-50 (Chen et al. 2019, "Med3D: Transfer learning for 3D medical image analysis",
arXiv:1904.00625), built and loaded by :mod:`medgen.metrics.features` (the network of the ``med3d`` metrics)
from a weight file the user gives, e.g. ``resnet_50_23dataset.pth``; nothing is downloaded. It is frozen
(no gradients to its parameters, always in eval mode: BatchNorm uses its stored statistics), keeps only the
stages up to the deepest one compared, and is no trained network of the run: it is neither checkpointed nor
wrapped by DDP, and is built once per process and weight file (:func:`feature_network`).

Intensities: MedicalNet was trained on volumes z-scored to zero mean and unit std, which is what
:mod:`medgen.metrics.features` feeds it for ``med3d`` (``intensity="zscore"`` over the whole volume, axes in
nibabel order). Here ŷ and y are both mapped with the mean and std of the target volume y (each volume of the
batch its own), rather than each with its own statistics: one affine map for both, so the loss still sees an
error of global contrast or offset in ŷ (which z-scoring ŷ by itself would hide), and no gradient flows
through the statistics. A target flatter than :data:`MIN_STD` (an air-only patch) is scaled as if its std
were that, so the generator's small deviations there are not magnified without bound.

Why not MONAI's ``PerceptualLoss``: its MedicalNet networks (``medicalnet_resnet10_23datasets``,
``medicalnet_resnet50_23datasets``, in ``MedicalNetPerceptualSimilarity``) are fetched with
``torch.hub.load("Project-MONAI/perceptual-models:main", ...)``, a download with no way to give a local
file (its ``pretrained_path`` applies to the torchvision ``resnet50`` only), and medgen never downloads
weights. It also compares the last stage only, by squared distance of channel-normalised features, and has
no style term.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from medgen.core.errors import InputError
from medgen.families.pix2pix.config import FEATURE_STAGES
from medgen.metrics.features import build_medicalnet_resnet50, load_medicalnet_weights

MIN_STD = 0.1  # floor of the target's std in the intensity mapping, in [-1, 1] units (5 % of the window)


class FeatureNetwork(nn.Module):
    """A frozen MedicalNet ResNet-50 cut after the deepest of ``layers``: volumes ``[b, 1, D, H, W]`` (already
    mapped, :func:`medicalnet_input`) → the outputs of ``layers`` (in stage order)."""

    def __init__(self, resnet: nn.Module, layers: Sequence[str]) -> None:
        super().__init__()
        unknown = [n for n in layers if n not in FEATURE_STAGES]
        if unknown or not layers:
            raise ValueError(f"feature layers {list(layers)}: choose from {', '.join(FEATURE_STAGES)}")
        self.layers = tuple(n for n in FEATURE_STAGES if n in layers)
        depth = FEATURE_STAGES.index(self.layers[-1]) + 1
        pool = [] if getattr(resnet, "no_max_pool", False) else [resnet.maxpool]
        self.stem = nn.Sequential(resnet.conv1, resnet.bn1, resnet.act, *pool)
        self.stages = nn.ModuleDict({name: getattr(resnet, name) for name in FEATURE_STAGES[:depth]})
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "FeatureNetwork":
        return super().train(False)  # always eval: the stored BatchNorm statistics, never the batch's

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        out = []
        for name, stage in self.stages.items():
            x = stage(x)
            if name in self.layers:
                out.append(x)
        return out


def load_feature_network(weights: str | os.PathLike, layers: Sequence[str],
                         device: torch.device | str = "cpu") -> FeatureNetwork:
    """MedicalNet's ResNet-50 with the weights of ``weights`` (``InputError`` naming the file if it is not one),
    frozen and cut after ``layers``. The global random generator is left as it was (the builder initialises
    the network before the weights replace it), so building it changes no random draw of a run."""
    with torch.random.fork_rng(devices=[]):
        resnet = build_medicalnet_resnet50()
    load_medicalnet_weights(resnet, weights)
    return FeatureNetwork(resnet, layers).to(device)


@functools.lru_cache(maxsize=1)
def _cached(path: str, stamp: tuple[int, int], layers: tuple[str, ...], device: torch.device) -> FeatureNetwork:
    return load_feature_network(path, layers, device)


def feature_network(weights: str | os.PathLike, layers: Sequence[str],
                    device: torch.device | str = "cpu") -> FeatureNetwork:
    """:func:`load_feature_network`, built once per process for the same file (path, size and modification
    time), layers and device: the training step asks for it every iteration."""
    path = Path(weights).resolve()
    try:
        st = path.stat()
    except OSError:
        raise InputError(f"{weights}: weight file not found") from None
    return _cached(str(path), (st.st_size, st.st_mtime_ns), tuple(layers), torch.device(device))


def medicalnet_input(volumes: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``volumes`` ``[b, 1, ...]`` in [-1, 1] mapped as MedicalNet expects, with the statistics of ``target``
    (same shape): ``(v − mean(y)) / max(std(y), MIN_STD)`` per volume of the batch (module docstring)."""
    dims = tuple(range(1, target.ndim))
    target = target.detach().float()
    mean = target.mean(dims, keepdim=True)
    std = target.std(dims, keepdim=True, correction=0).clamp_min(MIN_STD)
    return (volumes - mean) / std


def features(net: FeatureNetwork, output: torch.Tensor, target: torch.Tensor
             ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The chosen stages' feature maps of the generated volumes (with gradients to them) and of the targets
    (without)."""
    feats_out = net(medicalnet_input(output, target))
    with torch.no_grad():
        feats_target = net(medicalnet_input(target, target))
    return feats_out, feats_target


def gram(f: torch.Tensor) -> torch.Tensor:
    """Gram matrices of feature maps ``[b, C, *spatial]`` → ``[b, C, C]``, normalised by C·N (N voxels), in
    float32 (outside autocast)."""
    with torch.autocast(f.device.type, enabled=False):
        flat = f.float().flatten(2)
        c, n = flat.shape[1], flat.shape[2]
        return torch.bmm(flat, flat.transpose(1, 2)) / (c * n)


def perceptual_loss(feats_out: Sequence[torch.Tensor], feats_target: Sequence[torch.Tensor]) -> torch.Tensor:
    """Mean over layers of the mean absolute difference of the feature maps."""
    pairs = zip(feats_out, feats_target, strict=True)
    return torch.stack([(a.float() - b.float()).abs().mean() for a, b in pairs]).mean()


def style_loss(feats_out: Sequence[torch.Tensor], feats_target: Sequence[torch.Tensor]) -> torch.Tensor:
    """Mean over layers of the mean absolute difference of the Gram matrices (:func:`gram`)."""
    pairs = zip(feats_out, feats_target, strict=True)
    return torch.stack([(gram(a) - gram(b)).abs().mean() for a, b in pairs]).mean()
