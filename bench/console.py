"""The operator console's cost (docs/contract.md §11): `python -m bench console [--short]`.

- **Customer page**: one customer with 1,000 events and 300 recorded syncs (what Stripe said,
  the decision, its why); `GET /console/customers/C` through the real app (signed in), timed
  on the client over loopback, so the figure includes aiohttp's own work (target < 300 ms).
- **Overview**: with 100,000 customers (`--short`: 10,000), each with a grant, a sync in the
  last hour, two events and a published message: the Postgres queries one refresh runs
  (api/console/overview.py's `QUERIES`, plus `SELECT now()`), each timed alone, and the whole
  page.

The rows are seeded with SQL straight into a database of its own (a measurement, not a test:
the shapes follow shared/publishing/history.py's summaries). Postgres at BENCH_DATABASE_URL
(default postgresql://postgres@127.0.0.1:5432/postgres, where the bench creates and drops its
own database); Redis at BENCH_REDIS_URL (default redis://127.0.0.1:6379/15).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import orjson
from aiohttp.test_utils import TestClient, TestServer

from api.app import create_app
from api.console import overview
from bench.common import append_results
from shared import db
from shared.settings import Settings

SECRET = "bench-console-secret-0123456789"
PAGE_EVENTS = 1000
PAGE_SYNCS = 300
REPEAT = 20
DB_NAME = "entitled_bench_console"

SEED = """
INSERT INTO customers (customer_id, user_id, email)
  SELECT 'cus_b' || i, 'u_' || i, 'user' || i || '@example.com' FROM generate_series(1, $1::int) i;
INSERT INTO customer_sync (customer_id, version, synced_at, last_reason)
  SELECT 'cus_b' || i, 1, now() - (i % 3600) * interval '1 second', 'customer.subscription.updated'
  FROM generate_series(1, $1::int) i;
INSERT INTO entitlements (customer_id, feature, valid_until, subscription_id)
  SELECT 'cus_b' || i, 'pro', now() + interval '30 days', 'sub_b' || i FROM generate_series(1, $1::int) i;
