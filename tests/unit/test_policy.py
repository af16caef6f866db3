"""The policy file: the shipped policies parse, and every mistake is refused with its key path."""

from __future__ import annotations

from datetime import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.enums import LOCAL_TEAMS, Risk, StepKind, Team
from models.policy import (
    Duration,
    Offset,
    Policy,
    PolicyError,
    load_policy,
    parse_duration,
    parse_offset,
    parse_policy,
)

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_TEXT = (ROOT / "models" / "default_policy.toml").read_text(encoding="utf-8")


def edited(old: str, new: str, count: int = 1) -> str:
    """The default policy with one edit; fails loudly if the text to edit is not there."""
    assert old in DEFAULT_TEXT, old
    return DEFAULT_TEXT.replace(old, new, count)


def refused(text: str) -> str:
    with pytest.raises(PolicyError) as caught:
        parse_policy(text, "council.toml")
    message = str(caught.value)
    assert message.startswith("council.toml: ")
    assert "\n" not in message
    return message


class TestShippedPolicies:
    def test_default_parses_with_working_together_clocks(self) -> None:
        policy = load_policy(None)
        front_door = policy.handoff(Team.FRONT_DOOR)
        assert front_door.due[Risk.RED] == parse_duration("4 working hours")
        assert front_door.due[Risk.AMBER] == front_door.due[Risk.GREEN] == parse_duration("1 working day")
        assert [str(step.at) for step in front_door.steps] == [
            "due - 1 working hour",
            "due",
            "due + 1 working day",
        ]
        assert [step.kind for step in front_door.steps] == [
            StepKind.REMINDER,
            StepKind.ESCALATION,
            StepKind.ESCALATION,
        ]
        assert front_door.steps[2].repeat == 20
        assert policy.handoff(Team.EARLY_HELP).due_for(Risk.GREEN) == parse_duration("3 working days")
        assert policy.calendar.working_hours == (time(9), time(17))
        assert policy.calendar.working_days == frozenset({0, 1, 2, 3, 4})
        assert policy.calendar.bank_holidays == "england-and-wales"

    def test_default_has_all_four_teams_with_names(self) -> None:
        policy = load_policy(None)
        assert set(policy.teams) == set(LOCAL_TEAMS)
        assert set(policy.handoffs) == set(Team)  # with a transfer's ladder, and no authorities
        assert policy.authorities == {}
        assert policy.team(Team.FRONT_DOOR).email == "mash@council.example"
        assert policy.team(Team.SOCIAL_CARE).name == "Children's social care"

    def test_demo_parses_in_seconds(self) -> None:
        policy = load_policy(ROOT / "policies" / "demo.toml")
        for team in Team:
            handoff = policy.handoff(team)
            assert set(handoff.due.values()) == {Duration(working=False, seconds=60)}
            assert [str(step.at) for step in handoff.steps] == ["due - PT20S", "due", "due + PT30S"]
            assert handoff.steps[2].repeat_every == parse_duration("PT30S")
            assert handoff.steps[2].repeat == 3

    def test_policies_default_is_a_copy_of_the_built_in(self) -> None:
        shipped = (ROOT / "policies" / "default.toml").read_bytes()
        assert shipped == (ROOT / "models" / "default_policy.toml").read_bytes()

    def test_policy_survives_a_json_round_trip(self) -> None:
        for policy in (load_policy(None), load_policy(ROOT / "policies" / "demo.toml")):
            assert Policy.model_validate_json(policy.model_dump_json()) == policy

    def test_policy_is_frozen(self) -> None:
        policy = load_policy(None)
        with pytest.raises(ValueError, match="frozen"):
            policy.calendar.timezone = "UTC"  # type: ignore[misc]


