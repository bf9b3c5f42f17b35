"""Hardware profiles: the shipped files, validation (unknown keys name the key), lookup, the CLI."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from tests.fixtures.modem import AT_PROFILES
from ue_agent import profiles
from ue_agent.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent
FAMILIES = [
    "quectel-ec25",
    "quectel-rm500q",
    "sierra-em7455",
    "simcom-sim7600",
    "telit-le910c1",
    "fibocom-fm350",
]


def test_shipped_profiles_load():
    names = profiles.available()
    for name in ["generic-pcsc", "lab", "generic-at", *FAMILIES]:
        assert name in names
    loaded = {p.name: p for p in profiles.load_all()}
    assert loaded["generic-pcsc"].kind == "pcsc" and loaded["generic-pcsc"].access == "pcsc"
    assert loaded["lab"].kind == "lab" and loaded["lab"].access == "lab"
    assert sorted(AT_PROFILES) == sorted(n for n, p in loaded.items() if p.kind == "at")


@pytest.mark.parametrize("name", FAMILIES + ["generic-at", "cmcc-ml307x"])
def test_at_profiles_are_complete(name):
    p = profiles.get_profile(name)
    assert p.kind == "at" and p.at is not None and p.ims is not None and p.port is not None
    assert p.port.by_id, "an AT port hint"
    assert p.access in ("csim", "cgla")
    assert "AT+CIREP=1" in p.ims.commands
    assert {"+CIREPH", "+CIREPI", "+CIREGU"} <= set(p.ims.urcs)
    assert p.vendor and p.summary


#: a primary citation: a TS/RFC (with its clause), the public issue, PR or source file a quirk was
#: observed in (by URL), or the project's own docs/hardware.md, which describes each quirk
PRIMARY_CITATION = re.compile(r"\bTS \d{2}\.\d{3} \d|\bRFC \d+|https://\S+|docs/hardware\.md")


def test_every_quirk_cites_its_source():
    """Each family profile's comments cite a primary source for its quirks."""
    for name in FAMILIES + ["cmcc-ml307x"]:
        text = (REPO / "hw_profiles" / f"{name}.toml").read_text()
        comments = [line for line in text.splitlines() if line.lstrip().startswith("#")]
        assert any(PRIMARY_CITATION.search(line) for line in comments), name


MARKDOWN_NAME = re.compile(r"(?<![\w.-])[\w-]+\.md\b")
CLIMBING_PATH = re.compile(r"(?<![\w.])(?:\.\./)+(?:[\w.-]+/)*[\w-]+\.(?:md|txt|xml|py|toml)\b")


def outside_citations(path: Path, text: str, ours: set[str]) -> list[str]:
    """``line: reference`` for each Markdown file named that is not one of ``ours``, and each
    file named by a ``../`` path that is not a file of the repository."""
    bad = []
    for n, line in enumerate(text.splitlines(), 1):
        refs = [m.group(0) for m in MARKDOWN_NAME.finditer(line) if m.group(0) not in ours]
        for m in CLIMBING_PATH.finditer(line):
            target = (path.parent / m.group(0)).resolve()
            if not (target.is_relative_to(REPO) and target.is_file()):
                refs.append(m.group(0))
        bad += [f"{n}: {ref}" for ref in refs]
    return bad


def test_no_citation_of_files_outside_the_repository():
    """Code, docs and profiles cite the primary text or the project's docs, never notes kept elsewhere."""
    ours = {p.name for p in REPO.rglob("*.md") if not {".git", ".venv"} & set(p.parts)}
    bad = []
    for root, dirs, files in os.walk(REPO):
        dirs[:] = [d for d in dirs if not d.startswith((".", "__pycache__")) and not d.endswith(".egg-info")]
        for name in files:
            path = Path(root) / name
            if path.suffix in (".py", ".md", ".toml") and path != Path(__file__).resolve():  # its examples
                text = path.read_text(errors="replace")
                bad += [f"{path.relative_to(REPO)}:{b}" for b in outside_citations(path, text, ours)]
    assert not bad, bad


