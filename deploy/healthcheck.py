"""The image's HEALTHCHECK: GET the running process's own /healthz (stdlib only).

Which process runs is read from PID 1's command line (the entrypoint execs it), so one image
serves web, worker and api with one HEALTHCHECK.
"""

from __future__ import annotations

import os
import sys
import urllib.request


def port_of(cmdline: list[str]) -> str | None:
    if "ingest" in cmdline:
        return os.environ.get("PORT", "8080")
    if "api" in cmdline:
        return os.environ.get("API_PORT", "8081")
    if "worker" in cmdline:
        # A worker serves HTTP only on its metrics port; without one there is nothing to ask.
        return os.environ.get("WORKER_METRICS_PORT") or None
    return None


def main() -> int:
    with open("/proc/1/cmdline", "rb") as f:
        cmdline = [part.decode() for part in f.read().split(b"\0") if part]
    port = port_of(cmdline)
    if port is None:
        return 0
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as answer:
            return 0 if answer.status == 200 else 1
    except OSError as exc:
        print(f"healthcheck: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
