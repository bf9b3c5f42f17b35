"""Message-level rules of RFC 6043 4.2 / 5.2 / 5.4 / 6.x, MAC coverage (5.5) and verification.

decode() = structure (wire.py) + which payloads, in which order and how many, + the HDR, flag and
crypto-session rules each clause states with MUST/SHALL.
"""

from __future__ import annotations

import hmac as _hmac
from dataclasses import dataclass

from . import algs
from .errors import (
    ERR_AUTH_FAILURE,
    ERR_INVALID_SP,
    ERR_INVALID_TICKET,
    ERR_INVALID_TPPAR,
    MikeyReject,
    reject,
)
from .wire import (
    DT_ERROR,
    DT_REQUEST_INIT_PSK,
    DT_REQUEST_RESP,
    DT_RESOLVE_INIT_PSK,
    DT_RESOLVE_RESP,
    DT_TRANSFER_INIT,
    DT_TRANSFER_RESP,
    IDR,
    IDR_APP,
    IDR_I,
    IDR_KMS,
    IDR_PSK,
    IDR_R,
    MAP_EMPTY,
    MAP_GENERIC_ID,
    MAP_SRTP_ID,
    PROT_SRTP,
    RANDR_I,
    RANDR_KMS,
    RANDR_R,
    SP,
    TP,
    TR,
    TR_END,
    TR_REKEY,
    TR_START,
    Err,
    GenericCs,
    GenExt,
    Kemac,
    Message,
    Payload,
    RandR,
    T,
    Ticket,
    V,
    decode_key_data,
    decode_structure,
)

INF = 10**9


@dataclass(frozen=True)
class Slot:
    cls: type[Payload]
    role: int | None
    lo: int
    hi: int
    label: str


def _s(cls: type[Payload], label: str, lo: int = 1, hi: int = 1, role: int | None = None) -> Slot:
    return Slot(cls, role, lo, hi, label)


