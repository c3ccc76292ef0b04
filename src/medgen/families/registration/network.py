"""The registration network (MONAI's ``VoxelMorph`` on a ``VoxelMorphUNet`` backbone) and the training pairs.

:class:`RegistrationNet` wraps ``monai.networks.nets.VoxelMorph`` as it is (the backbone maps the moving and
fixed images, stacked as channels, to a stationary velocity field; ``DVF2DDF`` integrates it by scaling and
squaring into a displacement; ``Warp`` resamples the moving image) with two changes:

* its ``Warp`` of the moving image pads with the border voxels instead of zeros: the data's background
  is −1, and zeros entering at the border would be a bright frame the similarity loss must undo;
* the last convolution starts at N(0, 10⁻⁵) weights and zero bias (as VoxelMorph's own code does), so an
  untrained network is close to the identity transform.

An atlas-to-subject run also holds the atlas, a buffer saved with the weights.

Displacements are in voxels, ``[b, 3, X, Y, Z]``, component ``d`` along spatial axis ``d``, and
``warped(p) = moving(p + u(p))`` (:mod:`medgen.metrics.registration`).
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from medgen.families.registration.config import RegistrationConfig
from medgen.inference.register import warp_layer


class RegistrationNet(nn.Module):
    """``forward(moving, fixed) -> (warped, displacement)``, both ``[b, ·, X, Y, Z]`` (module docstring)."""

    def __init__(self, cfg: RegistrationConfig, with_atlas: bool = False) -> None:
        super().__init__()
        from monai.networks.nets import VoxelMorph, VoxelMorphUNet

        backbone = VoxelMorphUNet(spatial_dims=3, in_channels=2, unet_out_channels=cfg.unet_out_channels,
                                  channels=tuple(cfg.channels), final_conv_channels=tuple(cfg.final_conv_channels))
        with warnings.catch_warnings():  # MONAI's notice that its Warp uses PyTorch's grid_sample
            warnings.simplefilter("ignore", UserWarning)
            self.voxelmorph = VoxelMorph(backbone=backbone, integration_steps=cfg.integration_steps, spatial_dims=3)
        self.voxelmorph.warp = warp_layer("bilinear", "border")
        last = [m for m in backbone.modules() if isinstance(m, nn.Conv3d)][-1]
        with torch.no_grad():
            last.weight.normal_(0.0, 1e-5)
            last.bias.zero_()
        self.register_buffer("atlas", torch.zeros(1, 1, *(cfg.size,) * 3) if with_atlas else None)

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.voxelmorph(moving, fixed)


def build_network(cfg: RegistrationConfig, with_atlas: bool = False) -> RegistrationNet:
    return RegistrationNet(cfg, with_atlas)


def build_discriminator(cfg: RegistrationConfig) -> nn.Module:
    """MONAI's ``PatchDiscriminator`` on (image, fixed) pairs, instance-normalised (the adversarial variant)."""
    from monai.networks.nets import PatchDiscriminator

    return PatchDiscriminator(spatial_dims=3, channels=cfg.d_channels, in_channels=2, out_channels=1,
                              num_layers_d=cfg.d_layers, norm="INSTANCE")


def pad_to(x: torch.Tensor, divisor: int) -> tuple[torch.Tensor, tuple[int, ...]]:
    """``x`` ``[b, c, X, Y, Z]`` padded at the far end (border values) to multiples of ``divisor``; and its shape."""
    shape = tuple(x.shape[2:])
    pads = [(-n) % divisor for n in shape]
    if any(pads):
        x = F.pad(x, [p for pad in reversed(pads) for p in (0, pad)], mode="replicate")
    return x, shape


def random_displacement(b: int, size: tuple[int, int, int], max_shift: float, rng: torch.Generator,
                        device: torch.device) -> torch.Tensor:
    """A random smooth displacement ``[b, 3, *size]`` in voxels: normal values on a 4³ grid, interpolated
    trilinearly and scaled so that each field's largest component is ``max_shift`` voxels."""
    coarse = torch.randn(b, 3, 4, 4, 4, generator=rng)
    u = F.interpolate(coarse, size=tuple(size), mode="trilinear", align_corners=True)
    u = u / u.abs().amax(dim=(1, 2, 3, 4), keepdim=True).clamp_min(1e-6) * max_shift
    return u.to(device)


def folding_share(ddf: torch.Tensor) -> torch.Tensor:
    """The share of interior voxels whose Jacobian determinant ``det(I + ∇u)`` (central differences) is ≤ 0."""
    u = ddf.float()

    def d(axis: int) -> torch.Tensor:  # ∂u/∂p_axis on the interior, [b, 3, X-2, Y-2, Z-2]
        hi = [slice(None), slice(None)] + [slice(1, -1)] * 3
        lo = list(hi)
        hi[2 + axis], lo[2 + axis] = slice(2, None), slice(None, -2)
        return (u[tuple(hi)] - u[tuple(lo)]) / 2.0

    g = [d(a) for a in range(3)]  # g[j][:, i] = ∂u_i/∂p_j
    J = [[g[j][:, i] + (1.0 if i == j else 0.0) for j in range(3)] for i in range(3)]
    det = (J[0][0] * (J[1][1] * J[2][2] - J[1][2] * J[2][1]) - J[0][1] * (J[1][0] * J[2][2] - J[1][2] * J[2][0])
           + J[0][2] * (J[1][0] * J[2][1] - J[1][1] * J[2][0]))
    return (det <= 0).float().mean()
