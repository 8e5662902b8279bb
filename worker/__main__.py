"""`python -m worker`: run one arq worker process (the Procfile's `worker:` line)."""

from __future__ import annotations

import sys

from shared import logs
from shared.settings import SettingsError, load
from worker.main import build_worker


def main() -> None:
    try:
        settings = load(need_api_key=True)
        worker = build_worker(settings)
    except SettingsError as exc:
        print(f"entitled worker: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    logs.configure(settings.log_format, settings.log_level)
    worker.run()


if __name__ == "__main__":
    main()
