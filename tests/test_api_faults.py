"""Hostile and broken peers: the daemon answers with stable codes, never stops, and a
refused peer never sees a key byte."""

from __future__ import annotations

import base64
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import textwrap

import pytest

from tests.fixtures.daemon import aka_challenge


def raw_conn(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)  # blocking: a full backlog waits for the agent to accept
    s.settimeout(20)
    return s


def read_lines(s: socket.socket, n: int) -> list[dict]:
    buf = b""
    while buf.count(b"\n") < n:
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    return [json.loads(x) for x in buf.splitlines()]


def read_all(s: socket.socket) -> bytes:
    buf = b""
    while chunk := s.recv(65536):
        buf += chunk
    return buf


def assert_alive(daemon) -> None:
    assert daemon.alive, daemon.log_text()
    with daemon.client() as c:
        assert c.request("status")["card"]["present"] is True


def test_garbage_of_every_kind(lab_agent) -> None:
    rng = random.Random(4)
    s = raw_conn(lab_agent.socket)
    cases = [
        (bytes(rng.randrange(256) for _ in range(3000)).replace(b"\n", b"") + b"\n", "api.bad_json"),
        (b"\xc3\x28\n", "api.bad_json"),
        (b"[" * 5000 + b"]" * 5000 + b"\n", "api.bad_json"),
        (b'{"id":1,"op":"status","a":' + b'{"b":' * 30 + b"1" + b"}" * 31 + b"\n", "api.bad_json"),
        (b'"just a string"\n', "api.bad_request"),
        (b'{"id":{"x":1},"op":"status"}\n', "api.bad_request"),
        (b'{"id":2,"op":["status"]}\n', "api.bad_request"),
        (b'{"id":3,"op":"status","extra":true}\n', "api.bad_request"),
        (b'{"id":4,"op":"session.report","session":"s","ssrc":-1,"index":0}\n', "api.bad_request"),
        (
            b'{"id":5,"op":"session.report","session":"s","ssrc":1,"index":281474976710656}\n',
            "api.bad_request",
        ),
        (b'{"id":6,"op":"hello","protocols":"1"}\n', "api.bad_request"),
        (b'{"id":7,"op":"format.disk"}\n', "api.unknown_op"),
        (b'{"id":8,"op":"hello","protocols":[0, 99]}\n', "api.unsupported_version"),
        (b"x" * 70000 + b"\n", "api.line_too_long"),
    ]
    for data, code in cases:
        s.sendall(data)
        (reply,) = read_lines(s, 1)
        assert reply["ok"] is False and reply["error"]["code"] == code, (data[:40], reply)
    # the same connection still works after all of it
    s.sendall(b'{"id":"after","op":"status"}\n')
    (reply,) = read_lines(s, 1)
    assert reply["id"] == "after" and reply["ok"] is True
    s.close()
    assert_alive(lab_agent)


def test_random_bytes_stream_and_half_lines(lab_agent) -> None:
    s = raw_conn(lab_agent.socket)
    s.sendall(os.urandom(200_000))
    s.close()
    s = raw_conn(lab_agent.socket)
    s.sendall(b'{"id":1,"op":"ims.authenticate","rand":"AAAA')  # half a line, then gone
    s.close()
    s = raw_conn(lab_agent.socket)
    s.sendall(b"y" * 100_000)  # an endless line, then gone
    s.close()
    assert_alive(lab_agent)


def test_too_many_requests_in_flight(agent_factory) -> None:
    daemon = agent_factory(api={"max_inflight": 1})
    r, a = aka_challenge(60)
    auth = {
        "op": "ims.authenticate",
        "rand": base64.b64encode(r).decode(),
        "autn": base64.b64encode(a).decode(),
    }
    s = raw_conn(daemon.socket)
    s.sendall((json.dumps({"id": 1, **auth}) + "\n" + json.dumps({"id": 2, "op": "status"}) + "\n").encode())
    replies = {x["id"]: x for x in read_lines(s, 2)}
    assert replies[1]["ok"] is True
    assert replies[2]["error"]["code"] == "api.too_many_requests"
    s.close()


def test_hundreds_of_idle_connections(agent_factory) -> None:
    daemon = agent_factory(api={"max_clients": 32})
    held = []
    for _ in range(300):
        s = raw_conn(daemon.socket)
        held.append(s)
    # the table holds 32: each newcomer took the place of the least recently active
    # connection that held nothing, which got one api.evicted line and EOF
    for s in held[:268]:
        data = read_all(s)
        assert json.loads(data)["error"]["code"] == "api.evicted"
    s0 = held[-1]
    s0.sendall(b'{"id":1,"op":"status"}\n')
    (st,) = read_lines(s0, 1)
    assert st["ok"] and st["api"]["clients"] == 32
    for s in held:
        s.close()
    assert daemon.alive


