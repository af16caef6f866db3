"""ReferralWorkflow: every hand-off of one referral is acknowledged or escalated.

The workflow is the single writer of a referral's state. Deadlines and ladders come from an
activity as absolute instants, so a change to the calendar or the policy never alters a
running referral's history on replay.
"""

# No `from __future__ import annotations` here: the sandbox executes this module for every
# workflow instance, and temporalio resolves the Updates' string annotations with
# typing.get_type_hints each time (about a tenth of a rebuild: BENCHMARKS.md, ninth run).

import asyncio
import contextlib
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

from workflows.referral_emails import (
    ACTIVITY_TIMEOUT,
    FOREVER,
    ReferralEmails,
)

with workflow.unsafe.imports_passed_through():
    from models.early_help_payloads import CASE_SYSTEM, LookupInput, LookupResult
    from models.enums import (
        OUTCOME_TEAM,
        TRANSFERRED,
        DeclineReason,
        EventType,
        MessageKind,
        Outcome,
        Status,
        StepKind,
        Team,
    )
    from models.payloads import (
        AcknowledgeInput,
        Actor,
        DecisionInput,
        DeclineInput,
        EmailResult,
        HandoffPlan,
        HandoffState,
        IntakeResult,
        PlanHandoffInput,
        PlannedSend,
        ProjectInput,
        ReferralEvent,
        ReferralInput,
        ReferralState,
        TransferInput,
        UpdateResult,
    )

# How long an Update waits for the read model before answering "accepted, not yet listed".
SETTLE_TIMEOUT = timedelta(seconds=5)
#: Updates wait for the version at which the next hand-off (or the close) was in place, not
#: for whatever came after it (the feedback email's record): histories before it waited longer.
SETTLE_ON_READY_PATCH = "settle-on-ready-version"

#: A few quick retries of a lookup; after that the next interval asks again.
LOOKUP_RETRY = RetryPolicy(initial_interval=timedelta(seconds=2), maximum_attempts=3)
LOOKUP_GIVE_UP = timedelta(minutes=5)
LOOKUP_NOTE = "Found in the Early Help case system by lookup"
NOT_AWAITING = "NotAwaiting"
#: A command for a referral already closed, while its workflow is still finishing (its last
#: emails and their receipts): answered as the API answers once the workflow has gone.
CLOSED = "Closed"
CONFLICT = "Conflict"


