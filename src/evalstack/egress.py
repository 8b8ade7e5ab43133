"""The one egress policy: which hosts evalstack may reach for datasets, judges and models.

Every outgoing URL a user can choose (a dataset URL, a custom ``hf://`` endpoint, a judge URL, a
model base URL) goes through :meth:`EgressPolicy.check_url`. The host is resolved first and every
address it resolves to is checked, so a name cannot smuggle in a forbidden address; downloads
check again on every redirect (:meth:`EgressPolicy.httpx_hooks`).

- ``deny``: hosts or CIDRs that are always refused.
- ``allow``: when non-empty, only these hosts or CIDRs are reachable.
- Link-local and cloud-metadata addresses (169.254.0.0/16, fe80::/10, fd00:ec2::254) are refused
  for downloads whatever the lists say.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Literal
from urllib.parse import urlparse

from evalstack.errors import InvalidInputError

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

Purpose = Literal["download", "model", "judge"]

ALWAYS_REFUSED_FOR_DOWNLOADS: tuple[IPNetwork, ...] = (
    ipaddress.ip_network("169.254.0.0/16"),
    ipaddress.ip_network("fe80::/10"),
    ipaddress.ip_network("fd00:ec2::254/128"),
)
"""Link-local and cloud-metadata addresses: never a dataset's source."""

Resolver = Callable[[str, int], Awaitable[list[str]]]


async def resolve_host(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (the system resolver, off the event loop)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


def _parse_entry(entry: str) -> IPNetwork | str:
    try:
        return ipaddress.ip_network(entry.strip(), strict=False)
    except ValueError:
        return entry.strip().lower().rstrip(".")


def _host_matches(host: str, pattern: str) -> bool:
    """``example.com`` matches itself; ``.example.com`` or ``*.example.com`` match its subdomains."""
    if pattern.startswith("*."):
        pattern = pattern[1:]
    if pattern.startswith("."):
        return host.endswith(pattern) or host == pattern[1:]
    return host == pattern


class EgressPolicy:
    """Allow and deny lists of hosts or CIDRs, checked against a URL's host and resolved addresses."""

    def __init__(
        self, allow: Iterable[str] = (), deny: Iterable[str] = (), resolver: Resolver = resolve_host
    ) -> None:
        self.allow = [_parse_entry(e) for e in allow if e.strip()]
        self.deny = [_parse_entry(e) for e in deny if e.strip()]
        self._resolve = resolver

    def _listed(self, entries: Sequence[IPNetwork | str], host: str, addresses: Sequence[IPAddress]) -> bool:
        for entry in entries:
            if isinstance(entry, str):
                if _host_matches(host, entry):
                    return True
            elif any(address.version == entry.version and address in entry for address in addresses):
                return True
        return False

    async def check_url(self, url: str, purpose: Purpose = "download") -> None:
        """Raise InvalidInputError (naming the rule) unless ``url`` may be reached for ``purpose``."""
        parsed = urlparse(url)
        host = (parsed.hostname or "").lower().rstrip(".")
        if parsed.scheme not in ("http", "https") or not host:
            raise InvalidInputError(f"{url!r} is not an http:// or https:// URL with a host")
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            literal: IPAddress | None = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        if literal is not None:
            addresses = [literal]
        else:
            try:
                resolved = await self._resolve(host, port)
                addresses = [ipaddress.ip_address(a.split("%", 1)[0]) for a in resolved]
            except OSError as exc:
                if purpose == "download":
                    raise InvalidInputError(f"The host of {url!r} cannot be resolved: {exc}") from exc
                addresses = []  # a model or judge host that does not resolve yet: its name is still checked
        if purpose == "download":
            for address in addresses:
                mapped = getattr(address, "ipv4_mapped", None) or address
                if any(mapped.version == n.version and mapped in n for n in ALWAYS_REFUSED_FOR_DOWNLOADS):
                    raise InvalidInputError(
                        f"Refusing to download from {url!r}: {host} resolves to {address}, a link-local or "
                        "cloud-metadata address, which is never allowed"
                    )
        if self._listed(self.deny, host, addresses):
            raise InvalidInputError(f"Refusing to reach {url!r}: {host} is in the egress deny list")
        if self.allow and not self._listed(self.allow, host, addresses):
            raise InvalidInputError(
                f"Refusing to reach {url!r}: {host} is not in the egress allow list "
                f"({', '.join(str(e) for e in self.allow)})"
            )

    def httpx_hooks(self, purpose: Purpose = "download") -> dict[str, list[Callable[[Any], Awaitable[None]]]]:
        """``event_hooks`` for an ``httpx.AsyncClient`` that check every request, redirects included."""

        async def check(request: Any) -> None:
            await self.check_url(str(request.url), purpose)

        return {"request": [check]}


OPEN_POLICY = EgressPolicy()
"""No allow or deny list: only the always-refused addresses are refused for downloads."""
