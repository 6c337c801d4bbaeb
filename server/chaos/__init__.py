"""Fault injection with a checker that can see loss (``loyalty chaos``).

A product feature that only the ``loyalty`` CLI imports. May import:
``loyalty.server.runtime``, ``loyalty.actors``, ``loyalty.v1``. Its modules, each
importing only those listed above it:

- ``workload``: the clients, their mixed operations and the history of what they saw;
- ``gateway``: the server under test, with shard actors of its own, restartable;
- ``faults``: the FAULTS table and the injector that injects and heals each one;
- ``settings``: ChaosSettings, what one run is told;
- ``report``: ChaosReport, what the checker found, and the verdict;
- ``checker``: the check against the healed server and the journal replay;
- ``run``: ChaosRun, which assembles them, ``run_standalone`` (``loyalty chaos``) and
  ``python -m loyalty.server.chaos.run replay``.
"""

from loyalty.server.chaos.checker import check, replay_balances
from loyalty.server.chaos.faults import FAULTS, FaultRecord
from loyalty.server.chaos.report import ChaosReport
from loyalty.server.chaos.settings import ChaosSettings

__all__ = [
    "FAULTS", "ChaosReport", "ChaosRun", "ChaosSettings", "FaultRecord", "check", "replay_balances",
    "run_standalone",
]


def __getattr__(name: str):
    """ChaosRun and run_standalone are loaded from ``run`` on first use rather than
    with the package, so that ``python -m loyalty.server.chaos.run`` finds that module
    not yet imported and runs it once."""
    if name in ("ChaosRun", "run_standalone"):
        from loyalty.server.chaos import run

        return getattr(run, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
