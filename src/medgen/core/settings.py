"""Settings dataclasses read from dictionaries (``config.yaml``, presets, command-line options), one rule.

Unknown keys are a usage error naming them and the known ones, so a misspelt setting never
passes silently.

Example::

    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Opt:
    ...     lr: float = 1e-3
    >>> from_dict(Opt, {"lr": 0.01}, "training setting")
    Opt(lr=0.01)
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from medgen.core.errors import UsageError

T = TypeVar("T")


def from_dict(cls: type[T], d: dict[str, Any], what: str) -> T:
    """``cls(**d)`` for a dataclass ``cls``; UsageError naming unknown keys (``what``: e.g. "HA-GAN model setting").

    Lists (as YAML stores them) become tuples for fields whose default is a tuple (e.g. Adam's betas),
    and numbers written as text (YAML reads ``5e-4`` as a string) become numbers for numeric fields.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - set(fields))
    if unknown:
        raise UsageError(f"unknown {what}(s): {', '.join(unknown)} (known: {', '.join(sorted(fields))})")
    values = dict(d)
    for name, value in values.items():
        default = fields[name].default
        if isinstance(default, tuple) and isinstance(value, list):
            values[name] = tuple(value)
        elif isinstance(default, (int, float)) and not isinstance(default, bool) and isinstance(value, str):
            try:  # YAML reads 5e-4 (no dot) as a string
                values[name] = type(default)(float(value)) if isinstance(default, float) else int(value)
            except ValueError:
                raise UsageError(f"{what} {name}={value!r}: expected a number") from None
    return cls(**values)


def tuples_as_lists(d: dict[str, Any]) -> dict[str, Any]:
    """``d`` with tuple values as lists (how YAML and JSON store them)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}
