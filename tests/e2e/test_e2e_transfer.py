"""A transfer to another authority with real processes: the other authority's front door is
reminded and escalated to by SMTP, and acknowledges through the link in the email.

The policy is in seconds (see `short_policy(transfers=True)`): the transfer is due 8 s after it
opens, the other authority's front door is reminded 3 s before, and at the deadline it, its
manager, our front door's manager and the referrer are told.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from e2e_support import (
    NEIGHBOUR_FRONT_DOOR,
    NEIGHBOUR_MANAGER,
    REFERRER_EMAIL,
    Stack,
    assert_no_personal_data,
    eventually,
    referral_body,
)

pytestmark = pytest.mark.slow

OUR_MANAGER = "mash-manager@council.example"


async def get_referral(stack: Stack, rid: str) -> dict[str, Any]:
    async with stack.client("front_door") as http:
        response = await http.get(f"/api/v1/referrals/{rid}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_transfer_is_escalated_to_the_other_authority_until_it_acknowledges_by_link(
    stack: Stack,
) -> None:
    mailbox = stack.mailbox
    alive = [stack.worker, stack.api]
    async with stack.client("police") as police, stack.client("front_door") as front_door:
        submitted = await police.post("/api/v1/referrals", json=referral_body())
        assert submitted.status_code == 201, submitted.text
        rid, reference = submitted.json()["id"], submitted.json()["reference"]
        refused = await front_door.post(f"/api/v1/referrals/{rid}/transfer", json={"authority": "ELSEWHERE"})
        assert refused.status_code == 422 and "authority" in refused.json()["error"]["fields"]
        moved = await front_door.post(
            f"/api/v1/referrals/{rid}/transfer", json={"authority": "NEIGHBOUR", "note": "moved away"}
        )
        assert moved.status_code == 200, moved.text
    state = moved.json()
    assert (state["status"], state["awaiting_team"]) == ("awaiting_acknowledgement", "other_authority")

    told = await eventually(
        lambda: mailbox.of_kind("outcome", reference), within=30, what="the referrer's outcome", alive=alive
    )
    assert told[0].rcpt_tos == [REFERRER_EMAIL]
    assert "transferred it to Neighbouring Council" in told[0].subject

    reminders = await eventually(
        lambda: mailbox.of_kind("reminder", reference), within=30, what="the reminder", alive=alive
    )
    assert reminders[0].rcpt_tos == [NEIGHBOUR_FRONT_DOOR]
    assert "Neighbouring Council" in reminders[0].subject
    escalations = await eventually(
        lambda: mailbox.of_kind("escalation", reference), within=30, what="the escalation", alive=alive
    )
    assert sorted(escalations[0].rcpt_tos) == sorted(
        [NEIGHBOUR_FRONT_DOOR, NEIGHBOUR_MANAGER, OUR_MANAGER, REFERRER_EMAIL]
    )
    assert (await get_referral(stack, rid))["escalation_level"] >= 1

    # The other authority follows the link in the reminder and records its own id.
    links = re.findall(r"https?://\S+/ack/\S+", reminders[0].body)
    assert links, reminders[0].body
    async with httpx.AsyncClient(timeout=30) as browser:
        page = await browser.get(links[0])
        assert page.status_code == 200 and "Neighbouring Council" in page.text
        done = await browser.post(links[0], data={"record_id": "NC-E2E-1"})
        assert done.status_code == 200, done.text

    async def closed() -> dict[str, Any] | None:
        body = await get_referral(stack, rid)
        return body if body["status"] == "closed" else None

    final = await eventually(closed, within=30, what="the referral to close", alive=alive)
    assert final["record_id"] == "NC-E2E-1"
    assert [h["team"] for h in final["handoffs"]] == ["front_door", "other_authority"]
    recorded = await eventually(
        lambda: [m for m in mailbox.of_kind("outcome", reference) if "NC-E2E-1" in m.subject],
        within=20,
        what="the referrer told of the acknowledgement",
        alive=alive,
    )
    assert recorded[0].rcpt_tos == [REFERRER_EMAIL]
    mine = mailbox.messages(reference)
    assert_no_personal_data(mine)
    assert not any("moved away" in m.body for m in mine)  # notes never leave in email
