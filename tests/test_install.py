"""The package as an image builder installs it (issue 10): a wheel built from a clean copy of
the tree, installed into fresh virtualenvs outside the tree (no editable install, no source
tree on sys.path, cwd elsewhere).

- lab venv (``ue-agent[lab]``): ``ue-agent profiles`` lists every shipped profile,
  ``ue-agent card info`` reads the lab card, ``ue-agent demo`` passes.
- device venv (base dependencies only): aiohttp and pylibsrtp are not even installed,
  ``ue-agent demo`` / ``ue-agent lab ...`` name the extra to install, and the daemon runs on
  an AT modem (the pty simulator, driven from this test process) without importing aiohttp,
  pylibsrtp or the lab (the modules in its sys.modules when it exits are checked).

These tests build and install (pip's own wheel cache, ~/.cache/pip or $PIP_CACHE_DIR, keeps
it to seconds after the first run), so they are deselected unless pytest gets
``--install-tests``; .ci/run passes it.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fixtures.daemon import RunningDaemon, aka_challenge, config_text, expected_keys, short_dir

pytestmark = [pytest.mark.install, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parent.parent
SHIPPED_PROFILES = sorted(p.stem for p in (REPO / "hw_profiles").glob("*.toml"))
IMPI = "001010000000001@ims.mnc001.mcc001.3gppnetwork.org"
#: the [lab] extra's libraries (and aiohttp's own dependencies a device must not get either)
LAB_ONLY = ("aiohttp", "pylibsrtp", "yarl", "multidict", "frozenlist", "aiosignal")


def clean_env() -> dict[str, str]:
    """The environment without anything pointing into this tree or its venv."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PYTHONNOUSERSITE"] = "1"
    return env


def run(cmd: list[str], cwd: Path, timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        cmd, cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=timeout, **kw
    )