class TestDurations:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("PT30S", Duration(working=False, seconds=30)),
            ("P2D", Duration(working=False, seconds=172_800)),
            ("PT1H30M", Duration(working=False, seconds=5400)),
            ("4 working hours", Duration(working=True, seconds=14_400)),
            ("1 working hour", Duration(working=True, seconds=3600)),
            ("1.5 working hours", Duration(working=True, seconds=5400)),
            ("30 working minutes", Duration(working=True, seconds=1800)),
            ("1 working day", Duration(working=True, days=1)),
            ("0.5 working days", Duration(working=True, days=0.5)),
            ("3 Working Days", Duration(working=True, days=3)),
        ],
    )
    def test_parses(self, text: str, expected: Duration) -> None:
        assert parse_duration(text) == expected

    @pytest.mark.parametrize(
        ("duration", "text"),
        [
            (Duration(working=False, seconds=5400), "PT1H30M"),
            (Duration(working=False, seconds=0), "PT0S"),
            (Duration(working=False, seconds=90_061), "P1DT1H1M1S"),
            (Duration(working=True, seconds=3600), "1 working hour"),
            (Duration(working=True, seconds=5400), "90 working minutes"),
            (Duration(working=True, days=0.5), "0.5 working days"),
        ],
    )
    def test_prints_readably(self, duration: Duration, text: str) -> None:
        assert str(duration) == text

    @pytest.mark.parametrize("text", ["4 workng hours", "4 hours", "PT", "30", "-PT1H", "pt30s", ""])
    def test_refuses_text_that_is_not_a_duration(self, text: str) -> None:
        with pytest.raises(
            PolicyError, match="is not a duration: use ISO 8601 like PT4H or '4 working hours'"
        ):
            parse_duration(text)

    @pytest.mark.parametrize("text", ["P1M", "P1Y", "P1Y2M3D"])
    def test_refuses_months_and_years(self, text: str) -> None:
        with pytest.raises(PolicyError, match="months and years have no fixed length"):
            parse_duration(text)

    @pytest.mark.parametrize("text", ["PT0.5S", "0.0001 working hours"])
    def test_refuses_fractions_of_a_second(self, text: str) -> None:
        with pytest.raises(PolicyError, match="whole number of seconds"):
            parse_duration(text)

    def test_elapsed_durations_convert_to_timedelta_but_working_ones_do_not(self) -> None:
        assert parse_duration("PT1M").as_timedelta().total_seconds() == 60
        with pytest.raises(ValueError, match="working time"):
            parse_duration("1 working hour").as_timedelta()

    @settings(max_examples=200, deadline=None)
    @given(
        st.one_of(
            st.builds(Duration, working=st.booleans(), seconds=st.integers(0, 10 * 86400)),
            st.builds(Duration, working=st.just(True), days=st.integers(1, 4000).map(lambda n: n / 4)),
        )
    )
    def test_printed_form_parses_back(self, duration: Duration) -> None:
        assert parse_duration(str(duration)) == duration


class TestOffsets:
    def test_due_alone(self) -> None:
        offset = parse_offset("due")
        assert offset == Offset(sign=1, duration=None)
        assert not offset.is_before_due

    def test_before_due(self) -> None:
        offset = parse_offset("due - 1 working hour")
        assert offset.sign == -1
        assert offset.duration == parse_duration("1 working hour")
        assert offset.is_before_due

    def test_after_due(self) -> None:
        offset = parse_offset("due + PT10S")
        assert (offset.sign, offset.duration) == (1, Duration(working=False, seconds=10))
        assert not offset.is_before_due

    def test_zero_before_due_is_not_before_due(self) -> None:
        assert not parse_offset("due - PT0S").is_before_due

    @pytest.mark.parametrize("text", ["due after 1 hour", "deadline", "due -", "due * PT1S"])
    def test_refuses_other_text(self, text: str) -> None:
        with pytest.raises(PolicyError, match="is not an offset"):
            parse_offset(text)

    def test_bad_duration_inside_an_offset(self) -> None:
        with pytest.raises(PolicyError, match="'1 workng hour' is not a duration"):
            parse_offset("due - 1 workng hour")


