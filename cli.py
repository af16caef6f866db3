"""The `referrals` command: dev, api, worker, migrate, users (accounts, tokens), codec-server, import."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import signal
import socket
import sys
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import structlog

import logs
from cli_import import add_import_parser, import_command
from cli_users import add_users_parser, hashed_password, users_command
from config import ConfigError, Fatal, Settings, load_settings
from models.enums import Role, Team
from models.policy import PolicyError, load_policy

if TYPE_CHECKING:
    pass

log = structlog.get_logger("referrals")
T = TypeVar("T")

DEMO_USERS = [
    (Role.POLICE, "PC A. Example", "police@demo.example", "Northamptonshire Police", None),
    (Role.FRONT_DOOR, "MASH Officer", "front-door@demo.example", None, Team.FRONT_DOOR),
    (Role.EARLY_HELP, "Early Help Worker", "early-help@demo.example", None, Team.EARLY_HELP),
    (Role.MANAGER, "Safeguarding Manager", "manager@demo.example", None, None),
]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="referrals", description="Referral tracking: acknowledged or escalated."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    dev = sub.add_parser("dev", help="Temporal dev server, SQLite, one worker and the API, in the foreground")
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--port", type=int, default=8000)
    dev.add_argument("--temporal-port", type=int, default=7233)
    api = sub.add_parser("api", help="the HTTP API (production)")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8000)
    sub.add_parser("worker", help="the Temporal worker (production)")
    sub.add_parser("migrate", help="upgrade the read model to the newest schema")
    purge = sub.add_parser(
        "purge", help="remove the personal details of referrals closed longer than REFERRALS_RETENTION_DAYS"
    )
    purge.add_argument("--dry-run", action="store_true", help="only count the referrals due; change nothing")
    add_users_parser(sub)
    add_import_parser(sub)
    codec = sub.add_parser(
        "codec-server", help="decode Temporal payloads for the Temporal UI and CLI (operators only)"
    )
    codec.add_argument("--host", default="127.0.0.1")
    codec.add_argument("--port", type=int, default=8081)
    codec.add_argument(
        "--cors-origin",
        dest="cors_origins",
        action="extend",
        nargs="+",
        default=[],
        metavar="ORIGIN",
        help="a Temporal UI origin allowed to call from a browser, e.g. http://localhost:8233 (repeatable)",
    )
    codec.add_argument(
        "--no-auth", action="store_true", help="no bearer token required (only on a loopback address)"
    )
    return parser


#: Commands that may have started Temporal's client runtime (its threads live in Rust).
TEMPORAL_COMMANDS = frozenset({"worker", "api", "dev", "codec-server"})


def _exit_now(code: int) -> None:
    """Exit at once after a fatal error, without interpreter finalization.

    A Temporal client that failed to connect leaves the SDK's runtime threads running; Python
    finalizing under them can abort with "PyGILState_Release: thread state ... must be
    current" and a stack dump after our one-line error. Nothing is left to clean up here.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` to completion on uvloop's event loop, or asyncio's where uvloop is not installed.

    uvloop (libuv) is what uvicorn chooses when it is installed; the API, the worker and `dev` run
    their servers inside this loop, so the choice is made here. It handles socket events in C
    rather than in Python, time the API and the worker otherwise take from the Temporal server on
    shared cores (measured only together with two other changes: BENCHMARKS.md, eighth run).
    """
    try:
        import uvloop
    except ImportError:  # not built for this platform (Windows)
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
        logs.configure(settings.log_level)
        if args.command == "migrate":
            migrate(settings)
        elif args.command == "purge":
            run_loop(purge(settings, dry_run=args.dry_run))
        elif args.command == "import":
            return import_command(settings, args)
        elif args.command == "users":
            run_loop(users_command(settings, args))
        elif args.command == "codec-server":
            run_loop(
                run_codec_server(
                    settings,
                    host=args.host,
                    port=args.port,
                    cors_origins=args.cors_origins,
                    authenticate=not args.no_auth,
                )
            )
        elif args.command == "worker":
            run_loop(run_worker(settings))
        elif args.command == "api":
            run_loop(run_api(settings, args.host, args.port))
        elif args.command == "dev":
            run_loop(run_dev(settings, args.host, args.port, args.temporal_port))
    except (ConfigError, PolicyError, Fatal) as exc:
        print(f"referrals: {exc}", file=sys.stderr)
        if args.command in TEMPORAL_COMMANDS:
            _exit_now(2)
        return 2
    except KeyboardInterrupt:
        return 0
    return 0


def migrate(settings: Settings) -> None:
    """Upgrade the read model."""
    from models.migrate import upgrade

    try:
        upgrade(settings.resolved_database_url)
    except Exception as exc:  # alembic and drivers raise many types; the operator needs one line
        raise Fatal(f"migration failed: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}") from None


async def purge(settings: Settings, *, dry_run: bool) -> None:
    """Purge (or only count) referrals closed longer than the retention period; print how many."""
    from activities.retention import RetentionError, purge_read_model

    try:
        report = await purge_read_model(
            settings.resolved_database_url, retention_days=settings.retention_days, dry_run=dry_run
        )
    except RetentionError as exc:
        raise Fatal(str(exc)) from None
    print(report.line())


async def _connect(settings: Settings, *, secret: str):  # type: ignore[no-untyped-def]
    from worker import connect

    try:
        return await connect(settings, secret=secret)
    except RuntimeError as exc:
        raise Fatal(f"cannot reach Temporal at {settings.resolved_temporal_address}: {exc}") from None


@contextlib.contextmanager
def _stop_on_signals(stop: asyncio.Event) -> Iterator[None]:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        yield
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def run_worker(settings: Settings, *, dev: bool = False, stop: asyncio.Event | None = None) -> None:
    """Run the worker until SIGINT/SIGTERM (or `stop`)."""
    from models.db import create_engine
    from worker import build_worker, ensure_schedules

    policy = load_policy(settings.policy_file)
    secret = settings.require_secret_key(dev=dev)
    client = await _connect(settings, secret=secret)
    try:
        await asyncio.wait_for(ensure_schedules(client, settings), timeout=30)
    except Exception as exc:  # the worker must run even when its Schedules cannot be written
        log.warning("schedules.not_ensured", error=f"{type(exc).__name__}: {exc}"[:300])
    engine = create_engine(settings.resolved_database_url)
    worker = build_worker(client, settings, secret=secret, policy=policy, engine=engine)
    own_stop = stop is None
    stop = stop or asyncio.Event()
    try:
        with _stop_on_signals(stop) if own_stop else contextlib.nullcontext():
            task = asyncio.create_task(worker.run())
            log.info(
                "worker.started", task_queue=settings.task_queue, temporal=settings.resolved_temporal_address
            )
            await asyncio.wait([task, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
            await worker.shutdown()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    finally:
        await engine.dispose()


def check_can_listen(host: str, port: int, *, what: str = "the API") -> None:
    """Refuse early, in one line, an address that is taken or not ours to bind."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    with socket.socket(family) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            sock.bind((host.strip("[]"), port))
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise Fatal(f"{what} cannot listen on {host}:{port}: {reason} (pass another --port)") from None


