"""`python -m ingest`: serve the webhook receiver (the Procfile's `web:` line)."""

from __future__ import annotations

from ingest.app import create_app
from shared import serving

# Requests in flight when SIGTERM arrives get this long to finish.
SHUTDOWN_GRACE_S = 10.0


def main() -> None:
    serving.main("ingest", create_app, port=lambda s: s.port, shutdown_timeout_s=SHUTDOWN_GRACE_S,
                 need_webhook_secret=True)


if __name__ == "__main__":
    main()
