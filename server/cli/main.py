"""The ``loyalty`` command: one subcommand per module in this folder."""

from __future__ import annotations

import argparse
import sys

from loyalty.server.cli import chaos, keys, rules, serve

SUBCOMMANDS = {"serve": serve, "chaos": chaos, "keys": keys, "rules": rules}
"""Each module registers its parser (``add_parser``) and runs it (``run``)."""


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``loyalty`` console script."""
    parser = argparse.ArgumentParser(prog="loyalty", description="Loyalty points server.")
    subcommands = parser.add_subparsers(dest="command", required=True)
    for module in SUBCOMMANDS.values():
        module.add_parser(subcommands)
    options = parser.parse_args(argv)
    return SUBCOMMANDS[options.command].run(options)


if __name__ == "__main__":
    sys.exit(main())
