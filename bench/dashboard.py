"""Benchmark: the dashboard's first page and the JSON list over many referrals, SQLite and PostgreSQL.

    .venv/bin/python -m bench.dashboard [--referrals 100000] [--events-per-referral 10] [--runs 30]
                                        [--backends sqlite,postgresql]

Seeds a fresh read model per backend (by default 100,000 referrals and a million chronology
events), signs a manager in through the real sign-in form, then times requests through the ASGI
app in-process (no network, no Temporal: pages read SQL only). Prints medians and p95 per backend
and request. Targets (issue 3/6): page < 200 ms median, JSON list < 50 ms median.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import psycopg
from sqlalchemy import text

from api import create_app
from bench.seed import seed
from config import Settings
from models import repository
from models.db import create_engine, session_factory
from models.enums import Role
from models.migrate import upgrade
from web.auth import hash_password

PASSWORD = "benchmark-password-1"
SECRET = "bench-secret-" + "x" * 40
ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"


async def _users(url: str) -> str:
    engine = create_engine(url)
    async with session_factory(engine)() as session, session.begin():
        user, token = await repository.create_user(
            session, role=Role.MANAGER, name="Bench Manager", email="manager@bench.example"
        )
        user.password_hash = hash_password(PASSWORD)
    await engine.dispose()
    return token


async def _sign_in(http: httpx.AsyncClient) -> None:
    form = await http.get("/sign-in")
    csrf = re.search(r'name="csrf_token"\s+value="([^"]+)"', form.text)
    data = {"email": "manager@bench.example", "password": PASSWORD}
    if csrf:
        data["csrf_token"] = csrf.group(1)
    response = await http.post("/sign-in", data=data)
    if response.status_code not in (200, 302, 303) or not http.cookies:
        raise SystemExit(f"sign-in failed: {response.status_code}")


async def _time(
    http: httpx.AsyncClient, path: str, runs: int, headers: dict[str, str] | None = None
) -> list[float]:
    await http.get(path, headers=headers)  # warm caches and the connection pool
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        response = await http.get(path, headers=headers)
        samples.append((time.perf_counter() - start) * 1000)
        if response.status_code != 200:
            raise SystemExit(f"GET {path}: {response.status_code} {response.text[:200]}")
    return samples


def _summary(name: str, samples: list[float]) -> str:
    p95 = statistics.quantiles(samples, n=20)[-1]
    return f"  {name:<44} median {statistics.median(samples):7.1f} ms   p95 {p95:7.1f} ms"


async def run_backend(backend: str, count: int, runs: int, events: int) -> list[str]:
    """Seed one backend and time the requests; returns report lines."""
    db_name = None
    folder = tempfile.TemporaryDirectory(prefix="rt-bench-")
    if backend == "sqlite":
        url = f"sqlite:///{Path(folder.name) / 'bench.db'}"
    else:
        db_name = f"rt_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(ADMIN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{db_name}"')
        url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{db_name}"
    try:
        upgrade(url)
        engine = create_engine(url)
        started = time.perf_counter()
        await seed(engine, count, events_per_referral=events)
        seeded = time.perf_counter() - started
        async with engine.connect() as conn:
            one = (await conn.execute(text("SELECT id FROM referral ORDER BY id LIMIT 1"))).scalar_one()
        token = await _users(url)
        settings = Settings(database_url=url, temporal_address="127.0.0.1:1", secret_key=SECRET)
        app = create_app(settings, secret=SECRET, engine=engine)
        lines = [f"{backend}: {count:,} referrals and {count * events:,} events seeded in {seeded:.1f} s"]
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://bench") as http:
                await _sign_in(http)
                lines.append(_summary("dashboard first page  GET /", await _time(http, "/", runs)))
                lines.append(
                    _summary(
                        "dashboard filtered  GET /?team=early_help&overdue=1",
                        await _time(http, "/?team=early_help&overdue=1", runs),
                    )
                )
                bearer = {"Authorization": f"Bearer {token}"}
                lines.append(
                    _summary(
                        "JSON list  GET /api/v1/referrals",
                        await _time(http, "/api/v1/referrals", runs, bearer),
                    )
                )
                lines.append(
                    _summary(
                        "JSON list filtered  ?team=early_help&overdue=true",
                        await _time(http, "/api/v1/referrals?team=early_help&overdue=true", runs, bearer),
                    )
                )
                lines.append(
                    _summary(
                        f"JSON one referral, {events} events  GET .../{{id}}",
                        await _time(http, f"/api/v1/referrals/{one}", runs, bearer),
                    )
                )
        await engine.dispose()
        return lines
    finally:
        folder.cleanup()
        if db_name:
            with psycopg.connect(ADMIN, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')


async def main(argv: list[str]) -> None:
    """Parse arguments, run each backend, print the figures and the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--referrals", type=int, default=100_000)
    parser.add_argument("--events-per-referral", type=int, default=10, help="chronology rows each")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--backends", default="sqlite,postgresql")
    args = parser.parse_args(argv)
    print("command: .venv/bin/python -m bench.dashboard " + " ".join(argv))
    for backend in args.backends.split(","):
        for line in await run_backend(backend.strip(), args.referrals, args.runs, args.events_per_referral):
            print(line, flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
