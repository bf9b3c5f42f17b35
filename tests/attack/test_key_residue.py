"""Key residue (issue 13): after session.close, the key bytes the agent handed out (raw and
base64) are not left in its memory. Measured by reading /proc/PID/mem, not assumed.

What is checked: keys the agent generated or computed and handed out over the socket (its
own SDES keys, in the a=crypto line and in session.keys; RES/CK/IK of ims.authenticate).
They leave through the one reply encoder, written into a buffer that is zeroized once
written. Keys that arrive in a request (the peer's SDES key in sdes.answer) pass through
the JSON decoder's immutable strings first; benchmarks/bench_key_residue.py reports how many
of those are still found.

Bounded: one daemon, three calls, one memory scan (the daemon's ~40 MB).
"""

from __future__ import annotations

import base64
import os
import re

import pytest

from tests.attack.memscan import forms, scan
from tests.fixtures.daemon import aka_challenge

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="reads another process's memory (root)")


def _inline_key(line: str) -> bytes:
    m = re.search(r"inline:([A-Za-z0-9+/=]+)", line)
    assert m is not None, line
    return base64.b64decode(m.group(1))


def test_handed_out_keys_are_gone_after_close(lab_daemon) -> None:
    ours: list[bytes] = []
    with lab_daemon.client() as c:
        for _ in range(3):
            # we offer: our keys (one per offered suite) leave in the a=crypto lines
            offer = c.request("sdes.offer", media=["audio"])
            ours += [_inline_key(x) for x in offer["streams"][0]["lines"] if x.startswith("a=crypto")]
            # we answer a peer's offer we make up here: our answer key, then session.keys
            peer_key = os.urandom(30)
            peer_line = f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{base64.b64encode(peer_key).decode()}"
            ans = c.request("sdes.answer", offer=[[peer_line]])
            ours.append(_inline_key(ans["streams"][0]["lines"][0]))
            keys = c.request("session.keys", session=ans["session"])
            tx = keys["streams"][0]["tx"]
            ours.append(base64.b64decode(tx["master_key"]) + base64.b64decode(tx["master_salt"]))
            ours.append(base64.b64decode(tx["master_key"]))
            c.request("session.close", session=ans["session"])
            c.request("session.close", session=offer["session"])
        rand, autn = aka_challenge(200)
        b64 = base64.b64encode
        aka = c.request("ims.authenticate", rand=b64(rand).decode(), autn=b64(autn).decode())
        ours += [base64.b64decode(aka[k]) for k in ("res", "ck", "ik")]
    needles = {form: name for key in ours for name, form in forms(key).items()}
    found = scan(lab_daemon.proc.pid, needles)
    left = [needles[n] for n, c in found.items() if c]
    assert not left, f"{len(left)} of {len(found)} key forms still in memory ({', '.join(left)})"
    # the scan itself can see what it looks for: a control string the daemon does hold
    assert scan(lab_daemon.proc.pid, [b"ue_agent.api.server"])[b"ue_agent.api.server"] > 0


def test_reply_encoder_writes_secrets_into_one_wipeable_buffer() -> None:
    import json

    from ue_agent.api.protocol import encode, encode_reply, wipe
    from ue_agent.secret import Secret, SecretText, b64_into, b64_len

    for n in range(0, 50):  # the byte-wise base64 agrees with the standard library
        data = bytearray(os.urandom(n))
        out = bytearray(b64_len(n))
        assert b64_into(out, 0, data) == len(out) and bytes(out) == base64.b64encode(bytes(data))
    kept, owned = Secret(os.urandom(30)), Secret(b"\x01\x02")
    reply = {
        "id": 1,
        "ok": True,
        "lines": [SecretText('a=crypto:1 "X" inline:', kept, "|2^31")],
        "k": SecretText(owned, owned=True),
    }
    line = encode_reply(reply)
    assert isinstance(line, bytearray) and line.endswith(b"\n")
    value = json.loads(bytes(line))
    assert value["lines"] == ['a=crypto:1 "X" inline:' + base64.b64encode(kept.reveal()).decode() + "|2^31"]
    assert value["k"] == "AQI="
    assert owned.zeroized and not kept.zeroized  # the encoder drops only its own copies
    wipe(line)
    assert line == bytearray(len(line))
    assert repr(SecretText(kept)) == "<SecretText>"
    with pytest.raises(TypeError):
        encode({"k": SecretText(kept)})  # the plain encoder never writes key material
    assert isinstance(encode_reply({"id": 1, "ok": True}), bytes)  # no key: the fast path


