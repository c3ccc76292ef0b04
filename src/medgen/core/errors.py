"""User-facing errors and the documented exit codes of the ``medgen`` command.

Exit codes
----------
0  success
1  the command ran but part of the work failed (e.g. some input files could not
   be read; the good ones are still written), training stopped on a
   diverged (NaN/inf) loss, or the reader of the output went away
   (``medgen ... | head``; quietly, without a traceback)
2  usage error: bad option, missing or unreadable input, nothing to do
130 interrupted (Ctrl-C); long jobs save their state first
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_PARTIAL = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class MedgenError(Exception):
    """An error the user can fix; printed as one line without a traceback."""

    exit_code: int = EXIT_USAGE

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(MedgenError):
    """Bad option or argument combination (exit code 2)."""

    exit_code = EXIT_USAGE


class InputError(MedgenError):
    """An input file or folder is missing, unreadable or of the wrong kind (exit code 2)."""

    exit_code = EXIT_USAGE


class RunFailed(MedgenError):
    """The job ran but could not finish correctly, e.g. a diverged loss (exit code 1)."""

    exit_code = EXIT_PARTIAL
