"""The agent's TOML config (examples/config-*.toml, docs/deployment.md), parsed into dataclasses.

Every key is checked: an unknown key is ``config.unknown_key`` and a wrong type or value
is ``config.invalid``, both naming the dotted key path (``api.max_clients``), so an image
builder sees at once which line to fix. Nothing falls back silently.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, get_args
from urllib.parse import urlsplit

from ue_agent.convert import INTERNAL, Check, ConvertError, Len, Range, convert
from ue_agent.errors import ConfigError

DEFAULT_SOCKET = "/run/ue-agent/api.sock"
#: The protocol's line limit (docs/api.md); [api] max_line may lower it, never raise it.
PROTOCOL_MAX_LINE = 65536
Transport = Literal["pcsc", "at", "lab"]
LogLevel = Literal["debug", "info", "warning", "error"]
TRANSPORTS: tuple[str, ...] = get_args(Transport)
LOG_LEVELS: tuple[str, ...] = get_args(LogLevel)


def _is_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


Text = Annotated[str, Len(1)]
Url = Annotated[str, Len(1), Check(_is_url, "must be an http:// or https:// URL with a host")]
Id = Annotated[int, Range(0, 2**32 - 2)]  # a uid or gid; 2^32-1 is (uid_t)-1, "no id"
SocketPath = Annotated[
    str,
    Check(lambda p: p.startswith("/"), "must be an absolute path"),
    Check(lambda p: len(p.encode()) <= 107, "is longer than a Unix socket path may be (107 bytes)"),
]

Seconds = Annotated[float, Check(lambda s: 0 < s <= 3600, "must be > 0 and at most 3600 seconds")]


@dataclass
class CardConfig:
    """[card]: which card path to open; attribute names are transports.open_transport's contract."""

    transport: Transport = "lab"
    reader: Text | None = None  # pcsc: reader name (substring); None = the first reader with a card
    port: Text | None = None  # at: the modem's AT port for card access
    profile: Text | None = None  # hardware profile name (hw_profiles/)
    subscriber: Text | None = None  # lab: the subscriber file the in-process soft UICC uses
    pin_credential: Text | None = None  # credential holding PIN1: a name in $CREDENTIALS_DIRECTORY, or a path
    pin_allow_last_try: bool = False  # VERIFY even when one try is left (or the count is unknown)
    #: an operation that waits on the card only (ims.authenticate) fails with card.timeout
    #: after this many seconds
    deadline_s: Seconds = 15.0


@dataclass
class NetworkConfig:
    """[network]: where the BSF and the KMS are; the FQDNs default to the URL hosts."""

    bsf_url: Url | None = None
    kms_url: Url | None = None
    bsf_fqdn: Text | None = None
    kms_fqdn: Text | None = None
    #: PEM file of the CAs that sign the BSF's and KMS's https certificates; None: the system CAs
    ca_file: Annotated[str, Check(lambda p: p.startswith("/"), "must be an absolute path")] | None = None
    #: one HTTP exchange with the BSF or the KMS must be answered within this many seconds
    timeout_s: Seconds = 10.0
    #: an operation that waits on the network (mikey.*: bootstrap, KMS) fails with
    #: gba.bsf_unreachable / kms.unreachable after this many seconds, wherever it waits
    deadline_s: Seconds = 30.0
    #: when GBA bootstraps (TS 33.220 4.5.2: the UE runs bootstrapping when it has no valid
    #: Ks for a NAF it needs; nothing keeps it from doing so earlier). "on-demand": with the
    #: first call that needs the KMS. "at-start": also once after start-up (after the warm-up),
    #: Ks_(ext_)NAF for the KMS included, so the first call's card and BSF round trips are done
    #: before it, and again before each bootstrap's lifetime ends and after a reload of
    #: [network]; a failure there is logged and the next call bootstraps as on demand.
    bootstrap: Literal["on-demand", "at-start"] = "on-demand"

    @property
    def bsf_host(self) -> str | None:
        return self.bsf_fqdn or (urlsplit(self.bsf_url).hostname if self.bsf_url else None)

    @property
    def kms_host(self) -> str | None:
        return self.kms_fqdn or (urlsplit(self.kms_url).hostname if self.kms_url else None)


@dataclass
class ApiConfig:
    """[api]: the Unix socket and its limits."""

    socket: SocketPath = DEFAULT_SOCKET
    allowed_uids: list[Id] = field(default_factory=list)
    allowed_gids: list[Id] = field(default_factory=list)
    max_clients: Annotated[int, Range(1, 1024)] = 16
    max_inflight: Annotated[int, Range(1, 64)] = 4
    idle_timeout_s: Annotated[
        float, Check(lambda s: 0 < s <= 86400, "must be > 0 and at most 86400 seconds")
    ] = 300.0
    max_line: Annotated[int, Range(1024, PROTOCOL_MAX_LINE)] = PROTOCOL_MAX_LINE
    #: one uid's connections at most (root is not capped, and has places beyond max_clients)
    max_clients_per_uid: Annotated[int, Range(1, 1024)] = 8
    #: an unfinished line must end within this many seconds of its first byte
    line_timeout_s: Seconds = 10.0
    #: a peer must read its replies within this many seconds once they pile up
    write_timeout_s: Seconds = 10.0


