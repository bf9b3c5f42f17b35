"""Search a live process's memory for byte strings (/proc/PID/maps + /proc/PID/mem).

Needs ptrace access to the process (root, or CAP_SYS_PTRACE: the agent is not dumpable).
Every readable private or anonymous mapping is read once; the kernel's [vvar]/[vsyscall]
pages are skipped. Bounded by the process's size.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable


def scan(pid: int, needles: Iterable[bytes]) -> dict[bytes, int]:
    """How many times each needle occurs in the process's readable memory."""
    found = dict.fromkeys(needles, 0)
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in maps:
            parts = line.split()
            if "r" not in parts[1]:
                continue
            name = parts[5] if len(parts) > 5 else ""
            if name in ("[vvar]", "[vsyscall]", "[vvar_vclock]"):
                continue
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            try:
                mem.seek(lo)
                data = mem.read(hi - lo)
            except (OSError, ValueError, OverflowError):
                continue
            for n in found:
                found[n] += data.count(n)
    return found


def forms(key: bytes) -> dict[str, bytes]:
    """The forms a key can be found in: raw, and base64 as handed out."""
    return {"raw": key, "base64": base64.b64encode(key)}
