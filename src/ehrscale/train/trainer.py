"""The training loop: one IsoFLOPs cell, or one WSD stable segment, resumably (commands: :mod:`.command`).

A cell trains its model on exactly ``D`` real target tokens of the training split (the last
batch's surplus targets are masked), then scores the fixed validation windows of the tuning
split (the same windows for every cell; this is the loss the fits use) and writes, in
``RUN_DIR``:

* ``metrics.json`` (written last: its presence means the cell is done; ``schedule`` says how),
* ``model.pt`` (``{"config", "state_dict", "cell"}``), ``log.csv`` (one row per logged step).

**Schedules** (``train.schedule``, :mod:`ehrscale.train.schedule`): ``cosine`` (one job per cell)
or ``wsd``, whose stable phase does not depend on ``D``: the workflow trains it once per size, as
a chain of ``ehrscale stable`` segments that each stop at one cell's branch point (the first step
boundary at or past ``ceil((1 - cooldown_fraction) D)``), and every cell is a cooldown job started
from its branch state (``ehrscale train --branch``). Without ``--branch`` a WSD cell trains warmup,
stable phase and cooldown in one job; the result is the same, bit for bit on CPU. The batch, LR and
branch-point rules, and what a size's chain shares with its cells, are :mod:`ehrscale.plan.rules`'.

**Optimisation.** AdamW (beta1 0.9; beta2 0.99, not 0.95: at a few thousand tokens per
step 0.95 is too short a memory, Porian et al. 2024; weight decay 0.1 on matrices only,
i.e. parameters with >= 2 dims, which includes the tied embedding as in nanoGPT), gradient
clipping at 1.0. The optimiser is :class:`ehrscale.train.optim.AdamW`: torch's update without the
3 s import of ``torch._dynamo`` that ``torch.optim`` costs every job.

**Resume.** A checkpoint (model, optimizer, step, tokens, stream position (epoch, row),
RNG states, log rows) is written atomically every ``checkpoint_minutes`` (and every
``checkpoint_every_steps`` if set): ``RUN_DIR/checkpoint.pt`` for a cell, ``<out>.resume.pt``
for a stable segment. On SIGTERM or SIGUSR1 the job finishes its current step, checkpoints
and exits with code 75 (``EX_TEMPFAIL``); rerunning the same command resumes bit-for-bit on
CPU. A checkpoint whose hash differs from the job's is set aside, never resumed.

**Precision.** bf16 autocast on CUDA, fp32 on CPU; ``compile: true`` wraps the model in
``torch.compile``. ``device: auto`` picks CUDA when present.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import math
import os
import random
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ehrscale.core.device import pick_device
from ehrscale.core.errors import EhrscaleError
from ehrscale.core.files import atomic_path, write_json
from ehrscale.model.config import GPTConfig, ModelSettings, flops_per_token, mfu, param_counts, peak_flops_for
from ehrscale.model.gpt import GPT
from ehrscale.plan.grid import Cell, parse_chain, size_definition
from ehrscale.plan.rules import (
    STABLE_INDEPENDENT,
    UNHASHED,
    TrainSettings,
    batch_size_for,
    branch_point,
    check_settings,
    learning_rate_for,
)
from ehrscale.tokens.store import TokenSplit, data_subset, read_stats
from ehrscale.train.data import WindowStream, validation_batches
from ehrscale.train.optim import AdamW
from ehrscale.train.schedule import Schedule

EXIT_PREEMPTED = 75  # EX_TEMPFAIL: checkpoint saved, rerun to resume

METRICS_KEYS = (
    "cell", "size", "budget", "n_params", "n_params_nonembedding", "tokens", "flops", "flops_per_token",
    "val_loss", "train_loss", "epochs", "unique_tokens", "data_fraction", "wall_seconds", "tokens_per_second", "device", "dtype", "mfu",
    "config_hash", "seed", "context_length", "batch_size", "learning_rate", "schedule", "warmup_tokens",
    "branch_tokens", "job_wall_seconds",
)
BRANCH_STATE = "branch.pt"  # a one-job WSD run's state at its branch point (save_branch): a first stable segment
LOG_COLUMNS = ("step", "tokens", "flops", "train_loss", "lr", "tokens_per_second", "elapsed_s")


def _digest(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _fmt_eta(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class _StopFlag:
    """SIGTERM / SIGUSR1 set a flag; the loop checkpoints and exits after the current step."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: no signal handling
                pass
        return self

    def _handle(self, signum, frame) -> None:
        self.signum = signum

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


