"""The ``progression`` family: the follow-up scan from the baseline and the interval.

Identities of the untrained network (no change at interval 0, a zero field is the identity warp), the
interval reaching the network through the shared loop's covariates, the linear-trend baseline against a
hand computation, training beating "no change" on held-out toy pairs (a cylinder growing with the
interval), exact resume with every option on, and the ventricle-volume measurement.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from medgen.cli import main
from medgen.core.errors import InputError, UsageError
from medgen.families import registry
from medgen.families.progression.baselines import LinearTrend, NoChange
from medgen.families.progression.config import model_config
from medgen.families.progression.evaluate import evaluate
from medgen.families.progression.network import build_network
from medgen.metrics import longitudinal
from medgen.training import checkpoint as ckpt_io
from medgen.training.runconfig import RunConfig
from toy_volumes import make_dataset

pytestmark = pytest.mark.usefixtures("one_thread")

S = 16
FAM = registry.get("progression")


def run_cfg(data, iters: int, model: dict | None = None, hparams: dict | None = None, **kw) -> RunConfig:
    base = dict(data=str(data), model=model or model_config("tiny", S).to_dict(), family="progression",
                hparams=hparams or {}, preset="tiny", iters=iters, batch=4, device="cpu", log_every=1,
                sample_every=0, ckpt_every=1000, ema_decay=0.0, split_fractions=(1.0, 0.0, 0.0))
    base.update(kw)
    return RunConfig(**base)


def toy_baseline(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-0.9, 0.9, (S, S, S)).astype(np.float32)


def manifest(data) -> dict[str, dict[str, str]]:
    with open(data / "manifest.csv", newline="") as fh:
        return {r["id"]: r for r in csv.DictReader(fh)}


@pytest.fixture(scope="module")
def longitudinal_data(tmp_path_factory):
    """12 toy pairs at 16³: 8 to train on, 4 held out (split fractions 0.67, 0, 0.33)."""
    return make_dataset(tmp_path_factory.mktemp("long") / "data", n=12, size=S, longitudinal=True)


def test_options_presets_and_recipes():
    cfg = model_config("tiny", 32, inputs="t1", target="t1_followup", interval_column="years")
    assert (cfg.baseline, cfg.target, cfg.interval_column) == ("t1", "t1_followup", "years")
    assert FAM.data_keys(cfg) == ("t1", "t1_followup") and FAM.covariates(cfg) == ("years",)
    assert all(registry.get(n).covariates(registry.get(n).model_from_dict(
        registry.get(n).model_config("tiny", 32).to_dict())) == () for n in ("unet", "pix2pix"))
    assert set(FAM.presets) == {"tiny", "small", "base"}
    assert FAM.recipes["diffeomorphic"]["model"] == {"output": "deformation", "diffeomorphic": True}
    with pytest.raises(UsageError, match="no classes"):
        model_config("tiny", 32, num_classes=2)
    with pytest.raises(UsageError, match="--task does not apply"):
        model_config("tiny", 32, task="denoise")
    with pytest.raises(UsageError, match="diffeomorphic applies to output=deformation"):
        model_config("tiny", 32, diffeomorphic=True)
    with pytest.raises(UsageError, match="output 'warp'"):
        model_config("tiny", 32, output="warp")
    with pytest.raises(UsageError, match="adversarial_weight ≥ 0"):
        FAM.hparams_from_dict({"adversarial_weight": -1})
    hp = FAM.hparams_from_dict({"adversarial_weight": 0.1})
    assert FAM.loss_names(model_config("tiny", 32, output="deformation"), hp) == ["L1", "bending", "D", "G_adv"]
    assert set(FAM.build(model_config("tiny", 32), hp, torch.device("cpu"))) == {"net", "D"}
    assert FAM.loss_names(model_config("tiny", 32), FAM.hparams_from_dict({})) == ["L1"]


def test_interval_zero_returns_the_baseline_exactly():
    x = toy_baseline()
    model = FAM.build_model("tiny", S, seed=1)  # zero-initialised residual head
    assert np.array_equal(model.predict(x, 0.0), x)
    assert np.array_equal(model.predict(x, 2.5), x)  # an untrained model is "no change" at any interval
    # per_year: the change is the interval times the network's rate, so interval 0 is no change whatever the weights
    with torch.no_grad():
        for p in model.network.parameters():
            p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.1)
    assert np.array_equal(model.predict(x, 0.0), x)
    assert np.abs(model.predict(x, 2.0) - x).max() > 1e-3
    # without per_year the zero head alone gives the baseline: [n, S, S, S] in, one interval per volume
    plain = FAM.build_model("tiny", S, seed=2, per_year=False)
    both = plain.predict(np.stack([x, -x]), [0.0, 3.0])
    assert both.shape == (2, S, S, S) and np.array_equal(both[0], x) and np.array_equal(both[1], -x)


@pytest.mark.parametrize("diffeomorphic", [False, True])
def test_a_zero_field_returns_the_baseline_and_the_field_moves_it_as_documented(diffeomorphic):
    x = toy_baseline()
    model = FAM.build_model("tiny", S, seed=0, output="deformation", diffeomorphic=diffeomorphic)
    out = model.predict_with_field(x, 3.0)
    assert out["displacement"].shape == (3, S, S, S) and not out["displacement"].any()
    np.testing.assert_allclose(out["followup"], x, atol=1e-5)  # grid_sample's coordinate rounding only
    np.testing.assert_allclose(model.predict(x, 3.0), out["followup"], atol=0)
    if diffeomorphic:
        return
    # a head that outputs u = (1, 0, 0) per year: follow-up(p) = baseline(p + interval · u), along array axis 0
    with torch.no_grad():
        model.network.head.bias.copy_(torch.tensor([1.0, 0.0, 0.0]))
    out = model.predict_with_field(x, 2.0)
    np.testing.assert_allclose(out["displacement"][0], 2.0, atol=1e-6)
    assert not out["displacement"][1:].any()
    np.testing.assert_allclose(out["followup"][:-2], x[2:], atol=1e-5)
    np.testing.assert_allclose(out["followup"][-2:], np.broadcast_to(x[-1:], (2, S, S)), atol=1e-5)  # border
    with pytest.raises(UsageError, match="not a displacement"):
        FAM.build_model("tiny", S).predict_with_field(x, 1.0)


def test_the_interval_reaches_the_network_through_film_only():
    net = build_network(model_config("tiny", S, per_year=False)).eval()
    x = torch.from_numpy(toy_baseline())[None, None]
    with torch.no_grad():
        net.head.weight.normal_(0.0, 0.3, generator=torch.Generator().manual_seed(0))
        a, _ = net(x, torch.tensor([1.0]))
        b, _ = net(x, torch.tensor([4.0]))
        assert torch.equal(a, b)  # FiLM at its zero start: the interval has no other way in
        net.film[-1].weight.normal_(0.0, 0.3, generator=torch.Generator().manual_seed(1))
        a, _ = net(x, torch.tensor([1.0]))
        b, _ = net(x, torch.tensor([4.0]))
        c, _ = net(torch.cat([x, x]), torch.tensor([1.0, 4.0]))  # one interval per volume of a batch
    assert (a - b).abs().mean() > 1e-3
    torch.testing.assert_close(c, torch.cat([a, b]), rtol=1e-4, atol=1e-5)


def test_outputs_differ_between_intervals_after_training(longitudinal_data, tmp_path):
    """Without per_year the interval reaches the output only through FiLM: after 30 steps on pairs whose
    change grows with the interval, a longer interval predicts a larger cylinder."""
    model = model_config("tiny", S, per_year=False).to_dict()
    registry.train(run_cfg(longitudinal_data, 30, model=model, hparams={"lr": 3e-3}), tmp_path / "run",
                   progress=False)
    trained = registry.load(tmp_path / "run")
    assert trained.network.film[-1].weight.abs().max() > 0  # FiLM learnt something
    x = np.load(longitudinal_data / "volumes" / "v0.npy").astype(np.float32)
    short, long_ = trained.predict(x, 0.5), trained.predict(x, 4.0)
    assert np.abs(long_ - short).mean() > 0.03
    inside = lambda v: int(np.count_nonzero(v > -0.4))  # noqa: E731
    assert inside(long_) > inside(short)


def test_covariates_reach_the_step_in_manifest_order(longitudinal_data, tmp_path):
    import dataclasses

    from medgen.training import loop

    seen = []

    def spy(step):
        seen.append((list(step.batch["id"]), step.batch["covariates"].clone()))
        return FAM.train_step(step)

    loop.train(dataclasses.replace(FAM, train_step=spy), run_cfg(longitudinal_data, 2), tmp_path / "run",
               progress=False)
    rows = manifest(longitudinal_data)
    assert len(seen) == 2
    for ids, cov in seen:
        assert cov.shape == (4, 1) and cov.dtype == torch.float32
        assert cov[:, 0].tolist() == pytest.approx([float(rows[i]["interval_years"]) for i in ids])


def test_a_missing_interval_is_an_input_error_naming_the_subject(tmp_path):
    data = make_dataset(tmp_path / "data", n=4, size=S, longitudinal=True)
    text = (data / "manifest.csv").read_text().splitlines()
    text[2] = ",".join(text[2].split(",")[:-1] + [""])  # v1's interval: empty
    (data / "manifest.csv").write_text("\n".join(text) + "\n")
    with pytest.raises(InputError, match="subject 'v1' has no 'interval_years' value"):
        registry.train(run_cfg(data, 2), tmp_path / "run", progress=False)


def test_linear_trend_equals_a_hand_computation(longitudinal_data):
    b1, f1 = np.full((4, 4, 4), 0.1, np.float32), np.full((4, 4, 4), 0.3, np.float32)
    b2, f2 = np.zeros((4, 4, 4), np.float32), np.zeros((4, 4, 4), np.float32)
    f2[0] = 0.8
    trend = LinearTrend.fit([(b1, f1, 2.0), (b2, f2, 4.0), (b2, b1, 0.0)])  # interval 0: no rate, left out
    assert trend.n_pairs == 2
    expected_rate = ((0.3 - 0.1) / 2 + np.where(np.arange(4)[:, None, None] == 0, 0.8, 0.0) / 4) / 2
    np.testing.assert_allclose(trend.rate, np.broadcast_to(expected_rate, (4, 4, 4)), atol=1e-7)
    np.testing.assert_allclose(trend.predict(b2, 3.0)[0], 3 * (0.1 + 0.2) / 2, atol=1e-6)  # 0.45
    np.testing.assert_allclose(trend.predict(b2, 3.0)[1], 3 * 0.1 / 2, atol=1e-6)  # 0.15
    two = trend.predict(np.stack([b1, b2]), [0.0, 1.0])
    np.testing.assert_allclose(two[0], b1)
    np.testing.assert_allclose(two[1], b2 + trend.rate, atol=1e-7)
    assert np.array_equal(NoChange().predict(b1, 5.0), b1)
    with pytest.raises(ValueError, match="no training pair with an interval > 0"):
        LinearTrend.fit([(b1, f1, 0.0)])
    # from a data set: the train split's files, by hand
    trend = LinearTrend.from_dataset(longitudinal_data, fractions=(0.67, 0.0, 0.33))
    rows = manifest(longitudinal_data)
    from medgen.data.dataset import split_ids

    train = split_ids(list(rows), 0, (0.67, 0.0, 0.33))["train"]
    rates = [(np.load(longitudinal_data / f"followups/{i}.npy").astype(np.float64)
              - np.load(longitudinal_data / f"volumes/{i}.npy")) / float(rows[i]["interval_years"]) for i in train]
    assert trend.n_pairs == len(train) == 8
    np.testing.assert_allclose(trend.rate, np.mean(rates, axis=0), atol=1e-6)


def test_a_tiny_model_beats_no_change_on_held_out_pairs(longitudinal_data, tmp_path):
    fractions = (0.67, 0.0, 0.33)
    registry.train(run_cfg(longitudinal_data, 40, split_fractions=fractions), tmp_path / "run", progress=False)
    model = registry.load(tmp_path / "run")
    result = evaluate(longitudinal_data, {"model": model}, split="test", fractions=fractions)
    held_out = {r["id"] for r in result.rows}
    assert len(held_out) == 4 and not held_out & set(RunConfig.load(tmp_path / "run").train_ids)
    l1 = {name: s["l1"][0] for name, s in result.summary.items()}
    assert l1["model"] < 0.9 * l1["no change"], l1
    assert result.summary["model"]["psnr"][0] > result.summary["no change"]["psnr"][0]
    # the no-change row's L1 is the mean |baseline − follow-up|, by hand
    row = next(r for r in result.rows if r["method"] == "no change")
    x = np.load(longitudinal_data / f"volumes/{row['id']}.npy").astype(np.float64)
    y = np.load(longitudinal_data / f"followups/{row['id']}.npy").astype(np.float64)
    assert row["l1"] == pytest.approx(np.abs(x - y).mean(), rel=1e-6)
    assert any("ventricle volumes not measured" in n for n in result.notes)


@pytest.mark.parametrize("options, hp", [
    ({"output": "deformation", "diffeomorphic": True}, {"adversarial_weight": 0.1, "smoothness_weight": 0.5}),
    ({"per_year": False}, {"patch": 8}),
], ids=["deformation-adversarial", "intensity-patches"])
def test_exact_resume_with_every_option(longitudinal_data, tmp_path, options, hp):
    model = model_config("tiny", S, **options).to_dict()
    full = registry.train(run_cfg(longitudinal_data, 4, model=model, hparams=hp, ema_decay=0.9), tmp_path / "full",
                          progress=False)
    registry.train(run_cfg(longitudinal_data, 2, model=model, hparams=hp, ema_decay=0.9), tmp_path / "split",
                   progress=False)
    resumed = registry.train(run_cfg(longitudinal_data, 4, model=model, hparams=hp, ema_decay=0.9),
                             tmp_path / "split", resume=True, progress=False)
    a, b = full.models.weights(), resumed.models.weights()
    assert set(a) == ({"net", "D", "net_ema"} if "adversarial_weight" in hp else {"net", "net_ema"})
    for module in a:
        for key in a[module]:
            assert torch.equal(a[module][key], b[module][key]), f"{module}.{key}"
    with open(tmp_path / "split" / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["iteration"]) for r in rows] == [1, 2, 3, 4]
    assert ckpt_io.load_state(tmp_path / "split")["iteration"] == 4
    loaded = registry.load(tmp_path / "split")
    x = np.load(longitudinal_data / "volumes" / "v0.npy").astype(np.float32)
    if "adversarial_weight" in hp:
        assert all(float(r["loss_bending"]) >= 0 and float(r["loss_D"]) > 0 for r in rows)
        assert loaded.predict_with_field(x, 1.0)["displacement"].shape == (3, S, S, S)
    else:  # patches at training, the same windows at inference
        assert loaded.window == 8
        np.testing.assert_allclose(loaded.predict(x, 2.0, window=0), loaded.predict(x, 2.0), atol=0.1)
    with pytest.raises(UsageError, match="at least 16³ voxels, not 8³"):
        FAM.build(model_config("tiny", S), FAM.hparams_from_dict({"adversarial_weight": 0.1, "patch": 8}),
                  torch.device("cpu"))


def test_command_line_trains_a_deformation_model(longitudinal_data, tmp_path):
    run = tmp_path / "run"
    assert main(["train", str(longitudinal_data), "--family", "progression", "--preset", "tiny", "--recipe",
                 "deformation", "--out", str(run), "--iters", "1", "--batch", "2", "--device", "cpu",
                 "--sample-every", "0", "--no-progress"]) == 0
    cfg = RunConfig.load(run)
    assert cfg.model["output"] == "deformation" and cfg.model["interval_column"] == "interval_years"
    assert registry.load(run).config.output == "deformation"


def test_ventricle_volume_is_measured_on_intensities():
    shape, spacing = (24, 24, 24), (2.0, 2.0, 2.0)  # 0.008 ml voxels
    g = np.stack(np.meshgrid(*[np.arange(24) - 11.5] * 3, indexing="ij"))
    r = np.sqrt((g ** 2).sum(0))
    tissue = np.where(r < 11, 3, 0).astype(np.int16)  # white matter in an intracranial ball
    tissue[r < 4] = 4  # the ventricles
    tissue[(r >= 9) & (r < 11)] = 1  # CSF outside them (sulci): never counted
    base = np.where(tissue == 4, -0.6, np.where(tissue == 1, -0.6, np.where(tissue == 3, 0.6, -1.0)))
    follow = base.copy()
    follow[r < 6] = -0.6  # grown by 2 voxels (4 mm < the 10 mm margin)
    ref = longitudinal.ventricle_reference(base, tissue, spacing)
    assert ref.csf_level == pytest.approx(-0.6) and ref.tissue_level == pytest.approx(0.6)
    assert ref.voxel_ml == pytest.approx(0.008)
    assert not ref.region[tissue == 1].any() and ref.region[tissue == 4].all()
    assert longitudinal.ventricle_volume_ml(base, ref) == pytest.approx((r < 4).sum() * 0.008)
    assert longitudinal.ventricle_volume_ml(follow, ref) == pytest.approx((r < 6).sum() * 0.008)
    errors = longitudinal.ventricle_errors(base, follow, ref, true_volume_ml=(r < 6).sum() * 0.008)
    assert errors["ventricle_error_ml"] == pytest.approx(-((r < 6).sum() - (r < 4).sum()) * 0.008)
    assert errors["ventricle_error_ml_floor"] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="no ventricle voxel"):
        longitudinal.ventricle_reference(base, np.zeros(shape, np.int16), spacing)
