"""HA-GAN training loop: exact resume, NaN stop, losses against their definitions,
step isolation, ablations, signals, config round trip, command options."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from medgen.training.runconfig import RunConfig
from medgen.core.errors import UsageError
from medgen.families.hagan import Discriminator, Encoder, Generator, get_preset
from medgen.training import checkpoint as ckpt_io
from medgen.families.hagan import losses
from medgen.families.hagan.config import HAGANConfig
from medgen.training.distributed import InfiniteBatchSampler
from medgen.families import registry
from medgen.families.registry import train
from medgen.training.loop import _iteration_seed
from toy_volumes import make_dataset

S = 32




pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data"))


def tiny_cfg(data: Path, iters: int = 2, num_classes: int = 0, **kw) -> RunConfig:
    model = get_preset("tiny", S, num_classes=num_classes, **kw.pop("model", {})).to_dict()
    base = dict(
        data=str(data), model=model, preset="tiny", iters=iters, batch=2, device="cpu",
        log_every=1, sample_every=0, ckpt_every=1000, split_fractions=(1.0, 0.0, 0.0),
        label_column="label" if num_classes else None,
    )
    base.update(kw)
    return RunConfig.from_dict(base)  # HA-GAN hyper-parameters given at the top level, as old config files hold them


def read_metrics(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


# --------------------------------------------------------------------------- resume


def test_resume_is_exact(data, tmp_path):
    """2N iterations in one go == N iterations, stop, resume for N more (bitwise)."""
    full = train(tiny_cfg(data, iters=3, ema_decay=0.9), tmp_path / "full", progress=False)
    train(tiny_cfg(data, iters=1, ema_decay=0.9), tmp_path / "split", progress=False)
    # the resumed part loads data in a background worker: the worker count must not change results
    resumed = train(tiny_cfg(data, iters=3, ema_decay=0.9, workers=1), tmp_path / "split", resume=True, progress=False)
    assert full.iteration == resumed.iteration == 3
    a, b = full.models.weights(), resumed.models.weights()
    assert set(a) == set(b) == {"G", "D", "E", "G_ema"}
    for module in a:
        for key in a[module]:
            assert torch.equal(a[module][key], b[module][key]), f"{module}.{key} differs after resume"
    # the saved optimiser states agree too, and the checkpoints hold what the models hold
    sa, sb = ckpt_io.load_state(tmp_path / "full"), ckpt_io.load_state(tmp_path / "split")
    assert sa["iteration"] == sb["iteration"] == 3
    for name in ("G", "D", "EH", "EG"):
        for pid, st in sa["optimizers"][name]["state"].items():
            for k, v in st.items():
                assert torch.equal(v, sb["optimizers"][name]["state"][pid][k])
    saved = ckpt_io.load_weights(tmp_path / "split")
    assert torch.equal(saved["G_ema"]["high.convs.0.weight"], b["G_ema"]["high.convs.0.weight"])
    # metrics of the resumed run continue the first part without duplicates
    assert [int(r["iteration"]) for r in read_metrics(tmp_path / "split")] == [1, 2, 3]
    # training moved the weights away from their initialisation
    torch.manual_seed(0)
    fresh = Generator(get_preset("tiny", S))
    assert not torch.equal(fresh.state_dict()["common.fc.weight"], a["G"]["common.fc.weight"])


def test_time_limit_stops_with_a_checkpoint_and_resumes(data, tmp_path, capsys):
    """--max-minutes ends the run early (not as an interruption) with a checkpoint and a sample;
    --resume then finishes it, and the result equals an unlimited run."""
    limited = train(tiny_cfg(data, iters=3, max_minutes=1e-9, sample_every=100), tmp_path / "run", progress=False)
    assert limited.iteration == 1 and not limited.interrupted
    assert ckpt_io.load_state(tmp_path / "run")["iteration"] == 1
    assert (tmp_path / "run" / "samples" / "iter-000001.png").is_file()
    assert "time limit" in capsys.readouterr().err
    resumed = train(tiny_cfg(data, iters=3, sample_every=100), tmp_path / "run", resume=True, progress=False)
    full = train(tiny_cfg(data, iters=3), tmp_path / "full", progress=False)
    assert resumed.iteration == 3
    for key, value in full.models.weights()["G"].items():
        assert torch.equal(value, resumed.models.weights()["G"][key]), key


def test_resume_rejects_changed_settings(data, tmp_path):
    train(tiny_cfg(data, iters=1), tmp_path / "run", progress=False)
    with pytest.raises(UsageError, match="lr_d"):
        train(tiny_cfg(data, iters=2, lr_d=1e-3), tmp_path / "run", resume=True, progress=False)
    with pytest.raises(UsageError, match="already holds a training run"):
        train(tiny_cfg(data, iters=2), tmp_path / "run", progress=False)
    with pytest.raises(UsageError, match="ema_decay 1.5"):
        train(tiny_cfg(data, ema_decay=1.5), tmp_path / "other", progress=False)
    assert not (tmp_path / "other").exists()  # nothing written for a bad configuration


def test_a_fresh_run_that_fails_before_recording_anything_leaves_no_run_behind(data, tmp_path):
    """A setting the family rejects only in its first step (high_batch larger than the batch): the run folder
    the loop wrote before it is removed, so the corrected command runs without --resume."""
    run = tmp_path / "run"
    with pytest.raises(UsageError, match="high_batch 4 is larger than the batch"):
        train(tiny_cfg(data, iters=1, hparams={"high_batch": 4}), run, progress=False)
    assert not run.exists()
    assert train(tiny_cfg(data, iters=1), run, progress=False).iteration == 1

    # a folder that existed beforehand stays, with what the user had put in it
    mine = tmp_path / "mine"
    (mine / "tensorboard").mkdir(parents=True)
    (mine / "notes.txt").write_text("mine")
    (mine / "tensorboard" / "other.txt").write_text("mine too")
    with pytest.raises(UsageError, match="high_batch"):
        train(tiny_cfg(data, iters=1, hparams={"high_batch": 4}), mine, progress=False)
    assert sorted(p.relative_to(mine).as_posix() for p in mine.rglob("*")) == [
        "notes.txt", "tensorboard", "tensorboard/other.txt"]


def test_a_failed_run_that_recorded_something_or_was_resumed_is_kept(data, tmp_path):
    """Once a metrics row exists the folder is evidence and stays; a resumed run's folder is never removed."""
    family = registry.get("hagan")
    calls = []

    def fails_at_the_second_step(step):
        calls.append(step.iteration)
        if len(calls) == 2:
            raise UsageError("second step refused")
        return family.train_step(step)

    failing = dataclasses.replace(family, train_step=fails_at_the_second_step)
    from medgen.training.loop import train as loop_train

    with pytest.raises(UsageError, match="second step refused"):
        loop_train(failing, tiny_cfg(data, iters=3), tmp_path / "logged", progress=False)
    assert [r["iteration"] for r in read_metrics(tmp_path / "logged")] == ["1"]
    assert (tmp_path / "logged" / "config.yaml").is_file()

    # a resumed run, even one whose folder holds no metrics row and no checkpoint (a requeued job's retry)
    resumed = tmp_path / "resumed"
    train(tiny_cfg(data, iters=1), resumed, progress=False)
    shutil.rmtree(resumed / "checkpoints")
    (resumed / "metrics.csv").write_text("iteration\n")
    calls.clear()
    calls.append(-1)  # the next call is the second
    with pytest.raises(UsageError, match="second step refused"):
        loop_train(failing, tiny_cfg(data, iters=2), resumed, resume=True, progress=False)
    assert (resumed / "config.yaml").is_file() and (resumed / "metrics.csv").is_file()


