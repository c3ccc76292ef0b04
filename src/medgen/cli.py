"""The ``medgen`` command: one entry point, one subcommand per module in ``medgen.commands``.

Each command module defines ``add_parser(subparsers)`` (which registers its
options and sets ``func``) and a ``run(args) -> int`` returning the exit code.
Command modules import heavy libraries (torch, SimpleITK, ...) inside ``run`` so
that ``medgen --help`` stays fast. Exit codes are documented in
:mod:`medgen.core.errors`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from medgen.core.version import __version__
from medgen.core.errors import EXIT_INTERRUPTED, EXIT_PARTIAL, MedgenError

# Order is the order shown by ``medgen --help``.
COMMAND_MODULES: tuple[str, ...] = (
    "demo",
    "phantoms",
    "preprocess",
    "degrade",
    "unpair",
    "train",
    "train_classifier",
    "model_info",
    "generate",
    "encode",
    "translate",
    "segment",
    "anomaly",
    "anomaly_ensemble",
    "register",
    "explain",
    "evaluate",
    "report",
    "experiment",
    "bench",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medgen",
        description="Generative models of 3D medical images (CT, MRI).",
        epilog="Exit codes: 0 success, 1 partly failed, 2 usage or input error, 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"medgen {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"medgen.commands.{name}")
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's own flush at exit
    except MedgenError as exc:
        print(f"medgen {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"medgen {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader of the output went away (``medgen ... | head``): no traceback
        _silence_stdout()
        return EXIT_PARTIAL
    return int(code or 0)


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that flushing it at exit does not raise again (the Python docs' recipe
    for SIGPIPE)."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no file descriptor behind stdout (e.g. captured in tests)
        pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
