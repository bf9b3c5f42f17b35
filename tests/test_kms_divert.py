"""Communication diversion (TR 33.829 9.2, 9.3) and caller anonymity (TR 33.828 req. 49) with the lab
KMS and the lab CDIV AS over loopback HTTP (real GBA), plus the sans-IO rules of kms/divert.py."""

from __future__ import annotations

import asyncio

import pytest

from tests.test_kms_http import STREAMS, peer_view, ue, uri, wire
from ue_agent.drivers.http import HttpClient
from ue_agent.errors import KmsError
from ue_agent.kms import anonymity, divert, mikey, sdp, session
from ue_agent.lab.cdiv_as import DEFAULT_CDIV_AS


def run(coro):
    return asyncio.run(coro)


def test_cdiv_solution_1_kms_asks_the_cdiv_as(lab_network):
    """C gets keys only after the lab CDIV AS confirms C is B's diverted-to user; D is refused."""
    cdiv = lab_network.cdiv_as
    diversion = divert.Diversion.of(uri("bob"), DEFAULT_CDIV_AS)

    async def go():
        async with HttpClient() as http:
            a, c, d = (ue(lab_network, http, n) for n in ("alice", "carol", "dave"))
            offer = await a.offer(uri("bob"), STREAMS)
            # no rule yet: the AS has not diverted this call, so it denies and the KMS refuses C
            with pytest.raises(KmsError) as exc:
                await c.answer(offer.transfer_init, diversion=diversion)
            assert exc.value.code == "kms.not_authorized"
            assert cdiv.questions[-1].answer is False
            # Bob forwards to Carol; the INVITE reaches the AS, which diverts it to C
            cdiv.forward(uri("bob"), uri("carol"))
            assert cdiv.divert(uri("bob"), sdp.build(offer.transfer_init)) == uri("carol")
            # D claims the same diversion: the AS denies, the KMS refuses
            with pytest.raises(KmsError) as exc:
                await d.answer(offer.transfer_init, diversion=diversion)
            assert exc.value.code == "kms.not_authorized" and cdiv.questions[-1].answer is False
            # D naming an AS the KMS does not know is refused without a confirmation either
            with pytest.raises(KmsError) as exc:
                await d.answer(offer.transfer_init, diversion=divert.Diversion.of(uri("bob"), uri("dave")))
            assert exc.value.code == "kms.not_authorized" and cdiv.questions[-1].answer is None
            asked = len(cdiv.questions)
            ans = await c.answer(offer.transfer_init, diversion=diversion)
            assert len(cdiv.questions) == asked + 1 and cdiv.questions[-1].answer is True
            assert ans.diverted_from == uri("bob") and ans.peer_uri == uri("alice")
            keys, responder, vouched = a.complete_with_peer(offer.pending, ans.transfer_resp)
            assert responder == uri("carol") and vouched  # MPKr' is C's (forked for C by the KMS)
            assert wire(keys) == peer_view(ans.keys)
            # without the diversion indication D has no way in
            with pytest.raises(KmsError) as exc:
                await d.answer(offer.transfer_init)
            assert exc.value.code == "kms.not_authorized"

    run(go())
    svc = lab_network.kms_service
    assert svc.diversions.questions == 4 and svc.diversions.diverts == 1


def test_cdiv_authorized_by_the_diverting_user(lab_network):
    """B's agent names C (KmsClient.authorize_divert, General Ext 241); then C resolves."""

    async def go():
        async with HttpClient() as http:
            a, b, c, d = (ue(lab_network, http, n) for n in ("alice", "bob", "carol", "dave"))
            offer = await a.offer(uri("bob"), STREAMS)
            with pytest.raises(KmsError):
                await c.answer(offer.transfer_init)
            with pytest.raises(KmsError) as exc:  # only a recipient may divert
                await d.authorize_divert(offer.transfer_init, uri("dave"))
            assert exc.value.code == "kms.not_authorized"
            await b.authorize_divert(offer.transfer_init, uri("carol"))
            ans = await c.answer(offer.transfer_init)
            assert wire(a.complete(offer.pending, ans.transfer_resp)) == peer_view(ans.keys)
            with pytest.raises(KmsError):
                await d.answer(offer.transfer_init)

    run(go())


def test_cdiv_solution_2_error_names_the_diverted_to_user():
    """C's Error message (ERR 242, IDRr = C, diversion indication B) is read by the caller as
    'diverted to C'; any other message, another offer's or one naming B itself, is not."""
    from tests.test_kms_flows import Lab

    lab = Lab()
    issued = lab.request("alice", [uri_of("bob")])
    pending = session.build_transfer_init(issued, uri_of("alice"), uri_of("bob"), STREAMS, now=lab.clock())
    err = divert.diverted_error(pending.transfer_init, uri_of("carol"), uri_of("bob"), now=lab.clock())
    assert err is not None
    msg = mikey.Message.decode(err)
    assert (
        msg.header.data_type == mikey.DT_ERROR and msg.one(mikey.Error).error_no == mikey.ERR_NOT_AUTHORIZED
    )
    csb = pending.message.header.csb_id
    got = divert.diverted_to(err, csb, uri_of("bob"))
    assert got == {"diverted_to": uri_of("carol"), "diverted_from": uri_of("bob")}
    assert divert.diverted_to(err, csb ^ 1, uri_of("bob")) is None
    assert divert.diverted_to(err, csb, uri_of("carol")) is None
    assert divert.diverted_to(pending.transfer_init, csb, uri_of("bob")) is None
    plain = session.transfer_error(pending.transfer_init, mikey.ERR_NOT_AUTHORIZED)
    assert plain is not None and divert.diverted_to(plain, csb, uri_of("bob")) is None


