"""The UK nations' example policies: each parses, and plans hand-offs across its own bank holidays.

Every expected instant below is worked out by hand in its comment (working day 09:00-17:00,
Monday to Friday; GMT = UTC in winter, BST = UTC+1 from 29 March to 25 October 2026 and from
28 March to 31 October 2027), never by asking the calendar a second time.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from activities.calendar import WorkingCalendar
from activities.deadlines import DeadlineActivities
from config import load_settings
from models.db import create_engine
from models.enums import LOCAL_TEAMS, Risk, StepKind, Team
from models.payloads import HandoffPlan, PlanHandoffInput
from models.policy import Policy, load_policy, parse_duration
from worker import activities_for

ROOT = Path(__file__).resolve().parents[2]
LONDON = ZoneInfo("Europe/London")

ENGLAND = "england.toml"
WALES = "wales.toml"
SCOTLAND = "scotland.toml"
NORTHERN_IRELAND = "northern-ireland.toml"
NATIONS = (ENGLAND, WALES, SCOTLAND, NORTHERN_IRELAND)
REGIONS = {
    ENGLAND: "england-and-wales",
    WALES: "england-and-wales",
    SCOTLAND: "scotland",
    NORTHERN_IRELAND: "northern-ireland",
}


def policy_path(name: str) -> Path:
    return ROOT / "policies" / name


def nation_policy(name: str) -> Policy:
    """Through the real loader, as `REFERRALS_POLICY_FILE` would be."""
    return load_policy(policy_path(name))


def london(year: int, month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=LONDON)


def utc(year: int, month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def plan(
    name: str, opened_at: datetime, *, team: Team = Team.FRONT_DOOR, risk: Risk = Risk.AMBER
) -> HandoffPlan:
    """The `plan_handoff` activity's answer, called without Temporal."""
    return DeadlineActivities(nation_policy(name)).plan(
        PlanHandoffInput(
            referral_id="r-1",
            team=team,
            risk=risk,
            opened_at=opened_at,
            referrer_email="a.example@police.example",
        )
    )


class TestShippedNationPolicies:
    @pytest.mark.parametrize("name", NATIONS)
    def test_loads_through_the_real_parser(self, name: str) -> None:
        policy = nation_policy(name)
        assert policy.calendar.bank_holidays == REGIONS[name]
        assert policy.calendar.timezone == "Europe/London"
        # The four teams of this authority; a transfer's ladder too (its addresses are per authority).
        assert set(policy.teams) == set(LOCAL_TEAMS)
        assert set(policy.handoffs) == set(Team)

    @pytest.mark.parametrize("name", NATIONS)
    def test_front_door_decides_within_one_working_day_red_within_four_hours(self, name: str) -> None:
        front_door = nation_policy(name).handoff(Team.FRONT_DOOR)
        assert front_door.due[Risk.RED] == parse_duration("4 working hours")
        assert front_door.due[Risk.AMBER] == parse_duration("1 working day")
        assert front_door.due[Risk.GREEN] == parse_duration("1 working day")

    @pytest.mark.parametrize("name", NATIONS)
    def test_ladders_are_the_default_ones(self, name: str) -> None:
        default, policy = load_policy(None), nation_policy(name)
        for team in Team:
            assert policy.handoff(team) == default.handoff(team), team

    @pytest.mark.parametrize(
        ("name", "front_door"),
        [
            (ENGLAND, "Front door (MASH)"),
            (WALES, "Front door (Information, Advice and Assistance)"),
            (SCOTLAND, "Social work duty team (IRD)"),
            (NORTHERN_IRELAND, "Gateway service (single point of entry)"),
        ],
    )
    def test_teams_are_named_for_the_nation(self, name: str, front_door: str) -> None:
        policy = nation_policy(name)
        assert policy.team(Team.FRONT_DOOR).name == front_door
        emails = [address for tp in policy.teams.values() for address in (tp.email, tp.manager_email)]
        assert len(set(emails)) == len(emails) == 8

    @pytest.mark.parametrize("name", NATIONS)
    def test_each_cites_its_source_and_says_check_locally(self, name: str) -> None:
        text = policy_path(name).read_text(encoding="utf-8")
        source = {
            ENGLAND: "Working Together to Safeguard Children 2023",
            WALES: "Wales Safeguarding Procedures",
            SCOTLAND: "National Guidance for Child Protection in Scotland 2021 (updated 2023)",
            NORTHERN_IRELAND: "Co-operating to Safeguard Children and Young People in Northern Ireland",
        }[name]
        assert source in " ".join(line.lstrip("# ").strip() for line in text.splitlines())
        assert "check locally" in text.lower()


