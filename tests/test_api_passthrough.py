"""Faults of the parts behind the daemon reach the softphone with their own codes, through
the socket, and the daemon recovers when the part comes back: the modem (AT), the reader
(PC/SC), the BSF and the KMS. Each part is the real one, misbehaving on request."""

from __future__ import annotations

import base64

import pytest

from tests.fixtures.daemon import ALICE, aka_challenge
from tests.fixtures.network import network_config
from ue_agent.api.client import ApiCallError

BOB = ALICE.parent / "bob.toml"
BOB_URI = "sip:bob@ims.mnc001.mcc001.3gppnetwork.org"


def authenticate(client, sqn: int) -> dict:
    rand, autn = aka_challenge(sqn)
    return client.call(
        "ims.authenticate", rand=base64.b64encode(rand).decode(), autn=base64.b64encode(autn).decode()
    )


def code_of(reply: dict) -> str:
    assert reply["ok"] is False, reply
    return reply["error"]["code"]


def test_modem_faults_pass_through_and_the_card_comes_back(agent_factory, modem_factory, soft_uicc):
    sim = modem_factory("quectel-ec25")
    daemon = agent_factory(card={"transport": "at", "port": str(sim.link_path), "profile": "quectel-ec25"})
    sqn = 100
    with daemon.client() as c:
        assert "res" in authenticate(c, sqn)
        for kind, code in (
            ("error", "modem.error"),
            ("cme_error", "modem.cme_error"),
            ("garbage", "modem.garbage"),
        ):
            sim.fail_next(kind)
            sqn += 1
            assert code_of(authenticate(c, sqn)) == code, daemon.log_text()[-4000:]
        sim.vanish()
        sqn += 1
        assert code_of(authenticate(c, sqn)).startswith(("modem.gone", "card."))
        sim.start()  # plugged back in at the same path
        sqn += 1
        assert "res" in authenticate(c, sqn)
        assert c.request("status")["card"]["present"] is True


def test_card_pulled_from_the_reader_then_reinserted(agent_factory, vpcd_card):
    from tests.fixtures.pcsc import wait_reader

    server, reader = vpcd_card
    daemon = agent_factory(card={"transport": "pcsc", "reader": reader})
    with daemon.client() as c, daemon.client() as events:
        events.request("subscribe", events=["card"])
        assert "res" in authenticate(c, 200)
        server.remove()
        wait_reader(reader, False)
        assert code_of(authenticate(c, 201)) in ("card.removed", "card.absent")
        gone = events.next_event()
        assert gone["event"] == "card" and gone["present"] is False
        assert gone["error"] in ("card.removed", "card.absent")
        assert c.request("status")["card"]["present"] is False
        server.insert()
        wait_reader(reader, True)
        assert "res" in authenticate(c, 202)
        back = events.next_event()
        assert back["event"] == "card" and back["present"] is True


def test_card_put_in_after_start_is_read_without_an_operation(agent_factory, vpcd_card):
    """A reader or card that comes up after the daemon: status names the card's identities once
    it is there, without a softphone operation having to ask for them first."""
    import time

    from tests.fixtures.pcsc import wait_reader

    server, reader = vpcd_card
    server.remove()
    wait_reader(reader, False)
    try:
        daemon = agent_factory(card={"transport": "pcsc", "reader": reader})
        with daemon.client() as c:
            assert c.request("status")["card"].get("impi") is None
            server.insert()
            wait_reader(reader, True)
            deadline = time.monotonic() + 15
            card = c.request("status")["card"]
            while card.get("impi") is None and time.monotonic() < deadline:
                time.sleep(0.1)
                card = c.request("status")["card"]
            assert card["present"] is True
            assert card["impi"] == "001010000000001@ims.mnc001.mcc001.3gppnetwork.org"
    finally:
        server.insert()


@pytest.fixture
def net_daemons(agent_factory, lab_network):
    net = network_config(lab_network)
    return lab_network, agent_factory(network=net), agent_factory(subscriber=BOB, network=net)


def test_bsf_faults_pass_through_and_nothing_is_kept(net_daemons):
    net, ue_a, _ = net_daemons
    with ue_a.client() as a:
        for attr, value, code in (
            ("bsf_status", 500, "gba.bsf_error"),
            ("bsf_malformed_xml", True, "gba.bad_response"),
            ("bsf_wrong_realm", True, "gba.wrong_realm"),
            ("bsf_down", True, "gba.bsf_unreachable"),
        ):
            setattr(net.faults, attr, value)
            assert code_of(a.call("mikey.offer", responder=BOB_URI)) == code, attr
            assert a.request("status")["bootstrap"]["state"] != "bootstrapped"
            net.faults.clear()
        assert a.request("mikey.offer", responder=BOB_URI)["key_mgmt"]
        assert a.request("status")["bootstrap"]["state"] == "bootstrapped"


def test_kms_faults_pass_through(net_daemons):
    net, ue_a, ue_b = net_daemons
    with ue_a.client() as a, ue_b.client() as b:
        net.faults.kms_down = True
        assert code_of(a.call("mikey.offer", responder=BOB_URI)) == "kms.unreachable"
        net.faults.clear()
        offer = a.request("mikey.offer", responder=BOB_URI)
        net.faults.kms_status = 503
        assert code_of(b.call("mikey.answer", transfer_init=offer["key_mgmt"])) == "kms.unreachable"
        net.faults.clear()
        ans = b.request("mikey.answer", transfer_init=offer["key_mgmt"])
        assert code_of(b.call("mikey.answer", transfer_init=offer["key_mgmt"])) == "mikey.replay"
        tampered = bytearray(base64.b64decode(ans["transfer_resp"]))
        tampered[-1] ^= 1
        r = a.call(
            "mikey.complete", session=offer["session"], transfer_resp=base64.b64encode(tampered).decode()
        )
        assert code_of(r) == "mikey.bad_mac"
        assert a.request("mikey.complete", session=offer["session"], transfer_resp=ans["transfer_resp"])


def test_a_ue_outside_the_recipients_is_refused(agent_factory, net_daemons):
    net, ue_a, _ = net_daemons
    carol = agent_factory(
        subscriber=ALICE.parent / "carol.toml",
        network={
            "bsf_url": net.bsf_url,
            "kms_url": net.kms_url,
            "bsf_fqdn": net.bsf_fqdn,
            "kms_fqdn": net.kms_fqdn,
        },
    )
    with ue_a.client() as a, carol.client() as c:
        offer = a.request("mikey.offer", responder=BOB_URI)
        r = c.call("mikey.answer", transfer_init=offer["key_mgmt"])
        assert code_of(r) == "kms.not_authorized"
        assert "master_key" not in str(r)
    with pytest.raises(ApiCallError):
        carol.client().request("session.keys", session="s-none")
