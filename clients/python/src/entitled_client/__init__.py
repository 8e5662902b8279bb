"""A client of entitled's app-facing API (docs/contract.md §10) with an in-memory access cache."""

from entitled_client.cache import Cache, Entry
from entitled_client.client import ApiUnavailableError, ClientError, EntitledClient
from entitled_client.webhooks import WebhookError, verify

__all__ = ["ApiUnavailableError", "Cache", "ClientError", "EntitledClient", "Entry", "WebhookError", "verify"]
