"""Feature extractors: MedicalNet architecture/weight loading, input handling, metric sanity."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medgen.core.errors import InputError, UsageError
from medgen.metrics.features import RANDOM_WARNING, load_medicalnet_weights, make_extractor, prepare_volume
from medgen.metrics.fid import fid
from medgen.metrics.kid import kid
from medgen.metrics.mmd import mmd2_gaussian
from medgen.metrics.prdc import prdc
from toy_volumes import toy_body


def medicalnet_resnet50_schema() -> dict[str, tuple[int, ...]]:
    """Parameter names/shapes of MedicalNet's ResNet-50, written from its architecture:
    conv1 7³ (1→64), bottleneck stages of [3, 4, 6, 3] blocks with widths 64..512 (×4 out),
    a 1×1 conv + BN shortcut (type B) on each stage's first block, no classifier."""
    schema: dict[str, tuple[int, ...]] = {"conv1.weight": (64, 1, 7, 7, 7)}

    def bn(prefix: str, c: int) -> None:
        for name in ("weight", "bias", "running_mean", "running_var"):
            schema[f"{prefix}.{name}"] = (c,)

    bn("bn1", 64)
    inplanes = 64
    for stage, (planes, blocks) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3)), start=1):
        for b in range(blocks):
            p = f"layer{stage}.{b}"
            schema[f"{p}.conv1.weight"] = (planes, inplanes, 1, 1, 1)
            bn(f"{p}.bn1", planes)
            schema[f"{p}.conv2.weight"] = (planes, planes, 3, 3, 3)
            bn(f"{p}.bn2", planes)
            schema[f"{p}.conv3.weight"] = (planes * 4, planes, 1, 1, 1)
            bn(f"{p}.bn3", planes * 4)
            if b == 0:
                schema[f"{p}.downsample.0.weight"] = (planes * 4, inplanes, 1, 1, 1)
                bn(f"{p}.downsample.1", planes * 4)
            inplanes = planes * 4
    return schema


def phantom(rng: np.random.Generator, n: int = 24) -> np.ndarray:
    return toy_body(rng, n, spine=False)


@pytest.fixture(scope="module")
def random_extractor():
    return make_extractor("random", input_size=16, device="cpu", seed=0)


