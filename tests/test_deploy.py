"""The deployment files (README, "Run with Docker"): .env.example names every setting and loads as it stands;
compose.yaml publishes only ingest and the API, and persists Redis and Postgres. The image
itself is tested by `make image-test` (deploy/image-test.sh), which needs Docker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from shared.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
# docs/contract.md §3's variables that this release does not read yet (listed all the same).
CONTRACT_ONLY: set[str] = set()


def env_example_names() -> set[str]:
    names = set()
    for line in (ROOT / ".env.example").read_text().splitlines():
        line = line.strip().removeprefix("# ")
        if "=" in line and line.split("=", 1)[0].isupper():
            names.add(line.split("=", 1)[0])
    return names


def test_env_example_lists_every_setting() -> None:
    fields = {name.upper() for name in Settings.model_fields}
    assert fields - env_example_names() == set()
    assert env_example_names() >= CONTRACT_ONLY


def test_env_example_loads_as_it_stands() -> None:
    settings = Settings(_env_file=ROOT / ".env.example")  # type: ignore[call-arg]
    assert settings.stripe_api_key is None
    assert settings.metrics_token is None
    assert settings.worker_metrics_port is None


def test_compose_publishes_only_ingest_and_the_api() -> None:
    services: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    assert {name for name, svc in services.items() if svc.get("ports")} == {"web", "api"}
    assert {"postgres", "redis", "migrate", "web", "worker-1", "worker-2", "api"} <= set(services)
    assert services["redis"]["command"][1:3] == ["--appendonly", "yes"]
    assert services["redis"]["volumes"]
    assert services["postgres"]["volumes"]
    for name in ("web", "worker-1", "worker-2", "api"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
