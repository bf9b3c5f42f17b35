"""MIKEY-TICKET flows without HTTP: UEs' sans-IO state and the KMS service, bytes in, bytes out."""

from __future__ import annotations

import os

import pytest

from tests.fixtures.clock import Clock
from ue_agent.errors import KmsError, MikeyError
from ue_agent.kms import ids, mikey, protect, service, session, tickets
from ue_agent.kms.streams import SrtpStream, TlsStream
from ue_agent.secret import Secret

DOMAIN = "ims.example.org"
KMS_ID = "kms.ims.example.org"
USERS = {n: f"sip:{n}@{DOMAIN}" for n in ("alice", "bob", "carol", "dave")}
STREAMS = [SrtpStream(ssrc=0xCAFE), SrtpStream("AES_CM_128_HMAC_SHA1_32", ssrc=0xBEEF, roc=3), TlsStream()]


class Lab:
    """A KMS engine and per-UE Ks_NAF named by B-TIDs, as the HTTP edge would hand them over."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.psk = {n: Secret(os.urandom(32), "Ks_NAF") for n in USERS}
        self.kms = service.KmsService(KMS_ID, self.psk_of, self.identities_of, clock=self.clock)

    def psk_of(self, idr: bytes | None) -> Secret | None:
        return self.psk.get(idr.decode()[5:]) if idr else None

    def identities_of(self, idr: bytes | None) -> list[str]:
        return [USERS[idr.decode()[5:]]] if idr else []

    def handle(self, raw: bytes) -> tuple[int, bytes]:
        body = self.kms.handle(raw)
        return service.reply_status(body), body

    def request(self, who: str, recipients: list[str], **kw) -> session.IssuedTicket:
        sent = session.build_request_init(
            USERS[who], recipients, f"btid-{who}", self.psk[who], KMS_ID, now=self.clock(), **kw
        )
        return session.read_request_resp(*self.handle(sent.raw), sent, self.psk[who], KMS_ID)

    def resolve(self, who: str, ti: session.TransferInit, **kw) -> session.ResolvedTicket:
        sent = session.build_resolve_init(
            USERS[who], ti, f"btid-{who}", self.psk[who], KMS_ID, now=self.clock(), **kw
        )
        return session.read_resolve_resp(*self.handle(sent.raw), sent, self.psk[who], KMS_ID)

    def answer(self, who: str, transfer_init: bytes, replay: session.ReplayCache | None = None):
        ti = session.inspect_transfer_init(transfer_init)
        resolved = self.resolve(who, ti)
        return session.accept_transfer_init(
            ti, resolved, USERS[who], replay or session.ReplayCache(), self.clock()
        )


def wire(keys):
    return [(k.tx.to_wire(), k.rx.to_wire() if k.rx is not None else None) for k in keys]


def peer_view(keys):
    """The keys as the other side holds them: its tx is our rx (SRTP); a TLS PSK is shared."""
    return [(rx, tx) if rx is not None else (tx, None) for tx, rx in wire(keys)]


@pytest.fixture
def lab() -> Lab:
    return Lab()


def test_two_ues_same_keys_srtp_and_tls(lab):
    issued = lab.request("alice", [USERS["bob"]])
    offer = session.build_transfer_init(issued, USERS["alice"], USERS["bob"], STREAMS, KMS_ID, lab.clock())
    resp, keys_b = lab.answer("bob", offer.transfer_init)
    who, keys_a = session.complete(offer, resp, lab.clock())
    assert who == USERS["bob"] and wire(keys_a) == peer_view(keys_b)
    assert [k.tx.ssrc for k in keys_a[:2]] == [0xCAFE, 0xBEEF] and keys_a[1].tx.roc == 3
    assert keys_a[1].tx.suite == "AES_CM_128_HMAC_SHA1_32" and len(keys_a[2].tx.key) == 32
    # each direction its own crypto session: own SSRC, own TEK; no key used twice
    srtp = [k for p in keys_a[:2] for k in (p.tx, p.rx)]
    assert len({k.master_key.reveal() for k in srtp}) == 4 and len({k.ssrc for k in srtp}) == 4


def test_per_session_modifier_reuses_ticket_with_fresh_keys(lab):
    issued = lab.request("alice", [USERS["bob"]])
    ti1 = session.build_transfer_init(issued, USERS["alice"], USERS["bob"], STREAMS, KMS_ID, lab.clock())
    ti2 = session.build_transfer_init(issued, USERS["alice"], USERS["bob"], STREAMS, KMS_ID, lab.clock())
    p1, p2 = (
        session.inspect_transfer_init(ti1.transfer_init),
        session.inspect_transfer_init(ti2.transfer_init),
    )
    assert p1.ticket_ref == p2.ticket_ref
    resolved = lab.resolve("bob", p1)
    before = lab.kms.stats.resolves
    replay = session.ReplayCache()
    _, k1 = session.accept_transfer_init(p1, resolved, USERS["bob"], replay, lab.clock())
    _, k2 = session.accept_transfer_init(p2, resolved, USERS["bob"], replay, lab.clock())
    assert lab.kms.stats.resolves == before and wire(k1) != wire(k2)


def test_forking_gives_each_endpoint_its_own_key(lab):
    issued = lab.request("alice", [f"*@{DOMAIN}"])
    assert issued.ticket.flag(mikey.F_I) and issued.mpk_r is not None
    offer = session.build_transfer_init(issued, USERS["alice"], USERS["bob"], STREAMS, KMS_ID, lab.clock())
    ti = session.inspect_transfer_init(offer.transfer_init)
    r_b, r_c = lab.resolve("bob", ti), lab.resolve("carol", ti)
    assert r_b.tgk != r_c.tgk and r_b.mpk_r != r_c.mpk_r and r_b.mpk_i == r_c.mpk_i
    resp_b, kb = session.accept_transfer_init(ti, r_b, USERS["bob"], session.ReplayCache(), lab.clock())
    resp_c, kc = session.accept_transfer_init(ti, r_c, USERS["carol"], session.ReplayCache(), lab.clock())
    assert wire(session.complete(offer, resp_b, lab.clock())[1]) == peer_view(kb)
    assert wire(session.complete(offer, resp_c, lab.clock())[1]) == peer_view(kc)
    assert wire(kb)[0] != wire(kc)[0]
    # carol cannot pass her answer off as bob's: the modifier is in the MAC and the keys
    forged = resp_c.replace(USERS["carol"].encode(), b"sip:bob@ims.example.or")
    with pytest.raises(MikeyError):
        session.complete(offer, forged, lab.clock())
    assert mikey.Message.decode(resp_c).one(mikey.IdRole, mikey.ROLE_R).text == USERS["carol"]


def test_recipient_policy(lab):
    issued = lab.request("alice", [USERS["bob"]])
    offer = session.build_transfer_init(issued, USERS["alice"], USERS["bob"], STREAMS, KMS_ID, lab.clock())
    ti = session.inspect_transfer_init(offer.transfer_init)
    with pytest.raises(KmsError) as e:
        lab.resolve("carol", ti)
    assert e.value.code == "kms.not_authorized" and e.value.details["kms_error"] == mikey.ERR_NOT_AUTHORIZED
    anyone = lab.request("alice", ["*"])
    offer2 = session.build_transfer_init(anyone, USERS["alice"], USERS["dave"], STREAMS, KMS_ID, lab.clock())
    assert lab.resolve("dave", session.inspect_transfer_init(offer2.transfer_init)) is not None
    with pytest.raises(KmsError) as e:  # alice cannot claim bob's identity in her own request
        sent = session.build_request_init(
            USERS["bob"], ["*"], "btid-alice", lab.psk["alice"], KMS_ID, now=lab.clock()
        )
        session.read_request_resp(*lab.handle(sent.raw), sent, lab.psk["alice"], KMS_ID)
    assert e.value.code == "kms.not_authorized" and e.value.details["kms_error"] == mikey.ERR_INVALID_ID


def test_diverted_call_needs_the_recipients_authorization(lab):
    issued = lab.request("alice", [USERS["bob"]])
    offer = session.build_transfer_init(issued, USERS["alice"], USERS["bob"], STREAMS, KMS_ID, lab.clock())
    ti = session.inspect_transfer_init(offer.transfer_init)
    with pytest.raises(KmsError) as e:
        lab.resolve("dave", ti)
    assert e.value.code == "kms.not_authorized"
    with pytest.raises(KmsError) as e:  # carol (not a recipient) cannot authorize a divert
        lab.resolve("carol", ti, divert_to=USERS["dave"])
    assert e.value.code == "kms.not_authorized"
    lab.resolve("bob", ti, divert_to=USERS["dave"]).zeroize()  # bob diverts to dave
    resp, kd = session.accept_transfer_init(
        ti, lab.resolve("dave", ti), USERS["dave"], session.ReplayCache(), lab.clock()
    )
    who, ka = session.complete(offer, resp, lab.clock())
    assert who == USERS["dave"] and wire(ka) == peer_view(kd)


def test_group_ticket_from_a_conference_focus(lab):
    issued = lab.request("alice", [USERS["bob"], USERS["carol"]], group=True)
    assert not issued.ticket.flag(mikey.F_I) and not issued.ticket.flag(mikey.F_G)
    media = [SrtpStream(ssrc=0xCAFE)]
    offer = session.build_transfer_init(issued, USERS["alice"], USERS["bob"], media, KMS_ID, lab.clock())
    resp_b, kb = lab.answer("bob", offer.transfer_init)
    resp_c, kc = lab.answer("carol", offer.transfer_init)
    # one group key: the same TEK for the focus's stream at every member
    assert kb[0].rx.to_wire() == kc[0].rx.to_wire()
    assert session.complete(offer, resp_b, lab.clock())[1][0].tx.to_wire() == kb[0].rx.to_wire()


def test_deferred_resolution_until_expiry(lab):
    issued = lab.request("alice", [USERS["bob"]], validity=600)
    offer = session.build_transfer_init(issued, USERS["alice"], USERS["bob"], STREAMS, KMS_ID, lab.clock())
    ti = session.inspect_transfer_init(offer.transfer_init)
    lab.clock.now += 599
    assert lab.resolve("bob", ti).expiry == pytest.approx(issued.expiry)
    lab.clock.now += 2
    with pytest.raises(KmsError) as e:
        lab.resolve("bob", ti)
    assert e.value.code == "kms.ticket_expired" and e.value.details["kms_error"] == mikey.ERR_TICKET_EXPIRED
    with pytest.raises(KmsError) as e:
        session.build_transfer_init(issued, USERS["alice"], USERS["bob"], STREAMS, KMS_ID, lab.clock())
    assert e.value.code == "kms.ticket_expired"


def test_replay_stale_and_tampered_messages(lab):
    issued = lab.request("alice", [USERS["bob"]])
    offer = session.build_transfer_init(issued, USERS["alice"], USERS["bob"], STREAMS, KMS_ID, lab.clock())
    replay = session.ReplayCache()
    resp, _ = lab.answer("bob", offer.transfer_init, replay)
    with pytest.raises(MikeyError) as e:
        lab.answer("bob", offer.transfer_init, replay)
    assert e.value.code == "mikey.replay"
    lab.clock.now += 3600 - 1  # within the ticket, outside the freshness window
    with pytest.raises(MikeyError) as e:
        lab.answer("bob", offer.transfer_init, session.ReplayCache())
    assert e.value.code == "mikey.replay"
    lab.clock.now -= 3600 - 1
    bad = bytearray(resp)
    bad[-1] ^= 1
    with pytest.raises(MikeyError) as e:
        session.complete(offer, bytes(bad), lab.clock())
    assert e.value.code == "mikey.bad_mac"
    # the KMS keeps a replay cache too (RFC 6043 12.4): the same REQUEST_INIT twice is refused
    sent = session.build_request_init(
        USERS["alice"], ["*"], "btid-alice", lab.psk["alice"], KMS_ID, now=lab.clock()
    )
    assert lab.handle(sent.raw)[0] == 200
    status, body = lab.handle(sent.raw)
    assert status == 403 and mikey.Message.decode(body).one(mikey.Error).error_no == mikey.ERR_INVALID_TS


def test_initiator_data_binds_the_ticket_to_its_initiator(lab):
    issued = lab.request("alice", [USERS["bob"]])
    offer = session.build_transfer_init(issued, USERS["alice"], USERS["bob"], STREAMS, KMS_ID, lab.clock())
    msg = mikey.Message.decode(offer.transfer_init)
    ticket = msg.one(mikey.Ticket)
    vi, vr = ticket.initiator_payloads()
    assert isinstance(vi, mikey.Verification) and vi.mac == msg.payloads[-1].mac
    # Vr altered: the KMS refuses to resolve (RFC 6043 4.2.3.4)
    ticket.initiator_data = ticket.initiator_data[:-1] + bytes([ticket.initiator_data[-1] ^ 1])
    with pytest.raises(KmsError) as e:
        lab.resolve("bob", session.inspect_transfer_init(msg.encode()))
    assert e.value.details["kms_error"] == mikey.ERR_INVALID_MAC


def test_kms_refuses_wrong_key_wrong_btid_and_garbage(lab):
    sent = session.build_request_init(
        USERS["alice"], ["*"], "btid-alice", lab.psk["bob"], KMS_ID, now=lab.clock()
    )
    status, body = lab.handle(sent.raw)
    assert status == 403
    with pytest.raises(KmsError) as e:
        session.read_request_resp(status, body, sent, lab.psk["alice"], KMS_ID)
    # The KMS could not authenticate us, so its Error is unsigned (RFC 6043 5.4): the agent cannot
    # tell it from a forged one and reports a network fault, keeping the ERR number for diagnosis.
    assert e.value.code == "kms.bad_response" and e.value.details["kms_error"] == mikey.ERR_AUTH_FAILURE
    assert e.value.details["reason"] == "unauthenticated_error"
    sent = session.build_request_init(USERS["alice"], ["*"], "btid-other", lab.psk["alice"], KMS_ID)
    assert lab.handle(sent.raw)[0] == 403
    status, body = lab.handle(b"\x01\x02garbage")
    assert status == 400 and mikey.Message.decode(body).one(mikey.Error).error_no == mikey.ERR_UNSPECIFIED


def test_tampered_and_foreign_tickets_are_rejected(lab):
    issued = lab.request("alice", [USERS["bob"]])
    other = service.KmsService(KMS_ID, lab.psk_of, lab.identities_of, clock=lab.clock)
    t = issued.ticket
    with pytest.raises(KmsError):
        tickets.resolve(other.ring, t)
    for pos in (0, len(t.ticket_data) // 2, len(t.ticket_data) - 1):
        flipped = mikey.Ticket(
            *[getattr(t, f) for f in ("ticket_type", "subtype", "version", "prf_func", "flags")]
        )
        flipped.tp_data = t.tp_data
        flipped.ticket_data = (
            t.ticket_data[:pos] + bytes([t.ticket_data[pos] ^ 0x80]) + t.ticket_data[pos + 1 :]
        )
        with pytest.raises(KmsError) as e:
            tickets.resolve(lab.kms.ring, flipped)
        assert e.value.code == "kms.ticket_rejected"
    # the Ticket Policy is under the ticket's MAC too: a recipient added by hand is refused
    t.tp_data = [*t.tp_data, mikey.IdRole(mikey.ROLE_R, mikey.ID_URI, USERS["carol"].encode())]
    with pytest.raises(KmsError):
        tickets.resolve(lab.kms.ring, t)


def test_secrets_never_in_reprs_or_errors(lab):
    issued = lab.request("alice", [USERS["bob"]])
    offer = session.build_transfer_init(issued, USERS["alice"], USERS["bob"], STREAMS, KMS_ID, lab.clock())
    resp, keys = lab.answer("bob", offer.transfer_init)
    secrets = [issued.tgk.reveal().hex(), issued.mpk_i.reveal().hex()] + [
        (k.master_key.reveal().hex() if hasattr(k, "master_key") else k.key.reveal().hex())
        for p in keys
        for k in (p.tx, p.rx)
        if k is not None
    ]
    text = repr(issued) + repr(offer) + repr(keys) + str(lab.kms.stats)
    try:
        session.complete(offer, resp[:-1] + b"\x00", lab.clock())
    except MikeyError as e:
        text += str(e) + repr(e.details)
    for s in secrets:
        assert s not in text.lower()


@pytest.mark.parametrize(
    "uri,canon",
    [
        ('"Bob" <sip:bob@IMS.Example.ORG:5060;transport=tcp>;tag=1', "sip:bob@ims.example.org"),
        ("sips:bob@ims.example.org", "sip:bob@ims.example.org"),
        ("sip:%62ob@ims.example.org", "sip:bob@ims.example.org"),
        ("sip:+1-555-0100@ims.example.org;user=phone", "tel:+15550100"),
        ("tel:+1 (555) 0100;phone-context=x", "tel:+15550100"),
    ],
)
def test_identity_canonicalisation(uri, canon):
    assert ids.canonical(uri) == canon


@pytest.mark.parametrize("bad", ["", "mailto:x@y", "tel:5550100", "sip:ims.example.org", "sip:a@b c"])
def test_bad_identities(bad):
    with pytest.raises(KmsError) as e:
        ids.canonical(bad)
    assert e.value.code == "kms.bad_identity"


def test_patterns():
    assert ids.matches("sip:bob@x.org", ids.pattern("*@X.org")) and not ids.matches("tel:+1", "*@x.org")
    assert ids.matches("tel:+1", "*") and not ids.matches("sip:bob@y.org", "*@x.org")


def test_mutated_messages_only_raise_agent_errors(lab):
    """Every byte of a TRANSFER_INIT / TRANSFER_RESP changed: a clean refusal (an AgentError with a
    code), never another exception. The only bytes a responder holding the resolved ticket cannot
    check are Vr's MAC in the Initiator Data: the KMS checks it when resolving (RFC 6043 4.2.3.4)."""
    from ue_agent.errors import AgentError

    issued = lab.request("alice", [USERS["bob"]])
    offer = session.build_transfer_init(issued, USERS["alice"], USERS["bob"], STREAMS, KMS_ID, lab.clock())
    ti = session.inspect_transfer_init(offer.transfer_init)
    resolved = lab.resolve("bob", ti)
    resp, _ = session.accept_transfer_init(ti, resolved, USERS["bob"], session.ReplayCache(), lab.clock())
    vr_mac_end = len(offer.transfer_init) - 34  # the TRANSFER_INIT's own V (2 + 32) follows
    vr_mac = set(range(vr_mac_end - 32, vr_mac_end))
    for raw, run, may_pass in (
        (
            offer.transfer_init,
            lambda m: session.accept_transfer_init(
                session.inspect_transfer_init(m), resolved, USERS["bob"], session.ReplayCache(), lab.clock()
            ),
            vr_mac,
        ),
        (resp, lambda m: session.complete(offer, m, lab.clock()), set()),
    ):
        for pos in range(len(raw)):
            for x in (0x01, 0x80, 0xFF):
                mutated = raw[:pos] + bytes([raw[pos] ^ x]) + raw[pos + 1 :]
                try:
                    run(mutated)
                except AgentError as e:
                    assert e.code and e.code.split(".")[0] in ("mikey", "kms"), e.code
                else:
                    assert pos in may_pass, pos
    with pytest.raises(KmsError) as e:  # and the KMS refuses a ticket whose Vr was changed
        bad = bytearray(offer.transfer_init)
        bad[vr_mac_end - 1] ^= 1
        lab.resolve("bob", session.inspect_transfer_init(bytes(bad)))
    assert e.value.details["kms_error"] == mikey.ERR_INVALID_MAC


