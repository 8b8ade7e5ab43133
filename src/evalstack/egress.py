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
from collections.abc import Callable, Iterable, Sequence
from typing import Literal
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

Resolver = Callable[[str, int], list[str]]
"""Every address a host resolves to, in preference order; blocking, raises OSError when it cannot."""


def resolve_host(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (the system resolver), in the order it gives them."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class EgressRefusedError(InvalidInputError):
    """The egress policy refuses a URL or a connection (names the rule)."""


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


def _literal_address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


class EgressPolicy:
    """Allow and deny lists of hosts or CIDRs, checked against a URL's host and resolved addresses.

    :meth:`check_url` checks a URL before it is used; :meth:`addresses` is the check at connection
    time (``egress_clients``): it resolves a host once and returns the addresses that passed, which
    are the ones connected to, so a name that resolves differently the second time changes nothing.
    """

    def __init__(
        self, allow: Iterable[str] = (), deny: Iterable[str] = (), resolver: Resolver = resolve_host
    ) -> None:
        self.allow = [_parse_entry(e) for e in allow if e.strip()]
        self.deny = [_parse_entry(e) for e in deny if e.strip()]
        self._resolve = resolver

    @property
    def key(self) -> tuple[object, ...]:
        """Equal for two policies that decide alike (the same lists and resolver)."""
        return (tuple(map(str, self.allow)), tuple(map(str, self.deny)), self._resolve)

    def _listed(self, entries: Sequence[IPNetwork | str], host: str, addresses: Sequence[IPAddress]) -> bool:
        for entry in entries:
            if isinstance(entry, str):
                if _host_matches(host, entry):
                    return True
            elif any(address.version == entry.version and address in entry for address in addresses):
                return True
        return False

    def _check(self, host: str, addresses: Sequence[IPAddress], purpose: Purpose, target: str) -> None:
        """Raise EgressRefusedError unless ``host`` at ``addresses`` may be reached for ``purpose``."""
        if purpose == "download":
            for address in addresses:
                mapped = getattr(address, "ipv4_mapped", None) or address
                if any(mapped.version == n.version and mapped in n for n in ALWAYS_REFUSED_FOR_DOWNLOADS):
                    raise EgressRefusedError(
                        f"Refusing to download from {target}: {host} resolves to {address}, a link-local or "
                        "cloud-metadata address, which is never allowed"
                    )
        if self._listed(self.deny, host, addresses):
            raise EgressRefusedError(f"Refusing to reach {target}: {host} is in the egress deny list")
        if self.allow and not self._listed(self.allow, host, addresses):
            raise EgressRefusedError(
                f"Refusing to reach {target}: {host} is not in the egress allow list "
                f"({', '.join(str(e) for e in self.allow)})"
            )

    def addresses(self, host: str, port: int, purpose: Purpose, target: str = "") -> list[IPAddress]:
        """Resolve ``host`` once and check its name and every address; the addresses to connect to.

        Blocking (DNS): call it off the event loop. Raises EgressRefusedError (naming the rule, and
        ``target`` or ``host:port`` as what was refused) or OSError when the name does not resolve.
        """
        host = host.lower().rstrip(".")
        literal = _literal_address(host)
        if literal is not None:
            found: list[IPAddress] = [literal]
        else:
            found = [ipaddress.ip_address(a.split("%", 1)[0]) for a in self._resolve(host, port)]
        self._check(host, found, purpose, target or f"{host}:{port}")
        return found

    async def check_url(self, url: str, purpose: Purpose = "download") -> None:
        """Raise InvalidInputError (naming the rule) unless ``url`` may be reached for ``purpose``."""
        parsed = urlparse(url)
        host = (parsed.hostname or "").lower().rstrip(".")
        if parsed.scheme not in ("http", "https") or not host:
            raise InvalidInputError(f"{url!r} is not an http:// or https:// URL with a host")
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            await asyncio.to_thread(self.addresses, host, port, purpose, repr(url))
        except OSError as exc:
            if purpose == "download":
                raise InvalidInputError(f"The host of {url!r} cannot be resolved: {exc}") from exc
            self._check(host, [], purpose, repr(url))  # a model or judge host that does not resolve yet


OPEN_POLICY = EgressPolicy()
"""No allow or deny list: only the always-refused addresses are refused for downloads."""
