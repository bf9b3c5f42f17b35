"""A conference of three through the lab focus (MRFC/MRFP), with real agents on their sockets and
the lab BSF/KMS/focus over loopback HTTP: alice and bob dial in, carol is dialled out; every member
decrypts the others' SRTP (pylibsrtp) relayed by the MRFP; each join and leave re-keys everyone
left with a ``session`` event naming the generation; after carol leaves she cannot decrypt the new
generation; SSRCs are unique; BFCP has a TLS PSK shared with the focus only."""

from __future__ import annotations

import base64
import json
import urllib.parse
import urllib.request

import pylibsrtp
import pytest

from tests.fixtures.daemon import ALICE
from tests.fixtures.network import lab_subscriber, lab_subscribers
from tests.helpers_openssl import OPENSSL, PskServer, psk_client
from ue_agent.lab.network import LabNetwork, LabNetworkThread
from ue_agent.media.tls_psk import tls_psk_keys

CONF = "sip:conf-1@ims.mnc001.mcc001.3gppnetwork.org"
BOB = ALICE.parent / "bob.toml"
CAROL = ALICE.parent / "carol.toml"


@pytest.fixture
def focus_network():
    with LabNetworkThread(LabNetwork(lab_subscribers(), focus=lab_subscriber("focus"))) as net:
        yield net


def post(net: LabNetwork, action: str, body: bytes | dict) -> dict:
    url = f"{net.focus_url}/conference/{urllib.parse.quote(CONF, safe='')}/{action}"
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST")
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def srtp(keys: dict, inbound: bool) -> pylibsrtp.Session:
    tx = keys["streams"][0]["tx"]
    material = base64.b64decode(tx["master_key"]) + base64.b64decode(tx["master_salt"])
    kind = pylibsrtp.Policy.SSRC_ANY_INBOUND if inbound else pylibsrtp.Policy.SSRC_ANY_OUTBOUND
    return pylibsrtp.Session(policy=pylibsrtp.Policy(key=material, ssrc_type=kind))


def rtp(ssrc: int, seq: int, payload: bytes) -> bytes:
    return (
        bytes([0x80, 0x00])
        + seq.to_bytes(2, "big")
        + seq.to_bytes(4, "big")
        + ssrc.to_bytes(4, "big")
        + payload
    )


