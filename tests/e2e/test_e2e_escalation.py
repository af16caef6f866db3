"""Acknowledge-or-escalate with real processes: Temporal dev server, worker, API and an SMTP server.

The policy is in seconds (see `short_policy`): each hand-off is due 8 s after it opens, the team
is reminded 3 s before, and the referrer and the team's manager are told at the deadline and
then every 4 s, twice more.
"""

from __future__ import annotations

import base64
import contextlib
import re
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from e2e_support import (
    FORBIDDEN_IN_EMAIL,
    REFERRER_EMAIL,
    Received,
    Stack,
    assert_no_personal_data,
    eventually,
    referral_body,
    wait_until,
)

pytestmark = pytest.mark.slow

EARLY_HELP_TEAM = "earlyhelp@council.example"
EARLY_HELP_MANAGER = "earlyhelp-manager@council.example"
REPEAT_EVERY = timedelta(seconds=4)
REPEATS = 2


async def submit_and_decide(stack: Stack) -> tuple[str, str, datetime]:
    """Police submit (201), the front door passes it to Early Help (200): id, reference, due."""
    async with stack.client("police") as police, stack.client("front_door") as front_door:
        submitted = await police.post("/api/v1/referrals", json=referral_body())
        assert submitted.status_code == 201, submitted.text
        referral = submitted.json()
        rid, reference = referral["id"], referral["reference"]
        assert referral["status"] == "awaiting_decision"
        decided = await front_door.post(
            f"/api/v1/referrals/{rid}/decision", json={"outcome": "early_help", "note": "EH to offer support"}
        )
        assert decided.status_code == 200, decided.text
        state = decided.json()
    assert state["awaiting_team"] == "early_help", state
    assert state["status"] == "awaiting_acknowledgement", state
    return rid, reference, datetime.fromisoformat(state["due_at"])


