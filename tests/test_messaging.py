"""IMS messaging (TR 33.829 clause 8): a pager-mode MESSAGE body protected for one or several
recipients from a one-way ticket (no TRANSFER_RESP), with the e2m indication. Sans-IO with the
KMS engine; the acceptance through daemons is tests/test_api_messaging.py."""

from __future__ import annotations

import asyncio

import pytest

from tests.test_deferred import _Client
from tests.test_kms_flows import USERS, Lab
from ue_agent.errors import KmsError, MikeyError
from ue_agent.kms import messaging, mikey

BODY = b"Meet at the north gate at 10:00"


def run(coro):
    return asyncio.run(coro)


@pytest.fixture
def lab() -> Lab:
    return Lab()


def test_two_recipients_decrypt_a_third_cannot(lab):
    a, b, c, d = (_Client(lab, n) for n in ("alice", "bob", "carol", "dave"))
    sealed = run(messaging.protect_message(a, [USERS["bob"], USERS["carol"]], BODY))  # type: ignore[arg-type]
    assert BODY not in sealed.body and BODY not in sealed.transfer_init
    assert sorted(sealed.recipients) == sorted([USERS["bob"], USERS["carol"]])
    for who in (b, c):
        got = run(messaging.unprotect_message(who, sealed.transfer_init, sealed.body))  # type: ignore[arg-type]
        assert got.body == BODY and got.sender == USERS["alice"] and got.content_type == "text/plain"
        assert got.e2m is None
    with pytest.raises(KmsError) as exc:
        run(messaging.unprotect_message(d, sealed.transfer_init, sealed.body))  # type: ignore[arg-type]
    assert exc.value.code == "kms.not_authorized"


def test_message_transfer_init_shape(lab):
    a = _Client(lab, "alice")
    sealed = run(messaging.protect_message(a, [USERS["bob"]], BODY, "message/cpim"))  # type: ignore[arg-type]
    msg = mikey.Message.decode(sealed.transfer_init)
    t = msg.one(mikey.Ticket)
    assert not t.flag(mikey.F_F) and not t.flag(mikey.F_G) and not t.flag(mikey.F_I) and not msg.header.v
    (cs,) = msg.header.cs_map
    assert cs.prot_type == messaging.PROT_MIME and cs.session_data == b"message/cpim"
    sp = msg.one(mikey.SecurityPolicy)
    assert sp.param(messaging.SP_AEAD_ALG) == bytes([messaging.AEAD_AES_256_GCM])  # PRF-HMAC-SHA-256 family
    assert len(sealed.body) == len(BODY) + 16  # GCM tag


def test_read_once_late_delivery_and_tampering(lab):
    a, b = _Client(lab, "alice"), _Client(lab, "bob")
    sealed = run(messaging.protect_message(a, [USERS["bob"]], BODY, validity=3 * 3600))  # type: ignore[arg-type]
    bad = bytearray(sealed.body)
    bad[0] ^= 1
    with pytest.raises(MikeyError) as tag:
        run(messaging.unprotect_message(b, sealed.transfer_init, bytes(bad)))  # type: ignore[arg-type]
    assert tag.value.code == "mikey.bad_mac"
    lab.clock.now += 2 * 3600  # delivered two hours later by the network: within the ticket
    got = run(messaging.unprotect_message(b, sealed.transfer_init, sealed.body))  # type: ignore[arg-type]
    assert got.body == BODY
    with pytest.raises(MikeyError) as again:
        run(messaging.unprotect_message(b, sealed.transfer_init, sealed.body))  # type: ignore[arg-type]
    assert again.value.code == "mikey.replay"
    lab.clock.now += 3600  # past TRe
    other = run(messaging.protect_message(a, [USERS["bob"]], BODY, validity=60))  # type: ignore[arg-type]
    lab.clock.now += 120
    with pytest.raises(KmsError) as exp:
        run(messaging.unprotect_message(b, other.transfer_init, other.body))  # type: ignore[arg-type]
    assert exp.value.code == "kms.ticket_expired"