def test_a_slow_readers_replies_leave_no_key_behind(lab_daemon) -> None:
    """A client that asks for its keys many times before reading (the agent's replies pile
    up behind a full socket): once it read them and closed the session, no form of the keys
    is left in the agent's memory, the transport's write buffer included.

    Bounded: 600 pipelined session.keys on one connection, read after the agent stalled."""
    import socket
    import time

    from tests.attack.test_api_load import read_lines

    with lab_daemon.client() as c:
        peer_key = os.urandom(30)
        line = f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{base64.b64encode(peer_key).decode()}"
        sid = c.request("sdes.answer", offer=[[line]])["session"]
        slow = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.connect(lab_daemon.socket)
        n = 600
        slow.sendall(
            b"".join(b'{"id":%d,"op":"session.keys","session":"%s"}\n' % (i, sid.encode()) for i in range(n))
        )
        time.sleep(0.5)  # the agent writes what the socket takes and keeps the rest
        replies = read_lines(slow, n)
        slow.close()
        assert len(replies) == n and all(r["ok"] for r in replies)
        tx = replies[0]["streams"][0]["tx"]
        ours = [base64.b64decode(tx["master_key"]), base64.b64decode(tx["master_salt"])]
        # the replies carry the peer's key (rx) too: its raw form is checked (decoded from
        # the request straight into a bytearray); its base64 text also came in our request,
        # through the JSON decoder's strings (docs/api.md), so that form is not counted here
        rx = base64.b64decode(replies[0]["streams"][0]["rx"]["master_key"])
        c.request("session.close", session=sid)
    needles = {form: name for key in ours for name, form in forms(key).items()}
    needles[rx] = "raw (peer's)"
    found = scan(lab_daemon.proc.pid, needles)
    left = [needles[n] for n, k in found.items() if k]
    assert not left, f"{len(left)} of {len(found)} key forms still in memory ({', '.join(left)})"


def test_the_line_framer_leaves_no_copy_of_a_request() -> None:
    """Requests split across reads and pipelined (a peer's key inside): every buffer the
    framer used holds only zeros once the lines are taken, the ones it outgrew included
    (a growing bytearray would free its old memory as it was: residue found by memscan
    before, 1-4 of 80 peer-key forms for 40 pipelined or split sdes.answer)."""
    import random

    from ue_agent.api.protocol import LineFramer

    rng = random.Random(7)
    key = base64.b64encode(os.urandom(30))
    lines = [b'{"id":%d,"offer":[["a=crypto:1 X inline:%s"]]}' % (i, key) for i in range(40)]
    data = b"\n".join(lines) + b"\n"
    f = LineFramer()
    seen: list[bytearray] = []
    out: list[bytes] = []
    at = 0
    while at < len(data):
        n = rng.randint(1, 300)
        f.push(data[at : at + n])
        at += n
        if not any(b is f._buf for b in seen):
            seen.append(f._buf)
        if rng.random() < 0.5:  # sometimes take the lines at once, sometimes let them pile up
            while (line := f.next()) is not None:
                assert isinstance(line, bytes)
                out.append(line)
    while (line := f.next()) is not None:
        assert isinstance(line, bytes)
        out.append(line)
    assert out == lines and len(seen) > 1  # it grew at least once
    for buf in seen:
        assert key not in buf and not any(buf), "a framer buffer still holds request bytes"


def test_peer_keys_are_decoded_without_an_immutable_copy() -> None:
    """The peer's inline key goes from its base64 text straight into a bytearray (no bytes
    object that cannot be wiped); the decoder agrees with the standard library."""
    from ue_agent.secret import b64_decode

    for n in range(64):
        data = os.urandom(n)
        text = base64.b64encode(data).decode()
        assert bytes(b64_decode(text)) == data and bytes(b64_decode(text.rstrip("="))) == data
    for bad in ("A", "AAAA=", "AA=A", "A*AA", "AAA===", "AAAAA"):
        with pytest.raises(ValueError):
            b64_decode(bad)
