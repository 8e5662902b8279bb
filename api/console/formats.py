"""How the console's templates write times (filters; pure)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any


def when(value: datetime | None, forever: bool = False) -> str:
    """`2026-12-08 14:00 UTC`; a grant for ever (None, or year 9999) is `for ever`."""
    if value is None or value.year >= 9999:
        return "for ever" if forever else "—"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def when_s(value: datetime | None) -> str:
    return "—" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def when_ms(value: int) -> str:
    return when_s(datetime.fromtimestamp(value / 1000, UTC))


def age(value: timedelta | None) -> str:
    if value is None:
        return "—"
    seconds = int(value.total_seconds())
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


FILTERS: dict[str, Callable[..., Any]] = {"when": when, "when_s": when_s, "when_ms": when_ms, "age": age}
