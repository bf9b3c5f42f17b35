"""session.keys: the keys' wire form is encoded once per session, reused, and zeroized with it.

The reply spliced from the cached bytes is the same JSON as the one the general encoder
writes; a ROC change re-encodes (the old bytes are wiped); closing, releasing or withdrawing
the session wipes the cached bytes.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from tests.test_keystore import key_bytes, negotiated
from ue_agent.api.protocol import RawJson, encode_reply, encode_value, wipe
from ue_agent.errors import MediaError
from ue_agent.media.keys import SrtpKeys, StreamKeys
from ue_agent.media.store import KeyStore
from ue_agent.secret import Secret


class CountingEncoder:
    def __init__(self) -> None:
        self.calls = 0
        self.made: list[bytearray] = []

    def __call__(self, value: Any) -> bytearray:
        self.calls += 1
        out = encode_value(value)
        self.made.append(out)
        return out


def reply(store: KeyStore, sid: str, enc: CountingEncoder) -> dict[str, Any]:
    k = store.keys_wire(sid, enc)
    assert k.wire is not None
    out = KeyStore.head(k, RawJson(k.wire[1]))
    line = encode_reply({"id": 7, "ok": True, **out})
    assert isinstance(line, bytearray)  # key material: the server wipes it after the write
    try:
        return json.loads(bytes(line))
    finally:
        wipe(line)


def test_spliced_reply_is_the_general_encoders_reply() -> None:
    store = KeyStore()
    sid = store.add(negotiated(), kind="sdes")
    enc = CountingEncoder()
    fast = reply(store, sid, enc)
    slow_line = encode_reply({"id": 7, "ok": True, **store.keys(sid, reply=True)})
    slow = json.loads(bytes(slow_line))
    wipe(slow_line)
    assert fast == slow and fast["streams"][0]["tx"]["master_key"]


def test_encoded_once_per_session_and_again_only_when_a_roc_changes() -> None:
    store = KeyStore()
    mikey = [
        StreamKeys(
            "audio",
            tx=SrtpKeys("AES_CM_128_HMAC_SHA1_80", Secret(bytes(range(16))), Secret(bytes(14)), ssrc=1),
            rx=SrtpKeys("AES_CM_128_HMAC_SHA1_80", Secret(bytes(range(1, 17))), Secret(bytes(14)), ssrc=2),
        )
    ]
    sid = store.add(mikey, kind="mikey")
    enc = CountingEncoder()
    first = reply(store, sid, enc)
    for _ in range(5):
        assert reply(store, sid, enc) == first
    assert enc.calls == 1
    store.report(sid, 1, 10)  # an index in the same ROC: the same bytes
    assert reply(store, sid, enc)["streams"] == first["streams"] and enc.calls == 1
    store.report(sid, 1, 3 << 16)  # the ROC moved: encoded again, the old bytes wiped
    after = reply(store, sid, enc)
    assert after["streams"][0]["tx"]["roc"] == 3 and enc.calls == 2
    assert enc.made[0] == bytearray(len(enc.made[0]))


def test_cached_wire_form_is_wiped_with_the_session() -> None:
    store = KeyStore()
    sids = [store.add(negotiated(), kind="sdes") for _ in range(3)]
    enc = CountingEncoder()
    for sid in sids:
        reply(store, sid, enc)
    secrets = [key_bytes(store.streams(sid)) for sid in sids]
    for made, keys in zip(enc.made, secrets, strict=True):
        assert all(base64.b64encode(k) in bytes(made) for k in keys)  # the cache holds the keys
    store.close(sids[0])
    store.release(sids[1])
    store.report(sids[2], 5, 100)
    with pytest.raises(MediaError):
        store.report(sids[2], 5, 50)  # the index went back: withdrawn
    for made in enc.made:
        assert made == bytearray(len(made))


def test_raw_json_has_no_key_in_its_repr() -> None:
    store = KeyStore()
    sid = store.add(negotiated(), kind="sdes")
    k = store.keys_wire(sid, encode_value)
    assert k.wire is not None
    raw = RawJson(k.wire[1])
    assert repr(raw) == "<RawJson>" and "master_key" not in repr(raw) and "master_key" not in str(raw)


def test_splice_keeps_every_member_and_the_raw_values_as_they_are() -> None:
    raws = [bytearray(b'[{"k":"\\u00e9x"}]'), bytearray(b'{"a":[1,2,{"b":null}]}')]
    obj = {
        "id": 'a"b\\\\c\u00e9',
        "ok": True,
        "first": RawJson(raws[0]),
        "n": 2**40,
        "none": None,
        "nested": {"x": [1, "y", False]},
        "second": RawJson(raws[1]),
        "last": "end",
    }
    line = encode_reply(obj)
    assert isinstance(line, bytearray) and line.endswith(b"}\n") and line.count(b"\n") == 1
    plain = {k: (json.loads(bytes(v.data)) if isinstance(v, RawJson) else v) for k, v in obj.items()}
    assert json.loads(bytes(line)) == plain
    assert list(json.loads(bytes(line))) == list(obj)  # the members keep their order
    assert bytes(line).isascii()
