"""Status page, ticket page, attachments, headers and /metrics over real HTTP."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from jinja2 import Template
from sqlalchemy import event
from sqlalchemy.engine import make_url

from conftest import DIALECT, RunningGateway
from gateway.notices import TEMPLATES_DIR, make_environment
from store.database import create_engine
from web_desk import INTERNAL_NOTE, Desk, active_content, http, seed_desk


@pytest.fixture
def desk(gateway: RunningGateway) -> tuple[RunningGateway, Desk]:
    return gateway, seed_desk(gateway)


def _page(gateway: RunningGateway, path: str) -> str:
    status, _, body = http("GET", gateway.web_url + path)
    assert status == 200, body
    return body.decode()


def _numbers(page: str) -> list[int]:
    return [int(n) for n in re.findall(r'<tr data-number="(\d+)">', page)]


def test_every_html_template_autoescapes() -> None:
    environment = make_environment()
    names = sorted(p.name for p in TEMPLATES_DIR.glob("*.html"))

    for name in names:
        template = environment.get_template(name)
        assert isinstance(template, Template)
        assert environment.autoescape(name) is True, name

    assert "status_page.html" in names
    assert "builder_page.html" in names


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", [3, 1, 2]),
        ("?status=Waiting+on+you", [1]),
        ("?status=resolved", [3]),
        ("?status=unfinished", [1, 2]),
        ("?status=open", []),
        ("?category=billing", [3]),
        ("?severity=sev2", [1]),
        ("?app=Client+Portal", [1]),
        ("?builder=bob@example.com", [3]),
        ("?builder=ada@example.com&status=In+review", [2]),
    ],
    ids=["all", "label", "status", "unfinished", "internal-open", "category", "severity",
         "app", "builder", "combined"],
)
def test_status_page_filters(desk: Any, query: str, expected: list[int]) -> None:
    gateway, _ = desk

    page = _page(gateway, "/" + query)

    assert _numbers(page) == expected


def test_filters_stay_in_page_links(desk: Any) -> None:
    gateway, _ = desk

    page = _page(gateway, "/?builder=ada@example.com&per_page=1")

    assert 'href="/?builder=ada%40example.com&amp;per_page=1&amp;cursor=' in page
    assert 'value="ada@example.com"' in page
    assert "Page 1 of 2" in page


def test_status_page_shows_label_counts(desk: Any) -> None:
    gateway, _ = desk

    page = _page(gateway, "/")

    assert 'id="total-count">3<' in page
    assert 'id="open-count">2<' in page
    assert 'title="Support needs more information from you."><span class="count">1</span> Waiting on you' in page


def test_status_page_shows_relative_time(desk: Any) -> None:
    gateway, _ = desk
    gateway.clock.advance(hours=3)

    page = _page(gateway, "/")

    assert "3 hours ago" in page


def test_ticket_page_marks_internal_notes(desk: Any) -> None:
    gateway, _ = desk

    page = _page(gateway, "/tickets/1")

    assert INTERNAL_NOTE in page
    assert "Internal note &middot; not visible to the builder" in page
    assert 'class="badge system"' in page
    assert "waiting_on_builder" in page


def test_ticket_page_shows_inbound_outcome(desk: Any) -> None:
    gateway, _ = desk

    page = _page(gateway, "/tickets/1")

    assert '<span class="outcome">ticket_created</span>' in page


def test_ticket_page_thumbnails_only_raster(desk: Any) -> None:
    gateway, _ = desk

    first = _page(gateway, "/tickets/1")
    hostile = _page(gateway, "/tickets/2")

    assert '<img src="/attachments/1"' in first
    assert '<img src="/attachments/2"' not in first
    assert 'download="invoice.pdf"' in first
    assert "<img" not in hostile


def test_hostile_text_renders_as_text(desk: Any) -> None:
    gateway, _ = desk

    pages = [_page(gateway, "/"), _page(gateway, "/tickets/2"), _page(gateway, "/tickets/3")]

    for page in pages:
        assert active_content(page) == []
    assert "&lt;script&gt;document.title=&#34;pwned&#34;&lt;/script&gt;" in pages[1]
    assert "&lt;img src=x onerror=alert(1)&gt; fails" in pages[1]
    assert "&lt;a href=&#34;javascript:alert(4)&#34;&gt;here&lt;/a&gt;" in pages[1]
    assert "&lt;img src=x onerror=&#34;alert(2)&#34;&gt;Mallory" in pages[0]
    assert "&#34;&gt;&lt;img src=x onerror=alert(3)&gt;.svg" in pages[1]


@pytest.mark.parametrize("path", ["/", "/tickets/1", "/api/tickets", "/login", "/metrics"])
def test_responses_carry_security_headers(desk: Any, path: str) -> None:
    gateway, _ = desk

    _, headers, _ = http("GET", gateway.web_url + path)

    csp = headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp
    assert "frame-ancestors 'none'" in csp
    assert "script-src" not in csp
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["Cache-Control"] == "no-store"


def test_png_attachment_served_inline(desk: Any) -> None:
    gateway, _ = desk

    status, headers, body = http("GET", gateway.web_url + "/attachments/1")

    assert status == 200
    assert body.startswith(b"\x89PNG")
    assert headers["Content-Type"] == "image/png"
    assert headers["Content-Disposition"].startswith("inline;")
    assert headers["Content-Security-Policy"].startswith("sandbox")
    assert headers["X-Content-Type-Options"] == "nosniff"


def test_pdf_attachment_is_download(desk: Any) -> None:
    gateway, _ = desk

    _, headers, _ = http("GET", gateway.web_url + "/attachments/2")

    assert headers["Content-Type"] == "application/pdf"
    assert headers["Content-Disposition"].startswith('attachment; filename="invoice.pdf"')
    assert headers["Content-Security-Policy"].startswith("sandbox")


def test_svg_attachment_is_always_download(desk: Any) -> None:
    gateway, _ = desk

    _, headers, body = http("GET", gateway.web_url + "/attachments/3")

    assert b"<script>" in body
    assert headers["Content-Type"] == "image/svg+xml"
    assert headers["Content-Disposition"].startswith("attachment;")
    assert 'filename="___img src_x onerror_alert_3__.svg"' in headers["Content-Disposition"]
    assert "filename*=UTF-8''%22%3E%3Cimg%20src%3Dx" in headers["Content-Disposition"]
    assert headers["Content-Security-Policy"].startswith("sandbox")


def test_unknown_attachment_is_404(desk: Any) -> None:
    gateway, _ = desk

    status, _, _ = http("GET", gateway.web_url + "/attachments/999")

    assert status == 404


def test_metrics_count_from_database(desk: Any) -> None:
    gateway, _ = desk

    status, headers, body = http("GET", gateway.web_url + "/metrics")

    text = body.decode()
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert 'support_gateway_inbound_messages_total{outcome="ticket_created"} 3.0' in text
    assert 'support_gateway_tickets{status="resolved"} 1.0' in text
    assert 'support_gateway_tickets{status="waiting_on_builder"} 1.0' in text
    assert "support_gateway_outbox_depth 0.0" in text
    assert "support_gateway_outbox_failed 0.0" in text


def test_metrics_show_queued_mail(desk: Any) -> None:
    gateway, _ = desk
    support = gateway.gateway.support_desk
    assert support is not None
    gateway.call(lambda: support.reply(2, "Which page shows the error?", author="grace"))

    _, _, body = http("GET", gateway.web_url + "/metrics")

    assert "support_gateway_outbox_depth 1.0" in body.decode()


def test_healthz_fails_without_database(gateway: RunningGateway, tmp_path: Path) -> None:
    store = gateway.gateway.store
    gateway.call(store.close)
    if DIALECT == "postgresql":
        # Point the store at a database that does not exist on the same server.
        missing = make_url(store.url).set(database="gateway_no_such_database")
        store._engine = create_engine(missing.render_as_string(hide_password=False))
    else:
        for path in tmp_path.glob("gateway.db*"):
            path.unlink()
        (tmp_path / "gateway.db").mkdir()

    status, _, body = http("GET", gateway.web_url + "/healthz")

    assert status == 503
    assert json.loads(body) == {"status": "unavailable", "database": False}


def test_list_queries_do_not_grow_with_page(desk: Any) -> None:
    gateway, _ = desk
    statements: list[str] = []
    engine = gateway.gateway.store._engine.sync_engine

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    counts = gateway.gateway.store._counts
    try:
        counts.clear()
        _page(gateway, "/?per_page=1")
        one = len(statements)
        statements.clear()
        counts.clear()
        _page(gateway, "/?per_page=50")
        fifty = len(statements)
    finally:
        event.remove(engine, "before_cursor_execute", count)

    assert one == fifty
    assert fifty <= 4
