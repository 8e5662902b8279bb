"""The change diff of a sync (`shared.publishing.changes`): pure, so tested on plain rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
from hypothesis import given
from hypothesis import strategies as st

from shared.publishing import AccessChanged, EntitlementRow, LimitRow, diff

T0 = datetime(2027, 1, 1, tzinfo=UTC)

rows = st.frozensets(st.builds(
    EntitlementRow,
    feature=st.sampled_from(["basic", "pro", "export"]),
    valid_until=st.none() | st.integers(0, 3).map(lambda d: T0 + timedelta(days=d)),
    subscription_id=st.sampled_from(["sub_1", "sub_2"]),
    quantity=st.sampled_from([1, 5, 8]),
), max_size=4)
users = st.none() | st.sampled_from(["u_1", "u_2"])


@given(held=rows, user_before=users, new=rows, user_after=users)
def test_diff_is_the_set_difference(held: frozenset[EntitlementRow], user_before: str | None,
                                    new: frozenset[EntitlementRow], user_after: str | None) -> None:
    change = diff(held, user_before, new, user_after)
    before, after = {r.feature for r in held}, {r.feature for r in new}
    assert change.added == after - before
    assert change.removed == before - after
    assert change.user_changed == (user_before != user_after)
    assert change.rows_changed == (held != new)
    quantities = ({r.feature: r.quantity for r in held}, {r.feature: r.quantity for r in new})
    assert change.publish == (before != after or user_before != user_after or quantities[0] != quantities[1])


def test_a_renewal_rewrites_rows_but_tells_no_one() -> None:
    """Only valid_until moved: the rows are rewritten, no message goes out."""
    held = [EntitlementRow("pro", T0, "sub_1")]
    change = diff(held, "u_1", [EntitlementRow("pro", T0 + timedelta(days=30), "sub_1")], "u_1")
    assert change.rows_changed
    assert not change.publish


def test_a_user_found_later_is_a_change() -> None:
    row = EntitlementRow("pro", T0, "sub_1")
    change = diff([row], None, [row], "u_1")
    assert (change.publish, change.rows_changed, change.added, change.removed) == (True, False, frozenset(), frozenset())


def test_features_came_and_went() -> None:
    change = diff([EntitlementRow("basic", T0, "sub_1")], "u_1", [EntitlementRow("pro", T0, "sub_2")], "u_1")
    assert (change.added, change.removed) == (frozenset({"pro"}), frozenset({"basic"}))
    assert (change.before, change.after) == (frozenset({"basic"}), frozenset({"pro"}))


def test_a_quantity_alone_is_a_change() -> None:
    """docs/contract.md §6: 5 seats raised to 8, same features, same user: published."""
    change = diff([EntitlementRow("team", T0, "sub_1", 5)], "u_1", [EntitlementRow("team", T0, "sub_1", 8)], "u_1")
    assert (change.added, change.removed, change.user_changed) == (frozenset(), frozenset(), False)
    assert change.publish
    assert change.rows_changed
    assert (dict(change.quantities_before), dict(change.quantities_after)) == ({"team": 5}, {"team": 8})


def test_a_limit_alone_is_a_change_but_its_valid_until_is_not() -> None:
    row = EntitlementRow("team", T0, "sub_1", 5)
    held = [LimitRow("projects", 25, T0, "sub_1")]
    raised = diff([row], "u_1", [row], "u_1", held_limits=held, limits=[LimitRow("projects", 40, T0, "sub_1")])
    assert raised.publish
    assert raised.limit_rows_changed
    assert not raised.rows_changed
    assert dict(raised.limits_after) == {"projects": 40}
    renewed = diff([row], "u_1", [row], "u_1", held_limits=held,
                   limits=[LimitRow("projects", 25, T0 + timedelta(days=30), "sub_1")])
    assert renewed.limit_rows_changed
    assert not renewed.publish
    gone = diff([row], "u_1", [row], "u_1", held_limits=held, limits=[])
    assert gone.publish
    assert dict(gone.limits_after) == {}


def test_messages_carry_quantities_and_limits_and_read_old_ones() -> None:
    """Every message has `quantities` and `limits` (`{}` when empty); one written before them
    reads back with `{}`."""
    message = AccessChanged.build(customer_id="cus_1", user_id="u_1", before=frozenset(), after=frozenset({"team"}),
                                  version=1, reason="sync", livemode=False,
                                  quantities={"team": 8}, limits={"projects": 40})
    raw = orjson.loads(message.to_json())
    assert (raw["quantities"], raw["limits"]) == ({"team": 8}, {"projects": 40})
    assert AccessChanged.from_json(message.to_json()) == message
    del raw["quantities"], raw["limits"]
    old = AccessChanged.from_json(orjson.dumps(raw))
    assert (old.quantities, old.limits) == ({}, {})
    empty = AccessChanged.build(customer_id="cus_1", user_id=None, before=frozenset(), after=frozenset(),
                                version=2, reason="sync", livemode=False)
    assert orjson.loads(empty.to_json())["limits"] == {}
