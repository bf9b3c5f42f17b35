"""The session key store: hand-out, ROC bookkeeping, the key-stream reuse guard, limits, SRVCC
(the registry decides, the store releases)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ue_agent.errors import MediaError
from ue_agent.handover.state import HandoverTracker
from ue_agent.media import sdes
from ue_agent.media.keys import SrtpKeys, StreamKeys
from ue_agent.media.sessions import SessionRegistry, Srvcc, new_session_id
from ue_agent.media.store import SRTCP_LIMIT, SRTP_LIMIT, KeyState, KeyStore
from ue_agent.media.tls_psk import tls_psk_keys
from ue_agent.secret import Secret


class Events:
    def __init__(self) -> None:
        self.items: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, name: str, info: dict[str, Any]) -> None:
        self.items.append((name, info))

    def kinds(self) -> list[str]:
        return [i["kind"] for n, i in self.items if n == "security.warning"]


@pytest.fixture
def events() -> Events:
    return Events()


@pytest.fixture
def store(events: Events) -> KeyStore:
    return KeyStore(events, max_sessions=4)


def negotiated(max_packets: int | None = None) -> list[StreamKeys]:
    lines, local = sdes.make_offer(["audio"], ["AES_CM_128_HMAC_SHA1_80"])
    answer, _ = sdes.make_answer(lines)
    streams = sdes.accept_answer(local, answer)
    for s in streams:
        s.max_packets = max_packets
    return streams


def key_bytes(streams: list[StreamKeys]) -> list[bytes]:
    out = []
    for s in streams:
        for k in (s.tx, s.rx):
            if isinstance(k, SrtpKeys):
                out += [k.master_key.reveal(), k.master_salt.reveal()]
    return out


def test_add_and_keys_wire_form(store: KeyStore) -> None:
    streams = negotiated()
    raw = key_bytes(streams)
    sid = store.add(streams, kind="sdes", peer="sip:bob@ims.example.org", session_id="call-1")
    assert sid == "call-1" and "call-1" in store and len(store) == 1
    out = store.keys(sid)
    (s,) = out["streams"]
    assert base64.b64decode(s["tx"]["master_key"]) == raw[0]
    assert base64.b64decode(s["rx"]["master_key"]) == raw[2]
    assert s["tx"]["suite"] == "AES_CM_128_HMAC_SHA1_80" and s["tx"]["roc"] == 0
    json.dumps(out)
    assert store.add(negotiated(), kind="sdes").startswith("s-")


def test_a_renamed_session_replies_under_its_new_id(store: KeyStore) -> None:
    # an early dialog's keys become the session's: the reply names the owner's new id (the
    # public id is kept with the keys, made again on rename)
    store.add(negotiated(), kind="sdes", session_id="1000/early-1")
    assert store.keys("1000/early-1")["session"] == "early-1"
    store.rename("1000/early-1", "1000/call-1")
    assert store.keys("1000/call-1")["session"] == "call-1"


def test_roc_across_seq_wrap(store: KeyStore) -> None:
    sid = store.add(negotiated(), kind="sdes")
    assert store.report(sid, 0x1234, 0xFFFE)["roc"] == 0
    assert store.report(sid, 0x1234, 0xFFFF)["roc"] == 0
    r = store.report(sid, 0x1234, 0x10000)
    assert (r["roc"], r["seq"], r["index"]) == (1, 0, 0x10000)
    assert store.report(sid, 0x1234, 0x10000)["roc"] == 1  # same index again is fine
    assert store.report(sid, 0x9999, 5)["roc"] == 0  # per SSRC
    ssrcs = {s["ssrc"]: s for s in store.keys(sid)["ssrcs"]}
    assert ssrcs[0x1234]["roc"] == 1 and ssrcs[0x9999]["index"] == 5


def test_index_going_back_withdraws_keys(store: KeyStore, events: Events) -> None:
    streams = negotiated()
    sid = store.add(streams, kind="sdes")
    store.keys(sid)
    store.report(sid, 7, 70_000)
    with pytest.raises(MediaError) as e:
        store.report(sid, 7, 12)  # a restarted context counting from the start again
    assert e.value.code == "media.key_reuse"
    assert events.kinds() == ["key_reuse"]
    assert all(s.tx.master_key.zeroized and s.rx.master_key.zeroized for s in streams)
    assert store.state(sid) is KeyState.COMPROMISED
    for call in (lambda: store.keys(sid), lambda: store.report(sid, 7, 80_000)):
        with pytest.raises(MediaError) as e:
            call()
        assert e.value.code == "media.key_reuse"


def test_srtcp_index_going_back(store: KeyStore) -> None:
    sid = store.add(negotiated(), kind="sdes")
    store.report(sid, 7, 10, srtcp_index=100)
    with pytest.raises(MediaError) as e:
        store.report(sid, 7, 11, srtcp_index=99)
    assert e.value.code == "media.key_reuse"


def test_same_key_never_registered_twice(store: KeyStore, events: Events) -> None:
    streams = negotiated()
    raw = key_bytes(streams)
    sid = store.add(streams, kind="sdes")
    store.close(sid)
    assert all(s.tx.master_key.zeroized for s in streams)
    # the same SDES key again, e.g. copied into a re-INVITE after the call moved
    again = StreamKeys(
        "audio",
        tx=SrtpKeys("AES_CM_128_HMAC_SHA1_80", Secret(raw[0]), Secret(raw[1])),
        rx=SrtpKeys("AES_CM_128_HMAC_SHA1_80", Secret(raw[2]), Secret(raw[3])),
    )
    with pytest.raises(MediaError) as e:
        store.add([again], kind="sdes", session_id=sid)
    assert e.value.code == "media.key_reuse"
    assert again.tx.master_key.zeroized  # refused keys are wiped too
    assert events.kinds() == ["key_reuse"]


def test_same_key_in_two_live_sessions_or_both_directions(store: KeyStore) -> None:
    streams = negotiated()
    raw = key_bytes(streams)
    store.add(streams, kind="sdes")
    copy = StreamKeys("audio", tx=SrtpKeys("AES_CM_128_HMAC_SHA1_80", Secret(raw[0]), Secret(raw[1])))
    with pytest.raises(MediaError) as e:
        store.add([copy], kind="sdes")
    assert e.value.code == "media.key_reuse"
    k = sdes.new_key("AEAD_AES_128_GCM")
    same = SrtpKeys(k.suite, Secret(k.master_key.reveal()), Secret(k.master_salt.reveal()))
    with pytest.raises(MediaError) as e:
        store.add([StreamKeys("audio", tx=k, rx=same)], kind="sdes")
    assert e.value.code == "media.key_reuse"


def test_lifetime_limit_warns_then_exhausts(store: KeyStore, events: Events) -> None:
    streams = negotiated(max_packets=2**20)
    sid = store.add(streams, kind="sdes")
    store.report(sid, 1, 2**20 - 2**20 // 64 - 1)
    assert events.kinds() == []
    store.report(sid, 1, 2**20 - 2**20 // 64)
    store.report(sid, 1, 2**20 - 100)
    assert events.kinds() == ["rekey_required"]  # once
    with pytest.raises(MediaError) as e:
        store.report(sid, 1, 2**20 - 1)
    assert e.value.code == "media.key_exhausted"
    assert events.kinds() == ["rekey_required", "key_exhausted"]
    with pytest.raises(MediaError) as e:
        store.keys(sid)
    assert e.value.code == "media.key_exhausted"
    assert streams[0].tx.master_key.zeroized


def test_srtp_and_srtcp_hard_limits(store: KeyStore) -> None:
    sid = store.add(negotiated(), kind="sdes")
    with pytest.raises(MediaError) as e:
        store.report(sid, 1, SRTP_LIMIT - 1)
    assert e.value.code == "media.key_exhausted"
    sid = store.add(negotiated(), kind="sdes")
    with pytest.raises(MediaError) as e:
        store.report(sid, 1, 5, srtcp_index=SRTCP_LIMIT - 1)
    assert e.value.code == "media.key_exhausted"


@pytest.mark.parametrize(
    "ssrc, index, srtcp",
    [
        (-1, 0, None),
        (2**32, 0, None),
        (1, -1, None),
        (1, SRTP_LIMIT, None),
        (1, 0, SRTCP_LIMIT),
        (1, "5", None),
    ],
)
def test_bad_reports(store: KeyStore, ssrc: int, index: int, srtcp: int | None) -> None:
    sid = store.add(negotiated(), kind="sdes")
    with pytest.raises(MediaError) as e:
        store.report(sid, ssrc, index, srtcp_index=srtcp)
    assert e.value.code == "media.bad_session"
    assert store.state(sid) is KeyState.ACTIVE


def test_unknown_session_and_bad_ids(store: KeyStore) -> None:
    for call in (lambda: store.keys("nope"), lambda: store.report("nope", 1, 1), lambda: store.close("nope")):
        with pytest.raises(MediaError) as e:
            call()
        assert e.value.code == "media.unknown_session"
    for bad in ("", "x" * 129, "a b", "ü"):
        with pytest.raises(MediaError) as e:
            store.add(negotiated(), kind="sdes", session_id=bad)
        assert e.value.code == "media.bad_session"
    with pytest.raises(MediaError):
        store.add(negotiated(), kind="dtls")
    with pytest.raises(MediaError):
        store.add([], kind="sdes")
    store.add(negotiated(), kind="sdes", session_id="dup")
    with pytest.raises(MediaError) as e:
        store.add(negotiated(), kind="sdes", session_id="dup")
    assert e.value.code == "media.session_exists"


def test_too_many_sessions(store: KeyStore) -> None:
    for _ in range(4):
        store.add(negotiated(), kind="sdes")
    extra = negotiated()
    with pytest.raises(MediaError) as e:
        store.add(extra, kind="sdes")
    assert e.value.code == "media.too_many_sessions"
    assert extra[0].tx.master_key.zeroized


def srvcc(tracker: HandoverTracker, store: KeyStore, value: int) -> list[str]:
    """One +CIREPH through the tracker, applied to the store as the agent does; the ids moved."""
    report = tracker.on_cireph(value)
    for d in report.decisions:
        if d.release_keys:
            store.release(d.key)
    return [d.key for d in report.decisions]


def registered(store: KeyStore, reg: SessionRegistry, streams: list[StreamKeys]) -> str:
    """Registered as the agent does: the store keyed by the registry's key (owner/id)."""
    s = reg.activate(new_session_id(), 0, "sdes")
    return store.add(streams, kind="sdes", session_id=s.key)


