"""`EntitledClient`: access checks answered from memory, filled from the API (docs/contract.md §10).

- `await client.check(user, feature)` answers from the cache when the user's entry is alive,
  otherwise fetches `GET /v1/access` once (concurrent misses for one user share the fetch).
  `client.cached(user, feature)` is the memory-only answer (None when not cached).
- The cache is kept current by `access-changed` (docs/contract.md §6): with `redis_url` the
  client follows the stream with a consumer group of its own; without Redis, feed it the outbound
  webhooks (`client.handle_webhook(...)`). Either way a message drops the entries it makes stale,
  and the next check (or an eager refresh, `refresh_on_change`) asks the API again.
- An entry lives until the earliest `valid_until` in it, and at most `max_age_s`. While the stream
  cannot be followed, entries live at most `unfollowed_max_age_s`: messages may be passing by.
- `when_unreachable` has no default: the caller decides whether a check the API cannot answer
  (connection refused, timeout, 5xx, 429) allows ("allow") or denies ("deny").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import socket
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Literal, cast

import aiohttp
import redis.exceptions
from redis.asyncio import Redis

from entitled_client import webhooks
from entitled_client.cache import Cache, Entry, entry_from_access

log = logging.getLogger("entitled_client")

STREAM = "access-changed"
FETCH_ATTEMPTS = 3
Unreachable = Literal["allow", "deny"]


class ApiUnavailableError(Exception):
    """The API could not answer (down, timing out, overloaded)."""


class ClientError(Exception):
    """The API refused the request itself (a wrong token, a bad id): a bug, not an outage."""


class EntitledClient:
    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        when_unreachable: Unreachable,
        redis_url: str | None = None,
        webhook_secret: str | None = None,
        group: str | None = None,
        stream: str = STREAM,
        max_age_s: float = 300.0,
        unfollowed_max_age_s: float = 1.0,
        timeout_s: float = 2.0,
        refresh_on_change: bool = True,
    ) -> None:
        if when_unreachable not in ("allow", "deny"):
            raise ValueError('when_unreachable must be "allow" or "deny"')
        self.base_url = base_url.rstrip("/")
        self.when_unreachable: Unreachable = when_unreachable
        self.allow_when_unreachable = when_unreachable == "allow"
        self.redis_url = redis_url
        self.webhook_secret = webhook_secret
        # A group of this instance's own: every instance needs every message for its own cache.
        self._own_group = group is None
        self.group = group or f"entitled-client-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.stream = stream
        self.max_age_s = max_age_s
        self.unfollowed_max_age_s = unfollowed_max_age_s
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.refresh_on_change = refresh_on_change
        self.cache = Cache()
        self.following = False
        self._headers = {"Authorization": f"Bearer {token}"}
        self._session: aiohttp.ClientSession | None = None
        self._redis: Redis | None = None
        self._follower: asyncio.Task[None] | None = None
        self._inflight: dict[str, asyncio.Future[Entry]] = {}
        self._background: set[asyncio.Task[Any]] = set()

    # --- life cycle --------------------------------------------------------------------------

    async def start(self) -> EntitledClient:
        self._session = aiohttp.ClientSession(timeout=self.timeout, headers=self._headers)
        if self.redis_url is not None:
            self._redis = Redis.from_url(self.redis_url)
            with contextlib.suppress(redis.exceptions.RedisError, OSError):
                await self._ensure_group()
                self.following = True
            self._follower = asyncio.create_task(self._follow())
        return self

    async def close(self) -> None:
        tasks = [t for t in (self._follower, *self._background) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._redis is not None:
            if self._own_group:
                with contextlib.suppress(redis.exceptions.RedisError, OSError):
                    await self._redis.xgroup_destroy(self.stream, self.group)
            await self._redis.aclose()
        if self._session is not None:
            await self._session.close()

    async def __aenter__(self) -> EntitledClient:
        return await self.start()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    # --- checks ------------------------------------------------------------------------------

    def cached(self, user_id: str, feature: str) -> bool | None:
        """From memory only: True/False while the user's entry lives, None when it must be fetched."""
        entry = self.cache.entries.get(user_id)
        if entry is None or time.monotonic() >= entry.expires_at:
            return None
        return feature in entry.features

    async def check(self, user_id: str, feature: str) -> bool:
        """Whether `user_id` may use `feature` now: from memory, or fetched once when not cached."""
        entry = self.cache.entries.get(user_id)
        if entry is not None and time.monotonic() < entry.expires_at:
            return feature in entry.features
        try:
            entry = await self.entry(user_id)
        except ApiUnavailableError:
            return self.allow_when_unreachable
        return feature in entry.features

    async def entry(self, user_id: str) -> Entry:
        """The user's cached entry, fetched when missing or expired (`ApiUnavailableError` if it cannot be)."""
        entry = self.cache.get(user_id)
        if entry is not None:
            return entry
        pending = self._inflight.get(user_id)
        if pending is None:
            pending = asyncio.ensure_future(self._fetch(user_id))
            self._inflight[user_id] = pending
            pending.add_done_callback(lambda _f: self._inflight.pop(user_id, None))
        return await asyncio.shield(pending)

    async def _fetch(self, user_id: str) -> Entry:
        # A message about the user that arrives during the request makes its answer suspect:
        # ask again (a few times), so the cache ends up holding the state after the change.
        for _ in range(FETCH_ATTEMPTS):
            self.cache.begin(user_id)
            try:
                status, body = await self._request("GET", "/v1/access", params={"user_id": user_id})
            except BaseException:
                self.cache.abandon(user_id)
                raise
            if status not in (200, 404):
                self.cache.abandon(user_id)
                raise ClientError(f"GET /v1/access answered {status}: {body}")
            entry = self._entry(user_id, body if status == 200 else None)
            if self.cache.finish(entry):
                break
        return entry

    def _entry(self, user_id: str, body: Mapping[str, Any] | None) -> Entry:
        max_age = self.max_age_s if self.following or self.redis_url is None else self.unfollowed_max_age_s
        return entry_from_access(user_id, body, max_age_s=max_age, now=time.monotonic(), wall_now=time.time())

    async def sync(self, *, checkout_session_id: str | None = None, customer_id: str | None = None) -> dict[str, Any] | None:
        """`POST /v1/sync` (the Checkout success page): the fresh access, cached for its user, or
        None when the sync did not finish in time (202)."""
        if (checkout_session_id is None) == (customer_id is None):
            raise ValueError("give exactly one of checkout_session_id and customer_id")
        payload = {"checkout_session_id": checkout_session_id} if checkout_session_id else {"customer_id": customer_id}
        status, body = await self._request("POST", "/v1/sync", json_body=payload)
        if status == 202:
            return None
        if status != 200:
            raise ClientError(f"POST /v1/sync answered {status}: {body}")
        access = cast(dict[str, Any], body)
        if access.get("user_id"):
            user_id = str(access["user_id"])
            self.cache.begin(user_id)
            self.cache.finish(self._entry(user_id, access))
        return access

    async def _request(self, method: str, path: str, *, params: Mapping[str, str] | None = None,
                       json_body: Any = None) -> tuple[int, Any]:
        if self._session is None:
            raise RuntimeError("start the client first (async with EntitledClient(...) as client)")
        try:
            async with self._session.request(method, self.base_url + path, params=params, json=json_body,
                                             allow_redirects=False) as resp:
                raw = await resp.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise ApiUnavailableError(f"{method} {path}: {type(exc).__name__}") from exc
        if resp.status >= 500 or resp.status == 429:
            raise ApiUnavailableError(f"{method} {path} answered {resp.status}")
        try:
            return resp.status, json.loads(raw)
        except ValueError:
            raise ApiUnavailableError(f"{method} {path} answered {resp.status} without JSON") from None

    # --- keeping current ---------------------------------------------------------------------

    def apply(self, message: Mapping[str, Any]) -> set[str]:
        """Apply one `access-changed` message: drop the stale entries (refetched at once when
        `refresh_on_change`). Returns the users whose entries were dropped."""
        stale = self.cache.apply(message)
        if self.refresh_on_change and self._session is not None:
            for user_id in stale:
                task = asyncio.get_running_loop().create_task(self._refresh(user_id))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
        return stale

    async def _refresh(self, user_id: str) -> None:
        with contextlib.suppress(ApiUnavailableError, ClientError):
            await self.entry(user_id)

    def handle_webhook(self, headers: Mapping[str, str], body: bytes) -> set[str]:
        """Verify one outbound webhook (Standard Webhooks, under `webhook_secret`) and apply it;
        `webhooks.WebhookError` when it is not genuine (answer 400, and nothing changes)."""
        if self.webhook_secret is None:
            raise RuntimeError("give webhook_secret to handle webhooks")
        return self.apply(webhooks.verify(self.webhook_secret, headers, body))

    async def _ensure_group(self) -> None:
        assert self._redis is not None
        try:
            # "$": an empty cache needs no history, only what changes from now on.
            await self._redis.xgroup_create(self.stream, self.group, id="$", mkstream=True)
        except redis.exceptions.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _follow(self) -> None:
        """Read the stream with the group for ever; on a Redis failure stop trusting the cache
        (clear it; entries live `unfollowed_max_age_s`) until the group is read again."""
        assert self._redis is not None
        backoff = 0.1
        while True:
            try:
                if not self.following:
                    await self._ensure_group()
                    self.following = True
                    backoff = 0.1
                reply = await self._redis.xreadgroup(self.group, "c", {self.stream: ">"}, count=500, block=1000)
                for _stream, entries in reply or []:
                    for entry_id, fields in entries:
                        self._apply_entry(fields)
                        await self._redis.xack(self.stream, self.group, entry_id)
            except asyncio.CancelledError:
                raise
            except (redis.exceptions.RedisError, OSError) as exc:
                if self.following:
                    log.warning("entitled_client: lost the access-changed stream (%s); cache cleared", exc)
                self.following = False
                self.cache.clear()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    def _apply_entry(self, fields: Mapping[bytes, bytes] | None) -> None:
        if not fields or b"data" not in fields:
            return  # trimmed while pending
        try:
            message = json.loads(fields[b"data"])
            self.apply(message)
        except (ValueError, KeyError, TypeError) as exc:
            log.error("entitled_client: skipped a malformed access-changed entry: %s", exc)
