"""Fuzzing the policy parser: whatever the text, the answer is a Policy or a one-line PolicyError."""

from __future__ import annotations

import os
import re
import tomllib
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from models.enums import LOCAL_TEAMS, Risk, Team
from models.policy import (
    DAY_NAMES,
    MAX_SECONDS,
    MAX_WORKING_DAYS,
    Duration,
    Offset,
    Policy,
    PolicyError,
    default_policy_text,
    parse_duration,
    parse_offset,
    parse_policy,
)

SOURCE = "fuzz.toml"
DEFAULT_TEXT = default_policy_text()
#: `FUZZ_SCALE=20` multiplies every example count below, for a longer campaign.
SCALE = int(os.environ.get("FUZZ_SCALE", "1"))
FUZZ = settings(max_examples=200 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
#: Whole generated policies cost more per example.
POLICY_FUZZ = settings(FUZZ, max_examples=60 * SCALE)


def outcome(text: str) -> Policy | str:
    """The policy, or the PolicyError's message after checking its form; anything else fails."""
    try:
        return parse_policy(text, SOURCE)
    except PolicyError as exc:
        message = str(exc)
    assert message.startswith(f"{SOURCE}: "), message
    assert len(message.splitlines()) == 1, message
    if "not valid TOML" in message:
        line = re.search(r"\bline (\d+)\b", message)
        assert line, message
        assert 1 <= int(line.group(1)) <= max(1, len(text.splitlines()) + 1), message
    return message


# ---- a small TOML writer (tomllib only reads) -------------------------------------------------


def toml_string(value: str) -> str:
    """A TOML basic string; control characters, quotes and backslashes escaped."""
    out = []
    for char in value:
        if char in '"\\' or ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04X}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else toml_string(key)


