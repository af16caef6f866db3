"""The OpenAPI document declares the error shape the handlers really send, and the bearer scheme."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import FastAPI

from api import create_app
from config import Settings
from web.errors import API_PREFIX, ApiError, ErrorRead, error_responses, install_error_handlers

ERROR_REF = {"$ref": "#/components/schemas/ErrorRead"}


def document() -> dict[str, Any]:
    app = create_app(Settings(database_url="sqlite:///:memory:"), secret="x" * 40)
    doc: dict[str, Any] = app.openapi()
    return doc


def schema_of(response: dict[str, Any]) -> Any:
    return response["content"]["application/json"]["schema"]


def resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    resolved: dict[str, Any] = doc["components"]["schemas"][ref.rsplit("/", 1)[1]]
    return resolved


def is_error_shape(doc: dict[str, Any], schema: dict[str, Any]) -> bool:
    """{"error": {"code", "message", "fields"}}, whichever model declares it."""
    body = resolve(doc, schema)
    if body.get("required") != ["error"]:
        return False
    detail = resolve(doc, body["properties"]["error"])
    return set(detail.get("required", [])) == {"code", "message", "fields"}


def api_operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, operations in doc["paths"].items()
        if path.startswith(API_PREFIX + "/")
        for method, operation in operations.items()
    ]


class TestTheAppsDocument:
    def test_every_api_operation_declares_the_contracts_errors(self) -> None:
        doc = document()
        operations = api_operations(doc)
        assert operations
        for method, path, operation in operations:
            responses = operation["responses"]
            expected = {"401", "403", "503"} | ({"404"} if "{" in path else set())
            expected |= {"409"} if method == "post" else set()
            assert expected <= set(responses), (method, path, sorted(responses))
            for status in expected:
                assert is_error_shape(doc, schema_of(responses[status])), (method, path, status)

    def test_validation_errors_are_declared_in_the_error_shape(self) -> None:
        doc = document()
        submit = doc["paths"][f"{API_PREFIX}/referrals"]["post"]["responses"]["422"]
        assert schema_of(submit) == ERROR_REF
        assert "HTTPValidationError" not in str(doc)
        assert doc["components"]["schemas"]["ErrorRead"]["required"] == ["error"]
        assert set(doc["components"]["schemas"]["ErrorDetail"]["properties"]) == {"code", "message", "fields"}

    def test_api_operations_name_the_bearer_scheme(self) -> None:
        doc = document()
        assert doc["components"]["securitySchemes"]["bearerAuth"] == {"type": "http", "scheme": "bearer"}
        for _, _, operation in api_operations(doc):
            assert operation["security"] == [{"bearerAuth": []}]
        assert "security" not in doc["paths"]["/healthz"]["get"]

    def test_the_401_declares_its_challenge_header(self) -> None:
        responses = document()["paths"][f"{API_PREFIX}/referrals"]["get"]["responses"]
        assert "WWW-Authenticate" in responses["401"]["headers"]
        assert "Retry-After" in responses["503"]["headers"]


def small_app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.post(f"{API_PREFIX}/things/{{thing_id}}", responses={404: {"description": "no such thing"}})
    async def thing(thing_id: str) -> dict[str, str]:
        raise ApiError(409, "conflict", "busy", fields={"thing_id": "busy"})

    @app.get("/outside", responses=error_responses(404))
    async def outside() -> dict[str, str]:
        raise ApiError(404, "not_found", "nothing here")

    return app


class TestDeclaring:
    def test_a_routes_own_responses_win(self) -> None:
        doc = small_app().openapi()
        responses = doc["paths"][f"{API_PREFIX}/things/{{thing_id}}"]["post"]["responses"]
        assert responses["404"] == {"description": "no such thing"}
        assert schema_of(responses["409"]) == ERROR_REF

    def test_routes_outside_the_api_declare_only_their_own(self) -> None:
        responses = small_app().openapi()["paths"]["/outside"]["get"]["responses"]
        assert set(responses) == {"200", "404"}
        assert schema_of(responses["404"]) == ERROR_REF

    def test_the_document_is_declared_once(self) -> None:
        app = small_app()
        first = app.openapi()
        assert app.openapi() is first
        assert app.openapi() == first

    async def test_bodies_sent_match_the_declared_model(self) -> None:
        transport = httpx.ASGITransport(app=small_app())
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            conflict = await client.post(f"{API_PREFIX}/things/a")
            missing = await client.get("/outside")
        assert conflict.status_code == 409 and missing.status_code == 404
        assert ErrorRead.model_validate(conflict.json()).error.fields == {"thing_id": "busy"}
        assert ErrorRead.model_validate(missing.json()).error.code == "not_found"
