"""HA-GAN training: one loop, read top to bottom (no callback framework).

    build data, models, optimisers → (resume) → for each iteration:
        draw z, class labels and the slab position
        D step    BCE(D(real), 1) + BCE(D(fake), 0)           updates D only
        G step    BCE(D(fake), 1)  (non-saturating)            updates G only
        E^H step  L1(G^H(E^H(x_slab)), x_slab)                  updates E^H only
        E^G step  ½[L1(slab) + L1(low-res)], z = E^G(E^H(x))   updates E^G only
        EMA of G; log; sample mosaic; checkpoint

Work that is shared (DESIGN.md: "no wasted work"):

* The generator runs once per iteration for the adversarial steps. Its output
  (with its autograd graph kept) feeds the D step *detached* and, after D has
  been updated, the G step through the *updated* D. This is exactly the
  gradient of re-running G on the same z, because G's weights do not change
  between the two steps; it differs from the authors' code only in that their
  G step draws a fresh z (an equally valid stochastic estimate, at the cost of
  a second generator forward pass).
* Real and fake go through D in one concatenated batch (D has no batch
  statistics, so this equals two separate calls).
* Networks that are not being updated are frozen (``requires_grad=False``):
  backward then computes no gradients for their weights (D in the G step, G
  in both encoder steps, E^H in the E^G step, which runs it under no_grad).
* The real low-resolution volume (trilinear downsampling by f) and the real
  slab are computed once per iteration and used by D, E^H and E^G.

Reproducibility: every random draw of iteration ``i`` on rank ``r`` (z, fake
classes, slab starts) comes from a ``torch.Generator`` re-seeded from
``(seed, r, i)``, and the data order is a function of the batch number (see
:class:`~medgen.training.distributed.InfiniteBatchSampler`). A resumed run
therefore continues exactly as if it had never stopped. The global torch,
CUDA, numpy and Python RNG states are saved in checkpoints as well (the loop
does not use them).

Precision: on CUDA the forward passes run under bf16 autocast by default
(convolutions and linear layers in bf16; GroupNorm, the losses and Adam in
float32). The spectral-norm power iteration of D then uses bf16 matrix-vector
products too; for a 512×13824 weight σ then differs from the float32 value
by about 1e-4 (relative), far below what matters for the Lipschitz bound. ``--precision fp32`` turns autocast off; CPU runs
use float32.

Multi-process (``torchrun``): G, D, E^H and E^G are each wrapped in
``DistributedDataParallel`` and each wrapper is called exactly once per
iteration, by the step that updates that network, followed by one backward;
frozen networks are called unwrapped. Every wrapped parameter receives a
gradient in its step, so ``find_unused_parameters`` is not needed and the
ranks' gradient all-reduce happens once per network per iteration. The global
batch is split across ranks; only rank 0 writes logs, samples and
checkpoints. Ranks agree on stopping (signal or divergence) with a tiny
all-reduce. Resuming reads the checkpoint on every rank, so multi-node runs
need the run folder on a shared file system; a resume is exact when it uses
the same number of processes (per-rank random draws depend on the rank).

Signals: the first SIGINT/SIGTERM finishes the current iteration, saves a
checkpoint and ends the run with exit code 130; a second one (more than
:data:`SECOND_SIGNAL_GRACE_S` seconds later, so that the copy ``torchrun``
forwards to its workers does not count) aborts at once.
"""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import sys
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medgen.config import CONFIG_NAME, RunConfig
from medgen.errors import InputError, RunFailed, UsageError
from medgen.fileio import atomic_write_text
from medgen.models.hagan import Discriminator, Encoder, Generator, HAGANConfig
from medgen.training import checkpoint as ckpt_io
from medgen.training import distributed as dist_utils
from medgen.training.ema import EMA
from medgen.training.losses import (
    discriminator_loss,
    generator_loss,
    ground_encoder_loss,
    high_res_encoder_loss,
)

SECOND_SIGNAL_GRACE_S = 2.0
METRICS_NAME = "metrics.csv"
SAMPLES_DIR = "samples"
TENSORBOARD_DIR = "tensorboard"
PREPROCESS_NAME = "preprocess.json"


