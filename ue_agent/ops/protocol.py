"""The protocol's own operations, answered by the connection itself (:mod:`ue_agent.api.core`)."""

from __future__ import annotations

from ue_agent.ops.declare import declare, request


@request
class Hello:
    protocols: list[int] | None = None
    client: str | None = None


@request
class Subscribe:
    events: list[str] | None = None


HELLO = declare("hello", Hello)
SUBSCRIBE = declare("subscribe", Subscribe)
