"""The training loop every model family runs on: one loop, read top to bottom (no callback framework).

    check settings → data → run folder → networks and optimisers (family) → (resume)
    → for each iteration:
        next batch; seed this iteration's random generator from (seed, rank, iteration)
        losses = family.train_step(step)          # the family's updates, e.g. D, G, E^H, E^G
        EMA of the followed network; NaN/inf check; log; sample mosaic; checkpoint
    → close

The family (:class:`medgen.training.family.Family`, looked up by the caller in
:mod:`medgen.families.registry`) says which networks exist, how they are
optimised and what one update is; this module owns everything else, for every
family alike.

Reproducibility: every random draw of iteration ``i`` on rank ``r`` comes from
``step.rng``, a ``torch.Generator`` re-seeded from ``(seed, r, i)``, or from the
global torch generator, re-seeded from the same triple at the start of the
iteration (for layers such as dropout that cannot take a generator); the
data order is a function of the batch number (see
:class:`~medgen.training.distributed.InfiniteBatchSampler`). A resumed run
therefore continues exactly as if it had never stopped (bitwise on the CPU).
The global torch, CUDA, numpy and Python RNG states are saved in checkpoints as
well (the loop does not use them).

Precision: on CUDA the forward passes run under bf16 autocast by default
(``step.amp()``: convolutions and linear layers in bf16; normalisation, the
losses and Adam in float32). ``--precision fp32`` turns autocast off; CPU runs
use float32 unless ``--precision bf16`` asks for bf16 autocast there (with torch's
native convolutions rather than oneDNN's, see :func:`train`).

Multi-process (``torchrun``): the modules named by ``family.ddp_modules`` are
each wrapped in ``DistributedDataParallel``; the family's step calls each
wrapper exactly once per iteration, by the update of that network, followed by
one backward (frozen networks are called unwrapped), so
``find_unused_parameters`` is not needed. The global batch is split across
ranks; only rank 0 writes logs, samples and checkpoints. Ranks agree on
stopping (signal or divergence) with a tiny all-reduce. Resuming reads the
checkpoint on every rank, so multi-node runs need the run folder on a shared
file system; a resume is exact when it uses the same number of processes.

Signals: the first SIGINT/SIGTERM finishes the current iteration, saves a
checkpoint and ends the run with exit code 130; a second one (more than
:data:`SECOND_SIGNAL_GRACE_S` seconds later, so that the copy ``torchrun``
forwards to its workers does not count) aborts at once.

Divergence: a NaN/inf loss raises :class:`~medgen.core.errors.RunFailed` before
anything bad is logged or saved; the last good checkpoint stays ``latest``.

Failures before anything is recorded: a fresh run that stops with an error
before it wrote a metrics row, a sample mosaic or a checkpoint (a setting the
family rejects in ``build`` or its first step, a bad input file) removes the
files and folders it created, so the corrected command runs without ``--resume``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
import shutil
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
from torch import nn

from medgen.core.errors import InputError, RunFailed, UsageError
from medgen.core.fileio import atomic_write_text
from medgen.core.measure import peak_rss_mb
from medgen.core.tables import csv_row_text, write_csv
from medgen.data.dataset import voxel_spacing
from medgen.training import checkpoint as ckpt_io
from medgen.training import distributed as dist_utils
from medgen.training.ema import EMA
from medgen.training.family import Family, Step
from medgen.training.runconfig import CONFIG_NAME, RunConfig

SECOND_SIGNAL_GRACE_S = 2.0
METRICS_NAME = "metrics.csv"
SAMPLES_DIR = "samples"
TENSORBOARD_DIR = "tensorboard"
PREPROCESS_NAME = "preprocess.json"


@dataclass
class Models:
    """The trained networks of a run (plain modules, not DDP wrappers) and the EMA copy, if any."""

    nets: dict[str, nn.Module]
    ema_name: str | None = None
    ema: EMA | None = None  # rank 0 only; None if ema_decay == 0 or the family follows no network

    def weights(self) -> dict[str, dict[str, torch.Tensor]]:
        out = {name: net.state_dict() for name, net in self.nets.items()}
        if self.ema is not None:
            out[f"{self.ema_name}_ema"] = self.ema.model.state_dict()
        return out

    def for_sampling(self) -> dict[str, nn.Module]:
        """The networks to sample from: the EMA copy in place of the network it follows."""
        if self.ema is None:
            return dict(self.nets)
        return {**self.nets, self.ema_name: self.ema.model}

    def __getattr__(self, name: str) -> Any:  # models.G, models.D, ... (the family's network names)
        nets = self.__dict__.get("nets", {})
        if name in nets:
            return nets[name]
        raise AttributeError(name)


@dataclass
class TrainResult:
    iteration: int  # completed iterations
    interrupted: bool  # stopped by SIGINT/SIGTERM (checkpoint saved)
    models: Models
    checkpoint: Path | None  # last checkpoint written (rank 0), or None


# ----------------------------------------------------------------------------- helpers


def _iteration_seed(seed: int, rank: int, iteration: int, stream: int = 0) -> int:
    """A 63-bit seed for (run seed, rank, iteration): counter-based, so resume needs no RNG state.

    ``stream`` 0 seeds the step's own generator (``step.rng``), stream 1 the global torch
    generator (dropout and other layers that draw from it).
    """
    entropy = [seed, rank, iteration] + ([stream] if stream else [])
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0]) >> 1


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
    return peak_rss_mb()  # VmHWM: ru_maxrss would include a parent's peak


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


def _load_dataset(cfg: RunConfig, uses_labels: bool, keys: tuple[str, ...], covariates: tuple[str, ...] = ()):
    """The training split: computed from (split_seed, split_fractions), or the ids stored with the run;
    items hold the volumes ``keys`` and the manifest columns ``covariates`` (as ``item["covariates"]``)."""
    from medgen.data.dataset import VolumeDataset

    label_column = cfg.label_column if uses_labels else None
    return VolumeDataset(
        cfg.data,
        split="train",
        seed=cfg.split_seed,
        fractions=tuple(cfg.split_fractions),
        label_column=label_column,
        ids=list(cfg.train_ids) if cfg.train_ids else None,
        keys=keys,
        covariate_columns=covariates,
    )


# ----------------------------------------------------------------------------- run folder


def prepare_run_dir(cfg: RunConfig, run_dir: Path, resume: bool, family: Family) -> RunConfig:
    """Check the run folder against ``cfg`` (no writes). Returns the config to use.

    A fresh run needs a folder without a run in it. A resumed run must have the
    same settings as the saved ones except :data:`medgen.training.runconfig.RESUMABLE_KEYS`;
    ``resume`` on a folder without a run starts one (so a requeued job can
    always be launched with the same command). Both sides are compared after
    ``family`` fills in its defaults (:func:`with_family_defaults`), so a run saved
    before a setting existed resumes when the setting has its default value.
    """
    saved_path = run_dir / CONFIG_NAME
    if not resume:
        if saved_path.exists():
            raise UsageError(f"{run_dir}: already holds a training run; pass --resume to continue it or choose another --out")
        return cfg
    if not saved_path.exists():  # nothing to resume yet (e.g. a requeued job's first start)
        return cfg
    saved = RunConfig.load(run_dir)
    differing = with_family_defaults(family, saved).differing_keys(with_family_defaults(family, cfg))
    if differing:
        raise UsageError(
            f"{saved_path}: settings differ from the run being resumed: {', '.join(differing)} "
            "(only iterations, device, precision, workers and intervals may change)"
        )
    return cfg


def with_family_defaults(family: Family, cfg: RunConfig) -> RunConfig:
    """A copy of ``cfg`` whose model and hyper-parameters carry every field of the family, defaults included."""
    return RunConfig.from_dict({**cfg.to_dict(), "model": family.model_from_dict(dict(cfg.model)).to_dict(),
                                "hparams": family.hparams_from_dict(dict(cfg.hparams)).to_dict()})


def _write_run_dir(cfg: RunConfig, run_dir: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg.save(run_dir)
    if cfg.preprocess:
        atomic_write_text(run_dir / PREPROCESS_NAME, json.dumps(cfg.preprocess, indent=2) + "\n")


_RUN_FILES = (CONFIG_NAME, PREPROCESS_NAME, METRICS_NAME)
_RUN_DIRS = (TENSORBOARD_DIR, SAMPLES_DIR, ckpt_io.CHECKPOINT_DIR)


def _fresh_run_paths(run_dir: Path) -> set[str] | None:
    """For a folder without a run yet, what it holds before the run writes: its entries and those of the run's
    sub-folders, as paths relative to it (``"."``: the folder itself). None for a folder with a run in it."""
    if (run_dir / CONFIG_NAME).exists():
        return None
    if not run_dir.is_dir():
        return set()
    held = {".", *(p.name for p in run_dir.iterdir())}
    for name in _RUN_DIRS:
        if (run_dir / name).is_dir():
            held.update(f"{name}/{p.name}" for p in (run_dir / name).iterdir())
    return held


def _recorded_anything(run_dir: Path) -> bool:
    """Whether a run wrote a metrics row, a sample mosaic or a checkpoint (anything a user may want to see)."""
    metrics = run_dir / METRICS_NAME
    if metrics.is_file() and len(metrics.read_text(encoding="utf-8").splitlines()) > 1:
        return True
    return any(any((run_dir / d).iterdir()) for d in (SAMPLES_DIR, ckpt_io.CHECKPOINT_DIR) if (run_dir / d).is_dir())


def _remove_unrecorded_run(run_dir: Path, before: set[str]) -> None:
    """Undo a fresh run that failed before it recorded anything (a usage error in the family's build or first
    step, a bad file, Ctrl-C while loading), so that the same command can be run again without ``--resume``.

    Only what the run created goes: whatever ``before`` lists (:func:`_fresh_run_paths`) and anything else a
    user put there stay, and the folder itself only if the run created it and it is empty again.
    """
    if not run_dir.is_dir() or _recorded_anything(run_dir):
        return
    for name in _RUN_FILES:
        if name not in before:
            (run_dir / name).unlink(missing_ok=True)
    for name in _RUN_DIRS:
        folder = run_dir / name
        if not folder.is_dir():
            continue
        if name not in before:
            shutil.rmtree(folder, ignore_errors=True)
            continue
        for entry in folder.iterdir():
            if f"{name}/{entry.name}" in before:
                continue
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
    if "." not in before and not any(run_dir.iterdir()):
        run_dir.rmdir()


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
        write_csv(self.path, rows, self.columns)

    def append(self, row: dict[str, float]) -> None:
        with open(self.path, "a", newline="", encoding="utf-8") as fh:
            fh.write(csv_row_text(row, self.columns))


# ----------------------------------------------------------------------------- the loop


def train(
    family: Family,
    cfg: RunConfig,
    run_dir: str | os.PathLike,
    resume: bool = False,
    progress: bool = True,
    dataset: torch.utils.data.Dataset | None = None,
) -> TrainResult:
    """Train ``family`` as configured by ``cfg`` into ``run_dir`` (see the module docstring).

    ``resume``: continue from the latest complete checkpoint in ``run_dir``
    (or from scratch with the saved configuration if none was written yet).
    ``dataset``: items to train on instead of the train split of ``cfg.data``
    (dicts with ``image`` [1, S, S, S] and, for labelled families, ``label``;
    e.g. real and generated volumes joined), for library use.
    Raises :class:`RunFailed` if a loss diverges (NaN/inf); returns with
    ``interrupted=True`` after SIGINT/SIGTERM (a checkpoint is saved first).
    """
    if cfg.family != family.name:
        raise UsageError(f"the run configuration is for family {cfg.family!r}, not {family.name!r}")
    info = dist_utils.setup(cfg.device)
    onednn = torch.backends.mkldnn.enabled
    run_dir = Path(run_dir)
    before = _fresh_run_paths(run_dir)
    try:
        if info.device.type == "cpu" and _precision(cfg, info.device) == "bf16":
            # oneDNN's bf16 Conv3d weight gradient on the CPU (torch 2.13) intermittently returns NaN: it
            # reads uninitialised memory for 32 channels at 2³ voxels (a diffusion UNet's middle block at
            # 32³). CPU bf16 only rehearses the GPU's precision, so it runs torch's native kernels instead.
            torch.backends.mkldnn.enabled = False
        return _train(family, cfg, run_dir, resume, progress, info, dataset)
    except BaseException:
        if before is not None and info.is_main:
            _remove_unrecorded_run(run_dir, before)
        raise
    finally:
        torch.backends.mkldnn.enabled = onednn
        dist_utils.cleanup()


def _precision(cfg: RunConfig, device: torch.device) -> str:
    """``cfg.precision`` with ``auto`` resolved: bf16 on CUDA, fp32 elsewhere."""
    return cfg.precision if cfg.precision != "auto" else ("bf16" if device.type == "cuda" else "fp32")


def _train(
    family: Family,
    cfg: RunConfig,
    run_dir: Path,
    resume: bool,
    progress: bool,
    info: dist_utils.DistInfo,
    dataset: torch.utils.data.Dataset | None,
) -> TrainResult:
    from torch.nn.parallel import DistributedDataParallel as DDP

    # ---- settings: the loop's own, then the family's
    cfg.validate()
    model_cfg = family.model_from_dict(cfg.model)
    hp = family.hparams_from_dict(cfg.hparams)
    cfg.hparams = hp.to_dict()
    device, main = info.device, info.is_main
    uses_labels = family.uses_labels(model_cfg)
    num_classes = int(getattr(model_cfg, "num_classes", 0) or 0)
    local_batch = dist_utils.local_batch_size(cfg.batch, info.world_size)
    precision = _precision(cfg, device)

    def amp():
        return torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()

    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    # ---- data
    if dataset is None:
        if resume and not cfg.train_ids and (run_dir / CONFIG_NAME).exists():
            cfg.train_ids = RunConfig.load(run_dir).train_ids  # keep the run's split even if files were added
        dataset = _load_dataset(cfg, uses_labels, tuple(family.data_keys(model_cfg)),
                                tuple(family.covariates(model_cfg)))
        cfg.train_ids = list(dataset.ids)
        if not cfg.preprocess:
            cfg.preprocess = dict(getattr(dataset, "info", {}))
    if cfg.spacing is None and cfg.data:  # recorded so that generated volumes get it wherever the run moves
        found = voxel_spacing(cfg.data, cfg.preprocess, cfg.train_ids)
        cfg.spacing = list(found[0]) if found is not None else None
    if len(dataset) == 0:
        raise InputError(f"{cfg.data}: the training split is empty")
    labels = getattr(dataset, "labels", None)
    if uses_labels and num_classes > 0 and labels is not None:
        ids = list(getattr(dataset, "ids", range(len(dataset))))
        bad = [i for i, y in zip(ids, labels) if not 0 <= y < num_classes]
        if bad:
            raise InputError(
                f"{cfg.data}/manifest.csv: column {cfg.label_column!r} of {bad[0]!r} (and {len(bad) - 1} more) "
                f"is not a class 0..{num_classes - 1}"
            )

    # ---- run folder (checks on every rank before rank 0 writes anything)
    prepare_run_dir(cfg, run_dir, resume, family)
    latest = ckpt_io.latest_checkpoint(run_dir) if resume else None
    if info.distributed:
        torch.distributed.barrier()
    if main:
        _write_run_dir(cfg, run_dir)

    # ---- networks and optimisers (identical initialisation on every rank)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    random.seed(cfg.seed)
    nets = family.build(model_cfg, hp, device)
    ema = EMA(nets[family.ema], cfg.ema_decay) if family.ema and main and cfg.ema_decay > 0 else None
    models = Models(nets, family.ema, ema)
    opt = family.optimizers(nets, hp, device)

    start = 0
    if latest is not None:
        weights = ckpt_io.load_weights(latest, device=device)
        state = ckpt_io.load_state(latest)
        for name, net in nets.items():
            if name not in weights:
                raise InputError(f"{latest}: the checkpoint holds no weights for network {name!r}")
            net.load_state_dict(weights[name])
        if ema is not None:
            ema.model.load_state_dict(weights.get(f"{family.ema}_ema", weights[family.ema]))
        for name, o in opt.items():
            o.load_state_dict(state["optimizers"][name])
        _set_rng_states(state["rng"])
        start = int(state["iteration"])
        if main:
            print(f"medgen train: resuming from {latest} (iteration {start})", file=sys.stderr)
    last_good: Path | None = latest

    # ---- DDP wrappers: each is called once per iteration, by the update of its network
    ddp_targets = family.ddp_modules(nets)
    if info.distributed:
        # device_ids=None: inputs are already on the device and CPU-side random draws must stay there.
        ddp = {name: DDP(m, device_ids=None, gradient_as_bucket_view=True) for name, m in ddp_targets.items()}
    else:
        ddp = dict(ddp_targets)

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
    loss_names = list(family.loss_names(model_cfg, hp))
    columns = [f"loss_{n}" for n in loss_names]
    writer = metrics = None
    if main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run_dir / TENSORBOARD_DIR), purge_step=start if start > 0 else None)
        metrics = _MetricsLog(run_dir / METRICS_NAME, columns + ["it_per_s", "memory_mb"], start)

    # NaN/inf bookkeeping on the device (no host sync per iteration on GPUs)
    n_losses = len(loss_names)
    loss_sum = torch.zeros(n_losses, device=device)
    loss_count = torch.zeros(n_losses, device=device)  # a loss a step left out is not counted
    first_bad_iter = torch.full((n_losses,), -1, dtype=torch.long, device=device)
    first_bad_value = torch.zeros(n_losses, device=device)
    check_every = 1 if device.type == "cpu" else max(1, cfg.log_every)
    logged_since, t_last = 0, time.perf_counter()
    rng = torch.Generator()

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
        raise RunFailed(f"{columns[i]} became {value} at iteration {int(first_bad_iter[i]) + 1}; {good}")

    def save(iteration: int) -> None:
        """Checkpoint (rank 0 writes; every rank checks the weights, which DDP keeps identical)."""
        nonlocal last_good
        if not _all_finite(list(nets.values())):
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
            # ---- this iteration's data and random generator; the family's updates
            batch = {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in next(batches).items()}
            rng.manual_seed(_iteration_seed(cfg.seed, info.rank, it))
            torch.manual_seed(_iteration_seed(cfg.seed, info.rank, it, stream=1))  # dropout & co.: reproducible on resume
            step = Step(nets, ddp, opt, batch, rng, it, cfg.iters, local_batch, model_cfg, hp, amp, device)
            losses = family.train_step(step)
            del step, batch
            if ema is not None:
                ema.update(nets[family.ema], it)

            # ---- divergence check, log, samples, checkpoint
            done = it + 1
            if all(name in losses for name in loss_names):  # the usual case: no per-iteration mask to build
                vec = torch.stack([losses[name].detach().float() for name in loss_names])
                given = 1.0
            else:
                zero = torch.zeros((), device=device)
                vec = torch.stack([losses[name].detach().float() if name in losses else zero for name in loss_names])
                given = torch.tensor([name in losses for name in loss_names], device=device)
            newly_bad = (first_bad_iter < 0) & ~torch.isfinite(vec)
            first_bad_iter = torch.where(newly_bad, torch.full_like(first_bad_iter, it), first_bad_iter)
            first_bad_value = torch.where(newly_bad, vec, first_bad_value)
            loss_sum += torch.nan_to_num(vec)
            loss_count += given
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
                means = (loss_sum / loss_count.clamp(min=1)).tolist()
                row = {c: (m if n > 0 else math.nan) for c, m, n in zip(columns, means, loss_count.tolist())}
                row["it_per_s"] = logged_since / max(now - t_last, 1e-9)
                row["memory_mb"] = _peak_memory_mb(device)
                loss_sum.zero_()
                loss_count.zero_()
                logged_since, t_last = 0, now
                if main:
                    for k, v in row.items():
                        if not math.isnan(v):
                            writer.add_scalar(("loss/" if k.startswith("loss") else "perf/") + k, v, done)
                    metrics.append({"iteration": done, **{k: "" if math.isnan(v) else f"{v:.6g}" for k, v in row.items()}})
                    if bar is not None:
                        bar.set_postfix({n: f"{row[f'loss_{n}']:.3f}" for n in loss_names[:4]}, refresh=False)
            if is_sample and main and family.preview is not None:
                _write_samples(family, models, model_cfg, hp, cfg, device, amp, run_dir, done, writer)
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
    if info.distributed:
        # No rank tears its process group down (``cleanup``) while another still writes its last checkpoint
        # or sample: gloo ranks that left at different moments have aborted in the teardown.
        torch.distributed.barrier()
    return TrainResult(iteration=done, interrupted=interrupted, models=models, checkpoint=last_good)


@torch.no_grad()
def _write_samples(
    family: Family, models: Models, model_cfg: Any, hp: Any, cfg: RunConfig, device, amp, run_dir: Path, iteration: int, writer
) -> None:
    """The family's preview volumes (EMA networks, fixed seed) → ``RUN/samples/iter-NNNNNN.png`` and TensorBoard."""
    from medgen.viz.mosaic import mosaic_array, save_mosaic

    vols, titles = family.preview(models.for_sampling(), model_cfg, hp, cfg.num_samples, cfg.seed + 7919, device, amp)
    if not vols:
        return
    save_mosaic(vols, run_dir / SAMPLES_DIR / f"{ckpt_io.checkpoint_name(iteration)}.png", titles=titles, vmin=-1.0, vmax=1.0)
    if writer is not None:
        writer.add_image("samples", mosaic_array(vols, vmin=-1.0, vmax=1.0), iteration, dataformats="HW")
