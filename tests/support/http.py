"""A tiny blocking HTTP client (urllib) for tests that talk to a process from threads."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def _send(req: urllib.request.Request, timeout_s: float) -> Response:
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return Response(resp.status, resp.read())
    except urllib.error.HTTPError as err:
        return Response(err.code, err.read())


def get(url: str, timeout_s: float = 10.0) -> Response:
    return _send(urllib.request.Request(url), timeout_s)


def post(url: str, body: bytes, headers: dict[str, str], timeout_s: float = 20.0) -> Response:
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Content-Type": "application/json", **headers})
    return _send(req, timeout_s)
