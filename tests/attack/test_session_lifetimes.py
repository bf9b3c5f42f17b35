"""What a client can leave behind in the agent (issue 13): offers that are never answered,
sessions withdrawn by the reuse guard, expired tickets. None of them may pile up or block
anyone else.

Bounded: one in-process daemon (or none), a fixed number of requests (at most 20,000
withdrawn sessions through the real handlers), no waits on time: the TTL is checked with
the registry's injected clock.
"""

from __future__ import annotations

import base64
import os
import socket
from typing import Any

from tests.attack.test_api_load import read_lines
from tests.fixtures.clock import Clock
from ue_agent.api.core import Peer
from ue_agent.config import parse_config
from ue_agent.media.sessions import Phase, SessionRegistry


def _peer_offer() -> list[list[str]]:
    key = base64.b64encode(os.urandom(30)).decode()
    return [[f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{key}"]]


def test_offers_die_with_their_connection(lab_agent) -> None:
    """64 sdes.offer on one connection, then it closes: nobody is blocked afterwards, and
    the offers' keys are gone (status counts none)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(lab_agent.socket)
    s.sendall(b"".join(b'{"id":%d,"op":"sdes.offer","media":["audio"]}\n' % i for i in range(64)))
    replies = read_lines(s, 64)
    ok = [r for r in replies if r["ok"]]
    refused = [r for r in replies if not r["ok"]]
    assert len(ok) == 32 and {r["error"]["code"] for r in refused} == {"media.too_many_sessions"}
    with lab_agent.client() as other:  # the table of offers is full meanwhile
        assert other.call("sdes.offer", media=["audio"])["error"]["code"] == "media.too_many_sessions"
        assert other.request("status")["sessions"]["pending_offers"] == 32
    s.close()
    with lab_agent.client() as other:
        for _ in range(200):  # the close reaches the agent's loop (bounded: 200 status calls)
            if other.request("status")["sessions"]["pending_offers"] == 0:
                break
        assert other.request("status")["sessions"]["pending_offers"] == 0
        for _ in range(32):  # the room is free again, for anyone
            assert other.request("sdes.offer", media=["audio"])["session"]
    assert "32 offer(s) waiting for an answer dropped" in lab_agent.log_text()


def test_a_connection_holding_offers_is_not_evicted_for_room(agent_factory) -> None:
    daemon = agent_factory(api={"max_clients": 2})
    holder = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    holder.connect(daemon.socket)
    holder.sendall(b'{"id":1,"op":"sdes.offer","media":["audio"]}\n')
    assert read_lines(holder, 1)[0]["ok"]
    idle = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    idle.connect(daemon.socket)
    with daemon.client() as c:  # takes the idle one's place, not the offer holder's
        assert c.request("status")["sessions"]["pending_offers"] == 1
    (line,) = read_lines(idle, 1)
    assert line["error"]["code"] == "api.evicted"
    holder.sendall(b'{"id":2,"op":"status"}\n')
    assert read_lines(holder, 1)[0]["sessions"]["pending_offers"] == 1
    holder.close()
    idle.close()


def test_offers_expire_after_their_ttl() -> None:
    clock, dropped = Clock(1000.0), []
    reg = SessionRegistry(max_pending=4, max_sessions=8, offer_ttl=60.0, clock=clock)
    reg.on_drop = dropped.append
    for i in range(4):
        reg.offer(f"o{i}", 1000, "sdes", None, ["audio"], conn=7)  # type: ignore[arg-type]
        clock.now += 10
    assert reg.count_pending() == 4
    clock.now = 1000.0 + 60 + 15  # o0 and o1 are older than 60 s
    reg.check_room("offers")  # room again: the expired offers went first
    assert sorted(s.id for s in dropped) == ["o0", "o1"] and reg.count_pending() == 2
    assert reg.reap() == 0  # nothing more has expired
    assert reg.connection_closed(7) == 2 and reg.count_pending() == 0 and len(dropped) == 4


def _ctx(**limits: Any):  # type: ignore[no-untyped-def]
    """The agent's Context with its real registry and key store (no card, no network)."""
    from ue_agent.ops.context import Context

    cfg = parse_config({"card": {"transport": "lab", "subscriber": "x"}, "limits": limits})
    events: list[tuple[str, dict]] = []
    return Context(cfg, lambda name, body: events.append((name, body)), None, None), events  # type: ignore[arg-type]


def test_withdrawn_sessions_are_pruned_and_not_counted() -> None:
    """20,000 sessions withdrawn by the reuse guard (an index that goes back) through the real
    handlers: the registry keeps at most its bounded record of closed sessions, the key
    store at most its tombstones, and status counts none of them."""
    from ue_agent.media.sessions import MAX_CLOSED
    from ue_agent.ops.sdes import SdesAnswer, sdes_answer
    from ue_agent.ops.session import SessionReport, session_report

    ctx, events = _ctx(preset="gateway")
    peer = Peer(1, 1000, 1000, (), 3)
    n = 20000
    for _ in range(n):
        sid = sdes_answer(ctx, SdesAnswer(offer=_peer_offer()), peer)["session"]
        session_report(ctx, SessionReport(session=sid, ssrc=1, index=100), peer)
        try:
            session_report(ctx, SessionReport(session=sid, ssrc=1, index=50), peer)
        except Exception as exc:  # noqa: BLE001 - the withdrawal
            assert getattr(exc, "code", None) == "media.key_reuse"
        else:
            raise AssertionError("the index went back and the session stayed")
    assert sum(1 for name, body in events if body.get("kind") == "key_reuse") == n
    held = ctx.sessions.sessions()
    assert len(held) <= MAX_CLOSED and all(s.phase is Phase.CLOSED for s in held)
    store = ctx.store
    assert len(store) == 0 and len(store._tombstones) <= store._max_tombstones
    # what status shows (ue_agent.ops.status): live sessions only
    reg = ctx.sessions
    assert (reg.count_live(1000), reg.count_pending(1000), reg.count_by_state(1000)) == (0, 0, {})
    assert reg.count_live() == 0


def test_expired_tickets_leave_the_caches(lab_network) -> None:
    """Tickets cached for reuse (ours per peer, resolved ones per ticket) are dropped and
    zeroized once expired, before the next offer or answer: calling many peers does not
    grow the caches beyond the live tickets. Real KMS over loopback HTTP; the clients'
    clock is moved past the tickets' expiry (no waiting)."""
    import asyncio

    from tests.test_kms_http import STREAMS, ue, uri
    from ue_agent.drivers.http import HttpClient

    clock = Clock(1000.0)
    clock.now = __import__("time").time()

    async def go() -> None:
        async with HttpClient() as http:
            a = ue(lab_network, http, "alice", clock=clock)
            b = ue(lab_network, http, "bob", clock=clock)
            offers = [await a.offer(uri(who), STREAMS) for who in ("bob", "carol")]
            await b.answer(offers[0].transfer_init)
            assert (a.cached_tickets, b.cached_tickets) == (2, 1)
            held = [offer.pending.issued for offer in offers] + list(b._resolved.values())
            assert a.prune() == b.prune() == 0  # all live
            clock.now = max(t.expiry for t in held) + 1
            assert (a.prune(), b.prune()) == (2, 1)
            assert a.cached_tickets == b.cached_tickets == 0
            assert all(t.tgk.zeroized and t.mpk_i.zeroized for t in held)

    asyncio.run(go())
