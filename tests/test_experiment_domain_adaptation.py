"""`medgen experiment domain-adaptation`: a smoke run whose numbers are recomputed from its data sets and runs."""

import csv
import json
import math

import numpy as np
import pytest

from medgen.cli import main
from medgen.metrics import paired

KIND, SIZE, N = "brain-mri", 32, 6  # the smoke scale: 32³, 6 subjects per set
BRAIN_LABELS = [1, 2, 3, 4]  # CSF, grey matter, white matter, ventricles


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _volumes(folder, name):
    """id → volume ``name`` (float32) of a preprocessed data set, in manifest order."""
    column = "file" if name == "image" else name
    return {r["id"]: np.load(folder / r[column]).astype(np.float32) for r in _rows(folder / "manifest.csv")}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """One smoke run (about 30 s) for every test of the module. One torch thread: as fast for these tiny networks,
    and several times faster on a machine whose cores are busy; the recomputations below use it too."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        root = tmp_path_factory.mktemp("domain-adaptation")
        out, work = root / "out", root / "w"
        assert main(["experiment", "domain-adaptation", "--scale", "smoke", "--work", str(work), "--out", str(out),
                     "--no-progress"]) == 0
        data = work / "data"
        sets = {"a": data / f"{KIND}-A-seed0-n{N}-{SIZE}", "b": data / f"{KIND}-B-seed1-n{N}-{SIZE}",
                "held": data / f"{KIND}-both-seed2-n{N}-{SIZE}"}
        yield out, work, sets
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
def test_tables_rows_columns_figures_and_record(smoke):
    from medgen.experiments.domain_adaptation import COLUMNS

    out, work, sets = smoke
    rows = _rows(out / "domain-adaptation.csv")
    assert list(rows[0]) == list(COLUMNS)
    expected = [(m, d, str(k)) for m, d in (("source-only", "B (T2)"), ("adapted", "B (T2)"), ("oracle", "B (T2)"),
                                            ("source-only", "A (T1)")) for k in [*BRAIN_LABELS, "mean"]]
    assert [(r["method"], r["domain"], r["label"] or r["structure"]) for r in rows] == expected
    assert {r["structure"] for r in rows if r["label"] == "3"} == {"white matter"}
    assert all(r["seeds"] == "1" and r["n"] == str(N) for r in rows)
    assert all(0.0 <= float(r["dice"]) <= 1.0 for r in rows)
    assert all(r["dice_std"] == "" for r in rows)  # one seed at smoke: no spread to report
    trans = _rows(out / "translation.csv")
    assert [r["method"] for r in trans] == ["identity (A image)", "histogram matching", "cyclegan G_AB"]
    assert list(trans[0]) == ["method", "psnr", "psnr_std", "psnr_body", "ssim", "ssim_std", "nmse", "gain_db", "n"]
    assert float(trans[1]["gain_db"]) == 0.0
    assert float(trans[2]["gain_db"]) == pytest.approx(float(trans[2]["psnr"]) - float(trans[1]["psnr"]))
    for name in ("domain-adaptation.png", "domain-adaptation-segmentation.png"):
        assert (out / name).stat().st_size > 1000
    md = (out / "domain-adaptation.md").read_text()
    assert "medgen experiment domain-adaptation --scale smoke" in md
    assert f"medgen unpair {sets['a']} {sets['b']}" in md
    assert "--family cyclegan --preset tiny --iters 2" in md
    assert "--family seg-unet --preset tiny --inputs translated --iters 1" in md  # 30 % of 2, at least 1
    assert f"--seed 2 --domain both --out {work / 'phantoms-sets'}" in md
    record = json.loads((out / "experiment.json").read_text())["results"]
    assert (record["gan_iters"], record["seg_iters"], record["seeds"]) == (2, 1, [0])
    # the translated training set: A-train plus the CycleGAN's outputs as the volume the adapted model reads
    translated = work / "data" / f"{sets['a'].name}-translated-g2"
    info = json.loads((translated / "preprocess.json").read_text())
    assert info["volumes"]["translated"]["kind"] == "intensity" and info["volumes"]["tissue"]["kind"] == "label"
    outputs = work / "translated" / translated.name / "outputs"
    for sid, vol in _volumes(translated, "translated").items():
        np.testing.assert_allclose(vol, np.load(outputs / f"{sid}.npy").astype(np.float16).astype(np.float32))


@pytest.mark.slow
def test_recovered_fraction_is_recomputed_from_the_tables_dice(smoke):
    out, _, _ = smoke
    rows = _rows(out / "domain-adaptation.csv")
    mean = {(r["method"], r["domain"][0]): r for r in rows if r["structure"] == "mean"}
    so, ad, orc = (float(mean[(m, "B")]["dice"]) for m in ("source-only", "adapted", "oracle"))
    recovered = float(mean[("adapted", "B")]["recovered_fraction"])
    assert recovered == pytest.approx((ad - so) / (orc - so), rel=1e-9)
    assert sum(r["recovered_fraction"] != "" for r in rows) == 1
    # the mean row is the mean over the structures' rows
    for (method, domain), row in mean.items():
        per = [float(r["dice"]) for r in rows if r["method"] == method and r["domain"][0] == domain
               and r["structure"] != "mean"]
        assert float(row["dice"]) == pytest.approx(np.mean(per), rel=1e-9)
    record = json.loads((out / "experiment.json").read_text())["results"]
    assert record["recovered_fraction"] == pytest.approx(recovered)


@pytest.mark.slow
def test_identity_row_compares_each_a_image_with_its_b_rendering(smoke):
    out, _, sets = smoke
    a, b = _volumes(sets["held"], "image"), _volumes(sets["held"], "domain_b")
    assert a.keys() == b.keys() and len(a) == N
    psnrs = [paired.psnr(a[i], b[i]) for i in a]
    assert np.isfinite(psnrs).all() and max(psnrs) < 30  # two contrasts, not one image twice
    identity = _rows(out / "translation.csv")[0]
    assert float(identity["psnr"]) == pytest.approx(np.mean(psnrs), rel=1e-6)
    # B-train's images are T2 like the held-out domain_b: their intensity histograms are far closer
    pooled_b = np.concatenate([v.ravel() for v in _volumes(sets["b"], "image").values()])
    pooled_a = np.concatenate([v.ravel() for v in _volumes(sets["a"], "image").values()])
    held_b = np.concatenate([v.ravel() for v in b.values()])
    q = np.linspace(0.05, 0.95, 19)
    assert np.abs(np.quantile(held_b, q) - np.quantile(pooled_b, q)).mean() < \
        0.5 * np.abs(np.quantile(held_b, q) - np.quantile(pooled_a, q)).mean()


@pytest.mark.slow
def test_histogram_matching_psnr_is_recomputed_on_one_volume(smoke):
    out, _, sets = smoke
    held_a, held_b = _volumes(sets["held"], "image"), _volumes(sets["held"], "domain_b")
    sid = next(iter(held_a))
    # the reference: every voxel of every B-train image; the quantile mapping written out by hand
    reference = np.concatenate([v.ravel() for v in _volumes(sets["b"], "image").values()])
    src = held_a[sid].ravel()
    values, inverse, counts = np.unique(src, return_inverse=True, return_counts=True)
    ref_values, ref_counts = np.unique(reference, return_counts=True)
    mapped = np.interp(np.cumsum(counts) / src.size, np.cumsum(ref_counts) / reference.size, ref_values)
    matched = mapped[inverse].reshape(held_a[sid].shape)
    per_volume = {(r["method"], r["id"]): r for r in _rows(out / "translation-volumes.csv")}
    row = per_volume[("histogram matching", sid)]
    assert float(row["psnr"]) == pytest.approx(paired.psnr(matched, held_b[sid]), rel=1e-6)
    table = {r["method"]: r for r in _rows(out / "translation.csv")}
    for method in table:
        values = [float(r["psnr"]) for (m, _), r in per_volume.items() if m == method]
        assert len(values) == N and float(table[method]["psnr"]) == pytest.approx(np.mean(values), rel=1e-9)


@pytest.mark.slow
def test_segmenters_are_scored_on_the_b_renderings(smoke):
    from medgen.core.volume import parse_spacing
    from medgen.families import registry
    from medgen.metrics.overlap import label_metrics

    out, work, sets = smoke
    held_b, held_a = _volumes(sets["held"], "domain_b"), _volumes(sets["held"], "image")
    manifest = _rows(sets["held"] / "manifest.csv")
    tissue = {r["id"]: np.load(sets["held"] / r["tissue"]) for r in manifest}
    sid = next(iter(held_b))
    spacing = parse_spacing(manifest[0]["spacing"])
    assert spacing == pytest.approx((6.25, 6.25, 6.25))  # 200 mm brain field of view on 32 voxels
    per_volume = {(r["method"], r["domain"], r["id"]): r for r in _rows(out / "domain-adaptation-volumes.csv")}
    for method, domain, image in (("oracle", "B", held_b), ("adapted", "B", held_b), ("source-only", "A", held_a)):
        tag = "adapted-g2" if method == "adapted" else method
        model = registry.load(work / "runs" / f"da-{KIND}-{SIZE}-seg-{tag}-seed0")
        expected = label_metrics(model.segment(image[sid]), tissue[sid], BRAIN_LABELS, spacing)
        row = per_volume[(method, domain, sid)]
        for k in BRAIN_LABELS:
            assert float(row[f"dice_{k}"]) == pytest.approx(expected[f"dice_{k}"], rel=1e-6, abs=1e-9)
            assert float(row[f"hd95_{k}"]) == pytest.approx(expected[f"hd95_{k}"], rel=1e-6)
    # the adapted model reads the translated volume, the others the image
    adapted = registry.load(work / "runs" / f"da-{KIND}-{SIZE}-seg-adapted-g2-seed0")
    assert tuple(adapted.config.inputs) == ("translated",) and adapted.config.label == "tissue"


def test_bad_kind_and_seeds_are_one_line_usage_errors(tmp_path, capsys):
    base = ["experiment", "domain-adaptation", "--scale", "smoke", "--work", str(tmp_path / "w"), "--out",
            str(tmp_path / "out"), "--no-progress"]
    assert main([*base, "--kind", "knee-ct"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--kind knee-ct" in err and "brain-mri or thorax-ct" in err
    assert main([*base, "--seeds", "0"]) == 2
    assert "--seeds 0" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()  # nothing was made


def test_summarise_seeds_means_std_and_missed_structures():
    from medgen.experiments.domain_adaptation import recovered_fraction, summarise_seeds

    seed0 = [{"dice_1": 0.8, "hd95_1": 2.0, "dice_2": 0.4, "hd95_2": math.inf},
             {"dice_1": 0.6, "hd95_1": 4.0, "dice_2": math.nan, "hd95_2": math.nan}]  # label 2 absent from both
    seed1 = [{"dice_1": 0.9, "hd95_1": 1.0, "dice_2": 0.5, "hd95_2": 3.0},
             {"dice_1": 0.7, "hd95_1": 3.0, "dice_2": 0.3, "hd95_2": 5.0}]
    s = summarise_seeds([seed0, seed1], [1, 2])
    assert s[1]["dice"] == pytest.approx(0.75) and s[1]["dice_std"] == pytest.approx(np.std([0.7, 0.8], ddof=1))
    assert s[2]["dice"] == pytest.approx(np.mean([0.4, 0.4]))
    assert s[1]["hd95"] == pytest.approx(2.5) and s[2]["hd95"] == pytest.approx(4.0)  # seed 0: no finite HD95
    assert s[2]["missed_pct"] == pytest.approx(100 / 3)  # 1 of the 3 volumes × seeds where label 2 is present
    assert s["mean"]["dice"] == pytest.approx(np.mean([np.mean([0.7, 0.4]), np.mean([0.8, 0.4])]))
    assert s["mean"]["dice_std"] == pytest.approx(np.std([0.55, 0.6], ddof=1))
    one = summarise_seeds([seed0], [1, 2])
    assert one[1]["dice_std"] is None and one["mean"]["dice"] == pytest.approx(np.mean([0.7, 0.4]))
    assert recovered_fraction(0.2, 0.5, 0.8) == pytest.approx(0.5)
    assert math.isnan(recovered_fraction(0.5, 0.6, 0.5))


def test_histogram_matching_pools_every_reference_voxel():
    from medgen.experiments.domain_adaptation import histogram_matched

    x = np.random.default_rng(0).normal(size=(4, 4, 4))
    refs = [np.full((4, 4, 4), -1.0), np.full((4, 4, 4), 1.0)]  # pooled: half the voxels -1, half 1
    (out,) = histogram_matched([x], refs)
    order = np.argsort(x.ravel())
    assert np.all(np.diff(out.ravel()[order]) >= 0)  # the intensity order is kept
    assert np.sum(out == -1.0) == 32 and out.max() == 1.0  # the lower half of x takes the reference's lower half
    (alone,) = histogram_matched([x], refs[1:])
    assert np.all(alone == 1.0)
