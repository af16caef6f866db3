"""The dashboard `/`: open referrals most urgent first, filters and paging in the URL, counts, charts, CSV."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, replace
from datetime import UTC, datetime, time, timedelta
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from models import repository
from models.enums import LOCAL_TEAMS, Risk, Team
from models.repository import QueueFilter, QueueGroup, QueueRow
from models.tables import Referral
from web.access import scope_team
from web.charts import bar_chart
from web.deps import SessionDep
from web.session import DASHBOARD_ROLES, PageUser, require_role
from web.templating import Site, format_instant, render, site_of
from web.working_time import WorkingAge

router = APIRouter()

PAGE_SIZE = 50
#: Age bands in working days: under 1, 1 to 2, 2 to 5, 5 and more.
AGE_BAND_DAYS = (1, 2, 5)
AGE_BAND_LABELS = ("Under 1 day", "1 to 2 days", "2 to 5 days", "5 days or more")
AGE_BAND_SHORT = ("<1", "1\u20132", "2\u20135", "5+")  # en dashes
WEEKS_SHOWN = 8
RISK_ORDER = (Risk.RED, Risk.AMBER, Risk.GREEN)
RAG_TAG = {"red": "govuk-tag--red", "amber": "govuk-tag--orange", "green": "govuk-tag--green"}
CSV_COLUMNS = ["Reference", "Force", "RAG", "Awaiting", "Due", "Age", "Overdue", "Escalation level"]


@dataclass(frozen=True)
class DashboardQuery:
    """The dashboard's filters and page, read from (and written back to) the URL."""

    filters: QueueFilter
    page: int = 1

    @classmethod
    def parse(cls, params: Any) -> DashboardQuery:
        """Filters from query parameters; values that are not recognised are ignored."""
        team = _enum(Team, params.get("team"))
        risk = _enum(Risk, params.get("rag"))
        force = str(params.get("force") or "").strip()[:200] or None
        overdue = str(params.get("overdue") or "").lower() in {"1", "true", "on", "yes"}
        try:
            page = max(1, min(int(params.get("page") or 1), 1_000_000))
        except ValueError:
            page = 1
        return cls(QueueFilter(team=team, force=force, risk=risk, overdue=overdue), page)

    def params(self, *, page: int | None = None) -> list[tuple[str, str]]:
        """Query parameters of these filters (and a page, beyond the first)."""
        f = self.filters
        out = [
            ("team", f.team.value if f.team else ""),
            ("force", f.force or ""),
            ("rag", f.risk.value if f.risk else ""),
            ("overdue", "1" if f.overdue else ""),
        ]
        pairs = [(k, v) for k, v in out if v]
        if page and page > 1:
            pairs.append(("page", str(page)))
        return pairs

    def url(self, path: str = "/", *, page: int | None = None) -> str:
        """`path` with these filters in its query string."""
        query = urlencode(self.params(page=page))
        return f"{path}?{query}" if query else path

    @property
    def filtered(self) -> bool:
        """Whether any filter is set."""
        return bool(self.params())


def _enum(kind: Any, value: object) -> Any:
    try:
        return kind(value) if value else None
    except ValueError:
        return None


def _matches(group: QueueGroup, f: QueueFilter) -> bool:
    return (
        (f.team is None or group.team == f.team.value)
        and (f.force is None or group.force == f.force)
        and (f.risk is None or group.risk == f.risk.value)
    )


@dataclass(frozen=True)
class TeamCount:
    """One line of the counts per team."""

    team: str
    name: str
    open: int
    overdue: int

    @property
    def share_overdue(self) -> str:
        """The share past its deadline, e.g. "25%"."""
        return f"{round(100 * self.overdue / self.open)}%" if self.open else "0%"