@dataclass
class Models:
    """The trained networks (plain modules, not DDP wrappers)."""

    G: Generator
    D: Discriminator
    E: Encoder | None  # None in the "no encoder" ablation
    ema: EMA | None  # EMA of G (rank 0 only); None if ema_decay == 0

    def weights(self) -> dict[str, dict[str, torch.Tensor]]:
        out = {"G": self.G.state_dict(), "D": self.D.state_dict()}
        if self.E is not None:
            out["E"] = self.E.state_dict()
        if self.ema is not None:
            out["G_ema"] = self.ema.model.state_dict()
        return out

    def sampler(self) -> Generator:
        """The generator to sample from: the EMA copy if there is one."""
        return self.ema.model if self.ema is not None else self.G


@dataclass
class TrainResult:
    iteration: int  # completed iterations
    interrupted: bool  # stopped by SIGINT/SIGTERM (checkpoint saved)
    models: Models
    checkpoint: Path | None  # last checkpoint written (rank 0), or None


def build_models(model_cfg: HAGANConfig, use_encoder: bool, ema_decay: float, device: torch.device) -> Models:
    """Fresh G, D, E (if used) and the EMA copy of G, on ``device``."""
    G = Generator(model_cfg).to(device)
    D = Discriminator(model_cfg).to(device)
    E = Encoder(model_cfg).to(device) if use_encoder else None
    ema = EMA(G, ema_decay) if ema_decay > 0 else None
    return Models(G, D, E, ema)


# ----------------------------------------------------------------------------- helpers


def _iteration_seed(seed: int, rank: int, iteration: int) -> int:
    """A 63-bit seed for (run seed, rank, iteration): counter-based, so resume needs no RNG state."""
    return int(np.random.SeedSequence([seed, rank, iteration]).generate_state(1, np.uint64)[0]) >> 1


