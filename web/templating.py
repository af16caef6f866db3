"""Server-rendered pages: the Jinja environment (with GOV.UK Frontend's macros), rendering, page errors."""

from __future__ import annotations

import inspect
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import ChoiceLoader, Environment, FileSystemLoader, PackageLoader, PrefixLoader
from starlette.staticfiles import StaticFiles

from activities.calendar import WorkingCalendar
from models.enums import Team
from models.policy import DEFAULT_TEAM_NAMES, Policy

WEB = Path(__file__).resolve().parent
TEMPLATES = WEB / "templates"
STATIC = WEB / "static"
ASSET_PATH = "/static/govuk/assets"
SERVICE_NAME = "Referral tracker"


@dataclass(frozen=True)
class Site:
    """What every page needs: templates, and the policy with its calendar and time zone."""

    env: Environment
    policy: Policy
    calendar: WorkingCalendar
    zone: ZoneInfo

    def team_name(self, team: str | Team | None) -> str:
        """A team's display name from the policy ("Early Help"); empty for none."""
        if not team:
            return ""
        try:
            if Team(team) == Team.OTHER_AUTHORITY:
                # Each transfer names its own authority; this is the team's name in lists.
                return DEFAULT_TEAM_NAMES[Team.OTHER_AUTHORITY]
            return self.policy.team(Team(team)).name
        except ValueError:
            return str(team)


def build_environment() -> Environment:
    """Our templates first, then GOV.UK Frontend's under the `govuk_frontend_jinja/` prefix."""
    env = Environment(
        loader=ChoiceLoader(
            [
                FileSystemLoader(TEMPLATES),
                PrefixLoader({"govuk_frontend_jinja": PackageLoader("govuk_frontend_jinja")}),
            ]
        ),
        autoescape=True,
    )
    return env


def site_of(request: Request) -> Site:
    """The app's Site."""
    site: Site = request.app.state.site
    return site


def format_instant(instant: datetime | None, zone: ZoneInfo) -> str:
    """A readable local time in the GOV.UK style, e.g. "26 Nov 2026 2:05pm"."""
    if instant is None:
        return ""
    local = instant.astimezone(zone)
    hour = local.hour % 12 or 12
    return f"{local.day} {local:%b %Y} {hour}:{local:%M}{'am' if local.hour < 12 else 'pm'}"


def format_date(value: object) -> str:
    """An ISO date ("2015-03-01") as GOV.UK writes dates: "1 March 2015" (other values unchanged)."""
    try:
        day = date.fromisoformat(str(value))
    except ValueError:
        return str(value)
    return f"{day.day} {day:%B %Y}"


def local_iso(instant: datetime | None, zone: ZoneInfo) -> str:
    """ISO 8601 in local time with its offset (machine-readable `<time datetime>`)."""
    return instant.astimezone(zone).isoformat(timespec="seconds") if instant else ""


def csp_nonce(request: Request) -> str:
    """This request's Content-Security-Policy nonce (set by web.security)."""
    nonce = getattr(request.state, "csp_nonce", None)
    if not nonce:
        nonce = secrets.token_urlsafe(18)
        request.state.csp_nonce = nonce
    return str(nonce)


def render(
    request: Request,
    template: str,
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> HTMLResponse:
    """A page from `template`, with the signed-in user (if any) and the CSP nonce."""
    site = site_of(request)
    user = getattr(request.state, "user", None)
    html = site.env.get_template(template).render(
        request_path=request.url.path,
        cspNonce=csp_nonce(request),
        assetPath=ASSET_PATH,
        service_name=SERVICE_NAME,
        user=user,
        csrf_token=getattr(request.state, "csrf_token", ""),
        can_see_dashboard=getattr(request.state, "can_see_dashboard", False),
        format_instant=lambda dt: format_instant(dt, site.zone),
        local_iso=lambda dt: local_iso(dt, site.zone),
        format_date=format_date,
        team_name=site.team_name,
        **context,
    )
    return HTMLResponse(html, status_code=status, headers=headers)


class PageError(Exception):
    """A page that explains a refusal (403, 404, 409, 410, 503...) in plain words."""

    def __init__(self, status: int, title: str, message: str, *, link: tuple[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.title, self.message, self.link = status, title, message, link


class SignInRequired(Exception):
    """The page needs a signed-in user: redirect to the sign-in page, then back."""

    def __init__(self, next_url: str) -> None:
        super().__init__(next_url)
        self.next_url = next_url


def sign_in_url(next_url: str | None) -> str:
    """The sign-in page that returns to `next_url` afterwards."""
    if not next_url or next_url == "/":
        return "/sign-in"
    return "/sign-in?next=" + quote(next_url, safe="/")


def message_page(request: Request, error: PageError) -> HTMLResponse:
    """The page for a PageError."""
    return render(
        request,
        "message.html",
        status=error.status,
        title=error.title,
        message=error.message,
        link=error.link,
    )


#: What a browser is told when a JSON error handler answers one of its requests.
_FAILURES = {
    404: ("Page not found", "If you typed the web address, check it is correct."),
    405: ("Page not found", "If you typed the web address, check it is correct."),
    422: ("There is a problem with the address", "Check the web address and try again."),
    503: ("Sorry, the service is unavailable", "Try again in a few minutes."),
}
_FAILURE = ("Sorry, there is a problem with the service", "Try again later.")


def _wants_page(request: Request) -> bool:
    """A browser asking for a page (the JSON API and scripts keep the JSON error shape)."""
    return not request.url.path.startswith("/api/") and "text/html" in request.headers.get("accept", "")


Handler = Callable[[Request, Any], Response | Awaitable[Response]]


def _page_or_json(handler: Handler) -> Handler:
    async def handle(request: Request, exc: Exception) -> Response:
        answer = handler(request, exc)
        response = await answer if inspect.isawaitable(answer) else answer
        if response.status_code < 400 or not _wants_page(request):
            return response
        title, message = _FAILURES.get(response.status_code, _FAILURE)
        headers = {k: v for k, v in response.headers.items() if k.lower() in {"allow", "retry-after"}}
        page = render(request, "message.html", status=response.status_code, title=title, message=message)
        page.headers.update(headers)
        return page

    return handle


def install_pages(app: FastAPI, *, site: Site) -> None:
    """Templates, static files and the handlers that turn page errors into pages.

    Call after web.errors.install_error_handlers: a browser then gets a page where the JSON
    API's handlers would answer (an unknown address, the database away), and scripts the JSON.
    """
    app.state.site = site
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    for kind, handler in list(app.exception_handlers.items()):
        app.exception_handlers[kind] = _page_or_json(handler)

    @app.exception_handler(PageError)
    async def _page_error(request: Request, exc: PageError) -> Response:
        return message_page(request, exc)

    @app.exception_handler(SignInRequired)
    async def _sign_in(_: Request, exc: SignInRequired) -> Response:
        return RedirectResponse(sign_in_url(exc.next_url), status_code=303)
