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


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--install-tests",
        action="store_true",
        help="also run the tests marked install (build the wheel, fresh venvs; .ci/run passes it)",
    )


#: fixtures that need pcscd and the vpcd driver: a test using one (directly or through another
#: fixture) is marked ``pcsc`` here, so ``-m "not pcsc"`` never waits for the machine's readers
PCSC_FIXTURES = frozenset({"pcscd"})


@pytest.hookimpl(tryfirst=True)  # before -m selects by markers
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The ``pcsc`` marker from the fixtures a test uses; tests marked ``install`` are
    deselected (not skipped) without --install-tests."""
    for item in items:
        if PCSC_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.pcsc)
    if config.getoption("--install-tests"):
        return
    kept = [i for i in items if i.get_closest_marker("install") is None]
    if len(kept) != len(items):
        config.hook.pytest_deselected(items=[i for i in items if i.get_closest_marker("install")])
        items[:] = kept


@pytest.fixture
def subscriber_file(tmp_path: Path) -> Path:
    """A subscriber file with TS 35.208 test set 1's K and OP."""
    from tests.fixtures.lab import write_subscriber

    return write_subscriber(tmp_path / "ue-a.toml")
