"""The Temporal worker: builds the activities' dependencies, runs the workflows, keeps the Schedules."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleCalendarSpec,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleRange,
    ScheduleSpec,
    ScheduleUpdate,
    ScheduleUpdateInput,
)
from temporalio.worker import Worker

from activities.deadlines import DeadlineActivities
from activities.early_help import CaseSystemActivities
from activities.notify import NotifyActivities
from activities.notify_channel import NotifyChannel
from activities.outbox import SmtpTarget
from activities.reconcile import ReconcileActivities
from activities.records import RecordActivities
from activities.retention import RetentionActivities
from codec import data_converter
from config import Settings
from models.db import session_factory
from models.policy import Policy, load_policy
from models.reconcile_payloads import ReconcileWorkflowInput
from models.retention_payloads import PurgeWorkflowInput
from temporal_connection import client_options
from web.links import AckLinks
from workflow_runner import workflow_runner
from workflows.reconcile import ReconcileWorkflow
from workflows.referral import ReferralWorkflow
from workflows.retention import PurgeWorkflow

log = structlog.get_logger("referrals.worker")

WORKFLOWS: Sequence[type] = (ReferralWorkflow, PurgeWorkflow, ReconcileWorkflow)

#: Fixed id, so every worker start finds (rather than duplicates) the one daily purge.
PURGE_SCHEDULE_ID = "referrals-purge"
#: The purge's time of day (REFERRALS_PURGE_TIME) is read in UK local time.
PURGE_TIME_ZONE = "Europe/London"
#: Fixed id, like the purge's: one reconciler for the namespace's referrals on this task queue.
RECONCILE_SCHEDULE_ID = "referrals-reconcile"


async def connect(settings: Settings, *, secret: str) -> Client:
    """A Temporal client with the project's data converter (pydantic payloads, AES-GCM encrypted)."""
    return await Client.connect(
        settings.resolved_temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=data_converter(encryption_key=settings.encryption_key, secret=secret),
        **client_options(settings),
    )


def activities_for(
    settings: Settings, *, policy: Policy, secret: str, engine: AsyncEngine, client: Client | None = None
) -> list[Any]:
    """The activity callables, built from settings; the reconciler's only with a `client`."""
    sessions = session_factory(engine)
    links = AckLinks(secret, settings.public_url)
    smtp = SmtpTarget.from_url(settings.smtp_url) if settings.smtp_url else None
    deadlines = DeadlineActivities(policy)
    records = RecordActivities(sessions)
    notify = NotifyActivities(sessions, links=links, mail_from=settings.mail_from, smtp=smtp)
    # GOV.UK Notify, when configured, carries every email instead of SMTP.
    channel = NotifyChannel.from_settings(settings)
    notify.outbox.notify = channel
    retention = RetentionActivities(sessions)
    activities: list[Any] = [
        deadlines.plan_handoff,
        records.project_referral,
        notify.send_email,
        retention.purge_closed_referrals,
    ]
    if policy.integrations.early_help.lookup_url is not None:
        # Plans ask for lookups only while a case system is configured: no activity, no lookups.
        activities.append(CaseSystemActivities(policy.integrations.early_help).lookup)
    if client is not None:
        reconcile = ReconcileActivities(
            sessions, client, admin_emails=settings.admin_emails, mail_from=settings.mail_from, smtp=smtp
        )
        reconcile.outbox.notify = channel
        activities += [
            reconcile.begin,
            reconcile.rows_page,
            reconcile.workflows_page,
            reconcile.confirm,
            reconcile.report,
        ]
    return activities


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
        activities=activities_for(settings, policy=policy, secret=secret, engine=engine, client=client),
        activity_executor=ThreadPoolExecutor(max_workers=4),
        max_cached_workflows=settings.workflow_cache,
        workflow_runner=workflow_runner(),
    )


