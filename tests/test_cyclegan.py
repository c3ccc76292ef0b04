"""cyclegan: the first iteration's losses against the paper's definitions recomputed by hand, the image pool,
learning B = −A from unpaired volumes, ``medgen unpair`` pairing subjects by its seeded permutation, and
``medgen translate --direction`` running the other generator."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medgen.cli import main
from medgen.core.errors import UsageError
from medgen.core.volume import hounsfield_int16
from medgen.data.dataset import VolumeDataset, load_manifest
from medgen.families import registry
from medgen.families.cyclegan.config import CycleGANHParams, model_config
from medgen.families.cyclegan.train import ImagePool, build_discriminator
from medgen.families.unet.network import build_unet, predict
from medgen.training.distributed import InfiniteBatchSampler
from toy_volumes import make_dataset

pytestmark = pytest.mark.usefixtures("one_thread")
TRAIN = ["--family", "cyclegan", "--preset", "tiny", "--batch", "2", "--split-fractions", "1,0,0", "--sample-every", "0",
         "--no-progress"]


def metrics(run: Path) -> list[dict[str, float]]:
    with open(run / "metrics.csv", newline="") as fh:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def negated_set(root: Path, n: int, seed: int, size: int = 16) -> Path:
    """A toy data set whose images are negated: domain B = −A, of subjects of its own."""
    data = make_dataset(root, n=n, size=size, seed=seed)
    for p in (data / "volumes").glob("*.npy"):
        np.save(p, -np.load(p))
    return data


def test_first_iteration_losses_match_the_definitions(tmp_path):
    """Iteration 1's logged losses == CycleGAN's losses written out by hand, from the same initial weights (seeded
    as the trainer seeds: G_AB, G_BA, D_A, D_B) and the same batch: every term of the first iteration is computed
    before any update of the network it goes through."""
    data = make_dataset(tmp_path / "data", n=4, size=16, unpaired=True)
    assert main(["train", str(data), "--out", str(tmp_path / "run"), "--iters", "1", "--log-every", "1", *TRAIN]) == 0
    logged = metrics(tmp_path / "run")[0]

    cfg = model_config("tiny", 16)
    torch.manual_seed(0)
    G_AB, G_BA = build_unet(cfg.generator("AtoB")), build_unet(cfg.generator("BtoA"))
    D_A, D_B = build_discriminator(cfg), build_discriminator(cfg)
    ds = VolumeDataset(data, split="train", seed=0, fractions=(1.0, 0.0, 0.0), label_column=None)
    idx = InfiniteBatchSampler(len(ds), 2, seed=0).global_batch_indices(0)

    def batch(folder: str) -> torch.Tensor:
        return torch.from_numpy(np.stack([np.load(data / folder / f"{ds.ids[i]}.npy").astype(np.float32)
                                          for i in idx])[:, None])

    a, b = batch("volumes"), batch("bs")
    with torch.no_grad():
        fake_b, fake_a = G_AB(a), G_BA(b)  # not residual: the generators output the other domain's volume
        expected = {
            "cycle_A": (G_BA(fake_b) - a).abs().mean(), "cycle_B": (G_AB(fake_a) - b).abs().mean(),
            "idt_A": (G_BA(a) - a).abs().mean(), "idt_B": (G_AB(b) - b).abs().mean(),
            "G_AB": ((D_B(fake_b)[-1] - 1) ** 2).mean(), "G_BA": ((D_A(fake_a)[-1] - 1) ** 2).mean(),
            # the pools are empty at first: D judges this batch's generated volumes
            "D_A": 0.5 * (((D_A(a)[-1] - 1) ** 2).mean() + (D_A(fake_a)[-1] ** 2).mean()),
            "D_B": 0.5 * (((D_B(b)[-1] - 1) ** 2).mean() + (D_B(fake_b)[-1] ** 2).mean()),
        }
    assert set(k for k in logged if k.startswith("loss_")) == {f"loss_{k}" for k in expected}
    for name, value in expected.items():
        assert logged[f"loss_{name}"] == pytest.approx(float(value), rel=1e-4), name
    # a cycle that is the identity is not what an untrained pair does: the check above is not vacuous
    assert expected["cycle_A"] > 0.1


def test_the_image_pool_keeps_past_volumes_and_restores_from_its_state():
    """Filling: each volume is judged as it is. Full: with probability ½ a stored one is judged instead and the new
    one takes its slot (the paper's rule, with the same draws); a pool restored from its state continues alike."""
    rng, reference_rng = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    pool, stored = ImagePool(3, (1, 2, 2, 2)), []
    swapped = 0
    for step in range(8):
        fakes = torch.full((2, 1, 2, 2, 2), float(step)) + torch.tensor([0.0, 0.5]).view(2, 1, 1, 1, 1)
        if step == 5:  # checkpoint and restore mid-way
            state = {k: v.clone() for k, v in pool.state_dict().items()}
            pool = ImagePool(3, (1, 2, 2, 2))
            pool.load_state_dict(state)
        out = pool.query(fakes, rng)
        swap = torch.rand(2, generator=reference_rng, dtype=torch.float64) > 0.5
        slot = torch.randint(3, (2,), generator=reference_rng)
        for i in range(2):
            if len(stored) < 3:
                stored.append(fakes[i].clone())
                assert torch.equal(out[i], fakes[i])
            elif swap[i]:
                assert torch.equal(out[i], stored[slot[i]])
                stored[slot[i]] = fakes[i].clone()
                swapped += 1
            else:
                assert torch.equal(out[i], fakes[i])
        assert torch.equal(pool.images[:len(stored)], torch.stack(stored)) and int(pool.count) == len(stored)
    assert int(pool.count) == 3 and 0 < swapped < 10


@pytest.mark.slow
def test_unpaired_training_on_b_equal_minus_a_learns_both_directions(tmp_path):
    """A and B = −A of other subjects, paired by nothing: 60 iterations bring the cycle loss down and both
    translations closer to the truth (−a, −b) than the untrained generators."""
    a_data, b_data = make_dataset(tmp_path / "A", n=6, size=16, seed=0), negated_set(tmp_path / "B", n=6, seed=1)
    assert main(["unpair", str(a_data), str(b_data), str(tmp_path / "AB"), "--no-progress"]) == 0
    run = tmp_path / "run"
    assert main(["train", str(tmp_path / "AB"), "--out", str(run), "--iters", "60", "--log-every", "1", *TRAIN]) == 0
    rows = metrics(run)
    for name in ("loss_cycle_A", "loss_cycle_B"):
        first, last = np.mean([r[name] for r in rows[:3]]), np.mean([r[name] for r in rows[-10:]])
        assert last < 0.7 * first, (name, first, last)

    model, untrained = registry.load(run), registry.build_untrained(run, seed=0)
    a = [np.load(a_data / "volumes" / f"v{i}.npy").astype(np.float32) for i in range(6)]
    b = [np.load(b_data / "volumes" / f"v{i}.npy").astype(np.float32) for i in range(6)]
    for direction, inputs in (("AtoB", a), ("BtoA", b)):
        errors = [np.mean([np.abs(m.translate(x, direction=direction) + x).mean() for x in inputs])
                  for m in (model, untrained)]
        assert errors[0] < 0.8 * errors[1], (direction, errors)


def test_unpair_pairs_subjects_by_the_seeded_permutation(tmp_path, capsys):
    a_data = make_dataset(tmp_path / "A", n=5, size=16, seed=0)
    b_data = negated_set(tmp_path / "B", n=3, seed=1)
    expected = {}
    for seed in (0, 3):
        out = tmp_path / f"AB{seed}"
        assert main(["unpair", str(a_data), str(b_data), str(out), "--seed", str(seed), "--no-progress"]) == 0
        assert "wrote 5 subjects" in capsys.readouterr().out
        rows = load_manifest(out)
        sigma = np.random.Generator(np.random.PCG64(seed)).permutation(3)
        b_ids = sorted(r["id"] for r in load_manifest(b_data))
        expected[seed] = {a: b_ids[sigma[i % 3]] for i, a in enumerate(sorted(r["id"] for r in rows))}
        assert [r["id"] for r in rows] == [r["id"] for r in load_manifest(a_data)]
        assert {r["id"]: r["b_id"] for r in rows} == expected[seed]
        assert set(expected[seed].values()) == set(b_ids)  # fewer B subjects: they cycle, each used
        for r in rows:  # the image is A's own; b is the image of the B subject named in b_id, unchanged
            np.testing.assert_array_equal(np.load(out / r["file"]), np.load(a_data / "volumes" / f"{r['id']}.npy"))
            np.testing.assert_array_equal(np.load(out / r["b"]), np.load(b_data / "volumes" / f"{r['b_id']}.npy"))
        ds = VolumeDataset(out, split="all", label_column=None, keys=("image", "b"))
        assert len(ds) == 5 and ds[0]["b"].shape == (1, 16, 16, 16)
        info = json.loads((out / "preprocess.json").read_text())
        assert info["unpaired"]["seed"] == seed and info["unpaired"]["b_preprocess"]["size"] == 16
        assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temporary folder left
    assert expected[0] != expected[3]


def test_unpair_refusals_are_one_line_with_exit_code_2(tmp_path, capsys):
    a_data = make_dataset(tmp_path / "A", n=3, size=16, seed=0)
    small = make_dataset(tmp_path / "B8", n=3, size=8, seed=1)
    cases = [
        ([str(a_data), str(small), str(tmp_path / "o1")], "8³ volumes, but"),
        ([str(a_data), str(tmp_path / "nowhere"), str(tmp_path / "o2")], "not a preprocessed data set"),
        ([str(a_data), str(a_data), str(tmp_path / "o3")], "both A_DATA and B_DATA"),
        ([str(make_dataset(tmp_path / "AB", n=3, size=16, unpaired=True)), str(a_data), str(tmp_path / "o4")],
         "already has a 'b' volume"),
    ]
    for argv, message in cases:
        assert main(["unpair", *argv, "--no-progress"]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
        assert not Path(argv[2]).exists()
    b_data = negated_set(tmp_path / "B", n=3, seed=1)
    out = tmp_path / "out"
    assert main(["unpair", str(a_data), str(b_data), str(out), "--no-progress"]) == 0
    assert main(["unpair", str(a_data), str(b_data), str(out), "--seed", "1", "--no-progress"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["unpair", str(a_data), str(b_data), str(out), "--seed", "1", "--overwrite", "--no-progress"]) == 0
    assert json.loads((out / "preprocess.json").read_text())["unpaired"]["seed"] == 1


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """A 2-iteration cyclegan run on an unpaired set of CT (A) and MRI (B) toy volumes."""
    root = tmp_path_factory.mktemp("cyclegan")
    a_data = make_dataset(root / "A", n=4, size=16, seed=0)
    b_data = negated_set(root / "B", n=4, seed=1)
    info = json.loads((b_data / "preprocess.json").read_text())
    info.update(modality="mri", percentiles=[0.5, 99.5])
    (b_data / "preprocess.json").write_text(json.dumps(info))
    assert main(["unpair", str(a_data), str(b_data), str(root / "AB"), "--no-progress"]) == 0
    assert main(["train", str(root / "AB"), "--out", str(root / "run"), "--iters", "2", *TRAIN]) == 0
    return root / "run", root / "AB"


def test_translate_direction_runs_the_other_generator(trained, tmp_path):
    run, data = trained
    model = registry.load(run)
    assert (model.config.inputs, model.config.target) == (("image",), "b")
    back = model.with_direction("BtoA")
    assert (back.config.inputs, back.config.target) == (("b",), "image")
    for direction, net, volume in (("AtoB", model.g_ab, "image"), ("BtoA", model.g_ba, "b")):
        out = tmp_path / direction
        assert main(["translate", str(run), str(data), "--out", str(out), "--direction", direction, "--no-progress"]) == 0
        assert not (out / "metrics.json").exists()  # an unpaired set: its image and b are different subjects
        cfg = model.with_direction(direction).config
        for row in load_manifest(data):
            x = torch.from_numpy(np.load(data / row["file" if volume == "image" else "b"]).astype(np.float32))[None, None]
            with torch.no_grad():
                direct = predict(net, x, cfg)[0, 0].clamp(-1, 1).numpy()
            np.testing.assert_allclose(np.load(out / "outputs" / f"{row['id']}.npy"), direct, atol=1e-6)
    forth, other = np.load(tmp_path / "AtoB" / "outputs" / "v0.npy"), np.load(tmp_path / "BtoA" / "outputs" / "v0.npy")
    assert np.abs(forth - other).max() > 1e-3
    # the model reads a volume array or a dict holding its input volume, as unet's does
    v = np.load(data / "bs" / "v0.npy").astype(np.float32)
    np.testing.assert_array_equal(back.input_channels(v), back.input_channels({"b": v}))
    np.testing.assert_array_equal(model.translate({"b": v}, direction="BtoA"), back.translate(v))
    with pytest.raises(UsageError, match="missing b"):
        back.translate({"image": v})


def test_scans_are_normalised_as_their_domain_and_written_in_the_other_domains_units(trained, tmp_path):
    """A is CT, B is MRI: a B scan is normalised by its percentiles and comes back in HU of A's window; a CT scan
    translated to MRI, which has no unit to return to, comes back in [0, 1]."""
    from medgen.inference.translate import normalise_scan

    run, _ = trained
    model = registry.load(run)
    rng = np.random.default_rng(0)
    mri = rng.gamma(4.0, 100.0, (16, 16, 16)).astype(np.float32)
    ct = np.clip(rng.normal(-300, 400, (16, 16, 16)), -1024, 600).round().astype(np.int16)
    for name, array, direction in (("mri", mri, "BtoA"), ("ct", ct, "AtoB")):
        (tmp_path / name).mkdir()
        nib.save(nib.Nifti1Image(array, np.eye(4)), tmp_path / name / "s.nii.gz")
        assert main(["translate", str(run), str(tmp_path / name), "--out", str(tmp_path / f"out-{name}"),
                     "--direction", direction, "--no-progress"]) == 0
    oriented = model.with_direction("BtoA")
    assert oriented.preprocess["modality"] == "mri" and oriented.target_preprocess["modality"] == "ct"
    y = oriented.translate(normalise_scan(mri, oriented.preprocess)[0])
    got = nib.load(tmp_path / "out-mri" / "s.nii.gz")
    assert got.get_data_dtype() == np.int16
    np.testing.assert_array_equal(np.asarray(got.dataobj), hounsfield_int16(y, (-1024.0, 600.0)))
    y = model.translate(normalise_scan(ct, model.preprocess)[0])
    got = nib.load(tmp_path / "out-ct" / "s.nii.gz").get_fdata()
    np.testing.assert_allclose(got, (y + 1) / 2, atol=1e-6)


def test_direction_b_to_a_is_refused_for_one_way_models(tmp_path, capsys):
    data = make_dataset(tmp_path / "data", n=2, size=16, degraded=True)
    assert main(["train", str(data), "--family", "unet", "--preset", "tiny", "--out", str(tmp_path / "run"), "--iters",
                 "1", "--batch", "2", "--split-fractions", "1,0,0", "--sample-every", "0", "--no-progress"]) == 0
    assert main(["translate", str(tmp_path / "run"), str(data), "--out", str(tmp_path / "o"), "--direction", "BtoA",
                 "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--direction BtoA: this model translates degraded → image only" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_settings(tmp_path, capsys):
    hp = CycleGANHParams.from_dict({})
    assert (hp.lr_g, hp.lr_d, hp.betas, hp.lambda_cycle, hp.lambda_id, hp.pool_size) == (2e-4, 2e-4, (0.5, 0.999),
                                                                                          10.0, 5.0, 50)
    assert CycleGANHParams.from_dict({"lambda_cycle": 4}).lambda_id == 2.0  # 0.5·λ_cycle unless given
    assert CycleGANHParams.from_dict({"lambda_cycle": 4, "lambda_id": "0"}).lambda_id == 0.0
    for bad in ({"lambda_cycle": -1}, {"pool_size": -1}, {"criterion": "wasserstein"}, {"lr_g": 0}, {"pool": 3}):
        with pytest.raises(UsageError):
            CycleGANHParams.from_dict(bad)
    from medgen.families.cyclegan.train import loss_names, lr_factor

    decaying = CycleGANHParams.from_dict({"decay_start": 2, "decay_iters": 3})
    assert [lr_factor(decaying, i) for i in range(7)] == [1.0, 1.0, 0.75, 0.5, 0.25, 0.0, 0.0]
    assert {lr_factor(hp, i) for i in (0, 10**6)} == {1.0}  # constant by default
    assert "idt_A" not in loss_names(None, CycleGANHParams.from_dict({"lambda_id": 0}))
    cfg = model_config("tiny", 32, inputs="t1", target="t2")
    assert (cfg.domain_a, cfg.domain_b, cfg.residual) == ("t1", "t2", False)
    assert registry.get("cyclegan").data_keys(cfg) == ("t1", "t2")
    for bad in (dict(task="denoise"), dict(domain_b="image"), dict(num_classes=2), dict(size=30)):
        with pytest.raises(UsageError):
            model_config("tiny", bad.pop("size", 32), **bad)
    from medgen.families.cyclegan.train import build

    with pytest.raises(UsageError, match="at least 24³ voxels"):  # small's 3-layer discriminators on 16³ patches
        build(model_config("small", 32), CycleGANHParams.from_dict({"patch": 16}), torch.device("meta"))
    assert main(["model-info", "--family", "cyclegan", "--preset", "tiny", "--size", "32"]) == 0
    out = capsys.readouterr().out
    assert "G_AB" in out and "D_B" in out and "loss_cycle_A" in out


def test_the_cycle_of_inverse_generators_and_the_identity_of_identity_generators_are_exact():
    """The generator passes of an iteration (``Generators``) with G_BA = G_AB⁻¹ give back a and b exactly (zero cycle
    loss); with identity generators the identity outputs are the inputs (zero identity loss)."""
    from medgen.families.cyclegan.train import Generators

    class Affine(torch.nn.Module):
        def __init__(self, scale: float, shift: float) -> None:
            super().__init__()
            self.scale, self.shift = scale, shift

        def forward(self, x):
            return x * self.scale + self.shift

    cfg = model_config("tiny", 16)
    cfg_ab, cfg_ba = cfg.generator("AtoB"), cfg.generator("BtoA")
    a, b = torch.rand(2, 1, 16, 16, 16) * 2 - 1, torch.rand(2, 1, 16, 16, 16) * 2 - 1
    inverse = Generators(Affine(-0.5, 0.25), Affine(-2.0, 0.5))  # y = 0.25 − x/2  ⇔  x = 0.5 − 2y
    out = inverse(a, b, cfg_ab, cfg_ba, identity=True)
    torch.testing.assert_close(out["rec_a"], a, rtol=0, atol=1e-6)
    torch.testing.assert_close(out["rec_b"], b, rtol=0, atol=1e-6)
    torch.testing.assert_close(out["fake_b"], 0.25 - a / 2)
    assert (out["idt_a"] - a).abs().mean() > 0.1  # an inverse pair is not the identity
    same = Generators(Affine(1.0, 0.0), Affine(1.0, 0.0))(a, b, cfg_ab, cfg_ba, identity=True)
    torch.testing.assert_close(same["idt_a"], a, rtol=0, atol=0)
    torch.testing.assert_close(same["idt_b"], b, rtol=0, atol=0)