def test_the_citation_check_sees_notes_kept_elsewhere():
    ours = {"api.md", "hardware.md"}
    docs = REPO / "docs" / "x.md"
    text = "per docs/api.md and hardware.md\nsee notes.md\n../../notes/rfc.txt 5.4\n../ue_agent/nothing.py"
    assert outside_citations(docs, text, ours) == [
        "2: notes.md",
        "3: ../../notes/rfc.txt",
        "4: ../ue_agent/nothing.py",
    ]
    assert outside_citations(REPO / "examples" / "c.toml", "../ue_agent/config.py", ours) == []


def test_quirks_as_data():
    assert profiles.get_profile("simcom-sim7600").at.colon_space is False
    fm350 = profiles.get_profile("fibocom-fm350")
    assert not fm350.at.ccho_prefix and not fm350.at.cgla_prefix and "+CGLA" in fm350.at.no_test_commands
    sierra = profiles.get_profile("sierra-em7455")
    assert sierra.card.session_id == "opaque" and "+CGLA" in sierra.at.no_test_commands
    assert profiles.get_profile("quectel-rm500q").at.max_line > 1024
    telit = profiles.get_profile("telit-le910c1")
    assert "AT+CSIM=1" in telit.at.init and "AT+CSIM=0" in telit.at.shutdown
    assert telit.at.length_field == "bytes"
    assert profiles.get_profile("cmcc-ml307x").card.modem_handles_61xx
    assert "AT+CUAD" in profiles.get_profile("quectel-ec25").at.forbidden


def _base(**over) -> dict:
    data = {
        "name": "x",
        "kind": "at",
        "summary": "s",
        "card": {"access": "csim"},
        "at": {"echo_default": True},
    }
    data.update(over)
    return data


@pytest.mark.parametrize(
    ("data", "code", "key"),
    [
        (_base(colour="red"), "config.unknown_key", "colour"),
        (_base(at={"ech_default": True}), "config.unknown_key", "at.ech_default"),
        (_base(card={"access": "csim", "turbo": 1}), "config.unknown_key", "card.turbo"),
        (_base(reader={"name_pattern": "*"}), "config.unknown_key", "reader"),
        (_base(at={"echo_default": "yes"}), "config.invalid", "at.echo_default"),
        (_base(at={"init": "AT"}), "config.invalid", "at.init"),
        (_base(at={"max_line": True}), "config.invalid", "at.max_line"),
        (_base(card={"access": "pcsc"}), "config.invalid", "card.access"),
        (_base(card={"access": "cgla"}), "config.invalid", "card.ccho"),
        (_base(card={"access": "csim", "session_id": "x"}), "config.invalid", "card.session_id"),
        (_base(at={"length_field": "nibbles"}), "config.invalid", "at.length_field"),
        (_base(kind="usb"), "config.invalid", "kind"),
        ({"name": "x", "kind": "at", "summary": "s"}, "config.missing_key", "card"),
        (_base(card={}), "config.missing_key", "card.access"),
        (_base(models="EC25"), "config.invalid", "models"),
    ],
)
def test_validation_errors_name_the_key(data, code, key):
    with pytest.raises(ConfigError) as ei:
        profiles.parse_profile(data, "x.toml")
    assert ei.value.code == code
    assert ei.value.details["key"] == key
    assert key.split(".")[-1] in ei.value.message


def test_float_timeout_accepts_int():
    p = profiles.parse_profile(_base(at={"command_timeout_s": 3}))
    assert p.at.command_timeout_s == 3.0


def test_lookup_unknown_and_by_path(tmp_path, monkeypatch):
    with pytest.raises(ConfigError) as ei:
        profiles.get_profile("nokia-3310")
    assert ei.value.code == "config.unknown_profile" and "generic-at" in ei.value.message
    p = profiles.get_profile(str(REPO / "hw_profiles" / "sierra-em7455.toml"))
    assert p.name == "sierra-em7455"
    assert profiles.resolve(None) is None
    assert profiles.resolve(None, "generic-at").name == "generic-at"
    assert profiles.resolve(p) is p


