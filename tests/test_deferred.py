"""Deferred delivery (TR 33.828 requirement 52, 4.2.4, 7.1.2, 7.1.3): one-way tickets give the
sender its keys at offer time; a stored TRANSFER_INIT is resolved later, bounded by the
ticket's TRe instead of the 300 s window, with the replay cache kept. Sans-IO with the KMS
engine, then the acceptance over loopback HTTP with the lab BSF/KMS, the lab mailbox and
real libsrtp, two hours later on an injected clock."""

from __future__ import annotations

import asyncio
import base64
import struct
import time

import pytest

from tests.fixtures.clock import Clock
from tests.fixtures.network import lab_subscriber, lab_subscribers
from tests.test_kms_flows import KMS_ID, USERS, Lab, wire
from ue_agent.errors import KmsError, MikeyError
from ue_agent.kms import deferred, mikey, session
from ue_agent.kms.streams import SrtpStream, TlsStream
from ue_agent.lab.card_ops import SoftCardOps

STREAMS = [SrtpStream(ssrc=0xCAFE), TlsStream()]


class _Client:
    """What deferred.offer_one_way/resolve_stored use of a KmsClient, over the sans-IO Lab."""

    def __init__(self, lab: Lab, who: str) -> None:
        self.lab, self.who = lab, who
        self.own, self.kms_fqdn, self.ticket_validity = USERS[who], KMS_ID, 3600
        self.replay = session.ReplayCache()
        self.clock = lab.clock

    async def _request_ticket(self, recipients, group, validity, flags=None):
        return self.lab.request(self.who, recipients, validity=validity, group=group, flags=flags)

    async def _resolve(self, ti):
        return self.lab.resolve(self.who, ti)


def run(coro):
    return asyncio.run(coro)


@pytest.fixture
def lab() -> Lab:
    return Lab()


def test_one_way_ticket_policy_and_message(lab):
    a = _Client(lab, "alice")
    off = run(deferred.offer_one_way(a, USERS["bob"], STREAMS))  # type: ignore[arg-type]
    msg = mikey.Message.decode(off.transfer_init)
    t = msg.one(mikey.Ticket)
    # 6.10: F (no TRANSFER_RESP), G (no RANDRr), I (no forking), J (no reuse) clear; H set
    assert deferred.is_one_way(t.flags) and t.flag(mikey.F_H) and not t.flag(mikey.F_J)
    assert not msg.header.v  # 4.2.2.1: V agrees with F
    # one crypto session per SRTP stream (the sender's), one for the TLS stream
    assert [cs.prot_type for cs in msg.header.cs_map] == [mikey.PROT_SRTP, mikey.PROT_TLS]
    assert off.keys[0].rx is None and off.keys[0].tx.ssrc == 0xCAFE


def test_past_the_default_validity_the_kms_says_expired(lab):
    a, b = _Client(lab, "alice"), _Client(lab, "bob")
    off = run(deferred.offer_one_way(a, USERS["bob"], STREAMS))  # type: ignore[arg-type]
    lab.clock.now += 2 * 3600  # B comes back two hours later, past the default 1 h validity
    with pytest.raises(KmsError) as exc:
        run(deferred.resolve_stored(b, off.transfer_init))  # type: ignore[arg-type]
    assert exc.value.code == "kms.ticket_expired"  # 1 h default validity: past TRe


def test_resolve_within_validity_after_the_window(lab):
    a, b, c = _Client(lab, "alice"), _Client(lab, "bob"), _Client(lab, "carol")
    off = run(deferred.offer_one_way(a, USERS["bob"], STREAMS, validity=3 * 3600))  # type: ignore[arg-type]
    lab.clock.now += 2 * 3600
    # the live form is far outside the 300 s window
    with pytest.raises(MikeyError) as live:
        lab.answer("bob", off.transfer_init, b.replay)
    assert live.value.code == "mikey.replay"
    with pytest.raises(KmsError) as other:
        run(deferred.resolve_stored(c, off.transfer_init))  # type: ignore[arg-type]
    assert other.value.code == "kms.not_authorized"
    res = run(deferred.resolve_stored(b, off.transfer_init))  # type: ignore[arg-type]
    assert res.peer_uri == USERS["alice"] and res.peer_authenticated  # the ticket names B alone
    # the receiver's rx is the sender's tx (SRTP); the TLS PSK is shared
    assert wire(res.keys)[0][1] == wire(off.keys)[0][0] and wire(res.keys)[1] == wire(off.keys)[1]
    # a second resolve of the same stored TRANSFER_INIT: refused, even after twice the window
    lab.clock.now += 1800
    with pytest.raises(MikeyError) as again:
        run(deferred.resolve_stored(b, off.transfer_init))  # type: ignore[arg-type]
    assert again.value.code == "mikey.replay"
    before = lab.kms.stats.resolves
    with pytest.raises(MikeyError):
        run(deferred.resolve_stored(b, off.transfer_init))  # type: ignore[arg-type]
    assert lab.kms.stats.resolves == before  # refused before any KMS request


