"""A lean HTTP/1.1 load generator: keep-alive connections, a request written in one piece, the
response read by its Content-Length (or chunks). Measurement equipment, not product code.

Why not httpx: on this 2-core machine the load generator shares the CPU with the Temporal server
it measures against. httpx spends about 1.6 ms of CPU on each POST (its request and response
models, h11's state machine, the connection pool's bookkeeping) against 0.65 ms for the raw
baseline's gRPC client; that difference is taken from the server, not from the product. This
client does what a load generator on another host would do at a fraction of the cost, and keeps
what a benchmark must see: every status, every body, every connection the server closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


class LoadgenError(Exception):
    """The server's answer was not HTTP/1.1 as this client reads it, or was cut off."""


class _Stale(Exception):
    """The connection was closed before any byte of an answer came back."""


@dataclass
class Answer:
    status: int
    headers: dict[str, str]  # lower-case names; a repeated header keeps its last value
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def close(self) -> None:
        self.writer.close()


class LeanClient:
    """Keep-alive HTTP/1.1 to one origin; one request per connection at a time, idle ones reused."""

    def __init__(
        self, base_url: str, headers: dict[str, str] | None = None, *, timeout: float = 120.0
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"LeanClient speaks plain http to a host: {base_url!r}")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.prefix = parts.path.rstrip("/")
        self.timeout = timeout
        fixed = {"Host": parts.netloc, "Connection": "keep-alive", **(headers or {})}
        self._fixed = "".join(f"{k}: {v}\r\n" for k, v in fixed.items())
        self._idle: list[_Connection] = []
        self.opened = 0  # connections opened over the client's life

    async def post_json(self, path: str, payload: Any, headers: dict[str, str] | None = None) -> Answer:
        body = json.dumps(payload, separators=(",", ":")).encode()
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        head = (
            f"POST {self.prefix}{path} HTTP/1.1\r\n{self._fixed}{extra}"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        return await self.request(head.encode() + body)

    async def get(self, path: str, headers: dict[str, str] | None = None) -> Answer:
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        return await self.request(f"GET {self.prefix}{path} HTTP/1.1\r\n{self._fixed}{extra}\r\n".encode())

    async def request(self, raw: bytes) -> Answer:
        """Send one whole request and read its answer; a connection that failed is not reused.

        An idle connection the server has closed meanwhile (uvicorn closes them after 5 s) fails
        before any answer: the request is then sent once more on a new connection, as browsers
        and httpx do. A failure on a new connection is the server's and is raised.
        """
        while self._idle:
            connection = self._idle.pop()
            try:
                return await self._exchange(connection, raw)
            except _Stale:
                continue
        reader, writer = await asyncio.open_connection(self.host, self.port)
        self.opened += 1
        try:
            return await self._exchange(_Connection(reader, writer), raw)
        except _Stale as exc:
            raise LoadgenError("the server closed a new connection before answering") from exc

    async def _exchange(self, connection: _Connection, raw: bytes) -> Answer:
        try:
            connection.writer.write(raw)
            answer = await asyncio.wait_for(_read_answer(connection.reader), self.timeout)
        except (asyncio.IncompleteReadError, ConnectionResetError, BrokenPipeError) as exc:
            connection.close()
            if isinstance(exc, asyncio.IncompleteReadError) and exc.partial:
                raise LoadgenError("the server closed the connection in the middle of its answer") from exc
            raise _Stale from exc
        except BaseException:
            connection.close()
            raise
        if answer.headers.get("connection", "").lower() == "close":
            connection.close()
        else:
            self._idle.append(connection)
        return answer

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()
        for connection in idle:
            with contextlib.suppress(OSError):
                await connection.writer.wait_closed()


async def _read_answer(reader: asyncio.StreamReader) -> Answer:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head[:-4].decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    if not version.startswith("HTTP/1.") or not rest[:3].isdigit():
        raise LoadgenError(f"not an HTTP/1.x status line: {lines[0]!r}")
    status = int(rest[:3])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise LoadgenError(f"malformed header line: {line!r}")
        headers[name.strip().lower()] = value.strip()
    try:
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = await _read_chunked(reader)
        elif "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        elif status in (204, 304) or 100 <= status < 200:
            body = b""
        else:
            # Delimited by the end of the connection (RFC 9112 6.3).
            body = await reader.read()
            headers["connection"] = "close"
    except asyncio.IncompleteReadError as exc:
        cut = len(exc.partial)
        raise LoadgenError(f"the answer ({status}) was cut off after {cut} bytes of body") from exc
    return Answer(status, headers, body)


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            # Trailers, if any, end with an empty line.
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)
