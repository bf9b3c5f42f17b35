"""e2ae in the lab (TS 33.328 clause 7.1 / 4.2.2): a P-CSCF that does REGISTER's media-security
agreement, and an IMS-AGW that terminates SDES-SRTP and forwards plain RTP to the other side.

- :class:`LabPcscf`: REGISTER only. A REGISTER whose ``Security-Client`` lists mechanisms with
  ``mediasec`` gets ``401`` with ``Security-Server`` (TS 24.229 7.2A.7); the next REGISTER must
  echo that list in ``Security-Verify`` (RFC 3329 2.3.1), else ``494``; then ``200``. The
  registered UE's negotiated media mechanisms are kept (``registered``). TCP on loopback,
  one request per line block (``\\r\\n\\r\\n``), no body. :meth:`LabPcscf.handle` is sans-IO.
- :class:`LabImsAgw`: one e2ae audio stream. :meth:`answer` answers the UE's SDES offer with its
  own key and ``a=3ge2ae:applied`` (originating); :meth:`offer` makes the network-inserted offer
  for a terminating call. Then a relay thread: SRTP from the UE (access side) is unprotected
  with libsrtp and sent as plain RTP to the core side; plain RTP from the core side is
  protected and sent to the UE. UDP on loopback.

Keys never leave these objects except into libsrtp; nothing is logged.
"""

from __future__ import annotations

import select
import socket
import socketserver
import threading
from typing import Any

from ue_agent.media import e2ae as e2ae_mod
from ue_agent.media.keys import SrtpKeys, StreamKeys

PCSCF_MECHANISMS = "sdes-srtp;mediasec, msrp-tls;mediasec"


def _headers(message: str) -> tuple[str, dict[str, str]]:
    lines = message.strip("\r\n").split("\r\n")
    out: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        out[name.strip().lower()] = value.strip()
    return lines[0], out


class LabPcscf:
    """The media-security agreement of REGISTER (sans-IO :meth:`handle`, :meth:`serve` on TCP)."""

    def __init__(self, security_server: str = PCSCF_MECHANISMS) -> None:
        self.security_server = security_server
        self.registered: dict[str, list[str]] = {}
        self.requests: list[str] = []  # start line and result, for the tests
        self._server: socketserver.ThreadingTCPServer | None = None

    def handle(self, message: str) -> str:
        start, h = _headers(message)
        method, _, rest = start.partition(" ")
        if method != "REGISTER":
            return self._reply(405, "Method Not Allowed", h)
        client = e2ae_mod.media_mechanisms(e2ae_mod.parse_security_header(h.get("security-client", "")))
        ours = e2ae_mod.parse_security_header(self.security_server)
        if "security-verify" not in h:
            if not client:
                return self._register(h, [])
            return self._reply(401, "Unauthorized", h, {"Security-Server": self.security_server})
        verify = e2ae_mod.parse_security_header(h["security-verify"])
        if [m for m in verify if m.mediasec] != [m for m in ours if m.mediasec]:
            return self._reply(494, "Security Agreement Required", h)  # RFC 3329 2.3.1
        both = [m for m in client if m in e2ae_mod.media_mechanisms(ours)]
        return self._register(h, both)

    def _register(self, h: dict[str, str], mechanisms: list[str]) -> str:
        self.registered[h.get("contact", h.get("from", "?"))] = mechanisms
        return self._reply(200, "OK", h)

    def _reply(self, code: int, reason: str, h: dict[str, str], extra: dict[str, str] | None = None) -> str:
        self.requests.append(f"REGISTER -> {code}")
        lines = [f"SIP/2.0 {code} {reason}"]
        for name in ("via", "from", "to", "call-id", "cseq"):
            if name in h:
                lines.append(f"{name.title()}: {h[name]}")
        lines += [f"{k}: {v}" for k, v in (extra or {}).items()]
        lines.append("Content-Length: 0")
        return "\r\n".join(lines) + "\r\n\r\n"

    # -- on TCP loopback
    def serve(self) -> int:
        """Start listening on 127.0.0.1 (a thread per connection); returns the port."""
        pcscf = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                buf = b""
                while True:
                    chunk = self.request.recv(4096)
                    if not chunk:
                        return
                    buf += chunk
                    while b"\r\n\r\n" in buf:
                        msg, buf = buf.split(b"\r\n\r\n", 1)
                        self.request.sendall(pcscf.handle(msg.decode() + "\r\n\r\n").encode())

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return int(self._server.server_address[1])

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def _srtp(keys: SrtpKeys, outbound: bool) -> Any:
    import pylibsrtp

    profile = {
        "AES_CM_128_HMAC_SHA1_80": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
        "AES_CM_128_HMAC_SHA1_32": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
    }[keys.suite]
    kind = pylibsrtp.Policy.SSRC_ANY_OUTBOUND if outbound else pylibsrtp.Policy.SSRC_ANY_INBOUND
    material = keys.master_key.reveal() + keys.master_salt.reveal()
    return pylibsrtp.Session(pylibsrtp.Policy(key=material, ssrc_type=kind, srtp_profile=profile))


