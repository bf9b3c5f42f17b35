"""SRVCC (+CIREPH) and IP-mobility state per session."""

from __future__ import annotations

import pytest

from ue_agent.handover.state import HandoverState, HandoverTracker, SrvccPhase, parse_cireph


def tracker(*sessions: str) -> HandoverTracker:
    """A tracker over a registry holding ``sessions`` (with keys: active)."""
    t = HandoverTracker()
    for sid in sessions:
        add_session(t, sid)
    return t


def add_session(t: HandoverTracker, sid: str) -> None:
    t.sessions.activate(sid, 1000, "sdes")


@pytest.mark.parametrize(
    ("line", "value"),
    [("+CIREPH: 0", 0), ("+CIREPH:1", 1), ("  +cireph: 3\r", 3), ("+CIREPI: 1", None), ("+CIREPH: x", None)],
)
def test_parse_cireph(line: str, value: int | None) -> None:
    assert parse_cireph(line) == value


def test_srvcc_success_releases_keys() -> None:
    t = tracker("s1", "s2")
    r = t.on_cireph(0)
    assert t.phase is SrvccPhase.STARTED and not any(d.release_keys for d in r.decisions)
    assert r.event["sessions"] == {"1000/s1": "handover_pending", "1000/s2": "handover_pending"}
    r = t.on_cireph(1)
    assert t.phase is SrvccPhase.CS
    assert {d.session for d in r.decisions if d.release_keys} == {"s1", "s2"}
    assert t.state_of("s1", 1000) is HandoverState.HANDED_OVER
    # back on PS: a new session is set up with fresh keys; old ones stay handed over
    add_session(t, "s3")
    assert t.phase is SrvccPhase.PS and t.state_of("s1", 1000) is HandoverState.HANDED_OVER


@pytest.mark.parametrize("value", [2, 3])
def test_cancel_or_failure_keeps_the_call_on_ps(value: int) -> None:
    t = tracker("s1")
    t.on_cireph(0)
    r = t.on_cireph(value)
    assert t.phase is SrvccPhase.PS and t.state_of("s1", 1000) is HandoverState.ACTIVE
    assert not any(d.release_keys for d in r.decisions)
    assert r.event["meaning"] == ("cancelled" if value == 2 else "failure")


def test_success_without_start_still_releases() -> None:
    t = tracker("s1")
    assert [d.release_keys for d in t.on_cireph(1).decisions] == [True]


def test_unknown_value_changes_nothing() -> None:
    t = tracker("s1")
    r = t.on_cireph(9)
    assert r.decisions == [] and r.event["meaning"] == "unknown" and t.phase is SrvccPhase.PS


def test_ip_change_marks_rekey() -> None:
    t = tracker("s1")
    assert t.on_ip_change("wlan0", "address_added").decisions == []
    r = t.on_ip_change("wlan0", "address_removed")
    assert r.event["sessions"] == {"1000/s1": "rekey_required"}
    assert t.snapshot() == {"phase": "ps", "last_cireph": None, "sessions": {"rekey_required": 1}}
    t.sessions.drop("s1", 1000)
    assert t.snapshot()["sessions"] == {}


def test_srvcc_success_moves_voice_only() -> None:
    """Voice/video sessions go to CS; a session with MSRP too loses only its audio keys; a
    session without voice keeps everything (TS 23.216; docs/handover.md)."""
    t = HandoverTracker()
    t.sessions.activate("voice", 1000, "mikey", media=["audio", "video"])
    t.sessions.activate("mixed", 1000, "mikey", media=["audio", "message"])
    t.sessions.activate("chat", 1000, "mikey", media=["message", "bfcp"])
    t.on_cireph(0)
    r = t.on_cireph(1)
    by = {d.session: d for d in r.decisions}
    assert by["voice"].release_keys and t.state_of("voice", 1000) is HandoverState.HANDED_OVER
    assert not by["mixed"].release_keys and by["mixed"].release_media == ("audio",)
    assert t.state_of("mixed", 1000) is HandoverState.ACTIVE and t.sessions.get("mixed", 1000).moved == [
        "audio"
    ]
    assert not by["chat"].release_keys and by["chat"].release_media == ()
    assert r.event["sessions"] == {"1000/voice": "handed_over", "1000/mixed": "active", "1000/chat": "active"}
    # a second SRVCC has no voice left to move in the mixed session
    t.on_cireph(0)
    assert t.on_cireph(1).decisions[0].release_media == ()
