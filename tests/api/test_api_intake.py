"""POST /api/v1/referrals: creation, duplicates, conflicts, roles, authentication and validation."""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from tests.api.conftest import OTHER_FORCE, OWN_FORCE, Api, new_reference, referral_body

REFERRALS = "/api/v1/referrals"
REFERENCE = re.compile(r"RT-[0-9A-HJKMNP-TV-Z]{5}-[0-9A-HJKMNP-TV-Z]{5}")


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    """The contract's error shape with this status and code; returns `error`."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert set(error) == {"code", "message", "fields"}, error
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["fields"], dict)
    return error


def aware(text: str) -> datetime:
    """An ISO 8601 instant that must carry an offset (Z or +hh:mm)."""
    instant = datetime.fromisoformat(text)
    assert instant.utcoffset() is not None, f"{text} has no offset"
    return instant


class TestSubmit:
    """201 for a new referral; 200 for the same again; 409 for the same key with other content."""

    async def test_created_with_reference_status_and_deadline(self, api: Api) -> None:
        body = referral_body()
        before = datetime.now(UTC)
        response = await api.post(REFERRALS, "police", json=body)
        assert response.status_code == 201, response.text
        data = response.json()
        assert isinstance(data["id"], str) and re.fullmatch(r"[0-9a-f]{32}", data["id"])
        assert REFERENCE.fullmatch(data["reference"]), data["reference"]
        assert data["status"] == "awaiting_decision"
        assert data["awaiting_team"] == "front_door"
        assert aware(data["due_at"]) > before
        assert data["overdue"] is False
        assert data["escalation_level"] == 0
        assert data["force"] == OWN_FORCE
        assert data["police_reference"] == body["police_reference"]
        assert data["risk"] == "green"
        assert [(h["seq"], h["team"], h["closed_at"]) for h in data["handoffs"]] == [(1, "front_door", None)]
        assert aware(data["handoffs"][0]["due_at"]) == aware(data["due_at"])
        assert data["closed_at"] is None and data["outcome"] is None and data["record_id"] is None

    async def test_same_body_again_is_200_with_the_same_id(self, api: Api) -> None:
        body = referral_body()
        first = await api.submit(body)
        again = await api.post(REFERRALS, "police", json=body)
        assert again.status_code == 200, again.text
        assert again.json()["id"] == first["id"]
        assert again.json()["reference"] == first["reference"]
        assert again.json()["status"] == "awaiting_decision"
        assert len(again.json()["handoffs"]) == 1
        events = (await api.get(f"{REFERRALS}/{first['id']}/chronology", "police")).json()["events"]
        assert [e["type"] for e in events].count("duplicate_submission") == 1

    async def test_same_key_spelled_differently_is_a_conflict_not_a_new_referral(self, api: Api) -> None:
        body = referral_body()
        first = await api.submit(body, who="front_door")
        retyped = {**body, "force": "  northamptonshire   POLICE "}
        again = await api.post(REFERRALS, "police", json=retyped)
        # Same key, but the submitted content differs (the force is spelled differently).
        assert_error(again, 409, "conflict")
        same = await api.post(REFERRALS, "police", json=body)
        assert same.status_code == 200 and same.json()["id"] == first["id"]

    async def test_same_key_with_different_content_is_409(self, api: Api) -> None:
        body = referral_body()
        first = await api.submit(body)
        changed = {**body, "summary": "Another account of the incident."}
        response = await api.post(REFERRALS, "police", json=changed)
        error = assert_error(response, 409, "conflict")
        assert "different content" in error["message"]
        # The original is untouched.
        got = await api.get(f"{REFERRALS}/{first['id']}", "front_door")
        assert got.json()["details"]["summary"] == body["summary"]

    async def test_front_door_may_submit_for_any_force(self, api: Api) -> None:
        response = await api.post(REFERRALS, "front_door", json=referral_body(force=OTHER_FORCE))
        assert response.status_code == 201, response.text
        assert response.json()["force"] == OTHER_FORCE

    @pytest.mark.parametrize("who", ["early_help", "social_care", "manager", "admin"])
    async def test_other_roles_may_not_submit(self, api: Api, who: str) -> None:
        response = await api.post(REFERRALS, who, json=referral_body())
        assert_error(response, 403, "forbidden")

    async def test_police_may_not_submit_for_another_force(self, api: Api) -> None:
        body = referral_body()
        error = assert_error(await api.post(REFERRALS, "police_other", json=body), 403, "forbidden")
        assert "force" in error["fields"]
        # Nothing was created under that key.
        assert (await api.post(REFERRALS, "police", json=body)).status_code == 201


class TestSubmitClosed:
    """A closed referral is answered from the read model: 200 for the same body, 409 otherwise."""

    async def test_resubmitting_a_closed_referral(self, api: Api) -> None:
        body = referral_body()
        created = await api.submit(body)
        closed = await api.decide(created["id"], "no_further_action")
        assert closed["status"] == "closed", closed
        again = await api.post(REFERRALS, "police", json=body)
        assert again.status_code == 200, again.text
        assert again.json()["id"] == created["id"]
        assert again.json()["status"] == "closed"
        assert again.json()["outcome"] == "no_further_action"
        changed = await api.post(REFERRALS, "police", json={**body, "risk": "red"})
        assert_error(changed, 409, "conflict")


HEADERS_WITHOUT_A_VALID_TOKEN = {
    "no header": {},
    "bad token": {"Authorization": "Bearer rt_not-a-real-token"},
    "basic": {"Authorization": "Basic x"},
    "empty bearer": {"Authorization": "Bearer "},
    "bare token": {"Authorization": "rt_something"},
}

ROUTES = [
    ("POST", REFERRALS),
    ("GET", REFERRALS),
    ("GET", f"{REFERRALS}/0123456789abcdef0123456789abcdef"),
    ("POST", f"{REFERRALS}/0123456789abcdef0123456789abcdef/decision"),
    ("POST", f"{REFERRALS}/0123456789abcdef0123456789abcdef/acknowledgement"),
    ("POST", f"{REFERRALS}/0123456789abcdef0123456789abcdef/decline"),
    ("GET", f"{REFERRALS}/0123456789abcdef0123456789abcdef/chronology"),
]


class TestAuthentication:
    """401 with the error shape and a Bearer challenge, before anything else is looked at."""

    @pytest.mark.parametrize(
        "headers", HEADERS_WITHOUT_A_VALID_TOKEN.values(), ids=list(HEADERS_WITHOUT_A_VALID_TOKEN)
    )
    @pytest.mark.parametrize(("method", "path"), ROUTES, ids=[f"{m} {p[8:]}" for m, p in ROUTES])
    async def test_without_a_valid_token(
        self, api: Api, method: str, path: str, headers: dict[str, str]
    ) -> None:
        body = referral_body() if path == REFERRALS else {"outcome": "early_help"}
        response = await api.http.request(
            method, path, headers=headers, json=body if method == "POST" else None
        )
        assert_error(response, 401, "unauthorized")
        assert response.headers["WWW-Authenticate"] == "Bearer"

    @pytest.mark.parametrize(
        "content",
        [b"not json", b'{"risk": ', b"[1, 2]", b'{"a": "\xff"}'],
        ids=["text", "cut", "array", "utf8"],
    )
    async def test_401_comes_before_422_for_a_bad_body(self, api: Api, content: bytes) -> None:
        for headers in ({}, {"Authorization": "Bearer rt_nope"}):
            response = await api.http.post(
                REFERRALS, content=content, headers={**headers, "Content-Type": "application/json"}
            )
            assert_error(response, 401, "unauthorized")
            assert response.headers["WWW-Authenticate"] == "Bearer"


def _without(*keys: str) -> dict[str, Any]:
    body = referral_body()
    for key in keys:
        del body[key]
    return body


def _child(**child: Any) -> dict[str, Any]:
    return referral_body(children=[{"family_name": "Example", **child}])


TOMORROW = (date.today() + timedelta(days=2)).isoformat()

INVALID_BODIES: dict[str, tuple[dict[str, Any] | list[Any], set[str]]] = {
    "missing fields": (_without("risk", "summary", "children"), {"risk", "summary", "children"}),
    "unknown top-level field": (referral_body(shoe_size=9), {"shoe_size"}),
    "unknown field named like a location": (referral_body(query="x"), {"query"}),
    "unknown nested field": (
        referral_body(referrer={**referral_body()["referrer"], "badge": "1"}),
        {"referrer.badge"},
    ),
    "bad referrer email": (
        referral_body(referrer={**referral_body()["referrer"], "email": "not-an-address"}),
        {"referrer.email"},
    ),
    "future date of birth": (
        _child(given_name="A", date_of_birth=TOMORROW),
        {"children.0.date_of_birth"},
    ),
    "empty children": (referral_body(children=[]), {"children"}),
    "date of birth as a number": (_child(given_name="A", date_of_birth=0), {"children.0.date_of_birth"}),
    "expected date as a number": (_child(expected_date=20270101), {"children.0.expected_date"}),
    "consent as text": (referral_body(consent_to_share="yes"), {"consent_to_share"}),
    "consent as a number": (referral_body(consent_to_share=1), {"consent_to_share"}),
    "unknown risk": (referral_body(risk="purple"), {"risk"}),
    "unknown concern": (referral_body(concerns=["drugs", "astrology"]), {"concerns.1"}),
    "no concerns": (referral_body(concerns=[]), {"concerns"}),
    "both dates": (
        _child(given_name="A", date_of_birth="2015-03-01", expected_date="2027-01-01"),
        {"children.0"},
    ),
    "neither date": (_child(given_name="A"), {"children.0"}),
    "born child without a given name": (_child(date_of_birth="2015-03-01"), {"children.0"}),
    "second child bad": (
        referral_body(children=[referral_body()["children"][0], {"family_name": "B"}]),
        {"children.1"},
    ),
    "blank police reference": (referral_body(police_reference="   "), {"police_reference"}),
    "NUL in police reference": (referral_body(police_reference="NP-\x00-1"), {"police_reference"}),
    "NUL in force": (referral_body(force="Northamptonshire\x00Police"), {"force"}),
    "wrong types": (
        referral_body(consent_to_share="perhaps", children="A. Example", referrer="PC"),
        {"consent_to_share", "children", "referrer"},
    ),
    "summary too long": (referral_body(summary="x" * 5001), {"summary"}),
    "JSON array": ([referral_body()], {"body"}),
    "JSON string": ("referral", {"body"}),  # type: ignore[dict-item]
    "JSON null": (None, {"body"}),  # type: ignore[dict-item]
}


class TestValidation:
    """422 in the error shape, naming every bad field, before anything else happens."""

    @pytest.mark.parametrize(("body", "fields"), INVALID_BODIES.values(), ids=list(INVALID_BODIES))
    async def test_invalid_body(self, api: Api, body: Any, fields: set[str]) -> None:
        response = await api.post(
            REFERRALS,
            "police",
            content=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        error = assert_error(response, 422, "invalid")
        assert set(error["fields"]) == fields, error["fields"]
        assert all(isinstance(v, str) and v for v in error["fields"].values())

    @pytest.mark.parametrize(
        ("content", "content_type"),
        [
            (b"not json at all", "application/json"),
            (b'{"police_reference": "NP-1", ', "application/json"),
            (b'{"a": "\xff\xfe"}', "application/json"),
            (b"[" * 50_000, "application/json"),
            (b"police_reference=NP-1", "application/x-www-form-urlencoded"),
            (b"", "application/json"),
        ],
        ids=["text", "truncated", "bad utf-8", "deep nesting", "form", "empty"],
    )
    async def test_not_a_json_object(self, api: Api, content: bytes, content_type: str) -> None:
        response = await api.post(
            REFERRALS, "police", content=content, headers={"Content-Type": content_type}
        )
        error = assert_error(response, 422, "invalid")
        assert set(error["fields"]) == {"body"}, error["fields"]

    async def test_unborn_child_with_expected_date_only_is_accepted(self, api: Api) -> None:
        body = referral_body(children=[{"family_name": "Example", "expected_date": TOMORROW}])
        response = await api.post(REFERRALS, "police", json=body)
        assert response.status_code == 201, response.text
        got = await api.get(f"{REFERRALS}/{response.json()['id']}", "front_door")
        assert got.json()["details"]["children"] == [
            {"given_name": None, "family_name": "Example", "date_of_birth": None, "expected_date": TOMORROW}
        ]

    async def test_invalid_body_for_an_existing_reference_is_still_422(self, api: Api) -> None:
        body = referral_body()
        await api.submit(body)
        response = await api.post(REFERRALS, "police", json={**body, "risk": "purple"})
        error = assert_error(response, 422, "invalid")
        assert set(error["fields"]) == {"risk"}
        also = await api.post(REFERRALS, "police", json={**body, "children": []})
        assert set(assert_error(also, 422, "invalid")["fields"]) == {"children"}

    async def test_a_new_reference_is_not_created_by_an_invalid_body(self, api: Api) -> None:
        reference = new_reference()
        bad = referral_body(reference, risk="purple")
        assert (await api.post(REFERRALS, "police", json=bad)).status_code == 422
        # The key is still free: a valid body with the same reference is created, not a duplicate.
        good = await api.post(REFERRALS, "police", json=referral_body(reference))
        assert good.status_code == 201, good.text
