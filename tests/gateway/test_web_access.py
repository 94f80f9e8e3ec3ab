"""Login form, session cookie, failed-login limit and access rules over real HTTP."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from conftest import FakeClock, RunningGateway, make_config, running_gateway
from gateway.web_access import MAX_LOGIN_FAILURES
from web_desk import http

TOKEN = "s3cret-token-for-tests"


@pytest.fixture
def guarded(tmp_path: Path, clock: FakeClock) -> Any:
    config = make_config(tmp_path)
    config = replace(config, web=replace(config.web, access_token=TOKEN))
    with running_gateway(config, clock) as running:
        yield running


def _login(gateway: RunningGateway, token: str, next_path: str = "/") -> tuple[int, Any, bytes]:
    form = urlencode({"token": token, "next": next_path}).encode()
    return http("POST", f"{gateway.web_url}/login", data=form,
                headers={"Content-Type": "application/x-www-form-urlencoded"})


def _cookie(headers: Any) -> str:
    return headers["Set-Cookie"].split(";", 1)[0]


def test_browser_is_sent_to_login(guarded: RunningGateway) -> None:
    status, headers, _ = http("GET", f"{guarded.web_url}/tickets/1?x=1",
                              headers={"Accept": "text/html"})

    location = urlsplit(headers["Location"])
    assert status == 303
    assert location.path == "/login"
    assert parse_qs(location.query) == {"next": ["/tickets/1?x=1"]}


def test_login_sets_strict_http_only_cookie(guarded: RunningGateway) -> None:
    status, headers, _ = _login(guarded, TOKEN, "/tickets/1")

    cookie = headers["Set-Cookie"]
    assert status == 303
    assert headers["Location"] == "/tickets/1"
    assert cookie.startswith("gateway_session=")
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    assert "Path=/" in cookie
    assert TOKEN not in cookie


def test_cookie_opens_status_page(guarded: RunningGateway) -> None:
    _, headers, _ = _login(guarded, TOKEN)

    status, _, body = http("GET", f"{guarded.web_url}/", headers={"Cookie": _cookie(headers)})

    assert status == 200
    assert b"Sign out" in body


def test_tampered_cookie_is_refused(guarded: RunningGateway) -> None:
    _, headers, _ = _login(guarded, TOKEN)
    cookie = _cookie(headers)
    tampered = cookie[:-2] + ("AA" if not cookie.endswith("AA") else "BB")

    status, _, _ = http("GET", f"{guarded.web_url}/api/tickets", headers={"Cookie": tampered})

    assert status == 401


def test_wrong_token_fails_login(guarded: RunningGateway) -> None:
    status, headers, body = _login(guarded, "guess")

    assert status == 401
    assert "Set-Cookie" not in headers
    assert b"not valid" in body


def test_repeated_failures_are_rate_limited(guarded: RunningGateway) -> None:
    for _ in range(MAX_LOGIN_FAILURES):
        _login(guarded, "guess")

    status, headers, _ = _login(guarded, TOKEN)

    assert status == 429
    assert headers["Retry-After"] == "900"
    assert "Set-Cookie" not in headers


def test_rate_limit_ends_after_window(guarded: RunningGateway) -> None:
    for _ in range(MAX_LOGIN_FAILURES):
        _login(guarded, "guess")
    guarded.clock.advance(minutes=16)

    status, _, _ = _login(guarded, TOKEN)

    assert status == 303


@pytest.mark.parametrize(
    "target",
    ["https://evil.example.com/", "//evil.example.com/", "/\\evil.example.com"],
    ids=["absolute", "scheme-relative", "backslash"],
)
def test_login_never_redirects_offsite(guarded: RunningGateway, target: str) -> None:
    _, headers, _ = _login(guarded, TOKEN, target)

    assert headers["Location"] == "/"


def test_logout_clears_cookie(guarded: RunningGateway) -> None:
    status, headers, _ = http("POST", f"{guarded.web_url}/logout", data=b"")

    assert status == 303
    assert headers["Set-Cookie"].startswith('gateway_session=""')


def test_metrics_need_token(guarded: RunningGateway) -> None:
    refused, _, _ = http("GET", f"{guarded.web_url}/metrics")
    allowed, _, _ = http("GET", f"{guarded.web_url}/metrics",
                         headers={"Authorization": f"Bearer {TOKEN}"})

    assert refused == 401
    assert allowed == 200


@pytest.mark.parametrize("path", ["/", "/tickets/1", "/api/tickets/1", "/attachments/1"])
def test_ticket_data_needs_token(guarded: RunningGateway, path: str) -> None:
    status, _, body = http("GET", guarded.web_url + path)

    assert status == 401
    assert body == b"A valid access token is required.\n"


def test_healthz_is_open(guarded: RunningGateway) -> None:
    status, _, _ = http("GET", f"{guarded.web_url}/healthz")

    assert status == 200


def test_login_not_needed_without_token(gateway: RunningGateway) -> None:
    status, headers, _ = http("GET", f"{gateway.web_url}/login?next=/tickets/1")

    assert status == 303
    assert headers["Location"] == "/tickets/1"
