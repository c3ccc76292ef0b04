"""Counterfactual explanations (``medgen explain``): an adversarial deformation that shrinks what the classifier
counts, latent editing along a class direction, and gradient saliency — on classifiers whose answer is known."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medgen.cli import main
from medgen.core.errors import UsageError
from medgen.inference.explain import (class_direction, deformation_counterfactual, latent_counterfactual,
                                      saliency_map)
from medgen.metrics.registration import jacobian_determinant

pytestmark = pytest.mark.usefixtures("one_thread")

N = 24
GRID = np.stack(np.meshgrid(*[np.arange(N)] * 3, indexing="ij")).astype(np.float64)
RADIUS = np.sqrt(((GRID - (N - 1) / 2) ** 2).sum(0))
#: The toy classifier's threshold: class 1 ("enlarged") when the bright share exceeds a ball of radius 5.5.
THRESHOLD = 4 / 3 * np.pi * 5.5**3 / N**3


def ball(radius: float) -> np.ndarray:
    return np.where(RADIUS < radius, 1.0, -1.0).astype(np.float32)


def volume_logits(x: torch.Tensor) -> torch.Tensor:
    """Two classes by the share of bright tissue: logit₁ = 200 (share − THRESHOLD), logit₀ = 0."""
    share = ((x + 1) / 2).mean(dim=(1, 2, 3, 4))
    l1 = 200 * (share - THRESHOLD)
    return torch.stack([torch.zeros_like(l1), l1], 1)


def test_deformation_shrinks_the_ball_until_the_classifier_says_normal():
    x = ball(7.0)  # share 0.106 against the threshold 0.0517: p(class 1) ≈ 1
    exp = deformation_counterfactual(volume_logits, x, target=0, confidence=0.9)
    assert exp.probs_before[1] > 0.999 and exp.reached
    assert exp.probs_after[0] >= 0.9 and exp.info["steps"] < 200
    # the counterfactual is the input warped by the returned field, and the classifier's answer on it is p_after
    from medgen.inference.register import warp

    np.testing.assert_allclose(warp(x, exp.displacement), exp.image, atol=1e-4)
    share = float(((exp.image + 1) / 2).mean())
    assert share < THRESHOLD - np.log(9) / 200 + 1e-4  # p(0) ≥ 0.9 ⇔ share ≤ threshold − ln 9 / 200
    assert share > 0.2 * THRESHOLD  # the ball shrank, it did not vanish
    # the Jacobian is that of the displacement; > 1 (tissue shrinks) inside the ball, < 1 (the background grows
    # into the room it leaves) outside; no folding
    np.testing.assert_allclose(exp.jacobian, jacobian_determinant(exp.displacement), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(exp.map, np.log(exp.jacobian), atol=1e-5)
    assert exp.map[RADIUS < 4].mean() > 0.3
    assert exp.map[RADIUS > 9].mean() < 0
    assert exp.jacobian.min() > 0
    # deterministic: the field starts at zero
    again = deformation_counterfactual(volume_logits, x, target=0, confidence=0.9)
    np.testing.assert_array_equal(again.displacement, exp.displacement)


def test_the_robust_deformation_also_shrinks_the_ball_and_is_reproducible():
    """The bright share is unchanged in expectation by zero-mean noise and exactly by circular shifts, so the
    expectation over transformations has the same answer: shrink the ball."""
    x = ball(7.0)
    kw = dict(target=0, confidence=0.9, samples=4, noise=0.2, shift=1, seed=3)
    exp = deformation_counterfactual(volume_logits, x, **kw)
    assert exp.info["samples"] == 4 and exp.info["noise"] == 0.2 and exp.info["shift"] == 1
    assert exp.map[RADIUS < 4].mean() > 0.3 and exp.jacobian.min() > 0
    assert float(((exp.image + 1) / 2).mean()) < THRESHOLD  # the clean counterfactual is below the threshold
    again = deformation_counterfactual(volume_logits, x, **kw)
    np.testing.assert_array_equal(again.displacement, exp.displacement)
    with pytest.raises(UsageError, match="samples"):
        deformation_counterfactual(volume_logits, x, samples=0)


def test_a_volume_already_in_the_target_class_is_not_moved():
    x = ball(4.0)
    exp = deformation_counterfactual(volume_logits, x, target=0, confidence=0.9)
    assert exp.info["steps"] == 0 and exp.reached
    assert np.all(exp.displacement == 0) and np.all(exp.jacobian == 1)
    np.testing.assert_allclose(exp.image, x, atol=1e-5)  # float32 resampling at the identity


def test_deformation_settings_are_checked():
    with pytest.raises(UsageError, match="target class 2"):
        deformation_counterfactual(volume_logits, ball(7.0), target=2)
    with pytest.raises(UsageError, match="steps"):
        deformation_counterfactual(volume_logits, ball(7.0), steps=0)
    with pytest.raises(UsageError, match="confidence"):
        deformation_counterfactual(volume_logits, ball(7.0), confidence=1.5)


def test_class_direction_is_the_difference_of_class_means():
    codes = np.array([[0.0, 1.0], [2.0, 3.0], [10.0, 0.0], [12.0, 2.0], [11.0, 4.0]])
    labels = [0, 0, 1, 2, 1]
    np.testing.assert_allclose(class_direction(codes, labels, 0), [1.0 - 11.0, 2.0 - 2.0])
    np.testing.assert_allclose(class_direction(codes, labels, 2), [12.0 - 5.75, 2.0 - 2.0])
    with pytest.raises(UsageError, match="class 3"):
        class_direction(codes, labels, 3)


def test_latent_edit_takes_the_smallest_step_that_reaches_the_target():
    """A linear 'autoencoder' whose one code is the ball's brightness: decode(z) = z · pattern; editing the code
    changes the bright share linearly, so the smallest sufficient α is known in closed form."""
    pattern = (RADIUS < 7).astype(np.float32)

    def encode(v: np.ndarray) -> np.ndarray:
        return (v.reshape(len(v), -1) @ pattern.ravel() / pattern.sum())[:, None].astype(np.float32)

    def decode(z: np.ndarray) -> np.ndarray:
        return (np.asarray(z, np.float32)[:, :1, None, None] * pattern[None]).astype(np.float32)

    x = ball(7.0)  # code 1.0
    direction = np.array([-1.0])  # the 'normal' class's codes are lower
    exp = latent_counterfactual(volume_logits, encode, decode, x, direction, target=0, alphas=(0.1, 0.3, 0.6, 1.0, 2.0))
    # share(α) = share(x) − α · |pattern| / (2 N³): the first α with share < THRESHOLD
    need = (float(((x + 1) / 2).mean()) - THRESHOLD) * 2 * N**3 / pattern.sum()
    first = min(a for a in (0.1, 0.3, 0.6, 1.0, 2.0) if a > need)
    assert exp.info["alpha"] == first and exp.reached
    np.testing.assert_allclose(exp.map, -first * pattern, atol=1e-6)  # Δ = D(z + αd) − D(z)
    np.testing.assert_allclose(exp.image, x + exp.map, atol=1e-6)
    assert [t["alpha"] for t in exp.info["alphas_tried"]] == [a for a in (0.1, 0.3, 0.6, 1.0, 2.0) if a <= first]
    # a target beyond the grid: the largest α, not reached
    far = latent_counterfactual(volume_logits, encode, decode, x, direction * 0.01, target=0, alphas=(1.0, 2.0))
    assert far.info["alpha"] == 2.0 and not far.reached


def test_saliency_of_a_linear_classifier_is_its_weight_times_the_other_probability():
    w = torch.from_numpy(np.random.default_rng(0).normal(size=(8, 8, 8)))

    def logits(x: torch.Tensor) -> torch.Tensor:
        l1 = (x[:, 0].double() * w).sum(dim=(1, 2, 3)) * 0.05
        return torch.stack([torch.zeros_like(l1), l1], 1)

    x = np.random.default_rng(1).uniform(-1, 1, (8, 8, 8)).astype(np.float32)
    exp = saliency_map(logits, x, target=0, sigma=0)
    # log p0 = −log(1 + e^{l1}): ∂/∂x = −p1 · 0.05 w
    np.testing.assert_allclose(exp.map, exp.probs_before[1] * 0.05 * np.abs(w.numpy()), rtol=1e-5)
    assert exp.image is None and exp.reached is None


# ----------------------------------------------------------------------------- the command


def read_volume(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import nibabel as nib

    img = nib.load(str(path))
    return np.asarray(img.dataobj, dtype=np.float32), img.affine

S = 16


def write_set(root: Path, n: int = 24) -> Path:
    """Balls on a −1 background at 16³: class 0 radius 3, class 1 radius 5.5 (an 'enlarged' structure)."""
    rng = np.random.default_rng(0)
    g = np.stack(np.meshgrid(*[np.arange(S)] * 3, indexing="ij")).astype(np.float32)
    r = np.sqrt(((g - 7.5) ** 2).sum(0))
    (root / "volumes").mkdir(parents=True)
    rows = []
    for i in range(n):
        label = i % 2
        v = np.where(r < (3.0 if label == 0 else 5.5) + rng.uniform(-0.3, 0.3), 0.6, -1.0)
        v = np.clip(v + rng.normal(0, 0.05, v.shape), -1, 1).astype(np.float16)
        np.save(root / "volumes" / f"v{i:02d}.npy", v)
        rows.append({"id": f"v{i:02d}", "source": "test", "orig_shape": "16x16x16", "orig_spacing": "2x2x2",
                     "spacing": "2x2x2", "file": f"volumes/v{i:02d}.npy", "label": label})
    with open(root / "manifest.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (root / "preprocess.json").write_text(json.dumps({"modality": "ct", "size": S, "hu_window": [-1000.0, 600.0]}))
    return root


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("explain")
    data = write_set(base / "data")
    clf, ae = base / "clf", base / "ae"
    assert main(["train", str(data), "--family", "classifier", "--preset", "tiny", "--label-column", "label",
                 "--iters", "60", "--batch", "4", "--out", str(clf), "--device", "cpu", "--no-progress"]) == 0
    assert main(["train", str(data), "--family", "autoencoder", "--preset", "tiny", "--iters", "4", "--batch", "2",
                 "--out", str(ae), "--device", "cpu", "--no-progress"]) == 0
    return {"data": data, "clf": clf, "ae": ae}


def test_medgen_explain_writes_a_deformation_counterfactual_in_hounsfield_units(runs, tmp_path, capsys):
    import medgen

    out = tmp_path / "def"
    code = main(["explain", str(runs["clf"]), f"{runs['data']}:v01", "--out", str(out), "--steps", "5",
                 "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    s = json.loads((out / "summary.json").read_text())
    x = np.load(runs["data"] / "volumes" / "v01.npy").astype(np.float32)
    expected = medgen.load(runs["clf"], device="cpu").predict_proba(x)[0]
    np.testing.assert_allclose(s["probs_before"], expected, atol=1e-6)
    assert s["method"] == "deformation" and s["steps"] <= 5 and len(s["p_target_history"]) == s["steps"] + 1
    cf, affine = read_volume(out / "counterfactual.nii.gz")
    diff, _ = read_volume(out / "difference.nii.gz")
    np.testing.assert_allclose(np.diag(affine)[:3], 2.0)  # the input's spacing
    x_hu = -1000.0 + (x + 1) * 800.0  # the run's CT window [-1000, 600]
    np.testing.assert_allclose(diff, cf - x_hu, atol=0.05)
    disp, _ = read_volume(out / "displacement.nii.gz")
    assert disp.shape == (S, S, S, 3)
    jac, _ = read_volume(out / "jacobian.nii.gz")
    np.testing.assert_allclose(read_volume(out / "map.nii.gz")[0], np.log(jac), atol=1e-4)
    assert (out / "figure.png").stat().st_size > 1000
    assert "→ p(class 0)" in capsys.readouterr().out


def test_medgen_explain_latent_and_saliency(runs, tmp_path, capsys):
    out = tmp_path / "lat"
    assert main(["explain", str(runs["clf"]), f"{runs['data']}:v01", "--out", str(out), "--method", "latent",
                 "--generator", str(runs["ae"]), "--direction-data", str(runs["data"]), "--device", "cpu"]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["method"] == "latent" and s["direction_volumes"] == 24 and s["alpha"] > 0
    assert not (out / "displacement.nii.gz").exists()
    out = tmp_path / "sal"
    assert main(["explain", str(runs["clf"]), f"{runs['data']}:v01", "--out", str(out), "--method", "saliency",
                 "--device", "cpu"]) == 0
    assert (out / "map.nii.gz").is_file() and not (out / "counterfactual.nii.gz").exists()


@pytest.mark.parametrize("extra, message", [
    (["--method", "latent"], "needs --generator"),
    (["--generator", "x"], "belong to --method latent"),
    (["--target", "5"], "target class 5"),
])
def test_medgen_explain_usage_errors(runs, tmp_path, capsys, extra, message):
    assert main(["explain", str(runs["clf"]), f"{runs['data']}:v01", "--out", str(tmp_path / "e"), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_medgen_explain_refuses_a_run_that_is_not_a_classifier(runs, tmp_path, capsys):
    assert main(["explain", str(runs["ae"]), f"{runs['data']}:v01", "--out", str(tmp_path / "e")]) == 2
    assert "needs a classifier run" in capsys.readouterr().err
