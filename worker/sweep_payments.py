"""The sweep's share of one-time purchases and disputes (docs/contract.md §12, §5.1).

Beside every subscription and customer, the sweep lists every completed Checkout Session and
every dispute. A paid payment-mode session we do not hold as granting, an open dispute on a
charge we do not hold as suspended, and a purchase we hold as suspended whose dispute is no
longer open are each synced (reason `purchase`: that sync reads the payments).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

from shared.access import OPEN_DISPUTE, is_purchase, ref_id
from shared.bootstrap import Services
from shared.coordination import Unit, UnitKind
from worker import listing

REASON = "purchase"


def _listed(deps: Services, path: str, params: Mapping[str, Any]) -> AsyncIterator[dict[str, Any]]:
    """Every object of the list, by `created` ranges side by side, as the sweep's other lists
    (worker/listing.py: within the shared rate limit, never above it)."""
    return listing.list_by_created(lambda p: deps.reader.page(path, p), params)


def owner(session: Mapping[str, Any]) -> str | None:
    """The customer a purchase belongs to: its Customer, else itself (a guest)."""
    return ref_id(session.get("customer")) or ref_id(session.get("id"))


async def sweep_payments(deps: Services) -> dict[str, int]:
    held = {r["session_id"]: r["row"] for r in await deps.pool.fetch("SELECT session_id, row FROM purchases")}
    suspended = {r["charge_id"]: r["customer_id"] for r in await deps.pool.fetch(
        "SELECT charge_id, customer_id FROM purchases WHERE row = 'DISPUTED' AND charge_id IS NOT NULL")}
    customers: set[str] = set()
    charges: set[str] = set()
    paid = 0
    async for session in _listed(deps, "/v1/checkout/sessions", {"status": "complete"}):
        if not is_purchase(session) or session.get("payment_status") != "paid":
            continue
        paid += 1
        if held.get(str(session.get("id"))) in (None, "UNPAID") and (cid := owner(session)):
            customers.add(cid)
    open_charges: set[str] = set()
    async for dispute in _listed(deps, "/v1/disputes", {}):
        charge = ref_id(dispute.get("charge"))
        if charge and dispute.get("status") in OPEN_DISPUTE:
            open_charges.add(charge)
            if charge not in suspended:
                charges.add(charge)
    # held as suspended, but its dispute closed meanwhile
    customers |= {cid for charge, cid in suspended.items() if charge not in open_charges}
    await asyncio.gather(*(deps.coordinator.accept(Unit.customer(c), reason=REASON) for c in sorted(customers)),
                         *(deps.coordinator.accept(Unit(UnitKind.CHARGE, c), reason=REASON) for c in sorted(charges)))
    return {"paid_sessions": paid, "open_disputes": len(open_charges), "queued_payments": len(customers) + len(charges)}
