"""Memory per member and recovery after kill -9, for one shard holding many members.

    python bench/member_scale.py server --members 1000000 --tail 50000 --json
    python bench/member_scale.py core --members 200000 --json

``server``: starts a loyalty server in this process (LoyaltyServer: embedded Redis
with appendfsync always, a local Ray, ONE shard actor, the gRPC gateway on a free
127.0.0.1 port; automatic snapshots off so the run decides when one is taken), then

1. reads the empty shard actor's resident memory (VmRSS of its process);
2. enrolls --members members and gives each one earn (a 1-8 line basket) through
   the gateway, in Batch calls of --batch items (enrolments of the next chunk travel
   with the earns of the current one);
3. reads the shard's VmRSS again: (loaded - empty) / members = bytes per member;
4. takes a snapshot (``actor.snapshot``), timed, and sizes it in Redis;
5. journals --tail more earns after the snapshot;
6. SIGKILLs the shard actor's process and polls GetBalance through the gateway
   (bounded) until it answers again: that is the recovery time. Meanwhile it notes
   when Ray had a new shard process up; the shard's own "recovered ... in X s" log
   line is read from Ray's worker logs when present;
7. reads the recovered shard's VmRSS (a process that only loaded the snapshot and
   replayed the tail: no garbage left over from serving);
8. repeats the recovery work in this process, timed per step (read the snapshot
   from Redis, decode it, read and replay the journal tail), to split the time.

``core``: no Ray, Redis or gRPC. Builds a ShardCore with --members members (each
enrolled and with one earn, same baskets) and measures its state size per member:
RSS delta, tracemalloc on a smaller core, msgspec-encoded size, and a breakdown by
part of the Member (deep sys.getsizeof over a sample).

Only loopback (127.0.0.1) is used.
"""

from __future__ import annotations

import argparse
import gc
import glob
import json
import logging
import os
import random
import re
import signal
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import loadgen  # noqa: E402  (wire-format helpers and basket builder)


