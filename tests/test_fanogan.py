"""f-AnoGAN on a trained HA-GAN (``fanogan``): the izi_f objective, the discriminator features, the frozen G and D,
the encoder's initialisation, the anomaly score and map, and the ``--generator`` run it is trained on.

The shared-loop guarantees (exact resume, DDP, NaN stop, SIGTERM, report) are checked by
``test_family_template.py``; here: what is particular to the family.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medgen.core.errors import InputError, UsageError
from medgen.families import registry
from medgen.families.fanogan.config import model_config
from medgen.families.fanogan.losses import izif_loss, izif_terms
from medgen.families.fanogan.model import FAnoGANModel
from medgen.families.fanogan.networks import build_networks, discriminator_features
from medgen.families.fanogan.train import FAnoGANHParams, build_gan
from medgen.families.hagan.config import get_preset
from medgen.families.layers import leaky
from medgen.training import checkpoint as ckpt_io
from medgen.training.runconfig import RunConfig
from toy_volumes import make_dataset

pytestmark = pytest.mark.usefixtures("one_thread")

S = 32  # HA-GAN's smallest size


def volumes(folder) -> np.ndarray:
    return np.stack([np.load(p).astype(np.float32) for p in sorted((folder / "volumes").glob("*.npy"))])


def run_config(data, family: str, model: dict, iters: int, hparams: dict) -> RunConfig:
    return RunConfig(data=str(data), model=model, family=family, hparams=hparams, preset="tiny", iters=iters,
                     batch=4, device="cpu", log_every=5, sample_every=0, ckpt_every=1000,
                     split_fractions=(1.0, 0.0, 0.0))


def initial_model(run) -> FAnoGANModel:
    """The f-AnoGAN of fanogan run ``run`` as its training started (E as initialised, κ of the run)."""
    saved = RunConfig.load(run)
    cfg = registry.get("fanogan").model_from_dict(saved.model)
    hp = FAnoGANHParams.from_dict(saved.hparams)
    torch.manual_seed(saved.seed)  # what the loop does before building
    nets = build_gan(cfg, hp.encoder_init, hp.generator_weights)
    return FAnoGANModel(cfg, nets["E"].eval(), nets["G"], nets["D"], hp.kappa)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny HA-GAN trained briefly on clean toy volumes, f-AnoGAN trained on it, and held-out volumes."""
    root = tmp_path_factory.mktemp("fanogan")
    data = make_dataset(root / "data", n=8, size=S, seed=0)
    gan_model = get_preset("tiny", S).to_dict()
    registry.train(run_config(data, "hagan", gan_model, 30, {"lr_eh": 1e-3, "lr_eg": 1e-3}), root / "gan",
                   progress=False)
    cfg = model_config("tiny", S, generator_run=str(root / "gan")).to_dict()
    registry.train(run_config(data, "fanogan", cfg, 20, {"lr": 1e-3, "kappa": 0.5}), root / "fanogan",
                   progress=False)
    return {"data": data, "gan": root / "gan", "fanogan": root / "fanogan",
            "held": volumes(make_dataset(root / "held", n=4, size=S, seed=9))}


# ---------------------------------------------------------------------- the objective and its features


