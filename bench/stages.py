"""Per-operation cost of each stage of a Batch of earns, in one process.

No Ray, Redis or network: parse the BatchRequest, validate into commands, encode and
decode the shard payload, apply in the ledger core, encode and decode outcomes, build
the protobuf responses, serialize. Reports microseconds per operation for each stage
(best of several rounds, so a busy machine inflates it less).

    python bench/stages.py [--operations 10000] [--members 1000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import time

from loyalty.actors.ledger import CompiledProgram, Program, ShardCore, codec
from loyalty.actors.ledger import commands as c
from loyalty.server import requests, responses
from loyalty.v1 import loyalty_pb2 as pb


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


def measure(operations: int, members: int, rounds: int) -> dict[str, float]:
    core = ShardCore(CompiledProgram(Program()))
    core.apply_batch([c.EnrollMember(f"member-{i}", "enroll") for i in range(members)], 1_000)
    best: dict[str, float] = {}
    for round_number in range(rounds):
        wire = build_request(operations, members, round_number)
        marks = [("start", time.perf_counter())]
        request = pb.BatchRequest.FromString(wire)
        marks.append(("parse request", time.perf_counter()))
        commands = [requests.batch_item(i, item) for i, item in enumerate(request.items)]
        marks.append(("validate into commands", time.perf_counter()))
        payload = codec.decode_commands(codec.encode_commands(commands))
        marks.append(("command codec", time.perf_counter()))
        outcomes, record = core.apply_batch(payload, 2_000 + round_number)
        marks.append(("ledger core", time.perf_counter()))
        codec.encode_record(record)
        marks.append(("journal record encode", time.perf_counter()))
        decoded = codec.decode_outcomes(codec.encode_outcomes(outcomes))
        marks.append(("outcome codec", time.perf_counter()))
        response = pb.BatchResponse()
        for outcome in decoded:
            responses.fill_batch_result(response.results.add(), outcome)
        marks.append(("build responses", time.perf_counter()))
        response.SerializeToString()
        marks.append(("serialize response", time.perf_counter()))
        for (_, before), (name, after) in zip(marks, marks[1:]):
            cost = (after - before) * 1e6 / operations
            best[name] = min(best.get(name, cost), cost)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--operations", type=int, default=10_000)
    parser.add_argument("--members", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=5)
    options = parser.parse_args()
    best = measure(options.operations, options.members, options.rounds)
    width = max(len(name) for name in best)
    for name, cost in best.items():
        print(f"{name:<{width}}  {cost:7.2f} us/op")
    print(f"{'total':<{width}}  {sum(best.values()):7.2f} us/op")


if __name__ == "__main__":
    main()
