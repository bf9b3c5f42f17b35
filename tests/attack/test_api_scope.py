"""What one uid can learn about another's sessions (issue 13): events and status are scoped
to the session's owner (root sees everything); session ids are per uid, so one uid can
neither probe nor squat another's.

Bounded: one daemon per test, a handful of sessions, waits of at most 10 s.
"""

from __future__ import annotations

import base64
import json
import os
import time

import pytest

from tests.attack.test_api_load import NOBODY, connect

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another uid")


class Conn:
    """A raw connection as ``uid``: requests, replies, and the events that came between."""

    def __init__(self, path: str, uid: int = 0) -> None:
        self.s = connect(path, uid, uid)
        self.n = 0
        self.buf = b""
        self.events: list[dict] = []

    def _line(self, timeout: float) -> dict | None:
        self.s.settimeout(timeout)
        while b"\n" not in self.buf:
            try:
                chunk = self.s.recv(65536)
            except TimeoutError:
                return None
            if not chunk:
                raise AssertionError("the agent closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def call(self, op: str, **params: object) -> dict:
        self.n += 1
        self.s.sendall(json.dumps({"id": self.n, "op": op, **params}).encode() + b"\n")
        while True:
            msg = self._line(10)
            assert msg is not None, f"no reply to {op}"
            if "event" in msg:
                self.events.append(msg)
                continue
            assert msg["id"] == self.n, msg
            return msg

    def drain(self, timeout: float = 0.5) -> list[dict]:
        """The events so far, after waiting up to ``timeout`` for more."""
        while (msg := self._line(timeout)) is not None:
            self.events.append(msg)
        return self.events

    def session(self) -> str:
        offer = self.call("sdes.offer", media=["audio"])
        answer = self.call("sdes.answer", offer=[st["lines"] for st in offer["streams"]])
        assert answer["ok"], answer
        return answer["session"]

    def close(self) -> None:
        self.s.close()


def _compromise(c: Conn, sid: str) -> None:
    """A packet index that goes back: the store withdraws the session with a security.warning."""
    assert c.call("session.report", session=sid, ssrc=1, index=100)["ok"]
    c.call("session.report", session=sid, ssrc=1, index=50)


def test_events_and_status_reach_only_the_owner_and_root(daemon_factory) -> None:
    daemon = daemon_factory(api={"allowed_uids": [NOBODY]})
    os.chown(daemon.socket, 0, NOBODY)
    root, theirs = Conn(daemon.socket), Conn(daemon.socket, NOBODY)
    for c in (root, theirs):
        assert c.call("subscribe", events=["security.warning", "handover"])["ok"]
    root_sid = root.session()
    other_root = root.session()
    their_sid = theirs.session()

    _compromise(root, root_sid)
    root.drain()
    theirs.drain()
    assert any(e.get("session") == root_sid for e in root.events)
    assert not any(root_sid in json.dumps(e) for e in theirs.events), theirs.events

    _compromise(theirs, their_sid)
    theirs.drain()
    root.drain()
    assert any(e.get("session") == their_sid for e in theirs.events)
    # root sees everything; another uid's session named with its uid (ids are per uid)
    assert any(e.get("session") == f"{NOBODY}/{their_sid}" for e in root.events)

    # status: the other uid counts only its own sessions; root counts all
    st_theirs = theirs.call("status")["sessions"]
    st_root = root.call("status")["sessions"]
    assert sum(st_theirs["by_state"].values()) == st_theirs["open"] <= 1 + 1
    assert st_root["open"] > st_theirs["open"]
    assert other_root not in json.dumps(theirs.call("status"))
    for c in (root, theirs):
        c.close()


def test_a_handover_event_lists_each_uid_only_its_sessions(daemon_factory, modem_factory) -> None:
    sim = modem_factory("generic-at")
    daemon = daemon_factory(api={"allowed_uids": [NOBODY]}, modem={"port": str(sim.link_path)})
    os.chown(daemon.socket, 0, NOBODY)
    root, theirs = Conn(daemon.socket), Conn(daemon.socket, NOBODY)
    for c in (root, theirs):
        assert c.call("subscribe", events=["handover"])["ok"]
    root_sid, their_sid = root.session(), theirs.session()
    for _ in range(200):  # the agent enables +CIREP while it starts
        if sim.srvcc(0):
            break
        time.sleep(0.05)
    else:
        pytest.fail("the agent never enabled +CIREP:\n" + daemon.log_text())
    (ev_root,) = [e for e in root.drain(2) if e.get("event") == "handover"]
    (ev_theirs,) = [e for e in theirs.drain(2) if e.get("event") == "handover"]
    assert ev_root["sessions"] == {root_sid: "handover_pending", f"{NOBODY}/{their_sid}": "handover_pending"}
    assert ev_theirs["sessions"] == {their_sid: "handover_pending"}
    assert ev_theirs["meaning"] == "started"
    handover = theirs.call("status")["handover"]["sessions"]
    assert sum(handover.values()) == 1
    for c in (root, theirs):
        c.close()


def _peer_offer() -> list[list[str]]:
    """A peer's SDES offer with a fresh key (one stream)."""
    key = base64.b64encode(os.urandom(30)).decode()
    return [[f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{key}"]]


def test_session_ids_are_per_uid_no_probe_no_squat(daemon_factory) -> None:
    """Every operation that takes a session id, given another uid's id, answers exactly as
    for an id nobody uses; the same id string chosen by another uid is its own session."""
    daemon = daemon_factory(api={"allowed_uids": [NOBODY]})
    os.chown(daemon.socket, 0, NOBODY)
    root, theirs = Conn(daemon.socket), Conn(daemon.socket, NOBODY)
    offer = root.call("sdes.offer", session="call-1", media=["audio"])
    assert offer["ok"], offer
    ans = root.call("sdes.answer", session="call-2", offer=_peer_offer())
    assert ans["ok"], ans

    def probe(c: Conn, sid: str) -> list[dict]:
        """What each session op says about ``sid`` (nothing changed: read-only or refused)."""
        return [
            c.call("session.keys", session=sid),
            c.call("session.report", session=sid, ssrc=1, index=5),
            c.call("sdes.answer", session=sid, answer=_peer_offer()),
            c.call("mikey.complete", session=sid, transfer_resp="AAAA"),
            c.call("session.keys", session=sid, dialog="0"),
        ]

    def shape(replies: list[dict]) -> list[object]:
        return [(r["ok"], r.get("error", {}).get("code"), r.get("error", {}).get("message")) for r in replies]

    # another uid probing root's ids gets what an unused id gets
    for sid in ("call-1", "call-2"):
        assert shape(probe(theirs, sid)) == shape(probe(theirs, "never-used")), sid
    assert all(not r["ok"] for r in probe(theirs, "call-2"))
    assert theirs.call("session.close", session="call-1")["error"]["code"] == "media.unknown_session"
    # ... and squatting the same id strings gives it its own sessions, no media.session_exists
    mine = theirs.call("sdes.offer", session="call-1", media=["audio"])
    assert mine["ok"] and mine["session"] == "call-1", mine
    theirs_ans = theirs.call("sdes.answer", session="call-2", offer=_peer_offer())
    assert theirs_ans["ok"] and theirs_ans["session"] == "call-2", theirs_ans
    # each uid's keys are its own: different key bytes under the same id
    k_root = root.call("session.keys", session="call-2")
    k_theirs = theirs.call("session.keys", session="call-2")
    assert k_root["ok"] and k_theirs["ok"] and k_root["session"] == k_theirs["session"] == "call-2"
    assert k_root["streams"][0]["tx"]["master_key"] != k_theirs["streams"][0]["tx"]["master_key"]
    # within one uid the id is still taken
    again = theirs.call("sdes.offer", session="call-1", media=["audio"])
    assert again["error"]["code"] == "media.session_exists"
    # closing one uid's session leaves the other's
    assert theirs.call("session.close", session="call-2")["ok"]
    assert root.call("session.keys", session="call-2")["ok"]
    assert theirs.call("session.keys", session="call-2")["error"]["code"] == "media.unknown_session"
    # status counts: each its own; root all
    assert theirs.call("status")["sessions"]["open"] == 0
    assert theirs.call("status")["sessions"]["pending_offers"] == 1
    assert root.call("status")["sessions"]["open"] == 1
    assert root.call("status")["sessions"]["pending_offers"] == 2
    for c in (root, theirs):
        c.close()
