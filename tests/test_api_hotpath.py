"""The request path's shortcuts give exactly what the general code gives (issue 14).

- ReplyEncoder: a reply with RawJson values, written from the kept segments of the
  operation's last reply, is the line encode_reply writes, byte for byte, whatever changed
  in between (values, their types, member order, the raw bytes); the kept segments hold no
  key material.
- decode_line: the C scanner's shortcut for a line that is one object accepts and refuses
  exactly what the general decoder does.
- convert.converter: the per-class bound converter (and the fused str/int checks) give the
  same values and the same errors as convert().
"""

from __future__ import annotations

import json
from dataclasses import field
from typing import Annotated, Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.test_keystore import negotiated
from ue_agent.api.core import ConnectionCore
from ue_agent.api.protocol import RawJson, ReplyEncoder, decode_line, encode_reply, encode_value, wipe
from ue_agent.convert import ConvertError, Len, Range, convert, converter
from ue_agent.media.store import KeyStore
from ue_agent.ops.declare import request


def general(req_id: Any, outcome: dict[str, Any]) -> bytes:
    line = encode_reply({"id": req_id, "ok": True, **outcome})
    try:
        return bytes(line)
    finally:
        wipe(line)


def fast(enc: ReplyEncoder, op: str, req_id: Any, outcome: dict[str, Any]) -> bytes:
    line = enc.line(op, req_id, outcome)
    try:
        return bytes(line)
    finally:
        wipe(line)


def outcome(raw: bytearray, **changes: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "session": "s-1",
        "kind": "sdes",
        "state": "active",
        "streams": RawJson(raw),
        "ssrcs": [],
        "handover": "active",
        "protection": {"scope": "e2e-sdes", "media": {"audio": "e2e-sdes"}, "peer_authenticated": False},
    }
    out.update(changes)
    return out


def test_reply_from_kept_segments_is_the_general_reply_byte_for_byte() -> None:
    enc = ReplyEncoder()
    raw = bytearray(b'[{"media":"audio","tx":{"master_key":"AAAA"}}]')
    steps: list[dict[str, Any]] = [
        outcome(raw),
        outcome(raw),  # the same: segments used again
        outcome(raw, state="handover_pending"),
        outcome(
            raw, protection={"scope": "e2e-sdes", "media": {"audio": "e2e-sdes"}, "peer_authenticated": 0}
        ),
        outcome(
            raw, protection={"scope": "e2e-sdes", "media": {"audio": "e2e-sdes"}, "peer_authenticated": False}
        ),
        outcome(raw, ssrcs=[{"ssrc": 1, "roc": 1}]),
        outcome(raw, ssrcs=[{"ssrc": 1, "roc": True}]),  # equal to 1 in Python, not in JSON
        outcome(raw, ssrcs=[{"ssrc": 1, "roc": 1.0}]),
        {"kind": "sdes", "session": "s-1", "streams": RawJson(raw)},  # the same members, another order
        {"session": "s-1", "kind": "sdes", "streams": RawJson(raw)},
        {"session": "s-1", "a": RawJson(raw), "b": RawJson(bytearray(b"{}")), "c": None},
        outcome(bytearray(b'[{"other":"bytes"}]')),  # new raw bytes: spliced in, nothing kept
    ]
    for i, out in enumerate(steps):
        for req_id in (i, f"req-{i}", 'q"\u00e9'):
            assert fast(enc, "session.keys", req_id, out) == general(req_id, out)


def test_replies_without_raw_values_and_odd_ones_take_the_general_encoder() -> None:
    enc = ReplyEncoder()
    for out in (
        {"a": 1},
        {},
        {"id": "mine", "x": RawJson(bytearray(b"1"))},
        {"ok": 5, "x": RawJson(bytearray(b"1"))},
    ):
        assert fast(enc, "op", 3, out) == general(3, out)
    with pytest.raises(TypeError):  # a value that is not JSON is still refused
        enc.line("op", 3, {"x": RawJson(bytearray(b"1")), "y": object()})


def test_kept_segments_hold_no_key_material() -> None:
    store = KeyStore()
    sid = store.add(negotiated(), kind="sdes")
    enc = ReplyEncoder()
    k = store.keys_wire(sid, encode_value)
    assert k.wire is not None
    wire = k.wire[1]
    out = KeyStore.head(k, RawJson(wire))
    line = enc.line("session.keys", 1, out)
    assert isinstance(line, bytearray) and bytes(wire) in bytes(line)  # the keys are in the reply
    wipe(line)
    for _, segments, _ in enc._last.values():
        for seg in segments:
            assert b"master_key" not in seg and bytes(wire) not in seg
    store.close(sid)  # the session's bytes are wiped: the next reply could not carry them
    assert wire == bytearray(len(wire))


def test_connection_core_replies_through_its_encoder() -> None:
    core = ConnectionCore()
    (req,) = core.receive(b'{"id":9,"op":"status"}\n')
    raw = bytearray(b'{"k":"v"}')
    out = {"session": "s", "streams": RawJson(raw)}
    line = core.finish(req, out)
    assert bytes(line) == general(9, out)
    wipe(line)


