"""Per-operation deadlines and one shared bootstrap (issue 13): a BSF that accepts the
connection and never answers. Several clients asking for MIKEY keys at once all get
``gba.bsf_unreachable`` at the operation's deadline, and the BSF sees ONE bootstrap request,
not one per caller, one after the other.

Bounded: a loopback TCP server that reads and never answers, one in-process daemon, two
waves of four requests, a 1 s deadline (replies are awaited at most 20 s).
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator

import pytest

from tests.attack.test_api_load import read_lines

BOB_URI = "sip:bob@ims.mnc001.mcc001.3gppnetwork.org"


class SilentHttp:
    """Accepts connections on loopback, reads requests, never answers. Counts both."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.requests = 0
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def _serve(self) -> None:
        self.sock.settimeout(0.1)
        conns: list[socket.socket] = []
        while not self._stop.is_set():
            try:
                c, _ = self.sock.accept()
                c.setblocking(False)
                conns.append(c)
                self.connections += 1
            except TimeoutError:
                pass
            for c in conns:
                try:
                    data = c.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                # a request line starts each request (no body without Content-Length here)
                self.requests += sum(data.count(m) for m in (b"GET /", b"POST /"))
        for c in conns:
            c.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@pytest.fixture
def silent_bsf() -> Iterator[SilentHttp]:
    server = SilentHttp()
    yield server
    server.close()


def _wave(path: str, n: int) -> list[dict]:
    """``n`` connections each send mikey.offer at once; their replies."""
    conns = []
    for _ in range(n):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(path)
        conns.append(s)
    req = {"id": 1, "op": "mikey.offer", "responder": BOB_URI, "media": ["audio"]}
    for s in conns:
        s.sendall(json.dumps(req).encode() + b"\n")
    out = []
    for s in conns:
        (reply,) = read_lines(s, 1, timeout=20)
        out.append(reply)
        s.close()
    return out


def test_silent_bsf_one_shared_bootstrap_all_fail_at_the_deadline(agent_factory, silent_bsf) -> None:
    daemon = agent_factory(
        network={
            "bsf_url": silent_bsf.url,
            "kms_url": "http://127.0.0.1:9/",  # never reached: the bootstrap does not finish
            "bsf_fqdn": "bsf.ims.mnc001.mcc001.3gppnetwork.org",
            "kms_fqdn": "kms.ims.mnc001.mcc001.3gppnetwork.org",
            "deadline_s": 1.0,
            "timeout_s": 60.0,  # the HTTP exchange alone would wait a minute
        },
        api={"max_inflight": 4},
    )
    for wave in range(2):  # the second wave joins the same run (still waiting on the BSF)
        replies = _wave(daemon.socket, 4)
        codes = [r.get("error", {}).get("code") for r in replies]
        assert codes == ["gba.bsf_unreachable"] * 4, replies
        assert all("deadline" in r["error"]["message"] for r in replies)
        assert (silent_bsf.connections, silent_bsf.requests) == (1, 1), wave
    with daemon.client() as c:
        st = c.request("status")
    assert st["bootstrap"]["state"] == "none" and st["bootstrap"]["bsf"] == silent_bsf.url
    assert daemon.log_text().count("bootstrapped:") == 0


def test_a_card_that_never_answers_fails_at_the_card_deadline(agent_factory, modem_factory) -> None:
    """ims.authenticate waits on the card only: a modem that swallows the command (no answer
    at all, its own command timeout 10 s) fails the request at [card] deadline_s with
    card.timeout; the agent answers others meanwhile (the card's thread waits, not the loop)."""
    from tests.test_api_passthrough import authenticate

    sim = modem_factory("quectel-ec25")
    daemon = agent_factory(
        card={"transport": "at", "port": str(sim.link_path), "profile": "quectel-ec25", "deadline_s": 1.0}
    )
    with daemon.client() as c, daemon.client() as other:
        assert "res" in authenticate(c, 100)
        sim.fail_next("silence")
        reply = authenticate(c, 101)
        assert reply["ok"] is False and reply["error"]["code"] == "card.timeout", reply
        assert "deadline" in reply["error"]["message"]
        assert other.request("status")["agent"]["version"]  # the loop was never blocked
