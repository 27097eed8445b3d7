"""A throwaway single-node SLURM cluster on localhost, for tests (root only).

Debian's SLURM 22.05 (``slurmctld slurmd slurm-client munge``) is installed with apt-get
when missing. The configuration goes where every SLURM command looks, /etc/slurm (the
jobstep plugin drops ``SLURM_CONF`` from a job's environment, so srun inside a job needs
it there), and is removed on stop; a slurm.conf this module did not write is never
touched. State and logs live in a temporary directory. Four count-only fake GPUs (character devices that are
copies of /dev/null) make ``--gpus`` requests schedulable on a machine without GPUs.

Settings the plugin needs on a cluster without accounting (measured, SLURM 22.05):
``MinJobAge`` >= 120 so ``squeue`` still lists finished jobs when Snakemake asks (3600 here,
so the test can read every job of the run);
``DefMemPerCPU`` so a job without ``--mem`` does not take the whole node.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

ETC = Path("/etc/slurm")
MARK = "written by ehrscale tests/slurm_cluster.py"
PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]
FAKE_GPUS = [Path(f"/dev/fakegpu{i}") for i in range(4)]
CPUS = 8  # declared, not real: extract asks for 8 threads; memory (16000 MB) limits concurrency

SLURM_CONF = """\
# written by ehrscale tests/slurm_cluster.py
ClusterName=ehrscale-test
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SlurmdParameters=config_overrides
GresTypes=gpu
MinJobAge=3600
JobRequeue=1
KillWait=30
ReturnToService=2
SchedulerParameters=sched_interval=2
MessageTimeout=20
DefMemPerCPU=500
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
NodeName=localhost CPUs={cpus} RealMemory=16000 Gres=gpu:{gpus} State=UNKNOWN
PartitionName=test Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


def _run(cmd: list[str], timeout: float = 30, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def install() -> None:
    """apt-get install SLURM and munge unless they are there (about 15-25 s)."""
    if all(shutil.which(tool) for tool in ("slurmctld", "slurmd", "sbatch", "munged")):
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    _run(["apt-get", "update", "-qq"], timeout=300, env=env, check=True)
    _run(["apt-get", "install", "-y", "-qq", *PACKAGES], timeout=600, env=env, check=True)


class Cluster:
    """Start with :meth:`start`, stop with :meth:`stop` (always: it kills only what it started)."""

    def __init__(self, root: Path):
        self.root = root
        self.conf = ETC / "slurm.conf"
        self.env = dict(os.environ)
        self._procs: list[subprocess.Popen] = []
        self._made: list[Path] = []

    def start(self, timeout: float = 60) -> None:
        for d in ("state", "spool"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        for i, dev in enumerate(FAKE_GPUS):
            if not dev.exists():
                os.mknod(dev, 0o666 | 0o020000, os.makedev(1, 3))  # a character device like /dev/null
                self._made.append(dev)
        if self.conf.exists() and MARK not in self.conf.read_text():
            raise RuntimeError(f"{self.conf} exists and is not ours: refusing to start a test cluster here")
        ETC.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(SLURM_CONF.format(root=self.root, cpus=CPUS, gpus=len(FAKE_GPUS),
                                               ctld_port=_free_port(), d_port=_free_port()))
        (ETC / "gres.conf").write_text(f"# {MARK}\n" + f"Name=gpu File=/dev/fakegpu[0-{len(FAKE_GPUS) - 1}]\n")
        if _run(["munge", "-n"], timeout=10).returncode != 0:  # no munged running yet: start ours
            Path("/run/munge").mkdir(parents=True, exist_ok=True)
            shutil.chown("/run/munge", "munge", "munge")
            self._spawn(["runuser", "-u", "munge", "--", "munged", "--foreground"])
            self._wait(lambda: _run(["munge", "-n"], timeout=10).returncode == 0, timeout, "munged")
        self._spawn(["slurmctld", "-D", "-i"])
        self._spawn(["slurmd", "-D", "-N", "localhost"])
        self._wait(self._node_idle, timeout, "the node to become idle")

    def _spawn(self, cmd: list[str]) -> None:
        name = next(part for part in cmd if part in ("munged", "slurmctld", "slurmd"))
        log = open(self.root / f"{name}.out", "w")
        self._procs.append(subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True))

    def _node_idle(self) -> bool:
        try:
            out = _run(["sinfo", "-h", "-N", "-o", "%T"], timeout=10, env=self.env).stdout
        except subprocess.TimeoutExpired:
            return False
        return out.strip().startswith("idle")

    def _wait(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready():
                return
            for proc in self._procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"{proc.args[0]} exited ({proc.returncode}) while waiting for {what}:\n{self.logs()}")
            time.sleep(0.5)
        raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}:\n{self.logs()}")

    def logs(self) -> str:
        parts = []
        for name in ("slurmctld.log", "slurmd.log"):
            path = self.root / name
            if path.exists():
                parts.append(f"--- {name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-30:]))
        return "\n".join(parts)

    def scontrol(self, *args: str, timeout: float = 20) -> str:
        result = _run(["scontrol", *args], timeout=timeout, env=self.env)
        if result.returncode != 0:
            raise RuntimeError(f"scontrol {' '.join(args)} failed: {result.stderr}")
        return result.stdout

    def stop(self) -> None:
        """Cancel every job, then stop the daemons this object started (newest first)."""
        with contextlib.suppress(Exception):
            _run(["scancel", "--user", "root"], timeout=10, env=self.env)
            # slurmd's job steps outlive slurmd: wait until it has ended them (KillWait, then SIGKILL).
            deadline = time.monotonic() + 45
            while time.monotonic() < deadline and _run(["squeue", "-h", "-t", "RUNNING,COMPLETING,CONFIGURING"],
                                                       timeout=10, env=self.env).stdout.strip():
                time.sleep(1)
        for proc in reversed(self._procs):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=5)
        self._procs.clear()
        for name in ("slurm.conf", "gres.conf"):
            path = ETC / name
            if path.exists() and MARK in path.read_text():
                path.unlink()
        for dev in self._made:
            dev.unlink(missing_ok=True)
        self._made.clear()
