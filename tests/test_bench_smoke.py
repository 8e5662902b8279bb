"""The worker, sweep and sync benchmarks (bench/workers.py, bench/sweep.py, bench/sync.py) run end to end in their
smallest form: the commands work and what they count is consistent. Nothing here is timed:
these assert on correctness only, never on speed (the figures live in docs/benchmarks.md)."""

from __future__ import annotations

from bench import cost, sweep, workers
from bench import sync as sync_bench


async def test_workers_benchmark_smoke() -> None:
    """Ten checkout bursts drained by one worker under the fake's 25/s limit, then three
    purchases at low load: every customer gets its feature, its user and exactly one message;
    one sync per burst; the fake's request count matches what the workers say they read."""
    [result] = await workers.run_benchmark(workers.SMOKE)
    customers = workers.SMOKE.customers
    assert result.customers == customers
    assert result.granted == customers + workers.SMOKE.latency_samples
    assert result.messages == result.granted  # one access-changed per purchase, not two or ten
    assert customers <= result.syncs <= 2 * customers
    # Each first sync reads the subscriptions only: the burst's checkout.session.completed names
    # the user (docs/contract.md §8); Stripe's own entitlements are only a sampled audit, off in the
    # benches: one request, plus a 429 retried now and then.
    assert result.requests - result.rejected == result.syncs
    assert len(result.latencies_s) == workers.SMOKE.latency_samples
    assert all(latency > 0 for latency in result.latencies_s)
    assert result.bound_s > 0
    assert "| 1 | 10 |" in workers.report([result], workers.SMOKE)


async def test_sweep_benchmark_smoke() -> None:
    """A sweep of 30 customers on an empty database queues all 30; after they are synced, a
    second sweep finds nothing to do. Both list every customer and subscription once."""
    results, facts = await sweep.run_benchmark(sweep.SMOKE)
    cold, warm = results
    n = sweep.SMOKE.customers
    assert (cold.case, warm.case) == ("cold", "warm")
    assert cold.queued == n
    assert facts["synced"] == n
    assert warm.queued == 0
    for r in results:
        assert r.subscriptions == n
        assert r.listed_customers == n
        assert r.pages.get("GET /v1/subscriptions") == 1
        assert r.pages.get("GET /v1/customers") == 1
        assert r.rejected == 0
    assert "| cold | 30 |" in sweep.report(results, facts)


async def test_cost_benchmark_smoke() -> None:
    """The cost table's short form (`python -m bench cost --short`, 200 customers, ~15 s at load
    2.4; bench/cost.py): each family of keys is found where the
    seeding put it (one dedupe key per accepted event, one unit hash per customer, the stream),
    our tables hold bytes, every customer was synced once and republished once by the relay."""
    [n] = cost.SHORT
    result = await cost.measure(n)
    assert result.customers == n
    assert result.syncs >= n
    families = {f.name: f for f in result.families}
    assert families["dedupe (`seen:<event>`)"].keys >= n
    assert families["unit hashes (`unit:{…}`)"].keys >= n
    assert families["stream `access-changed`"].bytes_total > 0
    assert result.tables["customers"] > 0
    assert result.relay_messages >= n
    assert result.sweep is not None
    assert result.sweep.queued == 0  # warm: our copy equals Stripe's
    assert result.resync_requests >= n
    assert f"| {n} |" in cost.report([result])


async def test_sync_benchmark_smoke() -> None:
    """Three `POST /v1/sync` calls through the real api and worker: each answers 200, each is
    matched to the worker's run of that customer, and each run read Stripe."""
    result = await sync_bench.run(3)
    assert result["n"] == 3
    assert result["bad"] == 0
    assert len(result["e2e"]) == len(result["held"]) == 3
    assert all(q >= 1 for q in result["requests"])
    assert "| **overhead**" in sync_bench.report(result)
