"""Built-in phantom data sets with known ground truth.

``generate(kind, size, seed)`` returns one :class:`Phantom`; the i-th volume of a
data set made with seed ``K`` uses ``volume_seed(K, i)``, so a smaller data set
is a prefix of a larger one. ``size`` is S (an S³ cube) or a shape (X, Y, Z), and
``spacing`` a voxel size in mm (one value or one per axis, e.g. 0.8×0.8×2.5 mm);
by default the largest axis spans the kind's field of view with isotropic voxels.
The anatomy is defined in millimetres, so any grid samples the same subject.

Kinds:

* ``thorax-ct`` — raw-like chest CT in Hounsfield units (see :mod:`.thorax_ct`);
  factors: lung, bone and heart volume, emphysema %, body size; ``label`` =
  emphysema severity 0–3. Extra volume: ``tissue`` (label map, classes in
  ``thorax_ct.TISSUE_CLASSES``).
* ``brain-mri`` — skull-stripped T1-like MRI built from the MNI152 template
  shipped with nilearn (see :mod:`.brain_mri`); factors: brain, grey/white
  matter and ventricle volume, atrophy; ``label`` = atrophy class 0–3. Extra
  volumes: ``tissue`` (label map, ``brain_mri.TISSUE_CLASSES``) and ``t2`` (a
  T2-weighted contrast of the same anatomy).

Lesions (:mod:`.lesions`): ``generate(kind, size, seed, lesions=["nodule", "mass"])``
paints lesions of those kinds (thorax-ct: ``nodule``, ``emphysema``, ``mass``; brain-mri:
``wmh``, ``tumour``) last, from their own random stream, and adds the named volumes
``lesion`` (int16 instance map: 0 none, k the k-th visible lesion) and ``normal`` (the image
without them, exactly what ``generate`` gives without ``lesions``; for brain also
``normal_t2``) and the factors ``abnormal``, ``lesion_count``, ``lesion_ml`` and ``lesions``
(JSON list). ``lesions.is_abnormal(volume_seed(K, i), p)`` decides which volumes of a set
get them.

Two domains of the same subjects (:mod:`.domains`): A is the image above, B the same
anatomy on a second CT scanner (thorax) or in T2 contrast (brain);
``domains.render(phantom, "B", seed)`` gives it.

Registration and disease progression (brain-mri, :mod:`.deformation`):
``generate("brain-mri", size, seed, displacement=True)`` adds the volumes ``disp_x``,
``disp_y``, ``disp_z`` (float32, mm): voxel v's anatomy was sampled from the template
point ``affine · v + disp(v)`` (MNI mm); ``deformation.true_displacement(moving, fixed)``
composes two subjects' fields into the true fixed → moving displacement.
``longitudinal=True`` adds the same subject's follow-up after ``interval_years`` with
more atrophy (volumes ``followup``, ``followup_tissue``, ``followup_t2``; factors
``interval_years``, ``atrophy_rate_per_year``, ``atrophy_followup``, ``label_followup``
and ``<tissue>_volume_ml_followup``). ``healthy=True`` adds the subject's healthy self: the
same subject and scan, noise included, at atrophy 0 (volumes ``healthy``, ``healthy_tissue``,
``healthy_t2``; factors ``<tissue>_volume_ml_healthy``), so ``image − healthy`` is the
atrophy's effect alone.

Breathing (thorax-ct, :mod:`.thorax_ct`): ``generate("thorax-ct", size, seed, breathing=True)``
adds the same subject and scan at end-expiration (the image is end-inspiration): volumes
``expiration`` (HU), ``expiration_tissue`` and the true displacement between the states
``breath_x``, ``breath_y``, ``breath_z`` (float32, mm, world axes), such that
``expiration(p) = image(p + u(p))`` on the shared grid (the convention of
:mod:`medgen.metrics.registration`, there in voxels: divide by the spacing); factors
``breathing_cc_mm`` (diaphragm rise, 10–20 mm), ``breathing_ap_mm`` (anterior chest-wall
contraction, 2–6 mm) and ``lung_volume_ml_expiration``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from medgen.data.phantoms.phantom import Phantom

KINDS: tuple[str, ...] = ("thorax-ct", "brain-mri")

__all__ = ["KINDS", "Phantom", "generate", "volume_seed", "volume_specs"]


def volume_seed(seed: int, index: int) -> int:
    """Seed of volume ``index`` in a data set made with ``seed`` (independent streams)."""
    state = np.random.SeedSequence(int(seed), spawn_key=(int(index),)).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 32 | int(state[1])


def generate(
    kind: str,
    size: int | tuple[int, int, int],
    seed: int,
    *,
    nodules: bool = False,
    spacing: float | tuple[float, float, float] | None = None,
    lesions: Sequence[str] = (),
    displacement: bool = False,
    longitudinal: bool = False,
    healthy: bool = False,
    breathing: bool = False,
) -> Phantom:
    """Generate one phantom of ``kind`` with ``size``³ (or ``size`` = (X, Y, Z)) voxels of
    ``spacing`` mm (default: the kind's field of view over the largest axis); same seed ⇒
    identical arrays.

    ``nodules`` (thorax-ct only) inserts 0–3 lung nodules and records them in the factors.
    ``lesions``: lesion kinds of :data:`.lesions.LESION_KINDS` to paint (see the module
    docstring); ValueError for a kind the phantom does not have, or with ``nodules``.
    ``displacement``, ``longitudinal``, ``healthy`` (brain-mri only, else ValueError): the
    displacement to the template, the follow-up scan and the healthy self (see the module docstring).
    ``breathing`` (thorax-ct only, else ValueError): the expiration scan and the true displacement
    between inspiration and expiration (see the module docstring).
    """
    if kind == "thorax-ct":
        if displacement or longitudinal or healthy:
            option = ("displacement fields" if displacement else "longitudinal follow-ups" if longitudinal
                      else "healthy selves")
            raise ValueError(f"{option} are only available for brain-mri phantoms")
        from medgen.data.phantoms import thorax_ct

        return thorax_ct.generate(size, seed, nodules=nodules, spacing=spacing, lesions=lesions, breathing=breathing)
    if kind == "brain-mri":
        if nodules:
            raise ValueError("nodules are only available for thorax-ct phantoms")
        if breathing:
            raise ValueError("breathing states are only available for thorax-ct phantoms")
        from medgen.data.phantoms import brain_mri

        return brain_mri.generate(size, seed, spacing=spacing, lesions=lesions, displacement=displacement,
                                  longitudinal=longitudinal, healthy=healthy)
    raise ValueError(f"unknown phantom kind {kind!r}; choose one of {', '.join(KINDS)}")


def volume_specs(
    kind: str,
    domain: str = "A",
    lesions: bool = False,
    longitudinal: bool = False,
    healthy: bool = False,
    breathing: bool = False,
) -> dict[str, dict]:
    """The extra volumes of a phantom set of ``kind``: name → ``{"kind": "label" | "intensity", ...}``.

    Label maps also give their ``classes`` (value as a string → description), as
    ``phantoms.json`` records them. ``domain`` (see :mod:`.domains`): a ``B`` set leaves
    out the volume that is its image (brain ``t2``); a ``both`` set adds ``domain_b``.
    ``lesions``: a set with lesions adds ``lesion``, ``normal`` and, for brain, ``normal_t2``
    (in a ``B`` set ``normal`` is the lesion-free image in domain B, so brain leaves out ``normal_t2``).
    ``longitudinal`` (brain): adds ``followup``, ``followup_tissue`` and ``followup_t2`` (a ``B`` set's
    ``followup`` is the follow-up in T2, so it leaves out ``followup_t2``). ``healthy`` (brain): adds
    ``healthy``, ``healthy_tissue`` and ``healthy_t2`` (likewise without ``healthy_t2`` in a ``B`` set,
    whose ``healthy`` is in T2). ``breathing`` (thorax): adds ``expiration`` (in the image's domain)
    and ``expiration_tissue``. The displacement volumes (``disp_x``, ``disp_y``, ``disp_z``;
    ``breath_x``, ``breath_y``, ``breath_z``) are not among them: ``medgen preprocess`` cannot carry
    millimetres (see :mod:`.deformation`).
    """
    from medgen.data.phantoms.domains import B_EXTRA_VOLUME, DOMAIN_B_VOLUME

    if kind == "thorax-ct":
        from medgen.data.phantoms import thorax_ct as module
    elif kind == "brain-mri":
        from medgen.data.phantoms import brain_mri as module
    else:
        raise ValueError(f"unknown phantom kind {kind!r}; choose one of {', '.join(KINDS)}")
    specs: dict[str, dict] = {
        "tissue": {"kind": "label", "classes": {str(k): v for k, v in module.TISSUE_CLASSES.items()}}
    }
    if kind == "brain-mri":
        specs["t2"] = {"kind": "intensity"}
    if lesions:
        from medgen.data.phantoms.lesions import volume_specs as lesion_volume_specs

        specs.update(lesion_volume_specs(kind))
    if longitudinal:
        specs["followup"] = {"kind": "intensity"}
        specs["followup_tissue"] = {"kind": "label", "classes": dict(specs["tissue"]["classes"])}
        specs["followup_t2"] = {"kind": "intensity"}
    if healthy:
        specs["healthy"] = {"kind": "intensity"}
        specs["healthy_tissue"] = {"kind": "label", "classes": dict(specs["tissue"]["classes"])}
        specs["healthy_t2"] = {"kind": "intensity"}
    if breathing:
        specs["expiration"] = {"kind": "intensity"}
        specs["expiration_tissue"] = {"kind": "label", "classes": dict(specs["tissue"]["classes"])}
    if domain == "B":
        specs.pop(B_EXTRA_VOLUME.get(kind, ""), None)
        specs.pop("normal_t2", None)
        specs.pop("followup_t2", None)
        specs.pop("healthy_t2", None)
    elif domain == "both":
        specs[DOMAIN_B_VOLUME] = {"kind": "intensity"}
    return specs
