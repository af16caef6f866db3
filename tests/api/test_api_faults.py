"""Intake and operations under faults: the read model or Temporal away, SMTP down, and /metrics.

Outages are real: the read model is a PostgreSQL database reached through a TCP proxy that the
test closes (the shared server keeps running), and Temporal is a dev server that is stopped and
started again on the same port and file.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
import types
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from aiosmtpd.controller import Controller
from sqlalchemy import func, select, text, update
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from api import create_app
from codec import data_converter
from commands import ReferralCommands
from config import Settings
from models import repository
from models.db import create_engine, session_factory
from models.enums import Role
from models.policy import load_policy
from models.tables import ApiToken, OutboxMessage, Referral
from tests.api.conftest import SECRET, Api, _create_users, free_port, referral_body, serve
from tests.api.test_api_intake import REFERRALS, assert_error
from tests.conftest import TEMPORAL_CLI, fresh_database_url
from tests.notify_server import API_KEY, TEMPLATE_ID, FakeNotify, running
from web.deps import TokenCache
from worker import build_worker

# ---- a TCP proxy whose closing is a database outage -------------------------------------------


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target; `stop` refuses new and cuts live connections."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()

    def hang(self) -> None:
        """Stop answering without closing anything, as a partitioned network does."""
        self._flowing.clear()

    def resume(self) -> None:
        """Deliver what was held and answer again."""
        self._flowing.set()

    async def start(self) -> None:
        """Listen (again) on the same port."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def stop(self) -> None:
        """Stop listening and close every connection, as a crashed server would."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._flowing.wait()
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, ConnectionError):
            while data := await reader.read(65536):
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
        writer.transport.abort()
        self._writers.discard(writer)


@dataclass
class Stack:
    """App and worker reaching PostgreSQL through `proxy`; `direct` bypasses it (for checks)."""

    http: httpx.AsyncClient
    proxy: TcpProxy
    direct: str
    tokens: dict[str, str]

    def auth(self, who: str) -> dict[str, str]:
        """The Authorization header of one of the stack's users."""
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    async def rows(self, referral_id: str) -> int:
        """Referral rows with this id, read past the proxy."""
        engine = create_engine(self.direct)
        try:
            async with session_factory(engine)() as session:
                return int(await session.scalar(select(func.count()).where(Referral.id == referral_id)) or 0)
        finally:
            await engine.dispose()


@pytest_asyncio.fixture
async def stack(temporal_env: WorkflowEnvironment, tmp_path: Path) -> AsyncIterator[Stack]:
    """A PostgreSQL read model behind a proxy, with a worker and the app both going through it."""
    databases = fresh_database_url("postgresql", tmp_path)
    direct = next(databases)
    try:
        proxy = TcpProxy(5432)
        await proxy.start()
        via_proxy = direct.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
        settings = Settings(
            database_url=via_proxy,
            task_queue=f"faults-{uuid.uuid4()}",
            temporal_address=temporal_env.client.service_client.config.target_host,
        )
        tokens = await _create_users(direct)
        engine = create_engine(via_proxy)
        worker = build_worker(
            temporal_env.client, settings, secret=SECRET, policy=load_policy(None), engine=engine
        )
        app = create_app(settings, secret=SECRET, client=temporal_env.client)
        try:
            async with worker, serve(app) as http:
                yield Stack(http=http, proxy=proxy, direct=direct, tokens=tokens)
        finally:
            await engine.dispose()
            await proxy.stop()
    finally:
        next(databases, None)


