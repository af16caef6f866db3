"""Bad configuration: a non-zero exit and ONE clear line on stderr, never a traceback."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_support import ROOT, SECRET_KEY, base_env, free_port, free_temporal_port, run_cli

pytestmark = pytest.mark.slow

DEMO_POLICY = ROOT / "policies" / "demo.toml"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A valid production environment; each test spoils one thing."""
    return base_env(
        REFERRALS_DATA_DIR=str(tmp_path / "data"),
        REFERRALS_DATABASE_URL=f"sqlite:///{tmp_path / 'read-model.db'}",
        REFERRALS_TEMPORAL_ADDRESS=f"127.0.0.1:{free_port()}",  # never reached: config fails first
        REFERRALS_SECRET_KEY=SECRET_KEY,
        REFERRALS_POLICY_FILE=str(DEMO_POLICY),
    )


@pytest.fixture
def listening() -> Iterator[socket.socket]:
    """Another program's listening socket on a free port (and its +1000 is free too)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", free_temporal_port()))
        sock.listen()
        yield sock


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    """Non-zero exit, a single line on stderr holding every needle, no traceback."""
    assert result.returncode != 0, f"exit 0; stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{result.stderr}"
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]


def test_worker_refuses_a_smtp_url_that_is_not_smtp(env: dict[str, str], tmp_path: Path) -> None:
    env["REFERRALS_SMTP_URL"] = "http://x"
    assert_one_line_error(run_cli(["worker"], env, tmp_path, timeout=30), "REFERRALS_SMTP_URL")


def test_worker_refuses_a_policy_with_an_unknown_recipient(env: dict[str, str], tmp_path: Path) -> None:
    text = DEMO_POLICY.read_text()
    marker = '[[handoffs.early_help.steps]]\nat = "due"\nnotify = ["team_manager", "referrer"]'
    assert marker in text
    policy = tmp_path / "policy.toml"
    policy.write_text(text.replace(marker, marker.replace('"referrer"', '"the_boss"')))
    line_number = next(
        n for n, line in enumerate(policy.read_text().splitlines(), start=1) if "the_boss" in line
    )
    env["REFERRALS_POLICY_FILE"] = str(policy)
    assert_one_line_error(
        run_cli(["worker"], env, tmp_path, timeout=30),
        str(policy),
        f"line {line_number}",
        "handoffs.early_help.steps[1].notify",
        "the_boss",
    )


def test_worker_refuses_to_start_without_temporal(env: dict[str, str], tmp_path: Path) -> None:
    assert_one_line_error(run_cli(["worker"], env, tmp_path, timeout=60), env["REFERRALS_TEMPORAL_ADDRESS"])


@pytest.mark.parametrize("command", [["worker"], ["api", "--port", "0"]])
def test_an_unreadable_temporal_certificate_is_one_line(
    env: dict[str, str], tmp_path: Path, command: list[str]
) -> None:
    env["REFERRALS_TEMPORAL_TLS_CA_FILE"] = str(tmp_path / "no-such-ca.pem")
    assert_one_line_error(
        run_cli(command, env, tmp_path, timeout=30), "REFERRALS_TEMPORAL_TLS_CA_FILE", "no-such-ca.pem"
    )


def test_dev_refuses_temporal_tls_for_its_own_server(env: dict[str, str], tmp_path: Path) -> None:
    del env["REFERRALS_TEMPORAL_ADDRESS"]
    env["REFERRALS_TEMPORAL_TLS"] = "true"
    command = ["dev", "--port", str(free_port()), "--temporal-port", str(free_temporal_port())]
    assert_one_line_error(run_cli(command, env, tmp_path, timeout=30), "REFERRALS_TEMPORAL_ADDRESS")


def test_api_refuses_a_plain_http_public_url_off_loopback(env: dict[str, str], tmp_path: Path) -> None:
    env["REFERRALS_PUBLIC_URL"] = "http://referrals.council.example"
    assert_one_line_error(
        run_cli(["api", "--port", str(free_port())], env, tmp_path, timeout=30),
        "REFERRALS_PUBLIC_URL",
        "https://",
    )


def test_api_refuses_to_start_without_a_secret_key(env: dict[str, str], tmp_path: Path) -> None:
    del env["REFERRALS_SECRET_KEY"]
    assert_one_line_error(
        run_cli(["api", "--port", str(free_port())], env, tmp_path, timeout=30), "REFERRALS_SECRET_KEY"
    )


def test_dev_refuses_a_temporal_port_in_use(tmp_path: Path, listening: socket.socket) -> None:
    port = listening.getsockname()[1]
    data_dir = tmp_path / "data"
    env = base_env(REFERRALS_DATA_DIR=str(data_dir), REFERRALS_POLICY_FILE=str(DEMO_POLICY))
    result = run_cli(
        ["dev", "--port", str(free_port()), "--temporal-port", str(port)], env, tmp_path, timeout=60
    )
    assert_one_line_error(result, f"port {port}", "--temporal-port")
    assert not (data_dir / "temporal.pid").exists()


def test_dev_refuses_an_api_port_in_use_before_starting_temporal(
    tmp_path: Path, listening: socket.socket
) -> None:
    port = listening.getsockname()[1]
    data_dir = tmp_path / "data"
    env = base_env(REFERRALS_DATA_DIR=str(data_dir), REFERRALS_POLICY_FILE=str(DEMO_POLICY))
    result = run_cli(
        ["dev", "--port", str(port), "--temporal-port", str(free_temporal_port())], env, tmp_path, timeout=60
    )
    assert_one_line_error(result, f"127.0.0.1:{port}", "--port")
    assert not (data_dir / "temporal.db").exists(), "a Temporal server was started for nothing"
