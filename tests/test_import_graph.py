"""The package's layering: no import cycles between its top-level parts, and no upward import.

The graph is built statically from every ``import`` statement in ``src/medgen``, including
those inside functions (a lazy import is still a dependency). A top-level part is a
sub-package (``medgen.training``) or a top-level module (``medgen.api``); ``medgen``
itself (``__init__``) is the top of the stack, so ``from medgen import x`` below it counts
as an upward import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import medgen

ROOT = Path(medgen.__file__).parent

# Lowest first; a part may import only parts listed before it (docs/architecture.md).
LAYERS = [
    "core",
    "data",
    "viz",
    "metrics",
    "training",
    "inference",
    "families",
    "report",
    "experiments",
    "api",
    "commands",
    "cli",
    "__main__",
    "__init__",
]


def part_of(path: Path) -> str:
    rel = path.relative_to(ROOT)
    return rel.parts[0].removesuffix(".py")


def imported_modules(path: Path) -> list[str]:
    """Absolute names of every medgen module imported in ``path`` (top level and inside functions)."""
    rel = path.relative_to(ROOT).with_suffix("")
    package = ["medgen", *rel.parts[:-1]] if rel.name != "__init__" else ["medgen", *rel.parts[:-1]]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if name == "medgen":  # from medgen import x: x may be a part or an attribute of __init__
                subs = [a.name for a in node.names]
                out += [f"medgen.{s}" if (ROOT / s).is_dir() or (ROOT / f"{s}.py").is_file() else "medgen" for s in subs]
            else:
                out.append(name)
    return [m for m in out if m == "medgen" or m.startswith("medgen.")]


def import_graph() -> dict[str, dict[str, set[str]]]:
    """part → imported part → files (relative to the package) that import it."""
    graph: dict[str, dict[str, set[str]]] = {}
    for path in sorted(ROOT.rglob("*.py")):
        src = part_of(path)
        for mod in imported_modules(path):
            dst = mod.split(".")[1] if "." in mod else "__init__"
            if dst != src:
                graph.setdefault(src, {}).setdefault(dst, set()).add(str(path.relative_to(ROOT)))
    return graph


def find_cycle(graph: dict[str, dict[str, set[str]]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, {})):
            if state.get(m) == 1:
                return stack[stack.index(m) :] + [m]
            if m not in state:
                found = visit(m)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return None


def test_graph_detects_a_planted_cycle():
    graph = {"a": {"b": {"a.py"}}, "b": {"c": {"b.py"}}, "c": {"a": {"c.py"}}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b": {"a.py"}}, "b": {}}) is None


def test_relative_and_lazy_imports_are_seen(tmp_path, monkeypatch):
    pkg = tmp_path / "medgen"
    (pkg / "metrics").mkdir(parents=True)
    (pkg / "api.py").write_text("")
    (pkg / "metrics" / "x.py").write_text("def f():\n    from ..api import load\n    import medgen.training.loop\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", pkg)
    assert sorted(imported_modules(pkg / "metrics" / "x.py")) == ["medgen.api", "medgen.training.loop"]


def test_every_part_has_a_layer():
    parts = {part_of(p) for p in ROOT.rglob("*.py")}
    assert parts <= set(LAYERS), f"parts without a layer in LAYERS: {sorted(parts - set(LAYERS))}"


def test_no_cycles_between_top_level_parts():
    graph = import_graph()
    cycle = find_cycle(graph)
    if cycle:
        where = "; ".join(f"{a} → {b} in {sorted(graph[a][b])}" for a, b in zip(cycle, cycle[1:]))
        pytest.fail(f"import cycle {' → '.join(cycle)}: {where}")


def test_no_part_imports_a_higher_layer():
    rank = {name: i for i, name in enumerate(LAYERS)}
    upward = [
        f"{src} → {dst} ({', '.join(sorted(files))})"
        for src, deps in import_graph().items()
        for dst, files in deps.items()
        if rank.get(dst, -1) > rank.get(src, len(LAYERS))
    ]
    assert not upward, "upward imports:\n" + "\n".join(upward)
