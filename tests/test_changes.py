"""The change diff of a sync (`shared.publishing.changes`): pure, so tested on plain rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from shared.publishing import EntitlementRow, diff

T0 = datetime(2027, 1, 1, tzinfo=UTC)

rows = st.frozensets(st.builds(
    EntitlementRow,
    feature=st.sampled_from(["basic", "pro", "export"]),
    valid_until=st.none() | st.integers(0, 3).map(lambda d: T0 + timedelta(days=d)),
    subscription_id=st.sampled_from(["sub_1", "sub_2"]),
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
    assert change.publish == (before != after or user_before != user_after)


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
