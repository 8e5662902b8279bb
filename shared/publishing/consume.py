"""`entitled-consume`: an example consumer that prints access changes as they happen.

    entitled-consume --group demo --consumer me        # durable, via the stream
    entitled-consume --live                            # live, via the pub/sub channel

It is also the reference for writing your own: see shared/publishing/subscriber.py.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator

from redis.asyncio import Redis

from shared.coordination import ACCESS_CHANGED
from shared.publishing.messages import AccessChanged
from shared.publishing.subscriber import StreamSubscriber, channel_messages


def describe(change: AccessChanged) -> str:
    diff = " ".join([*(f"+{f}" for f in change.added), *(f"-{f}" for f in change.removed)]) or "(user id changed)"
    return (
        f"{change.occurred_at}  {change.customer_id}  user={change.user_id or '-'}  v{change.version}  "
        f"{diff}  now=[{', '.join(change.features)}]  ({change.reason})"
    )


async def run(args: argparse.Namespace) -> None:
    redis = Redis.from_url(args.redis_url)
    try:
        changes: AsyncIterator[AccessChanged]
        if args.live:
            changes = channel_messages(redis, channel=args.name)
        else:
            changes = aiter(StreamSubscriber(redis, args.group, args.consumer, stream=args.name))
        async for change in changes:
            print(describe(change), flush=True)
    finally:
        await redis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(prog="entitled-consume", description="Print access-changed messages.")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://localhost:6379/0"))
    parser.add_argument("--name", default=ACCESS_CHANGED, help="stream / channel name")
    parser.add_argument("--group", default="entitled-consume", help="consumer group (stream mode)")
    parser.add_argument("--consumer", default=socket.gethostname(), help="consumer name within the group")
    parser.add_argument("--live", action="store_true", help="read the pub/sub channel instead of the stream")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