def test_srvcc_success_releases_ps_contexts(store: KeyStore) -> None:
    reg = SessionRegistry()
    tracker = HandoverTracker(reg)
    a, b = negotiated(), negotiated()
    sa = registered(store, reg, a)
    sb = registered(store, reg, b)
    raw = key_bytes(a)
    assert srvcc(tracker, store, 0) == [sa, sb]
    session_a = reg.by_key(sa)
    assert session_a is not None and session_a.key_state == "handover_pending"
    store.keys(sa)  # still on PS until success
    assert srvcc(tracker, store, 1) == [sa, sb]
    assert a[0].tx.master_key.zeroized and b[0].rx.master_key.zeroized
    with pytest.raises(MediaError) as e:
        store.keys(sa)
    assert e.value.code == "media.session_released"
    # back on PS: the old keys cannot come back, fresh ones can
    with pytest.raises(MediaError) as e:
        store.add(
            [StreamKeys("audio", tx=SrtpKeys(a[0].tx.suite, Secret(raw[0]), Secret(raw[1])))],
            kind="sdes",
        )
    assert e.value.code == "media.key_reuse"
    store.add(negotiated(), kind="sdes", session_id=sa)
    assert store.state(sa) is KeyState.ACTIVE
    store.close(sb)  # closing a released session is accepted once