def _rng_states() -> dict[str, Any]:
    """Global RNG states as weights_only-loadable values (not used by the loop; saved for completeness)."""
    np_state = np.random.get_state()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": [list(x) if isinstance(x, tuple) else x for x in random.getstate()],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    n = states["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in states and torch.cuda.is_available():
        cuda_states = states["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


def _peak_memory_mb(device: torch.device) -> float:
    """CUDA: peak allocated tensor memory; CPU: the process's peak resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    from medgen.bench import peak_rss_mb  # VmHWM: ru_maxrss would include a parent's peak

    return peak_rss_mb()


def _all_finite(modules: list[nn.Module]) -> bool:
    return all(bool(torch.isfinite(p).all()) for m in modules for p in m.parameters())


class _StopFlag:
    """SIGINT/SIGTERM → request a clean stop; a later second signal aborts (KeyboardInterrupt)."""

    def __init__(self) -> None:
        self.requested_at: float | None = None
        self.signal_name = ""
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "_StopFlag":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: object) -> None:
        now = time.monotonic()
        if self.requested_at is None:
            self.requested_at = now
            self.signal_name = signal.Signals(signum).name
            print(
                f"\nmedgen train: {self.signal_name} received: finishing this iteration and saving a checkpoint "
                "(signal again to abort)",
                file=sys.stderr,
            )
        elif now - self.requested_at > SECOND_SIGNAL_GRACE_S:
            raise KeyboardInterrupt

    @property
    def requested(self) -> bool:
        return self.requested_at is not None


def _load_dataset(cfg: RunConfig):
    """The training split: computed from (split_seed, split_fractions), or the ids stored with the run."""
    from medgen.data.dataset import VolumeDataset

    label_column = cfg.label_column if cfg.model.get("num_classes", 0) > 0 else None
    return VolumeDataset(
        cfg.data,
        split="train",
        seed=cfg.split_seed,
        fractions=tuple(cfg.split_fractions),
        label_column=label_column,
        ids=list(cfg.train_ids) if cfg.train_ids else None,
    )


# ----------------------------------------------------------------------------- run folder


def prepare_run_dir(cfg: RunConfig, run_dir: Path, resume: bool) -> RunConfig:
    """Check the run folder against ``cfg`` (no writes). Returns the config to use.

    A fresh run needs a folder without a run in it. A resumed run must have the
    same settings as the saved ones except :data:`medgen.config.RESUMABLE_KEYS`;
    ``resume`` on a folder without a run starts one (so a requeued job can
    always be launched with the same command).
    """
    saved_path = run_dir / CONFIG_NAME
    if not resume:
        if saved_path.exists():
            raise UsageError(f"{run_dir}: already holds a training run; pass --resume to continue it or choose another --out")
        return cfg
    if not saved_path.exists():  # nothing to resume yet (e.g. a requeued job's first start)
        return cfg
    saved = RunConfig.load(run_dir)
    differing = saved.differing_keys(cfg)
    if differing:
        raise UsageError(
            f"{saved_path}: settings differ from the run being resumed: {', '.join(differing)} "
            "(only iterations, device, precision, workers and intervals may change)"
        )
    return cfg


def _write_run_dir(cfg: RunConfig, run_dir: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg.save(run_dir)
    if cfg.preprocess:
        atomic_write_text(run_dir / PREPROCESS_NAME, json.dumps(cfg.preprocess, indent=2) + "\n")


class _MetricsLog:
    """``RUN/metrics.csv``: one row per log step (appended; rows beyond a resumed iteration dropped)."""

    def __init__(self, path: Path, columns: list[str], start_iteration: int) -> None:
        self.path, self.columns = path, ["iteration"] + columns
        if path.exists():
            with open(path, newline="", encoding="utf-8") as fh:
                rows = [r for r in csv.DictReader(fh) if int(r["iteration"]) <= start_iteration]
            if start_iteration == 0:
                rows = []
            self._rewrite(rows)
        else:
            self._rewrite([])

    def _rewrite(self, rows: list[dict[str, str]]) -> None:
        import io

        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=self.columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
        atomic_write_text(self.path, buf.getvalue())

    def append(self, row: dict[str, float]) -> None:
        with open(self.path, "a", newline="", encoding="utf-8") as fh:
            csv.DictWriter(fh, fieldnames=self.columns, extrasaction="ignore").writerow(row)


# ----------------------------------------------------------------------------- the loop


def train(cfg: RunConfig, run_dir: str | os.PathLike, resume: bool = False, progress: bool = True) -> TrainResult:
    """Train HA-GAN as configured by ``cfg`` into ``run_dir`` (see the module docstring).

    ``resume``: continue from the latest complete checkpoint in ``run_dir``
    (or from scratch with the saved configuration if none was written yet).
    Raises :class:`RunFailed` if a loss diverges (NaN/inf); returns with
    ``interrupted=True`` after SIGINT/SIGTERM (a checkpoint is saved first).
    """
    info = dist_utils.setup(cfg.device)
    try:
        return _train(cfg, Path(run_dir), resume, progress, info)
    finally:
        dist_utils.cleanup()


def _train(cfg: RunConfig, run_dir: Path, resume: bool, progress: bool, info: dist_utils.DistInfo) -> TrainResult:
    from torch.nn.parallel import DistributedDataParallel as DDP

    cfg.validate()
    device, main = info.device, info.is_main
    model_cfg = cfg.hagan_config()
    conditional = model_cfg.num_classes > 0
    use_lowres = model_cfg.use_lowres
    use_encoder = cfg.use_encoder
    local_batch = dist_utils.local_batch_size(cfg.batch, info.world_size)
    precision = cfg.precision if cfg.precision != "auto" else ("bf16" if device.type == "cuda" else "fp32")
    amp = torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    # ---- data
    if resume and not cfg.train_ids and (run_dir / CONFIG_NAME).exists():
        cfg.train_ids = RunConfig.load(run_dir).train_ids  # keep the run's split even if files were added
    dataset = _load_dataset(cfg)
    ids = cfg.train_ids = list(dataset.ids)
    if not cfg.preprocess:
        cfg.preprocess = dict(getattr(dataset, "info", {}))
    if len(dataset) == 0:
        raise InputError(f"{cfg.data}: the training split is empty")
    if conditional:
        bad = [i for i, y in zip(ids, dataset.labels) if not 0 <= y < model_cfg.num_classes]
        if bad:
            raise InputError(
                f"{cfg.data}/manifest.csv: column {cfg.label_column!r} of {bad[0]!r} (and {len(bad) - 1} more) "
                f"is not a class 0..{model_cfg.num_classes - 1}"
            )

    # ---- run folder (checks on every rank before rank 0 writes anything)
    prepare_run_dir(cfg, run_dir, resume)
    latest = ckpt_io.latest_checkpoint(run_dir) if resume else None
    if info.distributed:
        torch.distributed.barrier()
    if main:
        _write_run_dir(cfg, run_dir)

    # ---- models and optimisers (identical initialisation on every rank)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    random.seed(cfg.seed)
    models = build_models(model_cfg, use_encoder, cfg.ema_decay if main else 0.0, device)
    G, D, E = models.G, models.D, models.E
    adam = dict(betas=tuple(float(b) for b in cfg.betas), eps=float(cfg.adam_eps))
    # Fused Adam (CUDA and CPU) updates in place without parameter-sized temporaries.
    adam["fused"] = device.type in ("cuda", "cpu")
    opt: dict[str, torch.optim.Optimizer] = {
        "G": torch.optim.Adam(G.parameters(), lr=cfg.lr_g, **adam),
        "D": torch.optim.Adam(D.parameters(), lr=cfg.lr_d, **adam),
    }
    if E is not None:
        opt["EH"] = torch.optim.Adam(E.high.parameters(), lr=cfg.lr_eh, **adam)
        opt["EG"] = torch.optim.Adam(E.ground.parameters(), lr=cfg.lr_eg, **adam)

    start = 0
    if latest is not None:
        weights = ckpt_io.load_weights(latest, device=device)
        state = ckpt_io.load_state(latest)
        G.load_state_dict(weights["G"])
        D.load_state_dict(weights["D"])
        if E is not None:
            E.load_state_dict(weights["E"])
        if models.ema is not None:
            models.ema.model.load_state_dict(weights.get("G_ema", weights["G"]))
        for name, o in opt.items():
            o.load_state_dict(state["optimizers"][name])
        _set_rng_states(state["rng"])
        start = int(state["iteration"])
        if main:
            print(f"medgen train: resuming from {latest} (iteration {start})", file=sys.stderr)
    last_good: Path | None = latest

    # ---- DDP wrappers: each is called once per iteration, by the step that updates it
    if info.distributed:
        # device_ids=None: inputs are already on the device and the CPU slab starts must stay there.
        ddp = dict(device_ids=None, gradient_as_bucket_view=True)
        G_step, D_step = DDP(G, **ddp), DDP(D, **ddp)
        EH_step = DDP(E.high, **ddp) if E is not None else None
        EG_step = DDP(E.ground, **ddp) if E is not None else None
    else:
        G_step, D_step = G, D
        EH_step = E.high if E is not None else None
        EG_step = E.ground if E is not None else None

    # Background loading hides the float16 → float32 read behind GPU work; on a CPU it would compete for cores.
    workers = cfg.workers if cfg.workers >= 0 else (2 if device.type == "cuda" else 0)
    sampler = dist_utils.InfiniteBatchSampler(
        len(dataset), cfg.batch, cfg.split_seed, info.rank, info.world_size, start_batch=start
    )
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
    )
    batches = iter(loader)

    # ---- logging (rank 0)
    loss_names = ["loss_D", "loss_G"] + (["loss_EH", "loss_EG"] if E is not None else [])
    if conditional:
        loss_names += ["loss_D_class", "loss_G_class"]
    writer = metrics = None
    if main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run_dir / TENSORBOARD_DIR), purge_step=start if start > 0 else None)
        metrics = _MetricsLog(run_dir / METRICS_NAME, loss_names + ["it_per_s", "memory_mb"], start)
    sample_gen = torch.Generator().manual_seed(cfg.seed + 7919)
    sample_z = torch.randn(cfg.num_samples, model_cfg.latent_dim, generator=sample_gen)
    sample_labels = torch.arange(cfg.num_samples) % model_cfg.num_classes if conditional else None

    # NaN/inf bookkeeping on the device (no host sync per iteration on GPUs)
    n_losses = len(loss_names)
    loss_sum = torch.zeros(n_losses, device=device)
    first_bad_iter = torch.full((n_losses,), -1, dtype=torch.long, device=device)
    first_bad_value = torch.zeros(n_losses, device=device)
    check_every = 1 if device.type == "cpu" else max(1, cfg.log_every)
    logged_since, t_last = 0, time.perf_counter()
    f = model_cfg.lowres_factor
    rng = torch.Generator()

    def step(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        """Backward, update, and free the gradients at once (they would otherwise stay allocated
        until this network's next update, while the other networks build their graphs)."""
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def check_finite() -> None:
        bad = dist_utils.any_rank(bool((first_bad_iter >= 0).any()), info)
        if not bad:
            return
        good = f"last good checkpoint: {last_good}" if last_good else "no checkpoint was saved before"
        idx = [i for i in range(n_losses) if first_bad_iter[i] >= 0]
        if not idx:
            raise RunFailed(f"a loss became NaN/inf on another process; {good}")
        i = min(idx, key=lambda k: int(first_bad_iter[k]))
        value = float(first_bad_value[i])
        raise RunFailed(f"{loss_names[i]} became {value} at iteration {int(first_bad_iter[i]) + 1}; {good}")

    def save(iteration: int) -> None:
        """Checkpoint (rank 0 writes; every rank checks the weights, which DDP keeps identical)."""
        nonlocal last_good
        nets = [G, D] + ([E] if E is not None else [])
        if not _all_finite(nets):
            good = f"last good checkpoint: {last_good}" if last_good else "no checkpoint was saved before"
            raise RunFailed(f"weights became NaN/inf by iteration {iteration}; {good}")
        if not main:
            return
        state = {
            "iteration": iteration,
            "optimizers": {k: o.state_dict() for k, o in opt.items()},
            "rng": _rng_states(),
            "sampler": dict(zip(("epoch", "position"), sampler.position(iteration))),
            "world_size": info.world_size,
        }
        last_good = ckpt_io.save_checkpoint(run_dir, iteration, models.weights(), state, cfg.keep_checkpoints)

    bar = None
    if main and progress:
        from tqdm import tqdm

        # Under a time limit the iteration count is not the end point: show counts and rate, no ETA.
        total, desc = (None, f"train (≤ {cfg.max_minutes:g} min)") if cfg.max_minutes else (cfg.iters, "train")
        bar = tqdm(total=total, initial=start, desc=desc, unit="it", dynamic_ncols=True, file=sys.stderr)

    interrupted = timed_out = False
    done = start
    deadline = time.monotonic() + 60 * cfg.max_minutes if cfg.max_minutes else None
    with _StopFlag() as stop:
        for it in range(start, cfg.iters):
            # ---- this iteration's data and random draws
            batch = next(batches)
            x = batch["image"].to(device, non_blocking=True)  # [b, 1, S, S, S] in [-1, 1]
            labels = batch["label"].to(device, non_blocking=True) if conditional else None
            rng.manual_seed(_iteration_seed(cfg.seed, info.rank, it))
            z = torch.randn(local_batch, model_cfg.latent_dim, generator=rng).to(device)
            fake_labels = (
                torch.randint(model_cfg.num_classes, (local_batch,), generator=rng).to(device) if conditional else None
            )
            if cfg.slab_selection == "random":
                starts = G.selector.random_starts(local_batch, generator=rng)
            else:
                starts = G.selector.deterministic_starts(it, local_batch)
            slab_pos = G.selector.position(starts).to(device)  # starts stay on the CPU: no device sync
            x_slab = G.selector.select_real(x, starts)  # real slab, aligned with the generated one
            x_low = F.interpolate(x, scale_factor=1 / f, mode="trilinear", align_corners=False) if use_lowres else None

            # ---- D step (G's forward pass is kept for the G step)
            with amp:
                fake_low, fake_slab = G_step(z, starts, fake_labels)
                logits, cls = D_step(
                    torch.cat([x_slab, fake_slab.detach()]),
                    torch.cat([slab_pos, slab_pos]),
                    torch.cat([x_low, fake_low.detach()]) if use_lowres else None,
                )
            loss_D, loss_D_cls = discriminator_loss(
                logits[:local_batch],
                logits[local_batch:],
                cls[:local_batch] if conditional else None,
                labels,
            )
            step(opt["D"], loss_D)

            # ---- G step through the updated, frozen D
            D.requires_grad_(False)
            with amp:
                logits_g, cls_g = D(fake_slab, slab_pos, fake_low)
            loss_G, loss_G_cls = generator_loss(logits_g, cls_g, fake_labels, cfg.class_weight)
            step(opt["G"], loss_G)
            D.requires_grad_(True)
            del fake_low, fake_slab, logits, cls, logits_g, cls_g

            losses = [loss_D, loss_G]
            if E is not None:
                G.requires_grad_(False)
                # ---- E^H step: real slab → E^H → G^H (frozen) ≈ real slab
                with amp:
                    rec_slab = G.high(EH_step(x_slab))
                loss_EH = high_res_encoder_loss(rec_slab, x_slab)
                step(opt["EH"], loss_EH)
                del rec_slab

                # ---- E^G step: E^H (frozen, no graph) on all slabs → E^G → G (frozen)
                with torch.no_grad(), amp:
                    feats = E.features(x)
                with amp:
                    rec_low, rec_slab = G(EG_step(feats), starts, labels)
                loss_EG = ground_encoder_loss(rec_slab, x_slab, rec_low, x_low)
                step(opt["EG"], loss_EG)
                G.requires_grad_(True)
                del feats, rec_low, rec_slab
                losses += [loss_EH, loss_EG]
            if conditional:
                losses += [loss_D_cls, loss_G_cls]

            if models.ema is not None:
                models.ema.update(G, it)

            # ---- divergence check, log, samples, checkpoint
            done = it + 1
            vec = torch.stack([loss.detach().float() for loss in losses])
            newly_bad = (first_bad_iter < 0) & ~torch.isfinite(vec)
            first_bad_iter = torch.where(newly_bad, torch.full_like(first_bad_iter, it), first_bad_iter)
            first_bad_value = torch.where(newly_bad, vec, first_bad_value)
            loss_sum += torch.nan_to_num(vec)
            logged_since += 1
            over_time = deadline is not None and time.monotonic() > deadline
            signalled = stop.requested
            if info.distributed:  # every rank must stop at the same iteration
                signalled = dist_utils.any_rank(signalled, info)
                over_time = dist_utils.any_rank(over_time, info) if deadline is not None else False
            stopping = signalled or over_time
            is_last = done == cfg.iters
            is_log = done % cfg.log_every == 0 or is_last
            is_sample = cfg.sample_every > 0 and (done % cfg.sample_every == 0 or is_last or stopping)
            is_ckpt = done % cfg.ckpt_every == 0 or is_last or stopping
            if done % check_every == 0 or is_log or is_sample or is_ckpt:
                check_finite()  # raises RunFailed before anything bad is logged or saved

            if is_log:
                now = time.perf_counter()
                row = dict(zip(loss_names, (loss_sum / logged_since).tolist()))
                row["it_per_s"] = logged_since / max(now - t_last, 1e-9)
                row["memory_mb"] = _peak_memory_mb(device)
                loss_sum.zero_()
                logged_since, t_last = 0, now
                if main:
                    for k, v in row.items():
                        writer.add_scalar(("loss/" if k.startswith("loss") else "perf/") + k, v, done)
                    metrics.append({"iteration": done, **{k: f"{v:.6g}" for k, v in row.items()}})
                    if bar is not None:
                        bar.set_postfix({k.removeprefix("loss_"): f"{row[k]:.3f}" for k in loss_names[:4]}, refresh=False)
            if is_sample and main:
                _write_samples(models, sample_z, sample_labels, device, amp, run_dir, done, writer)
            if bar is not None:
                bar.update(1)
            if is_ckpt:
                save(done)
            if stopping:
                interrupted, timed_out = signalled, not signalled
                break

    if bar is not None:
        bar.close()
    if writer is not None:
        writer.close()
    if interrupted and main:
        print(f"medgen train: stopped at iteration {done}; checkpoint {last_good}", file=sys.stderr)
    if timed_out and main:
        print(
            f"medgen train: time limit of {cfg.max_minutes:g} min reached at iteration {done}; "
            f"checkpoint {last_good} (continue with --resume)",
            file=sys.stderr,
        )
    return TrainResult(iteration=done, interrupted=interrupted, models=models, checkpoint=last_good)


@torch.no_grad()
def _write_samples(models: Models, z, labels, device, amp, run_dir: Path, iteration: int, writer) -> None:
    """Samples of the EMA generator for fixed z → ``RUN/samples/iter-NNNNNN.png`` and TensorBoard."""
    from medgen.viz.mosaic import mosaic_array, save_mosaic

    G = models.sampler()
    vols = []
    for i in range(z.shape[0]):  # one at a time: peak memory of a single full-resolution volume
        lab = labels[i : i + 1].to(device) if labels is not None else None
        with amp:
            v = G.generate(z[i : i + 1].to(device), lab)
        vols.append(v[0, 0].float().cpu().numpy())
    titles = [f"{i}" + (f" class {int(labels[i])}" if labels is not None else "") for i in range(len(vols))]
    save_mosaic(vols, run_dir / SAMPLES_DIR / f"{ckpt_io.checkpoint_name(iteration)}.png", titles=titles, vmin=-1.0, vmax=1.0)
    if writer is not None:
        writer.add_image("samples", mosaic_array(vols, vmin=-1.0, vmax=1.0), iteration, dataformats="HW")
