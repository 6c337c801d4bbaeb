"""The checker that can see loss: after the faults heal, it asks the server about
every operation the clients sent and every member they enrolled, replays every shard
journal in a fresh process, and counts in the ChaosReport what was lost, applied
twice, or otherwise wrong.

``replay_balances`` rebuilds every member's balance from the snapshots and journals
alone; ``python -m loyalty.server.chaos.run replay`` runs it and prints them as JSON.
"""

from __future__ import annotations

import collections
import concurrent.futures
import json
import subprocess
import sys
import time

import grpc
import redis

from loyalty.actors.ledger import codec
from loyalty.actors.ledger.core import ShardCore
from loyalty.actors.ledger.ledger import balance_of
from loyalty.actors.ledger.program import CompiledProgram, Program
from loyalty.actors.shard.journal import ShardJournal
from loyalty.server.chaos.report import ChaosReport
from loyalty.server.chaos.workload import (
    BALANCE_FIELDS, CALL_TIMEOUT_S, RECOVERY_DEADLINE_S, RPCS, UNKNOWN_CODES, Connection, History, OpRecord,
    call_until_answered,
)
from loyalty.v1 import loyalty_pb2 as pb

# Threads the checker uses to ask the server about operations.
CHECKER_THREADS = 8


def _identity_holds(terms: dict[str, int]) -> bool:
    return terms["lifetime_earned"] + terms["adjusted_in"] + terms["debt"] == (
        terms["available"] + terms["pending"] + terms["reserved"] + terms["redeemed"]
        + terms["expired"] + terms["reversed"] + terms["adjusted_out"]
    )


def _parallel(function, items) -> list:
    with concurrent.futures.ThreadPoolExecutor(CHECKER_THREADS) as pool:
        return list(pool.map(function, items))


_UNRESOLVED = object()
"""What the checker's GetOperation returns when the server never answered it."""


def check(report: ChaosReport, history: History, connection: Connection, *,
          redis_url: str, key_prefix: str) -> None:
    """Ask the healed server (through ``connection``) about everything in ``history``;
    replay the journals under ``key_prefix`` in a fresh process; count every
    discrepancy in ``report``."""
    stub = connection.stub
    members = sorted(set(history.members))
    report.members = len(members)

    def get_operation(op: OpRecord):
        request = pb.GetOperationRequest(member_id=op.member_id, request_id=op.request_id)
        try:
            return call_until_answered(lambda: stub.GetOperation(request, timeout=CALL_TIMEOUT_S))
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return None
            if error.code() in UNKNOWN_CODES:
                return _UNRESOLVED  # no answer even after RECOVERY_DEADLINE_S
            raise

    operations = _parallel(get_operation, history.ops)
    applied_ok: dict[tuple[str, str], OpRecord] = {}
    not_applied: set[tuple[str, str]] = set()
    for op, stored in zip(history.ops, operations, strict=True):
        key = (op.member_id, op.request_id)
        if stored is _UNRESOLVED:
            report.unknown_unresolved += 1
            report.note(f"unresolved: GetOperation of {op.kind} {op.request_id} never answered")
            continue
        stored_ok = stored is not None and stored.status.code == 0
        if op.result in ("ok", "failed"):
            if op.result == "ok":
                report.acknowledged_ok += 1
            else:
                report.acknowledged_failed += 1
            if stored is None:
                report.lost += 1
                label = op.request_id if op.request_id.startswith(op.member_id) else (
                    f"{op.member_id}/{op.request_id}")
                report.note(f"lost: {op.kind} {label} was acknowledged ({op.code}), "
                            "GetOperation says OPERATION_NOT_FOUND")
                continue
            if not _same_outcome(op, stored):
                report.changed_outcomes += 1
                report.note(f"changed: {op.kind} {op.request_id} answered {op.code}, stored "
                            f"status {stored.status.code}")
        elif op.result == "unknown":
            report.unknown += 1
            if stored is None:
                report.unknown_not_applied += 1
            else:
                report.unknown_applied += 1
        else:
            report.refused += 1
            report.refused_codes[op.code] = report.refused_codes.get(op.code, 0) + 1
            if stored is not None:
                report.refused_but_applied += 1
                report.note(f"refused but applied: {op.kind} {op.request_id} ({op.code})")
        if stored_ok:
            applied_ok[key] = op
        elif stored is None:
            not_applied.add(key)

    def history_of(member_id: str) -> list[pb.Transaction]:
        entries: list[pb.Transaction] = []
        token = ""
        for _page in range(100):
            request = pb.ListTransactionsRequest(member_id=member_id, page_size=500, page_token=token)
            try:
                page = call_until_answered(lambda: stub.ListTransactions(request, timeout=CALL_TIMEOUT_S))
            except grpc.RpcError as error:
                if error.code() == grpc.StatusCode.NOT_FOUND:  # the member itself was lost
                    return entries
                raise
            entries.extend(page.transactions)
            token = page.next_page_token
            if not token:
                break
        return entries

    def balance_of_member(member_id: str) -> pb.Balance | None:
        request = pb.GetBalanceRequest(member_id=member_id)
        try:
            return call_until_answered(lambda: stub.GetBalance(request, timeout=CALL_TIMEOUT_S))
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:  # the member itself was lost
                return None
            raise

    histories = dict(zip(members, _parallel(history_of, members), strict=True))
    live = {
        member_id: {name: getattr(balance, name) for name in BALANCE_FIELDS}
        for member_id, balance in zip(members, _parallel(balance_of_member, members), strict=True)
        if balance is not None
    }

    listed: collections.Counter[tuple[str, str]] = collections.Counter()
    for member_id, entries in histories.items():
        for entry in entries:
            if entry.request_id:
                listed[(member_id, entry.request_id)] += 1
        if member_id in live and len(entries) < 100:  # the whole history is kept: it must add up
            terms = live[member_id]
            if sum(entry.points for entry in entries) != (
                terms["available"] + terms["pending"] + terms["reserved"] - terms["debt"]
            ):
                report.history_sum_mismatches += 1
                report.note(f"history of {member_id} does not add up to its balance")
    for key, op in applied_ok.items():
        count = listed.get(key, 0)
        if count == 0 and op.result == "ok":
            # Known to GetOperation but missing from the history: still lost.
            report.lost += 1
            report.note(f"lost: {op.kind} {op.request_id} not in ListTransactions")
        elif count > 1:
            report.applied_twice += 1
            report.note(f"applied twice: {op.kind} {op.request_id} listed {count} times")
    for key, count in listed.items():
        if key not in applied_ok:
            report.phantom += 1
            report.note(f"phantom: {key[1]} of {key[0]} is listed but was not applied")

    report.reads = len(history.reads)
    for member_id, terms in history.reads:
        values = dict(zip(BALANCE_FIELDS, terms, strict=True))
        if values["available"] < 0:
            report.negative_reads += 1
            report.note(f"negative available {values['available']} read for {member_id}")
        if not _identity_holds(values):
            report.conservation_violations += 1
            report.note(f"conservation broken in a read of {member_id}: {values}")

    totals = dict.fromkeys(BALANCE_FIELDS, 0)
    for member_id, terms in live.items():
        if terms["available"] < 0:
            report.negative_reads += 1
        if not _identity_holds(terms):
            report.conservation_violations += 1
            report.note(f"conservation broken for {member_id}: {terms}")
        for name in BALANCE_FIELDS:
            totals[name] += terms[name]
    report.totals = totals
    if not _identity_holds(totals):
        report.conservation_violations += 1
        report.note(f"conservation broken in total: {totals}")

    replayed = replay_in_fresh_process(redis_url, key_prefix, report.settings.shards)
    for member_id in sorted(set(replayed) | set(live)):
        if replayed.get(member_id) != live.get(member_id):
            report.replay_mismatches += 1
            report.note(f"replay of {member_id}: {replayed.get(member_id)} != live {live.get(member_id)}")