@pytest.mark.parametrize("outcome", [2, 3])  # cancelled, failure
def test_srvcc_cancel_or_failure_keeps_keys(store: KeyStore, outcome: int) -> None:
    reg = SessionRegistry()
    tracker = HandoverTracker(reg)
    streams = negotiated()
    sid = registered(store, reg, streams)
    store.report(sid, 3, 1000)
    srvcc(tracker, store, 0)
    assert srvcc(tracker, store, outcome) == [sid]
    session = reg.by_key(sid)
    assert session is not None and session.key_state == "active"
    assert store.state(sid) is KeyState.ACTIVE
    assert not streams[0].tx.master_key.zeroized
    assert store.keys(sid)["ssrcs"][0]["index"] == 1000


def test_handover_bad_state_and_release_one(store: KeyStore) -> None:
    with pytest.raises(ValueError):
        Srvcc("maybe")
    s1 = store.add(negotiated(), kind="sdes")
    s2 = store.add(negotiated(), kind="sdes")
    store.release(s1)
    assert store.state(s1) is KeyState.RELEASED and store.state(s2) is KeyState.ACTIVE
    store.release("unknown")  # a hook for a session we never had is a no-op


def test_a_withdrawal_closes_the_session_in_the_registry(events: Events) -> None:
    reg = SessionRegistry()
    store = KeyStore(events, on_withdrawn=reg.withdrawn)
    sid = registered(store, reg, negotiated())
    store.report(sid, 1, 100)
    with pytest.raises(MediaError):
        store.report(sid, 1, 99)
    session = reg.by_key(sid)
    assert session is not None and session.key_state == "compromised" and len(reg) == 0


