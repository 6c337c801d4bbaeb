"""``loyalty keys ...``: make, list, rotate and revoke API keys, read the audit log.

By default it talks to a running server through AdminService (``--target``, with an
admin key from ``--api-key`` or ``$LOYALTY_API_KEY``; none is needed while the server
has no keys, on loopback). With ``--redis-url`` it writes to Redis directly instead,
through the same key use-cases the server runs (server/admin/keys.py), audited as the
command line: the way to make the first admin key of a deployment whose Redis you run
yourself.
``loyalty keys generate`` makes a secret and its hash for ``[[api_keys]]`` in the
config file, without any server.

A new secret is printed once, on its own line, and nowhere else.

Through a server, calls answered UNAVAILABLE, DEADLINE_EXCEEDED or RESOURCE_EXHAUSTED
are retried a few times. ``create``, ``rotate`` and ``revoke`` send one request_id per
invocation (``--request-id`` to choose it; printed when the outcome is unknown), so a
retry, or the command repeated by hand with the same ``--request-id`` within 24 hours,
answers the first outcome: the same key and the same secret, never a second rotation.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time

from loyalty.server.cli.connection import (
    add_connection_flags,
    add_request_id_flag,
    call,
    call_metadata,
    open_channel,
    request_id,
)
from loyalty.server.errors import FieldViolation
from loyalty.server.limits import AUDIT_EVENTS_MAX
from loyalty.server.security.config import ROLES, check_key_name, check_scope

_ROLE_FLAG_HELP = "pos, ecommerce, analytics or admin"

# Keys per page when listing them (the most a ListApiKeys page holds).
_PAGE_SIZE = 500


def add_parser(subcommands) -> None:
    """Register ``keys`` and its subcommands."""
    parser = subcommands.add_parser(
        "keys",
        help="create, list, rotate and revoke API keys; read the audit log",
        description="Manage API keys through a running server's AdminService (default), "
        "or directly in Redis with --redis-url.",
    )
    actions = parser.add_subparsers(dest="keys_command", required=True)

    def connection(sub) -> None:
        add_connection_flags(sub)
        sub.add_argument("--redis-url", default="", help="write to this Redis directly instead of a server")
        sub.add_argument(
            "--key-prefix", default="loyalty", help="Redis key prefix with --redis-url (default loyalty)"
        )
        sub.add_argument("--json", action="store_true", help="print JSON")

    create = actions.add_parser("create", help="make a key; prints its secret once")
    create.add_argument("--name", required=True, help="who holds it, e.g. till-berlin-1")
    create.add_argument("--role", required=True, choices=ROLES, help=_ROLE_FLAG_HELP)
    create.add_argument(
        "--channel", action="append", default=[], help="limit purchases to this channel (repeatable)"
    )
    create.add_argument(
        "--store", action="append", default=[], help="limit purchases to this store (repeatable)"
    )
    connection(create)
    add_request_id_flag(create)
    listing = actions.add_parser("list", help="list keys (never their secrets)")
    listing.add_argument("--include-revoked", action="store_true")
    connection(listing)
    rotate = actions.add_parser("rotate", help="new secret for a key; the old one stops working at once")
    rotate.add_argument("key_id")
    connection(rotate)
    add_request_id_flag(rotate)
    revoke = actions.add_parser("revoke", help="revoke a key; it stops working at once")
    revoke.add_argument("key_id")
    connection(revoke)
    add_request_id_flag(revoke)
    audit = actions.add_parser("audit", help="admin actions, newest first")
    audit.add_argument("--limit", type=int, default=50, help="events to show (default 50)")
    connection(audit)
    actions.add_parser(
        "generate",
        help="print a new secret and the [[api_keys]] entry (with its SHA-256) for the config file",
    ).add_argument("--name", default="admin")


def run(options: argparse.Namespace) -> int:
    """Run one ``loyalty keys`` subcommand; returns the exit code."""
    if options.keys_command == "generate":
        return _generate(options.name)
    if options.keys_command == "create":
        try:
            check_key_name("--name", options.name)
            check_scope("--channel", options.channel)
            check_scope("--store", options.store)
        except FieldViolation as error:
            print(f"loyalty keys: {error}", file=sys.stderr)
            return 2
    if options.keys_command == "audit" and not 1 <= options.limit <= AUDIT_EVENTS_MAX:
        print(f"loyalty keys: --limit must be between 1 and {AUDIT_EVENTS_MAX}", file=sys.stderr)
        return 2
    if options.redis_url:
        if getattr(options, "request_id", ""):
            print("loyalty keys: --request-id needs a server (not --redis-url)", file=sys.stderr)
            return 2
        return asyncio.run(_direct(options))
    return _remote(options)


def _generate(name: str) -> int:
    from loyalty.server.stores.keys import hash_secret, new_secret

    secret = new_secret()
    print(secret)
    print(
        f"# keep the line above secret; put this in the config file:\n"
        f'[[api_keys]]\nname = {json.dumps(name)}\nrole = "admin"\n'
        f'secret_sha256 = "{hash_secret(secret)}"',
    )
    return 0


# ---------------------------------------------------------------- printing


def _print_key(key: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(key, sort_keys=True))
        return
    scope = []
    if key.get("channels"):
        scope.append("channels=" + ",".join(key["channels"]))
    if key.get("store_ids"):
        scope.append("stores=" + ",".join(key["store_ids"]))
    state = "revoked" if key.get("revoked") else "active"
    print("\t".join([key["key_id"], key["role"], state, key["name"], " ".join(scope)]).rstrip())


def _key_from_message(message) -> dict:
    from loyalty.server.admin.servicer import ROLE_NAMES

    return {
        "key_id": message.key_id,
        "name": message.name,
        "role": ROLE_NAMES.get(message.role, "unspecified"),
        "channels": list(message.channels),
        "store_ids": list(message.store_ids),
        "revoked": message.HasField("revoke_time"),
    }


def _key_from_record(record) -> dict:
    view = record.public()
    view["revoked"] = record.revoked
    return view


# ---------------------------------------------------------------- through the server


def _remote(options: argparse.Namespace) -> int:
    import grpc

    from loyalty.server.admin.servicer import ROLE_VALUES
    from loyalty.v1 import admin_pb2 as apb
    from loyalty.v1 import admin_pb2_grpc

    metadata = call_metadata(options)
    channel = open_channel(options)
    stub = admin_pb2_grpc.AdminServiceStub(channel)
    command = options.keys_command
    try:
        if command == "create":
            response = call(
                stub.CreateApiKey,
                apb.CreateApiKeyRequest(
                    name=options.name,
                    role=ROLE_VALUES[options.role],
                    channels=options.channel,
                    store_ids=options.store,
                    request_id=request_id(options),
                ),
                metadata=metadata,
                timeout=30,
            )
            _print_secret(_key_from_message(response.key), response.secret, options.json)
        elif command == "rotate":
            response = call(
                stub.RotateApiKey,
                apb.RotateApiKeyRequest(key_id=options.key_id, request_id=request_id(options)),
                metadata=metadata,
                timeout=30,
            )
            _print_secret(_key_from_message(response.key), response.secret, options.json)
        elif command == "revoke":
            key = call(
                stub.RevokeApiKey,
                apb.RevokeApiKeyRequest(key_id=options.key_id, request_id=request_id(options)),
                metadata=metadata,
                timeout=30,
            )
            _print_key(_key_from_message(key), options.json)
        elif command == "list":
            token = ""
            while True:
                page = call(
                    stub.ListApiKeys,
                    apb.ListApiKeysRequest(
                        page_size=_PAGE_SIZE, page_token=token, include_revoked=options.include_revoked
                    ),
                    metadata=metadata,
                    timeout=30,
                )
                for key in page.keys:
                    _print_key(_key_from_message(key), options.json)
                token = page.next_page_token
                if not token:
                    break
        elif command == "audit":
            shown, token = 0, ""
            while shown < options.limit:
                page = call(
                    stub.ListAuditEvents,
                    apb.ListAuditEventsRequest(page_size=min(_PAGE_SIZE, options.limit - shown), page_token=token),
                    metadata=metadata,
                    timeout=30,
                )
                for event in page.events:
                    _print_event(event, event.time.ToJsonString(), options.json)
                shown += len(page.events)
                token = page.next_page_token
                if not token or not page.events:
                    break
    except grpc.RpcError as error:
        print(f"loyalty keys: {error.code().name}: {error.details()}", file=sys.stderr)
        unknown = error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
        if unknown and command in ("create", "rotate", "revoke"):
            print(f"loyalty keys: the outcome is unknown; repeat with --request-id {options.request_id}",
                  file=sys.stderr)
        return 1
    finally:
        channel.close()
    return 0


def _print_secret(key: dict, secret: str, as_json: bool) -> None:
    if as_json:
        print(json.dumps({**key, "secret": secret}, sort_keys=True))
        return
    _print_key(key, False)
    print(secret)
    print("# the line above is the secret: it is shown once and stored nowhere", file=sys.stderr)


def _print_event(event, time_text: str, as_json: bool) -> None:
    """One audit event (an AuditEvent message or the stored struct: same field names)."""
    actor = f"{event.actor_name} ({event.actor_key_id})"
    if as_json:
        print(json.dumps({
            "event_id": event.event_id, "time": time_text, "actor": actor, "action": event.action,
            "target": event.target, "before": event.before_json, "after": event.after_json,
        }, sort_keys=True))
        return
    print("\t".join([time_text, actor, event.action, event.target]))


# ---------------------------------------------------------------- straight to Redis


async def _direct(options: argparse.Namespace) -> int:
    import redis.asyncio as aioredis

    from loyalty.server.admin.keys import KeyAdministration
    from loyalty.server.errors import KeyRevoked, LoyaltyServerError
    from loyalty.server.security.caller import Caller
    from loyalty.server.stores.audit import AuditLog
    from loyalty.server.stores.keys import KeyRecords

    client = aioredis.Redis.from_url(options.redis_url, socket_timeout=10.0, socket_connect_timeout=10.0)
    keys = KeyAdministration(
        KeyRecords(client, key_prefix=options.key_prefix), AuditLog(client, key_prefix=options.key_prefix)
    )
    command = options.keys_command
    # Changes made here bypass every server: the audit log names the command line.
    actor = Caller(key_id="cli", name=f"loyalty keys ({os.environ.get('USER', 'unknown')})", role="admin")
    try:
        if command == "create":
            change = await keys.create(
                name=options.name, role=options.role, channels=options.channel, store_ids=options.store, actor=actor
            )
            _print_secret(_key_from_record(change.after), change.secret, options.json)
        elif command == "rotate":
            change = await keys.rotate(options.key_id, actor=actor)
            _print_secret(_key_from_record(change.after), change.secret, options.json)
        elif command == "revoke":
            change = await keys.revoke(options.key_id, actor=actor)
            _print_key(_key_from_record(change.after), options.json)
        elif command == "list":
            token = ""
            while True:
                records, token = await keys.keys(
                    page_size=_PAGE_SIZE, page_token=token, include_revoked=options.include_revoked
                )
                for record in records:
                    _print_key(_key_from_record(record), options.json)
                if not token:
                    break
        elif command == "audit":
            shown, token = 0, ""
            while shown < options.limit:
                events, token = await keys.audit_events(
                    page_size=min(_PAGE_SIZE, options.limit - shown), page_token=token
                )
                for event in events:
                    _print_event(
                        event, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(event.time_ms / 1000)), options.json
                    )
                shown += len(events)
                if not token or not events:
                    break
    except KeyRevoked:
        print(f"loyalty keys: {options.key_id} is revoked; create a new key instead", file=sys.stderr)
        return 1
    except LoyaltyServerError as error:  # no such key, a malformed id, Redis unavailable, ...
        print(f"loyalty keys: {error.message}", file=sys.stderr)
        return 1
    finally:
        await client.aclose()
    return 0
