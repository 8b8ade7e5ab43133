"""The outbound clients the egress policy governs: each connects only to an address the policy passed.

Checking a URL and then letting a client resolve its host again leaves a window: DNS may answer a
public address to the check and 169.254.169.254 to the connection. Here the policy resolves each
host once, when a connection is opened (so on every redirect to a new host too), checks the name and
every address, and the connection goes to a checked address while Host and TLS SNI keep the name.

- :func:`download_client`: an ``httpx.AsyncClient`` for dataset downloads (an httpcore network backend).
- :func:`hub_egress`: ``huggingface_hub``'s shared HTTP client (installed through its supported
  ``set_client_factory``) checks every connection, redirects included, against the policy of the
  ``hf://`` download running in this context (other callers, lm-eval's datasets for one, keep the
  environment's proxy; without one only the always-refused addresses are refused).
- :class:`PolicyResolver`: the aiohttp resolver of the model and judge clients (``inference/transport.py``).

Governed connections go directly, never through a proxy from the environment: a proxy would
resolve the name itself, out of the policy's sight.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
import threading
from collections.abc import Hashable, Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import httpcore
import httpx
from aiohttp.abc import AbstractResolver, ResolveResult

from evalstack.egress import OPEN_POLICY, EgressPolicy, IPAddress, Purpose

if TYPE_CHECKING:
    import httpcore2
    import httpx2


class _CheckedAsyncBackend(httpcore.AsyncNetworkBackend):
    """httpcore's default backend, connecting only to addresses the policy passed."""

    def __init__(self, policy: EgressPolicy, purpose: Purpose) -> None:
        self._policy = policy
        self._purpose = purpose
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            addresses = await asyncio.to_thread(self._policy.addresses, host, port, self._purpose)
        except OSError as exc:
            raise httpcore.ConnectError(f"{host} cannot be resolved: {exc}") from exc
        failure: Exception = httpcore.ConnectError(f"{host} resolves to no address")
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    str(address), port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        raise failure

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError(f"egress to a unix socket ({path}) is never allowed")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def download_client(policy: EgressPolicy, *, timeout: httpx.Timeout | float) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` that follows redirects and connects only where ``policy`` allows downloads.

    A refused connection raises :class:`~evalstack.egress.EgressRefusedError` (not an httpx error).
    """
    transport = httpx.AsyncHTTPTransport()
    # httpx takes no network backend; its transport is a thin wrapper over this pool.
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=httpx.create_ssl_context(),
        network_backend=_CheckedAsyncBackend(policy, "download"),
    )
    return httpx.AsyncClient(transport=transport, follow_redirects=True, timeout=timeout)


# ---------------------------------------------------------------------------------------- the Hub

_hub_policy: ContextVar[EgressPolicy | None] = ContextVar("evalstack_hub_egress", default=None)


def _checked_sync_backend(policy: EgressPolicy) -> httpcore2.NetworkBackend:
    import httpcore2

    class CheckedSyncBackend(httpcore2.NetworkBackend):
        """httpcore2's sync backend (under huggingface_hub), connecting only to checked addresses."""

        def __init__(self) -> None:
            self._inner = httpcore2.SyncBackend()

        def connect_tcp(
            self,
            host: str,
            port: int,
            timeout: float | None = None,
            local_address: str | None = None,
            socket_options: Any = None,
        ) -> httpcore2.NetworkStream:
            try:
                addresses = policy.addresses(host, port, "download")
            except OSError as exc:
                raise httpcore2.ConnectError(f"{host} cannot be resolved: {exc}") from exc
            failure: Exception = httpcore2.ConnectError(f"{host} resolves to no address")
            for address in addresses:
                try:
                    return self._inner.connect_tcp(str(address), port, timeout, local_address, socket_options)
                except (httpcore2.ConnectError, httpcore2.ConnectTimeout) as exc:
                    failure = exc
            raise failure

        def connect_unix_socket(
            self, path: str, timeout: float | None = None, socket_options: Any = None
        ) -> httpcore2.NetworkStream:
            raise httpcore2.ConnectError(f"egress to a unix socket ({path}) is never allowed")

        def sleep(self, seconds: float) -> None:
            self._inner.sleep(seconds)

    return CheckedSyncBackend()


def _hub_transport() -> httpx2.BaseTransport:
    """A transport that sends each request through the connection pool of the policy in effect.

    One pool per policy: a connection opened under one policy is never reused under another.
    """
    import httpcore2
    import httpx2

    class PerPolicyTransport(httpx2.BaseTransport):
        def __init__(self) -> None:
            self._lock = threading.Lock()
            self._transports: dict[Hashable, httpx2.HTTPTransport] = {}

        def _for(self, policy: EgressPolicy) -> httpx2.HTTPTransport:
            with self._lock:
                transport = self._transports.get(policy.key)
                if transport is None:
                    transport = httpx2.HTTPTransport()
                    # httpx2 takes no network backend; its transport is a thin wrapper over this pool.
                    transport._pool = httpcore2.ConnectionPool(
                        ssl_context=httpx2.create_ssl_context(), network_backend=_checked_sync_backend(policy)
                    )
                    self._transports[policy.key] = transport
                return transport

        def _through_proxy(self, proxy: str) -> httpx2.HTTPTransport:
            with self._lock:
                transport = self._transports.get(("proxy", proxy))
                if transport is None:
                    transport = self._transports[("proxy", proxy)] = httpx2.HTTPTransport(proxy=proxy)
                return transport

        def handle_request(self, request: httpx2.Request) -> httpx2.Response:
            policy = _hub_policy.get()
            if policy is None:  # not an evalstack download: the environment's proxy, as huggingface_hub would
                proxy = _environment_proxy(request.url.scheme, request.url.host)
                if proxy is not None:
                    return self._through_proxy(proxy).handle_request(request)
            return self._for(policy or OPEN_POLICY).handle_request(request)

        def close(self) -> None:
            with self._lock:
                transports, self._transports = list(self._transports.values()), {}
            for transport in transports:
                transport.close()

    return PerPolicyTransport()


def _environment_proxy(scheme: str, host: str) -> str | None:
    """The proxy the environment (``HTTPS_PROXY``, ``NO_PROXY``...) names for ``scheme://host``."""
    import urllib.request

    proxy = urllib.request.getproxies().get(scheme)
    return None if proxy is None or urllib.request.proxy_bypass(host) else proxy


def _hub_client() -> httpx2.Client:
    """huggingface_hub's default client (its request hook, redirects, no timeout) on checked connections."""
    import httpx2

    try:
        from huggingface_hub.utils._http import hf_request_event_hook

        hooks: dict[str, list[Any]] = {"request": [hf_request_event_hook]}
    except ImportError:  # the hook only adds request ids, offline mode and debug logs
        hooks = {}
    return httpx2.Client(transport=_hub_transport(), event_hooks=hooks, follow_redirects=True, timeout=None)


@functools.cache
def _install_hub_client() -> None:
    import huggingface_hub
    from huggingface_hub import constants

    huggingface_hub.set_client_factory(_hub_client)
    constants.HF_HUB_DISABLE_XET = True  # hf_xet connects on its own, out of the policy's sight


@contextlib.contextmanager
def hub_egress(policy: EgressPolicy) -> Iterator[None]:
    """Within this block (this thread or task), huggingface_hub connects only where ``policy`` allows.

    Its client is shared by the process; outside such a block only the always-refused addresses are
    refused. ``hf_xet`` would connect on its own, so Xet downloads are turned off (files come over HTTP).
    """
    _install_hub_client()
    token = _hub_policy.set(policy)
    try:
        yield
    finally:
        _hub_policy.reset(token)


# ------------------------------------------------------------------------------- model and judges


class PolicyResolver(AbstractResolver):
    """An aiohttp resolver that resolves ``origin_host`` once per lookup and returns only checked addresses.

    Other names (an HTTP proxy the operator configured) resolve as usual. A refusal raises
    :class:`~evalstack.egress.EgressRefusedError`, which aiohttp passes through unchanged.
    """

    def __init__(self, policy: EgressPolicy, purpose: Purpose, origin_host: str) -> None:
        self._policy = policy
        self._purpose = purpose
        self._host = origin_host.lower().rstrip(".")

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        purpose = self._purpose
        if host.lower().rstrip(".") == self._host:
            checked = self._policy
        else:
            checked, purpose = OPEN_POLICY, "model"  # lists nothing, refuses nothing
        addresses: list[IPAddress] = await asyncio.to_thread(checked.addresses, host, port, purpose)
        wanted = {socket.AF_INET: 4, socket.AF_INET6: 6}.get(family)
        return [
            {
                "hostname": host,
                "host": str(address),
                "port": port,
                "family": socket.AF_INET if address.version == 4 else socket.AF_INET6,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
            for address in addresses
            if wanted is None or address.version == wanted
        ]

    async def close(self) -> None:
        return None