def _week_starts(now: datetime, site: Site) -> list[datetime]:
    """Local Monday midnights: this week's first, then back WEEKS_SHOWN - 1 weeks."""
    today = now.astimezone(site.zone).date()
    monday = today - timedelta(days=today.weekday())
    return [
        datetime.combine(monday - timedelta(weeks=n), time(0), tzinfo=site.zone) for n in range(WEEKS_SHOWN)
    ]


def _counts(groups: list[QueueGroup], site: Site) -> list[TeamCount]:
    teams = list(LOCAL_TEAMS)
    # Transfers to another authority get a line where the policy allows them (or some are open).
    if site.policy.authorities or any(g.team == Team.OTHER_AUTHORITY.value for g in groups):
        teams.append(Team.OTHER_AUTHORITY)
    counts = []
    for team in teams:
        mine = [g for g in groups if g.team == team.value]
        counts.append(
            TeamCount(
                team.value, site.team_name(team), sum(g.open for g in mine), sum(g.overdue for g in mine)
            )
        )
    return counts


def _charts(groups: list[QueueGroup], week_starts: list[datetime]) -> dict[str, Any]:
    """Open referrals by age band and by week received, as SVG and as table rows."""
    total = sum(g.open for g in groups)
    after = [sum(g.received_after[i] for g in groups) for i in range(len(AGE_BAND_DAYS) + len(week_starts))]
    under = after[: len(AGE_BAND_DAYS)]  # received after "n working days ago": younger than n days
    bands = [under[0], under[1] - under[0], under[2] - under[1], total - under[2]]
    since = after[len(AGE_BAND_DAYS) :]  # received since the start of each week, newest week first
    weekly = [since[0]] + [since[n] - since[n - 1] for n in range(1, len(since))]
    earlier = total - since[-1]
    week_labels = [f"w/c {w.day} {w:%b}" for w in week_starts]
    labels = ["Earlier", *reversed(week_labels)]
    values = [earlier, *reversed(weekly)]
    age_rows = list(zip(AGE_BAND_LABELS, bands, strict=True))
    week_rows = list(zip(labels, values, strict=True))
    return {
        "age_svg": bar_chart(
            chart_id="chart-age",
            title="Open referrals by age in working days",
            labels=list(AGE_BAND_SHORT),
            spoken=list(AGE_BAND_LABELS),
            values=bands,
        ),
        "week_svg": bar_chart(
            chart_id="chart-week",
            title="Open referrals by week received",
            labels=[label.removeprefix("w/c ") for label in labels],
            spoken=[label.replace("w/c", "week commencing") for label in labels],
            values=values,
            rotate=-40,
        ),
        "age_rows": age_rows,
        "week_rows": week_rows,
    }


@dataclass(frozen=True)
class QueueLine:
    """One table row, as shown (and exported)."""

    row: QueueRow
    team_name: str
    due: str
    age: str
    overdue: bool

    def cells(self) -> list[str]:
        """The row's cells as text, the same as the table shows."""
        return [
            self.row.reference,
            self.row.force,
            self.row.risk.capitalize(),
            self.team_name,
            self.due,
            self.age,
            "Overdue" if self.overdue else "No",
            str(self.row.escalation_level),
        ]


def _lines(rows: list[QueueRow], site: Site, now: datetime) -> list[QueueLine]:
    ages = WorkingAge(site.calendar, now)
    return [
        QueueLine(
            row=r,
            team_name=site.team_name(r.awaiting_team),
            due=format_instant(r.due_at, site.zone),
            age=ages.since(r.received_at),
            overdue=r.due_at < now,
        )
        for r in rows
    ]