# --------------------------------------------------------------------------- NaN


# (NaN stop: tests/test_family_template.py, for every registered family.)


# --------------------------------------------------------------------------- losses


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.log1p(np.exp(-np.abs(x))) + np.maximum(x, 0)


def _ce(logits: np.ndarray, labels: np.ndarray) -> float:
    out = []
    for row, y in zip(logits, labels):
        m = row.max()
        out.append(m + math.log(np.exp(row - m).sum()) - row[y])
    return float(np.mean(out))


def test_losses_match_their_definitions():
    g = torch.Generator().manual_seed(3)
    lr, lf = torch.randn(5, generator=g) * 3, torch.randn(5, generator=g) * 3
    cr, cf = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    yr, yf = torch.tensor([0, 2, 1, 1, 0]), torch.tensor([2, 2, 0, 1, 0])
    nr, nf = lr.double().numpy(), lf.double().numpy()
    # -log σ(x) = softplus(-x); -log(1 - σ(x)) = softplus(x)
    d, d_cls = losses.discriminator_loss(lr, lf, [cr], yr)
    ref_cls = _ce(cr.double().numpy(), yr.numpy())
    assert d.item() == pytest.approx(_softplus(-nr).mean() + _softplus(nf).mean() + ref_cls, rel=1e-5)
    assert d_cls.item() == pytest.approx(ref_cls, rel=1e-5)
    gl, g_cls = losses.generator_loss(lf, [cf], yf, class_weight=0.1)
    ref_g = _ce(cf.double().numpy(), yf.numpy())
    assert gl.item() == pytest.approx(_softplus(-nf).mean() + 0.1 * ref_g, rel=1e-5)
    # two heads (D^H, D^L): "mean" = one CE of the averaged logits (the paper's code),
    # "per-head" = the mean of each head's CE; they differ
    ch, cl = cr, torch.randn(5, 3, generator=g) * 2
    mean_ref = _ce(((ch + cl) / 2).double().numpy(), yr.numpy())
    per_head_ref = (_ce(ch.double().numpy(), yr.numpy()) + _ce(cl.double().numpy(), yr.numpy())) / 2
    assert losses.discriminator_loss(lr, lf, [ch, cl], yr, "mean")[1].item() == pytest.approx(mean_ref, rel=1e-5)
    assert losses.discriminator_loss(lr, lf, [ch, cl], yr, "per-head")[1].item() == pytest.approx(per_head_ref, rel=1e-5)
    assert losses.generator_loss(lf, [ch, cl], yr, 1.0, "per-head")[1].item() == pytest.approx(per_head_ref, rel=1e-5)
    assert abs(mean_ref - per_head_ref) > 0.05
    d0, none = losses.discriminator_loss(lr, lf)
    assert none is None and d0.item() == pytest.approx(_softplus(-nr).mean() + _softplus(nf).mean(), rel=1e-5)
    a, b = torch.rand(2, 1, 4, 4, 2, generator=g), torch.rand(2, 1, 4, 4, 2, generator=g)
    c, e = torch.rand(2, 1, 2, 2, 2, generator=g), torch.rand(2, 1, 2, 2, 2, generator=g)
    l1 = lambda u, v: float(np.abs(u.numpy() - v.numpy()).mean())  # noqa: E731
    assert losses.high_res_encoder_loss(a, b).item() == pytest.approx(l1(a, b), rel=1e-6)
    assert losses.ground_encoder_loss(a, b, c, e).item() == pytest.approx((l1(a, b) + l1(c, e)) / 2, rel=1e-6)
    assert losses.ground_encoder_loss(a, b, None, None).item() == pytest.approx(l1(a, b), rel=1e-6)


