"""`referrals purge [--dry-run]` as a real process against a temporary SQLite read model, and the
daily purge Schedule that `referrals worker` creates on start."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from e2e_support import (
    REFERRALS,
    SECRET_KEY,
    Service,
    TemporalServer,
    attach_log,
    base_env,
    eventually,
    run_cli,
)
from temporalio.client import Client, ScheduleActionStartWorkflow

from codec import data_converter
from models.db import create_engine, session_factory
from models.migrate import upgrade
from models.retention_payloads import PurgeWorkflowInput
from tests.retention_seed import days_ago, personal_left, seed, snapshot
from worker import PURGE_SCHEDULE_ID

pytestmark = pytest.mark.slow


def purge_env(tmp_path: Path, **values: str) -> dict[str, str]:
    """The command's environment: a read model in tmp_path, a retention of 30 days."""
    defaults = {
        "REFERRALS_DATA_DIR": str(tmp_path / "data"),
        "REFERRALS_DATABASE_URL": f"sqlite:///{tmp_path / 'read-model.db'}",
        "REFERRALS_RETENTION_DAYS": "30",
    }
    return base_env(**{**defaults, **values})


def last_line(stdout: str) -> str:
    """The command's report: the last line it printed."""
    lines = stdout.strip().splitlines()
    assert lines, "the command printed nothing"
    return lines[-1]


async def test_purge_prints_how_many_and_dry_run_changes_nothing(tmp_path: Path) -> None:
    env = purge_env(tmp_path)
    upgrade(env["REFERRALS_DATABASE_URL"])
    engine = create_engine(env["REFERRALS_DATABASE_URL"])
    sessions = session_factory(engine)
    try:
        old = [await seed(sessions, n, received=days_ago(60), closed=days_ago(30 + n)) for n in (1, 2)]
        young = await seed(sessions, 3, received=days_ago(60), closed=days_ago(29))
        open_ = await seed(sessions, 4, received=days_ago(400), closed=None)
        before = {s.referral_id: await snapshot(sessions, s.referral_id) for s in (*old, young, open_)}

        dry = run_cli(["purge", "--dry-run"], env, tmp_path)
        assert dry.returncode == 0, dry.stderr
        assert re.fullmatch(
            r"would purge 2 referral\(s\) closed before \S+ \(retention 30 days\)", last_line(dry.stdout)
        )
        for referral_id, snap in before.items():
            assert await snapshot(sessions, referral_id) == snap

        done = run_cli(["purge"], env, tmp_path)
        assert done.returncode == 0, done.stderr
        assert last_line(done.stdout).startswith("purged 2 referral(s) closed before ")
        for s in old:
            assert personal_left(await snapshot(sessions, s.referral_id)) == []
        for s in (young, open_):
            assert await snapshot(sessions, s.referral_id) == before[s.referral_id]

        again = run_cli(["purge"], env, tmp_path)
        assert again.returncode == 0, again.stderr
        assert last_line(again.stdout).startswith("purged 0 referral(s)")
    finally:
        await engine.dispose()


def test_an_unmigrated_read_model_is_one_line(tmp_path: Path) -> None:
    result = run_cli(["purge"], purge_env(tmp_path), tmp_path)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("referrals: purge failed:"), line


@pytest.mark.parametrize("days", ["0", "-5"])
def test_retention_below_one_day_is_refused(tmp_path: Path, days: str) -> None:
    result = run_cli(["purge", "--dry-run"], purge_env(tmp_path, REFERRALS_RETENTION_DAYS=days), tmp_path)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert "REFERRALS_RETENTION_DAYS" in line


async def test_worker_creates_the_daily_purge_schedule(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    temporal_server: TemporalServer,
    services: Callable[..., Service],
) -> None:
    attach_log(request, "temporal dev server", temporal_server.log_file)
    queue = f"e2e-{uuid.uuid4().hex[:12]}"
    env = purge_env(
        tmp_path,
        REFERRALS_TEMPORAL_ADDRESS=temporal_server.address,
        REFERRALS_TASK_QUEUE=queue,
        REFERRALS_SECRET_KEY=SECRET_KEY,
        REFERRALS_PURGE_TIME="03:45",
    )
    upgrade(env["REFERRALS_DATABASE_URL"])
    logs = tmp_path / "logs"
    logs.mkdir()
    worker = services("worker", [REFERRALS, "worker"], env=env, cwd=tmp_path, logs=logs).start()
    client = await Client.connect(
        temporal_server.address, data_converter=data_converter(encryption_key=None, secret=SECRET_KEY)
    )

    await eventually(
        lambda: "worker.started" in worker.stderr(), within=30, what="the worker to start", alive=[worker]
    )
    description = await client.get_schedule_handle(PURGE_SCHEDULE_ID).describe()
    [calendar] = description.schedule.spec.calendars
    assert (calendar.hour[0].start, calendar.minute[0].start) == (3, 45)
    action = description.schedule.action
    assert isinstance(action, ScheduleActionStartWorkflow)
    assert action.task_queue == queue
    [value] = await client.data_converter.decode(list(action.args), [PurgeWorkflowInput])
    assert value == PurgeWorkflowInput(retention_days=30)
    assert "schedules.not_ensured" not in worker.stderr()
