"""Fixtures: a Redis server and a Postgres template of this run's own; a fresh database and an
empty Redis for every test; settings pointing at them. Nothing here is mocked."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis.asyncio

from shared.settings import Settings
from tests.support.pg import PgCluster
from tests.support.redis_server import RedisServer
from tests.support.stack import Stack, running_stack
from tests.support.stripe_requests import RECORDED, SHAPE_PROBLEMS, request_problems

WEBHOOK_SECRET = "whsec_test_0123456789abcdef"
API_KEY = "sk_test_fake"


@pytest.fixture(scope="session", autouse=True)
def stripe_requests_follow_spec() -> Iterator[None]:
    """At the session's end: every request the service made to a test stack's fake Stripe is a
    GET on docs/contract.md §8's list, with SDK-declared parameters and expand paths of at most four
    levels (tests/support/stripe_requests.py). Fails the run as an error at teardown."""
    yield
    problems = request_problems(RECORDED)
    if problems:
        pytest.fail("the service asked Stripe for what docs/contract.md §8 does not allow:\n" + "\n".join(problems),
                    pytrace=False)


@pytest.fixture(scope="session", autouse=True)
def stripe_objects_match_the_sdk() -> Iterator[None]:
    """At the session's end: every object a test stack's fake Stripe answered or sent (webhooks,
    thin ones too) has only keys stripe-python 16.1.0's resource class declares, and all it
    declares non-optional (fakestripe/src/fakestripe/shape_log.py). An error at teardown."""
    yield
    if SHAPE_PROBLEMS:
        pytest.fail("the fake Stripe served objects the SDK does not describe:\n"
                    + "\n".join(sorted(SHAPE_PROBLEMS.values())), pytrace=False)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.close()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    cluster = PgCluster()
    cluster.setup_sync()
    yield cluster
    cluster.teardown_sync()


@pytest.fixture
async def redis_url(redis_server: RedisServer) -> str:
    """The run's Redis, emptied before each test."""
    if redis_server.proc is None or redis_server.proc.poll() is not None:
        redis_server.start()
    client = redis.asyncio.Redis.from_url(redis_server.url)
    await client.flushall()
    await client.aclose()
    return redis_server.url


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def database_url(pg_cluster: PgCluster) -> AsyncIterator[str]:
    """A fresh, migrated database of this test's own."""
    url = await pg_cluster.create()
    yield url
    await pg_cluster.drop(url)


@pytest.fixture
def settings(redis_url: str, database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        redis_url=redis_url,
        stripe_api_key=API_KEY,
        stripe_webhook_secret=[WEBHOOK_SECRET],
        log_format="json",
    )


@pytest.fixture
async def stack_factory(database_url: str, redis_url: str, request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """`async with stack_factory(workers=2, ...) as stack:` — the whole service (tests/support/stack.py).

    When the test fails, the tail of every worker's log is printed."""
    made: list[Stack] = []

    @contextlib.asynccontextmanager
    async def factory(**kwargs: Any) -> AsyncIterator[Stack]:
        async with running_stack(database_url, redis_url, **kwargs) as stack:
            made.append(stack)
            yield stack

    yield factory
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        for stack in made:
            for path in sorted(stack.log_dir.glob("*.log")):
                tail = path.read_text(errors="replace").splitlines()[-60:]
                print(f"\n----- {path} (last {len(tail)} lines)\n" + "\n".join(tail))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item) -> Any:
    report = yield
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]
    return report
