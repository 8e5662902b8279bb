"""`python -m ingest`: serve the webhook receiver (the Procfile's `web:` line)."""

from __future__ import annotations

import sys

from aiohttp import web

from ingest.app import create_app
from shared import logs
from shared.settings import SettingsError, load

# Requests in flight when SIGTERM arrives get this long to finish.
SHUTDOWN_GRACE_S = 10.0


def main() -> None:
    try:
        settings = load(need_webhook_secret=True)
    except SettingsError as exc:
        print(f"entitled ingest: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    logs.configure(settings.log_format, settings.log_level)
    web.run_app(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        shutdown_timeout=SHUTDOWN_GRACE_S,
        print=None,
        access_log=None,
    )


if __name__ == "__main__":
    main()
