"""Resync a customer now, or replay a failed event or a parked unit: what `entitled resync
--customer`, `entitled replay` (worker/cli.py) and the operator console's buttons (api/console/)
all do, through the coordination scripts like any other work (docs/contract.md §11, §12)."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from shared.coordination import AcceptedEvent, Coordinator, Unit, UnitKind


class ReplayError(ValueError):
    """Nothing to replay under that id."""


@dataclass(frozen=True)
class Replayed:
    target: str
    customer_id: str | None  # None for a parked unit that is not a customer's
    event_type: str | None  # None for a parked unit


async def resync(coordinator: Coordinator, customer_id: str, *, reason: str = "resync") -> None:
    """Queue the customer's sync with no delay; a parked customer is taken out of the park."""
    await coordinator.accept(Unit.customer(customer_id), reason=reason, delay_ms=0, unpark=True)


async def replay(pool: asyncpg.Pool, coordinator: Coordinator, target: str) -> Replayed:
    """Process a ledger event's customer again (the event marked `replay`), or a parked unit."""
    parked = {p.unit.wire: p.unit for p in await coordinator.parked_units()}
    if target in parked:
        unit = parked[target]
        await coordinator.accept(unit, reason="replay", delay_ms=0, unpark=True)
        return Replayed(target, unit.id if unit.kind is UnitKind.CUSTOMER else None, None)
    row = await pool.fetchrow("SELECT type, customer_id FROM event_ledger WHERE event_id = $1", target)
    if row is None:
        raise ReplayError(f"{target} is not in the ledger (only accepted events are), nor a parked unit")
    if not row["customer_id"]:
        raise ReplayError(f"{target} ({row['type']}) names no customer; `entitled events --failed` lists parked units")
    record = AcceptedEvent.now(target, row["type"], "replay")
    await coordinator.accept(Unit.customer(row["customer_id"]), event=record, reason=row["type"], delay_ms=0,
                             unpark=True)
    return Replayed(target, row["customer_id"], row["type"])