class TestValidValues:
    def test_single_due_expands_to_every_rag_rating(self) -> None:
        policy = parse_policy(edited('due = { red = "4 working hours", amber', 'due = "PT4H"\n# amber'))
        assert policy.handoff(Team.FRONT_DOOR).due == {risk: parse_duration("PT4H") for risk in Risk}

    def test_literal_email_recipients_are_accepted(self) -> None:
        text = edited(
            'at = "due"\nnotify = ["team_manager", "referrer"]',
            'at = "due"\nnotify = ["dsl@council.example"]',
        )
        step = parse_policy(text).handoff(Team.FRONT_DOOR).steps[1]
        assert step.notify == ("dsl@council.example",)

    def test_a_single_recipient_may_be_a_string(self) -> None:
        text = edited('notify = ["team"]', 'notify = "team"')
        assert parse_policy(text).handoff(Team.FRONT_DOOR).steps[0].notify == ("team",)

    def test_team_name_defaults_from_the_key(self) -> None:
        text = edited('name = "Early Help"\n', "")
        assert parse_policy(text).team(Team.EARLY_HELP).name == "Early Help"

    def test_closures_accept_toml_dates_and_strings(self) -> None:
        policy = parse_policy(edited("closures = []", 'closures = [2026-12-24, "2026-12-31"]'))
        assert [d.isoformat() for d in policy.calendar.closures] == ["2026-12-24", "2026-12-31"]


