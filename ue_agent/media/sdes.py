"""SDES: the SDP ``a=crypto`` attribute (RFC 4568) and its offer/answer, sans-IO.

Grammar handled (RFC 4568 §4, §6.1; RFC 7714 §12 for the AEAD suite names)::

    a=crypto:<tag> <crypto-suite> <key-params> [<session-param> ...]
    key-params   = key-param *(";" key-param)
    key-param    = "inline:" <base64(master key || master salt)> ["|" lifetime] ["|" mki ":" mki-length]
    lifetime     = ["2^"] 1*DIGIT

Decisions (docs/media.md "SDES"):
- Suites we use: AES_CM_128_HMAC_SHA1_80/_32 (16+14 octets), AEAD_AES_128_GCM (16+12),
  AEAD_AES_256_GCM (32+12). Lines with other suites parse (syntax is checked) and are skipped.
- Session parameters: ``WSH=`` (a window-size hint) is ignored; every other one (KDR,
  UNENCRYPTED_SRTP/SRTCP, UNAUTHENTICATED_SRTP, FEC_ORDER, FEC_KEY, unknown) makes that
  line unacceptable to us, so the answer picks another line or fails with
  ``media.no_common_suite``: we never weaken protection nor run a KDR our media stack lacks.
- Several key-params on one line are accepted only with distinct MKIs of one MKI length
  (RFC 4568 §6.1); the media stack receives the first key and its MKI.
- base64 without its ``=`` padding is accepted (some stacks omit it); anything else that is
  not base64 of exactly the suite's key+salt length is ``media.sdes_malformed``.
- The answerer picks the first acceptable line in the offerer's order (the offer order is
  the offerer's preference) whose suite is in our allowed list, answers with the same tag,
  and sends under a fresh key of its own.
"""

from __future__ import annotations

import base64
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, overload

from ue_agent.errors import MediaError
from ue_agent.media.keys import SRTP_SUITES, SrtpKeys, StreamKeys
from ue_agent.secret import Secret, SecretText, b64_decode

#: Our preference order for offers (TS 33.328 requires AES_CM_128_HMAC_SHA1_80 support).
DEFAULT_SUITES: tuple[str, ...] = (
    "AES_CM_128_HMAC_SHA1_80",
    "AEAD_AES_128_GCM",
    "AEAD_AES_256_GCM",
    "AES_CM_128_HMAC_SHA1_32",
)
#: RFC 3711 §9.2 / RFC 7714: at most 2^48 SRTP packets per master key.
MAX_LIFETIME = 2**48
MAX_LINE = 4096
IGNORED_SESSION_PARAMS = ("WSH",)

MALFORMED = "media.sdes_malformed"
NO_COMMON_SUITE = "media.no_common_suite"
ANSWER_MISMATCH = "media.sdes_answer_mismatch"
UNSUPPORTED_SUITE = "media.unsupported_suite"

_TAG = re.compile(r"[0-9]{1,9}")
_TOKEN = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+")
_B64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_DIGITS = re.compile(r"[0-9]{1,15}")
_WSP = re.compile(r"[ \t]+")

RandomBytes = Callable[[int], bytes]


def _malformed(why: str, **details: object) -> MediaError:
    return MediaError(MALFORMED, f"a=crypto: {why}", **details)


@dataclass
class KeyParam:
    """One ``inline:`` key: master key || salt, optional lifetime and MKI."""

    key_salt: Secret
    lifetime: int | None = None
    mki: int | None = None
    mki_length: int | None = None

    def mki_bytes(self) -> bytes | None:
        if self.mki is None or self.mki_length is None:
            return None
        return self.mki.to_bytes(self.mki_length, "big")

    def zeroize(self) -> None:
        self.key_salt.zeroize()


