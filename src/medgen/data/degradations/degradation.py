"""What a degradation is: a deterministic function of a scan and physical parameters, and the sampling of
those parameters (TorchIO's split of ``Motion`` and ``RandomMotion``, as one record).

Paired data for image-to-image tasks is rarely acquired; it is simulated from clean scans (slices removed,
k-space undersampled, dose lowered, artefacts added, regions masked, radiographs rendered). Each
degradation lives in a module of its own that defines

- its parameters: a frozen dataclass whose fields are physical quantities (mm, dose fraction, photons,
  acceleration), each with its unit and meaning in the field's ``metadata`` (``medgen degrade --help`` lists
  them), validated in ``__post_init__``;
- ``apply(scan, params, rng) -> {volume name: array}``: deterministic given ``params`` and the state of
  ``rng`` (which draws any noise realisation), returning voxel-aligned volumes on the scan's grid;
- one :class:`Degradation` record naming the two and the volumes it returns.

A parameter may be given as a range ``lo:hi``; :func:`sample_params` then draws it per subject (uniform; an
integer range includes both ends), from the subject's own generator, before ``apply`` draws its noise.
So a subject's pair depends only on (settings, seed, subject id).
"""

from __future__ import annotations

import dataclasses
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from medgen.core.errors import UsageError

MODALITIES = ("ct", "mri")
#: What the values of a returned volume are: ``scan``: the units of :attr:`Scan.values` (converted back to the
#: data set's normalised intensities when stored); ``as-is``: stored unchanged (a mask, a radiograph's line
#: integrals).
UNITS = ("scan", "as-is")


@dataclass(frozen=True)
class Scan:
    """One subject's volume as a degradation sees it.

    values: ``(x, y, z)`` float64, RAS+ with the axial slice ``values[..., k]`` (the data sets' layout). CT:
        Hounsfield units; MRI: intensity in [0, 1] (the data set's [-1, 1] mapped linearly).
    spacing: voxel size in mm along (x, y, z).
    modality: ``ct`` or ``mri``.
    """

    values: np.ndarray
    spacing: tuple[float, float, float]
    modality: str

    def __post_init__(self) -> None:
        if self.values.ndim != 3:
            raise UsageError(f"a scan is a 3D array, got shape {self.values.shape}")
        if len(self.spacing) != 3 or not all(s > 0 for s in self.spacing):
            raise UsageError(f"spacing {self.spacing}: need three positive sizes in mm")
        if self.modality not in MODALITIES:
            raise UsageError(f"modality {self.modality!r}: need one of {', '.join(MODALITIES)}")


def param(default: Any, help: str, unit: str = "") -> Any:
    """A parameter field: its default, what it means and its unit (shown by ``medgen degrade --help``)."""
    return field(default=default, metadata={"help": help, "unit": unit})


@dataclass(frozen=True)
class Degradation:
    """A registered degradation (see the module docstring).

    volumes: name → (kind, units) of what ``apply`` returns; kind is a data-set volume kind
        (``intensity`` | ``label``), units one of :data:`UNITS`.
    modalities: the modalities it makes sense for (others are refused with a clear message).
    """

    name: str
    summary: str
    params: type
    apply: Callable[[Scan, Any, np.random.Generator], dict[str, np.ndarray]]
    volumes: dict[str, tuple[str, str]]
    modalities: tuple[str, ...] = MODALITIES

    def param_fields(self) -> list[dataclasses.Field]:
        return list(dataclasses.fields(self.params))

    def help_text(self) -> str:
        """One line per parameter: ``name=default  meaning [unit]``."""
        lines = [f"{self.name}: {self.summary} ({', '.join(self.modalities)})"]
        for f in self.param_fields():
            unit = f" [{f.metadata['unit']}]" if f.metadata.get("unit") else ""
            lines.append(f"    {f.name}={f.default}  {f.metadata.get('help', '')}{unit}")
        return "\n".join(lines)


def subject_rng(seed: int, subject_id: str) -> np.random.Generator:
    """The generator of one subject's pair: a function of the run's seed and the id alone (order-free)."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(subject_id.encode("utf-8"))])


def parse_settings(degradation: Degradation, items: list[str] | dict[str, str] | None) -> dict[str, Any]:
    """``["dose=0.25", "photons=1e5"]`` (or a dict of strings) → {name: value or (lo, hi)} typed like the defaults.

    Raises UsageError for an unknown name, a malformed value, or a range of a parameter that is not a number.
    """
    if items is None:
        return {}
    pairs = items.items() if isinstance(items, dict) else [_split_item(degradation, i) for i in items]
    fields = {f.name: f for f in degradation.param_fields()}
    out: dict[str, Any] = {}
    for name, text in pairs:
        if name not in fields:
            raise UsageError(
                f"{degradation.name}: no parameter {name!r}; it has {', '.join(fields) or 'none'}"
            )
        default = fields[name].default
        text = str(text).strip()
        if ":" in text and isinstance(default, (int, float)) and not isinstance(default, bool):
            lo, hi = (_typed(degradation, name, t, default) for t in text.split(":", 1))
            if lo > hi:
                raise UsageError(f"{degradation.name}: {name}={text}: a range needs low ≤ high")
            out[name] = (lo, hi)
        else:
            out[name] = _typed(degradation, name, text, default)
    return out


def _split_item(degradation: Degradation, item: str) -> tuple[str, str]:
    name, sep, value = item.partition("=")
    if not sep or not name.strip():
        raise UsageError(f"{degradation.name}: parameter {item!r}: write NAME=VALUE or NAME=LOW:HIGH")
    return name.strip(), value


def _typed(degradation: Degradation, name: str, text: str, default: Any) -> Any:
    try:
        if isinstance(default, bool):
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return text.lower() in ("true", "1", "yes")
        if isinstance(default, int):
            number = float(text)
            if number != int(number):
                raise ValueError
            return int(number)
        if isinstance(default, float):
            return float(text)
        return text
    except ValueError:
        kind = type(default).__name__
        raise UsageError(f"{degradation.name}: {name}={text!r} is not a {kind}") from None


def sample_params(degradation: Degradation, settings: dict[str, Any], rng: np.random.Generator) -> Any:
    """The parameters of one subject: fixed settings as given, ranges drawn from ``rng`` (in field order),
    defaults for the rest. Raises UsageError (from the parameters' validation) for impossible values."""
    values = {}
    for f in degradation.param_fields():
        if f.name not in settings:
            continue
        value = settings[f.name]
        if isinstance(value, tuple):
            lo, hi = value
            value = int(rng.integers(lo, hi + 1)) if isinstance(f.default, int) else float(rng.uniform(lo, hi))
        values[f.name] = value
    return degradation.params(**values)


def params_record(params: Any) -> dict[str, Any]:
    """The parameters as a flat dict (the manifest's per-pair columns)."""
    return dataclasses.asdict(params)
