"""`entitled connect URL`: create (or update) the Stripe webhook endpoint entitled listens on.

The only code that writes to Stripe (docs/contract.md, section 8). It calls
`GET /v1/webhook_endpoints` to find an endpoint with the same URL, then
`POST /v1/webhook_endpoints/{id}` to update it, or `POST /v1/webhook_endpoints` to create one
(https://docs.stripe.com/api/webhook_endpoints). Running it again updates that endpoint; it
never makes a second one for the same URL.

- `api_version` is the SDK's pinned version, so every event arrives in the shape the code reads.
  Stripe takes `api_version` only when an endpoint is created (the update endpoint has no such
  parameter): an existing endpoint on another version is reported, and the operator deletes it
  and runs `connect` again.
- `enabled_events` is every event type Stripe knows (the SDK's list) that the receiver queues
  work for (`shared.coordination.wants_work`, docs/contract.md §4): the list follows the router.
- Stripe returns the signing secret only when it creates the endpoint: it is printed then (and
  written to `--env-file` if given); an update keeps the secret the endpoint had.

The key must be allowed to write webhook endpoints: a secret key, or a restricted key with
"Webhook Endpoints: write". The service's own read-only key is refused by Stripe; the error
says which permission is missing.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from pathlib import Path

import stripe
from stripe.params import WebhookEndpointCreateParams

from shared.coordination import wants_work
from shared.version import stripe_api_version

DESCRIPTION = "entitled (managed by `entitled connect`)"


class ConnectError(Exception):
    """Stripe refused or could not be reached; one line saying what to do."""


def enabled_events() -> list[str]:
    """The event types the endpoint subscribes to: Stripe's types the router queues work for."""
    annotation = WebhookEndpointCreateParams.__annotations__["enabled_events"]
    (literal,) = typing.get_args(annotation)
    known = (t for t in typing.get_args(literal) if t != "*")
    return sorted(t for t in known if wants_work(t) is not None)


@dataclass(frozen=True)
class Connected:
    endpoint_id: str
    created: bool
    secret: str | None
    api_version: str | None


async def _find(client: stripe.StripeClient, url: str) -> stripe.WebhookEndpoint | None:
    page = await client.v1.webhook_endpoints.list_async({"limit": 100})
    async for endpoint in page.auto_paging_iter():
        if endpoint.url == url:
            return endpoint
    return None


async def connect(client: stripe.StripeClient, url: str) -> Connected:
    events = enabled_events()
    try:
        found = await _find(client, url)
        if found is None:
            made = await client.v1.webhook_endpoints.create_async({
                "url": url, "enabled_events": typing.cast(typing.Any, events),
                "api_version": typing.cast(typing.Any, stripe_api_version()), "description": DESCRIPTION,
            })
            return Connected(made.id, True, made.secret, made.api_version)
        updated = await client.v1.webhook_endpoints.update_async(found.id, {
            "enabled_events": typing.cast(typing.Any, events), "description": DESCRIPTION, "disabled": False,
        })
        return Connected(updated.id, False, None, updated.api_version)
    except stripe.PermissionError as exc:
        raise ConnectError("STRIPE_API_KEY: this key may not manage webhook endpoints; use a secret key or a "
                           f"restricted key with 'Webhook Endpoints: write' ({exc.user_message})") from None
    except stripe.AuthenticationError as exc:
        raise ConnectError(f"STRIPE_API_KEY: Stripe refused the key ({exc.user_message})") from None
    except stripe.APIConnectionError:
        raise ConnectError("STRIPE_API_BASE: cannot reach Stripe (check the network or STRIPE_API_BASE)") from None
    except stripe.StripeError as exc:
        raise ConnectError(f"Stripe answered {exc.http_status}: {exc.user_message}") from None


def store_secret(path: Path, secret: str) -> None:
    """Set STRIPE_WEBHOOK_SECRET in an env file, keeping its other lines."""
    lines = path.read_text().splitlines() if path.exists() else []
    kept = [line for line in lines if not line.startswith("STRIPE_WEBHOOK_SECRET=")]
    path.write_text("\n".join([*kept, f"STRIPE_WEBHOOK_SECRET={secret}"]) + "\n")


def report(done: Connected, url: str, env_file: Path | None) -> list[str]:
    """What `entitled connect` prints."""
    pinned = stripe_api_version()
    lines = [f"{'created' if done.created else 'updated'} webhook endpoint {done.endpoint_id} for {url} "
             f"({len(enabled_events())} event types)"]
    if done.api_version != pinned:
        lines.append(f"warning: the endpoint's API version is {done.api_version or 'the account default'}, not "
                     f"{pinned}; Stripe sets it only at creation: delete the endpoint in the Dashboard and run "
                     "`entitled connect` again")
    if done.secret is not None:
        lines.append(f"STRIPE_WEBHOOK_SECRET={done.secret}")
        if env_file is not None:
            store_secret(env_file, done.secret)
            lines.append(f"(written to {env_file})")
    else:
        lines.append("the signing secret is unchanged (Stripe shows it only at creation; the Dashboard reveals it)")
    return lines
