"""Where each band, bar and mark of the access picture goes (docs/contract.md §11). Pure.

The template only draws what `layout` placed: rows of rectangles (one row per subscription or
purchase, coloured by status; one per feature), the grace periods shaded across the feature
rows, the events and syncs as marks linking to their timeline anchors, and the time axis.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from api.console.spans import Spans

WIDTH = 960
LABEL_W = 190
ROW_H = 22
AXIS_H = 26
MARKS_H = 26
TICKS = 6
MIN_RANGE = timedelta(seconds=5)


@dataclass(frozen=True)
class Rect:
    x: float
    width: float
    css: str  # the status, or `feature`
    title: str


@dataclass(frozen=True)
class Row:
    y: float
    label: str
    kind: str  # band | bar
    rects: list[Rect]


@dataclass(frozen=True)
class Mark:
    x: float
    kind: str  # event | sync
    href: str
    title: str


@dataclass(frozen=True)
class Tick:
    x: float
    label: str


@dataclass(frozen=True)
class Picture:
    width: int
    height: int
    rows: list[Row]
    grace: list[Rect]
    grace_y: float
    grace_h: float
    marks: list[Mark]
    marks_y: float
    ticks: list[Tick]
    start: datetime
    end: datetime


@dataclass(frozen=True)
class MarkAt:
    at: datetime
    kind: str
    anchor: str
    title: str


def _fmt(at: datetime, span: timedelta) -> str:
    return at.strftime("%H:%M:%S" if span < timedelta(hours=2) else "%m-%d %H:%M")


def layout(spans: Spans, marks: Sequence[MarkAt], now: datetime) -> Picture:
    times = [b.start for b in spans.bands] + [b.start for b in spans.bars] + [m.at for m in marks]
    start = min(times, default=now - MIN_RANGE)
    end = max([now, *(b.end for b in spans.bands), *(b.end for b in spans.bars)])
    if end - start < MIN_RANGE:
        start = end - MIN_RANGE
    plot_w = WIDTH - LABEL_W - 10
    total = (end - start).total_seconds()

    def x(at: datetime) -> float:
        return round(LABEL_W + plot_w * max(0.0, min(1.0, (at - start).total_seconds() / total)), 2)

    def rect(a: datetime, b: datetime, css: str, title: str) -> Rect:
        return Rect(x(a), max(1.0, round(x(b) - x(a), 2)), css, title)

    rows: list[Row] = []
    y = float(AXIS_H)
    # Subscriptions in the order they first appeared, then the features by name.
    first_seen: dict[str, datetime] = {}
    for band in spans.bands:
        first_seen[band.source_id] = min(band.start, first_seen.get(band.source_id, band.start))
    for source in sorted(first_seen, key=lambda s: (first_seen[s], s)):
        rects = [rect(b.start, b.end, b.status, f"{source}: {b.status} {b.start:%Y-%m-%d %H:%M:%S} → {b.end:%Y-%m-%d %H:%M:%S}")
                 for b in spans.bands if b.source_id == source]
        rows.append(Row(y, source, "band", rects))
        y += ROW_H
    grace_y = y
    for feature in sorted({b.feature for b in spans.bars}):
        rects = [rect(b.start, b.end, "feature", f"{feature} granted {b.start:%Y-%m-%d %H:%M:%S} → {b.end:%Y-%m-%d %H:%M:%S}")
                 for b in spans.bars if b.feature == feature]
        rows.append(Row(y, feature, "bar", rects))
        y += ROW_H
    grace = [rect(a, b, "grace", f"grace (past_due) {a:%Y-%m-%d %H:%M:%S} → {b:%Y-%m-%d %H:%M:%S}")
             for a, b in spans.grace]
    placed = [Mark(x(m.at), m.kind, f"#{m.anchor}", m.title) for m in marks]
    span = end - start
    ticks = [Tick(x(start + span * i / TICKS), _fmt(start + span * i / TICKS, span)) for i in range(TICKS + 1)]
    return Picture(WIDTH, int(y + MARKS_H + 4), rows, grace, grace_y, y - grace_y, placed, y + 4, ticks,
                   start, end)
