"""A lean HTTP/1.1 keep-alive connection pool on asyncio streams, and an httpx-based equivalent.

The model client sends thousands of small JSON POSTs a second to one host. httpx's connection pool costs
milliseconds per request at high concurrency, so the default transport is this small pool: one
semaphore sized to the connection limit, a stack of idle keep-alive connections, requests written in one
``write`` call and responses parsed with ``readuntil``/``readexactly``. It speaks plain HTTP/1.1 and TLS,
with ``Content-Length`` or chunked responses; anything fancier (proxies) goes through :class:`HttpxTransport`.

Both transports raise :class:`TransportError` (with ``kind`` "connect", "timeout" or "protocol") for
failures before a complete response arrived, the caller decides about retries; ``kind`` "closed" means
the transport was closed and will not send anything again.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import Literal, Protocol
from urllib.parse import urlsplit

ErrorKind = Literal["connect", "timeout", "protocol", "closed"]

_MAX_HEAD = 1 << 20  # response headers larger than this are a protocol error


class TransportError(Exception):
    """A request failed before a complete response arrived."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class Response:
    """A complete HTTP response: status, lower-cased headers, body bytes."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


class Transport(Protocol):
    """Sends one request to the transport's origin and returns the whole response."""

    async def request(self, method: str, target: str, body: bytes | None, timeout: float) -> Response:
        """``target`` is the path (and query) on the origin, e.g. ``/v1/chat/completions``."""
        ...

    async def aclose(self) -> None:
        """Close every connection."""
        ...


class Origin:
    """Scheme, host and port of a URL, with the values a request needs."""

    __slots__ = ("host", "host_header", "port", "scheme")

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.scheme = parts.scheme
        self.host = parts.hostname
        default_port = 443 if parts.scheme == "https" else 80
        self.port = parts.port or default_port
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.host_header = host if self.port == default_port else f"{host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.scheme}://{self.host_header}"