_T = _s(T, "T")
_V = _s(V, "V")
# RFC 6043 4.2.1 / 4.2.2 / 4.2.3 / 5.2 / 5.4: the payload lists after HDR.
GRAMMARS: dict[int, list[tuple[str, list[Slot]]]] = {
    DT_REQUEST_INIT_PSK: [
        (
            "RFC 6043 4.2.1 (REQUEST_INIT_PSK)",
            [
                _T,
                _s(RandR, "RANDRi", role=RANDR_I),
                _s(IDR, "IDRi", 0, 1, IDR_I),
                _s(IDR, "IDRkms", 0, 1, IDR_KMS),
                _s(TP, "TP"),
                _s(IDR, "IDRpsk", 0, 1, IDR_PSK),
                _V,
            ],
        )
    ],
    DT_REQUEST_RESP: [
        (
            "RFC 6043 4.2.1 (REQUEST_RESP)",
            [_T, _s(IDR, "IDRkms", 0, 1, IDR_KMS), _s(Ticket, "TICKET"), _s(Kemac, "KEMAC"), _V],
        )
    ],
    DT_TRANSFER_INIT: [
        (
            "RFC 6043 4.2.2 (TRANSFER_INIT)",
            [
                _T,
                _s(RandR, "RANDRi", role=RANDR_I),
                _s(IDR, "IDRi", 0, 1, IDR_I),
                _s(IDR, "IDRr", 0, 1, IDR_R),
                _s(SP, "SP", 0, INF),
                _s(Ticket, "TICKET"),
                _s(Kemac, "KEMAC", 0, 1),
                _V,
            ],
        ),
        (
            "RFC 6043 5.2 (TRANSFER_INIT, CSB update by the Initiator)",
            [
                _T,
                _s(RandR, "RANDRi", 0, 1, RANDR_I),
                _s(IDR, "IDRi", 0, 1, IDR_I),
                _s(IDR, "IDRr", 0, 1, IDR_R),
                _s(SP, "SP", 0, INF),
                _s(Kemac, "KEMAC", 0, 1),
                _V,
            ],
        ),
        (
            "RFC 6043 5.2 (TRANSFER_INIT, CSB update by the Responder)",
            [
                _T,
                _s(IDR, "IDRr", 0, 1, IDR_R),
                _s(IDR, "IDRi", 0, 1, IDR_I),
                _s(SP, "SP", 0, INF),
                _s(Kemac, "KEMAC", 0, 1),
                _V,
            ],
        ),
    ],
    DT_TRANSFER_RESP: [
        (
            "RFC 6043 4.2.2 (TRANSFER_RESP)",
            [
                _T,
                _s(RandR, "RANDRr", 0, 1, RANDR_R),
                _s(IDR, "IDRr", 0, 1, IDR_R),
                _s(RandR, "RANDRkms", 0, 1, RANDR_KMS),
                _s(SP, "SP", 0, INF),
                _s(Kemac, "KEMAC", 0, 1),
                _V,
            ],
        ),
        (
            "RFC 6043 5.2 (TRANSFER_RESP to a CSB update by the Responder)",
            [_T, _s(IDR, "IDRi", 0, 1, IDR_I), _s(SP, "SP", 0, INF), _s(Kemac, "KEMAC", 0, 1), _V],
        ),
    ],
    DT_RESOLVE_INIT_PSK: [
        (
            "RFC 6043 4.2.3 (RESOLVE_INIT_PSK)",
            [
                _T,
                _s(RandR, "RANDRr", role=RANDR_R),
                _s(IDR, "IDRr", 0, 1, IDR_R),
                _s(IDR, "IDRkms", 0, 1, IDR_KMS),
                _s(Ticket, "TICKET"),
                _s(IDR, "IDRpsk", 0, 1, IDR_PSK),
                _V,
            ],
        )
    ],
    DT_RESOLVE_RESP: [
        (
            "RFC 6043 4.2.3 (RESOLVE_RESP)",
            [
                _T,
                _s(IDR, "IDRkms", 0, 1, IDR_KMS),
                _s(Kemac, "KEMAC"),
                _s(IDR, "IDRr", 0, 1, IDR_R),
                _s(RandR, "RANDRkms", 0, 1, RANDR_KMS),
                _V,
            ],
        )
    ],
    DT_ERROR: [
        ("RFC 6043 5.4 (Error message)", [_T, _s(Err, "ERR", 1, INF), _s(SP, "SP", 0, INF), _s(V, "V", 0, 1)])
    ],
}

# RFC 6043 6.10: TP Data = First Payload, [IDRkms], [IDRi], [TRs], [TRe], [TRr], [KEMAC], {IDRapp}, (IDRr)
TP_GRAMMAR = [
    _s(IDR, "IDRkms", 0, 1, IDR_KMS),
    _s(IDR, "IDRi", 0, 1, IDR_I),
    _s(TR, "TRs", 0, 1, TR_START),
    _s(TR, "TRe", 0, 1, TR_END),
    _s(TR, "TRr", 0, 1, TR_REKEY),
    _s(Kemac, "KEMAC", 0, 1),
    _s(IDR, "IDRapp", 0, INF, IDR_APP),
    _s(IDR, "IDRr", 1, INF, IDR_R),
]
# RFC 6043 6.10: Initiator Data = First Payload, Vi, Vr
INITIATOR_DATA_GRAMMAR = [_s(V, "Vi"), _s(V, "Vr")]


def _label(p: Payload) -> str:
    role = getattr(p, "role", None)
    return p.NAME + (f"(role {role})" if role is not None else "")


