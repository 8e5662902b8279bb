"""The transactional outbox: a change's message is written in the transaction that makes it.

`append` runs inside the sync's write transaction, so a change that commits is published even
when Redis is down at the time; the relay (`relay.py`) publishes committed rows in order. The
NOTIFY wakes the relay at once instead of on its next poll (Postgres delivers it on commit).
"""

from __future__ import annotations

import asyncpg

from shared import tracing
from shared.publishing.messages import AccessChanged

OUTBOX_CHANNEL = "entitled_outbox"


async def append(conn: asyncpg.Connection, message: AccessChanged) -> None:
    """Queue `message` for publishing; call inside the transaction that makes the change."""
    tracing.outbox_appended(message.customer_id, message.version, message.id)
    await conn.execute(
        "INSERT INTO outbox (customer_id, version, message) VALUES ($1, $2, $3)",
        message.customer_id,
        message.version,
        message.to_json(),
    )
    await conn.execute(f"NOTIFY {OUTBOX_CHANNEL}")
