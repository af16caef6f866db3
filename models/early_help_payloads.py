"""Temporal inputs and outputs of the Early Help case-system lookup (ids only, no child data).

Imported by workflows/referral.py through the sandbox, like models/payloads.py: nothing here may
read the clock, the environment or the network.
"""

from __future__ import annotations

from models.enums import Role
from models.payloads import Actor, RecordId, Strict

#: Who acknowledged a hand-off when the case system holds the record (lookup or webhook).
CASE_SYSTEM = Actor(user_id="system:case-system", name="Early Help case system", role=Role.EARLY_HELP)


class LookupInput(Strict):
    """Ask the case system whether it holds a record for this referral."""

    referral_id: str
    reference: str
    police_reference: str


class LookupResult(Strict):
    """The record id the case system holds (None: not yet)."""

    record_id: RecordId | None = None
