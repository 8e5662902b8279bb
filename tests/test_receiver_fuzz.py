"""The receiver under bad input (docs/contract.md §4), by property tests (hypothesis) against the real ingest
app and a real Redis: random bodies (bytes, invalid UTF-8, other encodings, JSON of the wrong
shape, huge, empty), random and malformed `Stripe-Signature` headers, valid signatures over
garbage, wrong methods, paths, content types and content encodings.

Invariants, for every request: no 5xx (503 only while Redis is down); the server keeps
answering; and nothing is written to Redis (no arq job, no unit, no event list, no seen key)
unless the answer is a plain `200 {"received": true}` for a real, routable event.

Hardening added: the app is served as `python -m ingest` serves it (`ServedApp`), every answer
is without a `Server:` banner and every refusal is a JSON error; signed events with fields of
the wrong shape (ids with control characters or of any length, fields nested up to 1,000 levels,
hints of any size); and raw request heads an HTTP client would not send (bad framing, bad
encodings, control characters, oversized headers), whose answers never echo the request.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import redis.asyncio
from aiohttp.test_utils import TestClient, TestServer
from aiohttp.web import Application
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.app import MAX_BODY_BYTES, create_app
from shared.coordination import BadEventError, route
from shared.settings import Settings
from tests.conftest import WEBHOOK_SECRET
from tests.support.aio import aw
from tests.support.redis_server import RedisServer
from tests.support.served import ServedApp, raw_exchange, split_response
from tests.support.webhooks import body_of, event, sign, subscription

FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# Header values a client can send: printable ASCII (aiohttp refuses control characters).
header_text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=200)
hex_digits = st.text(alphabet="0123456789abcdef", min_size=0, max_size=70)


@st.composite
def signature_headers(draw: st.DrawFn) -> str | None:
    """Missing, empty, random, or shaped like Stripe's but wrong (bad t=, bad or foreign v1=)."""
    kind = draw(st.sampled_from(["none", "random", "shaped", "stale", "future", "other_secret"]))
    now = int(time.time())
    if kind == "none":
        return None
    if kind == "random":
        return draw(header_text)
    if kind == "shaped":
        t = draw(st.one_of(st.integers(-(2**63), 2**63).map(str), header_text))
        parts = [f"t={t}"] + [f"{draw(st.sampled_from(['v1', 'v0', 'V1', 'v2', '']))}={draw(hex_digits)}"
                              for _ in range(draw(st.integers(0, 3)))]
        return ",".join(draw(st.permutations(parts)))
    if kind == "stale":
        return f"t={now - draw(st.integers(301, 10**6))},v1={draw(hex_digits)}"
    if kind == "future":
        return f"t={now + draw(st.integers(301, 10**6))},v1={draw(hex_digits)}"
    return f"t={now},v1={'0' * 64}"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)


@st.composite
def almost_events(draw: st.DrawFn) -> dict[str, Any]:
    """Dicts shaped like Stripe events, with some fields missing or of the wrong type."""
    fields: dict[str, Any] = {
        "object": st.sampled_from(["event", "v2.core.event", "Event", "", "charge"]) | json_values,
        "id": st.sampled_from(["evt_fuzz", ""]) | st.text(max_size=300) | json_values,
        "type": st.sampled_from(["customer.subscription.updated", "invoice.paid", "product.updated",
                                 "price.created", "entitlements.feature.updated", "charge.succeeded",
                                 "checkout.session.completed", "customer.deleted"]) | json_values,
        "livemode": st.booleans() | json_values,
        "data": st.fixed_dictionaries({"object": json_values}) | json_values,
        "related_object": st.fixed_dictionaries({"id": json_values, "type": json_values}) | json_values,
        "created": json_values,
    }
    return {k: draw(v) for k, v in fields.items() if draw(st.booleans())}


def encoded_texts() -> st.SearchStrategy[bytes]:
    return st.tuples(st.text(max_size=300), st.sampled_from(["utf-8", "utf-16", "utf-32", "latin-1", "utf-8-sig"])).map(
        lambda te: te[0].encode(te[1], errors="replace"))


