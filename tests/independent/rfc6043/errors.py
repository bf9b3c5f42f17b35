"""One exception type for every refusal, naming the clause of the text that is violated.

Reasons never contain key material: only lengths, code points, offsets and payload names.
"""

from __future__ import annotations

# RFC 3830 6.12 / RFC 6043 6.9 Error no values used when an Error message is built from a refusal.
ERR_AUTH_FAILURE = 0
ERR_INVALID_TS = 1
ERR_INVALID_PRF = 2
ERR_INVALID_MAC = 3
ERR_INVALID_EA = 4
ERR_INVALID_HA = 5
ERR_INVALID_ID = 7
ERR_INVALID_SP = 9
ERR_INVALID_SPPAR = 10
ERR_INVALID_DT = 11
ERR_UNSPECIFIED = 12
ERR_UNSUPPORTED_MESSAGE = 13
ERR_INVALID_TICKET = 14
ERR_INVALID_TPPAR = 15


class MikeyReject(Exception):
    """A message, payload or field that the text does not allow.

    code: stable dotted code (``rfc6043.<what>``); clause: "RFC 6043 6.10" etc.;
    err_no: the MIKEY Error no a receiver would report; offset: byte offset in the outermost message.
    """

    def __init__(
        self, code: str, clause: str, reason: str, *, err_no: int = ERR_UNSPECIFIED, offset: int | None = None
    ) -> None:
        self.code = code
        self.clause = clause
        self.reason = reason
        self.err_no = err_no
        self.offset = offset
        where = f" at offset {offset}" if offset is not None else ""
        super().__init__(f"{code}: {reason}{where} ({clause})")


def reject(
    code: str, clause: str, reason: str, *, err_no: int = ERR_UNSPECIFIED, offset: int | None = None
) -> MikeyReject:
    return MikeyReject(code, clause, reason, err_no=err_no, offset=offset)
