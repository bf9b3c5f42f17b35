"""SRVCC per media through the real daemon (issue 11): a MIKEY-TICKET call with audio + MSRP,
the modem's +CIREPH drives it. Audio keys are released at success with protection_lost,
MSRP keeps working over TLS-PSK (openssl), and no (key, SSRC, index) is used twice across
cancel, failure, success and the return to PS."""

from __future__ import annotations

import base64
import time

import pytest

from tests.fixtures.daemon import ALICE
from tests.fixtures.network import network_config
from tests.helpers_openssl import OPENSSL, PskServer, psk_client
from ue_agent.api.client import ApiCallError
from ue_agent.media.keys import TlsPskKeys
from ue_agent.secret import Secret

pylibsrtp = pytest.importorskip("pylibsrtp")
BOB = ALICE.parent / "bob.toml"
BOB_URI = "sip:bob@ims.mnc001.mcc001.3gppnetwork.org"
PROFILE = pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80


def net_of(lab_network) -> dict[str, object]:
    return network_config(lab_network)


def srtp_session(k: dict, outbound: bool):
    key = base64.b64decode(k["master_key"]) + base64.b64decode(k["master_salt"])
    kind = pylibsrtp.Policy.SSRC_ANY_OUTBOUND if outbound else pylibsrtp.Policy.SSRC_ANY_INBOUND
    return pylibsrtp.Session(pylibsrtp.Policy(key=key, ssrc_type=kind, srtp_profile=PROFILE))


class AudioSender:
    """A's media stack for one audio stream: sends from where the agent says the SSRC is,
    records every (key, SSRC, index) it protects, and reports the highest index."""

    def __init__(self, triples: list[tuple[str, int, int]]) -> None:
        self.triples = triples

    def send(self, client, sid: str, rx_keys: dict, n: int) -> None:
        keys = client.request("session.keys", session=sid)
        (audio,) = [s for s in keys["streams"] if s["media"] == "audio"]
        tx, ssrc = audio["tx"], audio["tx"]["ssrc"]
        floor = {s["ssrc"]: s["index"] for s in keys["ssrcs"]}.get(ssrc, -1)
        start = floor + 1  # a (re)started stack continues after the highest index reported
        sender, receiver = srtp_session(tx, True), srtp_session(rx_keys, False)
        for index in range(start, start + n):
            seq = index & 0xFFFF
            assert index >> 16 == 0  # these tests stay in ROC 0
            rtp = bytes([0x80, 0x00]) + seq.to_bytes(2, "big") + b"\0\0\0\1" + ssrc.to_bytes(4, "big")
            rtp += b"voice" * 8
            srtp = sender.protect(rtp)
            assert receiver.unprotect(srtp) == rtp  # B decrypts what A sent
            self.triples.append((tx["master_key"], ssrc, index))
        client.request("session.report", session=sid, ssrc=ssrc, index=start + n - 1)


def psk_of(k: dict) -> TlsPskKeys:
    return TlsPskKeys(k["identity"], Secret(base64.b64decode(k["key"])))


@pytest.mark.skipif(OPENSSL is None, reason="openssl not installed")
def test_srvcc_per_media(daemon_factory, lab_network, modem_factory) -> None:
    sim = modem_factory("generic-at")
    net = net_of(lab_network)
    ue_a = daemon_factory(network=net, modem={"port": str(sim.link_path)})
    ue_b = daemon_factory(subscriber=BOB, network=net)
    triples: list[tuple[str, int, int]] = []
    audio = AudioSender(triples)
    with ue_a.client() as a, ue_b.client() as b:
        a.request("subscribe", events=["handover", "security.warning", "session"])
        offer = a.request("mikey.offer", responder=BOB_URI, media=["audio", "message"])
        ans = b.request("mikey.answer", transfer_init=offer["key_mgmt"], media=["audio", "message"])
        sid = offer["session"]
        done = a.request("mikey.complete", session=sid, transfer_resp=ans["transfer_resp"])
        assert done["protection"]["media"] == {"audio": "e2e-kms", "message": "e2e-kms"}
        kb = b.request("session.keys", session=ans["session"])
        b_audio_rx = kb["streams"][0]["rx"]
        audio.send(a, sid, b_audio_rx, 100)
        for _ in range(200):  # the agent enables +CIREP while it starts
            if sim.srvcc(0):
                break
            time.sleep(0.05)
        else:
            pytest.fail("the agent never enabled +CIREP:\n" + ue_a.log_text())

        def next_of(name: str) -> dict:
            while True:
                ev = a.next_event()
                if ev["event"] == name:
                    return ev

        assert next_of("handover")["sessions"] == {sid: "handover_pending"}
        sim.srvcc(2)  # cancelled: the PS keys resume, the stack continues under the guard
        assert next_of("handover")["sessions"] == {sid: "active"}
        audio.send(a, sid, b_audio_rx, 100)
        sim.srvcc(0)
        next_of("handover")
        sim.srvcc(3)  # failure: the same
        assert next_of("handover")["meaning"] == "failure"
        audio.send(a, sid, b_audio_rx, 100)
        sim.srvcc(0)
        next_of("handover")
        sim.srvcc(1)  # success: audio to CS, MSRP stays on its PS bearer
        ev = next_of("handover")
        assert ev["meaning"] == "success" and ev["sessions"] == {sid: "active"}
        w = next_of("security.warning")
        assert w["kind"] == "protection_lost" and w["session"] == sid and w["media"] == ["audio"]
        assert w["protection"] == {"scope": "none", "mechanism": "cs-radio"}
        assert w["before"] == {"audio": "e2e-kms"}
        ev = next_of("session")
        assert ev["protection"]["media"] == {"audio": "cs-radio", "message": "e2e-kms"}
        assert ev["protection"]["scope"] == "none"
        keys = a.request("session.keys", session=sid)
        assert [s["media"] for s in keys["streams"]] == ["message"] and keys["state"] == "active"
        # MSRP keeps working: TLS-PSK between A's and B's keys of the message stream
        psk_a, psk_b = psk_of(keys["streams"][0]["tx"]), psk_of(kb["streams"][1]["tx"])
        with PskServer(psk_b, "1.3") as server:
            out = psk_client(server.port, psk_a, "1.3", "msrp after srvcc\nCLOSE\n")
            assert "ccvrs retfa prsm" in out.stdout, out.stdout + out.stderr + server.finish()
        # back to PS: the call is re-keyed (a new offer/answer), never the old audio key
        offer2 = a.request("mikey.offer", responder=BOB_URI, media=["audio"])
        ans2 = b.request("mikey.answer", transfer_init=offer2["key_mgmt"])
        a.request("mikey.complete", session=offer2["session"], transfer_resp=ans2["transfer_resp"])
        kb2 = b.request("session.keys", session=ans2["session"])
        audio.send(a, offer2["session"], kb2["streams"][0]["rx"], 100)
        assert a.request("status")["handover"]["phase"] == "ps"
        with pytest.raises(ApiCallError):  # the first session's audio stays released
            a.request("session.report", session=sid, ssrc=triples[0][1], index=400)
    assert len(triples) == 400 and len(set(triples)) == len(triples)
    assert len({t[0] for t in triples}) == 2  # the first call's key, then the re-keyed one
