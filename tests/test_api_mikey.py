"""MIKEY-TICKET through two real agents and the lab KMS/BSF on loopback: mikey.offer ->
mikey.answer -> mikey.complete, the keys both sides get, bootstrap status and events."""

from __future__ import annotations

import base64

import pytest

from tests.fixtures.daemon import ALICE, wait_until
from tests.fixtures.network import network_config
from ue_agent.api.client import ApiCallError
from ue_agent.kms import mikey, sdp

BOB = ALICE.parent / "bob.toml"
BOB_URI = "sip:bob@ims.mnc001.mcc001.3gppnetwork.org"


@pytest.fixture
def networked(agent_factory, lab_network):
    net = network_config(lab_network)
    return agent_factory(network=net), agent_factory(subscriber=BOB, network=net)


def test_mikey_ticket_end_to_end(networked) -> None:
    ue_a, ue_b = networked
    with ue_a.client() as a, ue_b.client() as b:
        a.request("subscribe", events=["bootstrap"])
        assert a.request("capabilities")["kms"]["available"] is True
        offer = a.request("mikey.offer", responder=BOB_URI, media=["audio"])
        assert offer["key_mgmt"].startswith("a=key-mgmt:mikey ")
        ev = a.next_event()
        assert ev["event"] == "bootstrap" and ev["ok"] is True and ev["btid"]
        ans = b.request("mikey.answer", transfer_init=offer["key_mgmt"])
        assert ans["peer"].startswith("sip:alice@") and ans["streams"] == ["audio"]
        done = a.request("mikey.complete", session=offer["session"], transfer_resp=ans["transfer_resp"])
        assert done["state"] == "active"
        ka = a.request("session.keys", session=offer["session"])
        kb = b.request("session.keys", session=ans["session"])
        st_a = a.request("status")
    assert ka["kind"] == kb["kind"] == "mikey"
    # each direction its own crypto session (RFC 6043 6.1.1): A's tx is B's rx and the reverse
    ta, tb = ka["streams"][0]["tx"], kb["streams"][0]["rx"]
    assert ta == tb and ka["streams"][0]["rx"] == kb["streams"][0]["tx"]
    assert ta["master_key"] != ka["streams"][0]["rx"]["master_key"]
    assert ka["streams"][0]["rx"]["ssrc"] != ta["ssrc"]
    assert len(base64.b64decode(ta["master_key"])) == 16
    assert st_a["bootstrap"]["state"] == "bootstrapped" and st_a["bootstrap"]["btid"] == ev["btid"]
    assert st_a["kms"]["state"] == "reachable"
    log = ue_a.log_text() + ue_b.log_text()
    for form in (ta["master_key"], base64.b64decode(ta["master_key"]).hex()):
        assert form not in log


def test_mikey_errors(networked, agent_factory) -> None:
    ue_a, ue_b = networked
    with ue_a.client() as a, ue_b.client() as b:
        offer = a.request("mikey.offer", responder=BOB_URI)
        for bad, code in (
            ("%%%", "api.bad_request"),
            (base64.b64encode(b"\x01\x00garbage").decode(), "mikey.malformed"),
            ("a=key-mgmt:sdes abc", "mikey."),
        ):
            r = b.call("mikey.answer", transfer_init=bad)
            assert r["ok"] is False and r["error"]["code"].startswith(code), r
        ans = b.request("mikey.answer", transfer_init=offer["transfer_init"])
        # the same TRANSFER_INIT again is a replay: refused, with the Error message of RFC 6043 5.4
        r = b.call("mikey.answer", transfer_init=offer["transfer_init"])
        assert r["ok"] is False and r["error"]["code"] == "mikey.replay", r
        err_line = r["error"]["details"]["key_mgmt"]
        err = mikey.Message.decode(sdp.parse(err_line))
        assert (
            err.header.data_type == mikey.DT_ERROR and err.one(mikey.Error).error_no == mikey.ERR_INVALID_TS
        )
        r = a.call("mikey.complete", session=offer["session"], transfer_resp=err_line)
        assert r["error"]["code"] == "mikey.peer_error" and r["error"]["details"]["error_no"] == [1], r
        r = a.call("mikey.complete", session="s-unknown", transfer_resp=ans["transfer_resp"])
        assert r["error"]["code"] == "media.unknown_session"
        tampered = bytearray(base64.b64decode(ans["transfer_resp"]))
        tampered[-1] ^= 1
        r = a.call(
            "mikey.complete", session=offer["session"], transfer_resp=base64.b64encode(tampered).decode()
        )
        assert r["ok"] is False and r["error"]["code"].startswith("mikey."), r
        # the offer survives a bad answer: the right one still completes it
        a.request("mikey.complete", session=offer["session"], transfer_resp=ans["transfer_resp"])
    lonely = agent_factory()  # no [network]: MIKEY-TICKET is not configured
    with lonely.client() as c, pytest.raises(ApiCallError) as info:
        c.request("mikey.offer", responder=BOB_URI)
    assert info.value.code == "kms.not_configured"


