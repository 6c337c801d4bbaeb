"""``loyalty chaos``: the fault-injection run with its loss checker, from the command line."""

from __future__ import annotations

import argparse
import sys


def add_parser(subcommands) -> None:
    """Register ``chaos``."""
    parser = subcommands.add_parser(
        "chaos",
        help="run the fault-injection workload and check that nothing acknowledged is lost",
        description="Start an embedded Redis in a temporary directory, a local Ray and a "
        "server in this process; run a mixed workload while injecting faults in rotation "
        "(shard kill -9, Redis kill -9 and restart, Redis kill -9 left to the server's own "
        "supervisor, Redis SIGSTOP/SIGCONT, gateway restart, stale shard incarnation); then check every operation and replay every journal. "
        "Exit code 0 only if nothing was lost, nothing applied twice and every check passed.",
    )
    parser.add_argument("--minutes", type=float, default=5.0, help="how long to inject faults (default 5)")
    parser.add_argument("--shards", type=int, default=2, help="shard actors (default 2)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent workload clients (default 4)")
    parser.add_argument("--quiet-seconds", type=float, default=5.0, help="calm between faults (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="workload random seed (default 0)")
    parser.add_argument(
        "--unsafe-acknowledge-before-journal", action="store_true",
        help="negative control: shards acknowledge before journaling; the run must report loss",
    )


def run(options: argparse.Namespace) -> int:
    """Run ``loyalty chaos``: 0 only if the checker found nothing wrong."""
    from loyalty.server.chaos.run import ChaosSettings, run_standalone

    if options.minutes <= 0 or options.shards < 1 or options.clients < 1 or options.quiet_seconds < 0:
        print("loyalty: --minutes must be > 0, --shards and --clients >= 1", file=sys.stderr)
        return 2
    settings = ChaosSettings(
        shards=options.shards,
        clients=options.clients,
        duration_s=options.minutes * 60,
        quiet_s=options.quiet_seconds,
        seed=options.seed,
        unsafe_acknowledge_before_journal=options.unsafe_acknowledge_before_journal,
    )
    report = run_standalone(settings)
    print(report.format(), flush=True)
    return 0 if report.ok else 1