LINES = [
    b'{"id":1,"op":"status"}',
    b' {"id":1,"op":"status"}',
    b'{"id":1,"op":"status"} ',
    b'{"id":1,"op":"status"}\r',
    b'{"id":1,"op":"status"}x',
    b'{"id":1,"op":"status"}{}',
    b'{"id":1,"op":"status"',
    b'{"id":NaN}',
    b'{"id":Infinity}',
    b'{"id":1,"x":-Infinity}',
    b'{"a":[' * 20 + b"]}" * 20,
    b"[1,2]",
    b'"s"',
    b"{}",
    b"{",
    b"",
    b"\xff",
    b'{"a":"\\ud800"}',
    b'{"a":1e400}',
]


def reference(line: bytes) -> Any:
    """What the general decoder alone says (JSONDecoder.decode on the whole line)."""
    from ue_agent.api import protocol

    if line.endswith(b"\r"):
        line = line[:-1]
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return ("error", "not UTF-8")
    deep = line.count(b"[") + line.count(b"{") >= protocol.MAX_DEPTH
    if deep and protocol._raw_depth(line, protocol.MAX_DEPTH):
        return ("error", "deep")
    try:
        value = protocol._DECODER.decode(text)
    except (json.JSONDecodeError, RecursionError):
        return ("error", "not JSON")
    if deep and protocol._depth(value, protocol.MAX_DEPTH) > protocol.MAX_DEPTH:
        return ("error", "deep")
    return ("ok", value)


def ours(line: bytes) -> Any:
    try:
        return ("ok", decode_line(line))
    except ValueError as exc:
        return ("error", "deep" if "deeper" in str(exc) else str(exc))


@pytest.mark.parametrize("line", LINES)
def test_decode_shortcut_agrees_with_the_general_decoder(line: bytes) -> None:
    assert repr(ours(line)) == repr(reference(line))


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=40)
    | st.text(alphabet='{}[]":,0123456789 aeltrunfsNI\\\r', max_size=40).map(str.encode)
)
def test_decode_shortcut_agrees_on_any_bytes(line: bytes) -> None:
    assert repr(ours(line)) == repr(reference(line))


@request
class Sample:
    name: Annotated[str, Len(1, 8)]
    count: Annotated[int, Range(0, 10)] = 0
    low: Annotated[int, Range(-5)] = 0
    high: Annotated[int, Range(None, 5)] = 0
    many: Annotated[str, Len(2)] = "xx"
    tags: list[str] = field(default_factory=list)


@pytest.mark.parametrize(
    "data",
    [
        {"name": "a"},
        {"name": "abcdefgh", "count": 10, "tags": ["x"]},
        {"name": ""},
        {"name": "abcdefghi"},
        {"name": 5},
        {"name": "a", "count": True},
        {"name": "a", "count": 11},
        {"name": "a", "count": -1},
        {"name": "a", "low": -6},
        {"name": "a", "high": 6},
        {"name": "a", "many": "x"},
        {"count": 1},
        {"name": "a", "nope": 1},
        {"name": "a", "tags": [1]},
        [],
    ],
)
def test_bound_converter_is_convert(data: Any) -> None:
    def run(fn: Any) -> Any:
        try:
            return ("ok", fn(data))
        except ConvertError as exc:
            return ("error", exc.code, exc.path, exc.message)

    assert run(converter(Sample)) == run(lambda d: convert(Sample, d))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"name": ""}, "'name' must be a non-empty string of at most 8 characters"),
        ({"name": "abcdefghi"}, "'name' must be a non-empty string of at most 8 characters"),
        ({"name": 5}, "'name' must be a string"),
        ({"name": "a", "count": True}, "'count' must be an integer"),
        ({"name": "a", "count": 11}, "'count' must be between 0 and 10"),
        ({"name": "a", "low": -6}, "'low' must be at least -5"),
        ({"name": "a", "high": 6}, "'high' must be at most 5"),
        ({"name": "a", "many": "x"}, "'many' must have at least 2 characters"),
    ],
)
def test_fused_checks_keep_their_messages(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConvertError) as err:
        converter(Sample)(data)
    assert err.value.message == message


@pytest.mark.parametrize(
    "line",
    [b'{"id":1,"op":"status"}', b'{"id":1,"op":"status"}\r', b"   ", b"", b"nope", b'{"id":2,"op":"x"}'],
)
def test_a_line_taken_straight_from_the_read_is_a_framed_line(line: bytes) -> None:
    """The server's shortcut for a read that is one whole line (ConnectionCore.line_action)
    gives what the framer's path gives for the same bytes."""
    framed, straight = ConnectionCore(), ConnectionCore()
    framed.push(line + b"\n")
    a, b = framed.next_action(), straight.line_action(line)
    assert type(a) is type(b)
    if isinstance(a, bytes):
        assert a == b
    elif a is not None:
        assert b is not None and (a.id, a.op, a.params) == (b.id, b.op, b.params)  # type: ignore[union-attr]
