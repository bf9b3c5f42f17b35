"""``ue-agent run`` with the garbage collector's pauses written down, for
``python -m benchmarks.bench_gc``: each collection's generation, start (wall clock) and
length, one line each, to the file ``UEA_GC_LOG`` names; SIGUSR2 makes it run a full
collection (when one comes is the collector's choice: rare in a short run). ``UEA_GC_NO_FREEZE=1``:
the warm-up's ``gc.freeze()`` does nothing (the daemon as it was before it). Not a way to run
the agent."""

from __future__ import annotations

import gc
import os
import signal
import sys
import time
from typing import Any

from ue_agent.cli import main

_log = open(os.environ["UEA_GC_LOG"], "a", buffering=1)  # noqa: SIM115 - for the process's life
_started: list[tuple[float, float]] = []


def _pause(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _started.append((time.time(), time.perf_counter()))
    elif _started:
        wall, t0 = _started.pop()
        _log.write(f"{info['generation']} {wall:.6f} {time.perf_counter() - t0:.6f}\n")


gc.callbacks.append(_pause)
signal.signal(signal.SIGUSR2, lambda *_: gc.collect())
if os.environ.get("UEA_GC_NO_FREEZE") == "1":
    gc.freeze = lambda: None

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
