"""Listing a whole Stripe list endpoint by `created` ranges, side by side (the sweep, docs/contract.md §12).

A Stripe list is paged with a cursor (`starting_after`): page n+1 cannot be asked for before
page n came back, so one list of 100,000 objects takes 1,000 round trips one after another,
whatever the rate limit. Every list we sweep also filters on `created` (`created[gte]`,
`created[lt]`: https://docs.stripe.com/api/subscriptions/list,
https://docs.stripe.com/api/customers/list, https://docs.stripe.com/api/checkout/sessions/list)
and lists newest first, so disjoint time ranges can be paged at once. This is the binary
subdivision of stripe/sync-engine v2 (its `docs/architecture/binary-subdivision.md`), sized by
what each page shows:

- A range whose page is not full (`has_more` false) is done.
- A full page of a range `[lo, hi)` holds the newest objects of the range down to `created`
  `c`; what is left is `[lo, c]`, plus the rest of second `c` itself. That remainder is split
  into parts expected to hold about one page each (the density of the page just read); the part
  holding second `c` continues from the page's last object (`starting_after`), so the objects of
  second `c` already seen are not listed again and a second holding any number of objects is
  paged by its cursor. Where the remainder is far wider than the page suggests (the first page
  of an account, read down to `floor`), at most MAX_EVEN_PARTS such parts are made and the rest
  is one more part, split in turn by what its own first page shows: years that hold nothing
  cost one request, not one per guess.
- A part made by such a split that comes back full keeps its cursor (`starting_after`)
  instead of being split again. Side by side are as many parts as the splits made (up to
  MAX_EVEN_PARTS + 1 each): far more than the per-endpoint bound on requests in flight lets
  run at once, so the cursors do not set the pace.
- Requests go through the one Stripe client: the shared rate limit and the per-endpoint bound
  on requests in flight (`STRIPE_ENDPOINT_CONCURRENCY`) hold as for every other request; this
  module only makes enough ranges available that the limit, not the cursor, sets the pace.

Objects are yielded once each (by id), in no particular order.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

# Stripe opened to the public in 2011: no account holds an object created before.
EPOCH = 1_293_840_000  # 2011-01-01T00:00:00Z
PAGE = 100
# The pages a part is sized to hold. Simulated on 10,000 objects created in bursts (~40 a
# second, as the sweep benchmark makes them): 1 page a part: 137 requests; 4 pages and
# MAX_EVEN_PARTS 8: 115 (1.15 × objects / PAGE; 1,094 for 100,000 objects instead of 1,438).
PART_PAGES = 4
# Parts sized by a density made at one split at most; the rest of the range is one more part.
# Each costs a request even when empty (past the oldest object): 8 is enough to keep the
# per-endpoint bound on requests in flight (STRIPE_ENDPOINT_CONCURRENCY, 5) busy.
MAX_EVEN_PARTS = 8

Page = Mapping[str, Any]
Fetch = Callable[[dict[str, Any]], Awaitable[Page]]


@dataclass(frozen=True)
class Part:
    """`created` in `[lo, hi)` (`hi` None: no upper bound), after the object `after` if given.
    `sized`: made by a split for about PART_PAGES pages (a full page then continues by cursor)."""

    lo: int
    hi: int | None
    after: str | None = None
    sized: bool = False

    def params(self) -> dict[str, Any]:
        created: dict[str, int] = {"gte": self.lo}
        if self.hi is not None:
            created["lt"] = self.hi
        params: dict[str, Any] = {"created": created}
        if self.after is not None:
            params["starting_after"] = self.after
        return params


def boundaries(lo: int, top: int, per_second: float) -> list[int]:
    """Descending cut points `[top, ..., lo]` splitting `[lo, top)` into parts of about
    PART_PAGES pages each at `per_second` objects a second. Past MAX_EVEN_PARTS such parts the rest of the range
    is one more part: the density of the newest page says little about the years before it, and
    that part's own first page, if full, sizes its split (one request, where parts sized by a
    guess would cost one each, most of them empty)."""
    width = max(1.0, PAGE * PART_PAGES / per_second)
    span = top - lo
    count = math.ceil(span / width)
    if count <= 1:
        return [top, lo]
    if count <= MAX_EVEN_PARTS:
        cuts = [top - round(span * i / count) for i in range(count + 1)]
    else:
        cuts = [top - math.floor(width * i) for i in range(MAX_EVEN_PARTS + 1)] + [lo]
    return sorted(set(cuts), reverse=True)


def next_parts(part: Part, objects: Sequence[Mapping[str, Any]], has_more: bool) -> list[Part]:
    """What is left of `part` after its page `objects` (newest first)."""
    if not has_more or not objects:
        return []
    newest, oldest = int(objects[0]["created"]), int(objects[-1]["created"])
    last = str(objects[-1]["id"])
    top = oldest + 1
    if part.sized:
        return [Part(part.lo, part.hi, last, sized=True)]
    if top - part.lo <= 1:
        # Only second `oldest` is left: its cursor pages it, however many objects it holds.
        return [Part(part.lo, part.hi, last)]
    per_second = len(objects) / (newest - oldest + 1)
    cuts = boundaries(part.lo, top, per_second)
    parts = len(cuts) - 1
    # All but the rest of a long range (the last part past MAX_EVEN_PARTS) are sized.
    sized = [i < MAX_EVEN_PARTS for i in range(parts)]
    return [Part(cuts[i + 1], cuts[i], last if i == 0 else None, sized=sized[i]) for i in range(parts)]


async def list_by_created(fetch: Fetch, params: Mapping[str, Any], *, floor: int = EPOCH) -> AsyncIterator[dict[str, Any]]:
    """Every object of a list (`fetch(params)` reads one page) created at or after `floor`."""
    out: asyncio.Queue[list[dict[str, Any]] | None] = asyncio.Queue()

    async def read(tg: asyncio.TaskGroup, part: Part) -> None:
        page = await fetch({**params, **part.params()})
        objects = list(page.get("data") or [])
        out.put_nowait(objects)
        for nxt in next_parts(part, objects, bool(page.get("has_more"))):
            tg.create_task(read(tg, nxt))

    async def produce() -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(read(tg, Part(floor, None)))
        except BaseExceptionGroup as group:
            # The caller sees the Stripe error itself, as with a cursor-paged list.
            raise group.exceptions[0] from None
        finally:
            out.put_nowait(None)

    producer = asyncio.create_task(produce())
    seen: set[str] = set()
    try:
        while (objects := await out.get()) is not None:
            for obj in objects:
                if obj["id"] not in seen:
                    seen.add(obj["id"])
                    yield obj
        await producer
    finally:
        if not producer.done():
            producer.cancel()
            with suppress(asyncio.CancelledError):
                await producer
