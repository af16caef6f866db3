"""GET one referral, its chronology (JSON and CSV) and the filtered, paged list."""

from __future__ import annotations

import asyncio
import base64
import csv
import io
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
import pytest_asyncio

from api import CSV_COLUMNS
from models.policy import default_policy_text
from tests.api.conftest import Api, referral_body
from tests.api.test_api_intake import REFERRALS, assert_error, aware

UNKNOWN_ID = "0123456789abcdef0123456789abcdef"


class TestGetReferral:
    """The referral with hand-offs, events and details; scoped by force for police."""

    async def test_one_referral_with_handoffs_events_and_details(self, api: Api) -> None:
        body = referral_body()
        created = await api.submit(body)
        response = await api.get(f"{REFERRALS}/{created['id']}", "front_door")
        assert response.status_code == 200, response.text
        data = response.json()
        assert data["id"] == created["id"] and data["reference"] == created["reference"]
        assert data["status"] == "awaiting_decision" and data["awaiting_team"] == "front_door"
        assert aware(data["due_at"]) == aware(created["due_at"])
        assert data["overdue"] is False and data["escalation_level"] == 0
        assert [(h["seq"], h["team"]) for h in data["handoffs"]] == [(1, "front_door")]
        assert [e["type"] for e in data["events"]] == ["received", "handoff_opened"]
        assert [e["seq"] for e in data["events"]] == [1, 2]
        assert data["events"][0]["actor"]["role"] == "police"
        assert data["events"][1]["team"] == "front_door" and data["events"][1]["handoff_seq"] == 1
        assert data["details"]["children"][0]["family_name"] == body["children"][0]["family_name"]
        assert data["details"]["referrer"]["email"] == body["referrer"]["email"]

    async def test_events_follow_a_decision(self, api: Api) -> None:
        created = await api.submit()
        await api.decide(created["id"])
        data = (await api.get(f"{REFERRALS}/{created['id']}", "early_help")).json()
        types = [e["type"] for e in data["events"]]
        assert types[:4] == ["received", "handoff_opened", "decided", "handoff_opened"], types
        assert data["events"][2]["data"]["outcome"] == "early_help"
        assert data["events"][2]["actor"]["role"] == "front_door"
        assert [h["team"] for h in data["handoffs"]] == ["front_door", "early_help"]
        assert data["handoffs"][0]["result"] == "early_help" and data["handoffs"][0]["closed_at"]

    async def test_police_of_another_force_may_not_read(self, api: Api) -> None:
        created = await api.submit()
        assert_error(await api.get(f"{REFERRALS}/{created['id']}", "police_other"), 403, "forbidden")

    @pytest.mark.parametrize(
        "referral_id", [UNKNOWN_ID, "nope", "%00", "0123456789ABCDEF0123456789ABCDEF", "x" * 300]
    )
    async def test_unknown_id_is_404(self, api: Api, referral_id: str) -> None:
        for who in ("front_door", "police"):
            assert_error(await api.get(f"{REFERRALS}/{referral_id}", who), 404, "not_found")


class TestChronology:
    """Every event in seq order, as JSON or as a spreadsheet; scoped like GET."""

    async def test_json_events_in_order(self, api: Api) -> None:
        created = await api.submit()
        await api.decide(created["id"])
        response = await api.get(f"{REFERRALS}/{created['id']}/chronology", "manager")
        assert response.status_code == 200, response.text
        events = response.json()["events"]
        assert set(response.json()) == {"events", "access"}
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        assert [e["type"] for e in events][:4] == ["received", "handoff_opened", "decided", "handoff_opened"]
        instants = [aware(e["at"]) for e in events]
        assert instants == sorted(instants)

    async def test_csv_has_a_header_and_a_row_per_event(self, api: Api) -> None:
        created = await api.submit()
        events = (await api.get(f"{REFERRALS}/{created['id']}/chronology", "front_door")).json()["events"]
        response = await api.get(
            f"{REFERRALS}/{created['id']}/chronology", "front_door", params={"format": "csv"}
        )
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/csv")
        assert created["reference"] in response.headers["content-disposition"]
        rows = list(csv.reader(io.StringIO(response.text)))
        assert rows[0] == CSV_COLUMNS
        assert len(rows) == 1 + len(events) == 3
        assert [int(r[0]) for r in rows[1:]] == [e["seq"] for e in events]
        assert [r[2] for r in rows[1:]] == ["received", "handoff_opened"]
        assert rows[2][3] == "front_door" and rows[1][6] == "police"

    async def test_json_format_is_the_default(self, api: Api) -> None:
        created = await api.submit()
        explicit = await api.get(
            f"{REFERRALS}/{created['id']}/chronology", "police", params={"format": "json"}
        )
        assert explicit.status_code == 200
        assert [e["type"] for e in explicit.json()["events"]] == ["received", "handoff_opened"]

    @pytest.mark.parametrize("fmt", ["xml", "CSV", ""])
    async def test_bad_format_is_422(self, api: Api, fmt: str) -> None:
        created = await api.submit()
        response = await api.get(f"{REFERRALS}/{created['id']}/chronology", "police", params={"format": fmt})
        assert set(assert_error(response, 422, "invalid")["fields"]) == {"format"}

    async def test_scoped_like_get(self, api: Api) -> None:
        created = await api.submit()
        path = f"{REFERRALS}/{created['id']}/chronology"
        assert_error(await api.get(path, "police_other"), 403, "forbidden")
        assert_error(await api.get(path, "police_other", params={"format": "csv"}), 403, "forbidden")
        assert (await api.get(path, "police")).status_code == 200
        assert_error(await api.get(path, "admin"), 403, "forbidden")
        assert_error(await api.get(f"{REFERRALS}/{UNKNOWN_ID}/chronology", "police"), 404, "not_found")


