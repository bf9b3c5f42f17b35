"""Open the card path a config names: the in-process soft UICC, a PC/SC reader, or a modem.

This is the one place that turns ``[card]`` settings into an
:class:`~ue_agent.card.transport.ApduTransport`; the daemon and ``ue-agent card info``
both call it. Drivers are imported only for the transport asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from ue_agent.card.transport import ApduTransport
from ue_agent.errors import ConfigError


class CardSettings(Protocol):
    transport: str
    reader: str | None
    port: str | None
    profile: str | None
    subscriber: str | None


def open_transport(
    card: CardSettings, on_urc: Callable[[str], None] | None = None, **options: Any
) -> ApduTransport:
    """The transport for ``card``. ``on_urc`` receives a modem's unsolicited lines (AT only)."""
    if card.transport == "lab":
        if not card.subscriber:
            raise ConfigError(
                "config.missing_key", "card.subscriber is required for transport 'lab'", key="card.subscriber"
            )
        from ue_agent.lab.uicc import SoftUicc, SoftUiccTransport
        from ue_agent.subscriber import load_subscriber

        return SoftUiccTransport(SoftUicc(load_subscriber(card.subscriber)))
    if card.transport == "pcsc":
        from ue_agent.drivers.pcsc import PcscTransport
        from ue_agent.profiles import resolve

        profile = resolve(card.profile, default="generic-pcsc")
        reader = card.reader
        if reader is None and profile is not None and profile.reader is not None:
            pattern = profile.reader.name_pattern
            reader = "" if pattern in ("", "*") else pattern.strip("*")
        if profile is not None and profile.card.logical_channels == "manage_channel":
            # the ISIM on its own logical channel: the basic channel stays the USIM's
            options.setdefault("use_logical_channel", True)
        return PcscTransport(reader or "", **options)
    if card.transport == "at":
        if not card.port:
            raise ConfigError(
                "config.missing_key", "card.port is required for transport 'at'", key="card.port"
            )
        from ue_agent.drivers.at_modem import open_modem_transport
        from ue_agent.profiles import resolve

        if card.profile is None:  # found, not typed: ask the modem who it is (docs/hardware.md)
            from ue_agent.drivers.at_identify import detect

            profile = detect(card.port)[0].profile
        else:
            profile = resolve(card.profile)
        return open_modem_transport(card.port, profile=profile, on_urc=on_urc, **options)
    raise ConfigError(
        "config.invalid", f"card.transport: unknown transport '{card.transport}'", key="card.transport"
    )
