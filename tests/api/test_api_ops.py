"""Health, readiness, metrics, the dev outbox, routing errors and emailed acknowledgement links."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from models.enums import Team
from tests.api.conftest import SECRET, Api, free_port, referral_body, serve
from tests.api.test_api_intake import REFERRALS, assert_error
from web.links import AckLinks


class TestHealth:
    """Liveness, readiness of the database and Temporal, each on its own."""

    async def test_healthz(self, api: Api) -> None:
        response = await api.http.get("/healthz")
        assert response.status_code == 200
        assert response.json() == {"status": "ok"}

    async def test_readyz(self, api: Api) -> None:
        response = await api.http.get("/readyz")
        assert response.status_code == 200, response.text
        assert response.json() == {
            "status": "ok",
            "checks": {
                "database": "ok",
                "temporal": "ok",
                "smtp": "not_configured",
                "notify": "not_configured",
            },
        }

    async def test_readyz_without_a_database(self, api: Api, backend: str) -> None:
        missing = {
            "sqlite": "sqlite:////nonexistent-folder/for-sure/read-model.db",
            "postgresql": "postgresql+psycopg://postgres@127.0.0.1:5432/rt_no_such_database",
        }[backend]
        app = api.make_app(settings=api.settings.model_copy(update={"database_url": missing}))
        async with serve(app) as http:
            response = await http.get("/readyz")
            assert response.status_code == 503, response.text
            assert response.json()["status"] == "unavailable"
            assert response.json()["checks"]["database"] != "ok"
            assert response.json()["checks"]["temporal"] == "ok"
            assert (await http.get("/healthz")).status_code == 200
            assert_error(await http.get("/metrics"), 503, "unavailable")
            assert_error(await http.get(REFERRALS, headers=api.auth("manager")), 503, "unavailable")

    async def test_without_temporal(self, api: Api) -> None:
        # The API starts with a lazy client and says 503 (never 500) while Temporal is away.
        away = api.settings.model_copy(update={"temporal_address": f"127.0.0.1:{free_port()}"})
        async with serve(api.make_app(settings=away, client=None)) as http:
            response = await http.get("/readyz")
            assert response.status_code == 503, response.text
            checks = response.json()["checks"]
            assert set(checks) == {"database", "temporal", "smtp", "notify"}
            assert checks["database"] == "ok" and checks["temporal"].startswith("unavailable")
            submitted = await http.post(REFERRALS, headers=api.auth("police"), json=referral_body())
            assert_error(submitted, 503, "unavailable")
            assert submitted.headers["Retry-After"] == "5"
            # Reads come from SQL and still work.
            assert (await http.get(REFERRALS, headers=api.auth("manager"))).status_code == 200


class TestMetrics:
    """Prometheus text of open and overdue referrals by team (a read model of its own)."""

    async def test_open_referrals_by_team(self, api: Api) -> None:
        empty = await api.http.get("/metrics")
        assert empty.status_code == 200
        assert empty.headers["content-type"].startswith("text/plain")
        assert "# TYPE referrals_open gauge" in empty.text
        assert "referrals_open{" not in empty.text
        created = await api.submit()
        assert 'referrals_open{team="front_door"} 1\n' in (await api.http.get("/metrics")).text
        await api.decide(created["id"])
        text = (await api.http.get("/metrics")).text
        assert 'referrals_open{team="early_help"} 1\n' in text
        assert 'referrals_overdue{team="early_help"} 0\n' in text
        assert 'team="front_door"' not in text


class TestOutbox:
    """/dev/outbox: off unless enabled; the newest messages first when on."""

    async def test_off_by_default(self, api: Api) -> None:
        assert_error(await api.http.get("/dev/outbox"), 404, "not_found")

    async def test_lists_messages_when_enabled(self, api: Api) -> None:
        created = await api.submit()
        await api.decide(created["id"])
        async with serve(api.make_app(outbox_enabled=True)) as http:
            messages: list[dict[str, Any]] = []
            for _ in range(100):  # the outcome email runs beside the next hand-off
                response = await http.get("/dev/outbox")
                assert response.status_code == 200, response.text
                messages = response.json()
                if messages:
                    break
                await asyncio.sleep(0.1)
        assert isinstance(messages, list) and len(messages) == 1, messages
        message = messages[0]
        assert message["kind"] == "outcome" and message["reference"] == created["reference"]
        assert message["subject"].startswith(created["reference"])
        assert message["to"] == ["a.example@police.example"]
        assert "Zebedee" not in message["subject"] + message["body"]


class TestRouting:
    """Unknown routes and methods answer in the error shape."""

    @pytest.mark.parametrize("path", ["/nope", "/api/v1/nope", "/api/v2/referrals"])
    async def test_unknown_route_is_404(self, api: Api, path: str) -> None:
        assert_error(await api.http.get(path, headers=api.auth("manager")), 404, "not_found")

    @pytest.mark.parametrize(
        ("method", "path", "allow"),
        [
            ("DELETE", REFERRALS, {"GET", "POST"}),
            ("PUT", f"{REFERRALS}/0123456789abcdef0123456789abcdef", {"GET"}),
            ("GET", f"{REFERRALS}/0123456789abcdef0123456789abcdef/decision", {"POST"}),
            ("POST", "/healthz", {"GET"}),
        ],
    )
    async def test_wrong_method_is_405(self, api: Api, method: str, path: str, allow: set[str]) -> None:
        response = await api.http.request(method, path, headers=api.auth("manager"))
        assert_error(response, 405, "method_not_allowed")
        assert {m.strip() for m in response.headers["allow"].split(",")} == allow


class TestAckLinks:
    """/ack/{token}: GET shows the form, only POST acknowledges; bad links are refused."""

    async def test_acknowledge_through_the_link(self, api: Api) -> None:
        created = await api.submit()
        await api.decide(created["id"], "early_help")
        token = AckLinks(SECRET, api.settings.public_url).token(created["id"], 2, Team.EARLY_HELP)
        form = await api.http.get(f"/ack/{token}")
        assert form.status_code == 200 and created["reference"] in form.text
        assert re.search(r"<form[^>]*method=['\"]post['\"]", form.text), "no POST form on the ack page"
        # GET changed nothing (mail scanners follow links).
        assert (await api.get(f"{REFERRALS}/{created['id']}", "manager")).json()["status"] != "closed"
        blank = await api.http.post(f"/ack/{token}", data={"record_id": "   "})
        assert blank.status_code == 422, blank.text
        done = await api.http.post(f"/ack/{token}", data={"record_id": "EH-77"})
        assert done.status_code == 200, done.text
        assert "EH-77" in done.text
        got = (await api.get(f"{REFERRALS}/{created['id']}", "manager")).json()
        assert got["status"] == "closed" and got["record_id"] == "EH-77"
        assert (await api.http.post(f"/ack/{token}", data={"record_id": "EH-78"})).status_code == 409
        assert (await api.http.get(f"/ack/{token}")).status_code == 409

    async def test_bad_links(self, api: Api) -> None:
        created = await api.submit()
        forged = AckLinks("y" * 40, api.settings.public_url).token(created["id"], 1, Team.EARLY_HELP)
        assert (await api.http.get(f"/ack/{forged}")).status_code == 404
        assert (await api.http.post(f"/ack/{forged}", data={"record_id": "X"})).status_code == 404
        assert (await api.http.get("/ack/not-a-token")).status_code == 404
        front_door = AckLinks(SECRET, api.settings.public_url).token(created["id"], 1, Team.FRONT_DOOR)
        assert (await api.http.post(f"/ack/{front_door}", data={"record_id": "X"})).status_code == 404