def match_grammar(
    payloads: tuple[Payload, ...] | list[Payload],
    slots: list[Slot],
    clause: str,
    *,
    allow_genext: bool = True,
) -> dict[str, list[Payload]]:
    """Check order and cardinality; return payloads by slot label. General Extension payloads
    (RFC 3830 6.15 "can be used in any MIKEY message") are accepted anywhere before the last slot."""
    got: dict[str, list[Payload]] = {s.label: [] for s in slots}
    seq = [p for p in payloads if not (allow_genext and isinstance(p, GenExt))]
    if allow_genext:
        got["GenExt"] = [p for p in payloads if isinstance(p, GenExt)]
        if payloads and isinstance(payloads[-1], GenExt) and slots[-1].lo:
            raise reject(
                "rfc6043.order",
                clause,
                f"General Extension after the last payload ({slots[-1].label})",
                offset=payloads[-1].offset,
            )
    i = 0
    wanted = ", ".join(
        ("" if s.lo else "[") + s.label + ("" if s.lo else "]") + ("*" if s.hi > 1 else "") for s in slots
    )
    for s in slots:
        n = 0
        while (
            i < len(seq)
            and n < s.hi
            and isinstance(seq[i], s.cls)
            and (s.role is None or getattr(seq[i], "role", None) == s.role)
        ):
            got[s.label].append(seq[i])
            i += 1
            n += 1
        if n < s.lo:
            if i < len(seq) and not any(
                isinstance(seq[i], o.cls) and (o.role is None or getattr(seq[i], "role", None) == o.role)
                for o in slots
            ):
                raise reject(
                    "rfc6043.unexpected",
                    clause,
                    f"{_label(seq[i])} has no place in this message; expected {wanted}",
                    offset=seq[i].offset,
                )
            at = seq[i].offset if i < len(seq) else None
            found = f"found {_label(seq[i])}" if i < len(seq) else "the message ends"
            raise reject(
                "rfc6043.missing", clause, f"{s.label} required here, {found}; expected {wanted}", offset=at
            )
    if i < len(seq):
        raise reject(
            "rfc6043.unexpected",
            clause,
            f"{_label(seq[i])} is not allowed at this place; expected {wanted}",
            offset=seq[i].offset,
        )
    return got


@dataclass(frozen=True)
class Decoded:
    """A strictly decoded message with its payloads by name (e.g. parts['RANDRi'][0])."""

    msg: Message
    parts: dict[str, list[Payload]]
    grammar: str

    def get(self, label: str) -> Payload | None:
        v = self.parts.get(label) or []
        return v[0] if v else None

    @property
    def name(self) -> str:
        return self.msg.name

    @property
    def raw(self) -> bytes:
        return self.msg.raw


