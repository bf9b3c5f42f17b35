"""Every socket operation, by name, in the order ``hello`` lists them.

Importing the family modules runs their declarations; this is the one table the
dispatcher, the schema check and the docs test read.
"""

from __future__ import annotations

from typing import Any

from ue_agent.ops import (  # noqa: F401 - declares the ops
    aka,
    conference,
    deferred,
    divert,
    ims,
    messaging,
    mikey,
    protocol,
    sdes,
    session,
    status,
)
from ue_agent.ops.declare import DECLARED, Op

#: families in the order ``hello`` lists them; within a family, declaration order
_ORDER = (
    "hello",
    "status",
    "subscribe",
    "capabilities",
    "ims",
    "sdes",
    "mikey",
    "message",
    "conference",
    "session",
)


def _rank(op: Op[Any]) -> int:
    return _ORDER.index(op.family) if op.family in _ORDER else len(_ORDER)


#: name -> declaration
OPERATIONS: dict[str, Op[Any]] = {op.name: op for op in sorted(DECLARED, key=_rank)}