@pytest.mark.skipif(OPENSSL is None, reason="openssl (scripts/setup installs it)")
def test_conference_of_three_through_the_lab_focus(agent_factory, focus_network) -> None:
    net = focus_network
    cfg = {"bsf_url": net.bsf_url, "kms_url": net.kms_url, "bsf_fqdn": net.bsf_fqdn, "kms_fqdn": net.kms_fqdn}
    ues = {
        "alice": agent_factory(network=cfg),
        "bob": agent_factory(subscriber=BOB, network=cfg),
        "carol": agent_factory(subscriber=CAROL, network=cfg),
    }
    uri = {
        "alice": "sip:alice@ims.mnc001.mcc001.3gppnetwork.org",
        "bob": "sip:bob@ims.mnc001.mcc001.3gppnetwork.org",
        "carol": "sip:001010000000003@ims.mnc001.mcc001.3gppnetwork.org",
    }
    with ues["alice"].client() as a, ues["bob"].client() as b, ues["carol"].client() as c:
        clients = {"alice": a, "bob": b, "carol": c}
        for cl in clients.values():
            cl.request("subscribe", events=["session"])
        sessions: dict[str, str] = {}

        def apply(updates: dict[str, str], expect: int) -> None:
            for member, raw in updates.items():
                name = next(n for n, u in uri.items() if u == member)
                r = clients[name].request("conference.update", session=sessions[name], key_mgmt=raw)
                assert r["generation"] == expect and r["rekeyed"] == ["audio"], r
                ev = clients[name].next_event()
                while ev["event"] != "session" or "generation" not in ev:
                    ev = clients[name].next_event()
                assert ev["session"] == sessions[name] and ev["generation"] == expect, ev

        # alice and bob dial in (the focus answers with the group keys in TRANSFER_RESP)
        for n, gen in (("alice", 1), ("bob", 2)):
            cl = clients[n]
            offer = cl.request("mikey.offer", responder=CONF, media=["audio", "bfcp"], conference=True)
            got = post(net, "dial-in", base64.b64decode(offer["transfer_init"]))
            done = cl.request("mikey.complete", session=offer["session"], transfer_resp=got["transfer_resp"])
            assert done["conference"] == {"generation": gen} and done["protection"]["intended"] is True, done
            sessions[n] = offer["session"]
            # the members already in get the new generation (none before alice)
            assert list(got["updates"]) == ([uri["alice"]] if n == "bob" else [])
            apply(got["updates"], gen)
        # carol is dialled out (the focus's TRANSFER_INIT carries the keys)
        ti = post(net, "dial-out", {"member": uri["carol"], "media": ["audio", "bfcp"]})["transfer_init"]
        ans = c.request("mikey.answer", transfer_init=ti, media=["audio", "bfcp"])
        assert ans["conference"] == {"generation": 3} and ans["peer"] == CONF, ans
        sessions["carol"] = ans["session"]
        ups = post(net, "answered", {"member": uri["carol"], "transfer_resp": ans["transfer_resp"]})[
            "updates"
        ]
        assert set(ups) >= {uri["alice"], uri["bob"]}
        apply(ups, 3)

        keys = {n: clients[n].request("session.keys", session=sessions[n]) for n in clients}
        ssrcs = {n: k["streams"][0]["tx"]["ssrc"] for n, k in keys.items()}
        assert len(set(ssrcs.values())) == 3
        assert all("rx" not in k["streams"][0] for k in keys.values())
        # BFCP: a pairwise PSK, different per member
        psks = {k["streams"][1]["tx"]["key"] for k in keys.values()}
        assert len(psks) == 3
        seq = 1
        for n in clients:
            pkt = srtp(keys[n], False).protect(rtp(ssrcs[n], seq, n.encode()))
            out = post(net, "relay", {"member": uri[n], "packet": base64.b64encode(pkt).decode()})["packets"]
            assert set(out) == {uri[m] for m in clients if m != n}
            for m in clients:
                if m != n:
                    assert srtp(keys[m], True).unprotect(base64.b64decode(out[uri[m]]))[12:] == n.encode()
            seq += 1

        # BFCP floor control (RFC 4583 over TLS-PSK) between alice and the focus: openssl as both peers
        bfcp = keys["alice"]["streams"][1]["tx"]
        mine = tls_psk_keys(bfcp["identity"], base64.b64decode(bfcp["key"]))
        focus_side = net.focus.conferences[CONF].members[uri["alice"]].pairwise[0].tx
        with PskServer(focus_side, "1.2") as server:
            result = psk_client(server.port, mine, "1.2", "floor request\nCLOSE\n")
            server.finish()
        assert result.returncode == 0 and "tseuqer roolf" in result.stdout, result.stderr

        # carol leaves: alice and bob move to generation 4; carol's key does not open it
        from ue_agent.ops.conference import _LINKS

        carol_link = next(links[sessions["carol"]] for links in _LINKS.values() if sessions["carol"] in links)
        c.request("session.close", session=sessions["carol"])
        assert carol_link.keys.auth.zeroized  # the update keys go with the session
        ups = post(net, "leave", {"member": uri["carol"]})["updates"]
        assert set(ups) == {uri["alice"], uri["bob"]}
        apply(ups, 4)
        k4 = {n: clients[n].request("session.keys", session=sessions[n]) for n in ("alice", "bob")}
        pkt = srtp(k4["alice"], False).protect(rtp(ssrcs["alice"], 100, b"after"))
        assert srtp(k4["bob"], True).unprotect(pkt)[12:] == b"after"
        with pytest.raises(pylibsrtp.Error):
            srtp(keys["carol"], True).unprotect(pkt)
        assert (
            k4["alice"]["streams"][0]["tx"]["master_key"] != keys["alice"]["streams"][0]["tx"]["master_key"]
        )
        # an update for a closed session, or replayed, is refused
        r = c.call("conference.update", session=sessions["carol"], key_mgmt=ups[uri["alice"]])
        assert r["error"]["code"] == "media.unknown_session", r
        r = a.call("conference.update", session=sessions["alice"], key_mgmt=ups[uri["alice"]])
        assert r["error"]["code"] == "mikey.replay", r
    log = "".join(ue.log_text() for ue in ues.values())
    assert keys["alice"]["streams"][0]["tx"]["master_key"] not in log
