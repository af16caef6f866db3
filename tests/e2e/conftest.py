"""End-to-end fixtures: a Temporal dev server, an SMTP sink, and the worker and API processes.

When a test fails, the tail of every process's output is attached to the report.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest
from aiosmtpd.controller import Controller
from e2e_support import (
    FORCE,
    LOGS_KEY,
    REFERRALS,
    SECRET_KEY,
    Mailbox,
    Service,
    SmtpSink,
    Stack,
    TemporalServer,
    attach_log,
    base_env,
    create_user,
    eventually,
    free_port,
    free_temporal_port,
    run_cli,
    short_policy,
    tail,
    write_policy,
)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.failed:
        for name, path in item.stash.get(LOGS_KEY, []):
            report.sections.append((f"{name} ({path})", tail(path)))


@pytest.fixture
def services(request: pytest.FixtureRequest) -> Iterator[Callable[..., Service]]:
    """Make Service objects that are all stopped at the end of the test."""
    made: list[Service] = []

    def make(name: str, args: list[str], *, env: dict[str, str], cwd: Path, logs: Path) -> Service:
        service = Service(request, name, args, env=env, cwd=cwd, logs=logs)
        made.append(service)
        return service

    yield make
    for service in reversed(made):
        service.stop()


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    """A real SMTP server on a free port, storing every message."""
    mailbox = Mailbox()
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port, ready_timeout=10)
    controller.start()
    try:
        yield SmtpSink(mailbox, port)
    finally:
        controller.stop()


@pytest.fixture(scope="module")
async def temporal_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[TemporalServer]:
    """One real `temporal server start-dev` (SQLite file) for the tests of a module."""
    from devserver import DevServer

    server = DevServer(tmp_path_factory.mktemp("temporal"), port=free_temporal_port())
    server.start()
    try:
        await server.wait_ready()
        yield TemporalServer(server.address, server.log_file)
    finally:
        server.stop()


@pytest.fixture
async def stack(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    temporal_server: TemporalServer,
    smtp_sink: SmtpSink,
    services: Callable[..., Service],
) -> AsyncIterator[Stack]:
    """Migrated SQLite read model, three users, then the worker and the API processes."""
    attach_log(request, "temporal dev server", temporal_server.log_file)
    api_port = free_port()
    public_url = f"http://127.0.0.1:{api_port}"
    policy = write_policy(tmp_path, short_policy(transfers=True))
    env = base_env(
        REFERRALS_DATA_DIR=str(tmp_path / "data"),
        REFERRALS_DATABASE_URL=f"sqlite:///{tmp_path / 'read-model.db'}",
        REFERRALS_TEMPORAL_ADDRESS=temporal_server.address,
        REFERRALS_TASK_QUEUE=f"e2e-{uuid.uuid4().hex[:12]}",
        REFERRALS_SMTP_URL=smtp_sink.url,
        REFERRALS_POLICY_FILE=str(policy),
        REFERRALS_SECRET_KEY=SECRET_KEY,
        REFERRALS_PUBLIC_URL=public_url,
        REFERRALS_MAIL_FROM="referrals@e2e.example",
    )
    migrated = run_cli(["migrate"], env, tmp_path)
    assert migrated.returncode == 0, f"migrate failed: {migrated.stderr}"
    tokens = {
        "police": create_user(env, tmp_path, "police", "police@e2e.example", "--force", FORCE),
        "front_door": create_user(env, tmp_path, "front_door", "fd@e2e.example", "--team", "front_door"),
        "early_help": create_user(env, tmp_path, "early_help", "eh@e2e.example", "--team", "early_help"),
    }
    logs = tmp_path / "logs"
    logs.mkdir()
    worker = services("worker", [REFERRALS, "worker"], env=env, cwd=tmp_path, logs=logs).start()
    api = services(
        "api", [REFERRALS, "api", "--port", str(api_port)], env=env, cwd=tmp_path, logs=logs
    ).start()
    result = Stack(env, public_url, worker, api, tokens, smtp_sink.mailbox, public_url)
    await result.wait_worker_started()

    async def ready() -> bool:
        async with httpx.AsyncClient(base_url=public_url, timeout=5) as http:
            return (await http.get("/readyz")).status_code == 200

    await eventually(ready, within=30, what="the API to be ready", alive=[api])
    yield result
