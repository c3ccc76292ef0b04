"""A run folder written before model families existed still loads, and generates the same volumes.

``tests/fixtures/legacy-hagan-run`` was written by ``medgen train`` of medgen 0.1.0 before the
family registry (commit 659c527): a 1-iteration run of a very small HA-GAN (tiny preset at 32³ with
width 1/32, latent 8, one GroupNorm group), its ``config.yaml`` without a ``family`` key and with
HA-GAN's hyper-parameters at the top level. ``legacy-hagan-run.expected.npz`` holds what that
version's ``medgen.load(run).generate(2, seed=3)`` and ``.encode(generate(1, seed=5))`` returned
(float32, CPU).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

import medgen
from medgen.core.errors import UsageError
from medgen.training.runconfig import RunConfig

FIXTURE = Path(__file__).parent / "fixtures" / "legacy-hagan-run"
EXPECTED = Path(__file__).parent / "fixtures" / "legacy-hagan-run.expected.npz"


@pytest.fixture
def run(tmp_path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(FIXTURE, out)
    return out


def test_legacy_config_reads_as_hagan_with_hparams(run):
    text = (run / "config.yaml").read_text()
    assert "family" not in text and "lr_d: 0.0003" in text  # really the old format
    cfg = RunConfig.load(run)
    assert cfg.family == "hagan"
    assert cfg.hparams["lr_d"] == 0.0003 and cfg.hparams["use_encoder"] is True
    assert cfg.hparams["betas"] == [0.0, 0.999] and cfg.model["latent_dim"] == 8
    # saved again, it is in the new format and reads back the same
    cfg.save(run)
    again = RunConfig.load(run)
    assert "family: hagan" in (run / "config.yaml").read_text()
    assert again.to_dict() == cfg.to_dict()


def test_legacy_run_generates_and_encodes_the_same_volumes(run):
    # Up to float32 rounding: CPU kernels sum in another order on another instruction set (an encoding was
    # 1 ulp off on one x86 CPU; on an Intel AVX-512 CPU the volumes are up to 2.3e-6 and the code 1.3e-6 off
    # the fixture's, made on an AMD one); a changed network or loading path is off by far more.
    expected = np.load(EXPECTED)
    model = medgen.load(run)
    assert type(model).__name__ == "HAGANModel"
    x = model.generate(2, seed=3)
    assert x.dtype == np.float32 and x.shape == (2, 32, 32, 32)
    np.testing.assert_allclose(x, expected["generate_seed3"], rtol=0, atol=1e-5)
    z = model.encode(model.generate(1, seed=5))
    np.testing.assert_allclose(z, expected["encode_seed5"], rtol=0, atol=1e-5)
    # chunked generation gives the same volumes up to float rounding
    np.testing.assert_allclose(model.generate(2, seed=3, chunk=2), expected["generate_seed3"], atol=1e-5)


def test_legacy_run_refuses_a_resume_with_other_hyper_parameters(run):
    from medgen.families import registry
    from medgen.training.loop import prepare_run_dir

    cfg = RunConfig.load(run)
    cfg.hparams = {**cfg.hparams, "lr_d": 1e-3}
    with pytest.raises(UsageError, match="hparams.lr_d"):
        prepare_run_dir(cfg, run, resume=True, family=registry.get("hagan"))


def test_legacy_run_resumes_when_new_settings_have_their_defaults(run):
    """A setting added after the run was saved (absent from its config.yaml) counts with its default."""
    from medgen.families import registry
    from medgen.training.loop import prepare_run_dir

    fam = registry.get("hagan")
    saved = RunConfig.load(run)
    assert "window_warmup" not in saved.hparams and "d_windows" not in saved.model
    cfg = RunConfig.load(run)
    cfg.hparams = fam.hparams_from_dict(dict(cfg.hparams)).to_dict()  # what the loop has: defaults filled in
    cfg.model = fam.model_from_dict(dict(cfg.model)).to_dict()
    assert "hparams.window_warmup" in saved.differing_keys(cfg)  # compared as saved, the new fields would differ
    assert prepare_run_dir(cfg, run, resume=True, family=fam) is cfg
    cfg.hparams = {**cfg.hparams, "window_warmup": 10}  # a new setting with another value still differs
    with pytest.raises(UsageError, match="hparams.window_warmup"):
        prepare_run_dir(cfg, run, resume=True, family=fam)
