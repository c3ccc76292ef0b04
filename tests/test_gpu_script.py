"""``benchmarks/gpu/run.sh --dry-run``: the GPU check's every step, rehearsed on the CPU at toy sizes.

The GPU machine is lent rarely and briefly; this makes sure the first GPU minute is not spent on a
typo. The dry run hides SimpleITK and nilearn, which the GPU image lacks.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_dry_run_writes_every_result(tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1", MEDGEN_SITE=str(tmp_path / "site"))
    # about 11 minutes alone on 2 CPU cores (its own pytest -m cuda is 6 of them); the limit leaves room for the
    # other test worker sharing the cores, and still stops a hang
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu" / "run.sh"), "--dry-run", str(out)],
                          capture_output=True, text=True, env=env, timeout=1800)
    log = (out / "log.txt").read_text() if (out / "log.txt").exists() else proc.stdout
    assert proc.returncode == 0, log[-4000:]
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 8, files  # what comes back from the GPU machine
    assert {"log.txt", "summary.md", "pytest.txt"} <= set(files)
    assert any(f.startswith("cpu-") and f.endswith(".md") for f in files)  # the HA-GAN sweep
    assert any(f.startswith("families-cost-cpu-") and f.endswith(".json") for f in files)
    assert "passed" in (out / "pytest.txt").read_text() and "failed" not in (out / "pytest.txt").read_text()
    for step in ("pytest", "sweep", "families"):
        assert f"step {step}: ok" in log, step
    summary = (out / "summary.md").read_text()
    assert "| hagan | paper | 32³ |" in summary and "| ddpm | small | 32³ |" in summary
