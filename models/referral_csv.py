"""Referrals from a spreadsheet: a CSV file read and checked whole into referral bodies.

The columns are the referral body's fields, nested ones dotted (`referrer.email`,
`children.0.date_of_birth`). The file's shape (encoding, header, cell counts) is checked here and
refused with one line naming the file; each row's values are the API's to judge, field by field,
exactly as POST /referrals judges them (`referrals import` sends them to the batch route).
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from config import Fatal

MAX_CHILDREN = 20

#: Columns every file must have (names as in the referral body, nested fields dotted).
REQUIRED_COLUMNS = (
    "police_reference",
    "force",
    "referrer.name",
    "referrer.email",
    "risk",
    "concerns",
    "summary",
    "children.0.family_name",
    "consent_to_share",
)
OPTIONAL_COLUMNS = ("referrer.phone", "referrer.collar_number")
CHILD_FIELDS = ("given_name", "family_name", "date_of_birth", "expected_date")
_CHILD_COLUMN = re.compile(r"children\.(\d+)\.(\w+)")
_TRUE = frozenset({"true", "yes", "y", "1"})
_FALSE = frozenset({"false", "no", "n", "0"})

COLUMNS_HELP = f"""\
columns (a header row naming them, in any order; UTF-8; one referral per row):
  required: {", ".join(REQUIRED_COLUMNS[:5])},
            {", ".join(REQUIRED_COLUMNS[5:])},
            and children.0.date_of_birth or children.0.expected_date (unborn child)
  optional: {", ".join(OPTIONAL_COLUMNS)}, children.N.given_name / family_name /
            date_of_birth / expected_date for N = 0 to {MAX_CHILDREN - 1}
  concerns: separated by ";" (e.g. domestic_abuse;drugs); consent_to_share: true/false or yes/no;
  dates: YYYY-MM-DD; risk: red, amber or green. An empty cell is a field not given.

exit status: 0 every row created or duplicate; 1 a row invalid or in conflict;
             2 a row still unavailable after retries, or a bad file, token or address"""


# ---- the file ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One data row: its row number as a spreadsheet shows it (the header is row 1) and its body."""

    number: int
    body: dict[str, Any]
    #: children's index in the body -> their column index in the file (blank children are skipped).
    child_columns: tuple[int, ...] = ()

    @property
    def police_reference(self) -> str:
        value = self.body.get("police_reference", "")
        return value if isinstance(value, str) else ""

    def column_of(self, field_name: str) -> str:
        """The column an API field name came from (children renumbered as in the file)."""
        parts = field_name.split(".")
        if parts[0] == "concerns":
            return "concerns"
        if parts[0] == "children" and len(parts) > 1 and parts[1].isdigit():
            index = int(parts[1])
            if index < len(self.child_columns):
                parts[1] = str(self.child_columns[index])
        return ".".join(parts)


def _known_column(name: str) -> bool:
    if name in REQUIRED_COLUMNS or name in OPTIONAL_COLUMNS:
        return True
    match = _CHILD_COLUMN.fullmatch(name)
    return bool(match and int(match[1]) < MAX_CHILDREN and match[2] in CHILD_FIELDS)


def _check_header(path: Path, header: list[str]) -> list[str]:
    names = [h.strip() for h in header]
    for position, name in enumerate(names, start=1):
        if not name:
            raise Fatal(f"{path}: column {position} of the header row has no name")
        if not _known_column(name):
            raise Fatal(f"{path}: unknown column {name!r} (see `referrals import --help` for the columns)")
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise Fatal(f"{path}: column {name!r} appears twice in the header row")
        seen.add(name)
    missing = [name for name in REQUIRED_COLUMNS if name not in seen]
    if missing:
        raise Fatal(
            f"{path}: missing required column {missing[0]!r} (required: {', '.join(REQUIRED_COLUMNS)})"
        )
    if not seen & {"children.0.date_of_birth", "children.0.expected_date"}:
        raise Fatal(f"{path}: missing column 'children.0.date_of_birth' (or 'children.0.expected_date')")
    return names


def _decode(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise Fatal(f"cannot read {path}: {exc.strerror or type(exc).__name__}") from None
    try:
        text = raw.decode("utf-8-sig")  # a spreadsheet's "CSV UTF-8" starts with a byte-order mark
    except UnicodeDecodeError as exc:
        raise Fatal(
            f"{path} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}): "
            "save it as CSV UTF-8"
        ) from None
    if not text.strip():
        raise Fatal(f"{path} is empty: expected a header row naming the columns, then one row per referral")
    return text


def _value(column: str, cell: str) -> Any:
    if column == "concerns":
        return [c.strip() for c in re.split(r"[;,]", cell) if c.strip()]
    if column == "consent_to_share":
        word = cell.casefold()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    return cell  # anything else is the API's to judge, field by field


def _row(number: int, names: list[str], cells: list[str]) -> Row:
    body: dict[str, Any] = {}
    children: dict[int, dict[str, Any]] = {}
    for name, raw in zip(names, cells, strict=False):
        cell = raw.strip()
        if not cell:
            continue
        child = _CHILD_COLUMN.fullmatch(name)
        if child:
            children.setdefault(int(child[1]), {})[child[2]] = cell
        elif "." in name:
            parent, key = name.split(".", 1)
            body.setdefault(parent, {})[key] = cell
        else:
            body[name] = _value(name, cell)
    columns = tuple(sorted(children))
    if columns:
        body["children"] = [children[i] for i in columns]
    return Row(number, body, columns)


def read_rows(path: Path) -> list[Row]:
    """Every non-blank row of the file as a referral body; Fatal (one line) when the file is unusable."""
    text = _decode(path)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader)
        names = _check_header(path, header)
        rows = []
        for number, cells in enumerate(reader, start=2):
            if not any(c.strip() for c in cells):
                continue  # blank lines and rows of empty cells, as spreadsheets export them
            if len(cells) > len(names) and any(c.strip() for c in cells[len(names) :]):
                raise Fatal(f"{path}: row {number} has {len(cells)} cells but the header names {len(names)}")
            rows.append(_row(number, names, cells))
    except csv.Error as exc:
        raise Fatal(f"{path}: line {reader.line_num}: {exc}") from None
    if not rows:
        raise Fatal(f"{path} has a header row but no referrals")
    return rows