def uri_of(name: str) -> str:
    from tests.test_kms_flows import USERS

    return USERS[name]


def test_divert_book_rules():
    """The KMS rule without HTTP: who may resolve, and what is echoed."""
    asked: list[tuple] = []

    def ask(as_id, served, target, ref):
        asked.append((as_id, served, target, ref))
        return {"sip:as@x.org": target == "sip:carol@x.org"}.get(as_id)

    book = divert.DivertBook(ask)
    ticket = mikey.Ticket(1, 1, 1, 1, 0, [], b"", b"ticket-data")

    def resolve(responder: str, *exts: mikey.GeneralExt, on: divert.DivertBook = book, now: float = 0.0):
        msg = mikey.Message(mikey.Header(mikey.DT_RESOLVE_INIT_PSK, 1, 1, True, mikey.MAP_EMPTY), list(exts))
        return on.check(msg, responder, ["sip:bob@x.org"], ticket, b"rand", 100.0, now)

    assert resolve("sip:bob@x.org") == []
    with pytest.raises(divert.Refusal):
        resolve("sip:carol@x.org")
    ind = divert.Diversion.of("sip:bob@x.org", "sip:as@x.org").extensions()
    with pytest.raises(divert.Refusal):  # the AS denies D
        resolve("sip:dave@x.org", *ind)
    echo = resolve("sip:carol@x.org", *ind)
    assert [x.ext_type for x in echo] == [divert.EXT_DIVERSION, divert.EXT_CDIV_AS]
    assert asked[-1][3] == divert.ticket_ref(b"ticket-data")
    again = resolve("sip:carol@x.org")  # remembered until TRe, and told whose call it is
    assert [(x.ext_type, x.data) for x in again] == [(divert.EXT_DIVERSION, b"sip:bob@x.org")]
    with pytest.raises(divert.Refusal):  # served user outside the recipients
        resolve("sip:dave@x.org", *divert.Diversion.of("sip:eve@x.org", "sip:as@x.org").extensions())
    with pytest.raises(divert.Refusal):  # no AS named
        resolve("sip:dave@x.org", ind[0])
    assert divert.DivertBook(None).questions == 0
    with pytest.raises(divert.Refusal):  # a KMS with no AS to ask
        resolve("sip:carol@x.org", *ind, on=divert.DivertBook(None))
    book._accepted.clear()
    assert resolve("sip:carol@x.org", *ind)  # pruned after TRe
    with pytest.raises(divert.Refusal):
        resolve("sip:carol@x.org", now=100.0)


def test_anonymous_caller(lab_network):
    """A asks for anonymity: B's agent never sees A's identity, and the KMS vouched for A."""

    async def go():
        async with HttpClient() as http:
            a, b = ue(lab_network, http, "alice"), ue(lab_network, http, "bob")
            offer = await a.offer(uri("bob"), STREAMS, anonymous=True)
            for who in (uri("alice"), "alice", "tel:+15550000001"):  # in no form in what B receives
                assert who.encode() not in offer.transfer_init
            ti = session.inspect_transfer_init(offer.transfer_init)
            assert ti.initiator == anonymity.ANONYMOUS_URI
            assert ti.ticket.flag(mikey.F_K)  # the KMS changed the policy (IDRi)
            ans = await b.answer(offer.transfer_init)
            assert ans.anonymous and ans.vouched and ans.peer_uri == anonymity.ANONYMOUS_URI
            assert wire(a.complete(offer.pending, ans.transfer_resp)) == peer_view(ans.keys)
            # the KMS knows who it was (audit), the ticket does not say
            assert uri("alice") in {who for _, who in lab_network.kms_service.anonymous.values()}
            # a named offer is not anonymous and does not reuse the anonymous ticket
            named = await a.offer(uri("bob"), STREAMS)
            assert not named.reused_ticket
            ans2 = await b.answer(named.transfer_init)
            assert not ans2.anonymous and ans2.peer_uri == uri("alice")

    run(go())


def test_private_use_general_extension_types_are_distinct():
    """Each private-use General Extension type (RFC 3830 6.15, IANA 241-255) names one thing."""
    from ue_agent.kms import messaging

    types = [
        divert.EXT_DIVERT,
        divert.EXT_DIVERSION,
        divert.EXT_CDIV_AS,
        messaging.EXT_E2M,
        anonymity.EXT_ANONYMOUS,
    ]
    assert len(set(types)) == len(types) and all(241 <= t <= 255 for t in types)
