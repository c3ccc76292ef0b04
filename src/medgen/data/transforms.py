"""Transforms of items made of named volumes: which volumes a transform touches.

An item of :class:`medgen.data.dataset.VolumeDataset` is a dict holding each
named volume as a ``[1, S, S, S]`` tensor (``image``, ``target``, a label map
``mask``, ...) besides ``id``, ``label``, ``covariates`` and ``index``. Two rules
cover paired data:

* :class:`OnKeys` applies a per-volume function to the chosen volumes only
  (``include``) and can first keep an untouched copy under another name
  (``keep``): ``OnKeys(degrade, include=["image"], keep={"image": "target"})``
  turns the clean image into the model's degraded input and keeps the clean one
  as its target.
* A spatial augmentation (:class:`RandomFlip`) draws its randomness once per item
  and applies it to every volume of the item, so the volumes stay aligned.

These follow TorchIO's ``include``/``keep`` arguments; TorchIO is not a
dependency and these few lines are all paired training needs. Items are plain
dicts of tensors, so MONAI's dictionary transforms (``keys=``) work on them too.

Example (runs as it is)::

    >>> import torch
    >>> from medgen.data.transforms import Compose, OnKeys, RandomFlip
    >>> item = {"image": torch.arange(8.0).reshape(1, 2, 2, 2), "id": "case0"}
    >>> t = Compose([OnKeys(lambda v: v + 0.5, include=["image"], keep={"image": "target"}),
    ...              RandomFlip(axes=(0,), p=1.0)])
    >>> out = t(item)
    >>> sorted(out)
    ['id', 'image', 'target']
    >>> (out["image"] - out["target"]).unique().tolist()   # degraded input vs clean target, both flipped
    [0.5]
    >>> out["target"][0, :, 0, 0].tolist()                 # x reversed: voxel x=1 first
    [4.0, 0.0]
"""

from __future__ import annotations

from typing import Callable, Iterable, Mapping, Sequence

import torch

from medgen.core.errors import UsageError


def volume_keys(item: Mapping) -> list[str]:
    """Names of the volumes of ``item``: its ``[C, X, Y, Z]`` tensor values, in item order."""
    return [k for k, v in item.items() if isinstance(v, torch.Tensor) and v.ndim == 4]


def _chosen(item: Mapping, include: Sequence[str] | None, who: str) -> list[str]:
    keys = volume_keys(item)
    if include is None:
        return keys
    missing = [k for k in include if k not in keys]
    if missing:
        raise UsageError(f"{who}: item has no volume {', '.join(map(repr, missing))} (volumes: {', '.join(keys)})")
    return list(include)


class OnKeys:
    """Apply ``fn`` (tensor ``[1, S, S, S]`` → tensor) to the volumes ``include`` of an item.

    include: volume names to transform; None: every volume of the item.
    keep: ``{name: new_name}``: before transforming, store a copy of volume ``name``
        as ``new_name`` (it is not transformed); ``new_name`` must not exist yet.
    ``fn`` is called once per included volume: a random ``fn`` draws anew for each
    (independent noise per volume); to change all volumes alike, draw once per item
    as :class:`RandomFlip` does. Returns a new dict; the input item is not changed
    (unless ``fn`` changes its argument in place).
    """

    def __init__(
        self,
        fn: Callable[[torch.Tensor], torch.Tensor],
        include: Iterable[str] | None = None,
        keep: Mapping[str, str] | None = None,
    ) -> None:
        self.fn = fn
        self.include = None if include is None else list(include)
        self.keep = dict(keep or {})

    def __call__(self, item: Mapping) -> dict:
        out = dict(item)
        chosen = _chosen(item, self.include, "OnKeys include")
        _chosen(item, list(self.keep), "OnKeys keep")
        for name, new_name in self.keep.items():
            if new_name in out:
                raise UsageError(
                    f"OnKeys keep: item already has {new_name!r}; choose another name for the copy of {name!r}"
                )
            out[new_name] = item[name].clone()
        for key in chosen:
            out[key] = self.fn(item[key])
        return out

    def __repr__(self) -> str:
        return f"OnKeys({getattr(self.fn, '__name__', self.fn)!r}, include={self.include!r}, keep={self.keep!r})"


class RandomFlip:
    """Mirror the volumes of an item along chosen axes, each with probability ``p``, alike for all volumes.

    axes: spatial axes of the RAS+ volumes (``volume[x, y, z]``): 0 = x (left ↔ right),
        1 = y (posterior ↔ anterior), 2 = z (inferior ↔ superior). Heads and thoraxes are
        roughly left-right symmetric, so ``(0,)`` gives plausible anatomy (with left and
        right swapped); flipping y or z gives upside-down or back-to-front bodies.
    p: probability that an axis is flipped, drawn independently per axis and once per item.
    include: volumes to flip; None: all of them (what keeps a pair aligned).
    generator: a ``torch.Generator`` for reproducible draws; None uses torch's global
        generator, which DataLoader seeds differently in each worker.
    """

    def __init__(
        self,
        axes: Sequence[int] = (0,),
        p: float = 0.5,
        include: Iterable[str] | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        if not all(a in (0, 1, 2) for a in axes):
            raise UsageError(f"RandomFlip axes {tuple(axes)}: spatial axes are 0 (x), 1 (y), 2 (z)")
        if not 0.0 <= p <= 1.0:
            raise UsageError(f"RandomFlip p={p}: need a probability in [0, 1]")
        self.axes = tuple(axes)
        self.p = float(p)
        self.include = None if include is None else list(include)
        self.generator = generator

    def __call__(self, item: Mapping) -> dict:
        out = dict(item)
        draws = torch.rand(len(self.axes), generator=self.generator)
        dims = [1 + a for a, u in zip(self.axes, draws.tolist()) if u < self.p]  # dim 0 is the channel
        if dims:
            for key in _chosen(item, self.include, "RandomFlip include"):
                out[key] = item[key].flip(dims)
        return out

    def __repr__(self) -> str:
        return f"RandomFlip(axes={self.axes}, p={self.p}, include={self.include!r})"


class Compose:
    """Apply transforms in order: ``Compose([a, b])(item) == b(a(item))``."""

    def __init__(self, transforms: Iterable[Callable[[dict], dict]]) -> None:
        self.transforms = list(transforms)

    def __call__(self, item: Mapping) -> dict:
        out = dict(item)
        for t in self.transforms:
            out = t(out)
        return out

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"