class LabImsAgw:
    """An IMS-AGW for one e2ae audio stream: SDES-SRTP towards the UE, plain RTP to the core."""

    SUITES = ("AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32")

    def __init__(self) -> None:
        self.keys: StreamKeys | None = None  # tx: the AGW's key; rx: the UE's
        self._offer: Any = None
        self.access = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.core = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.access.bind(("127.0.0.1", 0))
        self.core.bind(("127.0.0.1", 0))
        self.ue_addr: tuple[str, int] | None = None
        self.core_peer: tuple[str, int] | None = None
        self.relayed = {"to_core": 0, "to_ue": 0, "dropped": 0}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def access_port(self) -> int:
        return int(self.access.getsockname()[1])

    @property
    def core_port(self) -> int:
        return int(self.core.getsockname()[1])

    # -- SDP
    def answer(self, ue_offer: list[str]) -> list[str]:
        """Originating e2ae: answer the UE's offer (it asked ``a=3ge2ae:requested``)."""
        from ue_agent.media.sdes import answer_stream

        if e2ae_mod.parse_e2ae(ue_offer) != e2ae_mod.REQUESTED:
            raise ValueError("the UE did not request e2ae on this m-line")
        lines, self.keys = answer_stream(ue_offer, "audio", self.SUITES)
        return [str(x) for x in lines] + [e2ae_mod.e2ae_line(e2ae_mod.APPLIED)]

    def offer(self) -> list[str]:
        """Terminating e2ae: the offer the network puts in towards the UE."""
        from ue_agent.media.sdes import make_offer

        lines, self._offer = make_offer(["audio"], ["AES_CM_128_HMAC_SHA1_80"])
        return [str(x) for x in lines[0]] + [e2ae_mod.e2ae_line(e2ae_mod.APPLIED)]

    def take_answer(self, ue_answer: list[str]) -> None:
        from ue_agent.media.sdes import accept_answer

        (self.keys,) = accept_answer(self._offer, [ue_answer])
        self._offer.zeroize()

    # -- media
    def start(self, core_peer: tuple[str, int], ue_addr: tuple[str, int] | None = None) -> None:
        assert self.keys is not None and isinstance(self.keys.tx, SrtpKeys)
        assert isinstance(self.keys.rx, SrtpKeys)
        self.core_peer, self.ue_addr = core_peer, ue_addr
        self._thread = threading.Thread(target=self._relay, daemon=True)
        self._thread.start()

    def _relay(self) -> None:
        assert self.keys is not None
        assert isinstance(self.keys.tx, SrtpKeys) and isinstance(self.keys.rx, SrtpKeys)
        from_ue, to_ue = _srtp(self.keys.rx, False), _srtp(self.keys.tx, True)
        while not self._stop.is_set():
            ready, _, _ = select.select([self.access, self.core], [], [], 0.1)
            for sock in ready:
                data, addr = sock.recvfrom(2048)
                try:
                    if sock is self.access:
                        self.ue_addr = self.ue_addr or addr
                        assert self.core_peer is not None
                        plain = from_ue.unprotect(data)
                        self.relayed["to_core"] += 1  # counted before the peer can see it
                        self.core.sendto(plain, self.core_peer)
                    elif self.ue_addr is not None:
                        protected = to_ue.protect(data)
                        self.relayed["to_ue"] += 1
                        self.access.sendto(protected, self.ue_addr)
                except Exception:  # a packet that does not authenticate: dropped, as an AGW does
                    self.relayed["dropped"] += 1

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self.access.close()
        self.core.close()
        if self.keys is not None:
            self.keys.zeroize()