def _first_real_batch(data: Path, cfg: RunConfig, mcfg: HAGANConfig):
    """Iteration 1's real batch of a conditional run (batch 2), rebuilt by hand from the documented draws:
    (classes, real slabs, their positions in [0, 1], the low-resolution volumes)."""
    from medgen.data.dataset import VolumeDataset

    ds = VolumeDataset(data, split="train", seed=0, fractions=(1.0, 0.0, 0.0), label_column="label")
    idx = InfiniteBatchSampler(len(ds), 2, seed=0).global_batch_indices(0)
    x = torch.from_numpy(np.stack([np.load(data / "volumes" / f"{ds.ids[i]}.npy").astype(np.float32) for i in idx])[:, None])
    y = torch.tensor([int(ds[i]["label"]) for i in idx])
    rng = torch.Generator().manual_seed(_iteration_seed(cfg.seed, 0, 0))
    torch.randn(2, mcfg.latent_dim, generator=rng)  # z
    torch.randint(2, (2,), generator=rng)  # the fake classes
    starts = torch.randint(0, mcfg.max_slab_start_lowres + 1, (2,), generator=rng)
    f, L = mcfg.lowres_factor, mcfg.slab_len
    real_slab = torch.stack([x[i, :, :, :, f * a : f * a + L] for i, a in enumerate(starts.tolist())])
    low = torch.nn.functional.interpolate(x, scale_factor=1 / f, mode="trilinear", align_corners=False)
    return y, real_slab, starts.float() / mcfg.max_slab_start_lowres, low


@pytest.mark.parametrize("class_loss", ["per-head", "mean"])
def test_first_iteration_class_loss_matches_independent_recomputation(data, tmp_path, class_loss):
    """loss_D_class of iteration 1 == the cross-entropy of D's class heads on the real batch, recomputed by hand:
    per head and averaged (medgen's default), or on the heads' averaged logits (the paper's code)."""
    cfg = tiny_cfg(data, iters=1, num_classes=2, hparams={"class_loss": class_loss})
    train(cfg, tmp_path / "run", progress=False)
    logged = float(read_metrics(tmp_path / "run")[0]["loss_D_class"])

    mcfg = get_preset("tiny", S, num_classes=2)
    torch.manual_seed(cfg.seed)  # the trainer's initialisation order: G, D, E
    Generator(mcfg)
    D = Discriminator(mcfg)
    y, real_slab, pos, low = _first_real_batch(data, cfg, mcfg)
    with torch.no_grad():
        _, (c_high, c_low) = D(real_slab, pos, low)
    ce = lambda logits: _ce(logits.double().numpy(), y.numpy())  # noqa: E731
    per_head, mean = (ce(c_high) + ce(c_low)) / 2, ce((c_high + c_low) / 2)
    assert abs(per_head - mean) > 1e-3 * per_head  # the two modes are told apart at this tolerance
    assert logged == pytest.approx(per_head if class_loss == "per-head" else mean, rel=2e-5)


def test_projection_discriminator_learns_the_class_embedding_without_class_losses(data, tmp_path):
    """class_conditioning="projection": no class losses are logged, D is given the real and the requested
    classes (its embedding rows of both classes are trained), and G's generated volumes depend on the class."""
    cfg = tiny_cfg(data, iters=3, num_classes=2, model={"class_conditioning": "projection"})
    train(cfg, tmp_path / "run", progress=False)
    row = read_metrics(tmp_path / "run")[0]
    assert "loss_D_class" not in row and "loss_G_class" not in row and float(row["loss_D"]) > 0
    mcfg = get_preset("tiny", S, num_classes=2, class_conditioning="projection")
    torch.manual_seed(cfg.seed)  # the trainer's initialisation order: G, D, E
    Generator(mcfg)
    init = Discriminator(mcfg)
    from medgen.families import registry

    model = registry.load(tmp_path / "run", device=torch.device("cpu"))
    assert model.config.class_conditioning == "projection"
    state = ckpt_io.load_weights(tmp_path / "run")["D"]
    for head in ("high", "low"):
        w0 = init.state_dict()[f"{head}.class_embed.parametrizations.weight.original"]
        w = state[f"{head}.class_embed.parametrizations.weight.original"]
        assert ((w - w0).abs().sum(1) > 0).all(), head  # both classes' rows were updated
    z = torch.from_numpy(model.sample_latents(1, seed=0))
    a, b = (model.generator.generate(z, torch.tensor([c])) for c in (0, 1))
    assert (a - b).abs().mean() > 0


