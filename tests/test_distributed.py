"""Multi-process training: the resumable data sampler, batch splitting, and a real
2-process torchrun (gloo, CPU) run whose ranks must end with identical weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from medgen.core.errors import UsageError
from medgen.training import checkpoint as ck
from medgen.training.distributed import InfiniteBatchSampler, local_batch_size


def test_sampler_epochs_are_permutations_and_ranks_split_the_global_batch():
    n, B = 12, 4
    s = InfiniteBatchSampler(n, B, seed=5)
    seen = [s.global_batch_indices(k) for k in range(6)]  # two epochs
    assert sorted(sum(seen[:3], [])) == list(range(n)) and sorted(sum(seen[3:], [])) == list(range(n))
    assert sum(seen[:3], []) != sum(seen[3:], [])  # a new order each epoch
    ranks = [InfiniteBatchSampler(n, B, seed=5, rank=r, world_size=2) for r in range(2)]
    its = [iter(r) for r in ranks]
    for k in range(6):
        a, b = next(its[0]), next(its[1])
        assert len(a) == len(b) == 2 and a + b == seen[k]
    # starting at batch k gives what batch k was in the uninterrupted stream
    late = iter(InfiniteBatchSampler(n, B, seed=5, start_batch=4))
    assert next(late) == seen[4] and next(late) == seen[5]
    assert s.position(4) == (1, 4)


def test_sampler_wraps_epochs_inside_a_batch():
    s = InfiniteBatchSampler(5, 4, seed=0)
    flat = sum((s.global_batch_indices(k) for k in range(5)), [])  # 20 draws = 4 epochs
    for e in range(4):
        assert sorted(flat[5 * e : 5 * e + 5]) == list(range(5))
        assert flat[5 * e : 5 * e + 5] == s.epoch_order(e).tolist()


def test_global_batch_must_split_evenly():
    assert local_batch_size(8, 4) == 2
    with pytest.raises(UsageError, match="divisible by the number of processes"):
        local_batch_size(6, 4)


WORKER = textwrap.dedent(
    """
    import os, sys
    from safetensors.torch import save_file
    from medgen.training.runconfig import RunConfig
    from medgen.families.hagan import get_preset
    from medgen.families.registry import train

    data, run, out = sys.argv[1:4]
    cfg = RunConfig(data=data, model=get_preset("tiny", 32, num_classes=2).to_dict(), preset="tiny", iters=3,
                    batch=4, device="cpu", log_every=1, sample_every=0, ckpt_every=1000, label_column="label",
                    split_fractions=(1.0, 0.0, 0.0),
                    hparams={"r1_gamma": 1.0, "r1_every": 2, "encoder_every": 2,  # R1 and E^H/E^G at 0 and 2
                             "recon_weight": 0.5})  # G updated by its DDP wrapper twice on those
    result = train(cfg, run, progress=False)
    flat = {f"{m}.{k}": v.contiguous() for m, sd in result.models.weights().items() if m != "G_ema" for k, v in sd.items()}
    save_file(flat, os.path.join(out, f"rank{os.environ['RANK']}.safetensors"))
    """
)


def _make_dataset(root: Path, n: int = 8, size: int = 32) -> Path:
    (root / "volumes").mkdir(parents=True)
    rng = np.random.default_rng(1)
    rows = ["id,source,orig_shape,orig_spacing,spacing,file,label"]
    for i in range(n):
        v = np.clip(rng.normal(-0.5, 0.3, (size, size, size)), -1, 1).astype(np.float16)
        np.save(root / "volumes" / f"s{i}.npy", v)
        rows.append(f"s{i},x,{size}x{size}x{size},1x1x1,1,volumes/s{i}.npy,{i % 2}")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    (root / "preprocess.json").write_text(json.dumps({"modality": "ct", "size": size}))
    return root


def test_two_gloo_processes_stay_in_sync(tmp_path):
    data = _make_dataset(tmp_path / "data")
    (tmp_path / "out").mkdir()
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(script), str(data), str(tmp_path / "run"), str(tmp_path / "out")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = load_file(str(tmp_path / "out" / "rank0.safetensors"))
    r1 = load_file(str(tmp_path / "out" / "rank1.safetensors"))
    assert set(r0) == set(r1) and any(k.startswith("E.ground") for k in r0)
    for k in r0:
        assert torch.equal(r0[k], r1[k]), f"ranks differ in {k}"
    # rank 0's checkpoint holds the same weights, and training changed them
    saved = ck.load_weights(tmp_path / "run")
    for module in ("G", "D", "E"):
        for k, v in saved[module].items():
            assert torch.equal(v, r0[f"{module}.{k}"])
    from medgen.families.hagan import Generator, get_preset

    torch.manual_seed(0)
    init = Generator(get_preset("tiny", 32, num_classes=2)).state_dict()
    assert not torch.equal(init["common.fc.weight"], r0["G.common.fc.weight"])
    # only rank 0 wrote the run folder; both ranks logged nothing twice
    rows = (tmp_path / "run" / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 3
    assert "loss_r1" in rows[0].split(",")  # the R1 penalty (double backward through D) ran under DDP too
    # the encoder's DDP wrappers were skipped on iteration 1 on both ranks: no loss logged there
    eh = rows[0].split(",").index("loss_EH")
    assert [r.split(",")[eh] != "" for r in rows[1:]] == [True, False, True]
