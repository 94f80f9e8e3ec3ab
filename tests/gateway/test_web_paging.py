"""Cursor paging of the status page, /api/tickets and the builder page over real HTTP."""

from __future__ import annotations

import base64
import html
import json
import re
from datetime import datetime, timedelta
from typing import Any

import pytest

import store.paging
from conftest import RunningGateway
from gateway.model import App
from gateway.paging import MAX_CURSOR_LENGTH, Direction, PageCursor, encode_cursor
from web_desk import builder_links_in, compose, http

START = datetime.fromisoformat("2026-11-20T08:00:00+00:00")
# Seconds after START of each ticket's last activity, in the order the tickets
# are opened. Equal values make ties that only the id orders.
ACTIVITY_SECONDS = [0, 60, 60, 60, 120, 180, 180, 240, 300, 300, 300, 300, 360, 420,
                    420, 480, 540, 600, 600, 660, 720, 720, 780]
CATEGORIES = ["bug", "billing"]


def _open_tickets(
    gateway: RunningGateway,
    email: str,
    seconds: list[int],
    categories: list[str] | None = None,
) -> list[int]:
    """Open one ticket per entry of SECONDS for the builder EMAIL; return their numbers."""

    async def work() -> list[int]:
        numbers = []
        async with gateway.gateway.store.write() as tx:
            builder = await tx.find_builder(email)
            assert builder is not None
            for index, offset in enumerate(seconds):
                category = (categories or ["bug"])[index % len(categories or ["bug"])]
                _, number = await tx.create_ticket(
                    builder=builder,
                    title=f"Orders screen shows stale totals, case {index}",
                    description="The totals do not change after a reload.",
                    app=None,
                    category=category,
                    severity="sev3",
                    now=START + timedelta(seconds=offset),
                )
                numbers.append(number)
        return numbers

    return gateway.call(work)


def _newest_first(numbers: list[int], seconds: list[int]) -> list[int]:
    # Ticket ids and numbers both grow in the order the tickets were opened.
    return [n for _, n in sorted(zip(seconds, numbers, strict=True), reverse=True)]


def _get_json(gateway: RunningGateway, path: str) -> Any:
    status, _, body = http("GET", gateway.web_url + path)
    assert status == 200, body
    return json.loads(body)


def _get_page(gateway: RunningGateway, path: str) -> str:
    status, _, body = http("GET", gateway.web_url + path)
    assert status == 200, body
    return body.decode()


def _numbers(page: str) -> list[int]:
    return [int(n) for n in re.findall(r'<tr data-number="(\d+)">', page)]


def _link(page: str, rel: str) -> str | None:
    found = re.search(rf'<a href="([^"]+)" rel="{rel}">', page)
    return html.unescape(found.group(1)) if found else None


def _walk_api(gateway: RunningGateway, path: str) -> list[list[int]]:
    pages: list[list[int]] = []
    listing = _get_json(gateway, path)
    pages.append([t["number"] for t in listing["tickets"]])
    separator = "&" if "?" in path else "?"
    while listing["next"] is not None:
        listing = _get_json(gateway, f"{path}{separator}cursor={listing['next']}")
        assert listing["page"] is None
        pages.append([t["number"] for t in listing["tickets"]])
    return pages


@pytest.fixture
def crowded(gateway: RunningGateway) -> tuple[RunningGateway, list[int]]:
    """A desk of 23 tickets in two categories, several with equal activity times."""
    gateway.add_builder("ada@example.com", name="Ada Lovelace")
    numbers = _open_tickets(gateway, "ada@example.com", ACTIVITY_SECONDS, CATEGORIES)
    return gateway, numbers


def test_cursor_walk_lists_each_ticket_once(crowded: Any) -> None:
    gateway, numbers = crowded

    pages = _walk_api(gateway, "/api/tickets?per_page=5")

    walked = [n for page in pages for n in page]
    assert walked == _newest_first(numbers, ACTIVITY_SECONDS)
    assert len(set(walked)) == len(numbers)
    assert [len(page) for page in pages] == [5, 5, 5, 5, 3]


