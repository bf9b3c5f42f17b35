"""No merge-conflict markers left in any tracked text file (docs included: nothing else reads them)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEXT = (".md", ".py", ".toml", ".txt", ".service", ".socket", ".conf", "")
MARKER = re.compile(rb"^(<{7} |={7}$|>{7} )", re.MULTILINE)


def test_no_conflict_markers_in_tracked_files() -> None:
    try:
        names = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
        ).stdout.split(b"\0")
    except (OSError, subprocess.CalledProcessError):  # an unpacked sdist: look at the docs at least
        names = [str(p.relative_to(ROOT)).encode() for p in ROOT.rglob("*.md")]
    bad = []
    for name in filter(None, names):
        path = ROOT / name.decode()
        if path.suffix in TEXT and path.is_file():
            data = path.read_bytes()
            if b"\0" not in data and MARKER.search(data):
                bad.append(name.decode())
    assert not bad, f"conflict markers in: {', '.join(bad)}"
