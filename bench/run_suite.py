"""The whole benchmark suite, one command; writes bench/RESULTS.md.

    python bench/run_suite.py            # full size, about 12-15 minutes on 2 cores
    python bench/run_suite.py --quick    # smoke run, about 3 minutes; writes bench/out/RESULTS-quick.md

1. First numbers (bench/run_first_numbers.py): bare gRPC server vs `loyalty serve`
   (appendfsync always) for unary Earn and Batch x100 / x1,000 / x10,000, unary Earn
   at half load, py-spy profiles of the gateway and a shard.
2. Durability cost: a second `loyalty serve --appendfsync everysec` measured with the
   same four load-generator commands, in the same run; reported as ratios.
3. Memory per member, in-process cross-check (bench/member_scale.py core): a ShardCore
   with N members, each enrolled with one earn; RSS delta, tracemalloc, encoded size
   and a breakdown by part of the member.
4. Memory per member and recovery after kill -9 (bench/member_scale.py server): one
   shard loaded with N members through the gateway, snapshot, journal tail, SIGKILL,
   time until GetBalance answers again.
5. Writes the report. Two hand-written notes blocks (between the "notes" markers) are
   kept across reruns: they are read from bench/RESULTS.md even for --quick.

`--report-only` rewrites the report from bench/out/suite.json (or suite-quick.json).
Only loopback (127.0.0.1) is used.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import run_first_numbers as rfn  # noqa: E402

OUT = rfn.OUT
REPO = rfn.REPO
SUITE_NOTES_START = "<!-- suite-notes:start (kept by run_suite.py across reruns) -->"
SUITE_NOTES_END = "<!-- suite-notes:end -->"
MEMORY_TARGET = 500
RECOVERY_TARGET_S = 5.0

FULL = {"seconds": 15.0, "warmup": 3.0, "profile_seconds": 10.0, "members": 1_000_000, "tail": 50_000,
        "core_members": 1_000_000}
QUICK = {"seconds": 3.0, "warmup": 1.0, "profile_seconds": 3.0, "members": 50_000, "tail": 5_000,
         "core_members": 50_000}

DEFAULT_SUITE_NOTES = """\
Written from two `--quick` runs (5 s and 3 s windows, 50,000 members, other people's tests
running on the same 2 cores); reread against the full-size numbers above after a
full run and correct what they contradict.

- **Durability cost.** Redis writes and fsyncs the AOF once per event-loop round and
  a shard appends one journal record per group commit, so with appendfsync always the
  fsync is paid per batch of operations, not per operation. Two quick runs disagreed
  wildly on the ratio (Batch x10,000 at 0.89x in one, 1.48x in the other; Batch x100
  at 1.20x and 0.55x): at 3 s windows on a shared machine that is noise, and only the
  full run's 15 s windows can say what durability costs. What both agreed on: the
  server CPU per operation is the same with always and everysec (54-59 us per batched
  earn, 390-510 us per unary Earn), i.e. the fsync costs waiting, not CPU, and the
  Batch ceiling is CPU in the gateway and the ledger (see the profiles). everysec gets
  nowhere near 100,000 ops/s either.
- **Memory: not met, by about 7x** (quick runs: about 3,500 B/member in the serving shard,
  about 3,460 B/member in a freshly recovered one, so it is live objects, not garbage left
  over from serving). The live Python objects of one member add up to about 2,600
  bytes (tracemalloc agrees: 2,676 B/member); the rest is allocator overhead (pymalloc
  pools, over-allocated dicts and lists). What dominates: the purchase kept for returns
  (34%: an EarnRecord, a list, one EarnLine per basket line and one SKU string object
  per line, decoded separately for every member), the stored outcome of every
  request_id for idempotent replays (25%: a StoredOutcome with its encoded bytes, two
  per member after enroll + earn), the two history entries (12%), the Member struct
  with its int fields (10%: every int above 256, e.g. a millisecond timestamp, is its
  own 28-32 byte object), one lot (7%), and three empty dicts per member (attributes,
  reservations, closed reservations: 7%). The same member is about 510 bytes
  msgpack-encoded, i.e. the object form costs about 5x the data. Closing the gap needs
  a different representation, not trimming: keep outcomes and kept purchases encoded
  (bytes, or in Redis) and decode them only for a replay or a return; None instead of
  empty dicts; intern SKUs; keep the hot counters in arrays indexed by a member number
  and the rest as one bytes blob per member. Trimming alone (empty dicts, interning)
  would save maybe 300-400 bytes of 3,500.
