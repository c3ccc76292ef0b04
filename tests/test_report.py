"""`medgen report`: a self-contained HTML page whose images all decode, whose text is escaped,
and which shows the run's configuration and the metrics with their caveats."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch

from medgen.cli import main
from medgen.training.runconfig import RunConfig
from medgen.families.hagan import get_preset
from medgen.families.registry import train
from toy_volumes import make_dataset

S = 32
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.srcs: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.srcs.append(dict(attrs)["src"])

    def handle_data(self, data):
        self.text.append(data)


def _read_png(data: bytes) -> np.ndarray:
    import matplotlib.image

    return matplotlib.image.imread(io.BytesIO(data), format="png")




@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A 2-iteration tiny run in a folder whose name needs HTML escaping."""
    base = tmp_path_factory.mktemp("report")
    data = make_dataset(base / "data", n=4)
    cfg = RunConfig(
        data=str(data), model=get_preset("tiny", S).to_dict(), preset="tiny", iters=2, batch=2, device="cpu",
        log_every=1, sample_every=1, ckpt_every=1000, num_samples=2, split_fractions=(1.0, 0.0, 0.0),
        hparams=dict(lr_d=0.000321),
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(cfg, base / "run<b>&x", progress=False)
    finally:
        torch.set_num_threads(threads)
    return base / "run<b>&x"


def _metrics_json(path: Path) -> Path:
    """A metrics file shaped like `medgen evaluate`'s, with random features and one figure."""
    report = {
        "warning": "random <features>: NOT comparable with published values",
        "extractor": {"name": "random", "architecture": "resnet50", "input_size": 64, "intensity": "ct"},
        "real": {"path": "data/heldout", "kind": "preprocessed", "n": 6},
        "fake": {"path": "samples", "kind": "folder", "n": 6},
        "metrics": {
            "fid": {"value": 123.456789, "std": 4.56789, "n_real": 6, "n_fake": 6},
            "kid": {"value": -0.00123456, "std": 0.0005, "n_real": 6, "n_fake": 6},
            "memorisation": {"value": 0.987654, "n_real": 6, "n_fake": 6, "details": {"n_likely_copy": 0}},
            "anatomy": {"value": {"lung_volume": 0.3141592}, "n_real": 6, "n_fake": 6},
            "is": {"error": "needs --classifier"},
        },
        "figures": [],
        "notes": ["real: 2 volumes skipped"],
    }
    path.write_text(json.dumps(report))
    figures = path.with_name(path.stem + "-figures")
    figures.mkdir()
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2, 2))
    fig.subplots().plot([0, 1], [0, 1])
    fig.savefig(figures / "anatomy_histograms.png")
    return path


def test_report_html(run_dir, tmp_path):
    metrics = _metrics_json(tmp_path / "metrics.json")
    out = tmp_path / "r.html"
    assert main(["report", str(run_dir), "--out", str(out), "--metrics", str(metrics), "--n-samples", "2"]) == 0
    page = out.read_text(encoding="utf-8")
    parser = _Images()
    parser.feed(page)
    text = "".join(parser.text)

    # every image is embedded, decodes to a PNG and is not uniform:
    # curves, real+generated mosaic, training samples, anatomy histograms
    assert len(parser.srcs) == 4
    for src in parser.srcs:
        assert src.startswith("data:image/png;base64,")
        data = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert data[:8] == PNG_SIGNATURE
        assert _read_png(data).std() > 0.01

    # the mosaic has 2 real + 2 generated rows: its height is 4 panels of >= 128 px
    mosaic = _read_png(base64.b64decode(parser.srcs[1].split(",", 1)[1]))
    assert mosaic.shape[0] >= 4 * 128 and mosaic.shape[0] < 5 * 128 * 2
    assert "2 real training volume(s)" in text and "Real: v0, v1." in text

    # configuration from config.yaml
    cfg = RunConfig.load(run_dir)
    assert "0.000321" in text and cfg.model["latent_dim"] == 128 and ">latent_dim<" in page
    assert "checkpoint iteration" in text and re.search(r">checkpoint iteration</td><td[^>]*>2<", page)

    # metrics formatted to 4 significant digits, with the warning and caveats
    for shown in ("123.5", "4.568", "-0.001235", "0.9877", "anatomy.lung_volume (W1)", "0.3142"):
        assert shown in text
    assert 'class="warning"' in page and "random <features>" in text
    assert "random &lt;features&gt;" in page
    assert "indistinguishable" in text and "FAILED is: needs --classifier" in text
    assert "note: real: 2 volumes skipped" in text

    # the run path is escaped everywhere
    assert "run<b>" not in page and "run&lt;b&gt;&amp;x" in page
    # figures that are absent are named, traversals get a note
    assert "no nearest_training_pairs.png" in text and "no latent traversal figure" in text


