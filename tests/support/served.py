"""A `TestServer` that serves an app the way `python -m ingest` / `python -m api` do: through
`shared.serving.Runner` (JSON answers to HTTP parser errors, a deadline for request heads)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from shared.serving import HEADER_TIMEOUT_S, Runner


class ServedApp(TestServer):
    def __init__(self, app: web.Application, *, header_timeout_s: float = HEADER_TIMEOUT_S, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.header_timeout_s = header_timeout_s

    async def _make_runner(self, **kwargs: Any) -> web.BaseRunner:
        return Runner(self.app, header_timeout_s=self.header_timeout_s, **kwargs)


async def raw_exchange(port: int, request: bytes, timeout_s: float = 30.0) -> bytes:
    """Send `request` as is on a fresh connection; everything the server sends until it closes
    (or, for a kept-alive connection, until `timeout_s` has passed with the answer complete)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        data = b""
        try:
            async with asyncio.timeout(timeout_s):
                while chunk := await reader.read(65536):
                    data += chunk
                    if _complete(data):
                        break
        except TimeoutError:
            pass
        return data
    finally:
        writer.close()


def _complete(data: bytes) -> bool:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value.strip())
    return False


def split_response(data: bytes) -> tuple[int, dict[str, str], bytes]:
    """(status, headers with lower-case names, body) of one raw HTTP/1.1 response."""
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body
