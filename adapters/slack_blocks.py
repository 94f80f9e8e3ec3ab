"""Slack messages and modals for tickets, as Block Kit JSON.

Every value that came from a builder or a person (titles, bodies, names,
filenames) passes through `escape`, so Slack shows `<!channel>` or a
disguised link as text and notifies no one.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from gateway import fields
from gateway.model import TicketDetail, TicketSummary

DESCRIPTION_PREVIEW_CHARS = 600
THREAD_TEXT_CHARS = 3000
# Statuses offered in the root message's menu; resolved, waiting and duplicate
# open a modal first because they need a summary, a question or a ticket.
MENU_STATUSES = tuple(s for s in fields.STATUSES if s != "new")
NEEDS_MODAL = {"resolved": "resolve", "waiting_on_builder": "wait", "duplicate": "duplicate"}

_MENTION = re.compile(r"<([^<>|]+)(?:\|([^<>]*))?>")


def escape(text: str) -> str:
    """Escape &, < and > the way Slack's message formatting requires."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def unescape(text: str) -> str:
    """Undo Slack's escaping of &, < and > in text Slack sent us."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def to_plain_text(text: str, user_name: Callable[[str], str]) -> str:
    """Turn Slack message text into plain text fit for an email to a builder.

    User mentions become names (USER_NAME looks them up), channel mentions
    and special mentions become words, and links keep their label and URL,
    except links to private Slack files, which outsiders cannot open.
    """

    def replace(match: re.Match[str]) -> str:
        target, label = match.group(1), match.group(2)
        if target.startswith("@"):
            return "@" + user_name(target[1:])
        if target.startswith("#"):
            return "#" + (label or "channel")
        if target.startswith("!subteam^"):
            return "@" + (label or "team").lstrip("@")
        if target.startswith("!"):
            return "@" + (label or target[1:].split("^")[0])
        if _is_private_slack_link(target):
            return label or "[file shared in Slack]"
        if label and label != target:
            return f"{label} ({target})"
        return target.removeprefix("mailto:")

    return unescape(_MENTION.sub(replace, text)).strip()


def root_message(ticket: TicketDetail, *, alert: bool = False) -> tuple[str, list[dict]]:
    """Return the fallback text and blocks of a ticket's root message."""
    summary = ticket.summary
    title = f"#{summary.number} {escape(summary.title)}"
    fallback = f"{title} ({fields.SEVERITIES[summary.severity]}, {summary.status_label})"
    blocks: list[dict[str, Any]] = []
    if alert:
        # The alert is the gateway's own text; builder text is never a mention.
        fallback = f"<!here> Sev 1 ticket: {fallback}"
        blocks.append(_section(":rotating_light: <!here> Sev 1 - Blocking ticket"))
    blocks.append(_section(f"*{title}*"))
    blocks.append({"type": "section", "fields": [
        _field("Builder", f"{escape(summary.builder_name or summary.builder_email)} "
                          f"({escape(summary.builder_email)})"),
        _field("App", escape(summary.app_name or fields.ACCOUNT_LEVEL_APP)),
        _field("Category", fields.CATEGORIES[summary.category]),
        _field("Severity", fields.SEVERITIES[summary.severity]),
        _field("Priority", summary.priority),
        _field("Status", f"{summary.status_label} ({summary.status})"),
        _field("Assignee", escape(summary.assignee or "nobody")),
    ]})
    description = ticket.description
    if len(description) > DESCRIPTION_PREVIEW_CHARS:
        description = description[:DESCRIPTION_PREVIEW_CHARS].rstrip() + " …"
    blocks.append(_section(_quote(escape(description)) or "_(no description)_"))
    if ticket.resolution_summary and summary.status == "resolved":
        blocks.append(_section(f"*Resolution:* {escape(ticket.resolution_summary)}"))
    if ticket.duplicate_of and summary.status == "duplicate":
        blocks.append(_section(f"Duplicate of #{ticket.duplicate_of}"))
    blocks.extend(_actions(summary))
    return fallback, blocks


def builder_message(author: str, body: str, attachment_count: int) -> str:
    """Return the thread line that shows a builder's message."""
    text = _clip(body) or "(no text)"
    line = f"*{escape(author)}* wrote:\n{_quote(escape(text))}"
    if attachment_count:
        line += f"\n_{attachment_count} attachment(s) follow._"
    return line


def support_entry(kind: str, author: str, body: str) -> str:
    """Return the thread line for a reply or note made outside Slack."""
    if kind == "reply":
        return f":email: *{escape(author)}* replied to the builder:\n{_quote(escape(_clip(body)))}"
    return f":lock: Internal note by *{escape(author)}*:\n{_quote(escape(_clip(body)))}"


def change_line(actor: str, changes: Sequence[str]) -> str:
    """Return the short thread line that names who changed what."""
    return f":arrows_counterclockwise: *{escape(actor)}* changed " + escape("; ".join(changes))


def reply_marker(actor: str, undo_seconds: int, reply_id: int) -> tuple[str, list[dict]]:
    """Return the thread line that marks a reply sent to the builder, with Undo."""
    text = (f":outbox_tray: *{escape(actor)}* sent a reply to the builder; it is "
            f"emailed in {undo_seconds} seconds.")
    blocks: list[dict[str, Any]] = [_section(text)]
    if undo_seconds > 0:
        blocks.append({"type": "actions", "block_id": f"undo:{reply_id}", "elements": [
            _button("Undo", "reply_undo", str(reply_id), style="danger"),
        ]})
    return text, blocks


