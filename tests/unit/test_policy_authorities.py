"""The policy's [authorities.<code>] sections and the transfer's ladder ([handoffs.other_authority])."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from activities.deadlines import DeadlineActivities
from models.enums import Risk, StepKind, Team
from models.payloads import PlanHandoffInput
from models.policy import PolicyError, default_policy_text, load_policy, parse_policy
from tests.conftest import ROOT

LONDON = ZoneInfo("Europe/London")
REFERRER = "a.example@police.example"
OUR_MANAGER = "mash-manager@council.example"

AUTHORITIES = """
[authorities.NNC]
name = "North Northamptonshire Council"
front_door = "mash@northnorthants.example"
manager = "mash-manager@northnorthants.example"

[authorities.west-northants_2]
name = "West Northamptonshire Council"
front_door = "mash@westnorthants.example"
"""

#: The built-in policy with the two authorities above.
TEXT = default_policy_text() + AUTHORITIES


def outcome(text: str) -> str:
    """The one-line refusal of a policy text."""
    with pytest.raises(PolicyError) as caught:
        parse_policy(text, "council.toml")
    return str(caught.value)


def line_of(text: str, needle: str, *, last: bool = False) -> int:
    """The 1-based line of the first (or last) line of `text` that starts with `needle`."""
    found = [n for n, line in enumerate(text.splitlines(), 1) if line.startswith(needle)]
    return found[-1] if last else found[0]


class TestParsing:
    def test_authorities_are_optional_and_absent_by_default(self) -> None:
        policy = load_policy(None)
        assert policy.authorities == {}
        assert policy.transfer_refusal("NNC") == (
            "no other authorities are configured: the policy needs [authorities.<code>] sections"
        )

    def test_valid_authorities(self) -> None:
        policy = parse_policy(TEXT)
        assert list(policy.authorities) == ["NNC", "west-northants_2"]
        nnc = policy.authority("NNC")
        assert (nnc.name, nnc.front_door, nnc.manager) == (
            "North Northamptonshire Council",
            "mash@northnorthants.example",
            "mash-manager@northnorthants.example",
        )
        west = policy.authority("west-northants_2")
        assert west.manager is None and west.manager_or_front_door == "mash@westnorthants.example"
        assert policy.transfer_refusal("NNC") is None
        # Codes are exact: another spelling is not the same authority.
        assert policy.transfer_refusal("nnc") == "unknown authority 'nnc' (use NNC, west-northants_2)"
        with pytest.raises(PolicyError, match="no authority 'XYZ'"):
            policy.authority("XYZ")

    def test_the_transfer_ladder_is_a_hand_off_policy(self) -> None:
        handoff = parse_policy(TEXT).handoff(Team.OTHER_AUTHORITY)
        assert str(handoff.due_for(Risk.RED)) == "1 working day"
        assert [s.kind for s in handoff.steps] == [
            StepKind.REMINDER,
            StepKind.ESCALATION,
            StepKind.ESCALATION,
        ]

    def test_a_missing_front_door_is_refused_with_its_line(self) -> None:
        text = default_policy_text() + '\n[authorities.NNC]\nname = "North Northamptonshire Council"\n'
        line = line_of(text, "[authorities.NNC]")
        assert outcome(text) == (
            f"council.toml: line {line}: authorities.NNC.front_door: required key is missing"
        )

    def test_a_bad_front_door_or_manager_address_names_its_line(self) -> None:
        text = default_policy_text() + (
            '\n[authorities.NNC]\nname = "North"\nfront_door = "mash at north"\nmanager = "boss@"\n'
        )
        message = outcome(text)
        assert f"line {line_of(text, 'front_door')}: authorities.NNC.front_door: 'mash at north'" in message
        assert (
            f"line {line_of(text, 'manager =')}: authorities.NNC.manager: 'boss@' is not an email" in message
        )

    def test_a_name_is_required_and_not_blank(self) -> None:
        text = default_policy_text() + '\n[authorities.NNC]\nfront_door = "mash@north.example"\n'
        assert "authorities.NNC.name: required key is missing" in outcome(text)
        blank = default_policy_text() + '\n[authorities.NNC]\nname = "  "\nfront_door = "m@north.example"\n'
        assert (
            f"line {line_of(blank, 'name = ', last=True)}: authorities.NNC.name: must not be empty"
            in outcome(blank)
        )

    def test_an_unknown_key_is_refused(self) -> None:
        text = TEXT + 'phone = "01234 567890"\n'
        assert f"line {line_of(text, 'phone')}: authorities.west-northants_2.phone: unknown key" in outcome(
            text
        )

    @pytest.mark.parametrize("code", ["bad code", "-leading", "x" * 33, "ünï"])
    def test_a_code_that_is_not_url_safe_is_refused_with_its_line(self, code: str) -> None:
        text = default_policy_text() + f'\n[authorities."{code}"]\nname = "N"\nfront_door = "m@n.example"\n'
        message = outcome(text)
        assert f"line {line_of(text, '[authorities.')}: authorities." in message
        assert "is not an authority code" in message

    def test_authorities_need_the_transfer_ladder(self) -> None:
        # The built-in policy with its [handoffs.other_authority] taken out.
        start = default_policy_text().index("[handoffs.other_authority]")
        end = default_policy_text().index("# ---", start)
        text = default_policy_text()[:start] + default_policy_text()[end:] + AUTHORITIES
        message = outcome(text)
        assert (
            f"line {line_of(text, '[handoffs.')}: handoffs: missing hand-off policy for other_authority"
            in (message)
        )
        # Without authorities, no ladder is needed (a policy written before transfers existed).
        assert (
            Team.OTHER_AUTHORITY
            not in parse_policy(default_policy_text()[:start] + default_policy_text()[end:]).handoffs
        )

    def test_another_authority_is_not_a_team(self) -> None:
        text = TEXT + '\n[teams.other_authority]\nemail = "a@b.example"\nmanager_email = "c@d.example"\n'
        assert outcome(text) == (
            f"council.toml: line {line_of(text, '[teams.other_authority]')}: teams.other_authority:"
            " other_authority is not a team of this authority: list other authorities as"
            " [authorities.<code>] with name, front_door and manager"
        )

    def test_england_lists_example_authorities(self) -> None:
        policy = load_policy(ROOT / "policies" / "england.toml")
        assert {code: a.name for code, a in policy.authorities.items()} == {
            "NNC": "North Northamptonshire Council",
            "WNC": "West Northamptonshire Council",
        }


def plan_input(authority: str | None, team: Team = Team.OTHER_AUTHORITY) -> PlanHandoffInput:
    """A transfer's hand-off opened on a Wednesday morning."""
    return PlanHandoffInput(
        referral_id="r0123456789abcdef",
        team=team,
        risk=Risk.RED,
        opened_at=datetime(2026, 11, 25, 10, tzinfo=LONDON),
        referrer_email=REFERRER,
        authority=authority,
    )


