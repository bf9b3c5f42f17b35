"""``ue-agent run`` without the warm-up, for ``python -m benchmarks --no-warm-up``: the same
daemon, its first call's modules loaded and paths run by that call itself, to show what the
first-call goals catch (docs/performance.md). Not a way to run the agent."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable

import ue_agent.warmup
from ue_agent.cli import main


def _start(
    cfg: object,
    then: Callable[[], None] | None = None,
    loop: asyncio.AbstractEventLoop | None = None,
    *,
    freeze: bool = False,
) -> None:
    """Only what the warm-up hands on when it ends: the at-start bootstrap."""
    if then is not None:
        if loop is None:
            then()
        else:
            loop.call_soon_threadsafe(then)


ue_agent.warmup.start = _start  # type: ignore[assignment]

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
