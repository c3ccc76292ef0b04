"""The supervised image-to-image ``unet`` family: residual output, windows, patches, tasks, and that training
beats the trivial baseline (the degraded input itself) on held-out pairs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medgen.cli import main
from medgen.core.errors import UsageError
from medgen.families import registry
from medgen.families.unet.config import model_config
from medgen.families.unet.network import build_unet, forward, predict
from medgen.families.unet.train import random_patches
from medgen.metrics import paired
from medgen.training.runconfig import RunConfig
from toy_volumes import make_dataset


pytestmark = pytest.mark.usefixtures("one_thread")


def test_tasks_set_inputs_and_residual_and_options_override_them():
    cfg = model_config("tiny", 32, task="inpaint")
    assert cfg.inputs == ("degraded", "mask") and cfg.target == "image" and cfg.residual
    cfg = model_config("tiny", 32, task="xray2ct")
    assert cfg.inputs == ("drr_pa", "drr_lateral") and not cfg.residual
    cfg = model_config("tiny", 32, task="denoise", inputs="t1,t2", target="flair", residual=False)
    assert cfg.inputs == ("t1", "t2") and cfg.target == "flair" and not cfg.residual
    assert registry.get("unet").data_keys(cfg) == ("flair", "t1", "t2")
    with pytest.raises(UsageError, match="--task colour"):
        model_config("tiny", 32, task="colour")
    with pytest.raises(UsageError, match="target 'image' is also an input"):
        model_config("tiny", 32, inputs="image")
    with pytest.raises(UsageError, match="size 18: a multiple of 4"):
        model_config("tiny", 18)


def test_residual_output_is_the_first_input_plus_the_network():
    torch.manual_seed(0)
    cfg = model_config("tiny", 16, task="sr")
    net = build_unet(cfg).eval()
    for p in net[1].parameters():  # a non-zero head, so the correction is not zero
        torch.nn.init.normal_(p, std=0.1)
    x = torch.randn(2, 1, 16, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(forward(net, x, cfg), x + net(x))
        cfg_direct = model_config("tiny", 16, task="sr", residual=False)
        torch.testing.assert_close(forward(net, x, cfg_direct), net(x))


def test_inpainting_keeps_the_known_voxels_and_generates_only_the_masked_ones():
    torch.manual_seed(0)
    cfg = model_config("tiny", 16, task="inpaint")
    assert cfg.keep_known and model_config("tiny", 16, task="outpaint").keep_known
    assert not model_config("tiny", 16, task="denoise").keep_known
    net = build_unet(cfg).eval()
    for p in net[1].parameters():
        torch.nn.init.normal_(p, std=0.1)
    degraded = torch.randn(2, 1, 16, 16, 16)
    mask = torch.zeros_like(degraded)
    mask[:, :, 4:10, 5:12, 3:8] = 1
    x = torch.cat([degraded, mask], dim=1)
    with torch.no_grad():
        out = forward(net, x, cfg)
        full = degraded + net(x)
    known = mask == 0
    torch.testing.assert_close(out[known], degraded[known], rtol=0, atol=0)
    torch.testing.assert_close(out[~known], full[~known])
    assert (out[~known] - degraded[~known]).abs().min() > 0  # the masked voxels did change
    plain = model_config("tiny", 16, task="inpaint", keep_known=False)
    with torch.no_grad():
        torch.testing.assert_close(forward(net, x, plain), full)
    with pytest.raises(UsageError, match="keep_known needs a 'mask' input"):
        model_config("tiny", 16, task="inpaint", inputs="degraded", keep_known=True)


def test_whole_volumes_of_any_shape_and_one_window_agree():
    torch.manual_seed(0)
    cfg = model_config("tiny", 16)
    net = build_unet(cfg).eval()
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        whole = predict(net, x, cfg)
        one_window = predict(net, x, cfg, window=16)
        torch.testing.assert_close(one_window, whole, rtol=1e-5, atol=1e-5)
        odd = predict(net, torch.randn(1, 1, 13, 16, 10), cfg)  # padded to multiples of 4, cropped back
        assert odd.shape == (1, 1, 13, 16, 10)
        windows = predict(net, torch.randn(1, 1, 24, 24, 24), cfg, window=8)
        assert windows.shape == (1, 1, 24, 24, 24) and torch.isfinite(windows).all()


def test_windows_batched_give_what_windows_one_at_a_time_give(monkeypatch):
    from medgen.families.unet import network

    torch.manual_seed(0)
    cfg = model_config("tiny", 16)
    net = build_unet(cfg).eval()
    for p in net.parameters():  # a trained network's weights, not the residual head's zeros
        torch.nn.init.normal_(p, std=0.1)
    x = torch.randn(1, 1, 24, 24, 24)
    with torch.no_grad():
        batched = predict(net, x, cfg, window=8)  # 27 windows of 8³ in one batch
        monkeypatch.setattr(network, "WINDOW_BATCH_VOXELS", 1)  # one window per call
        single = predict(net, x, cfg, window=8)
    assert (batched - x).abs().mean() > 0.01  # the network does something
    torch.testing.assert_close(batched, single, rtol=1e-5, atol=1e-5)


def test_random_patches_cut_the_same_window_from_inputs_and_target():
    g = torch.Generator().manual_seed(0)
    coords = torch.stack(torch.meshgrid(*[torch.arange(12.0)] * 3, indexing="ij"))  # [3, 12, 12, 12]
    x = torch.stack([coords[:2], coords[:2] + 100])  # [2, 2, ...]
    y = torch.stack([coords[2:], coords[2:] + 100])  # [2, 1, ...]
    px, py = random_patches([x, y], 4, g)
    assert px.shape == (2, 2, 4, 4, 4) and py.shape == (2, 1, 4, 4, 4)
    for i in range(2):
        x0, y0, z0 = (int(px[i, 0, 0, 0, 0]) - 100 * i, int(px[i, 1, 0, 0, 0]) - 100 * i, int(py[i, 0, 0, 0, 0]) - 100 * i)
        torch.testing.assert_close(px[i], x[i, :, x0:x0 + 4, y0:y0 + 4, z0:z0 + 4])
        torch.testing.assert_close(py[i], y[i, :, x0:x0 + 4, y0:y0 + 4, z0:z0 + 4])


def test_trained_unet_beats_the_noisy_input_on_held_out_pairs(tmp_path):
    """Denoising toy pairs (noise σ 0.2 on [-1, 1]): the model's PSNR on volumes it never saw exceeds the
    input's by 2 dB (measured: 21.5 → 24.3 dB), through `medgen train` and `medgen.load(...).translate`."""
    import medgen

    data = make_dataset(tmp_path / "data", n=16, size=16, degraded=True)
    held = make_dataset(tmp_path / "held", n=3, size=16, seed=5, degraded=True)
    code = main(["train", str(data), "--family", "unet", "--preset", "tiny", "--task", "denoise", "--out",
                 str(tmp_path / "run"), "--iters", "400", "--batch", "2", "--split-fractions", "1,0,0",
                 "--hparam", "lr=3e-3", "--ema-decay", "0", "--log-every", "50", "--sample-every", "0", "--no-progress"])
    assert code == 0
    model = medgen.load(tmp_path / "run")
    before, after = [], []
    for i in range(3):
        clean = np.load(held / "volumes" / f"v{i}.npy").astype(np.float32)
        noisy = np.load(held / "degradeds" / f"v{i}.npy").astype(np.float32)
        out = model.translate({"degraded": noisy})
        assert out.shape == clean.shape and np.abs(out).max() <= 1
        before.append(paired.psnr(noisy, clean))
        after.append(paired.psnr(out, clean))
    assert np.mean(after) > np.mean(before) + 2.0, (before, after)


