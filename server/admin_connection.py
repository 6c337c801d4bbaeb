"""How the ``loyalty keys`` and ``loyalty rules`` commands reach a server's AdminService:
the same flags, the same channel and the same credentials for both."""

from __future__ import annotations

import argparse
import os
import pathlib


def add_connection_flags(parser: argparse.ArgumentParser) -> None:
    """--target, --api-key and the TLS flags."""
    parser.add_argument(
        "--target",
        default=os.environ.get("LOYALTY_TARGET", "127.0.0.1:50051"),
        help="server host:port (default $LOYALTY_TARGET, else 127.0.0.1:50051)",
    )
    parser.add_argument("--api-key", default=None, help="admin key (default $LOYALTY_API_KEY)")
    parser.add_argument("--tls-ca", type=pathlib.Path, help="PEM roots to trust: connect with TLS")
    parser.add_argument("--tls-cert", type=pathlib.Path, help="client certificate (PEM), for mutual TLS")
    parser.add_argument("--tls-key", type=pathlib.Path, help="client private key (PEM), for mutual TLS")
    parser.add_argument("--tls-server-name", help="name to check the server certificate against")


def open_channel(options: argparse.Namespace):
    """A blocking gRPC channel to --target: TLS when --tls-ca or --tls-cert is given."""
    import grpc

    if not (options.tls_ca or options.tls_cert):
        return grpc.insecure_channel(options.target)

    def read(path: pathlib.Path | None) -> bytes | None:
        return path.read_bytes() if path else None

    credentials = grpc.ssl_channel_credentials(read(options.tls_ca), read(options.tls_key), read(options.tls_cert))
    name = options.tls_server_name
    return grpc.secure_channel(
        options.target, credentials, options=[("grpc.ssl_target_name_override", name)] if name else []
    )


def call_metadata(options: argparse.Namespace) -> tuple[tuple[str, str], ...]:
    """The bearer key from --api-key or $LOYALTY_API_KEY (none: no metadata)."""
    api_key = options.api_key or os.environ.get("LOYALTY_API_KEY") or ""
    return (("authorization", f"Bearer {api_key}"),) if api_key else ()
