"""Latent diffusion: the KL autoencoder (``ldm-autoencoder``), exact chunked decoding, and the ``ldm`` family.

The shared-loop guarantees (exact resume, DDP, NaN stop, SIGTERM, report) are checked for both
families by ``test_family_template.py``; here: what is particular to them.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from medgen.core.errors import InputError, UsageError
from medgen.families.ldm.latents import LatentCodec
from medgen.families.ldm_autoencoder.config import model_config as ae_config
from medgen.families.ldm_autoencoder.decode import _patched_norms, _slabs, decode_chunked, decoder_halo
from medgen.families.ldm_autoencoder.train import build_autoencoder
from toy_volumes import make_dataset


pytestmark = pytest.mark.usefixtures("one_thread")


def random_autoencoder(size: int = 32, seed: int = 0) -> torch.nn.Module:
    """A tiny autoencoder at random weights, with non-trivial GroupNorm affine parameters."""
    torch.manual_seed(seed)
    ae = build_autoencoder(ae_config("tiny", size)).eval()
    with torch.no_grad():
        for m in ae.modules():
            if isinstance(m, torch.nn.GroupNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return ae


def naive_chunks(ae, z: torch.Tensor, chunk: int, halo: int, factor: int = 4) -> torch.Tensor:
    """Slab-wise decoding with a halo but each slab's own GroupNorm statistics (what sliding windows do)."""
    parts = []
    with torch.no_grad():
        for s0, s1, a, b in _slabs(z.shape[2], chunk, halo):
            y = ae.decode(z[:, :, s0:s1])
            parts.append(y[:, :, (a - s0) * factor:(b - s0) * factor])
    return torch.cat(parts, dim=2)


def test_chunked_decoding_equals_whole_volume_decoding():
    ae = random_autoencoder()
    z = torch.randn((1, 3, 8, 8, 8), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        whole = ae.decode(z)
    halo = decoder_halo(ae, 3, 4)
    # the tiny decoder: conv_in + 2 convs at the latent scale, an upsampling conv + 2 convs at 2x, the same at 4x
    # and conv_out: 1 + 2 + (1 + 2) / 2 + (1 + 2 + 1) / 4 = 5.5 latent slices, rounded up
    assert halo == 6
    for chunk in (1, 3, 8):
        got = decode_chunked(ae, z, chunk, factor=4)
        assert got.shape == whole.shape
        assert float((got - whole).abs().max()) < 1e-4, chunk
    # a deep latent (slabs much thinner than the volume): still exact, and both corrections are needed,
    # since a smaller halo, or per-slab GroupNorm statistics, give another volume
    z = torch.randn((1, 3, 24, 4, 4), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        whole = ae.decode(z)
    assert float((decode_chunked(ae, z, 2, factor=4) - whole).abs().max()) < 1e-4
    assert float((decode_chunked(ae, z, 2, factor=4, halo=halo - 2) - whole).abs().max()) > 1e-3
    assert float((naive_chunks(ae, z, 2, halo) - whole).abs().max()) > 1e-3


def test_chunked_decoding_restores_the_decoder_and_refuses_bad_chunks():
    ae = random_autoencoder()
    norms = [m for m in ae.decoder.modules() if isinstance(m, torch.nn.GroupNorm)]
    with _patched_norms(ae.decoder):
        assert all("forward" in vars(m) for m in norms)
    assert not any("forward" in vars(m) for m in norms)  # GroupNorm.forward again
    with pytest.raises(UsageError, match="--chunk 0"):
        decode_chunked(ae, torch.zeros(1, 3, 8, 8, 8), 0, factor=4)


def test_latent_scale_is_one_over_the_latent_standard_deviation():
    codec = LatentCodec(random_autoencoder())
    assert not codec.has_scale
    z = torch.randn((2, 3, 8, 8, 8), generator=torch.Generator().manual_seed(0)) * 3.0 + 0.5
    codec.set_scale(z)
    assert codec.has_scale
    assert float(codec.scale) == pytest.approx(1.0 / np.std(z.numpy().astype(np.float64)), rel=1e-6)
    assert torch.allclose(codec.unscale(z * codec.scale), z, atol=1e-5)
    codec.train()
    assert not codec.autoencoder.training  # frozen: stays in eval mode


def test_autoencoder_training_lowers_the_reconstruction_error_on_held_out_volumes(tmp_path):
    from medgen.families import registry
    from medgen.families.ldm_autoencoder.model import build
    from medgen.training.runconfig import RunConfig

    data = make_dataset(tmp_path / "data", n=8, size=16, seed=0)
    held = make_dataset(tmp_path / "held", n=4, size=16, seed=9)
    cfg = RunConfig(data=str(data), model=ae_config("tiny", 16, disc_layers=2).to_dict(), family="ldm-autoencoder",
                    hparams={"lr": 2e-3, "adv_start": 40}, preset="tiny", iters=60, batch=4, device="cpu",
                    log_every=20, sample_every=0, ckpt_every=1000, split_fractions=(1.0, 0.0, 0.0))
    registry.train(cfg, tmp_path / "run", progress=False)
    trained = registry.load(tmp_path / "run")
    untrained = build("tiny", 16, seed=0, disc_layers=2)
    x = np.stack([np.load(p).astype(np.float32) for p in sorted((held / "volumes").glob("*.npy"))])

    def l1(model) -> float:
        return float(np.abs(model.reconstruct(x) - x).mean())

    before, after = l1(untrained), l1(trained)
    assert after < 0.5 * before, (before, after)
    z = trained.encode(x)
    assert z.shape == (4, 3, 4, 4, 4) and z.dtype == np.float32
    assert np.allclose(trained.decode(z, chunk=1), trained.decode(z), atol=1e-4)
    rows = list(csv_rows(tmp_path / "run" / "metrics.csv"))
    assert [float(r["loss_adv"]) for r in rows][:2] == [0.0, 0.0]  # adversarial terms off before adv_start
    assert float(rows[-1]["loss_d"]) > 0.0  # ... and on from it


def csv_rows(path):
    import csv

    with open(path, newline="") as fh:
        yield from csv.DictReader(fh)


def medgen(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "medgen", *args], capture_output=True, text=True, cwd=cwd,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})


