"""The card facade: identities, AKA and GBA_U over one :class:`ApduTransport`.

Application selection follows the card tools (field notes 5.2): read EF_DIR, prefer the
ISIM (AID prefix A0000000871004), fall back to the USIM (A0000000871002) and then derive
the IMS identities from the IMSI. The ISIM goes on

- the basic channel (``transport.mode == "basic"``),
- a logical channel opened with MANAGE CHANNEL (``transport.use_logical_channel``), or
- the transport's own bound channel (``transport.mode == "bound"``, AT+CCHO), where
  the application is already selected and must not be selected again.

Round trips are kept to the minimum: EF_DIR is read once, identities are cached until
:meth:`Card.refresh`, the application is selected once, EFs are read with the size from
their FCP. Every status word that is not an outcome becomes a ``CardError`` (see
:mod:`ue_agent.card.sw`).
"""

from __future__ import annotations

from datetime import UTC, datetime

from ue_agent.card import auth, ef
from ue_agent.card.apdu import Apdu, ApduLink, Response, cla_for_channel
from ue_agent.card.results import (
    AkaMacFailure,
    AkaOutcome,
    AkaSyncFailure,
    CardIdentities,
    GbaBootstrapRes,
)
from ue_agent.card.sw import sw_error
from ue_agent.card.transport import ApduTransport
from ue_agent.errors import CardError
from ue_agent.secret import Secret

INS_SELECT, INS_READ_BINARY, INS_READ_RECORD, INS_UPDATE_BINARY = 0xA4, 0xB0, 0xB2, 0xD6
INS_MANAGE_CHANNEL, INS_AUTHENTICATE = 0x70, 0x88
P2_FCP, P2_NO_DATA = 0x04, 0x0C
SW_MAC_FAILURE = 0x9862


