"""The agent's TOML config (design.md contract), parsed into dataclasses.

Every key is checked: an unknown key is ``config.unknown_key`` and a wrong type or value
is ``config.invalid``, both naming the dotted key path (``api.max_clients``), so an image
builder sees at once which line to fix. Nothing falls back silently.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ue_agent.errors import ConfigError

DEFAULT_SOCKET = "/run/ue-agent/api.sock"
#: The protocol's line limit (docs/api.md); [api] max_line may lower it, never raise it.
PROTOCOL_MAX_LINE = 65536
TRANSPORTS = ("pcsc", "at", "lab")
LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass
class CardConfig:
    """[card]: which card path to open; attribute names are transports.open_transport's contract."""

    transport: str = "lab"
    reader: str | None = None  # pcsc: reader name (substring); None = the first reader with a card
    port: str | None = None  # at: the modem's AT port for card access
    profile: str | None = None  # hardware profile name (hw_profiles/)
    subscriber: str | None = None  # lab: the subscriber file the in-process soft UICC uses
    pin_credential: str | None = None  # credential (file) holding PIN1: a name in $CREDENTIALS_DIRECTORY
    pin_allow_last_try: bool = False  # VERIFY even when one try is left (or the count is unknown)


@dataclass
class NetworkConfig:
    """[network]: where the BSF and the KMS are; the FQDNs default to the URL hosts."""

    bsf_url: str | None = None
    kms_url: str | None = None
    bsf_fqdn: str | None = None
    kms_fqdn: str | None = None

    @property
    def bsf_host(self) -> str | None:
        return self.bsf_fqdn or (urlsplit(self.bsf_url).hostname if self.bsf_url else None)

    @property
    def kms_host(self) -> str | None:
        return self.kms_fqdn or (urlsplit(self.kms_url).hostname if self.kms_url else None)


@dataclass
class ApiConfig:
    """[api]: the Unix socket and its limits."""

    socket: str = DEFAULT_SOCKET
    allowed_uids: list[int] = field(default_factory=list)
    allowed_gids: list[int] = field(default_factory=list)
    max_clients: int = 16
    max_inflight: int = 4
    idle_timeout_s: float = 300.0
    max_line: int = PROTOCOL_MAX_LINE


@dataclass
class ModemConfig:
    """[modem]: the AT port whose URCs (+CIREPH) drive the handover state; None = no modem."""

    port: str | None = None


@dataclass
class NetlinkConfig:
    """[netlink]: IP-mobility watch. The section's presence enables it; no interfaces = all."""

    interfaces: list[str] = field(default_factory=list)
    enabled: bool = False


@dataclass
class LogConfig:
    level: str = "info"


@dataclass
class Config:
    card: CardConfig = field(default_factory=CardConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    modem: ModemConfig = field(default_factory=ModemConfig)
    netlink: NetlinkConfig = field(default_factory=NetlinkConfig)
    log: LogConfig = field(default_factory=LogConfig)
    source: str = "<config>"


_SECTIONS: dict[str, type] = {
    "card": CardConfig,
    "network": NetworkConfig,
    "api": ApiConfig,
    "modem": ModemConfig,
    "netlink": NetlinkConfig,
    "log": LogConfig,
}

# key path -> expected kind; "str?" may be absent (None), lists say their item type.
_KINDS: dict[str, str] = {
    "card.transport": "str",
    "card.reader": "str",
    "card.port": "str",
    "card.profile": "str",
    "card.subscriber": "str",
    "card.pin_credential": "str",
    "card.pin_allow_last_try": "bool",
    "network.bsf_url": "str",
    "network.kms_url": "str",
    "network.bsf_fqdn": "str",
    "network.kms_fqdn": "str",
    "api.socket": "str",
    "api.allowed_uids": "list[int]",
    "api.allowed_gids": "list[int]",
    "api.max_clients": "int",
    "api.max_inflight": "int",
    "api.idle_timeout_s": "number",
    "api.max_line": "int",
    "modem.port": "str",
    "netlink.interfaces": "list[str]",
    "log.level": "str",
}


def _invalid(key: str, where: str, why: str) -> ConfigError:
    return ConfigError("config.invalid", f"{where}: '{key}' {why}", key=key)


def _check_kind(key: str, value: Any, where: str) -> Any:
    kind = _KINDS[key]
    if kind == "str":
        if not isinstance(value, str) or not value:
            raise _invalid(key, where, "must be a non-empty string")
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise _invalid(key, where, "must be true or false")
        return value
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise _invalid(key, where, "must be an integer")
        return value
    if kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _invalid(key, where, "must be a number")
        return float(value)
    item = int if kind == "list[int]" else str
    if not isinstance(value, list) or not all(isinstance(v, item) and not isinstance(v, bool) for v in value):
        raise _invalid(key, where, f"must be a list of {item.__name__}s")
    return list(value)


def _check_url(key: str, url: str, where: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _invalid(key, where, "must be an http:// or https:// URL with a host")


def _validate(cfg: Config, where: str) -> None:
    card, api = cfg.card, cfg.api
    if card.transport not in TRANSPORTS:
        raise _invalid("card.transport", where, f"must be one of {', '.join(TRANSPORTS)}")
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
    for key in ("bsf_url", "kms_url"):
        url = getattr(cfg.network, key)
        if url is not None:
            _check_url(f"network.{key}", url, where)
    if not api.socket.startswith("/"):
        raise _invalid("api.socket", where, "must be an absolute path")
    if len(api.socket.encode()) > 107:
        raise _invalid("api.socket", where, "is longer than a Unix socket path may be (107 bytes)")
    for key in ("allowed_uids", "allowed_gids"):
        if any(not 0 <= v < 2**32 - 1 for v in getattr(api, key)):
            raise _invalid(f"api.{key}", where, "must hold ids between 0 and 4294967294")
    if not 1 <= api.max_clients <= 1024:
        raise _invalid("api.max_clients", where, "must be between 1 and 1024")
    if not 1 <= api.max_inflight <= 64:
        raise _invalid("api.max_inflight", where, "must be between 1 and 64")
    if not 0 < api.idle_timeout_s <= 86400:
        raise _invalid("api.idle_timeout_s", where, "must be > 0 and at most 86400 seconds")
    if not 1024 <= api.max_line <= PROTOCOL_MAX_LINE:
        raise _invalid("api.max_line", where, f"must be between 1024 and {PROTOCOL_MAX_LINE}")
    if cfg.log.level not in LOG_LEVELS:
        raise _invalid("log.level", where, f"must be one of {', '.join(LOG_LEVELS)}")


def parse_config(data: dict[str, Any], where: str = "<config>", base: Path | None = None) -> Config:
    """A parsed TOML document -> :class:`Config`. ``base`` resolves a relative card.subscriber."""
    cfg = Config(source=where)
    for section, value in data.items():
        if section not in _SECTIONS:
            raise ConfigError("config.unknown_key", f"{where}: unknown key '{section}'", key=section)
        if not isinstance(value, dict):
            raise _invalid(section, where, "must be a table")
        target = getattr(cfg, section)
        names = {f.name for f in fields(target)} - {"enabled"}
        for key, item in value.items():
            path = f"{section}.{key}"
            if key not in names:
                raise ConfigError("config.unknown_key", f"{where}: unknown key '{path}'", key=path)
            setattr(target, key, _check_kind(path, item, where))
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
