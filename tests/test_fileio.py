"""Atomic writes: complete file or nothing, ordinary permissions."""

import os
import stat

import numpy as np
import pytest

from medgen.core.fileio import atomic_path, atomic_save_npy, atomic_write_json, atomic_write_text


def test_failed_write_leaves_previous_file(tmp_path):
    target = tmp_path / "a.txt"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half-writ")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]  # no temporary left behind


def test_permissions_follow_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_json(tmp_path / "x.json", {"a": 1})
        atomic_save_npy(tmp_path / "x.npy", np.arange(3))
    finally:
        os.umask(old)
    for name in ("x.json", "x.npy"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644
    np.testing.assert_array_equal(np.load(tmp_path / "x.npy"), np.arange(3))


def test_suffix_kept_for_format_detection(tmp_path):
    seen = []
    with atomic_path(tmp_path / "vol.nii.gz") as tmp:
        seen.append(tmp.name)
        tmp.write_bytes(b"x")
    assert seen[0].endswith(".nii.gz")
    assert (tmp_path / "vol.nii.gz").read_bytes() == b"x"
