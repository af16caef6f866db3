"""The worker's Temporal settings come from configuration."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import create_async_engine
from temporalio.testing import WorkflowEnvironment

from config import Settings
from models.policy import load_policy
from tests.conftest import TEMPORAL_TEST_SERVER
from worker import build_worker

SECRET = "s" * 40


@pytest.mark.parametrize(("variable", "expected"), [(None, 1000), ("250", 250)])
async def test_workflow_cache_is_the_setting(
    monkeypatch: pytest.MonkeyPatch, variable: str | None, expected: int
) -> None:
    if variable is not None:
        monkeypatch.setenv("REFERRALS_WORKFLOW_CACHE", variable)
    settings = Settings()
    engine = create_async_engine("sqlite+aiosqlite://")
    try:
        async with await WorkflowEnvironment.start_time_skipping(
            test_server_existing_path=str(TEMPORAL_TEST_SERVER)
        ) as env:
            worker = build_worker(
                env.client, settings, secret=SECRET, engine=engine, policy=load_policy(None)
            )
            assert worker.config()["max_cached_workflows"] == expected
    finally:
        await engine.dispose()
