"""Temporal inputs and outputs of the retention purge (no personal data crosses here).

Imported by workflows/retention.py through the sandbox, like models/payloads.py: nothing here may
read the clock, the environment or the network.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import Field

from models.payloads import Strict

#: Referrals purged per transaction: small enough to keep each transaction (and its locks) short,
#: large enough that a backlog of years clears in a few hundred transactions.
BATCH_SIZE = 500

RetentionDays = Annotated[int, Field(ge=1)]
BatchSize = Annotated[int, Field(ge=1, le=10_000)]


class PurgeInput(Strict):
    """One batch of the purge: referrals closed before `now - retention_days` lose their details."""

    now: datetime
    retention_days: RetentionDays
    batch_size: BatchSize = BATCH_SIZE


class PurgeResult(Strict):
    """What one batch (or a whole run) purged: referrals, and the events and emails scrubbed."""

    referrals: int = 0
    events: int = 0
    outbox_messages: int = 0

    def plus(self, other: PurgeResult) -> PurgeResult:
        """The sum of two counts."""
        return PurgeResult(
            referrals=self.referrals + other.referrals,
            events=self.events + other.events,
            outbox_messages=self.outbox_messages + other.outbox_messages,
        )


class PurgeWorkflowInput(Strict):
    """Input of PurgeWorkflow, the daily Schedule's argument: a number of days, nothing personal."""

    retention_days: RetentionDays
    batch_size: BatchSize = BATCH_SIZE
    #: Batches per workflow run before it continues as new, keeping each history short.
    batches_per_run: Annotated[int, Field(ge=1, le=1000)] = 100
    # Carried over continue-as-new, so every run of one purge uses the same cut-off and the
    # last run reports the total.
    now: datetime | None = None
    so_far: PurgeResult = PurgeResult()
