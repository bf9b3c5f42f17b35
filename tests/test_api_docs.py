"""docs/api.md agrees with the operation declarations (ue_agent.ops): every declared operation
has its row in the table and its own section naming each of its parameters, the ``hello``
example lists exactly the declared operations, and the docs describe no operation that is not
declared. A self-test shows the check fails when an operation's section is missing."""

from __future__ import annotations

import json
import re
from pathlib import Path

from ue_agent.ops.registry import OPERATIONS

DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"


def sections(text: str) -> dict[str, str]:
    """``### name`` -> its text, inside the "## Operations" chapter."""
    body = text.split("\n## Operations\n", 1)[1].split("\n## ", 1)[0]
    parts = re.split(r"^### (\S+)\s*$", body, flags=re.M)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts), 2)}


def problems(text: str) -> list[str]:
    """What docs/api.md text gets wrong about the declared operations (empty: nothing)."""
    out: list[str] = []
    found = sections(text)
    table = text.split("\n## Operations\n", 1)[1].split("\n### ", 1)[0]
    for name, op in OPERATIONS.items():
        if f"`{name}`" not in table:
            out.append(f"{name}: no row in the operations table")
        sec = found.get(name)
        if sec is None:
            out.append(f"{name}: no '### {name}' section")
            continue
        params = op.parameters
        if not params and "No parameters" not in sec:
            out.append(f"{name}: the section does not say 'No parameters'")
        for p in params:
            if f"`{p.name}`" not in sec:
                out.append(f"{name}: parameter `{p.name}` not described")
    for name in found:
        if name not in OPERATIONS:
            out.append(f"{name}: documented but not declared")
    hello = re.search(r'^< (\{"id":\d+,"ok":true,"protocol".*\})$', text, flags=re.M)
    if hello is None:
        out.append("hello: no example reply")
    elif json.loads(hello.group(1))["ops"] != list(OPERATIONS):
        out.append("hello: the example's ops are not the declared operations, in order")
    return out


def test_api_md_describes_every_declared_operation() -> None:
    assert problems(DOC.read_text()) == []


def test_the_check_fails_when_an_operation_is_missing() -> None:
    text = DOC.read_text()
    name = "session.report"
    start = text.index(f"\n### {name}\n")
    end = text.index("\n### ", start + 1)
    assert f"{name}: no '### {name}' section" in problems(text[:start] + text[end:])
    assert any("not described" in p for p in problems(text.replace("`ssrc`", "ssrc")))
