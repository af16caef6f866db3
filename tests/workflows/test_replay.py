"""Histories recorded from real runs (tests/histories/) replay on the current ReferralWorkflow.

A change to the workflow that running referrals would trip over (a command added, removed or
reordered without `workflow.patched`) fails here. Record new histories with
`.venv/bin/python -m scripts.record_histories`, never by editing the files.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from tests.conftest import ROOT
from workflows.referral import ReferralWorkflow
from workflows.referral_emails import DELIVERY_FALLBACK_PATCH, LOCAL_ACTIVITIES_PATCH

HISTORIES = sorted((ROOT / "tests" / "histories").glob("*.json"))


def load_history(path: Path) -> WorkflowHistory:
    """A recorded history, named after its file."""
    return WorkflowHistory.from_json(f"replay-{path.stem}", path.read_text(encoding="utf-8"))


def replayer() -> Replayer:
    """A replayer of the current workflow code with the converter the tests record with."""
    return Replayer(workflows=[ReferralWorkflow], data_converter=pydantic_data_converter)


def test_the_recorded_scenarios_are_there() -> None:
    names = {p.stem for p in HISTORIES}
    assert {
        "no_further_action",
        "early_help_acknowledged",
        "early_help_declined",
        "escalation_ladder",
        "collapsed_repeats",
        "duplicate_submission",
        "delivery_fallback",
        "transferred",
        "local_escalation_ladder",
        "local_early_help_declined",
    } <= names


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_history_replays_deterministically(path: Path) -> None:
    # raise_on_replay_failure (the default) turns any non-determinism into an exception here.
    result = await replayer().replay_workflow(load_history(path))
    assert result.replay_failure is None


#: Recorded by the workflow as it was before the "delivery-fallback" patch (commit 82f485b).
BEFORE_DELIVERY_FALLBACK = [
    "no_further_action",
    "early_help_acknowledged",
    "early_help_declined",
    "escalation_ladder",
    "collapsed_repeats",
    "duplicate_submission",
]


def patches(path: Path) -> set[str]:
    """The patch ids whose markers a recorded history holds."""
    history = json.loads(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for event in history["events"]:
        marker = event.get("markerRecordedEventAttributes")
        if marker and marker.get("markerName") == "core_patch":
            found.update(json.loads(t)["id"] for t in _payload_texts(marker["details"]))
    return found


async def test_histories_from_before_the_delivery_fallback_replay_on_the_patched_code() -> None:
    for name in BEFORE_DELIVERY_FALLBACK:
        path = ROOT / "tests" / "histories" / f"{name}.json"
        assert patches(path) == set(), f"{name} was recorded before the patch"
        assert (await replayer().replay_workflow(load_history(path))).replay_failure is None
    after = ROOT / "tests" / "histories" / "delivery_fallback.json"
    assert patches(after) == {DELIVERY_FALLBACK_PATCH}
    assert (await replayer().replay_workflow(load_history(after))).replay_failure is None


def scheduled_activities(path: Path) -> list[str]:
    """The activity types a recorded history scheduled through the server, in order."""
    history = json.loads(path.read_text(encoding="utf-8"))
    return [
        event["activityTaskScheduledEventAttributes"]["activityType"]["name"]
        for event in history["events"]
        if "activityTaskScheduledEventAttributes" in event
    ]


LOCAL = {"plan_handoff", "project_referral"}


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_planning_and_projections_are_local_only_after_the_patch(path: Path) -> None:
    scheduled = set(scheduled_activities(path))
    if LOCAL_ACTIVITIES_PATCH in patches(path):
        # Markers, not server activities: one workflow task per step, no projection input kept
        # (each local try succeeded while these were recorded). Outcome emails stay on the server.
        assert scheduled & LOCAL == set()
        assert scheduled == {"send_email"}
    else:
        # Recorded before the patch: replaying them must keep their server-side activities.
        assert scheduled & LOCAL == LOCAL
    assert (await replayer().replay_workflow(load_history(path))).replay_failure is None


def test_the_local_activity_histories_were_recorded_after_the_patch() -> None:
    for name in ("local_escalation_ladder", "local_early_help_declined"):
        assert LOCAL_ACTIVITIES_PATCH in patches(ROOT / "tests" / "histories" / f"{name}.json")
    assert LOCAL_ACTIVITIES_PATCH not in patches(ROOT / "tests" / "histories" / "escalation_ladder.json")


def _payload_texts(node: object) -> list[str]:
    """Every payload's data in a history's JSON, decoded from base64."""
    if isinstance(node, dict):
        if "metadata" in node and isinstance(node.get("data"), str):
            return [base64.b64decode(node["data"]).decode("utf-8", "replace")]
        return [t for v in node.values() for t in _payload_texts(v)]
    if isinstance(node, list):
        return [t for v in node for t in _payload_texts(v)]
    return []


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
def test_histories_hold_only_the_fake_sample_data(path: Path) -> None:
    # Recorded with the plain pydantic converter, so payloads are readable: only the sample
    # referral of tests/conftest.py may appear in them.
    texts = "\n".join(_payload_texts(json.loads(path.read_text(encoding="utf-8"))))
    assert set(re.findall(r'"family_name":"([^"]*)"', texts)) == {"Quixotic"}
    assert set(re.findall(r'"email":"([^"]*)"', texts)) == {"a.example@police.example"}