def reply_text_line(actor: str, body: str) -> str:
    """Return the thread line that shows a reply written in a modal or command."""
    return f":email: Reply by *{escape(actor)}* to the builder:\n{_quote(escape(_clip(body)))}"


def withdrawn_line(actor: str) -> str:
    """Return the thread line for a reply withdrawn before it was emailed."""
    return f":leftwards_arrow_with_hook: *{escape(actor)}* withdrew the reply; it was not emailed."


def text_modal(callback_id: str, number: int, title: str, label: str,
               submit: str, *, channel: str = "", ts: str = "") -> dict[str, Any]:
    """Return a modal with one multi-line text input."""
    return {
        "type": "modal",
        "callback_id": callback_id,
        "private_metadata": f"{number}|{channel}|{ts}",
        "title": {"type": "plain_text", "text": title[:24]},
        "submit": {"type": "plain_text", "text": submit},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [{
            "type": "input",
            "block_id": "text",
            "label": {"type": "plain_text", "text": label},
            "element": {"type": "plain_text_input", "action_id": "value", "multiline": True},
        }],
    }


def duplicate_modal(number: int) -> dict[str, Any]:
    """Return the modal for the number of the ticket that tracks the issue."""
    view = text_modal("ticket_duplicate", number, f"Duplicate #{number}",
                      "Number of the ticket that tracks the issue", "Mark duplicate")
    view["blocks"][0]["element"] = {"type": "plain_text_input", "action_id": "value"}
    return view


def ticket_text(ticket: TicketDetail) -> str:
    """Return a short description of a ticket, for /ticket NUMBER."""
    summary = ticket.summary
    return "\n".join([
        f"*#{summary.number} {escape(summary.title)}*",
        f"Builder: {escape(summary.builder_email)} · App: "
        f"{escape(summary.app_name or fields.ACCOUNT_LEVEL_APP)}",
        f"{fields.CATEGORIES[summary.category]} · {fields.SEVERITIES[summary.severity]} · "
        f"{summary.priority} · {summary.status_label} ({summary.status}) · "
        f"assignee: {escape(summary.assignee or 'nobody')}",
        _quote(escape(_clip(ticket.description, 500))),
    ])


def ticket_list_text(tickets: Sequence[TicketSummary], total: int) -> str:
    """Return one line per ticket, for /ticket list."""
    if not tickets:
        return "No tickets match."
    lines = [f"{len(tickets)} of {total} ticket(s), newest activity first:"]
    for t in tickets:
        lines.append(f"#{t.number} {escape(t.title)} · {t.status} · {t.severity} · "
                     f"{escape(t.assignee or 'unassigned')}")
    return "\n".join(lines)


def _actions(summary: TicketSummary) -> list[dict[str, Any]]:
    number = summary.number
    value = str(number)
    buttons = [
        _button("Reply to builder", "ticket_reply", value, style="primary"),
        _button("Escalate", "ticket_escalate", value),
        _button("Waiting on builder", "ticket_wait", value),
        _button("Resolve", "ticket_resolve", value),
        _button("Close", "ticket_close", value),
        _button("Duplicate of…", "ticket_duplicate", value),
    ]
    menus = [
        _select("Status", "ticket_status", number, {s: s for s in MENU_STATUSES},
                summary.status),
        _select("Severity", "ticket_severity", number, fields.SEVERITIES, summary.severity),
        _select("Category", "ticket_category", number, fields.CATEGORIES, summary.category),
        _select("Priority", "ticket_priority", number, {p: p for p in fields.PRIORITIES},
                summary.priority),
        {"type": "users_select", "action_id": "ticket_assignee",
         "placeholder": {"type": "plain_text", "text": "Assignee"}},
    ]
    return [
        {"type": "actions", "block_id": f"ticket:{number}:buttons", "elements": buttons},
        {"type": "actions", "block_id": f"ticket:{number}:menus", "elements": menus},
    ]


def _select(label: str, action_id: str, number: int, options: dict[str, str],
            current: str) -> dict[str, Any]:
    choices = [
        {"text": {"type": "plain_text", "text": text[:75]}, "value": f"{number}:{key}"}
        for key, text in options.items()
    ]
    menu: dict[str, Any] = {
        "type": "static_select",
        "action_id": action_id,
        "placeholder": {"type": "plain_text", "text": label},
        "options": choices,
    }
    for choice in choices:
        if choice["value"] == f"{number}:{current}":
            menu["initial_option"] = choice
    return menu


def _button(text: str, action_id: str, value: str, *, style: str | None = None) -> dict:
    button: dict[str, Any] = {"type": "button", "action_id": action_id, "value": value,
                              "text": {"type": "plain_text", "text": text}}
    if style:
        button["style"] = style
    return button


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text[:3000]}}


def _field(label: str, value: str) -> dict[str, str]:
    return {"type": "mrkdwn", "text": f"*{label}*\n{value}"[:2000]}


def _quote(text: str) -> str:
    return "\n".join(f"> {line}" for line in text.splitlines())


def _clip(text: str, limit: int = THREAD_TEXT_CHARS) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[:limit].rstrip() + " …"


def _is_private_slack_link(url: str) -> bool:
    return bool(re.match(r"https?://(files\.slack\.com|[^/]*\.slack\.com/files)", url))
