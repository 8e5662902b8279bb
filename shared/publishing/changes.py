"""What a sync changed for one customer, and whether that is worth a message (docs/contract.md §6): pure.

The store reads what it held (entitlement rows and the user) inside its write transaction and
asks `diff` what changed: the rows decide whether the entitlements are rewritten; the features
and the user decide whether an `access-changed` message goes out. A later `valid_until` alone
(a renewal) rewrites the rows but tells no one: consumers hear only of features and users,
and (docs/contract.md §6) of each feature's quantity and each limit's value: a change of either
alone is a change.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple


class EntitlementRow(NamedTuple):
    """One row of the `entitlements` table, as stored (wall clock)."""

    feature: str
    valid_until: datetime | None
    subscription_id: str
    # docs/contract.md §5.2: the summed quantity of the items granting it
    quantity: int = 1


class LimitRow(NamedTuple):
    """One row of the `entitlement_limits` table, as stored (wall clock)."""

    name: str
    value: int
    valid_until: datetime | None
    source_id: str


@dataclass(frozen=True)
class Change:
    before: frozenset[str]
    after: frozenset[str]
    user_before: str | None
    user_after: str | None
    # the stored rows differ (a feature, its valid_until or the subscription granting it)
    rows_changed: bool
    quantities_before: Mapping[str, int] = field(default_factory=dict)
    quantities_after: Mapping[str, int] = field(default_factory=dict)
    limits_before: Mapping[str, int] = field(default_factory=dict)
    limits_after: Mapping[str, int] = field(default_factory=dict)
    # the stored limit rows differ (a value, a valid_until or the source)
    limit_rows_changed: bool = False

    @property
    def added(self) -> frozenset[str]:
        return self.after - self.before

    @property
    def removed(self) -> frozenset[str]:
        return self.before - self.after

    @property
    def user_changed(self) -> bool:
        return self.user_before != self.user_after

    @property
    def amounts_changed(self) -> bool:
        """A feature's quantity or a limit's value changed (docs/contract.md §6)."""
        return self.quantities_before != self.quantities_after or self.limits_before != self.limits_after

    @property
    def publish(self) -> bool:
        """Whether consumers hear of it: a feature came or went, the user changed, or a
        quantity or limit did."""
        return bool(self.added or self.removed) or self.user_changed or self.amounts_changed


def diff(
    held: Iterable[EntitlementRow],
    user_before: str | None,
    rows: Iterable[EntitlementRow],
    user_after: str | None,
    *,
    held_limits: Iterable[LimitRow] = (),
    limits: Iterable[LimitRow] = (),
) -> Change:
    """Compare what was stored with what this sync decided."""
    held_rows, new_rows = frozenset(held), frozenset(rows)
    held_limit_rows, new_limit_rows = frozenset(held_limits), frozenset(limits)
    return Change(
        before=frozenset(r.feature for r in held_rows),
        after=frozenset(r.feature for r in new_rows),
        user_before=user_before,
        user_after=user_after,
        rows_changed=held_rows != new_rows,
        quantities_before={r.feature: r.quantity for r in held_rows},
        quantities_after={r.feature: r.quantity for r in new_rows},
        limits_before={r.name: r.value for r in held_limit_rows},
        limits_after={r.name: r.value for r in new_limit_rows},
        limit_rows_changed=held_limit_rows != new_limit_rows,
    )
