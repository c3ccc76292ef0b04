"""medgen experiment memory: parameter counts, measured memory/time, limits, and the bench options it adds."""

from __future__ import annotations

import csv
import json

import pytest

from medgen.cli import main
from medgen.core.errors import RunFailed
from medgen.experiments import memory
from medgen.families.hagan import count_parameters, get_preset


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
def test_smoke_run_writes_table_figure_and_record(tmp_path):
    out = tmp_path / "out"
    assert main(["experiment", "memory", "--scale", "smoke", "--families", "hagan,wgan-gp", "--work",
                 str(tmp_path / "work"), "--out", str(out), "--no-progress"]) == 0
    rows = read_csv(out / "memory.csv")
    assert [int(r["size"]) for r in rows] == [32]
    row = rows[0]
    counts = count_parameters(get_preset("tiny", 32))
    for col, key in (("G", "G"), ("D", "D"), ("E^H", "E^H"), ("E^G", "E^G"), ("params_total", "all")):
        assert int(row[col]) == counts[key]
    assert int(row["params_total"]) == int(row["G"]) + int(row["D"]) + int(row["E^H"]) + int(row["E^G"])
    whole = count_parameters(get_preset("tiny", 32, slab_fraction=1.0))["all"]
    assert float(row["params_whole_M"]) == round(whole / 1e6, 2) and whole > counts["all"]  # D^H on the whole depth
    assert float(row["paper_params_M"]) == 74.7 and float(row["paper_memory_mb"]) == 2573
    for config in ("train_slab", "train_whole", "generate"):
        assert 50 < float(row[f"{config}_mb"]) < 8 * 1024  # a fresh process holds at least torch
        assert float(row[f"{config}_s"]) > 0
    assert row["generate_chunked_mb"] == "" and row["skipped"] == ""  # chunked from 128³ on; nothing skipped

    record = json.loads((out / "experiment.json").read_text())
    res = record["results"]
    assert res["preset"] == "tiny" and res["batch"] == 1 and res["device"] == "cpu"
    assert record["figures"] == ["memory.png", "memory-families.png"]
    by = {m["config"]: m for m in res["measurements"]}
    # the bench's slab_fraction option reached the measuring process: whole volume vs the paper's 1/8
    assert by["train_slab"]["slab_fraction"] == 0.125 and by["train_whole"]["slab_fraction"] == 1.0
    assert by["train_whole"]["params_total"] == whole and by["train_slab"]["params_total"] == counts["all"]
    assert round(by["train_slab"]["peak_memory_mb"], 1) == float(row["train_slab_mb"])  # the table rounds to 0.1 MB
    assert by["generate"]["seconds_per_volume"] == pytest.approx(float(row["generate_s"]))

    png = (out / "memory.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    from matplotlib.image import imread

    assert imread(out / "memory.png").shape[0] > 200
    md = (out / "memory.md").read_text()
    assert "medgen experiment memory --scale smoke" in md and "peak RSS" in md and "compare the trends" in md

    # the table across models: one row per family and size, measured in its own process (hagan: reused)
    fam_rows = read_csv(out / "memory-families.csv")
    assert [(r["family"], int(r["size"])) for r in fam_rows] == [("hagan", 32), ("wgan-gp", 32)]
    hagan, wgan = fam_rows
    assert int(hagan["params_total"]) == counts["all"] and hagan["networks"] == "G+D+E"
    assert float(hagan["memory_mb"]) == float(row["train_slab_mb"])  # the train_slab measurement, not run twice
    assert float(hagan["seconds_per_iteration"]) == pytest.approx(float(row["train_slab_s"]))
    wgan_counts = memory.trainable_parameters("wgan-gp", "tiny", 32)
    assert int(wgan["params_total"]) == sum(wgan_counts.values()) and wgan["networks"] == "G+D"
    for r in fam_rows:
        assert r["preset"] == "tiny" and r["memory_source"] == "measured" and r["skipped"] == ""
        assert 50 < float(r["memory_mb"]) < 8 * 1024 and float(r["seconds_per_iteration"]) > 0
        assert r["fits_16gb"] == "yes"
    fam = res["families"]
    assert fam["families"] == ["hagan", "wgan-gp"] and fam["presets"] == {"hagan": "tiny", "wgan-gp": "tiny"}
    by_family = {m["family"]: m for m in fam["measurements"]}
    assert by_family["wgan-gp"]["batch"] == 1 and "machine" not in by_family["wgan-gp"]
    assert imread(out / "memory-families.png").shape[0] > 200
    fmd = (out / "memory-families.md").read_text()
    assert "--families hagan,wgan-gp" in fmd and "Python/PyTorch runtime" in fmd and "16384 MiB" in fmd
    assert "hagan: the train_slab measurement" in fmd


def test_paper_preset_parameters_match_the_published_totals(tmp_path):
    out = tmp_path / "out"
    assert main(["experiment", "memory", "--scale", "smoke", "--preset", "paper", "--sizes", "256,32,128,64",
                 "--params-only", "--work", str(tmp_path / "work"), "--out", str(out), "--no-progress"]) == 0
    rows = read_csv(out / "memory.csv")
    assert [int(r["size"]) for r in rows] == [32, 64, 128, 256]
    published = {32: 74.7, 64: 78.7, 128: 79.6, 256: 79.7}
    for r in rows:
        size = int(r["size"])
        assert abs(int(r["params_total"]) / 1e6 - published[size]) <= 0.1
        assert float(r["paper_params_M"]) == published[size]
        assert int(r["params_total"]) == count_parameters(get_preset("paper", size))["all"]
    # the authors' code: G 52.52M at every size, 79.74M in all at 256³
    assert {round(int(r["G"]) / 1e6, 2) for r in rows} == {52.52}
    # (medgen's default D has one minibatch-std input channel more in each final convolution: +2,112 at 256³)
    from medgen.families.hagan.config import PAPER_MODEL

    paper_256 = count_parameters(get_preset("paper", 256, **PAPER_MODEL))
    assert round(paper_256["all"] / 1e6, 2) == 79.74
    assert int(rows[-1]["params_total"]) - paper_256["all"] == 4 * 4 * 1 * 128 + 4 * 4 * 4 * 1  # D^H: 4×4×1 kernel to 128; D^L: 4³ to 1
    assert "train_slab_mb" not in rows[0] and not (out / "memory.png").exists()
    # the table across models: parameters only, each family's paper-like preset, default families
    fam_rows = read_csv(out / "memory-families.csv")
    assert list(dict.fromkeys(r["family"] for r in fam_rows)) == memory.known_families()
    assert "memory_mb" not in fam_rows[0] and not (out / "memory-families.png").exists()
    presets = {r["family"]: r["preset"] for r in fam_rows}
    assert presets["hagan"] == presets["wgan-gp"] == "paper" and presets["ddpm"] == presets["ldm"] == "base"
    hagan = {int(r["size"]): int(r["params_total"]) for r in fam_rows if r["family"] == "hagan"}
    assert hagan == {int(r["size"]): int(r["params_total"]) for r in rows}


def test_predict_extrapolates_the_line_through_the_two_largest_sizes():
    # planted cost = 100 + 2 * voxels/1000 (fixed part + per-voxel part)
    cost = lambda v: 100 + 2 * v / 1000
    hist = [(float(s) ** 3, cost(s**3)) for s in (16, 32, 64)]
    assert memory.predict(hist, 128.0**3) == pytest.approx(cost(128**3))
    assert memory.predict(hist[::-1], 128.0**3) == pytest.approx(cost(128**3))  # order does not matter
    assert memory.predict([(1000.0, 50.0)], 8000.0) == pytest.approx(400.0)  # one point: proportional
    assert memory.predict([], 8000.0) is None
    assert memory.predict([(1000.0, 50.0)], 8000.0, min_points=2) is None
    assert memory.predict([(1000.0, 50.0), (8000.0, 40.0)], 64000.0) == pytest.approx(40.0)  # never predicts a drop


class FakeRunner:
    """Stands in for run_isolated: planted peak memory per size, records what it was asked."""

    def __init__(self, mb_by_size, fail_at=None):
        self.mb_by_size, self.fail_at, self.calls = mb_by_size, fail_at, []

    def __call__(self, kind, timeout=None, max_rss_mb=None, **kw):
        self.calls.append((kind, kw["size"], timeout, max_rss_mb))
        if kw["size"] == self.fail_at:
            raise RunFailed(f"benchmark {kind} {kw}: stopped at 1030 MiB resident memory, over the limit of 1000 MiB")
        return {"benchmark": kind, "peak_memory_mb": self.mb_by_size[kw["size"]], "seconds_median": 0.5,
                "seconds_per_volume": 0.25, "chunk": kw.get("chunk")}


def test_planner_skips_what_the_smaller_sizes_predict_to_pass_the_memory_limit():
    fake = FakeRunner({32: 300.0, 64: 400.0, 128: 9999.0})
    planner = memory.Planner(memory_limit_mb=1000.0, time_limit_s=600.0, runner=fake)
    r32 = planner.run("train_whole", "train", size=32, batch=1)
    planner.run("train_whole", "train", size=64, batch=1)
    r128 = planner.run("train_whole", "train", size=128, batch=1)
    # 400 + (400 - 300) / (64³ - 32³) * (128³ - 64³) = 1200 MiB > 1000 MiB: not run
    assert r128 == {"skipped": "predicted 1.2 GB > limit 1.0 GB"}
    assert [c[1] for c in fake.calls] == [32, 64] and fake.calls[0][2:] == (600.0, 1000.0)
    assert r32["wall_seconds"] > 0
    # other configurations keep their own history
    assert planner.skip_reason("train_slab", 128) is None
    planner.wall["generate"] = [(32.0**3, 10.0), (64.0**3, 80.0)]
    assert planner.skip_reason("generate", 128) == "predicted 10.7 min > limit 10.0 min"


def test_a_configuration_stopped_while_running_is_recorded_not_fatal():
    fake = FakeRunner({32: 300.0}, fail_at=128)
    planner = memory.Planner(memory_limit_mb=1000.0, time_limit_s=600.0, runner=fake)
    measured = memory.measure_size(planner, "tiny", 128, device="cpu", batch=1, repeats=1, chunk=None, seed=0)
    assert set(measured) == {"train_slab", "train_whole", "generate", "generate_chunked"}
    stopped = "stopped at 1030 MiB resident memory, over the limit of 1000 MiB"
    assert measured["train_slab"]["skipped"] == f"failed: {stopped}"
    assert [c[1] for c in fake.calls] == [128] * 4
    assert fake.calls[-1][0] == "generate"
    row = memory.table_row(memory.parameter_row("tiny", 128), measured)
    assert row.get("train_slab_mb") is None and row["skipped"].count("failed: stopped at 1030 MiB") == 4


def test_after_a_failure_the_larger_sizes_of_that_configuration_are_not_tried():
    fake = FakeRunner({32: 300.0, 64: 400.0, 128: 500.0}, fail_at=32)
    planner = memory.Planner(memory_limit_mb=1000.0, time_limit_s=600.0, runner=fake)
    assert planner.run("train_whole", "train", size=32, batch=1)["skipped"].startswith("failed: stopped at 1030 MiB")
    for size in (64, 128):
        assert planner.run("train_whole", "train", size=size, batch=1) == {
            "skipped": "failed at 32³ already (stopped at 1030 MiB resident memory, over the limit of 1000 MiB)"}
    assert [c[1] for c in fake.calls] == [32]  # tried once
    assert planner.run("generate", "generate", size=64, batch=1)["peak_memory_mb"] == 400.0  # other configs run


def test_table_row_takes_seconds_per_volume_for_generation():
    fake = FakeRunner({128: 700.0})
    planner = memory.Planner(memory_limit_mb=None, time_limit_s=600.0, runner=fake)
    measured = memory.measure_size(planner, "tiny", 128, device="cpu", batch=1, repeats=1, chunk=3, seed=0)
    row = memory.table_row(memory.parameter_row("tiny", 128), measured)
    assert row["train_slab_s"] == 0.5 and row["train_whole_s"] == 0.5
    assert row["generate_s"] == 0.25 and row["generate_chunked_s"] == 0.25 and row["chunk"] == 3
    assert row["generate_chunked_mb"] == 700.0 and row["skipped"] is None
    assert memory.default_chunk(128, "paper") == 8 and memory.default_chunk(256, "paper") == 16


@pytest.mark.parametrize("argv, words", [
    (["--sizes", "32,abc"], "--sizes"),
    (["--families", "hagan,nope", "--params-only"], "unknown 'nope' (known: hagan, wgan-gp"),
    (["--families", " , ", "--params-only"], "--families"),
    (["--sizes", "48", "--params-only"], "power of two"),
    (["--run", "nowhere"], "--run"),
    (["--iters", "5"], "--iters"),
    (["--batch", "0"], "--batch"),
])
def test_bad_options_are_one_line_usage_errors(tmp_path, capsys, argv, words):
    code = main(["experiment", "memory", "--scale", "smoke", "--work", str(tmp_path / "w"),
                 "--out", str(tmp_path / "o"), *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and words in err[0]


def test_run_isolated_stops_a_process_over_its_memory_limit():
    from medgen.families.hagan.bench import run_isolated

    # a fresh process passes 100 MiB while importing torch, long before it could finish
    with pytest.raises(RunFailed, match="over the limit of 100 MiB"):
        run_isolated("generate", preset="tiny", size=32, warmup=0, repeats=1, max_rss_mb=100)


# ---------------------------------------------------------------------- the table across families
def test_families_default_to_the_registered_candidates_in_order(monkeypatch):
    from medgen.core.errors import UsageError
    from medgen.families import registry

    known = memory.known_families()
    assert known == [n for n in memory.FAMILY_CANDIDATES if n in registry.FAMILIES]
    assert known[:2] == ["hagan", "wgan-gp"] and known[-2:] == ["ldm-autoencoder", "ldm"]
    assert memory.parse_families(None) == known
    assert memory.parse_families("none") == []
    assert memory.parse_families(" ddpm, hagan,ddpm") == ["ddpm", "hagan"]  # order given, once each
    with pytest.raises(UsageError, match=r"unknown 'unet', 'x' \(known: hagan, "):
        memory.parse_families("hagan,unet,x")  # registered, but not a family of this table
    # a family registered later (stylegan2) joins the default in the list's order
    monkeypatch.setitem(registry.FAMILIES, "stylegan2", registry.FAMILIES["wgan-gp"])
    after = memory.parse_families(None)
    assert after.index("stylegan2") == after.index("pggan") + 1 and after.index("stylegan2") < after.index("ddpm")


def test_family_presets_and_trainable_parameters():
    from medgen.core.errors import UsageError
    from medgen.families import registry

    assert memory.family_preset("hagan", "paper") == "paper" and memory.family_preset("pggan", "paper") == "paper"
    assert memory.family_preset("ddpm", "paper") == "base" and memory.family_preset("ldm", "paper") == "base"
    assert memory.family_preset("ldm-autoencoder", "paper") == "base"
    assert memory.family_preset("ddpm", "tiny") == "tiny"
    with pytest.raises(UsageError, match="has presets"):
        memory.family_preset("ddpm", "huge")
    for name in ("wgan-gp", "alpha-gan", "ddpm", "ldm-autoencoder"):  # everything built is trained
        fam = registry.get(name)
        assert memory.trainable_parameters(name, "tiny", 32) == fam.describe(fam.model_config("tiny", 32))["totals"]
    hagan = memory.trainable_parameters("hagan", "tiny", 32)
    assert sum(hagan.values()) == count_parameters(get_preset("tiny", 32))["all"]
    # ldm (stage 2) trains its UNet only; the autoencoder is frozen
    ldm = memory.trainable_parameters("ldm", "tiny", 32)
    assert list(ldm) == ["unet"] and ldm["unet"] == registry.get("ldm").describe(
        memory.family_config("ldm", "tiny", 32))["totals"]["unet"]


def test_fits_label():
    assert memory.fits_label(16384.0, "measured") == "yes" and memory.fits_label(16385.0, "measured") == "no"
    assert memory.fits_label(6400.0, "extrapolated") == "yes (extrapolated: 6.2 GB)"
    assert memory.fits_label(41 * 1024.0, "extrapolated") == "no (extrapolated: 41 GB)"
    assert memory.fits_label(None, None) is None


def test_family_rows_extrapolate_memory_linear_in_voxels_beyond_the_measured_sizes():
    params = {s: {"G": 1_000_000, "D": 500_000} for s in (32, 64, 128, 256)}
    results = {32: {"peak_memory_mb": 100.0, "seconds_median": 0.1},
               64: {"peak_memory_mb": 800.0, "seconds_median": 0.4},
               128: {"skipped": "predicted 6.2 GB > limit 4.0 GB"}}  # 256: never reached
    rows = memory.family_rows("wgan-gp", "paper", params, results)
    by = {r["size"]: r for r in rows}
    assert [r["size"] for r in rows] == [32, 64, 128, 256]
    assert by[32]["networks"] == "G+D" and by[32]["params_total"] == 1_500_000 and by[32]["params_M"] == 1.5
    assert (by[32]["memory_mb"], by[32]["memory_source"], by[32]["fits_16gb"]) == (100.0, "measured", "yes")
    assert by[64]["seconds_per_iteration"] == 0.4 and by[64]["skipped"] is None
    # 800 + (800 - 100) / (64³ - 32³) · (128³ - 64³) = 800 + 700 · 8 = 6400 MiB
    assert by[128]["memory_mb"] == pytest.approx(6400.0) and by[128]["memory_source"] == "extrapolated"
    assert by[128]["fits_16gb"] == "yes (extrapolated: 6.2 GB)"
    assert by[128]["skipped"] == "predicted 6.2 GB > limit 4.0 GB" and "seconds_per_iteration" not in by[128]
    # 800 + 700 · (256³ - 64³) / (64³ - 32³) = 800 + 700 · 72 = 51200 MiB = 50 GB > 16 GB
    assert by[256]["memory_mb"] == pytest.approx(51200.0) and by[256]["fits_16gb"] == "no (extrapolated: 50 GB)"
    # measured over 16 GB
    big = memory.family_rows("x", "paper", {32: params[32]}, {32: {"peak_memory_mb": 20000.0, "seconds_median": 1}})
    assert big[0]["fits_16gb"] == "no"


def test_family_rows_without_enough_measurements_do_not_guess():
    params = {32: {"unet": 10}, 64: {"unet": 10}, 128: "sizes up to 64 only"}
    oom = "failed: killed by signal 9 (out of memory?)"
    one = memory.family_rows("ddpm", "base", params, {32: {"peak_memory_mb": 500.0, "seconds_median": 1.0},
                                                      64: {"skipped": oom}})
    assert one[1]["memory_mb"] is None and one[1]["memory_source"] is None and one[1]["fits_16gb"] is None
    assert one[1]["skipped"] == f"{oom}; 1 measured size(s), two needed to extrapolate"
    assert one[2] == {"family": "ddpm", "preset": "base", "size": 128,
                      "skipped": "size not supported: sizes up to 64 only"}
    none = memory.family_rows("pggan", "paper", {32: {"G": 1, "D": 1}}, {}, missing="no benchmark")
    assert none[0]["params_total"] == 2 and none[0]["memory_mb"] is None and none[0]["skipped"] == "no benchmark"
    assert memory.family_rows("pggan", "paper", {32: {"G": 1}}, {})[0]["skipped"] == "not measured"


def test_measure_families_plans_each_family_from_its_own_smaller_sizes():
    wgan = FakeRunner({32: 300.0, 64: 400.0, 128: 9999.0})
    ddpm = FakeRunner({32: 300.0, 64: 310.0, 128: 320.0})
    families = ["hagan", "wgan-gp", "alpha-gan", "ddpm"]
    params = {name: {s: {"net": 1} for s in (32, 64, 128)} for name in families}
    params["ddpm"][128] = "unsupported"
    hagan = {("hagan", s): {"peak_memory_mb": 200.0 + s, "seconds_median": 0.5, "wall_seconds": 1.0}
             for s in (32, 64, 128)}
    loads = []
    results = memory.measure_families(
        families, {name: "paper" for name in families}, [128, 32, 64], params, device="cpu", batch=1, repeats=1,
        threads=1, memory_limit_mb=1000.0, time_limit_s=600.0, measured=hagan,
        runners={"wgan-gp": wgan, "ddpm": ddpm, "alpha-gan": None}, on_size=loads.append)
    assert loads == [32, 64, 128]
    assert results["hagan"][64]["peak_memory_mb"] == 264.0  # reused, not run
    # wgan-gp at 128³: 400 + 100 · 8 = 1200 MiB predicted > 1000 MiB, not run
    assert results["wgan-gp"][128] == {"skipped": "predicted 1.2 GB > limit 1.0 GB"}
    assert [c[1] for c in wgan.calls] == [32, 64] and wgan.calls[0][2:] == (600.0, 1000.0)
    assert [c[1] for c in ddpm.calls] == [32, 64] and 128 not in results["ddpm"]  # size not supported
    assert results["alpha-gan"] == {}  # no benchmark (runner None): not measured
    rows = memory.family_rows("wgan-gp", "paper", params["wgan-gp"], results["wgan-gp"])
    assert rows[2]["memory_mb"] == pytest.approx(1200.0) and rows[2]["fits_16gb"] == "yes (extrapolated: 1.2 GB)"


def test_a_family_too_slow_beyond_its_smallest_size_is_measured_smaller_to_extrapolate():
    slow = FakeRunner({8: 100.0, 16: 200.0, 32: 1000.0}, fail_at=64)  # 64³ stopped, one measured size left
    failed = FakeRunner({8: 50.0, 16: 150.0}, fail_at=32)  # nothing measured in the table: 16³, then 8³
    fine = FakeRunner({32: 300.0, 64: 400.0})  # two measured sizes: nothing smaller tried
    families = ["stylegan2", "pggan", "wgan-gp"]
    params = {name: {s: {"net": 1} for s in (8, 16, 32, 64)} for name in families}
    results = memory.measure_families(
        families, {name: "paper" for name in families}, [32, 64], params, device="cpu", batch=1, repeats=1,
        threads=1, memory_limit_mb=4000.0, time_limit_s=600.0,
        runners={"stylegan2": slow, "pggan": failed, "wgan-gp": fine}, smaller=[8, 16])
    assert [c[1] for c in slow.calls] == [32, 64, 16]  # two measured after 16³: 8³ not tried
    assert [c[1] for c in failed.calls] == [32, 16, 8]  # a failure at 32³ does not stop the smaller sizes
    assert [c[1] for c in fine.calls] == [32, 64]
    assert results["pggan"][32]["skipped"].startswith("failed:") and results["pggan"][8]["peak_memory_mb"] == 50.0
    # the rows: 16³ and 32³ measured, 64³ (stopped) and 256³ (above --sizes) extrapolated through them:
    # 1000 + (1000 - 200) / (32³ - 16³) · (64³ - 32³) = 1000 + 800 · 8 = 7400 MiB
    shown = {s: params["stylegan2"][s] for s in (16, 32, 64)} | {256: {"net": 1}}
    rows = memory.family_rows("stylegan2", "paper", shown, results["stylegan2"],
                              missing={256: "not measured: above --sizes"})
    by = {r["size"]: r for r in rows}
    assert [r["size"] for r in rows] == [16, 32, 64, 256]
    assert by[16]["memory_source"] == "measured" and by[64]["memory_mb"] == pytest.approx(7400.0)
    assert by[64]["memory_source"] == "extrapolated" and by[64]["skipped"].startswith("failed:")
    # 1000 + 800 · (256³ - 32³) / (32³ - 16³) = 1000 + 800 · 584 = 468200 MiB
    assert by[256]["memory_mb"] == pytest.approx(468200.0) and by[256]["skipped"] == "not measured: above --sizes"
    assert by[256]["fits_16gb"] == "no (extrapolated: 457 GB)"


def test_extrapolated_sizes_default_to_256_at_demo_scale_and_must_be_above_the_measured():
    assert memory.parse_extrapolate(None, "demo", [32, 64, 128]) == [256]
    assert memory.parse_extrapolate(None, "full", [32, 64, 128, 256]) == []
    assert memory.parse_extrapolate(None, "demo", [32, 64, 128, 256]) == []  # measured, not extrapolated
    assert memory.parse_extrapolate("512,256", "smoke", [32]) == [256, 512]
    assert memory.parse_extrapolate("none", "demo", [32]) == []
    with pytest.raises(memory.UsageError, match="not above the largest measured size 64"):
        memory.parse_extrapolate("64", "demo", [32, 64])
    with pytest.raises(memory.UsageError, match="comma-separated"):
        memory.parse_extrapolate("big", "demo", [32])