def test_izif_loss_equals_a_hand_computation_with_a_linear_feature_map():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (2, 1, 4, 4, 4)).astype(np.float32)
    x_rec = rng.uniform(-1, 1, (2, 1, 4, 4, 4)).astype(np.float32)
    w = rng.normal(size=(64, 5)).astype(np.float32)  # f(v) = flatten(v) @ W: 5 features
    f = lambda v: v.flatten(1) @ torch.from_numpy(w)  # noqa: E731
    x_t, rec_t = torch.from_numpy(x), torch.from_numpy(x_rec).requires_grad_(True)

    image, feature = izif_terms(x_t, rec_t, f)
    d = (x - x_rec).reshape(2, -1)
    hand_image = (d ** 2).sum(1) / 64  # (1/n_x)‖x − x̂‖²
    hand_feature = ((d @ w) ** 2).sum(1) / 5  # (1/n_f)‖f(x) − f(x̂)‖²: f linear, f(x) − f(x̂) = f(x − x̂)
    np.testing.assert_allclose(image.detach().numpy(), hand_image, rtol=1e-5)
    np.testing.assert_allclose(feature.detach().numpy(), hand_feature, rtol=1e-5)

    loss, img, feat = izif_loss(x_t, rec_t, f, kappa=0.7)
    assert float(loss.detach()) == pytest.approx(float(np.mean(hand_image + 0.7 * hand_feature)), rel=1e-5)
    assert float(img.detach()) == pytest.approx(float(hand_image.mean()), rel=1e-5)
    assert float(feat.detach()) == pytest.approx(float(hand_feature.mean()), rel=1e-5)
    # the gradient reaches x̂ through both terms, and f(x) is a fixed target: dL/dx̂ by hand
    loss.backward()
    hand_grad = -(2 / 64 * d + 0.7 * 2 / 5 * (d @ w) @ w.T) / 2  # batch mean over 2 volumes
    np.testing.assert_allclose(rec_t.grad.numpy().reshape(2, -1), hand_grad, rtol=1e-4, atol=1e-6)


def test_features_are_d_h_on_every_slab_and_d_l_on_the_low_res_volume_of_each_volume_alone():
    cfg = get_preset("tiny", S)  # with medgen's minibatch standard deviation in D
    torch.manual_seed(0)
    D = build_networks(cfg)["D"]
    x = torch.rand(3, 1, S, S, S) * 2 - 1
    with torch.no_grad():
        f = discriminator_features(D, x)
        alone = torch.cat([discriminator_features(D, x[i : i + 1]) for i in range(3)])
        # by hand: D^H's strided convolutions on slab k of volume 1, D^L's on its trilinear 1/f downsampling
        k, n = 2, cfg.slab_len
        h = x[1:2, ..., k * n : (k + 1) * n]
        for conv in D.high.convs:
            h = leaky(conv(h))
        low = torch.nn.functional.interpolate(x[1:2], scale_factor=1 / cfg.lowres_factor, mode="trilinear")
        for conv in D.low.convs:
            low = leaky(conv(low))
    per_slab = h.numel()
    assert per_slab == cfg.channels(512) * 4 * 4 * 1  # 512·width channels on a 4 × 4 × 1 grid at 32³
    assert f.shape == (3, cfg.num_slabs * per_slab + low.numel())
    assert torch.allclose(f, alone, atol=1e-6)  # a volume's features do not depend on the rest of the batch
    assert torch.allclose(f[1, k * per_slab : (k + 1) * per_slab], h.flatten(), atol=1e-6)
    assert torch.allclose(f[1, cfg.num_slabs * per_slab :], low.flatten(), atol=1e-6)


# ---------------------------------------------------------------------- training on a trained HA-GAN


def test_g_and_d_stay_bit_identical_and_only_e_is_trained(runs):
    gan = ckpt_io.load_weights(runs["gan"])
    fan = ckpt_io.load_weights(runs["fanogan"])
    assert set(fan) == {"E", "G", "D"}
    for name, source in (("G", "G_ema"), ("D", "D")):  # G: the HA-GAN's EMA generator, what it samples with
        assert set(fan[name]) == set(gan[source])
        for key, value in gan[source].items():
            assert torch.equal(fan[name][key], value), f"{name}.{key} changed"
    assert any(not torch.equal(fan["E"][k], v) for k, v in gan["E"].items())
    assert set(ckpt_io.load_state(runs["fanogan"])["optimizers"]) == {"E"}


