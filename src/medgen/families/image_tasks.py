"""Image-to-image tasks: which named volumes of a paired data set a model reads and which one it predicts.

A paired data set (``medgen degrade``, or one's own with :func:`medgen.data.dataset.add_volume`) holds the
clean ``image`` and voxel-aligned condition volumes. A task fixes the defaults of an image-to-image family
(``medgen train --family unet --task denoise``): the input volumes, stacked as channels; the target; and
whether the network predicts a correction added to the first input (``residual``: the input is already
the target up to a degradation) or the target itself (the input is another kind of image).

======== ============================ =================================== ========
task     input volumes                made by                             residual
======== ============================ =================================== ========
sr       degraded                     ``medgen degrade --kind slices``    yes
denoise  degraded                     ``--kind lowdose`` / ``noise``      yes
kspace   degraded                     ``--kind kspace``                   yes
restore  degraded                     ``--kind motion|bias|ghosting``     yes
inpaint  degraded, mask               ``--kind inpaint``                  yes
outpaint degraded, mask               ``--kind outpaint``                 yes
xray2ct  drr_pa, drr_lateral          ``--kind drr``                      no
seg2image tissue                      a label map (the phantoms' ``tissue``) no
translate image → target ``t2``        true pairs (the brain phantoms' T2)  no
======== ============================ =================================== ========

For ``inpaint`` and ``outpaint`` the output is the first input wherever ``mask`` is 0 (``keep_known``): the
known voxels come back unchanged and only the masked ones are generated, so the pixel loss is the masked
voxels' alone. (Without it, an L1 loss over the whole volume is dominated by the 90 %+ of voxels whose
correction must be zero, and a residual UNet trained with it stays at the mean-filled input.)

Label-map inputs (``seg2image``) enter the network as their class numbers in one float channel (not one-hot):
simple and enough for a few classes, but the classes' numbering then carries an order it does not mean.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from medgen.core.errors import UsageError


@dataclass(frozen=True)
class Task:
    inputs: tuple[str, ...]
    target: str = "image"
    residual: bool = True
    made_by: str = ""
    keep_known: bool = False


TASKS: dict[str, Task] = {
    "sr": Task(("degraded",), made_by="slices"),
    "denoise": Task(("degraded",), made_by="lowdose, noise"),
    "kspace": Task(("degraded",), made_by="kspace"),
    "restore": Task(("degraded",), made_by="motion, bias, ghosting"),
    "inpaint": Task(("degraded", "mask"), made_by="inpaint", keep_known=True),
    "outpaint": Task(("degraded", "mask"), made_by="outpaint", keep_known=True),
    "xray2ct": Task(("drr_pa", "drr_lateral"), residual=False, made_by="drr"),
    "seg2image": Task(("tissue",), residual=False, made_by="a tissue label map (medgen phantoms, --volume NAME:label)"),
    "translate": Task(("image",), target="t2", residual=False, made_by="true pairs (brain phantoms' t2)"),
}


def get(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise UsageError(f"--task {name}: choose one of {', '.join(TASKS)}") from None


def io_fields(task: str | None = None, inputs: Any = None, target: str | None = None) -> dict[str, Any]:
    """``task`` (default ``denoise``), its input volumes and target, with ``inputs`` (a sequence or comma-separated
    names) and ``target`` given explicitly overriding the task's: the fields an image-to-image config stores."""
    name = task or "denoise"
    spec = get(name)
    if inputs is None:
        names = spec.inputs
    else:
        names = tuple(n.strip() for n in inputs.split(",")) if isinstance(inputs, str) else tuple(inputs)
    return {"task": name, "inputs": names, "target": spec.target if target is None else target}


def check_io(task: str, inputs: tuple[str, ...], target: str) -> None:
    """UsageError (one line) for an unknown task, no or repeated input volumes, or a target that is also an input."""
    if task not in TASKS:
        raise UsageError(f"task {task!r}: choose one of {', '.join(TASKS)}")
    if not inputs or len(set(inputs)) != len(inputs) or not all(isinstance(n, str) and n for n in inputs):
        raise UsageError(f"inputs {list(inputs)}: need one or more distinct volume names")
    if target in inputs:
        raise UsageError(f"target {target!r} is also an input")


def input_channels(names: tuple[str, ...], inputs: Any) -> np.ndarray:
    """A model's ``inputs`` as ``[len(names), X, Y, Z]`` float32: a dict by volume name, one ``(X, Y, Z)`` array
    for a one-input model, or an array/sequence of channels in ``names`` order. UsageError (one line) for a
    missing volume or mismatched shapes."""
    if isinstance(inputs, Mapping):
        missing = [n for n in names if n not in inputs]
        if missing:
            raise UsageError(f"this model reads volumes {', '.join(names)}; missing {', '.join(missing)}")
        arrays = [np.asarray(inputs[n], dtype=np.float32) for n in names]
    else:
        arr = np.asarray(inputs, dtype=np.float32)
        arrays = [arr] if arr.ndim == 3 else list(arr)
    if len(arrays) != len(names) or any(a.ndim != 3 or a.shape != arrays[0].shape for a in arrays):
        shapes = [a.shape for a in arrays]
        raise UsageError(f"need {len(names)} volume(s) ({', '.join(names)}) of one (X, Y, Z) shape, got {shapes}")
    return np.stack(arrays)