def test_bsf_unreachable(agent_factory) -> None:
    net = {"bsf_url": "http://127.0.0.1:9/", "kms_url": "http://127.0.0.1:9/"}
    ue = agent_factory(network=net)
    with ue.client() as c:
        r = c.call("mikey.offer", responder=BOB_URI)
        assert r["ok"] is False and r["error"]["code"].startswith("gba."), r
        assert c.request("status")["bootstrap"]["state"] == "none"


def test_bootstrap_at_start_leaves_the_first_call_only_the_kms(agent_factory, lab_network) -> None:
    net = network_config(lab_network, bootstrap="at-start")
    ue_a = agent_factory(network=net)
    ue_b = agent_factory(subscriber=BOB, network={**net, "bootstrap": "on-demand"})
    with ue_a.client() as a, ue_b.client() as b:
        # no call yet: alice's agent bootstraps by itself once the warm-up is done; bob's does not
        wait_until(lambda: a.request("status")["bootstrap"]["state"] == "bootstrapped")
        wait_until(lambda: "bootstrap at start: done" in ue_a.log_text())
        assert b.request("status")["bootstrap"]["state"] == "none"
        assert lab_network.requests == {"bsf": 2, "kms": 0}  # 401, then 200 (TS 24.109 4.4.4)
        offer = a.request("mikey.offer", responder=BOB_URI, media=["audio"])
        # the first call: only the KMS (its Digest challenge and the ticket request)
        assert lab_network.requests == {"bsf": 2, "kms": 2}
        assert a.request("status")["bootstrap"]["runs"] == 1
        ans = b.request("mikey.answer", transfer_init=offer["key_mgmt"])
        done = a.request("mikey.complete", session=offer["session"], transfer_resp=ans["transfer_resp"])
        assert done["state"] == "active"


def test_first_call_asks_the_kms_for_its_challenge_while_it_bootstraps(agent_factory, lab_network) -> None:
    """A NAF answers a request without credentials 401 whatever it carries (TS 24.109 B.3): the
    first offer fetches the KMS's challenge while it bootstraps, so after the bootstrap one KMS
    round trip is left, not two. The BSF here is 0.2 s away, as over a radio network."""
    lab_network.faults.bsf_delay_s = 0.2
    ue = agent_factory(network=network_config(lab_network))
    with ue.client() as a:
        a.request("mikey.offer", responder=BOB_URI, media=["audio"])
        assert lab_network.answered == [("kms", 401), ("bsf", 401), ("bsf", 200), ("kms", 200)]
        # the next ticket (another peer) goes out answered with the cached challenge: one request
        a.request("mikey.offer", responder="sip:carol@ims.mnc001.mcc001.3gppnetwork.org", media=["audio"])
        assert lab_network.answered[4:] == [("kms", 200)]


def test_bootstrap_at_start_is_renewed_before_the_lifetime_ends(agent_factory, lab_network) -> None:
    """With bootstrap = "at-start" the agent bootstraps again, with no call, when the GBA
    client would stop using the bootstrap (its lifetime less the 60 s margin): here the BSF
    gives 64 s, so every ~4 s. A call then still goes straight to the KMS."""
    lab_network.bsf.lifetime_s = 64
    ue = agent_factory(network=network_config(lab_network, bootstrap="at-start"))
    with ue.client() as a:
        wait_until(lambda: a.request("status")["bootstrap"].get("runs") == 1)
        first = a.request("status")["bootstrap"]["btid"]
        # the log line comes after the status counts the run: wait for both
        wait_until(lambda: "bootstrap renewal: done" in ue.log_text())
        renewed = a.request("status")["bootstrap"]
        assert renewed["runs"] >= 2 and renewed["btid"] != first
        bsf = lab_network.requests["bsf"]
        assert bsf == 2 * renewed["runs"] and lab_network.requests["kms"] == 0
        a.request("mikey.offer", responder=BOB_URI, media=["audio"])
        assert lab_network.requests["bsf"] == bsf  # the call did not wait on the BSF


def test_bootstrap_at_start_that_fails_leaves_it_to_the_first_call(agent_factory) -> None:
    net = {"bsf_url": "http://127.0.0.1:9/", "kms_url": "http://127.0.0.1:9/", "bootstrap": "at-start"}
    ue = agent_factory(network=net)
    wait_until(lambda: "bootstrap at start: gba.bsf_unreachable" in ue.log_text())
    with ue.client() as c:
        assert c.request("status")["bootstrap"]["state"] == "none"
        r = c.call("mikey.offer", responder=BOB_URI)
        assert r["ok"] is False and r["error"]["code"] == "gba.bsf_unreachable", r
