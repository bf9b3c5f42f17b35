"""IMS messaging through the real daemons' sockets and the lab BSF/KMS on loopback: a pager-mode
MESSAGE body to B and C (one ticket naming both, one way, no TRANSFER_RESP): both decrypt it,
D cannot resolve (kms.not_authorized); the e2m indication; MSRP keys in message form."""

from __future__ import annotations

import base64

import pytest

from tests.fixtures.daemon import ALICE
from tests.fixtures.network import network_config

SUBS = ALICE.parent
DOMAIN = "ims.mnc001.mcc001.3gppnetwork.org"
ALICE_URI, BOB_URI = f"sip:alice@{DOMAIN}", f"sip:bob@{DOMAIN}"
CAROL_URI = f"sip:001010000000003@{DOMAIN}"
BODY = b"Meet at the north gate at 10:00"


@pytest.fixture
def net_cfg(lab_network):
    return network_config(lab_network)


def test_pager_message_to_b_and_c_d_refused(agent_factory, net_cfg) -> None:
    from ue_agent.subscriber import load_subscriber

    dave_uri = load_subscriber(SUBS / "dave.toml").impu[0]
    a, b, c, d = (
        agent_factory(subscriber=sub, network=net_cfg)
        for sub in (None, SUBS / "bob.toml", SUBS / "carol.toml", SUBS / "dave.toml")
    )
    with a.client() as ca:
        sealed = ca.request(
            "message.protect",
            recipients=[BOB_URI, CAROL_URI],
            body=base64.b64encode(BODY).decode(),
            content_type="text/plain;charset=utf-8",
        )
    assert sealed["mode"] == "e2e" and sorted(sealed["recipients"]) == sorted([BOB_URI, CAROL_URI])
    assert BODY not in base64.b64decode(sealed["body"])
    for agent in (b, c):
        with agent.client() as cl:
            got = cl.request("message.unprotect", transfer_init=sealed["transfer_init"], body=sealed["body"])
            assert base64.b64decode(got["body"]) == BODY and got["sender"] == ALICE_URI
            assert got["content_type"] == "text/plain;charset=utf-8" and got["mode"] == "e2e"
            assert got["sender_authenticated"] is False  # two recipients: either could have written it
            again = cl.call("message.unprotect", transfer_init=sealed["transfer_init"], body=sealed["body"])
            assert again["ok"] is False and again["error"]["code"] == "mikey.replay"
    with d.client() as cd:
        r = cd.call("message.unprotect", transfer_init=sealed["transfer_init"], body=sealed["body"])
        assert r["ok"] is False and r["error"]["code"] == "kms.not_authorized", r
        # e2m: the protection ends at a messaging server (D plays it), which the ticket names
        with a.client() as ca:
            e2m = ca.request(
                "message.protect", recipients=[BOB_URI], body=base64.b64encode(BODY).decode(), e2m=dave_uri
            )
        assert e2m["mode"] == "e2m" and dave_uri in e2m["recipients"]
        got = cd.request("message.unprotect", transfer_init=e2m["transfer_init"], body=e2m["body"])
        assert got["mode"] == "e2m" and got["middle"] == dave_uri and base64.b64decode(got["body"]) == BODY
    with b.client() as cb:
        got = cb.request("message.unprotect", transfer_init=e2m["transfer_init"], body=e2m["body"])
        assert got["mode"] == "e2m" and got["middle"] == dave_uri
    assert BODY.decode() not in a.log_text() + b.log_text() + c.log_text()


def test_msrp_keys_in_message_form(agent_factory, net_cfg) -> None:
    """The MSRP session's TLS PSK from the TRANSFER_INIT alone (one-way ticket): the sender has it
    at offer time, the receiver derives it without sending a TRANSFER_RESP."""
    a, b = agent_factory(network=net_cfg), agent_factory(subscriber=SUBS / "bob.toml", network=net_cfg)
    with a.client() as ca, b.client() as cb:
        off = ca.request("mikey.offer", responder=BOB_URI, media=["msrp"], deferred=True)
        ka = ca.request("session.keys", session=off["session"])["streams"][0]
        ans = cb.request("mikey.answer", transfer_init=off["key_mgmt"], media=["msrp"])
        assert "transfer_resp" not in ans and ans["peer"] == ALICE_URI
        kb = cb.request("session.keys", session=ans["session"])["streams"][0]
    assert ka["tx"]["kind"] == "tls-psk" and ka["tx"] == kb["tx"]


def test_message_errors(agent_factory, net_cfg) -> None:
    a = agent_factory(network=net_cfg)
    with a.client() as ca:
        r = ca.call("message.protect", recipients=[], body="aGk=")
        assert r["error"]["code"] == "api.bad_request"
        r = ca.call("message.protect", recipients=[BOB_URI], body="%%%")
        assert r["error"]["code"] == "api.bad_request"
        r = ca.call("message.unprotect", transfer_init="AQAO", body="aGk=")
        assert r["error"]["code"].startswith("mikey.")