# The default policy with elapsed front-door clocks: a red referral is overdue after a second,
# and amber ones fall due before green ones whatever the hour of the day.
LIST_POLICY = default_policy_text().replace(
    'due = { red = "4 working hours", amber = "1 working day", green = "1 working day" }',
    'due = { red = "PT1S", amber = "PT1H", green = "PT2H" }',
)
assert default_policy_text() != LIST_POLICY


@dataclass
class Population:
    """Referrals in known states, in one read model."""

    awaiting_decision: list[str]
    overdue: str
    early_help: str
    social_care: str
    closed: str

    @property
    def open(self) -> set[str]:
        return {*self.awaiting_decision, self.overdue, self.early_help, self.social_care}


async def _ids(api: Api, who: str = "front_door", **params: Any) -> list[str]:
    response = await api.get(REFERRALS, who, params=params)
    assert response.status_code == 200, response.text
    assert set(response.json()) == {"items", "next_cursor"}
    return [item["id"] for item in response.json()["items"]]


@pytest_asyncio.fixture(scope="class")
async def population(api: Api) -> Population:
    """The population of TestList (one per class and backend)."""
    # Created green, amber, green, amber...: due order is not creation order.
    waiting = [(await api.submit(referral_body(risk=risk)))["id"] for risk in ["green", "amber"] * 3]
    early_help = (await api.submit(referral_body(risk="amber")))["id"]
    await api.decide(early_help, "early_help")
    social_care = (await api.submit(referral_body(risk="green")))["id"]
    await api.decide(social_care, "social_care")
    closed = (await api.submit(referral_body(risk="amber")))["id"]
    assert (await api.decide(closed, "no_further_action"))["status"] == "closed"
    overdue = (await api.submit(referral_body(risk="red")))["id"]
    for _ in range(50):  # due one second after it opened
        if (await api.get(f"{REFERRALS}/{overdue}", "front_door")).json()["overdue"]:
            break
        await asyncio.sleep(0.1)
    return Population(waiting, overdue, early_help, social_care, closed)


