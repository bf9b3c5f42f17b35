"""The sans-IO framing/dispatch core: bytes in, requests and reply lines out."""

from __future__ import annotations

import base64
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from ue_agent.api.core import ConnectionCore, Request
from ue_agent.api.errors import API_CODES
from ue_agent.api.protocol import EVENTS, MAX_LINE, OPS, LineFramer, LineTooLong, encode
from ue_agent.errors import CardError
from ue_agent.ops.aka import ImsAuthenticate


def replies(actions) -> list[dict]:
    return [json.loads(a) for a in actions if isinstance(a, bytes)]


def test_hello_reports_version_ops_and_events() -> None:
    core = ConnectionCore()
    (line,) = core.receive(b'{"id":"h","op":"hello","protocols":[1],"client":"phone"}\n')
    r = json.loads(line)
    assert r["ok"] and r["protocol"] == 1 and r["ops"] == list(OPS) and r["events"] == list(EVENTS)
    assert core.client == "phone"


def test_hello_unsupported_version() -> None:
    (line,) = ConnectionCore().receive(b'{"id":1,"op":"hello","protocols":[2,3]}\n')
    r = json.loads(line)
    assert r["error"]["code"] == "api.unsupported_version" and r["error"]["details"]["supported"] == [1]


def test_request_passes_validated_params() -> None:
    rand = base64.b64encode(bytes(16)).decode()
    (req,) = ConnectionCore().receive(
        json.dumps({"id": 7, "op": "ims.authenticate", "rand": rand, "autn": rand}).encode() + b"\n"
    )
    assert isinstance(req, Request) and req.params == ImsAuthenticate(rand=bytes(16), autn=bytes(16))


def test_errors_have_stable_codes() -> None:
    core = ConnectionCore(max_inflight=1)
    data = b"".join(
        [
            b"\xff\xfe\n",
            b"not json\n",
            b"[1,2]\n",
            b'{"op":"status"}\n',
            b'{"id":true,"op":"status"}\n',
            b'{"id":1,"op":5}\n',
            b'{"id":2,"op":"reboot"}\n',
            b'{"id":3,"op":"session.keys"}\n',
            b'{"id":4,"op":"session.keys","session":5}\n',
            b'{"id":5,"op":"status","extra":1}\n',
            b'{"id":6,"op":"ims.authenticate","rand":"!!","autn":"AA=="}\n',
            b'{"id":7,"op":"subscribe","events":["weather"]}\n',
            b'{"id":8,"op":"status"}\n',
            b'{"id":9,"op":"status"}\n',
            b'{"id":10,"op":"status","x":NaN}\n',
            b"[" * 40 + b"]" * 40 + b"\n",
        ]
    )
    actions = core.receive(data)
    codes = [json.loads(a)["error"]["code"] if isinstance(a, bytes) else "request" for a in actions]
    assert codes == [
        "api.bad_json",
        "api.bad_json",
        "api.bad_request",
        "api.bad_request",
        "api.bad_request",
        "api.bad_request",
        "api.unknown_op",
        "api.bad_request",
        "api.bad_request",
        "api.bad_request",
        "api.bad_request",
        "api.bad_request",
        "request",
        "api.too_many_requests",
        "api.bad_json",
        "api.bad_json",
    ]
    assert set(codes) - {"request"} <= set(API_CODES)


def test_finish_frees_the_slot_and_maps_errors() -> None:
    core = ConnectionCore(max_inflight=1)
    (req,) = core.receive(b'{"id":"a","op":"status"}\n')
    assert json.loads(core.receive(b'{"id":"a","op":"status"}\n')[0])["error"]["code"] == "api.bad_request"
    reply = json.loads(core.finish(req, CardError("card.busy", "busy")))
    assert reply == {"id": "a", "ok": False, "error": {"code": "card.busy", "message": "busy"}}
    (req2,) = core.receive(b'{"id":"a","op":"status"}\n')
    assert json.loads(core.finish(req2, {"x": 1})) == {"id": "a", "ok": True, "x": 1}
    # an unexpected exception never leaks its text
    (req3,) = core.receive(b'{"id":"b","op":"status"}\n')
    r = json.loads(core.finish(req3, ValueError("secret 0xdeadbeef")))
    assert r["error"] == {"code": "agent.internal", "message": "internal error"}