def test_classifier_conditioning_losses_match_independent_recomputation(data, tmp_path):
    """class_conditioning="classifier": loss_C_class of iteration 1 is C's cross-entropy on the real batch
    (the slab with its position and the low-resolution volume, one cross-entropy per head), recomputed by
    hand from a C initialised as the trainer does (after G, D, E); the run resumes exactly, C and its
    optimiser included; the generator's class changes its volumes."""
    from medgen.families.hagan.classifier import Classifier

    hp = {"class_loss": "per-head", "class_weight": 1.0}
    cfg = tiny_cfg(data, iters=1, num_classes=2, model={"class_conditioning": "classifier"}, hparams=hp)
    train(cfg, tmp_path / "run", progress=False)
    logged = float(read_metrics(tmp_path / "run")[0]["loss_C_class"])

    mcfg = get_preset("tiny", S, num_classes=2, class_conditioning="classifier")
    torch.manual_seed(cfg.seed)  # the trainer's initialisation order: G, D, E, C
    Generator(mcfg), Discriminator(mcfg), Encoder(mcfg)
    C = Classifier(mcfg)
    y, real_slab, pos, low = _first_real_batch(data, cfg, mcfg)
    with torch.no_grad():
        c_high, c_low = C(real_slab, pos, low)
    ce = lambda logits: _ce(logits.double().numpy(), y.numpy())  # noqa: E731
    assert logged == pytest.approx((ce(c_high) + ce(c_low)) / 2, rel=2e-5)
    assert abs(ce(c_high) - ce(c_low)) > 1e-3  # both heads count

    full = train(tiny_cfg(data, iters=3, num_classes=2, model={"class_conditioning": "classifier"}, hparams=hp),
                 tmp_path / "full", progress=False)
    resumed = train(tiny_cfg(data, iters=3, num_classes=2, model={"class_conditioning": "classifier"}, hparams=hp),
                    tmp_path / "run", resume=True, progress=False)
    a, b = full.models.weights(), resumed.models.weights()
    assert set(a) == set(b) == {"G", "D", "E", "C", "G_ema"}
    for module in a:
        for key in a[module]:
            assert torch.equal(a[module][key], b[module][key]), f"{module}.{key} differs after resume"
    assert "C" in ckpt_io.load_state(tmp_path / "run")["optimizers"]

    from medgen.families import registry

    # c_augment: C learns from flipped and shifted real volumes; D's step, before C's, is the same
    aug = train(tiny_cfg(data, iters=1, num_classes=2, model={"class_conditioning": "classifier"},
                         hparams={**hp, "c_augment": True}), tmp_path / "aug", progress=False)
    assert aug.iteration == 1
    plain_row, aug_row = read_metrics(tmp_path / "run")[0], read_metrics(tmp_path / "aug")[0]
    assert aug_row["loss_D"] == plain_row["loss_D"]
    assert float(aug_row["loss_C_class"]) != pytest.approx(logged, rel=1e-6)
    with pytest.raises(UsageError, match="c_augment .* needs a class-conditional model with --class-conditioning classifier"):
        train(tiny_cfg(data, iters=1, num_classes=2, hparams={"c_augment": True}), tmp_path / "ac", progress=False)

    # c_steps: C's further updates come after D's (D unchanged) and change C and, through it, G
    two = train(tiny_cfg(data, iters=1, num_classes=2, model={"class_conditioning": "classifier"},
                         hparams={**hp, "c_steps": 2}), tmp_path / "two", progress=False)
    one = train(tiny_cfg(data, iters=1, num_classes=2, model={"class_conditioning": "classifier"}, hparams=hp),
                tmp_path / "one", progress=False)
    w1, w2 = one.models.weights(), two.models.weights()
    assert all(torch.equal(w1["D"][k], w2["D"][k]) for k in w1["D"])
    assert not all(torch.equal(w1["C"][k], w2["C"][k]) for k in w1["C"])
    assert not all(torch.equal(w1["G"][k], w2["G"][k]) for k in w1["G"])
    two_row = read_metrics(tmp_path / "two")[0]
    assert two_row["loss_D"] == plain_row["loss_D"]
    # the logged C loss is the mean of the two updates' losses, the first being iteration 1's of c_steps=1
    assert float(two_row["loss_C_class"]) != pytest.approx(logged, rel=1e-6)
    with pytest.raises(UsageError, match="c_steps 2 sets the updates of the classifier C"):
        train(tiny_cfg(data, iters=1, num_classes=2, hparams={"c_steps": 2}), tmp_path / "ac2", progress=False)

    model = registry.load(tmp_path / "run", device=torch.device("cpu"))
    assert model.config.class_conditioning == "classifier"
    z = torch.from_numpy(model.sample_latents(1, seed=0))
    v0, v1 = (model.generator.generate(z, torch.tensor([c])) for c in (0, 1))
    assert (v0 - v1).abs().mean() > 0


