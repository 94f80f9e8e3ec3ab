"""Status rules of the ticket model that every channel applies."""

from __future__ import annotations

from gateway import fields
from gateway.errors import InvalidChange

FINISHED = frozenset({"closed", "duplicate"})


def status_after_builder_reply(status: str) -> str:
    """Return the status a ticket takes when its builder replies."""
    if status == "waiting_on_builder":
        return "open"
    if status == "resolved":
        return "reopened"
    return status


def accepts_builder_replies(status: str) -> bool:
    """Return False for closed and duplicate tickets, which take no normal replies."""
    return status not in FINISHED


def check_status_change(
    current: str,
    new: str,
    *,
    summary: str | None = None,
    question: str | None = None,
    duplicate_of: int | None = None,
) -> None:
    """Raise InvalidChange when support may not move a ticket from CURRENT to NEW."""
    if new not in fields.STATUSES:
        raise InvalidChange(
            f"unknown status {new!r}; use one of: {', '.join(fields.STATUSES)}."
        )
    if new == current:
        raise InvalidChange(f"the ticket is already {current}.")
    if new == "new":
        raise InvalidChange("a ticket is new only until support first touches it; "
                            "use open or triaged instead.")
    if current in FINISHED and new != "reopened":
        raise InvalidChange(
            f"the ticket is {current}; reopen it first (status reopened) to change it."
        )
    if new == "resolved" and not (summary and summary.strip()):
        raise InvalidChange("resolving needs a resolution summary for the builder; "
                            "pass --summary TEXT.")
    if new == "waiting_on_builder" and not (question and question.strip()):
        raise InvalidChange("waiting on the builder needs the question to send them; "
                            "pass --question TEXT.")
    if new == "duplicate" and duplicate_of is None:
        raise InvalidChange("a duplicate needs the ticket that tracks the issue; "
                            "pass --duplicate-of NUMBER.")
    if new == "reopened" and current not in ("resolved", "closed", "duplicate"):
        raise InvalidChange(f"only a resolved, closed or duplicate ticket can be reopened; "
                            f"this one is {current}.")
