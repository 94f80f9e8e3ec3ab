"""Render the emails sent to builders from Jinja2 templates."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from gateway import fields

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"


@dataclass(frozen=True)
class Notice:
    """A rendered email to a builder: its kind, subject and both bodies."""

    kind: str
    subject: str
    text: str
    html: str
    auto_submitted: str = "auto-replied"


def make_environment() -> Environment:
    """Return the template environment; HTML templates are always autoescaped."""
    environment = Environment(
        loader=FileSystemLoader(TEMPLATES_DIR),
        autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    environment.globals.update(
        category_label=lambda c: fields.CATEGORIES.get(c, c),
        severity_label=lambda s: fields.SEVERITIES.get(s, s),
        status_label=fields.status_label,
        account_level_app=fields.ACCOUNT_LEVEL_APP,
    )
    return environment


class NoticeRenderer:
    """Renders one notice kind from its `.txt` and `.html` templates."""

    def __init__(self, environment: Environment | None = None) -> None:
        self._environment = environment or make_environment()

    def render(self, kind: str, subject: str, /, **context: Any) -> Notice:
        text = self._environment.get_template(f"{kind}.txt").render(**context)
        html = self._environment.get_template(f"{kind}.html").render(**context)
        return Notice(kind=kind, subject=subject, text=text, html=html)


def ticket_subject(number: int, title: str) -> str:
    """Return the subject of mail about a ticket: `[#123] Title`."""
    return f"[#{number}] {title}"
