"""Measurements of this process and machine: peak memory, CPU model, versions, isolated runs.

Used by the training loop's ``memory_mb`` column and by every benchmark, so that
numbers are reported with the machine and versions they were measured on.
:func:`run_module` runs a measurement in a fresh Python process, so that its peak
memory belongs to that configuration alone.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from medgen.core.errors import RunFailed

from medgen.core.version import __version__


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or the platform's description)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: str) -> dict[str, Any]:
    """Versions and hardware: what a reader needs to compare numbers between machines."""
    import torch

    info = {
        "medgen": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "device": device,
        "device_name": cpu_model(),
    }
    if device.startswith("cuda"):
        info["device_name"] = torch.cuda.get_device_name(torch.device(device))
        info["cuda"] = torch.version.cuda
    return info


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB.

    Linux: ``VmHWM`` of /proc/self/status, the high-water mark of this program's
    own memory. Not ``getrusage(...).ru_maxrss``: on Linux a child process
    inherits its parent's high-water mark at fork and keeps it across exec, so
    a small configuration measured from a large parent would report the
    parent's size. Elsewhere ``ru_maxrss`` is the fallback.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024


def sync(device: str) -> None:
    """Wait for queued CUDA work (a no-op on the CPU), so a timer measures finished work."""
    if str(device).startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def rss_mb(pid: int) -> float | None:
    """Current resident set size of process ``pid`` in MiB (None where /proc does not tell)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _run_watched(cmd: list[str], timeout: float | None, max_rss_mb: float, what: str) -> subprocess.CompletedProcess:
    """``subprocess.run`` that also stops the process once its resident memory passes ``max_rss_mb``."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True)
        t0 = time.monotonic()
        try:
            while proc.poll() is None:
                rss = rss_mb(proc.pid)
                if rss is not None and rss > max_rss_mb:
                    raise RunFailed(f"{what}: stopped at {rss:.0f} MiB resident memory, over the limit of "
                                    f"{max_rss_mb:.0f} MiB")
                if timeout is not None and time.monotonic() - t0 > timeout:
                    raise RunFailed(f"{what}: took longer than {timeout:.0f} s")
                time.sleep(0.1)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(cmd, proc.returncode, out.read(), err.read())


def run_module(module: str, spec: dict[str, Any], what: str, timeout: float | None = None,
               max_rss_mb: float | None = None) -> dict[str, Any]:
    """``python -m MODULE '<spec as JSON>'`` in a fresh process; returns the JSON of its last stdout line.

    ``timeout``: seconds before the process is stopped. ``max_rss_mb``: stop it as soon as its
    resident memory passes this many MiB (checked every 0.1 s, Linux; None: no limit), so a
    configuration too large for a shared machine fails alone. Raises RunFailed (one line,
    starting with ``what``) if the process fails, e.g. runs out of memory.
    """
    cmd = [sys.executable, "-m", module, json.dumps(spec)]
    if max_rss_mb is not None:
        proc = _run_watched(cmd, timeout, max_rss_mb, what)
    else:
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise RunFailed(f"{what}: took longer than {timeout:.0f} s") from None
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        why = lines[-1] if lines else f"exit code {proc.returncode}"
        if proc.returncode < 0:
            why = f"killed by signal {-proc.returncode} (out of memory?)"
        raise RunFailed(f"{what}: {why}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
