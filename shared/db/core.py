"""Postgres: the connection pool and the migrations.

Migrations are plain SQL files in `shared/db/migrations/`, applied in name order, each once, each
in its own transaction, under an advisory lock so that several workers starting together apply
them once. `entitled migrate` runs them; every worker runs them at start-up too.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import asyncpg
import structlog

from shared import tracing

log = structlog.get_logger(__name__)

# Any constant will do; it only has to be the same for every process of one deployment.
_MIGRATION_LOCK = 0x656E7469746C6564  # "entitled"


def migration_files() -> list[tuple[str, str]]:
    folder = resources.files("shared.db") / "migrations"
    files = sorted(
        (entry.name, entry.read_text(encoding="utf-8"))
        for entry in folder.iterdir()
        if entry.name.endswith(".sql")
    )
    return files


async def migrate(conn: asyncpg.Connection) -> list[str]:
    """Apply the migrations not yet applied; return their names. Safe to run concurrently."""
    applied_now: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")}
        for name, sql in migration_files():
            if name in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", name)
            applied_now.append(name)
            log.info("db.migrated", migration=name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
    return applied_now


async def _init_connection(conn: asyncpg.Connection) -> None:
    # jsonb columns in and out as Python objects.
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    tracing.watch_queries(conn)


async def _rollback_only(conn: asyncpg.Connection) -> None:
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


async def create_pool(database_url: str, *, min_size: int = 1, max_size: int = 10, light_reset: bool = False,
                      **kwargs: Any) -> asyncpg.Pool:
    """A pool. `light_reset`: for code that leaves no session state behind (no advisory locks,
    LISTEN, cursors or SETs: the API's reads), a released connection only has a leftover
    transaction rolled back, instead of asyncpg's reset query, one more round trip per use."""
    if light_reset:
        kwargs["reset"] = _rollback_only
    pool: asyncpg.Pool = await asyncpg.create_pool(
        database_url, min_size=min_size, max_size=max_size, init=_init_connection, **kwargs
    )
    return pool


async def connect(database_url: str) -> asyncpg.Connection:
    conn: asyncpg.Connection = await asyncpg.connect(database_url)
    await _init_connection(conn)
    return conn