@pytest.mark.slow
def test_two_stage_cli_trains_samples_decodes_in_chunks_and_encodes(tmp_path):
    data = make_dataset(tmp_path / "data", n=4)
    ae, ldm = tmp_path / "ae", tmp_path / "ldm"
    common = ["--preset", "tiny", "--iters", "2", "--batch", "2", "--split-fractions", "1,0,0", "--sample-every", "0",
              "--no-progress"]
    r = medgen("train", str(data), "--family", "ldm", "--out", str(ldm), *common)
    assert r.returncode == 2 and "needs --autoencoder RUN" in r.stderr, r.stderr
    r = medgen("train", str(data), "--family", "ldm-autoencoder", "--out", str(ae), *common)
    assert r.returncode == 0, r.stderr
    r = medgen("train", str(data), "--family", "ldm", "--autoencoder", str(tmp_path / "nope"), "--out", str(ldm), *common)
    assert r.returncode == 2 and "no such run folder" in r.stderr
    r = medgen("train", str(data), "--family", "ldm", "--autoencoder", str(ae), "--out", str(ldm), *common)
    assert r.returncode == 0, r.stderr
    saved = (ldm / "config.yaml").read_text()
    assert "autoencoder_run:" in saved and "autoencoder_checkpoint:" in saved
    # sampling: whole-volume and chunked decoding give the same volumes
    for out, extra in (("whole", []), ("chunked", ["--chunk", "3"])):
        r = medgen("generate", str(ldm), "--n", "2", "--steps", "3", "--format", "npy", "--no-mosaic", "--no-progress",
                   "--out", str(tmp_path / out), *extra)
        assert r.returncode == 0, r.stderr
    a = np.stack([np.load(p) for p in sorted((tmp_path / "whole").glob("*.npy"))])
    b = np.stack([np.load(p) for p in sorted((tmp_path / "chunked").glob("*.npy"))])
    assert a.shape[0] == 2 and np.abs(a.astype(np.float64) - b).max() < 1e-4 * 1624  # HU: the window's half-width
    # the autoencoder run does not sample, and says what does
    r = medgen("generate", str(ae), "--n", "1", "--out", str(tmp_path / "x"), "--no-progress")
    assert r.returncode == 2 and "--family ldm --autoencoder" in r.stderr
    # encoding: one latent file per volume, and reconstructions
    r = medgen("encode", str(ldm), str(data), "--out", str(tmp_path / "lat.csv"), "--reconstruct", str(tmp_path / "rec"),
               "--no-progress")
    assert r.returncode == 0, r.stderr
    rows = list(csv_rows(tmp_path / "lat.csv"))
    assert len(rows) == 4 and rows[0]["latent_file"] == "lat-latents/v0.npy"
    z = np.load(tmp_path / rows[0]["latent_file"])
    assert z.shape == (3, 8, 8, 8) and float(rows[0]["latent_mean"]) == pytest.approx(float(z.mean()), abs=1e-5)
    assert len(list((tmp_path / "rec").glob("*.nii.gz"))) == 4
    info = json.loads(medgen("model-info", "--family", "ldm", "--autoencoder", str(ae), "--preset", "tiny",
                             "--size", "32", "--json").stdout)
    assert info["networks"]["autoencoder"] > 0 and info["config"]["autoencoder"]["latent_channels"] == 3


