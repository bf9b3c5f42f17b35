"""Status words to stable error codes: the one table (TS 102 221 10.2, TS 31.102/31.103).

Everything the card layer does not treat as an outcome (9000, 91xx, the AUTHENTICATE
results 9862 and DB/DC) becomes a :class:`CardError` whose code comes from here; the
status word is always in ``details["sw"]``.
"""

from __future__ import annotations

from ue_agent.errors import CardError

#: exact status words
SW_CODES: dict[int, tuple[str, str]] = {
    0x6281: ("card.data_corrupted", "part of the returned data may be corrupted"),
    0x6282: ("card.end_of_file", "end of file or record reached before Le bytes"),
    0x6283: ("card.invalidated", "the selected file is invalidated"),
    0x6581: ("card.memory_problem", "memory problem"),
    0x6700: ("card.wrong_length", "wrong length"),
    0x6881: ("card.channel_not_supported", "logical channel not supported or not open"),
    0x6882: ("card.not_supported", "secure messaging not supported"),
    0x6884: ("card.not_supported", "command chaining not supported"),
    0x6981: ("card.incompatible_file", "command incompatible with the file structure"),
    0x6982: ("card.security_status", "security status not satisfied (PIN not verified?)"),
    0x6983: ("card.blocked", "authentication/PIN method blocked"),
    0x6984: ("card.reference_data_invalidated", "reference data invalidated"),
    0x6985: ("card.conditions_not_satisfied", "conditions of use not satisfied"),
    0x6986: ("card.no_current_ef", "command not allowed (no EF selected)"),
    0x6A80: ("card.incorrect_data", "incorrect parameters in the data field"),
    0x6A81: ("card.not_supported", "function not supported"),
    0x6A82: ("card.file_not_found", "file or application not found"),
    0x6A83: ("card.record_not_found", "record not found"),
    0x6A84: ("card.memory_full", "not enough memory space"),
    0x6A86: ("card.incorrect_p1p2", "incorrect parameters P1-P2"),
    0x6A88: ("card.reference_not_found", "referenced data not found"),
    0x6B00: ("card.incorrect_p1p2", "wrong parameters P1-P2 (offset outside the file)"),
    0x6D00: ("card.not_supported", "instruction not supported"),
    0x6E00: ("card.not_supported", "class not supported"),
    0x6F00: ("card.technical_problem", "technical problem, no precise diagnosis"),
    0x9862: ("card.auth_mac_failure", "authentication error, incorrect MAC"),
    0x9864: ("card.context_not_supported", "authentication error, security context not supported"),
    0x9865: ("card.key_freshness_failure", "key freshness failure"),
    0x9866: ("card.memory_full", "authentication error, no memory space available"),
    0x9804: ("card.security_status", "security status not satisfied (2G)"),
    0x9840: ("card.blocked", "authentication/PIN method blocked (2G)"),
}


def sw_error(sw: int, doing: str, overrides: dict[int, str] | None = None) -> CardError:
    """The CardError for status word ``sw`` met while ``doing`` (e.g. "reading EF_IMPI")."""
    sw_hex = f"{sw:04X}"
    if overrides and sw in overrides:
        return CardError(overrides[sw], f"{doing}: card answered {sw_hex}", sw=sw_hex)
    if sw in SW_CODES:
        code, text = SW_CODES[sw]
    elif sw >> 4 == 0x63C:
        code, text = "card.security_status", f"verification failed, {sw & 0x0F} tries left"
    else:
        code, text = "card.unexpected_sw", "unexpected status word"
    return CardError(code, f"{doing}: {text} ({sw_hex})", sw=sw_hex)
