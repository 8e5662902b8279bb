"""Publishing `access-changed` (SPEC section 6): the message, the outbox, the relay, subscribers.

A sync asks `changes.diff` what it changed, `outbox.append`s its message in its own transaction; the `Relay` publishes committed rows
to the stream and the channel; `StreamSubscriber` and `channel_messages` read them.
"""

from shared.publishing import outbox
from shared.publishing.changes import Change, EntitlementRow, diff
from shared.publishing.messages import AccessChanged, MessageError
from shared.publishing.relay import Relay
from shared.publishing.subscriber import StreamSubscriber, channel_messages

__all__ = [
    "AccessChanged",
    "Change",
    "EntitlementRow",
    "MessageError",
    "Relay",
    "StreamSubscriber",
    "channel_messages",
    "diff",
    "outbox",
]