class TestRefusedPolicies:
    def test_bad_toml_names_the_line(self) -> None:
        message = refused(edited('timezone = "Europe/London"', "timezone = Europe/London"))
        assert "not valid TOML" in message
        assert "line 34" in message

    def test_unknown_team(self) -> None:
        message = refused(edited("[teams.other_agency]", "[teams.fron_door]"))
        assert "line 72: teams.fron_door: unknown team 'fron_door'" in message

    def test_missing_team(self) -> None:
        text = (
            DEFAULT_TEXT.split("[teams.other_agency]")[0]
            + "[handoffs"
            + DEFAULT_TEXT.split("[handoffs", 1)[1]
        )
        assert "teams: missing team for other_agency" in refused(text)

    def test_missing_handoff(self) -> None:
        text = DEFAULT_TEXT.split("[handoffs.other_agency]")[0]
        assert "handoffs: missing hand-off policy for other_agency" in refused(text)

    def test_unknown_recipient(self) -> None:
        text = edited('at = "due"\nnotify = ["team_manager", "referrer"]', 'at = "due"\nnotify = ["teem"]')
        message = refused(text)
        assert "handoffs.front_door.steps[1].notify[0]: unknown recipient 'teem'" in message
        assert "line 108:" in message

    def test_bad_email_address_as_recipient(self) -> None:
        text = edited('notify = ["team"]', 'notify = ["dsl@council"]')
        assert "handoffs.front_door.steps[0].notify[0]: unknown recipient 'dsl@council'" in refused(text)

    def test_bad_team_email(self) -> None:
        message = refused(edited('"mash@council.example"', '"mash.council.example"'))
        assert "teams.front_door.email: 'mash.council.example' is not an email address" in message

    def test_bad_duration_text(self) -> None:
        message = refused(edited('red = "4 working hours"', 'red = "4 workng hours"'))
        assert "handoffs.front_door.due.red: '4 workng hours' is not a duration" in message

    def test_bad_single_due_is_reported_once(self) -> None:
        message = refused(edited('due = "3 working days"', 'due = "P1M"'))
        assert message.count("months and years") == 1
        assert "handoffs.early_help.due:" in message

    def test_repeat_without_repeat_every(self) -> None:
        message = refused(edited('repeat_every = "1 working day"\nrepeat = 20', "repeat = 20"))
        assert "handoffs.front_door.steps[2]: repeat needs repeat_every" in message

    def test_repeat_every_without_repeat(self) -> None:
        message = refused(
            edited('repeat_every = "1 working day"\nrepeat = 20', 'repeat_every = "1 working day"')
        )
        assert "handoffs.front_door.steps[2]: repeat_every needs repeat" in message

    def test_repeat_out_of_range(self) -> None:
        assert "handoffs.front_door.steps[2].repeat:" in refused(edited("repeat = 20", "repeat = 101"))

    def test_due_table_missing_a_rag_rating(self) -> None:
        message = refused(edited(', green = "1 working day"', ""))
        assert "handoffs.front_door.due: must give red, amber and green (missing green)" in message

    def test_due_table_with_unknown_rating(self) -> None:
        message = refused(edited('red = "4 working hours"', 'redd = "4 working hours"'))
        assert "handoffs.front_door.due.redd: unknown RAG rating 'redd'" in message

    def test_zero_due(self) -> None:
        assert "handoffs.early_help.due: red must be longer than zero" in refused(
            edited('due = "3 working days"', 'due = "PT0S"')
        )

    def test_step_without_notify_and_misspelt_key(self) -> None:
        message = refused(edited('notify = ["team"]', 'notfy = ["team"]'))
        assert "handoffs.front_door.steps[0].notify: required key is missing" in message
        assert "handoffs.front_door.steps[0].notfy: unknown key" in message

    def test_bad_offset(self) -> None:
        message = refused(edited('at = "due - 1 working hour"\nnotify', 'at = "due after 1 hour"\nnotify'))
        assert "handoffs.front_door.steps[0].at: 'due after 1 hour' is not an offset" in message

    def test_no_steps(self) -> None:
        text = DEFAULT_TEXT.split("[[handoffs.other_agency.steps]]")[0] + "steps = []\n"
        assert "handoffs.other_agency.steps:" in refused(text)

    def test_working_hours_end_before_start(self) -> None:
        message = refused(edited('"09:00-17:00"', '"17:00-09:00"'))
        assert "line 37: calendar.working_hours: the day must end after it starts" in message

    @pytest.mark.parametrize("hours", ["9-5", "09:00-25:00", "09:00"])
    def test_working_hours_not_a_range(self, hours: str) -> None:
        message = refused(edited('"09:00-17:00"', f'"{hours}"'))
        assert "calendar.working_hours: " in message
        assert "'HH:MM-HH:MM'" in message

    def test_empty_working_days(self) -> None:
        message = refused(edited('["mon", "tue", "wed", "thu", "fri"]', "[]"))
        assert "calendar.working_days: at least one working day is needed" in message

    def test_unknown_working_day(self) -> None:
        message = refused(edited('["mon", "tue", "wed", "thu", "fri"]', '["mon", "tues"]'))
        assert "calendar.working_days: unknown day 'tues'" in message

    def test_bad_timezone(self) -> None:
        message = refused(edited('"Europe/London"', '"Europe/Londn"'))
        assert "calendar.timezone: unknown time zone 'Europe/Londn'" in message

    def test_unknown_bank_holiday_region(self) -> None:
        message = refused(edited('bank_holidays = "england-and-wales"', 'bank_holidays = "wales"'))
        assert "calendar.bank_holidays: unknown value 'wales'" in message

    def test_bad_closure_date(self) -> None:
        assert "calendar.closures[0]:" in refused(edited("closures = []", 'closures = ["2026-13-01"]'))

    def test_unknown_top_level_section(self) -> None:
        assert "callendar: unknown key" in refused(DEFAULT_TEXT + "\n[callendar]\n")

    def test_several_problems_are_all_reported_on_one_line(self) -> None:
        text = edited('"Europe/London"', '"Europe/Londn"').replace('"4 working hours"', '"4 workng hours"')
        message = refused(text)
        assert "calendar.timezone" in message
        assert "handoffs.front_door.due.red" in message


class TestLoading:
    def test_missing_file(self, tmp_path: Path) -> None:
        missing = tmp_path / "nope.toml"
        with pytest.raises(PolicyError, match=r"nope\.toml: cannot read policy file"):
            load_policy(missing)

    def test_file_errors_name_the_file(self, tmp_path: Path) -> None:
        path = tmp_path / "council.toml"
        path.write_text(edited('"Europe/London"', '"Mars/Olympus"'), encoding="utf-8")
        with pytest.raises(
            PolicyError, match=r"^.*council\.toml: line 34: calendar\.timezone: unknown time zone"
        ):
            load_policy(path)

    def test_lookups_refuse_unknown_teams(self) -> None:
        policy = load_policy(None)
        with pytest.raises(PolicyError, match="no hand-off policy for team 'nobody'"):
            policy.handoff("nobody")  # type: ignore[arg-type]
        with pytest.raises(PolicyError, match="no team 'nobody'"):
            policy.team("nobody")  # type: ignore[arg-type]
