"""What the user is told about a session's protection (issue 11): scope, mechanism, the
authenticated peer, whether it is the party called; the [policy] warnings and refusals; all
through real agents on the lab network (MIKEY-TICKET) or peer to peer (SDES)."""

from __future__ import annotations

import signal
import time

import pytest

from tests.fixtures.daemon import ALICE
from tests.fixtures.network import network_config
from ue_agent.api.client import ApiCallError

BOB = ALICE.parent / "bob.toml"
CAROL = ALICE.parent / "carol.toml"
BOB_URI = "sip:bob@ims.mnc001.mcc001.3gppnetwork.org"
CAROL_URI = "sip:001010000000003@ims.mnc001.mcc001.3gppnetwork.org"


def net_of(lab_network) -> dict[str, object]:
    return network_config(lab_network)


def events_of(client, name: str) -> list[dict]:
    """The events of ``name`` already received (the client buffers them while it waits)."""
    out = [ev for ev in client.events if ev["event"] == name]
    client.events.clear()
    return out


@pytest.mark.parametrize("rule", ["called", "recipients"])
def test_caller_is_told_who_answered(daemon_factory, lab_network, rule) -> None:
    """A calls B with recipients [B, C]; C answers: mikey.complete names C; with the policy
    asking for the party called, a responder_mismatch warning reaches A's client."""
    net = net_of(lab_network)
    ue_a = daemon_factory(network=net, policy={"responder": rule})
    ue_c = daemon_factory(subscriber=CAROL, network=net)
    with ue_a.client() as a, ue_c.client() as c:
        a.request("subscribe", events=["security.warning", "session"])
        offer = a.request("mikey.offer", responder=BOB_URI, recipients=[BOB_URI, CAROL_URI])
        ans = c.request("mikey.answer", transfer_init=offer["key_mgmt"])
        assert ans["protection"]["peer"].startswith("sip:alice@")
        assert ans["protection"]["peer_authenticated"] is True and ans["protection"]["scope"] == "e2e-kms"
        done = a.call("mikey.complete", session=offer["session"], transfer_resp=ans["transfer_resp"])
        assert done["ok"], ue_a.log_text()[-3000:]
        assert done["peer"] == CAROL_URI
        p = done["protection"]
        assert p["scope"] == "e2e-kms" and p["mechanism"] == "mikey-ticket"
        assert p["peer"] == CAROL_URI and p["peer_authenticated"] is True
        assert p["requested"] == BOB_URI and p["intended"] is False and p["in_recipients"] is True
        warnings = events_of(a, "security.warning")
        if rule == "called":
            (w,) = warnings
            assert w["kind"] == "responder_mismatch" and w["session"] == offer["session"]
            assert w["peer"] == CAROL_URI and w["requested"] == BOB_URI and w["action"] == "warned"
        else:  # C is one of the recipients: nothing to warn about
            assert warnings == []
        keys = a.request("session.keys", session=offer["session"])
        assert keys["protection"] == p


def test_session_event_and_refused_responder(daemon_factory, lab_network) -> None:
    net = net_of(lab_network)
    ue_a = daemon_factory(network=net, policy={"responder": "called", "responder_mismatch": "refuse"})
    ue_c = daemon_factory(subscriber=CAROL, network=net)
    ue_b = daemon_factory(subscriber=BOB, network=net)
    with ue_a.client() as a, ue_b.client() as b, ue_c.client() as c:
        a.request("subscribe", events=["session"])
        # B answers: the party called, keys handed out, a session event with the protection
        offer = a.request("mikey.offer", responder=BOB_URI, recipients=[BOB_URI, CAROL_URI])
        ans = b.request("mikey.answer", transfer_init=offer["key_mgmt"])
        done = a.request("mikey.complete", session=offer["session"], transfer_resp=ans["transfer_resp"])
        assert done["protection"]["intended"] is True
        ev = a.next_event()
        assert ev["event"] == "session" and ev["session"] == offer["session"] and ev["state"] == "active"
        assert ev["protection"]["peer"] == BOB_URI
        # C answers the next call: refused, no keys, a stable code
        offer = a.request("mikey.offer", responder=BOB_URI, recipients=[BOB_URI, CAROL_URI])
        ans = c.request("mikey.answer", transfer_init=offer["key_mgmt"])
        r = a.call("mikey.complete", session=offer["session"], transfer_resp=ans["transfer_resp"])
        assert r["ok"] is False and r["error"]["code"] == "policy.refused", r
        assert r["error"]["details"]["kinds"] == ["responder_mismatch"]
        r = a.call("session.keys", session=offer["session"])
        assert r["error"]["code"] == "policy.refused" and "master_key" not in str(r)
        ev = a.next_event()
        assert ev["event"] == "session" and ev["state"] == "policy_refused"
        assert a.request("session.close", session=offer["session"])["state"] == "closed"


