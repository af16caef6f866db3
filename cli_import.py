"""`referrals import FILE.csv`: referrals from a spreadsheet, sent to POST /api/v1/referrals:batch.

The file is read and checked whole before anything is sent: a missing or unknown column, text
that is not UTF-8 or a file without rows stops the command with one line and exit status 2.
Rows are then sent in batches over HTTP; the API validates each row exactly as POST /referrals
does and answers it on its own. Rows the API could not hand to Temporal ("unavailable") are sent
again with backoff: a row's key (force + police reference) makes a resend land on the referral
the first send created, so a row is never imported twice.

Exit status: 0 when every row was created or was a duplicate, 1 when a row was invalid or a
conflict, 2 when a row is still unavailable after the retries (or the file, the token or the API
address is unusable).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import httpx

from config import Fatal, Settings
from models.referral_csv import COLUMNS_HELP, Row, read_rows

BATCH_PATH = "/api/v1/referrals:batch"
MAX_BATCH = 500  # the API's cap (web/batch.py)
TOKEN_VARIABLE = "REFERRALS_API_TOKEN"
# ---- results -------------------------------------------------------------------------------

STATUSES = ("created", "duplicate", "invalid", "conflict", "unavailable", "not_sent")


@dataclass
class Outcome:
    """What became of one row."""

    status: str = "not_sent"
    id: str | None = None
    reference: str | None = None
    errors: dict[str, str] = field(default_factory=dict)
    message: str | None = None


def _unavailable(message: str) -> Outcome:
    return Outcome(status="unavailable", message=message)


def _described(row: Row, outcome: Outcome) -> str:
    if outcome.status in {"created", "duplicate"}:
        return f"row {row.number}: {outcome.status} {outcome.reference}"
    if outcome.errors:
        detail = "; ".join(f"{row.column_of(k)}: {v}" for k, v in outcome.errors.items())
    else:
        detail = outcome.message or ""
    return f"row {row.number}: {outcome.status}: {detail}".rstrip(": ")


def exit_status(outcomes: Sequence[Outcome]) -> int:
    """0 all created or duplicate; 1 an invalid or conflicting row; 2 a row still not imported."""
    statuses = {o.status for o in outcomes}
    if statuses - {"created", "duplicate", "invalid", "conflict"}:
        return 2  # unavailable, not sent, or a status this command does not know
    if statuses & {"invalid", "conflict"}:
        return 1
    return 0


def _counts(outcomes: Sequence[Outcome], *, answered_only: bool = False) -> str:
    counts = Counter(o.status for o in outcomes)
    shown = [s for s in STATUSES if s != "not_sent" or (counts[s] and not answered_only)]
    return ", ".join(f"{counts[s]} {s.replace('_', ' ')}" for s in shown)


def _inert(cell: str) -> str:
    """A cell copied from the file that a spreadsheet would run as a formula is quoted."""
    return f"'{cell}" if cell[:1] in {"=", "+", "-", "@", "\t", "\r"} else cell


REPORT_COLUMNS = ["row", "police_reference", "status", "reference", "id", "errors", "message"]


def write_report(out: TextIO, rows: Sequence[Row], outcomes: Sequence[Outcome]) -> None:
    """One line per row: its number, key, status, reference and id, and what was wrong."""
    writer = csv.writer(out)
    writer.writerow(REPORT_COLUMNS)
    for row, outcome in zip(rows, outcomes, strict=True):
        writer.writerow(
            [
                row.number,
                _inert(row.police_reference),
                outcome.status,
                outcome.reference or "",
                outcome.id or "",
                "; ".join(f"{row.column_of(k)}: {v}" for k, v in outcome.errors.items()),
                outcome.message or "",
            ]
        )


# ---- progress ------------------------------------------------------------------------------


class Progress:
    """A bar redrawn with \\r on a terminal; otherwise one line per batch (logs, CI)."""

    WIDTH = 30

    def __init__(self, out: TextIO, total: int) -> None:
        self.out = out
        self.total = total
        self.tty = out.isatty()
        self.drawn = False

    def batch(
        self, done: int, total: int, first: int, last: int, outcomes: Sequence[Outcome], label: str
    ) -> None:
        """A batch of rows `first`..`last` has been answered; `done` of `total` rows in this pass."""
        counts = _counts(outcomes, answered_only=True)
        if self.tty:
            filled = self.WIDTH * done // max(total, 1)
            bar = "#" * filled + "-" * (self.WIDTH - filled)
            self.out.write(f"\r{label} [{bar}] {done}/{total} rows  {counts}\x1b[K")
            self.drawn = True
        else:
            self.out.write(f"{label}: rows {first}-{last}: {counts} ({done}/{total} rows)\n")
        self.out.flush()

    def note(self, text: str) -> None:
        """A line of its own (a retry, a stop)."""
        self.end()
        self.out.write(text + "\n")
        self.out.flush()

    def end(self) -> None:
        """Finish the bar's line."""
        if self.drawn:
            self.out.write("\n")
            self.out.flush()
            self.drawn = False


