"""Browser sessions: sign in and out, redirects, CSRF, roles, session expiry and security headers."""

from __future__ import annotations

import re
import time

import httpx
from itsdangerous import URLSafeTimedSerializer

from tests.api.conftest import SECRET
from tests.web.conftest import PASSWORD, Page, Web, csrf_of, sign_in
from web.session import COOKIE, password_version
from web.signin import MAX_FAILURES_PER_ADDRESS, MAX_FAILURES_PER_EMAIL, WRONG_CREDENTIALS


class TestSignIn:
    """Sign-in with email and password; the JSON API keeps bearer tokens only."""

    async def test_anonymous_pages_redirect_to_sign_in_and_back(self, web: Web) -> None:
        async with web.anonymous() as http:
            home = await http.get("/")
            assert home.status_code == 303 and home.headers["location"] == "/sign-in"
            deep = await http.get("/referrals.csv?team=early_help&rag=red")
            assert deep.status_code == 303
            assert deep.headers["location"] == "/sign-in?next=/referrals.csv%3Fteam%3Dearly_help%26rag%3Dred"
            page = await http.get("/referrals/0123456789abcdef0123456789abcdef")
            assert page.headers["location"] == "/sign-in?next=/referrals/0123456789abcdef0123456789abcdef"
            form = await http.get("/sign-in?next=/?team=early_help")
            done = await http.post(
                "/sign-in",
                data={
                    "email": "manager@example.test",
                    "password": PASSWORD,
                    "csrf_token": csrf_of(form.text),
                    "next": "/?team=early_help",
                },
            )
            assert done.status_code == 303 and done.headers["location"] == "/?team=early_help"
            # Signed in, the sign-in page sends you on.
            again = await http.get("/sign-in?next=/referrals.csv")
            assert again.status_code == 303 and again.headers["location"] == "/referrals.csv"

    async def test_only_relative_next_is_followed(self, web: Web) -> None:
        for evil in ("//evil.example/", "https://evil.example/", "/\\evil.example", "javascript:alert(1)"):
            async with web.anonymous() as http:
                form = await http.get("/sign-in", params={"next": evil})
                assert evil not in form.text
                response = await http.post(
                    "/sign-in",
                    data={
                        "email": "manager@example.test",
                        "password": PASSWORD,
                        "csrf_token": csrf_of(form.text),
                        "next": evil,
                    },
                )
                assert response.status_code == 303 and response.headers["location"] == "/", evil

    async def test_sign_in_sets_a_safe_cookie_and_sign_out_ends_it(self, web: Web) -> None:
        async with web.anonymous() as http:
            response = await sign_in(http, "Manager@Example.Test")  # email case does not matter
            cookie = response.headers["set-cookie"]
            assert cookie.startswith(f"{COOKIE}=")
            assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/" in cookie
            assert "Max-Age=28800" in cookie
            assert "Secure" not in cookie  # the test app's public URL is http://
            home = await http.get("/")
            assert home.status_code == 200
            assert Page(home.text).h1 == ["Open referrals"]
            assert "manager user" in home.text and "Sign out" in home.text
            out = await http.post("/sign-out", data={"csrf_token": csrf_of(home.text)})
            assert out.status_code == 303 and out.headers["location"] == "/sign-in?signed_out=1"
            assert "You have signed out" in (await http.get(out.headers["location"])).text
            assert (await http.get("/")).status_code == 303

    async def test_secure_cookie_over_https(self, web: Web) -> None:
        settings = web.api.settings.model_copy(update={"public_url": "https://referrals.example"})
        app = web.api.make_app(settings=settings)
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="https://referrals.example") as http,
        ):
            response = await sign_in(http, "manager@example.test")
            assert "Secure" in response.headers["set-cookie"]
            assert "max-age=31536000" in response.headers["strict-transport-security"]
            assert (await http.get("/")).status_code == 200

    async def test_wrong_password_and_unknown_email_look_the_same(self, web: Web) -> None:
        async with web.anonymous() as http:
            answers = []
            for email, password in [
                ("manager@example.test", "not-the-password"),
                ("nobody@example.test", PASSWORD),
                ("admin@example.test", "x"),
            ]:
                form = await http.get("/sign-in")
                response = await http.post(
                    "/sign-in", data={"email": email, "password": password, "csrf_token": csrf_of(form.text)}
                )
                assert response.status_code == 401
                assert "There is a problem" in response.text and WRONG_CREDENTIALS in response.text
                assert Page(response.text).title.startswith("Error: Sign in")
                answers.append(response.text.replace(email, "EMAIL"))
            # The same page, apart from the email typed back and a fresh nonce.
            same = [re.sub(r'nonce="[^"]+"', "", a) for a in answers]
            assert same[0] == same[1]
            blank = await http.post("/sign-in", data={"csrf_token": csrf_of(answers[0])})
            assert blank.status_code == 422
            assert "Enter your email address" in blank.text and "Enter your password" in blank.text
            assert (await http.get("/")).status_code == 303

    async def test_a_user_without_a_password_cannot_sign_in(self, web: Web) -> None:
        from models import repository
        from models.db import create_engine, session_factory

        engine = create_engine(web.api.settings.resolved_database_url)
        try:
            async with session_factory(engine)() as session, session.begin():
                user = await repository.user_for_sign_in(session, "social_care@example.test")
                assert user is not None
                await repository.set_password(session, user.id, None)
        finally:
            await engine.dispose()
        async with web.anonymous() as http:
            form = await http.get("/sign-in")
            response = await http.post(
                "/sign-in",
                data={
                    "email": "social_care@example.test",
                    "password": PASSWORD,
                    "csrf_token": csrf_of(form.text),
                },
            )
            assert response.status_code == 401 and WRONG_CREDENTIALS in response.text

    async def test_forms_without_the_csrf_token_are_refused(self, web: Web) -> None:
        async with web.anonymous() as http:
            await http.get("/sign-in")
            response = await http.post(
                "/sign-in", data={"email": "manager@example.test", "password": PASSWORD}
            )
            assert response.status_code == 403 and "This form has expired" in response.text
            assert (await http.get("/")).status_code == 303  # not signed in
        async with web.browser("front_door") as http:
            refused = await http.post("/sign-out", data={"csrf_token": "0" * 64})
            assert refused.status_code == 403
            assert (await http.get("/")).status_code == 200  # still signed in
            rid = "0123456789abcdef0123456789abcdef"
            decision = await http.post(f"/referrals/{rid}/decision", data={"outcome": "early_help"})
            assert decision.status_code == 403 and "This form has expired" in decision.text
        # Another browser's token is no good either.
        async with web.browser("manager") as other, web.browser("front_door") as http:
            token = csrf_of((await other.get("/")).text)
            assert (await http.post("/sign-out", data={"csrf_token": token})).status_code == 403

    async def test_sessions_expire_after_eight_hours(self, web: Web) -> None:
        async with web.anonymous() as http:
            await sign_in(http, "manager@example.test")
            assert (await http.get("/")).status_code == 200
            from models import repository
            from models.db import create_engine, session_factory

            engine = create_engine(web.api.settings.resolved_database_url)
            try:
                async with session_factory(engine)() as session:
                    user = await repository.user_for_sign_in(session, "manager@example.test")
                    assert user is not None
            finally:
                await engine.dispose()
            serializer = URLSafeTimedSerializer(SECRET, salt="session")
            old = serializer.dumps(
                {
                    "sid": "s",
                    "uid": user.id,
                    "iat": int(time.time()) - 8 * 3600 - 5,
                    "pv": password_version(user.password_hash),
                }
            )
            async with web.anonymous() as fresh:
                fresh.cookies.set(COOKIE, old)
                assert (await fresh.get("/")).status_code == 303
                current = serializer.dumps(
                    {"sid": "s", "uid": user.id, "iat": int(time.time()), "pv": "another-password"}
                )
                fresh.cookies.set(COOKIE, current)
                assert (await fresh.get("/")).status_code == 303  # the password changed since
                fresh.cookies.set(COOKIE, "forged" + current)
                assert (await fresh.get("/")).status_code == 303

    async def test_roles_without_the_dashboard_get_a_403_page(self, web: Web) -> None:
        for who in ("police", "admin"):
            async with web.browser(who) as http:
                for path in ("/", "/referrals.csv"):
                    response = await http.get(path)
                    assert response.status_code == 403, (who, path)
                    assert "You cannot do this" in response.text
                    assert response.headers["content-type"].startswith("text/html")

    async def test_bearer_tokens_do_not_open_pages_and_cookies_do_not_open_the_api(self, web: Web) -> None:
        async with web.anonymous() as http:
            page = await http.get("/", headers=web.api.auth("manager"))
            assert page.status_code == 303
        async with web.browser("manager") as http:
            api = await http.get("/api/v1/referrals")
            assert api.status_code == 401

    async def test_security_headers(self, web: Web) -> None:
        async with web.browser("manager") as http, web.anonymous() as anonymous:
            pages = [
                await http.get("/"),
                await http.get("/referrals/0123456789abcdef0123456789abcdef"),  # a 404 page
                await anonymous.get("/sign-in"),
            ]
            for response in pages:
                csp = response.headers["content-security-policy"]
                nonce = re.search(r"'nonce-([^']+)'", csp)
                assert nonce, csp
                assert f'<script nonce="{nonce.group(1)}">' in response.text
                assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
                assert "img-src 'self' data:" in csp and "style-src 'self' 'unsafe-inline'" in csp
                assert response.headers["x-content-type-options"] == "nosniff"
                assert response.headers["referrer-policy"] == "same-origin"
                assert response.headers["cache-control"] == "no-store"
                assert response.headers["x-frame-options"] == "DENY"
                assert "strict-transport-security" not in response.headers  # served over http here
                # No other inline script, and nothing from another site.
                assert len(re.findall(r"<script\b", response.text)) == 2
                assert '<script type="module" src="/static/app.js"></script>' in response.text
                assert not re.search(r'(src|href|action)="(https?:)?//', response.text)
            nonces = {r.headers["content-security-policy"] for r in pages}
            assert len(nonces) == len(pages)  # a fresh nonce on every response
            api = await http.get("/healthz")
            assert api.headers["x-content-type-options"] == "nosniff"
        # Answers of the JSON API hold personal data too: never cached.
        listed = await web.api.get("/api/v1/referrals", "manager")
        assert listed.status_code == 200 and listed.headers["cache-control"] == "no-store"
        assert listed.headers["x-frame-options"] == "DENY"

    async def test_browsers_get_pages_where_scripts_get_json(self, web: Web) -> None:
        async with web.anonymous() as http:
            page = await http.get("/nope", headers={"Accept": "text/html,application/xhtml+xml"})
            assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")
            assert Page(page.text).h1 == ["Page not found"]
            wrong = await http.put("/sign-in", headers={"Accept": "text/html"})
            assert wrong.status_code == 405 and "allow" in wrong.headers
            script = await http.get("/nope")
            assert script.status_code == 404 and script.json()["error"]["code"] == "not_found"
            api = await http.get("/api/v1/nope", headers={"Accept": "text/html"})
            assert api.json()["error"]["code"] == "not_found"

    async def test_static_files(self, web: Web) -> None:
        async with web.anonymous() as http:
            for path, kind in [
                ("/static/govuk/govuk-frontend.min.css", "text/css"),
                ("/static/govuk/govuk-frontend.min.js", "javascript"),
                ("/static/app.css", "text/css"),
                ("/static/app.js", "javascript"),
                ("/static/govuk/assets/images/favicon.svg", "image/svg+xml"),
            ]:
                response = await http.get(path)
                assert response.status_code == 200, path
                assert kind in response.headers["content-type"], path
                assert response.headers["x-content-type-options"] == "nosniff"
            assert (await http.get("/static/nope.css")).status_code == 404


