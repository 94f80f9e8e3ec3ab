"""Turn the text of a builder's first email into ticket fields."""

from __future__ import annotations

import re
from dataclasses import dataclass

from gateway import fields
from gateway.model import App, Builder

_FIELD_LINE = re.compile(r"^\s*(category|severity|app)\s*:\s*(.*?)\s*$", re.IGNORECASE)
_SUBJECT_PREFIX = re.compile(
    r"^\s*((re|fw|fwd|aw|wg|sv|vs|tr|rv|ref|antw|doorst)\s*(\[\d+\])?\s*:\s*)+",
    re.IGNORECASE,
)
VAGUE_TITLES = frozenset(
    {
        "help", "help me", "please help", "bug", "bugs", "issue", "issues", "problem",
        "problems", "error", "not working", "doesnt work", "doesn't work", "broken",
        "urgent", "question", "questions", "support", "hi", "hello", "hey", "test",
        "asap", "important", "fix", "fix it", "request", "ticket", "(no subject)",
        "no subject", "quick question", "need help", "it's broken", "its broken",
    }
)
MIN_TITLE_CHARS = 8
MIN_DESCRIPTION_WORDS = 5
TITLE_MAX_CHARS = 200
GOOD_TITLE_EXAMPLE = "Client Portal shows a blank page after login"


@dataclass(frozen=True)
class Intake:
    """The fields of a new ticket as read from an email."""

    title: str
    description: str
    category: str
    severity: str
    app: App | None
    notes: tuple[str, ...] = ()


def read_intake(subject: str, body: str, builder: Builder) -> Intake:
    """Read title, description and the `Category:`/`Severity:`/`App:` lines."""
    category = fields.DEFAULT_CATEGORY
    severity = fields.DEFAULT_SEVERITY
    app: App | None = None
    notes: list[str] = []

    lines = body.splitlines()
    index = 0
    while index < len(lines) and not lines[index].strip():
        index += 1
    kept_from = index
    while index < len(lines):
        match = _FIELD_LINE.match(lines[index])
        if match is None:
            break
        name, value = match.group(1).lower(), match.group(2)
        if name == "category":
            found = fields.match_category(value)
            if found:
                category = found
            else:
                notes.append(f"Unknown category {value!r}; filed as Other.")
        elif name == "severity":
            found = fields.match_severity(value)
            if found:
                severity = found
            else:
                notes.append(f"Unknown severity {value!r}; filed as Sev 3 - Normal.")
        else:
            app = _match_app(value, builder)
        index += 1
        kept_from = index

    description = "\n".join(lines[kept_from:]).strip("\n")
    return Intake(
        title=clean_title(subject),
        description=description.strip(),
        category=category,
        severity=severity,
        app=app,
        notes=tuple(notes),
    )


def clean_title(subject: str) -> str:
    """Return the subject without reply and forward prefixes or extra spaces."""
    title = _SUBJECT_PREFIX.sub("", subject or "")
    title = " ".join(title.split())
    if len(title) > TITLE_MAX_CHARS:
        title = title[: TITLE_MAX_CHARS - 1].rstrip() + "…"
    return title


def title_problem(title: str) -> str | None:
    """Return why a title is not specific enough, or None when it is fine."""
    if not title:
        return "the subject is empty"
    simplified = re.sub(r"[^\w\s']", " ", title.lower())
    simplified = " ".join(simplified.split())
    if simplified in VAGUE_TITLES or not simplified:
        return f"the subject {title!r} is too vague to tell what the problem is"
    if len(title) < MIN_TITLE_CHARS:
        return (
            f"the subject {title!r} is too short; it needs at least "
            f"{MIN_TITLE_CHARS} characters"
        )
    return None


def description_problem(description: str) -> str | None:
    """Return why a description is too thin to act on, or None when it is fine."""
    words = re.findall(r"\w+", description)
    if len(words) < MIN_DESCRIPTION_WORDS:
        return (
            "the message has too little detail; write at least a sentence about "
            "what you did, what you expected and what happened instead"
        )
    return None


def _match_app(value: str, builder: Builder) -> App | None:
    wanted = " ".join(value.split()).lower()
    if not wanted or wanted in ("none", "account", "account-level", "account-level issue",
                                "account level", "n/a", "-"):
        return None
    for app in builder.apps:
        if app.name.lower() == wanted:
            return app
    for app in builder.apps:
        if app.uri and wanted.rstrip("/") == app.uri.lower().rstrip("/"):
            return app
    # An app the builder never registered is kept by name so support can see it.
    return App(name=" ".join(value.split())[:200], uri="")