async def _serve(server: object) -> None:
    # uvicorn calls sys.exit() when it cannot bind; report that as Fatal below instead.
    with contextlib.suppress(SystemExit):
        await server.serve()  # type: ignore[attr-defined]


def _uvicorn_server(app: Any, host: str, port: int):  # type: ignore[no-untyped-def]
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            # The caller owns signals: one Ctrl-C stops the API, the worker and Temporal together.
            yield

    return Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on"))


LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def check_public_url(url: str) -> None:
    """Refuse a plain-http public address off loopback: cookies and links must not travel in clear."""
    parts = urlsplit(url)
    if parts.scheme != "https" and parts.hostname not in LOOPBACK_HOSTS:
        raise Fatal(
            f"REFERRALS_PUBLIC_URL {url} must be https:// off this machine: session cookies are "
            "Secure only over https, and acknowledgement links must not travel in clear"
        )


async def run_api(
    settings: Settings,
    host: str,
    port: int,
    *,
    dev: bool = False,
    stop: asyncio.Event | None = None,
    client: object = None,
) -> None:
    """Serve the API until SIGINT/SIGTERM (or `stop`)."""
    from api import create_app

    check_can_listen(host, port)
    secret = settings.require_secret_key(dev=dev)
    if not dev:
        check_public_url(settings.public_url)
    app = create_app(
        settings,
        secret=secret,
        client=client,  # type: ignore[arg-type]
        outbox_enabled=dev and settings.smtp_url is None,
    )
    await _serve_until_stopped(app, host, port, stop=stop, what="the API")


