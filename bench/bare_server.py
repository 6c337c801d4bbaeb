"""A do-nothing loyalty.v1.LoyaltyService: the baseline for throughput ratios.

Same transport as the real gateway (grpc.aio on uvloop, same message-size limits),
no validation, no routing, no storage:

* Earn returns one constant EarnResponse (shaped like a real one: points, balance,
  timestamps, one line), built once at start-up;
* Batch returns one empty OK BatchResult per item;
* every other RPC is left unimplemented (UNIMPLEMENTED).

Usage: python bench/bare_server.py --port 50100 [--host 127.0.0.1]
Prints "ready" on stdout once it listens; SIGTERM or SIGINT stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

import grpc
import uvloop
from google.protobuf import timestamp_pb2
from google.rpc import status_pb2

from loyalty.v1 import loyalty_pb2 as pb
from loyalty.v1 import loyalty_pb2_grpc as pb_grpc

# The same limit the real gateway uses (server/limits.py MESSAGE_BYTES_MAX), so a
# 10,000-item Batch fits in both.
MESSAGE_BYTES_MAX = 16 * 1024 * 1024


def _constant_earn_response() -> pb.EarnResponse:
    now = timestamp_pb2.Timestamp(seconds=1_800_000_000)
    later = timestamp_pb2.Timestamp(seconds=1_831_536_000)
    return pb.EarnResponse(
        points=12,
        balance=pb.Balance(
            available=12,
            lifetime_earned=12,
            next_expirations=[pb.PointsExpiration(points=12, expires_at=later)],
        ),
        available_at=now,
        expires_at=later,
        lines=[pb.LinePoints(sku="SKU-00001", points=12)],
    )


class BareLoyaltyService(pb_grpc.LoyaltyServiceServicer):
    """Answers Earn and Batch without doing anything."""

    def __init__(self) -> None:
        self._earn = _constant_earn_response()
        self._ok = pb.BatchResult(status=status_pb2.Status())

    async def Earn(self, request, context):
        return self._earn

    async def Batch(self, request, context):
        return pb.BatchResponse(results=[self._ok] * len(request.items))


async def _serve(host: str, port: int) -> None:
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", MESSAGE_BYTES_MAX),
            ("grpc.max_send_message_length", MESSAGE_BYTES_MAX),
        ]
    )
    pb_grpc.add_LoyaltyServiceServicer_to_server(BareLoyaltyService(), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise SystemExit(f"bare_server: cannot listen on {host}:{port}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(f"bare_server: listening on {host}:{bound}", flush=True)
    print("ready", flush=True)
    await stop.wait()
    await server.stop(1.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, required=True, help="gRPC port")
    options = parser.parse_args(argv)
    uvloop.run(_serve(options.host, options.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
