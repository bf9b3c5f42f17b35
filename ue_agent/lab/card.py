"""The lab's card transport: the in-process soft UICC, opened for ``[card] transport = "lab"``.

:mod:`ue_agent.transports` names this opener in its registry; nothing outside the lab
imports it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ue_agent.card.transport import ApduTransport
from ue_agent.errors import ConfigError
from ue_agent.transports import CardSettings


def open_transport(
    card: CardSettings, on_urc: Callable[[str], None] | None = None, **options: Any
) -> ApduTransport:
    """A soft UICC for the subscriber file ``card.subscriber``."""
    if not card.subscriber:
        raise ConfigError(
            "config.missing_key", "card.subscriber is required for transport 'lab'", key="card.subscriber"
        )
    from ue_agent.lab.uicc import SoftUicc, SoftUiccTransport
    from ue_agent.subscriber import load_subscriber

    return SoftUiccTransport(SoftUicc(load_subscriber(card.subscriber)))
