"""bench.harness: a benchmark that fails keeps what explains it (its folder, its PostgreSQL read
model, the SMTP sink's arrivals); one that passes leaves nothing behind unless BENCH_KEEP asks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import psycopg
import pytest

from bench import harness


class Boom(Exception):
    pass


def test_a_passing_benchmark_leaves_no_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BENCH_KEEP", raising=False)
    with harness.kept_on_failure() as folder:
        (folder / "worker0.stderr").write_text("log")
    assert not folder.exists()


def test_a_failing_benchmark_keeps_its_folder(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("BENCH_KEEP", raising=False)
    kept: Path | None = None
    with pytest.raises(Boom), harness.kept_on_failure() as folder:
        kept = folder
        (folder / "worker0.stderr").write_text("log")
        raise Boom
    assert kept is not None
    try:
        assert (kept / "worker0.stderr").read_text() == "log"
        assert str(kept) in capsys.readouterr().err
    finally:
        shutil.rmtree(kept)


def test_bench_keep_keeps_a_passing_benchmarks_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENCH_KEEP", "1")
    with harness.kept_on_failure() as folder:
        pass
    try:
        assert folder.is_dir()
    finally:
        shutil.rmtree(folder)


def test_the_mailbox_is_saved_one_arrival_a_line(tmp_path: Path) -> None:
    mailbox = harness.Mailbox()
    mailbox.arrivals += [
        harness.Arrival("<a@x>", "Escalation: RT-1", 1.5),
        harness.Arrival("<b@x>", "Outcome", 2.0),
    ]
    harness.save_mailbox(mailbox, tmp_path / "mailbox.jsonl")
    lines = (tmp_path / "mailbox.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [
        {"message_id": "<a@x>", "subject": "Escalation: RT-1", "at": 1.5},
        {"message_id": "<b@x>", "subject": "Outcome", "at": 2.0},
    ]


def _exists(name: str) -> bool:
    with psycopg.connect(harness.PG_ADMIN) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


def test_the_read_model_is_dropped_after_a_pass_and_kept_after_a_failure(tmp_path: Path) -> None:
    with harness.fresh_database("postgresql", tmp_path) as url:
        passed = url.rsplit("/", 1)[1]
        assert _exists(passed)
    assert not _exists(passed)

    failed = ""
    with pytest.raises(Boom), harness.fresh_database("postgresql", tmp_path) as url:
        failed = url.rsplit("/", 1)[1]
        raise Boom
    try:
        assert _exists(failed)
    finally:
        with psycopg.connect(harness.PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{failed}" WITH (FORCE)')