def test_idle_timeout_closes_quiet_connections(agent_factory) -> None:
    daemon = agent_factory(api={"idle_timeout_s": 0.3})
    s = raw_conn(daemon.socket)
    data = read_all(s)
    assert json.loads(data)["error"]["code"] == "api.idle_timeout"
    # a subscriber is not idle: it waits for events
    s = raw_conn(daemon.socket)
    s.sendall(b'{"id":1,"op":"subscribe"}\n')
    (r,) = read_lines(s, 1)
    assert r["ok"] and r["events"] == ["bootstrap", "card", "handover", "security.warning", "session"]
    s.settimeout(1.0)
    with pytest.raises(TimeoutError):
        s.recv(100)
    s.close()


_PEER = textwrap.dedent(
    """
    import base64, json, os, socket, sys
    path, want, requests = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(20)
    s.connect(path)
    try:
        s.sendall("".join(json.dumps(r) + "\\n" for r in requests).encode())
    except BrokenPipeError:
        pass
    buf = b""
    try:
        while (not want or buf.count(b"\\n") < want) and (chunk := s.recv(65536)):
            buf += chunk
    except ConnectionResetError:
        pass
    sys.stdout.write(buf.decode())
    """
)


def _as_nobody() -> None:
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)


def _python_for_nobody() -> str | None:
    """An interpreter uid 65534 can execute (the test one may live under /root)."""
    for exe in (sys.executable, shutil.which("python3") or "", "/usr/bin/python3"):
        if exe and all(os.stat(p).st_mode & 0o001 for p in _parents(exe)):
            return exe
    return None


def _parents(exe: str) -> list[str]:
    real = os.path.realpath(exe)
    parts = [real]
    while (parent := os.path.dirname(parts[-1])) != parts[-1]:
        parts.append(parent)
    return parts


def run_as_nobody(path: str, rand: bytes, autn: bytes, lines: int = 0, requests: list | None = None) -> str:
    """As uid 65534: send hello + ims.authenticate (or ``requests``); the output, every line
    until EOF or until ``lines`` lines arrived."""
    b64 = base64.b64encode
    auth = {"id": 2, "op": "ims.authenticate", "rand": b64(rand).decode(), "autn": b64(autn).decode()}
    requests = requests if requests is not None else [{"id": 1, "op": "hello"}, auth]
    exe = _python_for_nobody()
    if exe is None:
        pytest.skip("no Python interpreter that uid 65534 may execute")
    out = subprocess.run(
        [exe, "-I", "-c", _PEER, path, str(lines), json.dumps(requests)],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=_as_nobody,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a peer as another uid")
def test_peer_not_allowed_is_refused_and_gets_no_key(agent_factory) -> None:
    daemon = agent_factory()
    os.chown(daemon.socket, 0, 65534)  # the socket group lets it connect, as SocketGroup= would
    rand, autn = aka_challenge(70)
    out = run_as_nobody(daemon.socket, rand, autn)
    lines = out.splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0]) == {
        "id": None,
        "ok": False,
        "error": {"code": "api.forbidden", "message": "this uid/gid may not use the agent"},
    }
    assert '"res"' not in out and '"ck"' not in out and "impi" not in out
    assert "refused uid 65534" in daemon.log_text()
    assert_alive(daemon)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a peer as another uid")
def test_peer_in_allowed_gids_is_served(agent_factory) -> None:
    daemon = agent_factory(api={"allowed_gids": [65534]})
    os.chown(daemon.socket, 0, 65534)
    rand, autn = aka_challenge(71)
    replies = [json.loads(x) for x in run_as_nobody(daemon.socket, rand, autn, 2).splitlines()]
    assert replies[0]["ok"] and replies[1]["result"] == "success"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a peer as another uid")
def test_sessions_belong_to_their_uid(agent_factory) -> None:
    daemon = agent_factory(api={"allowed_gids": [65534]})
    os.chown(daemon.socket, 0, 65534)
    with daemon.client() as c:  # open meanwhile: an offer dies with its connection
        sid = c.request("sdes.offer", session="root-call")["session"]
        ops = ("session.keys", "session.close")
        probe = [{"id": i, "op": op, "session": sid} for i, op in enumerate(ops)]
        replies = [json.loads(x) for x in run_as_nobody(daemon.socket, b"", b"", 2, probe).splitlines()]
        assert [r["error"]["code"] for r in replies] == ["media.unknown_session"] * 2
        assert c.request("session.close", session=sid)["state"] == "closed"  # still there for its owner
