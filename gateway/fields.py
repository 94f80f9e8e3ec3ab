"""Ticket categories, severities, priorities and statuses with their labels."""

from __future__ import annotations

import re

CATEGORIES: dict[str, str] = {
    "account_access": "Account access",
    "billing": "Billing or subscription",
    "app_builder": "App builder",
    "published_app": "Published app or end-user experience",
    "notion_connection": "Notion connection",
    "data_sync": "Data sync",
    "templates": "Templates or marketplace",
    "custom_domain": "Custom domain",
    "auth_permissions": "Authentication or permissions",
    "performance": "Performance",
    "bug": "Bug report",
    "feature_request": "Feature request",
    "security_privacy": "Security or privacy concern",
    "other": "Other",
}
DEFAULT_CATEGORY = "other"

SEVERITIES: dict[str, str] = {
    "sev1": "Sev 1 - Blocking",
    "sev2": "Sev 2 - Major",
    "sev3": "Sev 3 - Normal",
    "sev4": "Sev 4 - Minor",
}
DEFAULT_SEVERITY = "sev3"

# Severity sets the initial priority; support may change priority later.
PRIORITIES: tuple[str, ...] = ("P1", "P2", "P3", "P4")
PRIORITY_FOR_SEVERITY: dict[str, str] = {
    "sev1": "P1",
    "sev2": "P2",
    "sev3": "P3",
    "sev4": "P4",
}

STATUSES: tuple[str, ...] = (
    "new",
    "open",
    "triaged",
    "reopened",
    "waiting_on_builder",
    "in_progress",
    "escalated",
    "resolved",
    "closed",
    "duplicate",
)
OPEN_STATUSES: frozenset[str] = frozenset(STATUSES) - {"resolved", "closed", "duplicate"}
# The status filter value that selects every open status at once.
UNFINISHED_FILTER = "unfinished"
IN_REVIEW_STATUSES: frozenset[str] = frozenset({"new", "open", "triaged", "reopened"})

BUILDER_LABELS: dict[str, str] = {
    "In review": "Support received it or is reviewing it.",
    "Waiting on you": "Support needs more information from you.",
    "In progress": "Support is working on it.",
    "Escalated": "Routed to a specialist or engineering queue.",
    "Resolved": "Support believes it is fixed; reply to reopen it.",
    "Closed": "Complete; replies are no longer accepted.",
    "Duplicate": "Tracked in another ticket.",
}

_LABEL_FOR_STATUS: dict[str, str] = {
    "new": "In review",
    "open": "In review",
    "triaged": "In review",
    "reopened": "In review",
    "waiting_on_builder": "Waiting on you",
    "in_progress": "In progress",
    "escalated": "Escalated",
    "resolved": "Resolved",
    "closed": "Closed",
    "duplicate": "Duplicate",
}

ACCOUNT_LEVEL_APP = "Account-level issue"


def status_label(status: str) -> str:
    """Return the label a builder sees for an internal status."""
    return _LABEL_FOR_STATUS[status]


def statuses_with_label(label: str) -> tuple[str, ...]:
    """Return the internal statuses that a builder sees under one label."""
    return tuple(s for s in STATUSES if _LABEL_FOR_STATUS[s] == label)


def match_category(text: str) -> str | None:
    """Return the category id for an id or label written in any case, else None."""
    return _match(text, CATEGORIES)


def match_severity(text: str) -> str | None:
    """Return the severity id for an id, a label or a form such as "Sev 1"."""
    found = _match(text, SEVERITIES)
    if found:
        return found
    # Builders write "Sev 1", "sev-1", "Severity 1" or just "1".
    digits = re.fullmatch(r"(?:sev(?:erity)?)?[\s_-]*([1-4])", _simplify(text))
    return f"sev{digits.group(1)}" if digits else None


def _match(text: str, table: dict[str, str]) -> str | None:
    wanted = _simplify(text)
    for key, label in table.items():
        if wanted in (_simplify(key), _simplify(label)):
            return key
    # A label's first words ("Billing", "Published app") are enough when unique.
    prefixed = [k for k, label in table.items() if _simplify(label).startswith(wanted)]
    if wanted and len(prefixed) == 1:
        return prefixed[0]
    return None


def _simplify(text: str) -> str:
    return re.sub(r"[\s_]+", " ", text.strip().lower())