# Which days are working days: bank holidays of each nation, weekdays unless stated.
WORKING_DAYS = [
    # 2 January 2026 (Friday): Scotland's second New Year holiday.
    (date(2026, 1, 2), {ENGLAND: True, WALES: True, SCOTLAND: False, NORTHERN_IRELAND: True}),
    # 17 March 2026 (Tuesday): St Patrick's Day, Northern Ireland only.
    (date(2026, 3, 17), {ENGLAND: True, WALES: True, SCOTLAND: True, NORTHERN_IRELAND: False}),
    # 6 April 2026: Easter Monday, not a bank holiday in Scotland.
    (date(2026, 4, 6), {ENGLAND: False, WALES: False, SCOTLAND: True, NORTHERN_IRELAND: False}),
    # 13 July 2026 (Monday): the Boyne holiday's substitute, 12 July being a Sunday.
    (date(2026, 7, 13), {ENGLAND: True, WALES: True, SCOTLAND: True, NORTHERN_IRELAND: False}),
    # 3 August 2026: first Monday in August, Scotland's summer bank holiday.
    (date(2026, 8, 3), {ENGLAND: True, WALES: True, SCOTLAND: False, NORTHERN_IRELAND: True}),
    # 31 August 2026: last Monday in August, everyone's but Scotland's.
    (date(2026, 8, 31), {ENGLAND: False, WALES: False, SCOTLAND: True, NORTHERN_IRELAND: False}),
    # 30 November 2026 (Monday): St Andrew's Day, Scotland only.
    (date(2026, 11, 30), {ENGLAND: True, WALES: True, SCOTLAND: False, NORTHERN_IRELAND: True}),
    # 4 January 2027 (Monday): Scotland's substitute for 2 January, a Saturday.
    (date(2027, 1, 4), {ENGLAND: True, WALES: True, SCOTLAND: False, NORTHERN_IRELAND: True}),
    # 1 March 2027 (Monday): St David's Day is not a bank holiday, in Wales either.
    (date(2027, 3, 1), {ENGLAND: True, WALES: True, SCOTLAND: True, NORTHERN_IRELAND: True}),
    # 12 July 2027 (Monday): Battle of the Boyne, Northern Ireland only.
    (date(2027, 7, 12), {ENGLAND: True, WALES: True, SCOTLAND: True, NORTHERN_IRELAND: False}),
]


@pytest.mark.parametrize("name", NATIONS)
@pytest.mark.parametrize(("day", "expected"), WORKING_DAYS, ids=[d.isoformat() for d, _ in WORKING_DAYS])
def test_each_nation_has_its_own_bank_holidays(name: str, day: date, expected: dict[str, bool]) -> None:
    calendar = WorkingCalendar(nation_policy(name).calendar)
    assert calendar.is_working_day(day) is expected[name]


