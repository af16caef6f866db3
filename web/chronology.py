"""A referral's events in words, for its page and its CSV export for case reviews."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from models.enums import EventType
from models.payloads import ReferralEvent

_OUTCOMES = {
    "early_help": "Early Help",
    "social_care": "children's social care",
    "other_agency": "another agency",
    "no_further_action": "no further action",
}
_RECEIPTS = {
    "delivered": "Email delivered",
    "permanent-failure": "Email bounced (permanent failure)",
    "temporary-failure": "Email not delivered (temporary failure: inbox full or unavailable)",
    "technical-failure": "Email not delivered (technical failure at GOV.UK Notify)",
}
_REASONS = {"consent_declined": "consent declined", "not_appropriate": "not appropriate for Early Help"}

CSV_COLUMNS = ["Seq", "When", "Event", "Team", "Hand-off", "Who", "Role", "Details", "Data"]


@dataclass(frozen=True)
class Entry:
    """One event as people read it."""

    seq: int
    at: datetime
    what: str
    team: str
    handoff_seq: int | None
    who: str
    role: str
    details: list[str]
    recipients: list[str]
    event: ReferralEvent


def _text(value: object) -> str:
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return "" if value is None else str(value)


def describe(
    event: ReferralEvent, team_name: Callable[[str | None], str], when: Callable[[datetime], str]
) -> Entry:
    """What happened, who did it and the particulars (each email with its recipients)."""
    data = event.data
    team = team_name(event.team.value if event.team else None)
    details: list[str] = []
    recipients: list[str] = []
    kind = event.type
    if kind == EventType.RECEIVED:
        what = "Referral received"
    elif kind == EventType.DUPLICATE_SUBMISSION:
        what = "Submitted again (same police reference and content)"
    elif kind == EventType.HANDOFF_OPENED:
        what = f"Handed to {team}" if team else "Hand-off opened"
        if data.get("authority_name"):
            what = f"Handed to {_text(data.get('authority_name'))} (another authority)"
        due = data.get("due_at")
        if isinstance(due, str):
            details.append(f"Due {when(datetime.fromisoformat(due))}")
        if data.get("team_email"):
            details.append(f"Team email {data['team_email']}")
    elif kind == EventType.DECIDED:
        what = f"Decision: {_OUTCOMES.get(_text(data.get('outcome')), _text(data.get('outcome')))}"
    elif kind == EventType.TRANSFERRED:
        name = _text(data.get("authority_name")) or _text(data.get("authority"))
        what = f"Transferred to another authority: {name}"
        details.append(f"Authority code {_text(data.get('authority'))}")
    elif kind == EventType.ACKNOWLEDGED:
        what = "Acknowledged"
        details.append(f"Record id {_text(data.get('record_id'))}")
    elif kind == EventType.DECLINED:
        what = f"Declined: {_REASONS.get(_text(data.get('reason')), _text(data.get('reason')))}"
    elif kind == EventType.EMAIL_SENT:
        what = f"Email sent: {_text(data.get('kind')) or 'message'}"
        to = data.get("to")
        recipients = [str(r) for r in to] if isinstance(to, list) else ([str(to)] if to else [])
        details.append(f"To {', '.join(recipients) or 'nobody'}")
        details.append(f"Step {_text(data.get('step'))}, repeat {_text(data.get('repeat'))}")
        if data.get("status"):
            details.append(f"Status {_text(data.get('status'))}")
        if data.get("copy") == "fallback":
            details.append("Fallback copy of a refused message")
        if data.get("message_id"):
            details.append(f"Message-ID {_text(data.get('message_id'))}")
    elif kind == EventType.STEPS_COLLAPSED:
        what = "Missed reminders sent once"
        details.append(
            f"Step {_text(data.get('step'))}: repeats {_text(data.get('repeats'))} "
            f"sent as repeat {_text(data.get('sent_as'))}"
        )
    elif kind == EventType.DELIVERY_FAILED:
        copy = " (fallback copy)" if data.get("copy") == "fallback" else ""
        what = f"Email refused by the mail server{copy}: {_text(data.get('kind')) or 'message'}"
        to = data.get("to")
        recipients = [str(r) for r in to] if isinstance(to, list) else ([str(to)] if to else [])
        details.append(f"Not delivered to {', '.join(recipients) or 'nobody'}")
        details.append(f"SMTP reply {_text(data.get('reply_code')) or 'unknown'}")
        fallback = data.get("fallback")
        if isinstance(fallback, list):
            details.append(f"Sent instead to {', '.join(str(a) for a in fallback) or 'nobody (no fallback)'}")
    elif kind == EventType.DELIVERY_STATUS:
        copy = " (fallback copy)" if data.get("copy") == "fallback" else ""
        status = _text(data.get("status"))
        what = (
            f"{_RECEIPTS.get(status, f'Email status {status}')}{copy}: {_text(data.get('kind')) or 'message'}"
        )
        to = data.get("to")
        recipients = [str(r) for r in to] if isinstance(to, list) else ([str(to)] if to else [])
        details.append(f"To {', '.join(recipients) or 'nobody'}")
        details.append(f"Step {_text(data.get('step'))}, repeat {_text(data.get('repeat'))}")
        details.append(f"GOV.UK Notify id {_text(data.get('notification_id'))}")
        fallback = data.get("fallback")
        if isinstance(fallback, list):
            details.append(f"Sent instead to {', '.join(str(a) for a in fallback) or 'nobody (no fallback)'}")
    elif kind == EventType.CLOSED:
        what = "Closed"
    else:  # pragma: no cover - every EventType is named above
        what = str(kind)
    if data.get("note"):
        details.append(f"Note: {_text(data.get('note'))}")
    actor = event.actor
    return Entry(
        seq=event.seq,
        at=event.at,
        what=what,
        team=team,
        handoff_seq=event.handoff_seq,
        who=actor.name if actor else "System",
        role=actor.role.value.replace("_", " ") if actor else "",
        details=details,
        recipients=recipients,
        event=event,
    )


def to_csv(entries: list[Entry], iso: Callable[[datetime], str], cell: Callable[[str], str]) -> str:
    """The chronology as CSV: the page's columns, then every raw field for a case review."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for e in entries:
        raw = "; ".join(f"{k}={_text(v)}" for k, v in e.event.data.items())
        row = [
            str(e.seq),
            iso(e.at),
            e.what,
            e.team,
            str(e.handoff_seq or ""),
            e.who,
            e.role,
            "; ".join(e.details),
            raw,
        ]
        writer.writerow([cell(c) for c in row])
    return out.getvalue()
