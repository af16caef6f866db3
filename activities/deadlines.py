"""The `plan_handoff` activity: a hand-off's due instant and ladder from the policy and calendar."""

from __future__ import annotations

from datetime import datetime

from temporalio import activity

from activities.calendar import WorkingCalendar
from models.enums import StepKind, Team
from models.payloads import HandoffPlan, PlanHandoffInput, PlannedSend
from models.policy import Policy, Step, TeamPolicy


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
        handoff = self.policy.handoffs[input.team]
        team = self.policy.teams[input.team]
        due = self.calendar.add(input.opened_at, handoff.due[input.risk])
        sends: list[PlannedSend] = []
        for index, step in enumerate(handoff.steps):
            sends.extend(self._expand(index, step, due, team, input.referrer_email))
        sends.sort(key=lambda s: (s.at, s.step, s.repeat))
        fallback = [team.manager_email]
        extra = self.policy.delivery.fallback_email
        if extra is not None and extra not in fallback:
            fallback.append(extra)
        case_system = self.policy.integrations.early_help
        lookup = input.team == Team.EARLY_HELP and case_system.lookup_url is not None
        return HandoffPlan(
            due_at=due,
            team_name=team.name,
            team_email=team.email,
            sends=sends,
            fallback=fallback,
            lookup_every=case_system.poll_every.as_timedelta() if lookup else None,
        )

    def _expand(
        self, index: int, step: Step, due: datetime, team: TeamPolicy, referrer: str
    ) -> list[PlannedSend]:
        kind = StepKind.REMINDER if step.at.is_before_due else StepKind.ESCALATION
        recipients = _recipients(step, team, referrer)
        at = self.calendar.offset(due, step.at)
        sends = [PlannedSend(step=index, repeat=0, at=at, kind=kind, recipients=recipients)]
        for repeat in range(1, step.repeat + 1):
            assert step.repeat_every is not None  # the policy refuses repeat without repeat_every
            at = self.calendar.add(at, step.repeat_every)
            sends.append(PlannedSend(step=index, repeat=repeat, at=at, kind=kind, recipients=recipients))
        return sends


def _recipients(step: Step, team: TeamPolicy, referrer: str) -> list[str]:
    named = {"team": team.email, "team_manager": team.manager_email, "referrer": referrer}
    out: list[str] = []
    for name in step.notify:
        address = named.get(name, name)
        if address not in out:
            out.append(address)
    return out