@dataclass
class ModemConfig:
    """[modem]: the AT port whose URCs (+CIREPH) drive the handover state; None = no modem."""

    port: Text | None = None


@dataclass
class NetlinkConfig:
    """[netlink]: IP-mobility watch. The section's presence enables it; no interfaces = all."""

    interfaces: list[Text] = field(default_factory=list)
    enabled: Annotated[bool, INTERNAL] = False  # set from the section's presence, not a key


#: [limits] defaults per device: (max_sessions, max_pending_offers); docs/deployment.md
LIMIT_PRESETS: dict[str, tuple[int, int]] = {"handset": (64, 32), "gateway": (4096, 1024)}


@dataclass
class LimitsConfig:
    """[limits]: how many media sessions the agent keeps. ``preset`` gives the defaults
    (``handset``: 64 sessions, 32 offers waiting; ``gateway``: 4096 and 1024); a key set
    here overrides it. Checked when an offer is made, so no SDP goes out for a session
    that could not be answered."""

    preset: Literal["handset", "gateway"] = "handset"
    #: live sessions plus offers waiting for their answer
    max_sessions: Annotated[int, Range(1, 1_000_000)] | None = None
    max_pending_offers: Annotated[int, Range(1, 1_000_000)] | None = None
    #: an offer that waits longer than this for its answer is dropped (keys zeroized); an
    #: offer also dies with the connection that made it
    offer_ttl_s: Seconds = 300.0

    def effective(self) -> tuple[int, int]:
        """(max_sessions, max_pending_offers) after the preset."""
        sessions, pending = LIMIT_PRESETS[self.preset]
        sessions = self.max_sessions if self.max_sessions is not None else sessions
        pending = self.max_pending_offers if self.max_pending_offers is not None else pending
        return sessions, min(pending, sessions)


Level = Literal["e2e", "e2ae", "none"]
Action = Literal["warn", "refuse"]


@dataclass
class MinimumConfig:
    """[policy.minimum]: the least protection per media type (docs/policy.md)."""

    audio: Level = "e2ae"
    video: Level = "e2ae"
    message: Level = "e2ae"  # MSRP
    bfcp: Level = "e2ae"
    other: Level = "e2ae"


@dataclass
class PolicyConfig:
    """[policy]: what protection the user accepts, and what happens below it (docs/policy.md).
    Reloadable: SIGHUP applies it to the sessions negotiated from then on."""

    minimum: MinimumConfig = field(default_factory=MinimumConfig)
    below_minimum: Action = "warn"
    early_media_plaintext: Literal["allow", "warn", "refuse"] = "warn"
    #: who may answer a call we placed: anyone the KMS let in, one of the recipients, the party called
    responder: Literal["any", "recipients", "called"] = "recipients"
    responder_mismatch: Action = "warn"


@dataclass
class LogConfig:
    level: LogLevel = "info"


@dataclass
class Config:
    card: CardConfig = field(default_factory=CardConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    modem: ModemConfig = field(default_factory=ModemConfig)
    netlink: NetlinkConfig = field(default_factory=NetlinkConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    log: LogConfig = field(default_factory=LogConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    source: Annotated[str, INTERNAL] = "<config>"


def _validate(cfg: Config, where: str) -> None:
    """The rules that span keys (the per-key ones are the field types above)."""
    card = cfg.card
    if card.transport == "lab" and not card.subscriber:
        raise ConfigError(
            "config.missing_key",
            f"{where}: 'card.subscriber' is required with transport = \"lab\"",
            key="card.subscriber",
        )
    if card.transport == "at" and not card.port:
        raise ConfigError(
            "config.missing_key", f"{where}: 'card.port' is required with transport = \"at\"", key="card.port"
        )


def config_error(exc: ConvertError, where: str) -> ConfigError:
    """A converter error as ``config.*``: ``key`` is the TOML key, the message adds any list index."""
    path = exc.path
    key = path.split("[", 1)[0]
    if exc.kind == "invalid":
        message = f"{where}: '{key}'{path[len(key) :]} {exc.why}" if path else f"{where}: {exc.why}"
    else:
        message = f"{where}: {exc.message}"
    return ConfigError(f"config.{exc.kind}", message, key=key)


def parse_config(data: dict[str, Any], where: str = "<config>", base: Path | None = None) -> Config:
    """A parsed TOML document -> :class:`Config`. ``base`` resolves a relative card.subscriber."""
    try:
        cfg = convert(Config, data)
    except ConvertError as exc:
        raise config_error(exc, where) from None
    cfg.source = where
    cfg.netlink.enabled = "netlink" in data
    if cfg.card.subscriber and base is not None and not Path(cfg.card.subscriber).is_absolute():
        cfg.card.subscriber = str(base / cfg.card.subscriber)
    _validate(cfg, where)
    return cfg


def load_config(path: str | Path) -> Config:
    """Read and check the config file; every problem is a ConfigError naming the key or the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("config.unreadable", f"{path}: {exc.strerror}", path=str(path)) from None
    except UnicodeDecodeError:
        raise ConfigError("config.syntax", f"{path}: not UTF-8", path=str(path)) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("config.syntax", f"{path}: {exc}", path=str(path)) from None
    return parse_config(data, str(path), base=path.parent)
