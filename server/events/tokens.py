"""Member tokens: short-lived credentials that let their holder watch one member's
events, and nothing else.

A backend (API key roles ecommerce and admin) mints one with
``EventService.CreateMemberToken`` for a member it has signed in and hands it to that
member's app or browser page, which then watches the member's events (WatchMember with
metadata ``authorization: Bearer <token>``) without holding an API key.

A token is a JWT signed with HS256 (PyJWT) whose claims are ``sub`` (the member id),
``iat``, ``exp`` and ``aud`` = ``loyalty.v1.member-events``. The signing secret (256
random bits) is made once per deployment: the first gateway to start writes it to
Redis with SET NX under the key prefix (``<prefix>:events:member-token-secret``) and
every gateway process reads the same one, so a token minted by any gateway works on
every other. A gateway keeps the secret in memory from its start; checking a token
costs no Redis round trip.

There is no revocation list: a token works until it expires, so lifetimes are short
(MEMBER_TOKEN_TTL_S_DEFAULT, at most MEMBER_TOKEN_TTL_S_MAX). Deleting the secret in
Redis and restarting every gateway invalidates every token issued.

Refusals are exceptions of the server's tree (server/errors.py), answered through
``errors.abort`` like every other: a malformed, forged or expired token is
``InvalidMemberToken`` (UNAUTHENTICATED), a valid token used for another member
``MemberTokenNotAllowed`` (PERMISSION_DENIED).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable

import jwt
import redis.asyncio as aioredis
import redis.exceptions

from loyalty.server.errors import ControlStoreUnavailable, PermissionDenied, Unauthenticated

AUDIENCE = "loyalty.v1.member-events"
"""The ``aud`` claim of every member token: a JWT signed for another purpose (by
anything that might share a key with it) is never taken for one of these."""

ALGORITHM = "HS256"
"""The only algorithm accepted (never the one a token's header names)."""

SECRET_BYTES = 32
"""Random bytes of the signing secret: 256 bits, the HS256 hash's size."""

MEMBER_TOKEN_TTL_S_DEFAULT = 900
"""Lifetime of a token minted with ttl_seconds 0: a browser session's page asks its
backend for a fresh one every quarter of an hour, and a leaked one is useless soon."""

MEMBER_TOKEN_TTL_S_MAX = 86_400
"""Longest lifetime: there is no revocation, so a day is the most a lost token can be
used for."""

MEMBER_TOKEN_LENGTH_MAX = 2_048
"""Longer bearer tokens are refused before decoding. The longest token this server
mints (a 128-character member id of characters JSON escapes) is about 1,300."""


def secret_key(key_prefix: str) -> str:
    """The Redis key of the deployment's signing secret."""
    return f"{key_prefix}:events:member-token-secret"


class InvalidMemberToken(Unauthenticated):
    """A member token that is malformed, not signed with this deployment's secret, not
    for member events, or expired: answered UNAUTHENTICATED."""


class ExpiredMemberToken(InvalidMemberToken):
    """A member token whose ``exp`` has passed (it was valid): mint a new one."""


class MemberTokenNotAllowed(PermissionDenied):
    """A valid member token used for another member (or for anything but watching its
    member): answered PERMISSION_DENIED."""


_INVALID = "this member token is not valid: ask the backend that issued it for a new one"


class MemberTokens:
    """Mints and checks the member tokens of one deployment (one per gateway process)."""

    token_length_max = MEMBER_TOKEN_LENGTH_MAX
    """Bearer tokens longer than this are not member tokens (the guard reads it)."""

    def __init__(
        self, client: aioredis.Redis, *, key_prefix: str, clock_s: Callable[[], float] = time.time
    ) -> None:
        self._client = client
        self._key = secret_key(key_prefix)
        self._clock_s = clock_s
        """Wall-clock seconds (``iat`` and ``exp`` are Unix times); tests pass their own."""
        self._secret: bytes | None = None

    async def start(self) -> None:
        """Read the deployment's secret, making it first if no gateway did (SET NX):
        afterwards tokens are checked without Redis. Raises ControlStoreUnavailable."""
        if self._secret is not None:
            return
        try:
            await self._client.set(self._key, secrets.token_bytes(SECRET_BYTES), nx=True)
            stored = await self._client.get(self._key)
        except (redis.exceptions.RedisError, OSError) as error:
            raise ControlStoreUnavailable(f"the member-token secret could not be read: {error}") from error
        if not stored:  # deleted between the two commands
            raise ControlStoreUnavailable("the member-token secret was deleted while it was being read; retry")
        self._secret = stored

    async def mint(self, member_id: str, ttl_s: int) -> tuple[str, int]:
        """A token for ``member_id`` (already checked) valid for ``ttl_s`` seconds, and
        when it expires (Unix seconds)."""
        await self.start()
        issued_s = int(self._clock_s())
        expires_s = issued_s + ttl_s
        claims = {"sub": member_id, "iat": issued_s, "exp": expires_s, "aud": AUDIENCE}
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM), expires_s

    def verify(self, token: str) -> str:
        """The member id of a valid token; raises InvalidMemberToken (ExpiredMemberToken
        for one whose time is up)."""
        if self._secret is None or len(token) > MEMBER_TOKEN_LENGTH_MAX:
            raise InvalidMemberToken(_INVALID)
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                audience=AUDIENCE,
                # Times are checked below against the injected clock, not PyJWT's own.
                options={
                    "require": ["sub", "iat", "exp", "aud"],
                    "strict_aud": True,
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
        except jwt.InvalidTokenError as error:
            raise InvalidMemberToken(_INVALID) from error
        member_id, expires_s = claims["sub"], claims["exp"]
        if not isinstance(member_id, str) or not member_id or type(expires_s) is not int:
            raise InvalidMemberToken(_INVALID)
        if expires_s <= self._clock_s():
            raise ExpiredMemberToken(
                "this member token expired: ask the backend that issued it for a new one",
                metadata={"expired_at_s": str(expires_s)},
            )
        return member_id

    def authorize(self, token: str, member_id: str | None) -> str:
        """The token's member id if the token is valid and, when ``member_id`` is given,
        for that member; raises InvalidMemberToken or MemberTokenNotAllowed."""
        holder = self.verify(token)
        if member_id is not None and member_id != holder:
            raise MemberTokenNotAllowed(
                "this member token is for another member", metadata={"field": "member_id"}
            )
        return holder
