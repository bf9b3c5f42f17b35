"""Process hardening at daemon start: not dumpable, memory locked where the limits allow.

- ``PR_SET_DUMPABLE`` 0 (prctl(2)): no core file, and /proc/PID/mem, /proc/PID/environ and
  ptrace are closed to the agent's own uid (only a process with CAP_SYS_PTRACE gets in).
  The /proc/PID files then belong to root.
- ``mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT)`` (mlockall(2)): key pages never go to
  swap. MCL_ONFAULT locks pages as they are touched instead of faulting in every mapping
  (thread stacks, arenas), so resident memory does not grow. The kernel counts the whole
  virtual size against RLIMIT_MEMLOCK, and with MCL_FUTURE a later mapping past the limit
  fails: the agent locks only when the limit is unlimited (``LimitMEMLOCK=infinity`` in
  the unit) or it holds CAP_IPC_LOCK, and otherwise runs unlocked and says so.

Both are Linux calls through libc (ctypes, on the symbols the interpreter is already linked
with: no ``ctypes.util.find_library``, which runs ``ldconfig -p`` in a subprocess and
imports tempfile at every start); elsewhere they are reported as not done.
"""

from __future__ import annotations

import ctypes
import logging
import os
import resource
from typing import Any

log = logging.getLogger(__name__)

PR_SET_DUMPABLE = 4
PR_GET_DUMPABLE = 3
MCL_CURRENT = 1
MCL_FUTURE = 2
MCL_ONFAULT = 4
CAP_IPC_LOCK = 14

_libc: Any = None


def _c() -> Any:
    global _libc
    if _libc is None:
        # dlopen(NULL): the running program and the libraries it is linked with, libc among
        # them (CPython always links it); prctl and mlockall resolve there
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def set_not_dumpable() -> bool:
    """prctl(PR_SET_DUMPABLE, 0); True when the process is now not dumpable."""
    try:
        libc = _c()
        if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
            log.warning("prctl(PR_SET_DUMPABLE, 0) failed: %s", os.strerror(ctypes.get_errno()))
            return False
        return libc.prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) == 0
    except (OSError, AttributeError):
        log.warning("prctl is not available: the process stays dumpable")
        return False


def _has_cap(bit: int) -> bool:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> bit & 1)
    except (OSError, ValueError, IndexError):
        pass
    return False


def lock_memory() -> str:
    """mlockall where it is safe; returns what happened: "locked", or why not ("limit ...")."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    if soft != resource.RLIM_INFINITY and not _has_cap(CAP_IPC_LOCK):
        why = f"limit {soft // 1024} KiB"
        log.info(
            "memory not locked: RLIMIT_MEMLOCK is %s and the agent lacks CAP_IPC_LOCK "
            "(set LimitMEMLOCK=infinity in the unit to lock it)",
            why,
        )
        return why
    try:
        libc = _c()
        if libc.mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT) != 0:
            err = ctypes.get_errno()
            log.warning("mlockall failed: %s: memory not locked", os.strerror(err))
            return f"mlockall: {os.strerror(err)}"
    except (OSError, AttributeError):
        return "mlockall not available"
    return "locked"


def harden() -> dict[str, Any]:
    """Everything above, once, at daemon start; the outcome for the log and status."""
    return {"dumpable": not set_not_dumpable(), "memory_lock": lock_memory()}