@dataclass
class CryptoAttribute:
    """A parsed ``a=crypto`` line. ``keys`` is empty for a suite we do not know."""

    tag: int
    suite: str
    keys: list[KeyParam] = field(default_factory=list)
    session_params: tuple[str, ...] = ()
    known_suite: bool = True

    @property
    def acceptable(self) -> bool:
        """Whether we can use this line (known suite, inline key, no session parameter we refuse)."""
        if not self.known_suite or not self.keys:
            return False
        # RFC 4568 6.3.7: a parameter prefixed with "-" is optional and MAY be ignored; any other
        # one we do not implement makes this line invalid (the line only, not the SDP).
        return all(
            p.startswith("-") or p.split("=", 1)[0] in IGNORED_SESSION_PARAMS for p in self.session_params
        )

    def srtp_keys(self) -> SrtpKeys:
        """The first key as :class:`SrtpKeys` (a copy: zeroizing this attribute leaves it intact)."""
        if not self.acceptable:
            raise MediaError(UNSUPPORTED_SUITE, "this a=crypto line is not usable here", tag=self.tag)
        klen, _ = SRTP_SUITES[self.suite]
        ks = self.keys[0]
        return SrtpKeys(
            suite=self.suite,
            master_key=ks.key_salt.slice(0, klen, "srtp-master-key"),
            master_salt=ks.key_salt.slice(klen, len(ks.key_salt), "srtp-master-salt"),
            mki=ks.mki_bytes(),
        )

    def to_line(self) -> str:
        parts = []
        for k in self.keys:
            info = "inline:" + base64.b64encode(k.key_salt.reveal()).decode()
            if k.lifetime is not None:
                info += "|" + _format_lifetime(k.lifetime)
            if k.mki is not None:
                info += f"|{k.mki}:{k.mki_length}"
            parts.append(info)
        return " ".join([f"a=crypto:{self.tag}", self.suite, ";".join(parts), *self.session_params])

    def zeroize(self) -> None:
        for k in self.keys:
            k.zeroize()

    def __repr__(self) -> str:
        return f"<CryptoAttribute tag={self.tag} {self.suite} keys={len(self.keys)}>"


def _format_lifetime(n: int) -> str:
    if n > 0 and n & (n - 1) == 0:
        return f"2^{n.bit_length() - 1}"
    return str(n)


def _parse_lifetime(text: str) -> int:
    if text.startswith("2^"):
        exp = text[2:]
        if not _DIGITS.fullmatch(exp):
            raise _malformed("lifetime must be decimal or 2^n")
        value = 2 ** int(exp) if int(exp) <= 64 else MAX_LIFETIME + 1
    elif _DIGITS.fullmatch(text):
        value = int(text)
    else:
        raise _malformed("lifetime must be decimal or 2^n")
    if not 0 < value <= MAX_LIFETIME:
        raise _malformed("lifetime must be between 1 and 2^48 packets")
    return value


def _decode_key(b64: str, suite: str) -> Secret:
    if not _B64.fullmatch(b64):
        raise _malformed("key-salt is not base64", suite=suite)
    try:  # straight into a bytearray: no immutable copy of the peer's key (docs/api.md)
        raw = b64_decode(b64)
    except ValueError:
        raise _malformed("key-salt is not base64", suite=suite) from None
    want = sum(SRTP_SUITES[suite])
    try:
        if len(raw) != want:
            raise _malformed(f"{suite} needs {want} octets of key and salt", suite=suite, length=len(raw))
        return Secret(raw, "sdes-key-salt")
    finally:
        raw[:] = bytes(len(raw))


def _parse_key_param(text: str, suite: str, known: bool) -> KeyParam | None:
    method, sep, info = text.partition(":")
    if not sep or not _TOKEN.fullmatch(method):
        raise _malformed("key-param must be <method>:<info>")
    if method != "inline":
        return None  # a key method we do not know: the line stays unusable (RFC 4568 §5.1)
    fields = info.split("|")
    if len(fields) > 3:
        raise _malformed("too many '|' fields in the key-param")
    lifetime = mki = mki_length = None
    for extra in fields[1:]:
        if ":" in extra:
            if mki is not None:
                raise _malformed("two MKI fields in one key-param")
            value, _, length = extra.partition(":")
            if not _DIGITS.fullmatch(value) or not re.fullmatch(r"[0-9]{1,3}", length):
                raise _malformed("MKI must be <value>:<length>")
            mki, mki_length = int(value), int(length)
            if not 1 <= mki_length <= 128 or mki.bit_length() > 8 * mki_length:
                raise _malformed("MKI length is 1-128 octets and the value must fit in it")
        else:
            if lifetime is not None or mki is not None:
                raise _malformed("lifetime must come once, before the MKI")
            lifetime = _parse_lifetime(extra)
    if not known:
        if not fields[0] or not _B64.fullmatch(fields[0]):
            raise _malformed("key-salt is not base64")
        return None
    return KeyParam(_decode_key(fields[0], suite), lifetime, mki, mki_length)


