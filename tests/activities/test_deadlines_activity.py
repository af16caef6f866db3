"""plan_handoff: due instants and ladders from the built-in policy and the demo policy."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from temporalio.testing import ActivityEnvironment

from activities.deadlines import DeadlineActivities
from models.enums import Risk, StepKind, Team
from models.payloads import HandoffPlan, PlanHandoffInput
from models.policy import default_policy_text, load_policy, parse_policy
from tests.conftest import ROOT

LONDON = ZoneInfo("Europe/London")
REFERRER = "a.example@police.example"
MASH = "mash@council.example"
MASH_MANAGER = "mash-manager@council.example"

DEFAULT = DeadlineActivities(load_policy(None))
DEMO = DeadlineActivities(load_policy(ROOT / "policies" / "demo.toml"))


def london(*args: int) -> datetime:
    """A London wall-clock instant."""
    return datetime(*args, tzinfo=LONDON)  # type: ignore[misc]


def plan_input(
    opened_at: datetime, team: Team = Team.FRONT_DOOR, risk: Risk = Risk.RED, referrer: str = REFERRER
) -> PlanHandoffInput:
    """The workflow's request when it opens a hand-off."""
    return PlanHandoffInput(
        referral_id="r0123456789abcdef", team=team, risk=risk, opened_at=opened_at, referrer_email=referrer
    )


async def plan(acts: DeadlineActivities, input: PlanHandoffInput) -> HandoffPlan:
    """One run of the activity, as the worker runs it."""
    return await ActivityEnvironment().run(acts.plan_handoff, input)


def local(instant: datetime) -> datetime:
    """London wall time of an instant."""
    return instant.astimezone(LONDON)


class TestFrontDoorRed:
    """Red: 4 working hours; a reminder an hour before, then escalations every working day."""

    @pytest.mark.parametrize(
        "opened",
        [london(2026, 11, 25, 10), london(2026, 7, 1, 10)],  # a Wednesday in GMT, and one in BST
        ids=["winter", "summer"],
    )
    async def test_due_four_working_hours_after_a_weekday_morning(self, opened: datetime) -> None:
        result = await plan(DEFAULT, plan_input(opened))

        assert result.due_at == opened.replace(hour=14).astimezone(UTC)
        assert result.due_at.tzinfo is not None and result.due_at.utcoffset() == timedelta(0)
        assert result.team_name == "Front door (MASH)"
        assert result.team_email == MASH
        first = result.sends[:3]
        assert [(s.step, s.repeat, s.kind) for s in first] == [
            (0, 0, StepKind.REMINDER),
            (1, 0, StepKind.ESCALATION),
            (2, 0, StepKind.ESCALATION),
        ]
        assert [local(s.at) for s in first] == [
            opened.replace(hour=13),
            opened.replace(hour=14),
            opened.replace(hour=14) + timedelta(days=1),
        ]

    async def test_friday_afternoon_runs_into_monday(self) -> None:
        result = await plan(DEFAULT, plan_input(london(2026, 11, 27, 15)))
        assert local(result.due_at) == london(2026, 11, 30, 11)
        assert local(result.sends[0].at) == london(2026, 11, 30, 10)

    async def test_ladder_is_sorted_and_skips_weekends_and_bank_holidays(self) -> None:
        result = await plan(DEFAULT, plan_input(london(2026, 12, 2, 10)))

        instants = [s.at for s in result.sends]
        assert instants == sorted(instants)
        assert len(result.sends) == 1 + 1 + 21  # reminder, escalation, escalation + 20 repeats
        assert [s.repeat for s in result.sends if s.step == 2] == list(range(21))
        days = [local(s.at).date() for s in result.sends]
        assert all(d.weekday() < 5 for d in days)
        # 2026: Christmas Day is a Friday; Boxing Day's substitute is Monday 28 December.
        for holiday in (date(2026, 12, 25), date(2026, 12, 28), date(2027, 1, 1)):
            assert holiday not in days
        assert {date(2026, 12, 24), date(2026, 12, 29), date(2027, 1, 4)} <= set(days)
        assert days[-1] == date(2027, 1, 5)  # the 21st working day after the first escalation
        assert {local(s.at).time() for s in result.sends[1:]} == {london(2026, 1, 1, 14).time()}

    async def test_reminders_before_due_escalations_at_or_after(self) -> None:
        result = await plan(DEFAULT, plan_input(london(2026, 11, 25, 10)))

        reminders = [s for s in result.sends if s.kind == StepKind.REMINDER]
        escalations = [s for s in result.sends if s.kind == StepKind.ESCALATION]
        assert len(reminders) == 1 and reminders[0].at < result.due_at
        assert escalations and all(s.at >= result.due_at for s in escalations)
        assert escalations[0].at == result.due_at