def test_bounds_of_a_stored_transfer_init(lab):
    a = _Client(lab, "alice")
    off = run(deferred.offer_one_way(a, USERS["bob"], STREAMS, validity=600))  # type: ignore[arg-type]
    ti = session.inspect_transfer_init(off.transfer_init)
    resolved = lab.resolve("bob", ti)
    # a TRANSFER_INIT claiming to come from the future is refused
    with pytest.raises(MikeyError) as fut:
        deferred.accept_stored(ti, resolved, USERS["bob"], session.ReplayCache(), lab.clock() - 3600)
    assert fut.value.code == "mikey.replay"
    # at TRe and after: expired
    with pytest.raises(KmsError) as exp:
        deferred.accept_stored(ti, resolved, USERS["bob"], session.ReplayCache(), resolved.expiry)
    assert exp.value.code == "kms.ticket_expired"
    # an altered stored TRANSFER_INIT does not verify
    bad = bytearray(off.transfer_init)
    bad[-1] ^= 1
    with pytest.raises(MikeyError) as mac:
        deferred.accept_stored(
            session.inspect_transfer_init(bytes(bad)),
            resolved,
            USERS["bob"],
            session.ReplayCache(),
            lab.clock(),
        )
    assert mac.value.code == "mikey.bad_mac"
    keys = deferred.accept_stored(ti, resolved, USERS["bob"], session.ReplayCache(), lab.clock() + 500)
    assert keys[0].rx.to_wire() == off.keys[0].tx.to_wire()


def test_a_live_ticket_cannot_be_resolved_later(lab):
    issued = lab.request("alice", [USERS["bob"]])  # the default, forked ticket (F, G, I set)
    offer = session.build_transfer_init(issued, USERS["alice"], USERS["bob"], STREAMS, KMS_ID, lab.clock())
    b = _Client(lab, "bob")
    with pytest.raises(MikeyError) as exc:
        run(deferred.resolve_stored(b, offer.transfer_init))  # type: ignore[arg-type]
    assert exc.value.code == "mikey.unsupported" and exc.value.details["reason"] == "not_one_way"
    with pytest.raises(MikeyError):
        deferred.sender_keys(offer)


def test_answered_live_then_stored_is_a_replay(lab):
    a, b = _Client(lab, "alice"), _Client(lab, "bob")
    off = run(deferred.offer_one_way(a, USERS["bob"], STREAMS))  # type: ignore[arg-type]
    resp, keys = lab.answer("bob", off.transfer_init, b.replay)  # B online: the live answer
    assert resp is None and keys[0].rx.to_wire() == off.keys[0].tx.to_wire()
    with pytest.raises(MikeyError) as exc:
        run(deferred.resolve_stored(b, off.transfer_init))  # type: ignore[arg-type]
    assert exc.value.code == "mikey.replay"


def test_reprs_hold_no_key(lab):
    a = _Client(lab, "alice")
    off = run(deferred.offer_one_way(a, USERS["bob"], STREAMS))  # type: ignore[arg-type]
    key = off.keys[0].tx.master_key.reveal()
    for text in (repr(off), repr(off.keys), str(off)):
        assert key.hex() not in text and base64.b64encode(key).decode() not in text


# ---------------------------------------------------------------------------- over HTTP, with the mailbox

pylibsrtp = pytest.importorskip("pylibsrtp", reason="pylibsrtp is not installed")


def _srtp(keys, outbound: bool):
    policy = pylibsrtp.Policy(
        key=keys.master_key.reveal() + keys.master_salt.reveal(),
        ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND if outbound else pylibsrtp.Policy.SSRC_ANY_INBOUND,
        srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    )
    return pylibsrtp.Session(policy=policy)


