"""A time-skipping Temporal test server and fake side-effect activities."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime

import pytest
import pytest_asyncio
from temporalio import activity
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.deadlines import DeadlineActivities
from commands import ReferralCommands
from models.payloads import EmailInput, EmailResult, ProjectInput
from models.policy import load_policy
from tests.conftest import ROOT, TEMPORAL_TEST_SERVER
from workflows.referral import ReferralWorkflow


@contextlib.asynccontextmanager
async def time_skipping_server() -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping test server of its own (never downloaded)."""
    async with await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(TEMPORAL_TEST_SERVER),
        data_converter=pydantic_data_converter,
    ) as environment:
        yield environment


@pytest_asyncio.fixture(scope="session")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    """One time-skipping server for the session.

    A module whose tests skip hours of time, or leave referrals open with timers pending,
    overrides `env` with a server of its own (`time_skipping_server`): the shared server's clock
    must stay near the wall clock, and later tests must not skip ahead to another test's timers.
    """
    async with time_skipping_server() as environment:
        yield environment


@dataclass
class Sent:
    """An email the fake activity was asked to send, with the server time it was scheduled."""

    email: EmailInput
    at: datetime


@dataclass
class FakeSideEffects:
    """Records emails and projections instead of sending and writing them."""

    emails: list[Sent] = field(default_factory=list)
    projections: list[ProjectInput] = field(default_factory=list)
    #: Ladder sends (not outcome feedback) fail this many attempts in all, like SMTP being down.
    failing_sends: int = 0
    attempts: int = 0
    #: Addresses the "mail server" refuses for good (an SMTP 550), as the real activity reports it.
    rejecting: frozenset[str] = frozenset()
    #: The server's clock, for sends made by a local activity (whose scheduled time is the
    #: worker's wall clock, not the time-skipping server's). Set by `Harness.worker()`.
    clock: Callable[[], Awaitable[datetime]] | None = None

    @activity.defn(name="send_email")
    async def send_email(self, input: EmailInput) -> EmailResult:
        """Record the message; the server's scheduled time stands for when it was sent."""
        self.attempts += 1
        if input.kind.value != "outcome" and self.failing_sends > 0:
            self.failing_sends -= 1
            raise ConnectionRefusedError("SMTP server unreachable (fake)")
        info = activity.info()
        at = await self.clock() if info.is_local and self.clock else info.current_attempt_scheduled_time
        self.emails.append(Sent(input, at))
        rejected = [r for r in input.recipients if r in self.rejecting]
        return EmailResult(
            message_id=f"<{input.key}@test>",
            status="rejected" if rejected and len(rejected) == len(input.recipients) else "sent",
            recipients=input.recipients,
            rejected=rejected,
            reply_code=550 if rejected else None,
        )

    @activity.defn(name="project_referral")
    async def project_referral(self, input: ProjectInput) -> None:
        """Record the projection."""
        self.projections.append(input)

    def of_kind(self, kind: str) -> list[Sent]:
        """Emails of one kind, in the order sent."""
        return [s for s in self.emails if s.email.kind.value == kind]


@dataclass
class Harness:
    """A worker on a fresh task queue, with the client commands the API uses."""

    client: Client
    commands: ReferralCommands
    fakes: FakeSideEffects
    env: WorkflowEnvironment
    queue: str
    deadlines: DeadlineActivities

    def worker(self) -> Worker:
        """A worker on this harness's task queue with the fakes and the real calendar."""
        if self.fakes.clock is None:
            self.fakes.clock = self.env.get_current_time
        return Worker(
            self.client,
            task_queue=self.queue,
            workflows=[ReferralWorkflow],
            activities=[self.deadlines.plan_handoff, self.fakes.send_email, self.fakes.project_referral],
        )


@pytest_asyncio.fixture
async def harness(env: WorkflowEnvironment, request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    """A worker with the real calendar activity (default policy, or the test's own)."""
    marker = request.node.get_closest_marker("policy")
    policy = load_policy(ROOT / "policies" / marker.args[0] if marker else None)
    fakes = FakeSideEffects()
    deadlines = DeadlineActivities(policy)
    queue = f"test-{uuid.uuid4()}"
    h = Harness(env.client, ReferralCommands(env.client, queue), fakes, env, queue, deadlines)
    async with h.worker():
        yield h
