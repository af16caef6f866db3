"""Sign in and sign out of the web pages (the JSON API keeps bearer tokens)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from models import repository
from web.auth import verify_password
from web.deps import SessionDep
from web.session import checked_form, current_session, page_user, safe_next, sessions_of
from web.templating import SignInRequired, render

router = APIRouter()

WRONG_CREDENTIALS = "Enter a correct email address and password"

#: Failed sign-ins counted over this window...
FAILURE_WINDOW = timedelta(minutes=15)
#: ...allowed per email address (guessing one person's password)...
MAX_FAILURES_PER_EMAIL = 5
#: ...and per client address (trying many emails). Behind a proxy, every user shares its address:
#: run the API with the proxy's forwarded headers trusted (docs) or this limit locks out everyone.
MAX_FAILURES_PER_ADDRESS = 100


def _limit_keys(request: Request, email: str) -> list[tuple[str, int]]:
    """(key, allowed failures): hashed, so the table holds no email address or IP address."""
    address = request.client.host if request.client else "unknown"
    return [
        (hashlib.sha256(b"email\0" + email.strip().lower().encode()).hexdigest(), MAX_FAILURES_PER_EMAIL),
        (hashlib.sha256(b"address\0" + address.encode()).hexdigest(), MAX_FAILURES_PER_ADDRESS),
    ]


async def _retry_after(session: SessionDep, keys: list[tuple[str, int]], now: datetime) -> int | None:
    """Seconds until a sign-in may be tried again, or None when it may be tried now."""
    wait = 0.0
    for key, allowed in keys:
        failures = await repository.sign_in_failures(session, key, since=now - FAILURE_WINDOW)
        if len(failures) >= allowed:
            # Allowed again once enough of the counted failures have left the window.
            wait = max(wait, (failures[len(failures) - allowed] + FAILURE_WINDOW - now).total_seconds())
    return max(1, int(wait) + 1) if wait > 0 else None


def _form(
    request: Request,
    *,
    next_url: str | None,
    errors: dict[str, str] | None = None,
    email: str = "",
    status: int = 200,
    signed_out: bool = False,
) -> HTMLResponse:
    sessions = sessions_of(request)
    browser = current_session(request)
    fresh = browser is None or browser.user_id is not None
    if fresh:
        browser = sessions.new()
    assert browser is not None
    request.state.csrf_token = sessions.csrf_token(browser)
    response = render(
        request,
        "sign_in.html",
        status=status,
        title="Sign in",
        errors=errors or {},
        email=email,
        next_url=next_url or "",
        signed_out=signed_out,
        sign_in_csrf=sessions.csrf_token(browser),
    )
    if fresh:
        sessions.set_cookie(response, browser)
    return response


@router.get("/sign-in", response_class=HTMLResponse, include_in_schema=False)
async def sign_in_form(request: Request, session: SessionDep) -> Response:
    """The sign-in form (or straight on, when already signed in)."""
    next_url = safe_next(request.query_params.get("next"))
    browser = current_session(request)
    if browser is not None and browser.user_id:
        try:
            await page_user(request, session)
            return RedirectResponse(next_url or "/", status_code=303)
        except SignInRequired:
            pass  # the user has gone or changed password: sign in again
    return _form(request, next_url=next_url, signed_out=request.query_params.get("signed_out") == "1")


@router.post("/sign-in", response_class=HTMLResponse, include_in_schema=False)
async def sign_in(request: Request, session: SessionDep) -> Response:
    """Check the email and password; the same answer for an unknown email and a wrong password."""
    form = await checked_form(request)
    email = str(form.get("email") or "").strip()
    password = str(form.get("password") or "")
    next_url = safe_next(str(form.get("next") or ""))
    errors: dict[str, str] = {}
    if not email:
        errors["email"] = "Enter your email address"
    if not password:
        errors["password"] = "Enter your password"
    if errors:
        return _form(request, next_url=next_url, errors=errors, email=email, status=422)
    now = datetime.now(UTC)
    keys = _limit_keys(request, email[:320])
    wait = await _retry_after(session, keys, now)
    if wait is not None:
        # Refused before the password is checked: no guess is tested, and no Argon2 CPU is spent.
        minutes = max(1, round(wait / 60))
        errors = {
            "email": f"Too many failed attempts. Try again in {minutes} minute{'s' if minutes > 1 else ''}"
        }
        limited = _form(request, next_url=next_url, errors=errors, email=email, status=429)
        limited.headers["Retry-After"] = str(wait)
        return limited
    user = await repository.user_for_sign_in(session, email) if len(email) <= 320 else None
    # Argon2 takes tens of milliseconds of CPU: off the event loop.
    ok = await run_in_threadpool(verify_password, password, user.password_hash if user else None)
    if user is None or not ok:
        for key, _ in keys:
            await repository.add_sign_in_failure(session, key, at=now, forget_before=now - FAILURE_WINDOW)
        errors = {"email": WRONG_CREDENTIALS}
        return _form(request, next_url=next_url, errors=errors, email=email, status=401)
    await repository.clear_sign_in_failures(session, keys[0][0])
    sessions = sessions_of(request)
    response = RedirectResponse(next_url or "/", status_code=303)
    sessions.set_cookie(response, sessions.new(user))
    return response


@router.post("/sign-out", include_in_schema=False)
async def sign_out(request: Request) -> Response:
    """End the session (a new, empty one replaces it) and go back to the sign-in page."""
    browser = current_session(request)
    if browser is not None and browser.user_id:
        await checked_form(request)  # only a signed-in session has something to lose
    sessions = sessions_of(request)
    response = RedirectResponse("/sign-in?signed_out=1", status_code=303)
    sessions.set_cookie(response, sessions.new())
    return response
