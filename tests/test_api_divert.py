"""Diversion (TR 33.829 9.2, 9.3) and caller anonymity (TR 33.828 req. 49) through real agents'
sockets, with the lab BSF, KMS and CDIV AS on loopback: mikey.answer with cdiv_as, mikey.divert,
mikey.complete's "diverted" result and the re-offer, mikey.offer with anonymous."""

from __future__ import annotations

import pytest

from tests.fixtures.daemon import ALICE
from tests.fixtures.network import network_config
from ue_agent.kms import mikey, sdp
from ue_agent.lab.cdiv_as import DEFAULT_CDIV_AS

SUBS = ALICE.parent
DOMAIN = "ims.mnc001.mcc001.3gppnetwork.org"
ALICE_URI, BOB_URI = f"sip:alice@{DOMAIN}", f"sip:bob@{DOMAIN}"
CAROL_URI, DAVE_URI = f"sip:001010000000003@{DOMAIN}", f"sip:dave@{DOMAIN}"


@pytest.fixture
def agents(agent_factory, lab_network):
    net = network_config(lab_network)

    def start(name: str):
        return agent_factory(subscriber=SUBS / f"{name}.toml", network=net)

    return start


def _same_keys(a, sid_a, c, sid_c) -> None:
    ka, kc = a.request("session.keys", session=sid_a), c.request("session.keys", session=sid_c)
    sa, sc = ka["streams"][0], kc["streams"][0]
    assert sa["tx"] == sc["rx"] and sa["rx"] == sc["tx"]


def test_cdiv_solution_1_through_the_agents(agents, lab_network) -> None:
    """C answers a call diverted from B naming the CDIV AS: keys only after the AS confirms; D is refused."""
    ue_a, ue_c, ue_d = agents("alice"), agents("carol"), agents("dave")
    with ue_a.client() as a, ue_c.client() as c, ue_d.client() as d:
        offer = a.request("mikey.offer", responder=BOB_URI)
        r = c.call("mikey.answer", transfer_init=offer["key_mgmt"], cdiv_as=DEFAULT_CDIV_AS)
        assert r["error"]["code"] == "kms.not_authorized", r  # the AS diverted nothing yet
        lab_network.cdiv_as.forward(BOB_URI, CAROL_URI)
        assert lab_network.cdiv_as.divert(BOB_URI, offer["key_mgmt"]) == CAROL_URI
        r = d.call("mikey.answer", transfer_init=offer["key_mgmt"], cdiv_as=DEFAULT_CDIV_AS)
        assert r["error"]["code"] == "kms.not_authorized", r
        ans = c.request("mikey.answer", transfer_init=offer["key_mgmt"], cdiv_as=DEFAULT_CDIV_AS)
        assert ans["diverted_from"] == BOB_URI and ans["peer"] == ALICE_URI
        assert [q.answer for q in lab_network.cdiv_as.questions] == [False, False, True]
        done = a.request("mikey.complete", session=offer["session"], transfer_resp=ans["key_mgmt"])
        assert done["state"] == "active" and done["peer"] == CAROL_URI
        assert done["protection"]["peer_authenticated"] is True and done["protection"]["intended"] is False
        assert done["protection"]["diverted_from"] == BOB_URI  # named in C's TRANSFER_RESP, under its MAC
        _same_keys(a, offer["session"], c, ans["session"])
        r = c.call("mikey.answer", transfer_init=offer["key_mgmt"], diverted_from=BOB_URI)
        assert r["error"]["code"] == "api.bad_request" and r["error"]["details"]["param"] == "cdiv_as"


