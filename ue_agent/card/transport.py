"""The one interface between the card layer and whatever carries APDUs.

A transport moves one command APDU (TPDU level, as bytes) to the card and returns the
card's answer as ``data || SW1 SW2``. It does no 61xx/6Cxx handling: that lives in one
place, :mod:`ue_agent.card.apdu`. Implementations: the in-process soft UICC
(:class:`ue_agent.lab.uicc.SoftUiccTransport`), PC/SC (:mod:`ue_agent.drivers.pcsc`),
AT+CSIM and AT+CCHO/+CGLA (:mod:`ue_agent.drivers.at_modem`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Protocol


class ChannelRecord(Protocol):
    """Where a transport or the card layer notes the logical channels it holds open, so
    that a successor can close them after a crash (``"mc:<n>"``: opened with MANAGE
    CHANNEL; ``"ccho:<session>"``: opened with AT+CCHO). See :mod:`ue_agent.channel_record`."""

    def add(self, key: str) -> None: ...

    def discard(self, key: str) -> None: ...


class ApduTransport(ABC):
    """Carries APDUs to one card. Blocking; the daemon calls it from one worker thread."""

    #: "basic": the card layer selects applications itself on the basic channel (or opens
    #: a logical channel with MANAGE CHANNEL when ``use_logical_channel`` is set);
    #: "bound": the transport is already bound to one application on its own channel
    #: (AT+CCHO), so the card layer must not SELECT the ADF by AID again.
    mode: str = "basic"
    #: open a logical channel with MANAGE CHANNEL for the ISIM (basic mode only).
    use_logical_channel: bool = False
    #: how the transport names itself in status output ("pcsc:Virtual PCD 00 00", "at:/dev/ttyUSB2").
    name: str = "transport"
    #: logical channels opened through this transport are noted here (None: nowhere)
    channel_record: ChannelRecord | None = None

    #: called (from any thread) when the transport learns of a reset (a modem's RDY): the
    #: owner may then have the card layer reopen its channel at once (Card.check)
    on_reset: Callable[[str], None] | None = None

    def after_reset(self) -> None:
        """The card layer found a reset by its effects (SW 6881): a modem set up again."""

    def check_epoch(self) -> int:
        """:attr:`epoch`, after reopening a path that went away and came back (AT port)."""
        return self.epoch

    @property
    def epoch(self) -> int:
        """Increases when the transport knows the card was reset behind the card layer's
        back (modem restart, +CPIN: READY, the port coming back): logical channels and
        selections made before are gone. Transports that cannot tell stay at 0."""
        return 0

    @abstractmethod
    def transmit(self, apdu: bytes) -> bytes:
        """Send one APDU; return response data followed by SW1 SW2.

        Raises :class:`ue_agent.errors.TransportError` (codes ``card.absent``,
        ``card.removed``, ``card.reader_gone``, ``card.pcsc_unavailable``,
        ``modem.gone``, ``modem.timeout``, ``modem.error``...) when the path fails.
        """

    def bind_application(self, aid: bytes) -> ApduTransport:
        """A transport bound to application ``aid`` on its own channel (AT+CCHO).

        Only transports whose card path requires it implement this; the default says no.
        """
        raise NotImplementedError

    def reclaim(self, key: str) -> bool:
        """Close a channel a predecessor left open, named by its channel-record key, when the
        key is of this transport's kind (``"ccho:<session>"``: AT+CCHC). True when done."""
        return False

    def close(self) -> None:
        """Release the reader/port. Idempotent."""