def log(text: str) -> None:
    print(f"[member_scale {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def vmrss(pid: int) -> int:
    """Resident memory of a process in bytes (VmRSS from /proc/<pid>/status)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def member_id(index: int) -> str:
    return f"bm-{index:07d}"


# ------------------------------------------------------------------ wire bytes


def enroll_batch(indexes: range) -> bytes:
    tag_enroll = b"\x0a"  # BatchItem.enroll_member = 1
    out = bytearray()
    for i in indexes:
        m = member_id(i).encode()
        request = loadgen.field(b"\x0a", m) + loadgen.field(b"\x12", m + b"-enroll")
        out += loadgen.field(loadgen.TAG_BATCH_ITEMS, loadgen.field(tag_enroll, request))
    return bytes(out)


def earn_batch(indexes, tag: str, purchases: list[bytes]) -> bytes:
    out = bytearray()
    for n, i in enumerate(indexes):
        request = (loadgen.field(loadgen.TAG_MEMBER_ID, member_id(i).encode())
                   + loadgen.field(loadgen.TAG_REQUEST_ID, f"{tag}-{n}-{i}".encode())
                   + loadgen.field(loadgen.TAG_PURCHASE, purchases[(i * 7 + n) % len(purchases)]))
        out += loadgen.field(loadgen.TAG_BATCH_ITEMS, loadgen.field(loadgen.TAG_BATCH_ITEM_EARN, request))
    return bytes(out)


# ------------------------------------------------------------------ server phase


class InProcessServer:
    """A LoyaltyServer with its backends, its gateway on a background event loop."""

    def __init__(self, config) -> None:
        from loyalty.server.runtime.app import LoyaltyServer

        self.server = LoyaltyServer(config)
        self._gateway = None

    def start(self) -> None:
        from loyalty.server.runtime.background import BackgroundGateway

        self.server.start_backends()
        self._gateway = BackgroundGateway(self.server, thread_name="gateway")
        self._gateway.start()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def stop(self) -> None:
        try:
            if self._gateway is not None:
                self._gateway.stop(grace_s=5, timeout_s=120)
        finally:
            self.server.close_backends()


def ray_recovery_lines(since: float) -> list[str]:
    """The shard's 'recovered' log lines from this Ray session's worker logs."""
    try:
        import ray
        logs = ray._private.worker._global_node.get_logs_dir_path()  # noqa: SLF001
    except Exception:
        return []
    found = []
    for path in glob.glob(os.path.join(logs, "worker-*")):
        try:
            if os.path.getmtime(path) < since - 5:
                continue
            with open(path, errors="replace") as handle:
                found += [line.strip() for line in handle if "recovered:" in line]
        except OSError:
            continue
    return found


def run_server_phase(options: argparse.Namespace) -> dict:
    import grpc
    import ray
    import redis

    from loyalty.actors.shard.journal import ShardJournal
    from loyalty.actors.ledger import CompiledProgram, Program, ShardCore, codec
    from loyalty.server.runtime.app import ServerConfig
    from loyalty.v1 import loyalty_pb2 as pb

    result: dict = {"members": options.members, "tail": options.tail, "batch": options.batch}
    data_dir = tempfile.mkdtemp(prefix="loyalty-scale-")
    prefix = f"scale{uuid.uuid4().hex[:6]}"
    config = ServerConfig(
        port=0, shards=1, data_dir=data_dir, appendfsync="always", key_prefix=prefix, namespace=prefix,
        snapshot_every_events=10**12, snapshot_every_s=10.0**9,
    )
    server = InProcessServer(config)
    began = time.monotonic()
    from loyalty.server.runtime.app import use_loopback_for_local_ray

    use_loopback_for_local_ray()
    # A local Ray on loopback only (the server uses a Ray already running in its process).
    ray.init(include_dashboard=False, logging_level=logging.WARNING, _node_ip_address="127.0.0.1")
    server.start()
    gc.collect()
    gc.freeze()
    result["server_start_s"] = time.monotonic() - began
    log(f"server on {server.target}, redis {server.server.redis_url}, data in {data_dir}")
    actor = server.server.actors[0]
    pid = ray.get(actor.pid.remote())
    time.sleep(1.0)
    result["rss_empty"] = vmrss(pid)
    channel = grpc.insecure_channel(server.target, options=[
        ("grpc.max_receive_message_length", loadgen.MESSAGE_BYTES_MAX),
        ("grpc.max_send_message_length", loadgen.MESSAGE_BYTES_MAX)])
    batch_call = channel.unary_unary("/loyalty.v1.LoyaltyService/Batch", request_serializer=None,
                                     response_deserializer=pb.BatchResponse.FromString)
    purchases = loadgen.baskets(random.Random(11), 4_096)
    failed = 0

    def check(future) -> None:
        nonlocal failed
        response = future.result()
        bad = [r.status for r in response.results if r.status.code != 0]
        if bad and not failed:
            log(f"first failed item: {bad[0]}")
        failed += len(bad)

    # 1. load: enrolments of chunk k+1 ride along with the earns of chunk k
    log(f"loading {options.members:,} members (enroll + one earn each)")
    began = time.monotonic()
    chunks = [range(s, min(s + options.batch, options.members)) for s in range(0, options.members, options.batch)]
    check(batch_call.future(enroll_batch(chunks[0]), timeout=300))
    for k, chunk in enumerate(chunks):
        futures = [batch_call.future(earn_batch(chunk, "earn", purchases), timeout=300)]
        if k + 1 < len(chunks):
            futures.append(batch_call.future(enroll_batch(chunks[k + 1]), timeout=300))
        for future in futures:
            check(future)
        if k % 10 == 9:
            log(f"  {chunk.stop:,} members loaded, {chunk.stop * 2 / (time.monotonic() - began):,.0f} ops/s")
    result["load_s"] = time.monotonic() - began
    result["load_ops_per_s"] = 2 * options.members / result["load_s"]
    result["failed_items"] = failed
    time.sleep(1.0)
    result["rss_loaded"] = vmrss(pid)
    result["bytes_per_member"] = (result["rss_loaded"] - result["rss_empty"]) / options.members
    log(f"loaded in {result['load_s']:.1f}s; shard RSS {result['rss_empty'] / 2**20:.0f} -> "
        f"{result['rss_loaded'] / 2**20:.0f} MiB = {result['bytes_per_member']:.0f} B/member")

    # 2. snapshot
    began = time.monotonic()
    snap_seq = ray.get(actor.snapshot.remote())
    result["snapshot_s"] = time.monotonic() - began
    result["snapshot_seq"] = snap_seq
    client = redis.Redis.from_url(server.server.redis_url)
    pointer_key = f"{{{prefix}:shard:0}}:snapshot"
    pointer = {k.decode(): v.decode() for k, v in client.hgetall(pointer_key).items()}
    chunk_keys = [f"{pointer_key}:{pointer.get('id')}:{i}" for i in range(int(pointer.get("chunk_count", 0)))]
    result["snapshot_bytes"] = sum(client.strlen(key) for key in chunk_keys)
    result["snapshot_chunks"] = len(chunk_keys)
    log(f"snapshot seq {snap_seq}: {result['snapshot_bytes'] / 1e6:.0f} MB in {len(chunk_keys)} chunks, "
        f"{result['snapshot_s']:.1f}s")

    # 3. journal tail after the snapshot
    began = time.monotonic()
    rng = random.Random(5)
    for start in range(0, options.tail, options.batch):
        indexes = [rng.randrange(options.members) for _ in range(min(options.batch, options.tail - start))]
        check(batch_call.future(earn_batch(indexes, f"tail{start}", purchases), timeout=300))
    result["tail_s"] = time.monotonic() - began
    result["describe_before_kill"] = ray.get(actor.describe.remote())
    result["rss_before_kill"] = vmrss(pid)
    log(f"tail of {options.tail:,} earns in {result['tail_s']:.1f}s; {result['describe_before_kill']['journal']}")

    # 4. kill -9 and time until GetBalance answers through the gateway
    stub_balance = channel.unary_unary("/loyalty.v1.LoyaltyService/GetBalance",
                                       request_serializer=pb.GetBalanceRequest.SerializeToString,
                                       response_deserializer=pb.Balance.FromString)
    probe = pb.GetBalanceRequest(member_id=member_id(options.members - 1))
    stub_balance(probe, timeout=10)
    import psutil
    killed_at_wall = time.time()
    killed_at = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    log(f"SIGKILL to shard pid {pid}")
    new_process: list[float] = []
    watching = threading.Event()

    def watch() -> None:  # when does Ray have a new ShardActor process?
        while not watching.is_set():
            for child in me.children(recursive=True):
                try:
                    if child.pid != pid and "ShardActor" in " ".join(child.cmdline()):
                        new_process.append(time.monotonic())
                        return
                except psutil.Error:
                    continue
            time.sleep(0.02)

    me = psutil.Process()
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    attempts = 0
    errors: dict[str, int] = {}
    deadline = killed_at + options.recovery_timeout
    recovered_at = None
    while time.monotonic() < deadline:
        attempts += 1
        try:
            stub_balance(probe, timeout=0.25)
            recovered_at = time.monotonic()
            break
        except grpc.RpcError as error:
            errors[error.code().name] = errors.get(error.code().name, 0) + 1
            time.sleep(0.05)
    watching.set()
    watcher.join(5)
    new_process_at = new_process[0] if new_process else None
    result["recovery_s"] = (recovered_at - killed_at) if recovered_at else None
    result["recovery_new_process_s"] = (new_process_at - killed_at) if new_process_at else None
    result["recovery_probe_attempts"] = attempts
    result["recovery_probe_errors"] = errors
    log(f"GetBalance answered again {result['recovery_s']} s after the kill "
        f"(new shard process after {result['recovery_new_process_s']} s)")
    new_pid = ray.get(actor.pid.remote(), timeout=60)
    time.sleep(1.0)
    result["rss_recovered"] = vmrss(new_pid)
    result["bytes_per_member_recovered"] = (result["rss_recovered"] - result["rss_empty"]) / options.members
    result["describe_after"] = ray.get(actor.describe.remote())
    lines = ray_recovery_lines(killed_at_wall)
    result["shard_log"] = lines[-1] if lines else ""
    match = re.search(r"(\d+) events replayed in ([\d.]+)s", result["shard_log"])
    result["shard_recover_s"] = float(match.group(2)) if match else None

    # 5. the same recovery work in this process, step by step
    journal = ShardJournal(client, 0, key_prefix=prefix)
    began = time.monotonic()
    snapshot = journal.load_snapshot()
    t_read = time.monotonic()
    core = ShardCore(CompiledProgram(Program()))
    core.load_snapshot(snapshot[1])
    t_decode = time.monotonic()
    records = list(journal.read_after(core.seq))
    t_tail_read = time.monotonic()
    replayed = 0
    for _seq, payload in records:
        record = codec.decode_record(payload)
        core.replay(record)
        replayed += len(record.events)
    t_replay = time.monotonic()
    result["split"] = {
        "snapshot_read_s": t_read - began,
        "snapshot_decode_s": t_decode - t_read,
        "journal_read_s": t_tail_read - t_decode,
        "replay_s": t_replay - t_tail_read,
        "journal_records": len(records),
        "events_replayed": replayed,
    }
    log(f"in-process recovery split: {result['split']}")
    del core, snapshot, records
    client.close()
    channel.close()
    began = time.monotonic()
    server.stop()
    ray.shutdown()
    result["server_stop_s"] = time.monotonic() - began
    import shutil
    shutil.rmtree(data_dir, ignore_errors=True)
    return result


# ------------------------------------------------------------------ core phase


def deep_size(obj, seen: set[int]) -> int:
    """sys.getsizeof over an object graph (each object counted once)."""
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    size = sys.getsizeof(obj)
    if isinstance(obj, dict):
        for key, value in obj.items():
            size += deep_size(key, seen) + deep_size(value, seen)
    elif isinstance(obj, (list, tuple, set, frozenset)):
        for item in obj:
            size += deep_size(item, seen)
    elif hasattr(obj, "__struct_fields__"):
        for name in obj.__struct_fields__:
            size += deep_size(getattr(obj, name), seen)
    return size


def breakdown(members: dict, sample: int) -> dict[str, float]:
    """Average bytes per member by part (deep sizes over the first `sample` members)."""
    import msgspec

    parts: dict[str, float] = {}
    encoded: dict[str, float] = {}
    chosen = list(members.items())[:sample]
    seen: set[int] = set()
    # small ints, interned strings and empty defaults shared by all members count for nobody
    for value in range(-5, 257):
        seen.add(id(value))
    for key, member in chosen:
        parts["members dict slot (key, hash, pointer)"] = parts.get("members dict slot (key, hash, pointer)", 0) + (
            sys.getsizeof(members) / max(1, len(members)))
        parts["member_id string (dict key)"] = parts.get("member_id string (dict key)", 0) + deep_size(key, seen)
        head = sys.getsizeof(member)
        scalar = 0
        for name in member.__struct_fields__:
            value = getattr(member, name)
            if isinstance(value, (int, str)) and name != "member_id":
                scalar += deep_size(value, seen)
        parts["Member struct + its int fields"] = parts.get("Member struct + its int fields", 0) + head + scalar
        for name in ("attributes", "lots", "reservations", "closed_reservations", "earns", "outcomes",
                     "transactions"):
            value = getattr(member, name)
            label = {
                "earns": "earns (purchases kept for returns: EarnRecord + lines)",
                "outcomes": "outcomes (stored results per request_id)",
                "transactions": "transactions (history entries)",
                "lots": "lots",
            }.get(name, name)
            parts[label] = parts.get(label, 0) + deep_size(value, seen)
            encoded[label] = encoded.get(label, 0) + len(msgspec.msgpack.encode(value))
        encoded["whole member"] = encoded.get("whole member", 0) + len(msgspec.msgpack.encode(member))
    n = max(1, len(chosen))
    return {"deep_bytes": {k: v / n for k, v in sorted(parts.items(), key=lambda kv: -kv[1])},
            "msgpack_bytes": {k: v / n for k, v in sorted(encoded.items(), key=lambda kv: -kv[1])}}


def build_core(members: int, batch: int):
    from loyalty.actors.ledger import CompiledProgram, Program, ShardCore
    from loyalty.actors.ledger import commands as c
    from loyalty.server.gateway import requests
    from loyalty.v1 import loyalty_pb2 as pb

    purchases = loadgen.baskets(random.Random(11), 4_096)
    core = ShardCore(CompiledProgram(Program()))
    now = 1_700_000_000_000
    for start in range(0, members, batch):
        indexes = range(start, min(start + batch, members))
        core.apply_batch([c.EnrollMember(member_id(i), f"{member_id(i)}-enroll") for i in indexes], now)
        request = pb.BatchRequest.FromString(earn_batch(indexes, "earn", purchases))
        commands = [requests.batch_item(n, item) for n, item in enumerate(request.items)]
        now += 1000
        core.apply_batch(commands, now)
    return core


def run_core_phase(options: argparse.Namespace) -> dict:
    import tracemalloc

    import psutil

    result: dict = {"members": options.members}
    gc.collect()
    process = psutil.Process()
    before = process.memory_info().rss
    began = time.monotonic()
    core = build_core(options.members, options.batch)
    result["build_s"] = time.monotonic() - began
    gc.collect()
    after = process.memory_info().rss
    result["rss_delta_bytes_per_member"] = (after - before) / options.members
    chunks = list(core.snapshot_chunks())
    result["snapshot_bytes_per_member"] = sum(len(chunk) for chunk in chunks) / options.members
    store = core.ledger.members
    result["hot_members"] = store.hot_count
    cold = [len(entry) for member_id, entry in store.frozen()[0].items() if member_id not in store._hot]  # noqa: SLF001
    result["cold_entry_bytes_per_member"] = sum(cold) / max(1, len(cold))
    result["msgpack_bytes_per_member"] = sum(len(raw) for _, raw in store.raw_items()) / options.members
    result["compression_dictionaries"] = len(store.dictionaries)
    result["breakdown"] = breakdown(dict(list(store.items())[:options.sample]), options.sample)
    first = next(iter(core.ledger.members.values()))
    result["example_member"] = {
        "lots": len(first.lots), "earns": len(first.earns), "outcomes": len(first.outcomes),
        "transactions": len(first.transactions),
    }
    del core, chunks, first
    gc.collect()
    small = min(options.members, options.traced_members)
    tracemalloc.start()
    baseline = tracemalloc.get_traced_memory()[0]
    core = build_core(small, options.batch)  # noqa: F841 (held alive while measured)
    gc.collect()
    result["tracemalloc_members"] = small
    result["tracemalloc_bytes_per_member"] = (tracemalloc.get_traced_memory()[0] - baseline) / small
    tracemalloc.stop()
    log(f"core: RSS delta {result['rss_delta_bytes_per_member']:.0f} B/member, tracemalloc "
        f"{result['tracemalloc_bytes_per_member']:.0f} B/member, snapshot "
        f"{result['snapshot_bytes_per_member']:.0f} B/member, cold entry "
        f"{result['cold_entry_bytes_per_member']:.0f} B (msgpack {result['msgpack_bytes_per_member']:.0f} B)")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("phase", choices=("server", "core"))
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--tail", type=int, default=50_000, help="earns journaled after the snapshot")
    parser.add_argument("--batch", type=int, default=10_000, help="items per Batch call")
    parser.add_argument("--recovery-timeout", type=float, default=300.0)
    parser.add_argument("--sample", type=int, default=2_000, help="members in the size breakdown")
    parser.add_argument("--traced-members", type=int, default=20_000, help="members built under tracemalloc")
    parser.add_argument("--json", action="store_true")
    options = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    result = run_server_phase(options) if options.phase == "server" else run_core_phase(options)
    if options.json:
        print(json.dumps(result))
    else:
        print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
