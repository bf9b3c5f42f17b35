"""[limits] and the session registry's counters.

- The counts ``status`` shows are kept as sessions change phase; whatever the sequence of
  changes, they equal a walk over every session (per owner and in all).
- A new session is refused at offer time (``media.too_many_sessions``) when it could not be
  answered: no SDP goes out for it. Checked on a running daemon with small limits.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fixtures.daemon import ALICE
from ue_agent.config import parse_config
from ue_agent.errors import MediaError
from ue_agent.media.sessions import Phase, SessionRegistry, Srvcc

BOB = ALICE.parent / "bob.toml"


def _walk(reg: SessionRegistry, owner: int | None) -> tuple[int, int, dict[str, int], dict[str, int]]:
    live = pending = 0
    by_state: dict[str, int] = {}
    by_ho: dict[str, int] = {}
    for s in reg.sessions():
        if owner is not None and s.owner != owner:
            continue
        if s.live:
            live += 1
            by_state[s.key_state] = by_state.get(s.key_state, 0) + 1
        if s.phase is Phase.OFFERED:
            pending += 1
        h = s.handover
        if h is not None:
            by_ho[h.value] = by_ho.get(h.value, 0) + 1
    return live, pending, by_state, by_ho


ACTIONS = st.lists(
    st.tuples(
        st.sampled_from(
            ["offer", "answer_ours", "answer_theirs", "drop", "withdraw", "srvcc", "ip_lost", "rekey"]
        ),
        st.integers(0, 7),  # which session / which SRVCC report
        st.sampled_from([1000, 1001]),  # owner
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(ACTIONS)
def test_counters_equal_a_walk_over_every_session(actions) -> None:  # type: ignore[no-untyped-def]
    reg = SessionRegistry(max_pending=1000, max_sessions=1000)
    srvcc = list(Srvcc)
    for act, i, owner in actions:
        sid = f"s{i}"
        s = reg.get(sid, owner)
        if act == "offer" and s is None:
            reg.offer(sid, owner, "sdes", None, ["audio"])  # type: ignore[arg-type]
        elif act == "answer_ours" and s is not None and s.phase is Phase.OFFERED:
            reg.activate(sid, s.owner, "sdes", Phase.ACTIVE)
        elif act == "answer_theirs" and s is None:
            reg.activate(sid, owner, "mikey", Phase.ANSWERED)
        elif act == "drop":
            reg.drop(sid, owner)
        elif act == "withdraw":
            reg.withdrawn(f"{owner}/{sid}", "compromised")
        elif act == "srvcc":
            reg.srvcc(srvcc[i % len(srvcc)])
        elif act == "ip_lost":
            reg.ip_lost()
        elif act == "rekey":
            reg.require_rekey(sid, owner)
        for who in (None, 1000, 1001):
            live, pending, by_state, by_ho = _walk(reg, who)
            assert reg.count_live(who) == live and reg.count_pending(who) == pending
            assert reg.count_by_state(who) == by_state
            assert reg.count_by_handover(who) == by_ho
        assert len(reg) == reg.count_live() and reg.pending_offers == reg.count_pending()
    reg.clear()
    assert reg.count_live() == reg.count_pending() == 0 and reg.count_by_handover() == {}


def test_registry_refuses_an_offer_that_could_not_be_answered() -> None:
    reg = SessionRegistry(max_pending=2, max_sessions=3)
    reg.offer("o1", 1, "sdes", None, ["audio"])  # type: ignore[arg-type]
    reg.offer("o2", 1, "sdes", None, ["audio"])  # type: ignore[arg-type]
    with pytest.raises(MediaError) as e:
        reg.check_room("offers")
    assert e.value.code == "media.too_many_sessions" and e.value.details["limit"] == 2
    reg.check_room("sessions", offer=False)  # answering a peer's offer: one place left
    reg.activate("a1", 1, "sdes", Phase.ANSWERED)
    for offer in (True, False):  # 1 live + 2 waiting offers = 3: nothing more, of either kind
        with pytest.raises(MediaError) as e:
            reg.check_room("offers", offer=offer)
        assert e.value.details["limit"] == (2 if offer else 3)  # the pending cap is checked first
    reg.activate("o1", 1, "sdes", Phase.ACTIVE)  # an offer answered: still 3, still full
    with pytest.raises(MediaError):
        reg.check_room("sessions", offer=False)
    reg.drop("o2", 1)
    reg.check_room("offers")


def _lab(limits: str):  # type: ignore[no-untyped-def]
    import tomllib

    return parse_config(
        tomllib.loads(f'[card]\ntransport = "lab"\nsubscriber = "x.toml"\n[limits]\n{limits}'), "t.toml"
    )


def test_limits_presets_and_overrides() -> None:
    assert parse_config({"card": {"transport": "lab", "subscriber": "x"}}).limits.effective() == (64, 32)
    assert _lab('preset = "gateway"').limits.effective() == (4096, 1024)
    assert _lab('preset = "gateway"\nmax_sessions = 100').limits.effective() == (100, 100)
    assert _lab("max_pending_offers = 4").limits.effective() == (64, 4)
    for bad, key in (("max_sessions = 0", "limits.max_sessions"), ('preset = "phone"', "limits.preset")):
        with pytest.raises(Exception) as e:
            _lab(bad)
        assert getattr(e.value, "code", "") == "config.invalid" and e.value.details["key"] == key  # type: ignore[attr-defined]


def test_daemon_refuses_sdes_offer_at_the_cap_not_the_answer_after(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory(limits={"max_sessions": 2, "max_pending_offers": 2})
    peer = daemon_factory(subscriber=BOB)
    with d.client() as a, peer.client() as b:
        o1 = a.request("sdes.offer", media=["audio"])
        o2 = a.request("sdes.offer", media=["audio"])
        refused = a.call("sdes.offer", media=["audio"])  # 2 offers wait: a third could not be answered
        assert refused["ok"] is False and refused["error"]["code"] == "media.too_many_sessions"
        assert refused["error"]["details"]["limit"] == 2 and "streams" not in refused
        # both offers can still be answered: the cap was checked when they were made
        for o in (o1, o2):
            ans = b.request("sdes.answer", offer=[s["lines"] for s in o["streams"]])
            a.request("sdes.answer", session=o["session"], answer=[s["lines"] for s in ans["streams"]])
        st = a.request("status")["sessions"]
        assert st["open"] == 2 and st["pending_offers"] == 0
        # full: a peer's offer is refused before an answer is made
        po = b.request("sdes.offer", media=["audio"])
        refused = a.call("sdes.answer", offer=[s["lines"] for s in po["streams"]])
        assert refused["error"]["code"] == "media.too_many_sessions" and "streams" not in refused
        a.request("session.close", session=o1["session"])
        assert a.request("sdes.offer", media=["audio"])["session"]
