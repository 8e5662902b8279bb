"""Tests use the same redis-server wrapper as `entitled run` (without persistence)."""

from shared.embedded import RedisServer, free_port

__all__ = ["RedisServer", "free_port"]
