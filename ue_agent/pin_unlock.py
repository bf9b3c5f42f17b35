"""Unlock PIN1 after the card path opens: one policy for PC/SC (VERIFY) and modems (AT+CPIN).

:func:`unlock` asks the card (or the modem) for PIN1's state, records it in the
:class:`~ue_agent.card.pin.PinGate` (``status`` shows it) and, when the PIN is needed and
:func:`~ue_agent.card.pin.plan_verify` allows it, verifies with the PIN read from the
credential file (:mod:`ue_agent.credentials`). The PIN Secret is zeroized at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ue_agent.card.pin import BLOCKED, REQUIRED, PinGate, PinStatus, plan_verify
from ue_agent.errors import CardError
from ue_agent.secret import Secret

if TYPE_CHECKING:
    from ue_agent.card.session import Card


def _modem_port(transport: Any) -> Any:
    """The AtPort under an AT transport (its PIN is the modem's business), else None."""
    port = getattr(transport, "port", None)
    return port if port is not None and hasattr(port, "command") else None


def query(card: Card) -> PinStatus:
    """PIN1's state: AT+CPIN? (+ tries left) on a modem, VERIFY without data otherwise."""
    port = _modem_port(card.transport)
    if port is not None:
        from ue_agent.drivers.at_pin import modem_pin_status

        return modem_pin_status(port)
    status: PinStatus = card.pin_status()
    return status


def _verify(card: Card, pin: Secret) -> PinStatus:
    port = _modem_port(card.transport)
    if port is not None:
        from ue_agent.drivers.at_pin import enter_pin

        return enter_pin(port, pin)
    result: PinStatus = card.verify_pin(pin)
    return result


def relock(card: Card, gate: PinGate) -> bool:
    """The card refused a command with 6982: give PIN1 again if that is what it needs.
    True when the PIN was verified now (the refused request may run again)."""
    if gate.credential is None:
        return False
    return unlock(card, gate).verified_by_agent


def unlock(card: Card, gate: PinGate) -> PinStatus:
    """Make PIN1 verified if it has to be and may be; else raise card.pin_required /
    card.pin_wrong / card.pin_blocked. Returns the PIN status (also kept in ``gate``)."""
    status = gate.record(query(card))
    pin: Secret | None = None
    try:
        if gate.credential and status.state == REQUIRED:
            from ue_agent.credentials import read_pin

            pin = read_pin(gate.credential)
        if not plan_verify(status, have_pin=pin is not None, allow_last_try=gate.allow_last_try):
            return status
        assert pin is not None
        if gate.refused_before(pin):
            raise CardError(
                "card.pin_wrong",
                "the card refused this PIN before; not sent again (fix the credential, then restart)",
                retries=status.retries,
            )
        try:
            result = _verify(card, pin)
        except CardError as exc:
            if exc.code in ("card.pin_wrong", "card.pin_blocked"):
                gate.note_refused(pin)
                left = exc.details.get("retries")
                gate.record(
                    PinStatus(BLOCKED if exc.code == "card.pin_blocked" else REQUIRED, left, status.source)
                )
            raise
        return gate.record(result)
    finally:
        if pin is not None:
            pin.zeroize()
