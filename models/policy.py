"""The escalation policy file (TOML): calendar, teams and hand-off ladders."""

from __future__ import annotations

import json
import re
import tomllib
from datetime import date, time, timedelta
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from models.enums import LOCAL_TEAMS, Risk, StepKind, Team

TEAM = "team"
TEAM_MANAGER = "team_manager"
REFERRER = "referrer"
RECIPIENT_NAMES = (TEAM, TEAM_MANAGER, REFERRER)

#: Display names used when a team in the file has no `name`.
DEFAULT_TEAM_NAMES: dict[Team, str] = {
    Team.FRONT_DOOR: "Front door (MASH)",
    Team.EARLY_HELP: "Early Help",
    Team.SOCIAL_CARE: "Children's social care",
    Team.OTHER_AGENCY: "Other agency",
    Team.OTHER_AUTHORITY: "Another local authority",
}

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# Ten years: anything longer is a typo, and it keeps every calendar loop short.
MAX_SECONDS = 3650 * 86400
MAX_WORKING_DAYS = 3650

_TIMEDELTA = TypeAdapter(timedelta)
_WORKING_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s+working\s+(day|hour|minute|second)s?\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"hour": 3600, "minute": 60, "second": 1}
_OFFSET_RE = re.compile(r"^\s*due\s*(?:([+-])\s*(\S.*?))?\s*$")
_HOURS_RE = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


class PolicyError(ValueError):
    """A policy file or value that cannot be used; the message says where and why."""


_FROZEN = ConfigDict(frozen=True, extra="forbid")