garbage_bodies = st.one_of(
    st.binary(max_size=2048),
    encoded_texts(),
    st.binary(min_size=1, max_size=64).map(lambda b: b"\xff\xfe" + b),  # never valid UTF-8
    json_values.map(orjson.dumps),
    almost_events().map(orjson.dumps),
    # numbers JSON allows and 64-bit parsers do not
    st.integers(2**64, 10**400).map(lambda n: b'{"object": "event", "id": "evt_big", "type": "invoice.paid", '
                                    b'"livemode": false, "created": ' + str(n).encode() + b"}"),
    st.just(b""),
)
content_types = st.sampled_from(["application/json", "application/json; charset=utf-8", "text/plain",
                                 "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                                 "application/octet-stream", ""]) | header_text
content_encodings = st.sampled_from([None, "gzip", "deflate", "br", "identity", "x-unknown"])


def served(app: Application) -> TestServer:
    return ServedApp(app)


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(served(create_app(settings))) as c:
        yield c


def routable(body: bytes) -> bool:
    """Whether this body is an event the receiver should queue work for."""
    try:
        parsed = orjson.loads(body)
        return isinstance(parsed, dict) and not route(parsed).ignored
    except (orjson.JSONDecodeError, BadEventError, AttributeError, TypeError):
        return False


async def post(client: TestClient[Any, Any], body: bytes, signature: str | None, content_type: str = "application/json",
               encoding: str | None = None, method: str = "POST", path: str = "/webhooks/stripe") -> tuple[int, bytes]:
    headers = {}
    if content_type:
        headers["Content-Type"] = content_type
    if signature is not None:
        headers["Stripe-Signature"] = signature
    if encoding is not None:
        headers["Content-Encoding"] = encoding
    resp = await client.request(method, path, data=body, headers=headers)
    answer = await resp.read()
    assert "Server" not in resp.headers, (method, path, resp.status)
    if resp.status >= 400 and method != "HEAD":
        assert resp.content_type == "application/json", (resp.status, answer[:200])
        assert orjson.loads(answer)["error"]["reason"]
        if signature is not None and len(signature) >= 16:
            assert signature.encode() not in answer, "the answer echoes the request"
    return resp.status, answer


async def check(client: TestClient[Any, Any], r: redis.asyncio.Redis, status: int, answer: bytes, body: bytes) -> None:
    """The invariants of every request (see the module docstring)."""
    assert status < 500, (status, answer[:300])
    accepted = status == 200 and answer.startswith(b"{") and orjson.loads(answer) == {"received": True}
    if accepted:
        assert routable(body), "a 200 for something that is not an event"
        await r.flushdb()  # it was real; start the next example clean
    else:
        assert await r.dbsize() == 0, f"{status} {answer[:200]!r} but something was written to Redis"
    assert (await client.get("/healthz")).status == 200


@FUZZ
@given(body=garbage_bodies, signature=signature_headers(), content_type=content_types, encoding=content_encodings)
async def test_random_bodies_and_signatures_are_refused(
    client: TestClient[Any, Any], redis_client: redis.asyncio.Redis, body: bytes, signature: str | None,
    content_type: str, encoding: str | None,
) -> None:
    """Any body, with a missing, random, malformed, stale, future or foreign signature, in any
    content type and encoding: a 4xx, nothing queued, and the server still answers."""
    status, answer = await post(client, body, signature, content_type, encoding)
    assert 400 <= status < 500, (status, answer[:300])
    await check(client, redis_client, status, answer, body)


@FUZZ
@given(body=garbage_bodies, content_type=content_types)
async def test_valid_signatures_over_garbage_are_refused_or_ignored(
    client: TestClient[Any, Any], redis_client: redis.asyncio.Redis, body: bytes, content_type: str
) -> None:
    """A correct signature over garbage, JSON of the wrong shape or an almost-event: never a
    5xx, and nothing queued unless it really is an event that needs work."""
    signature = sign(body, [WEBHOOK_SECRET])
    status, answer = await post(client, body, signature, content_type)
    await check(client, redis_client, status, answer, body)


@FUZZ
@given(method=st.sampled_from(["GET", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD", "TRACE", "FUZZ"]),
       path=st.sampled_from(["/webhooks/stripe", "/webhooks/stripe/", "/webhooks", "/", "/metrics/x",
                             "/webhooks/stripe?x=1", "/%ff", "/../etc/passwd"]) | header_text.map(lambda t: "/" + t.lstrip("/")),  # "//x" is a host, not a path
       body=garbage_bodies)
async def test_wrong_methods_and_paths(
    client: TestClient[Any, Any], redis_client: redis.asyncio.Redis, method: str, path: str, body: bytes
) -> None:
    """Other methods on the webhook path are a 405 (a method HTTP does not know, a 400); unknown
    paths a 404 (or a 400 for a path the HTTP parser refuses); a valid event sent with the wrong
    method is not queued."""
    real = body_of(event("customer.subscription.updated", subscription("cus_method")))
    for payload in (body, real):
        try:
            status, _ = await post(client, payload, sign(payload, [WEBHOOK_SECRET]), method=method, path=path)
        except ValueError:
            return  # a path the client itself refuses to send
        assert status < 500, (method, path, status)
        if method == "POST" or path.split("?")[0] != "/webhooks/stripe":
            continue
        # methods HTTP does not know are refused by the parser itself
        assert status == (405 if method != "FUZZ" else 400), (method, path, status)
        assert await redis_client.dbsize() == 0


@pytest.mark.parametrize(
    ("size", "signed", "expected"),
    [
        (0, False, 400),
        (0, True, 400),
        (MAX_BODY_BYTES, True, 400),  # garbage of exactly the limit: read, then refused as not JSON
        (MAX_BODY_BYTES + 1, True, 413),
        (8 * MAX_BODY_BYTES, True, 413),
        (8 * MAX_BODY_BYTES, False, 413),
    ],
)
async def test_empty_and_huge_bodies(
    client: TestClient[Any, Any], redis_client: redis.asyncio.Redis, size: int, signed: bool, expected: int
) -> None:
    """Empty bodies and bodies up to 8 MiB: 400 or 413 as docs/contract.md §4 says, nothing queued,
    and the server still answers."""
    body = b"x" * size
    status, answer = await post(client, body, sign(body, [WEBHOOK_SECRET]) if signed else None)
    assert status == expected, (status, answer[:200])
    assert orjson.loads(answer)["error"]["reason"]
    await check(client, redis_client, status, answer, body)


@FUZZ
@given(body=garbage_bodies, signature=signature_headers(), valid=st.booleans())
async def test_redis_down_is_503_for_events_and_4xx_for_the_rest(
    down_client: TestClient[Any, Any], body: bytes, signature: str | None, valid: bool
) -> None:
    """With Redis stopped, a valid event gets 503 (never 200: it is not queued, Stripe will
    retry), everything else the same 4xx as with Redis up, and the server keeps answering."""
    if valid:
        body = body_of(event("customer.subscription.updated", subscription("cus_down")))
        signature = sign(body, [WEBHOOK_SECRET])
    status, answer = await post(down_client, body, signature)
    if valid:
        assert (status, orjson.loads(answer)["error"]["reason"]) == (503, "queue_unavailable")
    else:
        assert 400 <= status < 500, (status, answer[:300])
    assert (await down_client.get("/healthz")).status == 200
    assert (await down_client.get("/readyz")).status == 503


@pytest.fixture
async def down_client(database_url: str) -> AsyncIterator[TestClient[Any, Any]]:
    """The receiver with its Redis stopped (and nothing listening on its port)."""
    server = RedisServer()
    server.start()
    settings = Settings(redis_url=server.url, database_url=database_url, stripe_webhook_secret=[WEBHOOK_SECRET],
                        stripe_api_key="sk_test_x")
    try:
        async with TestClient(served(create_app(settings))) as c:
            server.stop()
            yield c
            server.start()
            r = redis.asyncio.Redis.from_url(server.url)
            assert await aw(r.dbsize()) == 0
            await r.aclose()
    finally:
        server.close()


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br"])
async def test_body_that_does_not_decode_is_a_400(
    client: TestClient[Any, Any], redis_client: redis.asyncio.Redis, encoding: str
) -> None:
    """Found by the fuzzer: a gzip body that does not decode made the receiver answer 500. It
    is a 400 (from the receiver, naming the reason, or from aiohttp's parser when it fails
    before the receiver sees the request), and nothing is queued."""
    status, answer = await post(client, b"\x00\x00", None, encoding=encoding)
    assert status == 400, (status, answer)
    if encoding == "gzip":
        assert orjson.loads(answer)["error"]["reason"] == "unreadable_body"
    assert await redis_client.dbsize() == 0
    assert (await client.get("/healthz")).status == 200


# --- hardening: signed events with fields of the wrong shape ---------------------------------------

NESTED = "<nested>"
control_texts = st.text(alphabet=st.characters(max_codepoint=0x2FFF), min_size=1, max_size=20).filter(
    lambda t: not t.isprintable())
shaped_wrong = st.one_of(
    st.just(NESTED),
    control_texts.map(lambda t: "evt_" + t),
    control_texts.map(lambda t: "cus_" + t),
    st.integers(256, 6000).map(lambda n: "evt_" + "a" * n),
    st.integers(256, 6000).map(lambda n: "cus_" + "a" * n),
    st.sampled_from(["", "evt_", "_", "evt__x", "EVT_1", "evt_ä", "evt_1:2", "internal:events", "__events__"]),
    json_values,
)


@st.composite
def wrongly_shaped_events(draw: st.DrawFn) -> bytes:
    """A real event (snapshot or checkout, with a hint) with one field Stripe could never send."""
    kind = draw(st.sampled_from(["subscription", "checkout"]))
    if kind == "subscription":
        e = event("customer.subscription.updated", subscription("cus_fuzzshape"))
    else:
        e = event("checkout.session.completed", {"id": "cs_test_fuzz", "object": "checkout.session",
                                                 "customer": "cus_fuzzshape", "status": "complete",
                                                 "client_reference_id": "u_1"})
    path = draw(st.sampled_from([("id",), ("type",), ("created",), ("data", "object", "customer"),
                                 ("data", "object", "id"), ("data", "object", "client_reference_id")]))
    target = e
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = draw(shaped_wrong)
    body = orjson.dumps(e)
    depth = draw(st.integers(1, 1000))
    return body.replace(orjson.dumps(NESTED), b'{"x":' * depth + b"1" + b"}" * depth)


def well_shaped(body: bytes) -> bool:
    """Whether a body of `wrongly_shaped_events` came out valid after all (a JSON value that
    happens to be a Stripe id, a hint that is printable and short...)."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    return isinstance(parsed, dict) and routable(body)


@FUZZ
@given(body=wrongly_shaped_events())
async def test_signed_events_with_fields_of_the_wrong_shape_are_refused(
    client: TestClient[Any, Any], redis_client: redis.asyncio.Redis, body: bytes
) -> None:
    """A signed event with an id, type, `created` or hint Stripe would never
    send (control characters, any length, nested up to 1,000 levels) is a JSON 4xx or an
    acknowledged no-op, never a 5xx, and queues nothing unless it is in fact well-formed."""
    status, answer = await post(client, body, sign(body, [WEBHOOK_SECRET]))
    assert status < 500, (status, answer[:300])
    if status == 200 and orjson.loads(answer) == {"received": True}:
        assert well_shaped(body)
    await check(client, redis_client, status, answer, body)


# --- hardening: request heads no HTTP client would send --------------------------------------------

MARKER = "M" + uuid.uuid4().hex
header_bytes = st.binary(min_size=0, max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
raw_headers = st.lists(st.one_of(
    st.sampled_from([b"Content-Encoding: br", b"Content-Encoding: gzip", b"Content-Encoding: x-unknown",
                     b"Content-Encoding: gzip, br", b"Transfer-Encoding: chunked", b"Transfer-Encoding: gzip",
                     b"Transfer-Encoding: chunked, chunked", b"Content-Length: 5", b"Content-Length: -1",
                     b"Content-Length: 99999999999999999999", b"Content-Length: 1, 2", b"Content-Length: 0x10",
                     b"Expect: 100-continue", b"Connection: upgrade", b"Upgrade: h2c", b"Host:",
                     b"Content-Type: application/json"]),
    st.integers(1, 20_000).map(lambda n: b"Stripe-Signature: t=1," + MARKER.encode() + b"a" * n),
    st.integers(1, 300).map(lambda n: b"X-Many: " + MARKER.encode() + b"\r\nX-Many: y" * n),
    header_bytes.map(lambda b: b"X-" + MARKER.encode() + b": " + b),
    header_bytes.map(lambda b: MARKER.encode() + b + b": v"),
), max_size=6)
request_lines = st.sampled_from([b"POST /webhooks/stripe HTTP/1.1", b"POST /webhooks/stripe HTTP/1.0",
                                 b"GET /healthz HTTP/1.1", b"POST /webhooks/stripe HTTP/9.9",
                                 b"POST /webhooks/stripe", b"POST  /webhooks/stripe HTTP/1.1",
                                 b"POST /webhooks/stripe?" + MARKER.encode() + b" HTTP/1.1",
                                 b"P\x00ST /webhooks/stripe HTTP/1.1", MARKER.encode() + b" / HTTP/1.1"])


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(line=request_lines, headers=raw_headers, body=st.binary(max_size=200))
async def test_raw_request_heads_answer_json_without_echo(
    client: TestClient[Any, Any], redis_client: redis.asyncio.Redis, line: bytes, headers: list[bytes], body: bytes
) -> None:
    """Whatever the head (bad framing, encodings aiohttp cannot decode, control
    characters, oversized or too many headers), an answer, when the server gives one, is JSON,
    never a 5xx, never has a `Server:` banner, never echoes a byte of the request; nothing is
    queued; and the server keeps answering."""
    assert client.port is not None
    request = b"\r\n".join([line, b"Host: x", *headers]) + b"\r\n\r\n" + body
    # A head that announces a body never sent gets no answer: read for a second, then move on.
    raw = await raw_exchange(client.port, request, timeout_s=1)
    assert MARKER.encode() not in raw, raw[:300]
    raw = raw.removeprefix(b"HTTP/1.1 100 Continue\r\n\r\n")
    if raw:
        status, response_headers, answer = split_response(raw)
        assert status < 500, raw[:300]
        assert "server" not in response_headers
        if answer:
            assert response_headers.get("content-type", "").startswith("application/json"), raw[:300]
            orjson.loads(answer)
    assert await redis_client.dbsize() == 0
    assert (await client.get("/healthz")).status == 200
    await asyncio.sleep(0)
