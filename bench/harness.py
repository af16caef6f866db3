"""Process management for the Temporal benchmarks: dev server, `referrals worker`/`api`, SMTP sink.

Everything runs as real processes on this machine, as in production: one `temporal server
start-dev` (devserver.DevServer, WAL + synchronous=FULL, the embedded default), a fresh read
model (a new PostgreSQL database dropped at the end, or an SQLite file), `referrals worker` and
`referrals api` subprocesses, an aiosmtpd sink in this process, and the raw-Temporal baseline
worker (`python -m bench.raw`) on another task queue of the same server.

Copied and trimmed from tests/e2e/e2e_support.py so that benchmarks do not import tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import email.parser
import email.policy
import json
import os
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psycopg
from aiosmtpd.controller import Controller

from bench.loadgen import LeanClient
from devserver import DevServer

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = Path(sysconfig.get_path("scripts"))
REFERRALS = str(SCRIPTS / "referrals")
PY_SPY = SCRIPTS / "py-spy"
SECRET_KEY = "bench-secret-key-" + "x" * 40
FORCE = "Northamptonshire Police"
REFERRER_EMAIL = "pc.bench@police.example"
PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
CLK_TCK = os.sysconf("SC_CLK_TCK")
T = TypeVar("T")


class BenchError(Exception):
    """A benchmark could not run; the message says why."""


# ---- small helpers ---------------------------------------------------------------------------


def run_main(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run, with SIGINT and SIGTERM cancelling the benchmark so that its clean-up runs
    (processes stopped, the database dropped), even when started with SIGINT ignored (`cmd &`)."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: signal.raise_signal(signal.SIGINT))
    try:
        return asyncio.run(main)
    except KeyboardInterrupt:
        raise SystemExit("interrupted; processes stopped and the database dropped") from None


def report(module: str, argv: list[str], main: Coroutine[Any, Any, list[str]]) -> None:
    """Print the command that reproduces the run, each line of its figures, and how long it took."""
    print("command: " + command_line(module, argv), flush=True)
    started = time.monotonic()
    for line in run_main(main):
        print(line, flush=True)
    print(f"{module} took {time.monotonic() - started:.0f} s (shared 2-core machine)", flush=True)


def command_line(module: str, argv: list[str]) -> str:
    """The exact command that reproduces this run."""
    return " ".join([".venv/bin/python -m", module, *(shlex.quote(a) for a in argv)])


def free_port(host: str = "127.0.0.1") -> int:
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
    raise BenchError("no free port pair for the Temporal dev server")


def percentile(samples: list[float], q: float) -> float:
    """The q-th percentile (0-100), nearest-rank on the sorted samples."""
    ordered = sorted(samples)
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def median(samples: list[float]) -> float:
    return statistics.median(samples) if samples else float("nan")


def referral_body(police_reference: str, risk: str = "green") -> dict[str, Any]:
    """A valid referral (made-up data)."""
    return {
        "police_reference": police_reference,
        "force": FORCE,
        "referrer": {
            "name": "PC B. Ench",
            "email": REFERRER_EMAIL,
            "phone": "01604 000000",
            "collar_number": "4321",
        },
        "risk": risk,
        "concerns": ["domestic_abuse", "drugs"],
        "summary": "Benchmark referral: made-up text of a realistic length for a summary field.",
        "children": [{"given_name": "A", "family_name": "Bench", "date_of_birth": "2015-03-01"}],
        "consent_to_share": True,
    }


def base_env(**values: str) -> dict[str, str]:
    """The caller's environment without any REFERRALS_ variable, plus `values`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFERRALS_")}
    # The workflow sandbox re-imports workflows/ for every workflow it rebuilds: without a bytecode
    # cache (a fresh copy of the tree, and PYTHONDONTWRITEBYTECODE set as on this machine) each
    # rebuild compiles the source again, 13% of the worker's time in a burst. An installed
    # package (deploy/Dockerfile: pip compiles on install) has its bytecode.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    # The `referrals` processes run in their own folders: without this, an editable install
    # would import the tree it was installed from rather than the one being measured.
    env["PYTHONPATH"] = str(ROOT)
    if env.get("BENCH_GC_PROBE"):
        # bench/gcprobe/sitecustomize.py: the collector's work in each worker (see there).
        env["PYTHONPATH"] = f"{ROOT / 'bench' / 'gcprobe'}{os.pathsep}{ROOT}"
    env.update(values)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_cli(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 120) -> str:
    """Run a short `referrals` command to completion; its stdout."""
    result = subprocess.run(
        [REFERRALS, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    if result.returncode != 0:
        raise BenchError(f"referrals {' '.join(args[:2])} failed: {result.stderr.strip()[-500:]}")
    return result.stdout


def create_user(env: dict[str, str], cwd: Path, role: str, address: str, *extra: str) -> str:
    """`referrals users create`; the token is the last line of stdout."""
    out = run_cli(
        ["users", "create", "--role", role, "--name", f"Bench {role}", "--email", address, *extra], env, cwd
    )
    return out.strip().splitlines()[-1]


# ---- /proc: memory and CPU -------------------------------------------------------------------


def proc_status_kb(pid: int, key: str) -> int:
    """A field of /proc/<pid>/status in kB (VmRSS, VmHWM), 0 when the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process so far (0 when gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def postgres_pids() -> list[int]:
    """Every PostgreSQL server process on the machine (shared with other users of the cluster)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() in {"postgres", "postmaster"}:
                    pids.append(int(entry.name))
    return pids


class CpuMeter:
    """CPU seconds used by each named group of processes between `start()` and `stop()`."""

    def __init__(self, groups: Callable[[], dict[str, list[int]]]) -> None:
        self.groups = groups
        self.before: dict[str, dict[int, float]] = {}
        self.used: dict[str, float] = {}
        self.wall = 0.0
        self._t0 = 0.0

    def _sample(self) -> dict[str, dict[int, float]]:
        sample = {name: {pid: cpu_seconds(pid) for pid in pids} for name, pids in self.groups().items()}
        sample["bench client"] = {os.getpid(): cpu_seconds(os.getpid())}
        return sample

    def start(self) -> None:
        self.before = self._sample()
        self._t0 = time.monotonic()

    def stop(self) -> None:
        self.wall = time.monotonic() - self._t0
        after = self._sample()
        self.used = {
            name: sum(max(0.0, t - self.before.get(name, {}).get(pid, 0.0)) for pid, t in pids.items())
            for name, pids in after.items()
        }

    def line(self) -> str:
        """CPU per group as seconds and share of the 2 cores over the window."""
        cores = os.cpu_count() or 1
        parts = [
            f"{name} {sec:.1f}s ({100 * sec / (self.wall * cores):.0f}%)"
            for name, sec in sorted(self.used.items(), key=lambda kv: -kv[1])
        ]
        return f"CPU over {self.wall:.1f}s on {cores} cores: " + ", ".join(parts)


# ---- processes -------------------------------------------------------------------------------


def _die_with_parent() -> None:
    # Linux: the process gets SIGTERM when the benchmark dies, even by kill -9.
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Service:
    """A long-running process with its output in files; stopped with SIGTERM then SIGKILL."""

    def __init__(self, name: str, args: list[str], *, env: dict[str, str], cwd: Path, logs: Path) -> None:
        self.name = name
        self.args = args
        self.env = env
        self.cwd = cwd
        self.stdout_path = logs / f"{name}.stdout"
        self.stderr_path = logs / f"{name}.stderr"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Service:
        with self.stdout_path.open("ab") as out, self.stderr_path.open("ab") as err:
            self.process = subprocess.Popen(
                self.args, env=self.env, cwd=self.cwd, stdout=out, stderr=err,
                stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_die_with_parent,
            )  # fmt: skip
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
        if self.process is not None and self.process.poll() is not None:
            tail = "\n".join(self.stderr().splitlines()[-20:])
            raise BenchError(f"{self.name} exited with {self.process.returncode}:\n{tail}")

    def rss_mb(self) -> float:
        return proc_status_kb(self.pid, "VmRSS") / 1024

    def hwm_mb(self) -> float:
        return proc_status_kb(self.pid, "VmHWM") / 1024

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)  # its own session: anything it left


async def eventually(
    probe: Callable[[], Awaitable[Any]] | Callable[[], Any],
    *,
    within: float,
    what: str,
    interval: float = 0.2,
    alive: list[Service] | None = None,
) -> Any:
    """Poll `probe` until it returns something truthy; BenchError after `within` seconds."""
    deadline = time.monotonic() + within
    last: BaseException | None = None
    while True:
        try:
            result = probe()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return result
        except (httpx.HTTPError, OSError, ValueError, KeyError) as exc:
            last = exc
        for service in alive or []:
            service.check_running()
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {within:.0f}s waiting for {what} (last error: {last!r})")
        await asyncio.sleep(interval)


# ---- the SMTP sink ---------------------------------------------------------------------------


@dataclass
class Arrival:
    message_id: str
    subject: str
    at: float  # time.time()


class Mailbox:
    """aiosmtpd handler keeping each message's Message-ID, subject and arrival time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.arrivals: list[Arrival] = []
        self._parser = email.parser.BytesHeaderParser(policy=email.policy.default)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw = envelope.original_content or envelope.content
        if isinstance(raw, str):
            raw = raw.encode()
        headers = self._parser.parsebytes(raw)
        arrival = Arrival(str(headers["Message-ID"] or ""), str(headers["Subject"] or ""), time.time())
        with self._lock:
            self.arrivals.append(arrival)
        return "250 Message accepted for delivery"

    def snapshot(self) -> list[Arrival]:
        with self._lock:
            return list(self.arrivals)

    def count(self, word: str) -> int:
        """Messages whose subject names `word` (escalation, reminder, outcome)."""
        return sum(1 for a in self.snapshot() if word in a.subject.lower())


@contextlib.contextmanager
def smtp_sink() -> Iterator[tuple[Mailbox, str]]:
    """A real SMTP server on a free port in a thread of this process: (mailbox, smtp url)."""
    mailbox = Mailbox()
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port, ready_timeout=10)
    controller.start()
    try:
        yield mailbox, f"smtp://127.0.0.1:{port}"
    finally:
        controller.stop()


# ---- the read model --------------------------------------------------------------------------


@contextlib.contextmanager
def fresh_database(kind: str, folder: Path) -> Iterator[str]:
    """A new, empty read model URL: a PostgreSQL database dropped afterwards, or an SQLite file."""
    if kind == "sqlite":
        yield f"sqlite:///{folder / 'read-model.db'}"
        return
    name = f"rt_bench_{uuid.uuid4().hex[:10]}"
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield url
    except BaseException:
        # A failed benchmark keeps its read model for the post-mortem (the folder says how).
        print(f"bench: kept the read model {url} (drop it with: dropdb -h 127.0.0.1 -U postgres {name})",
              file=sys.stderr, flush=True)  # fmt: skip
        raise
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def sql(url: str, query: str) -> list[tuple[Any, ...]]:
    """Run one read query against the read model (PostgreSQL or SQLite)."""
    if url.startswith("sqlite"):
        import sqlite3

        with contextlib.closing(sqlite3.connect(url.split("///", 1)[1])) as conn:
            return list(conn.execute(query).fetchall())
    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn) as conn:
        return list(conn.execute(query).fetchall())


# ---- the stack -------------------------------------------------------------------------------


@dataclass
class Stack:
    """A dev server, a read model, N workers and M API processes, users, an SMTP sink."""

    folder: Path
    server: DevServer
    database_url: str
    env: dict[str, str]
    workers: list[Service]
    apis: list[Service]
    api_urls: list[str]
    tokens: dict[str, str]
    mailbox: Mailbox
    raw_task_queue: str
    extra: list[Service] = field(default_factory=list)

    @property
    def temporal_pid(self) -> int:
        assert self.server.process is not None
        return self.server.process.pid

    def cpu_groups(self) -> dict[str, list[int]]:
        groups = {
            "temporal server": [self.temporal_pid],
            "worker": [w.pid for w in self.workers],
            "api": [a.pid for a in self.apis],
        }
        raw = [s.pid for s in self.extra if s.process is not None and s.process.poll() is None]
        if raw:
            groups["raw worker"] = raw
        if self.database_url.startswith("postgresql"):
            groups["postgresql (whole cluster)"] = postgres_pids()
        return groups

    def meter(self) -> CpuMeter:
        return CpuMeter(self.cpu_groups)

    def alive(self) -> list[Service]:
        return [*self.workers, *self.apis]

    def client(self, role: str, index: int = 0, **kw: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.api_urls[index % len(self.api_urls)],
            headers={"Authorization": f"Bearer {self.tokens[role]}"},
            timeout=httpx.Timeout(120.0),
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=200),
            **kw,
        )

    def start_raw_worker(self, expect: int = 0, name: str = "raw-worker") -> Service:
        args = [sys.executable, "-m", "bench.raw", "--address", self.server.address,
                "--task-queue", self.raw_task_queue]  # fmt: skip
        if expect:
            args += ["--expect", str(expect)]
        service = Service(name, args, env=base_env(), cwd=ROOT, logs=self.folder).start()
        self.extra.append(service)
        return service

    async def wait_raw_worker(self, service: Service) -> None:
        await eventually(lambda: "raw.worker.started" in service.stdout(), within=60, what="the raw worker",
                         alive=[service])  # fmt: skip

    async def restart_worker(self, index: int = 0) -> Service:
        old = self.workers[index]
        old.stop()
        new = Service(old.name, old.args, env=old.env, cwd=old.cwd, logs=self.folder).start()
        self.workers[index] = new
        await wait_worker_started(new)
        return new


async def wait_worker_started(worker: Service) -> None:
    await eventually(lambda: "worker.started" in worker.stderr(), within=60, what=f"{worker.name} to start",
                     alive=[worker])  # fmt: skip


@contextlib.contextmanager
def kept_on_failure() -> Iterator[Path]:
    """A new folder under the temporary directory, removed afterwards unless the body failed.

    A failed benchmark leaves its services' logs, the dev server's database (restart it with
    `temporal server start-dev --db-filename FOLDER/temporal/...` to read the histories) and
    the SMTP sink's arrivals (mailbox.jsonl) for the post-mortem. BENCH_KEEP=1 keeps it always.
    """
    folder = Path(tempfile.mkdtemp(prefix="rt-bench-"))
    try:
        yield folder
    except BaseException:
        print(f"bench: failed; kept {folder} (logs, dev server database, mailbox.jsonl)",
              file=sys.stderr, flush=True)  # fmt: skip
        raise
    if os.environ.get("BENCH_KEEP"):
        print(f"bench: kept {folder} (BENCH_KEEP)", file=sys.stderr, flush=True)
    else:
        shutil.rmtree(folder, ignore_errors=True)


def save_mailbox(mailbox: Mailbox, path: Path) -> None:
    """Every arrival at the SMTP sink, one JSON object a line."""
    with path.open("w") as out:
        for arrival in mailbox.snapshot():
            out.write(json.dumps(dataclasses.asdict(arrival)) + "\n")


@contextlib.asynccontextmanager
async def stack(
    *,
    workers: int = 1,
    apis: int = 1,
    database: str = "postgresql",
    policy: str | None = None,
    workflow_cache: int | None = None,
) -> AsyncIterator[Stack]:
    """Start everything; stop and remove everything (the database included) afterwards.

    `policy` is a policy file's text (None: the built-in policy, deadlines of working days).
    `workflow_cache` is each worker's REFERRALS_WORKFLOW_CACHE (None: the product's default).
    """
    with kept_on_failure() as folder, smtp_sink() as (mailbox, smtp_url):
        server = DevServer(folder / "temporal", port=free_temporal_port())
        server.start()
        services: list[Service] = []
        try:
            await server.wait_ready()
            with fresh_database(database, folder) as url:
                env = base_env(
                    REFERRALS_DATA_DIR=str(folder / "data"),
                    REFERRALS_DATABASE_URL=url,
                    REFERRALS_TEMPORAL_ADDRESS=server.address,
                    REFERRALS_TASK_QUEUE=f"bench-{uuid.uuid4().hex[:8]}",
                    REFERRALS_SMTP_URL=smtp_url,
                    REFERRALS_SECRET_KEY=SECRET_KEY,
                    REFERRALS_MAIL_FROM="referrals@bench.example",
                    # The reconciler is not what is measured: once a day, out of the way.
                    REFERRALS_RECONCILE_EVERY="86400",
                )
                if workflow_cache is not None:
                    env["REFERRALS_WORKFLOW_CACHE"] = str(workflow_cache)
                if policy is not None:
                    (folder / "policy.toml").write_text(policy)
                    env["REFERRALS_POLICY_FILE"] = str(folder / "policy.toml")
                run_cli(["migrate"], env, folder)
                tokens = {
                    "police": create_user(env, folder, "police", "police@bench.example", "--force", FORCE),
                    "front_door": create_user(
                        env, folder, "front_door", "fd@bench.example", "--team", "front_door"
                    ),
                    "early_help": create_user(
                        env, folder, "early_help", "eh@bench.example", "--team", "early_help"
                    ),
                }
                ports = [free_port() for _ in range(apis)]
                env["REFERRALS_PUBLIC_URL"] = f"http://127.0.0.1:{ports[0]}"

                worker_services = [
                    Service(f"worker{n}", [REFERRALS, "worker"], env=env, cwd=folder, logs=folder).start()
                    for n in range(workers)
                ]
                api_services = [
                    Service(
                        f"api{n}", [REFERRALS, "api", "--port", str(port)], env=env, cwd=folder, logs=folder
                    ).start()
                    for n, port in enumerate(ports)
                ]
                services += worker_services + api_services
                result = Stack(
                    folder=folder, server=server, database_url=url, env=env, workers=worker_services,
                    apis=api_services, api_urls=[f"http://127.0.0.1:{p}" for p in ports], tokens=tokens,
                    mailbox=mailbox, raw_task_queue=f"raw-{uuid.uuid4().hex[:8]}",
                )  # fmt: skip
                for worker in worker_services:
                    await wait_worker_started(worker)
                for index in range(apis):

                    async def ready(i: int = index) -> bool:
                        async with httpx.AsyncClient(base_url=result.api_urls[i], timeout=5) as http:
                            return (await http.get("/readyz")).status_code == 200

                    await eventually(ready, within=60, what="the API to be ready", alive=api_services)
                try:
                    yield result
                except BaseException:
                    save_mailbox(mailbox, folder / "mailbox.jsonl")
                    raise
                finally:
                    # Restarted workers are new Service objects: stop whatever the stack holds now.
                    services = [*services, *result.workers, *result.apis, *result.extra]
                    for service in reversed(services):
                        service.stop()
                    services = []
        finally:
            for service in reversed(services):
                service.stop()
            server.stop()


class Profile:
    """`py-spy record` of one process for a while (raw collapsed stacks); `summary()` after."""

    def __init__(self, service: Service, seconds: float, folder: Path) -> None:
        self.name = service.name
        self.out = folder / f"profile-{service.name}.txt"
        self.process: subprocess.Popen[bytes] | None = None
        if PY_SPY.is_file():
            self.process = subprocess.Popen(
                [str(PY_SPY), "record", "--pid", str(service.pid), "--duration", str(max(1, int(seconds))),
                 "--rate", "50", "--gil", "--nonblocking", "--format", "raw", "-o", str(self.out)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
            )  # fmt: skip

    def summary(self, top: int = 8) -> list[str]:
        """The frames where the process spent its CPU (self time), and the busiest modules."""
        if self.process is None:
            return [f"profile {self.name}: py-spy is not installed (pip install py-spy)"]
        # py-spy's own CPU: the children's usage grows by it when it is reaped (the benchmark's
        # other children, its services, are reaped only when the stack stops).
        reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        own = usage.ru_utime + usage.ru_stime - reaped.ru_utime - reaped.ru_stime
        leaf: dict[str, int] = {}
        area: dict[str, int] = {}
        total = 0
        with contextlib.suppress(OSError):
            for line in self.out.read_text(errors="replace").splitlines():
                stack, _, count_text = line.rpartition(" ")
                if not count_text.isdigit():
                    continue
                count = int(count_text)
                total += count
                frames = stack.split(";")
                leaf[frames[-1]] = leaf.get(frames[-1], 0) + count
                area[_area(frames)] = area.get(_area(frames), 0) + count
        if not total:
            return [f"profile {self.name}: no samples"]
        lines = [
            f"profile {self.name}: {total} samples at 50/s (py-spy --gil: holding the interpreter); "
            f"py-spy's own CPU {own:.1f} s"
        ]
        areas = sorted(area.items(), key=lambda kv: -kv[1])[:7]
        lines.append("  by area: " + ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in areas))
        for frame, count in sorted(leaf.items(), key=lambda kv: -kv[1])[:top]:
            lines.append(f"  {100 * count / total:5.1f}%  {frame[:150]}")
        return lines


#: Where a sample's time goes, by the innermost frame from a recognisable package.
_AREAS = [
    ("temporalio/worker/workflow_sandbox", "temporal workflow sandbox"),
    ("temporalio/bridge", "temporal core bridge (Rust)"),
    ("temporalio/converter", "payload conversion"),
    ("temporalio/contrib/pydantic", "payload conversion"),
    ("/codec.py", "payload encryption"),
    ("cryptography", "payload encryption"),
    ("temporalio", "temporal sdk (python)"),
    ("sqlalchemy", "sqlalchemy"),
    ("psycopg", "database driver"),
    ("sqlite", "database driver"),
    ("aiosmtplib", "smtp"),
    ("pydantic", "pydantic"),
    ("uvicorn", "http server"),
    ("h11", "http server"),
    ("starlette", "fastapi/starlette"),
    ("fastapi", "fastapi/starlette"),
    ("structlog", "logging"),
    ("logging", "logging"),
    ("asyncio", "asyncio event loop"),
]


def _area(frames: list[str]) -> str:
    for frame in reversed(frames):
        for needle, name in _AREAS:
            if needle in frame:
                return name
    return "other"


# ---- load ------------------------------------------------------------------------------------


@dataclass
class LoadResult:
    elapsed: float
    latencies: list[float]
    statuses: dict[int | str, int]

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.elapsed if self.elapsed else 0.0


async def drive(count: int, concurrency: int, call: Callable[[int], Awaitable[int | str]]) -> LoadResult:
    """Run call(0..count-1) with `concurrency` workers in flight; latencies in seconds, statuses."""
    queue = iter(range(count))
    latencies: list[float] = []
    statuses: dict[int | str, int] = {}

    async def loop() -> None:
        for n in queue:
            start = time.perf_counter()
            try:
                status = await call(n)
            except Exception as exc:  # counted, never hidden
                status = type(exc).__name__
            latencies.append(time.perf_counter() - start)
            statuses[status] = statuses.get(status, 0) + 1

    started = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(concurrency)))
    return LoadResult(time.perf_counter() - started, latencies, statuses)


async def submit_referrals(
    st: Stack,
    count: int,
    concurrency: int,
    prefix: str,
    *,
    risk: str = "green",
    respond_async: bool = False,
    loadgen: str = "httpx",
) -> tuple[LoadResult, list[str]]:
    """POST /api/v1/referrals `count` times, spread over the API processes; the ids made.

    `loadgen`: "httpx", or "lean" (`bench.loadgen`, a fraction of httpx's CPU: the load generator
    shares this machine's 2 cores with what it measures).
    """
    ids: list[str] = []
    headers = {"Prefer": "respond-async"} if respond_async else {}
    path = "/api/v1/referrals"
    if loadgen == "lean":
        auth = {"Authorization": f"Bearer {st.tokens['police']}"}
        lean = [LeanClient(url, auth) for url in st.api_urls]

        async def call(n: int) -> int:
            body = referral_body(f"{prefix}-{n:07d}", risk)
            answer = await lean[n % len(lean)].post_json(path, body, headers)
            if answer.status in (200, 201, 202):
                ids.append(answer.json()["id"])
            return answer.status

        try:
            return await drive(count, concurrency, call), ids
        finally:
            for lean_client in lean:
                await lean_client.aclose()
    if loadgen != "httpx":
        raise ValueError(f"loadgen must be 'httpx' or 'lean', not {loadgen!r}")
    clients = [st.client("police", i) for i in range(len(st.api_urls))]

    async def call_httpx(n: int) -> int:
        response = await clients[n % len(clients)].post(
            path, json=referral_body(f"{prefix}-{n:07d}", risk), headers=headers
        )
        if response.status_code in (200, 201, 202):
            ids.append(response.json()["id"])
        return response.status_code

    try:
        result = await drive(count, concurrency, call_httpx)
    finally:
        for client in clients:
            await client.aclose()
    return result, ids


def statuses_text(statuses: dict[int | str, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items(), key=lambda kv: str(kv[0])))


def rss_line(label: str, services: list[Service]) -> str:
    parts = [f"{s.name} RSS {s.rss_mb():.0f} MB (peak {s.hwm_mb():.0f} MB)" for s in services]
    return f"{label}: " + ", ".join(parts)