async def _serve_until_stopped(
    app: Any, host: str, port: int, *, stop: asyncio.Event | None, what: str
) -> None:
    """Serve `app` with uvicorn until SIGINT/SIGTERM (or `stop`)."""
    server = _uvicorn_server(app, host, port)
    own_stop = stop is None
    stop = stop or asyncio.Event()
    with _stop_on_signals(stop) if own_stop else contextlib.nullcontext():
        serving = asyncio.create_task(_serve(server))
        await asyncio.wait([serving, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
        server.should_exit = True
        await serving
        if not server.started and not stop.is_set():
            raise Fatal(f"{what} could not listen on {host}:{port} (in use?)")


def codec_secret(settings: Settings) -> str:
    """The secret the worker derives its payload key from; never a new one (it would decode nothing)."""
    if settings.secret_key:
        return settings.secret_key
    if settings.encryption_key:
        return ""  # explicit keys are used as they are; no key is derived
    if (settings.data_dir / "secret_key").is_file():
        return settings.require_secret_key(dev=True)  # the one `referrals dev` generated
    raise Fatal(
        "set REFERRALS_SECRET_KEY (or REFERRALS_ENCRYPTION_KEY) to the worker's: "
        "the codec server must use the worker's payload key"
    )


async def run_codec_server(
    settings: Settings,
    *,
    host: str,
    port: int,
    cors_origins: list[str],
    authenticate: bool,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve Temporal's remote codec protocol until SIGINT/SIGTERM (or `stop`)."""
    from codec import data_converter
    from codec_server import CodecServerError, create_codec_app, is_loopback

    if not authenticate and not is_loopback(host):
        raise Fatal(
            f"--no-auth is allowed only on a loopback address (127.0.0.1, ::1, localhost), not {host}"
        )
    codec = data_converter(
        encryption_key=settings.encryption_key, secret=codec_secret(settings)
    ).payload_codec
    assert codec is not None  # data_converter always sets the encryption codec
    try:
        app = create_codec_app(
            codec=codec,
            cors_origins=cors_origins,
            database_url=settings.resolved_database_url if authenticate else None,
        )
    except CodecServerError as exc:
        raise Fatal(str(exc)) from None
    check_can_listen(host, port, what="the codec server")
    log.info(
        "codec_server.started",
        address=f"http://{host}:{port}",
        cors_origins=cors_origins,
        authenticate=authenticate,
    )
    await _serve_until_stopped(app, host, port, stop=stop, what="the codec server")


async def seed_demo_users(settings: Settings) -> list[tuple[str, str]] | None:
    """Create the demo users once; tokens and the shared demo password are kept in the data folder."""
    from models import repository
    from models.db import create_engine, session_factory

    password = secrets.token_urlsafe(12)
    password_hash = hashed_password(password)
    engine = create_engine(settings.resolved_database_url)
    created: list[tuple[str, str]] = []
    try:
        async with session_factory(engine)() as session, session.begin():
            if await repository.user_by_email(session, DEMO_USERS[0][2]) is not None:
                return None
            for role, name, email, force, team in DEMO_USERS:
                user, token = await repository.create_user(
                    session, role=role, name=name, email=email, force=force, team=team.value if team else None
                )
                user.password_hash = password_hash
                created.append((role.value, token))
    finally:
        await engine.dispose()
    passwords = settings.data_dir / "demo-passwords.txt"
    passwords.write_text("".join(f"{email}={password}\n" for _, _, email, _, _ in DEMO_USERS))
    passwords.chmod(0o600)
    return created


def dev_public_url(host: str, port: int) -> str:
    """The base of links when `dev` serves on host:port (a wildcard host means this machine)."""
    if host in {"", "0.0.0.0", "::", "[::]"}:
        host = "127.0.0.1"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 literal
    return f"http://{host}:{port}"


async def run_dev(settings: Settings, host: str, port: int, temporal_port: int) -> None:
    """Everything on one machine, in the foreground, until Ctrl-C."""
    from devserver import DevServer, DevServerError

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    load_policy(settings.policy_file)  # refuse a bad policy before starting anything
    check_can_listen(host, port)
    if "public_url" not in settings.model_fields_set:
        # Links in emails point at this API unless the operator says otherwise.
        settings = settings.model_copy(update={"public_url": dev_public_url(host, port)})
    migrate(settings)
    server: DevServer | None = None
    try:
        if settings.temporal_address is None:
            if settings.temporal_tls_enabled:
                raise Fatal(
                    "REFERRALS_TEMPORAL_TLS settings are for a Temporal frontend of your own: set "
                    "REFERRALS_TEMPORAL_ADDRESS too (dev's own server is plain TCP on loopback)"
                )
            server = DevServer(settings.data_dir, port=temporal_port)
            try:
                server.start()
                await server.wait_ready()
            except DevServerError as exc:
                raise Fatal(str(exc)) from None
            settings = settings.model_copy(update={"temporal_address": server.address})
        tokens = await seed_demo_users(settings)
        _print_banner(settings, host, port, tokens)
        stop = asyncio.Event()
        with _stop_on_signals(stop):
            client = await _connect(settings, secret=settings.require_secret_key(dev=True))
            worker = asyncio.create_task(run_worker(settings, dev=True, stop=stop))
            api = asyncio.create_task(run_api(settings, host, port, dev=True, stop=stop, client=client))
            done, _ = await asyncio.wait([worker, api], return_when=asyncio.FIRST_COMPLETED)
            stop.set()
            await asyncio.gather(worker, api, return_exceptions=True)
            for task in done:
                if task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
    finally:
        if server is not None:
            server.stop()
    print("referrals dev: stopped", file=sys.stderr)


def _print_banner(settings: Settings, host: str, port: int, tokens: list[tuple[str, str]] | None) -> None:
    tokens_file = settings.data_dir / "demo-tokens.txt"
    if tokens:
        tokens_file.write_text("".join(f"{role}={token}\n" for role, token in tokens))
        tokens_file.chmod(0o600)
    lines = [
        f"referral-tracker dev: API http://{host}:{port}  Temporal {settings.resolved_temporal_address}",
        f"data folder {Path(settings.data_dir).resolve()}",
        f"outbox http://{host}:{port}/dev/outbox"
        if settings.smtp_url is None
        else f"email via {settings.smtp_url.split('@')[-1]}",
    ]
    if tokens:
        lines.append("demo users (tokens shown once; also saved in demo-tokens.txt in the data folder):")
        lines += [f"  {role:<11} {token}" for role, token in tokens]
        password = (settings.data_dir / "demo-passwords.txt").read_text().splitlines()[0].split("=", 1)[1]
        lines.append(f"sign in at /sign-in as e.g. {DEMO_USERS[3][2]} with password {password}")
    else:
        lines.append(f"demo users exist already: tokens in {tokens_file}, passwords in demo-passwords.txt")
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    sys.exit(main())