def _policy_checks(head_payload: TP | Ticket, where: str, *, granted: bool) -> dict[str, list[Payload]]:
    c = "RFC 6043 6.10"
    h = head_payload.head
    f = h.flags
    off = head_payload.offset
    if h.ticket_type == 1 and (h.subtype, h.version) != (1, 1):
        raise reject(
            "rfc6043.ticket.subtype",
            c,
            f"{where}: Ticket Type 1 with Subtype {h.subtype} Version {h.version}; only 0x01/0x01 "
            "(MIKEY Base Ticket) is defined",
            err_no=ERR_INVALID_TICKET,
            offset=off,
        )
    rules = [
        (not f.D, f.L, "NOT D implies L"),
        (f.G, f.F, "G implies F"),
        (not f.G, f.H, "NOT G implies H"),
        (not f.H, f.G, "NOT H implies G"),
        (f.I, f.E, "I implies E"),
        (f.K, f.D, "K implies D"),
        (f.M, f.F, "M implies F"),
    ]
    for cond, then, text in rules:
        if cond and not then:
            raise reject(
                "rfc6043.ticket.flags",
                c,
                f"{where}: flags {f} break '{text}'",
                err_no=ERR_INVALID_TPPAR,
                offset=off,
            )
    if not granted and f.K:
        raise reject(
            "rfc6043.tp.k_flag",
            c,
            "TP: the K flag SHALL be set to '0' by the Initiator",
            err_no=ERR_INVALID_TPPAR,
            offset=off,
        )
    parts = match_grammar(
        head_payload.tp_payloads, TP_GRAMMAR, f"{c} (TP Data of {where})", allow_genext=False
    )
    for tr in parts["TRr"]:
        assert isinstance(tr, TR)
        if tr.ts_type != 3:
            raise reject(
                "rfc6043.tp.trr_type",
                c,
                f"TRr TS Type {tr.ts_type}; it SHALL be NTP-UTC-32 (3)",
                err_no=ERR_INVALID_TPPAR,
                offset=tr.offset,
            )
    for k in parts["KEMAC"]:
        assert isinstance(k, Kemac)
        if granted:
            raise reject(
                "rfc6043.ticket.kemac",
                c,
                "the KEMAC SHALL NOT be present in the granted Ticket Policy",
                err_no=ERR_INVALID_TPPAR,
                offset=k.offset,
            )
        if k.encr_alg != algs.ENC_NULL or k.mac_alg != algs.MAC_NULL:
            raise reject(
                "rfc6043.tp.kemac_algs",
                c,
                f"TP KEMAC uses Encr alg {k.encr_alg} / MAC alg {k.mac_alg}; both SHALL be NULL",
                err_no=ERR_INVALID_TPPAR,
                offset=k.offset,
            )
        for kd in decode_key_data(k.encr_data, k.offset + 4):
            if any(kd.key) or any(kd.salt or b""):
                raise reject(
                    "rfc6043.tp.kemac_keys",
                    c,
                    "TP KEMAC: the Key Data fields SHALL be set to '0' by the Initiator",
                    err_no=ERR_INVALID_TPPAR,
                    offset=kd.offset,
                )
    return parts


def _check_cs_map(d: Decoded, initial: Decoded | None) -> None:
    msg = d.msg
    h = msg.header
    dt = h.data_type
    sps = [p for p in msg.payloads if isinstance(p, SP)]
    nos = [p.policy_no for p in sps]
    if len(set(nos)) != len(nos):
        raise reject(
            "rfc6043.sp.policy_no",
            "RFC 3830 6.10",
            f"Policy no values {nos} are not distinct",
            err_no=ERR_INVALID_SP,
        )
    if h.map_type == MAP_EMPTY and sps and dt != DT_ERROR:
        raise reject(
            "rfc6043.sp.with_empty_map",
            "RFC 4563 5",
            "Empty map: there MUST NOT be any Security Policy payload",
            err_no=ERR_INVALID_SP,
            offset=sps[0].offset,
        )
    if dt in (DT_TRANSFER_INIT, DT_TRANSFER_RESP) and h.map_type == MAP_SRTP_ID:
        raise reject(
            "rfc6043.hdr.srtp_id", "RFC 6043 6.1", "the map type SRTP-ID SHALL NOT be used", offset=9
        )
    if h.map_type != MAP_GENERIC_ID:
        return
    known = {p.policy_no: p.prot_type for p in sps}
    if initial is not None:
        for p in initial.msg.payloads:
            if isinstance(p, SP):
                known.setdefault(p.policy_no, p.prot_type)
    for cs in h.cs_map:
        assert isinstance(cs, GenericCs)
        for no in cs.policies:
            if no not in known:
                raise reject(
                    "rfc6043.generic_id.policy_ref",
                    "RFC 6043 6.1.1",
                    f"CS {cs.cs_id} names policy {no} and no SP payload has that Policy no",
                    err_no=ERR_INVALID_SP,
                )
            if known[no] != cs.prot_type:
                raise reject(
                    "rfc6043.generic_id.policy_prot",
                    "RFC 6043 6.1.1",
                    f"CS {cs.cs_id}: policy {no} is for Prot type {known[no]}, the CS is {cs.prot_type}",
                    err_no=ERR_INVALID_SP,
                )
        if dt == DT_TRANSFER_RESP:
            if len(cs.policies) != 1:
                raise reject(
                    "rfc6043.generic_id.resp_p",
                    "RFC 6043 6.1.1 / 4.2.2.3",
                    f"CS {cs.cs_id}: #P = {len(cs.policies)}; in response messages #P SHALL be exactly 1",
                    err_no=ERR_INVALID_SP,
                )
            if cs.prot_type == PROT_SRTP and not cs.session_data:
                raise reject(
                    "rfc6043.generic_id.resp_session_data",
                    "RFC 6043 6.1.1 / 4.2.2.3",
                    f"CS {cs.cs_id}: SRTP Session Data MUST be provided in the response message",
                )
            if not cs.spi:
                raise reject(
                    "rfc6043.generic_id.resp_spi",
                    "RFC 6043 6.1.1 / 4.2.2.3",
                    f"CS {cs.cs_id}: the SPI MUST be provided in the response message",
                )


