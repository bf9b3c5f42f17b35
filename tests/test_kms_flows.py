"""MIKEY-TICKET flows without HTTP: UEs' sans-IO state and the KMS service, bytes in, bytes out."""

from __future__ import annotations

import os

import pytest

from ue_agent.errors import KmsError, MikeyError
from ue_agent.kms import ids, mikey, service, session, tickets
from ue_agent.kms.streams import SrtpStream, TlsStream
from ue_agent.secret import Secret

DOMAIN = "ims.example.org"
KMS_ID = "kms.ims.example.org"
USERS = {n: f"sip:{n}@{DOMAIN}" for n in ("alice", "bob", "carol", "dave")}
STREAMS = [SrtpStream(ssrc=0xCAFE), SrtpStream("AES_CM_128_HMAC_SHA1_32", ssrc=0xBEEF, roc=3), TlsStream()]


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


class Lab:
    """A KMS service and per-UE Ks_NAF, as the HTTP edge would hand them over."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.kms = service.KmsService(KMS_ID, lambda impi: [USERS[impi]], clock=self.clock)
        self.psk = {n: Secret(os.urandom(32), "Ks_NAF") for n in USERS}

    def request(self, who: str, recipients: list[str], **kw) -> session.IssuedTicket:
        raw, req = session.build_request_init(
            USERS[who], recipients, f"btid-{who}", self.psk[who], KMS_ID, now=self.clock(), **kw
        )
        r = self.kms.handle(raw, who, f"btid-{who}", self.psk[who])
        return session.read_request_resp(r.status, r.body, req, self.psk[who], KMS_ID, kw.get("group", False))

    def resolve(self, who: str, ti: session.TransferInit, **kw):
        raw, req = session.build_resolve_init(
            USERS[who], ti, f"btid-{who}", self.psk[who], KMS_ID, now=self.clock(), **kw
        )
        r = self.kms.handle(raw, who, f"btid-{who}", self.psk[who])
        return session.read_resolve_resp(r.status, r.body, req, self.psk[who], KMS_ID)

    def answer(self, who: str, transfer_init: bytes, replay: session.ReplayCache | None = None):
        ti = session.inspect_transfer_init(transfer_init)
        resolved = self.resolve(who, ti)
        return session.accept_transfer_init(
            ti, resolved, USERS[who], replay or session.ReplayCache(), self.clock()
        )


def wire(keys):
    return [k.to_wire() for k in keys]


@pytest.fixture
def lab() -> Lab:
    return Lab()


def test_two_ues_same_keys_srtp_and_tls(lab):
    issued = lab.request("alice", [USERS["bob"]])
    offer = session.build_transfer_init(issued, USERS["alice"], USERS["bob"], STREAMS, KMS_ID, lab.clock())
    resp, keys_b = lab.answer("bob", offer.transfer_init)
    who, keys_a = session.complete(offer, resp, lab.clock())
    assert who == USERS["bob"] and wire(keys_a) == wire(keys_b)
    assert [k.ssrc for k in keys_a[:2]] == [0xCAFE, 0xBEEF] and keys_a[1].roc == 3
    assert keys_a[1].suite == "AES_CM_128_HMAC_SHA1_32" and len(keys_a[2].key) == 32
    assert keys_a[0].master_key != keys_a[1].master_key


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
    offer = session.build_transfer_init(issued, USERS["alice"], USERS["bob"], STREAMS, KMS_ID, lab.clock())
    ti = session.inspect_transfer_init(offer.transfer_init)
    r_b, r_c = lab.resolve("bob", ti), lab.resolve("carol", ti)
    assert r_b.k_r != r_c.k_r and r_b.mpk_i == r_c.mpk_i
    resp_b, kb = session.accept_transfer_init(ti, r_b, USERS["bob"], session.ReplayCache(), lab.clock())
    resp_c, kc = session.accept_transfer_init(ti, r_c, USERS["carol"], session.ReplayCache(), lab.clock())
    assert wire(session.complete(offer, resp_b, lab.clock())[1]) == wire(kb)
    assert wire(session.complete(offer, resp_c, lab.clock())[1]) == wire(kc)
    assert wire(kb) != wire(kc)
    # carol cannot pass her answer off as bob's
    forged = mikey.Message.decode(resp_c)
    with pytest.raises(MikeyError):
        session.complete(
            offer, resp_c.replace(USERS["carol"].encode(), b"sip:bob@ims.example.or"), lab.clock()
        )
    assert forged.one(mikey.IdRole, mikey.ROLE_R).text == USERS["carol"]


def test_recipient_policy(lab):
    issued = lab.request("alice", [USERS["bob"]])
    offer = session.build_transfer_init(issued, USERS["alice"], USERS["bob"], STREAMS, KMS_ID, lab.clock())
    ti = session.inspect_transfer_init(offer.transfer_init)
    with pytest.raises(KmsError) as e:
        lab.resolve("carol", ti)
    assert e.value.code == "kms.not_authorized"
    anyone = lab.request("alice", ["*"])
    offer2 = session.build_transfer_init(anyone, USERS["alice"], USERS["dave"], STREAMS, KMS_ID, lab.clock())
    assert lab.resolve("dave", session.inspect_transfer_init(offer2.transfer_init)) is not None
    with pytest.raises(KmsError) as e:  # alice cannot claim bob's identity in her own request
        raw, req = session.build_request_init(
            USERS["bob"], ["*"], "btid-alice", lab.psk["alice"], KMS_ID, now=lab.clock()
        )
        r = lab.kms.handle(raw, "alice", "btid-alice", lab.psk["alice"])
        session.read_request_resp(r.status, r.body, req, lab.psk["alice"], KMS_ID)
    assert e.value.code == "kms.not_authorized"


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
    assert lab.resolve("bob", ti, divert_to=USERS["dave"]) is None  # bob diverts to dave
    resp, kd = session.accept_transfer_init(
        ti, lab.resolve("dave", ti), USERS["dave"], session.ReplayCache(), lab.clock()
    )
    who, ka = session.complete(offer, resp, lab.clock())
    assert who == USERS["dave"] and wire(ka) == wire(kd)


def test_group_ticket_from_a_conference_focus(lab):
    issued = lab.request("alice", [USERS["bob"], USERS["carol"]], group=True)
    offer = session.build_transfer_init(issued, USERS["alice"], USERS["bob"], STREAMS, KMS_ID, lab.clock())
    resp_b, kb = lab.answer("bob", offer.transfer_init)
    resp_c, kc = lab.answer("carol", offer.transfer_init)
    assert wire(kb) == wire(kc) == wire(session.complete(offer, resp_b, lab.clock())[1])


def test_deferred_resolution_until_expiry(lab):
    issued = lab.request("alice", [USERS["bob"]], validity=600)
    offer = session.build_transfer_init(issued, USERS["alice"], USERS["bob"], STREAMS, KMS_ID, lab.clock())
    ti = session.inspect_transfer_init(offer.transfer_init)
    lab.clock.now += 599
    assert lab.resolve("bob", ti).expiry == pytest.approx(issued.expiry)
    lab.clock.now += 2
    with pytest.raises(KmsError) as e:
        lab.resolve("bob", ti)
    assert e.value.code == "kms.ticket_expired"
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
    offer_old = offer
    with pytest.raises(MikeyError) as e:
        lab.answer("bob", offer_old.transfer_init, session.ReplayCache())
    assert e.value.code == "mikey.replay"
    lab.clock.now -= 3600 - 1
    bad = bytearray(resp)
    bad[-1] ^= 1
    with pytest.raises(MikeyError) as e:
        session.complete(offer, bytes(bad), lab.clock())
    assert e.value.code == "mikey.bad_mac"


def test_kms_refuses_wrong_key_wrong_btid_and_garbage(lab):
    raw, req = session.build_request_init(
        USERS["alice"], ["*"], "btid-alice", lab.psk["bob"], KMS_ID, now=lab.clock()
    )
    r = lab.kms.handle(raw, "alice", "btid-alice", lab.psk["alice"])
    assert r.status == 403
    with pytest.raises(KmsError) as e:
        session.read_request_resp(r.status, r.body, req, lab.psk["alice"], KMS_ID)
    assert e.value.code == "kms.ticket_rejected" and e.value.details["kms_error"] == mikey.ERR_AUTH_FAILURE
    raw, req = session.build_request_init(USERS["alice"], ["*"], "btid-other", lab.psk["alice"], KMS_ID)
    assert lab.kms.handle(raw, "alice", "btid-alice", lab.psk["alice"]).status == 403
    r = lab.kms.handle(b"\x01\x02garbage", "alice", "btid-alice", lab.psk["alice"])
    assert r.status == 400 and mikey.Message.decode(r.body).one(mikey.Error).error_no == mikey.ERR_UNSPECIFIED


def test_tampered_and_foreign_tickets_are_rejected(lab):
    issued = lab.request("alice", [USERS["bob"]])
    other = service.KmsService(KMS_ID, lambda impi: [USERS[impi]], clock=lab.clock)
    sealed = issued.ticket.data
    with pytest.raises(KmsError):
        tickets.open_ticket(other.ring, sealed)
    flipped = sealed[:-1] + bytes([sealed[-1] ^ 0x80])
    with pytest.raises(KmsError) as e:
        tickets.open_ticket(lab.kms.ring, flipped)
    assert e.value.code == "kms.ticket_rejected"
    assert tickets.open_ticket(lab.kms.ring, sealed).initiator == USERS["alice"]


def test_secrets_never_in_reprs_or_errors(lab):
    issued = lab.request("alice", [USERS["bob"]])
    offer = session.build_transfer_init(issued, USERS["alice"], USERS["bob"], STREAMS, KMS_ID, lab.clock())
    resp, keys = lab.answer("bob", offer.transfer_init)
    secrets = [issued.key.reveal().hex()] + [
        (k.master_key.reveal().hex() if hasattr(k, "master_key") else k.key.reveal().hex()) for k in keys
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
