"""The Temporal worker: builds the activities' dependencies and runs ReferralWorkflow."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client
from temporalio.worker import Worker

from activities.deadlines import DeadlineActivities
from activities.notify import NotifyActivities, SmtpTarget
from activities.records import RecordActivities
from codec import data_converter
from config import Settings
from models.db import session_factory
from models.policy import Policy, load_policy
from web.links import AckLinks
from workflows.referral import ReferralWorkflow

WORKFLOWS: Sequence[type] = (ReferralWorkflow,)


async def connect(settings: Settings, *, secret: str) -> Client:
    """A Temporal client with the project's data converter (pydantic payloads, AES-GCM encrypted)."""
    return await Client.connect(
        settings.resolved_temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=data_converter(encryption_key=settings.encryption_key, secret=secret),
    )


def activities_for(settings: Settings, *, policy: Policy, secret: str, engine: AsyncEngine) -> list[Any]:
    """The activity callables, with their dependencies built from settings."""
    sessions = session_factory(engine)
    links = AckLinks(secret, settings.public_url)
    smtp = SmtpTarget.from_url(settings.smtp_url) if settings.smtp_url else None
    deadlines = DeadlineActivities(policy)
    records = RecordActivities(sessions)
    notify = NotifyActivities(sessions, links=links, mail_from=settings.mail_from, smtp=smtp)
    return [deadlines.plan_handoff, records.project_referral, notify.send_email]


def build_worker(
    client: Client, settings: Settings, *, secret: str, engine: AsyncEngine, policy: Policy | None = None
) -> Worker:
    """A worker on the configured task queue with every workflow and activity registered.

    The caller owns `engine` (the read model's) and disposes of it after the worker stops.
    """
    policy = policy or load_policy(settings.policy_file)
    return Worker(
        client,
        task_queue=settings.task_queue,
        workflows=list(WORKFLOWS),
        activities=activities_for(settings, policy=policy, secret=secret, engine=engine),
        activity_executor=ThreadPoolExecutor(max_workers=4),
        max_cached_workflows=10_000,
    )
