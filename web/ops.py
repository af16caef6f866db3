"""Operations routes: liveness, readiness, metrics and the dev outbox."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
from temporalio.client import Client
from temporalio.service import RPCError

from models import repository
from web.deps import SessionDep
from web.errors import ApiError, error_responses

ops = APIRouter()


@ops.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


class Readiness(BaseModel):
    """Each dependency's state: `ok`, or `unavailable: <why>`."""

    status: str
    checks: dict[str, str]


@ops.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "A dependency does not answer; `checks` says which"}},
)
async def readyz(request: Request) -> JSONResponse:
    """Readiness: the read model and Temporal each answer."""
    checks: dict[str, str] = {}
    engine: AsyncEngine = request.app.state.engine
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except (OSError, SQLAlchemyError) as exc:
        checks["database"] = f"unavailable: {type(exc).__name__}"
    try:
        client: Client = request.app.state.commands.client
        await client.workflow_service.get_system_info(GetSystemInfoRequest(), timeout=timedelta(seconds=3))
        checks["temporal"] = "ok"
    except (RPCError, RuntimeError, OSError) as exc:
        checks["temporal"] = f"unavailable: {type(exc).__name__}"
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ok" if ok else "unavailable", "checks": checks}, status_code=200 if ok else 503
    )


@ops.get("/metrics", response_class=PlainTextResponse, responses=error_responses(503))
async def metrics(session: SessionDep) -> str:
    """Prometheus text: open and overdue referrals by awaiting team."""
    try:
        counts = await repository.open_counts(session, now=datetime.now(UTC))
    except OperationalError:
        raise ApiError(503, "unavailable", "the database is unavailable") from None
    lines = [
        "# HELP referrals_open Referrals not yet closed, by the team they await.",
        "# TYPE referrals_open gauge",
    ]
    lines += [f'referrals_open{{team="{team or "none"}"}} {count}' for team, count, _ in counts]
    lines += [
        "# HELP referrals_overdue Open referrals past their due instant.",
        "# TYPE referrals_overdue gauge",
    ]
    lines += [f'referrals_overdue{{team="{team or "none"}"}} {late}' for team, _, late in counts]
    return "\n".join(lines) + "\n"


@ops.get("/dev/outbox", responses=error_responses(404))
async def dev_outbox(request: Request, session: SessionDep) -> list[dict[str, Any]]:
    """The built-in outbox (only when no SMTP server is configured)."""
    if not request.app.state.outbox_enabled:
        raise ApiError(404, "not_found", "the dev outbox is off: email goes to REFERRALS_SMTP_URL")
    rows = await repository.outbox(session)
    return [
        {
            "key": r.key,
            "reference": r.reference,
            "kind": r.kind,
            "to": r.recipients,
            "subject": r.subject,
            "body": r.body,
            "message_id": r.message_id,
            "status": r.status,
            "sent_at": r.sent_at.isoformat() if r.sent_at else None,
        }
        for r in rows
    ]