def decode(buf: bytes, *, initial: Decoded | bytes | None = None) -> Decoded:
    """Strictly decode one MIKEY-TICKET message or Error message.

    initial: for a response (or an Error answering a message), the message it answers; then the HDR fields
    the text says SHALL be identical are compared; GENERIC-ID policies may refer to the initial message's SP.
    """
    if isinstance(initial, bytes | bytearray):
        initial = decode(bytes(initial))
    msg = decode_structure(buf)
    errors: list[MikeyReject] = []
    d: Decoded | None = None
    for clause, slots in GRAMMARS[msg.header.data_type]:
        try:
            d = Decoded(msg, match_grammar(msg.payloads, slots, clause), clause)
            break
        except MikeyReject as e:
            errors.append(e)
    if d is None:
        raise errors[0]
    h = msg.header
    dt = h.data_type
    # ---- HDR rules
    if dt in (DT_REQUEST_INIT_PSK, DT_RESOLVE_INIT_PSK, DT_REQUEST_RESP, DT_RESOLVE_RESP):
        clause = {
            DT_REQUEST_INIT_PSK: "4.2.1.1",
            DT_RESOLVE_INIT_PSK: "4.2.3.1",
            DT_REQUEST_RESP: "4.2.1.5",
            DT_RESOLVE_RESP: "4.2.3.5",
        }[dt]
        if h.map_type != MAP_EMPTY or h.cs_map:
            raise reject(
                "rfc6043.hdr.cs",
                f"RFC 6043 {clause}",
                f"#CS MUST be 0 and the CS ID map type the Empty map (1); got #CS {len(h.cs_map)}, "
                f"map type {h.map_type}",
                offset=8,
            )
    if dt in (DT_REQUEST_RESP, DT_RESOLVE_RESP, DT_TRANSFER_RESP) and h.v_flag:
        clause = {DT_REQUEST_RESP: "4.2.1.5", DT_RESOLVE_RESP: "4.2.3.5", DT_TRANSFER_RESP: "4.2.2.3"}[dt]
        raise reject(
            "rfc6043.hdr.v_flag", f"RFC 6043 {clause}", "V flag SHALL be set to '0' in a response", offset=3
        )
    if dt == DT_ERROR and h.v_flag:
        raise reject(
            "rfc6043.hdr.v_flag", "RFC 6043 5.4", "V field SHALL be set to '0' in Error messages", offset=3
        )
    # ---- TP / TICKET
    for p in msg.payloads:
        if isinstance(p, TP):
            _policy_checks(p, "TP", granted=False)
        elif isinstance(p, Ticket):
            _policy_checks(p, "TICKET", granted=True)
            _check_initiator_data(p, dt)
    ticket = d.get("TICKET")
    # 4.2.2.1: "The value of the V flag SHALL agree with the F flag"; 6.1: V "MUST be set to '0' ... in all
    # messages except TRANSFER_INIT messages used for CSB updating". Both readings accepted: V = F or V = 0.
    if dt == DT_TRANSFER_INIT and isinstance(ticket, Ticket) and h.v_flag and not ticket.head.flags.F:
        raise reject(
            "rfc6043.hdr.v_flag",
            "RFC 6043 4.2.2.1 / 6.1",
            "V = 1 with F = 0 in the Ticket Policy: neither 4.2.2.1 (V = F) nor 6.1 (V = 0) allow it",
            offset=3,
        )
    # ---- KEMAC rules
    for k in d.parts.get("KEMAC", []):
        assert isinstance(k, Kemac)
        if k.mac_alg != algs.MAC_NULL:
            clause = {DT_REQUEST_RESP: "4.2.1.5", DT_RESOLVE_RESP: "4.2.3.5"}.get(dt, "5.2")
            raise reject(
                "rfc6043.kemac.mac_alg",
                f"RFC 6043 {clause}",
                f"KEMAC MAC alg {k.mac_alg}: it SHALL use the NULL authentication algorithm",
                offset=k.offset,
            )
    if (
        dt == DT_TRANSFER_INIT
        and isinstance(ticket, Ticket)
        and ticket.head.flags.L is False
        and d.get("KEMAC")
    ):
        raise reject(
            "rfc6043.transfer.kemac_l",
            "RFC 6043 4.2.2.1 / 6.10",
            "the Ticket Policy (L flag '0') does not allow the Initiator to supply keys; a KEMAC payload "
            "SHALL NOT be included",
        )
    # ---- CS map / SP
    _check_cs_map(d, initial)
    # ---- 12.1 no mixing of 256-bit and shorter-key algorithms
    items: list[tuple[str, int]] = [("prf", h.prf_func)]
    for p in msg.payloads:
        if isinstance(p, V):
            items.append(("mac", p.mac_alg))
        elif isinstance(p, Kemac):
            items += [("encr", p.encr_alg), ("mac", p.mac_alg)]
        elif isinstance(p, TP | Ticket):
            items.append(("prf", p.head.prf_func))
    algs.check_no_mixing(items, msg.name)
    # ---- response vs initial
    if initial is not None:
        _check_response_header(d, initial)
    return d