def test_first_iteration_loss_D_matches_independent_recomputation(data, tmp_path):
    """loss_D logged for iteration 1 == the paper's D loss recomputed by hand from the same draws.

    Independently of the trainer: the batch from the sampler, z and slab starts
    from the documented per-iteration seed, the real slab cut at f·a by hand, the
    real low-resolution volume as trilinear ×1/4 (= mean of voxels 4i+1, 4i+2 per
    axis), real and fake through D separately, BCE written out with softplus.
    """
    cfg = tiny_cfg(data, iters=1)
    train(cfg, tmp_path / "run", progress=False)
    logged = float(read_metrics(tmp_path / "run")[0]["loss_D"])

    mcfg = get_preset("tiny", S)
    torch.manual_seed(cfg.seed)  # same initialisation order as the trainer: G, D, E
    G, D = Generator(mcfg), Discriminator(mcfg)
    Encoder(mcfg)
    from medgen.data.dataset import VolumeDataset

    ds = VolumeDataset(data, split="train", seed=0, fractions=(1.0, 0.0, 0.0), label_column=None)
    idx = InfiniteBatchSampler(len(ds), 2, seed=0).global_batch_indices(0)
    x = np.stack([np.load(data / "volumes" / f"{ds.ids[i]}.npy").astype(np.float32) for i in idx])[:, None]
    rng = torch.Generator().manual_seed(_iteration_seed(cfg.seed, 0, 0))
    z = torch.randn(2, mcfg.latent_dim, generator=rng)
    starts = torch.randint(0, mcfg.max_slab_start_lowres + 1, (2,), generator=rng)
    f, L = mcfg.lowres_factor, mcfg.slab_len
    real_slab = np.stack([x[i, :, :, :, f * a : f * a + L] for i, a in enumerate(starts.tolist())])
    low = x
    for axis in (2, 3, 4):  # trilinear ×1/4, align_corners=False: mean of the two middle voxels of each 4-block
        a1 = np.take(low, np.arange(1, low.shape[axis], 4), axis=axis)
        a2 = np.take(low, np.arange(2, low.shape[axis], 4), axis=axis)
        low = (a1 + a2) / 2
    pos = starts.float() / mcfg.max_slab_start_lowres
    import copy

    D_fake = copy.deepcopy(D)  # same spectral-norm state for both calls
    with torch.no_grad():
        fake_low, fake_slab = G.forward_train(z, starts)
        lr, _ = D(torch.from_numpy(real_slab), pos, torch.from_numpy(low))
        lf, _ = D_fake(fake_slab, pos, fake_low)
    ref = _softplus(-lr.double().numpy()).mean() + _softplus(lf.double().numpy()).mean()
    assert logged == pytest.approx(ref, rel=2e-5)


# --------------------------------------------------------------------------- step isolation


class _StepRecorder:
    """Patches Adam to record, at every optimiser step, which registered parameters changed."""

    def __init__(self, monkeypatch):
        self.optimizers: list[torch.optim.Optimizer] = []
        self.events: list[dict] = []
        self._last: dict | None = None
        rec = self
        orig_init, orig_step = torch.optim.Adam.__init__, torch.optim.Adam.step

        def init(opt, params, *a, **k):
            orig_init(opt, params, *a, **k)
            rec.optimizers.append(opt)

        def step(opt, *a, **k):
            before = rec.snapshot()
            out = orig_step(opt, *a, **k)
            after = rec.snapshot()
            rec.events.append(dict(opt=rec.optimizers.index(opt), before=before, after=after))
            return out

        monkeypatch.setattr(torch.optim.Adam, "__init__", init)
        monkeypatch.setattr(torch.optim.Adam, "step", step)

    def snapshot(self) -> dict:
        return {
            (i, j): (p.detach().clone(), None if p.grad is None else p.grad.detach().clone())
            for i, o in enumerate(self.optimizers)
            for j, p in enumerate(o.param_groups[0]["params"])
        }


