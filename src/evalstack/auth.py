"""Who is calling: API keys (stored as SHA-256 digests) and OIDC JWTs (verified against a JWKS).

A request carries ``Authorization: Bearer <key or JWT>`` (what ``LlamaStackClient(api_key=...)`` and
the NeMo SDK send) or, for the web viewer in a browser, ``Authorization: Basic`` with the key as the
password. :class:`Authenticator` turns it into a :class:`Principal` (a name and its scopes) or
raises :class:`AuthError`. Which scope each route needs is decided in ``api/access.py``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import ipaddress
import secrets
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from evalstack.errors import ForbiddenError, InvalidInputError

if TYPE_CHECKING:
    from evalstack.config import AuthSettings

Scope = Literal["read", "run", "admin"]
SCOPES: tuple[Scope, ...] = ("read", "run", "admin")

KEY_PREFIX = "es-"
"""Keys made by ``evalstack keys new`` start with this, so they are easy to spot in a leak scan."""


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: the key's name or the JWT's subject, and its scopes."""

    name: str
    scopes: frozenset[str]

    def has(self, scope: Scope) -> bool:
        return scope in self.scopes


ANONYMOUS = Principal(name="anonymous", scopes=frozenset(SCOPES))
"""The caller of a server without ``auth`` settings (open on loopback, or ``--insecure-no-auth``)."""

current_principal: ContextVar[Principal | None] = ContextVar("current_principal", default=None)
"""The caller of the request being served, set by the access middleware; ``None`` outside a request
(the worker, ``evalstack run``). Read by whatever records who created a job or an entity."""


def creator_name() -> str | None:
    """The name to record as the creator of what the current request makes."""
    principal = current_principal.get()
    return principal.name if principal is not None else None


class AuthError(Exception):
    """The request has no credentials or bad ones (answered with 401)."""


def hash_key(key: str) -> str:
    """The hex SHA-256 digest stored in the settings for ``key``."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key() -> str:
    """A fresh random API key (256 bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_settings_entry(name: str, key: str, scopes: list[str]) -> dict[str, Any]:
    """The ``auth.api_keys`` entry for ``key``: its name, digest and scopes."""
    return {"name": name, "sha256": hash_key(key), "scopes": scopes}


class Authenticator:
    """Checks credentials against the configured keys and JWT issuer."""

    def __init__(self, settings: AuthSettings | None) -> None:
        self.enabled = settings is not None
        self._keys = [
            (bytes.fromhex(entry.sha256), Principal(entry.name, frozenset(entry.scopes)))
            for entry in (settings.api_keys if settings else [])
        ]
        self._jwt = settings.jwt if settings else None
        self._jwks_client: Any = None

    async def authenticate(self, authorization: str | None) -> Principal:
        """The principal of an ``Authorization`` header value; AuthError says what is wrong."""
        if not self.enabled:
            return ANONYMOUS
        if not authorization:
            raise AuthError("Authentication required: send 'Authorization: Bearer <API key or token>'")
        kind, _, credential = authorization.strip().partition(" ")
        credential = credential.strip()
        if kind.lower() == "basic":
            credential = _basic_password(credential)
        elif kind.lower() != "bearer":
            raise AuthError(f"Unsupported authorization scheme {kind!r}; use 'Bearer <API key or token>'")
        if not credential:
            raise AuthError("The Authorization header holds no credential")
        principal = self._match_key(credential)
        if principal is not None:
            return principal
        if self._jwt is not None and credential.count(".") == 2:
            return await self._verify_jwt(credential)
        raise AuthError("Invalid API key or token")

    def _match_key(self, key: str) -> Principal | None:
        digest = hashlib.sha256(key.encode("utf-8")).digest()
        found: Principal | None = None
        for stored, principal in self._keys:  # every entry is compared: no early exit to time
            if hmac.compare_digest(digest, stored):
                found = principal
        return found

    async def _verify_jwt(self, token: str) -> Principal:
        import jwt

        assert self._jwt is not None
        settings = self._jwt
        if self._jwks_client is None:
            self._jwks_client = jwt.PyJWKClient(settings.jwks_url, cache_keys=True, lifespan=300)
        try:
            key = await asyncio.to_thread(self._jwks_client.get_signing_key_from_jwt, token)
            claims = jwt.decode(
                token,
                key.key,
                algorithms=settings.algorithms,
                audience=settings.audience,
                issuer=settings.issuer,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.PyJWKClientConnectionError as exc:
            raise AuthError(f"The token cannot be checked: the issuer's JWKS is unreachable ({exc})") from exc
        except jwt.PyJWTError as exc:
            raise AuthError(f"Invalid token: {exc}") from exc
        raw = claims.get(settings.scopes_claim, "")
        if isinstance(raw, str):
            scopes = raw.split()
        else:
            scopes = [str(s) for s in raw] if isinstance(raw, list) else []
        return Principal(name=str(claims["sub"]), scopes=frozenset(s for s in scopes if s in SCOPES))


def _basic_password(credential: str) -> str:
    """The password of HTTP Basic credentials (the key; the user name is ignored)."""
    try:
        decoded = base64.b64decode(credential, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise AuthError("Malformed Basic credentials") from None
    return decoded.partition(":")[2]


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a listen address) is reachable only from this machine."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, auth_configured: bool, insecure_no_auth: bool) -> None:
    """Refuse to serve an open API on a non-loopback address unless explicitly told to."""
    if auth_configured or insecure_no_auth or is_loopback(host):
        return
    raise InvalidInputError(
        f"Refusing to listen on {host} without authentication: anyone who can reach it could run "
        "evaluations and read every result. Add an 'auth' section to the settings (API keys from "
        "'evalstack keys new NAME --scopes read,run'), listen on 127.0.0.1, or pass --insecure-no-auth."
    )


def check_may_delete(
    caller: Principal | None, creator: str | None, what: str, action: str = "deleting"
) -> None:
    """Raise ForbiddenError unless ``caller`` created ``what`` or holds ``admin`` (to delete or replace it).

    ``caller`` None is no request (the worker, ``evalstack run``); ``creator`` None is something made
    without auth (or before it was turned on), which any caller with ``run`` may delete.
    """
    if caller is None or creator is None or caller.name == creator or caller.has("admin"):
        return
    raise ForbiddenError(
        f"{what} was created by {creator!r}; {action} what others created needs the 'admin' scope"
    )
