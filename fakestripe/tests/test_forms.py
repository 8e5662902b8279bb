"""Stripe's form encoding is parsed and checked the way Stripe does it.

The parser must read exactly what the official SDK writes (it encodes arrays as `a[0]=`,
dicts as `a[b]=`), and what other clients write (`expand[]=x`), and the checks must refuse
unknown or malformed parameters with Stripe's error codes.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode

import pytest
from fakestripe.forms import (
    UNSET,
    Arr,
    Endpoint,
    Int,
    Metadata,
    Obj,
    Range,
    Str,
    in_range,
    parse_form,
    parse_query,
)
from hypothesis import given
from hypothesis import strategies as st
from stripe._encode import _api_encode

from fakestripe import errors

keys = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=8)
leaves = st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=10)
trees = st.recursive(
    leaves,
    lambda children: (
        st.lists(children, min_size=1, max_size=3)
        | st.dictionaries(keys, children, min_size=1, max_size=3)
    ),
    max_leaves=12,
)


def normalise(value: Any) -> Any:
    """Parsed dicts whose keys are 0..n-1 are the SDK's lists."""
    if isinstance(value, dict):
        if (
            value
            and all(k.isdigit() for k in value)
            and sorted(int(k) for k in value) == list(range(len(value)))
        ):
            return [normalise(value[str(i)]) for i in range(len(value))]
        return {k: normalise(v) for k, v in value.items()}
    return value


@given(st.dictionaries(keys, trees, min_size=1, max_size=4))
def test_parses_what_the_sdk_encodes(params: dict[str, Any]) -> None:
    """Any nesting of dicts and lists the SDK encodes comes back as the same tree."""
    encoded = urlencode(list(_api_encode(params)))
    assert normalise(parse_form(parse_qsl(encoded, keep_blank_values=True))) == params


def test_parses_brackets_and_appends() -> None:
    """`expand[]` appends, `items[0][price]` nests, blank values are kept (they mean unset)."""
    parsed = parse_query(
        "expand[]=a&expand[]=b&items[0][price]=p&items[0][quantity]=2&pause_collection="
    )
    assert parsed == {
        "expand": {"0": "a", "1": "b"},
        "items": {"0": {"price": "p", "quantity": "2"}},
        "pause_collection": "",
    }


def test_schema_converts_and_refuses_like_stripe() -> None:
    """Known params are converted; unknown ones give `parameter_unknown`, missing ones
    `parameter_missing`, bad integers `parameter_invalid_integer`, empty required strings
    `parameter_invalid_empty`, a plain string where an array is expected "Invalid array"."""
    endpoint = Endpoint(
        {
            "customer": Str(),
            "items": Arr(Obj({"price": Str(), "quantity": Int(min=1)})),
            "metadata": Metadata(),
        },
        required=frozenset({"customer"}),
        list_params=True,
    )
    ok = endpoint.check(
        parse_query("customer=cus_1&items[0][price]=p&items[0][quantity]=3&limit=5&metadata[a]=")
    )
    assert ok == {
        "customer": "cus_1",
        "items": [{"price": "p", "quantity": 3}],
        "limit": 5,
        "metadata": {"a": None},
    }
    cases = {
        "customer=c&nope=1": ("parameter_unknown", "nope"),
        "customer=c&items[0][colour]=red": ("parameter_unknown", "items[0][colour]"),
        "items[0][price]=p": ("parameter_missing", "customer"),
        "customer=c&limit=ten": ("parameter_invalid_integer", "limit"),
        "customer=": ("parameter_invalid_empty", "customer"),
    }
    for query, (code, param) in cases.items():
        with pytest.raises(errors.StripeError) as caught:
            endpoint.check(parse_query(query))
        assert (caught.value.code, caught.value.param) == (code, param), query
    with pytest.raises(errors.StripeError, match="Invalid array"):
        endpoint.check(parse_query("customer=c&expand=customer"))
    with pytest.raises(errors.StripeError, match="less than or equal to 100"):
        endpoint.check(parse_query("customer=c&limit=101"))


def test_created_ranges_and_unset() -> None:
    """`created[gte]=..` filters work and `metadata=` clears all metadata."""
    rng = Range().coerce({"gte": "10", "lt": "20"}, "created")
    assert in_range(10, rng)
    assert in_range(19, rng)
    assert not in_range(20, rng)
    assert not in_range(9, rng)
    assert in_range(5, Range().coerce("5", "created"))
    assert Metadata().coerce("", "metadata") is UNSET
