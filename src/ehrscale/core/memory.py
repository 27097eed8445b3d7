"""A job's memory budget, enforced by the stage itself: a clear error instead of the kernel's OOM kill.

The workflow gives each data job its ``mem_mb`` in ``EHRSCALE_MEM_MB``. :class:`MemoryGuard`
samples the memory of this process and its children that the kernel cannot reclaim (anonymous
resident memory: RSS less file-backed pages, so the memory-mapped token store's page cache,
which the kernel drops under pressure, does not count); past :data:`TRIGGER` of the budget it
interrupts the main thread, so the stage stops through its normal error path (an atomic output
is discarded, never left partial) and the CLI names the budget and how to raise it. A stage in
native code that ignores the interrupt is ended with the same message as soon as it reaches the
budget itself, or after :data:`GRACE_S`.
"""

from __future__ import annotations

import _thread
import os
import sys
import threading

import psutil

from ehrscale.core.errors import EhrscaleError

ENV = "EHRSCALE_MEM_MB"
TRIGGER = 0.95  # a sampler sees a peak late: stop a little under the budget, not at it
INTERVAL_S = 0.1
GRACE_S = 20.0


def tree_memory(process: psutil.Process) -> tuple[int, int]:
    """(anonymous, resident) bytes of a process and all its children. Anonymous memory is what a job's
    limit cannot take back; resident adds mapped file pages (page cache, reclaimable)."""
    anon = rss = 0
    for p in [process, *process.children(recursive=True)]:
        try:
            m = p.memory_info()
        except psutil.Error:  # a child that has just exited
            continue
        anon += m.rss - m.shared
        rss += m.rss
    return anon, rss


def budget_mb_from_env() -> int | None:
    value = os.environ.get(ENV)
    if not value:
        return None
    try:
        mb = int(value)
    except ValueError:
        mb = 0
    if mb <= 0:
        raise EhrscaleError(f"{ENV} must be a positive whole number of MB, got {value!r}")
    return mb


class MemoryGuard:
    """While running, stops this stage when its process tree's anonymous memory passes ``TRIGGER * budget_mb``."""

    def __init__(self, budget_mb: int, what: str):
        self.budget_mb, self.what = budget_mb, what
        self.exceeded_mb: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="memory-guard", daemon=True)

    def message(self) -> str:
        return (f"{self.what} used {self.exceeded_mb:.0f} MB (anonymous memory), over {TRIGGER:.0%} of its memory budget of "
                f"{self.budget_mb} MB ({ENV}, the rule's mem_mb); nothing was written. Give the job more "
                f"(snakemake --set-resources <rule>:mem_mb=...) or lower the stage's own sizes "
                "(extract.subjects_per_shard, tokenize.chunk_rows)")

    def _watch(self) -> None:
        me = psutil.Process()
        budget = self.budget_mb * 2**20
        while not self._stop.wait(INTERVAL_S):
            used = tree_memory(me)[0]
            if used > TRIGGER * budget:
                self.exceeded_mb = used / 2**20
                _thread.interrupt_main()
                break
        else:
            return
        deadline = GRACE_S
        while not self._stop.wait(INTERVAL_S):  # the main thread is unwinding, or stuck in native code
            deadline -= INTERVAL_S
            if deadline <= 0 or tree_memory(me)[0] >= budget:
                print(f"ehrscale: error: {self.message()}", file=sys.stderr, flush=True)
                os._exit(3)

    def __enter__(self) -> "MemoryGuard":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