@pytest.mark.postgres
class TestReadModelOutage:
    """The read model down: intake still takes referrals, reads say 503, the row comes back."""

    async def test_intake_during_outage_is_listed_when_the_database_returns(self, stack: Stack) -> None:
        # One request while the database is up verifies the police token.
        assert (
            await stack.http.post(REFERRALS, headers=stack.auth("police"), json=referral_body())
        ).status_code == 201
        await stack.proxy.stop()
        body = referral_body()
        during = await stack.http.post(REFERRALS, headers=stack.auth("police"), json=body)
        assert during.status_code == 202, during.text
        referral_id = during.json()["id"]
        assert during.json()["status"] == "awaiting_decision"
        # Reads come from the read model: 503 in the error shape with Retry-After, never a 500.
        listed = await stack.http.get(REFERRALS, headers=stack.auth("manager"))
        assert_error(listed, 503, "unavailable")
        assert listed.headers["Retry-After"] == "5"
        ready = await stack.http.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["database"].startswith("unavailable")
        assert ready.json()["checks"]["temporal"] == "ok"
        metrics = await stack.http.get("/metrics")
        assert_error(metrics, 503, "unavailable")
        assert metrics.headers["Retry-After"] == "5"
        assert await stack.rows(referral_id) == 0
        await stack.proxy.start()
        # The projection activity retries until the database answers.
        for _ in range(300):
            if await stack.rows(referral_id) == 1:
                break
            await asyncio.sleep(0.2)
        assert await stack.rows(referral_id) == 1
        again = await stack.http.post(REFERRALS, headers=stack.auth("police"), json=body)
        assert again.status_code == 200, again.text
        assert again.json()["id"] == referral_id
        assert await stack.rows(referral_id) == 1

    @pytest.mark.slow
    async def test_intake_while_the_database_stops_answering(self, stack: Stack) -> None:
        # No refusal, no reset: every query just waits. Intake still answers, within seconds.
        assert (
            await stack.http.post(REFERRALS, headers=stack.auth("police"), json=referral_body())
        ).status_code == 201
        stack.proxy.hang()
        try:
            started = time.monotonic()
            body = referral_body()
            during = await stack.http.post(REFERRALS, headers=stack.auth("police"), json=body)
            assert during.status_code == 202, during.text
            assert time.monotonic() - started < 25
            started = time.monotonic()
            ready = await stack.http.get("/readyz")
            assert ready.status_code == 503 and ready.json()["checks"]["database"].startswith("unavailable")
            assert time.monotonic() - started < 10
        finally:
            stack.proxy.resume()
        referral_id = during.json()["id"]
        for _ in range(300):
            if await stack.rows(referral_id) == 1:
                break
            await asyncio.sleep(0.2)
        assert await stack.rows(referral_id) == 1
        again = await stack.http.post(REFERRALS, headers=stack.auth("police"), json=body)
        assert again.status_code == 200 and again.json()["id"] == referral_id

    @pytest.mark.slow
    async def test_batch_while_the_database_stops_answering(self, stack: Stack) -> None:
        # No refusal, no reset: the batch's lookup of closed duplicates gives up and the items
        # still reach Temporal, answered within seconds, then listed once the database answers.
        token = stack.auth("police")
        assert (await stack.http.post(REFERRALS, headers=token, json=referral_body())).status_code == 201
        items = [referral_body(), referral_body()]
        stack.proxy.hang()
        try:
            started = time.monotonic()
            during = await stack.http.post(f"{REFERRALS}:batch", headers=token, json={"referrals": items})
            assert time.monotonic() - started < 25
        finally:
            stack.proxy.resume()
        assert during.status_code == 200, during.text
        results = during.json()["results"]
        assert [r["status"] for r in results] == ["created", "created"], results
        for result in results:
            for _ in range(300):
                if await stack.rows(result["id"]) == 1:
                    break
                await asyncio.sleep(0.2)
            assert await stack.rows(result["id"]) == 1

    async def test_tokens_during_an_outage(self, stack: Stack) -> None:
        # Verified while up: honoured during the outage. Never verified: 503, neither 401 nor let in.
        assert (await stack.http.get(REFERRALS, headers=stack.auth("manager"))).status_code == 200
        await stack.proxy.stop()
        unverified = await stack.http.get(REFERRALS, headers=stack.auth("front_door"))
        assert_error(unverified, 503, "unavailable")
        assert unverified.headers["Retry-After"] == "5"
        forged = await stack.http.get(REFERRALS, headers={"Authorization": "Bearer rt_not-a-token"})
        assert_error(forged, 503, "unavailable")
        await stack.proxy.start()

    async def test_revocation_applies_at_once_while_the_database_is_up(self, stack: Stack) -> None:
        assert (await stack.http.get(REFERRALS, headers=stack.auth("manager"))).status_code == 200
        engine = create_engine(stack.direct)
        try:
            async with session_factory(engine)() as session, session.begin():
                await session.execute(
                    update(ApiToken)
                    .where(ApiToken.token_hash == repository.hash_token(stack.tokens["manager"]))
                    .values(revoked_at=datetime.now(UTC))
                )
        finally:
            await engine.dispose()
        assert_error(await stack.http.get(REFERRALS, headers=stack.auth("manager")), 401, "unauthorized")
        # Refused once by the database, the token is no longer honoured during an outage either.
        await stack.proxy.stop()
        assert_error(await stack.http.get(REFERRALS, headers=stack.auth("manager")), 503, "unavailable")
        await stack.proxy.start()


