"""The thin shell of the check cache (`api/check_cache.py`): one LISTEN connection to Postgres.

`CheckFeed.run` connects (a connection of its own, outside the pool: LISTEN is session state),
LISTENs on `entitled_access` (migration 0012), then opens the cache; every notification goes to
`CheckCache.apply`. When the connection is lost (its termination, or a heartbeat that fails or
takes too long: a silent network cut sends no FIN), the cache is closed at once, so every
check reads Postgres again (and gets 503 when Postgres is down, as without a cache), and the
feed reconnects with backoff; the cache reopens empty.

`caught_up()` is asked before each cached answer: it peeks at the LISTEN socket (one
non-blocking `recv(MSG_PEEK)`, ~1 µs). Bytes not yet read there may be a notification this
process has not applied yet, and an end of stream is a connection lost whose loss the event loop
has not processed yet (Postgres stopped, the network cut a moment ago): either way that check
reads Postgres instead, so the cache never answers from behind what this host has received.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import socket

import asyncpg
import structlog

from api import metrics
from api.check_cache import CheckCache, parse_change

log = structlog.get_logger(__name__)

CHANNEL = "entitled_access"
# How the connection shows in pg_stat_activity (an operator looking for it, the tests killing it).
APPLICATION_NAME = "entitled-api-check-feed"
# A lost connection that Postgres did not close (a network cut) is found within
# HEARTBEAT_S + HEARTBEAT_TIMEOUT_S; until then the cap (API_CHECK_CACHE_TTL) still bounds an answer.
HEARTBEAT_S = 1.0
HEARTBEAT_TIMEOUT_S = 1.0
CONNECT_TIMEOUT_S = 5.0
RETRY_FIRST_S, RETRY_MAX_S = 0.2, 5.0

_Errors = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


class CheckFeed:
    """Keeps `cache` usable exactly while a LISTEN on `entitled_access` is in place."""

    def __init__(self, cache: CheckCache, database_url: str) -> None:
        self.cache = cache
        self.database_url = database_url
        self._task: asyncio.Task[None] | None = None
        self._probe: socket.socket | None = None  # a duplicate of the LISTEN socket, to peek with

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="check-feed")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.cache.close()

    def caught_up(self) -> bool:
        """Nothing unread on a live LISTEN socket (see the module's doc)."""
        probe = self._probe
        if probe is None:
            return False
        try:
            probe.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return True  # nothing to read: every notification received was applied
        except OSError:
            return False  # reset
        return False  # unread bytes, or the end of the stream

    def _notified(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        dropped = self.cache.apply(parse_change(payload))
        metrics.CHECK_CACHE_DROPS.inc(dropped)

    async def run(self) -> None:
        backoff = RETRY_FIRST_S
        while True:
            lost = asyncio.Event()
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(self.database_url, timeout=CONNECT_TIMEOUT_S,
                                             server_settings={"application_name": APPLICATION_NAME})
                conn.add_termination_listener(functools.partial(self._terminated, lost))
                await conn.add_listener(CHANNEL, self._notified)  # LISTEN, acknowledged
                self._probe = _duplicate_socket(conn)
                self.cache.open()
                metrics.CHECK_CACHE_UP.set(1)
                log.info("api.check_cache_listening")
                backoff = RETRY_FIRST_S
                while True:
                    try:
                        await asyncio.wait_for(lost.wait(), HEARTBEAT_S)
                    except TimeoutError:
                        await conn.fetchval("SELECT 1", timeout=HEARTBEAT_TIMEOUT_S)
                        continue
                    raise ConnectionError("the LISTEN connection was closed")
            except (*_Errors, ConnectionError) as exc:
                self._lost(lost)
                log.warning("api.check_cache_bypassed", error=type(exc).__name__, retry_in_s=backoff)
            finally:
                self._lost(lost)
                if self._probe is not None:
                    self._probe.close()
                    self._probe = None
                if conn is not None:
                    conn.terminate()  # no goodbye round trip to a connection that may be dead
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, RETRY_MAX_S)

    def _terminated(self, lost: asyncio.Event, _conn: object) -> None:
        self._lost(lost)

    def _lost(self, lost: asyncio.Event) -> None:
        """Once per connection: a late call for an old connection must not close the cache a
        newer one opened."""
        if lost.is_set():
            return
        lost.set()
        self.cache.close()
        metrics.CHECK_CACHE_UP.set(0)


def _duplicate_socket(conn: asyncpg.Connection) -> socket.socket | None:
    """A socket object of our own on the connection's socket (asyncpg exposes its transport only
    as `_transport`); closing it leaves asyncpg's alone. None: no socket to peek at (then the
    cache is never used)."""
    raw = conn._transport.get_extra_info("socket")
    if raw is None:
        return None
    return socket.socket(fileno=os.dup(raw.fileno()))
