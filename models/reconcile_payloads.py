"""Temporal inputs and outputs of the reconciler (ids and counts only, never personal data).

Imported by workflows/reconcile.py through the sandbox, like models/payloads.py: nothing here may
read the clock, the environment or the network.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated

from pydantic import Field

from models.payloads import Strict

PageSize = Annotated[int, Field(ge=1, le=1000)]
Pages = Annotated[int, Field(ge=1, le=1000)]


class FindingKind(StrEnum):
    """What the reconciler found; the first cannot be repaired safely, the others are re-projected."""

    #: An open row whose workflow is gone (not found, completed, failed, terminated, timed out).
    WORKFLOW_NOT_RUNNING = "workflow_not_running"
    #: A running ReferralWorkflow with no row in the read model.
    MISSING_ROW = "missing_row"
    #: A row whose version stays behind the workflow's state.
    VERSION_LAG = "version_lag"


class Suspect(Strict):
    """A divergence seen once; confirmed (or dropped) by a second look a little later."""

    kind: FindingKind
    referral_id: str
    workflow_id: str
    #: VERSION_LAG: the workflow's version at the first look (the row must reach it meanwhile).
    workflow_version: int | None = None
    detail: str = ""


class BeginResult(Strict):
    """Where the previous run stopped in the read model (None: start from the first row)."""

    row_cursor: str | None = None
    #: Where the previous run stopped among running workflows: the next run looks at those
    #: started before this instant (None: start from the newest).
    workflow_cursor: datetime | None = None


class RowsPageInput(Strict):
    """One page of open rows after `after` (by id), checked against running workflows."""

    after: str | None = None
    limit: PageSize = 200


class WorkflowsPageInput(Strict):
    """One page of running ReferralWorkflows on `task_queue`, checked against the rows."""

    task_queue: str
    page_token: bytes | None = None
    limit: PageSize = 100
    #: Only workflows started before this instant (where the previous run stopped).
    started_before: datetime | None = None


class PageResult(Strict):
    """What one page showed: how many it examined, the suspects, and where the next page starts."""

    examined: int = 0
    suspects: list[Suspect] = []
    #: Rows: the last id examined (None when the table ended). Workflows: visibility's token.
    next_row: str | None = None
    next_token: bytes | None = None
    #: Workflows: the earliest start time on the page (where a later run resumes).
    oldest_started: datetime | None = None


class ConfirmInput(Strict):
    """The second look: suspects still diverging are stored as findings, and repaired if safe."""

    run_id: str
    suspects: list[Suspect]
    rows_examined: int
    workflows_examined: int
    #: Where the next run's row scan starts (None: from the beginning).
    next_row_cursor: str | None = None
    #: Where the next run's scan of running workflows starts (None: from the newest).
    next_workflow_cursor: datetime | None = None


class ReconcileResult(Strict):
    """A run's counts: what it examined, the new findings, and how many were repaired."""

    rows_examined: int = 0
    workflows_examined: int = 0
    findings: int = 0
    repaired: int = 0


class ReportInput(Strict):
    """Email the administrators the findings of one run (once per run)."""

    run_id: str


class ReconcileWorkflowInput(Strict):
    """Input of ReconcileWorkflow, the Schedule's argument: the task queue and the bounds of a run."""

    #: Only workflows on this queue belong to this deployment's read model.
    task_queue: str
    row_page_size: PageSize = 200
    #: Rows examined per run at most: row_page_size x max_row_pages (a later run resumes after).
    max_row_pages: Pages = 50
    workflow_page_size: PageSize = 100
    #: Running workflows examined per run at most, newest first (where a lost row is likeliest);
    #: the next run resumes with older ones, and after the oldest starts again from the newest.
    max_workflow_pages: Pages = 10
    #: Suspects carried to the second look at most; the rest wait for the next run.
    max_suspects: Annotated[int, Field(ge=1, le=5000)] = 500
    #: The second look's delay: longer than a projection takes, shorter than the Schedule's interval.
    recheck_after: timedelta = timedelta(seconds=30)