class TestList:
    """Filters, due order and cursor paging over a known population."""

    api_policy = LIST_POLICY

    async def test_open_is_the_default_and_ordered_by_due_instant(
        self, api: Api, population: Population
    ) -> None:
        response = await api.get(REFERRALS, "front_door")
        items = response.json()["items"]
        assert {i["id"] for i in items} == population.open
        assert response.json()["next_cursor"] is None
        keys = [(aware(i["due_at"]), i["id"]) for i in items]
        assert keys == sorted(keys)
        assert items[0]["id"] == population.overdue
        assert all(i["status"] != "closed" for i in items)
        assert await _ids(api, status="open") == [i["id"] for i in items]

    async def test_status_filters(self, api: Api, population: Population) -> None:
        assert await _ids(api, status="closed") == [population.closed]
        assert set(await _ids(api, status="awaiting_decision")) == {
            *population.awaiting_decision,
            population.overdue,
        }
        assert set(await _ids(api, status="awaiting_acknowledgement")) == {
            population.early_help,
            population.social_care,
        }

    async def test_team_filter(self, api: Api, population: Population) -> None:
        assert await _ids(api, "early_help", team="early_help") == [population.early_help]
        assert await _ids(api, "manager", team="social_care") == [population.social_care]
        assert await _ids(api, team="other_agency") == []
        assert set(await _ids(api, team="front_door")) == {*population.awaiting_decision, population.overdue}

    async def test_overdue_filter(self, api: Api, population: Population) -> None:
        items = (await api.get(REFERRALS, "manager", params={"overdue": "true"})).json()["items"]
        assert [i["id"] for i in items] == [population.overdue]
        assert items[0]["overdue"] is True
        assert aware(items[0]["due_at"]) < datetime.now(UTC)
        not_overdue = await _ids(api, "manager", overdue="false")
        assert set(not_overdue) == population.open - {population.overdue}
        assert await _ids(api, status="closed", overdue="true") == []

    async def test_limit(self, api: Api, population: Population) -> None:
        everything = await _ids(api)
        response = await api.get(REFERRALS, "front_door", params={"limit": 2})
        assert [i["id"] for i in response.json()["items"]] == everything[:2]
        assert isinstance(response.json()["next_cursor"], str)

    async def test_cursor_paging_sees_every_referral_once_in_due_order(
        self, api: Api, population: Population
    ) -> None:
        pages: list[list[dict[str, Any]]] = []
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 3, **({"cursor": cursor} if cursor else {})}
            response = await api.get(REFERRALS, "front_door", params=params)
            assert response.status_code == 200, response.text
            pages.append(response.json()["items"])
            cursor = response.json()["next_cursor"]
            if cursor is None:
                break
            assert len(pages) < 10, "paging does not end"
        items = [i for page in pages for i in page]
        ids = [i["id"] for i in items]
        assert len(population.open) == 9
        assert [len(p) for p in pages] == [3, 3, 3]
        assert len(ids) == len(set(ids)) and set(ids) == population.open
        keys = [(aware(i["due_at"]), i["id"]) for i in items]
        assert keys == sorted(keys)
        assert ids == await _ids(api, limit=50)

    async def test_cursor_paging_of_closed_referrals(self, api: Api, population: Population) -> None:
        first = await api.get(REFERRALS, "front_door", params={"status": "closed", "limit": 1})
        assert [i["id"] for i in first.json()["items"]] == [population.closed]
        assert first.json()["next_cursor"] is None

    @pytest.mark.parametrize("who", ["front_door", "manager"])
    async def test_roles_that_may_list(self, api: Api, population: Population, who: str) -> None:
        assert set(await _ids(api, who)) == population.open

    @pytest.mark.parametrize(
        ("who", "handed"), [("early_help", "early_help"), ("social_care", "social_care")]
    )
    async def test_receiving_teams_list_what_was_handed_to_them(
        self, api: Api, population: Population, who: str, handed: str
    ) -> None:
        assert await _ids(api, who) == [getattr(population, handed)]
        assert await _ids(api, who, status="awaiting_decision") == []
        assert await _ids(api, "other_agency") == []

    @pytest.mark.parametrize("who", ["police", "police_other"])
    async def test_police_may_not_list(self, api: Api, who: str) -> None:
        assert_error(await api.get(REFERRALS, who), 403, "forbidden")

    @pytest.mark.parametrize(
        ("params", "field"),
        [
            ({"status": "pending"}, "status"),
            ({"status": ""}, "status"),
            ({"team": "police"}, "team"),
            ({"overdue": "maybe"}, "overdue"),
            ({"limit": "0"}, "limit"),
            ({"limit": "201"}, "limit"),
            ({"limit": "ten"}, "limit"),
            ({"cursor": "garbage!"}, "cursor"),
            ({"cursor": "x" * 501}, "cursor"),
        ],
    )
    async def test_bad_query_is_422_naming_the_parameter(
        self, api: Api, params: dict[str, str], field: str
    ) -> None:
        error = assert_error(await api.get(REFERRALS, "front_door", params=params), 422, "invalid")
        assert set(error["fields"]) == {field}, error

    @pytest.mark.parametrize(
        "position",
        [
            ["2026-01-01T00:00:00", UNKNOWN_ID],  # no offset
            ["2026-01-01T00:00:00+00:00", "x\x00"],  # not an id (PostgreSQL refuses NUL)
            ["2026-01-01T00:00:00+00:00", 7],
            ["yesterday", UNKNOWN_ID],
            [1, UNKNOWN_ID],
            {"due": None},
            [None, UNKNOWN_ID, "extra"],
            "just a string",
        ],
    )
    async def test_forged_cursor_is_422(self, api: Api, position: Any) -> None:
        cursor = base64.urlsafe_b64encode(json.dumps(position).encode()).decode().rstrip("=")
        error = assert_error(
            await api.get(REFERRALS, "front_door", params={"cursor": cursor}), 422, "invalid"
        )
        assert set(error["fields"]) == {"cursor"}
