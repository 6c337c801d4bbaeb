"""Per-operation cost of each stage of a Batch of earns, in one process.

No Ray, Redis or network: parse the BatchRequest, validate into commands, encode and
decode the shard payload, apply in the ledger core, encode and decode outcomes, build
the protobuf responses, serialize. Reports microseconds per operation for each stage
(best of several rounds, so a busy machine inflates it less).

Then the gateway's whole part of a Batch call: ``LoyaltyService.Batch`` over a router
of --shards batchers whose shards answer at once with outcomes computed beforehand.
It covers the gateway's stages above (validate, encode commands, decode outcomes,
build responses) plus routing items to shards, queueing and awaiting; what it costs
beyond those stages, timed alone on the same request, is that overhead. The
difference of two small numbers is noisy on a busy machine (it can even come out
below 0); --gc off gives the steadiest figure.

With --gc gateway the cyclic GC runs as in a gateway process (see tune_gc) instead of
with Python's defaults: in this process the ledger core's state makes every full
collection far costlier than in a gateway, and the defaults run one every 70,000
allocations, so which stage a full collection lands in varies from run to run.

    python bench/stages.py [--operations 10000] [--members 1000] [--rounds 5] [--shards 2]
                           [--gc default|gateway|off]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time

from loyalty.actors.ledger import CompiledProgram, Program, ShardCore, codec
from loyalty.actors.ledger import commands as c
from loyalty.server.gateway import batcher
from loyalty.server.gateway import requests
from loyalty.server.gateway import responses
from loyalty.actors.gc_tuning import tune_gc
from loyalty.server.limits import SHARD_CALL_OPERATIONS_MAX, SHARD_QUEUE_OPERATIONS_MAX
from loyalty.server.gateway.servicer import LoyaltyService
from loyalty.server.gateway.router import ShardRouter, classify_shard_error
from loyalty.v1 import loyalty_pb2 as pb

WHOLE_CALL = "gateway: whole Batch call"
OVERHEAD = "  of which routing and awaiting"


def build_request(operations: int, members: int, round_number: int) -> bytes:
    items = [
        pb.BatchItem(
            earn=pb.EarnRequest(
                member_id=f"member-{i % members}",
                request_id=f"round-{round_number}-{i}",
                purchase=pb.Purchase(
                    channel="pos",
                    store_id="store-1",
                    currency="EUR",
                    lines=[
                        pb.PurchaseLine(sku=f"sku-{j}", category="food", quantity=1 + j, amount_minor=999 + 37 * j)
                        for j in range(1 + i % 4)
                    ],
                ),
            )
        )
        for i in range(operations)
    ]
    return pb.BatchRequest(items=items).SerializeToString()


def enrolled_core(members: int, gc_mode: str) -> ShardCore:
    core = ShardCore(CompiledProgram(Program()))
    core.apply_batch([c.EnrollMember(f"member-{i}", "enroll") for i in range(members)], 1_000)
    GC_MODES[gc_mode]()
    return core


GC_MODES = {"default": lambda: None, "gateway": tune_gc, "off": gc.disable}
"""How the cyclic GC runs while stages are measured (set after the members enrol)."""


def measure(operations: int, members: int, rounds: int, gc_mode: str) -> dict[str, float]:
    core = enrolled_core(members, gc_mode)
    best: dict[str, float] = {}
    for round_number in range(rounds):
        wire = build_request(operations, members, round_number)
        marks = [("start", time.perf_counter())]
        request = pb.BatchRequest.FromString(wire)
        marks.append(("parse request", time.perf_counter()))
        commands, _, _ = requests.batch_items(request.items)
        marks.append(("validate into commands", time.perf_counter()))
        payload = codec.decode_commands(codec.encode_commands(commands))
        marks.append(("command codec", time.perf_counter()))
        outcomes, record = core.apply_batch(payload, 2_000 + round_number)
        marks.append(("ledger core", time.perf_counter()))
        codec.encode_record(record)
        marks.append(("journal record encode", time.perf_counter()))
        decoded = batcher.decode_outcomes(codec.encode_outcomes(outcomes))
        marks.append(("outcome codec", time.perf_counter()))
        response = responses.batch_response(decoded)
        marks.append(("build responses", time.perf_counter()))
        response.SerializeToString()
        marks.append(("serialize response", time.perf_counter()))
        for (_, before), (name, after) in zip(marks, marks[1:]):
            cost = (after - before) * 1e6 / operations
            best[name] = min(best.get(name, cost), cost)
    return best


def measure_whole_call(
    operations: int, members: int, rounds: int, shards: int, gc_mode: str
) -> tuple[float, float]:
    """Best microseconds per operation of LoyaltyService.Batch with instant shards, and
    of the gateway's stages alone on the same request (validate, encode the commands,
    decode the shards' answers, build the response)."""
    core = enrolled_core(members, gc_mode)
    answers: dict[bytes, bytes] = {}  # a shard call's payload -> the core's answer

    async def shard_call(payload: bytes) -> bytes:
        answer = answers.get(payload)
        if answer is None:
            outcomes, _ = core.apply_batch(codec.decode_commands(payload), 2_000)
            answer = answers[payload] = codec.encode_outcomes(outcomes)
        return answer

    router = ShardRouter(
        [
            batcher.ShardBatcher(
                shard_call,
                classify_error=classify_shard_error,
                queue_operations_max=SHARD_QUEUE_OPERATIONS_MAX,
                call_operations_max=SHARD_CALL_OPERATIONS_MAX,
            )
            for _ in range(shards)
        ]
    )
    service = LoyaltyService(router)
    wire = build_request(operations, members, 0)

    def stages_alone(request: pb.BatchRequest) -> None:
        commands, _, _ = requests.batch_items(request.items)
        codec.encode_commands(commands)
        decoded = [outcome for answer in answers.values() for outcome in batcher.decode_outcomes(answer)]
        responses.batch_response(decoded)

    async def run() -> tuple[float, float]:
        await service.Batch(pb.BatchRequest.FromString(wire), None)  # the shards learn their answers
        whole = parts = float("inf")
        for _ in range(rounds):
            request = pb.BatchRequest.FromString(wire)
            start = time.perf_counter()
            await service.Batch(request, None)
            whole = min(whole, (time.perf_counter() - start) * 1e6 / operations)
            request = pb.BatchRequest.FromString(wire)
            start = time.perf_counter()
            stages_alone(request)
            parts = min(parts, (time.perf_counter() - start) * 1e6 / operations)
        return whole, parts

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--operations", type=int, default=10_000)
    parser.add_argument("--members", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--shards", type=int, default=2, help="shards behind the whole Batch call")
    parser.add_argument("--gc", choices=sorted(GC_MODES), default="default", help="cyclic GC while measuring")
    options = parser.parse_args()
    best = measure(options.operations, options.members, options.rounds, options.gc)
    whole, parts = measure_whole_call(options.operations, options.members, options.rounds, options.shards, options.gc)
    width = max(len(name) for name in (*best, WHOLE_CALL, OVERHEAD))
    for name, cost in best.items():
        print(f"{name:<{width}}  {cost:7.2f} us/op")
    print(f"{'total':<{width}}  {sum(best.values()):7.2f} us/op")
    print()
    print(f"{WHOLE_CALL:<{width}}  {whole:7.2f} us/op ({options.shards} shards answering at once)")
    print(f"{OVERHEAD:<{width}}  {whole - parts:7.2f} us/op (beyond its stages alone: {parts:.2f} us/op)")


if __name__ == "__main__":
    main()
