"""A fake Stripe API for tests: Stripe's wire format, clock-driven subscription lifecycles,
signed webhooks with injectable faults, and a control API (`/_fake/*`).

See docs/fakestripe.md. Public API: `FakeStripe`, `FakeStripeControl`.
"""

from .client import FakeStripeControl, FakeStripeControlError
from .clock import API_VERSION, Settings
from .server import DEFAULT_API_KEY, FakeStripe, FakeStripeThread, WebhookEndpointInfo
from .webhooks import EndpointFaults, signature_header

__all__ = [
    "API_VERSION",
    "DEFAULT_API_KEY",
    "EndpointFaults",
    "FakeStripe",
    "FakeStripeControl",
    "FakeStripeControlError",
    "FakeStripeThread",
    "Settings",
    "WebhookEndpointInfo",
    "signature_header",
]
