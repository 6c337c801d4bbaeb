"""Closed-loop load generator for loyalty.v1.LoyaltyService (grpc.aio on uvloop).

Modes:
  unary-earn               --concurrency N Earn calls in flight, one purchase each
  batch-earn --batch-size K  --concurrency N Batch calls in flight, K earn items each

First the member pool is enrolled (Batch of EnrollMember items); then worker
processes (--processes, default 2) each open --channels channels (separate TCP
connections) and keep their share of the --concurrency calls in flight. Each call
earns a 1-8 line basket for a member of the pool, with a request_id used nowhere
else (run id + process + sequence number), so every call is a new operation for the
server, never an idempotent replay.

Requests are pre-built as protobuf wire bytes before the clock starts (members,
baskets, whole Batch payloads); during the run a worker only stamps the unique
request_id into them (a bytes concatenation for Earn, a numpy scatter for Batch),
so the load generator spends its CPU on gRPC, not on building messages. Unary
responses are not decoded (the gRPC status says whether the call succeeded); Batch
responses are decoded and every item's status is checked.

The run is --warmup seconds (not counted) then --seconds measured. Throughput
counts successful operations (one per Earn call, K per Batch call minus failed
items): every call overlapping the window counts for the share of its duration that
lies inside the window, and after the window the load stays on until the calls that
straddle its end have finished. Latency is per call, for the calls that complete
inside the window. Progress goes to stderr once a second; --json prints the result
as one JSON object on stdout. The run stops by itself: no counted calls are started
after the window, and every call has a deadline (--call-timeout).

With --rate R the calls are paced at R calls/s in total (still at most
--concurrency in flight) instead of running flat out; latency is measured from the
moment each call is sent.

Only 127.0.0.1 targets are accepted.

Example:
  python bench/loadgen.py --target 127.0.0.1:50051 unary-earn --seconds 15
  python bench/loadgen.py --target 127.0.0.1:50051 batch-earn --batch-size 1000 --json
"""

from __future__ import annotations

import argparse
import array
import asyncio
import collections
import json
import math
import multiprocessing
import random
import secrets
import sys
import time

SERVICE = "/loyalty.v1.LoyaltyService/"
MESSAGE_BYTES_MAX = 64 * 1024 * 1024
ENROLL_CHUNK = 5_000
RETRY_BACKOFF_S = 0.01

# ------------------------------------------------------------------ wire format
#
# Field tags (field_number << 3 | 2, length-delimited) of the messages we build:
#   EarnRequest:  member_id = 1 (0x0A), request_id = 2 (0x12), purchase = 3 (0x1A)
#   BatchItem:    earn = 2 (0x12)
#   BatchRequest: items = 1 (0x0A)
# Protobuf parsers accept fields in any order, so an EarnRequest can be written as
# request_id first, then the pre-built member_id + purchase bytes.

TAG_MEMBER_ID = b"\x0a"
TAG_REQUEST_ID = b"\x12"
TAG_PURCHASE = b"\x1a"
TAG_BATCH_ITEM_EARN = b"\x12"
TAG_BATCH_ITEMS = b"\x0a"


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        bits = value & 0x7F
        value >>= 7
        if value:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


def field(tag: bytes, payload: bytes) -> bytes:
    return tag + varint(len(payload)) + payload


def member_ids(run_id: str, count: int) -> list[str]:
    return [f"{run_id}-m{index:06d}" for index in range(count)]


SKUS = [f"SKU-{index:05d}" for index in range(2_000)]
CATEGORIES = ["grocery", "fresh", "drinks", "household", "beauty", "toys", "garden"]


def baskets(rng: random.Random, count: int) -> list[bytes]:
    """Serialized Purchase messages with 1-8 lines each."""
    from loyalty.v1 import loyalty_pb2 as pb

    result = []
    for _ in range(count):
        lines = [
            pb.PurchaseLine(
                sku=rng.choice(SKUS),
                category=rng.choice(CATEGORIES),
                quantity=rng.randint(1, 3),
                amount_minor=rng.randint(50, 20_000),
            )
            for _ in range(rng.randint(1, 8))
        ]
        purchase = pb.Purchase(
            channel=rng.choice(("pos", "web", "app")),
            store_id=f"store-{rng.randrange(200):03d}",
            currency="EUR",
            lines=lines,
        )
        result.append(purchase.SerializeToString())
    return result


