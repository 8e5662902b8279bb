"""Every Redis key and channel name we use, in one place (as arq keeps its own in `constants`).

All our keys start with a configurable prefix so that several deployments, or test runs, can
share one Redis. arq's keys are namespaced by its queue name, which we derive from the prefix.
The stream and channel names are part of the contract (docs/contract.md §6) and take no prefix
unless the deployment asks for one.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from arq.constants import job_key_prefix

from shared.coordination.units import Unit

# docs/contract.md §6: the stream and the pub/sub channel share this name.
ACCESS_CHANGED = "access-changed"

DEDUPE_TTL_S = 4 * 86400  # Stripe retries for up to 3 days; keep ids a day longer.


@dataclass(frozen=True)
class Keys:
    prefix: str = "entitled"
    # When set, the stream and channel are named f"{stream_prefix}access-changed" (tests use it).
    stream_prefix: str = ""

    @property
    def queue(self) -> str:
        """arq's queue; its job keys are `job_prefix + <id>` whatever the queue name."""
        return f"{self.prefix}:queue"

    @property
    def job_prefix(self) -> str:
        """arq's job keys, `arq:job:<id>` (arq's own constant): the Lua writes jobs in arq's format."""
        return job_key_prefix

    def job(self, job_id: str) -> str:
        return f"{self.job_prefix}{job_id}"

    def seen(self, event_id: str) -> str:
        """Set once per accepted event id, for deduplication."""
        return f"{self.prefix}:seen:{event_id}"

    def unit(self, unit: Unit) -> str:
        """The coordination hash of one unit; see coordinator.py."""
        head, tail = self.unit_key_parts
        return f"{head}{unit.wire}{tail}"

    @cached_property  # the receiver names a unit's keys on every event
    def unit_key_parts(self) -> tuple[str, str]:
        """`unit(u) == head + u.wire + tail`: for the timer script, which finds units in sorted
        sets and is handed these two parts rather than spelling the name itself."""
        return f"{self.prefix}:unit:{{", "}"

    def unit_events(self, unit: Unit) -> str:
        """Accepted events not yet written to the ledger, oldest first."""
        return self.events_of(self.unit(unit))

    def events_of(self, unit_key: str) -> str:
        """`unit_events` of the unit whose hash is `unit_key` (the receiver has it at hand)."""
        return f"{unit_key}:events"

    @property
    def parked(self) -> str:
        """Sorted set: unit -> when (ms) it was parked after too many non-retryable failures."""
        return f"{self.prefix}:parked"

    @property
    def catalog_dirty(self) -> str:
        """Set of product ids whose catalog entry must be refreshed (`*` = all)."""
        return f"{self.prefix}:catalog:dirty"

    @property
    def rechecks(self) -> str:
        """Sorted set: customer id -> when (ms) its next re-check is due. One entry per customer."""
        return f"{self.prefix}:rechecks"

    @property
    def leases(self) -> str:
        """Sorted set: unit -> when (ms) the lease of its live run expires."""
        return f"{self.prefix}:leases"

    @property
    def syncs_done(self) -> str:
        """Pub/sub channel: one message per finished run (`Coordinator.announce`), which
        `POST /v1/sync` waits on instead of polling Postgres."""
        return f"{self.prefix}:syncs-done"

    @property
    def jobs_due(self) -> str:
        """Pub/sub channel: a job was made due now for a caller waiting on it
        (`Coordinator.expedite`); an idle worker polls its queue at once, not at its next poll."""
        return f"{self.prefix}:jobs-due"

    def api_sync_throttle(self, subject: str) -> str:
        """Set for 5 s by each `POST /v1/sync` of this customer or session id (docs/contract.md §10)."""
        return f"{self.prefix}:api:sync:{subject}"

    def console_sign_in(self, client: str) -> str:
        """Sign-in attempts to the operator console from one client address (a counter)."""
        return f"{self.prefix}:console:sign-in:{client}"

    def rate(self, bucket: str) -> str:
        return f"{self.prefix}:rate:{bucket}"

    def cron(self, name: str, slot: int) -> str:
        """Claimed by the one worker that runs cron job `name` for schedule slot `slot`."""
        return f"{self.prefix}:cron:{name}:{slot}"

    def health(self, worker_name: str) -> str:
        return f"{self.prefix}:health:{worker_name}"

    @property
    def stream(self) -> str:
        return f"{self.stream_prefix}{ACCESS_CHANGED}"

    @property
    def channel(self) -> str:
        return f"{self.stream_prefix}{ACCESS_CHANGED}"
