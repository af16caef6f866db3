"""bench.loadgen: the lean HTTP/1.1 load generator reads what a real server (uvicorn) answers,
reuses kept-alive connections, and never counts a cut-off or garbled answer as a success."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from bench.loadgen import LeanClient, LoadgenError


async def echo(request: Request) -> Response:
    payload = await request.json()
    return JSONResponse(
        {
            "got": payload,
            "prefer": request.headers.get("prefer"),
            "auth": request.headers.get("authorization"),
        },
        status_code=201,
    )


async def closing(request: Request) -> Response:
    return JSONResponse({"bye": True}, status_code=409, headers={"Connection": "close"})


async def chunked(request: Request) -> Response:
    async def parts() -> AsyncIterator[bytes]:
        for word in (b"one,", b"two,", b"three"):
            yield word

    return StreamingResponse(parts(), status_code=200, media_type="text/plain")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest_asyncio.fixture
async def server() -> AsyncIterator[str]:
    app = Starlette(
        routes=[
            Route("/echo", echo, methods=["POST"]),
            Route("/closing", closing, methods=["POST"]),
            Route("/chunked", chunked, methods=["GET"]),
        ]
    )
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", timeout_keep_alive=1)
    srv = uvicorn.Server(config)
    task = asyncio.create_task(srv.serve())
    while not srv.started:  # uvicorn offers no event to wait on
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        await task


async def test_posts_json_and_reads_status_headers_body_on_one_kept_alive_connection(server: str) -> None:
    client = LeanClient(server, {"Authorization": "Bearer t0k"})
    try:
        for n in range(5):
            answer = await client.post_json("/echo", {"n": n, "text": "é"}, {"Prefer": "respond-async"})
            assert answer.status == 201
            assert answer.json() == {
                "got": {"n": n, "text": "é"},
                "prefer": "respond-async",
                "auth": "Bearer t0k",
            }
            assert answer.headers["content-type"] == "application/json"
    finally:
        await client.aclose()
    assert client.opened == 1


async def test_concurrent_requests_each_get_their_own_answer(server: str) -> None:
    client = LeanClient(server)
    try:
        answers = await asyncio.gather(*(client.post_json("/echo", {"n": n}) for n in range(20)))
    finally:
        await client.aclose()
    assert [a.json()["got"]["n"] for a in answers] == list(range(20))
    assert 1 <= client.opened <= 20


async def test_a_connection_the_server_closes_is_not_reused(server: str) -> None:
    client = LeanClient(server)
    try:
        first = await client.post_json("/closing", {})
        second = await client.post_json("/closing", {})
    finally:
        await client.aclose()
    assert (first.status, second.status) == (409, 409)
    assert second.json() == {"bye": True}
    assert client.opened == 2


async def test_chunked_answers_are_read_whole(server: str) -> None:
    client = LeanClient(server)
    try:
        answer = await client.get("/chunked")
        again = await client.get("/chunked")
    finally:
        await client.aclose()
    assert answer.headers["transfer-encoding"] == "chunked"
    assert answer.body == again.body == b"one,two,three"
    assert client.opened == 1


async def test_an_idle_connection_closed_by_the_server_is_replaced(server: str) -> None:
    client = LeanClient(server)
    try:
        assert (await client.post_json("/echo", {"n": 1})).status == 201
        await asyncio.sleep(1.6)  # past the server's keep-alive timeout: it closes the connection
        answer = await client.post_json("/echo", {"n": 2})
    finally:
        await client.aclose()
    assert answer.json()["got"] == {"n": 2}
    assert client.opened == 2


async def raw_server(answer: bytes) -> tuple[asyncio.Server, str]:
    """A server that reads a request's head, writes `answer` and closes the connection."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    return srv, f"http://127.0.0.1:{port}"


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (b'HTTP/1.1 201 Created\r\nContent-Length: 50\r\n\r\n{"id":', "cut off after 6 bytes"),
        (b"HTTP/1.1 201 Cre", "in the middle of its answer"),
        (b"", "closed a new connection before answering"),
        (b"SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP/1.x status line"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "malformed header line"),
    ],
)
async def test_a_cut_off_or_garbled_answer_is_an_error_not_a_status(answer: bytes, message: str) -> None:
    srv, url = await raw_server(answer)
    client = LeanClient(url)
    try:
        with pytest.raises(LoadgenError, match=message):
            await client.get("/")
    finally:
        await client.aclose()
        srv.close()
        await srv.wait_closed()


async def test_a_body_delimited_by_the_end_of_the_connection_is_read_and_the_connection_dropped() -> None:
    srv, url = await raw_server(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it")
    client = LeanClient(url)
    try:
        answer = await client.get("/")
        assert (answer.status, answer.body) == (200, b"all of it")
        again = await client.get("/")
        assert again.body == b"all of it"
    finally:
        await client.aclose()
        srv.close()
        await srv.wait_closed()
    assert client.opened == 2


def test_only_plain_http_urls_are_accepted() -> None:
    with pytest.raises(ValueError, match="plain http"):
        LeanClient("https://example.org")
