"""Train one IsoFLOPs cell, resumably: ``ehrscale train``.

The job trains the cell's model on exactly ``D`` real target tokens of the training split
(the last batch's surplus targets are masked), then scores the fixed validation windows of
the tuning split (the same windows for every cell; this is the loss the fits use) and
writes, in ``RUN_DIR``:

* ``metrics.json`` (written last: its presence means the cell is done),
* ``model.pt`` (``{"config", "state_dict", "cell"}``), ``log.csv`` (one row per logged step).

**Optimisation.** AdamW (beta 0.9, 0.95; weight decay 0.1 on matrices only, i.e. parameters
with >= 2 dims, which includes the tied embedding as in nanoGPT; none on RMSNorm scales),
gradient clipping at 1.0. The LR schedule is a function of the fraction ``p`` of ``D``
done at the end of a step: linear warmup to the peak at ``p = warmup_fraction``, then
cosine decay to ``final_lr_fraction`` x peak at ``p = 1``.

**Batch size and LR rule** (``batch_size_for`` / ``learning_rate_for``), from the CPU sweep
in which a fixed 4 x 256-token batch gave clean IsoFLOPs curves while 16 x 256 left large
cells with 20-450 steps and erased the law:

* rows per step = the power of two ``<= D / (context_length * min_steps)``, clipped to
  ``[min_batch_size, max_batch_size]``: every cell gets about ``min_steps`` or more steps;
  bigger budgets get bigger batches;
* peak LR = ``lr_base * (lr_ref_width / d_model) ** lr_width_exponent``
  (3e-3 * (64 / d_model)^0.75 by default).

Both can be pinned with ``batch_size`` / ``learning_rate``.

**Resume.** A checkpoint (model, optimizer, step, tokens, stream position (epoch, row),
RNG states, log rows) is written atomically to ``RUN_DIR/checkpoint.pt`` every
``checkpoint_minutes`` (and every ``checkpoint_every_steps`` if set). On SIGTERM or SIGUSR1
the job finishes its current step, checkpoints and exits with code 75 (``EX_TEMPFAIL``);
rerunning the same command resumes bit-for-bit on CPU. The checkpoint is removed once the
outputs are written. A checkpoint whose ``config_hash`` differs from the job's is refused.

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
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ehrscale.config import load_config
from ehrscale.data import WindowStream, validation_batches
from ehrscale.store import TokenSplit, read_stats, target_tokens_from_stats
from ehrscale.errors import EhrscaleError
from ehrscale.grid import Cell, GridSettings, find_cell, resolve_sizes
from ehrscale.io import atomic_path, load_settings, write_json
from ehrscale.model import GPT, GPTConfig, ModelSettings, flops_per_token, mfu, peak_flops_for

EXIT_PREEMPTED = 75  # EX_TEMPFAIL: checkpoint saved, rerun to resume

METRICS_KEYS = (
    "cell", "size", "budget", "n_params", "n_params_nonembedding", "tokens", "flops", "flops_per_token",
    "val_loss", "train_loss", "epochs", "wall_seconds", "tokens_per_second", "device", "dtype", "mfu",
    "config_hash", "seed", "context_length", "batch_size", "learning_rate",
)
LOG_COLUMNS = ("step", "tokens", "flops", "train_loss", "lr", "tokens_per_second", "elapsed_s")


@dataclasses.dataclass
class TrainSettings:
    """The ``train`` config section."""

    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # auto (bf16 autocast on CUDA, fp32 on CPU) | bfloat16 | float32
    compile: bool = False
    threads: int | None = None  # torch CPU threads; None leaves torch's default
    window_mode: str = "pack"  # pack | pad (see ehrscale.data)
    batch_size: int | None = None  # rows per step; None: the rule below
    min_steps: int = 2000
    min_batch_size: int = 4
    max_batch_size: int = 256
    learning_rate: float | None = None  # peak LR; None: the rule below
    lr_base: float = 3e-3
    lr_ref_width: int = 64
    lr_width_exponent: float = 0.75
    warmup_fraction: float = 0.05
    final_lr_fraction: float = 0.1
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    val_windows: int = 256  # fixed validation windows from the tuning split
    val_batch_size: int = 32
    val_seed: int = 0
    log_every_steps: int = 50
    progress_seconds: float = 30.0
    checkpoint_minutes: float = 30.0
    checkpoint_every_steps: int | None = None
    peak_flops: float | None = None  # for MFU; None: looked up from the CUDA device name
    stop_after_steps: int | None = None  # test hook: send ourselves SIGTERM after this step


# Settings that change no result: left out of config_hash so a resume may alter them.
_UNHASHED = {"threads", "log_every_steps", "progress_seconds", "checkpoint_minutes", "checkpoint_every_steps",
             "stop_after_steps", "compile", "peak_flops"}


def batch_size_for(tokens: int, context_length: int, s: TrainSettings) -> int:
    if s.batch_size:
        return int(s.batch_size)
    raw = tokens / (context_length * max(1, s.min_steps))
    rows = 2 ** int(math.floor(math.log2(raw))) if raw >= 1 else 1
    return int(min(max(rows, s.min_batch_size), s.max_batch_size))


def learning_rate_for(d_model: int, s: TrainSettings) -> float:
    if s.learning_rate:
        return float(s.learning_rate)
    return float(s.lr_base * (s.lr_ref_width / d_model) ** s.lr_width_exponent)


def lr_at(progress: float, peak: float, warmup_fraction: float, final_fraction: float) -> float:
    """LR when a fraction ``progress`` of D is done: linear warmup, then cosine to final_fraction."""
    p = min(max(progress, 0.0), 1.0)
    if warmup_fraction > 0 and p < warmup_fraction:
        return peak * p / warmup_fraction
    t = (p - warmup_fraction) / max(1.0 - warmup_fraction, 1e-12)
    low = peak * final_fraction
    return low + 0.5 * (peak - low) * (1.0 + math.cos(math.pi * t))


def check_settings(s: TrainSettings) -> None:
    if s.window_mode not in ("pack", "pad"):
        raise EhrscaleError(f"train.window_mode must be 'pack' or 'pad', got {s.window_mode!r}")
    if s.dtype not in ("auto", "bfloat16", "float32"):
        raise EhrscaleError(f"train.dtype must be auto, bfloat16 or float32, got {s.dtype!r}")
    if not 0 <= s.warmup_fraction < 1:
        raise EhrscaleError("train.warmup_fraction must be in [0, 1)")
    if s.val_windows < 1 or s.val_batch_size < 1 or s.log_every_steps < 1:
        raise EhrscaleError("train.val_windows, train.val_batch_size and train.log_every_steps must be >= 1")


def _pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise EhrscaleError(f"train.device={name} but CUDA is not available")
    return dev


def config_hash(cell: Cell, cfg: GPTConfig, s: TrainSettings, stats: dict, device: str, dtype: str) -> str:
    """What a run's numbers depend on, including the device kind and precision actually used."""
    payload = {
        "cell": cell.as_dict(), "model": dataclasses.asdict(cfg), "device": device, "dtype": dtype,
        "train": {k: v for k, v in dataclasses.asdict(s).items() if k not in _UNHASHED},
        "tokens": {"vocab_size": stats.get("vocab_size"), "splits": stats.get("splits")},
    }
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