def copy_clean_tree(dest: Path) -> None:
    """The files git would check out (tracked plus new, not ignored): no .venv, no egg-info."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    )
    for name in out.stdout.decode().split("\0"):
        src = REPO / name
        if name and src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


@pytest.fixture(scope="session")
def wheel(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"
    copy_clean_tree(src)
    out = run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(base / "dist"), str(src)], base
    )
    assert out.returncode == 0, out.stdout + out.stderr
    (whl,) = (base / "dist").glob("ue_agent-*.whl")
    return whl


def make_venv(path: Path, requirement: str) -> Path:
    """A fresh venv (the interpreter this suite runs on) with ``requirement`` from the wheel."""
    out = run([sys.executable, "-m", "venv", "--without-pip", str(path)], path.parent)
    assert out.returncode == 0, out.stderr
    py = path / "bin" / "python"
    # this suite's pip installs into the new venv (--python): the venv itself gets no pip
    out = run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", requirement], path.parent)
    assert out.returncode == 0, out.stdout + out.stderr
    where = run([str(py), "-c", "import ue_agent; print(ue_agent.__file__)"], path.parent)
    assert where.stdout.strip().startswith(str(path)), where.stdout + where.stderr
    return path


@pytest.fixture(scope="session")
def lab_venv(wheel: Path, tmp_path_factory) -> Path:
    return make_venv(tmp_path_factory.mktemp("venv-lab") / "venv", f"{wheel}[lab]")


@pytest.fixture(scope="session")
def device_venv(wheel: Path, tmp_path_factory) -> Path:
    return make_venv(tmp_path_factory.mktemp("venv-device") / "venv", str(wheel))


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    """A working directory outside the tree, with nothing importable in it."""
    d = tmp_path / "cwd"
    d.mkdir()
    return d


def test_lab_venv_profiles_card_info_and_demo(lab_venv: Path, elsewhere: Path) -> None:
    bin_ = lab_venv / "bin"
    out = run([str(bin_ / "ue-agent"), "profiles", "--json"], elsewhere)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert sorted(r["name"] for r in rows) == SHIPPED_PROFILES
    assert all(r["source"].startswith(str(lab_venv)) for r in rows), "read from the installed package data"

    # the lab card, with the subscriber file shipped in the installed package
    alice = run(
        [
            str(bin_ / "python"),
            "-c",
            "import ue_agent.lab, pathlib; print(pathlib.Path(ue_agent.lab.__file__)"
            ".parent / 'subscribers' / 'alice.toml')",
        ],
        elsewhere,
    ).stdout.strip()
    assert alice.startswith(str(lab_venv)) and Path(alice).is_file()
    config = elsewhere / "config.toml"
    config.write_text(config_text({"card": {"transport": "lab", "subscriber": alice}}))
    out = run([str(bin_ / "ue-agent"), "card", "info", "--config", str(config), "--json"], elsewhere)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["application"] == "isim" and info["impi"] == IMPI

    # the whole demo (UE-B's card in process: this session may hold the machine's pcscd)
    out = run([str(bin_ / "ue-agent"), "demo", "--no-pcsc"], elsewhere, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "scenarios passed" in out.stdout
    (summary,) = [line for line in out.stdout.splitlines() if "scenarios passed" in line]
    done, total = summary.split("scenarios passed")[0].split()[-1].split("/")
    assert done == total, summary


def test_device_venv_has_no_lab_libraries_and_names_the_extra(device_venv: Path, elsewhere: Path) -> None:
    py = str(device_venv / "bin" / "python")
    probe = "import importlib.util as u, sys; print([m for m in sys.argv[1:] if u.find_spec(m)])"
    out = run([py, "-c", probe, *LAB_ONLY], elsewhere)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr
    ue_agent = str(device_venv / "bin" / "ue-agent")
    out = run([ue_agent, "profiles"], elsewhere)
    assert out.returncode == 0 and all(name in out.stdout for name in SHIPPED_PROFILES), out.stdout
    for argv in (
        ["demo"],
        ["lab", "network", "--subscribers", "x.toml"],
        ["lab", "modem", "--subscriber", "x.toml", "--pty", "p"],
    ):
        out = run([ue_agent, *argv], elsewhere)
        assert out.returncode != 0
        assert "cli.extra_missing" in out.stderr and "pip install 'ue-agent[lab]'" in out.stderr, out.stderr
        assert "Traceback" not in out.stderr


def b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


#: ``ue-agent`` (the console script's entry point), writing sys.modules to a file at exit
WITH_MODULE_DUMP = """
import atexit, sys
out = sys.argv.pop(1)
atexit.register(lambda: open(out, "w").write("\\n".join(sorted(sys.modules))))
from ue_agent.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_device_daemon_on_an_at_modem_never_imports_the_lab(
    device_venv: Path, modem_factory, subscriber_file: Path, elsewhere: Path
) -> None:
    """The daemon of the device venv on the pty modem simulator (run by this test process):
    READY=1, identities and an AKA over +CSIM, and not one lab module in sys.modules at exit."""
    sim = modem_factory("generic-at")
    d = short_dir()
    try:
        cfg = {
            "card": {"transport": "at", "port": str(sim.link_path), "profile": "generic-at"},
            "api": {"socket": str(d / "api.sock")},
            "log": {"level": "debug"},
        }
        config = d / "config.toml"
        config.write_text(config_text(cfg))
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(d / "notify.sock"))
        log = d / "daemon.log"
        env = {**clean_env(), "NOTIFY_SOCKET": str(d / "notify.sock")}
        dump = d / "modules.txt"
        py = str(device_venv / "bin" / "python")
        with open(log, "ab") as f:
            proc = subprocess.Popen(
                [py, "-c", WITH_MODULE_DUMP, str(dump), "-vv", "run", "--config", str(config)],
                stdout=f,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=elsewhere,
            )
        daemon = RunningDaemon(proc, d, str(d / "api.sock"), config, log, notify)
        try:
            daemon.wait_notify("READY=1")
            rand, autn = aka_challenge(33, subscriber_file)
            with daemon.client() as c:
                deadline = time.monotonic() + 30
                status = c.request("status")
                while "impi" not in status["card"] and time.monotonic() < deadline:
                    time.sleep(0.1)  # the card worker reads the identities after READY=1
                    status = c.request("status")
                r = c.request("ims.authenticate", rand=b64(rand), autn=b64(autn))
        finally:
            rc = daemon.stop(signal.SIGTERM)
        text = daemon.log_text()
        assert rc == 0, text[-4000:]
        assert status["card"]["transport"] == "at" and status["card"]["impi"] == IMPI
        assert r["result"] == "success" and r["res"] == b64(expected_keys(rand, subscriber_file)[0])
        modules = set(dump.read_text().split())  # everything the daemon had imported when it exited
        assert "ue_agent.daemon" in modules and "ue_agent.drivers.at_modem" in modules and "serial" in modules
        lab = sorted(
            m
            for m in modules
            if m.split(".")[0] in LAB_ONLY or m == "ue_agent.lab" or m.startswith("ue_agent.lab.")
        )
        assert not lab, f"the device daemon imported {lab}"
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_device_doctor_on_an_at_modem_never_imports_the_lab(
    device_venv: Path, modem_factory, elsewhere: Path
) -> None:
    """``ue-agent doctor`` of the device venv on the pty modem (profile auto-detected): a
    correct report, exit 0, and not one lab module or lab library in sys.modules at exit."""
    sim = modem_factory("quectel-ec25")
    d = short_dir()
    try:
        config = d / "config.toml"
        config.write_text(config_text({"card": {"transport": "at", "port": str(sim.link_path)}}))
        dump = d / "modules.txt"
        py = str(device_venv / "bin" / "python")
        out = run(
            [py, "-c", WITH_MODULE_DUMP, str(dump), "doctor", "--config", str(config), "--json"], elsewhere
        )
        assert out.returncode == 0, out.stdout + out.stderr
        checks = {c["name"]: c for c in json.loads(out.stdout)["checks"]}
        assert checks["profile"]["details"]["profile"] == "quectel-ec25"
        assert checks["aka"]["verdict"] == "ok" and checks["ims-reporting"]["verdict"] == "ok"
        modules = set(dump.read_text().split())
        assert "ue_agent.doctor" in modules and "ue_agent.drivers.at_identify" in modules
        lab = sorted(
            m
            for m in modules
            if m.split(".")[0] in LAB_ONLY or m == "ue_agent.lab" or m.startswith("ue_agent.lab.")
        )
        assert not lab, f"the device doctor imported {lab}"
    finally:
        shutil.rmtree(d, ignore_errors=True)