def test_a_paired_data_set_without_the_task_volumes_is_refused(tmp_path, capsys):
    data = make_dataset(tmp_path / "data", n=2, size=16, degraded=True)
    code = main(["train", str(data), "--family", "unet", "--preset", "tiny", "--task", "inpaint", "--out",
                 str(tmp_path / "run"), "--iters", "1", "--no-progress"])
    assert code == 2
    assert "mask" in capsys.readouterr().err


def test_translate_checks_its_inputs():
    model = registry.get("unet").build_model("tiny", 16, task="inpaint")
    vol = np.zeros((16, 16, 16), np.float32)
    assert model.translate({"degraded": vol, "mask": vol}).shape == (16, 16, 16)
    assert model.translate(np.stack([vol, vol])).shape == (16, 16, 16)
    with pytest.raises(UsageError, match="missing mask"):
        model.translate({"degraded": vol})
    with pytest.raises(UsageError, match="need 2 volume"):
        model.translate(vol)


def test_run_config_round_trip_keeps_the_task(tmp_path):
    from medgen.families.run_config import new_run_config

    data = make_dataset(tmp_path / "data", n=2, size=16, degraded=True)
    cfg = new_run_config(data, tmp_path / "run", family="unet", preset="tiny", model_options={"task": "sr"})
    again = RunConfig.from_dict(cfg.to_dict())
    assert registry.get("unet").model_from_dict(again.model).task == "sr"


