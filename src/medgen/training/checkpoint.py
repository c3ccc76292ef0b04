"""Training checkpoints: safe to load, written atomically, the last few kept.

Layout::

    RUN/checkpoints/iter-000500/weights.safetensors   G, D, EH, EG, G_ema weights
    RUN/checkpoints/iter-000500/state.pt              optimisers, iteration, RNG and sampler states
    RUN/checkpoints/latest                            name of the newest complete checkpoint

``iter-000500`` holds the state after 500 completed iterations. Weights are
stored in safetensors (keys ``"<module>.<state_dict key>"``); ``state.pt``
contains only tensors, numbers, strings, lists and dicts and is read with
``torch.load(..., weights_only=True)``, so loading a checkpoint never
unpickles arbitrary code.

Atomicity: a checkpoint is written into a hidden temporary folder next to the
others and renamed to ``iter-NNNNNN`` when complete (a rename within one file
system is atomic), then ``latest`` is rewritten atomically. A crash at any
point leaves the previous checkpoints and ``latest`` untouched; leftover
temporary folders are removed by the next save. (``medgen.core.fileio`` does the
same for single files; a checkpoint is a folder, hence this module.)
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from medgen.core.errors import InputError
from medgen.core.fileio import atomic_write_text

CHECKPOINT_DIR = "checkpoints"
WEIGHTS_NAME = "weights.safetensors"
STATE_NAME = "state.pt"
LATEST_NAME = "latest"
_NAME_RE = re.compile(r"^iter-(\d{6,})$")
_TMP_PREFIX = ".tmp-"


def checkpoint_name(iteration: int) -> str:
    return f"iter-{iteration:06d}"


def checkpoint_iteration(path: str | os.PathLike) -> int:
    m = _NAME_RE.match(Path(path).name)
    if not m:
        raise InputError(f"{path}: not a checkpoint folder name (expected iter-NNNNNN)")
    return int(m.group(1))


def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(run_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    found = [
        p
        for p in root.iterdir()
        if p.is_dir() and _NAME_RE.match(p.name) and (p / WEIGHTS_NAME).is_file() and (p / STATE_NAME).is_file()
    ]
    return sorted(found, key=checkpoint_iteration)


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The checkpoint named by ``latest`` (or, failing that, the newest complete one)."""
    root = Path(run_dir) / CHECKPOINT_DIR
    pointer = root / LATEST_NAME
    if pointer.is_file():
        cand = root / pointer.read_text(encoding="utf-8").strip()
        if _NAME_RE.match(cand.name) and (cand / WEIGHTS_NAME).is_file() and (cand / STATE_NAME).is_file():
            return cand
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """Accept a checkpoint folder or a run folder (→ its latest checkpoint)."""
    path = Path(path)
    if (path / WEIGHTS_NAME).is_file():
        return path
    if path.is_dir():
        ckpt = latest_checkpoint(path)
        if ckpt is not None:
            return ckpt
        raise InputError(f"{path}: no complete checkpoint found (expected {CHECKPOINT_DIR}/iter-NNNNNN/)")
    raise InputError(f"{path}: no such checkpoint or run folder")


def _flatten(weights: dict[str, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    flat: dict[str, torch.Tensor] = {}
    for module, sd in weights.items():
        for key, t in sd.items():
            # safetensors wants contiguous CPU tensors that share no storage.
            flat[f"{module}.{key}"] = t.detach().to("cpu").contiguous().clone()
    return flat


def save_checkpoint(
    run_dir: str | os.PathLike,
    iteration: int,
    weights: dict[str, dict[str, torch.Tensor]],
    state: dict[str, Any],
    keep: int = 3,
) -> Path:
    """Write ``iter-<iteration>`` atomically, point ``latest`` at it, keep the newest ``keep``.

    ``weights`` maps a module name (``"G"``, ``"D"``, ...) to its state_dict;
    ``state`` must hold only weights_only-loadable values (tensors, numbers,
    strings, lists, tuples, dicts).
    """
    root = Path(run_dir) / CHECKPOINT_DIR
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(_TMP_PREFIX + "*"):
        shutil.rmtree(stale, ignore_errors=True)
    final = root / checkpoint_name(iteration)
    tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{final.name}.", dir=root))
    try:
        save_file(_flatten(weights), str(tmp / WEIGHTS_NAME), metadata={"iteration": str(iteration)})
        torch.save(state, tmp / STATE_NAME)
        for name in (WEIGHTS_NAME, STATE_NAME):
            with open(tmp / name, "rb") as fh:
                os.fsync(fh.fileno())
        if final.exists():  # re-saving the same iteration (e.g. after a resume): swap
            old = root / f"{_TMP_PREFIX}old-{final.name}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_text(root / LATEST_NAME, final.name + "\n")
    if keep > 0:
        for old in list_checkpoints(run_dir)[:-keep]:
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
    return final


def load_weights(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict[str, dict[str, torch.Tensor]]:
    """Weights of a checkpoint (folder or run folder) as ``{module: state_dict}``."""
    ckpt = resolve_checkpoint(path)
    try:
        flat = load_file(str(ckpt / WEIGHTS_NAME), device=str(device))
    except Exception as exc:  # safetensors raises its own error types
        raise InputError(f"{ckpt / WEIGHTS_NAME}: unreadable weights ({exc})") from None
    out: dict[str, dict[str, torch.Tensor]] = {}
    for key, t in flat.items():
        module, _, rest = key.partition(".")
        out.setdefault(module, {})[rest] = t
    return out


def load_state(path: str | os.PathLike) -> dict[str, Any]:
    """Training state (optimisers, iteration, RNG states); never unpickles code."""
    ckpt = resolve_checkpoint(path)
    try:
        return torch.load(ckpt / STATE_NAME, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(f"{ckpt / STATE_NAME}: unreadable training state ({exc.__class__.__name__})") from None
