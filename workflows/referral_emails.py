"""The referral workflow's email: ladder messages, outcome feedback and the delivery fallback.

A mixin of `ReferralWorkflow` (it reads and writes that workflow's state, and runs only inside
it): what to send, to whom, under which idempotency key, and what to record when the mail server
refuses a message for good.
"""

# No `from __future__ import annotations` here: the sandbox executes this module for every
# workflow instance, and temporalio resolves the Updates' string annotations with
# typing.get_type_hints each time (about a tenth of a rebuild: BENCHMARKS.md, ninth run).

import asyncio
import contextlib
from datetime import datetime, timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import FailureError

with workflow.unsafe.imports_passed_through():
    from models.enums import EventType, MessageKind
    from models.notify_payloads import DeliveryStatusInput
    from models.payloads import (
        Actor,
        EmailInput,
        EmailResult,
        HandoffState,
        ReferralInput,
        ReferralState,
    )

# Activities never give up: a referral must not be dropped because SMTP or the database
# was down for a while. Backoff caps at five minutes so recovery is noticed quickly.
FOREVER = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=5),
    maximum_attempts=0,
)
ACTIVITY_TIMEOUT = timedelta(seconds=30)
#: Guards the fallback after a permanent rejection (added 2026-11-26); the recorded
#: histories in tests/histories/ prove that referrals started before it still replay.
DELIVERY_FALLBACK_PATCH = "delivery-fallback"
#: Guards what a GOV.UK Notify delivery receipt adds (added 2026-11-26): its event, and the
#: fallback copy after a permanent failure. No recorded history holds the signal.
DELIVERY_STATUS_PATCH = "notify-delivery-status"
#: Guards the wait for Notify's receipts of outcome emails once a referral closes (added
#: 2026-11-26), so that a bounce arriving after the close still reaches the fallback recipients.
OUTCOME_RECEIPTS_PATCH = "await-outcome-receipts"
#: Planning a hand-off and projecting into SQL run as local activities, inside the workflow task,
#: in workflows started after this change (added 2026-11-26). An intake, a decision or an
#: escalation then takes one or two workflow tasks where it took three or four, a workflow
#: evicted from the cache is replayed fewer times in a burst, and the history keeps no copy of
#: each projection's input. Emails stay on the server's queue: an Update answers when its
#: workflow task completes and must not wait for the mail server, and the outbox's handling of a
#: send cancelled after its data went (an acknowledgement) stays as the chaos suite tests it.
#: Memoized per run: a history recorded before it replays with its server-side activities.
LOCAL_ACTIVITIES_PATCH = "local-activities"
#: The local try's whole budget: planning and projecting take milliseconds. Past it (a database
#: away or not answering) the same activity goes to the server's queue with FOREVER retries, as
#: before the change, so the workflow task is not held open and the ladder's timers, Updates and
#: signals go on being served.
LOCAL_BUDGET = timedelta(seconds=2)
LOCAL_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=200), maximum_attempts=3)
#: Notify keeps trying a temporarily failing email for 72 hours before its final receipt; a
#: closed referral's workflow waits a day more for it, then finishes regardless.
RECEIPT_WAIT = timedelta(days=4)


T = TypeVar("T")


