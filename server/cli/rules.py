"""``loyalty rules ...``: check a rules file, make it the live set, list the live rules.

``validate`` works offline: it reads the file's ``[[rules]]`` (and ``[program]``, which
the rules are checked against) and prints every problem with its line. ``apply`` checks
the file the same way, then sends it to a running server as one ReplaceRules (one new
rule-set version, or none when the live set is already the file's). ``list`` prints
the live rules. ``apply`` and ``list`` use an admin key from ``--api-key`` or
``$LOYALTY_API_KEY`` (none is needed while the server has no keys, on loopback).

Exit codes: 0 done, 1 the file or the server refused the rules, 2 usage or connection
problems.

Calls answered UNAVAILABLE, DEADLINE_EXCEEDED or RESOURCE_EXHAUSTED are retried a few
times (``CLI_RETRY_DELAYS_S``). ``apply`` sends its ReplaceRules with one request_id
per invocation (``--request-id`` to choose it), so a retry, or the same command
repeated by hand with the same ``--request-id``, answers the first outcome and never
makes a second version.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

from loyalty.actors.ledger.program import ProgramError, load_program
from loyalty.server.cli.connection import (
    add_connection_flags,
    add_request_id_flag,
    call,
    call_metadata,
    open_channel,
    request_id,
)

# How long one call to the server may take before the command gives up.
CALL_TIMEOUT_S = 30.0


def add_parser(subcommands) -> None:
    """Register ``rules`` and its subcommands."""
    parser = subcommands.add_parser(
        "rules",
        help="validate a rules file, apply it to a server, list the live rules",
        description="Earning rules: check a TOML rules file offline, make it the live "
        "rule set of a running server (one new version), or list the live rules.",
    )
    actions = parser.add_subparsers(dest="rules_command", required=True)


    validate = actions.add_parser("validate", help="check a rules file offline; every problem with its line")
    validate.add_argument("file", type=pathlib.Path)
    apply = actions.add_parser("apply", help="make a rules file the live rule set of a server")
    apply.add_argument("file", type=pathlib.Path)
    apply.add_argument("--expected-version", type=int, default=0,
                       help="refuse unless this is the live version (guards against concurrent changes)")
    add_connection_flags(apply)
    add_request_id_flag(apply)
    listing = actions.add_parser("list", help="print the live rules")
    add_connection_flags(listing)


def run(options: argparse.Namespace) -> int:
    """Run one ``loyalty rules`` subcommand; returns the exit code."""
    if options.rules_command == "validate":
        rules = _read_rules(options.file)
        if isinstance(rules, int):
            return rules
        print(f"{options.file}: {len(rules)} rules, valid")
        return 0
    if options.rules_command == "apply":
        rules = _read_rules(options.file)
        if isinstance(rules, int):
            return rules
        return _remote(options, rules)
    return _remote(options, None)


def _read_rules(path: pathlib.Path):
    """The file's rules, or an exit code after printing what is wrong."""
    from loyalty.actors.ledger.rules import RulesFileError, load_rules_toml

    try:
        data = path.read_bytes()
    except OSError as error:
        print(f"loyalty: {path}: {error.strerror or error}", file=sys.stderr)
        return 2
    try:
        program = load_program(data)
    except ProgramError as error:
        print(f"{path}: {error}", file=sys.stderr)
        return 1
    try:
        return load_rules_toml(data, program, source=str(path))
    except RulesFileError as error:
        print(str(error), file=sys.stderr)
        return 1


def config_rules(path: pathlib.Path):
    """The rules of ``loyalty serve --config``: None when the file has no ``rules``
    (the rules stored in Redis stay live), else its rules (possibly none: an empty
    ``rules = []`` clears the live set); or exit code 2 after printing the problems."""
    import tomllib

    from loyalty.actors.ledger.rules import RulesFileError, load_rules_toml

    try:
        data = path.read_bytes()
        if "rules" not in tomllib.loads(data.decode("utf-8")):
            return None
        return load_rules_toml(data, load_program(data), source=str(path))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, ProgramError) as error:
        print(f"loyalty: {path}: {error}", file=sys.stderr)
        return 2
    except RulesFileError as error:
        print(str(error), file=sys.stderr)
        return 2


def _remote(options: argparse.Namespace, rules) -> int:
    import grpc
    from loyalty.clients import error_details
    from loyalty.v1 import admin_pb2 as apb
    from loyalty.v1 import admin_pb2_grpc

    metadata = call_metadata(options)
    with open_channel(options) as channel:
        stub = admin_pb2_grpc.AdminServiceStub(channel)
        try:
            if rules is None:
                return _list(stub, apb, metadata)
            return _apply(stub, apb, metadata, rules, options)
        except grpc.RpcError as error:
            details = error_details(error)
            reason = f" {details.reason}" if details.reason else ""
            print(f"loyalty: {options.target}: {details.code.name}{reason}: {details.message}", file=sys.stderr)
            for field, description in details.field_violations:
                print(f"  {field}: {description}", file=sys.stderr)
            if rules is not None and details.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                print(f"loyalty: the outcome is unknown; repeat with --request-id {options.request_id}", file=sys.stderr)
            refused = details.code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.ABORTED)
            return 1 if refused else 2


def _apply(stub, apb, metadata, rules, options) -> int:
    from loyalty.server.admin.rules_proto import rule_to_proto

    before = call(stub.ListRules, apb.ListRulesRequest(page_size=1), metadata=metadata, timeout=CALL_TIMEOUT_S).version
    response = call(
        stub.ReplaceRules,
        apb.ReplaceRulesRequest(
            rules=[rule_to_proto(rule) for rule in rules],
            expected_version=options.expected_version,
            request_id=request_id(options),
        ),
        metadata=metadata,
        timeout=CALL_TIMEOUT_S,
    )
    if response.version == before:
        print(f"rules version {response.version}: unchanged ({len(response.rules)} rules)")
    else:
        print(f"rules version {response.version}: applied {len(response.rules)} rules from {options.file}")
    return 0


def _effect(rule) -> str:
    effect = rule.effect
    kind = effect.WhichOneof("kind")
    if kind is None:
        return "-"
    target = "basket" if effect.target == 2 else "lines"
    return f"{kind} {getattr(effect, kind)} on {target}"


def _list(stub, apb, metadata) -> int:
    rules, token, version = [], "", 0
    while True:
        response = call(
            stub.ListRules,
            apb.ListRulesRequest(page_size=500, page_token=token),
            metadata=metadata,
            timeout=CALL_TIMEOUT_S,
        )
        rules.extend(response.rules)
        version = response.version
        token = response.next_page_token
        if not token:
            break
    print(f"rules version {version}: {len(rules)} rules")
    if not rules:
        return 0
    rows = [("RULE_ID", "PRIORITY", "ENABLED", "EFFECT", "VERSION", "BUDGET_LEFT")]
    for rule in rules:
        budget = str(rule.budget_remaining) if rule.budget.total_points else "-"
        rows.append((rule.rule_id, str(rule.priority), "yes" if rule.enabled else "no", _effect(rule),
                     str(rule.version), budget))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0