def test_no_mixing_of_128_and_256_bit_families(lab):
    """RFC 6043 12.1: the 256-bit algorithms SHALL NOT be mixed with shorter-key ones in one message."""
    from ue_agent.kms import protect

    sent = session.build_request_init(
        USERS["alice"], ["*"], "btid-alice", lab.psk["alice"], KMS_ID, now=lab.clock()
    )
    msg = mikey.Message.decode(sent.raw)
    assert (
        msg.header.prf_func == mikey.PRF_HMAC_SHA_256
        and msg.payloads[-1].mac_alg == mikey.MAC_HMAC_SHA256_256
    )
    mixed = mikey.Message(
        msg.header, msg.payloads[:-1]
    )  # same message, HMAC-SHA-1-160 under PRF-HMAC-SHA-256
    sha1_keys = protect.MessageKeys(
        Secret(bytes(16)), Secret(bytes(14)), Secret(bytes(20)), protect.FAMILIES[0]
    )
    raw = protect.sign(mixed, sha1_keys)
    status, body = lab.handle(raw)
    assert status == 403 and mikey.Message.decode(body).one(mikey.Error).error_no == mikey.ERR_INVALID_HA
    with pytest.raises(MikeyError) as e:
        protect.verify(
            raw, mikey.Message.decode(raw), protect.MessageKeys(*[Secret(bytes(32))] * 3, protect.FAMILIES[1])
        )
    assert e.value.code == "mikey.unsupported"
    # MIKEY-1 goes with AES-CM-128 / HMAC-SHA-1-160 and 128-bit keys end to end
    issued = lab.request("alice", [USERS["bob"]], prf_func=mikey.PRF_MIKEY_1)
    assert len(issued.tgk) == 16 and issued.ticket.prf_func == mikey.PRF_MIKEY_1
    offer = session.build_transfer_init(issued, USERS["alice"], USERS["bob"], STREAMS, KMS_ID, lab.clock())
    assert mikey.Message.decode(offer.transfer_init).payloads[-1].mac_alg == mikey.MAC_HMAC_SHA1_160
    resp, kb = lab.answer("bob", offer.transfer_init)
    assert wire(session.complete(offer, resp, lab.clock())[1]) == peer_view(kb)


def test_an_unsigned_kms_refusal_is_a_network_fault_not_a_verdict(lab):
    """Anyone on a plain-http path can write an Error message: without a V payload that verifies
    under the request's auth_key it is not taken as the KMS's refusal (RFC 6043 5.4, 5.5)."""
    sent = session.build_request_init(
        USERS["alice"], ["*"], "btid-alice", lab.psk["alice"], KMS_ID, now=lab.clock()
    )
    h = mikey.Message.decode(sent.raw).header
    forged = mikey.Message(
        mikey.Header(mikey.DT_ERROR, h.csb_id, h.prf_func, False, mikey.MAP_EMPTY),
        [protect.timestamp(lab.clock()), mikey.Error(mikey.ERR_NOT_AUTHORIZED)],
    ).encode()
    with pytest.raises(KmsError) as e:
        session.read_request_resp(403, forged, sent, lab.psk["alice"], KMS_ID)
    assert e.value.code == "kms.bad_response"
    assert e.value.details["reason"] == "unauthenticated_error"
    assert e.value.details["kms_error"] == mikey.ERR_NOT_AUTHORIZED
