"""No input produces a 500: random JSON-ish bodies to the two busiest write routes."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.api.conftest import Api, referral_body
from tests.api.test_api_intake import REFERRALS

ALLOWED = {200, 201, 202, 401, 403, 404, 409, 422}

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
    st.sampled_from(["", " ", "\x00", "2015-03-01", "2999-01-01", "red", "early_help", "a@b.example"]),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=3),
    max_leaves=8,
)

REFERRAL_KEYS = list(referral_body())
VALID = referral_body("fuzz")


def _valid_children() -> st.SearchStrategy[Any]:
    child = st.fixed_dictionaries(
        {"family_name": st.text(max_size=5)},
        optional={
            "given_name": st.text(max_size=5) | st.none(),
            "date_of_birth": st.dates().map(str) | json_values,
            "expected_date": st.dates().map(str) | json_values,
            "nickname": json_values,
        },
    )
    return st.lists(child, max_size=3)


referral_bodies = st.one_of(
    # A valid body with some fields replaced by anything (wrong types for known keys).
    st.dictionaries(st.sampled_from(REFERRAL_KEYS), json_values, max_size=3).map(lambda d: {**VALID, **d}),
    # A valid body with some fields dropped and others added.
    st.tuples(
        st.sets(st.sampled_from(REFERRAL_KEYS), max_size=3),
        st.dictionaries(st.text(max_size=8), json_values, max_size=2),
    ).map(lambda t: {**{k: v for k, v in VALID.items() if k not in t[0]}, **t[1]}),
    # Children of every shape, otherwise valid.
    _valid_children().map(lambda children: {**VALID, "children": children}),
    # Anything at all.
    json_values,
)

decision_bodies = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "outcome": st.sampled_from(["early_help", "social_care", "prison", ""]) | json_values,
            "note": st.text(max_size=20) | json_values,
        },
    ),
    st.dictionaries(st.text(max_size=8), json_values, max_size=3),
    json_values,
)

FUZZ = settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)


class TestNoInputIs500:
    """Whatever the body, the answer is one of the contract's statuses."""

    @FUZZ
    @given(body=referral_bodies, who=st.sampled_from(["police", "front_door", "early_help", None]))
    async def test_submit(self, api: Api, body: Any, who: str | None) -> None:
        if isinstance(body, dict) and isinstance(body.get("police_reference"), str):
            # The dev server outlives this stack's worker: never reuse another stack's key.
            body = {**body, "police_reference": f"{api.settings.task_queue}/{body['police_reference']}"}
        response = await api.post(REFERRALS, who, json=body)
        assert response.status_code in ALLOWED, (response.status_code, response.text)
        assert "error" in response.json() or "id" in response.json()

    @FUZZ
    @given(
        body=decision_bodies,
        # "." and ".." are dot-segments the client resolves away: another route, not an id.
        target=st.one_of(st.just(None), st.text(max_size=40).filter(lambda t: t not in {".", ".."})),
        who=st.sampled_from(["front_door", "front_door", "police", None]),
    )
    async def test_decision(self, api: Api, body: Any, target: str | None, who: str | None) -> None:
        if not api.seen:
            await api.submit()
        referral_id = api.seen[0] if target is None else quote(target, safe="")
        response = await api.post(f"{REFERRALS}/{referral_id}/decision", who, json=body)
        assert response.status_code in ALLOWED, (response.status_code, response.text)
