"""e2ae end to end in the lab (issue 11): REGISTER through the lab P-CSCF with Security-Verify
from ims.mediasec; an SDES call whose answer comes from the lab IMS-AGW (a=3ge2ae:applied)
is reported as scope e2ae; 1000 SRTP packets each way between the agent's keys and the
IMS-AGW, which forwards plain RTP to the other side. Originating and terminating."""

from __future__ import annotations

import base64
import socket

import pytest

pylibsrtp = pytest.importorskip("pylibsrtp")

from ue_agent.lab.e2ae import LabImsAgw, LabPcscf  # noqa: E402

PROFILE = pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80


def sip(port: int, text: str) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(text.encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += s.recv(4096)
    return buf.decode()


def register(port: int, cseq: int, **headers: str) -> str:
    lines = [
        "REGISTER sip:ims.mnc001.mcc001.3gppnetwork.org SIP/2.0",
        "From: <sip:alice@ims.mnc001.mcc001.3gppnetwork.org>;tag=1",
        "To: <sip:alice@ims.mnc001.mcc001.3gppnetwork.org>",
        "Call-ID: e2ae-1",
        f"CSeq: {cseq} REGISTER",
        "Contact: <sip:alice@127.0.0.1>",
    ]
    lines += [f"{k.replace('_', '-').title()}: {v}" for k, v in headers.items()]
    return sip(port, "\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n")


def session(k: dict, outbound: bool):
    key = base64.b64decode(k["master_key"]) + base64.b64decode(k["master_salt"])
    kind = pylibsrtp.Policy.SSRC_ANY_OUTBOUND if outbound else pylibsrtp.Policy.SSRC_ANY_INBOUND
    return pylibsrtp.Session(pylibsrtp.Policy(key=key, ssrc_type=kind, srtp_profile=PROFILE))


def media_both_ways(agw: LabImsAgw, keys: dict, n: int = 1000) -> None:
    """The UE's stack (the agent's keys) <-> IMS-AGW (SRTP) <-> the other side (plain RTP)."""
    ue = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    far = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for s in (ue, far):
        s.bind(("127.0.0.1", 0))
        s.settimeout(10)
    agw.start(far.getsockname(), ue.getsockname())
    tx, rx = session(keys["tx"], True), session(keys["rx"], False)
    try:
        for i in range(n):  # one at a time: loopback UDP, no loss to reason about
            rtp = bytes([0x80, 0x00]) + i.to_bytes(2, "big") + b"\0\0\0\1\0\0\0\x0a" + b"uplink" * 6
            ue.sendto(tx.protect(rtp), ("127.0.0.1", agw.access_port))
            assert far.recvfrom(2048)[0] == rtp  # plain RTP on the other side of the AGW
            back = bytes([0x80, 0x00]) + i.to_bytes(2, "big") + b"\0\0\0\1\0\0\0\x0b" + b"downlink" * 5
            far.sendto(back, ("127.0.0.1", agw.core_port))
            assert rx.unprotect(ue.recvfrom(2048)[0]) == back
    finally:
        ue.close()
        far.close()
    assert agw.relayed == {"to_core": n, "to_ue": n, "dropped": 0}


def test_register_with_security_verify(lab_daemon) -> None:
    pcscf = LabPcscf()
    port = pcscf.serve()
    try:
        with lab_daemon.client() as a:
            caps = a.request("capabilities")
            client = caps["e2ae"]["security_client"]
            assert client == "sdes-srtp;mediasec"  # only what the agent can key e2ae
            r = register(port, 1, security_client=client)
            assert r.startswith("SIP/2.0 401")
            server = next(v for k, v in (ln.split(": ", 1) for ln in r.split("\r\n")[1:] if ": " in ln)
                          if k == "Security-Server")  # fmt: skip
            m = a.request("ims.mediasec", security_server=server)
            assert {k: m[k] for k in ("security_verify", "mechanisms", "e2ae")} == {
                "security_verify": "sdes-srtp;mediasec, msrp-tls;mediasec",
                "mechanisms": ["sdes-srtp"],
                "e2ae": True,
            }
            ok = register(port, 2, security_client=client, security_verify=m["security_verify"])
            assert ok.startswith("SIP/2.0 200")
            assert pcscf.registered == {"<sip:alice@127.0.0.1>": ["sdes-srtp"]}
            # a Security-Verify that does not echo the Security-Server: refused (RFC 3329 2.3.1)
            bad = register(port, 3, security_client=client, security_verify="sdes-srtp;mediasec")
            assert bad.startswith("SIP/2.0 494")
            r = a.call("ims.mediasec", security_server="sdes-srtp;mediasec;=")
            assert r["error"]["code"] == "media.security_header_malformed", r
    finally:
        pcscf.close()


def test_e2ae_call_through_the_lab_ims_agw(lab_daemon) -> None:
    agw = LabImsAgw()
    try:
        with lab_daemon.client() as a:
            offer = a.request("sdes.offer", media=["audio"], e2ae=True)
            lines = offer["streams"][0]["lines"]
            assert "a=3ge2ae:requested" in lines
            answer = agw.answer(lines)
            done = a.request("sdes.answer", session=offer["session"], answer=[answer])
            assert done["protection"]["scope"] == "e2ae" and done["protection"]["media"] == {"audio": "e2ae"}
            keys = a.request("session.keys", session=offer["session"])
            assert keys["protection"]["scope"] == "e2ae"
            media_both_ways(agw, keys["streams"][0])
    finally:
        agw.close()


def test_e2ae_terminating_network_inserted_offer(lab_daemon) -> None:
    agw = LabImsAgw()
    try:
        with lab_daemon.client() as a:
            offer = agw.offer()
            assert "a=3ge2ae:applied" in offer
            ans = a.request("sdes.answer", offer=[offer])
            assert ans["protection"]["scope"] == "e2ae"
            agw.take_answer(ans["streams"][0]["lines"])
            keys = a.request("session.keys", session=ans["session"])
            media_both_ways(agw, keys["streams"][0])
    finally:
        agw.close()