def test_search_path_override_and_name_must_match_file(tmp_path, monkeypatch):
    (tmp_path / "my-board.toml").write_text(
        'name = "my-board"\nkind = "at"\nsummary = "our board"\n[card]\naccess = "csim"\n'
    )
    (tmp_path / "generic-at.toml").write_text(
        'name = "generic-at"\nkind = "at"\nsummary = "local override"\n[card]\naccess = "csim"\n'
    )
    monkeypatch.setenv("UE_AGENT_PROFILES", str(tmp_path))
    assert profiles.get_profile("my-board").summary == "our board"
    assert profiles.get_profile("generic-at").summary == "local override"  # first on the path wins
    (tmp_path / "wrong.toml").write_text(
        'name = "other"\nkind = "lab"\nsummary = "s"\n[card]\naccess = "lab"\n'
    )
    with pytest.raises(ConfigError) as ei:
        profiles.get_profile("wrong")
    assert ei.value.details["key"] == "name"
    (tmp_path / "broken.toml").write_text("name = \n")
    with pytest.raises(ConfigError) as ei:
        profiles.get_profile("broken")
    assert ei.value.code == "config.invalid"


def test_docs_describe_every_key():
    doc = (REPO / "docs" / "hardware.md").read_text()
    section = doc[doc.index("## Modems and hardware profiles") :]
    for cls in (
        profiles.PortHint,
        profiles.ReaderHint,
        profiles.CardAccess,
        profiles.AtDialect,
        profiles.ImsReporting,
        profiles.PinQuery,
        profiles.Match,
    ):
        for f in fields(cls):
            assert f"`{f.name}`" in section, f"{cls.__name__}.{f.name} undocumented"
    for name in profiles.available():
        assert f"`{name}`" in section, f"profile {name} not listed"


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ue_agent", *args], capture_output=True, text=True, timeout=60, cwd=REPO
    )


def test_cli_profiles_json():
    proc = _cli("profiles", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert rows["sierra-em7455"]["kind"] == "at" and rows["sierra-em7455"]["card_access"] == "cgla"
    assert rows["generic-pcsc"]["card_access"] == "pcsc"
    assert set(FAMILIES) <= set(rows)
    assert all(r["summary"] for r in rows.values())


def test_cli_profiles_table():
    proc = _cli("profiles")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["NAME", "KIND", "ACCESS", "SUMMARY"]
    assert any(line.startswith("telit-le910c1") and " csim " in line for line in lines)


def test_cli_profiles_bad_profile_file(tmp_path):
    (tmp_path / "bad.toml").write_text(
        'name = "bad"\nkind = "at"\nsummary = "s"\nwat = 1\n[card]\naccess = "csim"\n'
    )
    proc = subprocess.run(
        [sys.executable, "-m", "ue_agent", "profiles"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**__import__("os").environ, "UE_AGENT_PROFILES": str(tmp_path)},
    )
    assert proc.returncode == 1
    assert "config.unknown_key" in proc.stderr and "wat" in proc.stderr


def test_package_data_read_as_traversable_not_as_a_path_string(monkeypatch, tmp_path):
    """An installed wheel gives ``files("ue_agent.hw_profiles")`` as a MultiplexedPath (the
    directory has no __init__.py), whose str() is "MultiplexedPath('...')", not a path: the
    profiles must be found through the Traversable API alone (issue 10)."""
    from importlib.resources.readers import MultiplexedPath

    data = MultiplexedPath(str(REPO / "hw_profiles"))
    monkeypatch.setattr(profiles.resources, "files", lambda package: data)
    monkeypatch.setattr(profiles, "SOURCE_DIR", tmp_path / "no-source-tree")
    monkeypatch.setattr(profiles, "ETC_DIR", tmp_path / "no-etc")
    monkeypatch.delenv("UE_AGENT_PROFILES", raising=False)
    names = profiles.available()
    assert sorted(names) == sorted(p.stem for p in (REPO / "hw_profiles").glob("*.toml"))
    assert profiles.get_profile("generic-at").kind == "at"
