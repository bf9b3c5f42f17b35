"""``ue-agent doctor``: a correct report against the lab card over PC/SC and over each modem
profile's dialect (auto-detected), PIN state and tries, reachability of a loopback BSF/KMS,
and a clear NOT READY with exit 1 against nothing. The device path imports no lab module."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from tests.fixtures.lab import write_subscriber
from tests.fixtures.modem import AT_PROFILES

REPO = Path(__file__).resolve().parent.parent


def _doctor(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ue_agent", "doctor", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env=env,
    )


def _by_name(report: dict) -> dict[str, dict]:
    return {c["name"]: c for c in report["checks"]}


@pytest.fixture
def bsf() -> Iterator[str]:
    """A loopback HTTP server answering 401 to everything (a BSF without credentials does)."""

    class H(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(401)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), H)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def _closed_port_url() -> str:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}/"


def test_doctor_against_nothing(tmp_path):
    r = _doctor("--config", str(tmp_path / "absent.toml"))
    assert r.returncode == 1
    assert "FAIL  config" in r.stdout and "NOT READY" in r.stdout and "absent.toml" in r.stdout
    r = _doctor("--config", str(tmp_path / "absent.toml"), "--json")
    report = json.loads(r.stdout)
    assert r.returncode == 1 and report["verdict"] == "fail"
    checks = _by_name(report)
    assert checks["config"]["verdict"] == "fail" and checks["card"]["verdict"] == "skip"
    assert "at-ports" in checks and "pcsc" in checks


def test_doctor_missing_modem(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[card]\ntransport = "at"\nport = "{tmp_path / "ttyUSB9"}"\n')
    r = _doctor("--config", str(cfg), "--json")
    checks = _by_name(json.loads(r.stdout))
    assert r.returncode == 1
    assert checks["at-ports"]["verdict"] == "fail" and "ttyUSB9" in checks["at-ports"]["summary"]
    assert checks["modem"]["verdict"] == "fail"


@pytest.mark.parametrize("profile", AT_PROFILES)
def test_doctor_over_each_modem_profile(profile, modem_factory, tmp_path, bsf):
    sim = modem_factory(profile)
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'[card]\ntransport = "at"\nport = "{sim.link_path}"\n'
        f'[network]\nbsf_url = "{bsf}"\nkms_url = "{_closed_port_url()}"\n'
    )
    # the device path: no lab module is imported by the doctor itself
    code = (
        "import sys, json; from ue_agent.cli import main;"
        "rc = main(['doctor', '--config', sys.argv[1], '--json']);"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('ue_agent.lab'))), file=sys.stderr);"
        "sys.exit(rc)"
    )
    # the simulator lives in this process: the doctor runs in another one, as on a board
    r = subprocess.run(
        [sys.executable, "-c", code, str(cfg)], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    report = json.loads(r.stdout)
    checks = _by_name(report)
    assert r.returncode == 0, r.stdout
    assert json.loads(r.stderr.strip().splitlines()[-1]) == []
    assert checks["profile"]["details"]["profile"] == profile and "detected" in checks["profile"]["summary"]
    assert checks["modem"]["details"]["identity"]["model"]
    assert checks["card"]["verdict"] == "ok"
    assert checks["pin"]["verdict"] == "ok" and checks["pin"]["details"]["state"] == "ready"
    assert checks["application"]["summary"].startswith("ISIM")
    assert checks["gba"]["details"]["gba_u"] is False
    assert checks["aka"]["verdict"] == "ok"
    assert checks["ims-reporting"]["verdict"] == "ok" and sim.cirep == 1
    assert checks["bsf"]["verdict"] == "ok" and "HTTP 401" in checks["bsf"]["summary"]
    assert checks["kms"]["verdict"] == "warn"
    assert report["verdict"] == "ok"
    assert sim.uicc.highest_sqn == 32  # the AKA probe moved no SQN


def test_doctor_text_and_pin_states(modem_factory, tmp_path):
    """Human output: one verdict per line; PIN1 enabled without a credential fails with the
    tries left; with the credential it is verified (the agent's policy, never the last try)."""
    from ue_agent.lab.uicc import SoftUicc
    from ue_agent.subscriber import load_subscriber

    sub = write_subscriber(tmp_path / "s.toml", extra='pin1 = "2468"\npuk1 = "12345678"\ngba_u = true\n')
    uicc = SoftUicc(load_subscriber(sub))
    sim = modem_factory("quectel-ec25", uicc=uicc)
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[card]\ntransport = "at"\nport = "{sim.link_path}"\nprofile = "quectel-ec25"\n')
    r = _doctor("--config", str(cfg))
    assert r.returncode == 1
    lines = r.stdout.splitlines()
    pin_line = next(x for x in lines if x.split()[1:2] == ["pin"])
    assert pin_line.split()[0] == "FAIL" and "card.pin_required" in pin_line and "tries left 3" in pin_line
    assert any(x.split()[:2] == ["SKIP", "aka"] for x in lines)
    cred = tmp_path / "ue-agent.pin"
    cred.write_text("2468\n")
    cfg.write_text(cfg.read_text() + f'pin_credential = "{cred}"\n')
    r = _doctor("--config", str(cfg), "--json")
    checks = _by_name(json.loads(r.stdout))
    assert r.returncode == 0, r.stdout
    assert checks["pin"]["details"]["verified_by_agent"] is True
    assert checks["profile"]["summary"].startswith("quectel-ec25 (configured)")
    assert checks["gba"]["details"]["gba_u"] is True and "GBA_U" in checks["gba"]["summary"]
    assert "2468" not in r.stdout + r.stderr


@pytest.mark.pcsc
def test_doctor_over_pcsc(vpcd_card, tmp_path):
    server, reader = vpcd_card
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[card]\ntransport = "pcsc"\nreader = "{reader}"\n')
    r = _doctor("--config", str(cfg), "--json")
    report = json.loads(r.stdout)
    checks = _by_name(report)
    assert r.returncode == 0, r.stdout
    assert any(row["reader"] == reader and row["card"] for row in checks["pcsc"]["details"]["readers"])
    assert checks["card"]["summary"].startswith(f"reached over pcsc:{reader}")
    assert checks["pin"]["details"]["state"] == "ready"
    assert checks["application"]["details"]["impi"] == server.uicc.subscriber.impi
    assert checks["aka"]["verdict"] == "ok" and server.uicc.highest_sqn == 32
    assert checks["ims-reporting"]["verdict"] == "skip"
    assert checks["bsf"]["verdict"] == "skip" and checks["kms"]["verdict"] == "skip"


def test_doctor_blocked_pin_on_the_lab_card(tmp_path):
    """transport = "lab" (the lab is imported there, by the config's choice): a blocked PIN1
    is a FAIL naming card.pin_blocked, and the checks after it are skipped."""
    sub = write_subscriber(tmp_path / "s.toml", extra='pin1 = "2468"\npuk1 = "12345678"\npin1_tries = 0\n')
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[card]\ntransport = "lab"\nsubscriber = "{sub}"\n')
    r = _doctor("--config", str(cfg), "--json")
    checks = _by_name(json.loads(r.stdout))
    assert r.returncode == 1
    assert checks["pin"]["verdict"] == "fail" and "card.pin_blocked" in checks["pin"]["summary"]
    assert checks["pin"]["details"]["state"] == "blocked" and checks["pin"]["details"]["retries"] == 0
    assert "PUK tries left 10" in checks["pin"]["summary"]
    assert checks["application"]["verdict"] == "skip" and checks["aka"]["verdict"] == "skip"


def test_status_text_shows_the_pin():
    from ue_agent.api.status_cmd import render

    text = render(
        {
            "card": {
                "transport": "pcsc",
                "present": False,
                "error": "card.pin_required",
                "pin": {"state": "required", "retries": 1},
            }
        }
    )
    assert "pin:      required, 1 tries left" in text