def parse_crypto(line: str) -> CryptoAttribute:
    """Parse one ``a=crypto:`` line (the ``a=`` prefix is optional)."""
    if not isinstance(line, str) or len(line) > MAX_LINE:
        raise _malformed("not a line of text under 4096 characters")
    text = line.strip()
    if text.startswith("a="):
        text = text[2:]
    if not text.startswith("crypto:"):
        raise _malformed("not a crypto attribute")
    # RFC 4568 9.1: fields are separated by 1*WSP (spaces or horizontal tabs)
    fields = _WSP.split(text[len("crypto:") :])
    if len(fields) < 3 or any(f == "" for f in fields):
        raise _malformed("need '<tag> <suite> <key-params>' separated by white space")
    tag_s, suite, key_params, *session = fields
    if not _TAG.fullmatch(tag_s):
        raise _malformed("tag must be 1-9 digits")
    if not _TOKEN.fullmatch(suite):
        raise _malformed("crypto-suite is not a token")
    for p in session:
        if not re.fullmatch(r"[\x21-\x7e]+", p):
            raise _malformed("session parameter has characters outside VCHAR")
    known = suite in SRTP_SUITES
    keys: list[KeyParam] = []
    try:
        for kp in key_params.split(";"):
            k = _parse_key_param(kp, suite, known)
            if k is not None:
                keys.append(k)
        if len(keys) > 1:
            mkis = [k.mki for k in keys]
            if None in mkis or len(set(mkis)) != len(mkis) or len({k.mki_length for k in keys}) != 1:
                raise _malformed("several keys need distinct MKIs of one length (RFC 4568 6.1)")
    except MediaError:
        for k in keys:
            k.zeroize()
        raise
    return CryptoAttribute(int(tag_s), suite, keys, tuple(session), known_suite=known)


def crypto_lines(lines: Sequence[str]) -> list[str]:
    """The ``a=crypto`` lines among one media section's attribute lines."""
    if isinstance(lines, str):
        raise _malformed("expected a list of attribute lines, got one string")
    out = []
    for line in lines:
        if not isinstance(line, str):
            raise _malformed("attribute lines must be strings")
        s = line.strip()
        if s.startswith("a=crypto:") or s.startswith("crypto:"):
            out.append(s)
    return out


def _check_suites(suites: Sequence[str] | None) -> tuple[str, ...]:
    chosen = tuple(suites) if suites else DEFAULT_SUITES
    for s in chosen:
        if s not in SRTP_SUITES:
            raise MediaError(UNSUPPORTED_SUITE, f"suite {s!r} is not supported", suite=s)
    if len(set(chosen)) != len(chosen):
        raise MediaError(UNSUPPORTED_SUITE, "a suite is listed twice")
    return chosen


def new_key(suite: str, rng: RandomBytes = secrets.token_bytes) -> SrtpKeys:
    """A fresh master key and salt for ``suite`` from the OS CSPRNG."""
    klen, slen = SRTP_SUITES[suite]
    raw = bytearray(rng(klen + slen))
    try:
        return SrtpKeys(
            suite,
            Secret(memoryview(raw)[:klen], "srtp-master-key"),
            Secret(memoryview(raw)[klen:], "srtp-master-salt"),
        )
    finally:
        raw[:] = bytes(len(raw))


@overload
def format_crypto(tag: int, keys: SrtpKeys, lifetime: int | None = None) -> str: ...


@overload
def format_crypto(tag: int, keys: SrtpKeys, lifetime: int | None, reply: Literal[True]) -> SecretText: ...


