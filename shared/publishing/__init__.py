"""Publishing `access-changed` (docs/contract.md §6): the message, the outbox, the relay, subscribers.

A sync asks `changes.diff` what it changed and `outbox.append`s its message in its own
transaction; the `Relay` publishes committed rows to the stream and the channel;
`StreamSubscriber` and `channel_messages` read them. A trigger feeds each row to
`webhook_deliveries`, which the `Deliverer` POSTs to the `endpoints` (delivery.py); `history`
records what each sync saw and decided, for the timeline.
"""

from shared.publishing import endpoints, history, outbox
from shared.publishing.changes import Change, EntitlementRow, LimitRow, diff
from shared.publishing.delivery import Deliverer, DeliveryPolicy
from shared.publishing.messages import AccessChanged, MessageError
from shared.publishing.relay import Relay
from shared.publishing.subscriber import StreamSubscriber, channel_messages

__all__ = [
    "AccessChanged",
    "Change",
    "Deliverer",
    "DeliveryPolicy",
    "EntitlementRow",
    "LimitRow",
    "MessageError",
    "Relay",
    "StreamSubscriber",
    "channel_messages",
    "diff",
    "endpoints",
    "history",
    "outbox",
]