@pytest.mark.parametrize("conditioning", ["ac", "classifier"])
def test_each_update_changes_only_its_own_network(data, tmp_path, monkeypatch, conditioning):
    """Every optimiser step changes its own network only, and frozen networks collect no gradients;
    with classifier conditioning C has its own step, after D's and before G's."""
    rec = _StepRecorder(monkeypatch)
    cfg = tiny_cfg(data, iters=2, num_classes=2, model={"class_conditioning": conditioning})
    result = train(cfg, tmp_path / "run", progress=False)
    classifier = conditioning == "classifier"
    names = ["G", "D", "EH", "EG"] + (["C"] if classifier else [])  # creation order in the trainer
    assert len(rec.optimizers) == len(names)
    order = ["D", "C", "G", "EH", "EG"] if classifier else ["D", "G", "EH", "EG"]
    assert [names[e["opt"]] for e in rec.events] == order * 2
    # the optimiser groups are exactly the paper's blocks (and C)
    m = result.models
    groups = [m.G, m.D, m.E.high, m.E.ground] + ([m.C] if classifier else [])
    for opt, module in zip(rec.optimizers, groups):
        assert {id(p) for p in opt.param_groups[0]["params"]} == {id(p) for p in module.parameters()}
    prev_after = None
    for e in rec.events:
        own = e["opt"]
        for key, (w0, g0) in e["before"].items():
            w1, _ = e["after"][key]
            if key[0] != own:
                assert torch.equal(w0, w1), f"{names[own]} step changed {names[key[0]]} weights"
        assert any(not torch.equal(w0, e["after"][k][0]) for k, (w0, _) in e["before"].items() if k[0] == own)
        if prev_after is not None:
            for key, (w_prev, g_prev) in prev_after.items():
                w_now, g_now = e["before"][key]
                assert torch.equal(w_prev, w_now), "weights changed between two optimiser steps"
                # frozen networks accumulate no gradients in the other networks' steps
                # (a network's gradients are freed right after its own update)
                if key[0] != own:
                    assert g_now is None or (g_prev is not None and torch.equal(g_prev, g_now)), (
                        f"{names[own]} step computed gradients for {names[key[0]]}"
                    )
        prev_after = e["after"]
    losses_row = read_metrics(tmp_path / "run")[0]
    assert float(losses_row["loss_C_class" if classifier else "loss_D_class"]) > 0
    assert float(losses_row["loss_G_class"]) > 0
    if classifier:  # D is unconditional: no class heads
        assert "loss_D_class" not in losses_row
        assert m.D.high.class_head is None and m.D.low.num_classes == 0


def test_ablation_no_encoder(data, tmp_path, monkeypatch):
    rec = _StepRecorder(monkeypatch)
    result = train(tiny_cfg(data, iters=1, use_encoder=False), tmp_path / "run", progress=False)
    assert "E" not in result.models.nets
    assert len(rec.optimizers) == 2 and [e["opt"] for e in rec.events] == [1, 0]
    assert "E" not in ckpt_io.load_weights(tmp_path / "run")
    assert set(read_metrics(tmp_path / "run")[0]) >= {"loss_D", "loss_G"}
    assert "loss_EH" not in read_metrics(tmp_path / "run")[0]


def test_encoder_every_k_iterations_leaves_the_gan_unchanged_and_logs_means_of_the_computed_losses(
        data, tmp_path, monkeypatch):
    """``encoder_every=3``: E^H and E^G step on iterations 0, 3, 6 only; G and D end bitwise as with
    ``encoder_every=1`` (the encoder never feeds back); each logged encoder loss is the mean over the
    iterations of its window that computed it, and empty in a window without one."""
    returned: list[dict[str, float]] = []
    fam = registry.get("hagan")

    def recording(s):
        out = fam.train_step(s)
        returned.append({k: float(v.detach()) for k, v in out.items()})
        return out

    monkeypatch.setattr(registry, "get", lambda name: dataclasses.replace(fam, train_step=recording))
    rec = _StepRecorder(monkeypatch)
    lazy = train(tiny_cfg(data, iters=8, log_every=2, hparams={"encoder_every": 3}), tmp_path / "lazy", progress=False)
    eh, eg = len(rec.optimizers) - 2, len(rec.optimizers) - 1  # G, D, EH, EG in creation order
    encoder_steps = [i for i, e in enumerate(rec.events) if e["opt"] in (eh, eg)]
    assert [rec.events[i]["opt"] for i in encoder_steps] == [eh, eg] * 3
    assert [sorted(r) for r in returned] == [sorted(["D", "G", "EH", "EG"]) if i % 3 == 0 else ["D", "G"]
                                            for i in range(8)]
    rows = read_metrics(tmp_path / "lazy")
    assert [r["iteration"] for r in rows] == ["2", "4", "6", "8"]
    for row, window in zip(rows, ([0, 1], [2, 3], [4, 5], [6, 7])):
        for name in ("D", "G"):
            assert float(row[f"loss_{name}"]) == pytest.approx(np.mean([returned[i][name] for i in window]), rel=1e-5)
        for name in ("EH", "EG"):
            computed = [returned[i][name] for i in window if name in returned[i]]
            if computed:
                assert float(row[f"loss_{name}"]) == pytest.approx(np.mean(computed), rel=1e-5)
            else:
                assert row[f"loss_{name}"] == ""
    every = train(tiny_cfg(data, iters=8, log_every=2), tmp_path / "every", progress=False)
    for net in ("G", "D"):
        for (k, a), b in zip(lazy.models.nets[net].state_dict().items(), every.models.nets[net].state_dict().values()):
            assert torch.equal(a, b), f"{net}.{k}"
    assert any(not torch.equal(a, b) for a, b in zip(lazy.models.nets["E"].state_dict().values(),
                                                      every.models.nets["E"].state_dict().values()))
    with pytest.raises(UsageError, match="encoder_every"):
        train(tiny_cfg(data, hparams={"encoder_every": 0}), tmp_path / "bad", progress=False)