def test_api_first_page_has_only_next(crowded: Any) -> None:
    gateway, _ = crowded

    listing = _get_json(gateway, "/api/tickets?per_page=5")

    assert listing["page"] == 1
    assert listing["previous"] is None
    assert isinstance(listing["next"], str)
    assert listing["matched"] == 23
    assert listing["matched_exact"] is True


def test_api_previous_returns_earlier_page(crowded: Any) -> None:
    gateway, _ = crowded
    first = _get_json(gateway, "/api/tickets?per_page=5")
    second = _get_json(gateway, f"/api/tickets?per_page=5&cursor={first['next']}")
    third = _get_json(gateway, f"/api/tickets?per_page=5&cursor={second['next']}")

    back_to_second = _get_json(gateway, f"/api/tickets?per_page=5&cursor={third['previous']}")
    back_to_first = _get_json(
        gateway, f"/api/tickets?per_page=5&cursor={back_to_second['previous']}"
    )

    assert back_to_second["tickets"] == second["tickets"]
    assert back_to_second["next"] == second["next"]
    assert back_to_first["tickets"] == first["tickets"]
    assert back_to_first["previous"] is None


def test_api_cursor_walk_keeps_filters(crowded: Any) -> None:
    gateway, numbers = crowded
    billing = [n for i, n in enumerate(numbers) if CATEGORIES[i % 2] == "billing"]
    billing_seconds = [s for i, s in enumerate(ACTIVITY_SECONDS) if CATEGORIES[i % 2] == "billing"]

    pages = _walk_api(gateway, "/api/tickets?category=billing&per_page=2")

    walked = [n for page in pages for n in page]
    assert walked == _newest_first(billing, billing_seconds)
    assert len(pages) == 6


def test_page_number_matches_cursor_page(crowded: Any) -> None:
    gateway, _ = crowded
    first = _get_json(gateway, "/api/tickets?per_page=5")
    by_cursor = _get_json(gateway, f"/api/tickets?per_page=5&cursor={first['next']}")

    by_number = _get_json(gateway, "/api/tickets?per_page=5&page=2")

    assert by_number["tickets"] == by_cursor["tickets"]
    assert by_number["page"] == 2
    assert by_number["next"] == by_cursor["next"]
    assert by_number["previous"] is not None


def test_status_page_links_walk_every_ticket(crowded: Any) -> None:
    gateway, numbers = crowded
    path: str | None = "/?category=billing&per_page=2"
    walked: list[int] = []
    visited = 0

    while path is not None:
        page = _get_page(gateway, path)
        walked.extend(_numbers(page))
        visited += 1
        path = _link(page, "next")
        if path is not None:
            assert path.startswith("/?category=billing&per_page=2&cursor=")

    billing = [n for i, n in enumerate(numbers) if CATEGORIES[i % 2] == "billing"]
    billing_seconds = [s for i, s in enumerate(ACTIVITY_SECONDS) if CATEGORIES[i % 2] == "billing"]
    assert walked == _newest_first(billing, billing_seconds)
    assert visited == 6


def test_status_page_newer_link_returns_page(crowded: Any) -> None:
    gateway, _ = crowded
    first = _get_page(gateway, "/?per_page=5")
    second_path = _link(first, "next")
    assert second_path is not None
    second = _get_page(gateway, second_path)
    third_path = _link(second, "next")
    assert third_path is not None
    third = _get_page(gateway, third_path)

    newer_path = _link(third, "prev")
    assert newer_path is not None
    back = _get_page(gateway, newer_path)

    assert _numbers(back) == _numbers(second)
    assert _link(first, "prev") is None
    assert '<a href="/?per_page=5">Newest</a>' in third


