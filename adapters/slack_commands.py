"""Parse the text of the /ticket slash command."""

from __future__ import annotations

from dataclasses import dataclass

HELP_TEXT = """\
/ticket NUMBER · show a ticket
/ticket list [STATUS] · list tickets (default: every open status)
/ticket NUMBER reply TEXT · email TEXT to the builder (after the undo window)
/ticket NUMBER note TEXT · add an internal note
/ticket NUMBER status STATUS [TEXT] · change status; TEXT is the summary for resolved \
or the question for waiting_on_builder
/ticket NUMBER resolve SUMMARY · resolve with a summary for the builder
/ticket NUMBER wait QUESTION · ask the builder and wait on them
/ticket NUMBER escalate | close | reopen
/ticket NUMBER severity sev1..sev4 | category ID | priority P1..P4
/ticket NUMBER assignee @person | NAME | none
/ticket NUMBER duplicate OTHER · mark as a duplicate of ticket OTHER"""

ACTIONS = frozenset({
    "reply", "note", "status", "resolve", "wait", "escalate", "close", "reopen",
    "severity", "category", "priority", "assignee", "duplicate",
})
NEEDS_TEXT = frozenset({"reply", "note", "status", "resolve", "wait", "severity",
                        "category", "priority", "assignee", "duplicate"})


class CommandError(ValueError):
    """The /ticket text could not be understood; the message shows the expected form."""


@dataclass(frozen=True)
class TicketCommand:
    """One parsed /ticket command."""

    action: str
    number: int = 0
    argument: str = ""
    help_text: str = HELP_TEXT


def parse_command(text: str) -> TicketCommand:
    """Parse /ticket text such as "123 reply Thanks" or "list resolved"."""
    words = text.strip().split(maxsplit=2)
    if not words or words[0].lower() == "help":
        return TicketCommand("help")
    if words[0].lower() == "list":
        return TicketCommand("list", argument=" ".join(words[1:]))
    number_text = words[0].lstrip("#")
    if not number_text.isdigit():
        raise CommandError(f"`{words[0]}` is not a ticket number.\n{HELP_TEXT}")
    number = int(number_text)
    if len(words) == 1:
        return TicketCommand("show", number)
    action = words[1].lower()
    if action not in ACTIONS:
        raise CommandError(f"Unknown action `{words[1]}`.\n{HELP_TEXT}")
    argument = words[2] if len(words) > 2 else ""
    if action in NEEDS_TEXT and not argument.strip():
        raise CommandError(f"`/ticket {number} {action}` needs a value after it.\n{HELP_TEXT}")
    return TicketCommand(action, number, argument)
