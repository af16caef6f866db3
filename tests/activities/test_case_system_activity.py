"""lookup_case_record against a real local HTTP server standing in for Early Help's case system."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_asyncio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.early_help import CaseSystemActivities, record_at
from config import ConfigError
from models.early_help_payloads import LookupInput
from models.policy import CaseSystemPolicy
from tests.notify_server import running

TOKEN = "Bearer ehm-test-token"
INPUT = LookupInput(
    referral_id="0f48f00d26e6e2efbe07718346fcb90c", reference="RT-1X4F0-396WV", police_reference="NP/24 0042"
)


@dataclass
class CaseSystem:
    """Answers `GET /api/cases?police_reference=...` from a script; keeps what it was asked."""

    answer: tuple[int, Any] = (200, {"cases": []})
    asked: list[dict[str, str]] = field(default_factory=list)

    def app(self) -> Starlette:
        async def cases(request: Request) -> Response:
            self.asked.append(
                {"query": str(request.url.query), "authorization": request.headers.get("authorization", "")}
            )
            if request.headers.get("authorization") != TOKEN:
                return JSONResponse({"error": "unauthorised"}, status_code=401)
            status, body = self.answer
            if isinstance(body, str):
                return PlainTextResponse(body, status_code=status)
            return JSONResponse(body, status_code=status)

        return Starlette(routes=[Route("/api/cases", cases)])


@pytest_asyncio.fixture
async def case_system() -> AsyncIterator[tuple[CaseSystem, str]]:
    fake = CaseSystem()
    async with running(fake) as url:  # type: ignore[arg-type]
        yield fake, url


def activities(url: str, **changes: Any) -> CaseSystemActivities:
    policy = CaseSystemPolicy(
        lookup_url=f"{url}/api/cases?police_reference={{police_reference}}",
        lookup_auth_env="EHM_TOKEN",
        record_id_path="cases.0.id",
        **changes,
    )
    return CaseSystemActivities(policy, environ={"EHM_TOKEN": TOKEN})


async def test_a_record_is_read_at_its_path(case_system: tuple[CaseSystem, str]) -> None:
    fake, url = case_system
    fake.answer = (200, {"cases": [{"id": "EHM-4471", "status": "open"}]})

    result = await ActivityEnvironment().run(activities(url).lookup, INPUT)

    assert result.record_id == "EHM-4471"
    # The police reference went URL-encoded, with the configured Authorization header.
    assert fake.asked == [{"query": "police_reference=NP%2F24%200042", "authorization": TOKEN}]


@pytest.mark.parametrize(
    "answer",
    [
        (200, {"cases": []}),
        (200, {"cases": [{"id": None}]}),
        (200, {"other": 1}),
        (404, {"error": "no such case"}),
    ],
    ids=["empty", "null", "absent", "404"],
)
async def test_no_record_yet(case_system: tuple[CaseSystem, str], answer: tuple[int, Any]) -> None:
    fake, url = case_system
    fake.answer = answer

    result = await ActivityEnvironment().run(activities(url).lookup, INPUT)

    assert result.record_id is None


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ((500, {"error": "boom"}), "answered 500"),
        ((200, "<html>maintenance</html>"), "not JSON"),
        ((200, {"cases": [{"id": "X" * 101}]}), "record id"),
    ],
    ids=["5xx", "not-json", "too-long"],
)
async def test_failures_are_errors_the_workflow_retries(
    case_system: tuple[CaseSystem, str], answer: tuple[int, Any], message: str
) -> None:
    fake, url = case_system
    fake.answer = answer

    with pytest.raises(ApplicationError, match=message):
        await ActivityEnvironment().run(activities(url).lookup, INPUT)


async def test_refused_credentials_are_an_error(case_system: tuple[CaseSystem, str]) -> None:
    _, url = case_system
    acts = CaseSystemActivities(
        CaseSystemPolicy(
            lookup_url=f"{url}/api/cases?police_reference={{police_reference}}", lookup_auth_env="EHM_TOKEN"
        ),
        environ={"EHM_TOKEN": "Bearer wrong"},
    )

    with pytest.raises(ApplicationError, match="refused the lookup \\(401\\)"):
        await ActivityEnvironment().run(acts.lookup, INPUT)


def test_the_named_secret_must_be_set() -> None:
    policy = CaseSystemPolicy(lookup_url="https://ehm.example/cases/{reference}", lookup_auth_env="EHM_TOKEN")

    with pytest.raises(ConfigError, match="EHM_TOKEN: not set"):
        CaseSystemActivities(policy, environ={})


@pytest.mark.parametrize(
    ("document", "path", "expected"),
    [
        ({"a": {"b": "x"}}, "a.b", "x"),
        ({"a": [{"b": 12}]}, "a.0.b", "12"),
        ({"a": [{"b": 12}]}, "a.1.b", None),
        ({"a": {"b": True}}, "a.b", None),
        ({"a": {"b": {"c": 1}}}, "a.b", None),
        ({"a": {"b": "  "}}, "a.b", None),
        (["x"], "0", "x"),
    ],
)
def test_record_at(document: Any, path: str, expected: str | None) -> None:
    assert record_at(document, path) == expected