- **Recovery: 0.9-1.6 s at 50,000 members** in two quick runs (Ray had a new shard
  process after 0.1-0.5 s; the constructor's work, repeated in-process: about 0.05 s
  reading the snapshot from Redis, 0.35-0.57 s decoding it into Member structs, 0.06 s
  replaying 5,000 events). Decoding is 7-11 us per member, so a 1,000,000-member shard
  should need 7-11 s for decoding alone, plus reading ~0.5 GB of snapshot and the
  replay: expect the 5 s target to be missed at full size; the full run's table above
  says by how much. Decoding builds the same millions of small Python objects that
  dominate memory, so the representation change above is also what would bring
  recovery under 5 s; loading chunks in a pipeline (decode one while the next is
  read) and more shards per machine (each
  recovers its share in parallel) help further."""


def log(text: str) -> None:
    rfn.log(text)


def read_block(start: str, end: str, default: str) -> str:
    if rfn.RESULTS.exists():
        text = rfn.RESULTS.read_text()
        if start in text and end in text:
            return text.split(start, 1)[1].split(end, 1)[0].strip("\n")
    return default


def run_json(argv: list[str], timeout: float) -> tuple[dict, str]:
    display = "python " + shlex.join(argv)
    log(display)
    completed = subprocess.run([sys.executable, *argv], cwd=REPO, stdout=subprocess.PIPE, text=True,
                               timeout=timeout)
    if completed.returncode != 0:
        raise SystemExit(f"failed ({completed.returncode}): {display}")
    return json.loads(completed.stdout.strip().splitlines()[-1]), display


# ------------------------------------------------------------------ report sections


def mib(value: float) -> str:
    return f"{value / 2**20:,.0f} MiB"


def durability_section(run: dict) -> tuple[list[str], list[str]]:
    by_key = {(r["server"], r["label"]): r for r in run["results"]}
    labels = ["unary Earn"] + [f"Batch x{s}" for s in rfn.BATCH_SIZES]
    rows, goals = [], []
    for label in labels:
        always, relaxed = by_key.get(("loyalty", label)), by_key.get(("loyalty-everysec", label))
        if not always or not relaxed:
            continue
        rows.append(
            f"| {rfn.mode_label(always)} | {rfn.fmt_ops(always['ops_per_s'])} | {rfn.fmt_ops(relaxed['ops_per_s'])} | "
            f"**{always['ops_per_s'] / relaxed['ops_per_s']:.2f}x** | {rfn.fmt_latency(always)} | "
            f"{rfn.fmt_latency(relaxed)} | {rfn.cpu_per_op(always)} / {rfn.cpu_per_op(relaxed)} | "
            f"{rfn.describe_errors(always)} / {rfn.describe_errors(relaxed)} |")
    if not rows:
        return [], []
    batch = [(by_key[("loyalty", f"Batch x{s}")], by_key[("loyalty-everysec", f"Batch x{s}")])
             for s in rfn.BATCH_SIZES
             if ("loyalty", f"Batch x{s}") in by_key and ("loyalty-everysec", f"Batch x{s}") in by_key]
    if batch:
        best_relaxed = max(r["ops_per_s"] for _, r in batch)
        goals.append(
            f"| (context) Batch with appendfsync everysec instead of always | best {rfn.fmt_ops(best_relaxed)} ops/s, "
            f"{best_relaxed / 100_000:.2f}x the 100,000 goal: fsync is not what stands between Batch and the goal "
            "| informational |")
    out = [
        "## Durability cost: appendfsync always vs everysec",
        "",
        "Same run, two `loyalty serve` starts, each with a fresh data directory: the default (embedded Redis "
        "with `appendfsync always`: no acknowledged operation is lost) measured first, then "
        "`--appendfsync everysec` (up to a second of acknowledged operations can be lost on a machine crash) "
        "with the same load-generator commands. *always / everysec* below 1 is the price of durability. "
        "Latency in ms (p50 / p90 / p99 / max); server CPU per op in µs.",
        "",
        "| Mode | always ops/s | everysec ops/s | always / everysec | always latency | everysec latency | "
        "Server CPU per op (always / everysec) | Errors (always / everysec) |",
        "|---|---:|---:|---:|---|---|---:|---:|",
        *rows,
        "",
        "The everysec server starts empty like the first one did, but runs after it on the same machine; "
        "compare with the bare server's drift between the start and the end of the run (table above) before "
        "reading much into ratios within a few percent of 1.",
        "",
    ]
    return out, goals


def memory_section(core: dict | None, scale: dict | None) -> tuple[list[str], list[str]]:
    out, goals = ["## Memory per member", ""], []
    if scale:
        n = scale["members"]
        per = scale["bytes_per_member"]
        goals.append(
            f"| <= {MEMORY_TARGET} bytes of resident memory per member | {per:,.0f} B/member with {n:,} members on "
            f"one shard ({per / MEMORY_TARGET:.1f}x the target); {scale['bytes_per_member_recovered']:,.0f} B/member "
            f"in the shard after recovery | {'met' if per <= MEMORY_TARGET else 'not met'} |")
        out += [
            f"One shard actor (`--shards 1` equivalent, in-process LoyaltyServer), {n:,} members enrolled and "
            f"each given one earn of a 1-8 line basket through the gateway in Batch calls of "
            f"{scale['batch']:,} items ({scale['load_s']:.0f} s, {scale['load_ops_per_s']:,.0f} ops/s, "
            f"{scale['failed_items']} failed items). RSS is VmRSS of the shard actor's process from "
            "/proc/<pid>/status (pid from `actor.pid`).",
            "",
            "| Measure | Value |",
            "|---|---:|",
            f"| shard RSS, empty (after start) | {mib(scale['rss_empty'])} |",
            f"| shard RSS, {n:,} members loaded | {mib(scale['rss_loaded'])} |",
            f"| **bytes per member, serving shard** ((loaded - empty) / members) | **{per:,.0f}** |",
            f"| shard RSS after kill -9 and recovery (snapshot + {scale['tail']:,} tail earns) | "
            f"{mib(scale['rss_recovered'])} |",
            f"| bytes per member, recovered shard | {scale['bytes_per_member_recovered']:,.0f} |",
            f"| snapshot (msgpack, in Redis) per member | {scale['snapshot_bytes'] / n:,.0f} |",
        ]
        if core:
            out += [
                f"| in-process ShardCore, {core['members']:,} members: a cold member's entry (zstd with the "
                f"shard's dictionary) | {core['cold_entry_bytes_per_member']:,.0f} |",
                f"| in-process ShardCore: the same member as plain msgpack | {core['msgpack_bytes_per_member']:,.0f} |",
                f"| in-process ShardCore, {core['members']:,} members: RSS delta per member | "
                f"{core['rss_delta_bytes_per_member']:,.0f} |",
                f"| in-process ShardCore, {core['tracemalloc_members']:,} members: tracemalloc per member | "
                f"{core['tracemalloc_bytes_per_member']:,.0f} |",
            ]
        out.append("")
    if core:
        deep = core["breakdown"]["deep_bytes"]
        packed = core["breakdown"]["msgpack_bytes"]
        total = sum(deep.values())
        example = core["example_member"]
        out += [
            f"Where a *decoded* member's bytes are (at most {core.get('hot_members', 0):,} members per shard are "
            "decoded between batches; the rest are the cold entries above, plus their id and a dict slot). "
            f"In-process ShardCore; deep `sys.getsizeof` over "
            f"{min(2000, core['members']):,} members, each object counted once, small ints shared; the encoded "
            f"column is msgspec msgpack as in a snapshot). A typical member here has {example['lots']} lot, "
            f"{example['earns']} kept purchase, {example['outcomes']} stored outcomes and "
            f"{example['transactions']} history entries.",
            "",
            "| Part of a member | Python objects, bytes | Share | msgpack-encoded, bytes |",
            "|---|---:|---:|---:|",
        ]
        for name, value in deep.items():
            encoded = packed.get(name)
            out.append(f"| {name} | {value:,.0f} | {value / total:.0%} | "
                       f"{'-' if encoded is None else f'{encoded:,.0f}'} |")
        out.append(f"| **total (Python objects, before allocator overhead)** | **{total:,.0f}** | 100% | "
                   f"{packed.get('whole member', 0):,.0f} (whole member) |")
        out.append("")
    return out, goals


def recovery_section(scale: dict | None) -> tuple[list[str], list[str]]:
    if not scale:
        return [], []
    n = scale["members"]
    rec = scale["recovery_s"]
    split = scale["split"]
    goals = [
        f"| a 1,000,000-member shard back in <= {RECOVERY_TARGET_S:g} s after kill -9 | "
        + (f"{rec:.1f} s with {n:,} members ({rec / RECOVERY_TARGET_S:.1f}x the target)" if rec is not None
           else "did not come back within the bound")
        + (" (measured at reduced size)" if n < 1_000_000 else "")
        + f" | {'met' if rec is not None and rec <= RECOVERY_TARGET_S and n >= 1_000_000 else 'not met' if n >= 1_000_000 else 'not measured at full size'} |"
    ]
    before = scale["describe_before_kill"]["journal"]
    new_proc = scale.get("recovery_new_process_s")
    in_process = split["snapshot_read_s"] + split["snapshot_decode_s"] + split["journal_read_s"] + split["replay_s"]
    out = [
        "## Recovery after kill -9",
        "",
        f"The same one-shard server as above: {n:,} members, then `actor.snapshot` (automatic snapshots "
        f"were off for this server so the run decides when), then {scale['tail']:,} more earns journaled after "
        "the snapshot, then SIGKILL to the shard actor's process. Recovery time is from the kill until a "
        "GetBalance through the gateway succeeds (polled with 0.25 s deadlines; the gateway sends the call "
        "that was in flight at the kill again, to the new incarnation, once Ray says where its channel is).",
        "",
        "| Measure | Value |",
        "|---|---:|",
        f"| snapshot size in Redis | {scale['snapshot_bytes'] / 1e6:,.0f} MB in {scale['snapshot_chunks']} chunks "
        f"({scale['snapshot_bytes'] / n:,.0f} B/member) |",
        f"| snapshot write (`actor.snapshot`, which waits for it; automatic snapshots are written by a background thread while the shard serves) | {scale['snapshot_s']:.1f} s |",
        f"| journal after the snapshot at the kill | {before['journal_length']} record(s), seq "
        f"{before['snapshot_seq']} -> {before['last_seq']} |",
        f"| **kill -9 -> GetBalance answers** | **{rec:.2f} s** |" if rec is not None else
        "| kill -9 -> GetBalance answers | no answer within the bound |",
        "| of which: kill -> Ray has a new ShardActor process | "
        + (f"{new_proc:.2f} s |" if new_proc is not None else "not seen |"),
        f"| same recovery in-process, total | {in_process:.2f} s |",
        f"| ... read snapshot chunks from Redis | {split['snapshot_read_s']:.2f} s |",
        f"| ... load snapshot (msgspec -> compressed entries, decoded when touched) | {split['snapshot_decode_s']:.2f} s |",
        f"| ... read journal tail ({split['journal_records']} record(s)) | {split['journal_read_s']:.2f} s |",
        f"| ... replay ({split['events_replayed']:,} events) | {split['replay_s']:.2f} s |",
        "",
        "The in-process rows repeat the shard constructor's work (ShardJournal.load_snapshot, "
        "ShardCore.load_snapshot, read_after + replay) in the benchmark process after the shard is back, "
        "to split the time; the rest of the kill-to-answer time is Ray (noticing the death, restarting "
        "the actor, answering the gateway's `channel_address` call) and the gateway's resent call.",
        "",
    ]
    return out, goals


def hop_section(hop: list[dict] | None, display: str) -> list[str]:
    if not hop:
        return []
    out = [
        "## The gateway -> shard hop",
        "",
        f"`{display}`: one call carrying a 300-byte payload to an actor that does no work, so only the hop "
        "is measured. CPU per call is summed over the caller, the actor and Ray's own processes. The gateway "
        "sends batches over the shard's data channel (one TCP connection per shard, at most one call in "
        "flight); Ray creates, places and restarts the actors and carries their control calls.",
        "",
        "| Hop | Calls in flight | Wall time per call, µs | CPU per call, µs |",
        "|---|---:|---:|---:|",
    ]
    for row in hop:
        out.append(f"| {'Ray actor call' if row['hop'] == 'ray' else 'data channel'} | {row['concurrency']} | "
                   f"{row['wall_us_per_call']:,.0f} | {row['cpu_us_per_call']:,.0f} |")
    return out + [""]


def write(run: dict, core: dict | None, scale: dict | None, suite: dict, path: Path) -> None:
    durability, g1 = durability_section(run)
    memory, g2 = memory_section(core, scale)
    recovery, g3 = recovery_section(scale)
    notes = read_block(SUITE_NOTES_START, SUITE_NOTES_END, DEFAULT_SUITE_NOTES)
    hop_display = next((c for c in suite["commands"] if "shard_hop.py" in c), "")
    sections = durability + memory + recovery + hop_section(suite.get("hop"), hop_display) + [
        "### Notes on durability, memory and recovery", "", SUITE_NOTES_START, notes, SUITE_NOTES_END, ""]
    quick = suite["quick"]
    preface = []
    if quick:
        preface += ["**QUICK SMOKE RUN** (`--quick`: short windows, "
                    f"{suite['sizes']['members']:,} members instead of 1,000,000). Not the benchmark: "
                    "run `python bench/run_suite.py` on a quiet machine for the numbers.", ""]
    rerun = ("Rerun: `python bench/run_suite.py` (from the repository root, about 12-15 minutes; "
             "`--quick` for a ~3 minute smoke run written to bench/out/RESULTS-quick.md). "
             f"This run took {suite['elapsed_s'] / 60:.1f} minutes in all.")
    commands = ["# durability cost: the same four loadgen commands against a second server",
                next((s["display"] for s in run["servers"] if s["name"] == "loyalty-everysec"), ""),
                "# memory, recovery and the shard hop (each starts its own server, core or Ray)",
                *suite["commands"]]
    rfn.write_report(run, path=path, title="# Benchmarks: throughput, latency, durability cost, memory, recovery",
                     rerun=rerun, preface=preface, extra_goals=g1 + g2 + g3, extra_sections=sections,
                     extra_commands=commands)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 s windows, 50,000 members")
    parser.add_argument("--output", type=Path, help="report path (default bench/RESULTS.md; "
                        "bench/out/RESULTS-quick.md with --quick)")
    parser.add_argument("--members", type=int, help="members for memory and recovery")
    parser.add_argument("--skip-first-numbers", action="store_true",
                        help="reuse bench/out/first_numbers.json instead of measuring throughput again")
    parser.add_argument("--report-only", action="store_true", help="rewrite the report from the saved JSON")
    options = parser.parse_args(argv)
    sizes = dict(QUICK if options.quick else FULL)
    if options.members:
        sizes["members"] = sizes["core_members"] = options.members
    path = options.output or (OUT / "RESULTS-quick.md" if options.quick else rfn.RESULTS)
    saved = OUT / ("suite-quick.json" if options.quick else "suite.json")
    if options.report_only:
        data = json.loads(saved.read_text())
        write(data["run"], data["core"], data["scale"], data["suite"], path)
        log(f"wrote {path}")
        return 0

    OUT.mkdir(exist_ok=True)
    started = time.monotonic()
    first = argparse.Namespace(seconds=sizes["seconds"], warmup=sizes["warmup"],
                               profile_seconds=sizes["profile_seconds"], no_profile=False,
                               no_half_load=False, no_recheck=False)
    if options.skip_first_numbers:
        run = json.loads((OUT / "first_numbers.json").read_text())
    else:
        run = rfn.collect(first, suite=True)
    commands: list[str] = []
    core, display = run_json(["bench/member_scale.py", "core", "--members", str(sizes["core_members"]), "--json"],
                             timeout=1800)
    commands.append(display)
    scale, display = run_json(["bench/member_scale.py", "server", "--members", str(sizes["members"]),
                               "--tail", str(sizes["tail"]), "--json"], timeout=2400)
    commands.append(display)
    hop, display = run_json(["bench/shard_hop.py", "--json"], timeout=600)
    commands.append(display)
    suite = {"quick": options.quick, "sizes": sizes, "elapsed_s": time.monotonic() - started,
             "commands": commands, "hop": hop}
    saved.write_text(json.dumps({"run": run, "core": core, "scale": scale, "suite": suite}, indent=1))
    write(run, core, scale, suite, path)
    log(f"wrote {path} ({suite['elapsed_s'] / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
