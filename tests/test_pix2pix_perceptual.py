"""pix2pix's MedGAN terms: the perceptual and style losses on MedicalNet features against hand computations,
the generator loss of one step with the options on, and runs without them unchanged (checkpoints, logged
losses, config.yaml). The MedicalNet weight file is written here, with random weights of the right shapes."""

from __future__ import annotations

import copy
import csv
from contextlib import nullcontext
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
import yaml

from medgen.cli import main
from medgen.core.errors import InputError, UsageError
from medgen.families import registry
from medgen.families.pix2pix import perceptual
from medgen.families.pix2pix.config import Pix2PixHParams, model_config
from medgen.families.pix2pix.train import build, loss_names, optimizers, train_step
from medgen.families.unet.network import forward
from medgen.metrics.features import build_medicalnet_resnet50, prepare_volume
from medgen.training import checkpoint as ckpt_io
from medgen.training.family import Step
from medgen.training.runconfig import RunConfig
from toy_volumes import make_dataset, toy_body

pytestmark = pytest.mark.usefixtures("one_thread")

LAYERS = ("layer1", "layer2")
OLD_HPARAMS = ["lr_g", "lr_d", "betas", "l1_weight", "criterion", "patch"]  # config.yaml before the options


@pytest.fixture(scope="module")
def medicalnet(tmp_path_factory):
    """A MedicalNet ResNet-50 weight file saved as MedicalNet saves its own ({"state_dict": {"module.NAME": ...}}),
    random weights and BatchNorm statistics; and the network it holds (eval mode)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        net = build_medicalnet_resnet50()
        with torch.no_grad():
            for m in net.modules():
                if isinstance(m, torch.nn.BatchNorm3d):
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.uniform_(-0.1, 0.1)
                    m.running_mean.uniform_(-0.1, 0.1)
                    m.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("medicalnet") / "resnet_50_23dataset.pth"
    state = {f"module.{k}": v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save({"state_dict": state, "epoch": 0}, path)
    return path, net.eval()


def stage_outputs(resnet, x: torch.Tensor, layers=LAYERS) -> list[torch.Tensor]:
    """The outputs of ``layers`` in a whole forward pass of the full ResNet (forward hooks)."""
    got = {}
    hooks = [getattr(resnet, n).register_forward_hook(lambda m, i, o, n=n: got.__setitem__(n, o)) for n in layers]
    with torch.no_grad():
        resnet(x)
    for h in hooks:
        h.remove()
    return [got[n].double() for n in layers]


def mapped(volumes: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Each volume z-scored with its target's mean and std (numpy, float64; std floored at MIN_STD)."""
    out = []
    for v, t in zip(volumes.detach().double().numpy(), target.double().numpy()):
        out.append((v - t.mean()) / max(t.std(), perceptual.MIN_STD))
    return torch.from_numpy(np.stack(out)).float()


def hand_losses(resnet, out: torch.Tensor, target: torch.Tensor) -> tuple[float, float]:
    """(L_perc, L_style) of the module docstring, from the full ResNet's stages and einsum Gram matrices."""
    fo, ft = stage_outputs(resnet, mapped(out, target)), stage_outputs(resnet, mapped(target, target))
    perc = np.mean([float((a - b).abs().mean()) for a, b in zip(fo, ft)])

    def gram(f):
        f = f.flatten(2)
        return torch.einsum("bcn,bdn->bcd", f, f) / (f.shape[1] * f.shape[2])

    style = np.mean([float((gram(a) - gram(b)).abs().mean()) for a, b in zip(fo, ft)])
    return perc, style


