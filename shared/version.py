"""What this installation is: entitled's version, the stripe SDK's, and the Stripe API version.

Every request to Stripe carries the API version the SDK was generated for (stripe-python pins
it as `stripe.api_version`); entitled never overrides it, so "the pinned API version" is the
SDK's. CHANGELOG.md says what changes when it moves.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

import stripe


def entitled_version() -> str:
    try:
        return version("entitled")
    except PackageNotFoundError:  # a checkout run without `pip install`
        return "0+unknown"


def stripe_api_version() -> str:
    pinned: str = stripe.api_version
    return pinned


def describe() -> str:
    """One line for `entitled --version`."""
    return (f"entitled {entitled_version()} (stripe-python {stripe.VERSION}, "
            f"Stripe API version {stripe_api_version()})")