def test_status_page_oldest_link_opens_last_page(crowded: Any) -> None:
    gateway, numbers = crowded
    first = _get_page(gateway, "/?per_page=5")
    found = re.search(r'<a href="([^"]+)">Oldest</a>', first)
    assert found is not None

    oldest = _get_page(gateway, html.unescape(found.group(1)))

    assert _numbers(oldest) == _newest_first(numbers, ACTIVITY_SECONDS)[-5:]
    assert _link(oldest, "next") is None
    assert _link(oldest, "prev") is not None


def test_cursor_survives_moved_tickets(crowded: Any) -> None:
    gateway, numbers = crowded
    order = _newest_first(numbers, ACTIVITY_SECONDS)
    first = _get_json(gateway, "/api/tickets?per_page=5")
    boundary, moved = order[4], order[5]

    # The boundary row of the cursor and the next page's first row both move
    # to the top between the two requests.
    gateway.call(lambda: _touch(gateway, [boundary, moved], START + timedelta(hours=2)))
    second = _get_json(gateway, f"/api/tickets?per_page=5&cursor={first['next']}")

    second_numbers = [t["number"] for t in second["tickets"]]
    assert second_numbers == order[6:11]
    assert len(set(second_numbers)) == 5
    newest = _get_json(gateway, "/api/tickets?per_page=2")
    assert sorted(t["number"] for t in newest["tickets"]) == sorted([boundary, moved])


async def _touch(gateway: RunningGateway, numbers: list[int], moment: datetime) -> None:
    async with gateway.gateway.store.write() as tx:
        for number in numbers:
            state = await tx.lock_ticket(number)
            assert state is not None
            await tx.update_ticket(state.id, now=moment)


def test_empty_page_links_back(crowded: Any) -> None:
    gateway, numbers = crowded
    # In a fresh store each ticket's id equals its number.
    oldest = min(zip(ACTIVITY_SECONDS, numbers, strict=True))
    past_oldest = encode_cursor(
        PageCursor(Direction.OLDER, START + timedelta(seconds=oldest[0]), oldest[1])
    )

    empty = _get_json(gateway, f"/api/tickets?per_page=5&cursor={past_oldest}")
    back = _get_json(gateway, f"/api/tickets?per_page=5&cursor={empty['previous']}")

    assert empty["tickets"] == []
    assert empty["next"] is None
    assert [t["number"] for t in back["tickets"]] == _newest_first(
        numbers, ACTIVITY_SECONDS
    )[-5:]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "not-a-cursor!",
        _b64(b"\xff\xfe"),
        _b64(b"{not json"),
        _b64(b'{"direction": "older"}'),
        _b64(b'["sideways", "2026-11-20T08:00:00+00:00", 4]'),
        _b64(b'["older", "2026-11-20T08:00:00", 4]'),
        _b64(b'["older", "yesterday", 4]'),
        _b64(b'["older", "2026-11-20T08:00:00+00:00", -1]'),
        _b64(b'["older", "2026-11-20T08:00:00+00:00", "4"]'),
        _b64(b'["older", "2026-11-20T08:00:00+00:00", true]'),
        _b64(b'["older", "0001-01-01T00:00:00+05:00", 4]'),
        _b64(b'["older", "2026-11-20T08:00:00+00:00", 2147483648]'),
        "A" * (MAX_CURSOR_LENGTH + 1),
    ],
    ids=["not-base64", "not-utf8", "not-json", "object", "direction", "naive-time",
         "bad-time", "negative-id", "string-id", "bool-id", "time-overflow",
         "id-over-int4", "too-long"],
)
@pytest.mark.parametrize("path", ["/api/tickets", "/"])
def test_invalid_cursor_is_400(gateway: RunningGateway, path: str, cursor: str) -> None:
    status, _, body = http("GET", f"{gateway.web_url}{path}?cursor={cursor}")

    assert status == 400
    assert b"Query parameter cursor is invalid" in body
    assert b"Traceback" not in body