@pytest.mark.parametrize("generator_weights", ["ema", "trained"])
def test_encoder_starts_as_the_hagan_encoder_and_reproduces_its_reconstruction(runs, generator_weights):
    x = runs["held"][:2]
    cfg = registry.load(runs["fanogan"]).config
    nets = build_gan(cfg, "hagan", generator_weights)
    start = FAnoGANModel(cfg, nets["E"].eval(), nets["G"], nets["D"])
    hagan = registry.load(runs["gan"], use_ema=generator_weights == "ema")
    gan = ckpt_io.load_weights(runs["gan"])
    key = {"ema": "G_ema", "trained": "G"}[generator_weights]
    assert not torch.equal(gan["G"]["common.fc.weight"], gan["G_ema"]["common.fc.weight"])
    assert torch.equal(start.generator.common.fc.weight, gan[key]["common.fc.weight"])
    np.testing.assert_allclose(start.reconstruct(x), hagan.reconstruct(x), atol=1e-5)
    np.testing.assert_allclose(start.encode(x), hagan.encode(x), atol=1e-5)
    # encoder_init=random: E at random weights, the same G
    torch.manual_seed(0)
    rand = build_gan(cfg, "random", generator_weights)
    assert not torch.equal(rand["E"].ground.final_conv.weight, start.encoder.ground.final_conv.weight)
    assert torch.equal(rand["G"].common.fc.weight, start.generator.common.fc.weight)


def test_training_lowers_the_izif_loss_on_held_out_volumes(runs):
    x = runs["held"]
    before = initial_model(runs["fanogan"]).anomaly(x)["score"]
    after = registry.load(runs["fanogan"]).anomaly(x)["score"]
    # G is a 30-iteration HA-GAN, so its range bounds the gain (10 % here; 2-17 % over data seeds 0-4)
    assert after.mean() < 0.99 * before.mean(), (before, after)


def test_anomaly_score_map_and_reconstruction(runs):
    model = registry.load(runs["fanogan"])
    x = runs["held"]
    out = model.anomaly(x, batch_size=3)
    assert model.kappa == 0.5  # the run's κ
    assert out["score"].shape == (4,) and out["map"].shape == out["reconstruction"].shape == (4, S, S, S)
    assert all(v.dtype == np.float32 for v in out.values())
    rec = model.reconstruct(x)
    np.testing.assert_allclose(out["reconstruction"], rec, atol=1e-5)
    np.testing.assert_allclose(out["map"], np.abs(x - rec), atol=1e-5)
    np.testing.assert_allclose(out["score_image"], ((x - rec) ** 2).reshape(4, -1).mean(1), rtol=1e-4)
    np.testing.assert_allclose(out["score"], out["score_image"] + 0.5 * out["score_feature"], rtol=1e-6)
    assert (out["score_feature"] > 0).all() and np.abs(rec).max() <= 1.0
    # every input layout, chunked G^H, and options of other families' reconstructions ignored
    one = model.anomaly(x[1])
    assert one["score"][0] == pytest.approx(out["score"][1], rel=1e-5)
    np.testing.assert_allclose(model.reconstruct(torch.from_numpy(x[:, None]), chunk=2, seed=3), rec, atol=1e-5)
    assert model.encode(x[0]).shape == (1, get_preset("tiny", S).latent_dim)
    with pytest.raises(UsageError, match="16x16x16"):
        model.anomaly(np.zeros((16, 16, 16), np.float32))


def test_medgen_encode_reconstructs_with_g_of_e(runs, tmp_path):
    """f-AnoGAN has no decoder of codes: ``medgen encode --reconstruct`` writes its G(E(x)) instead."""
    import csv

    import nibabel as nib

    from medgen.cli import main

    out = tmp_path / "z.csv"
    assert main(["encode", str(runs["fanogan"]), str(runs["data"]), "--out", str(out), "--split", "all",
                 "--reconstruct", str(tmp_path / "rec"), "--device", "cpu", "--no-progress"]) == 0
    rows = list(csv.DictReader(open(out)))
    model = registry.load(runs["fanogan"])
    first = np.load(runs["data"] / "volumes" / f"{rows[0]['id']}.npy").astype(np.float32)
    rec = model.reconstruct(first)[0]
    assert float(rows[0]["recon_l1"]) == pytest.approx(float(np.abs(rec - first).mean()), rel=1e-4)
    written = np.asarray(nib.load(str(tmp_path / "rec" / f"{rows[0]['id']}.nii.gz")).dataobj, dtype=np.float32)
    assert written.shape == (S, S, S)


