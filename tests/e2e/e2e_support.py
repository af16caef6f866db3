"""End-to-end helpers: real processes (Temporal dev server, `referrals worker`, `referrals api`,
`referrals dev`), an aiosmtpd sink that keeps every message, and polling with deadlines.

Every process writes its stdout and stderr to files in the test's temp folder; when a test fails,
the tail of each file is attached to the report.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import os
import signal
import socket
import subprocess
import sysconfig
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = Path(sysconfig.get_path("scripts"))
REFERRALS = str(SCRIPTS / "referrals")
SECRET_KEY = "e2e-secret-key-" + "x" * 40
FORCE = "Northamptonshire Police"
REFERRER_EMAIL = "pc.e2e@police.example"

# Distinctive personal data: none of it may appear in any email.
CHILDREN = [
    {"given_name": "Zebedee", "family_name": "Quixotic", "date_of_birth": "2015-03-01"},
    {"given_name": "Xanthippe", "family_name": "Vorpalsworth", "date_of_birth": "2019-07-14"},
]
SUMMARY = "Photograph posted online of the children beside Blatherwycke Lane; father supplies drugs."
FORBIDDEN_IN_EMAIL = [
    "Zebedee",
    "Quixotic",
    "Xanthippe",
    "Vorpalsworth",
    "Blatherwycke",
    "2015-03-01",
    "01/03/2015",
    "1 March 2015",
    "01 Mar 2015",
    "2019-07-14",
    "14/07/2019",
    "14 July 2019",
    "14 Jul 2019",
]

LOGS_KEY = pytest.StashKey[list[tuple[str, Path]]]()
T = TypeVar("T")


# ---- reports ---------------------------------------------------------------------------------


def attach_log(request: pytest.FixtureRequest, name: str, path: Path) -> None:
    """Show the tail of `path` in the report when the test fails."""
    request.node.stash.setdefault(LOGS_KEY, []).append((name, path))


def tail(path: Path, lines: int = 150) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(cannot read {path}: {exc})"
    kept = text.splitlines()[-lines:]
    return "\n".join(kept) if kept else "(empty)"


# ---- small helpers ---------------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _bindable(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def free_temporal_port() -> int:
    """A free port whose +1000 (the dev server's web UI) is free too."""
    for _ in range(200):
        port = free_port()
        if port + 1000 < 65536 and _bindable(port + 1000):
            return port
    raise RuntimeError("no free port pair for the Temporal dev server")


async def eventually(
    probe: Callable[[], Awaitable[T | None]] | Callable[[], T | None],
    *,
    within: float,
    what: str,
    interval: float = 0.2,
    alive: list[Service] | None = None,
) -> T:
    """Poll `probe` until it returns something truthy; fail after `within` seconds.

    `alive` lists processes that must keep running meanwhile (fail fast when one dies).
    """
    deadline = time.monotonic() + within
    last_error: BaseException | None = None
    while True:
        try:
            result = probe()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return result  # type: ignore[return-value]
        except (httpx.HTTPError, OSError, ValueError, KeyError) as exc:
            last_error = exc
        for service in alive or []:
            service.check_running()
        if time.monotonic() > deadline:
            detail = f" (last error: {type(last_error).__name__}: {last_error})" if last_error else ""
            pytest.fail(f"timed out after {within:.0f}s waiting for {what}{detail}")
        await asyncio.sleep(interval)


async def wait_until(instant: datetime, *, alive: list[Service]) -> None:
    """Let wall-clock time pass up to `instant`, checking that the processes keep running."""
    while (left := (instant - datetime.now(UTC)).total_seconds()) > 0:
        for service in alive:
            service.check_running()
        await asyncio.sleep(min(left, 0.25))


def base_env(**values: str) -> dict[str, str]:
    """The caller's environment without any REFERRALS_ variable, plus `values`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFERRALS_")}
    env.update(values)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_cli(
    args: list[str], env: dict[str, str], cwd: Path, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run a short `referrals` command to completion."""
    return subprocess.run(
        [REFERRALS, *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def create_user(env: dict[str, str], cwd: Path, role: str, email_address: str, *extra: str) -> str:
    """`referrals users create`; the token is the last line of stdout."""
    result = run_cli(
        ["users", "create", "--role", role, "--name", f"E2E {role}", "--email", email_address, *extra],
        env,
        cwd,
    )
    assert result.returncode == 0, f"users create failed: {result.stderr}"
    return result.stdout.strip().splitlines()[-1]


def referral_body(police_reference: str | None = None, risk: str = "green") -> dict[str, Any]:
    """A valid referral with distinctive children's names and dates of birth."""
    return {
        "police_reference": police_reference or f"NP-E2E-{uuid.uuid4().hex[:10]}",
        "force": FORCE,
        "referrer": {
            "name": "PC E. Twoe",
            "email": REFERRER_EMAIL,
            "phone": "01604 000000",
            "collar_number": "4321",
        },
        "risk": risk,
        "concerns": ["domestic_abuse", "drugs", "county_lines"],
        "summary": SUMMARY,
        "children": CHILDREN,
        "consent_to_share": True,
    }


#: The other authority of `short_policy(transfers=True)`.
NEIGHBOUR_FRONT_DOOR = "front-door@neighbour.example"
NEIGHBOUR_MANAGER = "front-door-manager@neighbour.example"


def short_policy(
    due: str = "PT8S",
    reminder: str = "due - PT3S",
    every: str = "PT4S",
    repeat: int = 2,
    *,
    transfers: bool = False,
) -> str:
    """A policy in seconds for every team: a reminder before `due`, an escalation at it, repeated.

    With `transfers`, also one other authority (code NEIGHBOUR) and the same ladder for it.
    """
    teams = {
        "front_door": ("Front door (MASH)", "mash"),
        "early_help": ("Early Help", "earlyhelp"),
        "social_care": ("Children's social care", "socialcare"),
        "other_agency": ("Other agency", "otheragency"),
    }
    parts = [
        "[calendar]",
        'timezone = "Europe/London"',
        'working_hours = "09:00-17:00"',
        'working_days = ["mon", "tue", "wed", "thu", "fri"]',
        'bank_holidays = "england-and-wales"',
        "closures = []",
        "",
    ]
    for team, (name, mailbox) in teams.items():
        parts += [
            f"[teams.{team}]",
            f'name = "{name}"',
            f'email = "{mailbox}@council.example"',
            f'manager_email = "{mailbox}-manager@council.example"',
            "",
            f"[handoffs.{team}]",
            f'due = "{due}"',
            "",
            f"[[handoffs.{team}.steps]]",
            f'at = "{reminder}"',
            'notify = ["team"]',
            "",
            f"[[handoffs.{team}.steps]]",
            'at = "due"',
            'notify = ["team_manager", "referrer"]',
            f'repeat_every = "{every}"',
            f"repeat = {repeat}",
            "",
        ]
    if transfers:
        parts += [
            "[authorities.NEIGHBOUR]",
            'name = "Neighbouring Council"',
            f'front_door = "{NEIGHBOUR_FRONT_DOOR}"',
            f'manager = "{NEIGHBOUR_MANAGER}"',
            "",
            "[handoffs.other_authority]",
            f'due = "{due}"',
            "",
            "[[handoffs.other_authority.steps]]",
            f'at = "{reminder}"',
            'notify = ["team"]',
            "",
            "[[handoffs.other_authority.steps]]",
            'at = "due"',
            'notify = ["team", "team_manager", "referrer"]',
            f'repeat_every = "{every}"',
            f"repeat = {repeat}",
            "",
        ]
    return "\n".join(parts)


# ---- processes -------------------------------------------------------------------------------


class Service:
    """A long-running `referrals ...` process with its output in files."""

    def __init__(
        self,
        request: pytest.FixtureRequest,
        name: str,
        args: list[str],
        *,
        env: dict[str, str],
        cwd: Path,
        logs: Path,
    ) -> None:
        self.name = name
        self.args = args
        self.env = env
        self.cwd = cwd
        self.logs = logs
        self.request = request
        self.process: subprocess.Popen[bytes] | None = None
        self.runs = 0
        self.groups: list[int] = []  # one process group per run
        self.stdout_path = logs / f"{name}.stdout"
        self.stderr_path = logs / f"{name}.stderr"

    def start(self) -> Service:
        """Start (or restart) the process; its output is appended to the same files."""
        assert self.process is None or self.process.poll() is not None, f"{self.name} is running"
        self.runs += 1
        if self.runs == 1:
            attach_log(self.request, f"{self.name} stdout", self.stdout_path)
            attach_log(self.request, f"{self.name} stderr", self.stderr_path)
        with self.stdout_path.open("ab") as out, self.stderr_path.open("ab") as err:
            marker = f"===== {self.name} run {self.runs}: {' '.join(self.args)}\n".encode()
            out.write(marker)
            err.write(marker)
            out.flush()
            err.flush()
            self.process = subprocess.Popen(
                self.args,
                env=self.env,
                cwd=self.cwd,
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                # Its own process group: a stray child can be cleaned up by the group's id.
                start_new_session=True,
            )
        self.groups.append(self.process.pid)
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def check_running(self) -> None:
        """Fail the test at once if the process has exited."""
        if self.process is not None and self.process.poll() is not None:
            pytest.fail(
                f"{self.name} exited with {self.process.returncode}; stderr:\n{tail(self.stderr_path, 40)}"
            )

    def kill9(self) -> None:
        """SIGKILL the process itself (not its group) and reap it."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def signal(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL; then anything left in its process group."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        for group in self.groups:  # children left behind by any run
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGKILL)


def process_gone(pid: int) -> bool:
    """True when `pid` has exited (a zombie nobody has reaped counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] in {"Z", "X"}


# ---- the SMTP sink ---------------------------------------------------------------------------


@dataclass
class Received:
    """One message as the SMTP server received it."""

    raw: bytes
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage = field(repr=False)

    @property
    def subject(self) -> str:
        return str(self.message["Subject"] or "")

    @property
    def message_id(self) -> str:
        return str(self.message["Message-ID"] or "")

    @property
    def reference_header(self) -> str:
        return str(self.message["X-Referral-Reference"] or "")

    @property
    def body(self) -> str:
        part = self.message.get_body(("plain",))
        return str(part.get_content()) if part is not None else ""

    def kind(self) -> str:
        """reminder, escalation or outcome: the word after the reference in the subject."""
        words = self.subject.split()
        return words[1].rstrip(":") if len(words) > 1 else ""


class Mailbox:
    """aiosmtpd handler that keeps every message."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._messages: list[Received] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw = envelope.original_content or envelope.content
        if isinstance(raw, str):
            raw = raw.encode()
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        with self._lock:
            self._messages.append(Received(raw, envelope.mail_from, list(envelope.rcpt_tos), message))
        return "250 Message accepted for delivery"

    def messages(self, reference: str | None = None) -> list[Received]:
        with self._lock:
            found = list(self._messages)
        if reference is not None:
            found = [m for m in found if m.subject.startswith(reference)]
        return found

    def of_kind(self, kind: str, reference: str | None = None) -> list[Received]:
        return [m for m in self.messages(reference) if m.kind() == kind]


@dataclass
class SmtpSink:
    mailbox: Mailbox
    port: int

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"


# ---- the Temporal dev server -----------------------------------------------------------------


@dataclass
class TemporalServer:
    address: str
    log_file: Path


# ---- the production processes against one server ---------------------------------------------


@dataclass
class Stack:
    """`referrals worker` and `referrals api` as separate processes, with users and a mailbox."""

    env: dict[str, str]
    api_url: str
    worker: Service
    api: Service
    tokens: dict[str, str]
    mailbox: Mailbox
    public_url: str

    def client(self, role: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.api_url,
            headers={"Authorization": f"Bearer {self.tokens[role]}"},
            timeout=httpx.Timeout(30.0),
        )

    async def wait_worker_started(self, runs: int = 1) -> None:
        await eventually(
            lambda: self.worker.stderr().count("worker.started") >= runs,
            within=30,
            what="the worker to start",
            alive=[self.worker],
        )


def write_policy(folder: Path, text: str) -> Path:
    path = folder / "policy.toml"
    path.write_text(text)
    return path


def assert_no_personal_data(messages: list[Received]) -> None:
    """No child's name, date of birth or the referral's summary in any raw or decoded message."""
    for message in messages:
        texts = {
            "raw": message.raw.decode("utf-8", errors="replace"),
            "decoded body": message.body,
            "subject": message.subject,
        }
        for where, text in texts.items():
            for needle in FORBIDDEN_IN_EMAIL:
                assert needle.casefold() not in text.casefold(), (
                    f"{needle!r} appears in the {where} of {message.subject!r}"
                )
