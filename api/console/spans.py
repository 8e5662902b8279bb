"""A customer's access over time, from what its syncs saw (docs/contract.md §11). Pure.

Each sync (`sync_log`, shared/publishing/history.py) is an observation at its time: the
subscriptions with their statuses, and the features the decision granted until when. Between
two syncs nothing is known to have changed, so:

- a subscription's **band** keeps the status it was last seen with until a sync sees another
  status (or no longer lists it), or until `now`; a source that grants features but is not a
  subscription (a one-time purchase) gets a band of status `purchase`;
- a feature's **bar** covers each sync that granted it up to the next sync or its
  `valid_until`, whichever comes first; touching pieces merge;
- **grace** is where a subscription is `past_due` (access kept through the grace period, the
  policy's rule) and some feature is granted meanwhile.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Observation:
    at: datetime
    statuses: Mapping[str, str]  # subscription (or purchase) id -> status
    features: Mapping[str, datetime | None]  # feature -> valid_until (None: for ever)


@dataclass(frozen=True)
class Band:
    source_id: str
    status: str
    start: datetime
    end: datetime


@dataclass(frozen=True)
class Bar:
    feature: str
    start: datetime
    end: datetime


@dataclass(frozen=True)
class Spans:
    bands: list[Band] = field(default_factory=list)
    bars: list[Bar] = field(default_factory=list)
    grace: list[tuple[datetime, datetime]] = field(default_factory=list)


def _when(value: Any) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if isinstance(value, str) else None


def observation(at: datetime, stripe: Mapping[str, Any], decision: Mapping[str, Any]) -> Observation:
    """One `sync_log` row (its `stripe` and `decision` summaries) as an observation."""
    statuses = {str(s["id"]): str(s["status"]) for s in stripe.get("subscriptions") or [] if "id" in s}
    features: dict[str, datetime | None] = {}
    for feature, grant in (decision.get("features") or {}).items():
        features[feature] = _when(grant.get("valid_until"))
        source = grant.get("subscription_id")
        if isinstance(source, str) and source not in statuses:
            statuses[source] = "purchase"
    return Observation(at, statuses, features)


def _bands(observations: Sequence[Observation], now: datetime) -> list[Band]:
    bands: list[Band] = []
    open_: dict[str, tuple[str, datetime]] = {}  # source -> (status, since)
    for obs in observations:
        for source, (status, since) in list(open_.items()):
            if obs.statuses.get(source) != status:
                bands.append(Band(source, status, since, obs.at))
                del open_[source]
        for source, status in obs.statuses.items():
            open_.setdefault(source, (status, obs.at))
    bands.extend(Band(source, status, since, max(now, since)) for source, (status, since) in open_.items())
    return sorted(bands, key=lambda b: (b.source_id, b.start))


def _bars(observations: Sequence[Observation], now: datetime) -> list[Bar]:
    pieces: dict[str, list[tuple[datetime, datetime]]] = {}
    for i, obs in enumerate(observations):
        following = observations[i + 1].at if i + 1 < len(observations) else max(now, obs.at)
        for feature, until in obs.features.items():
            end = following if until is None else min(following, until)
            if end > obs.at:
                pieces.setdefault(feature, []).append((obs.at, end))
    bars: list[Bar] = []
    for feature, spans in sorted(pieces.items()):
        merged: list[tuple[datetime, datetime]] = []
        for start, end in spans:
            if merged and start <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], end))
            else:
                merged.append((start, end))
        bars.extend(Bar(feature, start, end) for start, end in merged)
    return bars


def _grace(bands: Iterable[Band], bars: Sequence[Bar]) -> list[tuple[datetime, datetime]]:
    found: list[tuple[datetime, datetime]] = []
    for band in bands:
        if band.status != "past_due":
            continue
        for bar in bars:
            start, end = max(band.start, bar.start), min(band.end, bar.end)
            if start < end and (start, end) not in found:
                found.append((start, end))
    return sorted(found)


def spans(observations: Iterable[Observation], now: datetime) -> Spans:
    """Bands, bars and grace of the observations (in any order), up to `now`."""
    ordered = sorted(observations, key=lambda o: o.at)
    bands = _bands(ordered, now)
    bars = _bars(ordered, now)
    return Spans(bands, bars, _grace(bands, bars))
