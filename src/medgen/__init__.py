"""medgen: generative models of 3D medical images (CT, MRI).

Array convention used everywhere in medgen: a volume is a NumPy array or torch
tensor indexed ``(x, y, z)`` in RAS+ orientation (the nibabel / MONAI / TorchIO
convention), so ``z`` — the last axis — runs inferior→superior and
``volume[..., k]`` is an axial slice. Batched tensors are ``[B, C, X, Y, Z]``.
HA-GAN's high-resolution slabs are runs of consecutive axial slices.
"""

from medgen.core.version import __version__

__all__ = ["__version__", "load", "build", "evaluate"]


def __getattr__(name: str):
    """``medgen.load`` / ``medgen.build`` / ``medgen.evaluate`` (see :mod:`medgen.api`), imported on first use so
    that ``import medgen`` (and ``medgen --help``) does not import torch."""
    if name in ("load", "build", "evaluate"):
        from medgen import api

        return getattr(api, name)
    raise AttributeError(f"module 'medgen' has no attribute {name!r}")
