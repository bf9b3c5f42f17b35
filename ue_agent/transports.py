"""Open the card path a config names: the in-process soft UICC, a PC/SC reader, or a modem.

This is the one place that turns ``[card]`` settings into an
:class:`~ue_agent.card.transport.ApduTransport`; the daemon and ``ue-agent card info``
both call it. Each transport is an opener registered by name in :data:`TRANSPORTS` as a
``"module:function"`` path, imported only when that transport is asked for: the lab's soft
UICC is registered here by name only, so a device that opens ``pcsc`` or ``at`` never
imports the lab (docs/architecture.md, import rules).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Protocol

from ue_agent.card.transport import ApduTransport
from ue_agent.errors import ConfigError


class CardSettings(Protocol):
    @property
    def transport(self) -> str: ...
    @property
    def reader(self) -> str | None: ...
    @property
    def port(self) -> str | None: ...
    @property
    def profile(self) -> str | None: ...
    @property
    def subscriber(self) -> str | None: ...


#: opens one kind of card path: (settings, on_urc, driver options) -> transport
Opener = Callable[..., ApduTransport]

#: transport name -> its opener, as "module:function" (imported on use) or the function
TRANSPORTS: dict[str, str | Opener] = {
    "pcsc": "ue_agent.transports:open_pcsc",
    "at": "ue_agent.transports:open_at",
    "lab": "ue_agent.lab.card:open_transport",
}


def register(name: str, opener: str | Opener) -> None:
    """Add (or replace) a transport by name."""
    TRANSPORTS[name] = opener


def _opener(name: str) -> Opener:
    entry = TRANSPORTS.get(name)
    if entry is None:
        raise ConfigError(
            "config.invalid", f"card.transport: unknown transport '{name}'", key="card.transport"
        )
    if isinstance(entry, str):
        module, _, func = entry.partition(":")
        opener: Opener = getattr(importlib.import_module(module), func)
        return opener
    return entry


def open_transport(
    card: CardSettings, on_urc: Callable[[str], None] | None = None, **options: Any
) -> ApduTransport:
    """The transport for ``card``. ``on_urc`` receives a modem's unsolicited lines (AT only)."""
    return _opener(card.transport)(card, on_urc, **options)


def open_pcsc(
    card: CardSettings, on_urc: Callable[[str], None] | None = None, **options: Any
) -> ApduTransport:
    """A PC/SC reader (the profile may name the reader and ask for a logical channel)."""
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


def open_at(card: CardSettings, on_urc: Callable[[str], None] | None = None, **options: Any) -> ApduTransport:
    """A modem's +CSIM / +CGLA on card.port; ``on_urc`` receives its unsolicited lines."""
    if not card.port:
        raise ConfigError("config.missing_key", "card.port is required for transport 'at'", key="card.port")
    from ue_agent.drivers.at_modem import open_modem_transport
    from ue_agent.profiles import resolve

    if card.profile is None:  # found, not typed: ask the modem who it is (docs/hardware.md)
        from ue_agent.drivers.at_identify import detect

        profile = detect(card.port)[0].profile
    else:
        profile = resolve(card.profile)
    return open_modem_transport(card.port, profile=profile, on_urc=on_urc, **options)
