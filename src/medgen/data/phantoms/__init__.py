"""Built-in phantom data sets with known ground truth.

``generate(kind, size, seed)`` returns one :class:`Phantom`; the i-th volume of a
data set made with seed ``K`` uses ``volume_seed(K, i)``, so a smaller data set
is a prefix of a larger one.

Kinds:

* ``thorax-ct`` — raw-like chest CT in Hounsfield units (see :mod:`.thorax_ct`);
  factors: lung, bone and heart volume, emphysema %, body size; ``label`` =
  emphysema severity 0–3.
* ``brain-mri`` — skull-stripped T1-like MRI built from the MNI152 template
  shipped with nilearn (see :mod:`.brain_mri`); factors: brain, grey/white
  matter and ventricle volume, atrophy; ``label`` = atrophy class 0–3.
"""

from __future__ import annotations

import numpy as np

from medgen.data.phantoms.phantom import Phantom

KINDS: tuple[str, ...] = ("thorax-ct", "brain-mri")

__all__ = ["KINDS", "Phantom", "generate", "volume_seed"]


def volume_seed(seed: int, index: int) -> int:
    """Seed of volume ``index`` in a data set made with ``seed`` (independent streams)."""
    state = np.random.SeedSequence(int(seed), spawn_key=(int(index),)).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 32 | int(state[1])


def generate(kind: str, size: int, seed: int, *, nodules: bool = False) -> Phantom:
    """Generate one phantom of ``kind`` with ``size``³ voxels; same seed ⇒ identical array.

    ``nodules`` (thorax-ct only) inserts 0–3 lung nodules and records them in the factors.
    """
    if kind == "thorax-ct":
        from medgen.data.phantoms import thorax_ct

        return thorax_ct.generate(size, seed, nodules=nodules)
    if kind == "brain-mri":
        if nodules:
            raise ValueError("nodules are only available for thorax-ct phantoms")
        from medgen.data.phantoms import brain_mri

        return brain_mri.generate(size, seed)
    raise ValueError(f"unknown phantom kind {kind!r}; choose one of {', '.join(KINDS)}")
