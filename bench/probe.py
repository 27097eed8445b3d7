"""Probe-stage cost per cell, phase by phase, in CPU seconds (this process's, or a child's).

For each trained cell: the startup of ``ehrscale embed`` and ``ehrscale probe`` (a fresh
interpreter importing the command's module), reading and capping the labels, planning the
windows, the forward passes, and the probe fit (logistic regressions over the C grid, then the
bootstrap). The forward passes are timed two ways on the same batches, alternating batch by
batch so load from other processes hits both alike: the whole model at every position
(``hidden_states``, the baseline) and the last block only where read (``hidden_states_at``,
what ``ehrscale embed`` runs); their largest difference is printed too.

    python bench/probe.py --tokens results/synthetic/tokens --labels results/synthetic/labels/*.parquet \\
        --model results/synthetic/runs/<cell>/model.pt [more cells] [--settings '{"max_train_examples": 3000}']
"""

from __future__ import annotations

import os
import sys

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # as the probe rules run, before numpy
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402


def child_cpu(code: str) -> float:
    """CPU seconds (user + system) of a fresh interpreter running ``code``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-c", code], check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def forward_both(model, split, windows, n_rows: int, batch_tokens: int, full: bool = True) -> tuple[np.ndarray, dict]:
    """The embeddings (read-positions-only forward) and the CPU seconds of both forwards, on the same batches."""
    from ehrscale.tokens.vocab import STATIC_PREFIX_LEN

    lengths = np.array([STATIC_PREFIX_LEN + e - c for _, c, e, _, _ in windows], np.int64)
    order = np.argsort(-lengths, kind="stable")
    cpu = {"full": 0.0, "read_only": 0.0}
    x = np.zeros((n_rows, model.cfg.d_model), np.float32)
    done, worst = 0, 0.0
    with torch.inference_mode():
        while done < len(order):
            L = int(lengths[order[done]])
            batch = order[done : done + max(1, batch_tokens // L)]
            ids = np.zeros((len(batch), L), np.int64)
            rows, cols, uids = [], [], []
            for r, w in enumerate(batch.tolist()):
                a, c, e, u, pos = windows[w]
                uids.append(u)
                seq = np.concatenate([np.asarray(split.tokens[a : a + STATIC_PREFIX_LEN]), np.asarray(split.tokens[c:e])])
                ids[r, : len(seq)] = seq
                rows.append(np.full(len(pos), r))
                cols.append(pos)
            idx = torch.from_numpy(ids)
            rows_t, cols_t = torch.from_numpy(np.concatenate(rows)), torch.from_numpy(np.concatenate(cols).astype(np.int64))
            t = time.process_time()
            read = model.hidden_states_at(idx, rows_t, cols_t)
            cpu["read_only"] += time.process_time() - t
            if full:
                t = time.process_time()
                every = model.hidden_states(idx)[rows_t, cols_t]
                cpu["full"] += time.process_time() - t
                worst = max(worst, float((every - read).abs().max()))
            x[np.concatenate(uids)] = read.numpy()
            done += len(batch)
    return x, cpu | {"max_abs_diff": worst}


def fit_phases(x: np.ndarray, tasks: dict, settings) -> dict:
    """CPU seconds of the logistic regressions (all C, all tasks) and of the bootstraps."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from ehrscale.probe.metrics import binary_metrics

    cpu = {"lr": 0.0, "bootstrap": 0.0}
    for df in tasks.values():
        parts = {s: df[df["split"] == s] for s in ("train", "tuning", "held_out")}
        X = {s: x[d["uid"].to_numpy()] for s, d in parts.items()}
        y = {s: d["label"].to_numpy(bool) for s, d in parts.items()}
        scaler = StandardScaler()
        xtr, xte = scaler.fit_transform(X["train"]), scaler.transform(X["held_out"])
        t = time.process_time()
        for c in settings.c_values:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                model = LogisticRegression(C=float(c), max_iter=settings.max_iter).fit(xtr, y["train"])
            model.predict_proba(scaler.transform(X["tuning"]))
        cpu["lr"] += time.process_time() - t
        t = time.process_time()
        binary_metrics(y["held_out"], model.predict_proba(xte)[:, 1], settings.bootstrap, settings.seed, settings.ci_level)
        cpu["bootstrap"] += time.process_time() - t
    return cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", nargs="+", required=True)
    ap.add_argument("--tokens", required=True)
    ap.add_argument("--labels", nargs="+", required=True)
    ap.add_argument("--settings", default="{}", help="probe settings (JSON) over the defaults")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-full", action="store_true", help="skip the full-forward baseline")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from ehrscale.extract.splits import SPLITS
    from ehrscale.model.gpt import load_model
    from ehrscale.probe.embed import plan_windows
    from ehrscale.probe.examples import probe_examples
    from ehrscale.probe.settings import ProbeSettings
    from ehrscale.tokens.store import TokenSplit
    from ehrscale.tokens.vocab import STATIC_PREFIX_LEN

    settings = ProbeSettings(**json.loads(args.settings))
    startup = {cmd: child_cpu(f"import ehrscale.probe.{mod}") for cmd, mod in (("embed", "embed"), ("probe", "linear"))}
    print(f"startup CPU s: ehrscale embed {startup['embed']:.2f}, ehrscale probe {startup['probe']:.2f}")
    t = time.process_time()
    labels = {Path(p).stem: p for p in args.labels}
    allx = pd.concat([probe_examples(p, args.tokens, settings).assign(task=k) for k, p in labels.items()], ignore_index=True)
    read_s = time.process_time() - t
    print(f"read labels + caps {read_s:.2f} s; settings {json.dumps(dataclass_dict(settings))}")
    for model_path in args.model:
        model, ck = load_model(model_path)
        model.eval()
        row = {"cell": (ck.get("cell") or {}).get("id"), "n_params": sum(p.numel() for p in model.parameters())}
        plan_s, fwd, n_ex, n_uniq, n_tok, worst = 0.0, {"full": 0.0, "read_only": 0.0}, 0, 0, 0, 0.0
        x_parts, offset, uid = [], 0, np.full(len(allx), -1)
        for split in SPLITS:
            part = allx[allx["split"] == split]
            st = TokenSplit(Path(args.tokens) / split)
            part = part.assign(index=st.index_of(part["subject_id"].to_numpy()), orig=part.index)
            t = time.process_time()
            ex, windows = plan_windows(st, part, model.cfg.context_length)
            plan_s += time.process_time() - t
            x, f = forward_both(model, st, windows, int(ex["uid"].max()) + 1, settings.batch_tokens, not args.no_full)
            fwd = {k: fwd[k] + f[k] for k in fwd}
            worst = max(worst, f["max_abs_diff"])
            n_ex += len(part)
            n_uniq += int(ex["uid"].max()) + 1
            n_tok += int(sum(STATIC_PREFIX_LEN + e - c for _, c, e, _, _ in windows))
            uid[ex["orig"].to_numpy()] = ex["uid"].to_numpy() + offset
            offset += x.shape[0]
            x_parts.append(x)
        x = np.concatenate(x_parts)
        tasks = {k: allx[allx["task"] == k].assign(uid=uid[(allx["task"] == k).to_numpy()]) for k in labels}
        fit = fit_phases(x, tasks, settings)
        row |= {"examples": n_ex, "unique": n_uniq, "tokens": n_tok, "plan_s": round(plan_s, 2),
                "forward_full_s": round(fwd["full"], 2), "forward_read_only_s": round(fwd["read_only"], 2),
                "speedup": round(fwd["full"] / fwd["read_only"], 2) if fwd["full"] else None, "max_abs_diff": f"{worst:.1e}",
                "fit_lr_s": round(fit["lr"], 2), "fit_bootstrap_s": round(fit["bootstrap"], 2),
                "embed_total_s": round(startup["embed"] + read_s + plan_s + fwd["read_only"], 1),
                "fit_total_s": round(startup["probe"] + fit["lr"] + fit["bootstrap"], 1)}
        print(json.dumps(row))


def dataclass_dict(obj) -> dict:
    import dataclasses

    return {k: v for k, v in dataclasses.asdict(obj).items() if k in ("max_train_examples", "max_tuning_examples", "bootstrap", "batch_tokens")}


if __name__ == "__main__":
    main()