def test_network_has_medicalnet_parameter_names_and_shapes(random_extractor):
    schema = medicalnet_resnet50_schema()
    got = {k: tuple(v.shape) for k, v in random_extractor.network.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert got == schema
    assert sum(np.prod(s) for k, s in schema.items() if "running" not in k) == pytest.approx(46.16e6, rel=0.01)


def test_last_stage_is_dilated_at_one_eighth_resolution(random_extractor):
    net = random_extractor.network
    captured = {}
    hook = net.layer4.register_forward_hook(lambda m, i, o: captured.setdefault("out", o))
    with torch.inference_mode():
        feats = net(torch.randn(1, 1, 24, 24, 24))
    hook.remove()
    assert tuple(captured["out"].shape) == (1, 2048, 3, 3, 3)  # 24/8: MedicalNet keeps 1/8 after layer2
    # The feature is the global average pool of that map.
    torch.testing.assert_close(feats, captured["out"].mean(dim=(2, 3, 4)))
    assert net.layer4[1].conv2.dilation == (4, 4, 4) and net.layer3[0].conv2.dilation == (2, 2, 2)


def test_random_features_are_seeded_and_labelled(random_extractor):
    rng = np.random.default_rng(0)
    vols = [rng.uniform(-1, 1, (20, 20, 20)).astype(np.float32) for _ in range(3)]
    f1 = random_extractor.extract(vols, batch_size=2, progress=False)
    assert f1.shape == (3, 2048)
    # Per-volume features do not depend on how volumes are batched.
    f_single = random_extractor.extract(vols[1:2], batch_size=1, progress=False)
    np.testing.assert_allclose(f1[1:2], f_single, rtol=1e-4, atol=1e-6)
    assert random_extractor.comparable_with_published is False
    assert random_extractor.describe()["warning"] == RANDOM_WARNING
    other = make_extractor("random", input_size=16, device="cpu", seed=1)
    assert not np.allclose(other.extract(vols[:1], progress=False), f1[:1])


def test_medicalnet_weight_file_with_module_prefix_and_seg_head_loads(tmp_path, random_extractor):
    state = random_extractor.network.state_dict()
    ckpt = {f"module.{k}": v.clone() for k, v in state.items() if not k.endswith("num_batches_tracked")}
    ckpt["module.conv_seg.1.weight"] = torch.zeros(2048, 32, 2, 2, 2)  # MedicalNet's segmentation head
    ckpt["module.conv_seg.2.running_mean"] = torch.zeros(32)
    path = tmp_path / "resnet_50.pth"
    torch.save({"state_dict": ckpt, "epoch": 3}, path)
    med3d = make_extractor("med3d", weights=path, input_size=16, device="cpu")
    assert med3d.comparable_with_published is True and med3d.warning is None
    assert len(med3d.settings["weights_sha256"]) == 64
    loaded = med3d.network.state_dict()
    for k, v in ckpt.items():
        if "conv_seg" not in k:
            torch.testing.assert_close(loaded[k[len("module."):]], v, rtol=0, atol=0)
    vol = [phantom(np.random.default_rng(1))]
    np.testing.assert_allclose(med3d.extract(vol, progress=False), random_extractor.extract(vol, progress=False), rtol=1e-6)


def test_wrong_weight_files_are_refused_with_one_clear_line(tmp_path, random_extractor):
    state = {k: v for k, v in random_extractor.network.state_dict().items()}
    del state["layer2.0.conv1.weight"]
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    with pytest.raises(InputError, match=r"partial\.pth: not a MedicalNet ResNet-50 state dict: missing 1 keys e\.g\. layer2\.0\.conv1\.weight"):
        load_medicalnet_weights(random_extractor.network, path)
    state["layer2.0.conv1.weight"] = torch.zeros(3, 3)
    torch.save(state, path)
    with pytest.raises(InputError, match="wrong shape"):
        load_medicalnet_weights(random_extractor.network, path)
    (tmp_path / "junk.pth").write_bytes(b"not a pickle")
    with pytest.raises(InputError, match="junk.pth: cannot read"):
        load_medicalnet_weights(random_extractor.network, tmp_path / "junk.pth")


def test_med3d_and_encoder_without_weights_are_usage_errors():
    with pytest.raises(UsageError, match="--weights FILE"):
        make_extractor("med3d")
    with pytest.raises(UsageError, match="--weights RUN"):
        make_extractor("encoder")


def test_prepare_volume_zscore_resize_and_axis_order():
    rng = np.random.default_rng(2)
    vol = np.full((8, 8, 8), -1.0, np.float32)
    vol[2:6, 1:7, 3:8] = rng.uniform(-0.5, 1.0, (4, 6, 5))
    expected = (vol - vol.mean()) / vol.std()
    np.testing.assert_allclose(prepare_volume(vol, None, "zscore")[0].numpy(), expected, atol=1e-5)
    np.testing.assert_array_equal(prepare_volume(vol, None, "raw")[0].numpy(), vol)
    np.testing.assert_array_equal(prepare_volume(vol, None, "raw", "zyx")[0].numpy(), vol.transpose(2, 1, 0))
    # Shrinking averages each output cell (box filter): a ramp 32 -> 16 becomes its pair means,
    # and a constant background stays exactly constant up to the borders.
    ramp = np.broadcast_to(np.linspace(-1, 1, 32, dtype=np.float32)[:, None, None], (32, 32, 32))
    small = prepare_volume(ramp, 16, "raw")[0].numpy()
    assert small.shape == (16, 16, 16)
    for j, k in ((0, 0), (8, 8), (15, 3)):
        np.testing.assert_allclose(small[:, j, k], np.linspace(-1, 1, 32).reshape(16, 2).mean(1), atol=1e-6)
    np.testing.assert_array_equal(prepare_volume(-np.ones((20, 20, 20)), 16, "raw").numpy(), -1.0)
    # Enlarging is trilinear: a ramp stays linear in the interior.
    big = prepare_volume(np.linspace(-1, 1, 8)[:, None, None] * np.ones((8, 8, 8)), 16, "raw")[0].numpy()
    np.testing.assert_allclose(np.diff(big[1:-1, 4, 4]), (2 / 7) / 2, atol=1e-6)


def test_metrics_rise_with_degradation_and_real_halves_sit_near_the_floor(random_extractor):
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(0)
    vols = [phantom(rng) for _ in range(16)]
    half_a, half_b = vols[:8], vols[8:]
    degradations = {
        "noise": [lambda v, s=s: np.clip(v + np.random.default_rng(1).normal(0, s, v.shape), -1, 1) for s in (0.1, 0.4, 0.8)],
        "blur": [lambda v, s=s: gaussian_filter(v, s, mode="nearest") for s in (1.0, 2.0)],
    }
    degraded = [f(v) for levels in degradations.values() for f in levels for v in half_b]
    # One pass over all volumes: at 16^3 the cost is reading the weights once per batch.
    feats = random_extractor.extract(half_a + half_b + degraded, batch_size=len(degraded) + 16, progress=False)
    feats_a, feats_b, rest = feats[:8], feats[8:16], feats[16:]

    def scores(f):
        return {"fid": fid(feats_a, f), "mmd": mmd2_gaussian(feats_a, f), "kid": kid(feats_a, f, subsets=10)[0]}

    floor = scores(feats_b)
    # A set against itself: FID 0 and PRDC exactly 1 (network features have a large common
    # offset, so this also checks that ties of identical samples resolve consistently).
    assert fid(feats_a, feats_a.copy()) == pytest.approx(0.0, abs=1e-9)
    assert prdc(feats_a, feats_a.copy(), k=3) == {"precision": 1.0, "recall": 1.0, "density": 1.0, "coverage": 1.0}
    start = 0
    for kind, levels in degradations.items():
        results = []
        for _ in levels:
            results.append(scores(rest[start : start + 8]))
            start += 8
        for name in floor:
            values = [r[name] for r in results]
            assert all(x < y for x, y in zip(values, values[1:])), (kind, name, values)
            # Real vs real (same sample sizes) is the floor: below every degraded score,
            # and well below the strongest degradation.
            assert floor[name] < values[0] and floor[name] < 0.5 * values[-1], (kind, name, floor[name], values)