class TestTokenCache:
    """The grace window is bounded by its length, the token's own expiry, and its size."""

    @staticmethod
    def _user() -> Any:
        from models.tables import User

        return User(id="u1", name="n", email="e@x", role=Role.POLICE.value, force="F", team=None)

    def test_grace_window(self) -> None:
        clock = [0.0]
        cache = TokenCache(grace=timedelta(minutes=5), clock=lambda: clock[0])
        now = datetime.now(UTC)
        cache.remember("t", self._user(), expires_at=None, now=now)
        clock[0] = 299.0
        user = cache.recall("t")
        assert user is not None and user.id == "u1" and user.role == "police"
        clock[0] = 300.0
        assert cache.recall("t") is None
        assert cache.recall("other") is None

    def test_token_expiry_bounds_the_window(self) -> None:
        clock = [0.0]
        cache = TokenCache(clock=lambda: clock[0])
        now = datetime.now(UTC)
        cache.remember("t", self._user(), expires_at=now + timedelta(seconds=10), now=now)
        clock[0] = 10.0
        assert cache.recall("t") is None
        cache.remember("gone", self._user(), expires_at=now - timedelta(seconds=1), now=now)
        assert cache.recall("gone") is None

    def test_forget_and_size(self) -> None:
        cache = TokenCache(size=2)
        now = datetime.now(UTC)
        for token in ("a", "b", "c"):
            cache.remember(token, self._user(), expires_at=None, now=now)
        assert cache.recall("a") is None and cache.recall("c") is not None
        cache.forget("c")
        assert cache.recall("c") is None


# ---- Temporal away ------------------------------------------------------------------------------


async def _dev_server(port: int, db_file: Path) -> WorkflowEnvironment:
    return await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(TEMPORAL_CLI),
        data_converter=pydantic_data_converter,
        ip="127.0.0.1",
        port=port,
        dev_server_extra_args=["--db-filename", str(db_file)],
    )


async def _client(env: WorkflowEnvironment, settings: Settings) -> Client:
    # The app's codec: its own client encrypts payloads, so the worker must decrypt them.
    return await Client.connect(
        env.client.service_client.config.target_host,
        data_converter=data_converter(encryption_key=settings.encryption_key, secret=SECRET),
    )


async def _count(database_url: str, referral_id: str) -> int:
    engine = create_engine(database_url)
    try:
        async with session_factory(engine)() as session:
            return int(await session.scalar(select(func.count()).where(Referral.id == referral_id)) or 0)
    finally:
        await engine.dispose()


@pytest.mark.slow
class TestTemporalOutage:
    """Temporal away: 503 with Retry-After and nothing stored; back: the same request lands once."""

    async def test_stopped_mid_run_then_back(self, tmp_path: Path) -> None:
        databases = fresh_database_url("sqlite", tmp_path)
        database_url = next(databases)
        port = free_port()
        settings = Settings(
            database_url=database_url,
            task_queue=f"faults-{uuid.uuid4()}",
            temporal_address=f"127.0.0.1:{port}",
        )
        tokens = await _create_users(database_url)
        auth = {"Authorization": f"Bearer {tokens['police']}"}
        engine = create_engine(database_url)
        # The app's own (lazy) client, as in production: it must survive the server's absence.
        app = create_app(settings, secret=SECRET)
        try:
            async with serve(app) as http:
                body = referral_body()
                # Never started yet: a dead address.
                away = await http.post(REFERRALS, headers=auth, json=body)
                assert_error(away, 503, "unavailable")
                assert away.headers["Retry-After"] == "5"
                env = await _dev_server(port, tmp_path / "temporal.db")
                worker = build_worker(
                    await _client(env, settings),
                    settings,
                    secret=SECRET,
                    policy=load_policy(None),
                    engine=engine,
                )
                async with worker:
                    first = await http.post(REFERRALS, headers=auth, json=body)
                    assert first.status_code in (201, 202), first.text
                    referral_id = first.json()["id"]
                await env.shutdown()
                # Stopped mid-run: a bounded wait, then 503; nothing half-way.
                app.state.commands = ReferralCommands(
                    app.state.commands.client, settings.task_queue, update_timeout=timedelta(seconds=3)
                )
                second_body = referral_body()
                down = await http.post(REFERRALS, headers=auth, json=second_body)
                assert_error(down, 503, "unavailable")
                assert down.headers["Retry-After"] == "5"
                assert (await http.post(REFERRALS, headers=auth, json=body)).status_code == 503
                # Back on the same file: every referral still there, the retry lands exactly once.
                env = await _dev_server(port, tmp_path / "temporal.db")
                worker = build_worker(
                    await _client(env, settings),
                    settings,
                    secret=SECRET,
                    policy=load_policy(None),
                    engine=engine,
                )
                try:
                    async with worker:
                        retried = httpx.Response(503)
                        for _ in range(50):
                            retried = await http.post(REFERRALS, headers=auth, json=second_body)
                            if retried.status_code != 503:
                                break
                            await asyncio.sleep(0.2)
                        assert retried.status_code in (201, 202), retried.text
                        second_id = retried.json()["id"]
                        duplicate = await http.post(REFERRALS, headers=auth, json=second_body)
                        assert duplicate.status_code == 200 and duplicate.json()["id"] == second_id
                        same = await http.post(REFERRALS, headers=auth, json=body)
                        assert same.status_code == 200 and same.json()["id"] == referral_id
                        for _ in range(100):
                            if await _count(database_url, second_id) == 1:
                                break
                            await asyncio.sleep(0.1)
                        assert await _count(database_url, second_id) == 1
                        assert await _count(database_url, referral_id) == 1
                        history = [
                            e async for e in env.client.list_workflows(f"TaskQueue = '{settings.task_queue}'")
                        ]
                        assert len(history) == 2
                finally:
                    await env.shutdown()
        finally:
            await engine.dispose()
            next(databases, None)