class EarnSource:
    """Unary Earn payloads: request_id field + a pre-built (member, basket) body."""

    def __init__(self, run_id: str, process: int, members: list[str], rng: random.Random) -> None:
        purchases = [field(TAG_PURCHASE, body) for body in baskets(rng, 512)]
        member_fields = [field(TAG_MEMBER_ID, m.encode()) for m in members]
        self._bodies = [rng.choice(member_fields) + rng.choice(purchases) for _ in range(8_192)]
        self._prefix = f"{run_id}-{process:02x}-"
        self._seq = 0
        self.ops_per_call = 1

    def next(self) -> bytes:
        seq = self._seq
        self._seq = seq + 1
        request_id = (self._prefix + format(seq, "x")).encode()
        body = self._bodies[seq % len(self._bodies)]
        return TAG_REQUEST_ID + bytes((len(request_id),)) + request_id + body


class BatchSource:
    """Batch payloads of K earn items, pre-built as templates.

    Every request_id in a template is "<run>-<process>-SSSSSSSS-<item>" with a fixed
    width; per call the 8 hex digits SSSSSSSS are overwritten with the call's
    sequence number at every item's offset (one numpy scatter), which makes all of
    the call's request_ids new.
    """

    SEQ_DIGITS = 8

    def __init__(
        self, run_id: str, process: int, members: list[str], rng: random.Random, batch_size: int
    ) -> None:
        import numpy as np

        self._np = np
        purchases = [field(TAG_PURCHASE, body) for body in baskets(rng, 512)]
        member_fields = [field(TAG_MEMBER_ID, m.encode()) for m in members]
        template_count = max(2, min(64, 65_536 // batch_size))
        placeholder = "0" * self.SEQ_DIGITS
        self._templates = []
        for _ in range(template_count):
            items = []
            seq_offsets = []
            position = 0
            for item in range(batch_size):
                prefix = f"{run_id}-{process:02x}-"
                request_id = f"{prefix}{placeholder}-{item:04x}".encode()
                earn = (
                    TAG_REQUEST_ID
                    + bytes((len(request_id),))
                    + request_id
                    + rng.choice(member_fields)
                    + rng.choice(purchases)
                )
                batch_item = field(TAG_BATCH_ITEM_EARN, earn)
                entry = field(TAG_BATCH_ITEMS, batch_item)
                # Offset of the sequence digits inside this entry: the two headers
                # (tag + length varint each), the request_id tag and length, the prefix.
                header = len(entry) - len(batch_item) + (len(batch_item) - len(earn))
                seq_offsets.append(position + header + 2 + len(prefix))
                items.append(entry)
                position += len(entry)
            template = np.frombuffer(b"".join(items), dtype=np.uint8).copy()
            offsets = np.asarray(seq_offsets, dtype=np.int64)[:, None] + np.arange(self.SEQ_DIGITS)
            self._templates.append((template, offsets))
        self._seq = 0
        self.ops_per_call = batch_size

    def next(self) -> bytes:
        np = self._np
        seq = self._seq
        self._seq = seq + 1
        template, offsets = self._templates[seq % len(self._templates)]
        payload = template.copy()
        digits = np.frombuffer(format(seq, "08x").encode(), dtype=np.uint8)
        payload[offsets] = digits
        return payload.tobytes()


def check_sources(run_id: str, members: list[str]) -> None:
    """Decode a few built payloads with the real stubs: ids unique, fields where expected."""
    from loyalty.v1 import loyalty_pb2 as pb

    rng = random.Random(1)
    unary = EarnSource(run_id, 0, members, rng)
    seen = set()
    for _ in range(3):
        request = pb.EarnRequest.FromString(unary.next())
        assert request.member_id in members and request.purchase.currency == "EUR", request
        assert 1 <= len(request.purchase.lines) <= 8 and request.request_id not in seen
        seen.add(request.request_id)
    batch = BatchSource(run_id, 0, members, rng, 3)
    for _ in range(3):
        request = pb.BatchRequest.FromString(batch.next())
        assert len(request.items) == 3
        for item in request.items:
            assert item.WhichOneof("operation") == "earn" and item.earn.member_id in members
            assert 1 <= len(item.earn.purchase.lines) <= 8
            assert item.earn.request_id not in seen, item.earn.request_id
            seen.add(item.earn.request_id)


# ------------------------------------------------------------------ enrolment


def enroll(target: str, run_id: str, members: list[str]) -> float:
    """Enroll the member pool with Batch calls; returns the seconds it took."""
    import grpc

    from loyalty.v1 import loyalty_pb2 as pb
    from loyalty.v1 import loyalty_pb2_grpc as pb_grpc

    started = time.monotonic()
    options = [("grpc.max_receive_message_length", MESSAGE_BYTES_MAX)]
    with grpc.insecure_channel(target, options=options) as channel:
        grpc.channel_ready_future(channel).result(timeout=30)
        stub = pb_grpc.LoyaltyServiceStub(channel)
        for start in range(0, len(members), ENROLL_CHUNK):
            chunk = members[start : start + ENROLL_CHUNK]
            request = pb.BatchRequest(
                items=[
                    pb.BatchItem(enroll_member=pb.EnrollMemberRequest(member_id=m, request_id=f"{m}-enroll"))
                    for m in chunk
                ]
            )
            response = stub.Batch(request, timeout=120)
            failed = [r.status for r in response.results if r.status.code != 0]
            if failed:
                raise SystemExit(f"loadgen: {len(failed)} enrolments failed, first: {failed[0]}")
    return time.monotonic() - started


# ------------------------------------------------------------------ worker process


class WindowStats:
    """What one worker process saw, counting only calls completed in the window."""

    def __init__(self) -> None:
        self.ops = 0
        """Successful operations of the calls that completed inside the window."""
        self.weighted_ops = 0.0
        """Successful operations of every call overlapping the window, each weighted
        by the share of its duration that lies inside the window."""
        self.calls = 0
        self.item_errors = 0
        self.call_errors: collections.Counter[str] = collections.Counter()
        self.latencies = array.array("d")


async def _run_worker(conf: dict, index: int, source, counters, t_start: float) -> dict:
    import grpc

    from loyalty.v1 import loyalty_pb2 as pb

    batch = conf["mode"] == "batch-earn"
    channels = [
        grpc.aio.insecure_channel(
            conf["target"],
            options=[
                ("grpc.max_receive_message_length", MESSAGE_BYTES_MAX),
                ("grpc.max_send_message_length", MESSAGE_BYTES_MAX),
                # One TCP connection per channel, not one shared by all of them.
                ("grpc.use_local_subchannel_pool", 1),
            ],
        )
        for _ in range(conf["channels"])
    ]
    await asyncio.gather(*(asyncio.wait_for(ch.channel_ready(), 30) for ch in channels))
    if batch:
        decode = pb.BatchResponse.FromString
        methods = [ch.unary_unary(SERVICE + "Batch", response_deserializer=decode) for ch in channels]
    else:  # the raw response bytes: success is the gRPC status
        methods = [ch.unary_unary(SERVICE + "Earn") for ch in channels]

    warm_end = t_start + conf["warmup"]
    t_end = warm_end + conf["seconds"]
    timeout = conf["call_timeout"]
    stats = WindowStats()
    totals = {"ops": 0, "errors": 0}
    ops_per_call = source.ops_per_call
    monotonic = time.monotonic
    concurrency = conf["concurrency_per_process"][index]
    rate = conf["rate_per_process"][index] if conf["rate_per_process"] else 0.0
    pacing = {"next": t_start}
    interval = 1.0 / rate if rate else 0.0

    # Calls sent before t_end and not finished yet. After t_end workers keep the
    # load on (with uncounted "tail" calls) until every one of these has finished,
    # so the calls that straddle the end of the window do not see an emptier server.
    open_calls = {"count": 0}

    async def worker(slot: int) -> None:
        method = methods[slot % len(methods)]
        while True:
            if interval:
                due = pacing["next"]
                pacing["next"] = due + interval
                delay = due - monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            sent = monotonic()
            tail = sent >= t_end
            if tail and open_calls["count"] == 0:
                return
            if not tail:
                open_calls["count"] += 1
            payload = source.next()
            try:
                response = await method(payload, timeout=timeout)
            except grpc.aio.AioRpcError as error:
                done = monotonic()
                if not tail:
                    open_calls["count"] -= 1
                totals["errors"] += 1
                if warm_end <= done < t_end:
                    stats.call_errors[error.code().name] += 1
                await asyncio.sleep(RETRY_BACKOFF_S)
                continue
            done = monotonic()
            if not tail:
                open_calls["count"] -= 1
            if batch:
                bad = 0
                for result in response.results:
                    if result.status.code:
                        bad += 1
                ok = ops_per_call - bad
            else:
                bad, ok = 0, 1
            totals["ops"] += ok
            totals["errors"] += bad
            if tail:
                continue
            overlap = min(done, t_end) - max(sent, warm_end)
            if overlap > 0:
                stats.weighted_ops += ok * overlap / max(done - sent, 1e-9)
            if warm_end <= done < t_end:
                stats.ops += ok
                stats.item_errors += bad
                stats.calls += 1
                stats.latencies.append(done - sent)

    async def publish() -> None:
        base = index * 2
        while True:
            counters[base] = totals["ops"]
            counters[base + 1] = totals["errors"]
            await asyncio.sleep(0.25)

    delay = t_start - monotonic()
    if delay > 0:
        await asyncio.sleep(delay)
    publisher = asyncio.create_task(publish())
    await asyncio.gather(*(worker(slot) for slot in range(concurrency)))
    publisher.cancel()
    counters[index * 2] = totals["ops"]
    counters[index * 2 + 1] = totals["errors"]
    await asyncio.gather(*(ch.close() for ch in channels))
    return {
        "ops": stats.ops,
        "weighted_ops": stats.weighted_ops,
        "calls": stats.calls,
        "item_errors": stats.item_errors,
        "call_errors": dict(stats.call_errors),
        "latencies": stats.latencies.tobytes(),
        "ops_total": totals["ops"],
    }


def _worker_main(conf: dict, index: int, conn, counters) -> None:
    """Entry point of one worker process (spawned)."""
    try:
        import uvloop

        rng = random.Random(conf["seed"] * 1000 + index)
        members = member_ids(conf["run_id"], conf["members"])
        built = time.monotonic()
        if conf["mode"] == "batch-earn":
            source = BatchSource(conf["run_id"], index, members, rng, conf["batch_size"])
        else:
            source = EarnSource(conf["run_id"], index, members, rng)
        conn.send(("ready", time.monotonic() - built))
        message, t_start = conn.recv()
        assert message == "go"
        result = uvloop.run(_run_worker(conf, index, source, counters, t_start))
        conn.send(("result", result))
    except BaseException as error:  # report, never hang the parent
        conn.send(("error", f"{type(error).__name__}: {error}"))
        raise
    finally:
        conn.close()


# ------------------------------------------------------------------ parent


def percentile(sorted_values, fraction: float) -> float:
    """Nearest-rank percentile of an ascending sequence."""
    if not len(sorted_values):
        return float("nan")
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return float(sorted_values[rank - 1])


def split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


class Progress:
    """One status line on stderr, rewritten in place on a terminal."""

    def __init__(self) -> None:
        self._tty = sys.stderr.isatty()
        self._width = 0

    def show(self, text: str) -> None:
        if self._tty:
            pad = max(0, self._width - len(text))
            sys.stderr.write("\r" + text + " " * pad)
            self._width = len(text)
        else:
            sys.stderr.write(text + "\n")
        sys.stderr.flush()

    def done(self) -> None:
        if self._tty and self._width:
            sys.stderr.write("\n")
            sys.stderr.flush()


def run(options: argparse.Namespace) -> dict:
    host, _, port = options.target.rpartition(":")
    if host != "127.0.0.1" or not port.isdigit():
        raise SystemExit("loadgen: --target must be 127.0.0.1:PORT (loopback only)")
    if options.mode == "batch-earn" and not 1 <= options.batch_size <= 10_000:
        raise SystemExit("loadgen: --batch-size must be 1..10000")
    processes = max(1, min(options.processes, options.concurrency))
    run_id = options.run_id or secrets.token_hex(4)
    members = member_ids(run_id, options.members)
    check_sources(run_id, members[:50])
    enroll_s = enroll(options.target, run_id, members)
    print(f"loadgen: enrolled {len(members)} members in {enroll_s:.1f}s", file=sys.stderr)

    conf = {
        "target": options.target,
        "mode": options.mode,
        "batch_size": options.batch_size if options.mode == "batch-earn" else 1,
        "run_id": run_id,
        "members": options.members,
        "seed": options.seed,
        "channels": options.channels,
        "warmup": options.warmup,
        "seconds": options.seconds,
        "call_timeout": options.call_timeout,
        "concurrency_per_process": split(options.concurrency, processes),
        "rate_per_process": [options.rate / processes] * processes if options.rate else [],
    }
    context = multiprocessing.get_context("spawn")
    counters = context.RawArray("q", 2 * processes)
    pipes, children = [], []
    for index in range(processes):
        parent_end, child_end = context.Pipe()
        child = context.Process(target=_worker_main, args=(conf, index, child_end, counters), daemon=True)
        child.start()
        child_end.close()
        pipes.append(parent_end)
        children.append(child)

    results: list[dict | None] = [None] * processes
    try:
        build_s = []
        for conn in pipes:
            if not conn.poll(180):
                raise SystemExit("loadgen: a worker did not get ready in 180 s")
            kind, value = conn.recv()
            if kind != "ready":
                raise SystemExit(f"loadgen: worker failed: {value}")
            build_s.append(value)
        t_start = time.monotonic() + 0.5
        for conn in pipes:
            conn.send(("go", t_start))
        warm_end = t_start + options.warmup
        t_end = warm_end + options.seconds
        deadline = t_end + options.call_timeout + 30
        progress = Progress()
        label = options.mode + (f" x{options.batch_size}" if options.mode == "batch-earn" else "")
        last_ops, last_t = 0, time.monotonic()
        next_tick = last_t + 1.0
        while any(r is None for r in results):
            now = time.monotonic()
            if now > deadline:
                raise SystemExit("loadgen: workers did not finish in time")
            for index, conn in enumerate(pipes):
                if results[index] is None and conn.poll(0):
                    kind, value = conn.recv()
                    if kind != "result":
                        raise SystemExit(f"loadgen: worker {index} failed: {value}")
                    results[index] = value
            if now >= next_tick:
                ops = sum(counters[2 * i] for i in range(processes))
                errors = sum(counters[2 * i + 1] for i in range(processes))
                rate = (ops - last_ops) / (now - last_t)
                last_ops, last_t = ops, now
                if now < t_start:
                    phase = "starting"
                elif now < warm_end:
                    phase = f"warm-up {now - t_start:4.1f}/{options.warmup:g}s"
                elif now < t_end:
                    phase = f"measure {now - warm_end:4.1f}/{options.seconds:g}s"
                else:
                    phase = "draining"
                progress.show(
                    f"loadgen {label}: {phase}  {rate:>10,.0f} ops/s  total {ops:>11,} ok  {errors:,} errors"
                )
                next_tick += 1.0
            time.sleep(0.05)
        progress.done()
    finally:
        for child in children:
            child.join(timeout=10)
            if child.is_alive():
                child.terminate()

    ops = sum(r["ops"] for r in results)
    weighted_ops = sum(r["weighted_ops"] for r in results)
    calls = sum(r["calls"] for r in results)
    call_errors: collections.Counter[str] = collections.Counter()
    latencies = array.array("d")
    for r in results:
        call_errors.update(r["call_errors"])
        chunk = array.array("d")
        chunk.frombytes(r["latencies"])
        latencies.extend(chunk)
    ordered = sorted(latencies)
    ms = 1000.0
    return {
        "mode": options.mode,
        "batch_size": conf["batch_size"],
        "target": options.target,
        "processes": processes,
        "channels_per_process": options.channels,
        "concurrency": options.concurrency,
        "rate_target": options.rate or None,
        "members": options.members,
        "warmup_s": options.warmup,
        "seconds": options.seconds,
        "window_monotonic": [warm_end, t_end],
        # Headline throughput: every call overlapping the window counts for the
        # share of it inside the window (for 10,000-item Batch calls lasting seconds
        # this avoids the +-1-call granularity of counting completions).
        "ops_per_s": weighted_ops / options.seconds,
        "ops_completed_in_window": ops,
        "ops_per_s_completed_in_window": ops / options.seconds,
        "calls": calls,
        "calls_per_s": calls / options.seconds,
        "item_errors": sum(r["item_errors"] for r in results),
        "ops_total_including_warmup_and_tail": sum(r["ops_total"] for r in results),
        "call_errors": dict(call_errors),
        "latency_ms": {
            "p50": percentile(ordered, 0.50) * ms,
            "p90": percentile(ordered, 0.90) * ms,
            "p99": percentile(ordered, 0.99) * ms,
            "max": (ordered[-1] * ms) if ordered else float("nan"),
            "mean": (sum(ordered) / len(ordered) * ms) if ordered else float("nan"),
        },
        "enroll_s": enroll_s,
        "build_s": max(build_s),
        "run_id": run_id,
    }


def summary(result: dict) -> str:
    lat = result["latency_ms"]
    errors = sum(result["call_errors"].values()) + result["item_errors"]
    label = result["mode"] + (f" x{result['batch_size']}" if result["mode"] == "batch-earn" else "")
    return (
        f"{label}: {result['ops_per_s']:,.0f} ops/s ({result['calls_per_s']:,.1f} calls/s) over "
        f"{result['seconds']:g}s; latency per call ms p50 {lat['p50']:.2f} p90 {lat['p90']:.2f} "
        f"p99 {lat['p99']:.2f} max {lat['max']:.2f}; errors {errors}"
        + (f" {result['call_errors']}" if result["call_errors"] else "")
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Closed-loop gRPC load generator for loyalty.v1 Earn and Batch.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("mode", choices=("unary-earn", "batch-earn"))
    parser.add_argument("--target", default="127.0.0.1:50051", help="127.0.0.1:PORT")
    parser.add_argument("--batch-size", type=int, default=1000, help="earn items per Batch call")
    parser.add_argument(
        "--concurrency", type=int, default=None,
        help="calls in flight in total (default 64 for unary-earn, 8 for batch-earn)",
    )
    parser.add_argument("--processes", type=int, default=2, help="worker processes")
    parser.add_argument("--channels", type=int, default=2, help="channels (TCP connections) per process")
    parser.add_argument("--seconds", type=float, default=15.0, help="measured window")
    parser.add_argument("--warmup", type=float, default=3.0, help="warm-up before the window")
    parser.add_argument("--rate", type=float, default=0.0, help="pace at this many calls/s in total (0: flat out)")
    parser.add_argument("--members", type=int, default=10_000, help="member pool size")
    parser.add_argument("--call-timeout", type=float, default=30.0, help="deadline of each call, seconds")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--run-id", default="", help="prefix of member and request ids (default random)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    options = parser.parse_args(argv)
    if options.concurrency is None:
        options.concurrency = 64 if options.mode == "unary-earn" else 8
    if options.concurrency < 1 or options.channels < 1 or options.seconds <= 0:
        parser.error("--concurrency, --channels and --seconds must be positive")
    return options


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    result = run(options)
    if options.json:
        print(summary(result), file=sys.stderr)
        print(json.dumps(result))
    else:
        print(summary(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
