"""SDES offer/answer and the session.* operations through the real daemon; keys checked with
pylibsrtp; SRVCC from a pty modem's +CIREPH releases them."""

from __future__ import annotations

import base64
import signal
import time

import pytest

from tests.fixtures.daemon import ALICE
from ue_agent.api.client import ApiCallError

BOB = ALICE.parent / "bob.toml"


@pytest.fixture
def two_ues(agent_factory):
    """UE-A (alice) and UE-B (bob): two agents, as on two handsets."""
    return agent_factory(), agent_factory(subscriber=BOB)


@pytest.fixture
def two_ue_processes(daemon_factory):
    """UE-A and UE-B as ``ue-agent run`` processes (for what a signal does)."""
    return daemon_factory(), daemon_factory(subscriber=BOB)


def negotiate(a, b) -> tuple[str, str]:
    """A offers, B answers, A takes the answer: two session ids."""
    offer = a.request("sdes.offer", media=["audio"], suites=["AES_CM_128_HMAC_SHA1_80"])
    assert offer["streams"][0]["media"] == "audio"
    lines = offer["streams"][0]["lines"]
    assert lines[0].startswith("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:")
    ans = b.request("sdes.answer", offer=[lines])
    done = a.request("sdes.answer", session=offer["session"], answer=[ans["streams"][0]["lines"]])
    assert done["state"] == "active"
    return offer["session"], ans["session"]


def srtp_pair(tx: dict, rx: dict):
    pylibsrtp = pytest.importorskip("pylibsrtp")
    profile = pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80

    def policy(k: dict, direction):
        key = base64.b64decode(k["master_key"]) + base64.b64decode(k["master_salt"])
        return pylibsrtp.Policy(key=key, ssrc_type=direction, srtp_profile=profile)

    sender = pylibsrtp.Session(policy(tx, pylibsrtp.Policy.SSRC_ANY_OUTBOUND))
    receiver = pylibsrtp.Session(policy(rx, pylibsrtp.Policy.SSRC_ANY_INBOUND))
    return sender, receiver


RTP = bytes.fromhex("80000001000000010000cafe") + b"hello media" * 4


def test_sdes_session_keys_work_with_libsrtp(two_ues) -> None:
    ue_a, ue_b = two_ues
    with ue_a.client() as a, ue_b.client() as b:
        sa, sb = negotiate(a, b)
        ka, kb = a.request("session.keys", session=sa), b.request("session.keys", session=sb)
        st = a.request("status")
    assert ka["kind"] == "sdes" and ka["state"] == "active" and ka["handover"] == "active"
    (stream_a,), (stream_b,) = ka["streams"], kb["streams"]
    assert stream_a["tx"] == stream_b["rx"] and stream_a["rx"] == stream_b["tx"]
    assert stream_a["tx"]["master_key"] != stream_a["rx"]["master_key"]
    sender, receiver = srtp_pair(stream_a["tx"], stream_b["rx"])
    assert receiver.unprotect(sender.protect(RTP)) == RTP
    assert st["sessions"]["open"] == 1 and st["sessions"]["by_state"] == {"active": 1}
    log = ue_a.log_text() + ue_b.log_text()
    for k in (stream_a["tx"], stream_a["rx"]):
        for field in ("master_key", "master_salt"):
            raw = base64.b64decode(k[field])
            for form in (k[field], raw.hex(), raw.hex().upper()):
                assert form not in log


def test_report_close_and_reuse_guard(two_ues) -> None:
    ue_a, ue_b = two_ues
    with ue_a.client() as a, ue_b.client() as b:
        a.request("subscribe", events=["security.warning"])
        sa, sb = negotiate(a, b)
        r = a.request("session.report", session=sa, ssrc=0xCAFE, index=70000)
        assert (r["roc"], r["index"], r["seq"]) == (1, 70000, 70000 & 0xFFFF)
        keys = a.request("session.keys", session=sa)
        assert keys["ssrcs"] == [{"ssrc": 0xCAFE, "roc": 1, "index": 70000, "seq": 70000 & 0xFFFF}]
        with pytest.raises(ApiCallError) as info:
            a.request("session.report", session=sa, ssrc=0xCAFE, index=5)
        assert info.value.code == "media.key_reuse"
        ev = a.next_event()
        assert ev["event"] == "security.warning" and ev["kind"] == "key_reuse" and ev["session"] == sa
        with pytest.raises(ApiCallError) as info:
            a.request("session.keys", session=sa)
        assert info.value.code == "media.key_reuse"
        assert b.request("session.close", session=sb)["state"] == "closed"
        for op in ("session.keys", "session.close"):
            with pytest.raises(ApiCallError) as info:
                b.request(op, session=sb)
            assert info.value.code == "media.unknown_session"
        with pytest.raises(ApiCallError) as info:
            a.request("session.keys", session="nope")
        assert info.value.code == "media.unknown_session"


