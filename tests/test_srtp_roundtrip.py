"""SDES keys through real libsrtp (pylibsrtp): both agents' keys protect and unprotect media."""

from __future__ import annotations

import struct

import pytest

from ue_agent.errors import MediaError
from ue_agent.media import sdes
from ue_agent.media.keys import SRTP_SUITES, SrtpKeys, StreamKeys
from ue_agent.media.store import KeyStore

pylibsrtp = pytest.importorskip("pylibsrtp", reason="pylibsrtp is not installed")

PROFILES = {
    "AES_CM_128_HMAC_SHA1_80": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    "AES_CM_128_HMAC_SHA1_32": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
    "AEAD_AES_128_GCM": pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM,
    "AEAD_AES_256_GCM": pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_256_GCM,
}
PACKETS = 1000


def rtp(seq: int, ssrc: int, payload: bytes) -> bytes:
    return struct.pack("!BBHII", 0x80, 0x00, seq & 0xFFFF, seq * 160 & 0xFFFFFFFF, ssrc) + payload


def session(keys: SrtpKeys, outbound: bool) -> pylibsrtp.Session:
    """What a media stack does with the keys it gets: one libsrtp policy per direction."""
    ssrc_type = pylibsrtp.Policy.SSRC_ANY_OUTBOUND if outbound else pylibsrtp.Policy.SSRC_ANY_INBOUND
    policy = pylibsrtp.Policy(
        key=keys.master_key.reveal() + keys.master_salt.reveal(),
        ssrc_type=ssrc_type,
        srtp_profile=PROFILES[keys.suite],
    )
    return pylibsrtp.Session(policy=policy)


def negotiate(suite: str) -> tuple[StreamKeys, StreamKeys]:
    """UE-A offers, UE-B answers, UE-A accepts: the keys each agent holds."""
    offer, local = sdes.make_offer(["audio"], [suite])
    answer, (b,) = sdes.make_answer(offer, suites=[suite])
    (a,) = sdes.accept_answer(local, answer)
    return a, b


def stream(sender: SrtpKeys, receiver: SrtpKeys, ssrc: int, first_seq: int = 0) -> None:
    tx, rx = session(sender, True), session(receiver, False)
    for i in range(PACKETS):
        payload = i.to_bytes(4, "big") * 40
        packet = rtp(first_seq + i, ssrc, payload)
        protected = tx.protect(packet)
        assert protected[12:] != packet[12:]
        assert rx.unprotect(protected) == packet


@pytest.mark.parametrize("suite", list(SRTP_SUITES))
def test_thousand_packets_each_way(suite: str) -> None:
    a, b = negotiate(suite)
    assert a.suite == b.suite == suite
    stream(a.tx, b.rx, ssrc=0x11111111)  # A -> B
    stream(b.tx, a.rx, ssrc=0x22222222)  # B -> A


@pytest.mark.parametrize("suite", list(SRTP_SUITES))
def test_wrong_key_fails(suite: str) -> None:
    a, b = negotiate(suite)
    protected = session(a.tx, True).protect(rtp(1, 0x1234, b"x" * 160))
    for wrong in (a.rx, sdes.new_key(suite)):  # B's own sending key, a random key
        with pytest.raises(pylibsrtp.Error):
            session(wrong, False).unprotect(protected)
    tampered = bytearray(protected)
    tampered[20] ^= 1
    with pytest.raises(pylibsrtp.Error):
        session(b.rx, False).unprotect(bytes(tampered))


def test_store_tracks_roc_across_seq_wrap() -> None:
    """The media stack reports its index; the store's ROC is what libsrtp used across the wrap."""
    a, b = negotiate("AES_CM_128_HMAC_SHA1_80")
    store_a = KeyStore()
    sid = store_a.add([a], kind="sdes")
    tx, rx = session(a.tx, True), session(b.rx, False)
    ssrc, first = 0x0BADCAFE, 0xFFFF - 500
    roc = 0
    for i in range(PACKETS):
        seq = (first + i) & 0xFFFF
        if i and seq == 0:
            roc += 1
        packet = rtp(seq, ssrc, b"\x55" * 20)
        assert rx.unprotect(tx.protect(packet)) == packet
        if i % 100 == 0 or i == PACKETS - 1:
            r = store_a.report(sid, ssrc, (roc << 16) | seq)
            assert (r["roc"], r["seq"]) == (roc, seq)
    assert roc == 1
    (ctx,) = store_a.keys(sid)["ssrcs"]
    assert (ctx["ssrc"], ctx["roc"]) == (ssrc, 1)


def test_receiver_needs_the_current_roc() -> None:
    """Why keys are re-handed with the ROC: a fresh receiver context after the wrap fails."""
    a, b = negotiate("AES_CM_128_HMAC_SHA1_80")
    tx = session(a.tx, True)
    ssrc = 0x0000BEEF
    packets = [tx.protect(rtp(s & 0xFFFF, ssrc, b"z" * 20)) for s in range(0xFFF0, 0x10010)]
    late = session(b.rx, False)  # joins after the wrap, assumes ROC 0 (pylibsrtp cannot set it)
    with pytest.raises(pylibsrtp.Error):
        late.unprotect(packets[-1])


def test_restarted_sender_reuses_keystream_and_the_store_refuses() -> None:
    """A media stack restarted with the same key repeats its keystream (two-time pad)."""
    a, _ = negotiate("AES_CM_128_HMAC_SHA1_80")
    events: list[tuple[str, dict]] = []
    store = KeyStore(lambda n, i: events.append((n, i)))
    sid = store.add([a], kind="sdes")
    ssrc = 0x7777
    p1, p2 = b"attack at dawn!!" * 4, b"retreat at noon!" * 4
    first = session(a.tx, True)
    c1 = [first.protect(rtp(s, ssrc, p1)) for s in range(1, 51)]
    store.report(sid, ssrc, 50)
    restarted = session(a.tx, True)  # same master key, index starts again
    c2 = restarted.protect(rtp(1, ssrc, p2))
    body = len(p1)
    xor_c = bytes(x ^ y for x, y in zip(c1[0][12 : 12 + body], c2[12 : 12 + body], strict=True))
    assert xor_c == bytes(x ^ y for x, y in zip(p1, p2, strict=True))  # C1 ^ C2 == P1 ^ P2
    with pytest.raises(MediaError) as e:
        store.report(sid, ssrc, 1)
    assert e.value.code == "media.key_reuse"
    assert [n for n, _ in events] == ["security.warning"]
    with pytest.raises(MediaError):
        store.keys(sid)
