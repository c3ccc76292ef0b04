"""medgen bench: the result fields hold sane values (no timing thresholds)."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys

import pytest
import torch

from medgen.families.hagan.bench import cpu_model, run_isolated
from medgen.cli import main
from medgen.families.hagan import count_parameters, get_preset


def check_common(r: dict, kind: str, size: int, repeats: int) -> None:
    assert r["benchmark"] == kind and r["preset"] == "tiny" and r["size"] == size
    assert len(r["seconds"]) == r["repeats"] == repeats
    assert all(t > 0 for t in r["seconds"])
    assert r["seconds_median"] == statistics.median(r["seconds"])
    assert r["params"] == count_parameters(get_preset("tiny", size))
    assert r["params_total"] == r["params"]["all"]
    # a fresh process holds at least the interpreter and torch; far less than the machine
    assert 50 < r["peak_memory_mb"] < 64 * 1024
    assert r["memory_measure"] == "cpu_peak_rss"
    m = r["machine"]
    assert m["torch"] == torch.__version__ and m["cpu"] == cpu_model() and m["device_name"] == cpu_model()
    assert m["threads"] >= 1 and m["device"] == "cpu"


def test_generate_benchmark_fields():
    r = run_isolated("generate", preset="tiny", size=32, chunk=3, batch=2, warmup=0, repeats=2)
    check_common(r, "generate", 32, 2)
    assert r["batch"] == 2 and r["chunk"] == 3
    assert r["seconds_per_volume"] == pytest.approx(r["seconds_median"] / 2)
    assert r["stage_seconds"]["G^A"] > 0


def test_train_benchmark_through_the_cli(capsys):
    assert main(["bench", "train", "--preset", "tiny", "--size", "32", "--warmup", "1", "--repeats", "1", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    check_common(r, "train", 32, 1)
    assert r["batch"] == 2 and r["precision"] == "fp32" and r["warmup"] == 1


def test_train_benchmark_of_the_papers_recipe(capsys):
    from medgen.families.hagan.config import PAPER_MODEL

    assert main(["bench", "train", "--preset", "tiny", "--size", "32", "--warmup", "0", "--repeats", "1", "--json",
                 "--recipe", "paper"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert (r["recipe"], r["slab_context"], r["minibatch_std"]) == ("paper", "zero-padded", 0)
    assert r["params"] == count_parameters(get_preset("tiny", 32, **PAPER_MODEL))  # no minibatch-std channel
    # the CT recipe: D's two window channels, and its training settings in the measured loop
    assert main(["bench", "train", "--preset", "tiny", "--size", "32", "--warmup", "0", "--repeats", "1", "--json",
                 "--recipe", "ct"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["recipe"] == "ct" and r["params"]["all"] > count_parameters(get_preset("tiny", 32))["all"]
    assert main(["bench", "generate", "--preset", "tiny", "--size", "32", "--recipe", "paper"]) == 2
    assert main(["bench", "train", "--family", "ddpm", "--preset", "tiny", "--size", "32", "--recipe", "paper"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "applies to bench train" in err[0] and "has recipes: none" in err[1]


def test_bad_request_is_a_usage_error(capsys):
    assert main(["bench", "generate", "--preset", "tiny", "--size", "32", "--repeats", "0"]) == 2
    assert main(["bench", "generate", "--preset", "nope", "--size", "32"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "repeats" in err[0] and "nope" in err[1]


def test_peak_rss_counts_this_process_allocations():
    code = (
        "import numpy as np; from medgen.families.hagan.bench import peak_rss_mb\n"
        "before = peak_rss_mb(); a = np.ones(300 * 2**20 // 8); print(before, peak_rss_mb())"
    )
    before, after = map(float, subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                              check=True).stdout.split())
    assert 290 < after - before < 400