def test_e2m_indication_names_the_middle_who_may_read(lab):
    a, b, d = _Client(lab, "alice"), _Client(lab, "bob"), _Client(lab, "dave")
    middle = USERS["dave"]  # plays the network messaging server
    sealed = run(messaging.protect_message(a, [USERS["bob"]], BODY, e2m=middle))  # type: ignore[arg-type]
    got = run(messaging.unprotect_message(b, sealed.transfer_init, sealed.body))  # type: ignore[arg-type]
    assert got.e2m == middle and middle in got.recipients
    assert run(messaging.unprotect_message(d, sealed.transfer_init, sealed.body)).body == BODY  # type: ignore[arg-type]
    # the indication is under the MAC: stripping it breaks the TRANSFER_INIT
    msg = mikey.Message.decode(sealed.transfer_init)
    msg.payloads = [p for p in msg.payloads if not isinstance(p, mikey.GeneralExt)]
    c = _Client(lab, "carol")
    with pytest.raises((MikeyError, KmsError)):
        run(messaging.unprotect_message(c, msg.encode(), sealed.body))  # type: ignore[arg-type]
    b2 = _Client(lab, "bob")
    with pytest.raises(MikeyError) as mac:
        run(messaging.unprotect_message(b2, msg.encode(), sealed.body))  # type: ignore[arg-type]
    assert mac.value.code == "mikey.bad_mac"


def test_a_media_transfer_init_is_not_a_message(lab):
    from ue_agent.kms import deferred
    from ue_agent.kms.streams import SrtpStream

    a = _Client(lab, "alice")
    off = run(deferred.offer_one_way(a, USERS["bob"], [SrtpStream()]))  # type: ignore[arg-type]
    with pytest.raises(MikeyError) as exc:
        messaging.inspect(off.transfer_init)
    assert exc.value.code == "mikey.unsupported"


def test_reprs_hold_no_body(lab):
    a, b = _Client(lab, "alice"), _Client(lab, "bob")
    sealed = run(messaging.protect_message(a, [USERS["bob"]], BODY))  # type: ignore[arg-type]
    got = run(messaging.unprotect_message(b, sealed.transfer_init, sealed.body))  # type: ignore[arg-type]
    assert "north gate" not in repr(got) + repr(sealed)


def test_sender_authenticity_needs_a_ticket_for_one_recipient(lab):
    """Without key forking each recipient the KMS resolves for receives MPKi and the TGK (RFC 6043
    4.2.3.5), so C, a recipient of A's message to B and C, can write one "from A" to B under the
    same ticket. The agent says so: sender_authenticated is false with several recipients and true
    only when the ticket names the receiver alone."""
    from ue_agent.kms import session

    a, b, c = _Client(lab, "alice"), _Client(lab, "bob"), _Client(lab, "carol")
    both = run(messaging.protect_message(a, [USERS["bob"], USERS["carol"]], BODY))  # type: ignore[arg-type]
    mi = messaging.inspect(both.transfer_init)
    r = lab.resolve("carol", mi.ti)  # C, as a legitimate recipient
    forged_issued = session.IssuedTicket(mi.ti.ticket, r.mpk_i, None, r.tgk, r.tgk_spi, r.expiry, r.prf_func)
    ti, body = messaging.seal(
        forged_issued, USERS["alice"], [USERS["bob"]], b"forged", "text/plain", now=lab.clock()
    )
    got = run(messaging.unprotect_message(b, ti, body))  # type: ignore[arg-type]
    assert got.body == b"forged" and got.sender == USERS["alice"] and got.sender_authenticated is False
    real = run(messaging.unprotect_message(b, both.transfer_init, both.body))  # type: ignore[arg-type]
    assert real.sender_authenticated is False
    alone = run(messaging.protect_message(a, [USERS["bob"]], BODY))  # type: ignore[arg-type]
    assert run(messaging.unprotect_message(b, alone.transfer_init, alone.body)).sender_authenticated  # type: ignore[arg-type]
    assert c  # C never needed its own client: the KMS resolve above is all it takes
