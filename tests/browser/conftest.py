"""Browser fixtures: the real worker and API processes, an SMTP sink, and Debian's Chromium.

Playwright drives /usr/bin/chromium (installed by .ci/run); it never downloads a browser.
Screenshots go to tests/artifacts/ (git-ignored) on every run, so a person can look.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from aiosmtpd.controller import Controller
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from tests.e2e.e2e_support import (
    FORCE,
    REFERRALS,
    ROOT,
    SECRET_KEY,
    Mailbox,
    Service,
    base_env,
    eventually,
    free_port,
    free_temporal_port,
    run_cli,
    write_policy,
)

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "tests" / "artifacts"
PASSWORD = "browser-test-password-1"
# The flags the machine's own probe uses: a closed network makes background fetches fail noisily.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# Red referrals are overdue within seconds; everything else is due days away.
# Early Help's reminder (due - 20 s) goes out 2 s after the hand-off opens, with its ack link.
BROWSER_POLICY = (
    (ROOT / "policies" / "demo.toml")
    .read_text()
    .replace('due = "PT60S"', 'due = { red = "PT4S", amber = "P3D", green = "P3D" }', 1)
    .replace('due = "PT60S"', 'due = "PT22S"', 1)
)

USERS = {
    "front_door": ("front-door@browser.example", ["--team", "front_door"]),
    "early_help": ("early-help@browser.example", ["--team", "early_help"]),
    "manager": ("manager@browser.example", []),
    "police": ("police@browser.example", ["--force", FORCE]),
}


@dataclass
class WebStack:
    """The running service, its users (email, API token) and the SMTP mailbox."""

    url: str
    users: dict[str, tuple[str, str]]
    mailbox: Mailbox

    def api(self, role: str) -> httpx.AsyncClient:
        """A JSON API client for one role."""
        return httpx.AsyncClient(
            base_url=self.url,
            headers={"Authorization": f"Bearer {self.users[role][1]}"},
            timeout=httpx.Timeout(30.0),
        )


def _create_user(env: dict[str, str], cwd: Path, role: str, email: str, extra: list[str]) -> str:
    result = subprocess.run(
        [REFERRALS, "users", "create", "--role", role, "--name", f"Browser {role}", "--email", email,
         "--password-stdin", *extra],
        env=env, cwd=cwd, input=PASSWORD + "\n", capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, f"users create failed: {result.stderr}"
    return result.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
async def web_stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[WebStack]:
    """Temporal dev server, SQLite read model, worker and API processes, SMTP sink."""
    from devserver import DevServer

    tmp = tmp_path_factory.mktemp("web")
    server = DevServer(tmp / "temporal", port=free_temporal_port())
    server.start()
    mailbox = Mailbox()
    smtp_port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=smtp_port, ready_timeout=10)
    controller.start()
    services: list[Service] = []
    try:
        await server.wait_ready()
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = base_env(
            REFERRALS_DATA_DIR=str(tmp / "data"),
            REFERRALS_DATABASE_URL=f"sqlite:///{tmp / 'read-model.db'}",
            REFERRALS_TEMPORAL_ADDRESS=server.address,
            REFERRALS_TASK_QUEUE=f"browser-{uuid.uuid4().hex[:12]}",
            REFERRALS_SMTP_URL=f"smtp://127.0.0.1:{smtp_port}",
            REFERRALS_POLICY_FILE=str(write_policy(tmp, BROWSER_POLICY)),
            REFERRALS_SECRET_KEY=SECRET_KEY,
            REFERRALS_PUBLIC_URL=url,
        )
        assert run_cli(["migrate"], env, tmp).returncode == 0
        users = {
            role: (email, _create_user(env, tmp, role, email, extra))
            for role, (email, extra) in USERS.items()
        }
        logs = tmp / "logs"
        logs.mkdir()
        worker = Service(request, "worker", [REFERRALS, "worker"], env=env, cwd=tmp, logs=logs).start()
        api = Service(request, "api", [REFERRALS, "api", "--port", str(port)], env=env, cwd=tmp, logs=logs)
        services += [worker, api.start()]

        async def ready() -> bool:
            async with httpx.AsyncClient(base_url=url, timeout=5) as http:
                return (await http.get("/readyz")).status_code == 200

        await eventually(ready, within=30, what="the API to be ready", alive=services)
        await eventually(
            lambda: "worker.started" in worker.stderr(), within=30, what="the worker", alive=[worker]
        )
        yield WebStack(url, users, mailbox)
    finally:
        for service in reversed(services):
            service.stop()
        controller.stop()
        server.stop()


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    """Headless Debian Chromium."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail("Chromium is not installed at /usr/bin/chromium (.ci/run installs it)")
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        await chromium.close()


@pytest.fixture
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    """A fresh browser profile (no cookies) per test."""
    ctx = await browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-GB")
    yield ctx
    await ctx.close()


@pytest.fixture
async def page(context: BrowserContext) -> Page:
    """A tab in the test's profile."""
    return await context.new_page()


@pytest.fixture(scope="session")
def artifacts() -> Iterator[Path]:
    """Where screenshots are written (git-ignored)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    yield ARTIFACTS


async def sign_in(page: Page, stack: WebStack, role: str) -> None:
    """Sign in through the form, as a person would."""
    await page.goto(f"{stack.url}/sign-in")
    await page.get_by_label("Email address").fill(stack.users[role][0])
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_load_state()