def test_mikey_ssrc_and_roc_seed_the_floor(store: KeyStore) -> None:
    k = sdes.new_key("AES_CM_128_HMAC_SHA1_80")
    k.ssrc, k.roc = 0xABCD, 3
    sid = store.add([StreamKeys("audio", tx=k)], kind="mikey", peer="sip:alice@ims.example.org")
    assert store.keys(sid)["streams"][0]["tx"]["roc"] == 3
    store.report(sid, 0xABCD, (3 << 16) + 5)
    with pytest.raises(MediaError) as e:
        sid2 = store.add([StreamKeys("audio", tx=_with_ssrc(5, 2))], kind="mikey")
        store.report(sid2, 5, 10)  # below the ROC the key management said the sender was at
    assert e.value.code == "media.key_reuse"


def _with_ssrc(ssrc: int, roc: int) -> SrtpKeys:
    k = sdes.new_key("AES_CM_128_HMAC_SHA1_80")
    k.ssrc, k.roc = ssrc, roc
    return k


def test_tls_psk_session(store: KeyStore) -> None:
    psk = tls_psk_keys("msrp-session-1", bytes(range(16)))
    sid = store.add([StreamKeys("message", tx=psk)], kind="mikey")
    (s,) = store.keys(sid)["streams"]
    assert s["tx"]["kind"] == "tls-psk" and base64.b64decode(s["tx"]["key"]) == bytes(range(16))
    assert store.snapshot()[0]["streams"][0]["kind"] == "tls-psk"
    store.close(sid)
    assert psk.key.zeroized


def test_zeroize_all(store: KeyStore) -> None:
    streams = [negotiated() for _ in range(3)]
    for s in streams:
        store.add(s, kind="sdes")
    assert store.zeroize_all() == 3 and len(store) == 0
    assert all(s[0].tx.master_key.zeroized and s[0].rx.master_salt.zeroized for s in streams)