class TestTransferPlan:
    """plan_handoff for an `other_authority` hand-off: the authority's addresses in the ladder."""

    def test_team_is_their_front_door_and_team_manager_theirs_and_ours(self) -> None:
        plan = DeadlineActivities(parse_policy(TEXT)).plan(plan_input("NNC"))
        assert (plan.team_name, plan.team_email) == (
            "North Northamptonshire Council",
            "mash@northnorthants.example",
        )
        # One working day, whatever the RAG rating: Thursday 10:00.
        assert plan.due_at == datetime(2026, 11, 26, 10, tzinfo=LONDON)
        first = {s.step: s for s in plan.sends if s.repeat == 0}
        assert first[0].kind == StepKind.REMINDER
        assert first[0].at == datetime(2026, 11, 26, 9, tzinfo=LONDON)
        assert first[0].recipients == ["mash@northnorthants.example"]
        assert first[1].kind == StepKind.ESCALATION and first[1].at == plan.due_at
        assert first[1].recipients == [
            "mash@northnorthants.example",
            "mash-manager@northnorthants.example",
            OUR_MANAGER,
            REFERRER,
        ]
        assert len([s for s in plan.sends if s.step == 2]) == 21
        assert plan.fallback == ["mash-manager@northnorthants.example", OUR_MANAGER]

    def test_without_a_manager_their_front_door_is_escalated_to(self) -> None:
        plan = DeadlineActivities(parse_policy(TEXT)).plan(plan_input("west-northants_2"))
        escalation = next(s for s in plan.sends if s.kind == StepKind.ESCALATION)
        assert escalation.recipients == ["mash@westnorthants.example", OUR_MANAGER, REFERRER]
        assert plan.fallback == ["mash@westnorthants.example", OUR_MANAGER]

    def test_an_authority_the_worker_does_not_know_is_chased_by_our_front_door(self) -> None:
        # The API's policy listed it, this worker's does not (a policy changed in between).
        plan = DeadlineActivities(load_policy(None)).plan(plan_input("GONE"))
        assert (plan.team_name, plan.team_email) == ("GONE", "mash@council.example")
        assert next(s for s in plan.sends if s.kind == StepKind.REMINDER).recipients == [
            "mash@council.example"
        ]
        assert plan.sends and all(s.recipients for s in plan.sends)

    def test_a_worker_policy_without_the_ladder_uses_the_front_doors(self) -> None:
        start = default_policy_text().index("[handoffs.other_authority]")
        end = default_policy_text().index("# ---", start)
        policy = parse_policy(default_policy_text()[:start] + default_policy_text()[end:])
        plan = DeadlineActivities(policy).plan(plan_input("NNC"))
        # Red on the front door's clock: 4 working hours.
        assert plan.due_at == datetime(2026, 11, 25, 14, tzinfo=LONDON)

    def test_local_teams_are_planned_as_before(self) -> None:
        plan = DeadlineActivities(parse_policy(TEXT)).plan(plan_input(None, Team.EARLY_HELP))
        assert plan.team_email == "earlyhelp@council.example"
        assert plan.fallback == ["earlyhelp-manager@council.example"]
