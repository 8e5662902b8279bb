"""`python -m api`: serve the app-facing API (the Procfile's `api:` line)."""

from __future__ import annotations

import sys

from aiohttp import web

from api.app import create_app
from shared import logs
from shared.settings import SettingsError, load

# Requests in flight when SIGTERM arrives get this long to finish (a sync waits up to 10 s).
SHUTDOWN_GRACE_S = 12.0


def main() -> None:
    try:
        settings = load(need_api_tokens=True)
    except SettingsError as exc:
        print(f"entitled api: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    logs.configure(settings.log_format, settings.log_level)
    web.run_app(
        create_app(settings),
        host=settings.host,
        port=settings.api_port,
        shutdown_timeout=SHUTDOWN_GRACE_S,
        print=None,
        access_log=None,
    )


if __name__ == "__main__":
    main()
