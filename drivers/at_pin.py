"""PIN1 through a modem's AT port: AT+CPIN? / AT+CPIN= (TS 27.007 8.3) and the tries left.

The modem owns the SIM's PIN: the agent asks ``AT+CPIN?`` and, when the policy of
:mod:`ue_agent.card.pin` allows it, gives the PIN with ``AT+CPIN="<pin>"``. The tries left
come, in this order, from the profile's ``[pin] retries_command`` (AT+QPINC, AT+SPIC, #PCT,
AT+CPINR...), from the card itself through ``AT+CSIM`` (VERIFY without data, TS 102 221
11.1.9), or stay unknown.

The PIN is in one command line only; :func:`ue_agent.drivers.at_modem.redact` hides the
parameters of AT+CPIN/+CPWD/+CLCK wherever a command line is logged or quoted in an error.
"""

from __future__ import annotations

import logging
import re
import time

from ue_agent.card import pin as pinmod
from ue_agent.card.pin import BLOCKED, READY, REQUIRED, PinStatus
from ue_agent.drivers.at_modem import AtPort
from ue_agent.errors import CardError, TransportError
from ue_agent.secret import Secret

log = logging.getLogger(__name__)

#: +CME ERROR codes of TS 27.007 9.2.1 met here
CME_SIM_NOT_INSERTED = 10
CME_SIM_PIN_REQUIRED = 11
CME_SIM_PUK_REQUIRED = 12
CME_INCORRECT_PASSWORD = 16
READY_POLLS, READY_POLL_S = 20, 0.25  # at most 5 s for the SIM to be ready after AT+CPIN=
_LEN_HEX = re.compile(r'^\s*(?:\+CSIM:\s*)?(\d+)\s*,\s*"?([0-9A-Fa-f]+)"?\s*$', re.IGNORECASE)


def cpin_status(port: AtPort) -> PinStatus:
    """``AT+CPIN?``: READY / SIM PIN / SIM PUK (TS 27.007 8.3)."""
    try:
        resp = port.command("AT+CPIN?")
    except TransportError as exc:
        cme = exc.details.get("cme")
        if cme == CME_SIM_NOT_INSERTED:
            raise TransportError(
                "card.absent", "the modem reports no SIM (+CME ERROR: 10)", port=port.path
            ) from None
        if cme == CME_SIM_PUK_REQUIRED:
            return PinStatus(BLOCKED, 0, "AT+CPIN?")
        if exc.code in ("modem.error", "modem.cme_error"):
            return PinStatus(pinmod.UNKNOWN, None, "AT+CPIN?", detail=f"AT+CPIN? refused ({exc.code})")
        raise
    line = next((x for x in resp.lines if x.upper().lstrip().startswith("+CPIN")), "")
    return pinmod.status_from_cpin(line)


def retries_from_profile(port: AtPort) -> int | None:
    """The tries left from the profile's vendor command; None when it has none or it fails."""
    query = port.profile.pin if port.profile is not None else None
    if query is None or not query.retries_command:
        return None
    try:
        resp = port.command(query.retries_command)
    except TransportError as exc:
        if exc.code in ("modem.error", "modem.cme_error"):
            log.info("AT port %s: %s refused (%s)", port.path, query.retries_command, exc.code)
            return None
        raise
    return pinmod.parse_retries(resp.lines, query.retries_prefix, query.retries_index)


def retries_from_card(port: AtPort) -> int | None:
    """The tries left as the card says them: VERIFY PIN1 without data over AT+CSIM."""
    if port.profile is not None and not port.profile.card.csim:
        return None
    try:
        resp = port.command('AT+CSIM=10,"0020000100"')
    except TransportError as exc:
        if exc.code in ("modem.error", "modem.cme_error"):
            return None
        raise
    for line in resp.lines:
        m = _LEN_HEX.match(line)
        if m and len(m.group(2)) >= 4:
            status = pinmod.status_from_sw(int(m.group(2)[-4:], 16), "AT+CSIM VERIFY")
            return status.retries
    return None


def modem_pin_status(port: AtPort) -> PinStatus:
    """AT+CPIN? with the tries left when the PIN is needed."""
    status = cpin_status(port)
    if status.state != REQUIRED:
        return status
    retries = retries_from_profile(port)
    source = "AT+CPIN?, " + (
        port.profile.pin.retries_command if retries is not None and port.profile and port.profile.pin else ""
    )
    if retries is None:
        retries = retries_from_card(port)
        source = "AT+CPIN?, AT+CSIM VERIFY" if retries is not None else "AT+CPIN?"
    return PinStatus(REQUIRED if retries != 0 else BLOCKED, retries, source.rstrip(", "))


def enter_pin(port: AtPort, pin: Secret) -> PinStatus:
    """``AT+CPIN="<pin>"``: ready, or CardError card.pin_wrong (tries left) / card.pin_blocked."""
    digits = pin.reveal().decode("ascii")
    port.expect_cpin_ready()  # the +CPIN: READY that follows is ours, not a card reset
    try:
        port.command(f'AT+CPIN="{digits}"')
    except TransportError as exc:
        cme = exc.details.get("cme")
        if cme == CME_SIM_PUK_REQUIRED:
            raise CardError(
                "card.pin_blocked", "the modem reports SIM PUK: PIN1 is blocked", retries=0
            ) from None
        if cme == CME_INCORRECT_PASSWORD or exc.code in ("modem.error", "modem.cme_error"):
            after = modem_pin_status(port)
            if after.state == BLOCKED:
                raise CardError(
                    "card.pin_blocked", "the modem refused the PIN; PIN1 is now blocked", retries=0
                ) from None
            if after.state == READY:  # some modems answer ERROR to AT+CPIN= when no PIN is needed
                return after
            left = "unknown" if after.retries is None else str(after.retries)
            raise CardError(
                "card.pin_wrong",
                f"the modem refused the PIN ({exc.code}); {left} tries left",
                retries=after.retries,
            ) from None
        raise
    finally:
        del digits
    # the SIM initialises after the PIN (+CPIN: READY, then SMS DONE / PB DONE URCs on many
    # modems): wait, bounded, until AT+CPIN? says READY before the first +CSIM
    for _ in range(READY_POLLS):
        if cpin_status(port).state == READY:
            break
        time.sleep(READY_POLL_S)
    return PinStatus(READY, None, "AT+CPIN=", verified_by_agent=True)