# ---- readiness of SMTP, and /metrics ----------------------------------------------------------


class _Sink:
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "250 OK"


class TestReadinessChecks:
    """/readyz names SMTP only when it is configured, and says 503 when it does not answer."""

    async def test_smtp_up_and_down(self, api: Api) -> None:
        port = free_port()
        controller = Controller(_Sink(), hostname="127.0.0.1", port=port)
        controller.start()
        try:
            up = api.settings.model_copy(update={"smtp_url": f"smtp://127.0.0.1:{port}"})
            async with serve(api.make_app(settings=up)) as http:
                response = await http.get("/readyz")
                assert response.status_code == 200, response.text
                assert response.json() == {
                    "status": "ok",
                    "checks": {"database": "ok", "temporal": "ok", "smtp": "ok", "notify": "not_configured"},
                }
        finally:
            controller.stop()
        down = api.settings.model_copy(update={"smtp_url": f"smtp://127.0.0.1:{free_port()}"})
        async with serve(api.make_app(settings=down)) as http:
            response = await http.get("/readyz")
            assert response.status_code == 503, response.text
            checks = response.json()["checks"]
            assert response.json()["status"] == "unavailable"
            assert checks["smtp"].startswith("unavailable: ") and checks["database"] == "ok"

    async def test_notify_up_refusing_and_down(self, api: Api) -> None:
        fake = FakeNotify()
        async with running(fake) as base_url:
            notify = {
                "notify_api_key": API_KEY,
                "notify_template_id": TEMPLATE_ID,
                "notify_base_url": base_url,
            }
            up = api.settings.model_copy(update=notify)
            async with serve(api.make_app(settings=up)) as http:
                response = await http.get("/readyz")
                assert response.status_code == 200, response.text
                assert response.json()["checks"]["notify"] == "ok"
            # A key Notify does not accept (revoked, or another service's), and an unknown template.
            wrong_key = api.settings.model_copy(update={**notify, "notify_api_key": API_KEY[:-4] + "0000"})
            unknown = api.settings.model_copy(
                update={**notify, "notify_template_reminder": "00000000-0000-4000-8000-000000000000"}
            )
            for settings, why in [(wrong_key, "403 AuthError"), (unknown, "404 NoResultFound")]:
                async with serve(api.make_app(settings=settings)) as http:
                    response = await http.get("/readyz")
                    assert response.status_code == 503, response.text
                    assert response.json()["status"] == "unavailable"
                    assert why in response.json()["checks"]["notify"]
            assert not fake.notifications, "a readiness check sends nothing"
        gone = api.settings.model_copy(
            update={**notify, "notify_base_url": f"http://127.0.0.1:{free_port()}"}
        )
        async with serve(api.make_app(settings=gone)) as http:
            response = await http.get("/readyz")
            assert response.status_code == 503, response.text
            assert response.json()["checks"]["notify"] == "unavailable: ConnectError"