class Card:
    """One UICC. Blocking; the daemon calls it from its card worker thread only."""

    def __init__(self, transport: ApduTransport) -> None:
        self.transport = transport
        self._link = ApduLink(transport)
        self._app_transport: ApduTransport | None = None  # bound mode
        self._app_link: ApduLink | None = None
        self._app_channel = 0
        self._aids: list[bytes] | None = None
        self._aid: bytes | None = None
        self._application: str | None = None  # "isim" or "usim"
        self._identities: CardIdentities | None = None
        self._retired_count = 0  # APDUs carried by bound links already released
        self._closed = False

    def __repr__(self) -> str:
        return f"<Card {self.transport.name} app={self._application}>"

    @property
    def apdu_count(self) -> int:
        """APDUs sent to the card by this facade (GET RESPONSE and 6Cxx resends included)."""
        own = self._app_link if self._app_link is not self._link else None
        return self._link.count + (own.count if own is not None else 0) + self._retired_count

    # --- public operations -------------------------------------------------------------
    def identities(self) -> CardIdentities:
        if self._identities is None:
            self._identities = self._read_identities()
        return self._identities

    def refresh(self) -> None:
        """Forget the cached identities and selection (after a card reset or REFRESH)."""
        self._release_application()
        self._aids = None
        self._aid = None
        self._application = None
        self._identities = None

    def authenticate(self, rand: bytes, autn: bytes) -> AkaOutcome:
        """IMS AKA on the ISIM, or the 3G context on the USIM when there is no ISIM."""
        data = auth.aka_command_data(rand, autn)
        resp = self._app_send(INS_AUTHENTICATE, 0x00, auth.P2_3G, data, le=256)
        if resp.sw == SW_MAC_FAILURE:
            return AkaMacFailure()
        self._expect_ok(resp, "AUTHENTICATE (AKA)")
        return auth.parse_aka_response(resp.data)

    def gba_bootstrap(self, rand: bytes, autn: bytes) -> GbaBootstrapRes | AkaMacFailure | AkaSyncFailure:
        """GBA_U bootstrapping: the card keeps Ks = CK || IK and answers RES only."""
        data = auth.gba_bootstrap_data(rand, autn)
        self._require_gba_u()
        resp = self._app_send(INS_AUTHENTICATE, 0x00, auth.P2_GBA, data, le=256)
        if resp.sw == SW_MAC_FAILURE:
            return AkaMacFailure()
        self._expect_ok(resp, "AUTHENTICATE (GBA bootstrapping)")
        return auth.parse_gba_bootstrap_response(resp.data)

    def gba_naf_derive(self, naf_id: bytes, impi: str) -> Secret:
        """Ks_ext_NAF for ``naf_id`` (FQDN || Ua protocol id); the card keeps Ks_int_NAF."""
        data = auth.gba_naf_data(naf_id, impi)
        self._require_gba_u()
        resp = self._app_send(INS_AUTHENTICATE, 0x00, auth.P2_GBA, data, le=256)
        self._expect_ok(resp, "AUTHENTICATE (GBA NAF derivation)", {0x6985: "card.gba_not_bootstrapped"})
        return auth.parse_gba_naf_response(resp.data)

    def store_gba_bootstrap(self, rand: bytes, btid: str, lifetime: str | datetime) -> None:
        """Write RAND, B-TID and the key lifetime to EF_GBABP after a GBA_U bootstrap."""
        if isinstance(lifetime, datetime):
            lifetime = lifetime.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if len(rand) != 16 or not btid:
            raise CardError("card.invalid_argument", "RAND must be 16 bytes and B-TID non-empty")
        self._require_gba_u()
        try:
            body = ef.encode_gbabp(bytes(rand), btid, lifetime)
        except ValueError as exc:
            raise CardError("card.invalid_argument", str(exc)) from None
        fcp = self._select_app_ef(ef.FID_ISIM_GBABP, "EF_GBABP")
        size = fcp.size or 0
        if len(body) > size:
            raise CardError(
                "card.data_too_long", f"EF_GBABP holds {size} bytes, bootstrap data needs {len(body)}"
            )
        body += b"\xff" * (size - len(body))
        for off in range(0, size, 255):
            chunk = body[off : off + 255]
            resp = self._app_send(INS_UPDATE_BINARY, off >> 8, off & 0xFF, chunk)
            self._expect_ok(resp, "UPDATE BINARY EF_GBABP")

    def close(self) -> None:
        """Close the ISIM's channel (if this facade opened one) and the transport. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self._release_application()
        finally:
            self.transport.close()

    # --- application selection ---------------------------------------------------------
    def _discover(self) -> None:
        """EF_DIR once: pick the ISIM, else the USIM."""
        if self._aid is not None:
            return
        if self._aids is None:
            self._aids = self._read_ef_dir()
        isim = ef.find_aid(self._aids, ef.ISIM_AID_PREFIX)
        usim = ef.find_aid(self._aids, ef.USIM_AID_PREFIX)
        if isim is not None:
            self._aid, self._application = isim, "isim"
        elif usim is not None:
            self._aid, self._application = usim, "usim"
        else:
            raise CardError(
                "card.no_application",
                "EF_DIR lists neither an ISIM nor a USIM",
                aids=[a.hex() for a in self._aids],
            )

    def _read_ef_dir(self) -> list[bytes]:
        fcp = self._select_mf_ef(ef.FID_EF_DIR, "EF_DIR")
        return [
            aid
            for rec in self._read_records(self._link, 0x00, fcp, "EF_DIR")
            if (aid := ef.decode_dir_record(rec)) is not None
        ]

    def _open_application(self) -> tuple[ApduLink, int]:
        """The link and channel the chosen application answers on; selects it once."""
        self._discover()
        assert self._aid is not None
        if self._app_link is not None:
            return self._app_link, self._app_channel
        if self.transport.mode == "bound":
            try:
                bound = self.transport.bind_application(self._aid)
            except NotImplementedError:
                raise CardError("card.transport", "bound transport cannot bind an application") from None
            self._app_transport, self._app_link, self._app_channel = bound, ApduLink(bound), 0
            return self._app_link, 0
        channel = 0
        if self.transport.use_logical_channel:
            resp = self._link.send(Apdu(0x00, INS_MANAGE_CHANNEL, 0x00, 0x00, le=1))
            self._expect_ok(resp, "MANAGE CHANNEL open")
            if len(resp.data) != 1 or not 1 <= resp.data[0] <= 19:
                raise ef.malformed("MANAGE CHANNEL answer")
            channel = resp.data[0]
        # from here on, this channel is ours; close it again if the SELECT fails
        self._app_link, self._app_channel = self._link, channel
        try:
            resp = self._link.send(
                Apdu(cla_for_channel(0x00, channel), INS_SELECT, 0x04, P2_NO_DATA, self._aid)
            )
            self._expect_ok(resp, f"SELECT {self._application} by AID")
        except Exception:
            self._release_application()
            raise
        return self._link, channel

    def _release_application(self) -> None:
        link, channel, bound = self._app_link, self._app_channel, self._app_transport
        self._app_link, self._app_channel, self._app_transport = None, 0, None
        if bound is not None:
            self._retired_count += link.count if link is not None else 0
            bound.close()
        elif channel:
            try:
                self._link.send(Apdu(0x00, INS_MANAGE_CHANNEL, 0x80, channel))
            except CardError:
                pass  # the card was reset or removed: the channel is gone anyway

    def _require_gba_u(self) -> None:
        ids = self.identities()
        if not ids.gba_u:
            raise CardError(
                "card.context_not_supported",
                f"the {ids.application.upper()} does not offer GBA_U (ISIM service 2)",
            )

    # --- commands ----------------------------------------------------------------------
    @staticmethod
    def _expect_ok(resp: Response, doing: str, overrides: dict[int, str] | None = None) -> None:
        if not resp.ok:
            raise sw_error(resp.sw, doing, overrides)

    def _app_send(self, ins: int, p1: int, p2: int, data: bytes = b"", le: int | None = None) -> Response:
        link, channel = self._open_application()
        return link.send(Apdu(cla_for_channel(0x00, channel), ins, p1, p2, data, le))

    def _select_mf_ef(self, fid: int, name: str) -> ef.Fcp:
        """SELECT by path from the MF on the basic channel, with FCP."""
        resp = self._link.send(Apdu(0x00, INS_SELECT, 0x08, P2_FCP, fid.to_bytes(2, "big"), le=256))
        self._expect_ok(resp, f"SELECT {name}")
        return ef.decode_fcp(resp.data)

    def _select_app_ef(self, fid: int, name: str) -> ef.Fcp:
        """SELECT by path 7FFF/FID (the current application) with FCP."""
        resp = self._app_send(INS_SELECT, 0x08, P2_FCP, b"\x7f\xff" + fid.to_bytes(2, "big"), le=256)
        self._expect_ok(resp, f"SELECT {name}")
        return ef.decode_fcp(resp.data)

    def _read_binary(self, link: ApduLink, cla: int, fcp: ef.Fcp, name: str) -> bytes:
        if fcp.linear:
            raise ef.malformed(f"{name} FCP", reason="expected a transparent EF")
        if fcp.size is None:  # no size in the FCP: let the card say how much (6Cxx)
            resp = link.send(Apdu(cla, INS_READ_BINARY, 0, 0, le=256))
            self._expect_ok(resp, f"READ BINARY {name}")
            return resp.data
        out = bytearray()
        for off in range(0, fcp.size, 256):
            n = min(256, fcp.size - off)
            resp = link.send(Apdu(cla, INS_READ_BINARY, off >> 8, off & 0xFF, le=n))
            self._expect_ok(resp, f"READ BINARY {name}")
            if len(resp.data) != n:
                raise ef.malformed(name, reason=f"asked {n} bytes, got {len(resp.data)}")
            out += resp.data
        return bytes(out)

    def _read_records(self, link: ApduLink, cla: int, fcp: ef.Fcp, name: str) -> list[bytes]:
        if not fcp.linear or not fcp.record_len or not 1 <= fcp.record_len <= 255:
            raise ef.malformed(f"{name} FCP", reason="expected a linear fixed EF")
        out = []
        for number in range(1, (fcp.record_count or 0) + 1):
            resp = link.send(Apdu(cla, INS_READ_RECORD, number, 0x04, le=fcp.record_len))
            self._expect_ok(resp, f"READ RECORD {number} of {name}")
            if len(resp.data) != fcp.record_len:
                raise ef.malformed(name, reason=f"record {number} has {len(resp.data)} bytes")
            out.append(resp.data)
        return out

    def _read_app_ef(self, fid: int, name: str) -> bytes:
        fcp = self._select_app_ef(fid, name)
        link, channel = self._open_application()
        return self._read_binary(link, cla_for_channel(0x00, channel), fcp, name)

    def _read_app_records(self, fid: int, name: str) -> list[bytes]:
        fcp = self._select_app_ef(fid, name)
        link, channel = self._open_application()
        return self._read_records(link, cla_for_channel(0x00, channel), fcp, name)

    # --- identities --------------------------------------------------------------------
    def _read_iccid(self) -> str:
        """EF_ICCID is 10 bytes by definition (TS 102 221 13.2): no FCP needed."""
        resp = self._link.send(Apdu(0x00, INS_SELECT, 0x08, P2_NO_DATA, ef.FID_EF_ICCID.to_bytes(2, "big")))
        self._expect_ok(resp, "SELECT EF_ICCID")
        return ef.decode_iccid(self._read_binary(self._link, 0x00, ef.Fcp(10, None, None), "EF_ICCID"))

    def _read_identities(self) -> CardIdentities:
        self._discover()  # EF_DIR and the MF-level reads come before the application select
        iccid = self._read_iccid()
        self._open_application()
        assert self._aid is not None
        if self._application == "usim":
            imsi = ef.decode_imsi(self._read_app_ef(ef.FID_USIM_IMSI, "EF_IMSI"))
            mnc_length = ef.decode_mnc_length(self._read_app_ef(ef.FID_USIM_AD, "EF_AD"))
            derived = ef.identities_from_imsi(imsi, mnc_length)
            return CardIdentities(
                application="usim",
                impi=derived.impi,
                impus=derived.impus,
                domain=derived.domain,
                imsi=imsi,
                iccid=iccid,
                aid=self._aid.hex(),
            )
        impi = ef.decode_tlv80_string(self._read_app_ef(ef.FID_ISIM_IMPI, "EF_IMPI"), "EF_IMPI")
        domain = ef.decode_tlv80_string(self._read_app_ef(ef.FID_ISIM_DOMAIN, "EF_DOMAIN"), "EF_DOMAIN")
        impus = [
            u
            for rec in self._read_app_records(ef.FID_ISIM_IMPU, "EF_IMPU")
            if (u := ef.decode_tlv80_string(rec, "EF_IMPU record")) is not None
        ]
        if not impi or not domain or not impus:
            raise ef.malformed("ISIM identities", reason="IMPI, domain or IMPU missing")
        services = ef.decode_service_table(self._read_app_ef(ef.FID_ISIM_IST, "EF_IST"))
        pcscf: list[str] = []
        if ef.ISIM_SERVICE_PCSCF in services:
            pcscf = [
                a
                for rec in self._read_app_records(ef.FID_ISIM_PCSCF, "EF_P-CSCF")
                if (a := ef.decode_pcscf(rec)) is not None
            ]
        return CardIdentities(
            application="isim",
            impi=impi,
            impus=impus,
            domain=domain,
            iccid=iccid,
            pcscf=pcscf,
            isim_services=services,
            gba_u=ef.ISIM_SERVICE_GBA in services,
            aid=self._aid.hex(),
        )
