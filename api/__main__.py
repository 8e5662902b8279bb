"""`python -m api`: serve the app-facing API (the Procfile's `api:` line)."""

from __future__ import annotations

from api.app import create_app
from shared import serving

# Requests in flight when SIGTERM arrives get this long to finish (a sync waits up to 10 s).
SHUTDOWN_GRACE_S = 12.0


def main() -> None:
    serving.main("api", create_app, port=lambda s: s.api_port, shutdown_timeout_s=SHUTDOWN_GRACE_S,
                 need_api_tokens=True)


if __name__ == "__main__":
    main()
