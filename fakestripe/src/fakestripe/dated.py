"""Tables kept in list order, so a page of a `created` range costs O(log n + page), not O(n).

Stripe lists newest first, ties broken by creation order (`seq`). The list endpoints used to
filter and sort every object of the account for each page: at 100,000 subscriptions that is
the fake, not the client, setting the pace of a sweep (docs/benchmarks.md, "Scale: where
things stand"). A `DatedTable` is the dict of objects by id it always was, plus the keys
`(created, seq, id)` in ascending order; `page` walks them from a bisected position.

`created` is fixed once an object exists (Stripe's, and the fake's code never changes it), but
a test may backdate an object in the store (tests/test_sweep_ranges.py does): `Dated` objects
tell their table, which moves the key.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

from . import errors

JSON = dict[str, Any]
Key = tuple[int, int, str]
FAR = 2**62


class Dated:
    """A mixin for the dataclasses a `DatedTable` holds: setting `created` re-files the object."""

    id: str
    created: int
    seq: int

    def __setattr__(self, name: str, value: Any) -> None:
        watcher = self.__dict__.get("_dated_watcher") if name == "created" else None
        if watcher is not None:
            watcher(self, value)
        object.__setattr__(self, name, value)

    def __getstate__(self) -> dict[str, Any]:
        # A copy (`copy.deepcopy(sub)` to undo a failed update) is in no table: no watcher.
        return {k: v for k, v in self.__dict__.items() if k != "_dated_watcher"}


T = TypeVar("T", bound=Dated)


def created_bounds(rng: Mapping[str, int] | None) -> tuple[int, int]:
    """`[lo, hi)` of a `created` filter (`eq` aside: the caller's `in_range` checks that)."""
    if not rng:
        return -FAR, FAR
    lo = max(rng.get("gte", -FAR), rng.get("gt", -FAR) + 1)
    hi = min(rng.get("lt", FAR), rng.get("lte", FAR - 1) + 1)
    if "eq" in rng:
        lo, hi = max(lo, rng["eq"]), min(hi, rng["eq"] + 1)
    return lo, hi


class DatedTable(dict[str, T]):
    """Objects by id, with their keys in ascending `(created, seq, id)` order."""

    def __init__(self) -> None:
        super().__init__()
        self._order: list[Key] = []
        self._keys: dict[str, Key] = {}

    def _file(self, obj: T, created: int) -> None:
        key = (created, obj.seq, obj.id)
        self._unfile(obj.id)
        bisect.insort(self._order, key)
        self._keys[obj.id] = key

    def _unfile(self, object_id: str) -> None:
        key = self._keys.pop(object_id, None)
        if key is not None:
            del self._order[bisect.bisect_left(self._order, key)]

    def __setitem__(self, object_id: str, obj: T) -> None:
        if object_id in self and self[object_id] is not obj:
            self._unfile(object_id)
        super().__setitem__(object_id, obj)
        self._file(obj, obj.created)
        obj.__dict__["_dated_watcher"] = self._moved

    def _moved(self, obj: Dated, created: int) -> None:
        if self.get(obj.id) is obj:
            self._file(obj, created)

    def __delitem__(self, object_id: str) -> None:
        obj = self[object_id]
        super().__delitem__(object_id)
        self._unfile(object_id)
        obj.__dict__.pop("_dated_watcher", None)

    def pop(self, object_id: str, *default: Any) -> Any:
        if object_id in self:
            obj = self[object_id]
            del self[object_id]
            return obj
        if default:
            return default[0]
        raise KeyError(object_id)

    def clear(self) -> None:
        for obj in self.values():
            obj.__dict__.pop("_dated_watcher", None)
        super().clear()
        self._order.clear()
        self._keys.clear()

    def update(self, *args: Any, **kwargs: Any) -> None:
        for object_id, obj in dict(*args, **kwargs).items():
            self[object_id] = obj

    def setdefault(self, object_id: str, default: T) -> T:
        if object_id not in self:
            self[object_id] = default
        return self[object_id]

    def popitem(self) -> tuple[str, T]:
        object_id = next(reversed(self.keys()))
        return object_id, self.pop(object_id)

    def _walk(self, start: int, stop: int, step: int) -> Iterator[T]:
        order = self._order
        for i in range(start, stop, step):
            yield self[order[i][2]]

    def page(
        self,
        p: Mapping[str, Any],
        keep: Callable[[T], bool],
        render: Callable[[T], JSON],
        label: str,
    ) -> tuple[list[JSON], bool]:
        """One page, newest first, of the objects `keep` accepts (it must check `created` too:
        the bounds only narrow the walk), with Stripe's `limit`, `starting_after`,
        `ending_before` and `has_more` (the same answers as `api.paginate` over the sorted list)."""
        if "starting_after" in p and "ending_before" in p:
            raise errors.invalid_request(
                "You may only specify one of these parameters: ending_before, starting_after."
            )
        limit = p.get("limit", 10)
        lo, hi = created_bounds(p.get("created"))
        first = bisect.bisect_left(self._order, (lo,))
        end = bisect.bisect_left(self._order, (hi,))
        cursor_id = p.get("starting_after", p.get("ending_before"))
        if cursor_id is not None:
            cursor = self.get(cursor_id)
            if cursor is None or not keep(cursor):
                param = "starting_after" if "starting_after" in p else "ending_before"
                raise errors.resource_missing(label, cursor_id, param=param)
            at = bisect.bisect_left(self._order, self._keys[cursor_id])
        if "ending_before" in p:
            # The `limit` objects just newer than the cursor, newest first.
            walk = self._walk(at + 1, max(end, at + 1), 1)
        elif "starting_after" in p:
            walk = self._walk(at - 1, first - 1, -1)
        else:
            walk = self._walk(end - 1, first - 1, -1)
        found: list[T] = []
        for obj in walk:
            if keep(obj):
                found.append(obj)
                if len(found) > limit:
                    break
        has_more = len(found) > limit
        window = found[:limit]
        if "ending_before" in p:
            window.reverse()
        return [render(o) for o in window], has_more
