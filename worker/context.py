"""What a worker process holds open: built in arq's `on_startup`, closed in `on_shutdown`."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import asyncpg
import stripe
from redis.asyncio import Redis

from shared.access import PolicyConfig
from shared.coordination import Coordinator, Keys
from shared.settings import Settings
from shared.stripe_api import LimitedAIOHTTPClient, StripeReader


@dataclass
class Deps:
    settings: Settings
    keys: Keys
    pool: asyncpg.Pool
    redis: Redis
    coordinator: Coordinator
    stripe: stripe.StripeClient
    http: LimitedAIOHTTPClient
    reader: StripeReader
    policy: PolicyConfig
    # set by a sync that wrote an outbox row, so the relay publishes at once
    outbox_ready: asyncio.Event = field(default_factory=asyncio.Event)
    background: list[asyncio.Task[None]] = field(default_factory=list)
