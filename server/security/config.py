"""Typed, frozen security settings read from the config file and the command line:
API keys to seed, limits, TLS.

``loyalty serve --config FILE`` may carry, besides ``[program]`` and ``[[rules]]``::

    [[api_keys]]
    name = "admin"                 # shown in listings and audit events
    role = "admin"                 # pos | ecommerce | analytics | admin
    secret_sha256 = "9f86d0..."    # hex SHA-256 of the secret (`loyalty keys generate`)
    # key_id = "key_0123456789abcdef"   # optional; derived from the name when absent
    # channels = ["pos"]           # optional scope
    # store_ids = ["berlin-1"]     # optional scope

    [limits]
    key_redemptions_per_s = 5.0

Only the entry point reads the file; everything else receives these values.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Literal

import msgspec

from loyalty.actors.ledger.limits import LABEL_LENGTH_MAX, PAGE_SIZE_MAX
from loyalty.server import limits as named
from loyalty.server.errors import ConfigurationError, FieldViolation

Role = Literal["pos", "ecommerce", "analytics", "admin"]
ROLES: tuple[str, ...] = ("pos", "ecommerce", "analytics", "admin")

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_KEY_ID = re.compile(r"key_[0-9a-z_-]{1,60}")


class SecurityConfigError(ConfigurationError, ValueError):
    """The config file's [[api_keys]] or [limits] is malformed; the message says where."""