# A front-door hand-off (amber: 1 working day = 8 working hours) opened at `opened`, and its
# due instant in each nation. Wales always agrees with England: they share bank holidays.
DUE_INSTANTS = [
    pytest.param(
        # Friday 27 Nov 2026 15:00 GMT, the last working afternoon before St Andrew's Day.
        # Fri 15:00-17:00 = 2 h; England: Mon 30 Nov 09:00 + 6 h = 15:00 GMT.
        # Scotland: Mon 30 Nov is St Andrew's Day, so Tue 1 Dec 09:00 + 6 h = 15:00 GMT.
        london(2026, 11, 27, 15),
        Risk.AMBER,
        {
            ENGLAND: utc(2026, 11, 30, 15),
            SCOTLAND: utc(2026, 12, 1, 15),
            NORTHERN_IRELAND: utc(2026, 11, 30, 15),
        },
        id="st-andrews-day-2026",
    ),
    pytest.param(
        # The same instant, red (4 working hours): Fri 2 h, then 2 h of the next working day.
        # England: Mon 30 Nov 11:00 GMT; Scotland: Tue 1 Dec 11:00 GMT.
        london(2026, 11, 27, 15),
        Risk.RED,
        {
            ENGLAND: utc(2026, 11, 30, 11),
            SCOTLAND: utc(2026, 12, 1, 11),
            NORTHERN_IRELAND: utc(2026, 11, 30, 11),
        },
        id="st-andrews-day-2026-red",
    ),
    pytest.param(
        # Monday 16 Mar 2026 14:00 GMT: Mon 14:00-17:00 = 3 h, then 5 h.
        # England, Scotland: Tue 17 Mar 14:00 GMT. NI: Tue is St Patrick's Day, so Wed 18 Mar 14:00.
        london(2026, 3, 16, 14),
        Risk.AMBER,
        {
            ENGLAND: utc(2026, 3, 17, 14),
            SCOTLAND: utc(2026, 3, 17, 14),
            NORTHERN_IRELAND: utc(2026, 3, 18, 14),
        },
        id="st-patricks-day-2026",
    ),
    pytest.param(
        # Friday 9 Jul 2027 16:00 BST: Fri 1 h, then 7 h. England, Scotland: Mon 12 Jul 16:00 BST
        # (15:00 UTC). NI: Mon 12 Jul is the Boyne holiday, so Tue 13 Jul 16:00 BST (15:00 UTC).
        london(2027, 7, 9, 16),
        Risk.AMBER,
        {
            ENGLAND: utc(2027, 7, 12, 15),
            SCOTLAND: utc(2027, 7, 12, 15),
            NORTHERN_IRELAND: utc(2027, 7, 13, 15),
        },
        id="twelfth-of-july-2027",
    ),
    pytest.param(
        # Friday 10 Jul 2026 16:00 BST; 12 July is a Sunday, so NI's holiday is Mon 13 Jul.
        # England, Scotland: Mon 13 Jul 16:00 BST (15:00 UTC). NI: Tue 14 Jul 16:00 BST (15:00 UTC).
        london(2026, 7, 10, 16),
        Risk.AMBER,
        {
            ENGLAND: utc(2026, 7, 13, 15),
            SCOTLAND: utc(2026, 7, 13, 15),
            NORTHERN_IRELAND: utc(2026, 7, 14, 15),
        },
        id="twelfth-of-july-2026-substitute",
    ),
    pytest.param(
        # Thursday 31 Dec 2026 15:00 GMT: Thu 2 h; Fri 1 Jan is a holiday everywhere.
        # England, NI: Mon 4 Jan 2027 09:00 + 6 h = 15:00 GMT. Scotland: 2 Jan is a Saturday and
        # its substitute is Mon 4 Jan, so Tue 5 Jan 15:00 GMT.
        london(2026, 12, 31, 15),
        Risk.AMBER,
        {ENGLAND: utc(2027, 1, 4, 15), SCOTLAND: utc(2027, 1, 5, 15), NORTHERN_IRELAND: utc(2027, 1, 4, 15)},
        id="second-of-january-2027-substitute",
    ),
    pytest.param(
        # Thursday 2 Apr 2026 15:00 BST: Thu 2 h; Good Friday (3 Apr) is a holiday everywhere.
        # Scotland works Easter Monday: Mon 6 Apr 15:00 BST (14:00 UTC).
        # England, NI: Easter Monday off, so Tue 7 Apr 15:00 BST (14:00 UTC).
        london(2026, 4, 2, 15),
        Risk.AMBER,
        {ENGLAND: utc(2026, 4, 7, 14), SCOTLAND: utc(2026, 4, 6, 14), NORTHERN_IRELAND: utc(2026, 4, 7, 14)},
        id="easter-monday-2026",
    ),
    pytest.param(
        # Friday 31 Jul 2026 16:00 BST: Fri 1 h, then 7 h. England, NI: Mon 3 Aug 16:00 BST.
        # Scotland: Mon 3 Aug is its summer bank holiday, so Tue 4 Aug 16:00 BST.
        london(2026, 7, 31, 16),
        Risk.AMBER,
        {ENGLAND: utc(2026, 8, 3, 15), SCOTLAND: utc(2026, 8, 4, 15), NORTHERN_IRELAND: utc(2026, 8, 3, 15)},
        id="scottish-summer-bank-holiday-2026",
    ),
    pytest.param(
        # Friday 28 Aug 2026 16:00 BST: England, NI take the late summer holiday (Mon 31 Aug), so
        # Tue 1 Sep 16:00 BST. Scotland works it: Mon 31 Aug 16:00 BST.
        london(2026, 8, 28, 16),
        Risk.AMBER,
        {ENGLAND: utc(2026, 9, 1, 15), SCOTLAND: utc(2026, 8, 31, 15), NORTHERN_IRELAND: utc(2026, 9, 1, 15)},
        id="late-summer-bank-holiday-2026",
    ),
    pytest.param(
        # Friday 26 Feb 2027 16:00 GMT: Fri 1 h, then Mon 1 Mar (St David's Day, a working day
        # in Wales too) 09:00 + 7 h = 16:00 GMT everywhere.
        london(2027, 2, 26, 16),
        Risk.AMBER,
        {ENGLAND: utc(2027, 3, 1, 16), SCOTLAND: utc(2027, 3, 1, 16), NORTHERN_IRELAND: utc(2027, 3, 1, 16)},
        id="st-davids-day-2027",
    ),
]


