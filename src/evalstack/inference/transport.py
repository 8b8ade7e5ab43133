"""The HTTP transport under the model client: one aiohttp session per origin.

The model client sends thousands of small JSON POSTs a second to one host, so it keeps one
``aiohttp.ClientSession`` per origin with a keep-alive ``TCPConnector`` sized to the caller's
parallelism. At most ``max_connections`` requests run at once; extra ones wait in arrival order, and a
request's timeout starts when it gets its turn, not while it queues. TLS is aiohttp's (the system's
default trust store). Proxies come from the environment (``HTTP_PROXY``, ``HTTPS_PROXY``, ``NO_PROXY``,
credentials from ``.netrc``), read once when the transport is created: aiohttp's own ``trust_env``
would look them up again in a worker thread for every request.

Failures before a complete response arrived raise :class:`TransportError` with ``kind`` "connect",
"timeout" or "protocol"; the caller decides about retries. ``kind`` "closed" means the transport was
closed and will not send anything again; "refused" that the egress policy refused the address the
origin's name resolved to (the transport connects only to addresses the policy passed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:  # aiohttp is imported on first use: it costs `evalstack run` start-up time
    import aiohttp
    from yarl import URL

    from evalstack.egress import EgressPolicy

logger = logging.getLogger(__name__)

ErrorKind = Literal["connect", "timeout", "protocol", "closed", "refused"]


class TransportError(Exception):
    """A request failed before a complete response arrived."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class Response:
    """A complete HTTP response: status, headers (case-insensitive lookup), body bytes."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
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


def origin_of(url: str) -> str:
    """``scheme://host[:port]`` of an http(s) URL; ValueError for anything else."""
    from yarl import URL

    parsed = URL(url)
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(f"not an http(s) URL: {url!r}")
    return str(parsed.origin())


class AiohttpTransport:
    """A keep-alive connection pool to one origin, at most ``max_connections`` requests at once.

    ``headers`` are sent with every request; bodies are sent as ``application/json``. Redirects are
    not followed (an API endpoint that redirects is misconfigured; the caller reports the status).
    """

    def __init__(
        self,
        origin: str,
        *,
        headers: dict[str, str] | None = None,
        max_connections: int = 256,
        connect_timeout: float = 10.0,
        keepalive_expiry: float = 4.0,
        egress: EgressPolicy | None = None,
    ) -> None:
        from aiohttp.helpers import get_env_proxy_for_url
        from yarl import URL

        if max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, got {max_connections}")
        self.origin = origin_of(origin)
        self.max_connections = max_connections
        self._base = URL(self.origin)
        self._headers = {"Accept": "application/json", "User-Agent": "evalstack", **(headers or {})}
        self._json = {"Content-Type": "application/json"}
        self._connect_timeout = connect_timeout
        self._keepalive_expiry = keepalive_expiry
        self._egress = egress
        self._proxy: URL | None = None
        self._proxy_auth: aiohttp.BasicAuth | None = None
        with contextlib.suppress(LookupError):
            self._proxy, self._proxy_auth = get_env_proxy_for_url(self._base)
            logger.info("requests to %s go through the proxy %s", self.origin, self._proxy)
        self._urls: dict[str, URL] = {}
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}
        self._session: aiohttp.ClientSession | None = None
        self._slots: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    async def request(self, method: str, target: str, body: bytes | None, timeout: float) -> Response:
        """Send one request and read the whole response; raise TransportError on failure."""
        import aiohttp
        from yarl import URL

        from evalstack.egress import EgressRefusedError

        if self._closed:
            raise TransportError("closed", f"the client for {self.origin} is closed")
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._bind(loop)
        session, slots = self._session, self._slots
        assert session is not None and slots is not None
        url = self._urls.get(target)
        if url is None:
            url = self._urls.setdefault(target, self._base.join(URL(target, encoded=True)))
        client_timeout = self._timeouts.get(timeout)
        if client_timeout is None:
            client_timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=self._connect_timeout)
            self._timeouts[timeout] = client_timeout
        async with slots:
            try:
                async with session.request(
                    method,
                    url,
                    data=body,
                    headers=self._json if body is not None else None,
                    timeout=client_timeout,
                    allow_redirects=False,
                    proxy=self._proxy,
                    proxy_auth=self._proxy_auth,
                ) as resp:
                    return Response(resp.status, resp.headers, await resp.read())
            except EgressRefusedError as exc:
                raise TransportError("refused", str(exc)) from None
            except aiohttp.ConnectionTimeoutError:
                raise TransportError(
                    "connect", f"cannot connect to {self.origin}: no answer within {self._connect_timeout:g}s"
                ) from None
            except TimeoutError:
                raise TransportError("timeout", f"no complete response within {timeout:g}s") from None
            except aiohttp.ClientConnectorError as exc:
                reason = exc.strerror or str(exc) or type(exc).__name__
                raise TransportError("connect", f"cannot connect to {self.origin}: {reason}") from None
            except aiohttp.ClientError as exc:
                if self._closed:
                    raise TransportError("closed", f"the client for {self.origin} is closed") from None
                detail = str(exc) or type(exc).__name__
                raise TransportError("protocol", f"talking to {self.origin} failed: {detail}") from None

    async def aclose(self) -> None:
        """Close the session and its connections."""
        self._closed = True
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        # A session belongs to the loop that made it: a new loop gets a new session.
        import aiohttp

        old = self._session
        if old is not None and old.connector is not None:
            with contextlib.suppress(Exception):
                old.connector.close()  # closes its sockets now; the old loop may be gone
        resolver = None
        if self._egress is not None:
            from evalstack.egress_clients import PolicyResolver

            resolver = PolicyResolver(self._egress, "model", self._base.host or "")
        connector = aiohttp.TCPConnector(
            limit=self.max_connections,
            limit_per_host=0,
            keepalive_timeout=self._keepalive_expiry,
            resolver=resolver,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers=self._headers,
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,  # proxies were resolved once in __init__
        )
        self._slots = asyncio.Semaphore(self.max_connections)
        self._loop = loop
