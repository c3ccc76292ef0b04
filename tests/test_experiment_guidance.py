"""`medgen experiment guidance`: the rank correlation it reports, and a smoke run."""

import csv

import numpy as np
import pytest

from medgen.cli import main
from medgen.experiments.guidance import spearman


def ranks(v: np.ndarray) -> np.ndarray:
    """Average ranks (1-based), ties sharing the mean of their positions: Spearman's definition."""
    order = np.argsort(v, kind="mergesort")
    r = np.empty(len(v))
    r[order] = np.arange(1, len(v) + 1)
    for value in np.unique(v):
        tied = v == value
        r[tied] = r[tied].mean()
    return r


def test_spearman_is_the_pearson_correlation_of_average_ranks():
    rng = np.random.default_rng(0)
    classes = np.repeat(np.arange(4.0), 8)  # tied ranks, as in the experiment
    emph = classes * 3 + rng.normal(0, 4, classes.size)
    rx, ry = ranks(classes), ranks(emph)
    expected = float(np.corrcoef(rx, ry)[0, 1])
    assert spearman(classes, emph) == pytest.approx(expected, abs=1e-12)
    assert spearman(classes, classes * 2 + 1) == pytest.approx(1.0)
    assert spearman(classes, -classes) == pytest.approx(-1.0)
    with_nan = emph.copy()
    with_nan[0] = np.nan  # a volume without lung: left out
    assert spearman(classes, with_nan) == pytest.approx(float(np.corrcoef(ranks(classes[1:]), ranks(emph[1:]))[0, 1]))
    assert np.isnan(spearman(classes, np.ones_like(classes)))  # no spread: undefined


def test_bad_weights_exit_2_with_one_line(tmp_path, capsys):
    code = main(["experiment", "guidance", "--scale", "smoke", "--work", str(tmp_path / "w"), "--out",
                 str(tmp_path / "o"), "--guidance", "1,-2", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--guidance '1,-2': need weights >= 0" in err and len(err.splitlines()) == 1


@pytest.mark.slow
def test_guidance_smoke_run(tmp_path):
    out = tmp_path / "out"
    assert main(["experiment", "guidance", "--scale", "smoke", "--work", str(tmp_path / "w"), "--out", str(out),
                 "--guidance", "0,2", "--per-class", "2", "--no-progress"]) == 0
    with open(out / "guidance.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["guidance"] for r in rows] == ["0.0", "2.0", ""]
    means = [k for k in rows[0] if k.startswith("class") and k.endswith("_mean")]
    assert len(means) >= 2
    # weight 0 is the unconditional model: the same seeds give the same volumes whatever the class asked for
    assert len({rows[0][k] for k in means}) == 1
    # the phantoms' classes are emphysema stages: the real set's own correlation is strong
    assert float(rows[-1]["spearman"]) > 0.7
    with open(out / "guidance-volumes.csv", newline="") as fh:
        volumes = list(csv.DictReader(fh))
    assert len(volumes) == 2 * 2 * len(means)
    assert "medgen experiment guidance --scale smoke --out" in (out / "guidance.md").read_text()


@pytest.mark.parametrize("argv, expected", [
    (["experiment", "--help"], "guidance"),
    (["experiment", "guidance", "--help"], "--per-class"),
    (["experiment", "synthesis", "--help"], "--families"),
])
def test_help_lists_the_experiment_and_its_options(argv, expected, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    assert expected in capsys.readouterr().out
