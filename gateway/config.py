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
    """Settings of the inbound SMTP listener and the addresses it accepts."""

    host: str = "127.0.0.1"
    port: int = 2525
    support_addresses: tuple[str, ...] = ("support@localhost",)
    # 25 MB of attachments is about 35 MB once base64-encoded, plus text.
    max_message_bytes: int = 40 * MIB
    register_unknown_senders: bool = False
    # Maximum line length accepted in DATA, in bytes. RFC 5321 requires only
    # 1000, but real clients send longer lines (HTML without line breaks).
    max_line_bytes: int = MIB
    # A connection is closed after this many seconds without a command; the
    # whole DATA transfer of one message must finish within this time too.
    idle_timeout_seconds: float = 300.0
    max_sessions_per_client: int = 10
    # Messages one client address may send per minute; more get 450 4.7.1.
    max_messages_per_client_per_minute: int = 120
    # Limits checked on the raw bytes before parsing. A message over one gets 5xx.
    max_header_bytes: int = 256 * 1024
    max_mime_parts: int = 200
    max_mime_depth: int = 20
    max_recipients: int = 100
    # New tickets one builder may open per hour; later messages are held as
    # inbound records until support releases them.
    new_tickets_per_sender_per_hour: int = 10
    # false: an update with a failing attachment is not applied. true: its text
    # and the files that pass are applied. Either way the builder gets a notice.
    drop_failing_attachments: bool = False


@dataclass(frozen=True)
class WebConfig:
    """Settings of the status page and API listener, and its access token."""

    host: str = "127.0.0.1"
    port: int = 8080
    access_token: str | None = field(default=None, repr=False)
    public_url: str = "http://127.0.0.1:8080"
    # How long a private status-page link in an email to a builder stays valid.
    builder_link_days: int = 30


@dataclass(frozen=True)
class DatabaseConfig:
    """The SQLAlchemy URL of the ticket store."""

    url: str = "sqlite:///var/gateway.db"


@dataclass(frozen=True)
class OutboundConfig:
    """Settings of outbound mail: a Maildir, or an SMTP relay when one is set."""

    maildir: str = "var/outbox"
    relay_host: str | None = None
    relay_port: int = 587
    relay_username: str | None = None
    relay_password: str | None = field(default=None, repr=False)
    relay_starttls: bool = True
    relay_timeout_seconds: float = 30.0
    # Name sent in EHLO to the relay; default: this machine's host name.
    helo_hostname: str | None = None
    from_address: str | None = None
    from_name: str = "Support"
    max_attempts: int = 12
    retry_base_seconds: float = 30.0
    retry_max_seconds: float = 3600.0
    # How long a claimed outbox email stays reserved for one instance. When
    # that instance dies mid-send, another one sends the email after this.
    claim_lease_seconds: float = 300.0
    # Hours without notices to an address after a permanent bounce from it.
    suppress_after_bounce_hours: float = 72.0
    # Rejection notices one address may receive per day.
    notices_per_day: int = 20


@dataclass(frozen=True)
class SecurityConfig:
    """Keys that protect reply addresses and links."""

    # When unset, a random key is created once and kept in the database, so
    # every instance that shares the database signs with the same key.
    reply_signing_key: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class SlackConfig:
    """The Slack app's credentials, its support channel and who may act there."""

    bot_token: str | None = field(default=None, repr=False)
    signing_secret: str | None = field(default=None, repr=False)
    channel: str | None = None
    api_base_url: str = "https://slack.com/api/"
    app_token: str | None = field(default=None, repr=False)
    # Seconds a public reply from Slack waits before it is emailed, so it can
    # be withdrawn with Undo or by deleting the Slack message.
    undo_seconds: int = 10
    # A user group id (S...) whose members may act, in addition to the
    # members of the support channel.
    allowed_user_group: str | None = None
    # Maximum wait, in seconds, between retries of a failed Slack post.
    retry_max_seconds: float = 300.0

    @property
    def enabled(self) -> bool:
        """Return True when a bot token is set, which turns Slack on."""
        return bool(self.bot_token)


@dataclass(frozen=True)
class RemindersConfig:
    """When reminder digests go out, and the other scheduled work on tickets."""

    # Cron expression (minute hour day month weekday), read in each builder's
    # time zone.
    schedule: str = "0 9 * * 1-5"
    waiting_after_hours: float = 24.0
    repeat_after_days: float = 3.0
    # 0 turns digests off.
    max_reminders: int = 3
    # 0 turns each of these off.
    auto_resolve_after_days: float = 14.0
    escalate_sev1_after_minutes: float = 60.0
    raw_retention_days: float = 90.0


