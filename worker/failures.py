"""Which failures of a run retrying cannot mend, so that the unit is parked rather than retried
for ever (shared/coordination/coordinator.py says what parking does).

Only a refusal of the request itself counts: Stripe's 400/404 (`invalid_request_error`,
https://docs.stripe.com/error-handling#invalid-request-errors) and Postgres refusing the data
(class 22, "data exception": a NUL byte, a value too long). Everything else may pass: Stripe's
429s, 5xx and connection errors, Postgres restarts, and a wrong or revoked API key too (that
is one setting to fix for every unit, not a reason to park them all).
"""

from __future__ import annotations

import asyncpg
import stripe


def is_fatal(exc: BaseException) -> bool:
    if isinstance(exc, stripe.InvalidRequestError):
        return exc.http_status in (400, 404)
    return isinstance(exc, asyncpg.DataError)