class Limits(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The limits a ``[limits]`` table may override (same names, lower case). Each
    default, and the reason for it, is in server/limits.py."""

    message_bytes_max: int = named.MESSAGE_BYTES_MAX
    """Largest request or response, bytes (gRPC refuses larger ones with RESOURCE_EXHAUSTED)."""
    batch_operations_max: int = named.BATCH_ITEMS_MAX
    """Items in one Batch; more: INVALID_ARGUMENT naming ``items``."""
    page_size_max: int = PAGE_SIZE_MAX
    """Largest page of ListTransactions, ListApiKeys and ListAuditEvents; larger asks get this."""
    deadline_default_s: float = named.DEADLINE_DEFAULT_S
    """Deadline of a call that sets none."""
    deadline_max_s: float = named.DEADLINE_MAX_S
    """Longer client deadlines are cut to this."""
    concurrent_rpcs_max: int = named.CONCURRENT_RPCS_MAX
    """Calls in progress per gateway process; more: RESOURCE_EXHAUSTED."""
    key_requests_per_s: float = named.KEY_REQUESTS_PER_S
    """Sustained calls per second per key and gateway process (a Batch counts its items)."""
    key_requests_burst: int = named.KEY_REQUESTS_BURST
    """Calls a key may make at once before the rate applies."""
    key_redemptions_per_s: float = named.KEY_REDEMPTIONS_PER_S
    """Sustained Redeem and Reserve operations per second per key and gateway process."""
    key_redemptions_burst: int = named.KEY_REDEMPTIONS_BURST
    """Redeem and Reserve operations a key may make at once."""

    def check(self) -> None:
        """Raise SecurityConfigError for a value outside its allowed range. Ceilings are
        the compiled-in limits where the code relies on them (the Batch and page limits
        are also checked further in), and sane orders of magnitude elsewhere."""
        ranges: dict[str, tuple[float, float]] = {
            "message_bytes_max": (64 * 1024, 64 * 1024 * 1024),
            "batch_operations_max": (1, named.BATCH_ITEMS_MAX),
            "page_size_max": (1, PAGE_SIZE_MAX),
            "deadline_default_s": (0.1, 3600.0),
            "deadline_max_s": (0.1, 3600.0),
            "concurrent_rpcs_max": (1, 1_000_000),
            "key_requests_per_s": (0.001, 1_000_000.0),
            "key_requests_burst": (1, 10_000_000),
            "key_redemptions_per_s": (0.001, 1_000_000.0),
            "key_redemptions_burst": (1, 10_000_000),
        }
        for name, (low, high) in ranges.items():
            value = getattr(self, name)
            if not low <= value <= high:
                raise SecurityConfigError(f"limits.{name} must be between {low} and {high}, got {value}")
        if self.deadline_default_s > self.deadline_max_s:
            raise SecurityConfigError("limits.deadline_default_s must not exceed limits.deadline_max_s")


class TlsFiles(msgspec.Struct, frozen=True, kw_only=True):
    """PEM files of the server's TLS identity, and of the CA its clients must present
    certificates from (mutual TLS) when ``client_ca_file`` is set."""

    cert_file: str
    """Server certificate chain (PEM)."""
    key_file: str
    """Its private key (PEM)."""
    client_ca_file: str = ""
    """CA certificates (PEM) that client certificates must chain to; empty: no client
    certificates asked for."""


class SecuritySettings(msgspec.Struct, frozen=True, kw_only=True):
    """What every gateway process needs: limits and TLS (keys come from Redis)."""

    limits: Limits = Limits()
    """Named limits, possibly overridden by the config file."""
    tls: TlsFiles | None = None
    """TLS files; None: plaintext (fine on loopback, and behind a TLS-terminating proxy)."""


class ApiKeySeed(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One ``[[api_keys]]`` entry: a key written to Redis at start (only its hash)."""

    name: str
    """Who holds it, e.g. "till-berlin-1"; shown in listings and audit events."""
    role: Role
    """pos, ecommerce, analytics or admin."""
    secret_sha256: str
    """Lower-case hex SHA-256 of the secret; the secret itself is never in the file."""
    key_id: str = ""
    """Public id; empty: derived from the name, so it stays the same across restarts."""
    channels: tuple[str, ...] = ()
    """When non-empty, purchases must name one of these channels."""
    store_ids: tuple[str, ...] = ()
    """When non-empty, purchases must name one of these stores."""

    def resolved_key_id(self) -> str:
        """The key id, derived from the name when the file gives none."""
        if self.key_id:
            return self.key_id
        return "key_" + hashlib.sha256(f"config:{self.name}".encode()).hexdigest()[:16]


class ConfigFileSecurity(msgspec.Struct, frozen=True):
    """The security part of a config file."""

    api_keys: tuple[ApiKeySeed, ...] = ()
    limits: Limits = Limits()


class _File(msgspec.Struct, frozen=True):
    api_keys: list[dict[str, Any]] = []
    limits: dict[str, Any] = {}


def check_scope(field: str, values: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """A channel or store list of a key, checked (raises FieldViolation)."""
    if len(values) > named.KEY_SCOPE_VALUES_MAX:
        raise FieldViolation(field, f"at most {named.KEY_SCOPE_VALUES_MAX} values")
    for index, value in enumerate(values):
        if not value or len(value) > LABEL_LENGTH_MAX or not value.isprintable():
            raise FieldViolation(f"{field}[{index}]", f"must be 1-{LABEL_LENGTH_MAX} printable characters")
    return tuple(values)


def check_key_name(field: str, name: str) -> str:
    """A key name, checked (raises FieldViolation)."""
    if not name or len(name) > LABEL_LENGTH_MAX or not name.isprintable():
        raise FieldViolation(field, f"must be 1-{LABEL_LENGTH_MAX} printable characters")
    return name


def load_security_config(toml_bytes: bytes) -> ConfigFileSecurity:
    """The ``[[api_keys]]`` and ``[limits]`` tables of a config file (other tables are
    read elsewhere); SecurityConfigError says what is wrong."""
    try:
        parsed = msgspec.toml.decode(toml_bytes, type=_File)
    except (msgspec.ValidationError, msgspec.DecodeError) as error:
        raise SecurityConfigError(f"config file: {error}") from None
    try:
        limits = msgspec.convert(parsed.limits, Limits)
    except msgspec.ValidationError as error:
        raise SecurityConfigError(f"limits: {error}") from None
    limits.check()
    seeds = []
    for index, entry in enumerate(parsed.api_keys):
        where = f"api_keys[{index}]"
        try:
            seed = msgspec.convert(entry, ApiKeySeed)
        except msgspec.ValidationError as error:
            raise SecurityConfigError(f"{where}: {error}") from None
        try:
            check_key_name(f"{where}.name", seed.name)
            check_scope(f"{where}.channels", seed.channels)
            check_scope(f"{where}.store_ids", seed.store_ids)
        except FieldViolation as error:
            raise SecurityConfigError(str(error)) from None
        if not _SHA256_HEX.fullmatch(seed.secret_sha256):
            raise SecurityConfigError(
                f"{where}.secret_sha256: must be 64 lower-case hex digits (see `loyalty keys generate`)"
            )
        if seed.key_id and not _KEY_ID.fullmatch(seed.key_id):
            raise SecurityConfigError(f"{where}.key_id: must be 'key_' and up to 60 of [0-9a-z_-]")
        seeds.append(seed)
    ids = [seed.resolved_key_id() for seed in seeds]
    if len(set(ids)) != len(ids):
        raise SecurityConfigError("api_keys: two entries have the same key_id (or name)")
    if len({seed.secret_sha256 for seed in seeds}) != len(seeds):
        raise SecurityConfigError("api_keys: two entries have the same secret")
    return ConfigFileSecurity(tuple(seeds), limits)


def server_credentials(tls: TlsFiles):
    """grpc server credentials for these files (mutual TLS when a client CA is given)."""
    import pathlib

    import grpc

    private_key = pathlib.Path(tls.key_file).read_bytes()
    certificate_chain = pathlib.Path(tls.cert_file).read_bytes()
    client_ca = pathlib.Path(tls.client_ca_file).read_bytes() if tls.client_ca_file else None
    return grpc.ssl_server_credentials(
        [(private_key, certificate_chain)],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


def is_loopback(host: str) -> bool:
    """Whether a listen address is reachable only from this machine."""
    import ipaddress

    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve anywhere