def test_cut_cursor_is_400(crowded: Any) -> None:
    gateway, _ = crowded
    cursor = _get_json(gateway, "/api/tickets?per_page=5")["next"]

    status, _, body = http("GET", f"{gateway.web_url}/api/tickets?cursor={cursor[:-6]}")

    assert status == 400
    assert b"Query parameter cursor is invalid" in body


def test_page_with_cursor_is_400(crowded: Any) -> None:
    gateway, _ = crowded
    cursor = _get_json(gateway, "/api/tickets?per_page=5")["next"]

    status, _, body = http("GET", f"{gateway.web_url}/api/tickets?page=2&cursor={cursor}")

    assert status == 400
    assert b"page and cursor cannot be combined" in body


def test_count_stops_at_limit(crowded: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    gateway, _ = crowded
    monkeypatch.setattr(store.paging, "MATCH_COUNT_LIMIT", 4)

    listing = _get_json(gateway, "/api/tickets?category=bug&per_page=5")
    page = _get_page(gateway, "/?category=bug&per_page=5")

    assert listing["matched"] == 4
    assert listing["matched_exact"] is False
    assert len(listing["tickets"]) == 5
    assert "More than 4 matching tickets" in page


def test_status_filter_counts_exactly(crowded: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    gateway, _ = crowded
    monkeypatch.setattr(store.paging, "MATCH_COUNT_LIMIT", 4)

    listing = _get_json(gateway, "/api/tickets?status=new&per_page=5")

    assert listing["matched"] == 23
    assert listing["matched_exact"] is True


def test_builder_page_cursor_walk(gateway: RunningGateway) -> None:
    gateway.add_builder("ada@example.com", name="Ada Lovelace",
                        apps=(App("Client Portal", "https://portal.example.com"),))
    gateway.add_builder("bob@example.com", name="Bob")
    code, reply = gateway.send(compose(
        "Client Portal shows a blank page after login",
        "After signing in, every user sees a blank page instead of the dashboard.",
    ))
    assert code == 250, reply
    gateway.flush_outbox()
    [link, *_] = builder_links_in(gateway, "ada@example.com")
    base = gateway.web_url + link[link.index("/b/"):]
    seconds = [i // 3 * 60 for i in range(30)]
    numbers = [1, *_open_tickets(gateway, "ada@example.com", seconds)]
    _open_tickets(gateway, "bob@example.com", [5, 65])
    path: str | None = base
    walked: list[int] = []

    while path is not None:
        status, _, body = http("GET", path)
        assert status == 200, body
        page = body.decode()
        walked.extend(_numbers(page))
        older = _link(page, "next")
        path = gateway.web_url + older if older else None

    listing_status, _, body = http("GET", base + "/api/tickets")
    listing = json.loads(body)
    assert listing_status == 200
    assert sorted(walked) == sorted(numbers)
    assert len(walked) == len(numbers) == 31
    # Ticket 1 came by mail at the test clock's time, after all the others.
    assert walked == [1, *_newest_first(numbers[1:], seconds)]
    assert listing["previous"] is None
    second = json.loads(http("GET", f"{base}/api/tickets?cursor={listing['next']}")[2])
    assert [t["number"] for t in second["tickets"]] == walked[25:]
    assert second["next"] is None
    assert second["previous"] is not None


@pytest.mark.parametrize(
    "path",
    ["/api/tickets?page=%C2%B2", "/?per_page=%C2%B2", "/api/tickets?page=" + "9" * 5000,
     "/tickets/%C2%B2", "/api/tickets/%D9%A3", "/attachments/%C2%B2",
     "/attachments/2147483648", "/tickets/" + "1" * 19],
    ids=["superscript-page", "superscript-per-page", "5000-digit-page",
         "superscript-ticket", "arabic-indic-ticket", "superscript-attachment",
         "attachment-over-int4", "19-digit-ticket"],
)
def test_non_ascii_or_huge_number_is_400(gateway: RunningGateway, path: str) -> None:
    status, _, body = http("GET", f"{gateway.web_url}{path}")

    assert status == 400
    assert b"is invalid" in body
    assert b"Traceback" not in body
