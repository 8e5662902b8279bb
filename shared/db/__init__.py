"""Postgres: the connection pool and the SQL migrations (`shared/db/migrations/*.sql`)."""

from shared.db.core import connect, create_pool, migrate, migration_files

__all__ = ["connect", "create_pool", "migrate", "migration_files"]
