"""Diversion and anonymity against the independent RFC 6043 implementation (tests/independent/rfc6043):
the new messages of the lab KMS and the agents decode strictly, and a KMS that knows neither the
anonymity request nor the diversion items (the independent one) leaves the agent fail-safe."""

from __future__ import annotations

import asyncio
import os

import pytest

from tests.independent.rfc6043 import decode
from tests.test_kms_independent import STREAMS, Recorder, _net, ue, uri
from ue_agent.drivers.http import HttpClient
from ue_agent.errors import KmsError
from ue_agent.kms import anonymity, divert, service, session
from ue_agent.secret import Secret

KMS_ID = "kms.ims.example.org"
USERS = {n: f"sip:{n}@ims.example.org" for n in ("alice", "bob", "carol")}
AS_ID = "sip:cdiv-as.ims.example.org"


def test_diversion_and_anonymity_messages_decode_strictly():
    psk = {n: Secret(os.urandom(32), "Ks_NAF") for n in USERS}
    kms = service.KmsService(
        KMS_ID,
        lambda idr: psk.get(idr.decode()[5:]) if idr else None,
        lambda idr: [USERS[idr.decode()[5:]]] if idr else [],
        cdiv_as=lambda as_id, served, target, ref: as_id == AS_ID and target == USERS["carol"],
    )
    a, b, c = USERS["alice"], USERS["bob"], USERS["carol"]
    req = session.build_request_init(a, [b], "btid-alice", psk["alice"], KMS_ID, extra=[anonymity.request()])
    resp = kms.handle(req.raw)
    pairs: list[tuple[bytes, bytes]] = [(req.raw, resp)]
    issued = session.read_request_resp(200, resp, req, psk["alice"], KMS_ID)
    assert anonymity.is_anonymous(session.ticket_initiator(issued.ticket))
    offer = session.build_transfer_init(issued, anonymity.ANONYMOUS_URI, b, STREAMS, KMS_ID)
    ti = session.inspect_transfer_init(offer.transfer_init)
    rs = session.build_resolve_init(
        c, ti, "btid-carol", psk["carol"], KMS_ID, extra=divert.Diversion.of(b, AS_ID).extensions()
    )
    rresp = kms.handle(rs.raw)
    pairs.append((rs.raw, rresp))
    resolved = session.read_resolve_resp(200, rresp, rs, psk["carol"], KMS_ID)
    assert divert.confirmed(resolved.extensions) == b and anonymity.vouched(resolved.extensions)
    tr, _ = session.accept_transfer_init(
        ti, resolved, c, session.ReplayCache(), extra=divert.announce(divert.confirmed(resolved.extensions))
    )
    assert divert.announced(tr) == b
    assert tr is not None
    pairs.append((offer.transfer_init, tr))
    err = divert.diverted_error(offer.transfer_init, c, b)
    assert err is not None
    pairs.append((offer.transfer_init, err))
    for initial, response in pairs:
        decode(response, initial=decode(initial))


def test_a_kms_that_ignores_the_request_leaves_the_caller_named_and_refused():
    """The independent KMS does not know General Ext 251: it names the caller in the ticket, so the
    agent sends nothing (kms.anonymity_refused); it refuses a diverted-to user (no AS to ask)."""
    holder: list[Recorder] = []
    with _net(holder) as net:

        async def go():
            async with HttpClient() as http:
                a, c = ue(net, http, "alice"), ue(net, http, "carol")
                with pytest.raises(KmsError) as exc:
                    await a.offer(uri("bob"), STREAMS, anonymous=True)
                assert exc.value.code == "kms.anonymity_refused"
                assert not a._issued
                offer = await a.offer(uri("bob"), STREAMS)
                with pytest.raises(KmsError) as exc2:
                    await c.answer(offer.transfer_init, diversion=divert.Diversion.of(uri("bob"), AS_ID))
                assert exc2.value.code == "kms.not_authorized"

        net.thread.call(go(), timeout=60)


def run(coro):
    return asyncio.run(coro)
