"""structlog set-up: JSON lines in production, readable console output on a terminal.

Event names are dotted (`ingest.accepted`, `sync.done`) and carry key-value fields; ids such
as `event_id` and `customer_id` are bound through contextvars so that every line a sync writes
carries them (`structlog.contextvars.bound_contextvars(customer_id=...)`).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import orjson
import structlog

from shared import tracing

# Fields that must never reach the logs in full (secrets, raw payloads). `redact` masks them
# wherever a caller passes them by mistake; tests/test_security.py holds us to it.
_SECRET_KEYS = frozenset(
    {"stripe_api_key", "api_key", "secret", "secrets", "stripe_webhook_secret", "authorization",
     "stripe_signature", "signature", "payload", "body", "raw_body", "api_tokens", "token_secret",
     "webhook_secret"}
)


def redact(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    for key in list(event_dict):
        if key.lower() in _SECRET_KEYS:
            event_dict[key] = "[redacted]"
    return event_dict


def _orjson_dumps(obj: Any, default: Any = None) -> str:
    return orjson.dumps(obj, default=default or str).decode()


def configure(log_format: str = "auto", level: str = "INFO") -> None:
    """Configure structlog (and the stdlib loggers of our dependencies) once per process."""
    use_console = log_format == "console" or (log_format == "auto" and sys.stderr.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact,
        tracing.add_trace_ids,
    ]
    renderer: Any = (
        structlog.dev.ConsoleRenderer()
        if use_console
        else structlog.processors.JSONRenderer(serializer=_orjson_dumps)
    )
    numeric_level = logging.getLevelName(level.upper())
    if not isinstance(numeric_level, int):
        numeric_level = logging.INFO
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    # arq, aiohttp and asyncpg log through the stdlib: route them through the same renderer.
    # A record's exc_info must become text before JSON (else `<traceback object at 0x...>`);
    # the console renderer formats it itself, prettier.
    exc_text: list[Any] = [] if use_console else [structlog.processors.format_exc_info]
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *exc_text, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric_level)
    # One line per webhook (aiohttp's access log) or per Stripe request (the SDK's "Request to
    # Stripe api"): too much at INFO; our own lines say what happened.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("stripe").setLevel(max(numeric_level, logging.WARNING))
