"""Settings (docs/contract.md §3): defaults, durations, and one clear line per bad or missing value."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from shared.settings import SettingsError, load, parse_duration_s


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    for name in list(os.environ):
        if name.startswith(("STRIPE_", "DATABASE_", "REDIS_", "RENEWAL_", "PAST_DUE_", "PORT", "DISPUTE_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(str(tmp_path))  # no stray .env


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("15m", 900), ("12h", 43200), ("7d", 604800), ("0", 0), ("1.5h", 5400), ("45", 45)],
)
def test_durations(text: str, seconds: float) -> None:
    """Durations accept 90s, 15m, 12h, 7d and 0."""
    assert parse_duration_s(text) == seconds


@pytest.mark.parametrize(
    "name",
    ["RENEWAL_GRACE", "PAST_DUE_GRACE", "RECONCILE_EVENTS_EVERY", "RECONCILE_SWEEP_EVERY", "SYNC_LEASE"],
)
def test_durations_from_the_environment(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Every duration variable parses from the environment as the contract writes it (`1d`), not as
    JSON (pydantic-settings decodes complex field types as JSON unless told not to)."""
    monkeypatch.setenv(name, "1d")
    assert getattr(load(), name.lower()).s == 86400


def test_defaults() -> None:
    """Every default of the contract's table."""
    s = load()
    assert s.database_url == "postgresql://localhost/entitled"
    assert s.redis_url == "redis://localhost:6379/0"
    assert s.stripe_api_base == "https://api.stripe.com"
    assert s.port == 8080
    assert s.renewal_grace.s == 86400
    assert s.past_due_grace.s == 7 * 86400
    assert s.stripe_rate_limit == 20
    assert s.dispute_policy == "revoke"


def test_dispute_policy_keep(monkeypatch: pytest.MonkeyPatch) -> None:
    """DISPUTE_POLICY accepts revoke and keep (docs/contract.md §3)."""
    monkeypatch.setenv("DISPUTE_POLICY", "keep")
    assert load().dispute_policy == "keep"


def test_secrets_are_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", "whsec_one, whsec_two")
    assert load().stripe_webhook_secret == ["whsec_one", "whsec_two"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("RENEWAL_GRACE", "1 week"),
        ("PAST_DUE_GRACE", "-5d"),
        ("PORT", "70000"),
        ("STRIPE_RATE_LIMIT", "0"),
        ("STRIPE_WEBHOOK_SECRET", "not-a-secret"),
        ("STRIPE_API_KEY", "pk_test_publishable"),
        ("DATABASE_URL", "mysql://x"),
        ("REDIS_URL", "http://x"),
        ("DISPUTE_POLICY", "forgive"),
    ],
)
def test_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    """A bad value stops start-up with one line naming the variable."""
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as info:
        load()
    message = str(info.value)
    assert message.startswith(f"{name}:")
    assert "\n" not in message


def test_missing_required_values() -> None:
    """The worker needs STRIPE_API_KEY; ingest needs STRIPE_WEBHOOK_SECRET."""
    with pytest.raises(SettingsError, match=r"^STRIPE_API_KEY: required"):
        load(need_api_key=True)
    with pytest.raises(SettingsError, match=r"^STRIPE_WEBHOOK_SECRET: required"):
        load(need_webhook_secret=True)


@pytest.mark.parametrize(("module", "variable"), [("ingest", "STRIPE_WEBHOOK_SECRET"), ("worker", "STRIPE_API_KEY")])
def test_processes_refuse_to_start_with_one_line(module: str, variable: str) -> None:
    """`python -m ingest` / `python -m worker` exit 2 with one line on stderr naming the variable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRIPE_")}
    proc = subprocess.run([sys.executable, "-m", module], env=env, capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert variable in lines[0]


def test_webhook_delivery_settings_make_the_delivery_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    """The WEBHOOK_* variables reach the deliverer's policy; the defaults are the contract's
    (docs/contract.md §10: a 10 s timeout, 3 days of retries); nonsense names its variable."""
    from shared.publishing import DeliveryPolicy

    default = DeliveryPolicy.from_settings(load())
    assert (default.timeout_s, default.concurrency, default.retry_first_s, default.retry_cap_s,
            default.give_up_after_s) == (10.0, 64, 10.0, 3600.0, 3 * 86400.0)
    for name, value in {"WEBHOOK_TIMEOUT": "3s", "WEBHOOK_CONCURRENCY": "8", "WEBHOOK_RETRY_FIRST": "20s",
                        "WEBHOOK_RETRY_CAP": "15m", "WEBHOOK_GIVE_UP_AFTER": "1d"}.items():
        monkeypatch.setenv(name, value)
    policy = DeliveryPolicy.from_settings(load())
    assert (policy.timeout_s, policy.concurrency, policy.retry_first_s, policy.retry_cap_s,
            policy.give_up_after_s) == (3.0, 8, 20.0, 900.0, 86400.0)
    for name, bad in (("WEBHOOK_TIMEOUT", "0"), ("WEBHOOK_CONCURRENCY", "0"), ("WEBHOOK_RETRY_CAP", "soon")):
        monkeypatch.setenv(name, bad)
        with pytest.raises(SettingsError, match=name):
            load()
        monkeypatch.delenv(name)
