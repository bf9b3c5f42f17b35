"""session.keys answers with the same reply object while nothing it is made of changed
(ue_agent.ops.session), and the connection's encoder reuses what it encoded of it: every
change a reply can show must make a new one. Each step below changes one thing and checks
the reply against one made from scratch, as JSON and byte for byte on the wire."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.fixtures.daemon import ALICE
from ue_agent.agent import Agent
from ue_agent.api.core import ConnectionCore, Peer, Request
from ue_agent.api.protocol import FrozenReply, encode_reply, frozen, wipe
from ue_agent.config import parse_config
from ue_agent.media.sessions import Srvcc
from ue_agent.ops.session import keys_reply


def _run(core: ConnectionCore, agent: Agent, peer: Peer, line: bytes) -> tuple[dict[str, Any], bytes]:
    req = core.line_action(line)
    assert isinstance(req, Request), req
    out = agent.handle(req, peer)
    assert isinstance(out, dict)
    wire = core.finish(req, out)
    try:
        return out, bytes(wire)
    finally:
        wipe(wire)


def test_every_change_makes_a_new_reply() -> None:
    async def go() -> None:
        cfg = parse_config({"card": {"transport": "lab", "subscriber": str(ALICE)}})
        agent = Agent(cfg, lambda *a: None)
        await agent.start()
        try:
            core, peer = ConnectionCore(), Peer(1, 1000, 1000)
            _, offer = _run(core, agent, peer, b'{"id":1,"op":"sdes.offer","media":["audio","message"]}')
            lines = [st["lines"] for st in json.loads(offer)["streams"]]
            answer_line = json.dumps({"id": 2, "op": "sdes.answer", "offer": lines}).encode()
            answer, _ = _run(core, agent, peer, answer_line)
            sid = answer["session"]
            ctx = agent.ctx
            s = ctx.sessions.owned(sid, 1000)
            assert s is not None
            n = 10

            def keys() -> tuple[dict[str, Any], bytes]:
                nonlocal n
                n += 1
                line = json.dumps({"id": n, "op": "session.keys", "session": sid}).encode()
                return _run(core, agent, peer, line)

            seen: dict[int, dict[str, Any]] = {}  # reply object id -> its reply as the peer read it

            def check(changed: bool, before: dict[str, Any] | None) -> dict[str, Any]:
                out, wire = keys()
                seen[id(out)] = json.loads(wire)
                k = ctx.store._sessions[s.key]
                fresh = keys_reply(k, s)
                assert json.loads(wire) == json.loads(bytes(encode_reply({"id": n, "ok": True, **fresh})))
                assert wire == bytes(encode_reply({"id": n, "ok": True, **frozen(fresh)}))
                assert (out is not before) is changed
                return out

            first = check(True, None)
            assert isinstance(first, FrozenReply)
            with pytest.raises(TypeError):
                first["state"] = "changed"
            same = check(False, first)  # nothing changed: the same object
            # SRVCC started: state and handover change
            ctx.sessions.srvcc(Srvcc.STARTED)
            moved = check(True, same)
            assert seen[id(moved)]["state"] == "handover_pending"
            assert seen[id(moved)]["handover"] == "handover_pending"
            # cancelled: back to active
            ctx.sessions.srvcc(Srvcc.CANCELLED)
            back = check(True, moved)
            assert seen[id(back)]["state"] == "active"
            # the protection changes in place (SRVCC success moves the voice medium to CS)
            assert s.protection is not None
            s.protection.media["audio"] = "cs-radio"
            scoped_down = check(True, back)
            assert seen[id(scoped_down)]["protection"]["media"]["audio"] == "cs-radio"
            check(False, scoped_down)
            # a re-key is wanted
            s.rekey_required = True
            wanted = check(True, scoped_down)
            assert seen[id(wanted)]["handover"] == "rekey_required"
            # an SSRC's index report: replies carry it, and are made anew
            ctx.store.report(s.key, 0x1234, 70000)
            rep = check(True, wanted)
            assert seen[id(rep)]["ssrcs"][0]["roc"] == 1
            check(True, rep)  # with SSRC reports a reply is never kept
        finally:
            await agent.stop()

    asyncio.run(go())