def volumes(n: int, size: int, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(np.stack([toy_body(rng, size) for _ in range(n)]))[:, None]


def test_feature_network_is_frozen_cut_after_the_chosen_stages_and_built_once(medicalnet):
    path, ref = medicalnet
    net = perceptual.feature_network(path, LAYERS)
    assert perceptual.feature_network(str(path), list(LAYERS)) is net  # cached: built once per process
    assert all(not p.requires_grad for p in net.parameters())
    net.train()
    assert not any(m.training for m in net.modules())  # BatchNorm keeps its stored statistics
    assert list(net.stages) == ["layer1", "layer2"]  # layer3 and layer4 are not kept
    torch.testing.assert_close(net.stages["layer2"][3].conv3.weight, ref.layer2[3].conv3.weight, rtol=0, atol=0)
    torch.testing.assert_close(net.stem[1].running_var, ref.bn1.running_var, rtol=0, atol=0)
    with pytest.raises(InputError, match="nope.pth: weight file not found"):
        perceptual.feature_network(path.parent / "nope.pth", LAYERS)


def test_intensity_mapping_is_the_metrics_zscore_of_the_target(medicalnet):
    y, out = volumes(2, 16, seed=0), volumes(2, 16, seed=1)
    for i in range(2):  # the target: what metrics.features feeds MedicalNet for med3d (whole-volume z-score)
        np.testing.assert_allclose(perceptual.medicalnet_input(y, y)[i].numpy(),
                                   prepare_volume(y[i, 0].numpy(), None, "zscore").numpy(), atol=1e-5)
    # the output: with its target's mean and std, not its own
    np.testing.assert_allclose(perceptual.medicalnet_input(out, y).numpy(), mapped(out, y).numpy(), atol=1e-5)
    flat = torch.full((1, 1, 4, 4, 4), -0.97)
    torch.testing.assert_close(perceptual.medicalnet_input(flat + 0.01, flat),  # a flat target: std floored
                               torch.full_like(flat, 0.01 / perceptual.MIN_STD), rtol=0, atol=1e-5)


def test_perceptual_and_style_losses_match_the_resnet_stages_and_vanish_for_identical_volumes(medicalnet):
    path, ref = medicalnet
    net = perceptual.feature_network(path, LAYERS)
    y = volumes(2, 32, seed=2)
    out = (y + 0.1 * torch.randn(y.shape, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)
    out.requires_grad_(True)
    fo, ft = perceptual.features(net, out, y)
    assert [tuple(f.shape) for f in fo] == [(2, 256, 8, 8, 8), (2, 512, 4, 4, 4)]
    perc, style = perceptual.perceptual_loss(fo, ft), perceptual.style_loss(fo, ft)
    want_perc, want_style = hand_losses(ref, out, y)
    assert float(perc.detach()) == pytest.approx(want_perc, rel=1e-4) and want_perc > 0
    assert float(style.detach()) == pytest.approx(want_style, rel=1e-4) and want_style > 0
    (perc + style).backward()  # gradients reach the generated volume, none the frozen network
    assert out.grad is not None and out.grad.abs().sum() > 0
    assert all(p.grad is None for p in net.parameters())
    with torch.no_grad():
        same = perceptual.features(net, y, y)
    assert float(perceptual.perceptual_loss(*same)) == 0.0 and float(perceptual.style_loss(*same)) == 0.0


def test_gram_and_style_loss_match_hand_computations():
    f = torch.tensor([[[[1.0, 2.0]], [[3.0, 4.0]]]])  # [1, C=2, 1, 2]: F = [[1, 2], [3, 4]]
    # F Fᵀ = [[5, 11], [11, 25]], over C·N = 4
    torch.testing.assert_close(perceptual.gram(f), torch.tensor([[[5.0, 11.0], [11.0, 25.0]]]) / 4)
    g = torch.Generator().manual_seed(0)
    a = [torch.randn(2, 3, 2, 3, 2, generator=g), torch.randn(2, 5, 1, 2, 2, generator=g)]
    b = [torch.randn(2, 3, 2, 3, 2, generator=g), torch.randn(2, 5, 1, 2, 2, generator=g)]

    def gram(x):
        x = x.double().flatten(2)
        return torch.einsum("bcn,bdn->bcd", x, x) / (x.shape[1] * x.shape[2])

    want = np.mean([float((gram(p) - gram(q)).abs().mean()) for p, q in zip(a, b)])
    assert float(perceptual.style_loss(a, b)) == pytest.approx(want, rel=1e-6)
    assert float(perceptual.perceptual_loss(a, b)) == pytest.approx(
        np.mean([float((p - q).abs().mean()) for p, q in zip(a, b)]), rel=1e-6)


@dataclass
class RecordingStep(Step):
    """A step that also keeps each loss it is asked to back-propagate."""

    recorded: dict = field(default_factory=dict)

    def update(self, name: str, loss: torch.Tensor) -> None:
        self.recorded[name] = float(loss.detach())
        super().update(name, loss)


def one_step(hp: Pix2PixHParams, x: torch.Tensor, y: torch.Tensor):
    cfg = model_config("tiny", x.shape[-1])
    torch.manual_seed(0)
    nets = build(cfg, hp, torch.device("cpu"))
    G0 = copy.deepcopy(nets["G"])
    step = RecordingStep(nets, dict(nets), optimizers(nets, hp, torch.device("cpu")), {"image": y, "degraded": x},
                         torch.Generator().manual_seed(0), 0, 1, x.shape[0], cfg, hp, nullcontext, torch.device("cpu"))
    losses = train_step(step)
    assert list(losses) == loss_names(cfg, hp)
    with torch.no_grad():
        fake = forward(G0, x, cfg.generator)  # G before its update: the volumes the step's losses were taken on
    return losses, step.recorded, fake


def test_one_step_adds_the_weighted_feature_terms_to_the_generator_loss(medicalnet):
    path, ref = medicalnet
    y = volumes(2, 16, seed=3)
    x = (y + 0.2 * torch.randn(y.shape, generator=torch.Generator().manual_seed(1))).clamp(-1, 1)
    hp = Pix2PixHParams.from_dict({"perceptual_weight": 2, "style_weight": 3000, "feature_weights": str(path)})
    losses, recorded, fake = one_step(hp, x, y)
    assert list(losses) == ["D", "G_adv", "L1", "perceptual", "style"]
    perc, style = hand_losses(ref, fake, y)
    assert float(losses["perceptual"].detach()) == pytest.approx(perc, rel=1e-4)
    assert float(losses["style"].detach()) == pytest.approx(style, rel=1e-4)
    base = float(losses["G_adv"].detach()) + 100 * float(losses["L1"].detach())
    assert recorded["G"] == pytest.approx(base + 2 * perc + 3000 * style, rel=1e-5)
    assert min(2 * perc, 3000 * style) > 1e-3 * recorded["G"]  # each term large enough that leaving it out shows
    # options off: the same step has the three losses and the generator loss of before
    off, recorded_off, _ = one_step(Pix2PixHParams.from_dict({}), x, y)
    assert list(off) == ["D", "G_adv", "L1"]
    assert recorded_off["G"] == pytest.approx(float(off["G_adv"].detach()) + 100 * float(off["L1"].detach()), rel=1e-6)
    assert float(off["L1"].detach()) == pytest.approx(float(losses["L1"].detach()), rel=1e-6)


def train_args(data, out, *extra):
    return ["train", str(data), "--family", "pix2pix", "--preset", "tiny", "--out", str(out), "--iters", "1",
            "--batch", "2", "--split-fractions", "1,0,0", "--log-every", "1", "--sample-every", "0", "--no-progress",
            *extra]


def header(run) -> list[str]:
    with open(run / "metrics.csv", newline="") as fh:
        return next(csv.reader(fh))


def test_runs_without_the_options_are_unchanged_and_with_them_checkpoint_only_g_and_d(medicalnet, tmp_path):
    import medgen

    path, _ = medicalnet
    data = make_dataset(tmp_path / "data", n=4, size=16, degraded=True)
    assert main(train_args(data, tmp_path / "off")) == 0
    assert set(ckpt_io.load_weights(tmp_path / "off")) == {"G", "D", "G_ema"}
    assert header(tmp_path / "off") == ["iteration", "loss_D", "loss_G_adv", "loss_L1", "it_per_s", "memory_mb"]
    assert list(yaml.safe_load((tmp_path / "off" / "config.yaml").read_text())["hparams"]) == OLD_HPARAMS

    link = tmp_path / "medicalnet.pth"  # a link, removed after training: loading the run must not need it
    link.symlink_to(path)
    assert main(train_args(data, tmp_path / "on", "--hparam", "perceptual_weight=1", "--hparam", "style_weight=10",
                           "--hparam", f"feature_weights={link}", "--hparam", "feature_layers=layer2,layer1")) == 0
    weights = ckpt_io.load_weights(tmp_path / "on")
    assert set(weights) == {"G", "D", "G_ema"}  # the feature network is not saved
    assert header(tmp_path / "on")[1:6] == ["loss_D", "loss_G_adv", "loss_L1", "loss_perceptual", "loss_style"]
    saved = yaml.safe_load((tmp_path / "on" / "config.yaml").read_text())["hparams"]
    assert saved == {**{k: saved[k] for k in OLD_HPARAMS}, "perceptual_weight": 1.0, "style_weight": 10.0,
                     "feature_weights": str(link), "feature_layers": "layer1,layer2"}
    link.unlink()
    model = medgen.load(tmp_path / "on")
    out = model.translate(np.load(data / "degradeds" / "v0.npy").astype(np.float32))
    assert out.shape == (16, 16, 16) and np.isfinite(out).all()


def test_resume_with_the_feature_terms_is_exact(medicalnet, tmp_path):
    path, _ = medicalnet
    data = make_dataset(tmp_path / "data", n=4, size=16, degraded=True)
    hparams = Pix2PixHParams.from_dict({"perceptual_weight": 1, "style_weight": 10, "feature_weights": str(path)})

    def cfg(iters):
        return RunConfig(data=str(data), model=model_config("tiny", 16).to_dict(), family="pix2pix",
                         hparams=hparams.to_dict(), preset="tiny", iters=iters, batch=2, device="cpu", log_every=1,
                         sample_every=0, ckpt_every=1000, ema_decay=0.9, split_fractions=(1.0, 0.0, 0.0))

    full = registry.train(cfg(4), tmp_path / "full", progress=False)
    registry.train(cfg(2), tmp_path / "split", progress=False)
    resumed = registry.train(cfg(4), tmp_path / "split", resume=True, progress=False)
    a, b = full.models.weights(), resumed.models.weights()
    assert set(a) == set(b) == {"G", "D", "G_ema"}
    for module in a:
        for key in a[module]:
            assert torch.equal(a[module][key], b[module][key]), f"{module}.{key} differs after resume"
    with open(tmp_path / "split" / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["iteration"]) for r in rows] == [1, 2, 3, 4] and all(float(r["loss_perceptual"]) > 0 for r in rows)


def test_feature_options_are_checked_in_one_line(medicalnet, tmp_path, capsys):
    path, _ = medicalnet
    for bad, message in [({"perceptual_weight": 1}, "perceptual_weight > 0: the feature terms need MedicalNet"),
                         ({"style_weight": -1}, "style_weight must be a number ≥ 0"),
                         ({"feature_weights": str(path)}, "only used with perceptual_weight or style_weight > 0"),
                         ({"style_weight": 1, "feature_weights": str(path), "feature_layers": "layer5"}, "layer5")]:
        with pytest.raises(UsageError, match=message):
            Pix2PixHParams.from_dict(bad)
    with pytest.raises(InputError, match="missing.pth: weight file not found"):
        Pix2PixHParams.from_dict({"perceptual_weight": 1, "feature_weights": str(tmp_path / "missing.pth")})

    data = make_dataset(tmp_path / "data", n=4, size=16, degraded=True)
    capsys.readouterr()
    assert main(train_args(data, tmp_path / "run", "--hparam", "perceptual_weight=1")) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("medgen train: error: pix2pix: perceptual_weight > 0") \
        and "feature_weights=FILE" in err
    assert not (tmp_path / "run").exists()  # refused before the run folder is written
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "other.pth")  # a file, but not MedicalNet's
    assert main(train_args(data, tmp_path / "run2", "--hparam", "perceptual_weight=1",
                           "--hparam", f"feature_weights={tmp_path / 'other.pth'}")) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "other.pth: not a MedicalNet ResNet-50 state dict" in err


