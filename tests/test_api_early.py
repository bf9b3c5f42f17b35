"""Early media through real agents (issue 11): a 183 with SDP before the 200 OK, the INVITE
forked to two early dialogs; libsrtp (pylibsrtp) early media from both decrypts at A with
the keys session.keys gives per dialog, and the loser's keys are released at the final
answer. SDES peer to peer, and MIKEY-TICKET forks on the lab network."""

from __future__ import annotations

import base64

import pytest

from tests.fixtures.daemon import ALICE
from tests.fixtures.network import network_config
from ue_agent.api.client import ApiCallError

pylibsrtp = pytest.importorskip("pylibsrtp")
BOB = ALICE.parent / "bob.toml"
CAROL = ALICE.parent / "carol.toml"
BOB_URI = "sip:bob@ims.mnc001.mcc001.3gppnetwork.org"
CAROL_URI = "sip:001010000000003@ims.mnc001.mcc001.3gppnetwork.org"
PROFILE = pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80


def session(k: dict, outbound: bool):
    key = base64.b64decode(k["master_key"]) + base64.b64decode(k["master_salt"])
    kind = pylibsrtp.Policy.SSRC_ANY_OUTBOUND if outbound else pylibsrtp.Policy.SSRC_ANY_INBOUND
    return pylibsrtp.Session(pylibsrtp.Policy(key=key, ssrc_type=kind, srtp_profile=PROFILE))


def early_media(sender_tx: dict, receiver_rx: dict, ssrc: int, n: int = 50) -> None:
    """The callee's ringback: n SRTP packets that A must decrypt with the dialog's rx key."""
    tx, rx = session(sender_tx, True), session(receiver_rx, False)
    for seq in range(n):
        rtp = bytes([0x80, 0x00]) + seq.to_bytes(2, "big") + b"\0\0\0\1" + ssrc.to_bytes(4, "big")
        rtp += b"ringback" * 5
        assert rx.unprotect(tx.protect(rtp)) == rtp


def test_sdes_forked_early_media(daemon_factory) -> None:
    ue_a, ue_b, ue_c = daemon_factory(), daemon_factory(subscriber=BOB), daemon_factory(subscriber=CAROL)
    with ue_a.client() as a, ue_b.client() as b, ue_c.client() as c:
        a.request("subscribe", events=["session"])
        offer = a.request("sdes.offer", media=["audio"], suites=["AES_CM_128_HMAC_SHA1_80"])
        sid, lines = offer["session"], offer["streams"][0]["lines"]
        # the INVITE forks: B and C each send a 183 with SDP (two early dialogs)
        ans_b = b.request("sdes.answer", offer=[lines])
        ans_c = c.request("sdes.answer", offer=[lines])
        eb = a.request(
            "sdes.answer", session=sid, answer=[ans_b["streams"][0]["lines"]], early=True, dialog="tag-b"
        )
        ec = a.request(
            "sdes.answer", session=sid, answer=[ans_c["streams"][0]["lines"]], early=True, dialog="tag-c"
        )
        assert eb["state"] == ec["state"] == "early" and eb["dialog"] == "tag-b"
        assert eb["protection"]["scope"] == "e2e-sdes"
        ev = a.next_event()
        assert ev["event"] == "session" and ev["state"] == "early" and ev["dialog"] == "tag-b"
        ka_b = a.request("session.keys", session=sid, dialog="tag-b")
        ka_c = a.request("session.keys", session=sid, dialog="tag-c")
        assert ka_b["state"] == "early" and ka_b["dialog"] == "tag-b"
        kb = b.request("session.keys", session=ans_b["session"])
        kc = c.request("session.keys", session=ans_c["session"])
        # early media from both decrypts at A; each dialog its own rx key, one offer's tx
        early_media(kb["streams"][0]["tx"], ka_b["streams"][0]["rx"], 0x1111)
        early_media(kc["streams"][0]["tx"], ka_c["streams"][0]["rx"], 0x2222)
        assert ka_b["streams"][0]["rx"] != ka_c["streams"][0]["rx"]
        assert ka_b["streams"][0]["tx"] == ka_c["streams"][0]["tx"]
        # the 200 OK comes from B, repeating its 183's SDP: B's keys confirmed, C's released
        done = a.request("sdes.answer", session=sid, answer=[ans_b["streams"][0]["lines"]])
        assert done["state"] == "active" and done["early"] == {"confirmed": "tag-b", "released": ["tag-c"]}
        final = a.request("session.keys", session=sid)
        assert final["streams"][0]["rx"] == ka_b["streams"][0]["rx"]
        early_media(kb["streams"][0]["tx"], final["streams"][0]["rx"], 0x1111)
        with pytest.raises(ApiCallError) as info:  # the loser's keys are gone
            a.request("session.keys", session=sid, dialog="tag-c")
        assert info.value.code == "media.unknown_session"
        # the loser's key can never be registered again (its fingerprint was retired)
        r = a.call("sdes.answer", offer=[ans_c["streams"][0]["lines"]])
        assert r["ok"] is False and r["error"]["code"] == "media.key_reuse", r


