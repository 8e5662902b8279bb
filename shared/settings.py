"""Settings from the environment (and a `.env` file), validated once at start-up.

docs/contract.md §3 is the contract. A bad or missing value stops start-up with one line that names
the variable and says what is wrong (`SettingsError`); nothing here reads the environment at
import time, so `load()` is called from each `main()`.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, BeforeValidator, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

STRIPE_DEFAULT_API_BASE = "https://api.stripe.com"

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


class SettingsError(Exception):
    """A setting is missing or malformed; the message is one line naming the variable."""


@dataclass(frozen=True, order=True)
class Duration:
    """A span of time that says its unit at every use: `.s`, `.whole_s` or `.ms`."""

    s: float

    @property
    def ms(self) -> int:
        return round(self.s * 1000)

    @property
    def whole_s(self) -> int:
        return int(self.s)

    def __str__(self) -> str:
        return f"{self.s:g}s"


def parse_duration_s(value: Any) -> float:
    """`90s`, `15m`, `12h`, `7d`, `0` (and bare seconds) to seconds."""
    if isinstance(value, Duration):
        return value.s
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNIT_S[m.group(2)]
    else:
        raise ValueError(f"expected a duration such as 90s, 15m, 12h, 7d or 0, got {value!r}")
    if seconds < 0:
        raise ValueError("must not be negative")
    return seconds


def _split_secrets(value: Any) -> list[str]:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, list | tuple):
        return [str(v).strip() for v in value if str(v).strip()]
    raise ValueError("expected one or more whsec_... secrets, comma-separated")


def _check_secrets(secrets: list[str]) -> list[str]:
    for secret in secrets:
        if not secret.startswith("whsec_") or len(secret) <= len("whsec_"):
            raise ValueError("each secret must look like whsec_...")
    return secrets


def _split_tokens(value: Any) -> dict[str, str]:
    """`API_TOKENS`: comma-separated `name:secret` pairs (docs/contract.md §3)."""
    if isinstance(value, dict):
        pairs = [(str(k), str(v)) for k, v in value.items()]
    elif isinstance(value, str):
        pairs = []
        for part in (p.strip() for p in value.split(",")):
            if not part:
                continue
            name, sep, secret = part.partition(":")
            if not sep or not name.strip() or not secret.strip():
                raise ValueError("expected comma-separated name:secret pairs")
            pairs.append((name.strip(), secret.strip()))
    else:
        raise ValueError("expected comma-separated name:secret pairs")
    tokens: dict[str, str] = {}
    for name, secret in pairs:
        if name in tokens:
            raise ValueError(f"token name {name!r} appears twice")
        if secret in tokens.values():
            raise ValueError(f"token {name!r} reuses another token's secret")
        tokens[name] = secret
    return tokens


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _duration(value: Any) -> Duration:
    return Duration(parse_duration_s(value))


# NoDecode: a Duration is a dataclass, which pydantic-settings would otherwise JSON-decode.
DurationSetting = Annotated[Duration, NoDecode, BeforeValidator(_duration)]
ApiTokens = Annotated[dict[str, str], NoDecode, BeforeValidator(_split_tokens)]
Secrets = Annotated[
    list[str], NoDecode, BeforeValidator(_split_secrets), AfterValidator(_check_secrets)
]


class Settings(BaseSettings):
    """Every variable of docs/contract.md §3, plus a few tuning knobs (documented in the README)."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True
    )

    database_url: str = "postgresql://localhost/entitled"
    redis_url: str = "redis://localhost:6379/0"
    stripe_api_key: str | None = None
    stripe_webhook_secret: Secrets = []
    stripe_api_base: str = STRIPE_DEFAULT_API_BASE
    port: int = 8080
    renewal_grace: DurationSetting = Duration(86400.0)
    past_due_grace: DurationSetting = Duration(7 * 86400.0)
    stripe_rate_limit: float = 20.0
    # revoke: a payment under an open dispute grants nothing; keep: disputes change nothing
    # (docs/contract.md §5.1).
    dispute_policy: str = "revoke"
    # name -> secret; the `api` process refuses to start without one (`load(need_api_tokens=True)`)
    api_tokens: ApiTokens = {}
    api_port: int = 8081

    # --- additions to docs/contract.md §3 (tuning; defaults suit production) ---
    # Stripe's default per-endpoint limit; one bucket per endpoint beside the overall one.
    stripe_endpoint_rate_limit: float = 25.0
    # Requests in flight at once per endpoint, per process: Stripe sheds concurrent requests to
    # one endpoint with 429 `endpoint-concurrency` (docs/contract.md §8).
    stripe_endpoint_concurrency: int = 5
    # Share of customer syncs that also read Stripe's own active entitlements, to compare with
    # ours (an audit: ours decide, and the catalog poll finds feature changes). 0 turns it off.
    stripe_entitlements_audit: float = 0.01
    # How long a burst for one customer is gathered before its sync runs.
    coalesce_window: DurationSetting = Duration(1.0)
    # Prefix of every Redis key we own (arq's own keys are namespaced by the queue name).
    redis_prefix: str = "entitled"
    # How often the Events API poller and the full sweep run (cron, once per schedule).
    reconcile_events_every: DurationSetting = Duration(300.0)
    reconcile_catalog_every: DurationSetting = Duration(300.0)
    reconcile_sweep_every: DurationSetting = Duration(86400.0)
    # MAXLEN (approximate) of the access-changed stream.
    stream_maxlen: int = 1_000_000
    # Log format: "json", "console", or "auto" (console when stderr is a terminal).
    log_format: str = "auto"
    log_level: str = "INFO"
    # Host ingest binds to (see README, "Operating it").
    host: str = "0.0.0.0"
    # When set, every GET /metrics (ingest, api, workers) requires `Authorization: Bearer <METRICS_TOKEN>`.
    metrics_token: str | None = None
    # A worker serves its Prometheus metrics on METRICS_HOST:WORKER_METRICS_PORT when the port is
    # set (one port per worker process on a host); loopback unless told otherwise.
    worker_metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    # Concurrent jobs per worker process.
    worker_concurrency: int = 16
    # How long a sync holds its customer without renewing (it renews every third of this while
    # alive); a worker that dies or stalls longer loses the customer to another worker.
    sync_lease: DurationSetting = Duration(30.0)
    # Outbound webhooks (docs/contract.md §10): how long one delivery may take, how many are in
    # flight at once per endpoint and worker process, and the retry schedule: the first retry
    # after WEBHOOK_RETRY_FIRST (times a 50-100 % jitter), doubling up to WEBHOOK_RETRY_CAP,
    # until WEBHOOK_GIVE_UP_AFTER from the delivery's creation, then failed.
    webhook_timeout: DurationSetting = Duration(10.0)
    webhook_concurrency: int = 64
    webhook_retry_first: DurationSetting = Duration(10.0)
    webhook_retry_cap: DurationSetting = Duration(3600.0)
    webhook_give_up_after: DurationSetting = Duration(3 * 86400.0)
    # The api's answer cache of GET /v1/check (docs/contract.md §10): Postgres's notifications
    # keep it current; this caps an answer's life for the writes they cannot reach (a restore with
    # triggers disabled). 0 turns the cache off: every check reads Postgres.
    api_check_cache_ttl: DurationSetting = Duration(30.0)

    # --- tracing (shared/tracing.py): OpenTelemetry's own variable; unset or empty: off ---
    otel_exporter_otlp_endpoint: str | None = None

    @field_validator("port", "api_port")
    @classmethod
    def _port_range(cls, v: int) -> int:
        if not 0 < v < 65536:
            raise ValueError("must be between 1 and 65535")
        return v

    @field_validator("stripe_rate_limit", "stripe_endpoint_rate_limit")
    @classmethod
    def _positive_rate(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("must be a positive number of requests per second")
        return v

    @field_validator("webhook_timeout", "webhook_retry_first", "webhook_retry_cap", "webhook_give_up_after")
    @classmethod
    def _positive_duration(cls, v: Duration) -> Duration:
        if v.s <= 0:
            raise ValueError("must be longer than 0")
        return v

    @field_validator("stripe_endpoint_concurrency", "webhook_concurrency")
    @classmethod
    def _positive_concurrency(cls, v: int) -> int:
        if v < 1:
            raise ValueError("must be at least 1")
        return v

    @field_validator("stripe_entitlements_audit")
    @classmethod
    def _share(cls, v: float) -> float:
        if not 0 <= v <= 1:
            raise ValueError("must be a share between 0 and 1")
        return v

    @field_validator("database_url")
    @classmethod
    def _pg_url(cls, v: str) -> str:
        if not v.startswith(("postgresql://", "postgres://")):
            raise ValueError("must start with postgresql://")
        return v

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, v: str) -> str:
        if not v.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return v

    @field_validator("stripe_api_base")
    @classmethod
    def _api_base(cls, v: str) -> str:
        # The API key travels in every request: https only, except to this machine (the fake).
        url = urlsplit(v)
        if not url.hostname or url.scheme not in ("https", "http"):
            raise ValueError("must be an https:// URL")
        if url.scheme == "http" and not _is_loopback(url.hostname):
            raise ValueError("must be https:// (http:// only for a loopback host such as 127.0.0.1)")
        return v

    @field_validator("stripe_api_key")
    @classmethod
    def _api_key(cls, v: str | None) -> str | None:
        if v is None or v == "":
            return None
        if not v.startswith(("sk_", "rk_")):
            raise ValueError("must be a secret (sk_...) or restricted (rk_...) key")
        return v

    @field_validator("dispute_policy")
    @classmethod
    def _dispute_policy(cls, v: str) -> str:
        if v not in ("revoke", "keep"):
            raise ValueError("must be revoke or keep")
        return v

    @field_validator("log_format")
    @classmethod
    def _log_format(cls, v: str) -> str:
        if v not in ("json", "console", "auto"):
            raise ValueError("must be json, console or auto")
        return v

    @property
    def livemode(self) -> bool | None:
        """The mode of the configured key: None when no key is configured."""
        if self.stripe_api_key is None:
            return None
        return "_live_" in self.stripe_api_key

    @property
    def api_key(self) -> str:
        if self.stripe_api_key is None:
            raise SettingsError("STRIPE_API_KEY: required for the worker, and not set")
        return self.stripe_api_key


def load(
    *,
    need_api_key: bool = False,
    need_webhook_secret: bool = False,
    need_api_tokens: bool = False,
    **overrides: Any,
) -> Settings:
    """Build the settings, turning pydantic's report into one line per bad variable."""
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            name = str(err["loc"][0]).upper() if err["loc"] else "settings"
            msg = str(err["msg"]).removeprefix("Value error, ")
            lines.append(f"{name}: {msg}")
        raise SettingsError("; ".join(lines)) from None
    if need_api_key and settings.stripe_api_key is None:
        raise SettingsError("STRIPE_API_KEY: required for the worker, and not set")
    if need_webhook_secret and not settings.stripe_webhook_secret:
        raise SettingsError("STRIPE_WEBHOOK_SECRET: required for ingest, and not set")
    if need_api_tokens and not settings.api_tokens:
        raise SettingsError("API_TOKENS: required for api (comma-separated name:secret pairs), and not set")
    return settings