def format_crypto(
    tag: int, keys: SrtpKeys, lifetime: int | None = None, reply: bool = False
) -> str | SecretText:
    """An ``a=crypto`` line carrying ``keys`` (and its MKI, if any). ``reply``: as a
    :class:`SecretText` for the API's reply encoder (no str copy of the key is made)."""
    if not 0 <= tag <= 999_999_999:
        raise MediaError(MALFORMED, "tag must be 1-9 digits", tag=tag)
    if lifetime is not None and not 0 < lifetime <= MAX_LIFETIME:
        raise MediaError(MALFORMED, "lifetime must be between 1 and 2^48 packets")
    ks = Secret.concat([keys.master_key, keys.master_salt], "sdes-key-salt")
    mki = mki_len = None
    if keys.mki is not None:
        mki, mki_len = int.from_bytes(keys.mki, "big"), len(keys.mki)
    if reply:
        tail = ("|" + _format_lifetime(lifetime) if lifetime is not None else "") + (
            f"|{mki}:{mki_len}" if mki is not None else ""
        )
        return SecretText(f"a=crypto:{tag} {keys.suite} inline:", ks, tail, owned=True)
    attr = CryptoAttribute(tag, keys.suite, [KeyParam(ks, lifetime, mki, mki_len)])
    try:
        return attr.to_line()
    finally:
        attr.zeroize()


# -- offer / answer ---------------------------------------------------------------------------


@dataclass
class OfferedStream:
    """What the offerer keeps for one stream until the answer: one own key per offered line."""

    media: str
    lines: list[str | SecretText]
    keys: dict[int, SrtpKeys]
    lifetime: int | None = None


@dataclass
class LocalOffer:
    """The offerer's side of an SDES exchange (keys stay here, lines go into the SDP)."""

    streams: list[OfferedStream]

    @property
    def lines(self) -> list[list[str | SecretText]]:
        return [s.lines for s in self.streams]

    def zeroize(self) -> None:
        for s in self.streams:
            for k in s.keys.values():
                k.zeroize()

    def __repr__(self) -> str:
        return f"<LocalOffer streams={[s.media for s in self.streams]}>"


def _check_media(media: str) -> str:
    if not isinstance(media, str) or not _TOKEN.fullmatch(media) or len(media) > 32:
        raise MediaError(MALFORMED, "media must be a token such as 'audio'", media=str(media)[:40])
    return media


def make_offer(
    streams: Sequence[str],
    suites: Sequence[str] | None = None,
    *,
    lifetime: int | None = None,
    e2ae: bool = False,
    rng: RandomBytes = secrets.token_bytes,
    reply: bool = False,
) -> tuple[list[list[str | SecretText]], LocalOffer]:
    """Offer SDES for each stream (``["audio", "video"]``).

    Each offered line carries its own fresh key, so the keys of the suites not chosen
    are never used. With ``e2ae`` each stream also gets ``a=3ge2ae:requested`` (TS 24.229
    §7.5.2, TS 33.328 e2ae). Returns the per-stream attribute lines and the
    :class:`LocalOffer` to pass to :func:`accept_answer`. ``reply``: the ``a=crypto`` lines
    as :class:`SecretText` for the API's reply encoder.
    """
    if isinstance(streams, str) or not streams:
        raise MediaError(MALFORMED, "give a non-empty list of media streams")
    chosen = _check_suites(suites)
    out: list[OfferedStream] = []
    for media in streams:
        _check_media(media)
        keys: dict[int, SrtpKeys] = {}
        lines: list[str | SecretText] = []
        for tag, suite in enumerate(chosen, start=1):
            k = new_key(suite, rng)
            keys[tag] = k
            lines.append(format_crypto(tag, k, lifetime, True) if reply else format_crypto(tag, k, lifetime))
        if e2ae:
            lines.append("a=3ge2ae:requested")
        out.append(OfferedStream(media, lines, keys, lifetime))
    offer = LocalOffer(out)
    return offer.lines, offer


def _min_lifetime(*values: int | None) -> int | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None


