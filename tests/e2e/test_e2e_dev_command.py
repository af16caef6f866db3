"""`referrals dev` as a user runs it: killed with SIGKILL, restarted on the same data folder,
then stopped with Ctrl-C. Referrals, timers and demo users survive; nothing is left running.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2e_support import (
    REFERRALS,
    ROOT,
    Service,
    base_env,
    eventually,
    free_port,
    free_temporal_port,
    process_gone,
    referral_body,
)

pytestmark = pytest.mark.slow

DEMO_POLICY = ROOT / "policies" / "demo.toml"  # due 60 s after a hand-off opens
ROLES = ("police", "front_door", "early_help", "manager")
TOKEN_LINE = re.compile(r"^\s+(police|front_door|early_help|manager)\s+(\S+)\s*$", re.MULTILINE)


def printed_tokens(dev: Service) -> dict[str, str] | None:
    """The demo tokens from the banner, once all four are printed."""
    tokens = dict(TOKEN_LINE.findall(dev.stdout()))
    return tokens if set(tokens) == set(ROLES) else None


def saved_tokens(data_dir: Path) -> dict[str, str]:
    lines = (data_dir / "demo-tokens.txt").read_text().split()
    return dict(line.split("=", 1) for line in lines)


def temporal_pid(data_dir: Path) -> int:
    return int((data_dir / "temporal.pid").read_text().strip())


async def ready(api_url: str) -> bool:
    async with httpx.AsyncClient(base_url=api_url, timeout=5) as http:
        return (await http.get("/readyz")).status_code == 200


async def test_dev_survives_kill_9_and_stops_cleanly_on_ctrl_c(
    tmp_path: Path, services: Callable[..., Service]
) -> None:
    data_dir = tmp_path / "data"
    api_port, temporal_port = free_port(), free_temporal_port()
    api_url = f"http://127.0.0.1:{api_port}"
    # No REFERRALS_SMTP_URL (the built-in outbox) and no REFERRALS_PUBLIC_URL (links point here).
    env = base_env(REFERRALS_DATA_DIR=str(data_dir), REFERRALS_POLICY_FILE=str(DEMO_POLICY))
    command = [REFERRALS, "dev", "--port", str(api_port), "--temporal-port", str(temporal_port)]
    logs = tmp_path / "logs"
    logs.mkdir()
    dev = services("dev", command, env=env, cwd=tmp_path, logs=logs).start()

    tokens = await eventually(lambda: printed_tokens(dev), within=90, what="the demo tokens", alive=[dev])
    assert saved_tokens(data_dir) == tokens
    await eventually(lambda: ready(api_url), within=30, what="the API to be ready", alive=[dev])
    first_server = temporal_pid(data_dir)
    assert not process_gone(first_server)

    async with httpx.AsyncClient(
        base_url=api_url, headers={"Authorization": f"Bearer {tokens['police']}"}, timeout=30
    ) as police:
        submitted = await police.post("/api/v1/referrals", json=referral_body())
    assert submitted.status_code == 201, submitted.text
    rid, reference = submitted.json()["id"], submitted.json()["reference"]

    # Not a graceful stop: no signal handler runs, the Temporal server is left to its fate.
    dev.kill9()
    dev.start()
    await eventually(
        lambda: "demo users exist already" in dev.stdout(),
        within=60,
        what="the second start's banner",
        alive=[dev],
    )
    await eventually(lambda: ready(api_url), within=30, what="the restarted API to be ready", alive=[dev])
    assert "in use" not in dev.stderr()
    await eventually(
        lambda: process_gone(first_server), within=15, what="the first Temporal server to be gone"
    )
    second_server = temporal_pid(data_dir)
    assert second_server != first_server

    # The referral is still there, readable with the tokens kept in the data folder ...
    tokens = saved_tokens(data_dir)
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as http:
        for role in ("police", "manager", "front_door"):
            got = await http.get(
                f"/api/v1/referrals/{rid}", headers={"Authorization": f"Bearer {tokens[role]}"}
            )
            assert got.status_code == 200, got.text
            assert got.json()["reference"] == reference
            assert got.json()["status"] == "awaiting_decision"

        # ... and so is its timer: the front door's deadline escalates into the dev outbox.
        async def escalation() -> dict[str, Any] | None:
            outbox = (await http.get("/dev/outbox")).json()
            found = [m for m in outbox if m["reference"] == reference and m["kind"] == "escalation"]
            return found[0] if found else None

        message = await eventually(escalation, within=100, what="the escalation at /dev/outbox", alive=[dev])
    assert message["subject"].startswith(reference)
    assert sorted(message["to"]) == ["mash-manager@council.example", "pc.e2e@police.example"]
    # With no REFERRALS_PUBLIC_URL, links point at this dev API, not the default port 8000.
    assert f"{api_url}/ack/" in message["body"], message["body"]
    assert f"{api_url}/referrals/{rid}" in message["body"]

    dev.signal(signal.SIGINT)
    assert dev.wait(15) == 0, dev.stderr()
    assert "referrals dev: stopped" in dev.stderr()
    assert process_gone(second_server), "the Temporal dev server outlived `referrals dev`"
    assert process_gone(first_server)
    assert not (data_dir / "temporal.pid").exists()


async def test_dev_stops_a_temporal_server_left_behind_on_its_data_folder(
    tmp_path: Path, services: Callable[..., Service]
) -> None:
    from devserver import DevServer

    data_dir = tmp_path / "data"
    api_port, temporal_port = free_port(), free_temporal_port()
    # A server on the same data folder and port that outlived its `referrals dev` (as where
    # PR_SET_PDEATHSIG does not reach): only its pid file says it is ours.
    leftover = DevServer(data_dir, port=temporal_port)
    leftover.start()
    try:
        await leftover.wait_ready()
        assert leftover.process is not None
        env = base_env(REFERRALS_DATA_DIR=str(data_dir), REFERRALS_POLICY_FILE=str(DEMO_POLICY))
        command = [REFERRALS, "dev", "--port", str(api_port), "--temporal-port", str(temporal_port)]
        logs = tmp_path / "logs"
        logs.mkdir()
        dev = services("dev", command, env=env, cwd=tmp_path, logs=logs).start()
        api_url = f"http://127.0.0.1:{api_port}"
        await eventually(lambda: ready(api_url), within=60, what="the API to be ready", alive=[dev])
        assert leftover.process.poll() is not None, "the leftover server is still running"
        assert temporal_pid(data_dir) != leftover.process.pid
        dev.signal(signal.SIGINT)
        assert dev.wait(15) == 0, dev.stderr()
    finally:
        leftover.stop()
