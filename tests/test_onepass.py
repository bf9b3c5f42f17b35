"""The one-pass request decoder (ue_agent/api/onepass.py) against the general path.

The one-pass path may take a line only when the general path (decode_line, check_id, the
operation's converter) takes it too and makes the same request of it; every line it does
not take goes to the general path, which words the error. Checked on generated lines for
every operation, with values at and beyond the declared limits, unknown and missing
members, wrong types, duplicated and escaped member names.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ue_agent.api.core import ConnectionCore, Request
from ue_agent.api.onepass import OnePass
from ue_agent.api.protocol import decode_line
from ue_agent.api.schema import check_id, compiled
from ue_agent.convert import ConvertError
from ue_agent.errors import AgentError
from ue_agent.ops.registry import OPERATIONS

ONE = OnePass(OPERATIONS.values())
MAPPED = sorted(name for name in OPERATIONS if name not in ONE.general)

_INTS = [
    -(2**53),
    -(2**53) + 1,
    -1,
    0,
    1,
    2**31 - 1,
    2**31,
    2**32 - 1,
    2**32,
    7 * 24 * 3600,
    7 * 24 * 3600 + 1,
    2**48 - 1,
    2**48,
    2**53 - 1,
    2**53,
    2**63,
    2**64,
]
_LENGTHS = [0, 1, 2, 64, 65, 128, 129, 16384, 16385]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from(_INTS),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
    st.sampled_from(_LENGTHS).map(lambda n: "a" * n),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.sampled_from([0, 1, 64, 65]).flatmap(
            lambda n: st.lists(st.text(max_size=3), min_size=n, max_size=n)
        ),
        st.dictionaries(st.text(max_size=4), inner, max_size=2),
    ),
    max_leaves=6,
)


def general(line: bytes) -> tuple[Any, str, Any] | None:
    """What the general path makes of a line: (id, op, request), or None for an error."""
    try:
        msg = decode_line(line)
        if type(msg) is not dict:
            return None
        req_id = check_id(msg.pop("id", None))
        op = msg.pop("op", None)
        decl = OPERATIONS.get(op) if type(op) is str else None
        if decl is None:
            return None
        conv, empty = compiled(decl)
        return req_id, op, empty if not msg and empty is not None else conv(msg)
    except (ValueError, ConvertError, AgentError):
        return None


def _fields(op: str) -> list[str]:
    return [f.name for f in dataclasses.fields(OPERATIONS[op].request)]


@st.composite
def lines(draw: st.DrawFn) -> bytes:
    op = draw(st.sampled_from(MAPPED))
    names = _fields(op)
    valid = _valid(op)
    obj: dict[str, Any] = {}
    if draw(st.integers(0, 9)):
        obj["id"] = draw(st.one_of(st.sampled_from(_INTS), st.text(max_size=3), scalars))
    obj["op"] = op
    for name in names:
        if draw(st.integers(0, 3)):
            obj[name] = draw(st.one_of(st.just(valid[name]), values))
    if not draw(st.integers(0, 5)):
        obj[draw(st.text(max_size=6))] = draw(scalars)
    text = json.dumps(obj, ensure_ascii=draw(st.booleans()))
    if not draw(st.integers(0, 7)) and len(obj) > 1:  # a member given twice
        k = draw(st.sampled_from(sorted(obj)))
        text = text[:-1] + ", " + json.dumps(k) + ": " + json.dumps(draw(values)) + "}"
    return text.encode("utf-8", "surrogatepass")


def _valid(op: str) -> dict[str, Any]:
    """A request of ``op`` with every parameter given a value within its limits."""
    sample: dict[str, Any] = {
        "ssrc": 0x1234,
        "index": 2**48 - 1,
        "srtcp_index": 2**31 - 1,
        "validity": 3600,
        "lifetime": 2**48,
        "protocols": [1],
        "events": ["handover"],
        "offer": [["a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:x"]],
        "answer": [["a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:x"]],
    }
    out: dict[str, Any] = {"id": "r-1", "op": op}
    for f in dataclasses.fields(OPERATIONS[op].request):
        if f.name in sample:
            out[f.name] = sample[f.name]
        elif f.type in ("bool",):
            out[f.name] = True
        elif "List" in str(f.type):
            out[f.name] = ["audio"]
        else:
            out[f.name] = "s" * 16
    return out


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines())
def test_one_pass_takes_only_what_the_general_path_takes_and_makes_the_same_request(line: bytes) -> None:
    fast = ONE.decode(line)
    if fast is None:
        return
    slow = general(line)
    assert slow is not None, line
    assert fast[:2] == slow[:2] and type(fast[0]) is type(slow[0])
    assert type(fast[2]) is type(slow[2]) and fast[2] == slow[2], line


@pytest.mark.parametrize("op", MAPPED)
def test_every_mapped_operation_takes_the_one_pass_for_a_valid_request(op: str) -> None:
    line = json.dumps(_valid(op)).encode()
    fast, slow = ONE.decode(line), general(line)
    assert slow is not None, "the sample request is not valid: mend _valid"
    assert fast is not None and fast[:2] == slow[:2] and fast[2] == slow[2]
    assert OPERATIONS[op].empty is None or fast[2] is OPERATIONS[op].empty


def test_only_operations_with_unmapped_types_are_left_to_the_general_path() -> None:
    # ims.authenticate's RAND/AUTN are base64 bytes: base64 strictness stays the converter's
    assert ONE.general == {"ims.authenticate": "<class 'bytes'>"}


@pytest.mark.parametrize(
    "line",
    [
        b'{"id":1,"op":"status","op":"session.keys","session":"a"}',  # JSON: the last op wins
        b'{"id":1,"op":"session.keys","o\\u0070":"status","session":"a"}',  # an escaped name
        b'{"id":1,"op":"session.keys","session":"\\ud800"}',  # a lone surrogate
        b'{"id":true,"op":"status"}',
        b'{"id":1.0,"op":"status"}',
        b'{"id":9007199254740992,"op":"status"}',
        b'{"id":"","op":"status"}',
        b'{"op":"status"}',
        b'{"id":1,"op":"session.keys","session":"a","dialog":NaN}',
        b'[{"id":1,"op":"status"}]',
        b'{"id":1,"op":"session.keys","session":"a"} x',
    ],
)
def test_lines_left_to_the_general_path(line: bytes) -> None:
    assert ONE.decode(line) is None


def test_the_core_gives_the_same_request_on_either_path() -> None:
    core = ConnectionCore()
    one = core.line_action(b'{"id":7,"op":"session.keys","session":"s-1","dialog":"d"}\r')
    core.inflight.clear()
    two = core.line_action(b'{"id":7,"op":"session.keys","s\\u0065ssion":"s-1","dialog":"d"}')
    assert isinstance(one, Request) and isinstance(two, Request)
    assert (one.id, one.op, one.params) == (two.id, two.op, two.params)
    # an id still in flight is refused on the one-pass path as on the general one
    again = core.line_action(b'{"id":7,"op":"session.keys","session":"s-1"}')
    assert isinstance(again, bytes) and b'"api.bad_request"' in again and b'"param":"id"' in again