# ---- sending -------------------------------------------------------------------------------


class Refused(Exception):
    """The API refused a whole batch for a reason a resend cannot fix (token, role, address)."""


def _error_of(response: httpx.Response) -> tuple[str, dict[str, str]]:
    try:
        error = response.json()["error"]
        return str(error["message"]), {str(k): str(v) for k, v in dict(error.get("fields") or {}).items()}
    except (ValueError, KeyError, TypeError):
        return response.reason_phrase or f"HTTP {response.status_code}", {}


_ITEM_FIELD = re.compile(r"referrals\.(\d+)\.(.+)")


class Importer:
    """Sends rows in batches, then resends the unavailable ones with backoff."""

    def __init__(
        self,
        http: httpx.Client,
        *,
        batch_size: int = 100,
        retries: int = 3,
        backoff: float = 1.0,
        progress: Progress,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.http = http
        self.batch_size = batch_size
        self.retries = retries
        self.backoff = backoff
        self.progress = progress
        self.sleep = sleep
        self.retry_after = 0.0

    def run(self, rows: Sequence[Row], outcomes: list[Outcome]) -> None:
        """Fill `outcomes` (one per row); stops early, leaving rows "not_sent", when refused."""
        pending = list(range(len(rows)))
        for attempt in range(self.retries + 1):
            label = "import" if attempt == 0 else f"retry {attempt}"
            self._pass(rows, outcomes, pending, label)
            pending = [i for i in pending if outcomes[i].status == "unavailable"]
            if not pending or attempt == self.retries:
                return
            wait = min(max(self.backoff * 2**attempt, self.retry_after), 60.0)
            self.progress.note(
                f"import: {len(pending)} rows unavailable; "
                f"retrying in {wait:g}s ({attempt + 1}/{self.retries})"
            )
            self.retry_after = 0.0
            self.sleep(wait)

    def _pass(self, rows: Sequence[Row], outcomes: list[Outcome], pending: list[int], label: str) -> None:
        done = 0
        for chunk in _chunks(pending, self.batch_size):
            self._send(rows, outcomes, chunk)
            done += len(chunk)
            self.progress.batch(
                done, len(pending), rows[chunk[0]].number, rows[chunk[-1]].number, outcomes, label
            )
        self.progress.end()

    def _send(self, rows: Sequence[Row], outcomes: list[Outcome], chunk: list[int]) -> None:
        try:
            response = self.http.post(BATCH_PATH, json={"referrals": [rows[i].body for i in chunk]})
        except httpx.TransportError as exc:
            for i in chunk:
                outcomes[i] = _unavailable(f"cannot reach the API: {type(exc).__name__}: {exc}".rstrip(": "))
            return
        if response.status_code == 200:
            self._answered(outcomes, chunk, response)
            return
        message, fields = _error_of(response)
        if response.status_code in {408, 429} or response.status_code >= 500:
            self._hint(response)
            for i in chunk:
                outcomes[i] = _unavailable(f"HTTP {response.status_code}: {message}")
            return
        first, last = rows[chunk[0]].number, rows[chunk[-1]].number
        where = []
        for name, problem in fields.items():
            item = _ITEM_FIELD.fullmatch(name)
            if item and int(item[1]) < len(chunk):
                row = rows[chunk[int(item[1])]]
                where.append(f"row {row.number} {row.column_of(item[2])}: {problem}")
            else:
                where.append(f"{name}: {problem}")
        detail = f" ({'; '.join(where)})" if where else ""
        if response.status_code == 404:
            message = f"{response.request.url} was not found: is --api the referral-tracker address?"
        elif response.status_code == 413:
            message += " (try a smaller --batch-size)"
        raise Refused(f"the API refused rows {first}-{last}: HTTP {response.status_code}: {message}{detail}")

    def _answered(self, outcomes: list[Outcome], chunk: list[int], response: httpx.Response) -> None:
        try:
            results = response.json()["results"]
            answered = {int(r["index"]): r for r in results}
        except (ValueError, KeyError, TypeError):
            for i in chunk:
                outcomes[i] = _unavailable("the API's answer could not be read")
            return
        for position, i in enumerate(chunk):
            result = answered.get(position)
            if result is None:
                outcomes[i] = _unavailable("the API did not answer this row")
                continue
            outcomes[i] = Outcome(
                status=str(result.get("status")),
                id=result.get("id"),
                reference=result.get("reference"),
                errors={str(k): str(v) for k, v in dict(result.get("errors") or {}).items()},
                message=result.get("message"),
            )
        if any(outcomes[i].status == "unavailable" for i in chunk):
            self._hint(response)

    def _hint(self, response: httpx.Response) -> None:
        with contextlib.suppress(ValueError):
            self.retry_after = max(self.retry_after, float(response.headers.get("retry-after", "0")))


def _chunks(items: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# ---- the command ---------------------------------------------------------------------------


def _bounded(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"give {low} to {high}")
        return value

    return parse


def add_import_parser(sub: Any) -> None:
    """The `import` subcommand, on the `referrals` parser's subparsers."""
    parser = sub.add_parser(
        "import",
        help="import referrals from a CSV file through the API's batch endpoint",
        description="Import referrals from a CSV file, in batches, through POST /api/v1/referrals:batch.",
        epilog=COLUMNS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("file", metavar="FILE.csv", type=Path)
    parser.add_argument("--api", metavar="URL", help="the API's address (default: REFERRALS_PUBLIC_URL)")
    parser.add_argument(
        "--token-file",
        metavar="F",
        type=Path,
        help=f"a file holding the API token (default: ${TOKEN_VARIABLE})",
    )
    parser.add_argument(
        "--report", metavar="OUT.csv", type=Path, help="also write each row's result to a CSV"
    )
    parser.add_argument(
        "--batch-size",
        metavar="N",
        type=_bounded(1, MAX_BATCH),
        default=100,
        help="rows per request (default 100)",
    )
    parser.add_argument(
        "--retries",
        type=_bounded(0, 10),
        default=3,
        help="resends of unavailable rows, with backoff (default 3)",
    )


def _token(token_file: Path | None) -> str:
    if token_file is not None:
        try:
            lines = token_file.read_text(encoding="utf-8").split()
        except (OSError, UnicodeDecodeError) as exc:
            raise Fatal(
                f"cannot read the token file {token_file}: {getattr(exc, 'strerror', None) or exc}"
            ) from None
        if not lines:
            raise Fatal(f"the token file {token_file} is empty")
        return lines[0]
    token = os.environ.get(TOKEN_VARIABLE, "").strip()
    if not token:
        raise Fatal(f"give --token-file F or set {TOKEN_VARIABLE} to an API token (police or front_door)")
    return token


def _base_url(url: str) -> str:
    url = url.strip().rstrip("/")
    url = url.removesuffix("/api/v1")
    if not re.match(r"https?://[^/]", url):
        raise Fatal(f"the API address {url!r} must start with http:// or https://")
    return url


def import_command(
    settings: Settings, args: argparse.Namespace, *, stdout: TextIO = sys.stdout, stderr: TextIO = sys.stderr
) -> int:
    """Run `referrals import`; its exit status."""
    rows = read_rows(args.file)
    base = _base_url(args.api or settings.public_url)
    token = _token(args.token_file)
    report: TextIO | None = None
    if args.report is not None:
        try:
            # Opened before sending, so a report that cannot be written stops us while nothing is sent.
            report = args.report.open("w", encoding="utf-8", newline="")
        except OSError as exc:
            raise Fatal(
                f"cannot write the report {args.report}: {exc.strerror or type(exc).__name__}"
            ) from None
    outcomes = [Outcome() for _ in rows]
    progress = Progress(stderr, len(rows))
    stopped: str | None = None
    timeout = httpx.Timeout(300.0, connect=10.0)
    headers = {"Authorization": f"Bearer {token}", "User-Agent": "referrals-import"}
    try:
        with httpx.Client(base_url=base, headers=headers, timeout=timeout) as http:
            Importer(http, batch_size=args.batch_size, retries=args.retries, progress=progress).run(
                rows, outcomes
            )
    except Refused as exc:
        stopped = str(exc)
    except KeyboardInterrupt:
        stopped = "interrupted; rows not sent are marked not_sent (a rerun imports each row once)"
    finally:
        progress.end()
        for row, outcome in zip(rows, outcomes, strict=True):
            stdout.write(_described(row, outcome) + "\n")
        stdout.write(f"{args.file}: {len(rows)} rows: {_counts(outcomes)}\n")
        stdout.flush()
        if report is not None:
            with report:
                write_report(report, rows, outcomes)
    if stopped:
        stderr.write(f"referrals: {stopped}\n")
        return 2
    return exit_status(outcomes)
