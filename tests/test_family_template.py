"""The guarantees of the shared training loop, checked for every registered family.

A new family gets these tests by being listed in :data:`medgen.families.registry.FAMILIES`
(with a ``tiny`` preset): exact resume (N + N iterations == 2N, bitwise, optimisers and EMA
included), two gloo processes under ``torchrun`` ending with identical weights, a NaN/inf
loss stopping the run with the last good checkpoint kept, and SIGTERM saving a checkpoint
and exiting with code 130.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from medgen.core.errors import RunFailed
from medgen.families import registry
from medgen.training import checkpoint as ckpt_io
from medgen.training.runconfig import RunConfig
from tiny_families import tiny_model
from toy_volumes import make_dataset

S = 32
FAMILIES = sorted(registry.FAMILIES)


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_cfg(family: str, data: Path, iters: int, **kw) -> RunConfig:
    """:func:`tiny_model` trained with batch 2 on the CPU, logging every iteration."""
    fam = registry.get(family)
    model = tiny_model(family)
    labelled = fam.uses_labels(fam.model_from_dict(model))
    base = dict(
        data=str(data), model=model, family=family, hparams=fam.hparams_from_dict({}).to_dict(), preset="tiny",
        iters=iters, batch=2, device="cpu", log_every=1, sample_every=0, ckpt_every=1000, ema_decay=0.9,
        split_fractions=(1.0, 0.0, 0.0), label_column="label" if labelled else None,
    )
    base.update(kw)
    return RunConfig(**base)


def read_metrics(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("family", FAMILIES)
def test_resume_after_n_plus_n_equals_2n(family, tmp_path):
    data = make_dataset(tmp_path / "data", n=4, degraded=True, labels=True)
    full = registry.train(tiny_cfg(family, data, 4), tmp_path / "full", progress=False)
    registry.train(tiny_cfg(family, data, 2), tmp_path / "split", progress=False)
    resumed = registry.train(tiny_cfg(family, data, 4), tmp_path / "split", resume=True, progress=False)
    assert full.iteration == resumed.iteration == 4
    a, b = full.models.weights(), resumed.models.weights()
    assert set(a) == set(b) and a  # the same networks (and EMA copies)
    for module in a:
        for key in a[module]:
            assert torch.equal(a[module][key], b[module][key]), f"{family}: {module}.{key} differs after resume"
    sa, sb = ckpt_io.load_state(tmp_path / "full"), ckpt_io.load_state(tmp_path / "split")
    assert sa["iteration"] == sb["iteration"] == 4
    assert set(sa["optimizers"]) == set(sb["optimizers"]) and sa["optimizers"]
    for name in sa["optimizers"]:
        for pid, st in sa["optimizers"][name]["state"].items():
            for k, v in st.items():
                assert torch.equal(v, sb["optimizers"][name]["state"][pid][k]), f"{family}: optimiser {name} differs"
    # the resumed metrics continue without duplicates, and training changed the weights
    assert [int(r["iteration"]) for r in read_metrics(tmp_path / "split")] == [1, 2, 3, 4]
    torch.manual_seed(0)
    fam = registry.get(family)
    cfg = tiny_cfg(family, data, 1)
    fresh = fam.build(fam.model_from_dict(cfg.model), fam.hparams_from_dict(cfg.hparams), torch.device("cpu"))
    moved = [k for name, net in fresh.items() for k, v in net.state_dict().items()
             if v.is_floating_point() and not torch.equal(v, a[name][k])]
    assert moved, f"{family}: training left every weight at its initialisation"
    # the run loads through the registry as its family's model, with the trained weights (EMA or not)
    model = registry.load(tmp_path / "split", use_ema=False)
    assert fam.load_model.__module__.startswith(f"medgen.families.{family.replace('-', '_')}.")
    loaded = {id(t) for t in vars(model).values() if isinstance(t, torch.nn.Module)}
    assert loaded, f"{family}: the loaded model holds no network"
    trained = [v for sd in a.values() for v in sd.values()]
    for net in (t for t in vars(model).values() if isinstance(t, torch.nn.Module)):
        for k, v in net.state_dict().items():
            if v.is_floating_point() and v.numel() > 1:
                assert any(v.shape == w.shape and torch.equal(v.cpu(), w) for w in trained), f"{family}: {k}"


@pytest.mark.parametrize("family", FAMILIES)
def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(family, tmp_path):
    data = make_dataset(tmp_path / "data", n=4, degraded=True, labels=True)
    run = tmp_path / "run"
    registry.train(tiny_cfg(family, data, 2, ckpt_every=2), run, progress=False)
    good = ckpt_io.latest_checkpoint(run)
    before = ckpt_io.load_weights(good)
    for p in (data / "volumes").glob("*.npy"):  # every volume NaN: the next batch's losses are NaN
        v = np.load(p)
        v[...] = np.nan
        np.save(p, v)
    with pytest.raises(RunFailed) as err:
        registry.train(tiny_cfg(family, data, 5, ckpt_every=1), run, resume=True, progress=False)
    assert "became nan at iteration 3" in str(err.value) and str(good) in str(err.value)
    assert err.value.exit_code == 1
    assert ckpt_io.list_checkpoints(run) == [good] and ckpt_io.latest_checkpoint(run) == good
    after = ckpt_io.load_weights(good)
    for module in before:
        for key in before[module]:
            assert torch.equal(before[module][key], after[module][key])


WORKER = textwrap.dedent(
    """
    import json, os, sys
    from safetensors.torch import save_file
    from medgen.families import registry
    from medgen.training.runconfig import RunConfig

    family, data, run, out, model = sys.argv[1:6]
    fam = registry.get(family)
    model = json.loads(model)
    cfg = RunConfig(data=data, model=model, family=family, preset="tiny", iters=3, batch=4, device="cpu",
                    log_every=1, sample_every=0, ckpt_every=1000, split_fractions=(1.0, 0.0, 0.0),
                    label_column="label" if fam.uses_labels(fam.model_from_dict(model)) else None)
    result = registry.train(cfg, run, progress=False)
    # Parameters: DDP keeps them identical. (Buffers such as BatchNorm running statistics are each rank's own;
    # DDP broadcasts rank 0's at every forward pass and only rank 0 saves them.)
    flat = {f"{m}.{k}": v.detach().contiguous() for m, net in result.models.nets.items() for k, v in net.named_parameters()}
    save_file(flat, os.path.join(out, f"rank{os.environ['RANK']}.safetensors"))
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_two_gloo_processes_end_with_identical_weights(family, tmp_path):
    data = make_dataset(tmp_path / "data", n=8, degraded=True, labels=True)
    (tmp_path / "out").mkdir()
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(script), family, str(data), str(tmp_path / "run"), str(tmp_path / "out"), json.dumps(tiny_model(family))]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = load_file(str(tmp_path / "out" / "rank0.safetensors"))
    r1 = load_file(str(tmp_path / "out" / "rank1.safetensors"))
    assert set(r0) == set(r1) and r0
    for k in r0:
        assert torch.equal(r0[k], r1[k]), f"{family}: ranks differ in {k}"
    saved = ckpt_io.load_weights(tmp_path / "run")  # rank 0's checkpoint holds the same weights
    for key, value in r0.items():
        module, _, name = key.partition(".")
        assert torch.equal(saved[module][name], value)
    assert len(read_metrics(tmp_path / "run")) == 3  # only rank 0 logged


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_sigterm_saves_a_checkpoint_and_exits_130(family, tmp_path):
    data = make_dataset(tmp_path / "data", n=4, degraded=True, labels=True,
                        longitudinal=family == "progression")  # the CLI default: followup, interval_years
    run = tmp_path / "run"
    extra = []
    if family == "ldm":  # trained on an autoencoder run
        registry.train(tiny_cfg("ldm-autoencoder", data, 1), tmp_path / "ae", progress=False)
        extra = ["--autoencoder", str(tmp_path / "ae")]
    if family == "fanogan":  # trained on an (unconditional) HA-GAN run
        gan = registry.get("hagan").model_config("tiny", S).to_dict()
        registry.train(tiny_cfg("hagan", data, 1, model=gan, label_column=None), tmp_path / "gan", progress=False)
        extra = ["--generator", str(tmp_path / "gan")]
    if family == "cyclegan":  # its domain B is the data's 'degraded' volume, as in tiny_model
        extra = ["--target", "degraded"]
    cmd = [sys.executable, "-m", "medgen", "train", str(data), "--family", family, "--out", str(run), *extra,
           "--preset", "tiny", "--iters", "100000", "--batch", "2", "--device", "cpu", "--log-every", "1",
           "--sample-every", "0", "--ckpt-every", "100000", "--no-progress"]
    fam = registry.get(family)
    if fam.uses_labels(fam.model_from_dict(tiny_model(family))):
        cmd += ["--label-column", "label"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if (run / "metrics.csv").exists() and len(read_metrics(run)) >= 2:
                break
            assert proc.poll() is None, proc.communicate()[1].decode()
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err.decode()
    ckpt = ckpt_io.latest_checkpoint(run)
    assert ckpt is not None
    done = max(int(r["iteration"]) for r in read_metrics(run))
    assert ckpt_io.load_state(ckpt)["iteration"] == done >= 2
    assert RunConfig.load(run).family == family


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_run_has_curves_a_report_and_model_info(family, tmp_path):
    from medgen.report import write_report
    from medgen.viz.curves import save_training_curves

    data = make_dataset(tmp_path / "data", n=4, degraded=True, labels=True)
    run = tmp_path / "run"
    registry.train(tiny_cfg(family, data, 2), run, progress=False)
    png = save_training_curves(run, tmp_path / "curves.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = write_report(run, tmp_path / "report.html", n_samples=1, progress=False).read_text()
    assert "Training curves" in html and f"<td>family</td><td>{family}</td>" in html.replace(" class=\"num\"", "")
    fam = registry.get(family)
    model = registry.load(run)
    if callable(getattr(model, "generate", None)):
        assert "1 volume(s) of the EMA generator" in html
    elif callable(getattr(model, "reconstruct", None)):
        assert "Real vs reconstructed volumes" in html and "their reconstructions" in html
    else:
        assert "does not generate volumes" in html
    assert fam.describe is not None and fam.describe(fam.model_from_dict(tiny_model(family)))
