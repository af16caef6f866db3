"""Sign in and sign out of the web pages (the JSON API keeps bearer tokens)."""

from __future__ import annotations

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
    user = await repository.user_for_sign_in(session, email) if len(email) <= 320 else None
    # Argon2 takes tens of milliseconds of CPU: off the event loop.
    ok = await run_in_threadpool(verify_password, password, user.password_hash if user else None)
    if user is None or not ok:
        errors = {"email": WRONG_CREDENTIALS}
        return _form(request, next_url=next_url, errors=errors, email=email, status=401)
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
