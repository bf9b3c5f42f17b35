"""Deferred delivery and messaging against the independent RFC 6043 KMS (tests/independent/rfc6043,
written from the RFC text only) behind the lab's KMS front: it grants the one-way ticket, resolves
it for the receiver later, refuses others, and its own 5.1.3 derivation (``audit_transfer``, from
the TPK only it holds) gives the keys both agents hand out."""

from __future__ import annotations

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tests.fixtures.network import lab_subscriber
from tests.independent.rfc6043 import decode
from tests.test_kms_independent import _net, by_cs, ue, uri
from ue_agent.drivers.http import HttpClient
from ue_agent.kms import deferred, messaging
from ue_agent.kms.client import SrtpStream, TlsStream


def test_one_way_ticket_with_the_independent_kms():
    holder: list = []
    with _net(holder) as net:
        rec = holder[0]

        async def go():
            async with HttpClient() as http:
                a, b = ue(net, http, "alice"), ue(net, http, "bob")
                off = await deferred.offer_one_way(a, uri("bob"), [SrtpStream(ssrc=0x1234), TlsStream()])
                res = await deferred.resolve_stored(b, off.transfer_init)
                return off, res

        off, res = net.thread.call(go(), timeout=60)
        t = decode(off.transfer_init).get("TICKET")
        flags = t.head.flags
        assert not (flags.F or flags.G or flags.I or flags.J) and flags.H
        audit = rec.engine.audit_transfer(off.transfer_init)  # verifies the TRANSFER_INIT MAC itself
        ks = by_cs(audit)
        srtp, tls = off.keys
        assert (srtp.tx.master_key.reveal(), srtp.tx.master_salt.reveal()) == ks[1]
        assert tls.tx.key.reveal() == ks[2][0]
        assert res.keys[0].rx.master_key.reveal() == ks[1][0] and res.keys[1].tx.key.reveal() == ks[2][0]
        assert res.peer_uri == lab_subscriber("alice").impu[0]


def test_message_with_the_independent_kms():
    holder: list = []
    with _net(holder) as net:

        async def go():
            async with HttpClient() as http:
                a, b, c = ue(net, http, "alice"), ue(net, http, "bob"), ue(net, http, "carol")
                sealed = await messaging.protect_message(a, [uri("bob"), uri("carol")], b"hello")
                got = [
                    await messaging.unprotect_message(x, sealed.transfer_init, sealed.body) for x in (b, c)
                ]
                return sealed, got

        sealed, got = net.thread.call(go(), timeout=60)
        assert [g.body for g in got] == [b"hello", b"hello"]
        # the body key is CS 1's TEK and the nonce its salt's first 12 octets, as the independent
        # KMS derives them (RFC 6043 5.1.3) from the ticket it issued
        tek, salt = by_cs(holder[0].engine.audit_transfer(sealed.transfer_init))[1]
        assert AESGCM(tek).decrypt(salt[:12], sealed.body, sealed.transfer_init) == b"hello"
