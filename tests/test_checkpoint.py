"""Checkpoints: safetensors + weights_only state, atomic writes, keep-last-K, resolution."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from safetensors import safe_open

from medgen.core.errors import InputError
from medgen.training import checkpoint as ck


def _weights(seed: int) -> dict[str, dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    lin = torch.randn(3, 4, generator=g)
    return {
        "G": {"fc.weight": lin, "fc.bias": torch.randn(3, generator=g)},
        # a view sharing storage with another tensor: must still be saved
        "D": {"w": lin[:2], "u": torch.randn(5, generator=g, dtype=torch.float64)},
    }


def _state(it: int) -> dict:
    opt = torch.optim.Adam([torch.nn.Parameter(torch.ones(2))], lr=1e-3, betas=(0.0, 0.999))
    opt.param_groups[0]["params"][0].grad = torch.full((2,), 0.5)
    opt.step()
    rng = np.random.RandomState(it).get_state()
    return {
        "iteration": it,
        "optimizers": {"G": opt.state_dict()},
        "rng": {"torch": torch.get_rng_state(), "numpy": torch.from_numpy(rng[1].astype(np.int64))},
        "sampler": {"epoch": 1, "position": 3},
    }


def test_round_trip_is_safetensors_and_weights_only(tmp_path):
    path = ck.save_checkpoint(tmp_path, 500, _weights(0), _state(500))
    assert path == tmp_path / "checkpoints" / "iter-000500"
    with safe_open(str(path / ck.WEIGHTS_NAME), framework="pt") as fh:
        assert set(fh.keys()) == {"G.fc.weight", "G.fc.bias", "D.w", "D.u"}
        assert fh.metadata()["iteration"] == "500"
    # the state file loads with the restricted unpickler
    raw = torch.load(path / ck.STATE_NAME, weights_only=True)
    assert raw["iteration"] == 500 and raw["sampler"] == {"epoch": 1, "position": 3}
    w = ck.load_weights(tmp_path)
    ref = _weights(0)
    for m in ref:
        for k in ref[m]:
            assert torch.equal(w[m][k], ref[m][k]) and w[m][k].dtype == ref[m][k].dtype
    state = ck.load_state(path)
    assert torch.equal(state["optimizers"]["G"]["state"][0]["exp_avg"], _state(500)["optimizers"]["G"]["state"][0]["exp_avg"])


def test_state_with_arbitrary_objects_is_refused(tmp_path):
    path = ck.save_checkpoint(tmp_path, 1, _weights(0), _state(1))
    torch.save({"iteration": 1, "evil": os.system}, path / ck.STATE_NAME)  # a pickled callable
    with pytest.raises(InputError, match="unreadable training state"):
        ck.load_state(path)


def test_failed_write_leaves_previous_checkpoint_intact(tmp_path, monkeypatch):
    first = ck.save_checkpoint(tmp_path, 10, _weights(1), _state(10))

    def crash(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(ck.torch, "save", crash)  # weights written, state write fails
    with pytest.raises(OSError, match="disk full"):
        ck.save_checkpoint(tmp_path, 20, _weights(2), _state(20))
    monkeypatch.undo()
    assert ck.latest_checkpoint(tmp_path) == first
    assert ck.list_checkpoints(tmp_path) == [first]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["iter-000010", "latest"]
    assert torch.equal(ck.load_weights(tmp_path)["G"]["fc.weight"], _weights(1)["G"]["fc.weight"])
    assert ck.load_state(tmp_path)["iteration"] == 10


def test_killed_writer_leftovers_are_ignored_and_cleaned(tmp_path):
    first = ck.save_checkpoint(tmp_path, 10, _weights(1), _state(10))
    # what a process killed mid-write leaves: a hidden temporary folder, half a weights file
    tmp = tmp_path / "checkpoints" / ".tmp-iter-000020.abc"
    tmp.mkdir()
    (tmp / ck.WEIGHTS_NAME).write_bytes(b"\x00" * 10)
    # and an incomplete folder with the final name but no state (e.g. copied by hand)
    (tmp_path / "checkpoints" / "iter-000030").mkdir()
    assert ck.latest_checkpoint(tmp_path) == first
    assert ck.list_checkpoints(tmp_path) == [first]
    ck.save_checkpoint(tmp_path, 40, _weights(4), _state(40))
    assert not tmp.exists()


def test_keep_last_k_and_latest_pointer(tmp_path):
    for it in (1, 2, 3, 4, 5):
        ck.save_checkpoint(tmp_path, it, _weights(it), _state(it), keep=3)
    assert [ck.checkpoint_iteration(p) for p in ck.list_checkpoints(tmp_path)] == [3, 4, 5]
    assert (tmp_path / "checkpoints" / "latest").read_text().strip() == "iter-000005"
    assert torch.equal(ck.load_weights(tmp_path)["G"]["fc.bias"], _weights(5)["G"]["fc.bias"])
    # a broken pointer falls back to the newest complete checkpoint
    (tmp_path / "checkpoints" / "latest").write_text("iter-999999\n")
    assert ck.latest_checkpoint(tmp_path).name == "iter-000005"
    # re-saving an existing iteration replaces it
    ck.save_checkpoint(tmp_path, 5, _weights(9), _state(5), keep=3)
    assert torch.equal(ck.load_weights(tmp_path)["G"]["fc.bias"], _weights(9)["G"]["fc.bias"])
    assert len(ck.list_checkpoints(tmp_path)) == 3


def test_resolve_checkpoint_errors(tmp_path):
    with pytest.raises(InputError, match="no complete checkpoint"):
        ck.resolve_checkpoint(tmp_path)
    with pytest.raises(InputError, match="no such checkpoint"):
        ck.resolve_checkpoint(tmp_path / "missing")
    path = ck.save_checkpoint(tmp_path, 7, _weights(0), _state(7))
    assert ck.resolve_checkpoint(path) == path == ck.resolve_checkpoint(tmp_path)