WORKER = """
import os, sys
from safetensors.torch import save_file
from medgen.families import registry
from medgen.families.pix2pix.config import model_config
from medgen.training.runconfig import RunConfig

data, run, out, weights = sys.argv[1:5]
hparams = {"perceptual_weight": 1.0, "style_weight": 10.0, "feature_weights": weights}
cfg = RunConfig(data=data, model=model_config("tiny", 16).to_dict(), family="pix2pix", hparams=hparams, preset="tiny",
                iters=2, batch=4, device="cpu", log_every=1, sample_every=0, ckpt_every=1000,
                split_fractions=(1.0, 0.0, 0.0))
result = registry.train(cfg, run, progress=False)
flat = {f"{m}.{k}": v.detach().contiguous() for m, net in result.models.nets.items() for k, v in net.named_parameters()}
save_file(flat, os.path.join(out, f"rank{os.environ['RANK']}.safetensors"))
"""


@pytest.mark.slow
def test_two_gloo_processes_with_the_feature_terms_end_with_identical_weights(medicalnet, tmp_path):
    """The feature network stays outside DDP (each process builds its own); G's gradients, which flow through
    it, are synchronised like the rest."""
    import os
    import subprocess
    import sys

    from safetensors.torch import load_file

    path, _ = medicalnet
    data = make_dataset(tmp_path / "data", n=8, size=16, degraded=True)
    (tmp_path / "out").mkdir()
    (tmp_path / "worker.py").write_text(WORKER)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(tmp_path / "worker.py"), str(data), str(tmp_path / "run"), str(tmp_path / "out"), str(path)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (load_file(str(tmp_path / "out" / f"rank{r}.safetensors")) for r in (0, 1))
    assert set(r0) == set(r1) and {k.partition(".")[0] for k in r0} == {"G", "D"}
    for k in r0:
        assert torch.equal(r0[k], r1[k]), f"ranks differ in {k}"
