"""What a sync changed for one customer, and whether that is worth a message (docs/contract.md §6): pure.

The store reads what it held (entitlement rows and the user) inside its write transaction and
asks `diff` what changed: the rows decide whether the entitlements are rewritten; the features
and the user decide whether an `access-changed` message goes out. A later `valid_until` alone
(a renewal) rewrites the rows but tells no one: consumers hear only of features and users.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple


class EntitlementRow(NamedTuple):
    """One row of the `entitlements` table, as stored (wall clock)."""

    feature: str
    valid_until: datetime | None
    subscription_id: str


@dataclass(frozen=True)
class Change:
    before: frozenset[str]
    after: frozenset[str]
    user_before: str | None
    user_after: str | None
    # the stored rows differ (a feature, its valid_until or the subscription granting it)
    rows_changed: bool

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
    def publish(self) -> bool:
        """Whether consumers hear of it: a feature came or went, or the user changed."""
        return bool(self.added or self.removed) or self.user_changed


def diff(
    held: Iterable[EntitlementRow],
    user_before: str | None,
    rows: Iterable[EntitlementRow],
    user_after: str | None,
) -> Change:
    """Compare what was stored with what this sync decided."""
    held_rows, new_rows = frozenset(held), frozenset(rows)
    return Change(
        before=frozenset(r.feature for r in held_rows),
        after=frozenset(r.feature for r in new_rows),
        user_before=user_before,
        user_after=user_after,
        rows_changed=held_rows != new_rows,
    )
