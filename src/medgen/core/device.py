"""Device selection, the one rule every command and library call uses."""

from __future__ import annotations

import torch

from medgen.core.errors import UsageError


def resolve_device(request: str | torch.device = "auto") -> torch.device:
    """``auto`` → CUDA if available else CPU; ``cuda`` without a GPU is a usage error.

    Accepts ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or a :class:`torch.device`.
    """
    if isinstance(request, torch.device):
        request = str(request)
    if request == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(request)
    except (RuntimeError, TypeError):
        raise UsageError(f"--device {request}: expected auto, cpu or cuda") from None
    if dev.type not in ("cpu", "cuda"):
        raise UsageError(f"--device {request}: expected auto, cpu or cuda")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA GPU is available (use --device cpu)")
    return dev
