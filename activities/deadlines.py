"""The `plan_handoff` activity: a hand-off's due instant and ladder from the policy and calendar."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import structlog
from temporalio import activity

from activities.calendar import WorkingCalendar
from models.enums import StepKind, Team
from models.payloads import HandoffPlan, PlanHandoffInput, PlannedSend
from models.policy import DEFAULT_TEAM_NAMES, HandoffPolicy, Policy, Step

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Addressees:
    """Who `team` and `team_manager` mean on one hand-off, and who gets a refused message."""

    name: str
    team: str
    managers: tuple[str, ...]
    fallback: tuple[str, ...]


class DeadlineActivities:
    """Holds the policy and its calendar; the worker builds one per process."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.calendar = WorkingCalendar(policy.calendar)

    @activity.defn(name="plan_handoff")
    async def plan_handoff(self, input: PlanHandoffInput) -> HandoffPlan:
        """Compute the due instant and every ladder send as absolute instants."""
        return self.plan(input)

    def plan(self, input: PlanHandoffInput) -> HandoffPlan:
        """The same, callable without Temporal (tests, benchmarks)."""
        handoff = self._handoff_policy(input.team)
        to = self._addressees(input)
        due = self.calendar.add(input.opened_at, handoff.due[input.risk])
        sends: list[PlannedSend] = []
        for index, step in enumerate(handoff.steps):
            sends.extend(self._expand(index, step, due, to, input.referrer_email))
        sends.sort(key=lambda s: (s.at, s.step, s.repeat))
        fallback = list(to.fallback)
        extra = self.policy.delivery.fallback_email
        if extra is not None and extra not in fallback:
            fallback.append(extra)
        case_system = self.policy.integrations.early_help
        lookup = input.team == Team.EARLY_HELP and case_system.lookup_url is not None
        return HandoffPlan(
            due_at=due,
            team_name=to.name,
            team_email=to.team,
            sends=sends,
            fallback=fallback,
            lookup_every=case_system.poll_every.as_timedelta() if lookup else None,
        )

    def _handoff_policy(self, team: Team) -> HandoffPolicy:
        if team == Team.OTHER_AUTHORITY and team not in self.policy.handoffs:
            # A worker whose policy lists no transfers (the API's did): the front door's own
            # clock, so the transfer is still chased rather than stuck on a missing ladder.
            log.warning("plan_handoff.no_transfer_policy", fallback="front_door")
            return self.policy.handoffs[Team.FRONT_DOOR]
        return self.policy.handoffs[team]

    def _addressees(self, input: PlanHandoffInput) -> Addressees:
        if input.team != Team.OTHER_AUTHORITY:
            team = self.policy.teams[input.team]
            return Addressees(team.name, team.email, (team.manager_email,), (team.manager_email,))
        # Another authority: its front door acts; its manager and our own front door's manager
        # hear when it does not. Our front door's manager also gets a copy the mail server refused.
        ours = self.policy.teams[Team.FRONT_DOOR].manager_email
        authority = self.policy.authorities.get(input.authority or "")
        if authority is None:
            # Not (or no longer) in this worker's policy: our own front door chases it instead.
            log.warning("plan_handoff.unknown_authority", authority=input.authority)
            front_door = self.policy.teams[Team.FRONT_DOOR]
            name = input.authority or DEFAULT_TEAM_NAMES[Team.OTHER_AUTHORITY]
            return Addressees(name, front_door.email, (ours,), (ours,))
        managers = _unique(authority.manager_or_front_door, ours)
        return Addressees(authority.name, authority.front_door, managers, managers)

    def _expand(
        self, index: int, step: Step, due: datetime, to: Addressees, referrer: str
    ) -> list[PlannedSend]:
        kind = StepKind.REMINDER if step.at.is_before_due else StepKind.ESCALATION
        recipients = _recipients(step, to, referrer)
        at = self.calendar.offset(due, step.at)
        sends = [PlannedSend(step=index, repeat=0, at=at, kind=kind, recipients=recipients)]
        for repeat in range(1, step.repeat + 1):
            assert step.repeat_every is not None  # the policy refuses repeat without repeat_every
            at = self.calendar.add(at, step.repeat_every)
            sends.append(PlannedSend(step=index, repeat=repeat, at=at, kind=kind, recipients=recipients))
        return sends


def _unique(*addresses: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(addresses))


def _recipients(step: Step, to: Addressees, referrer: str) -> list[str]:
    named = {"team": (to.team,), "team_manager": to.managers, "referrer": (referrer,)}
    out: list[str] = []
    for name in step.notify:
        for address in named.get(name, (name,)):
            if address not in out:
                out.append(address)
    return out