def test_report_defaults_and_missing_data(run_dir, tmp_path):
    """No metrics → an instruction; the data folder gone → generated volumes only, with a note."""
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    cfg = RunConfig.load(run)
    cfg.data = str(tmp_path / "gone")
    cfg.save(run)
    assert main(["report", str(run), "--n-samples", "1"]) == 0
    page = (run / "report.html").read_text(encoding="utf-8")
    assert "pass --metrics metrics.json" in page
    assert "generated volumes only" in page
    parser = _Images()
    parser.feed(page)
    mosaic = _read_png(base64.b64decode(parser.srcs[1].split(",", 1)[1]))
    assert mosaic.shape[0] < 2 * 128 * 2  # one generated row only (panels are 128-255 px)

    # the demo layout: RUN/../metrics.json is used when --metrics is not given
    _metrics_json(tmp_path / "metrics.json")
    assert main(["report", str(run), "--no-samples", "--out", str(tmp_path / "b.html")]) == 0
    page = (tmp_path / "b.html").read_text(encoding="utf-8")
    assert "123.5" in page and "pass --metrics" not in page
    assert "no generated volumes (--no-samples)" in page


def test_report_rejects_non_run(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "config.yaml" in err[0]
    assert not (tmp_path / "empty" / "report.html").exists()


def test_report_renders_in_chromium(run_dir, tmp_path):
    chromium = shutil.which("chromium")
    if chromium is None:
        if os.environ.get("MEDGEN_REQUIRE_CHROMIUM"):
            pytest.fail("MEDGEN_REQUIRE_CHROMIUM is set but chromium is not on PATH")
        pytest.skip("Debian chromium not installed: apt-get install chromium")
    out = tmp_path / "r.html"
    assert main(["report", str(run_dir), "--out", str(out), "--n-samples", "1"]) == 0
    shot = tmp_path / "shot.png"
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1200,3200",
           out.resolve().as_uri()]
    # 3200 px tall: the mosaics lie below the configuration table, which grows with the family's settings
    subprocess.run(cmd, capture_output=True, timeout=120, check=False)
    assert shot.is_file(), "chromium wrote no screenshot"
    img = _read_png(shot.read_bytes())
    assert img.std() > 0.02  # not a blank page
    # the embedded images were drawn: the mosaic's black background covers far more than text would
    assert (img[..., :3].mean(axis=-1) < 0.1).mean() > 0.01

    # every image loads: a copy of the page that records, after loading, how many images decoded
    probe = tmp_path / "probe.html"
    script = ("<script>window.addEventListener('load',()=>{const a=[...document.images];"
              "document.body.setAttribute('data-loaded',a.filter(i=>i.complete&&i.naturalWidth>0).length+'/'+a.length)})"
              "</script></body>")
    probe.write_text(out.read_text(encoding="utf-8").replace("</body>", script), encoding="utf-8")
    dump = subprocess.run([*cmd[:-3], "--dump-dom", probe.resolve().as_uri()], capture_output=True, text=True,
                          timeout=120, check=False).stdout
    n_images = out.read_text(encoding="utf-8").count("<img ")
    assert n_images >= 3 and f'data-loaded="{n_images}/{n_images}"' in dump