def test_the_untrained_residual_model_is_the_identity_and_the_direct_one_is_not():
    x = torch.randn(1, 2, 16, 16, 16)
    cfg = model_config("tiny", 16, task="inpaint")
    with torch.no_grad():
        torch.testing.assert_close(forward(build_unet(cfg), x, cfg), x[:, :1], rtol=0, atol=0)
        direct = model_config("tiny", 16, task="inpaint", residual=False)
        assert forward(build_unet(direct), x, direct).abs().max() > 1e-3


def test_the_train_command_offers_every_task():
    import argparse

    from medgen.cli import build_parser
    from medgen.families import image_tasks

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices["train"]
    task = next(a for a in sub._actions if a.dest == "task")
    assert set(task.choices) == set(image_tasks.TASKS)


def test_grid_masks_cover_every_voxel_once_and_leave_each_cube_s_neighbours_visible():
    from medgen.data.degradations.inpaint import grid_masks

    masks = grid_masks((10, 9, 7), 3)  # edges that are not multiples of the box
    assert len(masks) == 8 and all(m.shape == (10, 9, 7) for m in masks)
    np.testing.assert_array_equal(np.sum(masks, axis=0), 1)  # each voxel in exactly one mask
    # Voxel (4, 4, 4) lies in cube (1, 1, 1): mask 4 + 2 + 1 = 7, which holds that cube (3..5 on each axis)
    # and the partial cube (3, 1, 1) at the end of the first axis (voxel 9 × 3 × 3).
    assert masks[7][3:6, 3:6, 3:6].all() and masks[7][9, 3:6, 3:6].all() and masks[7].sum() == 27 + 9
    # Every voxel next to that cube (26 neighbouring cubes) is visible when mask 7 is hidden.
    around = np.zeros((10, 9, 7), bool)
    around[2:7, 2:7, 2:7] = True
    around[3:6, 3:6, 3:6] = False
    assert not (masks[7] & around).any()
    with pytest.raises(UsageError, match="need >= 1"):
        grid_masks((4, 4, 4), 0)


def test_an_offset_moves_the_grid_s_cube_edges_on_every_axis():
    from medgen.data.degradations.inpaint import grid_masks

    masks = grid_masks((10, 9, 7), 3, offset=1)
    np.testing.assert_array_equal(np.sum(masks, axis=0), 1)
    # Moved by one voxel: cube (1, 1, 1) is voxels 2..4 on each axis and the first cube (0, 0, 0) only voxels
    # 0..1. Mask 7 (odd cubes on every axis) holds voxels 2..4 and 8..9 of the first axis, 2..4 and 8 of the
    # second and 2..4 of the third: 5 × 4 × 3.
    assert masks[7][2:5, 2:5, 2:5].all() and masks[7][8:10, 8, 2:5].all() and masks[7].sum() == 5 * 4 * 3
    assert masks[0][0:2, 0:2, 0:2].all() and masks[0][:2, :2, :2].sum() == 8 and not masks[0][2, 0, 0]
    # A full turn of the checkerboard (two cubes) is the same grid.
    for a, b in zip(grid_masks((10, 9, 7), 3, offset=6), grid_masks((10, 9, 7), 3)):
        np.testing.assert_array_equal(a, b)


def _inpaint_model(size: int, info: dict):
    from types import SimpleNamespace

    model = registry.get("unet").build_model("tiny", size, task="inpaint")
    model.run_config = SimpleNamespace(preprocess=info)
    return model


def test_mask_and_inpaint_reconstruction_fills_each_cube_as_training_does():
    from medgen.data.degradations.inpaint import grid_masks

    # The untrained residual inpainting UNet is the identity on its first input, so its reconstruction of each
    # hidden cube is the fill of that phase: the mean of the visible body voxels (body: above -500 HU).
    # As in training, only the body's bounding box is hidden: here voxels 2..12 on each axis (air around it).
    info = {"modality": "ct", "hu_window": [-1024.0, 600.0]}
    rng = np.random.default_rng(0)
    x = np.full((16, 16, 16), -1.0, np.float32)
    x[2:13, 2:13, 2:13] = rng.uniform(-0.2, 1.0, (11, 11, 11))  # all above -500 HU: body
    rec = _inpaint_model(16, info).reconstruct(x[None], box=4)
    assert rec.shape == (1, 16, 16, 16) and rec.dtype == np.float32
    inside = np.zeros(x.shape, bool)
    inside[2:13, 2:13, 2:13] = True
    np.testing.assert_array_equal(rec[0][~inside], x[~inside])  # the air around the body comes back as it was
    hu = -1024.0 + (x.astype(np.float64) + 1.0) / 2.0 * 1624.0
    for grid in grid_masks(x.shape, 4):
        mask = grid & inside
        visible_body = (hu > -500.0) & ~mask
        fill_hu = hu[visible_body].mean()
        expected = 2.0 * (fill_hu + 1024.0) / 1624.0 - 1.0
        np.testing.assert_allclose(rec[0][mask], expected, atol=2e-6)
    # Every voxel of the body predicted (none copied from the input): there the map |x - x_rec| is nowhere 0.
    assert np.abs(rec[0] - x)[inside].min() > 0


