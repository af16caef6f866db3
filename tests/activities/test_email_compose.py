"""compose(): the subject and body of every kind of message (pure: no database, no SMTP)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from activities.notify import compose
from models.enums import DeclineReason, MessageKind, Outcome, Team
from models.payloads import EmailInput
from tests.activities.conftest import PUBLIC_URL, REFERENCE, REFERRAL_ID, email_input
from web.links import AckLinks

#: A winter due instant (GMT) and a summer one (BST), and how emails must show them in London time.
WINTER_DUE = datetime(2026, 11, 26, 14, 0, tzinfo=UTC)
WINTER_TEXT = "Thu 26 Nov 2026 14:00"
SUMMER_DUE = datetime(2026, 7, 1, 13, 30, tzinfo=UTC)
SUMMER_TEXT = "Wed 01 Jul 2026 14:30"


def ack_claims(body: str, links: AckLinks) -> list[tuple[str, int, Team]]:
    """What every /ack/ link in a body stands for."""
    tokens = re.findall(re.escape(PUBLIC_URL) + r"/ack/(\S+)", body)
    return [(c.referral_id, c.handoff_seq, c.team) for c in map(links.check, tokens)]


def outcome(team: Team, team_name: str, result: str, record_id: str | None = None) -> EmailInput:
    """The feedback email the workflow sends when a hand-off closes."""
    return email_input(
        MessageKind.OUTCOME,
        team=team,
        team_name=team_name,
        result=result,
        record_id=record_id,
        recipients=("a.example@police.example",),
    )


class TestReminder:
    """Before the deadline: the receiving team is reminded, with its acknowledgement link."""

    def test_subject_and_body(self, links: AckLinks) -> None:
        input = email_input(MessageKind.REMINDER, step=0, team=Team.EARLY_HELP, due_at=WINTER_DUE)
        subject, body = compose(input, links)

        assert subject.startswith(f"{REFERENCE} ")
        assert "reminder" in subject
        assert "Early Help" in subject and WINTER_TEXT in subject
        assert "escalation" not in subject
        assert f"due by {WINTER_TEXT}" in body
        assert ack_claims(body, links) == [(REFERRAL_ID, input.handoff_seq, Team.EARLY_HELP)]
        assert f"{PUBLIC_URL}/referrals/{REFERRAL_ID}" in body


class TestEscalation:
    """At and after the deadline: which team has not acknowledged, since when, and how often."""

    def test_names_the_team_and_when_it_was_due(self, links: AckLinks) -> None:
        input = email_input(
            MessageKind.ESCALATION,
            team=Team.SOCIAL_CARE,
            team_name="Children's social care",
            due_at=WINTER_DUE,
        )
        subject, body = compose(input, links)

        assert subject.startswith(f"{REFERENCE} ")
        assert "escalation" in subject
        assert "Children's social care has not acknowledged" in subject
        assert "repeat" not in subject  # the first send of a step is not a repeat
        assert "not been acknowledged by Children's social care" in body
        assert f"due by {WINTER_TEXT}" in body
        assert ack_claims(body, links) == [(REFERRAL_ID, input.handoff_seq, Team.SOCIAL_CARE)]

    @pytest.mark.parametrize("repeat", [1, 2, 20])
    def test_repeat_number_is_in_the_subject(self, links: AckLinks, repeat: int) -> None:
        subject, _ = compose(email_input(MessageKind.ESCALATION, repeat=repeat), links)
        assert subject.startswith(REFERENCE)
        assert f"(repeat {repeat})" in subject

    def test_due_instant_is_london_wall_time_in_summer(self, links: AckLinks) -> None:
        subject, body = compose(email_input(MessageKind.ESCALATION, due_at=SUMMER_DUE), links)
        assert SUMMER_TEXT in subject and SUMMER_TEXT in body

    def test_repeats_differ_in_subject(self, links: AckLinks) -> None:
        """Mail clients thread by subject: each repeat must be distinguishable."""
        subjects = {compose(email_input(MessageKind.ESCALATION, repeat=r), links)[0] for r in range(4)}
        assert len(subjects) == 4


FRONT_DOOR_OUTCOMES = {
    Outcome.EARLY_HELP: "passed it to Early Help",
    Outcome.SOCIAL_CARE: "passed it to children's social care",
    Outcome.OTHER_AGENCY: "passed it to another agency",
    Outcome.NO_FURTHER_ACTION: "decided no further action",
}


class TestOutcome:
    """Every outcome is fed back to the referrer, with no acknowledgement link."""

    def test_every_front_door_outcome_has_a_text(self) -> None:
        assert set(FRONT_DOOR_OUTCOMES) == set(Outcome)

    @pytest.mark.parametrize("decision", list(Outcome), ids=[o.value for o in Outcome])
    def test_front_door_outcome(self, links: AckLinks, decision: Outcome) -> None:
        subject, body = compose(outcome(Team.FRONT_DOOR, "Front door (MASH)", decision.value), links)

        assert subject.startswith(f"{REFERENCE} outcome: ")
        assert FRONT_DOOR_OUTCOMES[decision] in subject
        assert FRONT_DOOR_OUTCOMES[decision] in body
        assert decision.value not in subject  # words, not codes
        assert "/ack/" not in body

    @pytest.mark.parametrize("reason", list(DeclineReason), ids=[r.value for r in DeclineReason])
    def test_early_help_decline_goes_back_to_the_front_door(
        self, links: AckLinks, reason: DeclineReason
    ) -> None:
        subject, body = compose(outcome(Team.EARLY_HELP, "Early Help", reason.value), links)

        assert subject.startswith(f"{REFERENCE} outcome: ")
        assert "Early Help declined" in subject
        assert reason.value.replace("_", " ") in subject
        assert "back to the front door" in subject and "back to the front door" in body

    @pytest.mark.parametrize(
        ("team", "team_name"),
        [
            (Team.EARLY_HELP, "Early Help"),
            (Team.SOCIAL_CARE, "Children's social care"),
            (Team.OTHER_AGENCY, "Other agency"),
        ],
    )
    def test_acknowledgement_names_the_record(self, links: AckLinks, team: Team, team_name: str) -> None:
        subject, body = compose(outcome(team, team_name, "acknowledged", record_id="CASE-4711"), links)

        assert subject.startswith(f"{REFERENCE} outcome: ")
        assert f"{team_name} recorded it as CASE-4711" in subject
        assert "CASE-4711" in body
        assert "None" not in subject


class TestNoPersonalData:
    """Nothing but the reference, team, due instant and links goes into a message."""

    @pytest.mark.parametrize("kind", list(MessageKind), ids=[k.value for k in MessageKind])
    def test_body_states_it(self, links: AckLinks, kind: MessageKind) -> None:
        subject, body = compose(email_input(kind, result="acknowledged", record_id="X-1"), links)
        assert "This message holds no personal details." in body
        assert "\n" not in subject and "\r" not in subject