def test_ldm_configuration_checks_its_autoencoder(tmp_path):
    from medgen.families import registry
    from medgen.families.ldm.config import model_config
    from medgen.training.runconfig import RunConfig

    with pytest.raises(UsageError, match="needs --autoencoder RUN"):
        model_config("tiny", 32)
    with pytest.raises(UsageError, match=r"disc_layers 3: too many for 16³ volumes \(at most 2\)"):
        ae_config("tiny", 16)
    with pytest.raises(UsageError, match="autoencoder works on 64³ volumes, this model on 32³"):
        model_config("tiny", 32, autoencoder=ae_config("tiny", 64).to_dict())
    data = make_dataset(tmp_path / "data", n=2, size=16)
    cfg = RunConfig(data=str(data), model=registry.get("ddpm").model_config("tiny", 16).to_dict(), family="ddpm",
                    preset="tiny", iters=1, batch=1, device="cpu", sample_every=0, split_fractions=(1.0, 0.0, 0.0))
    registry.train(cfg, tmp_path / "ddpm", progress=False)
    with pytest.raises(UsageError, match="a 'ddpm' run, not an 'ldm-autoencoder' one"):
        model_config("tiny", 16, autoencoder_run=str(tmp_path / "ddpm"))
    with pytest.raises(InputError, match="no such run folder"):
        model_config("tiny", 16, autoencoder_run=str(tmp_path / "missing"))


def test_ldm_training_lowers_the_denoising_loss_on_held_out_latents(tmp_path):
    from medgen.families import registry
    from medgen.families.ddpm.train import build_unet, noisy_batch
    from medgen.families.ldm.config import model_config
    from medgen.training.runconfig import RunConfig

    data = make_dataset(tmp_path / "data", n=8, size=32, seed=0)
    held = make_dataset(tmp_path / "held", n=4, size=32, seed=9)
    cfg_model = model_config("tiny", 32, autoencoder=ae_config("tiny", 32).to_dict())  # a random, frozen autoencoder
    cfg = RunConfig(data=str(data), model=cfg_model.to_dict(), family="ldm", hparams={"lr": 2e-3}, preset="tiny",
                    iters=120, batch=4, device="cpu", log_every=40, sample_every=0, ckpt_every=1000,
                    split_fractions=(1.0, 0.0, 0.0))
    result = registry.train(cfg, tmp_path / "run", progress=False)
    codec = result.models.nets["autoencoder"]
    assert codec.has_scale
    trained = result.models.nets["unet"].eval()
    torch.manual_seed(0)
    untrained = build_unet(cfg_model.diffusion()).eval()
    x = torch.from_numpy(np.stack([np.load(p).astype(np.float32) for p in sorted((held / "volumes").glob("*.npy"))]))
    with torch.no_grad():
        z0 = codec.encode(x[:, None])
    assert 0.5 < float(z0.std()) < 2.0  # the scale brings latents near unit variance

    def held_out_mse(unet) -> float:
        gen, losses = torch.Generator().manual_seed(123), []
        with torch.no_grad():
            for _ in range(8):  # the same (t, ε) draws for both networks
                z_t, t, target = noisy_batch(cfg_model.diffusion(), z0, gen)
                losses.append(float(torch.mean((unet(z_t, t) - target) ** 2)))
        return float(np.mean(losses))

    before, after = held_out_mse(untrained), held_out_mse(trained)
    assert after < 0.5 * before, (before, after)
