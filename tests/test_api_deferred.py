"""Deferred delivery through the real daemon socket: ``mikey.offer`` with ``deferred`` gives the
sender its keys at once; the lab mailbox (loopback HTTP, its own subscriber) keeps the
TRANSFER_INIT and the SRTP packets and cannot resolve them; ``mikey.resolve_stored`` gives the
receiver the keys, once; the live form stays refused."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import time
import urllib.request

import pytest

from tests.fixtures.daemon import ALICE
from tests.fixtures.network import lab_subscriber, lab_subscribers
from ue_agent.lab.network import LabNetwork, LabNetworkThread

pylibsrtp = pytest.importorskip("pylibsrtp", reason="pylibsrtp is not installed")

BOB = ALICE.parent / "bob.toml"
BOB_URI = "sip:bob@ims.mnc001.mcc001.3gppnetwork.org"
ALICE_URI = "sip:alice@ims.mnc001.mcc001.3gppnetwork.org"


@pytest.fixture
def world(agent_factory):
    from ue_agent.lab.mailbox import MailboxServer

    net = LabNetwork([*lab_subscribers(), lab_subscriber("mailbox")])
    with LabNetworkThread(net) as n:
        box = n.thread.call(MailboxServer(n, lab_subscriber("mailbox")).start())  # type: ignore[union-attr]
        cfg = {"bsf_url": n.bsf_url, "kms_url": n.kms_url, "bsf_fqdn": n.bsf_fqdn, "kms_fqdn": n.kms_fqdn}
        try:
            yield agent_factory(network=cfg), agent_factory(subscriber=BOB, network=cfg), box
        finally:
            n.thread.call(box.stop())  # type: ignore[union-attr]


def _srtp(keys: dict, outbound: bool):
    policy = pylibsrtp.Policy(
        key=base64.b64decode(keys["master_key"]) + base64.b64decode(keys["master_salt"]),
        ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND if outbound else pylibsrtp.Policy.SSRC_ANY_INBOUND,
        srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    )
    return pylibsrtp.Session(policy=policy)


def _http(method: str, url: str, body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_deferred_offer_mailbox_and_resolve_stored(world) -> None:
    ue_a, ue_b, box = world
    with ue_a.client() as a:
        off = a.request("mikey.offer", responder=BOB_URI, media=["audio"], deferred=True, validity=7200)
        assert off["state"] == "active" and off["streams"] == ["audio"] and off["expires"] > 0
        assert off["protection"]["scope"] == "e2e-kms" and off["protection"]["requested"] == BOB_URI
        keys = a.request("session.keys", session=off["session"])["streams"][0]
    assert "rx" not in keys  # one way: nobody answers
    tx = keys["tx"]
    sender = _srtp(tx, True)
    plain = [struct.pack("!BBHII", 0x80, 0, i, i * 160, tx["ssrc"]) + bytes(160) for i in range(50)]
    packets = [base64.b64encode(sender.protect(p)).decode() for p in plain]
    status, put = _http(
        "POST", f"{box.url}/mailbox/{BOB_URI}", {"transfer_init": off["transfer_init"], "packets": packets}
    )
    assert status == 201
    status, refused = _http("POST", f"{box.url}/mailbox/{BOB_URI}/{put['id']}/resolve", {})
    assert status == 403 and refused["code"] == "kms.not_authorized"

    status, item = _http("GET", f"{box.url}/mailbox/{BOB_URI}/{put['id']}")
    with ue_b.client() as b:
        got = b.request("mikey.resolve_stored", transfer_init=item["transfer_init"])
        assert got["peer"] == ALICE_URI and got["streams"] == ["audio"]
        assert got["protection"]["peer_authenticated"] is True and got["expires"] == off["expires"]
        kb = b.request("session.keys", session=got["session"])["streams"][0]
        assert kb["rx"] == tx
        receiver = _srtp(kb["rx"], False)
        assert [receiver.unprotect(base64.b64decode(p)) for p in item["packets"]] == plain
        # the same stored TRANSFER_INIT again, stored or live: a replay
        r = b.call("mikey.resolve_stored", transfer_init=item["transfer_init"])
        assert r["ok"] is False and r["error"]["code"] == "mikey.replay", r
        r = b.call("mikey.answer", transfer_init=item["transfer_init"])
        assert r["ok"] is False and r["error"]["code"] == "mikey.replay", r
    log = ue_a.log_text() + ue_b.log_text()
    assert tx["master_key"] not in log and base64.b64decode(tx["master_key"]).hex() not in log


def test_resolve_stored_refuses_a_live_ticket_and_bad_input(world) -> None:
    ue_a, ue_b, _box = world
    with ue_a.client() as a, ue_b.client() as b:
        live = a.request("mikey.offer", responder=BOB_URI)
        r = b.call("mikey.resolve_stored", transfer_init=live["key_mgmt"])
        assert r["error"]["code"] == "mikey.unsupported" and r["error"]["details"]["reason"] == "not_one_way"
        r = b.call("mikey.resolve_stored", transfer_init="%%%")
        assert r["error"]["code"] == "api.bad_request"
        r = a.call("mikey.offer", responder=BOB_URI, validity=60)
        assert r["error"]["code"] == "api.bad_request"
        r = a.call("mikey.offer", responder=BOB_URI, deferred=True, group=True)
        assert r["error"]["code"] == "api.bad_request"


class _Shifted:
    """Real time plus an offset the test moves (the lab network's and the receiver's clock)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def test_acceptance_two_hours_later_through_the_daemons(agent_factory) -> None:
    """B offline: A's agent gives keys at offer time, the lab mailbox stores 1000 SRTP packets
    (real libsrtp) it cannot decrypt (kms.not_authorized); two hours later (the lab network's
    clock and B's KmsClient clock moved) B's agent resolves the stored ticket and all 1000
    packets decrypt; a ticket past its TRe gives kms.ticket_expired."""
    from ue_agent.lab.mailbox import MailboxServer

    clock = _Shifted()
    net = LabNetwork([*lab_subscribers(), lab_subscriber("mailbox")], clock=clock)
    with LabNetworkThread(net) as n:
        box = n.thread.call(MailboxServer(n, lab_subscriber("mailbox")).start())  # type: ignore[union-attr]
        cfg = {"bsf_url": n.bsf_url, "kms_url": n.kms_url, "bsf_fqdn": n.bsf_fqdn, "kms_fqdn": n.kms_fqdn}
        try:
            ue_a, ue_b = agent_factory(network=cfg), agent_factory(subscriber=BOB, network=cfg)
            with ue_a.client() as a:
                off = a.request("mikey.offer", responder=BOB_URI, deferred=True, validity=3 * 3600)
                short = a.request("mikey.offer", responder=BOB_URI, deferred=True, validity=60)
                tx = a.request("session.keys", session=off["session"])["streams"][0]["tx"]
            sender = _srtp(tx, True)
            plain = [
                struct.pack("!BBHII", 0x80, 0, i, i * 160, tx["ssrc"]) + bytes([i & 0xFF]) * 160
                for i in range(1000)
            ]
            packets = [base64.b64encode(sender.protect(p)).decode() for p in plain]
            status, put = _http(
                "POST",
                f"{box.url}/mailbox/{BOB_URI}",
                {"transfer_init": off["transfer_init"], "packets": packets},
            )
            assert status == 201
            status, refused = _http("POST", f"{box.url}/mailbox/{BOB_URI}/{put['id']}/resolve", {})
            assert status == 403 and refused["code"] == "kms.not_authorized"

            clock.offset += 2 * 3600  # two hours later B comes online
            side = ue_b._daemon.agent.ctx.network
            asyncio.run_coroutine_threadsafe(side.kms(), ue_b._loop).result(30)
            side.kms_client.clock = clock  # the KmsClient's injectable clock (RFC 6043 T and TRe checks)
            status, item = _http("GET", f"{box.url}/mailbox/{BOB_URI}/{put['id']}")
            with ue_b.client() as b:
                got = b.request("mikey.resolve_stored", transfer_init=item["transfer_init"])
                rx = b.request("session.keys", session=got["session"])["streams"][0]["rx"]
                receiver = _srtp(rx, False)
                assert [receiver.unprotect(base64.b64decode(p)) for p in item["packets"]] == plain
                assert got["sent"] < got["expires"] and got["peer"] == ALICE_URI
                r = b.call("mikey.resolve_stored", transfer_init=short["transfer_init"])
                assert r["ok"] is False and r["error"]["code"] == "kms.ticket_expired", r
        finally:
            n.thread.call(box.stop())  # type: ignore[union-attr]
