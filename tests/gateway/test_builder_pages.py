"""Private builder pages: links in every email, scoping, expiry, revocation, no notes."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from click.testing import CliRunner
from jinja2 import ChainableUndefined

from conftest import RunningGateway
from gateway.cli import cli
from gateway.notices import TEMPLATES_DIR, make_environment
from web_desk import (
    INTERNAL_NOTE,
    Desk,
    active_content,
    builder_links_in,
    http,
    mail_texts,
    seed_desk,
)

STAFF_TEMPLATES = {"page_base.html", "status_page.html", "ticket_page.html",
                   "login_page.html", "_attachments.html"}


@pytest.fixture
def desk(gateway: RunningGateway) -> tuple[RunningGateway, Desk]:
    return gateway, seed_desk(gateway)


def _local(gateway: RunningGateway, link: str) -> str:
    # Links in mail use web.public_url; the test server listens on a free port.
    return gateway.web_url + link[link.index("/b/"):]


def _latest_link(gateway: RunningGateway, email: str) -> str:
    links = builder_links_in(gateway, email)
    assert links, f"no builder link in mail to {email}"
    return _local(gateway, links[-1])


def _numbers(page: str) -> list[int]:
    return [int(n) for n in re.findall(r'<tr data-number="(\d+)">', page)]


def test_every_builder_email_has_link(desk: Any) -> None:
    gateway, _ = desk

    texts = mail_texts(gateway, "ada@example.com")

    assert len(texts) >= 6
    for text in texts:
        assert "/b/" in text
        assert "See all your tickets" in text


def test_each_email_gets_fresh_link(desk: Any) -> None:
    gateway, _ = desk

    links = builder_links_in(gateway, "ada@example.com")

    # Each email carries one link twice: in its text and in its HTML part.
    assert len(set(links)) == len(links) // 2


def test_builder_page_lists_only_own_tickets(desk: Any) -> None:
    gateway, _ = desk

    status, _, ada = http("GET", _latest_link(gateway, "ada@example.com"))
    _, _, bob = http("GET", _latest_link(gateway, "bob@example.com"))

    assert status == 200
    assert _numbers(ada.decode()) == [1, 2]
    assert _numbers(bob.decode()) == [3]
    assert "Billing page charges twice" not in ada.decode()


def test_builder_page_shows_labels_with_meaning(desk: Any) -> None:
    gateway, _ = desk

    _, _, body = http("GET", _latest_link(gateway, "ada@example.com"))

    page = body.decode()
    assert 'title="Support needs more information from you.">Waiting on you<' in page
    assert "waiting_on_builder" not in page


def test_builder_ticket_shows_public_story_only(desk: Any) -> None:
    gateway, _ = desk
    base = _latest_link(gateway, "ada@example.com")

    status, _, body = http("GET", f"{base}/tickets/1")

    page = body.decode()
    assert status == 200
    assert "We are looking at the login redirect now." in page
    assert INTERNAL_NOTE not in page
    assert "waiting_on_builder" not in page
    assert active_content(page) == []


def test_builder_json_has_no_internal_notes(desk: Any) -> None:
    gateway, _ = desk
    base = _latest_link(gateway, "bob@example.com")

    _, _, listing = http("GET", f"{base}/api/tickets")
    _, _, ticket = http("GET", f"{base}/api/tickets/3")

    data = json.loads(ticket)
    assert [t["number"] for t in json.loads(listing)["tickets"]] == [3]
    assert INTERNAL_NOTE not in ticket.decode()
    assert {m["visibility"] for m in data["messages"]} == {"public"}
    assert "status" not in data
    assert data["resolution_summary"] == "The duplicate charge was refunded."


@pytest.mark.parametrize(
    ("owner", "path"),
    [("ada", "/tickets/3"), ("ada", "/api/tickets/3"), ("bob", "/attachments/1"),
     ("bob", "/tickets/1")],
    ids=["page", "json", "attachment", "number-alone"],
)
def test_other_builders_items_are_404(desk: Any, owner: str, path: str) -> None:
    gateway, _ = desk
    base = _latest_link(gateway, f"{owner}@example.com")

    status, _, body = http("GET", base + path)

    assert status == 404
    assert INTERNAL_NOTE.encode() not in body


def test_builder_gets_own_attachment(desk: Any) -> None:
    gateway, _ = desk
    base = _latest_link(gateway, "ada@example.com")

    status, headers, body = http("GET", f"{base}/attachments/1")

    assert status == 200
    assert body.startswith(b"\x89PNG")
    assert headers["Content-Security-Policy"].startswith("sandbox")


def test_link_expires(desk: Any) -> None:
    gateway, _ = desk
    link = _latest_link(gateway, "ada@example.com")
    gateway.clock.advance(days=31)

    status, _, body = http("GET", link)

    assert status == 404
    assert b"expired" in body


def test_revoked_link_is_dead(desk: Any) -> None:
    gateway, _ = desk
    link = _latest_link(gateway, "ada@example.com")

    async def revoke() -> int:
        async with gateway.gateway.store.write() as tx:
            builder = await tx.find_builder("ada@example.com")
            return await tx.revoke_builder_links(builder.id, now=gateway.clock())

    revoked = gateway.call(revoke)
    status, _, _ = http("GET", link)

    assert revoked == len(set(builder_links_in(gateway, "ada@example.com")))
    assert status == 404


@pytest.mark.parametrize(
    "token",
    ["1", "WzEsImFiYyJd", "WzEsImFiYyJd.AAAAAAAAAAAAAAAAAAAAAAAAAAA", "%3Cscript%3E"],
    ids=["number", "unsigned", "bad-signature", "markup"],
)
def test_guessed_tokens_open_nothing(desk: Any, token: str) -> None:
    gateway, _ = desk

    status, _, body = http("GET", f"{gateway.web_url}/b/{token}")

    assert status == 404
    assert b"Ada" not in body


def test_tampered_secret_opens_nothing(desk: Any) -> None:
    gateway, _ = desk
    link = _latest_link(gateway, "ada@example.com")
    payload, _, signature = link.rpartition("/b/")[2].partition(".")
    other_payload = payload[:-3] + ("AAA" if not payload.endswith("AAA") else "BBB")

    status, _, _ = http("GET", f"{gateway.web_url}/b/{other_payload}.{signature}")

    assert status == 404


def test_builder_pages_need_no_staff_token(desk: Any) -> None:
    gateway, _ = desk
    link = _latest_link(gateway, "ada@example.com")

    _, headers, _ = http("GET", link)

    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["X-Robots-Tag"] == "noindex, nofollow"


def test_no_email_carries_internal_notes(desk: Any) -> None:
    gateway, _ = desk

    texts = mail_texts(gateway, "ada@example.com") + mail_texts(gateway, "bob@example.com")

    assert texts
    for text in texts:
        assert INTERNAL_NOTE not in text


def test_builder_templates_ignore_internal_notes(desk: Any) -> None:
    gateway, desk_numbers = desk
    ticket = gateway.ticket(desk_numbers.ada_portal)
    assert any(m.visibility == "internal" for m in ticket.messages)
    environment = make_environment()
    names = sorted(p.name for p in TEMPLATES_DIR.glob("*.*")
                   if p.suffix in (".html", ".txt") and p.name not in STAFF_TEMPLATES)
    context = _rich_context(ticket)

    for name in names:
        rendered = environment.overlay(undefined=ChainableUndefined).get_template(name).render(**context)
        assert INTERNAL_NOTE not in rendered, name

    assert "builder_ticket_page.html" in names
    assert "support_reply.txt" in names


def _rich_context(ticket: Any) -> dict[str, Any]:
    summary = ticket.summary
    return {
        "ticket": ticket,
        "tickets": [ticket],
        "messages": ticket.messages,
        "listing": type("Listing", (), {"tickets": [summary], "total": 1, "open": 1,
                                        "label_counts": {}, "page": 1})(),
        "builder": type("BuilderView", (), {"name": "Ada", "email": "ada@example.com"})(),
        "number": summary.number,
        "title": summary.title,
        "status": summary.status,
        "category": summary.category,
        "severity": summary.severity,
        "builder_name": summary.builder_name,
        "app_name": summary.app_name,
        "text": "Which browser shows the blank page?",
        "author": "grace",
        "pages": 1,
        "base": "/b/token",
        "now": summary.last_activity_at,
        "labels": {},
        "relative_time": lambda moment, now: "just now",
        "is_thumbnail": lambda content_type: False,
        "page_url": lambda number: "",
    }


def test_cli_revokes_builder_links(desk: Any, tmp_path: Any) -> None:
    gateway, _ = desk
    link = _latest_link(gateway, "ada@example.com")
    config_file = tmp_path / "revoke.toml"
    config_file.write_text(f'[database]\nurl = "{gateway.gateway.config.database.url}"\n')

    result = CliRunner().invoke(
        cli, ["--config", str(config_file), "builders", "revoke-links", "Ada@Example.com"]
    )
    status, _, _ = http("GET", link)
    _, _, bob = http("GET", _latest_link(gateway, "bob@example.com"))

    assert result.exit_code == 0, result.output
    assert "revoked 4 link(s) of ada@example.com" in result.output
    assert status == 404
    assert b"Billing page" in bob
