"""Configuration: read a TOML file once, check every key, apply defaults."""

from __future__ import annotations

import ipaddress
import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from gateway.errors import ConfigError

CONFIG_ENV = "GATEWAY_CONFIG"
MIB = 1024 * 1024


@dataclass(frozen=True)
class SmtpConfig:
    """Where inbound SMTP listens and which addresses it accepts."""

    host: str = "127.0.0.1"
    port: int = 2525
    support_addresses: tuple[str, ...] = ("support@localhost",)
    # 25 MB of attachments is about 35 MB once base64-encoded, plus text.
    max_message_bytes: int = 40 * MIB
    register_unknown_senders: bool = False


@dataclass(frozen=True)
class WebConfig:
    """Where the status page and API listen, and who may open them."""

    host: str = "127.0.0.1"
    port: int = 8080
    access_token: str | None = field(default=None, repr=False)
    public_url: str = "http://127.0.0.1:8080"


@dataclass(frozen=True)
class DatabaseConfig:
    """The SQLAlchemy URL of the ticket store."""

    url: str = "sqlite:///var/gateway.db"


@dataclass(frozen=True)
class OutboundConfig:
    """How outbound mail leaves: a Maildir, or an SMTP relay when one is set."""

    maildir: str = "var/outbox"
    relay_host: str | None = None
    relay_port: int = 587
    relay_username: str | None = None
    relay_password: str | None = field(default=None, repr=False)
    relay_starttls: bool = True
    relay_timeout_seconds: float = 30.0
    from_address: str | None = None
    from_name: str = "Support"
    max_attempts: int = 12
    retry_base_seconds: float = 30.0
    retry_max_seconds: float = 3600.0


@dataclass(frozen=True)
class SecurityConfig:
    """Keys that protect reply addresses and links."""

    # When unset, a random key is created once and kept in the database, so
    # every instance that shares the database signs with the same key.
    reply_signing_key: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Config:
    """All settings of one gateway process."""

    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    web: WebConfig = field(default_factory=WebConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    outbound: OutboundConfig = field(default_factory=OutboundConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    source: str = "embedded defaults"

    @property
    def sender_address(self) -> str:
        """Return the From address of outbound mail."""
        return self.outbound.from_address or self.smtp.support_addresses[0]


# Secrets may come from the environment instead of the file.
SECRET_ENV: dict[tuple[str, str], str] = {
    ("web", "access_token"): "GATEWAY_WEB_ACCESS_TOKEN",
    ("outbound", "relay_password"): "GATEWAY_OUTBOUND_RELAY_PASSWORD",
    ("security", "reply_signing_key"): "GATEWAY_REPLY_SIGNING_KEY",
}
# Not secret, but handy for running one checkout against another database.
OVERRIDE_ENV: dict[tuple[str, str], str] = {
    ("database", "url"): "GATEWAY_DATABASE_URL",
}

_SECTIONS: dict[str, type] = {
    "smtp": SmtpConfig,
    "web": WebConfig,
    "database": DatabaseConfig,
    "outbound": OutboundConfig,
    "security": SecurityConfig,
}


def load_config(path: str | Path | None = None) -> Config:
    """Load the config from PATH, or GATEWAY_CONFIG, or the embedded defaults."""
    if path is None and os.environ.get(CONFIG_ENV):
        path = os.environ[CONFIG_ENV]
    if path is None:
        raw: dict[str, Any] = {}
        source = "embedded defaults"
    else:
        raw = _read_toml(Path(path))
        source = str(path)

    sections: dict[str, Any] = {}
    for name, raw_section in raw.items():
        if name not in _SECTIONS:
            raise ConfigError(
                f"unknown section [{name}] in {source}; "
                f"expected one of: {', '.join(sorted(_SECTIONS))}."
            )
        if not isinstance(raw_section, dict):
            raise ConfigError(f"{name} in {source} must be a [section] table.")
        sections[name] = _build_section(name, raw_section, source)

    config = Config(**sections, source=source)
    config = _apply_environment(config)
    _check(config)
    return config


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError as exc:
        raise ConfigError(
            f"config file {path} not found; pass an existing file with --config "
            f"or unset {CONFIG_ENV} to use the embedded defaults."
        ) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc


def _build_section(name: str, values: dict[str, Any], source: str) -> Any:
    cls = _SECTIONS[name]
    known = {f.name: f for f in fields(cls)}
    defaults = cls()
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(
                f"unknown key {name}.{key} in {source}; see config.example.toml "
                "for the keys of this section."
            )
        expected = getattr(defaults, key)
        kwargs[key] = _coerce(f"{name}.{key}", value, expected, known[key].type)
    return cls(**kwargs)


def _coerce(key: str, value: Any, default: Any, annotation: Any) -> Any:
    text = str(annotation)
    if "tuple" in text:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{key} must be a list of strings, got {value!r}.")
        return tuple(value)
    if text.startswith("bool"):
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}.")
        return value
    if text.startswith("int"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be a whole number, got {value!r}.")
        return value
    if text.startswith("float"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key} must be a number, got {value!r}.")
        return float(value)
    if not isinstance(value, str):
        raise ConfigError(f"{key} must be a string, got {value!r}.")
    return value


def _apply_environment(config: Config) -> Config:
    for (section, key), variable in {**SECRET_ENV, **OVERRIDE_ENV}.items():
        value = os.environ.get(variable)
        if value:
            updated = replace(getattr(config, section), **{key: value})
            config = replace(config, **{section: updated})
    return config


def _check(config: Config) -> None:
    for key, port in (("smtp.port", config.smtp.port), ("web.port", config.web.port)):
        if not 0 <= port <= 65535:
            raise ConfigError(f"{key} is {port}; use a port from 1 to 65535.")
    if not config.smtp.support_addresses:
        raise ConfigError("smtp.support_addresses is empty; list at least one address.")
    for address in config.smtp.support_addresses:
        local, _, domain = address.partition("@")
        if not local or not domain or "+" in local or any(c.isspace() for c in address):
            raise ConfigError(
                f"smtp.support_addresses contains {address!r}; write plain "
                "addresses such as support@example.com, without +tags."
            )
    if config.smtp.max_message_bytes < 40 * MIB:
        raise ConfigError(
            f"smtp.max_message_bytes is {config.smtp.max_message_bytes}; it must be "
            f"at least {40 * MIB} (40 MiB), because 25 MB of attachments is about "
            "35 MB once encoded."
        )
    if not config.web.public_url.startswith(("http://", "https://")):
        raise ConfigError(
            f"web.public_url is {config.web.public_url!r}; write a full URL such "
            "as https://support.example.com."
        )
    if not config.database.url.startswith(("sqlite", "postgresql", "postgres")):
        raise ConfigError(
            f"database.url is {config.database.url!r}; use sqlite:///PATH or "
            "postgresql://USER@HOST:PORT/DB."
        )
    if config.outbound.max_attempts < 1:
        raise ConfigError("outbound.max_attempts must be at least 1.")


def is_loopback(host: str) -> bool:
    """Return True when HOST names only this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
