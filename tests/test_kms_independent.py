"""Acceptance (issue 8): an independent RFC 6043 KMS and peer, written from the RFC text only
(tests/independent/rfc6043), drive the agents' KMS path.

- The lab's KMS HTTP front (GBA Ua digest, TS 33.328 binding) delegates the MIKEY processing to
  the independent ``KmsEngine``; two agents (KmsClient over real HTTP on loopback) call each other.
- Every message the agents send or exchange decodes strictly with the independent decoder; every
  MAC verifies under RFC 6043 5.5 with keys the independent KMS knows (the Ks_NAF it was given,
  MPKi/MPKr' from its own tickets); the SRTP master keys/salts and TLS PSKs both agents hand out
  equal the 5.1.3 derivation the independent KMS computes (``audit_transfer``).
- The independent peer as initiator towards an agent, and as responder to an agent.
"""

from __future__ import annotations

import os

from tests.fixtures.network import lab_subscriber, lab_subscribers
from tests.independent.rfc6043 import KmsEngine, Peer, decode, protection_keys, srtp_cs, verify_mac
from tests.independent.rfc6043.wire import SP
from ue_agent.drivers.http import HttpClient
from ue_agent.gba.client import GbaClient
from ue_agent.gba.naf_client import NafClient
from ue_agent.kms.client import KmsClient, SrtpStream, TlsStream
from ue_agent.lab import kms as lab_kms
from ue_agent.lab.card_ops import SoftCardOps
from ue_agent.lab.network import LabNetwork, LabNetworkThread
from ue_agent.media.keys import SrtpKeys, TlsPskKeys

STREAMS = [SrtpStream("AES_CM_128_HMAC_SHA1_80", ssrc=0x1234), TlsStream("TCP/TLS/MSRP")]
SRTP_SP = SP(1, 0, ((0, b"\x01"), (1, b"\x10"), (2, b"\x01"), (4, b"\x0e"), (11, b"\x0a")))


class Recorder:
    """The independent engine behind the lab front, recording every exchange and the PSKs it used."""

    def __init__(self, kms_fqdn: str) -> None:
        self.extra: dict[bytes, bytes] = {}  # PSKs of independent peers (no HTTP)
        self.used: dict[bytes, bytes] = {}  # psk id -> the key the KMS used
        self.engine = KmsEngine(self.lookup, os.urandom(32), kms_identity=kms_fqdn.encode())
        self.exchanges: list[tuple[bytes, bytes]] = []

    def lookup(self, psk_id: bytes) -> bytes | None:
        key = self.extra.get(psk_id)
        if key is None:
            secret = lab_kms.peer_psk(psk_id)  # the Ks_NAF of the UE the HTTP digest authenticated
            key = secret.reveal() if secret is not None else None
        if key is not None:
            self.used[psk_id] = key
        return key

    def handle(self, request: bytes) -> bytes:
        response = self.engine.handle(request)
        self.exchanges.append((request, response))
        return response


def _net(rec_holder: list[Recorder]):
    net = LabNetwork(lab_subscribers())
    rec = Recorder(net.kms_fqdn)
    net.kms_engine = rec
    rec_holder.append(rec)
    return LabNetworkThread(net)


def ue(net: LabNetwork, http, name: str) -> KmsClient:
    sub = lab_subscriber(name)
    gba = GbaClient(SoftCardOps(sub), net.bsf_url, net.bsf_fqdn, sub.impi, http, gba_u=False)
    return KmsClient(NafClient(gba, http), net.kms_url, net.kms_fqdn, sub.impu[0])


def uri(name: str) -> str:
    return lab_subscriber(name).impu[0]


def check_kms_exchange(rec: Recorder, request: bytes, response: bytes) -> None:
    """Strict decoding, and both MACs under 5.5 with the PSK the independent KMS used (5.1.2)."""
    d_req = decode(request)
    d_resp = decode(response, initial=d_req)
    h = d_req.msg.header
    psk_idr = d_req.get("IDRpsk")
    psk = rec.used[psk_idr.data]
    is_req = h.data_type == 11
    rand = d_req.get("RANDRi" if is_req else "RANDRr").rand
    ri, rr = (rand, None) if is_req else (None, rand)
    mac_alg = d_req.msg.payloads[-1].mac_alg
    k1 = protection_keys(h.prf_func, psk, h.csb_id, 1, ri, rr, mac_alg=mac_alg)
    verify_mac(d_req, k1.auth)
    k2 = protection_keys(h.prf_func, psk, h.csb_id, 2, ri, rr, mac_alg=mac_alg)
    verify_mac(d_resp, k2.auth, initial_raw=request)


