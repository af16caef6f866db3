"""Web page tests: the stack of tests/api (dev server, worker, both read models) with browser sessions.

Each test class gets the `api` stack of tests/api/conftest.py; `web` adds sign-in passwords for
its users and hands out cookie-keeping clients, one per person, on the same in-process app.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from typing import Any

import httpx
import pytest_asyncio
from fastapi import FastAPI
from sqlalchemy import insert

from models import identity, repository
from models.db import create_engine, session_factory
from models.tables import Referral
from tests.api.conftest import USERS, Api, api, backend, temporal_env  # noqa: F401 - fixtures
from web.auth import hash_password

PASSWORD = "web-test-password-1"
BASE_URL = "http://test"


async def _set_passwords(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        password_hash = hash_password(PASSWORD)  # one hash for all: Argon2 is slow on purpose
        async with session_factory(engine)() as session, session.begin():
            for name in USERS:
                user = await repository.user_for_sign_in(session, f"{name}@example.test")
                assert user is not None
                assert await repository.set_password(session, user.id, password_hash)
    finally:
        await engine.dispose()


def csrf_of(html: str) -> str:
    """The CSRF token in a page's first form that has one."""
    found = re.search(r'name="csrf_token"\s+value="([^"]+)"', html)
    assert found, "no csrf_token field in the page"
    return found.group(1)


@dataclass
class Web:
    """The app with sign-in passwords for every user of tests/api (USERS)."""

    api: Api
    app: FastAPI
    transport: httpx.ASGITransport

    def anonymous(self) -> httpx.AsyncClient:
        """A client with an empty cookie jar (a new browser)."""
        return httpx.AsyncClient(transport=self.transport, base_url=BASE_URL)

    @asynccontextmanager
    async def browser(self, who: str) -> AsyncIterator[httpx.AsyncClient]:
        """A client signed in through the form as one of USERS."""
        async with self.anonymous() as http:
            await sign_in(http, f"{who}@example.test")
            yield http

    async def insert_referrals(self, rows: list[dict[str, Any]]) -> None:
        """Referral rows straight into the read model (pages read only SQL)."""
        engine = create_engine(self.api.settings.resolved_database_url)
        try:
            async with engine.begin() as conn:
                await conn.execute(insert(Referral), rows)
        finally:
            await engine.dispose()


async def sign_in(http: httpx.AsyncClient, email: str, password: str = PASSWORD) -> httpx.Response:
    """Sign in through the form; the response is the 303 on success."""
    form = await http.get("/sign-in")
    assert form.status_code == 200, form.text
    response = await http.post(
        "/sign-in", data={"email": email, "password": password, "csrf_token": csrf_of(form.text)}
    )
    assert response.status_code == 303, response.text
    return response


@pytest_asyncio.fixture(scope="class")
async def web(api: Api) -> AsyncIterator[Web]:  # noqa: F811 - the imported fixture
    """Passwords for the class's users and an app serving pages."""
    await _set_passwords(api.settings.resolved_database_url)
    app = api.make_app()
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with app.router.lifespan_context(app):
        yield Web(api=api, app=app, transport=transport)


def queue_row(
    n: int,
    *,
    now: datetime,
    team: str = "front_door",
    force: str = "Northamptonshire Police",
    risk: str = "green",
    due_in: timedelta = timedelta(days=2),
    received_ago: timedelta = timedelta(hours=3),
    level: int = 0,
) -> dict[str, Any]:
    """A referral row as the projection writes it, open and awaiting `team`."""
    police_reference = f"WEB-{uuid.uuid4().hex[:10]}-{n}"
    rid = identity.referral_id(force, police_reference)
    status = "awaiting_decision" if team == "front_door" else "awaiting_acknowledgement"
    return {
        "id": rid,
        "reference": identity.reference_for(rid),
        "force": force,
        "police_reference": police_reference,
        "fingerprint": "0" * 64,
        "status": status,
        "risk": risk,
        "awaiting_team": team,
        "due_at": now + due_in,
        "escalation_level": level,
        "received_at": now - received_ago,
        "closed_at": None,
        "outcome": None,
        "record_id": None,
        "version": 1,
        "handoffs": [],
        "submitted_by": {"user_id": "test", "name": "Test", "role": "police"},
        "details": None,
        "updated_at": now,
    }


def closed_row(n: int, *, now: datetime) -> dict[str, Any]:
    """A closed referral row (never on the dashboard)."""
    row = queue_row(n, now=now)
    row.update(status="closed", awaiting_team=None, due_at=None, closed_at=now, outcome="early_help")
    return row


# ---- reading pages ---------------------------------------------------------------------------


VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}


class Page(HTMLParser):
    """The parts of a page the tests read: elements with data- attributes, their text, h1s, title."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.elements: list[dict[str, Any]] = []
        self.h1: list[str] = []
        self.title = ""
        self._open: list[tuple[str, dict[str, Any] | None, list[str]]] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in VOID:
            return
        values = {k: v or "" for k, v in attrs}
        element = None
        if any(k.startswith("data-") for k in values) or tag in {"tr", "td", "th"}:
            element = {"tag": tag, "attrs": values, "text": "", "cells": []}
            self.elements.append(element)
        self._open.append((tag, element, []))

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID or not any(name == tag for name, _, _ in self._open):
            return
        while self._open:
            name, element, parts = self._open.pop()
            text = " ".join(" ".join(parts).split())
            if element is not None:
                element["text"] = text
            if self._open:
                parent = self._open[-1]
                parent[2].append(text)
                if name in {"td", "th"} and parent[1] is not None and parent[0] == "tr":
                    parent[1]["cells"].append(text)
            if name == "h1":
                self.h1.append(text)
            if name == "title" and not self.title:  # the page's, not an SVG's
                self.title = text
            if name == tag:
                break

    def handle_data(self, data: str) -> None:
        if self._open:
            self._open[-1][2].append(data)

    def with_attr(self, name: str, value: str | None = None) -> list[dict[str, Any]]:
        """Elements carrying data attribute `name` (equal to `value` when given)."""
        return [
            e for e in self.elements if name in e["attrs"] and (value is None or e["attrs"][name] == value)
        ]


def now_utc() -> datetime:
    """The current instant."""
    return datetime.now(UTC)
