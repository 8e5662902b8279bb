"""Reading Stripe (docs/contract.md §8): one SDK client per process, one rate limit for all of them.

`client.py` is the transport (rate-limited, retrying), `ratelimit.py` the shared budget in
Redis, `reader.py` the only reads we make.
"""

from shared.stripe_api.client import LimitedAIOHTTPClient, create_client, endpoint_of
from shared.stripe_api.ratelimit import RateLimiter, RateLimitWaitError
from shared.stripe_api.reader import StripeReader

__all__ = [
    "LimitedAIOHTTPClient",
    "RateLimitWaitError",
    "RateLimiter",
    "StripeReader",
    "create_client",
    "endpoint_of",
]