@dataclass(frozen=True)
class Config:
    """All settings of one gateway process."""

    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    web: WebConfig = field(default_factory=WebConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    outbound: OutboundConfig = field(default_factory=OutboundConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    slack: SlackConfig = field(default_factory=SlackConfig)
    reminders: RemindersConfig = field(default_factory=RemindersConfig)
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
    ("slack", "bot_token"): "GATEWAY_SLACK_BOT_TOKEN",
    ("slack", "signing_secret"): "GATEWAY_SLACK_SIGNING_SECRET",
    ("slack", "app_token"): "GATEWAY_SLACK_APP_TOKEN",
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
    "slack": SlackConfig,
    "reminders": RemindersConfig,
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
            raise ConfigError(f"{key} is {port}; use a port from 1 to 65535, or 0 for any free port.")
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
    if not 1 <= config.web.builder_link_days <= 365:
        raise ConfigError(
            f"web.builder_link_days is {config.web.builder_link_days}; use a whole "
            "number of days from 1 to 365."
        )
    if not config.database.url.startswith(("sqlite", "postgresql", "postgres")):
        raise ConfigError(
            f"database.url is {config.database.url!r}; use sqlite:///PATH or "
            "postgresql://USER@HOST:PORT/DB."
        )
    if config.outbound.max_attempts < 1:
        raise ConfigError("outbound.max_attempts must be at least 1.")
    if config.outbound.claim_lease_seconds <= config.outbound.relay_timeout_seconds:
        raise ConfigError(
            f"outbound.claim_lease_seconds is {config.outbound.claim_lease_seconds}; it "
            "must be longer than outbound.relay_timeout_seconds "
            f"({config.outbound.relay_timeout_seconds}), or another instance may send "
            "an email again while the first is still sending it."
        )
    _check_mail_safety(config)
    _check_slack(config.slack)
    _check_reminders(config.reminders)


def _check_mail_safety(config: Config) -> None:
    smtp = config.smtp
    for key in ("max_line_bytes", "max_sessions_per_client",
                "max_messages_per_client_per_minute", "max_header_bytes",
                "max_mime_parts", "max_mime_depth", "max_recipients",
                "new_tickets_per_sender_per_hour"):
        if getattr(smtp, key) < 1:
            raise ConfigError(f"smtp.{key} is {getattr(smtp, key)}; use 1 or more.")
    if smtp.max_line_bytes < 1001:
        raise ConfigError(
            f"smtp.max_line_bytes is {smtp.max_line_bytes}; use at least 1001, the "
            "line length that RFC 5321 requires servers to accept."
        )
    if smtp.idle_timeout_seconds <= 0:
        raise ConfigError(
            f"smtp.idle_timeout_seconds is {smtp.idle_timeout_seconds}; use a number "
            "of seconds above 0, such as 300."
        )
    if config.outbound.suppress_after_bounce_hours < 0:
        raise ConfigError(
            "outbound.suppress_after_bounce_hours is "
            f"{config.outbound.suppress_after_bounce_hours}; use 0 or more hours."
        )
    if config.outbound.notices_per_day < 1:
        raise ConfigError(
            f"outbound.notices_per_day is {config.outbound.notices_per_day}; use 1 or more."
        )


def _check_reminders(reminders: RemindersConfig) -> None:
    from zoneinfo import ZoneInfo

    from gateway.cron import crontab_trigger

    try:
        crontab_trigger(reminders.schedule, ZoneInfo("UTC"))
    except ValueError as exc:
        raise ConfigError(
            f"reminders.schedule is {reminders.schedule!r}, which is not a valid cron "
            f"expression ({exc}); write five fields such as \"0 9 * * 1-5\" "
            "(weekdays at 09:00)."
        ) from exc
    for key in ("waiting_after_hours", "repeat_after_days", "max_reminders",
                "auto_resolve_after_days", "escalate_sev1_after_minutes",
                "raw_retention_days"):
        value = getattr(reminders, key)
        if value < 0:
            raise ConfigError(f"reminders.{key} is {value}; use 0 or more.")


def _check_slack(slack: SlackConfig) -> None:
    if not slack.enabled:
        return
    if not slack.channel:
        raise ConfigError("slack.bot_token is set but slack.channel is not; set it to "
                          "the id of the support channel, such as C0123456789.")
    if not slack.signing_secret and not slack.app_token:
        raise ConfigError(
            "slack.signing_secret is not set; set it (or GATEWAY_SLACK_SIGNING_SECRET) "
            "so that requests to /slack/events can be verified, or set slack.app_token "
            "to use Socket Mode."
        )
    if not slack.api_base_url.startswith(("http://", "https://")):
        raise ConfigError(f"slack.api_base_url is {slack.api_base_url!r}; write a full "
                          "URL such as https://slack.com/api/.")
    if slack.undo_seconds < 0:
        raise ConfigError(f"slack.undo_seconds is {slack.undo_seconds}; use 0 or more.")


def is_loopback(host: str) -> bool:
    """Return True when HOST names only this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