def test_ablation_no_lowres_and_deterministic_slabs(data, tmp_path, monkeypatch):
    seen: list[tuple[bool, list[int], bool]] = []
    orig = Generator.forward

    def spy(self, z, starts, labels=None):
        out = orig(self, z, starts, labels)
        seen.append((torch.is_grad_enabled() and self.common.fc.weight.requires_grad, torch.as_tensor(starts).tolist(), out[0] is None))
        return out

    monkeypatch.setattr(Generator, "forward", spy)
    cfg = tiny_cfg(data, iters=5, slab_selection="deterministic", model=dict(use_lowres=False))
    result = train(cfg, tmp_path / "run", progress=False)
    assert result.models.G.low is None and result.models.D.low is None
    assert not any("low." in k for k in result.models.G.state_dict())
    mcfg = HAGANConfig.from_dict(cfg.model)
    adversarial = [s for trainable, s, _ in seen if trainable]  # one G pass per iteration for D and G steps
    assert len(adversarial) == 5
    expected = [[(i % mcfg.num_slabs) * mcfg.slab_len_lowres] * 2 for i in range(5)]
    assert adversarial == expected  # slabs 0, 1, 2, 3, 0 of the 4 non-overlapping ones
    assert all(no_low for _, _, no_low in seen)  # G^L never ran
    row = read_metrics(tmp_path / "run")[-1]
    assert all(math.isfinite(float(row[k])) for k in ("loss_D", "loss_G", "loss_EH", "loss_EG"))


def test_random_slab_starts_cover_the_grid(data, tmp_path, monkeypatch):
    seen: list[int] = []
    orig = Generator.forward

    def spy(self, z, starts, labels=None):
        if self.common.fc.weight.requires_grad:
            seen.extend(torch.as_tensor(starts).tolist())
        return orig(self, z, starts, labels)

    monkeypatch.setattr(Generator, "forward", spy)
    train(tiny_cfg(data, iters=4, use_encoder=False), tmp_path / "run", progress=False)
    mcfg = get_preset("tiny", S)
    assert len(seen) == 8 and set(seen) <= set(range(mcfg.max_slab_start_lowres + 1))
    assert len(set(seen)) >= 3  # not stuck at one position (7 possible starts)


# --------------------------------------------------------------------------- config


def test_config_yaml_round_trip_rebuilds_the_model(data, tmp_path):
    cfg = tiny_cfg(data, iters=1, num_classes=2, sample_every=1, num_samples=2)
    train(cfg, tmp_path / "run", progress=False)
    loaded = RunConfig.load(tmp_path / "run")
    assert loaded.to_dict() == cfg.to_dict()
    assert loaded.train_ids == [f"v{i}" for i in range(6)]
    assert loaded.preprocess["hu_min"] == -1024.0
    assert json.loads((tmp_path / "run" / "preprocess.json").read_text())["size"] == S
    weights = ckpt_io.load_weights(tmp_path / "run")
    mcfg = HAGANConfig.from_dict(loaded.model)
    for name, module in (("G", Generator(mcfg)), ("G_ema", Generator(mcfg)), ("D", Discriminator(mcfg)), ("E", Encoder(mcfg))):
        ref = module.state_dict()
        assert {k: tuple(v.shape) for k, v in ref.items()} == {k: tuple(v.shape) for k, v in weights[name].items()}
        module.load_state_dict(weights[name])  # strict: the saved model rebuilds exactly
    assert (tmp_path / "run" / "samples" / "iter-000001.png").stat().st_size > 0
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))


