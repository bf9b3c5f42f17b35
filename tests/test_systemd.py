"""The shipped systemd units, sysusers.d and tmpfiles.d files, checked by systemd's own tools.

As an install would, the test copies the units and points ExecStart at the console script
pip installed (the unit says /usr/bin/ue-agent, where a distribution package puts it).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SYSTEMD = Path(__file__).parent.parent / "systemd"
UNITS = ("ue-agent.socket", "ue-agent.service")

pytestmark = [
    pytest.mark.systemd,
    pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"),
]


def installed_script() -> str:
    exe = shutil.which("ue-agent") or str(Path(sys.executable).parent / "ue-agent")
    if not Path(exe).exists():
        pytest.skip("the ue-agent console script is not installed (pip install -e .)")
    return exe


@pytest.fixture
def unit_dir(tmp_path: Path) -> Path:
    exe = installed_script()
    for name in UNITS:
        text = (SYSTEMD / name).read_text()
        (tmp_path / name).write_text(text.replace("/usr/bin/ue-agent", exe))
    return tmp_path


def analyze(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["systemd-analyze", *args], capture_output=True, text=True, timeout=120)


def test_units_reference_the_packaged_binary() -> None:
    service = (SYSTEMD / "ue-agent.service").read_text()
    assert "ExecStart=/usr/bin/ue-agent run --config /etc/ue-agent/config.toml" in service
    assert "Type=notify" in service and "User=ue-agent" in service and "DynamicUser=no" in service
    assert "ListenStream=/run/ue-agent/api.sock" in (SYSTEMD / "ue-agent.socket").read_text()


@pytest.mark.parametrize("unit", UNITS)
def test_verify_is_clean(unit_dir: Path, unit: str) -> None:
    out = analyze("verify", str(unit_dir / unit))
    assert out.returncode == 0, out.stderr
    assert out.stderr == "", out.stderr


def test_security_exposure_at_most_2(unit_dir: Path) -> None:
    text = analyze("security", "--offline=yes", str(unit_dir / "ue-agent.service"))
    assert text.returncode == 0, text.stderr
    m = re.search(r"Overall exposure level for ue-agent\.service: (\d+\.\d+)", text.stdout)
    assert m, text.stdout[-500:]
    assert float(m.group(1)) <= 2.0, text.stdout
    # the machine-readable form agrees on the essentials
    js = analyze("security", "--offline=yes", "--json=short", str(unit_dir / "ue-agent.service"))
    findings = {f["name"]: f for f in json.loads(js.stdout)}
    for name in ("NoNewPrivileges=", "ProtectSystem=", "ProtectHome=", "PrivateTmp=", "User=/DynamicUser="):
        assert findings[name]["set"] is True, name
    # threshold on systemd's 0-100 scale: exits non-zero above 2.0
    unit = str(unit_dir / "ue-agent.service")
    assert analyze("security", "--offline=yes", "--threshold=20", unit).returncode == 0


def test_sysusers_and_tmpfiles(tmp_path: Path) -> None:
    if not (shutil.which("systemd-sysusers") and shutil.which("systemd-tmpfiles")):
        pytest.skip("systemd-sysusers / systemd-tmpfiles are not installed")
    root = tmp_path
    for sub in ("etc", "usr/lib/sysusers.d", "usr/lib/tmpfiles.d"):
        (root / sub).mkdir(parents=True)
    shutil.copy(SYSTEMD / "sysusers.d" / "ue-agent.conf", root / "usr/lib/sysusers.d")
    shutil.copy(SYSTEMD / "tmpfiles.d" / "ue-agent.conf", root / "usr/lib/tmpfiles.d")
    (root / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\ndialout:x:20:\n")
    out = subprocess.run(["systemd-sysusers", f"--root={root}"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    users = {ln.split(":")[0]: ln.split(":") for ln in (root / "etc/passwd").read_text().splitlines()}
    groups = {ln.split(":")[0]: ln.split(":") for ln in (root / "etc/group").read_text().splitlines()}
    assert users["ue-agent"][6] == "/usr/sbin/nologin" and int(users["ue-agent"][2]) < 1000
    assert "ue-agent-clients" in groups and "ue-agent" in groups["dialout"][3].split(",")
    out = subprocess.run(
        ["systemd-tmpfiles", f"--root={root}", "--create"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    uid, gid = int(users["ue-agent"][2]), int(groups["ue-agent"][2])
    run = (root / "run/ue-agent").stat()
    assert (run.st_mode & 0o777, run.st_uid, run.st_gid) == (0o755, uid, gid)
    state = (root / "var/lib/ue-agent").stat()
    assert (state.st_mode & 0o777, state.st_uid) == (0o700, uid)
    conf = (root / "etc/ue-agent").stat()
    assert (conf.st_mode & 0o777, conf.st_uid, conf.st_gid) == (0o750, 0, gid)
