"""Shared fixtures. Each real component has its own fixture module under tests/fixtures/."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = [
    "tests.fixtures.lab",
    "tests.fixtures.pcsc",
    "tests.fixtures.modem",
    "tests.fixtures.network",
    "tests.fixtures.daemon",
]

HERE = Path(__file__).parent


@pytest.fixture
def subscriber_file(tmp_path: Path) -> Path:
    """A subscriber file with TS 35.208 test set 1's K and OP."""
    from tests.fixtures.lab import write_subscriber

    return write_subscriber(tmp_path / "ue-a.toml")
