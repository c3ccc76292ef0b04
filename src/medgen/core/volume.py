"""Volume conventions used across medgen, written once: the CT intensity window, voxel spacing, resizing.

* **CT window.** Preprocessing maps Hounsfield units linearly from a window [lo, hi]
  (default [-1024, 600] HU, the HA-GAN authors') to [-1, 1] (:func:`normalize_ct`);
  generated volumes map back with :func:`denormalize_ct` / :func:`to_hounsfield`, exact at
  both window ends. The window a data set used is recorded in its ``preprocess.json``
  (:func:`ct_window` reads it).
* **Spacing.** Voxel sizes in mm are written ``1.5x1.5x2`` in manifests (one number means
  isotropic); :func:`parse_spacing` reads that and the ``[1.5, 1.5, 2]`` / ``1.5,1.5,2`` forms.
* **Resizing rule.** When every axis shrinks, area averaging (each output voxel is the mean
  of the input voxels it covers, so a constant background stays exactly constant, and it is
  the anti-aliasing step); otherwise trilinear interpolation (:func:`resize_volume`). The
  feature networks, the classifier and the metrics' volume sets all resize this way.
  MONAI's ``Resize(anti_aliasing=True)`` zero-pads its Gaussian, which pulls the -1
  background toward 0 along the borders, so it is not used here.

Example::

    >>> import numpy as np
    >>> x = normalize_ct(np.array([-1024.0, -212.0, 600.0]))
    >>> x.tolist(), denormalize_ct(x).tolist()
    ([-1.0, 0.0, 1.0], [-1024.0, -212.0, 600.0])
    >>> parse_spacing("0.7x0.7x2.5"), parse_spacing("1")
    ((0.7, 0.7, 2.5), (1.0, 1.0, 1.0))
"""

from __future__ import annotations

import re
from typing import Any, Sequence

import numpy as np

CT_WINDOW_DEFAULT = (-1024.0, 600.0)


def normalize_ct(array: np.ndarray, hu_min: float = -1024.0, hu_max: float = 600.0) -> np.ndarray:
    """Map CT in HU to [-1, 1]: NaN → ``hu_min``, clip to [hu_min, hu_max], then linear.

    ``hu_min`` maps to exactly -1 and ``hu_max`` to exactly 1 (float32).
    """
    out = np.nan_to_num(np.asarray(array, dtype=np.float32), nan=hu_min)
    np.clip(out, hu_min, hu_max, out=out)
    half_width = np.float32((hu_max - hu_min) / 2.0)
    # (x - lo) / half_width - 1 is exact at both ends: 0 - 1 and 2 - 1.
    out -= np.float32(hu_min)
    out /= half_width
    out -= np.float32(1.0)
    return out


def denormalize_ct(array: np.ndarray, hu_min: float = -1024.0, hu_max: float = 600.0) -> np.ndarray:
    """Inverse of :func:`normalize_ct` on [-1, 1]: back to HU (float32)."""
    x = np.asarray(array, dtype=np.float32)
    return (x + np.float32(1.0)) * np.float32((hu_max - hu_min) / 2.0) + np.float32(hu_min)


def ct_window(preprocess: dict[str, Any]) -> tuple[float, float]:
    """The CT window [lo, hi] in HU that preprocessing mapped to [-1, 1] (``hu_window`` or ``hu_min``/``hu_max``)."""
    if "hu_window" in preprocess:
        lo, hi = preprocess["hu_window"]
    else:
        lo = preprocess.get("hu_min", CT_WINDOW_DEFAULT[0])
        hi = preprocess.get("hu_max", CT_WINDOW_DEFAULT[1])
    return float(lo), float(hi)


# Display windows in HU that a model can be asked to look through (``medgen train --d-windows``).
NAMED_CT_WINDOWS: dict[str, tuple[float, float]] = {
    "lung": (-1024.0, -500.0),  # air to the lung/tissue threshold: the parenchyma's density (emphysema < -950)
    "soft-tissue": (-160.0, 240.0),  # W400/L40
    "bone": (300.0, 1500.0),  # the bone threshold of the anatomy metrics and above
}


def normalized_ct_window(name: str, preprocess: dict[str, Any]) -> tuple[float, float]:
    """The named CT window (:data:`NAMED_CT_WINDOWS`) in the [-1, 1] units of a data set preprocessed
    with ``preprocess``'s HU window, clipped to [-1, 1]; ValueError for an unknown name or a window that
    falls outside the data's."""
    if name not in NAMED_CT_WINDOWS:
        raise ValueError(f"unknown CT window {name!r} (known: {', '.join(NAMED_CT_WINDOWS)})")
    lo, hi = ct_window(preprocess)
    w_lo, w_hi = (max(-1.0, min(1.0, 2.0 * (v - lo) / (hi - lo) - 1.0)) for v in NAMED_CT_WINDOWS[name])
    if not w_hi > w_lo:
        raise ValueError(f"the {name} window {NAMED_CT_WINDOWS[name]} HU lies outside the data's [{lo:g}, {hi:g}] HU")
    return round(w_lo, 6), round(w_hi, 6)


def is_ct(preprocess: dict[str, Any] | None) -> bool:
    """True when a preprocessing record says the data are CT."""
    return bool(preprocess) and str(preprocess.get("modality", "")).lower() == "ct"


def to_hounsfield(x: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """[-1, 1] → HU, float32: ``lo + (x + 1) · (hi − lo) / 2`` (exactly lo at -1 and hi at 1)."""
    return denormalize_ct(x, *window)


def hounsfield_int16(x: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """[-1, 1] → HU rounded to the nearest integer, int16 (how CT scanners store HU)."""
    hu = to_hounsfield(x, window)
    return np.rint(hu, out=hu).astype(np.int16)


def hounsfield_of(x: np.ndarray, preprocess: dict[str, Any] | None) -> np.ndarray:
    """[-1, 1] volumes of a model trained on CT back in HU (the training data's window); UsageError otherwise."""
    from medgen.core.errors import UsageError

    if not is_ct(preprocess):
        modality = (preprocess or {}).get("modality", "unknown")
        raise UsageError(f"HU output needs a model trained on CT; this one's training data is {modality}")
    return to_hounsfield(x, ct_window(preprocess or {}))


def parse_spacing(text: Any) -> tuple[float, float, float] | None:
    """``"1.5x1.5x2"``, ``"[1.5, 1.5, 2]"``, ``"1.5,1.5,2"`` or one number (isotropic) → (1.5, 1.5, 2.0).

    None when the text is not three (or one) finite positive numbers.
    """
    parts = [p for p in re.split(r"[x, ]+", str(text).strip().lower().strip("[]()")) if p]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        return None
    if len(values) == 1:
        values *= 3
    if len(values) != 3 or not all(np.isfinite(values)) or min(values) <= 0:
        return None
    return (values[0], values[1], values[2])


def resize_volume(x: Any, size: Sequence[int]) -> Any:
    """Resize a batch ``[B, C, X, Y, Z]`` (torch tensor) to spatial ``size`` by the rule in the module docstring."""
    import torch.nn.functional as F

    size = tuple(int(s) for s in size)
    if tuple(x.shape[2:]) == size:
        return x
    if all(s <= n for s, n in zip(size, x.shape[2:])):
        return F.interpolate(x, size=size, mode="area")
    return F.interpolate(x, size=size, mode="trilinear", align_corners=False)
