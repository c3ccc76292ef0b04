"""pix2pix: the first iteration's losses against the paper's definitions recomputed by hand, D judging
real and generated pairs separately, and the loaded generator translating like the unet's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medgen.cli import main
from medgen.families import registry
from medgen.families.pix2pix.config import model_config
from medgen.families.pix2pix.train import build_discriminator
from medgen.families.unet.network import build_unet
from medgen.training.distributed import InfiniteBatchSampler
from toy_volumes import make_dataset


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("criterion", ["least_squares", "bce"])
def test_first_iteration_losses_match_the_definitions(tmp_path, criterion):
    """Iteration 1's logged loss_D, loss_G_adv and loss_L1 == the pix2pix losses written out by hand, from the
    same initial weights (seeded as the trainer seeds: G then D) and the same batch."""
    import csv

    import torch.nn.functional as F

    from medgen.data.dataset import VolumeDataset

    data = make_dataset(tmp_path / "data", n=4, size=16, degraded=True)
    code = main(["train", str(data), "--family", "pix2pix", "--preset", "tiny", "--out", str(tmp_path / "run"),
                 "--iters", "1", "--batch", "2", "--split-fractions", "1,0,0", "--hparam", f"criterion={criterion}",
                 "--log-every", "1", "--sample-every", "0", "--no-progress"])
    assert code == 0
    with open(tmp_path / "run" / "metrics.csv", newline="") as fh:
        logged = {k: float(v) for k, v in next(csv.DictReader(fh)).items()}

    cfg = model_config("tiny", 16)
    torch.manual_seed(0)
    G, D = build_unet(cfg.generator), build_discriminator(cfg)
    ds = VolumeDataset(data, split="train", seed=0, fractions=(1.0, 0.0, 0.0), label_column=None)
    idx = InfiniteBatchSampler(len(ds), 2, seed=0).global_batch_indices(0)
    x = torch.from_numpy(np.stack([np.load(data / "degradeds" / f"{ds.ids[i]}.npy").astype(np.float32) for i in idx])[:, None])
    y = torch.from_numpy(np.stack([np.load(data / "volumes" / f"{ds.ids[i]}.npy").astype(np.float32) for i in idx])[:, None])
    with torch.no_grad():
        fake = x + G(x)  # residual generator
    real_logits = D(torch.cat([x, y], 1))[-1].double()  # real and generated pairs through D separately
    fake_logits = D(torch.cat([x, fake], 1))[-1].double()

    def adversarial(logits, real):
        if criterion == "least_squares":
            return ((logits - (1.0 if real else 0.0)) ** 2).mean()
        return F.softplus(-logits if real else logits).mean()

    loss_d = 0.5 * (adversarial(real_logits, True) + adversarial(fake_logits, False))
    assert logged["loss_D"] == pytest.approx(float(loss_d.detach()), rel=1e-4)
    assert logged["loss_L1"] == pytest.approx(float((fake - y).abs().mean()), rel=1e-4)
    # G's adversarial term goes through D after D's Adam step (lr 2e-4, betas 0.5, 0.999)
    opt = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    loss_d.backward()
    opt.step()
    with torch.no_grad():
        loss_g_adv = adversarial(D(torch.cat([x, fake], 1))[-1].double(), True)
    assert logged["loss_G_adv"] == pytest.approx(float(loss_g_adv), rel=1e-4)


def test_pix2pix_trains_translates_and_reports_like_unet(tmp_path):
    import medgen

    data = make_dataset(tmp_path / "data", n=4, size=16, degraded=True)
    assert main(["train", str(data), "--family", "pix2pix", "--preset", "tiny", "--task", "inpaint", "--inputs",
                 "degraded", "--out", str(tmp_path / "run"), "--iters", "3", "--batch", "2",
                 "--split-fractions", "1,0,0", "--sample-every", "0", "--no-progress"]) == 0
    model = medgen.load(tmp_path / "run")
    assert model.config.task == "inpaint" and model.config.inputs == ("degraded",)
    out = model.translate(np.load(data / "degradeds" / "v0.npy").astype(np.float32))
    assert out.shape == (16, 16, 16) and np.isfinite(out).all()
    assert registry.get("pix2pix").data_keys(registry.get("pix2pix").model_config("tiny", 16, task="xray2ct")) == (
        "image", "drr_pa", "drr_lateral")