def test_sdes_errors(lab_agent) -> None:
    with lab_agent.client() as c:
        cases = [
            ({"offer": [["a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:short"]]}, "media.sdes_malformed"),
            ({"offer": [["a=rtpmap:0 PCMU/8000"]]}, "media.no_common_suite"),
            ({"session": "s-none", "answer": [["a=crypto:1 X inline:AAAA"]]}, "media.unknown_session"),
            ({"answer": [["x"]]}, "api.bad_request"),
            ({}, "api.bad_request"),
            ({"offer": "a=crypto:1"}, "api.bad_request"),
        ]
        for params, code in cases:
            r = c.call("sdes.answer", **params)
            assert r["ok"] is False and r["error"]["code"] == code, (params, r)
        r = c.call("sdes.offer", suites=["ROT13"])
        assert r["error"]["code"].startswith("media."), r
        r = c.call("sdes.offer", session="bad id!")
        assert r["error"]["code"] == "media.bad_session"
        first = c.request("sdes.offer", session="call-1")
        assert c.call("sdes.offer", session="call-1")["error"]["code"] == "media.session_exists"
        assert c.request("session.close", session=first["session"])["state"] == "closed"
        assert c.request("status")["sessions"]["pending_offers"] == 0


def test_capabilities(lab_agent) -> None:
    with lab_agent.client() as c:
        caps = c.request("capabilities")
    assert "AES_CM_128_HMAC_SHA1_80" in caps["sdes"]["suites"]
    assert caps["kms"]["available"] is False  # no kms_url in this config
    assert caps["e2ae"]["security_client"].startswith("sdes-srtp;mediasec")
    assert caps["aka"]["application"] == "isim"


def test_sigterm_zeroizes_open_sessions(two_ue_processes) -> None:
    ue_a, ue_b = two_ue_processes
    with ue_a.client() as a, ue_b.client() as b:
        negotiate(a, b)
        a.request("sdes.offer", media=["audio", "video"])  # pending offer keys too
        assert ue_a.stop(signal.SIGTERM) == 0  # the offer's connection still open
    log = ue_a.log_text()
    line = next(ln for ln in log.splitlines() if "keys zeroized" in ln)
    zeroized = int(line.split("stopped: ")[1].split(" keys")[0])
    # the session's tx and rx (key + salt each) = 4, plus the pending offer's streams x suites x 2
    assert zeroized >= 4 + 2 * 2 and line.endswith(", 0 left")


def test_srvcc_from_the_modem_releases_session_keys(agent_factory, modem_factory) -> None:
    sim = modem_factory("generic-at")
    daemon = agent_factory(modem={"port": str(sim.link_path)})
    peer = agent_factory(subscriber=BOB)
    with daemon.client() as a, peer.client() as b:
        a.request("subscribe", events=["handover"])
        sa, sb = negotiate(a, b)
        # the agent enables +CIREP while it starts; poll the simulator until it has
        for _ in range(200):
            if sim.srvcc(0):
                break
            time.sleep(0.05)
        else:
            pytest.fail("the agent never enabled +CIREP:\n" + daemon.log_text())
        ev = a.next_event()
        assert ev["event"] == "handover" and ev["kind"] == "srvcc" and ev["meaning"] == "started"
        assert ev["sessions"] == {sa: "handover_pending"}
        assert a.request("session.keys", session=sa)["state"] == "handover_pending"
        sim.srvcc(2)  # cancelled: the call stays on PS with its keys
        assert a.next_event()["meaning"] == "cancelled"
        assert a.request("session.keys", session=sa)["state"] == "active"
        sim.srvcc(0)
        a.next_event()
        sim.srvcc(1)  # success: the voice leg is on CS, PS keys are gone
        ev = a.next_event()
        assert ev["meaning"] == "success" and ev["phase"] == "cs" and ev["sessions"][sa] == "handed_over"
        with pytest.raises(ApiCallError) as info:
            a.request("session.keys", session=sa)
        assert info.value.code == "media.session_released"
        assert a.request("status")["handover"]["phase"] == "cs"
