"""The `lookup_case_record` activity: does Early Help's case system hold a record yet?

While an Early Help hand-off is open, the workflow asks every `poll_every` (policy
`[integrations.early_help]`). A GET of the configured URL, filled in with the referral's
reference, police reference and id (never child data); the record id is read from the JSON
answer at `record_id_path`. A 404 or an absent/null value is "not yet"; anything else that is
not a 2xx, or not JSON, is an error the activity retries a few times before the workflow waits
for the next poll.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import quote

import httpx
import structlog
from pydantic import ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from config import ConfigError
from models.early_help_payloads import LookupInput, LookupResult
from models.policy import CaseSystemPolicy

log = structlog.get_logger(__name__)

LOOKUP_TIMEOUT = httpx.Timeout(10.0)


def record_at(document: Any, path: str) -> str | None:
    """The value at a dotted path (`cases.0.id`) as text, or None when any step is missing."""
    value = document
    for part in path.split("."):
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
        if value is None:
            return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    text = str(value).strip()
    return text or None


class CaseSystemActivities:
    """Built by the worker from the policy and the environment variable it names."""

    def __init__(self, policy: CaseSystemPolicy, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.policy = policy
        self.authorization: str | None = None
        if policy.lookup_auth_env is not None:
            value = env.get(policy.lookup_auth_env, "")
            if not value:
                raise ConfigError(
                    f"{policy.lookup_auth_env}: not set (the policy's integrations.early_help."
                    "lookup_auth_env names it for the case system's Authorization header)"
                )
            self.authorization = value

    def url_for(self, input: LookupInput) -> str:
        """The lookup URL for one referral, each value URL-encoded."""
        assert self.policy.lookup_url is not None
        values = {
            "reference": input.reference,
            "police_reference": input.police_reference,
            "referral_id": input.referral_id,
        }
        return self.policy.lookup_url.format(**{k: quote(v, safe="") for k, v in values.items()})

    @activity.defn(name="lookup_case_record")
    async def lookup(self, input: LookupInput) -> LookupResult:
        """The record id the case system holds for this referral, or None."""
        headers = {"Accept": "application/json"}
        if self.authorization is not None:
            headers["Authorization"] = self.authorization
        async with httpx.AsyncClient(timeout=LOOKUP_TIMEOUT) as http:
            response = await http.get(self.url_for(input), headers=headers)
        if response.status_code == 404:
            return LookupResult()
        if response.status_code in (401, 403):
            # Retrying will not help until someone fixes the credentials: say so loudly.
            log.error("case_system.refused", status=response.status_code, reference=input.reference)
            raise ApplicationError(f"the case system refused the lookup ({response.status_code})")
        if not response.is_success:
            raise ApplicationError(f"the case system answered {response.status_code}")
        try:
            document = response.json()
        except ValueError:
            raise ApplicationError("the case system's answer is not JSON") from None
        record = record_at(document, self.policy.record_id_path)
        try:
            result = LookupResult(record_id=record)
        except ValidationError:
            raise ApplicationError("the case system's record id is not one we can keep (too long?)") from None
        if record is not None:
            log.info("case_system.record_found", reference=input.reference)
        return result
