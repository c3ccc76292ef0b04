"""Tables, written once: CSV text and atomic CSV files, Markdown tables, number formatting.

Every CSV medgen writes (manifests, ``metrics.csv``, ``samples.csv``, latents, experiment
tables) goes through :func:`csv_text` / :func:`write_csv`: a header, ``\\n`` line ends, empty
cells for missing or None values, and keys outside ``columns`` left out. Files are
replaced atomically (never half-written).

Example::

    >>> print(csv_text([{"id": "a", "x": 1.5}, {"id": "b"}]), end="")
    id,x
    a,1.5
    b,
    >>> print(markdown_table([{"id": "a", "x": 1 / 3}], ["id", "x"], digits=3), end="")
    | id | x |
    |---|---|
    | a | 0.333 |
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from medgen.core.fileio import atomic_write_text


def columns_of(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """The union of the rows' keys, in the order they are first seen."""
    out: list[str] = []
    for row in rows:
        out += [k for k in row if k not in out]
    return out


def csv_text(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """CSV of ``rows`` (dicts) with a header: ``columns`` (default: :func:`columns_of` the rows)."""
    columns = list(columns) if columns is not None else columns_of(rows)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: ("" if row.get(c) is None else row.get(c)) for c in columns})
    return buf.getvalue()


def csv_row_text(row: Mapping[str, Any], columns: Sequence[str]) -> str:
    """One CSV line of ``row`` in ``columns`` order (for appending to a file :func:`write_csv` began)."""
    buf = io.StringIO()
    csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n").writerow(
        {c: ("" if row.get(c) is None else row.get(c)) for c in columns}
    )
    return buf.getvalue()


def write_csv(path: str | os.PathLike, rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> Path:
    """Write :func:`csv_text` of ``rows`` to ``path`` atomically; returns the path."""
    path = Path(path)
    atomic_write_text(path, csv_text(rows, columns))
    return path


def format_cell(value: Any, digits: int = 4) -> str:
    """A table cell: ``digits`` significant digits for floats (4 beyond 1e5), ``nan``, empty for None."""
    if value is None:
        return ""
    if isinstance(value, float):
        if value != value:  # NaN
            return "nan"
        return f"{value:.{digits}g}" if abs(value) < 1e5 else f"{value:.4g}"
    return str(value)


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], digits: int = 4) -> str:
    """A GitHub-flavoured Markdown table of ``rows`` (dicts) in ``columns`` order."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(format_cell(row.get(c), digits).replace("|", "\\|") for c in columns) + " |")
    return "\n".join(lines) + "\n"
