"""API faults (latency, 429, 500, connection resets, a requests-per-second limit) and counts.

Stripe limits a sandbox to 25 requests per second (https://docs.stripe.com/rate-limits) and
answers past it with 429, `code: rate_limit`; `rps_limit` models that with a sliding one-second
window over every `/v1` and `/v2` request. `Stats` counts requests per (method, route template)
and the busiest second seen, so a test can check a client stays under its own limit.

Stripe also runs a concurrency limiter (same page, "API limiters"); `endpoint_concurrency`
models it: a request arriving while that many are already in flight on its endpoint (method
and route, as Stripe counts endpoints) is answered 429 with
`Stripe-Rate-Limited-Reason: endpoint-concurrency` and no retry headers.

`RequestLog` records every `/v1` and `/v2` request by key, method, route, parameter names and
`expand` paths, so a test can check what a client asked of Stripe (`GET /_fake/requests`).
"""

from __future__ import annotations

import collections
import random
import time
from dataclasses import dataclass, field
from typing import Any

JSON = dict[str, Any]


def _probability(body: JSON, name: str) -> float:
    value = body.get(name, 0.0)
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be a probability between 0 and 1")
    return float(value)


@dataclass
class ApiFaults:
    latency_ms: tuple[float, float] = (0.0, 0.0)
    rate_429: float = 0.0
    rate_500: float = 0.0
    rate_reset: float = 0.0
    rps_limit: float | None = None
    endpoint_concurrency: int | None = None
    methods: frozenset[str] | None = None
    seed: int | None = None
    rng: random.Random = field(default_factory=random.Random)

    @classmethod
    def from_json(cls, body: JSON) -> ApiFaults:
        known = {"latency_ms", "rate_429", "rate_500", "rate_reset", "rps_limit", "endpoint_concurrency",
                 "methods", "seed"}
        unknown = set(body) - known
        if unknown:
            raise ValueError(f"unknown fault option(s): {', '.join(sorted(unknown))}")
        out = cls()
        latency = body.get("latency_ms", 0)
        if isinstance(latency, int | float) and not isinstance(latency, bool) and latency >= 0:
            out.latency_ms = (float(latency), float(latency))
        elif (
            isinstance(latency, list)
            and len(latency) == 2
            and all(isinstance(v, int | float) for v in latency)
            and 0 <= latency[0] <= latency[1]
        ):
            out.latency_ms = (float(latency[0]), float(latency[1]))
        else:
            raise ValueError("latency_ms must be a number >= 0 or a [min, max] pair")
        out.rate_429 = _probability(body, "rate_429")
        out.rate_500 = _probability(body, "rate_500")
        out.rate_reset = _probability(body, "rate_reset")
        rps = body.get("rps_limit")
        if rps is not None and (
            not isinstance(rps, int | float) or isinstance(rps, bool) or rps <= 0
        ):
            raise ValueError("rps_limit must be a positive number or null")
        out.rps_limit = float(rps) if rps is not None else None
        concurrency = body.get("endpoint_concurrency")
        if concurrency is not None and (
            not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1
        ):
            raise ValueError("endpoint_concurrency must be an integer >= 1 or null")
        out.endpoint_concurrency = concurrency
        methods = body.get("methods")
        if methods is not None:
            if not isinstance(methods, list) or not all(isinstance(m, str) for m in methods):
                raise ValueError('methods must be a list such as ["GET"]')
            out.methods = frozenset(m.upper() for m in methods)
        seed = body.get("seed")
        if seed is not None and not isinstance(seed, int):
            raise ValueError("seed must be an integer or null")
        out.seed = seed
        out.rng = random.Random(seed)
        return out

    def to_json(self) -> JSON:
        return {
            "latency_ms": list(self.latency_ms),
            "rate_429": self.rate_429,
            "rate_500": self.rate_500,
            "rate_reset": self.rate_reset,
            "rps_limit": self.rps_limit,
            "endpoint_concurrency": self.endpoint_concurrency,
            "methods": sorted(self.methods) if self.methods is not None else None,
            "seed": self.seed,
        }

    def applies_to(self, method: str) -> bool:
        return self.methods is None or method.upper() in self.methods

    def latency_s(self) -> float:
        low, high = self.latency_ms
        return (low if low == high else self.rng.uniform(low, high)) / 1000.0

    def roll(self) -> str | None:
        """Which injected failure this request gets, if any: `reset`, `429` or `500`."""
        r = self.rng.random()
        if r < self.rate_reset:
            return "reset"
        if r < self.rate_reset + self.rate_429:
            return "429"
        if r < self.rate_reset + self.rate_429 + self.rate_500:
            return "500"
        return None


class RateWindow:
    """Requests in the last second (sliding), for `rps_limit` and the busiest-second stat."""

    def __init__(self) -> None:
        self._times: collections.deque[float] = collections.deque()

    def add(self, now: float) -> int:
        self._times.append(now)
        while self._times and self._times[0] <= now - 1.0:
            self._times.popleft()
        return len(self._times)

    def count(self, now: float) -> int:
        while self._times and self._times[0] <= now - 1.0:
            self._times.popleft()
        return len(self._times)

    def clear(self) -> None:
        self._times.clear()


class Stats:
    def __init__(self) -> None:
        self.routes: dict[str, dict[str, int]] = {}
        self.statuses: collections.Counter[str] = collections.Counter()
        self.total = 0
        self.max_rps = 0
        self._window = RateWindow()
        self.started_at = time.time()

    def reset(self) -> None:
        self.routes = {}
        self.statuses = collections.Counter()
        self.total = 0
        self.max_rps = 0
        self._window.clear()
        self.started_at = time.time()

    def arrived(self) -> None:
        self.max_rps = max(self.max_rps, self._window.add(time.monotonic()))

    def finished(self, method: str, route: str, status: str) -> None:
        """Count one answer; `status` is the HTTP status, or `reset` for a dropped connection."""
        key = f"{method} {route}"
        entry = self.routes.setdefault(key, {"count": 0})
        entry["count"] += 1
        entry[status] = entry.get(status, 0) + 1
        self.statuses[status] += 1
        self.total += 1

    def to_json(self) -> JSON:
        return {
            "total": self.total,
            "max_rps": self.max_rps,
            "statuses": dict(self.statuses),
            "routes": {k: dict(v) for k, v in sorted(self.routes.items())},
            "since": self.started_at,
        }


class RequestLog:
    """Every API request, as (key, method, route, sorted parameter names, expand paths) with
    a count and one example path: bounded by the distinct shapes of request, not their number."""

    def __init__(self) -> None:
        self.entries: dict[tuple[str, str, str, tuple[str, ...], tuple[str, ...]], JSON] = {}

    def record(self, key: str, method: str, route: str, path: str, query: list[tuple[str, str]]) -> None:
        names = tuple(sorted({raw.split("[", 1)[0] for raw, _ in query}))
        expands = tuple(sorted({v for k, v in query if k in ("expand[]", "expand")}))
        entry = self.entries.setdefault(
            (key, method, route, names, expands),
            {"key": key, "method": method, "route": route, "params": list(names),
             "expand": list(expands), "example": path, "count": 0},
        )
        entry["count"] += 1

    def clear(self) -> None:
        self.entries.clear()

    def to_json(self) -> list[JSON]:
        return [dict(e) for e in self.entries.values()]