def by_cs(audit) -> dict[int, tuple[bytes, bytes]]:
    return {k.cs_id: (k.tek, k.salt) for k in audit.cs_keys}


def test_independent_kms_drives_two_agents():
    holder: list[Recorder] = []
    with _net(holder) as net:
        rec = holder[0]

        async def go():
            async with HttpClient() as http:
                a, b = ue(net, http, "alice"), ue(net, http, "bob")
                offer = await a.offer(uri("bob"), STREAMS)
                ans = await b.answer(offer.transfer_init)
                keys_a = a.complete(offer.pending, ans.transfer_resp)
                return offer, ans, keys_a

        offer, ans, keys_a = net.thread.call(go(), timeout=60)
        assert len(rec.exchanges) == 2  # REQUEST and RESOLVE, both answered by the independent KMS
        for request, response in rec.exchanges:
            check_kms_exchange(rec, request, response)
        ti, tr = offer.transfer_init, ans.transfer_resp
        decode(tr, initial=decode(ti))
        audit = rec.engine.audit_transfer(ti, tr)  # verifies TRANSFER_INIT / TRANSFER_RESP MACs itself
        ks = by_cs(audit)
        srtp_a, tls_a = keys_a
        srtp_b, tls_b = ans.keys
        assert isinstance(srtp_a.tx, SrtpKeys) and isinstance(srtp_a.rx, SrtpKeys)
        assert (srtp_a.tx.master_key.reveal(), srtp_a.tx.master_salt.reveal()) == ks[1]
        assert (srtp_a.rx.master_key.reveal(), srtp_a.rx.master_salt.reveal()) == ks[2]
        assert srtp_b.tx.master_key.reveal() == ks[2][0] and srtp_b.rx.master_key.reveal() == ks[1][0]
        assert isinstance(tls_a.tx, TlsPskKeys) and tls_a.tx.key.reveal() == tls_b.tx.key.reveal() == ks[3][0]
        assert tls_a.tx.identity == tls_b.tx.identity


def test_independent_peer_initiates_to_an_agent_and_answers_one():
    holder: list[Recorder] = []
    with _net(holder) as net:
        rec = holder[0]
        alice_id, bob_id = uri("alice").encode(), uri("bob").encode()
        kms_id = net.kms_fqdn.encode()
        rec.extra = {b"indep-alice": os.urandom(32), b"indep-bob": os.urandom(32)}
        p_alice = Peer(alice_id, rec.extra[b"indep-alice"], psk_id=b"indep-alice", kms_identity=kms_id)
        p_bob = Peer(bob_id, rec.extra[b"indep-bob"], psk_id=b"indep-bob", kms_identity=kms_id)

        # 1. the independent peer initiates, the agent (bob) answers through the lab front
        ri = p_alice.request_init([bob_id])
        issued = p_alice.accept_request_resp(ri, rec.handle(ri))
        ti = p_alice.transfer_init(
            issued,
            responder=bob_id,
            sessions=[srtp_cs(1, ssrc=0xA1, policies=(1,)), srtp_cs(2, policies=(1,))],
            sps=[SRTP_SP],
        )

        async def answer():
            async with HttpClient() as http:
                return await ue(net, http, "bob").answer(ti)

        ans = net.thread.call(answer(), timeout=60)
        assert ans.peer_uri == uri("alice")
        decode(ans.transfer_resp, initial=decode(ti))
        peer_keys = {
            k.cs_id: (k.tek, k.salt, k.ssrc)
            for k in p_alice.accept_transfer_resp(ti, ans.transfer_resp, issued)
        }
        bob_srtp = ans.keys[0]
        assert (bob_srtp.rx.master_key.reveal(), bob_srtp.rx.master_salt.reveal(), 0xA1) == peer_keys[1]
        assert (
            bob_srtp.tx.master_key.reveal(),
            bob_srtp.tx.master_salt.reveal(),
            bob_srtp.tx.ssrc,
        ) == peer_keys[2]
        assert by_cs(rec.engine.audit_transfer(ti, ans.transfer_resp))[2][0] == peer_keys[2][0]

        # 2. the agent (alice) initiates, the independent peer answers (resolving at the same KMS)
        async def offer():
            async with HttpClient() as http:
                a = ue(net, http, "alice")
                return a, await a.offer(uri("bob"), STREAMS)

        a, off = net.thread.call(offer(), timeout=60)
        tr, bob_keys = p_bob.respond(off.transfer_init, rec.handle)
        assert tr is not None
        keys_a = a.complete(off.pending, tr)
        theirs = {k.cs_id: (k.tek, k.salt) for k in bob_keys}
        assert (keys_a[0].tx.master_key.reveal(), keys_a[0].tx.master_salt.reveal()) == theirs[1]
        assert (keys_a[0].rx.master_key.reveal(), keys_a[0].rx.master_salt.reveal()) == theirs[2]
        assert keys_a[1].tx.key.reveal() == theirs[3][0]
        for request, response in rec.exchanges:
            check_kms_exchange(rec, request, response)


