"""PIN1: the state of the card's application PIN and the agent's policy for verifying it.

Sans-IO: this module builds the commands and reads the answers; the card facade
(:meth:`ue_agent.card.session.Card.pin_status`), the AT driver (:mod:`ue_agent.drivers.at_pin`)
and :mod:`ue_agent.pin_unlock` do the I/O.

Two ways to the same PIN:
- a UICC the agent talks to directly (PC/SC, the lab card): VERIFY PIN with key reference
  ``01`` (TS 102 221 11.1.9, 9.5.1); VERIFY without data answers ``63CX`` (X tries left)
  while the PIN still has to be given, ``9000`` when it does not (disabled, or verified);
  ``6983`` / ``63C0`` mean blocked (the PUK is needed);
- a modem that owns the SIM: ``AT+CPIN?`` answers ``READY``, ``SIM PIN`` or ``SIM PUK``
  (TS 27.007 8.3) and ``AT+CPIN=<pin>`` verifies; the tries left come from a command the
  hardware profile names (``[pin] retries_command``), or from ``AT+CSIM`` with VERIFY
  without data, or stay unknown.

Policy (:func:`plan_verify`): never a VERIFY when one try is left (the last try would leave
a blocked card to a wrong credential) or when the count is unknown, unless the config sets
``[card] pin_allow_last_try = true``; never the same rejected PIN twice in one process
(:class:`PinGate`). Codes: ``card.pin_required`` (the PIN is needed and the agent will not
or cannot give it), ``card.pin_wrong`` (the card refused the credential's PIN; tries left
in ``details.retries``), ``card.pin_blocked`` (no try left: the PUK is needed).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from dataclasses import asdict, dataclass
from typing import Any

from ue_agent.card.apdu import Apdu
from ue_agent.errors import CardError
from ue_agent.secret import Secret

KEY_PIN1 = 0x01  # the first application PIN, a global key reference (TS 102 221 9.5.1)
INS_VERIFY = 0x20
INS_UNBLOCK = 0x2C
SW_OK = 0x9000
SW_BLOCKED = 0x6983
SW_DISABLED = 0x6985  # VERIFY with data on a disabled PIN: conditions of use not satisfied

#: PIN states as status and doctor report them
READY = "ready"  # nothing to give: PIN disabled or already verified
REQUIRED = "required"  # enabled and not verified: VERIFY / AT+CPIN= needed
BLOCKED = "blocked"  # no try left: PUK needed
UNKNOWN = "unknown"


@dataclass(frozen=True)
class PinStatus:
    """What is known about PIN1: ``state`` (ready/required/blocked/unknown), ``retries`` left
    (None: unknown), where the facts came from, and whether this agent verified it."""

    state: str
    retries: int | None = None
    source: str = ""
    verified_by_agent: bool = False
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def pin_block(pin: Secret) -> bytes:
    """The 8-byte PIN block: the digits in ASCII, FF-padded (TS 102 221 9.5.2)."""
    digits = pin.reveal()
    return digits + b"\xff" * (8 - len(digits))


def verify_apdu(pin: Secret | None = None, channel_cla: int = 0x00) -> Apdu:
    """VERIFY PIN1: with the PIN block, or without data (asks for the retry counter)."""
    if pin is None:
        return Apdu(channel_cla, INS_VERIFY, 0x00, KEY_PIN1)
    return Apdu(channel_cla, INS_VERIFY, 0x00, KEY_PIN1, pin_block(pin))


def unblock_query_apdu() -> Apdu:
    """UNBLOCK PIN1 without data: the card answers 63CX, X = the PUK tries left (TS 102 221 11.1.13)."""
    return Apdu(0x00, INS_UNBLOCK, 0x00, KEY_PIN1)


def puk_retries_from_sw(sw: int) -> int | None:
    return sw & 0x0F if sw >> 4 == 0x63C else None


def status_from_sw(sw: int, source: str = "VERIFY") -> PinStatus:
    """The state a VERIFY without data reports (TS 102 221 11.1.9, 10.2.1)."""
    if sw == SW_OK:
        return PinStatus(READY, None, source)
    if sw >> 4 == 0x63C:
        tries = sw & 0x0F
        return PinStatus(BLOCKED if tries == 0 else REQUIRED, tries, source)
    if sw == SW_BLOCKED:
        return PinStatus(BLOCKED, 0, source)
    return PinStatus(UNKNOWN, None, source, detail=f"VERIFY without data answered {sw:04X}")


_CPIN = re.compile(r"^\+CPIN:\s*\"?([A-Z0-9\- ]+?)\"?\s*$", re.IGNORECASE)


def status_from_cpin(line: str) -> PinStatus:
    """The state ``+CPIN: <code>`` reports (TS 27.007 8.3): READY, SIM PIN, SIM PUK, others."""
    m = _CPIN.match(line.strip())
    if not m:
        return PinStatus(UNKNOWN, None, "AT+CPIN?", detail="no +CPIN answer")
    code = " ".join(m.group(1).upper().split())
    if code == "READY":
        return PinStatus(READY, None, "AT+CPIN?")
    if code == "SIM PIN":
        return PinStatus(REQUIRED, None, "AT+CPIN?")
    if code == "SIM PUK":
        return PinStatus(BLOCKED, 0, "AT+CPIN?")
    # PH-SIM PIN, SIM PIN2, network personalisation...: not PIN1, nothing the agent gives
    return PinStatus(UNKNOWN, None, "AT+CPIN?", detail=f"the modem waits for {code}")


def parse_retries(lines: list[str], prefix: str, index: int) -> int | None:
    """The PIN1 tries left in a vendor answer such as ``+QPINC: "SC",3,10`` (``index`` counts
    the comma-separated fields after the prefix, from 0). None when absent or not a number."""
    for line in lines:
        if not line.upper().startswith(prefix.upper()):
            continue
        body = line[len(prefix) :].lstrip().removeprefix(":")
        fields = [f.strip().strip('"') for f in body.split(",")]
        if index < len(fields) and fields[index].isdigit():
            return int(fields[index])
    return None


def plan_verify(status: PinStatus, *, have_pin: bool, allow_last_try: bool) -> bool:
    """Whether to verify now (True), nothing to do (False), or raise the code that says why not."""
    if status.state == READY:
        return False
    if status.state == BLOCKED:
        raise CardError(
            "card.pin_blocked",
            "PIN1 is blocked: unblock the card with its PUK (not done by the agent)",
            retries=0,
        )
    if status.state == UNKNOWN:
        raise CardError("card.pin_required", f"PIN state unknown ({status.detail or status.source})")
    if not have_pin:
        raise CardError(
            "card.pin_required",
            "PIN1 is enabled: name a credential in [card] pin_credential (systemd LoadCredential=)",
            retries=status.retries,
        )
    if status.retries is None and not allow_last_try:
        raise CardError(
            "card.pin_required",
            "PIN1 is enabled and the tries left are unknown; not verifying (set [card] pin_allow_last_try)",
            retries=None,
        )
    if status.retries == 1 and not allow_last_try:
        raise CardError(
            "card.pin_required",
            "PIN1 has one try left; not verifying (check the credential, or set [card] pin_allow_last_try)",
            retries=1,
        )
    return True


def verify_result(sw: int) -> PinStatus:
    """The outcome of VERIFY with the PIN: ready, or the error (card.pin_wrong / pin_blocked)."""
    if sw == SW_OK:
        return PinStatus(READY, None, "VERIFY", verified_by_agent=True)
    if sw == SW_DISABLED:
        return PinStatus(READY, None, "VERIFY", detail="PIN1 is disabled")
    status = status_from_sw(sw)
    if status.state == BLOCKED:
        raise CardError(
            "card.pin_blocked", "the card refused the PIN and blocked PIN1: PUK needed", retries=0
        )
    if status.state == REQUIRED:
        raise CardError(
            "card.pin_wrong", f"the card refused the PIN; {status.retries} tries left", retries=status.retries
        )
    raise CardError("card.pin_required", f"VERIFY PIN answered {sw:04X}", sw=f"{sw:04X}")


class PinGate:
    """The agent's memory of PIN1 across card (re)opens: the last known status (for ``status``)
    and a keyed digest of a PIN the card refused, so that PIN is never sent again by this
    process. The card worker writes, the event loop reads: each field is one reference,
    replaced whole (never mutated), so a reader sees the old or the new value and the core
    needs no lock (nor a thread module; tests/test_layers.py)."""

    def __init__(self, credential: str | None = None, allow_last_try: bool = False) -> None:
        self.credential = credential
        self.allow_last_try = allow_last_try
        self._key = os.urandom(32)
        self._refused: bytes | None = None
        self._status = PinStatus(UNKNOWN, None, "", detail="the card was not opened yet")

    def __repr__(self) -> str:
        return f"<PinGate credential={self.credential!r} state={self._status.state}>"

    def _digest(self, pin: Secret) -> bytes:
        return hmac.new(self._key, pin.reveal(), hashlib.sha256).digest()

    def refused_before(self, pin: Secret) -> bool:
        refused = self._refused
        return refused is not None and hmac.compare_digest(refused, self._digest(pin))

    def note_refused(self, pin: Secret) -> None:
        self._refused = self._digest(pin)

    def record(self, status: PinStatus) -> PinStatus:
        self._status = status
        return status

    @property
    def status(self) -> PinStatus:
        return self._status

    def snapshot(self) -> dict[str, Any]:
        out = self.status.to_dict()
        out["credential"] = self.credential
        return out