def parse_exposition(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Prometheus text format: samples by metric and labels; fails on a malformed line."""
    import re

    sample = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{((?:[a-zA-Z_]\w*="(?:[^"\\]|\\.)*",?)*)\})? (\S+)$')
    label = re.compile(r'([a-zA-Z_]\w*)="((?:[^"\\]|\\.)*)"')
    typed: dict[str, str] = {}
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            assert kind in {"gauge", "counter", "untyped", "histogram", "summary"}, line
            assert name not in typed, f"{name} typed twice"
            typed[name] = kind
            continue
        if line.startswith("# HELP ") or not line:
            continue
        match = sample.match(line)
        assert match, f"not a sample line: {line!r}"
        name, labels, value = match.groups()
        assert name in typed, f"{name} has no TYPE before its samples"
        key = tuple(sorted(label.findall(labels or "")))
        assert key not in samples.setdefault(name, {}), f"duplicate sample {line!r}"
        samples[name][key] = float(value)
    for name in typed:
        samples.setdefault(name, {})
    return samples


class TestMetricsNumbers:
    """/metrics against a seeded read model: open, overdue, emails by kind and status, failures."""

    async def test_seeded(self, api: Api) -> None:
        now = datetime.now(UTC)
        engine = create_engine(api.settings.resolved_database_url)
        try:
            async with session_factory(engine)() as session, session.begin():
                for i, (team, due, status) in enumerate(
                    [
                        ("front_door", now - timedelta(hours=1), "awaiting_decision"),
                        ("front_door", now + timedelta(hours=1), "awaiting_decision"),
                        ("early_help", now - timedelta(days=1), "awaiting_acknowledgement"),
                        (None, None, "closed"),
                    ]
                ):
                    rid = uuid.uuid4().hex
                    session.add(
                        Referral(
                            id=rid,
                            reference=f"RT-SEED-{i:06d}",
                            force="Seed Force",
                            police_reference=f"SEED-{rid}",
                            fingerprint="f" * 64,
                            status=status,
                            risk="green",
                            awaiting_team=team,
                            due_at=due,
                            escalation_level=0,
                            received_at=now,
                            version=1,
                            handoffs=[],
                            submitted_by={},
                            details=None,
                            updated_at=now,
                        )
                    )
                for i, (kind, status) in enumerate(
                    [
                        ("escalation", "sent"),
                        ("escalation", "sent"),
                        ("escalation", "rejected"),
                        ("reminder", "failed"),
                        ("reminder", "pending"),
                        ("outcome", "sent"),
                    ]
                ):
                    session.add(
                        OutboxMessage(
                            key=f"seed-{uuid.uuid4().hex}-{i}",
                            referral_id="0" * 32,
                            reference="RT-SEED-000000",
                            kind=kind,
                            recipients=["x@example.test"],
                            subject="s",
                            body="b",
                            message_id=f"<{i}@seed>",
                            status=status,
                            attempts=1,
                            created_at=now,
                        )
                    )
        finally:
            await engine.dispose()
        response = await api.http.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        samples = parse_exposition(response.text)
        assert samples["referrals_open"] == {(("team", "front_door"),): 2, (("team", "early_help"),): 1}
        assert samples["referrals_overdue"] == {(("team", "front_door"),): 1, (("team", "early_help"),): 1}
        assert samples["referrals_emails"] == {
            (("kind", "escalation"), ("status", "sent")): 2,
            (("kind", "escalation"), ("status", "rejected")): 1,
            (("kind", "reminder"), ("status", "failed")): 1,
            (("kind", "reminder"), ("status", "pending")): 1,
            (("kind", "outcome"), ("status", "sent")): 1,
        }
        assert samples["referrals_email_delivery_failures"] == {
            (("kind", "escalation"),): 1,
            (("kind", "reminder"),): 1,
            (("kind", "outcome"),): 0,
        }

    async def test_reconcile_findings_are_included(self, api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
        async def reconcile_metrics(session: Any) -> list[str]:
            return [
                "# HELP referrals_reconcile_findings_total Divergences.",
                "# TYPE referrals_reconcile_findings_total counter",
                'referrals_reconcile_findings_total{kind="missing_row"} 3',
            ]

        module = types.ModuleType("activities.reconcile")
        module.reconcile_metrics = reconcile_metrics  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "activities.reconcile", module)
        response = await api.http.get("/metrics")
        assert response.status_code == 200
        samples = parse_exposition(response.text)
        assert samples["referrals_reconcile_findings_total"] == {(("kind", "missing_row"),): 3}

    async def test_a_reconcile_query_error_keeps_the_rest(
        self, api: Api, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        async def reconcile_metrics(session: Any) -> list[str]:
            await session.execute(text("SELECT * FROM no_such_table_yet"))
            return []

        module = types.ModuleType("activities.reconcile")
        module.reconcile_metrics = reconcile_metrics  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "activities.reconcile", module)
        response = await api.http.get("/metrics")
        assert response.status_code == 200, response.text
        assert "referrals_open" in parse_exposition(response.text)