def answer_stream(
    offer_lines: Sequence[str],
    media: str = "audio",
    suites: Sequence[str] | None = None,
    *,
    rng: RandomBytes = secrets.token_bytes,
    reply: bool = False,
) -> tuple[list[str | SecretText], StreamKeys]:
    """Answer one stream's SDES offer: pick a line, answer it with our own fresh key."""
    _check_media(media)
    allowed = _check_suites(suites)
    lines = crypto_lines(offer_lines)
    if not lines:
        raise MediaError(NO_COMMON_SUITE, "the offer has no a=crypto line", media=media)
    parsed: list[CryptoAttribute] = []
    bad = 0
    for line in lines:  # one line we cannot parse does not make the others unusable
        try:
            parsed.append(parse_crypto(line))
        except MediaError:
            bad += 1
    try:
        if not parsed:
            raise _malformed("no offered a=crypto line could be parsed", media=media, malformed=bad)
        tags = [a.tag for a in parsed]
        if len(set(tags)) != len(tags):
            raise _malformed("two a=crypto lines share a tag", media=media)
        pick = next((a for a in parsed if a.acceptable and a.suite in allowed), None)
        if pick is None:
            raise MediaError(
                NO_COMMON_SUITE,
                "no offered a=crypto line is acceptable",
                media=media,
                offered=[a.suite for a in parsed],
            )
        rx = pick.srtp_keys()
        tx = new_key(pick.suite, rng)
        if tx.master_key == rx.master_key:  # never send under the peer's key
            rx.zeroize()
            tx.zeroize()
            raise MediaError("media.key_reuse", "our fresh key equals the offered key")
        lifetime = pick.keys[0].lifetime
        ours: str | SecretText = (
            format_crypto(pick.tag, tx, lifetime, True) if reply else format_crypto(pick.tag, tx, lifetime)
        )
        return [ours], StreamKeys(media, tx=tx, rx=rx, tag=pick.tag, max_packets=lifetime)
    finally:
        for a in parsed:
            a.zeroize()


def make_answer(
    offer: Sequence[Sequence[str]],
    media: Sequence[str] | None = None,
    suites: Sequence[str] | None = None,
    *,
    rng: RandomBytes = secrets.token_bytes,
    reply: bool = False,
) -> tuple[list[list[str | SecretText]], list[StreamKeys]]:
    """Answer a multi-stream offer (one list of attribute lines per stream)."""
    if isinstance(offer, str) or not offer:
        raise _malformed("the offer must be a list of streams")
    names = list(media) if media is not None else ["audio"] * len(offer)
    if len(names) != len(offer):
        raise MediaError(MALFORMED, "one media name per offered stream")
    lines: list[list[str | SecretText]] = []
    keys: list[StreamKeys] = []
    try:
        for stream_lines, name in zip(offer, names, strict=True):
            ls, k = answer_stream(stream_lines, name, suites, rng=rng, reply=reply)
            lines.append(ls)
            keys.append(k)
    except MediaError:
        for k in keys:
            k.zeroize()
        raise
    return lines, keys


def accept_answer(local: LocalOffer, answer: Sequence[Sequence[str]]) -> list[StreamKeys]:
    """Match the answer to our offer: per stream, our key for the chosen tag and the peer's key.

    The keys of the lines not chosen are zeroized; ``local`` must not be used again.
    """
    result: list[StreamKeys] = []
    try:
        if isinstance(answer, str) or len(answer) != len(local.streams):
            raise MediaError(ANSWER_MISMATCH, "the answer must have one entry per offered stream")
        for offered, ans_lines in zip(local.streams, answer, strict=True):
            lines = crypto_lines(ans_lines)
            if not lines:
                raise MediaError(
                    NO_COMMON_SUITE, "the answer accepted none of our suites", media=offered.media
                )
            if len(lines) != 1:
                raise MediaError(ANSWER_MISMATCH, "an answer carries exactly one a=crypto line per stream")
            attr = parse_crypto(lines[0])
            try:
                ours = offered.keys.get(attr.tag)
                if ours is None or ours.suite != attr.suite:
                    raise MediaError(
                        ANSWER_MISMATCH,
                        "the answer's tag and suite do not match a line we offered",
                        media=offered.media,
                        tag=attr.tag,
                        suite=attr.suite,
                    )
                if not attr.acceptable:
                    raise MediaError(
                        ANSWER_MISMATCH, "the answer's a=crypto line is not usable", tag=attr.tag
                    )
                rx = attr.srtp_keys()
                lifetime = _min_lifetime(attr.keys[0].lifetime, offered.lifetime)
            finally:
                attr.zeroize()
            if rx.master_key == ours.master_key:
                rx.zeroize()
                raise MediaError("media.key_reuse", "the peer answered with our own key (reflection)")
            del offered.keys[attr.tag]  # keep ours out of the zeroize below
            result.append(StreamKeys(offered.media, tx=ours, rx=rx, tag=attr.tag, max_packets=lifetime))
    except MediaError:
        for k in result:
            k.zeroize()
        raise
    finally:
        local.zeroize()
    return result