def sdes_call(a, b, answer_e2ae: bool = False):
    offer = a.request("sdes.offer", media=["audio"], suites=["AES_CM_128_HMAC_SHA1_80"])
    ans = b.request("sdes.answer", offer=[offer["streams"][0]["lines"]])
    lines = ans["streams"][0]["lines"] + (["a=3ge2ae:applied"] if answer_e2ae else [])
    return offer, a.call("sdes.answer", session=offer["session"], answer=[lines])


def test_require_e2e_with_an_sdes_answer_warns_or_refuses(daemon_factory) -> None:
    """Policy "require e2e" and an SDES-only answer: the warning, or the refusal, as configured;
    a reload (SIGHUP) switches between them."""
    ue_a = daemon_factory(policy={"minimum": {"audio": "e2e"}})
    ue_b = daemon_factory(subscriber=BOB)
    with ue_a.client() as a, ue_b.client() as b:
        a.request("subscribe", events=["security.warning"])
        offer, done = sdes_call(a, b)
        assert done["ok"] and done["protection"]["scope"] == "e2e-sdes"
        assert done["protection"]["media"] == {"audio": "e2e-sdes"} and done["protection"]["peer"] is None
        (w,) = events_of(a, "security.warning")
        assert w["kind"] == "downgraded" and w["media"] == "audio" and w["minimum"] == "e2e"
        assert w["scope"] == "e2e-sdes" and w["action"] == "warned" and w["session"] == offer["session"]
        assert a.request("session.keys", session=offer["session"])["streams"][0]["tx"]["master_key"]
        # e2ae applied (a=3ge2ae:applied in the answer): reported as e2ae
        _, done = sdes_call(a, b, answer_e2ae=True)
        assert done["protection"]["scope"] == "e2ae"
        (w,) = events_of(a, "security.warning")
        assert w["kind"] == "downgraded" and w["scope"] == "e2ae"
        # refuse, after a reload
        ue_a.config.write_text(
            ue_a.config.read_text().replace("[policy]\n", '[policy]\nbelow_minimum = "refuse"\n')
        )
        ue_a.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while "config reloaded" not in ue_a.log_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        offer, done = sdes_call(a, b)
        assert done["ok"] is False and done["error"]["code"] == "policy.refused", done
        assert done["error"]["details"]["kinds"] == ["downgraded"]
        (w,) = events_of(a, "security.warning")
        assert w["kind"] == "downgraded" and w["action"] == "refused"
        with pytest.raises(ApiCallError) as info:
            a.request("session.keys", session=offer["session"])
        assert info.value.code == "policy.refused"


def test_plain_rtp_answer_is_unprotected(daemon_factory) -> None:
    ue_a = daemon_factory()
    with ue_a.client() as a:
        a.request("subscribe", events=["security.warning", "session"])
        offer = a.request("sdes.offer", media=["audio", "video"])
        peer_key = "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz"
        done = a.request("sdes.answer", session=offer["session"], answer=[[peer_key], []])
        assert done["protection"]["media"] == {"audio": "e2e-sdes", "video": "none"}
        assert done["protection"]["scope"] == "none" and done["streams"] == ["audio"]
        (w,) = events_of(a, "security.warning")
        assert w["kind"] == "unprotected" and w["media"] == "video" and w["minimum"] == "e2ae"
        # nothing keyed at all: the session ends, unprotected
        offer = a.request("sdes.offer", media=["audio"])
        done = a.request("sdes.answer", session=offer["session"], answer=[["a=rtpmap:0 PCMU/8000"]])
        assert done["state"] == "closed" and done["protection"]["scope"] == "none"
        assert [w["kind"] for w in events_of(a, "security.warning")] == ["unprotected"]
        assert a.request("session.close", session=offer["session"])["state"] == "closed"


def test_bad_policy_is_a_config_error(daemon_factory) -> None:
    from ue_agent.config import parse_config
    from ue_agent.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        parse_config({"card": {"subscriber": "x"}, "policy": {"minimum": {"audio": "best"}}})
    assert info.value.code == "config.invalid" and info.value.details["key"] == "policy.minimum.audio"
    with pytest.raises(ConfigError) as info:
        parse_config({"card": {"subscriber": "x"}, "policy": {"respond": "any"}})
    assert info.value.code == "config.unknown_key"
