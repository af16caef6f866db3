"""Operations routes: liveness, readiness, metrics and the dev outbox."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
from datetime import UTC, datetime, timedelta
from typing import Any

import aiosmtplib
import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
from temporalio.client import Client
from temporalio.service import RPCError

from activities.notify_channel import NotifyChannel
from activities.outbox import SmtpTarget
from config import Settings
from models import repository
from web.deps import DATABASE_DOWN, RETRY_AFTER, SessionDep
from web.errors import ApiError, error_responses

log = structlog.get_logger(__name__)

ops = APIRouter()


@ops.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


class Readiness(BaseModel):
    """Each dependency's state: `ok`, `not_configured`, or `unavailable: <why>`."""

    status: str
    checks: dict[str, str]


# A readiness probe must answer well within a load balancer's probe timeout (often 5-10 s).
CHECK_TIMEOUT = 3.0
HEALTHY = frozenset({"ok", "not_configured"})


def _down(exc: BaseException) -> str:
    return f"unavailable: {type(exc).__name__}"


async def _database(engine: AsyncEngine) -> str:
    async def probe() -> None:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    try:
        await asyncio.wait_for(probe(), CHECK_TIMEOUT)
    except (OSError, SQLAlchemyError, TimeoutError) as exc:
        return _down(exc)
    return "ok"


async def _temporal(client: Client) -> str:
    try:
        await client.workflow_service.get_system_info(
            GetSystemInfoRequest(), timeout=timedelta(seconds=CHECK_TIMEOUT)
        )
    except (RPCError, RuntimeError, OSError) as exc:
        return _down(exc)
    return "ok"


async def _smtp(url: str | None) -> str:
    if not url:
        return "not_configured"  # email goes to the built-in outbox
    target = SmtpTarget.from_url(url)
    smtp = aiosmtplib.SMTP(
        hostname=target.host,
        port=target.port,
        use_tls=target.use_tls,
        start_tls=False,  # EHLO and NOOP prove the server answers; delivery negotiates TLS itself
        timeout=CHECK_TIMEOUT,
    )
    try:
        await smtp.connect()
        await smtp.ehlo()
        await smtp.noop()
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        return _down(exc)
    finally:
        with contextlib.suppress(aiosmtplib.SMTPException, OSError, TimeoutError):
            if smtp.is_connected:
                await smtp.quit()
    return "ok"


async def _notify(settings: Settings) -> str:
    channel = NotifyChannel.from_settings(settings)
    if channel is None:
        return "not_configured"
    try:
        return await asyncio.wait_for(channel.check(), CHECK_TIMEOUT)
    except TimeoutError as exc:
        return _down(exc)


@ops.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "A dependency does not answer; `checks` says which"}},
)
async def readyz(request: Request) -> JSONResponse:
    """Readiness: the read model, Temporal and (when configured) SMTP and GOV.UK Notify each answer."""
    settings: Settings = request.app.state.settings
    database, temporal, smtp, notify = await asyncio.gather(
        _database(request.app.state.engine),
        _temporal(request.app.state.commands.client),
        _smtp(settings.smtp_url),
        _notify(settings),
    )
    checks = {"database": database, "temporal": temporal, "smtp": smtp, "notify": notify}
    ok = all(v in HEALTHY for v in checks.values())
    return JSONResponse(
        {"status": "ok" if ok else "unavailable", "checks": checks}, status_code=200 if ok else 503
    )


def _label(value: str | None) -> str:
    text = value or "none"
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


async def _reconcile_lines(session: AsyncSession) -> list[str]:
    # activities/reconcile.py is written alongside this file; its metrics appear once it exists.
    try:
        module = importlib.import_module("activities.reconcile")
    except ImportError:
        return []
    produce = getattr(module, "reconcile_metrics", None)
    if produce is None:
        return []
    try:
        lines = produce(session)
        if inspect.isawaitable(lines):
            lines = await lines
    except SQLAlchemyError as exc:
        # The reconciler's tables may lag this code by a migration (SQLite even reports a missing
        # table as an OperationalError): keep the core metrics, which have just been read.
        log.warning("metrics.reconcile_unavailable", error=type(exc).__name__)
        with contextlib.suppress(*DATABASE_DOWN):
            await session.rollback()
        return []
    return [str(line) for line in lines]


@ops.get("/metrics", response_class=PlainTextResponse, responses=error_responses(503))
async def metrics(session: SessionDep) -> str:
    """Prometheus text: open and overdue referrals by team, emails by kind and status, failures."""
    try:
        counts = await repository.open_counts(session, now=datetime.now(UTC))
        emails = await repository.outbox_counts(session)
        reconcile = await _reconcile_lines(session)
    except DATABASE_DOWN:
        raise ApiError(503, "unavailable", "the database is unavailable", headers=RETRY_AFTER) from None
    lines = [
        "# HELP referrals_open Referrals not yet closed, by the team they await.",
        "# TYPE referrals_open gauge",
    ]
    lines += [f'referrals_open{{team="{_label(team)}"}} {count}' for team, count, _ in counts]
    lines += [
        "# HELP referrals_overdue Open referrals past their due instant.",
        "# TYPE referrals_overdue gauge",
    ]
    lines += [f'referrals_overdue{{team="{_label(team)}"}} {late}' for team, _, late in counts]
    lines += [
        "# HELP referrals_emails Emails in the outbox (reminders, escalations, outcomes) by kind and status.",
        "# TYPE referrals_emails gauge",
    ]
    lines += [
        f'referrals_emails{{kind="{_label(kind)}",status="{_label(status)}"}} {n}'
        for kind, status, n in emails
    ]
    failures: dict[str, int] = {}
    for kind, status, n in emails:
        failures[kind] = failures.get(kind, 0) + (n if status in repository.DELIVERY_FAILED else 0)
    lines += [
        "# HELP referrals_email_delivery_failures Emails the mail system rejected or that failed, by kind.",
        "# TYPE referrals_email_delivery_failures gauge",
    ]
    lines += [f'referrals_email_delivery_failures{{kind="{_label(k)}"}} {n}' for k, n in failures.items()]
    lines += reconcile
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