class TestOtherHandoffs:
    """Working days are counted in London wall time, across a change of the clocks."""

    async def test_early_help_green_over_the_october_clock_change(self) -> None:
        # Friday 23 October 2026, 10:00 BST; the clocks go back on Sunday 25 October.
        opened = london(2026, 10, 23, 10)
        result = await plan(DEFAULT, plan_input(opened, Team.EARLY_HELP, Risk.GREEN))

        assert local(result.due_at) == london(2026, 10, 28, 10)  # 3 working days, 10:00 GMT
        assert result.due_at == datetime(2026, 10, 28, 10, tzinfo=UTC)
        assert local(result.sends[0].at) == london(2026, 10, 27, 10)  # due - 1 working day
        assert result.team_name == "Early Help"

    @pytest.mark.parametrize("risk", [Risk.AMBER, Risk.GREEN])
    async def test_front_door_amber_and_green_one_working_day(self, risk: Risk) -> None:
        result = await plan(DEFAULT, plan_input(london(2026, 11, 25, 10), risk=risk))
        assert local(result.due_at) == london(2026, 11, 26, 10)


class TestRecipients:
    """team, team_manager and referrer resolve to addresses, each address once."""

    async def test_named_recipients_resolve(self) -> None:
        result = await plan(DEFAULT, plan_input(london(2026, 11, 25, 10)))

        by_step = {s.step: s.recipients for s in result.sends}
        assert by_step == {0: [MASH], 1: [MASH_MANAGER, REFERRER], 2: [MASH_MANAGER, REFERRER]}

    async def test_referrer_who_is_the_manager_is_emailed_once(self) -> None:
        result = await plan(DEFAULT, plan_input(london(2026, 11, 25, 10), referrer=MASH_MANAGER))
        assert all(s.recipients == [MASH_MANAGER] for s in result.sends if s.kind == StepKind.ESCALATION)

    async def test_duplicates_in_the_policy_are_dropped(self) -> None:
        text = default_policy_text().replace(
            'at = "due"\nnotify = ["team_manager", "referrer"]',
            'at = "due"\nnotify = ["team_manager", "referrer", "team_manager", "'
            + MASH_MANAGER
            + '", "dsl@council.example", "team", "'
            + MASH
            + '"]',
            1,
        )
        acts = DeadlineActivities(parse_policy(text, "test policy"))

        result = await plan(acts, plan_input(london(2026, 11, 25, 10)))

        (at_due,) = [s for s in result.sends if s.step == 1]
        assert at_due.recipients == [MASH_MANAGER, REFERRER, "dsl@council.example", MASH]


class TestDemoPolicy:
    """The demo policy is in elapsed seconds: a whole ladder in minutes, at any hour."""

    @pytest.mark.parametrize(
        "opened",
        [london(2026, 11, 28, 23, 59, 30), london(2026, 12, 25, 3), london(2026, 3, 29, 0, 59, 50)],
        ids=["saturday-midnight", "christmas-night", "spring-forward"],
    )
    async def test_every_instant_is_seconds_after_opening(self, opened: datetime) -> None:
        result = await plan(DEMO, plan_input(opened))

        assert result.due_at - opened == timedelta(seconds=60)
        assert [(s.at - opened).total_seconds() for s in result.sends] == [40, 60, 90, 120, 150, 180]
        assert [s.kind for s in result.sends] == [StepKind.REMINDER] + [StepKind.ESCALATION] * 5


@st.composite
def opened_instants(draw: st.DrawFn) -> datetime:
    """Any minute in 2026-2028, as an aware UTC instant."""
    naive = draw(st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2028, 12, 31)))
    return naive.replace(second=0, microsecond=0, tzinfo=UTC)


class TestLadderProperties:
    """For any opening instant, team and rating: ordered, split at due, after opening."""

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(opened=opened_instants(), team=st.sampled_from(Team), risk=st.sampled_from(Risk))
    def test_any_opening(self, opened: datetime, team: Team, risk: Risk) -> None:
        result = DEFAULT.plan(plan_input(opened, team, risk))

        assert result.due_at > opened
        assert DEFAULT.calendar.is_working_instant(result.due_at)
        instants = [s.at for s in result.sends]
        assert instants == sorted(instants)
        assert all(at > opened for at in instants)
        for send in result.sends:
            assert (send.kind == StepKind.REMINDER) == (send.at < result.due_at)
            assert send.recipients and len(send.recipients) == len(set(send.recipients))
        assert len({(s.step, s.repeat) for s in result.sends}) == len(result.sends)
