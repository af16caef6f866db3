"""The dashboard `/`: order, filters and paging in the URL, counts per team, charts, and the CSV export."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import AsyncIterator
from datetime import datetime, time, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
import pytest_asyncio

from activities.calendar import WorkingCalendar
from models.policy import load_policy
from tests.web.conftest import Page, Web, closed_row, now_utc, queue_row
from web.working_time import WorkingAge

TEAMS = ["front_door", "early_help", "social_care", "other_agency"]
FORCES = ["Northamptonshire Police", "Cumbria Constabulary"]
RISKS = ["red", "amber", "green"]
CALENDAR = WorkingCalendar(load_policy().calendar)


def _rows(now: datetime) -> list[dict[str, Any]]:
    rows = []
    for n in range(130):
        overdue = n % 3 == 0
        rows.append(
            queue_row(
                n,
                now=now,
                team=TEAMS[n % 4],
                force=FORCES[(n // 4) % 2],
                risk=RISKS[(n // 8) % 3],
                due_in=timedelta(hours=-(n + 1) if overdue else n + 1),
                received_ago=timedelta(hours=n, minutes=17),
                level=n % 3,
            )
        )
    return rows


@pytest_asyncio.fixture(scope="class")
async def queue(web: Web) -> AsyncIterator[list[dict[str, Any]]]:
    """130 open referrals (a third of them overdue) and 5 closed ones."""
    now = now_utc()
    rows = _rows(now)
    await web.insert_referrals(rows + [closed_row(n, now=now) for n in range(5)])
    yield rows


def expected(rows: list[dict[str, Any]], **filters: str) -> list[dict[str, Any]]:
    """The rows the dashboard should list for these filters, most urgent first."""
    now = now_utc()
    chosen = [
        r
        for r in rows
        if (not filters.get("team") or r["awaiting_team"] == filters["team"])
        and (not filters.get("force") or r["force"] == filters["force"])
        and (not filters.get("rag") or r["risk"] == filters["rag"])
        and (not filters.get("overdue") or r["due_at"] < now)
    ]
    return sorted(chosen, key=lambda r: (r["due_at"], r["id"]))


def table(html: str) -> list[dict[str, Any]]:
    """The referral rows of the dashboard table."""
    return Page(html).with_attr("data-referral-id")


@pytest.fixture
async def manager(web: Web) -> AsyncIterator[httpx.AsyncClient]:
    """A signed-in manager."""
    async with web.browser("manager") as http:
        yield http


@pytest.mark.usefixtures("queue")
class TestDashboard:
    """Open referrals most urgent first, filterable and paged in the URL."""

    async def test_first_page_most_urgent_first(
        self, manager: httpx.AsyncClient, queue: list[dict[str, Any]]
    ) -> None:
        response = await manager.get("/")
        assert response.status_code == 200
        page = Page(response.text)
        assert page.title == "Dashboard \u2013 Referral tracker" and page.h1 == ["Open referrals"]
        rows = table(response.text)
        want = expected(queue)
        assert [r["attrs"]["data-referral-id"] for r in rows] == [r["id"] for r in want[:50]]
        flags = [r["attrs"]["data-overdue"] for r in rows]
        assert flags[0] == "true" and flags == sorted(flags, reverse=True)  # overdue first
        first = rows[0]
        assert first["cells"][6] == "Overdue"  # in words, not only in colour
        assert "app-queue__row--overdue" in first["attrs"]["class"]
        assert first["cells"][0] == want[0]["reference"]
        assert first["cells"][2] == want[0]["risk"].capitalize()
        assert first["cells"][7] == str(want[0]["escalation_level"])
        assert re.fullmatch(r"\d+ (working days?( \d+ h)?|h|min)", first["cells"][5]), first["cells"][5]
        assert re.fullmatch(r"\d{1,2} \w{3} \d{4} \d{1,2}:\d{2}(am|pm)", first["cells"][4]), first["cells"][4]
        assert "Showing 1 to 50 of 130 open referrals." in " ".join(response.text.split())

    async def test_filters_narrow_the_table_and_stay_in_the_url(
        self, manager: httpx.AsyncClient, queue: list[dict[str, Any]]
    ) -> None:
        filters = {"team": "early_help", "rag": "amber", "overdue": "1"}
        response = await manager.get("/", params=filters)
        rows = table(response.text)
        want = expected(queue, **filters)
        assert 0 < len(want) < 50
        assert [r["attrs"]["data-referral-id"] for r in rows] == [r["id"] for r in want]
        assert all(r["attrs"]["data-team"] == "early_help" for r in rows)
        assert all(r["attrs"]["data-rag"] == "amber" and r["attrs"]["data-overdue"] == "true" for r in rows)
        # The form shows the filters it applied, and the export keeps them.
        assert '<option value="early_help" selected>' in response.text
        assert '<option value="amber" selected>' in response.text
        assert re.search(r'name="overdue" type="checkbox" value="1" checked', response.text)
        assert 'href="/referrals.csv?team=early_help&amp;rag=amber&amp;overdue=1"' in response.text
        force = await manager.get("/", params={"force": FORCES[1], "team": "front_door"})
        want = expected(queue, force=FORCES[1], team="front_door")
        assert [r["attrs"]["data-referral-id"] for r in table(force.text)] == [r["id"] for r in want]

    async def test_paging_keeps_the_filters(
        self, manager: httpx.AsyncClient, queue: list[dict[str, Any]]
    ) -> None:
        want = expected(queue, force=FORCES[0])
        assert 50 < len(want) < 100
        first = await manager.get("/", params={"force": FORCES[0]})
        assert len(table(first.text)) == 50
        links = re.findall(r'href="([^"]*page=2[^"]*)"', first.text)
        assert links, "no link to page 2"
        url = links[0].replace("&amp;", "&")
        assert dict(parse_qsl(urlsplit(url).query)) == {"force": FORCES[0], "page": "2"}
        second = await manager.get(url)
        assert [r["attrs"]["data-referral-id"] for r in table(second.text)] == [r["id"] for r in want[50:]]
        shown = f"Showing 51 to {len(want)} of {len(want)} open referrals matching the filters."
        assert shown in " ".join(second.text.split())
        previous = re.search(r'href="([^"]*)" rel="prev"', second.text)
        assert previous and previous.group(1) == "/?force=Northamptonshire+Police"
        beyond = await manager.get("/", params={"force": FORCES[0], "page": "99"})
        assert [r["attrs"]["data-referral-id"] for r in table(beyond.text)] == [r["id"] for r in want[50:]]
        third = await manager.get("/", params={"page": "3"})
        assert [r["attrs"]["data-referral-id"] for r in table(third.text)] == [
            r["id"] for r in expected(queue)[100:]
        ]

    async def test_values_it_does_not_know_are_ignored(self, manager: httpx.AsyncClient) -> None:
        plain = await manager.get("/")
        odd = await manager.get(
            "/", params={"team": "nope", "rag": "purple", "page": "abc", "overdue": "maybe"}
        )
        assert odd.status_code == 200
        assert [r["attrs"]["data-referral-id"] for r in table(odd.text)] == [
            r["attrs"]["data-referral-id"] for r in table(plain.text)
        ]
        nobody = await manager.get("/", params={"force": "No Such Force"})
        assert nobody.status_code == 200 and table(nobody.text) == []
        assert "No open referrals match the filters." in " ".join(nobody.text.split())

    async def test_csv_is_exactly_what_the_filters_show(
        self, manager: httpx.AsyncClient, queue: list[dict[str, Any]]
    ) -> None:
        filters = {"force": FORCES[0], "rag": "amber"}
        response = await manager.get("/referrals.csv", params=filters)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/csv")
        assert response.headers["content-disposition"].startswith('attachment; filename="open-referrals-')
        lines = list(csv.reader(io.StringIO(response.text)))
        assert lines[0] == [
            "Reference",
            "Force",
            "RAG",
            "Awaiting",
            "Due",
            "Age",
            "Overdue",
            "Escalation level",
        ]
        want = expected(queue, **filters)
        assert [line[0] for line in lines[1:]] == [r["reference"] for r in want]
        shown = table((await manager.get("/", params=filters)).text)
        assert [r["cells"] for r in shown] == lines[1 : len(shown) + 1]
        everything = list(csv.reader(io.StringIO((await manager.get("/referrals.csv")).text)))
        assert len(everything) == 1 + 130  # every page, never a closed referral

    async def test_counts_per_team_with_the_share_overdue(
        self, manager: httpx.AsyncClient, queue: list[dict[str, Any]]
    ) -> None:
        page = Page((await manager.get("/")).text)
        now = now_utc()
        for element in page.with_attr("data-team-count"):
            team = element["attrs"]["data-team-count"]
            mine = [r for r in queue if r["awaiting_team"] == team]
            late = [r for r in mine if r["due_at"] < now]
            assert element["attrs"]["data-open"] == str(len(mine))
            assert element["attrs"]["data-overdue"] == str(len(late))
            assert element["cells"][-1] == f"{round(100 * len(late) / len(mine))}%"
        totals = page.with_attr("data-open")[0]["attrs"]
        assert totals["data-open"] == "130" and totals["data-overdue"] == str(
            sum(r["due_at"] < now for r in queue)
        )

    async def test_charts_are_inline_svg_with_the_same_numbers_as_a_table(
        self, manager: httpx.AsyncClient, queue: list[dict[str, Any]]
    ) -> None:
        before = _bands(queue)
        html = (await manager.get("/")).text
        after = _bands(queue)
        svgs = re.findall(r"<svg\b.*?</svg>", html, flags=re.DOTALL)
        charts = [s for s in svgs if 'role="img"' in s]
        assert len(charts) == 2
        for svg in charts:
            assert "<script" not in svg and 'xlink:href="http' not in svg
            labelled = re.search(r'aria-labelledby="([^"]+)"', svg)
            assert labelled and f'<title id="{labelled.group(1)}">' in svg
        assert "<?xml" not in html
        hidden = re.findall(
            r'<table class="govuk-table govuk-visually-hidden">.*?</table>', html, flags=re.DOTALL
        )
        assert len(hidden) == 2
        ages = [int(n) for n in re.findall(r"<td>(\d+)</td>", hidden[0])]
        weeks = [int(n) for n in re.findall(r"<td>(\d+)</td>", hidden[1])]
        assert sum(ages) == sum(weeks) == 130
        assert ages in (before[0], after[0])
        assert weeks in (before[1], after[1])
        assert "Under 1 day" in hidden[0] and "Earlier" in hidden[1]


def _bands(rows: list[dict[str, Any]]) -> tuple[list[int], list[int]]:
    """Age bands (<1, 1-2, 2-5, 5+ working days) and weeks received (oldest first, "Earlier" first)."""
    now = now_utc()
    ages = WorkingAge(CALENDAR, now)
    day = CALENDAR.working_day_seconds
    bands = [0, 0, 0, 0]
    for r in rows:
        days = ages.seconds_since(r["received_at"]) / day
        bands[0 if days < 1 else 1 if days < 2 else 2 if days < 5 else 3] += 1
    today = now.astimezone(CALENDAR.zone).date()
    monday = today - timedelta(days=today.weekday())
    starts = [datetime.combine(monday - timedelta(weeks=n), time(0), tzinfo=CALENDAR.zone) for n in range(8)]
    weeks = [0] * 9  # Earlier, then 8 weeks oldest first
    for r in rows:
        index = next((n for n, start in enumerate(starts) if r["received_at"] >= start), None)
        weeks[0 if index is None else 8 - index] += 1
    return bands, weeks
