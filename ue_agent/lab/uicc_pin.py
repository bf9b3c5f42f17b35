"""PIN1 of the soft UICC: VERIFY, CHANGE, DISABLE, ENABLE and UNBLOCK PIN (TS 102 221 11.1.9-11.1.13).

One application PIN (key reference ``01``, TS 102 221 9.5.1) guards the files of the ADFs
and AUTHENTICATE; the MF's EF_DIR and EF_ICCID stay readable (access condition ALW). The
subscriber file says whether the card has it enabled (``pin1``, ``puk1``, ``pin1_enabled``,
``pin1_tries``, ``puk1_tries``; see :mod:`ue_agent.subscriber`).

PIN and PUK blocks are 8 bytes: the digits in ASCII, padded with FF (TS 102 221 9.5.2).
Status words (TS 102 221 10.2.1): ``63CX`` verification failed, X tries left (and the
answer to a VERIFY/UNBLOCK without data while verification is still needed); ``6983``
the PIN (or PUK) is blocked; ``6982`` a command needs the PIN (:meth:`SoftPin.require`);
``6985`` VERIFY/CHANGE on a disabled PIN; ``6700`` a block that is not 8 (16) bytes;
``6A86``/``6A88`` a key reference other than PIN1. The values never leave this object:
no repr, no log.
"""

from __future__ import annotations

import hmac

from ue_agent.secret import Secret

KEY_PIN1 = 0x01
INS_VERIFY, INS_CHANGE, INS_DISABLE, INS_ENABLE, INS_UNBLOCK = 0x20, 0x24, 0x26, 0x28, 0x2C
PIN_INS = frozenset({INS_VERIFY, INS_CHANGE, INS_DISABLE, INS_ENABLE, INS_UNBLOCK})
PIN_TRIES = 3  # TS 102 221 9.5.1 leaves the count to the issuer; 3 is what cards ship with
PUK_TRIES = 10


def pin_block(digits: str) -> bytes:
    """4-8 ASCII digits, FF-padded to 8 bytes (TS 102 221 9.5.2)."""
    if not (digits.isascii() and digits.isdigit() and 4 <= len(digits) <= 8):
        raise ValueError("a PIN is 4 to 8 digits")
    return digits.encode("ascii") + b"\xff" * (8 - len(digits))


class PinSw(Exception):
    """Internal: the answer to a PIN command (a status word)."""

    def __init__(self, sw: int) -> None:
        super().__init__(f"{sw:04X}")
        self.sw = sw


