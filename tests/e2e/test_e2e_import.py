"""`referrals import FILE.csv` as an operator runs it: the real command against `referrals api` and
`referrals worker` processes on a Temporal dev server (tests/e2e/conftest.py's stack).
"""

from __future__ import annotations

import csv
import os
import pty
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from e2e_support import FORCE, REFERRALS, ROOT, Stack, base_env, free_port, referral_body, run_cli

pytestmark = pytest.mark.slow

COLUMNS = [
    "police_reference",
    "force",
    "referrer.name",
    "referrer.email",
    "referrer.phone",
    "referrer.collar_number",
    "risk",
    "concerns",
    "summary",
    "consent_to_share",
    "children.0.given_name",
    "children.0.family_name",
    "children.0.date_of_birth",
    "children.0.expected_date",
    "children.1.given_name",
    "children.1.family_name",
    "children.1.date_of_birth",
]


def row(police_reference: str | None = None, **changes: str) -> dict[str, str]:
    """A good CSV row (two children), with some cells changed."""
    values = {
        "police_reference": police_reference or f"NP-IMP-{uuid.uuid4().hex[:10]}",
        "force": FORCE,
        "referrer.name": "PC E. Twoe",
        "referrer.email": "pc.e2e@police.example",
        "referrer.phone": "01604 000000",
        "risk": "amber",
        "concerns": "domestic_abuse; drugs",
        "summary": "Father arrested for supply, children present; cash, scales, phones.",
        "consent_to_share": "yes",
        "children.0.given_name": "Zebedee",
        "children.0.family_name": "Quixotic",
        "children.0.date_of_birth": "2015-03-01",
        "children.0.expected_date": "",
        "children.1.given_name": "Xanthippe",
        "children.1.family_name": "Quixotic",
        "children.1.date_of_birth": "2019-07-14",
    }
    values.update(changes)
    return values


