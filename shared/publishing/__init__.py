"""Publishing `access-changed` (SPEC section 6): the message, the outbox, the relay, subscribers.

A sync `outbox.append`s its message in its own transaction; the `Relay` publishes committed rows
to the stream and the channel; `StreamSubscriber` and `channel_messages` read them.
"""

from shared.publishing import history, outbox
from shared.publishing.messages import AccessChanged, MessageError
from shared.publishing.relay import Relay
from shared.publishing.subscriber import StreamSubscriber, channel_messages

__all__ = [
    "AccessChanged",
    "MessageError",
    "Relay",
    "StreamSubscriber",
    "channel_messages",
    "history",
    "outbox",
]
