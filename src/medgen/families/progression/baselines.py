"""The trivial predictors of a follow-up scan a progression model must beat.

* :class:`NoChange`: the follow-up is the baseline (no progression at all).
* :class:`LinearTrend`: the follow-up is the baseline plus the interval times the training set's mean per-year
  voxel change, ``rate = mean_i (followup_i − baseline_i) / interval_i`` over the training pairs (pairs with a
  zero interval have no rate and are left out). It is a population trend in image space: the subjects are not
  registered to each other, so it is the right change only where their anatomies overlap (the ventricles'
  growth averaged over subjects is a blurred ring), and it is exactly what a voxel-wise linear model of the
  training pairs without subject-specific information predicts.

Both take what :meth:`medgen.families.progression.model.ProgressionModel.predict` takes (one ``(X, Y, Z)``
baseline or ``[n, X, Y, Z]``, one interval or one per volume) and return the same shapes, clipped to [-1, 1].

Example::

    trend = LinearTrend.from_dataset("data/brain64")                 # the train split's pairs
    guess = trend.predict(baseline, interval_years=3.0)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from medgen.core.errors import InputError
from medgen.families.progression.model import as_intervals, as_volumes


@dataclass(frozen=True)
class NoChange:
    """The follow-up is the baseline."""

    name: str = "no change"

    def predict(self, baseline: Any, interval_years: Any = 0.0) -> np.ndarray:
        vols, single = as_volumes(baseline)
        as_intervals(interval_years, len(vols))  # checked, unused
        out = np.clip(vols, -1.0, 1.0)
        return out[0] if single else out


@dataclass(frozen=True)
class LinearTrend:
    """``baseline + interval · rate`` with ``rate`` ``(X, Y, Z)``, the mean per-year change of ``n_pairs``
    training pairs (:meth:`fit`)."""

    rate: np.ndarray
    n_pairs: int
    name: str = "linear trend"

    @classmethod
    def fit(cls, pairs: Iterable[tuple[Any, Any, float]]) -> "LinearTrend":
        """The mean of ``(followup − baseline) / interval`` over ``pairs`` of (baseline, follow-up, interval in
        years), those with interval ≤ 0 left out; ValueError when none is left or the shapes differ."""
        total: np.ndarray | None = None
        n = 0
        for baseline, followup, interval in pairs:
            b = np.asarray(baseline, dtype=np.float64)
            f = np.asarray(followup, dtype=np.float64)
            if b.ndim != 3 or b.shape != f.shape or (total is not None and b.shape != total.shape):
                raise ValueError(f"baseline {b.shape} and follow-up {f.shape}: need (X, Y, Z) pairs of one shape")
            t = float(interval)
            if not np.isfinite(t) or t <= 0:
                continue
            total = (f - b) / t if total is None else total + (f - b) / t
            n += 1
        if total is None:
            raise ValueError("no training pair with an interval > 0: the linear trend is undefined")
        return cls((total / n).astype(np.float32), n)

    @classmethod
    def from_dataset(cls, data: str | os.PathLike, split: str = "train", ids: Sequence[str] | None = None,
                     baseline: str = "image", target: str = "followup", interval_column: str = "interval_years",
                     seed: int = 0, fractions: Sequence[float] = (0.8, 0.1, 0.1)) -> "LinearTrend":
        """:meth:`fit` on the pairs of a preprocessed longitudinal data set: the split ``split`` (from ``seed``
        and ``fractions``, as training runs split) or exactly ``ids`` (e.g. a run's ``train_ids``)."""
        from medgen.data.dataset import VolumeDataset

        ds = VolumeDataset(data, split=split, seed=seed, fractions=tuple(fractions), label_column=None,
                           covariate_columns=(interval_column,), ids=list(ids) if ids is not None else None,
                           keys=(baseline, target))
        if len(ds) == 0:
            raise InputError(f"{data}: the {split} split is empty: no pairs to fit the linear trend on")

        def pairs():
            for i in range(len(ds)):
                item = ds[i]
                yield item[baseline][0].numpy(), item[target][0].numpy(), float(item["covariates"][0])

        return cls.fit(pairs())

    def predict(self, baseline: Any, interval_years: Any) -> np.ndarray:
        vols, single = as_volumes(baseline)
        if vols.shape[1:] != self.rate.shape:
            raise ValueError(f"baseline {vols.shape[1:]}: the trend was fitted on {self.rate.shape} volumes")
        t = as_intervals(interval_years, len(vols))
        out = np.clip(vols + t[:, None, None, None] * self.rate[None], -1.0, 1.0).astype(np.float32)
        return out[0] if single else out
