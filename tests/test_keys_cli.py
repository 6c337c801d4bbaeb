"""``loyalty keys ...`` against a running server, and straight to Redis."""

from __future__ import annotations

import json
import time

import grpc
import pytest

from loyalty.server.cli import main as cli
from loyalty.server.runtime.embedded_redis import free_port
from loyalty.server.stores.keys import hash_secret
from loyalty.server.security.config import load_security_config
from loyalty.v1 import loyalty_pb2 as pb
from loyalty.v1 import loyalty_pb2_grpc


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(["keys", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _answer(target: str, secret: str | None) -> grpc.StatusCode:
    metadata = (("authorization", f"Bearer {secret}"),) if secret else ()
    with grpc.insecure_channel(target) as channel:
        try:
            loyalty_pb2_grpc.LoyaltyServiceStub(channel).GetBalance(
                pb.GetBalanceRequest(member_id="nobody"), metadata=metadata, timeout=10
            )
        except grpc.RpcError as error:
            return error.code()
    return grpc.StatusCode.OK


def test_generate_prints_a_secret_and_a_config_entry_holding_only_its_hash(capsys):
    code, out, _ = _run(capsys, "generate", "--name", "ops")
    assert code == 0
    secret, entry = out.split("\n", 1)
    assert secret.startswith("lk_") and secret not in entry
    (seed,) = load_security_config(entry.encode()).api_keys
    assert (seed.name, seed.role, seed.secret_sha256) == ("ops", "admin", hash_secret(secret))


def test_create_list_rotate_revoke_and_audit_through_the_server(secured_server, capsys):
    target = ["--target", secured_server.target, "--api-key", secured_server.secrets["admin"]]
    code, out, _ = _run(
        capsys, "create", "--name", "till-7", "--role", "pos", "--store", "berlin-1", "--json", *target
    )
    assert code == 0
    created = json.loads(out)
    assert (created["role"], created["store_ids"]) == ("pos", ["berlin-1"])
    assert _answer(secured_server.target, created["secret"]) == grpc.StatusCode.NOT_FOUND  # served

    code, out, _ = _run(capsys, "list", *target)
    assert code == 0 and created["key_id"] in out and created["secret"] not in out

    code, out, _ = _run(capsys, "rotate", created["key_id"], "--json", *target)
    rotated = json.loads(out)
    assert code == 0 and rotated["secret"] != created["secret"]
    assert _answer(secured_server.target, created["secret"]) == grpc.StatusCode.UNAUTHENTICATED
    assert _answer(secured_server.target, rotated["secret"]) == grpc.StatusCode.NOT_FOUND

    code, out, _ = _run(capsys, "revoke", created["key_id"], *target)
    assert code == 0 and "revoked" in out
    assert _answer(secured_server.target, rotated["secret"]) == grpc.StatusCode.UNAUTHENTICATED
    code, out, _ = _run(capsys, "list", *target)
    assert created["key_id"] not in out
    code, out, _ = _run(capsys, "list", "--include-revoked", *target)
    assert created["key_id"] in out

    code, out, _ = _run(capsys, "audit", "--limit", "3", "--json", *target)
    events = [json.loads(line) for line in out.splitlines()]
    assert [event["action"] for event in events] == ["RevokeApiKey", "RotateApiKey", "CreateApiKey"]
    assert all(event["target"] == f"key/{created['key_id']}" for event in events)
    assert created["secret"] not in out and rotated["secret"] not in out


def test_without_an_admin_key_the_cli_is_refused(secured_server, capsys):
    code, _, err = _run(capsys, "list", "--target", secured_server.target)
    assert code == 1 and "UNAUTHENTICATED" in err
    code, _, err = _run(
        capsys, "create", "--name", "x", "--role", "admin", "--target", secured_server.target,
        "--api-key", secured_server.secrets["pos"],
    )  # fmt: skip
    assert code == 1 and "PERMISSION_DENIED" in err


def test_a_key_written_straight_to_redis_works_on_the_running_server_at_once(secured_server, capsys):
    direct = ["--redis-url", secured_server.redis_url, "--key-prefix", secured_server.key_prefix]
    code, out, _ = _run(capsys, "create", "--name", "bootstrap", "--role", "admin", "--json", *direct)
    assert code == 0
    created = json.loads(out)
    deadline = time.monotonic() + 10  # the server hears of it through Redis pub/sub
    while _answer(secured_server.target, created["secret"]) != grpc.StatusCode.NOT_FOUND:
        assert time.monotonic() < deadline, "the server never accepted the new key"
    code, out, _ = _run(capsys, "revoke", created["key_id"], *direct)
    assert code == 0
    while _answer(secured_server.target, created["secret"]) != grpc.StatusCode.UNAUTHENTICATED:
        assert time.monotonic() < deadline, "the server still accepts the revoked key"
    code, out, _ = _run(capsys, "audit", "--json", *direct)
    actions = [(e["action"], e["actor"]) for e in map(json.loads, out.splitlines())][:2]
    assert [action for action, _ in actions] == ["RevokeApiKey", "CreateApiKey"]
    assert all("(cli)" in actor for _, actor in actions)
    code, _, err = _run(capsys, "rotate", "key_0000000000000000", *direct)
    assert code == 1 and "no API key" in err


def test_bad_flags_are_refused_before_anything_happens(capsys):
    code, _, err = _run(capsys, "create", "--name", "", "--role", "pos", "--redis-url", "redis://127.0.0.1:1")
    assert code == 2 and "--name" in err
    with pytest.raises(SystemExit):
        cli.main(["keys", "create", "--name", "x", "--role", "root"])


def test_the_first_key_made_on_an_open_loopback_server_turns_authentication_on(loyalty_server, capsys):
    """Bootstrap without a config file: on loopback with no keys anyone is admin, so
    `loyalty keys create` needs no key; from then on every call needs one."""
    assert _answer(loyalty_server.target, None) == grpc.StatusCode.NOT_FOUND
    code, out, _ = _run(capsys, "create", "--name", "first-admin", "--role", "admin", "--json",
                        "--target", loyalty_server.target)  # fmt: skip
    assert code == 0
    secret = json.loads(out)["secret"]
    assert _answer(loyalty_server.target, None) == grpc.StatusCode.UNAUTHENTICATED
    assert _answer(loyalty_server.target, secret) == grpc.StatusCode.NOT_FOUND


def test_straight_to_an_unreachable_redis_every_subcommand_says_the_key_store_is_unavailable(capsys):
    direct = ["--redis-url", f"redis://127.0.0.1:{free_port()}"]
    for argv in (["create", "--name", "till", "--role", "pos"], ["list"], ["rotate", "key_0123456789abcdef"],
                 ["revoke", "key_0123456789abcdef"], ["audit"]):  # fmt: skip
        code, out, err = _run(capsys, *argv, *direct)
        assert code == 1 and out == "", argv
        assert "the key store is unavailable" in err, (argv, err)
