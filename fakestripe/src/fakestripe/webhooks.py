"""Signed webhook delivery to registered endpoints, with the faults real delivery has.

Each event goes to every enabled endpoint whose `enabled_events` contains its type or `*`.
The body is the event's JSON; the `Stripe-Signature` header is `t=<unix>,v1=<hex>` where the
hex is HMAC-SHA256 of `f"{t}.{body}"` with the endpoint's secret
(https://docs.stripe.com/webhooks#verify-manually), with one `v1=` per secret while a rolled
secret is still valid. `t` is wall time, whatever the fake clocks say, so receivers checking
the ±300 s tolerance against their own clock accept it.

Per endpoint, faults can be injected (`EndpointFaults`): delay, duplicates (same id, or a new
event with a new id for the same change), reordering within a window, drops, and retries on
non-2xx / connection errors following Stripe's backoff compressed by `retry_backoff_scale`.
Deliveries run as background tasks: at most `max_in_flight` at a time per endpoint (1 by
default, so that without faults an endpoint receives events in the order they happened) and
`max_in_flight_total` overall.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import hmac
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from hashlib import sha256
from typing import Any

import aiohttp
import orjson

from .core import Core
from .events import Event
from .store import WebhookEndpoint

log = logging.getLogger("fakestripe.webhooks")

JSON = dict[str, Any]

# Stripe retries failed live-mode deliveries "for up to three days with an exponential back
# off", and in a sandbox (test mode) "three times over a few hours"
# (https://docs.stripe.com/webhooks#automatic-retries); the exact intervals are not published.
# These approximate them (seconds after the previous attempt); which one applies follows the
# mode of the fake's API keys (`sk_live_`/`rk_live_`: live).
STRIPE_RETRY_SCHEDULE_S = (60.0, 300.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 57600.0, 86400.0)
TEST_MODE_RETRY_SCHEDULE_S = (60.0, 3600.0, 10800.0)


def is_live_key(key: str) -> bool:
    return key.startswith(("sk_live_", "rk_live_"))


def _number_or_range(value: Any, name: str) -> tuple[float, float]:
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value), float(value)
    if (
        isinstance(value, list)
        and len(value) == 2
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        and 0 <= value[0] <= value[1]
    ):
        return float(value[0]), float(value[1])
    raise ValueError(f"{name} must be a number >= 0 or a [min, max] pair")


def _rate(value: Any, name: str) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 1:
        return float(value)
    raise ValueError(f"{name} must be a probability between 0 and 1")


def _flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false")
    return value


def _schedule(value: Any, name: str) -> tuple[float, ...]:
    if not isinstance(value, list) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in value
    ):
        raise ValueError(f"{name} must be a list of seconds")
    return tuple(float(v) for v in value)


def _positive_int(value: Any, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1")
    return value


def _seed(value: Any, name: str) -> int | None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
        raise ValueError(f"{name} must be an integer or null")
    return value


# How each option of `EndpointFaults` is read from JSON.
FAULT_PARSERS: dict[str, Callable[[Any, str], Any]] = {
    "delay_s": _number_or_range,
    "duplicate_rate": _rate,
    "duplicate_new_id_rate": _rate,
    "drop_rate": _rate,
    "shuffle_window_s": lambda v, n: _number_or_range(v, n)[1],
    "retry": _flag,
    "retry_backoff_scale": lambda v, n: _number_or_range(v, n)[0],
    "retry_schedule_s": lambda v, n: None if v is None else _schedule(v, n),
    "max_in_flight": _positive_int,
    # A zero timeout would fail every delivery before it is sent.
    "timeout_s": lambda v, n: max(0.01, _number_or_range(v, n)[0]),
    "seed": _seed,
}


@dataclass
class EndpointFaults:
    delay_s: tuple[float, float] = (0.0, 0.0)
    duplicate_rate: float = 0.0
    duplicate_new_id_rate: float = 0.0
    shuffle_window_s: float = 0.0
    drop_rate: float = 0.0
    retry: bool = True
    retry_backoff_scale: float = 0.01
    # None: the schedule of the keys' mode (TEST_MODE_RETRY_SCHEDULE_S or STRIPE_RETRY_SCHEDULE_S).
    retry_schedule_s: tuple[float, ...] | None = None
    max_in_flight: int = 1
    timeout_s: float = 10.0
    seed: int | None = None

    @classmethod
    def from_json(cls, body: JSON) -> EndpointFaults:
        unknown = set(body) - set(FAULT_PARSERS)
        if unknown:
            raise ValueError(f"unknown fault option(s): {', '.join(sorted(unknown))}")
        out = cls()
        for name, value in body.items():
            setattr(out, name, FAULT_PARSERS[name](value, name))
        return out

    def to_json(self) -> JSON:
        return {
            "delay_s": list(self.delay_s),
            "duplicate_rate": self.duplicate_rate,
            "duplicate_new_id_rate": self.duplicate_new_id_rate,
            "shuffle_window_s": self.shuffle_window_s,
            "drop_rate": self.drop_rate,
            "retry": self.retry,
            "retry_backoff_scale": self.retry_backoff_scale,
            "retry_schedule_s": None if self.retry_schedule_s is None else list(self.retry_schedule_s),
            "max_in_flight": self.max_in_flight,
            "timeout_s": self.timeout_s,
            "seed": self.seed,
        }


@dataclass
class Delivery:
    event: Event
    attempt: int
    duplicate: str | None = None


@dataclass
class EndpointState:
    endpoint_id: str
    secrets: list[tuple[str, float | None]]
    thin: bool = False
    faults: EndpointFaults = field(default_factory=EndpointFaults)
    rng: random.Random = field(default_factory=random.Random)
    queue: list[tuple[float, int, Delivery]] = field(default_factory=list)
    in_flight: int = 0
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    def valid_secrets(self, now: float) -> list[str]:
        return [s for s, expires in self.secrets if expires is None or expires > now]


def signature_header(body: bytes, secrets: list[str], timestamp: int) -> str:
    signed = f"{timestamp}.".encode() + body
    parts = [f"t={timestamp}"]
    parts += [f"v1={hmac.new(s.encode(), signed, sha256).hexdigest()}" for s in secrets]
    return ",".join(parts)


class Webhooks:
    def __init__(self, core: Core, max_in_flight_total: int = 32, *, livemode: bool = False) -> None:
        self.core = core
        self.livemode = livemode
        self.endpoints: dict[str, EndpointState] = {}
        self.records: list[JSON] = []
        self.dropped: list[JSON] = []
        self._seq = 0
        self._max_total = max_in_flight_total
        self._sends: set[asyncio.Task[None]] = set()
        self._sem: asyncio.Semaphore | None = None
        self._session: aiohttp.ClientSession | None = None
        self._started = False
        core.events.listeners.append(self.on_event)

    async def start(self) -> None:
        self._sem = asyncio.Semaphore(self._max_total)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._max_total),
            headers={"User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)"},
        )
        self._started = True
        for state in self.endpoints.values():
            self._ensure_task(state)

    async def stop(self) -> None:
        self._started = False
        tasks = [s.task for s in self.endpoints.values() if s.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for state in self.endpoints.values():
            state.task = None
        for send in list(self._sends):
            send.cancel()
        for send in list(self._sends):
            with contextlib.suppress(asyncio.CancelledError):
                await send
        if self._session is not None:
            await self._session.close()
            self._session = None

    def reset(self) -> None:
        for state in self.endpoints.values():
            if state.task is not None:
                state.task.cancel()
        self.endpoints.clear()
        self.records.clear()
        self.dropped.clear()

    # Endpoints -----------------------------------------------------------------------------

    def register(self, endpoint: WebhookEndpoint, secret: str | None = None) -> str:
        secret = secret or self.core.store.new_id("webhook_secret")
        state = EndpointState(endpoint.id, [(secret, None)])
        self.endpoints[endpoint.id] = state
        if self._started:
            self._ensure_task(state)
        return secret

    def unregister(self, endpoint_id: str) -> None:
        state = self.endpoints.pop(endpoint_id, None)
        if state is not None and state.task is not None:
            state.task.cancel()

    def roll_secret(self, endpoint_id: str, expires_in_s: float) -> tuple[str, float]:
        state = self.endpoints[endpoint_id]
        now = time.time()
        expires_at = now + max(0.0, expires_in_s)
        new = self.core.store.new_id("webhook_secret")
        kept = [(s, expires_at if e is None else min(e, expires_at)) for s, e in state.secrets]
        state.secrets = [(new, None), *[(s, e) for s, e in kept if e is not None and e > now]]
        return new, expires_at

    def set_faults(self, endpoint_id: str, faults: EndpointFaults) -> None:
        state = self.endpoints[endpoint_id]
        state.faults = faults
        state.rng = random.Random(faults.seed)
        state.wake.set()

    def _ensure_task(self, state: EndpointState) -> None:
        if state.task is None or state.task.done():
            state.task = asyncio.get_running_loop().create_task(self._run_endpoint(state))

    # Scheduling ----------------------------------------------------------------------------

    def on_event(self, event: Event) -> None:
        for endpoint_id, state in list(self.endpoints.items()):
            record = self.core.store.webhook_endpoints.get(endpoint_id)
            if record is None or record.status != "enabled":
                continue
            if event.thin_only and not state.thin:
                continue
            wanted = event.thin_type if event.thin_only else event.type
            if "*" not in record.enabled_events and wanted not in record.enabled_events:
                continue
            event.pending_webhooks += 1
            self._schedule_new(state, event)

    def _delay(self, state: EndpointState) -> float:
        low, high = state.faults.delay_s
        delay = low if low == high else state.rng.uniform(low, high)
        if state.faults.shuffle_window_s > 0:
            delay += state.rng.uniform(0, state.faults.shuffle_window_s)
        return delay

    def _push(self, state: EndpointState, delivery: Delivery, delay: float) -> None:
        self._seq += 1
        heapq.heappush(state.queue, (time.monotonic() + delay, self._seq, delivery))
        state.wake.set()

    def _schedule_new(self, state: EndpointState, event: Event) -> None:
        faults, rng = state.faults, state.rng
        if faults.drop_rate and rng.random() < faults.drop_rate:
            event.pending_webhooks -= 1
            self.dropped.append(
                {
                    "endpoint_id": state.endpoint_id,
                    "event_id": event.id,
                    "type": event.type,
                    "at": time.time(),
                }
            )
            return
        self._push(state, Delivery(event, 1), self._delay(state))
        if faults.duplicate_rate and rng.random() < faults.duplicate_rate:
            self._push(state, Delivery(event, 1, duplicate="same_id"), self._delay(state))
        if faults.duplicate_new_id_rate and rng.random() < faults.duplicate_new_id_rate:
            twin = self.core.events.clone(event)
            twin.pending_webhooks = 1
            self._push(state, Delivery(twin, 1, duplicate="new_id"), self._delay(state))

    async def _run_endpoint(self, state: EndpointState) -> None:
        while True:
            state.wake.clear()
            if state.queue and state.in_flight < state.faults.max_in_flight:
                due = state.queue[0][0]
                wait = due - time.monotonic()
                if wait <= 0:
                    _, _, delivery = heapq.heappop(state.queue)
                    state.in_flight += 1
                    send = asyncio.get_running_loop().create_task(self._send(state, delivery))
                    self._sends.add(send)
                    send.add_done_callback(self._sends.discard)
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(state.wake.wait(), timeout=wait)
                continue
            await state.wake.wait()

    async def _send(self, state: EndpointState, delivery: Delivery) -> None:
        event = delivery.event
        record: JSON = {
            "id": self.core.store.new_id("delivery"),
            "endpoint_id": state.endpoint_id,
            "event_id": event.id,
            "type": event.type,
            "attempt": delivery.attempt,
            "duplicate": delivery.duplicate,
            "thin": state.thin,
            "status": None,
            "error": None,
            "sent_at": None,
            "finished_at": None,
        }
        ok = False
        try:
            assert self._sem is not None
            assert self._session is not None
            async with self._sem:
                endpoint = self.core.store.webhook_endpoints.get(state.endpoint_id)
                if endpoint is None:
                    return
                payload = event.thin_json() if state.thin else event.to_json()
                if self.core.shape_log is not None:
                    self.core.shape_log.check(f"webhook {event.type}", payload)
                body = orjson.dumps(payload, option=orjson.OPT_INDENT_2)
                now = time.time()
                headers = {
                    "Content-Type": "application/json; charset=utf-8",
                    "Stripe-Signature": signature_header(body, state.valid_secrets(now), int(now)),
                }
                record["sent_at"] = now
                self.records.append(record)
                timeout = aiohttp.ClientTimeout(total=state.faults.timeout_s)
                async with self._session.post(
                    endpoint.url, data=body, headers=headers, timeout=timeout
                ) as response:
                    await response.read()
                    record["status"] = response.status
                    ok = 200 <= response.status < 300
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any failure to deliver counts as a failed attempt
            record["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            record["finished_at"] = time.time()
            state.in_flight -= 1
            state.wake.set()
        if ok:
            event.pending_webhooks = max(0, event.pending_webhooks - 1)
            return
        schedule = self.retry_schedule(state.faults)
        if state.faults.retry and delivery.attempt <= len(schedule):
            delay = schedule[delivery.attempt - 1] * state.faults.retry_backoff_scale
            record["next_retry_in_s"] = delay
            self._push(state, Delivery(event, delivery.attempt + 1, delivery.duplicate), delay)

    def retry_schedule(self, faults: EndpointFaults) -> tuple[float, ...]:
        if faults.retry_schedule_s is not None:
            return faults.retry_schedule_s
        return STRIPE_RETRY_SCHEDULE_S if self.livemode else TEST_MODE_RETRY_SCHEDULE_S

    # Observation ---------------------------------------------------------------------------

    def pending(self, include_retries: bool = True) -> int:
        count = 0
        for state in self.endpoints.values():
            count += state.in_flight
            count += sum(1 for _, _, d in state.queue if include_retries or d.attempt == 1)
        return count