def _rtp(seq: int, ssrc: int) -> bytes:
    return struct.pack("!BBHII", 0x80, 0x00, seq, seq * 160, ssrc) + bytes([seq & 0xFF]) * 160


def test_acceptance_mailbox_two_hours_later():
    """B offline: A gets keys at offer time, the lab mailbox stores 1000 SRTP packets it cannot
    decrypt (the KMS refuses it: kms.not_authorized), two hours later B resolves the stored
    ticket and decrypts all 1000; an expired ticket gives kms.ticket_expired."""
    from ue_agent.drivers.http import HttpClient
    from ue_agent.gba.client import GbaClient
    from ue_agent.gba.naf_client import NafClient
    from ue_agent.kms.client import KmsClient
    from ue_agent.lab.mailbox import MailboxServer
    from ue_agent.lab.network import LabNetwork, LabNetworkThread

    clock = Clock(time.time())
    box_sub = lab_subscriber("mailbox")  # the mailbox is a subscriber of the lab network too
    net = LabNetwork([*lab_subscribers(), box_sub], clock=clock)

    def ue(http, name: str) -> KmsClient:
        sub = lab_subscriber(name)
        gba = GbaClient(SoftCardOps(sub), net.bsf_url, net.bsf_fqdn, sub.impi, http, gba_u=False, clock=clock)
        return KmsClient(NafClient(gba, http), net.kms_url, net.kms_fqdn, sub.impu[0], clock=clock)

    async def go():
        bob = lab_subscriber("bob").impu[0]
        async with HttpClient() as http, MailboxServer(net, box_sub) as box:
            a = ue(http, "alice")
            off = await deferred.offer_one_way(a, bob, [SrtpStream()], validity=3 * 3600)
            tx = off.keys[0].tx
            sender = _srtp(tx, True)
            plain = [_rtp(i, tx.ssrc) for i in range(1000)]
            packets = [sender.protect(p) for p in plain]
            body = {
                "transfer_init": base64.b64encode(off.transfer_init).decode(),
                "packets": [base64.b64encode(p).decode() for p in packets],
            }
            import json

            r = await http.request(
                "POST",
                f"{box.url}/mailbox/{bob}",
                body=json.dumps(body).encode(),
                headers={"Content-Type": "application/json"},
            )
            assert r.status == 201, r.body
            item = json.loads(r.body)["id"]
            r = await http.request("POST", f"{box.url}/mailbox/{bob}/{item}/resolve")
            assert r.status == 403 and json.loads(r.body)["code"] == "kms.not_authorized"
            assert box.mailbox.refusals == ["kms.not_authorized"]
            # the mailbox's packets do not decrypt under anything it holds: it holds no key
            assert all(p[12:] != q[12:] for p, q in zip(packets, plain, strict=True))

            clock.now += 2 * 3600  # two hours later B comes online
            b = ue(http, "bob")
            r = await http.request("GET", f"{box.url}/mailbox/{bob}")
            assert json.loads(r.body)["items"] == [item]
            r = await http.request("GET", f"{box.url}/mailbox/{bob}/{item}")
            got = json.loads(r.body)
            res = await deferred.resolve_stored(b, base64.b64decode(got["transfer_init"]))
            receiver = _srtp(res.keys[0].rx, False)
            out = [receiver.unprotect(base64.b64decode(p)) for p in got["packets"]]
            assert out == plain and len(out) == 1000
            assert res.peer_uri == lab_subscriber("alice").impu[0]

            # a ticket past its TRe: the KMS says so
            short = await deferred.offer_one_way(a, bob, [SrtpStream()], validity=60)
            clock.now += 120
            with pytest.raises(KmsError) as exc:
                await deferred.resolve_stored(b, short.transfer_init)
            assert exc.value.code == "kms.ticket_expired"

    with LabNetworkThread(net):
        net.thread.call(go(), timeout=120)  # type: ignore[union-attr]


def test_several_recipients_do_not_authenticate_the_sender(lab):
    a, b = _Client(lab, "alice"), _Client(lab, "bob")
    off = run(deferred.offer_one_way(a, USERS["bob"], STREAMS, recipients=[USERS["bob"], USERS["carol"]]))  # type: ignore[arg-type]
    res = run(deferred.resolve_stored(b, off.transfer_init))  # type: ignore[arg-type]
    assert res.peer_uri == USERS["alice"] and res.peer_authenticated is False