def test_command_options_build_the_config(data, tmp_path):
    import argparse

    from medgen.commands import train as train_command
    from medgen.commands.train import build_config

    parser = argparse.ArgumentParser()
    train_command.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train", str(data), "--out", str(tmp_path / "r"), "--preset", "tiny",
                              "--label-column", "label", "--lr-e", "2e-4", "--no-lowres", "--iters", "7"])
    cfg = build_config(args)
    assert cfg.model["size"] == S and cfg.model["num_classes"] == 2 and cfg.model["use_lowres"] is False
    assert (cfg.hparams["lr_eh"], cfg.hparams["lr_eg"], cfg.hparams["lr_g"], cfg.iters, cfg.preset) == (2e-4, 2e-4, 1e-4, 7, "tiny")
    assert cfg.family == "hagan"
    args = parser.parse_args(["train", str(data), "--out", str(tmp_path / "r"), "--preset", "tiny", "--slab-fraction",
                              "0.25", "--low-d-width", "0.5", "--minibatch-std-channels", "2", "--hparam", "high_batch=2",
                              "--lowres-factor", "2"])
    cfg = build_config(args)
    assert (cfg.model["slab_fraction"], cfg.model["low_d_width"], cfg.model["minibatch_std_channels"]) == (0.25, 0.5, 2)
    assert cfg.model["lowres_factor"] == 2 and get_preset("tiny", S).lowres_factor == 4
    with pytest.raises(UsageError, match="lowres_factor must be a power of two"):
        build_config(parser.parse_args(["train", str(data), "--out", str(tmp_path / "r"), "--lowres-factor", "3"]))
    assert cfg.hparams["high_batch"] == 2
    with pytest.raises(UsageError, match="holds 32"):
        build_config(parser.parse_args(["train", str(data), "--out", str(tmp_path / "r"), "--size", "64"]))
    # --resume keeps saved settings, allows a longer run, refuses a different model
    tiny_cfg(data).save(tmp_path / "r2")
    resumed = build_config(parser.parse_args(["train", str(data), "--out", str(tmp_path / "r2"), "--resume", "--iters", "9"]))
    assert resumed.iters == 9 and resumed.preset == "tiny" and resumed.model == tiny_cfg(data).model
    with pytest.raises(UsageError, match="model.width"):
        build_config(parser.parse_args(["train", str(data), "--out", str(tmp_path / "r2"), "--resume", "--width", "0.25"]))
    # --resume without the data folder: the saved one; without --resume (or without a saved run) it is required
    resumed = build_config(parser.parse_args(["train", "--out", str(tmp_path / "r2"), "--resume", "--iters", "9"]))
    assert resumed.data == str(data) and resumed.iters == 9 and resumed.model == tiny_cfg(data).model
    with pytest.raises(UsageError, match=r"give the preprocessed data folder \(DATA\); only --resume"):
        build_config(parser.parse_args(["train", "--out", str(tmp_path / "r2"), "--iters", "9"]))
    with pytest.raises(UsageError, match=r"r3: no saved run \(config.yaml\) to resume; give the data folder"):
        build_config(parser.parse_args(["train", "--out", str(tmp_path / "r3"), "--resume"]))
    # --resume on another folder: a moved copy continues; one preprocessed otherwise is refused in one line
    # (it used to reach the loop and fail there in torch.cat, after rewriting the run's config.yaml)
    made = build_config(parser.parse_args(["train", str(data), "--out", str(tmp_path / "r4"), "--preset", "tiny"]))
    made.save(tmp_path / "r4")
    moved = tmp_path / "moved"
    shutil.copytree(data, moved)
    resumed = build_config(parser.parse_args(["train", str(moved), "--out", str(tmp_path / "r4"), "--resume"]))
    assert resumed.data == str(moved) and resumed.model == made.model and resumed.preprocess == made.preprocess
    info = json.loads((moved / "preprocess.json").read_text())
    size = info["size"]
    info.update(size=2 * size, modality="mri" if info["modality"] == "ct" else "ct")
    (moved / "preprocess.json").write_text(json.dumps(info))
    with pytest.raises(UsageError, match=rf"moved/preprocess.json: not preprocessed as the data the run was trained "
                                         rf"on \(modality {info['modality']}, the run's {made.preprocess['modality']}; "
                                         rf"size {2 * size}, the run's {size}\); resume on data preprocessed the same way"):
        build_config(parser.parse_args(["train", str(moved), "--out", str(tmp_path / "r4"), "--resume"]))


# --------------------------------------------------------------------------- signals


# (SIGTERM: tests/test_family_template.py, for every registered family.)


@pytest.mark.cuda
def test_cuda_bf16_iterations(data, tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    cfg = tiny_cfg(data, iters=3, device="cuda", num_classes=2)
    result = train(cfg, tmp_path / "run", progress=False)
    assert result.iteration == 3
    assert next(result.models.G.parameters()).is_cuda
    rows = read_metrics(tmp_path / "run")
    assert len(rows) == 3 and all(math.isfinite(float(r["loss_D"])) for r in rows)
    assert float(rows[-1]["memory_mb"]) > 0
    w = ckpt_io.load_weights(tmp_path / "run")
    assert all(torch.isfinite(t).all() for t in w["G"].values())
    # resuming on the GPU continues from the saved iteration
    more = train(tiny_cfg(data, iters=4, device="cuda", num_classes=2), tmp_path / "run", resume=True, progress=False)
    assert more.iteration == 4 and ckpt_io.load_state(tmp_path / "run")["iteration"] == 4


def _bf16_conv3d_weight_grad_is_finite() -> bool:
    """The kernel torch 2.13's oneDNN gets wrong on the CPU: bf16 Conv3d, 32 channels, 2³ voxels; its weight
    gradient is NaN in about one call in seven when freed memory holds NaN (it reads uninitialised memory)."""
    conv = torch.nn.Conv3d(32, 32, 3, padding=1)
    x = torch.randn(2, 32, 2, 2, 2)
    for _ in range(48):
        junk = torch.full((1 << 20,), float("nan"))
        del junk
        conv.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = conv(x)
        y.float().square().mean().backward()
        if not torch.isfinite(conv.weight.grad).all():
            return False
    return True


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_cpu_bf16_runs_use_native_convolutions(data, tmp_path, precision):
    """CPU bf16 (the GPU check's rehearsal) trains with torch's native convolutions, whose bf16 Conv3d
    gradients are finite; fp32 keeps oneDNN; the process's setting is restored afterwards."""
    import dataclasses

    from medgen.families import registry
    from medgen.training import loop

    family = registry.get("hagan")
    seen = []

    def step(s):
        seen.append((torch.backends.mkldnn.enabled, _bf16_conv3d_weight_grad_is_finite() if precision == "bf16" else True))
        return family.train_step(s)

    before = torch.backends.mkldnn.enabled
    loop.train(dataclasses.replace(family, train_step=step), tiny_cfg(data, iters=1, precision=precision),
               tmp_path / "run", progress=False)
    assert seen == [(precision == "fp32" and before, True)]
    assert torch.backends.mkldnn.enabled == before
