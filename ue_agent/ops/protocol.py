"""The protocol's own operations, answered by the connection itself (:mod:`ue_agent.api.core`)."""

from __future__ import annotations

from ue_agent.ops.declare import IntList, Text, TextList, declare, request


@request
class Hello:
    protocols: IntList | None = None
    client: Text | None = None


@request
class Subscribe:
    events: TextList | None = None


HELLO = declare("hello", Hello)
SUBSCRIBE = declare("subscribe", Subscribe)
