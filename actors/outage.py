"""Logging a dependency's outage the way an operator wants to read it.

A Redis that is down makes every call, every poll and every reconnect attempt fail.
Logging each failure (with a traceback) buries the one thing an operator needs to
know: what is down, since when, what the server is doing about it, and when it came
back. ``OutageLog`` writes exactly that:

* one WARNING when the dependency goes down: the reason and what is being done;
* while it stays down, at most one summary per ``summary_interval_s`` (how long,
  how many failures, the latest reason), and a line at once when the reason changes;
* one INFO line when it is back, with the outage's length and the failures counted.

Failures are counted, never logged one by one; tracebacks are left for bugs. Used
on both sides: by the shards (campaign budgets) and by the gateway process (the
embedded Redis supervisor, shard health, the rules and API-key feeds).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

__all__ = ["OUTAGE_SUMMARY_INTERVAL_S", "OutageLog"]

OUTAGE_SUMMARY_INTERVAL_S = 30.0
"""While a dependency stays down, one summary line at most this often: frequent
enough that a tail of the log shows the outage is still on, rare enough that a
night-long outage is a few hundred lines."""

class OutageLog:
    """The log of one dependency's outages (not thread-safe: one owner each)."""

    def __init__(
        self,
        logger: logging.Logger,
        what: str,
        *,
        action: str = "",
        summary_interval_s: float = OUTAGE_SUMMARY_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``what`` names the dependency in every line ("shard 0 journal");
        ``action`` says what is done while it is down ("probing every 0.25 s")."""
        self._log = logger
        self._what = what
        self._action = action
        self._summary_interval_s = summary_interval_s
        self._clock = clock
        self._down_since: float | None = None
        self._last_line_at = 0.0
        self._reason = ""
        self.failures = 0
        """Failures counted in the current outage (0 while up)."""
        self.outages = 0
        """Outages seen so far (for tests and diagnostics)."""

    @property
    def down(self) -> bool:
        """Whether the dependency is down now."""
        return self._down_since is not None

    @property
    def reason(self) -> str:
        """The latest failure's reason ("" while up)."""
        return self._reason

    def failed(self, reason: str) -> None:
        """Count one failure; log the outage's start, a changed reason, or a summary
        when the interval has passed."""
        now = self._clock()
        self.failures += 1
        if self._down_since is None:
            self._down_since, self._last_line_at, self._reason = now, now, reason
            self.outages += 1
            action = f"; {self._action}" if self._action else ""
            self._log.warning("%s is down: %s%s", self._what, reason, action)
            return
        changed = reason != self._reason
        self._reason = reason
        if changed or now - self._last_line_at >= self._summary_interval_s:
            self._last_line_at = now
            self._log.warning(
                "%s still down after %.1f s (%s): %s",
                self._what, now - self._down_since, _failures(self.failures), reason,
            )

    def recovered(self) -> float | None:
        """The dependency answers again: log the outage's end; return its length in
        seconds (None if it was not down)."""
        if self._down_since is None:
            return None
        lasted_s = self._clock() - self._down_since
        self._log.info("%s is back after %.2f s (%s)", self._what, lasted_s, _failures(self.failures))
        self._down_since, self._reason, self.failures = None, "", 0
        return lasted_s


def _failures(count: int) -> str:
    return f"{count} failure" if count == 1 else f"{count} failures"