def toml_value(value: Any) -> str:
    """An inline TOML value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value) if not isinstance(value, float) or value == value else "nan"
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)  # pragma: no cover


def toml_document(data: dict[str, Any]) -> str:
    """A TOML document with [tables] and [[arrays of tables]], as a council would write one."""
    lines: list[str] = []

    def table(prefix: tuple[str, ...], body: dict[str, Any]) -> None:
        simple = {k: v for k, v in body.items() if not _is_table(v) and not _is_table_array(v)}
        for key, value in simple.items():
            lines.append(f"{toml_key(key)} = {toml_value(value)}")
        for key, value in body.items():
            path = ".".join(toml_key(p) for p in (*prefix, key))
            if _is_table(value):
                lines.append(f"\n[{path}]")
                table((*prefix, key), value)
            elif _is_table_array(value):
                for item in value:
                    lines.append(f"\n[[{path}]]")
                    table((*prefix, key), item)

    table((), data)
    return "\n".join(lines) + "\n"


def _is_table(value: Any) -> bool:
    return isinstance(value, dict) and bool(value)


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


# ---- strategies ---------------------------------------------------------------------------------

toml_scalars = st.one_of(
    st.text(max_size=20),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.booleans(),
    st.dates(),
    st.times(),
    st.datetimes(),
)
toml_values = st.recursive(
    toml_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
toml_documents = st.dictionaries(st.text(max_size=12), toml_values, max_size=5)

emails = st.builds(
    "{}{}@{}".format,
    st.sampled_from(["mash", "dsl", "early.help", "a+b", "x-y"]),
    st.integers(0, 99),
    st.sampled_from(["council.example", "police.example.gov.uk", "example.org"]),
)
UNITS = {"day": 1, "hour": 3600, "minute": 60, "second": 1}


@st.composite
def working_texts(draw: st.DrawFn) -> tuple[str, Duration]:
    """Working time as a council might write it, and the duration it means."""
    unit = draw(st.sampled_from(list(UNITS)))
    if unit == "day":
        amount = Decimal(draw(st.integers(1, MAX_WORKING_DAYS * 4))) / 4
        expected = Duration(working=True, days=float(amount))
    else:
        whole = draw(st.integers(1, MAX_SECONDS // UNITS[unit]))
        amount = Decimal(whole)
        expected = Duration(working=True, seconds=whole * UNITS[unit])
    plural = draw(st.sampled_from(["", "s"]))
    word = draw(st.sampled_from(["working", "Working", "WORKING"]))
    space = draw(st.sampled_from([" ", "  ", "\t"]))
    amount_text = format(amount.normalize(), "f")
    return f"{amount_text}{space}{word} {unit}{plural}", expected


@st.composite
def iso_texts(draw: st.DrawFn) -> tuple[str, Duration]:
    """ISO 8601 elapsed time in days, hours, minutes and seconds, and the duration it means."""
    days, hours, minutes, seconds = (draw(st.integers(0, n)) for n in (3000, 48, 120, 120))
    total = days * 86400 + hours * 3600 + minutes * 60 + seconds
    time_part = "".join(f"{n}{u}" for n, u in ((hours, "H"), (minutes, "M"), (seconds, "S")) if n)
    text = "P" + (f"{days}D" if days else "") + (f"T{time_part}" if time_part else "")
    return ("PT0S" if text == "P" else text), Duration(working=False, seconds=total)


durations_as_text = st.one_of(working_texts(), iso_texts())
nonzero_durations_as_text = durations_as_text.filter(lambda pair: not pair[1].is_zero)
any_durations = st.one_of(
    st.builds(Duration, working=st.booleans(), seconds=st.integers(0, MAX_SECONDS)),
    st.builds(
        Duration,
        working=st.just(True),
        days=st.floats(min_value=0, max_value=MAX_WORKING_DAYS, allow_subnormal=False),
    ),
)


@st.composite
def offsets(draw: st.DrawFn) -> str:
    if draw(st.booleans()):
        return "due"
    sign = draw(st.sampled_from(["+", "-"]))
    return f"due {sign} {draw(durations_as_text)[0]}"


@st.composite
def steps(draw: st.DrawFn) -> dict[str, Any]:
    step: dict[str, Any] = {
        "at": draw(offsets()),
        "notify": draw(st.lists(st.sampled_from(["team", "team_manager", "referrer"]) | emails, min_size=1)),
    }
    if draw(st.booleans()):
        step["repeat"] = draw(st.integers(1, 100))
        step["repeat_every"] = draw(nonzero_durations_as_text)[0]
    return step


@st.composite
def policies(draw: st.DrawFn) -> dict[str, Any]:
    """A valid policy document, with every optional part sometimes present."""
    start = draw(st.integers(0, 23 * 60 - 1))
    end = draw(st.integers(start + 1, 23 * 60 + 59))
    calendar: dict[str, Any] = {
        "timezone": draw(st.sampled_from(["Europe/London", "UTC", "America/New_York", "Asia/Kolkata"])),
        "working_hours": f"{start // 60:02}:{start % 60:02}-{end // 60:02}:{end % 60:02}",
        "working_days": draw(st.lists(st.sampled_from(DAY_NAMES), min_size=1, unique=True)),
        "bank_holidays": draw(st.sampled_from(["england-and-wales", "scotland", "northern-ireland", "none"])),
        "closures": [d.isoformat() for d in draw(st.lists(st.dates(), max_size=3))],
    }
    teams = {}
    for team in LOCAL_TEAMS:  # another authority's addresses are [authorities], not [teams]
        teams[team.value] = {"email": draw(emails), "manager_email": draw(emails)}
        if draw(st.booleans()):
            teams[team.value]["name"] = draw(st.text(max_size=20))
    handoffs = {}
    for team in Team:
        if draw(st.booleans()):
            due: Any = draw(nonzero_durations_as_text)[0]
        else:
            due = {risk.value: draw(nonzero_durations_as_text)[0] for risk in Risk}
        handoffs[team.value] = {"due": due, "steps": draw(st.lists(steps(), min_size=1, max_size=4))}
    document = {"teams": teams, "handoffs": handoffs}
    if draw(st.booleans()):
        document = {"calendar": calendar, **document}
    return document


def policy_shaped(leaves: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """A valid policy with some leaves replaced by anything, so the deeper validators see junk."""

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        document = draw(policies())
        for _ in range(draw(st.integers(1, 4))):
            node: Any = document
            while True:
                if isinstance(node, dict) and node:
                    key = draw(st.sampled_from(sorted(node)))
                elif isinstance(node, list) and node:
                    key = draw(st.integers(0, len(node) - 1))
                else:
                    break
                child = node[key]
                if not isinstance(child, dict | list) or not child or draw(st.integers(0, 3)) == 0:
                    node[key] = draw(leaves)
                    break
                node = child
        return document

    return build()


junk_leaves = st.one_of(
    toml_values,
    st.sampled_from(
        [
            "Europe",
            "Europe/",
            "a" * 300,
            "../../etc/passwd",
            "Europe/Lon\x00don",
            "24:00-25:00",
            "09:00-09:00",
            "due + P1M",
            "1e5 working hours",
            "٣ working hours",
            "P99999999999999D",
            "team\n",
            "",
            [],
            {},
        ]
    ),
)


def parse_policy_dict() -> dict[str, Any]:
    """The default policy as plain data, for examples."""
    return tomllib.loads(DEFAULT_TEXT)


# ---- properties ---------------------------------------------------------------------------------


class TestOnlyPolicyErrorEscapes:
    @FUZZ
    @given(st.text())
    @example("a = " + "[" * 5000)  # deeper than the parser's recursion
    @example("a = 1\nb = ")  # a TOML error at the very end of the document
    @example('"line\\nbreak" = 1')  # a key holding a newline
    @example('"trailing\\n" = 1')
    @example('"para\u2029graph" = 1')
    def test_arbitrary_text(self, text: str) -> None:
        outcome(text)

    @FUZZ
    @given(toml_documents)
    def test_arbitrary_toml_documents(self, document: dict[str, Any]) -> None:
        assert isinstance(outcome(toml_document(document)), str)  # no team or hand-off: refused

    @settings(POLICY_FUZZ, max_examples=100 * SCALE)
    @given(policy_shaped(junk_leaves))
    @example({**parse_policy_dict(), "calendar": {"timezone": "Europe"}})
    @example({**parse_policy_dict(), "calendar": {"timezone": "a" * 300}})
    @example({**parse_policy_dict(), "calendar": {"working_days": [[]]}})
    def test_policies_with_junk_values(self, document: dict[str, Any]) -> None:
        outcome(toml_document(document))

    @FUZZ
    @given(st.data())
    def test_mutated_default_policy(self, data: st.DataObject) -> None:
        lines = DEFAULT_TEXT.splitlines()
        for _ in range(data.draw(st.integers(1, 4), label="mutations")):
            index = data.draw(st.integers(0, len(lines) - 1), label="line")
            mutation = data.draw(st.sampled_from(["drop", "repeat", "junk", "splice", "swap"]))
            if mutation == "drop":
                del lines[index]
            elif mutation == "repeat":
                lines.insert(index, lines[index])
            elif mutation == "junk":
                lines[index] = data.draw(st.text(max_size=30), label="junk")
            elif mutation == "splice":
                at = data.draw(st.integers(0, len(lines[index])), label="at")
                lines[index] = lines[index][:at] + data.draw(st.text(max_size=5)) + lines[index][at:]
            else:
                other = data.draw(st.integers(0, len(lines) - 1), label="other")
                lines[index], lines[other] = lines[other], lines[index]
        outcome("\n".join(lines))

    @FUZZ
    @given(st.text())
    @example("1e-05 working days")
    @example("٣ working hours")
    def test_durations_and_offsets(self, text: str) -> None:
        for parse in (parse_duration, parse_offset):
            try:
                parse(text)
            except PolicyError as exc:
                assert "\n" not in str(exc).replace(repr(text), "")


class TestRoundTrips:
    @FUZZ
    @given(durations_as_text)
    def test_written_durations_parse_to_what_they_say(self, pair: tuple[str, Duration]) -> None:
        text, expected = pair
        assert parse_duration(text) == expected

    @FUZZ
    @given(any_durations)
    @example(Duration(working=True, days=1e-05))  # printed as 1e-05 before the fix
    @example(Duration(working=True, days=0.1 + 0.2))
    def test_printed_durations_parse_back(self, duration: Duration) -> None:
        assert parse_duration(str(duration)) == duration

    @FUZZ
    @given(offsets())
    def test_printed_offsets_parse_back(self, text: str) -> None:
        offset = parse_offset(text)
        assert parse_offset(str(offset)) == offset
        assert isinstance(offset, Offset)


class TestGeneratedPolicies:
    @POLICY_FUZZ
    @given(policies())
    def test_valid_policies_load_with_what_they_say(self, document: dict[str, Any]) -> None:
        policy = parse_policy(toml_document(document), SOURCE)
        for team in Team:
            written = document["handoffs"][team.value]
            handoff = policy.handoff(team)
            due = written["due"]
            for risk in Risk:
                assert handoff.due_for(risk) == parse_duration(
                    due if isinstance(due, str) else due[risk.value]
                )
            assert len(handoff.steps) == len(written["steps"])
            for step, raw in zip(handoff.steps, written["steps"], strict=True):
                assert step.at == parse_offset(raw["at"])
                assert list(step.notify) == raw["notify"]
                assert step.repeat == raw.get("repeat", 0)
            if team in LOCAL_TEAMS:
                assert policy.team(team).email == document["teams"][team.value]["email"]
        if "calendar" in document:
            calendar = document["calendar"]
            assert policy.calendar.timezone == calendar["timezone"]
            assert policy.calendar.working_days == {DAY_NAMES.index(d) for d in calendar["working_days"]}
            assert f"{policy.calendar.working_hours[0]:%H:%M}" == calendar["working_hours"][:5]
        assert Policy.model_validate_json(policy.model_dump_json()) == policy

    @settings(POLICY_FUZZ, max_examples=30 * SCALE)
    @given(policies(), st.sampled_from(list(Team)))
    def test_an_unknown_recipient_is_refused_with_its_line(
        self, document: dict[str, Any], team: Team
    ) -> None:
        document["handoffs"][team.value]["steps"][0]["notify"] = ["nobody-in-particular"]
        message = outcome(toml_document(document))
        assert isinstance(message, str)
        assert re.search(
            rf"line \d+: handoffs\.{team.value}\.steps\[0\]\.notify\[0\]: unknown recipient", message
        )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a = 1\nb = ", "line 2"),
        ("a = " + "[" * 5000, "line 1"),
    ],
)
def test_toml_errors_name_a_line_even_at_the_end(text: str, expected: str) -> None:
    message = outcome(text)
    assert isinstance(message, str) and expected in message and "not valid TOML" in message


class TestFoundByFuzzing:
    """Each of these escaped as another exception, or as a message the contract does not allow."""

    @pytest.mark.parametrize("zone", ["Europe", "a" * 300])
    def test_a_zone_folder_or_overlong_name_is_an_unknown_time_zone(self, zone: str) -> None:
        text = DEFAULT_TEXT.replace('timezone = "Europe/London"', f'timezone = "{zone}"')
        message = outcome(text)
        assert isinstance(message, str) and "calendar.timezone: unknown time zone" in message

    def test_an_unhashable_working_day_is_refused_by_position(self) -> None:
        text = DEFAULT_TEXT.replace('["mon", "tue", "wed", "thu", "fri"]', '["mon", []]')
        message = outcome(text)
        assert isinstance(message, str) and "calendar.working_days[1]:" in message

    def test_nesting_too_deep_for_the_parser(self) -> None:
        assert outcome("a = " + "[" * 5000) == f"{SOURCE}: line 1: not valid TOML: values nested too deeply"

    def test_a_key_with_a_line_break_is_quoted(self) -> None:
        message = outcome(DEFAULT_TEXT + '\n"line\\nbreak" = 1\n')
        assert isinstance(message, str) and '"line\\nbreak": unknown key' in message

    def test_small_working_days_print_in_positional_notation(self) -> None:
        assert str(Duration(working=True, days=1e-05)) == "0.00001 working days"