@workflow.defn
class ReferralWorkflow(ReferralEmails):
    """One referral, from intake to the last hand-off acknowledged."""

    @workflow.init
    def __init__(self, input: ReferralInput) -> None:
        self._input = input
        self._state = ReferralState.received(input)
        # Started without a `submit` Update (Prefer: respond-async): the start was the submission.
        self._submissions = 1 if input.respond_async else 0
        self._projected_version = 0
        self._projected_event_seq = 0
        # Set by the `reproject` signal: the next projection writes everything again.
        self._reproject = False
        # True while a decision or acknowledgement has been taken and the next hand-off
        # (or the close) is not yet in place; Updates wait for it to answer consistently.
        self._transitioning = True
        # The state's version when the last transition ended: what an Update waits to see listed.
        self._ready_version = 0
        # Feedback emails still in flight; the workflow finishes only after they are sent.
        self._pending: list[asyncio.Task[None]] = []
        self._owed_receipts = set()
        # The front door's transfer to another authority, once made: whom the next hand-off is to.
        self._transfer: TransferInput | None = None

    @workflow.run
    async def run(self, input: ReferralInput) -> ReferralState:
        """Open hand-offs until the referral closes, escalating each one that goes unanswered."""
        self._event(EventType.RECEIVED, actor=input.submitted_by, at=input.received_at)
        projector = asyncio.create_task(self._project_forever())
        team = Team.FRONT_DOOR
        while True:
            handoff = await self._open(team)
            self._ready()
            if handoff.lookup_every is not None:
                # Raced with the team's own acknowledgement; ends when the hand-off closes.
                self._pending.append(asyncio.create_task(self._look_up_record(handoff)))
            await self._watch(handoff)
            next_team = await self._after(handoff)
            if next_team is None:
                break
            team = next_team
        self._state.status = Status.CLOSED
        self._state.closed_at = workflow.now()
        self._event(EventType.CLOSED)
        self._ready()
        await asyncio.gather(*self._pending)
        await self._await_receipts()
        await workflow.wait_condition(
            lambda: self._projected_version >= self._state.version and workflow.all_handlers_finished()
        )
        projector.cancel()
        return self._state

    # ---- queries and updates -------------------------------------------------------------

    @workflow.query
    def state(self) -> ReferralState:
        """The referral's current state (no child data)."""
        return self._state

    @workflow.signal
    def reproject(self) -> None:
        """Project the whole state, details and chronology into SQL again (the reconciler's repair)."""
        # A signal, not a write from elsewhere: the workflow stays the read model's single writer.
        self._reproject = True

    @workflow.update
    async def submit(self, input: ReferralInput) -> IntakeResult:
        """Intake; a repeat of the same content is a duplicate that changes nothing."""
        created = self._submissions == 0
        self._submissions += 1
        if not created:
            self._event(EventType.DUPLICATE_SUBMISSION, actor=input.submitted_by)
        projected = await self._settle()
        return IntakeResult(created=created, projected=projected, state=self._state)

    @submit.validator
    def _validate_submit(self, input: ReferralInput) -> None:
        if input.fingerprint != self._input.fingerprint:
            raise ApplicationError(
                "this police reference was already used for a referral with different content",
                type=CONFLICT,
            )

    @workflow.update
    async def decide(self, input: DecisionInput) -> UpdateResult:
        """The front door's decision closes its hand-off; the main loop opens the next."""
        if not self._state.handoffs:
            # Sent moments after intake, while the front door's deadline is still being planned:
            # the decision waits for its hand-off to open rather than being refused. (No history
            # recorded before this change took this branch: their decisions all found it open.)
            await workflow.wait_condition(lambda: bool(self._state.handoffs) and not self._transitioning)
        handoff = self._open_handoff(Team.FRONT_DOOR)
        self._transitioning = True
        self._close_handoff(handoff, result=input.outcome.value, actor=input.actor, note=input.note)
        self._state.outcome = input.outcome
        self._event(
            EventType.DECIDED,
            actor=input.actor,
            handoff=handoff,
            data={"outcome": input.outcome.value, "note": input.note or None},
        )
        return UpdateResult(projected=await self._settle(), state=self._state)

    @decide.validator
    def _validate_decide(self, input: DecisionInput) -> None:
        if self._state.handoffs:
            self._open_handoff(Team.FRONT_DOOR)

    @workflow.update
    async def transfer(self, input: TransferInput) -> UpdateResult:
        """The front door passes the referral to another authority's front door.

        Closes the front-door hand-off as "transferred"; the main loop tells the referrer and
        opens a hand-off to that authority, escalated like any other until it is acknowledged.
        (Added after the recorded histories: only referrals that take it ever reach its branches.)
        """
        if not self._state.handoffs:
            await workflow.wait_condition(lambda: bool(self._state.handoffs) and not self._transitioning)
        handoff = self._open_handoff(Team.FRONT_DOOR)
        self._transitioning = True
        self._transfer = input
        self._close_handoff(handoff, result=TRANSFERRED, actor=input.actor, note=input.note)
        handoff.authority = input.authority
        handoff.authority_name = input.authority_name
        self._event(
            EventType.TRANSFERRED,
            actor=input.actor,
            handoff=handoff,
            data={
                "authority": input.authority,
                "authority_name": input.authority_name,
                "note": input.note or None,
            },
        )
        return UpdateResult(projected=await self._settle(), state=self._state)

    @transfer.validator
    def _validate_transfer(self, input: TransferInput) -> None:
        if self._state.handoffs:
            self._open_handoff(Team.FRONT_DOOR)

    @workflow.update
    async def acknowledge(self, input: AcknowledgeInput) -> UpdateResult:
        """A receiving team records the referral; its hand-off is done."""
        handoff = self._open_handoff(input.team)
        self._acknowledged(handoff, input.record_id, input.actor, input.note)
        return UpdateResult(projected=await self._settle(), state=self._state)

    def _acknowledged(self, handoff: HandoffState, record_id: str, actor: Actor, note: str) -> None:
        self._transitioning = True
        self._close_handoff(handoff, result="acknowledged", actor=actor, note=note, record=record_id)
        self._state.record_id = record_id
        self._event(
            EventType.ACKNOWLEDGED,
            actor=actor,
            handoff=handoff,
            data={"record_id": record_id, "note": note or None},
        )

    @acknowledge.validator
    def _validate_acknowledge(self, input: AcknowledgeInput) -> None:
        if input.team == Team.FRONT_DOOR:
            raise ApplicationError(
                "the front door records a decision, not an acknowledgement", type=NOT_AWAITING
            )
        self._open_handoff(input.team)

    @workflow.update
    async def decline(self, input: DeclineInput) -> UpdateResult:
        """Early Help hands the referral back to the front door for review."""
        handoff = self._open_handoff(Team.EARLY_HELP)
        self._transitioning = True
        self._close_handoff(handoff, result=input.reason.value, actor=input.actor, note=input.note)
        self._event(
            EventType.DECLINED,
            actor=input.actor,
            handoff=handoff,
            data={"reason": input.reason.value, "note": input.note or None},
        )
        return UpdateResult(projected=await self._settle(), state=self._state)

    @decline.validator
    def _validate_decline(self, input: DeclineInput) -> None:
        self._open_handoff(Team.EARLY_HELP)

    # ---- hand-offs -----------------------------------------------------------------------

    async def _open(self, team: Team) -> HandoffState:
        opened_at = workflow.now()
        authority = self._transfer if team == Team.OTHER_AUTHORITY else None
        plan: HandoffPlan = await self._run_activity(
            "plan_handoff",
            PlanHandoffInput(
                referral_id=self._input.referral_id,
                team=team,
                risk=self._input.details.risk,
                opened_at=opened_at,
                referrer_email=self._input.details.referrer.email,
                authority=authority.authority if authority else None,
            ),
            result_type=HandoffPlan,
        )
        handoff = HandoffState(
            seq=len(self._state.handoffs) + 1,
            team=team,
            team_name=plan.team_name,
            opened_at=opened_at,
            due_at=plan.due_at,
            plan=plan.sends,
            fallback=plan.fallback,
            lookup_every=plan.lookup_every,
            authority=authority.authority if authority else None,
            authority_name=plan.team_name if authority else None,
        )
        self._state.handoffs.append(handoff)
        self._state.status = (
            Status.AWAITING_DECISION if team == Team.FRONT_DOOR else Status.AWAITING_ACKNOWLEDGEMENT
        )
        self._event(
            EventType.HANDOFF_OPENED,
            handoff=handoff,
            data={
                "due_at": plan.due_at.isoformat(),
                "team_email": plan.team_email,
                # Only on a hand-off to another authority (None is left out of the event).
                "authority": handoff.authority,
                "authority_name": handoff.authority_name,
            },
        )
        return handoff

    async def _watch(self, handoff: HandoffState) -> None:
        """Sleep to each ladder send in turn until the hand-off is closed."""
        while handoff.closed_at is None:
            now = workflow.now()
            waiting = [s for s in handoff.plan if (s.step, s.repeat) not in handoff.done]
            due = [s for s in waiting if s.at <= now]
            if due:
                await self._send_due(handoff, due)
                continue
            if not waiting:
                await workflow.wait_condition(lambda: handoff.closed_at is not None)
                return
            sleep = min(s.at for s in waiting) - now
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(lambda: handoff.closed_at is not None, timeout=sleep)

    async def _send_due(self, handoff: HandoffState, due: list[PlannedSend]) -> None:
        # Several repeats of one step that fell due while nothing ran are sent once, as the
        # latest repeat; earlier steps still go out in ladder order.
        latest: dict[int, PlannedSend] = {}
        for send in due:
            if send.step not in latest or send.repeat > latest[send.step].repeat:
                latest[send.step] = send
        for step in sorted(latest):
            send = latest[step]
            skipped = [s.repeat for s in due if s.step == step and s.repeat != send.repeat]
            for repeat in skipped:
                handoff.done.append((step, repeat))
            if skipped:
                self._event(
                    EventType.STEPS_COLLAPSED,
                    handoff=handoff,
                    data={"step": step, "repeats": [str(r) for r in skipped], "sent_as": send.repeat},
                )
            if handoff.closed_at is not None:
                return
            await self._send_step(handoff, send)

    async def _send_step(self, handoff: HandoffState, send: PlannedSend) -> None:
        kind = MessageKind.REMINDER if send.kind == StepKind.REMINDER else MessageKind.ESCALATION
        email = self._email(handoff, kind, step=send.step, repeat=send.repeat, to=send.recipients)
        task = workflow.start_activity(
            "send_email",
            email,
            result_type=EmailResult,
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            retry_policy=FOREVER,
            cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
        )
        # An acknowledgement while SMTP is down cancels the pending send rather than
        # letting a stale escalation out once the server returns.
        await workflow.wait_condition(lambda: task.done() or handoff.closed_at is not None)
        if not task.done():
            task.cancel()
        try:
            result = await task
        except ActivityError:
            return
        handoff.done.append((send.step, send.repeat))
        if send.kind == StepKind.ESCALATION:
            handoff.escalation_level += 1
        self._record_email(handoff, email, result)
        copy = self._check_delivery(handoff, email, result)
        if copy is not None:
            # Beside the ladder, like outcome feedback: the next step must not wait on it.
            self._pending.append(asyncio.create_task(self._send_fallback(handoff, copy)))

    async def _look_up_record(self, handoff: HandoffState) -> None:
        """Every `lookup_every` while the hand-off is open, ask the team's case system for a record.

        A record found acknowledges the hand-off with its id, exactly as the team would; if the
        team acknowledged meanwhile, the lookup's answer is ignored. A case system that does not
        answer is asked again at the next interval (the ladder goes on regardless).
        """
        assert handoff.lookup_every is not None
        while handoff.closed_at is None:
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(
                    lambda: handoff.closed_at is not None, timeout=handoff.lookup_every
                )
            if handoff.closed_at is not None:
                return
            try:
                found: LookupResult = await workflow.execute_activity(
                    "lookup_case_record",
                    LookupInput(
                        referral_id=self._input.referral_id,
                        reference=self._input.reference,
                        police_reference=self._input.details.police_reference,
                    ),
                    result_type=LookupResult,
                    start_to_close_timeout=ACTIVITY_TIMEOUT,
                    # Bounded however the lookup is (not) served: a closing referral waits for an
                    # in-flight lookup before it finishes.
                    schedule_to_close_timeout=LOOKUP_GIVE_UP,
                    retry_policy=LOOKUP_RETRY,
                )
            except ActivityError:
                continue
            if found.record_id is not None and handoff.closed_at is None and not self._transitioning:
                self._acknowledged(handoff, found.record_id, CASE_SYSTEM, LOOKUP_NOTE)

    async def _after(self, handoff: HandoffState) -> Team | None:
        """The next team after a closed hand-off, or None when the referral closes."""
        result = handoff.result or ""
        if handoff.team == Team.FRONT_DOOR and result == TRANSFERRED:
            # The referrer hears where it went, beside the other authority's clock.
            self._spawn_feedback(handoff)
            return Team.OTHER_AUTHORITY
        if handoff.team == Team.FRONT_DOOR:
            outcome = Outcome(result)
            if outcome == Outcome.NO_FURTHER_ACTION:
                # Working Together: the referrer is told the outcome, NFA included, before it closes.
                await self._feedback(handoff)
                return None
            self._spawn_feedback(handoff)
            return OUTCOME_TEAM[outcome]
        if handoff.team == Team.EARLY_HELP and result in {r.value for r in DeclineReason}:
            self._spawn_feedback(handoff)
            return Team.FRONT_DOOR
        self._spawn_feedback(handoff)
        return None

    # ---- state ---------------------------------------------------------------------------

    def _open_handoff(self, team: Team) -> HandoffState:
        """The open hand-off to `team`, or an Update failure the API turns into 409."""
        if self._state.status == Status.CLOSED:
            raise ApplicationError("this referral is closed", type=CLOSED)
        current = self._state.current
        if current is None or current.team != team or self._transitioning:
            waiting = "nobody" if current is None else current.team.value
            raise ApplicationError(
                f"referral is not awaiting {team.value} (awaiting {waiting})", type=NOT_AWAITING
            )
        return current

    def _close_handoff(
        self, handoff: HandoffState, *, result: str, actor: Actor, note: str, record: str | None = None
    ) -> None:
        handoff.closed_at = workflow.now()
        handoff.result = result
        handoff.closed_by = actor
        handoff.note = note
        handoff.record_id = record

    def _event(
        self,
        type: EventType,
        *,
        actor: Actor | None = None,
        handoff: HandoffState | None = None,
        data: dict[str, str | int | list[str] | None] | None = None,
        at: datetime | None = None,
    ) -> None:
        self._state.events.append(
            ReferralEvent(
                seq=len(self._state.events) + 1,
                type=type,
                at=at or workflow.now(),
                actor=actor,
                handoff_seq=handoff.seq if handoff else None,
                team=handoff.team if handoff else None,
                data={k: v for k, v in (data or {}).items() if v is not None},
            )
        )
        self._state.version += 1

    def _ready(self) -> None:
        """The next hand-off (or the close) is in place: Updates may answer once it is listed."""
        self._transitioning = False
        self._ready_version = self._state.version

    async def _settle(self) -> bool:
        """Wait (bounded) until the next hand-off is open and the read model shows it."""
        # Patched: the Update's own change and the transition it started, not the emails after it.
        asked = self._state.version if workflow.patched(SETTLE_ON_READY_PATCH) else None

        def listed() -> bool:
            if asked is None:
                return self._projected_version >= self._state.version
            return self._projected_version >= max(asked, self._ready_version)

        try:
            await workflow.wait_condition(
                lambda: not self._transitioning and listed(), timeout=SETTLE_TIMEOUT
            )
        except TimeoutError:
            return False
        return True

    async def _project_forever(self) -> None:
        # One projection at a time, always of the latest state: ordered and coalesced.
        while True:
            await workflow.wait_condition(
                lambda: self._state.version > self._projected_version or self._reproject
            )
            # A reprojection sends every event again: the row may be gone with its chronology,
            # and events already there are skipped by their (referral, seq) key.
            since = 0 if self._reproject else self._projected_event_seq
            self._reproject = False
            version = self._state.version
            events = [e for e in self._state.events if e.seq > since]
            await self._run_activity(
                "project_referral",
                ProjectInput.frozen(self._state, events, self._input.submitted_by, self._input.details),
                result_type=type(None),
            )
            self._projected_version = version
            self._projected_event_seq = max([self._projected_event_seq, *(e.seq for e in events)])