def _check_initiator_data(t: Ticket, dt: int) -> None:
    c = "RFC 6043 6.10"
    if dt == DT_REQUEST_RESP and t.initiator_data:
        raise reject(
            "rfc6043.ticket.initiator_data",
            c,
            "REQUEST_RESP: Initiator Data is inserted by the Initiator, the KMS cannot have filled it",
            offset=t.offset,
        )
    if dt in (DT_TRANSFER_INIT, DT_RESOLVE_INIT_PSK):
        if t.head.flags.I and not t.initiator_data:
            raise reject(
                "rfc6043.ticket.initiator_data",
                c,
                "I flag set: Initiator Data SHALL be inserted by the Initiator",
                err_no=ERR_INVALID_TICKET,
                offset=t.offset,
            )
        if not t.head.flags.I and t.initiator_data:
            raise reject(
                "rfc6043.ticket.initiator_data",
                c,
                "I flag not set: Initiator Data SHALL be inserted if and only if key forking is used",
                err_no=ERR_INVALID_TICKET,
                offset=t.offset,
            )
    if t.initiator_data:
        parts = match_grammar(
            t.initiator_payloads, INITIATOR_DATA_GRAMMAR, f"{c} (Initiator Data)", allow_genext=False
        )
        vi, vr = parts["Vi"][0], parts["Vr"][0]
        assert isinstance(vi, V) and isinstance(vr, V)
        if vi.mac_alg != vr.mac_alg:
            raise reject(
                "rfc6043.ticket.vr_alg",
                c,
                "Vr: the authentication algorithm SHALL be the same as used for the Vi payload",
            )