INSERT INTO sync_log (customer_id, synced_at, reason, changed, version, stripe, decision)
  SELECT 'cus_b' || i, now() - (i % 3600) * interval '1 second', 'customer.subscription.updated', true, 1,
         jsonb_build_object('subscriptions', jsonb_build_array(jsonb_build_object('id', 'sub_b' || i, 'status', 'active'))),
         jsonb_build_object('features', jsonb_build_object('pro', jsonb_build_object(
             'valid_until', to_char(now() + interval '30 days', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'), 'subscription_id', 'sub_b' || i)),
             'why', jsonb_build_array('sub_b' || i || ' is active'))
  FROM generate_series(1, $1::int) i;
INSERT INTO event_ledger (event_id, type, customer_id, source, received_at, processed_at, outcome, attempts)
  SELECT 'evt_b' || i, 'customer.subscription.updated', 'cus_b' || (i % $1::int + 1), 'webhook',
         now() - (i % 7200) * interval '1 second', now(), 'changed', 1
  FROM generate_series(1, 2 * $1::int) i;
INSERT INTO outbox (customer_id, version, message, published_at, created_at)
  SELECT 'cus_b' || i, 1, '{"id":"msg_' || i || '","features":["pro"],"added":["pro"],"removed":[]}', now(),
         now() - (i % 3600) * interval '1 second'
  FROM generate_series(1, $1::int) i;
INSERT INTO reconcile_state (name, cursor, updated_at) VALUES ('sweep', 'cus_b5000', now() - interval '5 minutes'),
  ('events', 'evt_b1', now() - interval '20 seconds');
"""

# One customer's long story: PAGE_SYNCS syncs alternating active / past_due, PAGE_EVENTS events.
STORY = """
INSERT INTO customers (customer_id, user_id, email) VALUES ('cus_story', 'u_story', 'story@example.com');
INSERT INTO customer_sync (customer_id, version, synced_at) VALUES ('cus_story', $1::int, now());
INSERT INTO entitlements (customer_id, feature, valid_until, subscription_id)
  VALUES ('cus_story', 'pro', now() + interval '30 days', 'sub_story');
INSERT INTO sync_log (customer_id, synced_at, reason, event_ids, changed, version, stripe, decision)
  SELECT 'cus_story', now() - ($1::int - i) * interval '30 minutes', 'customer.subscription.updated',
         ARRAY['evt_s' || i], true, i,
         jsonb_build_object('subscriptions', jsonb_build_array(jsonb_build_object(
             'id', 'sub_story', 'status', CASE WHEN i % 2 = 0 THEN 'active' ELSE 'past_due' END,
             'products', jsonb_build_array('prod_pro'), 'period_end', '2027-01-01T00:00:00Z'))),
         jsonb_build_object('features', jsonb_build_object('pro', jsonb_build_object(
             'valid_until', to_char(now() + interval '30 days', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'), 'subscription_id', 'sub_story')),
             'why', jsonb_build_array('sub_story is active: si_1 (prod_pro) grants pro until 2027-01-01 00:00 UTC [active]',
                                      'user u_story (from customer_metadata)'))
  FROM generate_series(1, $1::int) i;
INSERT INTO event_ledger (event_id, type, customer_id, source, received_at, processed_at, outcome, attempts)
  SELECT 'evt_s' || i, 'invoice.paid', 'cus_story', 'webhook', now() - i * interval '9 minutes', now(), 'unchanged', 1
  FROM generate_series(1, $2::int) i;
"""


def _url(base: str, name: str) -> str:
    parts = urlsplit(base)
    return urlunsplit(parts._replace(path=f"/{name}"))


async def _fresh_database(admin_url: str) -> str:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
        await conn.execute(f"CREATE DATABASE {DB_NAME}")
    finally:
        await conn.close()
    return _url(admin_url, DB_NAME)


async def _seed(url: str, customers: int) -> None:
    conn = await asyncpg.connect(url)
    try:
        await db.migrate(conn)
        for statement in filter(str.strip, SEED.split(";\n")):
            await conn.execute(statement, customers) if "$1" in statement else await conn.execute(statement)
        # the story's two counts are our own constants, written in (a parameter must be used)
        story = STORY.replace("$1::int", str(PAGE_SYNCS)).replace("$2::int", str(PAGE_EVENTS))
        for statement in filter(str.strip, story.split(";\n")):
            await conn.execute(statement)
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


def _ms(samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    return f"{statistics.median(ordered) * 1000:.1f} ms median, {p95 * 1000:.1f} ms p95"


async def _time(call: Any) -> list[float]:
    samples = []
    for _ in range(REPEAT):
        started = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - started)
    return samples


async def run_benchmark(customers: int) -> dict[str, str]:
    admin = os.environ.get("BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    url = await _fresh_database(admin)
    await _seed(url, customers)
    settings = Settings(database_url=url, redis_url=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15"),
                        stripe_api_key="sk_test_bench", api_tokens={"bench": SECRET}, log_level="WARNING")
    found: dict[str, str] = {}
    async with TestClient(TestServer(create_app(settings))) as client:
        form = await (await client.get("/console/sign-in")).text()
        token = form.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        signed = await client.post("/console/sign-in", data={"secret": SECRET, "csrf": token}, allow_redirects=False)
        assert signed.status == 303, signed.status

        async def page(path: str) -> None:
            resp = await client.get(path)
            assert resp.status == 200, resp.status
            await resp.read()

        await page("/console/customers/cus_story")  # warm up
        found["customer page (1,000 events, 300 syncs)"] = _ms(await _time(lambda: page("/console/customers/cus_story")))
        await page("/console/overview")
        found["overview page, whole"] = _ms(await _time(lambda: page("/console/overview")))
    pool = await db.create_pool(url)
    try:
        for name, sql in [*overview.QUERIES.items(), ("now", "SELECT now()")]:
            found[f"overview query `{name}`"] = _ms(await _time(lambda sql=sql: pool.fetch(sql)))
    finally:
        await pool.close()
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
    finally:
        await conn.close()
    return found


def report(found: dict[str, str], customers: int) -> str:
    lines = [f"{customers:,} customers; each figure over {REPEAT} runs, after one warm-up. One overview refresh "
             f"runs {len(overview.QUERIES) + 1} Postgres queries (below) and 3 Redis commands (ZCARD, GET, TIME).",
             "", "| what | time |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in found.items()]
    return "\n".join(lines)


def main(short: bool) -> None:
    customers = 10_000 if short else 100_000
    found = asyncio.run(run_benchmark(customers))
    body = report(found, customers)
    print(body)
    append_results("Operator console" + (" (short)" if short else ""),
                   "python -m bench console" + (" --short" if short else ""), body)
    print(orjson.dumps(found).decode())
