"""What happens to a subscription when time reaches one of its boundaries.

Each function runs at the moment the transition was due (`Core.now` is pinned to it) and
emits the events Stripe documents for it, in this order:

- trial will end (3 days before, trials longer than that): `customer.subscription.trial_will_end`
- trial end with a payment method, or `missing_payment_method=create_invoice`:
  `customer.subscription.updated` (trialing -> active, new period on the items), `invoice.created`;
  the invoice is finalized and charged `invoice_finalize_delay_s` later (see `renewal`).
- trial end, no payment method, `pause`: `customer.subscription.updated` (-> paused),
  `customer.subscription.paused`; no invoice.
- trial end, no payment method, `cancel`: `customer.subscription.deleted`.
- renewal at the period end: `customer.subscription.updated` (new period), `invoice.created`;
  an hour later `invoice.finalized`, then `invoice.paid` + `invoice.payment_succeeded`, or
  `invoice.payment_failed` + `customer.subscription.updated` (-> past_due).
- cancel_at reached: `customer.subscription.deleted`.
- `send_invoice`: a renewal invoice is finalized (not charged) an hour after the boundary, with
  `due_date` = finalization + `days_until_due`; unpaid at its due date, the subscription turns
  `past_due` (`customer.subscription.updated`)
  (https://docs.stripe.com/billing/subscriptions/overview#payment-status: "subscriptions with
  collection_method=send_invoice ... become past_due if the invoice isn't paid by its due date").
- flexible billing mode: each item renews at its own `current_period_end`; items whose periods
  end together share one invoice, others get their own
  (https://docs.stripe.com/billing/subscriptions/mixed-interval).
- incomplete for 23 hours: `customer.subscription.deleted` (-> incomplete_expired), `invoice.voided`.

Sources: https://docs.stripe.com/billing/subscriptions/trials,
https://docs.stripe.com/billing/subscriptions/webhooks,
https://docs.stripe.com/billing/subscriptions/overview#invoice-lifecycle.
"""

from __future__ import annotations

from .clock import add_interval, next_period_end
from .core import Core
from .entitlements import TRIAL_END_PAUSE, snapshot
from .invoicing import (
    build_invoice,
    cancel,
    emit_invoice,
    emit_subscription,
    payment_method_for,
    sub_json,
    void,
)
from .store import Subscription, SubscriptionItem


def item_interval(core: Core, item: SubscriptionItem) -> tuple[str, int]:
    price = core.store.prices[item.price]
    return price.interval or "month", price.interval_count


def interval_of(core: Core, sub: Subscription) -> tuple[str, int]:
    """The shortest interval among the subscription's items."""
    return min(
        (item_interval(core, item) for item in sub.items),
        key=lambda ic: add_interval(0, ic[0], ic[1]),
    )


def period_end(sub: Subscription) -> int:
    """The earliest item's `current_period_end`: the next renewal, and what
    `cancel_at_period_end` cancels at when items' periods differ (assumption,
    docs/fakestripe.md)."""
    return min(item.current_period_end for item in sub.items)


def trial_will_end(core: Core, sub: Subscription) -> None:
    sub.trial_will_end_sent = True
    emit_subscription(core, "customer.subscription.trial_will_end", sub)


def end_trial(core: Core, sub: Subscription) -> None:
    now = core.now(sub.test_clock)
    has_card = payment_method_for(core, sub, sub.customer) is not None
    if not has_card and sub.trial_end_behavior == "pause":
        before = sub_json(core, sub)
        sub.status = "paused"
        sub.paused_at = now
        sub.paused_reason = TRIAL_END_PAUSE
        sub.trial_end = min(sub.trial_end or now, now)
        emit_subscription(core, "customer.subscription.updated", sub, before)
        emit_subscription(core, "customer.subscription.paused", sub)
        return
    if not has_card and sub.trial_end_behavior == "cancel":
        sub.trial_end = min(sub.trial_end or now, now)
        cancel(core, sub, reason=None)
        return
    start_new_period(core, sub, now, from_trial=True)


def start_new_period(core: Core, sub: Subscription, start: int, *, from_trial: bool) -> None:
    """Move the items whose period ends at `start` (all of them at a trial's end) to their next
    period and open its (draft) invoice, for those items only."""
    before = sub_json(core, sub)
    if from_trial:
        sub.status = "active"
        sub.trial_end = min(sub.trial_end or start, start)
        sub.billing_cycle_anchor = start
    due = [item for item in sub.items if from_trial or item.current_period_end <= start]
    for item in due:
        interval, count = item_interval(core, item)
        if from_trial:
            end = add_interval(start, interval, count)
        else:
            end = next_period_end(sub.billing_cycle_anchor, interval, count, start)
        item.current_period_start = start
        item.current_period_end = end
        # Product feature changes reach existing subscriptions at the next period
        # (https://docs.stripe.com/billing/entitlements).
        snapshot(core.store, item)
    if sub.cancel_at_period_end:
        sub.cancel_at = period_end(sub)
    end = max(item.current_period_end for item in due)
    inv = build_invoice(core, sub, "subscription_cycle", start, end, items=due)
    inv.period_start, inv.period_end = before_period(before, start), start
    inv.finalize_at = start + core.settings.invoice_finalize_delay_s
    emit_subscription(core, "customer.subscription.updated", sub, before)
    emit_invoice(core, "invoice.created", inv)


def before_period(before: dict[str, object], default: int) -> int:
    items = before.get("items")
    if isinstance(items, dict):
        data = items.get("data")
        if isinstance(data, list) and data and isinstance(data[0], dict):
            start = data[0].get("current_period_start")
            if isinstance(start, int):
                return start
    return default


def renew(core: Core, sub: Subscription) -> None:
    start = period_end(sub)
    start_new_period(core, sub, start, from_trial=False)


def expire_incomplete(core: Core, sub: Subscription) -> None:
    now = core.now(sub.test_clock)
    sub.status = "incomplete_expired"
    sub.ended_at = now
    emit_subscription(core, "customer.subscription.deleted", sub)
    for inv in list(core.store.invoices.values()):
        if inv.subscription == sub.id and inv.status == "open":
            void(core, inv)


def cancel_at_due(core: Core, sub: Subscription) -> None:
    cancel(core, sub, reason="cancellation_requested")
