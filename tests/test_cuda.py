"""Accelerator checks: what must hold on a GPU (``pytest -m cuda``, the first step of ``benchmarks/gpu/run.sh``).

The device comes from ``MEDGEN_TEST_DEVICE`` (default ``cuda``; these tests skip when it is not
available). ``benchmarks/gpu/run.sh --dry-run`` runs them with ``MEDGEN_TEST_DEVICE=cpu`` so that
every line is exercised before GPU minutes are spent; CI runs that dry run too.

Tolerances: cuDNN may pick non-deterministic and TF32 algorithms, so results on CUDA are compared
within tolerances, not bit for bit (the CPU tests elsewhere are bitwise).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from medgen.families import registry
from medgen.training import checkpoint as ckpt_io
from medgen.training.runconfig import RunConfig
from tiny_families import tiny_model
from toy_volumes import make_dataset

DEVICE = os.environ.get("MEDGEN_TEST_DEVICE", "cuda")
pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(DEVICE.startswith("cuda") and not torch.cuda.is_available(),
                       reason="needs a CUDA GPU (set MEDGEN_TEST_DEVICE=cpu to run these checks on the CPU)"),
]
S = 32


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("data"), n=4, size=S, degraded=True, labels=True)


def cfg(family: str, data, iters: int, precision: str = "auto", **kw) -> RunConfig:
    fam = registry.get(family)
    model = tiny_model(family)
    labelled = fam.uses_labels(fam.model_from_dict(model))
    base = dict(data=str(data), model=model, family=family, preset="tiny", iters=iters, batch=2, device=DEVICE,
                precision=precision, log_every=1, sample_every=0, ckpt_every=1000, ema_decay=0.9,
                split_fractions=(1.0, 0.0, 0.0), label_column="label" if labelled else None)
    base.update(kw)
    return RunConfig(**base)


def losses(run) -> list[dict[str, float]]:
    import csv

    with open(run / "metrics.csv", newline="") as fh:
        return [{k: float(v) for k, v in r.items()} for r in csv.DictReader(fh)]


@pytest.mark.parametrize("family", sorted(registry.FAMILIES))
def test_bf16_training_is_finite_and_close_to_fp32(family, data, tmp_path):
    bf16 = registry.train(cfg(family, data, 2, precision="bf16"), tmp_path / "bf16", progress=False)
    fp32 = registry.train(cfg(family, data, 2, precision="fp32"), tmp_path / "fp32", progress=False)
    assert bf16.iteration == fp32.iteration == 2
    a, b = losses(tmp_path / "bf16"), losses(tmp_path / "fp32")
    for name in (k for k in a[0] if k.startswith("loss_")):
        assert math.isfinite(a[0][name]) and math.isfinite(a[-1][name])
        # the first iteration starts from identical weights and data: bf16 rounding only
        assert abs(a[0][name] - b[0][name]) <= 0.05 * abs(b[0][name]) + 0.02, (name, a[0][name], b[0][name])
    assert float(a[-1]["memory_mb"]) > 0
    for sd in bf16.models.weights().values():
        assert all(torch.isfinite(t).all() for t in sd.values())


@pytest.mark.parametrize("family", sorted(registry.FAMILIES))
def test_resume_on_the_device_matches_an_uninterrupted_run(family, data, tmp_path):
    full = registry.train(cfg(family, data, 4, precision="fp32"), tmp_path / "full", progress=False)
    registry.train(cfg(family, data, 2, precision="fp32"), tmp_path / "split", progress=False)
    resumed = registry.train(cfg(family, data, 4, precision="fp32"), tmp_path / "split", resume=True, progress=False)
    assert ckpt_io.load_state(tmp_path / "split")["iteration"] == 4
    exact = DEVICE == "cpu"
    for module, sd in full.models.weights().items():
        for key, value in sd.items():
            other = resumed.models.weights()[module][key]
            if exact:
                assert torch.equal(value, other), f"{module}.{key}"
            else:
                torch.testing.assert_close(other, value, rtol=1e-3, atol=1e-4, msg=f"{family}: {module}.{key}")


def test_chunked_generation_equals_unchunked_on_the_device():
    import medgen

    model = medgen.build("tiny", size=64, seed=0, device=DEVICE, encoder=False)
    whole = model.generate(2, seed=3)
    chunked = model.generate(2, seed=3, chunk=2)
    tol = 1e-5 if DEVICE == "cpu" else 2e-3  # TF32 convolutions on CUDA
    assert np.abs(whole - chunked).max() <= tol
    cpu = medgen.build("tiny", size=64, seed=0, device="cpu", encoder=False).generate(1, seed=3)
    assert np.abs(cpu[0] - whole[0]).max() <= 2e-3


def test_ddpm_samples_on_the_device_like_on_the_cpu(data, tmp_path):
    import medgen

    run = tmp_path / "run"
    registry.train(cfg("ddpm", data, 2, precision="fp32"), run, progress=False)
    here = medgen.load(run, device=DEVICE).generate(1, labels=1, steps=3)
    cpu = medgen.load(run, device="cpu").generate(1, labels=1, steps=3)
    assert here.shape == (1, S, S, S) and np.isfinite(here).all()
    assert np.abs(here - cpu).max() <= (1e-5 if DEVICE == "cpu" else 5e-2)


NCCL_WORKER = textwrap.dedent(
    """
    import os, sys
    import torch
    from safetensors.torch import save_file
    from medgen.families import registry
    from medgen.families.hagan import get_preset
    from medgen.training.runconfig import RunConfig

    data, run, out = sys.argv[1:4]
    cfg = RunConfig(data=data, model=get_preset("tiny", 32).to_dict(), preset="tiny", iters=3, batch=4, device="cuda",
                    log_every=1, sample_every=0, ckpt_every=1000, split_fractions=(1.0, 0.0, 0.0))
    result = registry.train(cfg, run, progress=False)
    flat = {f"{m}.{k}": v.detach().cpu().contiguous() for m, net in result.models.nets.items()
            for k, v in net.named_parameters()}
    save_file(flat, os.path.join(out, f"rank{os.environ['RANK']}.safetensors"))
    """
)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="NCCL check needs 2 GPUs (this machine has fewer)")
def test_two_nccl_processes_end_with_identical_weights(data, tmp_path):
    from safetensors.torch import load_file

    (tmp_path / "out").mkdir()
    script = tmp_path / "worker.py"
    script.write_text(NCCL_WORKER)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
           str(data), str(tmp_path / "run"), str(tmp_path / "out")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = load_file(str(tmp_path / "out" / "rank0.safetensors"))
    r1 = load_file(str(tmp_path / "out" / "rank1.safetensors"))
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k
