"""The receiver's signature match agrees with the stripe SDK's `WebhookSignature.verify_header`
(docs/contract.md §4: a valid signature under any configured secret), on real signatures and on
headers made to confuse a parser."""

from __future__ import annotations

import stripe
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.verify import signature_matches

SECRETS = st.sampled_from(["whsec_a", "whsec_b", " ", "whsec_\u00e9"])
BODIES = st.one_of(st.binary(max_size=64), st.text(max_size=64).map(lambda t: t.encode()))
PART = st.one_of(
    st.sampled_from(["t", "v1", "v0", " t", "t ", ""]),
    st.text(alphabet="t v1=0123456789abcdef,+-_ \u00e9", max_size=12),
)


def sdk_matches(body: bytes, header: str, secret: str) -> bool:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return False  # verify() refuses such bodies before matching (invalid_signature)
    try:
        return bool(stripe.WebhookSignature.verify_header(text, header, secret, tolerance=None))
    except stripe.SignatureVerificationError:
        return False


def valid_header(body: bytes, secret: str, timestamp: int) -> str:
    header: str = stripe.WebhookSignature.generate_signature_header(body.decode(), secret, timestamp=timestamp)
    return header


@settings(max_examples=300, deadline=None)
@given(body=st.text(max_size=200).map(lambda t: t.encode()), secret=SECRETS, other=SECRETS,
       timestamp=st.integers(0, 2**40), extra=st.lists(PART, max_size=3))
def test_agrees_with_the_sdk_on_signed_headers(body: bytes, secret: str, other: str, timestamp: int,
                                               extra: list[str]) -> None:
    header = ",".join([valid_header(body, other, timestamp), *extra])
    assert signature_matches(body, header, secret) == sdk_matches(body, header, secret)


@settings(max_examples=500, deadline=None)
@given(body=BODIES, secret=SECRETS, parts=st.lists(st.tuples(PART, PART), max_size=4))
def test_agrees_with_the_sdk_on_arbitrary_headers(body: bytes, secret: str, parts: list[tuple[str, str]]) -> None:
    header = ",".join(f"{k}={v}" for k, v in parts)
    assert signature_matches(body, header, secret) == sdk_matches(body, header, secret)


def test_a_roll_signs_with_each_secret() -> None:
    body = b'{"id": "evt_1"}'
    old, new = valid_header(body, "whsec_old", 1700000000), valid_header(body, "whsec_new", 1700000000)
    header = f"{old},{new.split(',', 1)[1]}"
    assert signature_matches(body, header, "whsec_old")
    assert signature_matches(body, header, "whsec_new")
    assert not signature_matches(body, header, "whsec_other")
    assert not signature_matches(body + b" ", header, "whsec_new")
