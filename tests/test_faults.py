"""The fault run's short form (docs/reliability.md), in CI: bench/faults.py with 50 customers and one minute
of faults, on a Postgres and a Redis of its own (it restarts both). `python -m bench.faults` is
the full run (500 customers); docs/reliability.md has its figures.
"""

from __future__ import annotations

import pytest

from bench.faults import FaultConfig, run


@pytest.mark.slow
async def test_short_fault_run_loses_nothing_and_grants_nothing_wrongly() -> None:
    """50 customers go through random lifecycles on test clocks and the wall clock while webhooks
    are duplicated, shuffled, delayed and dropped, the API answers 429/500 and slowly, workers
    are SIGKILLed and restarted, Redis and Postgres restart once each, and Redis is lost once
    (SIGKILL, back empty). Afterwards every
    customer's view equals the truth (the policy over the fake's state), every change was
    published with contiguous versions, and no wrongful grant outlasted the bound."""
    report = await run(FaultConfig.short(), command="pytest tests/test_faults.py")

    # the faults really happened
    assert report.customers >= 45
    assert report.deliveries["duplicate_same_id"] > 0
    assert report.deliveries["dropped"] > 0
    assert report.api["429"] > 0
    assert report.api["500"] > 0
    assert report.processes["kills"] >= 3
    assert report.outages["redis_down_s"] > 0
    assert report.outages["postgres_down_s"] > 0
    assert report.outages["redis_lost_down_s"] > 0  # Redis killed and back empty
    assert report.driver_errors == {}, "a lifecycle script failed: the run did less than it says"
    # one-time purchases (docs/contract.md §5.1), refunds and disputes among the lifecycles
    assert report.actions.get("purchase_guest", 0) + report.actions.get("purchase_customer", 0) > 0

    # and nothing was lost or granted wrongly
    assert report.mismatches == [], report.markdown()
    # without `resync --all` too: the backstop, the poller and the sweep repaired the Redis loss
    assert report.mismatches_after_poller == [], report.markdown()
    assert report.stream_problems == [], report.markdown()
    assert report.stream["entries"] >= report.customers
    assert report.wrongful_over_bound == [], report.markdown()
    assert report.processes["unexpected_exits"] == 0, "a service process died on its own"