def _pagination(query: DashboardQuery, pages: int) -> dict[str, Any] | None:
    """GOV.UK pagination: first, last, the current page and its neighbours, ellipses between."""
    if pages <= 1:
        return None
    current = query.page
    shown = sorted({1, pages, current - 1, current, current + 1} & set(range(1, pages + 1)))
    items: list[dict[str, Any]] = []
    for n, number in enumerate(shown):
        if n and number - shown[n - 1] > 1:
            items.append({"ellipsis": True})
        items.append({"number": number, "href": query.url(page=number), "current": number == current})
    out: dict[str, Any] = {"items": items, "landmarkLabel": "Pages of open referrals"}
    if current > 1:
        out["previous"] = {"href": query.url(page=current - 1)}
    if current < pages:
        out["next"] = {"href": query.url(page=current + 1)}
    return out


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def dashboard(request: Request, user: PageUser, session: SessionDep) -> Response:
    """Open referrals, most urgent first, with counts per team and charts of their age."""
    require_role(user, DASHBOARD_ROLES, "may not see the dashboard; open a referral from its link")
    site = site_of(request)
    now = datetime.now(UTC)
    query = DashboardQuery.parse(request.query_params)
    scope = scope_team(user)
    query = replace(query, filters=replace(query.filters, handed_to=scope))
    ages = WorkingAge(site.calendar, now)
    week_starts = _week_starts(now, site)
    # One index-only scan counts everything: per team, force and RAG; overdue; age and week bands.
    thresholds = ages.days_ago(AGE_BAND_DAYS) + [w - timedelta(microseconds=1) for w in week_starts]
    groups = await repository.open_queue_summary(session, now=now, received_after=thresholds, scope=scope)
    total = sum(g.overdue if query.filters.overdue else g.open for g in groups if _matches(g, query.filters))
    pages = max(1, math.ceil(total / PAGE_SIZE))
    if query.page > pages:
        query = replace(query, page=pages)
    rows = await repository.open_queue(
        session, query.filters, now=now, limit=PAGE_SIZE, offset=(query.page - 1) * PAGE_SIZE
    )
    forces = sorted({g.force for g in groups} | ({query.filters.force} if query.filters.force else set()))
    counts = _counts(groups, site)
    bounced = await _referrer_undeliverable(session, [r.id for r in rows])
    return render(
        request,
        "dashboard.html",
        title="Dashboard",
        bodyClasses="app-wide",
        query=query,
        lines=_lines(rows, site, now),
        total=total,
        first=(query.page - 1) * PAGE_SIZE + 1,
        last=(query.page - 1) * PAGE_SIZE + len(rows),
        pagination=_pagination(query, pages),
        counts=counts,
        all_open=sum(c.open for c in counts),
        all_overdue=sum(c.overdue for c in counts),
        forces=forces,
        teams=[(t.value, site.team_name(t)) for t in Team],
        risks=[(r.value, r.value.capitalize()) for r in RISK_ORDER],
        rag_tag=RAG_TAG,
        bounced=bounced,
        csv_url=query.url("/referrals.csv"),
        **_charts(groups, week_starts),
    )


async def _referrer_undeliverable(session: AsyncSession, ids: list[str]) -> set[str]:
    """Of one page's referrals, those whose referrer's address the mail server rejected."""
    if not ids:
        return set()
    query = select(Referral.id).where(Referral.id.in_(ids), Referral.referrer_undeliverable.is_(True))
    return set(await session.scalars(query))


def csv_cell(value: str) -> str:
    """A cell a spreadsheet will not run as a formula (OWASP CSV injection)."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


@router.get("/referrals.csv", include_in_schema=False)
async def dashboard_csv(request: Request, user: PageUser, session: SessionDep) -> Response:
    """Exactly what the filters show, every page, with the table's columns."""
    require_role(user, DASHBOARD_ROLES, "may not export the dashboard")
    site = site_of(request)
    now = datetime.now(UTC)
    query = DashboardQuery.parse(request.query_params)
    filters = replace(query.filters, handed_to=scope_team(user))
    rows = await repository.open_queue(session, filters, now=now)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for line in _lines(rows, site, now):
        writer.writerow([csv_cell(c) for c in line.cells()])
    stamp = now.astimezone(site.zone).strftime("%Y-%m-%d-%H%M")
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="open-referrals-{stamp}.csv"'},
    )