def _check_response_header(d: Decoded, initial: Decoded) -> None:
    h, ih = d.msg.header, initial.msg.header
    dt = h.data_type
    pairs = {
        DT_REQUEST_RESP: DT_REQUEST_INIT_PSK,
        DT_RESOLVE_RESP: DT_RESOLVE_INIT_PSK,
        DT_TRANSFER_RESP: DT_TRANSFER_INIT,
    }
    if dt in pairs and ih.data_type != pairs[dt]:
        raise reject("rfc6043.response.pair", "RFC 6043 4.2", f"{d.name} does not answer a {initial.name}")
    clause = {
        DT_REQUEST_RESP: "RFC 6043 4.2.1.5",
        DT_RESOLVE_RESP: "RFC 6043 4.2.3.5",
        DT_TRANSFER_RESP: "RFC 6043 4.2.2.3",
        DT_ERROR: "RFC 6043 5.4",
    }.get(dt, "RFC 6043 4.2")
    same = [
        ("version", h.version, ih.version),
        ("PRF func", h.prf_func, ih.prf_func),
        ("CSB ID", h.csb_id, ih.csb_id),
    ]
    if dt in (DT_REQUEST_RESP, DT_RESOLVE_RESP):
        same += [("#CS", len(h.cs_map), len(ih.cs_map)), ("CS ID map type", h.map_type, ih.map_type)]
    for name, a, b in same:
        if a != b:
            raise reject(
                "rfc6043.response.hdr",
                clause,
                f"HDR {name} {a:#x} differs from {b:#x} in the message it answers",
            )
    it_ticket = initial.get("TICKET")
    if dt == DT_TRANSFER_RESP and isinstance(it_ticket, Ticket):
        f = it_ticket.head.flags
        if not f.F:
            raise reject(
                "rfc6043.transfer.f_flag",
                "RFC 6043 6.10",
                "F flag '0': the TRANSFER_RESP message SHALL NOT be sent",
            )
        if (d.get("RANDRr") is not None) != f.G:
            raise reject(
                "rfc6043.transfer.g_flag",
                "RFC 6043 4.2.2.3 / 6.10",
                f"G flag {int(f.G)} but RANDRr {'absent' if f.G else 'present'}: the Responder SHALL "
                f"{'' if f.G else 'NOT '}generate RANDRr",
            )
        if not f.M and d.get("KEMAC") is not None:
            raise reject(
                "rfc6043.transfer.kemac_m",
                "RFC 6043 4.2.2.3 / 6.10",
                "M flag '0': a KEMAC payload SHALL NOT be included in TRANSFER_RESP",
            )
    t, it = d.get("T"), initial.get("T")
    if (
        dt != DT_ERROR
        and isinstance(t, T)
        and isinstance(it, T)
        and t.ts_type in (0, 1)
        and t.ts_type == it.ts_type
        and t.value == it.value
    ):
        raise reject(
            "rfc6043.response.t_not_fresh",
            clause,
            "an NTP timestamp equal to the initial message's: the response SHALL carry a fresh timestamp "
            "(unlike RFC 3830)",
        )


# ----------------------------------------------------------------------------------------- MAC (5.5, 5.4)

INITIAL_IDENTITIES = {  # Table 5.2: which two identities follow an initial message
    DT_REQUEST_INIT_PSK: (("IDRi", IDR_I), ("IDRkms", IDR_KMS)),
    DT_TRANSFER_INIT: (("IDRi", IDR_I), ("IDRr", IDR_R)),
    DT_RESOLVE_INIT_PSK: (("IDRr", IDR_R), ("IDRkms", IDR_KMS)),
}
RESPONSES = {DT_REQUEST_RESP, DT_TRANSFER_RESP, DT_RESOLVE_RESP}


def _mac_field(d: Decoded) -> tuple[V, int]:
    v = d.msg.payloads[-1]
    if not isinstance(v, V):
        raise reject("rfc6043.mac.no_v", "RFC 6043 5.5", f"{d.name} does not end with a V payload")
    return v, len(v.mac)


