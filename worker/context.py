"""What a worker process holds open: built in arq's `on_startup`, closed in `on_shutdown`."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import asyncpg
import stripe
from redis.asyncio import Redis

from shared.coordination import Coordinator
from shared.keys import Keys
from shared.policy import PolicyConfig
from shared.settings import Settings
from shared.stripe_client import LimitedAIOHTTPClient
from worker.stripe_reader import StripeReader


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
