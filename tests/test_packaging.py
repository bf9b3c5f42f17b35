"""What a device install gets (issue 10): the daemon's modules never import the lab or the
libraries of the ``[lab]`` extra, and the extra named by the CLI is the one pyproject declares.
The installed-package tests are in tests/test_install.py."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

from ue_agent import cli

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
#: the in-process lab card (config ``transport = "lab"``) is the one device-side use of the lab
ALLOWED = {("ue_agent/transports.py", "ue_agent.lab.uicc")}


def imports(path: Path) -> list[str]:
    """Absolute module names imported anywhere in the file (function-local imports too)."""
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def requirement_name(req: str) -> str:
    return re.split(r"[\s<>=!~;\[]", req, maxsplit=1)[0].lower()


def test_device_modules_do_not_import_the_lab_or_its_libraries() -> None:
    bad = []
    files = [p for p in (REPO / "ue_agent").rglob("*.py") if "lab" not in p.relative_to(REPO).parts[:2]]
    files += list((REPO / "drivers").rglob("*.py"))
    assert any(p.name == "daemon.py" for p in files) and any(p.name == "at_modem.py" for p in files)
    for path in files:
        rel = str(path.relative_to(REPO))
        for name in imports(path):
            lab = name == "ue_agent.lab" or name.startswith("ue_agent.lab.")
            if (lab or name.split(".")[0] in cli.LAB_MODULES) and (rel, name) not in ALLOWED:
                bad.append(f"{rel} imports {name}")
    assert not bad, "\n".join(bad)


def test_lab_extra_is_what_the_cli_checks_and_not_in_the_base() -> None:
    project = PYPROJECT["project"]
    base = {requirement_name(r) for r in project["dependencies"]}
    lab = {requirement_name(r) for r in project["optional-dependencies"]["lab"]}
    assert lab == set(cli.LAB_MODULES)
    assert not base & lab
    assert {"cryptography", "pyscard", "pyserial", "pyroute2"} <= base
    assert "ue-agent[lab]" in project["optional-dependencies"]["test"]


def test_packaged_default_config_starts_nothing_dangerous() -> None:
    """/etc/ue-agent/config.toml of the .deb: valid; the card through pcscd (no AT command to
    any tty), no BSF/KMS URL (no network traffic), no modem reports, no netlink watch, and
    the socket admits root only."""
    from ue_agent.config import load_config

    cfg = load_config(REPO / "packaging" / "config.toml")
    assert cfg.card.transport == "pcsc" and cfg.card.port is None
    assert cfg.network.bsf_url is None and cfg.network.kms_url is None
    assert cfg.modem.port is None and not cfg.netlink.enabled
    assert cfg.api.allowed_uids == [] and cfg.api.allowed_gids == []
    assert cfg.api.socket == "/run/ue-agent/api.sock"


def test_every_subpackage_is_in_the_wheel() -> None:
    """pyproject lists the packages explicitly: a new subpackage missing there works in the
    editable install the tests use and is absent from the wheel (tests/test_install.py sees
    it only with --install-tests)."""
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    found = {
        ".".join(("ue_agent", *p.parent.relative_to(REPO / "ue_agent").parts))
        for p in (REPO / "ue_agent").rglob("__init__.py")
    }
    found |= {
        ".".join(("ue_agent.drivers", *p.parent.relative_to(REPO / "drivers").parts))
        for p in (REPO / "drivers").rglob("__init__.py")
    }
    assert found - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"