def signed_part(d: Decoded) -> bytes:
    """The message except the MAC field; for TRANSFER_INIT also without the Initiator Data length and
    Initiator Data fields of the TICKET payload (5.5)."""
    v, n = _mac_field(d)
    raw = d.msg.raw[: len(d.msg.raw) - n]
    t = d.get("TICKET")
    if d.msg.header.data_type == DT_TRANSFER_INIT and isinstance(t, Ticket):
        end = t.offset + 1 + len(t.body())
        start = end - 2 - len(t.initiator_data)
        raw = raw[:start] + raw[end:]
    return raw


def mac_input(
    d: Decoded, *, identities: tuple[bytes, bytes] | None = None, initial_raw: bytes | None = None
) -> bytes:
    """RFC 6043 5.5 Table 5.2 (and 5.4 for Error messages)."""
    dt = d.msg.header.data_type
    base = signed_part(d)
    if dt == DT_ERROR:
        return base
    if dt in RESPONSES:
        if initial_raw is None:
            raise ValueError(f"the MAC of {d.name} covers the initial message: pass initial_raw")
        return base + initial_raw
    if identities is None:
        raise ValueError(f"the MAC of {d.name} covers two identities: pass identities")
    return base + identities[0] + identities[1]


def identity_candidates(
    d: Decoded, fallback: dict[int, list[bytes]] | None = None
) -> list[tuple[bytes, bytes]]:
    """Every (Identity_a, Identity_b) pair the text allows for an initial message.

    An identity present in the message is its IDR ID Data (the only reading of "identities (not whole
    payloads)").
    An absent identity is known "by other means" (4.2.x): the caller's candidates for that role (e.g. the
    KMS's own identity, the user the PSK belongs to) and the empty string are tried.
    """
    fallback = fallback or {}
    pairs = INITIAL_IDENTITIES[d.msg.header.data_type]
    options: list[list[bytes]] = []
    for label, role in pairs:
        p = d.get(label)
        if isinstance(p, IDR):
            options.append([p.data])
        else:
            opts = [*fallback.get(role, []), b""]
            options.append(list(dict.fromkeys(opts)))
    return [(a, b) for a in options[0] for b in options[1]]


def verify_mac(
    d: Decoded,
    auth_key: bytes,
    *,
    initial_raw: bytes | None = None,
    fallback_ids: dict[int, list[bytes]] | None = None,
) -> str:
    """Check the V payload; return which reading verified (for the report). Raise Auth failure otherwise."""
    v, _ = _mac_field(d)
    if v.mac_alg == algs.MAC_NULL:
        raise reject(
            "rfc6043.mac.null",
            "RFC 6043 4.2 / RFC 3830 4.2.4",
            f"{d.name}: V with the NULL MAC cannot authenticate the message",
            err_no=ERR_AUTH_FAILURE,
        )
    if len(auth_key) * 8 != algs.auth_key_bits(v.mac_alg):
        raise ValueError("auth_key length does not match the MAC alg")
    dt = d.msg.header.data_type
    if dt in INITIAL_IDENTITIES:
        for ids in identity_candidates(d, fallback_ids):
            tag = algs.compute_mac(v.mac_alg, auth_key, mac_input(d, identities=ids))
            if _hmac.compare_digest(tag, v.mac):
                return f"identities of {len(ids[0])} and {len(ids[1])} bytes"
        raise reject(
            "rfc6043.mac.bad", "RFC 6043 5.5", f"{d.name}: MAC does not verify", err_no=ERR_AUTH_FAILURE
        )
    tag = algs.compute_mac(v.mac_alg, auth_key, mac_input(d, initial_raw=initial_raw))
    if not _hmac.compare_digest(tag, v.mac):
        raise reject(
            "rfc6043.mac.bad",
            "RFC 6043 5.5" if dt != DT_ERROR else "RFC 6043 5.4",
            f"{d.name}: MAC does not verify",
            err_no=ERR_AUTH_FAILURE,
        )
    return "response over the initial message" if dt in RESPONSES else "Error message alone"
