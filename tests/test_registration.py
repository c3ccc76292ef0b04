"""Learned registration: the metrics, warping, the SimpleITK baseline, the ``registration`` family and
``medgen register``, on toy volumes (16³–24³)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from medgen.cli import main
from medgen.core.errors import UsageError
from medgen.families import registry
from medgen.families.registration import train as reg_train
from medgen.families.registration.config import RegistrationHParams
from medgen.families.registration.network import folding_share
from medgen.inference.classical_registration import ClassicalRegistration
from medgen.inference.register import warp, world_displacement
from medgen.metrics.registration import (folding_fraction, jacobian_determinant, target_registration_error,
                                         warped_label_dice)
from medgen.training.runconfig import RunConfig
from toy_volumes import make_dataset

pytestmark = pytest.mark.usefixtures("one_thread")

S = 24


def grid(shape) -> np.ndarray:
    return np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij"))


def texture(seed: int, n: int = S, sigma: float = 2.0) -> np.ndarray:
    """Smooth random intensities in [-1, 1]: structure everywhere, so a displacement is observable everywhere."""
    v = gaussian_filter(np.random.default_rng(seed).normal(size=(n, n, n)), sigma)
    return np.clip(v / np.abs(v).max(), -1, 1).astype(np.float32)


def toy_subject(n: int, shift) -> tuple[np.ndarray, np.ndarray]:
    """A smoothed body ellipsoid with a dark and a bright inclusion, moved by ``shift`` voxels; and its body mask."""
    g = grid((n,) * 3) - (n - 1) / 2 - np.asarray(shift, float)[:, None, None, None]
    body = np.sqrt(((g / (np.array([0.36, 0.30, 0.33])[:, None, None, None] * n)) ** 2).sum(0)) < 1
    vol = np.where(body, 0.2, -1.0)
    for c, v in (((0.15, 0.05, 0.0), -0.6), ((-0.15, -0.05, 0.05), 0.7)):
        vol = np.where(np.sqrt(((g / n - np.array(c)[:, None, None, None]) ** 2).sum(0)) < 0.09, v, vol)
    return gaussian_filter(vol, 0.7).astype(np.float32), body.astype(np.int16)


def shifted_dataset(root: Path, n: int = 8, size: int = S, seed: int = 0, max_shift: float = 3.0) -> Path:
    """A preprocessed data set of ``toy_subject``s at random shifts, with their body masks as label volume ``tissue``."""
    (root / "volumes").mkdir(parents=True)
    (root / "tissues").mkdir()
    rng = np.random.default_rng(seed)
    rows = ["id,source,orig_shape,orig_spacing,spacing,file,label,tissue"]
    for i in range(n):
        vol, mask = toy_subject(size, rng.uniform(-max_shift, max_shift, 3))
        np.save(root / "volumes" / f"s{i}.npy", vol.astype(np.float16))
        np.save(root / "tissues" / f"s{i}.npy", mask)
        rows.append(f"s{i},s{i}.nii.gz,{size}x{size}x{size},1x1x1,1x1x1,volumes/s{i}.npy,0,tissues/s{i}.npy")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    (root / "preprocess.json").write_text(json.dumps({
        "modality": "mri", "size": size,
        "volumes": {"image": {"kind": "intensity", "dtype": "float16"},
                    "tissue": {"kind": "label", "dtype": "int16", "classes": {"0": "background", "1": "body"}}}}))
    return root


def run_config(data: Path, iters: int, size: int = S, model: dict | None = None, hparams: dict | None = None,
               **kw) -> RunConfig:
    fam = registry.get("registration")
    base = dict(data=str(data), model=model or fam.model_config("tiny", size).to_dict(), family="registration",
                hparams=fam.hparams_from_dict(hparams or {}).to_dict(), preset="tiny", iters=iters, batch=4,
                device="cpu", log_every=1, sample_every=0, ckpt_every=1000, ema_decay=0.0,
                split_fractions=(1.0, 0.0, 0.0))
    base.update(kw)
    return RunConfig(**base)


# ----------------------------------------------------------------------------- metrics


def test_jacobian_of_an_affine_field_is_det_of_i_plus_a():
    A = np.array([[0.10, -0.05, 0.02], [0.03, -0.20, 0.04], [-0.06, 0.01, 0.15]])
    b = np.array([1.5, -2.0, 0.5])
    u = np.einsum("ij,jxyz->ixyz", A, grid((12, 10, 14))) + b[:, None, None, None]
    expected = np.linalg.det(np.eye(3) + A)
    jac = jacobian_determinant(u)
    assert jac.shape == (12, 10, 14)
    np.testing.assert_allclose(jac[1:-1, 1:-1, 1:-1], expected, rtol=1e-12)
    # the same transform with u in millimetres along the axes (voxels of 2 × 1.5 × 0.5 mm): the same determinant
    spacing = np.array([2.0, 1.5, 0.5])
    np.testing.assert_allclose(jacobian_determinant(u * spacing[:, None, None, None], spacing=spacing)[1:-1, 1:-1, 1:-1],
                               expected, rtol=1e-12)
    # no displacement: 1 everywhere; a uniform scaling by 1.1: 1.1³
    assert np.allclose(jacobian_determinant(np.zeros((3, 5, 5, 5))), 1.0)
    np.testing.assert_allclose(jacobian_determinant(0.1 * grid((6, 6, 6))), 1.1 ** 3, rtol=1e-12)


def test_folding_share_of_a_field_that_folds_in_half_the_volume():
    n = 16
    g = grid((n,) * 3)
    u = np.zeros((3, n, n, n))
    u[0] = -1.5 * g[0] * (g[1] < n / 2)  # ∂u₀/∂x₀ = −1.5 where y < n/2: det(I + ∇u) = −0.5 there, 1 elsewhere
    jac = jacobian_determinant(u)
    np.testing.assert_allclose(jac[:, g[1][0, :, 0] < n / 2, :], -0.5, rtol=1e-12)
    np.testing.assert_allclose(jac[:, g[1][0, :, 0] >= n / 2, :], 1.0, rtol=1e-12)
    assert folding_fraction(jac) == pytest.approx(0.5)
    assert folding_fraction(jac, mask=g[1] < n / 2) == 1.0 and folding_fraction(jac, mask=g[1] >= n / 2) == 0.0
    # the training loop's own measure (interior voxels, torch) agrees
    assert float(folding_share(torch.from_numpy(u)[None])) == pytest.approx(0.5)
    assert float(folding_share(torch.zeros(1, 3, 8, 8, 8))) == 0.0


def test_warping_by_zero_is_the_identity_and_by_an_integer_shift_shifts_exactly():
    vol = texture(1, 16)
    labels = (vol > 0).astype(np.int16) + (vol > 0.5)
    zero = np.zeros((3, 16, 16, 16))
    np.testing.assert_allclose(warp(vol, zero), vol, atol=1e-6)
    assert np.array_equal(warp(labels, zero, mode="nearest"), labels)
    shift = (2, -1, 3)
    u = np.broadcast_to(np.array(shift, float)[:, None, None, None], (3, 16, 16, 16))
    out, out_labels = warp(vol, u), warp(labels, u, mode="nearest")
    assert out_labels.dtype == np.int16
    # warped(p) = moving(p + u): voxel (i, j, k) takes (i + 2, j − 1, k + 3), wherever that lies inside
    np.testing.assert_allclose(out[:-2, 1:, :-3], vol[2:, :-1, 3:], atol=1e-5)
    assert np.array_equal(out_labels[:-2, 1:, :-3], labels[2:, :-1, 3:])
    # outside the volume: the border voxel
    np.testing.assert_allclose(out[-1, 5, 0], vol[-1, 4, 3], atol=1e-5)
    with pytest.raises(UsageError):
        warp(vol, zero[:2])


def test_target_registration_error_of_a_known_field():
    n = 8
    true = np.zeros((3, n, n, n))
    true[0] = 1.0
    est = true.copy()
    est[2, : n // 2] = 1.0  # off by one voxel along z in half the volume
    tre = target_registration_error(est, true, spacing=(1.0, 1.0, 2.0))  # 2 mm voxels along z
    assert tre == pytest.approx({"mean": 1.0, "median": 1.0, "p95": 2.0, "max": 2.0})
    half = np.zeros((n, n, n), bool)
    half[: n // 2] = True
    assert target_registration_error(est, true, (1.0, 1.0, 2.0), mask=half)["mean"] == pytest.approx(2.0)
    assert target_registration_error(est, true, (1.0, 1.0, 2.0), mask=~half)["max"] == 0.0
    # no estimate at all: the error is the true displacement, 1 voxel of 3 mm
    assert target_registration_error(np.zeros_like(true), true, (3.0, 1.0, 1.0))["median"] == pytest.approx(3.0)


def test_dice_of_warped_label_maps():
    fixed = np.zeros((12, 12, 12), np.int16)
    fixed[4:8, 4:8, 4:8] = 1
    fixed[1:3, 1:3, 1:3] = 2
    moving = np.roll(fixed, 1, axis=0)  # one voxel further along x
    before = warped_label_dice(moving, fixed)
    assert before["dice_1"] == pytest.approx(2 * 48 / 128) and before["dice_2"] == pytest.approx(2 * 4 / 16)
    u = np.zeros((3, 12, 12, 12))
    u[0] = 1.0  # warped(p) = moving(p + e_x) = fixed(p)
    after = warped_label_dice(warp(moving, u, mode="nearest"), fixed)
    assert after == {"dice_1": 1.0, "dice_2": 1.0, "dice_mean": 1.0}


# ----------------------------------------------------------------------------- classical baseline


def smooth_field(n: int, amplitude: float) -> np.ndarray:
    g = grid((n,) * 3) / (n - 1)
    u = np.zeros((3, n, n, n))
    u[0] = amplitude * np.sin(np.pi * g[1])
    u[1] = 0.75 * amplitude * np.cos(np.pi * g[2]) * np.sin(np.pi * g[0])
    u[2] = 0.5 * amplitude
    return u


@pytest.mark.slow
def test_classical_bspline_recovers_a_known_smooth_displacement():
    n = S
    true = smooth_field(n, 2.0)
    moving = texture(3, n)
    fixed = warp(moving, true)  # fixed(p) = moving(p + u_true(p))
    inner = np.zeros((n, n, n), bool)
    inner[3:-3, 3:-3, 3:-3] = True
    out = ClassicalRegistration(iterations=30).register(moving, fixed)
    assert set(out) == {"warped", "displacement", "jacobian"}
    assert out["displacement"].shape == (3, n, n, n) and out["warped"].shape == out["jacobian"].shape == (n, n, n)
    shift = target_registration_error(np.zeros_like(true), true, mask=inner)["mean"]
    tre = target_registration_error(out["displacement"], true, mask=inner)
    assert shift > 1.4 and tre["mean"] < 0.15 * shift and tre["p95"] < 0.3 * shift, tre
    assert folding_fraction(out["jacobian"]) == 0.0
    np.testing.assert_allclose(out["jacobian"], jacobian_determinant(out["displacement"]), rtol=1e-4, atol=1e-4)
    assert np.mean((out["warped"] - fixed) ** 2) < 0.1 * np.mean((moving - fixed) ** 2)
    # demons: the same convention; deterministic
    d1 = ClassicalRegistration(method="demons", iterations=50).register(moving, fixed)
    d2 = ClassicalRegistration(method="demons", iterations=50).register(moving, fixed)
    assert np.array_equal(d1["displacement"], d2["displacement"])
    assert target_registration_error(d1["displacement"], true, mask=inner)["mean"] < 0.3 * shift
    with pytest.raises(UsageError):
        ClassicalRegistration(method="affine")


def test_scaling_and_squaring_of_a_zero_velocity_is_zero_and_of_a_constant_one_is_that_translation():
    """The registration network's integration (MONAI DVF2DDF, as the family builds it): exp(0) = identity,
    and a stationary constant velocity integrates to the translation by that vector."""
    from medgen.families.registration.config import RegistrationConfig
    from medgen.families.registration.network import build_network

    net = build_network(RegistrationConfig.from_dict(registry.get("registration").model_config("tiny", 16).to_dict()))
    integrate = net.voxelmorph.dvf2ddf
    with torch.no_grad():
        assert torch.count_nonzero(integrate(torch.zeros(1, 3, 16, 16, 16))) == 0
        v = torch.tensor([1.5, -0.75, 2.0]).reshape(1, 3, 1, 1, 1).expand(1, 3, 16, 16, 16).contiguous()
        ddf = integrate(v)
    # zero padding: exact wherever the points sampled during the squarings stay inside (5 voxels from the border)
    inner = (slice(None), slice(None), slice(5, -5), slice(5, -5), slice(5, -5))
    torch.testing.assert_close(ddf[inner], v[inner], atol=1e-5, rtol=0)
    assert float((ddf - v).abs().max()) > 0.1  # at the border the zeros outside do enter


@pytest.mark.parametrize("method", ["bspline", "demons"])
def test_a_known_translation_is_recovered(method):
    shift = np.array([2.0, -1.0, 1.5])
    moving = texture(5, S)
    fixed = warp(moving, np.broadcast_to(shift[:, None, None, None], (3, S, S, S)))  # fixed(p) = moving(p + t)
    out = ClassicalRegistration(method=method, iterations=60).register(moving, fixed)
    inner = out["displacement"][:, 5:-5, 5:-5, 5:-5].reshape(3, -1)
    np.testing.assert_allclose(np.median(inner, axis=1), shift, atol=0.25)


# ----------------------------------------------------------------------------- the family


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained 40 iterations on random pairs of shifted toy subjects (24³)."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("reg")
    data = shifted_dataset(root / "data")
    run = root / "run"
    registry.train(run_config(data, 40, hparams={"lr": 3e-3}), run, progress=False)
    return data, run


@pytest.mark.slow
def test_a_tiny_model_learns_to_register_shifted_volumes(trained):
    data, run = trained
    model = registry.load(run)
    untrained = registry.build_untrained(run, seed=0)
    hp = RegistrationHParams.from_dict(dict(model.run_config.hparams))
    rng = np.random.default_rng(123)
    identity, before, after, folds = [], [], [], []
    for _ in range(4):  # held-out pairs: new subjects at new shifts
        m, f = toy_subject(S, rng.uniform(-3, 3, 3))[0], toy_subject(S, rng.uniform(-3, 3, 3))[0]
        loss = lambda a: float(reg_train.similarity_loss(torch.from_numpy(a)[None, None], torch.from_numpy(f)[None, None], hp))
        identity.append(loss(m))
        before.append(loss(untrained.register(m, f)["warped"]))
        out = model.register(m, f)
        after.append(loss(out["warped"]))
        folds.append(folding_fraction(out["jacobian"]))
    identity, before, after = np.mean(identity), np.mean(before), np.mean(after)
    assert before == pytest.approx(identity, abs=1e-3)  # the untrained network is the identity transform
    assert after < identity - 0.05, (identity, after)  # −LNCC: lower is better
    assert max(folds) < 0.01
    columns = open(run / "metrics.csv").readline().strip().split(",")
    assert columns[:4] == ["iteration", "loss_sim", "loss_reg", "loss_fold"]


@pytest.mark.slow
def test_the_loaded_model_registers_and_warps_with_the_documented_convention(trained):
    _, run = trained
    model = registry.load(run)
    m, f = toy_subject(S, (2.0, 0.0, 0.0))[0], toy_subject(S, (0.0, 0.0, 0.0))[0]
    out = model.register(m, f)
    assert out["warped"].shape == out["jacobian"].shape == (S, S, S) and out["displacement"].shape == (3, S, S, S)
    assert all(v.dtype == np.float32 for v in out.values())
    np.testing.assert_allclose(out["jacobian"], jacobian_determinant(out["displacement"]), rtol=1e-5, atol=1e-5)
    # warped is the moving image resampled at p + u(p) (what model.warp does)
    np.testing.assert_allclose(model.warp(m, out["displacement"]), out["warped"], atol=1e-4)
    # sizes that are not a multiple of the network's divisor are padded and cropped back
    odd = model.register(m[:22, :21, :23], f[:22, :21, :23])
    assert odd["displacement"].shape == (3, 22, 21, 23)
    with pytest.raises(UsageError):
        model.register(m, f[:20])
    assert model.atlas is None


def test_variants_dice_adversarial_and_synthetic_pairs_resume_exactly(tmp_path):
    data = make_dataset(tmp_path / "data", n=4, size=16, labels=True)
    fam = registry.get("registration")
    # weakly supervised (Dice on the label volume), adversarial, plain displacement (no integration)
    model = fam.model_config("tiny", 16, target="tissue", num_classes=2, integration_steps=0).to_dict()
    hp = {"seg_weight": 1.0, "adversarial_weight": 0.1, "pairs": "synthetic", "similarity": "mse",
          "regularizer": "diffusion"}
    cfg = lambda iters: run_config(data, iters, 16, model=model, hparams=hp, batch=2)
    full = registry.train(cfg(4), tmp_path / "full", progress=False)
    registry.train(cfg(2), tmp_path / "split", progress=False)
    resumed = registry.train(cfg(4), tmp_path / "split", resume=True, progress=False)
    a, b = full.models.weights(), resumed.models.weights()
    assert set(a) == {"net", "D"}
    for name in a:
        for key in a[name]:
            assert torch.equal(a[name][key], b[name][key]), f"{name}.{key} differs after resume"
    columns = open(tmp_path / "full" / "metrics.csv").readline().strip().split(",")
    assert columns[1:7] == ["loss_sim", "loss_reg", "loss_dice", "loss_D", "loss_adv", "loss_fold"]
    assert set(registry.load(tmp_path / "full").network.state_dict()) == set(a["net"])


def test_medgen_train_resumes_a_weakly_supervised_run_given_the_same_target(tmp_path, capsys):
    """--target is an option that sets the config's ``label``: resuming with it again is the same run; adding it
    to an unsupervised run is not."""
    data = make_dataset(tmp_path / "data", n=4, size=16, labels=True)
    base = ["train", str(data), "--family", "registration", "--preset", "tiny", "--batch", "2", "--device", "cpu",
            "--no-progress"]
    sup = base + ["--target", "tissue", "--out", str(tmp_path / "sup")]
    assert main(sup + ["--iters", "1"]) == 0
    assert main(sup + ["--iters", "2", "--resume"]) == 0
    assert RunConfig.load(tmp_path / "sup").model["label"] == "tissue"
    plain = base + ["--out", str(tmp_path / "plain")]
    assert main(plain + ["--iters", "1"]) == 0
    capsys.readouterr()
    assert main(plain + ["--iters", "2", "--resume", "--target", "tissue"]) == 2
    err = capsys.readouterr().err
    assert "differ from the saved run" in err and "model.label" in err


def test_atlas_to_subject_runs_store_their_atlas(tmp_path):
    data = make_dataset(tmp_path / "data", n=4, size=16)
    atlas = np.load(data / "volumes" / "v0.npy").astype(np.float32)
    np.save(tmp_path / "atlas.npy", atlas)
    for ref in (str(tmp_path / "atlas.npy"), f"{data}:v0"):
        run = tmp_path / f"run{len(ref)}"
        registry.train(run_config(data, 2, 16, hparams={"atlas": ref}), run, progress=False)
        model = registry.load(run)
        np.testing.assert_array_equal(model.atlas, atlas)
        assert model.register(model.atlas, atlas)["warped"].shape == (16, 16, 16)
    np.save(tmp_path / "bad.npy", atlas[:8])
    with pytest.raises(Exception, match="shape"):
        registry.train(run_config(data, 1, 16, hparams={"atlas": str(tmp_path / "bad.npy")}), tmp_path / "bad",
                       progress=False)


def test_settings_are_checked_in_one_line(tmp_path):
    from medgen.families.run_config import new_run_config

    data = make_dataset(tmp_path / "data", n=4, size=16, labels=True)
    cfg = new_run_config(data, tmp_path / "run", family="registration", preset="tiny", model_options={"target": "tissue"})
    assert cfg.model["label"] == "tissue" and cfg.model["num_classes"] == 2
    fam = registry.get("registration")
    with pytest.raises(UsageError, match="label volume"):  # num_classes means the classes of a label volume
        fam.model_config("tiny", 16, num_classes=2)
    with pytest.raises(UsageError, match="multiple of 4"):
        fam.model_config("tiny", 18)
    for bad in ({"similarity": "ssim"}, {"lncc_window": 4}, {"pairs": "synthetic", "atlas": "a.npy"}, {"reg_weight": -1}):
        with pytest.raises(UsageError):
            fam.hparams_from_dict(bad)
    with pytest.raises(UsageError, match="--target"):
        fam.build(fam.model_config("tiny", 16), fam.hparams_from_dict({"seg_weight": 1.0}), torch.device("cpu"))
    with pytest.raises(UsageError, match="no label volume"):
        new_run_config(data, tmp_path / "run", family="registration", model_options={"target": "image"})


# ----------------------------------------------------------------------------- medgen register


def write_scan(path: Path, array: np.ndarray, affine: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(np.asarray(array), affine), str(path))
    return path


def test_medgen_register_classical_writes_on_the_fixed_affine(tmp_path, capsys):
    n = 16
    true = smooth_field(n, 1.5)
    moving = texture(5, n, sigma=1.5)
    fixed = warp(moving, true)
    affine = np.array([[2.0, 0, 0, -14.0], [0, 1.5, 0, 7.0], [0, 0, 1.0, 3.0], [0, 0, 0, 1]])
    labels_m = (moving > 0).astype(np.int16)
    labels_f = warp(labels_m, true, mode="nearest")
    write_scan(tmp_path / "m.nii.gz", 400 * moving, np.diag([1.0, 1, 1, 1]))  # MOVING's affine is not used
    write_scan(tmp_path / "f.nii.gz", 400 * fixed, affine)
    write_scan(tmp_path / "lm.nii.gz", labels_m, affine)
    write_scan(tmp_path / "lf.nii.gz", labels_f, affine)
    out = tmp_path / "out"
    code = main(["register", "classical", str(tmp_path / "m.nii.gz"), str(tmp_path / "f.nii.gz"), "--out", str(out),
                 "--method", "demons", "--labels", str(tmp_path / "lm.nii.gz"), "--fixed-labels", str(tmp_path / "lf.nii.gz")])
    assert code == 0 and "folding" in capsys.readouterr().out
    for name in ("warped", "displacement", "jacobian", "warped_labels"):
        img = nib.load(str(out / f"{name}.nii.gz"))
        np.testing.assert_allclose(img.affine, affine)
        assert img.shape == ((n, n, n, 3) if name == "displacement" else (n, n, n))
    u_mm = np.asarray(nib.load(str(out / "displacement.nii.gz")).dataobj)
    jac = np.asarray(nib.load(str(out / "jacobian.nii.gz")).dataobj)
    u_vox = np.stack([u_mm[..., d] / affine[d, d] for d in range(3)])  # mm along the world axes → voxels
    np.testing.assert_allclose(jac, jacobian_determinant(u_vox), atol=1e-4)
    np.testing.assert_allclose(world_displacement(u_vox, affine), u_mm, atol=1e-4)
    inner = (slice(3, -3),) * 3
    assert np.abs(u_vox - true)[(slice(None), *inner)].mean() < 0.3 * np.abs(true)[(slice(None), *inner)].mean()
    warped = np.asarray(nib.load(str(out / "warped.nii.gz")).dataobj)  # in MOVING's units
    assert np.mean((warped - 400 * fixed)[inner] ** 2) < 0.2 * np.mean((400 * (moving - fixed))[inner] ** 2)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["folding_percent"] == 0.0 and summary["runtime_s"] > 0
    assert summary["similarity"]["after"]["mse"] < summary["similarity"]["before"]["mse"]
    assert summary["dice"]["after"]["dice_1"] > summary["dice"]["before"]["dice_1"]
    assert summary["spacing_mm"] == [2.0, 1.5, 1.0]
    assert (out / "figure.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob("*.tmp*")) and not list(out.glob(".*"))


@pytest.mark.slow
def test_medgen_register_with_a_run_on_data_set_subjects(trained, tmp_path, capsys):
    data, run = trained
    out = tmp_path / "out"
    code = main(["register", str(run), f"{data}:s0", f"{data}:s1", "--out", str(out), "--device", "cpu",
                 "--labels", f"{data}:s0:tissue", "--fixed-labels", f"{data}:s1:tissue"])
    assert code == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["registrar"] == str(run) and summary["dice"]["after"]["dice_1"] > summary["dice"]["before"]["dice_1"]
    img = nib.load(str(out / "warped.nii.gz"))
    np.testing.assert_allclose(img.affine, np.eye(4))  # diag(spacing) of the data set's 1 mm voxels
    np.testing.assert_allclose(np.asarray(img.dataobj), registry.load(run).register(
        np.load(data / "volumes" / "s0.npy").astype(np.float32), np.load(data / "volumes" / "s1.npy").astype(np.float32)
    )["warped"], atol=1e-4)
    assert set(np.unique(np.asarray(nib.load(str(out / "warped_labels.nii.gz")).dataobj))) <= {0, 1}
    # one-line errors, exit code 2
    for argv, message in (
        ([str(run), f"{data}:nobody", f"{data}:s1"], "no subject 'nobody'"),
        ([str(run), str(data), f"{data}:s1"], "name a subject"),
        ([str(run), f"{data}:s0", str(tmp_path / "missing.nii.gz")], "no such scan"),
        ([str(run), "atlas", f"{data}:s1"], "not an atlas-to-subject run"),
        ([str(run), f"{data}:s0", f"{data}:s1", "--fixed-labels", f"{data}:s1:tissue"], "--labels"),
        ([str(run), f"{data}:s0", f"{data}:s1", "--labels", f"{data}:s0"], "not a label map"),
    ):
        capsys.readouterr()
        assert main(["register", *argv, "--out", str(tmp_path / "err")]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    np.save(tmp_path / "small.npy", np.zeros((8, 8, 8), np.float32))
    assert main(["register", str(run), str(tmp_path / "small.npy"), f"{data}:s1", "--out", str(tmp_path / "err")]) == 2
    assert "one voxel grid" in capsys.readouterr().err
