"""The direction of imports (docs/architecture.md "Import rules"), held by reading the source.

- The sans-IO cores (card, crypto, gba, kms, media, handover) decide and compute: they import
  no socket, thread, HTTP or lab module (stdlib socket/threading/asyncio streams/http.client/
  urllib.request; the drivers, among them the project's HTTP client ue_agent.drivers.http;
  the lab, the API, the daemon and the agent's glue), nor a third-party I/O library. The GBA
  glue takes its HTTP client injected and imports only ue_agent.httpmsg (values).
- Nothing outside ue_agent/lab and the tests imports the lab: the daemon opens the lab card
  through the transport registry (ue_agent.transports.TRANSPORTS names it), never by import.
- The UE's MIKEY code does not import the KMS side (ue_agent.kms.service, the lab KMS).

Each rule has a self-test: the checker is run on a module that breaks it and must say so.
"""

from __future__ import annotations

import ast
from pathlib import Path

import ue_agent

ROOT = Path(ue_agent.__file__).parent
REPO = ROOT.parent
CORE = ("card", "crypto", "gba", "kms", "media", "handover")
#: the project's own modules the core must not import
EDGES = (
    "ue_agent.drivers",
    "ue_agent.lab",
    "ue_agent.api",
    "ue_agent.ops",
    "ue_agent.daemon",
    "ue_agent.agent",
    "ue_agent.cli",
    "ue_agent.network",
    "ue_agent.card_worker",
    "ue_agent.transports",
    "ue_agent.modem_reports",
)
#: standard-library I/O the core must not import
STDLIB_IO = (
    "socket",
    "threading",
    "_thread",
    "http.client",
    "urllib.request",
    "asyncio.streams",
    "selectors",
)
#: asyncio's stream API (the core may use asyncio's locks and futures, not its sockets)
ASYNCIO_STREAMS = frozenset(
    {
        "open_connection",
        "start_server",
        "open_unix_connection",
        "start_unix_server",
        "StreamReader",
        "StreamWriter",
    }
)
#: third-party I/O libraries the core must not import either (the lab and drivers use them)
IO_LIBRARIES = ("aiohttp", "h11", "smartcard", "serial", "pyroute2", "pylibsrtp")
#: the UE's MIKEY modules and what they must not import (the KMS's own side)
UE_MIKEY = ("session.py", "client.py", "streams.py", "sdp.py", "ids.py", "deferred.py", "messaging.py")
KMS_SIDE = ("ue_agent.kms.service", "ue_agent.lab")


def imports(source: str) -> list[str]:
    """Every module ``source`` imports (absolute names; ``from a import b`` gives ``a`` and
    ``a.b``), and ``asyncio.streams`` for a use of asyncio's stream API."""
    names: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            names += [f"{node.module}.{a.name}" for a in node.names]
            if node.module == "asyncio" and ASYNCIO_STREAMS & {a.name for a in node.names}:
                names.append("asyncio.streams")
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "asyncio"
            and node.attr in ASYNCIO_STREAMS
        ):
            names.append("asyncio.streams")
    return names


def _matches(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def core_violations(source: str) -> list[str]:
    return [
        n
        for n in imports(source)
        if _matches(n, EDGES) or _matches(n, STDLIB_IO) or n.split(".")[0] in IO_LIBRARIES
    ]


def lab_violations(source: str) -> list[str]:
    return [n for n in imports(source) if _matches(n, ("ue_agent.lab",))]


def kms_side_violations(source: str) -> list[str]:
    return [n for n in imports(source) if _matches(n, KMS_SIDE)]


def _report(paths: list[Path], check: object) -> list[str]:
    assert callable(check)
    return [f"{p.relative_to(REPO)} imports {n}" for p in paths for n in check(p.read_text())]


def test_core_imports_no_io_and_no_edge() -> None:
    paths = [p for pkg in CORE for p in sorted((ROOT / pkg).rglob("*.py"))]
    assert paths
    bad = _report(paths, core_violations)
    assert not bad, "\n".join(bad)


def test_nothing_outside_the_lab_imports_it() -> None:
    paths = [p for p in sorted(ROOT.rglob("*.py")) if "lab" not in p.relative_to(ROOT).parts[:1]]
    paths += sorted((REPO / "drivers").rglob("*.py"))
    bad = _report(paths, lab_violations)
    assert not bad, "\n".join(bad)


def test_the_lab_card_is_registered_not_imported() -> None:
    from ue_agent import transports

    assert transports.TRANSPORTS["lab"] == "ue_agent.lab.card:open_transport"


def test_the_ue_mikey_code_does_not_import_the_kms_side() -> None:
    bad = _report(
        [ROOT / "kms" / name for name in UE_MIKEY if (ROOT / "kms" / name).exists()], kms_side_violations
    )
    assert not bad, "\n".join(bad)


# -- the checker itself ---------------------------------------------------------------------------
def test_the_checker_catches_socket_threads_http_and_the_lab() -> None:
    for bad in (
        "import socket",
        "from socket import socket",
        "import threading",
        "import http.client",
        "from urllib.request import urlopen",
        "import asyncio\nasyncio.open_connection('h', 1)",
        "from asyncio import start_unix_server",
        "import ue_agent.lab.uicc",
        "from ue_agent.lab import uicc",
        "from ue_agent.drivers.http import HttpClient",
        "from ue_agent.drivers.pcsc import PcscTransport",
        "import aiohttp",
        "import h11",
    ):
        assert core_violations(bad), bad
    for fine in ("import asyncio\nasyncio.Lock()", "import struct", "from ue_agent.crypto import kdf"):
        assert not core_violations(fine), fine
    assert lab_violations("from ue_agent.lab.uicc import SoftUicc")
    assert lab_violations("import ue_agent.lab")
    assert not lab_violations("x = 'ue_agent.lab.card:open_transport'")
    assert kms_side_violations("from ue_agent.kms.service import EXT_DIVERT")
    assert kms_side_violations("from ue_agent.kms import service")


def test_the_pcsc_marker_follows_the_fixtures() -> None:
    """tests/conftest.py marks a test ``pcsc`` when it uses a PC/SC fixture, directly or not."""
    from tests import conftest

    class Item:
        def __init__(self, fixtures: tuple[str, ...]) -> None:
            self.fixturenames = fixtures
            self.markers: list[str] = []

        def add_marker(self, mark: object) -> None:
            self.markers.append(getattr(mark, "name", ""))

        def get_closest_marker(self, name: str) -> None:
            return None

    class Config:
        def getoption(self, name: str) -> bool:
            return True

    items = [Item(("vpcd_card", "pcscd", "tmp_path")), Item(("lab_agent", "tmp_path"))]
    conftest.pytest_collection_modifyitems(Config(), items)  # type: ignore[arg-type]
    assert [i.markers for i in items] == [["pcsc"], []]