class ReferralEmails:
    """Email steps of one referral's workflow (mixed into ReferralWorkflow)."""

    _input: ReferralInput
    _state: ReferralState
    _pending: list[asyncio.Task[None]]
    #: (message key, recipient in lower case) of outcome emails whose delivery receipt is owed.
    _owed_receipts: set[tuple[str, str]]

    def _event(
        self,
        type: EventType,
        *,
        actor: Actor | None = None,
        handoff: HandoffState | None = None,
        data: dict[str, str | int | list[str] | None] | None = None,
        at: datetime | None = None,
    ) -> None:
        raise NotImplementedError  # ReferralWorkflow's

    async def _run_activity(self, name: str, arg: Any, *, result_type: type[T]) -> T:
        """A quick activity's result (planning, projecting): a local try first, then through the
        server, retried forever."""
        if workflow.patched(LOCAL_ACTIVITIES_PATCH):
            try:
                local: T = await workflow.execute_local_activity(
                    name,
                    arg,
                    result_type=result_type,
                    schedule_to_close_timeout=LOCAL_BUDGET,
                    retry_policy=LOCAL_RETRY,
                )
                return local
            except FailureError as exc:
                # The last attempt's failure (an ApplicationError), or the budget's timeout.
                workflow.logger.warning("%s: local try failed (%s); handed to the server", name, exc)
        result: T = await workflow.execute_activity(
            name,
            arg,
            result_type=result_type,
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            retry_policy=FOREVER,
        )
        return result

    def _email(
        self, handoff: HandoffState, kind: MessageKind, *, step: int, repeat: int, to: list[str]
    ) -> EmailInput:
        step_name = "outcome" if kind == MessageKind.OUTCOME else str(step)
        return EmailInput(
            key=f"{self._input.referral_id}:{handoff.seq}:{step_name}:{repeat}",
            referral_id=self._input.referral_id,
            reference=self._input.reference,
            kind=kind,
            handoff_seq=handoff.seq,
            step=step,
            repeat=repeat,
            recipients=to,
            team=handoff.team,
            team_name=handoff.team_name,
            due_at=handoff.due_at,
            result=handoff.result,
            record_id=handoff.record_id,
            authority_name=handoff.authority_name,
        )

    async def _feedback(self, handoff: HandoffState) -> None:
        email = self._email(
            handoff, MessageKind.OUTCOME, step=0, repeat=0, to=[self._input.details.referrer.email]
        )
        # Through the server, never a local try: an Update answering in the same workflow task
        # would otherwise wait for the mail server too.
        result: EmailResult = await workflow.execute_activity(
            "send_email",
            email,
            result_type=EmailResult,
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            retry_policy=FOREVER,
        )
        self._record_email(handoff, email, result)
        self._expect_receipts(email, result)
        copy = self._check_delivery(handoff, email, result)
        if copy is not None:
            # Feedback is already beside the ladder (or is what closes an NFA referral): the
            # fallback copy goes out before the feedback counts as done.
            await self._send_fallback(handoff, copy)

    def _expect_receipts(self, email: EmailInput, result: EmailResult) -> None:
        """Note the receipts a channel will send for an outcome email (GOV.UK Notify's)."""
        if not result.receipts or not workflow.patched(OUTCOME_RECEIPTS_PATCH):
            return
        for recipient in result.recipients:
            owed = (email.key, recipient.lower())
            if recipient not in result.rejected and not self._has_receipt(*owed):
                self._owed_receipts.add(owed)

    def _has_receipt(self, key: str, recipient: str) -> bool:
        return any(
            e.type == EventType.DELIVERY_STATUS
            and e.data.get("key") == key
            and [str(a).lower() for a in e.data.get("to") or []] == [recipient]  # type: ignore[union-attr]
            for e in self._state.events
        )

    async def _await_receipts(self) -> None:
        """Once closed, wait (bounded) for the outcome emails' receipts: a bounce after the close
        still sends the fallback copy, so the referrer's silence never goes unnoticed."""
        if self._owed_receipts:
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(lambda: not self._owed_receipts, timeout=RECEIPT_WAIT)

    def _check_delivery(
        self, handoff: HandoffState, email: EmailInput, result: EmailResult
    ) -> EmailInput | None:
        """Record a permanent rejection; the copy to send to the fallback instead, if any."""
        if not result.rejected:
            return None
        # Only the new code ever sees a rejection (the activity used to retry it forever), but
        # the fallback adds commands to the history: guard it, as every such change is.
        if not workflow.patched(DELIVERY_FALLBACK_PATCH):
            return None
        if self._input.details.referrer.email in result.rejected:
            self._state.referrer_undeliverable = True
        # The manager may have had the original too: the copy still tells them it bounced.
        fallback = [a for a in handoff.fallback if a not in result.rejected]
        self._event(
            EventType.DELIVERY_FAILED,
            handoff=handoff,
            data={
                "kind": email.kind.value,
                "step": email.step,
                "repeat": email.repeat,
                "to": list(result.rejected),
                "reply_code": result.reply_code,
                "copy": "fallback" if email.undelivered_to else None,
                "fallback": None if email.undelivered_to else fallback,
            },
        )
        # A rejected fallback copy is recorded and nothing more is tried: never a loop.
        if email.undelivered_to or not fallback:
            return None
        return email.model_copy(
            update={
                "key": f"{email.key}:fallback",
                "recipients": fallback,
                "undelivered_to": list(result.rejected),
            }
        )

    async def _send_fallback(self, handoff: HandoffState, copy: EmailInput) -> None:
        result: EmailResult = await workflow.execute_activity(
            "send_email",
            copy,
            result_type=EmailResult,
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            retry_policy=FOREVER,
        )
        self._record_email(handoff, copy, result)
        self._check_delivery(handoff, copy, result)  # records a rejected copy; never another copy

    @workflow.signal
    async def delivery_status(self, input: DeliveryStatusInput) -> None:
        """GOV.UK Notify's delivery receipt for one recipient: recorded once; a bounce is told
        to the fallback recipients, as a refusal by the mail server is."""
        # A signal, not a write from the API: the workflow stays the chronology's single writer.
        if not workflow.patched(DELIVERY_STATUS_PATCH):
            return
        # Every status Notify calls back with is final for that recipient.
        self._owed_receipts.discard((input.key, input.recipient.lower()))
        handoff = next((h for h in self._state.handoffs if h.seq == input.handoff_seq), None)
        if handoff is None or self._receipt_seen(input):
            return  # Notify may call back twice for one status: the second changes nothing.
        copy: EmailInput | None = None
        fallback: list[str] | None = None
        if input.status == "permanent-failure" and not input.fallback_copy:
            if input.recipient.lower() == self._input.details.referrer.email.lower():
                self._state.referrer_undeliverable = True
            fallback = [a for a in handoff.fallback if a.lower() != input.recipient.lower()]
            # A bounced reminder or escalation of a hand-off acknowledged since is stale; an
            # outcome is not (the referrer must hear of it).
            if fallback and (input.kind == MessageKind.OUTCOME or handoff.closed_at is None):
                copy = self._receipt_copy(handoff, input, fallback)
            else:
                fallback = []
        self._event(
            EventType.DELIVERY_STATUS,
            handoff=handoff,
            data={
                "key": input.key,
                "kind": input.kind.value,
                "step": input.step,
                "repeat": input.repeat,
                "to": [input.recipient],
                "status": input.status,
                "notification_id": input.notification_id,
                "copy": "fallback" if input.fallback_copy else None,
                "fallback": fallback,
            },
        )
        if copy is not None:
            # Awaited by the handler, so the workflow does not finish before the copy is sent.
            await self._send_fallback(handoff, copy)

    def _receipt_seen(self, input: DeliveryStatusInput) -> bool:
        return any(
            e.type == EventType.DELIVERY_STATUS
            and e.data.get("key") == input.key
            and e.data.get("to") == [input.recipient]
            and e.data.get("status") == input.status
            for e in self._state.events
        )

    def _receipt_copy(
        self, handoff: HandoffState, input: DeliveryStatusInput, fallback: list[str]
    ) -> EmailInput:
        """The fallback copy of a bounced message, under a key of its own per bounce."""
        bounces = sum(
            1
            for e in self._state.events
            if e.type == EventType.DELIVERY_STATUS
            and e.data.get("key") == input.key
            and e.data.get("fallback")
        )
        original = self._email(handoff, input.kind, step=input.step, repeat=input.repeat, to=fallback)
        return original.model_copy(
            update={"key": f"{input.key}:bounce{bounces + 1}", "undelivered_to": [input.recipient]}
        )

    def _spawn_feedback(self, handoff: HandoffState) -> None:
        # Feedback runs beside the next hand-off's clock: a slow mail server must not
        # delay the next team's deadline or ladder.
        self._pending.append(asyncio.create_task(self._feedback(handoff)))

    def _record_email(self, handoff: HandoffState, email: EmailInput, result: EmailResult) -> None:
        if result.status == "rejected":
            return  # nobody got it: _check_delivery records delivery_failed instead
        self._event(
            EventType.EMAIL_SENT,
            handoff=handoff,
            data={
                "kind": email.kind.value,
                "step": email.step,
                "repeat": email.repeat,
                "to": list(result.recipients),
                "message_id": result.message_id,
                "status": result.status,
                "copy": "fallback" if email.undelivered_to else None,
            },
        )
