"""Auto-pipelining of one Lua script: concurrent calls share one Redis round trip.

Under load the receiver makes hundreds of `accept` calls at once; sending each as its own
EVALSHA costs a round trip and redis-py's per-command overhead every time. Calls that arrive
while a batch is in flight wait for the next one and go together in one write. An idle
receiver sends each call alone, at once, so this adds no latency. Each caller still gets its
own result only after Redis has executed its script, so "answer 200 only once the event is in
Redis" holds.

What it costs per call is kept small (docs/benchmarks.md, "Receiver profile"):

- The script's constant keys and arguments (`fixed_keys`, `fixed_args`: key names and limits
  that are the same for every call) are encoded once, here, not on every call; a call's own
  keys and arguments are encoded by its caller, so a value that cannot be encoded fails only
  that call. The command is `EVALSHA sha numkeys *keys *fixed_keys *fixed_args *args`.
- A batch is one write of the calls' bytes joined, read back with redis-py's parser on one
  connection the batcher keeps (taken from the client's pool, so the client's `aclose` closes
  it), instead of a redis-py pipeline that packs every argument again.
- `timeout_s` bounds each call (enqueued to answered) with one timer per batch: a batch's
  deadline is its oldest call's, so no call waits longer than its own bound. It also bounds
  every read of the batcher's connection, so that connection has no socket timeout of its own
  (a timer per reply, per event, again). A call that times out may still have run, as with any
  client-side timeout; the connection is dropped, so no late reply is taken for another call's.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence

import redis.exceptions
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection

Arg = str | bytes | int
# the call's packed command, its future, and the loop time it was enqueued at
Call = tuple[bytes, "asyncio.Future[object]", float]


def bulk(value: Arg) -> bytes:
    """One RESP bulk string (what redis-py's encoder sends for a str, bytes or int argument)."""
    data = value.encode() if isinstance(value, str) else b"%d" % value if isinstance(value, int) else value
    return b"$%d\r\n%b\r\n" % (len(data), data)


class ScriptBatcher:
    def __init__(self, redis: Redis, source: str, *, fixed_keys: Sequence[Arg] = (), fixed_args: Sequence[Arg] = (),
                 max_batch: int = 256, timeout_s: float | None = None) -> None:
        self.redis = redis
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()  # Redis names scripts by SHA-1
        self.max_batch = max_batch
        self.timeout_s = timeout_s
        self._fixed_keys = len(fixed_keys)
        self._fixed_count = len(fixed_keys) + len(fixed_args)
        self._fixed = b"".join(bulk(v) for v in (*fixed_keys, *fixed_args))
        self._heads: dict[tuple[int, int], bytes] = {}  # (keys, args) of a call -> its command's head
        self._queue: list[Call] = []
        self._flushing = False
        self._flusher: asyncio.Task[None] | None = None  # a reference, so the task is not collected
        self._conn: AbstractConnection | None = None

    def pack(self, keys: Sequence[Arg], args: Sequence[Arg]) -> bytes:
        """The EVALSHA of one call, in RESP."""
        head = self._heads.get((len(keys), len(args)))
        if head is None:
            numkeys = len(keys) + self._fixed_keys
            head = (b"*%d\r\n" % (3 + len(keys) + self._fixed_count + len(args))
                    + bulk("EVALSHA") + bulk(self.sha) + bulk(numkeys))
            self._heads[(len(keys), len(args))] = head
        return b"".join([head, *map(bulk, keys), self._fixed, *map(bulk, args)])

    async def __call__(self, keys: Sequence[Arg], args: Sequence[Arg]) -> object:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[object] = loop.create_future()
        self._queue.append((self.pack(keys, args), future, loop.time()))
        if not self._flushing:
            self._flushing = True
            self._flusher = loop.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
                deadline = None if self.timeout_s is None else batch[0][2] + self.timeout_s  # oldest first
                try:
                    async with asyncio.timeout_at(deadline):
                        await self._send(batch)
                except Exception as exc:
                    for _, future, _ in batch:
                        if not future.done():
                            future.set_exception(exc)
        finally:
            self._flushing = False

    async def _send(self, batch: list[Call]) -> None:
        """Run the batch and answer each call as its reply is read."""
        missing = await self._run(batch)
        if missing:
            # Redis restarted (or never saw the script): load it, and run those calls again. The
            # calls that failed with NOSCRIPT did nothing, and no call here ran twice.
            await self.redis.script_load(self.source)
            await self._run(missing, again=True)

    async def _run(self, batch: list[Call], *, again: bool = False) -> list[Call]:
        """Send the batch in one write and read its replies; the calls that met NOSCRIPT (only
        on the first try: a second one is answered with the error)."""
        conn = await self._connection()
        missing: list[Call] = []
        try:
            await conn.send_packed_command(b"".join([call[0] for call in batch]))
            for call in batch:
                future = call[1]
                try:
                    reply = await conn.read_response()
                except redis.exceptions.NoScriptError as exc:
                    if not again:
                        missing.append(call)
                    elif not future.done():
                        future.set_exception(exc)
                except redis.exceptions.ResponseError as exc:  # the script's own error: this call's
                    if not future.done():
                        future.set_exception(exc)
                else:
                    if not future.done():  # else its caller gave up (cancelled); the script ran anyway
                        future.set_result(reply)
        except BaseException:
            # a reply may still be on its way: it must not be read as the next batch's
            await conn.disconnect(nowait=True)
            raise
        return missing

    async def _connection(self) -> AbstractConnection:
        if self._conn is None:
            conn = await self.redis.connection_pool.get_connection()
            if self.timeout_s is not None:
                conn.socket_timeout = None  # the batch deadline bounds every read (module doc)
            self._conn = conn
        return self._conn