def write_csv(path: Path, rows: list[dict[str, str]], columns: list[str] = COLUMNS) -> Path:
    """A CSV file as a spreadsheet saves it ("CSV UTF-8": a byte-order mark, CRLF line ends)."""
    with path.open("w", encoding="utf-8-sig", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def read_report(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as report:
        return list(csv.DictReader(report))


def importing(
    stack: Stack, tmp_path: Path, *args: str, role: str = "police"
) -> subprocess.CompletedProcess[str]:
    """`referrals import ...` with the API address from REFERRALS_PUBLIC_URL and the token from the env."""
    env = {**stack.env, "REFERRALS_API_TOKEN": stack.tokens[role]}
    result = run_cli(["import", *args], env, tmp_path, timeout=180)
    assert "Traceback" not in result.stderr, result.stderr
    return result


async def listed(stack: Stack) -> list[dict[str, Any]]:
    """Every open referral the API lists."""
    async with stack.client("front_door") as http:
        response = await http.get("/api/v1/referrals", params={"limit": 200})
        assert response.status_code == 200, response.text
        items: list[dict[str, Any]] = response.json()["items"]
        return items


async def test_good_duplicate_and_bad_rows(stack: Stack, tmp_path: Path) -> None:
    existing = referral_body()
    async with stack.client("police") as http:
        before = await http.post("/api/v1/referrals", json=existing)
        assert before.status_code in (201, 202), before.text
    first, second, unborn = (
        row(),
        row(),
        row(
            **{
                "children.0.given_name": "",
                "children.0.date_of_birth": "",
                "children.0.expected_date": "2027-02-14",
                "children.1.family_name": "",
                "children.1.given_name": "",
                "children.1.date_of_birth": "",
            }
        ),
    )
    already = row(
        existing["police_reference"],
        summary=existing["summary"],
        risk=existing["risk"],
        concerns=";".join(existing["concerns"]),
        **{
            "referrer.email": existing["referrer"]["email"],
            "referrer.name": existing["referrer"]["name"],
            "referrer.collar_number": existing["referrer"]["collar_number"],
            "children.1.family_name": existing["children"][1]["family_name"],
        },
    )
    rows = [
        first,  # row 2: created
        row(**{"referrer.email": "not-an-email", "children.1.date_of_birth": "2999-01-01"}),  # 3: invalid
        first,  # 4: the same row again: duplicate
        {**second, "consent_to_share": "perhaps"},  # 5: invalid
        second,  # 6: created
        {**second, "summary": "Another account entirely."},  # 7: conflict with row 6
        unborn,  # 8: created
    ]
    source = write_csv(tmp_path / "referrals.csv", rows)
    report = tmp_path / "out" / "report.csv"
    report.parent.mkdir()
    result = importing(stack, tmp_path, str(source), "--report", str(report), "--batch-size", "3")
    assert result.returncode == 1, (result.stdout, result.stderr)
    out = result.stdout.splitlines()
    assert out[0].startswith("row 2: created RT-"), out
    assert out[1].startswith("row 3: invalid: "), out
    assert "referrer.email: " in out[1] and "children.1.date_of_birth: " in out[1], out
    assert "in the future" in out[1], out
    assert out[2] == out[0].replace("row 2: created", "row 4: duplicate"), out
    assert out[3].startswith("row 5: invalid: consent_to_share: "), out
    assert out[4].startswith("row 6: created RT-"), out
    assert out[5].startswith("row 7: conflict: police_reference: ") and "different content" in out[5], out
    assert out[6].startswith("row 8: created RT-"), out
    assert out[7] == f"{source}: 7 rows: 3 created, 1 duplicate, 2 invalid, 1 conflict, 0 unavailable"
    # Not a terminal: one progress line per batch of 3 rows.
    progress = [line for line in result.stderr.splitlines() if line.startswith("import: ")]
    assert [line.split(":")[1].strip() for line in progress] == ["rows 2-4", "rows 5-7", "rows 8-8"], progress
    assert progress[-1].endswith("(7/7 rows)")

    written = read_report(report)
    assert [r["row"] for r in written] == [str(n) for n in range(2, 9)]
    assert [r["status"] for r in written] == [
        "created",
        "invalid",
        "duplicate",
        "invalid",
        "created",
        "conflict",
        "created",
    ]
    assert written[0]["police_reference"] == first["police_reference"]
    assert written[0]["reference"] == out[0].split()[-1] and len(written[0]["id"]) == 32
    assert "referrer.email" in written[1]["errors"] and not written[1]["reference"]
    # What was created is what the API holds, with the file's content.
    async with stack.client("front_door") as http:
        got = await http.get(f"/api/v1/referrals/{written[0]['id']}")
        assert got.status_code == 200, got.text
        assert got.json()["reference"] == written[0]["reference"]
        assert got.json()["details"]["concerns"] == ["domestic_abuse", "drugs"]
        assert [c["given_name"] for c in got.json()["details"]["children"]] == ["Zebedee", "Xanthippe"]
        unborn_read = await http.get(f"/api/v1/referrals/{written[6]['id']}")
        assert unborn_read.json()["details"]["children"][0]["expected_date"] == "2027-02-14"
    assert len(await listed(stack)) == 4  # the existing referral and the three created

    # The good rows again, now with a token file and a row already there: nothing is created twice.
    token_file = tmp_path / "token"
    token_file.write_text(stack.tokens["police"] + "\n")
    again = write_csv(tmp_path / "again.csv", [first, second, unborn, already])
    rerun = run_cli(["import", str(again), "--token-file", str(token_file)], stack.env, tmp_path, timeout=180)
    assert rerun.returncode == 0, (rerun.stdout, rerun.stderr)
    assert [line.split(":")[1].split()[0] for line in rerun.stdout.splitlines()[:4]] == ["duplicate"] * 4
    assert rerun.stdout.splitlines()[-1].endswith(
        "0 created, 4 duplicate, 0 invalid, 0 conflict, 0 unavailable"
    )
    assert len(await listed(stack)) == 4


async def test_the_example_file_imports_cleanly(stack: Stack, tmp_path: Path) -> None:
    result = importing(stack, tmp_path, str(ROOT / "docs" / "example-referrals.csv"), role="front_door")
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert result.stdout.splitlines()[-1].endswith(
        "5 created, 0 duplicate, 0 invalid, 0 conflict, 0 unavailable"
    )
    assert len(await listed(stack)) == 5


BAD_FILES: dict[str, tuple[bytes, str]] = {
    "missing column": (
        b"police_reference,force,referrer.name,referrer.email,risk,concerns,summary,children.0.family_name,"
        b"children.0.date_of_birth\nNP-1,F,N,a@b.example,red,drugs,S,Fam,2015-01-01\n",
        "missing required column 'consent_to_share'",
    ),
    "unknown column": (
        ",".join([*COLUMNS, "referer.email"]).encode() + b"\n" + b"x," * len(COLUMNS) + b"x\n",
        "unknown column 'referer.email'",
    ),
    "not UTF-8": (
        ",".join(COLUMNS).encode() + b"\nNP-1,F,Se\xf1or,x\n",
        "is not UTF-8 text (byte 0xf1",
    ),
    "empty": (b"", "is empty"),
    "bad quoting": (",".join(COLUMNS).encode() + b'\n"NP-1"x,F\n', "line 2: ',' expected after '\"'"),
    "header only": (",".join(COLUMNS).encode() + b"\n\n", "has a header row but no referrals"),
    "ragged row": (
        ",".join(COLUMNS).encode() + b"\n" + ",".join(["x"] * (len(COLUMNS) + 2)).encode() + b"\n",
        "row 2 has 19 cells but the header names 17",
    ),
}


async def test_bad_files_stop_with_one_line_and_send_nothing(stack: Stack, tmp_path: Path) -> None:
    good = write_csv(tmp_path / "good.csv", [row()])
    for name, (content, says) in BAD_FILES.items():
        path = tmp_path / f"{name.replace(' ', '-')}.csv"
        path.write_bytes(content)
        result = importing(stack, tmp_path, str(path), "--report", str(tmp_path / "r.csv"))
        assert result.returncode == 2, (name, result.stdout, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("referrals: ") and says in lines[0], (name, lines)
        assert result.stdout == "", name
    # No token: one line, nothing sent either.
    no_token = run_cli(["import", str(good)], stack.env, tmp_path)
    assert no_token.returncode == 2 and "REFERRALS_API_TOKEN" in no_token.stderr, no_token.stderr
    assert not (tmp_path / "r.csv").exists()
    assert await listed(stack) == []
    # A token the API refuses: the whole run stops with one line; the row is reported not sent.
    bad = run_cli(["import", str(good)], {**stack.env, "REFERRALS_API_TOKEN": "rt_nope"}, tmp_path)
    assert bad.returncode == 2, (bad.stdout, bad.stderr)
    assert bad.stderr.strip().splitlines()[-1].startswith("referrals: the API refused rows 2-2: HTTP 401")
    assert "row 2: not_sent" in bad.stdout
    assert await listed(stack) == []


def test_unreachable_api_is_retried_then_exit_2_with_a_bar_on_a_terminal(tmp_path: Path) -> None:
    source = write_csv(tmp_path / "referrals.csv", [row(), row()])
    env = base_env(
        REFERRALS_DATA_DIR=str(tmp_path / "data"),
        REFERRALS_API_TOKEN="rt_anything",
        REFERRALS_PUBLIC_URL="http://127.0.0.1:9",
    )
    primary, secondary = pty.openpty()
    try:
        process = subprocess.Popen(
            [
                REFERRALS,
                "import",
                str(source),
                "--api",
                f"http://127.0.0.1:{free_port()}/api/v1/",
                "--retries",
                "1",
                "--report",
                str(tmp_path / "report.csv"),
            ],
            env=env,
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=secondary,
        )
        os.close(secondary)
        stdout, _ = process.communicate(timeout=60)
        terminal = b""
        while True:
            try:
                chunk = os.read(primary, 4096)
            except OSError:  # EIO: the process has gone and closed its end
                break
            if not chunk:
                break
            terminal += chunk
    finally:
        os.close(primary)
    assert process.returncode == 2, (stdout, terminal)
    text = terminal.decode()
    assert "\rimport [" + "#" * 30 + "] 2/2 rows" in text, text
    assert "retrying in 1s (1/1)" in text and "\rretry 1 [" in text, text
    lines = stdout.decode().splitlines()
    assert lines[0].startswith("row 2: unavailable: cannot reach the API: ConnectError"), lines
    assert lines[-1].endswith("0 created, 0 duplicate, 0 invalid, 0 conflict, 2 unavailable")
    assert [r["status"] for r in read_report(tmp_path / "report.csv")] == ["unavailable", "unavailable"]