def test_no_key_bytes_in_events_snapshot_or_errors(store: KeyStore, events: Events) -> None:
    streams = negotiated()
    raw = key_bytes(streams)
    sid = store.add(streams, kind="sdes")
    snap = json.dumps(store.snapshot())
    store.report(sid, 1, 100)
    with pytest.raises(MediaError) as e:
        store.report(sid, 1, 1)
    texts = [snap, json.dumps(events.items), str(e.value), json.dumps(e.value.to_dict()), repr(store)]
    for text in texts:
        for b in raw:
            assert b.hex() not in text and base64.b64encode(b).decode() not in text


def test_mki_reaches_the_wire(store: KeyStore) -> None:
    line = "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:4"
    _, k = sdes.answer_stream([line])
    assert k.max_packets == 2**20
    sid = store.add([k], kind="sdes")
    s = store.keys(sid)["streams"][0]
    assert base64.b64decode(s["rx"]["mki"]) == b"\x00\x00\x00\x01" and "mki" not in s["tx"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([1, 2]), st.integers(0, 2**20)), min_size=1, max_size=30))
def test_guard_accepts_exactly_monotonic_reports(reports: list[tuple[int, int]]) -> None:
    store = KeyStore()
    sid = store.add(negotiated(), kind="sdes")
    highest: dict[int, int] = {}
    for ssrc, index in reports:
        if index < highest.get(ssrc, 0):
            with pytest.raises(MediaError) as e:
                store.report(sid, ssrc, index)
            assert e.value.code == "media.key_reuse"
            return
        assert store.report(sid, ssrc, index)["roc"] == index >> 16
        highest[ssrc] = index
    assert {s["ssrc"]: s["index"] for s in store.keys(sid)["ssrcs"]} == highest


def test_count_by_state_agrees_with_the_summaries(store: KeyStore) -> None:
    reg = SessionRegistry()
    tracker = HandoverTracker(reg)
    a = registered(store, reg, negotiated())
    registered(store, reg, negotiated())
    reg.srvcc(Srvcc.STARTED)
    reg.srvcc(Srvcc.CANCELLED)
    reg.require_rekey(a.split("/", 1)[1], 0)  # phases change through the registry only: it keeps the counts
    reg.srvcc(Srvcc.STARTED)  # moves only the other one
    counted: dict[str, int] = {}
    for s in reg.sessions():
        counted[s.key_state] = counted.get(s.key_state, 0) + 1
    assert reg.count_by_state() == counted
    assert sum(counted.values()) == 2 and len(counted) == 2
    assert tracker.snapshot()["sessions"] == {"rekey_required": 1, "handover_pending": 1}


def test_release_media_keeps_the_other_streams(store: KeyStore) -> None:
    """SRVCC of a session with audio + MSRP: the audio keys are zeroized and retired, the
    TLS-PSK stays; a release of the last stream releases the session."""
    audio = negotiated()
    kept = (audio[0].tx.master_key.reveal(), audio[0].tx.master_salt.reveal())
    psk = StreamKeys("message", tx=tls_psk_keys("msrp-1", bytes(range(16))))
    sid = store.add([*audio, psk], kind="mikey")
    assert store.release_media(sid, ["audio", "video"]) == ["audio"]
    assert audio[0].tx.master_key.zeroized
    assert [s["media"] for s in store.keys(sid)["streams"]] == ["message"]
    again = StreamKeys("audio", tx=SrtpKeys(audio[0].tx.suite, Secret(kept[0]), Secret(kept[1])))
    with pytest.raises(MediaError) as info:  # the released key can never come back
        store.add([again], kind="sdes")
    assert info.value.code == "media.key_reuse"
    assert store.release_media(sid, ["message"]) == ["message"]
    with pytest.raises(MediaError) as info:
        store.keys(sid)
    assert info.value.code == "media.session_released"
