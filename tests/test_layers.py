"""The direction of imports (docs/architecture.md): the sans-IO core never imports the edges.

card/, crypto/, gba/, kms/, media/ and handover/ decide and compute; drivers (PC/SC, AT,
netlink), the lab, the API server and the daemon are built on them, never the other way.
"""

from __future__ import annotations

import ast
from pathlib import Path

import ue_agent

ROOT = Path(ue_agent.__file__).parent
CORE = ("card", "crypto", "gba", "kms", "media", "handover")
EDGES = (
    "ue_agent.drivers",
    "ue_agent.lab",
    "ue_agent.api",
    "ue_agent.daemon",
    "ue_agent.agent",
    "ue_agent.cli",
)
#: third-party I/O libraries the core must not import either (the lab and drivers use them)
IO_LIBRARIES = ("aiohttp", "smartcard", "serial", "pyroute2", "pylibsrtp")


def imports(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def test_core_does_not_import_the_edges():
    bad = []
    for pkg in CORE:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            for name in imports(path):
                if name.startswith(EDGES) or name.split(".")[0] in IO_LIBRARIES:
                    bad.append(f"{path.relative_to(ROOT.parent)} imports {name}")
    assert not bad, "\n".join(bad)
