"""Email address handling: identity, support addresses and signed reply addresses."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass

# 20 hex digits are 80 bits of HMAC-SHA256: too many to guess, short enough to
# keep the local part far below the 64-octet limit of RFC 5321.
SIGNATURE_HEX_DIGITS = 20
_REPLY_TAG = re.compile(rf"^(\d{{1,12}})\.([0-9a-f]{{{SIGNATURE_HEX_DIGITS}}})$")
_ROBOT_LOCAL_PARTS = frozenset(
    {"mailer-daemon", "postmaster", "noreply", "no-reply", "donotreply", "do-not-reply"}
)


def identity(address: str) -> str:
    """Return the address a builder is known by: lowercased, without a +tag."""
    local, at, domain = address.strip().lower().rpartition("@")
    if not at:
        return address.strip().lower()
    local = local.split("+", 1)[0]
    return f"{local}@{domain}"


def split_tag(address: str) -> tuple[str, str | None]:
    """Split `local+tag@domain` into (`local@domain`, tag), lowercased."""
    local, at, domain = address.strip().lower().rpartition("@")
    if not at:
        return address.strip().lower(), None
    base, plus, tag = local.partition("+")
    return f"{base}@{domain}", (tag if plus else None)


def is_robot_address(address: str) -> bool:
    """Return True for addresses that never read mail, such as MAILER-DAEMON."""
    local = address.strip().lower().rpartition("@")[0].split("+", 1)[0]
    return local in _ROBOT_LOCAL_PARTS


@dataclass(frozen=True)
class SupportAddresses:
    """The configured support addresses and the reply addresses derived from them."""

    addresses: tuple[str, ...]

    @classmethod
    def of(cls, addresses: Sequence[str]) -> SupportAddresses:
        return cls(tuple(a.strip().lower() for a in addresses))

    @property
    def primary(self) -> str:
        return self.addresses[0]

    def accepts(self, recipient: str) -> bool:
        """Return True for a support address or one of its +tag forms."""
        base, _tag = split_tag(recipient)
        return base in self.addresses

    def is_own(self, address: str) -> bool:
        """Return True when ADDRESS is one of ours, with or without a +tag."""
        return self.accepts(address)


class ReplySigner:
    """Signs and checks per-ticket reply addresses `support+<ticket>.<signature>@...`."""

    def __init__(self, key: bytes, support: SupportAddresses) -> None:
        self._key = key
        self._support = support

    def reply_address(self, ticket_number: int, builder_email: str) -> str:
        """Return the reply address of one ticket for one builder."""
        local, _, domain = self._support.primary.partition("@")
        signature = self._sign(ticket_number, builder_email)
        return f"{local}+{ticket_number}.{signature}@{domain}"

    def tagged_ticket(self, recipient: str) -> int | None:
        """Return the ticket number a reply address names, before any signature check."""
        base, tag = split_tag(recipient)
        if tag is None or base not in self._support.addresses:
            return None
        match = _REPLY_TAG.match(tag)
        return int(match.group(1)) if match else None

    def is_valid(self, recipient: str, ticket_number: int, builder_email: str) -> bool:
        """Return True when RECIPIENT is the signed reply address of this ticket and builder."""
        _base, tag = split_tag(recipient)
        match = _REPLY_TAG.match(tag or "")
        if match is None or int(match.group(1)) != ticket_number:
            return False
        expected = self._sign(ticket_number, builder_email)
        return hmac.compare_digest(expected, match.group(2))

    def _sign(self, ticket_number: int, builder_email: str) -> str:
        message = f"reply:{ticket_number}:{identity(builder_email)}".encode()
        digest = hmac.new(self._key, message, hashlib.sha256).hexdigest()
        return digest[:SIGNATURE_HEX_DIGITS]
