"""The service against two of Stripe's harder answers (docs/contract.md §4, §8):

- a customer deleted with its test clock: Stripe deletes a test clock's objects with it
  (https://docs.stripe.com/billing/testing/test-clocks), and every read of the customer then
  answers `resource_missing`. The sync treats the customer as gone, ends its access, and does
  not retry;
- endpoint-concurrency 429s: Stripe sheds concurrent requests to one endpoint with 429 and
  `Stripe-Rate-Limited-Reason: endpoint-concurrency`, without retry headers
  (https://docs.stripe.com/rate-limits). The service's syncs retry them and still arrive.
"""

from __future__ import annotations

import asyncio
from typing import Any

from tests.test_cli import entitled


async def test_customer_deleted_with_its_test_clock_is_gone(stack_factory: Any) -> None:
    """Deleting the test clock deletes its customer; the next sync of that customer finds it
    missing, ends access with one message, marks the customer deleted and leaves nothing queued."""
    async with stack_factory(workers=1) as stack:
        _, price = await stack.product("Pro", ["pro"])
        clock, _ = await stack.clock()
        cus = await stack.customer(clock=clock, metadata={"user_id": "u_clock"})
        await stack.subscribe(cus, price)
        await stack.wait_features(cus, {"pro"})
        await stack.settle()
        await stack.stripe.v1.test_helpers.test_clocks.delete_async(clock)
        code, out, err = await entitled(stack, "resync", "--customer", cus)
        assert code == 0, out + err
        await stack.wait_features(cus, set())
        await stack.settle()  # quiet: no sync of it left queued or retrying
        last = (await stack.messages(cus))[-1]
        assert (last.removed, last.user_id) == (("pro",), "u_clock")
        assert await stack.pool.fetchval("SELECT deleted FROM customers WHERE customer_id = $1", cus)


async def test_syncs_survive_endpoint_concurrency_429s(stack_factory: Any) -> None:
    """With Stripe allowing one request in flight per endpoint (and 50 ms per request), a
    burst of purchases still reaches every customer: the client retries the 429s, so no sync
    fails, and none is lost."""
    async with stack_factory(workers=2) as stack:
        _, price = await stack.product("Pro", ["pro"])
        await stack.ctl.set_api_faults(endpoint_concurrency=1, latency_ms=50, methods=["GET"])
        await stack.ctl.reset_stats()
        customers = [await stack.customer(metadata={"user_id": f"u_{n}"}) for n in range(8)]
        await asyncio.gather(*(stack.subscribe(cus, price) for cus in customers))
        for cus in customers:
            await stack.wait_features(cus, {"pro"}, timeout_s=60)
        stats = await stack.ctl.stats()
        await stack.ctl.clear_api_faults()
        assert stats["statuses"].get("429", 0) > 0, "the fault never fired: the test proves nothing"
        await stack.settle()
        for cus in customers:
            assert [m.added for m in await stack.messages(cus)] == [("pro",)]
        # The client retried them itself: no sync failed and had to be run again.
        assert [e for e in stack.worker_logs() if e.get("event") == "sync.failed"] == []
