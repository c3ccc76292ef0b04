"""Degradations that simulate paired data from clean scans, one per module (see :mod:`.degradation`).

``DEGRADATIONS`` maps each name (``medgen degrade --kind NAME``) to its :class:`Degradation` record;
:func:`medgen.data.degraded_set.write_degraded_set` applies one to a whole data set.
"""

from __future__ import annotations

from medgen.core.errors import UsageError
from medgen.data.degradations.degradation import (
    Degradation,
    Scan,
    params_record,
    parse_settings,
    sample_params,
    subject_rng,
)
from medgen.data.degradations.bias import BIAS
from medgen.data.degradations.drr import DRR
from medgen.data.degradations.ghosting import GHOSTING
from medgen.data.degradations.inpaint import INPAINT
from medgen.data.degradations.kspace import KSPACE
from medgen.data.degradations.lowdose import LOWDOSE
from medgen.data.degradations.motion import MOTION
from medgen.data.degradations.noise import NOISE
from medgen.data.degradations.outpaint import OUTPAINT
from medgen.data.degradations.slices import SLICES

DEGRADATIONS: dict[str, Degradation] = {
    d.name: d for d in (SLICES, KSPACE, LOWDOSE, NOISE, DRR, MOTION, BIAS, GHOSTING, INPAINT, OUTPAINT)
}


def get(name: str) -> Degradation:
    """The degradation called ``name``; UsageError naming the known ones otherwise."""
    try:
        return DEGRADATIONS[name]
    except KeyError:
        raise UsageError(f"no degradation {name!r}; choose one of {', '.join(DEGRADATIONS)}") from None


__all__ = ["BIAS", "DEGRADATIONS", "DRR", "Degradation", "GHOSTING", "INPAINT", "KSPACE", "LOWDOSE", "MOTION",
           "NOISE", "OUTPAINT", "SLICES", "Scan", "get", "params_record", "parse_settings", "sample_params",
           "subject_rng"]
