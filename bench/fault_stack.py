"""The fault run's own servers and processes: a Postgres cluster, a Redis, ingest and workers.

Everything here belongs to one run and lives under one temporary folder, so that the run can
stop, kill and restart any of it without touching the machine's shared Postgres or Redis.

- `PgServer`: a throw-away cluster from the system's `initdb`/`pg_ctl` (run as the `postgres`
  user when we are root, since Postgres refuses to run as root), on a free loopback port.
- `RedisServer` (shared/embedded.py) with an append-only file, so that a restart keeps the
  queue, the coordination state and the `access-changed` stream, as a production Redis must.
- `Processes`: `python -m ingest` and N `python -m worker`, each logging JSON to its own file;
  workers can be SIGKILLed and restarted, and any that exits on its own is restarted too (as
  a process manager would) and counted.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from shared.embedded import free_port


class StackError(RuntimeError):
    """A server of the fault run could not be started or stopped; the message says why."""


def _pg_bin() -> Path:
    """The folder of `pg_ctl`: `PG_BIN`, the newest /usr/lib/postgresql/*/bin, or PATH."""
    if env := os.environ.get("PG_BIN"):
        return Path(env)
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name))
    if found:
        return Path(found[-1])
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl is None:
        raise StackError("no pg_ctl found: install Postgres or set PG_BIN")
    return Path(pg_ctl).resolve().parent


class PgServer:
    """A Postgres cluster of our own on 127.0.0.1:`port`, data under `root`."""

    def __init__(self, root: Path, port: int | None = None) -> None:
        self.root = root / "pg"
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.port = port or free_port()
        self.bin = _pg_bin()
        # Postgres refuses to run as root; the system's `postgres` user runs it then.
        self.user = "postgres" if os.geteuid() == 0 else None

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str, timeout_s: float = 60.0) -> None:
        result = subprocess.run([str(self.bin / args[0]), *args[1:]], user=self.user, capture_output=True,
                                text=True, timeout=timeout_s, check=False)
        if result.returncode != 0:
            raise StackError(f"{args[0]} failed ({result.returncode}): {result.stderr.strip()[-800:]}")

    def init(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if self.user is not None:
            # the postgres user must reach its folder through ours
            for folder in (self.root.parent, self.root):
                folder.chmod(0o755)
            shutil.chown(self.root, self.user, self.user)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")

    def start(self) -> None:
        # No fsync: a fast, clean shutdown loses nothing, and the machine is shared.
        options = (f"-p {self.port} -h 127.0.0.1 -k {self.data} -c max_connections=300 -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60", "start")

    def stop(self) -> None:
        """A fast shutdown: open connections are cut, committed data is kept."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")

    def close(self) -> None:
        with contextlib.suppress(StackError, subprocess.TimeoutExpired):
            self.stop()


@dataclass
class WorkerSlot:
    """One worker process position; its process is replaced on kill or exit. While `proc`
    is None the slot is held down on purpose (killed, to be restarted by whoever killed it)."""

    slot: int
    proc: subprocess.Popen[bytes] | None = None
    generation: int = 0


@dataclass
class Processes:
    """ingest and the workers, as subprocesses of this run."""

    log_dir: Path
    ingest_env: dict[str, str]
    worker_env: dict[str, str]
    ingest: subprocess.Popen[bytes] | None = None
    workers: list[WorkerSlot] = field(default_factory=list)
    kills: int = 0
    # processes that exited without being killed by us: "<log file>: exit <code>"
    unexpected_exits: list[str] = field(default_factory=list)

    def _spawn(self, module: str, env: dict[str, str], log_name: str) -> subprocess.Popen[bytes]:
        log = open(self.log_dir / log_name, "ab")  # noqa: SIM115 - the child owns it
        try:
            return subprocess.Popen([sys.executable, "-m", module], env={**os.environ, **env},
                                    stdout=log, stderr=log)
        finally:
            log.close()

    def start_ingest(self) -> None:
        self.ingest = self._spawn("ingest", self.ingest_env, "ingest.log")

    def start_workers(self, n: int) -> None:
        self.workers = [WorkerSlot(i) for i in range(n)]
        for slot in self.workers:
            self.start_worker(slot)

    def start_worker(self, slot: WorkerSlot) -> None:
        slot.generation += 1
        slot.proc = self._spawn("worker", self.worker_env, f"worker-{slot.slot}-{slot.generation}.log")

    def kill_worker(self, slot: WorkerSlot) -> None:
        """SIGKILL: no shutdown hook runs, its leases and in-flight jobs are left behind."""
        if slot.proc is not None and slot.proc.poll() is None:
            slot.proc.send_signal(signal.SIGKILL)
            slot.proc.wait()
            self.kills += 1
        slot.proc = None

    def supervise(self) -> int:
        """What a process manager does: restart any process that exited on its own (not one
        held down after a kill). Returns how many were restarted."""
        started = 0
        for slot in self.workers:
            if slot.proc is not None and slot.proc.poll() is not None:
                self.unexpected_exits.append(f"worker-{slot.slot}-{slot.generation}.log: exit {slot.proc.returncode}")
                self.start_worker(slot)
                started += 1
        if self.ingest is not None and self.ingest.poll() is not None:
            self.unexpected_exits.append(f"ingest.log: exit {self.ingest.returncode}")
            self.start_ingest()
            started += 1
        return started

    def start_held(self) -> None:
        """Start every slot held down after a kill."""
        for slot in self.workers:
            if slot.proc is None:
                self.start_worker(slot)

    def alive(self) -> int:
        return sum(1 for s in self.workers if s.proc is not None and s.proc.poll() is None)

    def stop_all(self) -> None:
        procs = [s.proc for s in self.workers if s.proc is not None]
        if self.ingest is not None:
            procs.append(self.ingest)
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 15
        for proc in procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def worker_log_files(self) -> list[Path]:
        return sorted(self.log_dir.glob("worker-*.log"))