async def get_referral(stack: Stack, role: str, rid: str) -> dict[str, Any]:
    async with stack.client(role) as http:
        response = await http.get(f"/api/v1/referrals/{rid}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def ack_link(message: Received) -> str:
    """The acknowledgement link in a message body."""
    links = [word for word in message.body.split() if "/ack/" in word]
    assert links, f"no /ack/ link in {message.subject!r}:\n{message.body}"
    return links[0]


def assert_every_subject_starts_with(messages: list[Received], reference: str) -> None:
    for message in messages:
        assert message.subject.startswith(f"{reference} "), message.subject
        assert message.reference_header == reference, message.subject


async def test_unacknowledged_early_help_hand_off_is_escalated_until_acknowledged(stack: Stack) -> None:
    mailbox = stack.mailbox
    alive = [stack.worker, stack.api]
    rid, reference, due = await submit_and_decide(stack)

    reminders = await eventually(
        lambda: mailbox.of_kind("reminder", reference), within=30, what="the reminder", alive=alive
    )
    assert reminders[0].rcpt_tos == [EARLY_HELP_TEAM]
    assert "Early Help" in reminders[0].subject

    escalations = await eventually(
        lambda: mailbox.of_kind("escalation", reference), within=30, what="the escalation", alive=alive
    )
    escalation = escalations[0]
    assert sorted(escalation.rcpt_tos) == sorted([REFERRER_EMAIL, EARLY_HELP_MANAGER])
    assert "Early Help" in escalation.body  # says which team has not acknowledged
    link = ack_link(escalation)
    assert link.startswith(f"{stack.public_url}/ack/"), link
    assert datetime.now(UTC) >= due - timedelta(seconds=1), "escalated before the deadline"

    # Following the link only shows the form (mail scanners follow links); it acknowledges nothing.
    async with httpx.AsyncClient(timeout=30) as browser:
        page = await browser.get(link)
    assert page.status_code == 200, page.text
    assert reference in page.text
    overdue = await get_referral(stack, "early_help", rid)
    assert overdue["status"] == "awaiting_acknowledgement"
    assert overdue["escalation_level"] >= 1

    # Early Help records it; the referral closes.
    async with stack.client("early_help") as early_help:
        acked = await early_help.post(
            f"/api/v1/referrals/{rid}/acknowledgement", json={"record_id": "EH-4242", "note": "allocated"}
        )
    assert acked.status_code == 200, acked.text
    # The Update has been applied: whatever was escalated by now is all there may ever be.
    acknowledged_at = datetime.now(UTC)
    sent_before_ack = len(mailbox.of_kind("escalation", reference))

    async def closed() -> dict[str, Any] | None:
        body = await get_referral(stack, "front_door", rid)
        return body if body["status"] == "closed" else None

    final = await eventually(closed, within=30, what="GET to show the referral closed", alive=alive)
    assert final["record_id"] == "EH-4242"
    assert final["awaiting_team"] is None

    # Past the next scheduled repeat of the escalation, nothing more is escalated.
    repeats = [due + REPEAT_EVERY * n for n in range(1, REPEATS + 1)]
    next_repeat = min((at for at in repeats if at > acknowledged_at), default=acknowledged_at)
    await wait_until(next_repeat + timedelta(seconds=3), alive=alive)
    assert len(mailbox.of_kind("escalation", reference)) == sent_before_ack

    outcomes = await eventually(
        lambda: [m for m in mailbox.of_kind("outcome", reference) if "EH-4242" in m.subject],
        within=20,
        what="the outcome email to the referrer",
        alive=alive,
    )
    assert outcomes[0].rcpt_tos == [REFERRER_EMAIL]

    everything = mailbox.messages()
    kinds = Counter(m.kind() for m in everything)
    # front door's outcome + Early Help's outcome, one reminder, the escalations before the ack
    assert kinds == {"outcome": 2, "reminder": 1, "escalation": sent_before_ack}, [
        m.subject for m in everything
    ]
    assert_every_subject_starts_with(everything, reference)
    assert_no_personal_data(everything)
    assert len({m.message_id for m in everything}) == len(everything)


async def test_escalation_survives_a_killed_worker_and_is_sent_exactly_once(stack: Stack) -> None:
    mailbox = stack.mailbox
    rid, reference, due = await submit_and_decide(stack)

    # Wait until the reminder is sent and recorded in the referral's history: from then on the
    # workflow only waits for its deadline timer.
    async def reminder_recorded() -> bool:
        events = (await get_referral(stack, "early_help", rid))["events"] or []
        return any(e["type"] == "email_sent" and e["data"].get("kind") == "reminder" for e in events)

    await eventually(reminder_recorded, within=30, what="the reminder to be recorded", alive=[stack.worker])
    assert not mailbox.of_kind("escalation", reference)
    assert datetime.now(UTC) < due, "the test machine is too slow: the deadline passed already"

    stack.worker.kill9()
    # The deadline passes while no worker runs.
    await wait_until(due + timedelta(seconds=1), alive=[stack.api])
    assert not mailbox.of_kind("escalation", reference), "an escalation was sent with no worker running"

    stack.worker.start()
    await stack.wait_worker_started(runs=2)
    alive = [stack.worker, stack.api]
    await eventually(
        lambda: mailbox.of_kind("escalation", reference),
        within=30,
        what="the escalation after the restart",
        alive=alive,
    )
    # Let the whole ladder play out, then a little longer for any duplicate.
    await eventually(
        lambda: [m for m in mailbox.of_kind("escalation", reference) if f"(repeat {REPEATS})" in m.subject],
        within=40,
        what="the last repeat of the escalation",
        alive=alive,
    )
    await wait_until(datetime.now(UTC) + timedelta(seconds=3), alive=alive)

    everything = mailbox.messages()
    subjects = [m.subject for m in everything]
    by_id = Counter(m.message_id for m in everything)
    assert all(by_id.values()) and max(by_id.values()) == 1, f"duplicate Message-IDs: {subjects}"
    by_key = Counter((m.reference_header, m.subject) for m in everything)
    assert max(by_key.values()) == 1, f"duplicate messages: {subjects}"
    assert all(m.message_id for m in everything)
    assert len(mailbox.of_kind("reminder", reference)) == 1
    escalation_subjects = [m.subject for m in mailbox.of_kind("escalation", reference)]
    # Repeats that fell due while no worker ran are collapsed into one send (CONTRACT.md), and a
    # killed worker's workflows resume only after Temporal's sticky-queue timeout (10 s), so the
    # deadline's sends may arrive as one message: at least one, never a (step, repeat) twice.
    assert 1 <= len(escalation_subjects) <= 1 + REPEATS, escalation_subjects
    assert len(set(escalation_subjects)) == len(escalation_subjects)
    assert_every_subject_starts_with(everything, reference)
    assert_no_personal_data(everything)

    # The referral is still waiting for Early Help, with the escalations counted.
    state = await get_referral(stack, "early_help", rid)
    assert state["status"] == "awaiting_acknowledgement"
    assert state["escalation_level"] == len(escalation_subjects)


def _payload_texts(node: Any) -> Iterator[str]:
    """Every payload's data in a history (as JSON), decoded from base64."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "data" and isinstance(value, str):
                with contextlib.suppress(ValueError):
                    yield base64.b64decode(value).decode("utf-8", errors="replace")
            else:
                yield from _payload_texts(value)
    elif isinstance(node, list):
        for item in node:
            yield from _payload_texts(item)


async def test_temporal_history_holds_no_readable_child_data(stack: Stack) -> None:
    from temporalio.client import Client

    from codec import ENCODING, data_converter
    from models.identity import workflow_id

    async with stack.client("police") as police:
        submitted = await police.post("/api/v1/referrals", json=referral_body())
    assert submitted.status_code == 201, submitted.text
    handle_id = workflow_id(submitted.json()["id"])
    client = await Client.connect(stack.env["REFERRALS_TEMPORAL_ADDRESS"])
    history = await client.get_workflow_handle(handle_id).fetch_history()
    texts = list(_payload_texts(history.to_json_dict()))
    assert texts, "no payloads found in the history"
    for text in texts:
        for needle in FORBIDDEN_IN_EMAIL:
            assert needle not in text, f"{needle!r} is readable in the Temporal history"
    started = history.events[0].workflow_execution_started_event_attributes.input.payloads[0]
    assert started.metadata["encoding"] == ENCODING
    # Workflow ids, search attributes and memo are never encrypted: they hold no personal data.
    assert re.fullmatch(r"referral-[0-9a-f]{32}", handle_id)
    described = await client.get_workflow_handle(handle_id).describe()
    unencrypted = f"{handle_id} {described.raw_description.workflow_execution_info.search_attributes} "
    unencrypted += f"{described.raw_description.workflow_execution_info.memo}"
    for needle in FORBIDDEN_IN_EMAIL:
        assert needle not in unencrypted, f"{needle!r} is in the workflow id, search attributes or memo"

    # An operator holding the key (here derived from the secret) reads the history in full.
    keyed = await Client.connect(
        stack.env["REFERRALS_TEMPORAL_ADDRESS"],
        data_converter=data_converter(encryption_key=None, secret=stack.env["REFERRALS_SECRET_KEY"]),
    )
    decoded = await keyed.data_converter.decode(
        list(history.events[0].workflow_execution_started_event_attributes.input.payloads), [dict]
    )
    assert any(child["family_name"] in str(decoded[0]) for child in referral_body()["children"])