def test_independent_kms_forked_call_keys_each_agent_apart():
    holder: list[Recorder] = []
    with _net(holder) as net:
        rec = holder[0]

        async def go():
            async with HttpClient() as http:
                a, b, c = (ue(net, http, n) for n in ("alice", "bob", "carol"))
                offer = await a.offer(uri("bob"), STREAMS[:1], recipients=[uri("bob"), uri("carol")])
                ans_b = await b.answer(offer.transfer_init)
                ans_c = await c.answer(offer.transfer_init)
                return (
                    offer,
                    ans_b,
                    ans_c,
                    a.complete(offer.pending, ans_b.transfer_resp),
                    a.complete(offer.pending, ans_c.transfer_resp),
                )

        offer, ans_b, ans_c, keys_ab, keys_ac = net.thread.call(go(), timeout=60)
        assert decode(offer.transfer_init).get("TICKET").head.flags.I  # key forking (5.1.1)
        for ans, keys in ((ans_b, keys_ab), (ans_c, keys_ac)):
            ks = by_cs(rec.engine.audit_transfer(offer.transfer_init, ans.transfer_resp))
            assert (keys[0].tx.master_key.reveal(), keys[0].rx.master_key.reveal()) == (ks[1][0], ks[2][0])
            assert ans.keys[0].rx.master_key.reveal() == ks[1][0]
        assert keys_ab[0].tx.master_key.reveal() != keys_ac[0].tx.master_key.reveal()
        for request, response in rec.exchanges:
            check_kms_exchange(rec, request, response)


def test_the_lab_kms_and_agents_messages_decode_strictly_in_both_families():
    """The project's own KMS engine too: every message of forked, group and MIKEY-1 calls, the KMS's
    Error messages and a responder's Error message decode with the independent strict decoder."""
    from ue_agent.kms import mikey, service, session
    from ue_agent.secret import Secret

    users = {n: f"sip:{n}@ims.example.org" for n in ("alice", "bob", "carol")}
    psk = {n: Secret(os.urandom(32), "Ks_NAF") for n in users}
    kms = service.KmsService(
        "kms.ims.example.org",
        lambda idr: psk.get(idr.decode()[5:]) if idr else None,
        lambda idr: [users[idr.decode()[5:]]] if idr else [],
    )
    pairs: list[tuple[bytes, bytes | None]] = []
    for prf in (mikey.PRF_HMAC_SHA_256, mikey.PRF_MIKEY_1):
        for group in (False, True):
            a, b, c = users["alice"], users["bob"], users["carol"]
            req = session.build_request_init(
                a, [b, c], "btid-alice", psk["alice"], "kms.ims.example.org", group=group, prf_func=prf
            )
            resp = kms.handle(req.raw)
            pairs.append((req.raw, resp))
            issued = session.read_request_resp(200, resp, req, psk["alice"], "kms.ims.example.org")
            offer = session.build_transfer_init(issued, a, b, STREAMS, "kms.ims.example.org")
            ti = session.inspect_transfer_init(offer.transfer_init)
            for who in ("bob", "carol"):
                rs = session.build_resolve_init(
                    users[who], ti, f"btid-{who}", psk[who], "kms.ims.example.org"
                )
                rresp = kms.handle(rs.raw)
                pairs.append((rs.raw, rresp))
                resolved = session.read_resolve_resp(200, rresp, rs, psk[who], "kms.ims.example.org")
                tr, _ = session.accept_transfer_init(ti, resolved, users[who], session.ReplayCache())
                assert tr is not None
                pairs.append((offer.transfer_init, tr))
                session.complete(offer, tr)
            bad = session.build_request_init(
                b, ["*"], "btid-alice", psk["alice"], "kms.ims.example.org", prf_func=prf
            )
            pairs.append((bad.raw, kms.handle(bad.raw)))  # signed Error (ERR 7)
            err = session.transfer_error(offer.transfer_init, mikey.ERR_INVALID_TS)
            assert err is not None
            pairs.append((offer.transfer_init, err))
    for initial, response in pairs:
        d = decode(initial)
        if response is not None:
            decode(response, initial=d)