def purge_schedule(settings: Settings) -> Schedule:
    """The daily purge: PurgeWorkflow at REFERRALS_PURGE_TIME, UK time, never two at once."""
    hour, minute = (int(part) for part in settings.purge_time.split(":"))
    return Schedule(
        action=ScheduleActionStartWorkflow(
            PurgeWorkflow.run,
            PurgeWorkflowInput(retention_days=settings.retention_days),
            id=PURGE_SCHEDULE_ID,
            task_queue=settings.task_queue,
        ),
        spec=ScheduleSpec(
            calendars=[
                ScheduleCalendarSpec(
                    hour=(ScheduleRange(hour),),
                    minute=(ScheduleRange(minute),),
                    comment="daily retention purge",
                )
            ],
            time_zone_name=PURGE_TIME_ZONE,
        ),
        # SKIP: a purge still running (a large backlog) is not joined by the next day's.
        # One day of catch-up: after an outage one purge runs, not one per missed day.
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP, catchup_window=timedelta(days=1)),
    )


def reconcile_schedule(settings: Settings) -> Schedule:
    """The reconciler: ReconcileWorkflow every REFERRALS_RECONCILE_EVERY, never two at once."""
    return Schedule(
        action=ScheduleActionStartWorkflow(
            ReconcileWorkflow.run,
            ReconcileWorkflowInput(task_queue=settings.task_queue),
            id=RECONCILE_SCHEDULE_ID,
            task_queue=settings.task_queue,
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=settings.reconcile_every)]),
        # SKIP: a slow run is not joined by the next. A catch-up window of one interval: after an
        # outage one run looks at the present, not one per missed interval.
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP, catchup_window=settings.reconcile_every),
    )


async def ensure_schedules(client: Client, settings: Settings) -> None:
    """Create the purge and reconciler Schedules, or bring existing ones up to date with the settings."""
    await _ensure_schedule(client, PURGE_SCHEDULE_ID, purge_schedule(settings), PurgeWorkflowInput)
    await _ensure_schedule(
        client, RECONCILE_SCHEDULE_ID, reconcile_schedule(settings), ReconcileWorkflowInput
    )


async def _ensure_schedule(client: Client, schedule_id: str, desired: Schedule, input_type: type) -> None:
    """Create one Schedule, or replace its times, policy and action when they differ from `desired`."""
    try:
        await client.create_schedule(schedule_id, desired)
        log.info("schedule.created", schedule=schedule_id)
        return
    except ScheduleAlreadyRunningError:
        pass
    handle = client.get_schedule_handle(schedule_id)
    current = (await handle.describe()).schedule
    if await _same_schedule(client, current, desired, input_type):
        return

    def replace(update: ScheduleUpdateInput) -> ScheduleUpdate:
        # Times, policy and action are replaced; the state (paused by an operator, say) is kept.
        kept = update.description.schedule.state
        return ScheduleUpdate(schedule=dataclasses.replace(desired, state=kept))

    await handle.update(replace)
    log.info("schedule.updated", schedule=schedule_id)


async def _same_schedule(client: Client, current: Schedule, desired: Schedule, input_type: type) -> bool:
    """Whether the server's schedule already has the desired times, policy, workflow and input."""
    action, wanted = current.action, desired.action
    if not isinstance(action, ScheduleActionStartWorkflow) or not isinstance(
        wanted, ScheduleActionStartWorkflow
    ):
        return False
    if (action.workflow, action.task_queue, action.id) != (wanted.workflow, wanted.task_queue, wanted.id):
        return False
    if (current.policy.overlap, current.policy.catchup_window) != (
        desired.policy.overlap,
        desired.policy.catchup_window,
    ):
        return False
    if _times(current.spec) != _times(desired.spec):
        return False
    try:
        # The server returns the input as encoded (encrypted) payloads.
        [arg] = await client.data_converter.decode(list(action.args), [input_type])
    except Exception:  # an undecodable input (an older key, another type) is replaced
        return False
    [wanted_arg] = wanted.args
    return bool(arg == wanted_arg)


def _times(spec: ScheduleSpec) -> tuple[object, ...]:
    """The parts of a spec that decide when it fires, comparable whatever the server filled in."""
    return (
        spec.time_zone_name,
        tuple(
            (
                tuple(c.hour),
                tuple(c.minute),
                tuple(c.second),
                tuple(c.day_of_week),
                tuple(c.day_of_month),
                tuple(c.month),
                tuple(c.year),
            )
            for c in spec.calendars
        ),
        tuple(spec.cron_expressions),
        tuple(spec.intervals),
        tuple(spec.skip),
        spec.start_at,
        spec.end_at,
        spec.jitter,
    )
