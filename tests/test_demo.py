"""``ue-agent demo`` end to end, and the keys it was handed kept out of every daemon's debug log."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

from ue_agent.lab.demo import run

#: reply fields that carry key material (base64): SRTP key and salt, TLS PSK, AKA results
KEY_FIELDS = {"master_key", "master_salt", "key", "res", "ck", "ik", "kc"}


def collect_keys(node, out: set[bytes]) -> None:
    if isinstance(node, dict):
        for k, v in node.items():
            if k in KEY_FIELDS and isinstance(v, str):
                out.add(base64.b64decode(v))
            else:
                collect_keys(v, out)
    elif isinstance(node, list):
        for v in node:
            collect_keys(v, out)


def forms(key: bytes) -> list[str]:
    """How a key could show in a log: hex (both cases, spaced or not) and base64."""
    h = key.hex()
    return [h, h.upper(), " ".join(h[i : i + 2] for i in range(0, len(h), 2)), base64.b64encode(key).decode()]


def test_demo_passes_and_no_key_reaches_a_daemon_log(tmp_path: Path, pcscd) -> None:
    """The full demo, UE-B's card in the session's PC/SC reader."""
    keys: set[bytes] = set()
    transports: dict[str, str] = {}

    def on_reply(ue: str, op: str, reply: dict) -> None:
        collect_keys(reply, keys)
        if op == "status":
            transports[ue] = reply["card"]["transport"]

    pcscd.start()
    rc = run(tmp_path, None, color=False, on_reply=on_reply, pcscd=pcscd)
    assert rc == 0
    assert transports == {"UE-A": "at", "UE-B": "pcsc", "UE-C": "lab"}
    assert len(keys) >= 20, "the demo hands out AKA results, SRTP and TLS-PSK keys"
    logs = sorted(tmp_path.glob("UE-*/daemon.log"))
    assert len(logs) == 3
    for log in logs:
        text = log.read_text(errors="replace")
        assert "DEBUG" in text, "the daemons run at debug level in the demo"
        for key in keys:
            for form in forms(key):
                assert form not in text, f"a key handed out appears in {log.parent.name}'s log"


def test_demo_command_exits_zero() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "ue_agent", "demo", "--no-pcsc", "--only", "cards", "--only", "register"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2/2 scenarios passed" in out.stdout
    assert "in-process soft UICC" in out.stdout
