"""Admin routes: users and API tokens, for the admin role only; revoked and expired tokens stop working."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.api.conftest import USERS, Api
from tests.api.test_api_intake import REFERRALS, assert_error, aware
from web.admin import TokenIssued, TokenList, TokenRead, UserCreated, UserList
from web.errors import ErrorRead

USERS_PATH = "/api/v1/users"
NOT_IDS = ["0" * 32, "nope", "A" * 32, "%00" * 4, "0" * 31 + "g"]

#: Every admin route as (method, path, JSON body).
ROUTES: list[tuple[str, str, Any]] = [
    ("GET", USERS_PATH, None),
    ("POST", USERS_PATH, {"role": "manager", "name": "M", "email": "m@council.example"}),
    ("GET", f"{USERS_PATH}/{'0' * 32}/tokens", None),
    ("POST", f"{USERS_PATH}/{'0' * 32}/tokens", {}),
    ("POST", f"/api/v1/tokens/{'0' * 32}/revoke", None),
    ("POST", f"/api/v1/tokens/{'0' * 32}/expire", {}),
]


def new_email() -> str:
    """An address no other test uses."""
    return f"u-{uuid.uuid4().hex[:10]}@council.example"


async def call(api: Api, method: str, path: str, who: str | None, body: Any = None) -> Any:
    """One request as `who` (no token when None); a JSON body when given."""
    headers = api.auth(who) if who else {}
    kwargs: dict[str, Any] = {} if body is None else {"json": body}
    return await api.http.request(method, path, headers=headers, **kwargs)


async def create(api: Api, **changes: Any) -> dict[str, Any]:
    """A new user created by the admin (201); the response JSON, checked against its model."""
    body = {"role": "front_door", "name": "New Person", "email": new_email(), "team": "front_door", **changes}
    response = await api.post(USERS_PATH, "admin", json=body)
    assert response.status_code == 201, response.text
    UserCreated.model_validate(response.json())
    data: dict[str, Any] = response.json()
    return data


def bearer(token: str) -> dict[str, str]:
    """An Authorization header."""
    return {"Authorization": f"Bearer {token}"}


class TestOnlyAdmins:
    """No token: 401; any role but admin: 403, before the body is even looked at."""

    @pytest.mark.parametrize(("method", "path", "body"), ROUTES)
    async def test_without_a_token(self, api: Api, method: str, path: str, body: Any) -> None:
        response = await call(api, method, path, None, body)
        assert_error(response, 401, "unauthorized")
        assert response.headers["WWW-Authenticate"] == "Bearer"

    @pytest.mark.parametrize("who", [name for name in USERS if name != "admin"])
    @pytest.mark.parametrize(("method", "path", "body"), ROUTES)
    async def test_other_roles_are_forbidden(
        self, api: Api, method: str, path: str, body: Any, who: str
    ) -> None:
        assert_error(await call(api, method, path, who, body), 403, "forbidden")

    async def test_forbidden_comes_before_invalid(self, api: Api) -> None:
        response = await api.post(USERS_PATH, "manager", json={"role": "emperor", "extra": 1})
        assert_error(response, 403, "forbidden")
        response = await api.post(USERS_PATH, None, json={"role": "emperor"})
        assert_error(response, 401, "unauthorized")

    async def test_a_bad_token_is_401(self, api: Api) -> None:
        response = await api.http.get(USERS_PATH, headers=bearer("rt_not-a-token"))
        assert_error(response, 401, "unauthorized")


class TestUsers:
    """Listing and creating users."""

    async def test_list_every_user_with_active_tokens(self, api: Api) -> None:
        response = await api.get(USERS_PATH, "admin")
        assert response.status_code == 200, response.text
        listed = UserList.model_validate(response.json())
        by_email = {u.email: u for u in listed.items}
        for name, (role, force) in USERS.items():
            user = by_email[f"{name}@example.test"]
            assert user.role == role and user.force == force
            assert user.active_tokens == 1
        for token in api.tokens.values():
            assert token not in response.text

    async def test_create_shows_the_token_once_and_it_works(self, api: Api) -> None:
        created = await create(api)
        token = created["token"]["token"]
        assert token.startswith("rt_")
        assert created["token"]["status"] == "active" and created["token"]["expires_at"] is None
        assert created["user"]["active_tokens"] == 1
        assert created["token"]["user_id"] == created["user"]["id"]
        # The new user can use the referral API with its role.
        assert (await api.http.get(REFERRALS, headers=bearer(token))).status_code == 200
        # Afterwards, neither the token nor anything derived from it is shown.
        tokens = await api.get(f"{USERS_PATH}/{created['user']['id']}/tokens", "admin")
        assert tokens.status_code == 200, tokens.text
        assert token not in tokens.text
        (item,) = tokens.json()["items"]
        assert set(item) == set(TokenRead.model_fields) and item["id"] == created["token"]["id"]
        listed = (await api.get(USERS_PATH, "admin")).text
        assert token not in listed and created["user"]["email"] in listed

    async def test_create_a_police_user_with_an_expiring_token(self, api: Api) -> None:
        before = datetime.now(UTC)
        created = await create(api, role="police", force="Cumbria Constabulary", team=None, expires_in_days=7)
        assert created["user"]["role"] == "police"
        assert created["user"]["force"] == "Cumbria Constabulary"
        expires = aware(created["token"]["expires_at"])
        assert before + timedelta(days=7) <= expires <= datetime.now(UTC) + timedelta(days=7)

    async def test_police_need_a_force(self, api: Api) -> None:
        response = await api.post(
            USERS_PATH, "admin", json={"role": "police", "name": "PC", "email": new_email()}
        )
        error = assert_error(response, 422, "invalid")
        assert set(error["fields"]) == {"force"}

    @pytest.mark.parametrize(
        ("changes", "bad"),
        [
            ({"role": "emperor"}, {"role"}),
            ({"email": "not-an-email"}, {"email"}),
            ({"name": "  "}, {"name"}),
            ({"name": "a\x00b"}, {"name"}),
            ({"team": "accounts"}, {"team"}),
            ({"expires_in_days": 0}, {"expires_in_days"}),
            ({"expires_in_days": 10**9}, {"expires_in_days"}),
            ({"password_hash": "x"}, {"password_hash"}),
            ({"token": "rt_chosen"}, {"token"}),
        ],
    )
    async def test_invalid_bodies_name_each_bad_field(
        self, api: Api, changes: dict[str, Any], bad: set[str]
    ) -> None:
        body = {"role": "manager", "name": "M", "email": new_email(), **changes}
        error = assert_error(await api.post(USERS_PATH, "admin", json=body), 422, "invalid")
        assert set(error["fields"]) == bad
        ErrorRead.model_validate({"error": error})

    async def test_missing_fields_are_named(self, api: Api) -> None:
        error = assert_error(await api.post(USERS_PATH, "admin", json={}), 422, "invalid")
        assert {"role", "name", "email"} <= set(error["fields"])

    async def test_duplicate_email_is_409(self, api: Api) -> None:
        created = await create(api)
        email = created["user"]["email"]
        for again in (email, email.upper()):
            body = {"role": "manager", "name": "Again", "email": again}
            error = assert_error(await api.post(USERS_PATH, "admin", json=body), 409, "conflict")
            assert "email" in error["fields"]


class TestTokens:
    """Issuing, listing, revoking and expiring tokens; a dead token gets 401 on the referral API."""

    async def test_issue_another_token(self, api: Api) -> None:
        created = await create(api)
        user_id = created["user"]["id"]
        response = await api.post(f"{USERS_PATH}/{user_id}/tokens", "admin", json={"expires_in_days": 30})
        assert response.status_code == 201, response.text
        issued = TokenIssued.model_validate(response.json())
        assert issued.status == "active" and issued.expires_at is not None
        assert issued.token != created["token"]["token"]
        assert (await api.http.get(REFERRALS, headers=bearer(issued.token))).status_code == 200
        # Without a body: a token that never expires.
        plain = await api.post(f"{USERS_PATH}/{user_id}/tokens", "admin")
        assert plain.status_code == 201, plain.text
        assert plain.json()["expires_at"] is None
        listed = TokenList.model_validate((await api.get(f"{USERS_PATH}/{user_id}/tokens", "admin")).json())
        assert [t.id for t in listed.items] == [created["token"]["id"], issued.id, plain.json()["id"]]
        users = (await api.get(USERS_PATH, "admin")).json()["items"]
        assert next(u for u in users if u["id"] == user_id)["active_tokens"] == 3

    async def test_revoked_token_gets_401(self, api: Api) -> None:
        created = await create(api)
        token, token_id = created["token"]["token"], created["token"]["id"]
        assert (await api.http.get(REFERRALS, headers=bearer(token))).status_code == 200
        response = await api.post(f"/api/v1/tokens/{token_id}/revoke", "admin")
        assert response.status_code == 200, response.text
        revoked = TokenRead.model_validate(response.json())
        assert revoked.status == "revoked" and revoked.revoked_at is not None
        assert_error(await api.http.get(REFERRALS, headers=bearer(token)), 401, "unauthorized")
        again = await api.post(f"/api/v1/tokens/{token_id}/revoke", "admin")
        assert again.status_code == 200 and again.json()["revoked_at"] == response.json()["revoked_at"]
        users = (await api.get(USERS_PATH, "admin")).json()["items"]
        assert next(u for u in users if u["id"] == created["user"]["id"])["active_tokens"] == 0

    async def test_expired_token_gets_401(self, api: Api) -> None:
        created = await create(api)
        token, token_id = created["token"]["token"], created["token"]["id"]
        response = await api.post(f"/api/v1/tokens/{token_id}/expire", "admin")
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "expired"
        assert_error(await api.http.get(REFERRALS, headers=bearer(token)), 401, "unauthorized")
        # Once expired, it cannot be brought back.
        later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
        error = assert_error(
            await api.post(f"/api/v1/tokens/{token_id}/expire", "admin", json={"at": later}), 409, "conflict"
        )
        assert "at" in error["fields"]
        assert_error(await api.http.get(REFERRALS, headers=bearer(token)), 401, "unauthorized")

    async def test_expire_later_keeps_it_working_until_then(self, api: Api) -> None:
        created = await create(api)
        token, token_id = created["token"]["token"], created["token"]["id"]
        at = (datetime.now(UTC) + timedelta(hours=2)).replace(microsecond=0)
        response = await api.post(
            f"/api/v1/tokens/{token_id}/expire", "admin", json={"at": at.astimezone().isoformat()}
        )
        assert response.status_code == 200, response.text
        assert aware(response.json()["expires_at"]) == at and response.json()["status"] == "active"
        assert (await api.http.get(REFERRALS, headers=bearer(token))).status_code == 200
        past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
        response = await api.post(f"/api/v1/tokens/{token_id}/expire", "admin", json={"at": past})
        assert response.json()["status"] == "expired"
        assert_error(await api.http.get(REFERRALS, headers=bearer(token)), 401, "unauthorized")

    @pytest.mark.parametrize(
        "body",
        [
            {"at": "2026-12-01T09:00:00"},  # no offset
            {"at": "tomorrow"},
            {"at": "9999-12-31T23:59:59-05:00"},  # past the last representable instant in UTC
            {"at": None, "why": "extra"},
            {"at": 8093},  # a number is not read as epoch seconds
        ],
    )
    async def test_bad_expiry_bodies(self, api: Api, body: dict[str, Any]) -> None:
        created = await create(api)
        response = await api.post(f"/api/v1/tokens/{created['token']['id']}/expire", "admin", json=body)
        assert_error(response, 422, "invalid")

    @pytest.mark.parametrize(
        "bad",
        [{"expires_in_days": 0}, {"expires_in_days": "soon"}, {"expires_in_days": True}, {"days": 3}],
    )
    async def test_bad_issue_bodies(self, api: Api, bad: dict[str, Any]) -> None:
        created = await create(api)
        response = await api.post(f"{USERS_PATH}/{created['user']['id']}/tokens", "admin", json=bad)
        assert_error(response, 422, "invalid")

    @pytest.mark.parametrize("unknown", NOT_IDS)
    async def test_unknown_ids_are_404(self, api: Api, unknown: str) -> None:
        assert_error(await api.get(f"{USERS_PATH}/{unknown}/tokens", "admin"), 404, "not_found")
        assert_error(await api.post(f"{USERS_PATH}/{unknown}/tokens", "admin"), 404, "not_found")
        assert_error(await api.post(f"/api/v1/tokens/{unknown}/revoke", "admin"), 404, "not_found")
        assert_error(await api.post(f"/api/v1/tokens/{unknown}/expire", "admin"), 404, "not_found")


ALLOWED = {200, 201, 404, 409, 422}
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(max_size=20)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=6,
)
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class TestNoInputIs500:
    """Whatever the body or id, the admin routes answer with a declared status and shape."""

    @FUZZ
    @given(
        body=st.one_of(
            st.fixed_dictionaries(
                {},
                optional={
                    "role": st.sampled_from(["police", "manager", "admin", ""]) | json_values,
                    "name": st.text(max_size=10) | json_values,
                    "email": st.emails() | st.text(max_size=10),
                    "force": st.text(max_size=10) | json_values,
                    "team": st.sampled_from(["early_help", "x"]) | json_values,
                    "expires_in_days": st.integers() | json_values,
                },
            ),
            json_values,
        )
    )
    async def test_create_user(self, api: Api, body: Any) -> None:
        response = await api.post(USERS_PATH, "admin", json=body)
        assert response.status_code in ALLOWED, (response.status_code, response.text)
        if response.status_code == 201:
            UserCreated.model_validate(response.json())
        else:
            ErrorRead.model_validate(response.json())

    @FUZZ
    @given(
        body=st.one_of(
            st.fixed_dictionaries({}, optional={"at": st.datetimes().map(str) | json_values}), json_values
        ),
        target=st.text(max_size=40).filter(lambda t: t not in {".", ".."} and "/" not in t),
    )
    async def test_expire(self, api: Api, body: Any, target: str) -> None:
        from urllib.parse import quote

        response = await api.post(f"/api/v1/tokens/{quote(target, safe='')}/expire", "admin", json=body)
        assert response.status_code in ALLOWED, (response.status_code, response.text)
        ErrorRead.model_validate(response.json())


class TestDocument:
    """The OpenAPI document describes what the admin routes answer, so fuzzers can check it."""

    async def test_response_models_and_errors_are_declared(self, api: Api) -> None:
        doc = (await api.http.get("/openapi.json")).json()

        def ref(path: str, method: str, status: str) -> str:
            response = doc["paths"][path][method]["responses"][status]
            return str(response["content"]["application/json"]["schema"]["$ref"]).rsplit("/", 1)[1]

        expected = {
            (USERS_PATH, "get", "200"): "UserList",
            (USERS_PATH, "post", "201"): "UserCreated",
            (USERS_PATH, "post", "409"): "ErrorRead",
            (USERS_PATH, "post", "422"): "ErrorRead",
            (f"{USERS_PATH}/{{user_id}}/tokens", "get", "200"): "TokenList",
            (f"{USERS_PATH}/{{user_id}}/tokens", "get", "404"): "ErrorRead",
            (f"{USERS_PATH}/{{user_id}}/tokens", "post", "201"): "TokenIssued",
            ("/api/v1/tokens/{token_id}/revoke", "post", "200"): "TokenRead",
            ("/api/v1/tokens/{token_id}/expire", "post", "200"): "TokenRead",
            ("/api/v1/tokens/{token_id}/expire", "post", "409"): "ErrorRead",
        }
        assert {key: ref(*key) for key in expected} == expected
        for path in (USERS_PATH, f"{USERS_PATH}/{{user_id}}/tokens"):
            for method in doc["paths"][path]:
                assert ref(path, method, "401") == ref(path, method, "403") == "ErrorRead"
        assert doc["components"]["schemas"]["UserCreate"]["additionalProperties"] is False
        assert "token_hash" not in str(doc["components"]["schemas"])
