"""The status page, the JSON API and /healthz over real HTTP."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from conftest import FakeClock, RunningGateway, make_config, running_gateway, sample
from gateway.config import ConfigError, WebConfig
from gateway.service import Gateway


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read().decode()


def _json(url: str) -> Any:
    status, _, body = _get(url)
    assert status == 200, body
    return json.loads(body)


def test_api_lists_ticket_with_spec_fields(ada: RunningGateway) -> None:
    ada.send(sample("gmail_plain_and_html.eml"))

    listing = _json(f"{ada.web_url}/api/tickets")

    assert listing["total"] == 1
    assert listing["open"] == 1
    [ticket] = listing["tickets"]
    assert ticket["number"] == 1
    assert ticket["title"] == "Client Portal shows a blank page after login"
    assert ticket["status"] == "new"
    assert ticket["status_label"] == "In review"
    assert ticket["category"] == "published_app"
    assert ticket["severity"] == "sev2"
    assert ticket["priority"] == "P2"
    assert ticket["app"] == "Client Portal"
    assert ticket["builder"] == "ada@example.com"
    assert ticket["created_at"].startswith("2026-12-01T09:00")
    assert ticket["last_activity_at"].startswith("2026-12-01T09:00")


def test_api_lists_newest_activity_first(ada: RunningGateway) -> None:
    ada.send(sample("gmail_plain_and_html.eml"))
    ada.clock.advance(minutes=5)
    ada.send(sample("thunderbird.eml"))

    numbers = [t["number"] for t in _json(f"{ada.web_url}/api/tickets")["tickets"]]

    assert numbers == [2, 1]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("severity=sev2", [1]),
        ("severity=sev3", [2]),
        ("category=published_app", [1]),
        ("app=Client+Portal", [1]),
        ("app=Account-level+issue", [2]),
        ("status=In+review", [2, 1]),
        ("status=resolved", []),
        ("builder=ada@example.com", [2, 1]),
        ("builder=bob@example.com", []),
    ],
    ids=["severity", "other-severity", "category", "app", "account-level", "label",
         "status", "builder", "other-builder"],
)
def test_api_filters(ada: RunningGateway, query: str, expected: list[int]) -> None:
    ada.send(sample("gmail_plain_and_html.eml"))
    ada.clock.advance(minutes=1)
    ada.send(sample("thunderbird.eml"))

    listing = _json(f"{ada.web_url}/api/tickets?{query}")

    assert [t["number"] for t in listing["tickets"]] == expected
    assert listing["total"] == 2


def test_api_pages(ada: RunningGateway) -> None:
    ada.send(sample("gmail_plain_and_html.eml"))
    ada.clock.advance(minutes=1)
    ada.send(sample("thunderbird.eml"))

    second = _json(f"{ada.web_url}/api/tickets?per_page=1&page=2")

    assert [t["number"] for t in second["tickets"]] == [1]
    assert second["matched"] == 2


def test_api_rejects_unknown_filter_value(gateway: RunningGateway) -> None:
    status, _, body = _get(f"{gateway.web_url}/api/tickets?severity=sev9")

    assert status == 400
    assert "sev9" in body
    assert "sev1" in body


def test_api_ticket_has_conversation(ada: RunningGateway) -> None:
    ada.send(sample("apple_mail_png.eml"))

    ticket = _json(f"{ada.web_url}/api/tickets/1")

    [message] = ticket["messages"]
    assert message["visibility"] == "public"
    assert message["author"] == "ada@example.com"
    assert message["body"]
    assert message["created_at"]
    assert message["attachments"][0]["content_type"] == "image/png"


def test_api_unknown_ticket_is_404(gateway: RunningGateway) -> None:
    status, _, _ = _get(f"{gateway.web_url}/api/tickets/99")

    assert status == 404


def test_status_page_shows_counts_and_ticket(ada: RunningGateway) -> None:
    ada.send(sample("gmail_plain_and_html.eml"))

    status, headers, html = _get(f"{ada.web_url}/")

    assert status == 200
    assert headers["Content-Type"].startswith("text/html")
    assert 'id="total-count">1<' in html
    assert 'id="open-count">1<' in html
    assert "Client Portal shows a blank page after login" in html
    assert "In review" in html
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"


def test_ticket_page_shows_description(ada: RunningGateway) -> None:
    ada.send(sample("gmail_plain_and_html.eml"))

    status, _, html = _get(f"{ada.web_url}/tickets/1")

    assert status == 200
    assert "#1 Client Portal shows a blank page after login" in html
    assert "Conversation" in html


def test_hostile_title_is_escaped(ada: RunningGateway) -> None:
    raw = sample("thunderbird.eml")
    start = raw.index(b"Subject:")
    end = raw.index(b"\n", start)
    raw = raw[:start] + b"Subject: <script>alert(1)</script> breaks the page" + raw[end:]
    ada.send(raw)

    _, _, html = _get(f"{ada.web_url}/")

    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_healthz_reports_database(gateway: RunningGateway) -> None:
    body = _json(f"{gateway.web_url}/healthz")

    assert body == {"status": "ok", "database": True}


@pytest.fixture
def token_config(tmp_path: Path) -> Any:
    config = make_config(tmp_path)
    return replace(config, web=replace(config.web, access_token="s3cret-token"))


@pytest.fixture
def guarded(token_config: Any, clock: FakeClock) -> Any:
    with running_gateway(token_config, clock) as running:
        yield running


def test_token_is_required_when_set(guarded: RunningGateway) -> None:
    status, headers, _ = _get(f"{guarded.web_url}/api/tickets")

    assert status == 401
    assert headers["WWW-Authenticate"].startswith("Bearer")


def test_bearer_token_opens_api(guarded: RunningGateway) -> None:
    status, _, _ = _get(
        f"{guarded.web_url}/api/tickets", {"Authorization": "Bearer s3cret-token"}
    )

    assert status == 200


def test_wrong_token_is_refused(guarded: RunningGateway) -> None:
    status, _, _ = _get(f"{guarded.web_url}/api/tickets", {"Authorization": "Bearer nope"})

    assert status == 401


def test_serve_refuses_public_host_without_token(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    config = replace(config, web=WebConfig(host="0.0.0.0", port=0))

    with pytest.raises(ConfigError, match="web.access_token"):
        Gateway(config)
