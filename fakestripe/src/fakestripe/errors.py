"""Stripe's error bodies, one exception class that carries them.

Every error answer of the fake has Stripe's shape
`{"error": {"type", "code", "message", "param", "doc_url"}}` (keys always present, `null` where
Stripe has no value) so that `stripe-python` maps it to the same exception class it would raise
against api.stripe.com (`InvalidRequestError`, `AuthenticationError`, `RateLimitError`, ...).
"""

from __future__ import annotations

from typing import Any

DOC_BASE = "https://stripe.com/docs/error-codes/"


class StripeError(Exception):
    """An error answered the way Stripe answers it: HTTP status, JSON body, extra headers."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.code = code
        self.param = param
        self.headers = headers or {}
        self.extra = extra or {}

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {
            "type": self.type,
            "code": self.code,
            "message": self.message,
            "param": self.param,
            "doc_url": DOC_BASE + self.code.replace("_", "-") if self.code else None,
        }
        error.update(self.extra)
        return {"error": error}


def resource_missing(label: str, object_id: str, param: str = "id") -> StripeError:
    """404 for an id that does not exist (`No such customer: 'cus_x'`)."""
    return StripeError(404, f"No such {label}: '{object_id}'", code="resource_missing", param=param)


def unknown_parameter(name: str) -> StripeError:
    return StripeError(
        400, f"Received unknown parameter: {name}", code="parameter_unknown", param=name
    )


def missing_parameter(name: str) -> StripeError:
    return StripeError(
        400, f"Missing required param: {name}.", code="parameter_missing", param=name
    )


def invalid_integer(name: str, value: object) -> StripeError:
    return StripeError(
        400, f"Invalid integer: {value}", code="parameter_invalid_integer", param=name
    )


def invalid_empty(name: str) -> StripeError:
    return StripeError(
        400,
        f"You passed an empty string for '{name}'. We assume empty values are an attempt to "
        f"unset a parameter; however '{name}' cannot be unset. You should remove '{name}' from "
        "your request or supply a non-empty value.",
        code="parameter_invalid_empty",
        param=name,
    )


def invalid_value(name: str, message: str, code: str | None = None) -> StripeError:
    """A value of the right type that Stripe refuses (enum member, range, state)."""
    return StripeError(400, message, code=code, param=name)


def invalid_request(message: str, param: str | None = None, code: str | None = None) -> StripeError:
    return StripeError(400, message, code=code, param=param)


def rate_limited() -> StripeError:
    """429 as Stripe sends it, with `Stripe-Should-Retry: true` so SDKs back off and retry."""
    return StripeError(
        429,
        "Request rate limit exceeded. Learn more about rate limits here "
        "https://stripe.com/docs/rate-limits.",
        code="rate_limit",
        headers={"Stripe-Should-Retry": "true"},
    )


def endpoint_concurrency_limited() -> StripeError:
    """429 from Stripe's concurrency limiter: too many requests in flight on one endpoint
    (https://docs.stripe.com/rate-limits, "API limiters"). It carries
    `Stripe-Rate-Limited-Reason: endpoint-concurrency` and, as Stripe often sends it, neither
    `Retry-After` nor `Stripe-Should-Retry`."""
    return StripeError(
        429,
        "This request was rate limited because too many concurrent requests were made to "
        "the same endpoint. Learn more about rate limits here https://stripe.com/docs/rate-limits.",
        code="rate_limit",
        headers={"Stripe-Rate-Limited-Reason": "endpoint-concurrency"},
    )


def api_error() -> StripeError:
    return StripeError(
        500,
        "An unknown error occurred (injected by the fake Stripe).",
        type_="api_error",
    )


def authentication_failed(key: str | None) -> StripeError:
    if not key:
        message = (
            "You did not provide an API key. You need to provide your API key in the "
            "Authorization header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY')."
        )
    else:
        message = f"Invalid API Key provided: {key[:8]}{'*' * max(0, len(key) - 12)}{key[-4:]}"
    return StripeError(401, message)


def card_declined(param: str | None = None) -> StripeError:
    """402 `card_error` for a charge the test card refuses (`pm_card_chargeCustomerFail`)."""
    return StripeError(
        402,
        "Your card was declined.",
        type_="card_error",
        code="card_declined",
        param=param,
        extra={"decline_code": "generic_decline"},
    )
