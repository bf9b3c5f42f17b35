"""open_transport: the [card] settings to a transport, for each kind."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tests.fixtures.daemon import ALICE
from ue_agent.errors import ConfigError
from ue_agent.lab.uicc import SoftUiccTransport
from ue_agent.transports import open_transport


def card(**kw):
    base = {"transport": "lab", "reader": None, "port": None, "profile": None, "subscriber": None}
    return SimpleNamespace(**{**base, **kw})


def test_lab_transport_reads_the_subscriber_file():
    t = open_transport(card(subscriber=str(ALICE)))
    assert isinstance(t, SoftUiccTransport)
    t.close()


@pytest.mark.parametrize(
    ("kw", "key"),
    [
        ({"transport": "lab"}, "card.subscriber"),
        ({"transport": "at"}, "card.port"),
        ({"transport": "x"}, "card.transport"),
    ],
)
def test_missing_or_wrong_settings_name_the_key(kw, key):
    with pytest.raises(ConfigError) as info:
        open_transport(card(**kw))
    assert info.value.details["key"] == key


def test_pcsc_profile_asks_for_a_logical_channel():
    t = open_transport(card(transport="pcsc", reader="no such reader"))
    try:
        assert t.use_logical_channel is True
    finally:
        t.close()


def test_at_port_that_does_not_exist_is_a_modem_error():
    from ue_agent.errors import TransportError

    with pytest.raises(TransportError) as info:
        open_transport(card(transport="at", port="/dev/nonexistent-ue-agent-tty"), reopen_wait=0.2)
    assert info.value.code.startswith("modem.")