class SoftPin:
    """PIN1 and its PUK, with retry counters. ``verified`` is per power-up (cleared on reset)."""

    __slots__ = ("_pin", "_puk", "enabled", "tries", "max_tries", "puk_tries", "max_puk_tries", "verified")

    def __init__(
        self,
        pin: str,
        puk: str,
        *,
        enabled: bool = True,
        tries: int = PIN_TRIES,
        puk_tries: int = PUK_TRIES,
    ) -> None:
        self._pin = Secret(pin_block(pin), "PIN1")
        self._puk = Secret(pin_block(puk), "PUK1")
        self.enabled = enabled
        self.max_tries, self.max_puk_tries = PIN_TRIES, PUK_TRIES
        self.tries = tries
        self.puk_tries = puk_tries
        self.verified = False

    def __repr__(self) -> str:
        return f"<SoftPin enabled={self.enabled} tries={self.tries} puk_tries={self.puk_tries}>"

    @property
    def blocked(self) -> bool:
        return self.tries == 0

    @property
    def satisfied(self) -> bool:
        """The PIN1 access condition holds: disabled, or verified since power-up."""
        return not self.enabled or self.verified

    def reset(self) -> None:
        self.verified = False

    def require(self) -> None:
        """Raise 6982 unless PIN1's access condition holds (TS 102 221 10.2.1.5)."""
        if not self.satisfied:
            raise PinSw(0x6982)

    # --- the commands ---------------------------------------------------------------------------
    def command(self, ins: int, p1: int, p2: int, data: bytes) -> int:
        """Run one PIN command; returns its status word."""
        try:
            if p2 != KEY_PIN1:
                # only PIN1 exists: another global/local reference is not on this card
                raise PinSw(0x6A88 if p2 in (*range(0x01, 0x09), 0x11, *range(0x81, 0x89)) else 0x6A86)
            if ins == INS_VERIFY:
                self._verify(p1, data)
            elif ins == INS_CHANGE:
                self._change(p1, data)
            elif ins == INS_DISABLE:
                self._disable(p1, data)
            elif ins == INS_ENABLE:
                self._enable(p1, data)
            else:
                self._unblock(p1, data)
        except PinSw as answer:
            return answer.sw
        return 0x9000

    def _check(self, candidate: bytes) -> None:
        """Compare ``candidate`` with PIN1: on a mismatch one try goes (63CX, 6983 at none)."""
        if self.blocked:
            raise PinSw(0x6983)
        if not hmac.compare_digest(candidate, self._pin.reveal()):
            self.tries -= 1
            self.verified = False
            raise PinSw(0x63C0 | self.tries)
        self.tries = self.max_tries

    @staticmethod
    def _block(data: bytes, count: int = 1) -> None:
        if len(data) != 8 * count:
            raise PinSw(0x6700)

    def _verify(self, p1: int, data: bytes) -> None:
        if p1 != 0x00:
            raise PinSw(0x6A86)
        if not data:  # TS 102 221 11.1.9: no data: the retry counter, or 9000 when nothing is needed
            if self.satisfied:
                return
            raise PinSw(0x63C0 | self.tries)
        self._block(data)
        if not self.enabled:
            raise PinSw(0x6985)
        self._check(data)
        self.verified = True

    def _change(self, p1: int, data: bytes) -> None:
        if p1 != 0x00:
            raise PinSw(0x6A86)
        self._block(data, 2)
        if not self.enabled:
            raise PinSw(0x6985)
        self._check(data[:8])
        new = data[8:]
        self._valid_new(new)
        self._pin.zeroize()
        self._pin = Secret(new, "PIN1")
        self.verified = True

    def _disable(self, p1: int, data: bytes) -> None:
        # P1 = 00: no alternative global key reference replaces PIN1 (TS 102 221 11.1.11)
        if p1 != 0x00:
            raise PinSw(0x6A86)
        self._block(data)
        if not self.enabled:
            raise PinSw(0x6985)
        self._check(data)
        self.enabled = False

    def _enable(self, p1: int, data: bytes) -> None:
        if p1 != 0x00:
            raise PinSw(0x6A86)
        self._block(data)
        if self.enabled:
            raise PinSw(0x6985)
        self._check(data)
        self.enabled = True
        self.verified = True

    def _unblock(self, p1: int, data: bytes) -> None:
        if p1 != 0x00:
            raise PinSw(0x6A86)
        if not data:  # TS 102 221 11.1.13: no data: the PUK's retry counter
            raise PinSw(0x63C0 | self.puk_tries)
        self._block(data, 2)
        if self.puk_tries == 0:
            raise PinSw(0x6983)
        if not hmac.compare_digest(data[:8], self._puk.reveal()):
            self.puk_tries -= 1
            raise PinSw(0x63C0 | self.puk_tries)
        self._valid_new(data[8:])
        self.puk_tries = self.max_puk_tries
        self._pin.zeroize()
        self._pin = Secret(data[8:], "PIN1")
        self.tries = self.max_tries
        self.verified = True

    @staticmethod
    def _valid_new(block: bytes) -> None:
        digits = block.rstrip(b"\xff")
        padded = block[len(digits) :] == b"\xff" * (8 - len(digits))
        if not (4 <= len(digits) <= 8 and digits.isdigit() and padded):
            raise PinSw(0x6A80)