def test_shifted_placements_of_the_checkerboard_are_averaged():
    from medgen.data.degradations.inpaint import grid_masks

    # As above, the untrained model fills each hidden cube with the mean of the visible body voxels, so the
    # reconstruction of one placement is known voxel by voxel; with shifts=2 and 4-voxel cubes the grid is laid
    # at offsets 0 and 2 and the result is the mean of both placements' fills.
    info = {"modality": "ct", "hu_window": [-1024.0, 600.0]}
    rng = np.random.default_rng(1)
    x = np.full((16, 16, 16), -1.0, np.float32)
    x[2:13, 2:13, 2:13] = rng.uniform(-0.2, 1.0, (11, 11, 11))
    inside = np.zeros(x.shape, bool)
    inside[2:13, 2:13, 2:13] = True
    hu = -1024.0 + (x.astype(np.float64) + 1.0) / 2.0 * 1624.0
    placements = []
    for offset in (0, 2):
        rec = x.astype(np.float64).copy()
        for grid in grid_masks(x.shape, 4, offset):
            mask = grid & inside
            rec[mask] = 2.0 * (hu[(hu > -500.0) & ~mask].mean() + 1024.0) / 1624.0 - 1.0
        placements.append(rec)
    model = _inpaint_model(16, info)
    np.testing.assert_allclose(model.reconstruct(x[None], box=4, shifts=2)[0], np.mean(placements, axis=0), atol=2e-6)
    np.testing.assert_allclose(model.reconstruct(x[None], box=4)[0], placements[0], atol=2e-6)
    assert np.abs(placements[0] - placements[1])[inside].max() > 1e-3  # the two placements do differ
    with pytest.raises(UsageError, match="shifts 5: need 1 to 4"):
        model.reconstruct(x[None], box=4, shifts=5)


def test_only_an_inpainting_run_reconstructs_and_the_anomaly_command_passes_box():
    import argparse

    from medgen.commands.anomaly import _options

    info = {"modality": "ct", "hu_window": [-1024.0, 600.0]}
    from medgen.inference.anomaly import check_model

    denoiser = registry.get("unet").build_model("tiny", 16, task="denoise")
    assert not hasattr(denoiser, "reconstruct")  # the report and medgen anomaly tell the models apart by it
    with pytest.raises(UsageError, match="cannot reconstruct"):
        check_model(denoiser)
    model = _inpaint_model(16, info)
    with pytest.raises(UsageError, match="at least 1 voxel"):
        model.reconstruct(np.zeros((1, 16, 16, 16), np.float32), box=0)
    args = argparse.Namespace(noise_level=None, steps=None, seed=None, box=2, shifts=None)
    assert _options(args, model) == {"box": 2}
    with pytest.raises(UsageError, match="--box 0: need at least 1"):
        _options(argparse.Namespace(noise_level=None, steps=None, seed=None, box=0, shifts=None), model)
    with pytest.raises(UsageError, match="--noise-level: this model.s reconstruction takes no such option"):
        _options(argparse.Namespace(noise_level=0.2, steps=None, seed=None, box=None, shifts=None), model)
    assert _options(argparse.Namespace(noise_level=None, steps=None, seed=None, box=2, shifts=2), model) == {
        "box": 2, "shifts": 2}
    with pytest.raises(UsageError, match="--shifts 3: need 1 to 2"):
        _options(argparse.Namespace(noise_level=None, steps=None, seed=None, box=2, shifts=3), model)
    with pytest.raises(UsageError, match="--shifts 5: need 1 to 4"):  # the model's default box, 4
        _options(argparse.Namespace(noise_level=None, steps=None, seed=None, box=None, shifts=5), model)
