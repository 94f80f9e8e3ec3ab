"""Exceptions raised by support-gateway, all under one GatewayError."""

from __future__ import annotations


class GatewayError(Exception):
    """Base class of every error support-gateway raises on purpose."""


class ConfigError(GatewayError):
    """A configuration file or value is invalid; the message names the key."""


class UnknownTicket(GatewayError):
    """No ticket has the requested number."""


class UnknownBuilder(GatewayError):
    """No builder account has the requested email address."""


class InvalidChange(GatewayError):
    """A ticket change breaks a rule of the ticket model."""


def first_line(error: BaseException) -> str:
    """Return the first line of ERROR's text, for a log line.

    A database error's later lines give the SQL statement and its values, which
    may contain message text.
    """
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class StorageUnavailable(GatewayError):
    """The database could not store a change; the caller should retry later."""


class DatabaseBusy(StorageUnavailable):
    """Another process or session held a database lock for longer than the wait limit."""


class DeliveryFailed(GatewayError):
    """An outbound message could not be delivered on this attempt."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class DuplicateDelivery(GatewayError):
    """The inbound message was already applied by an earlier delivery."""