class Trainer:
    """One chain's model, optimiser and data stream, and the training loop over them. A chain is a size on
    its unique data (``d32L2``, or ``d32L2_u0p25`` on a quarter of the train patients: :func:`parse_chain`).

    ``chain_hash`` covers everything a chain's stable phase depends on; a cell adds its D.
    """

    def __init__(self, tokens_dir: str | Path, size: str, size_def: dict, model_settings: ModelSettings,
                 settings: TrainSettings, stats: dict | None = None) -> None:
        _, self.data_fraction = parse_chain(size)
        check_settings(settings)
        s = self.s = settings
        self.tokens_dir = Path(tokens_dir)
        self.stats = stats if stats is not None else read_stats(self.tokens_dir)
        if s.threads:
            torch.set_num_threads(int(s.threads))
        self.device = pick_device(s.device, "train.device")
        self.use_bf16 = s.dtype == "bfloat16" or (s.dtype == "auto" and self.device.type == "cuda")
        self.dtype_name = "bfloat16" if self.use_bf16 else "float32"
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self.size = size
        self.cfg = GPTConfig.from_size(size_def, int(self.stats["vocab_size"]), model_settings)
        self.ctx = model_settings.context_length
        self.n_params = param_counts(self.cfg)["total"]
        self.fpt = flops_per_token(self.cfg)
        self.batch_size = batch_size_for(self.n_params, self.ctx, s)
        self.peak_lr = learning_rate_for(self.cfg.d_model, s)
        self.warmup = s.warmup_tokens_per_param * self.n_params
        self.chain_hash = _digest({
            "model": dataclasses.asdict(self.cfg), "device": self.device.type, "dtype": self.dtype_name,
            "train": {k: v for k, v in dataclasses.asdict(s).items() if k not in UNHASHED | set(STABLE_INDEPENDENT)},
            "batch_size": self.batch_size, "peak_lr": self.peak_lr,
            "tokens": {"vocab_size": self.stats.get("vocab_size"), "splits": self.stats.get("splits")},
        } | ({"data_fraction": self.data_fraction} if self.data_fraction < 1 else {}))

        torch.manual_seed(s.seed)
        random.seed(s.seed)
        np.random.seed(s.seed % 2**32)
        self.model = GPT(self.cfg).to(self.device)
        decay = [p for p in self.model.parameters() if p.dim() >= 2]
        no_decay = [p for p in self.model.parameters() if p.dim() < 2]
        self.opt = AdamW([{"params": decay, "weight_decay": s.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
                         lr=self.peak_lr, betas=(s.beta1, s.beta2))
        self.train_split = TokenSplit(self.tokens_dir / "train")
        patients = data_subset(self.train_split, self.data_fraction) if self.data_fraction < 1 else None
        self.stream = WindowStream(self.train_split, self.ctx, seed=s.seed, mode=s.window_mode, patients=patients)
        self.unique_tokens = self.stream.n_targets  # U: the targets of one pass over its data
        self.st: dict[str, Any] = {"step": 0, "tokens": 0, "epoch": 0, "row": 0, "elapsed": 0.0, "loss_sum": 0.0,
                                   "loss_n": 0, "last_train_loss": float("nan"), "log": [], "branch": None}

    def schedule(self, total: int | None) -> Schedule:
        return Schedule(self.s.schedule, self.peak_lr, self.warmup, self.s.final_lr_fraction, total)

    # -- state files: checkpoints and stable-phase branch states share one format

    def save(self, path: Path, hash_: str) -> None:
        rng = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
               "cuda": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None}
        with atomic_path(path) as tmp:
            torch.save({"config_hash": hash_, "model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                        "state": self.st, "rng": rng}, tmp)

    def load(self, path: Path, hash_: str, what: str) -> bool:
        """Load ``path`` if it exists and carries ``hash_``; a stale checkpoint is set aside.

        ``what`` names the file's role: a resume checkpoint of another configuration is moved
        aside (so every retry does not fail), a branch state of another one is an error.
        """
        if not path.exists():
            return False
        ck = torch.load(path, map_location="cpu", weights_only=False)
        if ck.get("config_hash") != hash_:
            if what == "branch":
                raise EhrscaleError(f"{path}: branch state of another configuration (hash {ck.get('config_hash')}, "
                                    f"this job's size needs {hash_}); rerun its stable segments")
            stale = path.with_name(f"{path.stem}.{ck.get('config_hash')}{path.suffix}")
            os.replace(path, stale)
            print(f"[{self.size}] {path.name} is from another configuration (hash {ck.get('config_hash')} != "
                  f"{hash_}); moved to {stale.name}, starting afresh", file=sys.stderr, flush=True)
            return False
        self.model.load_state_dict(ck["model"])
        self.opt.load_state_dict(ck["optimizer"])
        self.st = ck["state"]
        self.st.setdefault("branch", None)
        torch.set_rng_state(ck["rng"]["torch"])
        if self.device.type == "cuda" and ck["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state_all(ck["rng"]["cuda"])
        np.random.set_state(ck["rng"]["numpy"])
        random.setstate(ck["rng"]["python"])
        return True

    # -- the loop

    def run(self, label: str, stop_at: int, schedule: Schedule, *, exact: bool, branch_at: int | None,
            ckpt: Path, ckpt_hash: str, branch_state: Path | None = None) -> bool:
        """Train until ``stop_at`` tokens; False if a signal checkpointed the run first.

        ``exact``: mask the last batch to land exactly on ``stop_at`` (a cell's D); else stop at
        the first step boundary at or past it (a stable segment). ``branch_at``: a WSD run in
        one job starts its decay at the first step boundary at or past this; ``branch_state``:
        there it also writes the state a stable segment ending at ``branch_at`` would write.
        """
        s, st, device = self.s, self.st, self.device
        fwd = torch.compile(self.model) if s.compile else self.model
        autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=self.use_bf16)
        t_start = time.perf_counter()
        elapsed0, tokens0 = st["elapsed"], st["tokens"]
        last_ckpt = last_progress = t_start
        interval_t, interval_tokens = t_start, st["tokens"]
        loss_acc = torch.zeros((), device=device, dtype=torch.float64)  # token-weighted, since last log
        loss_acc += st["loss_sum"]
        loss_n = st["loss_n"]
        self.model.train()
        with _StopFlag() as stop:
            while st["tokens"] < stop_at:
                batch, nxt_epoch, nxt_row = self.stream.next_batch(st["epoch"], st["row"], self.batch_size)
                n = batch.n_targets
                if exact and st["tokens"] + n > stop_at:  # last step: keep exactly stop_at - tokens targets
                    keep = stop_at - st["tokens"]
                    flat = batch.targets.view(-1)
                    real = (flat != -100).nonzero().squeeze(1)
                    flat[real[keep:]] = -100
                    n = keep
                batch = batch.to(device)
                lr = schedule.lr(st["tokens"] + n, st["branch"])
                for g in self.opt.param_groups:
                    g["lr"] = lr
                with autocast:
                    _, loss = fwd(batch.inputs, batch.targets, batch.positions, batch.segments)
                loss.backward()
                if s.grad_clip:
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), s.grad_clip)
                self.opt.step()
                self.opt.zero_grad()
                loss_acc += loss.detach().double() * n
                loss_n += n
                st["step"] += 1
                st["tokens"] += n
                st["epoch"], st["row"] = nxt_epoch, nxt_row
                at_branch = branch_at is not None and st["branch"] is None and st["tokens"] >= branch_at
                if at_branch:
                    st["branch"] = st["tokens"]
                now = time.perf_counter()
                st["elapsed"] = elapsed0 + (now - t_start)
                done = st["tokens"] >= stop_at
                # A stable segment's end is not a log row: a chain logs exactly as one job would.
                log_due = st["step"] % s.log_every_steps == 0 or (done and exact)
                progress_due = done or st["step"] == 1 or now - last_progress >= s.progress_seconds
                if log_due or progress_due:
                    train_loss = loss_acc.item() / max(loss_n, 1)  # token-weighted mean since the last log row
                    tps = (st["tokens"] - interval_tokens) / max(now - interval_t, 1e-9)
                    if log_due:
                        st["log"].append({"step": st["step"], "tokens": st["tokens"], "flops": st["tokens"] * self.fpt,
                                          "train_loss": train_loss, "lr": lr, "tokens_per_second": tps,
                                          "elapsed_s": st["elapsed"]})
                        st["last_train_loss"] = train_loss
                        loss_acc.zero_()
                        loss_n = 0
                        interval_t, interval_tokens = now, st["tokens"]
                    if progress_due:
                        avg_tps = (st["tokens"] - tokens0) / max(now - t_start, 1e-9)
                        eta = (stop_at - st["tokens"]) / avg_tps if avg_tps > 0 else float("inf")
                        print(f"[{label}] step {st['step']} tokens {st['tokens']:,}/{stop_at:,} "
                              f"({100 * st['tokens'] / stop_at:.1f}%) loss {train_loss:.4f} lr {lr:.2e} "
                              f"{tps:,.0f} tok/s ETA {_fmt_eta(eta)}", file=sys.stderr, flush=True)
                        last_progress = now
                if at_branch and branch_state is not None:  # after the step's log row, as a segment's end
                    st["loss_sum"], st["loss_n"], st["branch"] = loss_acc.item(), loss_n, None
                    self.save(branch_state, self.chain_hash)
                    st["branch"] = st["tokens"]
                if s.stop_after_steps is not None and st["step"] == s.stop_after_steps and not done:
                    os.kill(os.getpid(), signal.SIGTERM)  # same path as a scheduler's preemption signal
                if done:
                    break
                if stop.signum is not None or (s.checkpoint_every_steps and st["step"] % s.checkpoint_every_steps == 0) \
                        or now - last_ckpt >= s.checkpoint_minutes * 60:
                    st["loss_sum"], st["loss_n"] = loss_acc.item(), loss_n
                    self.save(ckpt, ckpt_hash)
                    last_ckpt = time.perf_counter()
                    if stop.signum is not None:
                        print(f"[{label}] signal {stop.signum}: checkpoint saved at step {st['step']}; exit {EXIT_PREEMPTED}",
                              file=sys.stderr, flush=True)
                        return False
        st["loss_sum"], st["loss_n"] = loss_acc.item(), loss_n
        return True


def train_stable(tokens_dir: str | Path, out: str | Path, size: str, size_def: dict, until: int,
                 model_settings: ModelSettings, settings: TrainSettings, start: str | Path | None = None,
                 stats: dict | None = None, adopt: list[str | Path] = ()) -> int:
    """One segment of a size's WSD stable phase: from ``start`` (or step 0) to ``until`` tokens.

    Writes the branch state ``out`` (the checkpoint format); 0 when done, EXIT_PREEMPTED after
    a signal (resume from ``<out>.resume.pt`` on rerun). ``adopt``: LR-sweep run directories;
    a first segment copies the ``branch.pt`` of the one that trained this chain's state.
    """
    if settings.schedule != "wsd":
        raise EhrscaleError(f"stable segments belong to train.schedule: wsd, not {settings.schedule!r}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(tokens_dir, size, size_def, model_settings, settings, stats)
    if start is None and _adopt_branch_state(trainer, int(until), adopt, out):
        return 0
    resume = out.with_name(out.name + ".resume.pt")
    if not trainer.load(resume, trainer.chain_hash, "checkpoint") and start is not None:
        trainer.load(Path(start), trainer.chain_hash, "branch")
    st = trainer.st
    if st["tokens"] > 0:
        print(f"[{size}] stable phase from step {st['step']}, {st['tokens']:,} tokens", file=sys.stderr, flush=True)
    label = f"{size} stable"
    if not trainer.run(label, int(until), trainer.schedule(None), exact=False, branch_at=None, ckpt=resume,
                       ckpt_hash=trainer.chain_hash):
        return EXIT_PREEMPTED
    trainer.save(out, trainer.chain_hash)
    resume.unlink(missing_ok=True)
    print(f"[{label}] branch state at {st['tokens']:,} tokens (step {st['step']}) -> {out}", file=sys.stderr, flush=True)
    return 0


def _adopt_branch_state(trainer: Trainer, until: int, runs: list[str | Path], out: Path) -> bool:
    """Copy a sweep run's ``branch.pt`` to ``out`` if it is the state this first segment would train.

    Its chain hash (same size, LR and every stable setting) and its tokens (the first step
    boundary at or past ``until``) must match; training from step 0 then reproduces it bit for bit."""
    step_tokens = trainer.batch_size * trainer.ctx
    for run in runs:
        path = Path(run) / BRANCH_STATE
        if not path.exists():
            continue
        try:
            ck = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as err:  # not adoptable: the segment trains instead
            print(f"[{trainer.size} stable] {path} is unreadable ({type(err).__name__}); training", file=sys.stderr, flush=True)
            continue
        if ck.get("config_hash") == trainer.chain_hash and until <= ck["state"]["tokens"] < until + step_tokens:
            with atomic_path(out) as tmp:
                shutil.copyfile(path, tmp)
            print(f"[{trainer.size} stable] branch state at {ck['state']['tokens']:,} tokens: the LR-sweep run "
                  f"{run} trained it (same chain hash); copied -> {out}", file=sys.stderr, flush=True)
            return True
    return False


def _adopt_cell(chash: str, runs: list[str | Path], out: Path, label: str) -> bool:
    """Copy a sweep run that trained exactly this cell (same config hash) into ``out``."""
    for run in map(Path, runs):
        try:
            metrics = json.loads((run / "metrics.json").read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if metrics.get("config_hash") == chash and all((run / f).exists() for f in ("model.pt", "log.csv")):
            for name in ("model.pt", "log.csv", "metrics.json"):  # metrics.json last: it marks the cell done
                with atomic_path(out / name) as tmp:
                    shutil.copyfile(run / name, tmp)
            print(f"[{label}] the LR-sweep run {run} trained this cell (same config hash); copied", file=sys.stderr, flush=True)
            return True
    return False


def train_cell(tokens_dir: str | Path, out_dir: str | Path, cell: Cell, model_settings: ModelSettings,
               settings: TrainSettings, stats: dict | None = None, branch: str | Path | None = None,
               adopt: list[str | Path] = (), save_branch: bool = False) -> int:
    """Train ``cell``; returns 0 when done, EXIT_PREEMPTED after a signal-triggered checkpoint.

    ``branch``: for ``wsd``, the size's stable state at this cell's branch point; the job is
    then the cooldown alone. Without it the whole schedule runs here, and ``save_branch``
    also writes ``branch.pt`` there: the state of the size's first stable segment.
    ``adopt``: LR-sweep run directories; one that trained this very cell is copied instead.
    """
    s = settings
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if branch is not None and s.schedule != "wsd":
        raise EhrscaleError(f"--branch needs train.schedule: wsd, not {s.schedule!r}")
    trainer = Trainer(tokens_dir, cell.chain, size_definition(cell), model_settings, s, stats)
    D = int(cell.tokens)
    chash = _digest({"chain": trainer.chain_hash, "cell": cell.as_dict(),
                     "train": {k: v for k, v in dataclasses.asdict(s).items() if k not in UNHASHED}})
    if _adopt_cell(chash, list(adopt), out, cell.id):
        return 0
    val_batches = fixed_validation_batches(trainer.tokens_dir, trainer.ctx, s)
    ckpt_path = out / "checkpoint.pt"
    if trainer.load(ckpt_path, chash, "checkpoint"):  # (load replaces trainer.st: read it afterwards)
        st = trainer.st
        print(f"[{cell.id}] resuming at step {st['step']}, {st['tokens']:,}/{D:,} tokens", file=sys.stderr, flush=True)
    elif branch is not None:
        trainer.load(Path(branch), trainer.chain_hash, "branch")
        st = trainer.st
        lo = branch_point(D, s)
        if not lo <= st["tokens"] < min(D, lo + trainer.batch_size * trainer.ctx):
            raise EhrscaleError(f"{branch}: branch state at {st['tokens']:,} tokens is not {cell.id}'s branch point "
                                f"(the first step boundary at or past {lo:,} tokens, before D {D:,})")
        st["branch"] = st["tokens"]
        print(f"[{cell.id}] cooldown from the stable state at {st['tokens']:,} tokens", file=sys.stderr, flush=True)
    st = trainer.st
    job_elapsed0 = st["elapsed"]
    branch_at = branch_point(D, s) if s.schedule == "wsd" else None
    branch_state = out / BRANCH_STATE if save_branch and branch is None and branch_at is not None else None
    if not trainer.run(cell.id, D, trainer.schedule(D), exact=True, branch_at=branch_at, ckpt=ckpt_path, ckpt_hash=chash,
                       branch_state=branch_state):
        return EXIT_PREEMPTED

    model, device = trainer.model, trainer.device
    val_loss = evaluate(model, val_batches, device, trainer.use_bf16)
    wall = st["elapsed"]
    tps = st["tokens"] / max(wall, 1e-9)
    peak = s.peak_flops or (peak_flops_for(torch.cuda.get_device_name(device)) if device.type == "cuda" else None)
    metrics = {
        "cell": cell.id, "size": cell.size, "budget": cell.budget, "n_params": cell.n_params,
        "n_params_nonembedding": cell.n_params_nonembedding, "tokens": st["tokens"], "flops": st["tokens"] * trainer.fpt,
        "flops_per_token": trainer.fpt, "val_loss": val_loss, "train_loss": st["last_train_loss"],
        "epochs": st["tokens"] / trainer.unique_tokens, "unique_tokens": trainer.unique_tokens,
        "data_fraction": trainer.data_fraction, "wall_seconds": wall, "tokens_per_second": tps,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else device.type,
        "dtype": trainer.dtype_name, "mfu": mfu(trainer.cfg, tps, peak) if device.type == "cuda" else None,
        "config_hash": chash, "seed": s.seed, "context_length": trainer.ctx, "batch_size": trainer.batch_size,
        "learning_rate": trainer.peak_lr, "schedule": s.schedule, "warmup_tokens": trainer.warmup,
        "branch_tokens": st["branch"], "job_wall_seconds": st["elapsed"] - job_elapsed0,
    }
    with atomic_path(out / "model.pt") as tmp:
        torch.save({"config": dataclasses.asdict(trainer.cfg), "state_dict": model.state_dict(), "cell": cell.as_dict()}, tmp)
    with atomic_path(out / "log.csv") as tmp:
        with open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=LOG_COLUMNS)
            w.writeheader()
            w.writerows(st["log"])
    write_json(out / "metrics.json", metrics)
    ckpt_path.unlink(missing_ok=True)
    print(f"[{cell.id}] done: val_loss {val_loss:.4f} train_loss {st['last_train_loss']:.4f} "
          f"{tps:,.0f} tok/s {wall:.0f}s ({s.schedule})", file=sys.stderr, flush=True)
    return 0


def fixed_validation_batches(tokens_dir: Path, ctx: int, s: TrainSettings) -> list:
    """The same validation windows of the tuning split for every cell; checked before training starts."""
    split = TokenSplit(Path(tokens_dir) / "tuning")
    batches = list(validation_batches(split, ctx, s.val_windows, s.val_batch_size, s.window_mode, s.val_seed))
    if not sum(b.n_targets for b in batches):
        raise EhrscaleError(f"{tokens_dir}/tuning has no validation targets: the tuning split is empty or too short")
    return batches


@torch.no_grad()
def evaluate(model: GPT, batches: list, device: torch.device, use_bf16: bool) -> float:
    """Mean next-token loss over the fixed validation windows."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for batch in batches:
        b = batch.to(device)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
            _, loss = model(b.inputs, b.targets, b.positions, b.segments)
        total += loss.double().item() * batch.n_targets
        count += batch.n_targets
    model.train(was_training)
    return total / count