class Duration(BaseModel):
    """Elapsed time (`working=False`) or working time; working days are kept as days."""

    model_config = _FROZEN

    working: bool
    seconds: int = Field(default=0, ge=0, le=MAX_SECONDS)
    # Working days stay in days: their length depends on the calendar's hours.
    days: float = Field(default=0.0, ge=0, le=MAX_WORKING_DAYS)

    @model_validator(mode="after")
    def _one_unit(self) -> Duration:
        if self.days and not self.working:
            raise ValueError("elapsed durations are counted in seconds, not days")
        if self.days and self.seconds:
            raise ValueError("a duration is either working days or seconds, not both")
        return self

    @property
    def is_zero(self) -> bool:
        """True for a zero-length duration (allowed only in offsets)."""
        return self.seconds == 0 and self.days == 0

    def as_timedelta(self) -> timedelta:
        """The elapsed time; working durations need a calendar instead."""
        if self.working:
            raise ValueError(f"{self} is working time: use WorkingCalendar.add")
        return timedelta(seconds=self.seconds)

    def __str__(self) -> str:
        if not self.working:
            return _iso(self.seconds)
        if self.days:
            return _plural(self.days, "working day")
        for unit in ("hour", "minute", "second"):
            if self.seconds % _UNIT_SECONDS[unit] == 0:
                return _plural(self.seconds // _UNIT_SECONDS[unit], f"working {unit}")
        raise AssertionError("unreachable")  # pragma: no cover


def _plural(amount: float, unit: str) -> str:
    # Positional notation: repr(0.00001) is "1e-05", which parse_duration does not read back.
    text = str(int(amount)) if amount == int(amount) else format(Decimal(repr(float(amount))), "f")
    return f"{text} {unit}" if amount == 1 else f"{text} {unit}s"


def _iso(seconds: int) -> str:
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    time_part = "".join(f"{n}{u}" for n, u in ((hours, "H"), (minutes, "M"), (secs, "S")) if n)
    text = "P" + (f"{days}D" if days else "") + (f"T{time_part}" if time_part else "")
    return "PT0S" if text == "P" else text


def parse_duration(text: str) -> Duration:
    """Parse ISO 8601 elapsed time ("PT30S", "P2D") or working time ("4 working hours")."""
    hint = f"{text!r} is not a duration: use ISO 8601 like PT4H or '4 working hours'"
    if not isinstance(text, str):
        raise PolicyError(hint)
    match = _WORKING_RE.match(text)
    if match:
        amount, unit = Decimal(match.group(1)), match.group(2).lower()
        if unit == "day":
            if amount > MAX_WORKING_DAYS:
                raise PolicyError(f"{text!r} is too long (at most {MAX_WORKING_DAYS} days)")
            return Duration(working=True, days=float(amount))
        return Duration(working=True, seconds=_whole_seconds(text, amount * _UNIT_SECONDS[unit]))
    stripped = text.strip()
    if not stripped.startswith("P"):
        raise PolicyError(hint)
    date_part = stripped[1:].split("T", 1)[0]
    if "Y" in date_part or "M" in date_part:
        raise PolicyError(
            f"{text!r} is not a duration: months and years have no fixed length;"
            " use days (P30D) or working days ('20 working days')"
        )
    try:
        delta = _TIMEDELTA.validate_python(stripped)
    except ValidationError:
        raise PolicyError(hint) from None
    return Duration(working=False, seconds=_whole_seconds(text, Decimal(str(delta.total_seconds()))))


def _whole_seconds(text: str, seconds: Decimal) -> int:
    if seconds != seconds.to_integral_value():
        raise PolicyError(f"{text!r} is not a whole number of seconds")
    if seconds > MAX_SECONDS:
        raise PolicyError(f"{text!r} is too long (at most 3650 days)")
    return int(seconds)


def _coerce_duration(value: Any) -> Any:
    return parse_duration(value) if isinstance(value, str) else value


DurationField = Annotated[Duration, BeforeValidator(_coerce_duration)]


class Offset(BaseModel):
    """An instant relative to a hand-off's due instant: `due`, `due - 1 working hour`."""

    model_config = _FROZEN

    sign: Literal[1, -1] = 1
    duration: Duration | None = None

    @property
    def is_before_due(self) -> bool:
        """True when the offset is strictly before the due instant."""
        return self.sign == -1 and self.duration is not None and not self.duration.is_zero

    def __str__(self) -> str:
        if self.duration is None:
            return "due"
        return f"due {'-' if self.sign < 0 else '+'} {self.duration}"


def parse_offset(text: str) -> Offset:
    """Parse "due", "due - 1 working hour" or "due + PT10S"."""
    match = _OFFSET_RE.match(text) if isinstance(text, str) else None
    if not match:
        raise PolicyError(f"{text!r} is not an offset: use 'due', 'due - 1 working hour' or 'due + PT10S'")
    if match.group(1) is None:
        return Offset()
    return Offset(sign=-1 if match.group(1) == "-" else 1, duration=parse_duration(match.group(2)))


def _coerce_offset(value: Any) -> Any:
    return parse_offset(value) if isinstance(value, str) else value


def is_email(value: str) -> bool:
    """Loose check: one `@`, something before it and a dotted domain after it."""
    if value.count("@") != 1 or any(c.isspace() for c in value):
        return False
    local, domain = value.split("@")
    return bool(local) and "." in domain.strip(".") and not domain.startswith(".")


def _check_email(value: str) -> str:
    if not is_email(value):
        raise ValueError(f"{value!r} is not an email address")
    return value


def _check_recipient(value: str) -> str:
    if value not in RECIPIENT_NAMES and not is_email(value):
        raise ValueError(
            f"unknown recipient {value!r} (use team, team_manager, referrer or an email address)"
        )
    return value


Email = Annotated[str, AfterValidator(_check_email)]
Recipient = Annotated[str, AfterValidator(_check_recipient)]


class Step(BaseModel):
    """One rung of an escalation ladder: when, whom, and how often to repeat."""

    model_config = _FROZEN

    at: Annotated[Offset, BeforeValidator(_coerce_offset)]
    notify: tuple[Recipient, ...]
    repeat_every: DurationField | None = None
    repeat: int = Field(default=0, ge=0, le=100)

    @field_validator("notify", mode="before")
    @classmethod
    def _one_recipient(cls, value: Any) -> Any:
        return (value,) if isinstance(value, str) else value

    @field_validator("notify")
    @classmethod
    def _someone(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        # Checked after the items, so a bad recipient is not also reported as "no recipients".
        if not value:
            raise ValueError("name at least one recipient")
        return value

    @model_validator(mode="after")
    def _repeat(self) -> Step:
        if self.repeat and self.repeat_every is None:
            raise ValueError("repeat needs repeat_every (how far apart the repeats are)")
        if self.repeat_every is not None and not self.repeat:
            raise ValueError("repeat_every needs repeat = N (how many further sends)")
        if self.repeat_every is not None and self.repeat_every.is_zero:
            raise ValueError("repeat_every must be longer than zero")
        return self

    @property
    def kind(self) -> StepKind:
        """A step before the deadline reminds; at or after it escalates."""
        return StepKind.REMINDER if self.at.is_before_due else StepKind.ESCALATION


class HandoffPolicy(BaseModel):
    """How long a team has to act on a hand-off, and the ladder until it does."""

    model_config = _FROZEN

    due: dict[Risk, DurationField]
    steps: tuple[Step, ...] = Field(min_length=1)

    @field_validator("due", mode="before")
    @classmethod
    def _expand_due(cls, value: Any) -> Any:
        if isinstance(value, str):
            duration = parse_duration(value)  # once, so a typo is reported once
            return {risk.value: duration for risk in Risk}
        return value

    @field_validator("due")
    @classmethod
    def _all_ratings(cls, value: dict[Risk, Duration]) -> dict[Risk, Duration]:
        missing = [risk.value for risk in Risk if risk not in value]
        if missing:
            raise ValueError(f"must give red, amber and green (missing {', '.join(missing)})")
        for risk, duration in value.items():
            if duration.is_zero:
                raise ValueError(f"{risk.value} must be longer than zero")
        return value

    def due_for(self, risk: Risk) -> Duration:
        """The time allowed for a referral of this RAG rating."""
        return self.due[risk]


class TeamPolicy(BaseModel):
    """Where a team's reminders and its manager's escalations go."""

    model_config = _FROZEN

    email: Email
    manager_email: Email
    name: str = ""


def _check_local_team(value: Team) -> Team:
    if value not in LOCAL_TEAMS:
        raise ValueError(
            f"{value.value} is not a team of this authority: list other authorities as"
            " [authorities.<code>] with name, front_door and manager"
        )
    return value


LocalTeam = Annotated[Team, AfterValidator(_check_local_team)]

#: An authority's code: short, and safe in URLs, JSON and form values ("NNC", "west-northants").
_AUTHORITY_CODE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")


def _check_authority_code(value: str) -> str:
    if not _AUTHORITY_CODE_RE.match(value):
        raise ValueError(
            f'{value!r} is not an authority code: use up to 32 letters, digits, - or _ (e.g. "NNC")'
        )
    return value


def _check_name(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value.strip()


AuthorityCode = Annotated[str, AfterValidator(_check_authority_code)]


class AuthorityPolicy(BaseModel):
    """Another local authority a referral can be transferred to: who must acknowledge it there.

    In the `other_authority` hand-off's ladder, `team` is this authority's `front_door` and
    `team_manager` its `manager` (its front door when it names none) and our own front door's
    manager, who must hear of a transfer nobody has taken up.
    """

    model_config = _FROZEN

    name: Annotated[str, Field(max_length=200), AfterValidator(_check_name)]
    front_door: Email
    manager: Email | None = None

    @property
    def manager_or_front_door(self) -> str:
        """Where the authority's escalations go: its manager, else its front door."""
        return self.manager or self.front_door


def _parse_hours(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    hint = f"{value!r} is not working hours: use 'HH:MM-HH:MM' like '09:00-17:00'"
    match = _HOURS_RE.match(value)
    if not match:
        raise ValueError(hint)
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    try:
        return (time(h1, m1), time(h2, m2))
    except ValueError:
        raise ValueError(hint) from None


def _parse_days(value: Any) -> Any:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple | set | frozenset):
        return value
    days = []
    for item in value:
        if isinstance(item, str):
            if item.strip().lower() not in DAY_NAMES:
                raise ValueError(f"unknown day {item!r} (use {', '.join(DAY_NAMES)})")
            item = DAY_NAMES.index(item.strip().lower())
        days.append(item)
    # A list, not a set: pydantic then refuses unhashable or non-integer items by position.
    return days


class CalendarPolicy(BaseModel):
    """When the clocks run: time zone, working hours and days, holidays and closures."""

    model_config = _FROZEN

    timezone: str = "Europe/London"
    working_hours: Annotated[tuple[time, time], BeforeValidator(_parse_hours)] = (
        time(9),
        time(17),
    )
    working_days: Annotated[frozenset[int], BeforeValidator(_parse_days)] = frozenset(range(5))
    bank_holidays: Literal["england-and-wales", "scotland", "northern-ireland", "none"] = "england-and-wales"
    closures: tuple[date, ...] = ()

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            # OSError: a name that is a folder of the zone database ("Europe") or too long for a path.
            raise ValueError(f"unknown time zone {value!r}, e.g. 'Europe/London'") from None
        return value

    @field_validator("working_hours")
    @classmethod
    def _hours_order(cls, value: tuple[time, time]) -> tuple[time, time]:
        if value[0] >= value[1]:
            raise ValueError(f"the day must end after it starts ({value[0]:%H:%M}-{value[1]:%H:%M})")
        return value

    @field_validator("working_days")
    @classmethod
    def _days_range(cls, value: frozenset[int]) -> frozenset[int]:
        if not value:
            raise ValueError("at least one working day is needed")
        if not value <= set(range(7)):
            raise ValueError("working days are numbered 0 (Monday) to 6 (Sunday)")
        return value


class DeliveryPolicy(BaseModel):
    """What happens when the mail server permanently rejects a message's addressee."""

    model_config = _FROZEN

    #: A mailbox that gets a copy of every rejected message (e.g. the force's public
    #: protection unit), besides the hand-off team's manager.
    fallback_email: Email | None = None


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_LOOKUP_FIELDS = frozenset({"reference", "police_reference", "referral_id"})


def _check_env_name(value: str) -> str:
    if not _ENV_NAME.match(value):
        raise ValueError("must be the name of an environment variable (letters, digits, _)")
    return value


EnvName = Annotated[str, AfterValidator(_check_env_name)]


class CaseSystemPolicy(BaseModel):
    """Early Help's case system (e.g. Liquidlogic EHM, Mosaic): looked up, and able to push.

    Secrets are never in the file: it names the environment variables that hold them.
    """

    model_config = _FROZEN

    #: GET this URL while an Early Help hand-off is open; `{reference}`, `{police_reference}`
    #: and `{referral_id}` are filled in (URL-encoded). No child data is ever put in it.
    lookup_url: str | None = None
    #: The environment variable holding the lookup's `Authorization` header value.
    lookup_auth_env: EnvName | None = None
    #: Where the record id is in the JSON answer, dotted (`cases.0.id`); absent or null: none yet.
    record_id_path: str = "record_id"
    #: How often to look while the hand-off is open (elapsed time, at least a minute).
    poll_every: DurationField = Duration(working=False, seconds=900)
    #: The environment variable holding the HMAC key of the inbound webhook
    #: (POST /api/v1/integrations/early-help/records); unset: the webhook is off.
    webhook_secret_env: EnvName | None = None

    @field_validator("lookup_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http:// or https:// URL")
        names = set(re.findall(r"{([^{}]*)}", value))
        if unknown := names - _LOOKUP_FIELDS:
            raise ValueError(
                f"unknown placeholder {{{sorted(unknown)[0]}}}: use {{reference}}, "
                "{police_reference} or {referral_id}"
            )
        return value

    @field_validator("poll_every")
    @classmethod
    def _elapsed(cls, value: Duration) -> Duration:
        if value.working or value.seconds < 60:
            raise ValueError('must be elapsed time of at least a minute, e.g. "PT15M"')
        return value

    @field_validator("record_id_path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value or any(not part for part in value.split(".")):
            raise ValueError('must name keys (or list indexes) separated by dots, e.g. "cases.0.id"')
        return value


class IntegrationsPolicy(BaseModel):
    """Other systems the service talks to."""

    model_config = _FROZEN

    early_help: CaseSystemPolicy = CaseSystemPolicy()


class Policy(BaseModel):
    """The whole policy: calendar, the four teams and their hand-off ladders."""

    model_config = _FROZEN

    calendar: CalendarPolicy = CalendarPolicy()
    delivery: DeliveryPolicy = DeliveryPolicy()
    integrations: IntegrationsPolicy = IntegrationsPolicy()
    #: Other local authorities a referral can be transferred to, by code (none: no transfers).
    #: Before `handoffs`, whose check needs it.
    authorities: dict[AuthorityCode, AuthorityPolicy] = {}
    teams: dict[LocalTeam, TeamPolicy]
    handoffs: dict[Team, HandoffPolicy]

    @field_validator("teams")
    @classmethod
    def _all_teams(cls, value: dict[Team, TeamPolicy]) -> dict[Team, TeamPolicy]:
        _require_all(value, "team", LOCAL_TEAMS)
        return {
            team: tp if tp.name else tp.model_copy(update={"name": DEFAULT_TEAM_NAMES[team]})
            for team, tp in value.items()
        }

    @field_validator("handoffs")
    @classmethod
    def _all_handoffs(
        cls, value: dict[Team, HandoffPolicy], info: ValidationInfo
    ) -> dict[Team, HandoffPolicy]:
        _require_all(value, "hand-off policy", LOCAL_TEAMS)
        if info.data.get("authorities") and Team.OTHER_AUTHORITY not in value:
            raise ValueError(
                "missing hand-off policy for other_authority: [authorities] lists authorities a"
                " referral can be transferred to, so [handoffs.other_authority] must say how long"
                " they have and whom to tell"
            )
        return value

    def handoff(self, team: Team) -> HandoffPolicy:
        """The hand-off policy for a team."""
        try:
            return self.handoffs[Team(team)]
        except (KeyError, ValueError):
            raise PolicyError(f"no hand-off policy for team {team!r}") from None

    def team(self, team: Team) -> TeamPolicy:
        """The addresses and display name of a team."""
        try:
            return self.teams[Team(team)]
        except (KeyError, ValueError):
            raise PolicyError(f"no team {team!r} in the policy") from None

    def transfer_refusal(self, code: str) -> str | None:
        """Why a referral cannot be transferred to `code` (None: it can), for a person to read."""
        if not self.authorities:
            return "no other authorities are configured: the policy needs [authorities.<code>] sections"
        if code not in self.authorities:
            return f"unknown authority {code!r} (use {', '.join(sorted(self.authorities))})"
        return None

    def authority(self, code: str) -> AuthorityPolicy:
        """Another authority by its code (exact, as in the file)."""
        try:
            return self.authorities[code]
        except KeyError:
            raise PolicyError(f"no authority {code!r} in the policy") from None


def _require_all(value: dict[Team, Any], what: str, teams: tuple[Team, ...]) -> None:
    missing = [team.value for team in teams if team not in value]
    if missing:
        raise ValueError(f"missing {what} for {', '.join(missing)}")


def parse_policy(text: str, source: str = "<policy>") -> Policy:
    """Parse and validate policy TOML text; `source` names it in error messages."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _refusal(source, _toml_error(text, str(exc))) from None
    except RecursionError:
        # tomllib recurses once per nested array or inline table.
        raise _refusal(source, "line 1: not valid TOML: values nested too deeply") from None
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        lines = _key_lines(text)
        problems = [_describe(error, lines) for error in exc.errors()]
        raise _refusal(source, "; ".join(problems)) from None


def _refusal(source: str, message: str) -> PolicyError:
    # One line, as the contract promises, whatever a message quotes.
    return PolicyError(" ".join(f"{source}: {message}".splitlines()))


_TOML_AT_RE = re.compile(
    r"^(?P<reason>.*?)\s*\(at (?:line (?P<line>\d+), column (?P<column>\d+)|end of document)\)$"
)


def _toml_error(text: str, message: str) -> str:
    """tomllib's message led by the line, which it leaves out for errors at the end of the text."""
    match = _TOML_AT_RE.match(message)
    if match is None:  # pragma: no cover - another Python's wording
        return f"not valid TOML: {message}"
    if match.group("line"):
        line, column = int(match.group("line")), int(match.group("column"))
    else:
        line, column = text.count("\n") + 1, len(text) - text.rfind("\n")
    return f"line {line}: not valid TOML: {match.group('reason')} (column {column})"


def default_policy_text() -> str:
    """The built-in default policy, as TOML text."""
    return (
        resources.files(__package__ or "models").joinpath("default_policy.toml").read_text(encoding="utf-8")
    )


def load_policy(path: Path | None = None) -> Policy:
    """Load a policy file, or the built-in default when `path` is None."""
    if path is None:
        return parse_policy(default_policy_text(), "built-in default policy")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"{path}: cannot read policy file: {exc}") from None
    return parse_policy(text, str(path))


def _describe(error: Any, lines: dict[tuple[str | int, ...], int]) -> str:
    loc = tuple(part for part in error["loc"] if part != "[key]")
    kind = error["type"]
    if kind == "value_error" and "error" in error.get("ctx", {}):
        message = str(error["ctx"]["error"])
    elif kind == "missing":
        message = "required key is missing"
    elif kind == "extra_forbidden":
        message = "unknown key"
    elif kind == "literal_error":
        message = f"unknown value {error['input']!r} (use {error['ctx']['expected']})"
    elif kind == "enum":
        what = "RAG rating" if "due" in loc[:-1] else "team"
        message = f"unknown {what} {error['input']!r} (use {error['ctx']['expected']})"
    else:
        message = error["msg"]
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{_key_text(p)}" for p in loc).lstrip(".")
    line = next((lines[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in lines), None)
    where = f"line {line}: " if line else ""
    return f"{where}{path}: {message}" if path else f"{where}{message}"


def _key_text(key: str) -> str:
    """A key as TOML would need it written: bare when it can be, else quoted."""
    return key if _BARE_KEY_RE.fullmatch(key) else json.dumps(key, ensure_ascii=False)


_BARE_KEY_RE = re.compile(r"[A-Za-z0-9_-]+")


def _key_lines(text: str) -> dict[tuple[str | int, ...], int]:
    """Best-effort map from key paths to the TOML lines defining them, for messages."""
    found: dict[tuple[str | int, ...], int] = {}
    counts: dict[tuple[str | int, ...], int] = {}
    table: tuple[str | int, ...] = ()
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        header = _HEADER_RE.match(line)
        if header:
            key: tuple[str | int, ...] = _split_key(header.group(2))
            if header.group(1) == "[[":
                counts[key] = counts.get(key, -1) + 1
                key = (*key, counts[key])
            table = key
            for n in range(1, len(key) + 1):
                found.setdefault(key[:n], number)
            continue
        assignment = _ASSIGN_RE.match(line)
        if assignment:
            found.setdefault(table + _split_key(assignment.group(1)), number)
    return found


_HEADER_RE = re.compile(r"^(\[\[?)\s*([^\]]+?)\s*\]")
_ASSIGN_RE = re.compile(
    r"""^((?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*'))*)\s*="""
)


def _split_key(text: str) -> tuple[str, ...]:
    parts = re.findall(r"""\s*(?:"([^"]*)"|'([^']*)'|([A-Za-z0-9_-]+))\s*(?:\.|$)""", text)
    return tuple(a or b or c for a, b, c in parts)
