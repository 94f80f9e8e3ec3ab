"""End-to-end checks of the status page in a real headless Chromium.

These tests drive the system's Chromium (/usr/bin/chromium, installed by
.ci/run) through Playwright. They never download a browser; without Chromium
or the playwright package they are skipped with the reason.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from conftest import FakeClock, RunningGateway, make_config, running_gateway
from web_desk import HOSTILE_TITLE, builder_links_in, seed_desk

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
TOKEN = "browser-test-token"

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed; run `make test` to set it up"
)
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists() and shutil.which("chromium") is None,
    reason=f"{CHROMIUM} is missing; install the chromium package (.ci/run does)",
)


@pytest.fixture
def desk(tmp_path: Path, clock: FakeClock) -> Iterator[RunningGateway]:
    config = make_config(tmp_path)
    config = replace(config, web=replace(config.web, access_token=TOKEN))
    with running_gateway(config, clock) as running:
        seed_desk(running)
        yield running


@pytest.fixture
def page() -> Iterator[Any]:
    executable = str(CHROMIUM) if CHROMIUM.exists() else shutil.which("chromium")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        opened = context.new_page()
        dialogs: list[str] = []
        opened.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        opened.dialogs = dialogs
        try:
            yield opened
        finally:
            context.close()
            browser.close()


def _log_in(page: Any, gateway: RunningGateway) -> None:
    page.goto(f"{gateway.web_url}/")
    assert page.url.startswith(f"{gateway.web_url}/login")
    page.fill("input[name=token]", TOKEN)
    page.click("button[type=submit]")
    page.wait_for_url(f"{gateway.web_url}/")


def _row_numbers(page: Any) -> list[str]:
    return page.locator("tbody tr[data-number]").evaluate_all(
        "rows => rows.map(r => r.dataset.number)"
    )


def test_login_filter_and_open_ticket(desk: RunningGateway, page: Any) -> None:
    _log_in(page, desk)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "status-list.png"), full_page=True)

    page.select_option("#filter-category", "billing")
    page.click("form.filters button[type=submit]")
    page.wait_for_url("**/?*category=billing*")
    filtered = _row_numbers(page)
    page.click("a.title")
    page.wait_for_url("**/tickets/3")
    page.screenshot(path=str(ARTIFACTS / "status-ticket.png"), full_page=True)

    assert filtered == ["3"]
    assert page.locator("#ticket-title").inner_text().startswith("#3 Billing page")
    assert page.locator(".badge.internal").count() == 1


def test_wrong_token_stays_on_login(desk: RunningGateway, page: Any) -> None:
    page.goto(f"{desk.web_url}/login")
    page.fill("input[name=token]", "not-the-token")
    page.click("button[type=submit]")

    assert page.locator(".error").inner_text().startswith("That access token is not valid")
    assert page.context.cookies() == []


def test_hostile_title_stays_text(desk: RunningGateway, page: Any) -> None:
    _log_in(page, desk)

    page.goto(f"{desk.web_url}/tickets/2")

    assert page.locator("#ticket-title").inner_text() == f"#2 {HOSTILE_TITLE}"
    assert page.locator("main script").count() == 0
    assert page.locator("main img[onerror]").count() == 0
    assert page.dialogs == []
    # The hostile script would set the whole title to "pwned".
    assert page.title() == f"#2 {HOSTILE_TITLE} · Support desk"


def test_builder_link_shows_own_tickets(desk: RunningGateway, page: Any) -> None:
    link = builder_links_in(desk, "bob@example.com")[-1]
    local = desk.web_url + link[link.index("/b/"):]

    page.goto(local)
    numbers = _row_numbers(page)
    page.click("a.title")

    assert numbers == ["3"]
    assert "refunded" in page.locator(".resolution").inner_text()
    assert page.locator(".badge.internal").count() == 0
    assert "INTERNAL-ONLY" not in page.content()


def test_pager_links_walk_pages(desk: RunningGateway, page: Any) -> None:
    _log_in(page, desk)
    page.goto(f"{desk.web_url}/?per_page=1")
    first = _row_numbers(page)

    page.click("nav.pager a[rel=next]")
    page.wait_for_url("**/?per_page=1&cursor=*")
    second = _row_numbers(page)
    page.click("nav.pager a[rel=next]")
    page.wait_for_url("**/?per_page=1&cursor=*")
    third = _row_numbers(page)
    older_links = page.locator("nav.pager a[rel=next]").count()
    page.click("nav.pager a[rel=prev]")
    page.wait_for_url("**/?per_page=1&cursor=*")
    back = _row_numbers(page)

    assert first == ["3"]
    assert second == ["1"]
    assert third == ["2"]
    assert older_links == 0
    assert back == second