class _Connection:
    __slots__ = ("idle_since", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_since = 0.0

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


class _StaleConnection(Exception):
    """A reused keep-alive connection was closed by the server before it answered."""


class Http11Transport:
    """A keep-alive connection pool to one origin, at most ``max_connections`` requests at once.

    Extra requests wait (in arrival order) for a free connection slot. ``headers`` are sent with every
    request. A reused connection that turns out to be closed by the server is replaced once at no cost
    to the caller's retry budget.
    """

    def __init__(
        self,
        origin: Origin,
        *,
        headers: dict[str, str] | None = None,
        max_connections: int = 256,
        connect_timeout: float = 10.0,
        keepalive_expiry: float = 4.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, got {max_connections}")
        self.origin = origin
        self.max_connections = max_connections
        self._connect_timeout = connect_timeout
        self._keepalive_expiry = keepalive_expiry
        self._ssl: ssl.SSLContext | None = None
        if origin.scheme == "https":
            self._ssl = ssl_context or ssl.create_default_context()
        fixed = {
            "Host": origin.host_header,
            "User-Agent": "evalstack",
            "Accept": "application/json",
            "Accept-Encoding": "identity",
            **(headers or {}),
        }
        self._fixed_headers = "".join(f"{k}: {v}\r\n" for k, v in fixed.items()).encode("latin-1")
        self._idle: list[_Connection] = []
        self._slots: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    async def request(self, method: str, target: str, body: bytes | None, timeout: float) -> Response:
        """Send one request and read the whole response; raise TransportError on failure."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._bind(loop)
        slots = self._slots
        assert slots is not None
        if self._closed:
            raise TransportError("closed", f"the client for {self.origin} is closed")
        if body is None:
            payload = b"%s %s HTTP/1.1\r\n%s\r\n" % (method.encode(), target.encode(), self._fixed_headers)
        else:
            payload = (
                b"%s %s HTTP/1.1\r\n%sContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                % (method.encode(), target.encode(), self._fixed_headers, len(body), body)
            )
        async with slots:
            try:
                async with asyncio.timeout(timeout):
                    conn = self._take_idle(loop)
                    if conn is not None:
                        try:
                            return await self._exchange(conn, payload, method, reused=True)
                        except _StaleConnection:
                            pass
                    conn = await self._connect()
                    return await self._exchange(conn, payload, method, reused=False)
            except TimeoutError:
                raise TransportError("timeout", f"no complete response within {timeout:g}s") from None

    async def aclose(self) -> None:
        """Close idle connections; connections in use close when their request ends."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    # internals

    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        # Connections belong to the loop that opened them: a new loop starts a new pool.
        for conn in self._idle:
            conn.close()
        self._idle = []
        self._slots = asyncio.Semaphore(self.max_connections)
        self._loop = loop

    def _take_idle(self, loop: asyncio.AbstractEventLoop) -> _Connection | None:
        idle = self._idle
        if not idle:
            return None
        now = loop.time()
        while idle:
            conn = idle.pop()
            if (
                now - conn.idle_since < self._keepalive_expiry
                and not conn.reader.at_eof()
                and not conn.writer.is_closing()
            ):
                return conn
            conn.close()
        return None

    async def _connect(self) -> _Connection:
        origin = self.origin
        try:
            async with asyncio.timeout(self._connect_timeout):
                reader, writer = await asyncio.open_connection(
                    origin.host,
                    origin.port,
                    ssl=self._ssl,
                    server_hostname=origin.host if self._ssl else None,
                    limit=_MAX_HEAD,
                )
        except TimeoutError:
            raise TransportError(
                "connect", f"cannot connect to {origin}: no answer within {self._connect_timeout:g}s"
            ) from None
        except (OSError, ssl.SSLError) as exc:
            reason = (
                exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
            )
            raise TransportError("connect", f"cannot connect to {origin}: {reason}") from exc
        return _Connection(reader, writer)

    async def _exchange(self, conn: _Connection, payload: bytes, method: str, *, reused: bool) -> Response:
        reader = conn.reader
        keep = False
        complete = False
        try:
            conn.writer.write(payload)
            await conn.writer.drain()
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError as exc:
                if reused and not exc.partial:
                    raise _StaleConnection from None
                raise TransportError(
                    "protocol", f"{self.origin} closed the connection without answering"
                ) from None
            status, headers, keep = _parse_head(head)
            while 100 <= status < 200:  # interim responses (100 Continue) precede the real one
                head = await reader.readuntil(b"\r\n\r\n")
                status, headers, keep = _parse_head(head)
            if method == "HEAD" or status in (204, 304):
                body = b""
            elif headers.get("transfer-encoding", "").lower().endswith("chunked"):
                body = await _read_chunked(reader)
            elif "content-length" in headers:
                body = await reader.readexactly(int(headers["content-length"]))
            else:
                body = await reader.read()
                keep = False
            complete = True
        except ConnectionError as exc:
            if reused and isinstance(exc, ConnectionResetError | BrokenPipeError):
                raise _StaleConnection from None
            raise TransportError("protocol", f"connection to {self.origin} failed: {exc}") from None
        except asyncio.IncompleteReadError:
            raise TransportError("protocol", f"{self.origin} closed the connection mid-response") from None
        except (asyncio.LimitOverrunError, ValueError) as exc:
            raise TransportError("protocol", f"malformed HTTP response from {self.origin}: {exc}") from None
        finally:
            # Anything but a complete keep-alive exchange (errors, timeouts, cancellation) closes it.
            if not (complete and keep) or self._closed:
                conn.close()
            else:
                assert self._loop is not None
                conn.idle_since = self._loop.time()
                self._idle.append(conn)
        return Response(status, headers, body)


def _parse_head(head: bytes) -> tuple[int, dict[str, str], bool]:
    lines = head.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    if not version.startswith("HTTP/"):
        raise ValueError(f"bad status line {lines[0][:80]!r}")
    status = int(rest[:3])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    connection = headers.get("connection", "").lower()
    keep = "close" not in connection if version == "HTTP/1.1" else "keep-alive" in connection
    return status, headers, keep


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        line = await reader.readuntil(b"\r\n")
        size = int(line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                pass
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


class HttpxTransport:
    """The same interface on an ``httpx.AsyncClient`` (honours proxies and the usual environment)."""

    def __init__(
        self,
        origin: Origin,
        *,
        headers: dict[str, str] | None = None,
        max_connections: int = 256,
        connect_timeout: float = 10.0,
        keepalive_expiry: float = 4.0,
    ) -> None:
        import httpx  # only when used: importing httpx costs `evalstack run` start-up time

        self.origin = origin
        self.max_connections = max_connections
        self._closed = False
        self._client = httpx.AsyncClient(
            base_url=str(origin),
            headers={"Accept": "application/json", "User-Agent": "evalstack", **(headers or {})},
            limits=httpx.Limits(
                max_connections=max_connections,
                max_keepalive_connections=max_connections,
                keepalive_expiry=keepalive_expiry,
            ),
            timeout=httpx.Timeout(None, connect=connect_timeout, pool=None),
            trust_env=True,
        )

    async def request(self, method: str, target: str, body: bytes | None, timeout: float) -> Response:
        """Send one request through httpx; map its errors to TransportError."""
        import httpx

        if self._closed:
            raise TransportError("closed", f"the client for {self.origin} is closed")
        headers = {"Content-Type": "application/json"} if body is not None else None
        try:
            async with asyncio.timeout(timeout):
                resp = await self._client.request(method, target, content=body, headers=headers)
        except TimeoutError:
            raise TransportError("timeout", f"no complete response within {timeout:g}s") from None
        except httpx.TimeoutException as exc:
            raise TransportError("timeout", f"{type(exc).__name__} talking to {self.origin}") from None
        except httpx.ConnectError as exc:
            raise TransportError("connect", f"cannot connect to {self.origin}: {exc}") from None
        except httpx.TransportError as exc:
            raise TransportError(
                "protocol", f"{type(exc).__name__} talking to {self.origin}: {exc}"
            ) from None
        return Response(resp.status_code, {k.lower(): v for k, v in resp.headers.items()}, resp.content)

    async def aclose(self) -> None:
        """Close the httpx client."""
        self._closed = True
        await self._client.aclose()
