"""``loyalty serve``: run the server on its embedded defaults or given Redis and Ray.

Reads the flags, the environment ($REDIS_URL, $RAY_ADDRESS) and the --config file,
and hands typed settings to ``loyalty.server.runtime``.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys

from loyalty.actors.ledger.members import HOT_MEMBERS_DEFAULT
from loyalty.actors.ledger.program import DEFAULT_PROGRAM, ProgramError, load_program
from loyalty.server.cli import rules as rules_cli


def add_parser(subcommands) -> None:
    """Register ``serve``."""
    parser = subcommands.add_parser(
        "serve",
        help="run the gRPC server",
        description="Run the loyalty gRPC server. Without --redis-url it starts an "
        "embedded redis-server (AOF, appendfsync always) with its files in --data-dir.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=50051, help="gRPC port (default 50051; 0 = any free)")
    parser.add_argument("--shards", type=int, default=0, help="shard actors (default: one per CPU)")
    parser.add_argument(
        "--gateways", type=int, default=1,
        help="gRPC gateway processes sharing the port via SO_REUSEPORT (default 1)",
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("REDIS_URL", ""),
        help="external Redis, e.g. redis://host:6379/0 (default: $REDIS_URL, else embedded)",
    )
    parser.add_argument("--data-dir", default="./data", help="embedded Redis data directory (default ./data)")
    parser.add_argument(
        "--appendfsync",
        choices=("always", "everysec"),
        default="always",
        help="embedded Redis fsync policy (default always: no acknowledged operation is lost)",
    )
    parser.add_argument("--config", type=pathlib.Path, help="program file (TOML, [program] table)")
    parser.add_argument(
        "--ray-address",
        default=os.environ.get("RAY_ADDRESS", ""),
        help="Ray cluster to join (default: $RAY_ADDRESS, else a local Ray)",
    )
    parser.add_argument(
        "--snapshot-every-events", type=int, default=200_000,
        help="snapshot a shard after this many journaled changes (default 200000)",
    )
    parser.add_argument(
        "--snapshot-every-seconds", type=float, default=300.0,
        help="...or after this many seconds (default 300)",
    )
    parser.add_argument(
        "--hot-members", type=int, default=HOT_MEMBERS_DEFAULT,
        help="members each shard keeps decoded between batches; the rest are kept "
        f"compressed (default {HOT_MEMBERS_DEFAULT})",
    )
    parser.add_argument(
        "--namespace", default="loyalty",
        help="Ray namespace of the shard actors, so several servers can share one Ray cluster (default loyalty)",
    )
    parser.add_argument("--tls-cert", type=pathlib.Path, help="serve TLS with this certificate chain (PEM)")
    parser.add_argument("--tls-key", type=pathlib.Path, help="private key of --tls-cert (PEM)")
    parser.add_argument(
        "--tls-client-ca", type=pathlib.Path,
        help="require client certificates issued by this CA (PEM): mutual TLS",
    )
    parser.add_argument(
        "--insecure", action="store_true",
        help="allow a non-loopback --host without any API key (anyone reaching it is admin)",
    )


def run(options: argparse.Namespace) -> int:
    """Run ``loyalty serve`` until SIGINT or SIGTERM; the exit code."""
    from loyalty.server.runtime.app import ServerConfig, serve

    program = DEFAULT_PROGRAM
    rules = None
    if options.config is not None:
        try:
            program = load_program(options.config.read_bytes()).program
        except (OSError, ProgramError) as error:
            print(f"loyalty: {options.config}: {error}", file=sys.stderr)
            return 2
        rules = rules_cli.config_rules(options.config)
        if isinstance(rules, int):
            return rules
    security = security_options(options)
    if isinstance(security, int):
        return security
    settings, api_keys = security
    if options.shards < 0 or options.hot_members < 0 or options.snapshot_every_events < 1 or options.gateways < 1:
        print(
            "loyalty: --shards and --hot-members must be >= 0, --gateways and --snapshot-every-events >= 1",
            file=sys.stderr,
        )
        return 2
    config = ServerConfig(
        host=options.host,
        port=options.port,
        shards=options.shards,
        gateways=options.gateways,
        redis_url=options.redis_url,
        data_dir=options.data_dir,
        appendfsync=options.appendfsync,
        ray_address=options.ray_address,
        namespace=options.namespace,
        program=program,
        rules=rules,
        snapshot_every_events=options.snapshot_every_events,
        snapshot_every_s=options.snapshot_every_seconds,
        hot_members=options.hot_members,
        security=settings,
        api_keys=api_keys,
        insecure=options.insecure,
    )
    return serve(config)


def security_options(options: argparse.Namespace):
    """(SecuritySettings, api key seeds) from --config and the TLS flags, or exit code 2."""
    from loyalty.server.security.config import (
        ConfigFileSecurity,
        SecurityConfigError,
        SecuritySettings,
        TlsFiles,
        load_security_config,
    )

    file_security = ConfigFileSecurity()
    if options.config is not None:
        try:
            file_security = load_security_config(options.config.read_bytes())
        except (OSError, SecurityConfigError) as error:
            print(f"loyalty: {options.config}: {error}", file=sys.stderr)
            return 2
    tls = None
    if options.tls_cert or options.tls_key or options.tls_client_ca:
        if not (options.tls_cert and options.tls_key):
            print("loyalty: --tls-cert and --tls-key go together (and --tls-client-ca needs both)", file=sys.stderr)
            return 2
        for path in (options.tls_cert, options.tls_key, options.tls_client_ca):
            if path is not None and not path.is_file():
                print(f"loyalty: {path}: no such file", file=sys.stderr)
                return 2
        tls = TlsFiles(
            cert_file=str(options.tls_cert.resolve()),
            key_file=str(options.tls_key.resolve()),
            client_ca_file=str(options.tls_client_ca.resolve()) if options.tls_client_ca else "",
        )
    return SecuritySettings(limits=file_security.limits, tls=tls), file_security.api_keys
