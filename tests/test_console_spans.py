"""The console's history → picture (api/console/spans.py, picture.py; docs/contract.md §11):
bands per subscription by status, bars per feature for the span granted, grace where past_due."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from api.console import picture, spans

T0 = datetime(2026, 12, 1, tzinfo=UTC)


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def obs(minute: int, statuses: dict[str, str], features: dict[str, int | None]) -> spans.Observation:
    return spans.Observation(at(minute), statuses,
                             {f: None if m is None else at(m) for f, m in features.items()})


def test_bands_follow_status_changes_and_end_when_a_subscription_goes() -> None:
    found = spans.spans([
        obs(0, {"sub_1": "trialing"}, {"pro": 100}),
        obs(10, {"sub_1": "trialing"}, {"pro": 100}),
        obs(20, {"sub_1": "paused"}, {}),
        obs(30, {"sub_2": "active"}, {"pro": 1000}),
    ], now=at(40))
    assert [(b.source_id, b.status, b.start, b.end) for b in found.bands] == [
        ("sub_1", "trialing", at(0), at(20)),
        ("sub_1", "paused", at(20), at(30)),
        ("sub_2", "active", at(30), at(40)),
    ]
    assert [(b.feature, b.start, b.end) for b in found.bars] == [("pro", at(0), at(20)), ("pro", at(30), at(40))]
    assert found.grace == []


def test_a_bar_ends_at_valid_until_when_no_sync_comes_before() -> None:
    found = spans.spans([obs(0, {"sub_1": "active"}, {"pro": 15}), obs(30, {"sub_1": "canceled"}, {})],
                        now=at(40))
    assert [(b.start, b.end) for b in found.bars] == [(at(0), at(15))]
    forever = spans.spans([obs(0, {"sub_1": "active"}, {"pro": None})], now=at(5))
    assert [(b.start, b.end) for b in forever.bars] == [(at(0), at(5))]


def test_grace_is_where_past_due_still_grants() -> None:
    found = spans.spans([
        obs(0, {"sub_1": "active"}, {"pro": 100, "export": 100}),
        obs(10, {"sub_1": "past_due"}, {"pro": 100}),
        obs(20, {"sub_1": "active"}, {"pro": 100}),
    ], now=at(30))
    assert found.grace == [(at(10), at(20))]
    assert [(b.feature, b.start, b.end) for b in found.bars] == [("export", at(0), at(10)), ("pro", at(0), at(30))]


def test_order_of_observations_does_not_matter_and_purchases_get_a_band() -> None:
    given = [obs(5, {}, {"lifetime": None}), obs(0, {}, {})]
    found = spans.spans(given, now=at(10))
    assert [(b.source_id, b.status) for b in found.bands] == []  # the purchase id comes from the decision
    row: dict[str, Any] = {"features": {"lifetime": {"valid_until": None, "subscription_id": "cs_1"}}}
    seen = spans.observation(at(0), {"subscriptions": []}, row)
    assert seen.statuses == {"cs_1": "purchase"}
    assert seen.features == {"lifetime": None}


def test_observation_reads_a_sync_log_row() -> None:
    stripe = {"subscriptions": [{"id": "sub_1", "status": "past_due"}]}
    decision = {"features": {"pro": {"valid_until": "2026-12-08T00:00:00Z", "subscription_id": "sub_1"}}}
    seen = spans.observation(at(0), stripe, decision)
    assert seen.statuses == {"sub_1": "past_due"}
    assert seen.features == {"pro": datetime(2026, 12, 8, tzinfo=UTC)}


def test_the_picture_places_rows_in_time_order_left_to_right() -> None:
    found = spans.spans([obs(0, {"sub_1": "trialing"}, {"pro": 100}), obs(30, {"sub_1": "active"}, {"pro": 100})],
                        now=at(60))
    drawn = picture.layout(found, [picture.MarkAt(at(30), "sync", "sync-x", "sync")], now=at(60))
    band_row = next(r for r in drawn.rows if r.kind == "band")
    trialing, active = band_row.rects
    assert (trialing.css, active.css) == ("trialing", "active")
    assert trialing.x == picture.LABEL_W
    assert abs(trialing.x + trialing.width - active.x) < 0.01
    assert abs(active.x + active.width - (picture.WIDTH - 10)) < 0.01
    assert drawn.marks[0].href == "#sync-x"
    assert abs(drawn.marks[0].x - active.x) < 0.01
