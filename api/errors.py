"""JSON answers and the one error type a handler raises for a bad request."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from shared.serving import error_body


class ApiError(Exception):
    """A request the API refuses, with the status and a machine-readable reason."""

    def __init__(self, status: int, reason: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.headers = headers or {}


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(payload), status=status, content_type="application/json", headers=headers
    )


def error_response(status: int, reason: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=error_body(reason, message), status=status, content_type="application/json",
                        headers=headers)
