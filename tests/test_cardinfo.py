"""``ue-agent card info`` through each transport a config can name."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.fixtures.daemon import ALICE, REPO, config_text

IMPI = "001010000000001@ims.mnc001.mcc001.3gppnetwork.org"


def card_info(config: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ue_agent", "card", "info", "--config", str(config), *extra],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )


def write(tmp_path: Path, card: dict) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(config_text({"card": card}))
    return path


def test_lab_card_text_and_json(tmp_path):
    config = write(tmp_path, {"transport": "lab", "subscriber": str(ALICE)})
    out = card_info(config)
    assert out.returncode == 0, out.stderr
    assert f"IMPI           {IMPI}" in out.stdout
    assert "sip:alice@ims.mnc001.mcc001.3gppnetwork.org" in out.stdout
    data = json.loads(card_info(config, "--json").stdout)
    assert data["application"] == "isim" and data["impi"] == IMPI and data["transport"].startswith("lab")


def test_example_lab_config_works_from_any_directory(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "ue_agent",
            "card",
            "info",
            "--config",
            str(REPO / "examples" / "config-lab.toml"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert IMPI in out.stdout


def test_over_at_csim_on_a_pty(tmp_path, modem_factory):
    sim = modem_factory("quectel-ec25")
    config = write(tmp_path, {"transport": "at", "port": str(sim.link_path), "profile": "quectel-ec25"})
    data = json.loads(card_info(config, "--json").stdout)
    assert data["impi"].endswith("@ims.mnc001.mcc001.3gppnetwork.org")
    assert data["transport"].startswith("at:")


def test_over_pcsc(tmp_path, vpcd_card):
    _, reader = vpcd_card
    config = write(tmp_path, {"transport": "pcsc", "reader": reader})
    out = card_info(config, "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["application"] == "isim" and data["transport"] == f"pcsc:{reader}"


def test_missing_config_is_a_clear_error(tmp_path):
    out = card_info(tmp_path / "nope.toml")
    assert out.returncode == 1
    assert "config.unreadable" in out.stderr
