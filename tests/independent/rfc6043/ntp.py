"""NTP timestamps (RFC 3830 4.2.8 / 6.6, RFC 6043 6.3 with the RFC 4330 era rule of 6.10)."""

from __future__ import annotations

from .wire import TR, T

NTP_UNIX_OFFSET = 2208988800  # seconds from 1900-01-01 to 1970-01-01


def ntp_utc(unix: float) -> T:
    """TS type 0 (NTP-UTC, 64 bits)."""
    secs = int(unix)
    frac = int((unix - secs) * (1 << 32)) & 0xFFFFFFFF
    return T(0, (((secs + NTP_UNIX_OFFSET) & 0xFFFFFFFF) << 32 | frac).to_bytes(8, "big"))


def ntp_utc32(unix: float) -> bytes:
    return ((int(unix) + NTP_UNIX_OFFSET) & 0xFFFFFFFF).to_bytes(4, "big")


def to_unix(ts_type: int, value: bytes) -> float | None:
    """Seconds since 1970 for the NTP types; None for COUNTER. Era per RFC 4330 3 (MSB 0 => after 2036),
    the 1968-2104 range RFC 6043 6.10 asks for TRs/TRe."""
    if ts_type not in (0, 1, 3):
        return None
    secs = int.from_bytes(value[:4], "big")
    frac = int.from_bytes(value[4:8], "big") / (1 << 32) if len(value) == 8 else 0.0
    if not secs & 0x80000000:
        secs += 1 << 32
    return secs - NTP_UNIX_OFFSET + frac


def tr(role: int, unix: float) -> TR:
    return TR(role, 3, ntp_utc32(unix))
