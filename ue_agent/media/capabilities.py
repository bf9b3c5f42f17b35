"""The device's media-security capabilities, as data.

Feeds the socket op ``capabilities`` (:meth:`MediaCapabilities.to_wire`) and the REGISTER
indications (:meth:`MediaCapabilities.security_client_value`). Built from what this
build can do and what the configuration enables (a KMS URL, e2ae on or off).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ue_agent.errors import MediaError
from ue_agent.media.e2ae import MEDIA_MECHANISMS, security_client_value
from ue_agent.media.keys import SRTP_SUITES
from ue_agent.media.sdes import DEFAULT_SUITES

TLS_PSK_MEDIA = ("msrp", "bfcp")


@dataclass(frozen=True)
class MediaCapabilities:
    sdes_suites: tuple[str, ...] = DEFAULT_SUITES
    kms: bool = False  # e2e with KMS (MIKEY-TICKET) available: a KMS URL is configured
    tls_psk: tuple[str, ...] = TLS_PSK_MEDIA  # TLS crypto sessions we can key (RFC 4279)
    e2ae: bool = True  # offer e2ae (SDES towards the P-CSCF) in REGISTER and SDP
    #: TLS media the agent can key e2ae (TLS to the IMS-AGW with certificate fingerprints,
    #: TS 33.328 4.1.2.3): none in this build. The TLS-PSK keys above come from MIKEY-TICKET
    #: (e2e) only, so msrp-tls/bfcp-tls are not advertised with mediasec (issue 11)
    e2ae_tls: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for s in self.sdes_suites:
            if s not in SRTP_SUITES:
                raise MediaError("media.unsupported_suite", f"suite {s!r} is not supported", suite=s)
        for m in self.tls_psk:
            if m not in TLS_PSK_MEDIA:
                raise MediaError("media.bad_request", f"TLS-PSK media is msrp or bfcp, not {m!r}")
        for m in self.e2ae_tls:
            if m not in TLS_PSK_MEDIA:
                raise MediaError("media.bad_request", f"e2ae TLS media is msrp or bfcp, not {m!r}")

    @property
    def e2ae_mechanisms(self) -> tuple[str, ...]:
        """Media-security mechanism names for ``Security-Client`` (TS 24.229 §7.2A.7)."""
        if not self.e2ae:
            return ()
        mechs = ["sdes-srtp"] if self.sdes_suites else []
        mechs += [f"{m}-tls" for m in self.e2ae_tls]
        return tuple(m for m in mechs if m in MEDIA_MECHANISMS)

    def security_client_value(self) -> str | None:
        """``sdes-srtp;mediasec, msrp-tls;mediasec, ...`` or None when e2ae is off."""
        mechs = self.e2ae_mechanisms
        return security_client_value(mechs) if mechs else None

    def to_wire(self) -> dict[str, Any]:
        return {
            "sdes": {"suites": list(self.sdes_suites)},
            "kms": {"available": self.kms, "key_management": "mikey-ticket" if self.kms else None},
            "tls_psk": {"media": list(self.tls_psk)},
            "e2ae": {
                "enabled": self.e2ae,
                "mechanisms": list(self.e2ae_mechanisms),
                "security_client": self.security_client_value(),
            },
        }


def device_capabilities(
    *, kms_url: str | None = None, e2ae: bool = True, suites: Sequence[str] | None = None
) -> MediaCapabilities:
    """Capabilities from configuration: KMS support needs a configured KMS URL."""
    return MediaCapabilities(
        sdes_suites=tuple(suites) if suites else DEFAULT_SUITES,
        kms=bool(kms_url),
        e2ae=e2ae,
    )