@pytest.mark.parametrize("name", NATIONS)
@pytest.mark.parametrize(("opened", "risk", "due"), DUE_INSTANTS)
def test_front_door_due_instant_skips_the_nations_own_holidays(
    name: str, opened: datetime, risk: Risk, due: dict[str, datetime]
) -> None:
    expected = due[ENGLAND if name == WALES else name]
    assert plan(name, opened, risk=risk).due_at == expected


class TestLadders:
    """The reminder and the repeated escalations are planned across holidays too."""

    @staticmethod
    def escalations(result: HandoffPlan, step: int) -> list[datetime]:
        return [send.at for send in result.sends if send.step == step]

    def test_repeated_escalations_skip_st_andrews_day_in_scotland_only(self) -> None:
        # Thursday 26 Nov 2026 15:00 GMT, amber: due Fri 27 Nov 15:00 everywhere; reminder an hour
        # earlier. Step 2 is "due + 1 working day", then every working day: in England Mon 30 Nov,
        # Tue 1 Dec, Wed 2 Dec at 15:00; in Scotland Mon 30 Nov is skipped: Tue 1, Wed 2, Thu 3 Dec.
        opened = london(2026, 11, 26, 15)
        england, scotland = plan(ENGLAND, opened), plan(SCOTLAND, opened)
        for result in (england, scotland):
            assert result.due_at == utc(2026, 11, 27, 15)
            assert result.sends[0].kind is StepKind.REMINDER
            assert result.sends[0].at == utc(2026, 11, 27, 14)
            assert self.escalations(result, 1) == [utc(2026, 11, 27, 15)]
        assert self.escalations(england, 2)[:3] == [
            utc(2026, 11, 30, 15),
            utc(2026, 12, 1, 15),
            utc(2026, 12, 2, 15),
        ]
        assert self.escalations(scotland, 2)[:3] == [
            utc(2026, 12, 1, 15),
            utc(2026, 12, 2, 15),
            utc(2026, 12, 3, 15),
        ]
        assert scotland.team_name == "Social work duty team (IRD)"
        assert scotland.team_email == "socialwork-duty@council.example"

    def test_reminder_counts_back_over_st_andrews_day(self) -> None:
        # Friday 27 Nov 2026 13:30 GMT, red (4 working hours): Fri 13:30-17:00 = 3.5 h, then 0.5 h.
        # England: due Mon 30 Nov 09:30; Scotland: due Tue 1 Dec 09:30. The reminder one working
        # hour before: 0.5 h back to 09:00, then 0.5 h back from Friday 17:00 = Fri 27 Nov 16:30
        # in both (Scotland counts back over its holiday Monday).
        opened = london(2026, 11, 27, 13, 30)
        england, scotland = plan(ENGLAND, opened, risk=Risk.RED), plan(SCOTLAND, opened, risk=Risk.RED)
        assert england.due_at == utc(2026, 11, 30, 9, 30)
        assert scotland.due_at == utc(2026, 12, 1, 9, 30)
        assert england.sends[0].at == scotland.sends[0].at == utc(2026, 11, 27, 16, 30)

    def test_early_help_in_northern_ireland_skips_st_patricks_day(self) -> None:
        # Family Support Hub, 3 working days (24 h) from Friday 13 Mar 2026 10:00 GMT:
        # Fri 10:00-17:00 = 7 h, Mon 16 Mar 8 h (15 h), Tue 17 Mar is St Patrick's Day,
        # Wed 18 Mar 8 h (23 h), Thu 19 Mar 09:00 + 1 h = 10:00 GMT.
        # Reminder "due - 1 working day": Thu 09:00-10:00 = 1 h, Wed 17:00 - 7 h = Wed 18 Mar 10:00.
        # England counts Tuesday: due Wed 18 Mar 10:00, reminder Tue 17 Mar 10:00.
        opened = london(2026, 3, 13, 10)
        ni = plan(NORTHERN_IRELAND, opened, team=Team.EARLY_HELP)
        england = plan(ENGLAND, opened, team=Team.EARLY_HELP)
        assert ni.due_at == utc(2026, 3, 19, 10)
        assert ni.sends[0].at == utc(2026, 3, 18, 10)
        assert england.due_at == utc(2026, 3, 18, 10)
        assert england.sends[0].at == utc(2026, 3, 17, 10)
        assert ni.team_name == "Family Support Hub"
        assert ni.team_email == "earlyhelp@trust.example"