class TestSignInLimits:
    """Failed sign-ins are limited per email and per client address, across API processes (SQL)."""

    async def _attempt(self, http: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
        form = await http.get("/sign-in")
        return await http.post(
            "/sign-in", data={"email": email, "password": password, "csrf_token": csrf_of(form.text)}
        )

    async def _age_failures(self, web: Web, minutes: int) -> None:
        from datetime import timedelta

        from sqlalchemy import select

        from models.db import create_engine, session_factory
        from models.tables import SignInFailure

        engine = create_engine(web.api.settings.resolved_database_url)
        try:
            async with session_factory(engine)() as session, session.begin():
                for failure in await session.scalars(select(SignInFailure)):
                    failure.at -= timedelta(minutes=minutes)
        finally:
            await engine.dispose()

    async def test_five_failures_lock_the_email_for_fifteen_minutes(self, web: Web) -> None:
        async with web.anonymous() as http:
            for _ in range(MAX_FAILURES_PER_EMAIL):
                assert (await self._attempt(http, "front_door@example.test", "wrong")).status_code == 401
            locked = await self._attempt(http, "FRONT_DOOR@example.test ", PASSWORD)  # even the right one
            assert locked.status_code == 429
            assert 60 <= int(locked.headers["retry-after"]) <= 15 * 60 + 1
            assert "Too many failed attempts" in locked.text and "15 minutes" in locked.text
            # Someone else signs in as usual.
            assert (await self._attempt(http, "manager@example.test", PASSWORD)).status_code == 303
        await self._age_failures(web, 16)
        async with web.anonymous() as http:
            assert (await self._attempt(http, "front_door@example.test", PASSWORD)).status_code == 303

    async def test_a_successful_sign_in_resets_the_count(self, web: Web) -> None:
        async with web.anonymous() as http:
            for _ in range(MAX_FAILURES_PER_EMAIL - 1):
                assert (await self._attempt(http, "early_help@example.test", "wrong")).status_code == 401
            assert (await self._attempt(http, "early_help@example.test", PASSWORD)).status_code == 303
        async with web.anonymous() as http:
            for _ in range(MAX_FAILURES_PER_EMAIL - 1):
                assert (await self._attempt(http, "early_help@example.test", "wrong")).status_code == 401
            assert (await self._attempt(http, "early_help@example.test", PASSWORD)).status_code == 303

    async def test_many_emails_from_one_address_are_limited_and_nothing_personal_is_stored(
        self, web: Web
    ) -> None:
        from sqlalchemy import select

        from models.db import create_engine
        from models.tables import SignInFailure

        await self._age_failures(web, 16)  # the other tests' failures no longer count
        async with web.anonymous() as http:
            for n in range(MAX_FAILURES_PER_ADDRESS):
                response = await self._attempt(http, f"guess-{n}@example.test", "wrong")
                assert response.status_code == 401, n
            limited = await self._attempt(http, "social_care@example.test", PASSWORD)
            assert limited.status_code == 429
        engine = create_engine(web.api.settings.resolved_database_url)
        try:
            async with engine.connect() as conn:
                keys = list(await conn.scalars(select(SignInFailure.email_key)))
        finally:
            await engine.dispose()
        assert keys and all(re.fullmatch(r"[0-9a-f]{64}", k) for k in keys)
        await self._age_failures(web, 16)
