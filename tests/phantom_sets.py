"""Helpers of the phantom-set tests: run ``medgen phantoms`` in-process, read what it wrote, fingerprint a set."""

from __future__ import annotations

import argparse
import csv
import hashlib
from pathlib import Path

import nibabel as nib
import numpy as np


def run_phantoms(*argv: str) -> int:
    """``medgen phantoms ARGV`` through its own parser (errors propagate instead of becoming exit codes)."""
    from medgen.commands import phantoms

    parser = argparse.ArgumentParser()
    phantoms.add_parser(parser.add_subparsers())
    args = parser.parse_args(["phantoms", *argv])
    return args.func(args)


def read_manifest(folder: Path) -> list[dict]:
    with open(folder / "manifest.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def load(path: Path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).dataobj)


def digests(folder: Path) -> dict[str, str]:
    """SHA-256 of every NIfTI file under ``folder``, by relative path."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*.nii.gz"))}