def test_cdiv_solution_2_caller_reoffers(agents) -> None:
    """C cannot resolve B's ticket: its Error message names C, the caller's mikey.complete says
    'diverted' to C, and the new offer to C completes."""
    ue_a, ue_c = agents("alice"), agents("carol")
    with ue_a.client() as a, ue_c.client() as c:
        offer = a.request("mikey.offer", responder=BOB_URI)
        r = c.call("mikey.answer", transfer_init=offer["key_mgmt"])
        err = r["error"]
        assert err["code"] == "kms.not_authorized", r
        assert err["details"]["diverted_to"] == CAROL_URI and err["details"]["diverted_from"] == BOB_URI
        msg = mikey.Message.decode(sdp.parse(err["details"]["key_mgmt"]))
        assert msg.one(mikey.Error).error_no == mikey.ERR_NOT_AUTHORIZED
        got = a.request("mikey.complete", session=offer["session"], transfer_resp=err["details"]["key_mgmt"])
        assert {k: v for k, v in got.items() if k not in ("id", "ok")} == {
            "session": offer["session"],
            "state": "diverted",
            "diverted_to": CAROL_URI,
            "diverted_from": BOB_URI,
        }
        r = a.call("session.keys", session=offer["session"])
        assert r["ok"] is False, r  # the first offer is over
        again = a.request("mikey.offer", responder=got["diverted_to"])
        ans = c.request("mikey.answer", transfer_init=again["key_mgmt"])
        done = a.request("mikey.complete", session=again["session"], transfer_resp=ans["key_mgmt"])
        assert done["state"] == "active" and done["peer"] == CAROL_URI and done["protection"]["intended"]
        assert "diverted_from" not in done["protection"]  # a call to C, not a diverted one
        _same_keys(a, again["session"], c, ans["session"])


def test_mikey_divert_by_the_called_party(agents) -> None:
    """B's agent authorizes C at the KMS (mikey.divert); C then answers B's call; D still cannot."""
    ue_a, ue_b, ue_c, ue_d = agents("alice"), agents("bob"), agents("carol"), agents("dave")
    with ue_a.client() as a, ue_b.client() as b, ue_c.client() as c, ue_d.client() as d:
        offer = a.request("mikey.offer", responder=BOB_URI)
        r = d.call("mikey.divert", transfer_init=offer["key_mgmt"], to=DAVE_URI)
        assert r["error"]["code"] == "kms.not_authorized", r
        ok = b.request("mikey.divert", transfer_init=offer["transfer_init"], to=CAROL_URI)
        assert ok["diverted_to"] == CAROL_URI and ok["authorized"] is True
        r = b.call("mikey.divert", transfer_init=offer["key_mgmt"], to="not a uri")
        assert r["error"]["code"] == "api.bad_request" and r["error"]["details"]["param"] == "to"
        ans = c.request("mikey.answer", transfer_init=offer["key_mgmt"])
        assert ans["diverted_from"] == BOB_URI  # the KMS tells C whose call it resolves
        done = a.request("mikey.complete", session=offer["session"], transfer_resp=ans["key_mgmt"])
        assert done["peer"] == CAROL_URI and done["protection"]["diverted_from"] == BOB_URI
        _same_keys(a, offer["session"], c, ans["session"])
        r = d.call("mikey.answer", transfer_init=offer["key_mgmt"])
        assert r["error"]["code"] == "kms.not_authorized"


def test_anonymous_caller_through_the_agents(agents) -> None:
    """The callee's softphone sees 'anonymous' and that the KMS checked the caller; A's identity is
    in nothing B's agent received or replied."""
    ue_a, ue_b = agents("alice"), agents("bob")
    with ue_a.client() as a, ue_b.client() as b:
        r = a.call("mikey.offer", responder=BOB_URI, anonymous=True, deferred=True)
        assert r["error"]["code"] == "api.bad_request" and r["error"]["details"]["param"] == "anonymous"
        offer = a.request("mikey.offer", responder=BOB_URI, anonymous=True)
        raw = sdp.parse(offer["key_mgmt"])
        assert b"alice" not in raw and b"+15550000001" not in raw
        ans = b.request("mikey.answer", transfer_init=offer["key_mgmt"])
        assert ans["peer"] == "anonymous" and ans["anonymous"] is True and ans["kms_vouched"] is True
        prot = ans["protection"]
        assert prot["peer"] == "anonymous" and prot["anonymous"] is True
        assert prot["peer_authenticated"] is True
        done = a.request("mikey.complete", session=offer["session"], transfer_resp=ans["key_mgmt"])
        assert done["state"] == "active" and done["peer"] == BOB_URI
        _same_keys(a, offer["session"], b, ans["session"])
        kb = b.request("session.keys", session=ans["session"])
        assert "alice" not in repr(ans) + repr(kb)