def train_cell(tokens_dir: str | Path, out_dir: str | Path, cell: Cell, model_settings: ModelSettings,
               settings: TrainSettings, stats: dict | None = None) -> int:
    """Train ``cell``; returns 0 when done, EXIT_PREEMPTED after a signal-triggered checkpoint."""
    check_settings(settings)
    s = settings
    tokens_dir, out = Path(tokens_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stats = stats if stats is not None else read_stats(tokens_dir)
    if s.threads:
        torch.set_num_threads(int(s.threads))
    device = _pick_device(s.device)
    use_bf16 = s.dtype == "bfloat16" or (s.dtype == "auto" and device.type == "cuda")
    dtype_name = "bfloat16" if use_bf16 else "float32"
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    ctx = model_settings.context_length
    cfg = GPTConfig.from_size({"n_layer": cell.n_layer, "d_model": cell.d_model, "n_head": cell.n_head,
                               "ffn_hidden": cell.ffn_hidden},
                              int(stats["vocab_size"]), model_settings)
    D = int(cell.tokens)
    batch_size = batch_size_for(D, ctx, s)
    peak_lr = learning_rate_for(cfg.d_model, s)
    fpt = flops_per_token(cfg)
    chash = config_hash(cell, cfg, s, stats, device.type, dtype_name)

    torch.manual_seed(s.seed)
    random.seed(s.seed)
    np.random.seed(s.seed % 2**32)
    model = GPT(cfg).to(device)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": s.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=peak_lr, betas=(s.beta1, s.beta2), fused=device.type == "cuda",
    )
    val_batches = fixed_validation_batches(tokens_dir, ctx, s)
    train_split = TokenSplit(tokens_dir / "train")
    stream = WindowStream(train_split, ctx, seed=s.seed, mode=s.window_mode)

    st: dict[str, Any] = {"step": 0, "tokens": 0, "epoch": 0, "row": 0, "elapsed": 0.0,
                          "loss_sum": 0.0, "loss_n": 0, "last_train_loss": float("nan"), "log": []}
    ckpt_path = out / "checkpoint.pt"
    ck = torch.load(ckpt_path, map_location="cpu", weights_only=False) if ckpt_path.exists() else {}
    if ckpt_path.exists() and ck.get("config_hash") != chash:
        # A changed config (or another device kind) means a different run: keep the old state
        # for inspection, and start this one afresh rather than fail on every retry.
        stale = ckpt_path.with_name(f"checkpoint.{ck.get('config_hash')}.pt")
        os.replace(ckpt_path, stale)
        print(f"[{cell.id}] {ckpt_path.name} is from another configuration (hash {ck.get('config_hash')} != "
              f"{chash}); moved to {stale.name}, starting afresh", file=sys.stderr, flush=True)
    if ckpt_path.exists():
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        st = ck["state"]
        torch.set_rng_state(ck["rng"]["torch"])
        if device.type == "cuda" and ck["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state_all(ck["rng"]["cuda"])
        np.random.set_state(ck["rng"]["numpy"])
        random.setstate(ck["rng"]["python"])
        print(f"[{cell.id}] resuming at step {st['step']}, {st['tokens']:,}/{D:,} tokens", file=sys.stderr, flush=True)

    def save_checkpoint() -> None:
        rng = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
               "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else None}
        with atomic_path(ckpt_path) as tmp:
            torch.save({"config_hash": chash, "model": model.state_dict(), "optimizer": opt.state_dict(),
                        "state": st, "rng": rng}, tmp)

    fwd = torch.compile(model) if s.compile else model
    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16)

    t_start = time.perf_counter()
    elapsed0, tokens0 = st["elapsed"], st["tokens"]
    last_ckpt = last_progress = t_start
    interval_t, interval_tokens = t_start, st["tokens"]
    loss_acc = torch.zeros((), device=device, dtype=torch.float64)  # token-weighted, since last log
    loss_acc += st["loss_sum"]
    loss_n = st["loss_n"]
    model.train()
    with _StopFlag() as stop:
        while st["tokens"] < D:
            batch, nxt_epoch, nxt_row = stream.next_batch(st["epoch"], st["row"], batch_size)
            n = batch.n_targets
            if st["tokens"] + n > D:  # last step: keep exactly D - tokens targets
                keep = D - st["tokens"]
                flat = batch.targets.view(-1)
                real = (flat != -100).nonzero().squeeze(1)
                flat[real[keep:]] = -100
                n = keep
            batch = batch.to(device)
            lr = lr_at((st["tokens"] + n) / D, peak_lr, s.warmup_fraction, s.final_lr_fraction)
            for g in opt.param_groups:
                g["lr"] = lr
            with autocast:
                _, loss = fwd(batch.inputs, batch.targets, batch.positions, batch.segments)
            loss.backward()
            if s.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
            loss_acc += loss.detach().double() * n
            loss_n += n
            st["step"] += 1
            st["tokens"] += n
            st["epoch"], st["row"] = nxt_epoch, nxt_row
            now = time.perf_counter()
            st["elapsed"] = elapsed0 + (now - t_start)
            done = st["tokens"] >= D
            log_due = st["step"] % s.log_every_steps == 0 or done
            progress_due = done or st["step"] == 1 or now - last_progress >= s.progress_seconds
            if log_due or progress_due:
                train_loss = loss_acc.item() / max(loss_n, 1)  # token-weighted mean since the last log row
                tps = (st["tokens"] - interval_tokens) / max(now - interval_t, 1e-9)
                if log_due:
                    st["log"].append({"step": st["step"], "tokens": st["tokens"], "flops": st["tokens"] * fpt,
                                      "train_loss": train_loss, "lr": lr, "tokens_per_second": tps,
                                      "elapsed_s": st["elapsed"]})
                    st["last_train_loss"] = train_loss
                    loss_acc.zero_()
                    loss_n = 0
                    interval_t, interval_tokens = now, st["tokens"]
                if progress_due:
                    avg_tps = (st["tokens"] - tokens0) / max(now - t_start, 1e-9)
                    eta = (D - st["tokens"]) / avg_tps if avg_tps > 0 else float("inf")
                    print(f"[{cell.id}] step {st['step']} tokens {st['tokens']:,}/{D:,} ({100 * st['tokens'] / D:.1f}%) "
                          f"loss {train_loss:.4f} lr {lr:.2e} {tps:,.0f} tok/s ETA {_fmt_eta(eta)}",
                          file=sys.stderr, flush=True)
                    last_progress = now
            if s.stop_after_steps is not None and st["step"] == s.stop_after_steps and not done:
                os.kill(os.getpid(), signal.SIGTERM)  # same path as a scheduler's preemption signal
            if done:
                break
            if stop.signum is not None or (s.checkpoint_every_steps and st["step"] % s.checkpoint_every_steps == 0) \
                    or now - last_ckpt >= s.checkpoint_minutes * 60:
                st["loss_sum"], st["loss_n"] = loss_acc.item(), loss_n
                save_checkpoint()
                last_ckpt = time.perf_counter()
                if stop.signum is not None:
                    print(f"[{cell.id}] signal {stop.signum}: checkpoint saved at step {st['step']}; exit {EXIT_PREEMPTED}",
                          file=sys.stderr, flush=True)
                    return EXIT_PREEMPTED

    val_loss = evaluate(model, val_batches, device, use_bf16)
    wall = st["elapsed"]
    tps = st["tokens"] / max(wall, 1e-9)
    peak = s.peak_flops or (peak_flops_for(torch.cuda.get_device_name(device)) if device.type == "cuda" else None)
    metrics = {
        "cell": cell.id, "size": cell.size, "budget": cell.budget, "n_params": cell.n_params,
        "n_params_nonembedding": cell.n_params_nonembedding, "tokens": st["tokens"], "flops": st["tokens"] * fpt,
        "flops_per_token": fpt, "val_loss": val_loss, "train_loss": st["last_train_loss"],
        "epochs": st["tokens"] / train_split.n_targets, "wall_seconds": wall, "tokens_per_second": tps,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else device.type,
        "dtype": dtype_name, "mfu": mfu(cfg, tps, peak) if device.type == "cuda" else None,
        "config_hash": chash, "seed": s.seed, "context_length": ctx, "batch_size": batch_size,
        "learning_rate": peak_lr,
    }
    with atomic_path(out / "model.pt") as tmp:
        torch.save({"config": dataclasses.asdict(cfg), "state_dict": model.state_dict(), "cell": cell.as_dict()}, tmp)
    with atomic_path(out / "log.csv") as tmp:
        with open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=LOG_COLUMNS)
            w.writeheader()
            w.writerows(st["log"])
    write_json(out / "metrics.json", metrics)
    ckpt_path.unlink(missing_ok=True)
    print(f"[{cell.id}] done: val_loss {val_loss:.4f} train_loss {st['last_train_loss']:.4f} "
          f"{tps:,.0f} tok/s {wall:.0f}s", file=sys.stderr, flush=True)
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


