"""Browser sessions: a signed cookie (itsdangerous), CSRF tokens, and the signed-in user of a page.

The cookie holds a random session id, the user id (none before sign-in), when it was issued and a
fingerprint of the password hash, so changing a password ends the sessions made with the old one.
A CSRF token is an HMAC of the session id: a form posted from another site cannot know it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, Request, Response
from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.datastructures import FormData

from models import repository
from models.enums import Role
from models.tables import User
from web.deps import SessionDep
from web.templating import PageError, SignInRequired

COOKIE = "rt_session"
MAX_AGE_SECONDS = 8 * 3600

#: Roles that see the dashboard (police see only their own force's referral pages).
DASHBOARD_ROLES = frozenset(
    {Role.FRONT_DOOR, Role.EARLY_HELP, Role.SOCIAL_CARE, Role.OTHER_AGENCY, Role.MANAGER}
)


@dataclass(frozen=True)
class BrowserSession:
    """What the session cookie says."""

    sid: str
    user_id: str | None
    issued_at: int
    password_version: str | None = None


def password_version(password_hash: str | None) -> str | None:
    """A short fingerprint of a password hash (never the hash itself)."""
    if not password_hash:
        return None
    return hashlib.sha256(password_hash.encode()).hexdigest()[:16]


class Sessions:
    """Signs, reads and sets session cookies, and makes and checks CSRF tokens."""

    def __init__(self, secret: str, *, secure: bool) -> None:
        self._serializer = URLSafeTimedSerializer(secret, salt="session")
        self._csrf_key = hmac.new(secret.encode(), b"referral-tracker csrf", hashlib.sha256).digest()
        self.secure = secure

    def new(self, user: User | None = None) -> BrowserSession:
        """A fresh session (a new id at every sign-in and sign-out, so an old one cannot be fixed)."""
        return BrowserSession(
            sid=secrets.token_urlsafe(24),
            user_id=user.id if user else None,
            issued_at=int(time.time()),
            password_version=password_version(user.password_hash) if user else None,
        )

    def read(self, value: str | None) -> BrowserSession | None:
        """The session in a cookie value, or None when absent, forged or older than 8 hours."""
        if not value:
            return None
        try:
            data = self._serializer.loads(value, max_age=MAX_AGE_SECONDS)
            session = BrowserSession(
                sid=str(data["sid"]),
                user_id=str(data["uid"]) if data.get("uid") else None,
                issued_at=int(data["iat"]),
                password_version=str(data["pv"]) if data.get("pv") else None,
            )
        except (BadSignature, KeyError, TypeError, ValueError):
            return None
        if time.time() - session.issued_at > MAX_AGE_SECONDS:
            return None
        return session

    def set_cookie(self, response: Response, session: BrowserSession) -> None:
        """Put `session` in the response's cookie (HttpOnly, SameSite=Lax, Secure over https)."""
        value = self._serializer.dumps(
            {
                "sid": session.sid,
                "uid": session.user_id,
                "iat": session.issued_at,
                "pv": session.password_version,
            }
        )
        remaining = max(0, MAX_AGE_SECONDS - (int(time.time()) - session.issued_at))
        response.set_cookie(
            COOKIE,
            value,
            max_age=remaining,
            path="/",
            httponly=True,
            samesite="lax",
            secure=self.secure,
        )

    def csrf_token(self, session: BrowserSession) -> str:
        """The CSRF token of a session."""
        return hmac.new(self._csrf_key, session.sid.encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, session: BrowserSession | None, token: object) -> bool:
        """Whether `token` is this session's CSRF token."""
        if session is None or not isinstance(token, str):
            return False
        return hmac.compare_digest(self.csrf_token(session), token)


def sessions_of(request: Request) -> Sessions:
    """The app's Sessions."""
    sessions: Sessions = request.app.state.browser_sessions
    return sessions


def current_session(request: Request) -> BrowserSession | None:
    """The request's valid session, if any."""
    return sessions_of(request).read(request.cookies.get(COOKIE))


def safe_next(value: str | None) -> str | None:
    """`value` when it is a path on this site (never another site, so no open redirect)."""
    if not value or len(value) > 2000 or not value.startswith("/") or value.startswith("//"):
        return None
    if "\\" in value or any(ord(c) < 32 or ord(c) == 127 for c in value):
        return None
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return None
    return value


def _here(request: Request) -> str:
    """Where to come back to after signing in: this page (a POST returns to its page)."""
    path = request.url.path
    if request.method != "GET":
        for suffix in ("/decision", "/acknowledgement", "/decline"):
            if path.endswith(suffix):
                path = path[: -len(suffix)]
        return path
    query = request.url.query
    return f"{path}?{query}" if query else path


async def page_user(request: Request, session: SessionDep) -> User:
    """The signed-in user of a page; otherwise a redirect to the sign-in page and back."""
    sessions = sessions_of(request)
    browser = current_session(request)
    user = None
    if browser is not None and browser.user_id:
        user = await repository.get_user(session, browser.user_id)
    if browser is None or user is None or browser.password_version != password_version(user.password_hash):
        raise SignInRequired(_here(request))
    request.state.user = user
    request.state.browser_session = browser
    request.state.csrf_token = sessions.csrf_token(browser)
    request.state.can_see_dashboard = Role(user.role) in DASHBOARD_ROLES
    return user


PageUser = Annotated[User, Depends(page_user)]


def require_role(user: User, roles: frozenset[Role] | set[Role], what: str) -> None:
    """A 403 page unless the user has one of `roles`."""
    if Role(user.role) not in roles:
        raise PageError(403, "You cannot do this", f"Your role ({user.role.replace('_', ' ')}) {what}.")


async def checked_form(request: Request) -> FormData:
    """The posted form, after checking its CSRF token against the session (a 403 page if wrong)."""
    form = await request.form()
    browser = getattr(request.state, "browser_session", None) or current_session(request)
    if not sessions_of(request).csrf_ok(browser, form.get("csrf_token")):
        raise PageError(
            403,
            "This form has expired",
            "The form was not sent from this service's page, or your session changed. "
            "Go back, reload the page and try again.",
        )
    return form