def _same_outcome(op: OpRecord, stored: pb.Operation) -> bool:
    """Whether GetOperation's stored outcome is the answer the client was given."""
    if op.result == "failed":
        given = op.response
        if given is None:
            return stored.status.code != 0
        return (stored.status.code, stored.status.message) == (given.code, given.message) and list(
            stored.status.details) == list(given.details)
    if stored.status.code != 0:
        return False
    if op.response is None:
        return True
    return getattr(stored, RPCS[op.kind][1]) == op.response


def replay_balances(redis_url: str, key_prefix: str, shard_count: int,
                    program: Program = Program()) -> dict[str, dict[str, int]]:
    """Every member's balance rebuilt from the shards' snapshots and journals alone."""
    client = redis.Redis.from_url(redis_url)
    balances: dict[str, dict[str, int]] = {}
    try:
        for shard in range(shard_count):
            journal = ShardJournal(client, shard, key_prefix=key_prefix)
            core = ShardCore(CompiledProgram(program))
            snapshot = journal.load_snapshot()
            if snapshot is not None:
                core.load_snapshot(snapshot[1])
            for _seq, payload in journal.read_after(core.seq):
                core.replay(codec.decode_record(payload))
            now_ms = max(core.now_ms, time.time_ns() // 1_000_000)
            for member_id, member in core.ledger.members.items():
                view = balance_of(member, now_ms)
                balances[member_id] = {name: getattr(view, name) for name in BALANCE_FIELDS}
    finally:
        client.close()
    return balances


def replay_in_fresh_process(redis_url: str, key_prefix: str, shard_count: int) -> dict[str, dict[str, int]]:
    """:func:`replay_balances` in a new Python process, so nothing in this one (a
    cached state, an imported module's globals) can leak into the answer."""
    completed = subprocess.run(
        [sys.executable, "-m", "loyalty.server.chaos.run", "replay", "--redis-url", redis_url,
         "--key-prefix", key_prefix, "--shards", str(shard_count)],
        capture_output=True, text=True, timeout=RECOVERY_DEADLINE_S, check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"journal replay failed ({completed.returncode}):\n{completed.stderr[-2000:]}")
    return json.loads(completed.stdout)