def test_line_too_long_then_recovers() -> None:
    core = ConnectionCore()
    actions = core.receive(b"x" * (MAX_LINE + 10))
    assert actions == []  # still inside the long line
    actions = core.receive(b"yyy\n" + b'{"id":1,"op":"status"}\n')
    assert json.loads(actions[0])["error"]["code"] == "api.line_too_long"
    assert isinstance(actions[1], Request)
    # a line of exactly the limit (newline included) is accepted as a line
    line = b'{"id":2,"op":"status","pad":"' + b"a" * (MAX_LINE - 32) + b'"}'
    line = line[: MAX_LINE - 3] + b'"}'
    assert len(line) + 1 == MAX_LINE
    (a,) = core.receive(line + b"\n")
    assert json.loads(a)["error"]["code"] in ("api.bad_request", "api.bad_json")


def test_events_only_after_subscribe() -> None:
    core = ConnectionCore()
    assert core.event("card", {"present": True}) is None
    core.receive(b'{"id":1,"op":"subscribe","events":["card"]}\n')
    assert json.loads(core.event("card", {"present": True})) == {"event": "card", "present": True}
    assert core.event("handover", {}) is None


def test_framer_split_anywhere() -> None:
    data = b'{"id":1,"op":"status"}\n{"id":2,"op":"status"}\n'
    for cut in range(len(data)):
        f = LineFramer()
        got = f.feed(data[:cut]) + f.feed(data[cut:])
        assert got == [b'{"id":1,"op":"status"}', b'{"id":2,"op":"status"}']


_line = st.one_of(
    st.binary(max_size=300),
    st.builds(
        lambda i, op, extra: json.dumps({"id": i, "op": op, **extra}).encode(),
        st.one_of(st.integers(-5, 5), st.text(max_size=5), st.none(), st.booleans()),
        st.sampled_from([*OPS, "bogus", ""]),
        st.dictionaries(
            st.sampled_from(["session", "ssrc", "index", "rand", "autn", "nonce", "events", "x"]),
            st.one_of(st.integers(), st.text(max_size=10), st.lists(st.integers(), max_size=3), st.none()),
            max_size=3,
        ),
    ),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_line, max_size=12), st.lists(st.integers(1, 64), max_size=8), st.integers(1, 4))
def test_property_any_bytes_give_wellformed_outcomes(lines, cuts, inflight) -> None:
    """Whatever arrives, in whatever pieces: no exception, every reply line is one JSON
    object under the limit with a known shape, and each newline-terminated line yields
    exactly one outcome (a request or a reply)."""
    core = ConnectionCore(max_line=4096, max_inflight=inflight)
    data = b"\n".join(lines) + b"\n"
    pieces, pos = [], 0
    for c in cuts:
        pieces.append(data[pos : pos + c])
        pos += c
    pieces.append(data[pos:])
    actions = []
    for p in pieces:
        actions += core.receive(p)
    expected = sum(1 for ln in data.split(b"\n")[:-1] if ln.strip() or len(ln) + 1 > 4096)
    assert len(actions) == expected
    n_requests = 0
    for a in actions:
        if isinstance(a, Request):
            n_requests += 1
            assert a.op in OPS and a.op not in ("hello", "subscribe")
            continue
        assert a.endswith(b"\n") and a.count(b"\n") == 1 and len(a) <= 4096
        r = json.loads(a)
        assert isinstance(r, dict) and isinstance(r["ok"], bool)
        if not r["ok"]:
            assert r["error"]["code"].startswith("api.")
    assert n_requests == len(core.inflight) <= inflight
    assert encode({"a": 1}) == b'{"a":1}\n'


def test_framer_reports_too_long_once_per_line() -> None:
    f = LineFramer(16)
    out = f.feed(b"a" * 40) + f.feed(b"b" * 40 + b"\nok\n")
    assert out == [LineTooLong(81), b"ok"]