class TestStartingAWorker:
    @pytest.mark.parametrize("name", NATIONS)
    async def test_worker_activities_are_built_from_the_policy_file(
        self, name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        # What `referrals worker` does before it connects to Temporal: settings validate
        # REFERRALS_POLICY_FILE, the policy loads, and the activities are built from it.
        monkeypatch.chdir(tmp_path)  # no stray .env
        monkeypatch.setenv("REFERRALS_POLICY_FILE", str(policy_path(name)))
        settings = load_settings()
        assert settings.policy_file == policy_path(name)
        policy = load_policy(settings.policy_file)
        engine = create_engine(f"sqlite:///{tmp_path / 'referrals.db'}")
        try:
            activities = activities_for(settings, policy=policy, secret="s" * 40, engine=engine)
        finally:
            await engine.dispose()
        deadlines = [getattr(fn, "__self__", None) for fn in activities]
        planners = [obj for obj in deadlines if isinstance(obj, DeadlineActivities)]
        assert len(planners) == 1
        assert planners[0].policy == nation_policy(name)
        assert planners[0].calendar.policy.bank_holidays == REGIONS[name]


@pytest.mark.parametrize("name", NATIONS)
def test_each_example_is_listed_in_the_readme(name: str) -> None:
    assert name in (ROOT / "README.md").read_text(encoding="utf-8")