def test_sdes_final_answer_updates_early_keys(daemon_factory) -> None:
    """The 200 OK carries other keys than the 183 of the same dialog: they replace them."""
    ue_a, ue_b = daemon_factory(policy={"early_media_plaintext": "refuse"}), daemon_factory(subscriber=BOB)
    ue_b2 = daemon_factory(subscriber=BOB)  # the answerer's new SDP (its agent sees our key once)
    with ue_a.client() as a, ue_b.client() as b, ue_b2.client() as b2:
        a.request("subscribe", events=["security.warning"])
        offer = a.request("sdes.offer", media=["audio"])
        sid, lines = offer["session"], offer["streams"][0]["lines"]
        # a 183 without crypto: plain early media, refused by the policy
        r = a.call("sdes.answer", session=sid, answer=[["a=rtpmap:0 PCMU/8000"]], early=True)
        assert r["ok"] is False and r["error"]["code"] == "policy.refused", r
        assert a.next_event()["kind"] == "early_media_plaintext"
        first = b.request("sdes.answer", offer=[lines])
        a.request("sdes.answer", session=sid, answer=[first["streams"][0]["lines"]], early=True, dialog="d1")
        early_rx = a.request("session.keys", session=sid, dialog="d1")["streams"][0]["rx"]
        second = b2.request("sdes.answer", offer=[lines])
        done = a.request("sdes.answer", session=sid, answer=[second["streams"][0]["lines"]], dialog="d1")
        assert done["early"] == {"released": ["d1"], "updated": "d1"}
        rx = a.request("session.keys", session=sid)["streams"][0]["rx"]
        assert (
            rx != early_rx and rx == b2.request("session.keys", session=second["session"])["streams"][0]["tx"]
        )


def test_mikey_forked_early_media(daemon_factory, lab_network) -> None:
    """A TRANSFER_RESP in each fork's 183: each dialog its own keys (RFC 6043 5.1.1 forking);
    the 200 OK from C confirms C's, B's are released."""
    net = network_config(lab_network)
    ue_a = daemon_factory(network=net)
    ue_b, ue_c = daemon_factory(subscriber=BOB, network=net), daemon_factory(subscriber=CAROL, network=net)
    with ue_a.client() as a, ue_b.client() as b, ue_c.client() as c:
        offer = a.request("mikey.offer", responder=BOB_URI, recipients=[BOB_URI, CAROL_URI])
        sid = offer["session"]
        rb = b.request("mikey.answer", transfer_init=offer["key_mgmt"])
        rc = c.request("mikey.answer", transfer_init=offer["key_mgmt"])
        eb = a.request(
            "mikey.complete", session=sid, transfer_resp=rb["transfer_resp"], early=True, dialog="b"
        )
        ec = a.request(
            "mikey.complete", session=sid, transfer_resp=rc["transfer_resp"], early=True, dialog="c"
        )
        assert eb["peer"] == BOB_URI and ec["peer"] == CAROL_URI and ec["state"] == "early"
        ka_b = a.request("session.keys", session=sid, dialog="b")
        ka_c = a.request("session.keys", session=sid, dialog="c")
        kb = b.request("session.keys", session=rb["session"])
        kc = c.request("session.keys", session=rc["session"])
        early_media(kb["streams"][0]["tx"], ka_b["streams"][0]["rx"], kb["streams"][0]["tx"]["ssrc"])
        early_media(kc["streams"][0]["tx"], ka_c["streams"][0]["rx"], kc["streams"][0]["tx"]["ssrc"])
        done = a.request("mikey.complete", session=sid, transfer_resp=rc["transfer_resp"])
        assert done["early"] == {"confirmed": "c", "released": ["b"]} and done["peer"] == CAROL_URI
        assert a.request("session.keys", session=sid)["streams"][0]["rx"] == ka_c["streams"][0]["rx"]
        with pytest.raises(ApiCallError):
            a.request("session.keys", session=sid, dialog="b")
