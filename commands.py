"""Commands to Temporal: intake by update-with-start, then Updates for each decision.

The API never writes a referral row; it asks the referral's workflow, which validates the
command against its state and answers synchronously.
"""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta
from typing import Any

from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from models import identity
from models.payloads import (
    AcknowledgeInput,
    Actor,
    DecisionInput,
    DeclineInput,
    IntakeResult,
    ReferralDetails,
    ReferralInput,
    ReferralState,
    TransferInput,
    UpdateResult,
)
from workflows.referral import CLOSED, CONFLICT, NOT_AWAITING, ReferralWorkflow


class CommandError(Exception):
    """A command refused: `code` is conflict, not_awaiting, not_found, closed or unavailable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# An Update answers within seconds when a worker runs (it waits at most 5 s for the read
# model). Past this, no worker is serving: answer 503 so the caller retries, rather than
# hanging. A retried intake lands on the same workflow, so nothing is duplicated.
UPDATE_TIMEOUT = timedelta(seconds=20)

_UNAVAILABLE = {RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED}


def _refusal(exc: BaseException) -> CommandError:
    if isinstance(exc, WorkflowUpdateFailedError) and isinstance(exc.cause, ApplicationError):
        codes = {CONFLICT: "conflict", NOT_AWAITING: "not_awaiting", CLOSED: "closed"}
        code = codes.get(exc.cause.type or "", "refused")
        return CommandError(code, exc.cause.message)
    if isinstance(exc, WorkflowUpdateRPCTimeoutOrCancelledError):
        return CommandError("unavailable", "the workflow did not answer in time; retry")
    if isinstance(exc, RPCError):
        if exc.status == RPCStatusCode.NOT_FOUND:
            return CommandError("closed", "this referral is closed")
        if exc.status in _UNAVAILABLE:
            return CommandError("unavailable", "Temporal is unreachable; retry")
    raise exc


async def _retrieve(start: WithStartWorkflowOperation[Any, Any]) -> None:
    # The start operation keeps the failure in a future of its own; read it so asyncio does
    # not report it as never retrieved.
    with contextlib.suppress(Exception):
        await start.workflow_handle()


def intake_input(
    details: ReferralDetails, *, actor: Actor, received_at: datetime, respond_async: bool = False
) -> ReferralInput:
    """The workflow's start input (and `submit` argument) for a submitted referral."""
    rid = identity.referral_id(details.force, details.police_reference)
    return ReferralInput(
        referral_id=rid,
        reference=identity.reference_for(rid),
        fingerprint=identity.fingerprint(details),
        received_at=received_at,
        submitted_by=actor,
        details=details,
        respond_async=respond_async,
    )


class ReferralCommands:
    """Sends commands to referral workflows on one task queue."""

    def __init__(
        self, client: Client, task_queue: str, *, update_timeout: timedelta = UPDATE_TIMEOUT
    ) -> None:
        self.client = client
        self.task_queue = task_queue
        self.update_timeout = update_timeout

    async def submit(self, details: ReferralDetails, *, actor: Actor, received_at: datetime) -> IntakeResult:
        """Start the referral's workflow, or land on the existing one with the same key."""
        input = intake_input(details, actor=actor, received_at=received_at)
        rid = input.referral_id
        start = WithStartWorkflowOperation(
            ReferralWorkflow.run,
            input,
            id=identity.workflow_id(rid),
            task_queue=self.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            # A closed referral is never started again under the same key.
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        )
        try:
            return await self.client.execute_update_with_start_workflow(
                ReferralWorkflow.submit,
                input,
                start_workflow_operation=start,
                rpc_timeout=self.update_timeout,
            )
        except (
            WorkflowAlreadyStartedError,
            RPCError,
            WorkflowUpdateFailedError,
            WorkflowUpdateRPCTimeoutOrCancelledError,
        ) as exc:
            await _retrieve(start)
            # Some servers report a closed workflow under REJECT_DUPLICATE as a bare ALREADY_EXISTS.
            if isinstance(exc, WorkflowAlreadyStartedError) or (
                isinstance(exc, RPCError) and exc.status == RPCStatusCode.ALREADY_EXISTS
            ):
                return await self._closed_duplicate(input)
            raise _refusal(exc) from exc

    async def submit_async(
        self, details: ReferralDetails, *, actor: Actor, received_at: datetime
    ) -> IntakeResult:
        """Start the referral's workflow and answer as soon as Temporal holds it (respond-async).

        `projected` is False: the workflow plans and lists the referral moments later. A referral
        already started (a resubmission, or a race with another) takes `submit`'s path, which
        answers duplicate or conflict from the workflow itself.
        """
        input = intake_input(details, actor=actor, received_at=received_at, respond_async=True)
        try:
            await self.client.start_workflow(
                ReferralWorkflow.run,
                input,
                id=identity.workflow_id(input.referral_id),
                task_queue=self.task_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                rpc_timeout=self.update_timeout,
            )
        except WorkflowAlreadyStartedError:
            return await self.submit(details, actor=actor, received_at=received_at)
        except RPCError as exc:
            if exc.status == RPCStatusCode.ALREADY_EXISTS:
                return await self.submit(details, actor=actor, received_at=received_at)
            raise _refusal(exc) from exc
        return IntakeResult(created=True, projected=False, state=ReferralState.received(input))

    async def _closed_duplicate(self, input: ReferralInput) -> IntakeResult:
        state = await self.state(input.referral_id)
        if state.fingerprint != input.fingerprint:
            raise CommandError(
                "conflict", "this police reference was already used for a referral with different content"
            )
        return IntakeResult(created=False, projected=True, state=state)

    async def state(self, referral_id: str) -> ReferralState:
        """The workflow's own view of a referral (running or closed within retention)."""
        handle = self.client.get_workflow_handle(identity.workflow_id(referral_id))
        try:
            return await handle.query(ReferralWorkflow.state)
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                raise CommandError("not_found", "no such referral") from exc
            raise _refusal(exc) from exc

    async def decide(self, referral_id: str, input: DecisionInput) -> UpdateResult:
        """The front door's decision."""
        return await self._update(referral_id, ReferralWorkflow.decide, input)

    async def acknowledge(self, referral_id: str, input: AcknowledgeInput) -> UpdateResult:
        """A receiving team's acknowledgement with its record id."""
        return await self._update(referral_id, ReferralWorkflow.acknowledge, input)

    async def transfer(self, referral_id: str, input: TransferInput) -> UpdateResult:
        """The front door's transfer to another authority."""
        return await self._update(referral_id, ReferralWorkflow.transfer, input)

    async def decline(self, referral_id: str, input: DeclineInput) -> UpdateResult:
        """Early Help's decline, back to the front door."""
        return await self._update(referral_id, ReferralWorkflow.decline, input)

    async def _update(self, referral_id: str, update: object, input: object) -> UpdateResult:
        handle = self.client.get_workflow_handle(identity.workflow_id(referral_id))
        try:
            result: UpdateResult = await handle.execute_update(  # type: ignore[call-overload]
                update, input, rpc_timeout=self.update_timeout
            )
        except (WorkflowUpdateFailedError, WorkflowUpdateRPCTimeoutOrCancelledError, RPCError) as exc:
            raise _refusal(exc) from exc
        return result