# ---------------------------------------------------------------------------- CLI


def add_arguments(parser) -> None:
    parser.add_argument("--tokens", required=True, help="the tokenizer's output directory (stats.json, train/, tuning/)")
    parser.add_argument("--out", required=True, help="run directory: metrics.json, model.pt, log.csv, checkpoint.pt")
    parser.add_argument("--cell", required=True, help="cell id from 'ehrscale plan', e.g. C3e11_d32L2")
    parser.add_argument("--config", help="config YAML; its model_sizes/grid/model/train sections are the defaults")
    parser.add_argument("--sizes", help="model_sizes: JSON ladder, or 'default' / 'debug'")
    parser.add_argument("--grid", help="grid section as JSON (or @file.json)")
    parser.add_argument("--model", help="model section as JSON (or @file.json)")
    parser.add_argument("--settings", help="train section as JSON (or @file.json)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (overrides settings)")


def _section(arg: str | None, config: dict, key: str):
    if arg is not None:
        if arg.startswith("@"):
            return json.loads(Path(arg[1:]).read_text())
        try:
            return json.loads(arg)
        except json.JSONDecodeError as err:
            raise EhrscaleError(f"--{key} is not valid JSON: {err}") from err
    return config.get(key)


def run(args) -> int:
    config = load_config(args.config) if args.config else {}
    sizes_raw = args.sizes if args.sizes in ("default", "debug") else _section(args.sizes, config, "model_sizes")
    sizes = resolve_sizes(sizes_raw)
    grid = load_settings(GridSettings, _section(args.grid, config, "grid"), "grid")
    model = load_settings(ModelSettings, _section(args.model, config, "model"), "model")
    settings = load_settings(TrainSettings, _section(args.settings, config, "train"), "train")
    if args.threads is not None:
        settings.threads = args.threads
    check_settings(settings)
    stats = read_stats(args.tokens)
    cell = find_cell(args.cell, sizes, grid, int(stats["vocab_size"]), model.context_length,
                     target_tokens_from_stats(stats, "train"), model)
    return train_cell(args.tokens, args.out, cell, model, settings, stats)
