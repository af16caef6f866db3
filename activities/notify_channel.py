"""GOV.UK Notify: the email channel the outbox uses instead of SMTP when an API key is configured.

Notify's API (https://docs.notifications.service.gov.uk/rest-api.html): `POST
/v2/notifications/email` with `email_address`, `template_id`, `personalisation` and a
`reference`, one recipient per request, authorised by `Authorization: Bearer <JWT>`. The JWT
is HS256 with the claims `iss` (the service id) and `iat` (now, in epoch seconds; Notify refuses
one more than 30 s off its clock), signed with the secret key. Both come from the API key,
`{key name}-{service id}-{secret key}`, whose last two parts are UUIDs.

Notify has no idempotency key. A request whose response was lost may or may not have created a
notification; `GET /v2/notifications?reference=...` lists the ones carrying our reference, so
the outbox looks there before sending such a message again (see `activities.outbox`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from config import Settings

UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
API_KEY = re.compile(rf"^(?P<name>.+)-(?P<service_id>{UUID})-(?P<secret>{UUID})$")
#: Per request: well inside the activity's 30 s start-to-close timeout, with room to record.
REQUEST_TIMEOUT = 8.0
#: A Retry-After longer than this is cut short: the activity's retry backoff caps at 5 minutes
#: too, and a referral's escalation must not wait on a rate limit for longer than that.
MAX_RETRY_AFTER = 300.0


def parse_api_key(api_key: str) -> tuple[str, str]:
    """(service id, secret key) of a Notify API key; ValueError when it is not one."""
    match = API_KEY.match(api_key.strip())
    if match is None:
        raise ValueError("must look like KEYNAME-SERVICEID-SECRETKEY, the last two parts UUIDs")
    return match["service_id"], match["secret"]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def jwt_token(service_id: str, secret: str, *, now: float | None = None) -> str:
    """The bearer token Notify expects: HS256 over {iss: service id, iat: now}."""
    header = {"typ": "JWT", "alg": "HS256"}
    claims = {"iss": service_id, "iat": int(time.time() if now is None else now)}
    signing_input = ".".join(
        _b64(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims)
    )
    signature = hmac.new(secret.encode(), signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


@dataclass(frozen=True)
class Sent:
    """Notify took the message: its notification id."""

    notification_id: str


@dataclass(frozen=True)
class Refused:
    """Notify refused the message for good (400 bad request, 403 authorisation)."""

    status: int
    message: str


@dataclass(frozen=True)
class Later:
    """Try again later: a 429 (with Notify's Retry-After, if any), a 5xx, or a connection error.

    `uncertain` when the request went out and no answer came back: Notify may have it.
    """

    message: str
    retry_after: float | None = None
    uncertain: bool = False


Outcome = Sent | Refused | Later


@dataclass(frozen=True)
class NotifyChannel:
    """Sends one email per recipient through Notify's REST API."""

    service_id: str
    secret: str = field(repr=False)
    base_url: str
    template_id: str
    #: Message kind (reminder, escalation, outcome, reconcile) -> its own template id.
    templates: dict[str, str] = field(default_factory=dict)
    timeout: float = REQUEST_TIMEOUT

    @classmethod
    def from_settings(cls, settings: Settings) -> NotifyChannel | None:
        """The channel the settings configure, or None without REFERRALS_NOTIFY_API_KEY."""
        if not settings.notify_api_key or not settings.notify_template_id:
            return None
        service_id, secret = parse_api_key(settings.notify_api_key)
        kinds = {
            "reminder": settings.notify_template_reminder,
            "escalation": settings.notify_template_escalation,
            "outcome": settings.notify_template_outcome,
        }
        return cls(
            service_id=service_id,
            secret=secret,
            base_url=settings.notify_base_url.rstrip("/"),
            template_id=settings.notify_template_id,
            templates={kind: tid for kind, tid in kinds.items() if tid},
        )

    def template_for(self, kind: str) -> str:
        """The template of a message kind: its own, or the generic ((subject)) ((body)) one."""
        return self.templates.get(kind, self.template_id)

    def _headers(self) -> dict[str, str]:
        # A fresh token per request: Notify refuses one issued more than 30 s ago.
        return {
            "Authorization": f"Bearer {jwt_token(self.service_id, self.secret)}",
            "Content-Type": "application/json",
            "User-Agent": "referral-tracker",
        }

    async def send(self, *, to: str, kind: str, subject: str, body: str, reference: str) -> Outcome:
        """POST one email; what became of it. Never raises for an HTTP or network failure."""
        payload: dict[str, Any] = {
            "email_address": to,
            "template_id": self.template_for(kind),
            "personalisation": {"subject": subject, "body": body},
            "reference": reference,
        }
        started = False
        try:
            async with httpx.AsyncClient(timeout=self.timeout) as client:
                request = client.build_request(
                    "POST", f"{self.base_url}/v2/notifications/email", json=payload, headers=self._headers()
                )
                started = True
                response = await client.send(request)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            # Never reached Notify: nothing was sent.
            return Later(f"Notify unreachable: {type(exc).__name__}")
        except httpx.HTTPError as exc:
            # The request may have reached Notify and only the answer was lost.
            return Later(f"no answer from Notify: {type(exc).__name__}", uncertain=started)
        return _outcome(response)

    async def check(self) -> str:
        """`ok` when Notify accepts the key and knows every configured template, else why not.

        Sends nothing: `GET /v2/template/{id}` for each template, as a readiness probe (the caller
        bounds its time).
        """
        try:
            async with httpx.AsyncClient(timeout=self.timeout) as client:
                for template in sorted({self.template_id, *self.templates.values()}):
                    response = await client.get(
                        f"{self.base_url}/v2/template/{template}", headers=self._headers()
                    )
                    if response.status_code != 200:
                        return f"unavailable: template {template}: {response.status_code} {_errors(response)}"
        except httpx.HTTPError as exc:
            return f"unavailable: {type(exc).__name__}"
        return "ok"

    async def sent_to(self, reference: str) -> dict[str, str]:
        """Recipient (lower case) -> notification id of emails Notify holds with `reference`.

        Used before sending again after an attempt whose answer was lost. Raises
        httpx.HTTPError when Notify cannot say, so the caller does not guess.
        """
        found: dict[str, str] = {}
        url = f"{self.base_url}/v2/notifications"
        params = {"reference": reference, "template_type": "email"}
        async with httpx.AsyncClient(timeout=self.timeout) as client:
            for _ in range(20):  # pages of 250: far more than any message has recipients
                response = await client.get(url, params=params, headers=self._headers())
                response.raise_for_status()
                data = response.json()
                for item in data.get("notifications", []):
                    address, nid = item.get("email_address"), item.get("id")
                    if isinstance(address, str) and isinstance(nid, str):
                        found.setdefault(address.lower(), nid)
                following = (data.get("links") or {}).get("next")
                if not following or not data.get("notifications"):
                    break
                params["older_than"] = data["notifications"][-1]["id"]
        return found


def _outcome(response: httpx.Response) -> Outcome:
    status = response.status_code
    if status == 201:
        try:
            notification_id = response.json()["id"]
        except (ValueError, KeyError, TypeError):
            return Later("Notify answered 201 without a notification id", uncertain=True)
        return Sent(str(notification_id))
    message = f"Notify {status}: {_errors(response)}"[:2000]
    if status in (400, 403):
        return Refused(status, message)
    if status == 429:
        return Later(message, retry_after=retry_after(response.headers.get("retry-after")))
    # 5xx, or anything else Notify does not document: the request did not take.
    return Later(message)


def _errors(response: httpx.Response) -> str:
    """Notify's `errors` list as text: `BadRequestError: ...; ...`."""
    try:
        errors = response.json().get("errors") or []
        return "; ".join(f"{e.get('error')}: {e.get('message')}" for e in errors) or response.text[:300]
    except (ValueError, AttributeError):
        return response.text[:300]


def retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date), at most MAX_RETRY_AFTER."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)
