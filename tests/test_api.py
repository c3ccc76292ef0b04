"""The Python API: medgen.build (untrained) and medgen.load (a trained run)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import medgen
from medgen.core.errors import InputError, UsageError
from medgen.training.checkpoint import load_weights
from test_generate import WINDOW, trained_run

S = 32


@pytest.fixture(scope="module")
def run_and_data(tmp_path_factory) -> tuple[Path, Path]:
    return trained_run(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def built():
    return medgen.build("tiny", size=S, seed=1)


def test_build_generates_what_the_networks_compute(built):
    x = built.generate(3, seed=4)
    assert x.shape == (3, S, S, S) and x.dtype == np.float32
    assert x.min() >= -1 and x.max() <= 1 and x.std() > 1e-3
    # independent computation: z_i from SeedSequence(4).spawn(3)[i], then G^H(G^A(z))
    g = built.generator
    for i, child in enumerate(np.random.SeedSequence(4).spawn(3)):
        z = np.random.Generator(np.random.PCG64(child)).standard_normal(built.config.latent_dim)
        with torch.no_grad():
            ref = g.high(g.features(torch.tensor(z, dtype=torch.float32)[None]))[0, 0].numpy()
        assert np.abs(x[i] - ref).max() <= 1e-6
    # chunked and batched give the same volumes
    assert np.abs(built.generate(3, seed=4, chunk=3, batch_size=2) - x).max() <= 1e-5


def test_build_is_seeded(built):
    again = medgen.build("tiny", size=S, seed=1)
    other = medgen.build("tiny", size=S, seed=2)
    key = "common.fc.weight"
    assert torch.equal(again.generator.state_dict()[key], built.generator.state_dict()[key])
    assert not torch.equal(other.generator.state_dict()[key], built.generator.state_dict()[key])
    assert built.run_config is None and built.encoder is not None
    assert medgen.build("tiny", size=S, encoder=False).encoder is None
    assert medgen.build("tiny", size=64, width=0.25).config.channels(64) == 16
    with pytest.raises(UsageError, match="unknown model preset"):
        medgen.build("huge", size=S)


def test_encode_and_reconstruct(built):
    x = built.generate(2, seed=0)
    z = built.encode(x)
    assert z.shape == (2, built.config.latent_dim) and z.dtype == np.float32
    assert np.allclose(built.encode(x[1]), z[1:], atol=1e-5)  # one [S, S, S] volume, batch of one
    r = built.reconstruct(x, batch_size=2)
    assert np.abs(r - built.generate(2, z=z)).max() <= 1e-5
    with pytest.raises(UsageError, match="16x16x16.*32x32x32"):
        built.encode(np.zeros((16, 16, 16), np.float32))
    with pytest.raises(UsageError, match="HU output needs a model trained on CT"):
        built.generate(1, hu=True)


def test_load_uses_the_checkpoint_weights(run_and_data):
    run, _ = run_and_data
    saved = load_weights(run)
    ema, raw = medgen.load(run), medgen.load(run, use_ema=False)
    key = "high.convs.0.weight"
    assert torch.equal(ema.generator.state_dict()[key], saved["G_ema"][key])
    assert torch.equal(raw.generator.state_dict()[key], saved["G"][key])
    assert not torch.equal(saved["G"][key], saved["G_ema"][key])  # the two really differ
    assert torch.equal(raw.encoder.state_dict()["ground.final_conv.weight"], saved["E"]["ground.final_conv.weight"])
    assert ema.config.size == S and ema.run_config is not None
    assert ema.checkpoint.name == "iter-000002"
    # generate(hu=True) inverts the training data's CT window
    x, hu = ema.generate(1, seed=1), ema.generate(1, seed=1, hu=True)
    lo, hi = WINDOW
    assert np.allclose(hu, lo + (x.astype(np.float64) + 1) / 2 * (hi - lo), atol=1e-3)


def test_load_errors(run_and_data, tmp_path):
    run, data = run_and_data
    with pytest.raises(InputError, match="config.yaml"):
        medgen.load(data)
    with pytest.raises(InputError, match="no such run folder"):
        medgen.load(tmp_path / "nothing")
    with pytest.raises(InputError):
        medgen.load(run, checkpoint=tmp_path)


def test_import_medgen_does_not_import_torch():
    code = "import sys, medgen; print('torch' in sys.modules, callable(medgen.load), 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "True", "True"]
