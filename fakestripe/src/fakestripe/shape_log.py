"""`ShapeLog`: every object the fake answers or sends, checked against stripe-python's classes.

Off unless asked for (`FakeStripe(check_shapes=True)`): each `/v1` and `/v2`
JSON answer and each webhook payload goes through `grounding.object_problems`, so a key the
SDK's resource class does not declare, or a non-optional one left out, is recorded with where
it was seen. Problems are kept once per (route or event type, normalized path), so the log stays
small however long the run; `types` is every `object` value seen, nested ones included, so a
test can tell which kinds of object a run covered (`GET /_fake/shapes`).
"""

from __future__ import annotations

import re
from typing import Any

from . import grounding

_INDEX = re.compile(r"\[\d+\]")


def object_types(value: Any) -> set[str]:
    """Every `object` value in a JSON document, nested ones included."""
    found: set[str] = set()
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            name = item.get("object")
            if isinstance(name, str):
                found.add(name)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


class ShapeLog:
    def __init__(self) -> None:
        self.problems: dict[str, str] = {}
        self.types: set[str] = set()
        self.checked = 0

    def check(self, source: str, body: Any) -> None:
        """Check one answer or payload (`source`: `GET /v1/customers/{id}`, `webhook <type>`)."""
        if not isinstance(body, dict) or "object" not in body:
            return  # an error body, or a control answer: not a Stripe object
        self.checked += 1
        self.types |= object_types(body)
        for problem in grounding.object_problems(body):
            normalized = _INDEX.sub("[]", problem)
            self.problems.setdefault(normalized, f"{source}: {normalized}")

    def clear(self) -> None:
        self.problems.clear()
        self.types.clear()
        self.checked = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "checked": self.checked,
            "types": sorted(self.types),
            "problems": sorted(self.problems.values()),
        }