def test_a_bright_blob_raises_the_score_and_lights_up_the_map(runs):
    model = registry.load(runs["fanogan"])
    x = runs["held"]
    g = np.linspace(-1, 1, S)
    X, Y, Z = np.meshgrid(g, g, g, indexing="ij")
    blob = X ** 2 + Y ** 2 + (Z - 0.1) ** 2 < 0.25 ** 2  # inside every toy body
    x_blob = x.copy()
    x_blob[:, blob] = 1.0
    clean, ill = model.anomaly(x), model.anomaly(x_blob)
    assert (ill["score"] > clean["score"]).all(), (clean["score"], ill["score"])
    for i in range(len(x)):
        inside, outside = ill["map"][i][blob].mean(), ill["map"][i][~blob].mean()
        assert inside > 1.1 * outside, (i, inside, outside)  # 1.2-2.5 over data seeds 0-4
        assert inside > 3 * clean["map"][i][blob].mean()  # the same voxels without the blob: 5.8-9 times less


# ---------------------------------------------------------------------- the --generator run


def test_generator_must_be_an_existing_hagan_run(runs, tmp_path, capsys):
    from medgen.cli import main

    with pytest.raises(InputError, match="no such run folder"):
        model_config("tiny", S, generator_run=str(tmp_path / "missing"))
    other = tmp_path / "ddpm-run"
    RunConfig(data=str(runs["data"]), model={"size": S}, family="ddpm", preset="tiny").save(other)
    with pytest.raises(UsageError, match="a 'ddpm' run, not an HA-GAN"):
        model_config("tiny", S, generator_run=str(other))
    with pytest.raises(UsageError, match="needs --generator RUN"):
        model_config("tiny", S)
    with pytest.raises(UsageError, match="trained on 32³ volumes, the data are 64³"):
        model_config("tiny", 64, generator_run=str(runs["gan"]))
    with pytest.raises(UsageError, match="architecture is its HA-GAN run's"):
        model_config("tiny", S, generator_run=str(runs["gan"]), latent_dim=64)

    for generator, message in ((tmp_path / "missing", "no such run folder"),
                               (other, "a 'ddpm' run, not an HA-GAN ('hagan') one")):
        capsys.readouterr()
        code = main(["train", str(runs["data"]), "--family", "fanogan", "--generator", str(generator),
                     "--out", str(tmp_path / "out"), "--preset", "tiny", "--device", "cpu", "--no-progress"])
        err = capsys.readouterr().err
        assert code == 2 and err.strip().count("\n") == 0, err
        assert err.startswith("medgen train: error: --generator") and message in err
        assert not (tmp_path / "out").exists()


def test_a_hagan_run_without_encoder_starts_e_at_random_weights(runs, tmp_path, capsys):
    cfg = run_config(runs["data"], "hagan", get_preset("tiny", S).to_dict(), 1, {"use_encoder": False})
    registry.train(cfg, tmp_path / "gan", progress=False)
    fan = model_config("tiny", S, generator_run=str(tmp_path / "gan"))
    torch.manual_seed(0)
    hagan_init = build_gan(fan, "hagan")
    assert "has no encoder" in capsys.readouterr().err
    torch.manual_seed(0)
    random_init = build_gan(fan, "random")
    for a, b in zip(hagan_init["E"].parameters(), random_init["E"].parameters()):
        assert torch.equal(a, b)
